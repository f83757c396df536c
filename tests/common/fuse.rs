//! A FUSE file system that never answers, as a hung CVMFS or NFS mount looks to a process:
//! `/dev/fuse` is opened, mounted with mount(2) (type "fuse", `fd=N`) in a private mount
//! namespace, and nobody ever reads the descriptor, so every access below the mount point
//! (a lookup, a stat, an execve, the kernel's look for a `#!` interpreter) waits in the
//! kernel, killably, until the connection ends. It ends when the test closes the descriptor
//! (`Drop`), which the kernel takes as an abort: every waiter gets ENOTCONN.
//!
//! The mount exists only in the namespaces of the pilot [`HungMount::start`] starts
//! (pilot as PID 1 of a new PID namespace), never in the test's own: nothing of the test, nor
//! the removal of its scratch directory, can hang on it.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

pub struct HungMount {
    /// The mount point (an empty directory in the test's namespace).
    pub dir: PathBuf,
    /// The FUSE connection: closed in Drop, which aborts it.
    fuse: Option<OwnedFd>,
}

/// A program by its full path: a test may give the command a PATH that starts on the hung
/// mount, and the lookups happen after the mount.
fn full_path(name: &str) -> String {
    let found = ["/usr/bin", "/bin", "/usr/sbin", "/sbin"]
        .iter()
        .map(|d| format!("{d}/{name}"))
        .find(|p| Path::new(p).exists());
    found.unwrap_or_else(|| panic!("this test needs `{name}`: apt-get install util-linux"))
}

impl HungMount {
    /// A hung mount at `parent/hung` (root only: mount(2) and /dev/fuse).
    pub fn new(parent: &Path) -> HungMount {
        assert!(crate::common::is_root(), "a FUSE mount needs root: run this test as root");
        let dir = parent.join("hung");
        std::fs::create_dir_all(&dir).unwrap();
        let fuse = std::fs::File::options()
            .read(true)
            .write(true)
            .open("/dev/fuse")
            .unwrap_or_else(|e| panic!("/dev/fuse: {e} (load the fuse module: modprobe fuse)"));
        HungMount { dir, fuse: Some(fuse.into()) }
    }

    /// Start `pilot ARGS` as PID 1 of new PID and mount namespaces where the hung mount is at
    /// [`HungMount::dir`], as `Running::start` does (stdout read line by line). The device is
    /// the mounting shell's stdin (`mount -i -t fuse -o fd=0`, no helper), which it replaces
    /// with /dev/null before it execs the rest: afterwards only this test holds the device.
    pub fn start(&self, args: &[&str], env: &[(&str, &str)]) -> crate::common::Running {
        let fuse = self.fuse.as_ref().unwrap().try_clone().expect("dup /dev/fuse");
        let script = format!(
            "{} -i -t fuse -o fd=0,rootmode=40000,user_id=0,group_id=0 hung \"$1\" || exit 99; shift; exec {} --pid --fork --mount-proc \"$@\" </dev/null",
            full_path("mount"),
            full_path("unshare")
        );
        let runtime_dir = tempfile::Builder::new().prefix("pilot-running-").tempdir().expect("a runtime directory");
        let mut cmd = Command::new(full_path("unshare"));
        cmd.args(["--mount", "--propagation", "private", "--", "/bin/sh", "-c", &script, "sh"])
            .arg(&self.dir)
            .arg(crate::common::pilot())
            .args(args)
            .env("TMPDIR", runtime_dir.path())
            .env_remove("XDG_RUNTIME_DIR");
        for (k, v) in env {
            cmd.env(k, v);
        }
        use std::os::unix::process::CommandExt;
        let mut child = cmd
            .process_group(0)
            .stdin(Stdio::from(fuse))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn pilot under unshare");
        let out = child.stdout.take().unwrap();
        let rx = super::lines_of(out);
        crate::common::Running { child, lines: rx, runtime_dir: Some(runtime_dir) }
    }

    /// A path below the mount point (every access to it hangs).
    pub fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }
}

impl Drop for HungMount {
    fn drop(&mut self) {
        // Closing the last descriptor of the device aborts the connection: everything
        // waiting on the mount gets ENOTCONN and can finish (or be reaped).
        drop(self.fuse.take());
    }
}

/// The pid of pilot: the child of `unshare --fork` (`Running::child`: the outer unshare
/// execs the shell, which execs the inner one in the same process), waiting for it.
pub fn pilot_pid(unshare: u32) -> i32 {
    child_of(unshare)
}

/// The pid of the first child of `parent`, waiting for it.
pub fn child_of(parent: u32) -> i32 {
    crate::common::eventually(std::time::Duration::from_secs(10), "unshare's child", || {
        std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
            let pid = e.file_name().to_str()?.parse::<i32>().ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let rest = stat.get(stat.rfind(')')? + 2..)?;
            (rest.split(' ').nth(1) == Some(&parent.to_string())).then_some(pid)
        })
    })
}
