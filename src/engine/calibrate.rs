//! `--full-layers auto`: which layers keep full attention, chosen by a calibration read.
//! Full attention over real prose scores each layer by the attention mass its queries put
//! outside sink + window ([`Model::outside_mass`]): the layers that would lose the most if
//! they turned sliding keep full attention. Which layers those are depends on the model
//! (the SWAA paper found odd layers for Qwen3-4B, even ones for Llama-3.1-8B). Scores are
//! kept per model, window, sink and text under the cache dir.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{EngineError, Result};
use crate::model::Model;
use crate::recipe::{AttnRule, LayerSet, Recipe, Share};
use crate::tokenizer::ChatTokenizer;

/// The calibration prose when none is given: the bundled sample (real sentences, ~4k tokens).
pub const PROSE: &str = include_str!("../../assets/sample.md");

/// Per-layer scores of one calibration read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    pub window: usize,
    pub sink: usize,
    /// Tokens of prose read.
    pub tokens: usize,
    /// Mean attention mass outside sink + window, per layer (0–1).
    pub scores: Vec<f64>,
}

impl Calibration {
    /// Reads `text` with full attention and scores every layer. At most 3 × (sink + W)
    /// tokens are read: enough queries with keys outside the window, at a bounded cost.
    pub fn run(
        model: &Model,
        tok: &ChatTokenizer,
        text: &str,
        window: usize,
        sink: usize,
    ) -> Result<Self> {
        let mut tokens = tok
            .encode(text, false)
            .map_err(|e| EngineError::Tokenizer(e.to_string()))?;
        if tokens.len() <= sink + window {
            return Err(EngineError::Unsupported(format!(
                "a calibration read needs more than sink + window = {} tokens of prose and the text has {}: give a longer --text or a smaller --window",
                sink + window,
                tokens.len()
            )));
        }
        tokens.truncate(3 * (sink + window));
        let rule = AttnRule {
            window: Some(window),
            sink,
        };
        let scores = model.outside_mass(&tokens, rule)?;
        Ok(Calibration {
            window,
            sink,
            tokens: tokens.len(),
            scores,
        })
    }

    /// The `share` of layers with the highest scores, in layer order (ties: the lower layer).
    pub fn pick(&self, share: Share) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.scores.len()).collect();
        order.sort_by(|&a, &b| self.scores[b].total_cmp(&self.scores[a]).then(a.cmp(&b)));
        let mut kept = order[..share.of(self.scores.len())].to_vec();
        kept.sort_unstable();
        kept
    }

    /// The scores of `model` (named by `model_id`, its weights' SHA-256) for this window and
    /// sink over `text`: from the cache dir when an earlier run stored them, else measured and
    /// stored. Without an id nothing is stored: the scores could belong to another model.
    pub fn cached(
        model: &Model,
        tok: &ChatTokenizer,
        model_id: Option<&str>,
        text: &str,
        window: usize,
        sink: usize,
    ) -> Result<Self> {
        let path = model_id.and_then(|id| cache_file(id, text, window, sink));
        if let Some(c) = path
            .as_ref()
            .and_then(|p| std::fs::read(p).ok())
            .and_then(|b| serde_json::from_slice::<Calibration>(&b).ok())
            .filter(|c| c.window == window && c.sink == sink)
            .filter(|c| c.scores.len() == model.config().layers)
        {
            return Ok(c);
        }
        let c = Calibration::run(model, tok, text, window, sink)?;
        if let Some(p) = path {
            // A cache that cannot be written costs a calibration next time, nothing more.
            let stored = p
                .parent()
                .map_or(Ok(()), std::fs::create_dir_all)
                .and_then(|_| {
                    let tmp = p.with_extension("tmp");
                    std::fs::write(&tmp, serde_json::to_vec(&c).unwrap_or_default())?;
                    std::fs::rename(&tmp, &p)
                });
            if let Err(e) = stored {
                tracing::warn!("calibration not cached at {}: {e}", p.display());
            }
        }
        Ok(c)
    }

    /// A Markdown table of the scores, with the layers `auto` and `auto:1/4` keep.
    pub fn table(&self) -> String {
        let (half, quarter) = (self.pick(Share::OneIn(2)), self.pick(Share::OneIn(4)));
        let mut s = String::from("| layer | mass outside sink + window | auto | auto:1/4 |\n");
        s += "|---:|---:|:---:|:---:|\n";
        let mark = |set: &[usize], l: usize| if set.contains(&l) { "full" } else { "" };
        for (l, m) in self.scores.iter().enumerate() {
            s += &format!(
                "| {l} | {m:.4} | {} | {} |\n",
                mark(&half, l),
                mark(&quarter, l)
            );
        }
        s
    }
}

/// Where the scores of one model, text, window and sink are kept.
fn cache_file(model_id: &str, text: &str, window: usize, sink: usize) -> Option<PathBuf> {
    let mut h = Sha256::new();
    for part in [model_id, text, &window.to_string(), &sink.to_string()] {
        h.update(part.len().to_le_bytes());
        h.update(part.as_bytes());
    }
    let key: String = h.finalize()[..12]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let dir = crate::hub::cache_dir().ok()?;
    Some(dir.join("calibration").join(format!("{key}.json")))
}

/// `recipe` with `auto` full layers turned into the calibrated list (no window: nothing to
/// choose); any other recipe as it is.
pub fn resolve(
    model: &Model,
    tok: &ChatTokenizer,
    model_id: Option<&str>,
    mut recipe: Recipe,
) -> Result<Recipe> {
    let LayerSet::Auto(share) = recipe.full_layers else {
        return Ok(recipe);
    };
    recipe.full_layers = match recipe.window {
        Some(w) => {
            let c = Calibration::cached(model, tok, model_id, PROSE, w, recipe.sink)?;
            LayerSet::List(c.pick(share))
        }
        None => LayerSet::None,
    };
    Ok(recipe)
}
