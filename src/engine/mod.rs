//! The engine owns model, tokenizer and cache. [`Session`] does the work synchronously
//! (used by `ask`, `eval` and tests); [`Engine`] runs a backend on its own thread and speaks
//! in [`Command`]s and [`Event`]s, so a UI never blocks on it.
//!
//! `session` reads and answers, `prompt` builds what the model reads, `compare` answers one
//! question under several recipes, `stats` defines the numbers a UI shows. The engine imports
//! nothing above it: other backends (a SWAT model) bring their errors boxed.

pub mod calibrate;
mod compare;
mod prompt;
mod session;
mod stats;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::thread::JoinHandle;

use serde::Serialize;

pub use compare::{RecipeAnswer, compare_recipes};
pub use prompt::ContextPolicy;
pub use session::{Choose, Session, SessionOptions, Snapshot};
pub use stats::{Answer, Focused, Restored, Stats, kv_other_fa_decode, kv_summary, rate};

use crate::document::{Document, Format, Section};
use crate::model::ModelError;
use crate::recipe::Recipe;
use crate::sampling::SamplingParams;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(
        "the prompt needs {needed} tokens (document {doc}, question and answer {rest}) but the model's context is {ctx}: \
         use --context-policy truncate-head or truncate-tail, a shorter document, or a model with a longer context"
    )]
    ContextOverflow {
        needed: usize,
        doc: usize,
        rest: usize,
        ctx: usize,
    },
    #[error(
        "the question and answer alone need {needed} tokens, more than the model's context of {ctx}: ask a shorter question or lower --max-tokens"
    )]
    QuestionTooLong { needed: usize, ctx: usize },
    #[error("cancelled")]
    Cancelled,
    #[error("the document is empty: nothing to read")]
    EmptyDocument,
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// An error of another backend (a SWAT model), as that backend words it.
    #[error(transparent)]
    Backend(Box<dyn std::error::Error + Send + Sync>),
    #[error("{0}")]
    Unsupported(String),
}

impl From<candle_core::Error> for EngineError {
    fn from(e: candle_core::Error) -> Self {
        EngineError::Model(ModelError::Candle(e))
    }
}

pub type Result<T> = std::result::Result<T, EngineError>;

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// Reading the document: `done` of `total` prompt tokens, and where the window is.
    Progress {
        done: usize,
        total: usize,
        window: Option<(usize, usize)>,
    },
    Token {
        text: String,
    },
    Stats(Stats),
    RecipeApplied {
        recipe: Recipe,
        reread: bool,
    },
    Done(Answer),
    /// For prompt token `i` of the read that follows, the byte offset in the document text
    /// where it starts (0 before the document, its length after it).
    DocumentTokens {
        offsets: Vec<usize>,
    },
    /// The command in progress stopped because it was cancelled.
    Cancelled,
    /// A one-line remark for the user: a read restored from the read cache, or a stored read
    /// that could not be used or written (the work goes on without it).
    Note {
        message: String,
    },
    Error {
        message: String,
    },
    /// A recipe comparison starts answering with `recipe`, the `index`th of those asked for.
    Comparing {
        index: usize,
        recipe: Recipe,
    },
    /// One recipe of a comparison answered (or was skipped: its answer is cancelled).
    CompareRow {
        index: usize,
        answer: RecipeAnswer,
    },
    /// A recipe comparison finished: one answer per recipe, in the order asked.
    Compared(Vec<RecipeAnswer>),
    /// The document does not fit: `tokens` of it against `room` left for it in the context
    /// (sent instead of an error when a read overflows, so a UI can offer a part of it).
    TooLong {
        tokens: usize,
        room: usize,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    LoadDocument {
        title: String,
        text: String,
        /// Its pages or chapters (empty: one section), which book mode selects from and cites.
        sections: Vec<Section>,
        format: Format,
    },
    /// Prefill the document now (otherwise the first question does).
    Read,
    Ask {
        question: String,
    },
    SetRecipe(Recipe),
    SetSampling(SamplingParams),
    Reset,
    /// Answer `question` once per recipe from the document as read, then put the session
    /// (recipe, conversation, cache) back as it was.
    Compare {
        question: String,
        recipes: Vec<Recipe>,
    },
    Shutdown,
}

