//! Where weights come from: a GGUF file, a safetensors folder, or a seeded random generator.
//! All three answer the same questions by GGUF tensor name, so the transformer is built once.

use std::collections::HashMap;
use std::fs::File;
use std::io::BufReader;
use std::path::Path;
use std::sync::Arc;

use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{DType, Device, Module, Tensor};
use candle_nn::VarBuilder;

use super::config::ModelConfig;
use super::transformer::Model;
use super::{ModelError, Result};

/// How the weights are held on the device.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    serde::Serialize,
    serde::Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum WeightsMode {
    /// Quantized on CPU (blocks without fast kernels re-quantized to Q8_0, prefill chunks
    /// through dequantized weights), bf16 on CUDA (prefill is matmul-bound).
    #[default]
    Auto,
    /// Keep GGUF blocks as they are, with candle's kernels (bit-for-bit its reference models).
    Quantized,
    /// Dequantize to bf16.
    Bf16,
    /// Dequantize to f32 (the reference precision).
    F32,
}

impl WeightsMode {
    /// Dense dtype to dequantize to, or None to keep quantized blocks.
    fn dense_dtype(self, device: &Device) -> Option<DType> {
        match self {
            WeightsMode::Auto if device.is_cpu() => None,
            WeightsMode::Auto | WeightsMode::Bf16 => Some(DType::BF16),
            WeightsMode::Quantized => None,
            WeightsMode::F32 => Some(DType::F32),
        }
    }

    /// Activation dtype: quantized kernels take f32; dense weights set it.
    pub fn activation_dtype(self, device: &Device) -> DType {
        self.dense_dtype(device).unwrap_or(DType::F32)
    }
}

/// A projection `y = x Wᵀ` with quantized or dense weights.
#[derive(Debug, Clone)]
pub enum Linear {
    Quantized {
        q: Arc<QTensor>,
        /// Multiply prefill chunks by the dequantized weights (see [`dense_is_faster`]).
        dense_prefill: bool,
    },
    Dense(Tensor),
    /// Q5_0 / Q8_0 repacked in 16-row tiles for the AVX-512 VNNI kernel (`kernels::qtile`).
    Tiled(Arc<super::kernels::qtile::Tiled>),
}

impl Linear {
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Linear::Quantized {
                q,
                dense_prefill: true,
            } if dense_is_faster(q, x)? => dense_matmul(x, &q.dequantize(x.device())?),
            Linear::Quantized { q, .. } => x.apply_op1_no_bwd(q.as_ref()),
            Linear::Dense(w) => dense_matmul(x, w),
            Linear::Tiled(t) => super::kernels::qtile::forward(x, t),
        }
    }

    /// [`Linear::forward`], or with `fused` a single row on CUDA through the project's GEMV
    /// kernel (decode); the candle path stays the reference the self-test compares against.
    pub fn forward_on(&self, x: &Tensor, fused: bool) -> candle_core::Result<Tensor> {
        match self {
            Linear::Dense(w) if fused && super::kernels::ops::gemv_supported(x, w) => {
                super::kernels::ops::gemv(x, w)
            }
            _ => self.forward(x),
        }
    }

    pub fn out_dim(&self) -> usize {
        match self {
            Linear::Quantized { q, .. } => q.shape().dims()[0],
            Linear::Dense(w) => w.dims()[0],
            Linear::Tiled(t) => t.out_dim(),
        }
    }

    /// Bytes the weights occupy (for bandwidth figures).
    pub fn bytes(&self) -> usize {
        match self {
            Linear::Quantized { q, .. } => q.storage_size_in_bytes(),
            Linear::Dense(w) => w.elem_count() * w.dtype().size_in_bytes(),
            Linear::Tiled(t) => t.bytes(),
        }
    }
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        Linear::forward(self, x)
    }
}

/// Answers for weights by GGUF tensor name (`blk.3.attn_q.weight`).
pub(crate) trait WeightSource {
    fn has(&self, name: &str) -> bool;
    fn linear(&mut self, name: &str, out: usize, inp: usize) -> Result<Linear>;
    /// Norm weights and biases, in the activation dtype.
    fn vector(&mut self, name: &str, len: usize) -> Result<Tensor>;
    /// The embedding table, dense, in the activation dtype.
    fn embedding(&mut self, name: &str, vocab: usize, hidden: usize) -> Result<Tensor>;
    fn device(&self) -> &Device;
    fn dtype(&self) -> DType;
}

