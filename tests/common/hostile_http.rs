//! Helpers for tests/hostile_http.rs: a running pilot with a control socket and telemetry,
//! raw HTTP over either, and what /proc says about pilot's memory, fds and threads.

use crate::common::*;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

pub const LIMIT: Duration = Duration::from_secs(10);

/// A running pilot: its control socket, telemetry address and scratch directory.
pub struct Pilot {
    pub p: Running,
    pub socket: PathBuf,
    pub telemetry: String,
    pub dir: Scratch,
}

impl Pilot {
    /// Start pilot with a control socket, telemetry on 127.0.0.1, a job whose health check
    /// appends a line to `dir/checks` every second, under `sh -c "PRELUDE; exec pilot …"`
    /// (e.g. `ulimit -S -n 1024`).
    pub fn start(name: &str, prelude: &str) -> Pilot {
        let dir = scratch(name);
        let socket = dir.join("ctl.sock");
        let checks = dir.join("checks");
        let cfg = write_config(
            &dir,
            &format!(
                r#"{{
  control: {{ socket: "{}" }},
  telemetry: {{ port: 0, interfaces: ["static:127.0.0.1"] }},
  jobs: [ {{ name: "app", exec: "sleep 1000",
             health: {{ exec: ["sh", "-c", "echo ok >> {}"], interval: 1, ttl: 5 }} }} ]
}}"#,
                socket.display(),
                checks.display()
            ),
        );
        let p = Running::start(
            Command::new("sh").arg("-c").arg(format!("{prelude}\nexec \"$0\" run -c \"$1\"")).arg(pilot()).arg(&cfg),
        );
        let line = p.expect_line(|l| l.contains("serving Prometheus metrics at"), "the telemetry address");
        let url = line.split("at http://").last().unwrap().trim();
        let telemetry = url.trim_end_matches("/metrics").to_string();
        eventually(LIMIT, "the control socket answers", || (ping(&socket) == Some(200)).then_some(()));
        Pilot { p, socket, telemetry, dir }
    }

    pub fn pid(&self) -> u32 {
        self.p.child.id()
    }

    /// Lines `dir/checks` has: how many health checks ran.
    pub fn checks(&self) -> usize {
        std::fs::read_to_string(self.dir.join("checks")).map(|s| s.lines().count()).unwrap_or(0)
    }

    /// Pilot's log lines so far.
    pub fn drain_log(&self) -> Vec<String> {
        self.p.lines.try_iter().collect()
    }
}

/// A field of /proc/PID/status (the number, kB for memory).
pub fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
}

/// Read one HTTP answer (head, then Content-Length bytes); "" when nothing came in `limit`.
pub fn read_answer(s: &mut impl Read, limit: Duration) -> String {
    let start = Instant::now();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let text = String::from_utf8_lossy(&buf).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let len = text[..end]
                .lines()
                .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_string()))
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                return String::from_utf8_lossy(&buf[..end + 4 + len]).into_owned();
            }
        }
        if start.elapsed() > limit {
            return text;
        }
        match s.read(&mut chunk) {
            Ok(0) => return String::from_utf8_lossy(&buf).into_owned(),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(_) => return String::from_utf8_lossy(&buf).into_owned(),
        }
    }
}

/// The status code of an answer ("HTTP/1.1 200 OK…" → 200).
pub fn code(answer: &str) -> Option<u16> {
    answer.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

/// One request on a fresh connection to the control socket; the whole answer.
pub fn unix_request(socket: &Path, request: &[u8]) -> String {
    let mut s = match std::os::unix::net::UnixStream::connect(socket) {
        Ok(s) => s,
        Err(e) => return format!("connect: {e}"),
    };
    s.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    if s.write_all(request).is_err() {
        return read_answer(&mut s, LIMIT);
    }
    read_answer(&mut s, LIMIT)
}

/// One request (with `Connection: close`) on a fresh connection to the telemetry port; all
/// that comes back until the server closes (whatever its framing: chunked too).
pub fn tcp_request(addr: &str, request: &[u8]) -> String {
    let mut s = match std::net::TcpStream::connect(addr) {
        Ok(s) => s,
        Err(e) => return format!("connect: {e}"),
    };
    s.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let _ = s.write_all(request);
    let start = Instant::now();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    while start.elapsed() < LIMIT {
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(_) => break,
        }
    }
    String::from_utf8_lossy(&buf).into_owned()
}

pub fn ping(socket: &Path) -> Option<u16> {
    code(&unix_request(socket, b"GET /v3/ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"))
}

pub fn scrape(addr: &str) -> String {
    tcp_request(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
}

/// Run pilot's CLI with exactly this environment (plus PATH); (exit code, stdout, stderr).
pub fn cli_env(args: &[&str], env: &[(&str, &Path)]) -> (i32, String, String) {
    let mut c = Command::new(pilot());
    c.args(args).env_clear().env("PATH", std::env::var("PATH").unwrap_or_default());
    for (k, v) in env {
        c.env(k, v);
    }
    let out = run_limited(&mut c, LIMIT);
    (out.status.code().unwrap_or(-1), text(&out.stdout), text(&out.stderr))
}

/// `setpriv` to uid/gid 65534 (nobody) around a command: another user on the machine.
pub fn as_nobody(cmd: &mut Command) -> Command {
    require("setpriv", "install util-linux");
    // root's python3 may be a shim in /root that nobody can run: the system's is.
    let program = match cmd.get_program().to_str() {
        Some("python3") if Path::new("/usr/bin/python3").exists() => "/usr/bin/python3".into(),
        _ => cmd.get_program().to_owned(),
    };
    let mut c = Command::new("setpriv");
    c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"]).arg(program).args(cmd.get_args());
    c
}
