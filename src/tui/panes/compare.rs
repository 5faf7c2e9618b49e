//! `:eval` / F9: one question under every named preset, shown side by side in an overlay
//! that stays up (behind other keys) until Esc or F9 closes it.

use ratatui::Frame;
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, BorderType, Clear, Paragraph};

use crate::engine::RecipeAnswer;
use crate::engine::Stats;
use crate::tui::app::App;
use crate::tui::fmt;
use crate::tui::layout::centered;
use crate::tui::markdown::{self, printable};

#[derive(Debug, Clone, PartialEq)]
pub enum CompareState {
    Running,
    Done,
    Cancelled,
    Failed(String),
}

/// One question under every named preset.
#[derive(Debug, Clone)]
pub struct Comparison {
    pub question: String,
    /// Preset names, in the order they run.
    pub names: Vec<String>,
    /// The preset answering now.
    pub current: usize,
    /// Answers as they stream in, one per preset.
    pub partial: Vec<String>,
    /// Each answer's numbers once it has streamed (the read time comes with its row).
    pub stats: Vec<Option<Stats>>,
    /// Each recipe's answer with its costs, as soon as that recipe is done.
    pub rows: Vec<Option<RecipeAnswer>>,
    pub state: CompareState,
}

impl Comparison {
    pub fn new(question: String, names: Vec<String>) -> Self {
        let n = names.len();
        Comparison {
            question,
            names,
            current: 0,
            partial: vec![String::new(); n],
            stats: vec![None; n],
            rows: vec![None; n],
            state: CompareState::Running,
        }
    }

    /// The preset at `index` starts answering.
    pub fn starts(&mut self, index: usize) {
        self.current = index.min(self.names.len().saturating_sub(1));
        self.partial[self.current].clear();
    }

    pub fn token(&mut self, text: &str) {
        self.partial[self.current].push_str(text);
    }

    /// The recipe at `index` is done (answered, or skipped: its answer is cancelled).
    pub fn finished(&mut self, index: usize, answer: RecipeAnswer) {
        if let Some(r) = self.rows.get_mut(index) {
            *r = Some(answer);
        }
    }

    /// The comparison as Markdown for the saved conversation: a table of costs and each
    /// recipe's answer.
    pub fn markdown(&self) -> String {
        let mut s = format!("\n## Comparison: {}\n\n", self.question);
        s += "| recipe | prefill s | decode tok/s | KV MiB | answer |\n|---|---:|---:|---:|---|\n";
        for (name, row) in self.names.iter().zip(&self.rows) {
            let Some(a) = row else {
                s += &format!("| {name} | – | – | – | not run |\n");
                continue;
            };
            let st = &a.answer.stats;
            let mut text = answer_text(&a.answer.text).replace('|', "\\|");
            if a.answer.cancelled {
                text = format!("(skipped) {text}");
            }
            s += &format!(
                "| {name} | {:.2} | {:.1} | {:.1} | {} |\n",
                a.read_seconds + st.prefill_seconds,
                st.decode_tokens_per_s,
                fmt::in_mib(st.cache.bytes_held),
                text.trim()
            );
        }
        if self.state == CompareState::Cancelled {
            s += "\n*stopped before every recipe answered*\n";
        }
        s
    }

    /// Stats after tokens are the current answer's; those before are its read's.
    pub fn record(&mut self, s: &Stats) {
        if !self.partial[self.current].is_empty() {
            self.stats[self.current] = Some(s.clone());
        }
    }
}

