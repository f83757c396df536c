//! pilot's log: ContainerPilot's `logging` stanza (level, default/text/json format,
//! stdout/stderr/file output, reopened on SIGUSR1 for logrotate) behind the `log` facade;
//! `RUST_LOG` overrides the level the way Rust users expect (`env_filter`'s syntax).
//!
//! Lines that jobs print (when not `logging.raw`) are logged with target `job:<name>` and
//! come out with a `job` field, as in ContainerPilot.
//!
//! **Logging never blocks the caller.** A log reader that stops reading (a full pipe on
//! stdout, a hung file system) must not stall the supervisor thread inside `log::info!`:
//! that would stop reaping, signal handling and shutdown. So a record is formatted in the
//! caller's thread and pushed into a bounded in-memory queue (`try_push`: never waits for
//! output); one writer thread, started by the first record, drains the queue to the output. When the queue is full the
//! record is dropped and counted ([`dropped_lines`]); once the writer gets through again it
//! writes `pilot: N log lines dropped (output blocked)` at the place of the gap. At exit,
//! [`flush`] waits a bounded time for the queue to drain and then gives up.
//!
//! **A log line cannot be forged.** Job names and messages are escaped: in the `text`
//! format, `msg` and `job` are quoted as Go's `strconv.Quote` would (newlines, quotes,
//! control and bidi characters escaped); in the `default` format control characters are
//! escaped and a multi-line message is written as several lines whose continuation lines
//! carry ` | ` after the prefix, so text after a newline can never pass for a record of its
//! own. `json` is escaped by its encoder.

use crate::config::{LogFormat, LogOutput, Logging};
use std::collections::VecDeque;
use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

/// Records waiting for the writer, at most. A burst of a few thousand lines (a stack trace,
/// a chatty start-up) fits while the reader is merely slow; a reader that is gone for good
/// costs at most this much memory, then lines are counted instead of kept.
pub const QUEUE_LINES: usize = 4096;
/// Bytes waiting for the writer, at most (whichever limit is reached first).
pub const QUEUE_BYTES: usize = 2 << 20;
/// One message is cut to this many bytes: a job printing a line of gigabytes without a
/// newline must not become one giant record.
pub const MESSAGE_MAX: usize = 32 << 10;

/// How long pilot waits at exit for queued records to reach a slow output.
pub const EXIT_FLUSH: Duration = Duration::from_secs(1);

/// Records dropped because the queue was full, since start.
static DROPPED: AtomicU64 = AtomicU64::new(0);
/// The queue, once `init` ran.
static QUEUE: OnceLock<Arc<Queue>> = OnceLock::new();
/// The log file's path and a freshly opened file waiting to replace the writer's (SIGUSR1).
static REOPEN: OnceLock<(String, Mutex<Option<File>>)> = OnceLock::new();

/// How many log records were dropped because the output was blocked (for a metric such as
/// `pilot_log_lines_dropped_total`).
pub fn dropped_lines() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

struct Entry {
    text: String,
    /// `DROPPED` when this record was queued: the writer reports a gap before it.
    dropped_before: u64,
}

#[derive(Default)]
struct State {
    entries: VecDeque<Entry>,
    bytes: usize,
    /// The writer holds a record it has taken off the queue but not yet written.
    writing: bool,
}

#[derive(Default)]
struct Queue {
    state: Mutex<State>,
    /// Signalled when a record is queued.
    ready: Condvar,
    /// Signalled when the writer has nothing left.
    idle: Condvar,
}

impl Queue {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queue a record or count it as dropped; never waits for the output.
    fn try_push(&self, text: String) -> bool {
        let mut st = self.lock();
        if st.entries.len() >= QUEUE_LINES || st.bytes + text.len() > QUEUE_BYTES {
            DROPPED.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        st.bytes += text.len();
        st.entries.push_back(Entry { text, dropped_before: DROPPED.load(Ordering::Relaxed) });
        drop(st);
        self.ready.notify_one();
        true
    }
}

/// Where the writer writes. Stdout and stderr are duplicated descriptors, so the writer
/// never shares a lock with `println!` elsewhere.
enum Sink {
    Fd(File),
    Std(bool),
}

impl Sink {
    fn for_output(output: &LogOutput) -> Result<Sink, String> {
        let dup = |fd: std::os::fd::BorrowedFd<'_>| fd.try_clone_to_owned().ok().map(|o| Sink::Fd(File::from(o)));
        use std::os::fd::AsFd;
        Ok(match output {
            LogOutput::Stdout => dup(std::io::stdout().as_fd()).unwrap_or(Sink::Std(true)),
            LogOutput::Stderr => dup(std::io::stderr().as_fd()).unwrap_or(Sink::Std(false)),
            LogOutput::File(path) => {
                let f = open(path).map_err(|e| format!("cannot open log file '{path}': {e}"))?;
                let _ = REOPEN.set((path.clone(), Mutex::new(None)));
                Sink::Fd(f)
            }
        })
    }

