//! The decoder: llama, qwen2 (q/k/v bias) and qwen3 (q/k RMSNorm), read top to bottom.
//! Attention takes the recipe's rule per layer and phase; the cache is its own type.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};

use super::config::{ModelConfig, RopeStyle};
use super::kv_cache::KvCache;
use super::weights::{Linear, WeightSource};
use super::{ModelError, Result};
use crate::recipe::{AttnRule, KeySpan, Phase, Recipe};

/// Which logits a forward pass returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logits {
    /// Only the last position's: `[vocab]`.
    Last,
    /// Every position's: `[C, vocab]`.
    All,
    /// None (prefill chunks before the last).
    Skip,
}

#[derive(Debug, Clone)]
struct Layer {
    attn_norm: Tensor,
    wq: Linear,
    wk: Linear,
    wv: Linear,
    wo: Linear,
    /// Qwen2: q/k/v biases.
    bias: Option<(Tensor, Tensor, Tensor)>,
    /// Qwen3: per-head RMSNorm of q and k before RoPE.
    qk_norm: Option<(Tensor, Tensor)>,
    ffn_norm: Tensor,
    gate: Linear,
    up: Linear,
    down: Linear,
}

#[derive(Debug, Clone)]
pub struct Model {
    cfg: ModelConfig,
    embed: Tensor,
    layers: Vec<Layer>,
    norm: Tensor,
    lm_head: Linear,
    device: Device,
    dtype: DType,
}

/// RoPE tables for a run of positions, shared by every layer of one forward pass.
struct Rope {
    cos: Tensor,
    sin: Tensor,
    style: RopeStyle,
}

impl Rope {
    /// Same arithmetic as candle-transformers' `precomput_freqs_cis` (f32), for bit-level parity.
    fn new(
        cfg: &ModelConfig,
        positions: std::ops::Range<usize>,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let half = cfg.head_dim / 2;
        let base = cfg.rope_theta as f32;
        let inv: Vec<f32> = (0..cfg.head_dim)
            .step_by(2)
            .map(|i| 1f32 / base.powf(i as f32 / cfg.head_dim as f32))
            .collect();
        let n = positions.len();
        let mut cos = Vec::with_capacity(n * half);
        let mut sin = Vec::with_capacity(n * half);
        for p in positions {
            for f in &inv {
                let a = p as f32 * f;
                cos.push(a.cos());
                sin.push(a.sin());
            }
        }
        let t = |v: Vec<f32>| -> Result<Tensor> {
            Ok(Tensor::from_vec(v, (n, half), device)?.to_dtype(dtype)?)
        };
        Ok(Rope {
            cos: t(cos)?,
            sin: t(sin)?,
            style: cfg.rope_style,
        })
    }

    fn apply(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let x = x.contiguous()?;
        match self.style {
            RopeStyle::Interleaved => candle_nn::rotary_emb::rope_i(&x, &self.cos, &self.sin),
            RopeStyle::Halves => candle_nn::rotary_emb::rope(&x, &self.cos, &self.sin),
        }
    }
}

/// Softmax attention of `q: [1, H, C, d]` over `k, v: [1, KV, N, d]` with an additive
/// `[C, N]` mask; GQA by grouping query heads, so K and V are never repeated in memory.
/// Long contexts run in query blocks: one `[H, C, N]` score matrix past 2^31 elements breaks
/// the 32-bit indexing of the element-wise kernels (seen on CUDA at 128k keys, chunk 2048).
fn attend(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: Option<&Tensor>,
) -> candle_core::Result<Tensor> {
    attend_in_blocks(q, k, v, mask, 1 << 28)
}

fn attend_in_blocks(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: Option<&Tensor>,
    max_scores: usize,
) -> candle_core::Result<Tensor> {
    let (_, h, c, _) = q.dims4()?;
    let n = k.dim(2)?;
    let block = (max_scores / (h * n).max(1)).max(1);
    if c <= block {
        return attend_block(q, k, v, mask);
    }
    let parts = (0..c)
        .step_by(block)
        .map(|s| {
            let len = block.min(c - s);
            let m = mask.map(|m| m.narrow(0, s, len)).transpose()?;
            attend_block(&q.narrow(2, s, len)?.contiguous()?, k, v, m.as_ref())
        })
        .collect::<candle_core::Result<Vec<_>>>()?;
    Tensor::cat(&parts, 2)
}

