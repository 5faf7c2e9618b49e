//! SWAA recipes: which keys each query may attend, per layer and phase.
//!
//! The mask rule lives in [`AttnRule::allows`]; the key spans a chunk needs
//! ([`AttnRule::key_span`]) and what a cache may drop ([`AttnRule::first_needed`]) are
//! derived from the same two numbers, and tests pin them against `allows`.
//! Semantics: `../shared/DESIGN.md`, section "The recipes".

use std::fmt;
use std::ops::Range;
use std::str::FromStr;

use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};

/// Layers that keep full attention in prefill and decode (interleaved FA layers).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum LayerSet {
    #[default]
    None,
    /// Layers `l` with `l % n == 1 % n`: every 2nd is `1,3,5,…`, every 4th is `1,5,9,…`.
    Every(usize),
    /// Layers `0,2,4,…` (the SWAA paper found even layers best for some models).
    Even,
    List(Vec<usize>),
    /// The layers a calibration read scores highest (`engine::calibrate`); the session turns
    /// it into a `List` before anything runs, so it never reaches a forward pass.
    Auto(Share),
}

/// How many layers `auto` keeps: a fraction of them, or a count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Share {
    /// One layer in n (2: half, 4: a quarter).
    OneIn(usize),
    Count(usize),
}

impl Share {
    /// Layers kept out of `layers`, at least one.
    pub fn of(self, layers: usize) -> usize {
        match self {
            Share::OneIn(n) => layers.div_ceil(n.max(1)),
            Share::Count(c) => c,
        }
        .clamp(1, layers.max(1))
    }
}

impl LayerSet {
    pub fn contains(&self, layer: usize) -> bool {
        match self {
            LayerSet::None | LayerSet::Auto(_) => false,
            LayerSet::Every(n) => layer % n == 1 % n,
            LayerSet::Even => layer.is_multiple_of(2),
            LayerSet::List(l) => l.contains(&layer),
        }
    }
}

impl FromStr for LayerSet {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let bad = || {
            format!(
                "bad layer set '{s}': use none, odd, even, every:N, auto (half), auto:1/4, auto:N or a list like 1,5,9"
            )
        };
        match s {
            "" | "none" => Ok(LayerSet::None),
            "odd" => Ok(LayerSet::Every(2)),
            "even" => Ok(LayerSet::Even),
            "auto" => Ok(LayerSet::Auto(Share::OneIn(2))),
            _ if s.starts_with("auto:") => {
                let n = &s["auto:".len()..];
                let share = match n.strip_prefix("1/") {
                    Some(d) => d.parse().ok().filter(|&d| d >= 1).map(Share::OneIn),
                    None => n.parse().ok().filter(|&c| c >= 1).map(Share::Count),
                };
                share.map(LayerSet::Auto).ok_or_else(bad)
            }
            _ if s.starts_with("every:") => match s["every:".len()..].parse::<usize>() {
                Ok(n) if n >= 1 => Ok(LayerSet::Every(n)),
                _ => Err(bad()),
            },
            _ => s
                .split(',')
                .map(|p| p.trim().parse::<usize>().map_err(|_| bad()))
                .collect::<Result<Vec<_>, _>>()
                .map(LayerSet::List),
        }
    }
}

impl fmt::Display for LayerSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LayerSet::None => write!(f, "none"),
            LayerSet::Every(2) => write!(f, "odd"),
            LayerSet::Every(n) => write!(f, "every:{n}"),
            LayerSet::Even => write!(f, "even"),
            LayerSet::Auto(Share::OneIn(2)) => write!(f, "auto"),
            LayerSet::Auto(Share::OneIn(n)) => write!(f, "auto:1/{n}"),
            LayerSet::Auto(Share::Count(c)) => write!(f, "auto:{c}"),
            LayerSet::List(l) => {
                let s: Vec<String> = l.iter().map(|x| x.to_string()).collect();
                write!(f, "{}", s.join(","))
            }
        }
    }
}

impl From<LayerSet> for String {
    fn from(l: LayerSet) -> String {
        l.to_string()
    }
}

