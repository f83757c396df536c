//! The paper's deployment for real (scripts/site.sh nodes; docs/site.md): three Consul servers,
//! an HTCondor central manager and two worker-node containers (apptainer/worker-node.def:
//! pilot as init running a Consul client agent and `condor_master -f`), each node in its own
//! network namespace on a private bridge. The test watches everything through a Consul
//! *server's* API and HTCondor's own tools: registration with the paper's tags, vanilla jobs
//! on the containerised startds, every fault of the issue detected and recovered (the time
//! from injection to Consul's view is printed and written to detection.txt), a graceful stop
//! that loses no job, Prometheus finding both nodes through Consul, and the two pictures of
//! docs/site.md.

mod common;

use common::*;
use serde_json::Value;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const ROOT_MSG: &str = "the worker-node test runs as root: it makes network namespaces, a Debian unstable root \
                        (mmdebstrap) and runs HTCondor and Apptainer inside it";

/// The paper's first Consul server, where Figure 2's agents join.
const SERVER: &str = "10.141.200.1";

struct Site {
    dir: PathBuf,
    /// What each fault took to show in Consul, for the report.
    times: std::cell::RefCell<String>,
}

impl Site {
    fn up() -> Site {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
        let static_pilot = static_pilot().display().to_string();
        let site = Site { dir: repo.join("target/nodes-test"), times: Default::default() };
        std::fs::create_dir_all(&site.dir).unwrap();
        let mut cmd = site.command(&["up", "--prometheus", "2"]);
        cmd.env("PILOT_STATIC", &static_pilot)
            .env("PILOT_CONSUL", common::consul::consul_bin())
            .env("PILOT_PROMETHEUS", common::prometheus_bin());
        let out = run_limited(&mut cmd, Duration::from_secs(1500));
        assert!(out.status.success(), "scripts/site.sh nodes up failed:\n{}{}", text(&out.stdout), text(&out.stderr));
        site
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/site.sh"));
        cmd.arg("nodes")
            .args(args)
            .env("PILOT_NODES", &self.dir)
            .env("WN_INTERVAL", "2")
            .env("WN_TTL", "10")
            .env("WN_TIMEOUT", "10")
            .env("SITE_HEALTH_PERIOD", "2");
        cmd
    }

    fn script(&self, args: &[&str]) -> Output {
        run_limited(&mut self.command(args), Duration::from_secs(180))
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.script(args);
        assert!(out.status.success(), "nodes {args:?}: {}{}", text(&out.stdout), text(&out.stderr));
        text(&out.stdout)
    }

    /// An HTCondor command as the submitting user on the central manager.
    fn condor(&self, args: &[&str]) -> String {
        self.ok(&[&["exec"], args].concat())
    }

    /// GET from a Consul server's HTTP API (inside the site's network); None if it fails.
    fn api_at(&self, server: &str, path: &str) -> Option<Value> {
        let url = format!("http://{server}:8500{path}");
        let out = self.script(&["net", "curl", "-sf", "--max-time", "5", &url]);
        out.status.success().then(|| serde_json::from_slice(&out.stdout).ok()).flatten()
    }

    fn api(&self, path: &str) -> Option<Value> {
        self.api_at(SERVER, path)
    }

    /// Status of `check` ("serfHealth" or the condor-master service check) on `node`, as a
    /// server sees it; None when there is no such check.
    fn check(&self, server: &str, node: &str, service_check: bool) -> Option<(String, String)> {
        let checks = self.api_at(server, &format!("/v1/health/node/{node}?stale"))?;
        checks.as_array()?.iter().find_map(|c| {
            let ours = if service_check { c["ServiceName"] == "condor-master" } else { c["CheckID"] == "serfHealth" };
            ours.then(|| (c["Status"].as_str().unwrap_or("").into(), c["Output"].as_str().unwrap_or("").into()))
        })
    }

    fn master(&self, node: &str) -> Option<String> {
        self.check(SERVER, node, true).map(|c| c.0)
    }

    /// Wait for `node`'s condor-master check to reach `status`; returns how long it took.
    fn master_becomes(&self, node: &str, status: &str, limit: Duration) -> Duration {
        let t = Instant::now();
        eventually(limit, &format!("{node}'s condor-master {status} at a Consul server"), || {
            (self.master(node).as_deref() == Some(status)).then_some(())
        });
        t.elapsed()
    }

