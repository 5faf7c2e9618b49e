//! f32 vector primitives of the CPU attention: a tile of scores (query rows × [`TILE`] keys),
//! exp2 with its sum, and the weighted sum of a value tile. Each has an AVX-512F, an AVX2+FMA
//! and a scalar version; [`Isa::detect`] picks one at run time (the same binary runs on either
//! machine; AMX and other extensions are never used), and tests force each path by argument.

use std::sync::OnceLock;

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Keys per tile: two AVX-512 or four AVX2 vectors of scores per query row.
pub const TILE: usize = 32;

/// Which instruction set the kernels run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isa {
    Avx512,
    Avx2,
    Scalar,
}

impl Isa {
    /// The best path this CPU supports.
    pub fn detect() -> Isa {
        Isa::here()[0]
    }

    /// Every path this CPU can run, best first (tests check each one).
    #[cfg(test)]
    pub fn available() -> Vec<Isa> {
        Isa::here().to_vec()
    }

    /// [`Isa::available`], detected once: the kernels ask per tile.
    fn here() -> &'static [Isa] {
        static HERE: OnceLock<Vec<Isa>> = OnceLock::new();
        HERE.get_or_init(|| {
            let mut out = Vec::new();
            #[cfg(target_arch = "x86_64")]
            {
                if allowed(Isa::Avx512) && is_x86_feature_detected!("avx512f") {
                    out.push(Isa::Avx512);
                }
                if allowed(Isa::Avx2)
                    && is_x86_feature_detected!("avx2")
                    && is_x86_feature_detected!("fma")
                {
                    out.push(Isa::Avx2);
                }
            }
            out.push(Isa::Scalar);
            out
        })
    }

    /// Whether rows of `d` floats fit this path's vectors (else the caller uses scalar).
    fn fits(self, d: usize) -> bool {
        match self {
            Isa::Avx512 => d.is_multiple_of(16),
            Isa::Avx2 => d.is_multiple_of(8),
            Isa::Scalar => true,
        }
    }

    /// This path if it can run here and fits rows of `d`, else the scalar one: a caller's
    /// choice can never reach an instruction the CPU lacks.
    pub fn for_rows(self, d: usize) -> Isa {
        if self.fits(d) && Isa::here().contains(&self) {
            self
        } else {
            Isa::Scalar
        }
    }
}

/// Whether the kernels may use `isa`: `SWAA_CHAT_ISA=avx2` caps every kernel at AVX2 and
/// `=scalar` at plain code, so that a slower CPU's path can be run (and timed) on this one.
pub fn allowed(isa: Isa) -> bool {
    static CAP: OnceLock<Isa> = OnceLock::new();
    let cap = *CAP.get_or_init(
        || match std::env::var("SWAA_CHAT_ISA").as_deref().map(str::trim) {
            Ok("avx2") => Isa::Avx2,
            Ok("scalar") => Isa::Scalar,
            _ => Isa::Avx512,
        },
    );
    // The variants run from the widest down.
    isa as u8 >= cap as u8
}

