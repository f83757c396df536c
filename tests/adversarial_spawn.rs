//! Adversarial tests of the spawn (`init::spawn`): its child runs `clone(CLONE_VM)` without
//! `CLONE_VFORK`, concurrently with pilot's threads and *in pilot's memory*, until it has
//! exec'd, searching PATH on file systems that may hang. What a hostile payload, config or
//! environment can do to pilot through that child.

mod common;
use common::*;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(30);

/// The children of `parent` (from /proc: each process's ppid).
fn children_of(parent: i32) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    dir.flatten()
        .filter_map(|e| {
            let pid = e.file_name().to_str()?.parse::<i32>().ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let rest = stat.get(stat.rfind(')')? + 2..)?;
            (rest.split(' ').nth(1)? == parent.to_string()).then_some(pid)
        })
        .collect()
}

/// pilot (`pilot ARGS`, run in `cwd`, with `RLIMIT_CORE` unlimited so that a core dump would
/// be written there when `core_pattern` is a plain file name) in a private mount namespace
/// where `cwd/hung` is a FUSE mount nobody ever answers: every access below it waits in the
/// kernel until the returned descriptor is closed (then ENOTCONN). The mount exists only in
/// pilot's namespace: nothing of the test can hang on it. pilot is `Child`'s own process
/// (prlimit, unshare and the shell exec each other).
fn pilot_with_hung_mount(
    cwd: &Path,
    args: &[&str],
    env: &[(&str, &str)],
) -> (Child, OwnedFd, std::sync::mpsc::Receiver<String>) {
    assert!(is_root(), "a FUSE mount needs root: run this test as root");
    require("prlimit", "apt-get install util-linux");
    require("unshare", "apt-get install util-linux");
    std::fs::create_dir_all(cwd.join("hung")).unwrap();
    let fuse: OwnedFd = std::fs::File::options()
        .read(true)
        .write(true)
        .open("/dev/fuse")
        .unwrap_or_else(|e| panic!("/dev/fuse: {e} (load the fuse module: modprobe fuse)"))
        .into();
    let script =
        "mount -i -t fuse -o fd=0,rootmode=40000,user_id=0,group_id=0 hung hung || exit 99; exec \"$@\" </dev/null";
    let mut cmd = Command::new("prlimit");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .args(["--core=unlimited", "--", "unshare", "--mount", "--propagation", "private", "--", "/bin/sh", "-c"])
        .arg(script)
        .arg("sh")
        .arg(pilot())
        .args(args)
        .current_dir(cwd)
        .env("TMPDIR", cwd)
        .env_remove("XDG_RUNTIME_DIR")
        .stdin(Stdio::from(fuse.try_clone().unwrap()))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn pilot under unshare");
    let out = child.stdout.take().unwrap();
    let rx = lines_of(out);
    (child, fuse, rx)
}

/// Finding 1. A signal whose default action dumps core (SIGQUIT, SIGABRT, SIGSEGV, ...)
/// reaching the spawn child before its exec — from anyone of pilot's user, or sent to the
/// job's process group while its PATH search waits on a hung CVMFS — made that child dump
/// core: a core image of the memory it shares, i.e. *all of pilot's memory* (environment,
/// Consul token, every job's arguments) written to the job's directory. On kernels before
/// 5.16 (EL8's 4.18, EL9's 5.14) it is worse: the kernel kills every process that shares
/// the dumping one's memory before it dumps, so pilot, PID 1, was SIGKILLed with it.
/// The child must end such a signal itself, without a core dump, until it has exec'd.
#[test]
fn a_core_dumping_signal_before_exec_dumps_nothing_of_pilot() {
    let dir = scratch("adv-core");
    let cfg = write_config(&dir, "{ jobs: [] }");
    let payload = dir.join("hung/payload").display().to_string();
    let (mut child, fuse, lines) = pilot_with_hung_mount(&dir, &["run", "-c", &cfg, "--", &payload], &[]);
    let pilot_pid = child.id() as i32;
    // The payload's child, waiting in its execve on the hung mount (mask restored by then).
    // (A first child of the same pid may be the shell's `mount`: look until one waits there.)
    let waits_on_fuse = |pid: &i32| {
        let wchan = std::fs::read_to_string(format!("/proc/{pid}/wchan")).unwrap_or_default();
        wchan.contains("fuse") || wchan.contains("request_wait_answer")
    };
    let spawned = eventually(Duration::from_secs(10), "pilot's child waiting on the hung mount", || {
        children_of(pilot_pid).into_iter().find(waits_on_fuse)
    });
    assert!(pilot::init::kill(spawned, libc::SIGQUIT, false), "SIGQUIT to the child");
    std::thread::sleep(Duration::from_millis(200));
    // The mount ends: execve returns ENOTCONN, the pending SIGQUIT is delivered.
    drop(fuse);
    let out = wait_limited(&mut child, LIMIT);
    let log: Vec<String> = lines.try_iter().collect();
    let log = log.join("\n");
    let cores: Vec<String> = std::fs::read_dir(&*dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("core"))
        .collect();
    assert!(cores.is_empty(), "the child dumped pilot's memory: {cores:?} ({log})");
    assert!(out.status.code().is_some(), "pilot ended by itself: {:?} ({log})", out.status);
    assert!(!log.contains("killed by SIGQUIT"), "the child died of SIGQUIT's default action (a core dump): {log}");
}

