//! One connection: read a request head within its deadline and size limit, check its
//! framing, read the body within its deadline and size limit, answer, and keep the
//! connection for the next request until it is idle too long. Every failure of the client
//! ends in a clear 4xx (when there is anyone to tell) and the connection being closed,
//! never in a blocked slot.

use super::{Admission, Handler, Limits, Method, Request, Response};
use std::io::{self, ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

/// A byte stream whose reads and writes can be given a timeout: a socket, or a buffer.
pub trait Stream: Read + Write {
    fn set_read_timeout(&mut self, t: Duration) -> io::Result<()>;
    fn set_write_timeout(&mut self, t: Duration) -> io::Result<()>;
    /// Tell the client we are done writing (before draining what it still sends).
    fn shutdown_write(&mut self) {}
}

impl Stream for UnixStream {
    fn set_read_timeout(&mut self, t: Duration) -> io::Result<()> {
        UnixStream::set_read_timeout(self, Some(t))
    }
    fn set_write_timeout(&mut self, t: Duration) -> io::Result<()> {
        UnixStream::set_write_timeout(self, Some(t))
    }
    fn shutdown_write(&mut self) {
        let _ = self.shutdown(std::net::Shutdown::Write);
    }
}

impl Stream for std::net::TcpStream {
    fn set_read_timeout(&mut self, t: Duration) -> io::Result<()> {
        std::net::TcpStream::set_read_timeout(self, Some(t))
    }
    fn set_write_timeout(&mut self, t: Duration) -> io::Result<()> {
        std::net::TcpStream::set_write_timeout(self, Some(t))
    }
    fn shutdown_write(&mut self) {
        let _ = self.shutdown(std::net::Shutdown::Write);
    }
}

/// A connection made of a byte buffer: what the client sent, and what was answered.
pub struct Memory<'a> {
    pub input: &'a [u8],
    pub pos: usize,
    pub output: Vec<u8>,
}

impl Read for Memory<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = buf.len().min(self.input.len() - self.pos);
        buf[..n].copy_from_slice(&self.input[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

impl Write for Memory<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.output.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Stream for Memory<'_> {
    fn set_read_timeout(&mut self, _: Duration) -> io::Result<()> {
        Ok(())
    }
    fn set_write_timeout(&mut self, _: Duration) -> io::Result<()> {
        Ok(())
    }
}

/// How reading ended when it did not give bytes.
enum ReadEnd {
    /// The client closed its side.
    Eof,
    /// The deadline passed.
    Timeout,
    /// Any other error: the connection is broken.
    Broken,
}

/// Read once into `buf` (at most `room` bytes), waiting no later than `deadline`.
fn read_some(s: &mut dyn Stream, buf: &mut Vec<u8>, room: usize, deadline: Instant) -> Result<usize, ReadEnd> {
    let mut chunk = [0u8; 8192];
    let want = room.clamp(1, chunk.len());
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ReadEnd::Timeout);
        }
        s.set_read_timeout(left).map_err(|_| ReadEnd::Broken)?;
        match s.read(&mut chunk[..want]) {
            Ok(0) => return Err(ReadEnd::Eof),
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                return Ok(n);
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => return Err(ReadEnd::Timeout),
            Err(_) => return Err(ReadEnd::Broken),
        }
    }
}

/// Write all of `bytes` by `deadline`; false when the client did not take them in time.
fn write_by(s: &mut dyn Stream, bytes: &[u8], deadline: Instant) -> bool {
    let mut off = 0;
    while off < bytes.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || s.set_write_timeout(left).is_err() {
            return false;
        }
        match s.write(&bytes[off..]) {
            Ok(0) => return false,
            Ok(n) => off += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => return false,
        }
    }
    s.flush().is_ok()
}

/// The parts of a request head pilot acts on, owned so the buffer can be reused.
#[derive(Debug)]
struct Head {
    method: Method,
    path: String,
    /// The head's length in the buffer (the body starts there).
    len: usize,
    close: bool,
    framing: Framing,
    expect_continue: bool,
    accept: String,
}

