//! The engine owns model, tokenizer and cache. [`Session`] does the work synchronously
//! (used by `ask`, `eval` and tests); [`Engine`] runs a session on its own thread and speaks
//! in [`Command`]s and [`Event`]s, so a UI never blocks on it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::thread::JoinHandle;
use std::time::Instant;

use serde::Serialize;

use crate::model::{CacheStats, DecodeGraphs, KvCache, Logits, Model, ModelError};
use crate::recipe::{Phase, Recipe, RecipeDefaults};
use crate::sampling::{Sampler, SamplingParams};
use crate::tokenizer::{ChatMessage, ChatTokenizer, TokenStream};

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(
        "the prompt needs {needed} tokens (document {doc}, question and answer {rest}) but the model's context is {ctx}: \
         use --context-policy truncate-head or truncate-tail, a shorter document, or a model with a longer context"
    )]
    ContextOverflow {
        needed: usize,
        doc: usize,
        rest: usize,
        ctx: usize,
    },
    #[error(
        "the question and answer alone need {needed} tokens, more than the model's context of {ctx}: ask a shorter question or lower --max-tokens"
    )]
    QuestionTooLong { needed: usize, ctx: usize },
    #[error("cancelled")]
    Cancelled,
    #[error("the document is empty: nothing to read")]
    EmptyDocument,
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error(transparent)]
    Swat(#[from] crate::swat::SwatError),
}

impl From<candle_core::Error> for EngineError {
    fn from(e: candle_core::Error) -> Self {
        EngineError::Model(ModelError::Candle(e))
    }
}

pub type Result<T> = std::result::Result<T, EngineError>;

/// What to do with a document that does not fit the context.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, serde::Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum ContextPolicy {
    /// Refuse before any work.
    #[default]
    Error,
    /// Keep the end of the document.
    TruncateHead,
    /// Keep the beginning of the document.
    TruncateTail,
}

#[derive(Debug, Clone)]
pub struct SessionOptions {
    /// Prefill chunk size (tokens per step).
    pub chunk: usize,
    /// Context limit; defaults to the model's.
    pub ctx: Option<usize>,
    pub context_policy: ContextPolicy,
    pub sampling: SamplingParams,
    pub system_prompt: Option<String>,
}

impl Default for SessionOptions {
    fn default() -> Self {
        SessionOptions {
            chunk: 512,
            ctx: None,
            context_policy: ContextPolicy::Error,
            sampling: SamplingParams::default(),
            system_prompt: None,
        }
    }
}

/// Numbers for the stats panel and `--json`.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Stats {
    pub device: String,
    pub recipe: String,
    pub prompt_tokens: usize,
    pub generated_tokens: usize,
    pub prefill_seconds: f64,
    pub prefill_tokens_per_s: f64,
    pub decode_seconds: f64,
    pub decode_tokens_per_s: f64,
    /// From the question to the first answer token (includes any reading still to do).
    pub time_to_first_token_s: f64,
    pub cache: CacheStats,
    /// Positions `[from, to)` the newest query of a sliding layer sees besides the sink.
    pub window: Option<(usize, usize)>,
    pub sink: usize,
    pub full_layers: usize,
    pub sliding_layers: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct Answer {
    pub question: String,
    pub text: String,
    pub recipe: Recipe,
    pub stats: Stats,
    pub cancelled: bool,
}

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// Reading the document: `done` of `total` prompt tokens, and where the window is.
    Progress {
        done: usize,
        total: usize,
        window: Option<(usize, usize)>,
    },
    Token {
        text: String,
    },
    Stats(Stats),
    RecipeApplied {
        recipe: Recipe,
        reread: bool,
    },
    Done(Answer),
    Error {
        message: String,
    },
    /// A recipe comparison starts answering with `recipe`, the `index`th of those asked for.
    Comparing {
        index: usize,
        recipe: Recipe,
    },
    /// A recipe comparison finished: one answer per recipe, in the order asked.
    Compared(Vec<crate::eval::RecipeAnswer>),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    LoadDocument {
        title: String,
        text: String,
    },
    /// Prefill the document now (otherwise the first question does).
    Read,
    Ask {
        question: String,
    },
    SetRecipe(Recipe),
    SetSampling(SamplingParams),
    Reset,
    /// Answer `question` once per recipe from the document as read, then put the session
    /// (recipe, conversation, cache) back as it was.
    Compare {
        question: String,
        recipes: Vec<Recipe>,
    },
    Shutdown,
}

