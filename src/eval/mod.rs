//! `swaa-chat eval`: answer quality against cost, per recipe and document length.
//!
//! Each document is read once per recipe; a [`Snapshot`] taken after the read answers every
//! question on it, so questions cost only their own tokens. Results go to a JSONL file one
//! line per answer (an interrupted run resumes from it), then to a Markdown table, a JSON
//! report and an accuracy-vs-time SVG. The engine's `compare_recipes` is the same idea for
//! the reader: one question, several recipes, each answer with its cost.

pub mod report;
pub mod score;
pub mod tasks;

use std::collections::HashSet;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

use crate::book::Focus;
use crate::config::{Config, ModelArgs};
use crate::document::DocumentError;
use crate::engine::{Answer, Choose, EngineError, Event, Session};
use crate::model;
use crate::recipe::{LayerSet, Preset, Recipe, RecipeDefaults, RopeChoice};
use crate::sampling::SamplingParams;
use crate::tokenizer::ChatTokenizer;
use crate::units::parse_length;
use report::{Row, SampleResult};
use tasks::{EvalDoc, Haystack};

#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error("no default haystack: {0}; pass --haystack FILE with real prose (.txt, .md)")]
    NoHaystack(String),
    #[error("the haystack has fewer than 200 words: pass --haystack with a longer document")]
    HaystackTooShort,
    #[error(
        "{path}:{line}: {detail}; each line must be {{\"document\": TEXT or PATH, \"question\": TEXT, \"answer\": TEXT or [TEXT, …]}}"
    )]
    BadJsonl {
        path: PathBuf,
        line: usize,
        detail: String,
    },
    #[error("{path}:{line} is not an eval result ({detail}): delete the file or use another --out")]
    BadResults {
        path: PathBuf,
        line: usize,
        detail: String,
    },
    #[error(
        "{out} holds results of a different eval ({detail}): use another --out, or delete that folder to start over"
    )]
    ResumeMismatch { out: PathBuf, detail: String },
    #[error(
        "{what} needs {needed} tokens with its question and answer, more than the model's context of {ctx}: use shorter --lengths or a model with a longer context"
    )]
    TooLong {
        what: String,
        needed: usize,
        ctx: usize,
    },
    #[error("{0}")]
    BadOptions(String),
    #[error("cannot write {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot draw the plot: {0}")]
    Plot(String),
    #[error(transparent)]
    Document(#[from] DocumentError),
    #[error(transparent)]
    Engine(#[from] EngineError),
}

impl From<model::ModelError> for EvalError {
    fn from(e: model::ModelError) -> Self {
        EvalError::Engine(e.into())
    }
}

type Result<T> = std::result::Result<T, EvalError>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Task {
    Needle,
    Qa,
    Jsonl(PathBuf),
}

impl FromStr for Task {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "needle" => Ok(Task::Needle),
            "qa" => Ok(Task::Qa),
            _ if s.ends_with(".jsonl") => Ok(Task::Jsonl(s.into())),
            _ => Err(format!(
                "unknown task '{s}': use needle, qa or a .jsonl file of {{document, question, answer}}"
            )),
        }
    }
}

impl std::fmt::Display for Task {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Task::Needle => write!(f, "needle"),
            Task::Qa => write!(f, "qa"),
            Task::Jsonl(p) => write!(f, "{}", p.display()),
        }
    }
}

/// How a question reads its document: whole (`off`), the passages it selects (`lexical`,
/// book mode), or the gold pages and their neighbours within the same budget (`gold`: the
/// ceiling of book mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    Off,
    Lexical,
    Attention,
    Hybrid,
    Gold,
}

impl Mode {
    /// The suffix of its rows' names: `swaa`, `swaa@lexical`, `swaa@gold`.
    fn suffix(self) -> &'static str {
        match self {
            Mode::Off => "",
            Mode::Lexical => "@lexical",
            Mode::Attention => "@attention",
            Mode::Hybrid => "@hybrid",
            Mode::Gold => "@gold",
        }
    }
}

