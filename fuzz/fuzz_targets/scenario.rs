//! The scenario parser and checks on any bytes: never a panic, and every error names a line and
//! a column.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = ebb_harness::scenario::Scenario::parse(Path::new("fuzz.json"), data) {
        let text = e.to_string();
        assert!(text.starts_with("fuzz.json:"), "{text}");
    }
});
