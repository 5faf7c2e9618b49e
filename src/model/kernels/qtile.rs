//! `x · Wᵀ` for Q5_0, Q8_0, Q4K and Q6K weights repacked at load into tiles of 16 rows, so that one
//! AVX-512 VNNI `vpdpbusd` multiplies four weights of each of the 16 rows by four activations
//! (broadcast) and leaves the 16 rows' sums in the 16 lanes: no horizontal sums, the 16 rows'
//! scales come in one load, and a prefill chunk reuses each unpacked block for 8 activation rows
//! (llama.cpp's repacked `gemm_*_8x8` kernels and candle's `repack_x86` work the same way).
//! Without AVX-512 VNNI, an AVX2 kernel reads the same tiles as two 8-row halves.
//! Repacking keeps the bytes per weight (22 per 32 for Q5_0, 34 for Q8_0): decode streams no
//! more than the file holds. Activations are quantized per 32 values to 8 bits (llama.cpp's
//! Q8_0 for activations) with each block's sum, which folds the weights' unsigned offset
//! (+16 for Q5_0, +128 for Q8_0) back out of the integer dot.
//!
//! A tile block is 16 rows × 32 weights: the rows' f16 scales (32 bytes), then for Q5_0 eight
//! 64-bit masks of high bits (mask j, bit 4r + e: weight 4j + e of row r) and four 64-byte
//! groups of nibbles (group p, byte 4r + e: weight 4p + e in the low nibble, 4p + 16 + e in the
//! high one); for Q8_0 eight 64-byte groups (group j, byte 4r + e: weight 4j + e of row r,
//! plus 128). Rows past `n` in the last tile are zero.

use std::cell::RefCell;

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{D, Tensor};
use rayon::prelude::*;

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use super::simd::Isa;

/// Weights per block (and per activation block).
pub const QK: usize = 32;

/// Weight rows per tile: one AVX-512 vector of i32 sums.
pub const ROWS: usize = 16;
/// Activation rows a pass over one tile block keeps in registers.
const MR: usize = 8;
/// Weights per k-quant superblock.
const QKK: usize = 256;

/// A block's f16 scale (its first two bytes) as f32.
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

/// The block types with a tiled layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Q5_0,
    Q8_0,
    Q4K,
    Q6K,
}

impl Kind {
    fn of(dtype: GgmlDType) -> Option<Kind> {
        match dtype {
            GgmlDType::Q5_0 => Some(Kind::Q5_0),
            GgmlDType::Q8_0 => Some(Kind::Q8_0),
            GgmlDType::Q4K => Some(Kind::Q4K),
            GgmlDType::Q6K => Some(Kind::Q6K),
            _ => None,
        }
    }

    /// Weights per unit: a block (Q5_0, Q8_0) or a superblock (k-quants) of one row.
    fn unit(self) -> usize {
        match self {
            Kind::Q5_0 | Kind::Q8_0 => QK,
            Kind::Q4K | Kind::Q6K => QKK,
        }
    }

    /// Bytes of one GGUF unit.
    fn gguf_unit(self) -> usize {
        match self {
            Kind::Q5_0 => 22,
            Kind::Q8_0 => 34,
            Kind::Q4K => 144,
            Kind::Q6K => 210,
        }
    }

    /// Bytes of a tile unit's header (scales) before its blocks.
    fn header(self) -> usize {
        match self {
            Kind::Q5_0 | Kind::Q8_0 => 32,
            // d, dmin, then the 8 sub-blocks' 6-bit scales and mins as bytes ([j][row]).
            Kind::Q4K => 64 + 2 * 8 * ROWS,
            // d, then the 16 sub-blocks' 8-bit scales ([j][row]).
            Kind::Q6K => 32 + 16 * ROWS,
        }
    }

    /// Bytes of one tile block (16 rows × 32 weights) after the header.
    fn block(self) -> usize {
        match self {
            Kind::Q5_0 => 64 + 256,
            Kind::Q8_0 => 512,
            Kind::Q4K => 256,
            Kind::Q6K => 128 + 256,
        }
    }

    /// Bytes of one tile unit (16 rows × one unit).
    fn tile_unit(self) -> usize {
        self.header() + self.unit() / QK * self.block()
    }

    /// Where a block's nibbles start (after its high-bit masks).
    fn nibbles(self) -> usize {
        match self {
            Kind::Q5_0 => 64,
            Kind::Q6K => 128,
            Kind::Q8_0 | Kind::Q4K => 0,
        }
    }

    /// What the stored unsigned weights exceed the real ones by (Q4K: none, its minimum is
    /// a term of its own).
    fn offset(self) -> i32 {
        match self {
            Kind::Q5_0 => 16,
            Kind::Q8_0 => 128,
            Kind::Q4K => 0,
            Kind::Q6K => 32,
        }
    }
}

/// Weights `[n, k]` in tiles of [`ROWS`] rows.
#[derive(Debug, Clone)]
pub struct Tiled {
    kind: Kind,
    n: usize,
    k: usize,
    data: Vec<u8>,
}

/// The path the tiled kernels run on here: AVX-512 with VNNI and BW, else AVX2 with FMA and
/// F16C, else none (the caller keeps the blocks for candle's kernels). Found once: every
/// matmul asks.
pub fn detect() -> Option<Isa> {
    static HERE: std::sync::OnceLock<Option<Isa>> = std::sync::OnceLock::new();
    *HERE.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        if super::simd::allowed(Isa::Avx512)
            && is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512vnni")
            && is_x86_feature_detected!("f16c")
        {
            return Some(Isa::Avx512);
        }
        #[cfg(target_arch = "x86_64")]
        if super::simd::allowed(Isa::Avx2)
            && is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c")
        {
            return Some(Isa::Avx2);
        }
        None
    })
}

