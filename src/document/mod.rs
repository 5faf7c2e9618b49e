//! Documents → plain text the model reads, with the sections that map text back to pages.
//!
//! One module per format. This one reads the bytes (`-` is standard input), detects the format
//! from the content first and the extension second (a misnamed file still opens), and joins
//! each format's parts into one [`Document`] whose sections tile its text.

mod epub;
mod html;
mod pdf;
mod pdf_guard;
mod range;
mod text;

use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Serialize;

pub use range::{SectionRange, part_label};

/// A part of the document (page, chapter) and where its text lies in [`Document::text`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Section {
    pub number: usize,
    pub title: Option<String>,
    pub start: usize,
    pub end: usize,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Document {
    pub title: String,
    /// The format it was read as, which names its sections ([`Document::section_noun`]).
    pub format: Format,
    pub text: String,
    pub sections: Vec<Section>,
}

impl Document {
    /// What one of its sections is called: "page 3", "chapter 2", "section 4".
    pub fn section_noun(&self) -> &'static str {
        self.format.section_noun()
    }
}

/// The formats [`load`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Pdf,
    Epub,
    Html,
    Markdown,
    #[default]
    Text,
}

impl Format {
    /// What one section is called; [`Document::section_noun`] asks here.
    pub fn section_noun(self) -> &'static str {
        match self {
            Format::Pdf => "page",
            Format::Epub => "chapter",
            Format::Html | Format::Markdown | Format::Text => "section",
        }
    }
}

/// Loading progress in parts: PDF pages or EPUB chapters (one part for the other formats).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadProgress {
    pub done: usize,
    pub total: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum DocumentError {
    #[error("cannot read {path} ({source}): check the path and that it is a readable file")]
    Unreadable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0} is empty: give a document with some text")]
    Empty(PathBuf),
    #[error(
        "{0} is not a text document (binary data): give a PDF, EPUB, HTML, Markdown or plain-text file"
    )]
    NotText(PathBuf),
    #[error(
        "{path}: unsupported document type '{ext}': give a PDF, EPUB, HTML, Markdown or plain-text file"
    )]
    UnknownType { path: PathBuf, ext: String },
    #[error(
        "{0} is encrypted: decrypt it first, e.g. qpdf --decrypt --password=PASSWORD in.pdf out.pdf"
    )]
    Encrypted(PathBuf),
    #[error("{0} is DRM-protected: only DRM-free EPUBs can be read")]
    DrmProtected(PathBuf),
    #[error(
        "{0} has no text layer (its pages are images): OCR it first, e.g. ocrmypdf in.pdf out.pdf"
    )]
    NoTextLayer(PathBuf),
    #[error(
        "{path} is a zip archive but not an EPUB (no META-INF/container.xml): give an EPUB, PDF, HTML, Markdown or plain-text file"
    )]
    NotEpub { path: PathBuf },
    #[error(
        "{path}: {part} took longer than {secs} s to parse (a malformed or hostile file): re-export it, or give another copy"
    )]
    TooSlow {
        path: PathBuf,
        part: String,
        secs: u64,
    },
    #[error("{path} is too large to read ({what}): split it into smaller files")]
    TooLarge { path: PathBuf, what: String },
    #[error(
        "{path}: no text was left within the safety limits ({what}): re-export it, e.g. print it to a new PDF"
    )]
    Limit { path: PathBuf, what: String },
    #[error(
        "{path} is not a readable {format} (truncated or corrupt: {detail}): re-download or re-export it"
    )]
    Corrupt {
        path: PathBuf,
        format: &'static str,
        detail: String,
    },
}

impl DocumentError {
    /// The "truncated or corrupt" error of a file that claims to be a `format` ("PDF", "EPUB").
    fn corrupt<'p>(path: &'p Path, format: &'static str) -> impl Fn(String) -> Self + Copy + 'p {
        move |detail| DocumentError::Corrupt {
            path: path.into(),
            format,
            detail,
        }
    }
}

/// One page or chapter as a format module produces it; [`assemble`] joins them.
struct Part {
    number: usize,
    title: Option<String>,
    text: String,
}

/// What a format module returns: the title it found (if any) and the parts in reading order.
struct Parsed {
    title: Option<String>,
    parts: Vec<Part>,
}

/// Reads a document (`-` is standard input).
pub fn load(path: &Path) -> Result<Document, DocumentError> {
    load_with_progress(path, &mut |_| {})
}

