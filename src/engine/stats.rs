//! The numbers a UI shows about a session, each defined once here.

use serde::Serialize;

use crate::model::CacheStats;
use crate::recipe::Recipe;

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
    /// The document came from the read cache instead of being read.
    pub restored: Option<Restored>,
}

/// A read restored from the read cache.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Restored {
    pub tokens: usize,
    /// The entry's size on disk.
    pub bytes: u64,
    pub seconds: f64,
}

impl Restored {
    /// "restored 100,204 tokens from cache, 212.0 MiB, 0.4 s"
    pub fn line(&self) -> String {
        format!(
            "restored {} tokens from cache, {}, {:.1} s",
            crate::units::int(self.tokens),
            crate::units::mib(self.bytes as usize),
            self.seconds
        )
    }
}

impl Stats {
    /// Records a prefill of `tokens` new tokens that took `secs`, leaving `prompt_tokens` in
    /// the cache: the prefill rate counts only the tokens this prefill computed.
    pub fn record_prefill(&mut self, prompt_tokens: usize, tokens: usize, secs: f64) {
        self.prompt_tokens = prompt_tokens;
        self.prefill_seconds = secs;
        self.prefill_tokens_per_s = rate(tokens, secs);
    }

    /// Records `tokens` generated in `secs`.
    pub fn record_decode(&mut self, tokens: usize, secs: f64) {
        self.generated_tokens = tokens;
        self.decode_seconds = secs;
        self.decode_tokens_per_s = rate(tokens, secs);
    }
}

/// Tokens per second; a zero interval does not divide by zero.
pub fn rate(tokens: usize, secs: f64) -> f64 {
    tokens as f64 / secs.max(1e-9)
}

/// "1.2 MiB, 4,245 tok/layer" (the most any layer holds).
pub fn kv_summary(c: &CacheStats) -> String {
    format!(
        "{}, {} tok/layer",
        crate::units::mib(c.bytes_held),
        c.tokens_per_layer.iter().max().copied().unwrap_or(0)
    )
}

/// One answer, with the recipe it was computed under and what it cost.
#[derive(Debug, Clone, Serialize)]
pub struct Answer {
    pub question: String,
    pub text: String,
    pub recipe: Recipe,
    pub stats: Stats,
    pub cancelled: bool,
}