#[derive(Debug, Clone)]
pub struct EvalOptions {
    pub task: Task,
    pub recipes: Vec<Preset>,
    /// How each question reads its document; a mode a document cannot run in (`off` past the
    /// context, `gold` without evidence pages) is skipped for it.
    pub modes: Vec<Mode>,
    /// Document lengths in tokens (generated tasks).
    pub lengths: Vec<usize>,
    /// Documents per length.
    pub samples: usize,
    /// Needle depths (0–1), cycled over the samples; empty: spread evenly from 0 to 1.
    pub depths: Vec<f64>,
    pub seed: u64,
    pub window: Option<usize>,
    pub sink: Option<usize>,
    /// The RoPE of sliding layers when the model's is scaled (a long `--ctx`).
    pub sliding_rope: RopeChoice,
    /// Full attention over the question on or off in every sliding recipe, against each
    /// preset's own (`None`: the preset's).
    pub fa_question: Option<bool>,
    /// Full-attention layers of the interleaved presets instead of odd (`auto`: calibrated).
    pub full_layers: Option<LayerSet>,
    /// A LoRA adapter is merged into the model (rows named `PRESET+lora`).
    pub adapter: bool,
    /// Thinking on in every recipe: the model's thinking mode, or the step-by-step
    /// instruction where it has none (rows named `PRESET+think`).
    pub think: bool,
    /// Prose to hide facts in; default: the Rust book installed with the toolchain docs.
    pub haystack: Option<PathBuf>,
    pub out: PathBuf,
    /// Shown in the report and checked on resume.
    pub model_name: String,
    pub progress: bool,
}

/// The recipe a preset means at this length: the model's window and sink, but never more
/// than a quarter of the document (W ≤ L/4, K ≤ W/32, at least 4), unless given explicitly.
/// Otherwise short CI-sized documents would fit in the window and every recipe would be
/// full attention in disguise.
pub fn recipe_for(
    preset: Preset,
    length: usize,
    ctx: usize,
    window: Option<usize>,
    sink: Option<usize>,
) -> Recipe {
    let d = RecipeDefaults::for_context(ctx);
    let w = window.unwrap_or_else(|| d.window.min((length / 4).max(16)));
    let k = sink.unwrap_or_else(|| d.sink.min((w / 32).max(4)));
    Recipe::preset(preset, RecipeDefaults { window: w, sink: k })
}

/// A recipe's name in results and tables: `+layers=SET` when `--full-layers` replaced its
/// interleave, `+fa-q` / `-fa-q` when `--fa-question` turned full attention over the question
/// on or off against the preset's own (`full` has neither), `+lora` with an adapter merged.
fn row_name(preset: Preset, opts: &EvalOptions) -> String {
    let mut name = preset.name().to_string();
    if let Some(l) = opts
        .full_layers
        .as_ref()
        .filter(|_| has_full_layers(preset))
    {
        name += &format!("+layers={l}");
    }
    let own = Recipe::preset(preset, RecipeDefaults::for_context(0)).fa_question;
    match opts.fa_question {
        Some(true) if !own && preset != Preset::Full => name += "+fa-q",
        Some(false) if own => name += "-fa-q",
        _ => {}
    }
    if opts.adapter {
        name += "+lora";
    }
    if opts.think {
        name += "+think";
    }
    name
}

/// Presets with interleaved full-attention layers, which `--full-layers` replaces (as the
/// preset table says; window and sink do not change it).
fn has_full_layers(preset: Preset) -> bool {
    Recipe::preset(preset, RecipeDefaults::for_context(0)).full_layers != LayerSet::None
}

fn count_tokens(tok: &ChatTokenizer) -> impl Fn(&str) -> usize + '_ {
    // Encoding cannot fail on valid UTF-8 in practice; a byte estimate keeps the eval going.
    move |s: &str| tok.encode(s, false).map_or(s.len() / 4, |t| t.len())
}

