//! `eval`: snapshot/restore answers exactly like a fresh read, recipe comparison for the
//! reader, the needle's placement in real tokens, and a CI-sized run on smollm2-135m that
//! writes the table, JSON and plot and shows full attention beating plain SWA.

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::AtomicBool;

use swaa_chat::engine::compare_recipes;
use swaa_chat::engine::{EngineError, Event, Session};
use swaa_chat::eval::tasks;
use swaa_chat::model::Logits;
use swaa_chat::recipe::{Phase, Preset, Recipe, RecipeDefaults};
use swaa_chat::tokenizer::ChatTokenizer;

use common::{session_opts, tiny_session};

const D: RecipeDefaults = RecipeDefaults {
    window: 48,
    sink: 4,
};

fn doc(words: usize) -> String {
    (0..words).map(|i| format!("word{} ", i % 97)).collect()
}

/// Logits of one more token on a copy of the session's cache: equal caches give equal logits.
fn next_logits(s: &Session) -> candle_core::Tensor {
    let mut cache = s.cache().fork().unwrap();
    s.model()
        .forward(&[42], &mut cache, s.recipe(), Phase::Decode, Logits::Last)
        .unwrap()
        .unwrap()
}

#[test]
fn answering_after_restore_equals_answering_after_a_fresh_read() {
    let never = AtomicBool::new(false);
    for name in [Preset::Full, Preset::Swa, Preset::Swaa] {
        let recipe = Recipe::preset(name, D);
        let mut s = tiny_session(recipe.clone(), session_opts(32, 10));
        s.load_document("t", &doc(300));
        s.read(&mut |_| {}, &never).unwrap();
        let read_to = s.cache().next_pos();
        let snap = s.snapshot().unwrap();
        s.ask("What came first?", &mut |_| {}, &never).unwrap();
        s.restore(&snap).unwrap();
        let mut first_progress = None;
        let restored = s
            .ask(
                "And what came last?",
                &mut |e| {
                    if let Event::Progress { done, .. } = e {
                        first_progress.get_or_insert(done);
                    }
                },
                &never,
            )
            .unwrap();
        assert!(
            first_progress.unwrap() > read_to,
            "{name}: the question is prefilled after the restored document, not re-read"
        );

        let mut fresh = tiny_session(recipe, session_opts(32, 10));
        fresh.load_document("t", &doc(300));
        let answer = fresh
            .ask("And what came last?", &mut |_| {}, &never)
            .unwrap();
        assert_eq!(restored.text, answer.text, "{name}");
        assert_eq!(
            restored.stats.generated_tokens,
            answer.stats.generated_tokens
        );
        assert_eq!(
            restored.stats.cache.tokens_per_layer, answer.stats.cache.tokens_per_layer,
            "{name}: same cache shape"
        );
        let diff = common::max_abs_diff(&next_logits(&s), &next_logits(&fresh));
        assert_eq!(diff, 0.0, "{name}: identical logits after restore");
        assert_eq!(
            s.history().len(),
            1,
            "the restored conversation has one turn"
        );
    }
}

