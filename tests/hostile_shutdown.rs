//! Shutdown and reload against a hostile config or payload, with the real binary, as a child
//! subreaper and (where the namespace changes what pilot must do) as PID 1 of a new PID
//! namespace: dependency cycles, `--grace` as a bound on the whole shutdown, a second
//! SIGTERM, orphans that appear during the final sweep, background children of checks,
//! stopped payloads, crash loops, reloads during reloads, huge durations, `main` next to
//! `-- CMD`. (Issue 11, items 6, 17–20 and the restart items.)

mod common;
#[path = "common/hostile_shutdown.rs"]
mod hostile;

use common::*;
use hostile::*;
use std::process::Command;
use std::time::Duration;

/// Generous: "does not hang", not "is fast".
const LIMIT: Duration = Duration::from_secs(30);

const CYCLE: &str = r#"{ jobs: [
    { name: "a", exec: "true", when: { source: "b", once: "exitSuccess" } },
    { name: "b", exec: "true", when: { source: "a", once: "exitSuccess" } } ] }"#;

/// Jobs a and b each wait for the other: neither may stop first. pilot must still stop.
#[test]
fn a_dependency_cycle_does_not_hang_shutdown() {
    for how in BOTH {
        let dir = scratch(&format!("cycle-{how:?}"));
        let cfg = write_config(&dir, CYCLE);
        let mut p = Running::start(&mut pilot_cmd(how, &["run", "-c", &cfg, "--grace", "5s", "--", "sleep", "300"]));
        let pid = pilot_pid(how, &p);
        std::thread::sleep(Duration::from_millis(300));
        signal(pid, libc::SIGTERM);
        let (code, _) = wait_exit(&mut p, LIMIT).unwrap_or_else(|| panic!("{how:?}: pilot hung on a cycle"));
        assert_eq!(code, 128 + libc::SIGTERM, "{how:?}: the payload's status");
    }
}

/// A job that ignores SIGTERM with a long stopTimeout, a cycle, and a long grace: the
/// second SIGTERM ends it all at once.
#[test]
fn a_second_sigterm_hurries() {
    let dir = scratch("hurry");
    let cfg = write_config(
        &dir,
        r#"{ jobs: [
            { name: "a", exec: "true", when: { source: "b", once: "exitSuccess" } },
            { name: "b", exec: "true", when: { source: "a", once: "exitSuccess" } },
            { name: "stubborn", exec: ["sh", "-c", "trap '' TERM; while :; do sleep 0.1; done"], stopTimeout: "10m" } ] }"#,
    );
    let mut p = Running::start(Command::new(pilot()).args(["run", "-c", &cfg, "--grace", "10m"]));
    std::thread::sleep(Duration::from_millis(500));
    let pid = p.child.id() as i32;
    signal(pid, libc::SIGTERM);
    std::thread::sleep(Duration::from_millis(300));
    assert!(p.child.try_wait().unwrap().is_none(), "the stubborn job holds the first SIGTERM's orderly stop");
    signal(pid, libc::SIGTERM);
    assert!(wait_exit(&mut p, LIMIT).is_some(), "the second SIGTERM did not end pilot");
}

/// `--grace` bounds the *whole* shutdown: a job that ignores SIGTERM (stopTimeout far
/// longer than the grace) and a leftover daemon that ignores it too. Before, the sweep of
/// leftovers got a grace of its own after the jobs' (twice the grace in all).
#[test]
fn the_grace_bounds_the_whole_shutdown() {
    for how in BOTH {
        let dir = scratch(&format!("grace-{how:?}"));
        let daemon = dir.join("daemon");
        let cfg = write_config(
            &dir,
            r#"{ stopTimeout: "10m", jobs: [
                { name: "stubborn", exec: ["sh", "-c", "trap '' TERM; while :; do sleep 0.1; done"], stopTimeout: "10m" } ] }"#,
        );
        let payload = format!(
            "setsid sh -c 'trap \"\" TERM; echo $$ > {}; while :; do sleep 0.1; done' & sleep 300",
            daemon.display()
        );
        let grace = Duration::from_secs(4);
        let mut p =
            Running::start(&mut pilot_cmd(how, &["run", "-c", &cfg, "--grace", "4s", "--", "sh", "-c", &payload]));
        let pid = pilot_pid(how, &p);
        let daemon_pid = pid_in(&daemon);
        signal(pid, libc::SIGTERM);
        let (_, took) = wait_exit(&mut p, LIMIT).unwrap_or_else(|| panic!("{how:?}: pilot did not exit"));
        // The grace, plus what pilot documents beyond it (GIVE_UP, the late log drain),
        // plus slack for a loaded machine: well under twice the grace.
        assert!(took < grace + Duration::from_millis(2500), "{how:?}: shutdown took {took:?} with --grace 4s");
        if how == As::Subreaper {
            std::thread::sleep(Duration::from_millis(200));
            assert!(!alive(daemon_pid), "the daemon {daemon_pid} outlived pilot");
        }
    }
}

