//! The reader's state and how it changes: plain data, [`App::update`] turns a [`Msg`] into
//! state changes and [`Effect`]s for the event loop to carry out. No I/O, no clock: time
//! arrives in [`Msg::Tick`], so tests (and snapshots) control it.

use std::ops::Range;
use std::path::PathBuf;
use std::time::Duration;

use crossterm::event::{KeyEvent, MouseEvent, MouseEventKind};
use ratatui::layout::{Position, Rect};

use super::input::{History, Input};
use super::keys::{self, Action};
use super::markdown;
use super::ui::{self, Theme};
use crate::document::{Document, Section};
use crate::engine::RecipeAnswer;
use crate::engine::{Command, Event, Stats};
use crate::hub::{FetchProgress, FetchStage};
use crate::recipe::{LayerSet, Preset, Recipe, RecipeDefaults};

/// What the event loop learns about the loaded model.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelInfo {
    pub name: String,
    pub device: String,
    pub layers: usize,
    pub ctx: usize,
    pub defaults: RecipeDefaults,
    /// Why the recipe cannot change (a SWAT model's attention is fixed by training).
    pub fixed_attention: Option<String>,
}

// Engine events are the large variant; each is moved once, and boxing would allocate per token.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Msg {
    Key(KeyEvent),
    Paste(String),
    Mouse(MouseEvent),
    Resize(u16, u16),
    /// Time since start, and the process's resident memory when known.
    Tick {
        now: Duration,
        rss_bytes: Option<u64>,
    },
    /// The model's download (before it loads), when it is not cached yet.
    Fetch(FetchProgress),
    ModelReady(ModelInfo, Recipe),
    /// Fetching or loading the model failed; the message says what to do.
    ModelFailed(String),
    /// Parsing the document: `done` of `total` parts (`unit`: page or chapter).
    Parsing {
        done: usize,
        total: usize,
        unit: &'static str,
    },
    DocumentReady(Document),
    /// Where each token of the document starts in its text (the model's tokenizer on the
    /// document alone), asked for by [`Effect::MapTokens`].
    TokenOffsets(Vec<usize>),
    /// Loading the document failed; the message says what to do. The model stays usable
    /// for a plain chat.
    LoadFailed(String),
    Engine(Event),
    Saved(Result<PathBuf, String>),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    Engine(Command),
    /// Stop what the engine is doing (between two chunks or tokens).
    CancelEngine,
    Save {
        markdown: String,
    },
    /// Tokenize the document with the model's tokenizer and answer with
    /// [`Msg::TokenOffsets`], so the window highlight lands on the right words.
    MapTokens {
        text: String,
    },
    Quit,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Focus {
    Input,
    Document,
    Chat,
}

#[derive(Debug, Clone, PartialEq)]
pub enum TurnState {
    /// Sent; the engine has not produced a token yet (it may still be reading).
    Waiting,
    Streaming,
    Done,
    Cancelled,
    Failed(String),
}

/// One question and its answer, with the recipe and numbers that produced it.
#[derive(Debug, Clone, PartialEq)]
pub struct Turn {
    pub question: String,
    pub answer: String,
    pub recipe: String,
    pub stats: Option<Stats>,
    pub state: TurnState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusKind {
    Info,
    Error,
}

/// A prefill in progress, with what the rate and ETA are computed from.
#[derive(Debug, Clone, PartialEq)]
pub struct Progress {
    pub done: usize,
    pub total: usize,
    /// Whether it reads the document (or re-reads it) rather than a question.
    pub reading: bool,
    first_at: Duration,
    first_done: usize,
}

impl Progress {
    pub fn new(done: usize, total: usize, reading: bool, now: Duration) -> Self {
        Progress {
            done,
            total,
            reading,
            first_at: now,
            first_done: done,
        }
    }

    /// Tokens (or bytes) per second since the first report; None until there is a time span.
    pub fn rate(&self, now: Duration) -> Option<f64> {
        let secs = now.saturating_sub(self.first_at).as_secs_f64();
        (secs > 0.0 && self.done > self.first_done)
            .then(|| (self.done - self.first_done) as f64 / secs)
    }

