//! Perplexity against evaluation length, past the training window: the SWAT paper's
//! extrapolation measurement. Long sequences go through the rolling cache in chunks, so
//! memory stays bounded by the window (or grows linearly under full attention).

use std::path::Path;

use candle_core::{D, Tensor};
use serde::Serialize;

use super::model::{RollingCache, SwatModel};
use super::{Result, SwatError, invalid};

#[derive(Debug, Clone, Serialize)]
pub struct PplRow {
    pub model: String,
    pub length: usize,
    pub sequences: usize,
    /// Mean next-token negative log-likelihood (nats per byte) over every position.
    pub nll: f64,
    pub ppl: f64,
    /// Keys held per layer at the end of a sequence.
    pub cache_tokens: usize,
}

/// Perplexity of `model` on up to `max_seqs` consecutive sequences of `length` tokens from
/// `tokens`, each read from position 0 through the rolling cache `chunk` tokens at a time.
pub fn perplexity(
    model: &SwatModel,
    name: &str,
    tokens: &[u32],
    length: usize,
    max_seqs: usize,
    chunk: usize,
) -> Result<PplRow> {
    let seqs = (tokens.len() / (length + 1)).min(max_seqs.max(1));
    if seqs == 0 {
        return Err(invalid(format!(
            "the evaluation text has {} tokens (bytes), too few for length {length}: give a longer --text or smaller --lengths",
            tokens.len()
        )));
    }
    let dev = model.device();
    let (mut nll, mut count, mut cache_tokens) = (0f64, 0usize, 0);
    for s in 0..seqs {
        let seq = &tokens[s * (length + 1)..(s + 1) * (length + 1)];
        let mut cache = RollingCache::new(model.config());
        for c in (0..length).step_by(chunk.max(1)) {
            let n = chunk.min(length - c);
            let x = Tensor::new(&seq[c..c + n], dev)?.unsqueeze(0)?;
            let y = Tensor::new(&seq[c + 1..c + n + 1], dev)?;
            let logits = model.forward(&x, Some(&mut cache))?.squeeze(0)?;
            let logp =
                candle_nn::ops::log_softmax(&logits.to_dtype(candle_core::DType::F32)?, D::Minus1)?;
            let picked = logp.gather(&y.unsqueeze(1)?, 1)?;
            nll -= picked.sum_all()?.to_scalar::<f32>()? as f64;
            count += n;
        }
        cache_tokens = cache.tokens();
    }
    let nll = nll / count as f64;
    Ok(PplRow {
        model: name.into(),
        length,
        sequences: seqs,
        nll,
        ppl: nll.exp(),
        cache_tokens,
    })
}

/// Models as rows, lengths as columns.
pub fn markdown_table(rows: &[PplRow]) -> String {
    let mut lengths: Vec<usize> = rows.iter().map(|r| r.length).collect();
    lengths.sort_unstable();
    lengths.dedup();
    let mut models: Vec<&str> = Vec::new();
    for r in rows {
        if !models.contains(&r.model.as_str()) {
            models.push(&r.model);
        }
    }
    let mut s = String::from("| model |");
    for l in &lengths {
        s += &format!(" ppl@{} |", length_label(*l));
    }
    s += "\n|---|";
    s += &"---:|".repeat(lengths.len());
    s += "\n";
    for m in models {
        s += &format!("| {m} |");
        for l in &lengths {
            match rows.iter().find(|r| r.model == m && r.length == *l) {
                Some(r) => s += &format!(" {:.3} |", r.ppl),
                None => s += " – |",
            }
        }
        s += "\n";
    }
    s
}

pub fn length_label(l: usize) -> String {
    if l >= 1024 && l.is_multiple_of(1024) {
        format!("{}k", l / 1024)
    } else {
        l.to_string()
    }
}

/// One line per named series over shared axes, as SVG (a log-scaled x with `log_x`). The SVG
/// backend writes text as `<text>` elements, so no font files are needed.
pub struct Plot<'a> {
    pub title: &'a str,
    pub x_desc: &'a str,
    pub y_desc: &'a str,
    pub log_x: bool,
    /// Draw a dot on every point (for a few points per line, not for curves).
    pub dots: bool,
}

