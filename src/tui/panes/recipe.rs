//! The recipe panel: the recipe the next answer uses, one control per key (F2–F7), and the
//! recipe the engine's cache was read with (which decides whether a change re-reads).

use ratatui::text::{Line, Span};

use crate::recipe::{LayerSet, Preset, Recipe, RecipeDefaults};
use crate::tui::app::App;
use crate::tui::fmt;

#[derive(Debug, Clone)]
pub struct RecipePane {
    /// The recipe the next question uses (the engine has it or is about to).
    pub recipe: Recipe,
    /// The recipe the engine's cache was (or is being) read with.
    pub read_with: Option<Recipe>,
    /// Recipe changes sent that the engine has not confirmed yet (`Event::RecipeApplied`).
    pub pending: usize,
}

impl Default for RecipePane {
    fn default() -> Self {
        RecipePane {
            recipe: Recipe::full(),
            read_with: None,
            pending: 0,
        }
    }
}

/// One recipe control of the recipe panel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecipeKnob {
    Window,
    Sink,
    FaDecode,
    Interleave,
    Think,
    Preset,
}

impl RecipeKnob {
    /// The recipe after one press of this knob's key.
    pub fn apply(self, r: &Recipe, d: RecipeDefaults, ctx: usize) -> Recipe {
        let mut n = r.clone();
        match self {
            RecipeKnob::Window => {
                let sizes = window_sizes(d, ctx);
                n.window = match r.window {
                    None => Some(sizes[0]),
                    Some(w) => sizes.iter().copied().find(|&s| s > w),
                };
            }
            RecipeKnob::Sink => n.sink = if r.sink > 0 { 0 } else { d.sink },
            RecipeKnob::FaDecode => n.set_fa_decode(!r.fa_decode),
            RecipeKnob::Interleave => {
                n.full_layers = match r.full_layers {
                    LayerSet::None => LayerSet::Every(2),
                    LayerSet::Every(2) => LayerSet::Every(4),
                    _ => LayerSet::None,
                }
            }
            RecipeKnob::Think => n.think = !r.think,
            RecipeKnob::Preset => {
                let at = r
                    .preset_name(d)
                    .and_then(|p| Preset::ALL.iter().position(|&n| n == p));
                let next = at.map_or(0, |i| (i + 1) % Preset::ALL.len());
                n = Recipe::preset(Preset::ALL[next], d);
                n.think = r.think;
            }
        }
        n
    }
}

/// The windows F2 cycles through: ¼×…4× the model's default, below its context.
pub fn window_sizes(d: RecipeDefaults, ctx: usize) -> Vec<usize> {
    let mut v: Vec<usize> = [
        d.window / 4,
        d.window / 2,
        d.window,
        d.window * 2,
        d.window * 4,
    ]
    .into_iter()
    .filter(|&w| w >= 16 && w < ctx.max(17))
    .collect();
    v.dedup();
    if v.is_empty() {
        v.push(d.window.max(1));
    }
    v
}

pub fn lines(app: &App) -> Vec<Line<'static>> {
    let r = app.recipe();
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
            r.window.map_or("full attention".into(), fmt::int),
        ),
        row(
            "F3",
            "sink",
            if r.sink > 0 {
                fmt::int(r.sink)
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
