//! Starting a process: fork + execve by hand. `std::process::Command` is not usable in an
//! init: it passes the *current* (fully blocked) signal mask to the child, and after an
//! exec failure it calls `waitpid` on the child itself, racing pilot's global reaper (the
//! ContainerPilot #439 class of bug). Here the child gets back the mask pilot inherited,
//! default SIGPIPE, its own process group and, for the payload, the terminal.

use super::signals::Inherited;
use std::ffi::CString;
use std::os::fd::{AsRawFd, RawFd};
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

/// The step of the child's set-up that failed, sent back with its errno through the error
/// pipe (as Rust's std does in `do_exec`), so the parent can say what went wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
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
    const ALL: [Step; 11] = [
        Step::Setpgid,
        Step::Tcsetpgrp,
        Step::Relocate,
        Step::DupStdin,
        Step::DupStdout,
        Step::DupStderr,
        Step::SigpipeDefault,
        Step::Mask,
        Step::Execve,
        Step::ExecveShell,
        Step::Privileges,
    ];

    fn from_u32(n: u32) -> Option<Step> {
        Step::ALL.into_iter().find(|s| *s as u32 == n)
    }

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

fn needs(program: &Path) -> Needs {
    use std::io::Read;
    let mut head = [0u8; 256];
    let Ok(mut file) = std::fs::File::open(program) else { return Needs::Nothing };
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
    let name = nix::errno::Errno::from_raw(errno);
    let os = std::io::Error::from_raw_os_error(errno);
    let kind = os.kind();
    let mut code = if errno == libc::ENOENT { 127 } else { 126 };
    let message = match step {
        // The program was found before fork, so ENOENT (or EACCES on an executable file)
        // from execve is about its `#!` interpreter: name that, not the script.
        Step::Execve if matches!(errno, libc::ENOENT | libc::EACCES) => match needs(program) {
            Needs::Interpreter(interp) if errno == libc::ENOENT => {
                format!("interpreter {interp} of {} not found", program.display())
            }
            Needs::Interpreter(interp) => {
                format!("interpreter {interp} of {} cannot run: {name}: {os}", program.display())
            }
            Needs::Elf if errno == libc::ENOENT => {
                format!("its dynamic loader (ELF interpreter) is missing: {name}: {os}")
            }
            _ => format!("{name}: {os}"),
        },
        Step::Execve => format!("{name}: {os}"),
        Step::ExecveShell => {
            code = 126;
            format!("{} has no #! line and /bin/sh cannot run it: {name}: {os}", program.display())
        }
        other => {
            code = 126;
            format!("{} failed: {name}: {os}", other.describe())
        }
    };
    SpawnError { pid: Some(pid), error: std::io::Error::new(kind, message), code }
}

pub fn spawn(spec: &Spec, inherited: &Inherited) -> Result<i32, SpawnError> {
    // Everything the child needs is built before fork: after fork, in a threaded process,
    // the child may only make async-signal-safe calls (no allocation).
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
    let (err_read, err_write) = std::io::pipe().map_err(SpawnError::before_fork)?;
    let err_write_fd = err_write.as_raw_fd();
    // SAFETY: isatty only inspects the fd.
    let take_tty = spec.foreground && unsafe { libc::isatty(0) } == 1;

    // SAFETY: fork is safe to call; the child only runs `child`, which makes
    // async-signal-safe calls on memory prepared before the fork and never returns.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(SpawnError::before_fork(std::io::Error::last_os_error()));
    }
    if pid == 0 {
        let exec =
            Exec { program: &program, argv: &argv_p, env: &env_p, sh_argv: &sh_argv, privileges: spec.privileges };
        // SAFETY: we are the child of fork; see `child`.
        unsafe { child(take_tty, fds, err_write_fd, inherited, &exec) }
    }
    // Also set the group from the parent, so a group signal sent right after spawn can
    // never miss (the child may not have run yet). EACCES after exec is harmless.
    // SAFETY: setpgid takes plain integers.
    unsafe { libc::setpgid(pid, pid) };
    drop(err_write);
    // The child writes errno and step (8 bytes) only if it fails; a successful exec closes
    // the pipe (it is close-on-exec) and the read sees end of file.
    let mut buf = [0u8; 8];
    let mut got = 0;
    let mut reader = err_read;
    while got < buf.len() {
        match std::io::Read::read(&mut reader, &mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        }
    }
    if got < buf.len() {
        return Ok(pid);
    }
    let errno = i32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]);
    let sent = u32::from_ne_bytes([buf[4], buf[5], buf[6], buf[7]]);
    let step = Step::from_u32(sent & 0xff).unwrap_or(Step::Execve);
    if step == Step::Privileges
        && let (Some(plan), Some(f)) = (spec.privileges, super::privileges::Failure::from_code(sent >> 8, errno))
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

