//! The screen, pane by pane: each module holds its pane's state, how that state changes and
//! how it is drawn. [`render`] draws an [`App`] where [`layout`](super::layout) puts each pane,
//! without changing it.

pub mod ask;
pub mod chat;
pub mod compare;
pub mod document;
pub mod help;
pub mod part;
pub mod recipe;
pub mod stats;
pub mod status;

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::widgets::{Block, BorderType, Paragraph};

use super::app::App;
use super::layout::layout;

pub fn render(f: &mut Frame, app: &App) {
    let p = layout(f.area(), app);
    status::title(f, app, p.title);
    if let Some(d) = p.doc {
        document::draw(f, app, d);
    }
    chat::draw(f, app, p.chat);
    if let Some(s) = p.side {
        side_panels(f, app, s);
    }
    if let Some(c) = p.compact {
        f.render_widget(Paragraph::new(stats::compact(app)).style(app.theme.dim), c);
    }
    ask::draw(f, app, p.input);
    if let Some(r) = p.progress {
        status::progress(f, app, r);
    }
    status::status(f, app, p.status);
    if let Some(c) = app.comparison() {
        compare::draw(f, app, c);
    }
    if let Some(p) = app.picker() {
        part::draw(f, app, p);
    }
    if app.show_help() {
        help::draw(f, app);
    }
}

/// A pane's border, in the accent colour while it has the focus.
fn block<'a>(title: String, focused: bool, app: &App) -> Block<'a> {
    let b = Block::bordered()
        .border_type(BorderType::Rounded)
        .title(title);
    if focused {
        b.border_style(app.theme.accent)
    } else {
        b.border_style(app.theme.dim)
    }
}

/// Stats above, the recipe below (as tall as its rows).
fn side_panels(f: &mut Frame, app: &App, r: Rect) {
    let stats = stats::lines(app);
    let recipe = recipe::lines(app);
    let [top, bottom] = Layout::vertical([
        Constraint::Min(stats.len() as u16 + 2),
        Constraint::Length(recipe.len() as u16 + 2),
    ])
    .areas(r);
    f.render_widget(
        Paragraph::new(stats).block(block(" Stats ".into(), false, app)),
        top,
    );
    f.render_widget(
        Paragraph::new(recipe).block(block(" Recipe ".into(), false, app)),
        bottom,
    );
}
