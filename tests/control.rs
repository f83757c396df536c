//! The control socket and telemetry of a running pilot: every endpoint and CLI command, bad
//! reloads and malformed HTTP that must change nothing, socket placement, the Prometheus
//! exposition checked by promtool, and a real Prometheus finding pilot through Consul.

mod common;

use common::consul::{Agent, free_port};
use common::*;
use serde_json::Value;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(10);

fn config_text(socket: &Path, telemetry_port: u16, job_exec: &str) -> String {
    format!(
        r#"{{
  control: {{ socket: "{}" }},
  telemetry: {{ port: {telemetry_port}, interfaces: ["static:127.0.0.1"], metrics: [
      {{ namespace: "app", name: "jobs_done_total", help: "jobs done", type: "counter" }},
      {{ namespace: "app", name: "retries", help: "a counter named as in ContainerPilot, without _total", type: "counter" }},
      {{ namespace: "app", name: "queue", help: "queue length", type: "gauge" }},
      {{ namespace: "app", name: "latency", help: "latency", type: "histogram" }},
      {{ namespace: "app", name: "size", help: "sizes", type: "summary" }},
      {{ namespace: "app", name: "sensed", help: "set by the sensor job", type: "gauge" }} ] }},
  jobs: [
    {{ name: "app", exec: "{job_exec}", health: {{ exec: "true", interval: 1, ttl: 5 }} }},
    {{ name: "show-env", exec: ["sh", "-c", "echo GREETING=$GREETING"], when: {{ source: "SIGHUP", each: "signal" }} }},
    {{ name: "sensor", exec: ["{pilot}", "putmetric", "app_sensed=5"], when: {{ interval: "1s" }} }},
  ]
}}"#,
        socket.display(),
        pilot = pilot()
    )
}

fn cli(socket: &Path, args: &[&str]) -> (i32, String, String) {
    let out = run_limited(Command::new(pilot()).args(args).arg("--socket").arg(socket), LIMIT);
    (out.status.code().unwrap_or(-1), text(&out.stdout), text(&out.stderr))
}

fn status(socket: &Path) -> Value {
    let (code, out, err) = cli(socket, &["status", "--json"]);
    assert_eq!(code, 0, "{err}");
    serde_json::from_str(&out).unwrap()
}

fn job<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["name"] == name)
        .unwrap_or_else(|| panic!("no job {name} in {status}"))
}

