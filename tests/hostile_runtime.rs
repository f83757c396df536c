//! Hostile surroundings at run time, against the real binary: a Consul agent that forgets
//! every service it registers, a stdout nobody reads, job ads that are devices or FIFOs,
//! reloads under a watch, scripts without (or with a broken) `#!`, an empty command, and
//! job output or arguments that try to forge log lines.

mod common;
#[path = "common/hostile_runtime.rs"]
mod helpers;

use common::*;
use helpers::{FakeAgent, script, threads};
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(30);

/// Wait for `child` to exit (failing after `limit`), sampling `each` meanwhile.
fn wait_sampling(child: &mut Child, limit: Duration, mut each: impl FnMut(u32)) -> Option<i32> {
    let start = Instant::now();
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st.code();
        }
        if start.elapsed() > limit {
            pilot::init::kill(child.id() as i32, 9, true);
            let _ = child.wait();
            panic!("pilot did not exit within {limit:?}");
        }
        each(child.id());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Every line pilot printed until its stdout closed (or `limit`).
fn drain(lines: &std::sync::mpsc::Receiver<String>, limit: Duration) -> Vec<String> {
    let deadline = Instant::now() + limit;
    let mut out = Vec::new();
    while let Ok(l) = lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        out.push(l);
    }
    out
}

/// Register answers 200, every TTL update 404 (two agents behind one address): pilot must
/// neither recurse nor spin, must say so once, and must keep its payload.
#[test]
fn an_agent_that_forgets_every_registration_does_not_take_pilot_down() {
    let agent = FakeAgent::start(|method, path| match (method, path) {
        ("PUT", p) if p.starts_with("/v1/agent/check/update/") => (404, "CheckID does not have associated TTL"),
        ("GET", _) => (200, "[]"),
        _ => (200, ""),
    });
    let dir = scratch("forgetful-agent");
    let cfg = write_config(
        &dir,
        &format!(
            r#"{{ consul: "127.0.0.1:{}", jobs: [{{ name: "app", exec: "sleep 1000", port: 8080,
                 interfaces: ["static:127.0.0.1"], health: {{ exec: "true", interval: 1, ttl: 10 }} }}] }}"#,
            agent.port
        ),
    );
    let mut cmd = Command::new(pilot());
    cmd.args(["run", "-c", &cfg, "--", "sh", "-c", "sleep 5; exit 7"])
        .env_remove("CONSUL_HTTP_ADDR")
        .env_remove("CONSUL_HTTP_TOKEN");
    let mut r = Running::start(&mut cmd);
    let (mut max_threads, mut max_rss) = (0, 0);
    let code = wait_sampling(&mut r.child, LIMIT, |pid| {
        max_threads = max_threads.max(threads(pid));
        max_rss = max_rss.max(rss_kib(pid));
    });
    let lines = drain(&r.lines, Duration::from_secs(3));
    let log = lines.join("\n");
    assert_eq!(code, Some(7), "the payload's exit status comes back; log:\n{log}");
    assert!(max_threads < 20, "threads stay bounded: {max_threads}");
    assert!(max_rss < 100 * 1024, "RSS stays bounded: {max_rss} KiB");
    let registers = agent.seen("PUT /v1/agent/service/register");
    assert!((1..=12).contains(&registers), "re-registration is paced by the backoff: {registers} in 5 s");
    let flapping = lines.iter().filter(|l| l.contains("forgets service")).count();
    assert_eq!(flapping, 1, "the flapping is logged once:\n{log}");
}

