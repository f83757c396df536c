//! Per-listener limits. Every real request to pilot is a few hundred bytes and answered in
//! milliseconds, so the limits are far above need and far below harm.

use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Limits {
    /// Shown in logs and thread names ("control", "telemetry").
    pub name: &'static str,
    /// Connections served at once (one thread each); more get a quick 503.
    pub slots: usize,
    /// Request line plus headers. 64 KiB: the biggest real head (a browser with cookies) is
    /// a few KiB; Go's 1 MB default serves the web at large, and nginx's 8 KiB per line x 4
    /// buffers is the same order as ours. Larger heads get 431 and are never buffered.
    pub max_head: usize,
    /// Header lines (httparse needs a fixed array; more than this is 431 too).
    pub max_headers: usize,
    /// Bodies over this get 413 (ContainerPilot's clients send a few hundred bytes).
    pub max_body: usize,
    /// The whole head must arrive within this, from its first byte (408 otherwise).
    pub head_timeout: Duration,
    /// The whole body must arrive within this, from the end of the head (408 otherwise).
    pub body_timeout: Duration,
    /// A keep-alive connection with no new request for this long is closed.
    pub idle_timeout: Duration,
    /// The whole answer must be written within this, else the connection is dropped: a
    /// client that does not read cannot hold a slot.
    pub write_timeout: Duration,
}

/// Bodies larger than this are refused (413): every real request is a few hundred bytes.
pub const MAX_BODY: usize = 1 << 20;

impl Limits {
    /// The control socket: only pilot's own uid and root can connect, and they send a
    /// request now and then (`pilot status`, putenv from jobs, health checks that
    /// `putmetric`). 16 slots leave room for a job fleet's parallel callers and keep pilot's
    /// own use of file descriptors at most 16, whatever clients do.
    pub fn control() -> Limits {
        Limits {
            name: "control",
            slots: 16,
            max_head: 64 << 10,
            max_headers: 64,
            max_body: MAX_BODY,
            head_timeout: Duration::from_secs(5),
            body_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(5),
            write_timeout: Duration::from_secs(5),
        }
    }

    /// The telemetry port, open to the network: a few Prometheus servers scrape it every
    /// few seconds. 32 slots serve several scrapers at once with room to spare; an attacker
    /// holding all of them costs 32 fds and 32 small threads, and each is freed within the
    /// timeouts. No bodies: scrapes are GETs.
    pub fn telemetry() -> Limits {
        Limits {
            name: "telemetry",
            slots: 32,
            max_head: 64 << 10,
            max_headers: 64,
            max_body: 0,
            head_timeout: Duration::from_secs(5),
            body_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(10),
        }
    }
}
