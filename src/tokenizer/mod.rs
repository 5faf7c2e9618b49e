//! Tokenizer and chat template.
//!
//! A GGUF file carries its vocabulary, merges and special-token ids as metadata but no
//! `tokenizer.json`, so [`ChatTokenizer::from_gguf`] rebuilds a `tokenizers::Tokenizer` from
//! them, splitting text the way llama.cpp and the model's own HF `tokenizer.json` do for the
//! file's `tokenizer.ggml.pre`. The model's Jinja chat template is rendered with minijinja,
//! set up to behave like HF transformers' `apply_chat_template(tokenize=False)`.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use candle_core::quantized::gguf_file::Value as GgufValue;
use minijinja::value::{Kwargs, Value as JinjaValue};
use minijinja::{Environment, ErrorKind};
use serde::{Deserialize, Serialize};
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{BPE, Vocab};
use tokenizers::normalizers::NFC;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{AddedToken, SplitDelimiterBehavior, Tokenizer};

/// `tokenizer.ggml.pre` values we can rebuild, for error messages.
pub const SUPPORTED_PRE_TOKENIZERS: &[&str] = &[
    "smollm",
    "qwen2",
    "deepseek-r1-qwen",
    "llama-bpe",
    "llama3",
    "llama-v3",
    "gpt-2",
    "default",
];

/// `tokenizer.ggml.model` values we can rebuild, for error messages.
pub const SUPPORTED_TOKENIZER_MODELS: &[&str] = &["gpt2 (byte-level BPE)"];

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

// Split patterns, as in the models' HF tokenizer.json files (and llama.cpp's llama-vocab.cpp).
const QWEN2_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const LLAMA3_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// GGUF token types (llama.cpp's `llama_token_type`).
const TOKEN_TYPE_NORMAL: i64 = 1;
const TOKEN_TYPE_CONTROL: i64 = 3;
const TOKEN_TYPE_USER_DEFINED: i64 = 4;

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
    #[error("{path} could not be parsed: {message}")]
    BadFile { path: PathBuf, message: String },
    #[error("tokenizer {op} failed: {message}")]
    Tokenizers { op: &'static str, message: String },
    #[error(
        "the model's chat template does not compile ({message}): it uses Jinja that minijinja \
         does not support; load the model from a folder whose tokenizer_config.json has a \
         simpler `chat_template`"
    )]
    TemplateSyntax { message: String },
    /// Includes messages the template raises itself (`raise_exception`), e.g. on role order.
    #[error("rendering the model's chat template failed: {message}")]
    Template { message: String },
}

impl TokenizerError {
    fn tk(op: &'static str) -> impl FnOnce(tokenizers::Error) -> Self {
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
    /// The template source, kept for `supports_thinking` and diagnostics.
    template_source: String,
    /// The compiled template, or why it did not compile: a template minijinja cannot parse
    /// should not stop the model from loading (raw completion still works), so the error is
    /// reported by `render_chat`.
    env: Result<Environment<'static>, String>,
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

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PreTokenizerKind {
    /// GPT-2's regex (HF `ByteLevel(use_regex=true)`).
    Gpt2,
    /// Every digit on its own, then GPT-2's regex: SmolLM's tokenizer.json
    /// (`Digits(individual_digits=true)` + `ByteLevel`), llama.cpp's `smollm`.
    SmolLm,
    /// Qwen2's split regex (single digits) with NFC, as in Qwen's tokenizer.json.
    Qwen2,
    /// Llama 3's split regex (digits in groups of up to 3) with `ignore_merges`.
    Llama3,
}

impl PreTokenizerKind {
    fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "smollm" => Self::SmolLm,
            "qwen2" | "deepseek-r1-qwen" => Self::Qwen2,
            "llama-bpe" | "llama3" | "llama-v3" => Self::Llama3,
            // llama.cpp's `default` is a different split, but files say `default` when the
            // converter did not recognise the tokenizer; transformers then uses GPT-2's split.
            "gpt-2" | "gpt2" | "default" => Self::Gpt2,
            _ => return None,
        })
    }
}