/// The documents and questions of the eval, the same for the same options and seed.
pub fn build_docs(opts: &EvalOptions, tok: &ChatTokenizer) -> Result<Vec<EvalDoc>> {
    let count = count_tokens(tok);
    let hay = || match &opts.haystack {
        Some(p) => Haystack::from_file(p),
        None => Haystack::rust_book(),
    };
    let depths = if opts.depths.is_empty() {
        tasks::spread_depths(opts.samples)
    } else {
        opts.depths.clone()
    };
    Ok(match &opts.task {
        Task::Jsonl(p) => tasks::jsonl_docs(p, &count)?,
        Task::Needle => {
            let hay = hay()?;
            let mut docs = Vec::new();
            for &len in &opts.lengths {
                for i in 0..opts.samples {
                    let depth = depths[i % depths.len()];
                    docs.push(tasks::needle_doc(&hay, len, depth, i, opts.seed, &count));
                }
            }
            docs
        }
        Task::Qa => {
            let hay = hay()?;
            let mut docs = Vec::new();
            for &len in &opts.lengths {
                for i in 0..opts.samples {
                    docs.push(tasks::qa_doc(&hay, len, i, opts.seed, &count));
                }
            }
            docs
        }
    })
}

/// What defines a run's documents; a resumed run must match it.
#[derive(Debug, Serialize, serde::Deserialize, PartialEq)]
struct RunInfo {
    model: String,
    task: String,
    seed: u64,
    samples: usize,
    depths: Vec<f64>,
    haystack: Option<PathBuf>,
    max_new_tokens: usize,
    /// The context the model ran with (its RoPE scaling follows from it); 0 in older runs.
    #[serde(default)]
    ctx: usize,
}

fn check_run_info(out: &Path, info: &RunInfo) -> Result<()> {
    let path = out.join("run.json");
    let io = |source| EvalError::Io {
        path: path.clone(),
        source,
    };
    if let Ok(text) = std::fs::read_to_string(&path) {
        let old: RunInfo = serde_json::from_str(&text).map_err(|e| EvalError::ResumeMismatch {
            out: out.into(),
            detail: format!("unreadable run.json: {e}"),
        })?;
        if old != *info {
            return Err(EvalError::ResumeMismatch {
                out: out.into(),
                detail: format!(
                    "it was run with {}",
                    serde_json::to_string(&old).unwrap_or_default()
                ),
            });
        }
        return Ok(());
    }
    let json = serde_json::to_string_pretty(info)
        .map_err(std::io::Error::other)
        .map_err(io)?;
    std::fs::write(&path, json).map_err(io)
}

#[derive(Debug, Clone)]
pub struct EvalOutput {
    pub rows: Vec<Row>,
    pub results: PathBuf,
    pub table: PathBuf,
    pub json: PathBuf,
    pub plot: PathBuf,
    /// Answers computed by this call (0 when everything was already in the results file).
    pub answered: usize,
}

