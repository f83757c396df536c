//! Health in the job ad: when pilot runs as an HTCondor job with the starter's Chirp proxy
//! (`want_io_proxy = true` in the submit file, so the starter writes `.chirp.config` and sets
//! `$_CONDOR_CHIRP_CONFIG`), it publishes its jobs' health and Consul registrations into the
//! job's ad as `PilotHealth` and `PilotServices`. `condor_q -af PilotHealth PilotServices` then
//! shows what Consul shows, at a site without Consul too.
//!
//! The protocol is the starter's Chirp (`host port cookie` in the config file; lines of
//! `cookie C`, `set_job_attr NAME EXPR`, each answered by a number, negative on error), spoken
//! here directly rather than through `condor_chirp`: pilot's image has no HTCondor, and a
//! connection per change is cheaper than a process. It is published on change only, read from
//! the supervisor's own status every [`POLL`], so a check every second costs one line in the
//! ad when the health flips, not one per check. Everything here is best effort: a chirp proxy
//! that is gone, slow or answers nonsense costs a warning, never the payload.

use crate::control::Request;
use crate::status::{HealthState, Status};
use log::{debug, info, warn};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::mpsc::{RecvTimeoutError, channel};
use std::time::Duration;

/// How often the supervisor's status is compared with what was last published: the most
/// often the ad changes.
pub const POLL: Duration = Duration::from_secs(5);
/// Connect, read and write limits for one publication.
const IO_LIMIT: Duration = Duration::from_secs(5);
/// The starter reads a command line into a fixed buffer (CHIRP_LINE_MAX, 1024 in HTCondor's
/// client): an attribute's value, quoted and escaped twice, stays well below it.
const EXPR_MAX: usize = 900;
/// What pilot keeps of the services' text before encoding it (a memory bound only).
const VALUE_MAX: usize = 4096;
/// The largest `.chirp.config` read (it is one short line).
const CONFIG_MAX: u64 = 4096;

/// Where the starter's Chirp proxy listens, and the cookie that proves this is its job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChirpConfig {
    pub host: String,
    pub port: u16,
    cookie: String,
}

impl ChirpConfig {
    /// Parse `.chirp.config`: `HOST PORT COOKIE` separated by whitespace.
    pub fn parse(text: &str, path: &str) -> Result<ChirpConfig, String> {
        let mut words = text.split_whitespace();
        let (Some(host), Some(port), Some(cookie)) = (words.next(), words.next(), words.next()) else {
            return Err(format!("{path}: expected 'HOST PORT COOKIE', found {:?}", text.trim()));
        };
        let port = port.parse::<u16>().map_err(|_| format!("{path}: port '{port}' is not a TCP port number"))?;
        if cookie.chars().any(|c| c.is_control()) {
            return Err(format!("{path}: the cookie has control characters"));
        }
        Ok(ChirpConfig { host: host.into(), port, cookie: cookie.into() })
    }

    /// `$_CONDOR_CHIRP_CONFIG`'s file; None when the job has no Chirp proxy.
    pub fn from_env(env: &dyn Fn(&str) -> Option<String>) -> Option<Result<ChirpConfig, String>> {
        let path = env("_CONDOR_CHIRP_CONFIG").filter(|p| !p.is_empty())?;
        let text = crate::fsread::read_regular_within(std::path::Path::new(&path), CONFIG_MAX, IO_LIMIT)
            .map_err(|e| format!("_CONDOR_CHIRP_CONFIG: {e}"));
        Some(text.and_then(|t| ChirpConfig::parse(&t, &path)))
    }
}

/// What goes into the ad: the overall health and each service's registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// `passing` when every health-checked job is healthy, `critical` when one is not,
    /// `unknown` before the first checks, `none` when no job has a check; `stopping` once
    /// pilot is shutting down.
    pub health: &'static str,
    /// `job: state` for every job with a Consul service, `; `-separated.
    pub services: String,
}

impl Published {
    pub fn of(status: &Status) -> Published {
        let checked: Vec<HealthState> = status.jobs.iter().filter_map(|j| j.health).collect();
        let health = if status.shutting_down {
            "stopping"
        } else if checked.is_empty() {
            "none"
        } else if checked.contains(&HealthState::Unhealthy) {
            "critical"
        } else if checked.contains(&HealthState::Unknown) {
            "unknown"
        } else {
            "passing"
        };
        let services: Vec<String> =
            status.jobs.iter().filter_map(|j| Some(format!("{}: {}", j.name, j.consul.as_ref()?))).collect();
        Published { health, services: truncate(services.join("; "), VALUE_MAX) }
    }
}

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max - 3;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push_str("...");
    }
    s
}

