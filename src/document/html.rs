//! HTML and XHTML → text: paragraphs, headings, lists and `pre` blocks kept apart; scripts,
//! styles and navigation dropped; entities decoded (html5ever, through scraper).

use scraper::{Html, Node};

use super::{Parsed, Part};

/// A heading found while converting: where its text starts in the output.
pub(super) struct Heading {
    pub level: u8,
    pub start: usize,
    pub title: String,
}

pub(super) struct Converted {
    pub title: Option<String>,
    pub text: String,
    pub headings: Vec<Heading>,
}

/// Looks like HTML: the first KiB starts with markup and names `<html` (a doctype, an XML
/// declaration or a comment may come first).
pub(super) fn sniff(head: &[u8]) -> bool {
    let lower = String::from_utf8_lossy(head).to_lowercase();
    let t = lower.trim_start_matches('\u{feff}').trim_start();
    t.starts_with("<!doctype html") || (t.starts_with('<') && t.contains("<html"))
}

/// A page: a section per `h1`/`h2` heading (text before the first one is its own section);
/// the title is `<title>`, else the first `h1`.
pub(super) fn parse(html: &str) -> Parsed {
    let c = convert(html);
    let cuts: Vec<&Heading> = c.headings.iter().filter(|h| h.level <= 2).collect();
    let title = c.title.clone().or_else(|| {
        c.headings
            .iter()
            .find(|h| h.level == 1)
            .map(|h| h.title.clone())
    });
    let mut parts = Vec::with_capacity(cuts.len() + 1);
    let first = cuts.first().map_or(c.text.len(), |h| h.start);
    if !c.text[..first].trim().is_empty() {
        parts.push(Part {
            number: 1,
            title: None,
            text: c.text[..first].to_string(),
        });
    }
    for (i, h) in cuts.iter().enumerate() {
        let end = cuts.get(i + 1).map_or(c.text.len(), |n| n.start);
        parts.push(Part {
            number: parts.len() + 1,
            title: Some(h.title.clone()),
            text: c.text[h.start..end].to_string(),
        });
    }
    Parsed { title, parts }
}

/// Elements whose content is never part of the reading text.
const SKIP: &[&str] = &[
    "script", "style", "noscript", "template", "svg", "canvas", "button", "select", "textarea",
    "iframe", "object", "nav",
];

/// Elements that end a paragraph (blank line) or a line.
const PARAGRAPH: &[&str] = &[
    "p",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "pre",
    "blockquote",
    "ul",
    "ol",
    "dl",
    "table",
    "section",
    "article",
    "header",
    "footer",
    "main",
    "aside",
    "figure",
    "hr",
    "address",
    "details",
    "body",
];
const LINE: &[&str] = &[
    "div",
    "li",
    "tr",
    "dt",
    "dd",
    "caption",
    "figcaption",
    "summary",
    "center",
    "form",
    "fieldset",
    "legend",
    "hgroup",
    "menu",
    "dir",
];

/// Deeper than any real page: html5ever's tree building slows down with depth (each tag
/// scans the open elements: 100,000 nested divs took 45 s), so tags below it are dropped.
const MAX_DEPTH: usize = 512;

/// Elements that never hold content, so never nest.
const VOID: &[&str] = &[
    "area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param", "source",
    "track", "wbr",
];

/// `html` with the tags nested deeper than [`MAX_DEPTH`] removed (their text stays), by a
/// linear scan that counts open and close tags; ordinary pages come back unchanged.
pub(super) fn flatten_deep(html: &str) -> std::borrow::Cow<'_, str> {
    let mut depth = 0usize;
    let mut cut: Vec<(usize, usize)> = Vec::new();
    let b = html.as_bytes();
    let mut i = 0;
    while let Some(off) = b[i..].iter().position(|&c| c == b'<') {
        let start = i + off;
        let Some(len) = b[start..].iter().position(|&c| c == b'>') else {
            break;
        };
        let end = start + len + 1;
        let tag = &html[start + 1..end - 1];
        let closing = tag.starts_with('/');
        let name: String = tag
            .trim_start_matches('/')
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric())
            .collect::<String>()
            .to_ascii_lowercase();
        let nests = !name.is_empty() && !VOID.contains(&name.as_str()) && !tag.ends_with('/');
        if nests && closing {
            if depth > MAX_DEPTH {
                cut.push((start, end));
            }
            depth = depth.saturating_sub(1);
        } else if nests {
            depth += 1;
            if depth > MAX_DEPTH {
                cut.push((start, end));
            }
        }
        i = end;
    }
    if cut.is_empty() {
        return html.into();
    }
    tracing::warn!(
        "HTML nested deeper than {MAX_DEPTH}: {} tags dropped",
        cut.len()
    );
    let mut out = String::with_capacity(html.len());
    let mut at = 0;
    for (s, e) in cut {
        out.push_str(&html[at..s]);
        at = e;
    }
    out.push_str(&html[at..]);
    out.into()
}

