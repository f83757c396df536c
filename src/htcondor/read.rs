//! Reading a file named by the environment without letting it hang or flood pilot.
//! `$_CONDOR_JOB_AD=/dev/zero` once grew pilot to 24 GB, and a FIFO blocked it forever
//! while every signal was blocked (so SIGTERM did nothing): only regular files are read, a
//! FIFO or device is refused without being waited on, and the size is capped.

use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

/// What a non-regular file is, for the message.
fn kind(t: std::fs::FileType) -> &'static str {
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
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

/// The whole text of the regular file at `path`, at most `max` bytes. Never blocks on a
/// FIFO or device: the type is checked before opening (opening some devices has effects),
/// the file is opened with `O_NONBLOCK` and checked again on the open descriptor (it may
/// have been swapped in between). Errors name the path and say what was expected.
pub fn read_regular(path: &Path, max: u64) -> Result<String, String> {
    let shown = path.display();
    let meta = std::fs::metadata(path).map_err(|e| format!("{shown}: {e}"))?;
    if !meta.file_type().is_file() {
        return Err(format!("{shown}: {}, expected a regular file: not read", kind(meta.file_type())));
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| format!("{shown}: {e}"))?;
    let meta = file.metadata().map_err(|e| format!("{shown}: {e}"))?;
    if !meta.file_type().is_file() {
        return Err(format!("{shown}: {}, expected a regular file: not read", kind(meta.file_type())));
    }
    if meta.len() > max {
        return Err(format!("{shown}: {} bytes, more than the limit of {max}: not read", meta.len()));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    // The file may grow while being read: never take more than the limit.
    file.take(max + 1).read_to_end(&mut bytes).map_err(|e| format!("{shown}: {e}"))?;
    if bytes.len() as u64 > max {
        return Err(format!("{shown}: more than the limit of {max} bytes: not read"));
    }
    String::from_utf8(bytes).map_err(|e| format!("{shown}: not UTF-8 text (byte {})", e.utf8_error().valid_up_to()))
}

/// [`read_regular`] on a helper thread, given up after `within`: a file on a hung network
/// file system blocks `read` in the kernel, and pilot reads the ads before its signal
/// thread exists (every signal blocked), so a hang there would make SIGTERM useless. A
/// thread that never comes back is left behind; it holds nothing pilot needs.
pub fn read_regular_within(path: &Path, max: u64, within: std::time::Duration) -> Result<String, String> {
    let (tx, rx) = std::sync::mpsc::channel();
    let owned = path.to_path_buf();
    let spawned = std::thread::Builder::new().name("read ad".into()).spawn(move || {
        let _ = tx.send(read_regular(&owned, max));
    });
    if spawned.is_err() {
        return read_regular(path, max);
    }
    rx.recv_timeout(within).unwrap_or_else(|_| {
        Err(format!("{}: no answer within {within:?} (a hung file system?): not read", path.display()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_devices_fifos_directories_and_big_files() {
        let e = read_regular(Path::new("/dev/zero"), 1 << 20).unwrap_err();
        assert!(e.contains("/dev/zero: a character device, expected a regular file"), "{e}");
        assert!(read_regular(Path::new("/"), 10).unwrap_err().contains("a directory"));
        let dir = std::env::temp_dir().join(format!("pilot-read-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fifo = dir.join("fifo");
        let _ = std::fs::remove_file(&fifo);
        assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
        assert!(read_regular(&fifo, 10).unwrap_err().contains("a FIFO"));
        let big = dir.join("big");
        std::fs::write(&big, "x".repeat(11)).unwrap();
        assert!(read_regular(&big, 10).unwrap_err().contains("more than the limit of 10"));
        assert_eq!(read_regular(&big, 11).unwrap(), "x".repeat(11));
        let within = std::time::Duration::from_secs(5);
        assert_eq!(read_regular_within(&big, 11, within).unwrap(), "x".repeat(11));
        assert!(read_regular_within(&fifo, 11, within).unwrap_err().contains("a FIFO"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
