//! Tokenizer and chat template.
//!
//! A GGUF file carries its vocabulary, merges and special-token ids as metadata but no
//! `tokenizer.json`, so [`ChatTokenizer::from_gguf`] rebuilds a `tokenizers::Tokenizer` from
//! them (`gguf.rs`), splitting text the way llama.cpp and the model's own HF `tokenizer.json`
//! do for the file's `tokenizer.ggml.pre`. The model's Jinja chat template is rendered with
//! minijinja (`template.rs`), set up to behave like HF transformers'
//! `apply_chat_template(tokenize=False)`.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use minijinja::value::Value as JinjaValue;
use serde::{Deserialize, Serialize};
use tokenizers::Tokenizer;

pub mod budget;
mod gguf;
pub(crate) mod template;

pub use gguf::{SUPPORTED_PRE_TOKENIZERS, SUPPORTED_TOKENIZER_MODELS};
use template::build_env;
pub use template::strftime;

/// Marks around user text in a rendered prompt: Unicode noncharacters, never text.
pub const USER_OPEN: char = '\u{fdd0}';
pub const USER_CLOSE: char = '\u{fdd1}';

/// `text` cut at the user marks into (byte offset, piece, is user text). A piece cut from a
/// longer prompt may start inside user text (a close mark before any open one) or end
/// inside it (an open mark without a close).
fn user_spans(text: &str) -> Vec<(usize, &str, bool)> {
    let first_open = text.find(USER_OPEN);
    let mut user = text
        .find(USER_CLOSE)
        .is_some_and(|c| first_open.is_none_or(|o| c < o));
    let mut spans = Vec::new();
    let mut start = 0;
    for (i, c) in text.char_indices() {
        if c == USER_OPEN || c == USER_CLOSE {
            if i > start {
                spans.push((start, &text[start..i], user));
            }
            user = c == USER_OPEN;
            start = i + c.len_utf8();
        }
    }
    if start < text.len() {
        spans.push((start, &text[start..], user));
    }
    spans
}

/// Used when neither the GGUF nor tokenizer_config.json has a chat template.
pub const CHATML_TEMPLATE: &str = "{%- for message in messages %}\
{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}\
{%- endfor %}\
{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}";

/// End-of-turn / end-of-text tokens that stop generation when the vocabulary has them as
/// special (added) tokens. The eos id from the metadata is always a stop token too.
const STOP_TOKEN_NAMES: &[&str] = &[
    "<|im_end|>",
    "<|endoftext|>",
    "<|eot_id|>",
    "<|eom_id|>",
    "<|end_of_text|>",
    "</s>",
    "<end_of_turn>",
    "<|end|>",
    "<|return|>",
];

#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error(
        "the GGUF metadata has no `{key}`, so no tokenizer can be built from it; \
         pass a folder with the model's tokenizer.json instead"
    )]
    MissingMetadata { key: String },
    #[error(
        "the GGUF metadata `{key}` is malformed ({reason}); the file may be corrupt or \
         written by an unusual converter: re-download it or pass a tokenizer.json folder"
    )]
    BadMetadata { key: String, reason: String },
    #[error(
        "GGUF tokenizer model `{model}` is not supported (supported: {supported}); \
         pass a folder with the model's tokenizer.json instead",
        supported = SUPPORTED_TOKENIZER_MODELS.join(", ")
    )]
    UnsupportedTokenizerModel { model: String },
    #[error(
        "GGUF pre-tokenizer `{name}` (tokenizer.ggml.pre) is not supported (supported: \
         {supported}); pass a folder with the model's tokenizer.json instead",
        supported = SUPPORTED_PRE_TOKENIZERS.join(", ")
    )]
    UnsupportedPreTokenizer { name: String },
    #[error(
        "no tokenizer.json in {dir}: put the model's tokenizer.json there, or load a GGUF file"
    )]
    MissingTokenizerJson { dir: PathBuf },
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} could not be parsed ({message}): re-download it")]
    BadFile { path: PathBuf, message: String },
    #[error("tokenizer {op} failed: {message}")]
    Tokenizers { op: &'static str, message: String },
    #[error(
        "the model's chat template does not compile (use a model folder whose \
         tokenizer_config.json has a `chat_template` minijinja supports): {message}"
    )]
    TemplateSyntax { message: String },
    /// Includes messages the template raises itself (`raise_exception`), e.g. on role order.
    #[error(
        "rendering the model's chat template failed (use a model folder whose tokenizer_config.json has a working `chat_template`): {message}"
    )]
    Template { message: String },
}

