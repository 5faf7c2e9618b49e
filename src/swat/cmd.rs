//! `swaa-chat swat train | ppl | compare | generate`, and `ask --model DIR` for SWAT models.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use candle_core::{DType, Device};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::chat::{GenStats, generate};
use super::model::SwatModel;
use super::ppl::{self, PplRow};
use super::train::{self, Start, StepReport, TrainSettings, TrainSummary};
use super::{Activation, Corpus, Positions, Slopes, SwatConfig, parse_length};
use crate::sampling::SamplingParams;

#[derive(Subcommand, Debug)]
pub enum SwatCmd {
    /// Train a SWAT model on text files (checkpoints resume exactly; Ctrl-C saves one).
    Train(TrainArgs),
    /// Perplexity against evaluation length for one or more trained models.
    Ppl(PplArgs),
    /// Train the five comparison models (same data, size and steps), then measure perplexity.
    Compare(CompareArgs),
    /// Generate text from a trained model with its rolling KV cache.
    Generate(GenerateArgs),
}

/// Settings shared by `train` and `compare`.
#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// Training text files (.txt, .md, or any type `document::load` reads), comma-separated.
    #[arg(long, value_delimiter = ',')]
    text: Vec<PathBuf>,
    /// Model size: tiny or small.
    #[arg(long, default_value = "tiny")]
    preset: String,
    /// Sliding window W in tokens (0: full attention).
    #[arg(long, default_value_t = 128)]
    window: usize,
    /// Training sequence length.
    #[arg(long, default_value_t = 1024)]
    seq_len: usize,
    #[arg(long, default_value_t = 1000)]
    steps: usize,
    /// Peak learning rate.
    #[arg(long, default_value_t = 3e-3)]
    lr: f64,
    /// Sequences per step.
    #[arg(long, default_value_t = 16)]
    batch: usize,
    /// Warm-up steps (default: 5% of --steps).
    #[arg(long)]
    warmup: Option<usize>,
    #[arg(long, default_value_t = 0.1)]
    weight_decay: f64,
    /// Largest global gradient norm (0: no clipping).
    #[arg(long, default_value_t = 1.0)]
    clip: f64,
    /// Fixed sigmoid bias β (default: −ln W).
    #[arg(long, allow_hyphen_values = true)]
    beta: Option<f64>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Held-out validation every N steps.
    #[arg(long, default_value_t = 100)]
    val_every: usize,
    /// Most held-out windows per validation.
    #[arg(long, default_value_t = 32)]
    val_windows: usize,
    /// Checkpoint every N steps (one is always written at the end).
    #[arg(long, default_value_t = 500)]
    checkpoint_every: usize,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Stop (and checkpoint) after this many minutes; run again with --resume to continue.
    #[arg(long)]
    minutes: Option<f64>,
}

#[derive(Args, Debug)]
pub struct TrainArgs {
    #[command(flatten)]
    run: RunArgs,
    #[arg(long, value_enum, default_value = "sigmoid")]
    activation: Activation,
    #[arg(long, value_enum, default_value = "alirope")]
    positions: Positions,
    #[arg(long, value_enum, default_value = "balanced")]
    slopes: Slopes,
    /// Checkpoint folder.
    #[arg(long)]
    out: PathBuf,
    /// Continue the checkpoint in --out with its saved settings (--device/--minutes apply).
    #[arg(long)]
    resume: bool,
}

#[derive(Args, Debug)]
pub struct PplArgs {
    /// Checkpoint folders, comma-separated.
    #[arg(long, value_delimiter = ',', required = true)]
    model: Vec<PathBuf>,
    /// Evaluation text (the whole file is used; use text the models did not train on).
    #[arg(long)]
    text: PathBuf,
    #[command(flatten)]
    eval: EvalArgs,
    /// Also write ppl.md, ppl.json and ppl.svg here.
    #[arg(long)]
    out: Option<PathBuf>,
    #[arg(long, default_value = "cpu")]
    device: String,
}

