//! The composition root: the one place a model and a session are put together. From the
//! merged configuration (`--model`: preset name, `.gguf` file, model folder or SWAT checkpoint)
//! to a loaded model, its tokenizer and a [`Backend`] with the resolved recipe. The reader, the
//! line chat, `ask`, `eval` and `bench` all open models here.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use candle_core::Device;
use sha2::{Digest, Sha256};

use crate::config::{self, Config};
use crate::engine::{Backend, Session, SessionOptions};
use crate::hub::{self, FetchOptions, HubError, Preset};
use crate::model::{self, AdapterCard, Model, ModelError, WeightsMode};
use crate::readcache::{self, ReadCache, Store};
use crate::recipe::{Recipe, RecipeDefaults};
use crate::tokenizer::{ChatTokenizer, TokenizerError};

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Hub(#[from] HubError),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("tokenizer: {0}")]
    Tokenizer(#[from] TokenizerError),
    #[error("{path}: tokenizer: {source}")]
    TokenizerIn {
        path: std::path::PathBuf,
        source: TokenizerError,
    },
}

pub struct Loaded {
    pub model: Model,
    pub tokenizer: ChatTokenizer,
    /// A short name for tables and the stats panel.
    pub name: String,
    pub preset: Option<&'static Preset>,
    /// What the weights are, for the read cache's key: a preset's pinned SHA-256 (its
    /// file was checked against it), else the files to hash.
    pub pinned_sha256: Option<&'static str>,
    pub weight_files: Vec<std::path::PathBuf>,
}

/// Resolves `spec`, fetching a preset if it is not cached yet, and loads it on `device`.
pub fn load(
    spec: &str,
    device: &Device,
    weights: WeightsMode,
    fetch: &FetchOptions,
) -> Result<Loaded, LoadError> {
    let resolved = hub::resolve(spec)?;
    let files = hub::locate(&resolved, fetch)?;
    // Only a fetched preset is known to match its pin; a file that merely has a preset's
    // name is hashed like any other.
    let pinned_sha256 = match resolved {
        hub::ModelSpec::Preset(p) => Some(p.sha256),
        _ => None,
    };
    let name = files
        .preset
        .map(|p| p.name.to_string())
        .unwrap_or_else(|| short_name(spec));
    if let Some(gguf) = &files.gguf {
        tracing::info!("loading {} on {:?} ({weights:?})", gguf.display(), device);
        let (model, md) = model::load_gguf(gguf, device, weights)?;
        // A tokenizer.json beside the GGUF wins over the GGUF's own vocabulary.
        let tokenizer = match files
            .dir
            .as_deref()
            .filter(|d| d.join("tokenizer.json").exists())
        {
            Some(dir) => ChatTokenizer::from_dir(dir)?,
            None => ChatTokenizer::from_gguf(&md).map_err(|source| LoadError::TokenizerIn {
                path: gguf.clone(),
                source,
            })?,
        };
        return Ok(Loaded {
            model,
            tokenizer,
            name,
            preset: files.preset,
            pinned_sha256,
            weight_files: vec![gguf.clone()],
        });
    }
    let dir = files
        .dir
        .ok_or_else(|| HubError::NoModelInDir { dir: spec.into() })?;
    let model = model::load_safetensors_dir(&dir, device, weights)?;
    let tokenizer = ChatTokenizer::from_dir(&dir)?;
    let mut weight_files: Vec<_> = std::fs::read_dir(&dir)
        .map_err(|source| ModelError::Io {
            path: dir.clone(),
            source,
        })?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name().is_some_and(|n| n == "config.json")
                || p.extension().is_some_and(|x| x == "safetensors")
        })
        .collect();
    weight_files.sort();
    Ok(Loaded {
        model,
        tokenizer,
        name,
        preset: files.preset,
        pinned_sha256: None,
        weight_files,
    })
}

fn short_name(spec: &str) -> String {
    Path::new(spec)
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| spec.to_string())
}

/// How fetching reports progress from a command line: bars on a terminal, quiet otherwise.
pub fn fetch_options() -> FetchOptions {
    FetchOptions {
        quiet: !std::io::stderr().is_terminal(),
        ..Default::default()
    }
}

