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
use super::fmt;
use super::keys::{self, Action};
use super::layout::{doc_text_width, inner_height, layout};
use super::msg::{Effect, Msg};
use super::panes::ask::AskPane;
use super::panes::chat::{self, ChatPane};
use super::panes::compare::{CompareState, Comparison};
use super::panes::document::{DocView, DocumentPane, Parsing};
use super::panes::recipe::{RecipeKnob, RecipePane};
use super::panes::stats::StatsPane;
use super::panes::status::{Download, Progress};
use super::theme::Theme;
use super::tokens::DocTokens;
use crate::engine::{Command, Event};
use crate::hub::FetchStage;
use crate::recipe::{Preset, Recipe, RecipeDefaults};

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
    status: Option<(StatusKind, String)>,
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
            status: None,
        }
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

    pub fn model_failed(&self) -> bool {
        matches!(
            self.activity,
            Activity::Loading(Loading {
                model_failed: true,
                ..
            })
        )
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

    pub fn status(&self) -> Option<&(StatusKind, String)> {
        self.status.as_ref()
    }

    fn info(&mut self, s: impl Into<String>) {
        self.status = Some((StatusKind::Info, s.into()));
    }

    fn error(&mut self, s: impl Into<String>) {
        self.status = Some((StatusKind::Error, s.into()));
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
                    l.model_failed = true;
                }
                self.error(m);
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
                    Ok(p) => self.info(format!("saved the conversation to {}", p.display())),
                    Err(e) => self.error(e),
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
        let load = Command::LoadDocument {
            title: doc.title.clone(),
            text: doc.text.clone(),
        };
        self.activity.read();
        self.tokens.read_tokens = 0;
        self.recipe.read_with = Some(self.recipe.recipe.clone());
        vec![Effect::Engine(load), Effect::Engine(Command::Read)]
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
                    self.tokens.doc_tokens = total;
                    self.tokens.read_tokens = done;
                }
                self.progressed(done, total, window, reading);
                if done >= total {
                    self.progress = None;
                    if reading {
                        self.activity.read_ended();
                        self.info(format!(
                            "read {} tokens: ask a question (F1 for help)",
                            fmt::int(total)
                        ));
                    }
                }
            }
            Event::Token { text } => {
                self.progress = None;
                self.chat.token(&text);
            }
            Event::Stats(s) => self.stats.update(s),
            Event::RecipeApplied { recipe, reread } => {
                self.recipe.pending = self.recipe.pending.saturating_sub(1);
                if reread {
                    self.start_reread(
                        recipe.clone(),
                        format!("re-reading with {recipe}: the chat is kept (Esc cancels)"),
                    );
                } else {
                    // Commands run in order: any read before this one has ended.
                    self.activity.read_ended();
                    self.info(format!("{recipe} applies at once: no re-read needed"));
                }
            }
            Event::Done(a) => {
                self.activity.answer_ended();
                self.progress = None;
                self.chat.done(&a);
                self.stats.engine = a.stats;
                if a.cancelled {
                    self.info("answer cancelled; it stays in the conversation");
                }
            }
            // Only sent while comparing (handled above); a late one changes nothing.
            Event::Comparing { .. } | Event::Compared(_) => {}
            Event::DocumentTokens { offsets } => self.tokens.offsets = Some(offsets),
            Event::Note { message } => self.info(message),
            Event::Cancelled => {
                self.progress = None;
                if self.reading() {
                    self.activity.read_ended();
                    self.info("reading cancelled: the next question reads the rest");
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
            Event::Token { text } => {
                self.progress = None;
                run.token(&text);
            }
            Event::Compared(answers) => {
                run.results = answers;
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
            Event::RecipeApplied { .. } | Event::Done(_) => {}
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
                self.focus = match (self.focus, self.doc().is_some()) {
                    (Focus::Input, true) => Focus::Document,
                    (Focus::Input, false) | (Focus::Document, _) => Focus::Chat,
                    (Focus::Chat, _) => Focus::Input,
                }
            }
            Action::Recipe(knob) => return self.change_recipe(knob),
            Action::ThinkingBlocks => self.chat.show_thinking = !self.chat.show_thinking,
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
                self.show_help = true
            }
            _ => {
                self.focus = Focus::Input;
                self.ask.edit(a);
            }
        }
        Vec::new()
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
        let question = self.ask.input.text().trim().to_string();
        if question.is_empty() {
            return Vec::new();
        }
        if let Some(rest) = question.strip_prefix(":eval")
            && (rest.is_empty() || rest.starts_with(char::is_whitespace))
        {
            let rest = rest.trim().to_string();
            let fx = self.compare((!rest.is_empty()).then_some(rest));
            if !fx.is_empty() {
                self.ask.sent(&question);
            }
            return fx;
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
        self.ask.sent(&question);
        // A plain chat's cache is built by its first question.
        if self.recipe.read_with.is_none() {
            self.recipe.read_with = Some(self.recipe.recipe.clone());
        }
        self.chat
            .ask(question.clone(), self.recipe.recipe.to_string());
        self.activity.ask();
        self.status = None;
        vec![Effect::Engine(Command::Ask { question })]
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
        if self.chat.turns.is_empty() {
            return self.refuse("nothing to save yet: ask a question first");
        }
        let title = self.doc().map(|d| d.title.as_str());
        vec![Effect::Save {
            markdown: self.chat.transcript(title, self.model.as_ref()),
        }]
    }

    /// The cache is being read again with `recipe`: progress starts over.
    fn start_reread(&mut self, recipe: Recipe, message: String) {
        self.activity.read();
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
        let discards = self
            .recipe
            .read_with
            .as_ref()
            .is_some_and(|built| next.needs_reread(built));
        let mut effects = Vec::new();
        if discards && self.busy() {
            // The running read or answer is for a cache about to be thrown away.
            effects.push(Effect::CancelEngine);
        }
        self.info(format!("applying {next}…"));
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

    /// Byte offset in the document text of token position `t` (see [`DocTokens::to_byte`]).
    pub fn token_to_byte(&self, t: usize) -> usize {
        self.doc().map_or(0, |d| self.tokens.to_byte(&d.text, t))
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
        0..self.token_to_byte(sink)
    }

    pub fn read_bytes(&self) -> std::ops::Range<usize> {
        0..self.token_to_byte(self.tokens.read_tokens)
    }
}