#[derive(Args, Debug, Clone)]
pub struct EvalArgs {
    /// Evaluation lengths in tokens (k = 1024), comma-separated.
    #[arg(long, value_delimiter = ',', value_parser = parse_length, default_value = "256,1k,4k,16k")]
    lengths: Vec<usize>,
    /// Most sequences per length.
    #[arg(long, default_value_t = 4)]
    max_seqs: usize,
    /// Tokens fed per forward pass (default: the window, or 512 under full attention).
    #[arg(long)]
    chunk: Option<usize>,
}

#[derive(Args, Debug)]
pub struct CompareArgs {
    #[command(flatten)]
    run: RunArgs,
    #[command(flatten)]
    eval: EvalArgs,
    /// Folder for the five checkpoints and the report (run again to continue unfinished ones).
    #[arg(long)]
    out: PathBuf,
}

#[derive(Args, Debug)]
pub struct GenerateArgs {
    /// Checkpoint folder.
    #[arg(long, short)]
    model: PathBuf,
    #[arg(long)]
    prompt: String,
    #[arg(long, default_value_t = 200)]
    max_tokens: usize,
    /// Sampling temperature (0: greedy).
    #[arg(long, default_value_t = 0.8)]
    temperature: f64,
    #[arg(long, default_value_t = 40)]
    top_k: usize,
    #[arg(long, default_value_t = 1.1)]
    repeat_penalty: f32,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long, default_value = "cpu")]
    device: String,
}

pub fn run(cmd: SwatCmd) -> Result<()> {
    match cmd {
        SwatCmd::Train(a) => train_cmd(a),
        SwatCmd::Ppl(a) => ppl_cmd(a),
        SwatCmd::Compare(a) => compare_cmd(a),
        SwatCmd::Generate(a) => generate_cmd(a),
    }
}

/// Set by Ctrl-C (SIGINT); the training loop checks it per step and saves a checkpoint.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Installs the Ctrl-C handler: the first press asks training to checkpoint and stop, a second
/// one restores the default action and exits at once.
fn interrupt_flag() -> &'static AtomicBool {
    #[cfg(unix)]
    {
        extern "C" fn on_sigint(_: libc::c_int) {
            if INTERRUPTED.swap(true, Ordering::Relaxed) {
                // SAFETY: signal and raise are async-signal-safe.
                unsafe {
                    libc::signal(libc::SIGINT, libc::SIG_DFL);
                    libc::raise(libc::SIGINT);
                }
            }
        }
        let handler = on_sigint as extern "C" fn(libc::c_int);
        // SAFETY: the handler only touches an atomic and async-signal-safe calls.
        unsafe {
            libc::signal(libc::SIGINT, handler as libc::sighandler_t);
        }
    }
    &INTERRUPTED
}

fn settings(
    a: &RunArgs,
    activation: Activation,
    positions: Positions,
    slopes: Slopes,
    window: Option<usize>,
) -> Result<TrainSettings> {
    let mut model = SwatConfig::preset(&a.preset)?;
    model.window = window;
    model.activation = activation;
    model.positions = positions;
    model.slopes = slopes;
    model.beta = a.beta;
    model.seq_len = a.seq_len;
    if a.text.is_empty() {
        bail!("give the training text with --text FILE[,FILE…]");
    }
    Ok(TrainSettings {
        model,
        texts: a
            .text
            .iter()
            .map(|p| std::path::absolute(p).unwrap_or_else(|_| p.clone()))
            .collect(),
        steps: a.steps,
        batch: a.batch,
        lr: a.lr,
        min_lr_ratio: 0.1,
        warmup: a.warmup.unwrap_or(a.steps / 20),
        weight_decay: a.weight_decay,
        clip: a.clip,
        seed: a.seed,
        val_fraction: 0.1,
        val_every: a.val_every,
        val_windows: a.val_windows,
        checkpoint_every: a.checkpoint_every,
    })
}

fn bar(len: usize, label: &str) -> ProgressBar {
    let pb = ProgressBar::new(len as u64);
    if !std::io::stderr().is_terminal() {
        pb.set_draw_target(ProgressDrawTarget::hidden());
    }
    pb.set_style(
        ProgressStyle::with_template(&format!(
            "{label} {{bar:30}} {{pos}}/{{len}} steps · {{msg}} · ETA {{eta}}"
        ))
        .expect("valid template"),
    );
    pb
}

