//! Hostile clients of the control socket and the telemetry port (issue 11 items 7, 10, 11,
//! 12, 13, 15 and putenv's names), each against the real binary and a real running pilot.
//! Nothing here assumes pilot is alone on the machine: own sockets, ports and directories,
//! and a private /tmp (mount namespace) where the CLI's socket search is tested.

mod common;
// Helpers of this file only (tests/common/mod.rs is shared by every test file).
#[path = "common/hostile_http.rs"]
mod helpers;

use common::*;
use helpers::*;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Item 7: a body announced as 500,000 bytes of which one arrives must not block
/// status, reload, ping or maintenance for other clients; it gets 408 in the end.
#[test]
fn a_stalled_body_does_not_block_other_clients() {
    let pl = Pilot::start("stalled-body", "");
    let mut stalled = UnixStream::connect(&pl.socket).unwrap();
    stalled.write_all(b"POST /v3/environ HTTP/1.1\r\nHost: x\r\nContent-Length: 500000\r\n\r\n{").unwrap();
    // A stalled head on the telemetry port, too.
    let mut stalled_scrape = std::net::TcpStream::connect(&pl.telemetry).unwrap();
    stalled_scrape.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n").unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let started = Instant::now();
    let socket = pl.socket.to_str().unwrap();
    for args in [
        &["ping"][..],
        &["status", "--json"],
        &["maintenance", "enable"],
        &["maintenance", "disable"],
        &["reload"],
        &["putenv", "A=1"],
    ] {
        let out = run_limited(Command::new(pilot()).args(args).args(["--socket", socket]), LIMIT);
        assert!(out.status.success(), "pilot {args:?} while a body stalls: {}", text(&out.stderr));
    }
    assert!(scrape(&pl.telemetry).starts_with("HTTP/1.1 200"), "a scrape while another stalls");
    // The stalled clients are told, within the body/head deadline (5 s) plus slack.
    stalled.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let answer = read_answer(&mut stalled, Duration::from_secs(15));
    assert_eq!(code(&answer), Some(408), "{answer}");
    stalled_scrape.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let answer = read_answer(&mut stalled_scrape, Duration::from_secs(15));
    assert_eq!(code(&answer), Some(408), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(30));
}

