//! SWAT: the attention rule against a dense reference written from the formula (every slope
//! layout, the paper's Eq. 4 included), autograd against finite differences, the rolling cache
//! against recomputation, per-head statistics against their closed form, a CI-sized training
//! run that learns, resumes to the identical next loss and generates, and a CI-sized ablation
//! comparison that writes its report.

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use candle_core::{DType, Device, Tensor};
use swaa_chat::sampling::SamplingParams;
use swaa_chat::swat::chat::generate;
use swaa_chat::swat::heads::head_stats;
use swaa_chat::swat::model::{AttnRule, attention, rotate};
use swaa_chat::swat::train::{self, Start, TrainSettings};
use swaa_chat::swat::{Activation, Positions, RollingCache, Slopes, SwatConfig, SwatModel};

fn config(
    activation: Activation,
    positions: Positions,
    slopes: Slopes,
    window: Option<usize>,
) -> SwatConfig {
    let mut c = SwatConfig::preset("tiny").unwrap();
    c.activation = activation;
    c.positions = positions;
    c.slopes = slopes;
    c.window = window;
    c
}

const LAYOUTS: [Slopes; 4] = [
    Slopes::Unidirectional,
    Slopes::Balanced,
    Slopes::Paper,
    Slopes::PaperAnchored,
];

fn grid() -> Vec<SwatConfig> {
    let mut v = Vec::new();
    for act in [Activation::Sigmoid, Activation::Softmax] {
        for pos in [Positions::Rope, Positions::Alibi, Positions::Alirope] {
            for sl in LAYOUTS {
                for w in [None, Some(1), Some(5)] {
                    v.push(config(act, pos, sl, w));
                }
            }
        }
    }
    // The paper layouts with an uneven head split.
    for sl in [Slopes::Paper, Slopes::PaperAnchored] {
        let mut c = config(Activation::Sigmoid, Positions::Alirope, sl, Some(5));
        c.slope_split = Some([3, 1]);
        v.push(c);
    }
    v
}

/// Slope and constant offset of head `hh` of `h`, written from the formulas (DESIGN.md "SWAT
/// details" and the paper's Eq. 4) rather than taken from the config: ALiBi's magnitudes
/// 2^(−8(h+1)/H), all negative (unidirectional) or odd heads positive (balanced); Eq. 4's
/// −2^(−k) on the first N heads and +2^(−k) on the other P (paper), with each positive head
/// shifted by −b·(S−1) so its bias peaks at 0 at the window's far end (paper-anchored).
fn slope_and_offset(cfg: &SwatConfig, hh: usize, h: usize) -> (f64, f64) {
    if !cfg.uses_alibi() {
        return (0.0, 0.0);
    }
    let alibi = 2f64.powf(-8.0 * (hh as f64 + 1.0) / h as f64);
    let [neg, _] = cfg.slope_split.unwrap_or([h / 2, h - h / 2]);
    let eq4 = if hh < neg {
        -(0.5f64.powi(hh as i32 + 1))
    } else {
        0.5f64.powi((hh - neg) as i32 + 1)
    };
    let span = cfg.window.unwrap_or(cfg.seq_len) as f64;
    match cfg.slopes {
        Slopes::Unidirectional => (-alibi, 0.0),
        Slopes::Balanced if hh % 2 == 1 => (alibi, 0.0),
        Slopes::Balanced => (-alibi, 0.0),
        Slopes::Paper => (eq4, 0.0),
        Slopes::PaperAnchored if eq4 > 0.0 => (eq4, -eq4 * (span - 1.0)),
        Slopes::PaperAnchored => (eq4, 0.0),
    }
}