impl TokenizerError {
    fn tk<E: std::fmt::Display>(op: &'static str) -> impl FnOnce(E) -> Self {
        move |e| Self::Tokenizers {
            op,
            message: e.to_string(),
        }
    }

    fn template(e: minijinja::Error) -> Self {
        // `{:#}` adds the failing template line, which is what one needs to fix it.
        Self::Template {
            message: format!("{e:#}"),
        }
    }
}

/// One chat turn, as HF chat templates see it (`message['role']`, `message['content']`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
        }
    }
}

/// A tokenizer plus the model's chat template and stop tokens.
pub struct ChatTokenizer {
    tokenizer: Tokenizer,
    /// The same tokenizer with special-token parsing off: user text (documents, questions)
    /// is encoded with it, so a document's literal `<|im_start|>` stays text.
    literal: Tokenizer,
    /// The special tokens (content, id), where the template's text is cut.
    specials: Vec<(String, u32)>,
    /// The template source, kept for `supports_thinking` and diagnostics.
    template_source: String,
    /// The compiled template, or why it did not compile: a template minijinja cannot parse
    /// should not stop the model from loading (raw completion still works), so the error is
    /// reported by `render_chat`.
    env: Result<Arc<template::Compiled>, String>,
    bos_token: Option<String>,
    eos_token: Option<String>,
    /// pad_token / unk_token, which transformers also hands to templates.
    other_tokens: SpecialTokens,
    stop_ids: Vec<u32>,
    vocab_size: usize,
}

struct SpecialTokens {
    pad: Option<String>,
    unk: Option<String>,
}

impl std::fmt::Debug for ChatTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTokenizer")
            .field("vocab_size", &self.vocab_size)
            .field("bos_token", &self.bos_token)
            .field("eos_token", &self.eos_token)
            .field("stop_ids", &self.stop_ids)
            .finish_non_exhaustive()
    }
}

impl ChatTokenizer {
    /// From a HF folder: tokenizer.json (+ tokenizer_config.json for chat_template / bos / eos
    /// if present, chat_template.jinja and generation_config.json's eos ids if present).
    pub fn from_dir(dir: &Path) -> Result<Self, TokenizerError> {
        let tok_path = dir.join("tokenizer.json");
        if !tok_path.is_file() {
            return Err(TokenizerError::MissingTokenizerJson {
                dir: dir.to_path_buf(),
            });
        }
        let tokenizer = Tokenizer::from_file(&tok_path).map_err(|e| TokenizerError::BadFile {
            path: tok_path.clone(),
            message: e.to_string(),
        })?;

        let config = read_json_if_exists(&dir.join("tokenizer_config.json"))?;
        let token_field = |name: &str| -> Option<String> {
            // Either "<s>" or {"content": "<s>", ...}.
            match config.as_ref()?.get(name)? {
                serde_json::Value::String(s) => Some(s.clone()),
                serde_json::Value::Object(o) => o.get("content")?.as_str().map(str::to_string),
                _ => None,
            }
        };
        let bos = token_field("bos_token");
        let eos = token_field("eos_token");
        let other_tokens = SpecialTokens {
            pad: token_field("pad_token"),
            unk: token_field("unk_token"),
        };

        // Newer HF repos keep the template in its own file, which transformers prefers.
        let jinja_path = dir.join("chat_template.jinja");
        let template = if jinja_path.is_file() {
            Some(
                std::fs::read_to_string(&jinja_path).map_err(|source| TokenizerError::Io {
                    path: jinja_path,
                    source,
                })?,
            )
        } else {
            match config.as_ref().and_then(|c| c.get("chat_template")) {
                Some(serde_json::Value::String(s)) => Some(s.clone()),
                // A list of named templates: the one called "default" is the chat one.
                Some(serde_json::Value::Array(list)) => list
                    .iter()
                    .find(|t| t.get("name").and_then(|n| n.as_str()) == Some("default"))
                    .or_else(|| list.first())
                    .and_then(|t| t.get("template"))
                    .and_then(|t| t.as_str())
                    .map(str::to_string),
                _ => None,
            }
        };

        let mut extra_stops = Vec::new();
        if let Some(id) = eos.as_deref().and_then(|e| tokenizer.token_to_id(e)) {
            extra_stops.push(id);
        }
        if let Some(gen_cfg) = read_json_if_exists(&dir.join("generation_config.json"))? {
            match gen_cfg.get("eos_token_id") {
                Some(serde_json::Value::Number(n)) => {
                    extra_stops.extend(n.as_u64().map(|n| n as u32))
                }
                Some(serde_json::Value::Array(a)) => {
                    extra_stops.extend(a.iter().filter_map(|n| n.as_u64()).map(|n| n as u32))
                }
                _ => {}
            }
        }
        let vocab_size = tokenizer.get_vocab_size(true);
        Ok(Self::assemble(
            tokenizer,
            template,
            bos,
            eos,
            other_tokens,
            &extra_stops,
            vocab_size,
        ))
    }

