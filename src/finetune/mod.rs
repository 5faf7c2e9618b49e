//! `swaa-chat finetune`: SWA-aware fine-tuning (the SWAA paper's fifth strategy). A LoRA
//! adapter on q/k/v is trained with the recipe applied: each sample's prompt (document and
//! question) under the recipe's prefill/question rules, its answer under the decode rule, the
//! answer being the full-attention model's own, kept when correct ([`data`]).
//!
//! Memory: the frozen base is dense (f32 on the CPU, bf16 on CUDA), and the backward pass is
//! checkpointed per layer ([`loss_and_grads`]): a forward without a graph keeps each layer's
//! input (`T × hidden`), then each layer is run again with its graph, from the last, and
//! differentiated against the gradient that reached its output. So one layer's activations
//! live at a time; a sliding layer's attention reads only sink + window keys per query block.

pub mod data;

use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use candle_core::{DType, Device, Tensor, Var};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::{Deserialize, Serialize};

use crate::engine::{EngineError, Session};
use crate::eval::tasks::{EvalDoc, Rng};
use crate::eval::{EvalError, score};
use crate::model::lora::{self, AdapterCard, Lora, TARGETS};
use crate::model::{Model, ModelConfig, ModelError};
use crate::optim::{AdamW, clip_global_norm, cosine_lr};
use crate::recipe::Recipe;
use data::{Sample, SampleKey, SampleSet};

#[derive(Debug, thiserror::Error)]
pub enum FinetuneError {
    #[error("{0}")]
    Invalid(String),
    #[error(
        "the full-attention model answered none of the {questions} generated questions correctly, so there is nothing to train on (nothing was written): use a larger model, shorter --sample-tokens, or more --distill-tries"
    )]
    NoCorrectAnswers { questions: usize },
    #[error(
        "{0} already holds a fine-tuning run: pass --resume to continue it, or choose another --out"
    )]
    Exists(PathBuf),
    #[error(
        "{path} is not a fine-tuning run ({detail}); pass the --out folder of `swaa-chat finetune`"
    )]
    NotCheckpoint { path: PathBuf, detail: String },
    #[error("cannot write {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Eval(#[from] EvalError),
    #[error(transparent)]
    Document(#[from] crate::document::DocumentError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

pub type Result<T> = std::result::Result<T, FinetuneError>;

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> FinetuneError + '_ {
    move |source| FinetuneError::Io {
        path: path.into(),
        source,
    }
}