impl TryFrom<String> for LayerSet {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

/// Which RoPE a sliding layer uses when the model runs with RoPE scaling: the scaled one (as
/// full layers do, and as the model's authors define it) or the model's original, unscaled
/// one (a sliding layer never sees a distance beyond W while reading). Scaled is the default:
/// on real weights at 32k–126k it found as many needles or more in 3 of 4 model × recipe pairs
/// (27 vs 23 of 72, NOTES.md, 2026-12-02), and under FA decode the answer's tokens in sliding
/// layers look at every distance anyway. Full layers always use the scaled RoPE.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RopeChoice {
    #[default]
    Scaled,
    Original,
}

impl FromStr for RopeChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "scaled" => Ok(RopeChoice::Scaled),
            "original" => Ok(RopeChoice::Original),
            other => Err(format!("bad RoPE choice '{other}': use scaled or original")),
        }
    }
}

impl fmt::Display for RopeChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RopeChoice::Scaled => "scaled",
            RopeChoice::Original => "original",
        })
    }
}

/// Whether a token is part of the prompt or generated by the model. The prompt's last
/// segment — the question and the template tokens after the document — is `Question`: it
/// attends like the rest of the prompt unless `fa_question` is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Prefill,
    Question,
    Decode,
}

/// A recipe: how attention is restricted while reading and answering.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recipe {
    /// Sliding window W; `None` is full attention everywhere.
    pub window: Option<usize>,
    /// Sink tokens K: the first K positions stay visible to every query.
    pub sink: usize,
    /// Generated tokens attend everything, in every layer.
    pub fa_decode: bool,
    /// Layers that always use full attention.
    pub full_layers: LayerSet,
    /// Switch on the model's thinking mode (or ask for step-by-step reasoning).
    pub think: bool,
    /// The RoPE of sliding layers when the model's RoPE is scaled.
    #[serde(default)]
    pub sliding_rope: RopeChoice,
    /// The question (the prompt after the document) attends everything, in every layer.
    #[serde(default)]
    pub fa_question: bool,
}

/// Window and sink that a named preset uses; they scale with the model's context.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecipeDefaults {
    pub window: usize,
    pub sink: usize,
}

impl RecipeDefaults {
    /// W = ctx/16 and K = W/32, clamped: 2048/64 for 32k-context models, 512/16 for 8k.
    pub fn for_context(ctx: usize) -> Self {
        let window = (ctx / 16).clamp(128, 4096);
        RecipeDefaults {
            window,
            sink: (window / 32).max(4),
        }
    }
}

/// The named recipes. `swaa` is the app's default.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum Preset {
    /// Full attention everywhere (the baseline).
    Full,
    /// Every layer sees only the last W tokens.
    Swa,
    /// SWA prefill, full-attention question and decode.
    SwaFadec,
    /// SWA plus the first K tokens (attention sinks).
    SwaSink,
    /// SWA on even layers, full attention on odd layers.
    SwaInterleave,
    /// Window + sink + interleave, full attention over the question and decode: the
    /// recommended combination.
    #[default]
    Swaa,
}

impl Preset {
    pub const ALL: [Preset; 6] = [
        Preset::Full,
        Preset::Swa,
        Preset::SwaFadec,
        Preset::SwaSink,
        Preset::SwaInterleave,
        Preset::Swaa,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Preset::Full => "full",
            Preset::Swa => "swa",
            Preset::SwaFadec => "swa-fadec",
            Preset::SwaSink => "swa-sink",
            Preset::SwaInterleave => "swa-interleave",
            Preset::Swaa => "swaa",
        }
    }
}

impl fmt::Display for Preset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Preset {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Preset::ALL
            .into_iter()
            .find(|p| p.name() == s.trim())
            .ok_or_else(|| {
                let names: Vec<&str> = Preset::ALL.iter().map(|p| p.name()).collect();
                format!("unknown recipe '{s}': use one of {}", names.join(", "))
            })
    }
}