/// `s[r][j] = q[r] · kt[·][j]` for `rows` query rows `q: [rows, d]` and a transposed key tile
/// `kt: [d, TILE]`; `s: [rows, TILE]`.
pub fn scores(isa: Isa, q: &[f32], rows: usize, d: usize, kt: &[f32], s: &mut [f32]) {
    assert!(q.len() >= rows * d && kt.len() >= d * TILE && s.len() >= rows * TILE);
    match isa.for_rows(d) {
        // SAFETY: `for_rows` returned the path only where the CPU has its features; the
        // slices hold what the loops read and write (asserted above).
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { scores_avx512(q, rows, d, kt, s) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { scores_avx2(q, rows, d, kt, s) },
        _ => {
            for r in 0..rows {
                let out = &mut s[r * TILE..][..TILE];
                out.fill(0.0);
                for (e, &qe) in q[r * d..][..d].iter().enumerate() {
                    for (o, &k) in out.iter_mut().zip(&kt[e * TILE..][..TILE]) {
                        *o += qe * k;
                    }
                }
            }
        }
    }
}

/// `kt[e][j] = key j's element e` for the `len ≤ TILE` keys whose rows of `d` floats start
/// every `stride` floats in `src` (a tile's consecutive cache slots); `kt: [d, TILE]`. Columns
/// from `len` on are left as they were (the caller masks them). The loop it replaces stored
/// one float at a time and cost a decode step at 4k context more than its dot products.
pub fn transpose_keys(isa: Isa, src: &[f32], stride: usize, len: usize, d: usize, kt: &mut [f32]) {
    assert!(len <= TILE && kt.len() >= d * TILE);
    assert!(len == 0 || src.len() >= (len - 1) * stride + d);
    match isa.for_rows(d) {
        // SAFETY: as in `scores`: the features are present, d fits the vectors, and the
        // slices hold the rows read and the tile written (asserted above).
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { transpose_keys_avx512(src, stride, len, d, kt) },
        _ => {
            for j in 0..len {
                for (e, &x) in src[j * stride..][..d].iter().enumerate() {
                    kt[e * TILE + j] = x;
                }
            }
        }
    }
}

/// 16 × 16 blocks transposed in registers (unpack, then two rounds of 128-bit lane shuffles).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn transpose_keys_avx512(src: &[f32], stride: usize, len: usize, d: usize, kt: &mut [f32]) {
    let pd = _mm512_castps_pd;
    let ps = _mm512_castpd_ps;
    for h in 0..len.div_ceil(16) {
        let keys = 16.min(len - 16 * h);
        for e0 in (0..d).step_by(16) {
            // SAFETY: rows 16h + i < len lie inside `src` (the caller's assertion).
            let mut r: [__m512; 16] = std::array::from_fn(|i| {
                if i < keys {
                    unsafe { _mm512_loadu_ps(src.as_ptr().add((16 * h + i) * stride + e0)) }
                } else {
                    _mm512_setzero_ps()
                }
            });
            let mut t = [_mm512_setzero_ps(); 16];
            for i in 0..8 {
                t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
                t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
            }
            for i in 0..4 {
                let (a, b, c, e) = (t[4 * i], t[4 * i + 1], t[4 * i + 2], t[4 * i + 3]);
                r[4 * i] = ps(_mm512_unpacklo_pd(pd(a), pd(c)));
                r[4 * i + 1] = ps(_mm512_unpackhi_pd(pd(a), pd(c)));
                r[4 * i + 2] = ps(_mm512_unpacklo_pd(pd(b), pd(e)));
                r[4 * i + 3] = ps(_mm512_unpackhi_pd(pd(b), pd(e)));
            }
            // r[4i + c] holds column c (of 4) of rows 4i..4i+4, one 128-bit lane per group of
            // 4 columns: gather the lanes of rows 0–15 for each column.
            for c in 0..4 {
                let lo = _mm512_shuffle_f32x4::<0x88>(r[c], r[4 + c]);
                let hi = _mm512_shuffle_f32x4::<0xdd>(r[c], r[4 + c]);
                let lo2 = _mm512_shuffle_f32x4::<0x88>(r[8 + c], r[12 + c]);
                let hi2 = _mm512_shuffle_f32x4::<0xdd>(r[8 + c], r[12 + c]);
                t[c] = _mm512_shuffle_f32x4::<0x88>(lo, lo2);
                t[4 + c] = _mm512_shuffle_f32x4::<0x88>(hi, hi2);
                t[8 + c] = _mm512_shuffle_f32x4::<0xdd>(lo, lo2);
                t[12 + c] = _mm512_shuffle_f32x4::<0xdd>(hi, hi2);
            }
            let mask = ((1u32 << keys) - 1) as u16;
            for (i, v) in t.iter().enumerate() {
                let at = (e0 + i) * TILE + 16 * h;
                // SAFETY: element e0 + i < d of the tile's 16-key half h.
                unsafe { _mm512_mask_storeu_ps(kt.as_mut_ptr().add(at), mask, *v) };
            }
        }
    }
}