/// The answer without its thinking block, on one line (the table has no room for more).
fn answer_text(s: &str) -> String {
    let s = s.rsplit_once("</think>").map_or(s, |(_, after)| after);
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// One row per preset, its costs, and its answer wrapped in the last column.
pub fn draw(f: &mut Frame, app: &App, c: &Comparison) {
    let area = f.area();
    // The widest screen the overlay may take: a margin of 2 columns and 1 row.
    let (max_w, max_h) = (
        area.width.saturating_sub(4.min(area.width / 4)),
        area.height.saturating_sub(2.min(area.height / 4)),
    );
    const NAME: usize = 17;
    const COLS: usize = NAME + 10 + 10 + 10 + 2;
    let answer_w = (max_w.saturating_sub(2) as usize)
        .saturating_sub(COLS)
        .max(8);
    let footer = match &c.state {
        CompareState::Running => {
            "Esc skips this recipe · Ctrl-C stops · the chat and the cache are put back afterwards"
        }
        CompareState::Done => {
            "Esc/F9 closes · prefill: re-read (if the recipe reads differently) + question"
        }
        CompareState::Cancelled => "cancelled · Esc/F9 closes",
        CompareState::Failed(_) => "failed (see below) · Esc/F9 closes",
    };
    // Header, a blank line and the footer, inside the border.
    let rows_h = (max_h as usize).saturating_sub(2 + 3);
    let per_row = (rows_h / c.names.len().max(1)).max(1);
    let mut lines = vec![Line::styled(
        format!(
            "{:<NAME$}{:>10}{:>10}{:>10}  answer",
            "recipe", "prefill s", "tok/s", "KV MiB"
        ),
        app.theme.heading,
    )];
    for (i, name) in c.names.iter().enumerate() {
        let done = c.rows[i].as_ref();
        let (numbers, text, style) = match done {
            Some(a) => {
                let s = &a.answer.stats;
                let text = answer_text(&a.answer.text);
                let skipped = a.answer.cancelled;
                (
                    format!(
                        "{:>10.2}{:>10.1}{:>10.1}",
                        a.read_seconds + s.prefill_seconds,
                        s.decode_tokens_per_s,
                        fmt::in_mib(s.cache.bytes_held)
                    ),
                    match (skipped, text.is_empty()) {
                        (true, true) => "skipped".to_string(),
                        (true, false) => format!("(skipped) {text}"),
                        _ => text,
                    },
                    if skipped {
                        app.theme.dim
                    } else {
                        Style::default()
                    },
                )
            }
            None => {
                let running = i == c.current && c.state == CompareState::Running;
                let partial = answer_text(&c.partial[i]);
                let text = match (running, i < c.current, partial.is_empty()) {
                    (_, _, false) => partial,
                    (true, _, true) => "…".into(),
                    (false, false, true) => "waiting".into(),
                    (false, true, true) => "".into(),
                };
                let numbers = match &c.stats[i] {
                    Some(s) => format!(
                        "{:>10}{:>10.1}{:>10.1}",
                        "…",
                        s.decode_tokens_per_s,
                        fmt::in_mib(s.cache.bytes_held)
                    ),
                    None => format!("{:>10}{:>10}{:>10}", "–", "–", "–"),
                };
                (numbers, text, app.theme.dim)
            }
        };
        let wrapped = markdown::wrap_ranges(&text, answer_w);
        let label = if i == c.current && c.state == CompareState::Running {
            format!("▶ {name}")
        } else {
            format!("  {name}")
        };
        for (j, w) in wrapped.iter().take(per_row).enumerate() {
            let mut piece = printable(&text[w.clone()]);
            if j + 1 == per_row && wrapped.len() > per_row {
                piece.push('…');
            }
            let head = if j == 0 {
                format!("{label:<NAME$}{numbers}  ")
            } else {
                " ".repeat(COLS)
            };
            lines.push(Line::from(vec![
                Span::styled(head, app.theme.accent),
                Span::styled(piece, style),
            ]));
        }
    }
    if let CompareState::Failed(e) = &c.state {
        lines.push(Line::styled(format!("✗ {e}"), app.theme.error));
    }
    lines.push(Line::default());
    lines.push(Line::styled(footer, app.theme.dim));
    let h = (lines.len() as u16 + 2).min(max_h);
    let r = centered(area, max_w, h);
    f.render_widget(Clear, r);
    let title = format!(" Compare recipes: “{}” ", printable(&c.question));
    let block = Block::bordered()
        .border_type(BorderType::Rounded)
        .border_style(app.theme.accent)
        .title(title);
    f.render_widget(Paragraph::new(lines).block(block), r);
}
