//! A small blocking client for the agent's HTTP API, on `ureq`: keep-alive connections, a
//! timeout on every call, the token in `X-Consul-Token`, TLS as configured. It only moves
//! bytes; what a status code means for pilot is decided by the callers.

use super::address::{AgentAddress, Endpoint};
use std::time::Duration;
use ureq::tls::{Certificate, ClientCert, PemItem, PrivateKey, RootCerts, TlsConfig};

/// Short calls (register, TTL update, deregister, KV): the agent answers these locally.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// The largest answer read for a GET: a watch of a service with thousands of instances is a
/// few MB; anything beyond is refused rather than held in memory.
const GET_REPLY_MAX: u64 = 64 << 20;
/// The largest answer read for a PUT (register, TTL update, deregister, maintenance): the
/// agent answers these with a line at most; a flood of bytes is a broken agent.
const PUT_REPLY_MAX: u64 = 1 << 20;

#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: String,
    /// `X-Consul-Index`, for blocking queries.
    pub index: Option<u64>,
}

impl Reply {
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// A failure to get any HTTP answer at all (refused, timed out, TLS). An HTTP error status is
/// not a `Failure`: it comes back as a `Reply`.
#[derive(Debug)]
pub struct Failure(pub String);

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Clone)]
pub struct Client {
    agent: ureq::Agent,
    base: String,
    token: Option<String>,
    pub address: AgentAddress,
}

impl Client {
    pub fn new(address: &AgentAddress) -> Result<Client, String> {
        let (https, host_port, prefix) = match &address.endpoint {
            Endpoint::Tcp { https, host_port, prefix } => (*https, host_port.as_str(), prefix.as_str()),
            // Over the socket the URL's host is only a placeholder for the Host header.
            Endpoint::Unix(_) => (false, "localhost", ""),
        };
        let mut tls = TlsConfig::builder().disable_verification(!address.tls.verify);
        if https {
            if let Some(roots) = root_certs(address)? {
                tls = tls.root_certs(roots);
            }
            if let (Some(cert), Some(key)) = (&address.tls.client_cert, &address.tls.client_key) {
                tls = tls.client_cert(Some(client_cert(cert, key)?));
            }
            if let Some(name) = &address.tls.server_name {
                log::warn!(
                    "consul: TLS server name '{name}' is not supported; the agent's certificate must name {host_port}"
                );
            }
        }
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            // A site's HTTP proxy must never carry node-local agent traffic.
            .proxy(None)
            .timeout_global(Some(CALL_TIMEOUT))
            // Even under a blocking query's long timeout: a connect is what a stop cannot cut.
            .timeout_connect(Some(CALL_TIMEOUT))
            .max_idle_connections_per_host(4)
            .user_agent(concat!("pilot/", env!("CARGO_PKG_VERSION")))
            .tls_config(tls.build())
            .build();
        let agent = agent_for(&address.endpoint, config);
        let scheme = if https { "https" } else { "http" };
        Ok(Client {
            agent,
            base: format!("{scheme}://{host_port}{prefix}"),
            token: address.token.clone(),
            address: address.clone(),
        })
    }

    /// A client for the same agent with the same settings but its own connections, so
    /// that shutting it down (a watch that stops) leaves this one's calls alone.
    pub fn separate(&self) -> Client {
        Client { agent: agent_for(&self.address.endpoint, self.agent.config().clone()), ..self.clone() }
    }

    /// End every call of this client and its clones, at once: idle connections close, a
    /// call blocked on the socket (a blocking query) fails straight away, and later calls
    /// fail. For a watch whose config was replaced.
    pub fn shutdown(&self) {
        self.agent.clone().shutdown();
    }

    pub fn put(&self, path: &str, body: Option<&serde_json::Value>) -> Result<Reply, Failure> {
        let req = self.agent.put(format!("{}{path}", self.base));
        let req = match &self.token {
            Some(t) => req.header("X-Consul-Token", t),
            None => req,
        };
        let result = match body {
            Some(b) => req.content_type("application/json").send(&serde_json::to_vec(b).unwrap_or_default()),
            None => req.send_empty(),
        };
        self.finish(result, path, PUT_REPLY_MAX)
    }

