//! From the joined q/k/v projection output to attention inputs on CUDA (`cuda/qkv_rope.cu`):
//! q rotated into its own tensor, k rotated and v copied straight into their KV-cache slots.
//! Three launches where the candle-ops path takes seven (transpose copies, RoPE, cache copies).

use candle_core::{CpuStorage, Layout, Shape, Tensor};

use crate::model::config::RopeStyle;

/// What one launch moves out of `y: [1, C, (H + 2·KV)·d]`: `heads` heads from `head0`.
// Read by the CUDA implementation only.
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
#[derive(Debug, Clone, Copy)]
struct Move {
    head0: usize,
    heads: usize,
    head_dim: usize,
    /// None: copy (v).
    rope: Option<RopeStyle>,
}

/// Rotated q `[1, H, C, d]` from the joined output `y` (plus `bias`, a row of y's width, when
/// given); `cs` is `[C, d]`: cos | sin per token. `step` is the device address of a replayed
/// decode graph's `{slot, position}` (then `cs` is the whole table), or 0.
pub fn rotate_q(
    y: &Tensor,
    bias: Option<&Tensor>,
    cs: &Tensor,
    heads: usize,
    head_dim: usize,
    style: RopeStyle,
    step: u64,
) -> candle_core::Result<Tensor> {
    y.apply_op2_no_bwd(
        cs,
        &QRope {
            mv: Move {
                head0: 0,
                heads,
                head_dim,
                rope: Some(style),
            },
            bias: bias.cloned(),
            step,
        },
    )
}

/// Writes k (rotated) and v of every token of `y` (plus `bias`) into cache buffers
/// `[1, KV, capacity, d]` at slots `slot0..slot0 + C` (a replayed graph's `step` slot instead,
/// see [`rotate_q`]).
#[allow(clippy::too_many_arguments)]
pub fn write_kv(
    y: &Tensor,
    bias: Option<&Tensor>,
    cs: &Tensor,
    k_buf: &Tensor,
    v_buf: &Tensor,
    slot0: usize,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    style: RopeStyle,
    step: u64,
) -> candle_core::Result<()> {
    let k = Move {
        head0: heads,
        heads: kv_heads,
        head_dim,
        rope: Some(style),
    };
    let v = Move {
        head0: heads + kv_heads,
        rope: None,
        ..k
    };
    let bias = bias.cloned();
    k_buf.inplace_op3(
        y,
        cs,
        &CacheWrite {
            mv: k,
            slot0,
            bias: bias.clone(),
            step,
        },
    )?;
    v_buf.inplace_op3(
        y,
        cs,
        &CacheWrite {
            mv: v,
            slot0,
            bias,
            step,
        },
    )
}

// Read by the CUDA implementation only.
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
struct QRope {
    mv: Move,
    bias: Option<Tensor>,
    step: u64,
}

// Read by the CUDA implementation only.
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
struct CacheWrite {
    mv: Move,
    slot0: usize,
    bias: Option<Tensor>,
    step: u64,
}

const CUDA_ONLY: &str = "the fused RoPE kernels run on CUDA only";

impl candle_core::CustomOp2 for QRope {
    fn name(&self) -> &'static str {
        "swaa-q-rope"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        candle_core::bail!("{CUDA_ONLY}")
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        ys: &candle_core::CudaStorage,
        yl: &Layout,
        css: &candle_core::CudaStorage,
        csl: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        use candle_core::backend::BackendStorage;
        let c = yl.dims()[1];
        let m = self.mv;
        let dev = ys.device().clone();
        // SAFETY: the kernel writes every element (heads × C × d).
        let mut out = unsafe { dev.alloc::<half::bf16>(m.heads * c * m.head_dim)? };
        let mut view = out.slice_mut(..);
        let strides = ((c * m.head_dim) as i64, m.head_dim as i64);
        cuda::launch(
            ys,
            yl,
            self.bias.as_ref(),
            css,
            csl,
            &mut view,
            m,
            strides,
            (0, self.step, false),
        )?;
        Ok(crate::model::kernels::loader::output(
            out,
            dev,
            (1, m.heads, c, m.head_dim),
        ))
    }
}

