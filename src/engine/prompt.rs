//! What the model reads: the chat rendered from the document, the conversation and the
//! question, where the document ends in it, and what to do when the document does not fit.

use serde::Serialize;

use crate::tokenizer::ChatMessage;

/// What to do with a document that does not fit the context.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, serde::Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum ContextPolicy {
    /// Refuse before any work.
    #[default]
    Error,
    /// Keep the end of the document.
    TruncateHead,
    /// Keep the beginning of the document.
    TruncateTail,
}

/// Everything a chat prompt is built from.
pub(super) struct Prompt<'a> {
    pub system: Option<&'a str>,
    /// Title and text of the loaded document.
    pub document: Option<(&'a str, &'a str)>,
    /// Past questions as the model read them (with the instruction when it was added) and
    /// their answers.
    pub history: &'a [(String, String)],
    /// Ask for step-by-step reasoning in the question (models without a native thinking mode).
    pub step_by_step: bool,
}

/// Stands in for the question when rendering, to find where the document part ends.
pub(super) const QUESTION_MARKER: &str = "\u{1}QUESTION\u{1}";

impl Prompt<'_> {
    /// The question as the model reads it. Only the question being asked gets the
    /// step-by-step instruction: past turns stay as they were asked, so toggling thinking
    /// keeps the cached conversation a prefix of the next prompt (no silent re-read).
    pub fn question(&self, q: &str) -> String {
        if self.step_by_step {
            format!("{q}\nThink step by step, then give the answer.")
        } else {
            q.to_string()
        }
    }

    /// The chat messages: the document goes into the first user turn, before its question.
    pub fn messages(&self, question: Option<&str>) -> Vec<ChatMessage> {
        let mut m = Vec::new();
        if let Some(s) = self.system {
            m.push(ChatMessage {
                role: "system".into(),
                content: s.to_string(),
            });
        }
        let mut first = true;
        let mut user = |q: &str| {
            let content = match (self.document, first) {
                (Some((title, text)), true) => {
                    format!("Read this document, then answer.\n\n# {title}\n\n{text}\n\n---\n\n{q}")
                }
                _ => q.to_string(),
            };
            first = false;
            ChatMessage {
                role: "user".into(),
                content,
            }
        };
        for (q, a) in self.history {
            m.push(user(q));
            m.push(ChatMessage {
                role: "assistant".into(),
                content: a.clone(),
            });
        }
        if let Some(q) = question {
            m.push(user(&self.question(q)));
        }
        m
    }
}

/// The document part of a prompt rendered with [`QUESTION_MARKER`] as its question:
/// everything up to the end of the document text.
pub(super) fn document_prefix(rendered: &str, text: &str) -> String {
    let end = rendered
        .find(text)
        .map(|i| i + text.len())
        .or_else(|| rendered.find(QUESTION_MARKER))
        .unwrap_or(0);
    rendered[..end].to_string()
}

/// Applies `policy` to prompt tokens longer than `budget`: `None` when the policy refuses.
/// Both truncations keep the template's head (role markers).
pub(super) fn fit<T: Copy>(tokens: &[T], budget: usize, policy: ContextPolicy) -> Option<Vec<T>> {
    let n = tokens.len();
    match policy {
        ContextPolicy::Error => None,
        ContextPolicy::TruncateHead => {
            let head = 16.min(budget);
            Some(
                tokens[..head]
                    .iter()
                    .chain(&tokens[n - (budget - head)..])
                    .copied()
                    .collect(),
            )
        }
        ContextPolicy::TruncateTail => Some(tokens[..budget].to_vec()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_keeps_the_head_and_the_requested_end() {
        let t: Vec<usize> = (0..100).collect();
        assert_eq!(fit(&t, 40, ContextPolicy::Error), None);
        let head = fit(&t, 40, ContextPolicy::TruncateHead).unwrap();
        assert_eq!(head.len(), 40);
        assert_eq!(&head[..16], &t[..16]);
        assert_eq!(&head[16..], &t[76..]);
        assert_eq!(fit(&t, 40, ContextPolicy::TruncateTail).unwrap(), t[..40]);
    }

    #[test]
    fn the_document_goes_into_the_first_question_only() {
        let history = vec![("q1".to_string(), "a1".to_string())];
        let p = Prompt {
            system: None,
            document: Some(("T", "body")),
            history: &history,
            step_by_step: false,
        };
        let m = p.messages(Some("q2"));
        assert_eq!(m.len(), 3);
        assert!(m[0].content.contains("# T\n\nbody") && m[0].content.ends_with("q1"));
        assert_eq!(m[2].content, "q2");
    }

    #[test]
    fn only_the_question_asked_gets_the_step_by_step_instruction() {
        let history = vec![("q1".to_string(), "a1".to_string())];
        let p = |step_by_step| Prompt {
            system: None,
            document: Some(("T", "body")),
            history: &history,
            step_by_step,
        };
        let on = p(true).messages(Some("q2"));
        assert!(on[0].content.ends_with("q1"), "past turns as asked");
        assert_eq!(on[2].content, p(true).question("q2"));
        assert!(on[2].content.contains("step by step"));
        // Toggling it changes nothing that is already in the cache.
        assert_eq!(p(false).messages(None), p(true).messages(None));
    }
}
