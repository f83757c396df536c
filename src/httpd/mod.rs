//! A small bounded HTTP/1.1 server for the control socket and the telemetry port.
//!
//! pilot is the init of somebody's job: its two listeners must survive any client. So
//! everything here is bounded: a fixed number of connection slots per listener (one thread
//! each, started on demand; a connection that finds them all busy gets a quick `503`), a
//! deadline for the request head, for the body and for writing the answer, a keep-alive
//! connection closed when idle, a cap on the head (`431`) and on the body (`413`), and an
//! accept loop that logs and backs off on errors (EMFILE…) instead of ending. The parser is
//! `httparse` (no_std, no allocation, the one under hyper and ureq, already in the binary
//! through ureq); the rest is a few hundred lines we can reason about, with no async runtime.
//!
//! A request is parsed and answered by [`connection::serve`] over any [`Stream`], so the
//! whole path (parse, limits, route, answer) also runs from a byte buffer: see [`answer`],
//! used by the fuzz target.

pub mod client;
pub mod connection;
pub mod limits;
pub mod listener;
pub mod peer;
pub mod response;

pub use connection::Stream;
pub use limits::Limits;
pub use listener::{Listener, serve};
pub use response::Response;

/// The request methods pilot's endpoints use; anything else is `Other` (and gets a 405).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Post,
    Other,
}

impl Method {
    fn parse(m: &str) -> Method {
        match m {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "POST" => Method::Post,
            _ => Method::Other,
        }
    }
}

/// A whole request, head and body read within the limits.
#[derive(Debug)]
pub struct Request<'a> {
    pub method: Method,
    /// The path without the query string.
    pub path: &'a str,
    pub body: &'a [u8],
    /// The `Accept` header(s), joined by commas ("" without): the telemetry port's format.
    pub accept: &'a str,
}

/// What a listener does with requests. Handlers run on the slot threads, several at once.
pub trait Handler: Send + Sync + 'static {
    fn handle(&self, req: &Request) -> Response;

    /// A request refused by the server itself (400, 408, 411, 413, 431, 501, 403…) before
    /// the handler saw it; `path` when the head was parsed. For metrics.
    fn refused(&self, _code: u16, _path: Option<&str>) {}
}

/// Whether a connection's peer may use the listener (the control socket's SO_PEERCRED check).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Allowed,
    /// Every request on the connection is answered 403 and the connection closed.
    Denied,
}

/// Run the bytes of one connection through the request path (parse, limits, route,
/// answer) without a network, and return what would have been written back: for the fuzz
/// target and tests. Timeouts do not apply to a buffer.
pub fn answer(input: &[u8], limits: &Limits, handler: &dyn Handler, admission: Admission) -> Vec<u8> {
    let mut s = connection::Memory { input, pos: 0, output: Vec::new() };
    connection::serve(&mut s, limits, handler, admission);
    s.output
}

#[cfg(test)]
mod tests;