impl candle_core::InplaceOp3 for CacheWrite {
    fn name(&self) -> &'static str {
        "swaa-cache-write"
    }

    fn cpu_fwd(
        &self,
        _: &mut CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> candle_core::Result<()> {
        candle_core::bail!("{CUDA_ONLY}")
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        dst: &mut candle_core::CudaStorage,
        dst_l: &Layout,
        ys: &candle_core::CudaStorage,
        yl: &Layout,
        css: &candle_core::CudaStorage,
        csl: &Layout,
    ) -> candle_core::Result<()> {
        use candle_core::cuda_backend::CudaStorageSlice;
        let (_, kv, cap, d) = dst_l.shape().dims4()?;
        let c = yl.dims()[1];
        // A graph's slot is checked by the host that writes it (`decode_graph`).
        if kv != self.mv.heads || d != self.mv.head_dim || self.slot0 + c > cap {
            candle_core::bail!(
                "cache write of {c} tokens at slot {} into {:?}",
                self.slot0,
                dst_l.dims()
            );
        }
        let s = dst_l.stride();
        let CudaStorageSlice::BF16(buf) = &mut dst.slice else {
            candle_core::bail!("the KV cache must be bf16 for the fused kernels");
        };
        let mut view = buf.slice_mut(dst_l.start_offset()..);
        let strides = (s[1] as i64, s[2] as i64);
        cuda::launch(
            ys,
            yl,
            self.bias.as_ref(),
            css,
            csl,
            &mut view,
            self.mv,
            strides,
            (self.slot0 as i64, self.step, true),
        )
    }
}

#[cfg(feature = "cuda")]
mod cuda {
    use candle_core::backend::BackendStorage;
    use candle_core::cuda_backend::WrapErr;
    use candle_core::cuda_backend::cudarc::driver::{
        CudaViewMut, DeviceRepr, LaunchConfig, PushKernelArg,
    };
    use candle_core::{CudaStorage, Layout, bail};

    use super::Move;
    use crate::model::config::RopeStyle;
    use crate::model::kernels::loader::{QKV_ROPE, bf16s, function};

    /// Mirrors `QkvRopeParams` in qkv_rope.cu.
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Params {
        c: i32,
        heads: i32,
        head0: i32,
        half: i32,
        style: i32,
        y_row: i64,
        dst_head: i64,
        dst_tok: i64,
        slot0: i64,
    }
    // SAFETY: plain old data with the C layout the kernel reads.
    unsafe impl DeviceRepr for Params {}

    /// Moves `m` out of `y` into `dst`, whose (head, token) strides are `dst_strides`,
    /// starting at token `slot0`, or where the `step` record says (`use_slot`) when not 0.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn launch(
        ys: &CudaStorage,
        yl: &Layout,
        bias: Option<&candle_core::Tensor>,
        css: &CudaStorage,
        csl: &Layout,
        dst: &mut CudaViewMut<'_, half::bf16>,
        m: Move,
        (dst_head, dst_tok): (i64, i64),
        (slot0, step, use_slot): (i64, u64, bool),
    ) -> candle_core::Result<()> {
        let [yv, csv] = bf16s([(ys, yl), (css, csl)])?;
        let (_, c, width) = yl.shape().dims3()?;
        let p = Params {
            c: c as i32,
            heads: m.heads as i32,
            head0: m.head0 as i32,
            half: (m.head_dim / 2) as i32,
            style: match m.rope {
                None => 0,
                Some(RopeStyle::Interleaved) => 1,
                Some(RopeStyle::Halves) => 2,
            },
            y_row: width as i64,
            dst_head,
            dst_tok,
            slot0,
        };
        let dev = ys.device();
        let f = function(dev, QKV_ROPE, "qkv_rope_bf16")?;
        let stream = dev.cuda_stream();
        // One thread per rotation pair, 256 to a block; the kernel indexes them in 32 bits.
        let pairs = c * m.heads * (m.head_dim / 2);
        if pairs > i32::MAX as usize {
            bail!("RoPE over {c} tokens × {} heads: split the chunk", m.heads);
        }
        let cfg = LaunchConfig {
            grid_dim: (pairs.div_ceil(256) as u32, 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        let guard = bias.map(|t| t.storage_and_layout());
        let mut b = stream.launch_builder(&f);
        b.arg(&yv);
        let null = 0u64;
        let bias_view;
        match &guard {
            None => {
                b.arg(&null);
            }
            Some((storage, l)) => {
                let candle_core::Storage::Cuda(s) = &**storage else {
                    bail!("the q/k/v bias must be on the GPU");
                };
                if l.shape().elem_count() != width {
                    bail!(
                        "a q/k/v bias of {} values for rows of {width}",
                        l.shape().elem_count()
                    );
                }
                [bias_view] = bf16s([(s, *l)])?;
                b.arg(&bias_view);
            }
        }
        b.arg(&csv);
        b.arg(dst);
        b.arg(&p);
        b.arg(&step);
        let use_slot = use_slot as i32;
        b.arg(&use_slot);
        // SAFETY: reads C rows of y and cs (and one row of bias), writes heads × C × d
        // elements of dst within the shapes checked by the callers.
        unsafe { b.launch(cfg) }.w()?;
        Ok(())
    }
}
