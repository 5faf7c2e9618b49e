//! Our transformer against candle-transformers' reference forwards: the real smollm2-135m
//! GGUF (quantized_llama), a random-weight qwen2 GGUF (quantized_qwen2), and every
//! GGML tensor type we claim to load.

mod common;

use candle_core::quantized::{GgmlDType, gguf_file};
use candle_core::{DType, Device, Tensor};
use candle_transformers::models::{quantized_llama, quantized_qwen2};
use swaa_chat::model::{Arch, Logits, WeightsMode, load_gguf};
use swaa_chat::recipe::{Phase, Recipe};

fn ids(n: usize, vocab: usize) -> Vec<u32> {
    (0..n).map(|i| ((i * 7919 + 13) % vocab) as u32).collect()
}

/// Prefill `prompt` then feed `extra` one by one; last-position logits after each step.
fn ours(path: &std::path::Path, prompt: &[u32], extra: &[u32]) -> Vec<Tensor> {
    let (mut model, _) = load_gguf(path, &Device::Cpu, WeightsMode::Quantized).unwrap();
    // candle's attention arithmetic, as the references use: the activations are quantized to
    // Q8 before each matmul, so a last-bit difference in attention can flip a rounding and
    // move logits by ~1%. The in-place CPU decode attention is checked against the dense
    // reference by the exactness tests instead.
    model.set_fused_attention(false);
    let mut cache = model.new_cache();
    let r = Recipe::full();
    let mut out = vec![
        model
            .forward(prompt, &mut cache, &r, Phase::Prefill, Logits::Last)
            .unwrap()
            .unwrap(),
    ];
    for &t in extra {
        out.push(
            model
                .forward(&[t], &mut cache, &r, Phase::Decode, Logits::Last)
                .unwrap()
                .unwrap(),
        );
    }
    out
}

fn content(path: &std::path::Path) -> (gguf_file::Content, std::fs::File) {
    let mut f = std::fs::File::open(path).unwrap();
    (gguf_file::Content::read(&mut f).unwrap(), f)
}

fn compare(name: &str, ours: &[Tensor], theirs: &[Tensor], tol: f32) {
    for (step, (a, b)) in ours.iter().zip(theirs).enumerate() {
        let b = b.flatten_all().unwrap().to_dtype(DType::F32).unwrap();
        let d = common::max_abs_diff(a, &b);
        let scale = common::max_abs(&b);
        assert!(
            d <= tol,
            "{name} step {step}: max abs diff {d} (logit scale {scale})"
        );
        assert_eq!(
            a.argmax(0).unwrap().to_scalar::<u32>().unwrap(),
            b.argmax(0).unwrap().to_scalar::<u32>().unwrap()
        );
    }
}

#[test]
fn smollm2_full_recipe_matches_candle_quantized_llama_on_300_tokens() {
    let path = common::smollm2();
    let prompt = ids(300, 49152);
    let extra = [42u32, 1000, 7];
    let a = ours(&path, &prompt, &extra);
    let (ct, mut f) = content(&path);
    let mut reference = quantized_llama::ModelWeights::from_gguf(ct, &mut f, &Device::Cpu).unwrap();
    let mut b = vec![
        reference
            .forward(
                &Tensor::new(prompt.as_slice(), &Device::Cpu)
                    .unwrap()
                    .unsqueeze(0)
                    .unwrap(),
                0,
            )
            .unwrap(),
    ];
    for (i, &t) in extra.iter().enumerate() {
        b.push(
            reference
                .forward(
                    &Tensor::new(&[t], &Device::Cpu)
                        .unwrap()
                        .unsqueeze(0)
                        .unwrap(),
                    300 + i,
                )
                .unwrap(),
        );
    }
    // Same Q4_1 kernels and the same f32 arithmetic, different attention grouping: ≤ 1e-3.
    compare("smollm2", &a, &b, 1e-3);
}

#[test]
fn qwen2_matches_candle_quantized_qwen2_on_random_gguf() {
    let dir = common::temp_dir("parity-qwen2");
    let mut cfg = common::quant_friendly(Arch::Qwen2, 320);
    cfg.tied_embeddings = true;
    let path = dir.join("qwen2.gguf");
    common::write_random_gguf(&path, &cfg, GgmlDType::Q8_0, &[]);
    let prompt = ids(120, cfg.vocab);
    let extra = [3u32, 99, 250];
    let a = ours(&path, &prompt, &extra);
    let x = |t: &[u32]| Tensor::new(t, &Device::Cpu).unwrap().unsqueeze(0).unwrap();
    let (ct, mut f) = content(&path);
    let mut m = quantized_qwen2::ModelWeights::from_gguf(ct, &mut f, &Device::Cpu).unwrap();
    let mut b = vec![m.forward(&x(&prompt), 0).unwrap()];
    for (i, &t) in extra.iter().enumerate() {
        b.push(m.forward(&x(&[t]), 120 + i).unwrap());
    }
    compare("qwen2", &a, &b, 1e-3);
}

/// Both quantized modes against the dequantized f32 run: `Quantized` (candle's kernels on the
/// blocks) and `Auto` (slow block types re-quantized to Q8_0, prefill chunks of 32+ rows
/// through dequantized weights). The prompt is long enough for the dense prefill; a decode
/// step follows on the blocks.
#[test]
fn every_supported_ggml_type_loads_and_matches_its_dequantized_f32_run() {
    let dir = common::temp_dir("qtypes");
    let cfg = common::quant_friendly(Arch::Llama, 256);
    let prompt = ids(40, cfg.vocab);
    for dtype in [
        GgmlDType::Q4_0,
        GgmlDType::Q4_1,
        GgmlDType::Q5_0,
        GgmlDType::Q5_1,
        GgmlDType::Q8_0,
        GgmlDType::Q2K,
        GgmlDType::Q3K,
        GgmlDType::Q4K,
        GgmlDType::Q5K,
        GgmlDType::Q6K,
        GgmlDType::F16,
        GgmlDType::F32,
    ] {
        let path = dir.join(format!("{dtype:?}.gguf"));
        common::write_random_gguf(&path, &cfg, dtype, &[]);
        let run = |mode| {
            let (m, _) = load_gguf(&path, &Device::Cpu, mode).unwrap();
            let mut c = m.new_cache();
            let r = Recipe::full();
            let mut step = |t: &[u32], phase| {
                m.forward(t, &mut c, &r, phase, Logits::Last)
                    .unwrap()
                    .unwrap()
            };
            let prefill = step(&prompt, Phase::Prefill);
            let decode = step(&[7], Phase::Decode);
            Tensor::cat(&[prefill, decode], 0).unwrap()
        };
        let f = run(WeightsMode::F32);
        let scale = common::max_abs(&f);
        for mode in [WeightsMode::Quantized, WeightsMode::Auto] {
            let q = run(mode);
            // Quantized kernels also quantize the activations (to Q8), and Auto may
            // re-quantize the blocks to Q8_0: a bounded, small difference.
            let d = common::max_abs_diff(&q, &f);
            assert!(
                d <= 0.05 * scale.max(1.0),
                "{dtype:?} {mode:?}: {d} vs logit scale {scale}"
            );
            assert!(
                q.flatten_all()
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap()
                    .iter()
                    .all(|x| x.is_finite())
            );
        }
    }
}