    fn write(&mut self, text: &str) {
        if let Some((_, slot)) = REOPEN.get()
            && let Some(f) = slot.lock().unwrap_or_else(|e| e.into_inner()).take()
        {
            *self = Sink::Fd(f);
        }
        // A closed output (EPIPE) loses the line; there is nowhere to say so.
        let _ = match self {
            Sink::Fd(f) => f.write_all(text.as_bytes()),
            Sink::Std(true) => std::io::stdout().lock().write_all(text.as_bytes()),
            Sink::Std(false) => std::io::stderr().lock().write_all(text.as_bytes()),
        };
    }
}

/// Open the log file for appending without ever waiting: opening a FIFO for writing
/// blocks until a reader comes, and this runs on the main thread at start (every signal
/// blocked) and on the supervisor thread for SIGUSR1. With `O_NONBLOCK` a FIFO without a
/// reader is an error (ENXIO) instead; the flag is then cleared, since only the writer
/// thread ever writes and it may wait.
fn open(path: &str) -> std::io::Result<File> {
    use nix::fcntl::{FcntlArg, OFlag, fcntl};
    use std::os::unix::fs::OpenOptionsExt;
    let f = OpenOptions::new()
        .create(true)
        .append(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ENXIO) => std::io::Error::new(e.kind(), "a FIFO nobody reads"),
            _ => e,
        })?;
    fcntl(&f, FcntlArg::F_SETFL(OFlag::O_APPEND)).map_err(std::io::Error::from)?;
    Ok(f)
}

/// Re-open the log file (after logrotate moved it). A no-op unless logging to a file. The
/// writer picks the new file up before its next line; the caller never waits for it.
pub fn reopen() {
    if let Some((path, slot)) = REOPEN.get() {
        match open(path) {
            Ok(f) => *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(f),
            Err(e) => log::error!("cannot reopen log file {path}: {e}"),
        }
    }
}

/// Wait up to `within` for every queued record to be written; false if the output is still
/// blocked then (the records left are lost with the process). Call before exiting.
pub fn flush(within: Duration) -> bool {
    let Some(q) = QUEUE.get() else { return true };
    let deadline = Instant::now() + within;
    let mut st = q.lock();
    while !st.entries.is_empty() || st.writing {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        st = q.idle.wait_timeout(st, left).unwrap_or_else(|e| e.into_inner()).0;
    }
    true
}

/// The writer thread: the only one that ever waits for the output.
fn write_loop(q: Arc<Queue>, mut sink: Sink, format: LogFormat) {
    let mut reported = 0u64;
    let notice = |sink: &mut Sink, reported: &mut u64, upto: u64| {
        if upto > *reported {
            let n = upto - *reported;
            *reported = upto;
            let msg = format!("pilot: {n} log line{} dropped (output blocked)", if n == 1 { "" } else { "s" });
            sink.write(&render(&format, log::Level::Warn, None, &msg));
        }
    };
    loop {
        let entry = {
            let mut st = q.lock();
            loop {
                if let Some(e) = st.entries.pop_front() {
                    st.bytes -= e.text.len();
                    st.writing = true;
                    break Some(e);
                }
                // Drops after the last queued record: report them once the queue is empty.
                if DROPPED.load(Ordering::Relaxed) > reported {
                    st.writing = true;
                    break None;
                }
                st.writing = false;
                q.idle.notify_all();
                st = q.ready.wait(st).unwrap_or_else(|e| e.into_inner());
            }
        };
        match entry {
            Some(e) => {
                notice(&mut sink, &mut reported, e.dropped_before);
                sink.write(&e.text);
            }
            None => notice(&mut sink, &mut reported, DROPPED.load(Ordering::Relaxed)),
        }
    }
}

