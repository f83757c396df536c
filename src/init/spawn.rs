//! Starting a process: a vfork-style clone + execve by hand. `std::process::Command` is not usable in an
//! init: it passes the *current* (fully blocked) signal mask to the child, and after an
//! exec failure it calls `waitpid` on the child itself, racing pilot's global reaper (the
//! ContainerPilot #439 class of bug). Here the child gets back the mask pilot inherited,
//! default SIGPIPE, its own process group and, for the payload, the terminal.
//!
//! The child is made with `clone(CLONE_VM | CLONE_VFORK)`, as `posix_spawn` and Go's
//! `os/exec` do, not `fork`: no copy of pilot's page tables and no copy-on-write faults
//! afterwards (a health check every few seconds pays this each time), and since the calling
//! thread is suspended until the child has exec'd or exited, a failure's step and errno are
//! simply left in shared memory (`ChildArgs::report`): no error pipe, no read.

use super::signals::Inherited;
use std::ffi::CString;
use std::os::fd::RawFd;
use std::path::Path;

pub enum Stdio {
    Inherit,
    Fd(RawFd),
}

pub struct Spec<'a> {
    /// Already resolved on PATH (see `pathsearch`), so the child only calls execve.
    pub program: &'a Path,
    pub argv: &'a [String],
    pub env: &'a [(String, String)],
    pub stdin: Stdio,
    pub stdout: Stdio,
    pub stderr: Stdio,
    /// Make the child's process group the terminal's foreground group (the payload).
    pub foreground: bool,
    /// The job's `user`, `group`, `capabilities`, `no_new_privs` (None: pilot's own).
    pub privileges: Option<&'a super::privileges::Plan>,
}

#[derive(Debug)]
pub struct SpawnError {
    /// The child that failed to exec, if fork succeeded: its exit (126/127) still arrives
    /// through the reaper and must be ignored by whoever tracks it.
    pub pid: Option<i32>,
    /// What failed, with the step and the errno ("dup2 of stdout failed: EBADF: ...").
    pub error: std::io::Error,
    /// The shell convention: 127 when the program (or its interpreter) does not exist, 126
    /// when it cannot run.
    pub code: i32,
}

impl SpawnError {
    /// The exit status a shell would give: 127 not found, 126 cannot run.
    pub fn exit_code(&self) -> i32 {
        self.code
    }

    fn before_fork(error: std::io::Error) -> SpawnError {
        SpawnError { pid: None, error, code: 126 }
    }
}

impl std::fmt::Display for SpawnError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.error.fmt(f)
    }
}

/// The step of the child's set-up that failed, left with its errno in memory the parent
/// reads once the child is gone, so the parent can say what went wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Setpgid = 1,
    Tcsetpgrp,
    /// Moving a descriptor out of the way of 0–2 before the dup2s.
    Relocate,
    DupStdin,
    DupStdout,
    DupStderr,
    SigpipeDefault,
    Mask,
    Execve,
    /// The ENOEXEC fallback: `/bin/sh SCRIPT ARGS...`.
    ExecveShell,
    /// The job's identity (`privileges::apply_in_child`); the bits above the low 8 say which
    /// of its steps, and for which capability.
    Privileges,
}

impl Step {
    fn dup(target: usize) -> Step {
        [Step::DupStdin, Step::DupStdout, Step::DupStderr][target]
    }

    fn describe(self) -> &'static str {
        match self {
            Step::Setpgid => "setpgid (own process group)",
            Step::Tcsetpgrp => "tcsetpgrp (taking the terminal)",
            Step::Relocate => "moving a descriptor above 2",
            Step::DupStdin => "dup2 of stdin",
            Step::DupStdout => "dup2 of stdout",
            Step::DupStderr => "dup2 of stderr",
            Step::SigpipeDefault => "resetting SIGPIPE to its default",
            Step::Mask => "restoring the signal mask",
            Step::Execve => "execve",
            Step::ExecveShell => "execve of /bin/sh for a script without #!",
            Step::Privileges => "setting the job's user and capabilities",
        }
    }
}

fn cstring(s: &str) -> Result<CString, SpawnError> {
    CString::new(s).map_err(|_| {
        SpawnError::before_fork(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("argument contains a NUL byte: {s:?}"),
        ))
    })
}

