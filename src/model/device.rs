//! Devices, and which kernels a model runs on its device: decided once when the model is
//! built (or when the choice is changed), so a forward pass never re-decides per layer.

use candle_core::{DType, Device};

use super::config::ModelConfig;
use super::{ModelError, Result};

/// The device's name as the stats show it.
pub fn device_name(d: &Device) -> String {
    match d {
        Device::Cpu => "cpu".into(),
        Device::Cuda(_) => "cuda".into(),
        Device::Metal(_) => "metal".into(),
    }
}

/// Opens `cpu`, `cuda` or `cuda:N` with an error that says what to do when that fails.
pub fn parse_device(name: &str) -> Result<Device> {
    let ordinal = match name {
        "cpu" => return Ok(Device::Cpu),
        "cuda" | "gpu" => 0,
        _ => match name
            .strip_prefix("cuda:")
            .and_then(|n| n.parse::<usize>().ok())
        {
            Some(n) => n,
            None => return Err(ModelError::UnknownDevice(name.into())),
        },
    };
    if !candle_core::utils::cuda_is_available() {
        return Err(ModelError::NoCudaBuild);
    }
    let device = Device::new_cuda(ordinal).map_err(|e| ModelError::NoCudaDevice(e.to_string()))?;
    #[cfg(feature = "cuda")]
    if let Device::Cuda(d) = &device {
        // cudarc records an event per tensor per launch so that several streams can share
        // memory safely. Everything here runs on the device's one stream, where launch order
        // already orders every use: the events only add driver calls to each small decode op.
        // SAFETY: no tensor of this device is used on another stream.
        unsafe { d.disable_event_tracking() };
    }
    Ok(device)
}

/// Bytes a new allocation can still get on `device`: the GPU's free memory, or the kernel's
/// `MemAvailable` on Linux. None where it cannot be told.
pub fn free_memory(device: &Device) -> Option<u64> {
    match device {
        #[cfg(feature = "cuda")]
        Device::Cuda(d) => d
            .cuda_stream()
            .context()
            .mem_get_info()
            .ok()
            .map(|(free, _)| free as u64),
        Device::Cpu => {
            let info = std::fs::read_to_string("/proc/meminfo").ok()?;
            let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
            let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kb * 1024)
        }
        _ => None,
    }
}

/// How one layer's attention runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttentionKernel {
    /// The flash-style CUDA kernel (bf16, head dims 64 and 128): keys read in place from the
    /// cache, tiles outside sink + window skipped, the mask computed from positions.
    Fused,
    /// On the CPU in f32: prefill chunks and decode steps in one flash-style loop over key
    /// tiles read in place from the cache (AVX-512, AVX2 or scalar, detected at run time).
    Cpu,
    /// candle ops everywhere: gathered keys and an explicit mask (the reference path).
    Ops,
}

/// The kernels a model runs, chosen once from its device, dtype and shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kernels {
    /// CUDA bf16 element-wise kernels: residual+RMSNorm, SiLU·up and the decode GEMV.
    pub elementwise: bool,
    /// q/k/v bias, RoPE and the cache write in one kernel (nothing between projection and
    /// RoPE: no qk-norm).
    pub rope_in_place: bool,
    pub attention: AttentionKernel,
}

impl Kernels {
    /// The project's kernels where they run (`own`), else candle ops.
    pub fn choose(cfg: &ModelConfig, device: &Device, dtype: DType, own: bool) -> Self {
        let cuda_bf16 = cfg!(feature = "cuda") && device.is_cuda() && dtype == DType::BF16;
        let attention = if own && cuda_bf16 && matches!(cfg.head_dim, 64 | 128) {
            AttentionKernel::Fused
        } else if own && device.is_cpu() && dtype == DType::F32 {
            AttentionKernel::Cpu
        } else {
            AttentionKernel::Ops
        };
        Kernels {
            elementwise: own && cuda_bf16,
            rope_in_place: own && cuda_bf16 && !cfg.arch.has_qk_norm(),
            attention,
        }
    }

    /// Whether the attention of `queries` new tokens needs a mask tensor (only candle ops do).
    pub fn needs_mask(&self, queries: usize) -> bool {
        queries > 1 && self.attention == AttentionKernel::Ops
    }

    /// Whether a decode step can run as a CUDA graph: every kernel takes its positions and
    /// slots from device memory, which a replay rewrites (candle ops bake them in).
    pub fn graph_capable(&self) -> bool {
        self.attention == AttentionKernel::Fused && self.rope_in_place && self.elementwise
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Arch;

    #[test]
    fn kernels_follow_device_dtype_and_choice() {
        let cfg = ModelConfig {
            arch: Arch::Qwen3,
            vocab: 32,
            hidden: 64,
            intermediate: 128,
            layers: 2,
            heads: 4,
            kv_heads: 2,
            head_dim: 16,
            rope_theta: 10_000.0,
            rms_eps: 1e-6,
            tied_embeddings: true,
            ctx: 256,
            rope_style: crate::model::RopeStyle::Halves,
            rope_scaling: None,
        };
        let cpu = Kernels::choose(&cfg, &Device::Cpu, DType::F32, true);
        assert_eq!(cpu.attention, AttentionKernel::Cpu);
        assert!(!cpu.elementwise && !cpu.rope_in_place && !cpu.graph_capable());
        assert!(!cpu.needs_mask(2) && !cpu.needs_mask(1));
        let ops = Kernels::choose(&cfg, &Device::Cpu, DType::F32, false);
        assert_eq!(ops.attention, AttentionKernel::Ops);
        assert!(ops.needs_mask(2) && !ops.needs_mask(1));
        // The CPU's in-place loop is f32 only.
        let bf16 = Kernels::choose(&cfg, &Device::Cpu, DType::BF16, true);
        assert_eq!(bf16.attention, AttentionKernel::Ops);
    }
}
