//! Who is at the other end of a Unix socket (SO_PEERCRED), and whom pilot trusts: its own
//! effective uid and root. Used by the control server on every connection and by the CLI
//! clients before they send anything.

use std::os::fd::AsFd;

/// The uid of the process that made the connection (for a server) or bound the socket (for
/// a client), as the kernel recorded it at connect/listen time: it cannot be forged.
pub fn uid(fd: &impl AsFd) -> std::io::Result<u32> {
    nix::sys::socket::getsockopt(fd, nix::sys::socket::sockopt::PeerCredentials)
        .map(|c| c.uid())
        .map_err(std::io::Error::from)
}

/// The uids that may control, or be controlled by, this process: its own effective uid and root.
pub fn trusted(uid: u32) -> bool {
    uid == 0 || uid == nix::unistd::geteuid().as_raw()
}
