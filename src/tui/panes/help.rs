//! The help overlay (F1, or `?` on an empty question): every row of the key map, and where
//! the log goes.

use ratatui::Frame;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, BorderType, Clear, Padding, Paragraph};

use crate::tui::app::App;
use crate::tui::keys::KEYMAP;
use crate::tui::layout::centered;
use crate::tui::markdown::str_width;

pub fn draw(f: &mut Frame, app: &App) {
    let area = f.area();
    let key_w = KEYMAP.iter().map(|b| str_width(b.keys)).max().unwrap_or(0) + 2;
    let mut lines: Vec<Line> = KEYMAP
        .iter()
        .map(|b| {
            Line::from(vec![
                Span::styled(format!("{:<key_w$}", b.keys), app.theme.accent),
                Span::raw(b.what),
            ])
        })
        .collect();
    lines.push(Line::default());
    let logs = app
        .log_path
        .as_ref()
        .map_or("logs: not written (no data dir)".to_string(), |p| {
            format!("logs: {}", p.display())
        });
    lines.push(Line::styled(logs, app.theme.dim));
    let w = (lines.iter().map(Line::width).max().unwrap_or(0) as u16 + 4).min(area.width);
    let h = (lines.len() as u16 + 2).min(area.height);
    let r = centered(area, w, h);
    f.render_widget(Clear, r);
    let block = Block::bordered()
        .border_type(BorderType::Rounded)
        .border_style(app.theme.accent)
        .title(" Keys (any key closes) ");
    f.render_widget(
        Paragraph::new(lines).block(block.padding(Padding::horizontal(1))),
        r,
    );
}
