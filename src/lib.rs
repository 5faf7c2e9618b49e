//! swaa-chat: read long documents with a local LLM, with sliding-window prefill and
//! full-attention decode (the SWAA recipes). See `../shared/DESIGN.md` for the semantics.
//!
//! Modules are layered; each imports only from layers below it (`tests/layering.rs` checks):
//! - foundations: `units`, `rng`, `optim` (AdamW and the schedule both trainers use), `recipe` (the mask rule), `document`, `tokenizer`, `model`,
//!   `sampling`, `hub` (presets and fetching), `book` (passages a question selects from a long
//!   document, and the pages an answer cites), `readcache` (stored reads on disk);
//! - `engine`: a session reading and answering, on its own thread;
//! - `config`, `bench`, `selftest`, `swat` (trained models, an engine backend of their own);
//! - `open`: the composition root, where models and sessions are put together;
//! - front ends: `eval`, `finetune` (LoRA adapters trained under a recipe), `tui`, `cli`;
//!   `fuzzing` (hidden) for the targets in `fuzz/`.

pub mod bench;
pub mod book;
pub mod cli;
pub mod config;
pub mod document;
pub mod engine;
pub mod eval;
pub mod finetune;
#[doc(hidden)]
pub mod fuzzing;
pub mod hub;
pub mod model;
pub mod open;
pub mod optim;
pub mod readcache;
pub mod recipe;
pub mod rng;
pub mod sampling;
pub mod selftest;
pub mod swat;
pub mod tokenizer;
pub mod tui;
pub mod units;