    fn record(&self, what: &str, took: Duration) {
        let line = format!("{what:<62} {:>6.1} s", took.as_secs_f64());
        eprintln!("detection: {line}");
        writeln!(self.times.borrow_mut(), "{line}").unwrap();
    }

    fn slots(&self) -> Vec<String> {
        self.condor(&["condor_status", "-af", "Machine"]).lines().map(|l| l.trim().to_string()).collect()
    }

    /// A vanilla job running `/bin/sh -c SCRIPT`, or what `extra` (submit lines, read last)
    /// makes of it.
    fn submit(&self, name: &str, script: &str, extra: &str) -> String {
        let sub = format!(
            "universe = vanilla\n\
             executable = /bin/sh\n\
             transfer_executable = false\n\
             should_transfer_files = YES\n\
             arguments = \"-c '{script}'\"\n\
             output = {name}.out\n\
             error = {name}.err\n\
             log = {name}.log\n\
             {extra}\
             queue\n"
        );
        std::fs::write(self.dir.join("jobs").join(format!("{name}.sub")), sub).unwrap();
        let out = self.condor(&["condor_submit", "-terse", &format!("{name}.sub")]);
        out.split('.').next().unwrap().trim().to_string()
    }

    /// (JobStatus, ExitCode, LastRemoteHost) once the job is in the history.
    fn history(&self, cluster: &str) -> Option<(String, String, String)> {
        let out = self.condor(&["condor_history", cluster, "-af:t", "JobStatus", "ExitCode", "LastRemoteHost"]);
        let line = out.lines().find(|l| !l.trim().is_empty())?;
        let v: Vec<&str> = line.split('\t').map(str::trim).collect();
        Some((v[0].into(), v[1].into(), v[2].into()))
    }

    /// (JobStatus, RemoteHost) while the job is queued.
    fn queued(&self, cluster: &str) -> Option<(String, String)> {
        let out = self.condor(&["condor_q", cluster, "-af:t", "JobStatus", "RemoteHost"]);
        let line = out.lines().find(|l| !l.trim().is_empty())?;
        let v: Vec<&str> = line.split('\t').map(str::trim).collect();
        Some((v[0].into(), v.get(1).copied().unwrap_or("").into()))
    }

    fn photograph(&self, page: &str, png: &str, texts: &[&str]) {
        let shots = self.dir.join("screenshots");
        std::fs::create_dir_all(&shots).unwrap();
        let png = shots.join(png);
        self.ok(&[&["ui", page, png.to_str().unwrap()], texts].concat());
        let size = std::fs::metadata(&png).map(|m| m.len()).unwrap_or(0);
        assert!(size > 10_000, "{} is {size} bytes: no page was rendered", png.display());
    }

    /// Prometheus's `up` per scraped containerpilot instance (the Consul node name).
    fn prometheus_up(&self) -> Vec<(String, String)> {
        let url = "http://10.141.200.254:9090/api/v1/query?query=up%7Bjob%3D%22containerpilot%22%7D";
        let out = self.script(&["net", "curl", "-sf", "--max-time", "5", url]);
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        v["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|r| {
                (r["metric"]["instance"].as_str().unwrap_or("").into(), r["value"][1].as_str().unwrap_or("").into())
            })
            .collect()
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        let _ = std::fs::write(self.dir.join("detection.txt"), self.times.borrow().as_bytes());
        if std::env::var_os("PILOT_KEEP_NODES").is_none() {
            let out = self.script(&["down"]);
            if !out.status.success() {
                eprintln!("nodes down: {}", text(&out.stderr));
            }
        }
    }
}