/// Raw HTTP over the socket: what a broken client might send.
fn raw(socket: &Path, request: &[u8]) -> String {
    let mut s = UnixStream::connect(socket).unwrap();
    s.set_read_timeout(Some(LIMIT)).unwrap();
    s.write_all(request).unwrap();
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

fn metrics_url(p: &Running) -> String {
    let line = p.expect_line(|l| l.contains("serving Prometheus metrics at"), "the telemetry address");
    line.split("at ").last().unwrap().trim().to_string()
}

fn http_get(url: &str) -> String {
    http_get_as(url, "*/*").1
}

/// What Prometheus 3 sends as `Accept` when it scrapes.
const PROMETHEUS_ACCEPT: &str = "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.5,application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=1.0.0;escaping=allow-utf-8;q=0.3,text/plain;version=0.0.4;q=0.2,*/*;q=0.1";

/// A GET with this `Accept`: the answer's Content-Type and body.
fn http_get_as(url: &str, accept: &str) -> (String, String) {
    let script = format!(
        "import urllib.request, sys\nr = urllib.request.urlopen(urllib.request.Request('{url}', headers={{'Accept': '{accept}'}}))\nsys.stdout.write(r.headers['Content-Type'] + '\\n' + r.read().decode())"
    );
    let out = run_limited(Command::new("python3").args(["-c", &script]), LIMIT);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let all = text(&out.stdout);
    let (ty, body) = all.split_once('\n').unwrap_or((&all, ""));
    (ty.to_string(), body.to_string())
}

#[test]
fn every_endpoint_and_command_against_a_running_pilot() {
    require_python();
    let dir = scratch("control");
    let socket = dir.join("ctl.sock");
    let cfg = write_config(&dir, &config_text(&socket, 0, "sleep 1000"));
    let p = Running::start(Command::new(pilot()).args(["run", "-c", &cfg]));
    let url = metrics_url(&p);

    assert_eq!(cli(&socket, &["ping"]).1.trim(), "OK");
    let st = status(&socket);
    let app_pid = job(&st, "app")["pid"].as_i64().expect("app runs");
    assert_eq!(job(&st, "app")["state"], "running");
    let (_, table, _) = cli(&socket, &["status"]);
    assert!(table.contains("JOB") && table.contains("app") && table.contains(&app_pid.to_string()), "{table}");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777, 0o600);

    // putenv reaches jobs started afterwards.
    assert_eq!(cli(&socket, &["putenv", "GREETING=hello world"]).0, 0);
    p.signal(1);
    p.expect_line(|l| l.ends_with("GREETING=hello world"), "a job started after putenv sees it");

    // putmetric feeds every kind; an unknown metric is refused and changes nothing.
    assert_eq!(
        cli(&socket, &["putmetric", "app_jobs_done_total=2", "app_queue=7", "app_latency=0.3", "app_size=10"]).0,
        0
    );
    assert_eq!(cli(&socket, &["putmetric", "app_jobs_done_total=1"]).0, 0);
    // A counter configured without `_total` is exposed with it, and found by either name.
    assert_eq!(cli(&socket, &["putmetric", "app_retries=2", "app_retries_total=1"]).0, 0);
    let (code, _, err) = cli(&socket, &["putmetric", "app_queue=1", "nope=1"]);
    assert_eq!(code, 1);
    assert!(err.contains("no metric 'nope'"), "{err}");
    let exposition = http_get(&url);
    assert!(exposition.contains("app_jobs_done_total 3"), "{exposition}");
    assert!(exposition.contains("# TYPE app_retries_total counter\napp_retries_total 3\n"), "{exposition}");
    assert!(exposition.contains("app_queue 7"), "the refused request changed nothing: {exposition}");
    assert!(exposition.contains("app_size_count 1"), "{exposition}");
    eventually(LIMIT, "a sensor job (pilot putmetric via $PILOT_SOCKET) sets its gauge", || {
        http_get(&url).contains("app_sensed 5").then_some(())
    });
    assert!(
        exposition.contains("containerpilot_control_http_requests_total{code=\"422\",path=\"/v3/metric\"} 1"),
        "{exposition}"
    );
    assert!(exposition.contains("containerpilot_events_total{code=\"startup\",source=\"global\"} 1"), "{exposition}");
    // Nothing blocked pilot's log here: the counter of dropped log lines is there, at 0.
    assert!(exposition.contains("pilot_log_lines_dropped_total 0"), "{exposition}");
    assert!(!exposition.contains("# EOF"), "the classic format unless OpenMetrics is asked for: {exposition}");

    // promtool's lint (counters end in _total, units, help on every family) has nothing to say.
    require("promtool", "run scripts/setup-test-deps.sh (installs Debian's prometheus package)");
    let file = dir.join("metrics.txt");
    std::fs::write(&file, &exposition).unwrap();
    let out =
        run_limited(Command::new("sh").arg("-c").arg(format!("promtool check metrics < {}", file.display())), LIMIT);
    let report = text(&out.stdout) + &text(&out.stderr);
    assert!(report.trim().is_empty() && out.status.success(), "promtool: {report}\n{exposition}");

    // Prometheus' Accept gets OpenMetrics: families named without _total, samples with it,
    // and the closing # EOF. (promtool 2.x lints only the classic format; the real Prometheus
    // in prometheus_finds_pilot_through_consul_and_scrapes_it parses this one.)
    let (ty, om) = http_get_as(&url, PROMETHEUS_ACCEPT);
    assert!(ty.starts_with("application/openmetrics-text; version=1.0.0"), "{ty}");
    assert!(om.ends_with("\n# EOF\n"), "{om}");
    assert!(om.contains("# TYPE containerpilot_events counter\n"), "{om}");
    assert!(om.contains("# TYPE app_retries counter\napp_retries_total 3\n"), "{om}");
    assert!(om.contains("# TYPE app_jobs_done counter\napp_jobs_done_total 3\n"), "{om}");
    // A strict OpenMetrics parser (the Python client's, from Debian) takes it whole.
    let file = dir.join("metrics.om");
    std::fs::write(&file, &om).unwrap();
    let parse = "import sys\nfrom prometheus_client.openmetrics.parser import text_string_to_metric_families as p\nprint(len(list(p(open(sys.argv[1]).read()))))";
    let out = run_limited(Command::new("/usr/bin/python3").args(["-c", parse]).arg(&file), LIMIT);
    let err = text(&out.stderr);
    assert!(!err.contains("ModuleNotFoundError"), "run scripts/setup-test-deps.sh (python3-prometheus-client): {err}");
    assert!(out.status.success(), "OpenMetrics parser: {err}\n{om}");
    let (ty, classic) = http_get_as(&url, "text/plain;version=0.0.4");
    assert!(ty.starts_with("text/plain; version=0.0.4"), "{ty}");
    assert!(!classic.contains("# EOF"), "{classic}");

    // Maintenance on and off.
    assert_eq!(cli(&socket, &["maintenance", "enable"]).0, 0);
    assert_eq!(status(&socket)["maintenance"], true);
    assert_eq!(cli(&socket, &["maintenance", "disable"]).0, 0);
    assert_eq!(status(&socket)["maintenance"], false);

    // Malformed and wrong requests get 4xx answers.
    assert!(raw(&socket, b"GARBAGE\r\n\r\n").starts_with("HTTP/1.1 4"), "garbage");
    assert!(raw(&socket, b"GET /v3/nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").starts_with("HTTP/1.1 404"));
    let wrong = raw(&socket, b"GET /v3/reload HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert!(wrong.starts_with("HTTP/1.1 405") && wrong.contains("Allow: POST"), "{wrong}");
    let bad_json =
        raw(&socket, b"POST /v3/environ HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 5\r\n\r\n{oops");
    assert!(bad_json.starts_with("HTTP/1.1 400"), "{bad_json}");
    let big =
        format!("POST /v3/environ HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n", 2 << 20);
    assert!(raw(&socket, big.as_bytes()).starts_with("HTTP/1.1 413"), "oversized body");
    let not_strings =
        raw(&socket, b"POST /v3/env HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 8\r\n\r\n{\"A\":1}\n");
    assert!(not_strings.starts_with("HTTP/1.1 422"), "{not_strings}");
    // None of it disturbed the job.
    assert_eq!(job(&status(&socket), "app")["pid"].as_i64(), Some(app_pid));
    drop(p);
}

#[test]
fn a_bad_reload_keeps_the_old_config_and_a_good_one_swaps_jobs() {
    let dir = scratch("reload");
    let socket = dir.join("ctl.sock");
    let cfg = write_config(&dir, &config_text(&socket, 0, "sleep 1000"));
    let mut cmd = Command::new(pilot());
    cmd.args(["run", "-c", &cfg, "--", "sh", "-c", "echo payload $$; exec sleep 1000"]);
    let p = Running::start(&mut cmd);
    let payload = p.expect_line(|l| l.starts_with("payload "), "the payload");
    let app_pid = eventually(LIMIT, "app running", || job(&status(&socket), "app")["pid"].as_i64());

    std::fs::write(
        &cfg,
        config_text(&socket, 0, "sleep 1000")
            .replace("jobs: [", "jobs: [ { name: \"x\", exec: \"true\", health: { ttl: 1 } },"),
    )
    .unwrap();
    let (code, _, err) = cli(&socket, &["reload"]);
    assert_eq!(code, 1);
    assert!(err.contains("reload refused") && err.contains("jobs[0].health.interval: is required"), "{err}");
    assert_eq!(job(&status(&socket), "app")["pid"].as_i64(), Some(app_pid), "the old config keeps running");

    std::fs::write(&cfg, config_text(&socket, 0, "sleep 2000")).unwrap();
    assert_eq!(cli(&socket, &["reload"]).0, 0);
    let new_pid =
        eventually(LIMIT, "the new app", || job(&status(&socket), "app")["pid"].as_i64().filter(|p| *p != app_pid));
    assert!(std::fs::read_to_string(format!("/proc/{new_pid}/cmdline")).unwrap().contains("2000"));
    let main = job(&status(&socket), "main").clone();
    assert_eq!(main["state"], "running", "the payload is not touched by a reload");
    assert_eq!(main["pid"].as_i64().unwrap().to_string(), payload.split_whitespace().nth(1).unwrap());
    p.signal(15);
    assert_eq!(p.wait(Duration::from_secs(20)), 143);
}

/// A reload the supervisor does not take is not answered "reloading": one with a job named
/// `main` beside a payload (422), and any during a shutdown (503). Both used to get 200.
#[test]
fn a_reload_the_supervisor_refuses_is_not_answered_ok() {
    let dir = scratch("reload-refused");
    let socket = dir.join("ctl.sock");
    // The app ignores SIGTERM for a while, so the shutdown's drain takes seconds.
    let slow = r#"["sh", "-c", "trap 'echo stopping' TERM; while :; do sleep 0.1; done"]"#;
    let text = |exec: &str| {
        format!(
            r#"{{ control: {{ socket: "{}" }}, stopTimeout: "30s",
                 jobs: [ {{ name: "app", exec: {exec}, stopTimeout: "4s" }} ] }}"#,
            socket.display()
        )
    };
    let cfg = write_config(&dir, &text(slow));
    let mut cmd = Command::new(pilot());
    cmd.args(["run", "-c", &cfg, "--grace", "20s", "--", "sleep", "1000"]);
    let p = Running::start(&mut cmd);
    eventually(LIMIT, "the control socket", || socket.exists().then_some(()));
    let app_pid = eventually(LIMIT, "app running", || job(&status(&socket), "app")["pid"].as_i64());

    std::fs::write(&cfg, r#"{ jobs: [ { name: "main", exec: "sleep 1" } ] }"#).unwrap();
    let (code, _, err) = cli(&socket, &["reload"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("jobs[0].name") && err.contains("payload"), "{err}");
    assert_eq!(job(&status(&socket), "app")["pid"].as_i64(), Some(app_pid), "the old config keeps running");

    std::fs::write(&cfg, text(r#""sleep 2000""#)).unwrap();
    p.signal(15);
    p.expect_line(|l| l.contains("stopping"), "the app's TERM trap");
    let (code, _, err) = cli(&socket, &["reload"]);
    assert_eq!(code, 1, "a reload during the shutdown: {err}");
    assert!(err.contains("shutting down"), "{err}");
    assert_eq!(p.wait(Duration::from_secs(30)), 143);
}

#[test]
fn default_socket_is_per_job_and_found_by_the_cli() {
    let dir = scratch("socket-default");
    let scratch_dir = dir.join("condor-job");
    std::fs::create_dir_all(&scratch_dir).unwrap();
    let cfg = write_config(&dir, r#"{ jobs: [ { name: "app", exec: "sleep 1000" } ] }"#);
    let env = |c: &mut Command| {
        c.env("_CONDOR_SCRATCH_DIR", &scratch_dir)
            .env_remove("XDG_RUNTIME_DIR")
            .env_remove("PILOT_SOCKET")
            .env("TMPDIR", &dir);
    };
    let mut run = Command::new(pilot());
    run.args(["run", "-c", &cfg]);
    env(&mut run);
    let _p = Running::start(&mut run);
    let socket = scratch_dir.join("pilot.sock");
    eventually(LIMIT, "socket in $_CONDOR_SCRATCH_DIR", || socket.exists().then_some(()));
    let mut st = Command::new(pilot());
    st.args(["status", "--json"]);
    env(&mut st);
    let out = run_limited(&mut st, LIMIT);
    assert!(out.status.success(), "the CLI finds the socket: {}", text(&out.stderr));

    // A second pilot on the same socket refuses it clearly, and still runs its jobs.
    let mut second = Command::new(pilot());
    second.args(["run", "-c", &cfg, "--", "sh", "-c", "echo second payload ran"]);
    env(&mut second);
    let out = run_limited(&mut second, LIMIT);
    let all = text(&out.stdout) + &text(&out.stderr);
    assert!(all.contains("another pilot is running and listening on it"), "{all}");
    assert!(all.contains("second payload ran"), "{all}");
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn stale_socket_is_replaced_and_no_pilot_is_a_clear_error() {
    let dir = scratch("stale");
    let socket = dir.join("ctl.sock");
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap()); // a dead pilot's leftover
    let cfg = write_config(
        &dir,
        &format!(
            r#"{{ control: {{ socket: "{}" }}, jobs: [ {{ name: "app", exec: "sleep 1000" }} ] }}"#,
            socket.display()
        ),
    );
    let p = Running::start(Command::new(pilot()).args(["run", "-c", &cfg]));
    eventually(LIMIT, "pilot answers on the replaced socket", || (cli(&socket, &["ping"]).0 == 0).then_some(()));
    drop(p);
    let (code, _, err) = cli(&dir.join("none.sock"), &["status"]);
    assert_eq!(code, 1);
    assert!(err.contains("no pilot is listening on"), "{err}");
}

#[test]
fn a_taken_telemetry_port_is_an_error_not_a_crash() {
    let dir = scratch("telemetry-port");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let cfg = write_config(&dir, &config_text(&dir.join("ctl.sock"), port, "sleep 1000"));
    let mut cmd = Command::new(pilot());
    cmd.args(["run", "-c", &cfg, "--", "sh", "-c", "echo payload ran; exit 4"]);
    let out = run_limited(&mut cmd, Duration::from_secs(20));
    let all = text(&out.stdout) + &text(&out.stderr);
    assert!(all.contains(&format!("cannot listen on 127.0.0.1:{port}")) && all.contains("use port: 0"), "{all}");
    assert!(all.contains("payload ran"), "{all}");
    assert_eq!(out.status.code(), Some(4), "the payload's status, untouched");
}

#[test]
fn prometheus_finds_pilot_through_consul_and_scrapes_it() {
    // Not Debian's prometheus: it is built without Consul service discovery.
    let prometheus = prometheus_bin();
    let agent = Agent::dev();
    let dir = scratch("prometheus");
    let socket = dir.join("ctl.sock");
    let text_cfg =
        config_text(&socket, 0, "sleep 1000").replacen("{\n", &format!("{{\n  consul: \"{}\",\n", agent.addr()), 1);
    let cfg = write_config(&dir, &text_cfg);
    let p = Running::start(Command::new(pilot()).args(["run", "-c", &cfg]));
    eventually(Duration::from_secs(20), "containerpilot service", || agent.services("containerpilot").pop());
    assert_eq!(cli(&socket, &["putmetric", "app_jobs_done_total=42", "app_retries=7"]).0, 0);

    let web = free_port();
    let prom_cfg = dir.join("prometheus.yml");
    std::fs::write(
        &prom_cfg,
        format!(
            "global: {{ scrape_interval: 1s, evaluation_interval: 1s }}\nscrape_configs:\n  - job_name: pilots\n    consul_sd_configs:\n      - server: '{}'\n        services: ['containerpilot']\n        refresh_interval: 1s\n    metric_relabel_configs:\n      - source_labels: [__name__]\n        regex: containerpilot_events_total\n        target_label: __name__\n        replacement: containerpilot_events\n",
            agent.addr()
        ),
    )
    .unwrap();
    let mut prom = std::process::Command::new(&prometheus)
        .args([
            format!("--config.file={}", prom_cfg.display()),
            format!("--storage.tsdb.path={}", dir.join("tsdb").display()),
            format!("--web.listen-address=127.0.0.1:{web}"),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.join("prometheus.log")).unwrap())
        .spawn()
        .expect("start prometheus");
    let api = |q: &str| -> Option<Value> {
        let out = Command::new("python3")
            .args([
                "-c",
                &format!(
                    "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:{web}{q}').read().decode())"
                ),
            ])
            .output()
            .ok()?;
        serde_json::from_slice(&out.stdout).ok()
    };
    let up = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        eventually(Duration::from_secs(60), "pilot's target up in Prometheus", || {
            assert!(prom.try_wait().unwrap().is_none(), "prometheus exited");
            let t = api("/api/v1/targets")?;
            t["data"]["activeTargets"].as_array()?.iter().find(|t| t["health"] == "up").cloned()
        });
        eventually(Duration::from_secs(30), "app_jobs_done_total queryable", || {
            let r = api("/api/v1/query?query=app_jobs_done_total")?;
            let v = r["data"]["result"].as_array()?.first()?["value"][1].as_str()?.to_string();
            (v == "42").then_some(())
        });
        // Prometheus asks for OpenMetrics first: the counter configured without _total is
        // stored with it.
        // A ContainerPilot dashboard keeps its series name with the relabelling README shows
        // (containerpilot_events here); unrelabelled, the control counter has its new name.
        eventually(Duration::from_secs(30), "app_retries_total and both built-in counters queryable", || {
            let r = api("/api/v1/query?query=app_retries_total")?;
            let v = r["data"]["result"].as_array()?.first()?["value"][1].as_str()?.to_string();
            let old = api("/api/v1/query?query=containerpilot_events%7Bcode%3D%22startup%22%7D")?;
            let new = api("/api/v1/query?query=containerpilot_control_http_requests_total")?;
            let found = |x: &Value| x["data"]["result"].as_array().is_some_and(|a| !a.is_empty());
            (v == "7" && found(&old) && found(&new)).then_some(())
        });
        let t = api("/api/v1/targets").expect("targets");
        let target = &t["data"]["activeTargets"][0];
        assert_eq!(target["lastError"], "", "{target}");
    }));
    let _ = prom.kill();
    let _ = prom.wait();
    if let Err(e) = up {
        panic!(
            "{:?}\nprometheus log:\n{}",
            e.downcast_ref::<String>(),
            std::fs::read_to_string(dir.join("prometheus.log")).unwrap_or_default()
        );
    }
    // An orderly exit takes the endpoint out of Consul, so Prometheus stops scraping it.
    p.signal(15);
    assert_eq!(p.wait(Duration::from_secs(20)), 0);
    assert!(agent.services("containerpilot").is_empty(), "telemetry service deregistered at exit");
}