/// What the engine thread drives: a transformer [`Session`], or a trained SWAT model's
/// session; both answer the same commands with the same events.
pub trait Backend: Send {
    /// Replaces the document and forgets the conversation.
    fn load_document(&mut self, title: &str, text: &str);
    /// [`Backend::load_document`] with the document's pages or chapters, which book mode
    /// selects from and cites.
    fn load(&mut self, doc: &Document) {
        self.load_document(&doc.title, &doc.text)
    }
    /// Reads the document into the cache, with progress events.
    fn read(&mut self, emit: &mut dyn FnMut(Event), cancel: &AtomicBool) -> Result<()>;
    /// Answers a question about the document (or a plain chat turn), streaming tokens.
    fn ask(
        &mut self,
        question: &str,
        emit: &mut dyn FnMut(Event),
        cancel: &AtomicBool,
    ) -> Result<Answer>;
    /// Switches recipe; `Ok(true)` when what was read must be read again.
    fn set_recipe(&mut self, recipe: Recipe) -> Result<bool>;
    /// Reads again after a recipe change, keeping the chat.
    fn reread(&mut self, emit: &mut dyn FnMut(Event), cancel: &AtomicBool) -> Result<()>;
    fn set_sampling(&mut self, s: SamplingParams);
    /// Forgets the conversation and the cache (the document stays loaded).
    fn reset(&mut self);
    fn stats(&self) -> Stats;
    /// Answers `question` under each recipe from the same read, leaving the session as it
    /// was (the reader's `:eval`). A cancel with `skip` set ends only the recipe running.
    fn compare(
        &mut self,
        question: &str,
        recipes: &[Recipe],
        emit: &mut dyn FnMut(Event),
        cancel: &AtomicBool,
        skip: &AtomicBool,
    ) -> Result<Vec<RecipeAnswer>> {
        let _ = (question, recipes, emit, cancel, skip);
        Err(EngineError::Unsupported(
            "comparing recipes needs a transformer model: this model's attention is fixed".into(),
        ))
    }
}

impl Backend for Session {
    fn load_document(&mut self, title: &str, text: &str) {
        Session::load_document(self, title, text)
    }
    fn load(&mut self, doc: &Document) {
        Session::load(self, doc)
    }
    fn read(&mut self, emit: &mut dyn FnMut(Event), cancel: &AtomicBool) -> Result<()> {
        Session::read(self, emit, cancel)
    }
    fn ask(
        &mut self,
        question: &str,
        emit: &mut dyn FnMut(Event),
        cancel: &AtomicBool,
    ) -> Result<Answer> {
        Session::ask(self, question, emit, cancel)
    }
    fn set_recipe(&mut self, recipe: Recipe) -> Result<bool> {
        let recipe = self.resolve_recipe(recipe)?;
        Ok(Session::set_recipe(self, recipe))
    }
    fn reread(&mut self, emit: &mut dyn FnMut(Event), cancel: &AtomicBool) -> Result<()> {
        Session::reread(self, emit, cancel)
    }
    fn set_sampling(&mut self, s: SamplingParams) {
        Session::set_sampling(self, s)
    }
    fn reset(&mut self) {
        Session::reset(self)
    }
    fn stats(&self) -> Stats {
        Session::stats(self)
    }
    fn compare(
        &mut self,
        question: &str,
        recipes: &[Recipe],
        emit: &mut dyn FnMut(Event),
        cancel: &AtomicBool,
        skip: &AtomicBool,
    ) -> Result<Vec<RecipeAnswer>> {
        compare_recipes(self, question, recipes, emit, cancel, skip)
    }
}

