//! Geometry: where each pane goes on a screen of a given size. Used by the drawing and by the
//! state (mouse hit tests, page sizes, the document's wrap width), so both agree.

use ratatui::layout::{Constraint, Layout, Rect};

use super::app::{App, StatusKind};
use super::markdown;

/// Where each part of the screen goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Panes {
    pub title: Rect,
    pub doc: Option<Rect>,
    pub chat: Rect,
    /// Stats and recipe panels (wide enough screens).
    pub side: Option<Rect>,
    /// One line of stats instead of the side panels (narrow screens).
    pub compact: Option<Rect>,
    pub input: Rect,
    pub progress: Option<Rect>,
    pub status: Rect,
}

const SIDE_WIDTH: u16 = 38;

/// Pane widths depend only on the screen size and whether a document was given, so the
/// document's wrapping changes only on resize.
pub fn layout(area: Rect, app: &App) -> Panes {
    let input_h = app.ask.input.lines().len().clamp(1, 5) as u16 + 2;
    let show_progress = app.progress().is_some()
        || app.reading()
        || app.download().is_some()
        || app.parsing().is_some()
        || app.comparing();
    let narrow = area.width < 80;
    // An error gets the lines it needs (up to 6): its advice is the end of the message.
    let status_h = match app.status() {
        Some((StatusKind::Error, m)) => {
            markdown::wrap_ranges(&format!("✗ {m}"), area.width.max(1) as usize)
                .len()
                .clamp(1, 6) as u16
        }
        _ => 1,
    };
    let [title, body, compact, input, progress, status] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Fill(1),
        Constraint::Length(narrow as u16),
        Constraint::Length(input_h),
        Constraint::Length(show_progress as u16),
        Constraint::Length(status_h),
    ])
    .areas(area);
    let (main, side) = if narrow {
        (body, None)
    } else {
        let [m, s] =
            Layout::horizontal([Constraint::Fill(1), Constraint::Length(SIDE_WIDTH)]).areas(body);
        (m, Some(s))
    };
    let (doc, chat) = if app.document().is_none() {
        (None, main)
    } else if area.width >= 120 {
        let [d, c] = Layout::horizontal([Constraint::Percentage(55), Constraint::Percentage(45)])
            .areas(main);
        (Some(d), c)
    } else {
        let [d, c] =
            Layout::vertical([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(main);
        (Some(d), c)
    };
    Panes {
        title,
        doc,
        chat,
        side,
        compact: narrow.then_some(compact),
        input,
        progress: show_progress.then_some(progress),
        status,
    }
}

/// Text columns of the document pane: inside the border, less the minimap and a gap.
pub fn doc_text_width(doc: Rect) -> u16 {
    doc.width.saturating_sub(2 + 3).max(1)
}

/// Lines inside a bordered pane (at least one).
pub fn inner_height(pane: Rect) -> usize {
    pane.height.saturating_sub(2).max(1) as usize
}

/// A box of `w` × `h` in the middle of `area` (an overlay).
pub fn centered(area: Rect, w: u16, h: u16) -> Rect {
    Rect::new(
        area.x + (area.width - w) / 2,
        area.y + (area.height - h) / 2,
        w,
        h,
    )
}