/// Runs the eval on `session`'s model, resuming from `opts.out/results.jsonl`.
pub fn run(session: &mut Session, opts: &EvalOptions) -> Result<EvalOutput> {
    if opts.recipes.is_empty() {
        return Err(EvalError::BadOptions(
            "--recipes is empty: name at least one, e.g. full,swa".into(),
        ));
    }
    // A JSONL task's lengths come from the user's documents.
    let generated = matches!(opts.task, Task::Needle | Task::Qa);
    if generated && (opts.samples == 0 || opts.lengths.is_empty() || opts.lengths.contains(&0)) {
        return Err(EvalError::BadOptions(
            "--samples and --lengths need positive values, e.g. --lengths 1k,2k --samples 3".into(),
        ));
    }
    if opts.depths.iter().any(|d| !(0.0..=1.0).contains(d)) {
        return Err(EvalError::BadOptions(
            "--depths are percentages from 0 to 100".into(),
        ));
    }
    let ctx = session.ctx();
    let max_new = session.sampling().max_new_tokens;
    let docs = build_docs(opts, session.tokenizer())?;
    let doc_tokens: Vec<usize> = {
        let count = count_tokens(session.tokenizer());
        docs.iter().map(|d| count(&d.text)).collect()
    };
    // Chat template and question: a generous 256 tokens, as the engine's own budget.
    let fits = |n: usize| n + 256 + max_new <= ctx;
    for (d, &n) in docs.iter().zip(&doc_tokens) {
        if generated && !fits(n) {
            return Err(EvalError::TooLong {
                what: format!("{} ({n} tokens)", d.id),
                needed: n + 256 + max_new,
                ctx,
            });
        }
    }

    std::fs::create_dir_all(&opts.out).map_err(|source| EvalError::Io {
        path: opts.out.clone(),
        source,
    })?;
    check_run_info(
        &opts.out,
        &RunInfo {
            model: opts.model_name.clone(),
            task: opts.task.to_string(),
            seed: opts.seed,
            samples: opts.samples,
            depths: opts.depths.clone(),
            haystack: opts.haystack.clone(),
            max_new_tokens: max_new,
            ctx,
        },
    )?;

    let results_path = opts.out.join("results.jsonl");
    let earlier = report::load_results(&results_path)?;
    let done: HashSet<_> = earlier.iter().map(|r| r.key()).collect();
    // Work: (document, recipe name, recipe, questions still to answer).
    let mut plan = Vec::new();
    for (di, d) in docs.iter().enumerate() {
        for (&preset, &mode) in opts
            .recipes
            .iter()
            .flat_map(|p| opts.modes.iter().map(move |m| (p, m)))
        {
            if mode == Mode::Off && !fits(doc_tokens[di]) {
                tracing::info!(
                    "{}: {} tokens do not fit the context of {ctx}: no `off` rows",
                    d.id,
                    doc_tokens[di]
                );
                continue;
            }
            let name = format!("{}{}", row_name(preset, opts), mode.suffix());
            let mut recipe = Recipe {
                sliding_rope: opts.sliding_rope,
                ..recipe_for(preset, d.length, ctx, opts.window, opts.sink)
            };
            if let Some(f) = opts.fa_question.filter(|_| preset != Preset::Full) {
                recipe.fa_question = f;
            }
            recipe.think = opts.think;
            if let Some(l) = opts
                .full_layers
                .as_ref()
                .filter(|_| has_full_layers(preset))
            {
                recipe.full_layers = l.clone();
            }
            let recipe = session.resolve_recipe(recipe)?;
            let detail = recipe.to_string();
            let pending: Vec<usize> = (0..d.questions.len())
                .filter(|&q| mode != Mode::Gold || !d.questions[q].evidence.is_empty())
                .filter(|&q| !done.contains(&(name.clone(), detail.clone(), d.id.clone(), q)))
                .collect();
            if !pending.is_empty() {
                plan.push((di, name, recipe, mode, pending));
            }
        }
    }
    let total: usize = plan.iter().map(|p| doc_tokens[p.0]).sum();
    let pb = progress_bar(opts.progress, total);
    tracing::info!(
        "eval {} on {}: {} documents × {} recipes, {} reads to do ({} done before)",
        opts.task,
        opts.model_name,
        docs.len(),
        opts.recipes.len(),
        plan.len(),
        earlier.len()
    );
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&results_path)
        .map_err(|source| EvalError::Io {
            path: results_path.clone(),
            source,
        })?;
    let never = AtomicBool::new(false);
    let mut base = 0u64;
    let mut answered = 0;
    // Each answer goes to the log and the results file as soon as it is known.
    let mut record = |r: SampleResult| -> Result<()> {
        log_result(&r);
        report::append_result(&mut file, &r).map_err(|source| EvalError::Io {
            path: results_path.clone(),
            source,
        })?;
        answered += 1;
        Ok(())
    };
    for (di, name, recipe, mode, pending) in &plan {
        let d = &docs[*di];
        pb.set_message(format!("{name} · {}", d.id));
        session.set_recipe(recipe.clone());
        fn choose(mode: Mode, q: &tasks::Question) -> Choose<'_> {
            match mode {
                Mode::Gold => Choose::Pages(&q.evidence),
                Mode::Attention => Choose::Focus(Focus::Attention),
                Mode::Hybrid => Choose::Focus(Focus::Hybrid),
                _ => Choose::Focus(Focus::Lexical),
            }
        }
        session.set_focus(match mode {
            Mode::Off => Focus::Off,
            _ => Focus::Lexical,
        });
        session.load_sections(&d.title, d.noun, &d.text, &d.sections);
        if *mode != Mode::Off {
            for &qi in pending {
                let q = &d.questions[qi];
                let a = session.ask_book(&q.question, choose(*mode, q), &mut |_| {}, &never)?;
                let focus = a.focus.as_ref();
                let r = SampleResult {
                    doc_tokens: focus.map_or(0, |f| f.tokens),
                    prefill_s: a.stats.read_seconds + a.stats.prefill_seconds,
                    cited: focus.map_or(vec![], |f| f.evidence.iter().map(|e| e.page).collect()),
                    read: focus.map(|f| f.read.clone()),
                    ..sample(name, recipe, d, qi, &a)
                };
                record(r)?;
                base += (doc_tokens[*di] / pending.len().max(1)) as u64;
                pb.set_position(base);
            }
            continue;
        }
        let t0 = Instant::now();
        session.read(
            &mut |e| {
                if let Event::Progress { done, .. } = e {
                    pb.set_position(base + done as u64);
                }
            },
            &never,
        )?;
        let read_s = t0.elapsed().as_secs_f64();
        let read_tokens = session.stats().prompt_tokens;
        let snap = session.snapshot()?;
        for &qi in pending {
            let q = &d.questions[qi];
            session.restore(&snap)?;
            let a = session.ask(&q.question, &mut |_| {}, &never)?;
            let r = SampleResult {
                doc_tokens: read_tokens,
                prefill_s: read_s + a.stats.prefill_seconds,
                ..sample(name, recipe, d, qi, &a)
            };
            record(r)?;
        }
        base += doc_tokens[*di] as u64;
        pb.set_position(base);
    }
    pb.finish_and_clear();

    // Report what this run's documents and recipes cover, earlier answers included.
    let ids: HashSet<&str> = docs.iter().map(|d| d.id.as_str()).collect();
    let results: Vec<SampleResult> = report::load_results(&results_path)?
        .into_iter()
        .filter(|r| ids.contains(r.doc.as_str()))
        .collect();
    let names: Vec<String> = opts
        .recipes
        .iter()
        .flat_map(|&p| {
            opts.modes
                .iter()
                .map(move |m| format!("{}{}", row_name(p, opts), m.suffix()))
        })
        .collect();
    let rows = report::summarize(&results, &names);
    let title = format!("{} · {} · seed {}", opts.model_name, opts.task, opts.seed);
    let out = EvalOutput {
        rows,
        results: results_path,
        table: opts.out.join("report.md"),
        json: opts.out.join("report.json"),
        plot: opts.out.join("accuracy-vs-time.svg"),
        answered,
    };
    let write = |path: &Path, text: String| {
        std::fs::write(path, text).map_err(|source| EvalError::Io {
            path: path.into(),
            source,
        })
    };
    let note = "W = min(model default, length/4) and K = min(model default, max(W/32, 4)) unless --window/--sink; \
                prefill_s = reading the document + the question; peak KV = allocated K/V bytes";
    write(
        &out.table,
        format!("{}\n{note}.\n", report::markdown(&title, &out.rows)),
    )?;
    let json = serde_json::json!({
        "model": opts.model_name,
        "task": opts.task.to_string(),
        "seed": opts.seed,
        "note": note,
        "rows": out.rows,
    });
    write(
        &out.json,
        serde_json::to_string_pretty(&json).unwrap_or_default(),
    )?;
    report::plot_svg(&out.plot, &title, &out.rows)?;
    Ok(out)
}

