//! [`Session`]: a model, its tokenizer and its cache, reading a document and answering
//! questions synchronously (the engine thread, `ask`, `eval` and tests drive it).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use super::prompt::{self, ContextPolicy, Prompt, QUESTION_MARKER};
use super::stats::{Answer, Stats};
use super::{EngineError, Event, Result};
use crate::model::{DecodeGraphs, KvCache, Logits, Model};
use crate::recipe::{Phase, Recipe, RecipeDefaults};
use crate::sampling::{Sampler, SamplingParams, repeated_tail};
use crate::tokenizer::{ChatTokenizer, TokenStream};

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
    /// Names the model's weights for what is stored under the cache dir (calibration).
    model_id: Option<String>,
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
            model_id: None,
        }
    }

    /// Names the weights (e.g. file, size and time) so that calibration scores can be kept.
    pub fn set_model_id(&mut self, id: String) {
        self.model_id = Some(id);
    }

    /// `recipe` ready to run: `auto` full layers become the calibrated list for its window
    /// and sink (a calibration read the first time, then from the cache dir).
    pub fn resolve_recipe(&self, recipe: Recipe) -> Result<Recipe> {
        super::calibrate::resolve(&self.model, &self.tok, self.model_id.as_deref(), recipe)
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
    /// `read`/`ask` does it); FA decode and thinking apply at once. This is the one place
    /// that decides: the engine tells a UI with [`Event::RecipeApplied`]. `auto` full layers
    /// must be resolved first ([`Session::resolve_recipe`]; the engine's backend does).
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

    fn prompt(&self) -> Prompt<'_> {
        Prompt {
            system: self.opts.system_prompt.as_deref(),
            document: self
                .document
                .as_ref()
                .map(|(t, x)| (t.as_str(), x.as_str())),
            history: &self.history,
            step_by_step: self.recipe.think && !self.tok.supports_thinking(),
        }
    }

    fn render(&self, question: Option<&str>) -> Result<String> {
        self.tok
            .render_chat_marked(
                &self.prompt().messages(question),
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

    /// `text`'s tokens, and for each the byte offset in the document where it starts
    /// (0 before the document, its length after it): a UI maps cache positions to text
    /// with these, from the very encoding that is read.
    fn encode_mapped(&self, text: &str) -> Result<(Vec<u32>, Vec<usize>)> {
        self.encode_mapped_slice(text, 0..text.len())
    }

    /// [`Session::encode_mapped`] of `text[range]` alone, offsets still into the document.
    fn encode_mapped_slice(
        &self,
        text: &str,
        range: std::ops::Range<usize>,
    ) -> Result<(Vec<u32>, Vec<usize>)> {
        let (ids, starts) = self
            .tok
            .encode_with_offsets(&text[range.clone()], false)
            .map_err(|e| EngineError::Tokenizer(e.to_string()))?;
        let (start, len) = match &self.document {
            Some((_, doc)) => (text.find(doc.as_str()).unwrap_or(0), doc.len()),
            None => (0, 0),
        };
        let offsets = starts
            .iter()
            .map(|&s| (range.start + s).saturating_sub(start).min(len))
            .collect();
        Ok((ids, offsets))
    }

    /// The prefix's tokens for a read of at most `budget` tokens, without tokenizing all of a
    /// document far past the context (a 200 MB text took 28 GB): slices of the beginning grow
    /// until they hold more than `budget` tokens or are the whole prefix. Returns the tokens
    /// and offsets of that slice, and the prefix's length over the slice's.
    fn encode_bounded(&self, prefix: &str, budget: usize) -> Result<(Vec<u32>, Vec<usize>, f64)> {
        let mut len = budget.saturating_mul(8).max(1 << 16);
        loop {
            if len >= prefix.len() {
                let (t, o) = self.encode_mapped(prefix)?;
                return Ok((t, o, 1.0));
            }
            let end = (0..=len)
                .rev()
                .find(|&i| prefix.is_char_boundary(i))
                .unwrap_or(0);
            let (t, o) = self.encode_mapped_slice(prefix, 0..end)?;
            if t.len() > budget {
                return Ok((t, o, prefix.len() as f64 / end.max(1) as f64));
            }
            len = len.saturating_mul(2);
        }
    }

    /// The document part of the first prompt: everything before the question, as text.
    fn document_prefix(&self) -> Result<Option<String>> {
        let Some((_, text)) = &self.document else {
            return Ok(None);
        };
        Ok(Some(prompt::document_prefix(
            &self.render(Some(QUESTION_MARKER))?,
            text,
        )))
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

    pub fn stats(&self) -> Stats {
        let cfg = self.model.config();
        let sliding = (0..cfg.layers)
            .filter(|&l| !self.recipe.is_full_layer(l))
            .count();
        Stats {
            device: crate::model::device_name(self.model.device()),
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

    /// Prefills `tokens` after what the cache holds, chunk by chunk, in `phase` (the
    /// document and a re-read transcript are `Prefill`, a question is `Question`); returns
    /// the last logits.
    fn prefill(
        &mut self,
        tokens: &[u32],
        phase: Phase,
        total: usize,
        emit: &mut dyn FnMut(Event),
        cancel: &AtomicBool,
    ) -> Result<Option<candle_core::Tensor>> {
        let chunk = self.opts.chunk.max(1);
        let cfg = *self.model.config();
        // Reserve once: growing per chunk would copy the cache over and over.
        let want = self.cache.next_pos() + tokens.len() + self.opts.sampling.max_new_tokens;
        for l in 0..cfg.layers {
            self.cache
                .reserve(l, self.recipe.cache_tokens(l, want, chunk))?;
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
            logits = self
                .model
                .forward(part, &mut self.cache, &self.recipe, phase, want)?;
            self.held.tokens.extend_from_slice(part);
            // The cache grows (or stays flat) while reading: a UI shows it live. Before the
            // progress, so the last progress event finds the stats up to date.
            emit(Event::Stats(self.stats()));
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
        let budget = self.ctx().saturating_sub(self.question_budget());
        let (mut tokens, mut offsets, scale) = self.encode_bounded(&prefix, budget)?;
        if tokens.len() > budget {
            let policy = self.opts.context_policy;
            if scale > 1.0 {
                if policy == ContextPolicy::TruncateHead {
                    // The end of the document is kept: tokenize as much of the end as the
                    // beginning took, after the template's head.
                    let from = prefix.len() - (prefix.len() as f64 / scale) as usize;
                    let from = (from..=prefix.len())
                        .find(|&i| prefix.is_char_boundary(i))
                        .unwrap_or(prefix.len());
                    let (t, o) = self.encode_mapped_slice(&prefix, from..prefix.len())?;
                    let head = 16.min(budget).min(tokens.len());
                    tokens.truncate(head);
                    offsets.truncate(head);
                    tokens.extend(t);
                    offsets.extend(o);
                } else if policy == ContextPolicy::Error {
                    // Only the beginning was tokenized: the whole is estimated from it.
                    let doc = (tokens.len() as f64 * scale) as usize;
                    return Err(EngineError::ContextOverflow {
                        needed: doc + self.question_budget(),
                        doc,
                        rest: self.question_budget(),
                        ctx: self.ctx(),
                    });
                }
            }
            match prompt::fit(&tokens, budget, policy) {
                Some(t) => {
                    tokens = t;
                    offsets = prompt::fit(&offsets, budget, policy).unwrap_or_default();
                }
                None => {
                    return Err(EngineError::ContextOverflow {
                        needed: tokens.len() + self.question_budget(),
                        doc: tokens.len(),
                        rest: self.question_budget(),
                        ctx: self.ctx(),
                    });
                }
            }
        }
        emit(Event::DocumentTokens { offsets });
        let start = Instant::now();
        let done = self.held.tokens.len();
        let rest = tokens[done.min(tokens.len())..].to_vec();
        let total = tokens.len();
        self.prefill(&rest, Phase::Prefill, total, emit, cancel)?;
        self.held.text = prefix;
        let secs = start.elapsed().as_secs_f64();
        tracing::info!(
            "read {} tokens in {secs:.2}s with {}",
            rest.len(),
            self.recipe
        );
        self.last_stats.record_read(total, rest.len(), secs);
        emit(Event::Stats(self.stats()));
        Ok(())
    }

    /// Reads again after a recipe change: the document, and the conversation so far when
    /// there is one, so the chat is kept and the next question only adds itself.
    pub fn reread(&mut self, emit: &mut dyn FnMut(Event), cancel: &AtomicBool) -> Result<()> {
        if self.history.is_empty() {
            return self.read(emit, cancel);
        }
        let text = self.render(None)?;
        let (tokens, offsets) = self.encode_mapped(&text)?;
        let needed = tokens.len() + self.question_budget();
        if needed > self.ctx() {
            return Err(EngineError::ContextOverflow {
                needed,
                doc: tokens.len(),
                rest: self.question_budget(),
                ctx: self.ctx(),
            });
        }
        emit(Event::DocumentTokens { offsets });
        let start = Instant::now();
        if let Err(e) = self.prefill(&tokens, Phase::Prefill, tokens.len(), emit, cancel) {
            // Unlike a document, a partial conversation is not resumed: the next question
            // reads it all again.
            self.clear_cache();
            return Err(e);
        }
        self.held.text = text;
        let secs = start.elapsed().as_secs_f64();
        self.last_stats
            .record_read(tokens.len(), tokens.len(), secs);
        Ok(())
    }

    /// Tokens kept free for a question and its answer.
    fn question_budget(&self) -> usize {
        256 + self.opts.sampling.max_new_tokens
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
        let logits = self.prefill(&new_tokens, Phase::Question, total, emit, cancel)?;
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
        let mut note = None;
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
            if let Some((span, run)) = repeated_tail(&out_ids, self.opts.sampling.stop_repeats) {
                note = Some(format!(
                    "stopped: the answer repeated a {span}-token span {} times",
                    run / span
                ));
                break;
            }
        }
        if note.is_none() && !cancelled && out_ids.len() >= self.opts.sampling.max_new_tokens {
            note = Some(format!(
                "stopped at the {}-token cap (--max-tokens)",
                out_ids.len()
            ));
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
        self.last_stats
            .record_prefill(total, new_tokens.len(), prefill_secs);
        self.last_stats.record_decode(out_ids.len(), decode_secs);
        self.last_stats.time_to_first_token_s = ttft.unwrap_or(t0.elapsed().as_secs_f64());
        let stats = self.stats();
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
            note,
        })
    }
}