#[test]
fn containerised_worker_nodes_with_htcondor_and_a_consul_cluster() {
    assert!(is_root(), "{ROOT_MSG}");
    require("nsenter", "run scripts/setup-test-deps.sh (installs Debian's util-linux)");
    require("ip", "run scripts/setup-test-deps.sh (installs Debian's iproute2)");
    require("curl", "run scripts/setup-test-deps.sh (installs Debian's curl)");
    require("chromium", "run scripts/setup-test-deps.sh (installs Debian's chromium)");
    require_python();
    let site = Site::up();
    let wait = Duration::from_secs(120);

    // 1. Both agents joined the three-server cluster; condor-master registered, passing, with
    //    the paper's tags, seen through a server's API; both nodes' slots in condor_status.
    eventually(wait, "three servers and two clients alive in the cluster", || {
        let members = site.api("/v1/agent/members")?;
        let alive: Vec<String> = members
            .as_array()?
            .iter()
            .filter(|m| m["Status"] == 1)
            .map(|m| m["Name"].as_str().unwrap_or("").to_string())
            .collect();
        ["cs1", "cs2", "cs3", "wn1", "wn2"].iter().all(|n| alive.iter().any(|a| a == n)).then_some(())
    });
    for node in ["wn1", "wn2"] {
        site.master_becomes(node, "passing", wait);
    }
    let services = site.api("/v1/health/service/condor-master").unwrap();
    let mut nodes: Vec<String> = services
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            assert_eq!(s["Service"]["Tags"], serde_json::json!(["cntwn", "prod"]), "condor-master's tags: {s}");
            assert_eq!(s["Service"]["Port"], 9621, "condor-master's port: {s}");
            s["Node"]["Node"].as_str().unwrap().to_string()
        })
        .collect();
    nodes.sort();
    assert_eq!(nodes, ["wn1", "wn2"], "condor-master instances");
    eventually(wait, "both worker nodes' slots in condor_status", || {
        let slots = site.slots();
        (slots.iter().any(|s| s == "wn1.pilot.site") && slots.iter().any(|s| s == "wn2.pilot.site")).then_some(())
    });

    // Separate nodes, and nothing routes beyond the site's bridge.
    for (node, ip) in [("wn1", "10.141.200.21"), ("wn2", "10.141.200.22")] {
        let routes = site.ok(&["in", node, "ip", "-4", "route"]);
        let lines: Vec<&str> = routes.lines().collect();
        assert!(
            lines.len() == 1 && lines[0].starts_with("10.141.200.0/24 dev eth0") && lines[0].contains(ip),
            "{node}'s routes: {routes}"
        );
    }

    // The paper's Figure 3: the condor-master service on both worker nodes.
    site.photograph("/ui/dc1/services/condor-master/instances", "figure3-condor-master.png", &["wn1", "wn2", "cntwn"]);

    // 5. Prometheus finds both nodes' telemetry through Consul and scrapes it.
    eventually(wait, "Prometheus scraping wn1 and wn2", || {
        let up = site.prometheus_up();
        ["wn1", "wn2"].iter().all(|n| up.contains(&(n.to_string(), "1".to_string()))).then_some(())
    });

    // 2. Vanilla jobs run on the containerised startds and complete with their exit codes.
    for e in std::fs::read_dir(site.dir.join("jobs")).unwrap().flatten() {
        let _ = std::fs::remove_file(e.path());
    }
    let codes = ["0", "3", "7", "0"];
    let clusters: Vec<String> = codes
        .iter()
        .enumerate()
        .map(|(i, c)| site.submit(&format!("job{i}"), &format!("hostname; sleep 3; exit {c}"), ""))
        .collect();
    let done = eventually(Duration::from_secs(240), "the four jobs in condor_history", || {
        clusters.iter().map(|c| site.history(c)).collect::<Option<Vec<_>>>()
    });
    for ((status, code, host), want) in done.iter().zip(codes) {
        assert_eq!((status.as_str(), code.as_str()), ("4", want), "JobStatus, ExitCode (ran on {host})");
    }
    let hosts: std::collections::BTreeSet<&str> =
        done.iter().map(|(_, _, h)| h.split('@').nth(1).unwrap_or(h.as_str())).collect();
    assert_eq!(hosts.len(), 2, "the jobs ran on both worker nodes: {hosts:?}");

    // Beyond the paper: pilot as a job's wrapper publishes its health and registration into
    // the job ad through the starter's Chirp proxy (want_io_proxy).
    std::fs::write(
        site.dir.join("jobs/chirp.json5"),
        r#"{ consul: "localhost:8500", jobs: [ { name: "payload-health", exec: "sleep 3600", port: 8080,
             health: { exec: "test ! -e broken", interval: 1, ttl: 5 } } ] }"#,
    )
    .unwrap();
    let chirp = site.submit(
        "chirp",
        "unused",
        "executable = /usr/local/bin/pilot\n\
         transfer_input_files = chirp.json5\n\
         want_io_proxy = true\n\
         arguments = \"run -c chirp.json5 -- /bin/sh -c 'sleep 12; touch broken; sleep 20'\"\n",
    );
    let health = |want: &'static str| {
        eventually(wait, &format!("PilotHealth = {want} in the job ad"), || {
            let out = site.condor(&["condor_q", &chirp, "-af", "PilotHealth"]);
            (out.trim() == want).then_some(())
        })
    };
    health("passing");
    // The node's agent is the job's too (the job shares the worker node's network): the
    // registration, with its spaces escaped for Chirp, reads back as it was written.
    let services = eventually(wait, "PilotServices in the job ad", || {
        let out = site.condor(&["condor_q", &chirp, "-af", "PilotServices"]);
        out.contains("payload-health: registered as").then(|| out.trim().to_string())
    });
    assert!(services.ends_with("(passing)"), "PilotServices: {services}");
    health("critical");
    let (status, code, _) = eventually(wait, "the chirping job finished", || site.history(&chirp));
    assert_eq!((status.as_str(), code.as_str()), ("4", "0"), "the chirping job's record");
    let ad = site.condor(&["condor_history", &chirp, "-af", "PilotHealth"]);
    assert_eq!(ad.trim(), "critical", "the last PilotHealth in the history");

    // 3. Faults, each detected by Consul and then recovered.
    // 3a. HTCondor's health mechanism unsets StartJobs when CVMFS breaks.
    site.ok(&["fault", "wn1", "cvmfs-break"]);
    let took = site.master_becomes("wn1", "critical", wait);
    site.record("CVMFS stand-in removed -> wn1 condor-master critical", took);
    let (_, output) = site.check(SERVER, "wn1", true).unwrap();
    assert!(output.contains("StartJobs: Not defined"), "the check's output: {output}");
    assert_eq!(site.master("wn2").as_deref(), Some("passing"), "wn2 is unaffected");
    // The paper's Figure 4: the node's checks after the fault.
    site.photograph(
        "/ui/dc1/nodes/wn1/health-checks",
        "figure4-wn1-checks.png",
        &["Serf Health Status", "condor-master", "StartJobs"],
    );
    site.ok(&["fault", "wn1", "cvmfs-repair"]);
    let took = site.master_becomes("wn1", "passing", wait);
    site.record("CVMFS stand-in restored -> passing", took);

    // 3b. The startd stopped.
    site.ok(&["fault", "wn2", "startd-off"]);
    let took = site.master_becomes("wn2", "critical", wait);
    site.record("condor_off -startd -> wn2 condor-master critical", took);
    site.ok(&["fault", "wn2", "startd-on"]);
    let took = site.master_becomes("wn2", "passing", wait);
    site.record("condor_on -startd -> passing", took);

    // 3c. condor_master killed: pilot restarts it (restarts: unlimited), healthy again.
    site.ok(&["fault", "wn1", "master-kill"]);
    let t = Instant::now();
    eventually(wait, "wn1's condor_master restarted by pilot", || {
        let out = site.script(&["in", "wn1", "pilot", "status"]);
        let status = text(&out.stdout);
        status.lines().any(|l| l.starts_with("condor-master") && l.split_whitespace().nth(3) == Some("1")).then_some(())
    });
    site.record("condor_master SIGKILLed -> restarted by pilot", t.elapsed());
    // The killed master's daemons went with it: one startd, not two advertising the same slot.
    eventually(wait, "a single condor_startd on wn1", || {
        let out = site.script(&["in", "wn1", "pgrep", "-c", "-x", "condor_startd"]);
        (text(&out.stdout).trim() == "1").then_some(())
    });
    let took = site.master_becomes("wn1", "passing", wait);
    site.record("  ... and condor-master passing again", took + t.elapsed());

    // 3d. One Consul server killed: everything keeps reporting through the other two.
    site.ok(&["server", "kill", "3"]);
    let t = Instant::now();
    eventually(wait, "cs3 seen failed by the others", || {
        let members = site.api_at("10.141.200.2", "/v1/agent/members")?;
        members.as_array()?.iter().any(|m| m["Name"] == "cs3" && m["Status"] == 4).then_some(())
    });
    site.record("Consul server cs3 killed -> seen failed", t.elapsed());
    site.ok(&["fault", "wn2", "cvmfs-break"]);
    let took = site.master_becomes("wn2", "critical", wait);
    site.record("  with 2 of 3 servers: CVMFS fault on wn2 -> critical", took);
    site.ok(&["fault", "wn2", "cvmfs-repair"]);
    site.master_becomes("wn2", "passing", wait);

    // Two servers down: no quorum. Jobs run on regardless; registrations come back with quorum.
    let long = site.submit("during-no-quorum", "sleep 20; exit 5", "");
    eventually(wait, "the job running", || site.queued(&long).filter(|(s, _)| s == "2"));
    site.ok(&["server", "kill", "2"]);
    let t = Instant::now();
    eventually(wait, "no leader at cs1", || {
        let out = site.script(&["net", "curl", "-s", "--max-time", "5", "http://10.141.200.1:8500/v1/status/leader"]);
        (text(&out.stdout).trim() == "\"\"").then_some(())
    });
    site.record("Consul server cs2 killed too -> no leader (no quorum)", t.elapsed());
    let (status, code, _) = eventually(wait, "the job finished without quorum", || site.history(&long));
    assert_eq!((status.as_str(), code.as_str()), ("4", "5"), "a job through the loss of quorum");
    // A change while there is no quorum cannot reach the catalog; it does once quorum is back.
    site.ok(&["fault", "wn1", "cvmfs-break"]);
    std::thread::sleep(Duration::from_secs(5));
    for i in ["2", "3"] {
        site.ok(&["server", "start", i]);
    }
    let t = Instant::now();
    eventually(wait, "wn1 critical in a consistent read", || {
        let checks = site.api("/v1/health/node/wn1?consistent")?;
        checks
            .as_array()?
            .iter()
            .any(|c| c["ServiceName"] == "condor-master" && c["Status"] == "critical")
            .then_some(())
    });
    site.record("servers back -> leader, the change made without quorum in the catalog", t.elapsed());
    site.ok(&["fault", "wn1", "cvmfs-repair"]);
    for node in ["wn1", "wn2"] {
        site.master_becomes(node, "passing", wait);
    }

    // 4. Graceful stop while a job runs: the job goes back to the queue, reruns on the other
    //    node and completes; the node's services are deregistered and its agent leaves.
    let job = site.submit("graceful", "hostname; sleep 25; exit 9", "");
    let (_, host) = eventually(wait, "the job executing", || {
        let out = site.condor(&["condor_q", &job, "-af:t", "JobCurrentStartExecutingDate", "RemoteHost"]);
        let v: Vec<String> = out.trim().split('\t').map(String::from).collect();
        (v.len() == 2 && v[0] != "undefined").then(|| (v[0].clone(), v[1].clone()))
    });
    let (stopped, other) = if host.contains("wn1") { ("wn1", "wn2") } else { ("wn2", "wn1") };
    let t = Instant::now();
    site.ok(&["stop", stopped]);
    site.record(&format!("graceful stop of {stopped} (instance stop returned)"), t.elapsed());
    eventually(wait, "the stopped node's services deregistered", || {
        let services = site.api(&format!("/v1/catalog/node-services/{stopped}"));
        services.is_none_or(|s| s["Services"].as_array().is_none_or(|a| a.is_empty())).then_some(())
    });
    eventually(wait, "the stopped node's agent left", || {
        let members = site.api("/v1/agent/members")?;
        members.as_array()?.iter().any(|m| m["Name"] == stopped && m["Status"] == 3).then_some(())
    });
    site.record(&format!("  ... {stopped} deregistered and left"), t.elapsed());
    let (status, code, ran_on) =
        eventually(Duration::from_secs(180), "the vacated job completed", || site.history(&job));
    assert_eq!((status.as_str(), code.as_str()), ("4", "9"), "the vacated job's record");
    assert!(ran_on.contains(other), "the vacated job finished on {ran_on}, not on {other}");
    let log = std::fs::read_to_string(site.dir.join("jobs/graceful.log")).unwrap();
    assert!(log.contains("Job was evicted") || log.contains("evicted"), "no eviction in the job's log:\n{log}");

    // 3e. The other node's whole container SIGKILLed: its node turns critical in Consul.
    site.ok(&["kill", other]);
    let t = Instant::now();
    eventually(wait, "serfHealth critical for the killed node", || {
        site.check(SERVER, other, false).filter(|(s, _)| s == "critical")
    });
    site.record(&format!("{other}'s container SIGKILLed -> serfHealth critical"), t.elapsed());

    let report = site.times.borrow().clone();
    eprintln!("detection times:\n{report}");
}