impl ChatTokenizer {
    /// From GGUF metadata (tokenizer.ggml.model, .pre, .tokens, .token_type, .merges,
    /// .bos_token_id, .eos_token_id, .padding_token_id, .add_bos_token, tokenizer.chat_template).
    pub fn from_gguf(md: &HashMap<String, GgufValue>) -> Result<Self, TokenizerError> {
        let model =
            gguf_str(md, "tokenizer.ggml.model")?.ok_or_else(|| missing("tokenizer.ggml.model"))?;
        if model != "gpt2" {
            return Err(TokenizerError::UnsupportedTokenizerModel {
                model: model.to_string(),
            });
        }
        // Older converters wrote no `pre`; llama.cpp then falls back to its default.
        let pre_name = gguf_str(md, "tokenizer.ggml.pre")?.unwrap_or("default");
        let pre = PreTokenizerKind::from_name(pre_name).ok_or_else(|| {
            TokenizerError::UnsupportedPreTokenizer {
                name: pre_name.to_string(),
            }
        })?;

        let tokens = gguf_array(md, "tokenizer.ggml.tokens")?
            .ok_or_else(|| missing("tokenizer.ggml.tokens"))?;
        let n_vocab = tokens.len();
        let types: Vec<i64> = match gguf_array(md, "tokenizer.ggml.token_type")? {
            Some(arr) => {
                if arr.len() != n_vocab {
                    return Err(bad(
                        "tokenizer.ggml.token_type",
                        format!("{} entries for {n_vocab} tokens", arr.len()),
                    ));
                }
                arr.iter()
                    .map(|v| {
                        gguf_int(v)
                            .ok_or_else(|| bad("tokenizer.ggml.token_type", "not an integer"))
                    })
                    .collect::<Result<_, _>>()?
            }
            None => vec![TOKEN_TYPE_NORMAL; n_vocab],
        };

        let mut special = Vec::new();
        let mut user_defined = Vec::new();
        for (tok, &ty) in tokens.iter().zip(&types) {
            // Matched whole in the text, before BPE (llama.cpp and transformers both do).
            if let (GgufValue::String(text), TOKEN_TYPE_CONTROL | TOKEN_TYPE_USER_DEFINED) =
                (tok, ty)
            {
                let token =
                    AddedToken::from(text.clone(), ty == TOKEN_TYPE_CONTROL).normalized(false);
                if ty == TOKEN_TYPE_CONTROL {
                    special.push(token);
                } else {
                    user_defined.push(token);
                }
            }
        }

        let merges = gguf_array(md, "tokenizer.ggml.merges")?
            .ok_or_else(|| missing("tokenizer.ggml.merges"))?;
        let build = |check_merges: bool| -> Result<BPE, TokenizerError> {
            let vocab = gguf_vocab(tokens, &types)?;
            let merges = gguf_merges(merges, check_merges.then_some(&vocab))?;
            BPE::builder()
                .vocab_and_merges(vocab, merges)
                .ignore_merges(pre == PreTokenizerKind::Llama3)
                .build()
                .map_err(TokenizerError::tk("build"))
        };
        // Converters write merges over known tokens; checking each costs a third of the load
        // time, so it is only done when the builder rejects one.
        let bpe = match build(false) {
            Ok(bpe) => bpe,
            Err(_) => build(true)?,
        };
        let mut tokenizer = Tokenizer::new(bpe);
        // The normalizer goes in before the added tokens, so they need no re-normalising.
        if pre == PreTokenizerKind::Qwen2 {
            tokenizer
                .with_normalizer(Some(NFC))
                .map_err(TokenizerError::tk("build"))?;
        }
        tokenizer.with_pre_tokenizer(Some(build_pre_tokenizer(pre)?));
        tokenizer.with_decoder(Some(ByteLevelDecoder::default()));
        tokenizer
            .add_special_tokens(special)
            .map_err(TokenizerError::tk("build"))?;
        tokenizer
            .add_tokens(user_defined)
            .map_err(TokenizerError::tk("build"))?;

        let token_text = |key: &str| -> Result<Option<(u32, String)>, TokenizerError> {
            let Some(v) = md.get(key) else {
                return Ok(None);
            };
            let id = gguf_int(v).ok_or_else(|| bad(key, "not an integer"))?;
            match tokens.get(id as usize) {
                Some(GgufValue::String(s)) if id >= 0 => Ok(Some((id as u32, s.clone()))),
                _ => Err(bad(
                    key,
                    format!("id {id} is outside the {n_vocab}-token vocabulary"),
                )),
            }
        };
        let bos = token_text("tokenizer.ggml.bos_token_id")?;
        let eos = token_text("tokenizer.ggml.eos_token_id")?;
        let eot = token_text("tokenizer.ggml.eot_token_id")?;
        let eom = token_text("tokenizer.ggml.eom_token_id")?;
        let other_tokens = SpecialTokens {
            pad: token_text("tokenizer.ggml.padding_token_id")?.map(|(_, s)| s),
            unk: token_text("tokenizer.ggml.unknown_token_id")?.map(|(_, s)| s),
        };

        // llama.cpp adds BOS by default only for Llama 3's tokenizer; the metadata can override.
        let add_bos = gguf_bool(md, "tokenizer.ggml.add_bos_token")?
            .unwrap_or(pre == PreTokenizerKind::Llama3);
        let add_eos = gguf_bool(md, "tokenizer.ggml.add_eos_token")?.unwrap_or(false);
        let post = build_post_processor(
            if add_bos { bos.as_ref() } else { None },
            if add_eos { eos.as_ref() } else { None },
        )?;
        if post.is_some() {
            tokenizer.with_post_processor(post);
        }

        let template = gguf_str(md, "tokenizer.chat_template")?.map(str::to_string);
        let extra_stops: Vec<u32> = [&eos, &eot, &eom]
            .into_iter()
            .flatten()
            .map(|(id, _)| *id)
            .collect();
        Ok(Self::assemble(
            tokenizer,
            template,
            bos.map(|(_, s)| s),
            eos.map(|(_, s)| s),
            other_tokens,
            &extra_stops,
            n_vocab,
        ))
    }

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
        let env = build_env(&template_source).map_err(|e| format!("{e:#}"));

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
        Self {
            tokenizer,
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
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>, TokenizerError> {
        let enc = self
            .tokenizer
            .encode_fast(text, add_special_tokens)
            .map_err(TokenizerError::tk("encode"))?;
        Ok(enc.get_ids().to_vec())
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
        let env = self
            .env
            .as_ref()
            .map_err(|message| TokenizerError::TemplateSyntax {
                message: message.clone(),
            })?;
        let tmpl = env.get_template("chat").map_err(TokenizerError::template)?;
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
        tmpl.render(ctx).map_err(TokenizerError::template)
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

// ---------------------------------------------------------------------------------------------
// Tokenizer pieces

fn build_pre_tokenizer(kind: PreTokenizerKind) -> Result<Sequence, TokenizerError> {
    let split = |pattern: &str| {
        Split::new(
            SplitPattern::Regex(pattern.to_string()),
            SplitDelimiterBehavior::Isolated,
            false,
        )
        .map_err(TokenizerError::tk("build"))
    };
    // After a Split, ByteLevel only maps bytes to its alphabet (`use_regex = false`).
    let bytes_only = ByteLevel::new(false, false, false);
    Ok(Sequence::new(match kind {
        PreTokenizerKind::Gpt2 => vec![ByteLevel::new(false, true, true).into()],
        PreTokenizerKind::SmolLm => vec![
            Digits::new(true).into(),
            ByteLevel::new(false, true, true).into(),
        ],
        PreTokenizerKind::Qwen2 => vec![split(QWEN2_PATTERN)?.into(), bytes_only.into()],
        PreTokenizerKind::Llama3 => vec![split(LLAMA3_PATTERN)?.into(), bytes_only.into()],
    }))
}

fn build_post_processor(
    bos: Option<&(u32, String)>,
    eos: Option<&(u32, String)>,
) -> Result<Option<TemplateProcessing>, TokenizerError> {
    if bos.is_none() && eos.is_none() {
        return Ok(None);
    }
    let (b, e) = (
        bos.map(|(_, s)| format!("{s} ")).unwrap_or_default(),
        eos.map(|(_, s)| format!(" {s}")).unwrap_or_default(),
    );
    let mut specials: Vec<(String, u32)> = Vec::new();
    for (id, s) in [bos, eos].into_iter().flatten() {
        if s.chars().any(char::is_whitespace) {
            // The template syntax is whitespace-separated; such a token cannot be expressed.
            return Err(TokenizerError::Tokenizers {
                op: "build",
                message: format!("special token `{s}` contains whitespace"),
            });
        }
        specials.push((s.clone(), *id));
    }
    let built = TemplateProcessing::builder()
        .try_single(format!("{b}$A{e}"))
        .and_then(|t| t.try_pair(format!("{b}$A{e} {b}$B:1{e}")))
        .map_err(|e| TokenizerError::Tokenizers {
            op: "build",
            message: e.to_string(),
        })?
        .special_tokens(specials)
        .build()
        .map_err(|e| TokenizerError::Tokenizers {
            op: "build",
            message: e.to_string(),
        })?;
    Ok(Some(built))
}

/// GPT-2's byte-to-character map: printable bytes stand for themselves, the others are
/// shifted to U+0100.. in order.
fn byte_to_char(b: u8) -> char {
    const fn printable(b: u8) -> bool {
        matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF)
    }
    if printable(b) {
        return b as char;
    }
    let n = (0..b).filter(|&x| !printable(x)).count() as u32;
    char::from_u32(256 + n).expect("within U+0100..U+0143")
}

/// Whether every character is in the byte-level alphabet (U+0021..U+007E, U+00A1..U+00AC,
/// U+00AE..U+0143).
fn is_byte_level_spelled(s: &str) -> bool {
    s.chars()
        .all(|c| matches!(c as u32, 0x21..=0x7E | 0xA1..=0xAC | 0xAE..=0x143))
}

fn byte_level_spelling(s: &str) -> String {
    s.bytes().map(byte_to_char).collect()
}

/// token -> id, with normal tokens in the byte-level alphabet BPE looks them up in.
fn gguf_vocab(tokens: &[GgufValue], types: &[i64]) -> Result<Vocab, TokenizerError> {
    let mut vocab = Vocab::with_capacity(tokens.len());
    for (id, (tok, &ty)) in tokens.iter().zip(types).enumerate() {
        let GgufValue::String(text) = tok else {
            return Err(bad(
                "tokenizer.ggml.tokens",
                format!("entry {id} is not a string"),
            ));
        };
        // A normal token spelled outside the alphabet is respelled from its UTF-8 bytes, as
        // transformers does; special tokens keep their text, which is what they match.
        let key = if ty == TOKEN_TYPE_NORMAL && !is_byte_level_spelled(text) {
            byte_level_spelling(text)
        } else {
            text.clone()
        };
        vocab.insert(key, id as u32);
    }
    Ok(vocab)
}

/// `"a b"` merges as pairs; with `known`, merges over tokens missing from it are dropped (the
/// BPE builder rejects them, and llama.cpp could never produce those tokens anyway).
fn gguf_merges(
    merges: &[GgufValue],
    known: Option<&Vocab>,
) -> Result<Vec<(String, String)>, TokenizerError> {
    let mut out = Vec::with_capacity(merges.len());
    let mut joined = String::new();
    for (i, m) in merges.iter().enumerate() {
        let GgufValue::String(m) = m else {
            return Err(bad(
                "tokenizer.ggml.merges",
                format!("entry {i} is not a string"),
            ));
        };
        let (a, b) = m.split_once(' ').ok_or_else(|| {
            bad(
                "tokenizer.ggml.merges",
                format!("entry {i} `{m}` has no space"),
            )
        })?;
        if let Some(vocab) = known {
            joined.clear();
            joined.push_str(a);
            joined.push_str(b);
            if !(vocab.contains_key(a)
                && vocab.contains_key(b)
                && vocab.contains_key(joined.as_str()))
            {
                continue;
            }
        }
        out.push((a.to_string(), b.to_string()));
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// GGUF metadata access

fn missing(key: &str) -> TokenizerError {
    TokenizerError::MissingMetadata {
        key: key.to_string(),
    }
}

fn bad(key: &str, reason: impl Into<String>) -> TokenizerError {
    TokenizerError::BadMetadata {
        key: key.to_string(),
        reason: reason.into(),
    }
}

fn gguf_str<'m>(
    md: &'m HashMap<String, GgufValue>,
    key: &str,
) -> Result<Option<&'m str>, TokenizerError> {
    match md.get(key) {
        None => Ok(None),
        Some(GgufValue::String(s)) => Ok(Some(s)),
        Some(_) => Err(bad(key, "not a string")),
    }
}

fn gguf_array<'m>(
    md: &'m HashMap<String, GgufValue>,
    key: &str,
) -> Result<Option<&'m Vec<GgufValue>>, TokenizerError> {
    match md.get(key) {
        None => Ok(None),
        Some(GgufValue::Array(a)) => Ok(Some(a)),
        Some(_) => Err(bad(key, "not an array")),
    }
}