/// Finding 2. Where `clone(CLONE_VM)` without `CLONE_THREAD` is refused, the spawn falls back
/// to a fork-like clone; but only on EINVAL (qemu-user). A seccomp filter refuses with the
/// errno it was written with, EPERM nearly always (libseccomp's and the container runtimes'
/// default): then every spawn failed ("cannot execute sh: Operation not permitted", 126),
/// the payload never ran, although fork works there. Under such a filter the payload, a job
/// and a check run, and failures read as without it.
#[test]
fn a_seccomp_filter_refusing_clone_vm_with_eperm_takes_the_fork_like_path() {
    require_python();
    let dir = scratch("adv-seccomp");
    let check = dir.join("checked");
    let cfg = write_config(
        &dir,
        &format!(
            r#"{{ consul: "127.0.0.1:1", jobs: [
                {{ name: "job", exec: ["sh", "-c", "echo job-ran"] }},
                {{ name: "missing", exec: "no-such-program-adv" }},
                {{ name: "svc", exec: "sleep 1000", port: 8080, interfaces: ["static:127.0.0.1"],
                   health: {{ exec: ["touch", "{}"], interval: 1, ttl: 10 }} }} ] }}"#,
            check.display()
        ),
    );
    let payload = format!("while [ ! -e {} ]; do sleep 0.1; done; echo payload-ran", check.display());
    let out = run_limited(
        Command::new("python3")
            .arg(fixture("seccomp_refuse_clone_vm.py"))
            .arg(pilot())
            .args(["run", "-c", &cfg, "--", "sh", "-c", &payload])
            .env("TMPDIR", &*dir),
        LIMIT,
    );
    let log = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(!log.contains("Operation not permitted"), "a spawn failed under the filter: {log}");
    assert!(log.lines().any(|l| l.ends_with("job-ran")), "the job ran: {log}");
    assert!(log.contains("job missing: no-such-program-adv: command not found"), "the same message: {log}");
    assert!(log.lines().any(|l| l == "payload-ran"), "the payload ran after the check did: {log}");
    assert_eq!(out.status.code(), Some(0), "{log}");
}

