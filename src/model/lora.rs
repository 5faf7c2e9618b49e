//! LoRA on the attention projections (Hu et al. 2021): `W' = W + B·A·alpha/r` on q, k and v,
//! A `[r, in]`, B `[out, r]`. Two uses: the training forward `finetune` differentiates (the
//! dense reference's arithmetic on ops with a backward: candle's fused RMSNorm, RoPE and
//! softmax have none), and merging an adapter into loaded weights, after which every path
//! (CPU loop, CUDA kernels, decode graphs) runs it at no cost per token.
//!
//! The file is safetensors: `blk.{i}.attn_{q,k,v}.lora_{a,b}` in f32, and the card (JSON,
//! [`AdapterCard`]) in the header's metadata under `swaa_chat_adapter`, so one file carries
//! what it was trained on.

use std::cell::RefCell;
use std::collections::HashMap;
use std::ops::Range;
use std::path::Path;
use std::rc::Rc;

use candle_core::{D, DType, Device, Tensor};
use serde::{Deserialize, Serialize};

use super::transformer::{Joined, Model, Rope, Table};
use super::weights::Linear;
use super::{ModelError, Result};
use crate::recipe::{AttnRule, KeySpan, Phase, Recipe};

/// The projections that get an adapter, in the order of the joined q/k/v projection.
pub const TARGETS: [&str; 3] = ["attn_q", "attn_k", "attn_v"];

/// Key of the card in the safetensors header's metadata.
const CARD_KEY: &str = "swaa_chat_adapter";

/// Low-rank updates of q, k and v for every layer.
#[derive(Debug, Clone)]
pub struct Lora {
    pub rank: usize,
    pub alpha: f64,
    /// Per layer, per target of [`TARGETS`]: (A `[r, in]`, B `[out, r]`).
    pub layers: Vec<[(Tensor, Tensor); 3]>,
}

impl Lora {
    /// The factor on `B·A`: alpha / r, as the LoRA paper scales it.
    pub fn scale(&self) -> f64 {
        self.alpha / self.rank as f64
    }

    pub fn tensor_name(layer: usize, target: usize, b: bool) -> String {
        let part = if b { "lora_b" } else { "lora_a" };
        format!("blk.{layer}.{}.{part}", TARGETS[target])
    }

    /// Every tensor by its file name.
    pub fn named(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        for (i, l) in self.layers.iter().enumerate() {
            for (t, (a, b)) in l.iter().enumerate() {
                out.push((Lora::tensor_name(i, t, false), a.clone()));
                out.push((Lora::tensor_name(i, t, true), b.clone()));
            }
        }
        out
    }

    /// The same update with its tensors cut from any autograd graph.
    pub fn detached(&self) -> Lora {
        Lora {
            layers: self
                .layers
                .iter()
                .map(|l| l.clone().map(|(a, b)| (a.detach(), b.detach())))
                .collect(),
            ..*self
        }
    }

    /// `B·A·scale` of layer `layer`, target `t`: `[out, in]`, f32.
    fn delta(&self, layer: usize, t: usize) -> candle_core::Result<Tensor> {
        let (a, b) = &self.layers[layer][t];
        b.to_dtype(DType::F32)?.matmul(&a.to_dtype(DType::F32)?)? * self.scale()
    }
}

/// What an adapter was trained on and how it did: stored in the file, shown by `models list`,
/// checked at load.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdapterCard {
    /// The base model's short name (a preset's name, else the file's).
    pub base_name: String,
    /// `open::weights_identity` of the base: a preset's pinned SHA-256, else the files' hash.
    pub base_identity: Option<String>,
    pub arch: String,
    pub layers: usize,
    pub hidden: usize,
    pub rank: usize,
    pub alpha: f64,
    pub dropout: f64,
    pub targets: Vec<String>,
    /// The recipe it was trained under.
    pub recipe: Recipe,
    /// Training documents and the SHA-256 of their text.
    pub data: Vec<(String, String)>,
    pub samples: usize,
    pub tokens: u64,
    pub steps: usize,
    pub final_loss: f32,
    /// Mean loss on the held-out samples (answer tokens, under the recipe).
    pub heldout_loss: Option<f32>,
    /// Held-out questions answered right under the recipe: without, then with the adapter.
    pub heldout_accuracy_base: Option<f64>,
    pub heldout_accuracy: Option<f64>,
    pub heldout_questions: usize,
}

fn bad(path: &Path, detail: impl Into<String>) -> ModelError {
    ModelError::BadAdapter {
        path: path.into(),
        detail: detail.into(),
    }
}

