//! The fused attention kernel (`cuda/attention.cu`) as a candle op: bf16 q, K and V read
//! in place from the KV cache through a [`SlotMap`], the recipe's mask computed from positions,
//! scores never materialised. Only CUDA runs it; the candle-ops path (`ops.rs`) stays
//! the reference and the CPU implementation.

use candle_core::{CpuStorage, Layout, Shape, Tensor};

use crate::recipe::{AttnRule, KeySpan};

/// Where the keys of a span lie in a layer's cache buffer: key `j < n_sink` is position `j`
/// at slot `sink_slot0 + j`; key `n_sink + t` is position `recent_pos0 + t` at slot
/// `recent_slot0 + t`. Covers a cache before eviction (slot = position) and after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotMap {
    pub n_sink: usize,
    pub sink_slot0: usize,
    pub n_recent: usize,
    pub recent_slot0: usize,
    pub recent_pos0: usize,
}

impl SlotMap {
    /// `span`'s keys in a cache that never evicted: each key's slot is its position.
    pub fn in_place(span: &KeySpan) -> SlotMap {
        SlotMap {
            n_sink: span.sink.len(),
            sink_slot0: 0,
            n_recent: span.recent.len(),
            recent_slot0: span.recent.start,
            recent_pos0: span.recent.start,
        }
    }
}

/// Attention of `q: [1, H, C, d]` (positions `q0..q0+C`) over the keys that `map` picks from
/// the cache buffers `k, v: [1, KV, capacity, d]`, under `rule`. Returns `[1, C, H, d]`
/// (token-major, as the output projection reads it: no transpose copy).
pub fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    map: SlotMap,
    rule: AttnRule,
    q0: usize,
    launch: Launch,
) -> candle_core::Result<Tensor> {
    q.apply_op3_no_bwd(
        k,
        v,
        &FusedAttention {
            map,
            rule,
            q0,
            launch,
        },
    )
}

/// How the self-test drives the kernel; the engine uses the default.
#[derive(Debug, Clone, Copy, Default)]
pub struct Launch {
    /// Fill the output with NaN first, so a check sees any element left unwritten.
    pub poison: bool,
    /// Warps per block (1 or 4) instead of the choice by rows per KV head.
    pub warps: Option<usize>,
    /// Key splits per row instead of the choice by key count: a decode graph fixes the grid.
    pub splits: Option<usize>,
    /// Device address of this launch's `AttnParams`, rewritten before each replay of a decode
    /// graph; 0 for a plain launch.
    pub step: u64,
}

// Read by the CUDA implementation only.
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
struct FusedAttention {
    map: SlotMap,
    rule: AttnRule,
    q0: usize,
    launch: Launch,
}

impl candle_core::CustomOp3 for FusedAttention {
    fn name(&self) -> &'static str {
        "swaa-fused-attention"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        candle_core::bail!("the fused attention kernel runs on CUDA only")
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        qs: &candle_core::CudaStorage,
        ql: &Layout,
        ks: &candle_core::CudaStorage,
        kl: &Layout,
        vs: &candle_core::CudaStorage,
        vl: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        cuda::forward(self, qs, ql, ks, kl, vs, vl)
    }
}

#[cfg(feature = "cuda")]
pub(crate) mod cuda {
    use candle_core::backend::BackendStorage;
    use candle_core::cuda_backend::cudarc::driver::{DeviceRepr, LaunchConfig, PushKernelArg};
    use candle_core::cuda_backend::{CudaStorageSlice, WrapErr};
    use candle_core::{CudaStorage, Layout, Shape, bail};
    use half::bf16;

    use super::{FusedAttention, Launch, SlotMap};
    use crate::recipe::AttnRule;

    use crate::model::kernels::loader::{ATTENTION, function};
    /// Query rows per warp: a block of `w` warps takes `16·w` rows (`BR` in the kernel).
    const WARP_ROWS: usize = 16;
    /// Keys per tile (`BC`): a split gets at least a few tiles.
    const KEYS: usize = 64;
    /// Enough blocks to keep an H100's 132 SMs busy at two blocks of four warps each.
    const TARGET_BLOCKS: usize = 264;
    /// The same for one-warp blocks: six per SM (shared memory bounds it at six).
    const TARGET_BLOCKS_W1: usize = 792;

    /// Mirrors `AttnParams` in attention.cu field by field.
    #[repr(C)]
    #[derive(Clone, Copy)]
    pub(crate) struct AttnParams {
        c: i32,
        g: i32,
        n: i32,
        n_sink: i32,
        sink_slot0: i32,
        recent_slot0: i32,
        recent_pos0: i32,
        q0: i32,
        window: i32,
        sink: i32,
        splits: i32,
        scale_log2: f32,
        q_head_stride: i64,
        q_tok_stride: i64,
        k_head_stride: i64,
        k_tok_stride: i64,
        v_head_stride: i64,
        v_tok_stride: i64,
    }
    // SAFETY: plain old data with the C layout the kernel reads.
    unsafe impl DeviceRepr for AttnParams {}

