//! The command line: `swaa-chat [FILE]`, `ask`, `extract`, `bench`, `eval`, `finetune`,
//! `selftest`, `models`, `cache`.
//! This file parses and dispatches; `chat` is the line chat and `ask`, `bench`, `selftest` and
//! `models` their commands. Models are opened by [`crate::open`].

mod bench;
mod cache;
mod calibrate;
mod chat;
mod finetune;
mod models;
mod selftest;

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::{Args, Parser, Subcommand};

use crate::book::Focus;
use crate::config::{self, Config, ConfigError, ModelArgs};
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
    /// CPU threads for matmuls and attention, with any subcommand (default: config.toml's
    /// `threads`, 0: one per core).
    #[arg(long, global = true, value_name = "N")]
    threads: Option<usize>,
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
    /// Train a LoRA adapter under a recipe on self-distilled answers (SWA-aware fine-tuning);
    /// `--adapter` merges it at load.
    Finetune(finetune::FinetuneArgs),
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
    /// Book mode for a document longer than --effective-ctx: each question reads the pages
    /// it selects (lexical: BM25; attention: the question's attention over the book read
    /// once; hybrid: both) and the answer cites them; off reads the whole document.
    #[arg(long, value_enum)]
    focus: Option<Focus>,
    /// The most context the model answers well from (default: the preset's; 0 too).
    #[arg(long, value_name = "TOKENS")]
    effective_ctx: Option<usize>,
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

/// Exit status per kind of failure, the same from every front end: 2 for input that was
/// refused (flags, config values, documents; clap's own usage errors are 2 too), 3 for a
/// model that cannot be used (missing, corrupt, unsupported, not fetched), 1 for the rest.
pub fn exit_code(e: &anyhow::Error) -> i32 {
    use crate::model::ModelError;
    use crate::open::LoadError;
    for cause in e.chain() {
        if cause.is::<document::DocumentError>() || cause.is::<config::ConfigError>() {
            return 2;
        }
        // Transparent: its chain goes on below the error it wraps.
        let model = match cause.downcast_ref::<LoadError>() {
            Some(LoadError::Model(m)) => Some(m),
            Some(_) => return 3,
            None => cause.downcast_ref::<ModelError>(),
        };
        match model {
            Some(ModelError::UnknownDevice(_)) => return 2,
            Some(
                ModelError::NoCudaBuild
                | ModelError::NoCudaDevice(_)
                | ModelError::Evicted { .. }
                | ModelError::Candle(_),
            ) => return 1,
            Some(_) => return 3,
            None => {}
        }
        if cause.is::<crate::hub::HubError>() || cause.is::<crate::tokenizer::TokenizerError>() {
            return 3;
        }
    }
    1
}

/// The one line printed for `e`: its message with each cause it does not already quote, the
/// first line only, controls neutralised, and very long words (a 10,000-byte href, a 50 MB
/// config value) cut in the middle.
pub fn error_line(e: &anyhow::Error) -> String {
    let mut msg = e.to_string();
    for cause in e.chain().skip(1).map(ToString::to_string) {
        if !msg.contains(&cause) {
            msg = format!("{msg}: {cause}");
        }
    }
    let line = msg.lines().next().unwrap_or_default();
    shorten_words(&crate::units::printable(line), 80)
}

