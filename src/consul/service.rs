//! What pilot registers: a service per job with a `port`, with an ID unique per container.
//!
//! ContainerPilot's ID is `<name>-<hostname>`. Under Apptainer there is no network or UTS
//! namespace, so every container on a worker node has the node's hostname and the IDs
//! collide: the last registration wins and one deregistration removes everybody's service.
//! pilot's ID is `<name>-<hostname>-<instance>`, where the instance is, first found:
//! `$PILOT_INSTANCE`; the HTCondor slot (`$_CONDOR_SLOT`, one job per slot at a time, so a
//! restarted job replaces its predecessor's leftover); the Apptainer instance name
//! (`$APPTAINER_INSTANCE`); else 8 random hex digits drawn once at start. The parts are also
//! in the service's meta so monitoring can group by node or slot.

use crate::config::{CheckStatus, Job};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

pub const TELEMETRY_SERVICE: &str = "containerpilot";
/// The worker's key for the telemetry service (not a valid job name, so never a job's).
pub const TELEMETRY_JOB: &str = "<telemetry>";

/// Without a per-job setting, a service whose check stays critical this long is removed by
/// Consul itself: so a container that was SIGKILLed (no chance to deregister) disappears.
/// Long enough that a live but failing service stays visible for a while (and pilot
/// re-registers one the agent reaped when its next check result comes).
pub const DEFAULT_DEREGISTER_CRITICAL_AFTER: Duration = Duration::from_secs(600);

#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    pub hostname: String,
    pub instance: String,
    /// Where `instance` came from: PILOT_INSTANCE, htcondor-slot, apptainer-instance, random.
    pub source: &'static str,
    pub slot: Option<String>,
}

impl Identity {
    pub fn detect(env: &dyn Fn(&str) -> Option<String>) -> Identity {
        let var = |k: &str| env(k).map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
        let hostname =
            nix::unistd::gethostname().ok().and_then(|h| h.into_string().ok()).unwrap_or_else(|| "localhost".into());
        let slot = var("_CONDOR_SLOT");
        let (instance, source) = if let Some(i) = var("PILOT_INSTANCE") {
            (i, "PILOT_INSTANCE")
        } else if let Some(s) = &slot {
            (s.clone(), "htcondor-slot")
        } else if let Some(i) = var("APPTAINER_INSTANCE").or_else(|| var("SINGULARITY_INSTANCE")) {
            (i, "apptainer-instance")
        } else {
            (random_hex(), "random")
        };
        Identity { hostname, instance: sanitize(&instance), source, slot }
    }

    pub fn service_id(&self, name: &str) -> String {
        sanitize(&format!("{name}-{}-{}", self.hostname, self.instance))
    }

    fn meta(&self) -> BTreeMap<String, String> {
        let mut m = BTreeMap::new();
        m.insert("pilot_hostname".into(), self.hostname.clone());
        m.insert("pilot_instance".into(), self.instance.clone());
        m.insert("pilot_instance_source".into(), self.source.into());
        if let Some(s) = &self.slot {
            m.insert("htcondor_slot".into(), s.clone());
        }
        m
    }
}

/// IDs travel in URL paths: keep them to characters that need no escaping.
fn sanitize(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') { c } else { '-' }).collect()
}

