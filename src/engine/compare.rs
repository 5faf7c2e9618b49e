//! One question under several recipes from the same read (the reader's `:eval`).

use std::sync::atomic::AtomicBool;
use std::time::Instant;

use serde::Serialize;

use super::session::{Session, Snapshot};
use super::stats::Answer;
use super::{Event, Result};
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
/// and conversation afterwards (also on error).
pub fn compare_recipes(
    session: &mut Session,
    question: &str,
    recipes: &[Recipe],
    emit: &mut dyn FnMut(Event),
    cancel: &AtomicBool,
) -> Result<Vec<RecipeAnswer>> {
    let original = session.snapshot()?;
    let result = compare_inner(session, &original, question, recipes, emit, cancel);
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
) -> Result<Vec<RecipeAnswer>> {
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
        session.read(emit, cancel)?;
        let reread = session.cache().next_pos() != held;
        let read_seconds = if reread {
            t0.elapsed().as_secs_f64()
        } else {
            0.0
        };
        if reread || base.is_none() {
            base = Some(session.snapshot()?);
        }
        let answer = session.ask(question, emit, cancel)?;
        out.push(RecipeAnswer {
            recipe: r.clone(),
            answer,
            reread,
            read_seconds,
        });
    }
    Ok(out)
}