/// A chatty job (bursts of 5000 lines) beside a payload that exits 5 on SIGTERM.
fn start_with_unread_stdout(dir: &std::path::Path) -> Child {
    let cfg = write_config(
        dir,
        r#"{ jobs: [{ name: "chatty", exec: ["sh", "-c", "while :; do seq 1 5000; sleep 0.2; done"] }] }"#,
    );
    Command::new(pilot())
        .args(["run", "-c", &cfg, "--grace", "10s", "--"])
        .args(["sh", "-c", "trap 'exit 5' TERM; while :; do sleep 0.1; done"])
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// stdout is a pipe nobody reads: the supervisor must still handle SIGTERM and exit with
/// the payload's status (the old pilot hung inside `log::info!` for ever).
#[test]
fn a_blocked_stdout_does_not_stop_sigterm() {
    let dir = scratch("blocked-stdout");
    let mut child = start_with_unread_stdout(&dir);
    let _unread = child.stdout.take();
    // Long enough for the pipe (64 KiB) and the log queue to fill.
    std::thread::sleep(Duration::from_secs(3));
    assert!(child.try_wait().unwrap().is_none(), "pilot runs on with a blocked stdout");
    assert!(pilot::init::kill(child.id() as i32, libc::SIGTERM, false));
    let code = wait_sampling(&mut child, LIMIT, |_| {});
    assert_eq!(code, Some(5), "the payload's status after SIGTERM");
}

/// Once the pipe is read again, pilot says how many lines it dropped, and still stops.
#[test]
fn dropped_lines_are_reported_when_stdout_is_read_again() {
    let dir = scratch("dropped-lines");
    let mut child = start_with_unread_stdout(&dir);
    let out = child.stdout.take().unwrap();
    std::thread::sleep(Duration::from_secs(3));
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(15);
    let notice = loop {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(l) if l.contains("log lines dropped (output blocked)") => break l,
            Ok(_) => continue,
            Err(_) => {
                pilot::init::kill(child.id() as i32, 9, true);
                panic!("no dropped-lines notice after the pipe was read again");
            }
        }
    };
    let n: u64 = notice.split("pilot: ").nth(1).and_then(|r| r.split(' ').next()?.parse().ok()).unwrap_or(0);
    assert!(n > 0, "the notice counts the lines: {notice}");
    assert!(pilot::init::kill(child.id() as i32, libc::SIGTERM, false));
    assert_eq!(wait_sampling(&mut child, LIMIT, |_| {}), Some(5));
}

/// `_CONDOR_JOB_AD=/dev/zero` (the old pilot read it until the OOM killer came): refused at
/// once with a warning; the payload runs and its status comes back. An address-space limit
/// keeps a regression from taking the machine's memory.
#[test]
fn a_job_ad_that_is_a_device_is_refused_and_the_payload_runs() {
    let out = run_limited(
        Command::new("sh")
            .args([
                "-c",
                "ulimit -v 1000000 && exec \"$0\" \"$@\"",
                pilot(),
                "run",
                "--",
                "sh",
                "-c",
                "echo started; exit 3",
            ])
            .env("_CONDOR_JOB_AD", "/dev/zero"),
        LIMIT,
    );
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(3), "{stdout}{stderr}");
    assert!(stdout.contains("started"));
    assert!(stderr.contains("/dev/zero': it is a character device, expected a regular file"), "{stderr}");
}

/// A FIFO as job ad (the old pilot blocked in open for ever, with every signal blocked):
/// refused without waiting, the payload starts at once, and SIGTERM works.
#[test]
fn a_job_ad_that_is_a_fifo_is_refused_and_sigterm_works() {
    let dir = scratch("fifo-ad");
    let fifo = dir.join("job.ad");
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let cfg = write_config(&dir, "{ jobs: [] }");
    let mut cmd = Command::new(pilot());
    cmd.args(["run", "-c", &cfg, "--", "sh", "-c", "trap 'exit 5' TERM; echo started; while :; do sleep 0.1; done"])
        .env("_CONDOR_JOB_AD", &fifo);
    let r = Running::start(&mut cmd);
    // The payload writes to stdout directly, pilot through its log writer: either may come first.
    let (mut warning, mut started) = (None, false);
    while warning.is_none() || !started {
        let l = r
            .expect_line(|l| l.contains("_CONDOR_JOB_AD") || l == "started", "the ad's warning and the payload's line");
        if l == "started" {
            started = true;
        } else {
            warning = Some(l);
        }
    }
    let warning = warning.unwrap();
    assert!(warning.contains("a FIFO (named pipe), expected a regular file"), "{warning}");
    r.signal(libc::SIGTERM);
    assert_eq!(r.wait(LIMIT), 5);
}

