#![no_main]
// Arbitrary bytes as a .pdf document, through detection and extraction.
libfuzzer_sys::fuzz_target!(|data: &[u8]| swaa_chat::fuzzing::document(data, "pdf"));
