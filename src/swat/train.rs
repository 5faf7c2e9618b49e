//! Training: AdamW with warm-up and cosine decay, global-norm clipping, held-out validation,
//! and checkpoints that resume exactly (weights, optimizer moments, step, data RNG).
//!
//! The optimizer is `optim::AdamW` (shared with `finetune`), whose moments a checkpoint holds.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};

use super::data::{ByteTokenizer, Corpus};
use super::model::SwatModel;
use super::{Result, Rng, SwatConfig, SwatError, invalid};
use crate::optim::{AdamW, clip_global_norm, cosine_lr};

/// Everything a run needs besides the device; saved with each checkpoint so `--resume`
/// continues with the same settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainSettings {
    pub model: SwatConfig,
    pub texts: Vec<PathBuf>,
    pub steps: usize,
    pub batch: usize,
    pub lr: f64,
    /// The cosine decays to `lr · min_lr_ratio`.
    pub min_lr_ratio: f64,
    pub warmup: usize,
    pub weight_decay: f64,
    /// Largest global gradient norm (0: no clipping).
    pub clip: f64,
    pub seed: u64,
    pub val_fraction: f64,
    pub val_every: usize,
    /// Most held-out windows per validation.
    pub val_windows: usize,
    pub checkpoint_every: usize,
}

impl TrainSettings {
    /// Linear warm-up to `lr` over `warmup` steps, then cosine decay to `lr · min_lr_ratio` at
    /// `steps`. `step` counts from 1.
    pub fn lr_at(&self, step: usize) -> f64 {
        cosine_lr(self.lr, self.min_lr_ratio, self.warmup, self.steps, step)
    }

    fn validate(&self) -> Result<()> {
        self.model.validate()?;
        if self.steps == 0 || self.batch == 0 || self.model.seq_len < 2 {
            return Err(invalid("--steps, --batch and --seq-len must be positive"));
        }
        if self.lr.is_nan() || self.lr <= 0.0 {
            return Err(invalid("--lr must be positive, e.g. 3e-3"));
        }
        Ok(())
    }
}

use crate::optim::StepReport;

/// Step counter, data RNG and history: the rest of a checkpoint besides tensors.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct TrainState {
    settings: TrainSettings,
    corpus_sha256: String,
    step: usize,
    rng: Rng,
    tokens_seen: u64,
    /// (step, held-out loss), the first at step 0 (before training).
    val_history: Vec<(usize, f32)>,
    /// Training loss of every step so far (the comparison's loss curves).
    #[serde(default)]
    loss_history: Vec<f32>,
    /// Seconds spent training, over all runs of this checkpoint.
    #[serde(default)]
    train_seconds: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct TrainSummary {
    pub step: usize,
    pub steps: usize,
    pub val_history: Vec<(usize, f32)>,
    pub loss_history: Vec<f32>,
    pub train_seconds: f64,
    pub tokens_seen: u64,
    /// Stopped by the flag (Ctrl-C) or the time budget before `steps`.
    pub interrupted: bool,
    pub out: PathBuf,
}

impl TrainSummary {
    pub fn finished(&self) -> bool {
        self.step >= self.steps
    }

    /// The last held-out loss.
    pub fn val_loss(&self) -> f32 {
        self.val_history.last().map_or(f32::NAN, |v| v.1)
    }

    fn new(state: TrainState, interrupted: bool, out: &Path) -> Self {
        TrainSummary {
            step: state.step,
            steps: state.settings.steps,
            val_history: state.val_history,
            loss_history: state.loss_history,
            train_seconds: state.train_seconds,
            tokens_seen: state.tokens_seen,
            interrupted,
            out: out.into(),
        }
    }
}

const STATE_FILE: &str = "train_state.json";

/// True when `dir` holds a training checkpoint (weights and state).
pub fn has_checkpoint(dir: &Path) -> bool {
    dir.join(STATE_FILE).is_file() && dir.join("model.safetensors").is_file()
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> SwatError + '_ {
    move |source| SwatError::Io {
        path: path.into(),
        source,
    }
}

/// Writes a checkpoint: weights, config, tokenizer, optimizer moments and state. The state
/// goes last, so a folder with a state file has a complete checkpoint.
fn save_checkpoint(dir: &Path, model: &SwatModel, opt: &AdamW, state: &TrainState) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    model.save_weights(&dir.join("model.safetensors"))?;
    let cfg = dir.join("config.json");
    let json = serde_json::to_string_pretty(model.config()).expect("plain struct");
    std::fs::write(&cfg, json).map_err(io_err(&cfg))?;
    ByteTokenizer::default().save(dir)?;
    opt.save(&dir.join("optimizer.safetensors"))?;
    let path = dir.join(STATE_FILE);
    let json = serde_json::to_string_pretty(state).expect("plain struct");
    std::fs::write(&path, json).map_err(io_err(&path))?;
    tracing::info!(step = state.step, dir = %dir.display(), "SWAT checkpoint saved");
    Ok(())
}

/// Mean held-out loss over the validation windows.
pub fn validation_loss(model: &SwatModel, batches: &[(Tensor, Tensor)]) -> Result<f32> {
    let (mut sum, mut n) = (0f64, 0usize);
    for (x, y) in batches {
        let l = model.loss(x, y)?.to_scalar::<f32>()? as f64;
        let k = x.elem_count();
        sum += l * k as f64;
        n += k;
    }
    Ok((sum / n.max(1) as f64) as f32)
}

fn read_state(out: &Path) -> Result<TrainState> {
    crate::optim::read_state(&out.join(STATE_FILE)).map_err(|detail| SwatError::NotCheckpoint {
        path: out.into(),
        detail: format!("{STATE_FILE}: {detail}"),
    })
}

