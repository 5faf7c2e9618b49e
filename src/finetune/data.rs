//! Self-distilled training samples: eval's needle and multi-fact QA documents over real prose,
//! answered by the full-attention model itself (greedy, then a few sampled tries), kept only
//! when the strict scorer marks the answer correct (the SWAA paper's recipe, §4.5).

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{FinetuneError, Result};
use crate::engine::Session;
use crate::eval::score;
use crate::eval::tasks::{self, EvalDoc, Haystack, Rng};
use crate::recipe::{Phase, Recipe};
use crate::sampling::SamplingParams;

/// `--data rust-book`: the Rust book installed with the toolchain docs (eval's haystack).
pub const RUST_BOOK: &str = "rust-book";

/// One training sequence: prompt (document, then question) and the answer the model gave.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    pub tokens: Vec<u32>,
    /// Where the prompt's question part starts (`Phase::Question` from here).
    pub question_start: usize,
    /// Where the answer starts (`Phase::Decode` from here); the loss is on these tokens.
    pub answer_start: usize,
    pub doc: String,
    pub question: String,
    pub answer: String,
}

impl Sample {
    /// The phase of every token, split at the prompt's end as the paper's training patch
    /// does: the prompt under the recipe's prefill and question rules, the answer decoding.
    pub fn phases(&self) -> Vec<Phase> {
        (0..self.tokens.len())
            .map(|i| {
                if i >= self.answer_start {
                    Phase::Decode
                } else if i >= self.question_start {
                    Phase::Question
                } else {
                    Phase::Prefill
                }
            })
            .collect()
    }
}

/// A training text: its name (a path or [`RUST_BOOK`]), SHA-256 and prose.
pub struct Text {
    pub name: String,
    pub sha256: String,
    pub text: String,
}

/// Reads `--data`: documents (any format `document::load` opens) or [`RUST_BOOK`].
pub fn load_texts(data: &[String]) -> Result<Vec<Text>> {
    if data.is_empty() {
        return Err(FinetuneError::Invalid(format!(
            "no training data: pass --data FILE… or --data {RUST_BOOK}"
        )));
    }
    data.iter()
        .map(|name| {
            let text = if name == RUST_BOOK {
                Haystack::rust_book()?.text().to_string()
            } else {
                crate::document::load(Path::new(name))?.text
            };
            Ok(Text {
                name: name.clone(),
                sha256: format!("{:x}", Sha256::digest(text.as_bytes())),
                text,
            })
        })
        .collect()
}

/// The texts' paragraphs, the last `heldout` share of each held out: (training, held-out)
/// prose, so held-out questions sit in prose the adapter never trained on.
pub fn split(texts: &[Text], heldout: f64) -> (String, String) {
    let (mut train, mut held) = (String::new(), String::new());
    for t in texts {
        let paras: Vec<&str> = t.text.split("\n\n").collect();
        let cut = paras.len() - ((paras.len() as f64 * heldout).round() as usize).min(paras.len());
        train.push_str(&paras[..cut].join("\n\n"));
        train.push_str("\n\n");
        held.push_str(&paras[cut..].join("\n\n"));
        held.push_str("\n\n");
    }
    (train, held)
}

/// `n` generated documents of about `tokens` tokens over `prose`, needle and QA alternating.
pub fn documents(
    prose: &str,
    n: usize,
    tokens: usize,
    seed: u64,
    count: &dyn Fn(&str) -> usize,
) -> Result<Vec<EvalDoc>> {
    let hay = Haystack::from_text(prose)?;
    let mut rng = Rng::derive(seed, &[7]);
    Ok((0..n)
        .map(|i| {
            if i % 2 == 0 {
                let depth = rng.below(1001) as f64 / 1000.0;
                tasks::needle_doc(&hay, tokens, depth, i, seed, count)
            } else {
                tasks::qa_doc(&hay, tokens, i, seed, count)
            }
        })
        .collect())
}

/// What distillation asked and kept.
#[derive(Debug, Default)]
pub struct Distilled {
    pub samples: Vec<Sample>,
    pub questions: usize,
}

/// The full-attention model (`session`) answers every question of `docs`: greedy first, then
/// up to `tries − 1` sampled answers (temperature 0.7) until one is correct. Only correct
/// answers become samples. `on_doc` sees each finished document.
pub fn distill(
    session: &mut Session,
    docs: &[EvalDoc],
    tries: usize,
    seed: u64,
    on_doc: &mut dyn FnMut(usize, &Distilled),
) -> Result<Distilled> {
    let never = AtomicBool::new(false);
    let greedy = SamplingParams {
        max_new_tokens: session.sampling().max_new_tokens,
        repeat_penalty: Some(1.0),
        stop_repeats: 0,
        ..Default::default()
    };
    session.set_recipe(Recipe::full());
    let stop = session.tokenizer().stop_token_ids().first().copied();
    let mut out = Distilled::default();
    for (di, d) in docs.iter().enumerate() {
        session.load_document(&d.title, &d.text);
        session.read(&mut |_| {}, &never)?;
        let snap = session.snapshot()?;
        for (qi, q) in d.questions.iter().enumerate() {
            out.questions += 1;
            for t in 0..tries.max(1) {
                session.set_sampling(SamplingParams {
                    temperature: if t == 0 { 0.0 } else { 0.7 },
                    seed: seed ^ ((di * 64 + qi) as u64) << 8 ^ t as u64,
                    ..greedy.clone()
                });
                session.restore(&snap)?;
                let a = session.ask(&q.question, &mut |_| {}, &never)?;
                // An answer cut short (token cap, a loop) is kept up to its first paragraph,
                // which then ends the turn: the model is not taught to ramble to the cap.
                let text = match a.note {
                    Some(_) => a.text.trim().split("\n\n").next().unwrap_or_default(),
                    None => a.text.trim(),
                };
                if a.cancelled || !score::is_correct(text, &q.answers, &q.distractors) {
                    continue;
                }
                let (mut tokens, question_start) = session.prompt_ids(&q.question)?;
                let answer_start = tokens.len();
                let answer = session
                    .tokenizer()
                    .encode(text, false)
                    .map_err(|e| FinetuneError::Invalid(e.to_string()))?;
                tokens.extend(answer);
                tokens.extend(stop);
                out.samples.push(Sample {
                    tokens,
                    question_start,
                    answer_start,
                    doc: d.id.clone(),
                    question: q.question.clone(),
                    answer: text.to_string(),
                });
                break;
            }
        }
        on_doc(di, &out);
    }
    session.set_sampling(greedy);
    Ok(out)
}

/// What the samples were built from: a cached set is used only when this matches.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SampleKey {
    pub base_identity: Option<String>,
    pub data: Vec<(String, String)>,
    pub docs: usize,
    pub heldout_docs: usize,
    pub tokens: usize,
    pub tries: usize,
    pub seed: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SampleSet {
    pub key: SampleKey,
    pub train: Vec<Sample>,
    pub heldout: Vec<Sample>,
    /// Questions asked for the training and held-out samples.
    pub asked: (usize, usize),
}

pub fn samples_path(out: &Path) -> PathBuf {
    out.join("samples.json")
}

/// The cached samples in `out` when they were built for `key`.
pub fn cached(out: &Path, key: &SampleKey) -> Option<SampleSet> {
    let text = std::fs::read_to_string(samples_path(out)).ok()?;
    let set: SampleSet = serde_json::from_str(&text).ok()?;
    (set.key == *key).then_some(set)
}
