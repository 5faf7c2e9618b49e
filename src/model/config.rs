//! The shape of a decoder-only transformer, read from GGUF metadata or `config.json`.

use std::collections::HashMap;
use std::fmt;

use candle_core::quantized::gguf_file::Value;
use serde::Deserialize;

use super::ModelError;
use super::rope::RopeScaling;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    /// SmolLM2, Llama 3.
    Llama,
    /// Qwen2.5: llama + q/k/v bias.
    Qwen2,
    /// Qwen3: llama + per-head RMSNorm on q and k.
    Qwen3,
}

impl Arch {
    pub fn parse(name: &str) -> Result<Self, ModelError> {
        match name {
            "llama" | "LlamaForCausalLM" => Ok(Arch::Llama),
            "qwen2" | "Qwen2ForCausalLM" => Ok(Arch::Qwen2),
            "qwen3" | "Qwen3ForCausalLM" => Ok(Arch::Qwen3),
            // The name comes from the file: shown short and without terminal controls.
            other => Err(ModelError::UnsupportedArch(
                crate::units::printable(&other.chars().take(40).collect::<String>()).into_owned(),
            )),
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Qwen2 => "qwen2",
            Arch::Qwen3 => "qwen3",
        }
    }
    pub fn has_qkv_bias(self) -> bool {
        self == Arch::Qwen2
    }
    pub fn has_qk_norm(self) -> bool {
        self == Arch::Qwen3
    }
}

/// `config.json` keys without a default.
const REQUIRED: &[&str] = &[
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
];

/// A JSON value for a message: short, whatever its size.
fn short_json(v: &serde_json::Value) -> String {
    let s = v.to_string();
    match s.char_indices().nth(40) {
        Some((i, _)) => format!("{}…", crate::units::printable(&s[..i])),
        None => crate::units::printable(&s).into_owned(),
    }
}