/// A uniform draw in [0, 1) from the project's generator.
fn unit(rng: &mut Rng) -> f64 {
    (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
}

/// The trainable A/B of a [`Lora`], in [`Lora::named`] order.
pub struct LoraVars {
    rank: usize,
    alpha: f64,
    vars: Vec<(String, Var)>,
}

impl LoraVars {
    /// A from LoRA's (PEFT's) init, uniform in ±1/√in; B zero, so training starts at the base.
    pub fn new(
        cfg: &ModelConfig,
        rank: usize,
        alpha: f64,
        seed: u64,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let outs = [
            cfg.heads * cfg.head_dim,
            cfg.kv_heads * cfg.head_dim,
            cfg.kv_heads * cfg.head_dim,
        ];
        let mut rng = Rng::derive(seed, &[0x10_4A]);
        let bound = 1.0 / (cfg.hidden as f64).sqrt();
        let mut vars = Vec::new();
        for i in 0..cfg.layers {
            for (t, &out) in outs.iter().enumerate() {
                let a: Vec<f32> = (0..rank * cfg.hidden)
                    .map(|_| ((unit(&mut rng) * 2.0 - 1.0) * bound) as f32)
                    .collect();
                let a = Tensor::from_vec(a, (rank, cfg.hidden), &Device::Cpu)?;
                let b = Tensor::zeros((out, rank), DType::F32, &Device::Cpu)?;
                for (bm, x) in [(false, a), (true, b)] {
                    let x = x.to_dtype(dtype)?.to_device(device)?;
                    vars.push((Lora::tensor_name(i, t, bm), Var::from_tensor(&x)?));
                }
            }
        }
        Ok(LoraVars { rank, alpha, vars })
    }

    /// Trainable copies of `lora`'s tensors.
    pub fn from_lora(lora: &Lora) -> Result<Self> {
        let vars = lora
            .named()
            .into_iter()
            .map(|(n, t)| Ok((n, Var::from_tensor(&t)?)))
            .collect::<Result<Vec<_>>>()?;
        Ok(LoraVars {
            rank: lora.rank,
            alpha: lora.alpha,
            vars,
        })
    }

    /// The update as tensors that track the variables.
    pub fn lora(&self) -> Lora {
        let t: Vec<Tensor> = self
            .vars
            .iter()
            .map(|(_, v)| v.as_tensor().clone())
            .collect();
        Lora {
            rank: self.rank,
            alpha: self.alpha,
            layers: t
                .chunks(6)
                .map(|c| {
                    [
                        (c[0].clone(), c[1].clone()),
                        (c[2].clone(), c[3].clone()),
                        (c[4].clone(), c[5].clone()),
                    ]
                })
                .collect(),
        }
    }

    pub fn named_vars(&self) -> &[(String, Var)] {
        &self.vars
    }

    fn save(&self, path: &Path) -> Result<()> {
        let t: HashMap<String, Tensor> = self
            .vars
            .iter()
            .map(|(n, v)| (n.clone(), v.as_tensor().clone()))
            .collect();
        Ok(candle_core::safetensors::save(&t, path)?)
    }

    fn load(&mut self, path: &Path, device: &Device) -> Result<()> {
        let not = |detail: String| FinetuneError::NotCheckpoint {
            path: path.into(),
            detail,
        };
        let mut t = candle_core::safetensors::load(path, device).map_err(|e| not(e.to_string()))?;
        for (n, v) in &self.vars {
            let x = t.remove(n).ok_or_else(|| not(format!("{n} is missing")))?;
            v.set(&x).map_err(|e| not(e.to_string()))?;
        }
        Ok(())
    }
}

/// How a training forward runs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PassOptions {
    /// Queries per attention block.
    pub block: usize,
    /// Sliding layers read only sink + window keys (the same numbers, less memory).
    pub banded: bool,
    /// LoRA dropout on the adapter's input (0: none).
    pub dropout: f64,
}

impl Default for PassOptions {
    fn default() -> Self {
        PassOptions {
            block: 512,
            banded: true,
            dropout: 0.0,
        }
    }
}

/// Mean cross-entropy of the answer tokens (each predicted from the position before it).
fn answer_loss(model: &Model, x: &Tensor, s: &Sample) -> Result<Tensor> {
    let n = s.tokens.len();
    let logits = model.train_logits(x, s.answer_start - 1..n - 1)?;
    let targets = Tensor::new(&s.tokens[s.answer_start..], logits.device())?;
    Ok(candle_nn::loss::cross_entropy(&logits, &targets)?)
}

fn check_sample(s: &Sample) -> Result<()> {
    if s.answer_start == 0 || s.answer_start >= s.tokens.len() || s.question_start > s.answer_start
    {
        return Err(FinetuneError::Invalid(format!(
            "sample of {} has no answer tokens after its prompt: delete samples.json in --out to build the samples again",
            s.doc
        )));
    }
    Ok(())
}

/// The answer loss of `s` under `recipe` in one graph (no checkpointing): differentiable
/// through `lora`'s tensors when they track variables.
pub fn sample_loss(
    model: &Model,
    lora: Option<&Lora>,
    s: &Sample,
    recipe: &Recipe,
    o: &PassOptions,
) -> Result<Tensor> {
    check_sample(s)?;
    let pass = model.train_pass(&s.phases(), recipe, o.block, o.banded)?;
    let mut x = model.train_embed(&s.tokens)?;
    for i in 0..model.config().layers {
        x = model.train_layer(&pass, i, &x, lora, None)?;
    }
    answer_loss(model, &x, s)
}

