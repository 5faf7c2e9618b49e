//! `swaa-chat cache list|clear`: the stored reads (see `crate::readcache`).

use std::time::SystemTime;

use anyhow::{Context, Result};
use clap::Subcommand;

use crate::config::Config;
use crate::readcache::{self, Store};
use crate::units::{int, mib, printable};

#[derive(Subcommand, Debug)]
pub enum CacheCmd {
    /// The stored reads, most recently used first: document, model, recipe, tokens, size.
    List,
    /// Remove every stored read.
    Clear,
}

pub(super) fn run(cmd: CacheCmd, cfg: &Config) -> Result<()> {
    let store = Store {
        dir: readcache::default_dir()?,
        budget_bytes: cfg.read_cache.budget_mib.saturating_mul(1 << 20),
    };
    match cmd {
        CacheCmd::List => print!("{}", list_text(&store, cfg.read_cache.enabled)),
        CacheCmd::Clear => {
            let (n, bytes) = store
                .clear()
                .with_context(|| format!("clearing {}", store.dir.display()))?;
            println!(
                "removed {n} stored read files ({}) from {}",
                mib(bytes as usize),
                store.dir.display()
            );
        }
    }
    Ok(())
}

fn list_text(store: &Store, enabled: bool) -> String {
    let entries = store.list();
    let total: u64 = entries.iter().map(|e| e.bytes).sum();
    let mut out = format!(
        "{} stored reads in {}: {} of {} budget{}\n",
        entries.len(),
        store.dir.display(),
        mib(total as usize),
        mib(store.budget_bytes as usize),
        if enabled {
            ""
        } else {
            " (read_cache.enabled is false: nothing is stored or restored)"
        }
    );
    let now = SystemTime::now();
    for e in entries {
        let ago = now
            .duration_since(e.last_used)
            .unwrap_or_default()
            .as_secs();
        let used = match ago {
            0..60 => "just now".to_string(),
            60..3600 => format!("{} min ago", ago / 60),
            3600..86400 => format!("{} h ago", ago / 3600),
            _ => format!("{} days ago", ago / 86400),
        };
        let what = match &e.about {
            Ok(a) => format!(
                "{} · {} · {} · {} tokens",
                printable(&a.title),
                a.model_name,
                a.recipe,
                int(a.tokens)
            ),
            Err(problem) => format!("unreadable: {problem}"),
        };
        let name = e.path.file_name().map(|n| n.to_string_lossy().into_owned());
        out.push_str(&format!(
            "{:>10}  {used:<12}  {what}  [{}]\n",
            mib(e.bytes as usize),
            name.unwrap_or_default()
        ));
    }
    out
}
