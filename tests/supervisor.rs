//! Jobs as ContainerPilot runs them, with the real binary and real processes: restarts,
//! periodic jobs, ordering, health-check timeouts, shutdown order and SIGKILL escalation,
//! and ContainerPilot v3 configs of tests/fixtures/containerpilot run unchanged.

mod common;
use common::*;
use std::process::Command;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(30);

fn lines(path: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(path).unwrap_or_default().lines().map(str::to_string).collect()
}

fn run_config(cfg: &str) -> std::process::Output {
    run_limited(Command::new(pilot()).args(["run", "-c", cfg]), LIMIT)
}

#[test]
fn job_is_restarted_n_times_then_given_up() {
    let dir = scratch("restarts");
    let log = dir.join("runs");
    let cfg = write_config(
        &dir,
        &format!(
            r#"{{ jobs: [{{ name: "flaky", exec: ["sh", "-c", "echo run >> {}; exit 1"], restarts: 3 }}] }}"#,
            log.display()
        ),
    );
    let out = run_config(&cfg);
    assert_eq!(lines(&log).len(), 4, "restarts: 3 means four runs");
    assert_eq!(out.status.code(), Some(0), "natural termination with no payload exits 0");
}

#[test]
fn periodic_job_runs_on_its_interval() {
    let dir = scratch("periodic");
    let log = dir.join("ticks");
    let cfg = write_config(
        &dir,
        &format!(
            r#"{{ jobs: [{{ name: "tick", exec: ["sh", "-c", "date +%s.%N >> {}"], when: {{ interval: "300ms" }}, restarts: 4 }}] }}"#,
            log.display()
        ),
    );
    let start = std::time::Instant::now();
    run_config(&cfg);
    let ticks = lines(&log);
    assert_eq!(ticks.len(), 5, "restarts: 4 on an interval job means five runs: {ticks:?}");
    assert!(
        start.elapsed() >= Duration::from_millis(1100),
        "runs were spaced by the interval, took {:?}",
        start.elapsed()
    );
}

#[test]
fn dependency_order_is_respected() {
    let dir = scratch("order");
    let log = dir.join("order");
    let l = log.display();
    let cfg = write_config(
        &dir,
        &format!(
            r#"{{ jobs: [
                {{ name: "third", exec: ["sh", "-c", "echo third >> {l}"], when: {{ source: "second", once: "exitSuccess" }} }},
                {{ name: "second", exec: ["sh", "-c", "echo second >> {l}"], when: {{ source: "first", once: "healthy" }} }},
                {{ name: "first", exec: ["sh", "-c", "echo first >> {l}; sleep 2"],
                   health: {{ exec: "true", interval: "200ms", ttl: 5 }} }},
            ] }}"#
        ),
    );
    run_config(&cfg);
    assert_eq!(lines(&log), vec!["first", "second", "third"]);
}

#[test]
fn health_check_that_times_out_is_unhealthy() {
    let dir = scratch("health-timeout");
    let log = dir.join("events");
    let l = log.display();
    let cfg = write_config(
        &dir,
        &format!(
            r#"{{ jobs: [
                {{ name: "svc", exec: "sleep 3", health: {{ exec: "sleep 10", interval: 1, ttl: 5, timeout: "200ms" }} }},
                {{ name: "alarm", exec: ["sh", "-c", "echo unhealthy >> {l}"], when: {{ source: "svc", once: "unhealthy" }} }},
            ] }}"#
        ),
    );
    let start = std::time::Instant::now();
    let out = run_config(&cfg);
    assert_eq!(lines(&log), vec!["unhealthy"], "{}", text(&out.stdout));
    assert!(text(&out.stdout).contains("health check for svc timed out"), "{}", text(&out.stdout));
    assert!(start.elapsed() < Duration::from_secs(8), "a hung check (sleep 10) never blocks pilot");
}

