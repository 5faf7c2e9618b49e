//! The cache: where a preset's `.gguf` lives, its SHA-256, and the marker that lets later runs
//! trust a verified file without hashing it again. Only verified files are installed there.

use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tracing::warn;

use super::{HubError, Preset, io_err};

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

pub(super) fn model_file(cache: &Path, p: &Preset) -> PathBuf {
    cache.join("models").join(format!("{}.gguf", p.name))
}

pub(super) fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = OsString::from(path.as_os_str());
    s.push(suffix);
    PathBuf::from(s)
}

pub(super) fn marker_path(model: &Path) -> PathBuf {
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

pub(super) fn write_marker(model: &Path, sha256: &str) {
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
pub(super) enum CacheState {
    /// File present and its marker matches the pin, size and mtime.
    Verified,
    /// File present but not (or no longer) vouched for by a marker: must be hashed.
    Unverified,
    Missing,
}

pub(super) fn cache_state(p: &Preset, model: &Path) -> CacheState {
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
/// a valid marker (e.g. copied in by hand) counts as not cached until
/// [`fetch`](super::fetch) verifies it.
pub fn cached_path(p: &Preset) -> Option<PathBuf> {
    let path = model_path(p).ok()?;
    (cache_state(p, &path) == CacheState::Verified).then_some(path)
}

/// Streaming SHA-256 of a file, lower-case hex.
pub fn sha256_file(path: &Path) -> Result<String, HubError> {
    hash_file(path, &mut |_| {}).map_err(io_err("cannot read", path))
}

/// Calls `read` with the size of each piece hashed (up to a megabyte).
pub(super) fn hash_file(path: &Path, read: &mut dyn FnMut(u64)) -> io::Result<String> {
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

pub(super) fn hex(hasher: Sha256) -> String {
    format!("{:x}", hasher.finalize())
}

/// Removes a file on drop unless disarmed: no `.partial` survives an error.
pub(super) struct RemoveOnDrop(pub(super) Option<PathBuf>);

impl RemoveOnDrop {
    pub(super) fn disarm(&mut self) {
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
pub(super) fn install(partial: &Path, dest: &Path, sha256: &str) -> Result<(), HubError> {
    let _ = fs::remove_file(marker_path(dest));
    fs::rename(partial, dest).map_err(io_err("cannot move into place", dest))?;
    write_marker(dest, sha256);
    Ok(())
}
