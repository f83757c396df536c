//! Jobs' output: a thread per running non-raw process reads its pipe and logs each line
//! under `job:<name>`. A health check's output is also kept (its tail) for the Consul
//! check's note, delivered when the pipe closes.

use crate::consul;
use std::io::PipeReader;
use std::sync::mpsc::{Receiver, channel};
use std::thread::JoinHandle;

/// At most this many threads log jobs' output at once. A pipe stays open as long as any
/// process holds it, and a process that left its job's group (`setsid cmd &` in a check)
/// can hold it for hours: past this many, further jobs write to pilot's own stdout and
/// stderr unprefixed (as `raw` jobs do) rather than costing a thread each.
pub const MAX_LOGGERS: usize = 256;

/// The logging threads of jobs' output. Pilot waits (briefly) for them before it exits, or
/// the last lines of the last job would be lost.
#[derive(Default)]
pub struct Loggers {
    threads: Vec<JoinHandle<()>>,
}

impl Loggers {
    /// Log `reader`'s lines as `job:<name>`; with `keep`, also return the output's tail
    /// when the pipe closes.
    pub fn follow(&mut self, name: &str, reader: PipeReader, keep: bool) -> Option<Receiver<String>> {
        let (tx, rx) = channel();
        let job = name.to_string();
        let keep_tx = keep.then_some(tx);
        self.threads.retain(|t| !t.is_finished());
        let thread = std::thread::Builder::new().name(format!("log {name}")).spawn(move || {
            let mut tail = String::new();
            // Not lines().map_while(Ok): that stops at the first non-UTF-8 byte and leaves
            // the job writing into a pipe nobody drains; job_output never stops early.
            crate::logging::job_output(&job, reader, |line| {
                if keep_tx.is_some() {
                    tail.push_str(line);
                    tail.push('\n');
                    // Trimmed now and then, to more than the note keeps, so the worker
                    // still sees (and marks) that output was cut.
                    if tail.len() > 4 * consul::worker::NOTE_LIMIT {
                        consul::worker::keep_tail(&mut tail, 2 * consul::worker::NOTE_LIMIT);
                    }
                }
            });
            if let Some(tx) = keep_tx {
                let _ = tx.send(tail);
            }
        });
        match thread {
            Ok(t) => {
                self.threads.push(t);
                keep.then_some(rx)
            }
            Err(e) => {
                log::warn!("cannot start a thread to log the output of {name}: {e}");
                None
            }
        }
    }

    /// As many threads are logging as may: the next job's output is not captured.
    pub fn saturated(&mut self) -> bool {
        self.threads.retain(|t| !t.is_finished());
        self.threads.len() >= MAX_LOGGERS
    }

    /// Threads still logging (their writers are alive).
    pub fn busy(&self) -> bool {
        self.threads.iter().any(|t| !t.is_finished())
    }
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
