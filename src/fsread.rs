//! Reading a small text file that somebody else controls (a config, an env file, an
//! HTCondor job ad): a regular file of bounded size, or a clear error, never a hang.
//!
//! A plain `read_to_string` of `/dev/zero` grows until the OOM killer comes, and of a FIFO
//! blocks until a writer appears (forever, and with every signal blocked in pilot's main
//! thread, SIGTERM cannot end it). So the file is opened with `O_NONBLOCK` (opening a FIFO
//! then returns at once), checked with `fstat` on the open descriptor (no race with a rename),
//! and read through a cap one byte past the limit.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

/// What a file that is not regular is, for the message.
fn kind(t: std::fs::FileType) -> &'static str {
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO (named pipe)"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    }
}

/// The contents of `path` if it is a regular file of at most `max` bytes of UTF-8; the
/// error names the file and says what is wrong with it. The type is checked before opening
/// too (opening some devices has effects) and again on the open descriptor (the path may
/// have been swapped in between).
pub fn read_regular(path: &Path, max: u64) -> Result<String, String> {
    let bytes = read_regular_bytes(path, max)?;
    String::from_utf8(bytes).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        format!("cannot read '{}': not UTF-8 text (invalid byte at offset {at})", path.display())
    })
}

/// [`read_regular`] without the UTF-8 check, for files whose unused fields may be in another
/// encoding (a Latin-1 name in the GECOS field of `/etc/passwd`).
pub fn read_regular_bytes(path: &Path, max: u64) -> Result<Vec<u8>, String> {
    let shown = path.display();
    let not_regular = |t| format!("cannot read '{shown}': it is {}, expected a regular file", kind(t));
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot read '{shown}': {e}"))?;
    if !meta.file_type().is_file() {
        return Err(not_regular(meta.file_type()));
    }
    let mut file = File::options()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| format!("cannot read '{shown}': {e}"))?;
    let meta = file.metadata().map_err(|e| format!("cannot read '{shown}': {e}"))?;
    if !meta.file_type().is_file() {
        return Err(not_regular(meta.file_type()));
    }
    if meta.len() > max {
        return Err(format!("cannot read '{shown}': {} bytes is more than the limit of {max} bytes", meta.len()));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    (&mut file).take(max + 1).read_to_end(&mut bytes).map_err(|e| format!("cannot read '{shown}': {e}"))?;
    if bytes.len() as u64 > max {
        return Err(format!("cannot read '{shown}': it grew past the limit of {max} bytes while being read"));
    }
    Ok(bytes)
}

/// [`read_regular`] on a helper thread, given up after `within`: a file on a hung network
/// file system blocks `read` in the kernel, and pilot reads HTCondor's ads before its signal
/// thread exists (every signal blocked), so a hang there would make SIGTERM useless. A
/// thread that never comes back is left behind; it holds nothing pilot needs.
pub fn read_regular_within(path: &Path, max: u64, within: std::time::Duration) -> Result<String, String> {
    let (tx, rx) = std::sync::mpsc::channel();
    let owned = path.to_path_buf();
    let spawned = std::thread::Builder::new().name("read file".into()).spawn(move || {
        let _ = tx.send(read_regular(&owned, max));
    });
    if spawned.is_err() {
        return read_regular(path, max);
    }
    rx.recv_timeout(within).unwrap_or_else(|_| {
        Err(format!("cannot read '{}': no answer within {within:?} (a hung file system?)", path.display()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("pilot-fsread-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn reads_small_regular_files() {
        let dir = temp("ok");
        let f = dir.join("c.json5");
        std::fs::write(&f, "{}").unwrap();
        assert_eq!(read_regular(&f, 10).unwrap(), "{}");
        assert!(read_regular(&f, 1).unwrap_err().contains("more than the limit of 1 bytes"));
        std::fs::write(&f, b"\xff").unwrap();
        assert!(read_regular(&f, 10).unwrap_err().contains("not UTF-8"));
    }

    #[test]
    fn refuses_what_is_not_a_regular_file_without_blocking() {
        let dir = temp("special");
        assert!(read_regular(&dir, 10).unwrap_err().contains("is a directory"));
        assert!(read_regular(Path::new("/dev/zero"), 10).unwrap_err().contains("character device"));
        let fifo = dir.join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        assert!(read_regular(&fifo, 10).unwrap_err().contains("FIFO"));
        assert!(read_regular(&dir.join("missing"), 10).unwrap_err().contains("No such file"));
    }
}