fn attend_block(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: Option<&Tensor>,
) -> candle_core::Result<Tensor> {
    let (b, h, c, d) = q.dims4()?;
    let kv = k.dim(1)?;
    let n = k.dim(2)?;
    let g = h / kv;
    let q = q.reshape((b, kv, g * c, d))?;
    let scale = 1.0 / (d as f64).sqrt();
    let scores = (q.matmul(&k.t()?)? * scale)?.to_dtype(DType::F32)?;
    let scores = match mask {
        Some(m) => scores
            .reshape((b, kv, g, c, n))?
            .broadcast_add(m)?
            .reshape((b, kv, g * c, n))?,
        None => scores,
    };
    let p = candle_nn::ops::softmax_last_dim(&scores)?.to_dtype(v.dtype())?;
    p.matmul(&v.contiguous()?)?.reshape((b, h, c, d))
}

impl Layer {
    /// Normalised input → rotated q `[1,H,C,d]`, k and v `[1,KV,C,d]`.
    fn qkv(
        &self,
        cfg: &ModelConfig,
        x: &Tensor,
        rope: &Rope,
    ) -> candle_core::Result<(Tensor, Tensor, Tensor)> {
        let (b, c, _) = x.dims3()?;
        let h = candle_nn::ops::rms_norm(x, &self.attn_norm, cfg.rms_eps as f32)?;
        let (mut q, mut k, mut v) = (
            self.wq.forward(&h)?,
            self.wk.forward(&h)?,
            self.wv.forward(&h)?,
        );
        if let Some((bq, bk, bv)) = &self.bias {
            q = q.broadcast_add(bq)?;
            k = k.broadcast_add(bk)?;
            v = v.broadcast_add(bv)?;
        }
        let split = |t: Tensor, n: usize| t.reshape((b, c, n, cfg.head_dim))?.transpose(1, 2);
        let (mut q, mut k, v) = (
            split(q, cfg.heads)?,
            split(k, cfg.kv_heads)?,
            split(v, cfg.kv_heads)?,
        );
        if let Some((qn, kn)) = &self.qk_norm {
            q = candle_nn::ops::rms_norm(&q.contiguous()?, qn, cfg.rms_eps as f32)?;
            k = candle_nn::ops::rms_norm(&k.contiguous()?, kn, cfg.rms_eps as f32)?;
        }
        Ok((rope.apply(&q)?, rope.apply(&k)?, v.contiguous()?))
    }

    /// Attention output `[1,H,C,d]` → residual stream, then the MLP block.
    fn finish(&self, cfg: &ModelConfig, x: &Tensor, attn: &Tensor) -> candle_core::Result<Tensor> {
        let (b, c, _) = x.dims3()?;
        let attn = attn
            .transpose(1, 2)?
            .reshape((b, c, cfg.heads * cfg.head_dim))?;
        let x = (x + self.wo.forward(&attn)?)?;
        let h = candle_nn::ops::rms_norm(&x, &self.ffn_norm, cfg.rms_eps as f32)?;
        let gate = candle_nn::ops::silu(&self.gate.forward(&h)?)?;
        let mlp = self.down.forward(&(gate * self.up.forward(&h)?)?)?;
        x + mlp
    }
}

