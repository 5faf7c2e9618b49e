//! SWAT: sliding-window attention training (Fu et al. 2025, github Fzkuji/swat-attention).
//! A small byte-level decoder trained here with candle autograd: sigmoid (or softmax)
//! attention over a sliding window, RoPE and/or ALiBi with uni- or bidirectional (balanced)
//! slopes, and inference with a rolling KV cache whose size does not grow with the text.
//!
//! `model` is the architecture and cache, `data` the tokenizer and corpus, `train` the loop
//! and checkpoints, `ppl` perplexity against length, `heads` per-head attention statistics,
//! `report` the comparison's report, `cmd` the `swaa-chat swat …` commands.

pub mod chat;
pub mod cmd;
pub mod data;
pub mod heads;
pub mod model;
pub mod ppl;
pub mod report;
pub mod train;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use cmd::SwatCmd;
pub use data::{ByteTokenizer, Corpus};
pub use model::{RollingCache, SwatModel};

/// Marks a SWAT checkpoint's config.json (Hugging Face configs have no such value).
pub const ARCHITECTURE: &str = "swat";

#[derive(Debug, thiserror::Error)]
pub enum SwatError {
    #[error("{0}")]
    Invalid(String),
    #[error(
        "{path} is not a SWAT checkpoint ({detail}); pass a folder written by `swaa-chat swat train`"
    )]
    NotCheckpoint { path: PathBuf, detail: String },
    #[error(
        "{0} already holds a SWAT checkpoint: pass --resume to continue it, or choose another --out"
    )]
    CheckpointExists(PathBuf),
    #[error(transparent)]
    Document(#[from] crate::document::DocumentError),
    #[error(transparent)]
    Model(#[from] crate::model::ModelError),
    #[error("cannot write {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

pub type Result<T> = std::result::Result<T, SwatError>;

fn invalid(msg: impl Into<String>) -> SwatError {
    SwatError::Invalid(msg.into())
}

/// How attention weights are made from scores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    Softmax,
    Sigmoid,
}

/// Position information: rotary on q and k, a linear distance bias, or both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Positions {
    Rope,
    Alibi,
    Alirope,
}

/// ALiBi slope layouts (see [`SwatConfig::slopes`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Slopes {
    /// ALiBi's geometric magnitudes, every head penalising distance.
    Unidirectional,
    /// ALiBi's magnitudes with signs alternating by head.
    Balanced,
    /// The SWAT paper's Eq. 4: `−2^(−k)` on N heads, `+2^(−k)` on P heads (`--slope-split N:P`).
    Paper,
    /// Eq. 4 with each positive head shifted so that its bias peaks at 0 at the window's far
    /// end: sigmoid is not shift-invariant, and unshifted positive slopes saturate it.
    PaperAnchored,
}

/// A SWAT model's shape and attention rule, stored as its checkpoint's config.json.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SwatConfig {
    pub architecture: String,
    pub vocab: usize,
    pub hidden: usize,
    pub layers: usize,
    pub heads: usize,
    pub intermediate: usize,
    /// Sliding window W (keys `i-W < j <= i`); None is full causal attention.
    pub window: Option<usize>,
    pub activation: Activation,
    pub positions: Positions,
    pub slopes: Slopes,
    /// Heads with negative : positive slopes under the paper layouts; None splits evenly.
    pub slope_split: Option<[usize; 2]>,
    /// Fixed sigmoid bias β; None means −ln W (see [`SwatConfig::beta`]).
    pub beta: Option<f64>,
    pub rope_theta: f64,
    pub rms_eps: f64,
    /// The sequence length it was trained on (the β default for full attention).
    pub seq_len: usize,
}

impl SwatConfig {
    /// `tiny` trains in about a minute on a laptop CPU (CI); `small` (~5M parameters) is for
    /// the comparison runs on a GPU.
    pub fn preset(name: &str) -> Result<Self> {
        let (hidden, layers, heads, intermediate) = match name {
            "tiny" => (64, 2, 4, 192),
            "small" => (256, 6, 8, 768),
            _ => {
                return Err(invalid(format!(
                    "unknown SWAT preset '{name}': use tiny or small"
                )));
            }
        };
        Ok(SwatConfig {
            architecture: ARCHITECTURE.into(),
            vocab: ByteTokenizer::VOCAB,
            hidden,
            layers,
            heads,
            intermediate,
            window: Some(128),
            activation: Activation::Sigmoid,
            positions: Positions::Alirope,
            slopes: Slopes::Balanced,
            slope_split: None,
            beta: None,
            rope_theta: 10_000.0,
            rms_eps: 1e-5,
            seq_len: 1024,
        })
    }

