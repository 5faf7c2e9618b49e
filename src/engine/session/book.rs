//! Book mode on a [`Session`]: a document longer than the model's effective context is not
//! read whole. Each question chooses the passages it reads (see `crate::book`), is answered
//! from them as from any document, and its answer cites the pages it attended to.

use std::sync::atomic::AtomicBool;

use super::Session;
use crate::book::{Book, Evidence, Focus, Selection, fuse};
use crate::document::Section;
use crate::engine::stats::{Answer, Focused};
use crate::engine::{ContextPolicy, EngineError, Event, Result};
use crate::model::KvCache;
use crate::recipe::Phase;
use crate::recipe::{KeySpan, LayerSet, Recipe};
use crate::units::int;
use candle_core::{DType, Tensor};

/// Pages an answer cites at most.
const MAX_EVIDENCE: usize = 3;

impl Session {
    /// The most context the model answers well from: `effective_ctx`, never more than `ctx`.
    pub fn effective_ctx(&self) -> usize {
        self.opts
            .effective_ctx
            .unwrap_or(usize::MAX)
            .min(self.ctx())
    }

    /// Tokens of excerpts a book-mode question reads: the effective context less the room
    /// kept for the question and its answer.
    fn book_budget(&self) -> usize {
        self.effective_ctx().saturating_sub(self.question_budget())
    }

    /// Drops the attention selector's read of the book when `recipe` would read it otherwise.
    pub(super) fn book_recipe_changes(&mut self, recipe: &Recipe) {
        if self.book_read_recipe(recipe) != self.book_read_recipe(&self.recipe) {
            self.book_read = None;
        }
    }

    /// Turns book mode on (with this selector) or off for the documents loaded from now on.
    pub fn set_focus(&mut self, focus: Focus) {
        self.opts.focus = focus;
        if let Some(b) = self.book.as_mut() {
            b.decided = None;
        }
    }

    /// The loaded document as passages, once book mode has needed them.
    pub fn book(&self) -> Option<&Book> {
        self.book.as_ref()?.built.as_ref()
    }

    /// The loaded document as passages, split and indexed on first need (a document that
    /// fits the context never is).
    fn ensure_book(&mut self) -> Option<&Book> {
        let state = self.book.as_mut()?;
        if state.built.is_none() {
            // Until a question chose excerpts, the document is the whole book.
            let text = match (&self.excerpts, &self.document) {
                (None, Some((_, text))) => text.clone(),
                _ => return None,
            };
            state.built = Some(Book::new(&state.title, &state.noun, text, &state.sections));
            state.sections = Vec::new();
        }
        state.built.as_ref()
    }

    /// Whether questions about the loaded document are answered in book mode: the focus is
    /// on and the document (estimated from as much as it takes to tell) is longer than the
    /// budget. Decided once per document and settings.
    pub fn book_mode(&mut self) -> Result<bool> {
        // A truncating context policy asks for one end of the document, read as it is.
        if self.opts.focus == Focus::Off || self.opts.context_policy != ContextPolicy::Error {
            return Ok(false);
        }
        let budget = self.book_budget();
        let Some(state) = &self.book else {
            return Ok(false);
        };
        if let Some((on, _)) = state.decided {
            return Ok(on);
        }
        let text = match (self.book(), &self.excerpts, &self.document) {
            (Some(b), _, _) => b.text.as_str(),
            (None, None, Some((_, text))) => text.as_str(),
            _ => return Ok(false),
        };
        let (tokens, _, scale) = self.encode_bounded(text, budget)?;
        let estimate = (tokens.len() as f64 * scale) as usize;
        let on = tokens.len() > budget;
        if let Some(b) = self.book.as_mut() {
            b.decided = Some((on, estimate));
        }
        Ok(on)
    }

    /// Before any question: says how a document in book mode is answered, and for the
    /// attention selector reads it whole (once; its keys are what questions score).
    pub(super) fn read_for_book_mode(
        &mut self,
        emit: &mut dyn FnMut(Event),
        cancel: &AtomicBool,
    ) -> Result<()> {
        self.announce_book_mode(emit);
        if matches!(self.opts.focus, Focus::Attention | Focus::Hybrid) {
            return self.read_book(emit, cancel);
        }
        // A read that reads nothing: a UI ends its reading state here.
        emit(Event::Progress {
            done: 0,
            total: 0,
            window: None,
        });
        Ok(())
    }

    fn announce_book_mode(&mut self, emit: &mut dyn FnMut(Event)) {
        let Some(BookState {
            title,
            noun,
            decided: Some((_, tokens)),
            ..
        }) = &self.book
        else {
            return;
        };
        let message = format!(
            "book mode: “{title}” is about {} tokens, more than the {} this model answers well from; each question reads the {noun}s it needs (--focus off reads it whole)",
            int(*tokens),
            int(self.effective_ctx()),
        );
        tracing::info!("{message}");
        emit(Event::Note { message });
    }

