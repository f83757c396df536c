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
