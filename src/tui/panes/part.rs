//! Reading part of a document: the part chosen (`--pages`, `:pages`, the picker) and, for a
//! document longer than the context, the choices offered — the beginning, the end, chapters or
//! runs of pages that fit — estimated from the tokens the failed read counted.

use std::ops::Range;

use ratatui::Frame;
use ratatui::text::Line;
use ratatui::widgets::{Block, BorderType, Clear, Paragraph};

use super::document::DocView;
use crate::document::{Document, SectionRange, part_label};
use crate::tui::app::App;
use crate::tui::fmt;
use crate::tui::layout::centered;
use crate::tui::markdown::printable;

/// The part of the document the engine reads, when it is not all of it.
#[derive(Debug, Clone, PartialEq)]
pub struct Part {
    pub range: SectionRange,
    /// Its bytes in the whole document's text.
    pub bytes: Range<usize>,
    /// The title it is read under, which says which part it is ("Book (pages 40–120 of 311)").
    pub title: String,
    /// "pages 40–120 of 311".
    pub label: String,
}

impl Part {
    /// The sections of `range` in `d`, or the error naming the document's range.
    pub fn of(d: &DocView, range: SectionRange) -> Result<Part, String> {
        let doc = Document {
            title: d.title.clone(),
            format: d.format,
            text: d.text.clone(),
            sections: d.sections.clone(),
        };
        let part = doc.select(range, d.unit())?;
        let first = part.sections.first().map_or(0, |s| s.number);
        let start = d
            .sections
            .iter()
            .find(|s| s.number == first)
            .map_or(0, |s| s.start);
        Ok(Part {
            range,
            bytes: start..start + part.text.len(),
            label: part_label(d.unit(), &part.sections, d.sections.len()),
            title: part.title,
        })
    }
}

/// One way to read a document that does not fit.
#[derive(Debug, Clone, PartialEq)]
pub struct Choice {
    pub label: String,
    pub range: SectionRange,
}

/// The choices for a document of `tokens` (counted over the bytes `tried`) when the context
/// leaves `room` for it, open until one is picked or Esc.
#[derive(Debug, Clone, PartialEq)]
pub struct Picker {
    pub tokens: usize,
    pub room: usize,
    pub choices: Vec<Choice>,
    pub selected: usize,
}

/// Most choices listed besides the beginning and the end (typing `:pages` reaches the rest).
const MAX_CHOICES: usize = 24;

impl Picker {
    pub fn new(d: &DocView, tried: Range<usize>, tokens: usize, room: usize) -> Picker {
        // Tokens per byte vary between sections: aim a little under the room.
        let per_byte = tokens as f64 / tried.len().max(1) as f64;
        let budget = room as f64 * 0.9;
        let est = |r: &Range<usize>| (r.len() as f64 * per_byte) as usize;
        let secs = &d.sections;
        let unit = d.unit();
        let mut choices = Vec::new();
        let range = |a: usize, b: usize| SectionRange {
            first: secs[a].number,
            last: Some(secs[b].number),
        };
        let span = |a: usize, b: usize| secs[a].start..secs[b].end;
        let label = |a: usize, b: usize| {
            if a == b {
                format!("{unit} {}", secs[a].number)
            } else {
                format!("{unit}s {}–{}", secs[a].number, secs[b].number)
            }
        };
        if secs.is_empty() {
            return Picker {
                tokens,
                room,
                choices,
                selected: 0,
            };
        }
        // The longest run from `a` forward that fits (at least one section).
        let run_from = |a: usize| {
            let mut b = a;
            while b + 1 < secs.len() && (est(&span(a, b + 1)) as f64) <= budget {
                b += 1;
            }
            b
        };
        let head = run_from(0);
        let mut tail = secs.len() - 1;
        while tail > 0 && (est(&span(tail - 1, secs.len() - 1)) as f64) <= budget {
            tail -= 1;
        }
        let last = secs.len() - 1;
        choices.push(Choice {
            label: format!(
                "the beginning: {} · ≈ {} tok",
                label(0, head),
                fmt::int(est(&span(0, head)))
            ),
            range: range(0, head),
        });
        choices.push(Choice {
            label: format!(
                "the end: {} · ≈ {} tok",
                label(tail, last),
                fmt::int(est(&span(tail, last)))
            ),
            range: range(tail, last),
        });
        if secs.iter().any(|s| s.title.is_some()) {
            // Chapters by their titles, those that fit.
            for (i, s) in secs.iter().enumerate() {
                let t = est(&(s.start..s.end));
                if (t as f64) <= budget && choices.len() < MAX_CHOICES + 2 {
                    let title = s
                        .title
                        .as_deref()
                        .map_or(String::new(), |t| format!(": {}", printable(t.trim())));
                    choices.push(Choice {
                        label: format!("{}{title} · ≈ {} tok", label(i, i), fmt::int(t)),
                        range: range(i, i),
                    });
                }
            }
        } else {
            // The rest of the page map in runs that fit, after the beginning.
            let mut a = head + 1;
            while a < tail && choices.len() < MAX_CHOICES + 2 {
                let b = run_from(a).min(last);
                choices.push(Choice {
                    label: format!("{} · ≈ {} tok", label(a, b), fmt::int(est(&span(a, b)))),
                    range: range(a, b),
                });
                a = b + 1;
            }
        }
        Picker {
            tokens,
            room,
            choices,
            selected: 0,
        }
    }

    pub fn up(&mut self) {
        self.selected = self.selected.saturating_sub(1);
    }

    pub fn down(&mut self) {
        self.selected = (self.selected + 1).min(self.choices.len().saturating_sub(1));
    }

    pub fn chosen(&self) -> Option<&Choice> {
        self.choices.get(self.selected)
    }
}

pub fn draw(f: &mut Frame, app: &App, p: &Picker) {
    let area = f.area();
    let title = app.doc().map_or(String::new(), |d| printable(&d.title));
    let mut lines = vec![
        Line::raw(format!(
            "“{title}” is {} tokens; the context leaves {} for it.",
            fmt::int(p.tokens),
            fmt::int(p.room)
        )),
        Line::styled(
            "Read a part: Up/Down, Enter reads it · or type :pages A-B · Esc closes",
            app.theme.dim,
        ),
        Line::default(),
    ];
    let h = (area.height as usize)
        .saturating_sub(2 + lines.len())
        .max(1);
    // Keep the selected choice on screen.
    let first = p.selected.saturating_sub(h.saturating_sub(1));
    for (i, c) in p.choices.iter().enumerate().skip(first).take(h) {
        let (mark, style) = if i == p.selected {
            ("▶ ", app.theme.accent)
        } else {
            ("  ", ratatui::style::Style::default())
        };
        lines.push(Line::styled(format!("{mark}{}", c.label), style));
    }
    let w = (lines.iter().map(Line::width).max().unwrap_or(0) as u16 + 4).min(area.width);
    let r = centered(area, w, (lines.len() as u16 + 2).min(area.height));
    f.render_widget(Clear, r);
    let block = Block::bordered()
        .border_type(BorderType::Rounded)
        .border_style(app.theme.accent)
        .title(" Longer than the context ");
    f.render_widget(Paragraph::new(lines).block(block), r);
}