/// A session on its own thread. Cancel is a flag, not a command: the thread is busy when it
/// matters, and checks the flag between chunks and tokens. A cancel stops every command sent
/// before it, queued ones too (a question queued behind a read would otherwise run under the
/// recipe the user just changed); commands sent after it run.
pub struct Engine {
    tx: Sender<(u64, Command)>,
    rx: Receiver<Event>,
    /// Commands sent so far; each is numbered by this count when it goes.
    sent: AtomicU64,
    /// Every command numbered up to this one is cancelled.
    cancelled_upto: Arc<AtomicU64>,
    cancel: Arc<AtomicBool>,
    /// Set with `cancel`: only the running recipe of a comparison stops.
    skip: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Engine {
    pub fn spawn(mut backend: Box<dyn Backend>) -> Self {
        let (tx, cmd_rx) = channel::<(u64, Command)>();
        let (ev_tx, rx) = channel::<Event>();
        let cancelled_upto = Arc::new(AtomicU64::new(0));
        let cancel = Arc::new(AtomicBool::new(false));
        let skip = Arc::new(AtomicBool::new(false));
        let flags = Flags {
            cancelled_upto: cancelled_upto.clone(),
            cancel: cancel.clone(),
            skip: skip.clone(),
        };
        let thread = std::thread::Builder::new()
            .name("swaa-engine".into())
            .spawn(move || run(backend.as_mut(), cmd_rx, ev_tx, flags))
            .expect("spawn engine thread");
        Engine {
            tx,
            rx,
            sent: AtomicU64::new(0),
            cancelled_upto,
            cancel,
            skip,
            thread: Some(thread),
        }
    }

    /// Sends a command; it runs after those sent before it, unless cancelled.
    pub fn send(&self, cmd: Command) {
        let seq = self.sent.fetch_add(1, Ordering::SeqCst) + 1;
        // A closed channel means the thread ended; its last event said why.
        let _ = self.tx.send((seq, cmd));
    }

    /// Cancels the running command and every one sent before this call: each says
    /// [`Event::Cancelled`] (a recipe change still applies, only its re-read is cancelled).
    pub fn cancel(&self) {
        // The mark before the flag: the thread clears the flag, then reads the mark.
        self.cancelled_upto
            .store(self.sent.load(Ordering::SeqCst), Ordering::SeqCst);
        self.cancel.store(true, Ordering::SeqCst);
    }

    /// Stops the recipe a comparison is answering with and goes on with the next; anything
    /// else running it cancels, and nothing queued.
    pub fn skip(&self) {
        self.skip.store(true, Ordering::SeqCst);
        self.cancel.store(true, Ordering::SeqCst);
    }

    pub fn events(&self) -> &Receiver<Event> {
        &self.rx
    }

    /// Takes the event receiver, e.g. to forward events into an async loop from a thread of
    /// its own; [`Self::events`] is empty afterwards.
    pub fn take_events(&mut self) -> Receiver<Event> {
        std::mem::replace(&mut self.rx, channel().1)
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.cancel();
        let _ = self.tx.send((u64::MAX, Command::Shutdown));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The engine's side of [`Engine::cancel`] and [`Engine::skip`].
struct Flags {
    cancelled_upto: Arc<AtomicU64>,
    cancel: Arc<AtomicBool>,
    skip: Arc<AtomicBool>,
}

fn run(s: &mut dyn Backend, rx: Receiver<(u64, Command)>, tx: Sender<Event>, flags: Flags) {
    let mut emit = |e: Event| {
        let _ = tx.send(e);
    };
    let Flags {
        cancelled_upto,
        cancel,
        skip,
    } = flags;
    while let Ok((seq, cmd)) = rx.recv() {
        skip.store(false, Ordering::SeqCst);
        cancel.store(false, Ordering::SeqCst);
        // A cancel that came before this command was taken, or while the flag was cleared.
        let cancelled = seq <= cancelled_upto.load(Ordering::SeqCst);
        if cancelled {
            cancel.store(true, Ordering::SeqCst);
        }
        let reads = matches!(cmd, Command::Read);
        let result = match cmd {
            Command::Shutdown => break,
            Command::LoadDocument {
                title,
                text,
                sections,
                format,
            } => {
                s.load(&Document {
                    title,
                    format,
                    text,
                    sections,
                });
                Ok(())
            }
            // Work cancelled before it began is not begun: the question is not in the chat.
            Command::Read | Command::Ask { .. } | Command::Compare { .. } if cancelled => {
                Err(EngineError::Cancelled)
            }
            Command::Read => s.read(&mut emit, &cancel),
            Command::Ask { question } => s
                .ask(&question, &mut emit, &cancel)
                .map(|a| emit(Event::Done(a))),
            Command::SetRecipe(r) => s.set_recipe(r.clone()).and_then(|reread| {
                emit(Event::RecipeApplied { recipe: r, reread });
                if reread {
                    s.reread(&mut emit, &cancel)
                } else {
                    Ok(())
                }
            }),
            Command::SetSampling(p) => {
                s.set_sampling(p);
                Ok(())
            }
            Command::Reset => {
                s.reset();
                Ok(())
            }
            Command::Compare { question, recipes } => s
                .compare(&question, &recipes, &mut emit, &cancel, &skip)
                .map(|answers| emit(Event::Compared(answers))),
        };
        match result {
            Ok(()) => {}
            Err(EngineError::Cancelled) => emit(Event::Cancelled),
            Err(EngineError::ContextOverflow { doc, rest, ctx, .. }) if reads => {
                emit(Event::TooLong {
                    tokens: doc,
                    room: ctx.saturating_sub(rest),
                })
            }
            Err(e) => emit(Event::Error {
                message: e.to_string(),
            }),
        }
        emit(Event::Stats(s.stats()));
    }
}
