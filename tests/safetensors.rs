//! A Hugging Face folder (config.json + *.safetensors) loads to the same model as a GGUF
//! holding the same weights: names, shapes, config keys and RoPE style all line up.

mod common;

use std::collections::HashMap;

use candle_core::quantized::GgmlDType;
use candle_core::{Device, Tensor};
use swaa_chat::model::{Arch, Logits, ModelConfig, WeightsMode, load_gguf, load_safetensors_dir};
use swaa_chat::recipe::{Phase, Recipe};

/// Hugging Face names, written out here independently of the loader's own mapping.
fn hf(gguf: &str) -> String {
    let fixed = [
        ("token_embd.weight", "model.embed_tokens.weight"),
        ("output_norm.weight", "model.norm.weight"),
        ("output.weight", "lm_head.weight"),
    ];
    if let Some((_, h)) = fixed.iter().find(|(g, _)| *g == gguf) {
        return h.to_string();
    }
    let parts: Vec<&str> = gguf.split('.').collect();
    let (layer, part, kind) = (parts[1], parts[2], parts[3]);
    let module = match part {
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
        other => panic!("unexpected {other}"),
    };
    format!("model.layers.{layer}.{module}.{kind}")
}

#[test]
fn safetensors_folder_equals_the_same_weights_as_gguf() {
    for arch in [Arch::Qwen2, Arch::Qwen3] {
        let dir = common::temp_dir(&format!("st-{arch}"));
        let cfg = common::quant_friendly(arch, 300);
        let weights = common::random_weights(&cfg);
        let gguf = dir.join("m.gguf");
        common::write_gguf(&gguf, &cfg, &weights, GgmlDType::F32, &[]);
        let st: HashMap<String, Tensor> = weights.iter().map(|(n, t)| (hf(n), t.clone())).collect();
        candle_core::safetensors::save(&st, dir.join("model.safetensors")).unwrap();
        let config = serde_json::json!({
            "architectures": [match arch { Arch::Qwen2 => "Qwen2ForCausalLM", _ => "Qwen3ForCausalLM" }],
            "model_type": arch.as_str(),
            "vocab_size": cfg.vocab,
            "hidden_size": cfg.hidden,
            "intermediate_size": cfg.intermediate,
            "num_hidden_layers": cfg.layers,
            "num_attention_heads": cfg.heads,
            "num_key_value_heads": cfg.kv_heads,
            "head_dim": cfg.head_dim,
            "rope_theta": cfg.rope_theta,
            "rms_norm_eps": cfg.rms_eps,
            "tie_word_embeddings": cfg.tied_embeddings,
            "max_position_embeddings": cfg.ctx,
        });
        std::fs::write(dir.join("config.json"), config.to_string()).unwrap();

        let prompt: Vec<u32> = (0..33).map(|i| (i * 17 % 300) as u32).collect();
        let run = |m: &swaa_chat::model::Model| {
            let mut c = m.new_cache();
            m.forward(
                &prompt,
                &mut c,
                &Recipe::full(),
                Phase::Prefill,
                Logits::All,
            )
            .unwrap()
            .unwrap()
        };
        let (a, _) = load_gguf(&gguf, &Device::Cpu, WeightsMode::F32).unwrap();
        let b = load_safetensors_dir(&dir, &Device::Cpu, WeightsMode::Auto).unwrap();
        // GGUF stores eps as f32.
        let eps32 = |c: &ModelConfig| ModelConfig {
            rms_eps: c.rms_eps as f32 as f64,
            ..*c
        };
        assert_eq!(
            eps32(a.config()),
            eps32(b.config()),
            "{arch}: config.json and GGUF metadata agree"
        );
        let d = common::max_abs_diff(&run(&a), &run(&b));
        assert!(d <= 1e-5, "{arch}: {d}");
    }
}

