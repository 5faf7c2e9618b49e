//! A SWAT model in the engine: [`SwatSession`] answers the engine's commands (read a document,
//! ask, stats) through the model's rolling cache, so the reader and `ask` chat with a trained
//! model like with a transformer. [`generate`] continues a prompt (`swat generate`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use candle_core::{DType, Tensor};
use serde::Serialize;

use super::data::Utf8Stream;
use super::model::{RollingCache, SwatModel};
use super::{Result, invalid};
use crate::engine::{self, Answer, Backend, EngineError, Event, Stats};
use crate::model::CacheStats;
use crate::recipe::{LayerSet, Recipe};
use crate::sampling::{Sampler, SamplingParams};

#[derive(Debug, Clone, Serialize)]
pub struct GenStats {
    pub prompt_tokens: usize,
    pub generated_tokens: usize,
    pub prefill_tokens_per_s: f64,
    pub decode_tokens_per_s: f64,
    /// Keys held per layer at the end: at most W−1 however long prompt and answer are.
    pub kv_tokens: usize,
    pub kv_bytes: usize,
}

/// Continues `prompt` with up to `params.max_new_tokens` bytes, handing complete UTF-8 text
/// to `on_text` as it comes.
pub fn generate(
    model: &SwatModel,
    prompt: &str,
    params: &SamplingParams,
    on_text: &mut dyn FnMut(&str),
) -> Result<(String, GenStats)> {
    if prompt.is_empty() {
        return Err(invalid("give a non-empty --prompt"));
    }
    let mut s = SwatSession::new(model.clone(), params.clone());
    let never = AtomicBool::new(false);
    let t0 = Instant::now();
    let logits = s
        .feed(prompt.as_bytes(), &mut |_| {}, &never)
        .map_err(engine_to_swat)?;
    let prefill_s = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    let (text, generated) = s
        .sample(logits, None, &mut |e| {
            if let Event::Token { text } = e {
                on_text(&text)
            }
        })
        .map_err(engine_to_swat)?;
    Ok((
        text,
        GenStats {
            prompt_tokens: prompt.len(),
            generated_tokens: generated,
            prefill_tokens_per_s: prompt.len() as f64 / prefill_s.max(1e-9),
            decode_tokens_per_s: generated as f64 / t1.elapsed().as_secs_f64().max(1e-9),
            kv_tokens: s.cache.tokens(),
            kv_bytes: s.cache.bytes(),
        },
    ))
}

fn engine_to_swat(e: EngineError) -> super::SwatError {
    match e {
        EngineError::Backend(e) => match e.downcast::<super::SwatError>() {
            Ok(e) => *e,
            Err(e) => invalid(e.to_string()),
        },
        other => invalid(other.to_string()),
    }
}

/// The engine knows no SWAT types: their errors travel boxed.
impl From<super::SwatError> for EngineError {
    fn from(e: super::SwatError) -> Self {
        EngineError::Backend(Box::new(e))
    }
}

/// Chat with a SWAT model: the document and the conversation are fed as plain text through
/// the rolling cache (a byte-level model has no chat template), so memory stays at W−1 keys
/// per layer however long the document. An answer ends at a blank line or `max_new_tokens`.
pub struct SwatSession {
    model: SwatModel,
    cache: RollingCache,
    sampling: SamplingParams,
    document: Option<(String, String)>,
    history: Vec<(String, String)>,
    /// The bytes in the cache (a sampled answer may end inside a UTF-8 character); a
    /// follow-up only adds to them.
    held: Vec<u8>,
    /// Bytes fed per forward pass.
    chunk: usize,
    peak_bytes: usize,
    last: Stats,
}

impl SwatSession {
    pub fn new(model: SwatModel, sampling: SamplingParams) -> Self {
        let cache = RollingCache::new(model.config());
        let chunk = model.config().window.unwrap_or(256).max(64);
        SwatSession {
            model,
            cache,
            sampling,
            document: None,
            history: Vec::new(),
            held: Vec::new(),
            chunk,
            peak_bytes: 0,
            last: Stats::default(),
        }
    }

    pub fn model(&self) -> &SwatModel {
        &self.model
    }

    /// What the reader shows as the recipe: a window in every layer and phase, no sink.
    pub fn recipe(&self) -> Recipe {
        Recipe {
            window: self.model.config().window,
            sink: 0,
            fa_decode: false,
            full_layers: LayerSet::None,
            ..Recipe::full()
        }
    }