/// Layer `i`'s dropout mask for training step `step` (`[T, hidden]`, kept entries 1/(1−p)):
/// from the run's seed, so a resumed run and a recomputed layer draw the same one.
fn dropout_mask(
    model: &Model,
    t: usize,
    p: f64,
    seed: u64,
    step: usize,
    i: usize,
) -> Result<Tensor> {
    let hidden = model.config().hidden;
    let mut rng = Rng::derive(seed, &[0xD20F, step as u64, i as u64]);
    let keep = (1.0 / (1.0 - p)) as f32;
    let m: Vec<f32> = (0..t * hidden)
        .map(|_| if unit(&mut rng) < p { 0.0 } else { keep })
        .collect();
    Ok(Tensor::from_vec(m, (t, hidden), model.device())?.to_dtype(model.dtype())?)
}

/// The answer loss of `s` and its gradient for each variable, by name, with the backward pass
/// checkpointed per layer (see the module's note). `step` seeds the dropout masks.
pub fn loss_and_grads(
    model: &Model,
    vars: &LoraVars,
    s: &Sample,
    recipe: &Recipe,
    o: &PassOptions,
    seed: u64,
    step: usize,
) -> Result<(f32, HashMap<String, Tensor>)> {
    check_sample(s)?;
    let layers = model.config().layers;
    let pass = model.train_pass(&s.phases(), recipe, o.block, o.banded)?;
    let tracked = vars.lora();
    let frozen = tracked.detached();
    let mask = |i: usize| -> Result<Option<Tensor>> {
        (o.dropout > 0.0)
            .then(|| dropout_mask(model, s.tokens.len(), o.dropout, seed, step, i))
            .transpose()
    };
    // Forward without a graph, keeping each layer's input.
    let mut xs = vec![model.train_embed(&s.tokens)?];
    for i in 0..layers {
        let y = model.train_layer(&pass, i, &xs[i], Some(&frozen), mask(i)?.as_ref())?;
        xs.push(y.detach());
    }
    let top = Var::from_tensor(&xs[layers])?;
    let loss = answer_loss(model, top.as_tensor(), s)?;
    let value = loss.to_dtype(DType::F32)?.to_scalar::<f32>()?;
    let g = loss.backward()?;
    let mut upstream = g
        .get(top.as_tensor())
        .ok_or_else(|| FinetuneError::Invalid("the loss does not depend on the model".into()))?
        .clone();
    let mut grads = HashMap::new();
    let names = vars.named_vars();
    for i in (0..layers).rev() {
        let input = Var::from_tensor(&xs[i])?;
        let y = model.train_layer(
            &pass,
            i,
            input.as_tensor(),
            Some(&tracked),
            mask(i)?.as_ref(),
        )?;
        // d(Σ y·g)/dθ is the chain rule's product for this layer's parameters and input.
        let wide = lora::wide(y.dtype());
        let surrogate = (y.to_dtype(wide)? * upstream.to_dtype(wide)?)?.sum_all()?;
        let g = surrogate.backward()?;
        for (n, v) in &names[i * 6..(i + 1) * 6] {
            if let Some(gv) = g.get(v.as_tensor()) {
                grads.insert(n.clone(), gv.clone());
            }
        }
        if i > 0 {
            upstream = match g.get(input.as_tensor()) {
                Some(gi) => gi.clone(),
                None => input.as_tensor().zeros_like()?,
            };
        }
    }
    Ok((value, grads))
}

/// A run's settings, saved with it so `--resume` continues with the same ones.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    pub recipe: Recipe,
    pub rank: usize,
    pub alpha: f64,
    pub lr: f64,
    /// Cosine decay floor, as a share of `lr`.
    pub min_lr_ratio: f64,
    pub warmup: usize,
    /// Optimizer steps (one sample each); 0: `epochs` passes over the samples.
    pub steps: usize,
    pub epochs: usize,
    pub clip: f64,
    pub seed: u64,
    pub pass: PassOptions,
    /// Checkpoint every this many steps (0: only at the end or when stopped).
    pub save_every: usize,
}