/// Writes `lora` (as f32) with its card to `path`.
pub fn save_adapter(path: &Path, lora: &Lora, card: &AdapterCard) -> Result<()> {
    let tensors = lora
        .named()
        .into_iter()
        .map(|(n, t)| Ok((n, t.to_dtype(DType::F32)?.to_device(&Device::Cpu)?)))
        .collect::<Result<Vec<_>>>()?;
    let meta = HashMap::from([(
        CARD_KEY.to_string(),
        serde_json::to_string(card).expect("plain struct"),
    )]);
    safetensors::serialize_to_file(tensors, Some(meta), path).map_err(|e| bad(path, e.to_string()))
}

/// The card of the adapter at `path`, without its tensors.
pub fn read_card(path: &Path) -> Result<AdapterCard> {
    let bytes = std::fs::read(path).map_err(|source| ModelError::Io {
        path: path.into(),
        source,
    })?;
    card_of(path, &bytes)
}

fn card_of(path: &Path, bytes: &[u8]) -> Result<AdapterCard> {
    let (_, meta) = safetensors::SafeTensors::read_metadata(bytes)
        .map_err(|e| bad(path, format!("not a safetensors file ({e})")))?;
    let json = meta
        .metadata()
        .as_ref()
        .and_then(|m| m.get(CARD_KEY))
        .ok_or_else(|| {
            bad(
                path,
                "no adapter card: pass a file written by `swaa-chat finetune`",
            )
        })?;
    serde_json::from_str(json).map_err(|e| bad(path, format!("its card does not parse ({e})")))
}

/// Reads an adapter and its card onto `device`.
pub fn load_adapter(path: &Path, device: &Device) -> Result<(Lora, AdapterCard)> {
    let bytes = std::fs::read(path).map_err(|source| ModelError::Io {
        path: path.into(),
        source,
    })?;
    let card = card_of(path, &bytes)?;
    let mut t = candle_core::safetensors::load_buffer(&bytes, device)
        .map_err(|e| bad(path, e.to_string()))?;
    if card.rank == 0 || !card.alpha.is_finite() {
        return Err(bad(path, "its card gives rank 0 or a non-finite alpha"));
    }
    let mut layers = Vec::with_capacity(card.layers);
    for i in 0..card.layers {
        let mut take = |t_: usize, b: bool| {
            let n = Lora::tensor_name(i, t_, b);
            t.remove(&n)
                .ok_or_else(|| bad(path, format!("tensor {n} is missing")))
        };
        layers.push([
            (take(0, false)?, take(0, true)?),
            (take(1, false)?, take(1, true)?),
            (take(2, false)?, take(2, true)?),
        ]);
    }
    Ok((
        Lora {
            rank: card.rank,
            alpha: card.alpha,
            layers,
        },
        card,
    ))
}

/// Query blocks: the keys each reads and its additive mask `[queries, keys]`.
type Blocks = Vec<(KeySpan, Tensor)>;

/// Per query position, and shared by the layers of one training forward: RoPE rows and phases.
pub struct TrainPass {
    phases: Vec<Phase>,
    recipe: Recipe,
    model_rope: Rope,
    original_rope: Rope,
    /// Queries per attention block: bounds the score matrix to `[H, block, keys]`.
    block: usize,
    /// A sliding layer's block reads only its sink + window keys (else: every key, masked).
    banded: bool,
    /// Per distinct layer rule (prefill, question, decode): each query block's keys and
    /// additive mask, built once and shared by the layers and passes that use them.
    masks: RefCell<HashMap<[AttnRule; 3], Rc<Blocks>>>,
}

impl TrainPass {
    pub fn len(&self) -> usize {
        self.phases.len()
    }
    pub fn is_empty(&self) -> bool {
        self.phases.is_empty()
    }
}

/// The dtype scores, logits and losses are computed in: f32 for half types, else the input's
/// (f64 stays f64, for the finite-difference checks).
pub fn wide(dtype: DType) -> DType {
    match dtype {
        DType::BF16 | DType::F16 => DType::F32,
        d => d,
    }
}

/// `rms_norm(x)·w` on plain ops (f32 inside for half types), which have a backward.
fn rms(x: &Tensor, w: &Tensor, eps: f64) -> candle_core::Result<Tensor> {
    candle_nn::ops::rms_norm_slow(x, w, eps as f32)
}

