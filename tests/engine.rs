//! The engine thread: events, cancel, recipe switches, follow-ups, context limits.
//! A tiny random llama with smollm2's real tokenizer keeps each test well under a second.

mod common;

use std::sync::atomic::AtomicBool;
use std::time::Duration;

use swaa_chat::book::Focus;
use swaa_chat::document::Format;
use swaa_chat::engine::{Command, ContextPolicy, Engine, EngineError, Event, SessionOptions};
use swaa_chat::recipe::{Preset, Recipe, RecipeDefaults};

use common::{session_opts as opts, tiny_session as session};

fn doc(words: usize) -> String {
    (0..words).map(|i| format!("word{} ", i % 97)).collect()
}

fn until_done(engine: &Engine) -> Vec<Event> {
    let mut out = Vec::new();
    loop {
        let e = engine
            .events()
            .recv_timeout(Duration::from_secs(60))
            .expect("engine answered");
        let end = matches!(e, Event::Done(_) | Event::Error { .. } | Event::Cancelled);
        out.push(e);
        if end {
            // The trailing Stats event follows every command.
            out.push(
                engine
                    .events()
                    .recv_timeout(Duration::from_secs(60))
                    .unwrap(),
            );
            return out;
        }
    }
}

#[test]
fn engine_streams_progress_then_tokens_then_done() {
    let engine = Engine::spawn(Box::new(session(
        Recipe {
            window: Some(64),
            sink: 4,
            ..Recipe::full()
        },
        opts(32, 12),
    )));
    engine.send(Command::LoadDocument {
        title: "t".into(),
        text: doc(300),
        sections: vec![],
        format: Format::Text,
    });
    engine.send(Command::Ask {
        question: "What is this?".into(),
    });
    let events = until_done(&engine);
    let progress: Vec<(usize, usize)> = events
        .iter()
        .filter_map(|e| match e {
            Event::Progress { done, total, .. } => Some((*done, *total)),
            _ => None,
        })
        .collect();
    assert!(
        progress.len() > 3,
        "reading in chunks of 32 reports progress: {progress:?}"
    );
    assert!(
        progress.windows(2).all(|w| w[0].0 < w[1].0),
        "progress advances"
    );
    let tokens: String = events
        .iter()
        .filter_map(|e| match e {
            Event::Token { text } => Some(text.as_str()),
            _ => None,
        })
        .collect();
    let Some(Event::Done(answer)) = events.iter().find(|e| matches!(e, Event::Done(_))) else {
        panic!("{events:?}")
    };
    assert_eq!(answer.text, tokens);
    assert!(answer.stats.generated_tokens > 0 && answer.stats.generated_tokens <= 12);
    assert!(answer.stats.prompt_tokens > 300);
    let (from, to) = answer.stats.window.unwrap();
    assert_eq!(to - from, 64, "the window covers W tokens");
    assert_eq!(to, answer.stats.cache.next_pos);
}

