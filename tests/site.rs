//! The paper's site on one machine, end to end, with every part real: scripts/site.sh starts
//! a Consul agent and an HTCondor pool (Debian unstable's minicondor 25.x with Apptainer
//! 1.4.5, in the root scripts/make-sid-root.sh makes) and builds the pilot image; this test
//! submits real container-universe jobs to it, runs the paper's long-running worker node as
//! an Apptainer instance, breaks the site's pilot config (HTCondor's `apptainer test` must
//! stop the job with pilot's diagnostic), checks that Prometheus scrapes the worker node
//! through Consul, injects the paper's fault, and photographs the Consul UI with a headless
//! Chromium (docs/site.md shows the pictures).
//!
//! Every payload runs twice, under pilot and bare (`/bin/sh` as the executable in the same
//! image), and HTCondor's own history must record the same exit for both: pilot is
//! invisible to the accounting.

mod common;

use common::*;
use serde_json::Value;
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

const ROOT_MSG: &str = "the site test runs as root: it makes a Debian unstable root (mmdebstrap) and runs HTCondor and Apptainer inside it";

/// (JobStatus, ExitCode, ExitBySignal) as HTCondor's history records them.
type Record = (String, String, String);

/// The site of scripts/site.sh, taken down when the test ends (or fails).
struct Site {
    dir: PathBuf,
    consul: String,
}

impl Site {
    fn up() -> Site {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
        let static_pilot = static_pilot().display().to_string();
        // Kept between runs: the image inside is rebuilt only when pilot or the definition change.
        let dir = repo.join("target/site-test");
        let out = run_limited(
            Command::new(repo.join("scripts/site.sh"))
                .args(["up", "--prometheus"])
                .env("PILOT_SITE", &dir)
                .env("PILOT_STATIC", &static_pilot)
                .env("PILOT_CONSUL", common::consul::consul_bin())
                .env("PILOT_PROMETHEUS", common::prometheus_bin()),
            Duration::from_secs(1200),
        );
        let site = Site {
            consul: std::fs::read_to_string(dir.join("consul.addr")).unwrap_or_default().trim().to_string(),
            dir,
        };
        assert!(out.status.success(), "scripts/site.sh up failed:\n{}{}", text(&out.stdout), text(&out.stderr));
        site
    }

    fn script(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/site.sh"));
        cmd.args(args).env("PILOT_SITE", &self.dir).env("WN_INTERVAL", "2").env("WN_TTL", "10");
        run_limited(&mut cmd, Duration::from_secs(120))
    }

    /// An HTCondor command as the submitting user, in the jobs directory.
    fn condor(&self, args: &[&str]) -> String {
        let out = self.script(&[&["exec"], args].concat());
        assert!(out.status.success(), "{args:?}: {}{}", text(&out.stdout), text(&out.stderr));
        text(&out.stdout)
    }

    fn jobs(&self) -> PathBuf {
        self.dir.join("jobs")
    }

    /// Submit one job (its own cluster); returns the cluster id.
    fn submit(&self, name: &str, executable: &str, arguments: &str) -> String {
        let sub = format!(
            "universe = container\n\
             container_image = /pilot-work/images/pilot\n\
             transfer_container = false\n\
             should_transfer_files = YES\n\
             transfer_executable = false\n\
             executable = {executable}\n\
             arguments = \"{arguments}\"\n\
             output = {name}.out\n\
             error = {name}.err\n\
             stream_output = true\n\
             stream_error = true\n\
             log = {name}.log\n\
             queue\n"
        );
        std::fs::write(self.jobs().join(format!("{name}.sub")), sub).unwrap();
        let out = self.condor(&["condor_submit", "-terse", &format!("{name}.sub")]);
        out.split('.').next().unwrap().trim().to_string()
    }

    /// A job's attributes, from the queue or else from the history.
    fn ad(&self, cluster: &str, attrs: &[&str]) -> Option<Vec<String>> {
        for tool in ["condor_q", "condor_history"] {
            let out = self.condor(&[&[tool, cluster, "-af:t"], attrs].concat());
            if let Some(line) = out.lines().find(|l| !l.trim().is_empty()) {
                return Some(line.split('\t').map(|s| s.trim().to_string()).collect());
            }
        }
        None
    }