/// `logging.output` naming a FIFO nobody reads: opening it for writing would block for ever
/// (with every signal blocked); pilot says so and exits instead.
#[test]
fn a_log_file_that_is_a_fifo_without_reader_is_an_error_not_a_hang() {
    let dir = scratch("fifo-log");
    let fifo = dir.join("log");
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let cfg = write_config(&dir, &format!(r#"{{ logging: {{ output: "{}" }}, jobs: [] }}"#, fifo.display()));
    let out = run_limited(Command::new(pilot()).args(["run", "-c", &cfg, "--", "true"]), LIMIT);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("a FIFO nobody reads"), "{err}");
}

/// Every reload replaces the config's watches: the old watch threads must end (the old
/// pilot kept one polling thread per watch per reload for ever).
#[test]
fn reloads_do_not_leak_watch_threads() {
    let agent = common::consul::Agent::dev();
    let dir = scratch("reload-watches");
    let socket = dir.join("ctl.sock");
    let cfg = write_config(
        &dir,
        &format!(
            r#"{{ consul: "{}", control: {{ socket: "{}" }},
                 watches: [{{ name: "backend", interval: 1 }}, {{ name: "db", interval: 1 }}],
                 jobs: [{{ name: "idle", exec: "sleep 1000" }}] }}"#,
            agent.addr(),
            socket.display()
        ),
    );
    let mut cmd = Command::new(pilot());
    cmd.args(["run", "-c", &cfg]).env_remove("CONSUL_HTTP_ADDR");
    let r = Running::start(&mut cmd);
    let pid = r.child.id();
    eventually(Duration::from_secs(10), "control socket", || socket.exists().then_some(()));
    // Let the first watches make their first (blocking) queries.
    std::thread::sleep(Duration::from_secs(2));
    let before = threads(pid);
    for i in 0..50 {
        let out = run_limited(Command::new(pilot()).args(["reload", "--socket"]).arg(&socket), LIMIT);
        assert!(out.status.success(), "reload {i}: {}{}", text(&out.stdout), text(&out.stderr));
        std::thread::sleep(Duration::from_millis(150));
    }
    let after = eventually(Duration::from_secs(15), "threads back to their number before the reloads", || {
        let n = threads(pid);
        (n <= before + 2).then_some(n)
    });
    assert!(after <= before + 2, "{before} threads before 50 reloads, {after} after");
    assert!(r.child.id() == pid && threads(pid) > 0, "pilot still runs");
}

#[test]
fn a_script_without_shebang_runs_under_sh() {
    let dir = scratch("no-shebang");
    let s = script(&dir, "plain", "echo \"from sh: $1\"\nexit 3\n");
    let out = run_limited(Command::new(pilot()).args(["run", "--", &s, "arg one"]), LIMIT);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "from sh: arg one");
}

#[test]
fn a_bad_shebang_names_the_missing_interpreter() {
    let dir = scratch("bad-shebang");
    let s = script(&dir, "bad", "#!/nonexistent/interp -x\necho hi\n");
    let out = run_limited(Command::new(pilot()).args(["run", "--", &s]), LIMIT);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(127), "{err}");
    assert!(err.contains(&format!("interpreter /nonexistent/interp of {s} not found")), "{err}");
}

#[test]
fn an_empty_command_is_127() {
    let out = run_limited(Command::new(pilot()).args(["run", "--", ""]).env("PATH", "/usr/bin:/bin"), LIMIT);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(127), "{err}");
    assert!(err.contains("empty command") && !err.contains("/usr/bin"), "{err}");
}

