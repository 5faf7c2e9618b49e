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

/// Verified-marker: the file had `sha256` when it had this size, mtime and inode (a file
/// replaced by another of the same size and mtime has another inode).
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
struct Marker {
    sha256: String,
    size: u64,
    mtime_secs: u64,
    mtime_nanos: u32,
    /// 0 where the platform has none; markers written before it was kept read as 0, so
    /// those files are checked once more.
    #[serde(default)]
    inode: u64,
}

impl Marker {
    fn for_file(path: &Path, sha256: &str) -> Option<Self> {
        let meta = fs::metadata(path).ok()?;
        // No mtime on this platform: no marker, so the file is re-hashed each time (safe).
        let mtime = meta.modified().ok()?.duration_since(UNIX_EPOCH).ok()?;
        #[cfg(unix)]
        let inode = std::os::unix::fs::MetadataExt::ino(&meta);
        #[cfg(not(unix))]
        let inode = 0;
        Some(Self {
            sha256: sha256.to_ascii_lowercase(),
            size: meta.len(),
            mtime_secs: mtime.as_secs(),
            mtime_nanos: mtime.subsec_nanos(),
            inode,
        })
    }

    /// What differs between the file as it was checked and as it is now.
    fn changes(&self, now: &Marker) -> Vec<&'static str> {
        let mut what = Vec::new();
        if self.size != now.size {
            what.push("size");
        }
        if (self.mtime_secs, self.mtime_nanos) != (now.mtime_secs, now.mtime_nanos) {
            what.push("modification time");
        }
        if self.inode != now.inode {
            what.push("inode");
        }
        what
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

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum CacheState {
    /// File present and its marker matches the pin, size, mtime and inode.
    Verified,
    /// File present, checked once, but its size, mtime or inode moved since (the list says
    /// which): it must be hashed again before use.
    Changed(Vec<&'static str>),
    /// File present but never vouched for by a marker (copied in by hand, or the pin moved).
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
        (Some(stored), Some(now)) if stored.sha256 == now.sha256 => {
            let what = stored.changes(&now);
            if what.is_empty() {
                CacheState::Verified
            } else {
                CacheState::Changed(what)
            }
        }
        _ => CacheState::Unverified,
    }
}

/// Removes what killed fetches left in `cache`: scratch folders of wheels in `tmp/`
/// (`{preset}-{pid}-{nanos}`) whose process is gone (Linux: no `/proc/PID`; elsewhere: a
/// day old), and `models/*.partial` files nothing has written to for ten minutes (a live
/// fetch writes to its own continuously). Runs at the start of every fetch, so also when
/// a cached model is opened.
pub(super) fn remove_stale_downloads(cache: &Path) {
    if let Ok(entries) = fs::read_dir(cache.join("tmp")) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let pid = name.rsplit('-').nth(1).and_then(|p| p.parse::<u32>().ok());
            let gone = match pid {
                Some(pid) if Path::new("/proc/self").exists() => {
                    !Path::new("/proc").join(pid.to_string()).exists()
                }
                _ => older_than(&e.path(), 86_400),
            };
            if gone && fs::remove_dir_all(e.path()).is_ok() {
                tracing::info!("removed a stale partial download: {}", e.path().display());
            }
        }
        // Empty now unless a fetch is running (then remove_dir fails, as it should).
        let _ = fs::remove_dir(cache.join("tmp"));
    }
    if let Ok(entries) = fs::read_dir(cache.join("models")) {
        for e in entries.flatten() {
            let path = e.path();
            if path.extension().is_some_and(|x| x == "partial")
                && older_than(&path, 600)
                && fs::remove_file(&path).is_ok()
            {
                tracing::info!("removed a stale partial download: {}", path.display());
            }
        }
    }
}

fn older_than(path: &Path, secs: u64) -> bool {
    fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|age| age.as_secs() > secs)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_partial_downloads_are_removed_and_live_ones_kept() {
        let cache = std::env::temp_dir().join(format!("swaa-stale-{}", std::process::id()));
        let tmp = cache.join("tmp");
        let dead = tmp.join("smollm2-135m-4000000000-1");
        let live = tmp.join(format!("smollm2-135m-{}-2", std::process::id()));
        for d in [&dead, &live] {
            fs::create_dir_all(d).unwrap();
            fs::write(d.join("part.whl"), b"x").unwrap();
        }
        let models = cache.join("models");
        fs::create_dir_all(&models).unwrap();
        let (old, new) = (models.join("a.gguf.partial"), models.join("b.gguf.partial"));
        for f in [&old, &new] {
            fs::write(f, b"x").unwrap();
        }
        let hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
        File::options()
            .write(true)
            .open(&old)
            .and_then(|f| f.set_modified(hour_ago))
            .unwrap();
        remove_stale_downloads(&cache);
        assert!(!dead.exists(), "a dead process's download stays");
        assert!(live.exists(), "a running fetch's download was removed");
        assert!(!old.exists(), "an abandoned .partial stays");
        assert!(new.exists(), "a .partial being written was removed");
        fs::remove_dir_all(&cache).unwrap();
    }
}
