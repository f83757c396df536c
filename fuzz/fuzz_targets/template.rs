//! Any text as a config template, rendered under pilot's budget: errors are fine; a panic,
//! a stack overflow, a hang (libFuzzer's -timeout) or unbounded memory (-rss_limit_mb) is a
//! bug. Run: `cargo +nightly fuzz run template -- -max_total_time=600 -rss_limit_mb=1024 -timeout=10`.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pilot::config::template;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let env = [("A".to_string(), "1".to_string()), ("L".to_string(), "a,b,c".to_string())].into_iter().collect();
        if let Ok(out) = template::render(text, &env) {
            assert!(out.len() <= template::MAX_OUTPUT, "rendered {} bytes", out.len());
        }
    }
});
