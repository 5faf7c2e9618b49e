//! [`Session`]: a model, its tokenizer and its cache, reading a document and answering
//! questions synchronously (the engine thread, `ask`, `eval` and tests drive it).

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Instant;

mod book;

pub use book::Choose;

use super::prompt::{self, ContextPolicy, Prompt, QUESTION_MARKER};
use super::stats::{Answer, Restored, Stats};
use super::{EngineError, Event, Result};
use crate::book::{Focus, Selection};
use crate::document::{Document, Section};
use crate::model::{DecodeGraphs, KvCache, Logits, Model};
use crate::readcache::{self, About, Key, Lookup, ReadCache, Saved};
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
    /// Where finished reads are stored and restored from (None: every open reads).
    pub read_cache: Option<ReadCache>,
    /// How a question chooses what it reads of a document longer than `effective_ctx`.
    pub focus: Focus,
    /// The most context the model answers well from (None: its whole context): a longer
    /// document is answered in book mode.
    pub effective_ctx: Option<usize>,
}

impl Default for SessionOptions {
    fn default() -> Self {
        SessionOptions {
            chunk: 512,
            ctx: None,
            context_policy: ContextPolicy::Error,
            sampling: SamplingParams::default(),
            system_prompt: None,
            read_cache: None,
            focus: Focus::default(),
            effective_ctx: None,
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
    /// SHA-256 of tokenizer and template, computed on the first stored read.
    tokenizer_id: OnceLock<String>,
    /// The stored read being written on its own thread.
    saving: Option<JoinHandle<std::result::Result<Saved, String>>>,
    /// Notes for the user not yet emitted (a save that failed).
    notes: Vec<String>,
    /// The loaded document for book mode.
    book: Option<book::BookState>,
    /// What the question being answered in book mode reads.
    excerpts: Option<Selection>,
    /// The whole book as the attention selector read it.
    book_read: Option<book::BookRead>,
    /// Byte offsets in the excerpts of the last book-mode read's tokens (see `encode_mapped`).
    doc_offsets: Vec<usize>,
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
            tokenizer_id: OnceLock::new(),
            saving: None,
            notes: Vec::new(),
            book: None,
            excerpts: None,
            book_read: None,
            doc_offsets: Vec::new(),
        }
    }

    /// A note for the user, emitted with the next read or answer (`Event::Note`).
    pub fn note(&mut self, message: String) {
        self.notes.push(message);
    }