/// "No strays": a leftover (in its own session, ignoring SIGTERM) holds a grandchild that
/// handles SIGTERM. When pilot SIGKILLs the leftover, the grandchild is reparented to pilot
/// *after* the sweep looked: it must still get SIGTERM, and must not outlive pilot.
#[test]
fn orphans_reparented_during_the_sweep_get_sigterm_and_none_outlives_pilot() {
    for how in BOTH {
        let dir = scratch(&format!("strays-{how:?}"));
        let (grandchild, marker) = (dir.join("grandchild"), dir.join("got-term"));
        let cfg = write_config(&dir, r#"{ stopTimeout: "1s" }"#);
        let grandchild_script = format!(
            "trap \"echo yes > {}; exit 0\" TERM; echo $$ > {}; while :; do sleep 0.1; done",
            marker.display(),
            grandchild.display()
        );
        // Caught, not ignored: an ignored SIGTERM would be inherited (and untrappable) in
        // the grandchild's shell.
        let leftover = format!("trap : TERM; setsid sh -c '{grandchild_script}' & while :; do sleep 0.1; done");
        let leftover_file = dir.join("leftover.sh");
        std::fs::write(&leftover_file, leftover).unwrap();
        let payload = format!("setsid sh {} & sleep 0.5; exit 0", leftover_file.display());
        let mut p =
            Running::start(&mut pilot_cmd(how, &["run", "-c", &cfg, "--grace", "10s", "--", "sh", "-c", &payload]));
        let g = pid_in(&grandchild);
        assert!(wait_exit(&mut p, LIMIT).is_some(), "{how:?}: pilot did not exit");
        if how == As::Subreaper {
            // (As PID 1 the pid is the namespace's, and the kernel kills what is left of a
            // namespace whose init exits; what matters there is the SIGTERM first.)
            let gone = (0..50).any(|_| {
                std::thread::sleep(Duration::from_millis(20));
                !alive(g)
            });
            assert!(gone, "{how:?}: grandchild {g} outlived pilot");
        }
        assert!(marker.exists(), "{how:?}: the grandchild was killed without a SIGTERM first");
    }
}

/// Background children of a health check (`sleep 300 &`) end with the check, as in
/// ContainerPilot: they must not pile up, nor the threads logging their output.
#[test]
fn background_children_of_checks_and_jobs_do_not_pile_up() {
    let dir = scratch("pileup");
    let cfg = write_config(
        &dir,
        r#"{ jobs: [
            { name: "web", exec: "sleep 300", health: { exec: ["sh", "-c", "sleep 300 & true"], interval: 1, ttl: 5 } },
            { name: "tick", exec: ["sh", "-c", "sleep 301 & true"], when: { interval: "1s" }, restarts: "unlimited" } ] }"#,
    );
    let p = Running::start(Command::new(pilot()).args(["run", "-c", &cfg]));
    let pid = p.child.id() as i32;
    std::thread::sleep(Duration::from_secs(7));
    let sleeps: Vec<String> = children(pid).into_iter().map(cmdline).filter(|c| c.starts_with("sleep 30")).collect();
    // One thread follows every job's output pipe: what would pile up is pilot's threads.
    let all = threads(pid);
    assert!(sleeps.len() <= 3, "background sleeps pile up under pilot: {sleeps:?}");
    assert!(all.len() <= 6, "{} threads after 7 s: {all:?}", all.len());
}