/// Everything the cache holds, as text and tokens, so a follow-up only adds its own part.
#[derive(Debug, Default, Clone)]
struct Transcript {
    /// The rendered chat text whose tokens are in the cache.
    text: String,
    tokens: Vec<u32>,
}

/// A session's state after a read (or any turn): restoring it answers a new question as if
/// the document had just been read, without reading it again. Holds a deep copy of the cache.
#[derive(Debug, Clone)]
pub struct Snapshot {
    cache: KvCache,
    recipe: Recipe,
    built_with: Option<Recipe>,
    document: Option<(String, String)>,
    history: Vec<(String, String)>,
    held: Transcript,
    last_stats: Stats,
}

pub struct Session {
    model: Model,
    tok: ChatTokenizer,
    cache: KvCache,
    recipe: Recipe,
    /// The recipe the cache was filled with (None: cache empty).
    built_with: Option<Recipe>,
    opts: SessionOptions,
    document: Option<(String, String)>,
    history: Vec<(String, String)>,
    held: Transcript,
    last_stats: Stats,
}

impl Session {
    pub fn new(model: Model, tok: ChatTokenizer, recipe: Recipe, opts: SessionOptions) -> Self {
        let cache = model.new_cache();
        Session {
            model,
            tok,
            cache,
            recipe,
            built_with: None,
            opts,
            document: None,
            history: Vec::new(),
            held: Transcript::default(),
            last_stats: Stats::default(),
        }
    }

    pub fn model(&self) -> &Model {
        &self.model
    }
    pub fn tokenizer(&self) -> &ChatTokenizer {
        &self.tok
    }
    pub fn recipe(&self) -> &Recipe {
        &self.recipe
    }
    pub fn cache(&self) -> &KvCache {
        &self.cache
    }
    pub fn recipe_defaults(&self) -> RecipeDefaults {
        RecipeDefaults::for_context(self.model.config().ctx)
    }
    pub fn ctx(&self) -> usize {
        self.opts.ctx.unwrap_or(self.model.config().ctx)
    }
    pub fn sampling(&self) -> &SamplingParams {
        &self.opts.sampling
    }
    /// Questions and answers so far (empty right after a read).
    pub fn history(&self) -> &[(String, String)] {
        &self.history
    }
    pub fn set_sampling(&mut self, s: SamplingParams) {
        self.opts.sampling = s;
    }

    /// Replaces the document and forgets the conversation.
    pub fn load_document(&mut self, title: &str, text: &str) {
        self.document = Some((title.to_string(), text.to_string()));
        self.reset();
    }

    /// Forgets the conversation and the cache (the document stays loaded).
    pub fn reset(&mut self) {
        self.history.clear();
        self.clear_cache();
    }

    fn clear_cache(&mut self) {
        self.cache.clear();
        self.held = Transcript::default();
        self.built_with = None;
    }

    /// Switches recipe. Returns true when what was read must be read again (the next
    /// `read`/`ask` does it); FA decode and thinking apply at once.
    pub fn set_recipe(&mut self, recipe: Recipe) -> bool {
        let reread = self
            .built_with
            .as_ref()
            .is_some_and(|b| recipe.needs_reread(b));
        if reread {
            self.clear_cache();
        }
        self.recipe = recipe;
        reread
    }

