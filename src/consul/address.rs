//! Where the Consul agent is and how to talk to it: the config's `consul` stanza first, then
//! the environment variables the `consul` CLI reads (CONSUL_HTTP_ADDR and friends, with the
//! Go client's precedence — see docs/consul.md, "Where the agent is"), then 127.0.0.1:8500.

use crate::config::Consul;
use std::path::PathBuf;

#[derive(Clone, PartialEq)]
pub enum Endpoint {
    /// `http://host:port` or `https://host:port`, with an optional path prefix.
    Tcp {
        https: bool,
        host_port: String,
        prefix: String,
    },
    Unix(PathBuf),
}

#[derive(Clone, Default, PartialEq)]
pub struct Tls {
    pub cacert: Option<PathBuf>,
    pub capath: Option<PathBuf>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    pub server_name: Option<String>,
    pub verify: bool,
}

/// Everything needed to reach the agent. `Debug` is hand-written so the token never reaches
/// a log line.
#[derive(Clone, PartialEq)]
pub struct AgentAddress {
    pub endpoint: Endpoint,
    pub token: Option<String>,
    pub tls: Tls,
}

impl std::fmt::Debug for AgentAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.display())?;
        if self.token.is_some() {
            write!(f, " (with a token)")?;
        }
        Ok(())
    }
}

/// The largest `CONSUL_HTTP_TOKEN_FILE` read (a token is a UUID; a JWT is a few kB).
const TOKEN_FILE_MAX: u64 = 64 << 10;

impl AgentAddress {
    /// For messages: the URL of the agent, never the token.
    pub fn display(&self) -> String {
        match &self.endpoint {
            Endpoint::Tcp { https, host_port, prefix } => {
                format!("{}://{host_port}{prefix}", if *https { "https" } else { "http" })
            }
            Endpoint::Unix(p) => format!("unix://{}", p.display()),
        }
    }

    /// The agent from the config stanza, falling back to the environment field by field.
    pub fn resolve(stanza: Option<&Consul>, env: &dyn Fn(&str) -> Option<String>) -> Result<Self, String> {
        let var = |k: &str| env(k).filter(|v| !v.is_empty());
        let parse_bool = |k: &str| var(k).map(|v| parse_go_bool(&v));

        // Scheme and address: the stanza's if it names an address, else CONSUL_HTTP_ADDR.
        let mut https = parse_bool("CONSUL_HTTP_SSL").and_then(Result::ok).unwrap_or(false);
        let (addr, from) = match stanza.filter(|c| !c.address.is_empty()) {
            Some(c) => {
                https = c.scheme == crate::config::Scheme::Https;
                (c.address.clone(), "consul")
            }
            None => match var("CONSUL_HTTP_ADDR") {
                Some(a) => (a, "CONSUL_HTTP_ADDR"),
                None => ("127.0.0.1:8500".to_string(), "default"),
            },
        };
        let endpoint = parse_endpoint(&addr, https).map_err(|e| format!("{from}: {e}"))?;

        let token = match stanza.and_then(|c| c.token.clone()) {
            Some(t) => Some(t),
            None => match var("CONSUL_HTTP_TOKEN_FILE") {
                Some(path) => {
                    // Read on the supervisor thread: a regular file of bounded size (fsread), so a
                    // FIFO or /dev/zero named here is an error, not a hang or an OOM of PID 1.
                    let text = crate::fsread::read_regular(std::path::Path::new(&path), TOKEN_FILE_MAX)
                        .map_err(|e| format!("CONSUL_HTTP_TOKEN_FILE: {e}"))?;
                    let t = text.trim().to_string();
                    if t.is_empty() { var("CONSUL_HTTP_TOKEN") } else { Some(t) }
                }
                None => var("CONSUL_HTTP_TOKEN"),
            },
        };

        let s = stanza.cloned().unwrap_or_default();
        let path = |from_stanza: Option<String>, key: &str| from_stanza.or_else(|| var(key)).map(PathBuf::from);
        // As the Go client: an unparsable CONSUL_HTTP_SSL_VERIFY turns verification off.
        let verify_env = parse_bool("CONSUL_HTTP_SSL_VERIFY").map(|r| r.unwrap_or(false));
        let verify = match stanza {
            Some(c) if !c.verify => false,
            _ => verify_env.unwrap_or(true),
        };
        let tls = Tls {
            cacert: path(s.cafile, "CONSUL_CACERT"),
            capath: path(s.capath, "CONSUL_CAPATH"),
            client_cert: path(s.clientcert, "CONSUL_CLIENT_CERT"),
            client_key: path(s.clientkey, "CONSUL_CLIENT_KEY"),
            server_name: s.servername.or_else(|| var("CONSUL_TLS_SERVER_NAME")).map(|n| strip_port(&n)),
            verify,
        };
        if tls.client_cert.is_some() != tls.client_key.is_some() {
            return Err("both a client certificate and a client key must be given (CONSUL_CLIENT_CERT/CONSUL_CLIENT_KEY or tls.clientcert/tls.clientkey)".into());
        }
        Ok(AgentAddress { endpoint, token, tls })
    }
}

