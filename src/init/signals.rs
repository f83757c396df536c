//! Signals: blocked in every thread from the first line of `main`, read by the supervisor
//! thread through a signalfd (`wait`), which also does all the reaping (`waitpid(-1,
//! WNOHANG)` until none are left) so that no exit status can be stolen by anyone else.

use super::ExitStatus;

/// Synchronous signals raised by faults in pilot itself: left unblocked so a bug crashes
/// pilot visibly instead of being "forwarded".
const SYNCHRONOUS: &[i32] =
    &[libc::SIGFPE, libc::SIGILL, libc::SIGSEGV, libc::SIGBUS, libc::SIGABRT, libc::SIGTRAP, libc::SIGSYS];

/// What a wakeup brings: a signal, or a reaped child.
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
/// in every thread and read by the supervisor thread (`wait::Waiter`'s signalfd).
pub(super) fn pilot_set() -> libc::sigset_t {
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
    let inherited = unsafe {
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::pthread_sigmask(libc::SIG_SETMASK, &set, &mut old);
        Inherited { mask: old }
    };
    guard_fault_signals();
    inherited
}

/// Each fault signal's handler before [`guard_fault_signals`] replaced it (Rust's runtime
/// has one for SIGSEGV/SIGBUS: it reports a stack overflow), indexed like [`SYNCHRONOUS`].
/// Written once before the handler is installed, only read by it afterwards.
static PREVIOUS: std::sync::OnceLock<[libc::sigaction; SYNCHRONOUS.len()]> = std::sync::OnceLock::new();

/// The fault signals stay unblocked so that a real fault in pilot crashes it visibly; but
/// when pilot is not PID 1 anyone of its user can also *send* them with kill(2) (a payload
/// running `kill -ABRT $PPID`), and their default action would end the init and orphan the
/// payload. So a handler tells the two apart by `si_code`: a signal sent by a process
/// (`SI_USER`, `SI_QUEUE`, `SI_TKILL`: `si_code <= 0`) is ignored; a real fault goes on to
/// the handler that was there before (Rust's stack-overflow report) or to the default
/// action. `abort()` still ends pilot: it raises once more after resetting the action.
fn guard_fault_signals() {
    let mut previous = [None::<libc::sigaction>; SYNCHRONOUS.len()];
    for (i, sig) in SYNCHRONOUS.iter().enumerate() {
        // SAFETY: sigaction with a null new action only writes the current one into `old`.
        unsafe {
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(*sig, std::ptr::null(), &mut old) == 0 {
                previous[i] = Some(old);
            }
        }
    }
    // SAFETY: an all-zero sigaction is a valid value (SIG_DFL, empty mask, no flags).
    let default: libc::sigaction = unsafe { std::mem::zeroed() };
    if PREVIOUS.set(previous.map(|p| p.unwrap_or(default))).is_err() {
        return; // already installed
    }
    for sig in SYNCHRONOUS {
        // SAFETY: `action` is fully initialised: our handler with SA_SIGINFO (so it gets
        // siginfo), SA_ONSTACK (Rust's threads have an alternate stack for overflows), and
        // every fault signal blocked while it runs: a burst of them would otherwise nest a
        // signal frame each on the small alternate stack until it overflowed (found by
        // sending all seven at once).
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_fault_signal as *const () as libc::sighandler_t;
            action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
            libc::sigemptyset(&mut action.sa_mask);
            for s in SYNCHRONOUS {
                libc::sigaddset(&mut action.sa_mask, *s);
            }
            libc::sigaction(*sig, &action, std::ptr::null_mut());
        }
    }
}

/// See [`guard_fault_signals`]. Async-signal-safe: reads an initialised static, calls
/// sigaction or the previous handler, nothing else.
extern "C" fn on_fault_signal(sig: libc::c_int, info: *mut libc::siginfo_t, context: *mut libc::c_void) {
    // SAFETY: with SA_SIGINFO the kernel passes a valid siginfo_t.
    let code = if info.is_null() { 0 } else { unsafe { (*info).si_code } };
    if code <= 0 {
        return; // sent by a process, not a fault of pilot's: ignore it
    }
    let previous = PREVIOUS.get().and_then(|p| SYNCHRONOUS.iter().position(|s| *s == sig).map(|i| p[i]));
    match previous {
        Some(old) if old.sa_sigaction != libc::SIG_DFL && old.sa_sigaction != libc::SIG_IGN => {
            if old.sa_flags & libc::SA_SIGINFO != 0 {
                // SAFETY: a handler installed with SA_SIGINFO has this signature.
                let handler: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
                    unsafe { std::mem::transmute(old.sa_sigaction) };
                handler(sig, info, context);
            } else {
                // SAFETY: a handler installed without SA_SIGINFO takes the signal number only.
                let handler: extern "C" fn(libc::c_int) = unsafe { std::mem::transmute(old.sa_sigaction) };
                handler(sig);
            }
        }
        _ => {
            // The default action, taken when the faulting instruction runs again on return.
            // SAFETY: an all-zero sigaction is SIG_DFL with an empty mask.
            unsafe {
                let dfl: libc::sigaction = std::mem::zeroed();
                libc::sigaction(sig, &dfl, std::ptr::null_mut());
            }
        }
    }
}

