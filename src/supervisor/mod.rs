//! Running the supervisor: the threads of DESIGN.md around the state machine. The signal
//! thread (which also reaps) and the timer thread feed one channel; this thread owns all
//! job state and only ever waits on that channel.

pub mod machine;
pub mod timers;

use crate::config::Config;
use crate::consul::{self, Command, Output};
use crate::events::Event;
use crate::init::signals::{self, Inherited, Report};
use crate::init::spawn::{self, Spec, Stdio};
use crate::init;
use crate::pathsearch::{self, Lookup};
use log::{debug, info, warn};
use machine::{Effects, Machine, RunKind, RunRequest, SpawnFailure, TimerKey};
use std::io::BufRead;
use std::os::fd::AsRawFd;
use std::collections::{BTreeMap, HashMap};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

enum Msg {
    Report(Report),
    Timer(TimerKey),
    /// From a watch thread.
    Event(Event),
    /// The Consul worker is done deregistering this job's service.
    Deregistered(String),
}

/// The real effects: fork/exec, kill(2) and the timer thread.
struct Driver {
    inherited: Inherited,
    timers: timers::Timers,
    env: Vec<(String, String)>,
    path: Option<String>,
    consul: Option<consul::Handle>,
    /// Sends the deregistration acks back into the supervisor's channel.
    acks: std::sync::mpsc::Sender<Msg>,
    /// The output of each running health check, delivered when its pipe closes.
    check_output: HashMap<String, Receiver<String>>,
}

/// A health check's note in Consul keeps its last few KB of output.
const OUTPUT_TAIL: usize = 4096;

impl Effects for Driver {
    fn spawn(&mut self, req: &RunRequest) -> Result<i32, SpawnFailure> {
        let program = match pathsearch::lookup(&req.argv[0], self.path.as_deref()) {
            Lookup::Found(p) => p,
            Lookup::NotFound => {
                return Err(SpawnFailure { pid: None, code: 127, message: format!("{}: command not found", req.argv[0]) })
            }
            Lookup::NotExecutable(p) => {
                return Err(SpawnFailure { pid: None, code: 126, message: format!("{}: permission denied (not an executable file)", p.display()) })
            }
        };
        // Jobs that are not raw have their output logged line by line with their name.
        let pipe = if req.raw { None } else { std::io::pipe().ok() };
        let devnull = std::fs::File::open("/dev/null").ok();
        let out = match &pipe {
            Some((_, w)) => Stdio::Fd(w.as_raw_fd()),
            None => Stdio::Inherit,
        };
        let stdin = match (&devnull, req.main) {
            (Some(f), false) => Stdio::Fd(f.as_raw_fd()),
            _ => Stdio::Inherit,
        };
        let err = match &pipe {
            Some((_, w)) => Stdio::Fd(w.as_raw_fd()),
            None => Stdio::Inherit,
        };
        let spec = Spec { program: &program, argv: req.argv, env: &self.env, stdin, stdout: out, stderr: err, foreground: req.main };
        let result = spawn::spawn(&spec, &self.inherited);
        if let Some((reader, writer)) = pipe {
            drop(writer);
            let target = format!("job:{}", req.job);
            // A health check's output also becomes its Consul note.
            let keep = if req.kind == RunKind::Check && result.is_ok() {
                let (tx, rx) = channel();
                self.check_output.insert(req.job.to_string(), rx);
                Some(tx)
            } else {
                None
            };
            let _ = std::thread::Builder::new().name(format!("log {}", req.job)).spawn(move || {
                let mut tail = String::new();
                for line in std::io::BufReader::new(reader).lines().map_while(Result::ok) {
                    log::info!(target: &target, "{line}");
                    if keep.is_some() {
                        tail.push_str(&line);
                        tail.push('\n');
                        if tail.len() > 2 * OUTPUT_TAIL {
                            let cut = tail.len() - OUTPUT_TAIL;
                            let cut = (cut..tail.len()).find(|i| tail.is_char_boundary(*i)).unwrap_or(tail.len());
                            tail.drain(..cut);
                        }
                    }
                }
                if let Some(tx) = keep {
                    let _ = tx.send(tail);
                }
            });
        }
        result.map_err(|e| SpawnFailure {
            pid: e.pid,
            code: e.exit_code(),
            message: format!("cannot execute {}: {}", program.display(), e.error),
        })
    }

    fn kill(&mut self, pid: i32, sig: i32, group: bool) {
        // A group signal to a job that exec'd something which left the group still reaches
        // the job itself.
        if !init::kill(pid, sig, group) && group {
            init::kill(pid, sig, false);
        }
    }

