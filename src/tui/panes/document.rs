//! The document pane: the text wrapped to the pane, the section markers, the reading window,
//! the sink and the unread part highlighted, and a minimap of the whole document.

use std::ops::Range;

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::{Color, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;

use super::block;
use crate::document::{Document, Format, Section};
use crate::tui::app::{App, Focus};
use crate::tui::layout::doc_text_width;
use crate::tui::markdown::{self, printable};
use crate::tui::tokens::floor_boundary;

/// Parts of the document parsed, of how many, and what a part is.
pub type Parsing = (usize, usize, &'static str);

/// A document was given: it is parsing, or it is shown.
#[derive(Debug, Clone)]
pub enum DocState {
    Parsing(Option<Parsing>),
    Shown(DocView),
}

#[derive(Debug, Clone)]
pub struct DocumentPane {
    pub state: DocState,
    /// First document line shown when not following the reading window.
    pub scroll: usize,
    pub follow: bool,
}

impl Default for DocumentPane {
    fn default() -> Self {
        DocumentPane {
            state: DocState::Parsing(None),
            scroll: 0,
            follow: true,
        }
    }
}

impl DocumentPane {
    pub fn view(&self) -> Option<&DocView> {
        match &self.state {
            DocState::Shown(v) => Some(v),
            DocState::Parsing(_) => None,
        }
    }

    pub fn parsing(&self) -> Option<Parsing> {
        match self.state {
            DocState::Parsing(p) => p,
            DocState::Shown(_) => None,
        }
    }

    pub fn parsed(&mut self, done: usize, total: usize, unit: &'static str) {
        if let DocState::Parsing(p) = &mut self.state {
            *p = (done < total).then_some((done, total, unit));
        }
    }

    pub fn show(&mut self, doc: Document, width: usize) {
        self.state = DocState::Shown(DocView::new(doc, width));
    }

    pub fn rewrap(&mut self, width: usize) {
        if let DocState::Shown(v) = &mut self.state {
            v.rewrap(width);
        }
    }

    /// The first line shown in a pane of `height` lines; following, it keeps the end of the
    /// window (`window`, in bytes) two thirds down.
    pub fn top(&self, height: usize, window: Option<Range<usize>>) -> usize {
        let Some(d) = self.view() else { return 0 };
        let max = d.lines.len().saturating_sub(height);
        if !self.follow {
            return self.scroll.min(max);
        }
        match window {
            Some(w) => d.line_of(w.end).saturating_sub(height * 2 / 3).min(max),
            None => 0,
        }
    }

    /// Scrolls `by` lines from `top` (the first line shown in a pane of `height`).
    pub fn scroll_by(&mut self, top: usize, by: isize, height: usize) {
        let max = self
            .view()
            .map_or(0, |d| d.lines.len().saturating_sub(height)) as isize;
        self.scroll = (top as isize + by).clamp(0, max) as usize;
        self.follow = false;
    }
}

/// The document as the screen shows it: wrapped lines (byte ranges of the text) and the
/// section markers between them.
#[derive(Debug, Clone)]
pub struct DocView {
    pub title: String,
    pub format: Format,
    pub text: String,
    pub sections: Vec<Section>,
    /// What a section is called: page, chapter or section ([`Document::section_noun`]).
    pub noun: &'static str,
    /// Lines at the current pane width.
    pub lines: Vec<DocLine>,
    pub width: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub enum DocLine {
    Text(Range<usize>),
    /// A section heading, placed before the text at byte `at`.
    Marker {
        label: String,
        at: usize,
    },
}

impl DocView {
    fn new(doc: Document, width: usize) -> Self {
        let mut v = DocView {
            noun: doc.section_noun(),
            format: doc.format,
            title: doc.title,
            text: doc.text,
            sections: doc.sections,
            lines: Vec::new(),
            width: 0,
        };
        v.rewrap(width);
        v
    }

    /// What a section is called: "page", "chapter" or "section".
    pub fn unit(&self) -> &'static str {
        self.noun
    }

    fn rewrap(&mut self, width: usize) {
        if width == self.width && !self.lines.is_empty() {
            return;
        }
        self.width = width;
        self.lines.clear();
        let len = self.text.len();
        let mut cursor = 0;
        // Markers only mean something when there is more than one part.
        let marked = self.sections.len() > 1;
        let mut sections: Vec<&Section> = self.sections.iter().collect();
        sections.sort_by_key(|s| s.start);
        let reflow = reflow_width(&self.text);
        for s in sections {
            let start = floor_boundary(&self.text, s.start.min(len));
            let end = floor_boundary(&self.text, s.end.min(len));
            if start > cursor {
                wrap_into(&self.text, cursor..start, width, reflow, &mut self.lines);
            }
            // A titled section whose text opens with that title needs no marker: it would
            // show the heading twice.
            let repeats = s.title.as_deref().is_some_and(|t| {
                let first = self.text[start..end].lines().find(|l| !l.trim().is_empty());
                first.is_some_and(|l| l.trim().trim_start_matches('#').trim() == t.trim())
            });
            if marked && !repeats {
                let label = match &s.title {
                    Some(t) => format!("── {} ──", t.trim()),
                    None => format!("── {} {} ──", self.noun, s.number),
                };
                self.lines.push(DocLine::Marker { label, at: start });
            }
            let from = start.max(cursor);
            if end > from {
                wrap_into(&self.text, from..end, width, reflow, &mut self.lines);
                cursor = end;
            }
        }
        if cursor < len || self.lines.is_empty() {
            wrap_into(&self.text, cursor..len, width, reflow, &mut self.lines);
        }
    }

    /// Index of the last line starting at or before byte `b`.
    pub fn line_of(&self, b: usize) -> usize {
        let i = self.lines.partition_point(|l| match l {
            DocLine::Text(r) => r.start <= b,
            DocLine::Marker { at, .. } => *at <= b,
        });
        i.saturating_sub(1)
    }

    /// The section holding byte `b`.
    pub fn section_at(&self, b: usize) -> Option<&Section> {
        self.sections.iter().find(|s| s.start <= b && b < s.end)
    }
}

/// The width a document was hard-wrapped at, when it was: most of its lines end near one
/// length (the 90th percentile of non-blank line lengths, in characters). None for text whose
/// paragraphs are single lines or whose lines are short (verse, lists, code).
fn reflow_width(text: &str) -> Option<usize> {
    let mut lens: Vec<usize> = text
        .lines()
        .map(|l| l.chars().count())
        .filter(|&n| n > 0)
        .collect();
    if lens.len() < 8 {
        return None;
    }
    lens.sort_unstable();
    let p90 = lens[lens.len() * 9 / 10];
    // Lines near p90 must be most lines: one-line paragraphs vary far more in length.
    let near = lens
        .iter()
        .filter(|&&n| n * 10 >= p90 * 7 && n <= p90 + 8)
        .count();
    (40..=200)
        .contains(&p90)
        .then_some(p90)
        .filter(|_| near * 2 >= lens.len())
}

/// Whether a source line starts a block of its own (a heading, a list item, a quote, a
/// table row, indented code), so it is never joined to the line before.
fn starts_block(line: &str) -> bool {
    let t = line.trim_start();
    let numbered = t.split_once(['.', ')']).is_some_and(|(n, rest)| {
        !n.is_empty()
            && n.len() <= 3
            && n.bytes().all(|b| b.is_ascii_digit())
            && rest.starts_with(' ')
    });
    line.starts_with("    ")
        || line.starts_with('\t')
        || numbered
        || ["#", "- ", "* ", "+ ", "> ", "|", "```", "•"]
            .iter()
            .any(|m| t.starts_with(m))
}

/// Wraps `range` of `text` at `width`. With `reflow` (the width the source was hard-wrapped
/// at), a line that runs near that width joins the next one for display, so a paragraph
/// wraps as one; the line ranges stay exact byte ranges of the text (a joined line break is
/// drawn as a space), so the window highlight lands where it did.
fn wrap_into(
    text: &str,
    range: Range<usize>,
    width: usize,
    reflow: Option<usize>,
    out: &mut Vec<DocLine>,
) {
    let mut lines: Vec<Range<usize>> = Vec::new();
    let mut at = range.start;
    for line in text[range.clone()].split('\n') {
        lines.push(at..at + line.len());
        at += line.len() + 1;
    }
    let mut i = 0;
    while i < lines.len() {
        let mut para = lines[i].clone();
        if let Some(w) = reflow {
            while i + 1 < lines.len() {
                let (cur, next) = (&text[lines[i].clone()], &text[lines[i + 1].clone()]);
                let long = cur.chars().count() * 10 >= w * 7;
                if !long
                    || next.trim().is_empty()
                    || cur.trim().is_empty()
                    || starts_block(next)
                    || cur.trim_start().starts_with('#')
                {
                    break;
                }
                i += 1;
                para.end = lines[i].end;
            }
        }
        // The line breaks inside become spaces for the wrap; byte offsets do not move.
        let flat = text[para.clone()].replace('\n', " ");
        for r in markdown::wrap_ranges(&flat, width) {
            out.push(DocLine::Text(para.start + r.start..para.start + r.end));
        }
        i += 1;
    }
}

pub fn draw(f: &mut Frame, app: &App, r: Rect) {
    let (Some(pane), Some(d)) = (app.document(), app.doc()) else {
        let title = " Document ".to_string();
        let text = Paragraph::new("loading the document…").style(app.theme.dim);
        f.render_widget(text.block(block(title, false, app)), r);
        return;
    };
    let follow = if pane.follow { " · following" } else { "" };
    let block = block(
        format!(" Document{follow} "),
        app.focus() == Focus::Document,
        app,
    );
    let inner = block.inner(r);
    f.render_widget(block, r);
    if inner.width < 4 || inner.height == 0 {
        return;
    }
    let h = inner.height as usize;
    let top = app.doc_top(h);
    let (sink, win, read) = (
        app.sink_bytes(),
        app.window_bytes().unwrap_or(0..0),
        app.read_bytes(),
    );
    let cited = app.cited_bytes().unwrap_or(0..0);
    let text_w = doc_text_width(r);
    for (row, line) in d.lines.iter().skip(top).take(h).enumerate() {
        let y = inner.y + row as u16;
        let area = Rect::new(inner.x, y, text_w, 1);
        let line = match line {
            DocLine::Marker { label, .. } => Line::styled(label.clone(), app.theme.accent),
            DocLine::Text(range) => {
                let mut cuts = vec![range.start, range.end];
                for b in [
                    sink.end,
                    win.start,
                    win.end,
                    read.start,
                    read.end,
                    cited.start,
                    cited.end,
                ] {
                    if range.start < b && b < range.end {
                        cuts.push(b);
                    }
                }
                cuts.sort_unstable();
                cuts.dedup();
                let spans: Vec<Span> = cuts
                    .windows(2)
                    .map(|c| {
                        let at = c[0];
                        let style = if cited.contains(&at) {
                            app.theme
                                .accent
                                .add_modifier(ratatui::style::Modifier::REVERSED)
                        } else if win.contains(&at) {
                            app.theme.window
                        } else if sink.contains(&at) {
                            app.theme.sink
                        } else if read.contains(&at) {
                            Style::default()
                        } else {
                            app.theme.unread
                        };
                        Span::styled(printable(&d.text[c[0]..c[1]]), style)
                    })
                    .collect();
                Line::from(spans)
            }
        };
        f.render_widget(Paragraph::new(line), area);
    }
    // Minimap: the whole document in the pane's height; the second column marks the view.
    let len = d.text.len().max(1);
    let shown = {
        let first = d.lines.iter().skip(top).find_map(|l| match l {
            DocLine::Text(r) => Some(r.start),
            _ => None,
        });
        let mut last = d.lines.iter().skip(top).take(h).filter_map(|l| match l {
            DocLine::Text(r) => Some(r.end),
            _ => None,
        });
        first.unwrap_or(0)..last.next_back().unwrap_or(0)
    };
    let x = inner.right() - 2;
    for row in 0..h {
        let (a, b) = (row * len / h, ((row + 1) * len / h).max(row * len / h + 1));
        let overlaps = |s: &Range<usize>| s.start < b && a < s.end;
        let (ch, style) = if overlaps(&win) {
            (
                "█",
                app.theme
                    .window
                    .fg(app.theme.window.bg.unwrap_or(Color::Blue)),
            )
        } else if overlaps(&sink) {
            (
                "█",
                app.theme
                    .sink
                    .fg(app.theme.sink.bg.unwrap_or(Color::Magenta)),
            )
        } else if overlaps(&read) {
            ("▓", Style::default())
        } else {
            ("░", app.theme.unread)
        };
        // Only the part on screen is marked: a rule down the whole column beside the border
        // read as a third vertical line.
        let view = if overlaps(&shown) {
            Span::styled("┃", app.theme.accent)
        } else {
            Span::raw(" ")
        };
        let line = Line::from(vec![Span::styled(ch, style), view]);
        f.render_widget(
            Paragraph::new(line),
            Rect::new(x, inner.y + row as u16, 2, 1),
        );
    }
}
