#![no_main]
// Arbitrary bytes as a .gguf: header, tensor index, hyperparameters, weights, tokenizer.
libfuzzer_sys::fuzz_target!(|data: &[u8]| swaa_chat::fuzzing::gguf(data));
