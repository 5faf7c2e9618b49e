//! The project's CUDA kernels (`cuda/*.cu`, compiled by build.rs) and the candle custom ops
//! that launch them: residual+RMSNorm, SiLU·up, GEMV and argmax (`ops`), RoPE with in-place
//! cache writes (`rope`); the attention kernel's op is `attention::fused`. Without the `cuda`
//! feature the ops' CPU halves say so instead of running. The CPU's f32 vector primitives
//! (AVX-512 / AVX2 / scalar, chosen at run time) are `simd`.

#[cfg(feature = "cuda")]
pub(crate) mod loader;
pub(crate) mod ops;
pub(crate) mod qmatmul;
pub(crate) mod rope;
pub(crate) mod simd;
