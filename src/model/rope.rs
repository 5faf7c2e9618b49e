//! RoPE frequencies, with the scalings that stretch a model past its trained context:
//! linear, llama3 (Llama 3.1), YaRN, and the per-pair divisors a GGUF stores in
//! `rope_freqs.weight`. Read from `config.json` (`rope_scaling`, or `rope_parameters` in
//! transformers v5) or GGUF metadata (`{arch}.rope.scaling.*`).
//!
//! The formulas follow Hugging Face transformers, `src/transformers/modeling_rope_utils.py`
//! (`_compute_linear_scaling_rope_parameters`, `_compute_llama3_parameters`,
//! `_compute_yarn_parameters`), and llama.cpp for what a GGUF means (`llama_model::load_hparams`,
//! `llama_context` for YaRN's attention factor, ggml's `rope_yarn`). The scaling is static, as
//! in both: it applies at every position, not only past the original context.

use std::collections::HashMap;
use std::f64::consts::PI;
use std::fmt;

use candle_core::quantized::gguf_file::Value;

use super::ModelError;

/// Most frequency pairs a GGUF `rope_freqs.weight` may hold (head dims up to 256); fixed so that
/// [`RopeScaling`], and with it `ModelConfig`, stays `Copy`.
pub const MAX_PAIRS: usize = 128;

/// How a model scales its RoPE frequencies beyond the context it was pretrained for.
// Inline divisors (not boxed) keep it `Copy`; a config is copied a few times per load.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RopeScaling {
    /// Positions divided by `factor` (HF and GGUF `linear`).
    Linear { factor: f64 },
    /// Llama 3.1: low frequencies divided by `factor`, high ones kept, a smooth blend between
    /// (HF `rope_type = "llama3"`).
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_ctx: usize,
    },
    /// YaRN (Peng et al. 2023, "NTK-by-parts" plus an attention temperature).
    Yarn(Yarn),
    /// Per-pair divisors of the frequencies, as a GGUF's `rope_freqs.weight` stores them
    /// (llama.cpp's converter precomputes Llama 3.1's scaling this way).
    Factors(FreqFactors),
}

/// YaRN's parameters, with HF's defaults where `config.json` leaves them out.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Yarn {
    pub factor: f64,
    /// The context the model was pretrained for.
    pub original_ctx: usize,
    /// Pairs turning more than `beta_fast` times over the original context keep their frequency.
    pub beta_fast: f64,
    /// Pairs turning less than `beta_slow` times are interpolated (divided by `factor`).
    pub beta_slow: f64,
    /// The cos/sin multiplier; None: `0.1·ln(factor) + 1`, as the paper suggests.
    pub attention: Option<f64>,
    /// Round the blend's dimension range outwards to whole dimensions (HF `truncate`, default
    /// on; llama.cpp always does).
    pub truncate: bool,
}

impl Yarn {
    /// `factor` over `original_ctx` with the defaults: Qwen's documented long-context setup is
    /// `Yarn::new(4.0, 32768)`.
    pub const fn new(factor: f64, original_ctx: usize) -> Self {
        Yarn {
            factor,
            original_ctx,
            beta_fast: 32.0,
            beta_slow: 1.0,
            attention: None,
            truncate: true,
        }
    }
}

/// The divisors of a GGUF `rope_freqs.weight`, one per frequency pair.
#[derive(Clone, Copy, PartialEq)]
pub struct FreqFactors {
    len: usize,
    values: [f32; MAX_PAIRS],
}

impl FreqFactors {
    pub fn as_slice(&self) -> &[f32] {
        &self.values[..self.len]
    }
}

impl fmt::Debug for FreqFactors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.as_slice()).finish()
    }
}

/// YaRN's and llama.cpp's `get_mscale`: the attention temperature for a stretch of `scale`.
fn mscale(scale: f64, m: f64) -> f64 {
    if scale <= 1.0 {
        1.0
    } else {
        0.1 * m * scale.ln() + 1.0
    }
}

fn bad(key: &str, detail: impl Into<String>) -> ModelError {
    ModelError::BadRopeScaling {
        key: key.to_string(),
        detail: detail.into(),
    }
}

/// A finite, positive number, or an error naming `key`.
fn positive(key: &str, v: f64) -> Result<f64, ModelError> {
    if v.is_finite() && v > 0.0 {
        Ok(v)
    } else {
        Err(bad(key, format!("is {v}; it must be a positive number")))
    }
}

