//! pilot as an HTCondor payload's entry point, vacated the way HTCondor does it: one signal
//! (SIGTERM, or the job's KillSig) to pilot, then SIGKILL to the whole family once
//! `MachineMaxVacateTime` has passed. Within that window pilot must stop its jobs in order,
//! deregister their services, run post-stop jobs and exit with the payload's status.

mod common;

use common::consul::Agent;
use common::*;
use std::process::Command;
use std::time::{Duration, Instant};

const VACATE: Duration = Duration::from_secs(10);

/// HTCondor's side: signal pilot, wait out the vacate time, then SIGKILL the family.
/// Returns pilot's exit code and how long it took, or None if it had to be killed.
fn vacate(p: Running, sig: i32) -> (Option<i32>, Duration) {
    let start = Instant::now();
    p.signal(sig);
    let mut p = p;
    loop {
        if let Some(st) = p.child.try_wait().unwrap() {
            return (st.code(), start.elapsed());
        }
        if start.elapsed() > VACATE {
            drop(p); // SIGKILL to the process group, as the starter kills the job's family
            return (None, start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn config(dir: &std::path::Path, consul: &str) -> String {
    let marker = dir.join("post-stop-ran");
    write_config(
        dir,
        &format!(
            r#"{{
  consul: "{consul}",
  stopTimeout: 2,
  jobs: [
    {{ name: "svc", exec: "sleep 1000", port: 9100, interfaces: ["static:127.0.0.1"], health: {{ exec: "true", interval: 1, ttl: 5 }} }},
    {{ name: "post", exec: ["sh", "-c", "echo done > {}"], when: {{ source: "svc", once: "stopped" }} }},
  ]
}}"#,
            marker.display()
        ),
    )
}

fn start(cfg: &str, payload: &str, ad: Option<&std::path::Path>) -> Running {
    let mut cmd = Command::new(pilot());
    cmd.args(["run", "-c", cfg, "--grace", "8s", "--", "sh", "-c", payload]).env_remove("_CONDOR_JOB_AD");
    if let Some(a) = ad {
        cmd.env("_CONDOR_JOB_AD", a);
    }
    Running::start(&mut cmd)
}

#[test]
fn vacate_stops_in_order_deregisters_runs_post_stop_and_keeps_the_payload_status() {
    let agent = Agent::dev();
    let dir = scratch("vacate");
    let cfg = config(&dir, &agent.addr());
    let p =
        start(&cfg, "trap 'echo payload got TERM; exit 3' TERM; echo payload up; while :; do sleep 0.1; done", None);
    p.expect_line(|l| l == "payload up", "payload");
    eventually(Duration::from_secs(20), "svc registered", || agent.services("svc").pop());
    let (code, took) = vacate(p, 15);
    assert_eq!(code, Some(3), "the payload's own exit status (took {took:?})");
    assert!(agent.services("svc").is_empty(), "deregistered before exit");
    assert_eq!(std::fs::read_to_string(dir.join("post-stop-ran")).unwrap().trim(), "done");
}

#[test]
fn a_payload_that_ignores_sigterm_is_killed_within_the_vacate_window() {
    let agent = Agent::dev();
    let dir = scratch("vacate-stubborn");
    let cfg = config(&dir, &agent.addr());
    let p = start(&cfg, "trap '' TERM; echo payload up; while :; do sleep 0.1; done", None);
    p.expect_line(|l| l == "payload up", "payload");
    eventually(Duration::from_secs(20), "svc registered", || agent.services("svc").pop());
    let (code, took) = vacate(p, 15);
    assert_eq!(code, Some(137), "SIGKILLed after stopTimeout: 128+9 (took {took:?})");
    assert!(took < VACATE, "pilot finished before HTCondor's SIGKILL: {took:?}");
    assert!(agent.services("svc").is_empty());
    assert!(dir.join("post-stop-ran").exists(), "post-stop job ran");
}

#[test]
fn the_job_ads_kill_sig_is_a_stop_signal() {
    let dir = scratch("killsig");
    std::fs::write(dir.join("job.ad"), "KillSig = \"SIGUSR1\"\nClusterId = 1\nProcId = 0\n").unwrap();
    let cfg = write_config(&dir, r#"{ stopTimeout: 1, jobs: [ { name: "helper", exec: "sleep 1000" } ] }"#);
    // The payload only notes USR1. Were USR1 merely forwarded, pilot would run on until
    // HTCondor's SIGKILL; as the stop signal, pilot stops everything within stopTimeout.
    let p = start(
        &cfg,
        "trap 'echo payload got USR1' USR1; echo payload up; while :; do sleep 0.1; done",
        Some(&dir.join("job.ad")),
    );
    p.expect_line(|l| l == "payload up", "payload");
    p.signal(10);
    p.expect_line(|l| l == "payload got USR1", "USR1 reaches the payload as its stop signal");
    let start = Instant::now();
    assert_eq!(p.wait(VACATE), 137, "an orderly stop: the payload was SIGKILLed after stopTimeout");
    assert!(
        start.elapsed() >= Duration::from_millis(900),
        "after stopTimeout, not a hurried kill: {:?}",
        start.elapsed()
    );
}

#[test]
fn grace_defaults_to_just_under_the_vacate_time_in_the_ads() {
    let dir = scratch("vacate-time");
    std::fs::write(dir.join("job.ad"), "ClusterId = 1\nProcId = 0\nJobMaxVacateTime = 4\n").unwrap();
    std::fs::write(dir.join("machine.ad"), "Name = \"slot1@wn\"\nMachineMaxVacateTime = 600\n").unwrap();
    // stopTimeout 10 s is longer than the job's 4 s vacate time: pilot must not wait for it.
    let cfg = write_config(&dir, r#"{ stopTimeout: 10, jobs: [] }"#);
    let mut cmd = Command::new(pilot());
    cmd.args(["run", "-c", &cfg, "--", "sh", "-c", "trap '' TERM; echo payload up; while :; do sleep 0.1; done"])
        .env("_CONDOR_JOB_AD", dir.join("job.ad"))
        .env("_CONDOR_MACHINE_AD", dir.join("machine.ad"))
        .env_remove("PILOT_GRACE");
    let p = Running::start(&mut cmd);
    p.expect_line(|l| l == "payload up", "payload");
    let (code, took) = vacate(p, 15);
    assert_eq!(code, Some(137));
    assert!(
        took >= Duration::from_millis(2500) && took < Duration::from_secs(4),
        "grace = 4 s - 1 s, before HTCondor's SIGKILL: {took:?}"
    );
}
