//! `swaa-chat swat train | ppl | compare | heads | generate`, and `ask --model DIR` for SWAT
//! models.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use candle_core::{DType, Device, Tensor};
use clap::{Args, Subcommand};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::chat::{GenStats, generate};
use super::heads;
use super::model::SwatModel;
use super::ppl::{self, PplRow};
use super::report::{ModelResult, Report};
use super::train::{self, Start, TrainSettings, TrainSummary};
use super::{Activation, Corpus, Positions, Slopes, SwatConfig, parse_length};
use crate::optim::StepReport;
use crate::sampling::SamplingParams;

#[derive(Subcommand, Debug)]
pub enum SwatCmd {
    /// Train a SWAT model on text files (checkpoints resume exactly; Ctrl-C saves one).
    Train(TrainArgs),
    /// Perplexity against evaluation length for one or more trained models.
    Ppl(PplArgs),
    /// Train the SWAT paper's ablation models (same data, size and steps), then report held-out
    /// loss, perplexity at 1×, 4× and 16× the training length, loss curves and per-head stats.
    Compare(CompareArgs),
    /// Per-head attention statistics of trained models: mass, saturated keys, distance.
    Heads(HeadsArgs),
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
    /// Heads with negative:positive slopes under `--slopes paper|paper-anchored`, e.g. 6:6 for
    /// 12 heads (default: half each).
    #[arg(long, value_parser = parse_split)]
    slope_split: Option<[usize; 2]>,
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
    /// Evaluation lengths in tokens (k = 1024), comma-separated (default: 256,1k,4k,16k for
    /// `ppl`; 1×, 4× and 16× --seq-len for `compare`).
    #[arg(long, value_delimiter = ',', value_parser = parse_length)]
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
    /// Folder for the checkpoints and the report (run again to continue unfinished ones).
    #[arg(long)]
    out: PathBuf,
    /// Models to train and compare, comma-separated (default: all of `VARIANTS`: softmax-full,
    /// sigmoid-full, softmax-swa, sigmoid-alibi-swa, sigmoid-rope-swa, sigmoid-alirope-uni,
    /// sigmoid-alirope-paper, sigmoid-alirope-alternating, sigmoid-alirope-anchored).
    #[arg(long, value_delimiter = ',')]
    variants: Vec<String>,
    /// Models trained (and evaluated) at a time, each on its own thread and CUDA stream.
    #[arg(long, default_value_t = 1)]
    jobs: usize,
    /// Report on the checkpoints as they are when the time budget ends, trained or not (the
    /// table shows each model's steps).
    #[arg(long)]
    report_unfinished: bool,
}

#[derive(Args, Debug)]
pub struct HeadsArgs {
    /// Checkpoint folders, comma-separated.
    #[arg(long, value_delimiter = ',', required = true)]
    model: Vec<PathBuf>,
    /// Text to read (from its start, in sequences of each model's training length).
    #[arg(long)]
    text: PathBuf,
    /// Most sequences to average over.
    #[arg(long, default_value_t = 4)]
    seqs: usize,
    /// Also write heads.md and heads.json here.
    #[arg(long)]
    out: Option<PathBuf>,
    #[arg(long, default_value = "cpu")]
    device: String,
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
        SwatCmd::Heads(a) => heads_cmd(a),
        SwatCmd::Generate(a) => generate_cmd(a),
    }
}

