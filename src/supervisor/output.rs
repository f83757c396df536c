//! Jobs' output: one thread follows the pipes of every running non-raw process and logs
//! each line under `job:<name>`. A health check's output is also kept (its tail) for the
//! Consul check's note, delivered when the pipe closes.
//!
//! One thread for all pipes rather than one per process: a health check every few seconds
//! no longer starts (and ends) a thread each time, and a hundred jobs cost one stack. The
//! thread only reads pipes that `poll` says are ready, one read per pipe per round (a
//! chatty job cannot starve the others), and logging never blocks, so it never waits for
//! anything but its pipes and its doorbell. It starts with the first pipe to follow.

use crate::consul;
use crate::init::wait::{Doorbell, wait_readable};
use crate::logging::JobLines;
use std::io::{PipeReader, Read};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, Sender, TryRecvError, channel};

/// At most this many pipes are followed at once. A pipe stays open as long as any process
/// holds it, and a process that left its job's group (`setsid cmd &` in a check) can hold
/// it for hours: past this many, further jobs write to pilot's own stdout and stderr
/// unprefixed (as `raw` jobs do) rather than costing a descriptor and a buffer each.
pub const MAX_LOGGERS: usize = 256;

/// One pipe being followed.
struct Stream {
    name: String,
    reader: PipeReader,
    lines: JobLines,
    /// A health check's: its output so far, for the Consul note, and where it goes at EOF.
    tail: Option<(String, Sender<String>)>,
}

/// The followed pipes. Pilot waits (briefly) for them before it exits, or the last lines
/// of the last job would be lost.
#[derive(Default)]
pub struct Loggers {
    thread: Option<(Sender<Stream>, Doorbell)>,
    /// Pipes still open (the thread decrements at EOF).
    open: Arc<AtomicUsize>,
}

impl Loggers {
    /// Whether the output thread runs, starting it if needed. Asked *before* a job is given a
    /// pipe: a pipe nobody reads would end the job with SIGPIPE (or EPIPE) at its first line,
    /// so when the thread cannot be started (a process or thread limit), the job writes to
    /// pilot's own stdout and stderr instead, as a `raw` job does.
    pub fn ready(&mut self, name: &str) -> bool {
        if self.thread.is_none() {
            match self.start() {
                Ok(t) => self.thread = Some(t),
                Err(e) => {
                    log::warn!(
                        "cannot start the thread that logs jobs' output ({e}): {name} writes to pilot's stdout and stderr unprefixed"
                    );
                    return false;
                }
            }
        }
        true
    }

    /// Log `reader`'s lines as `job:<name>`; with `keep`, also return the output's tail
    /// when the pipe closes.
    pub fn follow(&mut self, name: &str, reader: PipeReader, keep: bool) -> Option<Receiver<String>> {
        let (tx, rx) = channel();
        let stream = Stream {
            name: name.to_string(),
            reader,
            lines: JobLines::new(name),
            tail: keep.then(|| (String::new(), tx)),
        };
        if !self.ready(name) {
            return None;
        }
        let (to_thread, bell) = self.thread.as_ref()?;
        self.open.fetch_add(1, Ordering::SeqCst);
        if to_thread.send(stream).is_err() {
            self.open.fetch_sub(1, Ordering::SeqCst);
            return None;
        }
        bell.ring();
        keep.then_some(rx)
    }

    fn start(&self) -> std::io::Result<(Sender<Stream>, Doorbell)> {
        let bell = Doorbell::new()?;
        let (tx, rx) = channel();
        let (b, open) = (bell.clone(), self.open.clone());
        std::thread::Builder::new().name("job output".into()).spawn(move || follow_all(rx, b, open))?;
        Ok((tx, bell))
    }

    /// As many pipes are followed as may: the next job's output is not captured.
    pub fn saturated(&mut self) -> bool {
        self.open.load(Ordering::SeqCst) >= MAX_LOGGERS
    }

    /// Pipes still open (their writers are alive).
    pub fn busy(&self) -> bool {
        self.open.load(Ordering::SeqCst) > 0
    }
}

/// The output thread: new pipes come through `rx` (with a ring of `bell`); each ready pipe
/// gets one read per round; at EOF its last line is logged and a check's tail delivered.
fn follow_all(rx: Receiver<Stream>, bell: Doorbell, open: Arc<AtomicUsize>) {
    let mut streams: Vec<Stream> = Vec::new();
    let mut fds: Vec<RawFd> = Vec::new();
    let mut ready = Vec::new();
    let mut chunk = vec![0u8; 16 << 10];
    loop {
        loop {
            match rx.try_recv() {
                Ok(s) => streams.push(s),
                Err(TryRecvError::Empty) => break,
                // The supervisor is gone (pilot is exiting): finish what is followed.
                Err(TryRecvError::Disconnected) if streams.is_empty() => return,
                Err(TryRecvError::Disconnected) => break,
            }
        }
        fds.clear();
        fds.extend(streams.iter().map(|s| s.reader.as_raw_fd()));
        wait_readable(&bell, &fds, &mut ready);
        let mut index = 0;
        streams.retain_mut(|s| {
            let is_ready = ready.get(index).copied().unwrap_or(false);
            index += 1;
            if !is_ready {
                return true;
            }
            let open_still = read_once(s, &mut chunk);
            if !open_still {
                open.fetch_sub(1, Ordering::SeqCst);
            }
            open_still
        });
    }
}

/// One read of a ready pipe; false at EOF (or an error: the pipe is given up), after the
/// last line is logged and a check's tail sent.
fn read_once(s: &mut Stream, chunk: &mut [u8]) -> bool {
    let n = loop {
        match s.reader.read(chunk) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return true,
            Ok(n) => break n,
            Err(e) => {
                log::debug!("reading the output of {}: {e}", s.name);
                break 0;
            }
        }
    };
    let tail = &mut s.tail;
    let mut keep = |line: &str| {
        if let Some((text, _)) = tail.as_mut() {
            text.push_str(line);
            text.push('\n');
            // Trimmed now and then, to more than the note keeps, so the worker still sees
            // (and marks) that output was cut.
            if text.len() > 4 * consul::worker::NOTE_LIMIT {
                consul::worker::keep_tail(text, 2 * consul::worker::NOTE_LIMIT);
            }
        }
    };
    if n > 0 {
        s.lines.push(&chunk[..n], &mut keep);
        return true;
    }
    s.lines.finish(&mut keep);
    if let Some((text, tx)) = s.tail.take() {
        let _ = tx.send(text);
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writers that never close (an escaped background process) cost at most
    /// `MAX_LOGGERS` threads; once they close, the threads go and capture resumes.
    #[test]
    fn logging_threads_are_bounded() {
        let mut loggers = Loggers::default();
        let mut writers = Vec::new();
        for i in 0..MAX_LOGGERS {
            assert!(!loggers.saturated(), "saturated after {i}");
            let (r, w) = std::io::pipe().unwrap();
            writers.push(w);
            loggers.follow("test", r, false);
        }
        assert!(loggers.saturated());
        drop(writers);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while loggers.busy() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(!loggers.saturated());
    }
}
