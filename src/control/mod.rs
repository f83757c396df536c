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
    Reload(Box<Config>),
    /// Set variables for jobs started from now on; the answer says whether they were taken
    /// (all or nothing, within [`ENV_MAX_VARS`] and [`ENV_MAX_BYTES`]).
    PutEnv(Vec<(String, String)>, Sender<Result<(), String>>),
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

/// Set `vars` in the jobs' environment (replacing same-named ones), all or nothing.
pub fn put_env(env: &mut Vec<(String, String)>, vars: Vec<(String, String)>) -> Result<(), String> {
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
}
