//! Book mode: a document longer than what the model answers well from (its effective
//! context) is not read whole for a question. The question chooses the passages the answer
//! reads — within a token budget, in document order, each run of pages labelled — and the
//! answer's own attention over them says which pages it drew on.
//!
//! [`Book`] splits a document into passages that never cross a section (page, chapter), so
//! every passage has one page to cite; `lexical` ranks them (BM25); [`Book::select`] fills the
//! budget; [`Book::evidence`] ranks pages by the attention mass an answer put on them.

pub mod lexical;

use std::ops::Range;

use serde::{Deserialize, Serialize};

use crate::document::Section;

/// How a question chooses what the answer reads from a long document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Focus {
    /// Pages ranked by BM25 against the question.
    #[default]
    Lexical,
    /// The book read once (every layer sliding, every key kept); pages ranked by the
    /// question's attention over blocks of the stored keys.
    Attention,
    /// Both rankings fused (reciprocal rank fusion).
    Hybrid,
    /// No selection: the whole document is read (as far as the context allows).
    Off,
}

impl std::fmt::Display for Focus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Focus::Lexical => "lexical",
            Focus::Attention => "attention",
            Focus::Hybrid => "hybrid",
            Focus::Off => "off",
        })
    }
}

/// Reciprocal rank fusion (Cormack et al., SIGIR 2009, k = 60) of two rankings, best first:
/// a passage high in either ranking comes early, one high in both first.
pub fn fuse(a: &[usize], b: &[usize]) -> Vec<usize> {
    let mut score: std::collections::HashMap<usize, f64> = Default::default();
    for ranking in [a, b] {
        for (r, &i) in ranking.iter().enumerate() {
            *score.entry(i).or_default() += 1.0 / (60.0 + r as f64);
        }
    }
    let mut out: Vec<usize> = score.keys().copied().collect();
    out.sort_by(|x, y| score[y].total_cmp(&score[x]).then(x.cmp(y)));
    out
}

/// About a paragraph or two: small enough that a hit is specific, large enough to hold a fact
/// with its sentence.
pub const PASSAGE_BYTES: usize = 1200;

/// Tokens per page whose attention scores it for citations (see [`Book::evidence`]).
pub const PEAK_TOKENS: usize = 8;

/// A piece of one section, as a byte range of the document text.
#[derive(Debug, Clone, PartialEq)]
pub struct Passage {
    /// The number of the section it lies in (a PDF's page, an EPUB's chapter).
    pub section: usize,
    pub range: Range<usize>,
}

/// A document split into passages, with their index.
#[derive(Debug, Clone)]
pub struct Book {
    pub title: String,
    /// What a section is called: "page", "chapter", "section".
    pub noun: String,
    pub text: String,
    /// Sections in the whole document (for "pages 12–14 of 311").
    pub sections: usize,
    pub passages: Vec<Passage>,
    index: lexical::Index,
}

/// What a question reads: excerpts of the book in document order, each run headed by its
/// page, and where each passage lies in the excerpt text.
#[derive(Debug, Clone, PartialEq)]
pub struct Selection {
    /// "Debian Reference — pages 12–14, 47, 88 of 311, chosen for this question"
    pub title: String,
    pub text: String,
    /// Chosen passages (indices into [`Book::passages`]), ascending.
    pub passages: Vec<usize>,
    /// For each chosen passage, its byte range in `text`.
    pub spans: Vec<Range<usize>>,
    /// "pages 12–14, 47, 88 of 311"
    pub label: String,
    /// Tokens of `text` as counted when filling the budget.
    pub tokens: usize,
}

/// A page (or chapter, section) an answer drew on.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Evidence {
    /// The section's number: a PDF's page, an EPUB's chapter.
    pub page: usize,
    /// Its share of the answer's attention over the excerpts (0–1).
    pub score: f64,
    /// The sentence the answer attended to most on that page.
    pub text: String,
    /// Where `text` lies in the document text (to show and highlight it).
    pub range: Range<usize>,
}