/// `N:P`, the heads with negative and with positive slopes.
fn parse_split(s: &str) -> std::result::Result<[usize; 2], String> {
    let bad = || format!("'{s}' is not a head split: write N:P, e.g. 6:6");
    let (n, p) = s.split_once(':').ok_or_else(bad)?;
    Ok([
        n.trim().parse().map_err(|_| bad())?,
        p.trim().parse().map_err(|_| bad())?,
    ])
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
    model.slope_split = a.slope_split;
    model.beta = a.beta;
    model.seq_len = a.seq_len;
    model.validate()?;
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

fn bar(len: usize, label: &str, multi: Option<&MultiProgress>) -> ProgressBar {
    let mut pb = ProgressBar::new(len as u64);
    if !std::io::stderr().is_terminal() {
        pb.set_draw_target(ProgressDrawTarget::hidden());
    } else if let Some(m) = multi {
        pb = m.add(pb);
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
/// Without a terminal, each validation prints a line instead (logs of remote runs).
fn train_with_bar(
    start: Start,
    out: &Path,
    device: &Device,
    deadline: Option<Instant>,
    stop: &AtomicBool,
    label: &str,
    multi: Option<&MultiProgress>,
) -> Result<TrainSummary> {
    let pb = bar(0, label, multi);
    let lines = pb.is_hidden();
    let mut last_val = None;
    let mut on_step = |r: &StepReport| {
        if lines && let Some(v) = r.val_loss {
            eprintln!(
                "{label}: step {}/{} · loss {:.3} · val {v:.3} · {:.0} tok/s",
                r.step, r.steps, r.loss, r.tokens_per_s
            );
        }
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

/// One line on a finished or stopped run (whole, so that parallel runs do not interleave).
fn summary_line(s: &TrainSummary, resume_hint: &str) -> String {
    let first = s.val_history.first().map_or(f32::NAN, |v| v.1);
    let how = if s.finished() {
        "done".to_string()
    } else {
        format!("stopped: {resume_hint}")
    };
    format!(
        "step {}/{} ({how}) · held-out loss {first:.3} → {:.3} nats/byte · {:.1} min · checkpoint in {}",
        s.step,
        s.steps,
        s.val_loss(),
        s.train_seconds / 60.0,
        s.out.display()
    )
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
        None,
    )?;
    println!(
        "{}",
        summary_line(&summary, "run again with --resume to continue")
    );
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

/// Perplexity rows of one model at each length, printing progress.
fn measure(
    name: &str,
    model: &SwatModel,
    tokens: &[u32],
    lengths: &[usize],
    eval: &EvalArgs,
) -> Result<Vec<PplRow>> {
    let chunk = eval.chunk.unwrap_or(model.config().window.unwrap_or(512));
    lengths
        .iter()
        .map(|&len| {
            let r = ppl::perplexity(model, name, tokens, len, eval.max_seqs, chunk)?;
            eprintln!(
                "  {name} @ {len}: ppl {:.3} ({} seq, cache {} tok)",
                r.ppl, r.sequences, r.cache_tokens
            );
            Ok(r)
        })
        .collect()
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
    let lengths = if a.eval.lengths.is_empty() {
        vec![256, 1024, 4096, 16384]
    } else {
        a.eval.lengths.clone()
    };
    let mut rows = Vec::new();
    for (name, model) in &models {
        rows.extend(measure(name, model, &tokens, &lengths, &a.eval)?);
    }
    print!("{}", ppl::markdown_table(&rows));
    if let Some(out) = &a.out {
        ppl::write_report(&rows, out, &format!("Perplexity on {}", doc.title))?;
        eprintln!("wrote ppl.md, ppl.json and ppl.svg to {}", out.display());
    }
    Ok(())
}

/// One model of the comparison.
#[derive(Debug, Clone, Copy)]
pub struct Variant {
    pub name: &'static str,
    pub activation: Activation,
    pub positions: Positions,
    pub slopes: Slopes,
    /// Every head's slope negative (the paper's N:0 rows) instead of `--slope-split`.
    pub unidirectional: bool,
    pub windowed: bool,
}

const fn variant(
    name: &'static str,
    activation: Activation,
    positions: Positions,
    slopes: Slopes,
    unidirectional: bool,
    windowed: bool,
) -> Variant {
    Variant {
        name,
        activation,
        positions,
        slopes,
        unidirectional,
        windowed,
    }
}

/// The SWAT paper's ablation set at equal size, data and steps (Fu et al. 2025, its ablation
/// table: vanilla softmax and sigmoid Transformers, sliding-window softmax, sliding-window
/// sigmoid with ALiBi, RoPE, and ALiBi + RoPE with N:0 and N/2:N/2 slopes), plus the earlier
/// alternating `balanced` layout and the anchored fix. The uni rows use Eq. 4's magnitudes
/// with every head negative (at 8 heads the same slopes as ALiBi's 2^(−8(h+1)/H)).
pub const VARIANTS: [Variant; 9] = {
    use Activation::*;
    use Positions::*;
    use Slopes::*;
    [
        variant("softmax-full", Softmax, Rope, Unidirectional, false, false),
        variant("sigmoid-full", Sigmoid, Rope, Unidirectional, false, false),
        variant("softmax-swa", Softmax, Rope, Unidirectional, false, true),
        variant("sigmoid-alibi-swa", Sigmoid, Alibi, Paper, true, true),
        variant(
            "sigmoid-rope-swa",
            Sigmoid,
            Rope,
            Unidirectional,
            false,
            true,
        ),
        variant("sigmoid-alirope-uni", Sigmoid, Alirope, Paper, true, true),
        variant(
            "sigmoid-alirope-paper",
            Sigmoid,
            Alirope,
            Paper,
            false,
            true,
        ),
        variant(
            "sigmoid-alirope-alternating",
            Sigmoid,
            Alirope,
            Balanced,
            false,
            true,
        ),
        variant(
            "sigmoid-alirope-anchored",
            Sigmoid,
            Alirope,
            PaperAnchored,
            false,
            true,
        ),
    ]
};

fn pick_variants(names: &[String]) -> Result<Vec<Variant>> {
    if names.is_empty() {
        return Ok(VARIANTS.to_vec());
    }
    names
        .iter()
        .map(|n| {
            VARIANTS
                .iter()
                .find(|v| v.name == n.trim())
                .copied()
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "unknown --variants entry '{n}': choose from {}",
                        VARIANTS.map(|v| v.name).join(", ")
                    )
                })
        })
        .collect()
}

fn variant_settings(a: &RunArgs, v: &Variant) -> Result<TrainSettings> {
    let window = (v.windowed && a.window > 0).then_some(a.window);
    let mut s = settings(a, v.activation, v.positions, v.slopes, window)?;
    if v.unidirectional {
        s.model.slope_split = Some([s.model.heads, 0]);
    }
    Ok(s)
}

/// A device for one worker thread: the same GPU on a stream of its own, so that models run
/// side by side overlap on it (a small model leaves most of an H200 idle); the CPU as it is.
fn worker_device(device: &Device) -> Result<Device> {
    match device.location() {
        candle_core::DeviceLocation::Cuda { gpu_id } => {
            let d = Device::new_cuda_with_stream(gpu_id)?;
            #[cfg(feature = "cuda")]
            if let Device::Cuda(c) = &d {
                // As in `model::parse_device`: launch order on the one stream orders every use.
                // SAFETY: a worker's tensors are made and used on its own stream only.
                unsafe { c.disable_event_tracking() };
            }
            Ok(d)
        }
        _ => Ok(device.clone()),
    }
}

/// `f` on every item, `jobs` at a time on worker threads (each with its [`worker_device`]), or
/// in turn on `device` with one job. Results in item order; the first error once all stop.
fn parallel<T: Sync, R: Send>(
    items: &[T],
    jobs: usize,
    device: &Device,
    f: impl Fn(&T, &Device) -> Result<R> + Sync,
) -> Result<Vec<R>> {
    if jobs <= 1 || items.len() <= 1 {
        return items.iter().map(|x| f(x, device)).collect();
    }
    let next = AtomicUsize::new(0);
    let done: Mutex<Vec<Option<Result<R>>>> = Mutex::new(items.iter().map(|_| None).collect());
    std::thread::scope(|s| {
        for _ in 0..jobs.min(items.len()) {
            s.spawn(|| {
                let dev = worker_device(device);
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= items.len() {
                        break;
                    }
                    let r = match &dev {
                        Ok(d) => f(&items[i], d),
                        Err(e) => Err(anyhow::anyhow!("cannot open a worker device: {e:#}")),
                    };
                    done.lock().expect("results lock")[i] = Some(r);
                }
            });
        }
    });
    done.into_inner()
        .expect("results lock")
        .into_iter()
        .map(|r| r.expect("every item ran"))
        .collect()
}

/// The GPU's name from nvidia-smi, or the device kind: the machine the report names.
fn machine_name(device: &Device) -> String {
    let kind = crate::model::device_name(device);
    if !device.is_cuda() {
        return format!("{kind} ({} threads)", candle_core::utils::get_num_threads());
    }
    std::process::Command::new("nvidia-smi")
        .args(["--query-gpu=name", "--format=csv,noheader", "-i"])
        .arg(match device.location() {
            candle_core::DeviceLocation::Cuda { gpu_id } => gpu_id.to_string(),
            _ => "0".into(),
        })
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|n| !n.is_empty())
        .unwrap_or(kind)
}

