//! Streaming generation from a SWAT model through its rolling cache.

use std::time::Instant;

use candle_core::{DType, Tensor};
use serde::Serialize;

use super::data::{ByteTokenizer, Utf8Stream};
use super::model::{RollingCache, SwatModel};
use super::{Result, invalid};
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

/// Reads `prompt` (in query blocks of the model's chunk) and samples up to
/// `params.max_new_tokens` bytes, handing complete UTF-8 text to `on_text` as it comes.
pub fn generate(
    model: &SwatModel,
    prompt: &str,
    params: &SamplingParams,
    on_text: &mut dyn FnMut(&str),
) -> Result<(String, GenStats)> {
    let ids = ByteTokenizer::default().encode(prompt);
    if ids.is_empty() {
        return Err(invalid("give a non-empty --prompt"));
    }
    let dev = model.device();
    let mut cache = RollingCache::new(model.config());
    let chunk = model.config().window.unwrap_or(256).max(64);
    let t0 = Instant::now();
    let mut logits = None;
    for part in ids.chunks(chunk) {
        let x = Tensor::new(part, dev)?.unsqueeze(0)?;
        let l = model.forward(&x, Some(&mut cache))?;
        logits = Some(l.get(0)?.get(part.len() - 1)?);
    }
    let prefill_s = t0.elapsed().as_secs_f64();
    let mut sampler = Sampler::new(params);
    let mut recent = ids.clone();
    let mut stream = Utf8Stream::default();
    let mut text = String::new();
    let t1 = Instant::now();
    let mut generated = 0;
    while generated < params.max_new_tokens {
        let l = logits.take().expect("prefill produced logits");
        let next = sampler.sample(&l.to_dtype(DType::F32)?, &recent)?;
        generated += 1;
        recent.push(next);
        let piece = stream.push(next as u8);
        if !piece.is_empty() {
            on_text(&piece);
            text += &piece;
        }
        if generated == params.max_new_tokens {
            break;
        }
        let x = Tensor::new(&[next], dev)?.unsqueeze(0)?;
        logits = Some(model.forward(&x, Some(&mut cache))?.get(0)?.get(0)?);
    }
    let stats = GenStats {
        prompt_tokens: ids.len(),
        generated_tokens: generated,
        prefill_tokens_per_s: ids.len() as f64 / prefill_s.max(1e-9),
        decode_tokens_per_s: generated as f64 / t1.elapsed().as_secs_f64().max(1e-9),
        kv_tokens: cache.tokens(),
        kv_bytes: cache.bytes(),
    };
    Ok((text, stats))
}
