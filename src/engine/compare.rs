//! One question under several recipes from the same read (the reader's `:eval`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use serde::Serialize;

use super::session::{Session, Snapshot};
use super::stats::Answer;
use super::{EngineError, Event, Result};
use crate::recipe::Recipe;

/// One recipe's answer to a question and what it cost.
#[derive(Debug, Clone, Serialize)]
pub struct RecipeAnswer {
    pub recipe: Recipe,
    pub answer: Answer,
    /// Whether the document had to be read again for this recipe, and how long that took.
    pub reread: bool,
    pub read_seconds: f64,
}

/// Answers `question` about the loaded document once per recipe, each as a fresh first
/// question; recipes that prefill alike share one read. The session returns to its recipe
/// and conversation afterwards (also on error). A cancel with `skip` set stops only the
/// recipe running: its answer so far (empty if it was still reading) is kept as cancelled,
/// and the next recipe starts.
pub fn compare_recipes(
    session: &mut Session,
    question: &str,
    recipes: &[Recipe],
    emit: &mut dyn FnMut(Event),
    cancel: &AtomicBool,
    skip: &AtomicBool,
) -> Result<Vec<RecipeAnswer>> {
    let original = session.snapshot()?;
    let result = compare_inner(session, &original, question, recipes, emit, cancel, skip);
    session.restore(&original)?;
    result
}

fn compare_inner(
    session: &mut Session,
    original: &Snapshot,
    question: &str,
    recipes: &[Recipe],
    emit: &mut dyn FnMut(Event),
    cancel: &AtomicBool,
    skip: &AtomicBool,
) -> Result<Vec<RecipeAnswer>> {
    // A skip is a cancel meant for one recipe: clear both and go on.
    let skipped = || {
        let s = skip.swap(false, Ordering::Relaxed);
        if s {
            cancel.store(false, Ordering::Relaxed);
        }
        s
    };
    // The read document without any conversation: the original if it has none.
    let mut base = session.history().is_empty().then(|| original.clone());
    let mut out = Vec::new();
    for (index, r) in recipes.iter().enumerate() {
        emit(Event::Comparing {
            index,
            recipe: r.clone(),
        });
        match &base {
            Some(b) => session.restore(b)?,
            None => session.reset(),
        }
        session.set_recipe(r.clone());
        let held = session.cache().next_pos();
        let t0 = Instant::now();
        let read = session.read(emit, cancel);
        let reread = session.cache().next_pos() != held;
        let read_seconds = if reread {
            t0.elapsed().as_secs_f64()
        } else {
            0.0
        };
        let answer = match read {
            // Skipped while reading: the base (a snapshot) is untouched by the partial read.
            Err(EngineError::Cancelled) if skipped() => nothing(session, question, r),
            Err(e) => return Err(e),
            Ok(()) => {
                if reread || base.is_none() {
                    base = Some(session.snapshot()?);
                }
                match session.ask(question, emit, cancel) {
                    Ok(a) => {
                        // A cancelled answer that was not skipped ends the whole comparison
                        // (and a skip after the answer ended is for no recipe).
                        if !skipped() && a.cancelled {
                            return Err(EngineError::Cancelled);
                        }
                        a
                    }
                    Err(EngineError::Cancelled) if skipped() => nothing(session, question, r),
                    Err(e) => return Err(e),
                }
            }
        };
        let row = RecipeAnswer {
            recipe: r.clone(),
            answer,
            reread,
            read_seconds,
        };
        emit(Event::CompareRow {
            index,
            answer: row.clone(),
        });
        out.push(row);
    }
    Ok(out)
}

/// The answer of a recipe skipped before it said anything.
fn nothing(session: &Session, question: &str, recipe: &Recipe) -> Answer {
    Answer {
        question: question.to_string(),
        text: String::new(),
        recipe: recipe.clone(),
        stats: session.stats(),
        cancelled: true,
        note: None,
        focus: None,
    }
}
