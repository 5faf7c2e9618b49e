//! The line-mode chat and `ask`: progress on stderr, the answer on stdout.

use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;
use std::sync::atomic::AtomicBool;

use anyhow::{Result, anyhow};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::config::{Config, ConfigError};
use crate::document::{self, Document, SectionRange};
use crate::engine::{EngineError, Event, Focused, kv_summary};
use crate::open::{Opened, fetch_options, open};
use crate::units::printable;

fn progress_bar(hidden: bool) -> ProgressBar {
    let pb = ProgressBar::new(0);
    if hidden || !std::io::stderr().is_terminal() {
        pb.set_draw_target(ProgressDrawTarget::hidden());
    }
    pb.set_style(
        ProgressStyle::with_template(
            "reading {bar:30} {pos}/{len} tokens · {per_sec} · ETA {eta} {msg}",
        )
        .expect("valid template"),
    );
    pb
}

/// Prints events to the terminal: a progress bar while reading, tokens as they come.
fn printer(pb: &ProgressBar, stream: bool) -> impl FnMut(Event) + '_ {
    move |e| match e {
        Event::Progress {
            done,
            total,
            window,
        } => {
            pb.set_length(total as u64);
            pb.set_position(done as u64);
            if let Some((a, b)) = window {
                pb.set_message(format!("window {a}..{b}"));
            }
            if done >= total {
                pb.finish_and_clear();
            }
        }
        Event::Note { message } => pb.suspend(|| eprintln!("{}", printable(&message))),
        Event::Token { text } if stream => {
            print!("{}", printable(&text));
            let _ = std::io::stdout().flush();
        }
        _ => {}
    }
}

/// The document at `file`, or the part of it `pages` names; the part's title says which part
/// it is ("pages 40–120 of 311") and so does the returned label.
fn load_part(file: &Path, pages: Option<&str>) -> Result<(Document, Option<String>)> {
    let range = pages
        .map(str::parse::<SectionRange>)
        .transpose()
        .map_err(|e| ConfigError::Setting(format!("--pages: {e}")))?;
    document::load(file)?
        .part(range)
        .map_err(|e| ConfigError::Setting(format!("{}: --pages: {e}", file.display())).into())
}

/// A document that does not fit the context gets, instead of the engine's general advice, its
/// size against the context and the flags that would read it.
fn explain_overflow(e: EngineError, file: &Path, doc: &Document) -> anyhow::Error {
    let EngineError::ContextOverflow {
        doc: tokens,
        rest,
        ctx,
        ..
    } = e
    else {
        return e.into();
    };
    // The question and the answer's budget fill the context by themselves: the document is
    // not what to shorten.
    if rest >= ctx {
        return EngineError::QuestionTooLong { needed: rest, ctx }.into();
    }
    let room = ctx - rest;
    let n = doc.sections.len();
    let noun = doc.section_noun();
    // Tokens per section vary: aim a little under the proportional share.
    let fit = (n as f64 * room as f64 / tokens.max(1) as f64 * 0.9).floor() as usize;
    let first = doc.sections.first().map_or(1, |s| s.number);
    let part = if n > 1 && fit >= 1 {
        format!(
            "--pages {first}-{} ({} {noun}s of {n}), ",
            first + fit - 1,
            fit
        )
    } else {
        String::new()
    };
    anyhow!(
        "{} is {tokens} tokens but the model's context of {ctx} leaves {room} for the document: read part of it with {part}--context-policy truncate-tail (the beginning) or truncate-head (the end), or give a larger --ctx",
        file.display()
    )
}