    /// Answers `question` in book mode: the passages `choose` ranks highest (given pages: those
    /// and their neighbours, an eval's ceiling) fill the budget, the answer is generated from
    /// them as a document of their own, and the pages it drew on are cited.
    pub fn ask_book(
        &mut self,
        question: &str,
        choose: Choose,
        emit: &mut dyn FnMut(Event),
        cancel: &AtomicBool,
    ) -> Result<Answer> {
        let budget = self.book_budget();
        if self.ensure_book().is_none() {
            return Err(EngineError::EmptyDocument);
        }
        let order = match choose {
            Choose::Pages(p) => self.book().map(|b| b.rank_pages(p)),
            Choose::Focus(Focus::Attention) => Some(self.rank_attention(question, emit, cancel)?),
            Choose::Focus(Focus::Hybrid) => {
                let att = self.rank_attention(question, emit, cancel)?;
                self.book().map(|b| fuse(&b.rank_lexical(question), &att))
            }
            Choose::Focus(_) => self.book().map(|b| b.rank_lexical(question)),
        };
        let (Some(order), Some(book)) = (order, self.book()) else {
            return Err(EngineError::EmptyDocument);
        };
        let selector = match choose {
            Choose::Pages(_) => "pages".to_string(),
            Choose::Focus(f) => f.to_string(),
        };
        let tok = &self.tok;
        let count = |s: &str| tok.encode(s, false).map_or(s.len() / 4, |t| t.len());
        // The excerpts' title line ("… — pages 12–14 of 311, chosen for this question"), the
        // instruction and the chat template's head come out of the budget too; the title is
        // known once the pages are, so a selection over it tries again with less room.
        let head = |title: &str| count(title) + 64;
        let mut room = budget.saturating_sub(head(&book.title));
        let sel = loop {
            let sel = book.select(&order, room, &count);
            let over = (sel.tokens + head(&sel.title)).saturating_sub(budget);
            if over == 0 || room == 0 {
                break sel;
            }
            room = room.saturating_sub(over);
        };
        let noun = book.noun.clone();
        emit(Event::Note {
            message: format!(
                "book mode: this question reads {} ({} tokens)",
                sel.label,
                int(sel.tokens)
            ),
        });
        // A conversation of its own over the excerpts: a follow-up chooses again.
        self.document = Some((sel.title.clone(), sel.text.clone()));
        self.history.clear();
        self.clear_cache();
        self.excerpts = Some(sel.clone());
        let mut answer = self.ask_read(question, emit, cancel)?;
        let evidence = if answer.cancelled {
            Vec::new()
        } else {
            self.cite(&sel, answer.stats.generated_tokens)
        };
        answer.focus = Some(Focused {
            selector,
            read: sel.label.clone(),
            tokens: sel.tokens,
            evidence,
            noun,
        });
        Ok(answer)
    }

    /// The pages the last answer (its `generated` tokens, at the end of the cache) drew on:
    /// its tokens run again over the excerpts, and the attention they pay each page is summed.
    /// Empty when the cache no longer holds the excerpts (a recipe that evicts).
    fn cite(&mut self, sel: &Selection, generated: usize) -> Vec<Evidence> {
        let end = self.held.tokens.len();
        if generated == 0 || generated > end {
            return Vec::new();
        }
        let start = end - generated;
        let ids = self.held.tokens[start..].to_vec();
        let keys = self.doc_offsets.len().min(start);
        let mass = self.cache.truncate(start).and_then(|()| {
            self.model
                .attention_mass(&ids, &mut self.cache, &self.recipe, Phase::Decode, keys)
        });
        let mass = match mass {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!("no citations for this answer: {e}");
                return Vec::new();
            }
        };
        let pairs: Vec<(usize, f32)> = self.doc_offsets[..keys].iter().copied().zip(mass).collect();
        self.book()
            .map(|b| b.evidence(sel, &pairs, MAX_EVIDENCE))
            .unwrap_or_default()
    }
}

/// What chooses a book-mode question's passages: a selector, or given pages (an eval's
/// ceiling).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Choose<'a> {
    Focus(Focus),
    Pages(&'a [usize]),
}

/// Tokens per block whose attention a passage is scored by (InfLLM's memory units are 128
/// tokens, Quest's pages 16; a passage is ~300).
const BLOCK: usize = 64;

/// The whole book read once for the attention selector: every layer sliding (time linear in
/// the book), every key kept.
pub(super) struct BookRead {
    cache: KvCache,
    /// Byte offset in the book's text where each token read starts.
    starts: Vec<usize>,
}

impl Session {
    /// How the attention selector reads a book: the recipe's window and sink (the model's
    /// defaults under full attention) in every layer, FA decode on so nothing is evicted.
    fn book_read_recipe(&self, recipe: &Recipe) -> Recipe {
        let d = self.recipe_defaults();
        let sliding = recipe.window.is_some();
        Recipe {
            window: Some(recipe.window.unwrap_or(d.window)),
            sink: if sliding { recipe.sink } else { d.sink },
            fa_decode: true,
            fa_question: true,
            full_layers: LayerSet::None,
            think: false,
            sliding_rope: recipe.sliding_rope,
        }
    }