/// Whether `q` has a tiled layout (Q5_0, Q8_0, Q4K or Q6K of whole units).
pub fn fits(q: &QTensor) -> bool {
    Kind::of(q.dtype()).is_some_and(|kind| {
        q.shape()
            .dims2()
            .is_ok_and(|(n, k)| n > 0 && k > 0 && k.is_multiple_of(kind.unit()))
    })
}

/// ggml's 6-bit scale and min `j` of a Q4K superblock (`get_scale_min_k4`).
fn scale_min_k4(j: usize, s: &[u8]) -> (u8, u8) {
    if j < 4 {
        (s[j] & 63, s[j + 4] & 63)
    } else {
        (
            (s[j + 4] & 15) | ((s[j - 4] >> 6) << 4),
            (s[j + 4] >> 4) | ((s[j] >> 6) << 4),
        )
    }
}

/// One GGUF unit of a row, unpacked: the stored unsigned weights, and for k-quants the
/// per-sub-block scales (Q4K: 8 scales then 8 mins; Q6K: 16 signed scales as bytes).
fn unpack_unit(kind: Kind, blk: &[u8]) -> ([u8; QKK], [u8; 16]) {
    let (mut u, mut sc) = ([0u8; QKK], [0u8; 16]);
    match kind {
        Kind::Q5_0 => {
            let qh = u32::from_le_bytes([blk[2], blk[3], blk[4], blk[5]]);
            for (j, x) in u[..QK].iter_mut().enumerate() {
                let nib = if j < 16 {
                    blk[6 + j] & 15
                } else {
                    blk[6 + j - 16] >> 4
                };
                *x = nib | (((qh >> j) & 1) as u8) << 4;
            }
        }
        Kind::Q8_0 => {
            for (x, &b) in u[..QK].iter_mut().zip(&blk[2..2 + QK]) {
                *x = b ^ 0x80;
            }
        }
        Kind::Q4K => {
            for j in 0..8 {
                (sc[j], sc[8 + j]) = scale_min_k4(j, &blk[4..16]);
            }
            for (v, x) in u.iter_mut().enumerate() {
                let q = blk[16 + 32 * (v / 64) + v % 32];
                *x = if v % 64 < 32 { q & 15 } else { q >> 4 };
            }
        }
        Kind::Q6K => {
            sc.copy_from_slice(&blk[192..208]);
            for (v, x) in u.iter_mut().enumerate() {
                let (half, quarter, l) = (v / 128, (v % 128) / 32, v % 32);
                let ql = blk[64 * half + l + 32 * (quarter % 2)];
                let low = if quarter < 2 { ql & 15 } else { ql >> 4 };
                let high = (blk[128 + 32 * half + l] >> (2 * quarter)) & 3;
                *x = low | high << 4;
            }
        }
    }
    (u, sc)
}

/// Row `r`'s 32 stored weights `u` into a tile block (the module's layout).
fn pack_row_block(kind: Kind, u: &[u8], r: usize, blk: &mut [u8]) {
    for (j, g) in u.chunks_exact(4).enumerate() {
        if kind == Kind::Q8_0 {
            blk[64 * j + 4 * r..][..4].copy_from_slice(g);
            continue;
        }
        let nib = &mut blk[kind.nibbles() + 64 * (j % 4) + 4 * r..][..4];
        for (o, &v) in nib.iter_mut().zip(g) {
            *o |= (v & 15) << (4 * (j / 4));
        }
        // Bit `bit` of the 4 weights: 4 bits of the mask byte that holds lanes 4r..4r + 4.
        let bits = |bit: u8| g.iter().rev().fold(0u8, |a, &v| a << 1 | (v >> bit) & 1);
        let byte = 8 * j + r / 2;
        let shift = 4 * (r % 2);
        if kind != Kind::Q4K {
            blk[byte] |= bits(4) << shift;
        }
        if kind == Kind::Q6K {
            blk[64 + byte] |= bits(5) << shift;
        }
    }
}

impl Tiled {
    /// Repacks a Q5_0, Q8_0, Q4K or Q6K matrix (see the module's layout).
    pub fn pack(q: &QTensor) -> candle_core::Result<Tiled> {
        let kind = Kind::of(q.dtype());
        let (n, k) = q.shape().dims2()?;
        let (Some(kind), true) = (kind, fits(q)) else {
            candle_core::bail!(
                "tiled matmul: no layout for {:?} {:?}",
                q.dtype(),
                q.shape()
            );
        };
        let src = q.data()?;
        let units = k / kind.unit();
        let (gu, tu) = (kind.gguf_unit(), kind.tile_unit());
        let tiles = n.div_ceil(ROWS);
        let mut data = vec![0u8; tiles * units * tu];
        data.par_chunks_mut(units * tu)
            .enumerate()
            .for_each(|(t, tile)| {
                for (un, out) in tile.chunks_exact_mut(tu).enumerate() {
                    for r in 0..ROWS.min(n - t * ROWS) {
                        let blk = &src[((t * ROWS + r) * units + un) * gu..][..gu];
                        let (u, sc) = unpack_unit(kind, blk);
                        let d = match kind {
                            Kind::Q6K => 208,
                            _ => 0,
                        };
                        out[2 * r..2 * r + 2].copy_from_slice(&blk[d..d + 2]);
                        match kind {
                            Kind::Q4K => {
                                out[32 + 2 * r..][..2].copy_from_slice(&blk[2..4]);
                                for j in 0..16 {
                                    out[64 + ROWS * j + r] = sc[j];
                                }
                            }
                            Kind::Q6K => {
                                for j in 0..16 {
                                    out[32 + ROWS * j + r] = sc[j];
                                }
                            }
                            _ => {}
                        }
                        for (b, ub) in u[..kind.unit()].chunks_exact(QK).enumerate() {
                            let blk = &mut out[kind.header() + b * kind.block()..][..kind.block()];
                            pack_row_block(kind, ub, r, blk);
                        }
                    }
                }
            });
        Ok(Tiled { kind, n, k, data })
    }

