//! The state machine without processes: a recording `Effects` hands out fake pids and
//! the tests play exits, signals and timer firings at it.

use super::*;
use crate::config::decode::Decoder;
use crate::config::{Config, parse_json5};

#[derive(Default)]
struct Fake {
    next_pid: i32,
    spawned: Vec<(String, i32)>,
    kills: Vec<(i32, i32)>,
    /// SIGCONTs sent after a stop signal, kept apart so `kills` reads as the stop sequence.
    conts: Vec<i32>,
    /// Signals to the process group of a job or check that exited (its leftovers).
    leftovers: Vec<(i32, i32)>,
    timers: Vec<TimerKey>,
    delays: Vec<(TimerKey, Duration)>,
    events: Vec<String>,
    fail: Vec<String>,
    /// Consul calls, in order: "health:app:true", "started:app", "stopped:app", "maint:true".
    consul: Vec<String>,
    /// Jobs that have a service (their stop waits for deregistration).
    services: Vec<String>,
}

impl Effects for Fake {
    fn spawn(&mut self, req: &RunRequest) -> Result<i32, SpawnFailure> {
        if self.fail.iter().any(|f| f == req.job) {
            return Err(SpawnFailure { pid: None, code: 127, message: "not found".into() });
        }
        self.next_pid += 1;
        let pid = 100 + self.next_pid;
        self.spawned.push((req.job.to_string(), pid));
        Ok(pid)
    }
    fn kill(&mut self, pid: i32, sig: i32, _group: bool) {
        if sig == libc::SIGCONT {
            self.conts.push(pid);
        } else {
            self.kills.push((pid, sig));
        }
    }
    fn signal_leftovers(&mut self, pgid: i32, sig: i32) {
        self.leftovers.push((pgid, sig));
    }
    fn set_timer(&mut self, after: Duration, key: TimerKey) {
        self.timers.push(key);
        self.delays.push((key, after));
    }
    fn published(&mut self, ev: &Event) {
        self.events.push(format!("{}:{}", ev.code.name(), ev.source));
    }
    fn health_reported(&mut self, job: &str, passing: bool, _detail: &str) {
        self.consul.push(format!("health:{job}:{passing}"));
    }
    fn service_started(&mut self, job: &str) {
        self.consul.push(format!("started:{job}"));
    }
    fn service_stopped(&mut self, _id: JobId, job: &str) -> bool {
        self.consul.push(format!("stopped:{job}"));
        self.services.iter().any(|s| s == job)
    }
    fn maintenance(&mut self, on: bool) {
        self.consul.push(format!("maint:{on}"));
    }
}

fn config(text: &str) -> Config {
    let mut d = Decoder::default();
    let c = Config::decode(&parse_json5(text).unwrap(), &mut d).unwrap();
    let errors: Vec<_> = d.diags.iter().filter(|x| x.severity == crate::config::Severity::Error).collect();
    assert!(errors.is_empty(), "{errors:?}");
    c
}

fn machine(text: &str, main: Option<&[&str]>) -> Machine<Fake> {
    let main = main.map(|m| m.iter().map(|s| s.to_string()).collect());
    let mut m = Machine::new(&config(text), main, Duration::from_secs(30), Fake::default());
    m.start();
    m
}

fn pid_of(m: &Machine<Fake>, job: &str) -> i32 {
    m.fx.spawned.iter().rev().find(|(j, _)| j == job).map(|(_, p)| *p).unwrap_or_else(|| panic!("{job} never spawned"))
}

fn spawns(m: &Machine<Fake>, job: &str) -> usize {
    m.fx.spawned.iter().filter(|(j, _)| j == job).count()
}

/// The current job of that name.
fn id(m: &Machine<Fake>, job: &str) -> JobId {
    m.jobs.iter().rev().find(|j| j.cfg.name == job).map(|j| j.id).unwrap_or_else(|| panic!("no job {job}"))
}

fn state<'a>(m: &'a Machine<Fake>, job: &str) -> &'a JobState {
    m.job(id(m, job)).unwrap()
}

/// The job exited; if its restart waits out a backoff, the backoff passes.
fn crash(m: &mut Machine<Fake>, job: &str, status: ExitStatus) {
    let j = id(m, job);
    m.on_exit(pid_of(m, job), status);
    if m.job(j).is_some_and(|s| s.restart_due) {
        m.on_timer(TimerKey::Restart(j));
    }
}