/// One step of the online softmax (base 2) for a row of scores `s` against the row's running
/// max `m` and sum `l`: `s` becomes `2^(s - m')`, `l` is rescaled and grows by their sum, and
/// the factor for the row's earlier output, `2^(m - m')`, is returned. Keys masked with −∞
/// get weight 0; a row that has seen no key yet stays empty (factor 1).
pub fn softmax_step(isa: Isa, s: &mut [f32], m: &mut f32, l: &mut f32) -> f32 {
    let tile_max = s.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let m_new = m.max(tile_max);
    if m_new == f32::NEG_INFINITY {
        s.fill(0.0);
        return 1.0;
    }
    let alpha = (*m - m_new).exp2();
    let sum = exp2_sub_sum(isa, s, m_new);
    *l = *l * alpha + sum;
    *m = m_new;
    alpha
}

/// `x[i] = 2^(x[i] - m)` (−∞ → 0), returning their sum.
fn exp2_sub_sum(isa: Isa, x: &mut [f32], m: f32) -> f32 {
    match isa.for_rows(x.len()) {
        // SAFETY: as in `scores`: the features are present and lengths fit the vectors.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { exp2_sub_sum_avx512(x, m) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { exp2_sub_sum_avx2(x, m) },
        _ => x
            .iter_mut()
            .map(|v| {
                *v = (*v - m).exp2();
                *v
            })
            .sum(),
    }
}

/// `o[r] = o[r]·alpha[r] + Σ_j p[r][j]·vt[j]` for `rows` rows, weights `p: [rows, TILE]`, a
/// value tile `vt: [TILE, d]` and outputs `o: [rows, d]`.
pub fn weighted_sum(
    isa: Isa,
    p: &[f32],
    alpha: &[f32],
    vt: &[f32],
    d: usize,
    o: &mut [f32],
    rows: usize,
) {
    assert!(p.len() >= rows * TILE && alpha.len() >= rows);
    assert!(vt.len() >= TILE * d && o.len() >= rows * d);
    match isa.for_rows(d) {
        // SAFETY: as in `scores`.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { weighted_sum_avx512(p, alpha, vt, d, o, rows) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { weighted_sum_avx2(p, alpha, vt, d, o, rows) },
        _ => {
            for r in 0..rows {
                let out = &mut o[r * d..][..d];
                out.iter_mut().for_each(|x| *x *= alpha[r]);
                for (j, &w) in p[r * TILE..][..TILE].iter().enumerate() {
                    if w != 0.0 {
                        for (x, &v) in out.iter_mut().zip(&vt[j * d..][..d]) {
                            *x += w * v;
                        }
                    }
                }
            }
        }
    }
}

// The exp2 polynomial on [-0.5, 0.5] (Cephes `exp2f`): relative error ~2e-7.
const EXP2_P: [f32; 6] = [
    1.535_336_2e-4,
    1.339_887_4e-3,
    9.618_437e-3,
    5.550_332_5e-2,
    2.402_264_8e-1,
    6.931_472e-1,
];

/// Rows per register block: 4 rows × 2 vectors of 16 scores keep 8 FMA chains in flight.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn scores_avx512(q: &[f32], rows: usize, d: usize, kt: &[f32], s: &mut [f32]) {
    const R: usize = 4;
    let (qp, kp, sp) = (q.as_ptr(), kt.as_ptr(), s.as_mut_ptr());
    let mut r = 0;
    // SAFETY (all pointer reads and writes below): within the lengths `scores` asserted.
    unsafe {
        while r < rows {
            let n = R.min(rows - r);
            let mut acc = [[_mm512_setzero_ps(); 2]; R];
            for e in 0..d {
                let k0 = _mm512_loadu_ps(kp.add(e * TILE));
                let k1 = _mm512_loadu_ps(kp.add(e * TILE + 16));
                for (i, a) in acc.iter_mut().enumerate().take(n) {
                    let qv = _mm512_set1_ps(*qp.add((r + i) * d + e));
                    a[0] = _mm512_fmadd_ps(qv, k0, a[0]);
                    a[1] = _mm512_fmadd_ps(qv, k1, a[1]);
                }
            }
            for (i, a) in acc.iter().enumerate().take(n) {
                _mm512_storeu_ps(sp.add((r + i) * TILE), a[0]);
                _mm512_storeu_ps(sp.add((r + i) * TILE + 16), a[1]);
            }
            r += n;
        }
    }
}

