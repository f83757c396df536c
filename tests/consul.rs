//! pilot against a real Consul agent (built by scripts/install-consul.sh): registration,
//! health reporting, unique IDs, deregistration, watches, maintenance, KV templates, ACLs,
//! and outages — the agent down at start, restarted under a running pilot, and a cluster
//! losing its leader.

mod common;

use common::consul::{Agent, Cluster};
use common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// A job `app` on port 8080 whose health check passes while `DIR/healthy` exists and
/// otherwise prints why and fails.
fn app_config(dir: &Path, consul: &str, extra_job: &str) -> String {
    let check = dir.join("check.sh");
    std::fs::write(
        &check,
        format!(
            "#!/bin/sh\ntest -f {0}/healthy && exit 0\necho \"app is sick: no {0}/healthy\"\nexit 1\n",
            dir.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&check, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    std::fs::write(dir.join("healthy"), "").unwrap();
    format!(
        r#"{{
  consul: "{consul}",
  jobs: [
    {{
      name: "app",
      exec: "sleep 1000",
      port: 8080,
      interfaces: ["static:127.0.0.1"],
      tags: ["t1"],
      meta: {{ role: "test" }},
      health: {{ exec: "{check}", interval: 1, ttl: 5, timeout: "2s" }},
    }},
    {extra_job}
  ]
}}"#,
        check = check.display()
    )
}

fn start_pilot(config: &str, env: &[(&str, &str)]) -> Running {
    let mut cmd = Command::new(pilot());
    cmd.args(["run", "-c", config])
        .env_remove("CONSUL_HTTP_ADDR")
        .env_remove("_CONDOR_SLOT")
        .env_remove("PILOT_INSTANCE");
    for (k, v) in env {
        cmd.env(k, v);
    }
    Running::start(&mut cmd)
}

fn wait_status(agent: &Agent, service: &str, want: &str) -> (String, String, String) {
    eventually(Duration::from_secs(20), &format!("check of {service} {want}"), || {
        agent.check_status(service).into_iter().find(|(_, s, _)| s == want)
    })
}

#[test]
fn registers_with_ttl_check_and_reports_health() {
    let agent = Agent::dev();
    let dir = scratch("register");
    let show_ip = r#"{ name: "show-ip", exec: ["sh", "-c", "echo ip=$CONTAINERPILOT_APP_IP"] }"#;
    let cfg = write_config(&dir, &app_config(&dir, &agent.addr(), show_ip));
    let pilot = start_pilot(&cfg, &[]);
    pilot.expect_line(|l| l.ends_with("ip=127.0.0.1"), "CONTAINERPILOT_APP_IP in the jobs' environment");

    let (check_id, _, _) = wait_status(&agent, "app", "passing");
    let services = agent.services("app");
    assert_eq!(services.len(), 1);
    let s = &services[0];
    let host = nix_hostname();
    let id = s["ID"].as_str().unwrap();
    assert!(id.starts_with(&format!("app-{host}-")), "ID {id} is name-hostname-instance");
    assert_eq!(check_id, format!("service:{id}"));
    assert_eq!((s["Address"].as_str(), s["Port"].as_u64()), (Some("127.0.0.1"), Some(8080)));
    assert_eq!(s["Tags"], serde_json::json!(["t1"]));
    assert_eq!(s["Meta"]["role"], "test");
    assert_eq!(s["Meta"]["pilot_hostname"], host.as_str());
    assert_eq!(s["Meta"]["pilot_instance_source"], "random");

    // The check fails: the TTL check goes critical at once, with the check's output.
    std::fs::remove_file(dir.join("healthy")).unwrap();
    let (_, _, output) = wait_status(&agent, "app", "critical");
    assert!(output.contains("app is sick"), "the check's output is the note: {output:?}");
    assert!(output.contains("exit status 1"), "{output:?}");
    std::fs::write(dir.join("healthy"), "").unwrap();
    wait_status(&agent, "app", "passing");
    // The service is in the catalog's health view too.
    let health = agent.get("/v1/health/service/app?passing=1");
    assert_eq!(health.as_array().unwrap().len(), 1);
    drop(pilot);
}

