//! Hostile inputs that once took the process down or loaded garbage (issue 16), each pinned
//! in-process; the whole corpus runs through the binary in `scripts/hostile.sh`.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use candle_core::quantized::GgmlDType;
use candle_core::quantized::gguf_file::Value;
use lopdf::{Object, Stream, dictionary};
use swaa_chat::document;
use swaa_chat::model::{Arch, WeightsMode, load_gguf};

fn write(name: &str, bytes: &[u8]) -> PathBuf {
    let path = common::temp_dir("hostile").join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// A one-page PDF whose page draws form /X, and /X draws its text and then itself.
fn self_drawing_form() -> Vec<u8> {
    let mut doc = common::pdf(&["/X Do"], None);
    let page = doc.page_iter().next().unwrap();
    let parent = doc
        .get_dictionary(page)
        .unwrap()
        .get(b"Parent")
        .unwrap()
        .as_reference()
        .unwrap();
    let resources = doc
        .get_dictionary(parent)
        .unwrap()
        .get(b"Resources")
        .unwrap()
        .as_reference()
        .unwrap();
    let form = doc.new_object_id();
    let body = b"BT /F1 12 Tf 72 700 Td (Drawn once, not forever) Tj ET /X Do".to_vec();
    doc.objects.insert(
        form,
        Object::Stream(Stream::new(
            dictionary! { "Type" => "XObject", "Subtype" => "Form", "BBox" => vec![0.into(), 0.into(), 612.into(), 792.into()] },
            body,
        )),
    );
    let res = doc.get_dictionary_mut(resources).unwrap();
    res.set("XObject", dictionary! { "X" => form });
    // And the page is its own parent (pdf-extract looked up that loop forever), with its
    // resources its own since nothing is inherited through such a loop.
    let p = doc.get_dictionary_mut(page).unwrap();
    p.set("Parent", page);
    p.set("Resources", resources);
    common::pdf_bytes(&mut doc)
}

#[test]
fn a_pdf_form_that_draws_itself_and_a_page_that_is_its_own_parent_still_read() {
    let path = write("self.pdf", &self_drawing_form());
    let start = Instant::now();
    let doc = document::load(&path).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        doc.text.contains("Drawn once, not forever"),
        "{:?}",
        doc.text
    );
    // The text appears once: the self-draw was cut, not followed.
    assert_eq!(doc.text.matches("Drawn once").count(), 1);
    assert!(start.elapsed() < Duration::from_secs(10));
}

#[test]
fn an_inflate_bomb_is_bounded_and_named() {
    use std::io::Write;
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    let zeros = vec![b' '; 1 << 20];
    for _ in 0..200 {
        z.write_all(&zeros).unwrap();
    }
    let bomb = z.finish().unwrap();
    let mut doc = common::pdf(&["BT /F1 12 Tf (x) Tj ET"], None);
    let page = doc.page_iter().next().unwrap();
    let content = doc.get_page_contents(page)[0];
    let mut s = Stream::new(dictionary! { "Filter" => "FlateDecode" }, bomb);
    s.allows_compression = false;
    doc.objects.insert(content, Object::Stream(s));
    let path = write("bomb.pdf", &common::pdf_bytes(&mut doc));
    let err = document::load(&path).unwrap_err().to_string();
    assert!(
        err.contains("bomb.pdf") && err.contains("inflates past 64 MiB"),
        "{err}"
    );
}

#[test]
fn nested_html_is_flattened_in_linear_time() {
    let n = 200_000;
    let html = format!(
        "<html><body>{}deep text{}</body></html>",
        "<div>".repeat(n),
        "</div>".repeat(n)
    );
    let path = write("deep.html", html.as_bytes());
    let start = Instant::now();
    let doc = document::load(&path).unwrap();
    assert!(doc.text.contains("deep text"));
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "{:?}",
        start.elapsed()
    );
}

#[test]
fn utf16_without_a_bom_and_a_stray_nul_are_text() {
    let s = "The tower is forty metres tall. ".repeat(20);
    let le: Vec<u8> = s.encode_utf16().flat_map(u16::to_le_bytes).collect();
    let be: Vec<u8> = s.encode_utf16().flat_map(u16::to_be_bytes).collect();
    for (name, bytes) in [("le.txt", le), ("be.txt", be)] {
        let doc = document::load(&write(name, &bytes)).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            doc.text.starts_with("The tower is forty"),
            "{name}: {:?}",
            doc.text
        );
    }
    let mut nul = s.clone().into_bytes();
    nul.insert(40, 0);
    let doc = document::load(&write("nul.txt", &nul)).unwrap();
    assert!(!doc.text.contains('\0'));
}

/// The tiny random model's metadata with `key` replaced.
fn tiny_gguf_with(name: &str, key: &str, value: Value) -> PathBuf {
    let mut cfg = common::quant_friendly(Arch::Llama, 256);
    cfg.tied_embeddings = true;
    let path = common::temp_dir("hostile").join(name);
    common::write_random_gguf(&path, &cfg, GgmlDType::Q8_0, &[(key.into(), value)]);
    path
}

#[test]
fn absurd_gguf_metadata_is_refused_naming_the_key_and_the_file() {
    let cases = [
        ("heads0.gguf", "llama.attention.head_count", Value::U32(0)),
        (
            "layers.gguf",
            "llama.block_count",
            Value::U32(1_000_000_000),
        ),
        ("ctx.gguf", "llama.context_length", Value::U64(1 << 40)),
        ("theta.gguf", "llama.rope.freq_base", Value::F32(f32::NAN)),
        ("align.gguf", "general.alignment", Value::U32(0)),
        ("type.gguf", "llama.block_count", Value::String("2".into())),
    ];
    for (file, key, value) in cases {
        let path = tiny_gguf_with(file, key, value);
        let err = load_gguf(&path, &candle_core::Device::Cpu, WeightsMode::Auto)
            .err()
            .unwrap_or_else(|| panic!("{file} loaded"))
            .to_string();
        assert!(err.contains(file) && err.contains(key), "{file}: {err}");
    }
}