/// A transformer session for `cfg`: the model loaded on its device, the recipe resolved
/// against the model's defaults, the session options from the configuration. Returns the
/// model's short name too.
pub fn open_session(cfg: &Config, fetch: &FetchOptions) -> anyhow::Result<(Session, String)> {
    let device = model::parse_device(&cfg.device)?;
    let Loaded {
        mut model,
        tokenizer,
        name,
        preset,
        pinned_sha256,
        weight_files,
    } = load(&cfg.model, &device, cfg.weights, fetch)?;
    // A context past the trained one turns on the preset's documented RoPE scaling.
    model.use_context(cfg.ctx, preset.and_then(|p| p.long_context));
    let recipe = Recipe::resolve(&cfg.recipe, RecipeDefaults::for_context(model.config().ctx))
        .map_err(config::ConfigError::Setting)?;
    let ctx = if cfg.ctx > 0 {
        cfg.ctx
    } else {
        model.config().ctx
    };
    recipe
        .check(model.config().layers, ctx)
        .map_err(config::ConfigError::Setting)?;
    if cfg.sampling.max_new_tokens > ctx {
        return Err(config::ConfigError::Setting(format!(
            "--max-tokens (max_new_tokens in [sampling]) {} is more than the context ({ctx} tokens): use 1 to {ctx}",
            cfg.sampling.max_new_tokens
        ))
        .into());
    }
    let mut weights = weights_identity(pinned_sha256, &weight_files);
    let mut name = name;
    let mut notes = Vec::new();
    if let Some(spec) = cfg.adapter_for(&name) {
        let a = apply_adapter(&mut model, spec, &name, weights.as_deref())?;
        // What is kept per model (stored reads, calibration) is kept per adapter too.
        weights = weights.map(|w| format!("{w}+lora:{}", a.sha256));
        name = format!("{name}+{}", a.name);
        notes.extend(a.recipe_note(&recipe));
    }
    let recipe = crate::engine::calibrate::resolve(&model, &tokenizer, weights.as_deref(), recipe)?;
    let chunk = config::prefill_chunk(cfg.chunk, &device);
    check_memory(&model, &recipe, ctx, chunk)?;
    let mut sampling = cfg.sampling.clone();
    // Unset, the penalty is the model's: a preset's, else none.
    sampling
        .repeat_penalty
        .get_or_insert(preset.map_or(1.0, |p| p.repeat_penalty));
    let opts = SessionOptions {
        chunk,
        ctx: (cfg.ctx > 0).then_some(cfg.ctx),
        context_policy: cfg.context_policy,
        sampling,
        system_prompt: None,
        read_cache: read_cache(cfg, &device, &name, weights.as_deref()),
        focus: cfg.focus,
        effective_ctx: match cfg.effective_ctx {
            0 if device.is_cpu() => preset.map(|p| p.effective_ctx_cpu),
            0 => preset.map(|p| p.effective_ctx),
            n => Some(n),
        },
    };
    let mut session = Session::new(model, tokenizer, recipe, opts);
    if let Some(id) = weights {
        session.set_model_id(id);
    }
    for n in notes {
        tracing::warn!("{n}");
        session.note(n);
    }
    Ok((session, name))
}

/// An adapter merged into a model.
pub struct Applied {
    /// Its short name: the file's stem, or its folder's when the file is `adapter.safetensors`.
    pub name: String,
    pub sha256: String,
    pub card: AdapterCard,
}

impl Applied {
    /// The one-line warning when the adapter was trained under another recipe than `recipe`.
    pub fn recipe_note(&self, recipe: &Recipe) -> Option<String> {
        let trained = &self.card.recipe;
        (trained.window != recipe.window
            || trained.sink != recipe.sink
            || trained.full_layers != recipe.full_layers)
            .then(|| {
                format!(
                    "adapter {} was trained under {}, the model runs {}: used anyway",
                    self.name,
                    trained.describe(),
                    recipe.describe()
                )
            })
    }
}

