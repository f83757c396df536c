//! Telemetry: the Prometheus endpoint of the `telemetry` stanza. Containers on one host
//! share its network, so `port: 0` takes an ephemeral port (the one registered in Consul),
//! and a port already taken is a clear error that leaves the jobs running.

pub mod metrics;

pub use metrics::Metrics;

use crate::config::Telemetry;
use log::{debug, info};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

/// Start serving `/metrics`; returns the address really bound.
pub fn serve(cfg: &Telemetry, ip: IpAddr, metrics: Arc<Metrics>) -> Result<SocketAddr, String> {
    let want = SocketAddr::new(ip, cfg.port);
    let server = tiny_http::Server::http(want).map_err(|e| {
        let hint = if e.to_string().contains("in use") {
            "; another container on this host may have it: use port: 0 for an ephemeral port"
        } else {
            ""
        };
        format!("telemetry: cannot listen on {want}: {e}{hint}")
    })?;
    let bound = server.server_addr().to_ip().ok_or("telemetry: not a TCP address")?;
    info!("telemetry: serving Prometheus metrics at http://{bound}/metrics");
    std::thread::Builder::new()
        .name("telemetry".into())
        .spawn(move || {
            for req in server.incoming_requests() {
                let path = req.url().split('?').next().unwrap_or("").to_string();
                let resp = match (req.method(), path.as_str()) {
                    (tiny_http::Method::Get, "/metrics") => tiny_http::Response::from_string(metrics.render())
                        .with_header(
                            tiny_http::Header::from_bytes("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                                .expect("static header"),
                        ),
                    (_, "/metrics") => tiny_http::Response::from_string("only GET\n").with_status_code(405),
                    _ => tiny_http::Response::from_string("not found: try /metrics\n").with_status_code(404),
                };
                if let Err(e) = req.respond(resp) {
                    debug!("telemetry: answering a scrape: {e}");
                }
            }
        })
        .map_err(|e| format!("telemetry: {e}"))?;
    Ok(bound)
}