impl Rope {
    /// [`Rope::apply`] on plain ops, positions from 0.
    fn apply_slow(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let x = x.contiguous()?;
        match self.style {
            super::RopeStyle::Interleaved => {
                candle_nn::rotary_emb::rope_i_slow(&x, &self.cos, &self.sin)
            }
            super::RopeStyle::Halves => candle_nn::rotary_emb::rope_slow(&x, &self.cos, &self.sin),
        }
    }
}

impl Model {
    /// Sets up a differentiable forward over `phases.len()` tokens under `recipe`. Every
    /// linear must be dense: a quantized block's matmul has no backward.
    pub fn train_pass(
        &self,
        phases: &[Phase],
        recipe: &Recipe,
        block: usize,
        banded: bool,
    ) -> Result<TrainPass> {
        let quantized = self.layers.iter().any(|l| {
            l.qkv
                .parts
                .iter()
                .chain(&l.gate_up.parts)
                .chain([&l.wo, &l.down])
                .any(|p| !matches!(p, Linear::Dense(_)))
        }) || !matches!(self.lm_head, Linear::Dense(_));
        if quantized {
            return Err(ModelError::BadConfig(
                "training needs dense weights: load the model with --weights f32 (CPU) or bf16 (CUDA)"
                    .into(),
            ));
        }
        let t = phases.len();
        Ok(TrainPass {
            phases: phases.to_vec(),
            recipe: recipe.clone(),
            model_rope: self.dense_rope(t)?,
            original_rope: Rope::new(&self.cfg, None, 0..t, self.dtype, &self.device)?,
            block: block.max(1),
            banded,
            masks: RefCell::default(),
        })
    }

    /// `[1, T, hidden]` embeddings (no gradient: the table is frozen).
    pub fn train_embed(&self, tokens: &[u32]) -> Result<Tensor> {
        self.embed(tokens)
    }

    /// Layer `i` of the training forward: `x [1, T, hidden]` → the next residual stream,
    /// with `lora`'s update on q/k/v (its input multiplied by `dropout`, a `[T, hidden]` mask
    /// already scaled by 1/(1−p), when given), in the model's dtype whatever `lora`'s.
    pub fn train_layer(
        &self,
        pass: &TrainPass,
        i: usize,
        x: &Tensor,
        lora: Option<&Lora>,
        dropout: Option<&Tensor>,
    ) -> Result<Tensor> {
        let (cfg, layer) = (&self.cfg, &self.layers[i]);
        let (b, t, _) = x.dims3()?;
        let h = rms(x, &layer.attn_norm, cfg.rms_eps)?;
        let mut y = layer.project(&h)?;
        if let Some(l) = lora {
            let hin = match dropout {
                Some(m) => h.broadcast_mul(m)?,
                None => h.clone(),
            };
            let hin = hin.reshape((b * t, cfg.hidden))?;
            let s = l.scale();
            let parts = l.layers[i]
                .iter()
                .map(|(a, bm)| {
                    let (a, bm) = (a.to_dtype(h.dtype())?, bm.to_dtype(h.dtype())?);
                    hin.matmul(&a.t()?)?.matmul(&bm.t()?)? * s
                })
                .collect::<candle_core::Result<Vec<_>>>()?;
            y = (y + Tensor::cat(&parts, 1)?.reshape((b, t, ()))?)?;
        }
        let y = y.reshape((b, t, cfg.heads + 2 * cfg.kv_heads, cfg.head_dim))?;
        let heads = |at: usize, n: usize| y.narrow(2, at, n)?.transpose(1, 2);
        let (mut q, mut k, v) = (
            heads(0, cfg.heads)?,
            heads(cfg.heads, cfg.kv_heads)?,
            heads(cfg.heads + cfg.kv_heads, cfg.kv_heads)?.contiguous()?,
        );
        if let Some((qn, kn)) = &layer.qk_norm {
            q = rms(&q.contiguous()?, qn, cfg.rms_eps)?;
            k = rms(&k.contiguous()?, kn, cfg.rms_eps)?;
        }
        let rope = match self.table(&pass.recipe, i) {
            Table::Model => &pass.model_rope,
            Table::Original => &pass.original_rope,
        };
        let (q, k) = (rope.apply_slow(&q)?, rope.apply_slow(&k)?);
        let attn = attend_blocks(&q, &k, &v, &pass.blocks(i, wide(q.dtype()), q.device())?)?;
        let x = (x + layer.wo.forward(&attn)?)?;
        let h = rms(&x, &layer.ffn_norm, cfg.rms_eps)?;
        Ok((&x + layer.mlp(&h, false)?)?)
    }

