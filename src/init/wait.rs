//! What the supervisor thread waits on: signals (a `signalfd` over the set every thread
//! blocks), a doorbell other threads ring when they put a message in its channel (an
//! `eventfd`), and the next deadline (the poll's timeout). One thread, one wait: a payload's
//! exit or a forwarded signal is handled by the thread that decides, without first waking a
//! signal thread and then the supervisor (two scheduler slots on a busy machine; tini is one
//! thread too).

use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

/// Wakes the supervisor's wait from any thread. Cloning shares the one eventfd.
#[derive(Clone)]
pub struct Doorbell(Arc<OwnedFd>);

impl Doorbell {
    pub fn new() -> std::io::Result<Doorbell> {
        // SAFETY: eventfd takes plain integers and returns a new descriptor or -1.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by eventfd and is owned by nobody else.
        Ok(Doorbell(Arc::new(unsafe { OwnedFd::from_raw_fd(fd) })))
    }

    /// Never blocks: the counter saturating (after 2^64-2 rings without a read) gives
    /// EAGAIN, and the bell is then already ringing.
    pub fn ring(&self) {
        let one = 1u64.to_ne_bytes();
        // SAFETY: writes 8 bytes from a valid buffer to our eventfd.
        unsafe { libc::write(self.0.as_raw_fd(), one.as_ptr().cast(), one.len()) };
    }

    fn clear(&self) {
        let mut buf = [0u8; 8];
        // SAFETY: reads at most 8 bytes into a valid buffer; non-blocking.
        unsafe { libc::read(self.0.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
    }
}

/// The supervisor's one wait.
pub struct Waiter {
    signals: OwnedFd,
    bell: Doorbell,
}

/// What a wait found. `signals` in the order they were queued.
#[derive(Debug, Default)]
pub struct Woken {
    pub signals: Vec<i32>,
    pub bell: bool,
}

impl Waiter {
    /// Call after `signals::block_all` (the signalfd reads the blocked set; signals that are
    /// not blocked would be delivered the usual way instead).
    pub fn new(bell: Doorbell) -> std::io::Result<Waiter> {
        let set = super::signals::pilot_set();
        // SAFETY: signalfd reads a valid set and returns a new descriptor or -1.
        let fd = unsafe { libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by signalfd and is owned by nobody else.
        Ok(Waiter { signals: unsafe { OwnedFd::from_raw_fd(fd) }, bell })
    }

    /// Wait until a signal is pending, the bell rang, or `timeout` passed (None: no
    /// deadline). Pending signals are taken (at most a bounded batch per call, so a signal
    /// storm cannot make one call unbounded; the rest come with the next). EINTR is a
    /// wakeup with nothing found.
    pub fn wait(&self, timeout: Option<Duration>) -> Woken {
        let ms = match timeout {
            // Rounded up: a deadline 0.3 ms away must not become a busy loop of 0 ms polls.
            Some(t) => t.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32,
            None => -1,
        };
        let mut fds = [
            libc::pollfd { fd: self.signals.as_fd().as_raw_fd(), events: libc::POLLIN, revents: 0 },
            libc::pollfd { fd: self.bell.0.as_raw_fd(), events: libc::POLLIN, revents: 0 },
        ];
        // SAFETY: poll reads and writes two valid pollfd entries.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
        let mut woken = Woken::default();
        if n < 0 {
            pause_after_poll_error();
        }
        if n <= 0 {
            return woken;
        }
        if fds[1].revents != 0 {
            self.bell.clear();
            woken.bell = true;
        }
        if fds[0].revents != 0 {
            woken.signals = self.take_signals();
        }
        woken
    }

    fn take_signals(&self) -> Vec<i32> {
        const BATCH: usize = 64;
        // SAFETY: signalfd_siginfo is plain data; all zeroes is a valid value.
        let mut infos: [libc::signalfd_siginfo; BATCH] = unsafe { std::mem::zeroed() };
        let size = std::mem::size_of::<libc::signalfd_siginfo>();
        // SAFETY: reads whole signalfd_siginfo records into a buffer of BATCH of them.
        let n = unsafe { libc::read(self.signals.as_raw_fd(), infos.as_mut_ptr().cast(), BATCH * size) };
        if n <= 0 {
            return Vec::new();
        }
        infos[..n as usize / size].iter().map(|i| i.ssi_signo as i32).collect()
    }
}

/// After a failed poll, other than EINTR: EINVAL (more descriptors than someone lowered
/// RLIMIT_NOFILE to while pilot runs) or ENOMEM would fail again at once, and the caller's
/// loop would spin a core. A short pause bounds that to ten polls a second until the
/// condition goes; the pipes behind it fill and their writers wait, nothing is lost.
fn pause_after_poll_error() {
    if std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Wait, without a deadline, until the bell rings or one of `fds` is readable or hung up
/// (for the output thread, which follows many pipes). Sets `ready[i]` for each such fd;
/// returns whether the bell rang (and clears it). EINTR is a wakeup with nothing found.
pub fn wait_readable(bell: &Doorbell, fds: &[RawFd], ready: &mut Vec<bool>) -> bool {
    let mut pfds: Vec<libc::pollfd> = Vec::with_capacity(fds.len() + 1);
    pfds.push(libc::pollfd { fd: bell.0.as_raw_fd(), events: libc::POLLIN, revents: 0 });
    pfds.extend(fds.iter().map(|fd| libc::pollfd { fd: *fd, events: libc::POLLIN, revents: 0 }));
    ready.clear();
    ready.resize(fds.len(), false);
    // SAFETY: poll reads and writes `pfds.len()` valid pollfd entries.
    let n = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, -1) };
    if n < 0 {
        pause_after_poll_error();
    }
    if n <= 0 {
        return false;
    }
    for (r, p) in ready.iter_mut().zip(&pfds[1..]) {
        *r = p.revents != 0;
    }
    let rang = pfds[0].revents != 0;
    if rang {
        bell.clear();
    }
    rang
}