    fn assemble(
        tokenizer: Tokenizer,
        template: Option<String>,
        bos_token: Option<String>,
        eos_token: Option<String>,
        other_tokens: SpecialTokens,
        extra_stops: &[u32],
        vocab_size: usize,
    ) -> Self {
        let template_source = template
            .filter(|t| !t.trim().is_empty())
            .unwrap_or_else(|| CHATML_TEMPLATE.to_string());
        let env = build_env(&template_source)
            .map(Arc::new)
            .map_err(|e| format!("{e:#}"));

        let added = tokenizer.get_added_tokens_decoder();
        let mut stop_ids: Vec<u32> = Vec::new();
        let named = STOP_TOKEN_NAMES
            .iter()
            .filter_map(|name| tokenizer.token_to_id(name))
            // Only as special tokens: "</s>" can be ordinary text in a byte-level vocabulary.
            .filter(|id| added.contains_key(id));
        for id in extra_stops.iter().copied().chain(named) {
            if !stop_ids.contains(&id) {
                stop_ids.push(id);
            }
        }
        let mut literal = tokenizer.clone();
        literal.set_encode_special_tokens(true);
        let specials = added
            .iter()
            .filter(|(_, t)| t.special && !t.content.is_empty())
            .map(|(&id, t)| (t.content.clone(), id))
            .collect();
        Self {
            tokenizer,
            literal,
            specials,
            template_source,
            env,
            bos_token,
            eos_token,
            other_tokens,
            stop_ids,
            vocab_size,
        }
    }

    /// Special tokens written in `text` (e.g. "<|im_start|>") map to their ids;
    /// `add_special_tokens` adds what the model wants around a sequence (BOS for Llama 3).
    /// Encode a rendered chat prompt with `add_special_tokens = false`, as transformers does:
    /// templates write BOS themselves.
    /// Text between [`USER_OPEN`] and [`USER_CLOSE`] (as [`ChatTokenizer::render_chat_marked`]
    /// writes it) is the user's: its special-token strings stay text, and the marks vanish.
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>, TokenizerError> {
        if !text.contains([USER_OPEN, USER_CLOSE]) {
            let enc = self
                .tokenizer
                .encode_fast(text, add_special_tokens)
                .map_err(TokenizerError::tk("encode"))?;
            return Ok(enc.get_ids().to_vec());
        }
        Ok(self.encode_with_offsets(text, add_special_tokens)?.0)
    }

    /// [`ChatTokenizer::encode`], with the byte offset in `text` where each token starts.
    /// With marks, the text is cut only at the special tokens the template wrote, and every
    /// stretch between them is encoded with special-token parsing off: the same ids as
    /// encoding the unmarked text whole (transformers also encodes between specials
    /// separately), except that user text never becomes a special token.
    pub fn encode_with_offsets(
        &self,
        text: &str,
        add_special_tokens: bool,
    ) -> Result<(Vec<u32>, Vec<usize>), TokenizerError> {
        let mut plain = String::with_capacity(text.len());
        // (offset in `plain` from which, how far `text` is ahead there)
        let mut shifts: Vec<(usize, usize)> = Vec::new();
        let mut cuts: Vec<(usize, usize, u32)> = Vec::new();
        for (start, piece, user) in user_spans(text) {
            let at = plain.len();
            shifts.push((at, start - at));
            if !user {
                cuts.extend(
                    self.specials_in(piece)
                        .map(|(s, e, id)| (at + s, at + e, id)),
                );
            }
            plain.push_str(piece);
        }
        let in_text = |p: usize| {
            let i = shifts.partition_point(|&(a, _)| a <= p).saturating_sub(1);
            p + shifts.get(i).map_or(0, |s| s.1)
        };
        let (mut ids, mut offsets) = (Vec::new(), Vec::new());
        let mut pos = 0;
        let end = (plain.len(), plain.len(), None);
        for (s, e, id) in cuts
            .into_iter()
            .map(|(s, e, id)| (s, e, Some(id)))
            .chain([end])
        {
            if s > pos {
                let enc = self
                    .literal
                    .encode(&plain[pos..s], add_special_tokens && ids.is_empty())
                    .map_err(TokenizerError::tk("encode"))?;
                ids.extend_from_slice(enc.get_ids());
                offsets.extend(enc.get_offsets().iter().map(|&(a, _)| in_text(pos + a)));
            }
            if let Some(id) = id {
                ids.push(id);
                offsets.push(in_text(s));
            }
            pos = e;
        }
        Ok((ids, offsets))
    }

