//! `--full-layers auto`: the calibration read that scores layers, its cache, and the recipe
//! it resolves to, on a tiny random model with a real tokenizer.

mod common;

use candle_core::Device;
use swaa_chat::config::Config;
use swaa_chat::engine::calibrate::{Calibration, PROSE};
use swaa_chat::model::{WeightsMode, load_gguf};
use swaa_chat::recipe::{LayerSet, RecipeOverrides, Share};
use swaa_chat::tokenizer::ChatTokenizer;

// One test: it points the cache dir (a process-wide variable) at its own folder.
#[test]
fn calibration_is_deterministic_cached_and_resolves_auto_layers() {
    let cache = common::temp_dir("calibrate-cache");
    // SAFETY: the only test of this binary; nothing else reads the environment meanwhile.
    unsafe { std::env::set_var("SWAA_CHAT_CACHE", &cache) };
    let gguf = common::tiny_smollm2_gguf();
    let (model, md) = load_gguf(gguf, &Device::Cpu, WeightsMode::Auto).unwrap();
    let tok = ChatTokenizer::from_gguf(&md).unwrap();
    let layers = model.config().layers;

    let a = Calibration::run(&model, &tok, PROSE, 32, 4).unwrap();
    let b = Calibration::run(&model, &tok, PROSE, 32, 4).unwrap();
    assert_eq!(a, b, "the same read scores the same");
    assert_eq!(a.scores.len(), layers);
    assert_eq!(a.tokens, 3 * 36, "at most 3 × (sink + W) tokens are read");
    assert!(
        a.scores.iter().all(|s| (0.0..=1.0).contains(s)),
        "{:?}",
        a.scores
    );
    // Layers differ (the choice means something) and some mass is outside the window.
    assert!(a.scores.iter().any(|&s| s != a.scores[0]) && a.scores.iter().all(|&s| s > 0.0));

    let two = a.pick(Share::Count(2));
    let mut by_score: Vec<usize> = (0..layers).collect();
    by_score.sort_by(|&x, &y| a.scores[y].total_cmp(&a.scores[x]));
    let mut top: Vec<usize> = by_score[..2].to_vec();
    top.sort_unstable();
    assert_eq!(two, top, "the highest-scoring layers, in layer order");
    assert_eq!(a.pick(Share::OneIn(2)).len(), layers.div_ceil(2));

    let short = Calibration::run(&model, &tok, "Too short.", 32, 4).unwrap_err();
    assert!(short.to_string().contains("--window"), "{short}");

    // Stored once, then read back: a changed file is what the next call returns.
    let id = "tiny-model";
    let first = Calibration::cached(&model, &tok, Some(id), PROSE, 32, 4).unwrap();
    assert_eq!(first, a);
    let file = std::fs::read_dir(cache.join("calibration"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let mut edited = a.clone();
    edited.scores[0] = 0.987;
    std::fs::write(&file, serde_json::to_vec(&edited).unwrap()).unwrap();
    let again = Calibration::cached(&model, &tok, Some(id), PROSE, 32, 4).unwrap();
    // serde_json's float parsing may land one ULP away from what it printed.
    let close = |x: &[f64], y: &[f64]| {
        x.len() == y.len() && x.iter().zip(y).all(|(a, b)| (a - b).abs() < 1e-12)
    };
    assert!(
        close(&again.scores, &edited.scores)
            && (again.window, again.sink, again.tokens)
                == (edited.window, edited.sink, edited.tokens),
        "the cached scores are used: {again:?} vs {edited:?}"
    );
    // A file for another shape (or a corrupt one) is measured again.
    std::fs::write(&file, b"{not json").unwrap();
    let remeasured = Calibration::cached(&model, &tok, Some(id), PROSE, 32, 4).unwrap();
    assert_eq!(remeasured, a);

    // --full-layers auto through the one place models open: a list, never `auto`.
    let cfg = Config {
        model: gguf.display().to_string(),
        recipe: RecipeOverrides {
            window: Some(32),
            sink: Some(4),
            full_layers: Some("auto:1/4".parse().unwrap()),
            ..Default::default()
        },
        ..Config::default()
    };
    let (session, _) =
        swaa_chat::open::open_session(&cfg, &swaa_chat::open::fetch_options()).unwrap();
    assert_eq!(
        session.recipe().full_layers,
        LayerSet::List(a.pick(Share::OneIn(4)))
    );
    for bad in ["auto:0", "auto:1/0", "auto:x"] {
        let e = bad.parse::<LayerSet>().unwrap_err();
        assert!(e.contains("auto:1/4"), "{e}");
    }
    assert_eq!("auto".parse::<LayerSet>().unwrap().to_string(), "auto");
    assert_eq!("even".parse::<LayerSet>().unwrap(), LayerSet::Even);
    assert!(LayerSet::Even.contains(0) && !LayerSet::Even.contains(1));
}
