//! `x · Wᵀ` for Q5_0 weights (the default preset's GGUF is mostly Q5_0) straight from their
//! blocks: the activations are quantized per 32-block to 8 bits (llama.cpp's Q8_0 for
//! activations), and each block's dot product runs on integers — AVX-512 VNNI (`vpdpbusd`) or
//! AVX2 (`vpmaddubsw`), chosen at run time — scaled by both blocks' scales in f32. candle's Q5_0
//! kernel is scalar, so Q5_0 was re-quantized to Q8_0 at load, which reads 34 bytes per 32
//! weights instead of 22 each decode step; a decode step is bound by reading the weights.
//!
//! A Q5_0 block: f16 scale `d`, 32 high bits `qh` (bit j for weight j), 16 bytes of nibbles
//! (weight j < 16 in the low nibble of byte j, weight j ≥ 16 in the high nibble of byte j − 16);
//! weight = (nibble | high bit << 4) − 16, times `d` (ggml's `dequantize_row_q5_0`).

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{D, Tensor};
use rayon::prelude::*;

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use super::simd::Isa;

/// Weights per block.
pub const QK: usize = 32;
/// Bytes per Q5_0 block.
pub const BLOCK_BYTES: usize = 22;
/// Output columns per task: enough work per task to hide rayon's overhead.
const COLS: usize = 64;
/// Activation rows whose accumulators a weight row's pass keeps in registers.
const GROUP: usize = 8;

/// Rows of activations quantized per block: `q` the 8-bit values, `d` each block's scale and
/// `corr` −16 × the sum of each 4-value group (the weights' −16 offset, folded into the
/// integer accumulator's start).
struct Q8Rows {
    q: Vec<i8>,
    d: Vec<f32>,
    corr: Vec<i32>,
}

fn quantize_rows(x: &[f32]) -> Q8Rows {
    let blocks = x.len() / QK;
    let mut out = Q8Rows {
        q: vec![0; x.len()],
        d: vec![0.0; blocks],
        corr: vec![0; x.len() / 4],
    };
    for (b, xs) in x.chunks_exact(QK).enumerate() {
        let amax = xs.iter().fold(0f32, |a, v| a.max(v.abs()));
        let d = amax / 127.0;
        let inv = if d > 0.0 { 1.0 / d } else { 0.0 };
        out.d[b] = d;
        for (q, &v) in out.q[b * QK..][..QK].iter_mut().zip(xs) {
            *q = (v * inv).round() as i8;
        }
        for (c, g) in out.corr[b * 8..][..8]
            .iter_mut()
            .zip(out.q[b * QK..][..QK].chunks_exact(4))
        {
            *c = -16 * g.iter().map(|&v| v as i32).sum::<i32>();
        }
    }
    out
}

/// Whether [`matmul_q5_0`] takes `k` columns (whole blocks).
pub fn fits(k: usize) -> bool {
    k > 0 && k.is_multiple_of(QK)
}

/// The best integer path this CPU has: AVX-512 with VNNI, BW and VL, else AVX2, else scalar.
pub fn detect() -> Isa {
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512vl")
            && is_x86_feature_detected!("avx512vnni")
            && is_x86_feature_detected!("f16c")
        {
            return Isa::Avx512;
        }
        if is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c")
        {
            return Isa::Avx2;
        }
    }
    Isa::Scalar
}

/// Every integer path this CPU can run, best first (tests check each one).
#[cfg(test)]
fn available() -> Vec<Isa> {
    let mut out = vec![detect()];
    if out[0] == Isa::Avx512 {
        out.push(Isa::Avx2);
    }
    if out[0] != Isa::Scalar {
        out.push(Isa::Scalar);
    }
    out
}

