//! PDF → text, one section per page. lopdf parses the file (and opens files encrypted with an
//! empty user password); pdf-extract turns each page's content stream into text in stream order
//! (fonts' encodings, `Differences` and ToUnicode maps); we then expand ligatures and rejoin
//! words hyphenated at line ends. Both crates trust their input: the parse runs on a worker
//! thread with a large stack and a deadline per page, `pdf_guard` bounds the structures that
//! would loop, recurse or allocate without end, and each call runs under `catch_unwind` so a
//! panic becomes a "truncated or corrupt" error.

use std::cell::Cell;
use std::collections::{HashMap, HashSet};
use std::panic::{self, AssertUnwindSafe};
use std::path::Path;
use std::sync::Once;
use std::sync::mpsc;
use std::time::Duration;

use lopdf::Object;
use pdf_extract::{MediaBox, OutputDev, OutputError, Transform};
use unicode_normalization::UnicodeNormalization;

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
    let bytes = &pdf_guard::clamp_columns(bytes);
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
            let mut out = PageText::default();
            let done = pdf_extract::output_doc_page(&doc, &mut out, number);
            done.map(|()| out.finish())
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
    strip_running_lines(&mut parts);
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

/// Ligatures expanded (the compatibility decompositions of U+FB00–FB06), LaTeX's spacing
/// accents put on their letters and the result composed (NFC), circled letters as the signs
/// they draw, table-of-contents dot leaders shortened, words hyphenated at a line end
/// rejoined, trailing spaces dropped, runs of blank lines collapsed.
fn clean(page: &str) -> String {
    let page = dot_leaders(&combine_accents(page));
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

/// The combining mark a spacing accent stands for, as LaTeX fonts draw it over a letter.
fn combining(c: char) -> Option<char> {
    Some(match c {
        '\u{a8}' => '\u{308}', // ¨
        '\u{b4}' => '\u{301}', // ´
        '`' => '\u{300}',
        '\u{2c6}' => '\u{302}', // ˆ
        '\u{2dc}' => '\u{303}', // ˜
        '\u{af}' => '\u{304}',  // ¯
        '\u{2d8}' => '\u{306}', // ˘
        '\u{2d9}' => '\u{307}', // ˙
        '\u{2da}' => '\u{30a}', // ˚
        '\u{2dd}' => '\u{30b}', // ˝
        '\u{2c7}' => '\u{30c}', // ˇ
        '\u{b8}' => '\u{327}',  // ¸
        '\u{2db}' => '\u{328}', // ˛
        _ => return None,
    })
}

/// "Br¨oker" → "Bröker", "J´erˆome" → "Jérôme": TeX draws an accent as its own glyph before
/// the letter (a cedilla may come after it), which extracts as a spacing accent next to the
/// letter. A backtick is an accent only inside a word (code quotes `like this` stay), and a
/// dotless ı under an accent is an i. Then NFC, and "c⃝"/"r⃝" (a letter in an enclosing
/// circle, as some fonts build © and ®) become the signs.
fn combine_accents(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let prev = i.checked_sub(1).map(|j| chars[j]);
        let next = chars.get(i + 1).copied();
        let mark = combining(c).filter(|_| {
            next.is_some_and(char::is_alphabetic)
                && (c != '`' || prev.is_some_and(char::is_alphabetic))
        });
        if let (Some(mark), Some(base)) = (mark, next) {
            out.push(if base == '\u{131}' { 'i' } else { base });
            out.push(mark);
            i += 2;
            continue;
        }
        // A cedilla after its letter: "c¸" → "ç".
        if c == '\u{b8}' && prev.is_some_and(char::is_alphabetic) {
            out.push('\u{327}');
            i += 1;
            continue;
        }
        out.push(c);
        i += 1;
    }
    out.nfc()
        .collect::<String>()
        .replace("c\u{20dd}", "©")
        .replace("C\u{20dd}", "©")
        .replace("r\u{20dd}", "®")
        .replace("R\u{20dd}", "®")
}