/// Finding 3. The spawn kept every child's list of PATH candidates (one C string per PATH
/// entry, for the failure messages) until the child was reaped: for a job, its whole life.
/// A PATH of tens of thousands of entries (120 KB: what an environment may hold) cost some
/// 3.4 MB of pilot's memory per running job that names its program without a `/`: 50 such
/// jobs held 170 MB (measured). The list is needed only until the child has exec'd.
#[test]
fn a_huge_path_is_not_kept_for_every_running_job() {
    const JOBS: usize = 50;
    let dir = scratch("adv-path");
    let jobs: Vec<String> = (0..JOBS).map(|i| format!(r#"{{ name: "j{i}", exec: ["sleep", "1000"] }}"#)).collect();
    let cfg = write_config(&dir, &format!("{{ jobs: [ {} ] }}", jobs.join(", ")));
    // 60,000 relative entries that do not exist (each costs the child a lookup), then the real one.
    let mut path = vec!["a"; 60_000];
    let real = ["/usr/bin", "/bin"].into_iter().find(|d| Path::new(d).join("sleep").exists()).expect("sleep");
    path.push(real);
    let r = Running::start(
        Command::new(pilot())
            .args(["run", "-c", &cfg, "--", "/bin/sh", "-c", "echo ready; exec sleep 1000"])
            .env("PATH", path.join(":")),
    );
    r.expect_line(|l| l == "ready", "ready");
    let pid = r.child.id() as i32;
    let running = || {
        children_of(pid)
            .into_iter()
            .filter(|c| std::fs::read_to_string(format!("/proc/{c}/comm")).is_ok_and(|n| n.trim() == "sleep"))
            .count()
    };
    eventually(LIMIT, "every job running its program", || (running() == JOBS + 1).then_some(()));
    std::thread::sleep(Duration::from_millis(500));
    let rss = rss_kib(pid as u32);
    assert!(rss < 96 * 1024, "pilot holds {rss} KiB with {JOBS} jobs running under a huge PATH");
}

/// What held up, kept as a guard: jobs every millisecond (one that runs, one whose program
/// is missing, each killed by its 1 ms timeout as often as not *before* its exec) and a check
/// every 10 ms: thousands of spawns a second, many signalled in the child's pre-exec window.
/// pilot's mappings (each spawn maps a stack and a report page) and memory stay flat, every
/// child is reaped, and pilot still answers.
#[test]
fn a_spawn_storm_with_kills_before_exec_leaves_no_mappings_or_memory_behind() {
    let dir = scratch("adv-storm");
    let socket = dir.join("pilot.sock");
    let cfg = write_config(
        &dir,
        &format!(
            r#"{{ consul: "127.0.0.1:1", control: {{ socket: "{}" }}, jobs: [
                {{ name: "t", exec: "true", when: {{ interval: "1ms" }} }},
                {{ name: "nf", exec: "no-such-program-adv", when: {{ interval: "1ms" }} }},
                {{ name: "svc", exec: "sleep 1000", port: 8080, interfaces: ["static:127.0.0.1"],
                   health: {{ exec: "true", interval: "10ms", ttl: 10 }} }} ] }}"#,
            socket.display()
        ),
    );
    let r = Running::start(Command::new(pilot()).args([
        "run",
        "-c",
        &cfg,
        "--",
        "/bin/sh",
        "-c",
        "echo ready; exec sleep 1000",
    ]));
    r.expect_line(|l| l == "ready", "ready");
    let pid = r.child.id();
    let maps = || std::fs::read_to_string(format!("/proc/{pid}/maps")).map(|m| m.lines().count()).unwrap_or(0);
    std::thread::sleep(Duration::from_secs(2));
    let (maps_before, rss_before) = (maps(), rss_kib(pid));
    std::thread::sleep(Duration::from_secs(4));
    let (maps_after, rss_after) = (maps(), rss_kib(pid));
    assert!(maps_after < maps_before + 24, "mappings grew from {maps_before} to {maps_after}");
    assert!(rss_after < rss_before + 8 * 1024, "RSS grew from {rss_before} to {rss_after} KiB");
    let out = run_limited(Command::new(pilot()).args(["status", "--socket"]).arg(&socket), LIMIT);
    assert!(out.status.success(), "pilot status: {}{}", text(&out.stdout), text(&out.stderr));
    // No zombie: every child was reaped (a few may have just exited).
    let zombies = || {
        children_of(pid as i32)
            .into_iter()
            .filter(|c| {
                let stat = std::fs::read_to_string(format!("/proc/{c}/stat")).unwrap_or_default();
                stat.rfind(')').and_then(|i| stat.get(i + 2..i + 3)) == Some("Z")
            })
            .count()
    };
    eventually(Duration::from_secs(5), "no lasting zombie", || (zombies() < 3).then_some(()));
}