/// A payload stopped with SIGSTOP gets SIGCONT after its SIGTERM, so it can handle it
/// (exit 0) instead of being SIGKILLed after its stop timeout.
#[test]
fn a_stopped_payload_is_continued_after_its_stop_signal() {
    let dir = scratch("stopped");
    let cfg = write_config(&dir, r#"{ stopTimeout: "20s" }"#);
    let payload = "trap 'echo got-term; exit 0' TERM; echo ready $$; kill -STOP $$; while :; do sleep 0.1; done";
    let mut p = Running::start(Command::new(pilot()).args(["run", "-c", &cfg, "--", "sh", "-c", payload]));
    let ready = p.expect_line(|l| l.starts_with("ready "), "ready");
    let sh: i32 = ready[6..].trim().parse().unwrap();
    eventually(Duration::from_secs(10), "the payload stopped", || stat(sh).filter(|f| f[0] == "T"));
    signal(p.child.id() as i32, libc::SIGTERM);
    let (code, took) = wait_exit(&mut p, LIMIT).expect("pilot exits");
    assert_eq!(code, 0, "the payload handled SIGTERM (not SIGKILLed after 20 s: took {took:?})");
}

/// `restarts: "unlimited"` and a job that fails at once: restarted, but with a backoff,
/// so pilot's CPU time stays small. Before: ~935 restarts a second, a core busy.
#[test]
fn a_crash_loop_is_restarted_with_backoff_and_costs_little_cpu() {
    let dir = scratch("crashloop");
    let runs = dir.join("runs");
    let cfg = write_config(
        &dir,
        &format!(
            r#"{{ jobs: [ {{ name: "crash", exec: ["sh", "-c", "echo x >> {}; exit 1"], restarts: "unlimited" }} ] }}"#,
            runs.display()
        ),
    );
    let p = Running::start(Command::new(pilot()).args(["run", "-c", &cfg]));
    let pid = p.child.id() as i32;
    std::thread::sleep(Duration::from_millis(300));
    let before = cpu_ticks(pid as u32);
    std::thread::sleep(Duration::from_secs(4));
    let used = cpu_ticks(pid as u32) - before;
    let n = std::fs::read_to_string(&runs).unwrap_or_default().lines().count();
    assert!(n >= 4, "the job must still be restarted: {n} runs");
    assert!(n <= 40, "{n} runs in ~4.3 s: no backoff");
    let hz = clock_ticks_per_second();
    assert!(used * 4 < hz, "pilot used {used} ticks ({hz}/s) in 4 s of a crash loop");
}

/// `restarts` in `pilot status` counts restarts, not the runs of an interval job.
#[test]
fn status_counts_restarts_not_interval_runs() {
    let dir = scratch("restarts-status");
    let sock = dir.join("pilot.sock");
    let cfg = write_config(
        &dir,
        &format!(
            r#"{{ control: {{ socket: "{}" }}, jobs: [
                {{ name: "tick", exec: "true", when: {{ interval: "200ms" }}, restarts: "unlimited" }},
                {{ name: "flaky", exec: ["sh", "-c", "exit 1"], restarts: 2 }} ] }}"#,
            sock.display()
        ),
    );
    let _p = Running::start(Command::new(pilot()).args(["run", "-c", &cfg]));
    std::thread::sleep(Duration::from_millis(1500));
    let out =
        run_limited(Command::new(pilot()).args(["status", "--json", "--socket", &sock.display().to_string()]), LIMIT);
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out.stdout)));
    let job = |name: &str| v["jobs"].as_array().unwrap().iter().find(|j| j["name"] == name).unwrap().clone();
    assert!(job("tick")["runs"].as_u64().unwrap() >= 3, "{v}");
    assert_eq!(job("tick")["restarts"], 0, "interval runs are not restarts: {v}");
    assert_eq!(job("flaky")["restarts"], 2, "{v}");
    let table = run_limited(Command::new(pilot()).args(["status", "--socket", &sock.display().to_string()]), LIMIT);
    let table = text(&table.stdout);
    let tick: Vec<&str> =
        table.lines().find(|l| l.starts_with("tick ")).expect("a row for tick").split_whitespace().collect();
    assert_eq!(tick.get(3), Some(&"0"), "RESTARTS column of tick: {table}");
}