/// Words (runs without spaces) longer than `max` characters keep their ends around an
/// ellipsis and their length.
fn shorten_words(line: &str, max: usize) -> String {
    line.split(' ')
        .map(|w| {
            let n = w.chars().count();
            if n <= max {
                return w.to_string();
            }
            let head: String = w.chars().take(max / 2).collect();
            let tail: String = w.chars().skip(n - max / 4).collect();
            format!("{head}…{tail} ({} characters)", crate::units::int(n))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Prints a command-line parse error as one line that names the flag and says what it takes,
/// and exits 2; `--help` and `--version` print as clap prints them.
pub fn usage_exit(e: clap::Error) -> ! {
    use clap::error::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        e.exit()
    }
    eprintln!(
        "error: {}",
        shorten_words(&crate::units::printable(&usage_line(&e)), 80)
    );
    std::process::exit(2)
}

/// clap's message (which names the flag and the value), with what the flag takes instead of
/// the parser's words, the values it accepts, clap's suggestion, and where the help is.
fn usage_line(e: &clap::Error) -> String {
    use clap::error::{ContextKind, ContextValue};
    let rendered = e.render().to_string();
    let mut line = rendered
        .lines()
        .next()
        .unwrap_or_default()
        .trim_start_matches("error: ")
        .to_string();
    if let Some(source) = std::error::Error::source(e) {
        let wants = if let Some(p) = source.downcast_ref::<std::num::ParseIntError>() {
            Some(match p.kind() {
                std::num::IntErrorKind::PosOverflow => {
                    format!("expected a whole number up to {}", usize::MAX)
                }
                _ => "expected a whole number, 0 or more (no sign, no decimals)".to_string(),
            })
        } else if source.is::<std::num::ParseFloatError>() {
            Some("expected a number such as 0.7".to_string())
        } else {
            None
        };
        if let Some(wants) = wants {
            let words = format!(": {source}");
            line = format!("{}: {wants}", line.strip_suffix(&words).unwrap_or(&line));
        }
    }
    if let Some(ContextValue::Strings(args)) = e.get(ContextKind::InvalidArg)
        && e.kind() == clap::error::ErrorKind::MissingRequiredArgument
    {
        line = format!("{} {}", line.trim_end_matches(':'), args.join(" "));
    }
    if let Some(ContextValue::Strings(values)) = e.get(ContextKind::ValidValue) {
        line.push_str(&format!(": use one of {}", values.join(", ")));
    }
    for kind in [
        ContextKind::SuggestedArg,
        ContextKind::SuggestedSubcommand,
        ContextKind::SuggestedValue,
    ] {
        if let Some(ContextValue::String(s)) = e.get(kind) {
            line.push_str(&format!(" (did you mean '{s}'?)"));
        }
    }
    // The command whose help lists the flags: `swaa-chat ask` for `swaa-chat ask … --sink x`.
    let mut cmd = <Cli as clap::CommandFactory>::command();
    let mut command = "swaa-chat".to_string();
    for arg in std::env::args().skip(1) {
        if let Some(sub) = cmd.find_subcommand(&arg).cloned() {
            command = format!("{command} {}", sub.get_name());
            cmd = sub;
        }
    }
    format!("{line}; see `{command} --help`")
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
    let mut file_cfg = Config::load(&path)?;
    file_cfg.threads = cli.threads.unwrap_or(file_cfg.threads);
    crate::model::use_threads(file_cfg.threads).map_err(anyhow::Error::msg)?;
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
                            .map_err(|e: String| ConfigError::Setting(format!("--pages: {e}")))
                    })
                    .transpose()?;
                if pages.is_some() && cli.file.is_none() {
                    return Err(ConfigError::Setting(
                        "--pages needs a document: swaa-chat FILE --pages RANGE".into(),
                    )
                    .into());
                }
                // A missing document is the line chat's error and exit status here too.
                if let Some(f) = &cli.file {
                    std::fs::metadata(f).map_err(|source| {
                        document::DocumentError::Unreadable {
                            path: f.clone(),
                            source,
                        }
                    })?;
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
            Err(ConfigError::Setting(format!(
                "flags and a document before `{}` do not apply to it: put them after the subcommand (see `swaa-chat {} --help`)",
                cmd.name(),
                cmd.name()
            ))
            .into())
        }
        Some(Cmd::Extract { file, json }) => {
            let text = document::extract(&file, json)?;
            std::io::stdout().write_all(text.as_bytes())?;
            Ok(())
        }
        Some(Cmd::Bench(b)) => bench::run(b),
        Some(Cmd::Calibrate(a)) => calibrate::run(a, file_cfg),
        Some(Cmd::Finetune(a)) => finetune::run(a, file_cfg),
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
            Cmd::Finetune(_) => "finetune",
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
    c.focus = a.focus.unwrap_or(c.focus);
    c.effective_ctx = a.effective_ctx.unwrap_or(c.effective_ctx);
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