    /// [`ChatTokenizer::encode_with_offsets`] of `text[range]`, offsets into that slice. A
    /// slice that starts inside user text (the end of a long document, for truncate-head)
    /// holds no mark to say so: whether it does is read from the marks before it.
    pub fn encode_range_with_offsets(
        &self,
        text: &str,
        range: std::ops::Range<usize>,
        add_special_tokens: bool,
    ) -> Result<(Vec<u32>, Vec<usize>), TokenizerError> {
        let inside_user = text[..range.start]
            .rfind([USER_OPEN, USER_CLOSE])
            .is_some_and(|i| text[i..].starts_with(USER_OPEN));
        if !inside_user {
            return self.encode_with_offsets(&text[range], add_special_tokens);
        }
        let mark = USER_OPEN.len_utf8();
        let (ids, offsets) =
            self.encode_with_offsets(&format!("{USER_OPEN}{}", &text[range]), add_special_tokens)?;
        Ok((
            ids,
            offsets
                .into_iter()
                .map(|o| o.saturating_sub(mark))
                .collect(),
        ))
    }

    /// Leftmost-longest occurrences of the special tokens in `text`: (start, end, id).
    fn specials_in<'t>(&'t self, text: &'t str) -> impl Iterator<Item = (usize, usize, u32)> + 't {
        let mut i = 0;
        std::iter::from_fn(move || {
            while i < text.len() {
                let rest = &text[i..];
                let best = self
                    .specials
                    .iter()
                    .filter(|(s, _)| rest.starts_with(s.as_str()))
                    .max_by_key(|(s, _)| s.len());
                let at = i;
                match best {
                    Some((s, id)) => {
                        i += s.len();
                        return Some((at, i, *id));
                    }
                    None => i += rest.chars().next().map_or(1, char::len_utf8),
                }
            }
            None
        })
    }

    /// Decodes every id, special tokens included (as HF `decode(skip_special_tokens=False)`).
    pub fn decode(&self, ids: &[u32]) -> Result<String, TokenizerError> {
        self.tokenizer
            .decode(ids, false)
            .map_err(TokenizerError::tk("decode"))
    }

    /// Renders the model's chat template (Jinja) like HF transformers'
    /// `apply_chat_template(tokenize=False)`. `enable_thinking` is passed to the template as a
    /// variable (Qwen3 templates read it).
    pub fn render_chat(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
        enable_thinking: bool,
    ) -> Result<String, TokenizerError> {
        let text = self.render_chat_marked(messages, add_generation_prompt, enable_thinking)?;
        Ok(text.replace([USER_OPEN, USER_CLOSE], ""))
    }

