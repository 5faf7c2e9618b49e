//! Shared test helpers: the real smollm2-135m preset, and GGUF files with random weights.
#![allow(dead_code)] // each test binary uses a different subset

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use lopdf::{Object, Stream, dictionary};
use swaa_chat::engine::{Session, SessionOptions};
use swaa_chat::hub;
use swaa_chat::model::{Arch, ModelConfig, WeightsMode, load_gguf};
use swaa_chat::recipe::{Recipe, RecipeDefaults};
use swaa_chat::sampling::SamplingParams;
use swaa_chat::tokenizer::ChatTokenizer;

/// The smollm2-135m GGUF, fetched once (CI fetches it with `models fetch` before the tests).
pub fn smollm2() -> PathBuf {
    let preset = hub::preset("smollm2-135m").expect("preset exists");
    let opts = hub::FetchOptions {
        quiet: true,
        ..Default::default()
    };
    hub::fetch(preset, &opts)
        .unwrap_or_else(|e| panic!("the tests need the smollm2-135m preset: {e}"))
}

/// A tiny random llama (Q8_0) with smollm2's real tokenizer, written once per test binary:
/// engine-level tests run on it in well under a second each.
pub fn tiny_smollm2_gguf() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let md = tokenizer_metadata(&smollm2());
        let mut cfg = quant_friendly(Arch::Llama, 49152);
        cfg.tied_embeddings = true;
        let path = temp_dir("tiny").join("tiny.gguf");
        write_random_gguf(&path, &cfg, GgmlDType::Q8_0, &md);
        path
    })
}

/// A session on the tiny model.
pub fn tiny_session(recipe: Recipe, opts: SessionOptions) -> Session {
    let (model, md) = load_gguf(tiny_smollm2_gguf(), &Device::Cpu, WeightsMode::Auto).unwrap();
    let tok = ChatTokenizer::from_gguf(&md).unwrap();
    Session::new(model, tok, recipe, opts)
}

/// Prefill `chunk` tokens a step, answer with at most `max_new` greedy tokens.
pub fn session_opts(chunk: usize, max_new: usize) -> SessionOptions {
    SessionOptions {
        chunk,
        sampling: SamplingParams {
            max_new_tokens: max_new,
            ..Default::default()
        },
        ..Default::default()
    }
}

/// Tokenizer metadata (`tokenizer.*`) of a GGUF file, to give random models a real vocabulary.
pub fn tokenizer_metadata(gguf: &Path) -> Vec<(String, Value)> {
    let mut f = std::fs::File::open(gguf).unwrap();
    let content = gguf_file::Content::read(&mut f).unwrap();
    let mut md: Vec<(String, Value)> = content
        .metadata
        .into_iter()
        .filter(|(k, _)| k.starts_with("tokenizer."))
        .collect();
    md.sort_by(|a, b| a.0.cmp(&b.0));
    md
}

/// Random weights in the shape of `cfg`, by GGUF tensor name: matrices `[out, in]`, then norm
/// and bias vectors.
pub fn random_weights(cfg: &ModelConfig) -> Vec<(String, Tensor)> {
    let dev = Device::Cpu;
    let (q, kv, h) = (
        cfg.heads * cfg.head_dim,
        cfg.kv_heads * cfg.head_dim,
        cfg.hidden,
    );
    let mut w: Vec<(String, Tensor)> = Vec::new();
    let mut mat = |name: String, out: usize, inp: usize| {
        let s = (3.0 / inp as f64).sqrt() as f32;
        w.push((name, Tensor::rand(-s, s, (out, inp), &dev).unwrap()));
    };
    mat("token_embd.weight".into(), cfg.vocab, h);
    if !cfg.tied_embeddings {
        mat("output.weight".into(), cfg.vocab, h);
    }
    for i in 0..cfg.layers {
        mat(format!("blk.{i}.attn_q.weight"), q, h);
        mat(format!("blk.{i}.attn_k.weight"), kv, h);
        mat(format!("blk.{i}.attn_v.weight"), kv, h);
        mat(format!("blk.{i}.attn_output.weight"), h, q);
        mat(format!("blk.{i}.ffn_gate.weight"), cfg.intermediate, h);
        mat(format!("blk.{i}.ffn_up.weight"), cfg.intermediate, h);
        mat(format!("blk.{i}.ffn_down.weight"), h, cfg.intermediate);
    }
    let mut vec = |name: String, n: usize, center: f32| {
        w.push((
            name,
            (Tensor::rand(-0.1f32, 0.1, n, &dev).unwrap() + center as f64).unwrap(),
        ));
    };
    vec("output_norm.weight".into(), h, 1.0);
    for i in 0..cfg.layers {
        vec(format!("blk.{i}.attn_norm.weight"), h, 1.0);
        vec(format!("blk.{i}.ffn_norm.weight"), h, 1.0);
        if cfg.arch == Arch::Qwen2 {
            vec(format!("blk.{i}.attn_q.bias"), q, 0.0);
            vec(format!("blk.{i}.attn_k.bias"), kv, 0.0);
            vec(format!("blk.{i}.attn_v.bias"), kv, 0.0);
        }
        if cfg.arch == Arch::Qwen3 {
            vec(format!("blk.{i}.attn_q_norm.weight"), cfg.head_dim, 1.0);
            vec(format!("blk.{i}.attn_k_norm.weight"), cfg.head_dim, 1.0);
        }
    }
    w
}