#[test]
fn restarts_n_times_then_gives_up() {
    let mut m = machine(r#"{jobs: [{name: "a", exec: "x", restarts: 2}]}"#, None);
    for _ in 0..3 {
        crash(&mut m, "a", ExitStatus::Code(1));
    }
    assert_eq!(spawns(&m, "a"), 3, "restarts: 2 means three runs");
    assert!(m.finished(), "natural termination once every job is done");
    assert!(m.fx.events.contains(&"stopped:a".to_string()));
}

#[test]
fn dependent_job_waits_for_its_event() {
    let mut m = machine(
        r#"{jobs: [{name: "pre", exec: "x"}, {name: "app", exec: "y", when: {source: "pre", once: "exitSuccess"}}]}"#,
        None,
    );
    assert_eq!(spawns(&m, "app"), 0);
    m.on_exit(pid_of(&m, "pre"), ExitStatus::Code(0));
    assert_eq!(spawns(&m, "app"), 1);
}

#[test]
fn failed_start_event_does_not_start_dependent() {
    let mut m = machine(
        r#"{jobs: [{name: "pre", exec: "x"}, {name: "app", exec: "y", when: {source: "pre", once: "exitSuccess"}}]}"#,
        None,
    );
    m.on_exit(pid_of(&m, "pre"), ExitStatus::Code(2));
    assert_eq!(spawns(&m, "app"), 0);
    assert!(m.fx.events.contains(&"exitFailed:pre".to_string()));
}

#[test]
fn shutdown_stops_dependents_first_and_waits_for_exit() {
    let mut m = machine(
        r#"{jobs: [
            {name: "db", exec: "db", health: {exec: "chk", interval: 1, ttl: 5}},
            {name: "app", exec: "app", when: {source: "db", once: "healthy"}},
        ]}"#,
        None,
    );
    m.on_timer(TimerKey::Health(id(&m, "db")));
    m.on_exit(pid_of(&m, "check.db"), ExitStatus::Code(0));
    assert_eq!(spawns(&m, "app"), 1, "app starts when db is healthy");
    let (db, app) = (pid_of(&m, "db"), pid_of(&m, "app"));
    m.on_signal(libc::SIGTERM);
    assert_eq!(m.fx.kills, vec![(app, libc::SIGTERM)], "the dependent is stopped first, alone");
    m.on_exit(app, ExitStatus::Signaled(libc::SIGTERM));
    assert_eq!(m.fx.kills.last(), Some(&(db, libc::SIGTERM)), "then the job it depended on");
    assert!(!m.finished());
    m.on_exit(db, ExitStatus::Code(0));
    assert!(m.finished());
}

#[test]
fn stop_timeout_escalates_to_sigkill() {
    let mut m = machine(r#"{jobs: [{name: "a", exec: "x", stopTimeout: "2s"}]}"#, None);
    let pid = pid_of(&m, "a");
    m.on_signal(libc::SIGTERM);
    let key = *m.fx.timers.iter().find(|k| matches!(k, TimerKey::StopKill(..))).expect("a stop timer");
    m.on_timer(key);
    assert_eq!(m.fx.kills, vec![(pid, libc::SIGTERM), (pid, libc::SIGKILL)]);
    m.on_exit(pid, ExitStatus::Signaled(libc::SIGKILL));
    assert!(m.finished());
}

#[test]
fn stale_stop_timer_is_ignored_after_exit() {
    let mut m = machine(r#"{jobs: [{name: "a", exec: "x"}, {name: "b", exec: "y"}]}"#, None);
    let a = pid_of(&m, "a");
    m.on_signal(libc::SIGTERM);
    m.on_exit(a, ExitStatus::Code(0));
    let before = m.fx.kills.len();
    m.on_timer(TimerKey::StopKill(id(&m, "a"), 1));
    assert_eq!(m.fx.kills.len(), before, "no SIGKILL for a job that already exited");
}

#[test]
fn pre_stop_runs_before_term_and_post_stop_after_exit() {
    let mut m = machine(
        r#"{jobs: [
            {name: "app", exec: "app"},
            {name: "preStop", exec: "pre", when: {source: "app", once: "stopping"}},
            {name: "postStop", exec: "post", when: {source: "app", once: "stopped"}},
        ]}"#,
        None,
    );
    let app = pid_of(&m, "app");
    m.on_signal(libc::SIGTERM);
    assert_eq!(spawns(&m, "preStop"), 1);
    assert!(m.fx.kills.is_empty(), "app stays alive while preStop runs");
    m.on_exit(pid_of(&m, "preStop"), ExitStatus::Code(0));
    assert_eq!(m.fx.kills, vec![(app, libc::SIGTERM)]);
    assert_eq!(spawns(&m, "postStop"), 0, "postStop waits for app to be gone");
    m.on_exit(app, ExitStatus::Code(0));
    assert_eq!(spawns(&m, "postStop"), 1);
    assert!(!m.finished());
    m.on_exit(pid_of(&m, "postStop"), ExitStatus::Code(0));
    assert!(m.finished());
}

