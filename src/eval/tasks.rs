//! Eval tasks as documents with questions: a needle in real prose, several facts among
//! look-alike distractors, or the user's own JSONL. Filler is always real text (a
//! [`Haystack`]), never model output; everything random comes from one seeded [`Rng`].

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::EvalError;
use crate::document::{self, Section, SectionRange};

pub use crate::rng::Rng;

/// One question and how to score it.
#[derive(Debug, Clone, PartialEq)]
pub struct Question {
    pub question: String,
    /// Any of these is right.
    pub answers: Vec<String>,
    /// Look-alike values: an answer that names one is wrong.
    pub distractors: Vec<String>,
    /// Where the fact that answers it sits (0 = start, 1 = end), for generated tasks.
    pub depth: Option<f64>,
    /// Pages (chapters) that state the fact, for a book task: its citations are checked
    /// against them, and its ceiling reads them.
    pub evidence: Vec<usize>,
}

/// A document that is read once per recipe and asked all its questions.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalDoc {
    /// Stable across runs with the same seed: the resume key.
    pub id: String,
    /// The length group it is reported under (target tokens).
    pub length: usize,
    pub title: String,
    pub text: String,
    pub questions: Vec<Question>,
    /// Its pages or chapters (empty: one section), as book mode selects and cites them.
    pub sections: Vec<Section>,
    /// What a section is called ("page").
    pub noun: &'static str,
}

/// Real prose to hide facts in.
#[derive(Debug, Clone)]
pub struct Haystack {
    text: String,
    /// Byte offsets where paragraphs start: filler begins at one of them.
    paragraphs: Vec<usize>,
}

impl Haystack {
    pub fn from_text(text: &str) -> Result<Self, EvalError> {
        let text = text.trim().to_string();
        if text.split_whitespace().count() < 200 {
            return Err(EvalError::HaystackTooShort);
        }
        let mut paragraphs = vec![0];
        paragraphs.extend(text.match_indices("\n\n").map(|(i, _)| i + 2));
        Ok(Haystack { text, paragraphs })
    }

    /// The prose, as read.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Any document `document::load` opens.
    pub fn from_file(path: &Path) -> Result<Self, EvalError> {
        Haystack::from_text(&document::load(path)?.text)
    }

    /// The Rust Programming Language book installed with the toolchain's docs (`rustup doc`).
    pub fn rust_book() -> Result<Self, EvalError> {
        let dir = rust_book_dir().ok_or_else(|| {
            EvalError::NoHaystack(
                "the Rust book was not found (rustup component add rust-docs)".into(),
            )
        })?;
        let mut chapters: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map_err(|e| EvalError::NoHaystack(format!("{}: {e}", dir.display())))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    // Chapters are `chNN-MM-title.html`; other pages are redirects and indexes.
                    .is_some_and(|n| {
                        n.len() > 5
                            && n.starts_with("ch")
                            && n.as_bytes()[2..4].iter().all(u8::is_ascii_digit)
                            && n.ends_with(".html")
                    })
            })
            .collect();
        chapters.sort();
        let mut text = String::new();
        let mut last_err = None;
        for ch in &chapters {
            match document::load(ch) {
                Ok(d) => {
                    text.push_str(&d.text);
                    text.push_str("\n\n");
                }
                Err(e) => last_err = Some(e),
            }
        }
        if text.is_empty() {
            let why = last_err.map_or("no chapters".to_string(), |e| e.to_string());
            return Err(EvalError::NoHaystack(format!("{}: {why}", dir.display())));
        }
        Haystack::from_text(&text)
    }

    /// About `chars` bytes of prose from a seeded paragraph on, wrapping around to the start
    /// when the haystack is shorter; cut at a word boundary.
    fn take(&self, start: usize, chars: usize) -> String {
        let mut out = String::with_capacity(chars + 64);
        let mut from = start;
        while out.len() < chars {
            let rest = &self.text[from..];
            let need = chars - out.len();
            if rest.len() <= need {
                out.push_str(rest);
                out.push_str("\n\n");
                from = 0;
            } else {
                let mut cut = need;
                while !rest.is_char_boundary(cut) {
                    cut -= 1;
                }
                let cut = rest[..cut].rfind(char::is_whitespace).unwrap_or(cut);
                out.push_str(&rest[..cut]);
                break;
            }
        }
        out.trim_end().to_string()
    }

    /// Prose of about `tokens` tokens as `count` measures them (within ~2%).
    pub fn filler(&self, tokens: usize, rng: &mut Rng, count: &dyn Fn(&str) -> usize) -> String {
        let start = self.paragraphs[rng.below(self.paragraphs.len())];
        let mut chars = tokens * 4;
        let mut text = self.take(start, chars);
        // Tokens per byte varies with the prose: re-measure and rescale a few times.
        for _ in 0..4 {
            let n = count(&text).max(1);
            if n.abs_diff(tokens) * 50 <= tokens {
                break;
            }
            chars = (chars as f64 * tokens as f64 / n as f64) as usize;
            text = self.take(start, chars);
        }
        text
    }
}

