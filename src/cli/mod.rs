//! The command line: `swaa-chat [FILE]`, `ask`, `extract`, `bench`, `eval`, `selftest`, `models`,
//! `cache`.
//! This file parses and dispatches; `chat` is the line chat and `ask`, `bench`, `selftest` and
//! `models` their commands. Models are opened by [`crate::open`].

mod bench;
mod cache;
mod calibrate;
mod chat;
mod models;
mod selftest;

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use clap::{Args, Parser, Subcommand};

use crate::config::{self, Config, ModelArgs};
use crate::document;
use crate::engine::ContextPolicy;
use crate::recipe::RecipeOverrides;

#[derive(Parser, Debug)]
#[command(
    name = "swaa-chat",
    version,
    about = "Ask a local LLM about a long document, with sliding-window attention (SWAA)",
    // `--sink -5` is a bad value for --sink (and says so), not an unknown flag `-5`.
    allow_negative_numbers = true
)]
pub struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    /// Document to read (PDF, EPUB, HTML, Markdown, text; - for stdin). Without one: a plain chat.
    file: Option<PathBuf>,
    #[command(flatten)]
    run: RunArgs,
    /// Read only these pages (PDF) or chapters (EPUB) of the document, e.g. 40-120.
    #[arg(long, value_name = "RANGE", visible_alias = "sections")]
    pages: Option<String>,
    /// Print the merged configuration (file + flags) and where the file is, then exit.
    #[arg(long)]
    print_config: bool,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Answer one question about a document and print the answer and stats.
    #[command(allow_negative_numbers = true)]
    Ask {
        file: PathBuf,
        question: String,
        /// Print one JSON object (answer, recipe, stats).
        #[arg(long)]
        json: bool,
        /// Read only these pages (PDF) or chapters (EPUB), e.g. 40-120, 7 or 200-.
        #[arg(long, value_name = "RANGE", visible_alias = "sections")]
        pages: Option<String>,
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
    Bench(bench::BenchArgs),
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
    /// Score each layer for --full-layers auto: the attention mass a full-attention read of
    /// prose puts outside sink + window, per layer (kept in the cache dir).
    Calibrate(calibrate::CalibrateArgs),
    /// List or clear the stored reads (documents read before, restored on reopening).
    Cache {
        #[command(subcommand)]
        cmd: cache::CacheCmd,
    },
    /// List, fetch or locate model presets.
    Models {
        #[command(subcommand)]
        cmd: models::ModelsCmd,
    },
    /// SWAT: train sliding-window (sigmoid, balanced ALiBi + RoPE) models, measure, generate.
    Swat {
        #[command(subcommand)]
        cmd: crate::swat::SwatCmd,
    },
}

/// Model, device, recipe and sampling flags: each overrides config.toml.
#[derive(Args, Debug, Clone, Default, PartialEq)]
struct RunArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Context limit (default: the model's). Past it, a preset with documented RoPE scaling
    /// turns it on (qwen2.5: YaRN ×4 over 32k); a model file with its own keeps that.
    #[arg(long)]
    ctx: Option<usize>,
    #[arg(long, value_enum)]
    context_policy: Option<ContextPolicy>,
    #[command(flatten)]
    recipe: RecipeOverrides,
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
                // A range that does not parse is a one-line error before the screen opens; one
                // outside the book is said in the reader, which knows the book's range.
                let pages = cli
                    .pages
                    .as_deref()
                    .map(|p| {
                        p.parse()
                            .map_err(|e: String| anyhow::anyhow!("--pages: {e}"))
                    })
                    .transpose()?;
                if pages.is_some() && cli.file.is_none() {
                    bail!("--pages needs a document: swaa-chat FILE --pages RANGE");
                }
                crate::tui::run(&cfg, cli.file.as_deref(), pages)
            } else {
                chat::chat(&cfg, cli.file.as_deref(), cli.pages.as_deref())
            }
        }
        // Flags before the subcommand apply too; those after it win.
        Some(Cmd::Ask {
            file,
            question,
            json,
            pages,
            run,
        }) => chat::ask(
            &merge(merge(file_cfg, &cli.run), &run),
            &file,
            pages.as_deref().or(cli.pages.as_deref()),
            &question,
            json,
        ),
        Some(Cmd::Eval(a)) => crate::eval::command(a, &merge(file_cfg, &cli.run)),
        Some(cmd) if cli.run != RunArgs::default() || cli.file.is_some() || cli.pages.is_some() => {
            bail!(
                "flags and a document before `{}` do not apply to it: put them after the subcommand (see `swaa-chat {} --help`)",
                cmd.name(),
                cmd.name()
            )
        }
        Some(Cmd::Extract { file, json }) => {
            let text = document::extract(&file, json)?;
            std::io::stdout().write_all(text.as_bytes())?;
            Ok(())
        }
        Some(Cmd::Bench(b)) => bench::run(b),
        Some(Cmd::Calibrate(a)) => calibrate::run(a, file_cfg),
        Some(Cmd::Selftest { device, json }) => selftest::run(&device, json),
        Some(Cmd::Models { cmd }) => models::run(cmd),
        Some(Cmd::Cache { cmd }) => cache::run(cmd, &file_cfg),
        Some(Cmd::Swat { cmd }) => crate::swat::cmd::run(cmd),
    }
}

impl Cmd {
    fn name(&self) -> &'static str {
        match self {
            Cmd::Ask { .. } => "ask",
            Cmd::Extract { .. } => "extract",
            Cmd::Bench(_) => "bench",
            Cmd::Selftest { .. } => "selftest",
            Cmd::Eval(_) => "eval",
            Cmd::Calibrate(_) => "calibrate",
            Cmd::Models { .. } => "models",
            Cmd::Cache { .. } => "cache",
            Cmd::Swat { .. } => "swat",
        }
    }
}

fn merge(c: Config, a: &RunArgs) -> Config {
    let mut c = a.model.apply(c);
    c.ctx = a.ctx.unwrap_or(c.ctx);
    c.context_policy = a.context_policy.unwrap_or(c.context_policy);
    let s = &mut c.sampling;
    s.temperature = a.temperature.unwrap_or(s.temperature);
    s.top_k = a.top_k.unwrap_or(s.top_k);
    s.top_p = a.top_p.unwrap_or(s.top_p);
    s.repeat_penalty = a.repeat_penalty.or(s.repeat_penalty);
    s.seed = a.seed.unwrap_or(s.seed);
    s.max_new_tokens = a.max_tokens.unwrap_or(s.max_new_tokens);
    c.recipe = a.recipe.clone().or(c.recipe);
    c
}
