//! The SWAT decoder, read top to bottom: byte embedding → layers (RMSNorm, attention with
//! the SWAT rule, SwiGLU MLP) → RMSNorm → tied output head. Every op has a candle backward
//! (the `*_slow` RoPE/RMSNorm forms, composed softmax), so one forward serves training,
//! perplexity and generation. The rolling cache keeps the last W−1 keys per layer.

use candle_core::{D, DType, Device, Tensor, Var};
use candle_nn::{Init, Module, VarBuilder, VarMap};

use super::{Activation, Result, Rng, SwatConfig};

/// The attention rule shared by every layer of a model: activation, window, slopes, per-head
/// offsets and β.
#[derive(Debug, Clone)]
pub struct AttnRule {
    pub activation: Activation,
    pub window: Option<usize>,
    pub slopes: Vec<f64>,
    pub offsets: Vec<f64>,
    pub beta: f64,
}

impl AttnRule {
    pub fn new(cfg: &SwatConfig) -> Self {
        AttnRule {
            activation: cfg.activation,
            window: cfg.window,
            slopes: cfg.slopes(),
            offsets: cfg.offsets(),
            beta: cfg.beta(),
        }
    }

    /// The score term for query position `i`, key `j`, head `h`: None where masked.
    pub fn bias(&self, h: usize, i: usize, j: usize) -> Option<f64> {
        let visible = j <= i && self.window.is_none_or(|w| i - j < w);
        visible.then(|| self.slopes[h] * (i - j) as f64 + self.offsets[h] + self.beta)
    }
}

/// One query block of an attention pass: its queries, the keys they can see, and the additive
/// `[H, len, keys]` bias (slopes, β, −∞ outside the rule). Shared by all layers of a forward.
struct Block {
    q_start: usize,
    len: usize,
    k_start: usize,
    keys: usize,
    bias: Tensor,
}

/// Query blocks for queries at `q0..q0+t` over keys at `k0..q0+t`: a block of C queries reads
/// at most W−1+C keys, so a pass costs O(T·(W+C)), never O(T²) with a window.
fn plan(
    rule: &AttnRule,
    q0: usize,
    t: usize,
    k0: usize,
    block: usize,
    dtype: DType,
    device: &Device,
) -> Result<Vec<Block>> {
    let heads = rule.slopes.len();
    let mut blocks = Vec::new();
    for qs in (0..t).step_by(block.max(1)) {
        let len = block.min(t - qs);
        let (a, b) = (q0 + qs, q0 + qs + len);
        let ks = rule
            .window
            .map_or(k0, |w| (a + 1).saturating_sub(w).max(k0));
        let keys = b - ks;
        let mut bias = Vec::with_capacity(heads * len * keys);
        for h in 0..heads {
            for i in a..b {
                for j in ks..b {
                    bias.push(rule.bias(h, i, j).map_or(f32::NEG_INFINITY, |x| x as f32));
                }
            }
        }
        blocks.push(Block {
            q_start: qs,
            len,
            k_start: ks - k0,
            keys,
            bias: Tensor::from_vec(bias, (1, heads, len, keys), device)?.to_dtype(dtype)?,
        });
    }
    Ok(blocks)
}

/// Attention weights `[B, H, len, keys]` of one query block, for the per-head analysis: its
/// first query is at `q_start`, its first key at `k_start` (positions from 0).
pub struct ProbeBlock {
    pub q_start: usize,
    pub k_start: usize,
    pub weights: Tensor,
}

/// With `probe`, each block's weights are kept as well (a forward from position 0).
fn attend(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    blocks: &[Block],
    act: Activation,
    mut probe: Option<&mut Vec<ProbeBlock>>,
) -> Result<Tensor> {
    let scale = 1.0 / (q.dim(D::Minus1)? as f64).sqrt();
    let outs = blocks
        .iter()
        .map(|b| {
            let q = q.narrow(2, b.q_start, b.len)?.contiguous()?;
            let k = k.narrow(2, b.k_start, b.keys)?.contiguous()?;
            let v = v.narrow(2, b.k_start, b.keys)?.contiguous()?;
            let s = (q.matmul(&k.t()?)? * scale)?.broadcast_add(&b.bias)?;
            let a = match act {
                Activation::Softmax => candle_nn::ops::softmax(&s, D::Minus1)?,
                Activation::Sigmoid => candle_nn::ops::sigmoid(&s)?,
            };
            if let Some(p) = probe.as_mut() {
                p.push(ProbeBlock {
                    q_start: b.q_start,
                    k_start: b.k_start,
                    weights: a.detach(),
                });
            }
            a.matmul(&v)
        })
        .collect::<candle_core::Result<Vec<_>>>()?;
    Ok(Tensor::cat(&outs, 2)?)
}

