#![no_main]
// Arbitrary bytes as a .epub document, through detection and extraction.
libfuzzer_sys::fuzz_target!(|data: &[u8]| swaa_chat::fuzzing::document(data, "epub"));