    fn document_text(&self) -> String {
        match &self.document {
            Some((title, text)) => format!("# {title}\n\n{}\n\n", text.trim_end()),
            None => String::new(),
        }
    }

    /// The whole transcript up to the answer of `question`.
    fn transcript(&self, question: &str) -> String {
        let mut t = self.document_text();
        for (q, a) in &self.history {
            t += &format!("Question: {q}\nAnswer:{a}");
            if !a.ends_with("\n\n") {
                t += "\n\n";
            }
        }
        t + &format!("Question: {question}\nAnswer:")
    }

    /// Feeds `bytes` after what the cache holds, in chunks, with progress; returns the last
    /// position's logits.
    fn feed(
        &mut self,
        bytes: &[u8],
        emit: &mut dyn FnMut(Event),
        cancel: &AtomicBool,
    ) -> engine::Result<Tensor> {
        let ids: Vec<u32> = bytes.iter().map(|&b| u32::from(b)).collect();
        if ids.is_empty() {
            return Err(EngineError::Tokenizer("nothing to read".into()));
        }
        let start = self.held.len();
        let total = start + ids.len();
        let mut logits = None;
        for (i, part) in ids.chunks(self.chunk).enumerate() {
            if cancel.load(Ordering::Relaxed) {
                // The cache holds part of `text`: start over next time.
                self.clear_cache();
                return Err(EngineError::Cancelled);
            }
            let x = Tensor::new(part, self.model.device())?.unsqueeze(0)?;
            let l = self
                .model
                .forward(&x, Some(&mut self.cache))
                .map_err(EngineError::from)?;
            logits = Some(l.get(0)?.get(part.len() - 1)?);
            self.peak_bytes = self.peak_bytes.max(self.cache.bytes());
            emit(Event::Stats(self.stats()));
            emit(Event::Progress {
                done: start + i * self.chunk + part.len(),
                total,
                window: self.window(),
            });
        }
        self.held.extend_from_slice(bytes);
        Ok(logits.expect("at least one chunk"))
    }

    /// Samples from `logits` on, feeding each byte back (so the cache holds all of it); in
    /// chat (`cancel` given) stops at a blank line or on cancel, else at `max_new_tokens`.
    /// Returns the text and the number of bytes generated.
    fn sample(
        &mut self,
        mut logits: Tensor,
        cancel: Option<&AtomicBool>,
        emit: &mut dyn FnMut(Event),
    ) -> engine::Result<(String, usize)> {
        let mut sampler = Sampler::new(&self.sampling);
        let mut recent: Vec<u32> = self.held.iter().map(|&b| u32::from(b)).collect();
        let mut stream = Utf8Stream::default();
        let mut text = String::new();
        let mut generated = 0;
        while generated < self.sampling.max_new_tokens {
            let next = sampler.sample(&logits.to_dtype(DType::F32)?, &recent)?;
            generated += 1;
            recent.push(next);
            let piece = stream.push(next as u8);
            if !piece.is_empty() {
                emit(Event::Token {
                    text: piece.clone(),
                });
                text += &piece;
            }
            let x = Tensor::new(&[next], self.model.device())?.unsqueeze(0)?;
            logits = self
                .model
                .forward(&x, Some(&mut self.cache))
                .map_err(EngineError::from)?
                .get(0)?
                .get(0)?;
            self.held.push(next as u8);
            // A byte model continues the text: a blank line ends its answer in chat.
            let answered = cancel.is_some() && text.trim_start().contains("\n\n");
            if answered || cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
                break;
            }
        }
        Ok((text, generated))
    }

    /// Keys `[from, to)` the next query sees.
    fn window(&self) -> Option<(usize, usize)> {
        let pos = self.cache.position();
        (pos > 0).then(|| (pos - self.cache.tokens(), pos))
    }

    fn clear_cache(&mut self) {
        self.cache = RollingCache::new(self.model.config());
        self.held.clear();
    }

    fn not_a_recipe(&self) -> EngineError {
        EngineError::from(invalid(format!(
            "a SWAT model's attention is fixed by its training ({}): recipes do not apply",
            self.model.config().summary()
        )))
    }
}