/// The SWAT attention `o_i = Σ_j act(q_i·k_j/√d + b_h·(i−j) + β) v_j` of `q: [B,H,T,d]` at
/// positions `q0..q0+T` over `k, v: [B,H,N,d]` at positions `q0+T−N..q0+T`, in query blocks
/// of `block` (q and k already rotated). Public for the dense-reference tests.
pub fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    q0: usize,
    rule: &AttnRule,
    block: usize,
) -> Result<Tensor> {
    let (t, n) = (q.dim(2)?, k.dim(2)?);
    let k0 = q0 + t - n;
    let blocks = plan(rule, q0, t, k0, block, q.dtype(), q.device())?;
    attend(q, k, v, &blocks, rule.activation, None)
}

/// RoPE cos/sin tables `[T, d/2]` for positions `p0..p0+T`, "halves" pairing (x_i, x_{i+d/2}).
fn rope_tables(
    cfg: &SwatConfig,
    p0: usize,
    t: usize,
    dtype: DType,
    device: &Device,
) -> Result<(Tensor, Tensor)> {
    let d = cfg.head_dim();
    let mut cos = Vec::with_capacity(t * d / 2);
    let mut sin = Vec::with_capacity(t * d / 2);
    for p in p0..p0 + t {
        for i in 0..d / 2 {
            let a = p as f64 * cfg.rope_theta.powf(-2.0 * i as f64 / d as f64);
            cos.push(a.cos());
            sin.push(a.sin());
        }
    }
    let mk =
        |v| -> Result<Tensor> { Ok(Tensor::from_vec(v, (t, d / 2), device)?.to_dtype(dtype)?) };
    Ok((mk(cos)?, mk(sin)?))
}

/// RoPE on `x: [B, H, T, d]` at positions `p0..p0+T`.
pub fn rotate(cfg: &SwatConfig, x: &Tensor, p0: usize) -> Result<Tensor> {
    let (cos, sin) = rope_tables(cfg, p0, x.dim(2)?, x.dtype(), x.device())?;
    Ok(candle_nn::rotary_emb::rope_slow(x, &cos, &sin)?)
}

/// Per-layer keys and values of the most recent tokens: all of them under full attention, the
/// last W−1 (all that the next query can see besides itself) under a window.
#[derive(Debug, Clone)]
pub struct RollingCache {
    layers: Vec<KvSlot>,
    pos: usize,
    keep: Option<usize>,
}

impl RollingCache {
    pub fn new(cfg: &SwatConfig) -> Self {
        RollingCache {
            layers: vec![None; cfg.layers],
            pos: 0,
            keep: cfg.window.map(|w| w - 1),
        }
    }

    /// Tokens seen so far (the position of the next one).
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Tokens whose keys are held (the same in every layer).
    pub fn tokens(&self) -> usize {
        self.layers[0]
            .as_ref()
            .map_or(0, |(k, _)| k.dim(2).unwrap_or(0))
    }

    pub fn bytes(&self) -> usize {
        self.layers
            .iter()
            .flatten()
            .map(|(k, v)| (k.elem_count() + v.elem_count()) * k.dtype().size_in_bytes())
            .sum()
    }
}

/// One layer's cached keys and values; with the count it keeps (None: all), a layer's cache.
type KvSlot = Option<(Tensor, Tensor)>;

#[derive(Debug, Clone)]
struct Layer {
    attn_norm: Tensor,
    wq: candle_nn::Linear,
    wk: candle_nn::Linear,
    wv: candle_nn::Linear,
    wo: candle_nn::Linear,
    mlp_norm: Tensor,
    gate: candle_nn::Linear,
    up: candle_nn::Linear,
    down: candle_nn::Linear,
}

impl Layer {
    fn new(cfg: &SwatConfig, vb: VarBuilder) -> Result<Self> {
        let (h, m) = (cfg.hidden, cfg.intermediate);
        let lin = |i, o, name: &str| candle_nn::linear_no_bias(i, o, vb.pp(name));
        Ok(Layer {
            attn_norm: vb.get_with_hints(h, "attn_norm", Init::Const(1.0))?,
            wq: lin(h, h, "wq")?,
            wk: lin(h, h, "wk")?,
            wv: lin(h, h, "wv")?,
            wo: lin(h, h, "wo")?,
            mlp_norm: vb.get_with_hints(h, "mlp_norm", Init::Const(1.0))?,
            gate: lin(h, m, "gate")?,
            up: lin(h, m, "up")?,
            down: lin(m, h, "down")?,
        })
    }

