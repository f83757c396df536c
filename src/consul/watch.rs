//! `watches`: follow a service's passing instances and publish `changed`, then `healthy` or
//! `unhealthy`, from `watch.<name>` — ContainerPilot's events (docs/containerpilot.md, "Watches").
//!
//! ContainerPilot polls every `interval`. pilot uses Consul's blocking queries instead, so a
//! change is seen at once, and keeps `interval` as the least time between two queries so a
//! busy service cannot make it hammer the agent. Reads use `?stale`: any server may answer,
//! so watches keep working while the cluster elects a new leader.

use super::http::Client;
use super::worker::explain;
use crate::config::Watch;
use crate::events::{Code, Event};
use log::{debug, info, warn};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// How long one blocking query may wait on the agent; the agent adds up to 1/16 of jitter.
const BLOCK: Duration = Duration::from_secs(60);
const BACKOFF_MIN: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// The stop signal of one config's watches, owned by its `consul::Handle`. Stopping wakes
/// a watch sleeping between queries and shuts down the clients of the watches, which cuts
/// a blocking query in flight; the thread then sees the signal and ends.
#[derive(Clone, Default)]
pub struct Stop(Arc<StopInner>);

#[derive(Default)]
struct StopInner {
    stopped: Mutex<bool>,
    wake: Condvar,
    /// The watches' clients, shut down on stop.
    clients: Mutex<Vec<Client>>,
}

impl Stop {
    pub fn stop(&self) {
        *self.0.stopped.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.0.wake.notify_all();
        for c in self.0.clients.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
            c.shutdown();
        }
    }

    pub fn is_stopped(&self) -> bool {
        *self.0.stopped.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sleep for `d` unless stopped first; true if stopped.
    fn sleep(&self, d: Duration) -> bool {
        let guard = self.0.stopped.lock().unwrap_or_else(|e| e.into_inner());
        let (guard, _) =
            self.0.wake.wait_timeout_while(guard, d, |stopped| !*stopped).unwrap_or_else(|e| e.into_inner());
        *guard
    }

    /// Shut `client` down when this stops (at once if it already has).
    fn own(&self, client: &Client) {
        let mut clients = self.0.clients.lock().unwrap_or_else(|e| e.into_inner());
        if self.is_stopped() {
            client.shutdown();
        } else {
            clients.push(client.clone());
        }
    }
}

/// What went wrong with the last query, to log a problem once per change, not per retry.
#[derive(Debug, Clone, PartialEq)]
enum Problem {
    Unreachable,
    Refused(u16),
    BadAnswer,
}

/// One instance as ContainerPilot compares them (tags and meta changes are not changes).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Instance {
    pub id: String,
    pub address: String,
    pub port: u64,
}

/// The parts of one `/v1/health/service` entry a watch compares; everything else (checks,
/// tags, meta, which make up most of a big answer) is skipped while parsing, so memory
/// follows the number of instances, not the size of the answer.
#[derive(serde::Deserialize)]
struct Entry {
    #[serde(rename = "Node", default)]
    node: NodePart,
    #[serde(rename = "Service", default)]
    service: ServicePart,
}

#[derive(serde::Deserialize, Default)]
struct NodePart {
    #[serde(rename = "Address", default)]
    address: Option<String>,
}

#[derive(serde::Deserialize, Default)]
struct ServicePart {
    #[serde(rename = "ID", default)]
    id: Option<String>,
    #[serde(rename = "Address", default)]
    address: Option<String>,
    #[serde(rename = "Port", default)]
    port: Option<u64>,
}

pub fn parse_instances(body: &str) -> Result<Vec<Instance>, String> {
    let list: Vec<Entry> = serde_json::from_str(body).map_err(|e| format!("unexpected answer: {e}"))?;
    let mut out: Vec<Instance> = list
        .into_iter()
        .map(|e| {
            let address = match e.service.address.filter(|a| !a.is_empty()) {
                Some(a) => a,
                // An empty service address means the node's.
                None => e.node.address.unwrap_or_default(),
            };
            Instance { id: e.service.id.unwrap_or_default(), address, port: e.service.port.unwrap_or(0) }
        })
        .collect();
    out.sort();
    Ok(out)
}

/// What a new answer means: the events to publish, given the last known instances (None
/// before the first answer: an empty service at start-up gives no event, as in CP).
pub fn events_for(source: &str, last: Option<&[Instance]>, now: &[Instance]) -> Vec<Event> {
    let changed = match last {
        None => !now.is_empty(),
        Some(l) => l != now,
    };
    if !changed {
        return Vec::new();
    }
    let health = if now.is_empty() { Code::Unhealthy } else { Code::Healthy };
    vec![Event::new(Code::Changed, source), Event::new(health, source)]
}

/// The next index for a blocking query, as Consul's docs ask: start over if it went
/// backwards (the servers' state was reset), never 0.
pub fn next_index(last: u64, got: Option<u64>) -> u64 {
    match got {
        Some(i) if i < last => 0,
        Some(i) => i.max(1),
        None => 0,
    }
}