    fn messages(&self, question: Option<&str>) -> Vec<ChatMessage> {
        let mut m = Vec::new();
        if let Some(s) = &self.opts.system_prompt {
            m.push(ChatMessage {
                role: "system".into(),
                content: s.clone(),
            });
        }
        let mut first = true;
        let user = |q: &str, first: &mut bool| {
            let q = if self.recipe.think && !self.tok.supports_thinking() {
                format!("{q}\nThink step by step, then give the answer.")
            } else {
                q.to_string()
            };
            let content = match (&self.document, *first) {
                (Some((title, text)), true) => {
                    format!("Read this document, then answer.\n\n# {title}\n\n{text}\n\n---\n\n{q}")
                }
                _ => q,
            };
            *first = false;
            ChatMessage {
                role: "user".into(),
                content,
            }
        };
        for (q, a) in &self.history {
            m.push(user(q, &mut first));
            m.push(ChatMessage {
                role: "assistant".into(),
                content: a.clone(),
            });
        }
        if let Some(q) = question {
            m.push(user(q, &mut first));
        }
        m
    }

    fn render(&self, question: Option<&str>) -> Result<String> {
        self.tok
            .render_chat(
                &self.messages(question),
                question.is_some(),
                self.recipe.think,
            )
            .map_err(|e| EngineError::Tokenizer(e.to_string()))
    }

    fn encode(&self, text: &str) -> Result<Vec<u32>> {
        self.tok
            .encode(text, false)
            .map_err(|e| EngineError::Tokenizer(e.to_string()))
    }

    /// The document part of the first prompt: everything before the question, as text.
    fn document_prefix(&self) -> Result<Option<String>> {
        let Some((_, text)) = &self.document else {
            return Ok(None);
        };
        let marker = "\u{1}QUESTION\u{1}";
        let full = self.render(Some(marker))?;
        let end = full
            .find(text.as_str())
            .map(|i| i + text.len())
            .or_else(|| full.find(marker))
            .unwrap_or(0);
        Ok(Some(full[..end].to_string()))
    }

    /// Captures the cache and conversation, e.g. right after `read`, so that every later
    /// question can start from the read document (eval, recipe comparison, the reader).
    pub fn snapshot(&self) -> Result<Snapshot> {
        Ok(Snapshot {
            cache: self.cache.fork()?,
            recipe: self.recipe.clone(),
            built_with: self.built_with.clone(),
            document: self.document.clone(),
            history: self.history.clone(),
            held: self.held.clone(),
            last_stats: self.last_stats.clone(),
        })
    }

    /// Returns to a snapshot; the snapshot stays valid for further restores (the cache is
    /// copied, since answering writes to it and may evict). The next `ask` prefills only the
    /// question's tokens after what the snapshot held.
    pub fn restore(&mut self, snap: &Snapshot) -> Result<()> {
        self.cache = snap.cache.fork()?;
        self.recipe = snap.recipe.clone();
        self.built_with = snap.built_with.clone();
        self.document = snap.document.clone();
        self.history = snap.history.clone();
        self.held = snap.held.clone();
        self.last_stats = snap.last_stats.clone();
        Ok(())
    }

    /// Keys `[from, to)` besides the sink that the newest token sees in a sliding layer.
    fn window_range(&self) -> Option<(usize, usize)> {
        let q = self.cache.next_pos();
        let layer = (0..self.model.config().layers).find(|&l| !self.recipe.is_full_layer(l))?;
        let rule = self.recipe.rule(layer, Phase::Prefill);
        (q > 0).then(|| (rule.first_needed(q - 1), q))
    }

    fn stats_now(&self) -> Stats {
        let cfg = self.model.config();
        let sliding = (0..cfg.layers)
            .filter(|&l| !self.recipe.is_full_layer(l))
            .count();
        Stats {
            device: device_name(self.model.device()),
            recipe: self.recipe.to_string(),
            cache: self.cache.stats(),
            window: self.window_range(),
            sink: if self.recipe.window.is_some() {
                self.recipe.sink
            } else {
                0
            },
            full_layers: cfg.layers - sliding,
            sliding_layers: sliding,
            ..self.last_stats.clone()
        }
    }

    pub fn stats(&self) -> Stats {
        self.stats_now()
    }