fn gguf_bool(md: &HashMap<String, GgufValue>, key: &str) -> Result<Option<bool>, TokenizerError> {
    match md.get(key) {
        None => Ok(None),
        Some(GgufValue::Bool(b)) => Ok(Some(*b)),
        Some(v) => gguf_int(v)
            .map(|i| Some(i != 0))
            .ok_or_else(|| bad(key, "not a boolean")),
    }
}

fn gguf_int(v: &GgufValue) -> Option<i64> {
    Some(match *v {
        GgufValue::U8(x) => x.into(),
        GgufValue::I8(x) => x.into(),
        GgufValue::U16(x) => x.into(),
        GgufValue::I16(x) => x.into(),
        GgufValue::U32(x) => x.into(),
        GgufValue::I32(x) => x.into(),
        GgufValue::U64(x) => i64::try_from(x).ok()?,
        GgufValue::I64(x) => x,
        _ => return None,
    })
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

// ---------------------------------------------------------------------------------------------
// Chat template environment, matching transformers' (`trim_blocks`, `lstrip_blocks`,
// `raise_exception`, `strftime_now`, a `tojson` that writes like Python's `json.dumps`).

fn build_env(source: &str) -> Result<Environment<'static>, minijinja::Error> {
    let mut env = Environment::new();
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    // Python string/dict methods (.strip(), .startswith(), .items(), ...) used by HF templates.
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_function(
        "raise_exception",
        |msg: String| -> Result<JinjaValue, minijinja::Error> {
            Err(minijinja::Error::new(ErrorKind::InvalidOperation, msg))
        },
    );
    env.add_function("strftime_now", |fmt: String| {
        strftime(&fmt, SystemTime::now())
    });
    env.add_filter("tojson", tojson);
    env.add_template_owned("chat", source.to_string())?;
    Ok(env)
}

