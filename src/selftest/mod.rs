//! Recipe exactness on random tiny models: the chunked, cached, evicting engine path against
//! the dense-mask reference ([`Model::forward_reference`]) computed in f32 on the CPU.
//! `swaa-chat selftest [--device cuda]` runs it; the test suite runs the same grid on CPU.

use candle_core::{DType, Device, IndexOp, Tensor};
use serde::Serialize;

use crate::model::{Arch, Logits, Model, ModelConfig, RopeStyle, random_model};
use crate::recipe::{LayerSet, Phase, Recipe};

pub mod kernel;

/// A tiny model of each architecture, shaped to exercise GQA and interleaving.
pub fn tiny_config(arch: Arch) -> ModelConfig {
    let (heads, kv_heads) = match arch {
        Arch::Llama => (4, 2),
        Arch::Qwen2 => (4, 1),
        Arch::Qwen3 => (2, 2),
    };
    ModelConfig {
        arch,
        vocab: 96,
        hidden: 32,
        intermediate: 64,
        layers: 4,
        heads,
        kv_heads,
        head_dim: 16,
        rope_theta: 10_000.0,
        rms_eps: 1e-5,
        tied_embeddings: arch != Arch::Llama,
        ctx: 4096,
        rope_style: if arch == Arch::Llama {
            RopeStyle::Interleaved
        } else {
            RopeStyle::Halves
        },
        rope_scaling: None,
    }
}

/// A tiny model with head dim 64, the smallest the fused CUDA kernel runs.
pub fn tiny_config_d64() -> ModelConfig {
    ModelConfig {
        vocab: 256,
        hidden: 128,
        intermediate: 256,
        heads: 4,
        kv_heads: 2,
        head_dim: 64,
        ..tiny_config(Arch::Qwen2)
    }
}

/// One engine run: chunked prefill then greedy decode; every logit it produced.
pub struct Run {
    /// `[prompt + steps, vocab]`: prompt positions, then one row per decode step.
    pub logits: Tensor,
    /// The tokens that were fed: prompt, then the generated ones.
    pub tokens: Vec<u32>,
    pub phases: Vec<Phase>,
    /// Most tokens each layer held between steps.
    pub peak_tokens: Vec<usize>,
}

/// Prefills `prompt` in chunks of `chunk`, then decodes `steps` greedy tokens.
pub fn run_engine(
    model: &Model,
    recipe: &Recipe,
    prompt: &[u32],
    chunk: usize,
    steps: usize,
    evict: bool,
) -> crate::model::Result<Run> {
    run_engine_asked(model, recipe, prompt, 0, chunk, steps, evict)
}

/// [`run_engine`] with the last `question` prompt tokens in the question phase, prefilled
/// after the rest as the session does (each part in chunks of `chunk`).
pub fn run_engine_asked(
    model: &Model,
    recipe: &Recipe,
    prompt: &[u32],
    question: usize,
    chunk: usize,
    steps: usize,
    evict: bool,
) -> crate::model::Result<Run> {
    let mut cache = model.new_cache();
    cache.set_eviction(evict);
    let mut rows = Vec::new();
    let (document, asked) = prompt.split_at(prompt.len() - question.min(prompt.len()));
    for (part, phase) in document
        .chunks(chunk)
        .map(|p| (p, Phase::Prefill))
        .chain(asked.chunks(chunk).map(|p| (p, Phase::Question)))
    {
        rows.push(
            model
                .forward(part, &mut cache, recipe, phase, Logits::All)?
                .expect("all logits"),
        );
    }
    let mut tokens = prompt.to_vec();
    let mut phases = vec![Phase::Prefill; document.len()];
    phases.extend(vec![Phase::Question; asked.len()]);
    for _ in 0..steps {
        let last = rows.last().expect("a row");
        let last = if last.rank() == 2 {
            last.i(last.dim(0)? - 1)?
        } else {
            last.clone()
        };
        let next = last.argmax(0)?.to_scalar::<u32>()?;
        tokens.push(next);
        phases.push(Phase::Decode);
        rows.push(
            model
                .forward(&[next], &mut cache, recipe, Phase::Decode, Logits::Last)?
                .expect("logits")
                .unsqueeze(0)?,
        );
    }
    let logits = Tensor::cat(&rows, 0)?
        .to_device(&Device::Cpu)?
        .to_dtype(DType::F32)?;
    let peak_tokens = (0..model.config().layers)
        .map(|l| cache.peak_tokens(l))
        .collect();
    Ok(Run {
        logits,
        tokens,
        phases,
        peak_tokens,
    })
}

