//! The CLI side of the control plane: `pilot reload`, `maintenance`, `putenv`, `putmetric`,
//! `ping` and `status` talk HTTP to a running pilot over its socket.

use crate::status::Status;
use crate::unix_http::UnixConnector;
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};
use std::time::Duration;

fn agent(socket: &Path) -> ureq::Agent {
    let config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .proxy(None)
        .timeout_global(Some(Duration::from_secs(30)))
        .build();
    ureq::Agent::with_parts(
        config,
        UnixConnector(socket.to_path_buf()),
        ureq::unversioned::resolver::DefaultResolver::default(),
    )
}

/// The socket to talk to: `--socket`, else as `socket::find` says.
pub fn socket(flag: Option<&str>) -> Result<PathBuf, String> {
    match flag {
        Some(p) => Ok(PathBuf::from(p)),
        None => super::socket::find(&|k| std::env::var(k).ok()),
    }
}

pub fn call(socket: &Path, method: &str, path: &str, body: Option<&Value>) -> Result<(u16, String), String> {
    let url = format!("http://localhost{path}");
    let a = agent(socket);
    let result = match (method, body) {
        ("GET", _) => a.get(&url).call(),
        (_, Some(b)) => a.post(&url).content_type("application/json").send(&serde_json::to_vec(b).unwrap_or_default()),
        _ => a.post(&url).send_empty(),
    };
    let mut r = result.map_err(|e| match e {
        ureq::Error::Io(io)
            if matches!(io.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused) =>
        {
            format!("no pilot is listening on {}: {io}", socket.display())
        }
        other => format!("{}: {other}", socket.display()),
    })?;
    Ok((r.status().as_u16(), r.body_mut().read_to_string().unwrap_or_default()))
}

/// `K=V` arguments as a JSON object; numbers when `numeric`.
pub fn pairs(args: &[String], numeric: bool) -> Result<Value, String> {
    let mut m = Map::new();
    for a in args {
        let (k, v) = a.split_once('=').ok_or_else(|| format!("'{a}': expected NAME=VALUE"))?;
        if k.is_empty() {
            return Err(format!("'{a}': the name is empty"));
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
