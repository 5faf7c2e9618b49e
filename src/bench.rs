//! `swaa-chat bench`: prefill and decode throughput per recipe and context length, with the
//! achieved TFLOP/s and GB/s so the distance to the hardware ceiling shows in every run.

use std::time::Instant;

use candle_core::Device;
use serde::Serialize;

use crate::model::{DecodeGraphs, GraphStats, Logits, Model};
use crate::recipe::{Phase, Recipe};
use crate::units::mib_number;

#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub tokens: Vec<usize>,
    pub recipes: Vec<(String, Recipe)>,
    /// Decode steps measured after each prefill.
    pub decode: usize,
    pub chunk: usize,
    pub seed: u64,
    /// Decode through a replayed CUDA graph where the model allows (`Model::decode_step`).
    pub decode_graph: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct BenchRow {
    pub recipe: String,
    pub tokens: usize,
    pub prefill_s: f64,
    pub prefill_tok_s: f64,
    /// Useful matmul work (weights + attended keys) per second.
    pub prefill_tflops: f64,
    pub decode_tok_s: f64,
    /// Weights + K/V read per decode step, per second.
    pub decode_gbs: f64,
    /// Milliseconds per decode step spent issuing work on the host (inside `forward`, before
    /// the logits are read back): near the whole step time means launch-bound, not GPU-bound.
    pub decode_host_ms: f64,
    /// How the decode steps ran (graph captures and replays, plain passes).
    pub decode_steps: GraphStats,
    pub peak_kv_bytes: usize,
    pub kv_bytes_held: usize,
    /// Device memory in use, the larger of two samples after prefill and after decode
    /// (CUDA: from the driver, so it includes the allocator's reserve; CPU: peak resident set).
    pub peak_device_bytes: Option<u64>,
}

/// Keys a query at position `q` attends in a layer with this rule (sink + window or all).
fn keys_attended(rule: crate::recipe::AttnRule, q: usize) -> usize {
    let span = rule.key_span(q, q + 1);
    span.len()
}

/// FLOPs of attention (QKᵀ and PV, 2 per multiply-add) for queries `q0..q1` in every layer.
fn attention_flops(model: &Model, recipe: &Recipe, phase: Phase, q0: usize, q1: usize) -> f64 {
    let cfg = model.config();
    let per_key = 4.0 * (cfg.heads * cfg.head_dim) as f64;
    (0..cfg.layers)
        .map(|l| {
            let rule = recipe.rule(l, phase);
            // Closed form per rule: sum over q of min(q+1, W) + sink part; a loop is fast enough.
            (q0..q1).map(|q| keys_attended(rule, q) as f64).sum::<f64>() * per_key
        })
        .sum()
}

pub fn device_memory_in_use(device: &Device) -> Option<u64> {
    match device {
        #[cfg(feature = "cuda")]
        Device::Cuda(d) => {
            // Includes other processes' use of the GPU; on a dedicated GPU that is ours.
            let (free, total) = d.cuda_stream().context().mem_get_info().ok()?;
            Some((total - free) as u64)
        }
        Device::Cpu => {
            let status = std::fs::read_to_string("/proc/self/status").ok()?;
            let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
            let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kb * 1024)
        }
        _ => None,
    }
}

