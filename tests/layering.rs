//! The crate's modules form layers: each imports only from layers below it, so there is no
//! import cycle and the engine knows nothing of the front ends. This reads every `crate::…`
//! path in `src/` (comments skipped) and checks it against the table below; a new module
//! must be placed in the table.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Top-level modules by layer, lowest first. A module may import from lower layers only.
const LAYERS: &[&[&str]] = &[
    &["units", "rng", "optim"],
    &["recipe", "document"],
    &["tokenizer", "model"],
    &["sampling", "hub", "book"],
    &["readcache"],
    &["engine"],
    &["config", "bench", "selftest", "swat"],
    &["open"],
    &["eval"],
    &["finetune"],
    &["tui"],
    &["cli", "fuzzing"],
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The top-level module a file of `src/` belongs to (`src/engine/session.rs` → `engine`).
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_string_lossy();
    first.trim_end_matches(".rs").to_string()
}

/// Modules named by `crate::NAME` in `text`, outside `//` comments.
fn imports(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            let after = &rest[i + "crate::".len()..];
            let name: String = after
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                out.insert(name);
            }
            rest = after;
        }
    }
    out
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in files {
        let m = module_of(&src, &f);
        if m == "lib" || m == "main" {
            continue;
        }
        let deps = imports(&std::fs::read_to_string(&f).unwrap());
        g.entry(m.clone())
            .or_default()
            .extend(deps.into_iter().filter(|d| *d != m));
    }
    g
}

fn layer(m: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&m))
}

#[test]
fn every_import_points_down_the_layers() {
    let g = graph();
    let mut wrong = Vec::new();
    for (m, deps) in &g {
        let Some(lm) = layer(m) else {
            wrong.push(format!("module `{m}` is not in tests/layering.rs's LAYERS"));
            continue;
        };
        for d in deps {
            match layer(d) {
                Some(ld) if ld < lm => {}
                Some(_) => wrong.push(format!("`{m}` imports `{d}`, which is not below it")),
                None => wrong.push(format!("`{m}` imports `{d}`, which is not in LAYERS")),
            }
        }
    }
    assert!(wrong.is_empty(), "layering broken:\n{}", wrong.join("\n"));
}

#[test]
fn the_checker_sees_imports_and_skips_comments() {
    let text = "use crate::engine::Event;\n// crate::tui is only mentioned\nlet x = crate::model::f(); // crate::cli\n";
    let found: Vec<String> = imports(text).into_iter().collect();
    assert_eq!(found, ["engine", "model"]);
    // The table knows every module that exists, and the engine sits below its front ends.
    let g = graph();
    for m in ["engine", "tui", "cli", "open", "model"] {
        assert!(g.contains_key(m), "{m} not found in src/");
    }
    assert!(layer("engine") < layer("open") && layer("open") < layer("tui"));
}