impl Model {
    pub(crate) fn build(cfg: ModelConfig, src: &mut dyn WeightSource) -> Result<Self> {
        let (hd, q_dim, kv_dim) = (
            cfg.head_dim,
            cfg.heads * cfg.head_dim,
            cfg.kv_heads * cfg.head_dim,
        );
        let embed = src.embedding("token_embd.weight", cfg.vocab, cfg.hidden)?;
        let mut layers = Vec::with_capacity(cfg.layers);
        for i in 0..cfg.layers {
            let n = |s: &str| format!("blk.{i}.{s}");
            let bias = if cfg.arch.has_qkv_bias() {
                Some((
                    src.vector(&n("attn_q.bias"), q_dim)?,
                    src.vector(&n("attn_k.bias"), kv_dim)?,
                    src.vector(&n("attn_v.bias"), kv_dim)?,
                ))
            } else {
                None
            };
            let qk_norm = if cfg.arch.has_qk_norm() {
                Some((
                    src.vector(&n("attn_q_norm.weight"), hd)?,
                    src.vector(&n("attn_k_norm.weight"), hd)?,
                ))
            } else {
                None
            };
            layers.push(Layer {
                attn_norm: src.vector(&n("attn_norm.weight"), cfg.hidden)?,
                wq: src.linear(&n("attn_q.weight"), q_dim, cfg.hidden)?,
                wk: src.linear(&n("attn_k.weight"), kv_dim, cfg.hidden)?,
                wv: src.linear(&n("attn_v.weight"), kv_dim, cfg.hidden)?,
                wo: src.linear(&n("attn_output.weight"), cfg.hidden, q_dim)?,
                bias,
                qk_norm,
                ffn_norm: src.vector(&n("ffn_norm.weight"), cfg.hidden)?,
                gate: src.linear(&n("ffn_gate.weight"), cfg.intermediate, cfg.hidden)?,
                up: src.linear(&n("ffn_up.weight"), cfg.intermediate, cfg.hidden)?,
                down: src.linear(&n("ffn_down.weight"), cfg.hidden, cfg.intermediate)?,
            });
        }
        let norm = src.vector("output_norm.weight", cfg.hidden)?;
        let lm_head = if src.has("output.weight") {
            src.linear("output.weight", cfg.vocab, cfg.hidden)?
        } else {
            src.linear("token_embd.weight", cfg.vocab, cfg.hidden)?
        };
        Ok(Model {
            device: src.device().clone(),
            dtype: src.dtype(),
            cfg,
            embed,
            layers,
            norm,
            lm_head,
        })
    }

    pub fn config(&self) -> &ModelConfig {
        &self.cfg
    }
    pub fn device(&self) -> &Device {
        &self.device
    }
    /// Activation (and KV cache) dtype.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// An empty cache shaped for this model.
    pub fn new_cache(&self) -> KvCache {
        KvCache::new(
            self.cfg.layers,
            self.cfg.kv_heads,
            self.cfg.head_dim,
            self.dtype,
            &self.device,
        )
    }

    /// Bytes of weights (for bandwidth figures).
    pub fn weight_bytes(&self) -> usize {
        let e = self.dtype.size_in_bytes();
        let vec = |t: &Tensor| t.elem_count() * e;
        let layers: usize = self
            .layers
            .iter()
            .map(|l| {
                [&l.wq, &l.wk, &l.wv, &l.wo, &l.gate, &l.up, &l.down]
                    .iter()
                    .map(|w| w.bytes())
                    .sum::<usize>()
                    + vec(&l.attn_norm)
                    + vec(&l.ffn_norm)
            })
            .sum();
        layers + self.lm_head.bytes() + vec(&self.norm)
    }

