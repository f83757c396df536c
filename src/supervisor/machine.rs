//! The supervisor's state machine: ContainerPilot's job semantics as a plain, single-
//! threaded struct. It never blocks and never touches a process itself: it asks its
//! `Effects` to spawn, signal and set timers, and is driven by exits, signals and timer
//! firings. That keeps it testable without processes (see the tests at the bottom).
//!
//! Its states are types: [`Mode`] says whether pilot runs, drains its jobs (and what comes
//! after: exit, or a reload's new config), or is finished; every job has a [`JobId`] that
//! is never reused, so a timer or an acknowledgement for a job a reload dropped finds
//! nothing instead of a different job.

use crate::config::{Config, Job, Restarts, Trigger};
use crate::control::ReloadRefused;
use crate::events::{Code, Event, GLOBAL, Source};
use crate::init::ExitStatus;
use log::{debug, error, info, warn};
use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Duration;

/// The name of the job made from `pilot run -- CMD`.
pub const MAIN_JOB: &str = "main";

/// A job's identity for its whole life: the config generation it came from (0 for the first
/// config, one more for each reload) and its place in that config. A reload drops the old
/// generation's jobs; their late timers and acknowledgements name an id nobody has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JobId {
    pub generation: u32,
    pub slot: u32,
}

/// Timers are never cancelled: each names the job (and for a run's timers, the run) it
/// belongs to and is ignored if that job or run is gone by the time it fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TimerKey {
    Interval(JobId),
    Health(JobId),
    WhenTimeout(JobId),
    ExecTimeout(JobId, u64),
    CheckTimeout(JobId, u64),
    /// A stopping job's hooks (jobs on its `stopping`) had their time.
    HooksDone(JobId),
    StopKill(JobId, u64),
    /// A crashed job's restart backoff is over.
    Restart(JobId),
    /// This run has lasted [`RAN_WELL`]: the job's restart backoff starts from nothing again.
    RanWell(JobId, u64),
    /// A stopped job's deregistration had its time.
    Deregistered(JobId),
    /// `--grace` is over: SIGKILL whatever is left.
    Grace,
    /// A reload has been stopping the jobs of this config generation for `--grace`: SIGKILL
    /// what is left of them (never the payload) and start the new config.
    ReloadGrace(u32),
    /// [`GIVE_UP`] after the grace: stop waiting for processes that do not go away.
    GiveUp,
}

/// What the machine is doing as a whole.
#[derive(Debug)]
pub enum Mode {
    /// Jobs run, restart and react to events.
    Running,
    /// Every job but the hooks is being stopped in dependency order (dependents first);
    /// no job starts but pre/post-stop and shutdown hooks. Then comes `AfterDrain`.
    Draining(AfterDrain),
    /// Nothing is left to run: the driver may exit. `hurried`: the shutdown was hurried
    /// (second stop signal, grace over), so what the driver does after (the sweep of
    /// leftovers) is hurried too.
    Finished { hurried: bool },
}

/// What follows once every job is stopped.
#[derive(Debug)]
pub enum AfterDrain {
    /// `POST /v3/reload`: start this config's jobs. The payload keeps running meanwhile. A
    /// newer reload replaces the config waiting here (the newest wins).
    Reload(Box<Config>),
    /// Shutdown: pilot exits. `hurried` once the grace is over or a second stop signal came:
    /// everything left is SIGKILLed, hooks no longer start, deregistrations are not waited for.
    Exit { hurried: bool },
}
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunKind {
    Exec,
    Check,
}

pub struct RunRequest<'a> {
    /// The job's name, or for a health check its source name (`check.<job>`).
    pub job: &'a str,
    pub argv: &'a [String],
    pub raw: bool,
    pub kind: RunKind,
    /// The payload of `pilot run -- CMD`: inherits stdin and the terminal.
    pub main: bool,
    /// The job's `user`, `group`, `capabilities`: its health check runs as the job does.
    pub privileges: &'a crate::config::privileges::Privileges,
}

pub struct SpawnFailure {
    /// A forked child that failed to exec; its exit must be ignored.
    pub pid: Option<i32>,
    pub code: i32,
    pub message: String,
}

pub trait Effects {
    fn spawn(&mut self, req: &RunRequest) -> Result<i32, SpawnFailure>;
    /// Signal a process (`group`: its process group, falling back to the process itself).
    fn kill(&mut self, pid: i32, sig: i32, group: bool);
    /// A job's or check's process exited: signal what is left of its process group (its
    /// background children), and only the group: the process itself is reaped.
    fn signal_leftovers(&mut self, _pgid: i32, _sig: i32) {}
    fn set_timer(&mut self, after: Duration, key: TimerKey);
    /// Every published event, for logging, telemetry and tests.
    fn published(&mut self, _ev: &Event) {}
    /// A health result (or the heartbeat of an exec-less health) for a job's service.
    fn health_reported(&mut self, _job: &str, _passing: bool, _detail: &str) {}
    /// The job ran for the first time (services with `initial_status` register now).
    fn service_started(&mut self, _job: &str) {}
    /// The job is stopped: deregister its service. True if the machine should wait for
    /// `on_deregistered(id)` (or the `Deregistered` timer) before `stopped`.
    fn service_stopped(&mut self, _id: JobId, _job: &str) -> bool {
        false
    }
    fn maintenance(&mut self, _on: bool) {}
    /// A job is run again after it exited (for the restarts metric).
    fn restarted(&mut self, _job: &str) {}
    fn orphan_reaped(&mut self) {}
    /// A reload swapped in a new config: restart Consul registrations and watches for it.
    fn reconfigured(&mut self, _config: &Config) {}
}

/// How long a stopping job waits for its service's deregistration before `stopped`.
pub const DEREGISTER_WAIT: Duration = Duration::from_secs(6);

