//! The decoder: llama, qwen2 (q/k/v bias) and qwen3 (q/k RMSNorm), read top to bottom.
//! Attention takes the recipe's rule per layer and phase; the cache is its own type.

use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Tensor};

use super::attention::{self, Spans, ops};
use super::config::{ModelConfig, RopeStyle};
use super::decode_graph::Capture;
use super::device::Kernels;
use super::kernels;
use super::kv_cache::KvCache;
use super::probe::AttentionProbe;
use super::rope::{self, RopeScaling};
use super::weights::{Linear, WeightSource};
use super::{ModelError, Result};
use crate::recipe::{AttnRule, Phase, Recipe, RopeChoice};

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

/// Projections that read the same input, run as one matmul when their weights are dense or
/// tiled of one kind (concatenated at load: fewer, larger GEMMs and fewer launches per token),
/// else one each (candle's quantized blocks cannot be concatenated) with the outputs joined.
#[derive(Debug, Clone)]
pub(super) struct Joined {
    pub(super) parts: Vec<Linear>,
    /// Output width of each projection, in order.
    pub(super) widths: Vec<usize>,
}

impl Joined {
    pub(super) fn new(parts: Vec<Linear>) -> candle_core::Result<Self> {
        let widths = parts.iter().map(Linear::out_dim).collect();
        let dense: Option<Vec<Tensor>> = parts
            .iter()
            .map(|p| match p {
                Linear::Dense(w) => Some(w.clone()),
                _ => None,
            })
            .collect();
        let tiled: Option<Vec<&kernels::qtile::Tiled>> = parts
            .iter()
            .map(|p| match p {
                Linear::Tiled(t) => Some(t.as_ref()),
                _ => None,
            })
            .collect();
        let parts = match (dense, tiled.and_then(|t| kernels::qtile::Tiled::concat(&t))) {
            (Some(ws), _) => vec![Linear::Dense(Tensor::cat(&ws, 0)?)],
            (_, Some(t)) => vec![Linear::Tiled(Arc::new(t))],
            _ => parts,
        };
        Ok(Joined { parts, widths })
    }

    /// `[.., in]` → the joined outputs `[.., Σ widths]` ([`Linear::forward_on`]).
    fn forward_on(&self, x: &Tensor, fused: bool) -> candle_core::Result<Tensor> {
        match self.parts.as_slice() {
            [one] => one.forward_on(x, fused),
            many => {
                let ys = many
                    .iter()
                    .map(|p| p.forward_on(x, fused))
                    .collect::<candle_core::Result<Vec<_>>>()?;
                Tensor::cat(&ys, candle_core::D::Minus1)
            }
        }
    }

    /// Splits a joined output back into the projections' outputs (views, no copy).
    fn split_out(&self, y: &Tensor) -> candle_core::Result<Vec<Tensor>> {
        let mut at = 0;
        self.widths
            .iter()
            .map(|&w| {
                let part = y.narrow(candle_core::D::Minus1, at, w);
                at += w;
                part
            })
            .collect()
    }

    fn bytes(&self) -> usize {
        self.parts.iter().map(Linear::bytes).sum()
    }
}

#[derive(Debug, Clone)]
pub(super) struct Layer {
    pub(super) attn_norm: Tensor,
    /// q, k, v.
    pub(super) qkv: Joined,
    /// Qwen2: the q/k/v biases, concatenated like the projections.
    pub(super) qkv_bias: Option<Tensor>,
    pub(super) wo: Linear,
    /// Qwen3: per-head RMSNorm of q and k before RoPE.
    pub(super) qk_norm: Option<(Tensor, Tensor)>,
    pub(super) ffn_norm: Tensor,
    /// gate, up.
    pub(super) gate_up: Joined,
    pub(super) down: Linear,
}

