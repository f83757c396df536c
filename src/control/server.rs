//! The control plane: HTTP/1.1 on the Unix socket (served by `httpd`, bounded), ContainerPilot
//! v3's endpoints plus `GET /v3/status`. Requests that touch jobs go to the supervisor as
//! messages; nothing here can block it. Bad requests get 4xx answers and change nothing.
//!
//! Only pilot's own (effective) uid and root may use the socket: it is created mode 0600
//! inside a fresh 0700 directory and renamed into place, so it is never reachable by others,
//! whatever the umask; and every connection's SO_PEERCRED uid is checked (403 otherwise).

use super::Request;
use crate::httpd::{self, Admission, Method, Response};
use crate::telemetry::Metrics;
use log::{info, warn};
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::mpsc::channel;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Bodies larger than this are refused (413): every real request is a few hundred bytes.
pub const MAX_BODY: usize = httpd::limits::MAX_BODY;

pub struct Server {
    pub socket: PathBuf,
    /// The config file, re-read by `/v3/reload` (None: the embedded default, nothing to reload).
    pub config: Option<PathBuf>,
    pub metrics: Arc<Metrics>,
    pub has_telemetry: bool,
    pub send: Box<dyn Fn(Request) -> bool + Send>,
    /// Variables set by `/v3/environ`, so a reload renders its template with them too.
    pub overlay: Vec<(String, String)>,
}

/// The endpoints, for the `path` label of `containerpilot_control_http_requests`: any other
/// path is counted as `other`, so clients cannot grow the metric without bound.
const ENDPOINTS: [&str; 8] = [
    "/v3/environ",
    "/v3/env",
    "/v3/metric",
    "/v3/reload",
    "/v3/maintenance/enable",
    "/v3/maintenance/disable",
    "/v3/ping",
    "/v3/status",
];

fn path_label(path: Option<&str>) -> &'static str {
    path.and_then(|p| ENDPOINTS.iter().find(|e| **e == p).copied()).unwrap_or("other")
}

/// The request handler of the control socket, shared by the connection slots.
pub struct Control {
    config: Option<PathBuf>,
    metrics: Arc<Metrics>,
    has_telemetry: bool,
    send: Mutex<Box<dyn Fn(Request) -> bool + Send>>,
    overlay: Mutex<Vec<(String, String)>>,
}

/// Uids refused so far, each logged once (at most this many remembered).
const REFUSED_UIDS_LOGGED: usize = 64;

impl Server {
    /// Bind the socket (private from the start) and serve it on threads of its own.
    pub fn start(self) -> Result<(), String> {
        let socket = self.socket.clone();
        super::socket::claim(&socket)?;
        let listener = bind_private(&socket).map_err(|e| format!("control socket {}: {e}", socket.display()))?;
        info!("control: listening on {}", socket.display());
        let refused: Mutex<HashSet<u32>> = Mutex::new(HashSet::new());
        let admit = Box::new(move |c: &UnixStream| admit(c, &refused));
        httpd::serve(listener, httpd::Limits::control(), self.handler(), admit).map_err(|e| format!("control: {e}"))
    }

    /// The request handler alone (the fuzz target and tests run requests through it).
    pub fn handler(self) -> Arc<Control> {
        Arc::new(Control {
            config: self.config,
            metrics: self.metrics,
            has_telemetry: self.has_telemetry,
            send: Mutex::new(self.send),
            overlay: Mutex::new(self.overlay),
        })
    }
}

/// SO_PEERCRED: pilot's own uid and root are let in; anybody else gets 403 (logged once per uid).
fn admit(c: &UnixStream, refused: &Mutex<HashSet<u32>>) -> Admission {
    match httpd::peer::uid(c) {
        Ok(uid) if httpd::peer::trusted(uid) => Admission::Allowed,
        Ok(uid) => {
            let mut seen = refused.lock().unwrap_or_else(|e| e.into_inner());
            if seen.len() < REFUSED_UIDS_LOGGED && seen.insert(uid) {
                warn!(
                    "control: refused a connection from uid {uid}: only pilot's own user and root may use the socket"
                );
            }
            Admission::Denied
        }
        Err(e) => {
            warn!("control: cannot tell who connected ({e}): refused");
            Admission::Denied
        }
    }
}