/// Writes `weights` as a GGUF for `cfg`: matrices stored as `dtype`, vectors as F32 (as
/// converters write them).
pub fn write_gguf(
    path: &Path,
    cfg: &ModelConfig,
    weights: &[(String, Tensor)],
    dtype: GgmlDType,
    extra_md: &[(String, Value)],
) {
    let arch = cfg.arch.as_str();
    let mut md: Vec<(String, Value)> = vec![
        ("general.architecture".into(), Value::String(arch.into())),
        (format!("{arch}.block_count"), Value::U32(cfg.layers as u32)),
        (format!("{arch}.context_length"), Value::U32(cfg.ctx as u32)),
        (
            format!("{arch}.embedding_length"),
            Value::U32(cfg.hidden as u32),
        ),
        (
            format!("{arch}.feed_forward_length"),
            Value::U32(cfg.intermediate as u32),
        ),
        (
            format!("{arch}.attention.head_count"),
            Value::U32(cfg.heads as u32),
        ),
        (
            format!("{arch}.attention.head_count_kv"),
            Value::U32(cfg.kv_heads as u32),
        ),
        (
            format!("{arch}.attention.key_length"),
            Value::U32(cfg.head_dim as u32),
        ),
        (
            format!("{arch}.attention.layer_norm_rms_epsilon"),
            Value::F32(cfg.rms_eps as f32),
        ),
        (
            format!("{arch}.rope.freq_base"),
            Value::F32(cfg.rope_theta as f32),
        ),
        (
            format!("{arch}.rope.dimension_count"),
            Value::U32(cfg.head_dim as u32),
        ),
        (format!("{arch}.vocab_size"), Value::U32(cfg.vocab as u32)),
    ];
    md.extend(extra_md.iter().cloned());
    let tensors: Vec<(String, QTensor)> = weights
        .iter()
        .map(|(n, t)| {
            (
                n.clone(),
                QTensor::quantize(t, if t.rank() == 2 { dtype } else { GgmlDType::F32 }).unwrap(),
            )
        })
        .collect();
    let md_refs: Vec<(&str, &Value)> = md.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let t_refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let mut f = std::fs::File::create(path).unwrap();
    gguf_file::write(&mut f, &md_refs, &t_refs).unwrap();
}

/// Writes a GGUF with fresh random weights in the shape of `cfg`.
pub fn write_random_gguf(
    path: &Path,
    cfg: &ModelConfig,
    dtype: GgmlDType,
    extra_md: &[(String, Value)],
) {
    write_gguf(path, cfg, &random_weights(cfg), dtype, extra_md);
}

/// A small model shape whose dimensions suit every GGML block size (k-quants need 256).
pub fn quant_friendly(arch: Arch, vocab: usize) -> ModelConfig {
    let mut cfg = swaa_chat::selftest::tiny_config(arch);
    cfg.vocab = vocab;
    cfg.hidden = 256;
    cfg.intermediate = 512;
    cfg.heads = 4;
    cfg.kv_heads = 2;
    cfg.head_dim = 64;
    cfg.layers = 2;
    cfg.tied_embeddings = false;
    cfg
}