/// 2 rows × 4 vectors of 8 scores: 8 FMA chains.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn scores_avx2(q: &[f32], rows: usize, d: usize, kt: &[f32], s: &mut [f32]) {
    const R: usize = 2;
    let (qp, kp, sp) = (q.as_ptr(), kt.as_ptr(), s.as_mut_ptr());
    let mut r = 0;
    // SAFETY: within the lengths `scores` asserted.
    unsafe {
        while r < rows {
            let n = R.min(rows - r);
            let mut acc = [[_mm256_setzero_ps(); 4]; R];
            for e in 0..d {
                let k = [0, 8, 16, 24].map(|o| _mm256_loadu_ps(kp.add(e * TILE + o)));
                for (i, a) in acc.iter_mut().enumerate().take(n) {
                    let qv = _mm256_set1_ps(*qp.add((r + i) * d + e));
                    for (x, kv) in a.iter_mut().zip(k) {
                        *x = _mm256_fmadd_ps(qv, kv, *x);
                    }
                }
            }
            for (i, a) in acc.iter().enumerate().take(n) {
                for (j, x) in a.iter().enumerate() {
                    _mm256_storeu_ps(sp.add((r + i) * TILE + 8 * j), *x);
                }
            }
            r += n;
        }
    }
}

/// 2^x for 16 lanes: x = n + f with n an integer, 2^f by the polynomial, scaled by 2^n
/// (`vscalefps`, which also sends x ≤ −150 to 0).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn exp2_avx512(x: __m512) -> __m512 {
    let x = _mm512_max_ps(x, _mm512_set1_ps(-150.0));
    let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(x);
    let f = _mm512_sub_ps(x, n);
    let mut p = _mm512_set1_ps(EXP2_P[0]);
    for c in &EXP2_P[1..] {
        p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(*c));
    }
    let p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.0));
    _mm512_scalef_ps(p, n)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn exp2_sub_sum_avx512(x: &mut [f32], m: f32) -> f32 {
    let mut sum = _mm512_setzero_ps();
    let mv = _mm512_set1_ps(m);
    for c in x.chunks_exact_mut(16) {
        // SAFETY: a chunk is 16 floats.
        unsafe {
            let e = exp2_avx512(_mm512_sub_ps(_mm512_loadu_ps(c.as_ptr()), mv));
            _mm512_storeu_ps(c.as_mut_ptr(), e);
            sum = _mm512_add_ps(sum, e);
        }
    }
    _mm512_reduce_add_ps(sum)
}

/// 2^x for 8 lanes; 2^n is built in the exponent bits, so x ≤ −127 gives 0.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn exp2_avx2(x: __m256) -> __m256 {
    let x = _mm256_min_ps(
        _mm256_max_ps(x, _mm256_set1_ps(-127.0)),
        _mm256_set1_ps(127.0),
    );
    let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(x);
    let f = _mm256_sub_ps(x, n);
    let mut p = _mm256_set1_ps(EXP2_P[0]);
    for c in &EXP2_P[1..] {
        p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(*c));
    }
    let p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(1.0));
    let bits = _mm256_slli_epi32::<23>(_mm256_add_epi32(
        _mm256_cvtps_epi32(n),
        _mm256_set1_epi32(127),
    ));
    _mm256_mul_ps(p, _mm256_castsi256_ps(bits))
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn exp2_sub_sum_avx2(x: &mut [f32], m: f32) -> f32 {
    let mut sum = _mm256_setzero_ps();
    let mv = _mm256_set1_ps(m);
    for c in x.chunks_exact_mut(8) {
        // SAFETY: a chunk is 8 floats.
        unsafe {
            let e = exp2_avx2(_mm256_sub_ps(_mm256_loadu_ps(c.as_ptr()), mv));
            _mm256_storeu_ps(c.as_mut_ptr(), e);
            sum = _mm256_add_ps(sum, e);
        }
    }
    let mut lanes = [0f32; 8];
    // SAFETY: 8 floats.
    unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), sum) };
    lanes.iter().sum()
}

