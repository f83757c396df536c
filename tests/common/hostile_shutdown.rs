//! Helpers for tests/hostile_shutdown.rs: looking at processes through /proc, and starting
//! pilot as a subreaper or as PID 1 of a new PID namespace.

use super::common::*;
use std::process::Command;
use std::time::{Duration, Instant};

/// How to start pilot: directly (a child subreaper) or as PID 1 under `unshare`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum As {
    Subreaper,
    Pid1,
}

pub const BOTH: [As; 2] = [As::Subreaper, As::Pid1];

/// `pilot ARGS` as `how` says; with `Pid1`, `unshare --pid --fork --mount-proc` first.
pub fn pilot_cmd(how: As, args: &[&str]) -> Command {
    match how {
        As::Subreaper => {
            let mut c = Command::new(pilot());
            c.args(args);
            c
        }
        As::Pid1 => {
            require("unshare", "apt-get install util-linux");
            let mut c = Command::new("unshare");
            c.args(["--pid", "--fork", "--mount-proc"]).arg(pilot()).args(args);
            c
        }
    }
}

/// pilot's pid as seen from here: the child itself, or under `unshare` its child.
pub fn pilot_pid(how: As, running: &Running) -> i32 {
    match how {
        As::Subreaper => running.child.id() as i32,
        As::Pid1 => eventually(Duration::from_secs(10), "pilot under unshare", || {
            children(running.child.id() as i32).into_iter().next()
        }),
    }
}

pub fn signal(pid: i32, sig: i32) {
    assert!(pilot::init::kill(pid, sig, false), "signal {sig} to {pid}");
}

/// Fields of /proc/PID/stat after the command name (state is [0], ppid [1]).
pub fn stat(pid: i32) -> Option<Vec<String>> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    Some(s.get(s.rfind(')')? + 2..)?.split(' ').map(str::to_string).collect())
}

/// Alive: exists and is not a zombie.
pub fn alive(pid: i32) -> bool {
    stat(pid).is_some_and(|f| f[0] != "Z")
}

/// Live processes whose parent is `parent`.
pub fn children(parent: i32) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| stat(*pid).is_some_and(|f| f[0] != "Z" && f[1] == parent.to_string()))
        .collect()
}

/// The command line of a process, its arguments joined by spaces.
pub fn cmdline(pid: i32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| b.split(|c| *c == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// Names of pilot's threads.
pub fn threads(pid: i32) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return Vec::new() };
    dir.filter_map(|e| std::fs::read_to_string(e.ok()?.path().join("comm")).ok())
        .map(|s| s.trim().to_string())
        .collect()
}

/// Wait up to `limit` for a running pilot to exit: its code and how long it took.
pub fn wait_exit(running: &mut Running, limit: Duration) -> Option<(i32, Duration)> {
    let start = Instant::now();
    loop {
        if let Some(st) = running.child.try_wait().unwrap() {
            return Some((st.code().unwrap_or(-1), start.elapsed()));
        }
        if start.elapsed() > limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Read a pid a test script wrote to a file.
pub fn pid_in(path: &std::path::Path) -> i32 {
    eventually(Duration::from_secs(10), &format!("a pid in {}", path.display()), || {
        std::fs::read_to_string(path).ok()?.trim().parse().ok()
    })
}
