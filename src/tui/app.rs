//! The reader's state and how it changes: [`App::update`] turns a [`Msg`] into state changes
//! and [`Effect`]s for the event loop to carry out. No I/O, no clock: time arrives in
//! [`Msg::Tick`], so tests (and snapshots) control it.
//!
//! `App` routes: keys to the pane with the focus, engine events to the chat, the stats or
//! the comparison. What the reader waits for is one [`Activity`]; each pane in
//! [`panes`](super::panes) holds its own state.

use std::path::PathBuf;
use std::time::Duration;

use crossterm::event::{MouseEvent, MouseEventKind};
use ratatui::layout::{Position, Rect};

use super::activity::{Activity, Loading, Queued};
use super::commands::{self, Cmd, PartArg};
use super::fmt;
use super::keys::{self, Action};
use super::layout::{doc_text_width, inner_height, layout};
use super::msg::{Effect, Msg, Reopen};
use super::panes::ask::AskPane;
use super::panes::chat::{self, ChatPane, TurnState};
use super::panes::compare::{CompareState, Comparison};
use super::panes::document::{DocView, DocumentPane, Parsing};
use super::panes::part::{Part, Picker};
use super::panes::recipe::{RecipeKnob, RecipePane};
use super::panes::stats::StatsPane;
use super::panes::status::{Download, Progress};
use super::theme::Theme;
use super::tokens::DocTokens;
use crate::document::SectionRange;
use crate::engine::{Command, Event};
use crate::hub::FetchStage;
use crate::recipe::{Preset, Recipe, RecipeDefaults};