#[test]
fn payload_exit_ends_everything_with_its_status() {
    let mut m = machine(r#"{jobs: [{name: "side", exec: "s"}]}"#, Some(&["payload"]));
    let side = pid_of(&m, "side");
    m.on_exit(pid_of(&m, MAIN_JOB), ExitStatus::Code(42));
    assert_eq!(m.fx.kills, vec![(side, libc::SIGTERM)]);
    m.on_exit(side, ExitStatus::Signaled(libc::SIGTERM));
    assert!(m.finished());
    assert_eq!(m.exit_code(), 42);
}

#[test]
fn payload_gets_the_signal_that_started_shutdown() {
    let mut m = machine("{}", Some(&["payload"]));
    let pid = pid_of(&m, MAIN_JOB);
    m.on_signal(libc::SIGINT);
    assert_eq!(m.fx.kills, vec![(pid, libc::SIGINT)]);
    m.on_exit(pid, ExitStatus::Signaled(libc::SIGINT));
    assert_eq!(m.exit_code(), 130);
}

#[test]
fn other_signals_are_forwarded_to_the_payload() {
    let mut m = machine("{}", Some(&["payload"]));
    let pid = pid_of(&m, MAIN_JOB);
    for sig in [libc::SIGHUP, libc::SIGUSR1, libc::SIGWINCH, libc::SIGRTMIN() + 2] {
        m.on_signal(sig);
    }
    assert_eq!(
        m.fx.kills,
        vec![(pid, libc::SIGHUP), (pid, libc::SIGUSR1), (pid, libc::SIGWINCH), (pid, libc::SIGRTMIN() + 2)]
    );
    assert!(!m.shutting_down() && !m.reloading());
}

#[test]
fn second_sigterm_hurries_with_sigkill() {
    let mut m = machine(r#"{jobs: [{name: "a", exec: "x"}]}"#, None);
    let pid = pid_of(&m, "a");
    m.on_signal(libc::SIGTERM);
    m.on_signal(libc::SIGTERM);
    assert_eq!(m.fx.kills, vec![(pid, libc::SIGTERM), (pid, libc::SIGKILL)]);
}

#[test]
fn health_results_become_events_and_timeouts_kill_the_check() {
    let mut m = machine(
        r#"{jobs: [{name: "a", exec: "x", health: {exec: "chk", interval: 1, ttl: 3, timeout: "500ms"}}]}"#,
        None,
    );
    m.on_timer(TimerKey::Health(id(&m, "a")));
    let check = pid_of(&m, "check.a");
    m.on_timer(TimerKey::CheckTimeout(id(&m, "a"), 1));
    assert_eq!(m.fx.kills, vec![(check, libc::SIGKILL)]);
    m.on_exit(check, ExitStatus::Signaled(libc::SIGKILL));
    assert_eq!(state(&m, "a").health, Health::Unhealthy);
    assert!(m.fx.events.contains(&"unhealthy:a".to_string()));
    m.on_timer(TimerKey::Health(id(&m, "a")));
    m.on_exit(pid_of(&m, "check.a"), ExitStatus::Code(0));
    assert_eq!(state(&m, "a").health, Health::Healthy);
    assert!(m.fx.events.contains(&"healthy:a".to_string()));
}

#[test]
fn a_running_check_is_not_started_twice() {
    let mut m = machine(r#"{jobs: [{name: "a", exec: "x", health: {exec: "chk", interval: 1, ttl: 3}}]}"#, None);
    m.on_timer(TimerKey::Health(id(&m, "a")));
    m.on_timer(TimerKey::Health(id(&m, "a")));
    assert_eq!(spawns(&m, "check.a"), 1);
}

#[test]
fn interval_job_runs_restarts_plus_one_times() {
    let mut m = machine(r#"{jobs: [{name: "t", exec: "x", when: {interval: "1s"}, restarts: 2}]}"#, None);
    for _ in 0..5 {
        if let Some(pid) = state(&m, "t").pid {
            m.on_exit(pid, ExitStatus::Code(0));
        }
        m.on_timer(TimerKey::Interval(id(&m, "t")));
    }
    assert_eq!(spawns(&m, "t"), 3);
}

#[test]
fn when_timeout_publishes_timer_expired_and_halts() {
    let mut m = machine(
        r#"{jobs: [{name: "late", exec: "x", when: {source: "never-there", once: "healthy", timeout: "1s"}},
                  {name: "watcher", exec: "y", when: {source: "late", once: "timerExpired"}}]}"#,
        None,
    );
    m.on_timer(TimerKey::WhenTimeout(id(&m, "late")));
    assert!(m.fx.events.contains(&"timerExpired:late".to_string()));
    assert_eq!(state(&m, "late").phase, Phase::Done);
    assert_eq!(spawns(&m, "watcher"), 1);
}

#[test]
fn sighup_source_runs_on_each_signal() {
    let mut m =
        machine(r#"{jobs: [{name: "main", exec: "x"}, {name: "hup", exec: "y", when: {source: "SIGHUP"}}]}"#, None);
    m.on_signal(libc::SIGHUP);
    m.on_exit(pid_of(&m, "hup"), ExitStatus::Code(0));
    m.on_signal(libc::SIGHUP);
    assert_eq!(spawns(&m, "hup"), 2);
}

#[test]
fn jobs_can_run_on_shutdown() {
    let mut m = machine(
        r#"{jobs: [{name: "a", exec: "x"}, {name: "ship-logs", exec: "y", when: {source: "global", once: "shutdown"}}]}"#,
        None,
    );
    m.on_signal(libc::SIGTERM);
    assert_eq!(spawns(&m, "ship-logs"), 1);
    m.on_exit(pid_of(&m, "a"), ExitStatus::Code(0));
    assert!(!m.finished(), "waits for the shutdown job");
    m.on_exit(pid_of(&m, "ship-logs"), ExitStatus::Code(0));
    assert!(m.finished());
}

#[test]
fn spawn_failure_of_payload_exits_127() {
    let mut fx = Fake::default();
    fx.fail.push(MAIN_JOB.into());
    let mut m = Machine::new(&config("{}"), Some(vec!["nope".into()]), Duration::from_secs(5), fx);
    m.start();
    assert!(m.finished());
    assert_eq!(m.exit_code(), 127);
}

#[test]
fn orphans_are_counted_not_confused_with_jobs() {
    let mut m = machine(r#"{jobs: [{name: "a", exec: "x"}]}"#, None);
    m.on_exit(9999, ExitStatus::Code(0));
    assert_eq!(m.orphans_reaped, 1);
    assert!(state(&m, "a").pid.is_some(), "the job's own state is untouched");
}

const SERVICE: &str = r#"{ jobs: [
    { name: "app", exec: "app", port: 80, health: { exec: "check", interval: 5, ttl: 10 } },
    { name: "post", exec: "post", when: { source: "app", once: "stopped" } } ] }"#;

fn service_machine() -> Machine<Fake> {
    let fx = Fake { services: vec!["app".into()], ..Fake::default() };
    let mut m = Machine::new(&config(SERVICE), None, Duration::from_secs(30), fx);
    m.start();
    m
}

#[test]
fn health_results_are_reported_to_consul() {
    let mut m = service_machine();
    assert_eq!(m.fx.consul, ["started:app"]);
    m.on_timer(TimerKey::Health(id(&m, "app")));
    let check = pid_of(&m, "check.app");
    m.on_exit(check, ExitStatus::Code(1));
    m.on_timer(TimerKey::Health(id(&m, "app")));
    let check = pid_of(&m, "check.app");
    m.on_exit(check, ExitStatus::Code(0));
    assert_eq!(m.fx.consul, ["started:app", "health:app:false", "health:app:true"]);
}

#[test]
fn post_stop_jobs_wait_for_deregistration() {
    let mut m = service_machine();
    let app = pid_of(&m, "app");
    m.on_signal(libc::SIGTERM);
    m.on_exit(app, ExitStatus::Signaled(libc::SIGTERM));
    assert!(m.fx.consul.contains(&"stopped:app".to_string()));
    assert_eq!(spawns(&m, "post"), 0, "post-stop waits for the deregistration");
    assert!(!m.fx.events.contains(&"stopped:app".to_string()));
    m.on_deregistered(id(&m, "app"));
    assert!(m.fx.events.contains(&"stopped:app".to_string()));
    assert_eq!(spawns(&m, "post"), 1);
}

#[test]
fn a_deregistration_that_hangs_is_given_up_on() {
    let mut m = service_machine();
    let app = pid_of(&m, "app");
    m.on_signal(libc::SIGTERM);
    m.on_exit(app, ExitStatus::Signaled(libc::SIGTERM));
    assert!(m.fx.timers.contains(&TimerKey::Deregistered(id(&m, "app"))));
    m.on_timer(TimerKey::Deregistered(id(&m, "app")));
    assert_eq!(spawns(&m, "post"), 1, "post-stop runs after the deregistration wait");
    let post = pid_of(&m, "post");
    m.on_exit(post, ExitStatus::Code(0));
    assert!(m.finished());
}

#[test]
fn maintenance_events_reach_consul_and_pause_checks() {
    let mut m = service_machine();
    m.on_event(Event::global(Code::EnterMaintenance));
    m.on_timer(TimerKey::Health(id(&m, "app")));
    assert_eq!(spawns(&m, "check.app"), 0, "no health checks in maintenance");
    m.on_event(Event::global(Code::ExitMaintenance));
    m.on_timer(TimerKey::Health(id(&m, "app")));
    assert_eq!(spawns(&m, "check.app"), 1);
    assert_eq!(m.fx.consul, ["started:app", "maint:true", "maint:false"]);
}

#[test]
fn exec_less_health_is_a_heartbeat() {
    let text = r#"{ jobs: [ { name: "app", exec: "app", port: 80, health: { interval: 5, ttl: 10 } } ] }"#;
    let mut m = machine(text, None);
    m.on_timer(TimerKey::Health(id(&m, "app")));
    assert!(m.fx.consul.contains(&"health:app:true".to_string()));
}

const OLD: &str =
    r#"{ jobs: [ { name: "a", exec: "a" }, { name: "b", exec: "b", when: { source: "a", once: "exitSuccess" } } ] }"#;
const NEW: &str = r#"{ jobs: [ { name: "c", exec: "c" } ] }"#;

#[test]
fn reload_replaces_jobs_but_not_the_payload() {
    let mut m = machine(OLD, Some(&["payload"]));
    let (a, payload) = (pid_of(&m, "a"), pid_of(&m, MAIN_JOB));
    m.reload(config(NEW)).expect("reload taken");
    assert!(m.fx.kills.contains(&(a, libc::SIGTERM)), "old jobs are stopped");
    assert!(!m.fx.kills.iter().any(|(p, _)| *p == payload), "the payload is not");
    assert_eq!(spawns(&m, "c"), 0, "new jobs wait for the old ones to be gone");
    m.on_exit(a, ExitStatus::Signaled(libc::SIGTERM));
    assert_eq!(spawns(&m, "c"), 1);
    assert!(matches!(m.mode(), Mode::Running), "neither shutting down nor still reloading");
    assert!(m.jobs.iter().any(|j| j.cfg.name == "c"), "c is a current job, not a replaced one");
    // The payload's exit still ends everything, with its status.
    let c = pid_of(&m, "c");
    m.on_exit(payload, ExitStatus::Code(3));
    m.on_exit(c, ExitStatus::Signaled(libc::SIGTERM));
    assert!(m.finished());
    assert_eq!(m.exit_code(), 3);
}

#[test]
fn sigterm_during_a_reload_is_an_orderly_shutdown() {
    let mut m = machine(OLD, Some(&["payload"]));
    let (a, payload) = (pid_of(&m, "a"), pid_of(&m, MAIN_JOB));
    m.reload(config(NEW)).expect("reload taken");
    m.on_signal(libc::SIGTERM);
    assert!(m.fx.kills.contains(&(payload, libc::SIGTERM)), "the payload gets SIGTERM, not SIGKILL");
    assert!(!m.fx.kills.iter().any(|(_, s)| *s == libc::SIGKILL));
    m.on_exit(a, ExitStatus::Signaled(libc::SIGTERM));
    m.on_exit(payload, ExitStatus::Signaled(libc::SIGTERM));
    assert_eq!(spawns(&m, "c"), 0, "the new config never starts");
    assert!(m.finished());
}

#[test]
fn a_job_that_ends_on_its_own_deregisters_before_pilot_finishes() {
    let text =
        r#"{ jobs: [ { name: "app", exec: "app", port: 80, health: { exec: "check", interval: 5, ttl: 10 } } ] }"#;
    let fx = Fake { services: vec!["app".into()], ..Fake::default() };
    let mut m = Machine::new(&config(text), None, Duration::from_secs(30), fx);
    m.start();
    let app = pid_of(&m, "app");
    m.on_exit(app, ExitStatus::Code(0));
    assert!(m.fx.consul.contains(&"stopped:app".to_string()));
    assert!(!m.finished(), "pilot waits for the deregistration");
    m.on_deregistered(id(&m, "app"));
    assert!(m.finished());
}

// ---- Reloads: the newest config wins, old jobs are dropped ----

const NEWER: &str = r#"{ jobs: [ { name: "d", exec: "d", health: { exec: "chk", interval: 1, ttl: 3 } } ] }"#;

#[test]
fn reload_after_reload_starts_each_generation_and_drops_the_one_before() {
    let mut m = machine(OLD, Some(&["payload"]));
    let (a, payload) = (pid_of(&m, "a"), pid_of(&m, MAIN_JOB));
    let old_a = id(&m, "a");
    m.reload(config(NEW)).expect("reload taken");
    m.on_exit(a, ExitStatus::Signaled(libc::SIGTERM));
    let c = pid_of(&m, "c");
    let first_c = id(&m, "c");
    assert_eq!(first_c.generation, old_a.generation + 1);
    m.reload(config(NEWER)).expect("reload taken");
    assert_eq!(spawns(&m, "d"), 0, "d waits for c to stop");
    m.on_exit(c, ExitStatus::Code(0));
    assert_eq!(spawns(&m, "d"), 1);
    assert_eq!(id(&m, "d").generation, first_c.generation + 1);
    let names: Vec<&str> = m.jobs.iter().map(|j| j.cfg.name.as_str()).collect();
    assert_eq!(names, [MAIN_JOB, "d"], "only the payload and the newest config's jobs are kept");
    assert_eq!(pid_of(&m, MAIN_JOB), payload, "the payload ran through both reloads");
    assert!(matches!(m.mode(), Mode::Running));
}

#[test]
fn old_jobs_are_dropped_and_their_timers_find_nothing() {
    let text = r#"{ jobs: [ { name: "a", exec: "a", restarts: "unlimited", timeout: "5s",
                              health: { exec: "chk", interval: 1, ttl: 3 } } ] }"#;
    let mut m = machine(text, Some(&["payload"]));
    let old = id(&m, "a");
    let a = pid_of(&m, "a");
    m.reload(config(text)).expect("reload taken");
    m.on_exit(a, ExitStatus::Signaled(libc::SIGTERM));
    let new = id(&m, "a");
    assert_ne!(old, new, "the reloaded job of the same name is a new job");
    assert!(m.job(old).is_none(), "the old job is gone, not kept as retired");
    assert_eq!(m.jobs.len(), 2);
    let (spawned, kills) = (m.fx.spawned.len(), m.fx.kills.len());
    for key in [
        TimerKey::Health(old),
        TimerKey::Interval(old),
        TimerKey::Restart(old),
        TimerKey::StopKill(old, 1),
        TimerKey::ExecTimeout(old, 1),
        TimerKey::HooksDone(old),
        TimerKey::WhenTimeout(old),
    ] {
        m.on_timer(key);
    }
    m.on_deregistered(old);
    assert_eq!((m.fx.spawned.len(), m.fx.kills.len()), (spawned, kills), "old timers did nothing");
    m.on_timer(TimerKey::Health(new));
    assert_eq!(spawns(&m, "check.a"), 1, "the new job's timers work");
}

