//! The binary on bad input: each case is one clear line on stderr and a non-zero exit, never a
//! panic. And `ask` on the real smollm2-135m: the full recipe finds a fact stated once.

mod common;

use std::path::Path;
use std::process::Command;

use candle_core::quantized::GgmlDType;
use common::{fails_clearly, swaa};
use swaa_chat::model::Arch;

fn doc_file(dir: &Path) -> String {
    let p = dir.join("doc.md");
    std::fs::write(&p, "# Notes\n\nThe sky was green on Tuesday.\n").unwrap();
    p.display().to_string()
}

#[test]
fn bad_models_are_refused_with_one_clear_line() {
    let dir = common::temp_dir("cli-bad");
    let doc = doc_file(&dir);
    let missing = dir.join("missing.gguf").display().to_string();
    fails_clearly(
        &swaa(&["ask", &doc, "q", "--model", &missing]),
        3,
        &["missing.gguf"],
    );

    let junk = dir.join("junk.gguf");
    std::fs::write(&junk, b"this is not a model at all, just text").unwrap();
    fails_clearly(
        &swaa(&["ask", &doc, "q", "--model", junk.to_str().unwrap()]),
        3,
        &["not a GGUF"],
    );

    let good = dir.join("good.gguf");
    common::write_random_gguf(
        &good,
        &common::quant_friendly(Arch::Llama, 256),
        GgmlDType::Q8_0,
        &[],
    );
    let bytes = std::fs::read(&good).unwrap();
    let cut = dir.join("cut.gguf");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    fails_clearly(
        &swaa(&["ask", &doc, "q", "--model", cut.to_str().unwrap()]),
        3,
        &["truncated or corrupt", "fetch"],
    );

    fails_clearly(
        &swaa(&["ask", &doc, "q", "--model", "no-such-preset"]),
        3,
        &["smollm2-135m"],
    );
}

/// Flags before a subcommand are used by `ask` and `eval` (the later ones win), and refused
/// with a hint by subcommands they do not apply to — never silently ignored.
#[test]
fn flags_before_the_subcommand_apply_or_are_refused() {
    let dir = common::temp_dir("cli-global");
    let doc = doc_file(&dir);
    let missing = dir.join("before.gguf").display().to_string();
    fails_clearly(
        &swaa(&["--model", &missing, "ask", &doc, "q"]),
        3,
        &["before.gguf"],
    );
    let after = dir.join("after.gguf").display().to_string();
    fails_clearly(
        &swaa(&["--model", &missing, "ask", &doc, "q", "--model", &after]),
        3,
        &["after.gguf"],
    );
    fails_clearly(
        &swaa(&["--window", "64", "models", "list"]),
        2,
        &[
            "do not apply to it",
            "after the subcommand",
            "models --help",
        ],
    );
}

#[test]
fn bad_documents_exit_2() {
    let dir = common::temp_dir("cli-docs");
    let empty = dir.join("empty.txt");
    std::fs::write(&empty, "  \n").unwrap();
    fails_clearly(&swaa(&["ask", empty.to_str().unwrap(), "q"]), 2, &["empty"]);
    let bin = dir.join("binary.txt");
    std::fs::write(&bin, [0x7f, 0x45, 0x4c, 0x46, 0x02, 0x01, 0x00, 0x00]).unwrap();
    fails_clearly(
        &swaa(&["ask", bin.to_str().unwrap(), "q"]),
        2,
        &["not a text document"],
    );
    let missing = dir.join("nope.md");
    fails_clearly(
        &swaa(&["ask", missing.to_str().unwrap(), "q"]),
        2,
        &["nope.md"],
    );
}

#[test]
fn cuda_without_a_cuda_build_and_context_overflow_say_what_to_do() {
    let dir = common::temp_dir("cli-cuda");
    let doc = doc_file(&dir);
    let model = common::smollm2();
    let m = model.to_str().unwrap();
    if !candle_core::utils::cuda_is_available() {
        fails_clearly(
            &swaa(&["ask", &doc, "q", "--model", m, "--device", "cuda"]),
            1,
            &["--features cuda"],
        );
    }
    let long = dir.join("long.md");
    std::fs::write(&long, "word ".repeat(3000)).unwrap();
    fails_clearly(
        &swaa(&[
            "ask",
            long.to_str().unwrap(),
            "q",
            "--model",
            m,
            "--ctx",
            "1024",
            "--focus",
            "off",
        ]),
        1,
        &["context", "truncate"],
    );
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "chunk = \"big\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_swaa-chat"))
        .args(["--print-config"])
        .env("SWAA_CHAT_CONFIG", &bad)
        .env("SWAA_CHAT_DATA", &dir)
        .output()
        .unwrap();
    fails_clearly(&out, 2, &["bad.toml:1:9"]);
}

