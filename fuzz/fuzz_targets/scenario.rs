//! Any text as a scenario file: a scenario or errors with a line, never a
//! panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Err(errors) = vitalmesh_scenario::parse("fuzz.toml", text) {
            assert!(!errors.0.is_empty());
        }
    }
});
