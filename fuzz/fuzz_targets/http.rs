//! Any bytes as a connection to the control socket and to the telemetry port: parse, limits,
//! route and answer, all without a network (`httpd::answer`). Errors are answers; panics,
//! hangs and unbounded memory are bugs. Run: `cargo +nightly fuzz run http`.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pilot::config::Metric;
use pilot::control::server::Server;
use pilot::httpd::{self, Admission, Limits};
use pilot::telemetry::{Endpoint, Metrics};
use std::sync::{Arc, LazyLock};

static METRICS: LazyLock<Arc<Metrics>> = LazyLock::new(|| {
    let m = |name: &str, kind: &str| Metric {
        namespace: "app".into(),
        subsystem: String::new(),
        name: name.into(),
        help: "h".into(),
        kind: kind.into(),
    };
    Arc::new(Metrics::new(&[m("c", "counter"), m("g", "gauge"), m("h", "histogram"), m("s", "summary")]).unwrap())
});

fuzz_target!(|data: &[u8]| {
    // A fresh handler per input, so putenv's overlay does not grow across inputs; the
    // metrics are shared, so unbounded label values would show as growing memory.
    let control = Server {
        socket: "/nonexistent/pilot.sock".into(),
        config: None,
        metrics: METRICS.clone(),
        has_telemetry: true,
        // Requests reach a supervisor that accepts them; Status's answer channel is dropped.
        send: Box::new(|_| true),
        overlay: Vec::new(),
    }
    .handler();
    let admission = if data.first() == Some(&b'!') { Admission::Denied } else { Admission::Allowed };
    let out = httpd::answer(data, &Limits::control(), control.as_ref(), admission);
    assert!(out.is_empty() || out.starts_with(b"HTTP/1.1 "), "every answer is HTTP");
    let telemetry = Endpoint { metrics: METRICS.clone() };
    let out = httpd::answer(data, &Limits::telemetry(), &telemetry, Admission::Allowed);
    assert!(out.is_empty() || out.starts_with(b"HTTP/1.1 "), "every answer is HTTP");
});
