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
        let _ = std::fs::remove_dir_all(&dir);
    }
}
