//! The Consul worker thread: the only place service registrations talk to the agent. The
//! supervisor hands it commands over a channel and never waits on it (except, bounded, for
//! the deregistration ack at shutdown), so a slow or dead agent cannot delay reaping,
//! signals, health checks or shutdown.
//!
//! It keeps the state each service *should* have and reconciles the agent towards it:
//! failures are retried with capped exponential backoff and logged once per change of
//! state; a TTL update the agent does not know (404: it restarted or reaped the service)
//! means register again.

use super::http::{Client, Failure, Reply};
use super::service::ServiceDef;
use crate::config::CheckStatus;
use crate::telemetry::Metrics;
use log::{debug, error, info, warn};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const BACKOFF_MIN: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// How long a failing health check's output may take to arrive from its log pipe.
const OUTPUT_WAIT: Duration = Duration::from_millis(300);
/// A check's note in Consul is the last this many bytes of its output.
pub const NOTE_LIMIT: usize = 4096;

/// A health check's output: known, or still being read from the check's pipe.
pub enum Output {
    Text(String),
    Pending(Receiver<String>, String),
}

impl Output {
    fn resolve(self) -> String {
        match self {
            Output::Text(t) => t,
            Output::Pending(rx, detail) => {
                let text = rx.recv_timeout(OUTPUT_WAIT).unwrap_or_default();
                let text = text.trim_end();
                if text.is_empty() { detail } else { format!("{text}\n({detail})") }
            }
        }
    }
}

pub enum Command {
    /// A health result: register if needed, then set the TTL check to passing or critical.
    Health {
        job: String,
        passing: bool,
        output: Output,
    },
    /// The job started and has `initial_status`: register now.
    Started {
        job: String,
    },
    /// The job stopped: deregister; `ack` is called when that is done or has failed.
    Stopped {
        job: String,
        ack: Option<Box<dyn FnOnce() + Send>>,
    },
    Maintenance {
        on: bool,
    },
}

/// The body of a TTL update, serialized straight into the request (no `serde_json::Value`).
#[derive(serde::Serialize)]
struct TtlUpdate<'a> {
    #[serde(rename = "Status")]
    status: &'a CheckStatus,
    #[serde(rename = "Output")]
    output: &'a str,
}

#[derive(Debug, Clone, PartialEq)]
enum Want {
    Nothing,
    Registered,
    Gone,
}

struct Service {
    def: ServiceDef,
    want: Want,
    registered: bool,
    /// The status to send next, with its output; None when the agent is up to date.
    pending: Option<(CheckStatus, String)>,
    last_status: CheckStatus,
    maintenance_sent: bool,
    /// `/v1/agent/check/update/<check id>`, built once: it is sent every check.
    update_path: String,
}

pub struct Worker {
    client: Client,
    services: BTreeMap<String, Service>,
    maintenance: bool,
    backoff: Duration,
    retry_at: Option<Instant>,
    /// Whether the last call reached the agent; None before the first call.
    link_ok: Option<bool>,
    /// The last HTTP error logged, so a retried refusal is not logged again and again.
    last_refusal: Option<(String, u16)>,
    next_heartbeat: Option<Instant>,
    metrics: Option<Arc<Metrics>>,
    /// Each service's registration state, for `pilot status`.
    states: States,
    /// Jobs whose service the agent forgets right after registering it (logged once).
    forgetful: BTreeSet<String>,
}

/// What the agent knows of one job's service, for `pilot status` and the supervisor.
#[derive(Debug, Clone, Default)]
pub struct ServiceState {
    /// e.g. "registered as ID (passing)", "registering as ID", "... failed: why".
    pub text: String,
    /// The agent has the service, or a registration is in flight: a stop must wait for the
    /// deregistration, or the service would outlive the container.
    pub at_agent: bool,
}

/// job → its service's state, shared with the supervisor.
pub type States = Arc<Mutex<BTreeMap<String, ServiceState>>>;

impl Worker {
    pub fn new(client: Client, defs: Vec<ServiceDef>, metrics: Option<Arc<Metrics>>, states: States) -> Worker {
        let next_heartbeat = defs.iter().any(|d| d.heartbeat.is_some()).then(Instant::now);
        let services = defs
            .into_iter()
            .map(|def| {
                let last_status = def.initial_status.clone().unwrap_or(CheckStatus::Critical);
                let update_path = format!("/v1/agent/check/update/{}", def.check_id);
                (
                    def.job.clone(),
                    Service {
                        def,
                        want: Want::Nothing,
                        registered: false,
                        pending: None,
                        last_status,
                        maintenance_sent: false,
                        update_path,
                    },
                )
            })
            .collect();
        Worker {
            client,
            services,
            maintenance: false,
            backoff: BACKOFF_MIN,
            retry_at: None,
            link_ok: None,
            last_refusal: None,
            next_heartbeat,
            metrics,
            states,
            forgetful: BTreeSet::new(),
        }
    }

