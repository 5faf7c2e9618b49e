//! The line-mode chat and `ask`: progress on stderr, the answer on stdout.

use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;
use std::sync::atomic::AtomicBool;

use anyhow::Result;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::config::Config;
use crate::document;
use crate::engine::{Event, kv_summary};
use crate::open::{Opened, fetch_options, open};

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
        Event::Token { text } if stream => {
            print!("{text}");
            let _ = std::io::stdout().flush();
        }
        _ => {}
    }
}

pub(super) fn ask(cfg: &Config, file: &Path, question: &str, json: bool) -> Result<()> {
    let doc = document::load(file)?;
    let Opened {
        backend: mut session,
        name,
        ..
    } = open(cfg, &fetch_options())?;
    session.load_document(&doc.title, &doc.text);
    let pb = progress_bar(json);
    let never = AtomicBool::new(false);
    let answer = session.ask(question, &mut printer(&pb, !json), &never)?;
    pb.finish_and_clear();
    if json {
        let out = serde_json::json!({
            "model": name,
            "question": answer.question,
            "answer": answer.text,
            "recipe": answer.recipe,
            "stats": answer.stats,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        let s = &answer.stats;
        println!();
        eprintln!(
            "[{name} · {} · {} · prompt {} tok at {:.0} tok/s · {} tok at {:.1} tok/s · TTFT {:.2}s · KV {}]",
            s.device,
            s.recipe,
            s.prompt_tokens,
            s.prefill_tokens_per_s,
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
pub(super) fn chat(cfg: &Config, file: Option<&Path>) -> Result<()> {
    let doc = file.map(document::load).transpose()?;
    let Opened {
        backend: mut session,
        name,
        recipe,
        ..
    } = open(cfg, &fetch_options())?;
    let never = AtomicBool::new(false);
    let pb = progress_bar(false);
    if let Some(doc) = &doc {
        session.load_document(&doc.title, &doc.text);
        eprintln!("{name} · {recipe} · reading “{}”…", doc.title);
        session.read(&mut printer(&pb, true), &never)?;
        let s = session.stats();
        eprintln!(
            "read {} tokens at {:.0} tok/s · KV cache {}. Ask a question (Ctrl-D quits).",
            s.prompt_tokens,
            s.prefill_tokens_per_s,
            kv_summary(&s.cache)
        );
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
                eprintln!(
                    "[{} · {:.1} tok/s · TTFT {:.2}s · KV {}]",
                    s.recipe,
                    s.decode_tokens_per_s,
                    s.time_to_first_token_s,
                    kv_summary(&s.cache)
                );
            }
            Err(e) => eprintln!("error: {e}"),
        }
    }
    Ok(())
}