fn query(w: &Watch, index: u64) -> String {
    let mut q = format!("/v1/health/service/{}?passing=1&stale", urlencode(&w.name));
    if let Some(t) = &w.tag {
        q.push_str(&format!("&tag={}", urlencode(t)));
    }
    if let Some(dc) = &w.dc {
        q.push_str(&format!("&dc={}", urlencode(dc)));
    }
    if index > 0 {
        q.push_str(&format!("&index={index}&wait={}s", BLOCK.as_secs()));
    }
    q
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Run one watch on its own thread until `stop` (its config was replaced or pilot exits).
pub fn spawn(
    client: Client,
    w: Watch,
    metrics: Option<std::sync::Arc<crate::telemetry::Metrics>>,
    publish: impl Fn(Event) -> bool + Send + 'static,
    stop: Stop,
) {
    let name = format!("watch.{}", w.name);
    stop.own(&client);
    let shown = name.clone();
    let spawned = std::thread::Builder::new().name(name.clone()).spawn(move || {
        let mut last: Option<Vec<Instance>> = None;
        let mut index = 0u64;
        // At least a second between failing queries, whatever the interval.
        let mut backoff = w.interval.max(BACKOFF_MIN);
        let mut problem: Option<Problem> = None;
        let what = format!("watching {}", w.name);
        while !stop.is_stopped() {
            let started = Instant::now();
            let timeout =
                if index > 0 { BLOCK + BLOCK / 16 + Duration::from_secs(5) } else { super::http::CALL_TIMEOUT };
            let result = client.get(&query(&w, index), Some(timeout));
            if stop.is_stopped() {
                break;
            }
            let outcome = match result {
                Err(e) => Err((Problem::Unreachable, e.to_string(), None)),
                Ok(r) if !r.ok() => Err((Problem::Refused(r.status), format!("HTTP {}", r.status), Some(r))),
                Ok(r) => parse_instances(&r.body).map(|now| (now, r.index)).map_err(|e| (Problem::BadAnswer, e, None)),
            };
            match outcome {
                Ok((now, got)) => {
                    if problem.take().is_some() {
                        info!("consul: {what}: answering again");
                    }
                    backoff = w.interval.max(BACKOFF_MIN);
                    index = next_index(index, got);
                    debug!("{name}: {} passing instance(s), index {index}", now.len());
                    if let Some(m) = &metrics {
                        m.watch_instances.with_label_values(&[w.name.as_str()]).set(now.len() as f64);
                    }
                    for ev in events_for(&name, last.as_deref(), &now) {
                        if !publish(ev) {
                            return;
                        }
                    }
                    last = Some(now);
                    // At most one query per interval, and never more than one a second: an
                    // agent that answers at once (no blocking) must not be hammered.
                    if stop.sleep(w.interval.max(BACKOFF_MIN).saturating_sub(started.elapsed())) {
                        break;
                    }
                }
                Err((kind, e, reply)) => {
                    // Logged once per change of problem, not on every retry.
                    if problem.as_ref() != Some(&kind) {
                        match &reply {
                            Some(r) => explain(&what, &w.name, r),
                            None => warn!("consul: {what}: {e}; no events until it answers (retrying with backoff)"),
                        }
                        problem = Some(kind);
                    }
                    index = 0;
                    if stop.sleep(backoff) {
                        break;
                    }
                    backoff = backoff.saturating_mul(2).min(BACKOFF_MAX.max(w.interval));
                }
            }
        }
        debug!("{name}: stopped (its config was replaced)");
    });
    if let Err(e) = spawned {
        warn!("consul: cannot start the thread of {shown}: {e}; it gives no events");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inst(id: &str, port: u64) -> Instance {
        Instance { id: id.into(), address: "10.0.0.1".into(), port }
    }

    #[test]
    fn first_answer_and_changes() {
        assert!(events_for("watch.x", None, &[]).is_empty(), "no event for an empty service at start-up");
        let ev = events_for("watch.x", None, &[inst("a", 1)]);
        assert_eq!(ev.iter().map(|e| e.code).collect::<Vec<_>>(), [Code::Changed, Code::Healthy]);
        assert!(events_for("watch.x", Some(&[inst("a", 1)]), &[inst("a", 1)]).is_empty());
        let ev = events_for("watch.x", Some(&[inst("a", 1)]), &[]);
        assert_eq!(ev.iter().map(|e| e.code).collect::<Vec<_>>(), [Code::Changed, Code::Unhealthy]);
        let ev = events_for("watch.x", Some(&[inst("a", 1)]), &[inst("a", 2)]);
        assert_eq!(ev[0].code, Code::Changed);
    }

    #[test]
    fn index_resets_when_it_goes_backwards() {
        assert_eq!(next_index(0, Some(10)), 10);
        assert_eq!(next_index(10, Some(5)), 0);
        assert_eq!(next_index(0, Some(0)), 1);
        assert_eq!(next_index(10, None), 0);
    }

    #[test]
    fn parses_health_answers() {
        let body = r#"[{"Node":{"Address":"10.0.0.9"},"Service":{"ID":"b","Address":"","Port":80}},
                      {"Node":{"Address":"10.0.0.9"},"Service":{"ID":"a","Address":"10.0.0.2","Port":81}}]"#;
        let v = parse_instances(body).unwrap();
        assert_eq!(v[0], Instance { id: "a".into(), address: "10.0.0.2".into(), port: 81 });
        assert_eq!(v[1].address, "10.0.0.9", "empty service address means the node's");
    }
}