    /// [`ChatTokenizer::render_chat`] with each user and system message's content between
    /// [`USER_OPEN`] and [`USER_CLOSE`], for [`ChatTokenizer::encode`]: what the user wrote
    /// is text, whatever tokens it spells. Assistant turns are left unmarked (templates
    /// split them at `</think>`, which would separate the marks).
    pub fn render_chat_marked(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
        enable_thinking: bool,
    ) -> Result<String, TokenizerError> {
        let marked: Vec<ChatMessage> = messages
            .iter()
            .map(|m| match m.role.as_str() {
                "assistant" => m.clone(),
                // Inside the surrounding whitespace, so that a template's `trim` still trims.
                _ => {
                    let c = m.content.replace([USER_OPEN, USER_CLOSE], "");
                    let core = c.trim();
                    let lead = c.len() - c.trim_start().len();
                    ChatMessage {
                        role: m.role.clone(),
                        content: format!(
                            "{}{USER_OPEN}{core}{USER_CLOSE}{}",
                            &c[..lead],
                            &c[lead + core.len()..]
                        ),
                    }
                }
            })
            .collect();
        let messages = &marked[..];
        let env = self
            .env
            .as_ref()
            .map_err(|message| TokenizerError::TemplateSyntax {
                message: message.clone(),
            })?;
        let none = JinjaValue::from(());
        let mut ctx = BTreeMap::from([
            ("messages", JinjaValue::from_serialize(messages)),
            ("add_generation_prompt", add_generation_prompt.into()),
            ("enable_thinking", enable_thinking.into()),
            // transformers passes these as None when unused; templates test `tools is not none`.
            ("tools", none.clone()),
            ("documents", none),
        ]);
        // Like transformers, special tokens the model lacks are left undefined.
        let specials = [
            ("bos_token", &self.bos_token),
            ("eos_token", &self.eos_token),
            ("pad_token", &self.other_tokens.pad),
            ("unk_token", &self.other_tokens.unk),
        ];
        for (name, value) in specials {
            if let Some(v) = value {
                ctx.insert(name, JinjaValue::from(v.as_str()));
            }
        }
        let input = messages.iter().map(|m| m.content.len()).sum();
        template::render(env, ctx, input).map_err(TokenizerError::template)
    }

    /// Whether the template knows about thinking (reads `enable_thinking` or writes `<think>`).
    pub fn supports_thinking(&self) -> bool {
        self.template_source.contains("enable_thinking") || self.template_source.contains("<think>")
    }

    /// eos plus the end-of-turn tokens present in the vocabulary as special tokens:
    /// `<|im_end|>`, `<|endoftext|>`, `<|eot_id|>`, `<|end_of_text|>`, `</s>`, ...
    pub fn stop_token_ids(&self) -> &[u32] {
        &self.stop_ids
    }

    /// Number of token ids the tokenizer knows (for a GGUF: its token count).
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.tokenizer
    }

    /// The chat template in use (the model's, or the ChatML fallback).
    pub fn chat_template(&self) -> &str {
        &self.template_source
    }

    pub fn bos_token(&self) -> Option<&str> {
        self.bos_token.as_deref()
    }

    pub fn eos_token(&self) -> Option<&str> {
        self.eos_token.as_deref()
    }
}

/// Incremental detokenizer for streaming: push ids one at a time, get the newly completed text.
/// Special tokens are decoded too, so check `stop_token_ids` before pushing.
///
/// Text is decoded over a small window that starts one emitted chunk back, so decoders that
/// depend on context see the same left context each time, and nothing is returned while the
/// window ends inside a multi-byte UTF-8 character (decoded as U+FFFD).
pub struct TokenStream<'a> {
    tok: &'a ChatTokenizer,
    ids: Vec<u32>,
    /// Start of the decode window.
    prev: usize,
    /// `ids[..emitted]` has been returned as text.
    emitted: usize,
}

impl<'a> TokenStream<'a> {
    pub fn new(tok: &'a ChatTokenizer) -> Self {
        Self {
            tok,
            ids: Vec::new(),
            prev: 0,
            emitted: 0,
        }
    }

    pub fn push(&mut self, id: u32) -> Result<Option<String>, TokenizerError> {
        self.ids.push(id);
        let (prefix, text) = self.window()?;
        if text.len() > prefix.len() && !text.ends_with('\u{FFFD}') {
            let new = suffix_after(&prefix, &text);
            self.prev = self.emitted;
            self.emitted = self.ids.len();
            Ok(Some(new))
        } else {
            Ok(None)
        }
    }

    /// Returns whatever is still held back (e.g. an incomplete character at the end).
    pub fn finish(&mut self) -> Result<Option<String>, TokenizerError> {
        if self.emitted == self.ids.len() {
            return Ok(None);
        }
        let (prefix, text) = self.window()?;
        self.prev = self.emitted;
        self.emitted = self.ids.len();
        let new = suffix_after(&prefix, &text);
        Ok((!new.is_empty()).then_some(new))
    }

    /// (text of the already emitted part of the window, text of the whole window)
    fn window(&self) -> Result<(String, String), TokenizerError> {
        let prefix = if self.emitted > self.prev {
            self.tok.decode(&self.ids[self.prev..self.emitted])?
        } else {
            String::new()
        };
        let text = self.tok.decode(&self.ids[self.prev..])?;
        Ok((prefix, text))
    }
}

