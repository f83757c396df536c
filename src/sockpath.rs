//! The length limit of a Unix socket path, below both `config` (which checks
//! `control.socket` when a config is loaded) and `control` (which binds the socket).

/// A Unix socket path must fit `sun_path` (108 bytes with its NUL).
pub const MAX_PATH: usize = 107;