/// How the body is delimited.
#[derive(Debug)]
enum Framing {
    Length(usize),
    /// `Transfer-Encoding` of any kind: refused (411 for chunked, 501 for others), since
    /// pilot's clients always send Content-Length and a chunked decoder is more attack surface.
    Encoded {
        chunked: bool,
    },
}

/// A request the server refuses itself: the answer, and that the connection is closed after.
struct Refusal(u16, String);

/// Whether the bytes of a head end somewhere in `buf[from..]` (looking back 3 bytes).
fn head_ends(buf: &[u8], from: usize) -> bool {
    let start = from.saturating_sub(3);
    buf[start..].windows(2).any(|w| w == b"\n\n") || buf[start..].windows(4).any(|w| w == b"\r\n\r\n")
}

fn parse_head(buf: &[u8], limits: &Limits) -> Result<Option<Head>, Refusal> {
    let mut headers = vec![httparse::EMPTY_HEADER; limits.max_headers];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(Refusal(431, format!("more than {} header lines", limits.max_headers)));
        }
        Err(e) => return Err(Refusal(400, format!("malformed request: {e}"))),
    };
    let method = Method::parse(req.method.unwrap_or(""));
    let target = req.path.unwrap_or("");
    let path = target.split(['?', '#']).next().unwrap_or("").to_string();
    let mut close = req.version != Some(1);
    let mut length: Option<usize> = None;
    let mut encoded: Option<bool> = None;
    let mut expect_continue = false;
    let mut accept = String::new();
    for h in req.headers.iter() {
        let value = std::str::from_utf8(h.value).unwrap_or("").trim();
        if h.name.eq_ignore_ascii_case("content-length") {
            let n = (!value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()))
                .then(|| value.parse::<usize>().ok())
                .flatten()
                .ok_or_else(|| Refusal(400, format!("Content-Length: '{}' is not a length", value.escape_debug())))?;
            if length.is_some_and(|l| l != n) {
                return Err(Refusal(400, "two different Content-Length headers".into()));
            }
            length = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            let chunked = value.to_ascii_lowercase().split(',').any(|c| c.trim() == "chunked");
            encoded = Some(encoded.unwrap_or(false) || chunked);
        } else if h.name.eq_ignore_ascii_case("connection") {
            let v = value.to_ascii_lowercase();
            if v.split(',').any(|c| c.trim() == "close") {
                close = true;
            } else if v.split(',').any(|c| c.trim() == "keep-alive") {
                close = false;
            }
        } else if h.name.eq_ignore_ascii_case("expect") && value.eq_ignore_ascii_case("100-continue") {
            expect_continue = true;
        } else if h.name.eq_ignore_ascii_case("accept") {
            // Bounded by the head's size limit.
            if !accept.is_empty() {
                accept.push(',');
            }
            accept.push_str(value);
        }
    }
    let framing = match encoded {
        Some(chunked) => Framing::Encoded { chunked },
        None => Framing::Length(length.unwrap_or(0)),
    };
    Ok(Some(Head { method, path, len, close, framing, expect_continue, accept }))
}

