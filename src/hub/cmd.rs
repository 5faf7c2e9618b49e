//! Bodies of `swaa-chat models list | fetch NAME | path NAME`.

use std::path::PathBuf;

use crate::recipe::RecipeDefaults;

use super::cache::{
    CacheState, cache_state, hash_file, marker_path, model_file, remove_stale_downloads,
    write_marker,
};
use super::progress::Meter;
use super::{
    DEFAULT_PRESET, FetchOptions, FetchStage, HubError, PRESETS, Preset, cache_dir, cached_path,
    fetch, io_err, preset,
};

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
                CacheState::Unverified | CacheState::Changed(_) => "unverified",
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

/// What `models verify` found for one preset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The cached file hashes to the pin (and is trusted again without hashing).
    Ok,
    /// The cached file hashes to `actual`, not the pin: no longer trusted.
    Changed { actual: String },
    /// Not in the cache.
    Missing,
}

impl Verdict {
    /// One line for `p`: the finding and what to do.
    pub fn line(&self, p: &Preset) -> String {
        match self {
            Verdict::Ok => format!("{}: OK (sha256 {})", p.name, p.sha256),
            Verdict::Changed { actual } => format!(
                "{}: changed (sha256 {actual}, pinned {}): run `swaa-chat models fetch {}` to replace it",
                p.name, p.sha256, p.name
            ),
            Verdict::Missing => format!(
                "{}: missing: run `swaa-chat models fetch {}` to download it",
                p.name, p.name
            ),
        }
    }
}

/// Body of `swaa-chat models verify [NAME]`: [`verify`] for `name`, or every preset.
pub fn cmd_verify(
    name: Option<&str>,
    opts: &FetchOptions,
) -> Result<Vec<(&'static Preset, Verdict)>, HubError> {
    let presets: Vec<&'static Preset> = match name {
        Some(n) => vec![preset(n)?],
        None => PRESETS.iter().collect(),
    };
    presets
        .into_iter()
        .map(|p| Ok((p, verify(p, opts)?)))
        .collect()
}

/// Re-hashes the cached file of `p` against its pinned SHA-256, whatever its marker says.
/// A file that matches gets a fresh marker; one that does not loses its marker, so nothing
/// uses it unchecked (the next fetch hashes it again and replaces it).
pub fn verify(p: &Preset, opts: &FetchOptions) -> Result<Verdict, HubError> {
    let cache = opts.cache_root()?;
    remove_stale_downloads(&cache);
    let path = model_file(&cache, p);
    if !path.is_file() {
        return Ok(Verdict::Missing);
    }
    let mut meter = Meter::new(p, FetchStage::Verifying, p.size_bytes, opts);
    let actual = hash_file(&path, &mut |n| meter.inc(n)).map_err(io_err("cannot read", &path))?;
    meter.finish();
    Ok(if actual.eq_ignore_ascii_case(p.sha256) {
        write_marker(&path, p.sha256);
        Verdict::Ok
    } else {
        let _ = std::fs::remove_file(marker_path(&path));
        Verdict::Changed { actual }
    })
}