/// How long a status message stays before the line shows its hints again.
const STATUS_SECS: u64 = 8;

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
    /// A one-line warning when the context passes what the model was trained for.
    pub context_note: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Focus {
    Input,
    Document,
    Chat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusKind {
    Info,
    Error,
}

pub struct App {
    pub theme: Theme,
    /// Where logs go, for the help overlay.
    pub log_path: Option<PathBuf>,
    pub ask: AskPane,
    pub chat: ChatPane,
    pub stats: StatsPane,
    pub tokens: DocTokens,
    size: (u16, u16),
    now: Duration,
    /// The model name from the command line, shown while it loads.
    model_hint: String,
    model: Option<ModelInfo>,
    activity: Activity,
    /// None: no document was given, or it failed to load (a plain chat).
    document: Option<DocumentPane>,
    recipe: RecipePane,
    /// The progress of the read, prompt or comparison step running, until it ends.
    progress: Option<Progress>,
    /// A finished comparison, shown until Esc or F9.
    compared: Option<Comparison>,
    focus: Focus,
    show_help: bool,
    /// Lines the help is scrolled down.
    help_scroll: usize,
    /// The status message and when it was set (an info message clears after a while).
    status: Option<(StatusKind, String)>,
    status_at: Duration,
    /// A Ctrl-C stopped something that has not ended yet: the next one quits.
    interrupted: bool,
    /// Errors shown so far: a command that refused keeps its text in the box.
    errors: usize,
    /// Comparisons that finished, after how many chat turns: saved with the conversation.
    comparisons: Vec<(usize, Comparison)>,
    /// Where the conversation was saved, and what was written, so a later save (on quit)
    /// updates the same file and an unchanged one is not written again.
    saved_to: Option<PathBuf>,
    saved_markdown: Option<String>,
    /// The part of the document the engine reads (None: all of it).
    part: Option<Part>,
    /// The pages the last answer cites (book mode): where in the document, and what to say.
    citations: Vec<(std::ops::Range<usize>, String)>,
    /// The citation shown in the document pane (Ctrl-G), highlighted.
    cited: Option<usize>,
    /// A part asked for before the document was shown (`--pages`).
    wanted_part: Option<SectionRange>,
    /// Choices for a document longer than the context.
    picker: Option<Picker>,
    /// The last read that did not fit: its tokens and the room the context left.
    overflow: Option<(usize, usize)>,
    /// Whether the mouse is captured (wheel scrolling) or left to the terminal.
    pub mouse: bool,
    /// A question whose prompt a recipe change stopped before its answer began: asked again
    /// (after the re-read) once the engine says it stopped.
    reask: Option<String>,
    /// A part to read once the read running has stopped (`:pages` during a read): started
    /// on its `Cancelled`, or when it ends first. Starting at once let that `Cancelled` end
    /// the new read in the reader's state (no "read" message, its bar a prompt's).
    queued_part: Option<Option<Part>>,
}

impl App {
    pub fn new(model_hint: &str, wants_document: bool, theme: Theme) -> Self {
        App {
            theme,
            log_path: None,
            ask: AskPane::default(),
            chat: ChatPane::default(),
            stats: StatsPane::default(),
            tokens: DocTokens::default(),
            size: (80, 24),
            now: Duration::ZERO,
            model_hint: model_hint.to_string(),
            model: None,
            activity: Activity::Loading(Loading::default()),
            document: wants_document.then(DocumentPane::default),
            recipe: RecipePane::default(),
            progress: None,
            compared: None,
            focus: Focus::Input,
            show_help: false,
            help_scroll: 0,
            status: None,
            status_at: Duration::ZERO,
            interrupted: false,
            errors: 0,
            comparisons: Vec::new(),
            saved_to: None,
            saved_markdown: None,
            part: None,
            citations: Vec::new(),
            cited: None,
            wanted_part: None,
            picker: None,
            overflow: None,
            mouse: false,
            reask: None,
            queued_part: None,
        }
    }

    /// Reads only `range` of the document once it is shown (`--pages`).
    pub fn want_part(&mut self, range: SectionRange) {
        self.wanted_part = Some(range);
    }

    /// The part of the document read, when not all of it.
    pub fn part(&self) -> Option<&Part> {
        self.part.as_ref()
    }

    /// The choices open for a document longer than the context.
    pub fn picker(&self) -> Option<&Picker> {
        self.picker.as_ref()
    }

    pub fn help_scroll(&self) -> usize {
        self.help_scroll
    }

    /// Finished comparisons, with the number of chat turns before each.
    pub fn comparisons(&self) -> &[(usize, Comparison)] {
        &self.comparisons
    }

    pub fn activity(&self) -> &Activity {
        &self.activity
    }

    pub fn reading(&self) -> bool {
        self.activity.reading()
    }

    pub fn answering(&self) -> bool {
        self.activity.answering()
    }

    pub fn comparing(&self) -> bool {
        matches!(self.activity, Activity::Comparing { .. })
    }

    /// Whether a recipe change waits for the engine to say if it re-reads.
    pub fn applying(&self) -> bool {
        self.recipe.pending > 0
    }

    pub fn busy(&self) -> bool {
        self.reading() || self.answering() || self.comparing()
    }

    pub fn size(&self) -> (u16, u16) {
        self.size
    }

    pub fn now(&self) -> Duration {
        self.now
    }

    pub fn model(&self) -> Option<&ModelInfo> {
        self.model.as_ref()
    }

    pub fn model_hint(&self) -> &str {
        &self.model_hint
    }

    /// Why the model failed to load, while no other model is open.
    pub fn model_failed(&self) -> Option<&str> {
        match &self.activity {
            Activity::Loading(Loading {
                failed: Some(e), ..
            }) => Some(e),
            _ => None,
        }
    }

    pub fn download(&self) -> Option<&Download> {
        match &self.activity {
            Activity::Loading(l) => l.download.as_ref(),
            _ => None,
        }
    }

    /// The document pane, when a document was given (and has not failed to load).
    pub fn document(&self) -> Option<&DocumentPane> {
        self.document.as_ref()
    }

    /// The document, once parsed.
    pub fn doc(&self) -> Option<&DocView> {
        self.document.as_ref()?.view()
    }

    pub fn parsing(&self) -> Option<Parsing> {
        self.document.as_ref()?.parsing()
    }

    /// The recipe the next question uses.
    pub fn recipe(&self) -> &Recipe {
        &self.recipe.recipe
    }

    /// The recipe the engine's cache was (or is being) read with.
    pub fn read_with(&self) -> Option<&Recipe> {
        self.recipe.read_with.as_ref()
    }

    pub fn progress(&self) -> Option<&Progress> {
        self.progress.as_ref()
    }

    /// The comparison running, or the finished one still shown.
    pub fn comparison(&self) -> Option<&Comparison> {
        match &self.activity {
            Activity::Comparing { run, .. } => Some(run),
            _ => self.compared.as_ref(),
        }
    }

    pub fn focus(&self) -> Focus {
        self.focus
    }

    pub fn show_help(&self) -> bool {
        self.show_help
    }

    /// The status line's message: an error until something replaces it, an info message
    /// for a few seconds.
    pub fn status(&self) -> Option<&(StatusKind, String)> {
        let s = self.status.as_ref()?;
        let old = self.now.saturating_sub(self.status_at) >= Duration::from_secs(STATUS_SECS);
        (s.0 == StatusKind::Error || !old).then_some(s)
    }

    fn info(&mut self, s: impl Into<String>) {
        self.status = Some((StatusKind::Info, s.into()));
        self.status_at = self.now;
    }

    fn error(&mut self, s: impl Into<String>) {
        self.status = Some((StatusKind::Error, s.into()));
        self.status_at = self.now;
        self.errors += 1;
    }

    /// A key or question that cannot run now: the status line says why, nothing is sent.
    fn refuse(&mut self, why: impl Into<String>) -> Vec<Effect> {
        self.error(why);
        Vec::new()
    }

    pub fn defaults(&self) -> RecipeDefaults {
        self.model
            .as_ref()
            .map_or_else(|| RecipeDefaults::for_context(8192), |m| m.defaults)
    }

    pub fn update(&mut self, msg: Msg) -> Vec<Effect> {
        match msg {
            Msg::Key(k) => match keys::action(k) {
                // A letter in a pane does what its key-map row does (F-keys are often taken).
                Some(Action::Char(c)) if self.focus != Focus::Input && !self.show_help => {
                    match keys::pane_action(c) {
                        Some(a) => self.act(a),
                        None => self.act(Action::Char(c)),
                    }
                }
                Some(a) => self.act(a),
                None => Vec::new(),
            },
            Msg::Paste(s) => {
                self.focus = Focus::Input;
                self.ask.input.insert_str(&s);
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
                self.stats.rss_bytes = rss_bytes.or(self.stats.rss_bytes);
                Vec::new()
            }
            Msg::Fetch(f) => {
                let now = self.now;
                if let Activity::Loading(l) = &mut self.activity {
                    let fresh = || Download {
                        model: f.model.to_string(),
                        stage: f.stage,
                        parts: None,
                        bytes: Progress::new(f.bytes as usize, f.total_bytes as usize, false, now),
                    };
                    // Rate and ETA are per stage: verifying runs far faster than downloading.
                    let d = match &mut l.download {
                        Some(d) if d.stage == f.stage => d,
                        slot => slot.insert(fresh()),
                    };
                    d.parts = f.parts;
                    d.bytes.done = f.bytes as usize;
                    d.bytes.total = f.total_bytes as usize;
                }
                if f.stage == FetchStage::Done {
                    self.info(format!("{} is in the cache: loading it…", f.model));
                }
                Vec::new()
            }
            Msg::ModelFailed(m) => {
                if let Activity::Loading(l) = &mut self.activity {
                    l.download = None;
                    l.failed = Some(m.clone());
                }
                self.error(format!(
                    "{m} (:model NAME or :device cpu opens another; Ctrl-C quits)"
                ));
                Vec::new()
            }
            Msg::Parsing { done, total, unit } => {
                if let Some(d) = &mut self.document {
                    d.parsed(done, total, unit);
                }
                Vec::new()
            }
            Msg::ModelReady(info, recipe) => {
                if let Activity::Loading(l) = &mut self.activity {
                    l.download = None;
                }
                self.info(format!(
                    "{} loaded on {}: {}",
                    info.name,
                    info.device,
                    if self.document.is_some() {
                        "reading the document…"
                    } else {
                        "ask anything"
                    }
                ));
                // Positions past the trained context are worth knowing before anything is read.
                if let Some(note) = &info.context_note {
                    self.error(note.clone());
                }
                self.model = Some(info);
                self.recipe.recipe = recipe;
                let fx = self.start_reading();
                self.settle();
                fx
            }
            Msg::DocumentReady(doc) => {
                let width = self.doc_width();
                if let Some(d) = &mut self.document {
                    d.show(doc, width);
                }
                if let (Some(range), Some(d)) = (self.wanted_part.take(), self.doc()) {
                    match Part::of(d, range) {
                        Ok(p) => self.part = Some(p),
                        Err(e) => {
                            // Nothing is read until a part that exists is chosen.
                            self.settle();
                            self.error(format!("--pages: {e} (:pages A-B reads another part)"));
                            return Vec::new();
                        }
                    }
                }
                self.start_reading()
            }
            Msg::LoadFailed(m) => {
                // The model may still be fine: the screen becomes a plain chat with it.
                self.document = None;
                self.settle();
                self.error(format!("{m} (you can still chat without it)"));
                Vec::new()
            }
            Msg::Engine(e) => self.engine_event(e),
            Msg::Saved(r) => {
                match r {
                    Ok(p) => {
                        self.info(format!("saved the conversation to {}", p.display()));
                        self.saved_to = Some(p);
                    }
                    Err(e) => {
                        // Not written: the next save tries again.
                        self.saved_markdown = None;
                        self.error(e);
                    }
                }
                Vec::new()
            }
        }
    }

    /// Loading ends once the model is there and the document, if one was given, is shown.
    fn settle(&mut self) {
        let shown = self.document.as_ref().is_none_or(|d| d.view().is_some());
        if matches!(self.activity, Activity::Loading(_)) && self.model.is_some() && shown {
            self.activity = Activity::Idle;
        }
    }

    /// Once both the model and the document are there, hand the document over and read it.
    fn start_reading(&mut self) -> Vec<Effect> {
        let (Some(_), Some(doc)) = (&self.model, self.doc()) else {
            return Vec::new();
        };
        let load = match &self.part {
            Some(p) => Command::LoadDocument {
                title: p.title.clone(),
                text: doc.text[p.bytes.clone()].to_string(),
                sections: Vec::new(),
                format: doc.format,
            },
            None => Command::LoadDocument {
                title: doc.title.clone(),
                text: doc.text.clone(),
                sections: doc.sections.clone(),
                format: doc.format,
            },
        };
        self.activity.read();
        self.interrupted = false;
        self.picker = None;
        // A new read maps its own tokens: until they arrive, the old map would mislead.
        self.tokens = DocTokens::default();
        self.stats.window = None;
        self.recipe.read_with = Some(self.recipe.recipe.clone());
        vec![Effect::Engine(load), Effect::Engine(Command::Read)]
    }

    /// The text the engine reads (the part, or the whole document) and where it starts in
    /// the document.
    fn read_text(&self) -> Option<(&str, usize)> {
        let d = self.doc()?;
        Some(match &self.part {
            Some(p) => (&d.text[p.bytes.clone()], p.bytes.start),
            None => (d.text.as_str(), 0),
        })
    }

    fn doc_width(&self) -> usize {
        let area = Rect::new(0, 0, self.size.0, self.size.1);
        layout(area, self)
            .doc
            .map_or(40, |r| doc_text_width(r) as usize)
    }

    fn rewrap(&mut self) {
        let width = self.doc_width();
        if let Some(d) = &mut self.document {
            d.rewrap(width);
        }
    }

    fn engine_event(&mut self, e: Event) -> Vec<Effect> {
        if self.comparing() {
            return self.compare_event(e);
        }
        match e {
            Event::Progress {
                done,
                total,
                window,
            } => {
                let reading = self.reading();
                if reading {
                    if self.tokens.offsets.is_none() {
                        self.tokens.doc_tokens = total;
                    }
                    self.tokens.read_tokens = done.min(self.tokens.doc_tokens);
                }
                self.progressed(done, total, window, reading);
                if total == 0 && reading {
                    // Book mode: nothing is read before a question (its note said so).
                    self.progress = None;
                    self.activity.read_ended();
                    return Vec::new();
                }
                if done >= total {
                    self.progress = None;
                    if reading {
                        self.activity.read_ended();
                        if let Some(part) = self.queued_part.take() {
                            return self.read_queued(part);
                        }
                        let what = self
                            .read_label()
                            .map_or(String::new(), |l| format!(" ({l})"));
                        let next = if self.answering() {
                            "answering the question…"
                        } else {
                            "ask a question (F1 for help)"
                        };
                        self.info(format!("read {} tokens{what}: {next}", fmt::int(total)));
                    }
                }
            }
            Event::Token { text } => {
                self.progress = None;
                self.chat.token(&text);
            }
            Event::Stats(s) => {
                // "read X / Y" is what the cache holds of the document, never more.
                if !self.reading() && self.tokens.doc_tokens > 0 {
                    self.tokens.read_tokens = s.cache.next_pos.min(self.tokens.doc_tokens);
                }
                self.stats.update(s)
            }
            Event::TooLong { tokens, room } => {
                self.progress = None;
                self.activity.read_ended();
                if self.answering() {
                    self.activity.answer_ended();
                    self.chat.stopped(Some(
                        "the document is longer than the context: read a part of it first".into(),
                    ));
                }
                self.tokens.read_tokens = 0;
                self.overflow = Some((tokens, room));
                // Nothing was read: a question waits for a part to be chosen.
                self.recipe.read_with = None;
                if let (Some(d), Some((text, start))) = (self.doc(), self.read_text()) {
                    let tried = start..start + text.len();
                    self.picker = Some(Picker::new(d, tried, tokens, room));
                }
                self.error(format!(
                    "the document is {} tokens and the context leaves {}: pick a part to read, or type :pages A-B",
                    fmt::int(tokens),
                    fmt::int(room)
                ));
            }
            Event::RecipeApplied { recipe, reread } => {
                self.recipe.pending = self.recipe.pending.saturating_sub(1);
                if reread {
                    let then = if self.answering() {
                        ", then the question is answered"
                    } else {
                        ""
                    };
                    self.start_reread(
                        recipe.clone(),
                        format!("re-reading with {recipe}: the chat is kept{then} (Esc cancels)"),
                    );
                } else {
                    // Commands run in order: any read before this one has ended.
                    self.activity.read_ended();
                    self.info(format!("{recipe} applies at once: no re-read needed"));
                }
            }
            Event::Done(a) => {
                // The answer had begun when the recipe changed: it stays, cancelled.
                self.reask = None;
                self.activity.answer_ended();
                self.progress = None;
                self.chat.done(&a);
                let start = self.read_start();
                self.citations = a.focus.as_ref().map_or(Vec::new(), |f| {
                    f.evidence
                        .iter()
                        .map(|e| {
                            let at = start + e.range.start..start + e.range.end;
                            let what = format!(
                                "{} {} ({:.0}% of the answer's attention): “{}”",
                                f.noun,
                                e.page,
                                e.score * 100.0,
                                e.text
                            );
                            (at, what)
                        })
                        .collect()
                });
                self.cited = None;
                if a.cancelled {
                    self.info("answer cancelled; it stays in the conversation");
                } else if let Some(n) = &a.note {
                    self.info(n.clone());
                } else if let Some(f) = &a.focus {
                    self.info(f.summary());
                }
                self.stats.update(a.stats);
            }
            // Only sent while comparing (handled above); a late one changes nothing.
            Event::Comparing { .. } | Event::CompareRow { .. } | Event::Compared(_) => {}
            Event::DocumentTokens { offsets } => self.mapped(offsets),
            Event::Note { message } => self.info(message),
            Event::Cancelled => {
                self.progress = None;
                if matches!(self.activity, Activity::Answering)
                    && let Some(question) = self.reask.take()
                {
                    // Stopped in its prompt, nothing answered: the engine has the new recipe
                    // queued, and the question goes after it (the turn keeps waiting).
                    self.info("the question is asked again with the new recipe");
                    return vec![Effect::Engine(Command::Ask { question })];
                }
                if self.reading() {
                    self.activity.read_ended();
                    if let Some(part) = self.queued_part.take() {
                        return self.read_queued(part);
                    }
                    if self.reask.is_some() {
                        // The question's own Cancelled follows; the recipe's re-read then reads.
                        return Vec::new();
                    }
                    self.info(if self.interrupted {
                        "reading stopped: the next question reads the rest · Ctrl-C again quits"
                    } else {
                        "reading cancelled: the next question reads the rest"
                    });
                } else {
                    if self.answering() {
                        self.activity.answer_ended();
                        self.chat.stopped(None);
                    }
                    self.info("cancelled");
                }
            }
            Event::Error { message } => {
                self.progress = None;
                self.reask = None;
                if self.reading() {
                    self.activity.read_ended();
                } else if self.answering() {
                    self.activity.answer_ended();
                    self.chat.stopped(Some(message.clone()));
                }
                self.error(message);
            }
        }
        Vec::new()
    }

    /// The engine's token map of the read that follows: where the document ends in tokens
    /// (tokens after it are the question and the chat).
    fn mapped(&mut self, offsets: Vec<usize>) {
        let len = self.read_text().map_or(0, |(t, _)| t.len());
        self.tokens.doc_tokens = offsets
            .iter()
            .position(|&o| o >= len)
            .unwrap_or(offsets.len());
        self.tokens.offsets = Some(offsets);
    }

    /// A progress report: the window moves, the bar's numbers change (its rate counts from
    /// the first report of the step).
    fn progressed(
        &mut self,
        done: usize,
        total: usize,
        window: Option<(usize, usize)>,
        reading: bool,
    ) {
        self.stats.window_at(window);
        let now = self.now;
        let p = self
            .progress
            .get_or_insert_with(|| Progress::new(done, total, reading, now));
        p.done = done;
        p.total = total;
    }

    /// Events of a running comparison: its answers stream into the comparison, not the chat.
    fn compare_event(&mut self, e: Event) -> Vec<Effect> {
        let Activity::Comparing { run, .. } = &mut self.activity else {
            return Vec::new();
        };
        match e {
            Event::Comparing { index, .. } => {
                run.starts(index);
                self.progress = None;
            }
            Event::CompareRow { index, answer } => run.finished(index, answer),
            Event::Token { text } => {
                self.progress = None;
                run.token(&text);
            }
            Event::Compared(answers) => {
                for (i, a) in answers.into_iter().enumerate() {
                    run.finished(i, a);
                }
                run.state = CompareState::Done;
                self.progress = None;
                self.end_comparison();
                self.info("comparison done: Esc closes it; the chat is as it was");
            }
            Event::Cancelled => {
                self.progress = None;
                run.state = CompareState::Cancelled;
                self.end_comparison();
                self.info("comparison cancelled: Esc closes it; the chat is as it was");
            }
            Event::Error { message } => {
                self.progress = None;
                run.state = CompareState::Failed(message.clone());
                self.end_comparison();
                self.error(message);
            }
            Event::Progress {
                done,
                total,
                window,
            } => self.progressed(done, total, window, false),
            Event::Stats(s) => {
                run.record(&s);
                self.stats.update(s);
            }
            // The comparison's reads are of the same document: the same token map.
            Event::DocumentTokens { offsets } => self.tokens.offsets = Some(offsets),
            Event::Note { message } => self.info(message),
            Event::RecipeApplied { .. } | Event::Done(_) | Event::TooLong { .. } => {}
        }
        Vec::new()
    }

    /// The comparison stays on screen; what was asked for meanwhile is what runs now.
    fn end_comparison(&mut self) {
        let next = match self.activity {
            Activity::Comparing { after, .. } if after.reread => Activity::Reading {
                then_answer: after.answer,
            },
            Activity::Comparing { after, .. } if after.answer => Activity::Answering,
            Activity::Comparing { .. } => Activity::Idle,
            _ => return,
        };
        if let Activity::Comparing { run, .. } = std::mem::replace(&mut self.activity, next) {
            if run.rows.iter().any(Option::is_some) {
                self.comparisons.push((self.chat.turns.len(), run.clone()));
            }
            self.compared = Some(run);
        }
    }

    fn act(&mut self, a: Action) -> Vec<Effect> {
        if self.compared.is_some() && !self.show_help {
            // A finished comparison stays up until Esc or F9; other keys work behind it.
            if matches!(a, Action::Cancel | Action::Compare) {
                self.compared = None;
                self.status = None;
                return Vec::new();
            }
        }
        if self.show_help && a != Action::Interrupt {
            // The help scrolls; any other key closes it, and only its own keys do nothing else.
            match a {
                Action::Up => self.help_scroll = self.help_scroll.saturating_sub(1),
                Action::Down => self.help_scroll += 1,
                Action::PageUp => self.help_scroll = self.help_scroll.saturating_sub(10),
                Action::PageDown => self.help_scroll += 10,
                Action::Home => self.help_scroll = 0,
                _ => {
                    self.show_help = false;
                    if !matches!(a, Action::Help | Action::Cancel) {
                        return self.act(a);
                    }
                }
            }
            return Vec::new();
        }
        if let Some(p) = &mut self.picker {
            match a {
                Action::Up => {
                    return {
                        p.up();
                        Vec::new()
                    };
                }
                Action::Down => {
                    return {
                        p.down();
                        Vec::new()
                    };
                }
                Action::Send if self.ask.input.is_empty() => {
                    let range = p.chosen().map(|c| c.range);
                    return match range {
                        Some(r) => self.read_part(PartArg::Range(r)),
                        None => Vec::new(),
                    };
                }
                Action::Cancel => {
                    self.picker = None;
                    self.info("the document is not read: :pages A-B (or :pages for the choices) reads a part");
                    return Vec::new();
                }
                _ => {}
            }
        }
        match a {
            Action::Interrupt => return self.interrupt(),
            Action::Help => self.open_help(),
            Action::Cancel => return self.cancel(),
            Action::Save => return self.save(),
            Action::Copy => return self.copy(),
            Action::Cite => return self.cite(),
            Action::Send => return self.send(),
            Action::FocusNext => {
                self.focus = match (self.focus, self.doc().is_some()) {
                    (Focus::Input, true) => Focus::Document,
                    (Focus::Input, false) | (Focus::Document, _) => Focus::Chat,
                    (Focus::Chat, _) => Focus::Input,
                }
            }
            Action::Recipe(knob) => return self.change_recipe(knob),
            Action::ThinkingBlocks => self.thinking_blocks(),
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
            Action::Char('?') if self.ask.input.is_empty() && self.focus == Focus::Input => {
                self.open_help()
            }
            _ => {
                self.focus = Focus::Input;
                self.ask.edit(a);
            }
        }
        Vec::new()
    }

    fn open_help(&mut self) {
        self.show_help = true;
        self.help_scroll = 0;
    }

    fn thinking_blocks(&mut self) {
        self.chat.show_thinking = !self.chat.show_thinking;
        let blocks = self
            .chat
            .turns
            .iter()
            .filter(|t| t.answer.contains("<think>"))
            .count();
        let shown = if self.chat.show_thinking {
            "shown"
        } else {
            "folded"
        };
        self.info(match blocks {
            0 => format!("thinking blocks {shown} (none in this chat yet; F6 turns thinking on)"),
            n => format!("thinking blocks {shown} ({n} in this chat)"),
        });
    }

    /// Ctrl-C as in shells and llama-cli: the first stops what runs, a second (or one when
    /// nothing runs) quits.
    fn interrupt(&mut self) -> Vec<Effect> {
        self.reask = None;
        self.queued_part = None;
        if self.busy() && !self.interrupted {
            self.interrupted = true;
            self.info("stopping… Ctrl-C again quits");
            return vec![Effect::CancelEngine];
        }
        self.quit()
    }

    /// Quits, saving the conversation first when it has anything not saved yet.
    fn quit(&mut self) -> Vec<Effect> {
        let mut fx = Vec::new();
        if let Some(markdown) = self.transcript()
            && self.saved_markdown.as_ref() != Some(&markdown)
        {
            fx.push(Effect::Save {
                markdown,
                to: self.saved_to.clone(),
            });
        }
        fx.push(Effect::Quit);
        fx
    }

    /// The conversation and the comparisons as Markdown; None when there is nothing yet.
    pub fn transcript(&self) -> Option<String> {
        if self.chat.turns.is_empty() && self.comparisons.is_empty() {
            return None;
        }
        let title = match (self.doc(), &self.part) {
            (_, Some(p)) => Some(p.title.clone()),
            (Some(d), None) => Some(d.title.clone()),
            _ => None,
        };
        Some(self.chat.transcript(
            title.as_deref(),
            self.read_label().as_deref(),
            self.model.as_ref(),
            &self.comparisons,
        ))
    }

    /// Scrolls the document pane to the next page the last answer cites and highlights the
    /// sentence it attended to most there.
    fn cite(&mut self) -> Vec<Effect> {
        if self.citations.is_empty() {
            return self.refuse(
                "no citations yet: an answer from a book longer than the effective context cites its pages",
            );
        }
        let i = self.cited.map_or(0, |i| (i + 1) % self.citations.len());
        self.cited = Some(i);
        let (range, what) = self.citations[i].clone();
        if let Some(d) = &mut self.document
            && let Some(line) = d.view().map(|v| v.line_of(range.start))
        {
            d.scroll = line.saturating_sub(2);
            d.follow = false;
        }
        let more = if self.citations.len() > 1 {
            " (Ctrl-G: the next)"
        } else {
            ""
        };
        self.info(format!("{what}{more}"));
        Vec::new()
    }

    /// The bytes of the citation shown (Ctrl-G), to highlight.
    pub fn cited_bytes(&self) -> Option<std::ops::Range<usize>> {
        self.cited
            .and_then(|i| self.citations.get(i))
            .map(|c| c.0.clone())
    }

    fn copy(&mut self) -> Vec<Effect> {
        let Some(text) = self
            .chat
            .turns
            .iter()
            .rev()
            .map(|t| chat::answer_only(&t.answer))
            .find(|a| !a.is_empty())
        else {
            return self.refuse("nothing to copy yet: ask a question first");
        };
        self.info(format!(
            "copied the last answer ({} characters) to the clipboard (OSC 52: the terminal must allow it)",
            fmt::int(text.chars().count())
        ));
        vec![Effect::Copy(text)]
    }

    fn cancel(&mut self) -> Vec<Effect> {
        if let Activity::Comparing { run, .. } = &self.activity {
            let name = run.names[run.current].clone();
            self.info(format!("skipping {name}… (Ctrl-C stops the comparison)"));
            return vec![Effect::SkipRecipe];
        }
        if self.busy() {
            self.reask = None;
            self.queued_part = None;
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
        let question = self.ask.input.text().trim().to_string();
        if question.is_empty() {
            return Vec::new();
        }
        if question.starts_with(':') {
            // A command that fails stays in the box to be corrected.
            return match commands::parse(&question) {
                Ok(cmd) => {
                    let errors = self.errors;
                    let fx = self.command(cmd);
                    if self.errors == errors {
                        self.ask.sent(&question);
                    }
                    fx
                }
                Err(e) => self.refuse(e),
            };
        }
        if let Some(e) = self.model_failed() {
            let e = format!("the model failed to load, so nothing can answer: {e}");
            return self.refuse(e);
        }
        if self.model.is_none() {
            return self.refuse("the model is still loading: send again when it is ready");
        }
        if self.answering() {
            return self.refuse("an answer is still running: wait, or Esc cancels it");
        }
        if self.document.is_some() && self.doc().is_none() {
            return self.refuse("the document is still loading: send again when it is shown");
        }
        if self.document.is_some() && self.recipe.read_with.is_none() {
            return self.refuse(
                "no part of the document is read yet: pick one, or type :pages A-B (:pages all for all of it)",
            );
        }
        self.ask.sent(&question);
        // A plain chat's cache is built by its first question.
        if self.recipe.read_with.is_none() {
            self.recipe.read_with = Some(self.recipe.recipe.clone());
        }
        self.chat
            .ask(question.clone(), self.recipe.recipe.to_string());
        self.activity.ask();
        self.interrupted = false;
        self.status = None;
        vec![Effect::Engine(Command::Ask { question })]
    }

    /// A `:` command from the question box.
    fn command(&mut self, cmd: Cmd) -> Vec<Effect> {
        match cmd {
            Cmd::Window(w) => self.set_recipe(|r| r.window = w),
            Cmd::Sink(k) => self.set_recipe(|r| r.sink = k),
            Cmd::FaDecode(on) => self.set_recipe(|r| r.set_fa_decode(on)),
            Cmd::FullLayers(l) => self.set_recipe(|r| r.full_layers = l),
            Cmd::Think(on) => self.set_recipe(|r| r.think = on),
            Cmd::Preset(p) => {
                let d = self.defaults();
                self.set_recipe(|r| {
                    *r = Recipe {
                        think: r.think,
                        ..Recipe::preset(p, d)
                    }
                })
            }
            Cmd::Blocks => {
                self.thinking_blocks();
                Vec::new()
            }
            Cmd::Eval(q) => self.compare(q),
            Cmd::Save => self.save(),
            Cmd::Copy => self.copy(),
            Cmd::Cite => self.cite(),
            Cmd::Quit => self.quit(),
            Cmd::Help => {
                self.open_help();
                Vec::new()
            }
            Cmd::Mouse(on) => {
                self.mouse = on.unwrap_or(!self.mouse);
                self.info(if self.mouse {
                    "mouse captured: the wheel scrolls the pane under it (:mouse off selects text)"
                } else {
                    "mouse released: the terminal selects text (:mouse on scrolls with the wheel)"
                });
                vec![Effect::Mouse(self.mouse)]
            }
            Cmd::Pages(arg) => self.read_part(arg),
            Cmd::Model(m) => self.reopen(Reopen {
                model: Some(m),
                ..Reopen::default()
            }),
            Cmd::Device(d) => self.reopen(Reopen {
                device: Some(d),
                ..Reopen::default()
            }),
            Cmd::Ctx(n) => self.reopen(Reopen {
                ctx: Some(n),
                ..Reopen::default()
            }),
        }
    }

    /// A recipe typed as a command: checked against the model, then applied as a key would.
    fn set_recipe(&mut self, change: impl FnOnce(&mut Recipe)) -> Vec<Effect> {
        let Some((_, ctx)) = self.adjustable_model("recipes can change once it is ready") else {
            return Vec::new();
        };
        let mut next = self.recipe.recipe.clone();
        change(&mut next);
        let layers = self.model.as_ref().map_or(0, |m| m.layers);
        if let Err(e) = next.check(layers, ctx) {
            return self.refuse(e);
        }
        if next == self.recipe.recipe {
            self.info(format!("the recipe is {next} already"));
            return Vec::new();
        }
        self.apply_recipe(next)
    }

    /// Reads `arg`'s part of the document instead of what was read; the conversation starts
    /// over (the model reads another text).
    fn read_part(&mut self, arg: PartArg) -> Vec<Effect> {
        let Some(d) = self.doc() else {
            return self.refuse("no document is shown: :pages needs one");
        };
        let picked = match arg {
            PartArg::All => None,
            PartArg::Range(r) => Some(r),
            PartArg::Choices | PartArg::Head | PartArg::Tail => {
                let Some(p) = self.picker.clone().or_else(|| self.estimate_picker(d)) else {
                    return self.refuse(
                        "the document fits or has not been read yet: :pages A-B reads a range",
                    );
                };
                // The picker lists the beginning first and the end second.
                let at = match arg {
                    PartArg::Head => 0,
                    PartArg::Tail => 1,
                    _ => {
                        self.picker = Some(p);
                        return Vec::new();
                    }
                };
                match p.choices.get(at) {
                    Some(c) => Some(c.range),
                    None => return self.refuse("the document has no sections to choose from"),
                }
            }
        };
        let part = match picked.map(|r| Part::of(d, r)).transpose() {
            Ok(p) => p,
            Err(e) => return self.refuse(e),
        };
        if self.answering() || self.comparing() {
            return self.refuse("busy: wait for the answer to finish, or Esc cancels it");
        }
        if self.reading() {
            self.queued_part = Some(part);
            self.info("stopping the read running first…");
            return vec![Effect::CancelEngine];
        }
        self.read_queued(part)
    }

    /// Reads `part` (None: the whole document) for a new conversation.
    fn read_queued(&mut self, part: Option<Part>) -> Vec<Effect> {
        let what = part
            .as_ref()
            .map_or("the whole document".to_string(), |p| p.label.clone());
        self.part = part;
        let fx = self.start_reading();
        if !fx.is_empty() {
            self.info(format!(
                "reading {what}: the model starts a new conversation"
            ));
        }
        fx
    }

    /// Choices from the last read's size, when it overflowed before (the picker was closed).
    fn estimate_picker(&self, d: &DocView) -> Option<Picker> {
        let (tokens, room) = self.overflow?;
        let (text, start) = self.read_text()?;
        Some(Picker::new(d, start..start + text.len(), tokens, room))
    }

    /// Drops the engine and opens the model again with launch settings changed.
    fn reopen(&mut self, r: Reopen) -> Vec<Effect> {
        if self.busy() {
            return self.refuse("busy: wait, or Esc cancels, then reopen");
        }
        let what = [
            r.model.as_ref().map(|m| format!("model {m}")),
            r.device.as_ref().map(|d| format!("device {d}")),
            r.ctx.map(|c| format!("context {}", fmt::int(c))),
        ]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(", ");
        if let Some(m) = &r.model {
            self.model_hint = m.clone();
        }
        self.model = None;
        self.activity = Activity::Loading(Loading::default());
        self.recipe.read_with = None;
        self.tokens = DocTokens::default();
        self.stats = StatsPane {
            rss_bytes: self.stats.rss_bytes,
            ..StatsPane::default()
        };
        self.info(format!(
            "reopening with {what}: the document is read again, the model starts a new conversation"
        ));
        vec![Effect::Reopen(r)]
    }

    /// The model's defaults and context when its recipe may change; else the status line
    /// says why not (`wait`: what to do while it loads).
    fn adjustable_model(&mut self, wait: &str) -> Option<(RecipeDefaults, usize)> {
        let Some(model) = &self.model else {
            self.error(format!("the model is still loading: {wait}"));
            return None;
        };
        if let Some(why) = model.fixed_attention.clone() {
            self.error(why);
            return None;
        }
        Some((model.defaults, model.ctx))
    }

    /// Runs `question` (default: the last one asked) under every named preset.
    fn compare(&mut self, question: Option<String>) -> Vec<Effect> {
        let Some((defaults, _)) = self.adjustable_model("compare once it is ready") else {
            return Vec::new();
        };
        if self.busy() {
            return self
                .refuse("busy: wait for the reading or answer to finish, or Esc cancels it");
        }
        if self.document.is_some() && self.doc().is_none() {
            return self.refuse("the document is still loading: compare once it is shown");
        }
        let Some(question) =
            question.or_else(|| self.chat.turns.last().map(|t| t.question.clone()))
        else {
            return self
                .refuse("nothing to compare yet: ask a question first, or type :eval QUESTION");
        };
        let recipes: Vec<Recipe> = Preset::ALL
            .into_iter()
            .map(|n| {
                let mut r = Recipe::preset(n, defaults);
                r.think = self.recipe.recipe.think;
                r
            })
            .collect();
        let names = Preset::ALL.iter().map(|n| n.to_string()).collect();
        self.compared = None;
        self.interrupted = false;
        self.activity = Activity::Comparing {
            run: Comparison::new(question.clone(), names),
            after: Queued::default(),
        };
        self.show_help = false;
        self.info(
            "comparing recipes: the chat and the cache are put back afterwards (Esc cancels)",
        );
        vec![Effect::Engine(Command::Compare { question, recipes })]
    }

    fn save(&mut self) -> Vec<Effect> {
        let Some(markdown) = self.transcript() else {
            return self.refuse("nothing to save yet: ask a question first");
        };
        self.saved_markdown = Some(markdown.clone());
        vec![Effect::Save {
            markdown,
            to: self.saved_to.clone(),
        }]
    }

    /// The cache is being read again with `recipe`: progress starts over.
    fn start_reread(&mut self, recipe: Recipe, message: String) {
        self.activity.read();
        self.interrupted = false;
        self.tokens.read_tokens = 0;
        self.recipe.read_with = Some(recipe);
        self.info(message);
    }

    /// One recipe key. The engine decides whether the change needs a re-read and says so
    /// (`Event::RecipeApplied { reread }`); the reader shows that. It only looks ahead to stop
    /// a running read or answer whose cache the change would throw away.
    fn change_recipe(&mut self, knob: RecipeKnob) -> Vec<Effect> {
        let Some((defaults, ctx)) = self.adjustable_model("recipes can change once it is ready")
        else {
            return Vec::new();
        };
        let next = knob.apply(&self.recipe.recipe, defaults, ctx);
        if next == self.recipe.recipe {
            return Vec::new();
        }
        self.apply_recipe(next)
    }

    /// Sends `next` to the engine, first stopping a read or answer it would discard.
    fn apply_recipe(&mut self, next: Recipe) -> Vec<Effect> {
        let discards = self
            .recipe
            .read_with
            .as_ref()
            .is_some_and(|built| next.needs_reread(built));
        let mut effects = Vec::new();
        if discards && self.busy() {
            // The running read or answer is for a cache about to be thrown away.
            effects.push(Effect::CancelEngine);
            // A question still in its prompt is not the user's to lose: it is asked again.
            // One queued behind the read is cancelled with it (the engine cancels everything
            // sent before the cancel), and asked again too.
            if let (Activity::Answering | Activity::Reading { then_answer: true }, Some(t)) =
                (&self.activity, self.chat.turns.last())
                && t.state == TurnState::Waiting
            {
                self.reask = Some(t.question.clone());
            }
        }
        self.info(if self.reask.is_some() {
            format!("applying {next}: the question is asked again with it…")
        } else {
            format!("applying {next}…")
        });
        self.recipe.recipe = next.clone();
        self.recipe.pending += 1;
        effects.push(Effect::Engine(Command::SetRecipe(next)));
        effects
    }

    /// Lines of a page in a pane (its inner height).
    fn page(&self, pane: Focus) -> usize {
        let area = Rect::new(0, 0, self.size.0, self.size.1);
        let p = layout(area, self);
        let r = match pane {
            Focus::Document => p.doc,
            _ => Some(p.chat),
        };
        r.map_or(10, inner_height)
    }

    fn scroll(&mut self, pane: Focus, by: isize) {
        match pane {
            Focus::Document => {
                let h = self.page(Focus::Document);
                let top = self.doc_top(h);
                if let Some(d) = &mut self.document {
                    d.scroll_by(top, by, h);
                }
            }
            _ => {
                let area = Rect::new(0, 0, self.size.0, self.size.1);
                let chat = layout(area, self).chat;
                let (w, h) = (chat.width.saturating_sub(2), chat.height.saturating_sub(2));
                let max = chat::lines(self, w as usize)
                    .len()
                    .saturating_sub(h as usize);
                self.chat.scroll_by(by, max);
            }
        }
    }

    fn follow(&mut self, pane: Focus) {
        match pane {
            Focus::Document => {
                if let Some(d) = &mut self.document {
                    d.follow = true;
                }
            }
            _ => self.chat.scroll = 0,
        }
    }

    fn mouse(&mut self, m: MouseEvent) {
        let by = match m.kind {
            MouseEventKind::ScrollUp => -3,
            MouseEventKind::ScrollDown => 3,
            _ => return,
        };
        let area = Rect::new(0, 0, self.size.0, self.size.1);
        let p = layout(area, self);
        let at = Position::new(m.column, m.row);
        if p.doc.is_some_and(|r| r.contains(at)) {
            self.scroll(Focus::Document, by);
        } else if p.chat.contains(at) {
            self.scroll(Focus::Chat, by);
        }
    }

    /// The first document line shown in a pane of `height` lines.
    pub fn doc_top(&self, height: usize) -> usize {
        self.document
            .as_ref()
            .map_or(0, |d| d.top(height, self.window_bytes()))
    }

    /// Byte offset in the document text of token position `t` (see [`DocTokens::to_byte`]):
    /// within the part read, when only a part is.
    pub fn token_to_byte(&self, t: usize) -> usize {
        self.read_text()
            .map_or(0, |(text, start)| start + self.tokens.to_byte(text, t))
    }

    /// Where the text read starts in the document.
    fn read_start(&self) -> usize {
        self.read_text().map_or(0, |(_, s)| s)
    }

    pub fn window_bytes(&self) -> Option<std::ops::Range<usize>> {
        let (a, b) = self.stats.window?;
        Some(self.token_to_byte(a)..self.token_to_byte(b))
    }

    pub fn sink_bytes(&self) -> std::ops::Range<usize> {
        let sink = match &self.recipe.read_with {
            Some(r) if r.window.is_some() => r.sink,
            _ => 0,
        };
        let start = self.read_start();
        start..self.token_to_byte(sink).max(start)
    }

    /// The bytes of the document the cache holds: only these are drawn as read.
    pub fn read_bytes(&self) -> std::ops::Range<usize> {
        // The first token read: the text's start, or later when a read kept only its end.
        let start = self.token_to_byte(0).max(self.read_start());
        start..self.token_to_byte(self.tokens.read_tokens).max(start)
    }

    /// "pages 1–42 of 311": which sections the cache holds, from the bytes read (a part, a
    /// read cut short by the context or cancelled); None before anything is read or when a
    /// document has one section.
    pub fn read_label(&self) -> Option<String> {
        let d = self.doc()?;
        let read = self.read_bytes();
        if read.is_empty() || d.sections.len() < 2 {
            return None;
        }
        let first = d.section_at(read.start)?.number;
        let last = d.section_at(read.end - 1)?.number;
        let n = d.sections.len();
        let unit = d.unit();
        Some(
            if first == d.sections[0].number && last == d.sections[n - 1].number {
                format!("all {n} {unit}s")
            } else if first == last {
                format!("{unit} {first} of {n}")
            } else {
                format!("{unit}s {first}–{last} of {n}")
            },
        )
    }
}
