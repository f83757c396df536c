//! The aarch64 static binary (WLCG sites run ARM worker nodes) under `qemu-aarch64-static`
//! (Debian's qemu-user-static, called directly: binfmt_misc is not needed): the init
//! essentials — exit status and death by signal, signal forwarding, orphan reaping as PID 1
//! — and `check-config` on every ContainerPilot fixture, whose answers must be the native
//! binary's, byte for byte.
//!
//! What qemu-user cannot show: reaping as a child subreaper (qemu 7.2 answers
//! `prctl(PR_SET_CHILD_SUBREAPER)` with EINVAL; pilot says so and carries on, which is tested)
//! and real-time signals (qemu maps them between host and guest numbers and keeps some for
//! itself: a host SIGRTMIN+2 kills the emulator). tests/init.rs covers both natively.
//!
//! The binary: `$PILOT_AARCH64` (e.g. the artifact scripts/release.sh made), else built once per
//! test run by `scripts/build-static.sh aarch64-unknown-linux-musl dev` into
//! target/aarch64-for-tests (cargo's cache makes later runs a no-op). The dev profile is the
//! same code as the release build without LTO and optimisation, which would make the suite
//! minutes slower; it also keeps overflow checks and debug assertions on.

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::Duration;

/// Generous: every instruction of pilot is emulated.
const LIMIT: Duration = Duration::from_secs(60);

fn qemu() -> &'static str {
    require(
        "qemu-aarch64-static",
        "run scripts/setup-test-deps.sh (installs Debian's qemu-user-static, gcc-aarch64-linux-gnu and the \
         aarch64-unknown-linux-musl Rust target)",
    );
    "qemu-aarch64-static"
}

/// The aarch64 pilot, checked to be a static aarch64 executable.
fn aarch64_pilot() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let bin = match std::env::var_os("PILOT_AARCH64") {
            Some(p) => PathBuf::from(p),
            None => {
                require(
                    "aarch64-linux-gnu-gcc",
                    "run scripts/setup-test-deps.sh (installs Debian's gcc-aarch64-linux-gnu, for ring's C code)",
                );
                let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
                // Its own target directory: the test's cargo holds the lock on the usual one.
                let out = run_limited(
                    Command::new(repo.join("scripts/build-static.sh"))
                        .args(["aarch64-unknown-linux-musl", "dev"])
                        .env("CARGO_TARGET_DIR", repo.join("target/aarch64-for-tests")),
                    Duration::from_secs(1800),
                );
                assert!(
                    out.status.success(),
                    "scripts/build-static.sh aarch64-unknown-linux-musl dev failed (scripts/setup-test-deps.sh \
                     installs what it needs):\n{}",
                    text(&out.stderr)
                );
                PathBuf::from(text(&out.stdout).trim())
            }
        };
        let file = run_limited(Command::new("file").arg("-b").arg(&bin), Duration::from_secs(10));
        let desc = text(&file.stdout);
        assert!(desc.contains("ARM aarch64"), "{}: not an aarch64 executable: {desc}", bin.display());
        assert!(
            desc.contains("statically linked") || desc.contains("static-pie linked"),
            "{}: not static: {desc}",
            bin.display()
        );
        bin
    })
}

/// `qemu-aarch64-static PILOT ARGS`, optionally behind a prefix (`unshare …`).
fn a64(prefix: &[&str], args: &[&str]) -> Command {
    let (program, rest) = match prefix.split_first() {
        Some((p, rest)) => (*p, rest),
        None => (qemu(), &[][..]),
    };
    let mut cmd = Command::new(program);
    cmd.args(rest);
    if !prefix.is_empty() {
        cmd.arg(qemu());
    }
    cmd.arg(aarch64_pilot()).args(args);
    cmd
}

fn run_payload(prefix: &[&str], payload: &[&str]) -> Output {
    run_limited(&mut a64(prefix, &[&["run", "--"], payload].concat()), LIMIT)
}

/// As child subreaper, and as PID 1 of a new PID namespace (root, then a user namespace).
fn prefixes() -> Vec<Vec<&'static str>> {
    require("unshare", "apt-get install util-linux");
    vec![
        vec![],
        vec!["unshare", "--pid", "--fork", "--mount-proc"],
        vec!["unshare", "--user", "--map-root-user", "--pid", "--fork", "--mount-proc"],
    ]
}

#[test]
fn the_aarch64_binary_runs_and_says_its_version() {
    let out = run_limited(&mut a64(&[], &["version"]), LIMIT);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), format!("pilot {}\n", env!("CARGO_PKG_VERSION")));
}

/// `f` for each item on a thread of its own: every run is slow under emulation, and mostly
/// waiting. A failure panics the scope, after the failing thread has printed its message.
fn each_at_once<T: Sync>(items: &[T], f: impl Fn(&T) + Sync) {
    std::thread::scope(|s| {
        for item in items {
            s.spawn(|| f(item));
        }
    });
}