/// A python3 process holding `n` connections to the socket and to the port (raising its
/// own fd limit), until its stdin closes.
fn flood(socket: &Path, telemetry: &str, n: usize) -> std::process::Child {
    require_python();
    let (host, port) = telemetry.rsplit_once(':').unwrap();
    let script = format!(
        r#"
import resource, socket, sys
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
held = []
for i in range({n}):
    for make in (lambda: socket.socket(socket.AF_UNIX), lambda: socket.socket(socket.AF_INET)):
        s = make()
        s.setblocking(True)
        try:
            s.connect({socket:?} if s.family == socket.AF_UNIX else ({host:?}, {port}))
            held.append(s)
        except OSError as e:
            s.close()
print("holding", len(held), flush=True)
sys.stdin.read()
"#,
        socket = socket.to_str().unwrap()
    );
    Command::new("python3")
        .args(["-c", &script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

/// Item 12: 600 connections held open on each listener, with pilot's soft fd limit at
/// 1024 as at many sites: pilot stays up with a bounded number of fds and threads, new
/// clients get an answer (200 or 503), the health check keeps running and passing, and
/// once the flood ends both endpoints work again.
#[test]
fn a_connection_flood_is_refused_and_survived() {
    let pl = Pilot::start("flood", "ulimit -S -n 1024");
    let pid = pl.pid();
    let fds_before = open_fds(pid);
    let mut f = flood(&pl.socket, &pl.telemetry, 600);
    let mut line = String::new();
    BufReader::new(f.stdout.as_mut().unwrap()).read_line(&mut line).unwrap();
    assert!(line.starts_with("holding"), "{line}");
    let checks_before = pl.checks();
    let until = Instant::now() + Duration::from_secs(8);
    let (mut max_fds, mut max_threads) = (0, 0);
    while Instant::now() < until {
        max_fds = max_fds.max(open_fds(pid));
        max_threads = max_threads.max(proc_status_kib(pid, "Threads"));
        let c = unix_request(&pl.socket, b"GET /v3/ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        assert!(matches!(code(&c), Some(200 | 503)), "a client during the flood got {c:?}");
        let s = scrape(&pl.telemetry);
        assert!(matches!(code(&s), Some(200 | 503)), "a scrape during the flood got {s:?}");
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(max_fds < fds_before + 16 + 32 + 20, "pilot held {max_fds} fds (before: {fds_before})");
    assert!(max_threads < 80, "pilot ran {max_threads} threads");
    assert!(pl.checks() >= checks_before + 4, "the health check kept running during the flood");
    let st = unix_request(&pl.socket, b"GET /v3/status HTTP/1.1\r\nConnection: close\r\n\r\n");
    if code(&st) == Some(200) {
        assert!(st.contains("\"health\": \"healthy\""), "{st}");
    }
    drop(f.stdin.take());
    let _ = f.wait();
    eventually(LIMIT, "the control socket answers after the flood", || (ping(&pl.socket) == Some(200)).then_some(()));
    eventually(LIMIT, "the telemetry port answers after the flood", || {
        scrape(&pl.telemetry).starts_with("HTTP/1.1 200").then_some(())
    });
    let log = pl.drain_log().join("\n");
    assert!(!log.contains("Too many open files"), "{log}");
    assert!(!log.contains("panicked"), "{log}");
    let st = unix_request(&pl.socket, b"GET /v3/status HTTP/1.1\r\nConnection: close\r\n\r\n");
    assert!(st.contains("\"health\": \"healthy\""), "{st}");
}

/// Item 13: a 2 MiB header gets 431 on both listeners, and twenty of them at once do not
/// grow pilot's memory (the head is never buffered past 64 KiB).
#[test]
fn huge_headers_get_431_and_memory_stays_small() {
    let pl = Pilot::start("huge-header", "");
    let pid = pl.pid();
    let hwm_before = proc_status_kib(pid, "VmHWM");
    let head = |path: &str| format!("GET {path} HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "a".repeat(2 << 20));
    let threads: Vec<_> = (0..20)
        .map(|i| {
            let (socket, addr, req) = (pl.socket.clone(), pl.telemetry.clone(), head("/v3/ping"));
            let req2 = head("/metrics");
            std::thread::spawn(move || {
                if i % 2 == 0 { unix_request(&socket, req.as_bytes()) } else { tcp_request(&addr, req2.as_bytes()) }
            })
        })
        .collect();
    for t in threads {
        let answer = t.join().unwrap();
        assert_eq!(code(&answer), Some(431), "{}", &answer[..answer.len().min(300)]);
    }
    let hwm_after = proc_status_kib(pid, "VmHWM");
    assert!(hwm_after < hwm_before + 16 * 1024, "peak RSS grew from {hwm_before} kB to {hwm_after} kB");
    assert_eq!(ping(&pl.socket), Some(200));
}

/// Item 15: thousands of unknown paths are counted as one `path="other"` series.
#[test]
fn unknown_paths_do_not_grow_the_metric_series() {
    let pl = Pilot::start("label-values", "");
    let mut s = UnixStream::connect(&pl.socket).unwrap();
    let mut reader = s.try_clone().unwrap();
    reader.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    for i in 0..3000 {
        s.write_all(format!("GET /v3/nope-{i} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes()).unwrap();
        assert_eq!(code(&read_answer(&mut reader, LIMIT)), Some(404));
    }
    s.write_all(b"DELETE /v3/ping HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    assert_eq!(code(&read_answer(&mut reader, LIMIT)), Some(405));
    let m = scrape(&pl.telemetry);
    let series: Vec<&str> =
        m.lines().filter(|l| l.starts_with("containerpilot_control_http_requests_total{")).collect();
    assert!(series.len() < 10, "{series:#?}");
    assert!(
        series.contains(&"containerpilot_control_http_requests_total{code=\"404\",path=\"other\"} 3000"),
        "{series:#?}"
    );
}

/// putenv: a name with a newline, '=', NUL, a leading digit, or empty is refused with 422
/// naming it (server) or an error before sending (CLI); nothing reaches the jobs.
#[test]
fn putenv_refuses_names_that_are_not_variable_names() {
    let pl = Pilot::start("putenv-names", "");
    for name in ["A\\nB", "A=B", "A\\u0000", "1A", "", "A B", "LD_PRELOAD\\n"] {
        let body = format!("{{\"{name}\": \"x\"}}");
        let req = format!(
            "POST /v3/environ HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let answer = unix_request(&pl.socket, req.as_bytes());
        assert_eq!(code(&answer), Some(422), "{name}: {answer}");
        assert!(answer.contains("is not a variable name"), "{answer}");
    }
    let ok = "{\"GOOD_1\": \"x\"}";
    let req = format!("POST /v3/env HTTP/1.1\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{ok}", ok.len());
    assert_eq!(code(&unix_request(&pl.socket, req.as_bytes())), Some(200));
    let socket = pl.socket.to_str().unwrap();
    for arg in ["A\nB=1", "1A=1", "A-B=1"] {
        let out = run_limited(Command::new(pilot()).args(["putenv", arg, "--socket", socket]), LIMIT);
        assert!(!out.status.success() && text(&out.stderr).contains("is not a variable name"), "{arg:?}");
    }
}

/// Item 10: with umask 000, another user never gets to use the socket, not in the moment
/// after it is bound (30 starts while uid 65534 keeps trying to connect), and not even
/// when the socket's mode is opened up later: SO_PEERCRED answers 403.
#[test]
fn the_control_socket_is_private_from_the_start() {
    assert!(is_root(), "this test switches to uid 65534 with setpriv: run it as root");
    require_python();
    let dir = scratch("private-socket");
    let socket = dir.join("ctl.sock");
    let cfg = write_config(
        &dir,
        &format!(
            r#"{{ control: {{ socket: "{}" }}, jobs: [ {{ name: "app", exec: "sleep 1000" }} ] }}"#,
            socket.display()
        ),
    );
    let connector = format!(
        r#"
import socket, sys, time
print("STARTED", flush=True)
end = time.time() + float(sys.argv[1])
while time.time() < end:
    # Connect only once the socket exists: the test kills this loop after pilot answered.
    s = socket.socket(socket.AF_UNIX)
    try:
        s.connect({path:?})
    except OSError:
        s.close(); continue
    s.settimeout(5)
    try:
        s.sendall(b"GET /v3/ping HTTP/1.1\r\nHost: x\r\n\r\n")
        print("CONNECTED", s.recv(100).split(b"\r\n")[0].decode(), flush=True)
    except OSError as e:
        print("CONNECTED", e, flush=True)
    s.close()
"#,
        path = socket.to_str().unwrap()
    );
    let mut connected = Vec::new();
    for _ in 0..30 {
        let mut c = as_nobody(Command::new("python3").args(["-c", &connector, "20"]));
        let mut racer = c.stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
        // Byte by byte: nothing after the first line may be left in a buffer.
        let mut started = Vec::new();
        let mut byte = [0u8];
        while std::io::Read::read(racer.stdout.as_mut().unwrap(), &mut byte).unwrap() == 1 && byte[0] != b'\n' {
            started.push(byte[0]);
        }
        connected.push(text(&started));
        let p = Running::start(
            Command::new("sh").arg("-c").arg("umask 000; exec \"$0\" run -c \"$1\"").arg(pilot()).arg(&cfg),
        );
        eventually(LIMIT, "pilot answers its owner", || (ping(&socket) == Some(200)).then_some(()));
        std::thread::sleep(Duration::from_millis(50));
        let _ = racer.kill();
        drop(p);
        let out = wait_limited(&mut racer, LIMIT);
        connected.extend(text(&out.stdout).lines().map(String::from));
        let _ = std::fs::remove_file(&socket);
    }
    assert_eq!(connected.iter().filter(|l| *l == "STARTED").count(), 30, "the racer ran: {connected:?}");
    assert!(connected.iter().all(|l| !l.contains("200")), "another user used the socket: {connected:?}");
    assert!(std::fs::read_dir(&dir).unwrap().all(|e| !e.unwrap().file_name().to_string_lossy().starts_with(".p")));

    // Opened up by mistake: the peer check still refuses uid 65534 (and says so once).
    let p = Running::start(Command::new(pilot()).args(["run", "-c", &cfg]));
    eventually(LIMIT, "pilot answers its owner", || (ping(&socket) == Some(200)).then_some(()));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777, 0o600);
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let out = run_limited(&mut as_nobody(Command::new("python3").args(["-c", &connector, "1"])), LIMIT);
    let lines = text(&out.stdout);
    assert!(lines.contains("CONNECTED HTTP/1.1 403"), "{lines}");
    assert!(!lines.contains("200"), "{lines}");
    p.expect_line(|l| l.contains("refused a connection from uid 65534"), "the refusal logged");
    assert_eq!(ping(&socket), Some(200), "the owner still gets in");
}

/// A child process killed when dropped (also when the test fails).
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A python3 server as uid 65534 on `path` that records every byte it receives in `log`.
fn trap(path: &Path, log: &Path) -> KillOnDrop {
    let script = format!(
        r#"
import socket, os
s = socket.socket(socket.AF_UNIX)
s.bind({path:?})
s.listen(16)
print("ready", flush=True)
while True:
    c, _ = s.accept()
    c.settimeout(2)
    try:
        data = c.recv(65536)
        with open({log:?}, "ab") as f: f.write(data)
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nOK")
    except OSError:
        pass
    c.close()
"#,
        path = path.to_str().unwrap(),
        log = log.to_str().unwrap()
    );
    let mut c = as_nobody(Command::new("python3").args(["-c", &script]));
    let mut child = c.stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap()).read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "ready");
    KillOnDrop(child)
}

/// The CLI in a private /tmp (its own mount namespace), so other pilots on the machine do
/// not count, with only `TMPDIR` set. The binary is run from a copy in `tmpdir`: the build
/// directory itself may be under /tmp.
fn cli_private_tmp(args: &[&str], tmpdir: &Path) -> (i32, String, String) {
    let copy = tmpdir.join("pilot-cli");
    if !copy.exists() {
        std::fs::copy(pilot(), &copy).unwrap();
    }
    let mut c = Command::new("unshare");
    c.args(["--mount", "--propagation", "private", "sh", "-c", "mount -t tmpfs tmpfs /tmp && exec \"$@\"", "sh"])
        .arg(&copy)
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("TMPDIR", tmpdir);
    let out = run_limited(&mut c, LIMIT);
    (out.status.code().unwrap_or(-1), text(&out.stdout), text(&out.stderr))
}

/// Item 11: a `pilot*.sock` another user created in a runtime directory is never talked
/// to: not found by `pilot status`/`putenv`, not counted as a second pilot, and refused
/// (nothing sent) even when named with --socket.
#[test]
fn a_socket_of_another_user_is_never_used() {
    assert!(is_root(), "this test switches to uid 65534 with setpriv and unshares /tmp: run it as root");
    require_python();
    require("unshare", "install util-linux");
    // Outside /tmp, so the CLI's private /tmp does not hide it; world-writable like /tmp.
    // Removed when the guard drops, also when the test fails.
    let guard = tempfile::Builder::new().prefix("pilot-hostile-").tempdir_in("/var/tmp").unwrap();
    let dir = guard.path().to_path_buf();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let log = dir.join("trap.log");
    let evil = trap(&dir.join("pilot-evil.sock"), &log);

    let (code, _, err) = cli_private_tmp(&["putenv", "DB_PASSWORD=secret"], &dir);
    assert_ne!(code, 0, "only another user's socket: no pilot found");
    assert!(err.contains("no running pilot of yours found"), "{err}");

    // With a pilot of ours next to it: ours is the one, not "several pilots".
    let ours = dir.join("pilot-mine.sock");
    let cfg_dir = scratch("other-users-socket");
    let cfg = write_config(
        &cfg_dir,
        &format!(
            r#"{{ control: {{ socket: "{}" }}, jobs: [ {{ name: "app", exec: "sleep 1000" }} ] }}"#,
            ours.display()
        ),
    );
    let p = Running::start(Command::new(pilot()).args(["run", "-c", &cfg]));
    eventually(LIMIT, "our pilot answers", || (ping(&ours) == Some(200)).then_some(()));
    let (code, _, err) = cli_private_tmp(&["putenv", "DB_PASSWORD=secret"], &dir);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = cli_private_tmp(&["status", "--json"], &dir);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&format!("\"pid\": {}", p.child.id())), "{out}");

    // Named explicitly: refused before anything is sent.
    let evil_path = dir.join("pilot-evil.sock");
    let (code, _, err) =
        cli_private_tmp(&["putenv", "DB_PASSWORD=secret", "--socket", evil_path.to_str().unwrap()], &dir);
    assert_ne!(code, 0);
    assert!(err.contains("runs as uid 65534"), "{err}");
    std::thread::sleep(Duration::from_millis(300));
    let got = std::fs::read(&log).unwrap_or_default();
    assert!(got.is_empty(), "the other user's socket received: {}", String::from_utf8_lossy(&got));
    drop(evil);
    drop(p);
}

/// Item 11: inside an HTCondor job, `$_CONDOR_SCRATCH_DIR/pilot.sock` is the one `pilot
/// status` talks to, although other pilots have live sockets in the runtime directories.
#[test]
fn the_per_job_socket_wins_over_other_live_sockets() {
    let dir = scratch("per-job-wins");
    let job = dir.join("job");
    let tmp = dir.join("tmp");
    std::fs::create_dir_all(&job).unwrap();
    std::fs::create_dir_all(&tmp).unwrap();
    let cfg = write_config(&dir, r#"{ jobs: [ { name: "app", exec: "sleep 1000" } ] }"#);
    let start = |env: &[(&str, &Path)]| {
        let mut c = Command::new(pilot());
        c.args(["run", "-c", &cfg]).env_clear().env("PATH", std::env::var("PATH").unwrap_or_default());
        for (k, v) in env {
            c.env(k, v);
        }
        Running::start(&mut c)
    };
    let other = start(&[("TMPDIR", &tmp)]);
    let other2 = start(&[("TMPDIR", &tmp)]);
    let mine = start(&[("_CONDOR_SCRATCH_DIR", &job), ("TMPDIR", &tmp)]);
    eventually(LIMIT, "three sockets", || {
        let n = std::fs::read_dir(&tmp).unwrap().count();
        (n == 2 && ping(&job.join("pilot.sock")) == Some(200)).then_some(())
    });
    let (code, out, err) = cli_env(&["status", "--json"], &[("_CONDOR_SCRATCH_DIR", &job), ("TMPDIR", &tmp)]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&format!("\"pid\": {}", mine.child.id())), "{out}");
    drop((other, other2, mine));
}

/// Each putenv request is bounded by the body limit, but their sum was not: the server's
/// copy of the variables (kept for rendering reloads) grew with every new name. Both it and
/// the jobs' environment now hold at most 10,000 variables and 4 MiB (the supervisor's
/// count, pilot's own variables included, decides): a request past that is refused whole
/// (422) and changes nothing.
#[test]
fn putenv_requests_cannot_grow_the_environment_without_bound() {
    let pl = Pilot::start("putenv-bound", "");
    let put = |first: usize, n: usize| {
        let vars: Vec<String> = (first..first + n).map(|i| format!("\"V{i}\": \"x\"")).collect();
        let body = format!("{{{}}}", vars.join(","));
        let req = format!(
            "POST /v3/environ HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        unix_request(&pl.socket, req.as_bytes())
    };
    for round in 0..4 {
        let answer = put(round * 2000, 2000);
        assert_eq!(code(&answer), Some(200), "round {round}: {answer}");
    }
    // 8,000 set, and pilot's own environment: 2,500 more are too many.
    let answer = put(8000, 2500);
    assert_eq!(code(&answer), Some(422), "{answer}");
    assert!(answer.contains("at most 10000"), "{answer}");
    // Replacing variables that are already there stays within the bound.
    assert_eq!(code(&put(0, 10)), Some(200));
}