    /// (JobStatus, ExitCode, ExitBySignal) once the job has left the queue; a held job
    /// fails the test at once, with HTCondor's reason.
    fn finished(&self, cluster: &str) -> Option<Record> {
        if let Some(v) = self.ad(cluster, &["JobStatus", "HoldReason"]).filter(|v| v[0] == "5") {
            panic!("job {cluster} is held: {}", v[1]);
        }
        let out = self.condor(&["condor_history", cluster, "-af:t", "JobStatus", "ExitCode", "ExitBySignal"]);
        let line = out.lines().find(|l| !l.trim().is_empty())?;
        let v: Vec<&str> = line.split('\t').map(str::trim).collect();
        Some((v[0].into(), v[1].into(), v[2].into()))
    }

    fn err(&self, name: &str) -> String {
        std::fs::read_to_string(self.jobs().join(format!("{name}.err"))).unwrap_or_default()
    }

    fn consul_get(&self, path: &str) -> Value {
        get_json(&format!("http://{}{path}", self.consul))
    }

    /// Prometheus's `up` for each scraped `containerpilot` instance.
    fn prometheus_up(&self) -> Vec<(String, String)> {
        let addr = std::fs::read_to_string(self.dir.join("prometheus.addr"))
            .expect("site.sh up --prometheus wrote prometheus.addr");
        let v = get_json(&format!("http://{}/api/v1/query?query=up%7Bjob%3D%22containerpilot%22%7D", addr.trim()));
        let rows = v["data"]["result"].as_array().cloned().unwrap_or_default();
        rows.iter()
            .map(|r| {
                (r["metric"]["instance"].as_str().unwrap_or("").into(), r["value"][1].as_str().unwrap_or("").into())
            })
            .collect()
    }

    /// htcondor_global_job_id of every htcondor-payload service registered now.
    fn payload_services(&self) -> Vec<String> {
        let services = self.consul_get("/v1/agent/services");
        services
            .as_object()
            .unwrap()
            .values()
            .filter(|s| s["Service"] == "htcondor-payload")
            .map(|s| s["Meta"]["htcondor_global_job_id"].as_str().unwrap_or("(none)").to_string())
            .collect()
    }

    /// (status, output) of the condor-master health check, if registered.
    fn worker_check(&self) -> Option<(String, String)> {
        let checks = self.consul_get("/v1/health/checks/condor-master");
        let c = checks.as_array()?.first()?;
        Some((c["Status"].as_str()?.to_string(), c["Output"].as_str()?.to_string()))
    }

    /// A headless Chromium picture of a Consul UI page, taken once it shows every one of
    /// `texts` (else the test fails); returns the rendered page.
    fn photograph(&self, page: &str, png: &str, texts: &[&str]) -> String {
        let shots = self.dir.join("screenshots");
        std::fs::create_dir_all(&shots).unwrap();
        let png = shots.join(png);
        let out = self.script(&[&["ui", page, png.to_str().unwrap()], texts].concat());
        assert!(out.status.success(), "site.sh ui {page}: {}", text(&out.stderr));
        let size = std::fs::metadata(&png).map(|m| m.len()).unwrap_or(0);
        assert!(size > 10_000, "{} is {size} bytes: no page was rendered", png.display());
        std::fs::read_to_string(png.with_extension("html")).unwrap()
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        let out = self.script(&["down"]);
        if !out.status.success() {
            eprintln!("site.sh down: {}", text(&out.stderr));
        }
    }
}

fn get_json(url: &str) -> Value {
    let body = common::consul::agent_http()
        .get(url)
        .call()
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
        .body_mut()
        .read_to_string()
        .unwrap();
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {url}: {e}: {body}"))
}

/// Stops a watcher thread when the test goes on or fails (a scope waits for its threads).
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// One payload, under pilot and bare.
struct Pair {
    name: &'static str,
    pilot: String,
    bare: String,
}