#[test]
fn shutdown_stops_in_reverse_dependency_order_and_escalates_to_sigkill() {
    let dir = scratch("shutdown");
    let log = dir.join("log");
    let l = log.display();
    let cfg = write_config(
        &dir,
        &format!(
            r#"{{ stopTimeout: 1, jobs: [
                {{ name: "db", exec: ["sh", "-c", "trap 'echo db-term >> {l}; exit 0' TERM; echo db-up >> {l}; while :; do sleep 0.1; done"],
                   health: {{ exec: "true", interval: "100ms", ttl: 5 }} }},
                {{ name: "app", exec: ["sh", "-c", "trap 'echo app-term-ignored >> {l}' TERM; echo app-up >> {l}; while :; do sleep 0.1; done"],
                   when: {{ source: "db", once: "healthy" }}, stopTimeout: "700ms" }},
                {{ name: "post", exec: ["sh", "-c", "echo post-stop >> {l}"], when: {{ source: "db", once: "stopped" }} }},
            ] }}"#
        ),
    );
    let running = Running::start(Command::new(pilot()).args(["run", "-c", &cfg]));
    for _ in 0..100 {
        if lines(&log).contains(&"app-up".to_string()) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let started = std::time::Instant::now();
    running.signal(15);
    assert_eq!(running.wait(LIMIT), 0);
    let took = started.elapsed();
    assert_eq!(lines(&log), vec!["db-up", "app-up", "app-term-ignored", "db-term", "post-stop"]);
    assert!(took >= Duration::from_millis(700), "app got its stopTimeout before SIGKILL ({took:?})");
    assert!(took < Duration::from_secs(4), "and no more: stop timeouts are upper bounds ({took:?})");
}

#[test]
fn payload_exit_stops_jobs_and_sets_the_status() {
    let dir = scratch("payload");
    let log = dir.join("log");
    let cfg = write_config(
        &dir,
        &format!(
            r#"{{ jobs: [
                {{ name: "sidecar", exec: "sleep 300" }},
                {{ name: "ship-logs", exec: ["sh", "-c", "echo shipped >> {}"], when: {{ source: "main", once: "stopped" }} }},
            ] }}"#,
            log.display()
        ),
    );
    let start = std::time::Instant::now();
    let out = run_limited(Command::new(pilot()).args(["run", "-c", &cfg, "--", "sh", "-c", "exit 9"]), LIMIT);
    assert_eq!(out.status.code(), Some(9));
    assert_eq!(lines(&log), vec!["shipped"]);
    assert!(start.elapsed() < Duration::from_secs(3), "sidecar stopped with SIGTERM, no waiting out timeouts");
}

#[test]
fn containerpilot_sigterm_test_runs_unchanged() {
    // As ContainerPilot's own SIGTERM integration test: the pre-stop job on app's stopping,
    // the post-stop job on its stopped, in that order.
    let running =
        Running::start(Command::new(pilot()).args(["run", "-c", &fixture("containerpilot/sigterm-stop-hooks.json5")]));
    running.expect_line(
        |l| l.contains("job main") || l.contains("job app started") || l.contains("event {startup"),
        "startup",
    );
    std::thread::sleep(Duration::from_millis(300));
    running.signal(15);
    let pre = running.expect_line(|l| l.contains("before-stop ran: app is stopping"), "pre-stop output");
    assert!(
        pre.contains("job=before-stop") && pre.contains("msg=\"'before-stop ran"),
        "text format with job field: {pre}"
    );
    running.expect_line(|l| l.contains("after-stop ran: app has stopped"), "post-stop output");
    assert_eq!(running.wait(LIMIT), 0);
}

#[test]
fn containerpilot_sighup_test_runs_unchanged() {
    let running =
        Running::start(Command::new(pilot()).args(["run", "-c", &fixture("containerpilot/signal-events.json5")]));
    running.expect_line(|l| l.contains("event {startup"), "startup");
    running.signal(1);
    running.expect_line(|l| l.contains("'on-hangup ran for SIGHUP"), "on-hangup output");
    running.signal(12);
    running.expect_line(|l| l.contains("'on-user2 ran for SIGUSR2"), "on-user2 output");
    running.signal(15);
    assert_eq!(running.wait(LIMIT), 0);
}