pub(super) fn convert(html: &str) -> Converted {
    let doc = Html::parse_document(&flatten_deep(html));
    let mut w = Writer::default();
    let mut title: Option<String> = None;
    let mut title_text: Option<String> = None; // while inside <title>
    // Depth-first with an explicit stack (deeply nested markup must not overflow ours).
    let mut stack = vec![(doc.tree.root(), false)];
    while let Some((node, closing)) = stack.pop() {
        match node.value() {
            Node::Text(t) => match &mut title_text {
                Some(s) => s.push_str(t),
                None => w.text(t),
            },
            Node::Element(e) => {
                let name = e.name();
                if closing {
                    w.close(name);
                    if name == "title"
                        && let Some(t) = title_text.take()
                    {
                        title.get_or_insert(t);
                    }
                    continue;
                }
                if name == "title" {
                    title_text = Some(String::new());
                } else if SKIP.contains(&name) || e.attr("hidden").is_some() {
                    continue;
                } else {
                    w.open(name);
                }
                stack.push((node, true));
                stack.extend(node.children().rev().map(|c| (c, false)));
            }
            Node::Document | Node::Fragment => {
                stack.extend(node.children().rev().map(|c| (c, false)));
            }
            _ => {}
        }
    }
    let title = title
        .map(|t| t.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|t| !t.is_empty());
    Converted {
        title,
        text: w.out,
        headings: w.headings,
    }
}

/// Builds the text: collapses inline whitespace, puts pending line or paragraph breaks
/// before the next text, and prefixes list items.
#[derive(Default)]
struct Writer {
    out: String,
    /// Newlines owed before the next text (1: new line, 2: new paragraph).
    owed: usize,
    space: bool,
    pre: usize,
    /// Open lists: `Some(n)` numbers items of an `ol` from n, `None` bullets a `ul`.
    lists: Vec<Option<usize>>,
    prefix: Option<String>,
    /// Open heading: level, and where its text started once some came.
    heading: Option<(u8, Option<usize>)>,
    headings: Vec<Heading>,
}

impl Writer {
    fn open(&mut self, name: &str) {
        self.block(name);
        match name {
            "pre" => self.pre += 1,
            "ul" | "menu" | "dir" => self.lists.push(None),
            "ol" => self.lists.push(Some(1)),
            "li" => {
                let depth = self.lists.len().saturating_sub(1);
                let marker = match self.lists.last_mut() {
                    Some(Some(n)) => {
                        *n += 1;
                        format!("{}. ", *n - 1)
                    }
                    _ => "- ".to_string(),
                };
                self.prefix = Some(format!("{}{marker}", "  ".repeat(depth)));
            }
            "td" | "th" if !self.at_line_start() && self.owed == 0 => {
                self.out.push_str(" | ");
                self.space = false;
            }
            "br" => {
                // One <br> breaks the line, two in a row the paragraph.
                self.owed = (self.owed + 1).min(2);
                self.space = false;
            }
            _ => {}
        }
        if let Some(level) = heading_level(name) {
            self.heading = Some((level, None));
        }
    }

    fn close(&mut self, name: &str) {
        match name {
            "pre" => self.pre = self.pre.saturating_sub(1),
            "ul" | "ol" | "menu" | "dir" => {
                self.lists.pop();
            }
            // An item without text (only buttons, say) must not lend its marker to what follows.
            "li" => self.prefix = None,
            _ => {}
        }
        if let Some((level, start)) = self.heading
            && heading_level(name) == Some(level)
        {
            self.heading = None;
            if let Some(start) = start {
                let title = self.out[start..].split_whitespace().collect::<Vec<_>>();
                self.headings.push(Heading {
                    level,
                    start,
                    title: title.join(" "),
                });
            }
        }
        self.block(name);
    }

    fn block(&mut self, name: &str) {
        let nested_list = matches!(name, "ul" | "ol" | "menu" | "dir") && !self.lists.is_empty();
        let n = if PARAGRAPH.contains(&name) && !nested_list {
            2
        } else if LINE.contains(&name) {
            1
        } else {
            return;
        };
        self.owed = self.owed.max(n);
        self.space = false;
    }

    fn at_line_start(&self) -> bool {
        self.out.is_empty() || self.out.ends_with('\n')
    }

    /// Pays the owed newlines (none at the very start) and the list prefix.
    fn start_text(&mut self) {
        if self.owed > 0 {
            if !self.out.is_empty() {
                let have = self.out.len() - self.out.trim_end_matches('\n').len();
                for _ in have..self.owed {
                    self.out.push('\n');
                }
            }
            self.owed = 0;
            self.space = false;
        }
        if let Some(p) = self.prefix.take() {
            self.out.push_str(&p);
        }
        if let Some((_, start @ None)) = &mut self.heading {
            *start = Some(self.out.len());
        }
    }

    fn text(&mut self, t: &str) {
        if self.pre > 0 {
            if !t.is_empty() {
                self.start_text();
                self.out.push_str(t);
            }
            return;
        }
        for c in t.chars() {
            if c.is_whitespace() {
                self.space = true;
                continue;
            }
            if c == '\u{ad}' {
                continue; // soft hyphen: a line-break hint, not text
            }
            if self.owed > 0 || self.prefix.is_some() {
                self.start_text();
            } else if self.space && !self.at_line_start() {
                self.out.push(' ');
            }
            self.space = false;
            self.out.push(c);
        }
    }
}

fn heading_level(name: &str) -> Option<u8> {
    let level = name.strip_prefix('h')?.parse::<u8>().ok()?;
    (1..=6).contains(&level).then_some(level)
}