impl Settings {
    pub fn validate(&self) -> Result<()> {
        let bad = |m: &str| Err(FinetuneError::Invalid(m.into()));
        if self.rank == 0 {
            return bad("--rank must be at least 1 (the paper used 16)");
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return bad("--lr must be positive, e.g. 1e-4");
        }
        if !(0.0..1.0).contains(&self.pass.dropout) {
            return bad("--dropout is a probability below 1, e.g. 0.05");
        }
        if self.steps == 0 && self.epochs == 0 {
            return bad("--steps or --epochs must be positive");
        }
        if !(self.alpha > 0.0 && self.alpha.is_finite()) {
            return bad("--alpha must be positive, e.g. 32");
        }
        Ok(())
    }

    /// The run's length over `samples` samples.
    pub fn total_steps(&self, samples: usize) -> usize {
        if self.steps > 0 {
            self.steps
        } else {
            self.epochs * samples
        }
    }
}

/// Which sample step `step` (from 1) trains on: epoch by epoch, each a seeded shuffle, so the
/// order follows from the seed and the step alone and a resumed run sees the same one.
pub fn sample_at(seed: u64, samples: usize, step: usize) -> usize {
    let (epoch, at) = ((step - 1) / samples, (step - 1) % samples);
    let mut order: Vec<usize> = (0..samples).collect();
    let mut rng = Rng::derive(seed, &[0x0D3E, epoch as u64]);
    for i in (1..samples).rev() {
        order.swap(i, rng.below(i + 1));
    }
    order[at]
}

/// Step counter and history, beside the tensors of a checkpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct State {
    pub settings: Settings,
    pub step: usize,
    pub steps: usize,
    pub loss_history: Vec<f32>,
    pub tokens: u64,
    pub seconds: f64,
}

const STATE: &str = "state.json";
const VARS: &str = "lora.safetensors";
const OPTIMIZER: &str = "optimizer.safetensors";
pub const ADAPTER: &str = "adapter.safetensors";
pub const CARD: &str = "card.json";

pub fn has_checkpoint(out: &Path) -> bool {
    out.join(STATE).is_file()
}

fn read_state(out: &Path) -> Result<State> {
    crate::optim::read_state(&out.join(STATE)).map_err(|detail| FinetuneError::NotCheckpoint {
        path: out.into(),
        detail: format!("{STATE}: {detail}"),
    })
}

fn save_checkpoint(out: &Path, vars: &LoraVars, opt: &AdamW, state: &State) -> Result<()> {
    vars.save(&out.join(VARS))?;
    opt.save(&out.join(OPTIMIZER))?;
    // The state goes last: a folder with one has a complete checkpoint.
    let path = out.join(STATE);
    let json = serde_json::to_string_pretty(state).expect("plain struct");
    std::fs::write(&path, json).map_err(io_err(&path))
}

use crate::optim::StepReport;

