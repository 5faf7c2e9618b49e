//! `swaa-chat finetune`: trains a LoRA adapter under a recipe (`crate::finetune`).

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use crate::config::{Config, ModelArgs};
use crate::engine::{Session, SessionOptions};
use crate::finetune::{self, FinetuneOptions, PassOptions, Settings, data::RUST_BOOK};
use crate::model::WeightsMode;
use crate::open::{self, Loaded};
use crate::recipe::{Recipe, RecipeDefaults, RecipeOverrides};
use crate::sampling::SamplingParams;
use crate::units::parse_length;

#[derive(Args, Debug)]
#[command(allow_negative_numbers = true)]
pub struct FinetuneArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    recipe: RecipeOverrides,
    /// Training prose: documents (any type swaa-chat reads) or `rust-book` (the Rust book of
    /// the toolchain docs). Part of each is held out for the check.
    #[arg(long, num_args = 1.., default_value = RUST_BOOK)]
    data: Vec<String>,
    /// Folder for samples, checkpoints, adapter.safetensors and card.json.
    #[arg(long)]
    out: PathBuf,
    /// Continue the run in --out (its settings, optimizer state, data order and step).
    #[arg(long)]
    resume: bool,
    #[arg(long, default_value_t = 1e-4)]
    lr: f64,
    /// Warm-up steps before the cosine decay.
    #[arg(long, default_value_t = 10)]
    warmup: usize,
    /// Optimizer steps, one sample each (0: --epochs passes over the samples).
    #[arg(long, default_value_t = 0)]
    steps: usize,
    #[arg(long, default_value_t = 1)]
    epochs: usize,
    #[arg(long, default_value_t = 16)]
    rank: usize,
    #[arg(long, default_value_t = 32.0)]
    alpha: f64,
    /// LoRA dropout on the adapter's input.
    #[arg(long, default_value_t = 0.0)]
    dropout: f64,
    /// Tokens per training document (2k = 2048).
    #[arg(long, default_value = "4k")]
    sample_tokens: String,
    /// Generated documents to distil for training (needle and multi-fact QA alternating).
    #[arg(long, default_value_t = 64)]
    docs: usize,
    /// Generated documents over the held-out prose, for the check.
    #[arg(long, default_value_t = 8)]
    heldout_docs: usize,
    /// Share of each text's paragraphs held out.
    #[arg(long, default_value_t = 0.1)]
    heldout: f64,
    /// Answers tried per question: greedy, then sampled, until the scorer accepts one.
    #[arg(long, default_value_t = 3)]
    distill_tries: usize,
    /// Most tokens per distilled answer.
    #[arg(long, default_value_t = 24)]
    max_tokens: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Largest global gradient norm (0: no clipping).
    #[arg(long, default_value_t = 1.0)]
    clip: f64,
    /// Queries per attention block in training (bounds the score matrix).
    #[arg(long, default_value_t = 512)]
    block: usize,
    /// Checkpoint every N steps (0: only at the end).
    #[arg(long, default_value_t = 50)]
    save_every: usize,
    /// Stop after this many minutes, saving a checkpoint (continue with --resume).
    #[arg(long)]
    minutes: Option<f64>,
}

pub(super) fn run(a: FinetuneArgs, cfg: Config) -> Result<()> {
    if a.model.adapter.is_some() {
        anyhow::bail!("finetune trains a new adapter on the base model: leave out --adapter");
    }
    let mut cfg = a.model.apply(cfg);
    cfg.adapter = None;
    let device = crate::model::parse_device(&cfg.device)?;
    // The backward pass needs dense weights: f32 on the CPU, bf16 on a GPU.
    let weights = match cfg.weights {
        WeightsMode::F32 | WeightsMode::Bf16 => cfg.weights,
        _ if device.is_cpu() => WeightsMode::F32,
        _ => WeightsMode::Bf16,
    };
    let sample_tokens = parse_length(&a.sample_tokens).map_err(anyhow::Error::msg)?;
    let Loaded {
        model,
        tokenizer,
        name,
        pinned_sha256,
        weight_files,
        ..
    } = open::load(&cfg.model, &device, weights, &open::fetch_options())?;
    let ctx = model.config().ctx;
    if sample_tokens + 256 + a.max_tokens > ctx {
        anyhow::bail!(
            "--sample-tokens {sample_tokens} leaves no room for the question and answer in the model's {ctx}-token context: use at most {}",
            ctx.saturating_sub(256 + a.max_tokens)
        );
    }
    let recipe = Recipe::resolve(
        &a.recipe.clone().or(cfg.recipe.clone()),
        RecipeDefaults::for_context(ctx),
    )
    .map_err(anyhow::Error::msg)?;
    recipe
        .check(model.config().layers, ctx)
        .map_err(anyhow::Error::msg)?;
    let identity = open::weights_identity(pinned_sha256, &weight_files);
    let opts = SessionOptions {
        chunk: crate::config::prefill_chunk(cfg.chunk, &device),
        sampling: SamplingParams {
            max_new_tokens: a.max_tokens,
            ..Default::default()
        },
        ..Default::default()
    };
    let mut session = Session::new(model, tokenizer, Recipe::full(), opts);
    if let Some(id) = &identity {
        session.set_model_id(id.clone());
    }
    let recipe = session.resolve_recipe(recipe)?;
    let settings = Settings {
        recipe,
        rank: a.rank,
        alpha: a.alpha,
        lr: a.lr,
        min_lr_ratio: 0.1,
        warmup: a.warmup,
        steps: a.steps,
        epochs: a.epochs,
        clip: a.clip,
        seed: a.seed,
        pass: PassOptions {
            block: a.block,
            banded: true,
            dropout: a.dropout,
        },
        save_every: a.save_every,
    };
    let done = finetune::run(
        &mut session,
        &FinetuneOptions {
            settings,
            data: a.data,
            docs: a.docs,
            heldout_docs: a.heldout_docs,
            heldout_fraction: a.heldout,
            sample_tokens,
            tries: a.distill_tries,
            out: a.out,
            resume: a.resume,
            minutes: a.minutes,
            base_name: name,
            base_identity: identity,
            progress: true,
        },
    )?;
    let c = &done.card;
    let pct = |x: Option<f64>| x.map_or("-".to_string(), |v| format!("{:.0}%", v * 100.0));
    println!(
        "{} steps on {} samples ({} tokens) under {}: final loss {:.3}, held-out loss {}, held-out accuracy {} without the adapter, {} with it ({} questions)",
        c.steps,
        c.samples,
        c.tokens,
        c.recipe.describe(),
        c.final_loss,
        c.heldout_loss.map_or("-".into(), |l| format!("{l:.3}")),
        pct(c.heldout_accuracy_base),
        pct(c.heldout_accuracy),
        c.heldout_questions
    );
    if done.interrupted {
        println!(
            "stopped by --minutes: continue with --resume --out {}",
            done.adapter
                .parent()
                .map_or(String::new(), |p| p.display().to_string())
        );
    }
    println!("adapter: {}", done.adapter.display());
    Ok(())
}
