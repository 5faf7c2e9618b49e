//! The rest of a layer on CUDA beside attention and RoPE: residual add + RMSNorm in one
//! launch and SiLU(gate)·up over the joined gate/up output (`cuda/norm_act.cu`), and the
//! one-row matrix-vector product of decode (`cuda/gemv.cu`), and greedy decoding's pick
//! (`cuda/argmax.cu`). Decode runs ~15 kernels per
//! layer, so each launch saved and each microsecond per kernel is time saved per token.

use candle_core::{CpuStorage, DType, Layout, Shape, Tensor};
#[cfg(feature = "cuda")]
use {
    crate::model::kernels::loader::{ARGMAX, GEMV, NORM_ACT, bf16s, function, output},
    candle_core::backend::BackendStorage,
    candle_core::cuda_backend::cudarc::driver::{LaunchConfig, PushKernelArg},
    candle_core::cuda_backend::{CudaStorageSlice, WrapErr},
};

/// Whether the fused kernels can run on tensors like `x` (CUDA, bf16).
pub fn supported(x: &Tensor) -> bool {
    cfg!(feature = "cuda") && x.device().is_cuda() && x.dtype() == DType::BF16
}

/// `(x + delta, rms_norm(x + delta) · w)` for `x, delta: [.., hidden]`.
pub fn add_rms_norm(
    x: &Tensor,
    delta: &Tensor,
    w: &Tensor,
    eps: f32,
) -> candle_core::Result<(Tensor, Tensor)> {
    let both = x.apply_op3_no_bwd(delta, w, &AddRmsNorm { eps })?;
    Ok((both.get(0)?, both.get(1)?))
}

/// `silu(y[.., :I]) · y[.., I:]` for the joined gate/up output `y: [.., 2·I]`.
pub fn silu_mul(y: &Tensor) -> candle_core::Result<Tensor> {
    y.apply_op1_no_bwd(&SiluMul)
}

/// Whether [`gemv`] runs `x · wᵀ`: one row, bf16 on CUDA, rows of `w` in 16-byte chunks.
pub fn gemv_supported(x: &Tensor, w: &Tensor) -> bool {
    let k = w.dims().last().copied().unwrap_or(0);
    supported(x)
        && w.dtype() == DType::BF16
        && w.rank() == 2
        && x.elem_count() == k
        && k.is_multiple_of(8)
}

/// `x · wᵀ` for one row `x: [.., k]` and `w: [n, k]`: a decode step's projection.
pub fn gemv(x: &Tensor, w: &Tensor) -> candle_core::Result<Tensor> {
    x.apply_op2_no_bwd(w, &Gemv)
}

/// The index of the largest of `[vocab]` f32 logits (ties to the smaller index, as candle's
/// argmax): on CUDA one kernel and a 4-byte read-back, where candle's argmax took ~120 µs
/// a decode step for Qwen2.5's vocabulary.
pub fn argmax(logits: &Tensor) -> candle_core::Result<u32> {
    if cfg!(feature = "cuda") && logits.device().is_cuda() && logits.dtype() == DType::F32 {
        logits
            .apply_op1_no_bwd(&Argmax)?
            .to_vec1::<u32>()
            .map(|v| v[0])
    } else {
        logits.argmax(candle_core::D::Minus1)?.to_scalar::<u32>()
    }
}

// Read by the CUDA implementation only.
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
struct AddRmsNorm {
    eps: f32,
}

struct SiluMul;

struct Gemv;

struct Argmax;

impl candle_core::CustomOp3 for AddRmsNorm {
    fn name(&self) -> &'static str {
        "swaa-add-rms-norm"
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
        candle_core::bail!("{} runs on CUDA only", self.name())
    }

    /// Output `[2, ..x's shape]`: the sum, then the normalised sum.
    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        xs: &candle_core::CudaStorage,
        xl: &Layout,
        ds: &candle_core::CudaStorage,
        dl: &Layout,
        ws: &candle_core::CudaStorage,
        wl: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        let [x, d, w] = bf16s([(xs, xl), (ds, dl), (ws, wl)])?;
        let hidden = *xl.dims().last().expect("rank ≥ 1");
        let rows = xl.shape().elem_count() / hidden;
        if dl.dims() != xl.dims() || wl.dims() != [hidden] {
            candle_core::bail!(
                "add_rms_norm: shapes {:?} {:?} {:?}",
                xl.dims(),
                dl.dims(),
                wl.dims()
            );
        }
        let dev = xs.device().clone();
        // SAFETY: every element of both halves is written below.
        let out = unsafe { dev.alloc::<half::bf16>(2 * rows * hidden)? };
        let (ox, oh) = (out.slice(..rows * hidden), out.slice(rows * hidden..));
        let f = function(&dev, NORM_ACT, "add_rms_norm_bf16")?;
        let (hd, eps) = (hidden as i32, self.eps);
        let stream = dev.cuda_stream();
        let mut b = stream.launch_builder(&f);
        b.arg(&x);
        b.arg(&d);
        b.arg(&w);
        b.arg(&ox);
        b.arg(&oh);
        b.arg(&hd);
        b.arg(&eps);
        let cfg = LaunchConfig {
            grid_dim: (rows as u32, 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: one block per row of `hidden` elements, within the shapes checked above.
        unsafe { b.launch(cfg) }.w()?;
        let mut dims = vec![2];
        dims.extend_from_slice(xl.dims());
        Ok(output(out, dev, dims))
    }
}

