//! `swaa-chat calibrate`: the per-layer scores behind `--full-layers auto`.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use clap::Args;

use crate::config::{Config, ModelArgs};
use crate::engine::calibrate::{Calibration, PROSE};
use crate::open::{self, Loaded};
use crate::recipe::{RecipeDefaults, Share};

#[derive(Args, Debug)]
pub struct CalibrateArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Sliding window W (default: the model's).
    #[arg(long)]
    window: Option<usize>,
    /// Sink tokens K (default: the model's).
    #[arg(long)]
    sink: Option<usize>,
    /// Prose to read, any document (default: the bundled sample).
    #[arg(long)]
    text: Option<PathBuf>,
    /// Print the scores as JSON.
    #[arg(long)]
    json: bool,
}

pub(super) fn run(a: CalibrateArgs, cfg: Config) -> Result<()> {
    let cfg = a.model.apply(cfg);
    let device = crate::model::parse_device(&cfg.device)?;
    let Loaded {
        model,
        tokenizer,
        name,
        pinned_sha256,
        weight_files,
        ..
    } = open::load(&cfg.model, &device, cfg.weights, &open::fetch_options())?;
    let d = RecipeDefaults::for_context(model.config().ctx);
    let (window, sink) = (a.window.unwrap_or(d.window), a.sink.unwrap_or(d.sink));
    if window == 0 {
        anyhow::bail!("window must be at least 1 token: leave it out for the model's default");
    }
    let prose = match &a.text {
        Some(p) => crate::document::load(p)?.text,
        None => PROSE.to_string(),
    };
    let t0 = Instant::now();
    let id = open::weights_identity(pinned_sha256, &weight_files);
    let c = Calibration::cached(&model, &tokenizer, id.as_deref(), &prose, window, sink)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&c)?);
        return Ok(());
    }
    let list = |s: Share| {
        c.pick(s)
            .iter()
            .map(|l| l.to_string())
            .collect::<Vec<_>>()
            .join(",")
    };
    println!(
        "{name}: attention mass outside sink + window (W={window}, K={sink}) in a full-attention read of {} tokens ({:.1} s, cached)\n",
        c.tokens,
        t0.elapsed().as_secs_f64()
    );
    print!("{}", c.table());
    println!(
        "\n--full-layers auto keeps {}; auto:1/4 keeps {}",
        list(Share::OneIn(2)),
        list(Share::OneIn(4))
    );
    Ok(())
}