    pub fn spawn(self, rx: Receiver<Command>) {
        std::thread::Builder::new().name("consul".into()).spawn(move || self.run(rx)).expect("spawn consul worker");
    }

    fn run(mut self, rx: Receiver<Command>) {
        loop {
            let wake = match (self.retry_at, self.next_heartbeat) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let cmd = match wake {
                Some(at) => match rx.recv_timeout(at.saturating_duration_since(Instant::now())) {
                    Ok(c) => Some(c),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => return,
                },
                None => match rx.recv() {
                    Ok(c) => Some(c),
                    Err(_) => return,
                },
            };
            let urgent = matches!(cmd, Some(Command::Stopped { .. }));
            self.heartbeat();
            let mut acks = Vec::new();
            if let Some(c) = cmd {
                self.apply(c, &mut acks);
            }
            // Within a backoff, only shutdown work goes out at once; the rest waits its turn.
            let due = self.retry_at.is_none_or(|at| Instant::now() >= at);
            if due || urgent {
                self.sync(urgent && !due);
            }
            for ack in acks {
                ack();
            }
        }
    }

    /// Services with a heartbeat (the telemetry endpoint) are passing while pilot lives.
    fn heartbeat(&mut self) {
        let Some(at) = self.next_heartbeat else { return };
        if Instant::now() < at {
            return;
        }
        let mut every = None;
        for s in self.services.values_mut() {
            if let (Some(h), true) = (s.def.heartbeat, s.want != Want::Gone) {
                s.want = Want::Registered;
                s.pending = Some((CheckStatus::Passing, "ok".into()));
                every = Some(h);
            }
        }
        self.next_heartbeat = every.map(|h| Instant::now() + h);
    }

    fn apply(&mut self, cmd: Command, acks: &mut Vec<Box<dyn FnOnce() + Send>>) {
        match cmd {
            Command::Health { job, passing, output } => {
                let Some(s) = self.services.get_mut(&job) else { return };
                if s.want == Want::Gone {
                    return;
                }
                let status = if passing { CheckStatus::Passing } else { CheckStatus::Critical };
                let output = if passing { "ok".to_string() } else { output.resolve() };
                s.want = Want::Registered;
                s.pending = Some((status, truncate(output)));
            }
            Command::Started { job } => {
                if let Some(s) = self.services.get_mut(&job)
                    && s.want == Want::Nothing
                    && let Some(st) = s.def.initial_status.clone()
                {
                    s.want = Want::Registered;
                    s.pending.get_or_insert((st, String::new()));
                }
            }
            Command::Stopped { job, ack } => {
                if let Some(s) = self.services.get_mut(&job) {
                    s.want = Want::Gone;
                    s.pending = None;
                }
                if let Some(a) = ack {
                    acks.push(a);
                }
            }
            Command::Maintenance { on } => {
                self.maintenance = on;
            }
        }
    }

    /// Bring the agent to the wanted state. `only_gone`: deregistrations only (inside a backoff).
    fn sync(&mut self, only_gone: bool) {
        let mut failed = false;
        let jobs: Vec<String> = self.services.keys().cloned().collect();
        for job in jobs {
            let want = self.services[&job].want.clone();
            let ok = match want {
                Want::Gone => self.deregister(&job),
                Want::Registered if !only_gone => self.reconcile(&job),
                _ => true,
            };
            failed |= !ok;
        }
        if only_gone {
            return;
        }
        if failed {
            self.retry_at = Some(Instant::now() + self.backoff);
            debug!("consul: retrying in {:?}", self.backoff);
            self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
        } else {
            self.retry_at = None;
            self.backoff = BACKOFF_MIN;
        }
    }

