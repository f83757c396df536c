//! What a spawned process gets from pilot besides its arguments: pilot raises its own soft
//! `RLIMIT_NOFILE` to the hard limit, and every child gets the soft limit pilot started with
//! back (a `select(2)` program breaks above 1024), as Go ≥ 1.19 (ContainerPilot) and systemd
//! do.

mod common;
use common::*;
use std::process::Command;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(20);

/// The soft and hard "Max open files" of a `/proc/PID/limits` text.
fn open_files(limits: &str) -> (String, String) {
    let line = limits.lines().find(|l| l.starts_with("Max open files")).expect("Max open files");
    let f: Vec<&str> = line.split_whitespace().collect();
    (f[3].to_string(), f[4].to_string())
}

#[test]
fn children_get_the_original_soft_nofile_limit_and_pilot_the_hard_one() {
    require("prlimit", "apt-get install util-linux");
    let dir = scratch("nofile");
    let check = dir.join("check");
    // A job, its health check and the payload each print their soft limit; the payload
    // also prints pilot's (its parent's) limits.
    let cfg = write_config(
        &dir,
        &format!(
            r#"{{ consul: "127.0.0.1:1", jobs: [
                {{ name: "job", exec: ["sh", "-c", "echo job $(ulimit -Sn); sleep 1000"] }},
                {{ name: "svc", exec: "sleep 1000", port: 8080, interfaces: ["static:127.0.0.1"],
                   health: {{ exec: ["sh", "-c", "ulimit -Sn > {}"], interval: 1, ttl: 10 }} }} ] }}"#,
            check.display()
        ),
    );
    let payload = "echo payload $(ulimit -Sn); cat /proc/$PPID/limits; sleep 3";
    let out = run_limited(
        Command::new("prlimit")
            .args(["--nofile=1024:4096", "--"])
            .arg(pilot())
            .args(["run", "-c", &cfg, "--", "sh", "-c", payload]),
        LIMIT,
    );
    let log = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{log}{}", text(&out.stderr));
    assert!(log.lines().any(|l| l == "payload 1024"), "the payload gets 1024 back: {log}");
    assert!(log.lines().any(|l| l.ends_with("job 1024")), "a job gets 1024 back: {log}");
    assert_eq!(open_files(&log), ("4096".to_string(), "4096".to_string()), "pilot's own soft limit is raised: {log}");
    let check = std::fs::read_to_string(&check).unwrap_or_default();
    assert_eq!(check.trim(), "1024", "a health check gets 1024 back");
}

/// The static musl build (the one that goes into images) starts processes with
/// `clone(CLONE_VM)`, not fork-like: musl's `clone()` refuses `CLONE_CHILD_CLEARTID` with
/// EINVAL before any system call, which once sent every spawn of the musl build down the
/// fallback (a page-table copy and some thirty copy-on-write faults per spawn, +0.2 ms of
/// CPU per health check) while the glibc build used in the other tests was fine.
#[test]
fn the_static_build_spawns_without_copying_page_tables() {
    let bin = static_pilot();
    let dir = scratch("static-spawn");
    let cfg = write_config(&dir, r#"{ logging: { level: "DEBUG" }, jobs: [ { name: "t", exec: "true" } ] }"#);
    let out = run_limited(Command::new(&bin).args(["run", "-c", &cfg, "--", "true"]), LIMIT);
    let log = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{log}");
    assert!(log.contains("job t started: pid"), "debug logging is on: {log}");
    assert!(!log.contains("fork-like"), "the static build fell back to fork-like spawns: {log}");
}
