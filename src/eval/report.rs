//! Per-sample results (the resumable JSONL), their summary per recipe × length (accuracy
//! with a Wilson interval, mean times, peak KV), and the Markdown, JSON and SVG outputs.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::EvalError;

/// One answered question: a line of `results.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SampleResult {
    pub recipe: String,
    /// The recipe's parameters (`W=256 K=8 fa-dec`), part of the resume key.
    pub recipe_detail: String,
    pub length: usize,
    pub doc: String,
    pub question_index: usize,
    pub question: String,
    pub answers: Vec<String>,
    pub prediction: String,
    pub correct: bool,
    pub depth: Option<f64>,
    pub doc_tokens: usize,
    /// Reading the document (shared by its questions) plus prefilling this question.
    pub prefill_s: f64,
    pub decode_s: f64,
    pub generated_tokens: usize,
    pub peak_kv_bytes: usize,
    /// Pages where the answer's fact is stated (a book task's `evidence`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub evidence: Vec<usize>,
    /// Pages the answer cited (book mode), highest attention first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cited: Vec<usize>,
    /// What the question read in book mode ("pages 12–14, 47 of 311").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read: Option<String>,
}

impl SampleResult {
    /// Whether a gold page is among the cited ones: None without gold pages or citations'
    /// mode (answers outside book mode cite nothing).
    pub fn evidence_hit(&self) -> Option<bool> {
        (!self.evidence.is_empty() && self.read.is_some())
            .then(|| self.cited.iter().any(|c| self.evidence.contains(c)))
    }

    pub fn key(&self) -> (String, String, String, usize) {
        (
            self.recipe.clone(),
            self.recipe_detail.clone(),
            self.doc.clone(),
            self.question_index,
        )
    }
}

/// Reads the results of an earlier run. A last line cut off by an interruption is dropped
/// from the file, so appending continues on a clean line.
pub fn load_results(path: &Path) -> Result<Vec<SampleResult>, EvalError> {
    let io = |e: std::io::Error| EvalError::Io {
        path: path.into(),
        source: e,
    };
    let mut text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
        Err(e) => return Err(io(e)),
    };
    if !text.is_empty() && !text.ends_with('\n') {
        text.truncate(text.rfind('\n').map_or(0, |i| i + 1));
        std::fs::write(path, &text).map_err(io)?;
    }
    text.lines()
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| EvalError::BadResults {
                path: path.into(),
                line: i + 1,
                detail: e.to_string(),
            })
        })
        .collect()
}

pub fn append_result(file: &mut std::fs::File, r: &SampleResult) -> std::io::Result<()> {
    let mut line = serde_json::to_string(r).map_err(std::io::Error::other)?;
    line.push('\n');
    file.write_all(line.as_bytes())?;
    file.flush()
}

