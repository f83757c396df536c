//! Helpers for tests/hostile_runtime.rs: a misbehaving Consul agent (a real one cannot be
//! made to forget every service it registers), and what /proc says of a running pilot.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// A fake agent on a free loopback port: `answer(method, path)` gives status and body.
pub struct FakeAgent {
    pub port: u16,
    pub requests: Arc<Mutex<Vec<String>>>,
    pub count: Arc<AtomicUsize>,
}

impl FakeAgent {
    pub fn start(answer: fn(&str, &str) -> (u16, &'static str)) -> FakeAgent {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let count = Arc::new(AtomicUsize::new(0));
        let (reqs, cnt) = (requests.clone(), count.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let (reqs, cnt) = (reqs.clone(), cnt.clone());
                std::thread::spawn(move || serve(conn, answer, &reqs, &cnt));
            }
        });
        FakeAgent { port, requests, count }
    }

    /// How many requests had a request line starting with `prefix` ("PUT /v1/agent/service/register").
    pub fn seen(&self, prefix: &str) -> usize {
        self.requests.lock().unwrap().iter().filter(|r| r.starts_with(prefix)).count()
    }
}

fn serve(conn: TcpStream, answer: fn(&str, &str) -> (u16, &'static str), reqs: &Mutex<Vec<String>>, n: &AtomicUsize) {
    let mut out = conn.try_clone().unwrap();
    let mut r = BufReader::new(conn);
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut length = 0usize;
        loop {
            let mut h = String::new();
            if r.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            if h == "\r\n" {
                break;
            }
            if let Some((k, v)) = h.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                length = v.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; length];
        if r.read_exact(&mut body).is_err() {
            return;
        }
        let mut parts = line.split_whitespace();
        let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        // Keep memory bounded if pilot misbehaves: the count goes on, the list stops.
        if n.fetch_add(1, Ordering::SeqCst) < 100_000 {
            reqs.lock().unwrap().push(format!("{method} {path}"));
        }
        let (status, text) = answer(method, path);
        let reply = format!(
            "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nX-Consul-Index: 1\r\n\r\n{text}",
            text.len()
        );
        if out.write_all(reply.as_bytes()).is_err() {
            return;
        }
    }
}

/// Threads of a process (entries of /proc/PID/task).
pub fn threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task")).map(|d| d.count()).unwrap_or(0)
}

/// A script file with the given text, executable.
pub fn script(dir: &std::path::Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    path.display().to_string()
}