pub(super) fn ask(
    cfg: &Config,
    file: &Path,
    pages: Option<&str>,
    question: &str,
    json: bool,
) -> Result<()> {
    let (doc, part) = load_part(file, pages)?;
    let Opened {
        backend: mut session,
        name,
        context_note,
        ..
    } = open(cfg, &fetch_options())?;
    if let Some(note) = context_note {
        eprintln!("{note}");
    }
    session.load(&doc);
    if let Some(p) = &part
        && !json
    {
        eprintln!("reading {p}");
    }
    let pb = progress_bar(json);
    let never = AtomicBool::new(false);
    let answer = session
        .ask(question, &mut printer(&pb, !json), &never)
        .map_err(|e| explain_overflow(e, file, &doc))?;
    pb.finish_and_clear();
    if json {
        let read = match &answer.focus {
            Some(f) => f.read.clone(),
            None => part.unwrap_or_else(|| "the whole document".into()),
        };
        let out = serde_json::json!({
            "model": name,
            "read": read,
            "question": answer.question,
            "answer": answer.text,
            "evidence": answer.focus.as_ref().map(|f| &f.evidence),
            "focus": answer.focus,
            "recipe": answer.recipe,
            "stats": answer.stats,
        });
        let text = serde_json::to_string_pretty(&out)?;
        println!("{}", crate::units::json_escape_controls(&text));
    } else {
        let s = &answer.stats;
        println!();
        print_evidence(answer.focus.as_ref());
        eprintln!(
            "[{name} · {} · {} · prompt {} tok (read {} at {:.0} tok/s) · {} tok at {:.1} tok/s · TTFT {:.2}s · KV {}]",
            s.device,
            s.recipe,
            s.prompt_tokens,
            s.read_tokens,
            s.read_tokens_per_s,
            s.generated_tokens,
            s.decode_tokens_per_s,
            s.time_to_first_token_s,
            kv_summary(&s.cache)
        );
    }
    Ok(())
}

/// The line-mode chat (when stdin or stdout is not a terminal): read the document, then
/// answer each line.
pub(super) fn chat(cfg: &Config, file: Option<&Path>, pages: Option<&str>) -> Result<()> {
    if pages.is_some() && file.is_none() {
        return Err(ConfigError::Setting(
            "--pages needs a document: swaa-chat FILE --pages RANGE".into(),
        )
        .into());
    }
    let doc = file
        .map(|f| load_part(f, pages).map(|d| (f, d)))
        .transpose()?;
    let Opened {
        backend: mut session,
        name,
        recipe,
        context_note,
        ..
    } = open(cfg, &fetch_options())?;
    if let Some(note) = context_note {
        eprintln!("{note}");
    }
    let never = AtomicBool::new(false);
    let pb = progress_bar(false);
    if let Some((file, (doc, _))) = &doc {
        session.load(doc);
        eprintln!("{name} · {recipe} · reading “{}”…", printable(&doc.title));
        session
            .read(&mut printer(&pb, true), &never)
            .map_err(|e| explain_overflow(e, file, doc))?;
        let s = session.stats();
        // A restored read has said so in its note; it has no reading rate.
        let how = match s.restored {
            Some(_) => "restored".to_string(),
            None => format!("read at {:.0} tok/s", s.read_tokens_per_s),
        };
        if s.prompt_tokens == 0 {
            // Book mode (its note said so): each question reads what it selects.
            eprintln!("Ask a question (Ctrl-D quits).");
        } else {
            eprintln!(
                "{} tokens {how} · KV cache {}. Ask a question (Ctrl-D quits).",
                s.prompt_tokens,
                kv_summary(&s.cache)
            );
        }
    } else {
        eprintln!("{name} · {recipe} · chat (Ctrl-D quits).");
    }
    let stdin = std::io::stdin();
    loop {
        eprint!("> ");
        let mut line = String::new();
        if stdin.lock().read_line(&mut line)? == 0 {
            break;
        }
        let q = line.trim();
        if q.is_empty() {
            continue;
        }
        match session.ask(q, &mut printer(&pb, true), &never) {
            Ok(a) => {
                let s = &a.stats;
                println!();
                print_evidence(a.focus.as_ref());
                eprintln!(
                    "[{} · {:.1} tok/s · TTFT {:.2}s · KV {}]",
                    s.recipe,
                    s.decode_tokens_per_s,
                    s.time_to_first_token_s,
                    kv_summary(&s.cache)
                );
            }
            Err(e) => eprintln!("error: {}", printable(&e.to_string())),
        }
    }
    Ok(())
}

/// Under a book-mode answer: what the question read, and the pages the answer drew on with
/// the sentence it attended to most on each.
fn print_evidence(focus: Option<&Focused>) {
    let Some(f) = focus else {
        return;
    };
    println!(
        "[read {} ({} tokens, {})]",
        f.read,
        crate::units::int(f.tokens),
        f.selector
    );
    for e in &f.evidence {
        println!(
            "  {} {} ({:.0}%): “{}”",
            f.noun,
            e.page,
            e.score * 100.0,
            printable(&e.text)
        );
    }
}
