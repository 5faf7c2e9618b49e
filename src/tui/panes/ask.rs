//! The question box: the text being typed (several lines, a cursor) and the history of the
//! questions sent.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::text::Line;
use ratatui::widgets::Paragraph;

use super::block;
use crate::tui::app::{App, Focus};
use crate::tui::input::{History, Input};
use crate::tui::keys::Action;
use crate::tui::markdown::{printable, str_width};

#[derive(Debug, Clone, Default)]
pub struct AskPane {
    pub input: Input,
    pub history: History,
}

impl AskPane {
    /// An editing key; Up and Down past the first or last line walk the history.
    pub fn edit(&mut self, a: Action) {
        let i = &mut self.input;
        match a {
            Action::Char(c) => i.insert_char(c),
            Action::Newline => i.newline(),
            Action::Backspace => i.backspace(),
            Action::Delete => i.delete(),
            Action::DeleteWord => i.delete_word(),
            Action::ClearInput => i.clear(),
            Action::Left => i.left(),
            Action::Right => i.right(),
            Action::Home => i.home(),
            Action::End => i.end(),
            Action::Up if !i.up() => {
                let current = i.text();
                if let Some(h) = self.history.older(&current) {
                    self.input.set_text(h);
                }
            }
            Action::Down => {
                if !i.down()
                    && let Some(h) = self.history.newer()
                {
                    self.input.set_text(h);
                }
            }
            _ => {}
        }
    }

    /// The question leaves the box for the history.
    pub fn sent(&mut self, question: &str) {
        self.history.push(question);
        self.input.clear();
    }
}

pub fn draw(f: &mut Frame, app: &App, r: Rect) {
    let input = &app.ask.input;
    let busy = if app.answering() {
        " · answering (Esc cancels)"
    } else {
        ""
    };
    let block = block(format!(" Ask{busy} "), app.focus() == Focus::Input, app);
    let inner = block.inner(r);
    f.render_widget(block, r);
    if input.is_empty() {
        let hint = "Enter sends · Alt-Enter new line · Up: history · F1 help";
        f.render_widget(Paragraph::new(hint).style(app.theme.dim), inner);
    }
    let (row, col) = input.cursor();
    let h = inner.height as usize;
    let first = row.saturating_sub(h.saturating_sub(1));
    let lines = input.lines();
    let cursor_x = str_width(&lines[row].chars().take(col).collect::<String>());
    let shift = cursor_x.saturating_sub((inner.width as usize).saturating_sub(1));
    if !input.is_empty() {
        let shown: Vec<Line> = lines
            .iter()
            .skip(first)
            .take(h)
            .map(|l| Line::raw(printable(l)))
            .collect();
        f.render_widget(Paragraph::new(shown).scroll((0, shift as u16)), inner);
    }
    if app.focus() == Focus::Input && !app.show_help() && inner.height > 0 {
        f.set_cursor_position((
            inner.x + (cursor_x - shift) as u16,
            inner.y + (row - first) as u16,
        ));
    }
}
