//! The fused attention kernel against a plain f64 reference built from [`AttnRule::allows`]:
//! random bf16 inputs drawn fresh each run, the output poisoned with NaN before the kernel
//! writes it, keys read through both cache layouts (slot = position, and an evicted cache
//! with a gap between sink and recent slots).

use candle_core::{DType, Device, IndexOp, Tensor};
use serde::Serialize;

use crate::model::attention::fused::{self, Launch, SlotMap};
use crate::recipe::AttnRule;

/// KV heads of every case; query heads = KV × group.
const KV_HEADS: usize = 2;
/// Junk slots between sink and recent keys in the evicted layout.
const GAP: usize = 5;

#[derive(Debug, Clone, Copy, Serialize)]
pub struct KernelSpec {
    pub head_dim: usize,
    pub group: usize,
    pub window: Option<usize>,
    pub sink: usize,
    pub chunk: usize,
    /// Keys before the chunk: the chunk's queries are positions `prior..prior + chunk`.
    pub prior: usize,
    pub evicted: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct KernelCase {
    #[serde(flatten)]
    pub spec: KernelSpec,
    pub rows_checked: usize,
    /// max |kernel − reference| / max |reference| over the checked rows.
    pub rel_err: f32,
    /// Output elements still NaN (never written) — must be 0.
    pub unwritten: usize,
}

/// The grid of the CUDA-speed issue: window 1, 64, 2048 and full; sink 0, 4, 64; chunk 1,
/// 17, 2048; GQA 1, 6, 7; head dims 64 and 128 — at 3,000 prior keys — and a few cases whose
/// chunk ends at 131,072 keys.
pub fn kernel_grid() -> Vec<KernelSpec> {
    let mut out = Vec::new();
    let mut n = 0usize;
    for head_dim in [64, 128] {
        for group in [1, 6, 7] {
            for window in [Some(1), Some(64), Some(2048), None] {
                let sinks: &[usize] = if window.is_some() { &[0, 4, 64] } else { &[0] };
                for &sink in sinks {
                    for chunk in [1, 17, 2048] {
                        n += 1;
                        out.push(KernelSpec {
                            head_dim,
                            group,
                            window,
                            sink,
                            chunk,
                            prior: 3000,
                            // Every other windowed case reads an evicted cache.
                            evicted: window.is_some() && n.is_multiple_of(2),
                        });
                    }
                }
            }
        }
    }
    let long = |head_dim, group, window, sink, chunk, evicted| KernelSpec {
        head_dim,
        group,
        window,
        sink,
        chunk,
        prior: 131_072 - chunk,
        evicted,
    };
    out.extend([
        long(128, 6, Some(2048), 64, 2048, false),
        long(128, 6, Some(2048), 64, 1, true),
        long(128, 6, None, 0, 2048, false),
        long(128, 7, None, 0, 1, false),
        long(64, 1, Some(64), 4, 17, true),
        long(64, 7, Some(2048), 64, 2048, true),
        long(128, 6, Some(1), 0, 2048, false),
    ]);
    out
}

/// Rounds through bf16, so the reference sees exactly the kernel's inputs.
fn bf16_round(t: Tensor) -> candle_core::Result<Tensor> {
    t.to_dtype(DType::BF16)?.to_dtype(DType::F32)
}

/// Runs one case on `device` (CUDA) and compares with the reference on the CPU.
pub fn check(device: &Device, s: &KernelSpec) -> crate::model::Result<KernelCase> {
    let cpu = Device::Cpu;
    let (d, heads, total) = (s.head_dim, KV_HEADS * s.group, s.prior + s.chunk);
    let rule = AttnRule {
        window: s.window,
        sink: s.sink,
    };
    let q = bf16_round(Tensor::randn(0f32, 1.0, (heads, s.chunk, d), &cpu)?)?;
    let k = bf16_round(Tensor::randn(0f32, 1.0, (KV_HEADS, total, d), &cpu)?)?;
    let v = bf16_round(Tensor::randn(0f32, 1.0, (KV_HEADS, total, d), &cpu)?)?;

    // Lay the span's keys out as the cache would hold them.
    let span = rule.key_span(s.prior, total);
    let (kbuf, vbuf, map) = if s.evicted {
        let junk = Tensor::full(1e3f32, (KV_HEADS, GAP, d), &cpu)?;
        let lay = |t: &Tensor| -> candle_core::Result<Tensor> {
            Tensor::cat(
                &[
                    t.narrow(1, 0, span.sink.len())?,
                    junk.clone(),
                    t.narrow(1, span.recent.start, span.recent.len())?,
                    junk.clone(),
                ],
                1,
            )
        };
        let map = SlotMap {
            n_sink: span.sink.len(),
            sink_slot0: 0,
            n_recent: span.recent.len(),
            recent_slot0: span.sink.len() + GAP,
            recent_pos0: span.recent.start,
        };
        (lay(&k)?, lay(&v)?, map)
    } else {
        let map = SlotMap::in_place(&span);
        (k.clone(), v.clone(), map)
    };
    let up = |t: &Tensor| -> candle_core::Result<Tensor> {
        t.to_dtype(DType::BF16)?.unsqueeze(0)?.to_device(device)
    };
    let (qd, kd, vd) = (up(&q)?, up(&kbuf)?, up(&vbuf)?);
    // Every block shape on every case: the engine picks by rows per KV head, which one case
    // alone would never cover.
    let outs = [1, 4]
        .into_iter()
        .map(|warps| -> crate::model::Result<Vec<f32>> {
            let launch = Launch {
                poison: true,
                warps: Some(warps),
                ..Default::default()
            };
            let out = fused::attention(&qd, &kd, &vd, map, rule, s.prior, launch)?;
            Ok(out.flatten_all()?.to_dtype(DType::F32)?.to_vec1()?)
        })
        .collect::<crate::model::Result<Vec<_>>>()?;
    let unwritten = outs.iter().flatten().filter(|x| x.is_nan()).count();

    // Every query row when few, else the first, the last and a spread between.
    let rows: Vec<usize> = if s.chunk <= 32 {
        (0..s.chunk).collect()
    } else {
        (0..24).map(|i| i * (s.chunk - 1) / 23).collect()
    };
    let q_v: Vec<f32> = q.flatten_all()?.to_vec1()?;
    let k_v: Vec<f32> = k.flatten_all()?.to_vec1()?;
    let v_v: Vec<f32> = v.flatten_all()?.to_vec1()?;
    let jobs: Vec<(usize, usize)> = rows
        .iter()
        .flat_map(|&i| (0..heads).map(move |h| (i, h)))
        .collect();
    let threads = std::thread::available_parallelism().map_or(4, |n| n.get());
    let per = jobs.len().div_ceil(threads);
    let results: Vec<(f64, f64)> = std::thread::scope(|scope| {
        let handles: Vec<_> = jobs
            .chunks(per.max(1))
            .map(|part| {
                let (q_v, k_v, v_v, outs) = (&q_v, &k_v, &v_v, &outs);
                scope.spawn(move || {
                    part.iter()
                        .map(|&(i, h)| {
                            let qrow = &q_v[(h * s.chunk + i) * d..][..d];
                            let kvh = h / s.group;
                            let reference =
                                reference_row(qrow, k_v, v_v, kvh, total, d, rule, s.prior + i);
                            let err = outs
                                .iter()
                                .flat_map(|out| {
                                    let got = &out[(i * heads + h) * d..][..d];
                                    reference
                                        .iter()
                                        .zip(got)
                                        .map(|(r, g)| (r - *g as f64).abs())
                                })
                                .fold(0f64, f64::max);
                            let mag = reference.iter().fold(0f64, |m, r| m.max(r.abs()));
                            (err, mag)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("reference thread"))
            .collect()
    });
    let err = results.iter().fold(0f64, |m, r| m.max(r.0));
    let mag = results.iter().fold(0f64, |m, r| m.max(r.1));
    Ok(KernelCase {
        spec: *s,
        rows_checked: rows.len(),
        rel_err: (err / mag.max(1e-12)) as f32,
        unwritten,
    })
}

/// One output row: softmax over every key position the rule allows, in f64.
#[allow(clippy::too_many_arguments)]
fn reference_row(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    kvh: usize,
    total: usize,
    d: usize,
    rule: AttnRule,
    qpos: usize,
) -> Vec<f64> {
    let scale = 1.0 / (d as f64).sqrt();
    let keys: Vec<usize> = (0..=qpos).filter(|&j| rule.allows(qpos, j)).collect();
    let scores: Vec<f64> = keys
        .iter()
        .map(|&j| {
            let krow = &k[(kvh * total + j) * d..][..d];
            q.iter()
                .zip(krow)
                .map(|(a, b)| *a as f64 * *b as f64)
                .sum::<f64>()
                * scale
        })
        .collect();
    let m = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let w: Vec<f64> = scores.iter().map(|s| (s - m).exp()).collect();
    let sum: f64 = w.iter().sum();
    let mut o = vec![0f64; d];
    for (&j, wj) in keys.iter().zip(&w) {
        let vrow = &v[(kvh * total + j) * d..][..d];
        for (acc, x) in o.iter_mut().zip(vrow) {
            *acc += wj / sum * *x as f64;
        }
    }
    o
}

/// Greedy decoding of a random-weight model on `device` (bf16, fused kernel) against the CPU
/// (f32): how many of `steps` tokens agree, and — where they first differ — the CPU's margin
/// between its top two logits, which bounds the disagreement to near-ties.
#[derive(Debug, Clone, Serialize)]
pub struct GreedyCheck {
    pub steps: usize,
    pub agreeing_prefix: usize,
    pub cpu_margin_at_divergence: Option<f32>,
    /// The same comparison with f32 on the device (candle-ops path): must agree throughout.
    pub f32_agreeing_prefix: usize,
}

pub fn greedy(device: &Device, steps: usize, seed: u64) -> crate::model::Result<GreedyCheck> {
    use crate::model::random_model;
    use crate::recipe::Recipe;
    let cfg = super::tiny_config_d64();
    let prompt: Vec<u32> = (0..64).map(|i| ((i * 31 + 5) % cfg.vocab) as u32).collect();
    let recipe = Recipe::preset(
        crate::recipe::Preset::Swaa,
        crate::recipe::RecipeDefaults {
            window: 16,
            sink: 4,
        },
    );
    let cpu = random_model(&cfg, seed, &Device::Cpu, DType::F32)?;
    let reference = super::run_engine(&cpu, &recipe, &prompt, 16, steps, true)?;
    let agree = |run: &super::Run| {
        run.tokens[prompt.len()..]
            .iter()
            .zip(&reference.tokens[prompt.len()..])
            .take_while(|(a, b)| a == b)
            .count()
    };
    let bf = random_model(&cfg, seed, device, DType::BF16)?;
    let run = super::run_engine(&bf, &recipe, &prompt, 16, steps, true)?;
    let prefix = agree(&run);
    let margin = if prefix < steps {
        // Row of the logits that chose token `prefix` of the generated ones.
        let row: Vec<f32> = reference.logits.i(prompt.len() - 1 + prefix)?.to_vec1()?;
        let mut sorted = row.clone();
        sorted.sort_by(|a, b| b.total_cmp(a));
        Some(sorted[0] - sorted[1])
    } else {
        None
    };
    let f32_model = random_model(&cfg, seed, device, DType::F32)?;
    let f32_run = super::run_engine(&f32_model, &recipe, &prompt, 16, steps, true)?;
    Ok(GreedyCheck {
        steps,
        agreeing_prefix: prefix,
        cpu_margin_at_divergence: margin,
        f32_agreeing_prefix: agree(&f32_run),
    })
}

/// Decode through a replayed CUDA graph against plain forward passes, for one recipe: the
/// same tokens fed to both, logits compared at every step. Long enough that the caches grow,
/// slide and compact, so steps fall back to plain passes and graphs are captured again.
#[derive(Debug, Clone, Serialize)]
pub struct GraphCase {
    pub recipe: String,
    pub steps: usize,
    pub stats: crate::model::GraphStats,
    /// max |graph − plain| / max |plain| over every step's logits.
    pub rel_diff: f32,
}

pub fn graph_decode(device: &Device, steps: usize) -> crate::model::Result<Vec<GraphCase>> {
    use crate::model::{DecodeGraphs, Logits, random_model};
    use crate::recipe::{Phase, Recipe, RecipeDefaults};
    let cfg = super::tiny_config_d64();
    let model = random_model(&cfg, 5, device, DType::BF16)?;
    let prompt: Vec<u32> = (0..40)
        .map(|i| ((i * 37 + 11) % cfg.vocab) as u32)
        .collect();
    let defaults = RecipeDefaults {
        window: 16,
        sink: 4,
    };
    use crate::recipe::Preset;
    [Preset::Full, Preset::Swa, Preset::SwaFadec, Preset::Swaa]
        .into_iter()
        .map(|preset| {
            let name = preset.name();
            let recipe = Recipe::preset(preset, defaults);
            let mut plain = model.new_cache();
            let first = model
                .forward(&prompt, &mut plain, &recipe, Phase::Prefill, Logits::Last)?
                .expect("logits");
            let mut graphed = plain.fork()?;
            let mut graphs = DecodeGraphs::new(true);
            let mut token = first.argmax(0)?.to_scalar::<u32>()?;
            let (mut err, mut mag) = (0f32, 0f32);
            for _ in 0..steps {
                let a = model
                    .forward(&[token], &mut plain, &recipe, Phase::Decode, Logits::Last)?
                    .expect("logits");
                let b = model.decode_step(token, &mut graphed, &recipe, &mut graphs)?;
                let (av, bv): (Vec<f32>, Vec<f32>) = (a.to_vec1()?, b.to_vec1()?);
                for (x, y) in av.iter().zip(&bv) {
                    err = err.max((x - y).abs());
                    mag = mag.max(x.abs());
                }
                token = a.argmax(0)?.to_scalar::<u32>()?;
            }
            Ok(GraphCase {
                recipe: name.into(),
                steps,
                stats: graphs.stats,
                rel_diff: err / mag.max(1e-12),
            })
        })
        .collect()
}

/// The argmax kernel against candle's argmax on the CPU: vocabularies of 1 to 151,936, with
/// the maximum repeated before and after its first place (ties go to the first). Returns the
/// cases checked and how many disagreed.
pub fn argmax_check(device: &Device) -> crate::model::Result<(usize, usize)> {
    let (mut cases, mut wrong) = (0, 0);
    for n in [1usize, 7, 1000, 151_936] {
        for trial in 0..4 {
            let mut v: Vec<f32> = Tensor::randn(0f32, 1.0, n, &Device::Cpu)?.to_vec1()?;
            let top = v.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
            if trial > 0 {
                // Ties at the ends and in between.
                let at = [0, n / 2, n - 1][trial - 1];
                v[at] = top;
            }
            let cpu = Tensor::new(v.as_slice(), &Device::Cpu)?
                .argmax(0)?
                .to_scalar::<u32>()?;
            let gpu = crate::model::argmax(&Tensor::new(v.as_slice(), device)?)?;
            cases += 1;
            wrong += usize::from(cpu != gpu);
        }
    }
    Ok((cases, wrong))
}
