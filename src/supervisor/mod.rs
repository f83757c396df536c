//! Running the supervisor: the thread that owns the state machine (see
//! docs/ARCHITECTURE.md). It waits in one place (`init::wait`): for signals (it is also the
//! one reaper), for the doorbell of its channel (other threads' messages) and for the next
//! of its timers. The `Driver` gives the pure `machine` its real effects: processes (`launch`), their output
//! (`output`), kill(2), timers, Consul and metrics; `sweep` ends a shutdown.

pub mod launch;
pub mod machine;
pub mod output;
pub mod sweep;
pub mod timers;

use crate::config::Config;
use crate::consul::{self, Command, Output, service::Identity};
use crate::control::{self, Request};
use crate::events::{Code, Event, Source};
use crate::init;
use crate::init::signals::{self, Inherited, Report};
use crate::init::spawn::InFlight;
use crate::init::wait::{Doorbell, Waiter};
use crate::status::{HealthState, JobState, JobStatus, Status};
use crate::telemetry::{self, Metrics};
use log::{debug, error, info, warn};
use machine::{Effects, Health, JobId, Machine, Phase, RunKind, RunRequest, SpawnFailure, TimerKey};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::time::{Duration, Instant};

enum Msg {
    /// A signal or a reaped child (read by this thread itself, never sent).
    Report(Report),
    /// A timer that fell due (from this thread's own heap, never sent).
    Timer(TimerKey),
    /// From a watch thread of the given config epoch (events of replaced watches are dropped).
    Event(u64, Event),
    Control(Request),
    /// The Consul worker is done deregistering this job's service.
    Deregistered(JobId),
}

/// The supervisor's channel as other threads see it: each message rings the doorbell that
/// ends the supervisor's wait.
#[derive(Clone)]
struct Mailbox {
    tx: Sender<Msg>,
    bell: Doorbell,
}

impl Mailbox {
    fn send(&self, msg: Msg) -> bool {
        let sent = self.tx.send(msg).is_ok();
        if sent {
            self.bell.ring();
        }
        sent
    }
}

/// The real effects: spawning, kill(2) and the timers.
struct Driver {
    inherited: Inherited,
    /// The children spawned and not yet reaped (their arguments, stacks, failure reports).
    inflight: InFlight,
    timers: timers::Heap,
    env: Vec<(String, String)>,
    path: Option<String>,
    consul: Option<consul::Handle>,
    /// Sends the deregistration acks back into the supervisor's channel.
    acks: Mailbox,
    /// Each running health check (by its source name, `check.<job>`).
    checks: HashMap<Source, RunningCheck>,
    identity: Identity,
    /// None for the embedded default (a minimal init): nothing would ever read them.
    metrics: Option<Arc<Metrics>>,
    telemetry: Option<(SocketAddr, Vec<String>)>,
    states: consul::worker::States,
    /// Bumped by each reload; watch threads of an older epoch stop.
    epoch: Arc<AtomicU64>,
    /// Extra service meta (HTCondor job identity).
    meta: BTreeMap<String, String>,
    loggers: output::Loggers,
    /// Whether the last spawn found the most pipes followed (to log the change only).
    loggers_saturated: bool,
    /// When the shutdown's grace ends (set with the machine's `Grace` timer; None: not
    /// shutting down yet, or a grace too large to be a point in time).
    grace_deadline: Option<Instant>,
}

/// How long pilot waits at exit for jobs' last output (a daemon may hold a pipe open)...
const LOG_DRAIN: Duration = Duration::from_secs(1);
/// ...and how long at most once the grace is over.
const LOG_DRAIN_LATE: Duration = Duration::from_millis(200);
/// How long after start (and after a reload) pilot gives back the pages of code it ran only
/// to start (`init::trim`): after the start-up path and the first runs, not during them.
const TRIM_AFTER: Duration = Duration::from_secs(2);
/// Later, pilot gives back the code it ran when it is about to sleep at least this long
/// (say a health check every 10 s), and at most once per this long: the pages a check's
/// handling faulted in come back at the next one (about a tenth of a millisecond of page
/// faults), which is worth it for a sleep of seconds, not for a check every second or a
/// storm of signals.
const IDLE_TRIM: Duration = Duration::from_secs(2);
/// ...once nothing has come in for this long: the exit of the check just started, its
/// output's end and its Consul update (on other threads) are handled by then, so the trim
/// does not come before the work that would fault the pages straight back in.
const QUIET: Duration = Duration::from_millis(250);
/// How long the telemetry endpoint's deregistration may take at exit (within the grace).
const TELEMETRY_DEREGISTER: Duration = Duration::from_secs(3);