/// Held up, kept as a guard: a child stopped (SIGSTOP) before its exec keeps its arguments
/// and stack however long it stays stopped, while pilot spawns a check every 10 ms (whose
/// allocations would reuse freed memory): continued, it finds its program on the next PATH
/// entry and runs it with exactly its arguments. The child is held in its PATH search by a
/// hung first entry, stopped there, and the mount then ends (ENOTCONN: the search goes on).
#[test]
fn a_child_stopped_before_exec_keeps_its_arguments_while_pilot_spawns_on() {
    let dir = scratch("adv-stopped");
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let seen = dir.join("seen");
    let probe = bin.join("adv-probe");
    std::fs::write(&probe, format!("#!/bin/sh\nprintf '%s|' \"$@\" > {}\nexec sleep 1000\n", seen.display())).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&probe, std::fs::Permissions::from_mode(0o755)).unwrap();
    let ticks = dir.join("ticks");
    let cfg = write_config(
        &dir,
        &format!(
            r#"{{ consul: "127.0.0.1:1", jobs: [
                {{ name: "probe", exec: ["adv-probe", "first argument", "second", "third ümlaut"] }},
                {{ name: "svc", exec: "/bin/sleep 1000", port: 8080, interfaces: ["static:127.0.0.1"],
                   health: {{ exec: ["/bin/sh", "-c", "echo x >> {}"], interval: "10ms", ttl: 10 }} }} ] }}"#,
            ticks.display()
        ),
    );
    let path = format!("{}:{}:/usr/bin:/bin", dir.join("hung").display(), bin.display());
    let (mut child, fuse, _lines) =
        pilot_with_hung_mount(&dir, &["run", "-c", &cfg, "--", "/bin/sleep", "1000"], &[("PATH", &path)]);
    let pilot_pid = child.id() as i32;
    let waits_on_fuse = |pid: &i32| {
        let wchan = std::fs::read_to_string(format!("/proc/{pid}/wchan")).unwrap_or_default();
        wchan.contains("fuse") || wchan.contains("request_wait_answer")
    };
    let spawned = eventually(Duration::from_secs(10), "the probe's child waiting on the hung mount", || {
        children_of(pilot_pid).into_iter().find(waits_on_fuse)
    });
    assert!(pilot::init::kill(spawned, libc::SIGSTOP, false), "SIGSTOP to the child");
    std::thread::sleep(Duration::from_millis(200));
    drop(fuse);
    let state = |pid: i32| {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        stat.rfind(')').and_then(|i| stat.get(i + 2..i + 3)).unwrap_or("").to_string()
    };
    eventually(Duration::from_secs(10), "the child stopped before its exec", || (state(spawned) == "T").then_some(()));
    // pilot spawns checks meanwhile: a hundred or so while the child stays stopped.
    let count = || std::fs::read_to_string(&ticks).map(|t| t.lines().count()).unwrap_or(0);
    let before = count();
    eventually(LIMIT, "checks to run while the child is stopped", || (count() >= before + 50).then_some(()));
    assert!(!seen.exists(), "the probe ran while its child was stopped");
    assert!(pilot::init::kill(spawned, libc::SIGCONT, false), "SIGCONT to the child");
    let got = eventually(Duration::from_secs(10), "the probe to run", || {
        std::fs::read_to_string(&seen).ok().filter(|s| !s.is_empty())
    });
    assert_eq!(got, "first argument|second|third ümlaut|", "the arguments the child exec'd with");
    assert!(pilot::init::kill(pilot_pid, libc::SIGTERM, false));
    let _ = wait_limited(&mut child, LIMIT);
}