/// The formula of DESIGN.md "SWAT details", element by element in f64: RoPE ("halves" pairs
/// (x_m, x_{m+d/2}) at angle p·θ^(−2m/d)), the head's slope and offset, β, sigmoid or softmax
/// over the keys `i−W < j ≤ i`.
fn dense_reference(
    cfg: &SwatConfig,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    h: usize,
    t: usize,
) -> Vec<f64> {
    let d = cfg.head_dim();
    let at = |x: &[f32], hh: usize, p: usize| -> Vec<f64> {
        let row: Vec<f64> = x[(hh * t + p) * d..(hh * t + p + 1) * d]
            .iter()
            .map(|&a| a as f64)
            .collect();
        if !cfg.uses_rope() {
            return row;
        }
        let mut out = row.clone();
        for m in 0..d / 2 {
            let a = p as f64 * cfg.rope_theta.powf(-2.0 * m as f64 / d as f64);
            out[m] = row[m] * a.cos() - row[m + d / 2] * a.sin();
            out[m + d / 2] = row[m + d / 2] * a.cos() + row[m] * a.sin();
        }
        out
    };
    let mut out = vec![0f64; h * t * d];
    for hh in 0..h {
        let (slope, offset) = slope_and_offset(cfg, hh, h);
        for i in 0..t {
            let qi = at(q, hh, i);
            let keys: Vec<usize> = (0..=i)
                .filter(|&j| cfg.window.is_none_or(|w| i - j < w))
                .collect();
            let scores: Vec<f64> = keys
                .iter()
                .map(|&j| {
                    let kj = at(k, hh, j);
                    let dot: f64 = qi.iter().zip(&kj).map(|(a, b)| a * b).sum();
                    dot / (d as f64).sqrt() + slope * (i - j) as f64 + offset + cfg.beta()
                })
                .collect();
            let weights: Vec<f64> = match cfg.activation {
                Activation::Sigmoid => scores.iter().map(|s| 1.0 / (1.0 + (-s).exp())).collect(),
                Activation::Softmax => {
                    let m = scores.iter().cloned().fold(f64::MIN, f64::max);
                    let e: Vec<f64> = scores.iter().map(|s| (s - m).exp()).collect();
                    let z: f64 = e.iter().sum();
                    e.iter().map(|x| x / z).collect()
                }
            };
            for (w, &j) in weights.iter().zip(&keys) {
                for c in 0..d {
                    out[(hh * t + i) * d + c] += w * v[(hh * t + j) * d + c] as f64;
                }
            }
        }
    }
    out
}

#[test]
fn swat_attention_with_window_alibi_and_rope_matches_dense_reference_chunked_and_not() {
    let (h, t) = (4, 13);
    let dev = Device::Cpu;
    for cfg in grid() {
        let d = cfg.head_dim();
        let rnd = || Tensor::randn(0f32, 1.0, (1, h, t, d), &dev).unwrap();
        let (q, k, v) = (rnd(), rnd(), rnd());
        let flat = |x: &Tensor| x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let want = dense_reference(&cfg, &flat(&q), &flat(&k), &flat(&v), h, t);
        let (qr, kr) = if cfg.uses_rope() {
            (rotate(&cfg, &q, 0).unwrap(), rotate(&cfg, &k, 0).unwrap())
        } else {
            (q.clone(), k.clone())
        };
        let rule = AttnRule::new(&cfg);
        for block in [1, 4, t] {
            let got = flat(&attention(&qr, &kr, &v, 0, &rule, block).unwrap());
            let err = got
                .iter()
                .zip(&want)
                .map(|(a, b)| (*a as f64 - b).abs())
                .fold(0.0, f64::max);
            assert!(
                err < 1e-4,
                "{} block {block}: max abs diff {err}",
                cfg.summary()
            );
        }
    }
}