    /// Reads the whole book for the attention selector (once per document), with progress.
    fn read_book(&mut self, emit: &mut dyn FnMut(Event), cancel: &AtomicBool) -> Result<()> {
        if self.book_read.is_some() {
            return Ok(());
        }
        let Some(book) = self.ensure_book() else {
            return Err(EngineError::EmptyDocument);
        };
        let text = book.text.clone();
        let (tokens, starts) = self
            .tok
            .encode_range_with_offsets(&text, 0..text.len(), false)
            .map_err(|e| EngineError::Tokenizer(e.to_string()))?;
        let recipe = self.book_read_recipe(&self.recipe);
        let cfg = *self.model.config();
        let mut cache = self.model.new_cache();
        // Room for a question's tokens too: they are appended while scoring, then dropped.
        for l in 0..cfg.layers {
            cache.reserve(l, tokens.len() + 1024)?;
        }
        let chunk = self.opts.chunk.max(1);
        let n = tokens.len();
        for (i, part) in tokens.chunks(chunk).enumerate() {
            if cancel.load(std::sync::atomic::Ordering::Relaxed) {
                return Err(EngineError::Cancelled);
            }
            self.model.forward(
                part,
                &mut cache,
                &recipe,
                Phase::Prefill,
                crate::model::Logits::Skip,
            )?;
            emit(Event::Progress {
                done: i * chunk + part.len(),
                total: n,
                window: None,
            });
        }
        self.book_read = Some(BookRead { cache, starts });
        Ok(())
    }

    /// Passages by the question's attention over the stored book, best first: its queries in
    /// every layer (the question run after the book, attending its window) against every key,
    /// both rotated back to no position (RoPE at a distance of 100k tokens is past anything
    /// the model was trained on: with positions the scores found nothing), softmax over the
    /// book, the mass per block of tokens summed over layers, heads and question tokens.
    fn rank_attention(
        &mut self,
        question: &str,
        emit: &mut dyn FnMut(Event),
        cancel: &AtomicBool,
    ) -> Result<Vec<usize>> {
        self.read_book(emit, cancel)?;
        let ids = self.encode(question)?;
        let recipe = self.book_read_recipe(&self.recipe);
        let br = self.book_read.as_mut().expect("read above");
        let n = br.cache.next_pos();
        let queries = self
            .model
            .queries(&ids, &mut br.cache, &recipe, Phase::Prefill);
        br.cache.truncate(n)?;
        let whole = KeySpan {
            sink: 0..0,
            recent: 0..n,
        };
        let mut mass: Option<Tensor> = None;
        for (l, q) in queries?.iter().enumerate() {
            let (_, h, c, d) = q.dims4()?;
            let (k, _) = br.cache.gather(l, &whole)?;
            let k = self
                .model
                .unrotate(&k.to_dtype(DType::F32)?, 0, l, &recipe)?;
            let q = self.model.unrotate(q, n, l, &recipe)?;
            let kv = k.dim(1)?;
            let q = q.reshape((kv, (h / kv) * c, d))?;
            let kt = k.squeeze(0)?.t()?.contiguous()?;
            let s = (q.matmul(&kt)? * (1.0 / (d as f64).sqrt()))?;
            let p = candle_nn::ops::softmax_last_dim(&s)?.sum((0, 1))?;
            mass = Some(match mass {
                Some(m) => (m + p)?,
                None => p,
            });
        }
        let Some(mass) = mass else {
            return Ok(Vec::new());
        };
        let mass = mass.to_vec1::<f32>()?;
        let end = self.book().map_or(0, |b| b.text.len());
        let br = self.book_read.as_ref().expect("read above");
        let blocks: Vec<(std::ops::Range<usize>, f32)> = mass
            .chunks(BLOCK)
            .enumerate()
            .map(|(b, m)| {
                let a = br.starts[b * BLOCK];
                let z = br.starts.get((b + 1) * BLOCK).copied().unwrap_or(end);
                (a..z, m.iter().sum())
            })
            .collect();
        Ok(self
            .book()
            .map(|b| b.rank_blocks(&blocks))
            .unwrap_or_default())
    }
}

/// The loaded document for book mode: its parts until a question needs its passages, then
/// the passages; and whether it is answered in book mode, with its estimated tokens (None
/// until decided, once per document and settings).
pub(super) struct BookState {
    title: String,
    noun: String,
    sections: Vec<Section>,
    built: Option<Book>,
    decided: Option<(bool, usize)>,
}

impl BookState {
    pub(super) fn new(title: &str, noun: &str, sections: &[Section]) -> Self {
        BookState {
            title: title.to_string(),
            noun: noun.to_string(),
            sections: sections.to_vec(),
            built: None,
            decided: None,
        }
    }
}