#[test]
fn exit_status_and_death_by_signal_pass_through() {
    each_at_once(&prefixes(), |prefix| {
        for code in [0, 1, 42, 255] {
            let out = run_payload(prefix, &["sh", "-c", &format!("exit {code}")]);
            assert_eq!(out.status.code(), Some(code), "{prefix:?}: payload exit {code}: {}", text(&out.stderr));
        }
        for (name, num) in [("INT", 2), ("KILL", 9), ("TERM", 15)] {
            let out = run_payload(prefix, &["sh", "-c", &format!("kill -{name} $$")]);
            assert_eq!(out.status.code(), Some(128 + num), "{prefix:?}: payload killed by SIG{name}");
        }
        let out = run_payload(prefix, &["/nonexistent/program"]);
        assert_eq!(out.status.code(), Some(127), "{prefix:?}: {}", text(&out.stderr));
    });
}

#[test]
fn signals_are_forwarded_to_the_payload() {
    require_python();
    let pilot = Running::start(&mut a64(&[], &["run", "--", "python3", &fixture("print_signals.py")]));
    pilot.expect_line_within(|l| l.starts_with("ready"), "ready from the payload", LIMIT);
    for (name, num) in [("SIGHUP", 1), ("SIGQUIT", 3), ("SIGUSR1", 10), ("SIGUSR2", 12), ("SIGWINCH", 28)] {
        pilot.signal(num);
        pilot.expect_line_within(|l| l == name, name, LIMIT);
    }
    pilot.signal(15);
    pilot.expect_line_within(|l| l == "SIGTERM", "SIGTERM", LIMIT);
    assert_eq!(pilot.wait(LIMIT), 0, "the payload exited 0 after SIGTERM, so must pilot");
}

/// Not PID 1 under qemu-user, pilot cannot become a subreaper (see the top): it must say so
/// once, plainly, and run the payload as usual.
#[test]
fn without_a_subreaper_pilot_warns_and_carries_on() {
    let out = run_payload(&[], &["sh", "-c", "echo payload ran; exit 3"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "payload ran\n");
    let said = text(&out.stderr);
    assert!(
        said.contains("cannot become a child subreaper") && !said.contains("panicked"),
        "{said}\n(if this qemu-user now allows PR_SET_CHILD_SUBREAPER, test reaping as subreaper here instead)"
    );
    assert_eq!(said.lines().count(), 1, "one warning: {said}");
}

/// 20 double-forked orphans (tests/init.rs does 100 natively): each `sh -c 'sleep 1.5 &'`
/// exits at once, leaving a sleep whose parent is gone; all must be adopted by pilot and
/// reaped, none left a zombie.

#[test]
fn orphans_are_reaped_as_pid1() {
    let pid1: Vec<_> = prefixes().into_iter().filter(|p| !p.is_empty()).collect();
    each_at_once(&pid1, |prefix| {
        let out = run_payload(prefix, &["sh", "-c", &orphans_script(20, "3")]);
        let stdout = text(&out.stdout);
        assert!(out.status.success(), "{prefix:?}: {stdout}{}", text(&out.stderr));
        assert!(stdout.contains("adopted=20\n"), "{prefix:?}: all 20 orphans re-parented to pilot: {stdout}");
        assert!(stdout.contains("children-of-init=1 zombies=0"), "{prefix:?}: all reaped: {stdout}");
        assert!(!stdout.contains("zombie:"), "{prefix:?}: {stdout}");
    });
}

const FIXTURES: &str = CP_FIXTURES;

/// `check-config -c FILE` of a binary (behind qemu or not): exit code and everything it said.
fn check(mut cmd: Command, file: &str) -> (Option<i32>, String) {
    cmd.args(["check-config", "-c", file]).env("CONSUL", "consul").env("APP_PORT", "8000");
    let out = run_limited(&mut cmd, LIMIT);
    (out.status.code(), text(&out.stdout) + &text(&out.stderr))
}

#[test]
fn check_config_accepts_every_fixture_and_refuses_every_mistake_as_natively() {
    let valid = json5_files(FIXTURES);
    let mistakes = json5_files(&format!("{FIXTURES}/mistakes"));
    assert!(valid.len() >= 15 && mistakes.len() >= 5, "the fixtures: {valid:?} {mistakes:?}");
    let cases: Vec<(String, i32)> =
        valid.into_iter().map(|f| (f, 0)).chain(mistakes.into_iter().map(|f| (f, 1))).collect();
    each_at_once(&cases, |(f, expected)| {
        let arm = check(a64(&[], &[]), f);
        assert_eq!(arm.0, Some(*expected), "{f} under qemu-aarch64: {}", arm.1);
        let native = check(Command::new(pilot()), f);
        assert_eq!(arm, native, "{f}: the aarch64 binary answers as the native one");
    });
}
