//! ContainerPilot's event vocabulary. An event is a code plus the name of its source (a
//! job, `check.<job>`, `watch.<name>`, `global`, or a signal name).

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

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Event {
    pub code: Code,
    pub source: String,
}

impl Event {
    pub fn new(code: Code, source: impl Into<String>) -> Self {
        Event { code, source: source.into() }
    }

    pub fn global(code: Code) -> Self {
        Event::new(code, GLOBAL)
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{{{}, {}}}", self.code.name(), self.source)
    }
}