    fn strides(l: &Layout, what: &str) -> candle_core::Result<(usize, i64, i64)> {
        let s = l.stride();
        if l.dims().len() != 4 || s[3] != 1 || !l.start_offset().is_multiple_of(8) {
            bail!("fused attention: {what} must be [1, heads, tokens, d] with contiguous rows");
        }
        Ok((l.start_offset(), s[1] as i64, s[2] as i64))
    }

    fn int(x: usize, what: &str) -> candle_core::Result<i32> {
        i32::try_from(x).map_err(|_| candle_core::Error::Msg(format!("{what} {x} exceeds i32")))
    }

    /// A launch worked out on the host: the kernel's parameters and its grid.
    pub(crate) struct Plan {
        pub(crate) params: AttnParams,
        warps: usize,
        row_blocks: usize,
        kv: usize,
        splits: usize,
        /// Element offsets of q, k and v in their buffers.
        offsets: [usize; 3],
    }

    /// The launch for q, k, v laid out as `ql`, `kl`, `vl` (a replayed decode graph works out
    /// each step's parameters here without the tensors).
    pub(crate) fn plan(
        ql: &Layout,
        kl: &Layout,
        vl: &Layout,
        map: SlotMap,
        rule: AttnRule,
        q0: usize,
        launch: &Launch,
    ) -> candle_core::Result<Plan> {
        let (_, h, c, d) = ql.shape().dims4()?;
        let (_, kv, cap, kd) = kl.shape().dims4()?;
        if kd != d || vl.dims() != kl.dims() || h % kv != 0 || !(d == 64 || d == 128) {
            bail!(
                "fused attention: shapes q {:?} k {:?} v {:?}",
                ql.dims(),
                kl.dims(),
                vl.dims()
            );
        }
        let m = map;
        if m.n_sink > 0 && m.sink_slot0 + m.n_sink > cap || m.recent_slot0 + m.n_recent > cap {
            bail!("fused attention: slot map {m:?} outside a cache of {cap} slots");
        }
        let (qo, qhs, qts) = strides(ql, "q")?;
        let (ko, khs, kts) = strides(kl, "k")?;
        let (vo, vhs, vts) = strides(vl, "v")?;
        let g = h / kv;
        let n = m.n_sink + m.n_recent;
        // One warp when a KV head has one warp's rows (decode): small blocks, many resident
        // per SM, each streaming a share of the keys. Eight warps measured slower than four
        // for prefill (54k vs 57k tok/s full attention at 32k on an H200): same occupancy,
        // and a barrier across eight warps per tile.
        let warps = match launch.warps {
            Some(w @ (1 | 4)) => w,
            Some(w) => bail!("fused attention: {w} warps per block (1 or 4 are built)"),
            None if c * g <= WARP_ROWS => 1,
            None => 4,
        };
        let row_blocks = (c * g).div_ceil(warps * WARP_ROWS);
        let target = if warps == 1 {
            TARGET_BLOCKS_W1
        } else {
            TARGET_BLOCKS
        };
        // Split the keys when the rows alone cannot fill the GPU (decode, short chunks).
        let splits = match launch.splits {
            // `attn_combine` weighs at most 1024 splits of a row.
            Some(s) if (1..=MAX_SPLITS).contains(&s) => s,
            Some(s) => bail!("fused attention: {s} splits (1..={MAX_SPLITS})"),
            None if row_blocks * kv >= target / 2 => 1,
            // At least two tiles per split where there are enough (fewer partials to merge).
            None => (target / (row_blocks * kv))
                .clamp(1, n.div_ceil(KEYS).div_ceil(2).clamp(1, MAX_SPLITS)),
        };
        let params = AttnParams {
            c: int(c, "chunk")?,
            g: int(g, "group")?,
            n: int(n, "keys")?,
            n_sink: int(m.n_sink, "sink keys")?,
            sink_slot0: int(m.sink_slot0, "slot")?,
            recent_slot0: int(m.recent_slot0, "slot")?,
            recent_pos0: int(m.recent_pos0, "position")?,
            q0: int(q0, "position")?,
            window: int(rule.window.unwrap_or(0), "window")?,
            sink: int(rule.sink, "sink")?,
            splits: splits as i32,
            scale_log2: std::f32::consts::LOG2_E / (d as f32).sqrt(),
            q_head_stride: qhs,
            q_tok_stride: qts,
            k_head_stride: khs,
            k_tok_stride: kts,
            v_head_stride: vhs,
            v_tok_stride: vts,
        };
        Ok(Plan {
            params,
            warps,
            row_blocks,
            kv,
            splits,
            offsets: [qo, ko, vo],
        })
    }