    pub fn eta(&self, now: Duration) -> Option<Duration> {
        let rate = self.rate(now)?;
        Some(Duration::from_secs_f64(
            self.total.saturating_sub(self.done) as f64 / rate,
        ))
    }
}

/// A model download: the stage and its bytes (rate and ETA as for reading).
#[derive(Debug, Clone, PartialEq)]
pub struct Download {
    pub model: String,
    pub stage: FetchStage,
    /// pip wheels done, of how many.
    pub parts: Option<(usize, usize)>,
    pub bytes: Progress,
}

#[derive(Debug, Clone, PartialEq)]
pub enum CompareState {
    Running,
    Done,
    Cancelled,
    Failed(String),
}

/// `:eval`: one question under every named preset, shown side by side.
#[derive(Debug, Clone)]
pub struct Comparison {
    pub question: String,
    /// Preset names, in the order they run.
    pub names: Vec<String>,
    /// The preset answering now.
    pub current: usize,
    /// Answers as they stream in, one per preset.
    pub partial: Vec<String>,
    /// Each answer's numbers once it has streamed (the read time comes with the results).
    pub stats: Vec<Option<Stats>>,
    /// The final answers with their costs (once done).
    pub results: Vec<RecipeAnswer>,
    pub state: CompareState,
}

/// The document as the screen shows it: wrapped lines (byte ranges of the text) and the
/// section markers between them.
#[derive(Debug, Clone)]
pub struct DocView {
    pub title: String,
    pub text: String,
    pub sections: Vec<Section>,
    /// Lines at the current pane width.
    pub lines: Vec<DocLine>,
    pub width: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub enum DocLine {
    Text(Range<usize>),
    /// A section heading, placed before the text at byte `at`.
    Marker {
        label: String,
        at: usize,
    },
}

impl DocView {
    fn new(doc: Document, width: usize) -> Self {
        let mut v = DocView {
            title: doc.title,
            text: doc.text,
            sections: doc.sections,
            lines: Vec::new(),
            width: 0,
        };
        v.rewrap(width);
        v
    }

    /// "page" when sections are untitled pages, "section" when they carry titles.
    pub fn unit(&self) -> &'static str {
        if self.sections.iter().any(|s| s.title.is_some()) {
            "section"
        } else {
            "page"
        }
    }

    fn rewrap(&mut self, width: usize) {
        if width == self.width && !self.lines.is_empty() {
            return;
        }
        self.width = width;
        self.lines.clear();
        let len = self.text.len();
        let mut cursor = 0;
        // Markers only mean something when there is more than one part.
        let marked = self.sections.len() > 1;
        let mut sections: Vec<&Section> = self.sections.iter().collect();
        sections.sort_by_key(|s| s.start);
        for s in sections {
            let start = floor_boundary(&self.text, s.start.min(len));
            let end = floor_boundary(&self.text, s.end.min(len));
            if start > cursor {
                wrap_into(&self.text, cursor..start, width, &mut self.lines);
            }
            if marked {
                let label = match &s.title {
                    Some(t) => format!("── {} ──", t.trim()),
                    None => format!("── page {} ──", s.number),
                };
                self.lines.push(DocLine::Marker { label, at: start });
            }
            let from = start.max(cursor);
            if end > from {
                wrap_into(&self.text, from..end, width, &mut self.lines);
                cursor = end;
            }
        }
        if cursor < len || self.lines.is_empty() {
            wrap_into(&self.text, cursor..len, width, &mut self.lines);
        }
    }

    /// Index of the last line starting at or before byte `b`.
    pub fn line_of(&self, b: usize) -> usize {
        let i = self.lines.partition_point(|l| match l {
            DocLine::Text(r) => r.start <= b,
            DocLine::Marker { at, .. } => *at <= b,
        });
        i.saturating_sub(1)
    }

