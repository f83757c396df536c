//! Running the supervisor: the threads of DESIGN.md around the state machine. The signal
//! thread (which also reaps) and the timer thread feed one channel; this thread owns all
//! job state and only ever waits on that channel.

pub mod machine;
pub mod timers;

use crate::config::Config;
use crate::consul::{self, Command, Output, service::Identity};
use crate::control::{self, Request};
use crate::events::{Code, Event};
use crate::init;
use crate::init::signals::{self, Inherited, Report};
use crate::init::spawn::{self, Spec, Stdio};
use crate::pathsearch::{self, Lookup};
use crate::telemetry::{self, Metrics};
use log::{debug, error, info, warn};
use machine::Phase;
use machine::{Effects, Machine, RunKind, RunRequest, SpawnFailure, TimerKey};
use std::collections::{BTreeMap, HashMap};
use std::io::BufRead;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

enum Msg {
    Report(Report),
    Timer(TimerKey),
    /// From a watch thread of the given config epoch (events of replaced watches are dropped).
    Event(u64, Event),
    Control(Request),
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
    /// Each running health check (by its job name, `check.<job>`).
    checks: HashMap<String, RunningCheck>,
    identity: Identity,
    /// None for the embedded default (a minimal init): nothing would ever read them.
    metrics: Option<Arc<Metrics>>,
    telemetry: Option<(SocketAddr, Vec<String>)>,
    states: consul::worker::States,
    /// Bumped by each reload; watch threads of an older epoch stop.
    epoch: Arc<AtomicU64>,
    /// Extra service meta (HTCondor job identity).
    meta: BTreeMap<String, String>,
    /// Threads logging jobs' output; pilot waits (briefly) for them before it exits, or
    /// the last lines of the last job would be lost.
    log_threads: Vec<std::thread::JoinHandle<()>>,
}

/// How long pilot waits at exit for jobs' last output (a daemon may hold a pipe open).
const LOG_DRAIN: Duration = Duration::from_secs(1);

struct RunningCheck {
    started: Instant,
    /// Its output, delivered when its pipe closes (None for a raw check: not captured).
    output: Option<Receiver<String>>,
}