/// `json.dumps(value, ensure_ascii=False, indent=indent)`, as transformers' `tojson`:
/// minijinja's own escapes `<`, `>`, `&` and `'`, and drops Python's spaces after `,` and `:`.
fn tojson(value: JinjaValue, kwargs: Kwargs) -> Result<JinjaValue, minijinja::Error> {
    let indent: Option<usize> = kwargs.get("indent")?;
    let ensure_ascii: Option<bool> = kwargs.get("ensure_ascii")?;
    // Maps here already iterate in key order, and custom separators are not worth supporting.
    let _: Option<JinjaValue> = kwargs.get("sort_keys")?;
    let _: Option<JinjaValue> = kwargs.get("separators")?;
    kwargs.assert_all_used()?;
    let mut out = Vec::new();
    let res = match indent {
        Some(n) => {
            let pad = vec![b' '; n];
            let mut ser = serde_json::Serializer::with_formatter(
                &mut out,
                serde_json::ser::PrettyFormatter::with_indent(&pad),
            );
            value.serialize(&mut ser)
        }
        None => {
            let mut ser = serde_json::Serializer::with_formatter(&mut out, PyJsonFormatter);
            value.serialize(&mut ser)
        }
    };
    res.map_err(|e| minijinja::Error::new(ErrorKind::InvalidOperation, format!("tojson: {e}")))?;
    let mut s = String::from_utf8(out)
        .map_err(|e| minijinja::Error::new(ErrorKind::InvalidOperation, e.to_string()))?;
    if ensure_ascii == Some(true) && !s.is_ascii() {
        s = s
            .chars()
            .map(|c| {
                if c.is_ascii() {
                    return c.to_string();
                }
                let mut units = [0u16; 2];
                c.encode_utf16(&mut units)
                    .iter()
                    .map(|u| format!("\\u{u:04x}"))
                    .collect()
            })
            .collect();
    }
    Ok(JinjaValue::from_safe_string(s))
}

