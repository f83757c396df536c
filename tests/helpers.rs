//! The test helpers clean up after themselves, also when a test fails: a scratch directory
//! goes when its guard drops (unwinding from a panic included), and a pilot that `Running`
//! SIGKILLs leaves no control socket behind in /tmp.

mod common;
use common::*;
use std::process::Command;
use std::time::Duration;

#[test]
fn a_scratch_directory_is_removed_when_the_test_panics() {
    let mut seen = None;
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let dir = scratch("helpers-panic");
        std::fs::create_dir_all(dir.join("deep/er")).unwrap();
        std::fs::write(dir.join("deep/er/file"), "x").unwrap();
        seen = Some(dir.to_path_buf());
        panic!("a failing test");
    }));
    assert!(result.is_err());
    let dir = seen.expect("the directory existed");
    assert!(dir.starts_with(std::env::temp_dir()), "{}", dir.display());
    assert!(!dir.exists(), "{} is left after the panic", dir.display());
}

#[test]
fn scratch_directories_are_distinct_and_usable_as_paths() {
    let (a, b) = (scratch("helpers-same"), scratch("helpers-same"));
    assert_ne!(a.path(), b.path(), "two tests with the same name never share a directory");
    let cfg = write_config(&a, "{}");
    assert!(std::path::Path::new(&cfg).starts_with(&*a));
    let out = run_limited(Command::new("ls").arg(&b), Duration::from_secs(10));
    assert!(out.status.success());
    let odd = scratch("a/b c");
    assert_eq!(odd.parent(), Some(std::env::temp_dir().as_path()), "a name is a label, not a path");
    let kept = a.to_path_buf();
    drop(a);
    assert!(!kept.exists());
}

#[test]
fn a_killed_pilot_leaves_no_socket_in_tmp() {
    let dir = scratch("helpers-socket");
    let cfg = write_config(&dir, r#"{ jobs: [ { name: "app", exec: "sleep 1000" } ] }"#);
    let p = Running::start(Command::new(pilot()).args(["run", "-c", &cfg]).env("RUST_LOG", "debug"));
    let line = p.expect_line(|l| l.contains("control: listening on "), "where the control socket is");
    let socket = std::path::PathBuf::from(line.split("control: listening on ").nth(1).unwrap().trim());
    assert!(socket.exists(), "{}", socket.display());
    assert_ne!(socket.parent(), Some(std::env::temp_dir().as_path()), "the socket is in a directory of its own");
    drop(p);
    assert!(!socket.exists(), "{} is left after pilot was SIGKILLed", socket.display());
}