    /// Logits `[rows, vocab]` ([`wide`]) of the positions `rows` of the last residual stream.
    pub fn train_logits(&self, x: &Tensor, rows: Range<usize>) -> Result<Tensor> {
        let x = x.narrow(1, rows.start, rows.len())?;
        let x = rms(&x, &self.norm, self.cfg.rms_eps)?;
        Ok(self
            .lm_head
            .forward(&x)?
            .squeeze(0)?
            .to_dtype(wide(self.dtype))?)
    }

    /// The whole training forward at once (no checkpointing): `[T, vocab]` logits.
    pub fn train_forward(
        &self,
        tokens: &[u32],
        pass: &TrainPass,
        lora: Option<&Lora>,
    ) -> Result<Tensor> {
        let mut x = self.train_embed(tokens)?;
        for i in 0..self.layers.len() {
            x = self.train_layer(pass, i, &x, lora, None)?;
        }
        self.train_logits(&x, 0..tokens.len())
    }

    /// Whether `lora` fits this model's q/k/v shapes; else what differs.
    pub fn check_lora(&self, lora: &Lora) -> std::result::Result<(), String> {
        let cfg = &self.cfg;
        if lora.layers.len() != cfg.layers {
            return Err(format!(
                "it has {} layers, the model {}",
                lora.layers.len(),
                cfg.layers
            ));
        }
        let outs = [
            cfg.heads * cfg.head_dim,
            cfg.kv_heads * cfg.head_dim,
            cfg.kv_heads * cfg.head_dim,
        ];
        for (i, l) in lora.layers.iter().enumerate() {
            for (t, (a, b)) in l.iter().enumerate() {
                let want_a = [lora.rank, cfg.hidden];
                let want_b = [outs[t], lora.rank];
                if a.dims() != want_a || b.dims() != want_b {
                    return Err(format!(
                        "layer {i} {}: A {:?} and B {:?}, the model needs A {want_a:?} and B {want_b:?}",
                        TARGETS[t],
                        a.dims(),
                        b.dims()
                    ));
                }
            }
        }
        Ok(())
    }

    /// Adds `lora`'s `B·A·alpha/r` to q/k/v. Dense weights change in place; quantized ones are
    /// replaced by a dequantized copy (the activation dtype) with the update added — q, k and
    /// v only, the rest of the model keeps its blocks.
    pub fn merge_lora(&mut self, lora: &Lora) -> Result<()> {
        self.check_lora(lora).map_err(ModelError::BadConfig)?;
        let (dtype, device) = (self.dtype, self.device.clone());
        for (i, layer) in self.layers.iter_mut().enumerate() {
            let deltas = (0..3)
                .map(|t| lora.delta(i, t)?.to_device(&device))
                .collect::<candle_core::Result<Vec<_>>>()?;
            let add = |w: &Tensor, d: &Tensor| -> candle_core::Result<Tensor> {
                (w.to_dtype(DType::F32)? + d)?.to_dtype(dtype)
            };
            // However q/k/v were stored (one joined matrix or tile set, or one part each, in
            // any weights mode), merge into the dense rows of all three, then split them so
            // the joined projection keeps its q, k and v widths.
            let whole = layer
                .qkv
                .parts
                .iter()
                .map(|p| match p {
                    Linear::Dense(w) => Ok(w.clone()),
                    Linear::Quantized { q, .. } => q.dequantize(&device),
                    Linear::Tiled(t) => t.to_tensor(&device),
                })
                .collect::<candle_core::Result<Vec<_>>>()?;
            let merged = add(&Tensor::cat(&whole, 0)?, &Tensor::cat(&deltas, 0)?)?;
            let mut at = 0;
            let parts = deltas
                .iter()
                .map(|d| {
                    let rows = d.dims()[0];
                    at += rows;
                    Ok(Linear::Dense(
                        merged.narrow(0, at - rows, rows)?.contiguous()?,
                    ))
                })
                .collect::<candle_core::Result<Vec<_>>>()?;
            layer.qkv = Joined::new(parts)?;
        }
        Ok(())
    }
}

