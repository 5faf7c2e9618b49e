//! PDF → text, one section per page. lopdf parses the file (and opens files encrypted with an
//! empty user password); pdf-extract turns each page's content stream into text in stream order
//! (fonts' encodings, `Differences` and ToUnicode maps); we then expand ligatures and rejoin
//! words hyphenated at line ends. Both crates trust their input: the parse runs on a worker
//! thread with a large stack and a deadline per page, `pdf_guard` bounds the structures that
//! would loop, recurse or allocate without end, and each call runs under `catch_unwind` so a
//! panic becomes a "truncated or corrupt" error.

use std::cell::Cell;
use std::panic::{self, AssertUnwindSafe};
use std::path::Path;
use std::sync::Once;
use std::sync::mpsc;
use std::time::Duration;

use lopdf::Object;
use pdf_extract::PlainTextOutput;

use super::{DocumentError, LoadProgress, Parsed, Part, pdf_guard};

/// The parsers recurse per nesting level of objects, page-tree nodes and forms: real files
/// need little, hostile ones a lot (only address space until touched).
const STACK: usize = 512 << 20;
/// The longest one page (or the file's structure before the first page) may take.
const PAGE_DEADLINE: Duration = Duration::from_secs(20);
/// More pages than any book: each costs pdf-extract a walk of the whole page tree.
const MAX_PAGES: usize = 20_000;

enum Msg {
    Progress(LoadProgress),
    Done(Result<Parsed, DocumentError>),
}

pub(super) fn parse(
    path: &Path,
    bytes: &[u8],
    progress: &mut dyn FnMut(LoadProgress),
) -> Result<Parsed, DocumentError> {
    let (tx, rx) = mpsc::channel();
    let (owned, p) = (bytes.to_vec(), path.to_path_buf());
    let spawned = std::thread::Builder::new()
        .name("pdf".into())
        .stack_size(STACK)
        .spawn(move || {
            let r = parse_here(&p, &owned, &mut |lp| {
                let _ = tx.send(Msg::Progress(lp));
            });
            let _ = tx.send(Msg::Done(r));
        });
    if let Err(e) = spawned {
        return Err(DocumentError::corrupt(path, "PDF")(format!(
            "no thread to parse it on: {e}"
        )));
    }
    let mut done = 0;
    loop {
        match rx.recv_timeout(PAGE_DEADLINE) {
            Ok(Msg::Progress(lp)) => {
                done = lp.done;
                progress(lp);
            }
            Ok(Msg::Done(r)) => return r,
            // The worker cannot be stopped: it is left to finish (or spin) on its own.
            Err(mpsc::RecvTimeoutError::Timeout) => {
                return Err(DocumentError::TooSlow {
                    path: path.into(),
                    part: if done == 0 {
                        "its structure".into()
                    } else {
                        format!("page {}", done + 1)
                    },
                    secs: PAGE_DEADLINE.as_secs(),
                });
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err(DocumentError::corrupt(path, "PDF")(
                    "the parser stopped without an answer".into(),
                ));
            }
        }
    }
}

fn parse_here(
    path: &Path,
    bytes: &[u8],
    progress: &mut dyn FnMut(LoadProgress),
) -> Result<Parsed, DocumentError> {
    let corrupt = DocumentError::corrupt(path, "PDF");
    let encrypted = || DocumentError::Encrypted(path.into());
    let mut doc = match quietly(|| lopdf::Document::load_mem(bytes)) {
        Ok(Ok(doc)) => doc,
        // lopdf may fail on the encryption dictionary itself before it can say "encrypted".
        Ok(Err(_)) | Err(_) if has_encrypt_entry(bytes) => return Err(encrypted()),
        Ok(Err(e)) => return Err(corrupt(e.to_string())),
        Err(panic) => {
            tracing::warn!("{}: {panic}", path.display());
            return Err(corrupt("its structure could not be parsed".into()));
        }
    };
    // Still encrypted after load: the empty user password did not open it.
    if doc.is_encrypted() {
        return Err(encrypted());
    }
    let guarded = quietly(|| pdf_guard::guard(&mut doc)).unwrap_or_else(|panic| {
        tracing::warn!("{}: guard: {panic}", path.display());
        Default::default()
    });
    if guarded.changed > 0 {
        tracing::warn!(
            "{}: {} hostile structures bounded",
            path.display(),
            guarded.changed
        );
    }
    let pages = doc.get_pages();
    if pages.is_empty() {
        // A broken /Encrypt dictionary can leave lopdf without a page tree.
        if has_encrypt_entry(bytes) {
            return Err(encrypted());
        }
        return Err(corrupt("no pages".into()));
    }
    if pages.len() > MAX_PAGES {
        return Err(DocumentError::TooLarge {
            path: path.into(),
            what: format!("{} pages (at most {MAX_PAGES})", pages.len()),
        });
    }
    let total = pages.len();
    let mut parts = Vec::with_capacity(total);
    let mut first_failure = None;
    let mut unreadable_text = None;
    for (i, (&number, &id)) in pages.iter().enumerate() {
        let text = quietly(|| {
            let mut s = String::new();
            let done =
                pdf_extract::output_doc_page(&doc, &mut PlainTextOutput::new(&mut s), number);
            done.map(|()| s)
        });
        // What the user sees names the page; the parser's own words go to the log.
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
                first_failure
                    .get_or_insert_with(|| format!("page {number}: its content is malformed"));
                String::new()
            }
        };
        if text.trim().is_empty() && unreadable_text.is_none() && draws_text(&doc, id) {
            unreadable_text = Some(number);
        }
        parts.push(Part {
            number: number as usize,
            title: None,
            text,
        });
        progress(LoadProgress { done: i + 1, total });
    }
    if parts.iter().all(|p| p.text.trim().is_empty()) {
        if let Some(what) = guarded.limit {
            return Err(DocumentError::Limit {
                path: path.into(),
                what,
            });
        }
        return Err(match (first_failure, unreadable_text) {
            (Some(f), _) => corrupt(f),
            (None, Some(page)) => corrupt(format!(
                "page {page} draws text that could not be decoded (a broken content stream or font)"
            )),
            (None, None) => DocumentError::NoTextLayer(path.into()),
        });
    }
    Ok(Parsed {
        title: info_title(&doc),
        parts,
    })
}

/// A page whose content shows text (`Tj`, `TJ`, `'`, `"` operators): it is not a scan,
/// so an empty extraction means broken content, not "OCR it first".
fn draws_text(doc: &lopdf::Document, page: lopdf::ObjectId) -> bool {
    let content = doc.get_page_content(page).unwrap_or_default();
    content
        .split(|b| b.is_ascii_whitespace() || matches!(b, b')' | b']' | b'>'))
        .any(|w| matches!(w, b"Tj" | b"TJ" | b"'" | b"\""))
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