    fn embed(&self, tokens: &[u32]) -> Result<Tensor> {
        if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= self.cfg.vocab) {
            return Err(candle_core::Error::Msg(format!(
                "token id {bad} outside the vocabulary ({})",
                self.cfg.vocab
            ))
            .into());
        }
        let ids = Tensor::new(tokens, &self.device)?;
        Ok(self.embed.index_select(&ids, 0)?.unsqueeze(0)?)
    }

    fn head(&self, x: &Tensor, want: Logits) -> Result<Option<Tensor>> {
        let x = match want {
            Logits::Skip => return Ok(None),
            Logits::Last => x.narrow(1, x.dim(1)? - 1, 1)?,
            Logits::All => x.clone(),
        };
        let x = candle_nn::ops::rms_norm(&x, &self.norm, self.cfg.rms_eps as f32)?;
        let logits = self.lm_head.forward(&x)?.squeeze(0)?.to_dtype(DType::F32)?;
        Ok(Some(if want == Logits::Last {
            logits.squeeze(0)?
        } else {
            logits
        }))
    }

    /// Runs `tokens` at positions `cache.next_pos()..` under `recipe` in `phase`, appending
    /// their K/V to the cache and dropping what the recipe will never read again.
    /// Sliding layers read only sink + window keys: cost O(C·(K+W+C)) per chunk.
    pub fn forward(
        &self,
        tokens: &[u32],
        cache: &mut KvCache,
        recipe: &Recipe,
        phase: Phase,
        want: Logits,
    ) -> Result<Option<Tensor>> {
        let (q0, q1) = (cache.next_pos(), cache.next_pos() + tokens.len());
        let rope = Rope::new(&self.cfg, q0..q1, self.dtype, &self.device)?;
        let mut x = self.embed(tokens)?;
        // One key span and mask per distinct rule, shared by the layers that use it.
        let mut spans: HashMap<AttnRule, (KeySpan, Option<Tensor>)> = HashMap::new();
        for (i, layer) in self.layers.iter().enumerate() {
            let rule = recipe.rule(i, phase);
            let (q, k, v) = layer.qkv(&self.cfg, &x, &rope)?;
            cache.append(i, &k, &v)?;
            if let std::collections::hash_map::Entry::Vacant(e) = spans.entry(rule) {
                let span = rule.key_span(q0, q1);
                let mask = if q1 - q0 > 1 {
                    Some(rule.mask_tensor(q0..q1, &span, &self.device)?)
                } else {
                    None
                };
                e.insert((span, mask));
            }
            let (span, mask) = &spans[&rule];
            let (kk, vv) = cache.gather(i, span)?;
            let attn = attend(&q, &kk, &vv, mask.as_ref())?;
            x = layer.finish(&self.cfg, &x, &attn)?;
            if cache.eviction() && recipe.layer_evicts(i) {
                // Keep the newest token's window: sink + the last W tokens (DESIGN.md).
                cache.evict(i, rule.sink, rule.first_needed(q1 - 1))?;
            }
        }
        cache.advance(tokens.len());
        self.head(&x, want)
    }

    /// The dense-mask reference: the whole sequence at once, every query against every key
    /// with a `[T, T]` mask filled from [`AttnRule::allows`] — no cache, no spans, no chunks.
    /// `phases[i]` says whether token i was prompt or generated. Returns `[T, vocab]` logits.
    pub fn forward_reference(
        &self,
        tokens: &[u32],
        phases: &[Phase],
        recipe: &Recipe,
    ) -> Result<Tensor> {
        assert_eq!(tokens.len(), phases.len(), "one phase per token");
        let t = tokens.len();
        let rope = Rope::new(&self.cfg, 0..t, self.dtype, &self.device)?;
        let mut x = self.embed(tokens)?;
        for (i, layer) in self.layers.iter().enumerate() {
            let mut m = vec![0f32; t * t];
            for (qi, phase) in phases.iter().enumerate() {
                let rule = recipe.rule(i, *phase);
                for kj in 0..t {
                    if !rule.allows(qi, kj) {
                        m[qi * t + kj] = f32::NEG_INFINITY;
                    }
                }
            }
            let mask = Tensor::from_vec(m, (t, t), &self.device)?;
            let (q, k, v) = layer.qkv(&self.cfg, &x, &rope)?;
            let attn = attend(&q, &k, &v, Some(&mask))?;
            x = layer.finish(&self.cfg, &x, &attn)?;
        }
        self.head(&x, Logits::All)?
            .ok_or_else(|| ModelError::BadConfig("no logits".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attention_in_query_blocks_equals_one_block() {
        let dev = Device::Cpu;
        let q = Tensor::randn(0f32, 1.0, (1, 4, 10, 8), &dev).unwrap();
        let k = Tensor::randn(0f32, 1.0, (1, 2, 13, 8), &dev).unwrap();
        let v = Tensor::randn(0f32, 1.0, (1, 2, 13, 8), &dev).unwrap();
        let rule = crate::recipe::AttnRule {
            window: Some(5),
            sink: 1,
        };
        let span = rule.key_span(3, 13);
        let mask = rule.mask_tensor(3..13, &span, &dev).unwrap();
        let k = k.narrow(2, 0, span.len()).unwrap();
        let v = v.narrow(2, 0, span.len()).unwrap();
        let whole = attend_block(&q, &k, &v, Some(&mask)).unwrap();
        // 4 heads × N keys per query row: a limit of 3 rows forces blocks of 3, 3, 3, 1.
        let blocks = attend_in_blocks(&q, &k, &v, Some(&mask), 4 * span.len() * 3).unwrap();
        let d = (whole - blocks)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(d < 1e-6, "{d}");
    }
}