/// Up to `seqs` consecutive windows of `len` tokens from the start of `tokens`, as `[n, len]`.
fn probe_tokens(tokens: &[u32], len: usize, seqs: usize, device: &Device) -> Result<Tensor> {
    let n = (tokens.len() / len.max(1)).min(seqs.max(1));
    if n == 0 {
        bail!(
            "the text has {} tokens (bytes), fewer than the training length {len}: give a longer --text",
            tokens.len()
        );
    }
    Ok(Tensor::from_vec(
        tokens[..n * len].to_vec(),
        (n, len),
        device,
    )?)
}

fn compare_cmd(a: CompareArgs) -> Result<()> {
    let device = crate::model::parse_device(&a.run.device)?;
    let variants = pick_variants(&a.variants)?;
    let stop = interrupt_flag();
    let deadline = deadline(a.run.minutes);
    let multi = MultiProgress::new();
    let hint = "run the same command again to continue";
    // None: not started, because the time budget was spent before its turn came.
    let trained = parallel(&variants, a.jobs, &device, |v, dev| {
        let dir = a.out.join(v.name);
        let start = if train::has_checkpoint(&dir) {
            let s = train::read_summary(&dir)?;
            if s.finished() {
                return Ok(Some(s));
            }
            Start::Resume
        } else {
            Start::Fresh(variant_settings(&a.run, v)?)
        };
        if stop.load(Ordering::Relaxed) || deadline.is_some_and(|d| Instant::now() >= d) {
            return Ok(None);
        }
        let s = train_with_bar(start, &dir, dev, deadline, stop, v.name, Some(&multi))?;
        println!("{}: {}", v.name, summary_line(&s, hint));
        Ok(Some(s))
    })?;
    let finished = trained.iter().flatten().filter(|s| s.finished()).count();
    if finished < variants.len() {
        println!(
            "{finished} of {} models are trained: {hint}",
            variants.len()
        );
        if !a.report_unfinished {
            return Ok(());
        }
    }
    let trained = variants
        .iter()
        .zip(trained)
        .map(|(v, s)| match s {
            Some(s) => Ok(s),
            None => Ok(train::read_summary(&a.out.join(v.name))?),
        })
        .collect::<Result<Vec<_>>>()?;
    let corpus = Corpus::from_files(&a.run.text, 0.1)?;
    let seq_len = a.run.seq_len;
    let lengths = if a.eval.lengths.is_empty() {
        vec![seq_len, 4 * seq_len, 16 * seq_len]
    } else {
        a.eval.lengths.clone()
    };
    eprintln!(
        "perplexity on the held-out {} tokens of the training text:",
        corpus.val.len()
    );
    let evals = parallel(&variants, a.jobs, &device, |v, dev| {
        let model = load_model(&a.out.join(v.name), dev)?;
        let rows = measure(v.name, &model, &corpus.val, &lengths, &a.eval)?;
        let probe = probe_tokens(&corpus.val, model.config().seq_len, 4, dev)?;
        let stats = heads::head_stats(&model, std::slice::from_ref(&probe))?;
        Ok((model.config().summary(), rows, stats))
    })?;
    let mut ppl_rows = Vec::new();
    let mut models = Vec::new();
    for ((v, s), (architecture, rows, stats)) in variants.iter().zip(trained).zip(evals) {
        ppl_rows.extend(rows);
        models.push(ModelResult {
            name: v.name.into(),
            architecture,
            summary: s,
            heads: stats,
        });
    }
    let bytes: usize = corpus.train.len() + corpus.val.len();
    let report = Report {
        title: format!(
            "SWAT ablation: perplexity against length (trained at {seq_len} tokens, W={})",
            a.run.window
        ),
        setup: format!(
            "{}; preset {}, W={}, sequence {seq_len}, {} steps × {} × {seq_len} bytes, lr {}; \
             text {} ({:.1} MB, the last 10% held out); {} model(s) trained at a time (minutes \
             are wall-clock time, shared with the others when more than one).",
            machine_name(&device),
            a.run.preset,
            a.run.window,
            a.run.steps,
            a.run.batch,
            a.run.lr,
            a.run
                .text
                .iter()
                .map(|p| name_of(p))
                .collect::<Vec<_>>()
                .join(", "),
            bytes as f64 / 1e6,
            a.jobs.max(1)
        ),
        seq_len,
        models,
        ppl: ppl_rows,
    };
    report.write(&a.out)?;
    print!("{}", report.table());
    println!(
        "wrote report.md, report.json, heads.md, loss.svg and ppl.md/json/svg to {}",
        a.out.display()
    );
    Ok(())
}