/// After the grace: how long the machine waits for SIGKILLed processes to be reaped before
/// it calls itself finished anyway (a process in uninterruptible sleep can take longer).
pub const GIVE_UP: Duration = Duration::from_millis(500);

/// Restart backoff: the first restart after a crash is immediate (as in ContainerPilot);
/// each further one that follows a short run waits twice as long as the one before,
/// from `BACKOFF_FIRST` up to `BACKOFF_MAX`.
pub const BACKOFF_FIRST: Duration = Duration::from_millis(100);
pub const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// A run that lasts this long resets the backoff: the job is no longer crash-looping.
pub const RAN_WELL: Duration = Duration::from_secs(10);
/// A program that cannot be exec'd fails again at once: wait at least this long.
const SPAWN_RETRY: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    Unknown,
    Healthy,
    Unhealthy,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Active,
    /// Stopping: `stopping` published; waiting for hooks, then for the process.
    Stopping {
        term_sent: bool,
    },
    /// The process is gone; its service is being deregistered before `stopped`.
    Deregistering,
    Done,
}

#[derive(Debug)]
pub struct JobState {
    pub id: JobId,
    pub cfg: Job,
    pub is_main: bool,
    pub started: bool,
    pub pid: Option<i32>,
    run_gen: u64,
    pending_run: bool,
    starts_left: Option<u32>,
    restarts_left: Option<u32>,
    /// A restart is scheduled (`TimerKey::Restart`).
    restart_due: bool,
    /// Restarts since the last run that lasted `RAN_WELL`: the backoff's exponent.
    quick_restarts: u32,
    pub check_pid: Option<i32>,
    check_gen: u64,
    pub health: Health,
    pub phase: Phase,
    pub runs: u32,
    /// Runs caused by the `restarts` policy (not interval ticks or triggers).
    pub restarts: u32,
    pub last_exit: Option<ExitStatus>,
}

impl JobState {
    fn new(id: JobId, cfg: Job, is_main: bool) -> Self {
        let starts_left = match &cfg.trigger {
            Trigger::Event { each: true, .. } | Trigger::Signal(_) => None,
            Trigger::Never => Some(0),
            _ => Some(1),
        };
        let restarts_left = match cfg.restarts {
            Restarts::Unlimited => None,
            Restarts::Count(n) => Some(n),
        };
        JobState {
            id,
            cfg,
            is_main,
            started: false,
            pid: None,
            run_gen: 0,
            pending_run: false,
            starts_left,
            restarts_left,
            restart_due: false,
            quick_restarts: 0,
            check_pid: None,
            check_gen: 0,
            health: Health::Unknown,
            phase: Phase::Active,
            runs: 0,
            restarts: 0,
            last_exit: None,
        }
    }

    /// Post-stop jobs: started by someone's `stopping`/`stopped` or by `shutdown`. They are
    /// not stopped by a shutdown; they wait for their trigger and run.
    fn is_hook(&self) -> bool {
        matches!(self.cfg.trigger, Trigger::Event { code: Code::Stopping | Code::Stopped | Code::Shutdown, .. })
    }

    fn trigger_source(&self) -> Option<&str> {
        match &self.cfg.trigger {
            Trigger::Event { source, .. } => Some(source),
            _ => None,
        }
    }

    fn is_interval(&self) -> bool {
        matches!(self.cfg.trigger, Trigger::Interval(_))
    }

    /// How long to wait before the next restart, counting this one.
    fn next_backoff(&mut self, spawn_failed: bool) -> Duration {
        let n = self.quick_restarts;
        self.quick_restarts = n.saturating_add(1);
        let wait = match n {
            0 => Duration::ZERO,
            n => BACKOFF_FIRST.saturating_mul(1u32 << (n - 1).min(16)).min(BACKOFF_MAX),
        };
        if spawn_failed { wait.max(SPAWN_RETRY) } else { wait }
    }
}

pub struct Machine<E: Effects> {
    /// The payload and the current config's jobs, in config order. A reload drops the old
    /// config's jobs (only the payload carries over).
    pub jobs: Vec<JobState>,
    pub fx: E,
    queue: VecDeque<Event>,
    mode: Mode,
    /// Hurried at some point (the end of the shutdown is hurried too: see `sweep`).
    /// The current config's generation (see [`JobId`]).
    generation: u32,
    /// The signal that started shutdown, passed on to the payload as its stop signal.
    stop_signal: i32,
    main: Option<JobId>,
    ignored_pids: HashSet<i32>,
    stop_timeout: Duration,
    grace: Duration,
    pub orphans_reaped: u64,
    /// Maintenance mode (global enter/exitMaintenance): no health checks while it lasts;
    /// carried over to the jobs of a reloaded config.
    pub maintenance: bool,
    /// Signals that stop pilot like SIGTERM, besides SIGTERM and SIGINT: the job's
    /// `KillSig` from HTCondor's job ad, so a vacate with that signal is an orderly stop.
    pub stop_signals: Vec<i32>,
}

/// The job made of `pilot run -- CMD`: started at `startup`, never restarted.
fn payload_job(argv: Vec<String>) -> Job {
    Job {
        name: MAIN_JOB.into(),
        exec: Some(argv),
        raw: true,
        trigger: Trigger::Event { code: Code::Startup, source: GLOBAL.into(), each: false },
        when_timeout: None,
        timeout: None,
        stop_timeout: None,
        restarts: Restarts::Count(0),
        health: None,
        port: 0,
        interfaces: Vec::new(),
        tags: Vec::new(),
        meta: Default::default(),
        initial_status: None,
        enable_tag_override: false,
        deregister_critical_after: None,
        privileges: Default::default(),
    }
}