struct GgufSource<'a> {
    content: &'a Content,
    reader: BufReader<File>,
    path: &'a Path,
    device: Device,
    dense: Option<DType>,
    dtype: DType,
    /// [`WeightsMode::Auto`] on the CPU: see [`with_simd_kernel`] and [`dense_is_faster`].
    fast_cpu: bool,
    /// The CPU has the tiled kernel's instructions ([`super::kernels::qtile::detect`]).
    tiled: bool,
}

impl GgufSource<'_> {
    fn qtensor(&mut self, name: &str, dims: &[usize]) -> Result<QTensor> {
        let info = self
            .content
            .tensor_infos
            .get(name)
            .ok_or_else(|| ModelError::MissingTensor(name.into(), "GGUF"))?;
        if info.shape.dims() != dims {
            return Err(ModelError::Corrupt {
                path: self.path.into(),
                detail: format!(
                    "tensor {name} has shape {:?}, expected {dims:?}",
                    info.shape.dims()
                ),
            });
        }
        info.read(
            &mut self.reader,
            self.content.tensor_data_offset,
            &self.device,
        )
        .map_err(|e| ModelError::Corrupt {
            path: self.path.into(),
            detail: format!("reading {name}: {}", first_line(&e)),
        })
    }
}

impl WeightSource for GgufSource<'_> {
    fn has(&self, name: &str) -> bool {
        self.content.tensor_infos.contains_key(name)
    }
    fn linear(&mut self, name: &str, out: usize, inp: usize) -> Result<Linear> {
        let q = self.qtensor(name, &[out, inp])?;
        let dense = match q.dtype() {
            GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16 => {
                Some(self.dense.unwrap_or(self.dtype))
            }
            _ => self.dense,
        };
        Ok(match dense {
            Some(dt) => Linear::Dense(q.dequantize(&self.device)?.to_dtype(dt)?),
            None if self.fast_cpu => {
                let tiles = |q: &QTensor| self.tiled && super::kernels::qtile::fits(q);
                let q = if tiles(&q) {
                    q
                } else {
                    with_simd_kernel(q, &self.device)?
                };
                if tiles(&q) {
                    Linear::Tiled(Arc::new(super::kernels::qtile::Tiled::pack(&q)?))
                } else {
                    Linear::Quantized {
                        q: Arc::new(q),
                        dense_prefill: true,
                    }
                }
            }
            None => Linear::Quantized {
                q: Arc::new(q),
                dense_prefill: false,
            },
        })
    }
    fn vector(&mut self, name: &str, len: usize) -> Result<Tensor> {
        Ok(self
            .qtensor(name, &[len])?
            .dequantize(&self.device)?
            .to_dtype(self.dtype)?)
    }
    fn embedding(&mut self, name: &str, vocab: usize, hidden: usize) -> Result<Tensor> {
        Ok(self
            .qtensor(name, &[vocab, hidden])?
            .dequantize(&self.device)?
            .to_dtype(self.dtype)?)
    }
    fn device(&self) -> &Device {
        &self.device
    }
    fn dtype(&self) -> DType {
        self.dtype
    }
}

/// `x Wᵀ` as one 2-D GEMM rather than a batched one over broadcast weights.
fn dense_matmul(x: &Tensor, w: &Tensor) -> candle_core::Result<Tensor> {
    let dims = x.dims().to_vec();
    let (rows, inp) = (
        dims[..dims.len() - 1].iter().product::<usize>(),
        dims[dims.len() - 1],
    );
    let y = x.reshape((rows, inp))?.matmul(&w.t()?)?;
    let mut out = dims;
    *out.last_mut().expect("non-empty dims") = w.dim(0)?;
    y.reshape(out)
}

/// Rows of `x` from which a CPU prefill is faster through dequantized weights.
const DEQUANTIZE_FROM_ROWS: usize = 32;

/// On the CPU, candle multiplies many rows by Q4K/Q6K weights with repacked tiles, but other
/// block types one dot product at a time (~35 GFLOP/s here against ~60 for an f32 GEMM).
/// For a prefill chunk, dequantizing such weights first (a pass over the weights, small next
/// to the GEMM's `rows` passes) and running the GEMM is faster; decode keeps the blocks.
fn dense_is_faster(q: &QTensor, x: &Tensor) -> candle_core::Result<bool> {
    let tiled = matches!(q.dtype(), GgmlDType::Q4K | GgmlDType::Q6K)
        && q.shape().dims()[1].is_multiple_of(256);
    Ok(!tiled
        && x.dtype() == DType::F32
        && x.elem_count() / x.dim(candle_core::D::Minus1)? >= DEQUANTIZE_FROM_ROWS)
}

