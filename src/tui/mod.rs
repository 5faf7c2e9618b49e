//! The terminal reader, `swaa-chat [FILE]` on a terminal. [`app`] holds the state and routes
//! each [`msg::Msg`] to the [`panes`] (each with its state, update and drawing), [`layout`]
//! places them, [`keys`] maps keys; this module owns the terminal and the event loop:
//! crossterm events, engine events (bridged from the engine's thread), loads on blocking
//! workers, and a frame clock. Nothing in the loop blocks.

pub mod activity;
pub mod app;
pub mod commands;
pub mod fmt;
pub mod input;
pub mod keys;
pub mod layout;
pub mod markdown;
pub mod msg;
pub mod panes;
pub mod theme;
pub mod tokens;

use std::io::{Stdout, Write, stdout};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use crossterm::event::{
    DisableBracketedPaste, DisableMouseCapture, EnableBracketedPaste, EnableMouseCapture,
    Event as TermEvent, EventStream, KeyboardEnhancementFlags, PopKeyboardEnhancementFlags,
    PushKeyboardEnhancementFlags,
};
use crossterm::execute;
use crossterm::terminal::{
    EnterAlternateScreen, LeaveAlternateScreen, disable_raw_mode, enable_raw_mode,
};
use futures_util::StreamExt;
use ratatui::Terminal;
use ratatui::backend::CrosstermBackend;
use tokio::sync::{mpsc, oneshot};

use self::app::{App, ModelInfo};
use self::msg::{Effect, Msg, Reopen};
use self::theme::Theme;
use crate::config::{self, Config};
use crate::document::SectionRange;
use crate::engine::Engine;
use crate::hub::{FetchOptions, ProgressFn};
use crate::recipe::Recipe;

/// Runs the reader until the user quits. The screen opens at once; a preset that is not
/// cached yet downloads in its progress bar while the document is parsed. `pages`: read only
/// that part of the document.
pub fn run(cfg: &Config, file: Option<&Path>, pages: Option<SectionRange>) -> Result<()> {
    let theme = Theme::from_config(&cfg.tui).map_err(anyhow::Error::msg)?;
    if let Some(f) = file {
        // A wrong path is a one-line error on the plain terminal, not a screen.
        std::fs::metadata(f)
            .with_context(|| format!("cannot read {}: give the path of a document", f.display()))?;
    }
    // A model name that is neither a preset nor a path is a one-line error here too.
    if !crate::swat::is_checkpoint(Path::new(&cfg.model)) {
        crate::hub::resolve(&cfg.model)?;
    }
    let mut app = App::new(&cfg.model, file.is_some(), theme);
    app.log_path = config::data_dir().ok().map(|d| d.join("swaa-chat.log"));
    app.mouse = cfg.tui.mouse;
    if let Some(r) = pages {
        app.want_part(r);
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()?;
    let mut screen = Screen::enter(cfg.tui.mouse).inspect_err(|_| restore(cfg.tui.mouse))?;
    let result = rt.block_on(event_loop(
        &mut screen,
        app,
        cfg.clone(),
        file.map(Path::to_path_buf),
    ));
    drop(screen);
    // A model still loading on a blocking worker is abandoned, not waited for.
    rt.shutdown_background();
    let (engine, farewell) = result?;
    // Where the conversation went, on the terminal the user returns to.
    if let Some(f) = farewell {
        eprintln!("{f}");
    }
    // The engine stops after the screen is back: it may finish a chunk first.
    drop(engine);
    Ok(())
}

/// The terminal in raw mode on the alternate screen; restored on drop and on panic.
struct Screen {
    terminal: Terminal<CrosstermBackend<Stdout>>,
    mouse: bool,
}

impl Screen {
    fn enter(mouse: bool) -> Result<Self> {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore(mouse);
            tracing::error!("panic: {info}");
            previous(info);
        }));
        enable_raw_mode().context("cannot switch the terminal to raw mode")?;
        let mut out = stdout();
        // Keyboard enhancement lets terminals that support it report Shift-Enter; the others
        // ignore the request.
        execute!(
            out,
            EnterAlternateScreen,
            EnableBracketedPaste,
            PushKeyboardEnhancementFlags(KeyboardEnhancementFlags::DISAMBIGUATE_ESCAPE_CODES)
        )?;
        if mouse {
            execute!(out, EnableMouseCapture)?;
        }
        Ok(Screen {
            terminal: Terminal::new(CrosstermBackend::new(out))?,
            mouse,
        })
    }
}

fn restore(mouse: bool) {
    let _ = disable_raw_mode();
    let mut out = stdout();
    if mouse {
        let _ = execute!(out, DisableMouseCapture);
    }
    let _ = execute!(
        out,
        PopKeyboardEnhancementFlags,
        DisableBracketedPaste,
        LeaveAlternateScreen,
        crossterm::cursor::Show
    );
}