/// A config job named like the payload's job would make event sources ambiguous: refuse it
/// at start (`pilot run -c FILE -- CMD`).
pub fn check_payload_name(config: &Config) -> Result<(), String> {
    match config.jobs.iter().position(|j| j.name == MAIN_JOB) {
        Some(i) => Err(format!(
            "jobs[{i}].name: the config has a job named '{MAIN_JOB}', but that name belongs to the payload \
             given after --: rename the job, or run the command as that job instead of after --"
        )),
        None => Ok(()),
    }
}

impl<E: Effects> Machine<E> {
    pub fn new(config: &Config, main_argv: Option<Vec<String>>, grace: Duration, fx: E) -> Self {
        let id = |slot: usize| JobId { generation: 0, slot: u32::try_from(slot).unwrap_or(u32::MAX) };
        let mut jobs: Vec<JobState> =
            config.jobs.iter().cloned().enumerate().map(|(i, j)| JobState::new(id(i), j, false)).collect();
        let main = main_argv.map(|argv| {
            let main_id = id(jobs.len());
            jobs.push(JobState::new(main_id, payload_job(argv), true));
            main_id
        });
        Machine {
            jobs,
            fx,
            queue: VecDeque::new(),
            mode: Mode::Running,
            generation: 0,
            stop_signal: libc::SIGTERM,
            main,
            ignored_pids: HashSet::new(),
            stop_timeout: config.stop_timeout,
            grace,
            orphans_reaped: 0,
            maintenance: false,
            stop_signals: Vec::new(),
        }
    }

    /// The global stop timeout of the current config.
    pub fn stop_timeout(&self) -> Duration {
        self.stop_timeout
    }

    pub fn mode(&self) -> &Mode {
        &self.mode
    }

    /// A second stop signal or the end of the grace hurried the shutdown: what is left to
    /// do after the machine (the sweep of leftovers) is hurried too.
    pub fn was_hurried(&self) -> bool {
        matches!(self.mode, Mode::Finished { hurried: true } | Mode::Draining(AfterDrain::Exit { hurried: true }))
    }

    pub fn finished(&self) -> bool {
        matches!(self.mode, Mode::Finished { .. })
    }

    /// Pilot is stopping for good (not a reload).
    pub fn shutting_down(&self) -> bool {
        matches!(self.mode, Mode::Draining(AfterDrain::Exit { .. }) | Mode::Finished { .. })
    }

    pub fn reloading(&self) -> bool {
        matches!(self.mode, Mode::Draining(AfterDrain::Reload(_)))
    }

    fn draining(&self) -> bool {
        matches!(self.mode, Mode::Draining(_))
    }

    fn hurried(&self) -> bool {
        matches!(self.mode, Mode::Draining(AfterDrain::Exit { hurried: true }))
    }

    /// The current index of a job, if it still exists.
    fn index(&self, id: JobId) -> Option<usize> {
        self.jobs.iter().position(|j| j.id == id)
    }

    pub fn job(&self, id: JobId) -> Option<&JobState> {
        self.jobs.iter().find(|j| j.id == id)
    }

    /// The exit status pilot should end with: the payload's, else 0.
    pub fn exit_code(&self) -> i32 {
        self.main.and_then(|m| self.job(m)).and_then(|j| j.last_exit).map(ExitStatus::as_shell_code).unwrap_or(0)
    }

    pub fn start(&mut self) {
        self.set_when_timeouts();
        self.publish(Event::global(Code::Startup));
        self.settle();
    }

    fn set_when_timeouts(&mut self) {
        for j in 0..self.jobs.len() {
            if let (Some(t), false) = (self.jobs[j].cfg.when_timeout, self.jobs[j].started) {
                let key = TimerKey::WhenTimeout(self.jobs[j].id);
                self.fx.set_timer(t, key);
            }
        }
    }

    fn publish(&mut self, ev: Event) {
        debug!("event {ev}");
        if ev.source == GLOBAL && matches!(ev.code, Code::EnterMaintenance | Code::ExitMaintenance) {
            self.maintenance = ev.code == Code::EnterMaintenance;
            self.fx.maintenance(self.maintenance);
        }
        self.fx.published(&ev);
        self.queue.push_back(ev);
    }

    /// Deliver queued events to every job, in config order, until quiet; move a drain
    /// along; and notice when everything is over.
    fn settle(&mut self) {
        loop {
            while let Some(ev) = self.queue.pop_front() {
                for j in 0..self.jobs.len() {
                    self.deliver(j, &ev);
                }
            }
            if self.draining() {
                self.stop_ready_jobs();
                if !self.queue.is_empty() {
                    continue; // let pre-stop jobs see `stopping` before deciding to terminate
                }
                for j in 0..self.jobs.len() {
                    if self.jobs[j].phase == (Phase::Stopping { term_sent: false }) && !self.pre_stop_pending(j) {
                        self.terminate(j);
                    }
                }
            }
            if self.queue.is_empty() {
                self.check_finished();
                if self.queue.is_empty() {
                    return;
                }
            }
        }
    }

    fn deliver(&mut self, j: usize, ev: &Event) {
        if matches!(self.jobs[j].phase, Phase::Done | Phase::Deregistering) {
            return;
        }
        let job = &self.jobs[j];
        let hit = match &job.cfg.trigger {
            Trigger::Event { code, source, .. } => ev.code == *code && ev.source == *source,
            Trigger::Signal(name) => ev.code == Code::Signal && ev.source == *name,
            Trigger::Interval(_) => ev.code == Code::Startup && ev.source == GLOBAL,
            Trigger::Never => false,
        };
        // While draining only hooks (pre/post-stop, shutdown jobs) may still start.
        if !hit || job.starts_left == Some(0) || (self.draining() && !job.is_hook()) {
            return;
        }
        if let Some(n) = &mut self.jobs[j].starts_left {
            *n -= 1;
        }
        self.run(j);
    }

