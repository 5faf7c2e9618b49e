#![no_main]
// A chat template (up to the first NUL) rendered over a user message (the rest).
libfuzzer_sys::fuzz_target!(|data: &[u8]| swaa_chat::fuzzing::chat_template(data));