/// `x · Wᵀ` for f32 `x: [.., k]` on the CPU and Q5_0 `q: [n, k]`: `[.., n]`.
pub fn forward(x: &Tensor, q: &QTensor) -> candle_core::Result<Tensor> {
    let (n, k) = q.shape().dims2()?;
    if q.dtype() != GgmlDType::Q5_0 || !fits(k) || x.dim(D::Minus1)? != k {
        candle_core::bail!(
            "Q5_0 matmul: x {:?} against {:?} {:?}",
            x.dims(),
            q.dtype(),
            q.shape()
        );
    }
    let xs: Vec<f32> = x.flatten_all()?.to_vec1()?;
    let w = q.data()?;
    let mut out = vec![0f32; xs.len() / k * n];
    matmul_q5_0(detect(), &xs, k, &w, n, &mut out);
    let mut dims = x.dims().to_vec();
    *dims.last_mut().expect("rank ≥ 1") = n;
    Tensor::from_vec(out, dims, x.device())
}

/// The f32 weights `[n, k]` of Q5_0 `q`, on the CPU: a prefill chunk multiplies by them through
/// an f32 GEMM, faster than per-block integer dots at many rows. candle's own dequantizer is
/// scalar; this one runs rows in parallel, vectorised on AVX2.
pub fn dequantize(q: &QTensor) -> candle_core::Result<Tensor> {
    let (n, k) = q.shape().dims2()?;
    if q.dtype() != GgmlDType::Q5_0 || !fits(k) {
        candle_core::bail!("Q5_0 dequantize: {:?} {:?}", q.dtype(), q.shape());
    }
    let w = q.data()?;
    let mut out = vec![0f32; n * k];
    dequantize_rows(detect(), &w, k, &mut out);
    Tensor::from_vec(out, (n, k), &candle_core::Device::Cpu)
}

fn dequantize_rows(isa: Isa, w: &[u8], k: usize, out: &mut [f32]) {
    let row_bytes = k / QK * BLOCK_BYTES;
    assert_eq!(w.len() / row_bytes * k, out.len());
    let isa = if detect() == Isa::Scalar {
        Isa::Scalar
    } else {
        isa
    };
    out.par_chunks_mut(k).enumerate().for_each(|(r, o)| {
        let row = &w[r * row_bytes..][..row_bytes];
        for (blk, ob) in row.chunks_exact(BLOCK_BYTES).zip(o.chunks_exact_mut(QK)) {
            match isa {
                // SAFETY: AVX2 and F16C are present (`detect` found AVX2 or better); 22 bytes in,
                // 32 out.
                #[cfg(target_arch = "x86_64")]
                Isa::Avx512 | Isa::Avx2 => unsafe { dequantize_block_avx2(blk, ob) },
                _ => {
                    let (d, qh) = (
                        scale(blk),
                        u32::from_le_bytes([blk[2], blk[3], blk[4], blk[5]]),
                    );
                    for (j, x) in ob.iter_mut().enumerate() {
                        let nib = if j < 16 {
                            blk[6 + j] & 15
                        } else {
                            blk[6 + j - 16] >> 4
                        };
                        *x = ((nib | (((qh >> j) & 1) as u8) << 4) as i32 - 16) as f32 * d;
                    }
                }
            }
        }
    });
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dequantize_block_avx2(blk: &[u8], out: &mut [f32]) {
    let qh = i32::from_le_bytes([blk[2], blk[3], blk[4], blk[5]]);
    // SAFETY: 22 bytes in, 32 floats out.
    unsafe {
        let w = _mm256_or_si256(nibbles(blk.as_ptr()), high_bits_avx2(qh));
        let w = _mm256_sub_epi8(w, _mm256_set1_epi8(16));
        let d = _mm256_set1_ps(scale_f16c(blk));
        let mut bytes = [0i8; 32];
        _mm256_storeu_si256(bytes.as_mut_ptr() as *mut __m256i, w);
        for (i, o) in out.chunks_exact_mut(8).enumerate() {
            let b = _mm_loadl_epi64(bytes.as_ptr().add(8 * i) as *const __m128i);
            let f = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(b));
            _mm256_storeu_ps(o.as_mut_ptr(), _mm256_mul_ps(f, d));
        }
    }
}

