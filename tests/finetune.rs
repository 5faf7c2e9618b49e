//! SWA-aware fine-tuning on tiny random models (CPU): the training forward against the dense
//! reference, LoRA gradients against finite differences, training, resume, the adapter file,
//! merging, and the refusals.

mod common;

use candle_core::quantized::GgmlDType;
use candle_core::{DType, Device, Tensor};
use swaa_chat::finetune::data::Sample;
use swaa_chat::finetune::{self, FinetuneError, FinetuneOptions, LoraVars, PassOptions, Settings};
use swaa_chat::model::lora::{self, AdapterCard, Lora};
use swaa_chat::model::{Arch, Logits, Model, ModelConfig, WeightsMode, load_gguf, random_model};
use swaa_chat::recipe::{LayerSet, Phase, Preset, Recipe, RecipeDefaults};
use swaa_chat::selftest::tiny_config;

use common::{max_abs, max_abs_diff, temp_dir};

/// A sample of `t` pseudo-random tokens: the question from `q`, the answer from `a`.
fn sample(cfg: &ModelConfig, t: usize, q: usize, a: usize, seed: u64) -> Sample {
    let mut rng = swaa_chat::rng::Rng::new(seed);
    Sample {
        tokens: (0..t).map(|_| rng.below(cfg.vocab) as u32).collect(),
        question_start: q,
        answer_start: a,
        doc: format!("doc-{seed}"),
        question: "q".into(),
        answer: "a".into(),
    }
}

/// Every preset at W = 5, K = 2, each with and without full attention over the question.
fn recipes() -> Vec<Recipe> {
    let d = RecipeDefaults { window: 5, sink: 2 };
    let mut out = Vec::new();
    for p in Preset::ALL {
        let r = Recipe::preset(p, d);
        out.push(Recipe {
            fa_question: true,
            ..r.clone()
        });
        out.push(r);
    }
    out.push(Recipe {
        full_layers: LayerSet::Even,
        ..Recipe::preset(Preset::Swaa, d)
    });
    out
}

/// LoRA with random A and B (B = 0 would hide every effect and gradient of A).
fn random_lora(model: &Model, rank: usize, seed: u64, scale: f64) -> Lora {
    let cfg = model.config();
    let vars = LoraVars::new(
        cfg,
        rank,
        2.0 * rank as f64,
        seed,
        model.dtype(),
        model.device(),
    )
    .unwrap();
    let mut lora = vars.lora().detached();
    for (i, l) in lora.layers.iter_mut().enumerate() {
        for (t, (_, b)) in l.iter_mut().enumerate() {
            let n = b.elem_count();
            let mut rng = swaa_chat::rng::Rng::derive(seed, &[i as u64, t as u64]);
            let v: Vec<f64> = (0..n)
                .map(|_| (rng.below(2001) as f64 / 1000.0 - 1.0) * scale)
                .collect();
            *b = Tensor::from_vec(v, b.dims(), &Device::Cpu)
                .unwrap()
                .to_dtype(model.dtype())
                .unwrap();
        }
    }
    lora
}

#[test]
fn sample_phases_split_at_the_prompts_end() {
    let s = sample(&tiny_config(Arch::Llama), 10, 4, 7, 1);
    let p = s.phases();
    assert_eq!(&p[..4], &[Phase::Prefill; 4]);
    assert_eq!(&p[4..7], &[Phase::Question; 3]);
    assert_eq!(&p[7..], &[Phase::Decode; 3]);
}

/// The training forward's mask is the recipe's rule per phase: with no adapter (and with a
/// fresh one, B = 0) its logits equal the dense-mask reference for every recipe, banded or
/// not, for every query block.
#[test]
fn training_forward_equals_the_dense_reference_for_every_recipe() {
    for arch in [Arch::Llama, Arch::Qwen2, Arch::Qwen3] {
        let cfg = tiny_config(arch);
        let model = random_model(&cfg, 7, &Device::Cpu, DType::F32).unwrap();
        let fresh = LoraVars::new(&cfg, 4, 8.0, 3, DType::F32, &Device::Cpu)
            .unwrap()
            .lora();
        let s = sample(&cfg, 23, 13, 18, 2);
        for recipe in recipes() {
            let reference = model
                .forward_reference(&s.tokens, &s.phases(), &recipe)
                .unwrap();
            let scale = max_abs(&reference);
            for (block, banded) in [(3, true), (7, true), (64, true), (5, false)] {
                let pass = model
                    .train_pass(&s.phases(), &recipe, block, banded)
                    .unwrap();
                for lora in [None, Some(&fresh)] {
                    let got = model.train_forward(&s.tokens, &pass, lora).unwrap();
                    let d = max_abs_diff(&got, &reference);
                    assert!(
                        d <= 1e-4 * scale.max(1.0),
                        "{arch:?} {recipe} block {block} banded {banded} lora {}: {d}",
                        lora.is_some()
                    );
                }
            }
        }
    }
}

