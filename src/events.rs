//! ContainerPilot's event vocabulary. An event is a code plus the name of its source (a
//! job, `check.<job>`, `watch.<name>`, `global`, or a signal name: see [`Source`]).

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Code {
    Startup,
    Shutdown,
    ExitSuccess,
    ExitFailed,
    Healthy,
    Unhealthy,
    Changed,
    Stopping,
    Stopped,
    EnterMaintenance,
    ExitMaintenance,
    TimerExpired,
    Error,
    Quit,
    Signal,
}

/// Names as written in configs; case-sensitive, like ContainerPilot.
pub const NAMES: &[(&str, Code)] = &[
    ("startup", Code::Startup),
    ("shutdown", Code::Shutdown),
    ("exitSuccess", Code::ExitSuccess),
    ("exitFailed", Code::ExitFailed),
    ("healthy", Code::Healthy),
    ("unhealthy", Code::Unhealthy),
    ("changed", Code::Changed),
    ("stopping", Code::Stopping),
    ("stopped", Code::Stopped),
    ("enterMaintenance", Code::EnterMaintenance),
    ("exitMaintenance", Code::ExitMaintenance),
    ("timerExpired", Code::TimerExpired),
    ("error", Code::Error),
    ("quit", Code::Quit),
];

/// Signals that become events usable as `when.source` (ContainerPilot 3.6+).
pub const SIGNAL_SOURCES: &[&str] = &["SIGHUP", "SIGUSR2"];

pub const GLOBAL: &str = "global";

impl Code {
    pub fn parse(name: &str) -> Option<Code> {
        NAMES.iter().find(|(n, _)| *n == name).map(|(_, c)| *c)
    }

    pub fn name(self) -> &'static str {
        NAMES.iter().find(|(_, c)| *c == self).map(|(n, _)| *n).unwrap_or("signal")
    }

    /// Events that only ever come from the `global` source.
    pub fn is_global(self) -> bool {
        matches!(self, Code::Startup | Code::Shutdown | Code::EnterMaintenance | Code::ExitMaintenance)
    }
}

/// Where an event comes from: a job, its health check (`check.<job>`), a watch
/// (`watch.<name>`), `global`, a signal name (`SIGHUP`), or for `error` events the message.
/// Built by the constructors below, so the spelling of each kind lives in one place; it
/// compares equal to the plain strings configs use in `when.source`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Source(String);

/// The prefix of a health check's source name.
const CHECK_PREFIX: &str = "check.";
/// The prefix of a watch's source name.
const WATCH_PREFIX: &str = "watch.";

impl Source {
    pub fn global() -> Source {
        Source(GLOBAL.into())
    }

    pub fn job(name: &str) -> Source {
        Source(name.into())
    }

    /// `check.<job>`: the events of a job's health-check process.
    pub fn check(job: &str) -> Source {
        Source(format!("{CHECK_PREFIX}{job}"))
    }

    /// `watch.<name>`: the events of a Consul watch.
    pub fn watch(name: &str) -> Source {
        Source(format!("{WATCH_PREFIX}{name}"))
    }

    /// A signal's name as an event source (`SIGHUP`, `SIGUSR2`).
    pub fn signal(name: &str) -> Source {
        Source(name.into())
    }

    /// The job whose health check this is, for a `check.<job>` source.
    pub fn check_of(&self) -> Option<&str> {
        self.0.strip_prefix(CHECK_PREFIX)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::ops::Deref for Source {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl From<&str> for Source {
    fn from(s: &str) -> Source {
        Source(s.into())
    }
}

impl From<String> for Source {
    fn from(s: String) -> Source {
        Source(s)
    }
}

impl From<&String> for Source {
    fn from(s: &String) -> Source {
        Source(s.clone())
    }
}

impl PartialEq<str> for Source {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for Source {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl PartialEq<String> for Source {
    fn eq(&self, other: &String) -> bool {
        &self.0 == other
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Event {
    pub code: Code,
    pub source: Source,
}

impl Event {
    pub fn new(code: Code, source: impl Into<Source>) -> Self {
        Event { code, source: source.into() }
    }

    pub fn global(code: Code) -> Self {
        Event::new(code, Source::global())
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{{{}, {}}}", self.code.name(), self.source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_are_spelt_in_one_place() {
        assert_eq!(Source::check("web"), "check.web");
        assert_eq!(Source::check("web").check_of(), Some("web"));
        assert_eq!(Source::job("web").check_of(), None);
        assert_eq!(Source::watch("db"), "watch.db");
        assert_eq!(Source::global(), GLOBAL);
        assert_eq!(Event::new(Code::Healthy, "x").source, Source::job("x"));
    }
}