    pub fn out_dim(&self) -> usize {
        self.n
    }

    /// The weights as a dense f32 tensor `[n, k]` (a LoRA merge adds to them).
    pub fn to_tensor(&self, device: &candle_core::Device) -> candle_core::Result<Tensor> {
        Tensor::from_vec(self.dequantize(), (self.n, self.k), device)
    }

    pub fn bytes(&self) -> usize {
        self.data.len()
    }

    /// One matrix of the rows of `parts` in order (q, k and v run as one call), when they are of
    /// one kind and width and every part but the last fills its tiles.
    pub fn concat(parts: &[&Tiled]) -> Option<Tiled> {
        let first = parts.first()?;
        let last = parts.len() - 1;
        let fits = parts.iter().enumerate().all(|(i, p)| {
            p.kind == first.kind && p.k == first.k && (i == last || p.n.is_multiple_of(ROWS))
        });
        fits.then(|| Tiled {
            kind: first.kind,
            n: parts.iter().map(|p| p.n).sum(),
            k: first.k,
            data: parts.iter().flat_map(|p| p.data.iter().copied()).collect(),
        })
    }

    /// The stored unsigned weight `i` (0..32) of row `r` in tile block `blk`.
    fn stored(&self, blk: &[u8], r: usize, i: usize) -> u8 {
        let (j, lane) = (i / 4, 4 * r + i % 4);
        if self.kind == Kind::Q8_0 {
            return blk[64 * j + lane];
        }
        let byte = blk[self.kind.nibbles() + 64 * (j % 4) + lane];
        let mut v = if j < 4 { byte & 15 } else { byte >> 4 };
        let bits: &[usize] = match self.kind {
            Kind::Q5_0 => &[4],
            Kind::Q6K => &[4, 5],
            _ => &[],
        };
        for &bit in bits {
            v |= ((blk[64 * (bit - 4) + 8 * j + lane / 8] >> (lane % 8)) & 1) << bit;
        }
        v
    }

    /// Row `r`'s factors for block `b` of tile unit `unit`: `y = a · (u − offset) − m` per
    /// weight for Q5_0, Q8_0 and Q4K (m: Q4K's minimum), and for Q6K `a` times the first
    /// half's scale and `m` times the second's (`y = a·(u − 32)` in the first 16, `m·(u − 32)`
    /// after).
    fn factors(&self, unit: &[u8], r: usize, b: usize) -> (f32, f32) {
        let d = scale(&unit[2 * r..]);
        match self.kind {
            Kind::Q5_0 | Kind::Q8_0 => (d, 0.0),
            Kind::Q4K => {
                let dmin = scale(&unit[32 + 2 * r..]);
                let (sc, m) = (unit[64 + ROWS * b + r], unit[64 + ROWS * (8 + b) + r]);
                (d * sc as f32, dmin * m as f32)
            }
            Kind::Q6K => {
                let sc = |j: usize| unit[32 + ROWS * j + r] as i8 as f32;
                (d * sc(2 * b), d * sc(2 * b + 1))
            }
        }
    }

    /// The f32 weights `[n, k]` (a reference for the tests).
    pub fn dequantize(&self) -> Vec<f32> {
        let (units, tu) = (self.k / self.kind.unit(), self.kind.tile_unit());
        let mut out = vec![0f32; self.n * self.k];
        for (row, o) in out.chunks_exact_mut(self.k).enumerate() {
            let (t, r) = (row / ROWS, row % ROWS);
            for (at, ob) in o.chunks_exact_mut(QK).enumerate() {
                let (un, b) = (at / (self.kind.unit() / QK), at % (self.kind.unit() / QK));
                let unit = &self.data[(t * units + un) * tu..][..tu];
                let blk = &unit[self.kind.header() + b * self.kind.block()..];
                let (a, m) = self.factors(unit, r, b);
                for (i, x) in ob.iter_mut().enumerate() {
                    let u = self.stored(blk, r, i) as i32 - self.kind.offset();
                    *x = match self.kind {
                        Kind::Q6K if i >= 16 => m * u as f32,
                        Kind::Q6K => a * u as f32,
                        _ => a * u as f32 - m,
                    };
                }
            }
        }
        out
    }
}

/// Activation rows quantized per 32 values: `q` the 8-bit values, `d` each block's scale and
/// `s` the sums of its two halves of 16 (Q6K scales each half on its own).
#[derive(Default)]
struct Act {
    q: Vec<i8>,
    d: Vec<f32>,
    s: Vec<[i32; 2]>,
}