struct Logger {
    filter: env_filter::Filter,
    format: LogFormat,
    queue: Arc<Queue>,
    /// What the writer thread gets when the first record starts it.
    writer: Mutex<Option<(Sink, LogFormat)>>,
    started: AtomicBool,
}

impl Logger {
    /// Start the writer thread, once. Called after a record is queued: the thread then finds
    /// it. If the thread cannot be started (no memory, a thread limit), the next record tries
    /// again; meanwhile records wait in the bounded queue.
    fn start_writer(&self) {
        let mut slot = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let Some((sink, format)) = slot.take() else { return };
        let q = self.queue.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        let spawned = std::thread::Builder::new().name("log writer".into()).spawn(move || {
            if let Ok((sink, format)) = rx.recv() {
                write_loop(q, sink, format)
            }
        });
        match spawned {
            Ok(_) => {
                let _ = tx.send((sink, format));
                self.started.store(true, Ordering::Release);
            }
            Err(_) => *slot = Some((sink, format)),
        }
    }
}

impl log::Log for Logger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        self.filter.enabled(metadata)
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.filter.matches(record) {
            return;
        }
        let job = record.target().strip_prefix("job:");
        let mut msg = Capped { text: String::new(), max: MESSAGE_MAX, cut: 0 };
        let _ = write!(msg, "{}", record.args());
        let msg = msg.finish();
        self.queue.try_push(render(&self.format, record.level(), job, &msg));
        if !self.started.load(Ordering::Acquire) {
            self.start_writer();
        }
    }

    fn flush(&self) {
        flush(Duration::from_millis(200));
    }
}

/// A job's output cut into lines as it arrives, in pieces of any size: each line is logged
/// as a record of target `job:<name>` and also handed to `each` (a health check keeps its
/// tail for the Consul note). Bytes that are not UTF-8 are replaced, not a reason to stop
/// reading (which would leave the job writing into a pipe nobody drains), `\r\n` counts as
/// a newline, and a line longer than [`MESSAGE_MAX`] is logged in pieces, so memory stays
/// bounded whatever the job prints.
pub struct JobLines {
    target: String,
    buf: Vec<u8>,
}

impl JobLines {
    pub fn new(job: &str) -> JobLines {
        JobLines { target: format!("job:{job}"), buf: Vec::new() }
    }

    /// Take more bytes; log every line they complete.
    pub fn push(&mut self, mut bytes: &[u8], each: &mut impl FnMut(&str)) {
        while !bytes.is_empty() {
            let room = MESSAGE_MAX - self.buf.len();
            let window = &bytes[..bytes.len().min(room)];
            match window.iter().position(|b| *b == b'\n') {
                Some(i) => {
                    self.buf.extend_from_slice(&window[..i]);
                    bytes = &bytes[i + 1..];
                    if self.buf.last() == Some(&b'\r') {
                        self.buf.pop();
                    }
                    self.emit(each);
                }
                None => {
                    self.buf.extend_from_slice(window);
                    bytes = &bytes[window.len()..];
                    if self.buf.len() >= MESSAGE_MAX {
                        self.emit(each);
                    }
                }
            }
        }
    }

    /// The pipe closed: log what is left of the last line.
    pub fn finish(&mut self, each: &mut impl FnMut(&str)) {
        if !self.buf.is_empty() {
            self.emit(each);
        }
    }

    fn emit(&mut self, each: &mut impl FnMut(&str)) {
        let line = String::from_utf8_lossy(&self.buf);
        log::info!(target: &self.target, "{line}");
        each(&line);
        self.buf.clear();
    }
}

/// Log everything `reader` gives as `job`'s lines (see [`JobLines`]) until it ends.
pub fn job_output(job: &str, mut reader: impl std::io::Read, mut each: impl FnMut(&str)) {
    let mut lines = JobLines::new(job);
    let mut chunk = [0u8; 8192];
    loop {
        match reader.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => lines.push(&chunk[..n], &mut each),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        }
    }
    lines.finish(&mut each);
}