    fn forward(
        &self,
        cfg: &SwatConfig,
        x: &Tensor,
        p0: usize,
        blocks: &[Block],
        cache: Option<(&mut KvSlot, Option<usize>)>,
        probe: Option<&mut Vec<ProbeBlock>>,
    ) -> Result<Tensor> {
        let (b, t, _) = x.dims3()?;
        let eps = cfg.rms_eps as f32;
        let h = candle_nn::ops::rms_norm_slow(x, &self.attn_norm, eps)?;
        let split = |y: Tensor| -> candle_core::Result<Tensor> {
            y.reshape((b, t, cfg.heads, cfg.head_dim()))?
                .transpose(1, 2)?
                .contiguous()
        };
        let (mut q, mut k) = (split(self.wq.forward(&h)?)?, split(self.wk.forward(&h)?)?);
        let v = split(self.wv.forward(&h)?)?;
        if cfg.uses_rope() {
            q = rotate(cfg, &q, p0)?;
            k = rotate(cfg, &k, p0)?;
        }
        let (k, v) = match cache {
            Some((slot, keep)) => {
                let (k, v) = match slot.take() {
                    Some((ck, cv)) => (Tensor::cat(&[&ck, &k], 2)?, Tensor::cat(&[&cv, &v], 2)?),
                    None => (k, v),
                };
                let n = k.dim(2)?;
                let kept = keep.map_or(n, |w| w.min(n));
                // A copy, so the cache's memory is exactly what it keeps.
                *slot = Some((
                    k.narrow(2, n - kept, kept)?.contiguous()?,
                    v.narrow(2, n - kept, kept)?.contiguous()?,
                ));
                (k, v)
            }
            None => (k, v),
        };
        let o = attend(&q, &k, &v, blocks, cfg.activation, probe)?
            .transpose(1, 2)?
            .reshape((b, t, cfg.hidden))?;
        let x = (x + self.wo.forward(&o)?)?;
        let h = candle_nn::ops::rms_norm_slow(&x, &self.mlp_norm, eps)?;
        let m = (self.gate.forward(&h)?.silu()? * self.up.forward(&h)?)?;
        Ok((x + self.down.forward(&m)?)?)
    }
}

/// A SWAT decoder whose weights live in a [`VarMap`] (trainable with candle autograd).
/// A clone shares the weights.
#[derive(Clone)]
pub struct SwatModel {
    cfg: SwatConfig,
    rule: AttnRule,
    varmap: VarMap,
    embed: Tensor,
    layers: Vec<Layer>,
    norm: Tensor,
    block: usize,
    dtype: DType,
    device: Device,
}

impl SwatModel {
    /// Fresh weights from `seed`: N(0, 0.02), output projections scaled by 1/√(2L) (GPT-2),
    /// norms at 1. Drawn by our own generator in name order, so a seed gives the same model on
    /// every device and run.
    pub fn new(cfg: &SwatConfig, seed: u64, dtype: DType, device: &Device) -> Result<Self> {
        let model = Self::build(cfg, dtype, device)?;
        let mut rng = Rng(seed);
        let data = model.varmap.data().lock().expect("varmap lock");
        let mut names: Vec<&String> = data.keys().collect();
        names.sort();
        for name in names {
            let var = &data[name];
            if var.rank() == 1 {
                continue; // norm gains stay at 1
            }
            let std = if name.ends_with("wo.weight") || name.ends_with("down.weight") {
                0.02 / (2.0 * cfg.layers as f64).sqrt()
            } else {
                0.02
            };
            let vals: Vec<f32> = (0..var.elem_count())
                .map(|_| (rng.normal() * std) as f32)
                .collect();
            var.set(&Tensor::from_vec(vals, var.dims(), device)?.to_dtype(dtype)?)?;
        }
        drop(data);
        Ok(model)
    }

    /// Weights from `model.safetensors` in a checkpoint folder (config from its config.json).
    pub fn load(dir: &std::path::Path, dtype: DType, device: &Device) -> Result<Self> {
        let cfg = SwatConfig::load(dir)?;
        let mut model = Self::build(&cfg, dtype, device)?;
        model.load_weights(&dir.join("model.safetensors"))?;
        Ok(model)
    }