fn heads_cmd(a: HeadsArgs) -> Result<()> {
    let device = crate::model::parse_device(&a.device)?;
    let doc = crate::document::load(&a.text)?;
    let tokens = super::ByteTokenizer::default().encode(&doc.text);
    let mut md = String::from("# Attention per layer and head\n");
    let mut all = Vec::new();
    for dir in &a.model {
        let model = load_model(dir, &device)?;
        let probe = probe_tokens(&tokens, model.config().seq_len, a.seqs, &device)?;
        let stats = heads::head_stats(&model, std::slice::from_ref(&probe))?;
        let name = name_of(dir);
        let groups = heads::groups_markdown(&[(name.clone(), heads::groups(&stats))]);
        println!("{name} ({}):\n{groups}", model.config().summary());
        md += &format!(
            "\n## {name} ({})\n\n{groups}\n{}",
            model.config().summary(),
            heads::markdown(&stats)
        );
        all.push(serde_json::json!({ "model": name, "heads": stats }));
    }
    if let Some(out) = &a.out {
        std::fs::create_dir_all(out)?;
        std::fs::write(out.join("heads.md"), md)?;
        std::fs::write(
            out.join("heads.json"),
            serde_json::to_string_pretty(&all).expect("plain data"),
        )?;
        eprintln!("wrote heads.md and heads.json to {}", out.display());
    }
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
        repeat_penalty: Some(a.repeat_penalty),
        seed: a.seed,
        max_new_tokens: a.max_tokens,
        ..Default::default()
    };
    let (_, stats) = generate(&model, &a.prompt, &params, &mut stream_stdout)?;
    println!();
    print_stats(&stats, &model);
    Ok(())
}