/// Candle's CPU kernels for Q4_1, Q5_0, Q5_1 and Q8_1 are scalar (no AVX2/NEON), ~3x slower
/// than its Q8_0 kernel. Where the tiled kernels do not run (no AVX2, or rows of partial
/// blocks), such weights are re-quantized to Q8_0 at load. That costs memory (8.5 bits a weight
/// instead of 5–6) and adds a rounding error well under the original block's own (Q8 steps are
/// 1/127 of the block's range, Q5's 1/16).
fn with_simd_kernel(q: QTensor, device: &Device) -> Result<QTensor> {
    let scalar_only = matches!(
        q.dtype(),
        GgmlDType::Q4_1 | GgmlDType::Q5_0 | GgmlDType::Q5_1 | GgmlDType::Q8_1
    );
    if !scalar_only {
        return Ok(q);
    }
    Ok(QTensor::quantize(&q.dequantize(device)?, GgmlDType::Q8_0)?)
}

/// GGML types candle can run (its reader refuses others with "unknown dtype").
fn ggml_name(code_or_name: &str) -> String {
    match code_or_name.trim() {
        "16" | "17" | "18" | "19" | "20" | "21" | "22" | "23" | "29" => {
            format!("IQ* ({code_or_name})")
        }
        "24" | "25" | "26" | "27" | "28" => format!("integer ({code_or_name})"),
        "34" | "35" | "36" | "39" => format!("ternary/MXFP ({code_or_name})"),
        other => format!("GGML type {other}"),
    }
}

/// candle appends a backtrace to its messages when RUST_BACKTRACE is set: keep the message.
fn first_line(e: &candle_core::Error) -> String {
    e.to_string().lines().next().unwrap_or_default().to_string()
}

/// Reads GGUF metadata and tensor index only (fast, no weights): used by loading and by `models`.
pub fn read_gguf_content(path: &Path) -> Result<Content> {
    let file = File::open(path).map_err(|source| ModelError::Io {
        path: path.into(),
        source,
    })?;
    let file_len = file.metadata().map(|m| m.len()).unwrap_or(u64::MAX);
    super::gguf_check::scan_header(path)?;
    let mut reader = BufReader::new(file);
    let content = Content::read(&mut reader).map_err(|e| {
        let msg = first_line(&e);
        if let Some(code) = msg.strip_prefix("unknown dtype for tensor ") {
            ModelError::UnsupportedTensorType {
                name: "(one of the tensors)".into(),
                dtype: ggml_name(code),
            }
        } else if msg.contains("magic") {
            ModelError::NotGguf {
                path: path.into(),
                detail: msg,
            }
        } else {
            ModelError::Corrupt {
                path: path.into(),
                detail: msg,
            }
        }
    })?;
    super::gguf_check::check_layout(path, &content, file_len)?;
    Ok(content)
}

/// Loads a GGUF model; returns it with the file's metadata (the tokenizer is built from it).
pub fn load_gguf(
    path: &Path,
    device: &Device,
    mode: WeightsMode,
) -> Result<(Model, HashMap<String, Value>)> {
    load_gguf_here(path, device, mode).map_err(|e| e.in_file(path))
}

fn load_gguf_here(
    path: &Path,
    device: &Device,
    mode: WeightsMode,
) -> Result<(Model, HashMap<String, Value>)> {
    let content = read_gguf_content(path)?;
    let has_output = content.tensor_infos.contains_key("output.weight");
    let mut cfg = ModelConfig::from_gguf(&content.metadata, has_output)?;
    let file = File::open(path).map_err(|source| ModelError::Io {
        path: path.into(),
        source,
    })?;
    let mut reader = BufReader::new(file);
    if content.tensor_infos.contains_key("rope_freqs.weight") {
        // Read in f32 whatever the device: the divisors set every position's angle.
        let f = content.tensor(&mut reader, "rope_freqs.weight", &Device::Cpu)?;
        cfg = cfg.with_freq_factors(&f.dequantize(&Device::Cpu)?.flatten_all()?.to_vec1()?)?;
    }
    let mut src = GgufSource {
        content: &content,
        reader,
        path,
        device: device.clone(),
        dense: mode.dense_dtype(device),
        dtype: mode.activation_dtype(device),
        fast_cpu: mode == WeightsMode::Auto && device.is_cpu(),
        tiled: super::kernels::qtile::detect().is_some(),
    };
    let model = Model::build(cfg, &mut src)?;
    Ok((model, content.metadata))
}