    /// Bring one service to its wanted state: registered, maintenance as wanted, the pending
    /// TTL status sent. A TTL update the agent answers with 404 means it no longer has the
    /// service: register again, but at most once per sync. An agent that forgets the service
    /// right after every registration (two agents behind one load-balanced address) would
    /// otherwise make this loop forever; instead the sync fails and the worker's backoff
    /// paces the retries (1 s doubling to 30 s).
    fn reconcile(&mut self, job: &str) -> bool {
        let mut registered_again = false;
        loop {
            if !self.services[job].registered && !self.register(job) {
                return false;
            }
            if !self.sync_maintenance(job) {
                return false;
            }
            let Some((status, output)) = self.services.get_mut(job).and_then(|s| s.pending.take()) else { return true };
            let s = &self.services[job];
            let body = TtlUpdate { status: &status, output: &output };
            let path = &s.update_path;
            let result = self.client.put_json(path, &body);
            let what = |w: &Worker| format!("updating the TTL check of {}", w.services[job].def.id);
            match self.answer(result, &what, job) {
                Some(r) if r.ok() => {
                    let s = self.services.get_mut(job).unwrap();
                    if s.last_status != status {
                        info!("consul: service {} is now {status}", s.def.id);
                    }
                    if self.forgetful.remove(job) {
                        info!("consul: the agent keeps service {} again", s.def.id);
                    }
                    // Written at every update, not only on a change: after a reload the old
                    // worker may still write this job's state, and the next update puts it right.
                    let state = format!("registered as {} ({status})", s.def.id);
                    s.last_status = status;
                    self.set_state(job, state, true);
                    return true;
                }
                Some(r) if r.status == 404 || (r.status == 500 && r.body.contains("nknown check")) => {
                    let s = self.services.get_mut(job).unwrap();
                    s.pending.get_or_insert((status, output));
                    s.registered = false;
                    s.maintenance_sent = false;
                    let id = s.def.id.clone();
                    if registered_again {
                        // Logged once when it starts, not on every retry.
                        if self.forgetful.insert(job.to_string()) {
                            warn!(
                                "consul: the agent forgets service {id} right after registering it (several agents behind one address?); retrying with backoff"
                            );
                        }
                        self.set_state(job, format!("registering as {id}: the agent keeps forgetting it"), true);
                        return false;
                    }
                    if !self.forgetful.contains(job) {
                        warn!(
                            "consul: the agent no longer knows service {id} (it restarted or reaped it): registering again"
                        );
                    }
                    registered_again = true;
                }
                _ => {
                    // Sent again at the retry, unless a newer result came in meanwhile.
                    self.services.get_mut(job).unwrap().pending.get_or_insert((status, output));
                    return false;
                }
            }
        }
    }

    fn register(&mut self, job: &str) -> bool {
        let s = &self.services[job];
        let status = s.pending.as_ref().map_or_else(|| s.last_status.clone(), |p| p.0.clone());
        let body = s.def.registration(&status);
        let what = format!("registering service {}", s.def.id);
        self.set_state(job, format!("registering as {}", s.def.id), true);
        match self.call(&what, job, |c| c.put_json("/v1/agent/service/register", &body)) {
            Some(r) if r.ok() => {
                let s = self.services.get_mut(job).unwrap();
                if self.forgetful.contains(job) {
                    debug!("consul: registered service {} again", s.def.id);
                } else {
                    info!("consul: registered service {} as {}:{} ({status})", s.def.id, s.def.address, s.def.port);
                }
                s.registered = true;
                s.last_status = status;
                // `pending` stays: the TTL update that follows carries the check's output.
                true
            }
            _ => false,
        }
    }

    fn sync_maintenance(&mut self, job: &str) -> bool {
        let s = &self.services[job];
        if s.maintenance_sent == self.maintenance {
            return true;
        }
        let on = self.maintenance;
        let path = format!("/v1/agent/service/maintenance/{}?enable={on}&reason=pilot+maintenance+mode", s.def.id);
        let what = format!("turning maintenance {} for {}", if on { "on" } else { "off" }, s.def.id);
        let id = s.def.id.clone();
        match self.call(&what, job, |c| c.put_empty(&path)) {
            Some(r) if r.ok() => {
                info!("consul: service {id} maintenance {}", if on { "on" } else { "off" });
                self.services.get_mut(job).unwrap().maintenance_sent = on;
                true
            }
            _ => false,
        }
    }

    fn deregister(&mut self, job: &str) -> bool {
        let s = &self.services[job];
        if !s.registered {
            return true;
        }
        let path = format!("/v1/agent/service/deregister/{}", s.def.id);
        let what = format!("deregistering service {}", s.def.id);
        let id = s.def.id.clone();
        match self.call(&what, job, |c| c.put_empty(&path)) {
            Some(r) if r.ok() || r.status == 404 => {
                info!("consul: deregistered service {id}");
                let s = self.services.get_mut(job).unwrap();
                s.registered = false;
                s.want = Want::Nothing;
                self.set_state(job, "deregistered".into(), false);
                true
            }
            _ => {
                warn!(
                    "consul: service {id} stays registered; the agent removes it once its check has been critical for deregisterCriticalServiceAfter"
                );
                let s = self.services.get_mut(job).unwrap();
                s.want = Want::Nothing;
                false
            }
        }
    }