impl Act {
    fn quantize(&mut self, x: &[f32]) {
        let blocks = x.len() / QK;
        self.q.resize(x.len(), 0);
        self.d.resize(blocks, 0.0);
        self.s.resize(blocks, [0; 2]);
        let each = |((q, d), s): ((&mut [i8], &mut f32), &mut [i32; 2]), xs: &[f32]| {
            let amax = xs.iter().fold(0f32, |a, v| a.max(v.abs()));
            *d = amax / 127.0;
            let inv = if *d > 0.0 { 1.0 / *d } else { 0.0 };
            *s = [0; 2];
            for (i, (q, &v)) in q.iter_mut().zip(xs).enumerate() {
                *q = (v * inv).round() as i8;
                s[i / 16] += *q as i32;
            }
        };
        // A decode step's row is quantized faster than the pool wakes up.
        if blocks < 4096 {
            let rows = self.q.chunks_mut(QK).zip(&mut self.d).zip(&mut self.s);
            rows.zip(x.chunks_exact(QK)).for_each(|(r, xs)| each(r, xs));
        } else {
            let rows = self
                .q
                .par_chunks_mut(QK)
                .zip(self.d.par_iter_mut())
                .zip(self.s.par_iter_mut());
            rows.zip(x.par_chunks_exact(QK))
                .with_min_len(256)
                .for_each(|(r, xs)| each(r, xs));
        }
    }
}

thread_local! {
    /// Each thread's quantized activations, kept between calls (a decode step makes ~170).
    static ACT: RefCell<Act> = RefCell::default();
}

/// `x · Wᵀ` for f32 `x: [.., k]` on the CPU: `[.., n]`.
pub fn forward(x: &Tensor, w: &Tiled) -> candle_core::Result<Tensor> {
    if x.dim(D::Minus1)? != w.k {
        candle_core::bail!("tiled matmul: x {:?} against [{}, {}]", x.dims(), w.n, w.k);
    }
    let x = x.contiguous()?;
    let (storage, layout) = x.storage_and_layout();
    let candle_core::Storage::Cpu(candle_core::CpuStorage::F32(xs)) = &*storage else {
        candle_core::bail!("tiled matmul: x must be f32 on the CPU");
    };
    let xs = &xs[layout.start_offset()..][..x.elem_count()];
    let mut out = vec![0f32; xs.len() / w.k * w.n];
    matmul(detect().unwrap_or(Isa::Scalar), xs, w, &mut out);
    let mut dims = x.dims().to_vec();
    *dims.last_mut().expect("rank ≥ 1") = w.n;
    Tensor::from_vec(out, dims, x.device())
}

/// A pointer the tasks write disjoint columns of the output through.
#[derive(Clone, Copy)]
struct Out(*mut f32);
// SAFETY: every task writes only the columns of its own tiles.
unsafe impl Send for Out {}
unsafe impl Sync for Out {}

impl Out {
    /// Through a method, so that a closure captures the whole `Out` (Send), not its field.
    fn ptr(self) -> *mut f32 {
        self.0
    }
}

/// `out[i][j] = Σ_k x[i][k] · W[j][k]` for `x: [m, k]`; `out: [m, n]`. A path the CPU lacks
/// falls back to scalar.
pub fn matmul(isa: Isa, x: &[f32], w: &Tiled, out: &mut [f32]) {
    assert!(x.len().is_multiple_of(w.k) && out.len() == x.len() / w.k * w.n);
    // AVX-512 VNNI implies AVX2 here (every such CPU has both): a path at or below the
    // detected one runs.
    let isa = match (isa, detect()) {
        (Isa::Avx512, Some(Isa::Avx512)) => Isa::Avx512,
        (Isa::Avx512 | Isa::Avx2, Some(_)) => Isa::Avx2,
        _ => Isa::Scalar,
    };
    let mut fresh = Act::default();
    ACT.with(|cell| {
        // A nested call on this thread (a rayon worker that stole a task) gets its own buffers.
        let mut held = cell.try_borrow_mut();
        let act = match held.as_deref_mut() {
            Ok(a) => a,
            Err(_) => &mut fresh,
        };
        act.quantize(x);
        run(isa, act, w, out);
    });
}

fn run(isa: Isa, act: &Act, w: &Tiled, out: &mut [f32]) {
    let n = w.n;
    let m = act.q.len() / w.k;
    let tiles = n.div_ceil(ROWS);
    // A few tasks per thread, so that a thread slowed by another process hands work over.
    let per = tiles.div_ceil(8 * rayon::current_num_threads()).max(1);
    let dst = Out(out.as_mut_ptr());
    let tile_bytes = w.k / w.kind.unit() * w.kind.tile_unit();
    (0..tiles.div_ceil(per)).into_par_iter().for_each(|task| {
        for t in task * per..tiles.min((task + 1) * per) {
            let tile = &w.data[t * tile_bytes..][..tile_bytes];
            let lanes = ROWS.min(n - t * ROWS);
            for i0 in (0..m).step_by(MR) {
                let at = Place {
                    i0,
                    rows: MR.min(m - i0),
                    out: dst.ptr(),
                    n,
                    col0: t * ROWS,
                    lanes,
                };
                match isa {
                    // SAFETY: `detect` found AVX-512 VNNI, BW and F16C; the tile holds k
                    // weights of 16 rows, the activations m rows of k, and `at` names this
                    // task's own columns of its rows of `out` (m × n, asserted by `matmul`).
                    #[cfg(target_arch = "x86_64")]
                    Isa::Avx512 => unsafe { tile_vnni(w.kind, tile, act, at) },
                    // SAFETY: as above, with AVX2, FMA and F16C found.
                    #[cfg(target_arch = "x86_64")]
                    Isa::Avx2 => unsafe { tile_avx2(w.kind, tile, act, at) },
                    _ => tile_scalar(w, tile, act, at),
                }
            }
        }
    });
}

/// Where a tile's outputs go: rows `i0..i0 + rows` of `out: [m, n]`, columns
/// `col0..col0 + lanes`.
#[derive(Clone, Copy)]
struct Place {
    i0: usize,
    rows: usize,
    out: *mut f32,
    n: usize,
    col0: usize,
    lanes: usize,
}