/// The result of question `qi` of `d` answered `a` under `recipe` (row `name`); the caller
/// sets what reading it cost.
fn sample(name: &str, recipe: &Recipe, d: &EvalDoc, qi: usize, a: &Answer) -> SampleResult {
    let q = &d.questions[qi];
    SampleResult {
        recipe: name.to_string(),
        recipe_detail: recipe.to_string(),
        length: d.length,
        doc: d.id.clone(),
        question_index: qi,
        question: q.question.clone(),
        answers: q.answers.clone(),
        prediction: a.text.trim().to_string(),
        correct: score::is_correct(&a.text, &q.answers, &q.distractors),
        depth: q.depth,
        doc_tokens: 0,
        prefill_s: 0.0,
        decode_s: a.stats.decode_seconds,
        generated_tokens: a.stats.generated_tokens,
        peak_kv_bytes: a.stats.cache.peak_bytes_allocated,
        evidence: q.evidence.clone(),
        cited: vec![],
        read: None,
    }
}

fn log_result(r: &SampleResult) {
    tracing::info!(
        "{} {} q{}: {} ({:?} vs {:?}){}",
        r.recipe,
        r.doc,
        r.question_index,
        if r.correct { "right" } else { "wrong" },
        r.prediction,
        r.answers,
        match &r.read {
            Some(read) => format!(" read {read}, cited {:?}, gold {:?}", r.cited, r.evidence),
            None => String::new(),
        }
    );
}

