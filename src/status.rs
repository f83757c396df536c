//! The status document: what `GET /v3/status` answers and `pilot status` prints. One type
//! for both ends, so the server cannot write a field the client reads under another name.
//! The JSON field names are part of pilot's interface (scripts read them): keep them.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub version: String,
    pub pid: u32,
    pub maintenance: bool,
    /// Pilot is stopping for good (a reload is `reloading`, not this).
    pub shutting_down: bool,
    /// A reload is stopping the old jobs; the new config's start when they are gone.
    #[serde(default)]
    pub reloading: bool,
    pub jobs: Vec<JobStatus>,
    /// The telemetry endpoint's Consul registration, if there is one.
    pub telemetry: Option<String>,
    pub orphans_reaped: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobStatus {
    pub name: String,
    pub state: JobState,
    pub pid: Option<i32>,
    /// How often the job's exec was started (by its trigger, interval or a restart).
    pub runs: u32,
    /// How often it was run again because it exited (its `restarts` policy): not the runs
    /// of an interval or `each` job.
    pub restarts: u32,
    pub last_exit: Option<String>,
    /// None for a job without a health check.
    pub health: Option<HealthState>,
    /// The service's state in Consul, if it has one.
    pub consul: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum JobState {
    #[serde(rename = "running")]
    Running,
    /// Started before, waiting for its next trigger or restart.
    #[serde(rename = "waiting")]
    Waiting,
    #[serde(rename = "not started")]
    NotStarted,
    #[serde(rename = "stopping")]
    Stopping,
    #[serde(rename = "deregistering")]
    Deregistering,
    #[serde(rename = "done")]
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthState {
    Unknown,
    Healthy,
    Unhealthy,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Running => "running",
            JobState::Waiting => "waiting",
            JobState::NotStarted => "not started",
            JobState::Stopping => "stopping",
            JobState::Deregistering => "deregistering",
            JobState::Done => "done",
        }
    }
}

impl HealthState {
    pub fn as_str(self) -> &'static str {
        match self {
            HealthState::Unknown => "unknown",
            HealthState::Healthy => "healthy",
            HealthState::Unhealthy => "unhealthy",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The names users' scripts read stay as they were when the document was built by hand.
    #[test]
    fn json_field_names_are_stable() {
        let s = Status {
            version: "0.1.0".into(),
            pid: 7,
            maintenance: false,
            shutting_down: true,
            reloading: false,
            jobs: vec![JobStatus {
                name: "web".into(),
                state: JobState::NotStarted,
                pid: None,
                runs: 2,
                restarts: 1,
                last_exit: Some("exit status 1".into()),
                health: Some(HealthState::Healthy),
                consul: None,
            }],
            telemetry: None,
            orphans_reaped: 3,
        };
        let v = serde_json::to_value(&s).unwrap();
        for k in ["version", "pid", "maintenance", "shutting_down", "jobs", "telemetry", "orphans_reaped"] {
            assert!(v.get(k).is_some(), "{k} in {v}");
        }
        let job = &v["jobs"][0];
        for k in ["name", "state", "pid", "runs", "restarts", "last_exit", "health", "consul"] {
            assert!(job.get(k).is_some(), "{k} in {job}");
        }
        assert_eq!(job["state"], "not started");
        assert_eq!(job["health"], "healthy");
        assert_eq!(serde_json::from_value::<Status>(v).unwrap(), s);
    }

    /// An older pilot's answer (no `reloading`) still reads.
    #[test]
    fn older_documents_still_parse() {
        let text = r#"{"version":"0.1.0","pid":1,"maintenance":false,"shutting_down":false,"jobs":[],
                       "telemetry":null,"orphans_reaped":0}"#;
        assert!(!serde_json::from_str::<Status>(text).unwrap().reloading);
    }
}