/// A recipe as asked for — in config.toml's `[recipe]` or by flags: a preset and what to
/// change in it. Every field is optional: unset keeps the preset's (or the model's) value.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, clap::Args)]
#[serde(default, deny_unknown_fields)]
pub struct RecipeOverrides {
    /// full, swa, swa-fadec, swa-sink, swa-interleave or swaa (default).
    #[arg(long = "recipe", value_enum)]
    pub preset: Option<Preset>,
    /// Sliding window W (tokens; default: the model's, 2048 for 32k-context models).
    #[arg(long)]
    pub window: Option<usize>,
    /// Sink tokens K (default: the preset's).
    #[arg(long)]
    pub sink: Option<usize>,
    /// Full-attention decode (true/false).
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub fa_decode: Option<bool>,
    /// Full-attention layers: none, odd, every:N or a list like 1,5,9.
    #[arg(long)]
    pub full_layers: Option<LayerSet>,
    /// Thinking mode (true/false).
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub think: Option<bool>,
    /// RoPE of sliding layers when the model's is scaled: scaled (default) or original.
    #[arg(long)]
    pub sliding_rope: Option<RopeChoice>,
    /// Full attention over the question: the prompt after the document attends every key
    /// (true/false; default: as --fa-decode). Costs O(question × document); sliding layers
    /// then keep every token.
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub fa_question: Option<bool>,
}

impl RecipeOverrides {
    /// These overrides, with `base`'s where these leave a field unset (flags over config).
    pub fn or(self, base: RecipeOverrides) -> RecipeOverrides {
        RecipeOverrides {
            preset: self.preset.or(base.preset),
            window: self.window.or(base.window),
            sink: self.sink.or(base.sink),
            fa_decode: self.fa_decode.or(base.fa_decode),
            full_layers: self.full_layers.or(base.full_layers),
            think: self.think.or(base.think),
            sliding_rope: self.sliding_rope.or(base.sliding_rope),
            fa_question: self.fa_question.or(base.fa_question),
        }
    }
}

impl Recipe {
    pub fn full() -> Self {
        Recipe {
            window: None,
            sink: 0,
            fa_decode: false,
            full_layers: LayerSet::None,
            think: false,
            sliding_rope: RopeChoice::default(),
            fa_question: false,
        }
    }

    /// A named preset with the model's default window and sink.
    pub fn preset(preset: Preset, d: RecipeDefaults) -> Self {
        let swa = Recipe {
            window: Some(d.window),
            ..Recipe::full()
        };
        match preset {
            Preset::Full => Recipe::full(),
            Preset::Swa => swa,
            Preset::SwaFadec => Recipe {
                fa_decode: true,
                fa_question: true,
                ..swa
            },
            Preset::SwaSink => Recipe {
                sink: d.sink,
                ..swa
            },
            Preset::SwaInterleave => Recipe {
                full_layers: LayerSet::Every(2),
                ..swa
            },
            Preset::Swaa => Recipe {
                sink: d.sink,
                fa_decode: true,
                fa_question: true,
                full_layers: LayerSet::Every(2),
                ..swa
            },
        }
    }

    /// The one way from what was asked for to a recipe: the preset (default `swaa`) with the
    /// model's defaults, then each override. A window given with the `full` preset means
    /// plain sliding-window attention.
    pub fn resolve(o: &RecipeOverrides, defaults: RecipeDefaults) -> Result<Self, String> {
        if o.window == Some(0) {
            return Err(
                "--window ([recipe] window) must be at least 1 token: leave it out for the model's default".into(),
            );
        }
        let d = RecipeDefaults {
            window: o.window.unwrap_or(defaults.window),
            ..defaults
        };
        let mut r = Recipe::preset(o.preset.unwrap_or_default(), d);
        if let Some(w) = o.window {
            r.window = Some(w);
        }
        if let Some(k) = o.sink {
            r.sink = k;
        }
        if let Some(f) = o.fa_decode {
            r.fa_decode = f;
        }
        if let Some(l) = &o.full_layers {
            r.full_layers = l.clone();
        }
        r.think = o.think.unwrap_or(false);
        r.sliding_rope = o.sliding_rope.unwrap_or_default();
        // The question attends everything wherever the answer does (FA decode keeps every key
        // anyway, so it costs no memory): it took swaa's needle accuracy to full attention's
        // on both qwen presets (NOTES.md, 2026-12-02).
        r.fa_question = o.fa_question.unwrap_or(r.fa_decode);
        Ok(r)
    }

