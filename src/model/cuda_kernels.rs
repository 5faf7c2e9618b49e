//! Loads the project's CUDA kernels, compiled by build.rs to fat binaries (machine code for
//! the target GPU plus PTX for newer ones), once per device. Machine code matters: JIT-compiling
//! the unrolled attention kernels from PTX took ~14 s at first use on an H200.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use candle_core::cuda_backend::cudarc::driver::{CudaFunction, CudaModule};
use candle_core::cuda_backend::cudarc::nvrtc::Ptx;
use candle_core::cuda_backend::{CudaDevice, DeviceId, WrapErr};

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

type Modules = Mutex<HashMap<(DeviceId, &'static str), Arc<CudaModule>>>;

/// The kernel `name` of `module` on `dev`, loading the module on first use.
pub fn function(
    dev: &CudaDevice,
    (module, image): (&'static str, &'static [u8]),
    name: &str,
) -> candle_core::Result<CudaFunction> {
    static MODULES: OnceLock<Modules> = OnceLock::new();
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
    m.load_function(name).w()
}
