//! The supervisor never waits on a file system: with a program, a `#!` interpreter or a PATH
//! entry on a mount that never answers (a hung CVMFS or NFS, here a FUSE mount nobody
//! serves, `common::fuse`), pilot as PID 1 still forwards signals, runs and reports the
//! other jobs' checks, answers `pilot status` and ends within its grace on SIGTERM. Each of
//! these hung pilot's supervisor thread before the spawn child took over the PATH search and
//! the diagnosis (the thread was suspended in a vfork-style clone, or stat'ed PATH itself).
//!
//! No timing assertions: generous limits for "does not hang" only.

mod common;
use common::fuse::{HungMount, pilot_pid};
use common::*;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(40);

/// `pilot status` against `socket` answers (the supervisor replied).
fn status_answers(socket: &Path) {
    let out = run_limited(Command::new(pilot()).args(["status", "--socket"]).arg(socket), LIMIT);
    assert!(out.status.success(), "pilot status: {}{}", text(&out.stdout), text(&out.stderr));
}

/// SIGTERM to pilot (PID 1 inside, unshare's child outside) ends it within its grace.
fn sigterm_ends_pilot(r: Running) -> i32 {
    let pilot_pid = pilot_pid(r.child.id());
    assert!(pilot::init::kill(pilot_pid, libc::SIGTERM, false), "SIGTERM to pilot");
    r.wait(LIMIT)
}

/// A payload that says "ready", then says "got-usr1" for each SIGUSR1 it receives.
const TRAPPER: &str = "trap 'echo got-usr1' USR1; echo ready; while :; do sleep 0.1; done";

fn start(hung: &HungMount, args: &[&str], env: &[(&str, &str)], socket: &Path) -> Running {
    let r = hung.start(args, env);
    eventually(LIMIT, "pilot's control socket", || socket.exists().then_some(()));
    r
}

fn control(socket: &Path) -> String {
    format!(r#"control: {{ socket: "{}" }}"#, socket.display())
}

#[test]
fn a_payload_on_a_hung_mount_does_not_hold_up_pilot() {
    let dir = scratch("hung-payload");
    let hung = HungMount::new(&dir);
    let socket = dir.join("pilot.sock");
    let cfg = write_config(&dir, &format!("{{ {}, jobs: [] }}", control(&socket)));
    let payload = hung.path("payload");
    let r = start(&hung, &["run", "--grace", "5s", "-c", &cfg, "--", &payload], &[], &socket);
    std::thread::sleep(Duration::from_secs(1));
    status_answers(&socket);
    // The payload's child, stuck in its execve, dies of the forwarded SIGTERM: 128 + 15.
    assert_eq!(sigterm_ends_pilot(r), 143);
}

#[test]
fn a_check_whose_interpreter_is_on_a_hung_mount_holds_up_nothing_else() {
    let dir = scratch("hung-interpreter");
    let hung = HungMount::new(&dir);
    let socket = dir.join("pilot.sock");
    let check = dir.join("check.sh");
    std::fs::write(&check, format!("#!{}\nexit 0\n", hung.path("sh"))).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&check, std::fs::Permissions::from_mode(0o755)).unwrap();
    let ticks = dir.join("ticks");
    let cfg = write_config(
        &dir,
        &format!(
            r#"{{ consul: "127.0.0.1:1", {}, jobs: [
                {{ name: "app", exec: "sleep 1000", port: 8080, interfaces: ["static:127.0.0.1"],
                   health: {{ exec: "{}", interval: 1, ttl: 10, timeout: "2s" }} }},
                {{ name: "other", exec: "sleep 1000", port: 8081, interfaces: ["static:127.0.0.1"],
                   health: {{ exec: ["sh", "-c", "echo x >> {}"], interval: 1, ttl: 10 }} }} ] }}"#,
            control(&socket),
            check.display(),
            ticks.display()
        ),
    );
    let r = start(&hung, &["run", "-c", &cfg, "--", "sh", "-c", TRAPPER], &[], &socket);
    r.expect_line_within(|l| l == "ready", "ready", LIMIT);
    // The first checks run 1 s after start: the hung one is stuck in its execve by now.
    std::thread::sleep(Duration::from_secs(3));
    let count = || std::fs::read_to_string(&ticks).map(|t| t.lines().count()).unwrap_or(0);
    let before = count();
    let pilot_pid = pilot_pid(r.child.id());
    assert!(pilot::init::kill(pilot_pid, libc::SIGUSR1, false));
    r.expect_line_within(|l| l == "got-usr1", "the forwarded SIGUSR1", LIMIT);
    status_answers(&socket);
    eventually(LIMIT, "the other job's check to keep running", || (count() >= before + 2).then_some(()));
    assert_eq!(sigterm_ends_pilot(r), 143, "the payload ends with the forwarded SIGTERM");
}

#[test]
fn a_hung_path_entry_before_the_real_one_holds_up_only_that_lookup() {
    let dir = scratch("hung-path");
    let hung = HungMount::new(&dir);
    let socket = dir.join("pilot.sock");
    let started = dir.join("started");
    let cfg = write_config(
        &dir,
        &format!(
            r#"{{ {}, jobs: [ {{ name: "absolute", exec: ["/bin/sh", "-c", "echo yes > {}; sleep 1000"] }} ] }}"#,
            control(&socket),
            started.display()
        ),
    );
    // The payload `sh` is looked up on PATH, whose first entry hangs.
    let path = format!("{}:/usr/bin:/bin", hung.dir.display());
    let args = ["run", "--grace", "5s", "-c", &cfg, "--", "sh", "-c", TRAPPER];
    let r = start(&hung, &args, &[("PATH", &path)], &socket);
    eventually(LIMIT, "the job with an absolute path to start", || started.exists().then_some(()));
    status_answers(&socket);
    assert_eq!(sigterm_ends_pilot(r), 143);
}

#[test]
fn jobs_with_a_user_start_and_pilot_stays_responsive_while_one_hangs() {
    let dir = scratch("hung-user");
    // The job's user (65534) writes into `out`.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = dir.join("out");
    std::fs::create_dir(&out).unwrap();
    std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o777)).unwrap();
    let hung = HungMount::new(&dir);
    let socket = dir.join("pilot.sock");
    let uid = out.join("uid");
    let cfg = write_config(
        &dir,
        &format!(
            r#"{{ {}, jobs: [
                {{ name: "as-nobody", exec: ["/bin/sh", "-c", "id -u > {}; sleep 1000"], user: 65534, group: 65534 }},
                {{ name: "hung-as-nobody", exec: "{}", user: 65534, group: 65534 }} ] }}"#,
            control(&socket),
            uid.display(),
            hung.path("program")
        ),
    );
    let r = start(&hung, &["run", "--grace", "5s", "-c", &cfg, "--", "sh", "-c", TRAPPER], &[], &socket);
    r.expect_line_within(|l| l == "ready", "ready", LIMIT);
    let seen = eventually(LIMIT, "the job's uid", || std::fs::read_to_string(&uid).ok().filter(|s| !s.is_empty()));
    assert_eq!(seen.trim(), "65534");
    let pilot_pid = pilot_pid(r.child.id());
    assert!(pilot::init::kill(pilot_pid, libc::SIGUSR1, false));
    r.expect_line_within(|l| l == "got-usr1", "the forwarded SIGUSR1", LIMIT);
    status_answers(&socket);
    assert_eq!(sigterm_ends_pilot(r), 143);
}