    fn run(&mut self, j: usize) {
        let job = &mut self.jobs[j];
        if job.pid.is_some() {
            // ContainerPilot runs one instance at a time; a trigger during a run queues one more.
            job.pending_run = true;
            return;
        }
        job.restart_due = false;
        let first = !job.started;
        job.started = true;
        let id = job.id;
        if first {
            let name = job.cfg.name.clone();
            self.fx.service_started(&name);
            let job = &self.jobs[j];
            if let Trigger::Interval(i) = job.cfg.trigger {
                self.fx.set_timer(i, TimerKey::Interval(id));
            }
            if let Some(h) = &job.cfg.health {
                self.fx.set_timer(h.interval, TimerKey::Health(id));
            }
        }
        let job = &self.jobs[j];
        let Some(argv) = job.cfg.exec.clone() else { return };
        let req = RunRequest {
            job: &job.cfg.name,
            argv: &argv,
            raw: job.cfg.raw,
            kind: RunKind::Exec,
            main: job.is_main,
            privileges: &job.cfg.privileges,
        };
        match self.fx.spawn(&req) {
            Ok(pid) => {
                let job = &mut self.jobs[j];
                job.pid = Some(pid);
                job.run_gen += 1;
                job.runs = job.runs.saturating_add(1);
                debug!("job {} started: pid {pid}", job.cfg.name);
                let (timeout, generation) = (job.cfg.timeout, job.run_gen);
                let may_restart = job.restarts_left != Some(0) && !job.is_interval();
                if let Some(t) = timeout {
                    self.fx.set_timer(t, TimerKey::ExecTimeout(id, generation));
                }
                if may_restart {
                    self.fx.set_timer(RAN_WELL, TimerKey::RanWell(id, generation));
                }
            }
            Err(f) => {
                let job = &mut self.jobs[j];
                job.runs = job.runs.saturating_add(1);
                if let Some(pid) = f.pid {
                    self.ignored_pids.insert(pid);
                }
                warn!("job {}: {}", job.cfg.name, f.message);
                self.exited(j, ExitStatus::Code(f.code), true);
            }
        }
    }

    /// An event from outside the machine: a watch, or the control plane.
    pub fn on_event(&mut self, ev: Event) {
        self.publish(ev);
        self.settle();
    }

    /// The Consul worker finished (or gave up) deregistering a job's service.
    pub fn on_deregistered(&mut self, id: JobId) {
        if let Some(j) = self.index(id) {
            self.deregistered(j);
        }
        self.settle();
    }

    fn deregistered(&mut self, j: usize) {
        if self.jobs[j].phase == Phase::Deregistering {
            self.jobs[j].phase = Phase::Done;
            let name = self.jobs[j].cfg.name.clone();
            self.publish(Event::new(Code::Stopped, Source::job(&name)));
        }
    }

    /// A process started by `spawn` exited without running its program (not found, cannot
    /// run, a failed set-up step in the child): as a spawn failure, with its message and
    /// code, the same as when the failure is known at once.
    pub fn on_spawn_failed(&mut self, pid: i32, code: i32, message: &str) {
        self.ignored_pids.remove(&pid);
        if let Some(j) = self.jobs.iter().position(|job| job.pid == Some(pid)) {
            self.jobs[j].pid = None;
            warn!("job {}: {message}", self.jobs[j].cfg.name);
            self.exited(j, ExitStatus::Code(code), true);
        } else if let Some(j) = self.jobs.iter().position(|job| job.check_pid == Some(pid)) {
            self.jobs[j].check_pid = None;
            warn!("health check for {}: {message}", self.jobs[j].cfg.name);
            self.check_exited(j, ExitStatus::Code(code));
        } else {
            // A process of a job replaced by a reload, or already given up on.
            debug!("pid {pid} (of a job no longer tracked) did not start: {message}");
        }
        self.settle();
    }

    pub fn on_exit(&mut self, pid: i32, status: ExitStatus) {
        if self.ignored_pids.remove(&pid) {
            return;
        }
        if let Some(j) = self.jobs.iter().position(|job| job.pid == Some(pid)) {
            self.jobs[j].pid = None;
            self.end_leftovers(pid);
            self.exited(j, status, false);
        } else if let Some(j) = self.jobs.iter().position(|job| job.check_pid == Some(pid)) {
            self.jobs[j].check_pid = None;
            self.end_leftovers(pid);
            self.check_exited(j, status);
        } else {
            self.orphans_reaped += 1;
            self.fx.orphan_reaped();
            debug!("reaped orphan pid {pid} ({status})");
        }
        self.settle();
    }

    /// A job's process is gone; what it left running in its process group (`cmd &`) goes
    /// too, as in ContainerPilot, which SIGTERMs the group when the exec returns. SIGCONT
    /// follows so that a stopped leftover can act on it.
    fn end_leftovers(&mut self, pgid: i32) {
        self.fx.signal_leftovers(pgid, libc::SIGTERM);
        self.fx.signal_leftovers(pgid, libc::SIGCONT);
    }

