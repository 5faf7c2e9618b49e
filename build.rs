//! With the `cuda` feature, compiles the project's CUDA kernels to fat binaries with nvcc. The CPU
//! build runs nothing here and needs no CUDA toolkit.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    if std::env::var_os("CARGO_FEATURE_CUDA").is_none() {
        return;
    }
    println!("cargo::rerun-if-changed=src/model/kernels/cuda");
    println!("cargo::rerun-if-env-changed=CUDA_HOME");
    println!("cargo::rerun-if-env-changed=CUDA_COMPUTE_CAP");
    let nvcc = std::env::var_os("CUDA_HOME")
        .map(|h| PathBuf::from(h).join("bin/nvcc"))
        .filter(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("nvcc"));
    // mma.sync, ldmatrix and cp.async need sm_80; newer GPUs JIT the PTX.
    let cap = std::env::var("CUDA_COMPUTE_CAP").unwrap_or_else(|_| "80".into());
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    for name in ["attention", "qkv_rope", "norm_act", "gemv", "argmax"] {
        let src = format!("src/model/kernels/cuda/{name}.cu");
        // Machine code for the target GPU (no JIT at first use) and PTX for newer ones.
        let status = Command::new(&nvcc)
            .args(["--fatbin", "-O3", "-std=c++17", "-lineinfo"])
            .arg(format!("-gencode=arch=compute_{cap},code=sm_{cap}"))
            .arg(format!("-gencode=arch=compute_{cap},code=compute_{cap}"))
            .arg("-o")
            .arg(out.join(format!("{name}.fatbin")))
            .arg(&src)
            .status()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run {} ({e}): the cuda feature needs the CUDA toolkit (see ../shared/cuda)",
                    nvcc.display()
                )
            });
        assert!(status.success(), "nvcc failed on {src}");
    }
}
