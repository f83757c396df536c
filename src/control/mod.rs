//! Operating a running pilot: the control socket (`server`), where it is (`socket`), and
//! the CLI clients (`client`).

pub mod client;
pub mod server;
pub mod socket;

use crate::config::Config;
use std::sync::mpsc::Sender;

/// What the control server asks of the supervisor.
pub enum Request {
    Status(Sender<crate::status::Status>),
    Maintenance(bool),
    /// Replace the config; the answer says whether the supervisor took it.
    Reload(Box<Config>, Sender<Result<(), ReloadRefused>>),
    /// Set variables for jobs started from now on; the answer says whether they were taken
    /// (all or nothing, within [`ENV_MAX_VARS`] and [`ENV_MAX_BYTES`]).
    PutEnv(Vec<(String, String)>, Sender<Result<(), String>>),
}

/// Why a reload was not taken; the running config stays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadRefused {
    /// The new config cannot run beside the payload (a job named `main`).
    Invalid(String),
    /// A shutdown is under way: nothing new starts.
    ShuttingDown,
}

impl std::fmt::Display for ReloadRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReloadRefused::Invalid(e) => write!(f, "reload refused; the running config stays: {e}"),
            ReloadRefused::ShuttingDown => f.write_str("reload ignored: pilot is shutting down"),
        }
    }
}

/// A variable name `putenv` accepts: `[A-Za-z_][A-Za-z0-9_]*`, as POSIX shells do. A name
/// with `=`, a newline or a NUL would corrupt the environment block of every later job.
pub fn check_variable_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "'{}' is not a variable name: expected a letter or '_', then letters, digits or '_'",
            name.escape_debug()
        ))
    }
}

/// Bounds on the jobs' environment as `putenv` grows it: every spawn copies it whole, and
/// each request may add new names (one request is bounded by the body limit, not their sum). The control server applies
/// them to its own copy (the reload overlay) and the supervisor to the jobs' environment.
pub const ENV_MAX_VARS: usize = 10_000;
pub const ENV_MAX_BYTES: usize = 4 << 20;

/// The longest `NAME=value` (with its NUL) execve passes: Linux's `MAX_ARG_STRLEN`, 32
/// pages, on 4 KiB pages (the smallest). A longer variable is refused with E2BIG by every
/// execve, so taking it would make every later start of every job fail.
pub const ENV_MAX_VAR_BYTES: usize = 32 * 4096;

/// Set `vars` in the jobs' environment (replacing same-named ones), all or nothing.
pub fn put_env(env: &mut Vec<(String, String)>, vars: Vec<(String, String)>) -> Result<(), String> {
    if let Some((k, v)) = vars.iter().find(|(k, v)| k.len() + v.len() + 2 > ENV_MAX_VAR_BYTES) {
        return Err(format!(
            "{k}: {} bytes is more than one variable may hold ({ENV_MAX_VAR_BYTES} bytes, execve's limit): no job could be started with it",
            k.len() + v.len() + 2
        ));
    }
    let names: std::collections::HashSet<String> = vars.iter().map(|(k, _)| k.clone()).collect();
    let kept = env.iter().filter(|(k, _)| !names.contains(k));
    let count = kept.clone().count() + vars.len();
    let bytes: usize = kept.chain(vars.iter()).map(|(k, v)| k.len() + v.len() + 2).sum();
    if count > ENV_MAX_VARS || bytes > ENV_MAX_BYTES {
        return Err(format!(
            "the jobs' environment would hold {count} variables, {bytes} bytes (at most {ENV_MAX_VARS}, \
             {ENV_MAX_BYTES} bytes)"
        ));
    }
    env.retain(|(k, _)| !names.contains(k));
    env.extend(vars);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(n: usize, prefix: &str) -> Vec<(String, String)> {
        (0..n).map(|i| (format!("{prefix}{i}"), "v".to_string())).collect()
    }

    #[test]
    fn putenv_replaces_and_is_bounded() {
        let mut env = vec![("A".to_string(), "1".to_string()), ("B".to_string(), "2".to_string())];
        put_env(&mut env, vec![("A".into(), "3".into())]).unwrap();
        assert_eq!(env, [("B".to_string(), "2".to_string()), ("A".to_string(), "3".to_string())]);
        put_env(&mut env, vars(ENV_MAX_VARS - 2, "X")).unwrap();
        let before = env.clone();
        assert!(put_env(&mut env, vars(1, "Y")).is_err(), "one name too many");
        assert_eq!(env, before, "a refused putenv changes nothing");
        put_env(&mut env, vars(1, "X")).unwrap(); // replacing stays within the bound
        let big = vec![("BIG".to_string(), "x".repeat(ENV_MAX_BYTES))];
        assert!(put_env(&mut env, big).is_err());
    }

    /// execve refuses one string over MAX_ARG_STRLEN with E2BIG: such a variable, once taken,
    /// made every later job start and health check fail.
    #[test]
    fn putenv_refuses_a_variable_no_execve_can_pass() {
        let mut env = vec![("A".to_string(), "1".to_string())];
        let fits = "x".repeat(ENV_MAX_VAR_BYTES - "FITS".len() - 2);
        put_env(&mut env, vec![("FITS".into(), fits)]).unwrap();
        let before = env.clone();
        let e = put_env(&mut env, vec![("OK".into(), "1".into()), ("HUGE".into(), "x".repeat(200_000))]).unwrap_err();
        assert!(e.starts_with("HUGE: 200006 bytes is more than one variable may hold"), "{e}");
        assert_eq!(env, before, "a refused putenv changes nothing");
    }
}
