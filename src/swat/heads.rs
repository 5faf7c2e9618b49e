//! Per-head attention statistics: how much weight a head hands out per query, how many keys it
//! saturates and how far back it looks. They say why a slope layout trains worse: a sigmoid
//! head whose scores sit far above 0 gives weight ≈ 1 to every key (its output is a plain sum
//! of ~W values) and passes no gradient to q·k through them (σ' = σ(1−σ) < 0.01 above 0.99).

use candle_core::{DType, Tensor};
use serde::Serialize;

use super::Result;
use super::model::SwatModel;

/// A weight above this is saturated: σ' < 0.01, so q·k no longer moves it.
pub const SATURATED: f32 = 0.99;

#[derive(Debug, Clone, Serialize)]
pub struct HeadStats {
    pub layer: usize,
    pub head: usize,
    pub slope: f64,
    pub offset: f64,
    /// Mean Σ_j a_ij per query (1 under softmax).
    pub mass: f64,
    /// Mean number of keys per query with a weight above [`SATURATED`].
    pub saturated: f64,
    /// Mean distance i−j of the attended keys, weighted by attention.
    pub distance: f64,
    /// Share of the mass on keys at distance ≥ S/2 (S: the window, or the sequence length).
    pub far_share: f64,
    /// Queries counted: those that see a whole window (under full attention, the second half
    /// of each sequence), so that every head is measured on the same number of keys.
    pub queries: usize,
}

/// Statistics per layer and head over the sequences `tokens` (each `[B, T]`, from position 0).
pub fn head_stats(model: &SwatModel, tokens: &[Tensor]) -> Result<Vec<HeadStats>> {
    let cfg = model.config();
    let rule = model.rule();
    let heads = cfg.heads;
    // (mass, saturated, Σ a·d, far mass, queries) per layer and head.
    let mut acc = vec![[0f64; 5]; cfg.layers * heads];
    for x in tokens {
        let t = x.dim(1)?;
        let span = cfg.window.unwrap_or(t).min(t);
        let first_q = if cfg.window.is_some() {
            span - 1
        } else {
            t / 2
        };
        for (layer, blocks) in model.attention_weights(x)?.into_iter().enumerate() {
            for b in blocks {
                let (_, hh, len, keys) = b.weights.dims4()?;
                let w = b
                    .weights
                    .to_dtype(DType::F32)?
                    .flatten_all()?
                    .to_vec1::<f32>()?;
                for (n, a) in w.into_iter().enumerate() {
                    let (c, r) = (n % keys, n / keys % len);
                    let (i, j) = (b.q_start + r, b.k_start + c);
                    if i < first_q || j > i {
                        continue;
                    }
                    let h = n / (keys * len) % hh;
                    let s = &mut acc[layer * heads + h];
                    let d = (i - j) as f64;
                    s[0] += a as f64;
                    s[1] += f64::from(u8::from(a > SATURATED));
                    s[2] += a as f64 * d;
                    if 2 * (i - j) >= span {
                        s[3] += a as f64;
                    }
                    if j == i {
                        s[4] += 1.0; // one diagonal entry per counted query
                    }
                }
            }
        }
    }
    Ok(acc
        .iter()
        .enumerate()
        .map(|(n, s)| {
            let (layer, head) = (n / heads, n % heads);
            let q = s[4].max(1.0);
            HeadStats {
                layer,
                head,
                slope: rule.slopes[head],
                offset: rule.offsets[head],
                mass: s[0] / q,
                saturated: s[1] / q,
                distance: s[2] / s[0].max(f64::MIN_POSITIVE),
                far_share: s[3] / s[0].max(f64::MIN_POSITIVE),
                queries: s[4] as usize,
            }
        })
        .collect())
}

/// Heads grouped by the sign of their slope, averaged over layers: the report's view.
#[derive(Debug, Clone, Serialize)]
pub struct GroupStats {
    /// `negative`, `positive` or `none` (no ALiBi).
    pub slopes: &'static str,
    pub heads: usize,
    pub min_slope: f64,
    pub max_slope: f64,
    pub mass: f64,
    pub saturated: f64,
    pub distance: f64,
    pub far_share: f64,
}

pub fn groups(stats: &[HeadStats]) -> Vec<GroupStats> {
    let mut out = Vec::new();
    for (name, pick) in [
        ("negative", (|s: f64| s < 0.0) as fn(f64) -> bool),
        ("positive", |s| s > 0.0),
        ("none", |s| s == 0.0),
    ] {
        let g: Vec<&HeadStats> = stats.iter().filter(|s| pick(s.slope)).collect();
        if g.is_empty() {
            continue;
        }
        let n = g.len() as f64;
        let mean = |f: fn(&HeadStats) -> f64| g.iter().map(|s| f(s)).sum::<f64>() / n;
        let mut heads: Vec<usize> = g.iter().map(|s| s.head).collect();
        heads.sort_unstable();
        heads.dedup();
        out.push(GroupStats {
            slopes: name,
            heads: heads.len(),
            min_slope: g.iter().map(|s| s.slope).fold(f64::INFINITY, f64::min),
            max_slope: g.iter().map(|s| s.slope).fold(f64::NEG_INFINITY, f64::max),
            mass: mean(|s| s.mass),
            saturated: mean(|s| s.saturated),
            distance: mean(|s| s.distance),
            far_share: mean(|s| s.far_share),
        });
    }
    out
}

/// One row per layer and head.
pub fn markdown(stats: &[HeadStats]) -> String {
    let mut s = String::from(
        "| layer | head | slope | offset | mass/query | saturated keys/query | mean distance | far-half share |\n|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for h in stats {
        s += &format!(
            "| {} | {} | {:+.4} | {:.1} | {:.3} | {:.1} | {:.1} | {:.3} |\n",
            h.layer, h.head, h.slope, h.offset, h.mass, h.saturated, h.distance, h.far_share
        );
    }
    s
}

/// One row per model and slope sign.
pub fn groups_markdown(models: &[(String, Vec<GroupStats>)]) -> String {
    let mut s = String::from(
        "| model | slopes | heads | slope range | mass/query | saturated keys/query | mean distance | far-half share |\n|---|---|---:|---|---:|---:|---:|---:|\n",
    );
    for (name, gs) in models {
        for g in gs {
            let range = if g.slopes == "none" {
                "0".to_string()
            } else {
                format!("{:+.4} … {:+.4}", g.min_slope, g.max_slope)
            };
            s += &format!(
                "| {name} | {} | {} | {range} | {:.3} | {:.1} | {:.1} | {:.3} |\n",
                g.slopes, g.heads, g.mass, g.saturated, g.distance, g.far_share
            );
        }
    }
    s
}