/// The kernel's `struct sigaction` (x86_64 and aarch64 both have `sa_restorer`), for the
/// raw `rt_sigaction` of the spawn child.
#[repr(C)]
struct KernelSigaction {
    handler: usize,
    flags: libc::c_ulong,
    restorer: usize,
    mask: u64,
}

/// The kernel's signal set size for `rt_sigaction` and `rt_sigprocmask` (64 signals).
const KERNEL_SIGSET: usize = 8;

/// The signals whose default action dumps core (signal(7)).
const CORE_DUMPING: [i32; 10] = [
    libc::SIGQUIT,
    libc::SIGILL,
    libc::SIGTRAP,
    libc::SIGABRT,
    libc::SIGBUS,
    libc::SIGFPE,
    libc::SIGSEGV,
    libc::SIGXCPU,
    libc::SIGXFSZ,
    libc::SIGSYS,
];

/// The [`CORE_DUMPING`] signals (bit `sig - 1`) pilot does not ignore, set with [`handled`]
/// (so before the first clone): the child catches them with [`end_before_exec`].
static END_BEFORE_EXEC: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The kernel's `SA_RESTORER` (x86_64 and aarch64; not in the libc crate).
const SA_RESTORER: libc::c_ulong = 0x0400_0000;

/// The spawn child's handler of the [`CORE_DUMPING`] signals until it has exec'd (execve
/// resets a caught signal to its default action, so the program gets the default): the
/// child ends at once with the shell's code for that signal, 128 + n, *without* a core dump.
/// A core dump of the child would be a core image of the memory it shares, all of pilot's
/// (its environment, tokens, every job's arguments); and before Linux 5.16 (EL8, EL9) the
/// kernel kills every process sharing the dumping one's memory first: pilot with it.
/// Raw exit_group only: it runs on the child's stack, on the supervisor thread's TLS.
extern "C" fn end_before_exec(sig: libc::c_int) {
    // SAFETY: exit_group ends the child (its own thread group) and touches no memory.
    unsafe {
        let _ = super::sys::sys!(libc::SYS_exit_group, 128 + sig);
    }
    #[allow(clippy::empty_loop)]
    loop {}
}

/// The signals (bit `sig - 1`) that have a handler in pilot, SIGPIPE added (Rust's runtime
/// ignores it in pilot, and an ignored signal stays ignored across exec): what every child
/// puts back to the default action. Asked once, at the first spawn: pilot installs its
/// handlers (its fault guard, Rust's overflow report) at start, before anything is spawned,
/// and never later. The libc-internal signals 32–34 (glibc's cancellation and set*id
/// broadcast, musl's synccall) may get handlers later and are looked at in each child.
pub fn handled() -> u64 {
    static HANDLED: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *HANDLED.get_or_init(|| {
        let mut mask = 1u64 << (libc::SIGPIPE - 1);
        for sig in 1..=64 {
            // SAFETY: sigaction with a null new action only writes the current one into `old`.
            unsafe {
                let mut old: libc::sigaction = std::mem::zeroed();
                if libc::sigaction(sig, std::ptr::null(), &mut old) == 0
                    && old.sa_sigaction != libc::SIG_DFL
                    && old.sa_sigaction != libc::SIG_IGN
                {
                    mask |= 1u64 << (sig - 1);
                }
            }
        }
        // The core-dumping signals not ignored: [`end_before_exec`] in the child instead.
        let mut end = 0u64;
        for sig in CORE_DUMPING {
            // SAFETY: as above.
            unsafe {
                let mut old: libc::sigaction = std::mem::zeroed();
                if libc::sigaction(sig, std::ptr::null(), &mut old) == 0 && old.sa_sigaction != libc::SIG_IGN {
                    end |= 1u64 << (sig - 1);
                }
            }
        }
        END_BEFORE_EXEC.store(end, std::sync::atomic::Ordering::Relaxed);
        mask
    })
}