#[test]
fn a_reload_during_a_reload_is_not_dropped_the_newest_wins() {
    let mut m = machine(OLD, Some(&["payload"]));
    let a = pid_of(&m, "a");
    m.reload(config(NEW)).expect("reload taken");
    m.reload(config(NEWER)).expect("reload taken");
    assert!(m.reloading());
    m.on_exit(a, ExitStatus::Signaled(libc::SIGTERM));
    assert_eq!(spawns(&m, "c"), 0, "the replaced config never starts");
    assert_eq!(spawns(&m, "d"), 1, "the newest one does");
}

#[test]
fn a_reload_during_shutdown_is_ignored_and_answered_so() {
    let mut m = machine(OLD, Some(&["payload"]));
    let (a, payload) = (pid_of(&m, "a"), pid_of(&m, MAIN_JOB));
    m.on_signal(libc::SIGTERM);
    let kills = m.fx.kills.len();
    assert_eq!(m.reload(config(NEW)), Err(ReloadRefused::ShuttingDown), "not answered as taken");
    assert!(!m.reloading(), "the shutdown goes on");
    assert_eq!(m.fx.kills.len(), kills, "nothing more is stopped");
    m.on_exit(a, ExitStatus::Signaled(libc::SIGTERM));
    m.on_exit(payload, ExitStatus::Signaled(libc::SIGTERM));
    assert_eq!(spawns(&m, "c"), 0);
    assert!(m.finished());
}