fn rust_book_dir() -> Option<PathBuf> {
    let run = |cmd: &str, args: &[&str]| {
        std::process::Command::new(cmd)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let from_rustup = run("rustup", &["doc", "--path"])
        .and_then(|index| Path::new(&index).parent().map(|p| p.join("book")));
    let from_sysroot = run("rustc", &["--print", "sysroot"])
        .map(|s| Path::new(&s).join("share/doc/rust/html/book"));
    [from_rustup, from_sysroot]
        .into_iter()
        .flatten()
        .find(|d| d.is_dir())
}

/// Inserts `sentence` at the sentence or paragraph boundary nearest `depth` of `text` (by
/// bytes), or at the nearest space when no boundary is close. Returns the byte offset used.
pub fn insert_at_depth(text: &mut String, sentence: &str, depth: f64) -> usize {
    let target = (depth.clamp(0.0, 1.0) * text.len() as f64) as usize;
    let near = (text.len() / 100).max(40);
    let bounds = |pat: &'static str| {
        text.match_indices(pat)
            .map(|(i, m)| i + m.len())
            .collect::<Vec<_>>()
    };
    let mut candidates: Vec<usize> = vec![0, text.len()];
    candidates.extend(bounds(". "));
    candidates.extend(bounds("\n"));
    let best = candidates
        .iter()
        .copied()
        .filter(|&i| i.abs_diff(target) <= near)
        .min_by_key(|&i| i.abs_diff(target));
    let at = best.unwrap_or_else(|| {
        let spaces = bounds(" ");
        spaces
            .into_iter()
            .min_by_key(|&i| i.abs_diff(target))
            .unwrap_or(target.min(text.len()))
    });
    let at = (0..=at)
        .rev()
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(0);
    let pad_before = if at == 0 || text[..at].ends_with(char::is_whitespace) {
        ""
    } else {
        " "
    };
    let pad_after = if text[at..].starts_with(char::is_whitespace) || at == text.len() {
        ""
    } else {
        " "
    };
    text.insert_str(at, &format!("{pad_before}{sentence}{pad_after}"));
    at + pad_before.len()
}

const ADJECTIVES: &[&str] = &[
    "amber", "silver", "crimson", "quiet", "northern", "hollow", "bright", "copper", "velvet",
    "frozen", "golden", "hidden", "iron", "jade", "lunar", "marble", "scarlet", "violet",
];
const NOUNS: &[&str] = &[
    "falcon", "harbour", "lantern", "orchard", "compass", "meadow", "anchor", "beacon", "glacier",
    "thistle", "willow", "raven", "quarry", "summit", "canyon", "garnet", "heron", "otter",
];
const CODE_NAMES: &[&str] = &[
    "Bluefin",
    "Redfin",
    "Greyfin",
    "Stonecrop",
    "Stonewort",
    "Driftwood",
    "Driftglass",
    "Nightjar",
    "Nighthawk",
    "Saltmarsh",
    "Saltwater",
    "Ironbark",
    "Ironwood",
    "Foxglove",
    "Foxfire",
    "Moonwort",
    "Moonstone",
    "Thornback",
    "Thornbush",
    "Larkspur",
];
const PEOPLE: &[&str] = &[
    "Maren Holt",
    "Tobias Wray",
    "Ilse Farrow",
    "Dunstan Reeve",
    "Petra Quayle",
    "Osric Vane",
    "Hedda Lorne",
    "Caspian Ruel",
    "Wenna Tregear",
    "Aldous Pike",
    "Signe Marrow",
    "Barnaby Cole",
];
const SUFFIX: &str = " Reply with the answer only.";

/// Evenly spaced depths over `samples`, from the start (0) to the end (1).
pub fn spread_depths(samples: usize) -> Vec<f64> {
    match samples {
        0 => vec![],
        1 => vec![0.5],
        n => (0..n).map(|i| i as f64 / (n - 1) as f64).collect(),
    }
}