#[test]
fn paper_slopes_for_8_and_12_heads_are_eq4_with_a_configurable_split() {
    for heads in [8, 12] {
        let mut c = config(
            Activation::Sigmoid,
            Positions::Alirope,
            Slopes::Paper,
            Some(128),
        );
        (c.heads, c.hidden) = (heads, 16 * heads);
        c.validate().unwrap();
        let half = heads / 2;
        let pow = |k: usize| 2f64.powi(-(k as i32));
        let want: Vec<f64> = (1..=half)
            .map(|k| -pow(k))
            .chain((1..=half).map(pow))
            .collect();
        assert_eq!(c.slopes(), want, "{heads} heads, default split");
        assert!(c.offsets().iter().all(|&o| o == 0.0));
        c.slope_split = Some([half, half]);
        assert_eq!(c.slopes(), want, "{heads} heads, {half}:{half}");
        c.slope_split = Some([heads, 0]);
        assert_eq!(
            c.slopes(),
            (1..=heads).map(|k| -pow(k)).collect::<Vec<_>>(),
            "{heads}:0"
        );
        c.slope_split = Some([2, heads - 2]);
        let s = c.slopes();
        assert_eq!(
            (s[0], s[1], s[2], s[heads - 1]),
            (-0.5, -0.25, 0.5, pow(heads - 2))
        );
        c.slope_split = Some([half, half + 1]);
        let e = c.validate().unwrap_err().to_string();
        assert!(
            e.contains("--slope-split") && e.contains(&format!("{heads} heads")),
            "{e}"
        );

        // Anchored: each positive head's bias b·d + offset rises to exactly 0 at d = W−1.
        c.slope_split = None;
        c.slopes = Slopes::PaperAnchored;
        assert_eq!(c.slopes(), want);
        for (b, o) in c.slopes().into_iter().zip(c.offsets()) {
            let far_end = b * 127.0 + o;
            assert!(if b > 0.0 { far_end == 0.0 } else { o == 0.0 }, "{b} {o}");
        }
    }
    let mut c = config(
        Activation::Sigmoid,
        Positions::Alirope,
        Slopes::Paper,
        Some(128),
    );
    (c.heads, c.hidden) = (12, 192);
    assert!(c.summary().contains("(paper 6:6)"), "{}", c.summary());
}

/// With q = 0 every score is the head's bias, so the statistics have a closed form: the mass
/// is Σ_d σ(b·d + offset + β) over the W distances. Eq. 4's positive slopes saturate σ for
/// most far keys; anchored ones saturate none.
#[test]
fn head_stats_match_their_closed_form_and_count_saturated_keys() {
    let dev = Device::Cpu;
    let w = 32;
    let mut saturated = Vec::new();
    for sl in [Slopes::Paper, Slopes::PaperAnchored] {
        let mut cfg = config(Activation::Sigmoid, Positions::Alirope, sl, Some(w));
        (cfg.layers, cfg.seq_len) = (1, 64);
        let model = SwatModel::new(&cfg, 2, DType::F32, &dev).unwrap();
        for (name, var) in model.named_vars() {
            if name.ends_with("wq.weight") {
                var.set(&var.zeros_like().unwrap()).unwrap();
            }
        }
        let (_, x) = tokens(64, &dev);
        let stats = head_stats(&model, &[x]).unwrap();
        assert_eq!(stats.len(), cfg.heads);
        for (h, s) in stats.iter().enumerate() {
            let (b, o) = slope_and_offset(&cfg, h, cfg.heads);
            let a: Vec<f64> = (0..w)
                .map(|d| 1.0 / (1.0 + (-(b * d as f64 + o + cfg.beta())).exp()))
                .collect();
            let mass: f64 = a.iter().sum();
            let dist = a.iter().enumerate().map(|(d, x)| d as f64 * x).sum::<f64>() / mass;
            let far = a[w / 2..].iter().sum::<f64>() / mass;
            let sat = a.iter().filter(|&&x| x > 0.99).count() as f64;
            let close = |x: f64, y: f64| (x - y).abs() <= 1e-4 * y.abs().max(1.0);
            assert!(
                close(s.mass, mass) && close(s.distance, dist) && close(s.far_share, far),
                "{sl:?} head {h}: {s:?} vs mass {mass} distance {dist} far {far}"
            );
            assert_eq!(
                (s.saturated, s.queries),
                (sat, 64 - w + 1),
                "{sl:?} head {h}"
            );
        }
        saturated.push(stats.iter().map(|s| s.saturated).sum::<f64>());
    }
    // +½ with β = −ln 32 saturates every key at distance 17…31.
    assert_eq!(saturated[0], 15.0, "Eq. 4's +½ saturates: {saturated:?}");
    assert_eq!(saturated[1], 0.0, "anchored slopes saturate nothing");
}

