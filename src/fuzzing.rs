//! What the cargo-fuzz targets in `fuzz/` call: each takes arbitrary bytes through one parser
//! the way the app does. Any panic, hang, abort or unbounded allocation they find is a bug;
//! an `Err` is the right answer to most inputs. Not an API: hidden from the docs.

use std::collections::BTreeMap;
use std::path::PathBuf;

use candle_core::Device;

use crate::config::Config;
use crate::model::config::ModelConfig;
use crate::model::{WeightsMode, load_gguf, load_safetensors_dir};
use crate::tokenizer::{ChatTokenizer, template};

/// A scratch folder of this process (the parsers read files, as the app does).
fn scratch() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("swaa-fuzz-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    dir
}

/// `bytes` as a document file named `input.{ext}` (pdf, epub, html, txt, md), loaded.
pub fn document(bytes: &[u8], ext: &str) {
    let path = scratch().join(format!("input.{ext}"));
    if std::fs::write(&path, bytes).is_ok() {
        let _ = crate::document::load(&path);
    }
}

/// `bytes` as a `.gguf`: header walk, candle's reader, the layout and hyperparameter checks,
/// the weights, and the tokenizer built from the metadata.
pub fn gguf(bytes: &[u8]) {
    let path = scratch().join("input.gguf");
    if std::fs::write(&path, bytes).is_ok()
        && let Ok((_, md)) = load_gguf(&path, &Device::Cpu, WeightsMode::Auto)
    {
        let _ = ChatTokenizer::from_gguf(&md);
    }
}

/// A tiny qwen3 `config.json` whose tensors a fuzzed `model.safetensors` may or may not hold.
const ST_CONFIG: &str = r#"{"architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3",
 "vocab_size": 64, "hidden_size": 8, "intermediate_size": 16, "num_hidden_layers": 1,
 "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 4, "rope_theta": 10000.0,
 "rms_norm_eps": 1e-6, "tie_word_embeddings": true, "max_position_embeddings": 256}"#;

/// `bytes` as the `model.safetensors` of a folder with a valid tiny `config.json`.
pub fn safetensors(bytes: &[u8]) {
    let dir = scratch().join("st");
    let _ = std::fs::create_dir_all(&dir);
    if std::fs::write(dir.join("config.json"), ST_CONFIG).is_ok()
        && std::fs::write(dir.join("model.safetensors"), bytes).is_ok()
    {
        let _ = load_safetensors_dir(&dir, &Device::Cpu, WeightsMode::Auto);
    }
}

/// `text` as `config.toml` and as a model's `config.json`.
pub fn config(text: &str) {
    let _ = Config::parse(text, std::path::Path::new("config.toml"));
    let _ = ModelConfig::from_hf_json(text);
}

/// A chat template (`bytes` up to the first NUL) rendered over one user message (the rest),
/// compiled and rendered as a model's template is, under the same fuel and heap budget.
pub fn chat_template(bytes: &[u8]) {
    let (source, content) = match bytes.iter().position(|&b| b == 0) {
        Some(i) => (&bytes[..i], &bytes[i + 1..]),
        None => (bytes, &b"How tall is the tower?"[..]),
    };
    let (Ok(source), content) = (
        std::str::from_utf8(source),
        String::from_utf8_lossy(content),
    ) else {
        return;
    };
    let Ok(compiled) = template::build_env(source) else {
        return;
    };
    let messages = serde_json::json!([
        {"role": "system", "content": "Answer from the document."},
        {"role": "user", "content": content},
    ]);
    let ctx = BTreeMap::from([
        ("messages", minijinja::Value::from_serialize(&messages)),
        ("add_generation_prompt", true.into()),
        ("bos_token", "<s>".into()),
        ("eos_token", "</s>".into()),
    ]);
    let _ = template::render(&std::sync::Arc::new(compiled), ctx, content.len());
}