fn progress_bar(show: bool, total: usize) -> ProgressBar {
    let pb = ProgressBar::new(total as u64);
    if !show || !std::io::stderr().is_terminal() {
        pb.set_draw_target(ProgressDrawTarget::hidden());
    }
    pb.set_style(
        ProgressStyle::with_template("eval {bar:30} {pos}/{len} tokens read · ETA {eta} · {msg}")
            .expect("valid template"),
    );
    pb
}

fn parse_percent(s: &str) -> std::result::Result<f64, String> {
    s.trim()
        .trim_end_matches('%')
        .parse::<f64>()
        .ok()
        .filter(|p| (0.0..=100.0).contains(p))
        .map(|p| p / 100.0)
        .ok_or_else(|| format!("bad depth '{s}': use percentages from 0 to 100, e.g. 0,50,100"))
}

/// `swaa-chat eval` flags.
#[derive(clap::Args, Debug)]
pub struct EvalArgs {
    /// needle, qa, or a .jsonl file of {document, question, answer} (document: text or path).
    #[arg(long, default_value = "needle")]
    task: String,
    /// Recipes, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "full,swa,swa-fadec,swa-sink,swa-interleave,swaa"
    )]
    recipes: Vec<String>,
    /// Document lengths in tokens (2k = 2048), comma-separated; ignored for a .jsonl task.
    #[arg(long, value_delimiter = ',', default_value = "2k,4k,8k,16k")]
    lengths: Vec<String>,
    /// Documents per length.
    #[arg(long, default_value_t = 5)]
    samples: usize,
    /// Needle depths in percent, cycled over the samples (default: spread from 0 to 100).
    #[arg(long, value_delimiter = ',')]
    depths: Vec<String>,
    #[command(flatten)]
    model: ModelArgs,
    /// Folder for results.jsonl (resumed if present), report.md, report.json and the plot.
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Sliding window W (default: the model's, at most a quarter of each length).
    #[arg(long)]
    window: Option<usize>,
    /// Sink tokens K (default: the model's, at most W/32).
    #[arg(long)]
    sink: Option<usize>,
    /// Real prose to hide the facts in (any document type); default: the Rust book from `rustup doc`.
    #[arg(long)]
    haystack: Option<PathBuf>,
    /// Most tokens per answer.
    #[arg(long, default_value_t = 24)]
    max_tokens: usize,
    /// Context (default: the model's); past it a preset's documented RoPE scaling turns on.
    #[arg(long)]
    ctx: Option<usize>,
    /// RoPE of sliding layers when the model's is scaled: scaled (default) or original.
    #[arg(long, default_value = "scaled")]
    sliding_rope: RopeChoice,
    /// Full attention over the question on or off in every sliding recipe, against the
    /// preset's own (swa-fadec and swaa have it): rows PRESET+fa-q or PRESET-fa-q.
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    fa_question: Option<bool>,
    /// Full-attention layers of swa-interleave and swaa instead of odd: even, auto, auto:1/4,
    /// every:N or a list (reported as PRESET+layers=SET).
    #[arg(long)]
    full_layers: Option<LayerSet>,
    /// Thinking on in every recipe (the step-by-step instruction on models without a thinking
    /// mode): rows PRESET+think. Give room for the reasoning with --max-tokens.
    #[arg(long)]
    think: bool,
    /// How questions read: off (the whole document, where it fits the context), lexical,
    /// attention or hybrid (book mode's selectors), gold (the evidence pages and their
    /// neighbours, within the same budget: book mode's ceiling). Rows PRESET, PRESET@MODE.
    /// Default: off for needle and qa, all three for a .jsonl task.
    #[arg(long, value_delimiter = ',', value_enum)]
    modes: Vec<Mode>,
    /// Book mode's budget: the most context the model answers well from (default: the preset's).
    #[arg(long, value_name = "TOKENS")]
    effective_ctx: Option<usize>,
}