/// Central differences of the loss in f64 against autograd, for a few entries of every tensor.
#[test]
fn gradients_match_finite_differences_on_a_tiny_model() {
    let dev = Device::Cpu;
    for (act, pos, sl) in [
        (Activation::Sigmoid, Positions::Alirope, Slopes::Balanced),
        (Activation::Softmax, Positions::Rope, Slopes::Unidirectional),
    ] {
        let mut cfg = config(act, pos, sl, Some(3));
        (cfg.hidden, cfg.heads, cfg.layers, cfg.intermediate) = (16, 2, 2, 24);
        let model = SwatModel::new(&cfg, 11, DType::F64, &dev).unwrap();
        let ids: Vec<u32> = (0..20).map(|i| (i * 37 % 251) as u32).collect();
        let x = Tensor::from_vec(ids[..18].to_vec(), (2, 9), &dev).unwrap();
        let y = Tensor::from_vec(ids[2..].to_vec(), (2, 9), &dev).unwrap();
        let loss = |m: &SwatModel| m.loss(&x, &y).unwrap().to_scalar::<f64>().unwrap();
        let grads = model.loss(&x, &y).unwrap().backward().unwrap();
        let eps = 1e-5;
        for (name, var) in model.named_vars() {
            let g = grads
                .get(var.as_tensor())
                .unwrap_or_else(|| panic!("no gradient for {name}"));
            let g = g.flatten_all().unwrap().to_vec1::<f64>().unwrap();
            let base = var
                .as_tensor()
                .flatten_all()
                .unwrap()
                .to_vec1::<f64>()
                .unwrap();
            let n = base.len();
            for idx in [0, n / 3, n - 1] {
                let at = |delta: f64| {
                    let mut w = base.clone();
                    w[idx] += delta;
                    var.set(&Tensor::from_vec(w, var.dims(), &dev).unwrap())
                        .unwrap();
                    loss(&model)
                };
                let fd = (at(eps) - at(-eps)) / (2.0 * eps);
                var.set(&Tensor::from_vec(base.clone(), var.dims(), &dev).unwrap())
                    .unwrap();
                let tol = 1e-6 + 1e-4 * fd.abs().max(g[idx].abs());
                assert!(
                    (fd - g[idx]).abs() < tol,
                    "{act:?}/{pos:?} {name}[{idx}]: autograd {} vs finite difference {fd}",
                    g[idx]
                );
            }
        }
    }
}

fn tokens(n: usize, dev: &Device) -> (Vec<u32>, Tensor) {
    let ids: Vec<u32> = (0..n).map(|i| ((i * 7919 + 13) % 256) as u32).collect();
    let t = Tensor::from_vec(ids.clone(), (1, n), dev).unwrap();
    (ids, t)
}