/// Trains with a progress bar (loss, held-out loss, tokens/s) until done, Ctrl-C or deadline.
fn train_with_bar(
    start: Start,
    out: &Path,
    device: &Device,
    deadline: Option<Instant>,
    stop: &AtomicBool,
    label: &str,
) -> Result<TrainSummary> {
    let pb = bar(0, label);
    let mut last_val = None;
    let mut on_step = |r: &StepReport| {
        last_val = r.val_loss.or(last_val);
        pb.set_length(r.steps as u64);
        pb.set_position(r.step as u64);
        pb.set_message(format!(
            "loss {:.3}{} · {:.0} tok/s",
            r.loss,
            last_val.map_or(String::new(), |v| format!(" · val {v:.3}")),
            r.tokens_per_s
        ));
        if let Some(v) = r.val_loss {
            tracing::info!(
                step = r.step,
                loss = r.loss,
                val = v,
                lr = r.lr,
                "SWAT step"
            );
        }
    };
    let summary = train::train(start, out, device, deadline, &mut on_step, stop)?;
    pb.finish_and_clear();
    Ok(summary)
}

fn report_summary(s: &TrainSummary) {
    let first = s.val_history.first().map_or(f32::NAN, |v| v.1);
    let last = s.val_history.last().map_or(f32::NAN, |v| v.1);
    let how = if s.finished() {
        "done"
    } else {
        "stopped: run again with --resume to continue"
    };
    println!(
        "step {}/{} ({how}) · held-out loss {first:.3} → {last:.3} nats/byte · checkpoint in {}",
        s.step,
        s.steps,
        s.out.display()
    );
}

fn deadline(minutes: Option<f64>) -> Option<Instant> {
    minutes.map(|m| Instant::now() + Duration::from_secs_f64(m.max(0.0) * 60.0))
}

fn train_cmd(a: TrainArgs) -> Result<()> {
    let device = crate::model::parse_device(&a.run.device)?;
    let start = if a.resume {
        Start::Resume
    } else {
        if train::has_checkpoint(&a.out) {
            // Before the banner below, so this error stays the only output.
            return Err(super::SwatError::CheckpointExists(a.out).into());
        }
        let window = (a.run.window > 0).then_some(a.run.window);
        let s = settings(&a.run, a.activation, a.positions, a.slopes, window)?;
        eprintln!(
            "training {} on {} for {} steps",
            s.model.summary(),
            crate::model::device_name(&device),
            s.steps
        );
        Start::Fresh(s)
    };
    let stop = interrupt_flag();
    let summary = train_with_bar(
        start,
        &a.out,
        &device,
        deadline(a.run.minutes),
        stop,
        "train",
    )?;
    report_summary(&summary);
    Ok(())
}

fn load_model(dir: &Path, device: &Device) -> Result<SwatModel> {
    Ok(SwatModel::load(dir, DType::F32, device)?)
}

fn name_of(dir: &Path) -> String {
    dir.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| dir.display().to_string())
}

/// Perplexity rows for each model and length, printing progress.
fn measure(models: &[(String, SwatModel)], tokens: &[u32], eval: &EvalArgs) -> Result<Vec<PplRow>> {
    let mut rows = Vec::new();
    for (name, model) in models {
        let chunk = eval.chunk.unwrap_or(model.config().window.unwrap_or(512));
        for &len in &eval.lengths {
            let r = ppl::perplexity(model, name, tokens, len, eval.max_seqs, chunk)?;
            eprintln!(
                "  {name} @ {len}: ppl {:.3} ({} seq, cache {} tok)",
                r.ppl, r.sequences, r.cache_tokens
            );
            rows.push(r);
        }
    }
    Ok(rows)
}

