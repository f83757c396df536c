//! Helpers for black-box tests: run the real pilot binary, with timeouts, and insist on
//! the components a test needs (a missing one fails the test with how to install it).
#![allow(dead_code)]

pub mod cli;
pub mod consul;
pub mod fuse;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A `/proc/PID/status` field in KiB (`VmRSS`, `VmHWM`, ...); 0 once the process is gone.
pub fn proc_status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let prefix = format!("{field}:");
    status
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Resident memory of a process, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    proc_status_kib(pid, "VmRSS")
}

pub fn pilot() -> &'static str {
    env!("CARGO_BIN_EXE_pilot")
}

pub fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// The ContainerPilot v3 fixtures (valid ones; the refused ones are in `mistakes/`).
pub const CP_FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/containerpilot");

/// The `.json5` files in `dir`, sorted (the same order on every machine).
pub fn json5_files(dir: &str) -> Vec<String> {
    let mut files: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{dir}: {e}"))
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json5"))
        .map(|p| p.display().to_string())
        .collect();
    files.sort();
    files
}

/// Fail (never skip) when a needed program is missing.
pub fn require(program: &str, how: &str) {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {program}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(found, "this test needs `{program}`, which is not installed: {how}");
}

pub fn require_python() {
    require("python3", "run scripts/setup-test-deps.sh (installs Debian's python3)");
}

/// Tests that make roots, mount namespaces or run HTCondor need to be root.
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
}

/// A scratch directory unique to this test (`pilot-test-NAME-XXXXXX` in the temp dir), removed
/// with everything in it when the guard is dropped: at the end of the test's scope, and also
/// when the test panics (unwinding drops it). Use it as a `Path` (`dir.join(..)`, `&dir`).
/// Keep the guard alive as long as something uses the directory (a running pilot's socket,
/// config or logs): `let dir = scratch(..)`, never `write_config(&scratch(..), ..)`.
/// `PILOT_TEST_KEEP=1` keeps the directories, to look at what a failed test left.
pub struct Scratch(tempfile::TempDir);

pub fn scratch(name: &str) -> Scratch {
    // A name is only a label: anything but [A-Za-z0-9._-] (a `/` from a Debug format) is `-`.
    let label: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() || "._-".contains(c) { c } else { '-' }).collect();
    let mut dir = tempfile::Builder::new()
        .prefix(&format!("pilot-test-{label}-"))
        .tempdir()
        .expect("create a scratch directory in the temp dir");
    if std::env::var_os("PILOT_TEST_KEEP").is_some_and(|v| v == "1") {
        dir.disable_cleanup(true);
        eprintln!("PILOT_TEST_KEEP: keeping {}", dir.path().display());
    }
    Scratch(dir)
}

impl Scratch {
    pub fn path(&self) -> &Path {
        self.0.path()
    }
}

impl std::ops::Deref for Scratch {
    type Target = Path;
    fn deref(&self) -> &Path {
        self.0.path()
    }
}

impl AsRef<Path> for Scratch {
    fn as_ref(&self) -> &Path {
        self.0.path()
    }
}

impl AsRef<std::ffi::OsStr> for Scratch {
    fn as_ref(&self) -> &std::ffi::OsStr {
        self.0.path().as_os_str()
    }
}