struct RunningCheck {
    started: Instant,
    /// Its output, delivered when its pipe closes (None for a raw check: not captured).
    output: Option<Receiver<String>>,
}

impl Effects for Driver {
    fn spawn(&mut self, req: &RunRequest) -> Result<i32, SpawnFailure> {
        let saturated = self.loggers.saturated();
        let raw = req.raw || saturated;
        // Said when capture stops and when it resumes, not at every spawn in between.
        if saturated != self.loggers_saturated {
            self.loggers_saturated = saturated;
            if saturated {
                warn!(
                    "{} jobs' pipes are followed already: output is not captured until some close",
                    output::MAX_LOGGERS
                );
            } else {
                info!("jobs' pipes have closed: output is captured again");
            }
        }
        // Without the output thread nobody would read the job's pipe: then it runs raw.
        let raw = raw || !self.loggers.ready(req.job);
        let req = &RunRequest { raw, ..*req };
        // The accounts were resolved with the config: no file is read here.
        let plan = match crate::identity::plan(req.privileges) {
            Ok(plan) => plan,
            Err(e) => {
                let program = req.argv.first().map_or("", |p| p.as_str());
                let message = format!("cannot run {program} with its user and capabilities: {e}");
                return Err(SpawnFailure { pid: None, code: 126, message });
            }
        };
        let launched =
            launch::launch(req, &self.env, self.path.as_deref(), plan.as_ref(), &self.inherited, &mut self.inflight);
        match launched {
            Ok(launched) => {
                let is_check = req.kind == RunKind::Check;
                let output = launched.output.and_then(|r| self.loggers.follow(req.job, r, is_check));
                if is_check {
                    self.checks.insert(Source::from(req.job), RunningCheck { started: Instant::now(), output });
                }
                Ok(launched.pid)
            }
            Err(failed) => Err(failed.failure),
        }
    }

    fn kill(&mut self, pid: i32, sig: i32, group: bool) {
        // A group signal to a job that exec'd something which left the group still reaches
        // the job itself.
        if !init::kill(pid, sig, group) && group {
            init::kill(pid, sig, false);
        }
    }

    fn signal_leftovers(&mut self, pgid: i32, sig: i32) {
        // The group only: its leader is reaped, its pid may already be someone else's.
        init::kill(pgid, sig, true);
    }

    fn set_timer(&mut self, after: Duration, key: TimerKey) {
        if key == TimerKey::Grace {
            self.grace_deadline = Instant::now().checked_add(after);
        }
        self.timers.set(after, key);
    }