impl RopeScaling {
    /// `rope_scaling` (or `rope_parameters`) of a Hugging Face `config.json`; None for no
    /// scaling (absent, `default`). `max_positions` is the config's `max_position_embeddings`,
    /// which YaRN falls back to for a missing `original_max_position_embeddings` or `factor`.
    pub fn from_hf(
        key: &str,
        v: &serde_json::Value,
        max_positions: usize,
    ) -> Result<Option<Self>, ModelError> {
        let Some(obj) = v.as_object() else {
            return if v.is_null() {
                Ok(None)
            } else {
                Err(bad(key, "is not an object"))
            };
        };
        let k = |name: &str| format!("{key}.{name}");
        let num = |name: &str| -> Result<Option<f64>, ModelError> {
            match obj.get(name) {
                None | Some(serde_json::Value::Null) => Ok(None),
                Some(x) => match x.as_f64() {
                    Some(f) => positive(&k(name), f).map(Some),
                    None => Err(bad(&k(name), format!("is {x}; it must be a number"))),
                },
            }
        };
        let count = |name: &str| -> Result<Option<usize>, ModelError> {
            match obj.get(name) {
                None | Some(serde_json::Value::Null) => Ok(None),
                Some(x) => match x.as_u64().filter(|&n| n > 0) {
                    Some(n) => Ok(Some(n as usize)),
                    None => Err(bad(
                        &k(name),
                        format!("is {x}; it must be a positive integer"),
                    )),
                },
            }
        };
        let need = |name: &str, x: Option<f64>| x.ok_or_else(|| bad(&k(name), "is missing"));
        // transformers renamed `type` to `rope_type`; configs carry either.
        let kind = obj
            .get("rope_type")
            .or_else(|| obj.get("type"))
            .and_then(|t| t.as_str())
            .unwrap_or("default");
        Ok(Some(match kind {
            "default" | "none" => return Ok(None),
            "linear" => RopeScaling::Linear {
                factor: need("factor", num("factor")?)?,
            },
            "llama3" => {
                let (low, high) = (
                    need("low_freq_factor", num("low_freq_factor")?)?,
                    need("high_freq_factor", num("high_freq_factor")?)?,
                );
                if high <= low {
                    return Err(bad(
                        &k("high_freq_factor"),
                        format!("is {high}; it must be above low_freq_factor ({low})"),
                    ));
                }
                RopeScaling::Llama3 {
                    factor: need("factor", num("factor")?)?,
                    low_freq_factor: low,
                    high_freq_factor: high,
                    original_ctx: count("original_max_position_embeddings")?
                        .ok_or_else(|| bad(&k("original_max_position_embeddings"), "is missing"))?,
                }
            }
            "yarn" => {
                let original_ctx =
                    count("original_max_position_embeddings")?.unwrap_or(max_positions);
                // An explicit factor wins, as in transformers v5 and vLLM (some 4.x releases
                // replaced it by max_position_embeddings / original, which is 1 for Qwen's
                // documented setup); a missing one is that ratio.
                let factor = match num("factor")? {
                    Some(f) => f,
                    None => positive(&k("factor"), max_positions as f64 / original_ctx as f64)?,
                };
                let attention = match (
                    num("attention_factor")?,
                    num("mscale")?,
                    num("mscale_all_dim")?,
                ) {
                    (Some(a), _, _) => Some(a),
                    // DeepSeek's form: the ratio of two temperatures.
                    (None, Some(m), Some(all)) => Some(mscale(factor, m) / mscale(factor, all)),
                    _ => None,
                };
                let truncate = match obj.get("truncate") {
                    None | Some(serde_json::Value::Null) => true,
                    Some(t) => t.as_bool().ok_or_else(|| {
                        bad(&k("truncate"), format!("is {t}; it must be true or false"))
                    })?,
                };
                RopeScaling::Yarn(Yarn {
                    factor,
                    original_ctx,
                    beta_fast: num("beta_fast")?.unwrap_or(32.0),
                    beta_slow: num("beta_slow")?.unwrap_or(1.0),
                    attention,
                    truncate,
                })
            }
            other => {
                return Err(bad(
                    &k("rope_type"),
                    format!(
                        "is '{other}', which swaa-chat does not implement (it runs linear, llama3 and yarn)"
                    ),
                ));
            }
        }))
    }