    fn exited(&mut self, j: usize, status: ExitStatus, spawn_failed: bool) {
        let job = &mut self.jobs[j];
        job.last_exit = Some(status);
        let name = job.cfg.name.clone();
        if job.is_main {
            info!("payload exited: {status}");
        } else if status.success() {
            debug!("job {name} exited: {status}");
        } else {
            info!("job {name} exited: {status}");
        }
        if status.success() {
            self.publish(Event::new(Code::ExitSuccess, Source::job(&name)));
        } else {
            self.publish(Event::new(Code::ExitFailed, Source::job(&name)));
            self.publish(Event::new(Code::Error, format!("{name}: {status}")));
        }
        let job = &mut self.jobs[j];
        match job.phase {
            Phase::Stopping { .. } => return self.finish_stop(j),
            Phase::Done | Phase::Deregistering => return,
            Phase::Active => {}
        }
        if job.is_main {
            return self.begin_shutdown(None);
        }
        if matches!(self.mode, Mode::Draining(_)) {
            if job.is_hook() {
                self.halt(j);
            }
            return;
        }
        if std::mem::take(&mut job.pending_run) {
            return self.run(j);
        }
        if job.is_interval() {
            if job.restarts_left == Some(0) {
                self.halt(j);
            }
            return;
        }
        if job.restarts_left != Some(0) {
            if let Some(n) = &mut job.restarts_left {
                *n -= 1;
            }
            job.restarts = job.restarts.saturating_add(1);
            let wait = job.next_backoff(spawn_failed);
            let id = job.id;
            self.fx.restarted(&name);
            if wait.is_zero() {
                self.run(j);
            } else {
                debug!("job {name}: restarting in {wait:?}");
                self.jobs[j].restart_due = true;
                self.fx.set_timer(wait, TimerKey::Restart(id));
            }
            return;
        }
        if job.starts_left != Some(0) {
            return; // an `each` job waits for its next trigger
        }
        self.halt(j);
    }

    fn check_exited(&mut self, j: usize, status: ExitStatus) {
        let job = &mut self.jobs[j];
        let name = job.cfg.name.clone();
        let check = Source::check(&name);
        if status.success() {
            self.publish(Event::new(Code::ExitSuccess, check));
        } else {
            self.publish(Event::new(Code::ExitFailed, check));
        }
        let job = &mut self.jobs[j];
        if self.maintenance || job.phase != Phase::Active {
            return;
        }
        let (health, code) =
            if status.success() { (Health::Healthy, Code::Healthy) } else { (Health::Unhealthy, Code::Unhealthy) };
        if job.health != health {
            info!("job {name} is now {}", if status.success() { "healthy" } else { "unhealthy" });
        }
        job.health = health;
        if !status.success() {
            debug!("health check for {name} failed: {status}");
        }
        self.fx.health_reported(&name, status.success(), &status.to_string());
        self.publish(Event::new(code, Source::job(&name)));
    }

    /// A job that finished for good on its own (not during a shutdown). Its service is
    /// deregistered before `stopped`, as in a shutdown: pilot may be about to exit, and a
    /// deregistration still in flight would leave the service behind (found by the churn
    /// benchmark: 110 of 200 short-lived pilots left their registration).
    fn halt(&mut self, j: usize) {
        let name = self.jobs[j].cfg.name.clone();
        self.publish(Event::new(Code::Stopping, Source::job(&name)));
        self.finish_stop(j);
    }

    pub fn on_timer(&mut self, key: TimerKey) {
        match key {
            TimerKey::Grace => {
                if matches!(self.mode, Mode::Draining(AfterDrain::Exit { hurried: false })) {
                    warn!("shutdown grace of {:?} is over: killing what is left", self.grace);
                    self.hurry();
                }
            }
            TimerKey::ReloadGrace(generation) => {
                if self.reloading() && generation == self.generation {
                    warn!("reload: the old jobs did not stop within {:?}: killing what is left of them", self.grace);
                    self.force_out_old_jobs();
                }
            }
            TimerKey::GiveUp => {
                if self.hurried() {
                    let left: Vec<String> = self
                        .jobs
                        .iter()
                        .flat_map(|j| {
                            [j.pid, j.check_pid].into_iter().flatten().map(move |p| format!("{} ({p})", j.cfg.name))
                        })
                        .collect();
                    error!("processes still not gone {GIVE_UP:?} after SIGKILL: {}; exiting anyway", left.join(", "));
                    // The payload was SIGKILLed even if its exit never came: say so in the status.
                    if let Some(main) = self.jobs.iter_mut().find(|j| j.is_main && j.pid.is_some()) {
                        main.last_exit = Some(ExitStatus::Signaled(libc::SIGKILL));
                    }
                    self.mode = Mode::Finished { hurried: true };
                }
            }
            TimerKey::Interval(id)
            | TimerKey::Health(id)
            | TimerKey::WhenTimeout(id)
            | TimerKey::ExecTimeout(id, _)
            | TimerKey::CheckTimeout(id, _)
            | TimerKey::HooksDone(id)
            | TimerKey::StopKill(id, _)
            | TimerKey::Restart(id)
            | TimerKey::RanWell(id, _)
            | TimerKey::Deregistered(id) => {
                // A job a reload dropped: its timers find nothing.
                if let Some(j) = self.index(id) {
                    self.job_timer(j, key);
                }
            }
        }
        self.settle();
    }

