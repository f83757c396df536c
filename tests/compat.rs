//! Where pilot and ContainerPilot 3.8.0 were found to differ by running both on the same
//! file, and what pilot does about it (docs/containerpilot.md has the table of every
//! difference). These tests need only pilot: what ContainerPilot did is in the comments.

mod common;
use common::*;
use std::process::Command;
use std::time::Duration;

fn check(cfg: &str) -> (i32, String) {
    let out = run_limited(Command::new(pilot()).args(["check-config", "-c", cfg]), Duration::from_secs(10));
    (out.status.code().unwrap(), text(&out.stdout) + &text(&out.stderr))
}

/// ContainerPilot accepts `when: { each: "healthy" }` without a `source` and never starts the
/// job (it waits for a `healthy` event from a source named ""). Compatible: pilot accepts the
/// file too and never starts the job, but check-config says why.
#[test]
fn an_event_without_source_is_accepted_and_never_starts_the_job() {
    let dir = scratch("compat-no-source");
    let marker = dir.join("started");
    let cfg = write_config(
        &dir,
        &format!(
            r#"{{ jobs: [
                {{ name: "svc", exec: "sleep 30", health: {{ exec: "true", interval: "100ms", ttl: 5 }} }},
                {{ name: "on-healthy", exec: ["touch", "{}"], when: {{ each: "healthy" }} }},
            ] }}"#,
            marker.display()
        ),
    );
    let (code, out) = check(&cfg);
    assert_eq!(code, 0, "ContainerPilot accepts this file: {out}");
    assert!(
        out.contains("warning: jobs[1].when.source: is missing: no 'healthy' event comes without a source, so this job will never start"),
        "{out}"
    );
    let running = Running::start(Command::new(pilot()).args(["run", "-c", &cfg]));
    // svc is healthy every 100 ms: a job on "any healthy" would have started by now.
    std::thread::sleep(Duration::from_millis(1500));
    running.signal(15);
    assert_eq!(running.wait(Duration::from_secs(20)), 0);
    assert!(!marker.exists(), "a job waiting for an event of no source never starts");
}

/// ContainerPilot refuses `tags: "web"` (job or telemetry): its `[]string` fields take only
/// arrays. Compatible: so does pilot, saying how to write it (`tags: "a,b"` taken as one tag
/// would be a silent surprise).
#[test]
fn tags_must_be_an_array_as_in_containerpilot() {
    let dir = scratch("compat-tags");
    let cfg = write_config(
        &dir,
        r#"{ jobs: [{ name: "web", exec: "true", port: 8080, tags: "web", health: { interval: 1, ttl: 5 } }],
             telemetry: { port: 0, tags: "dev" } }"#,
    );
    let (code, out) = check(&cfg);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(r#"error: jobs[0].tags: expected an array of strings, got a string; write ["web"]"#), "{out}");
    assert!(
        out.contains(r#"error: telemetry.tags: expected an array of strings, got a string; write ["dev"]"#),
        "{out}"
    );
    let cfg = write_config(
        &dir,
        r#"{ jobs: [{ name: "web", exec: "true", port: 8080, tags: ["web"], health: { interval: 1, ttl: 5 } }],
             telemetry: { port: 0, tags: ["dev"] } }"#,
    );
    let (code, out) = check(&cfg);
    assert_eq!(code, 0, "{out}");
}

/// ContainerPilot accepts a lone string for a job's `interfaces` but refuses one for
/// `telemetry.interfaces`, although its docs say "a single interface or an array" for both.
/// Documented improvement: pilot takes a lone string in both places.
#[test]
fn a_lone_interface_string_is_accepted_in_both_places() {
    let dir = scratch("compat-interfaces");
    let cfg = write_config(
        &dir,
        r#"{ jobs: [{ name: "web", exec: "true", port: 8080, interfaces: "lo", health: { interval: 1, ttl: 5 } }],
             telemetry: { port: 0, interfaces: "lo" } }"#,
    );
    let (code, out) = check(&cfg);
    assert_eq!(code, 0, "{out}");
    let cfg = write_config(&dir, r#"{ jobs: [{ name: "a", exec: "true" }], telemetry: { interfaces: "lo:inet7" } }"#);
    let (code, out) = check(&cfg);
    assert_eq!(code, 1, "a lone string is still checked as a spec: {out}");
    assert!(out.contains("telemetry.interfaces[0]: 'lo:inet7' is not an interface spec"), "{out}");
}

