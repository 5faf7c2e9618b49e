//! Token positions to text: where in the document a token of the read prompt lies, so the
//! window, the sink and the read part land on the right words. The engine reports the offsets
//! from the very encoding it reads (`Event::DocumentTokens`); until they arrive the map is
//! proportional.

/// The document in tokens: how long its read prompt is, how much the cache holds, and where
/// each prompt token starts in the text once the engine said so.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DocTokens {
    /// Where the document ends in the read prompt's tokens: from the engine's offsets (tokens
    /// after it are the chat and the question), else the read's progress total.
    pub doc_tokens: usize,
    /// How many of them the cache holds.
    pub read_tokens: usize,
    /// Byte offset in the document of each prompt token of the read, from the engine.
    pub offsets: Option<Vec<usize>>,
}

impl DocTokens {
    /// Byte offset in `text` of token position `t`: exact once the engine's offsets are here
    /// (a truncated read maps only what was read; tokens after the prompt, the question and
    /// answers, lie past the document's end), else proportional (token density is close to
    /// uniform over a long text).
    pub fn to_byte(&self, text: &str, t: usize) -> usize {
        if let Some(offsets) = &self.offsets {
            // Past the last token: the document's end, unless the read stopped well short of
            // it (a read cut to the context), where it ends at that token. The offsets give
            // token starts only: "well short" is more than a few tokens' worth of bytes.
            let past = match (offsets.first(), offsets.last()) {
                (Some(&first), Some(&last)) if last < text.len() => {
                    let per_token = (last - first) / offsets.len().max(1);
                    if text.len() - last > 4 * per_token + 16 {
                        last
                    } else {
                        text.len()
                    }
                }
                _ => text.len(),
            };
            let b = offsets.get(t).copied().unwrap_or(past);
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
