//! Book mode on the tiny model: a document longer than the effective context is answered from
//! the pages its question selects, within the budget, and the answer cites pages it read.

mod common;

use std::sync::atomic::AtomicBool;

use swaa_chat::book::Focus;
use swaa_chat::document::{Document, Format, Section};
use swaa_chat::engine::{Choose, EngineError, Event, SessionOptions};
use swaa_chat::model::Logits;
use swaa_chat::recipe::{Phase, Preset, Recipe, RecipeDefaults};

use common::{session_opts as opts, tiny_session as session};

/// `pages` pages of filler, each naming its own subject; page 37 states a port number.
fn manual(pages: usize) -> Document {
    let mut text = String::new();
    let mut sections = Vec::new();
    for i in 1..=pages {
        let start = text.len();
        for p in 0..3 {
            text.push_str(&format!(
                "Part {p} of page {i} explains subject{i} in ordinary words, with examples and notes.\n\n"
            ));
        }
        if i == 37 {
            text.push_str("The frobnicator daemon listens on port 8421 by default.\n\n");
        }
        sections.push(Section {
            number: i,
            title: None,
            start,
            end: text.len(),
        });
    }
    Document {
        title: "Frobnicator manual".into(),
        format: Format::Pdf,
        text,
        sections,
    }
}

/// The pages a label names: "pages 36–38, 47 of 60" → 36, 37, 38, 47.
fn pages_in(label: &str) -> Vec<usize> {
    let runs = label
        .trim_start_matches("pages ")
        .trim_start_matches("page ")
        .split(" of ")
        .next()
        .unwrap();
    let mut out = Vec::new();
    for run in runs.split(", ") {
        let (a, b) = run.split_once('–').unwrap_or((run, run));
        out.extend(a.parse::<usize>().unwrap()..=b.parse::<usize>().unwrap());
    }
    out
}

fn swaa() -> Recipe {
    Recipe::preset(
        Preset::Swaa,
        RecipeDefaults {
            window: 64,
            sink: 4,
        },
    )
}

fn book_opts(focus: Focus) -> SessionOptions {
    SessionOptions {
        ctx: Some(1024),
        focus,
        ..opts(64, 8)
    }
}

#[test]
fn a_book_longer_than_the_context_is_answered_from_the_pages_its_question_selects() {
    let mut s = session(swaa(), book_opts(Focus::Lexical));
    s.load(&manual(60));
    let never = AtomicBool::new(false);
    let mut notes = Vec::new();
    s.read(
        &mut |e| {
            if let Event::Note { message } = e {
                notes.push(message)
            }
        },
        &never,
    )
    .unwrap();
    assert!(
        notes.iter().any(|n| n.starts_with("book mode:")),
        "the read says how the book is answered: {notes:?}"
    );
    assert_eq!(
        s.stats().prompt_tokens,
        0,
        "nothing is read before a question"
    );

    let a = s
        .ask(
            "Which port does the frobnicator daemon listen on?",
            &mut |_| {},
            &never,
        )
        .unwrap();
    let f = a.focus.as_ref().expect("answered in book mode");
    assert_eq!(f.selector, "lexical");
    assert!(pages_in(&f.read).contains(&37), "{}", f.read);
    assert!(f.read.ends_with("of 60"), "{}", f.read);
    let budget = 1024 - (256 + 8);
    assert!(f.tokens <= budget, "{} tokens over {budget}", f.tokens);
    assert!(
        a.stats.prompt_tokens <= 1024 - 8,
        "{}",
        a.stats.prompt_tokens
    );
    // Random weights attend anywhere, but only to pages the question read.
    assert!(!f.evidence.is_empty());
    let read = pages_in(&f.read);
    for e in &f.evidence {
        assert!(read.contains(&e.page), "cited page {} was not read", e.page);
        assert!(e.score > 0.0 && e.score <= 1.0);
    }
    let total: f64 = f.evidence.iter().map(|e| e.score).sum();
    assert!(total <= 1.0 + 1e-9);

    // A follow-up chooses its own pages.
    let b = s
        .ask(
            "What does page 12 say about subject12?",
            &mut |_| {},
            &never,
        )
        .unwrap();
    let f = b.focus.unwrap();
    assert!(pages_in(&f.read).contains(&12), "{}", f.read);
}

#[test]
fn gold_pages_are_read_with_their_neighbours_within_the_budget() {
    let mut s = session(swaa(), book_opts(Focus::Lexical));
    s.load(&manual(60));
    let a = s
        .ask_book(
            "Anything?",
            Choose::Pages(&[50]),
            &mut |_| {},
            &AtomicBool::new(false),
        )
        .unwrap();
    let f = a.focus.unwrap();
    assert_eq!(f.selector, "pages");
    assert!(pages_in(&f.read).contains(&50), "{}", f.read);
}