/// Two rows at a time over 64 columns (4 vectors each: 8 FMA chains), 16 where `d` is not a
/// multiple of 64.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn weighted_sum_avx512(
    p: &[f32],
    alpha: &[f32],
    vt: &[f32],
    d: usize,
    o: &mut [f32],
    rows: usize,
) {
    let w = if d.is_multiple_of(64) { 4 } else { 1 };
    let (pp, vp, op) = (p.as_ptr(), vt.as_ptr(), o.as_mut_ptr());
    // SAFETY: within the lengths `weighted_sum` asserted.
    unsafe {
        let mut r = 0;
        while r < rows {
            let n = 2.min(rows - r);
            for col in (0..d).step_by(16 * w) {
                let mut acc = [[_mm512_setzero_ps(); 4]; 2];
                for (i, a) in acc.iter_mut().enumerate().take(n) {
                    let s = _mm512_set1_ps(alpha[r + i]);
                    for (c, x) in a.iter_mut().enumerate().take(w) {
                        *x = _mm512_mul_ps(s, _mm512_loadu_ps(op.add((r + i) * d + col + 16 * c)));
                    }
                }
                for j in 0..TILE {
                    let v = [0, 1, 2, 3].map(|c| {
                        if c < w {
                            _mm512_loadu_ps(vp.add(j * d + col + 16 * c))
                        } else {
                            _mm512_setzero_ps()
                        }
                    });
                    for (i, a) in acc.iter_mut().enumerate().take(n) {
                        let pv = _mm512_set1_ps(*pp.add((r + i) * TILE + j));
                        for (x, vv) in a.iter_mut().zip(v).take(w) {
                            *x = _mm512_fmadd_ps(pv, vv, *x);
                        }
                    }
                }
                for (i, a) in acc.iter().enumerate().take(n) {
                    for (c, x) in a.iter().enumerate().take(w) {
                        _mm512_storeu_ps(op.add((r + i) * d + col + 16 * c), *x);
                    }
                }
            }
            r += n;
        }
    }
}