    pub fn head_dim(&self) -> usize {
        self.hidden / self.heads
    }

    pub fn validate(&self) -> Result<()> {
        if self.architecture != ARCHITECTURE {
            return Err(invalid(format!(
                "config.json architecture is '{}', not '{ARCHITECTURE}'",
                self.architecture
            )));
        }
        if self.heads == 0
            || !self.hidden.is_multiple_of(self.heads)
            || !self.head_dim().is_multiple_of(2)
        {
            return Err(invalid(format!(
                "hidden size {} must split into {} heads of even size",
                self.hidden, self.heads
            )));
        }
        if self.window == Some(0) {
            return Err(invalid(
                "--window must be at least 1 (or 0 for full attention)",
            ));
        }
        if self.slopes == Slopes::Balanced && self.uses_alibi() && self.heads < 2 {
            return Err(invalid("balanced slopes need at least 2 heads"));
        }
        if let Some([n, p]) = self.slope_split
            && n + p != self.heads
        {
            return Err(invalid(format!(
                "--slope-split {n}:{p} must add up to the model's {} heads (e.g. {}:{})",
                self.heads,
                self.heads / 2,
                self.heads - self.heads / 2
            )));
        }
        Ok(())
    }

    pub fn uses_rope(&self) -> bool {
        matches!(self.positions, Positions::Rope | Positions::Alirope)
    }

    pub fn uses_alibi(&self) -> bool {
        matches!(self.positions, Positions::Alibi | Positions::Alirope)
    }

    /// β added to every score. Sigmoid weights do not sum to 1: at initialisation scores are
    /// ≈ 0, so each of the W keys would get σ(0) = ½ and a layer's output would grow with W.
    /// β = −ln W gives σ ≈ 1/(W+1) per key, a sum near 1 as with softmax, which keeps early
    /// training stable (Ramapuram et al. 2024, "Theory, Analysis, and Best Practices for
    /// Sigmoid Self-Attention", use the same −ln n). Softmax ignores a constant shift: 0.
    pub fn beta(&self) -> f64 {
        match self.activation {
            Activation::Softmax => 0.0,
            Activation::Sigmoid => self
                .beta
                .unwrap_or_else(|| -(self.window.unwrap_or(self.seq_len).max(1) as f64).ln()),
        }
    }

    /// Heads with negative and with positive slopes under the paper layouts.
    pub fn split(&self) -> [usize; 2] {
        self.slope_split
            .unwrap_or([self.heads / 2, self.heads - self.heads / 2])
    }

    /// Per-head ALiBi slope `b_h` in the score term `b_h·(i−j)`: negative penalises distance,
    /// positive favours older keys. Zero without ALiBi.
    /// - unidirectional: `−2^(−8(h+1)/H)`, ALiBi's geometric sequence (Press et al. 2022);
    /// - balanced: the same magnitudes, signs alternating by head (even negative, odd positive);
    /// - paper, paper-anchored: the SWAT paper's Eq. 4 (Fu et al. 2025, §3.3): the first N heads
    ///   `−2^(−k)` and the other P heads `+2^(−k)`, `k = 1 …` in each block, so that each
    ///   direction gets the same magnitudes from steep to gentle (N:P = 6:6 for 12 heads).
    pub fn slopes(&self) -> Vec<f64> {
        let h = self.heads as f64;
        let [neg, _] = self.split();
        (0..self.heads)
            .map(|i| {
                if !self.uses_alibi() {
                    return 0.0;
                }
                let alibi = 2f64.powf(-8.0 * (i as f64 + 1.0) / h);
                match self.slopes {
                    Slopes::Unidirectional => -alibi,
                    Slopes::Balanced if i % 2 == 1 => alibi,
                    Slopes::Balanced => -alibi,
                    Slopes::Paper | Slopes::PaperAnchored if i < neg => {
                        -(2f64.powi(-(i as i32 + 1)))
                    }
                    Slopes::Paper | Slopes::PaperAnchored => 2f64.powi(-((i - neg) as i32 + 1)),
                }
            })
            .collect()
    }

    /// Per-head constant added to the scores besides β: under `paper-anchored`, `−b_h·(S−1)`
    /// for a positive slope b_h, where S is the window (or the training length without one),
    /// so that the head's bias rises to 0 at the oldest key it sees instead of to `+b_h·(S−1)`
    /// (+63.5 for b = ½, W = 128: σ ≈ 1 for most keys, and no gradient through them). It is
    /// the mirror image of a negative head, whose bias is 0 at the newest key. Softmax ignores
    /// it; zero for every other layout.
    pub fn offsets(&self) -> Vec<f64> {
        let span = self.window.unwrap_or(self.seq_len).max(1) as f64;
        self.slopes()
            .into_iter()
            .map(|b| {
                if self.slopes == Slopes::PaperAnchored && b > 0.0 {
                    -b * (span - 1.0)
                } else {
                    0.0
                }
            })
            .collect()
    }