#[derive(Debug, Clone)]
pub struct Model {
    pub(super) cfg: ModelConfig,
    pub(super) embed: Tensor,
    pub(super) layers: Vec<Layer>,
    pub(super) norm: Tensor,
    pub(super) lm_head: Linear,
    pub(super) device: Device,
    pub(super) dtype: DType,
    /// Chosen once for the device, dtype and shape ([`Model::set_fused_attention`]).
    pub(super) kernels: Kernels,
    /// RoPE tables from position 0, grown on demand: a decode step then uploads nothing.
    /// Indexed by [`Table`]; the original one is built only when a recipe asks for it.
    pub(super) rope: Arc<Mutex<[Option<Rope>; 2]>>,
}

/// The RoPE table a layer reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Table {
    /// The model's RoPE, with its scaling if it has one.
    Model = 0,
    /// Unscaled, for sliding layers under [`RopeChoice::Original`] when the model scales.
    Original = 1,
}

/// RoPE tables for a run of positions, shared by the layers of one forward pass that use them.
#[derive(Debug)]
pub(super) struct Rope {
    pub(super) cos: Tensor,
    pub(super) sin: Tensor,
    /// `[C, d]`: cos | sin per token, for the fused kernels (CUDA, bf16 only).
    pub(super) cs: Option<Tensor>,
    pub(super) style: RopeStyle,
}

impl Rope {
    /// Unscaled, the same arithmetic as candle-transformers' `precomput_freqs_cis` (f32), for
    /// bit-level parity; `scaling` as `rope::frequencies` defines it.
    pub(super) fn new(
        cfg: &ModelConfig,
        scaling: Option<&RopeScaling>,
        positions: std::ops::Range<usize>,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let half = cfg.head_dim / 2;
        let n = positions.len();
        let (inv, attention) = rope::frequencies(cfg.head_dim, cfg.rope_theta, scaling);
        let (cos, sin) = rope::cos_sin(&inv, attention, positions);
        let t = |v: Vec<f32>| -> Result<Tensor> {
            Ok(Tensor::from_vec(v, (n, half), device)?.to_dtype(dtype)?)
        };
        let (cos, sin) = (t(cos)?, t(sin)?);
        let cs = if device.is_cuda() && dtype == DType::BF16 {
            Some(Tensor::cat(&[&cos, &sin], 1)?)
        } else {
            None
        };
        Ok(Rope {
            cos,
            sin,
            cs,
            style: cfg.rope_style,
        })
    }

    fn rows(&self) -> usize {
        self.cos.dims()[0]
    }