/// What the child passes to execve, all prepared before fork.
struct Exec<'a> {
    program: &'a CString,
    argv: &'a [*const libc::c_char],
    env: &'a [*const libc::c_char],
    sh_argv: &'a [*const libc::c_char],
    privileges: Option<&'a super::privileges::Plan>,
}

/// Report `step` and `errno` to the parent and exit (126, or 127 for ENOENT).
///
/// # Safety
/// Only for the child of fork: write and _exit are async-signal-safe.
unsafe fn fail(err_fd: RawFd, step: Step, errno: i32) -> ! {
    // SAFETY: as for fail_with.
    unsafe { fail_with(err_fd, step as u32, errno) }
}

/// `fail` with the step as sent: a `Step` in the low 8 bits, details above.
///
/// # Safety
/// As `fail`.
unsafe fn fail_with(err_fd: RawFd, step: u32, errno: i32) -> ! {
    let mut msg = [0u8; 8];
    msg[..4].copy_from_slice(&errno.to_ne_bytes());
    msg[4..].copy_from_slice(&step.to_ne_bytes());
    // SAFETY: msg is valid for 8 bytes; _exit never returns.
    unsafe {
        libc::write(err_fd, msg.as_ptr().cast(), msg.len());
        libc::_exit(if errno == libc::ENOENT { 127 } else { 126 });
    }
}

/// The child between fork and exec: own process group, the terminal for the payload, the
/// three standard descriptors, the inherited signal state, then execve. Every call is
/// checked and a failure is reported with its step.
///
/// # Safety
/// Only for the child of fork in a possibly multi-threaded process: makes only
/// async-signal-safe calls (setpgid, tcsetpgrp, fcntl, dup2, signal, pthread_sigmask,
/// execve, write, _exit), allocates nothing, and never returns.
unsafe fn child(take_tty: bool, mut fds: [RawFd; 3], err_fd: RawFd, inherited: &Inherited, exec: &Exec) -> ! {
    // SAFETY: __errno_location returns this thread's errno slot.
    let errno = || unsafe { *libc::__errno_location() };
    // SAFETY: the calls below are async-signal-safe and only read memory prepared before
    // fork (the CStrings and pointer arrays in `exec`, the inherited mask).
    unsafe {
        let mut err_fd = err_fd;
        if libc::setpgid(0, 0) != 0 {
            fail(err_fd, Step::Setpgid, errno());
        }
        // SIGTTOU is still blocked here, so this works from a background group. No terminal
        // (ENOTTY) or a hung-up one (ENXIO) is no reason not to run, as in tini.
        if take_tty && libc::tcsetpgrp(0, libc::getpid()) != 0 {
            let e = errno();
            if e != libc::ENOTTY && e != libc::ENXIO {
                fail(err_fd, Step::Tcsetpgrp, e);
            }
        }
        // A source descriptor (or the error pipe) that is itself 0, 1 or 2 (pilot was
        // started with one of them closed) would be overwritten by an earlier dup2: move
        // such descriptors above 2 first.
        if err_fd < 3 {
            let moved = libc::fcntl(err_fd, libc::F_DUPFD_CLOEXEC, 3);
            if moved < 0 {
                fail(err_fd, Step::Relocate, errno());
            }
            err_fd = moved;
        }
        for fd in fds.iter_mut() {
            if (0..3).contains(fd) {
                let moved = libc::fcntl(*fd, libc::F_DUPFD_CLOEXEC, 3);
                if moved < 0 {
                    fail(err_fd, Step::Relocate, errno());
                }
                *fd = moved;
            }
        }
        for (target, fd) in fds.iter().enumerate() {
            if *fd >= 0 && libc::dup2(*fd, target as i32) < 0 {
                fail(err_fd, Step::dup(target), errno());
            }
        }
        // ---- issue 15: the job's identity (groups, uid, capabilities, no_new_privs). ----
        if let Some(plan) = exec.privileges
            && let Err(f) = super::privileges::apply_in_child(plan)
        {
            fail_with(err_fd, Step::Privileges as u32 | f.code() << 8, f.errno);
        }
        if let Err((step, e)) = super::signals::restore_in_child(inherited) {
            let step = match step {
                super::signals::RestoreStep::SigpipeDefault => Step::SigpipeDefault,
                super::signals::RestoreStep::Mask => Step::Mask,
            };
            fail(err_fd, step, e);
        }
        libc::execve(exec.program.as_ptr(), exec.argv.as_ptr(), exec.env.as_ptr());
        let e = errno();
        if e == libc::ENOEXEC {
            libc::execve(c"/bin/sh".as_ptr(), exec.sh_argv.as_ptr(), exec.env.as_ptr());
            fail(err_fd, Step::ExecveShell, errno());
        }
        fail(err_fd, Step::Execve, e);
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
        assert!(msg.starts_with("dup2 of stdout failed: EBADF"), "{msg}");
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
