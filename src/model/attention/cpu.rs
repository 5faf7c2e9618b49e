//! Decode attention on the CPU: each head's one query over the keys the recipe allows, read
//! in place from the KV cache through a [`SlotMap`]. The candle-ops path gathers the span into
//! new tensors, copies V to a contiguous one and runs batched one-row matmuls; on smollm2 that
//! took decode from 29 tok/s at 1k context to 10 at 4k on a 2-core machine. Prefill chunks
//! keep the candle path, where the matmuls are large enough to pay.

use candle_core::{CpuStorage, Device, Storage, Tensor, bail};
use rayon::prelude::*;

use super::fused::SlotMap;
use crate::recipe::AttnRule;

/// Attention of `q: [1, H, 1, d]` at position `q0` over the keys `map` picks from the cache
/// buffers `k, v: [1, KV, capacity, d]`, under `rule`. Returns `[1, 1, H, d]`, token-major like
/// the CUDA kernel's output.
pub fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    map: SlotMap,
    rule: AttnRule,
    q0: usize,
) -> candle_core::Result<Tensor> {
    let (_, h, c, d) = q.dims4()?;
    let (_, kv, cap, kd) = k.dims4()?;
    if c != 1 || kd != d || v.dims() != k.dims() || h % kv != 0 {
        bail!(
            "CPU decode attention: q {:?} k {:?} v {:?}",
            q.dims(),
            k.dims(),
            v.dims()
        );
    }
    let q: Vec<f32> = q.flatten_all()?.to_vec1()?;
    // The slot of every key the query sees, in position order.
    let keys: Vec<usize> = (0..map.n_sink + map.n_recent)
        .map(|j| {
            if j < map.n_sink {
                (j, map.sink_slot0 + j)
            } else {
                let t = j - map.n_sink;
                (map.recent_pos0 + t, map.recent_slot0 + t)
            }
        })
        .filter(|&(pos, _)| rule.allows(q0, pos))
        .map(|(_, slot)| slot)
        .collect();
    if keys.iter().any(|&s| s >= cap) {
        bail!("CPU decode attention: slot map {map:?} outside a cache of {cap} slots");
    }
    let (ks, kl) = k.storage_and_layout();
    let (vs, vl) = v.storage_and_layout();
    let (Storage::Cpu(CpuStorage::F32(kb)), Storage::Cpu(CpuStorage::F32(vb))) = (&*ks, &*vs)
    else {
        bail!("CPU decode attention needs f32 K and V on the CPU");
    };
    let rows = |l: &candle_core::Layout| -> candle_core::Result<(usize, usize, usize)> {
        let s = l.stride();
        if s[3] != 1 {
            bail!("CPU decode attention: cache rows must be contiguous");
        }
        Ok((l.start_offset(), s[1], s[2]))
    };
    let (k_at, k_head, k_tok) = rows(kl)?;
    let (v_at, v_head, v_tok) = rows(vl)?;
    let (group, scale) = (h / kv, 1.0 / (d as f32).sqrt());
    let mut out = vec![0f32; h * d];
    // Heads in parallel on candle's own thread pool (threads of our own would contend with
    // its spinning workers on a small machine).
    out.par_chunks_mut(d).enumerate().for_each(|(head, o)| {
        let kvh = head / group;
        let qrow = &q[head * d..][..d];
        let mut scores: Vec<f32> = keys
            .iter()
            .map(|&slot| dot(qrow, &kb[k_at + kvh * k_head + slot * k_tok..][..d]) * scale)
            .collect();
        let max = scores.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
        let mut sum = 0f32;
        for s in scores.iter_mut() {
            *s = (*s - max).exp();
            sum += *s;
        }
        for (&p, &slot) in scores.iter().zip(&keys) {
            let vrow = &vb[v_at + kvh * v_head + slot * v_tok..][..d];
            for (acc, x) in o.iter_mut().zip(vrow) {
                *acc += p * x;
            }
        }
        let inv = if sum > 0.0 { 1.0 / sum } else { 0.0 };
        o.iter_mut().for_each(|x| *x *= inv);
    });
    Tensor::from_vec(out, (1, 1, h, d), &Device::Cpu)
}

/// Eight partial sums, so the compiler vectorises the loop (a single f32 sum must keep its
/// order).
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for ((s, x), y) in acc.iter_mut().zip(x).zip(y) {
            *s += x * y;
        }
    }
    acc.iter().sum::<f32>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Against a plain f64 softmax over the same keys, for key counts across several tiles
    /// of the vector loops, GQA groups, windows and an evicted (gapped) layout.
    #[test]
    fn matches_a_plain_softmax() {
        let (kv, d, cap) = (3, 64, 700);
        let dev = Device::Cpu;
        for (group, n, window, gap) in [
            (1, 1, None, 0),
            (3, 7, None, 0),
            (3, 301, None, 0),
            (3, 303, None, 0),
            (2, 640, Some(100), 0),
            (3, 500, Some(64), 37),
        ] {
            let h = kv * group;
            let q = Tensor::randn(0f32, 1.0, (1, h, 1, d), &dev).unwrap();
            let k = Tensor::randn(0f32, 1.0, (1, kv, cap, d), &dev).unwrap();
            let v = Tensor::randn(0f32, 1.0, (1, kv, cap, d), &dev).unwrap();
            let rule = AttnRule { window, sink: 4 };
            let q0 = n - 1 + gap;
            // Sink positions 0..4 at slots 0..4, the rest from slot 4 + gap.
            let map = SlotMap {
                n_sink: 4.min(n),
                sink_slot0: 0,
                n_recent: n.saturating_sub(4),
                recent_slot0: 4 + gap,
                recent_pos0: 4 + gap,
            };
            let got: Vec<f32> = attention(&q, &k, &v, map, rule, q0)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            let (qv, kv_, vv): (Vec<f32>, Vec<f32>, Vec<f32>) = (
                q.flatten_all().unwrap().to_vec1().unwrap(),
                k.flatten_all().unwrap().to_vec1().unwrap(),
                v.flatten_all().unwrap().to_vec1().unwrap(),
            );
            for head in 0..h {
                let kvh = head / group;
                let keys: Vec<(usize, usize)> = (0..4.min(n))
                    .map(|j| (j, j))
                    .chain((0..n.saturating_sub(4)).map(|t| (4 + gap + t, 4 + gap + t)))
                    .filter(|&(p, _)| rule.allows(q0, p))
                    .collect();
                let s: Vec<f64> = keys
                    .iter()
                    .map(|&(_, slot)| {
                        (0..d)
                            .map(|e| {
                                qv[head * d + e] as f64 * kv_[(kvh * cap + slot) * d + e] as f64
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
                        .map(|(&(_, slot), wi)| wi / total * vv[(kvh * cap + slot) * d + e] as f64)
                        .sum();
                    let diff = (got[head * d + e] as f64 - want).abs();
                    assert!(diff < 1e-4, "group {group} n {n} head {head}: {diff}");
                }
            }
        }
    }
}
