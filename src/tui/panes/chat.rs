//! The chat pane: the conversation, each answer with the recipe and numbers that produced
//! it, scrolled up from the newest; and the conversation as Markdown for Ctrl-S.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::Modifier;
use ratatui::text::Line;
use ratatui::widgets::Paragraph;

use super::block;
use super::compare::Comparison;
use crate::engine::{Answer, Stats};
use crate::tui::app::{App, Focus, ModelInfo};
use crate::tui::fmt;
use crate::tui::markdown::{self, printable};

#[derive(Debug, Clone, PartialEq)]
pub enum TurnState {
    /// Sent; the engine has not produced a token yet (it may still be reading).
    Waiting,
    Streaming,
    Done,
    Cancelled,
    Failed(String),
}

/// One question and its answer, with the recipe and numbers that produced it.
#[derive(Debug, Clone, PartialEq)]
pub struct Turn {
    pub question: String,
    pub answer: String,
    pub recipe: String,
    pub stats: Option<Stats>,
    pub state: TurnState,
    /// Why the answer stopped, when not the model's own end (a loop, the token cap).
    pub note: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct ChatPane {
    pub turns: Vec<Turn>,
    /// Chat lines scrolled up from the newest.
    pub scroll: usize,
    pub show_thinking: bool,
}

impl ChatPane {
    pub fn ask(&mut self, question: String, recipe: String) {
        self.turns.push(Turn {
            question,
            answer: String::new(),
            recipe,
            stats: None,
            state: TurnState::Waiting,
            note: None,
        });
        self.scroll = 0;
    }

    /// The answer's text so far, when an answer is waiting or streaming.
    pub fn token(&mut self, text: &str) {
        if let Some(t) = self.turns.last_mut()
            && matches!(t.state, TurnState::Waiting | TurnState::Streaming)
        {
            t.state = TurnState::Streaming;
            t.answer.push_str(text);
        }
    }

    pub fn done(&mut self, a: &Answer) {
        if let Some(t) = self.turns.last_mut() {
            t.answer = a.text.clone();
            t.recipe = a.recipe.to_string();
            t.state = if a.cancelled {
                TurnState::Cancelled
            } else {
                TurnState::Done
            };
            t.stats = Some(a.stats.clone());
            // Book mode: what the question read and the pages the answer drew on.
            let focus = a.focus.as_ref().map(|f| f.summary());
            t.note = match (a.note.clone(), focus) {
                (Some(n), Some(f)) => Some(format!("{f} · {n}")),
                (n, f) => f.or(n),
            };
        }
    }

    /// The answer running ends without one: cancelled or failed with `error`.
    pub fn stopped(&mut self, error: Option<String>) {
        if let Some(t) = self.turns.last_mut() {
            t.state = match error {
                None => TurnState::Cancelled,
                Some(e) => TurnState::Failed(e),
            };
        }
    }

    /// Scrolls `by` lines towards the newest, within `max` lines up.
    pub fn scroll_by(&mut self, by: isize, max: usize) {
        let up = self.scroll as isize - by;
        self.scroll = up.clamp(0, max as isize) as usize;
    }