#[test]
fn rolling_cache_matches_recomputation_and_stays_constant() {
    let dev = Device::Cpu;
    let n = 40;
    let (ids, all) = tokens(n, &dev);
    for window in [Some(5), None] {
        let cfg = config(
            Activation::Sigmoid,
            Positions::Alirope,
            Slopes::Balanced,
            window,
        );
        let model = SwatModel::new(&cfg, 3, DType::F32, &dev).unwrap();
        let want = model.forward(&all, None).unwrap();
        for chunk in [1, 3, 7, n] {
            let mut cache = RollingCache::new(&cfg);
            let mut parts = Vec::new();
            let mut sizes = Vec::new();
            for s in (0..n).step_by(chunk) {
                let len = chunk.min(n - s);
                parts.push(
                    model
                        .forward(&all.narrow(1, s, len).unwrap(), Some(&mut cache))
                        .unwrap(),
                );
                sizes.push((cache.position(), cache.tokens(), cache.bytes()));
            }
            let got = Tensor::cat(&parts, 1).unwrap();
            let diff = common::max_abs_diff(&got, &want);
            assert!(diff < 1e-4, "W={window:?} chunk {chunk}: {diff}");
            let (pos, held, _) = *sizes.last().unwrap();
            assert_eq!(pos, n);
            assert_eq!(held, window.map_or(n, |w| w - 1), "keys held");
            if window.is_some() {
                // Once a window's worth of tokens has been read, memory no longer grows.
                let full: Vec<usize> = sizes.iter().filter(|s| s.0 >= 5).map(|s| s.2).collect();
                assert!(full.windows(2).all(|w| w[0] == w[1]), "{sizes:?}");
            }
        }
    }
    // One layer: the output at i depends on tokens i−W+1..=i only, and position terms are
    // relative, so reading just those tokens from position 0 gives the cached result.
    let mut cfg = config(
        Activation::Sigmoid,
        Positions::Alirope,
        Slopes::Balanced,
        Some(6),
    );
    cfg.layers = 1;
    let model = SwatModel::new(&cfg, 5, DType::F32, &dev).unwrap();
    let mut cache = RollingCache::new(&cfg);
    for (i, &tok) in ids.iter().enumerate() {
        let x = Tensor::new(&[tok], &dev).unwrap().unsqueeze(0).unwrap();
        let cached = model
            .forward(&x, Some(&mut cache))
            .unwrap()
            .get(0)
            .unwrap()
            .get(0)
            .unwrap();
        let from = (i + 1).saturating_sub(6);
        let window = all.narrow(1, from, i + 1 - from).unwrap();
        let fresh = model
            .forward(&window, None)
            .unwrap()
            .get(0)
            .unwrap()
            .get(i - from)
            .unwrap();
        let diff = common::max_abs_diff(&cached, &fresh);
        assert!(diff < 1e-4, "position {i}: {diff}");
    }
}

fn repo(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(p)
}

fn ci_settings() -> TrainSettings {
    let mut model = SwatConfig::preset("tiny").unwrap();
    model.window = Some(32);
    model.seq_len = 128;
    TrainSettings {
        model,
        texts: vec![
            repo("assets/sample.md"),
            repo("README.md"),
            repo("NOTES.md"),
        ],
        steps: 300,
        batch: 8,
        lr: 3e-3,
        min_lr_ratio: 0.1,
        warmup: 30,
        weight_decay: 0.1,
        clip: 1.0,
        seed: 7,
        val_fraction: 0.1,
        val_every: 100,
        val_windows: 16,
        checkpoint_every: 0,
    }
}

#[test]
fn tiny_training_run_learns_resumes_exactly_and_generates() {
    let dev = Device::Cpu;
    let root = common::temp_dir("swat-train");
    let never = AtomicBool::new(false);

    // Uninterrupted run.
    let a = root.join("a");
    let mut losses = Vec::new();
    let summary = train::train(
        Start::Fresh(ci_settings()),
        &a,
        &dev,
        None,
        &mut |r| losses.push(r.loss),
        &never,
    )
    .unwrap();
    assert!(summary.finished() && !summary.interrupted);
    let (first, last) = (
        summary.val_history[0].1,
        summary.val_history.last().unwrap().1,
    );
    assert!(
        (first - 256f32.ln()).abs() < 0.3,
        "untrained held-out loss {first}"
    );
    assert!(last < first - 1.5, "held-out loss {first} → {last}");

    // The same run stopped at step 50 (as Ctrl-C does), then resumed for one step.
    let b = root.join("b");
    let stop = AtomicBool::new(false);
    let s = train::train(
        Start::Fresh(ci_settings()),
        &b,
        &dev,
        None,
        &mut |r| stop.store(r.step == 50, Ordering::Relaxed),
        &stop,
    )
    .unwrap();
    assert_eq!((s.step, s.interrupted), (50, true));
    let again = train::train(
        Start::Fresh(ci_settings()),
        &b,
        &dev,
        None,
        &mut |_| {},
        &never,
    );
    assert!(again.unwrap_err().to_string().contains("--resume"));
    let stop = AtomicBool::new(false);
    let mut resumed = None;
    train::train(
        Start::Resume,
        &b,
        &dev,
        None,
        &mut |r| {
            resumed = Some((r.step, r.loss));
            stop.store(true, Ordering::Relaxed);
        },
        &stop,
    )
    .unwrap();
    assert_eq!(resumed, Some((51, losses[50])), "next loss after resume");

    // Generation through the rolling cache: longer than the window, constant KV.
    let model = SwatModel::load(&a, DType::F32, &dev).unwrap();
    let params = SamplingParams {
        max_new_tokens: 200,
        ..Default::default()
    };
    let mut streamed = String::new();
    let (text, stats) = generate(&model, "The model ", &params, &mut |t| streamed += t).unwrap();
    assert_eq!(text, streamed);
    assert_eq!(stats.generated_tokens, 200);
    assert_eq!(stats.kv_tokens, 31);
    assert_eq!(stats.kv_bytes, 2 * 2 * 31 * 64 * 4);
    let letters = text
        .chars()
        .filter(|c| c.is_ascii_alphabetic() || *c == ' ')
        .count();
    assert!(
        letters * 2 > text.chars().count(),
        "not prose-like: {text:?}"
    );

    cli_on_the_trained_model(&a, &root);
    engine_chat_on_the_trained_model(model);
}