impl Drop for Screen {
    fn drop(&mut self) {
        restore(self.mouse);
    }
}

/// The engine, what the screen shows about its model, and the recipe it starts with.
type Loaded = Result<(Engine, ModelInfo, Recipe), String>;

/// Fetches (reporting to the screen), loads and spawns the model; on a blocking worker.
fn open_engine(
    cfg: &Config,
    tx: mpsc::UnboundedSender<Msg>,
) -> Result<(Engine, ModelInfo, Recipe)> {
    // Quiet: nothing may print over the screen; the progress goes to the screen's bar.
    let fetch = FetchOptions {
        quiet: true,
        progress: Some(ProgressFn(Arc::new(move |p| {
            let _ = tx.send(Msg::Fetch(p));
        }))),
        ..Default::default()
    };
    let o = crate::open::open(cfg, &fetch)?;
    let info = ModelInfo {
        name: o.name,
        device: o.device,
        layers: o.layers,
        ctx: o.ctx,
        defaults: o.defaults,
        fixed_attention: o.fixed_attention,
        context_note: o.context_note,
    };
    Ok((Engine::spawn(o.backend), info, o.recipe))
}

/// Resident memory of this process, from /proc (None elsewhere).
fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse::<u64>()
        .ok()?;
    Some(kb * 1024)
}

