#![no_main]
// Arbitrary bytes as model.safetensors beside a valid tiny config.json.
libfuzzer_sys::fuzz_target!(|data: &[u8]| swaa_chat::fuzzing::safetensors(data));