/// Runs `swaa-chat eval`: loads the model, evaluates, prints the table and where files are.
pub fn command(a: EvalArgs, cfg: &Config) -> anyhow::Result<()> {
    // Parsed here rather than by clap, so a mistake is one line like every other error.
    let task: Task = a.task.parse().map_err(anyhow::Error::msg)?;
    let lengths = a
        .lengths
        .iter()
        .map(|l| parse_length(l))
        .collect::<std::result::Result<Vec<_>, _>>();
    let depths = a
        .depths
        .iter()
        .map(|d| parse_percent(d))
        .collect::<std::result::Result<Vec<_>, _>>();
    let (lengths, depths) = (
        lengths.map_err(anyhow::Error::msg)?,
        depths.map_err(anyhow::Error::msg)?,
    );
    let recipes = a
        .recipes
        .iter()
        .map(|r| r.parse::<Preset>())
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(anyhow::Error::msg)?;
    let cfg = Config {
        // Greedy: the eval is deterministic for a seed.
        ctx: a.ctx.unwrap_or(0),
        // No repetition penalty or loop stop: scores stay comparable with earlier reports.
        sampling: SamplingParams {
            max_new_tokens: a.max_tokens,
            repeat_penalty: Some(1.0),
            stop_repeats: 0,
            ..Default::default()
        },
        effective_ctx: a.effective_ctx.unwrap_or(cfg.effective_ctx),
        // The eval times reading: a restored read would time nothing.
        read_cache: crate::config::ReadCacheConfig {
            enabled: false,
            ..cfg.read_cache.clone()
        },
        ..a.model.apply(cfg.clone())
    };
    let (mut session, model_name) = crate::open::open_session(&cfg, &crate::open::fetch_options())?;
    let out = run(
        &mut session,
        &EvalOptions {
            modes: match (a.modes.is_empty(), &task) {
                (false, _) => a.modes,
                (true, Task::Jsonl(_)) => vec![Mode::Off, Mode::Lexical, Mode::Gold],
                (true, _) => vec![Mode::Off],
            },
            task,
            recipes,
            lengths,
            samples: a.samples,
            depths,
            seed: a.seed,
            window: a.window,
            sink: a.sink,
            sliding_rope: a.sliding_rope,
            fa_question: a.fa_question,
            full_layers: a.full_layers,
            adapter: cfg.adapter_for(&cfg.model).is_some(),
            think: a.think,
            haystack: a.haystack,
            out: a.out,
            model_name,
            progress: true,
        },
    )?;
    println!(
        "{}",
        report::markdown("eval", &out.rows).trim_start_matches("# eval\n\n")
    );
    println!(
        "results: {}\ntable:   {}\njson:    {}\nplot:    {}",
        out.results.display(),
        out.table.display(),
        out.json.display(),
        out.plot.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_scales_down_to_a_quarter_of_short_documents() {
        let swa = |len| recipe_for(Preset::Swaa, len, 8192, None, None);
        assert_eq!((swa(1024).window, swa(1024).sink), (Some(256), 8));
        assert_eq!(
            (swa(8192).window, swa(8192).sink),
            (Some(512), 16),
            "the model default caps it"
        );
        let fixed = recipe_for(Preset::SwaSink, 1024, 8192, Some(100), Some(2));
        assert_eq!((fixed.window, fixed.sink), (Some(100), 2));
        assert_eq!(
            recipe_for(Preset::Full, 1024, 8192, None, None).window,
            None
        );
    }

    #[test]
    fn depths_and_tasks_parse_with_clear_errors() {
        assert_eq!(parse_percent("50"), Ok(0.5));
        assert!(parse_percent("150").is_err());
        assert_eq!("needle".parse::<Task>(), Ok(Task::Needle));
        assert!("haystack".parse::<Task>().unwrap_err().contains(".jsonl"));
    }
}