/// The vector paths' arithmetic, one weight row at a time (the reference for the tests and
/// the fallback where the CPU lacks AVX2).
fn tile_scalar(w: &Tiled, tile: &[u8], act: &Act, at: Place) {
    let kind = w.kind;
    let (nb, per_unit, off) = (w.k / QK, kind.unit() / QK, kind.offset());
    for i in at.i0..at.i0 + at.rows {
        for r in 0..at.lanes {
            let mut acc = 0f32;
            for b in 0..nb {
                let unit = &tile[b / per_unit * kind.tile_unit()..][..kind.tile_unit()];
                let blk = &unit[kind.header() + b % per_unit * kind.block()..];
                let xq = &act.q[(i * nb + b) * QK..][..QK];
                let [s0, s1] = act.s[i * nb + b];
                let half = |h: usize| -> i32 {
                    (16 * h..16 * h + 16)
                        .map(|e| w.stored(blk, r, e) as i32 * xq[e] as i32)
                        .sum()
                };
                let (a, m) = w.factors(unit, r, b % per_unit);
                let dx = act.d[i * nb + b];
                acc += match kind {
                    Kind::Q6K => {
                        let (lo, hi) = (half(0) - off * s0, half(1) - off * s1);
                        (a * lo as f32 + m * hi as f32) * dx
                    }
                    _ => {
                        let dot = half(0) + half(1) - off * (s0 + s1);
                        a * dx * dot as f32 - m * dx * (s0 + s1) as f32
                    }
                };
            }
            // SAFETY: row i, column col0 + r of `out` is this task's (see `run`).
            unsafe { *at.out.add(i * at.n + at.col0 + r) = acc };
        }
    }
}

/// `kernel::<N, K>` for `at`'s rows in groups of the sizes given (largest first; the last
/// is 1), with `K` the index of `kind` in [`KINDS`]: one instance per kind and group size.
#[cfg(target_arch = "x86_64")]
macro_rules! in_groups {
    ($kernel:ident, $kind:expr, $tile:expr, $act:expr, $at:expr, [$($n:literal),+]) => {{
        let mut at: Place = $at;
        while at.rows > 0 {
            $(
                if at.rows >= $n {
                    let group = Place { rows: $n, ..at };
                    match $kind {
                        Kind::Q5_0 => $kernel::<$n, 0>($tile, $act, group),
                        Kind::Q8_0 => $kernel::<$n, 1>($tile, $act, group),
                        Kind::Q4K => $kernel::<$n, 2>($tile, $act, group),
                        Kind::Q6K => $kernel::<$n, 3>($tile, $act, group),
                    }
                    at = Place { i0: at.i0 + $n, rows: at.rows - $n, ..at };
                    continue;
                }
            )+
        }
    }};
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,f16c")]
unsafe fn tile_vnni(kind: Kind, tile: &[u8], act: &Act, at: Place) {
    // SAFETY: as the caller's; each instance handles its group of the activation rows.
    unsafe { in_groups!(rows_vnni, kind, tile, act, at, [8, 4, 2, 1]) }
}

/// The kinds as const parameters of [`rows_vnni`] (one instance per kind and row count).
const KINDS: [Kind; 4] = [Kind::Q5_0, Kind::Q8_0, Kind::Q4K, Kind::Q6K];

/// `N` activation rows against one tile: each block's 16 × 32 weights unpacked once into
/// eight vectors (four weights of each row per i32 lane), then eight `vpdpbusd` per row.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,f16c")]
unsafe fn rows_vnni<const N: usize, const K: usize>(tile: &[u8], act: &Act, at: Place) {
    let kind = KINDS[K];
    let (per_unit, off) = (kind.unit() / QK, kind.offset());
    let nb = tile.len() / kind.tile_unit() * per_unit;
    let mut f = [_mm512_setzero_ps(); N];
    let low = _mm512_set1_epi8(15);
    // SAFETY: the tile holds nb / per_unit units of `tile_unit` bytes; the activations hold
    // nb blocks for rows i0..i0 + N (the caller's contract).
    unsafe {
        let scales = |p: *const u8| _mm512_cvtph_ps(_mm256_loadu_si256(p as *const __m256i));
        let bytes = |p: *const u8| _mm_loadu_si128(p as *const __m128i);
        for u in 0..nb / per_unit {
            let unit = tile.as_ptr().add(u * kind.tile_unit());
            let d = scales(unit);
            let dmin = if kind == Kind::Q4K {
                scales(unit.add(32))
            } else {
                d
            };
            for bu in 0..per_unit {
                let b = u * per_unit + bu;
                let p = unit.add(kind.header() + bu * kind.block());
                let mut w = [_mm512_setzero_si512(); 8];
                if kind == Kind::Q8_0 {
                    for (j, v) in w.iter_mut().enumerate() {
                        *v = _mm512_loadu_si512(p.add(64 * j) as *const _);
                    }
                } else {
                    let nib = p.add(kind.nibbles());
                    for pair in 0..4 {
                        let v = _mm512_loadu_si512(nib.add(64 * pair) as *const _);
                        w[pair] = _mm512_and_si512(v, low);
                        w[pair + 4] = _mm512_and_si512(_mm512_srli_epi16::<4>(v), low);
                    }
                    let mask = |bit: usize, j: usize| {
                        (p.add(64 * (bit - 4) + 8 * j) as *const u64).read_unaligned()
                    };
                    if kind != Kind::Q4K {
                        for (j, v) in w.iter_mut().enumerate() {
                            *v = _mm512_mask_add_epi8(*v, mask(4, j), *v, _mm512_set1_epi8(16));
                        }
                    }
                    if kind == Kind::Q6K {
                        for (j, v) in w.iter_mut().enumerate() {
                            *v = _mm512_mask_add_epi8(*v, mask(5, j), *v, _mm512_set1_epi8(32));
                        }
                    }
                }
                // Per-row factors of this block (16 lanes): a (and m) as in `Tiled::factors`.
                let (a, m, sc_hi) = match kind {
                    Kind::Q4K => {
                        let sc = |j: usize| {
                            _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(bytes(unit.add(64 + ROWS * j))))
                        };
                        let a = _mm512_mul_ps(d, sc(bu));
                        (a, _mm512_mul_ps(dmin, sc(8 + bu)), _mm512_setzero_si512())
                    }
                    Kind::Q6K => {
                        let sc = |j: usize| _mm512_cvtepi8_epi32(bytes(unit.add(32 + ROWS * j)));
                        (d, d, sc(2 * bu + 1))
                    }
                    _ => (d, d, _mm512_setzero_si512()),
                };
                let sc_lo = if kind == Kind::Q6K {
                    _mm512_cvtepi8_epi32(bytes(unit.add(32 + ROWS * 2 * bu)))
                } else {
                    sc_hi
                };
                for (i, fi) in f.iter_mut().enumerate() {
                    let x = (at.i0 + i) * nb + b;
                    let xq = act.q.as_ptr().add(x * QK) as *const i32;
                    let [s0, s1] = *act.s.get_unchecked(x);
                    let dx = _mm512_set1_ps(*act.d.get_unchecked(x));
                    let dot = |acc: __m512i, js: std::ops::Range<usize>| {
                        let mut acc = acc;
                        for j in js {
                            let xj = _mm512_set1_epi32(xq.add(j).read_unaligned());
                            acc = _mm512_dpbusd_epi32(acc, w[j], xj);
                        }
                        acc
                    };
                    if kind == Kind::Q6K {
                        let lo = dot(_mm512_set1_epi32(-off * s0), 0..4);
                        let hi = dot(_mm512_set1_epi32(-off * s1), 4..8);
                        let both = _mm512_add_epi32(
                            _mm512_mullo_epi32(lo, sc_lo),
                            _mm512_mullo_epi32(hi, sc_hi),
                        );
                        *fi = _mm512_fmadd_ps(_mm512_cvtepi32_ps(both), _mm512_mul_ps(a, dx), *fi);
                    } else {
                        let acc = dot(_mm512_set1_epi32(-off * (s0 + s1)), 0..8);
                        *fi = _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc), _mm512_mul_ps(a, dx), *fi);
                        if kind == Kind::Q4K {
                            let ms = _mm512_set1_ps(*act.d.get_unchecked(x) * (s0 + s1) as f32);
                            *fi = _mm512_fnmadd_ps(m, ms, *fi);
                        }
                    }
                }
            }
        }
        let mask = ((1u32 << at.lanes) - 1) as u16;
        for (i, fi) in f.iter().enumerate() {
            let o = at.out.add((at.i0 + i) * at.n + at.col0);
            _mm512_mask_storeu_ps(o, mask, *fi);
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn tile_avx2(kind: Kind, tile: &[u8], act: &Act, at: Place) {
    // SAFETY: as the caller's; each instance handles its group of the activation rows.
    unsafe { in_groups!(rows_avx2, kind, tile, act, at, [4, 2, 1]) }
}

/// Bit `i` of `bits` as byte `i` of a vector: 0xFF where set, 0 where not.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn bits_to_bytes(bits: u32) -> __m256i {
    // Byte i takes byte i / 8 of the mask (each 128-bit lane holds all four), then its bit.
    let spread = _mm256_shuffle_epi8(
        _mm256_set1_epi32(bits as i32),
        _mm256_setr_epi8(
            0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3,
            3, 3, 3,
        ),
    );
    let bit = _mm256_set1_epi64x(0x8040_2010_0804_0201u64 as i64);
    _mm256_cmpeq_epi8(_mm256_and_si256(spread, bit), bit)
}