    /// FA decode on or off, with full attention over the question following it as `resolve`
    /// does by default (turning FA decode off to save memory must stop the question from
    /// keeping every key too).
    pub fn set_fa_decode(&mut self, on: bool) {
        self.fa_decode = on;
        self.fa_question = on;
    }

    /// Refuses values the model cannot run, naming the setting and the allowed range: a
    /// window or sink longer than the context, a full-attention layer the model lacks.
    pub fn check(&self, layers: usize, ctx: usize) -> Result<(), String> {
        if let Some(w) = self.window
            && w > ctx
        {
            return Err(format!(
                "window {w} is longer than the context of {ctx} tokens (--ctx, ctx in config.toml): give --window ([recipe] window) 1 to {ctx}, a larger --ctx, or the full recipe"
            ));
        }
        if self.sink > ctx {
            return Err(format!(
                "sink {} is longer than the context of {ctx} tokens: give --sink ([recipe] sink) 0 to {ctx}",
                self.sink
            ));
        }
        if let LayerSet::List(l) = &self.full_layers
            && let Some(bad) = l.iter().find(|&&i| i >= layers)
        {
            return Err(format!(
                "full-attention layer {bad} (--full-layers, [recipe] full_layers) does not exist: the model has {layers} layers, give layers 0 to {}",
                layers.saturating_sub(1)
            ));
        }
        if let LayerSet::Auto(Share::Count(c)) = self.full_layers
            && c > layers
        {
            return Err(format!(
                "--full-layers auto:{c} keeps more layers than the model has: use auto:1 to auto:{layers}"
            ));
        }
        Ok(())
    }

    /// The preset this recipe equals under the given defaults, if any.
    pub fn preset_name(&self, d: RecipeDefaults) -> Option<Preset> {
        let mut plain = self.clone();
        plain.think = false;
        plain.sliding_rope = RopeChoice::default();
        Preset::ALL
            .into_iter()
            .find(|&p| Recipe::preset(p, d) == plain)
    }

    pub fn is_full_layer(&self, layer: usize) -> bool {
        self.window.is_none() || self.full_layers.contains(layer)
    }

    /// The rule for one layer in one phase.
    pub fn rule(&self, layer: usize, phase: Phase) -> AttnRule {
        let full_phase = match phase {
            Phase::Prefill => false,
            Phase::Question => self.fa_question,
            Phase::Decode => self.fa_decode,
        };
        if self.is_full_layer(layer) || full_phase {
            AttnRule::FULL
        } else {
            AttnRule {
                window: self.window,
                sink: self.sink,
            }
        }
    }

    /// The RoPE a layer uses when the model's is scaled: sliding layers follow `sliding_rope`.
    pub fn layer_rope(&self, layer: usize) -> RopeChoice {
        if self.is_full_layer(layer) {
            RopeChoice::Scaled
        } else {
            self.sliding_rope
        }
    }

    /// A layer's cache may drop old tokens only if no phase will look at them again.
    pub fn layer_evicts(&self, layer: usize) -> bool {
        !self.fa_decode && !self.fa_question && !self.is_full_layer(layer)
    }

    /// Tokens a layer's cache holds to run `tokens` positions in chunks of `chunk`: all of
    /// them, or sink + W + one chunk in a layer that evicts.
    pub fn cache_tokens(&self, layer: usize, tokens: usize, chunk: usize) -> usize {
        if self.layer_evicts(layer) {
            (self.sink + self.window.unwrap_or(0) + chunk).min(tokens)
        } else {
            tokens
        }
    }