/// Two rows at a time over 32 columns (4 vectors each), 8 where `d` is not a multiple of 32.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn weighted_sum_avx2(
    p: &[f32],
    alpha: &[f32],
    vt: &[f32],
    d: usize,
    o: &mut [f32],
    rows: usize,
) {
    let w = if d.is_multiple_of(32) { 4 } else { 1 };
    let (pp, vp, op) = (p.as_ptr(), vt.as_ptr(), o.as_mut_ptr());
    // SAFETY: within the lengths `weighted_sum` asserted.
    unsafe {
        let mut r = 0;
        while r < rows {
            let n = 2.min(rows - r);
            for col in (0..d).step_by(8 * w) {
                let mut acc = [[_mm256_setzero_ps(); 4]; 2];
                for (i, a) in acc.iter_mut().enumerate().take(n) {
                    let s = _mm256_set1_ps(alpha[r + i]);
                    for (c, x) in a.iter_mut().enumerate().take(w) {
                        *x = _mm256_mul_ps(s, _mm256_loadu_ps(op.add((r + i) * d + col + 8 * c)));
                    }
                }
                for j in 0..TILE {
                    let v = [0, 1, 2, 3].map(|c| {
                        if c < w {
                            _mm256_loadu_ps(vp.add(j * d + col + 8 * c))
                        } else {
                            _mm256_setzero_ps()
                        }
                    });
                    for (i, a) in acc.iter_mut().enumerate().take(n) {
                        let pv = _mm256_set1_ps(*pp.add((r + i) * TILE + j));
                        for (x, vv) in a.iter_mut().zip(v).take(w) {
                            *x = _mm256_fmadd_ps(pv, vv, *x);
                        }
                    }
                }
                for (i, a) in acc.iter().enumerate().take(n) {
                    for (c, x) in a.iter().enumerate().take(w) {
                        _mm256_storeu_ps(op.add((r + i) * d + col + 8 * c), *x);
                    }
                }
            }
            r += n;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noise(n: usize, seed: u64) -> Vec<f32> {
        let mut rng = crate::rng::Rng::new(seed);
        (0..n)
            .map(|_| (rng.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0)
            .collect()
    }

    /// The vector transpose puts every key's elements where the scalar loop does, for full and
    /// partial tiles, and leaves the columns past the keys alone.
    #[test]
    fn key_tiles_transpose_as_the_scalar_loop_does() {
        for isa in Isa::available() {
            for (d, len, stride) in [
                (64, 32, 64),
                (64, 7, 128),
                (16, 17, 40),
                (48, 1, 48),
                (12, 5, 12),
            ] {
                let src = noise((len - 1) * stride + d, 3);
                let mut want = noise(d * TILE, 4);
                let mut got = want.clone();
                for j in 0..len {
                    for e in 0..d {
                        want[e * TILE + j] = src[j * stride + e];
                    }
                }
                transpose_keys(isa, &src, stride, len, d, &mut got);
                assert_eq!(got, want, "{isa:?} d {d} len {len}");
            }
        }
    }

    /// Every path this CPU has, for head dims that take the wide, the narrow and the scalar
    /// loops, against f64 sums.
    #[test]
    fn every_path_matches_f64_sums() {
        for isa in Isa::available() {
            for (d, rows) in [(64, 7), (16, 3), (48, 5), (128, 1), (8, 2), (12, 4)] {
                let q = noise(rows * d, 1);
                let kt = noise(d * TILE, 2);
                let mut s = vec![0f32; rows * TILE];
                scores(isa, &q, rows, d, &kt, &mut s);
                for r in 0..rows {
                    for j in 0..TILE {
                        let want: f64 = (0..d)
                            .map(|e| q[r * d + e] as f64 * kt[e * TILE + j] as f64)
                            .sum();
                        let got = s[r * TILE + j] as f64;
                        assert!(
                            (got - want).abs() < 1e-5,
                            "{isa:?} d {d} scores: {got} {want}"
                        );
                    }
                }
                let vt = noise(TILE * d, 3);
                let p = noise(rows * TILE, 4);
                let alpha = noise(rows, 5);
                let o0 = noise(rows * d, 6);
                let mut o = o0.clone();
                weighted_sum(isa, &p, &alpha, &vt, d, &mut o, rows);
                for r in 0..rows {
                    for e in 0..d {
                        let want = o0[r * d + e] as f64 * alpha[r] as f64
                            + (0..TILE)
                                .map(|j| p[r * TILE + j] as f64 * vt[j * d + e] as f64)
                                .sum::<f64>();
                        let got = o[r * d + e] as f64;
                        assert!((got - want).abs() < 1e-5, "{isa:?} d {d} sum: {got} {want}");
                    }
                }
            }
        }
    }

    /// Relative error of the exp2 polynomial across the range softmax feeds it, and exact
    /// zeros for masked (−∞) and underflowing scores.
    #[test]
    fn exp2_is_accurate_and_masks_to_zero() {
        for isa in Isa::available() {
            let mut x: Vec<f32> = (0..TILE).map(|i| -(i as f32) * 1.37 + 0.4).collect();
            x[5] = f32::NEG_INFINITY;
            x[6] = -200.0;
            let want: Vec<f64> = x.iter().map(|&v| ((v - 0.4) as f64).exp2()).collect();
            let sum = exp2_sub_sum(isa, &mut x, 0.4);
            for (i, (&got, &w)) in x.iter().zip(&want).enumerate() {
                if i == 5 || i == 6 {
                    assert_eq!(got, 0.0, "{isa:?}");
                } else if w > 1e-30 {
                    assert!(
                        ((got as f64 - w) / w).abs() < 1e-6,
                        "{isa:?} {i}: {got} {w}"
                    );
                }
            }
            let total: f64 = want.iter().sum();
            assert!((sum as f64 - total).abs() < 1e-6 * total, "{isa:?}");
        }
    }

    #[test]
    fn a_row_without_keys_stays_empty() {
        for isa in Isa::available() {
            let mut s = vec![f32::NEG_INFINITY; TILE];
            let (mut m, mut l) = (f32::NEG_INFINITY, 0.0);
            assert_eq!(softmax_step(isa, &mut s, &mut m, &mut l), 1.0);
            assert!(s.iter().all(|&p| p == 0.0) && l == 0.0);
        }
    }
}
