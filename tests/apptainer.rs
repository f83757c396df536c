//! pilot in real Apptainer images (Debian unstable's apptainer 1.4.5, run inside the root
//! scripts/make-sid-root.sh makes): the static binary, `apptainer build` of
//! apptainer/minimal.def, `run`, `exec -C` and `instance start|stop`, as root and as an
//! unprivileged user (user namespace), with the image's read-only root.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::Duration;

const ROOT_MSG: &str =
    "Apptainer tests run as root: they make a Debian unstable root (mmdebstrap) and run apptainer inside it";

struct Stage {
    /// Shared with the sid root as /pilot-work.
    work: PathBuf,
    static_pilot: PathBuf,
}

/// Build once per test binary: the static pilot, the payload, and minimal.sif.
fn stage() -> &'static Stage {
    static STAGE: OnceLock<Stage> = OnceLock::new();
    STAGE.get_or_init(|| {
        assert!(is_root(), "{ROOT_MSG}");
        let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
        let target = repo.join("target/static-for-tests");
        let static_pilot = static_pilot();
        let out = run_limited(&mut Command::new(repo.join("scripts/make-sid-root.sh")), Duration::from_secs(900));
        assert!(out.status.success(), "scripts/make-sid-root.sh: {}", text(&out.stderr));

        // The layout minimal.def's %files expect, relative to the build directory. Under
        // target/, replaced by each run: the stage lives in a static (never dropped), so a
        // temporary directory would be left behind in /tmp by every run.
        let work = target.join("apptainer-work");
        let _ = std::fs::remove_dir_all(&work);
        let bin_dir = work.join("build/target/x86_64-unknown-linux-musl/release");
        std::fs::create_dir_all(&bin_dir).unwrap();
        std::fs::create_dir_all(work.join("build/apptainer/examples")).unwrap();
        std::fs::copy(&static_pilot, bin_dir.join("pilot")).unwrap();
        for def in ["minimal.def", "pilot.def"] {
            std::fs::copy(repo.join("apptainer").join(def), work.join("build/apptainer").join(def)).unwrap();
        }
        for e in std::fs::read_dir(repo.join("apptainer/examples")).unwrap().flatten() {
            std::fs::copy(e.path(), work.join("build/apptainer/examples").join(e.file_name())).unwrap();
        }
        require("musl-gcc", "run scripts/build-static.sh (installs Debian's musl-tools)");
        let out = run_limited(
            Command::new("musl-gcc").args(["-static", "-O2", "-o"]).arg(work.join("payload")).arg(fixture("payload.c")),
            Duration::from_secs(60),
        );
        assert!(out.status.success(), "{}", text(&out.stderr));
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&work, std::fs::Permissions::from_mode(0o755)).unwrap();
        let stage = Stage { work, static_pilot };
        let out = in_root(
            &stage,
            "cd /pilot-work/build && apptainer build --force /pilot-work/minimal.sif apptainer/minimal.def",
        );
        assert!(out.status.success(), "apptainer build minimal.def: {}{}", text(&out.stdout), text(&out.stderr));
        stage
    })
}

/// pilot.def, built once: a Debian bookworm base by debootstrap from Debian's registry.
fn pilot_sif() -> &'static Stage {
    static BUILT: OnceLock<()> = OnceLock::new();
    let s = stage();
    BUILT.get_or_init(|| {
        // --notest: the build's %test would run with every capability, which this machine's
        // bounding set does not allow; `apptainer test` below runs it as HTCondor would.
        let out = in_root(
            s,
            "cd /pilot-work/build && apptainer build --notest --force /pilot-work/pilot.sif apptainer/pilot.def",
        );
        assert!(out.status.success(), "apptainer build pilot.def: {}{}", text(&out.stdout), text(&out.stderr));
    });
    s
}

/// A shell command inside the sid root, with the stage at /pilot-work.
fn in_root(stage: &Stage, script: &str) -> Output {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    run_limited(
        Command::new(repo.join("scripts/in-sid-root.sh")).args(["sh", "-c", script]).env("PILOT_WORK", &stage.work),
        Duration::from_secs(300),
    )
}

const BIND: &str = "-B /pilot-work/payload:/payload";
const AS_USER: &str = "setpriv --reuid 1000 --regid 1000 --clear-groups env HOME=/home/pilotuser";

fn all(o: &Output) -> String {
    text(&o.stdout) + &text(&o.stderr)
}

#[test]
fn the_release_binary_is_static() {
    let s = stage();
    let file = run_limited(Command::new("file").arg(&s.static_pilot), Duration::from_secs(10));
    let desc = text(&file.stdout);
    assert!(desc.contains("static-pie linked") || desc.contains("statically linked"), "{desc}");
    let ldd = run_limited(Command::new("ldd").arg(&s.static_pilot), Duration::from_secs(10));
    let said = all(&ldd);
    assert!(said.contains("statically linked") || said.contains("not a dynamic executable"), "{said}");
    // docs/size.md: 4.69 MB before issue 14's trimming, about 3.1 MB after. A dependency that
    // brings back regex's Unicode tables or a compiled-in CA set (0.3 MB or more) fails here.
    let len = std::fs::metadata(&s.static_pilot).unwrap().len();
    assert!(len <= 3_500_000, "the static binary grew to {len} bytes: see docs/size.md");
}

