//! pilot as a Consul citizen: where the agent is (`address`), how to talk to it (`http`),
//! what to register (`service`, `interfaces`), the worker thread that registers, reports
//! health and deregisters (`worker`), the watch threads (`watch`) and KV reads for
//! templates (`kv`). Nothing here runs unless the config has a job with a `port` or a watch.

pub mod address;
pub mod http;
pub mod interfaces;
pub mod kv;
mod resolve;
pub mod service;
pub mod watch;
pub mod worker;

use crate::config::Config;
use crate::events::Event;
use crate::telemetry::Metrics;
use log::{error, info};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::mpsc::Sender;

pub use worker::{Command, Output};

/// The supervisor's side of the Consul worker and of the watches of one config. Dropping
/// it (a reload replaced the config, or pilot exits) ends them: the worker when its channel
/// closes, the watches through their stop signal, which also interrupts a blocking query in
/// flight, so an old watch is gone within moments (at most a TCP connect's timeout, 5 s).
pub struct Handle {
    pub tx: Sender<Command>,
    /// Jobs that have a service: their stop waits for the deregistration.
    pub services: BTreeSet<String>,
    /// Each service's job and address, for ContainerPilot's `CONTAINERPILOT_<JOB>_IP`.
    pub addresses: Vec<(String, std::net::IpAddr)>,
    /// Set on drop: this config's watch threads stop.
    watches: watch::Stop,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.watches.stop();
    }
}

impl Handle {
    /// `CONTAINERPILOT_<JOB>_IP` for every registered job (upper case, `-` as `_`), which
    /// ContainerPilot sets in its jobs' environment.
    pub fn ip_env(&self) -> Vec<(String, String)> {
        self.addresses
            .iter()
            .map(|(job, ip)| (format!("CONTAINERPILOT_{}_IP", job.to_uppercase().replace('-', "_")), ip.to_string()))
            .collect()
    }
}

fn env(k: &str) -> Option<String> {
    std::env::var(k).ok()
}

/// The client for the configured agent, or why there is none.
pub fn client(stanza: Option<&crate::config::Consul>) -> Result<http::Client, String> {
    let address = address::AgentAddress::resolve(stanza, &env)?;
    http::Client::new(&address)
}

/// What the rest of pilot gives the Consul side when it starts.
pub struct Setup<'a> {
    pub identity: &'a service::Identity,
    /// Added to every service's meta (e.g. the HTCondor job ad's fields).
    pub extra_meta: &'a BTreeMap<String, String>,
    pub metrics: Option<Arc<Metrics>>,
    /// Where telemetry is served, to register as the `containerpilot` service.
    pub telemetry: Option<(SocketAddr, Vec<String>)>,
    pub states: worker::States,
}

/// Start the worker and the watches. `publish` feeds watch events into the supervisor and
/// returns false once it is gone. Consul trouble is logged and never stops the payload.
pub fn start(
    config: &Config,
    setup: &Setup,
    publish: impl Fn(Event) -> bool + Clone + Send + 'static,
) -> Option<Handle> {
    let with_port: Vec<_> = config.jobs.iter().filter(|j| j.port != 0).collect();
    if with_port.is_empty() && config.watches.is_empty() && setup.telemetry.is_none() {
        return None;
    }
    let client = match client(config.consul.as_ref()) {
        Ok(c) => c,
        Err(e) => {
            error!("consul: {e}: running without Consul (no registrations, no watches)");
            return None;
        }
    };
    info!("consul: agent at {}", client.address.display());
    let addrs = interfaces::local_addresses();
    let mut defs = Vec::new();
    for job in with_port {
        match interfaces::choose(&job.interfaces, &addrs) {
            Ok(ip) => defs.extend(service::ServiceDef::for_job(job, setup.identity, ip, setup.extra_meta)),
            Err(e) => error!("job {}: {e}: its service is not registered", job.name),
        }
    }
    let addresses = defs.iter().map(|d| (d.job.clone(), d.address)).collect();
    if let Some((addr, tags)) = &setup.telemetry {
        defs.push(service::ServiceDef::for_telemetry(tags, setup.identity, *addr, setup.extra_meta));
    }
    let services = defs.iter().map(|d| d.job.clone()).collect();
    let tx = worker::start(client.clone(), defs, setup.metrics.clone(), setup.states.clone());
    // The telemetry service has no job to start it.
    if setup.telemetry.is_some() {
        let _ = tx.send(Command::Started { job: service::TELEMETRY_JOB.into() });
    }
    let watches = watch::Stop::default();
    for w in &config.watches {
        // Each watch has its own client (its own connections), so stopping it can cut its
        // blocking query without touching the worker's calls.
        watch::spawn(client.separate(), w.clone(), setup.metrics.clone(), publish.clone(), watches.clone());
    }
    Some(Handle { tx, services, addresses, watches })
}
