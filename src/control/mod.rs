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
    PutEnv(Vec<(String, String)>),
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