/// Runs every recipe × length on `model`; `progress` hears a line per measurement and
/// `on_row` each row as soon as it is measured (long runs show results as they go).
pub fn run(
    model: &Model,
    opts: &BenchOptions,
    progress: &mut dyn FnMut(&str),
    on_row: &mut dyn FnMut(&BenchRow),
) -> crate::model::Result<Vec<BenchRow>> {
    let cfg = *model.config();
    let device = model.device().clone();
    // Warm-up: the first use of each GPU kernel JIT-compiles it and the BLAS library sets up
    // (seconds on CUDA); none of that belongs in the first row's numbers.
    let t = Instant::now();
    for (_, recipe) in &opts.recipes {
        let mut cache = model.new_cache();
        // Three chunks past the window: eviction and compaction run too.
        let n = 3 * opts.chunk + recipe.window.unwrap_or(0);
        let ids: Vec<u32> = (0..n as u32).map(|i| i % cfg.vocab as u32).collect();
        for part in ids.chunks(opts.chunk) {
            model.forward(part, &mut cache, recipe, Phase::Prefill, Logits::Skip)?;
        }
        for _ in 0..2 {
            model.forward(&[1], &mut cache, recipe, Phase::Decode, Logits::Last)?;
        }
    }
    device.synchronize()?;
    progress(&format!(
        "warm-up (kernel compilation, library setup): {:.1} s",
        t.elapsed().as_secs_f64()
    ));
    let mut rows = Vec::new();
    for &n in &opts.tokens {
        // Deterministic ids spread over the vocabulary: throughput does not depend on them.
        let ids: Vec<u32> = (0..n as u64)
            .map(|i| {
                ((i.wrapping_mul(2654435761).wrapping_add(opts.seed)) % cfg.vocab as u64) as u32
            })
            .collect();
        for (name, recipe) in &opts.recipes {
            progress(&format!("{name} @ {n} tokens: prefill"));
            let mut cache = model.new_cache();
            for l in 0..cfg.layers {
                cache.reserve(l, recipe.cache_tokens(l, n + opts.decode + 1, opts.chunk))?;
            }
            device.synchronize()?;
            let t0 = Instant::now();
            let mut logits = None;
            for (i, part) in ids.chunks(opts.chunk).enumerate() {
                let last = (i + 1) * opts.chunk >= n;
                logits = model.forward(
                    part,
                    &mut cache,
                    recipe,
                    Phase::Prefill,
                    if last { Logits::Last } else { Logits::Skip },
                )?;
            }
            device.synchronize()?;
            let prefill_s = t0.elapsed().as_secs_f64();
            let mut peak_kv = cache.stats().peak_bytes_allocated;
            let mem_after_prefill = device_memory_in_use(&device);
            let flops = cfg.dense_flops_per_token() * n as f64
                + attention_flops(model, recipe, Phase::Prefill, 0, n);

            progress(&format!("{name} @ {n} tokens: decode"));
            let mut next = logits
                .map(|l| l.argmax(0).and_then(|t| t.to_scalar::<u32>()))
                .transpose()?
                .unwrap_or(0);
            let kv_token = cfg.kv_bytes_per_token_layer(model.dtype().size_in_bytes());
            let mut bytes = 0f64;
            let mut host_s = 0f64;
            let mut graphs = DecodeGraphs::new(opts.decode_graph);
            device.synchronize()?;
            let t1 = Instant::now();
            for _ in 0..opts.decode {
                let q = cache.next_pos();
                let keys: usize = (0..cfg.layers)
                    .map(|l| keys_attended(recipe.rule(l, Phase::Decode), q))
                    .sum();
                bytes += (model.weight_bytes() + keys * kv_token) as f64;
                let issued = Instant::now();
                let l = model.decode_step(next, &mut cache, recipe, &mut graphs)?;
                host_s += issued.elapsed().as_secs_f64();
                next = crate::model::argmax(&l)?;
            }
            device.synchronize()?;
            let decode_s = t1.elapsed().as_secs_f64();
            let stats = cache.stats();
            peak_kv = peak_kv.max(stats.peak_bytes_allocated);
            let row = BenchRow {
                recipe: name.clone(),
                tokens: n,
                prefill_s,
                prefill_tok_s: n as f64 / prefill_s,
                prefill_tflops: flops / prefill_s / 1e12,
                decode_tok_s: opts.decode as f64 / decode_s.max(1e-12),
                decode_gbs: bytes / decode_s.max(1e-12) / 1e9,
                decode_host_ms: host_s * 1e3 / opts.decode.max(1) as f64,
                decode_steps: graphs.stats,
                peak_kv_bytes: peak_kv,
                kv_bytes_held: stats.bytes_held,
                peak_device_bytes: device_memory_in_use(&device).max(mem_after_prefill),
            };
            on_row(&row);
            rows.push(row);
        }
    }
    Ok(rows)
}

/// "replays/captures/plain" where a graph ran, else "–".
fn graph_cell(g: &GraphStats) -> String {
    if g.captures + g.replays == 0 {
        "–".into()
    } else {
        format!("{}r {}c {}p", g.replays, g.captures, g.plain)
    }
}

pub const TABLE_HEADER: &str = "| recipe | tokens | prefill s | prefill tok/s | TFLOP/s | decode tok/s | decode GB/s | decode host ms/tok | decode graph | peak KV MiB | KV held MiB | device mem MiB |\n\
                                |---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|";

/// One Markdown table row.
pub fn table_row(r: &BenchRow) -> String {
    format!(
        "| {} | {} | {:.3} | {:.0} | {:.2} | {:.1} | {:.1} | {:.2} | {} | {} | {} | {} |",
        r.recipe,
        r.tokens,
        r.prefill_s,
        r.prefill_tok_s,
        r.prefill_tflops,
        r.decode_tok_s,
        r.decode_gbs,
        r.decode_host_ms,
        graph_cell(&r.decode_steps),
        mib_number(r.peak_kv_bytes),
        mib_number(r.kv_bytes_held),
        r.peak_device_bytes
            .map_or("-".into(), |b| mib_number(b as usize)),
    )
}