#[test]
fn smollm2_full_recipe_answers_a_fact_stated_once() {
    let model = common::smollm2();
    let m = model.to_str().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let doc = root.join("tests/fixtures/fact_doc.md");
    let qa: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("tests/fixtures/fact_doc.json")).unwrap(),
    )
    .unwrap();
    let question = qa["question"].as_str().unwrap();
    let accept: Vec<String> = qa["accept"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_lowercase())
        .collect();
    let mut answers = Vec::new();
    for recipe in swaa_chat::recipe::Preset::ALL.map(|p| p.name()) {
        let out = swaa(&[
            "ask",
            doc.to_str().unwrap(),
            question,
            "--model",
            m,
            "--recipe",
            recipe,
            "--json",
            "--max-tokens",
            "40",
        ]);
        assert!(
            out.status.success(),
            "{recipe}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let answer = v["answer"].as_str().unwrap().to_string();
        let prompt_tokens = v["stats"]["prompt_tokens"].as_u64().unwrap();
        println!("{recipe:>15}: {answer:?} ({prompt_tokens} prompt tokens)");
        answers.push((recipe, answer, prompt_tokens));
    }
    let (_, full, n) = &answers[0];
    assert!(
        (1200..2500).contains(n),
        "the fixture is about 1,500 tokens: {n}"
    );
    assert!(
        accept.iter().any(|a| full.to_lowercase().contains(a)),
        "full recipe answered {full:?}, expected one of {accept:?}"
    );
}

