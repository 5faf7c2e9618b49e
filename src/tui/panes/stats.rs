//! The stats panel (model, read progress, where the window is, the KV cache by layer kind,
//! rates, memory) and its one-line form for narrow screens.

use ratatui::text::{Line, Span};

use crate::engine::{Stats, kv_other_fa_decode};
use crate::tui::app::App;
use crate::tui::fmt;

/// The engine's latest numbers and the process's memory.
#[derive(Debug, Clone, Default)]
pub struct StatsPane {
    pub engine: Stats,
    pub rss_bytes: Option<u64>,
    /// Positions the newest query of a sliding layer sees besides the sink.
    pub window: Option<(usize, usize)>,
}

impl StatsPane {
    /// A new window from a progress report or stats, when they carry one.
    pub fn window_at(&mut self, window: Option<(usize, usize)>) {
        self.window = window.or(self.window);
    }

    pub fn update(&mut self, s: Stats) {
        self.window_at(s.window);
        self.engine = s;
    }
}

fn kv(label: &str, value: String, app: &App) -> Line<'static> {
    Line::from(vec![
        Span::styled(format!("{label:<9}"), app.theme.dim),
        Span::raw(value),
    ])
}

fn kv_lines(app: &App) -> Vec<Line<'static>> {
    let c = &app.stats.engine.cache;
    let total_tokens: usize = c.tokens_per_layer.iter().sum();
    let per_token = c.bytes_held as f64 / total_tokens.max(1) as f64;
    let recipe = app.read_with().unwrap_or(app.recipe());
    let mut rows = vec![
        kv("KV cache", fmt::mib(c.bytes_held), app),
        kv(" alloc", fmt::mib(c.bytes_allocated), app),
    ];
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
                fmt::int(most),
                fmt::mib((tokens as f64 * per_token) as usize)
            ),
            app,
        ));
    }
    // The memory story: what the recipe keeps, and what the other FA-decode setting would.
    let layers = c.tokens_per_layer.len();
    if let Some(other) = kv_other_fa_decode(c, recipe, layers) {
        let (keeps, alt) = if recipe.fa_decode {
            (
                format!("keeps all {} tok", fmt::int(c.next_pos)),
                format!("off: {} (F4)", fmt::mib(other)),
            )
        } else {
            let kept = (recipe.sink + recipe.window.unwrap_or(0)).min(c.next_pos);
            (
                format!("keeps {} tok/sliding", fmt::int(kept)),
                format!("on: {} (F4)", fmt::mib(other)),
            )
        };
        rows.push(kv("FA dec", keeps, app));
        rows.push(kv("", alt, app));
    }
    rows
}

/// "tokens 40,960–43,008 of 120,311" and "pages 88–92" for the window.
fn window_text(app: &App) -> (String, Option<String>) {
    let Some((a, b)) = app.stats.window else {
        return ("–".into(), None);
    };
    let of = app.stats.engine.cache.next_pos.max(b);
    let tokens = format!("{}–{} of {}", fmt::int(a), fmt::int(b), fmt::int(of));
    let pages = app.doc().and_then(|d| {
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

pub fn lines(app: &App) -> Vec<Line<'static>> {
    let s = &app.stats.engine;
    let mut rows = Vec::new();
    match app.model() {
        Some(m) => rows.push(kv("model", format!("{} · {}", m.name, m.device), app)),
        None if app.model_failed().is_some() => rows.push(Line::styled(
            format!("{:<9}failed: see the chat", "model"),
            app.theme.error,
        )),
        None => rows.push(kv("model", format!("loading {}…", app.model_hint()), app)),
    }
    if app.document().is_some() {
        let t = &app.tokens;
        let read = if t.doc_tokens > 0 {
            format!(
                "{} / {} tok",
                fmt::int(t.read_tokens),
                fmt::int(t.doc_tokens)
            )
        } else {
            "–".into()
        };
        rows.push(kv("read", read, app));
        // Which part of the document that is: never more than was read.
        if let Some(l) = app.read_label() {
            rows.push(kv("", l, app));
        }
    }
    let (tokens, pages) = window_text(app);
    rows.push(kv("window", tokens, app));
    if let Some(p) = pages {
        rows.push(kv("", p, app));
    }
    rows.extend(kv_lines(app));
    // While a read runs, its live rate; after it, the engine's figure for it.
    let prefill = match app.progress() {
        Some(p) if p.reading => p.rate(app.now()).unwrap_or(0.0),
        _ => s.read_tokens_per_s,
    };
    rows.push(kv("prefill", fmt::rate(prefill, "tok/s"), app));
    rows.push(kv("decode", fmt::rate(s.decode_tokens_per_s, "tok/s"), app));
    rows.push(kv("TTFT", fmt::seconds(s.time_to_first_token_s), app));
    rows.push(kv(
        "memory",
        app.stats
            .rss_bytes
            .map_or("–".into(), |b| fmt::mib(b as usize)),
        app,
    ));
    rows
}

/// The stats in one line, for screens too narrow for the side panels.
pub fn compact(app: &App) -> Line<'static> {
    let s = &app.stats.engine;
    Line::from(format!(
        " KV {} · window {} · decode {} · F2–F7 recipe",
        fmt::mib(s.cache.bytes_held),
        window_text(app).0,
        fmt::rate(s.decode_tokens_per_s, "tok/s"),
    ))
}