/// Hugging Face tensor name for a GGUF one.
fn hf_name(gguf: &str) -> String {
    let global = match gguf {
        "token_embd.weight" => Some("model.embed_tokens.weight"),
        "output_norm.weight" => Some("model.norm.weight"),
        "output.weight" => Some("lm_head.weight"),
        _ => None,
    };
    if let Some(n) = global {
        return n.into();
    }
    let rest = gguf.strip_prefix("blk.").unwrap_or(gguf);
    let (layer, rest) = rest.split_once('.').unwrap_or(("0", rest));
    let (part, suffix) = rest.rsplit_once('.').unwrap_or((rest, "weight"));
    let hf = match part {
        "attn_norm" => "input_layernorm",
        "ffn_norm" => "post_attention_layernorm",
        "attn_q" => "self_attn.q_proj",
        "attn_k" => "self_attn.k_proj",
        "attn_v" => "self_attn.v_proj",
        "attn_output" => "self_attn.o_proj",
        "attn_q_norm" => "self_attn.q_norm",
        "attn_k_norm" => "self_attn.k_norm",
        "ffn_gate" => "mlp.gate_proj",
        "ffn_up" => "mlp.up_proj",
        "ffn_down" => "mlp.down_proj",
        other => other,
    };
    format!("model.layers.{layer}.{hf}.{suffix}")
}

struct SafetensorsSource<'a> {
    vb: VarBuilder<'a>,
    dtype: DType,
}

impl WeightSource for SafetensorsSource<'_> {
    fn has(&self, name: &str) -> bool {
        self.vb.contains_tensor(&hf_name(name))
    }
    fn linear(&mut self, name: &str, out: usize, inp: usize) -> Result<Linear> {
        Ok(Linear::Dense(self.get(name, &[out, inp])?))
    }
    fn vector(&mut self, name: &str, len: usize) -> Result<Tensor> {
        self.get(name, &[len])
    }
    fn embedding(&mut self, name: &str, vocab: usize, hidden: usize) -> Result<Tensor> {
        self.get(name, &[vocab, hidden])
    }
    fn device(&self) -> &Device {
        self.vb.device()
    }
    fn dtype(&self) -> DType {
        self.dtype
    }
}

impl SafetensorsSource<'_> {
    fn get(&self, name: &str, dims: &[usize]) -> Result<Tensor> {
        let hf = hf_name(name);
        if !self.vb.contains_tensor(&hf) {
            return Err(ModelError::MissingTensor(hf, "safetensors"));
        }
        let t = self.vb.get(dims, &hf).map_err(|e| match e {
            candle_core::Error::UnexpectedShape { expected, got, .. } => {
                ModelError::ShapeMismatch {
                    keys: config_keys(&hf),
                    tensor: hf.clone(),
                    expected: format!("{:?}", expected.dims()),
                    got: format!("{:?}", got.dims()),
                }
            }
            e => e.into(),
        })?;
        Ok(t.to_dtype(self.dtype)?)
    }
}

/// The config.json keys that decide a tensor's shape, for a message about a mismatch.
fn config_keys(tensor: &str) -> &'static str {
    let part = |p: &str| tensor.contains(p);
    if part("q_proj") || part("o_proj") {
        "hidden_size, num_attention_heads, head_dim"
    } else if part("k_proj") || part("v_proj") {
        "hidden_size, num_key_value_heads, head_dim"
    } else if part("q_norm") || part("k_norm") {
        "head_dim"
    } else if part("mlp.") {
        "hidden_size, intermediate_size"
    } else if part("embed") || part("lm_head") {
        "vocab_size, hidden_size"
    } else {
        "hidden_size"
    }
}