/// 16 in byte j where bit j of `qh` is set (llama.cpp's `bytes_from_bits_32`, masked).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn high_bits_avx2(qh: i32) -> __m256i {
    let spread = _mm256_set_epi64x(
        0x0303_0303_0303_0303,
        0x0202_0202_0202_0202,
        0x0101_0101_0101_0101,
        0,
    );
    let others = _mm256_set1_epi64x(0x7fbf_dfef_f7fb_fdfe);
    let bits = _mm256_or_si256(_mm256_shuffle_epi8(_mm256_set1_epi32(qh), spread), others);
    let set = _mm256_cmpeq_epi8(bits, _mm256_set1_epi64x(-1));
    _mm256_and_si256(set, _mm256_set1_epi8(16))
}

/// `out[i][j] = Σ_k x[i][k] · W[j][k]` for `x: [m, k]` f32 and `w`: `n` rows of `k / 32` Q5_0
/// blocks; `out: [m, n]`. A path the CPU lacks falls back to the next one.
pub fn matmul_q5_0(isa: Isa, x: &[f32], k: usize, w: &[u8], n: usize, out: &mut [f32]) {
    assert!(fits(k) && x.len().is_multiple_of(k));
    let m = x.len() / k;
    let row_bytes = k / QK * BLOCK_BYTES;
    assert!(w.len() == n * row_bytes && out.len() == m * n);
    let isa = match (isa, detect()) {
        (_, Isa::Scalar) | (Isa::Scalar, _) => Isa::Scalar,
        (Isa::Avx512, best) => best,
        (Isa::Avx2, _) => Isa::Avx2,
    };
    let xq = quantize_rows(x);
    // Columns in tasks, each writing its `[COLS, m]` block of the transposed output.
    let mut t = vec![0f32; n * m];
    t.par_chunks_mut(COLS * m).enumerate().for_each(|(c, dst)| {
        for (j, o) in dst.chunks_exact_mut(m).enumerate() {
            let row = &w[(c * COLS + j) * row_bytes..][..row_bytes];
            match isa {
                // SAFETY: the CPU has the path's features (`detect` above); the row and
                // the quantized activations hold k / 32 blocks per row (asserted).
                #[cfg(target_arch = "x86_64")]
                Isa::Avx512 => unsafe { row_dot_vnni(row, &xq, k, o) },
                #[cfg(target_arch = "x86_64")]
                Isa::Avx2 => unsafe { row_dot_avx2(row, &xq, k, o) },
                _ => row_dot_scalar(row, &xq, k, o),
            }
        }
    });
    for (j, col) in t.chunks_exact(m).enumerate() {
        for (i, &v) in col.iter().enumerate() {
            out[i * n + j] = v;
        }
    }
}

/// The block's f16 scale as f32 (the vector paths use F16C).
fn scale(block: &[u8]) -> f32 {
    let h = u16::from_le_bytes([block[0], block[1]]);
    let sign = if h >> 15 == 1 { -1.0 } else { 1.0 };
    let (exp, man) = ((h >> 10) & 31, (h & 1023) as u32);
    match exp {
        0 => sign * man as f32 * (-24f32).exp2(),
        31 => sign * if man == 0 { f32::INFINITY } else { f32::NAN },
        _ => f32::from_bits(((h as u32 >> 15) << 31) | ((exp as u32 + 112) << 23) | (man << 13)),
    }
}

/// One weight row against every activation row: `o[i]` for row i.
fn row_dot_scalar(row: &[u8], xq: &Q8Rows, k: usize, o: &mut [f32]) {
    let nb = k / QK;
    for (i, oi) in o.iter_mut().enumerate() {
        let mut acc = 0f32;
        for (b, blk) in row.chunks_exact(BLOCK_BYTES).enumerate() {
            let qh = u32::from_le_bytes([blk[2], blk[3], blk[4], blk[5]]);
            let xs = &xq.q[(i * nb + b) * QK..][..QK];
            let mut dot = 0i32;
            for (j, &x) in xs.iter().enumerate() {
                let nib = if j < 16 {
                    blk[6 + j] & 15
                } else {
                    blk[6 + j - 16] >> 4
                };
                let wv = (nib | (((qh >> j) & 1) as u8) << 4) as i32 - 16;
                dot += wv * x as i32;
            }
            acc += scale(blk) * xq.d[i * nb + b] * dot as f32;
        }
        *oi = acc;
    }
}

