//! Attention on the CPU, prefill chunks and decode steps alike: a flash-style loop over tiles
//! of [`TILE`] keys read in place from the KV cache through a [`SlotMap`] (no gather, no score
//! matrix, no mask tensor). A task takes the query heads of one KV head (GQA: each key tile
//! is loaded once for the whole group) at a block of positions, keeps a running max and sum per
//! query row (online softmax, base 2) and visits only the tiles the recipe lets the block see:
//! the sink and the last W keys, so a sliding layer costs O(W) per token. Tiles wholly inside
//! the rule skip the mask; only edge tiles test `AttnRule::allows` per key. Tasks run on
//! candle's rayon pool (threads of our own contended with its spinning workers on 2 cores); a
//! decode step, with one block per KV head, also splits the keys between tasks and merges the
//! partial sums. The candle-ops path gathered keys into new tensors and materialised the
//! `[H, C, N]` scores: prefill at 4k tokens ran at half its speed at 512.

use candle_core::{CpuStorage, Device, Layout, Storage, Tensor, bail};
use rayon::prelude::*;

use super::fused::SlotMap;
use crate::model::kernels::simd::{self, Isa, TILE};
use crate::recipe::AttnRule;

/// Query rows (group heads × positions) per task: the packed queries, outputs and one tile of
/// scores stay in L2 while the key tiles stream past.
const ROWS: usize = 128;
/// Fewest key tiles a split of a decode step streams (fewer and merging costs more than it saves).
const MIN_SPLIT_TILES: usize = 8;

/// Attention of `q: [1, H, C, d]` at positions `q0..q0+C` over the keys `map` picks from the
/// cache buffers `k, v: [1, KV, capacity, d]`, under `rule`, on the vector path `isa` (a path
/// the CPU lacks falls back to scalar). Returns `[1, C, H, d]`, token-major like the CUDA
/// kernel's output.
pub fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    map: SlotMap,
    rule: AttnRule,
    q0: usize,
    isa: Isa,
) -> candle_core::Result<Tensor> {
    let (_, h, c, d) = q.dims4()?;
    let (_, kv, cap, kd) = k.dims4()?;
    if kd != d || v.dims() != k.dims() || h % kv != 0 || c == 0 {
        bail!(
            "CPU attention: q {:?} k {:?} v {:?}",
            q.dims(),
            k.dims(),
            v.dims()
        );
    }
    if map.n_sink > 0 && map.sink_slot0 + map.n_sink > cap || map.recent_slot0 + map.n_recent > cap
    {
        bail!("CPU attention: slot map {map:?} outside a cache of {cap} slots");
    }
    let q = q.contiguous()?;
    let (qs, ql) = q.storage_and_layout();
    let (ks, kl) = k.storage_and_layout();
    let (vs, vl) = v.storage_and_layout();
    let (
        Storage::Cpu(CpuStorage::F32(qb)),
        Storage::Cpu(CpuStorage::F32(kb)),
        Storage::Cpu(CpuStorage::F32(vb)),
    ) = (&*qs, &*ks, &*vs)
    else {
        bail!("CPU attention needs f32 q, K and V on the CPU");
    };
    let g = h / kv;
    let job = Job {
        q: &qb[ql.start_offset()..][..h * c * d],
        k: Rows::new(kb, kl)?,
        v: Rows::new(vb, vl)?,
        map,
        rule,
        q0,
        c,
        d,
        g,
        block: (ROWS / g).clamp(1, c),
        isa: isa.for_rows(d),
    };
    let blocks = c.div_ceil(job.block);
    let tasks = kv * blocks;
    // Split the keys only when the blocks alone leave threads idle (decode, short chunks).
    let want = 2 * rayon::current_num_threads();
    let longest = job.tiles(q0 + c - job.block.min(c), q0 + c).len();
    let splits = if tasks >= want {
        1
    } else {
        want.div_ceil(tasks).min(longest / MIN_SPLIT_TILES).max(1)
    };
    let parts: Vec<Partial> = (0..tasks * splits)
        .into_par_iter()
        .map(|t| {
            job.run(
                t / splits / blocks,
                (t / splits) % blocks,
                t % splits,
                splits,
            )
        })
        .collect();
    let mut out = vec![0f32; c * h * d];
    for (task, split_parts) in parts.chunks(splits).enumerate() {
        let (kvh, block) = (task / blocks, task % blocks);
        let (c0, len) = job.block_span(block);
        for gi in 0..g {
            for t in 0..len {
                let r = gi * len + t;
                let head = kvh * g + gi;
                let o = &mut out[((c0 + t) * h + head) * d..][..d];
                let top = split_parts
                    .iter()
                    .map(|p| p.m[r])
                    .fold(f32::NEG_INFINITY, f32::max);
                if top == f32::NEG_INFINITY {
                    continue;
                }
                let mut sum = 0f32;
                for p in split_parts {
                    let w = (p.m[r] - top).exp2();
                    sum += w * p.l[r];
                    for (x, &y) in o.iter_mut().zip(&p.o[r * d..][..d]) {
                        *x += w * y;
                    }
                }
                o.iter_mut().for_each(|x| *x /= sum);
            }
        }
    }
    Tensor::from_vec(out, (1, c, h, d), &Device::Cpu)
}

