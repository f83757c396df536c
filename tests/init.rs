//! pilot as a container init: exit status, exec failures, stdio and tty, signal mask,
//! signal forwarding and orphan reaping — as a child subreaper (Apptainer's default) and as
//! real PID 1 in a new PID namespace (`--pid`/`--containall`), also inside a user namespace.

mod common;
use common::*;
use std::process::Command;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(20);

fn run_payload(args: &[&str]) -> std::process::Output {
    run_limited(Command::new(pilot()).arg("run").arg("--").args(args), LIMIT)
}

/// How to start pilot as PID 1: as root, and inside a user namespace (how an unprivileged
/// user gets a PID namespace).
fn pid1_prefixes() -> Vec<Vec<&'static str>> {
    require("unshare", "apt-get install util-linux");
    vec![
        vec!["unshare", "--pid", "--fork", "--mount-proc"],
        vec!["unshare", "--user", "--map-root-user", "--pid", "--fork", "--mount-proc"],
    ]
}

fn as_pid1(prefix: &[&str], payload: &[&str]) -> std::process::Output {
    let mut cmd = Command::new(prefix[0]);
    cmd.args(&prefix[1..]).arg(pilot()).arg("run").arg("--").args(payload);
    run_limited(&mut cmd, LIMIT)
}

#[test]
fn exit_status_passes_through_for_every_code() {
    for code in 0..=255 {
        let out = run_payload(&["sh", "-c", &format!("exit {code}")]);
        assert_eq!(out.status.code(), Some(code), "payload exit {code}");
    }
}

#[test]
fn death_by_signal_gives_128_plus_signal() {
    for (name, num) in [("HUP", 1), ("INT", 2), ("QUIT", 3), ("KILL", 9), ("USR1", 10), ("SEGV", 11), ("TERM", 15)] {
        let out = run_payload(&["sh", "-c", &format!("kill -{name} $$")]);
        assert_eq!(out.status.code(), Some(128 + num), "payload killed by SIG{name}");
    }
}

#[test]
fn exec_failures_give_127_and_126_with_a_message() {
    let out = run_payload(&["/nonexistent/program"]);
    assert_eq!(out.status.code(), Some(127));
    assert!(text(&out.stderr).contains("/nonexistent/program: command not found"), "{}", text(&out.stderr));
    let out = run_payload(&["no-such-program-anywhere"]);
    assert_eq!(out.status.code(), Some(127));
    let out = run_payload(&["/etc"]);
    assert_eq!(out.status.code(), Some(126));
    assert!(text(&out.stderr).contains("/etc: permission denied"), "{}", text(&out.stderr));
}

