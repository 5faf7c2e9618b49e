//! Bodies of `swaa-chat models list | fetch NAME | path NAME`.

use std::path::PathBuf;

use crate::recipe::RecipeDefaults;

use super::cache::{CacheState, cache_state, model_file};
use super::{
    DEFAULT_PRESET, FetchOptions, HubError, PRESETS, cache_dir, cached_path, fetch, preset,
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