    /// Parameters, for reports.
    pub fn parameters(&self) -> usize {
        let per_layer = 4 * self.hidden * self.hidden + 3 * self.hidden * self.intermediate;
        self.vocab * self.hidden + self.layers * (per_layer + 2 * self.hidden) + self.hidden
    }

    pub fn summary(&self) -> String {
        let window = self.window.map_or("full".into(), |w| format!("W={w}"));
        format!(
            "{:?}+{:?}{} {window} · {}L d{} {}H · {:.2}M params",
            self.activation,
            self.positions,
            if self.uses_alibi() {
                self.slopes_label()
            } else {
                String::new()
            },
            self.layers,
            self.hidden,
            self.heads,
            self.parameters() as f64 / 1e6
        )
        .to_lowercase()
    }

    /// `(balanced)`, `(paper 4:4)`, …: the slope layout as summaries and reports show it.
    fn slopes_label(&self) -> String {
        let name = match self.slopes {
            Slopes::Unidirectional => "unidirectional",
            Slopes::Balanced => "balanced",
            Slopes::Paper => "paper",
            Slopes::PaperAnchored => "paper-anchored",
        };
        match self.slopes {
            Slopes::Paper | Slopes::PaperAnchored => {
                let [n, p] = self.split();
                format!("({name} {n}:{p})")
            }
            _ => format!("({name})"),
        }
    }

    pub fn load(dir: &Path) -> Result<Self> {
        let path = dir.join("config.json");
        let not_ckpt = |detail: String| SwatError::NotCheckpoint {
            path: dir.into(),
            detail,
        };
        let text = std::fs::read_to_string(&path).map_err(|e| not_ckpt(format!("{e}")))?;
        let cfg: SwatConfig =
            serde_json::from_str(&text).map_err(|e| not_ckpt(format!("config.json: {e}")))?;
        cfg.validate()?;
        Ok(cfg)
    }
}

/// True when `path` is a folder whose config.json says it is a SWAT model.
pub fn is_checkpoint(path: &Path) -> bool {
    #[derive(Deserialize)]
    struct Probe {
        architecture: Option<String>,
    }
    std::fs::read_to_string(path.join("config.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<Probe>(&t).ok())
        .and_then(|p| p.architecture)
        .is_some_and(|a| a == ARCHITECTURE)
}

pub use crate::rng::Rng;
pub use crate::units::parse_length;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn balanced_slopes_alternate_signs_with_alibi_magnitudes() {
        let mut c = SwatConfig::preset("tiny").unwrap();
        c.heads = 4;
        let s = c.slopes();
        assert_eq!(s, vec![-0.25, 2f64.powi(-4), -2f64.powi(-6), 2f64.powi(-8)]);
        c.slopes = Slopes::Unidirectional;
        assert!(c.slopes().iter().all(|&b| b < 0.0));
        c.positions = Positions::Rope;
        assert!(c.slopes().iter().all(|&b| b == 0.0));
    }

    #[test]
    fn sigmoid_beta_defaults_to_minus_log_window() {
        let mut c = SwatConfig::preset("tiny").unwrap();
        c.window = Some(128);
        assert!((c.beta() + 128f64.ln()).abs() < 1e-12);
        c.window = None;
        assert!((c.beta() + (c.seq_len as f64).ln()).abs() < 1e-12);
        c.beta = Some(-2.0);
        assert_eq!(c.beta(), -2.0);
        c.activation = Activation::Softmax;
        assert_eq!(c.beta(), 0.0);
    }

    #[test]
    fn lengths_parse_with_k_suffix() {
        assert_eq!(parse_length("256"), Ok(256));
        assert_eq!(parse_length("16k"), Ok(16384));
        assert!(parse_length("0").is_err());
        assert!(parse_length("x").is_err());
    }

    #[test]
    fn rng_normal_has_unit_variance() {
        let mut r = Rng(3);
        let xs: Vec<f64> = (0..20_000).map(|_| r.normal()).collect();
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / xs.len() as f64;
        assert!(
            mean.abs() < 0.03 && (var - 1.0).abs() < 0.05,
            "{mean} {var}"
        );
    }
}