#[test]
fn compare_recipes_answers_like_fresh_sessions_and_leaves_the_session_as_it_was() {
    let never = AtomicBool::new(false);
    let swaa = Recipe::preset(Preset::Swaa, D);
    let mut s = tiny_session(swaa.clone(), session_opts(32, 8));
    s.load_document("t", &doc(250));
    s.ask("An earlier question?", &mut |_| {}, &never).unwrap();
    let before = next_logits(&s);
    let recipes: Vec<Recipe> = [Preset::SwaFadec, Preset::Swa, Preset::Full]
        .into_iter()
        .map(|p| Recipe::preset(p, D))
        .collect();
    let out =
        compare_recipes(&mut s, "Which word?", &recipes, &mut |_| {}, &never, &never).unwrap();
    assert_eq!(out.len(), 3);
    for (r, a) in recipes.iter().zip(&out) {
        let mut fresh = tiny_session(r.clone(), session_opts(32, 8));
        fresh.load_document("t", &doc(250));
        let want = fresh.ask("Which word?", &mut |_| {}, &never).unwrap();
        assert_eq!(a.answer.text, want.text, "{}", r.describe());
        assert_eq!(a.answer.recipe, *r);
        assert_eq!(
            a.answer.stats.cache.tokens_per_layer,
            want.stats.cache.tokens_per_layer
        );
    }
    let reread: Vec<bool> = out.iter().map(|a| a.reread).collect();
    // swa after swa-fadec only turns FA decode off: the kept cache serves it.
    assert_eq!(reread, [true, false, true]);
    assert_eq!(out[1].read_seconds, 0.0);
    assert!(out[0].read_seconds > 0.0);
    assert_eq!(*s.recipe(), swaa, "the session's recipe is back");
    assert_eq!(s.history().len(), 1, "and its conversation");
    assert_eq!(
        common::max_abs_diff(&before, &next_logits(&s)),
        0.0,
        "and its cache"
    );
}

fn smollm2_tokenizer() -> ChatTokenizer {
    let md = common::metadata_map(common::tokenizer_metadata(&common::smollm2()));
    ChatTokenizer::from_gguf(&md).unwrap()
}

#[test]
fn needle_lands_at_its_token_depth_in_real_prose() {
    let tok = smollm2_tokenizer();
    let count = |s: &str| tok.encode(s, false).unwrap().len();
    let hay = tasks::Haystack::from_file(Path::new("assets/sample.md")).unwrap();
    for (i, depth) in [0.0, 0.2, 0.5, 0.8, 1.0].into_iter().enumerate() {
        for tokens in [1024, 2048] {
            let d = tasks::needle_doc(&hay, tokens, depth, i, 5, &count);
            let total = count(&d.text);
            assert!(
                total.abs_diff(tokens) * 100 <= tokens * 3,
                "{total} tokens for {tokens}"
            );
            let at = d.text.find("The passkey for").unwrap();
            let token_depth = count(&d.text[..at]) as f64 / total as f64;
            assert!(
                (token_depth - depth).abs() < 0.03,
                "asked for {depth}, got {token_depth} at {tokens} tokens"
            );
            assert_eq!(
                d,
                tasks::needle_doc(&hay, tokens, depth, i, 5, &count),
                "seeded"
            );
        }
    }
}

fn swaa(args: &[&str]) -> Output {
    let data = common::temp_dir("eval-data");
    Command::new(env!("CARGO_BIN_EXE_swaa-chat"))
        .args(args)
        .env("SWAA_CHAT_DATA", &data)
        .env("SWAA_CHAT_CONFIG", data.join("none.toml"))
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .unwrap()
}

