//! `swaa-chat bench`: prefill and decode throughput per recipe and length.

use anyhow::{Result, bail};
use clap::Args;

use crate::bench::{self, BenchOptions};
use crate::config;
use crate::hub;
use crate::model::{self, WeightsMode};
use crate::open::{self, fetch_options};
use crate::recipe::{Preset, Recipe, RecipeDefaults};

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Preset name, .gguf or folder (real weights); with --random-weights, the preset whose shape to use.
    #[arg(long, short)]
    model: Option<String>,
    /// Random weights in the exact shape of --preset (no download; speed does not depend on values).
    #[arg(long)]
    random_weights: bool,
    #[arg(long)]
    preset: Option<String>,
    #[arg(long, default_value = "cpu")]
    device: String,
    #[arg(long, value_enum, default_value = "auto")]
    weights: WeightsMode,
    /// Context lengths to prefill, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1024,4096")]
    tokens: Vec<usize>,
    /// Recipes, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "full,swa,swaa")]
    recipes: Vec<String>,
    /// Decode steps after each prefill.
    #[arg(long, default_value_t = 32)]
    decode: usize,
    /// Prefill chunk (default: 4096 on CUDA, 512 on CPU).
    #[arg(long)]
    chunk: Option<usize>,
    /// Window and sink for the named recipes (default: the model's).
    #[arg(long)]
    window: Option<usize>,
    #[arg(long)]
    sink: Option<usize>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Attention implementation: the fused kernel where it runs (CUDA, bf16), or candle ops.
    #[arg(long, value_enum, default_value = "fused")]
    attention: AttentionImpl,
    /// Decode with plain forward passes, not a replayed CUDA graph (to compare the two).
    #[arg(long)]
    no_decode_graph: bool,
    #[arg(long)]
    json: bool,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
enum AttentionImpl {
    Fused,
    Ops,
}

pub(super) fn run(b: BenchArgs) -> Result<()> {
    let device = model::parse_device(&b.device)?;
    let mut model = if b.random_weights {
        let name = b
            .preset
            .as_deref()
            .or(b.model.as_deref())
            .unwrap_or(hub::DEFAULT_PRESET);
        let p = hub::preset(name)?;
        let dtype = b.weights.activation_dtype(&device);
        eprintln!(
            "building random weights in the shape of {name} ({}) on {:?}…",
            p.shape.summary(),
            device
        );
        model::random_model(&p.shape, b.seed.wrapping_add(1), &device, dtype)?
    } else {
        let spec = b
            .model
            .as_deref()
            .or(b.preset.as_deref())
            .unwrap_or(hub::DEFAULT_PRESET);
        open::load(spec, &device, b.weights, &fetch_options())?.model
    };
    model.set_fused_attention(b.attention == AttentionImpl::Fused);
    let mut d = RecipeDefaults::for_context(model.config().ctx);
    d.window = b.window.unwrap_or(d.window);
    d.sink = b.sink.unwrap_or(d.sink);
    let recipes = b
        .recipes
        .iter()
        .map(|n| {
            n.parse::<Preset>()
                .map(|p| (n.clone(), Recipe::preset(p, d)))
                .map_err(anyhow::Error::msg)
        })
        .collect::<Result<Vec<_>>>()?;
    if b.tokens.is_empty() || b.tokens.contains(&0) {
        bail!("--tokens needs positive lengths, e.g. --tokens 1024,4096");
    }
    let opts = BenchOptions {
        tokens: b.tokens,
        recipes,
        decode: b.decode,
        chunk: config::prefill_chunk(b.chunk.unwrap_or(0), &device),
        seed: b.seed,
        decode_graph: !b.no_decode_graph,
    };
    let c = *model.config();
    if !b.json {
        println!(
            "{} {} · {} · attention {:?} · weights {} · W={} K={} · chunk {}\n\n{}",
            c.arch,
            c.summary(),
            crate::model::device_name(&device),
            b.attention,
            crate::units::mib(model.weight_bytes()),
            d.window,
            d.sink,
            opts.chunk,
            bench::TABLE_HEADER
        );
    }
    let json = b.json;
    let rows = bench::run(
        &model,
        &opts,
        &mut |m| {
            if !json {
                eprintln!("  {m}");
            }
        },
        &mut |r| {
            if !json {
                println!("{}", bench::table_row(r));
            }
        },
    )?;
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    }
    Ok(())
}