/// Trains `settings`' adapter on `samples` into the checkpoint folder `out` (which must
/// exist), or continues the one there when `resume`. Stops after the run's steps, or earlier
/// when `stop(step)` says so (a time budget; tests), saving a checkpoint either way.
pub fn train(
    model: &Model,
    samples: &[Sample],
    settings: &Settings,
    out: &Path,
    resume: bool,
    stop: &mut dyn FnMut(usize) -> bool,
    on_step: &mut dyn FnMut(&StepReport),
) -> Result<(LoraVars, State)> {
    if samples.is_empty() {
        return Err(FinetuneError::Invalid("no samples to train on".into()));
    }
    let mut state = if resume {
        read_state(out)?
    } else {
        if has_checkpoint(out) {
            return Err(FinetuneError::Exists(out.into()));
        }
        settings.validate()?;
        State {
            settings: settings.clone(),
            step: 0,
            steps: settings.total_steps(samples.len()),
            loss_history: Vec::new(),
            tokens: 0,
            seconds: 0.0,
        }
    };
    let s = state.settings.clone();
    let device = model.device().clone();
    // f32 master weights and moments whatever the model's dtype: a 1e-4 step is below a bf16
    // weight's resolution.
    let mut vars = LoraVars::new(model.config(), s.rank, s.alpha, s.seed, DType::F32, &device)?;
    let mut opt = AdamW::new(vars.named_vars().to_vec(), 0.0)?;
    if resume {
        vars.load(&out.join(VARS), &device)?;
        let path = out.join(OPTIMIZER);
        opt.load(&path, state.step, &device)
            .map_err(|detail| FinetuneError::NotCheckpoint { path, detail })?;
    }
    while state.step < state.steps {
        if stop(state.step) {
            break;
        }
        let t0 = Instant::now();
        let step = state.step + 1;
        let sample = &samples[sample_at(s.seed, samples.len(), step)];
        let (loss, mut grads) =
            loss_and_grads(model, &vars, sample, &s.recipe, &s.pass, s.seed, step)?;
        if !loss.is_finite() {
            return Err(FinetuneError::Invalid(format!(
                "the training loss became {loss} at step {step}: lower --lr or raise --warmup"
            )));
        }
        let grad_norm = clip_global_norm(&mut grads, s.clip)?;
        let lr = cosine_lr(s.lr, s.min_lr_ratio, s.warmup, state.steps, step);
        opt.step(&grads, lr)?;
        state.step = step;
        state.loss_history.push(loss);
        state.tokens += sample.tokens.len() as u64;
        let secs = t0.elapsed().as_secs_f64();
        state.seconds += secs;
        on_step(&StepReport {
            step,
            steps: state.steps,
            loss,
            lr,
            grad_norm,
            tokens_per_s: sample.tokens.len() as f64 / secs.max(1e-9),
            val_loss: None,
        });
        if s.save_every > 0 && step % s.save_every == 0 {
            save_checkpoint(out, &vars, &opt, &state)?;
        }
    }
    save_checkpoint(out, &vars, &opt, &state)?;
    Ok((vars, state))
}

/// Mean answer loss over `samples` under `recipe`.
pub fn mean_loss(
    model: &Model,
    lora: Option<&Lora>,
    samples: &[Sample],
    recipe: &Recipe,
    o: &PassOptions,
) -> Result<f32> {
    let mut sum = 0f64;
    for s in samples {
        sum += sample_loss(model, lora, s, recipe, o)?
            .to_dtype(DType::F64)?
            .to_scalar::<f64>()?;
    }
    Ok((sum / samples.len().max(1) as f64) as f32)
}

/// Share of `docs`' questions `session` answers right under `recipe` (greedy).
pub fn accuracy(session: &mut Session, docs: &[EvalDoc], recipe: &Recipe) -> Result<f64> {
    let never = AtomicBool::new(false);
    let recipe = session.resolve_recipe(recipe.clone())?;
    session.set_recipe(recipe);
    let (mut right, mut asked) = (0usize, 0usize);
    for d in docs {
        session.load_document(&d.title, &d.text);
        session.read(&mut |_| {}, &never)?;
        let snap = session.snapshot()?;
        for q in &d.questions {
            session.restore(&snap)?;
            let a = session.ask(&q.question, &mut |_| {}, &never)?;
            asked += 1;
            right += usize::from(score::is_correct(&a.text, &q.answers, &q.distractors));
        }
    }
    Ok(right as f64 / asked.max(1) as f64)
}