/// What a file says it needs to run: the interpreter of its `#!` line, or, for an ELF
/// program, its dynamic loader (execve reports a missing one as ENOENT too).
enum Needs {
    Interpreter(String),
    Elf,
    Nothing,
}

/// What `program` needs to run (see [`Needs`]), from its first bytes.
///
/// Runs on the supervisor thread after execve failed, and the file may have been swapped
/// since the lookup: opened with `O_NONBLOCK` (a FIFO put there would otherwise block the
/// open until a writer comes) and read only if it is a regular file.
fn needs(program: &Path) -> Needs {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let mut head = [0u8; 256];
    let opened = std::fs::File::options()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(program)
        .ok()
        .filter(|f| f.metadata().is_ok_and(|m| m.is_file()));
    let Some(mut file) = opened else { return Needs::Nothing };
    let mut n = 0;
    while n < head.len() {
        match file.read(&mut head[n..]) {
            Ok(0) | Err(_) => break,
            Ok(k) => n += k,
        }
    }
    let head = &head[..n];
    if head.starts_with(b"\x7fELF") {
        return Needs::Elf;
    }
    let Some(line) = head.strip_prefix(b"#!") else { return Needs::Nothing };
    let line = line.split(|b| *b == b'\n').next().unwrap_or(line);
    match String::from_utf8_lossy(line).split_whitespace().next() {
        Some(i) => Needs::Interpreter(i.to_string()),
        None => Needs::Nothing,
    }
}

/// The parent's account of a failure the child reported.
fn child_failure(pid: i32, program: &Path, step: Step, errno: i32) -> SpawnError {
    // "E2BIG: Argument list too long (os error 7)": the errno's name, then the system's
    // text once (Errno's Display has its own description already).
    let os = std::io::Error::from_raw_os_error(errno);
    let kind = os.kind();
    let name = format_args!("{:?}: {os}", nix::errno::Errno::from_raw(errno));
    let mut code = if errno == libc::ENOENT { 127 } else { 126 };
    let message = match step {
        // The program was found before fork, so ENOENT (or EACCES on an executable file)
        // from execve is about its `#!` interpreter: name that, not the script.
        Step::Execve if matches!(errno, libc::ENOENT | libc::EACCES) => match needs(program) {
            Needs::Interpreter(interp) if errno == libc::ENOENT => {
                format!("interpreter {interp} of {} not found", program.display())
            }
            Needs::Interpreter(interp) => {
                format!("interpreter {interp} of {} cannot run: {name}", program.display())
            }
            Needs::Elf if errno == libc::ENOENT => {
                format!("its dynamic loader (ELF interpreter) is missing: {name}")
            }
            _ => format!("{name}"),
        },
        Step::Execve => format!("{name}"),
        Step::ExecveShell => {
            code = 126;
            format!("{} has no #! line and /bin/sh cannot run it: {name}", program.display())
        }
        other => {
            code = 126;
            format!("{} failed: {name}", other.describe())
        }
    };
    SpawnError { pid: Some(pid), error: std::io::Error::new(kind, message), code }
}

/// The child's stack: it runs on its own stack while the parent's thread is suspended
/// (`CLONE_VFORK`), and only makes a few libc calls and `execve` (a few hundred bytes deep;
/// glibc's `posix_spawn` uses 32 KiB). Allocated, not touched: only the pages the child
/// uses are ever faulted in.
const CHILD_STACK: usize = 64 << 10;