    /// Names the weights (`open::weights_identity`) so that calibration scores can be kept.
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
        self.load_sections(title, "section", text, &[]);
    }

    /// [`Session::load_document`] with the document's pages or chapters, which book mode
    /// selects from and cites.
    pub fn load(&mut self, doc: &Document) {
        self.load_sections(&doc.title, doc.section_noun(), &doc.text, &doc.sections);
    }

    /// [`Session::load`] from the parts of a document: `noun` names a section ("page").
    pub fn load_sections(&mut self, title: &str, noun: &str, text: &str, sections: &[Section]) {
        self.document = Some((title.to_string(), text.to_string()));
        self.book = Some(book::BookState::new(title, noun, sections));
        self.excerpts = None;
        self.book_read = None;
        self.reset();
    }

    /// Forgets the conversation and the cache (the document stays loaded; in book mode the
    /// whole document again, not the last question's excerpts).
    pub fn reset(&mut self) {
        if self.excerpts.take().is_some()
            && let Some(book) = self.book()
        {
            self.document = Some((book.title.clone(), book.text.clone()));
        }
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
        self.book_recipe_changes(&recipe);
        // A cancelled re-read of a conversation leaves nothing to build on: any recipe reads
        // it again (it said "applies at once", and the next question re-read it silently).
        let reread = self.conversation_lost()
            || self
                .built_with
                .as_ref()
                .is_some_and(|b| recipe.needs_reread(b));
        if reread {
            self.clear_cache();
        } else if (0..self.model.config().layers)
            .any(|l| recipe.layer_evicts(l) && !self.recipe.layer_evicts(l))
        {
            // A save reads non-evicting layers in place; evicting now would compact them.
            self.finish_save(true);
        }
        self.recipe = recipe;
        reread
    }

    /// The conversation is not in the cache (a re-read of it was cancelled).
    fn conversation_lost(&self) -> bool {
        !self.history.is_empty() && self.held.tokens.is_empty()
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
            .encode_range_with_offsets(text, range.clone(), false)
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

    /// The ids a first question about the loaded document is prefilled with, encoded as
    /// `read` and `ask` encode them (the document part, then the question's part), and where
    /// the question's part starts: `finetune` trains on exactly what the reader runs.
    pub fn prompt_ids(&self, question: &str) -> Result<(Vec<u32>, usize)> {
        let prefix = self.document_prefix()?.unwrap_or_default();
        let full = self.render(Some(question))?;
        let Some(rest) = full.strip_prefix(prefix.as_str()) else {
            return Ok((self.encode(&full)?, 0));
        };
        let mut ids = self.encode(&prefix)?;
        let start = ids.len();
        ids.extend(self.encode(rest)?);
        Ok((ids, start))
    }

    /// Runs `model` (the same shape and tokenizer, other weights: an adapter merged) from now
    /// on, with an empty cache; returns the one it replaces.
    pub fn replace_model(&mut self, model: Model) -> Model {
        self.finish_save(true);
        let old = std::mem::replace(&mut self.model, model);
        self.reset();
        old
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
        // Excerpts' positions are not the document's: no window to show in it.
        if self.excerpts.is_some() {
            return None;
        }
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
    /// document and a re-read transcript are `Prefill`, a question is `Question`), reporting
    /// progress out of `total` (counted from what the cache held before); returns the last
    /// logits.
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
        let before = self.held.tokens.len();
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
                done: before + i * chunk + part.len(),
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
        if self.book_mode()? && self.excerpts.is_none() {
            // Each question reads the passages it chooses.
            return self.read_for_book_mode(emit, cancel);
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
        // Excerpts' offsets are not the document's (a UI would highlight the wrong text):
        // they are kept to map an answer's attention to pages.
        if self.excerpts.is_some() {
            self.doc_offsets = offsets;
        } else {
            emit(Event::DocumentTokens { offsets });
        }
        let done = self.held.tokens.len();
        if done == 0
            && let Some(r) = self.load_stored(&tokens, emit)
        {
            let n = tokens.len();
            self.held = Transcript {
                text: prefix,
                tokens,
            };
            self.last_stats.record_read(n, 0, r.seconds);
            emit(Event::Stats(self.stats()));
            emit(Event::Progress {
                done: n,
                total: n,
                window: self.window_range(),
            });
            // After the progress, whose end a UI reports as "read": this says how.
            emit(Event::Note { message: r.line() });
            self.last_stats.restored = Some(r);
            emit(Event::Stats(self.stats()));
            return Ok(());
        }
        let start = Instant::now();
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
        self.last_stats.restored = None;
        // Only a whole read is stored: a cancelled one returned above.
        self.save_read(&tokens);
        emit(Event::Stats(self.stats()));
        Ok(())
    }

    fn read_key(&self, model: &str, tokens: &[u32]) -> Key {
        let tokenizer = self.tokenizer_id.get_or_init(|| {
            let t = &self.tok;
            let json = t.inner().to_string(false).unwrap_or_default();
            let extra = format!(
                "{:?}{:?}{:?}{}",
                t.bos_token(),
                t.eos_token(),
                t.stop_token_ids(),
                t.chat_template()
            );
            readcache::sha256_hex(format!("{json}{extra}").as_bytes())
        });
        Key {
            model: model.to_string(),
            runtime: format!("{:?} {}", self.model.config(), self.model.dtype().as_str()),
            tokenizer: tokenizer.clone(),
            recipe: self.recipe.clone(),
            eviction: self.cache.eviction(),
            tokens: readcache::tokens_hash(tokens),
        }
    }

    /// Tokens each layer should have room for after reading `n`: as `prefill` reserves.
    fn capacities(&self, n: usize) -> Vec<usize> {
        let want = n + self.question_budget();
        (0..self.model.config().layers)
            .map(|l| {
                if self.recipe.layer_evicts(l) && self.cache.eviction() {
                    let bound = self.recipe.sink + self.recipe.window.unwrap_or(0);
                    (bound + self.opts.chunk.max(1)).min(want)
                } else {
                    want
                }
            })
            .collect()
    }

    /// Loads the stored read of `tokens` into the (empty) cache when the read cache holds
    /// one (a note says why an entry could not be used); the caller records what the cache
    /// now holds and says so.
    fn load_stored(&mut self, tokens: &[u32], emit: &mut dyn FnMut(Event)) -> Option<Restored> {
        // Excerpts chosen for one question are not worth a stored read.
        let rc = self
            .opts
            .read_cache
            .clone()
            .filter(|_| self.excerpts.is_none())?;
        // The entry may be the one still being written (a recipe switched back and forth).
        self.finish_save(true);
        self.flush_notes(emit);
        let t0 = Instant::now();
        let key = self.read_key(&rc.model, tokens);
        let capacity = self.capacities(tokens.len());
        match rc.store.load(&key, &mut self.cache, &capacity) {
            Lookup::Restored { bytes } => {
                self.built_with = Some(self.recipe.clone());
                let r = Restored {
                    tokens: tokens.len(),
                    bytes,
                    seconds: t0.elapsed().as_secs_f64(),
                };
                tracing::info!("{} with {}", r.line(), self.recipe);
                Some(r)
            }
            Lookup::Missing => None,
            Lookup::Ignored(note) => {
                tracing::warn!("{note}");
                emit(Event::Note { message: note });
                None
            }
        }
    }

    /// Stores the read just finished (the cache holds exactly `tokens`) on a thread of its
    /// own, so the first answer does not wait for the disk.
    fn save_read(&mut self, tokens: &[u32]) {
        let Some(rc) = self
            .opts
            .read_cache
            .clone()
            .filter(|_| self.excerpts.is_none())
        else {
            return;
        };
        self.finish_save(true);
        let key = self.read_key(&rc.model, tokens);
        let layers = self.model.config().layers;
        // Evicting layers are small and will be compacted in place: copy them. The rest are
        // read in place by the saving thread (see `KvCache::export`).
        let copy: Vec<bool> = (0..layers)
            .map(|l| self.cache.eviction() && self.recipe.layer_evicts(l))
            .collect();
        let exported = self.cache.export(&copy).and_then(|held| {
            // A GPU stream is not shared with another thread (a decode graph may be capturing
            // on it): device caches come to the host here, which is fast there.
            if self.cache.device().is_cpu() {
                return Ok(held);
            }
            held.into_iter()
                .map(|mut h| {
                    h.k = h.k.to_device(&candle_core::Device::Cpu)?;
                    h.v = h.v.to_device(&candle_core::Device::Cpu)?;
                    Ok(h)
                })
                .collect()
        });
        let held = match exported {
            Ok(h) => h,
            Err(e) => {
                self.notes.push(format!("could not store the read: {e}"));
                return;
            }
        };
        let about = About {
            title: self
                .document
                .as_ref()
                .map(|d| d.0.clone())
                .unwrap_or_default(),
            model_name: rc.model_name.clone(),
            recipe: self.recipe.to_string(),
            tokens: tokens.len(),
        };
        let next_pos = self.cache.next_pos();
        let spawned = std::thread::Builder::new()
            .name("swaa-store".into())
            .spawn(move || rc.store.save(&key, about, &held, next_pos));
        match spawned {
            Ok(h) => self.saving = Some(h),
            Err(e) => self.notes.push(format!("could not store the read: {e}")),
        }
    }

    /// Collects a finished save (or waits for it with `wait`); a failure becomes a note.
    fn finish_save(&mut self, wait: bool) {
        let Some(h) = self.saving.take() else {
            return;
        };
        if !wait && !h.is_finished() {
            self.saving = Some(h);
            return;
        }
        match h.join() {
            Ok(Ok(saved)) => tracing::info!(
                "stored the read in {} ({} bytes, {} older entries evicted)",
                saved.path.display(),
                saved.bytes,
                saved.evicted
            ),
            Ok(Err(note)) => {
                tracing::warn!("{note}");
                self.notes.push(note);
            }
            Err(_) => self.notes.push("storing the read failed".into()),
        }
    }

    fn flush_notes(&mut self, emit: &mut dyn FnMut(Event)) {
        for message in self.notes.drain(..) {
            emit(Event::Note { message });
        }
    }

    /// Reads again after a recipe change: the document, and the conversation so far when
    /// there is one, so the chat is kept and the next question only adds itself. With a read
    /// cache the document part goes first on its own, so that a stored read of it under the
    /// new recipe is restored (or this read of it is stored) and only the chat is read.
    pub fn reread(&mut self, emit: &mut dyn FnMut(Event), cancel: &AtomicBool) -> Result<()> {
        if self.history.is_empty() {
            return self.read(emit, cancel);
        }
        let text = self.render(None)?;
        let split = match self.document_prefix()? {
            Some(p) if self.opts.read_cache.is_some() && text.starts_with(&p) => Some(p),
            _ => None,
        };
        let (doc, chat, offsets) = match split {
            Some(p) => {
                let (doc, mut offsets) = self.encode_mapped(&p)?;
                let chat = self.encode(&text[p.len()..])?;
                // Chat tokens come after the document (see `encode_mapped`).
                let end = self.document.as_ref().map_or(0, |d| d.1.len());
                offsets.extend(std::iter::repeat_n(end, chat.len()));
                (doc, chat, offsets)
            }
            None => {
                let (tokens, offsets) = self.encode_mapped(&text)?;
                (tokens, Vec::new(), offsets)
            }
        };
        let total = doc.len() + chat.len();
        let needed = total + self.question_budget();
        if needed > self.ctx() {
            return Err(EngineError::ContextOverflow {
                needed,
                doc: total,
                rest: self.question_budget(),
                ctx: self.ctx(),
            });
        }
        emit(Event::DocumentTokens { offsets });
        let start = Instant::now();
        let restored = if chat.is_empty() {
            None
        } else {
            self.load_stored(&doc, emit)
        };
        if let Err(e) = self.reread_parts(&doc, &chat, restored.as_ref(), emit, cancel) {
            // Unlike a document, a partial conversation is not resumed: the next question
            // reads it all again.
            self.clear_cache();
            return Err(e);
        }
        self.held.text = text;
        let secs = start.elapsed().as_secs_f64();
        let computed = total - restored.as_ref().map_or(0, |r| r.tokens);
        self.last_stats.record_read(total, computed, secs);
        self.last_stats.restored = restored;
        Ok(())
    }

    fn reread_parts(
        &mut self,
        doc: &[u32],
        chat: &[u32],
        restored: Option<&Restored>,
        emit: &mut dyn FnMut(Event),
        cancel: &AtomicBool,
    ) -> Result<()> {
        let total = doc.len() + chat.len();
        match restored {
            Some(r) => {
                self.held.tokens = doc.to_vec();
                emit(Event::Note { message: r.line() });
            }
            None => {
                self.prefill(doc, Phase::Prefill, total, emit, cancel)?;
                if !chat.is_empty() {
                    self.save_read(doc);
                }
            }
        }
        self.prefill(chat, Phase::Prefill, total, emit, cancel)?;
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
        if self.book_mode()? {
            let choose = Choose::Focus(self.opts.focus);
            return self.ask_book(question, choose, emit, cancel);
        }
        self.ask_read(question, emit, cancel)
    }

    /// Answers from what the document part of the prompt holds: the whole document, or the
    /// excerpts a book-mode question chose.
    fn ask_read(
        &mut self,
        question: &str,
        emit: &mut dyn FnMut(Event),
        cancel: &AtomicBool,
    ) -> Result<Answer> {
        let t0 = Instant::now();
        self.read(emit, cancel)?;
        if self.conversation_lost() {
            // Read as a re-read is (document and chat, mapped), not as one long question.
            self.reread(emit, cancel)?;
        }
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
        // As the model read it: a later render of this turn must match the cache.
        let asked = self.prompt().question(question);
        self.history.push((asked, text.clone()));
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
        self.finish_save(false);
        self.flush_notes(emit);
        Ok(Answer {
            question: question.to_string(),
            text,
            recipe: self.recipe.clone(),
            stats,
            cancelled,
            note,
            focus: None,
        })
    }
}

impl Drop for Session {
    /// A process that ends after one answer (`ask`) still stores its read.
    fn drop(&mut self) {
        self.finish_save(true);
    }
}