    /// The rows of `positions` (views: no copy, no upload).
    fn slice(&self, positions: std::ops::Range<usize>) -> candle_core::Result<Self> {
        let rows = |t: &Tensor| t.narrow(0, positions.start, positions.len());
        Ok(Rope {
            cos: rows(&self.cos)?,
            sin: rows(&self.sin)?,
            cs: self.cs.as_ref().map(rows).transpose()?,
            style: self.style,
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

impl Layer {
    /// Normalised input → the joined q/k/v projection `[1, C, (H + 2·KV)·d]`, biases added.
    pub(super) fn project(&self, h: &Tensor) -> candle_core::Result<Tensor> {
        let y = self.qkv.forward_on(h, false)?;
        match &self.qkv_bias {
            Some(b) => y.broadcast_add(b),
            None => Ok(y),
        }
    }

    /// Normalised input → rotated q `[1,H,C,d]`, k and v `[1,KV,C,d]`.
    fn qkv(
        &self,
        cfg: &ModelConfig,
        h: &Tensor,
        rope: &Rope,
    ) -> candle_core::Result<(Tensor, Tensor, Tensor)> {
        let (b, c, _) = h.dims3()?;
        let y = self.project(h)?;
        // Heads of q, k and v side by side: split by head (views), so the only copy is RoPE's.
        let y = y.reshape((b, c, cfg.heads + 2 * cfg.kv_heads, cfg.head_dim))?;
        let heads = |at: usize, n: usize| y.narrow(2, at, n)?.transpose(1, 2);
        let (mut q, mut k, v) = (
            heads(0, cfg.heads)?,
            heads(cfg.heads, cfg.kv_heads)?,
            heads(cfg.heads + cfg.kv_heads, cfg.kv_heads)?,
        );
        if let Some((qn, kn)) = &self.qk_norm {
            q = candle_nn::ops::rms_norm(&q.contiguous()?, qn, cfg.rms_eps as f32)?;
            k = candle_nn::ops::rms_norm(&k.contiguous()?, kn, cfg.rms_eps as f32)?;
        }
        Ok((rope.apply(&q)?, rope.apply(&k)?, v.contiguous()?))
    }

    /// Normalised input → rotated queries `[1,H,C,d]`, with this chunk's keys and values
    /// appended to layer `i`'s cache: in one kernel that writes the cache in place where it
    /// runs (it adds the q/k/v bias itself), else rotated on candle ops and appended.
    #[allow(clippy::too_many_arguments)]
    fn queries_into_cache(
        &self,
        cfg: &ModelConfig,
        kernels: &Kernels,
        h: &Tensor,
        rope: &Rope,
        cache: &mut KvCache,
        i: usize,
        capture: Option<&Capture>,
    ) -> Result<Tensor> {
        let Some(cs) = rope.cs.as_ref().filter(|_| kernels.rope_in_place) else {
            let (q, k, v) = self.qkv(cfg, h, rope)?;
            cache.append(i, &k, &v)?;
            return Ok(q);
        };
        let y = self.qkv.forward_on(h, kernels.elementwise)?;
        let bias = self.qkv_bias.as_ref();
        let step = capture.map_or(0, |cap| cap.slot_pos(i));
        let (heads, kv, d, style) = (cfg.heads, cfg.kv_heads, cfg.head_dim, cfg.rope_style);
        let q = kernels::rope::rotate_q(&y, bias, cs, heads, d, style, step)?;
        let (kb, vb, slot) = cache.append_slots(i, h.dim(1)?)?;
        kernels::rope::write_kv(&y, bias, cs, &kb, &vb, slot, heads, kv, d, style, step)?;
        if let Some(cap) = capture {
            cap.note_slot(i, slot);
        }
        Ok(q)
    }

    /// Normalised input → the MLP block's output (before the residual add).
    pub(super) fn mlp(&self, h: &Tensor, fused: bool) -> candle_core::Result<Tensor> {
        let y = self.gate_up.forward_on(h, fused)?;
        let act = if fused {
            kernels::ops::silu_mul(&y)?
        } else {
            let [gate, up]: [Tensor; 2] = self
                .gate_up
                .split_out(&y)?
                .try_into()
                .expect("two projections");
            (candle_nn::ops::silu(&gate)? * up)?
        };
        self.down.forward_on(&act, fused)
    }
}

/// The residual stream, holding back the last block's output so that its add runs in the
/// same launch as the next RMSNorm where the fused kernels run.
struct Residual {
    x: Tensor,
    pending: Option<Tensor>,
    fused: bool,
    eps: f32,
}

impl Residual {
    fn new(x: Tensor, fused: bool, eps: f64) -> Self {
        Residual {
            x,
            pending: None,
            fused,
            eps: eps as f32,
        }
    }

    /// Adds the held-back output, then returns `rms_norm(x) · w`.
    fn norm(&mut self, w: &Tensor) -> candle_core::Result<Tensor> {
        match self.pending.take() {
            Some(d) if self.fused => {
                let (x, h) = kernels::ops::add_rms_norm(&self.x, &d, w, self.eps)?;
                self.x = x;
                Ok(h)
            }
            Some(d) => {
                self.x = (&self.x + d)?;
                candle_nn::ops::rms_norm(&self.x, w, self.eps)
            }
            None => candle_nn::ops::rms_norm(&self.x, w, self.eps),
        }
    }

    /// Holds back a block's output; the next `norm` or `finish` adds it.
    fn add(&mut self, delta: Tensor) {
        debug_assert!(self.pending.is_none(), "two outputs without a norm between");
        self.pending = Some(delta);
    }

    fn finish(self) -> candle_core::Result<Tensor> {
        match self.pending {
            Some(d) => self.x + d,
            None => Ok(self.x),
        }
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
            let qkv_bias = if cfg.arch.has_qkv_bias() {
                Some(Tensor::cat(
                    &[
                        src.vector(&n("attn_q.bias"), q_dim)?,
                        src.vector(&n("attn_k.bias"), kv_dim)?,
                        src.vector(&n("attn_v.bias"), kv_dim)?,
                    ],
                    0,
                )?)
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
                qkv: Joined::new(vec![
                    src.linear(&n("attn_q.weight"), q_dim, cfg.hidden)?,
                    src.linear(&n("attn_k.weight"), kv_dim, cfg.hidden)?,
                    src.linear(&n("attn_v.weight"), kv_dim, cfg.hidden)?,
                ])?,
                qkv_bias,
                wo: src.linear(&n("attn_output.weight"), cfg.hidden, q_dim)?,
                qk_norm,
                ffn_norm: src.vector(&n("ffn_norm.weight"), cfg.hidden)?,
                gate_up: Joined::new(vec![
                    src.linear(&n("ffn_gate.weight"), cfg.intermediate, cfg.hidden)?,
                    src.linear(&n("ffn_up.weight"), cfg.intermediate, cfg.hidden)?,
                ])?,
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
            kernels: Kernels::choose(&cfg, src.device(), src.dtype(), true),
            cfg,
            embed,
            layers,
            norm,
            lm_head,
            rope: Arc::default(),
        })
    }

    /// Chooses the project's kernels (default: the fused ones on CUDA, the in-place decode
    /// loop on the CPU) or the candle-ops path, so the two can be compared.
    pub fn set_fused_attention(&mut self, on: bool) {
        self.kernels = Kernels::choose(&self.cfg, &self.device, self.dtype, on);
    }

    /// The kernels this model runs.
    pub fn kernels(&self) -> &Kernels {
        &self.kernels
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

    /// Whether a decode step can run as a CUDA graph: every layer on the fused kernels, whose
    /// positions and slots a replay rewrites (the candle-ops path bakes them in).
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    pub(crate) fn graph_capable(&self) -> bool {
        self.kernels.graph_capable()
    }

    /// Runs with `scaling` from now on (None: unscaled RoPE); the tables are rebuilt.
    pub fn set_rope_scaling(&mut self, scaling: Option<RopeScaling>) {
        self.cfg.rope_scaling = scaling;
        // A fresh lock, not a cleared one: clones of this model share the old tables.
        self.rope = Arc::default();
    }

    /// Sets the RoPE scaling for a `ctx`-token context (0: the model's own) on a model as
    /// loaded: [`ModelConfig::scaling_for_context`], with `long` a preset's long-context
    /// scaling. A scaling set before counts as the model's own.
    pub fn use_context(&mut self, ctx: usize, long: Option<RopeScaling>) {
        let scaling = self.cfg.scaling_for_context(ctx, long);
        if let Some(s) = scaling {
            tracing::info!("RoPE scaling: {s}");
        }
        if scaling != self.cfg.rope_scaling {
            self.set_rope_scaling(scaling);
        }
    }

    /// Which table layer `layer` reads under `recipe`.
    pub(super) fn table(&self, recipe: &Recipe, layer: usize) -> Table {
        match recipe.layer_rope(layer) {
            RopeChoice::Original if self.cfg.rope_scaling.is_some() => Table::Original,
            _ => Table::Model,
        }
    }

    /// Per layer, the fused kernels' RoPE table under `recipe` (its identity and rows); None
    /// until all of them are built.
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    pub(crate) fn rope_tables(
        &self,
        recipe: &Recipe,
    ) -> Option<Vec<(candle_core::TensorId, usize)>> {
        let tables = self.rope.lock().expect("rope table lock");
        (0..self.cfg.layers)
            .map(|i| {
                let t = tables[self.table(recipe, i) as usize].as_ref()?;
                Some((t.cs.as_ref()?.id(), t.rows()))
            })
            .collect()
    }

    /// The RoPE rows of `positions` for each table that `recipe`'s layers read, from the
    /// model's tables (built for at least `ctx`).
    fn ropes(
        &self,
        recipe: &Recipe,
        positions: std::ops::Range<usize>,
    ) -> Result<[Option<Rope>; 2]> {
        let mut tables = self.rope.lock().expect("rope table lock");
        let mut out = [None, None];
        for table in (0..self.cfg.layers).map(|i| self.table(recipe, i)) {
            if out[table as usize].is_some() {
                continue;
            }
            let t = &mut tables[table as usize];
            if t.as_ref().is_none_or(|t| t.rows() < positions.end) {
                // Half again the need: a long read rebuilds the table a few times, not per step.
                let rows = (positions.end + positions.end / 2)
                    .max(self.cfg.ctx)
                    .next_multiple_of(4096);
                let scaling = self.cfg.rope_scaling.filter(|_| table == Table::Model);
                *t = Some(Rope::new(
                    &self.cfg,
                    scaling.as_ref(),
                    0..rows,
                    self.dtype,
                    &self.device,
                )?);
            }
            out[table as usize] = Some(t.as_ref().expect("just built").slice(positions.clone())?);
        }
        Ok(out)
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
                l.qkv.bytes()
                    + l.gate_up.bytes()
                    + l.wo.bytes()
                    + l.down.bytes()
                    + vec(&l.attn_norm)
                    + vec(&l.ffn_norm)
            })
            .sum();
        layers + self.lm_head.bytes() + vec(&self.norm)
    }

    pub(super) fn embed(&self, tokens: &[u32]) -> Result<Tensor> {
        if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= self.cfg.vocab) {
            return Err(candle_core::Error::Msg(format!(
                "token id {bad} outside the vocabulary ({})",
                self.cfg.vocab
            ))
            .into());
        }
        self.embed_ids(&Tensor::new(tokens, &self.device)?)
    }

    /// `[1, C, hidden]` embeddings of the ids `[C]` already on the device.
    fn embed_ids(&self, ids: &Tensor) -> Result<Tensor> {
        Ok(self.embed.index_select(ids, 0)?.unsqueeze(0)?)
    }

    fn head(&self, x: &Tensor, want: Logits, fused: bool) -> Result<Option<Tensor>> {
        let x = match want {
            Logits::Skip => return Ok(None),
            Logits::Last => x.narrow(1, x.dim(1)? - 1, 1)?,
            Logits::All => x.clone(),
        };
        let x = candle_nn::ops::rms_norm(&x, &self.norm, self.cfg.rms_eps as f32)?;
        let logits = self.lm_head.forward_on(&x, fused)?;
        let logits = logits.squeeze(0)?.to_dtype(DType::F32)?;
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
        self.forward_pass(tokens, cache, recipe, phase, want, None, None)
    }

    /// Runs `tokens` as [`Model::forward`] does (no logits) and returns, for key positions
    /// `0..keys`, the attention mass their queries gave each one in every layer: what an
    /// answer attended to, when its tokens run again over the cache that produced them.
    pub fn attention_mass(
        &self,
        tokens: &[u32],
        cache: &mut KvCache,
        recipe: &Recipe,
        phase: Phase,
        keys: usize,
    ) -> Result<Vec<f32>> {
        let probe = self.probed(tokens, cache, recipe, phase, AttentionProbe::new(keys))?;
        Ok(probe.mass().to_vec())
    }

    /// [`Model::forward`] without logits, `probe` recording each layer's queries.
    fn probed(
        &self,
        tokens: &[u32],
        cache: &mut KvCache,
        recipe: &Recipe,
        phase: Phase,
        mut probe: AttentionProbe,
    ) -> Result<AttentionProbe> {
        self.forward_pass(
            tokens,
            cache,
            recipe,
            phase,
            Logits::Skip,
            None,
            Some(&mut probe),
        )?;
        Ok(probe)
    }

    /// `x: [1, heads, n, d]`, rotated by RoPE at positions `first..first + n` as layer `layer`
    /// rotates under `recipe`, rotated back: dot products of such vectors no longer depend on
    /// where their tokens are, so a question can score passages far past the trained context
    /// by what they say.
    pub fn unrotate(
        &self,
        x: &Tensor,
        first: usize,
        layer: usize,
        recipe: &Recipe,
    ) -> Result<Tensor> {
        let n = x.dim(2)?;
        let scaling = self
            .cfg
            .rope_scaling
            .filter(|_| self.table(recipe, layer) == Table::Model);
        let rope = Rope::new(
            &self.cfg,
            scaling.as_ref(),
            first..first + n,
            x.dtype(),
            x.device(),
        )?;
        let back = Rope {
            sin: rope.sin.neg()?,
            cs: None,
            ..rope
        };
        Ok(back.apply(x)?)
    }

    /// Runs `tokens` as [`Model::forward`] does (no logits) and returns each layer's rotated
    /// queries, `[1, H, C, d]` in f32: what a question looks for, layer by layer.
    pub fn queries(
        &self,
        tokens: &[u32],
        cache: &mut KvCache,
        recipe: &Recipe,
        phase: Phase,
    ) -> Result<Vec<Tensor>> {
        let probe = AttentionProbe::queries_only();
        let probe = self.probed(tokens, cache, recipe, phase, probe)?;
        Ok(probe.into_queries())
    }

    /// [`Model::forward`]; with `capture`, one decode step recorded into a CUDA graph whose
    /// replays read the step's token, positions and cache slots from device memory
    /// (see `decode_graph`); with `probe`, where each layer's queries attend is recorded.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn forward_pass(
        &self,
        tokens: &[u32],
        cache: &mut KvCache,
        recipe: &Recipe,
        phase: Phase,
        want: Logits,
        capture: Option<&Capture>,
        mut probe: Option<&mut AttentionProbe>,
    ) -> Result<Option<Tensor>> {
        let (q0, q1) = (cache.next_pos(), cache.next_pos() + tokens.len());
        // A graph's kernels read RoPE rows by the position they are given: the whole table.
        let ropes = self.ropes(recipe, if capture.is_some() { 0..q1 } else { q0..q1 })?;
        let x = match capture {
            Some(c) => self.embed_ids(&c.ids)?,
            None => self.embed(tokens)?,
        };
        let k = self.kernels;
        let mut x = Residual::new(x, k.elementwise, self.cfg.rms_eps);
        let mut spans = Spans::new(q0, q1, &k, &self.device);
        for (i, layer) in self.layers.iter().enumerate() {
            let rule = recipe.rule(i, phase);
            let rope = ropes[self.table(recipe, i) as usize]
                .as_ref()
                .expect("built for this recipe");
            let h = x.norm(&layer.attn_norm)?;
            let q = layer.queries_into_cache(&self.cfg, &k, &h, rope, cache, i, capture)?;
            if let Some(p) = probe.as_deref_mut() {
                p.record(&q, cache, i, q0)?;
            }
            let attn = attention::attend(&k, &q, cache, i, rule, &mut spans, capture)?;
            x.add(layer.wo.forward_on(&attn, k.elementwise)?);
            let h = x.norm(&layer.ffn_norm)?;
            x.add(layer.mlp(&h, k.elementwise)?);
            if cache.eviction() && recipe.layer_evicts(i) {
                // Keep the newest token's window: sink + the last W tokens (DESIGN.md).
                cache.evict(i, rule.sink, rule.first_needed(q1 - 1))?;
            }
        }
        cache.advance(tokens.len());
        let logits = self.head(&x.finish()?, want, k.elementwise)?;
        match (capture, logits) {
            // The graph's own allocations are freed inside it: the logits go to a buffer
            // that outlives it.
            (Some(cap), Some(l)) => {
                cap.logits.slice_set(&l, 0, 0)?;
                Ok(Some(cap.logits.clone()))
            }
            (_, logits) => Ok(logits),
        }
    }