/// Python's default `json.dumps` separators: `", "` and `": "`.
struct PyJsonFormatter;

impl serde_json::ser::Formatter for PyJsonFormatter {
    fn begin_array_value<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        if first { Ok(()) } else { w.write_all(b", ") }
    }
    fn begin_object_key<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        if first { Ok(()) } else { w.write_all(b", ") }
    }
    fn begin_object_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        w.write_all(b": ")
    }
}

/// A small `strftime` for `strftime_now` (Llama 3 templates print today's date), in UTC.
fn strftime(fmt: &str, now: SystemTime) -> String {
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    const DAYS: [&str; 7] = [
        "Monday",
        "Tuesday",
        "Wednesday",
        "Thursday",
        "Friday",
        "Saturday",
        "Sunday",
    ];
    let secs = now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let weekday = (days + 3).rem_euclid(7) as usize; // 1970-01-01 was a Thursday
    let yday = days - days_from_civil(y, 1, 1) + 1;
    let (hh, mm, ss) = (sod / 3600, sod / 60 % 60, sod % 60);

    let mut out = String::new();
    let mut chars = fmt.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('d') => out.push_str(&format!("{d:02}")),
            Some('e') => out.push_str(&format!("{d:>2}")),
            Some('m') => out.push_str(&format!("{m:02}")),
            Some('Y') => out.push_str(&y.to_string()),
            Some('y') => out.push_str(&format!("{:02}", y.rem_euclid(100))),
            Some('b') | Some('h') => out.push_str(&MONTHS[m as usize - 1][..3]),
            Some('B') => out.push_str(MONTHS[m as usize - 1]),
            Some('a') => out.push_str(&DAYS[weekday][..3]),
            Some('A') => out.push_str(DAYS[weekday]),
            Some('j') => out.push_str(&format!("{yday:03}")),
            Some('H') => out.push_str(&format!("{hh:02}")),
            Some('I') => out.push_str(&format!("{:02}", (hh + 11) % 12 + 1)),
            Some('p') => out.push_str(if hh < 12 { "AM" } else { "PM" }),
            Some('M') => out.push_str(&format!("{mm:02}")),
            Some('S') => out.push_str(&format!("{ss:02}")),
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (i64::from(m) + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn byte_level_alphabet() {
        assert_eq!(byte_to_char(b' '), 'Ġ');
        assert_eq!(byte_to_char(b'\n'), 'Ċ');
        assert_eq!(byte_to_char(b'a'), 'a');
        assert_eq!(byte_to_char(0xAD), '\u{143}');
        assert!((0..=255u8).all(|b| is_byte_level_spelled(&byte_to_char(b).to_string())));
        assert!(!is_byte_level_spelled("a b"));
    }

    #[test]
    fn strftime_formats() {
        // 2024-07-26 13:05:09 UTC, a Friday.
        let t = UNIX_EPOCH
            + Duration::from_secs(1_722_000_000 - 1_722_000_000 % 86_400 + 13 * 3600 + 5 * 60 + 9);
        assert_eq!(strftime("%d %b %Y", t), "26 Jul 2024");
        assert_eq!(
            strftime("%A %B %j %H:%M:%S %I%p %%", t),
            "Friday July 208 13:05:09 01PM %"
        );
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
    }

    #[test]
    fn tojson_like_python() {
        let env = build_env(
            "{{ x | tojson }}|{{ x | tojson(indent=2) }}|{{ 'é😀' | tojson(ensure_ascii=true) }}",
        )
        .unwrap();
        let x = serde_json::json!({"a": [1, "<b>"], "é": null});
        let out = env
            .get_template("chat")
            .unwrap()
            .render(minijinja::context! { x => x })
            .unwrap();
        assert_eq!(
            out,
            "{\"a\": [1, \"<b>\"], \"é\": null}|{\n  \"a\": [\n    1,\n    \"<b>\"\n  ],\n  \"é\": null\n}|\"\\u00e9\\ud83d\\ude00\""
        );
    }

    #[test]
    fn template_errors_are_deferred_and_raise_exception_works() {
        let env = build_env("{{ raise_exception('no system role') }}").unwrap();
        let err = env.get_template("chat").unwrap().render(()).unwrap_err();
        assert!(format!("{err:#}").contains("no system role"));
        assert!(build_env("{% for %}").is_err());
    }

    #[test]
    fn unsupported_metadata_errors() {
        let mut md = HashMap::new();
        md.insert(
            "tokenizer.ggml.model".to_string(),
            GgufValue::String("llama".into()),
        );
        let e = ChatTokenizer::from_gguf(&md).unwrap_err();
        assert!(
            matches!(e, TokenizerError::UnsupportedTokenizerModel { .. }),
            "{e}"
        );
        md.insert(
            "tokenizer.ggml.model".to_string(),
            GgufValue::String("gpt2".into()),
        );
        md.insert(
            "tokenizer.ggml.pre".to_string(),
            GgufValue::String("jais".into()),
        );
        let e = ChatTokenizer::from_gguf(&md).unwrap_err();
        assert!(matches!(e, TokenizerError::UnsupportedPreTokenizer { .. }));
        assert!(e.to_string().contains("smollm, qwen2"), "{e}");
        md.insert(
            "tokenizer.ggml.pre".to_string(),
            GgufValue::String("qwen2".into()),
        );
        let e = ChatTokenizer::from_gguf(&md).unwrap_err();
        assert!(matches!(e, TokenizerError::MissingMetadata { .. }), "{e}");
    }

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