    fn job_timer(&mut self, j: usize, key: TimerKey) {
        match key {
            TimerKey::Interval(_) => self.interval_tick(j),
            TimerKey::Health(_) => self.health_tick(j),
            TimerKey::WhenTimeout(_) => {
                let job = &self.jobs[j];
                if !job.started && job.phase == Phase::Active && !self.draining() {
                    let name = job.cfg.name.clone();
                    info!("job {name}: timed out waiting for its start event");
                    self.publish(Event::new(Code::TimerExpired, Source::job(&name)));
                    self.halt(j);
                }
            }
            TimerKey::ExecTimeout(_, generation) => {
                let job = &self.jobs[j];
                if let (Some(pid), true) = (job.pid, job.run_gen == generation) {
                    warn!("job {} timeout after {:?}: killing it", job.cfg.name, job.cfg.timeout.unwrap_or_default());
                    self.fx.kill(pid, libc::SIGKILL, true);
                }
            }
            TimerKey::CheckTimeout(_, generation) => {
                let job = &self.jobs[j];
                if let (Some(pid), true) = (job.check_pid, job.check_gen == generation) {
                    warn!("health check for {} timed out: killing it", job.cfg.name);
                    self.fx.kill(pid, libc::SIGKILL, true);
                }
            }
            TimerKey::HooksDone(_) => {
                if self.jobs[j].phase == (Phase::Stopping { term_sent: false }) {
                    warn!(
                        "job {}: its pre-stop jobs did not finish in time; stopping it anyway",
                        self.jobs[j].cfg.name
                    );
                    self.terminate(j);
                }
            }
            TimerKey::StopKill(_, generation) => {
                let job = &self.jobs[j];
                if let (Some(pid), true) = (job.pid, job.run_gen == generation) {
                    warn!("job {} did not stop in time: sending SIGKILL", job.cfg.name);
                    self.fx.kill(pid, libc::SIGKILL, true);
                }
            }
            TimerKey::Restart(_) => {
                let job = &self.jobs[j];
                if job.restart_due && job.phase == Phase::Active && !self.draining() {
                    self.run(j);
                }
            }
            TimerKey::RanWell(_, generation) => {
                let job = &mut self.jobs[j];
                if job.pid.is_some() && job.run_gen == generation {
                    job.quick_restarts = 0;
                }
            }
            TimerKey::Deregistered(_) => {
                if self.jobs[j].phase == Phase::Deregistering {
                    warn!("job {}: deregistration from Consul did not finish in time", self.jobs[j].cfg.name);
                    self.deregistered(j);
                }
            }
            TimerKey::Grace | TimerKey::GiveUp | TimerKey::ReloadGrace(_) => {}
        }
    }

    fn interval_tick(&mut self, j: usize) {
        let draining = self.draining();
        let job = &mut self.jobs[j];
        let Trigger::Interval(every) = job.cfg.trigger else { return };
        if job.phase != Phase::Active || draining {
            return;
        }
        self.fx.set_timer(every, TimerKey::Interval(job.id));
        let job = &mut self.jobs[j];
        if job.pid.is_some() {
            debug!("job {}: still running at its next interval; skipping one run", job.cfg.name);
            return;
        }
        match &mut job.restarts_left {
            Some(0) => self.halt(j),
            Some(n) => {
                *n -= 1;
                self.run(j)
            }
            None => self.run(j),
        }
    }

    fn health_tick(&mut self, j: usize) {
        let job = &self.jobs[j];
        let Some(health) = job.cfg.health.clone() else { return };
        if matches!(job.phase, Phase::Done | Phase::Deregistering) {
            return;
        }
        self.fx.set_timer(health.interval, TimerKey::Health(job.id));
        if self.maintenance || job.check_pid.is_some() || job.phase != Phase::Active {
            return;
        }
        let Some(argv) = health.exec.as_ref() else {
            // No check to run: the heartbeat itself says the job is alive (as ContainerPilot).
            let name = job.cfg.name.clone();
            self.fx.health_reported(&name, true, "heartbeat");
            return;
        };
        let check = Source::check(&job.cfg.name);
        let privileges = &self.jobs[j].cfg.privileges;
        let req = RunRequest { job: &check, argv, raw: health.raw, kind: RunKind::Check, main: false, privileges };
        match self.fx.spawn(&req) {
            Ok(pid) => {
                let job = &mut self.jobs[j];
                job.check_pid = Some(pid);
                job.check_gen += 1;
                let key = TimerKey::CheckTimeout(job.id, job.check_gen);
                self.fx.set_timer(health.timeout, key);
            }
            Err(f) => {
                if let Some(pid) = f.pid {
                    self.ignored_pids.insert(pid);
                }
                warn!("health check for {}: {}", self.jobs[j].cfg.name, f.message);
                self.check_exited(j, ExitStatus::Code(f.code));
            }
        }
    }

    pub fn on_signal(&mut self, sig: i32) {
        let main_pid = self.main.and_then(|m| self.job(m)).and_then(|j| j.pid);
        match sig {
            _ if sig == libc::SIGTERM || sig == libc::SIGINT || self.stop_signals.contains(&sig) => {
                if self.shutting_down() {
                    // Once: a storm of signals must not become a storm of log lines.
                    if !self.hurried() {
                        info!("{} during shutdown: hurrying", crate::init::signals::name(sig));
                    }
                    self.hurry();
                } else {
                    info!("{}: shutting down", crate::init::signals::name(sig));
                    self.begin_shutdown(Some(sig));
                }
            }
            libc::SIGTTIN | libc::SIGTTOU => {}
            _ => {
                if let Some(pid) = main_pid {
                    self.fx.kill(pid, sig, false);
                }
                if sig == libc::SIGQUIT && self.shutting_down() {
                    self.hurry();
                }
                if sig == libc::SIGHUP || sig == libc::SIGUSR2 {
                    self.publish(Event::new(Code::Signal, Source::signal(&crate::init::signals::name(sig))));
                }
            }
        }
        self.settle();
    }

    fn begin_shutdown(&mut self, signal: Option<i32>) {
        match &self.mode {
            Mode::Running => {}
            Mode::Draining(AfterDrain::Reload(_)) => info!("shutdown during a reload: the new config is dropped"),
            Mode::Draining(AfterDrain::Exit { .. }) | Mode::Finished { .. } => return,
        }
        self.mode = Mode::Draining(AfterDrain::Exit { hurried: false });
        for job in &mut self.jobs {
            job.restart_due = false;
        }
        if let Some(s) = signal {
            self.stop_signal = s;
        }
        self.fx.set_timer(self.grace, TimerKey::Grace);
        self.publish(Event::global(Code::Shutdown));
    }

