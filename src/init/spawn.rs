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
}

#[derive(Debug)]
pub struct SpawnError {
    /// The child that failed to exec, if fork succeeded: its exit (126/127) still arrives
    /// through the reaper and must be ignored by whoever tracks it.
    pub pid: Option<i32>,
    pub error: std::io::Error,
}

impl SpawnError {
    /// The shell convention: 127 when the program does not exist, 126 when it cannot run.
    pub fn exit_code(&self) -> i32 {
        if self.error.raw_os_error() == Some(libc::ENOENT) { 127 } else { 126 }
    }
}

fn cstring(s: &str) -> Result<CString, SpawnError> {
    CString::new(s).map_err(|_| SpawnError {
        pid: None,
        error: std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("argument contains a NUL byte: {s:?}")),
    })
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
    let fds = [&spec.stdin, &spec.stdout, &spec.stderr].map(|s| match s {
        Stdio::Inherit => -1,
        Stdio::Fd(fd) => *fd,
    });
    let (err_read, err_write) = std::io::pipe().map_err(|error| SpawnError { pid: None, error })?;
    let err_write_fd = err_write.as_raw_fd();
    // SAFETY: isatty only inspects the fd.
    let take_tty = spec.foreground && unsafe { libc::isatty(0) } == 1;
    let mask = inherited.mask;

    // SAFETY: fork is safe to call; the child branch below only calls async-signal-safe
    // functions (setpgid, tcsetpgrp, dup2, signal, pthread_sigmask, execve, write, _exit)
    // on memory prepared before the fork, and never returns into Rust code.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(SpawnError { pid: None, error: std::io::Error::last_os_error() });
    }
    if pid == 0 {
        // SAFETY: see above; all pointers are to live, NUL-terminated data.
        unsafe {
            libc::setpgid(0, 0);
            if take_tty {
                // SIGTTOU is still blocked here, so this works from a background group.
                libc::tcsetpgrp(0, libc::getpid());
            }
            for (target, fd) in fds.iter().enumerate() {
                if *fd >= 0 {
                    libc::dup2(*fd, target as i32);
                }
            }
            // Rust's runtime set SIGPIPE to ignored in pilot; programs expect the default.
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
            libc::pthread_sigmask(libc::SIG_SETMASK, &mask, std::ptr::null_mut());
            libc::execve(program.as_ptr(), argv_p.as_ptr(), env_p.as_ptr());
            let errno = *libc::__errno_location();
            let bytes = errno.to_ne_bytes();
            libc::write(err_write_fd, bytes.as_ptr().cast(), bytes.len());
            libc::_exit(if errno == libc::ENOENT { 127 } else { 126 });
        }
    }
    // Also set the group from the parent, so a group signal sent right after spawn can
    // never miss (the child may not have run yet). EACCES after exec is harmless.
    // SAFETY: setpgid takes plain integers.
    unsafe { libc::setpgid(pid, pid) };
    drop(err_write);
    let mut buf = [0u8; 4];
    let mut reader = err_read;
    match std::io::Read::read(&mut reader, &mut buf) {
        Ok(4) => Err(SpawnError { pid: Some(pid), error: std::io::Error::from_raw_os_error(i32::from_ne_bytes(buf)) }),
        _ => Ok(pid),
    }
}
