//! Answers: status line, the few headers pilot sends, and a body with its length.

/// An answer to one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub code: u16,
    pub content_type: &'static str,
    /// The `Allow` header of a 405.
    pub allow: Option<&'static str>,
    pub body: Vec<u8>,
}

impl Response {
    /// A plain-text answer; the body gets a final newline (curl users read it on a terminal).
    pub fn text(code: u16, body: impl Into<String>) -> Response {
        let mut b = body.into();
        if !b.is_empty() && !b.ends_with('\n') {
            b.push('\n');
        }
        Response { code, content_type: "text/plain; charset=utf-8", allow: None, body: b.into_bytes() }
    }

    pub fn with_type(mut self, content_type: &'static str) -> Response {
        self.content_type = content_type;
        self
    }

    pub fn with_allow(mut self, allow: &'static str) -> Response {
        self.allow = Some(allow);
        self
    }

    /// The bytes on the wire. `close` adds `Connection: close`; `head_only` leaves the body
    /// out (a HEAD request) but keeps its length.
    pub fn encode(&self, close: bool, head_only: bool) -> Vec<u8> {
        let mut out = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n",
            self.code,
            reason(self.code),
            self.content_type,
            self.body.len()
        );
        if let Some(a) = self.allow {
            out.push_str(&format!("Allow: {a}\r\n"));
        }
        if close {
            out.push_str("Connection: close\r\n");
        }
        out.push_str("\r\n");
        let mut bytes = out.into_bytes();
        if !head_only {
            bytes.extend_from_slice(&self.body);
        }
        bytes
    }
}

pub fn reason(code: u16) -> &'static str {
    match code {
        100 => "Continue",
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Content Too Large",
        422 => "Unprocessable Content",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "Status",
    }
}