/// Largest |a - b| over all elements.
fn max_abs_diff(a: &Tensor, b: &Tensor) -> candle_core::Result<f32> {
    (a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()
}

#[derive(Debug, Clone, Serialize)]
pub struct Case {
    pub arch: String,
    pub recipe: String,
    pub chunk: usize,
    pub max_abs_diff: f32,
    /// For evicting layers: the most tokens held, against sink + window.
    pub peak_tokens: usize,
    pub bound: Option<usize>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub device: String,
    pub cases: Vec<Case>,
    pub tolerance: f32,
    pub failures: Vec<String>,
}

/// The grid of the Engine issue: window 1, 5, 16; sink 0, 3; FA decode on/off; interleave
/// none/odd/every:4; chunk 1, 7, 64, whole prompt — plus the full recipe — per architecture;
/// and FA over the question with each window, sink and FA decode (no interleave).
pub fn recipe_grid() -> Vec<Recipe> {
    let mut out = vec![Recipe::full()];
    for window in [1, 5, 16] {
        for sink in [0, 3] {
            for fa_decode in [false, true] {
                for full_layers in [LayerSet::None, LayerSet::Every(2), LayerSet::Every(4)] {
                    out.push(Recipe {
                        window: Some(window),
                        sink,
                        fa_decode,
                        full_layers,
                        ..Recipe::full()
                    });
                }
                out.push(Recipe {
                    window: Some(window),
                    sink,
                    fa_decode,
                    fa_question: true,
                    ..Recipe::full()
                });
            }
        }
    }
    out
}

/// Prompt tokens of the selftest that are its question: they run in [`Phase::Question`].
const QUESTION_TOKENS: usize = 9;

/// Runs every recipe × chunk on a tiny model of each architecture on `device`, comparing with
/// the f32 CPU dense reference. `tolerance` is the allowed max abs logit difference.
pub fn run(
    device: &Device,
    dtype: DType,
    tolerance: f32,
    seed: u64,
) -> crate::model::Result<Report> {
    let (prompt_len, steps) = (40, 20);
    let mut cases = Vec::new();
    let mut failures = Vec::new();
    for arch in [Arch::Llama, Arch::Qwen2, Arch::Qwen3] {
        let cfg = tiny_config(arch);
        let reference = random_model(&cfg, seed, &Device::Cpu, DType::F32)?;
        let model = random_model(&cfg, seed, device, dtype)?;
        let prompt: Vec<u32> = (0..prompt_len)
            .map(|i| ((i * 37 + seed as usize * 11) % cfg.vocab) as u32)
            .collect();
        for recipe in recipe_grid() {
            for chunk in [1, 7, 64, prompt_len] {
                let run = run_engine_asked(
                    &model,
                    &recipe,
                    &prompt,
                    QUESTION_TOKENS,
                    chunk,
                    steps,
                    true,
                )?;
                let expected = reference.forward_reference(&run.tokens, &run.phases, &recipe)?;
                // The last fed token has no row in `run` beyond the steps: compare what both have.
                let n = run.logits.dim(0)?;
                let diff = max_abs_diff(&run.logits, &expected.narrow(0, 0, n)?)?;
                let bound = recipe.window.map(|w| w + recipe.sink);
                let evicting: Vec<usize> = (0..cfg.layers)
                    .filter(|&l| recipe.layer_evicts(l))
                    .collect();
                let peak = evicting
                    .iter()
                    .map(|&l| run.peak_tokens[l])
                    .max()
                    .unwrap_or(0);
                let case = Case {
                    arch: arch.to_string(),
                    recipe: recipe.describe(),
                    chunk,
                    max_abs_diff: diff,
                    peak_tokens: peak,
                    bound: bound.filter(|_| !evicting.is_empty()),
                };
                if diff.is_nan() || diff > tolerance {
                    failures.push(format!(
                        "{} {} chunk {chunk}: max abs diff {diff:e} > {tolerance:e}",
                        case.arch, case.recipe
                    ));
                }
                if let Some(b) = case.bound.filter(|&b| peak > b) {
                    failures.push(format!(
                        "{} {} chunk {chunk}: sliding layer held {peak} > {b} tokens",
                        case.arch, case.recipe
                    ));
                }
                cases.push(case);
            }
        }
    }
    Ok(Report {
        device: crate::model::device_name(device),
        cases,
        tolerance,
        failures,
    })
}

/// The engine with the fused kernel against the candle-ops path, both bf16 on `device`, over
/// the recipe grid and chunk sizes: slot maps, eviction and decode through the kernel.
/// `max_abs_diff` is relative here: max |fused − ops| / max |ops|.
pub fn fused_vs_ops(device: &Device, tolerance: f32, seed: u64) -> crate::model::Result<Report> {
    let cfg = tiny_config_d64();
    let fused = random_model(&cfg, seed, device, DType::BF16)?;
    let mut ops = fused.clone();
    ops.set_fused_attention(false);
    let prompt: Vec<u32> = (0..40)
        .map(|i| ((i * 37 + seed as usize * 11) % cfg.vocab) as u32)
        .collect();
    let (mut cases, mut failures) = (Vec::new(), Vec::new());
    for recipe in recipe_grid() {
        for chunk in [1, 7, 40] {
            let a = run_engine(&fused, &recipe, &prompt, chunk, 20, true)?;
            // Feed the ops path the same tokens, so a near-tie cannot fork the two runs.
            let b = replay(&ops, &recipe, &a.tokens, prompt.len(), chunk)?;
            let scale = b.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
            let diff = max_abs_diff(&a.logits, &b)? / scale.max(1e-6);
            if diff.is_nan() || diff > tolerance {
                failures.push(format!(
                    "fused vs ops {} chunk {chunk}: relative diff {diff:e} > {tolerance:e}",
                    recipe.describe()
                ));
            }
            cases.push(Case {
                arch: "qwen2-d64".into(),
                recipe: recipe.describe(),
                chunk,
                max_abs_diff: diff,
                peak_tokens: 0,
                bound: None,
            });
        }
    }
    Ok(Report {
        device: crate::model::device_name(device),
        cases,
        tolerance,
        failures,
    })
}

/// Logits of a fixed token sequence: the prompt prefilled in chunks, the rest decoded.
fn replay(
    model: &Model,
    recipe: &Recipe,
    tokens: &[u32],
    prompt: usize,
    chunk: usize,
) -> crate::model::Result<Tensor> {
    let mut cache = model.new_cache();
    let mut rows = Vec::new();
    for part in tokens[..prompt].chunks(chunk) {
        rows.push(
            model
                .forward(part, &mut cache, recipe, Phase::Prefill, Logits::All)?
                .expect("all logits"),
        );
    }
    for &t in &tokens[prompt..] {
        rows.push(
            model
                .forward(&[t], &mut cache, recipe, Phase::Decode, Logits::Last)?
                .expect("logits")
                .unsqueeze(0)?,
        );
    }
    Ok(Tensor::cat(&rows, 0)?
        .to_device(&Device::Cpu)?
        .to_dtype(DType::F32)?)
}