/// The adapter file `spec` names: a path, else `<cache>/adapters/SPEC[.safetensors]`.
pub fn adapter_path(spec: &str) -> anyhow::Result<PathBuf> {
    let p = Path::new(spec);
    if p.is_file() {
        return Ok(p.into());
    }
    let dir = hub::cache_dir()?.join("adapters");
    [dir.join(spec), dir.join(format!("{spec}.safetensors"))]
        .into_iter()
        .find(|c| c.is_file())
        .ok_or_else(|| {
            anyhow::anyhow!(
                "no adapter file {spec}, nor one of that name in {}: pass the adapter.safetensors that `swaa-chat finetune` wrote",
                dir.display()
            )
        })
}

/// Merges the adapter `spec` into `model` (called `name`, weights `weights`), refusing one
/// trained on other weights or whose shapes do not fit, each with both names.
pub fn apply_adapter(
    model: &mut Model,
    spec: &str,
    name: &str,
    weights: Option<&str>,
) -> anyhow::Result<Applied> {
    let path = adapter_path(spec)?;
    let (lora, card) = model::lora::load_adapter(&path, model.device())?;
    let short = |s: &str| s.chars().take(12).collect::<String>();
    if let (Some(theirs), Some(ours)) = (card.base_identity.as_deref(), weights)
        && theirs != ours
    {
        anyhow::bail!(
            "adapter {} was trained on {} (weights {}), not on the loaded {name} (weights {}): use an adapter trained on {name}, or --model {}",
            path.display(),
            card.base_name,
            short(theirs),
            short(ours),
            card.base_name
        );
    }
    model.check_lora(&lora).map_err(|detail| {
        anyhow::anyhow!(
            "adapter {} (trained on {}) does not fit the loaded {name}: {detail}; use an adapter trained on {name}",
            path.display(),
            card.base_name
        )
    })?;
    model.merge_lora(&lora)?;
    let bytes = std::fs::read(&path)?;
    let stem = |p: &Path| p.file_stem().map(|s| s.to_string_lossy().into_owned());
    let adapter_name = match stem(&path).as_deref() {
        Some("adapter") => path
            .parent()
            .and_then(|d| d.file_name())
            .map(|s| s.to_string_lossy().into_owned()),
        other => other.map(str::to_string),
    }
    .unwrap_or_else(|| "lora".into());
    tracing::info!("merged adapter {} into {name}", path.display());
    Ok(Applied {
        name: adapter_name,
        sha256: format!("{:x}", Sha256::digest(&bytes)),
        card,
    })
}

/// What the weights are, for what is kept per model (stored reads, calibration scores): a
/// preset's pinned SHA-256 (its file was checked against it), else the files' SHA-256, hashed
/// once and remembered by path, size and mtime. None, logged, when it cannot be told: then
/// nothing is kept for this model.
pub fn weights_identity(
    pinned_sha256: Option<&str>,
    weight_files: &[std::path::PathBuf],
) -> Option<String> {
    if let Some(sha) = pinned_sha256 {
        return Some(sha.to_string());
    }
    let hashed = readcache::default_dir()
        .map_err(|e| e.to_string())
        .and_then(|dir| readcache::files_identity(weight_files, &dir).map_err(|e| e.to_string()));
    hashed
        .map_err(|e| tracing::warn!("nothing kept for this model: cannot hash its files: {e}"))
        .ok()
}

