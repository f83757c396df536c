//! The typed configuration and its validation, field by field as ContainerPilot v3 does
//! (docs/containerpilot.md, "Configuration"), with pilot's documented differences (the table
//! there): `consul` is optional, jobs may carry `meta`, names of jobs must be unique and not
//! reserved, values are range-checked, and jobs whose start events wait on each other in a
//! cycle are reported (a warning: ContainerPilot runs such files).

use super::decode::{Decoder, Obj, shorten};
use crate::events::{self, Code};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::LazyLock;
use std::time::Duration;

/// The Consul agent's URL scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Scheme {
    #[default]
    Http,
    Https,
}

/// A Consul health check's status, as the agent spells it: `initial_status` of a job, and
/// what the Consul worker sends. (Not `Copy`, so the worker's code that cloned the status
/// strings reads the same.)
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckStatus {
    Passing,
    Warning,
    Critical,
}

impl CheckStatus {
    pub fn parse(s: &str) -> Option<CheckStatus> {
        match s {
            "passing" => Some(CheckStatus::Passing),
            "warning" => Some(CheckStatus::Warning),
            "critical" => Some(CheckStatus::Critical),
            _ => None,
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            CheckStatus::Passing => "passing",
            CheckStatus::Warning => "warning",
            CheckStatus::Critical => "critical",
        }
    }
}

impl fmt::Display for CheckStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The kind of a custom telemetry metric (Prometheus' four).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    Counter,
    Gauge,
    Histogram,
    Summary,
}

