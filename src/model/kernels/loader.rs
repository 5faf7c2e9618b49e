//! Loads the project's CUDA kernels, compiled by build.rs to fat binaries (machine code for
//! the target GPU plus PTX for newer ones), once per device. Machine code matters: JIT-compiling
//! the unrolled attention kernels from PTX took ~14 s at first use on an H200.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use candle_core::cuda_backend::cudarc::driver::{CudaFunction, CudaModule, CudaSlice, CudaView};
use candle_core::cuda_backend::cudarc::nvrtc::Ptx;
use candle_core::cuda_backend::{CudaDType, CudaDevice, CudaStorageSlice, DeviceId, WrapErr};
use candle_core::{CudaStorage, Layout, Shape, bail};

pub const ATTENTION: (&str, &[u8]) = (
    "attention",
    include_bytes!(concat!(env!("OUT_DIR"), "/attention.fatbin")),
);
pub const QKV_ROPE: (&str, &[u8]) = (
    "qkv_rope",
    include_bytes!(concat!(env!("OUT_DIR"), "/qkv_rope.fatbin")),
);
pub const NORM_ACT: (&str, &[u8]) = (
    "norm_act",
    include_bytes!(concat!(env!("OUT_DIR"), "/norm_act.fatbin")),
);

pub const GEMV: (&str, &[u8]) = (
    "gemv",
    include_bytes!(concat!(env!("OUT_DIR"), "/gemv.fatbin")),
);

pub const ARGMAX: (&str, &[u8]) = (
    "argmax",
    include_bytes!(concat!(env!("OUT_DIR"), "/argmax.fatbin")),
);

type Modules = Mutex<HashMap<(DeviceId, &'static str), Arc<CudaModule>>>;
type Functions = Mutex<HashMap<(DeviceId, &'static str, &'static str), CudaFunction>>;

/// The kernel `name` of `module` on `dev`, loading the module on first use. Functions are
/// cached: a decode step launches ~450 kernels and the driver's lookup cost host time each.
pub fn function(
    dev: &CudaDevice,
    (module, image): (&'static str, &'static [u8]),
    name: &'static str,
) -> candle_core::Result<CudaFunction> {
    static MODULES: OnceLock<Modules> = OnceLock::new();
    static FUNCTIONS: OnceLock<Functions> = OnceLock::new();
    let mut functions = FUNCTIONS
        .get_or_init(Default::default)
        .lock()
        .expect("function cache lock");
    if let Some(f) = functions.get(&(dev.id(), module, name)) {
        return Ok(f.clone());
    }
    let mut modules = MODULES
        .get_or_init(Default::default)
        .lock()
        .expect("module cache lock");
    let m = match modules.get(&(dev.id(), module)) {
        Some(m) => m.clone(),
        None => {
            let ctx = dev.cuda_stream().context().clone();
            let m = ctx.load_module(Ptx::from_binary(image.to_vec())).w()?;
            modules.insert((dev.id(), module), m.clone());
            m
        }
    };
    let f = m.load_function(name).w()?;
    functions.insert((dev.id(), module, name), f.clone());
    Ok(f)
}

/// Contiguous bf16 views of a custom op's inputs (the fused kernels take no other kind).
pub fn bf16s<'a, const N: usize>(
    inputs: [(&'a CudaStorage, &Layout); N],
) -> candle_core::Result<[CudaView<'a, half::bf16>; N]> {
    let mut out = Vec::with_capacity(N);
    for (s, l) in inputs {
        let CudaStorageSlice::BF16(slice) = &s.slice else {
            bail!("the fused kernels need bf16 inputs");
        };
        let Some((a, b)) = l.contiguous_offsets() else {
            bail!("the fused kernels need contiguous inputs");
        };
        out.push(slice.slice(a..b));
    }
    Ok(out
        .try_into()
        .unwrap_or_else(|_| unreachable!("N inputs give N views")))
}

/// A kernel's output buffer as a custom op's result.
pub fn output<T: CudaDType>(
    out: CudaSlice<T>,
    dev: CudaDevice,
    shape: impl Into<Shape>,
) -> (CudaStorage, Shape) {
    (CudaStorage::wrap_cuda_slice(out, dev), shape.into())
}