/// A job's argument with a newline ends up in a log message; a job's output has a carriage
/// return and an escape sequence. In every format each record stays one line (or, in the
/// default format, marked continuation lines) and the controls are escaped.
#[test]
fn log_lines_cannot_be_forged() {
    let dir = scratch("log-forgery");
    for format in ["text", "default", "json"] {
        let cfg = write_config(
            &dir,
            &format!(
                r#"{{ logging: {{ format: "{format}" }}, jobs: [
                     {{ name: "bad", exec: ["/nonexistent\ntime=\"2000-01-01T00:00:00Z\" level=error msg=\"forged\""] }},
                     {{ name: "tty", exec: ["printf", "a\rb\u001b[2J\n"] }} ] }}"#
            ),
        );
        let out = run_limited(Command::new(pilot()).args(["run", "-c", &cfg, "--", "sh", "-c", "sleep 0.5"]), LIMIT);
        let log = text(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{log}");
        assert!(log.contains("/nonexistent"), "{format}: the message is there:\n{log}");
        assert!(!log.contains('\r') && !log.contains('\u{1b}'), "{format}: controls are escaped:\n{log}");
        for line in log.lines() {
            match format {
                "text" => assert!(line.starts_with("time=\""), "text: a line that is not a record: {line:?}"),
                "json" => assert!(serde_json::from_str::<serde_json::Value>(line).is_ok(), "json: {line:?}"),
                _ => {
                    assert!(line.starts_with(|c: char| c.is_ascii_digit()), "default: {line:?}");
                    if line.contains("forged") {
                        assert!(line.contains(" | time="), "default: a continuation line is marked: {line:?}");
                    }
                }
            }
        }
    }
}