/// "Introduction . . . . . . 12" → "Introduction … 12": a table of contents' dot leaders cost
/// a token per dot and say nothing. Four or more dots (spaced or not) are a leader; "..." stays.
fn dot_leaders(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('.') {
        let run = rest[at..]
            .char_indices()
            .take_while(|&(_, c)| c == '.' || c == ' ')
            .last()
            .map_or(at, |(i, c)| at + i + c.len_utf8());
        let dots = rest[at..run].matches('.').count();
        let spaced = !rest[at..run].contains("  ");
        if dots >= 4 && spaced {
            out.push_str(rest[..at].trim_end());
            out.push_str(" … ");
            rest = &rest[run..];
        } else {
            out.push_str(&rest[..at + 1]);
            rest = &rest[at + 1..];
        }
    }
    out.push_str(rest);
    out
}

/// A page's first and last lines that repeat as such on other pages: running headers and
/// footers ("Chapter 4: Program Behavior 6", a book's title, page numbers). Two signs, each
/// needing three pages to agree, taken in turn: a line among the first or last two whose
/// leading or trailing number is the page's printed number (its distance from the page's
/// place in the file is shared by three pages); then a first or last line that, digits aside,
/// is the first or last line of three pages or more. The body never needs them: the reader
/// has its own page markers.
fn strip_running_lines(parts: &mut [Part]) {
    let numbered = |page: usize, line: &str| edge_number(line).map(|n| page as i64 - n);
    let mut offsets: HashMap<i64, usize> = HashMap::new();
    for (page, p) in parts.iter().enumerate() {
        let seen: HashSet<i64> = edges(&p.text, 2)
            .filter_map(|(_, l)| numbered(page, l))
            .collect();
        for o in seen {
            *offsets.entry(o).or_default() += 1;
        }
    }
    let shared = |o: Option<i64>| o.is_some_and(|o| offsets.get(&o).is_some_and(|&n| n >= 3));
    for (page, p) in parts.iter_mut().enumerate() {
        let drop: Vec<usize> = edges(&p.text, 2)
            .filter(|(_, l)| shared(numbered(page, l)))
            .map(|(i, _)| i)
            .collect();
        drop_lines(&mut p.text, &drop);
    }
    let shape = |l: &str| -> String {
        let s: String = l
            .chars()
            .map(|c| if c.is_ascii_digit() { '#' } else { c })
            .collect();
        s.split_whitespace().collect::<Vec<_>>().join(" ")
    };
    let mut shapes: HashMap<String, usize> = HashMap::new();
    for p in parts.iter() {
        let seen: HashSet<String> = edges(&p.text, 1)
            .map(|(_, l)| shape(l))
            .filter(|s| s.chars().filter(|c| c.is_alphanumeric()).count() >= 3)
            .collect();
        for s in seen {
            *shapes.entry(s).or_default() += 1;
        }
    }
    for p in parts.iter_mut() {
        let drop: Vec<usize> = edges(&p.text, 1)
            .filter(|(_, l)| shapes.get(&shape(l)).is_some_and(|&n| n >= 3))
            .map(|(i, _)| i)
            .collect();
        drop_lines(&mut p.text, &drop);
    }
}

/// The first and last `n` lines with text, by line number, each once.
fn edges(text: &str, n: usize) -> impl Iterator<Item = (usize, &str)> {
    let filled: Vec<(usize, &str)> = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| (i, l.trim()))
        .collect();
    let head = n.min(filled.len());
    let tail = n.min(filled.len() - head);
    let mut picked = filled[..head].to_vec();
    picked.extend_from_slice(&filled[filled.len() - tail..]);
    picked.into_iter()
}

/// Drops the given lines unless that would leave the page without text: a running line sits
/// beside a body, so a page whose every line repeats ("Page 7 of …" alone) is the body.
fn drop_lines(text: &mut String, drop: &[usize]) {
    if drop.is_empty() {
        return;
    }
    let kept: Vec<&str> = text
        .lines()
        .enumerate()
        .filter(|(i, _)| !drop.contains(i))
        .map(|(_, l)| l)
        .collect();
    if kept.iter().all(|l| l.trim().is_empty()) {
        return;
    }
    *text = kept.join("\n").trim().to_string();
}

/// The number a line starts or ends with, as a page number is printed (arabic, or lower-case
/// roman in front matter): "Chapter 4: Example 4" → 4, "xii" → 12.
fn edge_number(line: &str) -> Option<i64> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let (first, last) = (words.first()?, words.last()?);
    [last, first].into_iter().find_map(|w| {
        if w.len() <= 4 && w.chars().all(|c| c.is_ascii_digit()) {
            return w.parse().ok();
        }
        roman(w)
    })
}