fn nix_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap().trim().to_string()
}

#[test]
fn two_pilots_with_one_config_on_one_host_get_two_registrations() {
    let agent = Agent::dev();
    let dir = scratch("two");
    let cfg = write_config(&dir, &app_config(&dir, &agent.addr(), ""));
    let a = start_pilot(&cfg, &[]);
    let b = start_pilot(&cfg, &[]);
    let passing = eventually(Duration::from_secs(20), "two passing instances", || {
        let v = agent.get("/v1/health/service/app?passing=1");
        (v.as_array().unwrap().len() == 2).then_some(v)
    });
    let ids: Vec<&str> = passing.as_array().unwrap().iter().map(|e| e["Service"]["ID"].as_str().unwrap()).collect();
    assert_ne!(ids[0], ids[1]);
    // One stops: only its own service goes.
    a.signal(15);
    assert_eq!(a.wait(Duration::from_secs(20)), 0, "no main payload: pilot exits 0 after an orderly stop");
    let left = eventually(Duration::from_secs(10), "one instance left", || {
        let s = agent.services("app");
        (s.len() == 1).then_some(s)
    });
    assert!(ids.contains(&left[0]["ID"].as_str().unwrap()));
    drop(b);
}

#[test]
fn htcondor_slot_makes_the_id_and_meta() {
    let agent = Agent::dev();
    let dir = scratch("slot");
    let cfg = write_config(&dir, &app_config(&dir, &agent.addr(), ""));
    let _p = start_pilot(&cfg, &[("_CONDOR_SLOT", "slot1_4")]);
    wait_status(&agent, "app", "passing");
    let s = &agent.services("app")[0];
    assert_eq!(s["ID"].as_str().unwrap(), format!("app-{}-slot1_4", nix_hostname()));
    assert_eq!(s["Meta"]["htcondor_slot"], "slot1_4");
    assert_eq!(s["Meta"]["pilot_instance_source"], "htcondor-slot");
}

#[test]
fn sigterm_deregisters_before_post_stop_jobs_run() {
    let agent = Agent::dev();
    let dir = scratch("deregister");
    let seen = dir.join("post-stop-saw");
    // The post-stop job asks the agent whether the service is still there.
    let post = format!(
        r#"{{ name: "post", when: {{ source: "app", once: "stopped" }}, exec: ["python3", "-c", "import json,urllib.request; s=json.load(urllib.request.urlopen('http://{}/v1/agent/services')); open('{}','w').write(str(sum(1 for v in s.values() if v['Service']=='app')))"] }}"#,
        agent.addr(),
        seen.display()
    );
    let cfg = write_config(&dir, &app_config(&dir, &agent.addr(), &post));
    let pilot = start_pilot(&cfg, &[]);
    wait_status(&agent, "app", "passing");
    pilot.signal(15);
    assert_eq!(pilot.wait(Duration::from_secs(20)), 0);
    assert!(agent.services("app").is_empty(), "deregistered on SIGTERM");
    assert_eq!(
        std::fs::read_to_string(&seen).expect("post-stop job ran"),
        "0",
        "the post-stop job ran after deregistration"
    );
}

#[test]
fn sigkilled_pilot_goes_critical_and_consul_reaps_it() {
    let agent = Agent::dev();
    let dir = scratch("sigkill");
    let text = app_config(&dir, &agent.addr(), "").replace("ttl: 5,", "ttl: 2, ").replace(
        "meta: { role: \"test\" },",
        "meta: { role: \"test\" }, consul: { deregisterCriticalServiceAfter: \"1m\" },",
    );
    let cfg = write_config(&dir, &text);
    let pilot = start_pilot(&cfg, &[]);
    wait_status(&agent, "app", "passing");
    let start = std::time::Instant::now();
    drop(pilot); // SIGKILL to pilot's process group: no chance to deregister
    wait_status(&agent, "app", "critical");
    eventually(Duration::from_secs(150), "service reaped by deregisterCriticalServiceAfter", || {
        agent.services("app").is_empty().then_some(())
    });
    assert!(start.elapsed() >= Duration::from_secs(60), "not before the 1m floor: {:?}", start.elapsed());
}

