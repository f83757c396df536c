//! The request path from byte buffers: framing, limits and refusals.

use super::*;

struct Echo;

impl Handler for Echo {
    fn handle(&self, req: &Request) -> Response {
        Response::text(200, format!("{:?} {} {}", req.method, req.path, String::from_utf8_lossy(req.body)))
    }
}

fn run(input: &[u8], limits: &Limits) -> String {
    String::from_utf8_lossy(&answer(input, limits, &Echo, Admission::Allowed)).into_owned()
}

fn codes(out: &str) -> Vec<&str> {
    out.match_indices("HTTP/1.1 ").map(|(i, _)| &out[i + 9..i + 12]).filter(|c| *c != "100").collect()
}

#[test]
fn keep_alive_and_pipelining_answer_each_request() {
    let out = run(
        b"GET /a?x=1 HTTP/1.1\r\nHost: x\r\n\r\nPOST /b HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcGET /c HTTP/1.1\r\nConnection: close\r\n\r\nGET /never HTTP/1.1\r\n\r\n",
        &Limits::control(),
    );
    assert_eq!(codes(&out), ["200", "200", "200"], "{out}");
    assert!(out.contains("Get /a ") && out.contains("Post /b abc") && out.contains("Get /c "), "{out}");
    assert!(!out.contains("/never"), "nothing after Connection: close: {out}");
}

#[test]
fn limits_and_unsupported_framing_get_clear_refusals() {
    let limits = Limits::control();
    let big_head = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(limits.max_head));
    assert_eq!(codes(&run(big_head.as_bytes(), &limits)), ["431"]);
    let many = format!("GET / HTTP/1.1\r\n{}\r\n", "X: y\r\n".repeat(limits.max_headers + 1));
    assert_eq!(codes(&run(many.as_bytes(), &limits)), ["431"]);
    let body = format!("POST / HTTP/1.1\r\nContent-Length: {}\r\n\r\n", limits.max_body + 1);
    assert_eq!(codes(&run(body.as_bytes(), &limits)), ["413"]);
    assert_eq!(codes(&run(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", &limits)), ["411"]);
    assert_eq!(codes(&run(b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", &limits)), ["501"]);
    assert_eq!(codes(&run(b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", &limits)), ["400"]);
    assert_eq!(codes(&run(b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", &limits)), ["400"]);
    assert_eq!(codes(&run(b"GARBAGE\r\n\r\n", &limits)), ["400"]);
    assert_eq!(codes(&run(b"GET / HTTP/1.1\r\nHost", &limits)), ["400"], "a head cut short");
    assert_eq!(run(b"", &limits), "", "nothing sent, nothing answered");
    let expect = run(b"POST /e HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nhi", &limits);
    assert!(expect.starts_with("HTTP/1.1 200") && expect.contains("Post /e hi"), "body already sent: no 100: {expect}");
}

#[test]
fn a_denied_peer_gets_403_and_nothing_reaches_the_handler() {
    let out = answer(b"GET /x HTTP/1.1\r\n\r\n", &Limits::control(), &Echo, Admission::Denied);
    let out = String::from_utf8_lossy(&out);
    assert!(out.starts_with("HTTP/1.1 403") && !out.contains("Get /x"), "{out}");
}

#[test]
fn head_answers_carry_no_body() {
    let out = run(b"HEAD /h HTTP/1.1\r\nConnection: close\r\n\r\n", &Limits::control());
    assert!(out.starts_with("HTTP/1.1 200") && out.contains("Content-Length: 9") && out.ends_with("\r\n\r\n"), "{out}");
}