pub fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("swaa-test-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Largest |x| over all elements (the logit scale a difference is judged against).
pub fn max_abs(t: &Tensor) -> f32 {
    t.abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

pub fn metadata_map(md: Vec<(String, Value)>) -> HashMap<String, Value> {
    md.into_iter().collect()
}

/// Runs the binary offline, with an empty config and its own data dir.
pub fn swaa(args: &[&str]) -> Output {
    swaa_with_stdin(args, b"")
}

pub fn swaa_with_stdin(args: &[&str], stdin: &[u8]) -> Output {
    let data = temp_dir("cli-data");
    let mut child = Command::new(env!("CARGO_BIN_EXE_swaa-chat"))
        .args(args)
        .env("SWAA_CHAT_DATA", &data)
        .env("SWAA_CHAT_CONFIG", data.join("none.toml"))
        // Stored reads of this test process only: what an earlier run stored is not restored.
        .env("SWAA_CHAT_READS", data.join("reads"))
        .env("HF_HUB_OFFLINE", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A command that never reads stdin may have exited already: a broken pipe is fine.
    let _ = child.stdin.take().unwrap().write_all(stdin);
    child.wait_with_output().unwrap()
}

/// Fails with exactly one line on stderr containing every `needle`.
pub fn fails_clearly(out: &Output, code: i32, needles: &[&str]) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "stderr: {err}");
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert!(err.starts_with("error: "), "{err}");
    for n in needles {
        assert!(err.contains(n), "expected '{n}' in: {err}");
    }
}

/// The recipe defaults the reader tests give their model (smollm2's context scaled down).
pub const DEFAULTS: RecipeDefaults = RecipeDefaults {
    window: 512,
    sink: 16,
};

/// The reader's view of smollm2-135m on the CPU, for app-state and snapshot tests.
pub fn model_info() -> swaa_chat::tui::app::ModelInfo {
    swaa_chat::tui::app::ModelInfo {
        name: "smollm2-135m".into(),
        device: "cpu".into(),
        layers: 30,
        ctx: 8192,
        defaults: DEFAULTS,
        fixed_attention: None,
        context_note: None,
    }
}

/// Deterministic pseudo-random bytes: junk that is no file format, or a payload that
/// compression cannot shrink (so a bug in part order cannot hide).
pub fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut r = swaa_chat::rng::Rng::new(seed);
    (0..len).map(|_| (r.next_u64() >> 56) as u8).collect()
}

/// A PDF whose pages have the given content streams, with Helvetica as /F1 and Times-Roman as
/// /F2; /F2 maps code 150 (octal \226) to the glyph "fi" (the ﬁ ligature) through /Differences.
pub fn pdf(pages: &[&str], title: Option<&str>) -> lopdf::Document {
    let mut doc = lopdf::Document::with_version("1.5");
    let pages_id = doc.new_object_id();
    let helvetica = doc.add_object(dictionary! {
        "Type" => "Font", "Subtype" => "Type1", "BaseFont" => "Helvetica",
        "Encoding" => "WinAnsiEncoding",
    });
    let times = doc.add_object(dictionary! {
        "Type" => "Font", "Subtype" => "Type1", "BaseFont" => "Times-Roman",
        "Encoding" => dictionary! {
            "Type" => "Encoding", "BaseEncoding" => "WinAnsiEncoding",
            "Differences" => vec![150.into(), Object::Name(b"fi".to_vec())],
        },
    });
    let image = doc.add_object(Stream::new(
        dictionary! {
            "Type" => "XObject", "Subtype" => "Image", "Width" => 2, "Height" => 2,
            "ColorSpace" => "DeviceGray", "BitsPerComponent" => 8,
        },
        vec![0, 255, 255, 0],
    ));
    let resources = doc.add_object(dictionary! {
        "Font" => dictionary! { "F1" => helvetica, "F2" => times },
        "XObject" => dictionary! { "Im1" => image },
    });
    let kids: Vec<Object> = pages
        .iter()
        .map(|c| {
            let content = doc.add_object(Stream::new(dictionary! {}, c.as_bytes().to_vec()));
            doc.add_object(dictionary! {
                "Type" => "Page", "Parent" => pages_id, "Contents" => content,
            })
            .into()
        })
        .collect();
    doc.objects.insert(
        pages_id,
        Object::Dictionary(dictionary! {
            "Type" => "Pages", "Count" => kids.len() as i64, "Kids" => kids,
            "Resources" => resources,
            "MediaBox" => vec![0.into(), 0.into(), 595.into(), 842.into()],
        }),
    );
    let catalog = doc.add_object(dictionary! { "Type" => "Catalog", "Pages" => pages_id });
    doc.trailer.set("Root", catalog);
    if let Some(t) = title {
        let info = doc.add_object(dictionary! { "Title" => Object::string_literal(t) });
        doc.trailer.set("Info", info);
    }
    doc
}

pub fn pdf_bytes(doc: &mut lopdf::Document) -> Vec<u8> {
    let mut v = Vec::new();
    doc.save_to(&mut v).unwrap();
    v
}
