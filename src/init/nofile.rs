//! `RLIMIT_NOFILE`: pilot raises its own soft limit to the hard limit at start and gives
//! every child the original soft limit back, just before its exec.
//!
//! pilot follows up to 256 job pipes, holds Consul and control connections and its own
//! descriptors, so the usual soft limit of 1024 is tight for it; but a program that uses
//! `select(2)` (whose `fd_set` holds descriptors below 1024 only) breaks when it is started
//! with a higher soft limit and opens more. So the raise is pilot's alone: this is what Go
//! (since 1.19: ContainerPilot's children get the original limit back), systemd and
//! `posix_spawn`-based supervisors do.

use std::sync::OnceLock;

/// The limit pilot was started with, when it raised it (None: nothing to give back).
static ORIGINAL: OnceLock<Option<libc::rlimit>> = OnceLock::new();

/// Raise the soft limit to the hard one (once; later calls do nothing). Returns the limits
/// before and after, for the debug log, or None when nothing changed.
pub fn raise() -> Option<(libc::rlim_t, libc::rlim_t)> {
    let mut raised = None;
    ORIGINAL.get_or_init(|| {
        let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: getrlimit writes one rlimit through a valid pointer.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 || lim.rlim_cur >= lim.rlim_max {
            return None;
        }
        let up = libc::rlimit { rlim_cur: lim.rlim_max, rlim_max: lim.rlim_max };
        // SAFETY: setrlimit reads one rlimit through a valid pointer.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &up) } != 0 {
            return None;
        }
        raised = Some((lim.rlim_cur, lim.rlim_max));
        Some(lim)
    });
    raised
}

/// What each child gets back before exec (None: pilot did not raise it).
pub fn original() -> Option<libc::rlimit> {
    ORIGINAL.get().copied().flatten()
}
