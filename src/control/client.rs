//! The CLI side of the control plane: `pilot reload`, `maintenance`, `putenv`, `putmetric`,
//! `ping` and `status` talk HTTP to a running pilot over its socket.

use crate::httpd::client::CallError;
use crate::status::Status;
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The socket to talk to: `--socket`, else as `socket::find` says.
pub fn socket(flag: Option<&str>) -> Result<PathBuf, String> {
    match flag {
        Some(p) => Ok(PathBuf::from(p)),
        None => super::socket::find(&|k| std::env::var(k).ok()),
    }
}

/// One request to the pilot at `socket`, only if it runs as us or root (else nothing is sent).
pub fn call(socket: &Path, method: &str, path: &str, body: Option<&Value>) -> Result<(u16, String), String> {
    let body = body.map(|b| serde_json::to_vec(b).unwrap_or_default());
    crate::httpd::client::call(socket, method, path, body.as_deref(), Duration::from_secs(30)).map_err(|e| match e {
        CallError::Connect(io)
            if matches!(io.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused) =>
        {
            format!("no pilot is listening on {}: {io}", socket.display())
        }
        other => format!("{}: {other}", socket.display()),
    })
}

/// `K=V` arguments as a JSON object; numbers when `numeric`.
pub fn pairs(args: &[String], numeric: bool) -> Result<Value, String> {
    let mut m = Map::new();
    for a in args {
        let (k, v) = a.split_once('=').ok_or_else(|| format!("'{a}': expected NAME=VALUE"))?;
        if k.is_empty() {
            return Err(format!("'{a}': the name is empty"));
        }
        if !numeric {
            super::check_variable_name(k)?;
        }
        let v = if numeric {
            let n: f64 = v.trim().parse().map_err(|_| format!("'{a}': {v} is not a number"))?;
            serde_json::Number::from_f64(n)
                .map(Value::Number)
                .ok_or_else(|| format!("'{a}': {v} is not a finite number"))?
        } else {
            Value::String(v.to_string())
        };
        m.insert(k.to_string(), v);
    }
    Ok(Value::Object(m))
}

/// `pilot status` as a table.
pub fn status_table(v: &Status) -> String {
    let mut out = format!(
        "pilot {} (pid {}){}{}{}\n",
        v.version,
        v.pid,
        if v.maintenance { ", in maintenance" } else { "" },
        if v.shutting_down { ", shutting down" } else { "" },
        if v.reloading { ", reloading" } else { "" },
    );
    let dash = || "-".to_string();
    let rows: Vec<[String; 6]> = v
        .jobs
        .iter()
        .map(|j| {
            [
                j.name.clone(),
                j.state.as_str().to_string(),
                j.pid.map_or_else(dash, |p| p.to_string()),
                j.restarts.to_string(),
                j.health.map_or_else(dash, |h| h.as_str().to_string()),
                j.consul.clone().unwrap_or_else(dash),
            ]
        })
        .collect();
    let head = ["JOB", "STATE", "PID", "RESTARTS", "HEALTH", "CONSUL"].map(String::from);
    let mut widths = head.clone().map(|h| h.len());
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.len());
        }
    }
    for r in std::iter::once(&head).chain(rows.iter()) {
        let line: Vec<String> = r.iter().enumerate().map(|(i, c)| format!("{c:<w$}", w = widths[i])).collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}
