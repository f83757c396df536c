//! What pilot learns from HTCondor when it runs as (or inside) a job: the job ad and the
//! machine ad the starter writes (`$_CONDOR_JOB_AD`, `$_CONDOR_MACHINE_AD`). Their fields go
//! into Consul service meta, so monitoring can tie a registered container to its job, and
//! into templates as `.CONDOR_JOB_<Attr>` / `.CONDOR_MACHINE_<Attr>` (names as written in
//! the ad, e.g. `{{ .CONDOR_JOB_GlobalJobId }}`).

pub mod chirp;
pub mod classad;

use classad::Ad;
use std::collections::BTreeMap;

/// The largest ad pilot reads. Job and machine ads are a few KB; anything near this is not
/// an ad, and reading it would only cost memory.
pub const AD_MAX: u64 = 1 << 20;

/// How long reading one ad may take before pilot gives up on it (a hung file system).
pub const AD_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

#[derive(Debug, Default, Clone)]
pub struct Ads {
    pub job: Option<Ad>,
    pub machine: Option<Ad>,
}

impl Ads {
    /// Read the ads the environment points at. A missing or unreadable ad is not an error
    /// for the payload: it is reported and left out. Only regular files up to [`AD_MAX`]
    /// are read; a FIFO or device is refused without waiting on it, and a read that does not
    /// finish within [`AD_WAIT`] is given up (see [`crate::fsread`]).
    pub fn load(env: &dyn Fn(&str) -> Option<String>) -> (Ads, Vec<String>) {
        let mut problems = Vec::new();
        let mut read = |var: &str| {
            let path = env(var).filter(|p| !p.is_empty())?;
            let parsed = crate::fsread::read_regular_within(std::path::Path::new(&path), AD_MAX, AD_WAIT)
                .map_err(|e| format!("{var}: {e}"))
                .and_then(|t| classad::parse(&t, &path));
            parsed.map_err(|e| problems.push(e)).ok()
        };
        let ads = Ads { job: read("_CONDOR_JOB_AD"), machine: read("_CONDOR_MACHINE_AD") };
        (ads, problems)
    }

    /// Service meta: the job's identity and where it runs.
    pub fn meta(&self) -> BTreeMap<String, String> {
        let mut m = BTreeMap::new();
        if let Some(job) = &self.job {
            let mut put = |k: &str, v: Option<String>| {
                if let Some(v) = v {
                    m.insert(k.to_string(), v);
                }
            };
            put("htcondor_global_job_id", job.text("GlobalJobId"));
            put("htcondor_owner", job.text("Owner"));
            if let (Some(c), Some(p)) = (job.text("ClusterId"), job.text("ProcId")) {
                put("htcondor_job_id", Some(format!("{c}.{p}")));
            }
        }
        if let Some(name) = self.machine.as_ref().and_then(|a| a.text("Name")) {
            m.insert("htcondor_slot_name".into(), name);
        }
        // Consul caps meta values at 512 characters.
        m.values_mut().for_each(|v| v.truncate(512));
        m
    }

    /// The signals HTCondor may stop this job with besides SIGTERM: its `KillSig` (vacate)
    /// and `RemoveKillSig` (condor_rm), each a number or a name.
    pub fn stop_signals(&self) -> Vec<i32> {
        let Some(job) = &self.job else { return Vec::new() };
        let mut v: Vec<i32> = ["KillSig", "RemoveKillSig"]
            .iter()
            .filter_map(|a| job.text(a))
            .filter_map(|s| crate::init::signals::from_name(&s))
            .filter(|s| *s != libc::SIGTERM)
            .collect();
        v.dedup();
        v
    }

    /// How long HTCondor waits between the stop signal and SIGKILL: the machine's
    /// `MachineMaxVacateTime`, lowered by the job's `JobMaxVacateTime` (integer seconds).
    pub fn vacate_time(&self) -> Option<std::time::Duration> {
        let secs = |ad: &Option<Ad>, attr: &str| match ad.as_ref()?.get(attr)? {
            classad::Value::Int(n) if *n >= 0 => Some(*n as u64),
            _ => None,
        };
        let t = match (secs(&self.machine, "MachineMaxVacateTime"), secs(&self.job, "JobMaxVacateTime")) {
            (Some(m), Some(j)) => m.min(j),
            (m, j) => m.or(j)?,
        };
        Some(std::time::Duration::from_secs(t))
    }

    /// Template variables: every literal attribute of both ads.
    pub fn template_vars(&self) -> Vec<(String, String)> {
        let mut v = Vec::new();
        for (prefix, ad) in [("CONDOR_JOB_", &self.job), ("CONDOR_MACHINE_", &self.machine)] {
            if let Some(ad) = ad {
                v.extend(
                    ad.iter()
                        .filter(|(_, val)| **val != classad::Value::Undefined)
                        .map(|(k, val)| (format!("{prefix}{k}"), val.text())),
                );
            }
        }
        v
    }
}