/// In the spawn child, first thing: no handler of pilot's may run in it (it shares pilot's
/// memory and, without `CLONE_SETTLS`, the supervisor thread's thread-local storage), so
/// every signal of `handled` (see [`handled`]) goes back to its default action, as does one of
/// 32–34 with a handler, and the alternate signal stack (the supervisor thread's, inherited)
/// is switched off. Asynchronous signals stay blocked until [`restore_mask_in_child`].
/// The core-dumping ones that pilot does not ignore get `end_before_exec` instead (the
/// program still starts with the default: execve resets caught signals).
///
/// # Safety
/// Only in the child of `init::spawn`: raw system calls on its own stack, nothing else.
pub unsafe fn defaults_in_child(handled: u64) -> Result<(), i32> {
    use super::sys::sys;
    let dfl = KernelSigaction { handler: 0, flags: 0, restorer: 0, mask: 0 };
    // Never returns, so the restorer is never used; x86_64 refuses a frame without one.
    let handler = end_before_exec as *const () as usize;
    let end = KernelSigaction { handler, flags: SA_RESTORER, restorer: handler, mask: !0 };
    // SAFETY: sigaltstack and rt_sigaction on valid pointers to local structs.
    unsafe {
        let off = libc::stack_t { ss_sp: std::ptr::null_mut(), ss_flags: libc::SS_DISABLE, ss_size: 0 };
        sys!(libc::SYS_sigaltstack, &off as *const libc::stack_t, 0)?;
        let mut reset = handled;
        for sig in 32..=34usize {
            let mut old = KernelSigaction { handler: 0, flags: 0, restorer: 0, mask: 0 };
            if sys!(libc::SYS_rt_sigaction, sig, 0, &mut old as *mut KernelSigaction, KERNEL_SIGSET).is_ok()
                && old.handler != libc::SIG_DFL
                && old.handler != libc::SIG_IGN
            {
                reset |= 1 << (sig - 1);
            }
        }
        let end_mask = END_BEFORE_EXEC.load(std::sync::atomic::Ordering::Relaxed);
        for sig in 1..=64usize {
            if end_mask & (1 << (sig - 1)) != 0 {
                sys!(libc::SYS_rt_sigaction, sig, &end as *const KernelSigaction, 0, KERNEL_SIGSET)?;
            } else if reset & (1 << (sig - 1)) != 0 && sig != libc::SIGKILL as usize && sig != libc::SIGSTOP as usize {
                sys!(libc::SYS_rt_sigaction, sig, &dfl as *const KernelSigaction, 0, KERNEL_SIGSET)?;
            }
        }
    }
    Ok(())
}

/// In the spawn child, just before `execve`: the mask pilot inherited (pilot's own blocks
/// everything). Signals sent to the job before this wait, blocked; from here they act with
/// their default action (see [`defaults_in_child`]).
///
/// # Safety
/// Only in the child of `init::spawn`: one raw system call.
pub unsafe fn restore_mask_in_child(inherited: &Inherited) -> Result<(), i32> {
    use super::sys::sys;
    // SAFETY: the mask is a valid set of at least KERNEL_SIGSET bytes.
    unsafe {
        sys!(libc::SYS_rt_sigprocmask, libc::SIG_SETMASK, &inherited.mask as *const libc::sigset_t, 0, KERNEL_SIGSET)
            .map(|_| ())
    }
}

/// Reap every exited child without blocking, reporting each (called on SIGCHLD by the
/// supervisor thread, the only reaper).
pub fn reap_all(mut send: impl FnMut(Report) -> bool) {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Run `child` in a forked process with the fault signals guarded; its wait status.
    fn in_child(child: fn()) -> libc::c_int {
        // SAFETY: the child only installs the handlers, runs `child` (which faults, signals
        // itself or exits) and _exits; the parent waits for that one pid.
        unsafe {
            let pid = libc::fork();
            assert!(pid >= 0, "fork");
            if pid == 0 {
                guard_fault_signals();
                child();
                libc::_exit(0);
            }
            let mut status = 0;
            assert_eq!(libc::waitpid(pid, &mut status, 0), pid);
            status
        }
    }

    #[test]
    fn a_fault_signal_sent_by_a_process_is_ignored() {
        let status = in_child(|| {
            for sig in SYNCHRONOUS {
                // SAFETY: kill and getpid take plain integers.
                unsafe { libc::kill(libc::getpid(), *sig) };
            }
            // SAFETY: _exit ends the child at once.
            unsafe { libc::_exit(7) };
        });
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 7, "status {status:#x}");
    }

    #[test]
    fn a_real_fault_still_crashes_and_abort_still_aborts() {
        let status = in_child(|| {
            // SAFETY: deliberately not: a read of address 0 faults (SIGSEGV, si_code > 0).
            unsafe { std::ptr::read_volatile(std::ptr::null::<u8>()) };
        });
        assert!(libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGSEGV, "status {status:#x}");
        let status = in_child(|| std::process::abort());
        assert!(libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGABRT, "status {status:#x}");
    }
}