/// Wilson score interval for `k` successes in `n` trials at 95% (z = 1.96).
pub fn wilson(k: usize, n: usize) -> (f64, f64) {
    if n == 0 {
        return (0.0, 1.0);
    }
    let (z, n, p) = (1.96f64, n as f64, k as f64 / n as f64);
    let denom = 1.0 + z * z / n;
    let center = (p + z * z / (2.0 * n)) / denom;
    let half = z * (p * (1.0 - p) / n + z * z / (4.0 * n * n)).sqrt() / denom;
    ((center - half).max(0.0), (center + half).min(1.0))
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Row {
    pub recipe: String,
    pub recipe_detail: String,
    pub length: usize,
    pub samples: usize,
    pub correct: usize,
    pub accuracy: f64,
    pub ci_low: f64,
    pub ci_high: f64,
    pub mean_prefill_s: f64,
    pub mean_decode_s: f64,
    pub peak_kv_bytes: usize,
    /// Correct answers whose citations can be checked (gold pages known, book mode), and
    /// how many of them cite a gold page.
    #[serde(default)]
    pub evidence_n: usize,
    #[serde(default)]
    pub evidence_hits: usize,
}

/// One row per recipe × length, recipes in `order`, lengths ascending.
pub fn summarize(results: &[SampleResult], order: &[String]) -> Vec<Row> {
    let mut groups: BTreeMap<(usize, usize), Vec<&SampleResult>> = BTreeMap::new();
    for r in results {
        let Some(ri) = order.iter().position(|o| *o == r.recipe) else {
            continue;
        };
        groups.entry((ri, r.length)).or_default().push(r);
    }
    groups
        .into_iter()
        .map(|((ri, length), rs)| {
            let n = rs.len();
            let correct = rs.iter().filter(|r| r.correct).count();
            let (ci_low, ci_high) = wilson(correct, n);
            let hits: Vec<bool> = rs
                .iter()
                .filter(|r| r.correct)
                .filter_map(|r| r.evidence_hit())
                .collect();
            let mean =
                |f: fn(&SampleResult) -> f64| rs.iter().map(|r| f(r)).sum::<f64>() / n as f64;
            Row {
                recipe: order[ri].clone(),
                recipe_detail: rs[0].recipe_detail.clone(),
                length,
                samples: n,
                correct,
                accuracy: correct as f64 / n as f64,
                ci_low,
                ci_high,
                mean_prefill_s: mean(|r| r.prefill_s),
                mean_decode_s: mean(|r| r.decode_s),
                peak_kv_bytes: rs.iter().map(|r| r.peak_kv_bytes).max().unwrap_or(0),
                evidence_n: hits.len(),
                evidence_hits: hits.iter().filter(|&&h| h).count(),
            }
        })
        .collect()
}

pub const TABLE_HEADER: &str = "| recipe | W/K | length | n | accuracy | 95% CI | prefill s | decode s | peak KV MiB | cites a gold page |\n\
                                |---|---|---:|---:|---:|---|---:|---:|---:|---:|";

pub fn markdown(title: &str, rows: &[Row]) -> String {
    let mut s = format!("# {title}\n\n{TABLE_HEADER}\n");
    for r in rows {
        s += &format!(
            "| {} | {} | {} | {} | {:.0}% | {:.0}–{:.0}% | {:.2} | {:.2} | {:.1} | {} |\n",
            r.recipe,
            r.recipe_detail,
            r.length,
            r.samples,
            100.0 * r.accuracy,
            100.0 * r.ci_low,
            100.0 * r.ci_high,
            r.mean_prefill_s,
            r.mean_decode_s,
            crate::units::in_mib(r.peak_kv_bytes),
            match r.evidence_n {
                0 => "—".to_string(),
                n => format!("{}/{n}", r.evidence_hits),
            }
        );
    }
    s
}

/// Accuracy against time per answer (prefill + decode), one line per recipe through its
/// lengths — the shape of the SWAA paper's accuracy–speed chart. Pure-Rust SVG: plotters'
/// built-in text layout, no system fonts.
pub fn plot_svg(path: &Path, title: &str, rows: &[Row]) -> Result<(), EvalError> {
    use plotters::prelude::*;
    let err = |e: String| EvalError::Plot(e);
    let time = |r: &Row| r.mean_prefill_s + r.mean_decode_s;
    let max_t = rows.iter().map(time).fold(0.0f64, f64::max).max(1e-3) * 1.1;
    let root = SVGBackend::new(path, (800, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(0.0..max_t, 0.0..105.0)
        .map_err(|e| err(e.to_string()))?;
    chart
        .configure_mesh()
        .x_desc("seconds per answer (prefill + decode)")
        .y_desc("accuracy %")
        .draw()
        .map_err(|e| err(e.to_string()))?;
    let mut recipes: Vec<&str> = Vec::new();
    for r in rows {
        if !recipes.contains(&r.recipe.as_str()) {
            recipes.push(&r.recipe);
        }
    }
    for (i, name) in recipes.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let pts: Vec<(f64, f64)> = rows
            .iter()
            .filter(|r| r.recipe == *name)
            .map(|r| (time(r), 100.0 * r.accuracy))
            .collect();
        chart
            .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
            .map_err(|e| err(e.to_string()))?
            .label(*name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2))
            });
        chart
            .draw_series(pts.iter().map(|&p| Circle::new(p, 4, color.filled())))
            .map_err(|e| err(e.to_string()))?;
        // Each point says its length, so the lines read as "longer documents →".
        chart
            .draw_series(rows.iter().filter(|r| r.recipe == *name).map(|r| {
                Text::new(
                    format!("{}", r.length),
                    (time(r), 100.0 * r.accuracy + 2.0),
                    ("sans-serif", 11),
                )
            }))
            .map_err(|e| err(e.to_string()))?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::LowerRight)
        .draw()
        .map_err(|e| err(e.to_string()))?;
    root.present().map_err(|e| err(e.to_string()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wilson_interval_matches_known_values() {
        // Reference values from the closed form (e.g. statsmodels proportion_confint, wilson).
        let (lo, hi) = wilson(8, 10);
        assert!(
            (lo - 0.4902).abs() < 1e-3 && (hi - 0.9433).abs() < 1e-3,
            "{lo} {hi}"
        );
        let (lo, hi) = wilson(0, 5);
        assert!(lo.abs() < 1e-9 && (hi - 0.4345).abs() < 1e-3, "{lo} {hi}");
        let (lo, hi) = wilson(5, 5);
        assert!(
            (lo - 0.5655).abs() < 1e-3 && (hi - 1.0).abs() < 1e-9,
            "{lo} {hi}"
        );
    }

    fn result(recipe: &str, length: usize, q: usize, correct: bool) -> SampleResult {
        SampleResult {
            recipe: recipe.into(),
            recipe_detail: "W=64".into(),
            length,
            doc: format!("needle-{length}-0"),
            question_index: q,
            question: "q".into(),
            answers: vec!["1".into()],
            prediction: "1".into(),
            correct,
            depth: Some(0.5),
            doc_tokens: length,
            prefill_s: 1.0 + q as f64,
            decode_s: 0.5,
            generated_tokens: 2,
            peak_kv_bytes: 100 * (q + 1),
            evidence: vec![],
            cited: vec![],
            read: None,
        }
    }

    #[test]
    fn evidence_hits_count_correct_book_answers_citing_a_gold_page() {
        let book = |q, correct, cited: Vec<usize>| SampleResult {
            evidence: vec![47],
            cited,
            read: Some("pages 40–50 of 311".into()),
            ..result("swaa@lexical", 131072, q, correct)
        };
        let rs = vec![
            book(0, true, vec![12, 47]),
            book(1, true, vec![12]),
            book(2, false, vec![47]),
            // Outside book mode nothing is cited: not counted.
            SampleResult {
                evidence: vec![47],
                ..result("swaa@lexical", 131072, 3, true)
            },
        ];
        let rows = summarize(&rs, &["swaa@lexical".into()]);
        assert_eq!((rows[0].evidence_hits, rows[0].evidence_n), (1, 2));
        assert!(markdown("t", &rows).contains("| 1/2 |"));
    }

    #[test]
    fn summary_groups_by_recipe_and_length_in_the_given_order() {
        let rs = vec![
            result("swa", 2048, 0, false),
            result("full", 2048, 0, true),
            result("full", 1024, 0, true),
            result("full", 1024, 1, false),
        ];
        let rows = summarize(&rs, &["full".into(), "swa".into()]);
        let keys: Vec<(&str, usize, usize)> = rows
            .iter()
            .map(|r| (r.recipe.as_str(), r.length, r.samples))
            .collect();
        assert_eq!(
            keys,
            [("full", 1024, 2), ("full", 2048, 1), ("swa", 2048, 1)]
        );
        assert_eq!(rows[0].accuracy, 0.5);
        assert_eq!(rows[0].mean_prefill_s, 1.5);
        assert_eq!(rows[0].peak_kv_bytes, 200);
        let md = markdown("t", &rows);
        assert_eq!(
            md.lines()
                .filter(|l| l.starts_with("| full") || l.starts_with("| swa"))
                .count(),
            3
        );
    }

    #[test]
    fn an_interrupted_last_line_is_dropped_and_the_rest_kept() {
        let dir = std::env::temp_dir().join(format!("swaa-eval-resume-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("results.jsonl");
        let whole = serde_json::to_string(&result("full", 1024, 0, true)).unwrap();
        std::fs::write(&path, format!("{whole}\n{}", &whole[..whole.len() / 2])).unwrap();
        let rs = load_results(&path).unwrap();
        assert_eq!(rs, vec![result("full", 1024, 0, true)]);
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            format!("{whole}\n")
        );
        std::fs::write(&path, "{not json}\n").unwrap();
        assert!(matches!(
            load_results(&path),
            Err(EvalError::BadResults { line: 1, .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
