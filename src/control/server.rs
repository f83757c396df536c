//! The control plane: HTTP/1.1 on the Unix socket (tiny_http), ContainerPilot v3's endpoints
//! plus `GET /v3/status`. Requests that touch jobs go to the supervisor as messages; nothing
//! here can block it. Bad requests get 4xx answers and change nothing.

use super::Request;
use crate::telemetry::Metrics;
use log::{debug, info, warn};
use serde_json::Value;
use std::collections::HashMap;
use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc::channel;
use std::time::Duration;
use tiny_http::{Header, Method, Response};

/// Bodies larger than this are refused (413): every real request is a few hundred bytes.
pub const MAX_BODY: u64 = 1 << 20;

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

type Answer = (u16, String);

fn text(code: u16, body: impl Into<String>) -> Answer {
    let mut b = body.into();
    if !b.is_empty() && !b.ends_with('\n') {
        b.push('\n');
    }
    (code, b)
}

impl Server {
    /// Bind the socket (mode 0600) and serve on a thread of its own.
    pub fn start(mut self) -> Result<(), String> {
        super::socket::claim(&self.socket)?;
        let server = tiny_http::Server::http_unix(&self.socket)
            .map_err(|e| format!("control socket {}: {e}", self.socket.display()))?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&self.socket, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| format!("control socket {}: {e}", self.socket.display()))?;
        info!("control: listening on {}", self.socket.display());
        std::thread::Builder::new()
            .name("control".into())
            .spawn(move || {
                for mut req in server.incoming_requests() {
                    let path = req.url().split('?').next().unwrap_or("").to_string();
                    let (code, body) = self.handle(&mut req, &path);
                    self.metrics.control_requests.with_label_values(&[&code.to_string(), &path]).inc();
                    let mut resp = Response::from_string(body).with_status_code(code);
                    if code == 405 {
                        let allow = if matches!(path.as_str(), "/v3/ping" | "/v3/status") { "GET" } else { "POST" };
                        resp.add_header(Header::from_bytes("Allow", allow).expect("static header"));
                    }
                    if path == "/v3/status" && code == 200 {
                        resp.add_header(Header::from_bytes("Content-Type", "application/json").expect("static header"));
                    }
                    if let Err(e) = req.respond(resp) {
                        debug!("control: answering {path}: {e}");
                    }
                }
            })
            .map_err(|e| format!("control: {e}"))?;
        Ok(())
    }

    fn handle(&mut self, req: &mut tiny_http::Request, path: &str) -> Answer {
        let get = *req.method() == Method::Get;
        let post = *req.method() == Method::Post;
        match path {
            "/v3/ping" | "/v3/status" if !get => text(405, "use GET"),
            "/v3/ping" => text(200, "OK"),
            "/v3/status" => self.status(),
            "/v3/environ"
            | "/v3/env"
            | "/v3/metric"
            | "/v3/reload"
            | "/v3/maintenance/enable"
            | "/v3/maintenance/disable"
                if !post =>
            {
                text(405, "use POST")
            }
            "/v3/environ" | "/v3/env" => match read_json(req) {
                Ok(v) => self.putenv(v),
                Err(a) => a,
            },
            "/v3/metric" => match read_json(req) {
                Ok(v) => self.putmetric(v),
                Err(a) => a,
            },
            "/v3/reload" => self.reload(),
            "/v3/maintenance/enable" => self.forward(Request::Maintenance(true), "maintenance enabled"),
            "/v3/maintenance/disable" => self.forward(Request::Maintenance(false), "maintenance disabled"),
            _ => text(
                404,
                format!(
                    "no such endpoint: {path} (try /v3/status, /v3/ping, /v3/reload, /v3/environ, /v3/metric, /v3/maintenance/enable|disable)"
                ),
            ),
        }
    }

    fn forward(&self, r: Request, ok: &str) -> Answer {
        if (self.send)(r) { text(200, ok) } else { text(503, "pilot is shutting down") }
    }

    fn status(&self) -> Answer {
        let (tx, rx) = channel();
        if !(self.send)(Request::Status(tx)) {
            return text(503, "pilot is shutting down");
        }
        match rx.recv_timeout(Duration::from_secs(5)) {
            Ok(v) => (200, serde_json::to_string_pretty(&v).unwrap_or_default() + "\n"),
            Err(_) => text(503, "the supervisor did not answer in time"),
        }
    }

    fn putenv(&mut self, v: Value) -> Answer {
        let Value::Object(map) = v else { return text(422, "expected a JSON object of \"NAME\": \"value\" pairs") };
        let mut vars = Vec::new();
        for (k, v) in map {
            let valid_name = !k.is_empty() && !k.contains('=') && !k.contains('\0');
            match v {
                Value::String(s) if valid_name && !s.contains('\0') => vars.push((k, s)),
                _ if !valid_name => return text(422, format!("'{k}' is not a variable name")),
                other => return text(422, format!("{k}: expected a string value, got {other}")),
            }
        }
        info!("control: environment updated: {}", vars.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>().join(", "));
        self.overlay.retain(|(k, _)| !vars.iter().any(|(n, _)| n == k));
        self.overlay.extend(vars.iter().cloned());
        self.forward(Request::PutEnv(vars), "")
    }

    fn putmetric(&self, v: Value) -> Answer {
        if !self.has_telemetry {
            return text(422, "no telemetry stanza in the config: there are no metrics to set");
        }
        let Value::Object(map) = v else { return text(422, "expected a JSON object of \"metric_name\": number pairs") };
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
                None => return text(422, format!("{k}: expected a number, got {v}")),
            }
        }
        for (k, n) in &values {
            if let Err(e) = self.metrics.check(k, *n) {
                return text(422, e);
            }
        }
        for (k, n) in values {
            let _ = self.metrics.put(&k, n);
        }
        text(200, "")
    }

    fn reload(&self) -> Answer {
        let Some(path) = &self.config else {
            return text(422, "pilot runs its embedded default (no config file): nothing to reload");
        };
        let env: HashMap<String, String> = crate::config::environment(&self.overlay);
        let loaded = crate::config::load_with(path.clone(), &env, Some(&crate::consul::kv::fetch));
        let report: Vec<String> = loaded.diags.iter().map(|d| d.to_string()).collect();
        if !loaded.is_valid() {
            warn!("control: reload refused, the running config stays: {}", report.join("; "));
            return text(422, format!("reload refused; the running config stays:\n{}", report.join("\n")));
        }
        let Some(config) = loaded.config else { return text(500, "no config") };
        info!("control: reloading {}", path.display());
        self.forward(Request::Reload(Box::new(config)), &format!("reloading {}", path.display()))
    }
}

/// The body as JSON: 413 when too large, 400 when it does not parse.
fn read_json(req: &mut tiny_http::Request) -> Result<Value, Answer> {
    if req.body_length().is_some_and(|n| n as u64 > MAX_BODY) {
        return Err(text(413, format!("body larger than {MAX_BODY} bytes")));
    }
    let mut body = Vec::new();
    let n = req
        .as_reader()
        .take(MAX_BODY + 1)
        .read_to_end(&mut body)
        .map_err(|e| text(400, format!("reading the body: {e}")))?;
    if n as u64 > MAX_BODY {
        return Err(text(413, format!("body larger than {MAX_BODY} bytes")));
    }
    serde_json::from_slice(&body).map_err(|e| text(400, format!("the body is not JSON: {e}")))
}