/// What a metadata value is, for a message (never the value itself: it may be megabytes).
fn value_kind(v: &Value) -> String {
    match v {
        Value::String(s) => format!("a string of {} bytes", s.len()),
        Value::Array(a) => format!("an array of {} entries", a.len()),
        Value::I8(x) => format!("{x}"),
        Value::I16(x) => format!("{x}"),
        Value::I32(x) => format!("{x}"),
        Value::I64(x) => format!("{x}"),
        Value::F32(x) => format!("{x}"),
        Value::F64(x) => format!("{x}"),
        Value::Bool(x) => format!("{x}"),
        other => format!("{other:?}"),
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How RoPE pairs the dimensions of a head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeStyle {
    /// Pairs (2i, 2i+1): llama weights as converted to GGUF (Q and K rows permuted).
    Interleaved,
    /// Pairs (i, i + d/2): Hugging Face llama, and qwen everywhere ("neox").
    Halves,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ModelConfig {
    pub arch: Arch,
    pub vocab: usize,
    pub hidden: usize,
    pub intermediate: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub rope_theta: f64,
    pub rms_eps: f64,
    pub tied_embeddings: bool,
    /// The context length the model was trained for (with its RoPE scaling, if it has one).
    pub ctx: usize,
    pub rope_style: RopeStyle,
    /// RoPE scaling: the model file's own, or one chosen for a longer context
    /// ([`ModelConfig::scaling_for_context`]).
    pub rope_scaling: Option<RopeScaling>,
}

impl ModelConfig {
    pub fn from_gguf(md: &HashMap<String, Value>, has_output: bool) -> Result<Self, ModelError> {
        let get = |k: &str| {
            md.get(k)
                .ok_or_else(|| ModelError::MissingMetadata(k.to_string()))
        };
        let arch_name = get("general.architecture")?
            .to_string()
            .map_err(|_| ModelError::BadMetadata {
                key: "general.architecture".into(),
                detail: "is not a string".into(),
            })?
            .clone();
        let arch = Arch::parse(&arch_name)?;
        let p = arch.as_str();
        let num = |k: &str| -> Result<usize, ModelError> {
            let key = format!("{p}.{k}");
            let v = get(&key)?;
            v.to_u32()
                .map(u64::from)
                .or_else(|_| v.to_u64())
                .ok()
                .and_then(|x| usize::try_from(x).ok())
                .ok_or_else(|| ModelError::BadMetadata {
                    key,
                    detail: format!("is {}, not a whole number", value_kind(v)),
                })
        };
        let float = |k: &str, default: f64| -> Result<f64, ModelError> {
            let key = format!("{p}.{k}");
            match md.get(&key) {
                None => Ok(default),
                Some(v) => v
                    .to_f32()
                    .map(f64::from)
                    .map_err(|_| ModelError::BadMetadata {
                        key,
                        detail: format!("is {}, not a number", value_kind(v)),
                    }),
            }
        };
        let hidden = num("embedding_length")?;
        let heads = num("attention.head_count")?;
        let head_dim = match md.contains_key(&format!("{p}.attention.key_length")) {
            true => num("attention.key_length")?,
            false => hidden.checked_div(heads).unwrap_or(0),
        };
        let vocab = match md
            .get("tokenizer.ggml.tokens")
            .and_then(|t| t.to_vec().ok())
        {
            Some(t) => t.len(),
            None => num("vocab_size")?,
        };
        let ctx = num("context_length")?;
        let cfg = ModelConfig {
            arch,
            vocab,
            hidden,
            intermediate: num("feed_forward_length")?,
            layers: num("block_count")?,
            heads,
            kv_heads: match md.contains_key(&format!("{p}.attention.head_count_kv")) {
                true => num("attention.head_count_kv")?,
                false => heads,
            },
            head_dim,
            rope_theta: float("rope.freq_base", 10_000.0)?,
            rms_eps: float("attention.layer_norm_rms_epsilon", 1e-6)?,
            tied_embeddings: !has_output,
            ctx,
            // llama.cpp's converter permutes llama's Q/K rows for interleaved RoPE; qwen is neox.
            rope_style: if arch == Arch::Llama {
                RopeStyle::Interleaved
            } else {
                RopeStyle::Halves
            },
            rope_scaling: RopeScaling::from_gguf(md, p, ctx)?,
        };
        cfg.validated(|field| {
            let k = match field {
                "vocab" if md.contains_key("tokenizer.ggml.tokens") => {
                    return "tokenizer.ggml.tokens".into();
                }
                "vocab" => "vocab_size",
                "hidden" => "embedding_length",
                "intermediate" => "feed_forward_length",
                "layers" => "block_count",
                "heads" => "attention.head_count",
                "kv_heads" => "attention.head_count_kv",
                "head_dim" => "attention.key_length",
                "ctx" => "context_length",
                "rope_theta" => "rope.freq_base",
                _ => "attention.layer_norm_rms_epsilon",
            };
            format!("{p}.{k}")
        })
    }

    pub fn from_hf_json(json: &str) -> Result<Self, ModelError> {
        #[derive(Deserialize)]
        struct Hf {
            architectures: Option<Vec<String>>,
            model_type: Option<String>,
            vocab_size: usize,
            hidden_size: usize,
            intermediate_size: usize,
            num_hidden_layers: usize,
            num_attention_heads: usize,
            num_key_value_heads: Option<usize>,
            head_dim: Option<usize>,
            rope_theta: Option<f64>,
            rms_norm_eps: Option<f64>,
            tie_word_embeddings: Option<bool>,
            max_position_embeddings: Option<usize>,
            rope_scaling: Option<serde_json::Value>,
            /// transformers v5's name for `rope_scaling`.
            rope_parameters: Option<serde_json::Value>,
        }
        // serde's messages give a column, not the key: check the shape's keys first.
        let v: serde_json::Value = serde_json::from_str(json)
            .map_err(|e| ModelError::BadConfig(json_error_at_key(json, &e)))?;
        for key in [
            "vocab_size",
            "hidden_size",
            "intermediate_size",
            "num_hidden_layers",
            "num_attention_heads",
            "num_key_value_heads",
            "head_dim",
            "max_position_embeddings",
        ] {
            match v.get(key) {
                Some(x) if !(x.is_u64() || x.is_null() && !REQUIRED.contains(&key)) => {
                    return Err(ModelError::BadMetadata {
                        key: key.into(),
                        detail: format!("is {}, not a whole number", short_json(x)),
                    });
                }
                None if REQUIRED.contains(&key) => {
                    return Err(ModelError::MissingMetadata(key.into()));
                }
                _ => {}
            }
        }
        for key in ["rope_theta", "rms_norm_eps"] {
            if let Some(x) = v.get(key).filter(|x| !x.is_null() && !x.is_number()) {
                return Err(ModelError::BadMetadata {
                    key: key.into(),
                    detail: format!("is {}, not a number", short_json(x)),
                });
            }
        }
        let h: Hf = serde_json::from_value(v).map_err(|e| ModelError::BadConfig(e.to_string()))?;
        let name = h
            .model_type
            .or_else(|| h.architectures.and_then(|a| a.into_iter().next()))
            .unwrap_or_else(|| "unknown".into());
        let ctx = h.max_position_embeddings.unwrap_or(4096);
        let rope_scaling = match (&h.rope_scaling, &h.rope_parameters) {
            (Some(v), _) if !v.is_null() => RopeScaling::from_hf("rope_scaling", v, ctx)?,
            (_, Some(v)) => RopeScaling::from_hf("rope_parameters", v, ctx)?,
            _ => None,
        };
        // v5 moves rope_theta into rope_parameters.
        let theta = h.rope_theta.or_else(|| {
            h.rope_parameters
                .as_ref()
                .and_then(|p| p.get("rope_theta"))
                .and_then(|t| t.as_f64())
        });
        ModelConfig {
            arch: Arch::parse(&name)?,
            vocab: h.vocab_size,
            hidden: h.hidden_size,
            intermediate: h.intermediate_size,
            layers: h.num_hidden_layers,
            heads: h.num_attention_heads,
            kv_heads: h.num_key_value_heads.unwrap_or(h.num_attention_heads),
            head_dim: h.head_dim.unwrap_or(
                h.hidden_size
                    .checked_div(h.num_attention_heads)
                    .unwrap_or(0),
            ),
            rope_theta: theta.unwrap_or(10_000.0),
            rms_eps: h.rms_norm_eps.unwrap_or(1e-6),
            tied_embeddings: h.tie_word_embeddings.unwrap_or(false),
            ctx,
            rope_style: RopeStyle::Halves,
            rope_scaling,
        }
        .validated(|field| {
            match field {
                "vocab" => "vocab_size",
                "hidden" => "hidden_size",
                "intermediate" => "intermediate_size",
                "layers" => "num_hidden_layers",
                "heads" => "num_attention_heads",
                "kv_heads" => "num_key_value_heads",
                "head_dim" => "head_dim",
                "ctx" => "max_position_embeddings",
                "rope_theta" => "rope_theta",
                _ => "rms_norm_eps",
            }
            .into()
        })
    }

    /// Refuses shapes no real model has, before anything is sized from them: zero or absurd
    /// sizes, heads that do not group, an odd head size, a NaN or negative RoPE base or
    /// epsilon. `key` gives a field's name as the file spells it, for the message.
    fn validated(self, key: impl Fn(&str) -> String) -> Result<Self, ModelError> {
        let bad = |field: &str, value: String, allowed: String| {
            Err(ModelError::BadMetadata {
                key: key(field),
                detail: format!("is {value} (allowed: {allowed})"),
            })
        };
        let sizes = [
            ("vocab", self.vocab, 1 << 21),
            ("hidden", self.hidden, 1 << 16),
            ("intermediate", self.intermediate, 1 << 18),
            ("layers", self.layers, 1024),
            ("heads", self.heads, 1024),
            ("kv_heads", self.kv_heads, 1024),
            ("head_dim", self.head_dim, 1024),
            ("ctx", self.ctx, 1 << 20),
        ];
        for (field, v, max) in sizes {
            if v == 0 || v > max {
                return bad(field, v.to_string(), format!("1 to {max}"));
            }
        }
        if !self.heads.is_multiple_of(self.kv_heads) {
            let allowed = format!("a divisor of the {} attention heads", self.heads);
            return bad("kv_heads", self.kv_heads.to_string(), allowed);
        }
        if !self.head_dim.is_multiple_of(2) {
            let allowed = "an even number (RoPE rotates pairs)".into();
            return bad("head_dim", self.head_dim.to_string(), allowed);
        }
        if !(self.rope_theta.is_finite() && self.rope_theta > 0.0) {
            return bad(
                "rope_theta",
                format!("{:e}", self.rope_theta),
                "a positive number".into(),
            );
        }
        if !(self.rms_eps > 0.0 && self.rms_eps < 1.0) {
            return bad(
                "rms_eps",
                format!("{:e}", self.rms_eps),
                "between 0 and 1".into(),
            );
        }
        Ok(self)
    }

    /// A GGUF's `rope_freqs.weight` (per-pair frequency divisors) on top of its metadata.
    pub fn with_freq_factors(mut self, values: &[f32]) -> Result<Self, ModelError> {
        if let Some(s) = self.rope_scaling {
            return Err(ModelError::BadRopeScaling {
                key: "rope_freqs.weight".into(),
                detail: format!(
                    "comes with {s} scaling in the metadata; swaa-chat runs one or the other"
                ),
            });
        }
        self.rope_scaling = Some(RopeScaling::from_freq_factors(values, self.head_dim)?);
        Ok(self)
    }

    /// The longest context the model is trained for, as far as its scaling says: `ctx`, or the
    /// scaling's original context times its factor where that is more.
    pub fn trained_ctx(&self) -> usize {
        let stretched = self
            .rope_scaling
            .and_then(|s| Some(s.original_ctx()? as f64 * s.factor()?))
            .map_or(0, |n| n as usize);
        self.ctx.max(stretched)
    }

    /// The RoPE scaling to run at `ctx` tokens: the model's own if it has one; else `long` (a
    /// preset's documented long-context setup) where `ctx` passes the trained context; else
    /// none.
    pub fn scaling_for_context(
        &self,
        ctx: usize,
        long: Option<RopeScaling>,
    ) -> Option<RopeScaling> {
        self.rope_scaling.or(long.filter(|_| ctx > self.ctx))
    }

    /// One line for the user when a `ctx`-token context passes what the model (with its
    /// scaling) was trained for: positions beyond are out of distribution. None within it.
    pub fn context_note(&self, ctx: usize) -> Option<String> {
        let trained = self.trained_ctx();
        if ctx <= trained {
            return None;
        }
        Some(match self.rope_scaling {
            None => format!(
                "note: a context of {ctx} tokens is past the {trained} this model was trained for, and it has no RoPE scaling: positions beyond {trained} are out of distribution, so answers there may degrade"
            ),
            Some(s) => format!(
                "note: a context of {ctx} tokens is past the {trained} this model reaches with its RoPE scaling ({s}): positions beyond {trained} are out of distribution, so answers there may degrade"
            ),
        })
    }

    /// Bytes of K and V for one token in one layer, at the given element size.
    pub fn kv_bytes_per_token_layer(&self, elem: usize) -> usize {
        2 * self.kv_heads * self.head_dim * elem
    }

    /// Matmul FLOPs per token outside attention (2 per multiply-add), for TFLOP/s reports.
    pub fn dense_flops_per_token(&self) -> f64 {
        let q = self.heads * self.head_dim;
        let kv = self.kv_heads * self.head_dim;
        let per_layer =
            self.hidden * (q + 2 * kv) + q * self.hidden + 3 * self.hidden * self.intermediate;
        2.0 * (self.layers * per_layer + self.hidden * self.vocab) as f64
    }

    /// Parameter count implied by the shape (Qwen2 adds q/k/v biases, Qwen3 per-head q/k norms).
    pub fn param_count(&self) -> u64 {
        let (h, hd) = (self.hidden as u64, self.head_dim as u64);
        let (q, kv) = (self.heads as u64 * hd, self.kv_heads as u64 * hd);
        let mut attn = h * q + 2 * h * kv + q * h;
        match self.arch {
            Arch::Qwen2 => attn += q + 2 * kv,
            Arch::Qwen3 => attn += 2 * hd,
            Arch::Llama => {}
        }
        let per_layer = attn + 3 * h * self.intermediate as u64 + 2 * h;
        let embed = self.vocab as u64 * h;
        let head = if self.tied_embeddings { 0 } else { embed };
        embed + head + self.layers as u64 * per_layer + h
    }

    /// Short human form, e.g. `30L 9H/3KV d576`.
    pub fn summary(&self) -> String {
        format!(
            "{}L {}H/{}KV d{}",
            self.layers, self.heads, self.kv_heads, self.hidden
        )
    }
}

/// serde_json's message, with the key whose value it failed on (`NaN` is not JSON, and serde
/// names only a column): the last `"key":` before the error's position.
fn json_error_at_key(json: &str, e: &serde_json::Error) -> String {
    let line = json.lines().nth(e.line().saturating_sub(1)).unwrap_or("");
    let before = &line[..line
        .char_indices()
        .nth(e.column().saturating_sub(1))
        .map_or(line.len(), |(i, _)| i)];
    let key = before.rfind("\":").and_then(|end| {
        let start = before[..end].rfind('"')?;
        Some(&before[start + 1..end])
    });
    match key {
        Some(k) if !k.is_empty() && k.len() <= 64 => {
            format!("{e}, in the value of \"{k}\": write a JSON number, string or null")
        }
        _ => e.to_string(),
    }
}
