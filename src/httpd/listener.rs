//! The accept loop and the connection slots. One thread accepts; a connection goes to a
//! slot thread (started on demand, at most `limits.slots`, kept for the next connection),
//! or, when every slot is busy, gets a `503` written with a short timeout and is closed at
//! once. So a listener never holds more than `slots + 1` connections (file descriptors) and
//! `slots + 1` threads, whatever clients do, and the fds jobs and health checks need are
//! never eaten by a flood. Accept errors (EMFILE, ENFILE, ECONNABORTED…) are logged when
//! their kind changes and retried after a short pause: the loop never ends.

use super::connection::{self, Stream};
use super::{Admission, Handler, Limits, Response};
use log::{info, warn};
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A listening socket whose connections can be served.
pub trait Listener: Send + 'static {
    type Conn: Stream + Send + 'static;
    fn accept(&self) -> io::Result<Self::Conn>;
}

impl Listener for std::os::unix::net::UnixListener {
    type Conn = std::os::unix::net::UnixStream;
    fn accept(&self) -> io::Result<Self::Conn> {
        std::os::unix::net::UnixListener::accept(self).map(|(c, _)| c)
    }
}

impl Listener for std::net::TcpListener {
    type Conn = std::net::TcpStream;
    fn accept(&self) -> io::Result<Self::Conn> {
        std::net::TcpListener::accept(self).map(|(c, _)| c)
    }
}

/// Decides, per connection, whether its peer may use the listener.
pub type Admit<C> = Box<dyn Fn(&C) -> Admission + Send>;

/// How long the "all slots busy" answer may take to write before the connection is dropped.
const BUSY_WRITE: Duration = Duration::from_millis(100);

/// The pause after an accept error: long enough not to spin on EMFILE (the pending
/// connection stays in the backlog and fails again), short enough to be unnoticed.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Serve `listener` on a thread of its own (named after `limits.name`) until the process ends.
pub fn serve<L: Listener>(
    listener: L,
    limits: Limits,
    handler: Arc<dyn Handler>,
    admit: Admit<L::Conn>,
) -> io::Result<()> {
    std::thread::Builder::new()
        .name(limits.name.into())
        .spawn(move || accept_loop(listener, limits, handler, admit))?;
    Ok(())
}

struct Slots<C> {
    limits: Limits,
    handler: Arc<dyn Handler>,
    /// Connections handed to a slot and not yet closed.
    busy: AtomicUsize,
    queue: Mutex<Receiver<(C, Admission)>>,
}

fn accept_loop<L: Listener>(listener: L, limits: Limits, handler: Arc<dyn Handler>, admit: Admit<L::Conn>) {
    let (tx, rx): (Sender<(L::Conn, Admission)>, _) = channel();
    let slots = Arc::new(Slots { limits: limits.clone(), handler, busy: AtomicUsize::new(0), queue: Mutex::new(rx) });
    let mut threads = 0;
    let mut failing: Option<(io::ErrorKind, Option<i32>)> = None;
    let mut failures = 0u64;
    let mut refused_busy = 0u64;
    loop {
        let mut conn = match listener.accept() {
            Ok(c) => c,
            Err(e) => {
                let kind = (e.kind(), e.raw_os_error());
                if failing != Some(kind) {
                    warn!("{}: accepting a connection: {e}; retrying (logged once until it changes)", limits.name);
                    failing = Some(kind);
                }
                failures += 1;
                if e.kind() != io::ErrorKind::Interrupted {
                    std::thread::sleep(ACCEPT_BACKOFF);
                }
                continue;
            }
        };
        if failing.take().is_some() {
            info!("{}: accepting connections again after {failures} failed accepts", limits.name);
            failures = 0;
        }
        let busy = slots.busy.load(Ordering::Acquire);
        if busy >= limits.slots {
            refused_busy += 1;
            if refused_busy.is_power_of_two() {
                warn!(
                    "{}: all {} connection slots busy: answered 503 ({refused_busy} times so far)",
                    limits.name, limits.slots
                );
            }
            slots.handler.refused(503, None);
            let msg = format!("all {} connection slots are busy; try again", limits.slots);
            let _ = conn.set_write_timeout(BUSY_WRITE);
            let _ = io::Write::write_all(&mut conn, &Response::text(503, msg).encode(true, false));
            continue;
        }
        let admission = admit(&conn);
        slots.busy.fetch_add(1, Ordering::AcqRel);
        // Every started slot thread is busy: start one more (they stay, at most `slots`).
        if busy >= threads {
            let s = slots.clone();
            let name = format!("{}-{}", limits.name, threads + 1);
            match std::thread::Builder::new().name(name).spawn(move || slot(&s)) {
                Ok(_) => threads += 1,
                Err(e) if threads == 0 => {
                    warn!("{}: cannot start a thread for a connection: {e}", limits.name);
                    slots.busy.fetch_sub(1, Ordering::AcqRel);
                    continue;
                }
                Err(e) => warn!("{}: cannot start another slot thread ({e}); the connection waits", limits.name),
            }
        }
        if tx.send((conn, admission)).is_err() {
            slots.busy.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// A slot thread: serve connections one after the other.
fn slot<C: Stream>(slots: &Slots<C>) {
    loop {
        let next = slots.queue.lock().unwrap_or_else(|e| e.into_inner()).recv();
        let Ok((mut conn, admission)) = next else { return };
        // A panic in a handler must not lose the slot: it ends this connection only.
        let served = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            connection::serve(&mut conn, &slots.limits, slots.handler.as_ref(), admission)
        }));
        if served.is_err() {
            warn!("{}: a request handler panicked; the connection was closed", slots.limits.name);
        }
        drop(conn);
        slots.busy.fetch_sub(1, Ordering::AcqRel);
    }
}
