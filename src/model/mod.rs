//! Weights loading (GGUF, safetensors, random) and the transformer that runs them.

pub mod attention;
pub mod config;
pub mod decode_graph;
mod device;
mod kernels;
pub mod kv_cache;
pub mod rope;
pub mod transformer;
mod weights;

pub use config::{Arch, ModelConfig, RopeStyle};
pub use decode_graph::{DecodeGraphs, GraphStats};
pub use device::{AttentionKernel, Kernels, device_name, parse_device};
pub use kernels::ops::argmax;
pub use kv_cache::{CacheStats, HeldLayer, KvCache};
pub use rope::{RopeScaling, Yarn};
pub use transformer::{Logits, Model};
pub use weights::{Linear, WeightsMode, load_gguf, load_safetensors_dir, random_model};

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("cannot read model file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{path} is not a GGUF model file ({detail}); pass a .gguf file or a folder with config.json + *.safetensors"
    )]
    NotGguf { path: PathBuf, detail: String },
    #[error(
        "{path} is truncated or corrupt ({detail}); delete it and fetch it again (swaa-chat models fetch NAME)"
    )]
    Corrupt { path: PathBuf, detail: String },
    #[error("unsupported architecture '{0}': swaa-chat runs llama, qwen2 and qwen3 models")]
    UnsupportedArch(String),
    #[error(
        "tensor {name} has type {dtype}, which swaa-chat cannot run: use a GGUF quantized as Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K…Q6_K, F16 or F32"
    )]
    UnsupportedTensorType { name: String, dtype: String },
    #[error("the model file has no tensor {0}; is it a complete {1} checkpoint?")]
    MissingTensor(String, &'static str),
    #[error("the model file lacks metadata key {0}")]
    MissingMetadata(String),
    #[error("bad config.json: {0}")]
    BadConfig(String),
    #[error("bad RoPE scaling in the model file: {key} {detail}")]
    BadRopeScaling { key: String, detail: String },
    #[error(
        "this build has no CUDA support: rebuild with `cargo build --release --features cuda`, or use --device cpu"
    )]
    NoCudaBuild,
    #[error(
        "no CUDA device could be opened ({0}): check the NVIDIA driver with nvidia-smi, or use --device cpu"
    )]
    NoCudaDevice(String),
    #[error("unknown device '{0}': use cpu, cuda or cuda:N")]
    UnknownDevice(String),
    #[error(
        "the cache no longer holds position {pos} (evicted by the recipe it was read with); re-read the document"
    )]
    Evicted { pos: usize },
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

pub type Result<T> = std::result::Result<T, ModelError>;