#[test]
fn sigquit_during_a_reload_is_forwarded_but_does_not_kill_the_payload() {
    let mut m = machine(OLD, Some(&["payload"]));
    let payload = pid_of(&m, MAIN_JOB);
    m.reload(config(NEW)).expect("reload taken");
    m.on_signal(libc::SIGQUIT);
    assert!(m.fx.kills.contains(&(payload, libc::SIGQUIT)));
    assert!(!m.fx.kills.contains(&(payload, libc::SIGKILL)), "a reload is not a shutdown to hurry");
}

// ---- Shutdown: cycles, the grace, a second signal ----

const CYCLE: &str = r#"{ jobs: [
    { name: "a", exec: "a", when: { source: "b", once: "exitSuccess" } },
    { name: "b", exec: "b", when: { source: "a", once: "exitSuccess" } },
    { name: "svc", exec: "svc" } ] }"#;

#[test]
fn a_dependency_cycle_does_not_hang_shutdown() {
    let mut m = machine(CYCLE, Some(&["payload"]));
    let (svc, payload) = (pid_of(&m, "svc"), pid_of(&m, MAIN_JOB));
    m.on_signal(libc::SIGTERM);
    m.on_exit(svc, ExitStatus::Signaled(libc::SIGTERM));
    m.on_exit(payload, ExitStatus::Signaled(libc::SIGTERM));
    assert!(m.finished(), "a and b wait for each other, yet both are stopped: {:?}", m.mode());
}