impl Book {
    pub fn new(title: &str, noun: &str, text: String, sections: &[Section]) -> Self {
        let whole = [Section {
            number: 1,
            title: None,
            start: 0,
            end: text.len(),
        }];
        let sections = if sections.is_empty() {
            &whole[..]
        } else {
            sections
        };
        let passages = split(&text, sections, PASSAGE_BYTES);
        let index = lexical::Index::new(passages.iter().map(|p| &text[p.range.clone()]));
        Book {
            title: title.to_string(),
            noun: noun.to_string(),
            text,
            sections: sections.len(),
            passages,
            index,
        }
    }

    /// Passages by BM25 against `question`, best first; only those that match.
    pub fn rank_lexical(&self, question: &str) -> Vec<usize> {
        let scores = self.index.scores(&lexical::query_terms(question));
        let mut order: Vec<usize> = (0..scores.len()).filter(|&i| scores[i] > 0.0).collect();
        order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
        order
    }

    /// Passages by a score per byte range of the text (blocks of tokens, each with the
    /// attention a question paid it): a passage scores its best overlapping block. Best first;
    /// only passages that some block scores.
    pub fn rank_blocks(&self, blocks: &[(Range<usize>, f32)]) -> Vec<usize> {
        let mut score = vec![0f32; self.passages.len()];
        for (r, s) in blocks {
            // Passages are in text order: the first that ends after the block's start.
            let first = self.passages.partition_point(|p| p.range.end <= r.start);
            for (i, p) in self.passages.iter().enumerate().skip(first) {
                if p.range.start >= r.end.max(r.start + 1) {
                    break;
                }
                score[i] = score[i].max(*s);
            }
        }
        let mut order: Vec<usize> = (0..score.len()).filter(|&i| score[i] > 0.0).collect();
        order.sort_by(|&a, &b| score[b].total_cmp(&score[a]).then(a.cmp(&b)));
        order
    }

    /// The passages of `pages` first, then their neighbours outwards: what reading the gold
    /// pages directly means for a budget (an eval's ceiling).
    pub fn rank_pages(&self, pages: &[usize]) -> Vec<usize> {
        let mut order: Vec<usize> = Vec::new();
        let hits: Vec<usize> = (0..self.passages.len())
            .filter(|&i| pages.contains(&self.passages[i].section))
            .collect();
        order.extend(&hits);
        for d in 1..self.passages.len() {
            for &h in &hits {
                for j in [h.checked_sub(d), Some(h + d)].into_iter().flatten() {
                    if j < self.passages.len() && !order.contains(&j) {
                        order.push(j);
                    }
                }
            }
            if order.len() == self.passages.len() {
                break;
            }
        }
        order
    }

    /// Fills `budget` tokens with the passages of `order` (best first), each with the passage
    /// before and after it for context, and renders them in document order. With nothing
    /// ranked (a question that names nothing in the book) the beginning is read.
    pub fn select(
        &self,
        order: &[usize],
        budget: usize,
        count: &dyn Fn(&str) -> usize,
    ) -> Selection {
        let mut chosen: Vec<usize> = Vec::new();
        let mut used = 0;
        let take = |i: usize, chosen: &mut Vec<usize>, used: &mut usize| -> bool {
            if chosen.contains(&i) {
                return true;
            }
            // A page marker and a line break come with each passage at most.
            let n = count(self.passage_text(i)) + 8;
            if *used + n > budget {
                return false;
            }
            *used += n;
            chosen.push(i);
            true
        };
        let fallback: Vec<usize>;
        let order = if order.is_empty() {
            fallback = (0..self.passages.len()).collect();
            &fallback
        } else {
            order
        };
        for &i in order {
            if !take(i, &mut chosen, &mut used) {
                // A long passage may not fit where a short one still does: keep going
                // until the budget is nearly spent.
                if used + 64 > budget {
                    break;
                }
                continue;
            }
            for j in [i.checked_sub(1), Some(i + 1)].into_iter().flatten() {
                if j < self.passages.len() {
                    take(j, &mut chosen, &mut used);
                }
            }
        }
        // The best passage at least, whatever the budget: a question always reads something.
        if chosen.is_empty()
            && let Some(&i) = order.first()
        {
            chosen.push(i);
        }
        // Counted alone, passages miss the tokens their joins make: the rendered text is
        // counted, and the last passages chosen go until it fits.
        loop {
            let mut sorted = chosen.clone();
            sorted.sort_unstable();
            let sel = self.render(sorted);
            let tokens = count(&sel.text);
            if tokens <= budget || chosen.len() <= 1 {
                return Selection { tokens, ..sel };
            }
            chosen.pop();
        }
    }

