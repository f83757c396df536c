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

/// Each connection's input and output buffers. ureq's default is 128 KiB each, allocated
/// (and zeroed, so resident) with the connection: 256 KiB of pilot's anonymous memory for
/// the Consul worker's one pooled connection, and as much again per watch. The agent's
/// answers to pilot are a header of a few hundred bytes and a body that ureq streams through
/// the input buffer (a large watch answer only takes more reads), and pilot's requests are a
/// header plus a JSON body that is sent in buffer-sized pieces, so 16 KiB each loses
/// nothing (measured: 272 KiB less RSS with Consul, docs/runtime-footprint.md).
pub const BUFFER_SIZE: usize = 16 << 10;
/// The largest answer header accepted: Consul's are under 1 KiB, and 12 KiB leaves room for
/// a proxy's additions. Smaller than the input buffer: a header that fills the buffer would
/// otherwise end as a misleading "peer disconnected" (ureq reads into a full buffer) instead
/// of "response header is too big".
const REPLY_HEADER_MAX: usize = BUFFER_SIZE - (4 << 10);

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
        // ring, set here rather than by ureq's `rustls` feature, which would also bring in
        // Mozilla's roots (webpki-roots): pilot uses the system's or the site's CA instead.
        let mut tls = TlsConfig::builder()
            .unversioned_rustls_crypto_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
            .disable_verification(!address.tls.verify);
        if https {
            if address.tls.verify {
                tls = tls.root_certs(root_certs(address)?);
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
            .input_buffer_size(BUFFER_SIZE)
            .output_buffer_size(BUFFER_SIZE)
            .max_response_header_size(REPLY_HEADER_MAX)
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

    /// A PUT with `body` as its JSON, serialized straight into the request's bytes (no
    /// intermediate `serde_json::Value` for a TTL update, which goes out every check).
    pub fn put_json(&self, path: &str, body: &impl serde::Serialize) -> Result<Reply, Failure> {
        self.put(path, Some(body))
    }

    /// A PUT without a body.
    pub fn put_empty(&self, path: &str) -> Result<Reply, Failure> {
        self.put(path, None::<&()>)
    }

    fn put(&self, path: &str, body: Option<&impl serde::Serialize>) -> Result<Reply, Failure> {
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

/// The largest CA bundle or key file read (Debian's bundle of ~140 roots is 0.2 MB).
const PEM_FILE_MAX: u64 = 8 << 20;

/// A PEM file: regular and bounded (fsread), so a FIFO or `/dev/zero` given as
/// `CONSUL_CACERT`, or lying in a CA directory, is an error and not a hang of the thread
/// that builds the client.
fn read(path: &std::path::Path, what: &str) -> Result<Vec<u8>, String> {
    crate::fsread::read_regular(path, PEM_FILE_MAX).map(String::into_bytes).map_err(|e| format!("the {what}: {e}"))
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
/// only without it; without either, the system's roots, as Go finds them.
fn root_certs(a: &AgentAddress) -> Result<RootCerts, String> {
    if let Some(file) = &a.tls.cacert {
        return Ok(RootCerts::new_with_certs(&certs_in(file, "CA certificate")?));
    }
    let Some(dir) = &a.tls.capath else { return system_roots() };
    let all = certs_in_dir(dir);
    if all.is_empty() {
        return Err(format!("{}: no PEM CA certificates found in this directory", dir.display()));
    }
    Ok(RootCerts::new_with_certs(&all))
}

fn certs_in_dir(dir: &std::path::Path) -> Vec<Certificate<'static>> {
    let mut all = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if let Ok(mut certs) = certs_in(&entry.path(), "CA certificate") {
            all.append(&mut certs);
        }
    }
    all
}

/// The bundles Go's crypto/x509 tries on Linux, first found wins (Debian, Fedora, openSUSE,
/// OpenELEC, CentOS/RHEL 7, Alpine): what Consul's CLI and ContainerPilot trust by default.
const SYSTEM_BUNDLES: [&str; 6] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/pki/tls/cacert.pem",
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
    "/etc/ssl/cert.pem",
];
/// The directories Go reads besides the bundle.
const SYSTEM_DIRS: [&str; 2] = ["/etc/ssl/certs", "/etc/pki/tls/certs"];

/// The system's roots as Go's crypto/x509 loads them: `SSL_CERT_FILE` or the first bundle
/// found, plus every certificate in `SSL_CERT_DIR` (colon-separated) or the usual
/// directories. pilot carries no roots of its own (Mozilla's set cost 0.2 MB of the binary,
/// and grid sites trust their own CA): none found is an error naming what to set.
fn system_roots() -> Result<RootCerts, String> {
    let file = std::env::var_os("SSL_CERT_FILE").map(std::path::PathBuf::from);
    let bundles: Vec<std::path::PathBuf> = match file {
        Some(f) => vec![f],
        None => SYSTEM_BUNDLES.iter().map(std::path::PathBuf::from).collect(),
    };
    let mut all = bundles.iter().find_map(|b| certs_in(b, "CA bundle").ok()).unwrap_or_default();
    let dirs: Vec<std::path::PathBuf> = match std::env::var_os("SSL_CERT_DIR") {
        Some(d) => std::env::split_paths(&d).collect(),
        None => SYSTEM_DIRS.iter().map(std::path::PathBuf::from).collect(),
    };
    for dir in dirs {
        all.append(&mut certs_in_dir(&dir));
    }
    // The bundle's certificates are in the directory too (Debian links them there).
    all.sort_by(|a, b| a.der().cmp(b.der()));
    all.dedup_by(|a, b| a.der() == b.der());
    if all.is_empty() {
        return Err(format!(
            "https: no CA certificates in this container (tried {}, {} and $SSL_CERT_FILE/$SSL_CERT_DIR): set CONSUL_CACERT or tls.cafile to the site's CA",
            SYSTEM_BUNDLES.join(", "),
            SYSTEM_DIRS.join(", ")
        ));
    }
    Ok(RootCerts::new_with_certs(&all))
}

fn client_cert(cert: &std::path::Path, key_path: &std::path::Path) -> Result<ClientCert, String> {
    let chain = certs_in(cert, "client certificate")?;
    let key_pem = read(key_path, "client key")?;
    let key = PrivateKey::from_pem(&key_pem).map_err(|e| format!("{} (client key): {e}", key_path.display()))?;
    check_pair(&chain, &key_pem).map_err(|e| format!("{} and {}: {e}", cert.display(), key_path.display()))?;
    Ok(ClientCert::new_with_certs(&chain, key))
}

/// Whether rustls takes this certificate and key as a pair. ureq builds its TLS config at
/// the first connection and panics (in the Consul worker's thread) if rustls refuses them:
/// a key of another certificate, or of a kind ring cannot sign with, is an error here instead.
fn check_pair(chain: &[Certificate<'static>], key_pem: &[u8]) -> Result<(), String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| format!("the client key: {e}"))?;
    let chain = chain.iter().map(|c| CertificateDer::from(c.der().to_vec())).collect();
    rustls::sign::CertifiedKey::from_der(chain, key, &rustls::crypto::ring::default_provider())
        .map(|_| ())
        .map_err(|e| format!("the client certificate and key are not a usable pair: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consul::address::{Endpoint, Tls};

    fn https_with(tls: Tls) -> AgentAddress {
        let endpoint = Endpoint::Tcp { https: true, host_port: "127.0.0.1:8501".into(), prefix: String::new() };
        AgentAddress { endpoint, token: None, tls }
    }

    /// `Client::new` on another thread: a hang (the old `std::fs::read` of a FIFO) fails the
    /// test instead of blocking it.
    fn client_within(a: AgentAddress) -> Result<(), String> {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || tx.send(Client::new(&a).map(|_| ())));
        rx.recv_timeout(Duration::from_secs(10)).expect("Client::new hung on a FIFO")
    }

    /// The connection buffers are small (a structural fact: 16 KiB each, not ureq's 128), and
    /// small buffers still carry a request body and an answer many times their size: a
    /// registration with a lot of meta (HTCondor ads) and a watch of a large service.
    #[test]
    fn small_buffers_carry_large_bodies() {
        use std::io::{BufRead, BufReader, Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let (conn, _) = listener.accept().unwrap();
            let mut r = BufReader::new(conn.try_clone().unwrap());
            let mut w = conn;
            for _ in 0..2 {
                let mut length = 0;
                loop {
                    let mut line = String::new();
                    r.read_line(&mut line).unwrap();
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap();
                    }
                    if line == "\r\n" {
                        break;
                    }
                }
                let mut body = vec![0; length];
                r.read_exact(&mut body).unwrap();
                // A GET gets a 1 MiB answer; a PUT gets the length of the body it sent.
                let answer = if body.is_empty() { "x".repeat(1 << 20) } else { body.len().to_string() };
                write!(w, "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{answer}", answer.len()).unwrap();
            }
        });
        let endpoint = Endpoint::Tcp { https: false, host_port: format!("127.0.0.1:{port}"), prefix: String::new() };
        let client = Client::new(&AgentAddress { endpoint, token: None, tls: Tls::default() }).unwrap();
        let config = client.agent.config();
        assert_eq!((config.input_buffer_size(), config.output_buffer_size()), (BUFFER_SIZE, BUFFER_SIZE));
        let meta = "m".repeat(200 << 10);
        let reply = client.put_json("/v1/agent/service/register", &serde_json::json!({ "Meta": meta })).unwrap();
        assert!(reply.ok(), "{reply:?}");
        let sent = serde_json::to_vec(&serde_json::json!({ "Meta": meta })).unwrap().len();
        assert_eq!(reply.body, sent.to_string(), "the server got the whole body");
        let reply = client.get("/v1/health/service/big", None).unwrap();
        assert_eq!(reply.body.len(), 1 << 20);
        server.join().unwrap();
    }

    /// An answer whose header does not fit the (now small) input buffer is an error for
    /// that call, not a hang or a panic, and the next call works.
    #[test]
    fn an_answer_header_over_the_buffer_is_an_error() {
        use std::io::{BufRead, BufReader, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            for huge in [true, false] {
                let (conn, _) = listener.accept().unwrap();
                let mut r = BufReader::new(conn.try_clone().unwrap());
                let mut w = conn;
                loop {
                    let mut line = String::new();
                    if r.read_line(&mut line).unwrap() == 0 || line == "\r\n" {
                        break;
                    }
                }
                let extra = if huge { format!("X-Filler: {}\r\n", "f".repeat(BUFFER_SIZE * 2)) } else { String::new() };
                let _ = write!(w, "HTTP/1.1 200 OK\r\n{extra}Content-Length: 2\r\nConnection: close\r\n\r\nok");
            }
        });
        let endpoint = Endpoint::Tcp { https: false, host_port: format!("127.0.0.1:{port}"), prefix: String::new() };
        let client = Client::new(&AgentAddress { endpoint, token: None, tls: Tls::default() }).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let first = client.put_empty("/v1/agent/service/deregister/x").map(|r| r.body);
            let second = client.put_empty("/v1/agent/service/deregister/x").map(|r| r.body);
            let _ = tx.send((first, second));
        });
        let (first, second) = rx.recv_timeout(Duration::from_secs(20)).expect("a call hung on an oversized header");
        let e = first.expect_err("an oversized header is an error");
        assert!(e.0.contains("header"), "{e}");
        assert_eq!(second.expect("the next call works"), "ok");
        server.join().unwrap();
    }

    #[test]
    fn fifos_as_ca_files_are_errors_not_hangs() {
        let dir = std::env::temp_dir().join(format!("pilot-ca-fifo-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let fifo = dir.join("ca.pem");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let e = client_within(https_with(Tls { cacert: Some(fifo), verify: true, ..Tls::default() })).unwrap_err();
        assert!(e.contains("FIFO") && e.contains("CA certificate"), "{e}");
        let e =
            client_within(https_with(Tls { capath: Some(dir.clone()), verify: true, ..Tls::default() })).unwrap_err();
        assert!(e.contains("no PEM CA certificates found"), "{e}");
        // Verification off: no roots are read at all.
        assert!(client_within(https_with(Tls { capath: Some(dir.clone()), verify: false, ..Tls::default() })).is_ok());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