#[test]
fn a_dependency_cycle_does_not_hang_a_reload() {
    let mut m = machine(CYCLE, Some(&["payload"]));
    let svc = pid_of(&m, "svc");
    m.reload(config(NEW)).expect("reload taken");
    m.on_exit(svc, ExitStatus::Signaled(libc::SIGTERM));
    assert_eq!(spawns(&m, "c"), 1);
}

#[test]
fn when_the_grace_is_over_everything_is_killed_and_pilot_finishes() {
    let mut m = machine(r#"{ jobs: [ { name: "stubborn", exec: "x", stopTimeout: "1h" } ] }"#, None);
    let pid = pid_of(&m, "stubborn");
    m.on_signal(libc::SIGTERM);
    assert!(m.fx.delays.contains(&(TimerKey::Grace, Duration::from_secs(30))));
    m.on_timer(TimerKey::Grace);
    assert_eq!(m.fx.kills.last(), Some(&(pid, libc::SIGKILL)));
    assert!(!m.finished(), "waits (briefly) for the SIGKILLed process");
    m.on_timer(TimerKey::GiveUp);
    assert!(m.finished(), "even a process that never goes away does not keep pilot");
}

#[test]
fn a_payload_that_never_goes_away_ends_pilot_as_sigkilled() {
    let mut m = machine("{}", Some(&["payload"]));
    m.on_signal(libc::SIGTERM);
    m.on_timer(TimerKey::Grace);
    m.on_timer(TimerKey::GiveUp);
    assert!(m.finished());
    assert_eq!(m.exit_code(), 128 + libc::SIGKILL);
}

#[test]
fn when_hurried_deregistrations_and_hooks_are_not_waited_for() {
    let mut m = service_machine();
    let app = pid_of(&m, "app");
    m.on_signal(libc::SIGTERM);
    m.on_exit(app, ExitStatus::Signaled(libc::SIGTERM));
    assert_eq!(state(&m, "app").phase, Phase::Deregistering);
    m.on_signal(libc::SIGTERM);
    assert!(m.finished(), "no waiting for Consul, no post-stop job once hurried");
    assert_eq!(spawns(&m, "post"), 0);
}

#[test]
fn a_second_sigterm_ends_a_cycle_with_running_processes() {
    // A cycle through a health check's source: a waits for b, b for a's check.
    let text = r#"{ jobs: [
        { name: "a", exec: "a", when: { source: "b", once: "healthy" }, health: { exec: "c", interval: 1, ttl: 3 } },
        { name: "b", exec: "b", when: { source: "check.a", once: "exitSuccess" } } ] }"#;
    let mut m = machine(text, Some(&["payload"]));
    let payload = pid_of(&m, MAIN_JOB);
    m.on_signal(libc::SIGTERM);
    m.on_signal(libc::SIGTERM);
    assert!(m.fx.kills.contains(&(payload, libc::SIGKILL)));
    m.on_exit(payload, ExitStatus::Signaled(libc::SIGKILL));
    assert!(m.finished());
}