#[test]
fn watches_publish_changed_healthy_and_unhealthy() {
    let agent = Agent::dev();
    let dir = scratch("watch");
    let events = dir.join("events");
    let on = |code: &str| {
        format!(
            r#"{{ name: "on-{code}", when: {{ source: "watch.backend", each: "{code}" }}, exec: ["sh", "-c", "echo {code} >> {}"] }}"#,
            events.display()
        )
    };
    let cfg = write_config(
        &dir,
        &format!(
            r#"{{ consul: "{}", watches: [{{ name: "backend", interval: 1 }}],
                 jobs: [ {{ name: "main", exec: "sleep 1000" }}, {}, {}, {} ] }}"#,
            agent.addr(),
            on("changed"),
            on("healthy"),
            on("unhealthy")
        ),
    );
    let _pilot = start_pilot(&cfg, &[]);
    let read = || std::fs::read_to_string(&events).unwrap_or_default();
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(read(), "", "no event for a service with no instances at start-up (as ContainerPilot)");
    let (st, body) = agent
        .put("/v1/agent/service/register", r#"{"ID":"backend-1","Name":"backend","Port":9000,"Address":"127.0.0.2"}"#);
    assert_eq!(st, 200, "{body}");
    // The two jobs of one answer run side by side: their lines may land in either order.
    let pairs = || {
        let lines: Vec<String> = read().lines().map(str::to_string).collect();
        lines
            .chunks(2)
            .map(|c| {
                let mut c = c.to_vec();
                c.sort();
                c.join("+")
            })
            .collect::<Vec<_>>()
    };
    eventually(Duration::from_secs(10), "changed+healthy", || (pairs() == ["changed+healthy"]).then_some(()));
    agent.put("/v1/agent/service/deregister/backend-1", "");
    eventually(Duration::from_secs(10), "changed+unhealthy", || {
        (pairs() == ["changed+healthy", "changed+unhealthy"]).then_some(())
    });
}

#[test]
fn maintenance_mode_toggles_the_agent_service_maintenance() {
    use pilot::consul::{Command as C, Output, address::AgentAddress, http::Client, service, worker};
    let agent = Agent::dev();
    let dir = scratch("maint");
    let cfg = write_config(&dir, &app_config(&dir, &agent.addr(), ""));
    let loaded = pilot::config::load(PathBuf::from(&cfg), &pilot::config::environment(&[]));
    let config = loaded.config.expect("valid config");
    let address = AgentAddress::resolve(config.consul.as_ref(), &|_| None).unwrap();
    let ident = service::Identity::detect(&|_| None);
    let def = service::ServiceDef::for_job(&config.jobs[0], &ident, "127.0.0.1".parse().unwrap(), &Default::default())
        .unwrap();
    let id = def.id.clone();
    let states: worker::States = Default::default();
    let tx = worker::start(Client::new(&address).unwrap(), vec![def], None, states.clone());
    tx.send(C::Health { job: "app".into(), passing: true, output: Output::Text(String::new()) }).unwrap();
    wait_status(&agent, "app", "passing");
    tx.send(C::Maintenance { on: true }).unwrap();
    tx.send(C::Health { job: "app".into(), passing: true, output: Output::Text(String::new()) }).unwrap();
    let maint = format!("_service_maintenance:{id}");
    eventually(Duration::from_secs(10), "maintenance check", || {
        agent.check_status("app").into_iter().find(|(c, s, _)| *c == maint && s == "critical")
    });
    assert!(
        agent.get("/v1/health/service/app?passing=1").as_array().unwrap().is_empty(),
        "in maintenance: not passing"
    );
    tx.send(C::Maintenance { on: false }).unwrap();
    tx.send(C::Health { job: "app".into(), passing: true, output: Output::Text(String::new()) }).unwrap();
    eventually(Duration::from_secs(10), "maintenance off", || {
        agent.check_status("app").iter().all(|(c, _, _)| *c != maint).then_some(())
    });
    let state = states.lock().unwrap().get("app").map(|s| s.text.clone()).unwrap_or_default();
    assert!(state.starts_with(&format!("registered as {id} (passing)")), "pilot status shows it: {state}");
    assert_eq!(agent.get("/v1/health/service/app?passing=1").as_array().unwrap().len(), 1);
}