/// A cache buffer `[1, KV, capacity, d]` read row by row.
struct Rows<'a> {
    data: &'a [f32],
    at: usize,
    head: usize,
    tok: usize,
}

impl<'a> Rows<'a> {
    fn new(data: &'a [f32], l: &Layout) -> candle_core::Result<Self> {
        let s = l.stride();
        if s[3] != 1 {
            bail!("CPU attention: cache rows must be contiguous");
        }
        Ok(Rows {
            data,
            at: l.start_offset(),
            head: s[1],
            tok: s[2],
        })
    }

    /// The buffer from `kv_head`'s row at `slot` on (rows `tok` floats apart).
    fn from(&self, kv_head: usize, slot: usize) -> &'a [f32] {
        &self.data[self.at + kv_head * self.head + slot * self.tok..]
    }
}

/// Up to [`TILE`] keys at consecutive positions and slots.
#[derive(Debug, Clone, Copy)]
struct Tile {
    pos0: usize,
    slot0: usize,
    len: usize,
}

/// One task's unnormalised output rows with their running max and sum (base 2).
struct Partial {
    o: Vec<f32>,
    m: Vec<f32>,
    l: Vec<f32>,
}

/// Everything the tasks of one call share.
struct Job<'a> {
    q: &'a [f32],
    k: Rows<'a>,
    v: Rows<'a>,
    map: SlotMap,
    rule: AttnRule,
    q0: usize,
    c: usize,
    d: usize,
    /// Query heads per KV head.
    g: usize,
    /// Query positions per block.
    block: usize,
    isa: Isa,
}

