//! Secrets never appear in what pilot prints about a config: diagnostics (stderr is the
//! HTCondor job's error file; `check-config` output lands in build logs) and `pilot
//! template`. A template can put a secret anywhere in the rendered text, and a syntax error
//! prints the offending line, so every value of a secret is replaced by `<redacted>`
//! wherever it appears.
//!
//! Secret values are: the Consul token of the config's `consul` stanza, and the value of
//! every environment variable whose name contains `TOKEN`, `PASSWORD`, `PASSWD`, `SECRET`,
//! `CREDENTIAL` or `KEY` (case-insensitive: `CONSUL_HTTP_TOKEN`, `DB_PASSWORD`,
//! `AWS_SECRET_ACCESS_KEY`, `API_KEY`...). Values shorter than 4 characters are left alone:
//! they are not secrets worth the name, and replacing every `1` would garble the output.
//! Consul KV values read by `{{ kv }}` are not redacted: name a secret's variable accordingly.

use super::diagnostic::Diagnostic;
use std::collections::HashMap;

/// The marker that replaces a secret.
pub const REDACTED: &str = "<redacted>";

/// Parts of a variable name that mark its value as secret.
const SECRET_WORDS: &[&str] = &["TOKEN", "PASSWORD", "PASSWD", "SECRET", "CREDENTIAL", "KEY"];

/// Shortest value treated as a secret.
const MIN_LEN: usize = 4;

/// The secret values to hide, longest first (so a secret containing another is replaced
/// whole).
#[derive(Debug, Clone, Default)]
pub struct Secrets(Vec<String>);

impl Secrets {
    /// The secrets of an environment (as the config was rendered with), plus `extra` values
    /// such as the config's Consul token.
    pub fn new(env: &HashMap<String, String>, extra: &[&str]) -> Secrets {
        let mut values: Vec<String> = env
            .iter()
            .filter(|(name, _)| is_secret_name(name))
            .map(|(_, v)| v.clone())
            .chain(extra.iter().map(|s| s.to_string()))
            .filter(|v| v.chars().count() >= MIN_LEN)
            .collect();
        values.sort_by_key(|v| std::cmp::Reverse(v.len()));
        values.dedup();
        Secrets(values)
    }

    /// `text` with every secret replaced by `<redacted>`.
    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_string();
        for secret in &self.0 {
            if out.contains(secret.as_str()) {
                out = out.replace(secret.as_str(), REDACTED);
            }
        }
        out
    }

    pub fn redact_diagnostic(&self, d: &mut Diagnostic) {
        d.message = self.redact(&d.message);
        d.path = self.redact(&d.path);
    }
}

/// Whether a variable's value is a secret, judging by its name.
pub fn is_secret_name(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    SECRET_WORDS.iter().any(|w| upper.contains(w))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_values_are_replaced_everywhere() {
        let env: HashMap<String, String> = [
            ("CONSUL_HTTP_TOKEN", "0b1c-token-value"),
            ("db_password", "hunter22"),
            ("API_KEY", "abc"),
            ("HOME", "/home/user"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let s = Secrets::new(&env, &["literal-token"]);
        assert_eq!(
            s.redact("a 0b1c-token-value b hunter22 c literal-token d abc /home/user"),
            "a <redacted> b <redacted> c <redacted> d abc /home/user"
        );
        assert!(is_secret_name("AWS_SECRET_ACCESS_KEY"));
        assert!(!is_secret_name("CONSUL_HTTP_ADDR"));
    }
}