    /// `POST /v3/reload` with a valid config: stop every job but the payload in order (as a
    /// shutdown would, without the `shutdown` event), then start the new config's jobs. A
    /// reload while one is still stopping jobs replaces its config: the newest wins.
    /// Replace the config: drain the current jobs, then start the new ones. The answer goes
    /// back to whoever asked (`POST /v3/reload`), so a refusal is not reported as done.
    pub fn reload(&mut self, config: Config) -> Result<(), ReloadRefused> {
        if self.main.is_some()
            && let Err(e) = check_payload_name(&config)
        {
            error!("reload refused, the running config stays: {e}");
            return Err(ReloadRefused::Invalid(e));
        }
        match &mut self.mode {
            Mode::Running => {
                info!("reload: stopping the current jobs");
                self.mode = Mode::Draining(AfterDrain::Reload(Box::new(config)));
                for job in &mut self.jobs {
                    job.restart_due = false;
                }
                // A reload's drain is bounded like a shutdown's: hooks have no timeout of
                // their own, and the new config must start.
                self.fx.set_timer(self.grace, TimerKey::ReloadGrace(self.generation));
            }
            Mode::Draining(AfterDrain::Reload(pending)) => {
                info!("reload during a reload: the newer config replaces the one waiting for the old jobs to stop");
                **pending = config;
            }
            Mode::Draining(AfterDrain::Exit { .. }) | Mode::Finished { .. } => {
                warn!("reload ignored: pilot is shutting down");
                return Err(ReloadRefused::ShuttingDown);
            }
        }
        self.settle();
        Ok(())
    }

    fn swap_in(&mut self, config: Config) {
        let dropped = self.jobs.iter().filter(|j| !j.is_main).count();
        self.jobs.retain(|j| j.is_main);
        self.generation = self.generation.wrapping_add(1);
        let generation = self.generation;
        let first = self.jobs.len();
        self.jobs.extend(
            config.jobs.iter().cloned().enumerate().map(|(i, j)| {
                JobState::new(JobId { generation, slot: u32::try_from(i).unwrap_or(u32::MAX) }, j, false)
            }),
        );
        self.stop_timeout = config.stop_timeout;
        self.mode = Mode::Running;
        self.fx.reconfigured(&config);
        if self.maintenance {
            // The new services start in maintenance, as the old ones were.
            self.fx.maintenance(true);
        }
        self.set_when_timeouts();
        info!("reload: {dropped} old job(s) gone, starting {} job(s) of the new config", self.jobs.len() - first);
        self.publish(Event::global(Code::Startup));
    }

    /// Second SIGTERM, SIGQUIT in shutdown, or grace over: SIGKILL everything now, start no
    /// more hooks, wait for no deregistration, and give up on processes that stay after
    /// [`GIVE_UP`].
    fn hurry(&mut self) {
        if self.hurried() || self.finished() {
            return;
        }
        self.mode = Mode::Draining(AfterDrain::Exit { hurried: true });
        for job in &mut self.jobs {
            for pid in [job.pid, job.check_pid].into_iter().flatten() {
                self.fx.kill(pid, libc::SIGKILL, true);
            }
            job.pending_run = false;
            job.restart_due = false;
            if job.is_hook() && job.pid.is_none() {
                job.phase = Phase::Done;
            }
            if job.phase == Phase::Deregistering {
                job.phase = Phase::Done;
            }
            job.starts_left = Some(0);
        }
        for j in 0..self.jobs.len() {
            if self.jobs[j].phase == (Phase::Stopping { term_sent: false }) {
                self.terminate(j);
            }
        }
        self.fx.set_timer(GIVE_UP, TimerKey::GiveUp);
    }

    /// A reload's drain took the whole grace: SIGKILL every process of the old jobs (their
    /// hooks included, never the payload), start no more hooks and wait for no more
    /// deregistrations, so the new config starts once those processes are reaped.
    fn force_out_old_jobs(&mut self) {
        for job in self.jobs.iter_mut().filter(|j| !j.is_main) {
            for pid in [job.pid, job.check_pid].into_iter().flatten() {
                self.fx.kill(pid, libc::SIGKILL, true);
            }
            job.pending_run = false;
            job.starts_left = Some(0);
            if job.pid.is_none() && (job.is_hook() || job.phase == Phase::Deregistering) {
                job.phase = Phase::Done;
            }
        }
        for j in 0..self.jobs.len() {
            let job = &self.jobs[j];
            if !job.is_main && job.phase == (Phase::Stopping { term_sent: false }) {
                self.terminate(j);
            }
        }
    }

    /// Jobs that others started after (`when.source` = this job) are stopped first: a job
    /// begins stopping once every job that depends on it is done. Jobs that wait for each
    /// other (a dependency cycle) would wait forever: when nothing is stopping and nothing
    /// more can begin, they all begin together. Once hurried, order no longer matters.
    fn stop_ready_jobs(&mut self) {
        let Mode::Draining(after) = &self.mode else { return };
        let (reloading, hurried) = match after {
            AfterDrain::Reload(_) => (true, false),
            AfterDrain::Exit { hurried } => (false, *hurried),
        };
        let candidates: Vec<usize> = (0..self.jobs.len())
            .filter(|&j| {
                let job = &self.jobs[j];
                job.phase == Phase::Active && !job.is_hook() && !(job.is_main && reloading)
            })
            .collect();
        // How many jobs still wait (are not done) on each source name: counted once, so a
        // drain stays quadratic at worst even for a config of thousands of chained jobs.
        let mut waiting: HashMap<&str, usize> = HashMap::new();
        for other in self.jobs.iter().filter(|o| o.phase != Phase::Done && !o.is_hook()) {
            if let Some(s) = other.trigger_source() {
                *waiting.entry(s).or_default() += 1;
            }
        }
        let blocked = |j: usize| {
            let job = &self.jobs[j];
            let check = Source::check(&job.cfg.name);
            let on = |s: &str| waiting.get(s).copied().unwrap_or(0);
            // A job that waits on itself does not block itself.
            let own = usize::from(job.trigger_source().is_some_and(|s| s == job.cfg.name || check == s));
            on(&job.cfg.name) + on(&check) > own
        };
        let mut ready: Vec<usize> = candidates.iter().copied().filter(|&j| hurried || !blocked(j)).collect();
        let in_flight = self.jobs.iter().any(|o| matches!(o.phase, Phase::Stopping { .. } | Phase::Deregistering));
        if ready.is_empty() && !candidates.is_empty() && !in_flight {
            let names: Vec<&str> = candidates.iter().map(|&j| self.jobs[j].cfg.name.as_str()).collect();
            warn!("jobs {} wait for each other to stop (a dependency cycle): stopping them together", names.join(", "));
            ready = candidates;
        }
        for j in ready {
            self.begin_stop(j);
        }
    }