fn roman(w: &str) -> Option<i64> {
    if w.is_empty() || w.len() > 7 {
        return None;
    }
    let value = |c| match c {
        'i' => Some(1),
        'v' => Some(5),
        'x' => Some(10),
        'l' => Some(50),
        'c' => Some(100),
        _ => None,
    };
    let digits: Vec<i64> = w.chars().map(value).collect::<Option<_>>()?;
    let mut n = 0;
    for (k, &d) in digits.iter().enumerate() {
        n += if digits.get(k + 1).is_some_and(|&e| e > d) {
            -d
        } else {
            d
        };
    }
    // Only the canonical spelling: "il" or "vv" are words or noise, not numbers.
    (to_roman(n) == w).then_some(n)
}

fn to_roman(mut n: i64) -> String {
    let mut s = String::new();
    for (v, r) in [
        (100, "c"),
        (90, "xc"),
        (50, "l"),
        (40, "xl"),
        (10, "x"),
        (9, "ix"),
        (5, "v"),
        (4, "iv"),
        (1, "i"),
    ] {
        while n >= v {
            s.push_str(r);
            n -= v;
        }
    }
    s
}

/// A page's text from the glyphs pdf-extract reports, in content-stream order. Like
/// pdf-extract's `PlainTextOutput`, a gap wider than a tenth of the font size is a space and a
/// move down a line break; unlike it, a move down by a line always breaks the line (a short
/// line followed by an indented one was glued: "libexecdirThe"), a jump back left on the same
/// line is a space (texinfo draws "[Function]" at the right margin before the line's start:
/// "[Function]void"), and a footnote number (a raised digit in a smaller font after a word) is
/// written "[1]" instead of running into the word.
#[derive(Default)]
struct PageText {
    out: String,
    /// Page height, to flip y so that it grows downwards.
    height: f64,
    last_end: f64,
    last_y: f64,
    /// The font size and baseline of the last glyph on the line's baseline.
    base: Option<(f64, f64)>,
    new_word: bool,
    in_note: bool,
}

impl PageText {
    fn finish(mut self) -> String {
        if self.in_note {
            self.out.push(']');
        }
        self.out
    }

    /// After a word of two letters or more, or after punctuation: where a footnote mark goes.
    fn after_word(&self) -> bool {
        let tail: Vec<char> = self.out.chars().rev().take(2).collect();
        match tail.first() {
            Some(c) if ".,;:)\"”’".contains(*c) => true,
            Some(c) if c.is_alphabetic() => tail.get(1).is_some_and(|d| d.is_alphabetic()),
            _ => false,
        }
    }
}

impl OutputDev for PageText {
    fn begin_page(
        &mut self,
        _page: u32,
        media_box: &MediaBox,
        _art_box: Option<(f64, f64, f64, f64)>,
    ) -> Result<(), OutputError> {
        self.height = media_box.ury - media_box.lly;
        Ok(())
    }

    fn end_page(&mut self) -> Result<(), OutputError> {
        Ok(())
    }

    fn output_character(
        &mut self,
        trm: &Transform,
        width: f64,
        _spacing: f64,
        font_size: f64,
        text: &str,
    ) -> Result<(), OutputError> {
        let size = font_size * (trm.m11 * trm.m22 - trm.m12 * trm.m21).abs().sqrt();
        let (x, y) = (trm.m31, self.height - trm.m32);
        let digit = text.chars().all(|c| c.is_ascii_digit()) && !text.is_empty();
        let note = digit
            && self.base.is_some_and(|(bs, by)| {
                size < 0.8 * bs && by - y > 0.15 * bs && (y - by).abs() < bs
            })
            && (self.in_note || self.after_word());
        if self.in_note && !note {
            self.out.push(']');
            self.in_note = false;
        }
        if !self.out.is_empty() && self.new_word && !note {
            // Measured from the line's baseline: a footnote mark before does not move it.
            let (line, by) = self
                .base
                .map_or((size, self.last_y), |(bs, by)| (bs.max(size), by));
            let dy = (y - by).abs();
            if dy > 0.5 * line {
                self.out.push('\n');
                if dy > 1.5 * size && x < self.last_end {
                    self.out.push('\n');
                }
            } else if x > self.last_end + 0.1 * size || x < self.last_end - 2.0 * size {
                self.out.push(' ');
            }
        }
        if note && !self.in_note {
            self.out.push('[');
            self.in_note = true;
        }
        self.out.push_str(text);
        self.new_word = false;
        self.last_y = y;
        self.last_end = x + width * size;
        if !note {
            self.base = Some((size, y));
        }
        Ok(())
    }

