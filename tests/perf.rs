//! The run-time shape issue 14 asked for, as facts that could regress: the embedded default
//! is one thread (no signal, timer or log thread waiting for nothing), health checks do
//! not start threads, and start-up code is given back after start. No timing assertions:
//! threads and pages are counted, not measured.

mod common;

use common::*;
use std::collections::HashSet;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn tids(pid: u32) -> Vec<u32> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect())
        .unwrap_or_default()
}

/// A pilot SIGKILLed when dropped, with its own runtime directory (its default control socket
/// goes there, not into /tmp, where a killed pilot could not remove it).
struct Killed(std::process::Child, #[allow(dead_code)] tempfile::TempDir);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(args: &[&str]) -> Killed {
    let runtime = tempfile::Builder::new().prefix("pilot-perf-").tempdir().expect("a runtime directory");
    Killed(
        Command::new(pilot())
            .args(args)
            .env("TMPDIR", runtime.path())
            .env_remove("XDG_RUNTIME_DIR")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
        runtime,
    )
}

/// `pilot run -- CMD` with nothing to log is tini's shape: one thread. (It was four: the
/// signal thread, the timer thread and the log writer waited beside the supervisor.)
#[test]
fn the_embedded_default_is_one_thread() {
    let p = start(&["run", "--", "sleep", "30"]);
    let pid = p.0.id();
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(tids(pid).len(), 1, "threads of `pilot run -- sleep`: {:?}", tids(pid));
}

/// Health checks every 100 ms for 3 s, their output logged: the threads pilot has are the
/// same ones throughout (it used to start a thread per check to read its output).
#[test]
fn health_checks_start_no_threads() {
    let dir = scratch("perf-checks");
    let cfg = write_config(
        &dir,
        r#"{ jobs: [ { name: "web", exec: "sleep 30", health: { exec: ["sh", "-c", "echo checked"], interval: "100ms", ttl: 5 } } ] }"#,
    );
    let p = start(&["run", "-c", &cfg]);
    let pid = p.0.id();
    std::thread::sleep(Duration::from_millis(700));
    let mut seen = HashSet::new();
    let mut most = 0;
    let end = Instant::now() + Duration::from_secs(3);
    while Instant::now() < end {
        let now = tids(pid);
        most = most.max(now.len());
        seen.extend(now);
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(most > 0, "pilot is running");
    assert_eq!(seen.len(), most, "threads came and went while checks ran: {} seen, at most {most} at once", seen.len());
}

/// Two seconds after start, the pages of code only start-up used are no longer mapped.
#[test]
fn start_up_code_is_given_back() {
    let p = start(&["run", "--", "sleep", "30"]);
    let pid = p.0.id();
    std::thread::sleep(Duration::from_millis(500));
    let early = proc_status_kib(pid, "RssFile");
    std::thread::sleep(Duration::from_millis(3000));
    let late = proc_status_kib(pid, "RssFile");
    assert!(early > 0 && late < early * 2 / 3, "file-backed RSS {early} KiB at 0.5 s, {late} KiB at 3.5 s");
}

/// A pilot's anonymous memory with `config`, once `ready` holds and ten more checks ran.
fn anon_kib_after(config: &str, ready: impl Fn() -> bool) -> u64 {
    let dir = scratch("perf-anon");
    let cfg = write_config(&dir, config);
    let p = start(&["run", "-c", &cfg]);
    let end = Instant::now() + Duration::from_secs(30);
    while !ready() {
        assert!(Instant::now() < end, "pilot did not get ready: {config}");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_secs(1));
    proc_status_kib(p.0.id(), "RssAnon")
}

/// Registering in Consul costs little anonymous memory: the worker's pooled connection has
/// small buffers (16 KiB each; ureq's default 128 KiB each were allocated zeroed, so
/// resident). Measured on the debug build the tests run: +208 KiB over the same pilot
/// without a service, +440 KiB with ureq's default buffers.
#[test]
fn a_consul_connection_costs_small_buffers() {
    let agent = consul::Agent::dev();
    let job = |name: &str, service: &str| {
        format!(
            r#"{{ consul: "{}", jobs: [ {{ name: "{name}", exec: "sleep 30", {service} health: {{ exec: "true", interval: "100ms", ttl: 5 }} }} ] }}"#,
            agent.addr()
        )
    };
    let plain = anon_kib_after(&job("plain", ""), || true);
    let name = format!("perf-anon-{}", std::process::id());
    let service = r#"port: 8080, interfaces: ["static:127.0.0.1"],"#;
    let registered = anon_kib_after(&job(&name, service), || {
        agent.check_status(&name).iter().any(|(_, status, _)| status == "passing")
    });
    assert!(
        registered < plain + 320,
        "anonymous RSS with a Consul registration {registered} KiB, without {plain} KiB: the HTTP connection's buffers grew"
    );
}