#[test]
fn stdin_and_stdout_pass_through() {
    use std::io::Write;
    let mut child = Command::new(pilot())
        .args(["run", "--", "sh", "-c", "tr a-z A-Z; echo err >&2"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"hello pilot\n").unwrap();
    let out = wait_limited(&mut child, LIMIT);
    assert_eq!(text(&out.stdout), "HELLO PILOT\n");
    assert_eq!(text(&out.stderr), "err\n");
    assert!(out.status.success());
}

fn status_field(status: &str, field: &str) -> u64 {
    let line = status.lines().find(|l| l.starts_with(field)).unwrap_or_else(|| panic!("no {field} in {status}"));
    u64::from_str_radix(line.split_whitespace().nth(1).unwrap(), 16).unwrap()
}

#[test]
fn payload_gets_the_signal_mask_and_dispositions_pilot_inherited() {
    require_python();
    let out = run_limited(
        Command::new("python3").arg(fixture("with_sigconf.py")).arg(pilot()).args([
            "run",
            "--",
            "cat",
            "/proc/self/status",
        ]),
        LIMIT,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let status = text(&out.stdout);
    let bit = |sig: u32| 1u64 << (sig - 1);
    let (blk, ign) = (status_field(&status, "SigBlk:"), status_field(&status, "SigIgn:"));
    assert_eq!(blk, bit(10) | bit(28), "SigBlk must be exactly the inherited USR1+WINCH, got {blk:x}");
    assert_eq!(ign & (bit(2) | bit(12)), bit(2) | bit(12), "inherited SIG_IGN of INT and USR2 kept, got {ign:x}");
    assert_eq!(ign & bit(13), 0, "SIGPIPE back to default");
}

#[test]
fn a_clean_start_gives_the_payload_an_empty_mask() {
    let out = run_payload(&["cat", "/proc/self/status"]);
    let status = text(&out.stdout);
    assert_eq!(status_field(&status, "SigBlk:"), 0);
}

const FORWARDED: &[(&str, i32)] = &[
    ("SIGHUP", 1),
    ("SIGQUIT", 3),
    ("SIGUSR1", 10),
    ("SIGUSR2", 12),
    ("SIGALRM", 14),
    ("SIGCONT", 18),
    ("SIGURG", 23),
    ("SIGWINCH", 28),
    ("SIGRTMIN+2", 36),
    ("SIGRTMIN+10", 44),
];

fn check_forwarding(mut cmd: Command) {
    require_python();
    let pilot = Running::start(&mut cmd);
    pilot.expect_line(|l| l.starts_with("ready"), "ready from the payload");
    for (name, num) in FORWARDED {
        pilot.signal(*num);
        pilot.expect_line(|l| l == *name, name);
    }
    pilot.signal(15);
    pilot.expect_line(|l| l == "SIGTERM", "SIGTERM");
    assert_eq!(pilot.wait(LIMIT), 0, "the payload exited 0 after SIGTERM, so must pilot");
}

#[test]
fn signals_are_forwarded_to_the_payload_as_subreaper() {
    let mut cmd = Command::new(pilot());
    cmd.args(["run", "--", "python3", &fixture("print_signals.py")]);
    check_forwarding(cmd);
}

#[test]
fn sigint_is_forwarded_and_ends_the_payload() {
    require_python();
    let pilot = Running::start(Command::new(pilot()).args(["run", "--", "python3", &fixture("print_signals.py")]));
    pilot.expect_line(|l| l.starts_with("ready"), "ready");
    pilot.signal(2);
    pilot.expect_line(|l| l == "SIGINT", "SIGINT");
    assert_eq!(pilot.wait(LIMIT), 0);
}

#[test]
fn signals_are_forwarded_to_the_payload_as_pid1() {
    for prefix in pid1_prefixes() {
        // Signal pilot itself (PID 1 inside, a child of unshare outside): unshare --fork
        // does not forward signals, so find pilot's pid from the payload's parent.
        require_python();
        let mut cmd = Command::new(prefix[0]);
        cmd.args(&prefix[1..]).arg(pilot()).args(["run", "--", "python3", &fixture("print_signals.py")]);
        let running = Running::start(&mut cmd);
        let ready = running.expect_line(|l| l.starts_with("ready"), "ready");
        assert!(ready.ends_with(" 1"), "in a new PID namespace pilot is PID 1, the payload's parent: {ready}");
        let outer_pilot = find_child(running.child.id()).expect("pilot under unshare");
        for (name, num) in FORWARDED {
            kill(outer_pilot, *num);
            running.expect_line(|l| l == *name, name);
        }
        kill(outer_pilot, 15);
        running.expect_line(|l| l == "SIGTERM", "SIGTERM");
        assert_eq!(running.wait(LIMIT), 0);
    }
}

fn kill(pid: i32, sig: i32) {
    assert!(Command::new("kill").arg(format!("-{sig}")).arg(pid.to_string()).status().unwrap().success());
}

/// The first child of `parent` (from /proc).
fn find_child(parent: u32) -> Option<i32> {
    for _ in 0..100 {
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else { continue };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
            let rest = &stat[stat.rfind(')').unwrap() + 2..];
            if rest.split(' ').nth(1) == Some(&parent.to_string()) {
                return Some(pid);
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// The output of `orphans_script(100, …)`: 100 double-forked orphans (each `sh -c 'sleep
/// 1.5 &'` exits at once, leaving a sleep whose parent is gone) must all end up reaped by
/// pilot, none left a zombie.
fn check_no_zombies(out: &std::process::Output) {
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("zombies=0"), "{stdout}");
    assert!(!stdout.contains("zombie:"), "{stdout}");
    assert!(stdout.contains("adopted=100\n"), "all 100 orphans re-parented to pilot while alive: {stdout}");
    assert!(stdout.contains("children-of-init=1 "), "all reaped; only the payload is left under pilot: {stdout}");
}

#[test]
fn reaps_100_orphans_as_subreaper() {
    check_no_zombies(&run_payload(&["sh", "-c", &orphans_script(100, "2.5")]));
}

#[test]
fn reaps_100_orphans_as_pid1() {
    for prefix in pid1_prefixes() {
        check_no_zombies(&as_pid1(&prefix, &["sh", "-c", &orphans_script(100, "2.5")]));
    }
}

#[test]
fn exit_status_and_exec_failure_as_pid1() {
    for prefix in pid1_prefixes() {
        assert_eq!(as_pid1(&prefix, &["sh", "-c", "exit 42"]).status.code(), Some(42));
        assert_eq!(as_pid1(&prefix, &["sh", "-c", "kill -TERM $$"]).status.code(), Some(143));
        assert_eq!(as_pid1(&prefix, &["/nonexistent"]).status.code(), Some(127));
        let out = as_pid1(&prefix, &["sh", "-c", "echo ppid=$PPID; cat /proc/1/comm"]);
        assert_eq!(text(&out.stdout), "ppid=1\npilot\n");
    }
}

#[test]
fn leftover_daemons_are_stopped_when_the_payload_exits() {
    // A daemon that escaped into its own session: pilot must not leave it running.
    let dir = scratch("daemon");
    let pidfile = dir.join("pid");
    let script = format!("setsid sh -c 'echo $$ > {}; exec sleep 300' & sleep 0.3; exit 3", pidfile.display());
    let out = run_payload(&["sh", "-c", &script]);
    assert_eq!(out.status.code(), Some(3));
    let pid: i32 = std::fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap();
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists(), "daemon {pid} survived pilot");
}

#[test]
fn payload_is_the_terminal_foreground_group() {
    require_python();
    let out = run_limited(
        Command::new("python3").arg(fixture("in_pty.py")).arg(pilot()).args(["run", "--", "cat", "/proc/self/stat"]),
        LIMIT,
    );
    let stat = text(&out.stdout);
    let rest = &stat[stat.rfind(')').expect("a stat line") + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    // After comm: state ppid pgrp session tty_nr tpgid
    let (pgrp, tpgid) = (fields[2], fields[5]);
    assert_eq!(pgrp, tpgid, "payload's group is the terminal's foreground group: {stat}");
    assert!(out.status.success());
}