    fn begin_word(&mut self) -> Result<(), OutputError> {
        self.new_word = true;
        Ok(())
    }

    fn end_word(&mut self) -> Result<(), OutputError> {
        Ok(())
    }

    fn end_line(&mut self) -> Result<(), OutputError> {
        Ok(())
    }
}

/// "exam-\nple" → "example": a letter, a hyphen ending the line, a lower-case letter starting
/// the next; or capitals on both sides ("DIS-\nCLAIMED", where "Smith-\nJones" stays). A soft
/// hyphen (U+00AD) at a line end always joins; elsewhere it is dropped.
fn dehyphenate(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut lines = text.lines().map(str::trim_end).peekable();
    let mut glue = false;
    while let Some(line) = lines.next() {
        out.push_str(if glue { line.trim_start() } else { line });
        let next = lines.peek().and_then(|n| n.trim_start().chars().next());
        let soft = out.ends_with('\u{ad}');
        let next_two: Vec<char> = lines
            .peek()
            .map(|n| n.trim_start().chars().take(2).collect())
            .unwrap_or_default();
        glue = match out.strip_suffix(['-', '\u{ad}']) {
            Some(stem) => {
                let letter = stem.chars().next_back().is_some_and(char::is_alphabetic);
                let capitals = stem
                    .chars()
                    .rev()
                    .take_while(|c| c.is_alphabetic())
                    .collect::<Vec<_>>();
                let shouting = capitals.len() >= 2
                    && capitals.iter().all(|c| c.is_uppercase())
                    && next_two.len() == 2
                    && next_two.iter().all(|c| c.is_uppercase());
                letter
                    && (shouting
                        || next.is_some_and(|c| c.is_lowercase() || (soft && c.is_alphabetic())))
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
        assert_eq!(dehyphenate("ARE DIS-\nCLAIMED"), "ARE DISCLAIMED");
        assert_eq!(dehyphenate("UTF-\n8 and A-\nB"), "UTF-\n8 and A-\nB");
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
    fn latex_accents_join_their_letters_and_circled_letters_become_signs() {
        assert_eq!(
            clean("Br\u{a8}oker, J\u{b4}er\u{2c6}ome and Niels M\u{a8}oller"),
            "Bröker, Jérôme and Niels Möller"
        );
        // A dotless i under an accent, a cedilla after its letter, a grave inside a word.
        assert_eq!(
            clean("na\u{a8}\u{131}ve gar\u{b8}con pi`ece"),
            "naïve garçon pièce"
        );
        assert_eq!(clean("c\u{20dd} 2017 FSF, r\u{20dd}"), "© 2017 FSF, ®");
        // Code quotes and accents with nothing to sit on stay as they are.
        assert_eq!(clean("run `make` \u{b4} here"), "run `make` \u{b4} here");
        assert!(clean("Mo\u{308}ller").chars().count() == 6, "NFC");
    }

    #[test]
    fn dot_leaders_shrink_and_ellipses_stay() {
        assert_eq!(
            dot_leaders("1 Introduction . . . . . . . . . 1\n7.1 Hash functions........8"),
            "1 Introduction … 1\n7.1 Hash functions … 8"
        );
        assert_eq!(
            dot_leaders("Wait... and see. 3.14 . ok"),
            "Wait... and see. 3.14 . ok"
        );
    }

    fn part(number: usize, text: String) -> Part {
        Part {
            number,
            title: None,
            text,
        }
    }

    #[test]
    fn a_page_whose_every_line_repeats_keeps_its_text() {
        let mut parts: Vec<Part> = (1..=5)
            .map(|i| {
                part(
                    i,
                    format!("Page {i} of filler text about the quiet harbour."),
                )
            })
            .collect();
        strip_running_lines(&mut parts);
        for p in &parts {
            assert!(p.text.starts_with("Page "), "{}", p.text);
        }
    }

    #[test]
    fn running_headers_footers_and_page_numbers_are_removed() {
        // Front matter numbered i, ii; then chapters whose header carries the page number.
        let mut parts: Vec<Part> = (0..9)
            .map(|i| {
                let w = [
                    "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
                ][i];
                let body =
                    format!("Page {w} opens.\nThe manual says more.\nIt goes on.\nPage {w} ends.");
                let text = match i {
                    0 => format!("The Manual\n{body}\ni"),
                    1 | 2 => format!("{body}\n{}", to_roman(i as i64 + 1)),
                    3..=6 => format!("Chapter 1: Basics {}\n{body}\n{}", i - 2, i - 2),
                    _ => format!("Chapter 2: Use {}\n{body}\n{}", i - 2, i - 2),
                };
                part(i + 1, text)
            })
            .collect();
        // A line that opens fewer than three pages is text.
        parts[4].text = parts[4].text.replacen('\n', "\nThe manual says more.\n", 1);
        strip_running_lines(&mut parts);
        for (i, p) in parts.iter().enumerate() {
            assert!(
                p.text.contains("The manual says more.\nIt goes on."),
                "{i}: {}",
                p.text
            );
            assert!(!p.text.contains("Chapter"), "{i}: {}", p.text);
            assert!(!p.text.ends_with(char::is_numeric), "{i}: {}", p.text);
        }
        assert_eq!(
            parts[1].text,
            "Page two opens.\nThe manual says more.\nIt goes on.\nPage two ends."
        );
        assert!(
            parts[0].text.starts_with("The Manual"),
            "a title on one page stays"
        );
        assert!(parts[4].text.starts_with("The manual says more."));
        // Two pages are no pattern: nothing is taken from a short document.
        let mut two = vec![
            part(1, "Intro 1\nText.".into()),
            part(2, "Intro 2\nMore.".into()),
        ];
        strip_running_lines(&mut two);
        assert_eq!(two[0].text, "Intro 1\nText.");
        assert_eq!(
            (roman("xiv"), roman("il"), roman("civil")),
            (Some(14), None, None)
        );
    }

    /// Glyph runs as a content stream draws them: (x, y from the top, font size, text), one
    /// run per text-showing operation, every glyph half the font size wide.
    fn glyphs(runs: &[(f64, f64, f64, &str)]) -> String {
        let mut out = PageText::default();
        let media = MediaBox {
            llx: 0.,
            lly: 0.,
            urx: 612.,
            ury: 792.,
        };
        out.begin_page(1, &media, None).unwrap();
        for &(x, y, size, text) in runs {
            out.begin_word().unwrap();
            for (k, c) in text.chars().enumerate() {
                let trm = Transform::row_major(1., 0., 0., 1., x + k as f64 * 0.5 * size, 792. - y);
                out.output_character(&trm, 0.5, 0., size, &c.to_string())
                    .unwrap();
            }
        }
        out.finish()
    }

    #[test]
    fn glyph_positions_become_spaces_line_breaks_and_footnote_marks() {
        // A gap is a space; abutting runs are one word.
        assert_eq!(
            glyphs(&[
                (72., 100., 10., "Hello"),
                (100., 100., 10., "wor"),
                (115., 100., 10., "ld")
            ]),
            "Hello world"
        );
        // A short line, then an indented one below it: a line break, not "libexecdirThe".
        assert_eq!(
            glyphs(&[(72., 100., 10., "libexecdir"), (130., 112., 10., "The")]),
            "libexecdir\nThe"
        );
        // Drawn at the right margin first, then the line's start.
        assert_eq!(
            glyphs(&[(400., 100., 10., "[Function]"), (72., 100., 10., "void")]),
            "[Function] void"
        );
        // A raised small digit after a word is a footnote mark; after a lone letter an exponent.
        assert_eq!(
            glyphs(&[
                (72., 100., 10., "Linux"),
                (97., 96., 6., "1"),
                (104., 100., 10., "is")
            ]),
            "Linux[1] is"
        );
        assert_eq!(glyphs(&[(72., 100., 10., "x"), (77., 96., 6., "2")]), "x2");
        // TeX's overstruck accent: the letter is drawn back under it, no space between.
        assert_eq!(
            clean(&glyphs(&[
                (72., 100., 10., "M"),
                (77.5, 100., 10., "\u{a8}"),
                (77., 100., 10., "oller")
            ])),
            "Möller"
        );
    }

    #[test]
    fn a_parser_panic_becomes_an_error_message() {
        let e = quietly(|| -> u8 { panic!("bad xref at {}", 42) }).unwrap_err();
        assert_eq!(e, "parser panic: bad xref at 42");
        assert_eq!(quietly(|| 7), Ok(7));
    }
}
