//! RoPE scaling (linear, llama3, YaRN, GGUF `rope_freqs`): frequencies and rotations against
//! goldens from the reference formulas (`tests/fixtures/rope/make_golden.py`), parsing of
//! `config.json` and GGUF metadata, the `--ctx` rule, and exactness of the engine against the
//! dense reference with scaling on and sliding layers on either RoPE.

mod common;

use std::collections::HashMap;

use candle_core::quantized::GgmlDType;
use candle_core::quantized::gguf_file::Value;
use candle_core::{DType, Device, Tensor};
use serde_json::json;
use swaa_chat::hub;
use swaa_chat::model::rope::{self, RopeScaling, Yarn};
use swaa_chat::model::{Arch, Logits, Model, ModelConfig, WeightsMode, load_gguf, random_model};
use swaa_chat::recipe::{LayerSet, Phase, Recipe, RopeChoice};
use swaa_chat::selftest::{run_engine, tiny_config};

fn golden() -> serde_json::Value {
    serde_json::from_str(include_str!("fixtures/rope/golden.json")).unwrap()
}

fn floats(v: &serde_json::Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

/// A minimal llama `config.json` around a head shape and `rope_scaling`.
fn hf_config(head_dim: usize, theta: f64, scaling: &serde_json::Value) -> String {
    json!({
        "model_type": "llama",
        "vocab_size": 96,
        "hidden_size": head_dim * 2,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "head_dim": head_dim,
        "rope_theta": theta,
        "max_position_embeddings": 131072,
        "rope_scaling": scaling,
    })
    .to_string()
}

/// The golden case's scaling, read through the `config.json` parser.
fn case_config(case: &serde_json::Value) -> ModelConfig {
    let d = case["head_dim"].as_u64().unwrap() as usize;
    let theta = case["rope_theta"].as_f64().unwrap();
    ModelConfig::from_hf_json(&hf_config(d, theta, &case["rope_scaling"])).unwrap()
}

fn assert_close_rel(name: &str, ours: &[f32], want: &[f64], rel: f64) {
    assert_eq!(ours.len(), want.len(), "{name}: length");
    for (i, (&a, &b)) in ours.iter().zip(want).enumerate() {
        assert!(
            (a as f64 - b).abs() <= rel * b.abs(),
            "{name} pair {i}: {a} vs golden {b}"
        );
    }
}

#[test]
fn frequencies_and_attention_factor_match_the_reference_formulas() {
    let g = golden();
    let cases = g["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 6);
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let cfg = case_config(case);
        assert_eq!(
            cfg.rope_scaling.is_some(),
            !case["rope_scaling"].is_null(),
            "{name}"
        );
        let (inv, attention) =
            rope::frequencies(cfg.head_dim, cfg.rope_theta, cfg.rope_scaling.as_ref());
        // The reference computes in f32; ours rounds an f64 result to f32 once.
        assert_close_rel(name, &inv, &floats(&case["inv_freq"]), 3e-7);
        let want = case["attention_factor"].as_f64().unwrap();
        assert!(
            (attention as f64 - want).abs() <= 1e-7 * want,
            "{name}: attention factor {attention} vs {want}"
        );
        if let Some(f) = case.get("gguf_rope_freqs") {
            // The GGUF form of the same scaling lands on the same frequencies.
            let f: Vec<f32> = floats(f).iter().map(|&x| x as f32).collect();
            let s = RopeScaling::from_freq_factors(&f, cfg.head_dim).unwrap();
            let (inv, attention) = rope::frequencies(cfg.head_dim, cfg.rope_theta, Some(&s));
            assert_close_rel("rope_freqs", &inv, &floats(&case["inv_freq"]), 3e-7);
            assert_eq!(attention, 1.0);
        }
    }
}

#[test]
fn rope_at_long_positions_matches_the_reference() {
    let g = golden();
    let positions: Vec<usize> = floats(&g["positions"])
        .iter()
        .map(|&p| p as usize)
        .collect();
    for case in g["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let cfg = case_config(case);
        let (inv, attention) =
            rope::frequencies(cfg.head_dim, cfg.rope_theta, cfg.rope_scaling.as_ref());
        let x: Vec<f32> = floats(&case["vector"]).iter().map(|&v| v as f32).collect();
        let d = x.len();
        let h = d / 2;
        let xt = Tensor::from_vec(x.clone(), (1, 1, 1, d), &Device::Cpu).unwrap();
        let golden_inv = floats(&case["inv_freq"]);
        for (&p, want) in positions.iter().zip(case["rotated"].as_array().unwrap()) {
            let want = floats(want);
            // The model's table and candle's rotation (pairs i, i + d/2), as the CPU path runs.
            let (cos, sin) = rope::cos_sin(&inv, attention, p..p + 1);
            let cos = Tensor::from_vec(cos, (1, h), &Device::Cpu).unwrap();
            let sin = Tensor::from_vec(sin, (1, h), &Device::Cpu).unwrap();
            let got = candle_nn::rotary_emb::rope(&xt, &cos, &sin)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            for i in 0..h {
                // f32 angles: the frequency (≤ 3e-7 relative) and the product p·f (2^-24)
                // each round, so the angle is off by up to ~p·f·4e-7, plus cos/sin's own.
                let angle_err = p as f64 * golden_inv[i] * 4e-7 + 1e-6;
                let tol = attention as f64 * (x[i].abs() + x[i + h].abs()) as f64 * angle_err;
                for j in [i, i + h] {
                    assert!(
                        (got[j] as f64 - want[j]).abs() <= tol,
                        "{name} position {p} dim {j}: {} vs golden {} (tolerance {tol:e})",
                        got[j],
                        want[j]
                    );
                }
            }
        }
    }
}

#[test]
fn config_json_scalings_parse_as_transformers_reads_them() {
    let parse = |s: serde_json::Value| ModelConfig::from_hf_json(&hf_config(64, 1e6, &s));
    // Llama 3.1's block.
    let l = parse(
        json!({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
        "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}),
    )
    .unwrap();
    assert_eq!(
        l.rope_scaling,
        Some(RopeScaling::Llama3 {
            factor: 8.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_ctx: 8192
        })
    );
    // Qwen's documented block, with the old `type` key; integers are fine.
    let q = parse(json!({"type": "yarn", "factor": 4, "original_max_position_embeddings": 32768}))
        .unwrap();
    assert_eq!(
        q.rope_scaling,
        Some(RopeScaling::Yarn(Yarn::new(4.0, 32768)))
    );
    // YaRN without original_max_position_embeddings falls back to max_position_embeddings.
    let y = parse(json!({"rope_type": "yarn", "factor": 2.0})).unwrap();
    assert_eq!(
        y.rope_scaling,
        Some(RopeScaling::Yarn(Yarn::new(2.0, 131072)))
    );
    // DeepSeek's temperature form.
    let ds = parse(json!({"rope_type": "yarn", "factor": 40.0, "mscale": 1.0,
        "mscale_all_dim": 0.707, "original_max_position_embeddings": 4096}))
    .unwrap();
    let Some(RopeScaling::Yarn(dy)) = ds.rope_scaling else {
        panic!("yarn")
    };
    let m = |m: f64| 0.1 * m * 40f64.ln() + 1.0;
    assert!((dy.attention.unwrap() - m(1.0) / m(0.707)).abs() < 1e-12);
    assert_eq!(
        parse(json!({"type": "linear", "factor": 2.0}))
            .unwrap()
            .rope_scaling,
        Some(RopeScaling::Linear { factor: 2.0 })
    );
    for none in [json!(null), json!({"rope_type": "default"})] {
        assert_eq!(parse(none).unwrap().rope_scaling, None);
    }
    // transformers v5: `rope_parameters`, with rope_theta inside.
    let v5 = json!({"model_type": "qwen2", "vocab_size": 96, "hidden_size": 128,
        "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
        "max_position_embeddings": 32768,
        "rope_parameters": {"rope_type": "yarn", "rope_theta": 1e6, "factor": 4.0,
            "original_max_position_embeddings": 32768}});
    let v5 = ModelConfig::from_hf_json(&v5.to_string()).unwrap();
    assert_eq!(v5.rope_theta, 1e6);
    assert_eq!(
        v5.rope_scaling,
        Some(RopeScaling::Yarn(Yarn::new(4.0, 32768)))
    );
    assert_eq!(v5.trained_ctx(), 131072);

    // Bad values name their key.
    for (bad, key) in [
        (
            json!({"type": "linear", "factor": 0.0}),
            "rope_scaling.factor",
        ),
        (
            json!({"type": "linear", "factor": -2.0}),
            "rope_scaling.factor",
        ),
        (json!({"type": "linear"}), "rope_scaling.factor"),
        (
            json!({"type": "yarn", "factor": 4.0, "beta_fast": -1}),
            "rope_scaling.beta_fast",
        ),
        (
            json!({"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 0}),
            "rope_scaling.original_max_position_embeddings",
        ),
        (
            json!({"type": "yarn", "factor": "4"}),
            "rope_scaling.factor",
        ),
        (
            json!({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 4.0,
                "high_freq_factor": 1.0, "original_max_position_embeddings": 8192}),
            "rope_scaling.high_freq_factor",
        ),
        (
            json!({"rope_type": "dynamic", "factor": 2.0}),
            "rope_scaling.rope_type",
        ),
    ] {
        let e = parse(bad.clone()).unwrap_err().to_string();
        assert!(e.contains(key), "{bad}: {e}");
        assert!(!e.contains('\n'), "one line: {e}");
    }
}

fn md(entries: &[(&str, Value)]) -> HashMap<String, Value> {
    entries
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

#[test]
fn gguf_scaling_metadata_parses_as_llama_cpp_reads_it() {
    let s = |m: &HashMap<String, Value>| RopeScaling::from_gguf(m, "qwen2", 32768);
    // None written: none; `none`; linear ×1.
    assert_eq!(s(&md(&[])).unwrap(), None);
    let none = md(&[("qwen2.rope.scaling.type", Value::String("none".into()))]);
    assert_eq!(s(&none).unwrap(), None);
    let one = md(&[("qwen2.rope.scaling.factor", Value::F32(1.0))]);
    assert_eq!(s(&one).unwrap(), None);
    // The type defaults to linear; the pre-`scaling.*` key still counts.
    let lin = md(&[("qwen2.rope.scale_linear", Value::F32(2.0))]);
    assert_eq!(s(&lin).unwrap(), Some(RopeScaling::Linear { factor: 2.0 }));
    // Qwen's YaRN as llama.cpp's converter writes it: the temperature is 0.1·ln(4) + 1.
    let yarn = md(&[
        ("qwen2.rope.scaling.type", Value::String("yarn".into())),
        ("qwen2.rope.scaling.factor", Value::F32(4.0)),
        (
            "qwen2.rope.scaling.original_context_length",
            Value::U32(32768),
        ),
    ]);
    let Some(RopeScaling::Yarn(y)) = s(&yarn).unwrap() else {
        panic!("yarn")
    };
    assert_eq!((y.factor, y.original_ctx), (4.0, 32768));
    assert_eq!((y.beta_fast, y.beta_slow, y.truncate), (32.0, 1.0, true));
    assert!((y.attention.unwrap() - (0.1 * 4f64.ln() + 1.0)).abs() < 1e-12);
    // The same frequencies as the config.json form.
    let (a, _) = rope::frequencies(64, 1e6, Some(&RopeScaling::Yarn(y)));
    let (b, _) = rope::frequencies(64, 1e6, Some(&RopeScaling::Yarn(Yarn::new(4.0, 32768))));
    assert_eq!(a, b);
    // attn_factor multiplies the temperature; the betas and the log multiplier are read.
    let mut more = yarn.clone();
    more.insert("qwen2.rope.scaling.attn_factor".into(), Value::F32(0.5));
    more.insert("qwen2.rope.scaling.yarn_beta_fast".into(), Value::F32(16.0));
    more.insert("qwen2.rope.scaling.yarn_beta_slow".into(), Value::F32(2.0));
    let Some(RopeScaling::Yarn(m)) = s(&more).unwrap() else {
        panic!("yarn")
    };
    assert_eq!((m.beta_fast, m.beta_slow), (16.0, 2.0));
    assert!((m.attention.unwrap() - 0.5 * (0.1 * 4f64.ln() + 1.0)).abs() < 1e-7);
    // Without original_context_length YaRN starts from the file's context length.
    let mut short = yarn.clone();
    short.remove("qwen2.rope.scaling.original_context_length");
    let Some(RopeScaling::Yarn(sy)) = s(&short).unwrap() else {
        panic!("yarn")
    };
    assert_eq!(sy.original_ctx, 32768);

    for (key, value) in [
        ("qwen2.rope.scaling.factor", Value::F32(f32::NAN)),
        ("qwen2.rope.scaling.factor", Value::F32(0.0)),
        ("qwen2.rope.scaling.factor", Value::F32(-4.0)),
        ("qwen2.rope.scaling.attn_factor", Value::F32(f32::INFINITY)),
        ("qwen2.rope.scaling.yarn_beta_slow", Value::F32(0.0)),
        ("qwen2.rope.scaling.yarn_ext_factor", Value::F32(0.5)),
        ("qwen2.rope.scaling.type", Value::String("longrope".into())),
        ("qwen2.rope.scaling.original_context_length", Value::U32(0)),
    ] {
        let mut m = yarn.clone();
        m.insert(key.into(), value.clone());
        let e = s(&m).unwrap_err().to_string();
        assert!(e.contains(key), "{key} = {value:?}: {e}");
    }
    // The per-pair divisors are checked too.
    let e = RopeScaling::from_freq_factors(&[1.0, f32::NAN], 4)
        .unwrap_err()
        .to_string();
    assert!(e.contains("rope_freqs.weight[1]"), "{e}");
    let e = RopeScaling::from_freq_factors(&[1.0; 3], 8)
        .unwrap_err()
        .to_string();
    assert!(e.contains("3 entries"), "{e}");
}

/// Prompt-phase logits of `tokens` (one chunk).
fn logits(model: &Model, tokens: &[u32], recipe: &Recipe) -> Tensor {
    let mut cache = model.new_cache();
    model
        .forward(tokens, &mut cache, recipe, Phase::Prefill, Logits::All)
        .unwrap()
        .unwrap()
}

fn prompt(n: usize, vocab: usize) -> Vec<u32> {
    (0..n).map(|i| ((i * 37 + 5) % vocab) as u32).collect()
}

/// Scalings over a short original context, so a tiny model feels them within a few tokens.
fn scalings(factor: f64) -> [RopeScaling; 3] {
    [
        RopeScaling::Linear { factor },
        RopeScaling::Llama3 {
            factor,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_ctx: 32,
        },
        RopeScaling::Yarn(Yarn::new(factor, 32)),
    ]
}

#[test]
fn scaling_changes_the_forward_and_factor_one_is_the_unscaled_model() {
    let cfg = tiny_config(Arch::Qwen2);
    let plain = random_model(&cfg, 3, &Device::Cpu, DType::F32).unwrap();
    let p = prompt(48, cfg.vocab);
    let base = logits(&plain, &p, &Recipe::full());
    for (one, four) in scalings(1.0).into_iter().zip(scalings(4.0)) {
        let mut m = plain.clone();
        m.set_rope_scaling(Some(one));
        let d = common::max_abs_diff(&logits(&m, &p, &Recipe::full()), &base);
        assert!(d <= 1e-5, "{one}: factor 1 moved logits by {d}");
        m.set_rope_scaling(Some(four));
        let d = common::max_abs_diff(&logits(&m, &p, &Recipe::full()), &base);
        assert!(d > 1e-3, "{four}: scaling did not reach the forward ({d})");
    }
    // Setting the scaling on a clone leaves the original's tables alone.
    let d = common::max_abs_diff(&logits(&plain, &p, &Recipe::full()), &base);
    assert_eq!(d, 0.0);
}

#[test]
fn sliding_layers_on_the_original_rope_read_as_the_unscaled_model() {
    let cfg = tiny_config(Arch::Llama);
    let plain = random_model(&cfg, 4, &Device::Cpu, DType::F32).unwrap();
    let mut scaled = plain.clone();
    scaled.set_rope_scaling(Some(RopeScaling::Yarn(Yarn::new(4.0, 32))));
    let p = prompt(40, cfg.vocab);
    // Every layer sliding: under `original` no layer sees the scaling.
    let swa = Recipe {
        window: Some(8),
        sink: 2,
        ..Recipe::full()
    };
    let original = Recipe {
        sliding_rope: RopeChoice::Original,
        ..swa.clone()
    };
    let d = common::max_abs_diff(&logits(&scaled, &p, &original), &logits(&plain, &p, &swa));
    assert!(d <= 1e-6, "original RoPE in sliding layers: {d}");
    let on = Recipe {
        sliding_rope: RopeChoice::Scaled,
        ..swa.clone()
    };
    let d = common::max_abs_diff(&logits(&scaled, &p, &on), &logits(&plain, &p, &swa));
    assert!(
        d > 1e-3,
        "scaled RoPE in sliding layers changed nothing ({d})"
    );
    // Full layers always take the scaled RoPE, whatever the knob.
    let interleaved = Recipe {
        full_layers: LayerSet::Every(2),
        ..original.clone()
    };
    let d = common::max_abs_diff(
        &logits(&scaled, &p, &interleaved),
        &logits(&plain, &p, &interleaved),
    );
    assert!(d > 1e-3, "full layers ignored the scaling ({d})");
    // The knob changes what prefill computes.
    assert!(on.needs_reread(&original));
    assert_eq!(
        on.to_string(),
        "W=8 K=2",
        "scaled is the default, left unsaid"
    );
    assert_eq!(original.to_string(), "W=8 K=2 sliding-rope=original");
}

#[test]
fn chunked_prefill_matches_the_dense_reference_with_scaling_and_either_sliding_rope() {
    for arch in [Arch::Llama, Arch::Qwen2, Arch::Qwen3] {
        let cfg = tiny_config(arch);
        let mut model = random_model(&cfg, 9, &Device::Cpu, DType::F32).unwrap();
        let p = prompt(40, cfg.vocab);
        let kinds: &[RopeScaling] = if arch == Arch::Llama {
            &scalings(4.0)
        } else {
            &scalings(4.0)[2..]
        };
        for &scaling in kinds {
            model.set_rope_scaling(Some(scaling));
            for sliding_rope in [RopeChoice::Scaled, RopeChoice::Original] {
                for fa_decode in [false, true] {
                    let recipe = Recipe {
                        window: Some(5),
                        sink: 3,
                        fa_decode,
                        full_layers: LayerSet::Every(2),
                        sliding_rope,
                        ..Recipe::full()
                    };
                    for chunk in [1, 7, 64, p.len()] {
                        let run = run_engine(&model, &recipe, &p, chunk, 8, true).unwrap();
                        let want = model
                            .forward_reference(&run.tokens, &run.phases, &recipe)
                            .unwrap();
                        let n = run.logits.dim(0).unwrap();
                        let d = common::max_abs_diff(&run.logits, &want.narrow(0, 0, n).unwrap());
                        assert!(
                            d <= 1e-4,
                            "{arch} {scaling} {recipe} fa_decode={fa_decode} chunk {chunk}: {d}"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn gguf_rope_freqs_tensor_is_the_llama3_scaling() {
    let mut cfg = common::quant_friendly(Arch::Llama, 96);
    cfg.rope_theta = 10_000.0;
    let llama3 = RopeScaling::Llama3 {
        factor: 8.0,
        low_freq_factor: 1.0,
        high_freq_factor: 4.0,
        original_ctx: 32,
    };
    // llama.cpp's converter: one f32 divisor per pair that the llama3 formula amounts to.
    let (plain, _) = rope::frequencies(cfg.head_dim, cfg.rope_theta, None);
    let (scaled, _) = rope::frequencies(cfg.head_dim, cfg.rope_theta, Some(&llama3));
    let divisors: Vec<f32> = plain.iter().zip(&scaled).map(|(a, b)| a / b).collect();
    assert!(divisors.iter().any(|&d| d > 7.9) && divisors.contains(&1.0));
    let weights = common::random_weights(&cfg);
    let dir = common::temp_dir("rope-freqs");
    let (with, without) = (dir.join("with.gguf"), dir.join("without.gguf"));
    let mut w = weights.clone();
    w.push((
        "rope_freqs.weight".into(),
        Tensor::new(divisors.as_slice(), &Device::Cpu).unwrap(),
    ));
    common::write_gguf(&with, &cfg, &w, GgmlDType::F32, &[]);
    common::write_gguf(&without, &cfg, &weights, GgmlDType::F32, &[]);
    let (a, _) = load_gguf(&with, &Device::Cpu, WeightsMode::F32).unwrap();
    let (mut b, _) = load_gguf(&without, &Device::Cpu, WeightsMode::F32).unwrap();
    assert!(matches!(
        a.config().rope_scaling,
        Some(RopeScaling::Factors(_))
    ));
    assert_eq!(b.config().rope_scaling, None);
    let p = prompt(80, cfg.vocab);
    let unscaled = logits(&b, &p, &Recipe::full());
    b.set_rope_scaling(Some(llama3));
    let from_file = logits(&a, &p, &Recipe::full());
    let d = common::max_abs_diff(&from_file, &logits(&b, &p, &Recipe::full()));
    assert!(d <= 1e-4, "rope_freqs vs llama3 parameters: {d}");
    assert!(common::max_abs_diff(&from_file, &unscaled) > 1e-3);
    // A file's own scaling is kept whatever the context asked for.
    let mut a2 = a.clone();
    a2.use_context(1 << 20, Some(RopeScaling::Yarn(Yarn::new(4.0, 32))));
    assert_eq!(a2.config().rope_scaling, a.config().rope_scaling);

    // YaRN metadata in a GGUF reaches the model too.
    let yarn_md = [
        (
            "llama.rope.scaling.type".to_string(),
            Value::String("yarn".into()),
        ),
        ("llama.rope.scaling.factor".to_string(), Value::F32(4.0)),
        (
            "llama.rope.scaling.original_context_length".to_string(),
            Value::U32(32),
        ),
    ];
    let yarn = dir.join("yarn.gguf");
    common::write_gguf(&yarn, &cfg, &weights, GgmlDType::F32, &yarn_md);
    let (c, _) = load_gguf(&yarn, &Device::Cpu, WeightsMode::F32).unwrap();
    let Some(RopeScaling::Yarn(y)) = c.config().rope_scaling else {
        panic!("yarn from the GGUF")
    };
    assert_eq!((y.factor, y.original_ctx), (4.0, 32));
    // Metadata scaling and a rope_freqs tensor together are refused, naming both.
    let both = dir.join("both.gguf");
    common::write_gguf(&both, &cfg, &w, GgmlDType::F32, &yarn_md);
    let e = load_gguf(&both, &Device::Cpu, WeightsMode::F32)
        .expect_err("refused")
        .to_string();
    assert!(e.contains("rope_freqs.weight") && e.contains("yarn"), "{e}");
}

#[test]
fn context_setting_turns_on_the_preset_scaling_past_the_trained_context() {
    let qwen = hub::preset("qwen2.5-coder-0.5b").unwrap();
    assert_eq!(
        qwen.long_context,
        Some(RopeScaling::Yarn(Yarn::new(4.0, 32768)))
    );
    assert_eq!(
        hub::preset("qwen2.5-coder-1.5b").unwrap().long_context,
        qwen.long_context
    );
    assert_eq!(hub::preset("smollm2-135m").unwrap().long_context, None);

    // The rule on a tiny model whose trained context is short.
    let mut cfg = tiny_config(Arch::Qwen2);
    cfg.ctx = 32;
    let plain = random_model(&cfg, 6, &Device::Cpu, DType::F32).unwrap();
    let long = Some(RopeScaling::Yarn(Yarn::new(4.0, 32)));
    let p = prompt(40, cfg.vocab);
    let base = logits(&plain, &p, &Recipe::full());
    for ctx in [0, 16, 32] {
        let mut m = plain.clone();
        m.use_context(ctx, long);
        assert_eq!(m.config().rope_scaling, None, "ctx {ctx}");
        assert_eq!(
            common::max_abs_diff(&logits(&m, &p, &Recipe::full()), &base),
            0.0
        );
    }
    let mut m = plain.clone();
    m.use_context(128, long);
    assert_eq!(m.config().rope_scaling, long);
    assert!(common::max_abs_diff(&logits(&m, &p, &Recipe::full()), &base) > 1e-3);

    // The warning: past the trained context without scaling, or past what the scaling reaches.
    let smol = hub::preset("smollm2-135m").unwrap().shape;
    let note = smol.context_note(65536).expect("a note");
    assert!(
        note.contains("65536") && note.contains("8192") && !note.contains('\n'),
        "{note}"
    );
    assert_eq!(smol.context_note(8192), None);
    let mut q = qwen.shape;
    assert!(q.context_note(65536).is_some());
    q.rope_scaling = q.scaling_for_context(131072, qwen.long_context);
    assert_eq!(q.context_note(131072), None);
    let note = q.context_note(200_000).expect("past the scaled context");
    assert!(note.contains("131072") && note.contains("yarn"), "{note}");
}

#[test]
fn ctx_past_the_trained_context_warns_in_one_line_in_the_line_chat() {
    // The tiny model is trained for 4096 tokens and has no scaling.
    let model = common::tiny_smollm2_gguf().to_str().unwrap();
    let out = common::swaa(&["--model", model, "--ctx", "65536"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let notes: Vec<&str> = err.lines().filter(|l| l.starts_with("note: ")).collect();
    assert_eq!(notes.len(), 1, "{err}");
    assert!(
        notes[0].contains("65536") && notes[0].contains("4096"),
        "{err}"
    );
    let out = common::swaa(&[
        "--model",
        model,
        "--ctx",
        "4096",
        "--sliding-rope",
        "original",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("note: "), "{err}");
    assert!(
        err.contains("sliding-rope=original"),
        "the recipe line shows the knob away from its default: {err}"
    );
}