    /// The section holding byte `b`.
    pub fn section_at(&self, b: usize) -> Option<&Section> {
        self.sections.iter().find(|s| s.start <= b && b < s.end)
    }
}

fn floor_boundary(s: &str, mut i: usize) -> usize {
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn wrap_into(text: &str, range: Range<usize>, width: usize, out: &mut Vec<DocLine>) {
    let mut at = range.start;
    for line in text[range.clone()].split('\n') {
        for r in markdown::wrap_ranges(line, width) {
            out.push(DocLine::Text(at + r.start..at + r.end));
        }
        at += line.len() + 1;
    }
}

pub struct App {
    pub theme: Theme,
    /// Where logs go, for the help overlay.
    pub log_path: Option<PathBuf>,
    pub size: (u16, u16),
    pub now: Duration,
    pub rss_bytes: Option<u64>,
    pub model: Option<ModelInfo>,
    /// The model name from the command line, shown while it loads.
    pub model_hint: String,
    /// Fetching or loading the model failed (the status line says why).
    pub model_failed: bool,
    /// A document was given and is loading or loaded.
    pub wants_document: bool,
    pub doc: Option<DocView>,
    /// The recipe the next question uses (the engine has it or is about to).
    pub recipe: Recipe,
    /// The recipe the engine's cache was (or is being) read with.
    pub read_with: Option<Recipe>,
    pub stats: Stats,
    pub progress: Option<Progress>,
    pub download: Option<Download>,
    /// Parts of the document parsed, of how many, and what a part is.
    pub parsing: Option<(usize, usize, &'static str)>,
    pub comparison: Option<Comparison>,
    /// A document read or re-read is running or queued.
    pub reading: bool,
    pub answering: bool,
    /// Document tokens, and how many of them the cache holds.
    pub doc_tokens: usize,
    /// Byte offset in the document of each of its tokens, once mapped.
    pub token_offsets: Option<Vec<usize>>,
    /// Tokens of the first read's prompt (template head and document), from its progress.
    pub prefix_tokens: Option<usize>,
    pub read_tokens: usize,
    /// Positions the newest query of a sliding layer sees besides the sink.
    pub window: Option<(usize, usize)>,
    pub turns: Vec<Turn>,
    pub input: Input,
    pub history: History,
    pub focus: Focus,
    /// First document line shown when not following the reading window.
    pub doc_scroll: usize,
    pub doc_follow: bool,
    /// Chat lines scrolled up from the newest.
    pub chat_scroll: usize,
    pub show_help: bool,
    pub show_thinking: bool,
    pub status: Option<(StatusKind, String)>,
}

impl App {
    pub fn new(model_hint: &str, wants_document: bool, theme: Theme) -> Self {
        App {
            theme,
            log_path: None,
            size: (80, 24),
            now: Duration::ZERO,
            rss_bytes: None,
            model: None,
            model_hint: model_hint.to_string(),
            model_failed: false,
            wants_document,
            doc: None,
            recipe: Recipe::full(),
            read_with: None,
            stats: Stats::default(),
            progress: None,
            download: None,
            parsing: None,
            comparison: None,
            reading: false,
            answering: false,
            doc_tokens: 0,
            token_offsets: None,
            prefix_tokens: None,
            read_tokens: 0,
            window: None,
            turns: Vec::new(),
            input: Input::default(),
            history: History::default(),
            focus: Focus::Input,
            doc_scroll: 0,
            doc_follow: true,
            chat_scroll: 0,
            show_help: false,
            show_thinking: false,
            status: None,
        }
    }

    pub fn busy(&self) -> bool {
        self.reading || self.answering || self.comparing()
    }

    pub fn comparing(&self) -> bool {
        self.comparison
            .as_ref()
            .is_some_and(|c| c.state == CompareState::Running)
    }

    fn info(&mut self, s: impl Into<String>) {
        self.status = Some((StatusKind::Info, s.into()));
    }

    fn error(&mut self, s: impl Into<String>) {
        self.status = Some((StatusKind::Error, s.into()));
    }

    pub fn defaults(&self) -> RecipeDefaults {
        self.model
            .as_ref()
            .map_or_else(|| RecipeDefaults::for_context(8192), |m| m.defaults)
    }

    pub fn update(&mut self, msg: Msg) -> Vec<Effect> {
        match msg {
            Msg::Key(k) => match keys::action(k) {
                Some(a) => self.act(a),
                None => Vec::new(),
            },
            Msg::Paste(s) => {
                self.focus = Focus::Input;
                self.input.insert_str(&s);
                Vec::new()
            }
            Msg::Mouse(m) => {
                self.mouse(m);
                Vec::new()
            }
            Msg::Resize(w, h) => {
                self.size = (w, h);
                self.rewrap();
                Vec::new()
            }
            Msg::Tick { now, rss_bytes } => {
                self.now = now;
                self.rss_bytes = rss_bytes.or(self.rss_bytes);
                Vec::new()
            }
            Msg::Fetch(f) => {
                let now = self.now;
                let fresh = || Download {
                    model: f.model.to_string(),
                    stage: f.stage,
                    parts: None,
                    bytes: Progress::new(f.bytes as usize, f.total_bytes as usize, false, now),
                };
                // Rate and ETA are per stage: verifying runs far faster than downloading.
                let d = match &mut self.download {
                    Some(d) if d.stage == f.stage => d,
                    slot => slot.insert(fresh()),
                };
                d.parts = f.parts;
                d.bytes.done = f.bytes as usize;
                d.bytes.total = f.total_bytes as usize;
                if f.stage == FetchStage::Done {
                    self.info(format!("{} is in the cache: loading it…", f.model));
                }
                Vec::new()
            }
            Msg::ModelFailed(m) => {
                self.download = None;
                self.model_failed = true;
                self.error(m);
                Vec::new()
            }
            Msg::Parsing { done, total, unit } => {
                self.parsing = (done < total).then_some((done, total, unit));
                Vec::new()
            }
            Msg::ModelReady(info, recipe) => {
                self.download = None;
                self.info(format!(
                    "{} loaded on {}: {}",
                    info.name,
                    info.device,
                    if self.wants_document {
                        "reading the document…"
                    } else {
                        "ask anything"
                    }
                ));
                self.model = Some(info);
                self.recipe = recipe;
                self.start_reading()
            }
            Msg::DocumentReady(doc) => {
                self.parsing = None;
                let width = self.doc_width();
                self.doc = Some(DocView::new(doc, width));
                self.start_reading()
            }
            Msg::TokenOffsets(o) => {
                self.token_offsets = Some(o);
                Vec::new()
            }
            Msg::LoadFailed(m) => {
                self.parsing = None;
                // The model may still be fine: the screen becomes a plain chat with it.
                self.wants_document = false;
                self.rewrap();
                self.error(format!("{m} (you can still chat without it)"));
                Vec::new()
            }
            Msg::Engine(e) => self.engine_event(e),
            Msg::Saved(r) => {
                match r {
                    Ok(p) => self.info(format!("saved the conversation to {}", p.display())),
                    Err(e) => self.error(e),
                }
                Vec::new()
            }
        }
    }

    /// Once both the model and the document are there, hand the document over and read it.
    fn start_reading(&mut self) -> Vec<Effect> {
        let (Some(_), Some(doc)) = (&self.model, &self.doc) else {
            return Vec::new();
        };
        let load = Command::LoadDocument {
            title: doc.title.clone(),
            text: doc.text.clone(),
        };
        let map = Effect::MapTokens {
            text: doc.text.clone(),
        };
        self.reading = true;
        self.read_tokens = 0;
        self.read_with = Some(self.recipe.clone());
        vec![Effect::Engine(load), Effect::Engine(Command::Read), map]
    }

    fn doc_width(&self) -> usize {
        let area = Rect::new(0, 0, self.size.0, self.size.1);
        ui::layout(area, self)
            .doc
            .map_or(40, |r| ui::doc_text_width(r) as usize)
    }

    fn rewrap(&mut self) {
        let width = self.doc_width();
        if let Some(d) = &mut self.doc {
            d.rewrap(width);
        }
    }

    fn engine_event(&mut self, e: Event) -> Vec<Effect> {
        let e = match e {
            Event::Cancelled => Event::Error {
                message: "cancelled".into(),
            },
            e => e,
        };
        if self.comparing() {
            return self.compare_event(e);
        }
        match e {
            Event::Progress {
                done,
                total,
                window,
            } => {
                self.window = window.or(self.window);
                if self.reading {
                    self.doc_tokens = total;
                    self.read_tokens = done;
                    // Without a conversation the read prompt ends where the document ends.
                    if self.turns.is_empty() {
                        self.prefix_tokens = Some(total);
                    }
                }
                let p = self.progress.get_or_insert(Progress {
                    done,
                    total,
                    reading: self.reading,
                    first_at: self.now,
                    first_done: done,
                });
                p.done = done;
                p.total = total;
                if done >= total {
                    self.progress = None;
                    if self.reading {
                        self.reading = false;
                        self.info(format!(
                            "read {} tokens: ask a question (F1 for help)",
                            fmt_int(total)
                        ));
                    }
                }
            }
            Event::Token { text } => {
                self.progress = None;
                if let Some(t) = self.turns.last_mut()
                    && matches!(t.state, TurnState::Waiting | TurnState::Streaming)
                {
                    t.state = TurnState::Streaming;
                    t.answer.push_str(&text);
                }
            }
            Event::Stats(s) => {
                self.window = s.window.or(self.window);
                self.stats = s;
            }
            Event::RecipeApplied { recipe, reread } => {
                if reread {
                    self.start_reread(
                        recipe.clone(),
                        format!("re-reading with {recipe}: the chat is kept (Esc cancels)"),
                    );
                } else {
                    // Commands run in order: any read before this one has ended.
                    self.reading = false;
                    self.info(format!("{recipe} applies at once: no re-read needed"));
                }
            }
            Event::Done(a) => {
                self.answering = false;
                self.progress = None;
                if let Some(t) = self.turns.last_mut() {
                    t.answer = a.text;
                    t.recipe = a.recipe.to_string();
                    t.state = if a.cancelled {
                        TurnState::Cancelled
                    } else {
                        TurnState::Done
                    };
                    t.stats = Some(a.stats.clone());
                }
                self.stats = a.stats;
                if a.cancelled {
                    self.info("answer cancelled; it stays in the conversation");
                }
            }
            // Only sent while comparing (handled above); a late one changes nothing.
            Event::Comparing { .. } | Event::Compared(_) => {}
            Event::DocumentTokens { .. } | Event::Cancelled => {}
            Event::Error { message } => {
                self.progress = None;
                let cancelled = message == "cancelled";
                if self.reading {
                    self.reading = false;
                    if cancelled {
                        self.info("reading cancelled: the next question reads the rest");
                    } else {
                        self.error(message);
                    }
                } else {
                    if self.answering {
                        self.answering = false;
                        if let Some(t) = self.turns.last_mut() {
                            t.state = if cancelled {
                                TurnState::Cancelled
                            } else {
                                TurnState::Failed(message.clone())
                            };
                        }
                    }
                    if cancelled {
                        self.info("cancelled");
                    } else {
                        self.error(message);
                    }
                }
            }
        }
        Vec::new()
    }

    /// Events of a running comparison: its answers stream into the comparison, not the chat.
    fn compare_event(&mut self, e: Event) -> Vec<Effect> {
        let Some(c) = &mut self.comparison else {
            return Vec::new();
        };
        match e {
            Event::Comparing { index, .. } => {
                c.current = index.min(c.names.len().saturating_sub(1));
                c.partial[c.current].clear();
                self.progress = None;
            }
            Event::Token { text } => {
                self.progress = None;
                c.partial[c.current].push_str(&text);
            }
            Event::Compared(answers) => {
                c.results = answers;
                c.state = CompareState::Done;
                self.progress = None;
                self.info("comparison done: Esc closes it; the chat is as it was");
            }
            Event::Error { message } => {
                self.progress = None;
                if message == "cancelled" {
                    c.state = CompareState::Cancelled;
                    self.info("comparison cancelled: Esc closes it; the chat is as it was");
                } else {
                    c.state = CompareState::Failed(message.clone());
                    self.error(message);
                }
            }
            Event::Progress {
                done,
                total,
                window,
            } => {
                self.window = window.or(self.window);
                let now = self.now;
                let p = self
                    .progress
                    .get_or_insert_with(|| Progress::new(done, total, false, now));
                p.done = done;
                p.total = total;
            }
            Event::Stats(s) => {
                self.window = s.window.or(self.window);
                // Stats after tokens are the answer's; those before are its read's.
                if !c.partial[c.current].is_empty() {
                    c.stats[c.current] = Some(s.clone());
                }
                self.stats = s;
            }
            Event::RecipeApplied { .. }
            | Event::Done(_)
            | Event::DocumentTokens { .. }
            | Event::Cancelled => {}
        }
        Vec::new()
    }

    fn act(&mut self, a: Action) -> Vec<Effect> {
        if self.comparison.is_some() && !self.comparing() && !self.show_help {
            // A finished comparison stays up until Esc or F9; other keys work behind it.
            if matches!(a, Action::Cancel | Action::Compare) {
                self.comparison = None;
                self.status = None;
                return Vec::new();
            }
        }
        if self.show_help && a != Action::Quit {
            // Any key closes the help; only its own keys do nothing else.
            self.show_help = false;
            if matches!(a, Action::Help | Action::Cancel) {
                return Vec::new();
            }
        }
        match a {
            Action::Quit => return vec![Effect::Quit],
            Action::Help => self.show_help = true,
            Action::Cancel => return self.cancel(),
            Action::Save => return self.save(),
            Action::Send => return self.send(),
            Action::FocusNext => {
                self.focus = match (self.focus, self.doc.is_some()) {
                    (Focus::Input, true) => Focus::Document,
                    (Focus::Input, false) | (Focus::Document, _) => Focus::Chat,
                    (Focus::Chat, _) => Focus::Input,
                }
            }
            Action::Recipe(knob) => return self.change_recipe(knob),
            Action::ThinkingBlocks => self.show_thinking = !self.show_thinking,
            Action::Compare => return self.compare(None),
            Action::PageUp | Action::PageDown if self.focus == Focus::Input => {
                let page = self.page(Focus::Chat) as isize;
                self.scroll(Focus::Chat, if a == Action::PageUp { -page } else { page });
            }
            Action::Up
            | Action::Down
            | Action::PageUp
            | Action::PageDown
            | Action::Home
            | Action::End
                if self.focus != Focus::Input =>
            {
                let page = self.page(self.focus) as isize;
                match a {
                    Action::Up => self.scroll(self.focus, -1),
                    Action::Down => self.scroll(self.focus, 1),
                    Action::PageUp => self.scroll(self.focus, -page),
                    Action::PageDown => self.scroll(self.focus, page),
                    Action::Home => self.scroll(self.focus, isize::MIN / 2),
                    _ => self.follow(self.focus),
                }
            }
            Action::Char('?') if self.input.is_empty() && self.focus == Focus::Input => {
                self.show_help = true
            }
            _ => {
                self.focus = Focus::Input;
                self.edit(a);
            }
        }
        Vec::new()
    }

    fn edit(&mut self, a: Action) {
        let i = &mut self.input;
        match a {
            Action::Char(c) => i.insert_char(c),
            Action::Newline => i.newline(),
            Action::Backspace => i.backspace(),
            Action::Delete => i.delete(),
            Action::DeleteWord => i.delete_word(),
            Action::ClearInput => i.clear(),
            Action::Left => i.left(),
            Action::Right => i.right(),
            Action::Home => i.home(),
            Action::End => i.end(),
            Action::Up if !i.up() => {
                let current = i.text();
                if let Some(h) = self.history.older(&current) {
                    self.input.set_text(h);
                }
            }
            Action::Down => {
                if !i.down()
                    && let Some(h) = self.history.newer()
                {
                    self.input.set_text(h);
                }
            }
            _ => {}
        }
    }

    fn cancel(&mut self) -> Vec<Effect> {
        if self.busy() {
            self.info("cancelling…");
            return vec![Effect::CancelEngine];
        }
        if self.focus != Focus::Input {
            self.focus = Focus::Input;
        } else {
            self.status = None;
        }
        Vec::new()
    }

    fn send(&mut self) -> Vec<Effect> {
        let question = self.input.text().trim().to_string();
        if question.is_empty() {
            return Vec::new();
        }
        if let Some(rest) = question.strip_prefix(":eval")
            && (rest.is_empty() || rest.starts_with(char::is_whitespace))
        {
            let rest = rest.trim().to_string();
            let fx = self.compare((!rest.is_empty()).then_some(rest));
            if !fx.is_empty() {
                self.history.push(&question);
                self.input.clear();
            }
            return fx;
        }
        if self.model.is_none() {
            self.error("the model is still loading: send again when it is ready");
            return Vec::new();
        }
        if self.answering {
            self.error("an answer is still running: wait, or Esc cancels it");
            return Vec::new();
        }
        if self.wants_document && self.doc.is_none() {
            self.error("the document is still loading: send again when it is shown");
            return Vec::new();
        }
        self.history.push(&question);
        self.input.clear();
        // A plain chat's cache is built by its first question.
        if self.read_with.is_none() {
            self.read_with = Some(self.recipe.clone());
        }
        self.turns.push(Turn {
            question: question.clone(),
            answer: String::new(),
            recipe: self.recipe.to_string(),
            stats: None,
            state: TurnState::Waiting,
        });
        self.answering = true;
        self.chat_scroll = 0;
        self.status = None;
        vec![Effect::Engine(Command::Ask { question })]
    }

    /// Runs `question` (default: the last one asked) under every named preset.
    fn compare(&mut self, question: Option<String>) -> Vec<Effect> {
        let Some(model) = &self.model else {
            self.error("the model is still loading: compare once it is ready");
            return Vec::new();
        };
        if let Some(why) = &model.fixed_attention {
            self.error(why.clone());
            return Vec::new();
        }
        if self.busy() {
            self.error("busy: wait for the reading or answer to finish, or Esc cancels it");
            return Vec::new();
        }
        if self.wants_document && self.doc.is_none() {
            self.error("the document is still loading: compare once it is shown");
            return Vec::new();
        }
        let Some(question) = question.or_else(|| self.turns.last().map(|t| t.question.clone()))
        else {
            self.error("nothing to compare yet: ask a question first, or type :eval QUESTION");
            return Vec::new();
        };
        let recipes: Vec<Recipe> = Preset::ALL
            .into_iter()
            .map(|p| {
                let mut r = Recipe::preset(p, model.defaults);
                r.think = self.recipe.think;
                r
            })
            .collect();
        self.comparison = Some(Comparison {
            question: question.clone(),
            names: Preset::ALL.iter().map(|p| p.to_string()).collect(),
            current: 0,
            partial: vec![String::new(); recipes.len()],
            stats: vec![None; recipes.len()],
            results: Vec::new(),
            state: CompareState::Running,
        });
        self.show_help = false;
        self.info(
            "comparing recipes: the chat and the cache are put back afterwards (Esc cancels)",
        );
        vec![Effect::Engine(Command::Compare { question, recipes })]
    }

    fn save(&mut self) -> Vec<Effect> {
        if self.turns.is_empty() {
            self.error("nothing to save yet: ask a question first");
            return Vec::new();
        }
        vec![Effect::Save {
            markdown: self.transcript(),
        }]
    }

    /// The conversation as Markdown, each answer with its recipe and numbers.
    pub fn transcript(&self) -> String {
        let mut s = String::from("# swaa-chat conversation\n\n");
        if let Some(d) = &self.doc {
            s += &format!("Document: {}\n", d.title);
        }
        if let Some(m) = &self.model {
            s += &format!("Model: {} on {}\n", m.name, m.device);
        }
        for t in &self.turns {
            s += &format!("\n## {}\n\n{}\n", t.question, t.answer.trim());
            let mut note = format!("recipe {}", t.recipe);
            if let Some(st) = &t.stats {
                note += &format!(
                    " · prompt {} tok at {:.0} tok/s · {} tok at {:.1} tok/s · TTFT {:.2} s · KV {}",
                    fmt_int(st.prompt_tokens),
                    st.prefill_tokens_per_s,
                    st.generated_tokens,
                    st.decode_tokens_per_s,
                    st.time_to_first_token_s,
                    fmt_mib(st.cache.bytes_held as u64)
                );
            }
            match &t.state {
                TurnState::Cancelled => note += " · cancelled",
                TurnState::Failed(e) => note += &format!(" · failed: {e}"),
                _ => {}
            }
            s += &format!("\n*{note}*\n");
        }
        s
    }

    /// The cache is being read again with `recipe`: progress starts over.
    fn start_reread(&mut self, recipe: Recipe, message: String) {
        self.reading = true;
        self.read_tokens = 0;
        self.read_with = Some(recipe);
        self.info(message);
    }

    fn change_recipe(&mut self, knob: RecipeKnob) -> Vec<Effect> {
        let Some(model) = &self.model else {
            self.error("the model is still loading: recipes can change once it is ready");
            return Vec::new();
        };
        if let Some(why) = &model.fixed_attention {
            self.error(why.clone());
            return Vec::new();
        }
        let next = knob.apply(&self.recipe, model.defaults, model.ctx);
        if next == self.recipe {
            return Vec::new();
        }
        let reread = self
            .read_with
            .as_ref()
            .is_some_and(|built| next.needs_reread(built));
        let mut effects = Vec::new();
        if reread && self.busy() {
            // The running read or answer is for a cache about to be thrown away.
            effects.push(Effect::CancelEngine);
        }
        if reread {
            self.start_reread(
                next.clone(),
                format!("{next} changes what reading computes: re-reading (Esc cancels)"),
            );
        } else {
            self.info(format!("{next}: applies to the next answer"));
        }
        self.recipe = next.clone();
        effects.push(Effect::Engine(Command::SetRecipe(next)));
        effects
    }

    /// Lines of a page in a pane (its inner height).
    fn page(&self, pane: Focus) -> usize {
        let area = Rect::new(0, 0, self.size.0, self.size.1);
        let p = ui::layout(area, self);
        let r = match pane {
            Focus::Document => p.doc,
            _ => Some(p.chat),
        };
        r.map_or(10, |r| r.height.saturating_sub(2).max(1) as usize)
    }

    fn scroll(&mut self, pane: Focus, by: isize) {
        match pane {
            Focus::Document => {
                let h = self.page(Focus::Document);
                let top = self.doc_top(h) as isize;
                let max = self
                    .doc
                    .as_ref()
                    .map_or(0, |d| d.lines.len().saturating_sub(h))
                    as isize;
                self.doc_scroll = (top + by).clamp(0, max) as usize;
                self.doc_follow = false;
            }
            _ => {
                let area = Rect::new(0, 0, self.size.0, self.size.1);
                let chat = ui::layout(area, self).chat;
                let (w, h) = (chat.width.saturating_sub(2), chat.height.saturating_sub(2));
                let max = ui::chat_lines(self, w as usize)
                    .len()
                    .saturating_sub(h as usize);
                let up = self.chat_scroll as isize - by;
                self.chat_scroll = up.clamp(0, max as isize) as usize;
            }
        }
    }

    fn follow(&mut self, pane: Focus) {
        match pane {
            Focus::Document => self.doc_follow = true,
            _ => self.chat_scroll = 0,
        }
    }

    fn mouse(&mut self, m: MouseEvent) {
        let by = match m.kind {
            MouseEventKind::ScrollUp => -3,
            MouseEventKind::ScrollDown => 3,
            _ => return,
        };
        let area = Rect::new(0, 0, self.size.0, self.size.1);
        let p = ui::layout(area, self);
        let at = Position::new(m.column, m.row);
        if p.doc.is_some_and(|r| r.contains(at)) {
            self.scroll(Focus::Document, by);
        } else if p.chat.contains(at) {
            self.scroll(Focus::Chat, by);
        }
    }

    /// The first document line shown in a pane of `height` lines.
    pub fn doc_top(&self, height: usize) -> usize {
        let Some(d) = &self.doc else { return 0 };
        let max = d.lines.len().saturating_sub(height);
        if !self.doc_follow {
            return self.doc_scroll.min(max);
        }
        match self.window_bytes() {
            Some(w) => d.line_of(w.end).saturating_sub(height * 2 / 3).min(max),
            None => 0,
        }
    }

    /// Byte offset in the document text of token position `t`: exact once the document's
    /// tokens are mapped (the document ends the read prompt, so it starts `offsets.len()`
    /// tokens before that prompt's end), else proportional (token density is close to
    /// uniform over a long text). A truncated document keeps the proportional map.
    pub fn token_to_byte(&self, t: usize) -> usize {
        let Some(d) = &self.doc else { return 0 };
        if let (Some(offsets), Some(prefix)) = (&self.token_offsets, self.prefix_tokens)
            && let Some(start) = prefix.checked_sub(offsets.len())
        {
            let b = match t.checked_sub(start) {
                None => 0,
                Some(i) => offsets.get(i).copied().unwrap_or(d.text.len()),
            };
            return floor_boundary(&d.text, b.min(d.text.len()));
        }
        if self.doc_tokens == 0 {
            return 0;
        }
        let b =
            (t.min(self.doc_tokens) as f64 / self.doc_tokens as f64 * d.text.len() as f64) as usize;
        floor_boundary(&d.text, b.min(d.text.len()))
    }

    pub fn window_bytes(&self) -> Option<Range<usize>> {
        let (a, b) = self.window?;
        Some(self.token_to_byte(a)..self.token_to_byte(b))
    }

    pub fn sink_bytes(&self) -> Range<usize> {
        let sink = match &self.read_with {
            Some(r) if r.window.is_some() => r.sink,
            _ => 0,
        };
        0..self.token_to_byte(sink)
    }

    pub fn read_bytes(&self) -> Range<usize> {
        0..self.token_to_byte(self.read_tokens)
    }
}

/// One recipe control of the recipe panel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecipeKnob {
    Window,
    Sink,
    FaDecode,
    Interleave,
    Think,
    Preset,
}

impl RecipeKnob {
    /// The recipe after one press of this knob's key.
    pub fn apply(self, r: &Recipe, d: RecipeDefaults, ctx: usize) -> Recipe {
        let mut n = r.clone();
        match self {
            RecipeKnob::Window => {
                let sizes = window_sizes(d, ctx);
                n.window = match r.window {
                    None => Some(sizes[0]),
                    Some(w) => sizes.iter().copied().find(|&s| s > w),
                };
            }
            RecipeKnob::Sink => n.sink = if r.sink > 0 { 0 } else { d.sink },
            RecipeKnob::FaDecode => n.fa_decode = !r.fa_decode,
            RecipeKnob::Interleave => {
                n.full_layers = match r.full_layers {
                    LayerSet::None => LayerSet::Every(2),
                    LayerSet::Every(2) => LayerSet::Every(4),
                    _ => LayerSet::None,
                }
            }
            RecipeKnob::Think => n.think = !r.think,
            RecipeKnob::Preset => {
                let at = r
                    .preset_name(d)
                    .and_then(|p| Preset::ALL.iter().position(|&n| n == p));
                let next = at.map_or(0, |i| (i + 1) % Preset::ALL.len());
                n = Recipe::preset(Preset::ALL[next], d);
                n.think = r.think;
            }
        }
        n
    }
}

/// The windows F2 cycles through: ¼×…4× the model's default, below its context.
pub fn window_sizes(d: RecipeDefaults, ctx: usize) -> Vec<usize> {
    let mut v: Vec<usize> = [
        d.window / 4,
        d.window / 2,
        d.window,
        d.window * 2,
        d.window * 4,
    ]
    .into_iter()
    .filter(|&w| w >= 16 && w < ctx.max(17))
    .collect();
    v.dedup();
    if v.is_empty() {
        v.push(d.window.max(1));
    }
    v
}

/// 12,345
pub fn fmt_int(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

pub fn fmt_mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / 1048576.0)
}