    /// Prefills `tokens` after what the cache holds, chunk by chunk; returns the last logits.
    fn prefill(
        &mut self,
        tokens: &[u32],
        total: usize,
        emit: &mut dyn FnMut(Event),
        cancel: &AtomicBool,
    ) -> Result<Option<candle_core::Tensor>> {
        let chunk = self.opts.chunk.max(1);
        let cfg = *self.model.config();
        // Reserve once: growing per chunk would copy the cache over and over.
        let want = self.cache.next_pos() + tokens.len() + self.opts.sampling.max_new_tokens;
        for l in 0..cfg.layers {
            let bound = if self.recipe.layer_evicts(l) {
                self.recipe.sink + self.recipe.window.unwrap_or(0) + chunk
            } else {
                want
            };
            self.cache.reserve(l, bound.min(want))?;
        }
        // Set first: a cancelled read leaves a partial cache built with this recipe.
        self.built_with = Some(self.recipe.clone());
        let mut logits = None;
        let n = tokens.len();
        for (i, part) in tokens.chunks(chunk).enumerate() {
            if cancel.load(Ordering::Relaxed) {
                return Err(EngineError::Cancelled);
            }
            let last = (i + 1) * chunk >= n;
            let want = if last { Logits::Last } else { Logits::Skip };
            logits =
                self.model
                    .forward(part, &mut self.cache, &self.recipe, Phase::Prefill, want)?;
            self.held.tokens.extend_from_slice(part);
            // The cache grows (or stays flat) while reading: a UI shows it live. Before the
            // progress, so the last progress event finds the stats up to date.
            emit(Event::Stats(self.stats_now()));
            emit(Event::Progress {
                done: total - n + (i * chunk + part.len()),
                total,
                window: self.window_range(),
            });
        }
        Ok(logits)
    }

    /// Reads the document into the cache (resuming a cancelled read), with progress events.
    pub fn read(&mut self, emit: &mut dyn FnMut(Event), cancel: &AtomicBool) -> Result<()> {
        let Some(prefix) = self.document_prefix()? else {
            return Ok(());
        };
        if self
            .document
            .as_ref()
            .is_some_and(|(_, t)| t.trim().is_empty())
        {
            return Err(EngineError::EmptyDocument);
        }
        if !self.history.is_empty() || self.held.text.len() >= prefix.len() {
            return Ok(());
        }
        let mut tokens = self.encode(&prefix)?;
        let budget = self.ctx().saturating_sub(self.question_budget());
        if tokens.len() > budget {
            tokens = self.fit_document(tokens, budget)?;
        }
        let start = Instant::now();
        let done = self.held.tokens.len();
        let rest = tokens[done.min(tokens.len())..].to_vec();
        let total = tokens.len();
        self.prefill(&rest, total, emit, cancel)?;
        self.held.text = prefix;
        let secs = start.elapsed().as_secs_f64();
        tracing::info!(
            "read {} tokens in {secs:.2}s with {}",
            rest.len(),
            self.recipe
        );
        self.last_stats.prompt_tokens = total;
        self.last_stats.prefill_seconds = secs;
        self.last_stats.prefill_tokens_per_s = rest.len() as f64 / secs.max(1e-9);
        emit(Event::Stats(self.stats_now()));
        Ok(())
    }

    /// Reads again after a recipe change: the document, and the conversation so far when
    /// there is one, so the chat is kept and the next question only adds itself.
    pub fn reread(&mut self, emit: &mut dyn FnMut(Event), cancel: &AtomicBool) -> Result<()> {
        if self.history.is_empty() {
            return self.read(emit, cancel);
        }
        let text = self.render(None)?;
        let tokens = self.encode(&text)?;
        let needed = tokens.len() + self.question_budget();
        if needed > self.ctx() {
            return Err(EngineError::ContextOverflow {
                needed,
                doc: tokens.len(),
                rest: self.question_budget(),
                ctx: self.ctx(),
            });
        }
        let start = Instant::now();
        if let Err(e) = self.prefill(&tokens, tokens.len(), emit, cancel) {
            // Unlike a document, a partial conversation is not resumed: the next question
            // reads it all again.
            self.clear_cache();
            return Err(e);
        }
        self.held.text = text;
        let secs = start.elapsed().as_secs_f64();
        self.last_stats.prompt_tokens = tokens.len();
        self.last_stats.prefill_seconds = secs;
        self.last_stats.prefill_tokens_per_s = tokens.len() as f64 / secs.max(1e-9);
        Ok(())
    }