// ---- Processes: leftovers, stopped payloads ----

#[test]
fn an_exited_job_or_checks_process_group_is_terminated() {
    let mut m =
        machine(r#"{ jobs: [ { name: "a", exec: "x", health: { exec: "chk", interval: 1, ttl: 3 } } ] }"#, None);
    m.on_timer(TimerKey::Health(id(&m, "a")));
    let check = pid_of(&m, "check.a");
    m.on_exit(check, ExitStatus::Code(0));
    assert_eq!(m.fx.leftovers, [(check, libc::SIGTERM), (check, libc::SIGCONT)]);
    let a = pid_of(&m, "a");
    m.on_exit(a, ExitStatus::Code(0));
    assert_eq!(&m.fx.leftovers[2..], [(a, libc::SIGTERM), (a, libc::SIGCONT)]);
    m.on_exit(4242, ExitStatus::Code(0));
    assert_eq!(m.fx.leftovers.len(), 4, "an orphan's pid is no process group of ours");
}

#[test]
fn the_stop_signal_is_followed_by_sigcont() {
    let mut m = machine(r#"{ jobs: [ { name: "a", exec: "x" } ] }"#, Some(&["payload"]));
    let (a, payload) = (pid_of(&m, "a"), pid_of(&m, MAIN_JOB));
    m.on_signal(libc::SIGINT);
    assert!(m.fx.kills.contains(&(payload, libc::SIGINT)));
    assert!(m.fx.kills.contains(&(a, libc::SIGTERM)));
    assert_eq!(m.fx.conts, [a, payload], "each stop signal is followed by SIGCONT");
    m.on_signal(libc::SIGTERM);
    assert_eq!(m.fx.conts.len(), 2, "SIGKILL needs no SIGCONT");
}

// ---- Restarts: counted as restarts, with backoff ----

fn restart_delays(m: &Machine<Fake>) -> Vec<Duration> {
    m.fx.delays.iter().filter(|(k, _)| matches!(k, TimerKey::Restart(_))).map(|(_, d)| *d).collect()
}

#[test]
fn a_crash_loop_backs_off_exponentially_up_to_ten_seconds() {
    let mut m = machine(r#"{ jobs: [ { name: "a", exec: "x", restarts: "unlimited" } ] }"#, None);
    for _ in 0..10 {
        crash(&mut m, "a", ExitStatus::Code(1));
    }
    assert_eq!(spawns(&m, "a"), 11, "still restarted every time");
    let ms: Vec<u128> = restart_delays(&m).iter().map(Duration::as_millis).collect();
    assert_eq!(ms, [100, 200, 400, 800, 1600, 3200, 6400, 10000, 10000], "the first restart is immediate");
    assert_eq!(state(&m, "a").restarts, 10);
}

#[test]
fn a_run_that_lasted_resets_the_backoff() {
    let mut m = machine(r#"{ jobs: [ { name: "a", exec: "x", restarts: "unlimited" } ] }"#, None);
    for _ in 0..4 {
        crash(&mut m, "a", ExitStatus::Code(1));
    }
    let a = id(&m, "a");
    let ran_well = *m.fx.timers.iter().rev().find(|k| matches!(k, TimerKey::RanWell(..))).unwrap();
    assert!(m.fx.delays.contains(&(ran_well, RAN_WELL)));
    m.on_timer(ran_well);
    let before = restart_delays(&m).len();
    crash(&mut m, "a", ExitStatus::Code(1));
    assert_eq!(restart_delays(&m).len(), before, "after a good run the first restart is immediate again");
    assert!(m.job(a).unwrap().pid.is_some());
}

#[test]
fn a_pending_restart_does_not_run_during_shutdown() {
    let mut m = machine(r#"{ jobs: [ { name: "a", exec: "x", restarts: "unlimited" } ] }"#, None);
    m.on_exit(pid_of(&m, "a"), ExitStatus::Code(1));
    m.on_exit(pid_of(&m, "a"), ExitStatus::Code(1));
    assert!(state(&m, "a").restart_due);
    m.on_signal(libc::SIGTERM);
    m.on_timer(TimerKey::Restart(id(&m, "a")));
    assert_eq!(spawns(&m, "a"), 2);
    assert!(m.finished());
}

#[test]
fn restarts_count_restarts_not_interval_runs() {
    let mut m = machine(r#"{jobs: [{name: "t", exec: "x", when: {interval: "1s"}, restarts: 4}]}"#, None);
    for _ in 0..3 {
        m.on_exit(pid_of(&m, "t"), ExitStatus::Code(0));
        m.on_timer(TimerKey::Interval(id(&m, "t")));
    }
    assert_eq!(state(&m, "t").runs, 4);
    assert_eq!(state(&m, "t").restarts, 0, "runs on an interval are not restarts");
    assert!(restart_delays(&m).is_empty());
}

#[test]
fn a_config_job_named_main_next_to_a_payload_is_refused() {
    assert!(check_payload_name(&config(r#"{ jobs: [ { name: "main", exec: "x" } ] }"#)).is_err());
    assert!(check_payload_name(&config(r#"{ jobs: [ { name: "web", exec: "x" } ] }"#)).is_ok());
}

#[test]
fn a_reload_whose_old_jobs_hang_is_bounded_by_the_grace() {
    let text = r#"{ jobs: [ { name: "app", exec: "app", stopTimeout: "1h" },
                             { name: "post", exec: "post", when: { source: "app", once: "stopped" } } ] }"#;
    let mut m = machine(text, Some(&["payload"]));
    let (app, payload) = (pid_of(&m, "app"), pid_of(&m, MAIN_JOB));
    m.reload(config(NEW)).expect("reload taken");
    m.on_exit(app, ExitStatus::Signaled(libc::SIGTERM));
    let post = pid_of(&m, "post");
    assert_eq!(spawns(&m, "c"), 0, "the post-stop hook runs (and hangs)");
    let key = *m.fx.timers.iter().find(|k| matches!(k, TimerKey::ReloadGrace(_))).expect("a reload grace");
    assert!(m.fx.delays.contains(&(key, Duration::from_secs(30))));
    m.on_timer(key);
    assert!(m.fx.kills.contains(&(post, libc::SIGKILL)));
    assert!(!m.fx.kills.iter().any(|(p, _)| *p == payload), "never the payload");
    m.on_exit(post, ExitStatus::Signaled(libc::SIGKILL));
    assert_eq!(spawns(&m, "c"), 1, "the new config starts");
    m.on_timer(key);
    assert!(matches!(m.mode(), Mode::Running), "a stale reload grace does nothing");
}

#[test]
fn a_reload_with_a_job_named_main_next_to_a_payload_is_refused() {
    let mut m = machine(OLD, Some(&["payload"]));
    let refused = m.reload(config(r#"{ jobs: [ { name: "main", exec: "x" } ] }"#));
    assert!(matches!(refused, Err(ReloadRefused::Invalid(e)) if e.contains("jobs[0].name")), "answered as refused");
    assert!(matches!(m.mode(), Mode::Running), "the running config stays");
    assert!(m.fx.kills.is_empty());
}

/// A chain of a thousand jobs (each started by the one before) stops in order, without the
/// drain costing a scan of every job for every job at every step.
#[test]
fn a_long_chain_stops_in_reverse_order() {
    let n = 1000;
    let mut jobs = vec![r#"{ name: "j0", exec: "x" }"#.to_string()];
    jobs.extend(
        (1..n).map(|i| format!(r#"{{ name: "j{i}", exec: "x", when: {{ source: "j{}", once: "healthy" }} }}"#, i - 1)),
    );
    let mut m = machine(&format!("{{ jobs: [{}] }}", jobs.join(",")), None);
    for i in 1..n {
        m.on_event(Event::new(Code::Healthy, format!("j{}", i - 1)));
        assert_eq!(spawns(&m, &format!("j{i}")), 1);
    }
    m.on_signal(libc::SIGTERM);
    for i in (0..n).rev() {
        let pid = pid_of(&m, &format!("j{i}"));
        assert_eq!(m.fx.kills.last(), Some(&(pid, libc::SIGTERM)), "j{i} is the one stopping now");
        m.on_exit(pid, ExitStatus::Signaled(libc::SIGTERM));
    }
    assert!(m.finished());
}

/// A spawn failure the child reports when it is reaped (not found on PATH, a missing `#!`
/// interpreter) counts as one known at once: the payload's ends pilot with its code, a
/// check's is a failed check, a job's is an exit with the spawn-retry backoff.
#[test]
fn a_spawn_failure_known_at_reap_is_a_spawn_failure() {
    let mut m = Machine::new(&config("{}"), Some(vec!["nope".into()]), Duration::from_secs(5), Fake::default());
    m.start();
    let main = pid_of(&m, MAIN_JOB);
    m.on_spawn_failed(main, 127, "nope: command not found");
    assert!(m.finished());
    assert_eq!(m.exit_code(), 127);

    let mut m = service_machine();
    m.on_timer(TimerKey::Health(id(&m, "app")));
    let check = pid_of(&m, "check.app");
    m.on_spawn_failed(check, 126, "cannot execute check: interpreter /cvmfs/x of check not found");
    assert_eq!(m.fx.consul, ["started:app", "health:app:false"]);
    assert!(state(&m, "app").check_pid.is_none());

    let app = pid_of(&m, "app");
    m.on_spawn_failed(app, 127, "app: command not found");
    assert!(state(&m, "app").pid.is_none(), "the job's run is over");
    assert!(m.fx.events.contains(&"exitFailed:app".to_string()), "{:?}", m.fx.events);
    // An unknown pid (a job replaced by a reload) is only logged.
    m.on_spawn_failed(99_999, 127, "gone");
    assert_eq!(m.orphans_reaped, 0);
}