#[test]
fn a_document_within_the_effective_context_is_read_whole() {
    let mut s = session(swaa(), book_opts(Focus::Lexical));
    s.load(&manual(3));
    let a = s
        .ask("What is subject2?", &mut |_| {}, &AtomicBool::new(false))
        .unwrap();
    assert!(a.focus.is_none());
    // A smaller effective context puts the same document in book mode.
    let mut s = session(
        swaa(),
        SessionOptions {
            effective_ctx: Some(300),
            ..book_opts(Focus::Lexical)
        },
    );
    s.load(&manual(6));
    let a = s
        .ask("What is subject2?", &mut |_| {}, &AtomicBool::new(false))
        .unwrap();
    assert!(a.focus.is_some_and(|f| pages_in(&f.read).contains(&2)));
}

#[test]
fn with_focus_off_a_book_past_the_context_is_refused_as_before() {
    let mut s = session(swaa(), book_opts(Focus::Off));
    s.load(&manual(60));
    let err = s
        .ask("Which port?", &mut |_| {}, &AtomicBool::new(false))
        .unwrap_err();
    assert!(matches!(err, EngineError::ContextOverflow { .. }), "{err}");
}

#[test]
fn attention_mass_over_every_key_sums_to_one_per_head_query_and_layer() {
    let s = session(Recipe::full(), opts(64, 8));
    let tokens: Vec<u32> = (0..40).map(|i| 100 + i * 7).collect();
    let model = s.model().clone();
    let mut cache = model.new_cache();
    model
        .forward(
            &tokens[..30],
            &mut cache,
            &Recipe::full(),
            Phase::Prefill,
            Logits::Skip,
        )
        .unwrap();
    let mass = model
        .attention_mass(
            &tokens[30..],
            &mut cache,
            &Recipe::full(),
            Phase::Decode,
            40,
        )
        .unwrap();
    let cfg = model.config();
    let want = (cfg.layers * cfg.heads * 10) as f32;
    let sum: f32 = mass.iter().sum();
    assert!((sum - want).abs() < 1e-3 * want, "{sum} vs {want}");
    // Causal: the queries at 30..40 give nothing to keys after themselves, so key 39 gets
    // only its own query's share, and every key something.
    assert!(mass.iter().all(|&m| m > 0.0));
    assert!(mass[39] < mass[0..30].iter().cloned().fold(f32::MAX, f32::min) * 10.0);
    // Running the same tokens again after a truncate leaves the same cache behind.
    let before = model
        .forward(
            &[7],
            &mut cache.fork().unwrap(),
            &Recipe::full(),
            Phase::Decode,
            Logits::Last,
        )
        .unwrap()
        .unwrap();
    cache.truncate(30).unwrap();
    model
        .attention_mass(
            &tokens[30..],
            &mut cache,
            &Recipe::full(),
            Phase::Decode,
            30,
        )
        .unwrap();
    let after = model
        .forward(
            &[7],
            &mut cache,
            &Recipe::full(),
            Phase::Decode,
            Logits::Last,
        )
        .unwrap()
        .unwrap();
    let diff = common::max_abs(&(before - after).unwrap());
    assert!(diff < 1e-4, "{diff}");
}

#[test]
fn the_attention_selector_reads_the_book_once_and_each_question_scores_its_keys() {
    for focus in [Focus::Attention, Focus::Hybrid] {
        let mut s = session(swaa(), book_opts(focus));
        s.load(&manual(60));
        let never = AtomicBool::new(false);
        let mut progress = Vec::new();
        s.read(
            &mut |e| {
                if let Event::Progress { done, total, .. } = e {
                    progress.push((done, total))
                }
            },
            &never,
        )
        .unwrap();
        let (done, total) = *progress.last().unwrap();
        assert!(
            total > 1024 && done == total,
            "the whole book is read: {progress:?}"
        );
        for q in ["Which port does the daemon use?", "What is subject12?"] {
            let mut reads = 0;
            let a = s
                .ask(
                    q,
                    &mut |e| {
                        if let Event::Progress { total: t, .. } = e
                            && t == total
                        {
                            reads += 1
                        }
                    },
                    &never,
                )
                .unwrap();
            assert_eq!(reads, 0, "{focus}: the book is not read again");
            let f = a.focus.unwrap();
            assert_eq!(f.selector, focus.to_string());
            assert!(f.tokens <= 1024 - (256 + 8), "{}", f.tokens);
            assert!(f.read.ends_with("of 60"), "{}", f.read);
        }
    }
}