    /// Changing window, sink, interleave or the sliding layers' RoPE changes what prefill
    /// computed; so does turning FA decode or FA over the question on after a cache that evicted.
    pub fn needs_reread(&self, built_with: &Recipe) -> bool {
        self.window != built_with.window
            || (self.window.is_some()
                && (self.sink != built_with.sink
                    || self.full_layers != built_with.full_layers
                    || self.sliding_rope != built_with.sliding_rope))
            || ((self.fa_decode || self.fa_question) && built_with.evicts())
    }

    /// Whether some layer's cache drops old tokens under this recipe.
    fn evicts(&self) -> bool {
        self.window.is_some() && !self.fa_decode && !self.fa_question
    }

    /// Parse `name` or `name+key=value,…` style overrides are handled by the CLI; this is the
    /// short description shown in tables.
    pub fn describe(&self) -> String {
        match self.window {
            None => "full".into(),
            Some(w) => {
                let mut s = format!("W={w}");
                if self.sink > 0 {
                    s += &format!(" K={}", self.sink);
                }
                if self.fa_decode {
                    s += " fa-dec";
                }
                if self.fa_question {
                    s += " fa-q";
                }
                if self.full_layers != LayerSet::None {
                    s += &format!(" full={}", self.full_layers);
                }
                if self.sliding_rope != RopeChoice::default() {
                    s += &format!(" sliding-rope={}", self.sliding_rope);
                }
                s
            }
        }
    }
}

/// The attention rule of one layer in one phase: causal, optionally windowed with sinks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AttnRule {
    pub window: Option<usize>,
    pub sink: usize,
}

/// Keys a chunk of queries needs: the sink range and the recent range (disjoint, ordered).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySpan {
    pub sink: Range<usize>,
    pub recent: Range<usize>,
}

impl KeySpan {
    pub fn len(&self) -> usize {
        self.sink.len() + self.recent.len()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Positions in order, sink first.
    pub fn positions(&self) -> impl Iterator<Item = usize> + '_ {
        self.sink.clone().chain(self.recent.clone())
    }
}

impl AttnRule {
    pub const FULL: AttnRule = AttnRule {
        window: None,
        sink: 0,
    };

    /// THE mask rule. Query `q` may attend key `k` iff `k <= q` and, in a sliding layer,
    /// `q - k < W` (the W most recent keys, itself included) or `k < K` (a sink token).
    pub fn allows(&self, q: usize, k: usize) -> bool {
        k <= q
            && match self.window {
                None => true,
                Some(w) => q - k < w || k < self.sink,
            }
    }

    /// The keys that queries `q0..q1` may attend: exactly the `k` with `allows(q, k)` for some q.
    /// Its size is O(K + W + C), whatever `q0`.
    pub fn key_span(&self, q0: usize, q1: usize) -> KeySpan {
        let lo = self.first_needed(q0);
        KeySpan {
            sink: 0..self.sink.min(lo),
            recent: lo..q1,
        }
    }

    /// The oldest non-sink key that a query at position `q` or later can attend.
    pub fn first_needed(&self, q: usize) -> usize {
        match self.window {
            None => 0,
            Some(w) => (q + 1).saturating_sub(w),
        }
    }

    pub fn is_full(&self) -> bool {
        self.window.is_none()
    }

    /// [`Self::allows`] as an additive `[C, N]` f32 mask (0 or -inf) for queries `queries`
    /// against the keys of `span`, computed on the device. Pinned to `allows` by a test.
    pub fn mask_tensor(
        &self,
        queries: Range<usize>,
        span: &KeySpan,
        device: &Device,
    ) -> candle_core::Result<Tensor> {
        let (c, n) = (queries.len(), span.len());
        // Positions are exact in f32 up to 2^24 tokens.
        let q = Tensor::from_vec(
            queries.map(|p| p as f32).collect::<Vec<_>>(),
            (c, 1),
            device,
        )?;
        let k = Tensor::from_vec(
            span.positions().map(|p| p as f32).collect::<Vec<_>>(),
            (1, n),
            device,
        )?;
        let diff = q.broadcast_sub(&k)?;
        let mut ok = diff.ge(0f64)?;
        if let Some(w) = self.window {
            let recent = diff.lt(w as f64)?;
            let sink = k.lt(self.sink as f64)?.broadcast_as((c, n))?;
            ok = (ok * recent.maximum(&sink)?)?;
        }
        let zero = Tensor::zeros((c, n), DType::F32, device)?;
        let neg = Tensor::full(f32::NEG_INFINITY, (c, n), device)?;
        ok.where_cond(&zero, &neg)
    }
}

