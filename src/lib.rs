//! pilot as a library: the binary (`main.rs`) is a thin CLI over these modules, and the
//! fuzz target reaches the config parser through here. docs/ARCHITECTURE.md is the map:
//! what each module owns and may call, the threads, and the invariants.

pub mod check;
pub mod config;
pub mod consul;
pub mod control;
pub mod events;
pub mod fsread;
pub mod htcondor;
pub mod httpd;
pub mod identity;
pub mod ifspec;
#[allow(unsafe_code)]
pub mod init;
pub mod logging;
pub mod pathsearch;
pub mod sockpath;
pub mod status;
pub mod supervisor;
pub mod telemetry;
pub mod unix_http;
