//! Telemetry: the Prometheus endpoint of the `telemetry` stanza. Containers on one host
//! share its network, so `port: 0` takes an ephemeral port (the one registered in Consul),
//! and a port already taken is a clear error that leaves the jobs running. The port is open
//! to the network: it is served by `httpd` with its own bounded slots and limits, and
//! answers only `GET /metrics` (no bodies, no per-path state), in OpenMetrics when the
//! scraper's `Accept` asks for it, else in Prometheus' classic text format.

pub mod exposition;
pub mod metrics;

pub use metrics::Metrics;

use crate::config::Telemetry;
use crate::httpd::{self, Admission, Method, Response};
use log::info;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

/// The handler of the telemetry port.
pub struct Endpoint {
    pub metrics: Arc<Metrics>,
}

impl httpd::Handler for Endpoint {
    fn handle(&self, req: &httpd::Request) -> Response {
        match (req.method, req.path) {
            (Method::Get | Method::Head, "/metrics") => {
                let format = exposition::Format::negotiate(req.accept);
                Response::text(200, self.metrics.render(format)).with_type(format.content_type())
            }
            (_, "/metrics") => Response::text(405, "only GET").with_allow("GET"),
            _ => Response::text(404, "not found: try /metrics"),
        }
    }
}

/// Start serving `/metrics`; returns the address really bound.
pub fn serve(cfg: &Telemetry, ip: IpAddr, metrics: Arc<Metrics>) -> Result<SocketAddr, String> {
    let want = SocketAddr::new(ip, cfg.port);
    let listener = std::net::TcpListener::bind(want).map_err(|e| {
        let hint = if e.kind() == std::io::ErrorKind::AddrInUse {
            "; another container on this host may have it: use port: 0 for an ephemeral port"
        } else {
            ""
        };
        format!("telemetry: cannot listen on {want}: {e}{hint}")
    })?;
    let bound = listener.local_addr().map_err(|e| format!("telemetry: {e}"))?;
    info!("telemetry: serving Prometheus metrics at http://{bound}/metrics");
    httpd::serve(
        listener,
        httpd::Limits::telemetry(),
        Arc::new(Endpoint { metrics }),
        Box::new(|_| Admission::Allowed),
    )
    .map_err(|e| format!("telemetry: {e}"))?;
    Ok(bound)
}
