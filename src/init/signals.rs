//! Signals: blocked in every thread from the first line of `main`, received by one thread
//! with `sigwaitinfo`, which also does all the reaping (`waitpid(-1, WNOHANG)` until none
//! are left) so that no exit status can be stolen by anyone else.

use super::ExitStatus;

/// Synchronous signals raised by faults in pilot itself: left unblocked so a bug crashes
/// pilot visibly instead of being "forwarded".
const SYNCHRONOUS: &[i32] =
    &[libc::SIGFPE, libc::SIGILL, libc::SIGSEGV, libc::SIGBUS, libc::SIGABRT, libc::SIGTRAP, libc::SIGSYS];

/// What the signal thread reports.
#[derive(Debug, Clone, Copy)]
pub enum Report {
    Signal(i32),
    Exited { pid: i32, status: ExitStatus },
}

/// The signal state pilot inherited, restored in every child before `execve`.
#[derive(Clone, Copy)]
pub struct Inherited {
    pub mask: libc::sigset_t,
}

/// The one signal set pilot deals in: every signal but the synchronous ones. It is blocked
/// in every thread and waited for by the signal thread.
fn pilot_set() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data; sigemptyset/sigfillset/sigdelset initialise and edit
    // the set through a valid pointer.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut set);
        for s in SYNCHRONOUS {
            libc::sigdelset(&mut set, *s);
        }
        set
    }
}

/// Block every asynchronous signal in the calling thread (do this before any thread
/// exists, so every thread inherits it) and return what was inherited.
pub fn block_all() -> Inherited {
    let set = pilot_set();
    // SAFETY: pthread_sigmask reads `set` and writes `old`, both valid for the call.
    unsafe {
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::pthread_sigmask(libc::SIG_SETMASK, &set, &mut old);
        Inherited { mask: old }
    }
}

/// Which part of restoring the signal state failed in a child.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestoreStep {
    /// Setting SIGPIPE back to its default action.
    SigpipeDefault,
    /// Restoring the inherited signal mask.
    Mask,
}

/// In a forked child, just before `execve`: give the program the signal state a program
/// expects: SIGPIPE at its default action (Rust's runtime set it to ignored in pilot, and
/// an ignored signal stays ignored across exec) and the mask pilot inherited (pilot's own
/// mask blocks everything). Returns the failing step and errno.
///
/// # Safety
/// Only async-signal-safe calls are made and nothing is allocated, so this may run in the
/// child of a multi-threaded process between `fork` and `execve`.
pub unsafe fn restore_in_child(inherited: &Inherited) -> Result<(), (RestoreStep, i32)> {
    // SAFETY: signal and pthread_sigmask are async-signal-safe; the mask is a valid set.
    unsafe {
        if libc::signal(libc::SIGPIPE, libc::SIG_DFL) == libc::SIG_ERR {
            return Err((RestoreStep::SigpipeDefault, *libc::__errno_location()));
        }
        // pthread_sigmask returns the error instead of setting errno.
        let rc = libc::pthread_sigmask(libc::SIG_SETMASK, &inherited.mask, std::ptr::null_mut());
        if rc != 0 {
            return Err((RestoreStep::Mask, rc));
        }
    }
    Ok(())
}

/// Reap every exited child without blocking, reporting each.
pub fn reap_all(send: &impl Fn(Report) -> bool) {
    loop {
        let mut status: libc::c_int = 0;
        // SAFETY: waitpid writes one int through a valid pointer.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid <= 0 {
            return;
        }
        let status = if libc::WIFEXITED(status) {
            ExitStatus::Code(libc::WEXITSTATUS(status))
        } else if libc::WIFSIGNALED(status) {
            ExitStatus::Signaled(libc::WTERMSIG(status))
        } else {
            continue;
        };
        if !send(Report::Exited { pid, status }) {
            return;
        }
    }
}

/// The signal thread's body: wait for any blocked signal, reap on SIGCHLD, report the rest.
pub fn run_signal_thread(send: impl Fn(Report) -> bool) {
    let set = pilot_set();
    // Children may have exited before this thread started.
    reap_all(&send);
    loop {
        // SAFETY: sigwaitinfo reads a valid set; a null info pointer is allowed.
        let sig = unsafe { libc::sigwaitinfo(&set, std::ptr::null_mut()) };
        if sig < 0 {
            continue; // EINTR
        }
        if sig == libc::SIGCHLD {
            reap_all(&send);
        } else if !send(Report::Signal(sig)) {
            return;
        }
    }
}

/// `SIGTERM`, `SIGRTMIN+3`, ...
pub fn name(sig: i32) -> String {
    let rtmin = libc::SIGRTMIN();
    let rtmax = libc::SIGRTMAX();
    if (rtmin..=rtmax).contains(&sig) {
        return if sig == rtmin { "SIGRTMIN".into() } else { format!("SIGRTMIN+{}", sig - rtmin) };
    }
    match nix::sys::signal::Signal::try_from(sig) {
        Ok(s) => s.as_str().to_string(),
        Err(_) => format!("signal {sig}"),
    }
}

/// A signal from its name (`SIGTERM`, `TERM`) or number, as HTCondor's `KillSig` holds it.
pub fn from_name(name: &str) -> Option<i32> {
    let name = name.trim();
    if let Ok(n) = name.parse::<i32>() {
        return nix::sys::signal::Signal::try_from(n).ok().map(|s| s as i32);
    }
    let upper = name.to_ascii_uppercase();
    let full = if upper.starts_with("SIG") { upper } else { format!("SIG{upper}") };
    full.parse::<nix::sys::signal::Signal>().ok().map(|s| s as i32)
}
