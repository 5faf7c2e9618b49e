//! Every recipe against the dense-mask reference, chunking invariance and eviction, on random
//! tiny llama-, qwen2- and qwen3-shaped models (f32, CPU).

mod common;

use candle_core::{DType, Device};
use swaa_chat::model::{Arch, random_model};
use swaa_chat::recipe::{LayerSet, Recipe};
use swaa_chat::selftest::{self, run_engine, run_engine_asked, tiny_config};

fn prompt(n: usize, vocab: usize) -> Vec<u32> {
    (0..n).map(|i| ((i * 31 + 7) % vocab) as u32).collect()
}

#[test]
fn every_recipe_matches_the_dense_reference_for_prefill_and_20_decode_steps() {
    let report = selftest::run(&Device::Cpu, DType::F32, 1e-4, 3).unwrap();
    // 3 architectures × (1 + 36 + 12 with FA over the question) recipes × 4 chunk sizes.
    assert_eq!(report.cases.len(), 3 * 49 * 4);
    assert!(report.failures.is_empty(), "{:#?}", report.failures);
}

#[test]
fn chunked_prefill_equals_unchunked_logits() {
    for arch in [Arch::Llama, Arch::Qwen2, Arch::Qwen3] {
        let cfg = tiny_config(arch);
        let model = random_model(&cfg, 11, &Device::Cpu, DType::F32).unwrap();
        let p = prompt(50, cfg.vocab);
        for recipe in [
            Recipe::full(),
            Recipe {
                window: Some(6),
                sink: 2,
                ..Recipe::full()
            },
            Recipe {
                window: Some(3),
                sink: 0,
                fa_decode: true,
                full_layers: LayerSet::Every(2),
                ..Recipe::full()
            },
        ] {
            let whole = run_engine(&model, &recipe, &p, p.len(), 5, true).unwrap();
            for chunk in [1, 4, 9, 49] {
                let chunked = run_engine(&model, &recipe, &p, chunk, 5, true).unwrap();
                assert_eq!(
                    whole.tokens, chunked.tokens,
                    "{arch} {recipe} chunk {chunk}: generated tokens differ"
                );
                let d = common::max_abs_diff(&whole.logits, &chunked.logits);
                assert!(d <= 1e-4, "{arch} {recipe} chunk {chunk}: {d}");
            }
        }
    }
}

#[test]
fn eviction_changes_nothing_and_bounds_sliding_layers() {
    let cfg = tiny_config(Arch::Llama);
    let model = random_model(&cfg, 5, &Device::Cpu, DType::F32).unwrap();
    let p = prompt(60, cfg.vocab);
    for (window, sink) in [(1, 0), (5, 3), (16, 0), (4, 8)] {
        let recipe = Recipe {
            window: Some(window),
            sink,
            full_layers: LayerSet::Every(2),
            ..Recipe::full()
        };
        for chunk in [1, 7, 64] {
            let on = run_engine(&model, &recipe, &p, chunk, 20, true).unwrap();
            let off = run_engine(&model, &recipe, &p, chunk, 20, false).unwrap();
            assert_eq!(on.tokens, off.tokens);
            let d = common::max_abs_diff(&on.logits, &off.logits);
            assert!(
                d <= 1e-5,
                "W={window} K={sink} chunk {chunk}: eviction changed logits by {d}"
            );
            for l in 0..cfg.layers {
                if recipe.layer_evicts(l) {
                    assert!(
                        on.peak_tokens[l] <= window + sink,
                        "layer {l} held {} > {}",
                        on.peak_tokens[l],
                        window + sink
                    );
                    assert!(
                        off.peak_tokens[l] >= p.len(),
                        "without eviction the layer keeps everything"
                    );
                } else {
                    assert_eq!(
                        on.peak_tokens[l],
                        p.len() + 20,
                        "full layer {l} keeps every token"
                    );
                }
            }
        }
    }
}

/// FA over the question changes the question's logits (and what follows), never the
/// document's; and its sliding layers keep every token, since the question reads them all.
#[test]
fn fa_over_the_question_changes_the_question_not_the_document() {
    let cfg = tiny_config(Arch::Qwen2);
    let model = random_model(&cfg, 8, &Device::Cpu, DType::F32).unwrap();
    let (p, question) = (prompt(48, cfg.vocab), 10);
    let plain = Recipe {
        window: Some(4),
        sink: 2,
        ..Recipe::full()
    };
    let fa_q = Recipe {
        fa_question: true,
        ..plain.clone()
    };
    for chunk in [1, 5, 48] {
        let a = run_engine_asked(&model, &plain, &p, question, chunk, 3, true).unwrap();
        let b = run_engine_asked(&model, &fa_q, &p, question, chunk, 3, true).unwrap();
        let doc = p.len() - question;
        let rows = |r: &selftest::Run, from, n| r.logits.narrow(0, from, n).unwrap();
        let d = common::max_abs_diff(&rows(&a, 0, doc), &rows(&b, 0, doc));
        assert!(
            d <= 1e-5,
            "chunk {chunk}: the document's logits moved by {d}"
        );
        let q = common::max_abs_diff(&rows(&a, doc, question), &rows(&b, doc, question));
        assert!(
            q > 1e-3,
            "chunk {chunk}: the question's logits did not change ({q})"
        );
        for l in 0..cfg.layers {
            assert!(!fa_q.layer_evicts(l));
            assert_eq!(b.peak_tokens[l], p.len() + 3, "layer {l} keeps every token");
        }
    }
    assert!(
        fa_q.needs_reread(&plain),
        "the plain read evicted what the question needs"
    );
    assert!(!plain.needs_reread(&fa_q), "turning it off applies at once");
}

#[test]
fn sliding_cache_stays_constant_however_long_the_input() {
    let cfg = tiny_config(Arch::Qwen2);
    let model = random_model(&cfg, 2, &Device::Cpu, DType::F32).unwrap();
    let recipe = Recipe {
        window: Some(8),
        sink: 2,
        ..Recipe::full()
    };
    let held: Vec<usize> = [40, 200, 800]
        .iter()
        .map(|&n| {
            let run = run_engine(&model, &recipe, &prompt(n, cfg.vocab), 16, 0, true).unwrap();
            run.peak_tokens.iter().copied().max().unwrap()
        })
        .collect();
    assert!(held.iter().all(|&h| h == 10), "held {held:?}");
}