    /// The model's RoPE (scaled as the file says) for positions `0..t`, built apart from the
    /// tables a forward pass shares, for the dense paths.
    pub(super) fn dense_rope(&self, t: usize) -> Result<Rope> {
        Rope::new(
            &self.cfg,
            self.cfg.rope_scaling.as_ref(),
            0..t,
            self.dtype,
            &self.device,
        )
    }

    /// A calibration read: full attention over `tokens` (dense, as the reference computes
    /// it), and for each layer the mean attention mass that its queries put on keys `rule`
    /// would not let them see — what the layer loses if it alone turns sliding. Averaged over
    /// heads and over the queries that have such keys (positions ≥ sink + W).
    pub fn outside_mass(&self, tokens: &[u32], rule: AttnRule) -> Result<Vec<f64>> {
        let t = tokens.len();
        let first = rule.sink + rule.window.unwrap_or(t);
        if first >= t {
            return Err(ModelError::BadConfig(format!(
                "a calibration read needs more than sink + window = {first} tokens; it has {t}"
            )));
        }
        let rope = self.dense_rope(t)?;
        let mask = |keep: &dyn Fn(usize, usize) -> bool, rows: std::ops::Range<usize>, on: f32| {
            let (r0, n) = (rows.start, rows.len());
            let mut m = vec![0f32; n * t];
            for q in rows {
                for k in 0..t {
                    if keep(q, k) {
                        m[(q - r0) * t + k] = on;
                    }
                }
            }
            Tensor::from_vec(m, (n, t), &self.device)
        };
        let causal = mask(&|q, k| k > q, 0..t, f32::NEG_INFINITY)?;
        // 1 where a query under `rule` could not look: causal keys outside sink + window.
        let hidden = mask(&|q, k| k <= q && !rule.allows(q, k), first..t, 1.0)?;
        let (heads, kv) = (self.cfg.heads, self.cfg.kv_heads);
        let (g, d) = (heads / kv, self.cfg.head_dim);
        let mut x = Residual::new(self.embed(tokens)?, false, self.cfg.rms_eps);
        let mut out = Vec::with_capacity(self.layers.len());
        for layer in &self.layers {
            let h = x.norm(&layer.attn_norm)?;
            let (q, k, v) = layer.qkv(&self.cfg, &h, &rope)?;
            // Scores of the rows that can lose something, query blocks bounding memory.
            let mut mass = 0f64;
            let block = ((1usize << 26) / (heads * t)).max(1);
            for r in (first..t).step_by(block) {
                let n = block.min(t - r);
                let qb = q
                    .narrow(2, r, n)?
                    .contiguous()?
                    .reshape((1, kv, g * n, d))?;
                let scores = (qb.matmul(&k.t()?)? * (1.0 / (d as f64).sqrt()))?
                    .to_dtype(DType::F32)?
                    .reshape((1, kv, g, n, t))?
                    .broadcast_add(&causal.narrow(0, r, n)?)?;
                let p = candle_nn::ops::softmax_last_dim(&scores)?;
                let lost = p.broadcast_mul(&hidden.narrow(0, r - first, n)?)?;
                mass += lost.sum_all()?.to_dtype(DType::F64)?.to_scalar::<f64>()?;
            }
            out.push(mass / ((t - first) * heads) as f64);
            let attn = ops::token_major(&ops::attend(&q, &k, &v, Some(&causal))?)?;
            x.add(layer.wo.forward(&attn)?);
            let h = x.norm(&layer.ffn_norm)?;
            x.add(layer.mlp(&h, false)?);
        }
        Ok(out)
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
        // Built here, not taken from the model's tables: the reference shares no state.
        let model_rope = self.dense_rope(t)?;
        let original = Rope::new(&self.cfg, None, 0..t, self.dtype, &self.device)?;
        let mut x = Residual::new(self.embed(tokens)?, false, self.cfg.rms_eps);
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
            let h = x.norm(&layer.attn_norm)?;
            let rope = match self.table(recipe, i) {
                Table::Model => &model_rope,
                Table::Original => &original,
            };
            let (q, k, v) = layer.qkv(&self.cfg, &h, rope)?;
            let attn = ops::token_major(&ops::attend(&q, &k, &v, Some(&mask))?)?;
            x.add(layer.wo.forward(&attn)?);
            let h = x.norm(&layer.ffn_norm)?;
            x.add(layer.mlp(&h, false)?);
        }
        self.head(&x.finish()?, Logits::All, false)?
            .ok_or_else(|| ModelError::BadConfig("no logits".into()))
    }
}