/// [`rows_vnni`] on AVX2: a 64-byte group is two vectors (rows 0–7, rows 8–15), and each
/// four-weight dot is `vpmaddubsw` then `vpmaddwd` (no VNNI). Q5_0, Q4K and Q6K weights are
/// unsigned and small, so the 16-bit pair sums cannot saturate (2 · 63 · 127); Q8_0's are made
/// signed (u − 128) and multiplied by |x| with x's sign moved onto them, as llama.cpp does.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn rows_avx2<const N: usize, const K: usize>(tile: &[u8], act: &Act, at: Place) {
    let kind = KINDS[K];
    let (per_unit, off) = (kind.unit() / QK, kind.offset());
    let nb = tile.len() / kind.tile_unit() * per_unit;
    let mut f = [[_mm256_setzero_ps(); 2]; N];
    let low = _mm256_set1_epi8(15);
    let ones = _mm256_set1_epi16(1);
    // SAFETY: the tile holds nb / per_unit units of `tile_unit` bytes; the activations hold
    // nb blocks for rows i0..i0 + N (the caller's contract).
    unsafe {
        let scales = |p: *const u8| {
            [0, 16].map(|h| _mm256_cvtph_ps(_mm_loadu_si128(p.add(h) as *const __m128i)))
        };
        let bytes8 = |p: *const u8| _mm_loadl_epi64(p as *const __m128i);
        let load = |p: *const u8| _mm256_loadu_si256(p as *const __m256i);
        for u in 0..nb / per_unit {
            let unit = tile.as_ptr().add(u * kind.tile_unit());
            let d = scales(unit);
            let dmin = if kind == Kind::Q4K {
                scales(unit.add(32))
            } else {
                d
            };
            for bu in 0..per_unit {
                let b = u * per_unit + bu;
                let p = unit.add(kind.header() + bu * kind.block());
                // w[j][h]: four weights of rows 8h..8h + 8 per i32 lane, group j.
                let mut w = [[_mm256_setzero_si256(); 2]; 8];
                if kind == Kind::Q8_0 {
                    let flip = _mm256_set1_epi8(-128);
                    for (j, wj) in w.iter_mut().enumerate() {
                        *wj = [0, 32].map(|h| _mm256_xor_si256(load(p.add(64 * j + h)), flip));
                    }
                } else {
                    let nib = p.add(kind.nibbles());
                    for pair in 0..4 {
                        let v = [0, 32].map(|h| load(nib.add(64 * pair + h)));
                        w[pair] = v.map(|v| _mm256_and_si256(v, low));
                        w[pair + 4] = v.map(|v| _mm256_and_si256(_mm256_srli_epi16::<4>(v), low));
                    }
                    let mask = |bit: usize, j: usize, h: usize| {
                        (p.add(64 * (bit - 4) + 8 * j + 4 * h) as *const u32).read_unaligned()
                    };
                    let high: &[(usize, i8)] = match kind {
                        Kind::Q5_0 => &[(4, 16)],
                        Kind::Q6K => &[(4, 16), (5, 32)],
                        _ => &[],
                    };
                    for &(bit, add) in high {
                        for (j, wj) in w.iter_mut().enumerate() {
                            for (h, v) in wj.iter_mut().enumerate() {
                                let set = bits_to_bytes(mask(bit, j, h));
                                *v = _mm256_or_si256(
                                    *v,
                                    _mm256_and_si256(set, _mm256_set1_epi8(add)),
                                );
                            }
                        }
                    }
                }
                // Per-row factors of this block (8 lanes per half), as in `Tiled::factors`.
                let mut a = d;
                let mut m = d;
                let mut sc_lo = [_mm256_setzero_si256(); 2];
                let mut sc_hi = sc_lo;
                for h in 0..2 {
                    match kind {
                        Kind::Q4K => {
                            let sc = |j: usize| {
                                _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(bytes8(
                                    unit.add(64 + ROWS * j + 8 * h),
                                )))
                            };
                            a[h] = _mm256_mul_ps(d[h], sc(bu));
                            m[h] = _mm256_mul_ps(dmin[h], sc(8 + bu));
                        }
                        Kind::Q6K => {
                            let sc = |j: usize| {
                                _mm256_cvtepi8_epi32(bytes8(unit.add(32 + ROWS * j + 8 * h)))
                            };
                            sc_lo[h] = sc(2 * bu);
                            sc_hi[h] = sc(2 * bu + 1);
                        }
                        _ => {}
                    }
                }
                for (i, fi) in f.iter_mut().enumerate() {
                    let x = (at.i0 + i) * nb + b;
                    let xq = act.q.as_ptr().add(x * QK) as *const i32;
                    let [s0, s1] = *act.s.get_unchecked(x);
                    let dxs = *act.d.get_unchecked(x);
                    let dx = _mm256_set1_ps(dxs);
                    // Both halves' sums over groups `js`, from `init`.
                    let dot = |init: i32, js: std::ops::Range<usize>| {
                        let mut acc = [_mm256_set1_epi32(init); 2];
                        for j in js {
                            let xj = _mm256_set1_epi32(xq.add(j).read_unaligned());
                            for (h, acc) in acc.iter_mut().enumerate() {
                                let pairs = if kind == Kind::Q8_0 {
                                    _mm256_maddubs_epi16(
                                        _mm256_abs_epi8(xj),
                                        _mm256_sign_epi8(w[j][h], xj),
                                    )
                                } else {
                                    _mm256_maddubs_epi16(w[j][h], xj)
                                };
                                *acc = _mm256_add_epi32(*acc, _mm256_madd_epi16(pairs, ones));
                            }
                        }
                        acc
                    };
                    match kind {
                        Kind::Q6K => {
                            let (lo, hi) = (dot(-off * s0, 0..4), dot(-off * s1, 4..8));
                            for h in 0..2 {
                                let both = _mm256_add_epi32(
                                    _mm256_mullo_epi32(lo[h], sc_lo[h]),
                                    _mm256_mullo_epi32(hi[h], sc_hi[h]),
                                );
                                let ad = _mm256_mul_ps(a[h], dx);
                                fi[h] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(both), ad, fi[h]);
                            }
                        }
                        _ => {
                            // Q8_0's weights are signed already: no offset to fold out.
                            let init = if kind == Kind::Q8_0 {
                                0
                            } else {
                                -off * (s0 + s1)
                            };
                            let acc = dot(init, 0..8);
                            let ms = _mm256_set1_ps(dxs * (s0 + s1) as f32);
                            for h in 0..2 {
                                let ad = _mm256_mul_ps(a[h], dx);
                                fi[h] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(acc[h]), ad, fi[h]);
                                if kind == Kind::Q4K {
                                    fi[h] = _mm256_fnmadd_ps(m[h], ms, fi[h]);
                                }
                            }
                        }
                    }
                }
            }
        }
        for (i, fi) in f.iter().enumerate() {
            let o = at.out.add((at.i0 + i) * at.n + at.col0);
            if at.lanes == ROWS {
                _mm256_storeu_ps(o, fi[0]);
                _mm256_storeu_ps(o.add(8), fi[1]);
            } else {
                let mut all = [0f32; ROWS];
                _mm256_storeu_ps(all.as_mut_ptr(), fi[0]);
                _mm256_storeu_ps(all.as_mut_ptr().add(8), fi[1]);
                std::ptr::copy_nonoverlapping(all.as_ptr(), o, at.lanes);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// What rounding activations to 8 bits per block of `QK` can move output `(i, j)` of
    /// `x[m, k] · w[n, k]ᵀ`: at most half a step (1/127 of the block's largest value) per value,
    /// times the weight it meets; the kernels' tests judge the int8 paths against it.
    fn int8_error_bound(xs: &[f32], wv: &[f32], k: usize, i: usize, j: usize) -> f32 {
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
    }

    const DTYPES: [GgmlDType; 4] = [
        GgmlDType::Q5_0,
        GgmlDType::Q8_0,
        GgmlDType::Q4K,
        GgmlDType::Q6K,
    ];

    fn paths() -> Vec<Isa> {
        let mut out = vec![Isa::Scalar];
        match detect() {
            Some(Isa::Avx512) => out.extend([Isa::Avx512, Isa::Avx2]),
            Some(isa) => out.push(isa),
            None => {}
        }
        out
    }

    /// The repacked layout holds exactly the file's weights: dequantized, they equal candle's
    /// dequantization of the original blocks, for tile-filling and ragged row counts.
    #[test]
    fn tiles_hold_the_blocks_weights() {
        for dtype in DTYPES {
            for (n, k) in [(16, 256usize), (37, 512), (5, 768), (128, 896)] {
                if !k.is_multiple_of(Kind::of(dtype).unwrap().unit()) {
                    continue;
                }
                let w = Tensor::randn(0f32, 1.0, (n, k), &Device::Cpu).unwrap();
                let q = QTensor::quantize(&w, dtype).unwrap();
                let want: Vec<f32> = q
                    .dequantize(&Device::Cpu)
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1()
                    .unwrap();
                assert_eq!(
                    Tiled::pack(&q).unwrap().dequantize(),
                    want,
                    "{dtype:?} {n}x{k}"
                );
            }
        }
    }

    /// Every path against the f32 product with the dequantized weights, within the
    /// activations' 8-bit rounding; the vector path equal to the scalar one up to float
    /// rounding. Shapes with ragged tiles, odd row counts (every row-group size 1–8 and past
    /// it) and concatenated parts.
    #[test]
    fn every_path_matches_the_f32_product() {
        let dev = Device::Cpu;
        for dtype in DTYPES {
            for (m, k, n) in [
                (1, 32usize, 16),
                (1, 896, 150),
                (2, 64, 33),
                (3, 160, 48),
                (5, 96, 17),
                (7, 64, 64),
                (8, 128, 20),
                (13, 64, 31),
                (37, 96, 80),
                (1, 256, 16),
                (1, 768, 150),
                (3, 512, 33),
                (11, 256, 40),
                (19, 512, 17),
            ] {
                if !k.is_multiple_of(Kind::of(dtype).unwrap().unit()) {
                    continue;
                }
                let w = Tensor::randn(0f32, 1.0, (n, k), &dev).unwrap();
                let q = QTensor::quantize(&w, dtype).unwrap();
                let tiled = Tiled::pack(&q).unwrap();
                let wv = tiled.dequantize();
                let x = Tensor::randn(0f32, 1.0, (m, k), &dev).unwrap();
                let xs: Vec<f32> = x.flatten_all().unwrap().to_vec1().unwrap();
                let bound = |i: usize, j: usize| int8_error_bound(&xs, &wv, k, i, j);
                let mut scalar = vec![0f32; m * n];
                matmul(Isa::Scalar, &xs, &tiled, &mut scalar);
                for isa in paths() {
                    let mut got = vec![f32::NAN; m * n];
                    matmul(isa, &xs, &tiled, &mut got);
                    for i in 0..m {
                        for j in 0..n {
                            let want: f32 = (0..k).map(|e| xs[i * k + e] * wv[j * k + e]).sum();
                            let (g, s) = (got[i * n + j], scalar[i * n + j]);
                            assert!(
                                (g - want).abs() <= bound(i, j),
                                "{dtype:?} {isa:?} {m}x{k}x{n} [{i},{j}]: {g} vs {want}"
                            );
                            assert!(
                                (g - s).abs() <= 1e-4 * (1.0 + s.abs()),
                                "{dtype:?} {isa:?} vs scalar [{i},{j}]: {g} {s}"
                            );
                        }
                    }
                }
            }
        }
    }

    /// q, k and v joined: one call gives each part's columns as its own call does.
    #[test]
    fn concatenated_parts_give_each_parts_columns() {
        let dev = Device::Cpu;
        let (m, k) = (3, 128);
        let parts: Vec<Tiled> = [
            (32, GgmlDType::Q5_0),
            (16, GgmlDType::Q5_0),
            (9, GgmlDType::Q5_0),
        ]
        .iter()
        .map(|&(n, dt)| {
            let w = Tensor::randn(0f32, 1.0, (n, k), &dev).unwrap();
            Tiled::pack(&QTensor::quantize(&w, dt).unwrap()).unwrap()
        })
        .collect();
        let refs: Vec<&Tiled> = parts.iter().collect();
        let joined = Tiled::concat(&refs).unwrap();
        assert!(
            Tiled::concat(&[&parts[2], &parts[0]]).is_none(),
            "a ragged part first"
        );
        let xs: Vec<f32> = Tensor::randn(0f32, 1.0, (m, k), &dev)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let mut all = vec![0f32; m * joined.n];
        matmul(Isa::Avx512, &xs, &joined, &mut all);
        let mut col = 0;
        for p in &parts {
            let mut one = vec![0f32; m * p.n];
            matmul(Isa::Avx512, &xs, p, &mut one);
            for i in 0..m {
                assert_eq!(&all[i * joined.n + col..][..p.n], &one[i * p.n..][..p.n]);
            }
            col += p.n;
        }
    }
}