/// A Chirp protocol word: whitespace and backslashes escaped with a backslash, as HTCondor's
/// client does, so an expression with spaces stays one argument.
pub fn chirp_word(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, ' ' | '\t' | '\n' | '\r' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// `value` as a ClassAd string literal (quotes and backslashes escaped, control characters
/// dropped) written as one Chirp word, at most `max` bytes: cut short with `...` inside the
/// quotes when longer. Both escapes can double a character, so the bound is on the result.
pub fn string_expr_word(value: &str, max: usize) -> String {
    let mut out = String::from("\"");
    for c in value.chars().filter(|c| !c.is_control()) {
        let literal = if c == '"' || c == '\\' { format!("\\{c}") } else { c.to_string() };
        let piece = chirp_word(&literal);
        if out.len() + piece.len() + "...\"".len() > max {
            out.push_str("...");
            break;
        }
        out.push_str(&piece);
    }
    out.push('"');
    out
}

/// One connection to the starter's Chirp proxy, authenticated with the cookie.
struct Session {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Session {
    fn open(cfg: &ChirpConfig) -> Result<Session, String> {
        let addr = (cfg.host.as_str(), cfg.port)
            .to_socket_addrs()
            .map_err(|e| format!("{}:{}: {e}", cfg.host, cfg.port))?
            .next()
            .ok_or_else(|| format!("{}:{}: no address", cfg.host, cfg.port))?;
        let stream = TcpStream::connect_timeout(&addr, IO_LIMIT).map_err(|e| format!("connect {addr}: {e}"))?;
        stream.set_read_timeout(Some(IO_LIMIT)).map_err(|e| e.to_string())?;
        stream.set_write_timeout(Some(IO_LIMIT)).map_err(|e| e.to_string())?;
        let writer = stream.try_clone().map_err(|e| e.to_string())?;
        let mut s = Session { reader: BufReader::new(stream), writer };
        s.command(&format!("cookie {}", chirp_word(&cfg.cookie)))
            .map_err(|e| format!("the proxy refused the cookie: {e}"))?;
        Ok(s)
    }

    /// Send one command line; the answer is a number, negative for an error.
    fn command(&mut self, line: &str) -> Result<i64, String> {
        self.writer.write_all(format!("{line}\n").as_bytes()).map_err(|e| format!("write: {e}"))?;
        let mut answer = String::new();
        // A proxy that streams without a newline must not grow this without bound.
        (&mut self.reader).take(64).read_line(&mut answer).map_err(|e| match e.kind() {
            // A read timeout is EAGAIN on Linux: "Resource temporarily unavailable" would
            // send whoever reads the log looking for a resource limit.
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
                format!("no answer within {IO_LIMIT:?}")
            }
            _ => format!("read: {e}"),
        })?;
        let n: i64 = answer.trim().parse().map_err(|_| format!("unexpected answer {:?}", answer.trim()))?;
        if n < 0 { Err(format!("error {n}")) } else { Ok(n) }
    }

    fn set_job_attr(&mut self, name: &str, value: &str) -> Result<(), String> {
        self.command(&format!("set_job_attr {name} {}", string_expr_word(value, EXPR_MAX)))
            .map(|_| ())
            .map_err(|e| format!("set_job_attr {name}: {e}"))
    }
}

/// Write `p` into the job's ad.
pub fn publish(cfg: &ChirpConfig, p: &Published) -> Result<(), String> {
    let mut s = Session::open(cfg)?;
    s.set_job_attr("PilotHealth", p.health)?;
    s.set_job_attr("PilotServices", &p.services)
}

/// When the job has a Chirp proxy, start the thread that keeps the ad up to date from the
/// supervisor's status (asked through `send`, as the control socket does). It ends when the
/// supervisor stops answering.
pub fn start(env: &dyn Fn(&str) -> Option<String>, send: Box<dyn Fn(Request) -> bool + Send>) {
    let cfg = match ChirpConfig::from_env(env) {
        None => return,
        Some(Err(e)) => return warn!("chirp: {e}; the job ad gets no PilotHealth"),
        Some(Ok(cfg)) => cfg,
    };
    let spawned = std::thread::Builder::new().name("chirp".into()).spawn(move || {
        let mut last: Option<Published> = None;
        let mut failing = false;
        loop {
            let (tx, rx) = channel();
            if !send(Request::Status(tx)) {
                return;
            }
            let status = match rx.recv_timeout(IO_LIMIT) {
                Ok(status) => status,
                // A supervisor too busy to answer now is asked again at the next round.
                Err(RecvTimeoutError::Timeout) => {
                    std::thread::sleep(POLL);
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => return,
            };
            let now = Published::of(&status);
            if last.as_ref() != Some(&now) {
                match publish(&cfg, &now) {
                    Ok(()) => {
                        if failing {
                            info!("chirp: publishing into the job ad again");
                        }
                        debug!("chirp: PilotHealth = {}, PilotServices = {}", now.health, now.services);
                        failing = false;
                        last = Some(now);
                    }
                    Err(e) if !failing => {
                        warn!("chirp: {e}; PilotHealth is retried at the next change");
                        failing = true;
                    }
                    Err(e) => debug!("chirp: {e}"),
                }
            }
            if status.shutting_down {
                return;
            }
            std::thread::sleep(POLL);
        }
    });
    if let Err(e) = spawned {
        warn!("chirp: cannot start its thread: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::{JobState, JobStatus};
    use std::net::TcpListener;

    fn job(name: &str, health: Option<HealthState>, consul: Option<&str>) -> JobStatus {
        JobStatus {
            name: name.into(),
            state: JobState::Running,
            pid: Some(1),
            runs: 1,
            restarts: 0,
            last_exit: None,
            health,
            consul: consul.map(String::from),
        }
    }

    fn status(jobs: Vec<JobStatus>) -> Status {
        Status {
            version: "x".into(),
            pid: 1,
            maintenance: false,
            shutting_down: false,
            reloading: false,
            jobs,
            telemetry: None,
            orphans_reaped: 0,
        }
    }

    #[test]
    fn the_config_file_is_host_port_cookie() {
        let c = ChirpConfig::parse("127.0.0.1 41234 abc123\n", "f").unwrap();
        assert_eq!((c.host.as_str(), c.port, c.cookie.as_str()), ("127.0.0.1", 41234, "abc123"));
        assert!(ChirpConfig::parse("127.0.0.1 99999 c", "f").unwrap_err().contains("port '99999'"));
        assert!(ChirpConfig::parse("", "f").unwrap_err().contains("expected 'HOST PORT COOKIE'"));
    }

    #[test]
    fn health_is_what_consul_would_show() {
        let p = Published::of(&status(vec![
            job("a", Some(HealthState::Healthy), Some("registered as a-1 (passing)")),
            job("b", None, None),
        ]));
        assert_eq!(p.health, "passing");
        assert_eq!(p.services, "a: registered as a-1 (passing)");
        let p = Published::of(&status(vec![
            job("a", Some(HealthState::Unhealthy), None),
            job("b", Some(HealthState::Unknown), None),
        ]));
        assert_eq!(p.health, "critical");
        assert_eq!(Published::of(&status(vec![job("b", Some(HealthState::Unknown), None)])).health, "unknown");
        assert_eq!(Published::of(&status(vec![job("b", None, None)])).health, "none");
    }

    #[test]
    fn values_are_quoted_escaped_and_bounded() {
        // ClassAd escapes the quotes and the backslash, Chirp the spaces and the backslashes.
        assert_eq!(string_expr_word(r#"a "b" \c"#, 100), r#""a\ \\"b\\"\ \\\\c""#);
        assert_eq!(string_expr_word("a\nb", 100), "\"ab\"");
        let long = "é".repeat(10_000);
        let p = Published::of(&status(vec![job("a", None, Some(&long))]));
        assert!(p.services.len() <= VALUE_MAX && p.services.ends_with("..."), "{}", p.services.len());
        // The worst case for the line: every character doubled twice.
        for nasty in ["\\".repeat(5000), " ".repeat(5000), "\"".repeat(5000), p.services.clone()] {
            let w = string_expr_word(&nasty, EXPR_MAX);
            assert!(w.len() <= EXPR_MAX && w.ends_with("...\""), "{} bytes", w.len());
        }
    }

    /// A proxy on loopback that records the lines and answers each with `answer`.
    fn proxy(answer: &'static str) -> (ChirpConfig, std::thread::JoinHandle<Vec<String>>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let h = std::thread::spawn(move || {
            let (s, _) = l.accept().unwrap();
            let mut w = s.try_clone().unwrap();
            let mut lines = Vec::new();
            for line in BufReader::new(s).lines() {
                let Ok(line) = line else { break };
                lines.push(line);
                if w.write_all(answer.as_bytes()).is_err() {
                    break;
                }
            }
            lines
        });
        (ChirpConfig { host: "127.0.0.1".into(), port, cookie: "secret".into() }, h)
    }

    #[test]
    fn publishes_both_attributes_after_the_cookie() {
        let (cfg, h) = proxy("0\n");
        let p = Published { health: "critical", services: "a: registered as a-1 (critical)".into() };
        publish(&cfg, &p).unwrap();
        let lines = h.join().unwrap();
        assert_eq!(
            lines,
            [
                "cookie secret",
                "set_job_attr PilotHealth \"critical\"",
                "set_job_attr PilotServices \"a:\\ registered\\ as\\ a-1\\ (critical)\""
            ]
        );
    }

    #[test]
    fn a_refusing_or_babbling_proxy_is_an_error_not_a_hang() {
        let (cfg, _h) = proxy("-3\n");
        let p = Published { health: "passing", services: String::new() };
        assert!(publish(&cfg, &p).unwrap_err().contains("refused the cookie"));
        let (cfg, _h) = proxy("nonsense without end ");
        assert!(publish(&cfg, &p).is_err());
        // A proxy that takes the connection and never answers: a timeout, said as one.
        let silent = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = silent.local_addr().unwrap().port();
        std::thread::spawn(move || {
            let conn = silent.accept();
            std::thread::sleep(IO_LIMIT * 2);
            drop(conn);
        });
        let cfg = ChirpConfig { host: "127.0.0.1".into(), port, cookie: "c".into() };
        let e = publish(&cfg, &p).unwrap_err();
        assert!(e.contains("no answer within 5s"), "{e}");
        // Nobody listening.
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let cfg = ChirpConfig { host: "127.0.0.1".into(), port, cookie: "c".into() };
        assert!(publish(&cfg, &p).unwrap_err().contains("connect"));
    }
}