    /// The most key splits per row (`COMBINE_MAX_SPLITS` in the kernel).
    pub(crate) const MAX_SPLITS: usize = 1024;
    /// Splits a decode graph fixes for `kv_heads`: enough one-warp blocks for any context.
    pub(crate) fn graph_splits(kv_heads: usize) -> usize {
        (TARGET_BLOCKS_W1 / kv_heads.max(1)).clamp(1, MAX_SPLITS)
    }

    pub(super) fn forward(
        op: &FusedAttention,
        qs: &CudaStorage,
        ql: &Layout,
        ks: &CudaStorage,
        kl: &Layout,
        vs: &CudaStorage,
        vl: &Layout,
    ) -> candle_core::Result<(CudaStorage, Shape)> {
        let dev = qs.device().clone();
        let (q, k, v) = match (&qs.slice, &ks.slice, &vs.slice) {
            (CudaStorageSlice::BF16(q), CudaStorageSlice::BF16(k), CudaStorageSlice::BF16(v)) => {
                (q, k, v)
            }
            _ => bail!("fused attention needs bf16 q, k and v"),
        };
        let plan = plan(ql, kl, vl, op.map, op.rule, op.q0, &op.launch)?;
        let Plan {
            params,
            warps,
            row_blocks,
            kv,
            splits,
            offsets: [qo, ko, vo],
        } = plan;
        let (_, h, c, d) = ql.shape().dims4()?;
        let rows_total = h * c;
        // SAFETY: every element is written by the kernel (or the combine) below; the
        // poison option proves it in the self-test.
        let out = unsafe { dev.alloc::<bf16>(rows_total * d)? };
        let stream = dev.cuda_stream();
        if op.launch.poison {
            let f = function(&dev, ATTENTION, "poison_bf16")?;
            let count = (rows_total * d) as i64;
            let mut b = stream.launch_builder(&f);
            b.arg(&out);
            b.arg(&count);
            // SAFETY: the kernel writes only `count` elements of `out`.
            unsafe { b.launch(LaunchConfig::for_num_elems((rows_total * d) as u32)) }.w()?;
        }
        // One split writes `out` directly and never touches the partials: a 1-element
        // placeholder each, not zeroed (a memset per call would cost a launch).
        let parts = if splits > 1 { splits * rows_total } else { 0 };
        // SAFETY: each split writes all of its rows (m = -inf, l = 0 when it saw no key)
        // before the combine reads them.
        let (part_o, part_ml) = unsafe {
            (
                dev.alloc::<f32>((parts * d).max(1))?,
                dev.alloc::<f32>((parts * 2).max(1))?,
            )
        };
        let name = match (d, warps) {
            (64, 1) => "swa_attention_d64_w1",
            (64, _) => "swa_attention_d64_w4",
            (_, 1) => "swa_attention_d128_w1",
            _ => "swa_attention_d128_w4",
        };
        let f = function(&dev, ATTENTION, name)?;
        let (qv, kv_, vv) = (q.slice(qo..), k.slice(ko..), v.slice(vo..));
        let mut b = stream.launch_builder(&f);
        b.arg(&qv);
        b.arg(&kv_);
        b.arg(&vv);
        b.arg(&out);
        b.arg(&part_o);
        b.arg(&part_ml);
        b.arg(&params);
        b.arg(&op.launch.step);
        let cfg = LaunchConfig {
            grid_dim: (row_blocks as u32, kv as u32, splits as u32),
            block_dim: (32 * warps as u32, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: the kernel reads q/k/v within the shapes checked above and writes `out`
        // (or the partials) for rows < H·C.
        unsafe { b.launch(cfg) }.w()?;
        if splits > 1 {
            let f = function(&dev, ATTENTION, "attn_combine")?;
            let (cc, hh, sp, dd) = (c as i32, h as i32, splits as i32, d as i32);
            let mut b = stream.launch_builder(&f);
            b.arg(&part_o);
            b.arg(&part_ml);
            b.arg(&out);
            b.arg(&cc);
            b.arg(&hh);
            b.arg(&sp);
            b.arg(&dd);
            let cfg = LaunchConfig {
                // 32 columns per block (COMBINE_COLS in the kernel).
                grid_dim: (rows_total as u32, (d / 32) as u32, 1),
                block_dim: (256, 1, 1),
                shared_mem_bytes: 0,
            };
            // SAFETY: reads the partials written above, writes rows_total × d outputs.
            unsafe { b.launch(cfg) }.w()?;
        }
        Ok(crate::model::kernels::loader::output(
            out,
            dev,
            (1, c, h, d),
        ))
    }
}
