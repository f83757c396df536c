//! A real Consul agent for tests: `consul agent -dev` on free loopback ports (every listener
//! moved or disabled, so agents of parallel tests never collide), and a 3-server cluster
//! with a client agent for failover tests. Agents die with the test (Drop, and
//! PR_SET_PDEATHSIG if the test process itself dies).
#![allow(dead_code)]

use serde_json::Value;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The consul binary: $PILOT_CONSUL, else the one scripts/install-consul.sh caches, else PATH.
pub fn consul_bin() -> PathBuf {
    super::built_tool(
        "consul",
        "PILOT_CONSUL",
        "consul-build",
        "github.com/hashicorp/consul",
        "install-consul.sh",
        true,
    )
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// An HTTP client for checking what agents (and Prometheus) say: no proxy, 10 s limit,
/// error statuses returned rather than raised.
pub fn agent_http() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .proxy(None)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into()
}

pub struct Agent {
    child: Option<Child>,
    pub http: u16,
    args: Vec<String>,
    pub name: String,
    /// The agent's log and data directory, removed when the agent is dropped (after it is
    /// killed: `Drop for Agent` runs before its fields are dropped).
    dir: tempfile::TempDir,
    pub token: Option<String>,
}

impl Agent {
    /// A dev agent (in-memory server, own leader).
    pub fn dev() -> Agent {
        Agent::dev_with(&[])
    }

    pub fn dev_with(hcl: &[&str]) -> Agent {
        Agent::dev_full(free_port(), hcl)
    }

    /// A dev agent on a given HTTP port (to appear where a pilot already looks).
    pub fn dev_on(http: u16) -> Agent {
        Agent::dev_full(http, &[])
    }

    fn dev_full(http: u16, hcl: &[&str]) -> Agent {
        Agent::launch(http, None, hcl)
    }

    /// A dev agent that also serves HTTPS on `https`, with TLS settings in `tls_hcl`.
    pub fn dev_tls(https: u16, tls_hcl: &str) -> Agent {
        Agent::launch(free_port(), Some(https), &[tls_hcl])
    }

    fn launch(http: u16, https: Option<u16>, hcl: &[&str]) -> Agent {
        let name = format!("dev-{http}");
        let mut args: Vec<String> = vec![
            "agent".into(),
            "-dev".into(),
            "-node".into(),
            name.clone(),
            "-bind".into(),
            "127.0.0.1".into(),
            "-client".into(),
            "127.0.0.1".into(),
        ];
        args.extend(ports(http, free_port(), free_port()));
        if let Some(p) = https {
            let at = args.iter().position(|a| a == "-https-port").expect("ports() sets -https-port");
            args[at + 1] = p.to_string();
        }
        for h in hcl {
            args.extend(["-hcl".to_string(), h.to_string()]);
        }
        let mut a = Agent { child: None, http, args, name: name.clone(), dir: agent_dir(&name), token: None };
        a.start();
        a.wait_for_leader(Duration::from_secs(20));
        a
    }