/// [`load`], reporting parts done (PDF pages, EPUB chapters) so a UI can draw a progress bar;
/// meant for a worker thread, since a long PDF takes seconds.
pub fn load_with_progress(
    path: &Path,
    progress: &mut dyn FnMut(LoadProgress),
) -> Result<Document, DocumentError> {
    let stdin = path == Path::new("-");
    let bytes = if stdin {
        let mut b = Vec::new();
        std::io::stdin().read_to_end(&mut b).map(|_| b)
    } else {
        std::fs::read(path)
    }
    .map_err(|source| DocumentError::Unreadable {
        path: path.into(),
        source,
    })?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(DocumentError::Empty(path.into()));
    }
    let ext = if stdin {
        String::new()
    } else {
        path.extension()
            .map(|e| e.to_string_lossy().to_lowercase())
            .unwrap_or_default()
    };
    let format = detect(path, &ext, &bytes)?;
    let decode = || {
        text::decode(&bytes).ok_or_else(|| {
            if ext.is_empty() || TEXT_EXTENSIONS.contains(&ext.as_str()) {
                DocumentError::NotText(path.into())
            } else {
                DocumentError::UnknownType {
                    path: path.into(),
                    ext: ext.clone(),
                }
            }
        })
    };
    let parsed = match format {
        Format::Pdf => pdf::parse(path, &bytes, progress)?,
        Format::Epub => epub::parse(path, &bytes, progress)?,
        Format::Html => html::parse(&decode()?),
        Format::Markdown => text::markdown(&decode()?),
        Format::Text => text::plain(&decode()?),
    };
    if !matches!(format, Format::Pdf | Format::Epub) {
        progress(LoadProgress { done: 1, total: 1 });
    }
    let fallback = if stdin {
        "stdin".to_string()
    } else {
        path.file_stem().map_or_else(
            || path.display().to_string(),
            |s| s.to_string_lossy().into_owned(),
        )
    };
    let doc = assemble(parsed, format, fallback);
    if doc.text.trim().is_empty() {
        return Err(DocumentError::Empty(path.into()));
    }
    tracing::info!(
        "{}: {format:?}, {} sections, {} bytes of text",
        path.display(),
        doc.sections.len(),
        doc.text.len()
    );
    Ok(doc)
}

/// What `swaa-chat extract` prints: the text with a marker line before each section
/// (`── page 3 ──`, `── chapter 2: Title ──`), or with `json` one object
/// `{title, format, pages: [{number, title, start, end}], text}` (offsets in bytes of `text`).
pub fn extract(path: &Path, json: bool) -> Result<String, DocumentError> {
    let doc = load(path)?;
    if json {
        let v = serde_json::json!({
            "title": doc.title,
            "format": doc.format,
            "pages": doc.sections,
            "text": doc.text,
        });
        return Ok(format!(
            "{}\n",
            crate::units::json_escape_controls(&format!("{v:#}"))
        ));
    }
    let mut out = String::with_capacity(doc.text.len() + 32 * doc.sections.len());
    let noun = doc.section_noun();
    for s in &doc.sections {
        match &s.title {
            Some(t) => out.push_str(&format!("── {noun} {}: {t} ──\n", s.number)),
            None => out.push_str(&format!("── {noun} {} ──\n", s.number)),
        }
        let body = doc.text[s.start..s.end].trim_end();
        if !body.is_empty() {
            out.push_str(body);
            out.push('\n');
        }
        out.push('\n');
    }
    Ok(out)
}

/// Extensions that promise text: binary data under one of them is "not a text document",
/// under any other extension an unsupported type.
const TEXT_EXTENSIONS: &[&str] = &[
    "txt", "text", "md", "markdown", "rst", "htm", "html", "xhtml",
];

/// Content first (`%PDF-`, a zip, `<html`), then the extension.
fn detect(path: &Path, ext: &str, bytes: &[u8]) -> Result<Format, DocumentError> {
    // The PDF spec lets readers accept junk before the header within the first KiB.
    let head = &bytes[..bytes.len().min(1024)];
    if head.windows(5).any(|w| w == b"%PDF-") {
        return Ok(Format::Pdf);
    }
    if bytes.starts_with(b"PK\x03\x04") {
        return Ok(Format::Epub);
    }
    let corrupt = |format, detail: &str| DocumentError::corrupt(path, format)(detail.into());
    match ext {
        "pdf" => Err(corrupt("PDF", "no %PDF- header")),
        "epub" => Err(corrupt("EPUB", "not a zip archive")),
        "htm" | "html" | "xhtml" => Ok(Format::Html),
        _ if html::sniff(head) => Ok(Format::Html),
        "txt" | "text" => Ok(Format::Text),
        "" | "md" | "markdown" => Ok(Format::Markdown),
        _ => Ok(Format::Text),
    }
}

/// Joins the parts. Each section runs from its text to the next section's start (separators
/// included), so the sections tile the whole text; a part without text keeps its number with
/// an empty section where the next text starts.
fn assemble(parsed: Parsed, format: Format, fallback_title: String) -> Document {
    let mut text = String::new();
    let mut starts = Vec::with_capacity(parsed.parts.len());
    let mut heads = Vec::with_capacity(parsed.parts.len());
    for p in parsed.parts {
        // What the model reads, `extract` prints and the reader shows: no terminal controls.
        let clean = crate::units::printable(&p.text);
        let body = clean.trim();
        if body.is_empty() {
            starts.push(None);
        } else {
            if !text.is_empty() {
                text.push_str("\n\n");
            }
            starts.push(Some(text.len()));
            text.push_str(body);
        }
        heads.push((
            p.number,
            p.title
                .map(|t| crate::units::printable(&t).replace('\n', " ")),
        ));
    }
    if !text.is_empty() {
        text.push('\n');
    }
    let mut sections = Vec::with_capacity(heads.len());
    let mut next = text.len();
    for ((number, title), start) in heads.into_iter().zip(starts).rev() {
        let start = start.unwrap_or(next);
        sections.push(Section {
            number,
            title,
            start,
            end: next,
        });
        next = start;
    }
    sections.reverse();
    // The file name stands in for a missing title: it too may hold controls.
    let title = parsed
        .title
        .map(|t| t.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|t| !t.is_empty())
        .unwrap_or(fallback_title);
    let title = crate::units::printable(&title).replace('\n', " ");
    Document {
        title,
        format,
        text,
        sections,
    }
}