/// A plain transformer written from the Hugging Face modelling code (per-head loops, explicit
/// causal softmax): an independent check of q/k norms (qwen3), biases (qwen2), RoPE halves and GQA.
fn naive_logits(cfg: &ModelConfig, w: &HashMap<String, Tensor>, ids: &[u32]) -> Tensor {
    let t = ids.len();
    let get = |n: &str| w.get(n).unwrap_or_else(|| panic!("{n}")).clone();
    let norm = |x: &Tensor, g: &Tensor| {
        let ms = x
            .sqr()
            .unwrap()
            .mean_keepdim(candle_core::D::Minus1)
            .unwrap();
        x.broadcast_div(&(ms + cfg.rms_eps).unwrap().sqrt().unwrap())
            .unwrap()
            .broadcast_mul(g)
            .unwrap()
    };
    let lin = |x: &Tensor, n: &str| x.matmul(&get(n).t().unwrap()).unwrap();
    let d = cfg.head_dim;
    // RoPE halves: rotate (x[i], x[i + d/2]) by pos / theta^(2i/d).
    let rope = |x: &Tensor, pos: usize| {
        let v = x.to_vec1::<f32>().unwrap();
        let mut out = v.clone();
        for i in 0..d / 2 {
            let a = pos as f32 * (1.0 / (cfg.rope_theta as f32).powf(2.0 * i as f32 / d as f32));
            let (c, s) = (a.cos(), a.sin());
            out[i] = v[i] * c - v[i + d / 2] * s;
            out[i + d / 2] = v[i + d / 2] * c + v[i] * s;
        }
        Tensor::new(out, &Device::Cpu).unwrap()
    };
    let ids_t = Tensor::new(ids, &Device::Cpu).unwrap();
    let mut x = get("token_embd.weight").index_select(&ids_t, 0).unwrap();
    for l in 0..cfg.layers {
        let p = |s: &str| format!("blk.{l}.{s}");
        let h = norm(&x, &get(&p("attn_norm.weight")));
        let (mut q, mut k, mut v) = (
            lin(&h, &p("attn_q.weight")),
            lin(&h, &p("attn_k.weight")),
            lin(&h, &p("attn_v.weight")),
        );
        if cfg.arch == Arch::Qwen2 {
            q = q.broadcast_add(&get(&p("attn_q.bias"))).unwrap();
            k = k.broadcast_add(&get(&p("attn_k.bias"))).unwrap();
            v = v.broadcast_add(&get(&p("attn_v.bias"))).unwrap();
        }
        let head = |m: &Tensor, i: usize, j: usize| m.get(i).unwrap().narrow(0, j * d, d).unwrap();
        let mut rows = Vec::new();
        for i in 0..t {
            let mut heads = Vec::new();
            for hq in 0..cfg.heads {
                let kvh = hq / (cfg.heads / cfg.kv_heads);
                let prep = |m: &Tensor, j: usize, hh: usize, n: &str| {
                    let x = head(m, j, hh);
                    let x = if cfg.arch == Arch::Qwen3 {
                        norm(&x, &get(&p(n)))
                    } else {
                        x
                    };
                    rope(&x, j)
                };
                let qi = prep(&q, i, hq, "attn_q_norm.weight");
                let scores: Vec<f32> = (0..=i)
                    .map(|j| {
                        (&qi * &prep(&k, j, kvh, "attn_k_norm.weight"))
                            .unwrap()
                            .sum_all()
                            .unwrap()
                            .to_scalar::<f32>()
                            .unwrap()
                            / (d as f32).sqrt()
                    })
                    .collect();
                let m = scores.iter().cloned().fold(f32::MIN, f32::max);
                let e: Vec<f32> = scores.iter().map(|s| (s - m).exp()).collect();
                let z: f32 = e.iter().sum();
                let mut o = Tensor::zeros(d, candle_core::DType::F32, &Device::Cpu).unwrap();
                for (j, ej) in e.iter().enumerate() {
                    o = (o + (head(&v, j, kvh) * (*ej / z) as f64).unwrap()).unwrap();
                }
                heads.push(o);
            }
            rows.push(Tensor::cat(&heads, 0).unwrap());
        }
        let attn = Tensor::stack(&rows, 0).unwrap();
        x = (x + lin(&attn, &p("attn_output.weight"))).unwrap();
        let h = norm(&x, &get(&p("ffn_norm.weight")));
        let g = candle_nn::ops::silu(&lin(&h, &p("ffn_gate.weight"))).unwrap();
        x = (x + lin(
            &(g * lin(&h, &p("ffn_up.weight"))).unwrap(),
            &p("ffn_down.weight"),
        ))
        .unwrap();
    }
    let x = norm(&x, &get("output_norm.weight"));
    lin(
        &x,
        if cfg.tied_embeddings {
            "token_embd.weight"
        } else {
            "output.weight"
        },
    )
}

#[test]
fn qwen2_and_qwen3_match_a_naive_transformer() {
    for arch in [Arch::Qwen2, Arch::Qwen3] {
        let mut cfg = swaa_chat::selftest::tiny_config(arch);
        cfg.heads = 4;
        cfg.kv_heads = 2;
        let weights = common::random_weights(&cfg);
        let dir = common::temp_dir(&format!("naive-{arch}"));
        let gguf = dir.join("m.gguf");
        common::write_gguf(&gguf, &cfg, &weights, GgmlDType::F32, &[]);
        let (model, _) = load_gguf(&gguf, &Device::Cpu, WeightsMode::F32).unwrap();
        let prompt: Vec<u32> = (0..12).map(|i| (i * 29 % cfg.vocab) as u32).collect();
        let mut c = model.new_cache();
        let ours = model
            .forward(
                &prompt,
                &mut c,
                &Recipe::full(),
                Phase::Prefill,
                Logits::All,
            )
            .unwrap()
            .unwrap();
        let theirs = naive_logits(&cfg, &weights.into_iter().collect(), &prompt);
        let d = common::max_abs_diff(&ours, &theirs);
        assert!(d <= 1e-4, "{arch}: {d}");
    }
}