#[test]
fn cancel_stops_a_read_within_one_chunk() {
    let engine = Engine::spawn(Box::new(session(Recipe::full(), opts(16, 8))));
    engine.send(Command::LoadDocument {
        title: "t".into(),
        text: doc(1000),
        sections: vec![],
        format: Format::Text,
    });
    engine.send(Command::Read);
    // Loading the document reports stats; then reading starts.
    loop {
        match engine
            .events()
            .recv_timeout(Duration::from_secs(60))
            .unwrap()
        {
            Event::Stats(_) | Event::DocumentTokens { .. } => continue,
            Event::Progress { .. } => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    engine.cancel();
    let mut after = 0;
    loop {
        match engine
            .events()
            .recv_timeout(Duration::from_secs(60))
            .unwrap()
        {
            Event::Progress { .. } => after += 1,
            Event::Stats(_) => {}
            Event::Cancelled => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(after <= 1, "{after} chunks ran after cancel");
}

/// Issue 17: a question queued behind a read ran when the read was cancelled for a recipe
/// change, under the old recipe. A cancel covers every command sent before it; a recipe sent
/// before it still applies (only its re-read stops); what is sent after it runs.
#[test]
fn cancel_covers_the_commands_queued_before_it_and_none_after() {
    let engine = Engine::spawn(Box::new(session(Recipe::full(), opts(16, 8))));
    engine.send(Command::LoadDocument {
        title: "t".into(),
        text: doc(1000),
        sections: vec![],
        format: Format::Text,
    });
    engine.send(Command::Read);
    engine.send(Command::Ask {
        question: "queued behind the read?".into(),
    });
    let w64 = Recipe {
        window: Some(64),
        sink: 4,
        ..Recipe::full()
    };
    engine.send(Command::SetRecipe(w64.clone()));
    loop {
        let e = engine.events().recv_timeout(Duration::from_secs(60));
        if matches!(e.unwrap(), Event::Progress { .. }) {
            break;
        }
    }
    engine.cancel();
    engine.send(Command::Ask {
        question: "sent after the cancel?".into(),
    });
    let mut seen = Vec::new();
    let answer = loop {
        match engine
            .events()
            .recv_timeout(Duration::from_secs(60))
            .unwrap()
        {
            Event::Done(a) => break a,
            Event::Cancelled => seen.push("cancelled".to_string()),
            Event::RecipeApplied { reread, .. } => seen.push(format!("applied reread={reread}")),
            Event::Error { message } => panic!("{message}"),
            _ => {}
        }
    };
    assert_eq!(
        seen,
        ["cancelled", "cancelled", "applied reread=true", "cancelled"],
        "the read, the queued question, the recipe's re-read"
    );
    assert!(!answer.cancelled);
    assert_eq!(answer.question, "sent after the cancel?");
    assert_eq!(
        answer.recipe, w64,
        "the recipe sent before the cancel applies"
    );
}

#[test]
fn context_overflow_is_refused_before_any_work_unless_a_policy_says_truncate() {
    // With book mode off: on, the question would read the pages it selects.
    let mut s = session(
        Recipe::full(),
        SessionOptions {
            ctx: Some(400),
            focus: Focus::Off,
            ..opts(64, 16)
        },
    );
    s.load_document("t", &doc(2000));
    let mut events = Vec::new();
    let err = s
        .ask("q?", &mut |e| events.push(e), &AtomicBool::new(false))
        .unwrap_err();
    assert!(
        matches!(err, EngineError::ContextOverflow { ctx: 400, .. }),
        "{err}"
    );
    assert!(
        err.to_string().contains("truncate-head"),
        "the message says what to do: {err}"
    );
    assert!(events.is_empty(), "no work before the error");
    for policy in [ContextPolicy::TruncateHead, ContextPolicy::TruncateTail] {
        let mut s = session(
            Recipe::full(),
            SessionOptions {
                ctx: Some(400),
                context_policy: policy,
                ..opts(64, 16)
            },
        );
        s.load_document("t", &doc(2000));
        let a = s.ask("q?", &mut |_| {}, &AtomicBool::new(false)).unwrap();
        assert!(
            a.stats.cache.next_pos <= 400,
            "{policy:?}: {} tokens",
            a.stats.cache.next_pos
        );
    }
}

#[test]
fn fa_decode_needs_a_reread_only_after_an_evicting_read() {
    let d = RecipeDefaults {
        window: 32,
        sink: 4,
    };
    let mut s = session(Recipe::preset(Preset::Swa, d), opts(32, 4));
    s.load_document("t", &doc(200));
    s.read(&mut |_| {}, &AtomicBool::new(false)).unwrap();
    let small = s.stats().cache.bytes_held;
    assert!(
        s.set_recipe(Recipe::preset(Preset::SwaFadec, d)),
        "swa evicted: FA decode must re-read"
    );
    s.read(&mut |_| {}, &AtomicBool::new(false)).unwrap();
    assert!(
        s.stats().cache.bytes_held > small,
        "FA decode keeps the whole document"
    );
    assert!(
        !s.set_recipe(Recipe::preset(Preset::Swa, d)),
        "turning FA decode off applies at once"
    );
    assert!(
        s.set_recipe(Recipe::preset(Preset::SwaSink, d)),
        "a new sink changes prefill"
    );
}

#[test]
fn follow_up_questions_only_prefill_their_own_tokens() {
    let mut s = session(Recipe::full(), opts(64, 6));
    s.load_document("t", &doc(400));
    let never = AtomicBool::new(false);
    s.ask("first?", &mut |_| {}, &never).unwrap();
    let before = s.cache().next_pos();
    let mut first_progress = None;
    s.ask(
        "and the second?",
        &mut |e| {
            if let Event::Progress { done, .. } = e {
                first_progress.get_or_insert(done);
            }
        },
        &never,
    )
    .unwrap();
    let added = s.cache().next_pos() - before;
    assert!(
        added < 40,
        "the follow-up added {added} tokens, not a re-read"
    );
    assert!(
        first_progress.unwrap() > before,
        "progress resumes after what was cached"
    );
}

/// The engine tells where each prompt token of a read starts in the document, from the very
/// encoding it reads: tokens inside the document cover it exactly, in order, so a UI can
/// place the window without tokenizing again; truncation keeps the map honest.
#[test]
fn document_token_offsets_cover_the_document_as_read() {
    let text = doc(200);
    let read = |policy: ContextPolicy, ctx: Option<usize>| {
        let mut s = session(
            Recipe::full(),
            SessionOptions {
                ctx,
                context_policy: policy,
                ..opts(32, 4)
            },
        );
        s.load_document("t", &text);
        let mut offsets = None;
        let mut total = 0;
        s.read(
            &mut |e| match e {
                Event::DocumentTokens { offsets: o } => offsets = Some(o),
                Event::Progress { total: t, .. } => total = t,
                _ => {}
            },
            &AtomicBool::new(false),
        )
        .unwrap();
        let tok = s.tokenizer().inner().clone();
        (offsets.expect("offsets before the read"), total, tok)
    };
    let (offsets, total, tok) = read(ContextPolicy::Error, None);
    assert_eq!(offsets.len(), total, "one offset per prompt token read");
    assert!(
        offsets.windows(2).all(|w| w[0] <= w[1]),
        "in document order"
    );
    // The prompt ends with the document: its last token starts in the document's last word.
    let last = *offsets.last().unwrap();
    assert_eq!(offsets[0], 0);
    assert!(
        last < text.len() && last + 8 > text.len(),
        "{last} of {}",
        text.len()
    );
    let ids = tok.encode(text.as_str(), false).unwrap().get_ids().len();
    let inside = offsets.windows(2).filter(|w| w[0] < w[1]).count();
    assert!(
        inside.abs_diff(ids) <= 2,
        "{inside} tokens advance through the document, which alone is {ids} tokens"
    );
    // Keeping the beginning: the map ends where the kept part ends, not at the document's end.
    let (cut, total, _) = read(ContextPolicy::TruncateTail, Some(300 + 256 + 4));
    assert_eq!((cut.len(), total), (300, 300));
    let end = *cut.last().unwrap();
    assert!(
        end > 0 && end < text.len(),
        "read up to byte {end} of {}",
        text.len()
    );
}

#[test]
fn an_answer_stuck_in_a_loop_stops_with_a_note_and_the_cap_is_said() {
    // A random model's greedy answer falls into a cycle: it stops there, well before the cap.
    let mut s = session(Recipe::full(), opts(64, 300));
    s.load_document("t", &doc(50));
    let a = s.ask("q?", &mut |_| {}, &AtomicBool::new(false)).unwrap();
    let note = a.note.clone().unwrap_or_default();
    assert!(
        note.contains("repeated") && a.stats.generated_tokens < 300,
        "{note:?} after {} tokens",
        a.stats.generated_tokens
    );
    // The same answer without the loop stop runs to the cap, and says so.
    let mut o = opts(64, 300);
    o.sampling.stop_repeats = 0;
    let mut s = session(Recipe::full(), o);
    s.load_document("t", &doc(50));
    let b = s.ask("q?", &mut |_| {}, &AtomicBool::new(false)).unwrap();
    assert_eq!(b.stats.generated_tokens, 300);
    assert!(b.note.is_some_and(|n| n.contains("300-token cap")));
    // What was said before the stop is the same answer's beginning.
    assert!(b.text.starts_with(&a.text), "{:?} / {:?}", a.text, b.text);
}

#[test]
fn a_read_that_overflows_tells_a_ui_its_size_and_room() {
    let s = session(
        Recipe::full(),
        SessionOptions {
            ctx: Some(400),
            focus: Focus::Off,
            ..opts(64, 16)
        },
    );
    let engine = Engine::spawn(Box::new(s));
    engine.send(Command::LoadDocument {
        title: "t".into(),
        text: doc(2000),
        sections: vec![],
        format: Format::Text,
    });
    engine.send(Command::Read);
    // Every command ends with the stats; the read's answer is the first other event.
    let e = std::iter::repeat_with(|| {
        engine
            .events()
            .recv_timeout(Duration::from_secs(60))
            .unwrap()
    })
    .find(|e| !matches!(e, Event::Stats(_)))
    .unwrap();
    let Event::TooLong { tokens, room } = e else {
        panic!("{e:?}")
    };
    // The room is the context less what a question and its answer need.
    assert!(tokens > 2000 && room == 400 - (256 + 16), "{tokens} {room}");
}