#[test]
fn kv_values_reach_the_config() {
    let agent = Agent::dev();
    let dir = scratch("kv");
    assert_eq!(agent.put("/v1/kv/site/greeting", "hello from consul").0, 200);
    let text = format!(
        r#"{{ consul: "{}", jobs: [ {{ name: "say", exec: ["echo", "{{{{ kv "site/greeting" }}}}|{{{{ kv "site/missing" "fallback" }}}}"] }} ] }}"#,
        agent.addr()
    );
    let cfg = write_config(&dir, &text);
    let out = run_limited(Command::new(pilot()).args(["template", "-c", &cfg]), Duration::from_secs(10));
    assert!(out.status.success(), "{}", text_of(&out.stderr));
    assert!(text_of(&out.stdout).contains(r#"["echo", "hello from consul|fallback"]"#), "{}", text_of(&out.stdout));
    let running = start_pilot(&cfg, &[]);
    running.expect_line(|l| l.contains("hello from consul|fallback"), "the job's output");

    // A key that is not there and has no default stops the start with the key's name.
    let bad = write_config(&dir, &text.replace("site/greeting", "site/nope"));
    let out = run_limited(Command::new(pilot()).args(["run", "-c", &bad]), Duration::from_secs(10));
    assert_eq!(out.status.code(), Some(1));
    assert!(text_of(&out.stderr).contains(r#""site/nope" is not in Consul"#), "{}", text_of(&out.stderr));
}

fn text_of(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

const ACL: &str =
    r#"acl { enabled = true default_policy = "deny" tokens { initial_management = "root-secret-1234" } }"#;

#[test]
fn acl_token_from_a_token_file_and_a_clear_403() {
    let mut agent = Agent::dev_with(&[ACL]);
    agent.token = Some("root-secret-1234".into());
    let dir = scratch("acl");
    let token_file = dir.join("token");
    std::fs::write(&token_file, "root-secret-1234\n").unwrap();
    let cfg = write_config(&dir, &app_config(&dir, "", "").replace("consul: \"\",", ""));

    // Without a token: the agent refuses, pilot says which permission is missing, the job runs on.
    let denied = start_pilot(&cfg, &[("CONSUL_HTTP_ADDR", &agent.addr())]);
    denied.expect_line_within(
        |l| l.contains("403") && l.contains("service:write on \"app\""),
        "a 403 naming service:write",
        Duration::from_secs(20),
    );
    drop(denied);

    let p = start_pilot(
        &cfg,
        &[("CONSUL_HTTP_ADDR", &agent.addr()), ("CONSUL_HTTP_TOKEN_FILE", token_file.to_str().unwrap())],
    );
    wait_status(&agent, "app", "passing");
    drop(p);
}

#[test]
fn the_token_is_never_printed() {
    let dir = scratch("token-print");
    let cfg = write_config(
        &dir,
        r#"{ consul: { address: "127.0.0.1:1", token: "{{ .TOKEN }}" }, jobs: [{ name: "a", exec: "true" }] }"#,
    );
    let out = run_limited(
        Command::new(pilot()).args(["template", "-c", &cfg]).env("TOKEN", "s3cr3t-token"),
        Duration::from_secs(10),
    );
    assert!(out.status.success());
    let printed = text_of(&out.stdout);
    assert!(!printed.contains("s3cr3t-token") && printed.contains("<redacted>"), "{printed}");
}

#[test]
fn agent_down_at_start_then_up_registers_with_backoff() {
    let port = common::consul::free_port();
    let dir = scratch("down-at-start");
    let cfg = write_config(
        &dir,
        &app_config(
            &dir,
            &format!("127.0.0.1:{port}"),
            r#"{ name: "main", exec: ["sh", "-c", "echo payload running; sleep 1000"] }"#,
        ),
    );
    let pilot = start_pilot(&cfg, &[]);
    pilot.expect_line(|l| l.contains("payload running"), "the payload starts without Consul");
    pilot.expect_line(|l| l.contains("connection refused") && l.contains("payload unaffected"), "one warning");
    // Bring an agent up on that port: registration follows within the backoff cap.
    let agent = agent_on(port);
    wait_status_within(&agent, "app", "passing", Duration::from_secs(45));
    drop(pilot);
}

fn agent_on(port: u16) -> Agent {
    // dev_with picks its own port; restart it on `port` by rewriting its arguments.
    Agent::dev_on(port)
}

fn wait_status_within(agent: &Agent, service: &str, want: &str, limit: Duration) {
    eventually(limit, &format!("check of {service} {want}"), || {
        agent.check_status(service).into_iter().find(|(_, s, _)| s == want)
    });
}

#[test]
fn agent_restart_loses_state_and_pilot_registers_again() {
    let mut agent = Agent::dev();
    let dir = scratch("restart");
    let marker = dir.join("payload-pid");
    let cfg = write_config(&dir, &app_config(&dir, &agent.addr(), ""));
    let mut cmd = Command::new(pilot());
    cmd.args(["run", "-c", &cfg, "--", "sh", "-c"]).arg(format!("echo $$ > {}; exec sleep 1000", marker.display()));
    let pilot = Running::start(&mut cmd);
    wait_status(&agent, "app", "passing");
    let payload = eventually(Duration::from_secs(5), "payload pid", || std::fs::read_to_string(&marker).ok());
    agent.restart();
    assert!(agent.services("app").is_empty(), "a dev agent forgets its services");
    // Back within one TTL (5 s) after the agent answers again.
    wait_status_within(&agent, "app", "passing", Duration::from_secs(10));
    assert!(Path::new(&format!("/proc/{}", payload.trim())).exists(), "the payload never noticed");
    pilot.signal(15);
    assert_eq!(pilot.wait(Duration::from_secs(20)), 143, "exit status is the payload's (killed by SIGTERM)");
}

#[test]
fn cluster_leader_loss_does_not_stop_health_reports() {
    let mut cluster = Cluster::start();
    let dir = scratch("cluster");
    let cfg = write_config(&dir, &app_config(&dir, &cluster.client.addr(), ""));
    let _pilot = start_pilot(&cfg, &[]);
    wait_status(&cluster.client, "app", "passing");
    let leader = cluster.leader();
    cluster.servers[leader].kill();
    // A new leader is elected among the two left; pilot keeps reporting through its agent.
    cluster.client.wait_for_leader(Duration::from_secs(30));
    std::fs::remove_file(dir.join("healthy")).unwrap();
    wait_status(&cluster.client, "app", "critical");
    std::fs::write(dir.join("healthy"), "").unwrap();
    wait_status(&cluster.client, "app", "passing");
    // Reads through the client may hit the dead server's connection until it is marked failed.
    let health = eventually(Duration::from_secs(30), "passing in the catalog after failover", || {
        let (status, body) = cluster.client.try_get("/v1/health/service/app?passing=1").ok()?;
        let v: Value = serde_json::from_str(&body).ok().filter(|_| status == 200)?;
        (v.as_array()?.len() == 1).then_some(v)
    });
    assert_eq!(health[0]["Service"]["Port"], 8080);
}

#[test]
fn figure2_config_runs_with_stand_in_programs() {
    let agent = Agent::dev();
    let dir = scratch("figure2");
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let stub = |name: &str, body: &str| {
        let p = bin.join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    };
    stub("consul", "echo stand-in consul agent \"$@\"; exec sleep 1000");
    stub("condor_master", "echo stand-in condor_master \"$@\"; exec sleep 1000");
    stub("condor_config_val", &format!("cat {}/startjobs", dir.display()));
    std::fs::write(dir.join("startjobs"), "True\n").unwrap();
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/apptainer/examples/figure2-worker-node.json5"))
            .unwrap()
            .replace("localhost:8500", &agent.addr())
            .replace("interval: \"60\"", "interval: \"1\"");
    let cfg = write_config(&dir, &text);
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let out = run_limited(
        Command::new(pilot()).args(["check-config", "-c", &cfg]).env("PATH", &path),
        Duration::from_secs(10),
    );
    assert!(out.status.success(), "{}{}", text_of(&out.stdout), text_of(&out.stderr));
    let p = start_pilot(&cfg, &[("PATH", &path)]);
    p.expect_line(|l| l.contains("stand-in condor_master -f"), "condor_master started");
    let s = eventually(Duration::from_secs(20), "condor-master registered", || agent.services("condor-master").pop());
    assert_eq!(s["Port"], 9621);
    assert_eq!(s["Tags"], serde_json::json!(["cntwn", "prod"]));
    wait_status(&agent, "condor-master", "passing");
    drop(p);
}

#[test]
fn agent_on_a_unix_socket_via_consul_http_addr() {
    let dir = scratch("unix");
    let sock = dir.join("consul.sock");
    let hcl = format!(r#"addresses {{ http = "127.0.0.1 unix://{}" }}"#, sock.display());
    let agent = Agent::dev_with(&[&hcl]);
    let cfg = write_config(&dir, &app_config(&dir, "", "").replace("consul: \"\",", ""));
    let _p = start_pilot(&cfg, &[("CONSUL_HTTP_ADDR", &format!("unix://{}", sock.display()))]);
    wait_status(&agent, "app", "passing");
}

#[test]
fn https_agent_with_a_ca_file() {
    let dir = scratch("tls");
    // Consul makes its own CA and server certificate (SANs include 127.0.0.1).
    for args in [&["tls", "ca", "create"][..], &["tls", "cert", "create", "-server", "-dc", "dc1"][..]] {
        let out = run_limited(
            Command::new(common::consul::consul_bin()).args(args).current_dir(&dir),
            Duration::from_secs(20),
        );
        assert!(out.status.success(), "consul {args:?}: {}", text_of(&out.stderr));
    }
    let pem = |f: &str| dir.join(f).display().to_string();
    let tls = format!(
        r#"tls {{ defaults {{ ca_file = "{}" cert_file = "{}" key_file = "{}" verify_incoming = false }} }}"#,
        pem("consul-agent-ca.pem"),
        pem("dc1-server-consul-0.pem"),
        pem("dc1-server-consul-0-key.pem")
    );
    let https = common::consul::free_port();
    let agent = Agent::dev_tls(https, &tls);
    let cfg = write_config(&dir, &app_config(&dir, "", "").replace("consul: \"\",", ""));
    let url = format!("https://127.0.0.1:{https}");

    // The agent's CA is not a public one: without CONSUL_CACERT the certificate is refused.
    let refused = start_pilot(&cfg, &[("CONSUL_HTTP_ADDR", &url)]);
    refused.expect_line_within(
        |l| l.contains("consul:") && l.to_lowercase().contains("certificate"),
        "a certificate error",
        Duration::from_secs(20),
    );
    drop(refused);

    let p = start_pilot(&cfg, &[("CONSUL_HTTP_ADDR", &url), ("CONSUL_CACERT", &pem("consul-agent-ca.pem"))]);
    wait_status(&agent, "app", "passing");
    p.signal(15);
    assert_eq!(p.wait(Duration::from_secs(20)), 0);
    assert!(agent.services("app").is_empty(), "deregistered at exit");

    // Without CONSUL_CACERT pilot trusts the system's roots as Go's crypto/x509 finds them
    // (pilot carries no CA set of its own): here the site's CA is the system bundle.
    let empty = dir.join("no-certs");
    std::fs::create_dir_all(&empty).unwrap();
    let system = [
        ("CONSUL_HTTP_ADDR", url.as_str()),
        ("SSL_CERT_FILE", &pem("consul-agent-ca.pem")),
        ("SSL_CERT_DIR", empty.to_str().unwrap()),
    ];
    let p = start_pilot(&cfg, &system);
    wait_status(&agent, "app", "passing");
    drop(p);

    // No roots anywhere: a clear error that names what to set.
    let none = start_pilot(
        &cfg,
        &[
            ("CONSUL_HTTP_ADDR", url.as_str()),
            ("SSL_CERT_FILE", "/nonexistent"),
            ("SSL_CERT_DIR", empty.to_str().unwrap()),
        ],
    );
    none.expect_line_within(
        |l| l.contains("no CA certificates") && l.contains("CONSUL_CACERT"),
        "an error naming CONSUL_CACERT",
        Duration::from_secs(20),
    );
    drop(none);

    // A client key of another certificate: a clear error when the client is made, not a
    // panic in the Consul worker at its first connection (where ureq builds the TLS config).
    let ca = pem("consul-agent-ca.pem");
    let wrong_key = pem("dc1-server-consul-0-key.pem");
    let wrong = start_pilot(
        &cfg,
        &[
            ("CONSUL_HTTP_ADDR", url.as_str()),
            ("CONSUL_CACERT", &ca),
            ("CONSUL_CLIENT_CERT", &ca),
            ("CONSUL_CLIENT_KEY", &wrong_key),
        ],
    );
    let line = wrong.expect_line_within(
        |l| l.contains("not a usable pair") || l.contains("panicked"),
        "an error about the certificate and key",
        Duration::from_secs(20),
    );
    assert!(line.contains("not a usable pair") && line.contains("dc1-server-consul-0-key.pem"), "{line}");
}

#[test]
fn reload_moves_the_registration_to_the_new_config() {
    let agent = Agent::dev();
    let dir = scratch("reload-consul");
    let socket = dir.join("ctl.sock");
    let text = app_config(&dir, &agent.addr(), "").replacen(
        "{\n",
        &format!("{{\n  control: {{ socket: \"{}\" }},\n", socket.display()),
        1,
    );
    let cfg = write_config(&dir, &text);
    let _p = start_pilot(&cfg, &[]);
    wait_status(&agent, "app", "passing");
    std::fs::write(&cfg, text.replace("tags: [\"t1\"]", "tags: [\"t2\"]")).unwrap();
    let out = run_limited(Command::new(pilot()).args(["reload", "--socket"]).arg(&socket), Duration::from_secs(10));
    assert!(out.status.success(), "{}", text_of(&out.stderr));
    let s = eventually(Duration::from_secs(20), "re-registered with the new tags", || {
        agent.services("app").into_iter().find(|s| s["Tags"] == serde_json::json!(["t2"]))
    });
    assert_eq!(agent.services("app").len(), 1, "one registration: {s}");
    wait_status(&agent, "app", "passing");
    let status =
        run_limited(Command::new(pilot()).args(["status", "--json", "--socket"]).arg(&socket), Duration::from_secs(10));
    let v: Value = serde_json::from_slice(&status.stdout).unwrap();
    let app = v["jobs"].as_array().unwrap().iter().find(|j| j["name"] == "app").unwrap();
    assert!(app["consul"].as_str().unwrap_or("").starts_with("registered as app-"), "{v}");
}

#[test]
fn short_lived_pilots_leave_no_registration_behind() {
    let agent = Agent::dev();
    let dir = scratch("churn");
    let cfg = write_config(
        &dir,
        &format!(
            r#"{{ consul: "{}", jobs: [ {{ name: "churn", exec: "sleep 0.3", port: 8080, initial_status: "passing",
                 interfaces: ["static:127.0.0.1"], health: {{ exec: "true", interval: 10, ttl: 30 }} }} ] }}"#,
            agent.addr()
        ),
    );
    let pilots: Vec<_> = (0..20)
        .map(|_| {
            Command::new(pilot())
                .args(["run", "-c", &cfg])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for mut p in pilots {
        assert!(p.wait().unwrap().success());
    }
    assert_eq!(agent.services("churn").len(), 0, "every pilot deregistered before it exited");
}
