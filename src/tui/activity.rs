//! What the reader is waiting for: one state instead of flags. The engine runs commands in
//! the order it gets them, so what is asked while another command runs waits in the state
//! (a question behind a read, anything behind a comparison) and runs when that one ends.

use super::panes::compare::Comparison;
use super::panes::status::Download;

/// The model's way to the screen, before it can answer.
#[derive(Debug, Clone, Default)]
pub struct Loading {
    pub download: Option<Download>,
    /// Fetching or loading the model failed, and why: it stays shown, and a question gets
    /// it as the answer to why nothing runs.
    pub failed: Option<String>,
}

/// What was asked for during a comparison; it runs once the comparison ends, in the order
/// the engine received it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Queued {
    pub reread: bool,
    pub answer: bool,
}

/// What the reader is doing, as far as the engine is concerned. The engine runs commands in
/// order, so a question sent during a read waits for it (`then_answer`), and what is asked
/// during a comparison waits for that ([`Queued`]).
#[derive(Debug, Clone)]
pub enum Activity {
    /// The model, or the document that was given, is not there yet.
    Loading(Loading),
    /// The document is read (or re-read) into the cache.
    Reading {
        then_answer: bool,
    },
    Answering,
    /// `:eval`: one question under every preset.
    Comparing {
        run: Comparison,
        after: Queued,
    },
    Idle,
}

impl Activity {
    /// A document read or re-read is running or queued.
    pub fn reading(&self) -> bool {
        matches!(
            self,
            Activity::Reading { .. }
                | Activity::Comparing {
                    after: Queued { reread: true, .. },
                    ..
                }
        )
    }

    /// An answer is running or queued.
    pub fn answering(&self) -> bool {
        matches!(
            self,
            Activity::Reading { then_answer: true }
                | Activity::Answering
                | Activity::Comparing {
                    after: Queued { answer: true, .. },
                    ..
                }
        )
    }

    /// A read starts; an answer running or asked for comes after it.
    pub(super) fn read(&mut self) {
        match self {
            Activity::Comparing { after, .. } => after.reread = true,
            Activity::Reading { .. } => {}
            _ => {
                let then_answer = self.answering();
                *self = Activity::Reading { then_answer };
            }
        }
    }

    pub(super) fn read_ended(&mut self) {
        match self {
            Activity::Reading { then_answer: true } => *self = Activity::Answering,
            Activity::Reading { then_answer: false } => *self = Activity::Idle,
            Activity::Comparing { after, .. } => after.reread = false,
            _ => {}
        }
    }

    pub(super) fn ask(&mut self) {
        match self {
            Activity::Reading { then_answer } => *then_answer = true,
            Activity::Comparing { after, .. } => after.answer = true,
            _ => *self = Activity::Answering,
        }
    }

    pub(super) fn answer_ended(&mut self) {
        match self {
            Activity::Reading { then_answer } => *then_answer = false,
            Activity::Answering => *self = Activity::Idle,
            Activity::Comparing { after, .. } => after.answer = false,
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn comparing(after: Queued) -> Activity {
        Activity::Comparing {
            run: Comparison::new("q".into(), vec!["full".into()]),
            after,
        }
    }

    #[test]
    fn a_question_during_a_read_is_answered_after_it() {
        let mut a = Activity::Idle;
        a.read();
        assert!(a.reading() && !a.answering());
        a.ask();
        assert!(a.reading() && a.answering());
        a.read_ended();
        assert!(matches!(a, Activity::Answering));
        a.answer_ended();
        assert!(matches!(a, Activity::Idle));
    }

    #[test]
    fn a_reread_during_an_answer_keeps_the_answer_until_it_ends() {
        let mut a = Activity::Answering;
        a.read();
        assert!(matches!(a, Activity::Reading { then_answer: true }));
        // A cancelled answer ends while the re-read goes on.
        a.answer_ended();
        assert!(matches!(a, Activity::Reading { then_answer: false }));
        a.read_ended();
        assert!(matches!(a, Activity::Idle));
    }

    #[test]
    fn what_is_asked_during_a_comparison_is_queued_behind_it() {
        let mut a = comparing(Queued::default());
        assert!(!a.reading() && !a.answering());
        a.read();
        a.ask();
        assert!(matches!(
            a,
            Activity::Comparing {
                after: Queued {
                    reread: true,
                    answer: true
                },
                ..
            }
        ));
        assert!(a.reading() && a.answering());
        a.answer_ended();
        a.read_ended();
        assert!(matches!(a, Activity::Comparing { after, .. } if after == Queued::default()));
    }

    #[test]
    fn loading_ends_in_a_read_or_an_answer_and_nothing_else_ends_it() {
        let mut a = Activity::Loading(Loading::default());
        a.read_ended();
        a.answer_ended();
        assert!(matches!(a, Activity::Loading(_)));
        a.read();
        assert!(matches!(a, Activity::Reading { then_answer: false }));
        let mut a = Activity::Loading(Loading::default());
        a.ask();
        assert!(matches!(a, Activity::Answering));
    }
}