/// Refuses a context whose KV cache under `recipe` cannot fit in the memory left after the
/// weights, naming the largest context that does. A tenth of what is free is left for
/// activations and the allocator.
fn check_memory(model: &Model, recipe: &Recipe, ctx: usize, chunk: usize) -> anyhow::Result<()> {
    let Some(free) = model::free_memory(model.device()) else {
        return Ok(());
    };
    let cfg = model.config();
    let per_token = cfg.kv_bytes_per_token_layer(model.dtype().size_in_bytes()) as u64;
    let need = |n: usize| {
        // Saturating: a context of u64::MAX tokens must be refused, not overflow.
        (0..cfg.layers)
            .map(|l| (recipe.cache_tokens(l, n, chunk) as u64).saturating_mul(per_token))
            .fold(0u64, u64::saturating_add)
    };
    let budget = free - free / 10;
    if need(ctx) <= budget {
        return Ok(());
    }
    // need() grows with n: the largest n that fits, by bisection.
    let (mut lo, mut hi) = (0, ctx);
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        if need(mid) <= budget {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    let largest = lo / 1024 * 1024;
    let device = model::device_name(model.device());
    if largest == 0 {
        anyhow::bail!(
            "the KV cache does not fit: {} are free on the {device}, too little for even 1024 tokens under this recipe",
            crate::units::mib(free as usize)
        );
    }
    anyhow::bail!(
        "a context of {ctx} tokens needs {} of KV cache under this recipe, more than the {} free on the {device}: use --ctx {largest} or less (or a sliding recipe without --fa-decode, whose sliding layers keep only sink + W tokens)",
        crate::units::mib(need(ctx) as usize),
        crate::units::mib(free as usize),
    );
}

/// The read cache for this model, or None when it is off or its folder is unknown (then
/// every open reads, as before; never an error).
fn read_cache(
    cfg: &Config,
    device: &Device,
    name: &str,
    weights: Option<&str>,
) -> Option<ReadCache> {
    if !cfg.read_cache.enabled {
        return None;
    }
    let weights = weights?;
    let dir = match readcache::default_dir() {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!("no read cache: {e}");
            return None;
        }
    };
    // Weights mode and device change the computed cache (requantized blocks, kernels).
    let device = if device.is_cpu() { "cpu" } else { "cuda" };
    Some(ReadCache {
        store: Store {
            dir,
            budget_bytes: cfg.read_cache.budget_mib.saturating_mul(1 << 20),
        },
        model: format!("{weights} weights={:?} device={device}", cfg.weights),
        model_name: name.to_string(),
    })
}

/// A model ready to chat, and what a UI shows about it.
pub struct Opened {
    /// A transformer [`Session`] or a SWAT model's session.
    pub backend: Box<dyn Backend>,
    pub name: String,
    pub device: String,
    pub layers: usize,
    pub ctx: usize,
    pub defaults: RecipeDefaults,
    pub recipe: Recipe,
    /// Why the attention recipe cannot change (a SWAT model's is fixed by training).
    pub fixed_attention: Option<String>,
    /// A one-line warning when the context passes what the model was trained for.
    pub context_note: Option<String>,
}

/// Opens `cfg.model`: a SWAT checkpoint folder, or anything [`load`] takes.
pub fn open(cfg: &Config, fetch: &FetchOptions) -> anyhow::Result<Opened> {
    let dir = Path::new(&cfg.model);
    if crate::swat::is_checkpoint(dir) {
        let device = model::parse_device(&cfg.device)?;
        let m = crate::swat::SwatModel::load(dir, candle_core::DType::F32, &device)?;
        crate::swat::ByteTokenizer::load(dir)?;
        let c = m.config().clone();
        let s = crate::swat::chat::SwatSession::new(m, cfg.sampling.clone());
        return Ok(Opened {
            name: dir
                .file_name()
                .map_or(cfg.model.clone(), |n| n.to_string_lossy().into_owned()),
            device: model::device_name(&device),
            layers: c.layers,
            // The rolling cache has no context limit.
            ctx: usize::MAX,
            defaults: RecipeDefaults::for_context(c.seq_len),
            recipe: s.recipe(),
            fixed_attention: Some(format!(
                "a SWAT model's attention is fixed by its training ({}): recipes do not apply",
                c.summary()
            )),
            context_note: None,
            backend: Box::new(s),
        });
    }
    let (session, name) = open_session(cfg, fetch)?;
    Ok(Opened {
        name,
        device: model::device_name(session.model().device()),
        layers: session.model().config().layers,
        ctx: session.ctx(),
        defaults: session.recipe_defaults(),
        recipe: session.recipe().clone(),
        fixed_attention: None,
        context_note: session.model().config().context_note(session.ctx()),
        backend: Box::new(session),
    })
}