/// Two reloads while the old jobs are still stopping: the second must not be dropped; the
/// newest config is the one that runs.
#[test]
fn a_reload_during_a_reload_runs_the_newest_config() {
    let dir = scratch("reload2");
    let sock = dir.join("pilot.sock");
    let marker = |n: &str| dir.join(n);
    let config = |job: &str, exec: &str| {
        format!(
            r#"{{ control: {{ socket: "{}" }}, jobs: [ {{ name: "{job}", exec: ["sh", "-c", "{exec}"] }} ] }}"#,
            sock.display()
        )
    };
    // The first config's job takes 2 s to stop, so both reloads arrive during its stop.
    let cfg = write_config(&dir, &config("old", "trap 'sleep 2; exit 0' TERM; while :; do sleep 0.1; done"));
    let _p = Running::start(Command::new(pilot()).args(["run", "-c", &cfg, "--", "sleep", "300"]));
    let socket = sock.display().to_string();
    eventually(Duration::from_secs(10), "the control socket", || sock.exists().then_some(()));
    std::thread::sleep(Duration::from_millis(300));
    let reload = || run_limited(Command::new(pilot()).args(["reload", "--socket", &socket]), LIMIT);
    write_config(&dir, &config("second", &format!("touch {}; sleep 300", marker("second").display())));
    assert!(reload().status.success());
    std::thread::sleep(Duration::from_millis(200));
    write_config(&dir, &config("third", &format!("touch {}; sleep 300", marker("third").display())));
    assert!(reload().status.success());
    eventually(Duration::from_secs(15), "the newest config's job ran", || marker("third").exists().then_some(()));
    assert!(!marker("second").exists(), "the config replaced by a newer reload must not run");
}

/// Durations beyond what a clock can hold (from a config or --grace) must never panic pilot.
#[test]
fn huge_durations_do_not_panic() {
    let dir = scratch("huge");
    let cfg = write_config(
        &dir,
        r#"{ stopTimeout: "2562047h", jobs: [ { name: "slow", exec: "sleep 300", timeout: "3000000000000000h", stopTimeout: "3000000000000000h" } ] }"#,
    );
    let mut p = Running::start(Command::new(pilot()).args([
        "run",
        "-c",
        &cfg,
        "--grace",
        "3000000000000000h",
        "--",
        "sleep",
        "1",
    ]));
    // Whether the parser refuses such durations (exit 1/2) or pilot runs with them as
    // "never", it must not panic (101) nor hang.
    let (code, _) = wait_exit(&mut p, LIMIT).expect("pilot hung");
    assert_ne!(code, 101, "pilot panicked");
    assert!([0, 1, 2].contains(&code), "exit {code}");
}

/// The payload's job is called `main`: a config job of that name next to `-- CMD` is a
/// clear error at start, not a silent clash of event sources.
#[test]
fn a_config_job_named_main_next_to_a_payload_is_an_error() {
    let dir = scratch("main-clash");
    let cfg = write_config(&dir, r#"{ jobs: [ { name: "main", exec: "true" } ] }"#);
    let out = run_limited(Command::new(pilot()).args(["run", "-c", &cfg, "--", "true"]), LIMIT);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(err.contains("'main'") && err.contains("payload") && err.contains(&cfg), "{err}");
    // Without a payload the name is free.
    let out = run_limited(Command::new(pilot()).args(["run", "-c", &cfg]), LIMIT);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

/// A reload whose old jobs never finish stopping (a post-stop hook that hangs: hooks have
/// no stop timeout) is bounded by the grace like a shutdown: the hook is killed, the new
/// config starts, the payload keeps running.
#[test]
fn a_reload_whose_old_jobs_hang_still_starts_the_new_config() {
    let dir = scratch("reload-hang");
    let sock = dir.join("pilot.sock");
    let marker = dir.join("new-config-ran");
    let cfg = write_config(
        &dir,
        &format!(
            r#"{{ control: {{ socket: "{}" }}, jobs: [
                {{ name: "app", exec: "sleep 300" }},
                {{ name: "hangs", exec: "sleep 300", when: {{ source: "app", once: "stopped" }} }} ] }}"#,
            sock.display()
        ),
    );
    let mut p = Running::start(Command::new(pilot()).args(["run", "-c", &cfg, "--grace", "2s", "--", "sleep", "300"]));
    eventually(Duration::from_secs(10), "the control socket", || sock.exists().then_some(()));
    write_config(
        &dir,
        &format!(
            r#"{{ control: {{ socket: "{}" }}, jobs: [ {{ name: "new", exec: ["sh", "-c", "touch {}; sleep 300"] }} ] }}"#,
            sock.display(),
            marker.display()
        ),
    );
    let out = run_limited(Command::new(pilot()).args(["reload", "--socket", &sock.display().to_string()]), LIMIT);
    assert!(out.status.success(), "{}", text(&out.stderr));
    eventually(Duration::from_secs(15), "the new config's job ran", || marker.exists().then_some(()));
    assert!(p.child.try_wait().unwrap().is_none(), "pilot and its payload still run");
}