fn ppl_cmd(a: PplArgs) -> Result<()> {
    let device = crate::model::parse_device(&a.device)?;
    let doc = crate::document::load(&a.text)?;
    let tokens = super::ByteTokenizer::default().encode(&doc.text);
    let models = a
        .model
        .iter()
        .map(|d| Ok((name_of(d), load_model(d, &device)?)))
        .collect::<Result<Vec<_>>>()?;
    let rows = measure(&models, &tokens, &a.eval)?;
    print!("{}", ppl::markdown_table(&rows));
    if let Some(out) = &a.out {
        ppl::write_report(&rows, out, &format!("Perplexity on {}", doc.title))?;
        eprintln!("wrote ppl.md, ppl.json and ppl.svg to {}", out.display());
    }
    Ok(())
}

/// The comparison of the SWAT paper's ablations at equal size, data and steps.
pub fn compare_variants() -> [(&'static str, Activation, Positions, Slopes, bool); 5] {
    use Activation::*;
    use Positions::*;
    use Slopes::*;
    [
        ("transformer-full", Softmax, Rope, Unidirectional, false),
        ("softmax-rope-swa", Softmax, Rope, Unidirectional, true),
        ("sigmoid-rope-swa", Sigmoid, Rope, Unidirectional, true),
        (
            "sigmoid-alirope-uni",
            Sigmoid,
            Alirope,
            Unidirectional,
            true,
        ),
        ("sigmoid-alirope-balanced", Sigmoid, Alirope, Balanced, true),
    ]
}

fn compare_cmd(a: CompareArgs) -> Result<()> {
    let device = crate::model::parse_device(&a.run.device)?;
    let stop = interrupt_flag();
    let deadline = deadline(a.run.minutes);
    let mut all_done = true;
    for (name, act, pos, slopes, windowed) in compare_variants() {
        let dir = a.out.join(name);
        let window = (windowed && a.run.window > 0).then_some(a.run.window);
        let start = if train::has_checkpoint(&dir) {
            Start::Resume
        } else {
            Start::Fresh(settings(&a.run, act, pos, slopes, window)?)
        };
        eprintln!("{name}:");
        let s = train_with_bar(start, &dir, &device, deadline, stop, name)?;
        report_summary(&s);
        all_done &= s.finished();
        if s.interrupted {
            break;
        }
    }
    if !all_done {
        println!("not all five models are trained yet: run the same command again to continue");
        return Ok(());
    }
    let corpus = Corpus::from_files(&a.run.text, 0.1)?;
    let models = compare_variants()
        .iter()
        .map(|v| Ok((v.0.to_string(), load_model(&a.out.join(v.0), &device)?)))
        .collect::<Result<Vec<_>>>()?;
    eprintln!(
        "perplexity on the held-out {} tokens of the training text:",
        corpus.val.len()
    );
    let rows = measure(&models, &corpus.val, &a.eval)?;
    let title = format!(
        "Perplexity vs evaluation length (trained at {} tokens, W={})",
        a.run.seq_len, a.run.window
    );
    ppl::write_report(&rows, &a.out, &title)?;
    print!("{}", ppl::markdown_table(&rows));
    Ok(())
}

fn print_stats(s: &GenStats, model: &SwatModel) {
    eprintln!(
        "[{} · prompt {} tok at {:.0} tok/s · {} tok at {:.1} tok/s · KV {} tok/layer, {:.1} KiB (constant under a window)]",
        model.config().summary(),
        s.prompt_tokens,
        s.prefill_tokens_per_s,
        s.generated_tokens,
        s.decode_tokens_per_s,
        s.kv_tokens,
        s.kv_bytes as f64 / 1024.0
    );
}

fn stream_stdout(t: &str) {
    print!("{t}");
    let _ = std::io::stdout().flush();
}

fn generate_cmd(a: GenerateArgs) -> Result<()> {
    let device = crate::model::parse_device(&a.device)?;
    let model = load_model(&a.model, &device)?;
    super::ByteTokenizer::load(&a.model)?;
    let params = SamplingParams {
        temperature: a.temperature,
        top_k: a.top_k,
        repeat_penalty: a.repeat_penalty,
        seed: a.seed,
        max_new_tokens: a.max_tokens,
        ..Default::default()
    };
    let (_, stats) = generate(&model, &a.prompt, &params, &mut stream_stdout)?;
    println!();
    print_stats(&stats, &model);
    Ok(())
}