    fn health_reported(&mut self, job: &str, passing: bool, detail: &str) {
        let check = self.checks.remove(&Source::check(job));
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

    fn service_stopped(&mut self, id: JobId, job: &str) -> bool {
        let Some(c) = self.consul.as_ref().filter(|c| c.services.contains(job)) else { return false };
        // Wait only for a service the agent has (or is being given): a dead or unreachable
        // agent must not hold up the shutdown.
        let at_agent = self.states.lock().unwrap_or_else(|e| e.into_inner()).get(job).is_some_and(|s| s.at_agent);
        if !at_agent {
            let _ = c.tx.send(Command::Stopped { job: job.into(), ack: None });
            return false;
        }
        let acks = self.acks.clone();
        let ack = Box::new(move || {
            let _ = acks.send(Msg::Deregistered(id));
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
    /// dropped, old watches when their `Handle` is (a blocking query in flight is cut); the
    /// epoch drops any event an old watch still had on its way.
    fn reconfigured(&mut self, config: &Config) {
        let epoch = self.epoch.fetch_add(1, Ordering::SeqCst) + 1;
        let (tx, current) = (self.acks.clone(), self.epoch.clone());
        let publish = move |ev| current.load(Ordering::SeqCst) == epoch && tx.send(Msg::Event(epoch, ev));
        let setup = consul::Setup {
            identity: &self.identity,
            extra_meta: &self.meta,
            metrics: self.metrics.clone(),
            telemetry: self.telemetry.clone(),
            states: self.states.clone(),
        };
        // The old config's checks are over (a drain waits for them); a killed one never
        // reported, so its entry would stay.
        self.checks.clear();
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
    // pilot's own descriptors may go past the usual 1024; its children get the original
    // soft limit back before exec (`init::nofile`, the spawn child).
    if let Some((soft, hard)) = init::nofile::raise() {
        debug!("RLIMIT_NOFILE soft limit raised from {soft} to {hard} for pilot; its children get {soft}");
    }
    // The accounts of jobs with a `user` or `group`, looked up once now, before anything
    // runs (each file read with a deadline), not at each spawn (`identity::resolve_config`).
    let resolved;
    let config = if crate::identity::needs_resolving(config) {
        let mut c = config.clone();
        crate::identity::resolve_config(&mut c, &crate::identity::etc());
        resolved = c;
        &resolved
    } else {
        config
    };
    if let Err(e) = init::become_reaper() {
        warn!("{e}: orphans of jobs will be reaped by the real init instead");
    }
    let (tx, rx) = channel::<Msg>();
    // Without these pilot cannot reap or hear a signal: nothing to run without them.
    // Refused (EMFILE, a seccomp filter) before any job starts: say why and exit 1, no panic.
    let (bell, waiter) = match Doorbell::new().and_then(|bell| Ok((bell.clone(), Waiter::new(bell)?))) {
        Ok(pair) => pair,
        Err(e) => {
            error!("cannot supervise: the eventfd/signalfd pilot waits on: {e}");
            return 1;
        }
    };
    let tx = Mailbox { tx, bell };

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
            send: Box::new(move |r| ctl_tx.send(Msg::Control(r))),
            overlay: context.template_vars.clone(),
        };
        match server.start() {
            Ok(()) => env.push(("PILOT_SOCKET".into(), path.display().to_string())),
            Err(e) => error!("{e}; the jobs run on without a control socket"),
        }
    }

    // Health in the job ad, when HTCondor gave the job a Chirp proxy.
    let chirp_tx = tx.clone();
    crate::htcondor::chirp::start(&|k| std::env::var(k).ok(), Box::new(move |r| chirp_tx.send(Msg::Control(r))));

    let path = std::env::var("PATH").ok();
    let mut driver = Driver {
        inherited,
        inflight: InFlight::default(),
        timers: timers::Heap::default(),
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
        loggers: output::Loggers::default(),
        loggers_saturated: false,
        grace_deadline: None,
    };
    driver.reconfigured(config);
    let mut m = Machine::new(config, main, grace, driver);
    m.stop_signals = context.stop_signals.clone();
    m.start();
    let mut inbox = VecDeque::new();
    // Children may have exited before the first wait (pilot exec'd by a shell that had some).
    signals::reap_all(|r| {
        inbox.push_back(Msg::Report(r));
        true
    });
    let trimmable = init::trim::program_on_local_storage();
    if !trimmable {
        debug!("pilot's program is not on a local disk: its code stays mapped (no trim)");
    }
    let mut trim_at = Instant::now().checked_add(TRIM_AFTER).filter(|_| trimmable);
    // Inputs were handled since the last trim; when the last came in; when the last trim was.
    let (mut handled, mut last_input, mut trimmed) = (false, Instant::now(), Instant::now());
    while !m.finished() {
        let Some(msg) = inbox.pop_front() else {
            // Children that have exec'd since need their stacks and arguments no more.
            m.fx.inflight.prune();
            let now = Instant::now();
            let sleep_ahead = m.fx.timers.next().is_none_or(|t| t.saturating_duration_since(now) >= IDLE_TRIM);
            // When an idle trim is due, if nothing else comes in first.
            let quiet_at = (trimmable && trim_at.is_none() && handled && sleep_ahead)
                .then(|| (last_input + QUIET).max(trimmed + IDLE_TRIM));
            if trim_at.is_some_and(|t| t <= now) || quiet_at.is_some_and(|q| q <= now) {
                trim_at = None;
                (handled, trimmed) = (false, now);
                let bytes = init::trim::release_code();
                debug!("gave back the mappings of {} KiB of code", bytes >> 10);
                continue;
            }
            let also = match (trim_at, quiet_at) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            wait_for_inputs(&waiter, &rx, &mut m.fx.timers, also, &mut inbox);
            continue;
        };
        (handled, last_input) = (true, Instant::now());
        match msg {
            Msg::Report(Report::Signal(s)) => {
                if s == libc::SIGUSR1 {
                    // The one file-system touch left on this thread (see ARCHITECTURE.md).
                    crate::logging::reopen();
                }
                m.on_signal(s)
            }
            Msg::Report(Report::Exited { pid, status }) => match m.fx.inflight.reaped(pid) {
                // The child never ran its program: the message and code it left.
                Some(failed) => m.on_spawn_failed(pid, failed.code, &failed.message),
                None => m.on_exit(pid, status),
            },
            Msg::Timer(k) => m.on_timer(k),
            Msg::Event(epoch, ev) => {
                if epoch == m.fx.epoch.load(Ordering::SeqCst) {
                    m.on_event(ev)
                }
            }
            Msg::Deregistered(job) => m.on_deregistered(job),
            Msg::Control(Request::Status(reply)) => {
                let _ = reply.send(status(&m));
            }
            Msg::Control(Request::Maintenance(on)) => {
                m.on_event(Event::global(if on { Code::EnterMaintenance } else { Code::ExitMaintenance }))
            }
            Msg::Control(Request::PutEnv(vars, reply)) => {
                let taken = control::put_env(&mut m.fx.env, vars);
                if let Err(e) = &taken {
                    warn!("putenv refused: {e}");
                }
                let _ = reply.send(taken);
            }
            Msg::Control(Request::Reload(config)) => {
                // Resolved on the control thread that loaded it (`identity::resolve_config`).
                m.reload(*config);
                trim_at = Instant::now().checked_add(TRIM_AFTER).filter(|_| trimmable);
            }
        }
    }
    let code = m.exit_code();
    // Everything below happens within the grace that began with the shutdown; past it,
    // only the SIGKILLed leftovers' reaping (`machine::GIVE_UP`) and `LOG_DRAIN_LATE`.
    let deadline = match m.was_hurried() {
        true => Some(Instant::now()),
        false => m.fx.grace_deadline.or_else(|| Instant::now().checked_add(grace)),
    };
    // The socket's directory may be on a network file system (HTCondor's scratch directory):
    // removed off this thread, so a hung one cannot keep the leftovers from being swept.
    let socket_removed = socket.map(remove_off_thread);
    sweep_leftovers(&waiter, &rx, deadline, m.stop_timeout());
    deregister_telemetry(m.fx.consul.as_ref(), deadline);
    debug!("reaped {} orphans in all", m.orphans_reaped);
    // Leftovers are gone, so the jobs' pipes are closing: let their last lines be logged.
    let now = Instant::now();
    let budget = deadline.map_or(LOG_DRAIN, |d| d.saturating_duration_since(now).max(LOG_DRAIN_LATE)).min(LOG_DRAIN);
    let drain_until = now + budget;
    while m.fx.loggers.busy() && Instant::now() < drain_until {
        std::thread::sleep(Duration::from_millis(2));
    }
    // The socket's removal (on its thread) has had the sweep's time; a little more at most.
    if let Some(done) = socket_removed {
        let _ = done.recv_timeout(Duration::from_millis(200));
    }
    code
}

/// Remove `path` (the control socket) on a thread of its own: its directory may be on a
/// network file system (HTCondor's scratch directory), and the supervisor thread never waits
/// on a file system. The receiver hears when it is done (or that the thread could not start).
fn remove_off_thread(path: PathBuf) -> Receiver<()> {
    let (tx, rx) = channel();
    let spawned = std::thread::Builder::new().name("remove socket".into()).spawn(move || {
        let _ = std::fs::remove_file(path);
        let _ = tx.send(());
    });
    if let Err(e) = spawned {
        warn!("the control socket stays: no thread to remove it: {e}");
    }
    rx
}

/// Wait for the next inputs and queue them in order: signals and reaped children first (a
/// SIGCHLD reaps every exited child), then the messages of other threads, then the timers
/// that fell due. Ends at the next deadline (or at `also`) at the latest.
fn wait_for_inputs(
    waiter: &Waiter,
    rx: &Receiver<Msg>,
    timers: &mut timers::Heap,
    also: Option<Instant>,
    inbox: &mut VecDeque<Msg>,
) {
    let next = match (timers.next(), also) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let timeout = next.map(|at| at.saturating_duration_since(Instant::now()));
    let woken = waiter.wait(timeout);
    for sig in woken.signals {
        if sig == libc::SIGCHLD {
            signals::reap_all(|r| {
                inbox.push_back(Msg::Report(r));
                true
            });
        } else {
            inbox.push_back(Msg::Report(Report::Signal(sig)));
        }
    }
    // Also without a ring: a message whose ring was taken by an earlier wait.
    while let Ok(msg) = rx.try_recv() {
        inbox.push_back(msg);
    }
    let now = Instant::now();
    while let Some(key) = timers.pop_due(now) {
        inbox.push_back(Msg::Timer(key));
    }
}

/// The telemetry endpoint is registered without a job to stop it: take it out of Consul at
/// the end of an orderly exit (at most 3 s, and not past the grace), so Prometheus stops
/// scraping a gone container.
fn deregister_telemetry(consul: Option<&consul::Handle>, deadline: Option<Instant>) {
    let Some(c) = consul.filter(|c| c.services.contains(consul::service::TELEMETRY_JOB)) else { return };
    let (tx, rx) = channel();
    let ack = Box::new(move || {
        let _ = tx.send(());
    });
    let wait = deadline.map_or(TELEMETRY_DEREGISTER, |d| d.saturating_duration_since(Instant::now()));
    if c.tx.send(Command::Stopped { job: consul::service::TELEMETRY_JOB.into(), ack: Some(ack) }).is_ok()
        && rx.recv_timeout(wait.min(TELEMETRY_DEREGISTER)).is_err()
    {
        warn!("the telemetry endpoint's deregistration did not finish in time");
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
fn status(m: &Machine<Driver>) -> Status {
    let states = m.fx.states.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let jobs = m
        .jobs
        .iter()
        .map(|j| {
            let state = match (j.phase, j.pid) {
                (Phase::Active, Some(_)) => JobState::Running,
                (Phase::Active, None) if j.started => JobState::Waiting,
                (Phase::Active, None) => JobState::NotStarted,
                (Phase::Stopping { .. }, _) => JobState::Stopping,
                (Phase::Deregistering, _) => JobState::Deregistering,
                (Phase::Done, _) => JobState::Done,
            };
            let health = j.cfg.health.as_ref().map(|_| match j.health {
                Health::Unknown => HealthState::Unknown,
                Health::Healthy => HealthState::Healthy,
                Health::Unhealthy => HealthState::Unhealthy,
            });
            JobStatus {
                name: j.cfg.name.clone(),
                state,
                pid: j.pid,
                runs: j.runs,
                restarts: j.restarts,
                last_exit: j.last_exit.map(|e| e.to_string()),
                health,
                consul: states.get(&j.cfg.name).map(|s| s.text.clone()),
            }
        })
        .collect();
    Status {
        version: env!("CARGO_PKG_VERSION").into(),
        pid: std::process::id(),
        maintenance: m.maintenance,
        shutting_down: m.shutting_down(),
        reloading: m.reloading(),
        jobs,
        telemetry: states.get(consul::service::TELEMETRY_JOB).map(|s| s.text.clone()),
        orphans_reaped: m.orphans_reaped,
    }
}

/// The end of a shutdown (see `sweep`): SIGTERM, then SIGKILL, everything still below
/// pilot until the kernel says no child is left, or `GIVE_UP` after the grace.
fn sweep_leftovers(waiter: &Waiter, rx: &Receiver<Msg>, deadline: Option<Instant>, stop_timeout: Duration) {
    let me = std::process::id();
    let mut plan = sweep::Sweep::new(me == 1, stop_timeout, deadline);
    let give_up = deadline.and_then(|d| d.checked_add(machine::GIVE_UP));
    let mut announced = false;
    let mut killed = std::collections::HashSet::new();
    while init::has_children() {
        let now = Instant::now();
        if give_up.is_some_and(|g| now >= g) {
            let left = init::children_by_scan(me);
            error!("{} process(es) still not gone after SIGKILL: {left:?}; exiting anyway", left.len());
            return;
        }
        let mut children = init::children_of(me);
        if children.is_empty() {
            // The kernel knows of a child the `children` lists do not show (or a zombie
            // about to be reaped): look at every process.
            children = init::children_by_scan(me);
        }
        for action in plan.step(now, &children) {
            if !announced {
                info!("leftover process(es) still running: sending SIGTERM");
                announced = true;
            }
            match action {
                sweep::Action::Term(pid) => {
                    debug!("leftover process {pid}: SIGTERM");
                    init::kill(pid, libc::SIGTERM, false);
                    init::kill(pid, libc::SIGCONT, false);
                }
                sweep::Action::Kill(pid) => {
                    // Once per pid: a fork loop would otherwise fill the log with it.
                    if killed.insert(pid) {
                        warn!("leftover process {pid} is still there: sending SIGKILL");
                    }
                    init::kill(pid, libc::SIGKILL, false);
                }
                sweep::Action::TermEveryone => {
                    init::kill_everyone(libc::SIGTERM);
                    init::kill_everyone(libc::SIGCONT);
                }
                sweep::Action::KillEveryone => {
                    init::kill_everyone(libc::SIGKILL);
                }
            }
        }
        // Reap (this thread is the reaper); nothing here needs the reports.
        waiter.wait(Some(Duration::from_millis(20)));
        signals::reap_all(|_| true);
        while rx.try_recv().is_ok() {}
    }
}