#[test]
fn run_passes_the_payload_status_through_the_shell_less_runscript() {
    let s = stage();
    let out = in_root(s, &format!("apptainer run {BIND} /pilot-work/minimal.sif /payload 5"));
    assert_eq!(out.status.code(), Some(5), "{}", all(&out));
    assert!(text(&out.stdout).contains("payload pid="), "{}", all(&out));
}

#[test]
fn exec_with_containall_as_root_pilot_is_not_pid_1() {
    let s = stage();
    let out = in_root(
        s,
        &format!(
            "APPTAINERENV_RUST_LOG=debug apptainer exec -C {BIND} /pilot-work/minimal.sif /usr/local/bin/pilot run -- /payload 6"
        ),
    );
    let said = all(&out);
    assert_eq!(out.status.code(), Some(6), "{said}");
    // -C gives a PID namespace whose PID 1 is Apptainer's own shim, so pilot is a subreaper.
    assert!(said.contains("not PID 1") && said.contains("PR_SET_CHILD_SUBREAPER"), "{said}");
    let ppid: i32 = said
        .split("ppid=")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .expect("payload line");
    assert!(ppid > 1 && ppid < 100, "the payload's parent is pilot, a low pid inside the new PID namespace: {ppid}");
}

#[test]
fn unprivileged_user_namespace_with_a_read_only_root() {
    let s = stage();
    let out = in_root(
        s,
        &format!(
            "{AS_USER} apptainer exec --userns -C {BIND} /pilot-work/minimal.sif /usr/local/bin/pilot run -- /payload rofs"
        ),
    );
    let said = all(&out);
    assert_eq!(out.status.code(), Some(0), "{said}");
    assert!(said.contains("root write: Read-only file system"), "the image root is read-only: {said}");
    assert!(said.contains("control: listening on /tmp/pilot-"), "the control socket went to a writable place: {said}");
    let out = in_root(
        s,
        &format!(
            "{AS_USER} apptainer exec --userns {BIND} /pilot-work/minimal.sif /usr/local/bin/pilot run -- /payload 9"
        ),
    );
    assert_eq!(out.status.code(), Some(9), "{}", all(&out));
}

#[test]
fn instance_start_and_stop() {
    let s = stage();
    let script = format!(
        "apptainer instance start {BIND} /pilot-work/minimal.sif pilot-inst /payload wait && sleep 2 && \
         apptainer instance list && apptainer instance stop pilot-inst && sleep 1; \
         cat /root/.apptainer/instances/logs/*/root/pilot-inst.out /root/.apptainer/instances/logs/*/root/pilot-inst.err 2>/dev/null"
    );
    let out = in_root(s, &script);
    let said = all(&out);
    assert!(said.contains("pilot-inst"), "listed: {said}");
    assert!(said.contains("payload pid="), "the startscript ran pilot and its payload: {said}");
    // `instance stop` sends SIGINT; pilot stops the payload in order with it.
    assert!(said.contains("payload got signal 2"), "{said}");
    assert!(said.contains("payload exited: exit status 3"), "{said}");
}

#[test]
fn worker_image_test_section_checks_the_config() {
    let s = pilot_sif();
    let out = in_root(s, "apptainer test /pilot-work/pilot.sif");
    assert_eq!(out.status.code(), Some(0), "{}", all(&out));
    assert!(all(&out).contains("pilot.json5: valid"), "{}", all(&out));
    // A broken config bound over the image's makes `apptainer test` (HTCondor's pre-job
    // check) fail with the diagnostic.
    std::fs::write(
        s.work.join("broken.json5"),
        "{ jobs: [ { name: \"a\", exec: \"true\", restarts: \"sometimes\" } ] }",
    )
    .unwrap();
    let out = in_root(s, "apptainer test -B /pilot-work/broken.json5:/etc/pilot/pilot.json5 /pilot-work/pilot.sif");
    assert_eq!(out.status.code(), Some(1), "{}", all(&out));
    assert!(all(&out).contains("jobs[0].restarts"), "{}", all(&out));
}

#[test]
fn worker_image_runs_a_payload_and_an_example_config() {
    let s = pilot_sif();
    let out = in_root(s, "apptainer run /pilot-work/pilot.sif sh -c 'cat /etc/debian_version; exit 4'");
    assert_eq!(out.status.code(), Some(4), "{}", all(&out));
    // The CVMFS pre-flight example: no /cvmfs here, so the payload must not start.
    let out = in_root(
        s,
        "PILOT_PAYLOAD='echo payload ran' apptainer run /pilot-work/pilot.sif -c /etc/pilot/examples/cvmfs-preflight.json5",
    );
    let said = all(&out);
    assert!(
        said.contains("CVMFS repository /cvmfs/atlas.cern.ch is not available")
            && said.contains("not starting the payload"),
        "{said}"
    );
    assert!(!said.contains("payload ran"), "{said}");
}

#[test]
fn worker_image_has_pilots_bash_completion() {
    let s = pilot_sif();
    let out = in_root(
        s,
        "apptainer exec /pilot-work/pilot.sif bash -c \
         'source /usr/share/bash-completion/completions/pilot && complete -p pilot'",
    );
    let said = all(&out);
    assert_eq!(out.status.code(), Some(0), "{said}");
    assert!(said.contains("_pilot") && said.trim_end().ends_with(" pilot"), "bash completes pilot with _pilot: {said}");
}