/// A message being formatted, kept to `max` bytes as it is written: a huge argument (an
/// agent's error page) never exists whole in memory; what does not fit is only counted.
struct Capped {
    text: String,
    max: usize,
    cut: usize,
}

impl std::fmt::Write for Capped {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let room = self.max - self.text.len();
        if self.cut > 0 || s.len() > room {
            let mut at = room.min(s.len());
            while !s.is_char_boundary(at) {
                at -= 1;
            }
            if self.cut == 0 {
                self.text.push_str(&s[..at]);
            } else {
                at = 0;
            }
            self.cut += s.len() - at;
        } else {
            self.text.push_str(s);
        }
        Ok(())
    }
}

impl Capped {
    fn finish(mut self) -> String {
        if self.cut > 0 {
            let _ = write!(self.text, "... ({} bytes cut)", self.cut);
        }
        self.text
    }
}

/// Install the logger. Call once, before any thread logs. Its writer thread starts with the
/// first record: a pilot that has nothing to say (the embedded default, quietly reaping for
/// its payload) never pays for the thread, its stack or its start on the start-up path.
pub fn init(cfg: &Logging) -> Result<(), String> {
    let mut b = env_filter::Builder::new();
    b.filter_level(cfg.level);
    // Libraries' own debug chatter (ureq's connection steps, rustls) is not pilot's log.
    for noisy in ["ureq", "ureq_proto", "rustls"] {
        b.filter_module(noisy, log::LevelFilter::Warn.min(cfg.level));
    }
    if let Ok(spec) = std::env::var("RUST_LOG")
        && let Err(e) = b.try_parse(&spec)
    {
        eprintln!("pilot: RUST_LOG={spec:?} ignored: {e}");
    }
    let filter = b.build();
    let sink = Sink::for_output(&cfg.output)?;
    let queue = Arc::new(Queue::default());
    if QUEUE.set(queue.clone()).is_err() {
        return Err("the logger is already installed".into());
    }
    let max = filter.filter();
    let writer = Mutex::new(Some((sink, cfg.format.clone())));
    let logger: &'static Logger = Box::leak(Box::new(Logger {
        filter,
        format: cfg.format.clone(),
        queue,
        writer,
        started: AtomicBool::new(false),
    }));
    log::set_logger(logger).map_err(|e| e.to_string())?;
    log::set_max_level(max);
    Ok(())
}

/// One record as it goes out, ending in a newline.
fn render(format: &LogFormat, level: log::Level, job: Option<&str>, msg: &str) -> String {
    let time = humantime::format_rfc3339_nanos(std::time::SystemTime::now());
    let level = level.as_str().to_ascii_lowercase();
    let mut out = String::with_capacity(msg.len() + 64);
    match format {
        LogFormat::Default => {
            let prefix = match job {
                Some(j) => format!("{time} {}", escape_controls(j, false)),
                None => time.to_string(),
            };
            for (i, line) in msg.split('\n').enumerate() {
                let sep = if i == 0 { " " } else { " | " };
                let _ = writeln!(out, "{prefix}{sep}{}", escape_controls(line, true));
            }
        }
        LogFormat::Text => {
            let _ = write!(out, "time=\"{time}\" level={level} msg={}", quote(msg));
            if let Some(j) = job {
                let _ = write!(out, " job={}", quote_if_needed(j));
            }
            out.push('\n');
        }
        LogFormat::Json => {
            let mut obj = serde_json::json!({"time": time.to_string(), "level": level, "msg": msg});
            if let Some(j) = job {
                obj["job"] = serde_json::Value::String(j.to_string());
            }
            let _ = writeln!(out, "{obj}");
        }
    }
    out
}

/// Characters that could end or disguise a line in a viewer: controls (C0, DEL, C1), the
/// Unicode line and paragraph separators and the bidirectional overrides.
fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

fn push_escaped(out: &mut String, c: char) {
    let _ = match c {
        '\n' => write!(out, "\\n"),
        '\r' => write!(out, "\\r"),
        '\t' => write!(out, "\\t"),
        c if (c as u32) < 0x80 => write!(out, "\\x{:02x}", c as u32),
        c => write!(out, "\\u{:04x}", c as u32),
    };
}

