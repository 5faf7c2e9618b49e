//! The project's CUDA kernels (`cuda/*.cu`, compiled by build.rs) and the candle custom ops
//! that launch them: residual+RMSNorm, SiLU·up, GEMV and argmax (`ops`), RoPE with in-place
//! cache writes (`rope`); the attention kernel's op is `attention::fused`. Without the `cuda`
//! feature the ops' CPU halves say so instead of running. The CPU's f32 vector primitives
//! (AVX-512 / AVX2 / scalar, chosen at run time) are `simd`; the quantized matmuls are `qtile`
//! (Q5_0/Q8_0/Q4K/Q6K in 16-row tiles, AVX-512 VNNI or AVX2, chosen at run time).

#[cfg(feature = "cuda")]
pub(crate) mod loader;
pub(crate) mod ops;
pub(crate) mod qtile;
pub(crate) mod rope;
pub(crate) mod simd;

/// Runs the CPU's kernels on `threads` threads (0: one per core, candle's default). candle's
/// f32 GEMM and its pool for large elementwise ops size themselves from `RAYON_NUM_THREADS`
/// and `CANDLE_NUM_THREADS` when they first run, and the project's kernels run on rayon's
/// global pool: all three get the same count. Call it before any model runs.
pub fn use_threads(threads: usize) -> Result<(), String> {
    if threads > 4096 {
        return Err(format!(
            "--threads {threads}: give at most 4096 (0 uses one per core)"
        ));
    }
    let mut vars = vec![];
    // candle's pool spins 25,000 rounds after each op before it parks, on the cores the next
    // matmul's threads need: a prefill's elementwise ops then cost our kernels a core for
    // ~0.5 ms each (measured: 8% of a 4k read in its spin loop). 1,000 rounds keep a
    // back-to-back op's hand-over fast.
    if std::env::var_os("CANDLE_BARRIER_POOL_SPIN_LIMIT").is_none() {
        vars.push(("CANDLE_BARRIER_POOL_SPIN_LIMIT", "1000".to_string()));
    }
    if threads > 0 {
        vars.push(("RAYON_NUM_THREADS", threads.to_string()));
        vars.push(("CANDLE_NUM_THREADS", threads.to_string()));
    }
    for (var, value) in vars {
        // SAFETY: called while the program starts, before any pool or model thread exists; the
        // only other thread then is the log writer, which never reads the environment.
        unsafe { std::env::set_var(var, value) };
    }
    if threads == 0 {
        return Ok(());
    }
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global()
        .map_err(|e| format!("--threads {threads}: {e}"))
}