    fn passage_text(&self, i: usize) -> &str {
        self.text[self.passages[i].range.clone()].trim()
    }

    /// The excerpt text of `chosen` (ascending): a `[page N]` line where a run starts or
    /// crosses into another section, `[…]` where text was left out.
    fn render(&self, chosen: Vec<usize>) -> Selection {
        let mut text = String::new();
        let mut spans = Vec::with_capacity(chosen.len());
        let mut prev: Option<usize> = None;
        for &i in &chosen {
            let p = &self.passages[i];
            let adjacent = prev.is_some_and(|j| j + 1 == i);
            if prev.is_some() && !adjacent {
                text.push_str("\n\n[…]\n\n");
            } else if prev.is_some() {
                text.push('\n');
            }
            if !adjacent || self.passages[i - 1].section != p.section {
                text.push_str(&format!("[{} {}]\n", self.noun, p.section));
            }
            let start = text.len();
            text.push_str(self.passage_text(i));
            spans.push(start..text.len());
            prev = Some(i);
        }
        let sections: Vec<usize> = {
            let mut s: Vec<usize> = chosen.iter().map(|&i| self.passages[i].section).collect();
            s.dedup();
            s
        };
        let label = format!("{} of {}", runs_label(&self.noun, &sections), self.sections);
        Selection {
            title: format!("{} — {label}, chosen for this question", self.title),
            text,
            passages: chosen,
            spans,
            label,
            tokens: 0,
        }
    }

    /// The pages an answer drew on: `mass` is the answer's attention per excerpt byte offset
    /// (token starts in `selection.text`, with their mass). A page scores the mass of its
    /// [`PEAK_TOKENS`] most attended tokens: an answer that copies a fact attends sharply to
    /// its words, while attention to the text just before the question (recency) is spread
    /// thin over many tokens, and a sum over whole pages would rank that instead (measured on
    /// the 0.5B: the last excerpt page outscored the fact's page by sum, not by peaks). Pages
    /// are listed while they hold a real share: at most `max`, each at least 5%, and no further
    /// once 80% is covered.
    pub fn evidence(
        &self,
        selection: &Selection,
        mass: &[(usize, f32)],
        max: usize,
    ) -> Vec<Evidence> {
        // Per page: its tokens' (mass, passage slot, offset in the passage).
        type Tokens = Vec<(f32, usize, usize)>;
        let mut pages: Vec<(usize, Tokens)> = Vec::new();
        for &(off, m) in mass {
            let Some(slot) = selection.spans.iter().position(|s| s.contains(&off)) else {
                continue;
            };
            let page = self.passages[selection.passages[slot]].section;
            let at = off - selection.spans[slot].start;
            match pages.iter_mut().find(|p| p.0 == page) {
                Some(p) => p.1.push((m, slot, at)),
                None => pages.push((page, vec![(m, slot, at)])),
            }
        }
        let mut scored: Vec<(usize, f64, usize, usize)> = pages
            .into_iter()
            .map(|(page, mut toks)| {
                toks.sort_by(|a, b| b.0.total_cmp(&a.0));
                let score = toks.iter().take(PEAK_TOKENS).map(|t| t.0 as f64).sum();
                (page, score, toks[0].1, toks[0].2)
            })
            .collect();
        let total: f64 = scored.iter().map(|p| p.1).sum();
        if total <= 0.0 {
            return Vec::new();
        }
        scored.sort_by(|a, b| b.1.total_cmp(&a.1));
        let mut out = Vec::new();
        let mut covered = 0.0;
        for (page, m, slot, at) in scored {
            let score = m / total;
            if out.len() >= max || score < 0.05 || covered >= 0.8 {
                break;
            }
            covered += score;
            let (text, range) = self.sentence_at(selection.passages[slot], at);
            out.push(Evidence {
                page,
                score,
                text,
                range,
            });
        }
        out
    }