impl Job<'_> {
    /// First chunk index and length of block `b`.
    fn block_span(&self, b: usize) -> (usize, usize) {
        let c0 = b * self.block;
        (c0, self.block.min(self.c - c0))
    }

    /// The key tiles that queries at positions `pa..pb` may see, in position order: the
    /// sink, the recent keys from the block's window start, and recent keys that are sink
    /// positions (a chunk whose span starts inside the sink holds them in the recent run).
    fn tiles(&self, pa: usize, pb: usize) -> Vec<Tile> {
        let m = self.map;
        let mut runs = Vec::with_capacity(3);
        if m.n_sink > 0 {
            runs.push((0, m.sink_slot0, m.n_sink));
        }
        let (rp0, rp1) = (m.recent_pos0, (m.recent_pos0 + m.n_recent).min(pb));
        let from = self.rule.first_needed(pa).max(rp0);
        let sinks_end = self.rule.sink.min(rp1).min(from);
        if sinks_end > rp0 {
            runs.push((rp0, m.recent_slot0, sinks_end - rp0));
        }
        if rp1 > from {
            runs.push((from, m.recent_slot0 + (from - rp0), rp1 - from));
        }
        runs.into_iter()
            .flat_map(|(pos0, slot0, len)| {
                (0..len).step_by(TILE).map(move |j| Tile {
                    pos0: pos0 + j,
                    slot0: slot0 + j,
                    len: TILE.min(len - j),
                })
            })
            .collect()
    }

    /// Whether every query of `pa..pb` may see every key of `t` (no mask needed).
    fn unmasked(&self, pa: usize, pb: usize, t: Tile) -> bool {
        let last = t.pos0 + t.len - 1;
        t.len == TILE
            && last <= pa
            && match self.rule.window {
                None => true,
                Some(w) => last < self.rule.sink || pb - 1 - t.pos0 < w,
            }
    }

    /// Split `split` of `splits` of the key tiles for KV head `kvh` at query block `b`.
    fn run(&self, kvh: usize, b: usize, split: usize, splits: usize) -> Partial {
        let (d, g) = (self.d, self.g);
        let (c0, len) = self.block_span(b);
        let (pa, pb) = (self.q0 + c0, self.q0 + c0 + len);
        let rows = g * len;
        // Queries packed row by row (head-major), pre-scaled so that softmax runs in base 2.
        let scale = std::f32::consts::LOG2_E / (d as f32).sqrt();
        let mut qp = Vec::with_capacity(rows * d);
        for gi in 0..g {
            let head = kvh * g + gi;
            for t in 0..len {
                let row = &self.q[(head * self.c + c0 + t) * d..][..d];
                qp.extend(row.iter().map(|x| x * scale));
            }
        }
        let mut part = Partial {
            o: vec![0f32; rows * d],
            m: vec![f32::NEG_INFINITY; rows],
            l: vec![0f32; rows],
        };
        let (mut kt, mut vt) = (vec![0f32; d * TILE], vec![0f32; TILE * d]);
        let (mut s, mut alpha) = (vec![0f32; rows * TILE], vec![1f32; rows]);
        let tiles = self.tiles(pa, pb);
        let n = tiles.len();
        for &tile in &tiles[split * n / splits..(split + 1) * n / splits] {
            let (k0, v0) = (self.k.from(kvh, tile.slot0), self.v.from(kvh, tile.slot0));
            simd::transpose_keys(self.isa, k0, self.k.tok, tile.len, d, &mut kt);
            for j in 0..tile.len {
                vt[j * d..][..d].copy_from_slice(&v0[j * self.v.tok..][..d]);
            }
            simd::scores(self.isa, &qp, rows, d, &kt, &mut s);
            if !self.unmasked(pa, pb, tile) {
                for (r, sr) in s.chunks_exact_mut(TILE).enumerate() {
                    let pos = pa + r % len;
                    for (j, x) in sr.iter_mut().enumerate() {
                        if j >= tile.len || !self.rule.allows(pos, tile.pos0 + j) {
                            *x = f32::NEG_INFINITY;
                        }
                    }
                }
            }
            for (r, sr) in s.chunks_exact_mut(TILE).enumerate() {
                alpha[r] = simd::softmax_step(self.isa, sr, &mut part.m[r], &mut part.l[r]);
            }
            simd::weighted_sum(self.isa, &s, &alpha, &vt, d, &mut part.o, rows);
        }
        part
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sliding layer's cost is O(sink + W) per query block, however long the cache: each
    /// block of a 4,096-token chunk (the bench's sliding prefill, W = 2048, K = 64) and a decode
    /// step visit only the tiles that hold sink and window keys, while full attention visits
    /// every key before the block.
    #[test]
    fn sliding_blocks_visit_only_sink_and_window_tiles() {
        let (d, n) = (8, 4096);
        let data = vec![0f32; n * d];
        let rows = || Rows {
            data: &data,
            at: 0,
            head: n * d,
            tok: d,
        };
        for (window, sink) in [(None, 0), (Some(2048), 64), (Some(512), 16)] {
            let rule = AttnRule { window, sink };
            // Prefill of the whole chunk at once (q0 = 0) and a decode step at position n - 1.
            for (q0, c) in [(0, n), (n - 1, 1)] {
                let span = rule.key_span(q0, q0 + c);
                let map = SlotMap::in_place(&span);
                let job = Job {
                    q: &[],
                    k: rows(),
                    v: rows(),
                    map,
                    rule,
                    q0,
                    c,
                    d,
                    g: 7,
                    block: (ROWS / 7).clamp(1, c),
                    isa: Isa::Scalar,
                };
                for b in 0..c.div_ceil(job.block) {
                    let (c0, len) = job.block_span(b);
                    let (pa, pb) = (q0 + c0, q0 + c0 + len);
                    let keys: usize = job.tiles(pa, pb).iter().map(|t| t.len).sum();
                    let want = match window {
                        None => pb,
                        // The sink, then the block's window: from pa + 1 − W to its last query.
                        Some(w) => pb.min(sink + w - 1 + len),
                    };
                    assert!(
                        keys <= want,
                        "{rule:?} block at {pa}..{pb}: {keys} keys, at most {want}"
                    );
                    if window.is_none() {
                        assert_eq!(keys, pb, "full attention sees every key before it");
                    }
                }
            }
        }
    }

    /// Against a plain f64 softmax over the keys `allows` admits, on every vector path this
    /// CPU has: decode steps and prefill chunks (several query blocks), GQA groups, head dims
    /// of the wide, narrow and scalar loops, windows, sinks, a sink inside the recent run, an
    /// evicted (gapped) layout, and key counts that end mid-tile.
    #[test]
    fn every_path_matches_a_plain_softmax() {
        let (kv, cap) = (2, 700);
        let dev = Device::Cpu;
        // (group, d, queries, keys before the chunk, window, sink, gap between sink and recent)
        let cases = [
            (1, 64, 1, 0, None, 0, 0),
            (3, 64, 1, 6, None, 0, 0),
            (7, 64, 1, 600, None, 0, 0),
            (2, 64, 1, 639, Some(100), 4, 0),
            (3, 64, 1, 499, Some(64), 4, 37),
            (7, 64, 40, 300, None, 0, 0),
            (3, 16, 77, 0, Some(9), 2, 0),
            (2, 64, 130, 200, Some(50), 4, 20),
            (1, 48, 33, 3, Some(5), 6, 0),
            (2, 8, 20, 40, Some(64), 0, 0),
            (7, 12, 5, 31, Some(1), 1, 0),
        ];
        for isa in Isa::available() {
            for &(group, d, c, before, window, sink, gap) in &cases {
                let h = kv * group;
                let q = Tensor::randn(0f32, 1.0, (1, h, c, d), &dev).unwrap();
                let k = Tensor::randn(0f32, 1.0, (1, kv, cap, d), &dev).unwrap();
                let v = Tensor::randn(0f32, 1.0, (1, kv, cap, d), &dev).unwrap();
                let rule = AttnRule { window, sink };
                // `before + c` tokens written; with a gap, positions from `sink` on sit `gap`
                // slots later (as after an eviction that kept the sink in place).
                let q0 = before;
                let span = rule.key_span(q0, q0 + c);
                let slot = |p: usize| if p < sink || gap == 0 { p } else { p + gap };
                let map = SlotMap {
                    n_sink: span.sink.len(),
                    sink_slot0: 0,
                    n_recent: span.recent.len(),
                    recent_slot0: slot(span.recent.start),
                    recent_pos0: span.recent.start,
                };
                if gap > 0 {
                    assert!(
                        span.recent.start >= sink,
                        "a gapped case keeps the sink apart"
                    );
                }
                let got: Vec<f32> = attention(&q, &k, &v, map, rule, q0, isa)
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1()
                    .unwrap();
                let f = |t: &Tensor| -> Vec<f32> { t.flatten_all().unwrap().to_vec1().unwrap() };
                let (qv, kv_, vv) = (f(&q), f(&k), f(&v));
                for head in 0..h {
                    let kvh = head / group;
                    for t in 0..c {
                        let pos = q0 + t;
                        let keys: Vec<usize> = span
                            .positions()
                            .filter(|&p| rule.allows(pos, p))
                            .map(slot)
                            .collect();
                        let s: Vec<f64> = keys
                            .iter()
                            .map(|&sl| {
                                (0..d)
                                    .map(|e| {
                                        qv[(head * c + t) * d + e] as f64
                                            * kv_[(kvh * cap + sl) * d + e] as f64
                                    })
                                    .sum::<f64>()
                                    / (d as f64).sqrt()
                            })
                            .collect();
                        let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                        let w: Vec<f64> = s.iter().map(|x| (x - m).exp()).collect();
                        let total: f64 = w.iter().sum();
                        for e in 0..d {
                            let want: f64 = keys
                                .iter()
                                .zip(&w)
                                .map(|(&sl, wi)| wi / total * vv[(kvh * cap + sl) * d + e] as f64)
                                .sum();
                            let got = got[(t * h + head) * d + e] as f64;
                            assert!(
                                (got - want).abs() < 1e-4,
                                "{isa:?} group {group} d {d} c {c} before {before} {rule:?} \
                                 head {head} t {t}: {got} vs {want}"
                            );
                        }
                    }
                }
            }
        }
    }
}