    fn start(&mut self) {
        let log = std::fs::File::create(self.dir.path().join("consul.log")).unwrap();
        let mut cmd = Command::new(consul_bin());
        cmd.args(&self.args).stdin(Stdio::null()).stdout(log.try_clone().unwrap()).stderr(log);
        // The kernel kills the agent if the test process dies without running Drop.
        pilot::init::die_with_parent(&mut cmd);
        self.child = Some(cmd.spawn().expect("start consul"));
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.http)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("consul.log")).unwrap_or_default()
    }

    /// Stop the agent abruptly (its in-memory state is lost, as with a crash).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start again on the same ports.
    pub fn restart(&mut self) {
        self.kill();
        self.start();
        self.wait_for_leader(Duration::from_secs(30));
    }

    pub fn wait_for_leader(&self, limit: Duration) {
        let start = Instant::now();
        loop {
            if let Ok((200, body)) = self.try_get("/v1/status/leader")
                && body.trim().len() > 2
            {
                return;
            }
            assert!(
                start.elapsed() < limit,
                "consul agent {} had no leader within {limit:?}; its log:\n{}",
                self.name,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn try_get(&self, path: &str) -> Result<(u16, String), String> {
        let mut req = agent_http().get(format!("http://{}{path}", self.addr()));
        if let Some(t) = &self.token {
            req = req.header("X-Consul-Token", t);
        }
        let mut r = req.call().map_err(|e| e.to_string())?;
        Ok((r.status().as_u16(), r.body_mut().read_to_string().unwrap_or_default()))
    }

    pub fn get(&self, path: &str) -> Value {
        let (status, body) = self.try_get(path).unwrap_or_else(|e| panic!("GET {path}: {e}"));
        assert_eq!(status, 200, "GET {path}: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
    }

    pub fn put(&self, path: &str, body: &str) -> (u16, String) {
        let mut req = agent_http().put(format!("http://{}{path}", self.addr()));
        if let Some(t) = &self.token {
            req = req.header("X-Consul-Token", t);
        }
        let mut r = req.send(body).unwrap_or_else(|e| panic!("PUT {path}: {e}"));
        (r.status().as_u16(), r.body_mut().read_to_string().unwrap_or_default())
    }

    /// The agent's services whose name is `name`.
    pub fn services(&self, name: &str) -> Vec<Value> {
        let all = self.get("/v1/agent/services");
        all.as_object().unwrap().values().filter(|s| s["Service"] == name).cloned().collect()
    }

    /// The status of each check of the agent whose service name is `name`.
    pub fn check_status(&self, name: &str) -> Vec<(String, String, String)> {
        let all = self.get("/v1/agent/checks");
        let mut v: Vec<(String, String, String)> = all
            .as_object()
            .unwrap()
            .values()
            .filter(|c| c["ServiceName"] == name)
            .map(|c| {
                (
                    c["CheckID"].as_str().unwrap().to_string(),
                    c["Status"].as_str().unwrap().to_string(),
                    c["Output"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect();
        v.sort();
        v
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A fresh directory for an agent's log and data, `pilot-consul-NAME-XXXXXX` in the temp dir.
fn agent_dir(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new().prefix(&format!("pilot-consul-{name}-")).tempdir().expect("create a directory for consul")
}

/// Flags that move every listener of an agent: HTTP, server RPC and Serf LAN to the given
/// ports; DNS, Serf WAN, gRPC and gRPC-TLS (8503 on every server) off.
fn ports(http: u16, server: u16, serf_lan: u16) -> Vec<String> {
    [
        ("-http-port", http.to_string()),
        ("-server-port", server.to_string()),
        ("-serf-lan-port", serf_lan.to_string()),
        ("-serf-wan-port", "-1".into()),
        ("-dns-port", "-1".into()),
        ("-grpc-port", "-1".into()),
        ("-grpc-tls-port", "-1".into()),
        ("-https-port", "-1".into()),
    ]
    .into_iter()
    .flat_map(|(k, v)| [k.to_string(), v])
    .collect()
}

/// Three servers and a client agent on loopback, for failover tests.
pub struct Cluster {
    pub servers: Vec<Agent>,
    pub client: Agent,
}

impl Cluster {
    pub fn start() -> Cluster {
        let serf: Vec<u16> = (0..4).map(|_| free_port()).collect();
        let join = |skip: usize| -> Vec<String> {
            (0..3)
                .filter(|i| *i != skip)
                .flat_map(|i| ["-retry-join".to_string(), format!("127.0.0.1:{}", serf[i])])
                .collect()
        };
        let mut servers = Vec::new();
        for i in 0..3 {
            let http = free_port();
            let name = format!("server{i}-{}", serf[0]);
            let dir = agent_dir(&name);
            let mut args: Vec<String> = vec![
                "agent".into(),
                "-server".into(),
                "-bootstrap-expect".into(),
                "3".into(),
                "-node".into(),
                name.clone(),
                "-data-dir".into(),
                dir.path().join("data").display().to_string(),
                "-bind".into(),
                "127.0.0.1".into(),
                "-client".into(),
                "127.0.0.1".into(),
                "-retry-interval".into(),
                "1s".into(),
                "-hcl".into(),
                "performance { raft_multiplier = 1 }".into(),
            ];
            args.extend(ports(http, free_port(), serf[i]));
            args.extend(join(i));
            let mut a = Agent { child: None, http, args, name, dir, token: None };
            a.start();
            servers.push(a);
        }
        let http = free_port();
        let name = format!("client-{}", serf[0]);
        let dir = agent_dir(&name);
        let mut args: Vec<String> = vec![
            "agent".into(),
            "-node".into(),
            name.clone(),
            "-data-dir".into(),
            dir.path().join("data").display().to_string(),
            "-bind".into(),
            "127.0.0.1".into(),
            "-client".into(),
            "127.0.0.1".into(),
            "-retry-interval".into(),
            "1s".into(),
        ];
        args.extend(ports(http, free_port(), serf[3]));
        args.extend(join(3));
        let mut client = Agent { child: None, http, args, name, dir, token: None };
        client.start();
        for s in &servers {
            s.wait_for_leader(Duration::from_secs(60));
        }
        client.wait_for_leader(Duration::from_secs(60));
        Cluster { servers, client }
    }

    /// The index of the server that is leader now.
    pub fn leader(&self) -> usize {
        let (_, body) = self.client.try_get("/v1/status/leader").unwrap();
        let leader = body.trim().trim_matches('"').to_string();
        self.servers
            .iter()
            .position(|s| {
                let (_, me) = s.try_get("/v1/agent/self").unwrap();
                let v: Value = serde_json::from_str(&me).unwrap();
                let addr = format!("{}:{}", v["Member"]["Addr"].as_str().unwrap(), v["DebugConfig"]["ServerPort"]);
                addr == leader
            })
            .expect("leader is one of the servers")
    }
}
