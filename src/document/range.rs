//! Reading part of a document: a range of its pages or chapters (`--pages 40-120`), labelled
//! so that nothing claims more was read than was.

use std::fmt;
use std::str::FromStr;

use super::{Document, Section};

/// Sections `first..=last` by their numbers (pages of a PDF, chapters of an EPUB); `last`
/// `None` runs to the end (`40-`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SectionRange {
    pub first: usize,
    pub last: Option<usize>,
}

impl FromStr for SectionRange {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("bad range '{s}': use FIRST-LAST, FIRST- or one number, e.g. 40-120");
        let num = |t: &str| t.trim().parse::<usize>().ok().filter(|&n| n >= 1);
        let (first, last) = match s.split_once('-') {
            Some((a, b)) if b.trim().is_empty() => (num(a).ok_or_else(bad)?, None),
            Some((a, b)) => (num(a).ok_or_else(bad)?, Some(num(b).ok_or_else(bad)?)),
            None => {
                let n = num(s).ok_or_else(bad)?;
                (n, Some(n))
            }
        };
        if last.is_some_and(|l| l < first) {
            return Err(format!(
                "bad range '{s}': the first number must not be after the last"
            ));
        }
        Ok(SectionRange { first, last })
    }
}

impl fmt::Display for SectionRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.last {
            Some(l) if l == self.first => write!(f, "{l}"),
            Some(l) => write!(f, "{}-{l}", self.first),
            None => write!(f, "{}-", self.first),
        }
    }
}

/// "pages 40–120 of 311", "chapter 3 of 12": what part of a document was read.
pub fn part_label(noun: &str, sections: &[Section], total: usize) -> String {
    let (Some(a), Some(b)) = (sections.first(), sections.last()) else {
        return format!("no {noun}s");
    };
    if a.number == b.number {
        format!("{noun} {} of {total}", a.number)
    } else {
        format!("{noun}s {}–{} of {total}", a.number, b.number)
    }
}

impl Document {
    /// This document, or the part of it `range` names, with the label that says which part
    /// it is ("pages 40–120 of 311"); no label when it is whole.
    pub fn part(self, range: Option<SectionRange>) -> Result<(Document, Option<String>), String> {
        let Some(range) = range else {
            return Ok((self, None));
        };
        let noun = self.section_noun();
        let part = self.select(range, noun)?;
        let label = part_label(noun, &part.sections, self.sections.len());
        Ok((part, Some(label)))
    }

    /// The part of the document in `range`: its sections' text (they tile the text, so the
    /// part is one slice) with offsets from the part's start, and the title saying which
    /// part it is. `noun` names a section in messages ("page").
    pub fn select(&self, range: SectionRange, noun: &str) -> Result<Document, String> {
        let (lo, hi) = match (self.sections.first(), self.sections.last()) {
            (Some(a), Some(b)) => (a.number, b.number),
            _ => return Err("the document has no sections to choose from".into()),
        };
        let last = range.last.unwrap_or(hi);
        let picked: Vec<&Section> = self
            .sections
            .iter()
            .filter(|s| (range.first..=last).contains(&s.number))
            .collect();
        let (Some(a), Some(b)) = (picked.first(), picked.last()) else {
            return Err(format!(
                "{noun}s {range} are outside this document, which has {noun}s {lo}–{hi}: give a range within it"
            ));
        };
        let (start, end) = (a.start, b.end);
        let sections: Vec<Section> = picked
            .iter()
            .map(|s| Section {
                start: s.start - start,
                end: s.end - start,
                ..(*s).clone()
            })
            .collect();
        Ok(Document {
            title: format!(
                "{} ({})",
                self.title,
                part_label(noun, &sections, self.sections.len())
            ),
            text: self.text[start..end].to_string(),
            sections,
            ..self.clone()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(pages: usize) -> Document {
        let mut text = String::new();
        let mut sections = Vec::new();
        for n in 1..=pages {
            let start = text.len();
            text += &format!("Text of page {n}.\n");
            sections.push(Section {
                number: n,
                title: None,
                start,
                end: text.len(),
            });
        }
        Document {
            title: "Book".into(),
            text,
            sections,
            ..Default::default()
        }
    }

    #[test]
    fn ranges_parse_with_clear_errors() {
        let r = |s: &str| s.parse::<SectionRange>();
        assert_eq!(
            r("40-120"),
            Ok(SectionRange {
                first: 40,
                last: Some(120)
            })
        );
        assert_eq!(
            r(" 7 "),
            Ok(SectionRange {
                first: 7,
                last: Some(7)
            })
        );
        assert_eq!(
            r("40-"),
            Ok(SectionRange {
                first: 40,
                last: None
            })
        );
        for bad in ["", "0-3", "a-b", "5-2", "-4", "1-2-3"] {
            assert!(r(bad).is_err(), "{bad}");
        }
        assert_eq!(r("40-").unwrap().to_string(), "40-");
    }

    #[test]
    fn a_selection_is_the_pages_text_and_says_which_part_it_is() {
        let d = doc(10);
        let part = d
            .select(
                SectionRange {
                    first: 3,
                    last: Some(4),
                },
                "page",
            )
            .unwrap();
        assert_eq!(part.text, "Text of page 3.\nText of page 4.\n");
        assert_eq!(part.title, "Book (pages 3–4 of 10)");
        assert_eq!(
            (part.sections[0].start, part.sections[1].end),
            (0, part.text.len())
        );
        assert_eq!(part.sections[1].number, 4);
        let tail = d.select("9-".parse().unwrap(), "page").unwrap();
        assert_eq!(tail.title, "Book (pages 9–10 of 10)");
        let one = d.select("10".parse().unwrap(), "page").unwrap();
        assert_eq!(one.title, "Book (page 10 of 10)");
        let err = d.select("11-20".parse().unwrap(), "page").unwrap_err();
        assert!(
            err.contains("pages 11-20") && err.contains("pages 1–10"),
            "{err}"
        );
    }
}