/// Loads `config.json` + `*.safetensors` from a folder (weights dense in the activation dtype).
pub fn load_safetensors_dir(dir: &Path, device: &Device, mode: WeightsMode) -> Result<Model> {
    let cfg_path = dir.join("config.json");
    let json = std::fs::read_to_string(&cfg_path).map_err(|source| ModelError::Io {
        path: cfg_path.clone(),
        source,
    })?;
    let cfg = ModelConfig::from_hf_json(&json).map_err(|e| e.in_file(&cfg_path))?;
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map_err(|source| ModelError::Io {
            path: dir.into(),
            source,
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(ModelError::MissingTensor(
            "*.safetensors".into(),
            "safetensors",
        ));
    }
    let dtype = match mode {
        WeightsMode::Bf16 => DType::BF16,
        WeightsMode::F32 => DType::F32,
        _ if device.is_cpu() => DType::F32,
        _ => DType::BF16,
    };
    // SAFETY: the files are memory-mapped read-only; modifying them while loaded is the user's risk,
    // as in every mmap-based loader (candle, llama.cpp).
    // candle's messages on a bad header say what is wrong but not what to do.
    // The file named once (candle puts its path inside the message too), and serde's list of
    // every dtype it knows left out.
    let corrupt = |e: candle_core::Error| {
        let (path, e) = match e {
            candle_core::Error::WithPath { inner, path } => (path, *inner),
            e => (dir.to_path_buf(), e),
        };
        let detail = first_line(&e);
        ModelError::Corrupt {
            path,
            detail: detail
                .split(", expected one of")
                .next()
                .unwrap_or(&detail)
                .to_string(),
        }
    };
    let vb =
        unsafe { VarBuilder::from_mmaped_safetensors(&files, dtype, device) }.map_err(corrupt)?;
    let mut src = SafetensorsSource { vb, dtype };
    Model::build(cfg, &mut src).map_err(|e| match e {
        ModelError::Candle(e) => corrupt(e),
        e => e.in_file(dir),
    })
}

/// Deterministic weights in a given shape: for benchmarks (throughput does not depend on the
/// values) and exactness tests. Generated on the CPU so every device sees the same numbers.
struct RandomSource {
    rng: u64,
    device: Device,
    dtype: DType,
    /// No `output.weight`: the head reuses the embedding.
    tied: bool,
}

impl RandomSource {
    /// xorshift64*: fast, and good enough for weights that only need to be deterministic.
    fn uniform(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n)
            .map(|_| {
                self.rng ^= self.rng >> 12;
                self.rng ^= self.rng << 25;
                self.rng ^= self.rng >> 27;
                let x = self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D);
                ((x >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
            })
            .collect()
    }
    fn tensor(&mut self, dims: &[usize], scale: f32, offset: f32) -> Result<Tensor> {
        let n = dims.iter().product();
        let mut v = self.uniform(n, scale);
        if offset != 0.0 {
            v.iter_mut().for_each(|x| *x += offset);
        }
        Ok(Tensor::from_vec(v, dims, &Device::Cpu)?
            .to_dtype(self.dtype)?
            .to_device(&self.device)?)
    }
}

impl WeightSource for RandomSource {
    fn has(&self, name: &str) -> bool {
        !(self.tied && name == "output.weight")
    }
    fn linear(&mut self, _name: &str, out: usize, inp: usize) -> Result<Linear> {
        // Uniform with std 1/sqrt(fan_in) keeps activations O(1) through the layers.
        let scale = (3.0 / inp as f32).sqrt();
        Ok(Linear::Dense(self.tensor(&[out, inp], scale, 0.0)?))
    }
    fn vector(&mut self, name: &str, len: usize) -> Result<Tensor> {
        if name.ends_with("norm.weight") {
            self.tensor(&[len], 0.1, 1.0)
        } else {
            self.tensor(&[len], 0.1, 0.0)
        }
    }
    fn embedding(&mut self, _name: &str, vocab: usize, hidden: usize) -> Result<Tensor> {
        self.tensor(&[vocab, hidden], 1.0, 0.0)
    }
    fn device(&self) -> &Device {
        &self.device
    }
    fn dtype(&self) -> DType {
        self.dtype
    }
}

/// A model with seeded random weights in the exact shape of `cfg`.
pub fn random_model(cfg: &ModelConfig, seed: u64, device: &Device, dtype: DType) -> Result<Model> {
    let mut src = RandomSource {
        rng: seed.wrapping_mul(6364136223846793005).max(1),
        device: device.clone(),
        dtype,
        tied: cfg.tied_embeddings,
    };
    Model::build(*cfg, &mut src)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gguf_names_map_to_hugging_face_names() {
        assert_eq!(
            hf_name("blk.3.attn_q.weight"),
            "model.layers.3.self_attn.q_proj.weight"
        );
        assert_eq!(
            hf_name("blk.12.attn_k.bias"),
            "model.layers.12.self_attn.k_proj.bias"
        );
        assert_eq!(
            hf_name("blk.0.ffn_norm.weight"),
            "model.layers.0.post_attention_layernorm.weight"
        );
        assert_eq!(
            hf_name("blk.1.attn_q_norm.weight"),
            "model.layers.1.self_attn.q_norm.weight"
        );
        assert_eq!(hf_name("output.weight"), "lm_head.weight");
    }
}