/// Gradients of the checkpointed backward pass against central differences of the loss, in
/// f64: with h = 1e-5 the truncation error is O(h²) ≈ 1e-10 and rounding ≈ 1e-16/h ≈ 1e-11,
/// so agreement to 1e-6 relative says the gradient is right, not just close.
#[test]
fn lora_gradients_match_finite_differences() {
    for arch in [Arch::Llama, Arch::Qwen3] {
        let cfg = tiny_config(arch);
        let model = random_model(&cfg, 11, &Device::Cpu, DType::F64).unwrap();
        let lora = random_lora(&model, 2, 5, 0.3);
        let vars = LoraVars::from_lora(&lora).unwrap();
        let s = sample(&cfg, 20, 10, 14, 3);
        let recipe = Recipe::preset(Preset::Swaa, RecipeDefaults { window: 4, sink: 1 });
        let o = PassOptions {
            block: 6,
            ..Default::default()
        };
        let (_, grads) = finetune::loss_and_grads(&model, &vars, &s, &recipe, &o, 0, 1).unwrap();
        // One graph over the whole model gives the same gradients as the checkpointed pass.
        let whole = finetune::sample_loss(&model, Some(&vars.lora()), &s, &recipe, &o)
            .unwrap()
            .backward()
            .unwrap();
        let loss_at = || -> f64 {
            finetune::sample_loss(&model, Some(&vars.lora().detached()), &s, &recipe, &o)
                .unwrap()
                .to_scalar::<f64>()
                .unwrap()
        };
        let h = 1e-5;
        for (name, var) in vars.named_vars().iter().step_by(5) {
            let g = grads[name].flatten_all().unwrap().to_vec1::<f64>().unwrap();
            let gw = whole
                .get(var.as_tensor())
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f64>()
                .unwrap();
            let base = var
                .as_tensor()
                .flatten_all()
                .unwrap()
                .to_vec1::<f64>()
                .unwrap();
            for j in [0, base.len() / 2, base.len() - 1] {
                let set = |x: f64| {
                    let mut v = base.clone();
                    v[j] = x;
                    var.set(&Tensor::from_vec(v, var.dims(), &Device::Cpu).unwrap())
                        .unwrap();
                };
                set(base[j] + h);
                let up = loss_at();
                set(base[j] - h);
                let down = loss_at();
                set(base[j]);
                let fd = (up - down) / (2.0 * h);
                let tol = 1e-6 * fd.abs().max(1e-3);
                assert!(
                    (g[j] - fd).abs() <= tol,
                    "{arch:?} {name}[{j}]: {} vs {fd}",
                    g[j]
                );
                assert!(
                    (g[j] - gw[j]).abs() <= 1e-10,
                    "{name}[{j}]: checkpointed vs whole"
                );
            }
        }
    }
}

fn settings(steps: usize) -> Settings {
    Settings {
        recipe: Recipe::preset(Preset::Swaa, RecipeDefaults { window: 6, sink: 2 }),
        rank: 4,
        alpha: 8.0,
        lr: 1e-2,
        min_lr_ratio: 0.1,
        warmup: 2,
        steps,
        epochs: 0,
        clip: 1.0,
        seed: 9,
        pass: PassOptions {
            block: 8,
            banded: true,
            dropout: 0.1,
        },
        save_every: 0,
    }
}

/// Samples whose answers repeat a fixed pattern, so that there is something to learn.
fn learnable(cfg: &ModelConfig, n: usize) -> Vec<Sample> {
    (0..n)
        .map(|i| {
            let mut s = sample(cfg, 30, 18, 24, 100 + i as u64);
            for (k, t) in s.tokens[24..].iter_mut().enumerate() {
                *t = (5 + 3 * k) as u32;
            }
            s
        })
        .collect()
}

