//! The help overlay (F1, `?` on an empty question, `:help`): every row of the key map with
//! its `:` command and pane letter, scrollable, and where the log goes.

use ratatui::Frame;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, BorderType, Clear, Padding, Paragraph};

use crate::tui::app::App;
use crate::tui::keys::KEYMAP;
use crate::tui::layout::centered;
use crate::tui::markdown::str_width;

/// The help's lines, built from the key map, for a box `width` columns wide inside: each row's
/// keys (and pane letter), what it does and its `:` command — on a line of its own when the
/// row would not fit.
pub fn lines(app: &App, width: usize) -> Vec<Line<'static>> {
    let keys = |b: &crate::tui::keys::Binding| match b.letter {
        Some(c) => format!("{}  {c}", b.keys),
        None => b.keys.to_string(),
    };
    let key_w = KEYMAP
        .iter()
        .map(|b| str_width(&keys(b)))
        .max()
        .unwrap_or(0)
        + 2;
    let mut lines = vec![Line::styled(
        "keys  letter (while a pane has the focus: Tab) · what · :command (typed in the question box)",
        app.theme.dim,
    )];
    for b in KEYMAP {
        let mut spans = vec![
            Span::styled(format!("{:<key_w$}", keys(b)), app.theme.accent),
            Span::raw(b.what),
        ];
        if !b.command.is_empty() {
            if key_w + str_width(b.what) + 2 + str_width(b.command) <= width {
                spans.push(Span::styled(format!("  {}", b.command), app.theme.heading));
            } else {
                lines.push(Line::from(spans));
                spans = vec![
                    Span::raw(" ".repeat(key_w)),
                    Span::styled(b.command, app.theme.heading),
                ];
            }
        }
        lines.push(Line::from(spans));
    }
    lines.push(Line::default());
    let logs = app
        .log_path
        .as_ref()
        .map_or("logs: not written (no data dir)".to_string(), |p| {
            format!("logs: {}", p.display())
        });
    lines.push(Line::styled(logs, app.theme.dim));
    lines
}

pub fn draw(f: &mut Frame, app: &App) {
    let area = f.area();
    // Inside the border and the padding.
    let lines = lines(app, area.width.saturating_sub(4) as usize);
    let w = (lines.iter().map(Line::width).max().unwrap_or(0) as u16 + 4).min(area.width);
    let h = (lines.len() as u16 + 2).min(area.height);
    let room = h.saturating_sub(2) as usize;
    let scroll = app.help_scroll().min(lines.len().saturating_sub(room));
    let r = centered(area, w, h);
    f.render_widget(Clear, r);
    let more = if lines.len() > room {
        " · Up/Down scroll"
    } else {
        ""
    };
    let block = Block::bordered()
        .border_type(BorderType::Rounded)
        .border_style(app.theme.accent)
        .title(format!(" Keys and commands (any key closes{more}) "));
    f.render_widget(
        Paragraph::new(lines)
            .scroll((scroll as u16, 0))
            .block(block.padding(Padding::horizontal(1))),
        r,
    );
}
