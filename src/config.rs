//! `config.toml` and its defaults; command-line flags override it. Every key is documented
//! in `config.toml.example` at the top of the repository.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::book::Focus;
use crate::engine::ContextPolicy;
use crate::model::WeightsMode;
use crate::recipe::RecipeOverrides;
use crate::sampling::SamplingParams;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// A preset name, a `.gguf` file or a model folder.
    pub model: String,
    /// `cpu`, `cuda` or `cuda:N`.
    pub device: String,
    pub weights: WeightsMode,
    /// CPU threads for matmuls and attention (0: one per core); `--threads` overrides it.
    pub threads: usize,
    /// A LoRA adapter merged at load: a file, or a name in the cache's `adapters/`.
    pub adapter: Option<String>,
    /// Adapters per preset name, for when `adapter` is unset.
    pub adapters: std::collections::BTreeMap<String, String>,
    /// The recipe to start with: a preset, then optional overrides.
    pub recipe: RecipeOverrides,
    /// Prefill chunk, tokens per step; 0 picks one for the device ([`prefill_chunk`]).
    pub chunk: usize,
    /// Override of the model's context length (0: the model's own).
    pub ctx: usize,
    pub context_policy: ContextPolicy,
    /// How a question chooses what it reads of a document longer than the effective context.
    pub focus: Focus,
    /// The most context the model answers well from, in tokens (0: the preset's; a model
    /// file's whole context): a longer document is answered in book mode.
    pub effective_ctx: usize,
    pub sampling: SamplingParams,
    pub read_cache: ReadCacheConfig,
    pub tui: TuiConfig,
}

/// Finished reads kept on disk (`<cache dir>/reads`) and restored when the same book is
/// opened again with the same model and recipe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReadCacheConfig {
    pub enabled: bool,
    /// All stored reads together; the least recently used go first beyond it.
    pub budget_mib: u64,
}

impl Default for ReadCacheConfig {
    fn default() -> Self {
        ReadCacheConfig {
            enabled: true,
            budget_mib: 4096,
        }
    }
}

/// The terminal reader. Colours are names (cyan, darkgray…), indexes 0-255 or `#rrggbb`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TuiConfig {
    /// Capture the mouse for wheel scrolling (off, the default: the terminal's own text
    /// selection works; `:mouse` toggles it in the reader).
    pub mouse: bool,
    pub accent_color: String,
    /// Background of the text inside the attention window.
    pub window_color: String,
    /// Background of the sink tokens.
    pub sink_color: String,
    /// Text not read yet, hints and thinking blocks.
    pub unread_color: String,
}

impl Default for TuiConfig {
    fn default() -> Self {
        TuiConfig {
            mouse: false,
            accent_color: "cyan".into(),
            window_color: "blue".into(),
            sink_color: "magenta".into(),
            unread_color: "darkgray".into(),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            model: crate::hub::DEFAULT_PRESET.into(),
            device: "cpu".into(),
            weights: WeightsMode::Auto,
            threads: 0,
            adapter: None,
            adapters: Default::default(),
            recipe: RecipeOverrides::default(),
            chunk: 0,
            ctx: 0,
            context_policy: ContextPolicy::Error,
            focus: Focus::default(),
            effective_ctx: 0,
            sampling: SamplingParams::default(),
            read_cache: ReadCacheConfig::default(),
            tui: TuiConfig::default(),
        }
    }
}

/// Which model to run and where (each flag overrides config.toml).
#[derive(clap::Args, Debug, Clone, Default, PartialEq)]
pub struct ModelArgs {
    /// Preset name, .gguf file or model folder.
    #[arg(long, short)]
    pub model: Option<String>,
    /// cpu, cuda or cuda:N.
    #[arg(long)]
    pub device: Option<String>,
    #[arg(long, value_enum)]
    pub weights: Option<WeightsMode>,
    /// LoRA adapter (from `finetune`) merged into the weights: a file, or a name in the
    /// cache's adapters/ folder.
    #[arg(long, value_name = "FILE")]
    pub adapter: Option<String>,
    /// Prefill chunk size in tokens.
    #[arg(long)]
    pub chunk: Option<usize>,
}

impl ModelArgs {
    /// `c` with these flags applied.
    pub fn apply(&self, mut c: Config) -> Config {
        if let Some(m) = &self.model {
            c.model = m.clone();
        }
        if let Some(d) = &self.device {
            c.device = d.clone();
        }
        c.weights = self.weights.unwrap_or(c.weights);
        if let Some(a) = &self.adapter {
            c.adapter = Some(a.clone());
        }
        c.chunk = self.chunk.unwrap_or(c.chunk);
        c
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "cannot read {path} ({source}): make it a UTF-8 text file, or set SWAA_CHAT_CONFIG to another"
    )]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{path}:{line}:{column}: {message}: fix that line (config.toml.example documents every key)"
    )]
    Parse {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error(
        "cannot find a home directory for config and data; set SWAA_CHAT_CONFIG to a config.toml path"
    )]
    NoHome,
    /// A flag or config value outside what the model or command allows; the message names
    /// the flag and the key and gives the allowed range.
    #[error("{0}")]
    Setting(String),
}

