//! Token positions to text: where in the document a token of the read prompt lies, so the
//! window, the sink and the read part land on the right words. The one place that knows how:
//! [`DocTokens::to_byte`] maps, [`map_offsets`] carries out [`Effect::MapTokens`] by running the
//! model's tokenizer over the document (the engine tokenized it already; when it reports the
//! offsets itself, this module shrinks to the map).
//!
//! [`Effect::MapTokens`]: super::msg::Effect::MapTokens

use tokio::sync::mpsc::UnboundedSender;

use super::msg::Msg;

/// The document in tokens: how long it is, how much the cache holds, and where each token
/// starts in the text once mapped.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DocTokens {
    /// Tokens of the document's read prompt, from the read's progress.
    pub doc_tokens: usize,
    /// How many of them the cache holds.
    pub read_tokens: usize,
    /// Byte offset in the document of each of its tokens, once mapped.
    pub offsets: Option<Vec<usize>>,
    /// Tokens of the first read's prompt (template head and document), from its progress.
    pub prefix_tokens: Option<usize>,
}

impl DocTokens {
    /// Byte offset in `text` of token position `t`: exact once the document's tokens are
    /// mapped (the document ends the read prompt, so it starts `offsets.len()` tokens before
    /// that prompt's end), else proportional (token density is close to uniform over a long
    /// text). A truncated document keeps the proportional map.
    pub fn to_byte(&self, text: &str, t: usize) -> usize {
        if let (Some(offsets), Some(prefix)) = (&self.offsets, self.prefix_tokens)
            && let Some(start) = prefix.checked_sub(offsets.len())
        {
            let b = match t.checked_sub(start) {
                None => 0,
                Some(i) => offsets.get(i).copied().unwrap_or(text.len()),
            };
            return floor_boundary(text, b.min(text.len()));
        }
        if self.doc_tokens == 0 {
            return 0;
        }
        let b =
            (t.min(self.doc_tokens) as f64 / self.doc_tokens as f64 * text.len() as f64) as usize;
        floor_boundary(text, b.min(text.len()))
    }
}

/// The largest char boundary of `s` at or before `i`.
pub fn floor_boundary(s: &str, mut i: usize) -> usize {
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// Answers [`Effect::MapTokens`] with [`Msg::TokenOffsets`]: the tokenizer's offsets on a
/// blocking worker, or one token per byte for a byte-level model (no tokenizer).
///
/// [`Effect::MapTokens`]: super::msg::Effect::MapTokens
pub fn map_offsets(
    tokenizer: Option<&tokenizers::Tokenizer>,
    text: String,
    tx: &UnboundedSender<Msg>,
) {
    let Some(tok) = tokenizer.cloned() else {
        let _ = tx.send(Msg::TokenOffsets((0..text.len()).collect()));
        return;
    };
    let tx = tx.clone();
    tokio::task::spawn_blocking(move || match tok.encode(text.as_str(), false) {
        Ok(enc) => {
            let offsets = enc.get_offsets().iter().map(|o| o.0).collect();
            let _ = tx.send(Msg::TokenOffsets(offsets));
        }
        // The proportional map stays; nothing the user must act on.
        Err(e) => tracing::warn!("cannot map the document's tokens: {e}"),
    });
}