pub fn write_config(dir: &std::path::Path, text: &str) -> String {
    let path = dir.join("pilot.json5");
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

/// Run to completion, killing it if it takes longer than `limit` (then the test fails).
pub fn run_limited(cmd: &mut Command, limit: Duration) -> Output {
    let mut child = cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn");
    wait_limited(&mut child, limit)
}

pub fn wait_limited(child: &mut Child, limit: Duration) -> Output {
    let start = Instant::now();
    let mut out_pipe = child.stdout.take();
    let mut err_pipe = child.stderr.take();
    let out_t = std::thread::spawn(move || {
        let mut s = Vec::new();
        if let Some(p) = out_pipe.as_mut() {
            let _ = p.read_to_end(&mut s);
        }
        s
    });
    let err_t = std::thread::spawn(move || {
        let mut s = Vec::new();
        if let Some(p) = err_pipe.as_mut() {
            let _ = p.read_to_end(&mut s);
        }
        s
    });
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("timed out after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Output { status, stdout: out_t.join().unwrap(), stderr: err_t.join().unwrap() }
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Start pilot with piped stdout and wait for the payload's "ready" line.
pub struct Running {
    pub child: Child,
    pub lines: std::sync::mpsc::Receiver<String>,
    /// The TMPDIR given to a pilot whose command names no runtime directory: its default
    /// control socket goes there, and goes with it, even when Drop SIGKILLs pilot (which
    /// then cannot remove it; before, each such test left a `pilot-*.sock` in /tmp).
    pub runtime_dir: Option<tempfile::TempDir>,
}

impl Running {
    pub fn start(cmd: &mut Command) -> Running {
        use std::os::unix::process::CommandExt;
        // Unless the test chose where runtime files go (then it is testing that).
        let named = |k: &str| cmd.get_envs().any(|(n, _)| n == k);
        let runtime_dir = if ["TMPDIR", "XDG_RUNTIME_DIR", "_CONDOR_SCRATCH_DIR"].iter().any(|k| named(k)) {
            None
        } else {
            let dir = tempfile::Builder::new().prefix("pilot-running-").tempdir().expect("a runtime directory");
            cmd.env("TMPDIR", dir.path()).env_remove("XDG_RUNTIME_DIR");
            Some(dir)
        };
        // Own process group, so Drop can kill pilot even under `unshare --fork`.
        let mut child = cmd
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn pilot");
        let out = child.stdout.take().unwrap();
        let rx = lines_of(out);
        Running { child, lines: rx, runtime_dir }
    }

    pub fn expect_line(&self, pred: impl Fn(&str) -> bool, what: &str) -> String {
        self.expect_line_within(pred, what, Duration::from_secs(10))
    }

    pub fn expect_line_within(&self, pred: impl Fn(&str) -> bool, what: &str, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if pred(&l) => return l,
                Ok(_) => continue,
                Err(_) => panic!("no line {what} within {limit:?}"),
            }
        }
    }

    pub fn signal(&self, sig: i32) {
        assert!(pilot::init::kill(self.child.id() as i32, sig, false), "signal {sig} to pilot");
    }

    pub fn wait(mut self, limit: Duration) -> i32 {
        let start = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st.code().unwrap_or(-1);
            }
            if start.elapsed() > limit {
                panic!("pilot did not exit within {limit:?}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // A failed test must not leave pilot (or a PID namespace) behind holding pipes.
        pilot::init::kill(self.child.id() as i32, 9, true);
        let _ = self.child.wait();
    }
}

/// The Prometheus server: $PILOT_PROMETHEUS, else the one scripts/install-prometheus.sh
/// caches (never PATH: Debian's lacks Consul service discovery).
pub fn prometheus_bin() -> PathBuf {
    built_tool(
        "prometheus",
        "PILOT_PROMETHEUS",
        "prometheus-build",
        "github.com/prometheus/prometheus",
        "install-prometheus.sh",
        false,
    )
}

/// A tool a project script builds with go and caches: `$env_var`, else the cached build
/// (version from `scripts/<module_dir>/go.mod`), else (if `path_ok`) PATH; else the test
/// fails saying which script installs it.
pub fn built_tool(name: &str, env_var: &str, module_dir: &str, module: &str, script: &str, path_ok: bool) -> PathBuf {
    if let Ok(p) = std::env::var(env_var) {
        return PathBuf::from(p);
    }
    let gomod = std::fs::read_to_string(format!("{}/scripts/{module_dir}/go.mod", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let version = gomod
        .lines()
        .find_map(|l| l.strip_prefix(&format!("require {module} ")))
        .unwrap_or_else(|| panic!("{module} version in scripts/{module_dir}/go.mod"))
        .trim()
        .to_string();
    let cache = std::env::var("PILOT_CACHE").map(PathBuf::from).unwrap_or_else(|_| {
        let base = std::env::var("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|_| PathBuf::from(std::env::var("HOME").unwrap()).join(".cache"));
        base.join("pilot")
    });
    let cached = cache.join(format!("{name}-{version}")).join(name);
    if cached.exists() {
        return cached;
    }
    let on_path = Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .ok()
        .filter(|o| o.status.success() && path_ok);
    match on_path {
        Some(o) => PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()),
        None => panic!(
            "this test needs {name} {version}, which was not found (${env_var}, {}): run scripts/{script} \
             (builds it with go from the Go module proxy; scripts/test does this)",
            cached.display()
        ),
    }
}

/// Poll `f` until it gives a value; fail with `what` after `limit`.
pub fn eventually<T>(limit: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A payload that leaves `n` orphans (each `sleep 1.5` in the background of a shell that
/// exits), counts the processes whose parent is its own parent (the init under test), then
/// after `settle` seconds counts again with the zombies among them. It prints
/// `adopted=N` (orphans re-parented to the init while alive), then
/// `children-of-init=N zombies=Z`, and a `zombie: …` line for each zombie.
pub fn orphans_script(n: u32, settle: &str) -> String {
    format!(
        r#"
count() {{
  z=0; n=0
  for s in /proc/[0-9]*/stat; do
    read -r line < "$s" 2>/dev/null || continue
    rest=${{line##*) }}; state=${{rest%% *}}; ppid=${{rest#* }}; ppid=${{ppid%% *}}
    [ "$ppid" = "$PPID" ] && n=$((n+1)) && [ "$state" = Z ] && z=$((z+1)) && echo "zombie: $line"
  done
}}
for i in $(seq {n}); do sh -c 'sleep 1.5 &'; done
count; echo "adopted=$((n-1))"
sleep {settle}
count; echo "children-of-init=$n zombies=$z"
"#
    )
}

/// The static (musl) pilot of this tree, built by scripts/build-static.sh into its own target
/// directory (the test's cargo holds the lock on the usual one); its path.
pub fn static_pilot() -> PathBuf {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = run_limited(
        Command::new(repo.join("scripts/build-static.sh"))
            .env("CARGO_TARGET_DIR", repo.join("target/static-for-tests")),
        Duration::from_secs(900),
    );
    assert!(out.status.success(), "scripts/build-static.sh: {}", text(&out.stderr));
    PathBuf::from(text(&out.stdout).trim())
}

/// User + system CPU time `pid` has used, in clock ticks (see `clock_ticks_per_second`).
pub fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("process to measure");
    // After "(comm) ": state is [0], utime [11], stime [12].
    let after_comm = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

pub fn clock_ticks_per_second() -> u64 {
    let out = Command::new("getconf").arg("CLK_TCK").output().expect("getconf");
    text(&out.stdout).trim().parse().unwrap_or(100)
}

/// A process's output, line by line, as it comes (a thread reads it): tests wait on lines with
/// a timeout instead of blocking on a pipe.
pub fn lines_of(out: impl std::io::Read + Send + 'static) -> std::sync::mpsc::Receiver<String> {
    use std::io::BufRead;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}
