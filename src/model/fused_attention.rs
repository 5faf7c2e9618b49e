//! The fused attention kernel (`cuda/attention.cu`) as a candle op: bf16 q, K and V read
//! in place from the KV cache through a [`SlotMap`], the recipe's mask computed from positions,
//! scores never materialised. Only CUDA runs it; the candle-ops path in `transformer.rs` stays
//! the reference and the CPU implementation.

use candle_core::{CpuStorage, DType, Layout, Shape, Tensor};

use crate::recipe::AttnRule;

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

/// Whether the fused kernel can run this attention: CUDA, bf16, a head size it was built for.
pub fn supported(q: &Tensor) -> bool {
    cfg!(feature = "cuda")
        && q.device().is_cuda()
        && q.dtype() == DType::BF16
        && matches!(q.dims().last(), Some(64 | 128))
}

/// Attention of `q: [1, H, C, d]` (positions `q0..q0+C`) over the keys that `map` picks from
/// the cache buffers `k, v: [1, KV, capacity, d]`, under `rule`. Returns `[1, C, H, d]`
/// (token-major, as the output projection reads it: no transpose copy).
/// `poison` fills the output with NaN first, so a check sees any element left unwritten.
pub fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    map: SlotMap,
    rule: AttnRule,
    q0: usize,
    poison: bool,
) -> candle_core::Result<Tensor> {
    q.apply_op3_no_bwd(
        k,
        v,
        &FusedAttention {
            map,
            rule,
            q0,
            poison,
        },
    )
}

// Read by the CUDA implementation only.
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
struct FusedAttention {
    map: SlotMap,
    rule: AttnRule,
    q0: usize,
    poison: bool,
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
mod cuda {
    use candle_core::backend::BackendStorage;
    use candle_core::cuda_backend::cudarc::driver::{DeviceRepr, LaunchConfig, PushKernelArg};
    use candle_core::cuda_backend::{CudaStorageSlice, WrapErr};
    use candle_core::{CudaStorage, Layout, Shape, bail};
    use half::bf16;

    use super::FusedAttention;

    use crate::model::cuda_kernels::{ATTENTION, function};
    /// Query rows per block (`BR` in the kernel).
    const ROWS: usize = 64;
    /// Keys per tile (`BC`): a split gets at least a few tiles.
    const KEYS: usize = 64;
    /// Enough blocks to keep an H100's 132 SMs busy at two blocks each.
    const TARGET_BLOCKS: usize = 264;

    /// Mirrors `AttnParams` in attention.cu field by field.
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct AttnParams {
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
        let m = op.map;
        if m.n_sink > 0 && m.sink_slot0 + m.n_sink > cap || m.recent_slot0 + m.n_recent > cap {
            bail!("fused attention: slot map {m:?} outside a cache of {cap} slots");
        }
        let (qo, qhs, qts) = strides(ql, "q")?;
        let (ko, khs, kts) = strides(kl, "k")?;
        let (vo, vhs, vts) = strides(vl, "v")?;
        let g = h / kv;
        let n = m.n_sink + m.n_recent;
        let row_blocks = (c * g).div_ceil(ROWS);
        // Split the keys when the rows alone cannot fill the GPU (decode, short chunks).
        let tiles = n.div_ceil(KEYS).max(1);
        let splits = if row_blocks * kv >= TARGET_BLOCKS / 2 {
            1
        } else {
            (TARGET_BLOCKS / (row_blocks * kv)).clamp(1, tiles.div_ceil(4).max(1))
        };
        let params = AttnParams {
            c: int(c, "chunk")?,
            g: int(g, "group")?,
            n: int(n, "keys")?,
            n_sink: int(m.n_sink, "sink keys")?,
            sink_slot0: int(m.sink_slot0, "slot")?,
            recent_slot0: int(m.recent_slot0, "slot")?,
            recent_pos0: int(m.recent_pos0, "position")?,
            q0: int(op.q0, "position")?,
            window: int(op.rule.window.unwrap_or(0), "window")?,
            sink: int(op.rule.sink, "sink")?,
            splits: splits as i32,
            scale_log2: std::f32::consts::LOG2_E / (d as f32).sqrt(),
            q_head_stride: qhs,
            q_tok_stride: qts,
            k_head_stride: khs,
            k_tok_stride: kts,
            v_head_stride: vhs,
            v_tok_stride: vts,
        };
        let rows_total = h * c;
        // SAFETY: every element is written by the kernel (or the combine) below; the
        // poison option proves it in the self-test.
        let out = unsafe { dev.alloc::<bf16>(rows_total * d)? };
        let stream = dev.cuda_stream();
        if op.poison {
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
        let name = if d == 64 {
            "swa_attention_d64"
        } else {
            "swa_attention_d128"
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
        let cfg = LaunchConfig {
            grid_dim: (row_blocks as u32, kv as u32, splits as u32),
            block_dim: (128, 1, 1),
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
                grid_dim: (rows_total as u32, 1, 1),
                block_dim: (d as u32, 1, 1),
                shared_mem_bytes: 0,
            };
            // SAFETY: reads the partials written above, writes rows_total × d outputs.
            unsafe { b.launch(cfg) }.w()?;
        }
        Ok((
            CudaStorage::wrap_cuda_slice(out, dev),
            Shape::from((1, c, h, d)),
        ))
    }
}