/// Bind `path` so that it is never reachable by another user: bound inside a fresh 0700
/// directory next to it, chmod 0600, then renamed into place (the process umask is left
/// alone: jobs inherit it). When the temporary path would not fit a socket address, bind in
/// place and chmod: SO_PEERCRED still refuses others in the moment between.
fn bind_private(path: &Path) -> std::io::Result<UnixListener> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    // A fresh directory: mkdir fails rather than reuse one somebody else made (in /tmp
    // anyone may guess the name and create it first), so try a few names.
    let mut attempt = 0u32;
    let (dir, inner) = loop {
        let nonce = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
        let dir = parent.join(format!(".p{:x}{:x}", std::process::id(), nonce.wrapping_add(attempt)));
        let inner = dir.join("s");
        if inner.as_os_str().len() > super::socket::MAX_PATH {
            warn!("control: {} is too long to bind in a private directory first; binding in place", path.display());
            let l = UnixListener::bind(path)?;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
            return Ok(l);
        }
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => break (dir, inner),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && attempt < 8 => attempt += 1,
            Err(e) => return Err(e),
        }
    };
    let bound = (|| {
        // The umask can only take bits away; make sure the owner can use it.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
        let l = UnixListener::bind(&inner)?;
        std::fs::set_permissions(&inner, std::fs::Permissions::from_mode(0o600))?;
        std::fs::rename(&inner, path)?;
        Ok(l)
    })();
    let _ = std::fs::remove_file(&inner);
    let _ = std::fs::remove_dir(&dir);
    bound
}

impl httpd::Handler for Control {
    fn handle(&self, req: &httpd::Request) -> Response {
        let answer = self.route(req);
        self.count(answer.code, Some(req.path));
        answer
    }

    fn refused(&self, code: u16, path: Option<&str>) {
        self.count(code, path);
    }
}

impl Control {
    fn count(&self, code: u16, path: Option<&str>) {
        self.metrics.control_requests.with_label_values(&[&code.to_string(), path_label(path)]).inc();
    }

    fn route(&self, req: &httpd::Request) -> Response {
        let path = req.path;
        let get = matches!(req.method, Method::Get | Method::Head);
        let post = req.method == Method::Post;
        match path {
            "/v3/ping" | "/v3/status" if !get => Response::text(405, "use GET").with_allow("GET"),
            "/v3/ping" => Response::text(200, "OK"),
            "/v3/status" => self.status(),
            "/v3/environ"
            | "/v3/env"
            | "/v3/metric"
            | "/v3/reload"
            | "/v3/maintenance/enable"
            | "/v3/maintenance/disable"
                if !post =>
            {
                Response::text(405, "use POST").with_allow("POST")
            }
            "/v3/environ" | "/v3/env" => match read_json(req.body) {
                Ok(v) => self.putenv(v),
                Err(a) => a,
            },
            "/v3/metric" => match read_json(req.body) {
                Ok(v) => self.putmetric(v),
                Err(a) => a,
            },
            "/v3/reload" => self.reload(),
            "/v3/maintenance/enable" => self.forward(Request::Maintenance(true), "maintenance enabled"),
            "/v3/maintenance/disable" => self.forward(Request::Maintenance(false), "maintenance disabled"),
            _ => Response::text(
                404,
                format!(
                    "no such endpoint: {} (try /v3/status, /v3/ping, /v3/reload, /v3/environ, /v3/metric, /v3/maintenance/enable|disable)",
                    path.escape_debug()
                ),
            ),
        }
    }

    fn send(&self, r: Request) -> bool {
        (self.send.lock().unwrap_or_else(|e| e.into_inner()))(r)
    }

    fn forward(&self, r: Request, ok: &str) -> Response {
        if self.send(r) { Response::text(200, ok) } else { Response::text(503, "pilot is shutting down") }
    }

    fn status(&self) -> Response {
        let (tx, rx) = channel();
        if !self.send(Request::Status(tx)) {
            return Response::text(503, "pilot is shutting down");
        }
        match rx.recv_timeout(Duration::from_secs(5)) {
            Ok(v) => {
                Response::text(200, serde_json::to_string_pretty(&v).unwrap_or_default()).with_type("application/json")
            }
            Err(_) => Response::text(503, "the supervisor did not answer in time"),
        }
    }