/// The reader's path: the engine thread runs a SWAT session. Reading a document far longer
/// than the window keeps W−1 keys per layer, a follow-up adds only its own bytes, and recipe
/// changes are refused with a reason.
fn engine_chat_on_the_trained_model(model: SwatModel) {
    use swaa_chat::engine::{Command, Engine, Event};
    use swaa_chat::recipe::Recipe;
    let session = swaa_chat::swat::chat::SwatSession::new(
        model,
        SamplingParams {
            max_new_tokens: 24,
            ..Default::default()
        },
    );
    let engine = Engine::spawn(Box::new(session));
    let text = "The window slides over the text and the cache stays small. ".repeat(20);
    engine.send(Command::LoadDocument {
        title: "Notes".into(),
        text: text.clone(),
        sections: vec![],
        format: swaa_chat::document::Format::Text,
    });
    let answer = |q: &str| {
        engine.send(Command::Ask { question: q.into() });
        let (mut progress, mut tokens) = (0, String::new());
        loop {
            match engine.events().recv().unwrap() {
                Event::Progress { .. } => progress += 1,
                Event::Token { text } => tokens += &text,
                Event::Done(a) => return (progress, tokens, a),
                Event::Error { message } => panic!("{message}"),
                _ => {}
            }
        }
    };
    let (progress, streamed, first) = answer("What slides?");
    assert!(progress > 1, "reading shows progress");
    assert!(first.text.len() <= 24 && streamed.trim() == first.text);
    let s = &first.stats;
    assert!(s.prompt_tokens > text.len(), "{s:?}");
    assert_eq!(s.cache.tokens_per_layer, vec![31; 2], "W−1 keys per layer");
    assert!(s.recipe.starts_with("swat sigmoid+alirope(balanced) w=32"));
    assert_eq!((s.sliding_layers, s.full_layers, s.sink), (2, 0, 0));

    let (_, _, second) = answer("And what stays small?");
    assert!(second.stats.prompt_tokens > s.prompt_tokens);
    assert!(
        second.stats.prefill_tokens_per_s > 0.0
            && second.stats.cache.tokens_per_layer == vec![31; 2]
    );

    engine.send(Command::SetRecipe(Recipe::full()));
    let refused = loop {
        if let Event::Error { message } = engine.events().recv().unwrap() {
            break message;
        }
    };
    assert!(refused.contains("recipes do not apply"), "{refused}");
}