impl Plot<'_> {
    pub fn write(&self, series: &[(String, Vec<(f64, f64)>)], path: &Path) -> Result<()> {
        use plotters::prelude::*;
        let plot_err = |e: String| SwatError::Io {
            path: path.into(),
            source: std::io::Error::other(e),
        };
        let pts = || series.iter().flat_map(|s| s.1.iter());
        if pts().next().is_none() {
            return Err(invalid(format!("nothing to plot in {}", path.display())));
        }
        let (min_x, max_x) = pts().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| {
            (a.min(p.0), b.max(p.0))
        });
        let (min_y, max_y) = pts().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| {
            (a.min(p.1), b.max(p.1))
        });
        let root = SVGBackend::new(path, (800, 500)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| plot_err(e.to_string()))?;
        let pad = (max_y - min_y).max(1e-3) * 0.05;
        let y_range = (min_y - pad)..(max_y + pad);
        let err = |e: &dyn std::fmt::Display| e.to_string();
        // The two x axes are different types, so the drawing is spelled once as a macro.
        macro_rules! draw {
            ($x:expr, $x_fmt:expr) => {
                (|| -> std::result::Result<(), String> {
                    let mut chart = ChartBuilder::on(&root)
                        .caption(self.title, ("sans-serif", 20))
                        .margin(15)
                        .x_label_area_size(40)
                        .y_label_area_size(60)
                        .build_cartesian_2d($x, y_range.clone())
                        .map_err(|e| err(&e))?;
                    chart
                        .configure_mesh()
                        .x_desc(self.x_desc)
                        .y_desc(self.y_desc)
                        .x_label_formatter($x_fmt)
                        .draw()
                        .map_err(|e| err(&e))?;
                    for (i, (name, pts)) in series.iter().enumerate() {
                        let color = Palette99::pick(i).to_rgba();
                        chart
                            .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
                            .map_err(|e| err(&e))?
                            .label(name)
                            .legend(move |(x, y)| {
                                PathElement::new(vec![(x, y), (x + 20, y)], color)
                            });
                        if self.dots {
                            chart
                                .draw_series(pts.iter().map(|p| Circle::new(*p, 3, color.filled())))
                                .map_err(|e| err(&e))?;
                        }
                    }
                    chart
                        .configure_series_labels()
                        .background_style(WHITE.mix(0.8))
                        .border_style(BLACK)
                        .draw()
                        .map_err(|e| err(&e))?;
                    Ok(())
                })()
            };
        }
        let drawn = if self.log_x {
            draw!(((min_x / 1.2)..(max_x * 1.2)).log_scale(), &|x: &f64| {
                length_label(x.round() as usize)
            })
        } else {
            draw!(min_x..max_x.max(min_x + 1.0), &|x: &f64| format!("{x}"))
        };
        drawn.map_err(plot_err)?;
        root.present().map_err(|e| plot_err(e.to_string()))?;
        Ok(())
    }
}

/// Perplexity against evaluation length (log-scaled x), one line per model.
pub fn plot_svg(rows: &[PplRow], path: &Path, title: &str) -> Result<()> {
    let mut series: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
    for r in rows {
        if !series.iter().any(|s| s.0 == r.model) {
            series.push((r.model.clone(), Vec::new()));
        }
        let s = series.iter_mut().find(|s| s.0 == r.model).expect("added");
        s.1.push((r.length as f64, r.ppl));
    }
    for s in &mut series {
        s.1.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    Plot {
        title,
        x_desc: "evaluation length (tokens)",
        y_desc: "perplexity",
        log_x: true,
        dots: true,
    }
    .write(&series, path)
}

/// Writes `ppl.md`, `ppl.json` and `ppl.svg` into `dir`.
pub fn write_report(rows: &[PplRow], dir: &Path, title: &str) -> Result<()> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| SwatError::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let md = dir.join("ppl.md");
    std::fs::write(&md, format!("# {title}\n\n{}", markdown_table(rows))).map_err(io(&md))?;
    let js = dir.join("ppl.json");
    let json = serde_json::to_string_pretty(rows).expect("plain rows");
    std::fs::write(&js, json).map_err(io(&js))?;
    plot_svg(rows, &dir.join("ppl.svg"), title)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_has_one_row_per_model_and_one_column_per_length() {
        let row = |m: &str, l, p| PplRow {
            model: m.into(),
            length: l,
            sequences: 1,
            nll: f64::ln(p),
            ppl: p,
            cache_tokens: 0,
        };
        let rows = vec![row("a", 256, 3.0), row("a", 1024, 4.0), row("b", 256, 2.5)];
        let t = markdown_table(&rows);
        assert_eq!(
            t,
            "| model | ppl@256 | ppl@1k |\n|---|---:|---:|\n| a | 3.000 | 4.000 |\n| b | 2.500 | – |\n"
        );
        let dir = std::env::temp_dir().join(format!("swat-ppl-{}", std::process::id()));
        write_report(&rows, &dir, "test").unwrap();
        let svg = std::fs::read_to_string(dir.join("ppl.svg")).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("polyline"), "{svg}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
