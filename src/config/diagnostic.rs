//! Diagnostics: what `check-config` prints and `run` refuses to start on.
//!
//! Every problem carries where it is (file, line/column when the text itself is at fault,
//! the field path such as `jobs[1].health.ttl` when a value is) and what was expected, so
//! an admin can fix an image's config without reading pilot's source.

use serde::Serialize;
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

#[derive(Debug, Clone, Serialize)]
pub struct Diagnostic {
    pub severity: Severity,
    /// The config file (or `<embedded>`), filled in by the loader.
    pub file: String,
    /// 1-based line and column, for syntax and template errors.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<usize>,
    /// Field path such as `jobs[1].health.ttl`; empty for whole-file problems.
    pub path: String,
    pub message: String,
}

impl Diagnostic {
    pub fn error(path: impl Into<String>, message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Error,
            file: String::new(),
            line: None,
            column: None,
            path: path.into(),
            message: message.into(),
        }
    }

    pub fn warning(path: impl Into<String>, message: impl Into<String>) -> Self {
        Diagnostic { severity: Severity::Warning, ..Self::error(path, message) }
    }

    pub fn at(mut self, line: usize, column: usize) -> Self {
        self.line = Some(line);
        self.column = Some(column);
        self
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(col) = self.column {
                write!(f, ":{col}")?;
            }
        }
        let kind = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, ": {kind}: ")?;
        if !self.path.is_empty() {
            // Paths contain the config's keys: escape control characters so that a key
            // cannot start a line of its own in the output.
            write!(f, "{}: ", self.path.escape_debug())?;
        }
        write!(f, "{}", self.message)
    }
}

/// The closest candidate to `word`, if it is close enough to be a plausible typo.
pub fn did_you_mean<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let lower = word.to_ascii_lowercase();
    candidates
        .iter()
        .map(|c| (strsim::damerau_levenshtein(&lower, &c.to_ascii_lowercase()), *c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_close_keys_only() {
        assert_eq!(did_you_mean("tll", &["ttl", "interval", "exec"]), Some("ttl"));
        assert_eq!(did_you_mean("restart", &["restarts", "health"]), Some("restarts"));
        assert_eq!(did_you_mean("zzzzzz", &["ttl", "exec"]), None);
    }

    #[test]
    fn display_has_file_line_path() {
        let mut d = Diagnostic::error("jobs[1].health.ttl", "must be > 0").at(3, 7);
        d.file = "c.json5".into();
        assert_eq!(d.to_string(), "c.json5:3:7: error: jobs[1].health.ttl: must be > 0");
    }
}