/// The block's 32 weights plus 16, as unsigned bytes in weight order (nibbles with the high bit).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn nibbles(blk: *const u8) -> __m256i {
    // SAFETY: a block is 22 bytes; the nibbles are its last 16.
    let qs = unsafe { _mm_loadu_si128(blk.add(6) as *const __m128i) };
    let m4 = _mm_set1_epi8(15);
    let lo = _mm_and_si128(qs, m4);
    let hi = _mm_and_si128(_mm_srli_epi16::<4>(qs), m4);
    _mm256_set_m128i(hi, lo)
}

/// [`scale`] in one instruction.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "f16c")]
fn scale_f16c(block: &[u8]) -> f32 {
    let h = u16::from_le_bytes([block[0], block[1]]) as i32;
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(h)))
}

#[cfg(target_arch = "x86_64")]
fn hsum(v: __m256) -> f32 {
    // SAFETY: 8 floats out of one register.
    let mut lanes = [0f32; 8];
    unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), v) };
    lanes.iter().sum()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,f16c")]
unsafe fn row_dot_vnni(row: &[u8], xq: &Q8Rows, k: usize, o: &mut [f32]) {
    let nb = k / QK;
    let m = o.len();
    let high = _mm256_set1_epi8(16);
    // Activation rows in groups whose accumulators stay in registers (no allocation).
    for i0 in (0..m).step_by(GROUP) {
        let g = GROUP.min(m - i0);
        let mut acc = [_mm256_setzero_ps(); GROUP];
        for (b, blk) in row.chunks_exact(BLOCK_BYTES).enumerate() {
            let p = blk.as_ptr();
            let qh = u32::from_le_bytes([blk[2], blk[3], blk[4], blk[5]]);
            // SAFETY: within the block; the activations hold nb blocks per row.
            unsafe {
                let w = _mm256_or_si256(nibbles(p), _mm256_maskz_mov_epi8(qh, high));
                let dw = scale_f16c(blk);
                for (i, a) in acc.iter_mut().enumerate().take(g) {
                    let at = (i0 + i) * nb + b;
                    let x = _mm256_loadu_si256(xq.q.as_ptr().add(at * QK) as *const __m256i);
                    let c = _mm256_loadu_si256(xq.corr.as_ptr().add(at * 8) as *const __m256i);
                    let dot = _mm256_dpbusd_epi32(c, w, x);
                    *a =
                        _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), _mm256_set1_ps(dw * xq.d[at]), *a);
                }
            }
        }
        for (oi, a) in o[i0..i0 + g].iter_mut().zip(acc) {
            *oi = hsum(a);
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn row_dot_avx2(row: &[u8], xq: &Q8Rows, k: usize, o: &mut [f32]) {
    let nb = k / QK;
    let m = o.len();
    let ones = _mm256_set1_epi16(1);
    // Activation rows in groups whose accumulators stay in registers (no allocation).
    for i0 in (0..m).step_by(GROUP) {
        let g = GROUP.min(m - i0);
        let mut acc = [_mm256_setzero_ps(); GROUP];
        for (b, blk) in row.chunks_exact(BLOCK_BYTES).enumerate() {
            let p = blk.as_ptr();
            let qh = i32::from_le_bytes([blk[2], blk[3], blk[4], blk[5]]);
            // SAFETY: within the block; the activations hold nb blocks per row.
            unsafe {
                let w = _mm256_or_si256(nibbles(p), high_bits_avx2(qh));
                let dw = scale_f16c(blk);
                for (i, a) in acc.iter_mut().enumerate().take(g) {
                    let at = (i0 + i) * nb + b;
                    let x = _mm256_loadu_si256(xq.q.as_ptr().add(at * QK) as *const __m256i);
                    let c = _mm256_loadu_si256(xq.corr.as_ptr().add(at * 8) as *const __m256i);
                    // Unsigned weights (0..31) × signed activations: pairs fit an i16 (≤ 7874).
                    let pairs = _mm256_maddubs_epi16(w, x);
                    let dot = _mm256_add_epi32(_mm256_madd_epi16(pairs, ones), c);
                    *a =
                        _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), _mm256_set1_ps(dw * xq.d[at]), *a);
                }
            }
        }
        for (oi, a) in o[i0..i0 + g].iter_mut().zip(acc) {
            *oi = hsum(a);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// Every path against the f32 product with the dequantized weights (the reference path):
    /// within the activations' 8-bit rounding, and the integer paths equal to the scalar one.
    #[test]
    fn dequantized_rows_equal_candles() {
        let w = Tensor::randn(0f32, 1.0, (37, 96), &Device::Cpu).unwrap();
        let q = QTensor::quantize(&w, GgmlDType::Q5_0).unwrap();
        let want: Vec<f32> = q
            .dequantize(&Device::Cpu)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        for isa in available() {
            let mut got = vec![0f32; 37 * 96];
            dequantize_rows(isa, &q.data().unwrap(), 96, &mut got);
            assert_eq!(got, want, "{isa:?}");
        }
    }

    #[test]
    fn f16_scales_convert_exactly() {
        for (bits, want) in [
            (0x3c00u16, 1.0f32),
            (0xc000, -2.0),
            (0x0001, 5.960_464_5e-8),
            (0x7bff, 65504.0),
            (0x3555, 0.333_251_95),
        ] {
            assert_eq!(scale(&bits.to_le_bytes()), want);
        }
        #[cfg(target_arch = "x86_64")]
        if detect() != Isa::Scalar {
            for h in 0..=u16::MAX {
                let b = h.to_le_bytes();
                // SAFETY: `detect` found F16C.
                let (a, c) = (scale(&b), unsafe { scale_f16c(&b) });
                assert!(a == c || a.is_nan() && c.is_nan(), "{h:#06x}: {a} {c}");
            }
        }
    }

    #[test]
    fn every_path_matches_the_f32_product() {
        let dev = Device::Cpu;
        for (m, k, n) in [
            (1, 64, 3),
            (3, 896, 70),
            (1, 32, 129),
            (5, 160, 64),
            (11, 64, 65),
        ] {
            let w = Tensor::randn(0f32, 1.0, (n, k), &dev).unwrap();
            let q = QTensor::quantize(&w, GgmlDType::Q5_0).unwrap();
            let wd = q.dequantize(&dev).unwrap();
            let x = Tensor::randn(0f32, 1.0, (m, k), &dev).unwrap();
            let want: Vec<f32> = x
                .matmul(&wd.t().unwrap())
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            let xs: Vec<f32> = x.flatten_all().unwrap().to_vec1().unwrap();
            let wv: Vec<f32> = wd.flatten_all().unwrap().to_vec1().unwrap();
            // The activations' rounding bounds the error: at most half an 8-bit step (1/127
            // of the block's largest value) per value, times the weight it meets.
            let bound = |i: usize, j: usize| -> f32 {
                (0..k / QK)
                    .map(|b| {
                        let xb = &xs[i * k + b * QK..][..QK];
                        let step = xb.iter().fold(0f32, |a, v| a.max(v.abs())) / 127.0;
                        let wsum: f32 = wv[j * k + b * QK..][..QK].iter().map(|w| w.abs()).sum();
                        step / 2.0 * wsum
                    })
                    .sum::<f32>()
                    * 1.01
                    + 1e-4
            };
            let bytes = q.data().unwrap();
            let mut scalar = vec![0f32; m * n];
            matmul_q5_0(Isa::Scalar, &xs, k, &bytes, n, &mut scalar);
            for isa in available() {
                let mut got = vec![0f32; m * n];
                matmul_q5_0(isa, &xs, k, &bytes, n, &mut got);
                for (at, ((g, w), s)) in got.iter().zip(&want).zip(&scalar).enumerate() {
                    let tol = bound(at / n, at % n);
                    assert!(
                        (g - w).abs() <= tol,
                        "{isa:?} {m}x{k}x{n} [{at}]: {g} vs {w}"
                    );
                    assert!(
                        (g - s).abs() < 1e-3 * (1.0 + s.abs()),
                        "{isa:?} vs scalar: {g} {s}"
                    );
                }
            }
        }
    }
}