    /// A GET; `timeout` overrides the short default (blocking queries wait for minutes).
    pub fn get(&self, path: &str, timeout: Option<Duration>) -> Result<Reply, Failure> {
        let req = self.agent.get(format!("{}{path}", self.base));
        let req = match &self.token {
            Some(t) => req.header("X-Consul-Token", t),
            None => req,
        };
        let req = req.config().timeout_global(Some(timeout.unwrap_or(CALL_TIMEOUT))).build();
        self.finish(req.call(), path, GET_REPLY_MAX)
    }

    fn finish(
        &self,
        result: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
        path: &str,
        limit: u64,
    ) -> Result<Reply, Failure> {
        let path = path.split('?').next().unwrap_or(path);
        let mut resp = result.map_err(|e| Failure(format!("{} {path}: {}", self.address.display(), describe(&e))))?;
        let index = resp.headers().get("X-Consul-Index").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
        let status = resp.status().as_u16();
        let body =
            resp.body_mut().with_config().limit(limit).read_to_string().map_err(|e| {
                Failure(format!("{} {path}: reading the answer: {}", self.address.display(), describe(&e)))
            })?;
        Ok(Reply { status, body, index })
    }
}

fn agent_for(endpoint: &Endpoint, config: ureq::config::Config) -> ureq::Agent {
    match endpoint {
        Endpoint::Unix(path) => ureq::Agent::with_parts(
            config,
            crate::unix_http::UnixConnector(path.clone()),
            ureq::unversioned::resolver::DefaultResolver::default(),
        ),
        Endpoint::Tcp { .. } => ureq::Agent::with_parts(
            config,
            ureq::unversioned::transport::DefaultConnector::default(),
            super::resolve::LiteralFirst::default(),
        ),
    }
}

fn describe(e: &ureq::Error) -> String {
    match e {
        ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => {
            "connection refused (is the agent running?)".into()
        }
        ureq::Error::Timeout(t) => format!("timed out ({t})"),
        other => other.to_string(),
    }
}

fn read(path: &std::path::Path, what: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read the {what} {}: {e}", path.display()))
}

fn certs_in(path: &std::path::Path, what: &str) -> Result<Vec<Certificate<'static>>, String> {
    let pem = read(path, what)?;
    let mut out = Vec::new();
    for item in ureq::tls::parse_pem(&pem) {
        if let PemItem::Certificate(c) = item.map_err(|e| format!("{} ({what}): {e}", path.display()))? {
            out.push(c);
        }
    }
    if out.is_empty() {
        return Err(format!("{} ({what}): no PEM certificate in it", path.display()));
    }
    Ok(out)
}

/// CONSUL_CACERT replaces the system roots (as the Go client does); CONSUL_CAPATH is used
/// only without it.
fn root_certs(a: &AgentAddress) -> Result<Option<RootCerts>, String> {
    if let Some(file) = &a.tls.cacert {
        return Ok(Some(RootCerts::new_with_certs(&certs_in(file, "CA certificate")?)));
    }
    let Some(dir) = &a.tls.capath else { return Ok(None) };
    let mut all = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|e| format!("cannot read the CA directory {}: {e}", dir.display()))?;
    for entry in entries.flatten() {
        if let Ok(mut certs) = certs_in(&entry.path(), "CA certificate") {
            all.append(&mut certs);
        }
    }
    if all.is_empty() {
        return Err(format!("{}: no PEM CA certificates found in this directory", dir.display()));
    }
    Ok(Some(RootCerts::new_with_certs(&all)))
}

fn client_cert(cert: &std::path::Path, key: &std::path::Path) -> Result<ClientCert, String> {
    let chain = certs_in(cert, "client certificate")?;
    let key_pem = read(key, "client key")?;
    let key = PrivateKey::from_pem(&key_pem).map_err(|e| format!("{} (client key): {e}", key.display()))?;
    Ok(ClientCert::new_with_certs(&chain, key))
}