/// Writes a conversation to `to`, or to a new file named after the document and the time
/// (`<document>-<YYYYmmdd-HHMM>.md`, UTC; `-2`, `-3`… when that name is taken).
fn save(markdown: &str, to: Option<PathBuf>, document: Option<&Path>) -> Result<PathBuf, String> {
    let path = match to {
        Some(p) => p,
        None => {
            let dir = config::data_dir()
                .map_err(|e| e.to_string())?
                .join("conversations");
            std::fs::create_dir_all(&dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
            let stem = document
                .and_then(Path::file_stem)
                .map_or("chat".into(), |s| s.to_string_lossy().into_owned());
            let stamp = crate::tokenizer::strftime("%Y%m%d-%H%M", std::time::SystemTime::now());
            let name = |n: usize| match n {
                1 => format!("{stem}-{stamp}.md"),
                n => format!("{stem}-{stamp}-{n}.md"),
            };
            (1..)
                .map(|n| dir.join(name(n)))
                .find(|p| !p.exists())
                .expect("an unused name")
        }
    };
    std::fs::write(&path, markdown).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(path)
}

/// The OSC 52 sequence that puts `text` on the terminal's clipboard (tmux passes it on or
/// keeps it as a paste buffer, with `set-clipboard on`).
fn osc52(text: &str) -> String {
    format!("\x1b]52;c;{}\x07", fmt::base64(text.as_bytes()))
}

/// Spawns the model's loader on a blocking worker; its result arrives on the receiver.
fn spawn_loader(cfg: &Config, tx: &mpsc::UnboundedSender<Msg>) -> oneshot::Receiver<Loaded> {
    let (loaded_tx, loaded_rx) = oneshot::channel::<Loaded>();
    let model_cfg = cfg.clone();
    let fetch_tx = tx.clone();
    tokio::task::spawn_blocking(move || {
        let _ = loaded_tx.send(open_engine(&model_cfg, fetch_tx).map_err(|e| format!("{e:#}")));
    });
    loaded_rx
}

/// `cfg` with the launch settings a `:model`, `:device` or `:ctx` changed.
fn reopened(mut cfg: Config, r: Reopen) -> Config {
    if let Some(m) = r.model {
        cfg.model = m;
    }
    if let Some(d) = r.device {
        cfg.device = d;
    }
    if let Some(c) = r.ctx {
        cfg.ctx = c;
    }
    cfg
}

fn term_msg(e: TermEvent) -> Option<Msg> {
    match e {
        TermEvent::Key(k) => Some(Msg::Key(k)),
        TermEvent::Paste(s) => Some(Msg::Paste(s)),
        TermEvent::Mouse(m) => Some(Msg::Mouse(m)),
        TermEvent::Resize(w, h) => Some(Msg::Resize(w, h)),
        _ => None,
    }
}

/// Frames are drawn at most this often; state changes in between are drawn together.
const FRAME: Duration = Duration::from_millis(33);

/// Returns the engine (if it loaded) so the caller drops it after restoring the screen, and
/// a line to print then (where the conversation was saved).
async fn event_loop(
    screen: &mut Screen,
    mut app: App,
    mut cfg: Config,
    file: Option<PathBuf>,
) -> Result<(Option<Engine>, Option<String>)> {
    let (tx, mut rx) = mpsc::unbounded_channel::<Msg>();
    let mut loaded_rx = spawn_loader(&cfg, &tx);
    let mut farewell = None;
    if let Some(path) = file.clone() {
        let tx = tx.clone();
        tokio::task::spawn_blocking(move || {
            let unit = match path.extension().and_then(|e| e.to_str()) {
                Some(e) if e.eq_ignore_ascii_case("epub") => "chapter",
                _ => "page",
            };
            // A few updates a second are enough for the bar; a PDF has thousands of pages.
            let mut last: Option<Instant> = None;
            let mut report = |p: crate::document::LoadProgress| {
                if p.done >= p.total
                    || last.is_none_or(|t| t.elapsed() >= Duration::from_millis(50))
                {
                    last = Some(Instant::now());
                    let _ = tx.send(Msg::Parsing {
                        done: p.done,
                        total: p.total,
                        unit,
                    });
                }
            };
            let msg = match crate::document::load_with_progress(&path, &mut report) {
                Ok(doc) => Msg::DocumentReady(doc),
                Err(e) => Msg::LoadFailed(e.to_string()),
            };
            let _ = tx.send(msg);
        });
    }
    let size = screen.terminal.size()?;
    app.update(Msg::Resize(size.width, size.height));

    let started = Instant::now();
    let mut engine: Option<Engine> = None;
    let mut waiting_for_model = true;
    let mut events = EventStream::new();
    let mut clock = tokio::time::interval(Duration::from_millis(100));
    clock.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut frame = tokio::time::interval(FRAME);
    frame.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut dirty = true;
    loop {
        let msg = tokio::select! {
            ev = events.next() => match ev {
                Some(Ok(e)) => term_msg(e),
                Some(Err(e)) => return Err(e).context("reading terminal events"),
                None => return Ok((engine, farewell)),
            },
            Some(m) = rx.recv() => Some(m),
            loaded = &mut loaded_rx, if waiting_for_model => {
                waiting_for_model = false;
                match loaded {
                    Ok(Ok((mut e, info, recipe))) => {
                        let events = e.take_events();
                        let tx = tx.clone();
                        // The engine speaks over std channels; a thread carries its events
                        // into this loop.
                        std::thread::Builder::new()
                            .name("swaa-events".into())
                            .spawn(move || {
                                while let Ok(ev) = events.recv() {
                                    if tx.send(Msg::Engine(ev)).is_err() {
                                        break;
                                    }
                                }
                            })?;
                        engine = Some(e);
                        Some(Msg::ModelReady(info, recipe))
                    }
                    Ok(Err(e)) => Some(Msg::ModelFailed(e)),
                    Err(_) => Some(Msg::ModelFailed("the model loader stopped unexpectedly; see the log".into())),
                }
            },
            _ = clock.tick() => {
                // Only what shows time (rates, ETA) needs a redraw on the clock.
                dirty |= app.progress().is_some() || app.download().is_some();
                Some(Msg::Tick { now: started.elapsed(), rss_bytes: rss_bytes() })
            },
            _ = frame.tick() => {
                if dirty {
                    screen.terminal.draw(|f| panes::render(f, &app))?;
                    dirty = false;
                }
                None
            },
        };
        let Some(msg) = msg else { continue };
        let tick = matches!(msg, Msg::Tick { .. });
        for effect in app.update(msg) {
            match effect {
                Effect::Engine(cmd) => {
                    if let Some(e) = &engine {
                        e.send(cmd);
                    }
                }
                Effect::CancelEngine => {
                    if let Some(e) = &engine {
                        e.cancel();
                    }
                }
                Effect::SkipRecipe => {
                    if let Some(e) = &engine {
                        e.skip();
                    }
                }
                // A small file, written at once: a save on quit must land before the exit.
                Effect::Save { markdown, to } => {
                    let saved = save(&markdown, to, file.as_deref());
                    if let Ok(p) = &saved {
                        farewell = Some(format!("saved the conversation to {}", p.display()));
                    }
                    let _ = tx.send(Msg::Saved(saved));
                }
                Effect::Copy(text) => {
                    let out = screen.terminal.backend_mut();
                    out.write_all(osc52(&text).as_bytes())?;
                    out.flush()?;
                }
                Effect::Mouse(on) => {
                    if on {
                        execute!(stdout(), EnableMouseCapture)?;
                    } else {
                        execute!(stdout(), DisableMouseCapture)?;
                    }
                    screen.mouse = on;
                }
                Effect::Reopen(r) => {
                    // The old engine stops (after its chunk) before the new model loads.
                    if let Some(e) = &engine {
                        e.cancel();
                    }
                    engine = None;
                    cfg = reopened(cfg.clone(), r);
                    loaded_rx = spawn_loader(&cfg, &tx);
                    waiting_for_model = true;
                }
                Effect::Quit => return Ok((engine, farewell)),
            }
        }
        dirty |= !tick;
    }
}