/// The `default` format: readable text with only the dangerous characters escaped (a tab
/// is kept in a message).
fn escape_controls(s: &str, keep_tab: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if is_unsafe(c) && !(keep_tab && c == '\t') {
            push_escaped(&mut out, c);
        } else {
            out.push(c);
        }
    }
    out
}

/// A double-quoted value as Go's `strconv.Quote` writes it (logrus' text format).
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if is_unsafe(c) => push_escaped(&mut out, c),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// As logrus: a bare value when it is only letters, digits and `-._/@^+`, quoted otherwise.
fn quote_if_needed(s: &str) -> String {
    let bare = !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "-._/@^+".contains(c));
    if bare { s.to_string() } else { quote(s) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_format_escapes_msg_and_job() {
        let line = render(&LogFormat::Text, log::Level::Info, Some("a b\nlevel=error"), "x\"\ny\u{1b}[2J\\");
        assert_eq!(line.matches('\n').count(), 1, "{line}");
        assert!(line.ends_with(" level=info msg=\"x\\\"\\ny\\x1b[2J\\\\\" job=\"a b\\nlevel=error\"\n"), "{line}");
        let line = render(&LogFormat::Text, log::Level::Info, Some("web-1.a"), "ok");
        assert!(line.ends_with(" msg=\"ok\" job=web-1.a\n"), "{line}");
    }

    #[test]
    fn default_format_marks_continuation_lines() {
        let line = render(&LogFormat::Default, log::Level::Info, Some("j\nfake"), "one\ntwo\r\tx");
        let lines: Vec<_> = line.lines().collect();
        assert_eq!(lines.len(), 2, "{line}");
        assert!(lines[0].ends_with(" j\\nfake one"), "{line}");
        assert!(lines[1].ends_with(" j\\nfake | two\\r\tx"), "{line}");
    }

    #[test]
    fn json_format_is_one_line() {
        let line = render(&LogFormat::Json, log::Level::Warn, Some("j\n"), "a\nb");
        assert_eq!(line.matches('\n').count(), 1);
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["msg"], "a\nb");
        assert_eq!(v["job"], "j\n");
    }

    #[test]
    fn long_messages_are_cut_at_a_character_boundary() {
        let mut c = Capped { text: String::new(), max: MESSAGE_MAX, cut: 0 };
        let _ = write!(c, "{}more", "é".repeat(MESSAGE_MAX));
        let s = c.finish();
        assert!(s.starts_with('é') && s.ends_with(&format!("é... ({} bytes cut)", MESSAGE_MAX + 4)), "{}", s.len());
        let mut c = Capped { text: String::new(), max: 10, cut: 0 };
        let _ = write!(c, "short");
        assert_eq!(c.finish(), "short");
    }

    #[test]
    fn a_fifo_without_reader_is_refused_not_waited_on() {
        let dir = std::env::temp_dir().join(format!("pilot-logfifo-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fifo = dir.join("log");
        let _ = std::fs::remove_file(&fifo);
        assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
        let e = open(fifo.to_str().unwrap()).unwrap_err();
        assert!(e.to_string().contains("a FIFO nobody reads"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn job_output_survives_bad_bytes_and_endless_lines() {
        let mut input = b"one\r\n\xff\xfe latin\n".to_vec();
        input.extend(std::iter::repeat_n(b'x', 2 * MESSAGE_MAX + 5));
        input.extend(b"\nlast");
        let mut seen = Vec::new();
        job_output("j", &input[..], |l| seen.push(l.to_string()));
        assert_eq!(seen[0], "one");
        assert_eq!(seen[1], "\u{fffd}\u{fffd} latin");
        assert_eq!(seen[2].len(), MESSAGE_MAX, "an endless line comes in pieces");
        assert_eq!(seen[4].len(), 5);
        assert_eq!(seen[5], "last");
    }

    #[test]
    fn a_full_queue_drops_and_counts() {
        let q = Queue::default();
        let before = dropped_lines();
        for i in 0..QUEUE_LINES + 10 {
            q.try_push(format!("{i}\n"));
        }
        assert_eq!(q.lock().entries.len(), QUEUE_LINES);
        assert!(dropped_lines() >= before + 10);
        assert!(!q.try_push("x".repeat(QUEUE_BYTES)), "the byte limit holds too");
    }
}
