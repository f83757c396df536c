//! pilot's log: ContainerPilot's `logging` stanza (level, default/text/json format,
//! stdout/stderr/file output, reopened on SIGUSR1 for logrotate) on top of `log` and
//! `env_logger`, so `RUST_LOG` overrides the level the way Rust users expect.
//!
//! Lines that jobs print (when not `logging.raw`) are logged with target `job:<name>` and
//! come out with a `job` field, as in ContainerPilot.

use crate::config::{LogFormat, LogOutput, Logging};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

/// The open log file, shared with the writer so SIGUSR1 can swap it.
static FILE: OnceLock<(String, Arc<Mutex<File>>)> = OnceLock::new();

struct SharedFile(Arc<Mutex<File>>);

impl Write for SharedFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().map_err(|_| std::io::Error::other("log lock poisoned"))?.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.lock().map_err(|_| std::io::Error::other("log lock poisoned"))?.flush()
    }
}

fn open(path: &str) -> std::io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// Re-open the log file (after logrotate moved it). A no-op unless logging to a file.
pub fn reopen() {
    if let Some((path, file)) = FILE.get() {
        match open(path) {
            Ok(f) => {
                if let Ok(mut guard) = file.lock() {
                    *guard = f;
                }
            }
            Err(e) => log::error!("cannot reopen log file {path}: {e}"),
        }
    }
}

/// Install the logger. Call once, before any thread logs.
pub fn init(cfg: &Logging) -> Result<(), String> {
    let mut b = env_logger::Builder::new();
    b.filter_level(cfg.level);
    // Libraries' own debug chatter (ureq's connection steps, rustls) is not pilot's log.
    for noisy in ["ureq", "ureq_proto", "rustls"] {
        b.filter_module(noisy, log::LevelFilter::Warn.min(cfg.level));
    }
    if let Ok(spec) = std::env::var("RUST_LOG") {
        b.parse_filters(&spec);
    }
    match &cfg.output {
        LogOutput::Stdout => {
            b.target(env_logger::Target::Stdout);
        }
        LogOutput::Stderr => {
            b.target(env_logger::Target::Stderr);
        }
        LogOutput::File(path) => {
            let f = open(path).map_err(|e| format!("cannot open log file '{path}': {e}"))?;
            let shared = Arc::new(Mutex::new(f));
            let _ = FILE.set((path.clone(), shared.clone()));
            b.target(env_logger::Target::Pipe(Box::new(SharedFile(shared))));
        }
    }
    let format = cfg.format.clone();
    b.format(move |out, record| {
        let time = humantime::format_rfc3339_nanos(std::time::SystemTime::now());
        let job = record.target().strip_prefix("job:");
        let level = record.level().as_str().to_ascii_lowercase();
        match format {
            LogFormat::Default => match job {
                Some(j) => writeln!(out, "{time} {j} {}", record.args()),
                None => writeln!(out, "{time} {}", record.args()),
            },
            LogFormat::Text => {
                let msg = format!("{}", record.args()).replace('\\', "\\\\").replace('"', "\\\"");
                match job {
                    Some(j) => writeln!(out, "time=\"{time}\" level={level} msg=\"{msg}\" job={j}"),
                    None => writeln!(out, "time=\"{time}\" level={level} msg=\"{msg}\""),
                }
            }
            LogFormat::Json => {
                let mut obj =
                    serde_json::json!({"time": time.to_string(), "level": level, "msg": record.args().to_string()});
                if let Some(j) = job {
                    obj["job"] = serde_json::Value::String(j.to_string());
                }
                writeln!(out, "{obj}")
            }
        }
    });
    b.try_init().map_err(|e| e.to_string())
}