fn parse_go_bool(v: &str) -> Result<bool, ()> {
    match v {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        _ => Err(()),
    }
}

fn strip_port(name: &str) -> String {
    match name.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') && port.chars().all(|c| c.is_ascii_digit()) => host.to_string(),
        _ => name.to_string(),
    }
}

/// `host:port`, `http://host:port[/prefix]`, `https://...` or `unix:///path`. `http://` keeps
/// TLS if it was asked for elsewhere, as the Go client does.
pub fn parse_endpoint(addr: &str, https: bool) -> Result<Endpoint, String> {
    let (https, rest) = match addr.split_once("://") {
        Some(("unix", path)) => {
            if path.is_empty() {
                return Err(format!("'{addr}': unix:// needs a socket path, e.g. unix:///run/consul/http.sock"));
            }
            return Ok(Endpoint::Unix(PathBuf::from(path)));
        }
        Some(("http", rest)) => (https, rest),
        Some(("https", rest)) => (true, rest),
        Some((other, _)) => {
            return Err(format!("unknown scheme '{other}://' in '{addr}': expected http://, https:// or unix://"));
        }
        None => (https, addr),
    };
    let (host_port, prefix) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
        None => (rest, ""),
    };
    if host_port.is_empty() {
        return Err(format!("'{addr}' has no host: expected host:port"));
    }
    let host_port = if has_port(host_port) {
        host_port.to_string()
    } else {
        format!("{host_port}:{}", if https { 8501 } else { 8500 })
    };
    Ok(Endpoint::Tcp { https, host_port, prefix: prefix.to_string() })
}