impl Effects for Driver {
    fn spawn(&mut self, req: &RunRequest) -> Result<i32, SpawnFailure> {
        let program = match pathsearch::lookup(&req.argv[0], self.path.as_deref()) {
            Lookup::Found(p) => p,
            Lookup::NotFound => {
                return Err(SpawnFailure {
                    pid: None,
                    code: 127,
                    message: format!("{}: command not found", req.argv[0]),
                });
            }
            Lookup::NotExecutable(p) => {
                return Err(SpawnFailure {
                    pid: None,
                    code: 126,
                    message: format!("{}: permission denied (not an executable file)", p.display()),
                });
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
        let spec = Spec {
            program: &program,
            argv: req.argv,
            env: &self.env,
            stdin,
            stdout: out,
            stderr: err,
            foreground: req.main,
        };
        let result = spawn::spawn(&spec, &self.inherited);
        let is_check = req.kind == RunKind::Check && result.is_ok();
        if is_check {
            self.checks.insert(req.job.to_string(), RunningCheck { started: Instant::now(), output: None });
        }
        if let Some((reader, writer)) = pipe {
            drop(writer);
            let target = format!("job:{}", req.job);
            // A health check's output also becomes its Consul note.
            let keep = is_check.then(|| {
                let (tx, rx) = channel();
                if let Some(c) = self.checks.get_mut(req.job) {
                    c.output = Some(rx);
                }
                tx
            });
            self.log_threads.retain(|t| !t.is_finished());
            let thread = std::thread::Builder::new().name(format!("log {}", req.job)).spawn(move || {
                let mut tail = String::new();
                for line in std::io::BufReader::new(reader).lines().map_while(Result::ok) {
                    log::info!(target: &target, "{line}");
                    if keep.is_some() {
                        tail.push_str(&line);
                        tail.push('\n');
                        // Trimmed now and then, to more than the note keeps, so the
                        // worker still sees (and marks) that output was cut.
                        if tail.len() > 4 * consul::worker::NOTE_LIMIT {
                            consul::worker::keep_tail(&mut tail, 2 * consul::worker::NOTE_LIMIT);
                        }
                    }
                }
                if let Some(tx) = keep {
                    let _ = tx.send(tail);
                }
            });
            self.log_threads.extend(thread);
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
        let check = self.checks.remove(&format!("check.{job}"));
        if let (Some(c), Some(m)) = (&check, &self.metrics) {
            m.check_seconds.with_label_values(&[job]).observe(c.started.elapsed().as_secs_f64());
        }
        let Some(c) = &self.consul else { return };
        let output = match check.and_then(|c| c.output) {
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
        // Wait only for a service the agent has (or is being given): a dead or unreachable
        // agent must not hold up the shutdown.
        let at_agent = self.states.lock().unwrap_or_else(|e| e.into_inner()).get(job).is_some_and(|s| s.at_agent);
        if !at_agent {
            let _ = c.tx.send(Command::Stopped { job: job.into(), ack: None });
            return false;
        }
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

    fn published(&mut self, ev: &Event) {
        if let Some(m) = &self.metrics {
            m.events.with_label_values(&[ev.code.name(), ev.source.as_str()]).inc();
        }
    }

    fn restarted(&mut self, job: &str) {
        if let Some(m) = &self.metrics {
            m.restarts.with_label_values(&[job]).inc();
        }
    }

    fn orphan_reaped(&mut self) {
        if let Some(m) = &self.metrics {
            m.orphans_reaped.inc();
        }
    }

    /// (Re)start the Consul side for `config`: the old worker ends when its channel is
    /// dropped, old watches when they see the epoch move on.
    fn reconfigured(&mut self, config: &Config) {
        let epoch = self.epoch.fetch_add(1, Ordering::SeqCst) + 1;
        let (tx, current) = (self.acks.clone(), self.epoch.clone());
        let publish = move |ev| current.load(Ordering::SeqCst) == epoch && tx.send(Msg::Event(epoch, ev)).is_ok();
        let setup = consul::Setup {
            identity: &self.identity,
            extra_meta: &self.meta,
            metrics: self.metrics.clone(),
            telemetry: self.telemetry.clone(),
            states: self.states.clone(),
        };
        if let Some(old) = self.consul.take() {
            self.env.retain(|(k, _)| !old.ip_env().iter().any(|(n, _)| n == k));
        }
        self.consul = consul::start(config, &setup, publish);
        if let Some(c) = &self.consul {
            self.env.extend(c.ip_env());
        }
    }
}

/// What pilot knows of its surroundings beyond the config (today: HTCondor's ads).
#[derive(Debug, Default, Clone)]
pub struct Context {
    /// Added to every Consul service's meta.
    pub meta: BTreeMap<String, String>,
    /// Extra template variables, for reloads as for the first load.
    pub template_vars: Vec<(String, String)>,
    /// Signals that mean "stop" besides SIGTERM/SIGINT (the job ad's KillSig).
    pub stop_signals: Vec<i32>,
}

/// Run until every job is done; returns pilot's exit status. `config_path` is re-read by a
/// reload (None: the embedded default).
pub fn run(
    config: &Config,
    config_path: Option<PathBuf>,
    context: &Context,
    main: Option<Vec<String>>,
    grace: Duration,
    inherited: Inherited,
) -> i32 {
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

    let identity = Identity::detect(&|k| std::env::var(k).ok());
    debug!("container identity {identity:?}");
    // The embedded default is a minimal init: no socket, no telemetry, no metrics to keep.
    let metrics = config_path.is_some().then(|| {
        Arc::new(match Metrics::new(config.telemetry.as_ref().map_or(&[][..], |t| &t.metrics)) {
            Ok(m) => m,
            Err(e) => {
                error!("telemetry: {e}: serving the built-in metrics only");
                Metrics::new(&[]).expect("built-in metrics")
            }
        })
    });
    let telemetry = config.telemetry.as_ref().zip(metrics.as_ref()).and_then(|(t, metrics)| {
        let ip = match consul::interfaces::choose(&t.interfaces, &consul::interfaces::local_addresses()) {
            Ok(ip) => ip,
            Err(e) => {
                error!("telemetry: {e}: no metrics endpoint");
                return None;
            }
        };
        match telemetry::serve(t, ip, metrics.clone()) {
            Ok(addr) => Some((addr, t.tags.clone())),
            Err(e) => {
                error!("{e}; the jobs run on without a metrics endpoint");
                None
            }
        }
    });

    let pid = std::process::id().to_string();
    let mut env: Vec<(String, String)> = std::env::vars()
        .filter(|(k, _)| !matches!(k.as_str(), "CONTAINERPILOT_PID" | "PILOT_PID" | "PILOT_SOCKET"))
        .collect();
    env.push(("CONTAINERPILOT_PID".into(), pid.clone()));
    env.push(("PILOT_PID".into(), pid));

    // The embedded default is a minimal init: no socket to leave lying around.
    let socket = if config_path.is_some() { control_socket(config, &identity) } else { None };
    if let (Some(path), Some(metrics)) = (&socket, &metrics) {
        let ctl_tx = tx.clone();
        let server = control::server::Server {
            socket: path.clone(),
            config: config_path,
            metrics: metrics.clone(),
            has_telemetry: config.telemetry.is_some(),
            send: Box::new(move |r| ctl_tx.send(Msg::Control(r)).is_ok()),
            overlay: context.template_vars.clone(),
        };
        match server.start() {
            Ok(()) => env.push(("PILOT_SOCKET".into(), path.display().to_string())),
            Err(e) => error!("{e}; the jobs run on without a control socket"),
        }
    }

    let path = std::env::var("PATH").ok();
    let mut driver = Driver {
        inherited,
        timers,
        env,
        path,
        consul: None,
        acks: tx,
        checks: HashMap::new(),
        identity,
        metrics,
        telemetry,
        states: Default::default(),
        epoch: Arc::new(AtomicU64::new(0)),
        meta: context.meta.clone(),
        log_threads: Vec::new(),
    };
    driver.reconfigured(config);
    let mut m = Machine::new(config, main, grace, driver);
    m.stop_signals = context.stop_signals.clone();
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
            Msg::Event(epoch, ev) => {
                if epoch == m.fx.epoch.load(Ordering::SeqCst) {
                    m.on_event(ev)
                }
            }
            Msg::Deregistered(job) => m.on_deregistered(&job),
            Msg::Control(Request::Status(reply)) => {
                let _ = reply.send(status(&m));
            }
            Msg::Control(Request::Maintenance(on)) => {
                m.on_event(Event::global(if on { Code::EnterMaintenance } else { Code::ExitMaintenance }))
            }
            Msg::Control(Request::PutEnv(vars)) => {
                m.fx.env.retain(|(k, _)| !vars.iter().any(|(n, _)| n == k));
                m.fx.env.extend(vars);
            }
            Msg::Control(Request::Reload(config)) => m.reload(*config),
        }
    }
    let code = m.exit_code();
    deregister_telemetry(m.fx.consul.as_ref());
    if let Some(path) = socket {
        let _ = std::fs::remove_file(path);
    }
    tidy_orphans(&rx, deadline_after_shutdown);
    debug!("reaped {} orphans in all", m.orphans_reaped);
    // Leftovers are gone, so the jobs' pipes are closing: let their last lines be logged.
    let drain_until = Instant::now() + LOG_DRAIN;
    while m.fx.log_threads.iter().any(|t| !t.is_finished()) && Instant::now() < drain_until {
        std::thread::sleep(Duration::from_millis(2));
    }
    code
}

/// The telemetry endpoint is registered without a job to stop it: take it out of Consul at
/// the end of an orderly exit (at most 3 s), so Prometheus stops scraping a gone container.
fn deregister_telemetry(consul: Option<&consul::Handle>) {
    let Some(c) = consul.filter(|c| c.services.contains(consul::service::TELEMETRY_JOB)) else { return };
    let (tx, rx) = channel();
    let ack = Box::new(move || {
        let _ = tx.send(());
    });
    if c.tx.send(Command::Stopped { job: consul::service::TELEMETRY_JOB.into(), ack: Some(ack) }).is_ok() {
        let _ = rx.recv_timeout(Duration::from_secs(3));
    }
}

/// The control socket's path: `control.socket`, else a per-container default.
fn control_socket(config: &Config, identity: &Identity) -> Option<PathBuf> {
    if let Some(s) = &config.control.socket {
        return Some(PathBuf::from(s));
    }
    match control::socket::default_path(identity, &|k| std::env::var(k).ok()) {
        Ok(p) => Some(p),
        Err(e) => {
            warn!("{e}; no control socket");
            None
        }
    }
}

/// `GET /v3/status`: every current job, its state, pid, restarts, health and Consul state.
fn status(m: &Machine<Driver>) -> serde_json::Value {
    let states = m.fx.states.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let jobs: Vec<serde_json::Value> = m
        .jobs
        .iter()
        .filter(|j| !j.retired)
        .map(|j| {
            let state = match (j.phase, j.pid) {
                (Phase::Active, Some(_)) => "running",
                (Phase::Active, None) if j.started => "waiting",
                (Phase::Active, None) => "not started",
                (Phase::Stopping { .. }, _) => "stopping",
                (Phase::Deregistering, _) => "deregistering",
                (Phase::Done, _) => "done",
            };
            let health = match (j.cfg.health.is_some(), j.health) {
                (false, _) => None,
                (true, machine::Health::Unknown) => Some("unknown"),
                (true, machine::Health::Healthy) => Some("healthy"),
                (true, machine::Health::Unhealthy) => Some("unhealthy"),
            };
            serde_json::json!({
                "name": j.cfg.name,
                "state": state,
                "pid": j.pid,
                "runs": j.runs,
                "restarts": j.runs.saturating_sub(1),
                "last_exit": j.last_exit.map(|e| e.to_string()),
                "health": health,
                "consul": states.get(&j.cfg.name).map(|s| &s.text),
            })
        })
        .collect();
    serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "pid": std::process::id(),
        "maintenance": m.maintenance,
        "shutting_down": m.shutting_down,
        "jobs": jobs,
        "telemetry": states.get(consul::service::TELEMETRY_JOB).map(|s| &s.text),
        "orphans_reaped": m.orphans_reaped,
    })
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
