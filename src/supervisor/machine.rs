//! The supervisor's state machine: ContainerPilot's job semantics as a plain, single-
//! threaded struct. It never blocks and never touches a process itself: it asks its
//! `Effects` to spawn, signal and set timers, and is driven by exits, signals and timer
//! firings. That keeps it testable without processes (see the tests at the bottom).

use crate::config::{Config, Job, Restarts, Trigger};
use crate::events::{Code, Event, GLOBAL};
use crate::init::ExitStatus;
use log::{debug, info, warn};
use std::collections::{HashSet, VecDeque};
use std::time::Duration;

/// The name of the job made from `pilot run -- CMD`.
pub const MAIN_JOB: &str = "main";

/// Timers are never cancelled: each carries the generation of the run it belongs to and
/// is ignored if that run is over by the time it fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TimerKey {
    Interval(usize),
    Health(usize),
    WhenTimeout(usize),
    ExecTimeout(usize, u64),
    CheckTimeout(usize, u64),
    /// A stopping job's hooks (jobs on its `stopping`) had their time.
    HooksDone(usize),
    StopKill(usize, u64),
    Restart(usize),
    /// A stopped job's deregistration had its time.
    Deregistered(usize),
    Grace,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunKind {
    Exec,
    Check,
}

pub struct RunRequest<'a> {
    pub job: &'a str,
    pub argv: &'a [String],
    pub raw: bool,
    pub kind: RunKind,
    /// The payload of `pilot run -- CMD`: inherits stdin and the terminal.
    pub main: bool,
}

pub struct SpawnFailure {
    /// A forked child that failed to exec; its exit must be ignored.
    pub pid: Option<i32>,
    pub code: i32,
    pub message: String,
}

pub trait Effects {
    fn spawn(&mut self, req: &RunRequest) -> Result<i32, SpawnFailure>;
    fn kill(&mut self, pid: i32, sig: i32, group: bool);
    fn set_timer(&mut self, after: Duration, key: TimerKey);
    /// Every published event, for logging, telemetry and tests.
    fn published(&mut self, _ev: &Event) {}
    /// A health result (or the heartbeat of an exec-less health) for a job's service.
    fn health_reported(&mut self, _job: &str, _passing: bool, _detail: &str) {}
    /// The job ran for the first time (services with `initial_status` register now).
    fn service_started(&mut self, _job: &str) {}
    /// The job is stopped: deregister its service. True if there is one; the machine then
    /// waits for `on_deregistered` (or the `Deregistered` timer) before `stopped`.
    fn service_stopped(&mut self, _job: &str) -> bool {
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    Unknown,
    Healthy,
    Unhealthy,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Active,
    /// Shutting down: `stopping` published; waiting for hooks, then for the process.
    Stopping {
        term_sent: bool,
    },
    /// The process is gone; its service is being deregistered before `stopped`.
    Deregistering,
    Done,
}

#[derive(Debug)]
pub struct JobState {
    pub cfg: Job,
    pub is_main: bool,
    pub started: bool,
    pub pid: Option<i32>,
    run_gen: u64,
    pending_run: bool,
    starts_left: Option<u32>,
    restarts_left: Option<u32>,
    pub check_pid: Option<i32>,
    check_gen: u64,
    pub health: Health,
    pub phase: Phase,
    pub runs: u32,
    pub last_exit: Option<ExitStatus>,
    /// Replaced by a reload: kept (as Done) only so old timers find nothing to do.
    pub retired: bool,
}

impl JobState {
    fn new(cfg: Job, is_main: bool) -> Self {
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
            cfg,
            is_main,
            started: false,
            pid: None,
            run_gen: 0,
            pending_run: false,
            starts_left,
            restarts_left,
            check_pid: None,
            check_gen: 0,
            health: Health::Unknown,
            phase: Phase::Active,
            runs: 0,
            last_exit: None,
            retired: false,
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
}

pub struct Machine<E: Effects> {
    pub jobs: Vec<JobState>,
    pub fx: E,
    queue: VecDeque<Event>,
    pub shutting_down: bool,
    hurried: bool,
    /// The signal that started shutdown, passed on to the payload as its stop signal.
    stop_signal: i32,
    main: Option<usize>,
    ignored_pids: HashSet<i32>,
    stop_timeout: Duration,
    grace: Duration,
    pub orphans_reaped: u64,
    pub finished: bool,
    /// A valid new config waiting for the old jobs to stop (`POST /v3/reload`).
    reloading: Option<Box<Config>>,
    /// Maintenance mode (global enter/exitMaintenance): no health checks while it lasts;
    /// carried over to the jobs of a reloaded config.
    pub maintenance: bool,
    /// Signals that stop pilot like SIGTERM, besides SIGTERM and SIGINT: the job's
    /// `KillSig` from HTCondor's job ad, so a vacate with that signal is an orderly stop.
    pub stop_signals: Vec<i32>,
}

impl<E: Effects> Machine<E> {
    pub fn new(config: &Config, main_argv: Option<Vec<String>>, grace: Duration, fx: E) -> Self {
        let mut jobs: Vec<JobState> = config.jobs.iter().cloned().map(|j| JobState::new(j, false)).collect();
        let main = main_argv.map(|argv| {
            let job = Job {
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
            };
            jobs.push(JobState::new(job, true));
            jobs.len() - 1
        });
        Machine {
            jobs,
            fx,
            queue: VecDeque::new(),
            shutting_down: false,
            hurried: false,
            stop_signal: libc::SIGTERM,
            main,
            ignored_pids: HashSet::new(),
            stop_timeout: config.stop_timeout,
            grace,
            orphans_reaped: 0,
            finished: false,
            reloading: None,
            maintenance: false,
            stop_signals: Vec::new(),
        }
    }

