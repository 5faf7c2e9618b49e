//! swaa-chat: read long documents with a local LLM, with sliding-window prefill and
//! full-attention decode (the SWAA recipes). See `../shared/DESIGN.md` for the semantics.

pub mod bench;
pub mod cli;
pub mod config;
pub mod document;
pub mod engine;
pub mod eval;
pub mod hub;
pub mod loader;
pub mod model;
pub mod recipe;
pub mod rng;
pub mod sampling;
pub mod selftest;
pub mod swat;
pub mod tokenizer;
pub mod tui;