    /// `{arch}.rope.scaling.*` of a GGUF (`p` is the arch prefix); None for no scaling.
    /// As llama.cpp reads it: the type defaults to linear, the factor to 1 (none), YaRN's
    /// original context to `{arch}.context_length` (`ctx`), and `attn_factor` multiplies the
    /// temperature.
    pub fn from_gguf(
        md: &HashMap<String, Value>,
        p: &str,
        ctx: usize,
    ) -> Result<Option<Self>, ModelError> {
        let k = |name: &str| format!("{p}.rope.scaling.{name}");
        let num = |key: String| -> Result<Option<f64>, ModelError> {
            match md.get(&key) {
                None => Ok(None),
                Some(v) => match v.to_f32().map(f64::from).or_else(|_| v.to_f64()) {
                    Ok(f) => positive(&key, f).map(Some),
                    Err(_) => Err(bad(&key, "is not a number")),
                },
            }
        };
        let kind = match md.get(&k("type")) {
            None => "linear".to_string(),
            Some(v) => v
                .to_string()
                .map_err(|_| bad(&k("type"), "is not a string"))?
                .clone(),
        };
        if kind == "none" {
            return Ok(None);
        }
        // `rope.scale_linear` is the key's name before `rope.scaling.factor`.
        let factor = match num(k("factor"))? {
            Some(f) => Some(f),
            None => num(format!("{p}.rope.scale_linear"))?,
        };
        match kind.as_str() {
            "linear" => Ok(factor
                .filter(|&f| f != 1.0)
                .map(|factor| RopeScaling::Linear { factor })),
            "yarn" => {
                let factor = factor.ok_or_else(|| bad(&k("factor"), "is missing"))?;
                let original_ctx = match md.get(&k("original_context_length")) {
                    None => ctx,
                    Some(v) => v
                        .to_u32()
                        .map(|n| n as usize)
                        .or_else(|_| v.to_u64().map(|n| n as usize))
                        .ok()
                        .filter(|&n| n > 0)
                        .ok_or_else(|| {
                            bad(&k("original_context_length"), "must be a positive integer")
                        })?,
                };
                // Keys llama.cpp reads for some architectures only, with values it ignores
                // for YaRN or that change the blend: refuse rather than run them wrong.
                for (name, neutral) in [("yarn_ext_factor", 1.0), ("yarn_attn_factor", 1.0)] {
                    if let Some(v) = num(k(name))?.filter(|&v| v != neutral) {
                        return Err(bad(
                            &k(name),
                            format!("is {v}; swaa-chat runs YaRN only with {neutral}"),
                        ));
                    }
                }
                let temperature = match num(k("yarn_log_multiplier"))? {
                    Some(all) => mscale(factor, 1.0) / mscale(factor, all),
                    None => mscale(factor, 1.0),
                };
                let attn = num(k("attn_factor"))?.unwrap_or(1.0);
                Ok(Some(RopeScaling::Yarn(Yarn {
                    factor,
                    original_ctx,
                    beta_fast: num(k("yarn_beta_fast"))?.unwrap_or(32.0),
                    beta_slow: num(k("yarn_beta_slow"))?.unwrap_or(1.0),
                    attention: Some(temperature * attn),
                    truncate: true,
                })))
            }
            other => Err(bad(
                &k("type"),
                format!(
                    "is '{other}', which swaa-chat does not implement (it runs linear and yarn)"
                ),
            )),
        }
    }

    /// The divisors of a GGUF's `rope_freqs.weight`, one per pair of a `head_dim` head.
    pub fn from_freq_factors(values: &[f32], head_dim: usize) -> Result<Self, ModelError> {
        const KEY: &str = "rope_freqs.weight";
        if values.len() != head_dim / 2 || values.len() > MAX_PAIRS {
            return Err(bad(
                KEY,
                format!(
                    "has {} entries; it must have one per frequency pair ({}, at most {MAX_PAIRS})",
                    values.len(),
                    head_dim / 2
                ),
            ));
        }
        let mut out = FreqFactors {
            len: values.len(),
            values: [1.0; MAX_PAIRS],
        };
        for (i, &v) in values.iter().enumerate() {
            out.values[i] = positive(&format!("{KEY}[{i}]"), v as f64)? as f32;
        }
        Ok(RopeScaling::Factors(out))
    }

    /// The context the model was pretrained for, where the scaling names it.
    pub fn original_ctx(&self) -> Option<usize> {
        match self {
            RopeScaling::Llama3 { original_ctx, .. } => Some(*original_ctx),
            RopeScaling::Yarn(y) => Some(y.original_ctx),
            RopeScaling::Linear { .. } | RopeScaling::Factors(_) => None,
        }
    }

    /// How far it stretches the context, where it says.
    pub fn factor(&self) -> Option<f64> {
        match self {
            RopeScaling::Linear { factor } | RopeScaling::Llama3 { factor, .. } => Some(*factor),
            RopeScaling::Yarn(y) => Some(y.factor),
            RopeScaling::Factors(_) => None,
        }
    }
}

impl fmt::Display for RopeScaling {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RopeScaling::Linear { factor } => write!(f, "linear ×{factor}"),
            RopeScaling::Llama3 {
                factor,
                original_ctx,
                ..
            } => write!(f, "llama3 ×{factor} over {original_ctx}"),
            RopeScaling::Yarn(y) => write!(f, "yarn ×{} over {}", y.factor, y.original_ctx),
            RopeScaling::Factors(_) => write!(f, "rope_freqs"),
        }
    }
}