    fn begin_stop(&mut self, j: usize) {
        self.jobs[j].phase = Phase::Stopping { term_sent: false };
        let name = self.jobs[j].cfg.name.clone();
        self.publish(Event::new(Code::Stopping, Source::job(&name)));
        let has_pre_stop = self.jobs.iter().any(|o| {
            matches!(&o.cfg.trigger, Trigger::Event { code: Code::Stopping, source, .. } if *source == name)
                && o.phase != Phase::Done
        });
        if has_pre_stop && !self.hurried() {
            // Let pre-stop jobs run while this job is still alive, at most its stopTimeout.
            let limit = self.jobs[j].cfg.stop_timeout.unwrap_or(self.stop_timeout);
            self.fx.set_timer(limit, TimerKey::HooksDone(self.jobs[j].id));
        } else {
            self.terminate(j);
        }
    }

    fn pre_stop_pending(&self, j: usize) -> bool {
        let name = &self.jobs[j].cfg.name;
        self.jobs.iter().any(|o| {
            matches!(&o.cfg.trigger, Trigger::Event { code: Code::Stopping, source, .. } if source == name)
                && (o.pid.is_some() || o.pending_run)
        })
    }

    fn terminate(&mut self, j: usize) {
        self.jobs[j].phase = Phase::Stopping { term_sent: true };
        let hurried = self.hurried();
        let job = &self.jobs[j];
        if let Some(pid) = job.check_pid {
            let sig = if hurried { libc::SIGKILL } else { libc::SIGTERM };
            self.fx.kill(pid, sig, true);
            if !hurried {
                self.fx.kill(pid, libc::SIGCONT, true);
            }
        }
        match job.pid {
            None => self.finish_stop(j),
            Some(pid) => {
                let sig = match (hurried, job.is_main) {
                    (true, _) => libc::SIGKILL,
                    (false, true) => self.stop_signal,
                    (false, false) => libc::SIGTERM,
                };
                debug!("stopping job {} (pid {pid}) with {}", job.cfg.name, crate::init::signals::name(sig));
                let limit = job.cfg.stop_timeout.unwrap_or(self.stop_timeout);
                let key = TimerKey::StopKill(job.id, job.run_gen);
                self.fx.kill(pid, sig, true);
                if sig != libc::SIGKILL {
                    // A stopped (SIGSTOP/SIGTSTP) process only acts on the stop signal once
                    // continued, as systemd and Docker know: without this it is always
                    // SIGKILLed after the stop timeout.
                    self.fx.kill(pid, libc::SIGCONT, true);
                }
                self.fx.set_timer(limit, key);
            }
        }
    }

    /// The process is gone: deregister its service (post-stop jobs run after that), then
    /// `stopped`. Once hurried the deregistration is sent but not waited for.
    fn finish_stop(&mut self, j: usize) {
        let (id, name) = (self.jobs[j].id, self.jobs[j].cfg.name.clone());
        if self.fx.service_stopped(id, &name) && !self.hurried() {
            self.jobs[j].phase = Phase::Deregistering;
            self.fx.set_timer(DEREGISTER_WAIT, TimerKey::Deregistered(id));
            return;
        }
        self.jobs[j].phase = Phase::Done;
        self.publish(Event::new(Code::Stopped, Source::job(&name)));
    }

    /// Natural termination (every job finished on its own) becomes an orderly shutdown, so
    /// jobs on `shutdown` still run; pilot is finished when nothing is left to run. A
    /// drained reload starts the new config.
    fn check_finished(&mut self) {
        let reloading = match self.mode {
            Mode::Finished { .. } => return,
            Mode::Draining(AfterDrain::Reload(_)) => true,
            Mode::Draining(AfterDrain::Exit { .. }) | Mode::Running => false,
        };
        let idle_hook = |job: &JobState| job.is_hook() && job.pid.is_none() && !job.pending_run;
        // A reload waits for every job but the payload, which keeps running.
        let counts = |job: &&JobState| !(reloading && job.is_main);
        let settled = self.jobs.iter().filter(counts).all(|job| job.phase == Phase::Done || idle_hook(job));
        let any_process = self.jobs.iter().filter(counts).any(|job| job.pid.is_some() || job.check_pid.is_some());
        if !settled || any_process {
            return;
        }
        match std::mem::replace(&mut self.mode, Mode::Finished { hurried: false }) {
            Mode::Draining(AfterDrain::Reload(config)) => self.swap_in(*config),
            Mode::Running => {
                self.mode = Mode::Running;
                info!("every job has finished");
                self.begin_shutdown(None);
            }
            Mode::Draining(AfterDrain::Exit { hurried }) | Mode::Finished { hurried } => {
                self.mode = Mode::Finished { hurried }
            }
        }
    }
}

#[cfg(test)]
mod tests;