    /// The exit status pilot should end with: the payload's, else 0.
    pub fn exit_code(&self) -> i32 {
        self.main.and_then(|m| self.jobs[m].last_exit).map(ExitStatus::as_shell_code).unwrap_or(0)
    }

    pub fn start(&mut self) {
        for j in 0..self.jobs.len() {
            if let Some(t) = self.jobs[j].cfg.when_timeout {
                self.fx.set_timer(t, TimerKey::WhenTimeout(j));
            }
        }
        self.publish(Event::global(Code::Startup));
        self.settle();
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

    /// Deliver queued events to every job, in config order, until quiet; move shutdown
    /// along; and notice when everything is over.
    fn settle(&mut self) {
        loop {
            while let Some(ev) = self.queue.pop_front() {
                for j in 0..self.jobs.len() {
                    self.deliver(j, &ev);
                }
            }
            if self.shutting_down {
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
        // During shutdown only post-stop jobs may still start.
        if !hit || job.starts_left == Some(0) || (self.shutting_down && !job.is_hook()) {
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
        let first = !job.started;
        job.started = true;
        if first {
            let name = job.cfg.name.clone();
            self.fx.service_started(&name);
            let job = &self.jobs[j];
            if let Trigger::Interval(i) = job.cfg.trigger {
                self.fx.set_timer(i, TimerKey::Interval(j));
            }
            if let Some(h) = &job.cfg.health {
                self.fx.set_timer(h.interval, TimerKey::Health(j));
            }
        }
        let job = &self.jobs[j];
        let Some(argv) = job.cfg.exec.clone() else { return };
        let req =
            RunRequest { job: &job.cfg.name, argv: &argv, raw: job.cfg.raw, kind: RunKind::Exec, main: job.is_main };
        match self.fx.spawn(&req) {
            Ok(pid) => {
                let job = &mut self.jobs[j];
                job.pid = Some(pid);
                job.run_gen += 1;
                job.runs += 1;
                debug!("job {} started: pid {pid}", job.cfg.name);
                if let Some(t) = job.cfg.timeout {
                    let key = TimerKey::ExecTimeout(j, job.run_gen);
                    self.fx.set_timer(t, key);
                }
            }
            Err(f) => {
                let job = &mut self.jobs[j];
                job.runs += 1;
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
    pub fn on_deregistered(&mut self, job: &str) {
        if let Some(j) = self.jobs.iter().rposition(|s| s.cfg.name == job) {
            self.deregistered(j);
        }
        self.settle();
    }

    fn deregistered(&mut self, j: usize) {
        if self.jobs[j].phase == Phase::Deregistering {
            self.jobs[j].phase = Phase::Done;
            let name = self.jobs[j].cfg.name.clone();
            self.publish(Event::new(Code::Stopped, &name));
        }
    }

    pub fn on_exit(&mut self, pid: i32, status: ExitStatus) {
        if self.ignored_pids.remove(&pid) {
            return;
        }
        if let Some(j) = self.jobs.iter().position(|job| job.pid == Some(pid)) {
            self.jobs[j].pid = None;
            self.exited(j, status, false);
        } else if let Some(j) = self.jobs.iter().position(|job| job.check_pid == Some(pid)) {
            self.jobs[j].check_pid = None;
            self.check_exited(j, status);
        } else {
            self.orphans_reaped += 1;
            self.fx.orphan_reaped();
            debug!("reaped orphan pid {pid} ({status})");
        }
        self.settle();
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
            self.publish(Event::new(Code::ExitSuccess, &name));
        } else {
            self.publish(Event::new(Code::ExitFailed, &name));
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
        if self.shutting_down {
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
            let name = job.cfg.name.clone();
            self.fx.restarted(&name);
            if spawn_failed {
                // A program that cannot be exec'd would fail again at once: don't spin.
                self.fx.set_timer(Duration::from_secs(1), TimerKey::Restart(j));
            } else {
                self.run(j);
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
        let check = format!("check.{name}");
        if status.success() {
            self.publish(Event::new(Code::ExitSuccess, &check));
        } else {
            self.publish(Event::new(Code::ExitFailed, &check));
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
        self.publish(Event::new(code, &name));
    }

    /// A job that finished for good on its own (not during a shutdown). Its service is
    /// deregistered before `stopped`, as in a shutdown: pilot may be about to exit, and a
    /// deregistration still in flight would leave the service behind (found by the churn
    /// benchmark: 110 of 200 short-lived pilots left their registration).
    fn halt(&mut self, j: usize) {
        let name = self.jobs[j].cfg.name.clone();
        self.publish(Event::new(Code::Stopping, &name));
        self.finish_stop(j);
    }

    pub fn on_timer(&mut self, key: TimerKey) {
        match key {
            TimerKey::Interval(j) => self.interval_tick(j),
            TimerKey::Health(j) => self.health_tick(j),
            TimerKey::WhenTimeout(j) => {
                let job = &self.jobs[j];
                if !job.started && job.phase == Phase::Active && !self.shutting_down {
                    let name = job.cfg.name.clone();
                    info!("job {name}: timed out waiting for its start event");
                    self.publish(Event::new(Code::TimerExpired, &name));
                    self.halt(j);
                }
            }
            TimerKey::ExecTimeout(j, generation) => {
                let job = &self.jobs[j];
                if let (Some(pid), true) = (job.pid, job.run_gen == generation) {
                    warn!("job {} timeout after {:?}: killing it", job.cfg.name, job.cfg.timeout.unwrap_or_default());
                    self.fx.kill(pid, libc::SIGKILL, true);
                }
            }
            TimerKey::CheckTimeout(j, generation) => {
                let job = &self.jobs[j];
                if let (Some(pid), true) = (job.check_pid, job.check_gen == generation) {
                    warn!("health check for {} timed out: killing it", job.cfg.name);
                    self.fx.kill(pid, libc::SIGKILL, true);
                }
            }
            TimerKey::HooksDone(j) => {
                if self.jobs[j].phase == (Phase::Stopping { term_sent: false }) {
                    warn!(
                        "job {}: its pre-stop jobs did not finish in time; stopping it anyway",
                        self.jobs[j].cfg.name
                    );
                    self.terminate(j);
                }
            }
            TimerKey::StopKill(j, generation) => {
                let job = &self.jobs[j];
                if let (Some(pid), true) = (job.pid, job.run_gen == generation) {
                    warn!("job {} did not stop in time: sending SIGKILL", job.cfg.name);
                    self.fx.kill(pid, libc::SIGKILL, true);
                }
            }
            TimerKey::Restart(j) => {
                if self.jobs[j].phase == Phase::Active && !self.shutting_down {
                    self.run(j);
                }
            }
            TimerKey::Deregistered(j) => {
                if self.jobs[j].phase == Phase::Deregistering {
                    warn!("job {}: deregistration from Consul did not finish in time", self.jobs[j].cfg.name);
                    self.deregistered(j);
                }
            }
            TimerKey::Grace => {
                if !self.finished {
                    warn!("shutdown grace of {:?} is over: killing what is left", self.grace);
                    self.hurry();
                }
            }
        }
        self.settle();
    }

    fn interval_tick(&mut self, j: usize) {
        let job = &mut self.jobs[j];
        let Trigger::Interval(every) = job.cfg.trigger else { return };
        if job.phase != Phase::Active || self.shutting_down {
            return;
        }
        self.fx.set_timer(every, TimerKey::Interval(j));
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
        self.fx.set_timer(health.interval, TimerKey::Health(j));
        if self.maintenance || job.check_pid.is_some() || job.phase != Phase::Active {
            return;
        }
        let Some(argv) = health.exec.as_ref() else {
            // No check to run: the heartbeat itself says the job is alive (as ContainerPilot).
            let name = job.cfg.name.clone();
            self.fx.health_reported(&name, true, "heartbeat");
            return;
        };
        let check = format!("check.{}", job.cfg.name);
        let req = RunRequest { job: &check, argv, raw: health.raw, kind: RunKind::Check, main: false };
        match self.fx.spawn(&req) {
            Ok(pid) => {
                let job = &mut self.jobs[j];
                job.check_pid = Some(pid);
                job.check_gen += 1;
                let key = TimerKey::CheckTimeout(j, job.check_gen);
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
        let main_pid = self.main.and_then(|m| self.jobs[m].pid);
        match sig {
            _ if sig == libc::SIGTERM || sig == libc::SIGINT || self.stop_signals.contains(&sig) => {
                if self.shutting_down && self.reloading.is_none() {
                    info!("{} during shutdown: hurrying", crate::init::signals::name(sig));
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
                if sig == libc::SIGQUIT && self.shutting_down {
                    self.hurry();
                }
                if sig == libc::SIGHUP || sig == libc::SIGUSR2 {
                    self.publish(Event::new(Code::Signal, crate::init::signals::name(sig)));
                }
            }
        }
        self.settle();
    }

    fn begin_shutdown(&mut self, signal: Option<i32>) {
        if self.reloading.take().is_some() {
            info!("shutdown during a reload: the new config is dropped");
        } else if self.shutting_down {
            return;
        }
        self.shutting_down = true;
        if let Some(s) = signal {
            self.stop_signal = s;
        }
        self.fx.set_timer(self.grace, TimerKey::Grace);
        self.publish(Event::global(Code::Shutdown));
    }

    /// `POST /v3/reload` with a valid config: stop every job but the payload in order (as a
    /// shutdown would, without the `shutdown` event), then start the new config's jobs.
    pub fn reload(&mut self, config: Config) {
        if self.shutting_down {
            warn!("reload ignored: pilot is already stopping");
            return;
        }
        info!("reload: stopping the current jobs");
        self.reloading = Some(Box::new(config));
        self.shutting_down = true;
        self.settle();
    }

    fn swap_in(&mut self, config: Config) {
        for job in self.jobs.iter_mut().filter(|j| !j.is_main) {
            job.phase = Phase::Done;
            job.retired = true;
        }
        let first = self.jobs.len();
        self.jobs.extend(config.jobs.iter().cloned().map(|j| JobState::new(j, false)));
        self.stop_timeout = config.stop_timeout;
        self.shutting_down = false;
        self.hurried = false;
        self.fx.reconfigured(&config);
        if self.maintenance {
            // The new services start in maintenance, as the old ones were.
            self.fx.maintenance(true);
        }
        for j in first..self.jobs.len() {
            if let Some(t) = self.jobs[j].cfg.when_timeout {
                self.fx.set_timer(t, TimerKey::WhenTimeout(j));
            }
        }
        info!("reload: starting {} job(s) of the new config", self.jobs.len() - first);
        self.publish(Event::global(Code::Startup));
    }

    /// Second SIGTERM, SIGQUIT in shutdown, or grace over: SIGKILL everything now.
    fn hurry(&mut self) {
        self.hurried = true;
        for job in &mut self.jobs {
            for pid in [job.pid, job.check_pid].into_iter().flatten() {
                self.fx.kill(pid, libc::SIGKILL, true);
            }
            job.pending_run = false;
            if job.is_hook() && job.pid.is_none() {
                job.phase = Phase::Done;
            }
            job.starts_left = Some(0);
        }
    }

    /// Jobs that others started after (`when.source` = this job) are stopped first: a job
    /// begins stopping once every job that depends on it is done.
    fn stop_ready_jobs(&mut self) {
        for j in 0..self.jobs.len() {
            let job = &self.jobs[j];
            if job.phase != Phase::Active || job.is_hook() || (job.is_main && self.reloading.is_some()) {
                continue;
            }
            let name = job.cfg.name.as_str();
            let check = format!("check.{name}");
            let blocked = self.jobs.iter().enumerate().any(|(k, other)| {
                k != j
                    && other.phase != Phase::Done
                    && !other.is_hook()
                    && other.trigger_source().is_some_and(|s| s == name || s == check)
            });
            if !blocked {
                self.begin_stop(j);
            }
        }
    }

    fn begin_stop(&mut self, j: usize) {
        self.jobs[j].phase = Phase::Stopping { term_sent: false };
        let name = self.jobs[j].cfg.name.clone();
        self.publish(Event::new(Code::Stopping, &name));
        let has_pre_stop = self.jobs.iter().any(|o| {
            matches!(&o.cfg.trigger, Trigger::Event { code: Code::Stopping, source, .. } if *source == name)
                && o.phase != Phase::Done
        });
        if has_pre_stop && !self.hurried {
            // Let pre-stop jobs run while this job is still alive, at most its stopTimeout.
            let limit = self.jobs[j].cfg.stop_timeout.unwrap_or(self.stop_timeout);
            self.fx.set_timer(limit, TimerKey::HooksDone(j));
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
        let job = &self.jobs[j];
        if let Some(pid) = job.check_pid {
            self.fx.kill(pid, libc::SIGTERM, true);
        }
        match job.pid {
            None => self.finish_stop(j),
            Some(pid) => {
                let sig = match (self.hurried, job.is_main) {
                    (true, _) => libc::SIGKILL,
                    (false, true) => self.stop_signal,
                    (false, false) => libc::SIGTERM,
                };
                debug!("stopping job {} (pid {pid}) with {}", job.cfg.name, crate::init::signals::name(sig));
                let limit = job.cfg.stop_timeout.unwrap_or(self.stop_timeout);
                let key = TimerKey::StopKill(j, job.run_gen);
                self.fx.kill(pid, sig, true);
                self.fx.set_timer(limit, key);
            }
        }
    }

    /// The process is gone: deregister its service (post-stop jobs run after that), then
    /// `stopped`.
    fn finish_stop(&mut self, j: usize) {
        let name = self.jobs[j].cfg.name.clone();
        if self.fx.service_stopped(&name) {
            self.jobs[j].phase = Phase::Deregistering;
            self.fx.set_timer(DEREGISTER_WAIT, TimerKey::Deregistered(j));
            return;
        }
        self.jobs[j].phase = Phase::Done;
        self.publish(Event::new(Code::Stopped, &name));
    }

    /// Natural termination (every job finished on its own) becomes an orderly shutdown, so
    /// jobs on `shutdown` still run; pilot is finished when nothing is left to run.
    fn check_finished(&mut self) {
        if self.finished {
            return;
        }
        let idle_hook = |job: &JobState| job.is_hook() && job.pid.is_none() && !job.pending_run;
        // A reload waits for every job but the payload, which keeps running.
        let reloading = self.reloading.is_some();
        let counts = |job: &&JobState| !(reloading && job.is_main);
        let settled = self.jobs.iter().filter(counts).all(|job| job.phase == Phase::Done || idle_hook(job));
        let any_process = self.jobs.iter().filter(counts).any(|job| job.pid.is_some() || job.check_pid.is_some());
        if !settled || any_process {
            return;
        }
        if let Some(config) = self.reloading.take() {
            return self.swap_in(*config);
        }
        if !self.shutting_down {
            info!("every job has finished");
            self.begin_shutdown(None);
        } else {
            self.finished = true;
        }
    }
}

#[cfg(test)]
mod tests;
