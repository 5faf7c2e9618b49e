//! GGUF vocabulary → a `tokenizers` tokenizer: byte-level BPE from `tokenizer.ggml.tokens`
//! and `.merges`, split the way llama.cpp and the model's own HF `tokenizer.json` do for the
//! file's `tokenizer.ggml.pre`, with the special tokens and BOS/EOS handling from the metadata.

use std::collections::HashMap;

use candle_core::quantized::gguf_file::Value as GgufValue;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{BPE, Vocab};
use tokenizers::normalizers::NFC;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{AddedToken, SplitDelimiterBehavior, Tokenizer};

use super::{ChatTokenizer, SpecialTokens, TokenizerError};

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

// Split patterns, as in the models' HF tokenizer.json files (and llama.cpp's llama-vocab.cpp).
const QWEN2_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const LLAMA3_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// GGUF token types (llama.cpp's `llama_token_type`).
const TOKEN_TYPE_NORMAL: i64 = 1;
const TOKEN_TYPE_CONTROL: i64 = 3;
const TOKEN_TYPE_USER_DEFINED: i64 = 4;

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
}

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
        .map_err(TokenizerError::tk("build"))?
        .special_tokens(specials)
        .build()
        .map_err(TokenizerError::tk("build"))?;
    Ok(Some(built))
}

/// GPT-2's byte-to-character map: printable bytes stand for themselves, the others are
/// shifted to U+0100.. in order.
pub(super) fn byte_to_char(b: u8) -> char {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
