//! Documents → plain text the model reads, with the sections that map text back to pages.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Serialize;

/// A part of the document (page, chapter) and where its text lies in [`Document::text`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Section {
    pub number: usize,
    pub title: Option<String>,
    pub start: usize,
    pub end: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Document {
    pub title: String,
    pub text: String,
    pub sections: Vec<Section>,
}

#[derive(Debug, thiserror::Error)]
pub enum DocumentError {
    #[error("cannot read {path}: {source}")]
    Unreadable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0} is empty: give a document with some text")]
    Empty(PathBuf),
    #[error("{0} is not UTF-8 text: convert it (e.g. iconv -t UTF-8) or give a .txt/.md file")]
    NotUtf8(PathBuf),
    #[error("{path}: unsupported document type '{ext}': use a .txt or .md file")]
    UnknownType { path: PathBuf, ext: String },
}

/// Reads a text or Markdown file (`-` is standard input).
pub fn load(path: &Path) -> Result<Document, DocumentError> {
    let unreadable = |source| DocumentError::Unreadable {
        path: path.into(),
        source,
    };
    let bytes = if path == Path::new("-") {
        let mut b = Vec::new();
        std::io::stdin().read_to_end(&mut b).map_err(unreadable)?;
        b
    } else {
        let ext = path
            .extension()
            .map(|e| e.to_string_lossy().to_lowercase())
            .unwrap_or_default();
        if !matches!(
            ext.as_str(),
            "" | "txt" | "md" | "markdown" | "text" | "rst"
        ) {
            return Err(DocumentError::UnknownType {
                path: path.into(),
                ext,
            });
        }
        std::fs::read(path).map_err(unreadable)?
    };
    let text = String::from_utf8(bytes).map_err(|_| DocumentError::NotUtf8(path.into()))?;
    let text = text
        .strip_prefix('\u{feff}')
        .unwrap_or(&text)
        .replace("\r\n", "\n");
    if text.trim().is_empty() {
        return Err(DocumentError::Empty(path.into()));
    }
    let title = text
        .lines()
        .find_map(|l| l.strip_prefix("# "))
        .map(|t| t.trim().to_string())
        .or_else(|| path.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "stdin".into());
    let sections = vec![Section {
        number: 1,
        title: None,
        start: 0,
        end: text.len(),
    }];
    Ok(Document {
        title,
        text,
        sections,
    })
}