impl MetricKind {
    pub fn parse(s: &str) -> Option<MetricKind> {
        match s {
            "counter" => Some(MetricKind::Counter),
            "gauge" => Some(MetricKind::Gauge),
            "histogram" => Some(MetricKind::Histogram),
            "summary" => Some(MetricKind::Summary),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            MetricKind::Counter => "counter",
            MetricKind::Gauge => "gauge",
            MetricKind::Histogram => "histogram",
            MetricKind::Summary => "summary",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub consul: Option<Consul>,
    pub logging: Logging,
    pub jobs: Vec<Job>,
    pub watches: Vec<Watch>,
    pub telemetry: Option<Telemetry>,
    pub control: Control,
    /// Upper bound on the final phase of shutdown (ContainerPilot's top-level stopTimeout).
    pub stop_timeout: Duration,
}

#[derive(Debug, Clone, Default)]
pub struct Consul {
    pub address: String,
    pub scheme: Scheme,
    pub token: Option<String>,
    pub cafile: Option<String>,
    pub capath: Option<String>,
    pub clientcert: Option<String>,
    pub clientkey: Option<String>,
    pub servername: Option<String>,
    /// Verify TLS certificates. Unlike ContainerPilot (off by default), on unless turned off.
    pub verify: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum LogFormat {
    Default,
    Text,
    Json,
}

#[derive(Debug, Clone, PartialEq)]
pub enum LogOutput {
    Stdout,
    Stderr,
    File(String),
}

#[derive(Debug, Clone)]
pub struct Logging {
    pub level: log::LevelFilter,
    pub format: LogFormat,
    pub output: LogOutput,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restarts {
    Count(u32),
    Unlimited,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Trigger {
    /// Start on `code` from `source`, once or on each occurrence.
    Event { code: Code, source: String, each: bool },
    /// Periodic job.
    Interval(Duration),
    /// `source: "SIGHUP"`/`"SIGUSR2"`: run on every such signal.
    Signal(String),
    /// A `source` with neither `once` nor `each`, or a job's event with no `source`: the job
    /// never starts (as in ContainerPilot; check-config warns).
    Never,
}

#[derive(Debug, Clone)]
pub struct Health {
    pub exec: Option<Vec<String>>,
    pub interval: Duration,
    pub ttl: Duration,
    pub timeout: Duration,
    pub raw: bool,
}

#[derive(Debug, Clone)]
pub struct Job {
    pub name: String,
    pub exec: Option<Vec<String>>,
    pub raw: bool,
    pub trigger: Trigger,
    /// `when.timeout`: give up waiting for the start event after this long.
    pub when_timeout: Option<Duration>,
    /// Kill the exec (SIGKILL) when it has run this long.
    pub timeout: Option<Duration>,
    /// How long a stopping job gets between SIGTERM and SIGKILL (default: the global one).
    pub stop_timeout: Option<Duration>,
    pub restarts: Restarts,
    pub health: Option<Health>,
    pub port: u16,
    pub interfaces: Vec<String>,
    pub tags: Vec<String>,
    pub meta: BTreeMap<String, String>,
    pub initial_status: Option<CheckStatus>,
    pub enable_tag_override: bool,
    pub deregister_critical_after: Option<Duration>,
    /// pilot's `user`, `group`, `capabilities`, `no_new_privs` (see `config::privileges`).
    pub privileges: super::privileges::Privileges,
}

#[derive(Debug, Clone)]
pub struct Watch {
    pub name: String,
    pub interval: Duration,
    pub tag: Option<String>,
    pub dc: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Metric {
    pub namespace: String,
    pub subsystem: String,
    pub name: String,
    pub help: String,
    pub kind: MetricKind,
}

#[derive(Debug, Clone)]
pub struct Telemetry {
    pub port: u16,
    pub interfaces: Vec<String>,
    pub tags: Vec<String>,
    pub metrics: Vec<Metric>,
}

#[derive(Debug, Clone, Default)]
pub struct Control {
    pub socket: Option<String>,
}

const TOP_KEYS: &[&str] = &["consul", "logging", "jobs", "watches", "telemetry", "control", "stopTimeout"];
const JOB_KEYS: &[&str] = &[
    "name",
    "exec",
    "logging",
    "when",
    "timeout",
    "stopTimeout",
    "restarts",
    "health",
    "port",
    "interfaces",
    "tags",
    "meta",
    "initial_status",
    "consul",
    "user",
    "group",
    "capabilities",
    "no_new_privs",
];
/// Interface specs must parse now, not when the service is first registered.
fn check_interfaces(d: &mut Decoder, path: &str, specs: &[String]) {
    for (k, spec) in specs.iter().enumerate() {
        if let Err(e) = crate::ifspec::parse(spec) {
            d.error(format!("{path}[{k}]"), e);
        }
    }
}

static SERVICE_NAME: LazyLock<regex_lite::Regex> =
    LazyLock::new(|| regex_lite::Regex::new(r"^[a-z][a-zA-Z0-9\-]+$").expect("static regex"));
static METRIC_NAME: LazyLock<regex_lite::Regex> =
    LazyLock::new(|| regex_lite::Regex::new(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$").expect("static regex"));

fn service_name_ok(name: &str) -> bool {
    SERVICE_NAME.is_match(name)
}

/// Linux signal names after `SIG`: `when.source` may name SIGHUP and SIGUSR2 today, and a
/// job named like any signal would be confused with it in events and logs.
const SIGNALS: &[&str] = &[
    "HUP", "INT", "QUIT", "ILL", "TRAP", "ABRT", "IOT", "BUS", "FPE", "KILL", "USR1", "SEGV", "USR2", "PIPE", "ALRM",
    "TERM", "STKFLT", "CHLD", "CONT", "STOP", "TSTP", "TTIN", "TTOU", "URG", "XCPU", "XFSZ", "VTALRM", "PROF", "WINCH",
    "IO", "POLL", "PWR", "SYS",
];

/// Why a job may not have this name, if it may not. A job's name is the source of its
/// events, so it must not be mistaken for another source (`global`, a signal, a health
/// check's `check.<job>`, a watch's `watch.<name>`), and it appears in logs and in the
/// status table, where a newline or a control character could forge lines.
pub fn reserved_job_name(name: &str) -> Option<String> {
    if name.trim().is_empty() {
        return Some("is blank".into());
    }
    if let Some(c) = name.chars().find(|c| c.is_control()) {
        return Some(format!("contains the control character {c:?}: job names appear in logs and events"));
    }
    if name == events::GLOBAL {
        return Some("'global' is the source of pilot's own events (startup, shutdown)".into());
    }
    if let Some(sig) = name.strip_prefix("SIG")
        && (SIGNALS.contains(&sig) || sig.starts_with("RTMIN") || sig.starts_with("RTMAX"))
    {
        return Some(format!("'{name}' names a signal, whose events are the source '{name}'"));
    }
    for prefix in ["check.", "watch."] {
        if name.starts_with(prefix) {
            return Some(format!("names starting with '{prefix}' are event sources of health checks and watches"));
        }
    }
    None
}

impl Config {
    /// Decode and validate; problems are appended to `d` and `None` is returned only when
    /// the root is unusable. Callers check `d` for errors before using the result.
    pub fn decode(root: &Value, d: &mut Decoder) -> Option<Config> {
        let top = d.object("", root, TOP_KEYS).or_else(|| {
            if let Some(x) = d.diags.last_mut() {
                x.message = "the config must be a JSON5 object at the top level".into();
            }
            None
        })?;
        let consul = top.get("consul").and_then(|v| decode_consul(d, "consul", v));
        let logging = decode_logging(d, top.get("logging"));
        let stop_timeout = match top.get("stopTimeout") {
            None => Duration::from_secs(5),
            Some(v) => match v {
                Value::Number(n) if n.as_f64().is_some_and(|f| f <= 0.0) => Duration::from_secs(5),
                _ => d.duration("stopTimeout", v).unwrap_or(Duration::from_secs(5)),
            },
        };
        let stop_timeout = if stop_timeout.is_zero() { Duration::from_secs(5) } else { stop_timeout };
        let control = top.get("control").map(|v| decode_control(d, v)).unwrap_or_default();
        let jobs = list(d, &top, "jobs").iter().filter_map(|(p, v)| decode_job(d, p, v)).collect::<Vec<_>>();
        let watches = list(d, &top, "watches").iter().filter_map(|(p, v)| decode_watch(d, p, v)).collect::<Vec<_>>();
        let telemetry = top.get("telemetry").and_then(|v| decode_telemetry(d, v));
        top.finish(d);
        let config = Config { consul, logging, jobs, watches, telemetry, control, stop_timeout };
        config.cross_check(d);
        Some(config)
    }

    /// Checks across jobs and watches: unique names, event sources that exist, Consul
    /// present when something needs it.
    fn cross_check(&self, d: &mut Decoder) {
        let mut seen = std::collections::HashSet::new();
        for (i, job) in self.jobs.iter().enumerate() {
            if !seen.insert(job.name.as_str()) {
                d.error(
                    format!("jobs[{i}].name"),
                    format!("duplicate job name '{}': event sources must be unambiguous", job.name),
                );
            }
        }
        for cycle in dependency_cycles(&self.jobs) {
            let names: Vec<&str> = cycle.iter().map(|&i| self.jobs[i].name.as_str()).collect();
            // A warning, not an error: ContainerPilot runs such a file (its other jobs work),
            // and pilot stops a cycle's jobs together at shutdown instead of hanging.
            d.warning(
                format!("jobs[{}].when.source", cycle[0]),
                format!(
                    "jobs wait on each other in a cycle: {} -> {}: none of them can start after the other; at shutdown pilot stops them together",
                    names.join(" -> "),
                    names[0]
                ),
            );
        }
        let mut sources: Vec<String> = vec![events::GLOBAL.to_string()];
        for job in &self.jobs {
            sources.push(job.name.clone());
            sources.push(format!("check.{}", job.name));
        }
        sources.extend(self.watches.iter().map(|w| format!("watch.{}", w.name)));
        for (i, job) in self.jobs.iter().enumerate() {
            if let Trigger::Event { source, .. } = &job.trigger
                && !sources.contains(source)
            {
                let refs: Vec<&str> = sources.iter().map(String::as_str).collect();
                let hint = super::diagnostic::did_you_mean(source, &refs)
                    .map(|s| format!("; did you mean '{s}'?"))
                    .unwrap_or_default();
                d.warning(
                    format!("jobs[{i}].when.source"),
                    format!("no job, health check or watch named '{source}': this job will never start{hint}"),
                );
            }
        }
        let registers = self.jobs.iter().any(|j| j.port != 0) || !self.watches.is_empty() || self.telemetry.is_some();
        // With CONSUL_HTTP_ADDR set the address is deliberate (a site sets it for every job,
        // docs/site.md): no warning on each payload's stderr then.
        if registers && self.consul.is_none() && std::env::var_os("CONSUL_HTTP_ADDR").is_none() {
            d.warning(
                "consul",
                "no consul stanza: services and watches use CONSUL_HTTP_ADDR or the node-local agent at 127.0.0.1:8500",
            );
        }
    }
}

/// Cycles of jobs that wait on each other, each as job indexes in order (job `c[k]` waits
/// on `c[k+1]`, and the last on the first).
///
/// The edges are the ones that order shutdown (the supervisor's `stop_ready_jobs`): a job
/// cannot stop while a job that is not a stop hook (not triggered by `stopping`, `stopped`
/// or `shutdown`) has it, or its health check `check.<name>`, as `when.source`. A cycle
/// there means that at shutdown no job of the cycle may stop first, and with `once` none
/// could start after the other either. A job waiting on itself is not a cycle (the
/// supervisor ignores that edge).
pub fn dependency_cycles(jobs: &[Job]) -> Vec<Vec<usize>> {
    // By name, so the walk stays linear for configs of thousands of jobs (a reload of one
    // is validated too).
    let index: std::collections::HashMap<&str, usize> =
        jobs.iter().enumerate().map(|(i, j)| (j.name.as_str(), i)).collect();
    let waits_on = |i: usize| -> Option<usize> {
        let Trigger::Event { code, source, .. } = &jobs[i].trigger else { return None };
        if matches!(code, Code::Stopping | Code::Stopped | Code::Shutdown) {
            return None;
        }
        let target = source.strip_prefix("check.").unwrap_or(source);
        index.get(target).copied().filter(|&t| t != i)
    };
    // Each job waits on at most one other: follow the chain from every job, marking what
    // has been walked; a chain that comes back to a job of the current walk is a cycle.
    let mut state = vec![0u8; jobs.len()]; // 0 new, 1 on the current walk, 2 done
    let mut cycles = Vec::new();
    for start in 0..jobs.len() {
        let mut walk = Vec::new();
        let mut at = Some(start);
        while let Some(i) = at {
            match state[i] {
                2 => break,
                1 => {
                    let from = walk.iter().position(|&w| w == i).unwrap_or(0);
                    cycles.push(walk[from..].to_vec());
                    break;
                }
                _ => {
                    state[i] = 1;
                    walk.push(i);
                    at = waits_on(i);
                }
            }
        }
        for i in walk {
            state[i] = 2;
        }
    }
    cycles
}

fn list<'a>(d: &mut Decoder, top: &Obj<'a>, key: &str) -> Vec<(String, &'a Value)> {
    match top.get(key) {
        None => Vec::new(),
        Some(Value::Array(items)) => {
            items.iter().enumerate().filter(|(_, v)| !v.is_null()).map(|(i, v)| (format!("{key}[{i}]"), v)).collect()
        }
        Some(other) => {
            d.error(key, format!("expected an array, got {}", super::decode::type_name(other)));
            Vec::new()
        }
    }
}

fn opt_string(d: &mut Decoder, o: &Obj, key: &str) -> Option<String> {
    o.get(key).and_then(|v| d.string(&o.field(key), v)).filter(|s| !s.is_empty())
}

/// A string that becomes a path or an argument: no NUL (see `Decoder::os_string`).
fn opt_os_string(d: &mut Decoder, o: &Obj, key: &str) -> Option<String> {
    o.get(key).and_then(|v| d.os_string(&o.field(key), v)).filter(|s| !s.is_empty())
}

fn decode_consul(d: &mut Decoder, path: &str, v: &Value) -> Option<Consul> {
    let mut c = Consul { verify: true, ..Consul::default() };
    match v {
        Value::String(s) => {
            let (scheme, addr) = match s.split_once("://") {
                Some((scheme @ ("http" | "https"), rest)) => (scheme, rest),
                // The agent's Unix socket; the scheme stays in the address for consul::address.
                Some(("unix", _)) => ("http", s.as_str()),
                Some((other, _)) => {
                    d.error(path, format!("unsupported scheme '{other}://': expected http://, https:// or unix://"));
                    return None;
                }
                None => ("http", s.as_str()),
            };
            c.scheme = if scheme == "https" { Scheme::Https } else { Scheme::Http };
            c.address = addr.into();
        }
        Value::Object(_) => {
            let o = d.object(path, v, &["address", "scheme", "token", "tls"])?;
            c.address = opt_string(d, &o, "address").unwrap_or_default();
            c.scheme = match opt_string(d, &o, "scheme").as_deref() {
                None | Some("http") => Scheme::Http,
                Some("https") => Scheme::Https,
                Some(other) => {
                    d.error(o.field("scheme"), format!("expected \"http\" or \"https\", got \"{other}\""));
                    Scheme::Http
                }
            };
            c.token = opt_string(d, &o, "token");
            if let Some(tls) = o.get("tls") {
                let keys = &["cafile", "capath", "clientcert", "clientkey", "servername", "verify"];
                if let Some(t) = d.object(&o.field("tls"), tls, keys) {
                    c.cafile = opt_os_string(d, &t, "cafile");
                    c.capath = opt_os_string(d, &t, "capath");
                    c.clientcert = opt_os_string(d, &t, "clientcert");
                    c.clientkey = opt_os_string(d, &t, "clientkey");
                    c.servername = opt_string(d, &t, "servername");
                    if let Some(v) = t.get("verify") {
                        c.verify = d.bool(&t.field("verify"), v).unwrap_or(true);
                    }
                    t.finish(d);
                }
            }
            o.finish(d);
        }
        other => {
            d.error(path, format!("expected \"host:port\" or an object, got {}", super::decode::type_name(other)));
            return None;
        }
    }
    Some(c)
}

fn decode_logging(d: &mut Decoder, v: Option<&Value>) -> Logging {
    let mut l = Logging { level: log::LevelFilter::Info, format: LogFormat::Default, output: LogOutput::Stdout };
    let Some(o) = v.and_then(|v| d.object("logging", v, &["level", "format", "output"])) else { return l };
    if let Some(level) = opt_string(d, &o, "level") {
        l.level = match level.to_ascii_uppercase().as_str() {
            "TRACE" => log::LevelFilter::Trace,
            "DEBUG" => log::LevelFilter::Debug,
            "INFO" => log::LevelFilter::Info,
            "WARN" | "WARNING" => log::LevelFilter::Warn,
            "ERROR" | "FATAL" | "PANIC" => log::LevelFilter::Error,
            _ => {
                d.error(
                    "logging.level",
                    format!(
                        "unknown log level '{}': expected DEBUG, INFO, WARN, ERROR, FATAL or PANIC",
                        shorten(&level)
                    ),
                );
                l.level
            }
        }
    }
    if let Some(format) = opt_string(d, &o, "format") {
        l.format = match format.to_ascii_lowercase().as_str() {
            "default" => LogFormat::Default,
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            _ => {
                d.error("logging.format", format!("unknown log format '{format}': expected default, text or json"));
                l.format
            }
        }
    }
    if let Some(output) = opt_os_string(d, &o, "output") {
        l.output = match output.as_str() {
            "stdout" => LogOutput::Stdout,
            "stderr" => LogOutput::Stderr,
            path => LogOutput::File(path.to_string()),
        }
    }
    o.finish(d);
    l
}

fn decode_control(d: &mut Decoder, v: &Value) -> Control {
    let Some(o) = d.object("control", v, &["socket"]) else { return Control::default() };
    let socket = opt_os_string(d, &o, "socket");
    if let Some(s) = &socket
        && s.len() > crate::sockpath::MAX_PATH
    {
        d.error(
            "control.socket",
            format!("{} bytes is longer than a Unix socket path may be ({} bytes)", s.len(), crate::sockpath::MAX_PATH),
        );
    }
    o.finish(d);
    Control { socket }
}

fn raw_logging(d: &mut Decoder, o: &Obj) -> bool {
    let Some(v) = o.get("logging") else { return false };
    let Some(l) = d.object(&o.field("logging"), v, &["raw"]) else { return false };
    let raw = l.get("raw").and_then(|v| d.bool(&l.field("raw"), v)).unwrap_or(false);
    l.finish(d);
    raw
}

fn positive(d: &mut Decoder, o: &Obj, key: &str, what: &str) -> Option<Duration> {
    let path = o.field(key);
    match o.get(key) {
        None => {
            d.error(&path, format!("is required: {what}"));
            None
        }
        Some(v) => {
            let dur = d.duration(&path, v)?;
            if dur.is_zero() {
                d.error(&path, "must be > 0");
                return None;
            }
            Some(dur)
        }
    }
}

fn at_least_1ms(d: &mut Decoder, path: &str, v: &Value) -> Option<Duration> {
    let dur = d.duration(path, v)?;
    if dur < Duration::from_millis(1) {
        d.error(path, format!("'{}' cannot be less than 1ms", super::duration::to_go_string(dur)));
        return None;
    }
    Some(dur)
}

fn decode_when(d: &mut Decoder, path: &str, v: Option<&Value>) -> (Trigger, Option<Duration>) {
    let startup = Trigger::Event { code: Code::Startup, source: events::GLOBAL.into(), each: false };
    let Some(v) = v else { return (startup, None) };
    let Some(o) = d.object(path, v, &["source", "once", "each", "interval", "timeout"]) else { return (startup, None) };
    let source = opt_string(d, &o, "source");
    let once = opt_string(d, &o, "once");
    let each = opt_string(d, &o, "each");
    let interval = o.get("interval").and_then(|v| at_least_1ms(d, &o.field("interval"), v));
    let timeout = o.get("timeout").and_then(|v| d.duration(&o.field("timeout"), v));
    let given = [once.is_some(), each.is_some(), o.get("interval").is_some()].iter().filter(|b| **b).count();
    if given > 1 {
        d.error(path, "can have only one of 'interval', 'once', or 'each'");
    }
    let trigger = if let Some(interval) = interval {
        Trigger::Interval(interval)
    } else if let Some(sig) = source.as_deref().filter(|s| events::SIGNAL_SOURCES.contains(s)) {
        Trigger::Signal(sig.to_string())
    } else if let Some((name, is_each)) = once.map(|n| (n, false)).or(each.map(|n| (n, true))) {
        let key = if is_each { "each" } else { "once" };
        match Code::parse(&name) {
            None => {
                let names: Vec<&str> = events::NAMES.iter().map(|(n, _)| *n).collect();
                let hint = super::diagnostic::did_you_mean(&name, &names)
                    .map(|s| format!("; did you mean '{s}'?"))
                    .unwrap_or_default();
                d.error(o.field(key), format!("'{}' is not a valid event{hint}", shorten(&name)));
                Trigger::Never
            }
            // pilot: a global event with no source means the global one (ContainerPilot
            // would wait for a source named "" and never start the job).
            Some(code) => Trigger::Event {
                code,
                source: source.unwrap_or_else(|| if code.is_global() { events::GLOBAL.into() } else { String::new() }),
                each: is_each,
            },
        }
    } else if source.is_some() {
        d.warning(path, "has a 'source' but neither 'once' nor 'each': this job will never start");
        Trigger::Never
    } else {
        startup
    };
    // ContainerPilot 3.8.0 accepts e.g. `each: "healthy"` without a source and never starts
    // the job; so does pilot (a v3 file must run unchanged), but says so.
    let trigger = match trigger {
        Trigger::Event { source, code, .. } if source.is_empty() => {
            d.warning(
                o.field("source"),
                format!(
                    "is missing: no '{}' event comes without a source, so this job will never start; name the job, 'check.<job>' or 'watch.<name>' it comes from",
                    code.name()
                ),
            );
            Trigger::Never
        }
        other => other,
    };
    o.finish(d);
    (trigger, timeout)
}

fn decode_restarts(d: &mut Decoder, path: &str, v: &Value) -> Option<Restarts> {
    let bad = |d: &mut Decoder, shown: String| {
        d.error(path, format!("'{shown}' invalid: accepts positive integers, \"unlimited\", or \"never\""));
        None
    };
    match v {
        Value::String(s) => match s.as_str() {
            "unlimited" => Some(Restarts::Unlimited),
            "never" => Some(Restarts::Count(0)),
            other => match other.parse::<u32>() {
                Ok(n) => Some(Restarts::Count(n)),
                Err(_) if !other.is_empty() && other.bytes().all(|b| b.is_ascii_digit()) => {
                    d.error(path, format!("'{other}' invalid: more than the largest count, {}", u32::MAX));
                    None
                }
                Err(_) => bad(d, other.to_string()),
            },
        },
        Value::Number(n) => match n.as_f64() {
            Some(f) if (0.0..=u32::MAX as f64).contains(&f.trunc()) => Some(Restarts::Count(f.trunc() as u32)),
            Some(f) if f >= 0.0 => {
                d.error(path, format!("'{n}' invalid: more than the largest count, {}", u32::MAX));
                None
            }
            _ => {
                d.error(path, format!("'{n}' invalid: number must be positive integer"));
                None
            }
        },
        other => bad(d, other.to_string()),
    }
}

fn decode_health(d: &mut Decoder, path: &str, v: &Value) -> Option<Health> {
    let o = d.object(path, v, &["exec", "interval", "ttl", "timeout", "logging"])?;
    let exec = o.get("exec").and_then(|v| d.exec(&o.field("exec"), v));
    let interval = positive(d, &o, "interval", "how often the check runs, e.g. 10 (seconds) or \"10s\"");
    let ttl = positive(d, &o, "ttl", "how long a passing check stays valid, e.g. 25 (seconds)");
    let timeout = o.get("timeout").and_then(|v| at_least_1ms(d, &o.field("timeout"), v));
    let raw = raw_logging(d, &o);
    o.finish(d);
    let interval = interval?;
    Some(Health { exec, interval, ttl: ttl?, timeout: timeout.unwrap_or(interval), raw })
}

fn decode_job(d: &mut Decoder, path: &str, v: &Value) -> Option<Job> {
    let o = d.object(path, v, JOB_KEYS)?;
    let mut name = opt_string(d, &o, "name");
    match name.as_deref().map(|n| (n, reserved_job_name(n))) {
        None => d.error(o.field("name"), "is required and must not be blank"),
        Some((n, Some(why))) => {
            d.error(o.field("name"), format!("\"{}\" cannot be a job name: {why}", shorten(n)));
            name = None;
        }
        Some(_) => {}
    }
    let exec = o.get("exec").and_then(|v| d.exec(&o.field("exec"), v));
    let raw = raw_logging(d, &o);
    let (trigger, when_timeout) = decode_when(d, &o.field("when"), o.get("when"));
    let is_interval = matches!(trigger, Trigger::Interval(_));
    let timeout = o.get("timeout").and_then(|v| at_least_1ms(d, &o.field("timeout"), v));
    let timeout = match (&trigger, timeout) {
        (Trigger::Interval(i), None) => Some(*i),
        (_, t) => t,
    };
    let stop_timeout = o.get("stopTimeout").and_then(|v| d.duration(&o.field("stopTimeout"), v));
    let restarts = match o.get("restarts") {
        None if is_interval => Restarts::Unlimited,
        None => Restarts::Count(0),
        Some(v) => decode_restarts(d, &o.field("restarts"), v).unwrap_or(Restarts::Count(0)),
    };
    if restarts == Restarts::Unlimited && matches!(trigger, Trigger::Event { each: true, .. }) {
        d.error(
            o.field("restarts"),
            "\"unlimited\" may not be used when 'when.each' is set because it may result in infinite processes",
        );
    }
    let health = o.get("health").and_then(|v| decode_health(d, &o.field("health"), v));
    let port = o.get("port").and_then(|v| d.int_in(&o.field("port"), v, 0..=65535, "a TCP port")).unwrap_or(0) as u16;
    let interfaces = o
        .get("interfaces")
        .map(|v| d.string_list(&o.field("interfaces"), v))
        // Empty: pilot's default (see consul::interfaces), not ContainerPilot's eth0 first.
        .unwrap_or_default();
    check_interfaces(d, &o.field("interfaces"), &interfaces);
    let tags = o.get("tags").map(|v| d.string_array(&o.field("tags"), v)).unwrap_or_default();
    let meta = o.get("meta").map(|v| decode_meta(d, &o.field("meta"), v)).unwrap_or_default();
    let initial_status_text = opt_string(d, &o, "initial_status");
    let initial_status = initial_status_text.as_deref().and_then(CheckStatus::parse);
    let (enable_tag_override, deregister_critical_after) = decode_job_consul(d, &o);
    let privileges = super::privileges::decode(d, &o, name.as_deref());
    if port != 0 {
        if let Some(n) = &name
            && !service_name_ok(n)
        {
            d.error(
                o.field("name"),
                format!(
                    "'{}' is not a valid service name: must match ^[a-z][a-zA-Z0-9-]+$ when 'port' is set",
                    shorten(n)
                ),
            );
        }
        if o.get("health").is_none() {
            d.error(o.field("health"), "must be set if 'port' is set (it sets the TTL of the Consul check)");
        }
        if let Some(s) = &initial_status_text
            && initial_status.is_none()
        {
            d.error(
                o.field("initial_status"),
                format!("'{}' must be one of 'passing', 'warning' or 'critical'", shorten(s)),
            );
        }
    }
    o.finish(d);
    Some(Job {
        name: name?,
        exec,
        raw,
        trigger,
        when_timeout,
        timeout,
        stop_timeout,
        restarts,
        health,
        port,
        interfaces,
        tags,
        meta,
        initial_status,
        enable_tag_override,
        deregister_critical_after,
        privileges,
    })
}

fn decode_meta(d: &mut Decoder, path: &str, v: &Value) -> BTreeMap<String, String> {
    let Value::Object(map) = v else {
        d.error(path, format!("expected an object of string values, got {}", super::decode::type_name(v)));
        return BTreeMap::new();
    };
    map.iter().filter_map(|(k, v)| d.string(&format!("{path}.{k}"), v).map(|s| (k.clone(), s))).collect()
}

fn decode_job_consul(d: &mut Decoder, o: &Obj) -> (bool, Option<Duration>) {
    let Some(v) = o.get("consul") else { return (false, None) };
    let Some(c) = d.object(&o.field("consul"), v, &["enableTagOverride", "deregisterCriticalServiceAfter"]) else {
        return (false, None);
    };
    let eto = c.get("enableTagOverride").and_then(|v| d.bool(&c.field("enableTagOverride"), v)).unwrap_or(false);
    let dcsa =
        c.get("deregisterCriticalServiceAfter").and_then(|v| d.duration(&c.field("deregisterCriticalServiceAfter"), v));
    c.finish(d);
    (eto, dcsa)
}

fn decode_watch(d: &mut Decoder, path: &str, v: &Value) -> Option<Watch> {
    let o = d.object(path, v, &["name", "interval", "tag", "dc"])?;
    let name = opt_string(d, &o, "name");
    match &name {
        None => d.error(o.field("name"), "is required: the Consul service to watch"),
        Some(n) if !service_name_ok(n) => d.error(
            o.field("name"),
            format!("'{}' is not a valid service name: must match ^[a-z][a-zA-Z0-9-]+$", shorten(n)),
        ),
        _ => {}
    }
    let interval = positive(d, &o, "interval", "seconds between polls of Consul, e.g. 5");
    let tag = opt_string(d, &o, "tag");
    let dc = opt_string(d, &o, "dc");
    o.finish(d);
    Some(Watch { name: name?, interval: interval?, tag, dc })
}

fn decode_telemetry(d: &mut Decoder, v: &Value) -> Option<Telemetry> {
    let o = d.object("telemetry", v, &["port", "interfaces", "tags", "metrics"])?;
    let port =
        o.get("port").and_then(|v| d.int_in("telemetry.port", v, 0..=65535, "a TCP port")).unwrap_or(9090) as u16;
    let interfaces = o.get("interfaces").map(|v| d.string_list("telemetry.interfaces", v)).unwrap_or_default();
    check_interfaces(d, "telemetry.interfaces", &interfaces);
    let tags = o.get("tags").map(|v| d.string_array("telemetry.tags", v)).unwrap_or_default();
    let mut metrics = Vec::new();
    if let Some(v) = o.get("metrics") {
        match v {
            Value::Array(items) => {
                for (i, m) in items.iter().enumerate() {
                    if let Some(m) = decode_metric(d, &format!("telemetry.metrics[{i}]"), m) {
                        metrics.push(m);
                    }
                }
            }
            Value::Object(m) if m.is_empty() => {}
            other => {
                d.error("telemetry.metrics", format!("expected an array, got {}", super::decode::type_name(other)))
            }
        }
    }
    o.finish(d);
    Some(Telemetry { port, interfaces, tags, metrics })
}

fn decode_metric(d: &mut Decoder, path: &str, v: &Value) -> Option<Metric> {
    let o = d.object(path, v, &["namespace", "subsystem", "name", "help", "type"])?;
    let name = opt_string(d, &o, "name");
    let kind = opt_string(d, &o, "type");
    match &name {
        None => d.error(o.field("name"), "is required"),
        Some(n) if !METRIC_NAME.is_match(n) => {
            d.error(o.field("name"), format!("'{}' is not a valid Prometheus metric name", shorten(n)))
        }
        _ => {}
    }
    let kind = match kind.as_deref().map(|k| (k, MetricKind::parse(k))) {
        Some((_, Some(k))) => Some(k),
        Some((k, None)) => {
            d.error(
                o.field("type"),
                format!("invalid metric type '{k}': expected counter, gauge, histogram or summary"),
            );
            None
        }
        None => {
            d.error(o.field("type"), "is required: counter, gauge, histogram or summary");
            None
        }
    };
    let m = Metric {
        namespace: opt_string(d, &o, "namespace").unwrap_or_default(),
        subsystem: opt_string(d, &o, "subsystem").unwrap_or_default(),
        name: name?,
        help: opt_string(d, &o, "help").unwrap_or_default(),
        kind: kind?,
    };
    // The exported name joins all three: a namespace or subsystem could break it.
    let full = crate::telemetry::metrics::full_name(&m);
    if METRIC_NAME.is_match(&m.name) && !METRIC_NAME.is_match(&full) {
        let bad_namespace = !m.namespace.is_empty() && !METRIC_NAME.is_match(&m.namespace);
        let field = if bad_namespace { "namespace" } else { "subsystem" };
        d.error(o.field(field), format!("'{}' is not a valid Prometheus metric name", shorten(&full)));
    }
    // Prometheus' convention, which pilot's exposition follows (ContainerPilot's did not).
    match (m.kind, full.ends_with("_total")) {
        (MetricKind::Counter, false) => d.warning(
            o.field("name"),
            format!(
                "a counter is exposed as '{}_total' (Prometheus' convention); putmetric takes either name",
                shorten(&full)
            ),
        ),
        (MetricKind::Gauge | MetricKind::Histogram | MetricKind::Summary, true) => d.warning(
            o.field("name"),
            "only counters should end in '_total': Prometheus' linters (promtool check metrics) will complain",
        ),
        _ => {}
    }
    o.finish(d);
    Some(m)
}

impl Config {
    /// What `pilot run -- CMD` uses with no config: no jobs besides CMD, warnings and errors
    /// on stderr (stdout belongs to the payload).
    pub fn embedded_default() -> Config {
        Config {
            consul: None,
            logging: Logging { level: log::LevelFilter::Warn, format: LogFormat::Default, output: LogOutput::Stderr },
            jobs: Vec::new(),
            watches: Vec::new(),
            telemetry: None,
            control: Control::default(),
            stop_timeout: Duration::from_secs(5),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn diags(text: &str) -> Vec<String> {
        let mut d = Decoder::default();
        Config::decode(&crate::config::parse_json5(text).unwrap(), &mut d);
        d.diags.iter().map(|x| format!("{}: {}", x.path, x.message)).collect()
    }

    #[test]
    fn reserved_job_names_are_refused() {
        for name in ["global", "SIGHUP", "SIGUSR2", "SIGTERM", "watch.x", "check.a", "a\nb", "a\u{1b}[31m", " "] {
            let text = serde_json::json!({"jobs": [{"name": name, "exec": "true"}]}).to_string();
            let d = diags(&text);
            assert!(d.iter().any(|m| m.starts_with("jobs[0].name:")), "{name:?}: {d:?}");
        }
        // `main` is the payload's name only next to `-- CMD` (supervisor::machine::check_payload_name).
        assert!(diags(r#"{jobs: [{name: "SIGNAL", exec: "x"}, {name: "main", exec: "y"}]}"#).is_empty());
    }

    #[test]
    fn dependency_cycles_are_reported_naming_the_jobs() {
        let d = diags(
            r#"{jobs: [
            {name: "a", exec: "x", when: {source: "b", once: "exitSuccess"}},
            {name: "b", exec: "x", when: {source: "a", once: "exitSuccess"}}]}"#,
        );
        assert_eq!(d.len(), 1, "{d:?}");
        assert!(d[0].contains("cycle: a -> b -> a"), "{d:?}");
        // Through a health check, three long.
        let d = diags(
            r#"{jobs: [
            {name: "a", exec: "x", when: {source: "check.c", once: "healthy"}},
            {name: "b", exec: "x", when: {source: "a", each: "exitSuccess"}},
            {name: "c", exec: "x", when: {source: "b", once: "exitFailed"}}]}"#,
        );
        assert!(d.iter().any(|m| m.contains("cycle: a -> c -> b -> a")), "{d:?}");
        // Stop hooks and a job waiting on itself do not order shutdown: no cycle.
        let d = diags(
            r#"{jobs: [
            {name: "a", exec: "x", when: {source: "b", once: "stopping"}},
            {name: "b", exec: "x", when: {source: "a", once: "exitSuccess"}},
            {name: "c", exec: "x", when: {source: "c", each: "exitFailed"}}]}"#,
        );
        assert!(d.is_empty(), "{d:?}");
    }

    #[test]
    fn numbers_out_of_range_are_reported_as_given() {
        let d = diags(r#"{jobs: [{name: "a", exec: "x", port: 1e30, health: {interval: 1, ttl: 2}, restarts: 1e30}]}"#);
        assert!(d.iter().any(|m| m == "jobs[0].port: 1e+30 is not a TCP port: expected 0..65535"), "{d:?}");
        assert!(d.iter().any(|m| m.starts_with("jobs[0].restarts: '1e+30' invalid: more than")), "{d:?}");
        let d = diags(r#"{telemetry: {port: -1}}"#);
        assert!(d.iter().any(|m| m == "telemetry.port: -1 is not a TCP port: expected 0..65535"), "{d:?}");
        let d = diags(r#"{jobs: [{name: "a", exec: "x", restarts: "99999999999"}]}"#);
        assert!(d.iter().any(|m| m.contains("more than the largest count")), "{d:?}");
    }

    #[test]
    fn validated_values_are_types() {
        let mut d = Decoder::default();
        let text = r#"{consul: {address: "c:8500", scheme: "https"},
            jobs: [{name: "web", exec: "x", port: 80, health: {interval: 1, ttl: 2}, initial_status: "warning"}],
            telemetry: {metrics: [{name: "m", type: "gauge", help: "h"}]}}"#;
        let c = Config::decode(&crate::config::parse_json5(text).unwrap(), &mut d).unwrap();
        assert!(d.diags.iter().all(|x| x.severity != super::super::Severity::Error), "{:?}", d.diags);
        assert_eq!(c.consul.unwrap().scheme, Scheme::Https);
        assert_eq!(c.jobs[0].initial_status, Some(CheckStatus::Warning));
        assert_eq!(c.telemetry.unwrap().metrics[0].kind, MetricKind::Gauge);
        let d = diags(r#"{consul: {scheme: "ftp"}, telemetry: {metrics: [{name: "m", type: "meter"}]}}"#);
        assert!(d.iter().any(|m| m.contains("expected \"http\" or \"https\", got \"ftp\"")), "{d:?}");
        assert!(d.iter().any(|m| m.contains("invalid metric type 'meter'")), "{d:?}");
        // Namespace and subsystem are part of the exported name: they cannot break it.
        let d = diags(
            r#"{telemetry: {metrics: [{namespace: "a b", name: "m", type: "gauge"},
            {namespace: "ok", subsystem: "x\n# EOF", name: "m", type: "gauge"}]}}"#,
        );
        assert!(d.iter().any(|m| m.starts_with("telemetry.metrics[0].namespace: 'a b_m' is not a valid")), "{d:?}");
        assert!(d.iter().any(|m| m.starts_with("telemetry.metrics[1].subsystem: 'ok_x\\n# EOF_m' is not")), "{d:?}");
        let d = diags(
            r#"{telemetry: {metrics: [{namespace: "app", name: "jobs", type: "counter", help: "h"},
            {name: "queue_total", type: "gauge", help: "h"}]}}"#,
        );
        assert!(
            d.iter().any(|m| m.starts_with("telemetry.metrics[0].name: a counter is exposed as 'app_jobs_total'")),
            "{d:?}"
        );
        assert!(
            d.iter().any(|m| m.starts_with("telemetry.metrics[1].name: only counters should end in '_total'")),
            "{d:?}"
        );
    }

    #[test]
    fn nul_in_exec_and_paths_is_refused() {
        let d = diags(r#"{jobs: [{name: "a", exec: ["sh", "-c", "x\u0000y"]}], control: {socket: "/tmp/s\u0000"}}"#);
        assert!(d.iter().any(|m| m.starts_with("jobs[0].exec[2]: contains a NUL")), "{d:?}");
        assert!(d.iter().any(|m| m.starts_with("control.socket: contains a NUL")), "{d:?}");
    }
}