/// Per-pair inverse frequencies of a `head_dim` head (f32, as the cos/sin tables use them),
/// and the multiplier of cos and sin (YaRN's attention temperature; 1 otherwise).
///
/// The unscaled frequencies are candle-transformers' (and HF's) f32 arithmetic exactly, for
/// bit-level parity with their reference forwards; a scaling is applied to those in f64.
pub fn frequencies(head_dim: usize, theta: f64, scaling: Option<&RopeScaling>) -> (Vec<f32>, f32) {
    let base = theta as f32;
    let plain: Vec<f32> = (0..head_dim)
        .step_by(2)
        .map(|i| 1f32 / base.powf(i as f32 / head_dim as f32))
        .collect();
    let Some(s) = scaling else {
        return (plain, 1.0);
    };
    let scale = |f: &dyn Fn(usize, f64) -> f64| -> Vec<f32> {
        plain
            .iter()
            .enumerate()
            .map(|(i, &inv)| f(i, inv as f64) as f32)
            .collect()
    };
    match *s {
        RopeScaling::Linear { factor } => (scale(&|_, inv| inv / factor), 1.0),
        RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_ctx,
        } => {
            // `_compute_llama3_parameters`: wavelengths shorter than original/high keep their
            // frequency, longer than original/low are divided by the factor, a blend between.
            let old = original_ctx as f64;
            let (low_wavelen, high_wavelen) = (old / low_freq_factor, old / high_freq_factor);
            let inv = scale(&|_, inv| {
                let wavelen = 2.0 * PI / inv;
                if wavelen < high_wavelen {
                    inv
                } else if wavelen > low_wavelen {
                    inv / factor
                } else {
                    let smooth =
                        (old / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor);
                    (1.0 - smooth) * inv / factor + smooth * inv
                }
            });
            (inv, 1.0)
        }
        RopeScaling::Yarn(y) => {
            // `_compute_yarn_parameters` (and ggml's `rope_yarn_corr_dims` / `rope_yarn_ramp`):
            // the dimension at which a pair turns `rotations` times over the original context.
            let d = head_dim as f64;
            let corr_dim = |rotations: f64| {
                d * (y.original_ctx as f64 / (rotations * 2.0 * PI)).ln() / (2.0 * theta.ln())
            };
            let (mut low, mut high) = (corr_dim(y.beta_fast), corr_dim(y.beta_slow));
            if y.truncate {
                (low, high) = (low.floor(), high.ceil());
            }
            let (low, mut high) = (low.max(0.0), high.min(d - 1.0));
            if low == high {
                high += 0.001; // as HF: no division by zero
            }
            let inv = scale(&|i, inv| {
                // 0 below `low` (keep the frequency), 1 above `high` (interpolate).
                let ramp = ((i as f64 - low) / (high - low)).clamp(0.0, 1.0);
                (inv / y.factor) * ramp + inv * (1.0 - ramp)
            });
            let attention = y.attention.unwrap_or_else(|| mscale(y.factor, 1.0));
            (inv, attention as f32)
        }
        RopeScaling::Factors(f) => (scale(&|i, inv| inv / f.as_slice()[i] as f64), 1.0),
    }
}

/// cos and sin tables `[positions × head_dim/2]`, row-major, for the given frequencies and
/// multiplier: f32 angles (position × frequency), as candle-transformers and HF compute them.
pub fn cos_sin(
    inv: &[f32],
    attention: f32,
    positions: std::ops::Range<usize>,
) -> (Vec<f32>, Vec<f32>) {
    let n = positions.len() * inv.len();
    let (mut cos, mut sin) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for p in positions {
        for f in inv {
            let a = p as f32 * f;
            cos.push(a.cos() * attention);
            sin.push(a.sin() * attention);
        }
    }
    (cos, sin)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unscaled_frequencies_are_the_plain_geometric_series() {
        let (inv, a) = frequencies(8, 10_000.0, None);
        assert_eq!(a, 1.0);
        assert_eq!(inv.len(), 4);
        for (i, f) in inv.iter().enumerate() {
            let want = 10_000f64.powf(-((2 * i) as f64) / 8.0);
            assert!(
                (*f as f64 - want).abs() <= want * 1e-6,
                "{i}: {f} vs {want}"
            );
        }
    }

    #[test]
    fn multiplier_scales_cos_and_sin() {
        let (c, s) = cos_sin(&[0.5], 2.0, 3..4);
        assert!((c[0] - 2.0 * 1.5f32.cos()).abs() < 1e-6);
        assert!((s[0] - 2.0 * 1.5f32.sin()).abs() < 1e-6);
    }
}