impl fmt::Display for Recipe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.describe())?;
        if self.think {
            write!(f, " think")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pins the rule to DESIGN.md on a hand-written table: W = 3, K = 2.
    #[test]
    fn mask_rule_matches_design_table() {
        let r = AttnRule {
            window: Some(3),
            sink: 2,
        };
        // Row q lists the keys 0..=7 that q may attend.
        let expected: [&str; 8] = [
            "1.......", "11......", "111.....", "1111....", "11111...", "11.111..", "11..111.",
            "11...111",
        ];
        for (q, row) in expected.iter().enumerate() {
            let got: String = (0..8)
                .map(|k| if r.allows(q, k) { '1' } else { '.' })
                .collect();
            assert_eq!(&got, row, "query {q}");
        }
        let no_sink = AttnRule {
            window: Some(1),
            sink: 0,
        };
        assert!(no_sink.allows(5, 5) && !no_sink.allows(5, 4));
        assert!(AttnRule::FULL.allows(100, 0) && !AttnRule::FULL.allows(3, 4));
    }

    #[test]
    fn key_span_is_exactly_the_allowed_keys() {
        for window in [None, Some(1), Some(3), Some(8)] {
            for sink in [0, 1, 3, 10] {
                let r = AttnRule { window, sink };
                for q0 in 0..20 {
                    for c in 1..6 {
                        let q1 = q0 + c;
                        let span: Vec<usize> = r.key_span(q0, q1).positions().collect();
                        let allowed: Vec<usize> = (0..q1)
                            .filter(|&k| (q0..q1).any(|q| r.allows(q, k)))
                            .collect();
                        assert_eq!(span, allowed, "{r:?} q0={q0} q1={q1}");
                        // Nothing below first_needed (outside the sink) is needed later.
                        let f = r.first_needed(q1);
                        for q in q1..q1 + 20 {
                            for k in r.sink..f.max(r.sink) {
                                assert!(!r.allows(q, k));
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn mask_tensor_equals_the_rule() {
        for window in [None, Some(1), Some(4)] {
            for sink in [0, 2] {
                let r = AttnRule { window, sink };
                for (q0, q1) in [(0, 7), (5, 12), (9, 10)] {
                    let span = r.key_span(q0, q1);
                    let m = r
                        .mask_tensor(q0..q1, &span, &Device::Cpu)
                        .unwrap()
                        .to_vec2::<f32>()
                        .unwrap();
                    let keys: Vec<usize> = span.positions().collect();
                    for (i, q) in (q0..q1).enumerate() {
                        for (j, &k) in keys.iter().enumerate() {
                            assert_eq!(m[i][j] == 0.0, r.allows(q, k), "{r:?} q={q} k={k}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn presets_and_rules_per_layer_and_phase() {
        let d = RecipeDefaults {
            window: 16,
            sink: 3,
        };
        let swaa = Recipe::preset(Preset::Swaa, d);
        assert_eq!(
            swaa.rule(0, Phase::Prefill),
            AttnRule {
                window: Some(16),
                sink: 3
            }
        );
        assert_eq!(swaa.rule(1, Phase::Prefill), AttnRule::FULL);
        assert_eq!(swaa.rule(0, Phase::Decode), AttnRule::FULL);
        assert!(!swaa.layer_evicts(0));
        let swa = Recipe::preset(Preset::Swa, d);
        assert_eq!(
            swa.rule(0, Phase::Decode),
            AttnRule {
                window: Some(16),
                sink: 0
            }
        );
        assert!(swa.layer_evicts(0));
        for p in Preset::ALL {
            assert_eq!(Recipe::preset(p, d).preset_name(d), Some(p));
            assert_eq!(p.name().parse::<Preset>(), Ok(p));
        }
        assert!("nope".parse::<Preset>().unwrap_err().contains("swa-fadec"));
        assert_eq!(
            RecipeDefaults::for_context(32768),
            RecipeDefaults {
                window: 2048,
                sink: 64
            }
        );
    }

    #[test]
    fn resolve_applies_overrides_over_the_preset() {
        let d = RecipeDefaults {
            window: 16,
            sink: 3,
        };
        let none = RecipeOverrides::default();
        assert_eq!(
            Recipe::resolve(&none, d),
            Ok(Recipe::preset(Preset::Swaa, d))
        );
        let flags = RecipeOverrides {
            preset: Some(Preset::Full),
            window: Some(8),
            ..Default::default()
        };
        let config = RecipeOverrides {
            preset: Some(Preset::Swaa),
            sink: Some(1),
            think: Some(true),
            ..Default::default()
        };
        let r = Recipe::resolve(&flags.or(config), d).unwrap();
        // The flag's preset wins; a window on `full` means plain SWA; config fills the rest.
        assert_eq!(
            (r.window, r.sink, r.fa_decode, r.think),
            (Some(8), 1, false, true)
        );
        let swaa = Recipe::resolve(
            &RecipeOverrides {
                window: Some(8),
                ..Default::default()
            },
            d,
        )
        .unwrap();
        assert_eq!((swaa.window, swaa.sink), (Some(8), 3));
        let zero = RecipeOverrides {
            window: Some(0),
            ..Default::default()
        };
        assert!(
            Recipe::resolve(&zero, d)
                .unwrap_err()
                .contains("at least 1")
        );
    }

    #[test]
    fn check_refuses_what_the_model_cannot_run() {
        let d = RecipeDefaults {
            window: 16,
            sink: 3,
        };
        let swaa = Recipe::preset(Preset::Swaa, d);
        assert_eq!(swaa.check(4, 64), Ok(()));
        let wide = Recipe {
            window: Some(100),
            ..swaa.clone()
        };
        assert!(wide.check(4, 64).unwrap_err().contains("1 to 64"));
        let sink = Recipe {
            sink: usize::MAX,
            ..swaa.clone()
        };
        assert!(sink.check(4, 64).unwrap_err().contains("sink"));
        let layers = Recipe {
            full_layers: "1,3,999".parse().unwrap(),
            ..swaa
        };
        assert!(layers.check(4, 64).unwrap_err().contains("layer 999"));
    }

    #[test]
    fn layer_sets_parse_and_select() {
        let odd: LayerSet = "odd".parse().unwrap();
        assert_eq!(
            (0..8).filter(|&l| odd.contains(l)).collect::<Vec<_>>(),
            [1, 3, 5, 7]
        );
        let e4: LayerSet = "every:4".parse().unwrap();
        assert_eq!(
            (0..12).filter(|&l| e4.contains(l)).collect::<Vec<_>>(),
            [1, 5, 9]
        );
        let list: LayerSet = "1,5,9".parse().unwrap();
        assert!(list.contains(5) && !list.contains(4));
        assert!("every:x".parse::<LayerSet>().is_err());
        assert_eq!(
            "every:4".parse::<LayerSet>().unwrap().to_string(),
            "every:4"
        );
    }

    #[test]
    fn reread_needed_only_when_prefill_changes() {
        let d = RecipeDefaults {
            window: 16,
            sink: 3,
        };
        let swa = Recipe::preset(Preset::Swa, d);
        let fadec = Recipe::preset(Preset::SwaFadec, d);
        assert!(
            fadec.needs_reread(&swa),
            "swa evicted: FA decode needs the full cache"
        );
        assert!(
            !swa.needs_reread(&fadec),
            "turning FA decode off applies at once"
        );
        assert!(Recipe::preset(Preset::SwaSink, d).needs_reread(&swa));
        let mut think = swa.clone();
        think.think = true;
        assert!(!think.needs_reread(&swa));
    }
}