    /// Tokens kept free for a question and its answer.
    fn question_budget(&self) -> usize {
        256 + self.opts.sampling.max_new_tokens
    }

    /// Applies the context policy to a document that does not fit.
    fn fit_document(&self, tokens: Vec<u32>, budget: usize) -> Result<Vec<u32>> {
        let n = tokens.len();
        match self.opts.context_policy {
            ContextPolicy::Error => Err(EngineError::ContextOverflow {
                needed: n + self.question_budget(),
                doc: n,
                rest: self.question_budget(),
                ctx: self.ctx(),
            }),
            // Keep the template's head (role markers) in both cases.
            ContextPolicy::TruncateHead => {
                let head = 16.min(budget);
                Ok(tokens[..head]
                    .iter()
                    .chain(&tokens[n - (budget - head)..])
                    .copied()
                    .collect())
            }
            ContextPolicy::TruncateTail => Ok(tokens[..budget].to_vec()),
        }
    }

    /// Answers a question about the loaded document (or a plain chat turn), streaming tokens.
    pub fn ask(
        &mut self,
        question: &str,
        emit: &mut dyn FnMut(Event),
        cancel: &AtomicBool,
    ) -> Result<Answer> {
        let t0 = Instant::now();
        self.read(emit, cancel)?;
        let full = self.render(Some(question))?;
        // A follow-up extends what is cached; anything else starts over.
        if !full.starts_with(&self.held.text) {
            self.clear_cache();
            self.read(emit, cancel)?;
        }
        let new_text = full[self.held.text.len()..].to_string();
        let new_tokens = self.encode(&new_text)?;
        let ctx = self.ctx();
        let needed = self.held.tokens.len() + new_tokens.len() + self.opts.sampling.max_new_tokens;
        if needed > ctx {
            return Err(if self.held.tokens.is_empty() {
                EngineError::QuestionTooLong { needed, ctx }
            } else {
                EngineError::ContextOverflow {
                    needed,
                    doc: self.held.tokens.len(),
                    rest: new_tokens.len() + self.opts.sampling.max_new_tokens,
                    ctx,
                }
            });
        }
        let p0 = Instant::now();
        let total = self.held.tokens.len() + new_tokens.len();
        let logits = self.prefill(&new_tokens, total, emit, cancel)?;
        self.held.text = full;
        let prefill_secs = p0.elapsed().as_secs_f64();
        let mut logits = logits.ok_or_else(|| EngineError::Tokenizer("empty prompt".into()))?;

        let mut sampler = Sampler::new(&self.opts.sampling);
        let mut stream = TokenStream::new(&self.tok);
        let mut out_ids: Vec<u32> = Vec::new();
        let mut text = String::new();
        let mut ttft = None;
        let d0 = Instant::now();
        let mut cancelled = false;
        let stops = self.tok.stop_token_ids().to_vec();
        // On CUDA the steps replay one captured graph (`Model::decode_step`).
        let mut graphs = DecodeGraphs::new(true);
        for _ in 0..self.opts.sampling.max_new_tokens {
            // The penalty looks at the last `repeat_last_n` tokens: copy only those, not the
            // whole context, each step.
            let held = &self.held.tokens;
            let tail = held.len().saturating_sub(self.opts.sampling.repeat_last_n);
            let recent: Vec<u32> = held[tail..].iter().chain(&out_ids).copied().collect();
            let next = sampler.sample(&logits, &recent)?;
            if stops.contains(&next) {
                break;
            }
            ttft.get_or_insert_with(|| t0.elapsed().as_secs_f64());
            out_ids.push(next);
            if let Some(piece) = stream
                .push(next)
                .map_err(|e| EngineError::Tokenizer(e.to_string()))?
            {
                text.push_str(&piece);
                emit(Event::Token { text: piece });
            }
            // Every emitted token goes through the model, so the cache matches the transcript
            // even when cancelled (a partial answer stays in the conversation).
            logits = self
                .model
                .decode_step(next, &mut self.cache, &self.recipe, &mut graphs)?;
            self.held.tokens.push(next);
            if cancel.load(Ordering::Relaxed) {
                cancelled = true;
                break;
            }
        }
        if let Some(rest) = stream
            .finish()
            .map_err(|e| EngineError::Tokenizer(e.to_string()))?
        {
            text.push_str(&rest);
            emit(Event::Token { text: rest });
        }
        let decode_secs = d0.elapsed().as_secs_f64();
        self.held.text.push_str(&text);
        self.history.push((question.to_string(), text.clone()));
        self.last_stats.prompt_tokens = total;
        self.last_stats.generated_tokens = out_ids.len();
        self.last_stats.prefill_seconds = prefill_secs;
        self.last_stats.prefill_tokens_per_s = new_tokens.len() as f64 / prefill_secs.max(1e-9);
        self.last_stats.decode_seconds = decode_secs;
        self.last_stats.decode_tokens_per_s = out_ids.len() as f64 / decode_secs.max(1e-9);
        self.last_stats.time_to_first_token_s = ttft.unwrap_or(t0.elapsed().as_secs_f64());
        let stats = self.stats_now();
        tracing::info!(
            "answered: {} prompt tokens at {:.1} tok/s, {} generated at {:.1} tok/s, TTFT {:.2}s, {}",
            new_tokens.len(),
            stats.prefill_tokens_per_s,
            out_ids.len(),
            stats.decode_tokens_per_s,
            stats.time_to_first_token_s,
            self.recipe
        );
        emit(Event::Stats(stats.clone()));
        Ok(Answer {
            question: question.to_string(),
            text,
            recipe: self.recipe.clone(),
            stats,
            cancelled,
        })
    }
}