fn has_port(hp: &str) -> bool {
    if let Some(rest) = hp.strip_prefix('[') {
        return rest.contains("]:");
    }
    hp.matches(':').count() == 1
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn resolve(stanza: Option<&Consul>, vars: &[(&str, &str)]) -> Result<AgentAddress, String> {
        let map: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        AgentAddress::resolve(stanza, &|k| map.get(k).cloned())
    }

    #[test]
    fn default_is_the_node_local_agent() {
        assert_eq!(resolve(None, &[]).unwrap().display(), "http://127.0.0.1:8500");
    }

    #[test]
    fn env_address_with_schemes() {
        assert_eq!(resolve(None, &[("CONSUL_HTTP_ADDR", "10.0.0.1:8600")]).unwrap().display(), "http://10.0.0.1:8600");
        assert_eq!(
            resolve(None, &[("CONSUL_HTTP_ADDR", "https://c.example:8501/consul/")]).unwrap().display(),
            "https://c.example:8501/consul"
        );
        assert_eq!(
            resolve(None, &[("CONSUL_HTTP_ADDR", "unix:///run/consul.sock")]).unwrap().display(),
            "unix:///run/consul.sock"
        );
        // http:// does not undo CONSUL_HTTP_SSL.
        let a = resolve(None, &[("CONSUL_HTTP_ADDR", "http://h:1"), ("CONSUL_HTTP_SSL", "true")]).unwrap();
        assert_eq!(a.display(), "https://h:1");
        let e = resolve(None, &[("CONSUL_HTTP_ADDR", "ftp://h")]).unwrap_err();
        assert!(e.contains("CONSUL_HTTP_ADDR") && e.contains("ftp://"), "{e}");
    }

    #[test]
    fn stanza_wins_over_env_and_env_fills_the_rest() {
        let c = Consul {
            address: "consul:8500".into(),
            scheme: crate::config::Scheme::Http,
            verify: true,
            ..Default::default()
        };
        let a = resolve(Some(&c), &[("CONSUL_HTTP_ADDR", "other:1"), ("CONSUL_HTTP_TOKEN", "secret")]).unwrap();
        assert_eq!(a.display(), "http://consul:8500");
        assert_eq!(a.token.as_deref(), Some("secret"));
        assert!(!format!("{a:?}").contains("secret"));
    }

    #[test]
    fn token_file_beats_token_and_is_trimmed() {
        let dir = std::env::temp_dir().join(format!("pilot-token-{}", std::process::id()));
        std::fs::write(&dir, "  file-token\n").unwrap();
        let a =
            resolve(None, &[("CONSUL_HTTP_TOKEN", "env"), ("CONSUL_HTTP_TOKEN_FILE", dir.to_str().unwrap())]).unwrap();
        assert_eq!(a.token.as_deref(), Some("file-token"));
        std::fs::remove_file(&dir).unwrap();
        let e = resolve(None, &[("CONSUL_HTTP_TOKEN_FILE", "/nonexistent/token")]).unwrap_err();
        assert!(e.contains("/nonexistent/token"), "{e}");
    }

    /// The token file is read on the supervisor thread when Consul starts: a FIFO must not
    /// block it until a writer comes, nor `/dev/zero` grow it until the OOM killer ends PID 1.
    #[test]
    fn a_token_file_that_is_no_regular_file_is_an_error_not_a_hang() {
        let dir = std::env::temp_dir().join(format!("pilot-token-fifo-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let fifo = dir.join("token");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let path = fifo.to_str().unwrap().to_string();
        std::thread::spawn(move || {
            let _ = tx.send(resolve(None, &[("CONSUL_HTTP_TOKEN_FILE", &path)]));
        });
        let answer = rx.recv_timeout(std::time::Duration::from_secs(10));
        if answer.is_err() {
            let _ = std::fs::OpenOptions::new().write(true).open(&fifo);
        }
        let _ = std::fs::remove_dir_all(&dir);
        let e = answer.expect("reading a FIFO as the token file blocked").unwrap_err();
        assert!(e.contains("CONSUL_HTTP_TOKEN_FILE") && e.contains("FIFO"), "{e}");
        let e = resolve(None, &[("CONSUL_HTTP_TOKEN_FILE", "/dev/zero")]).unwrap_err();
        assert!(e.contains("character device"), "{e}");
    }

    #[test]
    fn tls_settings() {
        let a =
            resolve(None, &[("CONSUL_HTTP_SSL_VERIFY", "false"), ("CONSUL_TLS_SERVER_NAME", "consul.example:8501")])
                .unwrap();
        assert!(!a.tls.verify);
        assert_eq!(a.tls.server_name.as_deref(), Some("consul.example"));
        assert!(!resolve(None, &[("CONSUL_HTTP_SSL_VERIFY", "nope")]).unwrap().tls.verify);
        let e = resolve(None, &[("CONSUL_CLIENT_CERT", "/c.pem")]).unwrap_err();
        assert!(e.contains("client key"), "{e}");
        assert_eq!(resolve(None, &[("CONSUL_HTTP_ADDR", "https://h")]).unwrap().display(), "https://h:8501");
    }
}