    fn set_timer(&mut self, after: Duration, key: TimerKey) {
        self.timers.set(after, key);
    }

    fn health_reported(&mut self, job: &str, passing: bool, detail: &str) {
        let pending = self.check_output.remove(&format!("check.{job}"));
        let Some(c) = &self.consul else { return };
        let output = match pending {
            Some(rx) => Output::Pending(rx, detail.to_string()),
            None => Output::Text(detail.to_string()),
        };
        let _ = c.tx.send(Command::Health { job: job.into(), passing, output });
    }

    fn service_started(&mut self, job: &str) {
        if let Some(c) = &self.consul {
            let _ = c.tx.send(Command::Started { job: job.into() });
        }
    }

    fn service_stopped(&mut self, job: &str) -> bool {
        let Some(c) = self.consul.as_ref().filter(|c| c.services.contains(job)) else { return false };
        let acks = self.acks.clone();
        let name = job.to_string();
        let ack = Box::new(move || {
            let _ = acks.send(Msg::Deregistered(name));
        });
        c.tx.send(Command::Stopped { job: job.into(), ack: Some(ack) }).is_ok()
    }

    fn maintenance(&mut self, on: bool) {
        if let Some(c) = &self.consul {
            let _ = c.tx.send(Command::Maintenance { on });
        }
    }
}

/// Run until every job is done; returns pilot's exit status.
pub fn run(config: &Config, main: Option<Vec<String>>, grace: Duration, inherited: Inherited) -> i32 {
    if let Err(e) = init::become_reaper() {
        warn!("{e}: orphans of jobs will be reaped by the real init instead");
    }
    let (tx, rx) = channel::<Msg>();
    let sig_tx = tx.clone();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || signals::run_signal_thread(move |r| sig_tx.send(Msg::Report(r)).is_ok()))
        .expect("spawn signal thread");
    let timer_tx = tx.clone();
    let timers = timers::Timers::start(move |k| timer_tx.send(Msg::Timer(k)).is_ok());
    let event_tx = tx.clone();
    let consul = consul::start(config, &BTreeMap::new(), move |ev| event_tx.send(Msg::Event(ev)).is_ok());

    let pid = std::process::id().to_string();
    let mut env: Vec<(String, String)> = std::env::vars().filter(|(k, _)| k != "CONTAINERPILOT_PID" && k != "PILOT_PID").collect();
    env.push(("CONTAINERPILOT_PID".into(), pid.clone()));
    env.push(("PILOT_PID".into(), pid));
    if let Some(c) = &consul {
        env.extend(c.ip_env());
    }
    let path = std::env::var("PATH").ok();
    let driver = Driver { inherited, timers, env, path, consul, acks: tx, check_output: HashMap::new() };
    let mut m = Machine::new(config, main, grace, driver);
    m.start();
    let deadline_after_shutdown = config.stop_timeout.min(grace);
    while !m.finished {
        let Ok(msg) = rx.recv() else { break };
        match msg {
            Msg::Report(Report::Signal(s)) => {
                if s == libc::SIGUSR1 {
                    crate::logging::reopen();
                }
                m.on_signal(s)
            }
            Msg::Report(Report::Exited { pid, status }) => m.on_exit(pid, status),
            Msg::Timer(k) => m.on_timer(k),
            Msg::Event(ev) => m.on_event(ev),
            Msg::Deregistered(job) => m.on_deregistered(&job),
        }
    }
    let code = m.exit_code();
    tidy_orphans(&rx, deadline_after_shutdown);
    debug!("reaped {} orphans in all", m.orphans_reaped);
    code
}

/// Processes that escaped their job's process group (double-forked daemons) are still our
/// children as subreaper: TERM them, give them the stop timeout, then KILL, so pilot never
/// leaves strays behind on a worker node.
fn tidy_orphans(rx: &Receiver<Msg>, limit: Duration) {
    let me = std::process::id();
    let left = init::children_of(me);
    if left.is_empty() {
        return;
    }
    info!("{} leftover process(es) still running: sending SIGTERM", left.len());
    for pid in &left {
        init::kill(*pid, libc::SIGTERM, false);
    }
    let deadline = Instant::now() + limit;
    while !init::children_of(me).is_empty() {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now()).min(Duration::from_millis(100))) {
            Ok(_) | Err(RecvTimeoutError::Timeout) if Instant::now() < deadline => continue,
            _ => break,
        }
    }
    for pid in init::children_of(me) {
        warn!("leftover process {pid} ignored SIGTERM: sending SIGKILL");
        init::kill(pid, libc::SIGKILL, false);
    }
}