pub fn spawn(spec: &Spec, inherited: &Inherited) -> Result<i32, SpawnError> {
    // Everything the child needs is built before the clone: the child shares our memory and
    // may only make async-signal-safe calls (no allocation, no locks).
    let program = cstring(&spec.program.to_string_lossy())?;
    let argv_c = spec.argv.iter().map(|a| cstring(a)).collect::<Result<Vec<_>, _>>()?;
    let env_c = spec.env.iter().map(|(k, v)| cstring(&format!("{k}={v}"))).collect::<Result<Vec<_>, _>>()?;
    let mut argv_p: Vec<*const libc::c_char> = argv_c.iter().map(|c| c.as_ptr()).collect();
    argv_p.push(std::ptr::null());
    let mut env_p: Vec<*const libc::c_char> = env_c.iter().map(|c| c.as_ptr()).collect();
    env_p.push(std::ptr::null());
    // For a script without `#!` (execve gives ENOEXEC): `/bin/sh SCRIPT ARGS...`, as
    // execvp and tini do.
    let sh = c"/bin/sh";
    let mut sh_argv: Vec<*const libc::c_char> = vec![sh.as_ptr(), program.as_ptr()];
    sh_argv.extend(argv_p.iter().skip(1).copied());
    if sh_argv.last() != Some(&std::ptr::null()) {
        sh_argv.push(std::ptr::null());
    }
    let fds = [&spec.stdin, &spec.stdout, &spec.stderr].map(|s| match s {
        Stdio::Inherit => -1,
        Stdio::Fd(fd) => *fd,
    });
    // SAFETY: isatty only inspects the fd.
    let take_tty = spec.foreground && unsafe { libc::isatty(0) } == 1;
    let exec = Exec { program: &program, argv: &argv_p, env: &env_p, sh_argv: &sh_argv, privileges: spec.privileges };
    let args = ChildArgs { take_tty, fds, inherited, exec: &exec, report: std::cell::Cell::new(None) };
    let mut stack: Vec<std::mem::MaybeUninit<u8>> = Vec::with_capacity(CHILD_STACK);
    // The stack grows down on every Linux target pilot builds for: pass its top, 16-aligned.
    let top = (stack.as_mut_ptr() as usize + CHILD_STACK) & !15;

    // SAFETY: clone with CLONE_VM | CLONE_VFORK is what posix_spawn does: the child runs
    // `child_entry` on `stack` in our address space and this thread is suspended until the
    // child has called execve (successfully) or _exit. So everything the child reads
    // (`args` and what it points to, all on this thread's stack or heap) lives until then,
    // and nothing else writes it meanwhile. The child makes only async-signal-safe calls,
    // allocates nothing and never returns (see `child`). Other threads run on; they never
    // touch `args` or `stack`. SIGCHLD as the exit signal: the signal thread reaps it.
    let pid = unsafe {
        libc::clone(
            child_entry,
            top as *mut libc::c_void,
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            (&args as *const ChildArgs).cast_mut().cast(),
        )
    };
    if pid < 0 {
        return Err(SpawnError::before_fork(std::io::Error::last_os_error()));
    }
    drop(stack);
    // The child is past execve or gone: what it left in `report` is final. (Its process
    // group is set: the child did it before we were resumed, so a group signal sent right
    // after spawn cannot miss.)
    let Some(Report { step, detail, errno }) = args.report.get() else {
        return Ok(pid);
    };
    if step == Step::Privileges
        && let (Some(plan), Some(f)) = (spec.privileges, super::privileges::Failure::from_code(detail, errno))
    {
        let error = std::io::Error::new(std::io::Error::from_raw_os_error(errno).kind(), f.describe(plan));
        return Err(SpawnError { pid: Some(pid), error, code: 126 });
    }
    // As the job's user, EACCES is most likely about that user's permissions, not about the
    // interpreter `child_failure` would name.
    if let (Some(plan), Step::Execve | Step::ExecveShell, libc::EACCES) = (spec.privileges, step, errno) {
        let message = format!("EACCES: permission denied ({})", super::privileges::exec_denied(plan));
        let error = std::io::Error::new(std::io::ErrorKind::PermissionDenied, message);
        return Err(SpawnError { pid: Some(pid), error, code: 126 });
    }
    Err(child_failure(pid, spec.program, step, errno))
}

/// What the child passes to execve, all prepared before the clone.
struct Exec<'a> {
    program: &'a CString,
    argv: &'a [*const libc::c_char],
    env: &'a [*const libc::c_char],
    sh_argv: &'a [*const libc::c_char],
    privileges: Option<&'a super::privileges::Plan>,
}

/// Everything the child gets, and where it leaves the step and errno of a failure (shared
/// memory: the parent reads it once the child is gone, instead of an error pipe).
struct ChildArgs<'a> {
    take_tty: bool,
    fds: [RawFd; 3],
    inherited: &'a Inherited,
    exec: &'a Exec<'a>,
    report: std::cell::Cell<Option<Report>>,
}