/// The state of the checkpoint in `out`, without loading its weights or data.
pub fn read_summary(out: &Path) -> Result<TrainSummary> {
    Ok(TrainSummary::new(read_state(out)?, false, out))
}

/// Where a run starts: fresh settings, or the checkpoint in `out` (`--resume`).
// Built once per run: boxing the settings would buy nothing.
#[allow(clippy::large_enum_variant)]
pub enum Start {
    Fresh(TrainSettings),
    Resume,
}

/// Trains into `out`. Stops after `settings.steps`, when `stop` is set (Ctrl-C) or when
/// `deadline` passes; in each case saves a checkpoint first. `on_step` sees every step.
pub fn train(
    start: Start,
    out: &Path,
    device: &Device,
    deadline: Option<Instant>,
    on_step: &mut dyn FnMut(&StepReport),
    stop: &AtomicBool,
) -> Result<TrainSummary> {
    let (state, resumed) = match start {
        Start::Fresh(settings) => {
            if has_checkpoint(out) {
                return Err(SwatError::CheckpointExists(out.into()));
            }
            settings.validate()?;
            let state = TrainState {
                corpus_sha256: String::new(),
                step: 0,
                rng: Rng(settings.seed ^ 0x5EED_DA7A),
                tokens_seen: 0,
                val_history: Vec::new(),
                loss_history: Vec::new(),
                train_seconds: 0.0,
                settings,
            };
            (state, false)
        }
        Start::Resume => (read_state(out)?, true),
    };
    let mut state = state;
    let s = state.settings.clone();
    let corpus = Corpus::from_files(&s.texts, s.val_fraction)?;
    if resumed && corpus.digest != state.corpus_sha256 {
        return Err(invalid(format!(
            "the training text ({}) changed since the checkpoint in {} was written: restore it, or start a new run with another --out",
            s.texts
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
            out.display()
        )));
    }
    state.corpus_sha256 = corpus.digest.clone();
    let mut model = SwatModel::new(&s.model, s.seed, DType::F32, device)?;
    let mut opt = AdamW::new(model.named_vars(), s.weight_decay)?;
    if resumed {
        model.load_weights(&out.join("model.safetensors"))?;
        let path = out.join("optimizer.safetensors");
        opt.load(&path, state.step, device)
            .map_err(|detail| SwatError::NotCheckpoint { path, detail })?;
    }
    let val = corpus.val_batches(s.batch, s.model.seq_len, s.val_windows, device)?;
    if state.val_history.is_empty() {
        state.val_history.push((0, validation_loss(&model, &val)?));
    }
    let tokens_per_step = (s.batch * s.model.seq_len) as f64;
    let mut interrupted = false;
    while state.step < s.steps {
        if stop.load(Ordering::Relaxed) || deadline.is_some_and(|d| Instant::now() >= d) {
            interrupted = true;
            break;
        }
        let t0 = Instant::now();
        let step = state.step + 1;
        let (x, y) = corpus.batch(&mut state.rng, s.batch, s.model.seq_len, device)?;
        let loss = model.loss(&x, &y)?;
        let grads = loss.backward()?;
        let mut named: HashMap<String, Tensor> = HashMap::new();
        for (name, var) in model.named_vars() {
            if let Some(g) = grads.get(var.as_tensor()) {
                named.insert(name, g.clone());
            }
        }
        let grad_norm = clip_global_norm(&mut named, s.clip)?;
        let lr = s.lr_at(step);
        opt.step(&named, lr)?;
        state.step = step;
        state.tokens_seen += tokens_per_step as u64;
        let loss = loss.to_scalar::<f32>()?;
        state.loss_history.push(loss);
        if !loss.is_finite() {
            return Err(invalid(format!(
                "the training loss became {loss} at step {step}: lower --lr or raise --warmup"
            )));
        }
        let val_loss = if step % s.val_every.max(1) == 0 || step == s.steps {
            let v = validation_loss(&model, &val)?;
            state.val_history.push((step, v));
            Some(v)
        } else {
            None
        };
        state.train_seconds += t0.elapsed().as_secs_f64();
        on_step(&StepReport {
            step,
            steps: s.steps,
            loss,
            lr,
            grad_norm,
            tokens_per_s: tokens_per_step / t0.elapsed().as_secs_f64(),
            val_loss,
        });
        if s.checkpoint_every > 0 && step % s.checkpoint_every == 0 && step < s.steps {
            save_checkpoint(out, &model, &opt, &state)?;
        }
    }
    save_checkpoint(out, &model, &opt, &state)?;
    Ok(TrainSummary::new(state, interrupted, out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lr_warms_up_linearly_then_decays_by_cosine_to_the_floor() {
        let s = TrainSettings {
            model: SwatConfig::preset("tiny").unwrap(),
            texts: vec![],
            steps: 110,
            batch: 1,
            lr: 1.0,
            min_lr_ratio: 0.1,
            warmup: 10,
            weight_decay: 0.0,
            clip: 1.0,
            seed: 0,
            val_fraction: 0.1,
            val_every: 10,
            val_windows: 1,
            checkpoint_every: 0,
        };
        assert!((s.lr_at(5) - 0.5).abs() < 1e-12);
        assert!((s.lr_at(10) - 1.0).abs() < 1e-12);
        assert!((s.lr_at(60) - 0.55).abs() < 1e-12);
        assert!((s.lr_at(110) - 0.1).abs() < 1e-12);
        assert!(s.lr_at(30) > s.lr_at(31));
    }
}
