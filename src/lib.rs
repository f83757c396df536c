//! pilot as a library: the binary (`main.rs`) is a thin CLI over these modules, and the
//! fuzz target reaches the config parser through here.

pub mod check;
pub mod config;
pub mod consul;
pub mod control;
pub mod events;
pub mod htcondor;
pub mod httpd;
#[allow(unsafe_code)]
pub mod init;
pub mod logging;
pub mod pathsearch;
pub mod supervisor;
pub mod telemetry;