    fn set_state(&self, job: &str, text: String, at_agent: bool) {
        self.states.lock().unwrap_or_else(|e| e.into_inner()).insert(job.to_string(), ServiceState { text, at_agent });
    }

    /// One call for `job`'s service, with the logging policy: connection trouble is logged
    /// when it starts and when it ends; an HTTP refusal once per change, with its meaning.
    fn call(&mut self, what: &str, job: &str, f: impl FnOnce(&Client) -> Result<Reply, Failure>) -> Option<Reply> {
        let result = f(&self.client);
        self.answer(result, &|_: &Worker| what.to_string(), job)
    }

    /// The logging policy of [`Worker::call`] for a call already made; `what` is only
    /// formatted when there is something to log.
    fn answer(&mut self, result: Result<Reply, Failure>, what: &dyn Fn(&Worker) -> String, job: &str) -> Option<Reply> {
        let failed = match &result {
            Err(e) => Some(e.to_string()),
            Ok(r) if !r.ok() && r.status != 404 => Some(format!("HTTP {}: {}", r.status, r.body.trim())),
            Ok(_) => None,
        };
        if let Some(why) = failed {
            if let Some(m) = &self.metrics {
                m.consul_errors.inc();
            }
            let text = format!("{} failed: {why}", what(self));
            self.set_state(job, text, self.services[job].registered);
        }
        match result {
            Err(e) => {
                if self.link_ok != Some(false) {
                    warn!("consul: {}: {e}; retrying with backoff (payload unaffected)", what(self));
                }
                self.link_ok = Some(false);
                None
            }
            Ok(r) => {
                if self.link_ok == Some(false) {
                    info!("consul: agent at {} reachable again", self.client.address.display());
                }
                self.link_ok = Some(true);
                let refusal = (!r.ok() && r.status != 404).then(|| (what(self), r.status));
                if let Some((what, _)) = refusal.as_ref().filter(|_| refusal != self.last_refusal) {
                    explain(what, &self.services[job].def.name, &r);
                }
                if refusal.is_some() || r.ok() {
                    self.last_refusal = refusal;
                }
                Some(r)
            }
        }
    }
}

/// Log an HTTP error from the agent with what to do about it.
pub fn explain(what: &str, service: &str, r: &Reply) {
    let body = r.body.trim();
    if r.status == 403 {
        let need = if what.starts_with("watching") {
            format!("service:read on \"{service}\" and node:read")
        } else {
            format!("service:write on \"{service}\"")
        };
        error!("consul: {what}: permission denied (403: {body}); the ACL token needs {need}");
    } else {
        warn!("consul: {what}: HTTP {}: {body}", r.status);
    }
}

fn truncate(mut s: String) -> String {
    if keep_tail(&mut s, NOTE_LIMIT) { format!("...{s}") } else { s }
}

/// Keep the last `limit` bytes of `s` (from a character boundary); true if any went.
pub fn keep_tail(s: &mut String, limit: usize) -> bool {
    if s.len() <= limit {
        return false;
    }
    let mut cut = s.len() - limit;
    while !s.is_char_boundary(cut) {
        cut += 1;
    }
    s.drain(..cut);
    true
}

/// Start the worker; the returned sender is how the supervisor talks to it.
pub fn start(client: Client, defs: Vec<ServiceDef>, metrics: Option<Arc<Metrics>>, states: States) -> Sender<Command> {
    let (tx, rx) = std::sync::mpsc::channel();
    Worker::new(client, defs, metrics, states).spawn(rx);
    tx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_output_keeps_its_tail_from_a_character_boundary() {
        let mut s = "é".repeat(3000); // 6000 bytes of two-byte characters
        assert!(keep_tail(&mut s, 4095));
        assert_eq!(s.len(), 4094, "cut after the first whole character");
        assert!(s.chars().all(|c| c == 'é'));
        assert!(!keep_tail(&mut s, 4095));
        let note = truncate(format!("start\n{}\nend", "x".repeat(5000)));
        assert!(note.starts_with("...") && note.ends_with("x\nend") && note.len() == 3 + NOTE_LIMIT, "{}", &note[..20]);
    }
}
