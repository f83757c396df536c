//! The client side, for `pilot status`, `putenv` and friends: one request over a Unix
//! socket, after checking who listens there. A socket is a path anybody may have created:
//! the server's SO_PEERCRED uid must be ours or root before a byte (a `putenv
//! DB_PASSWORD=…`) is sent.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

/// Answers larger than this are cut (a status of thousands of jobs is far smaller).
const MAX_ANSWER: usize = 16 << 20;

#[derive(Debug)]
pub enum CallError {
    /// Nobody listens there (or the path is no socket).
    Connect(std::io::Error),
    /// The server runs as another user: nothing was sent.
    Untrusted { uid: u32 },
    /// The conversation broke or timed out.
    Io(std::io::Error),
    /// The answer is not HTTP.
    Malformed(String),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Connect(e) => write!(f, "connecting: {e}"),
            CallError::Untrusted { uid } => write!(
                f,
                "the server there runs as uid {uid}, neither you (uid {}) nor root: nothing was sent to it",
                nix::unistd::geteuid()
            ),
            CallError::Io(e) => write!(f, "{e}"),
            CallError::Malformed(e) => write!(f, "not an HTTP answer: {e}"),
        }
    }
}

/// Connect to `socket` and check that the server is ours (our uid or root).
pub fn connect_trusted(socket: &Path) -> Result<UnixStream, CallError> {
    let s = UnixStream::connect(socket).map_err(CallError::Connect)?;
    let uid = super::peer::uid(&s).map_err(CallError::Io)?;
    if !super::peer::trusted(uid) {
        return Err(CallError::Untrusted { uid });
    }
    Ok(s)
}

/// One request; the status code and body of the answer.
pub fn call(
    socket: &Path,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
    timeout: Duration,
) -> Result<(u16, String), CallError> {
    let mut s = connect_trusted(socket)?;
    let deadline = Instant::now() + timeout;
    let left = || deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    if let Some(b) = body {
        req.push_str(&format!("Content-Type: application/json\r\nContent-Length: {}\r\n", b.len()));
    } else if method == "POST" {
        req.push_str("Content-Length: 0\r\n");
    }
    req.push_str("\r\n");
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(body.unwrap_or_default());
    s.set_write_timeout(Some(left())).map_err(CallError::Io)?;
    s.write_all(&bytes).map_err(CallError::Io)?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut resp = httparse::Response::new(&mut headers);
        match resp.parse(&buf) {
            Ok(httparse::Status::Complete(head)) => {
                let code = resp.code.unwrap_or(0);
                let length = resp
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                    .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse::<usize>().ok());
                if code == 100 {
                    buf.drain(..head);
                    continue;
                }
                let want = length.map_or(MAX_ANSWER, |l| l.min(MAX_ANSWER));
                while buf.len() - head < want {
                    s.set_read_timeout(Some(left())).map_err(CallError::Io)?;
                    match s.read(&mut chunk) {
                        Ok(0) => break,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(CallError::Io(e)),
                    }
                }
                let end = buf.len().min(head + want);
                return Ok((code, String::from_utf8_lossy(&buf[head..end]).into_owned()));
            }
            Ok(httparse::Status::Partial) if buf.len() < 64 << 10 => {}
            Ok(httparse::Status::Partial) => return Err(CallError::Malformed("answer head too large".into())),
            Err(e) => return Err(CallError::Malformed(e.to_string())),
        }
        s.set_read_timeout(Some(left())).map_err(CallError::Io)?;
        match s.read(&mut chunk) {
            Ok(0) => return Err(CallError::Malformed("the connection closed before an answer".into())),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(CallError::Io(e)),
        }
    }
}