impl TrainPass {
    /// Layer `layer`'s query blocks: the keys each reads and its additive mask `[n, keys]`.
    /// Banded, a block reads only the keys some of its queries may see (sink + window for a
    /// sliding rule: memory O(block·(K+W+block)) instead of O(block·T)); else every key,
    /// masked — the same numbers, which a test checks.
    fn blocks(
        &self,
        layer: usize,
        dtype: DType,
        device: &Device,
    ) -> candle_core::Result<Rc<Blocks>> {
        let by_phase =
            [Phase::Prefill, Phase::Question, Phase::Decode].map(|p| self.recipe.rule(layer, p));
        if let Some(b) = self.masks.borrow().get(&by_phase) {
            return Ok(b.clone());
        }
        let rules: Vec<AttnRule> = self
            .phases
            .iter()
            .map(|&p| self.recipe.rule(layer, p))
            .collect();
        let t = rules.len();
        let mut out = Vec::new();
        for r0 in (0..t).step_by(self.block) {
            let r1 = (r0 + self.block).min(t);
            let keys = if self.banded {
                let (mut sink_end, mut lo) = (0, r1);
                for (qi, rule) in rules[r0..r1].iter().enumerate() {
                    let span = rule.key_span(r0 + qi, r1);
                    sink_end = sink_end.max(span.sink.end);
                    lo = lo.min(span.recent.start);
                }
                // Overlapping, the sink runs into the recent keys: one range.
                KeySpan {
                    sink: 0..sink_end.min(lo),
                    recent: lo..r1,
                }
            } else {
                KeySpan {
                    sink: 0..0,
                    recent: 0..t,
                }
            };
            let nk = keys.len();
            let mut m = vec![f32::NEG_INFINITY; (r1 - r0) * nk];
            for (row, q) in m.chunks_mut(nk).zip(r0..r1) {
                allow_row(row, q, &rules[q], &keys);
            }
            let mask = Tensor::from_vec(m, (r1 - r0, nk), device)?.to_dtype(dtype)?;
            out.push((keys, mask));
        }
        let out = Rc::new(out);
        self.masks.borrow_mut().insert(by_phase, out.clone());
        Ok(out)
    }
}

/// Zeroes the entries of `row` (a mask over `keys`, −∞ elsewhere) that `rule` lets query `q`
/// see: the sink `[0, min(K, q+1))` and the window `[first_needed(q), q]` — the ranges
/// [`AttnRule::allows`] describes, filled a range at a time.
fn allow_row(row: &mut [f32], q: usize, rule: &AttnRule, keys: &KeySpan) {
    let sink = if rule.window.is_some() { rule.sink } else { 0 };
    for a in [0..sink.min(q + 1), rule.first_needed(q)..q + 1] {
        for (off, r) in [(0, &keys.sink), (keys.sink.len(), &keys.recent)] {
            let (lo, hi) = (a.start.max(r.start), a.end.min(r.end));
            if lo < hi {
                row[off + lo - r.start..off + hi - r.start].fill(0.0);
            }
        }
    }
}

/// Softmax attention of `q [1,H,T,d]` over `k, v [1,KV,T,d]` in the query blocks `blocks`
/// ([`TrainPass::blocks`]): `[1, T, H·d]`.
fn attend_blocks(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    blocks: &[(KeySpan, Tensor)],
) -> candle_core::Result<Tensor> {
    let (b, h, _, d) = q.dims4()?;
    let kv = k.dim(1)?;
    let g = h / kv;
    let scale = 1.0 / (d as f64).sqrt();
    let mut outs = Vec::new();
    let mut r0 = 0;
    for (keys, mask) in blocks {
        let (n, nk) = mask.dims2()?;
        let pick = |x: &Tensor| -> candle_core::Result<Tensor> {
            let parts = [&keys.sink, &keys.recent]
                .into_iter()
                .filter(|r| !r.is_empty())
                .map(|r| x.narrow(2, r.start, r.len()))
                .collect::<candle_core::Result<Vec<_>>>()?;
            Tensor::cat(&parts, 2)
        };
        let (kb, vb) = (pick(k)?, pick(v)?.contiguous()?);
        let qb = q
            .narrow(2, r0, n)?
            .contiguous()?
            .reshape((b, kv, g * n, d))?;
        let scores = (qb.matmul(&kb.t()?)? * scale)?.to_dtype(mask.dtype())?;
        let scores = scores
            .reshape((b, kv, g, n, nk))?
            .broadcast_add(mask)?
            .reshape((b, kv, g * n, nk))?;
        let p = candle_nn::ops::softmax(&scores, D::Minus1)?.to_dtype(v.dtype())?;
        outs.push(p.matmul(&vb)?.reshape((b, h, n, d))?);
        r0 += n;
    }
    Tensor::cat(&outs, 2)?.transpose(1, 2)?.flatten_from(2)
}
