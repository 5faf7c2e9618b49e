//! BM25 over passages (Robertson & Zaragoza, "The Probabilistic Relevance Framework: BM25
//! and Beyond", 2009, eq. 3.32 with the non-negative idf of Lucene): the lexical selector.

use std::collections::HashMap;

/// BM25's term-frequency saturation and length normalisation, the usual defaults.
const K1: f64 = 1.2;
const B: f64 = 0.75;

/// Words that say nothing about where an answer is: question words and the commonest
/// function words. Matched after lower-casing, before stemming.
const STOP: &[&str] = &[
    "a",
    "about",
    "after",
    "all",
    "also",
    "an",
    "and",
    "any",
    "are",
    "as",
    "at",
    "be",
    "been",
    "before",
    "being",
    "between",
    "both",
    "but",
    "by",
    "can",
    "could",
    "did",
    "do",
    "does",
    "doing",
    "during",
    "each",
    "for",
    "from",
    "had",
    "has",
    "have",
    "how",
    "i",
    "if",
    "in",
    "into",
    "is",
    "it",
    "its",
    "many",
    "may",
    "me",
    "more",
    "most",
    "much",
    "must",
    "my",
    "no",
    "not",
    "of",
    "on",
    "one",
    "or",
    "other",
    "our",
    "should",
    "so",
    "some",
    "such",
    "than",
    "that",
    "the",
    "their",
    "them",
    "then",
    "there",
    "these",
    "they",
    "this",
    "those",
    "to",
    "under",
    "up",
    "use",
    "used",
    "uses",
    "using",
    "was",
    "we",
    "were",
    "what",
    "when",
    "where",
    "which",
    "while",
    "who",
    "whom",
    "why",
    "will",
    "with",
    "would",
    "you",
    "your",
    "tell",
    "according",
    "document",
    "book",
    "manual",
    "name",
    "called",
];

/// Lower-cased words of `text` (letters, digits and `_`), lightly stemmed so that a plural or
/// a verb form in the question still finds the passage.
pub fn words(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .filter(|w| !w.is_empty())
        .map(|w| w.to_lowercase())
        .filter(|w| w.len() > 1 || w.chars().all(|c| c.is_ascii_digit()))
}

/// A light suffix stripper (plurals, -ing, -ed): enough to join "options" with "option" and
/// "compressing" with "compress", never so aggressive that two common words merge.
pub fn stem(w: &str) -> String {
    if !w.is_ascii() || w.chars().any(|c| c.is_ascii_digit()) {
        return w.to_string();
    }
    let n = w.len();
    if n > 4 && w.ends_with("ies") {
        return format!("{}y", &w[..n - 3]);
    }
    if n > 4 && w.ends_with("sses") {
        return w[..n - 2].to_string();
    }
    if n > 5 && w.ends_with("ing") {
        return w[..n - 3].to_string();
    }
    if n > 4 && w.ends_with("ed") && !w.ends_with("eed") {
        return w[..n - 2].to_string();
    }
    if n > 3 && w.ends_with('s') && !w.ends_with("ss") && !w.ends_with("us") && !w.ends_with("is") {
        return w[..n - 1].to_string();
    }
    w.to_string()
}

/// The terms a question searches for: its words without stop words, stemmed, each once.
pub fn query_terms(question: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for w in words(question) {
        if STOP.contains(&w.as_str()) {
            continue;
        }
        let s = stem(&w);
        if !out.contains(&s) {
            out.push(s);
        }
    }
    out
}

/// An inverted index of passages.
#[derive(Debug, Clone, Default)]
pub struct Index {
    terms: HashMap<String, u32>,
    /// Per term: (passage, occurrences), passages ascending.
    postings: Vec<Vec<(u32, u32)>>,
    /// Words per passage.
    lens: Vec<u32>,
    avg_len: f64,
}

impl Index {
    pub fn new<'a>(passages: impl IntoIterator<Item = &'a str>) -> Self {
        let mut ix = Index::default();
        for (p, text) in passages.into_iter().enumerate() {
            let mut counts: HashMap<u32, u32> = HashMap::new();
            let mut len = 0u32;
            for w in words(text) {
                len += 1;
                let next = ix.terms.len() as u32;
                let id = *ix.terms.entry(stem(&w)).or_insert(next);
                if id as usize == ix.postings.len() {
                    ix.postings.push(Vec::new());
                }
                *counts.entry(id).or_default() += 1;
            }
            for (id, n) in counts {
                ix.postings[id as usize].push((p as u32, n));
            }
            ix.lens.push(len);
        }
        let total: u64 = ix.lens.iter().map(|&l| l as u64).sum();
        ix.avg_len = total as f64 / ix.lens.len().max(1) as f64;
        ix
    }

    pub fn len(&self) -> usize {
        self.lens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lens.is_empty()
    }

    /// BM25 score of every passage for `terms` (0 where none occurs).
    pub fn scores(&self, terms: &[String]) -> Vec<f64> {
        let n = self.lens.len() as f64;
        let mut out = vec![0.0; self.lens.len()];
        for t in terms {
            let Some(&id) = self.terms.get(t) else {
                continue;
            };
            let post = &self.postings[id as usize];
            let df = post.len() as f64;
            let idf = (1.0 + (n - df + 0.5) / (df + 0.5)).ln();
            for &(p, tf) in post {
                let tf = tf as f64;
                let norm = 1.0 - B + B * self.lens[p as usize] as f64 / self.avg_len.max(1.0);
                out[p as usize] += idf * tf * (K1 + 1.0) / (tf + K1 * norm);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stemming_joins_forms_of_a_word_and_keeps_short_ones() {
        assert_eq!(stem("options"), "option");
        assert_eq!(stem("libraries"), "library");
        assert_eq!(stem("compressing"), "compress");
        assert_eq!(stem("compressed"), "compress");
        assert_eq!(stem("class"), "class");
        assert_eq!(stem("status"), "status");
        assert_eq!(stem("is"), "is");
        assert_eq!(stem("x86s"), "x86s");
    }

    #[test]
    fn questions_lose_their_stop_words() {
        assert_eq!(
            query_terms("What is the default value of the --jobs option?"),
            ["default", "value", "job", "option"]
        );
    }

    #[test]
    fn the_passage_with_the_rare_terms_ranks_first() {
        let passages = [
            "The option controls the output. The option is common.",
            "Set GNUTERM to choose the default terminal of the plot.",
            "The plot command draws functions and data files.",
        ];
        let ix = Index::new(passages);
        let s = ix.scores(&query_terms("Which variable sets the default terminal?"));
        let best = (0..3).max_by(|&a, &b| s[a].total_cmp(&s[b])).unwrap();
        assert_eq!(best, 1, "{s:?}");
        assert_eq!(s[0], 0.0);
        // A term found nowhere scores nothing.
        assert!(ix.scores(&query_terms("zebra")).iter().all(|&x| x == 0.0));
    }
}