/// A passkey at `depth` in about `tokens` tokens of prose; the question asks for it.
pub fn needle_doc(
    hay: &Haystack,
    tokens: usize,
    depth: f64,
    sample: usize,
    seed: u64,
    count: &dyn Fn(&str) -> usize,
) -> EvalDoc {
    let mut rng = Rng::derive(seed, &[1, tokens as u64, sample as u64]);
    let (adj, noun) = (rng.pick(ADJECTIVES), rng.pick(NOUNS));
    let key = format!("{}", 10_000 + rng.below(90_000));
    let needle = format!("The passkey for the {adj} {noun} vault is {key}.");
    let budget = tokens.saturating_sub(count(&needle)).max(1);
    let mut text = hay.filler(budget, &mut rng, count);
    insert_at_depth(&mut text, &needle, depth);
    EvalDoc {
        id: format!("needle-{tokens}-{sample}"),
        length: tokens,
        title: "Notes".into(),
        text,
        questions: vec![Question {
            question: format!("What is the passkey for the {adj} {noun} vault?{SUFFIX}"),
            answers: vec![key],
            distractors: vec![],
            depth: Some(depth),
            evidence: vec![],
        }],
        sections: vec![],
        noun: "section",
    }
}

/// Three projects, each with a code name, a *former* code name (the look-alike) and a
/// leader, spread through the prose. Questions need one fact (project → code name) or two
/// (person → project → code name); naming another project's or the former name is wrong.
pub fn qa_doc(
    hay: &Haystack,
    tokens: usize,
    sample: usize,
    seed: u64,
    count: &dyn Fn(&str) -> usize,
) -> EvalDoc {
    let mut rng = Rng::derive(seed, &[2, tokens as u64, sample as u64]);
    let projects: Vec<String> = rng
        .choose(NOUNS, 3)
        .into_iter()
        .map(|n| {
            let mut c = n.chars();
            c.next()
                .map(|f| f.to_uppercase().chain(c).collect())
                .unwrap_or_default()
        })
        .collect();
    // Code names come in look-alike pairs (Stonecrop / Stonewort): current and former.
    let names = rng.choose(CODE_NAMES, 6);
    let people = rng.choose(PEOPLE, 3);
    let mut facts: Vec<String> = Vec::new();
    for (i, p) in projects.iter().enumerate() {
        facts.push(format!("The code name of Project {p} is {}.", names[2 * i]));
        facts.push(format!(
            "The former code name of Project {p} was {}.",
            names[2 * i + 1]
        ));
        facts.push(format!("{} leads Project {p}.", people[i]));
    }
    // Shuffle the facts' order, then place them at evenly spaced depths with jitter.
    let mut order: Vec<usize> = (0..facts.len()).collect();
    for i in (1..order.len()).rev() {
        order.swap(i, rng.below(i + 1));
    }
    let fact_tokens: usize = facts.iter().map(|f| count(f)).sum();
    let mut text = hay.filler(tokens.saturating_sub(fact_tokens).max(1), &mut rng, count);
    let n = facts.len() as f64;
    let mut depth_of = vec![0.0; facts.len()];
    // Insert from the deepest slot up so earlier offsets stay where they were chosen.
    let mut slots: Vec<(f64, usize)> = order
        .iter()
        .enumerate()
        .map(|(slot, &f)| {
            (
                (slot as f64 + 0.2 + 0.6 * (rng.below(1000) as f64 / 1000.0)) / n,
                f,
            )
        })
        .collect();
    slots.sort_by(|a, b| b.0.total_cmp(&a.0));
    for &(d, f) in &slots {
        insert_at_depth(&mut text, &facts[f], d);
        depth_of[f] = d;
    }
    let mut questions = Vec::new();
    let others = |i: usize| -> Vec<String> {
        names
            .iter()
            .enumerate()
            .filter(|&(j, _)| j != 2 * i)
            .map(|(_, n)| n.to_string())
            .collect()
    };
    for (i, p) in projects.iter().enumerate() {
        questions.push(Question {
            question: format!("What is the current code name of Project {p}?{SUFFIX}"),
            answers: vec![names[2 * i].to_string()],
            distractors: others(i),
            depth: Some(depth_of[3 * i]),
            evidence: vec![],
        });
    }
    let i = rng.below(projects.len());
    questions.push(Question {
        question: format!(
            "What is the current code name of the project that {} leads?{SUFFIX}",
            people[i]
        ),
        answers: vec![names[2 * i].to_string()],
        distractors: others(i),
        depth: Some(depth_of[3 * i].max(depth_of[3 * i + 2])),
        evidence: vec![],
    });
    EvalDoc {
        id: format!("qa-{tokens}-{sample}"),
        length: tokens,
        title: "Notes".into(),
        text,
        questions,
        sections: vec![],
        noun: "section",
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UserLine {
    document: String,
    question: String,
    answer: OneOrMany,
    /// Part of a document file to read ("40-120"): pages of a PDF, chapters of an EPUB.
    #[serde(default)]
    pages: Option<String>,
    /// Pages (chapters) of the document file that state the answer.
    #[serde(default)]
    evidence: Vec<usize>,
}

/// `{document, question, answer}` per line; `document` is a file path (relative to the JSONL's
/// folder) when such a file exists, else the text itself; `answer` may be a list of accepted
/// answers. Questions on the same document are grouped so it is read once.
pub fn jsonl_docs(path: &Path, count: &dyn Fn(&str) -> usize) -> Result<Vec<EvalDoc>, EvalError> {
    let bad = |line: usize, detail: String| EvalError::BadJsonl {
        path: path.into(),
        line,
        detail,
    };
    let text = std::fs::read_to_string(path).map_err(|e| bad(0, e.to_string()))?;
    let base = path.parent().unwrap_or(Path::new("."));
    let mut docs: Vec<EvalDoc> = Vec::new();
    let mut loaded: std::collections::HashMap<PathBuf, document::Document> = Default::default();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let u: UserLine = serde_json::from_str(line).map_err(|e| bad(i + 1, e.to_string()))?;
        let as_path = base.join(&u.document);
        let is_file = !u.document.contains('\n') && u.document.len() < 4096 && as_path.is_file();
        let range = u
            .pages
            .as_deref()
            .map(|p| match is_file {
                true => p
                    .parse::<SectionRange>()
                    .map_err(|e| bad(i + 1, format!("pages: {e}"))),
                false => Err(bad(
                    i + 1,
                    "pages apply to a document file, not to inline text".into(),
                )),
            })
            .transpose()?;
        if !u.evidence.is_empty() && !is_file {
            return Err(bad(
                i + 1,
                "evidence pages apply to a document file, not to inline text".into(),
            ));
        }
        let (title, body, sections, noun) = if is_file {
            // Each file is parsed once, however many questions it has.
            if !loaded.contains_key(&as_path) {
                loaded.insert(as_path.clone(), document::load(&as_path)?);
            }
            let (d, _) = loaded[&as_path]
                .clone()
                .part(range)
                .map_err(|e| bad(i + 1, format!("{}: {e}", as_path.display())))?;
            let noun = d.section_noun();
            (d.title, d.text, d.sections, noun)
        } else if u.document.trim().is_empty() {
            return Err(bad(i + 1, "the document is empty".into()));
        } else {
            ("Document".to_string(), u.document, vec![], "section")
        };
        let answers = match u.answer {
            OneOrMany::One(a) => vec![a],
            OneOrMany::Many(a) => a,
        };
        if answers.iter().all(|a| a.trim().is_empty()) {
            return Err(bad(i + 1, "the answer is empty".into()));
        }
        let q = Question {
            question: u.question,
            answers,
            distractors: vec![],
            depth: None,
            evidence: u.evidence,
        };
        match docs.iter_mut().find(|d| d.text == body) {
            Some(d) => d.questions.push(q),
            None => {
                let n = count(&body);
                docs.push(EvalDoc {
                    id: format!("doc-{}", docs.len()),
                    length: length_bucket(n),
                    title,
                    text: body,
                    questions: vec![q],
                    sections,
                    noun,
                })
            }
        }
    }
    if docs.is_empty() {
        return Err(bad(0, "no lines".into()));
    }
    Ok(docs)
}

/// User documents are reported in power-of-two groups (≤1k, ≤2k, ≤4k … tokens).
fn length_bucket(tokens: usize) -> usize {
    tokens.max(1024).next_power_of_two()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> usize {
        s.split_whitespace().count()
    }

    fn prose() -> Haystack {
        let para = "The keeper climbed the stair at dusk. She trimmed the wick and wiped the glass. \
                    Ships passed to the south, their lights low on the water.";
        Haystack::from_text(&vec![para; 40].join("\n\n")).unwrap()
    }

    #[test]
    fn needle_sits_at_its_depth_and_a_seed_repeats_the_document() {
        let hay = prose();
        for depth in [0.0, 0.1, 0.25, 0.5, 0.9, 1.0] {
            let d = needle_doc(&hay, 600, depth, 3, 7, &words);
            let key = &d.questions[0].answers[0];
            let start = d.text.find("The passkey").unwrap();
            let len = d.text[start..].find(key.as_str()).unwrap() + key.len() + 1;
            let at = start as f64 / (d.text.len() - len) as f64;
            assert!((at - depth).abs() < 0.02, "depth {depth}: at {at}");
            assert_eq!(d.text.matches(key.as_str()).count(), 1);
            assert!(
                words(&d.text).abs_diff(600) < 30,
                "{} words",
                words(&d.text)
            );
            assert_eq!(d, needle_doc(&hay, 600, depth, 3, 7, &words));
        }
        assert_ne!(
            needle_doc(&hay, 600, 0.5, 3, 7, &words).questions,
            needle_doc(&hay, 600, 0.5, 3, 8, &words).questions,
            "another seed, another needle"
        );
    }

    #[test]
    fn qa_states_each_fact_once_with_its_look_alike() {
        let d = qa_doc(&prose(), 800, 0, 11, &words);
        assert_eq!(d.questions.len(), 4);
        for q in &d.questions {
            let a = &q.answers[0];
            assert_eq!(d.text.matches(&format!(" is {a}.")).count(), 1, "{a}");
            assert!(!q.distractors.contains(a));
            assert_eq!(q.distractors.len(), 5);
        }
        assert_eq!(d.text.matches("former code name").count(), 3);
        assert_eq!(d, qa_doc(&prose(), 800, 0, 11, &words));
    }

    #[test]
    fn jsonl_pages_read_part_of_a_document_file_and_out_of_range_names_the_book() {
        let dir = std::env::temp_dir().join(format!("swaa-eval-pages-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let book = "# One\n\nThe ferry leaves at nine.\n\n# Two\n\nThe bus leaves at ten.\n";
        std::fs::write(dir.join("book.md"), book).unwrap();
        let run = |line: &str| {
            let path = dir.join("set.jsonl");
            std::fs::write(&path, line).unwrap();
            jsonl_docs(&path, &words)
        };
        let docs =
            run(r#"{"document": "book.md", "pages": "2", "question": "When?", "answer": "ten"}"#)
                .unwrap();
        assert!(docs[0].text.contains("bus leaves") && !docs[0].text.contains("ferry"));
        assert!(
            docs[0].title.contains("section 2 of 2"),
            "{}",
            docs[0].title
        );
        let err = run(r#"{"document": "book.md", "pages": "5-9", "question": "q", "answer": "a"}"#)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("book.md") && err.contains("sections 1–2"),
            "{err}"
        );
        let err = run(r#"{"document": "Inline.", "pages": "1", "question": "q", "answer": "a"}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("document file"), "{err}");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn jsonl_reads_inline_and_path_documents_and_groups_questions_by_document() {
        let dir = std::env::temp_dir().join(format!("swaa-eval-jsonl-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("book.md"), "# Book\n\nThe ferry leaves at nine.\n").unwrap();
        let lines = [
            r#"{"document": "book.md", "question": "When?", "answer": "9"}"#,
            r#"{"document": "Inline text.", "question": "What?", "answer": ["text", "inline text"]}"#,
            r#"{"document": "book.md", "question": "What leaves?", "answer": "the ferry"}"#,
        ];
        let path = dir.join("set.jsonl");
        std::fs::write(&path, lines.join("\n")).unwrap();
        let docs = jsonl_docs(&path, &words).unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0].title, "Book");
        assert!(docs[0].text.contains("ferry leaves"));
        assert_eq!(
            docs[0].questions.len(),
            2,
            "questions on one document share its read"
        );
        assert_eq!(docs[1].text, "Inline text.");
        assert_eq!(docs[1].questions[0].answers, ["text", "inline text"]);
        assert_eq!(docs[0].length, 1024);

        std::fs::write(&path, format!("{}\n{{\"document\": \"x\"}}", lines[0])).unwrap();
        let err = jsonl_docs(&path, &words).unwrap_err();
        assert!(matches!(err, EvalError::BadJsonl { line: 2, .. }), "{err}");
        assert!(
            err.to_string().contains("\"question\""),
            "says the format: {err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn short_or_missing_text_is_refused() {
        assert!(matches!(
            Haystack::from_text("too short"),
            Err(EvalError::HaystackTooShort)
        ));
    }
}