impl candle_core::CustomOp1 for SiluMul {
    fn name(&self) -> &'static str {
        "swaa-silu-mul"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        candle_core::bail!("{} runs on CUDA only", self.name())
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        ys: &candle_core::CudaStorage,
        yl: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        let [y] = bf16s([(ys, yl)])?;
        let width = *yl.dims().last().expect("rank ≥ 1");
        let (rows, inter) = (yl.shape().elem_count() / width, width / 2);
        let dev = ys.device().clone();
        // SAFETY: the kernel writes all rows × inter elements.
        let out = unsafe { dev.alloc::<half::bf16>(rows * inter)? };
        let f = function(&dev, NORM_ACT, "silu_mul_bf16")?;
        let (r, i) = (rows as i64, inter as i32);
        let stream = dev.cuda_stream();
        let mut b = stream.launch_builder(&f);
        b.arg(&y);
        b.arg(&out);
        b.arg(&r);
        b.arg(&i);
        // 8 columns per thread, rows in y (the kernel strides past the grid's limit).
        let cfg = LaunchConfig {
            grid_dim: (
                inter.div_ceil(8 * 256) as u32,
                rows.clamp(1, 65_535) as u32,
                1,
            ),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: reads rows × 2·inter, writes rows × inter elements.
        unsafe { b.launch(cfg) }.w()?;
        let mut dims = yl.dims().to_vec();
        *dims.last_mut().expect("rank ≥ 1") = inter;
        Ok(output(out, dev, dims))
    }
}

impl candle_core::CustomOp2 for Gemv {
    fn name(&self) -> &'static str {
        "swaa-gemv"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        candle_core::bail!("{} runs on CUDA only", self.name())
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        xs: &candle_core::CudaStorage,
        xl: &Layout,
        ws: &candle_core::CudaStorage,
        wl: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        let [x, w] = bf16s([(xs, xl), (ws, wl)])?;
        let (n, k) = wl.shape().dims2()?;
        // 16-byte loads: k in chunks of 8 and views starting on a chunk.
        let aligned = xl.start_offset().is_multiple_of(8) && wl.start_offset().is_multiple_of(8);
        if xl.shape().elem_count() != k || !k.is_multiple_of(8) || !aligned {
            candle_core::bail!("gemv: x {:?} against w {:?}", xl, wl);
        }
        let dev = xs.device().clone();
        // SAFETY: the kernel writes all n outputs.
        let out = unsafe { dev.alloc::<half::bf16>(n)? };
        let f = function(&dev, GEMV, "gemv_bf16")?;
        let (nn, kk) = (n as i32, k as i32);
        let stream = dev.cuda_stream();
        let mut b = stream.launch_builder(&f);
        b.arg(&x);
        b.arg(&w);
        b.arg(&out);
        b.arg(&nn);
        b.arg(&kk);
        // One warp per output row, eight warps per block (GEMV_WARPS in the kernel).
        let cfg = LaunchConfig {
            grid_dim: (n.div_ceil(8) as u32, 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: reads k elements of x and n × k of w, writes n outputs (checked above).
        unsafe { b.launch(cfg) }.w()?;
        let mut dims = xl.dims().to_vec();
        *dims.last_mut().expect("rank ≥ 1") = n;
        Ok(output(out, dev, dims))
    }
}

impl candle_core::CustomOp1 for Argmax {
    fn name(&self) -> &'static str {
        "swaa-argmax"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        candle_core::bail!("{} runs on CUDA only", self.name())
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        xs: &candle_core::CudaStorage,
        xl: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        let CudaStorageSlice::F32(x) = &xs.slice else {
            candle_core::bail!("argmax: f32 logits");
        };
        let Some((a, b)) = xl.contiguous_offsets() else {
            candle_core::bail!("argmax: contiguous logits");
        };
        let n = i32::try_from(b - a)
            .map_err(|_| candle_core::Error::Msg(format!("argmax over {} values", b - a)))?;
        let x = x.slice(a..b);
        let dev = xs.device().clone();
        // SAFETY: the kernel writes the one element.
        let out = unsafe { dev.alloc::<u32>(1)? };
        let f = function(&dev, ARGMAX, "argmax_f32")?;
        let stream = dev.cuda_stream();
        let mut builder = stream.launch_builder(&f);
        builder.arg(&x);
        builder.arg(&n);
        builder.arg(&out);
        // One block of ARGMAX_THREADS (the kernel's reduction assumes it).
        let cfg = LaunchConfig {
            grid_dim: (1, 1, 1),
            block_dim: (1024, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: reads n floats of x, writes out[0].
        unsafe { builder.launch(cfg) }.w()?;
        Ok(output(out, dev, 1))
    }
}