/// A failure as the child leaves it: the step, a detail the step defines, and errno.
#[derive(Clone, Copy)]
struct Report {
    step: Step,
    detail: u32,
    errno: i32,
}

extern "C" fn child_entry(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the `ChildArgs` `spawn` passed to clone, alive while the parent is
    // suspended; we are the child of that clone (see `child`).
    unsafe {
        let args = &*(arg as *const ChildArgs);
        child(args)
    }
}

/// Leave `step` and `errno` for the parent and exit (126, or 127 for ENOENT).
///
/// # Safety
/// Only for the child of the vfork-style clone: a store to shared memory the parent reads
/// after we are gone, and _exit (async-signal-safe).
unsafe fn fail(args: &ChildArgs, step: Step, errno: i32) -> ! {
    // SAFETY: as fail_with.
    unsafe { fail_with(args, step, 0, errno) }
}

/// `fail` with a step's detail (which of the privilege steps, see `privileges::Failure`).
///
/// # Safety
/// As `fail`.
unsafe fn fail_with(args: &ChildArgs, step: Step, detail: u32, errno: i32) -> ! {
    args.report.set(Some(Report { step, detail, errno }));
    // SAFETY: _exit ends the child at once (no atexit handlers, no flushing of shared
    // stdio buffers: they are the parent's).
    unsafe { libc::_exit(if errno == libc::ENOENT { 127 } else { 126 }) }
}