fn submit_pair(site: &Site, name: &'static str, script: &str) -> Pair {
    Pair {
        name,
        pilot: site.submit(&format!("{name}-pilot"), "/usr/local/bin/pilot", &format!("run -- /bin/sh -c '{script}'")),
        bare: site.submit(&format!("{name}-bare"), "/bin/sh", &format!("-c '{script}'")),
    }
}

fn global_job_id(site: &Site, cluster: &str) -> String {
    site.ad(cluster, &["GlobalJobId"]).expect("the job is in the queue or the history").remove(0)
}

/// The post-stop job ran after the deregistration, and named this job.
fn assert_post_stop(site: &Site, name: &str, gjid: &str) {
    let err = site.err(name);
    let dereg = err
        .find("consul: deregistered service htcondor-payload-")
        .unwrap_or_else(|| panic!("{name}: no deregistration in pilot's log:\n{err}"));
    let post = err
        .find(&format!("post-stop job {gjid} finished"))
        .unwrap_or_else(|| panic!("{name}: the post-stop job did not run:\n{err}"));
    assert!(dereg < post, "{name}: the post-stop job ran before the deregistration:\n{err}");
}

#[test]
fn htcondor_runs_pilot_containers_registered_in_consul() {
    assert!(is_root(), "{ROOT_MSG}");
    require("nsenter", "run scripts/setup-test-deps.sh (installs Debian's util-linux)");
    require("chromium", "run scripts/setup-test-deps.sh (installs Debian's chromium)");
    require_python();
    let site = Site::up();
    // Outputs of an earlier run would mislead the checks below.
    for e in std::fs::read_dir(site.jobs()).unwrap().flatten() {
        std::fs::remove_file(e.path()).unwrap();
    }
    let _ = std::fs::remove_file(site.dir.join("worker/startd-down"));

    // The paper's long-running mode: the worker-node container registers condor-master.
    let out = site.script(&["worker-node", "start", "wn1"]);
    assert!(out.status.success(), "worker-node start: {}{}", text(&out.stdout), text(&out.stderr));
    eventually(Duration::from_secs(60), "condor-master registered and passing", || {
        site.worker_check().filter(|(s, _)| s == "passing")
    });

    // A payload removed with condor_rm while it runs.
    let removed = submit_pair(&site, "removed", "echo payload started; sleep 600");
    let gjid = eventually(Duration::from_secs(120), "both removed-* jobs running, pilot's registered", || {
        let running =
            [&removed.pilot, &removed.bare].iter().all(|c| site.ad(c, &["JobStatus"]).is_some_and(|v| v[0] == "2"));
        let gjid = global_job_id(&site, &removed.pilot);
        (running && site.payload_services().contains(&gjid)).then_some(gjid)
    });
    site.photograph(
        "/ui/dc1/services",
        "figure3-services.png",
        &["condor-master", "htcondor-payload", "containerpilot", "consul"],
    );
    site.condor(&["condor_rm", &removed.pilot, &removed.bare]);
    let (pilot, bare) = eventually(Duration::from_secs(60), "the removed jobs in the history", || {
        Some((site.finished(&removed.pilot)?, site.finished(&removed.bare)?))
    });
    assert_eq!(
        pilot,
        ("3".into(), "143".into(), "false".into()),
        "removed under pilot: (JobStatus, ExitCode, ExitBySignal)"
    );
    assert_eq!(pilot, bare, "removed: pilot's record differs from the bare payload's");
    assert!(!site.payload_services().contains(&gjid), "the removed job's service is still registered");
    assert_post_stop(&site, "removed-pilot", &gjid);

    // Payloads that succeed, fail with a code and are killed by a signal.
    let pairs = [
        submit_pair(&site, "succeeds", "sleep 4; exit 0"),
        submit_pair(&site, "fails", "sleep 4; exit 7"),
        // The shell kills itself (its own pid through /proc/self, as `$$` means something
        // else to condor_submit).
        submit_pair(&site, "killed", "sleep 4; read pid rest < /proc/self/stat; kill -KILL $pid"),
    ];
    // Consul is watched on its own thread: a round of condor_q/condor_history takes longer
    // than a payload's few seconds of life.
    let seen: Mutex<HashSet<String>> = Mutex::new(HashSet::new());
    let stop = AtomicBool::new(false);
    let results: BTreeMap<&str, (Record, Record)> = std::thread::scope(|scope| {
        scope.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                seen.lock().unwrap().extend(site.payload_services());
                std::thread::sleep(Duration::from_millis(200));
            }
        });
        let _stop = StopOnDrop(&stop);
        eventually(Duration::from_secs(300), "the six jobs in the history", || {
            let mut done = BTreeMap::new();
            for p in &pairs {
                done.insert(p.name, (site.finished(&p.pilot)?, site.finished(&p.bare)?));
            }
            Some(done)
        })
    });
    let seen = seen.into_inner().unwrap();
    for (p, want) in pairs.iter().zip(["0", "7", "137"]) {
        let (pilot, bare) = &results[p.name];
        assert_eq!(
            pilot,
            &("4".into(), want.to_string(), "false".into()),
            "{} under pilot: (JobStatus, ExitCode, ExitBySignal)",
            p.name
        );
        assert_eq!(pilot, bare, "{}: pilot's record differs from the bare payload's", p.name);
        let gjid = global_job_id(&site, &p.pilot);
        assert!(
            seen.contains(&gjid),
            "{}: no htcondor-payload service with meta htcondor_global_job_id={gjid} was seen (saw {seen:?})",
            p.name
        );
        assert_post_stop(&site, &format!("{}-pilot", p.name), &gjid);
    }
    assert_eq!(site.payload_services(), Vec::<String>::new(), "services left registered after every job ended");

    // A broken site config: `apptainer test` (the image's %test, pilot check-config) fails
    // before the payload starts, and HTCondor writes pilot's diagnostic into the job's log.
    let config = site.dir.join("etc/htcondor-payload.json5");
    let good = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, r#"{ jobs: [{ name: "x", exec: "true", helth: {} }] }"#).unwrap();
    let broken = site.submit("broken-config", "/usr/local/bin/pilot", "run -- /bin/sh -c 'echo the payload ran'");
    let log = eventually(Duration::from_secs(90), "pilot's diagnostic in the job's log", || {
        let log = std::fs::read_to_string(site.jobs().join("broken-config.log")).unwrap_or_default();
        log.contains("Singularity test failed:").then_some(log)
    });
    std::fs::write(&config, good).unwrap();
    site.condor(&["condor_rm", &broken]);
    assert!(
        log.contains("jobs[0].helth: unknown key 'helth'; did you mean 'health'?"),
        "the job's log lacks check-config's diagnostic:\n{log}"
    );
    let out = std::fs::read_to_string(site.jobs().join("broken-config.out")).unwrap_or_default();
    assert!(!out.contains("the payload ran"), "the payload ran under a broken config");

    // Prometheus finds the worker node's metrics endpoint through Consul and scrapes it.
    eventually(Duration::from_secs(60), "Prometheus scraping containerpilot-vm-wn1", || {
        site.prometheus_up().contains(&("containerpilot-vm-wn1".to_string(), "1".to_string())).then_some(())
    });

    // The paper's fault: the startd stops answering, the health check fails, Consul shows
    // condor-master critical with the check's output.
    std::fs::write(site.dir.join("worker/startd-down"), "connection refused (fault injected by tests/site.rs)")
        .unwrap();
    eventually(Duration::from_secs(60), "condor-master critical", || {
        site.worker_check().filter(|(s, o)| s == "critical" && o.contains("Can't connect to startd"))
    });
    site.photograph(
        "/ui/dc1/nodes/pilot-site/health-checks",
        "figure4-node-checks.png",
        &["condor-master", "Can't connect to startd"],
    );
    std::fs::remove_file(site.dir.join("worker/startd-down")).unwrap();
    eventually(Duration::from_secs(60), "condor-master passing again", || {
        site.worker_check().filter(|(s, _)| s == "passing")
    });

    // Stopping the worker node deregisters it.
    let out = site.script(&["worker-node", "stop", "wn1"]);
    assert!(out.status.success(), "worker-node stop: {}", text(&out.stderr));
    eventually(Duration::from_secs(30), "condor-master deregistered", || site.worker_check().is_none().then_some(()));
}