/// `text` minus the part it shares with `prefix` (normally `prefix` is a prefix of `text`).
fn suffix_after(prefix: &str, text: &str) -> String {
    if let Some(rest) = text.strip_prefix(prefix) {
        return rest.to_string();
    }
    let common = prefix
        .char_indices()
        .zip(text.chars())
        .find(|((_, a), b)| a != b)
        .map(|((i, _), _)| i)
        .unwrap_or(prefix.len().min(text.len()));
    text.get(common..).unwrap_or("").to_string()
}

fn read_json_if_exists(path: &Path) -> Result<Option<serde_json::Value>, TokenizerError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(TokenizerError::Io {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| TokenizerError::BadFile {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use candle_core::quantized::gguf_file::Value as GgufValue;

    use super::gguf::byte_to_char;
    use super::*;

    /// A tiny byte-level vocabulary: "ab" via a merge, "<|im_end|>" as a control token.
    fn tiny() -> ChatTokenizer {
        ChatTokenizer::from_gguf(&tiny_metadata()).unwrap()
    }

    fn tiny_metadata() -> HashMap<String, GgufValue> {
        let mut toks: Vec<String> = (0..=255u8).map(|b| byte_to_char(b).to_string()).collect();
        toks.push("ab".into());
        toks.push("<|im_end|>".into());
        let mut types = vec![GgufValue::I32(1); toks.len()];
        *types.last_mut().unwrap() = GgufValue::I32(3);
        let mut md = HashMap::new();
        let s = |x: &str| GgufValue::String(x.to_string());
        md.insert("tokenizer.ggml.model".into(), s("gpt2"));
        md.insert("tokenizer.ggml.pre".into(), s("qwen2"));
        md.insert(
            "tokenizer.ggml.tokens".into(),
            GgufValue::Array(toks.iter().map(|t| s(t)).collect()),
        );
        md.insert("tokenizer.ggml.token_type".into(), GgufValue::Array(types));
        // "xy" is not in the vocabulary: the builder rejects that merge and it gets dropped.
        md.insert(
            "tokenizer.ggml.merges".into(),
            GgufValue::Array(vec![s("a b"), s("x y")]),
        );
        md.insert("tokenizer.ggml.eos_token_id".into(), GgufValue::U32(257));
        md
    }

    #[test]
    fn broken_template_fails_at_render_not_load() {
        let mut md = tiny_metadata();
        md.insert(
            "tokenizer.chat_template".into(),
            GgufValue::String("{% for m in messages %}{{ m.content }}".into()),
        );
        let t = ChatTokenizer::from_gguf(&md).unwrap();
        assert_eq!(t.encode("ab", false).unwrap(), vec![256]);
        let e = t
            .render_chat(&[ChatMessage::new("user", "hi")], true, false)
            .unwrap_err();
        assert!(matches!(e, TokenizerError::TemplateSyntax { .. }), "{e}");
    }

    #[test]
    fn tiny_vocab_round_trip_and_stream() {
        let t = tiny();
        assert_eq!(t.vocab_size(), 258);
        assert_eq!(t.stop_token_ids(), &[257]);
        assert_eq!(t.encode("ab<|im_end|>", false).unwrap(), vec![256, 257]);
        // No template in the metadata: ChatML.
        let r = t
            .render_chat(&[ChatMessage::new("user", "hi")], true, false)
            .unwrap();
        assert_eq!(r, "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n");
        assert!(!t.supports_thinking());

        // "é€" is 2 + 3 bytes, one token per byte: nothing until each character is complete.
        let text = "é€ab";
        let ids = t.encode(text, false).unwrap();
        let mut stream = TokenStream::new(&t);
        let mut pieces = Vec::new();
        for id in ids {
            pieces.push(stream.push(id).unwrap());
        }
        assert_eq!(
            pieces,
            vec![
                None,
                Some("é".to_string()),
                None,
                None,
                Some("€".to_string()),
                Some("ab".to_string())
            ]
        );
        assert_eq!(stream.finish().unwrap(), None);

        // A trailing incomplete character comes out of `finish`.
        let mut stream = TokenStream::new(&t);
        assert_eq!(stream.push(0xC3).unwrap(), None);
        assert_eq!(stream.finish().unwrap(), Some("\u{FFFD}".to_string()));
    }
}
