//! HTCondor's job and machine ads, written by HTCondor's own Python bindings (PyPI
//! `htcondor`), read by pilot: the parser agrees value by value, templates see the fields,
//! and Consul service meta carries the job's identity.

mod common;

use common::consul::Agent;
use common::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

fn htcondor_python() -> PathBuf {
    if let Ok(p) = std::env::var("PILOT_HTCONDOR_PYTHON") {
        return PathBuf::from(p);
    }
    let cache = std::env::var("PILOT_CACHE").map(PathBuf::from).unwrap_or_else(|_| {
        let base = std::env::var("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|_| PathBuf::from(std::env::var("HOME").unwrap()).join(".cache"));
        base.join("pilot")
    });
    let py = cache.join("htcondor-venv/bin/python");
    let ok = Command::new(&py).args(["-c", "import classad2"]).output().map(|o| o.status.success()).unwrap_or(false);
    assert!(
        ok,
        "this test needs HTCondor's Python bindings in {}: run scripts/setup-test-deps.sh (pip installs htcondor from PyPI)",
        py.display()
    );
    py
}

/// Write the ads into `dir`; returns what HTCondor says the job ad's literal values are.
fn write_ads(dir: &Path) -> BTreeMap<String, String> {
    let out =
        run_limited(Command::new(htcondor_python()).arg(fixture("write_ads.py")).arg(dir), Duration::from_secs(30));
    assert!(out.status.success(), "{}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn the_parser_agrees_with_htcondor_value_by_value() {
    let dir = scratch("ads");
    let expected = write_ads(&dir);
    let text_ad = std::fs::read_to_string(dir.join("job.ad")).unwrap();
    let ad = pilot::htcondor::classad::parse(&text_ad, "job.ad").unwrap();
    for (k, v) in &expected {
        assert_eq!(ad.text(k).as_deref(), Some(v.as_str()), "{k} in:\n{text_ad}");
    }
    assert!(ad.text("Requirements").unwrap().contains("TARGET.Arch == \"X86_64\""));
    assert_eq!(ad.len(), expected.len() + 1);
}

#[test]
fn templates_see_the_ads() {
    let dir = scratch("ads-template");
    write_ads(&dir);
    let cfg = write_config(
        &dir,
        r#"{ jobs: [{ name: "a", exec: ["echo", "{{ .CONDOR_JOB_GlobalJobId }}|{{ .CONDOR_JOB_ClusterId }}.{{ .CONDOR_JOB_ProcId }}|{{ .CONDOR_MACHINE_Name }}"] }] }"#,
    );
    let out = run_limited(
        Command::new(pilot())
            .args(["run", "-c", &cfg])
            .env("_CONDOR_JOB_AD", dir.join("job.ad"))
            .env("_CONDOR_MACHINE_AD", dir.join("machine.ad")),
        Duration::from_secs(10),
    );
    let all = text(&out.stdout) + &text(&out.stderr);
    assert!(all.contains("submit01.example.org#4242.7#1764000000|4242.7|slot1_3@wn042.example.org"), "{all}");
}

#[test]
fn job_ad_fields_reach_consul_meta() {
    let agent = Agent::dev();
    let dir = scratch("ads-consul");
    write_ads(&dir);
    let cfg = write_config(
        &dir,
        &format!(
            r#"{{ consul: "{}", jobs: [{{ name: "payload-svc", exec: "sleep 1000", port: 9000, interfaces: ["static:127.0.0.1"],
                 health: {{ exec: "true", interval: 1, ttl: 5 }} }}] }}"#,
            agent.addr()
        ),
    );
    let mut cmd = Command::new(pilot());
    cmd.args(["run", "-c", &cfg])
        .env("_CONDOR_JOB_AD", dir.join("job.ad"))
        .env("_CONDOR_MACHINE_AD", dir.join("machine.ad"))
        .env("_CONDOR_SLOT", "slot1_3")
        .env_remove("PILOT_INSTANCE");
    let _p = Running::start(&mut cmd);
    let s = eventually(Duration::from_secs(20), "registered", || agent.services("payload-svc").pop());
    let meta = &s["Meta"];
    assert_eq!(meta["htcondor_global_job_id"], "submit01.example.org#4242.7#1764000000");
    assert_eq!(meta["htcondor_job_id"], "4242.7");
    assert_eq!(meta["htcondor_owner"], "atlasprd");
    assert_eq!(meta["htcondor_slot_name"], "slot1_3@wn042.example.org");
    assert_eq!(meta["htcondor_slot"], "slot1_3");
}

#[test]
fn a_broken_ad_is_reported_and_left_out() {
    let dir = scratch("ads-broken");
    std::fs::write(dir.join("job.ad"), "GlobalJobId = \"x\"\nnot an attribute line\n").unwrap();
    let out = run_limited(
        Command::new(pilot())
            .args(["run", "--", "true"])
            .env("_CONDOR_JOB_AD", dir.join("job.ad"))
            .env("RUST_LOG", "warn"),
        Duration::from_secs(10),
    );
    assert_eq!(out.status.code(), Some(0), "the payload runs regardless");
    let err = text(&out.stderr);
    assert!(err.contains("HTCondor ad left out") && err.contains("job.ad:2: expected 'Name = value'"), "{err}");
}
