//! What `pilot run -- CMD` does before and after its payload, as counted facts (issue 14's
//! start-up goal): which system calls the start and exit paths make (strace), and that the
//! command line's fast path for `run` answers every error and help exactly as the full
//! parser does. No timing assertions: calls are counted, not timed.

mod common;

use common::*;
use std::process::{Command, Stdio};
use std::time::Duration;

/// The system calls of one `pilot run -- /bin/true` (pilot's own, its child's and
/// /bin/true's), by name, from `strace -f -c`; pilot is the static musl binary that goes into
/// images (its allocator and start-up code are what is counted).
fn syscalls() -> std::collections::BTreeMap<String, u64> {
    require("strace", "run scripts/setup-test-deps.sh (installs Debian's strace)");
    let dir = scratch("startup-strace");
    let summary = dir.path().join("summary");
    let out = run_limited(
        Command::new("strace")
            .args(["-f", "-c", "-U", "name,calls", "-o"])
            .arg(&summary)
            .arg(static_pilot())
            .args(["run", "--", "/bin/true"])
            .stdin(Stdio::null()),
        Duration::from_secs(30),
    );
    assert!(out.status.success(), "strace pilot run -- /bin/true: {}", text(&out.stderr));
    let table = std::fs::read_to_string(&summary).unwrap();
    table
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let (name, calls) = (w.next()?, w.next()?.parse().ok()?);
            (!name.starts_with('-') && name != "total").then(|| (name.to_string(), calls))
        })
        .collect()
}

/// The statfs of pilot's own program (is it on local storage, may its code be trimmed?) is
/// asked at the first trim, 2 s after start, not on the start path: a payload that ends
/// sooner never pays it (it was one statfs at every start).
#[test]
fn a_short_run_asks_no_statfs() {
    let calls = syscalls();
    assert!(calls.contains_key("execve"), "strace saw no execve: {calls:?}");
    assert_eq!(calls.get("statfs"), None, "{calls:?}");
}

/// The embedded default registers no service and has no control socket: the container's
/// identity (hostname by uname, a random instance from /dev/urandom) is not read for it.
#[test]
fn the_embedded_default_reads_no_identity() {
    let calls = syscalls();
    assert!(calls.contains_key("execve"), "strace saw no execve: {calls:?}");
    assert_eq!(calls.get("uname"), None, "{calls:?}");
}

/// The allocator keeps what it mapped for the next allocation: a start and exit unmap
/// little (with musl's own malloc, 23 munmaps, each a TLB flush, around parsing the command
/// line and building the supervisor; now pilot's sigaltstack, the spawn stack and
/// /bin/true's loader's one).
#[test]
fn start_and_exit_do_not_churn_mappings() {
    let calls = syscalls();
    let munmap = calls.get("munmap").copied().unwrap_or(0);
    assert!(munmap <= 6, "{munmap} munmaps: {calls:?}");
}

fn pilot_output(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let out = run_limited(
        Command::new(pilot()).args(args).envs(env.iter().copied()).stdin(Stdio::null()),
        Duration::from_secs(20),
    );
    (out.status.code(), text(&out.stdout), text(&out.stderr))
}

/// `pilot run`'s arguments are first matched against the `run` subcommand alone; help and
/// errors come from the whole command tree, so they are what they always were: `run --help`
/// is `help run` (about, options, examples), a bad value names the option and says how to
/// get help, exit status 2.
#[test]
fn run_answers_help_and_errors_as_the_full_parser() {
    let (code, help, _) = pilot_output(&["run", "--help"], &[]);
    assert_eq!(code, Some(0));
    let (_, full, _) = pilot_output(&["help", "run"], &[]);
    assert_eq!(help, full);
    assert!(help.contains("Run as the container's init"), "{help}");
    assert!(help.contains("Usage: pilot run [OPTIONS] [CMD]..."), "{help}");
    assert!(help.contains("pilot run --grace 20s -- python3 job.py"), "{help}");

    let (code, _, err) = pilot_output(&["run", "--grace", "soon", "--", "true"], &[]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("invalid value 'soon' for '--grace <GRACE>'"), "{err}");
    assert!(err.contains("For more information, try '--help'."), "{err}");

    let (code, _, err) = pilot_output(&["run", "--grace"], &[]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("a value is required for '--grace <GRACE>'"), "{err}");

    let (code, _, err) = pilot_output(&["run", "--", "true"], &[("PILOT_GRACE", "never")]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("invalid value 'never' for '--grace <GRACE>'"), "{err}");
}

/// What the fast path accepts, it hands on unchanged: the payload's own flags (even
/// `--help`), `--` and the payload's exit status.
#[test]
fn run_passes_the_payload_its_arguments() {
    let (code, out, err) =
        pilot_output(&["run", "--grace", "2s", "sh", "-c", "echo \"$0|$1\"; exit 7", "--help", "x"], &[]);
    assert_eq!(code, Some(7), "{err}");
    assert_eq!(out, "--help|x\n");
    let (code, out, err) = pilot_output(&["run", "--", "sh", "-c", "echo \"$@\"", "sh", "-c", "--config"], &[]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out, "-c --config\n");
}

/// The allocator's start-up arena bounds what pilot keeps: memory beyond it goes back to
/// musl's malloc, which returns it. Three refused reloads of a 0.9 MB config (tens of MB of
/// parse tree each) leave the heap where it was; with dlmalloc running the whole heap they
/// left 4–31 MB resident.
#[test]
fn a_refused_big_reload_gives_its_memory_back() {
    let bin = static_pilot();
    let dir = scratch("startup-reload");
    let socket = dir.path().join("pilot.sock");
    let config = dir.path().join("pilot.json5");
    let small = format!(
        r#"{{ control: {{ socket: "{}" }}, jobs: [{{ name: "app", exec: ["sleep", "60"] }}] }}"#,
        socket.display()
    );
    std::fs::write(&config, &small).unwrap();
    let mut child = Command::new(&bin)
        .args(["run", "-c"])
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !socket.exists() {
        assert!(std::time::Instant::now() < deadline, "no control socket");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    let before = proc_status_kib(pid, "RssAnon");
    // Valid JSON5, refused by validation after the whole file was parsed and decoded.
    let jobs: Vec<String> = (0..8000)
        .map(|i| format!(r#"{{"name":"j{i}","exec":["/bin/true","{}"],"when":{{"once":"never"}}}}"#, "arg".repeat(8)))
        .collect();
    let big = format!(r#"{{"control":{{"socket":"{}"}},"jobs":[{}]}}"#, socket.display(), jobs.join(","));
    std::fs::write(&config, big).unwrap();
    for _ in 0..3 {
        let out = run_limited(Command::new(&bin).arg("reload").arg("--socket").arg(&socket), Duration::from_secs(60));
        assert_eq!(out.status.code(), Some(1), "the reload should be refused: {}", text(&out.stdout));
    }
    std::thread::sleep(Duration::from_millis(300));
    let after = proc_status_kib(pid, "RssAnon");
    let _ = child.kill();
    let _ = child.wait();
    assert!(before > 0 && after > 0, "RssAnon {before} / {after}");
    assert!(after < before + 2048, "anonymous memory {before} KiB before the reloads, {after} KiB after");
}