/// The `swat` commands on the trained checkpoint, and their errors on bad input.
fn cli_on_the_trained_model(model: &Path, root: &Path) {
    let m = model.to_str().unwrap();
    let out = root.join("report");
    let sample = repo("assets/sample.md");
    let r = common::swaa(&[
        "swat",
        "ppl",
        "--model",
        m,
        "--text",
        sample.to_str().unwrap(),
        "--lengths",
        "64,512",
        "--max-seqs",
        "2",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert!(String::from_utf8_lossy(&r.stdout).contains("| a |"));
    let rows: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(out.join("ppl.json")).unwrap()).unwrap();
    assert_eq!(rows.len(), 2);
    for row in &rows {
        let ppl = row["ppl"].as_f64().unwrap();
        assert!(
            ppl > 1.0 && ppl < 20.0,
            "trained byte model perplexity {ppl}"
        );
        assert_eq!(row["cache_tokens"], 31);
    }
    assert!(
        std::fs::read_to_string(out.join("ppl.svg"))
            .unwrap()
            .contains("<svg")
    );

    let r = common::swaa(&[
        "swat",
        "generate",
        "--model",
        m,
        "--prompt",
        "The ",
        "--max-tokens",
        "40",
    ]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert!(!String::from_utf8_lossy(&r.stdout).trim().is_empty());
    assert!(String::from_utf8_lossy(&r.stderr).contains("KV 31 tok/layer"));

    let doc = root.join("doc.md");
    std::fs::write(
        &doc,
        "# Notes\n\nThe window slides over the text, and the cache stays small.\n",
    )
    .unwrap();
    let r = common::swaa(&[
        "ask",
        "--model",
        m,
        doc.to_str().unwrap(),
        "What slides?",
        "--max-tokens",
        "20",
    ]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert!(String::from_utf8_lossy(&r.stderr).contains(", 31 tok/layer"));

    let missing = root.join("missing");
    let r = common::swaa(&[
        "swat",
        "generate",
        "--model",
        missing.to_str().unwrap(),
        "--prompt",
        "x",
    ]);
    common::fails_clearly(&r, 1, &["not a SWAT checkpoint"]);
    let r = common::swaa(&[
        "swat",
        "train",
        "--text",
        sample.to_str().unwrap(),
        "--out",
        m,
    ]);
    common::fails_clearly(&r, 1, &["--resume"]);
}

/// The ablation comparison at CI size: two models first, then the rest (the first two are
/// reused, not retrained), two at a time; the report has every model at 1×, 4× and 16× the
/// training length, the loss curves and the per-head statistics.
#[test]
fn ci_sized_comparison_trains_the_ablation_set_resumes_and_writes_the_report() {
    let root = common::temp_dir("swat-compare");
    let out = root.join("cmp");
    let texts = ["assets/sample.md", "README.md", "NOTES.md"]
        .map(|p| repo(p).display().to_string())
        .join(",");
    let out_s = out.to_str().unwrap().to_string();
    let compare = |extra: &[&str]| {
        let mut args = vec![
            "swat",
            "compare",
            "--text",
            &texts,
            "--preset",
            "tiny",
            "--window",
            "16",
            "--seq-len",
            "64",
            "--steps",
            "6",
            "--batch",
            "2",
            "--val-every",
            "3",
            "--val-windows",
            "2",
            "--max-seqs",
            "1",
            "--jobs",
            "2",
            "--out",
            &out_s,
        ];
        args.extend_from_slice(extra);
        let r = common::swaa(&args);
        assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
        String::from_utf8_lossy(&r.stdout).into_owned()
    };
    let first = compare(&["--variants", "softmax-swa,sigmoid-alirope-paper"]);
    assert!(first.contains("| softmax-swa |"), "{first}");
    let trained_at = |name: &str| {
        std::fs::metadata(out.join(name).join("model.safetensors"))
            .unwrap()
            .modified()
            .unwrap()
    };
    let before = trained_at("sigmoid-alirope-paper");

    let stdout = compare(&[]);
    assert_eq!(
        trained_at("sigmoid-alirope-paper"),
        before,
        "finished models are reused"
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    let models = report["models"].as_array().unwrap();
    let names: Vec<&str> = models.iter().map(|m| m["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        swaa_chat::swat::cmd::VARIANTS.map(|v| v.name).to_vec(),
        "every ablation model, in order"
    );
    for m in models {
        let name = m["name"].as_str().unwrap();
        assert_eq!(m["summary"]["step"], 6, "{name}");
        assert_eq!(m["summary"]["loss_history"].as_array().unwrap().len(), 6);
        assert!(m["summary"]["train_seconds"].as_f64().unwrap() > 0.0);
        assert_eq!(
            m["heads"].as_array().unwrap().len(),
            2 * 4,
            "layers × heads"
        );
        assert!(stdout.contains(&format!("| {name} |")), "{stdout}");
    }
    let arch = |i: usize| models[i]["architecture"].as_str().unwrap();
    assert!(arch(3).contains("alibi(paper 4:0) w=16"), "{}", arch(3));
    assert!(arch(6).contains("alirope(paper 2:2) w=16"), "{}", arch(6));
    assert!(arch(7).contains("(balanced)") && arch(8).contains("(paper-anchored 2:2)"));
    assert!(arch(0).starts_with("softmax+rope full"), "{}", arch(0));
    assert!(arch(1).starts_with("sigmoid+rope full"), "{}", arch(1));
    let ppl = report["ppl"].as_array().unwrap();
    assert_eq!(ppl.len(), 9 * 3);
    for r in ppl {
        let p = r["ppl"].as_f64().unwrap();
        assert!(p.is_finite() && p > 1.0, "{r}");
        assert!([64, 256, 1024].contains(&r["length"].as_u64().unwrap()));
    }
    // The anchored model's positive heads carry their offsets; the paper model's do not.
    let offsets = |i: usize| -> Vec<f64> {
        models[i]["heads"].as_array().unwrap()[..4]
            .iter()
            .map(|h| h["offset"].as_f64().unwrap())
            .collect()
    };
    assert_eq!(offsets(6), vec![0.0; 4]);
    assert_eq!(offsets(8), vec![0.0, 0.0, -7.5, -3.75]);

    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    for needle in [
        "ppl@64 (1×)",
        "ppl@256 (4×)",
        "ppl@1k (16×)",
        "held-out loss",
        "Ranking by mean perplexity",
        "saturated keys/query",
        "loss.svg",
    ] {
        assert!(md.contains(needle), "{needle} in {md}");
    }
    let svg = std::fs::read_to_string(out.join("loss.svg")).unwrap();
    assert!(
        svg.matches("<polyline").count() >= 9,
        "a loss curve per model"
    );
    for name in &names {
        assert!(svg.contains(name), "{name} in the loss legend");
    }
    for f in ["heads.md", "ppl.md", "ppl.svg", "ppl.json"] {
        assert!(out.join(f).is_file(), "{f}");
    }

    // Bad input: one clear line each.
    let r = common::swaa(&[
        "swat",
        "compare",
        "--text",
        &texts,
        "--out",
        &out_s,
        "--variants",
        "nope",
    ]);
    common::fails_clearly(&r, 1, &["--variants", "sigmoid-alirope-paper"]);
    let r = common::swaa(&[
        "swat",
        "train",
        "--text",
        &texts,
        "--slopes",
        "paper",
        "--slope-split",
        "3:3",
        "--out",
        root.join("x").to_str().unwrap(),
    ]);
    common::fails_clearly(&r, 1, &["--slope-split 3:3", "4 heads"]);
    let notes = repo("NOTES.md");
    let heads_out = root.join("heads");
    let paper = out.join("sigmoid-alirope-paper");
    let r = common::swaa(&[
        "swat",
        "heads",
        "--model",
        paper.to_str().unwrap(),
        "--text",
        notes.to_str().unwrap(),
        "--out",
        heads_out.to_str().unwrap(),
    ]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let printed = String::from_utf8_lossy(&r.stdout);
    assert!(
        printed.contains("| sigmoid-alirope-paper | negative | 2 |"),
        "{printed}"
    );
    assert!(
        printed.contains("| sigmoid-alirope-paper | positive | 2 |"),
        "{printed}"
    );
    assert!(heads_out.join("heads.json").is_file() && heads_out.join("heads.md").is_file());
    let r = common::swaa(&[
        "swat",
        "heads",
        "--model",
        &out_s,
        "--text",
        notes.to_str().unwrap(),
    ]);
    common::fails_clearly(&r, 1, &["not a SWAT checkpoint"]);
    std::fs::remove_dir_all(root).ok();
}