/// A watch whose token the agent refuses: the 403 is explained once, not on every retry.
#[test]
fn a_watch_403_is_logged_once() {
    let agent = common::consul::Agent::dev_with(&[
        r#"acl { enabled = true default_policy = "deny" tokens { initial_management = "root-secret-1234" } }"#,
    ]);
    let dir = scratch("watch-403");
    let cfg = write_config(
        &dir,
        &format!(r#"{{ consul: "{}", watches: [{{ name: "backend", interval: 1 }}], jobs: [] }}"#, agent.addr()),
    );
    let mut cmd = Command::new(pilot());
    // A token the agent does not know: every query is refused with 403 "ACL not found"
    // (without a token, reads are filtered rather than refused).
    cmd.args(["run", "-c", &cfg, "--", "sh", "-c", "sleep 8"])
        .env_remove("CONSUL_HTTP_ADDR")
        .env("CONSUL_HTTP_TOKEN", "0b5d4a61-7a0e-4c51-9d57-2f0f4b1e9a11");
    let mut r = Running::start(&mut cmd);
    assert_eq!(wait_sampling(&mut r.child, LIMIT, |_| {}), Some(0));
    let lines = drain(&r.lines, Duration::from_secs(3));
    let denied: Vec<_> = lines.iter().filter(|l| l.contains("watching backend") && l.contains("403")).collect();
    assert_eq!(denied.len(), 1, "once per change, not per retry:\n{}", lines.join("\n"));
}

/// An agent that answers blocking queries at once, under a watch with a tiny interval:
/// pilot still makes at most about one query a second.
#[test]
fn a_watch_does_not_hammer_an_agent_that_never_blocks() {
    let agent = FakeAgent::start(|_, _| (200, "[]"));
    let dir = scratch("no-blocking");
    let cfg = write_config(
        &dir,
        &format!(
            r#"{{ consul: "127.0.0.1:{}", watches: [{{ name: "backend", interval: "1ms" }}], jobs: [] }}"#,
            agent.port
        ),
    );
    let mut cmd = Command::new(pilot());
    cmd.args(["run", "-c", &cfg, "--", "sleep", "4"]).env_remove("CONSUL_HTTP_ADDR").env_remove("CONSUL_HTTP_TOKEN");
    let mut r = Running::start(&mut cmd);
    assert_eq!(wait_sampling(&mut r.child, LIMIT, |_| {}), Some(0));
    let queries = agent.seen("GET /v1/health/service/backend");
    assert!((1..=8).contains(&queries), "{queries} queries in 4 s");
}

/// When the thread that reads jobs' output cannot be started (no memory for its stack, a
/// thread limit), a job must not be given a pipe nobody reads: it was killed by SIGPIPE at
/// its first line. It runs raw instead (its lines on pilot's stdout, unprefixed). The limit
/// is an address-space cap put on the running pilot just before the first piped job starts.
#[test]
fn a_job_whose_output_thread_cannot_start_runs_raw_instead_of_dying_of_sigpipe() {
    require("prlimit", "util-linux");
    let dir = scratch("no-output-thread");
    let cfg = write_config(
        &dir,
        r#"{ jobs: [
            { name: "first", exec: ["sleep", "3"], logging: { raw: true } },
            { name: "tick", exec: ["sh", "-c", "echo tick-line; echo second-line"],
              when: { source: "first", once: "exitSuccess" } }
        ] }"#,
    );
    let p = Running::start(Command::new(pilot()).args(["run", "-c", &cfg, "--", "sleep", "6"]));
    p.expect_line(|l| l.contains("control: listening"), "of the control socket");
    // Room for the heap to grow a little, not for a thread's 2 MiB stack.
    let pid = p.child.id();
    let cap = (proc_status_kib(pid, "VmSize") + 1024) * 1024;
    let st = Command::new("prlimit").args(["--pid", &pid.to_string(), &format!("--as={cap}")]).status().unwrap();
    assert!(st.success(), "prlimit");
    let lines = drain(&p.lines, LIMIT);
    let all = lines.join("\n");
    assert!(all.contains("cannot start the thread that logs jobs' output"), "{all}");
    assert!(!all.contains("SIGPIPE"), "{all}");
    assert!(lines.iter().any(|l| l == "tick-line") && lines.iter().any(|l| l == "second-line"), "{all}");
}

/// Someone lowers pilot's RLIMIT_NOFILE below the pipes its output thread follows: poll then
/// fails with EINVAL at once, every time. The thread must not spin a core on it (it did:
/// found by the adversarial review), and pilot runs on.
#[test]
fn a_lowered_descriptor_limit_does_not_make_the_output_thread_spin() {
    require("prlimit", "util-linux");
    let dir = scratch("nofile-spin");
    let jobs: Vec<String> = (0..12)
        .map(|i| format!(r#"{{ name: "talk{i}", exec: ["sh", "-c", "while :; do echo line-{i}; sleep 1; done"] }}"#))
        .collect();
    let cfg = write_config(&dir, &format!("{{ jobs: [ {} ] }}", jobs.join(", ")));
    let p = Running::start(Command::new(pilot()).args(["run", "-c", &cfg]));
    p.expect_line(|l| l.contains("line-11"), "the last job's output");
    let pid = p.child.id();
    let st = Command::new("prlimit").args(["--pid", &pid.to_string(), "--nofile=8:8"]).status().unwrap();
    assert!(st.success(), "prlimit");
    std::thread::sleep(Duration::from_millis(500));
    let before = cpu_ticks(pid);
    std::thread::sleep(Duration::from_secs(3));
    let used = cpu_ticks(pid) - before;
    let hz = clock_ticks_per_second();
    // A spinning thread uses all of 3 s; a waiting one next to nothing.
    assert!(used < hz, "pilot used {used} ticks ({hz}/s) in 3 s with its descriptor limit lowered");
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists(), "pilot still runs");
}