#[test]
fn containerpilot_tasks_test_counts() {
    // As ContainerPilot's tasks integration test: short and short-with-timeout run 6 times
    // with no timeouts, always-killed 6 times all timed out, forever (no restarts given:
    // unlimited) more than once.
    let dir = scratch("tasks");
    let task = dir.join("task.sh");
    std::fs::write(&task, "#!/bin/sh\necho start >> \"$2\"\nsleep \"$1\"\necho end >> \"$2\"\n").unwrap();
    Command::new("chmod").arg("+x").arg(&task).status().unwrap();
    let mut text_cfg = std::fs::read_to_string(fixture("containerpilot/interval-tasks.json5")).unwrap();
    text_cfg = text_cfg.replace("\"/task.sh\"", &format!("\"{}\"", task.display()));
    for n in ["short", "short-with-timeout", "always-killed", "forever"] {
        text_cfg = text_cfg.replace(&format!("\"/{n}.txt\""), &format!("\"{}/{n}.txt\"", dir.display()));
    }
    let cfg = write_config(&dir, &text_cfg);
    let running = Running::start(Command::new(pilot()).args(["run", "-c", &cfg]));
    std::thread::sleep(Duration::from_millis(4500));
    running.signal(15);
    running.wait(LIMIT);
    let count = |n: &str, what: &str| lines(&dir.join(format!("{n}.txt"))).iter().filter(|l| *l == what).count();
    assert_eq!((count("short", "start"), count("short", "end")), (6, 6), "short");
    assert_eq!(
        (count("short-with-timeout", "start"), count("short-with-timeout", "end")),
        (6, 6),
        "short-with-timeout"
    );
    assert_eq!((count("always-killed", "start"), count("always-killed", "end")), (6, 0), "every run timed out");
    assert!(count("forever", "start") >= 2, "forever ran more than once");
}

#[test]
fn every_containerpilot_fixture_runs_and_stops_cleanly() {
    // Each valid v3 fixture, run as it is but for the agent's address (port 1 on loopback:
    // nothing answers, whatever else runs on this machine), telemetry ports and the log
    // file's path; most of
    // their programs do not exist here, which a supervisor must survive too. All at once,
    // then SIGTERM: each must be running its config (or have ended naturally) and stop with
    // status 0.
    let dir = scratch("fixtures-run");
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/containerpilot");
    let mut running = Vec::new();
    for entry in std::fs::read_dir(fixtures).unwrap().flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|x| x != "json5") {
            continue;
        }
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&path).unwrap();
        let text = text
            .replace("\"localhost:8500\"", "\"127.0.0.1:1\"")
            .replace("\"consul:8500\"", "\"127.0.0.1:1\"")
            // Telemetry on an ephemeral port: 9090 may be another test's Prometheus.
            .replace("port: 9090,", "port: 0,")
            .replace("port: 9000,", "port: 0,")
            .replace("/tmp/pilot-fixture.log", &dir.join(format!("{name}.log")).display().to_string());
        let cfg = dir.join(format!("{name}.json5"));
        std::fs::write(&cfg, text).unwrap();
        let r = Running::start(
            Command::new(pilot())
                .args(["run", "-c", cfg.to_str().unwrap()])
                .env("CONSUL", "consul")
                .env("APP_PORT", "8000"),
        );
        running.push((name, r));
    }
    assert!(running.len() >= 15, "the compatibility set");
    std::thread::sleep(Duration::from_millis(1500));
    for (name, mut r) in running {
        // A config whose jobs all end (their programs are missing here) ends naturally,
        // with 0; a refused config would have ended with 1.
        if let Some(status) = r.child.try_wait().unwrap() {
            assert_eq!(status.code(), Some(0), "{name}: ended on its own, but not as a natural end");
            continue;
        }
        r.signal(15);
        assert_eq!(r.wait(LIMIT), 0, "{name}: an orderly stop");
    }
}