/// Serve requests on one connection until it closes, breaks, idles out or misbehaves.
pub fn serve(s: &mut dyn Stream, limits: &Limits, handler: &dyn Handler, admission: Admission) {
    let mut buf: Vec<u8> = Vec::new();
    let mut wait = limits.head_timeout;
    loop {
        // Wait for the first byte of the next request (a new connection: as long as a head
        // may take; between keep-alive requests: the idle timeout). Nothing: close quietly.
        if buf.is_empty() && read_some(s, &mut buf, limits.max_head, Instant::now() + wait).is_err() {
            return;
        }
        wait = limits.idle_timeout;
        let head_deadline = Instant::now() + limits.head_timeout;
        let mut scanned = 0;
        let head = loop {
            if head_ends(&buf, scanned) {
                match parse_head(&buf, limits) {
                    Ok(Some(h)) => break h,
                    Ok(None) => {}
                    Err(Refusal(code, why)) => return refuse(s, limits, handler, code, &why, None),
                }
            }
            if buf.len() >= limits.max_head {
                let why = format!("request head larger than {} bytes", limits.max_head);
                return refuse(s, limits, handler, 431, &why, None);
            }
            scanned = buf.len();
            let room = limits.max_head + 1 - buf.len();
            match read_some(s, &mut buf, room, head_deadline) {
                Ok(_) => {}
                Err(ReadEnd::Timeout) => {
                    let why = format!("the request head did not arrive within {:?}", limits.head_timeout);
                    return refuse(s, limits, handler, 408, &why, None);
                }
                Err(ReadEnd::Eof) if buf.iter().all(|b| b.is_ascii_whitespace()) => return,
                Err(ReadEnd::Eof) => return refuse(s, limits, handler, 400, "incomplete request head", None),
                Err(ReadEnd::Broken) => return,
            }
        };
        let path = Some(head.path.as_str());
        if admission == Admission::Denied {
            return refuse(s, limits, handler, 403, "only pilot's own user and root may use this socket", path);
        }
        let length = match head.framing {
            Framing::Encoded { chunked: true } => {
                let why = "chunked request bodies are not supported: send the body with a Content-Length";
                return refuse(s, limits, handler, 411, why, path);
            }
            Framing::Encoded { chunked: false } => {
                return refuse(s, limits, handler, 501, "Transfer-Encoding is not supported", path);
            }
            Framing::Length(n) if n > limits.max_body => {
                let why = format!("body larger than {} bytes", limits.max_body);
                return refuse(s, limits, handler, 413, &why, path);
            }
            Framing::Length(n) => n,
        };
        buf.drain(..head.len);
        let write_deadline = || Instant::now() + limits.write_timeout;
        if head.expect_continue
            && length > buf.len()
            && !write_by(s, b"HTTP/1.1 100 Continue\r\n\r\n", write_deadline())
        {
            return;
        }
        let body_deadline = Instant::now() + limits.body_timeout;
        while buf.len() < length {
            let room = length - buf.len();
            match read_some(s, &mut buf, room, body_deadline) {
                Ok(_) => {}
                Err(ReadEnd::Timeout) => {
                    let why = format!("the body ({length} bytes) did not arrive within {:?}", limits.body_timeout);
                    return refuse(s, limits, handler, 408, &why, path);
                }
                Err(_) => return,
            }
        }
        let response = handler.handle(&Request {
            method: head.method,
            path: &head.path,
            body: &buf[..length],
            accept: &head.accept,
        });
        buf.drain(..length);
        let bytes = response.encode(head.close, head.method == Method::Head);
        if !write_by(s, &bytes, write_deadline()) || head.close {
            return;
        }
    }
}

/// How long and how much a refused client's remaining bytes are read and dropped after the
/// answer, so that closing with unread data (a TCP reset) does not destroy the answer
/// before the client reads it. Bounded: a slot is held at most this long more.
const LINGER: Duration = Duration::from_millis(500);
const LINGER_BYTES: usize = 256 << 10;

/// Answer a refused request and end the connection (its framing can no longer be trusted).
fn refuse(s: &mut dyn Stream, limits: &Limits, handler: &dyn Handler, code: u16, why: &str, path: Option<&str>) {
    log::debug!("{}: refused a request ({code}): {why}", limits.name);
    handler.refused(code, path);
    if write_by(s, &Response::text(code, why).encode(true, false), Instant::now() + limits.write_timeout) {
        s.shutdown_write();
        let deadline = Instant::now() + LINGER;
        let mut drained = 0;
        let mut sink = Vec::new();
        while drained < LINGER_BYTES {
            sink.clear();
            match read_some(s, &mut sink, LINGER_BYTES - drained, deadline) {
                Ok(n) => drained += n,
                Err(_) => break,
            }
        }
    }
}
