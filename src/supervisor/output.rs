//! Jobs' output: a thread per running non-raw process reads its pipe and logs each line
//! under `job:<name>`. A health check's output is also kept (its tail) for the Consul
//! check's note, delivered when the pipe closes.

use crate::consul;
use std::io::{BufRead, PipeReader};
use std::sync::mpsc::{Receiver, channel};
use std::thread::JoinHandle;

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
        let target = format!("job:{name}");
        let (tx, rx) = channel();
        let keep_tx = keep.then_some(tx);
        self.threads.retain(|t| !t.is_finished());
        let thread = std::thread::Builder::new().name(format!("log {name}")).spawn(move || {
            let mut tail = String::new();
            for line in std::io::BufReader::new(reader).lines().map_while(Result::ok) {
                log::info!(target: &target, "{line}");
                if keep_tx.is_some() {
                    tail.push_str(&line);
                    tail.push('\n');
                    // Trimmed now and then, to more than the note keeps, so the worker
                    // still sees (and marks) that output was cut.
                    if tail.len() > 4 * consul::worker::NOTE_LIMIT {
                        consul::worker::keep_tail(&mut tail, 2 * consul::worker::NOTE_LIMIT);
                    }
                }
            }
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

    /// Threads still logging (their writers are alive).
    pub fn busy(&self) -> bool {
        self.threads.iter().any(|t| !t.is_finished())
    }
}
