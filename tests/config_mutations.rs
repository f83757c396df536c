//! A deterministic slice of the fuzz target in the normal suite: thousands of mutations of
//! the ContainerPilot v3 configs of tests/fixtures/containerpilot (valid and mistaken) must
//! produce diagnostics, never a panic.

use std::collections::HashMap;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/containerpilot");

#[test]
fn mutated_configs_never_panic() {
    // Sorted, so the same seed gets the same mutations on every machine.
    let mut paths: Vec<std::path::PathBuf> = [FIXTURES.to_string(), format!("{FIXTURES}/mistakes")]
        .iter()
        .flat_map(|dir| std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{dir}: {e}")).flatten().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json5"))
        .collect();
    paths.sort();
    let mut seeds: Vec<String> = paths.iter().map(|p| std::fs::read_to_string(p).unwrap()).collect();
    seeds.push("{{ range loop 3 }}{{ . }}{{ end }}{{ .X | split \",\" | join }}{{ loop }}".into());
    assert!(seeds.len() >= 15);
    let env: HashMap<String, String> = [("CONSUL".to_string(), "consul".to_string())].into_iter().collect();
    let pieces = [
        "{", "}", "[", "]", ",", ":", "\"", "{{", "}}", "\\", "/*", "//", "0x", "-1", "1e999", "interval", "once",
        "null", "\u{0}", "é",
    ];
    let mut state: u64 = 0x9e3779b97f4a7c15;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut diagnosed = 0;
    for round in 0..4000 {
        let mut text: Vec<char> = seeds[round % seeds.len()].chars().collect();
        for _ in 0..(1 + next() % 4) {
            let at = (next() as usize) % (text.len() + 1);
            match next() % 3 {
                0 if at < text.len() => {
                    text.remove(at);
                }
                _ => {
                    let p = pieces[(next() as usize) % pieces.len()];
                    for (i, c) in p.chars().enumerate() {
                        text.insert(at + i, c);
                    }
                }
            }
        }
        let s: String = text.into_iter().collect();
        if !pilot::config::check_text(&s, &env).is_empty() {
            diagnosed += 1;
        }
    }
    assert!(diagnosed > 1000, "mutations should mostly be diagnosed, got {diagnosed}");
}

/// Inputs the fuzzer once crashed or hung on.
#[test]
fn fuzz_regressions_are_diagnosed() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/fuzz-regressions");
    let mut n = 0;
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let text = String::from_utf8_lossy(&std::fs::read(entry.path()).unwrap()).into_owned();
        let diags = pilot::config::check_text(&text, &HashMap::new());
        assert!(!diags.is_empty(), "{}: expected a diagnostic", entry.path().display());
        n += 1;
    }
    let slow = "{ jobs: [ {{ range loop 100000000 }}{{ end }} ] }";
    let start = std::time::Instant::now();
    assert!(!pilot::config::check_text(slow, &HashMap::new()).is_empty());
    assert!(start.elapsed() < std::time::Duration::from_secs(2), "a huge loop is refused, not run");
    assert!(n >= 1);
}
