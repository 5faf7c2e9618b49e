//! What reaches the reader's state ([`Msg`]: keys, time, loads, engine events) and what the
//! state asks the event loop to do ([`Effect`]). The loop is the only place with I/O.

use std::path::PathBuf;
use std::time::Duration;

use crossterm::event::{KeyEvent, MouseEvent};

use super::app::ModelInfo;
use crate::document::Document;
use crate::engine::{Command, Event};
use crate::hub::FetchProgress;
use crate::recipe::Recipe;

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
    /// Stop only the recipe a comparison is answering with.
    SkipRecipe,
    /// Write the conversation: to `to` when it was saved before (the same conversation, one
    /// file), else to a new `<document>-<YYYYmmdd-HHMM>.md` in the data dir.
    Save {
        markdown: String,
        to: Option<PathBuf>,
    },
    /// Put `text` on the terminal's clipboard (OSC 52).
    Copy(String),
    /// Capture the mouse (wheel scrolling) or leave it to the terminal (text selection).
    Mouse(bool),
    /// Drop the engine and open the model again with these settings changed.
    Reopen(Reopen),
    Quit,
}

/// Launch settings changed from inside the reader (`:model`, `:device`, `:ctx`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reopen {
    pub model: Option<String>,
    pub device: Option<String>,
    pub ctx: Option<usize>,
}