#[test]
fn a_few_fine_tuning_steps_lower_the_loss() {
    let cfg = tiny_config(Arch::Qwen2);
    let model = random_model(&cfg, 21, &Device::Cpu, DType::F32).unwrap();
    let samples = learnable(&cfg, 4);
    let s = settings(24);
    let before = finetune::mean_loss(&model, None, &samples, &s.recipe, &s.pass).unwrap();
    let out = temp_dir("ft-train");
    let (vars, state) = finetune::train(
        &model,
        &samples,
        &s,
        &out,
        false,
        &mut |_| false,
        &mut |_| {},
    )
    .unwrap();
    let after =
        finetune::mean_loss(&model, Some(&vars.lora()), &samples, &s.recipe, &s.pass).unwrap();
    assert_eq!(state.step, 24);
    assert!(after < 0.8 * before, "loss {before} → {after}");
    // A second fresh run into the same folder is refused, not overwritten.
    let again = finetune::train(
        &model,
        &samples,
        &s,
        &out,
        false,
        &mut |_| false,
        &mut |_| {},
    );
    assert!(matches!(again, Err(FinetuneError::Exists(_))));
}

#[test]
fn resume_continues_identically() {
    let cfg = tiny_config(Arch::Llama);
    let model = random_model(&cfg, 22, &Device::Cpu, DType::F32).unwrap();
    let samples = learnable(&cfg, 3);
    let s = settings(7);
    let (straight, s1) = finetune::train(
        &model,
        &samples,
        &s,
        &temp_dir("ft-straight"),
        false,
        &mut |_| false,
        &mut |_| {},
    )
    .unwrap();
    let dir = temp_dir("ft-resumed");
    let (_, half) = finetune::train(
        &model,
        &samples,
        &s,
        &dir,
        false,
        &mut |step| step >= 3,
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(half.step, 3);
    let (resumed, s2) = finetune::train(
        &model,
        &samples,
        &s,
        &dir,
        true,
        &mut |_| false,
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(s1.loss_history, s2.loss_history, "same loss at every step");
    for ((n, a), (_, b)) in straight.named_vars().iter().zip(resumed.named_vars()) {
        assert_eq!(max_abs_diff(a.as_tensor(), b.as_tensor()), 0.0, "{n}");
    }
}

fn card(cfg: &ModelConfig, lora: &Lora, base: Option<&str>) -> AdapterCard {
    AdapterCard {
        base_name: "tiny".into(),
        base_identity: base.map(str::to_string),
        arch: cfg.arch.to_string(),
        layers: cfg.layers,
        hidden: cfg.hidden,
        rank: lora.rank,
        alpha: lora.alpha,
        dropout: 0.0,
        targets: lora::TARGETS.iter().map(|t| t.to_string()).collect(),
        recipe: Recipe::preset(Preset::Swaa, RecipeDefaults { window: 6, sink: 2 }),
        data: vec![("notes.md".into(), "ab12".into())],
        samples: 3,
        tokens: 90,
        steps: 3,
        final_loss: 1.5,
        heldout_loss: Some(1.7),
        heldout_accuracy_base: Some(0.25),
        heldout_accuracy: Some(0.5),
        heldout_questions: 4,
    }
}

#[test]
fn an_adapter_saves_and_loads_and_merged_weights_give_the_unmerged_logits() {
    let cfg = tiny_config(Arch::Qwen2);
    let model = random_model(&cfg, 31, &Device::Cpu, DType::F32).unwrap();
    let lora = random_lora(&model, 3, 4, 0.5);
    let path = temp_dir("ft-adapter").join("adapter.safetensors");
    let c = card(&cfg, &lora, Some("base-sha"));
    lora::save_adapter(&path, &lora, &c).unwrap();
    let (back, back_card) = lora::load_adapter(&path, &Device::Cpu).unwrap();
    assert_eq!(back_card, c);
    assert_eq!(lora::read_card(&path).unwrap(), c);
    for ((n, a), (_, b)) in lora.named().iter().zip(back.named()) {
        assert_eq!(max_abs_diff(a, &b), 0.0, "{n}");
    }

    let s = sample(&cfg, 26, 15, 20, 4);
    for recipe in recipes() {
        let pass = model.train_pass(&s.phases(), &recipe, 8, true).unwrap();
        let unmerged = model.train_forward(&s.tokens, &pass, Some(&back)).unwrap();
        let mut merged = model.clone();
        merged.merge_lora(&back).unwrap();
        let reference = merged
            .forward_reference(&s.tokens, &s.phases(), &recipe)
            .unwrap();
        let scale = max_abs(&reference).max(1.0);
        let d = max_abs_diff(&unmerged, &reference);
        assert!(d <= 1e-4 * scale, "{recipe}: merged vs unmerged {d}");
        let base = model
            .forward_reference(&s.tokens, &s.phases(), &recipe)
            .unwrap();
        assert!(
            max_abs_diff(&base, &reference) > 1e-2 * scale,
            "{recipe}: the adapter does something"
        );
        // The inference path (chunked, cache, eviction) runs the merged weights too.
        let mut cache = merged.new_cache();
        let last = merged
            .forward(&s.tokens, &mut cache, &recipe, Phase::Prefill, Logits::Last)
            .unwrap()
            .unwrap();
        let prefill_ref = merged
            .forward_reference(&s.tokens, &[Phase::Prefill; 26], &recipe)
            .unwrap()
            .get(25)
            .unwrap();
        assert!(
            max_abs_diff(&last, &prefill_ref) <= 1e-4 * scale,
            "{recipe}: forward"
        );
    }
}

/// A quantized model gets q/k/v dequantized with the update added: its logits move as the
/// dense model's do (up to the quantized linears' own rounding).
#[test]
fn merging_into_quantized_weights_matches_the_dense_merge() {
    let cfg = common::quant_friendly(Arch::Llama, 512);
    let path = temp_dir("ft-q8").join("q8.gguf");
    common::write_random_gguf(&path, &cfg, GgmlDType::Q8_0, &[]);
    let (mut quant, _) = load_gguf(&path, &Device::Cpu, WeightsMode::Auto).unwrap();
    let (dense, _) = load_gguf(&path, &Device::Cpu, WeightsMode::F32).unwrap();
    let lora = random_lora(&dense, 4, 8, 0.5);
    let mut dense_merged = dense.clone();
    dense_merged.merge_lora(&lora).unwrap();
    quant.merge_lora(&lora).unwrap();
    let tokens: Vec<u32> = (0..40).map(|i| (i * 37 % 512) as u32).collect();
    let phases = vec![Phase::Prefill; 40];
    let recipe = Recipe::preset(Preset::Swaa, RecipeDefaults { window: 8, sink: 2 });
    let logits = |m: &Model| m.forward_reference(&tokens, &phases, &recipe).unwrap();
    let (q, d, base) = (logits(&quant), logits(&dense_merged), logits(&dense));
    let moved = max_abs_diff(&d, &base);
    assert!(moved > 0.1, "the adapter moves the logits ({moved})");
    assert!(
        max_abs_diff(&q, &d) < 0.1 * moved,
        "quantized merge {}",
        max_abs_diff(&q, &d)
    );
}

#[test]
fn adapters_for_other_weights_or_shapes_are_refused_naming_both() {
    let cfg = tiny_config(Arch::Llama);
    let dir = temp_dir("ft-refuse");
    let model = random_model(&cfg, 41, &Device::Cpu, DType::F32).unwrap();
    let lora = random_lora(&model, 2, 1, 0.1);
    let other_base = dir.join("other-base.safetensors");
    lora::save_adapter(
        &other_base,
        &lora,
        &card(&cfg, &lora, Some("1111aaaa2222bbbb")),
    )
    .unwrap();
    let mut m = model.clone();
    let e = swaa_chat::open::apply_adapter(
        &mut m,
        other_base.to_str().unwrap(),
        "mine",
        Some("9999cccc"),
    )
    .err()
    .expect("refused")
    .to_string();
    assert!(
        e.contains("trained on tiny") && e.contains("loaded mine"),
        "{e}"
    );
    assert!(e.contains("1111aaaa2222") && e.contains("9999cccc"), "{e}");
    assert!(!e.contains('\n'), "one line: {e}");

    let mut wide_cfg = cfg;
    wide_cfg.hidden = 48;
    let wide = random_model(&wide_cfg, 42, &Device::Cpu, DType::F32).unwrap();
    let wrong = random_lora(&wide, 2, 1, 0.1);
    let wrong_shape = dir.join("wrong-shape.safetensors");
    lora::save_adapter(&wrong_shape, &wrong, &card(&wide_cfg, &wrong, None)).unwrap();
    let e = swaa_chat::open::apply_adapter(&mut m, wrong_shape.to_str().unwrap(), "mine", None)
        .err()
        .expect("refused")
        .to_string();
    assert!(
        e.contains("does not fit the loaded mine") && e.contains("trained on tiny"),
        "{e}"
    );
    assert!(e.contains("[2, 48]") && e.contains("[2, 32]"), "{e}");

    // The one that fits is merged, and names itself after its folder when called adapter.
    let ok = dir.join("swaa-lora");
    std::fs::create_dir_all(&ok).unwrap();
    let file = ok.join("adapter.safetensors");
    lora::save_adapter(&file, &lora, &card(&cfg, &lora, Some("9999cccc"))).unwrap();
    let a =
        swaa_chat::open::apply_adapter(&mut m, file.to_str().unwrap(), "mine", Some("9999cccc"))
            .unwrap();
    assert_eq!(a.name, "swaa-lora");
    let other = Recipe::preset(Preset::Swa, RecipeDefaults { window: 6, sink: 2 });
    let note = a.recipe_note(&other).expect("another recipe is noted");
    assert!(
        note.contains("used anyway") && !note.contains('\n'),
        "{note}"
    );
    assert_eq!(a.recipe_note(&a.card.recipe), None);
}

#[test]
fn a_data_set_without_correct_answers_is_an_error_and_writes_nothing() {
    let dir = temp_dir("ft-none");
    let prose: String = (0..400)
        .map(|i| {
            format!("Paragraph {i} tells of the harbour, the boats and the weather there.\n\n")
        })
        .collect();
    let data = dir.join("prose.md");
    std::fs::write(&data, prose).unwrap();
    let mut session = common::tiny_session(Recipe::full(), common::session_opts(256, 6));
    let out = dir.join("run");
    let e = finetune::run(
        &mut session,
        &FinetuneOptions {
            settings: settings(2),
            data: vec![data.to_string_lossy().into_owned()],
            docs: 2,
            heldout_docs: 1,
            heldout_fraction: 0.2,
            sample_tokens: 300,
            tries: 1,
            out: out.clone(),
            resume: false,
            minutes: None,
            base_name: "tiny".into(),
            base_identity: None,
            progress: false,
        },
    )
    .unwrap_err();
    assert!(
        matches!(e, FinetuneError::NoCorrectAnswers { questions: 5 }),
        "{e}"
    );
    assert!(e.to_string().contains("nothing was written"), "{e}");
    assert!(!out.exists(), "nothing written");
}

#[test]
fn a_missing_adapter_is_one_clear_line_and_models_list_shows_cached_ones() {
    let dir = temp_dir("ft-cli");
    let doc = dir.join("doc.md");
    std::fs::write(&doc, "The keeper is Mara.\n").unwrap();
    let model = common::tiny_smollm2_gguf().to_str().unwrap().to_string();
    let args = ["ask", doc.to_str().unwrap(), "Who?", "--model", &model];
    let out = common::swaa(&[&args[..], &["--adapter", "/nonexistent/a.safetensors"]].concat());
    common::fails_clearly(
        &out,
        1,
        &["no adapter file /nonexistent/a.safetensors", "finetune"],
    );

    let cache = dir.join("cache");
    std::fs::create_dir_all(cache.join("adapters")).unwrap();
    let cfg = tiny_config(Arch::Llama);
    let m = random_model(&cfg, 51, &Device::Cpu, DType::F32).unwrap();
    let lora = random_lora(&m, 2, 1, 0.1);
    let file = cache.join("adapters").join("tiny-swaa.safetensors");
    lora::save_adapter(&file, &lora, &card(&cfg, &lora, None)).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_swaa-chat"))
        .args(["models", "list"])
        .env("SWAA_CHAT_CACHE", &cache)
        .env("SWAA_CHAT_DATA", &dir)
        .env("SWAA_CHAT_CONFIG", dir.join("none.toml"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    let line = text
        .lines()
        .find(|l| l.contains("tiny-swaa"))
        .unwrap_or_else(|| panic!("no adapter line in {text}"));
    assert!(
        line.contains("base tiny") && line.contains("rank 2"),
        "{line}"
    );
}