/// Finding 4. A script on a file system mounted `noexec` (grid sites mount /tmp, /dev/shm
/// and job scratch directories that way) was reported as "interpreter /bin/sh of S cannot
/// run: EACCES": the healthy interpreter blamed, the real cause (the script's own mount)
/// never named. The child now asks statfs when execve gives EACCES for an executable file.
#[test]
fn a_script_on_a_noexec_mount_is_not_blamed_on_its_interpreter() {
    assert!(is_root(), "mounting a tmpfs needs root: run this test as root");
    require("unshare", "apt-get install util-linux");
    let dir = scratch("adv-noexec");
    let nx = dir.join("nx");
    std::fs::create_dir_all(&nx).unwrap();
    let cfg = write_config(&dir, "{ jobs: [] }");
    let nx = nx.display().to_string();
    let script = format!(
        "mount -t tmpfs -o noexec tmpfs {nx} || exit 99; printf '#!/bin/sh\\necho ran\\n' > {nx}/s.sh; chmod +x {nx}/s.sh; exec \"$@\""
    );
    let out = run_limited(
        Command::new("unshare")
            .args(["--mount", "--propagation", "private", "--", "/bin/sh", "-c", &script, "sh", pilot()])
            .args(["run", "-c", &cfg, "--", &format!("{nx}/s.sh")])
            .env("TMPDIR", &*dir),
        LIMIT,
    );
    let log = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(126), "cannot run: 126 ({log})");
    assert!(!log.contains("interpreter /bin/sh"), "the interpreter is blamed: {log}");
    assert!(log.contains(&format!("cannot execute {nx}/s.sh: EACCES")), "the script is named: {log}");
    assert!(log.contains("its file system is mounted noexec"), "the cause is named: {log}");
}

/// Finding 5. A script saved with DOS line endings (`#!/bin/sh\r\n`) was reported as
/// "interpreter /bin/sh of S not found", although /bin/sh is there: the kernel looks for
/// "/bin/sh\r" (its `#!` parser splits on spaces and tabs only), while pilot's diagnosis split
/// on any whitespace and printed the `\r` away. The name is now read as the kernel reads it,
/// shown escaped, with the cause.
#[test]
fn a_script_with_dos_line_endings_is_named_as_such() {
    let dir = scratch("adv-dos");
    let cfg = write_config(&dir, "{ jobs: [] }");
    let script = dir.join("dos.sh");
    std::fs::write(&script, "#!/bin/sh\r\necho ran\r\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out =
        run_limited(Command::new(pilot()).args(["run", "-c", &cfg, "--"]).arg(&script).env("TMPDIR", &*dir), LIMIT);
    let log = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(127), "not found: 127 ({log})");
    assert!(!log.contains("interpreter /bin/sh of"), "/bin/sh is there, yet named as missing: {log}");
    assert!(log.contains(r#"interpreter "/bin/sh\r""#), "the name the kernel looked for: {log}");
    assert!(log.contains("DOS line endings"), "the cause: {log}");
}

/// Finding 6. An ELF program for another machine (an image built for aarch64 on an x86_64
/// worker node, or the reverse, without binfmt emulation) fails execve with ENOEXEC, which
/// the spawn took for a script without `#!` and gave to /bin/sh: the shell ran the binary's
/// bytes as commands and the payload ended with "./prog: 1: ELF...: not found" and 127, "not
/// found", for a program that is there. A binary (the ELF magic, or a NUL in its first line,
/// as bash tests) now fails as a binary: ENOEXEC named, 126.
#[test]
fn an_elf_program_for_another_machine_is_not_run_as_a_shell_script() {
    let dir = scratch("adv-elf");
    let cfg = write_config(&dir, "{ jobs: [] }");
    // The ELF header of an executable for the other architecture (EM_AARCH64 183, EM_X86_64 62).
    let machine: u16 = if cfg!(target_arch = "aarch64") { 62 } else { 183 };
    let mut elf = b"\x7fELF\x02\x01\x01\x00".to_vec();
    elf.extend_from_slice(&[0; 8]);
    for half in [2u16, machine] {
        elf.extend_from_slice(&half.to_le_bytes());
    }
    elf.extend_from_slice(&1u32.to_le_bytes());
    elf.extend_from_slice(&[0; 104]);
    let prog = dir.join("other-machine");
    std::fs::write(&prog, &elf).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&prog, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = run_limited(Command::new(pilot()).args(["run", "-c", &cfg, "--"]).arg(&prog).env("TMPDIR", &*dir), LIMIT);
    let log = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(126), "cannot run: 126 ({log})");
    assert!(!log.contains("not found"), "a program that is there reported as not found: {log}");
    assert!(log.contains(&format!("cannot execute {}: ENOEXEC", prog.display())), "ENOEXEC named: {log}");
    assert!(log.contains("for another machine"), "the likely cause: {log}");
}