    /// The conversation as Markdown, each answer with its recipe and numbers, and the
    /// comparisons (after how many turns each ran) in their place. `read`: which part of the
    /// document the cache held ("pages 1–42 of 311").
    pub fn transcript(
        &self,
        document: Option<&str>,
        read: Option<&str>,
        model: Option<&ModelInfo>,
        comparisons: &[(usize, Comparison)],
    ) -> String {
        let mut s = String::from("# swaa-chat conversation\n\n");
        if let Some(title) = document {
            s += &format!("Document: {title}\n");
        }
        if let Some(r) = read {
            s += &format!("Read: {r}\n");
        }
        if let Some(m) = model {
            s += &format!("Model: {} on {}\n", m.name, m.device);
        }
        let compared_after = |n: usize| {
            comparisons
                .iter()
                .filter(move |(at, _)| *at == n)
                .map(|(_, c)| c.markdown())
        };
        s.extend(compared_after(0));
        for (i, t) in self.turns.iter().enumerate() {
            s += &format!("\n## {}\n\n{}\n", t.question, t.answer.trim());
            let mut note = format!("recipe {}", t.recipe);
            if let Some(st) = &t.stats {
                note += &format!(
                    " · prompt {} tok (read at {:.0} tok/s) · {} tok at {:.1} tok/s · TTFT {} · KV {}",
                    fmt::int(st.prompt_tokens),
                    st.read_tokens_per_s,
                    st.generated_tokens,
                    st.decode_tokens_per_s,
                    fmt::seconds(st.time_to_first_token_s),
                    fmt::mib(st.cache.bytes_held)
                );
            }
            match &t.state {
                TurnState::Cancelled => note += " · cancelled",
                TurnState::Failed(e) => note += &format!(" · failed: {e}"),
                _ => {}
            }
            if let Some(n) = &t.note {
                note += &format!(" · {n}");
            }
            s += &format!("\n*{note}*\n");
            s.extend(compared_after(i + 1));
        }
        s
    }
}

/// An answer without its thinking block, as a reader copies it.
pub fn answer_only(answer: &str) -> String {
    answer
        .rsplit_once("</think>")
        .map_or(answer, |(_, after)| after)
        .trim()
        .to_string()
}

/// The conversation as screen lines of `width` cells.
pub fn lines(app: &App, width: usize) -> Vec<Line<'static>> {
    let t = &app.theme;
    let mut out: Vec<Line<'static>> = Vec::new();
    if app.chat.turns.is_empty() {
        let hint = match (app.doc(), app.model()) {
            // A failed model stays on screen until another one opens.
            _ if app.model_failed().is_some() => format!(
                "The model failed to load: {}. Type :model NAME or :device cpu to open another, or Ctrl-C to quit.",
                app.model_failed().unwrap_or_default()
            ),
            (Some(d), _) if app.picker().is_some() => format!(
                "“{}” is longer than the context: pick the part to read, or type :pages A-B.",
                d.title
            ),
            (Some(d), _) => format!("Ask a question about “{}” below.", d.title),
            (None, Some(m)) if app.document().is_none() => {
                format!("A plain chat with {}: ask anything below.", m.name)
            }
            _ => "Loading…".to_string(),
        };
        let style = if app.model_failed().is_some() {
            t.error
        } else {
            t.dim
        };
        for r in markdown::wrap_ranges(&hint, width) {
            out.push(Line::styled(printable(&hint[r]), style));
        }
    }
    for (i, turn) in app.chat.turns.iter().enumerate() {
        if i > 0 {
            out.push(Line::default());
        }
        for q in turn.question.lines() {
            let q = format!("› {q}");
            for r in markdown::wrap_ranges(&q, width) {
                out.push(Line::styled(
                    printable(&q[r]),
                    t.accent.add_modifier(Modifier::BOLD),
                ));
            }
        }
        out.extend(markdown::render(
            &turn.answer,
            width,
            app.chat.show_thinking,
            t,
        ));
        let (note, style) = match &turn.state {
            TurnState::Waiting if app.reading() => {
                ("… waiting for the reading to finish".to_string(), t.dim)
            }
            TurnState::Waiting => ("… reading the question".to_string(), t.dim),
            TurnState::Streaming => ("▍".to_string(), t.accent),
            TurnState::Done => (answer_note(turn), t.dim),
            TurnState::Cancelled => (format!("— cancelled · {}", turn.recipe), t.dim),
            TurnState::Failed(e) => (format!("✗ {e}"), t.error),
        };
        // The footer wraps rather than clipping at the pane's edge.
        for r in markdown::wrap_ranges(&note, width) {
            out.push(Line::styled(printable(&note[r]), style));
        }
        if let Some(n) = &turn.note {
            for r in markdown::wrap_ranges(n, width) {
                out.push(Line::styled(printable(&n[r]), t.accent));
            }
        }
    }
    out
}

fn answer_note(turn: &Turn) -> String {
    match &turn.stats {
        Some(s) => format!(
            "— {} · {} tok at {:.1} tok/s · TTFT {}",
            turn.recipe,
            s.generated_tokens,
            s.decode_tokens_per_s,
            fmt::seconds(s.time_to_first_token_s)
        ),
        None => format!("— {}", turn.recipe),
    }
}

pub fn draw(f: &mut Frame, app: &App, r: Rect) {
    let scrolled = if app.chat.scroll > 0 {
        " · scrolled (End: newest)"
    } else {
        ""
    };
    let block = block(format!(" Chat{scrolled} "), app.focus() == Focus::Chat, app);
    let inner = block.inner(r);
    f.render_widget(block, r);
    let lines = lines(app, inner.width as usize);
    let h = inner.height as usize;
    let bottom = lines
        .len()
        .saturating_sub(app.chat.scroll.min(lines.len().saturating_sub(h)));
    let start = bottom.saturating_sub(h);
    let shown: Vec<Line> = lines[start..bottom].to_vec();
    f.render_widget(Paragraph::new(shown), inner);
}
