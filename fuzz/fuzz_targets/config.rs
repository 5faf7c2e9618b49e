#![no_main]
// Arbitrary text as config.toml and as a model's config.json.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        swaa_chat::fuzzing::config(text);
    }
});
