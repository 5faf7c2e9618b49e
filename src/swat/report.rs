//! The `swat compare` report: the ablation table (held-out loss, perplexity at 1×, 4× and 16×
//! the training length, training minutes), the training-loss curves in one SVG (the SWAT
//! paper's Figure 5), and per-head attention statistics of every model.

use std::path::Path;

use serde::Serialize;

use super::heads::{self, HeadStats};
use super::ppl::{self, Plot, PplRow};
use super::train::TrainSummary;
use super::{Result, SwatError};

#[derive(Debug, Clone, Serialize)]
pub struct ModelResult {
    pub name: String,
    /// The architecture, as [`super::SwatConfig::summary`] writes it.
    pub architecture: String,
    pub summary: TrainSummary,
    pub heads: Vec<HeadStats>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub title: String,
    /// Machine, data and training settings, one paragraph.
    pub setup: String,
    pub seq_len: usize,
    pub models: Vec<ModelResult>,
    pub ppl: Vec<PplRow>,
}

impl Report {
    fn lengths(&self) -> Vec<usize> {
        let mut l: Vec<usize> = self.ppl.iter().map(|r| r.length).collect();
        l.sort_unstable();
        l.dedup();
        l
    }

    fn ppl_at(&self, model: &str, length: usize) -> Option<f64> {
        self.ppl
            .iter()
            .find(|r| r.model == model && r.length == length)
            .map(|r| r.ppl)
    }

    /// Mean perplexity over the evaluated lengths (the paper ranks by its average).
    pub fn mean_ppl(&self, model: &str) -> f64 {
        let v: Vec<f64> = self
            .lengths()
            .iter()
            .filter_map(|&l| self.ppl_at(model, l))
            .collect();
        v.iter().sum::<f64>() / v.len().max(1) as f64
    }

    /// Model names from the best mean perplexity to the worst.
    pub fn ranking(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.models.iter().map(|m| m.name.as_str()).collect();
        names.sort_by(|a, b| self.mean_ppl(a).total_cmp(&self.mean_ppl(b)));
        names
    }

    /// The ablation table: one row per model.
    pub fn table(&self) -> String {
        let lengths = self.lengths();
        let mut s = String::from("| model | architecture | held-out loss |");
        for &l in &lengths {
            let times = if l % self.seq_len == 0 {
                format!(" ({}×)", l / self.seq_len)
            } else {
                String::new()
            };
            s += &format!(" ppl@{}{times} |", ppl::length_label(l));
        }
        s += " mean ppl | rank | steps | minutes | tok/s |\n|---|---|---:|";
        s += &"---:|".repeat(lengths.len() + 5);
        s += "\n";
        let ranking = self.ranking();
        for m in &self.models {
            s += &format!(
                "| {} | {} | {:.3} |",
                m.name,
                m.architecture,
                m.summary.val_loss()
            );
            for &l in &lengths {
                match self.ppl_at(&m.name, l) {
                    Some(p) => s += &format!(" {p:.3} |"),
                    None => s += " – |",
                }
            }
            let rank = ranking.iter().position(|n| *n == m.name).unwrap_or(0) + 1;
            let secs = m.summary.train_seconds;
            let steps = if m.summary.finished() {
                m.summary.step.to_string()
            } else {
                format!("{}/{}", m.summary.step, m.summary.steps)
            };
            s += &format!(
                " {:.3} | {rank} | {steps} | {:.1} | {:.0} |\n",
                self.mean_ppl(&m.name),
                secs / 60.0,
                m.summary.tokens_seen as f64 / secs.max(1e-9)
            );
        }
        s
    }

    pub fn markdown(&self) -> String {
        let groups: Vec<(String, Vec<heads::GroupStats>)> = self
            .models
            .iter()
            .map(|m| (m.name.clone(), heads::groups(&m.heads)))
            .collect();
        format!(
            "# {}\n\n{}\n\n{}\nRanking by mean perplexity: {}.\n\n\
             ![training loss](loss.svg)\n\n![perplexity against length](ppl.svg)\n\n\
             ## Attention per head\n\nOn the first held-out sequences at the training length, \
             averaged over layers and over the heads of each slope sign; queries that see a \
             whole window (under full attention, the second half of each sequence). \
             Saturated: weight above {}. Per layer and head: `heads.md`.\n\n{}",
            self.title,
            self.setup,
            self.table(),
            self.ranking().join(" < "),
            heads::SATURATED,
            heads::groups_markdown(&groups)
        )
    }

    /// Writes report.md, report.json, heads.md, loss.svg and ppl.md/json/svg into `dir`.
    pub fn write(&self, dir: &Path) -> Result<()> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| SwatError::Io { path, source }
        };
        ppl::write_report(&self.ppl, dir, &self.title)?;
        let md = dir.join("report.md");
        std::fs::write(&md, self.markdown()).map_err(io(&md))?;
        let js = dir.join("report.json");
        let json = serde_json::to_string_pretty(self).expect("plain data");
        std::fs::write(&js, json).map_err(io(&js))?;
        let hd = dir.join("heads.md");
        let mut text = String::from("# Attention per layer and head\n");
        for m in &self.models {
            text += &format!(
                "\n## {} ({})\n\n{}",
                m.name,
                m.architecture,
                heads::markdown(&m.heads)
            );
        }
        std::fs::write(&hd, text).map_err(io(&hd))?;
        Plot {
            title: "Training loss",
            x_desc: "step",
            y_desc: "loss (nats/byte)",
            log_x: false,
            dots: false,
        }
        .write(
            &self
                .models
                .iter()
                .map(|m| (m.name.clone(), loss_curve(&m.summary.loss_history)))
                .collect::<Vec<_>>(),
            &dir.join("loss.svg"),
        )
    }
}

/// Per-step losses averaged over bins of ~1/100 of the run: the curve without the batch noise.
pub fn loss_curve(losses: &[f32]) -> Vec<(f64, f64)> {
    let bin = losses.len().div_ceil(100).max(1);
    losses
        .chunks(bin)
        .enumerate()
        .map(|(i, c)| {
            let step = (i * bin + c.len()) as f64;
            (
                step,
                c.iter().map(|&l| l as f64).sum::<f64>() / c.len() as f64,
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loss_curve_averages_bins_and_ends_at_the_last_step() {
        let losses: Vec<f32> = (0..250).map(|i| i as f32).collect();
        let c = loss_curve(&losses);
        assert_eq!(c.len(), 84); // bins of 3
        assert_eq!(c[0], (3.0, 1.0));
        assert_eq!(*c.last().unwrap(), (250.0, 249.0));
        assert_eq!(loss_curve(&[2.0]), vec![(1.0, 2.0)]);
    }
}