#[test]
fn bench_reports_every_recipe_and_length_and_models_list_shows_presets() {
    let out = swaa(&[
        "bench",
        "--random-weights",
        "--preset",
        "smollm2-135m",
        "--tokens",
        "96,192",
        "--recipes",
        "full,swa,swaa",
        "--window",
        "32",
        "--sink",
        "4",
        "--decode",
        "3",
        "--chunk",
        "64",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rows.len(), 6);
    for r in &rows {
        assert!(
            r["prefill_tok_s"].as_f64().unwrap() > 0.0 && r["decode_tok_s"].as_f64().unwrap() > 0.0,
            "{r}"
        );
        assert!(r["prefill_tflops"].as_f64().unwrap() > 0.0);
    }
    // SWA without FA decode keeps sink + W per layer: its cache does not grow with length.
    let kv = |recipe: &str, n: u64| {
        rows.iter()
            .find(|r| r["recipe"] == recipe && r["tokens"] == n)
            .unwrap()["kv_bytes_held"]
            .as_u64()
            .unwrap()
    };
    assert_eq!(kv("swa", 96), kv("swa", 192));
    assert!(kv("full", 192) > kv("full", 96));

    let out = swaa(&["models", "list"]);
    let text = String::from_utf8_lossy(&out.stdout);
    for name in ["smollm2-135m", "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b"] {
        assert!(text.contains(name), "{text}");
    }
}

/// `ask --pages` on a multi-page PDF reads only those pages and says so; a range outside the
/// book names the book's range; a book longer than the context gets the flags that read it.
#[test]
fn ask_reads_a_page_range_and_says_which() {
    let dir = common::temp_dir("cli-pages");
    let page = |text: &str| format!("BT /F1 12 Tf 72 760 Td ({text}) Tj ET");
    let filler = page("The harbour was quiet and the gulls slept on the pier all day long.");
    let fact = page("The lighthouse keeper is named Orla Venn.");
    let pages = [filler.as_str(), fact.as_str(), filler.as_str()];
    let pdf = dir.join("book.pdf");
    std::fs::write(
        &pdf,
        common::pdf_bytes(&mut common::pdf(&pages, Some("Harbour"))),
    )
    .unwrap();
    let model = common::smollm2();
    let (m, p) = (model.to_str().unwrap(), pdf.to_str().unwrap());
    let out = swaa(&[
        "ask",
        p,
        // Asked for the name: "Who is…" drew a description from the 135M model under the f32
        // reference weights (and so under the int8 tiles that track them).
        "What is the name of the lighthouse keeper?",
        "--pages",
        "2",
        "--model",
        m,
        "--recipe",
        "full",
        "--json",
        "--max-tokens",
        "24",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["read"], "page 2 of 3");
    let answer = json["answer"].as_str().unwrap();
    assert!(answer.contains("Orla"), "{answer}");
    // Page 2 alone is a fraction of the whole book's prompt.
    let whole = swaa(&[
        "ask",
        p,
        "Who?",
        "--model",
        m,
        "--json",
        "--max-tokens",
        "1",
    ]);
    let whole: serde_json::Value = serde_json::from_slice(&whole.stdout).unwrap();
    assert_eq!(whole["read"], "the whole document");
    let tokens = |j: &serde_json::Value| j["stats"]["prompt_tokens"].as_u64().unwrap();
    assert!(
        tokens(&json) < tokens(&whole),
        "{} vs {}",
        tokens(&json),
        tokens(&whole)
    );

    // --sections is the same flag (chapters of an EPUB read more naturally so).
    fails_clearly(
        &swaa(&["ask", p, "q", "--sections", "5-9", "--model", m]),
        2,
        &["book.pdf", "pages 5-9", "pages 1–3"],
    );
    fails_clearly(
        &swaa(&["ask", p, "q", "--pages", "3-1", "--model", m]),
        2,
        &["--pages", "must not be after"],
    );
    let long: Vec<String> = (0..40)
        .map(|i| {
            page(&format!(
                "Page {i} of filler text about the quiet harbour and its gulls, long enough."
            ))
        })
        .collect();
    let long: Vec<&str> = long.iter().map(String::as_str).collect();
    let big = dir.join("big.pdf");
    std::fs::write(&big, common::pdf_bytes(&mut common::pdf(&long, None))).unwrap();
    fails_clearly(
        &swaa(&[
            "ask",
            big.to_str().unwrap(),
            "q",
            "--model",
            m,
            "--ctx",
            "600",
            "--max-tokens",
            "8",
            "--focus",
            "off",
        ]),
        1,
        &["big.pdf", "--pages 1-", "of 40", "truncate-tail", "--ctx"],
    );
    // In book mode (the default) the same book is answered from the pages the question
    // selects, and the answer says which pages it read and cites some of them.
    let out = swaa(&[
        "ask",
        big.to_str().unwrap(),
        "What is on page 27?",
        "--model",
        m,
        "--ctx",
        "600",
        "--max-tokens",
        "8",
        "--json",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let read = j["read"].as_str().unwrap();
    assert!(
        read.starts_with("pages ") && read.ends_with("of 40"),
        "{read}"
    );
    let cited: Vec<u64> = j["evidence"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["page"].as_u64().unwrap())
        .collect();
    assert!(!cited.is_empty(), "{j}");
    assert!(j["stats"]["prompt_tokens"].as_u64().unwrap() <= 600);
}

/// Out-of-range recipe and sampling values are refused with the setting and its range, not
/// coerced or left to overflow.
#[test]
fn out_of_range_settings_name_the_allowed_range() {
    let dir = common::temp_dir("cli-range");
    let doc = doc_file(&dir);
    let model = common::smollm2();
    let m = model.to_str().unwrap();
    let huge = u64::MAX.to_string();
    // Exit 2: a setting refused, naming its flag; 1: a context the machine cannot hold.
    for (flags, code, needles) in [
        (["--sink", huge.as_str()], 2, ["--sink", "0 to 8192"]),
        (
            ["--full-layers", "1,5,999999"],
            2,
            ["layer 999999", "0 to 29"],
        ),
        (
            ["--max-tokens", huge.as_str()],
            2,
            ["--max-tokens", "1 to 8192"],
        ),
        (["--window", "0"], 2, ["--window", "at least 1"]),
        // A KV cache of ~44 TB: refused before reading, with the largest context that fits.
        (["--ctx", "1000000000"], 1, ["free on the cpu", "use --ctx"]),
    ] {
        let mut args = vec!["ask", doc.as_str(), "q", "--model", m];
        args.extend(flags);
        fails_clearly(&swaa(&args), code, &needles);
    }
    // The context named opens (half of it: tests running beside this one change what is free).
    let out = swaa(&["ask", &doc, "q", "--model", m, "--ctx", "1000000000"]);
    let err = String::from_utf8_lossy(&out.stderr);
    let largest: usize = err
        .split("use --ctx ")
        .nth(1)
        .and_then(|r| r.split(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("{err}"));
    let half = (largest / 2).to_string();
    let out = swaa(&[
        "ask",
        &doc,
        "q",
        "--model",
        m,
        "--ctx",
        &half,
        "--max-tokens",
        "1",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `--threads` works before or after a subcommand, lands in the merged config, and a count
/// past the limit is one clear line; an answer on one thread is the answer on all cores.
#[test]
fn threads_flag_is_global_and_checked() {
    let out = swaa(&["--threads", "3", "--print-config"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("threads = 3"),
        "{out:?}"
    );
    fails_clearly(
        &swaa(&["--print-config", "--threads", "99999"]),
        1,
        &["--threads 99999", "at most"],
    );
    let dir = common::temp_dir("cli-threads");
    let doc = doc_file(&dir);
    let model = common::smollm2();
    let m = model.to_str().unwrap();
    let answer = |threads: &str| {
        let out = swaa(&[
            "ask",
            &doc,
            "What is this?",
            "--model",
            m,
            "--max-tokens",
            "8",
            "--json",
            "--threads",
            threads,
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["answer"].as_str().unwrap().to_string()
    };
    assert_eq!(answer("1"), answer("0"));
}

/// Escape sequences in a document, an HTML entity, a title or a file name never reach the
/// terminal raw: `extract` and error messages show them as spaces (`--json` escapes them).
#[test]
fn escape_sequences_from_files_never_reach_the_terminal() {
    let dir = common::temp_dir("cli-escapes");
    let txt = dir.join("evil.txt");
    // A few escapes in a page of prose (a text that is mostly controls is binary data).
    let prose = "The harbour was quiet and the gulls slept on the pier. ".repeat(20);
    let evil = format!("Before\x1b[2J\x1b]0;pwned\x07 after\u{9b}31m.\r\n{prose}\n");
    std::fs::write(&txt, evil).unwrap();
    let html = dir.join("evil.html");
    std::fs::write(
        &html,
        "<html><head><title>T&#27;[31mitle</title></head><body><p>x&#27;[5m y</p></body></html>",
    )
    .unwrap();
    for f in [&txt, &html] {
        let out = swaa(&["extract", f.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(
            !text.chars().any(|c| c.is_control() && c != '\n'),
            "{f:?}: {text:?}"
        );
    }
    let json = swaa(&["extract", txt.to_str().unwrap(), "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert!(v["text"].as_str().unwrap().contains("Before"));
    // A file name with an escape in it, in the one-line error.
    let name = dir.join("gone\x1b[31m.md");
    let out = swaa(&["ask", name.to_str().unwrap(), "q"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains('\x1b'), "{err:?}");
    fails_clearly(&out, 2, &["gone"]);
}

/// The binary with the stored reads in `reads` (so parallel tests do not see each other's).
fn swaa_reads(args: &[&str], reads: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_swaa-chat"))
        .args(args)
        .env("SWAA_CHAT_DATA", reads.join("data"))
        .env("SWAA_CHAT_CONFIG", reads.join("none.toml"))
        .env("SWAA_CHAT_READS", reads)
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn a_reopened_book_is_restored_and_cache_list_and_clear_manage_it() {
    let dir = common::temp_dir("cli-reads");
    let reads = dir.join("reads");
    let _ = std::fs::remove_dir_all(&reads);
    let doc = doc_file(&dir);
    let m = common::tiny_smollm2_gguf().to_str().unwrap();
    let ask = |q: &str| swaa_reads(&["ask", &doc, q, "--model", m, "--max-tokens", "4"], &reads);
    let first = ask("What colour?");
    assert!(first.status.success(), "{}", text(&first.stderr));
    assert!(!text(&first.stderr).contains("restored"));
    let second = ask("What colour?");
    let err = text(&second.stderr);
    assert!(second.status.success(), "{err}");
    assert!(
        err.lines()
            .any(|l| l.starts_with("restored ") && l.contains("tokens from cache")),
        "{err}"
    );
    assert_eq!(text(&first.stdout), text(&second.stdout), "the same answer");

    let list = text(&swaa_reads(&["cache", "list"], &reads).stdout);
    assert!(list.starts_with("1 stored reads in "), "{list}");
    assert!(list.contains("Notes · tiny · "), "title and model: {list}");
    assert!(list.contains(" MiB "), "size per entry: {list}");
    let cleared = text(&swaa_reads(&["cache", "clear"], &reads).stdout);
    assert!(cleared.starts_with("removed 1 "), "{cleared}");
    let list = text(&swaa_reads(&["cache", "list"], &reads).stdout);
    assert!(list.starts_with("0 stored reads"), "{list}");
}

#[test]
fn smollm2_answers_the_same_from_a_restored_read() {
    let model = common::smollm2();
    let m = model.to_str().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let doc = root.join("tests/fixtures/fact_doc.md");
    let reads = common::temp_dir("cli-smollm2-reads").join("reads");
    let _ = std::fs::remove_dir_all(&reads);
    let run = || {
        let args = [
            "ask",
            doc.to_str().unwrap(),
            "What is the passkey?",
            "--model",
            m,
            "--recipe",
            "swaa",
            "--max-tokens",
            "24",
        ];
        let out = swaa_reads(&args, &reads);
        assert!(out.status.success(), "{}", text(&out.stderr));
        out
    };
    let (first, second) = (run(), run());
    assert!(!text(&first.stderr).contains("restored"));
    assert!(
        text(&second.stderr).contains("tokens from cache"),
        "{}",
        text(&second.stderr)
    );
    assert_eq!(text(&first.stdout), text(&second.stdout));
}
