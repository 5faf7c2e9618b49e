//! PDF → text, one section per page. lopdf parses the file (and opens files encrypted with an
//! empty user password); pdf-extract turns each page's content stream into text in stream order
//! (fonts' encodings, `Differences` and ToUnicode maps); we then expand ligatures and rejoin
//! words hyphenated at line ends. Both crates can panic on malformed input: each call runs
//! under `catch_unwind` and a panic becomes a "truncated or corrupt" error.

use std::cell::Cell;
use std::panic::{self, AssertUnwindSafe};
use std::path::Path;
use std::sync::Once;

use lopdf::Object;
use pdf_extract::PlainTextOutput;

use super::{DocumentError, LoadProgress, Parsed, Part};

pub(super) fn parse(
    path: &Path,
    bytes: &[u8],
    progress: &mut dyn FnMut(LoadProgress),
) -> Result<Parsed, DocumentError> {
    let corrupt = DocumentError::corrupt(path, "PDF");
    let encrypted = || DocumentError::Encrypted(path.into());
    let doc = match quietly(|| lopdf::Document::load_mem(bytes)) {
        Ok(Ok(doc)) => doc,
        // lopdf may fail on the encryption dictionary itself before it can say "encrypted".
        Ok(Err(_)) | Err(_) if has_encrypt_entry(bytes) => return Err(encrypted()),
        Ok(Err(e)) => return Err(corrupt(e.to_string())),
        Err(panic) => return Err(corrupt(panic)),
    };
    // Still encrypted after load: the empty user password did not open it.
    if doc.is_encrypted() {
        return Err(encrypted());
    }
    let pages = doc.get_pages();
    if pages.is_empty() {
        return Err(corrupt("no pages".into()));
    }
    let total = pages.len();
    let mut parts = Vec::with_capacity(total);
    let mut first_failure = None;
    for (i, &number) in pages.keys().enumerate() {
        let text = quietly(|| {
            let mut s = String::new();
            let done =
                pdf_extract::output_doc_page(&doc, &mut PlainTextOutput::new(&mut s), number);
            done.map(|()| s)
        });
        let text = match text {
            Ok(Ok(t)) => clean(&t),
            // One bad page must not cost the whole book: keep its number, log, go on.
            Ok(Err(e)) => {
                tracing::warn!("{}: page {number}: {e}", path.display());
                first_failure.get_or_insert_with(|| format!("page {number}: {e}"));
                String::new()
            }
            Err(panic) => {
                tracing::warn!("{}: page {number}: {panic}", path.display());
                first_failure.get_or_insert_with(|| format!("page {number}: {panic}"));
                String::new()
            }
        };
        parts.push(Part {
            number: number as usize,
            title: None,
            text,
        });
        progress(LoadProgress { done: i + 1, total });
    }
    if parts.iter().all(|p| p.text.trim().is_empty()) {
        return Err(match first_failure {
            Some(f) => corrupt(f),
            None => DocumentError::NoTextLayer(path.into()),
        });
    }
    Ok(Parsed {
        title: info_title(&doc),
        parts,
    })
}

/// `/Title` of the document information dictionary.
fn info_title(doc: &lopdf::Document) -> Option<String> {
    let info = match doc.trailer.get(b"Info").ok()? {
        Object::Reference(id) => doc.get_dictionary(*id).ok()?,
        Object::Dictionary(d) => d,
        _ => return None,
    };
    lopdf::decode_text_string(info.get(b"Title").ok()?).ok()
}

/// The trailer (or a cross-reference stream) names an `/Encrypt` dictionary.
fn has_encrypt_entry(bytes: &[u8]) -> bool {
    bytes.windows(8).any(|w| w == b"/Encrypt")
}

/// Ligatures expanded (the compatibility decompositions of U+FB00–FB06), words hyphenated at
/// a line end rejoined, trailing spaces dropped, runs of blank lines collapsed.
fn clean(page: &str) -> String {
    let mut s = String::with_capacity(page.len());
    for c in page.chars() {
        match c {
            '\u{fb00}' => s.push_str("ff"),
            '\u{fb01}' => s.push_str("fi"),
            '\u{fb02}' => s.push_str("fl"),
            '\u{fb03}' => s.push_str("ffi"),
            '\u{fb04}' => s.push_str("ffl"),
            '\u{fb05}' | '\u{fb06}' => s.push_str("st"),
            c => s.push(c),
        }
    }
    let joined = dehyphenate(&s);
    let mut out = String::with_capacity(joined.len());
    let mut blank = 0;
    for line in joined.lines() {
        if line.trim().is_empty() {
            blank += 1;
            continue;
        }
        if !out.is_empty() {
            out.push_str(if blank > 0 { "\n\n" } else { "\n" });
        }
        blank = 0;
        out.push_str(line);
    }
    out
}

/// "exam-\nple" → "example": a letter, a hyphen ending the line, a lower-case letter starting
/// the next. A soft hyphen (U+00AD) at a line end always joins; elsewhere it is dropped.
fn dehyphenate(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut lines = text.lines().map(str::trim_end).peekable();
    let mut glue = false;
    while let Some(line) = lines.next() {
        out.push_str(if glue { line.trim_start() } else { line });
        let next = lines.peek().and_then(|n| n.trim_start().chars().next());
        let soft = out.ends_with('\u{ad}');
        glue = match out.strip_suffix(['-', '\u{ad}']) {
            Some(stem) => {
                let letter = stem.chars().next_back().is_some_and(char::is_alphabetic);
                letter && next.is_some_and(|c| c.is_lowercase() || (soft && c.is_alphabetic()))
            }
            None => false,
        };
        if glue {
            out.pop();
        } else if lines.peek().is_some() {
            out.push('\n');
        }
    }
    out.replace('\u{ad}', "")
}

thread_local! {
    static QUIET: Cell<bool> = const { Cell::new(false) };
}

/// Runs a parser that may panic on malformed input. The panic becomes an error (its message);
/// it is logged instead of printed, since the CLI owes the user one line and a TUI must not print.
fn quietly<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let default = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if QUIET.with(Cell::get) {
                tracing::debug!("PDF parser panicked: {info}");
            } else {
                default(info);
            }
        }));
    });
    QUIET.with(|q| q.set(true));
    let result = panic::catch_unwind(AssertUnwindSafe(f));
    QUIET.with(|q| q.set(false));
    result.map_err(|p| {
        let msg = p
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "the parser failed".into());
        format!("parser panic: {msg}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hyphens_at_line_ends_join_lower_case_continuations_only() {
        assert_eq!(dehyphenate("an exam-\nple here"), "an example here");
        assert_eq!(dehyphenate("an exam-  \n   ple"), "an example");
        assert_eq!(dehyphenate("see Smith-\nJones"), "see Smith-\nJones");
        assert_eq!(dehyphenate("page 3-\n4"), "page 3-\n4");
        assert_eq!(
            dehyphenate("soft\u{ad}\nWord and s\u{ad}oft"),
            "softWord and soft"
        );
        assert_eq!(dehyphenate("a\n\nb"), "a\n\nb");
        assert_eq!(
            clean("\u{fb01}ne \u{fb02}ow\n\n\n\no\u{fb00}"),
            "fine flow\n\noff"
        );
    }

    #[test]
    fn a_parser_panic_becomes_an_error_message() {
        let e = quietly(|| -> u8 { panic!("bad xref at {}", 42) }).unwrap_err();
        assert_eq!(e, "parser panic: bad xref at 42");
        assert_eq!(quietly(|| 7), Ok(7));
    }
}