fn random_hex() -> String {
    let mut b = [0u8; 4];
    if std::fs::File::open("/dev/urandom").and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b)).is_err() {
        // No /dev/urandom (a minimal image): time and pid are unique enough per host.
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        b = (t.subsec_nanos() ^ std::process::id().rotate_left(16)).to_be_bytes();
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A Go duration string, as the agent wants durations (a bare number means nanoseconds).
pub fn go_duration(d: Duration) -> String {
    if d.subsec_millis() == 0 { format!("{}s", d.as_secs()) } else { format!("{}ms", d.as_millis()) }
}

/// Everything needed to (re-)register one job's service.
#[derive(Debug, Clone)]
pub struct ServiceDef {
    pub job: String,
    pub id: String,
    pub name: String,
    pub check_id: String,
    pub address: IpAddr,
    pub port: u16,
    pub tags: Vec<String>,
    pub meta: BTreeMap<String, String>,
    pub ttl: Duration,
    pub enable_tag_override: bool,
    pub deregister_critical_after: Duration,
    /// `initial_status`: register at once with this status instead of at the first check.
    pub initial_status: Option<CheckStatus>,
    /// Passing every this often while pilot lives (the telemetry endpoint has no check).
    pub heartbeat: Option<Duration>,
}

impl ServiceDef {
    pub fn for_job(
        job: &Job,
        identity: &Identity,
        address: IpAddr,
        extra_meta: &BTreeMap<String, String>,
    ) -> Option<ServiceDef> {
        if job.port == 0 {
            return None;
        }
        let id = identity.service_id(&job.name);
        let mut meta = identity.meta();
        meta.extend(extra_meta.iter().map(|(k, v)| (k.clone(), v.clone())));
        meta.extend(job.meta.iter().map(|(k, v)| (k.clone(), v.clone())));
        Some(ServiceDef {
            job: job.name.clone(),
            check_id: format!("service:{id}"),
            id,
            name: job.name.clone(),
            address,
            port: job.port,
            tags: job.tags.clone(),
            meta,
            ttl: job.health.as_ref().map(|h| h.ttl).unwrap_or(Duration::from_secs(30)),
            enable_tag_override: job.enable_tag_override,
            deregister_critical_after: job.deregister_critical_after.unwrap_or(DEFAULT_DEREGISTER_CRITICAL_AFTER),
            initial_status: job.initial_status.clone(),
            heartbeat: None,
        })
    }

    /// The telemetry endpoint as ContainerPilot registers it: service `containerpilot`, so
    /// Prometheus' `consul_sd_configs` finds every container's metrics.
    pub fn for_telemetry(
        tags: &[String],
        identity: &Identity,
        addr: std::net::SocketAddr,
        extra_meta: &BTreeMap<String, String>,
    ) -> ServiceDef {
        let id = identity.service_id(TELEMETRY_SERVICE);
        let mut meta = identity.meta();
        meta.extend(extra_meta.iter().map(|(k, v)| (k.clone(), v.clone())));
        ServiceDef {
            job: TELEMETRY_JOB.into(),
            check_id: format!("service:{id}"),
            id,
            name: TELEMETRY_SERVICE.into(),
            address: addr.ip(),
            port: addr.port(),
            tags: tags.to_vec(),
            meta,
            ttl: Duration::from_secs(15),
            enable_tag_override: false,
            deregister_critical_after: DEFAULT_DEREGISTER_CRITICAL_AFTER,
            initial_status: Some(CheckStatus::Passing),
            heartbeat: Some(Duration::from_secs(5)),
        }
    }

    /// The body of `PUT /v1/agent/service/register`. (The agent rejects an `Output` here:
    /// a check's output is sent with the TTL update that follows.)
    pub fn registration(&self, status: &CheckStatus) -> Value {
        let mut check = Map::new();
        check.insert("CheckID".into(), json!(self.check_id));
        check.insert("Name".into(), json!(format!("{} TTL", self.name)));
        check.insert("TTL".into(), json!(go_duration(self.ttl)));
        check.insert("Status".into(), json!(status));
        check.insert("Notes".into(), json!(format!("TTL for {} set by pilot", self.name)));
        if !self.deregister_critical_after.is_zero() {
            check.insert("DeregisterCriticalServiceAfter".into(), json!(go_duration(self.deregister_critical_after)));
        }
        json!({
            "ID": self.id,
            "Name": self.name,
            "Tags": self.tags,
            "Port": self.port,
            "Address": self.address.to_string(),
            "Meta": self.meta,
            "EnableTagOverride": self.enable_tag_override,
            "Check": Value::Object(check),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ident(vars: &[(&str, &str)]) -> Identity {
        let vars: Vec<(String, String)> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Identity::detect(&|k| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()))
    }

    #[test]
    fn instance_comes_from_the_batch_system_else_is_random() {
        let slot = ident(&[("_CONDOR_SLOT", "slot1_3"), ("APPTAINER_INSTANCE", "web")]);
        assert_eq!((slot.instance.as_str(), slot.source), ("slot1_3", "htcondor-slot"));
        assert!(slot.service_id("app").ends_with("-slot1_3"));
        let inst = ident(&[("APPTAINER_INSTANCE", "web 1")]);
        assert_eq!((inst.instance.as_str(), inst.source), ("web-1", "apptainer-instance"));
        let explicit = ident(&[("PILOT_INSTANCE", "x"), ("_CONDOR_SLOT", "slot1")]);
        assert_eq!(explicit.instance, "x");
        let a = ident(&[]);
        let b = ident(&[]);
        assert_eq!(a.source, "random");
        assert_eq!(a.instance.len(), 8);
        assert_ne!(a.instance, b.instance, "two containers on one host get two IDs");
    }

    #[test]
    fn durations_are_go_strings() {
        assert_eq!(go_duration(Duration::from_secs(10)), "10s");
        assert_eq!(go_duration(Duration::from_millis(1500)), "1500ms");
    }
}
