//! Weights loading (GGUF, safetensors, random) and the transformer that runs them.

pub mod attention;
pub mod config;
pub mod decode_graph;
mod device;
mod gguf_check;
mod kernels;
pub mod kv_cache;
pub mod lora;
mod probe;
pub mod rope;
pub mod transformer;
mod weights;

pub use config::{Arch, ModelConfig, RopeStyle};
pub use decode_graph::{DecodeGraphs, GraphStats};
pub use device::{AttentionKernel, Kernels, device_name, free_memory, parse_device};
pub use kernels::ops::argmax;
pub use kernels::qtile::Tiled;
pub use kernels::use_threads;
pub use kv_cache::{CacheStats, HeldLayer, KvCache};
pub use lora::{AdapterCard, Lora, TrainPass};
pub use probe::AttentionProbe;
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
        "{path} is truncated or corrupt ({detail}); re-download it (a cached preset: delete the file and `swaa-chat models fetch` gets it again, checked against its SHA-256)"
    )]
    Corrupt { path: PathBuf, detail: String },
    /// An error found in a model file whose message does not name the file yet.
    #[error("{path}: {source}")]
    InFile {
        path: PathBuf,
        source: Box<ModelError>,
    },
    #[error(
        "metadata {key} {detail}: the file is damaged or not a model swaa-chat runs; re-download it"
    )]
    BadMetadata { key: String, detail: String },
    #[error("unsupported architecture '{0}': use a llama, qwen2 or qwen3 model")]
    UnsupportedArch(String),
    #[error(
        "tensor {name} has type {dtype}, which swaa-chat cannot run: use a GGUF quantized as Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K…Q6_K, F16 or F32"
    )]
    UnsupportedTensorType { name: String, dtype: String },
    #[error(
        "the model file has no tensor {0}: give a complete {1} checkpoint (re-download or convert it again)"
    )]
    MissingTensor(String, &'static str),
    #[error("the model file lacks metadata key {0}: re-download it, or convert it again")]
    MissingMetadata(String),
    #[error("config.json is not valid ({0}): fix it, or download the model folder again")]
    BadConfig(String),
    /// A safetensors tensor whose shape config.json contradicts.
    #[error(
        "tensor {tensor} is {got} in the weights but config.json ({keys}) makes it {expected}: fix config.json to match the weights, or download the model folder again"
    )]
    ShapeMismatch {
        tensor: String,
        expected: String,
        got: String,
        keys: &'static str,
    },
    #[error(
        "bad RoPE scaling in the model file: {key} {detail}; fix or remove that key, or use another model"
    )]
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
    #[error("adapter {path}: {detail}")]
    BadAdapter { path: PathBuf, detail: String },
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

pub type Result<T> = std::result::Result<T, ModelError>;

impl ModelError {
    /// Names `path` in the message unless it already does.
    pub fn in_file(self, path: &std::path::Path) -> Self {
        match self {
            ModelError::Io { .. }
            | ModelError::NotGguf { .. }
            | ModelError::Corrupt { .. }
            | ModelError::InFile { .. }
            | ModelError::BadAdapter { .. }
            | ModelError::NoCudaBuild
            | ModelError::NoCudaDevice(_)
            | ModelError::UnknownDevice(_) => self,
            other => ModelError::InFile {
                path: path.into(),
                source: Box::new(other),
            },
        }
    }
}