/// What the engine thread drives: a transformer [`Session`], or a trained SWAT model
/// ([`crate::swat::chat::SwatSession`]); both answer the same commands with the same events.
pub trait Backend: Send {
    /// Replaces the document and forgets the conversation.
    fn load_document(&mut self, title: &str, text: &str);
    /// Reads the document into the cache, with progress events.
    fn read(&mut self, emit: &mut dyn FnMut(Event), cancel: &AtomicBool) -> Result<()>;
    /// Answers a question about the document (or a plain chat turn), streaming tokens.
    fn ask(
        &mut self,
        question: &str,
        emit: &mut dyn FnMut(Event),
        cancel: &AtomicBool,
    ) -> Result<Answer>;
    /// Switches recipe; `Ok(true)` when what was read must be read again.
    fn set_recipe(&mut self, recipe: Recipe) -> Result<bool>;
    /// Reads again after a recipe change, keeping the chat.
    fn reread(&mut self, emit: &mut dyn FnMut(Event), cancel: &AtomicBool) -> Result<()>;
    fn set_sampling(&mut self, s: SamplingParams);
    /// Forgets the conversation and the cache (the document stays loaded).
    fn reset(&mut self);
    fn stats(&self) -> Stats;
    /// Answers `question` under each recipe from the same read, leaving the session as it
    /// was (the reader's `:eval`).
    fn compare(
        &mut self,
        question: &str,
        recipes: &[Recipe],
        emit: &mut dyn FnMut(Event),
        cancel: &AtomicBool,
    ) -> Result<Vec<crate::eval::RecipeAnswer>>;
}