impl Backend for SwatSession {
    fn load_document(&mut self, title: &str, text: &str) {
        self.document = Some((title.to_string(), text.to_string()));
        self.reset();
    }

    fn read(&mut self, emit: &mut dyn FnMut(Event), cancel: &AtomicBool) -> engine::Result<()> {
        let doc = self.document_text();
        if self
            .document
            .as_ref()
            .is_some_and(|(_, t)| t.trim().is_empty())
        {
            return Err(EngineError::EmptyDocument);
        }
        if doc.is_empty() || !self.history.is_empty() || self.held.len() >= doc.len() {
            return Ok(());
        }
        let t0 = Instant::now();
        self.clear_cache();
        // Byte-level: token i is byte i of the transcript, whose document follows the title.
        let (start, len) = match &self.document {
            Some((_, text)) => (doc.find(text.trim_end()).unwrap_or(0), text.len()),
            None => (0, 0),
        };
        let offsets = (0..doc.len())
            .map(|i| i.saturating_sub(start).min(len))
            .collect();
        emit(Event::DocumentTokens { offsets });
        self.feed(doc.as_bytes(), emit, cancel)?;
        let secs = t0.elapsed().as_secs_f64();
        self.last.record_read(doc.len(), doc.len(), secs);
        emit(Event::Stats(self.stats()));
        Ok(())
    }

    fn ask(
        &mut self,
        question: &str,
        emit: &mut dyn FnMut(Event),
        cancel: &AtomicBool,
    ) -> engine::Result<Answer> {
        let t0 = Instant::now();
        self.read(emit, cancel)?;
        let full = self.transcript(question);
        if !full.as_bytes().starts_with(&self.held) {
            self.clear_cache();
        }
        let new = full.as_bytes()[self.held.len()..].to_vec();
        let p0 = Instant::now();
        let logits = self.feed(&new, emit, cancel)?;
        let prefill_s = p0.elapsed().as_secs_f64();
        self.last.prompt_tokens = self.cache.position();
        let d0 = Instant::now();
        let mut ttft = None;
        let (text, generated) = self.sample(logits, Some(cancel), &mut |e| {
            ttft.get_or_insert_with(|| t0.elapsed().as_secs_f64());
            emit(e)
        })?;
        let decode_s = d0.elapsed().as_secs_f64();
        let answer = text.trim().to_string();
        self.history.push((question.to_string(), text));
        self.last.prefill_seconds = prefill_s;
        self.last.prefill_tokens_per_s = engine::rate(new.len(), prefill_s);
        self.last.record_decode(generated, decode_s);
        self.last.time_to_first_token_s = ttft.unwrap_or(decode_s);
        let stats = self.stats();
        emit(Event::Stats(stats.clone()));
        Ok(Answer {
            question: question.to_string(),
            text: answer,
            recipe: self.recipe(),
            stats,
            cancelled: cancel.load(Ordering::Relaxed),
            note: None,
            focus: None,
        })
    }

    fn set_recipe(&mut self, recipe: Recipe) -> engine::Result<bool> {
        if recipe == self.recipe() {
            return Ok(false);
        }
        Err(self.not_a_recipe())
    }

    fn reread(&mut self, _: &mut dyn FnMut(Event), _: &AtomicBool) -> engine::Result<()> {
        Err(self.not_a_recipe())
    }

    fn set_sampling(&mut self, s: SamplingParams) {
        self.sampling = s;
    }

    fn reset(&mut self) {
        self.history.clear();
        self.clear_cache();
    }

    fn stats(&self) -> Stats {
        let cfg = self.model.config();
        let tokens = self.cache.tokens();
        let bytes = self.cache.bytes();
        let windowed = cfg.window.is_some();
        Stats {
            device: crate::model::device_name(self.model.device()),
            recipe: format!("swat {}", cfg.summary()),
            cache: CacheStats {
                tokens_per_layer: vec![tokens; cfg.layers],
                bytes_held: bytes,
                bytes_allocated: bytes,
                peak_bytes_allocated: self.peak_bytes,
                next_pos: self.cache.position(),
            },
            window: if windowed { self.window() } else { None },
            sink: 0,
            full_layers: if windowed { 0 } else { cfg.layers },
            sliding_layers: if windowed { cfg.layers } else { 0 },
            ..self.last.clone()
        }
    }
}