/// Everything `finetune` needs besides the model.
#[derive(Debug, Clone)]
pub struct FinetuneOptions {
    pub settings: Settings,
    /// Documents, or [`data::RUST_BOOK`].
    pub data: Vec<String>,
    /// Generated documents to distil for training, and for the held-out check.
    pub docs: usize,
    pub heldout_docs: usize,
    /// Share of each text's paragraphs held out for the check.
    pub heldout_fraction: f64,
    /// Tokens per generated document (the sample length).
    pub sample_tokens: usize,
    /// Answers tried per question (greedy, then sampled).
    pub tries: usize,
    pub out: PathBuf,
    pub resume: bool,
    /// Time budget in minutes (the run saves and can be resumed).
    pub minutes: Option<f64>,
    pub base_name: String,
    pub base_identity: Option<String>,
    pub progress: bool,
}

fn bar(show: bool, len: usize, what: &str) -> ProgressBar {
    let pb = ProgressBar::new(len as u64);
    if !show || !std::io::stderr().is_terminal() {
        pb.set_draw_target(ProgressDrawTarget::hidden());
    }
    let tpl = format!("{what} {{bar:30}} {{pos}}/{{len}} · ETA {{eta}} · {{msg}}");
    pb.set_style(ProgressStyle::with_template(&tpl).expect("valid template"));
    pb
}

/// Distils (or takes from `out`'s cache) the samples. Nothing is written when no answer
/// was correct.
fn samples(session: &mut Session, o: &FinetuneOptions) -> Result<SampleSet> {
    let texts = data::load_texts(&o.data)?;
    let key = SampleKey {
        base_identity: o.base_identity.clone(),
        data: texts
            .iter()
            .map(|t| (t.name.clone(), t.sha256.clone()))
            .collect(),
        docs: o.docs,
        heldout_docs: o.heldout_docs,
        tokens: o.sample_tokens,
        tries: o.tries,
        seed: o.settings.seed,
    };
    if let Some(set) = data::cached(&o.out, &key) {
        return Ok(set);
    }
    if o.resume {
        return Err(FinetuneError::NotCheckpoint {
            path: o.out.clone(),
            detail: "its samples.json is missing or was built from other data or settings".into(),
        });
    }
    let (train_prose, held_prose) = data::split(&texts, o.heldout_fraction);
    let tok = session.tokenizer();
    let count = |s: &str| tok.encode(s, false).map_or(s.len() / 4, |t| t.len());
    let seed = o.settings.seed;
    let train_docs = data::documents(&train_prose, o.docs, o.sample_tokens, seed, &count)?;
    let held_docs = data::documents(
        &held_prose,
        o.heldout_docs,
        o.sample_tokens,
        seed + 1,
        &count,
    )?;
    let total = o.docs + o.heldout_docs;
    let pb = bar(o.progress, total, "distil");
    let plain = o.progress && !std::io::stderr().is_terminal();
    let note = |at: usize, what: &str, d: &data::Distilled| {
        let msg = format!(
            "{what}: {} of {} answers kept",
            d.samples.len(),
            d.questions
        );
        if plain {
            eprintln!("distil {}/{total} · {msg}", at + 1);
        }
        pb.set_position(at as u64 + 1);
        pb.set_message(msg);
    };
    let train = data::distill(session, &train_docs, o.tries, seed, &mut |i, d| {
        note(i, "training", d)
    })?;
    let held = data::distill(session, &held_docs, o.tries, seed + 1, &mut |i, d| {
        note(o.docs + i, "held out", d)
    })?;
    pb.finish_and_clear();
    if train.samples.is_empty() {
        return Err(FinetuneError::NoCorrectAnswers {
            questions: train.questions,
        });
    }
    let set = SampleSet {
        key,
        train: train.samples,
        heldout: held.samples,
        asked: (train.questions, held.questions),
    };
    std::fs::create_dir_all(&o.out).map_err(io_err(&o.out))?;
    let path = data::samples_path(&o.out);
    let json = serde_json::to_string(&set).expect("plain struct");
    std::fs::write(&path, json).map_err(io_err(&path))?;
    Ok(set)
}

/// What a finished run wrote.
#[derive(Debug)]
pub struct Finished {
    pub adapter: PathBuf,
    pub card: AdapterCard,
    /// Stopped by the time budget before the last step (resume to finish).
    pub interrupted: bool,
}