    fn putenv(&self, v: Value) -> Response {
        let Value::Object(map) = v else {
            return Response::text(422, "expected a JSON object of \"NAME\": \"value\" pairs");
        };
        let mut vars = Vec::new();
        for (k, v) in map {
            if let Err(e) = super::check_variable_name(&k) {
                return Response::text(422, e);
            }
            match v {
                Value::String(s) if !s.contains('\0') => vars.push((k, s)),
                Value::String(_) => return Response::text(422, format!("{k}: the value contains a NUL byte")),
                other => return Response::text(422, format!("{k}: expected a string value, got {other}")),
            }
        }
        // The supervisor's environment is the one that counts (it holds pilot's own
        // variables too): only what it took goes into the overlay that reloads render with.
        let (tx, rx) = channel();
        if !self.send(Request::PutEnv(vars.clone(), tx)) {
            return Response::text(503, "pilot is shutting down");
        }
        match rx.recv_timeout(Duration::from_secs(5)) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Response::text(422, format!("putenv refused: {e}")),
            Err(_) => return Response::text(503, "the supervisor did not answer in time"),
        }
        info!("control: environment updated: {}", vars.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>().join(", "));
        let mut overlay = self.overlay.lock().unwrap_or_else(|e| e.into_inner());
        // Within the bound: the overlay holds a subset of the supervisor's variables.
        let _ = super::put_env(&mut overlay, vars);
        Response::text(200, "")
    }

    fn putmetric(&self, v: Value) -> Response {
        if !self.has_telemetry {
            return Response::text(422, "no telemetry stanza in the config: there are no metrics to set");
        }
        let Value::Object(map) = v else {
            return Response::text(422, "expected a JSON object of \"metric_name\": number pairs");
        };
        // Check everything first, so a bad request changes nothing.
        let mut values = Vec::new();
        for (k, v) in &map {
            let n = match v {
                Value::Number(n) => n.as_f64(),
                Value::String(s) => s.trim().parse().ok(),
                _ => None,
            };
            match n {
                Some(n) => values.push((k.clone(), n)),
                None => return Response::text(422, format!("{k}: expected a number, got {v}")),
            }
        }
        for (k, n) in &values {
            if let Err(e) = self.metrics.check(k, *n) {
                return Response::text(422, e);
            }
        }
        for (k, n) in values {
            let _ = self.metrics.put(&k, n);
        }
        Response::text(200, "")
    }

    fn reload(&self) -> Response {
        let Some(path) = &self.config else {
            return Response::text(422, "pilot runs its embedded default (no config file): nothing to reload");
        };
        let overlay = self.overlay.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let env: HashMap<String, String> = crate::config::environment(&overlay);
        let loaded = crate::config::load_with(path.clone(), &env, Some(&crate::consul::kv::fetch));
        let report: Vec<String> = loaded.diags.iter().map(|d| d.to_string()).collect();
        if !loaded.is_valid() {
            warn!("control: reload refused, the running config stays: {}", report.join("; "));
            return Response::text(422, format!("reload refused; the running config stays:\n{}", report.join("\n")));
        }
        let Some(mut config) = loaded.config else { return Response::text(500, "no config") };
        // Users and groups are looked up here, on this thread, not at each spawn.
        crate::identity::resolve_config(&mut config, &crate::identity::etc());
        let (tx, rx) = channel();
        if !self.send(Request::Reload(Box::new(config), tx)) {
            return Response::text(503, "pilot is shutting down");
        }
        match rx.recv_timeout(Duration::from_secs(5)) {
            Ok(Ok(())) => {
                info!("control: reloading {}", path.display());
                Response::text(200, format!("reloading {}", path.display()))
            }
            Ok(Err(e @ super::ReloadRefused::Invalid(_))) => Response::text(422, e.to_string()),
            Ok(Err(e @ super::ReloadRefused::ShuttingDown)) => Response::text(503, e.to_string()),
            Err(_) => Response::text(503, "the supervisor did not answer in time"),
        }
    }
}

/// The body as JSON: 400 when it does not parse (the size limit is the server's: 413).
fn read_json(body: &[u8]) -> Result<Value, Response> {
    serde_json::from_slice(body).map_err(|e| Response::text(400, format!("the body is not JSON: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_paths_share_one_label_value() {
        assert_eq!(path_label(Some("/v3/status")), "/v3/status");
        assert_eq!(path_label(Some("/v3/nope")), "other");
        assert_eq!(path_label(Some("/v3/status/")), "other");
        assert_eq!(path_label(None), "other");
    }

    #[test]
    fn variable_names_are_shell_names() {
        for ok in ["A", "_", "LD_PRELOAD", "a1_B2"] {
            assert!(super::super::check_variable_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "1A", "A=B", "A\nB", "A\0", "A B", "É", "A-B"] {
            let e = super::super::check_variable_name(bad).unwrap_err();
            assert!(e.contains("is not a variable name"), "{e}");
        }
    }
}