#[test]
fn bad_eval_input_fails_with_one_line_before_any_work() {
    let model = common::smollm2().display().to_string();
    let out = common::temp_dir("eval-bad").display().to_string();
    let cases: [(&[&str], &str); 3] = [
        (&["--task", "haystack"], "use needle, qa or a .jsonl"),
        (
            &["--lengths", "16k"],
            "more than the model's context of 8192",
        ),
        (&["--recipes", "full,fast"], "unknown recipe 'fast'"),
    ];
    for (extra, needle) in cases {
        let mut args = vec![
            "eval",
            "--model",
            &model,
            "--out",
            &out,
            "--haystack",
            "assets/sample.md",
        ];
        args.extend_from_slice(extra);
        let o = swaa(&args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{extra:?}");
        assert!(!err.contains("panicked"), "{err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert!(err.contains(needle), "expected '{needle}' in {err}");
    }
    assert!(
        !Path::new(&out).join("results.jsonl").exists(),
        "nothing was evaluated"
    );
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The CI-sized eval: 6 recipes × 2 lengths × 1 needle on the real model (12 reads of 0.5k and
/// 1k tokens: 2–3 minutes on 2 cores). The window is a quarter of the length, so plain SWA
/// cannot see a needle at 50% depth; full attention can.
#[test]
fn ci_sized_needle_eval_writes_table_json_and_plot_and_full_beats_swa() {
    let model = common::smollm2().display().to_string();
    let out = common::temp_dir("eval-ci");
    let out_s = out.display().to_string();
    #[rustfmt::skip]
    let args = [
        "eval", "--model", &model, "--task", "needle", "--lengths", "512,1k", "--samples", "1",
        "--depths", "50", "--haystack", "assets/sample.md", "--out", &out_s, "--seed", "3",
        "--max-tokens", "20",
    ];
    let o = swaa(&args);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for f in [
        "results.jsonl",
        "report.md",
        "report.json",
        "accuracy-vs-time.svg",
    ] {
        assert!(
            stdout.contains(&out.join(f).display().to_string()),
            "{f} printed: {stdout}"
        );
    }
    let recipes = [
        "full",
        "swa",
        "swa-fadec",
        "swa-sink",
        "swa-interleave",
        "swaa",
    ];

    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(
        md.contains("| recipe | W/K | length | n | accuracy | 95% CI |"),
        "{md}"
    );
    let rows: Vec<&str> = md
        .lines()
        .filter(|l| recipes.iter().any(|r| l.starts_with(&format!("| {r} |"))))
        .collect();
    assert_eq!(rows.len(), 12, "{md}");

    let report = json(&out.join("report.json"));
    let rows = report["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 12);
    let row = |recipe: &str, length: u64| {
        rows.iter()
            .find(|r| r["recipe"] == recipe && r["length"] == length)
            .unwrap_or_else(|| panic!("no row {recipe} {length}"))
    };
    for r in rows {
        let (acc, lo, hi) = (
            r["accuracy"].as_f64().unwrap(),
            r["ci_low"].as_f64().unwrap(),
            r["ci_high"].as_f64().unwrap(),
        );
        assert!(lo <= acc && acc <= hi && hi <= 1.0, "{r}");
        assert_eq!(r["samples"], 1);
        assert!(r["mean_prefill_s"].as_f64().unwrap() > 0.0);
        assert!(r["peak_kv_bytes"].as_u64().unwrap() > 0);
    }
    assert_eq!(row("swa", 1024)["recipe_detail"], "W=256");
    assert_eq!(
        row("swa", 512)["recipe_detail"],
        "W=128",
        "W is a quarter of the length"
    );
    let kv = |r: &str| row(r, 1024)["peak_kv_bytes"].as_u64().unwrap();
    assert!(kv("swa") < kv("full"), "plain SWA keeps only its window");
    let acc = |r: &str, l| row(r, l)["accuracy"].as_f64().unwrap();
    assert!(acc("full", 1024) >= acc("swa", 1024), "{md}");
    assert!(
        acc("full", 512) + acc("full", 1024) > 0.0,
        "full attention finds needles: {md}"
    );

    let svg = std::fs::read_to_string(out.join("accuracy-vs-time.svg")).unwrap();
    assert!(svg.starts_with("<svg"), "{}", &svg[..100.min(svg.len())]);
    assert!(svg.matches("<circle").count() >= 12, "a point per row");
    for r in recipes {
        assert!(
            svg.contains(&format!(">{r}<")) || svg.contains(&format!(">\n{r}\n<")),
            "legend names {r}"
        );
    }

    // A second run finds every answer in results.jsonl and recomputes nothing.
    let results = std::fs::read_to_string(out.join("results.jsonl")).unwrap();
    assert_eq!(results.lines().count(), 12);
    let t = std::time::Instant::now();
    let again = swaa(&args);
    assert!(again.status.success());
    assert_eq!(
        std::fs::read_to_string(out.join("results.jsonl")).unwrap(),
        results
    );
    assert_eq!(json(&out.join("report.json"))["rows"], report["rows"]);
    assert!(t.elapsed().as_secs() < 30, "resumed without re-reading");
}

/// `--fa-question` turns full attention over the question on in every sliding recipe that
/// lacks it (swa-fadec and swaa have it), `--fa-question false` off, `--full-layers`
/// replaces the interleave and `--think` turns thinking on; each is reported under its own
/// name, beside the plain rows.
#[test]
fn fa_question_full_layers_and_think_rows_are_named_and_described_apart() {
    let model = common::smollm2().display().to_string();
    let report = |name: &str, extra: &[&str]| {
        let out = common::temp_dir(name);
        let out_s = out.display().to_string();
        #[rustfmt::skip]
        let mut args = vec![
            "eval", "--model", &model, "--task", "needle", "--lengths", "512", "--samples", "1",
            "--haystack", "assets/sample.md", "--out", &out_s, "--max-tokens", "8",
        ];
        args.extend_from_slice(extra);
        let o = swaa(&args);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        std::fs::read_to_string(out.join("report.md")).unwrap()
    };
    let row = |md: &str, name: &str| -> String {
        md.lines()
            .find(|l| l.starts_with(&format!("| {name} |")))
            .unwrap_or_else(|| panic!("no {name} row: {md}"))
            .to_string()
    };
    let md = report(
        "eval-faq",
        &[
            "--recipes",
            "full,swa,swaa",
            "--fa-question",
            "--full-layers",
            "even",
        ],
    );
    assert!(md.lines().any(|l| l.starts_with("| full |")), "{md}");
    assert!(
        row(&md, "swa+fa-q").contains(" fa-q |"),
        "the W/K column says so"
    );
    let r = row(&md, "swaa+layers=even");
    assert!(r.contains("full=even") && r.contains("fa-q"), "{r}");
    let md = report(
        "eval-no-faq",
        &["--recipes", "swaa", "--fa-question", "false"],
    );
    let r = row(&md, "swaa-fa-q");
    let detail = r.split('|').nth(2).unwrap_or_default();
    assert!(detail.contains("fa-dec") && !detail.contains("fa-q"), "{r}");
    // --think: the step-by-step instruction in every recipe, rows of their own.
    let md = report("eval-think", &["--recipes", "full", "--think"]);
    let r = row(&md, "full+think");
    assert!(
        r.split('|').nth(2).unwrap_or_default().contains("think"),
        "{r}"
    );
}

#[test]
fn a_skipped_recipe_ends_alone_and_a_cancel_ends_the_comparison() {
    let swaa = Recipe::preset(Preset::Swaa, D);
    let recipes: Vec<Recipe> = [Preset::SwaFadec, Preset::Full]
        .into_iter()
        .map(|p| Recipe::preset(p, D))
        .collect();
    // A skip that is already set stops the first recipe in its read; the second answers.
    let mut s = tiny_session(swaa.clone(), session_opts(32, 8));
    s.load_document("t", &doc(250));
    let (cancel, skip) = (AtomicBool::new(true), AtomicBool::new(true));
    let mut rows = Vec::new();
    let out = compare_recipes(
        &mut s,
        "Which word?",
        &recipes,
        &mut |e| {
            if let Event::CompareRow { index, answer } = e {
                rows.push((index, answer.answer.cancelled));
            }
        },
        &cancel,
        &skip,
    )
    .unwrap();
    assert!(out[0].answer.cancelled && out[0].answer.text.is_empty());
    assert!(!out[1].answer.cancelled && !out[1].answer.text.is_empty());
    assert_eq!(
        rows,
        [(0, true), (1, false)],
        "each row is reported as it ends"
    );
    // A cancel without a skip ends it all, and the session is put back.
    let cancel = AtomicBool::new(true);
    let never = AtomicBool::new(false);
    let err = compare_recipes(
        &mut s,
        "Which word?",
        &recipes,
        &mut |_| {},
        &cancel,
        &never,
    )
    .unwrap_err();
    assert!(matches!(err, EngineError::Cancelled), "{err}");
    assert_eq!(*s.recipe(), swaa);
}
