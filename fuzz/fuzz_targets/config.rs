//! Any bytes through template rendering, JSON5 parsing and validation: errors are fine,
//! panics are bugs. Run: `cargo +nightly fuzz run config` (see README).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let env = [("A".to_string(), "1".to_string()), ("PORT".to_string(), "8080".to_string())].into_iter().collect();
        let _ = pilot::config::check_text(text, &env);
    }
});