    /// The sentence of passage `i` around byte `at` of its trimmed text, at most ~240 bytes,
    /// and its range in the document text.
    fn sentence_at(&self, i: usize, at: usize) -> (String, Range<usize>) {
        let p = &self.passages[i];
        let raw = &self.text[p.range.clone()];
        let lead = raw.len() - raw.trim_start().len();
        let t = raw.trim();
        let at = at.min(t.len());
        // A PDF breaks lines inside sentences: only punctuation and blank lines end one.
        let ends = |c: char| matches!(c, '.' | '!' | '?');
        let before = &t[..at];
        let mut a = before
            .rfind(ends)
            .max(before.rfind("\n\n"))
            .map_or(0, |i| i + 1);
        let mut b = [t[at..].find(ends), t[at..].find("\n\n")]
            .into_iter()
            .flatten()
            .min()
            .map_or(t.len(), |i| at + i + 1);
        // Keep it short: a window around the peak when the sentence is long.
        if b - a > 240 {
            a = a.max(at.saturating_sub(120));
            b = b.min(at + 120);
        }
        let (a, b) = (floor_boundary(t, a), floor_boundary(t, b));
        // Trimmed, so the range highlights the sentence itself.
        let a = a + (t[a..b].len() - t[a..b].trim_start().len());
        let b = a + t[a..b].trim().len();
        let text = t[a..b].split_whitespace().collect::<Vec<_>>().join(" ");
        let start = p.range.start + lead;
        (text, start + a..start + b)
    }
}

fn floor_boundary(s: &str, mut i: usize) -> usize {
    i = i.min(s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// "pages 12–14, 47, 88" from ascending, distinct section numbers.
pub fn runs_label(noun: &str, sections: &[usize]) -> String {
    let mut runs: Vec<(usize, usize)> = Vec::new();
    for &s in sections {
        match runs.last_mut() {
            Some(r) if r.1 + 1 == s => r.1 = s,
            _ => runs.push((s, s)),
        }
    }
    let parts: Vec<String> = runs
        .iter()
        .map(|&(a, b)| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}–{b}")
            }
        })
        .collect();
    let plural = if sections.len() == 1 { "" } else { "s" };
    format!("{noun}{plural} {}", parts.join(", "))
}

/// Passages of at most about `target` bytes within each section, cut at a paragraph, a line,
/// a sentence or a word, whichever comes last in the second half of the piece.
pub fn split(text: &str, sections: &[Section], target: usize) -> Vec<Passage> {
    let mut out = Vec::new();
    for s in sections {
        let mut a = s.start;
        while a < s.end {
            let rest = &text[a..s.end];
            a += rest.len() - rest.trim_start().len();
            if a >= s.end {
                break;
            }
            let b = if s.end - a <= target {
                s.end
            } else {
                cut(text, a, a + target)
            };
            if !text[a..b].trim().is_empty() {
                out.push(Passage {
                    section: s.number,
                    range: a..b,
                });
            }
            a = b;
        }
    }
    out
}