    pub fn load_weights(&mut self, path: &std::path::Path) -> Result<()> {
        self.varmap
            .load(path)
            .map_err(|e| super::SwatError::NotCheckpoint {
                path: path.into(),
                detail: e.to_string(),
            })
    }

    pub fn save_weights(&self, path: &std::path::Path) -> Result<()> {
        Ok(self.varmap.save(path)?)
    }

    fn build(cfg: &SwatConfig, dtype: DType, device: &Device) -> Result<Self> {
        cfg.validate()?;
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, dtype, device);
        let embed = vb.get_with_hints((cfg.vocab, cfg.hidden), "embed", Init::Const(0.0))?;
        let layers = (0..cfg.layers)
            .map(|i| Layer::new(cfg, vb.pp(format!("layers.{i}"))))
            .collect::<Result<Vec<_>>>()?;
        let norm = vb.get_with_hints(cfg.hidden, "norm", Init::Const(1.0))?;
        Ok(SwatModel {
            rule: AttnRule::new(cfg),
            cfg: cfg.clone(),
            varmap,
            embed,
            layers,
            norm,
            block: cfg.window.unwrap_or(256),
            dtype,
            device: device.clone(),
        })
    }

    pub fn config(&self) -> &SwatConfig {
        &self.cfg
    }

    pub fn rule(&self) -> &AttnRule {
        &self.rule
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Trainable variables by name, sorted (the optimizer's and checkpoints' order).
    pub fn named_vars(&self) -> Vec<(String, Var)> {
        let data = self.varmap.data().lock().expect("varmap lock");
        let mut v: Vec<(String, Var)> = data.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// Query block size of attention passes (default W, or 256 under full attention).
    pub fn set_attention_block(&mut self, block: usize) {
        self.block = block.max(1);
    }

    /// Logits `[B, T, vocab]` for token ids `[B, T]`. With a cache the tokens continue what it
    /// has seen (and are added to it); without one they start at position 0.
    pub fn forward(&self, tokens: &Tensor, cache: Option<&mut RollingCache>) -> Result<Tensor> {
        self.forward_probed(tokens, cache, None)
    }

    /// Logits for `tokens: [B, T]` from position 0, and every layer's attention weights by
    /// query block: what the per-head analysis reads.
    pub fn attention_weights(&self, tokens: &Tensor) -> Result<Vec<Vec<ProbeBlock>>> {
        let mut layers = Vec::new();
        self.forward_probed(tokens, None, Some(&mut layers))?;
        Ok(layers)
    }

    fn forward_probed(
        &self,
        tokens: &Tensor,
        mut cache: Option<&mut RollingCache>,
        mut probe: Option<&mut Vec<Vec<ProbeBlock>>>,
    ) -> Result<Tensor> {
        let (_, t) = tokens.dims2()?;
        let (p0, held) = cache.as_ref().map_or((0, 0), |c| (c.pos, c.tokens()));
        let blocks = plan(
            &self.rule,
            p0,
            t,
            p0 - held,
            self.block,
            self.dtype,
            &self.device,
        )?;
        let mut x = self.embed.embedding(&tokens.flatten_all()?)?.reshape((
            tokens.dim(0)?,
            t,
            self.cfg.hidden,
        ))?;
        let keep = cache.as_ref().and_then(|c| c.keep);
        for (i, layer) in self.layers.iter().enumerate() {
            let slot = cache.as_mut().map(|c| (&mut c.layers[i], keep));
            let weights = probe.as_mut().map(|p| {
                p.push(Vec::new());
                p.last_mut().expect("just pushed")
            });
            x = layer.forward(&self.cfg, &x, p0, &blocks, slot, weights)?;
        }
        if let Some(c) = cache {
            c.pos += t;
        }
        let x = candle_nn::ops::rms_norm_slow(&x, &self.norm, self.cfg.rms_eps as f32)?;
        Ok(x.broadcast_matmul(&self.embed.t()?)?)
    }

    /// Mean next-token cross-entropy of `targets` given `inputs` (both `[B, T]`).
    pub fn loss(&self, inputs: &Tensor, targets: &Tensor) -> Result<Tensor> {
        let logits = self.forward(inputs, None)?.flatten_to(1)?;
        // Half-precision logits are widened; f64 stays f64 (the finite-difference checks).
        let logits = match logits.dtype() {
            DType::BF16 | DType::F16 => logits.to_dtype(DType::F32)?,
            _ => logits,
        };
        Ok(candle_nn::loss::cross_entropy(
            &logits,
            &targets.flatten_all()?,
        )?)
    }
}
