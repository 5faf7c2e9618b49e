//! From `--model` (preset name, `.gguf` file or folder) to a loaded model and its tokenizer.

use std::path::Path;

use candle_core::Device;

use crate::hub::{self, FetchOptions, HubError, Preset};
use crate::model::{self, Model, ModelError, WeightsMode};
use crate::tokenizer::{ChatTokenizer, TokenizerError};

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Hub(#[from] HubError),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("tokenizer: {0}")]
    Tokenizer(#[from] TokenizerError),
}

pub struct Loaded {
    pub model: Model,
    pub tokenizer: ChatTokenizer,
    /// A short name for tables and the stats panel.
    pub name: String,
    pub preset: Option<&'static Preset>,
}

/// Resolves `spec`, fetching a preset if it is not cached yet, and loads it on `device`.
pub fn load(
    spec: &str,
    device: &Device,
    weights: WeightsMode,
    fetch: &FetchOptions,
) -> Result<Loaded, LoadError> {
    let files = hub::locate(&hub::resolve(spec)?, fetch)?;
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
            None => ChatTokenizer::from_gguf(&md)?,
        };
        return Ok(Loaded {
            model,
            tokenizer,
            name,
            preset: files.preset,
        });
    }
    let dir = files
        .dir
        .ok_or_else(|| HubError::NoModelInDir { dir: spec.into() })?;
    let model = model::load_safetensors_dir(&dir, device, weights)?;
    let tokenizer = ChatTokenizer::from_dir(&dir)?;
    Ok(Loaded {
        model,
        tokenizer,
        name,
        preset: files.preset,
    })
}

fn short_name(spec: &str) -> String {
    Path::new(spec)
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| spec.to_string())
}
