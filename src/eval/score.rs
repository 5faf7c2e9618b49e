//! The strict scorer: an answer is right when it names the expected answer (after
//! normalising case, punctuation, articles and numbers) and names none of the look-alike
//! distractors, so listing every candidate scores nothing.

/// Lower-cases, folds `1,000` into `1000` and number words into digits ("twenty-one" → `21`),
/// and splits into words without punctuation or articles.
pub fn normalize(text: &str) -> Vec<String> {
    let lower = text.to_lowercase();
    let chars: Vec<char> = lower.chars().collect();
    let mut cleaned = String::with_capacity(lower.len());
    for (i, &c) in chars.iter().enumerate() {
        let digit_at = |j: Option<usize>| {
            j.and_then(|j| chars.get(j))
                .is_some_and(char::is_ascii_digit)
        };
        let between_digits = digit_at(i.checked_sub(1)) && digit_at(Some(i + 1));
        match c {
            // Thousands separators vanish; a decimal point between digits stays.
            ',' | '_' if between_digits => {}
            '.' if between_digits => cleaned.push('.'),
            c if c.is_alphanumeric() => cleaned.push(c),
            _ => cleaned.push(' '),
        }
    }
    let words: Vec<&str> = cleaned
        .split_whitespace()
        .filter(|w| !matches!(*w, "a" | "an" | "the"))
        .collect();
    fold_number_words(&words)
}

fn small_number(w: &str) -> Option<u64> {
    const ONES: [&str; 20] = [
        "zero",
        "one",
        "two",
        "three",
        "four",
        "five",
        "six",
        "seven",
        "eight",
        "nine",
        "ten",
        "eleven",
        "twelve",
        "thirteen",
        "fourteen",
        "fifteen",
        "sixteen",
        "seventeen",
        "eighteen",
        "nineteen",
    ];
    const TENS: [&str; 8] = [
        "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety",
    ];
    ONES.iter()
        .position(|&o| o == w)
        .map(|i| i as u64)
        .or_else(|| {
            TENS.iter()
                .position(|&t| t == w)
                .map(|i| 20 + 10 * i as u64)
        })
}

/// Replaces each run of number words ("one hundred and five") with its value.
fn fold_number_words(words: &[&str]) -> Vec<String> {
    let mut out = Vec::with_capacity(words.len());
    let mut i = 0;
    while i < words.len() {
        let (mut total, mut current, mut j, mut any) = (0u64, 0u64, i, false);
        while j < words.len() {
            let w = words[j];
            let scale_next = words
                .get(j + 1)
                .is_some_and(|n| matches!(*n, "hundred" | "thousand" | "million"));
            if let Some(v) = small_number(w) {
                current += v;
            } else if let Some(v) = (!any && scale_next)
                .then(|| w.parse::<u64>().ok())
                .flatten()
            {
                // "2 thousand": digits may start a run that a scale word continues.
                current = v;
            } else if w == "hundred" && any {
                current = current.max(1) * 100;
            } else if let Some(scale) = match w {
                "thousand" => Some(1_000),
                "million" => Some(1_000_000),
                _ => None,
            }
            .filter(|_| any)
            {
                total += current.max(1) * scale;
                current = 0;
            } else if w == "and"
                && any
                && words.get(j + 1).is_some_and(|n| small_number(n).is_some())
            {
                // "one hundred and five": `and` only joins number words.
            } else {
                break;
            }
            any = true;
            j += 1;
        }
        if any {
            out.push((total + current).to_string());
            i = j;
        } else {
            out.push(words[i].to_string());
            i += 1;
        }
    }
    out
}

fn contains_seq(hay: &[String], needle: &[String]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

/// True when `prediction` names one of `answers` as whole words and no distractor.
pub fn is_correct(prediction: &str, answers: &[String], distractors: &[String]) -> bool {
    let p = normalize(prediction);
    let names = |s: &String| contains_seq(&p, &normalize(s));
    answers.iter().any(names) && !distractors.iter().any(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(pred: &str, gold: &str) -> bool {
        is_correct(pred, &[gold.to_string()], &[])
    }

    #[test]
    fn exact_and_normalised_answers_match() {
        assert!(ok("48213", "48213"));
        assert!(ok("The passkey is 48213.", "48213"));
        assert!(ok("  **Bluefin**!  ", "bluefin"));
        assert!(ok("It is the Silver Heron.", "silver heron"));
        assert!(ok("Answer: \"Copper Lantern\"", "The copper lantern"));
    }

    #[test]
    fn numbers_match_in_any_spelling() {
        assert!(ok("1,000 feet", "1000"));
        assert!(ok("There were seven.", "7"));
        assert!(ok("twenty-one", "21"));
        assert!(ok("one hundred and five keepers", "105"));
        assert!(ok("2 thousand", "2000"));
        assert!(ok("3.5 miles", "3.5"));
        assert_eq!(normalize("Twelve thousand, three hundred"), ["12300"]);
    }

    #[test]
    fn near_misses_are_wrong() {
        assert!(!ok("48212", "48213"), "one digit off");
        assert!(!ok("4821", "48213"), "a prefix of the number");
        assert!(!ok("482130", "48213"), "a longer number");
        assert!(
            !ok("1,0000", "1000"),
            "a different number once separators go"
        );
        assert!(!ok("Silver", "silver heron"), "half of a two-word answer");
        assert!(!ok("heron silver", "silver heron"), "words out of order");
        assert!(!ok("", "7"));
        assert!(!ok("seventy", "7"));
        assert!(
            !is_correct("anything", &[String::new()], &[]),
            "an empty answer matches nothing"
        );
    }

    #[test]
    fn naming_a_distractor_is_wrong_even_beside_the_answer() {
        let gold = ["bluefin".to_string()];
        let distractors = ["redfin".to_string(), "greyfin".to_string()];
        assert!(is_correct("Bluefin.", &gold, &distractors));
        assert!(!is_correct("Bluefin or Redfin", &gold, &distractors));
        assert!(!is_correct("Greyfin", &gold, &distractors));
    }
}