/// Where to end a passage that starts at `a` and may run to `limit`.
fn cut(text: &str, a: usize, limit: usize) -> usize {
    let lo = floor_boundary(text, a + (limit - a) / 2);
    let hi = floor_boundary(text, limit);
    let window = &text[lo..hi];
    for pat in ["\n\n", "\n", ". ", " "] {
        if let Some(i) = window.rfind(pat) {
            return lo + i + pat.len();
        }
    }
    // One long word: cut inside it, on a character boundary past `a`.
    if hi > a {
        hi
    } else {
        (limit..=text.len())
            .find(|&i| text.is_char_boundary(i))
            .unwrap_or(text.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> usize {
        s.split_whitespace().count()
    }

    /// A book of `n` pages, page `i` about topic `i`, each a few paragraphs long.
    fn book(n: usize) -> Book {
        let mut text = String::new();
        let mut sections = Vec::new();
        for i in 1..=n {
            let start = text.len();
            for para in 0..8 {
                text.push_str(&format!(
                    "Paragraph {para} of page {i} is about subject{i}. It goes on for a while with ordinary words, \
                     filler and more filler, so that the page is long enough to split into passages.\n\n"
                ));
            }
            if i == 7 {
                text.push_str("The default port of the frobnicator daemon is 8421.\n\n");
            }
            sections.push(Section {
                number: i,
                title: None,
                start,
                end: text.len(),
            });
        }
        Book::new("Manual", "page", text, &sections)
    }

    #[test]
    fn passages_tile_each_section_without_crossing_it() {
        let b = book(5);
        assert!(b.passages.len() > 5);
        for p in &b.passages {
            assert!(p.range.len() <= PASSAGE_BYTES, "{p:?}");
            let s = &b.text[p.range.clone()];
            assert!(s.contains(&format!("page {}", p.section)), "{s}");
            assert!(!s.contains(&format!("page {}", p.section + 1)), "{s}");
        }
        // Every word of the text is in some passage.
        let joined: usize = b
            .passages
            .iter()
            .map(|p| words(&b.text[p.range.clone()]))
            .sum();
        assert_eq!(joined, words(&b.text));
    }

    #[test]
    fn a_long_word_or_multibyte_text_is_cut_on_char_boundaries() {
        let text = "é".repeat(2000) + " " + &"ü".repeat(3000);
        let sections = [Section {
            number: 1,
            title: None,
            start: 0,
            end: text.len(),
        }];
        let ps = split(&text, &sections, 500);
        assert!(ps.len() >= 10);
        let total: usize = ps.iter().map(|p| text[p.range.clone()].trim().len()).sum();
        assert_eq!(total, text.len() - 1);
    }

    #[test]
    fn the_question_selects_the_page_that_holds_its_fact_within_the_budget() {
        let b = book(30);
        let order = b.rank_lexical("What is the default port of the frobnicator daemon?");
        assert_eq!(b.passages[order[0]].section, 7);
        let s = b.select(&order, 300, &words);
        assert!(s.tokens <= 300, "{}", s.tokens);
        assert!(s.text.contains("8421"));
        assert!(s.text.starts_with("[page "), "{}", &s.text[..40]);
        assert!(s.label.ends_with("of 30"), "{}", s.label);
        assert!(s.label.contains('7'), "{}", s.label);
        // In document order, with the text of each chosen passage at its span.
        assert!(s.passages.windows(2).all(|w| w[0] < w[1]));
        for (&i, span) in s.passages.iter().zip(&s.spans) {
            assert_eq!(
                &s.text[span.clone()],
                b.text[b.passages[i].range.clone()].trim()
            );
        }
    }

    #[test]
    fn a_budget_fills_with_more_pages_and_never_overflows() {
        let b = book(30);
        let order = b.rank_lexical("subject3 subject20 subject9 filler");
        for budget in [200, 1000, 100_000] {
            let s = b.select(&order, budget, &words);
            assert!(s.tokens <= budget, "{budget}: {}", s.tokens);
        }
        // Past a budget too small for any passage, the best one is read all the same.
        let s = b.select(&order, 10, &words);
        assert_eq!(s.passages, [order[0]]);
        let all = b.select(&order, 100_000, &words);
        assert_eq!(all.passages.len(), b.passages.len(), "everything fits");
    }

    #[test]
    fn gold_pages_come_first_then_their_neighbours() {
        let b = book(30);
        let order = b.rank_pages(&[12]);
        let pages: Vec<usize> = order.iter().map(|&i| b.passages[i].section).collect();
        let on_12 = pages.iter().take_while(|&&p| p == 12).count();
        assert!(on_12 >= 1);
        assert!(pages[on_12..on_12 + 2].iter().all(|&p| p == 11 || p == 13));
        assert_eq!(order.len(), b.passages.len());
        let s = b.select(&order, 400, &words);
        assert!(
            s.passages.iter().any(|&i| b.passages[i].section == 12),
            "{}",
            s.label
        );
    }

    #[test]
    fn a_question_that_names_nothing_reads_the_beginning() {
        let b = book(10);
        let s = b.select(&b.rank_lexical("zzz qqq?"), 400, &words);
        assert_eq!(s.passages.first(), Some(&0));
    }

    #[test]
    fn evidence_ranks_pages_by_the_answers_attention_and_quotes_the_sentence() {
        let b = book(30);
        let order = b.rank_lexical("default port frobnicator daemon");
        let s = b.select(&order, 400, &words);
        let fact = s.text.find("The default port").unwrap();
        let other = s.spans[0].start;
        // Sharp attention on the fact's words; as much mass again, spread thin over the
        // last page read (recency), must not outrank it.
        let mut mass: Vec<(usize, f32)> = (0..10).map(|i| (fact + 4 * i, 0.5)).collect();
        let last = s.spans.last().unwrap().clone();
        mass.extend(
            last.clone()
                .step_by(2)
                .map(|o| (o, 5.0 / last.len() as f32)),
        );
        mass.push((other, 0.2));
        let ev = b.evidence(&s, &mass, 3);
        assert_eq!(ev[0].page, 7, "{ev:?}");
        assert!(ev[0].score > 0.6, "{ev:?}");
        assert!(ev[0].text.contains("8421"), "{:?}", ev[0].text);
        assert_eq!(&b.text[ev[0].range.clone()], ev[0].text);
        // No mass, no evidence.
        assert!(b.evidence(&s, &[], 3).is_empty());
    }

    #[test]
    fn blocks_rank_the_passages_they_overlap() {
        let b = book(10);
        let p7 = b.passages.iter().position(|p| p.section == 7).unwrap();
        let r = b.passages[p7].range.clone();
        let order = b.rank_blocks(&[(0..40, 0.1), (r.start + 5..r.start + 50, 0.9)]);
        assert_eq!(order, [p7, 0]);
    }

    #[test]
    fn fusion_puts_what_both_rank_high_first() {
        assert_eq!(fuse(&[1, 2, 3], &[3, 1, 9]), [1, 3, 2, 9]);
        assert_eq!(fuse(&[], &[4]), [4]);
    }

    #[test]
    fn the_quoted_sentence_runs_across_line_breaks_to_its_punctuation() {
        let text =
            "Intro text here.\nIf NAME is not\nsupplied, the default name is COPROC. Next one.\n"
                .to_string();
        let sections = [Section {
            number: 1,
            title: None,
            start: 0,
            end: text.len(),
        }];
        let b = Book::new("T", "page", text.clone(), &sections);
        let at = text.find("COPROC").unwrap();
        let (quote, range) = b.sentence_at(0, at);
        assert_eq!(
            quote,
            "If NAME is not supplied, the default name is COPROC."
        );
        assert_eq!(
            &text[range],
            "If NAME is not\nsupplied, the default name is COPROC."
        );
    }

    #[test]
    fn run_labels_join_consecutive_pages() {
        assert_eq!(
            runs_label("page", &[3, 4, 5, 9, 11, 12]),
            "pages 3–5, 9, 11–12"
        );
        assert_eq!(runs_label("chapter", &[2]), "chapter 2");
    }
}