fn dirs() -> Option<directories::ProjectDirs> {
    directories::ProjectDirs::from("", "", "swaa-chat")
}

/// `config.toml` in the platform's config dir, or `$SWAA_CHAT_CONFIG`.
pub fn config_path() -> Result<PathBuf, ConfigError> {
    if let Some(p) = std::env::var_os("SWAA_CHAT_CONFIG") {
        return Ok(PathBuf::from(p));
    }
    Ok(dirs()
        .ok_or(ConfigError::NoHome)?
        .config_dir()
        .join("config.toml"))
}

/// Logs, saved conversations and eval results live here (`$SWAA_CHAT_DATA` overrides).
pub fn data_dir() -> Result<PathBuf, ConfigError> {
    if let Some(p) = std::env::var_os("SWAA_CHAT_DATA") {
        return Ok(PathBuf::from(p));
    }
    Ok(dirs().ok_or(ConfigError::NoHome)?.data_dir().to_path_buf())
}

impl Config {
    /// The adapter to merge for model `name` (a preset's name, or the short name of a file):
    /// `adapter`, else the `[adapters]` entry for it.
    pub fn adapter_for(&self, name: &str) -> Option<&str> {
        self.adapter
            .as_deref()
            .or_else(|| self.adapters.get(name).map(String::as_str))
    }

    /// The file's settings over the defaults; a missing file is the defaults.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Config::default()),
            Err(source) => {
                return Err(ConfigError::Io {
                    path: path.into(),
                    source,
                });
            }
        };
        Self::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| {
            let (line, column) = e.span().map(|s| line_col(text, s.start)).unwrap_or((0, 0));
            let message = plain_types(e.message());
            ConfigError::Parse {
                path: path.into(),
                line,
                column,
                message: match key_at(text, line) {
                    Some(key) if !message.contains(&key) => format!("{key}: {message}"),
                    _ => message,
                },
            }
        })
    }
}

/// The key set on `line` (1-based) with its table, `[recipe] sink`, when the line is `k = v`.
fn key_at(text: &str, line: usize) -> Option<String> {
    let lines: Vec<&str> = text.lines().collect();
    let (key, _) = lines.get(line.checked_sub(1)?)?.split_once('=')?;
    let key = key.trim();
    if key.is_empty() || key.len() > 64 {
        return None;
    }
    let table = lines[..line - 1]
        .iter()
        .rev()
        .map(|l| l.trim())
        .find(|l| l.starts_with('[') && l.ends_with(']'));
    Some(match table {
        Some(t) => format!("{t} {key}"),
        None => key.to_string(),
    })
}

/// serde's Rust type names in words a config file's reader knows.
fn plain_types(message: &str) -> String {
    let mut m = message.replace(" as i128", "");
    for (rust, plain) in [
        ("expected usize", "expected a whole number, 0 or more"),
        ("expected u64", "expected a whole number, 0 or more"),
        (
            "expected u32",
            "expected a whole number from 0 to 4294967295",
        ),
        ("expected f64", "expected a number"),
        ("expected f32", "expected a number"),
    ] {
        m = m.replace(rust, plain);
    }
    m
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, column)
}

/// The prefill chunk for `device`: `chunk` if set, else 4,096 tokens on a GPU (larger GEMMs:
/// +13% SWA and +22% full-attention prefill over 2,048 on an H200 at 32k) and 512 on the
/// CPU (where a chunk is seconds of work, so cancel and progress stay prompt).
pub fn prefill_chunk(chunk: usize, device: &candle_core::Device) -> usize {
    match chunk {
        0 if device.is_cuda() => 4096,
        0 => 512,
        n => n,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_file_parses_to_the_defaults() {
        let text = include_str!("../config.toml.example");
        let cfg = Config::parse(text, Path::new("config.toml.example")).unwrap();
        assert_eq!(cfg, Config::default());
    }

    #[test]
    fn bad_key_reports_line_and_column() {
        let err = Config::parse(
            "chunk = 256\n[sampling]\ntemprature = 0.5\n",
            Path::new("c.toml"),
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("c.toml:3:1:"), "{msg}");
        assert!(msg.contains("temprature"), "{msg}");
    }
}