/// ContainerPilot refuses to start at all when a job has a `port` and none of its interface
/// specs matches an address of the host ("none of the interface specifications were able to
/// match"): no job runs. Documented improvement: pilot runs every job and the payload, logs
/// an error naming the specs and the addresses it found, and leaves that service
/// unregistered. A batch payload is not lost because its monitoring has no address.
#[test]
fn a_port_no_interface_matches_runs_unregistered() {
    let dir = scratch("compat-no-interface");
    let marker = dir.join("side-ran");
    // No interface of that name, and 203.0.113.0/24 is TEST-NET-3 (RFC 5737), for
    // documentation only (this very machine has TEST-NET-1 on eth0). Port 1 on loopback:
    // nothing answers, whatever else runs on this machine.
    let cfg = write_config(
        &dir,
        &format!(
            r#"{{ consul: "127.0.0.1:1", jobs: [
                {{ name: "web", exec: "sleep 30", port: 8080, interfaces: ["pilotnone0", "203.0.113.0/24"],
                   health: {{ exec: "true", interval: 1, ttl: 5 }} }},
                {{ name: "side", exec: ["touch", "{}"] }},
            ] }}"#,
            marker.display()
        ),
    );
    let out = run_limited(
        Command::new(pilot()).args(["run", "-c", &cfg, "--", "sh", "-c", "sleep 1; exit 7"]),
        Duration::from_secs(30),
    );
    let log = text(&out.stdout) + &text(&out.stderr);
    assert_eq!(out.status.code(), Some(7), "the payload ran and its status is pilot's: {log}");
    assert!(marker.exists(), "the other jobs ran: {log}");
    assert!(
        log.contains(
            r#"job web: none of the interface specs ["pilotnone0", "203.0.113.0/24"] matches an address here"#
        ) && log.contains("its service is not registered"),
        "{log}"
    );
}

/// ContainerPilot 3.8.0's JSON5 parser (flynn/json5) ends a `/* */` comment at the first `/`
/// that follows a `*` inside it, so a comment like ` * see docs/x` fails to parse there.
/// Bug fix: pilot reads comments as JSON5 defines them.
#[test]
fn a_block_comment_with_a_star_and_a_slash_is_a_comment() {
    let dir = scratch("compat-comment");
    let cfg =
        write_config(&dir, "/*\n * see https://example.org/docs\n */\n{ jobs: [{ name: \"a\", exec: \"true\" }] }\n");
    let (code, out) = check(&cfg);
    assert_eq!(code, 0, "{out}");
}

/// The fixtures must stay valid for ContainerPilot 3.8.0 itself (the last column of their
/// README was observed with it): every one says which upstream document its behaviour comes
/// from, and none has a block comment that its JSON5 parser would end early (a `/` after a
/// `*` inside `/* */`, see the test above).
#[test]
fn the_fixtures_stay_readable_by_containerpilot() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/containerpilot");
    let mut n = 0;
    for dir in [root.to_string(), format!("{root}/mistakes")] {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if path.extension().is_none_or(|x| x != "json5") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            assert!(
                text.contains("https://github.com/TritonDataCenter/containerpilot/tree/master/docs"),
                "{}: cite the upstream document the behaviour comes from",
                path.display()
            );
            let mut rest = text.as_str();
            while let Some(start) = rest.find("/*") {
                let body = &rest[start + 2..];
                let end = body.find("*/").expect("an unterminated block comment");
                let comment = &body[..end];
                if let Some(star) = comment.find('*') {
                    assert!(
                        !comment[star..].contains('/'),
                        "{}: ContainerPilot 3.8.0 would end the comment /*{comment}*/ at its '/'",
                        path.display()
                    );
                }
                rest = &body[end + 2..];
            }
            n += 1;
        }
    }
    assert!(n >= 21, "15 valid configs and 6 mistakes, got {n}");
}