/// The child between clone and exec: own process group, the terminal for the payload, the
/// three standard descriptors, the inherited signal state, then execve. Every call is
/// checked and a failure is reported with its step.
///
/// # Safety
/// Only for the child of the vfork-style clone in `spawn`, in a multi-threaded process whose
/// memory it shares: makes only async-signal-safe calls (setpgid, tcsetpgrp, fcntl, dup2,
/// signal, pthread_sigmask, execve, _exit), allocates nothing, takes no lock, writes no
/// memory but its own stack and `args.report`, and never returns. (Its descriptor table and
/// signal handlers are its own copies: no CLONE_FILES or CLONE_SIGHAND.)
unsafe fn child(args: &ChildArgs) -> ! {
    // SAFETY: __errno_location returns this thread's errno slot (the suspended parent
    // thread's: it does not read errno across the clone).
    let errno = || unsafe { *libc::__errno_location() };
    let mut fds = args.fds;
    let exec = args.exec;
    // SAFETY: the calls below are async-signal-safe and only read memory prepared before
    // the clone (the CStrings and pointer arrays in `exec`, the inherited mask).
    unsafe {
        if libc::setpgid(0, 0) != 0 {
            fail(args, Step::Setpgid, errno());
        }
        // SIGTTOU is still blocked here, so this works from a background group. No terminal
        // (ENOTTY) or a hung-up one (ENXIO) is no reason not to run, as in tini.
        if args.take_tty && libc::tcsetpgrp(0, libc::getpid()) != 0 {
            let e = errno();
            if e != libc::ENOTTY && e != libc::ENXIO {
                fail(args, Step::Tcsetpgrp, e);
            }
        }
        // A source descriptor that is itself 0, 1 or 2 (pilot was started with one of them
        // closed) would be overwritten by an earlier dup2: move such descriptors above 2
        // first.
        for fd in fds.iter_mut() {
            if (0..3).contains(fd) {
                let moved = libc::fcntl(*fd, libc::F_DUPFD_CLOEXEC, 3);
                if moved < 0 {
                    fail(args, Step::Relocate, errno());
                }
                *fd = moved;
            }
        }
        for (target, fd) in fds.iter().enumerate() {
            if *fd >= 0 && libc::dup2(*fd, target as i32) < 0 {
                fail(args, Step::dup(target), errno());
            }
        }
        // ---- Prepared child steps ----
        // Per-job steps computed before the clone run here: after the descriptors, before the
        // signal state and execve. Because this child shares pilot's memory (CLONE_VM), they
        // must be *raw syscalls* (`libc::syscall(libc::SYS_setresuid, …)`): the libc wrappers
        // of set*id and setgroups synchronise every thread of the calling process (glibc's
        // SIGSETXID, musl's __synccall), which here would mean pilot's threads, and hang.
        // The job's identity (groups, uid, capabilities, no_new_privs; issue 15):
        if let Some(plan) = args.exec.privileges
            && let Err(f) = super::privileges::apply_in_child(plan)
        {
            fail_with(args, Step::Privileges, f.code(), f.errno);
        }
        // ---- end of the prepared child steps ----
        if let Err((step, e)) = super::signals::restore_in_child(args.inherited) {
            let step = match step {
                super::signals::RestoreStep::SigpipeDefault => Step::SigpipeDefault,
                super::signals::RestoreStep::Mask => Step::Mask,
            };
            fail(args, step, e);
        }
        libc::execve(exec.program.as_ptr(), exec.argv.as_ptr(), exec.env.as_ptr());
        let e = errno();
        if e == libc::ENOEXEC {
            libc::execve(c"/bin/sh".as_ptr(), exec.sh_argv.as_ptr(), exec.env.as_ptr());
            fail(args, Step::ExecveShell, errno());
        }
        fail(args, Step::Execve, e);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reap(pid: i32) -> i32 {
        let mut status = 0;
        // SAFETY: waitpid writes one int through a valid pointer.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        libc::WEXITSTATUS(status)
    }

    #[test]
    fn a_failing_dup2_is_reported_with_its_step_and_errno() {
        let inherited = super::super::signals::Inherited {
            // SAFETY: an all-zero sigset_t is a valid (empty) set.
            mask: unsafe { std::mem::zeroed() },
        };
        let argv = ["true".to_string()];
        let spec = Spec {
            program: Path::new("/bin/true"),
            argv: &argv,
            env: &[],
            stdin: Stdio::Inherit,
            // No such descriptor: dup2 gives EBADF.
            stdout: Stdio::Fd(1_000_000),
            stderr: Stdio::Inherit,
            foreground: false,
            privileges: None,
        };
        let e = spawn(&spec, &inherited).unwrap_err();
        let pid = e.pid.expect("fork succeeded");
        assert_eq!(reap(pid), 126);
        assert_eq!(e.exit_code(), 126);
        let msg = e.to_string();
        // The errno's name and description, each once.
        assert_eq!(msg, "dup2 of stdout failed: EBADF: Bad file descriptor (os error 9)");
    }

    /// `needs` looks at a program only after execve failed, and the file may have been
    /// swapped since the lookup (a check script in a directory the payload writes): a FIFO
    /// put there must not block the supervisor thread in `open` until a writer comes.
    #[test]
    fn a_program_swapped_for_a_fifo_is_not_waited_for() {
        let dir = std::env::temp_dir().join(format!("pilot-spawn-fifo-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let fifo = dir.join("check.sh");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o755)).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let path = fifo.clone();
        std::thread::spawn(move || {
            let e = child_failure(1, &path, Step::Execve, libc::EACCES);
            let _ = tx.send(e.to_string());
        });
        let answer = rx.recv_timeout(std::time::Duration::from_secs(10));
        if answer.is_err() {
            // Let the stuck open return before failing.
            let _ = std::fs::OpenOptions::new().write(true).open(&fifo);
        }
        let _ = std::fs::remove_dir_all(&dir);
        let msg = answer.expect("child_failure blocked opening a FIFO");
        assert!(msg.starts_with("EACCES"), "{msg}");
    }

    #[test]
    fn a_nul_in_an_argument_fails_before_fork() {
        let inherited = super::super::signals::Inherited {
            // SAFETY: an all-zero sigset_t is a valid (empty) set.
            mask: unsafe { std::mem::zeroed() },
        };
        let argv = ["a\0b".to_string()];
        let spec = Spec {
            program: Path::new("/bin/true"),
            argv: &argv,
            env: &[],
            stdin: Stdio::Inherit,
            stdout: Stdio::Inherit,
            stderr: Stdio::Inherit,
            foreground: false,
            privileges: None,
        };
        let e = spawn(&spec, &inherited).unwrap_err();
        assert!(e.pid.is_none() && e.to_string().contains("NUL"), "{e}");
    }
}