impl Backend for Session {
    fn load_document(&mut self, title: &str, text: &str) {
        Session::load_document(self, title, text)
    }
    fn read(&mut self, emit: &mut dyn FnMut(Event), cancel: &AtomicBool) -> Result<()> {
        Session::read(self, emit, cancel)
    }
    fn ask(
        &mut self,
        question: &str,
        emit: &mut dyn FnMut(Event),
        cancel: &AtomicBool,
    ) -> Result<Answer> {
        Session::ask(self, question, emit, cancel)
    }
    fn set_recipe(&mut self, recipe: Recipe) -> Result<bool> {
        Ok(Session::set_recipe(self, recipe))
    }
    fn reread(&mut self, emit: &mut dyn FnMut(Event), cancel: &AtomicBool) -> Result<()> {
        Session::reread(self, emit, cancel)
    }
    fn set_sampling(&mut self, s: SamplingParams) {
        Session::set_sampling(self, s)
    }
    fn reset(&mut self) {
        Session::reset(self)
    }
    fn stats(&self) -> Stats {
        Session::stats(self)
    }
    fn compare(
        &mut self,
        question: &str,
        recipes: &[Recipe],
        emit: &mut dyn FnMut(Event),
        cancel: &AtomicBool,
    ) -> Result<Vec<crate::eval::RecipeAnswer>> {
        crate::eval::compare_recipes(self, question, recipes, emit, cancel)
    }
}

pub fn device_name(d: &candle_core::Device) -> String {
    match d {
        candle_core::Device::Cpu => "cpu".into(),
        candle_core::Device::Cuda(_) => "cuda".into(),
        candle_core::Device::Metal(_) => "metal".into(),
    }
}

/// A session on its own thread. Cancel is a flag, not a command: the thread is busy when it
/// matters, and checks the flag between chunks and tokens.
pub struct Engine {
    tx: Sender<Command>,
    rx: Receiver<Event>,
    cancel: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Engine {
    pub fn spawn(mut backend: Box<dyn Backend>) -> Self {
        let (tx, cmd_rx) = channel::<Command>();
        let (ev_tx, rx) = channel::<Event>();
        let cancel = Arc::new(AtomicBool::new(false));
        let flag = cancel.clone();
        let thread = std::thread::Builder::new()
            .name("swaa-engine".into())
            .spawn(move || run(backend.as_mut(), cmd_rx, ev_tx, flag))
            .expect("spawn engine thread");
        Engine {
            tx,
            rx,
            cancel,
            thread: Some(thread),
        }
    }

    /// Sends a command; a new command clears a pending cancel.
    pub fn send(&self, cmd: Command) {
        // A closed channel means the thread ended; its last event said why.
        let _ = self.tx.send(cmd);
    }

    pub fn cancel(&self) {
        self.cancel.store(true, Ordering::Relaxed);
    }

    pub fn events(&self) -> &Receiver<Event> {
        &self.rx
    }

    /// Takes the event receiver, e.g. to forward events into an async loop from a thread of
    /// its own; [`Self::events`] is empty afterwards.
    pub fn take_events(&mut self) -> Receiver<Event> {
        std::mem::replace(&mut self.rx, channel().1)
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.cancel();
        let _ = self.tx.send(Command::Shutdown);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(s: &mut dyn Backend, rx: Receiver<Command>, tx: Sender<Event>, cancel: Arc<AtomicBool>) {
    let mut emit = |e: Event| {
        let _ = tx.send(e);
    };
    while let Ok(cmd) = rx.recv() {
        cancel.store(false, Ordering::Relaxed);
        let result = match cmd {
            Command::Shutdown => break,
            Command::LoadDocument { title, text } => {
                s.load_document(&title, &text);
                Ok(())
            }
            Command::Read => s.read(&mut emit, &cancel),
            Command::Ask { question } => s
                .ask(&question, &mut emit, &cancel)
                .map(|a| emit(Event::Done(a))),
            Command::SetRecipe(r) => s.set_recipe(r.clone()).and_then(|reread| {
                emit(Event::RecipeApplied { recipe: r, reread });
                if reread {
                    s.reread(&mut emit, &cancel)
                } else {
                    Ok(())
                }
            }),
            Command::SetSampling(p) => {
                s.set_sampling(p);
                Ok(())
            }
            Command::Reset => {
                s.reset();
                Ok(())
            }
            Command::Compare { question, recipes } => s
                .compare(&question, &recipes, &mut emit, &cancel)
                .map(|answers| emit(Event::Compared(answers))),
        };
        if let Err(e) = result {
            emit(Event::Error {
                message: e.to_string(),
            });
        }
        emit(Event::Stats(s.stats()));
    }
}
