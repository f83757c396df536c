//! A hostile payload against the real binary: configs and jobs that are legal but push
//! pilot's bookkeeping (timers, logs) to grow with every run or every signal.

mod common;

use common::*;
use std::process::Command;
use std::time::{Duration, Instant};

/// Read pilot's stdout until `n` more lines equal to `line` came (failing after `limit`).
fn count_lines(p: &Running, line: &str, n: usize, limit: Duration) {
    let deadline = Instant::now() + limit;
    let mut seen = 0;
    while seen < n {
        match p.lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(l) if l == line => seen += 1,
            Ok(_) => {}
            Err(_) => panic!("only {seen} of {n} runs within {limit:?}"),
        }
    }
}

/// Each run of a job with a `timeout` sets a deadline; a run every millisecond with a long
/// timeout used to leave one timer-heap entry per run until that timeout passed (about
/// 40 bytes a run: +2.4 MB per 60,000 runs, without end). Only the newest run's deadline
/// can matter; pilot's memory must not grow with the number of runs.
#[test]
fn a_fast_interval_job_with_a_long_timeout_does_not_grow_pilot() {
    let dir = scratch("adversary-timer-heap");
    let job = |n: u32| {
        format!(
            r#"{{ name: "tick{n}", exec: ["/bin/echo", "tick"], logging: {{ raw: true }},
                 when: {{ interval: "1ms" }}, timeout: "2562047h" }}"#
        )
    };
    let jobs: Vec<String> = (0..4).map(job).collect();
    let cfg = write_config(&dir, &format!("{{ jobs: [{}] }}", jobs.join(",\n")));
    let p = Running::start(Command::new(pilot()).args(["run", "-c", &cfg, "--", "sleep", "1000"]));
    let pid = p.child.id();
    // Warm up (allocator, thread stacks), then measure over many more runs.
    count_lines(&p, "tick", 10_000, Duration::from_secs(300));
    let before = rss_kib(pid);
    count_lines(&p, "tick", 60_000, Duration::from_secs(600));
    let after = rss_kib(pid);
    assert!(before > 0 && after > 0, "pilot is gone");
    assert!(after < before + 1024, "pilot grew from {before} KiB to {after} KiB over 60,000 runs");
    p.signal(libc::SIGTERM);
    assert_eq!(p.wait(Duration::from_secs(30)), 143);
}

/// Fault signals are unblocked so that a real fault crashes pilot visibly, but when pilot is
/// not PID 1 its payload can also send them: `kill -ABRT $PPID` (or a second SIGSEGV, after
/// Rust's handler reset the first) used to end pilot and orphan the payload.
#[test]
fn fault_signals_sent_by_the_payload_do_not_end_pilot() {
    let script = "for s in ABRT TRAP SYS FPE ILL SEGV SEGV BUS BUS; do kill -$s $PPID; done; sleep 0.2; exit 3";
    let out = Command::new(env!("CARGO_BIN_EXE_pilot")).args(["run", "--", "sh", "-c", script]).output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", String::from_utf8_lossy(&out.stderr));
}