/// `swaa-chat finetune` on `session` (the base model, dense, with full attention as the
/// teacher): samples, training, then the held-out check and the adapter with its card.
pub fn run(session: &mut Session, o: &FinetuneOptions) -> Result<Finished> {
    o.settings.validate()?;
    if !o.resume && has_checkpoint(&o.out) {
        return Err(FinetuneError::Exists(o.out.clone()));
    }
    let set = samples(session, o)?;
    let model = session.model().clone();
    let t0 = Instant::now();
    let deadline = o
        .minutes
        .map(|m| t0 + std::time::Duration::from_secs_f64(m * 60.0));
    let steps = if o.resume {
        read_state(&o.out)?.steps
    } else {
        o.settings.total_steps(set.train.len())
    };
    let pb = bar(o.progress, steps, "train");
    let plain = o.progress && !std::io::stderr().is_terminal();
    let (vars, state) = train(
        &model,
        &set.train,
        &o.settings,
        &o.out,
        o.resume,
        &mut |_| deadline.is_some_and(|d| Instant::now() >= d),
        &mut |r| {
            pb.set_position(r.step as u64);
            let msg = format!(
                "loss {:.3} · {:.0} tok/s · lr {:.1e}",
                r.loss, r.tokens_per_s, r.lr
            );
            if plain {
                eprintln!("step {}/{} · {msg}", r.step, r.steps);
            }
            pb.set_message(msg);
        },
    )?;
    pb.finish_and_clear();
    let s = &state.settings;
    let interrupted = state.step < state.steps;
    let lora = vars.lora().detached();
    let recipe = s.recipe.clone();
    let heldout_loss = (!set.heldout.is_empty())
        .then(|| mean_loss(&model, Some(&lora), &set.heldout, &recipe, &s.pass))
        .transpose()?;
    // The held-out documents again (the same seed), for accuracy under the recipe.
    let (base_acc, acc, questions) = if interrupted || o.heldout_docs == 0 {
        (None, None, 0)
    } else {
        let texts = data::load_texts(&o.data)?;
        let (_, held_prose) = data::split(&texts, o.heldout_fraction);
        let tok = session.tokenizer();
        let count = |s: &str| tok.encode(s, false).map_or(s.len() / 4, |t| t.len());
        let docs = data::documents(
            &held_prose,
            o.heldout_docs,
            o.sample_tokens,
            s.seed + 1,
            &count,
        )?;
        let base = accuracy(session, &docs, &recipe)?;
        let mut merged = model.clone();
        merged.merge_lora(&lora)?;
        let base_model = session.replace_model(merged);
        let with = accuracy(session, &docs, &recipe);
        session.replace_model(base_model);
        (Some(base), Some(with?), set.asked.1)
    };
    let cfg = model.config();
    let card = AdapterCard {
        base_name: o.base_name.clone(),
        base_identity: o.base_identity.clone(),
        arch: cfg.arch.to_string(),
        layers: cfg.layers,
        hidden: cfg.hidden,
        rank: s.rank,
        alpha: s.alpha,
        dropout: s.pass.dropout,
        targets: TARGETS.iter().map(|t| t.to_string()).collect(),
        recipe,
        data: set.key.data.clone(),
        samples: set.train.len(),
        tokens: state.tokens,
        steps: state.step,
        final_loss: state.loss_history.last().copied().unwrap_or(f32::NAN),
        heldout_loss,
        heldout_accuracy_base: base_acc,
        heldout_accuracy: acc,
        heldout_questions: questions,
    };
    let adapter = o.out.join(ADAPTER);
    lora::save_adapter(&adapter, &lora, &card)?;
    let path = o.out.join(CARD);
    let json = serde_json::to_string_pretty(&card).expect("plain struct");
    std::fs::write(&path, json).map_err(io_err(&path))?;
    Ok(Finished {
        adapter,
        card,
        interrupted,
    })
}
