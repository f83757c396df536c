//! Helpers for tests/privileges.rs: a "container" with its own `/etc/passwd` and `/etc/group`
//! (bind-mounted in a new mount namespace), pilot as PID 1 in it as real root or as the root
//! of a user namespace, and the fields of `/proc/self/status` its jobs saw.

use crate::common::{pilot, require, wait_limited};
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// How pilot is started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ns {
    /// Real root, in new PID and mount namespaces.
    Root,
    /// Root of a user namespace whose root is the unprivileged host uid 100000: inside, uids
    /// 0..999 and gids 0..1999 are mapped (to 100000...), written by the test as real root, so
    /// setgroups stays allowed.
    MappedUserns,
    /// An unprivileged user (uid 65534) that runs `unshare --user --map-root-user`: only root
    /// is mapped, and setgroups is denied.
    MapRootUser,
}

/// The outer uid and gid of the root of `Ns::MappedUserns`.
pub const OUTER: u32 = 100000;

/// A scratch container: `etc/passwd`, `etc/group`, `out/` (writable by every job's user)
/// and the config; removed when dropped (also when the test fails).
pub struct Container {
    pub dir: PathBuf,
    /// Programs bind-mounted into `dir` inside the namespaces (a cached binary under a
    /// directory the job's user may not enter): (source, name in `dir`).
    binds: Vec<(PathBuf, String)>,
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Container {
    pub fn new(name: &str, passwd: &str, group: &str, config: &str) -> Container {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("pilot-privileges-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("etc")).unwrap();
        std::fs::create_dir_all(dir.join("out")).unwrap();
        std::fs::write(dir.join("etc/passwd"), passwd).unwrap();
        std::fs::write(dir.join("etc/group"), group).unwrap();
        std::fs::write(dir.join("pilot.json5"), config).unwrap();
        // Readable by the unprivileged outer users, and `out` writable by every job's user.
        for (p, mode) in [(dir.clone(), 0o755), (dir.join("etc"), 0o755), (dir.join("out"), 0o777)] {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        }
        Container { dir, binds: Vec::new() }
    }

    /// Make `program` runnable by every user as `DIR/NAME` inside the container; its path.
    pub fn bind_program(&mut self, program: PathBuf, name: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let at = self.dir.join(name);
        std::fs::write(&at, "").unwrap();
        std::fs::set_permissions(&at, std::fs::Permissions::from_mode(0o755)).unwrap();
        self.binds.push((program, name.to_string()));
        at
    }

    pub fn out(&self) -> PathBuf {
        self.dir.join("out")
    }

    /// `pilot run -c pilot.json5` as PID 1 of the container, with `OUT` in its environment;
    /// its stdout and stderr.
    pub fn run(&self, ns: Ns, limit: Duration) -> Output {
        self.pilot(ns, "run", limit)
    }

    /// `pilot SUBCOMMAND -c pilot.json5` (`run`, `check-config`) in the container.
    pub fn pilot(&self, ns: Ns, subcommand: &str, limit: Duration) -> Output {
        require("unshare", "apt-get install util-linux");
        require("setpriv", "apt-get install util-linux");
        let d = self.dir.display();
        // Inside: bind the container's account files over /etc's, then become pilot.
        let binds: String =
            self.binds.iter().map(|(src, name)| format!(" && mount --bind {} {d}/{name}", src.display())).collect();
        let script = format!(
            "read _ && mount --bind {d}/etc/passwd /etc/passwd && mount --bind {d}/etc/group /etc/group{binds} && exec \"$@\""
        );
        let unshare = ["unshare", "--pid", "--fork", "--mount", "--mount-proc"];
        let mut cmd = match ns {
            Ns::Root => Command::new("unshare"),
            Ns::MappedUserns => Command::new("setpriv"),
            Ns::MapRootUser => Command::new("setpriv"),
        };
        match ns {
            Ns::Root => cmd.args(&unshare[1..]),
            Ns::MappedUserns => {
                let outer = OUTER.to_string();
                cmd.args(["--reuid", &outer, "--regid", &outer, "--clear-groups"]).args(unshare).arg("--user")
            }
            Ns::MapRootUser => cmd
                .args(["--reuid", "65534", "--regid", "65534", "--clear-groups"])
                .args(unshare)
                .args(["--user", "--map-root-user"]),
        };
        cmd.args(["--", "sh", "-c", &script, "sh", pilot(), subcommand, "-c"]).arg(self.dir.join("pilot.json5"));
        cmd.env("OUT", self.out()).env_remove("PILOT_CONFIG").env_remove("CONTAINERPILOT");
        let mut child =
            cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn unshare");
        if ns == Ns::MappedUserns {
            write_maps(child.id());
        }
        let mut stdin = child.stdin.take().unwrap();
        let _ = stdin.write_all(b"go\n");
        drop(stdin);
        wait_limited(&mut child, limit)
    }

    /// The `/proc/self/status` a job wrote to `out/NAME`.
    pub fn status(&self, name: &str) -> Status {
        let path = self.out().join(name);
        Status(std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
    }
}

/// Once `unshare` (pid) has its own user namespace, map its root to `OUTER` (uids 0..999,
/// gids 0..1999), as real root may.
fn write_maps(pid: u32) {
    let ours = std::fs::read_link("/proc/self/ns/user").unwrap();
    let start = Instant::now();
    loop {
        match std::fs::read_link(format!("/proc/{pid}/ns/user")) {
            Ok(ns) if ns != ours => break,
            _ if start.elapsed() > Duration::from_secs(10) => panic!("unshare made no user namespace"),
            _ => std::thread::sleep(Duration::from_millis(10)),
        }
    }
    std::fs::write(format!("/proc/{pid}/uid_map"), format!("0 {OUTER} 1000\n")).expect("write uid_map");
    std::fs::write(format!("/proc/{pid}/gid_map"), format!("0 {OUTER} 2000\n")).expect("write gid_map");
}

/// A `/proc/PID/status` text.
pub struct Status(pub String);

impl Status {
    /// A field's value, whitespace-separated parts joined by one space (`Uid`: "0 0 0 0").
    pub fn get(&self, field: &str) -> String {
        let prefix = format!("{field}:");
        let line = self.0.lines().find_map(|l| l.strip_prefix(&prefix));
        line.unwrap_or_else(|| panic!("no {field} in {}", self.0)).split_whitespace().collect::<Vec<_>>().join(" ")
    }

    /// Uid, Gid, Groups and the capability sets at once, for one assertion with a readable
    /// diff.
    pub fn identity(&self) -> Vec<(String, String)> {
        ["Uid", "Gid", "Groups", "CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs"]
            .iter()
            .map(|f| (f.to_string(), self.get(f)))
            .collect()
    }
}

/// The expected `identity()`: every uid field `uid`, every gid field `gid`, `groups`, every
/// capability set `caps` (as /proc prints it) except the bounding set `bnd`, and `nnp`.
pub fn expected(uid: u32, gid: u32, groups: &str, caps: u64, bnd: u64, amb: u64, nnp: bool) -> Vec<(String, String)> {
    let set = |m: u64| format!("{m:016x}");
    [
        ("Uid", format!("{uid} {uid} {uid} {uid}")),
        ("Gid", format!("{gid} {gid} {gid} {gid}")),
        ("Groups", groups.to_string()),
        ("CapInh", set(caps)),
        ("CapPrm", set(caps)),
        ("CapEff", set(caps)),
        ("CapBnd", set(bnd)),
        ("CapAmb", set(amb)),
        ("NoNewPrivs", if nnp { "1" } else { "0" }.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// This process's value of a capability set (for "unchanged" expectations).
pub fn own_caps(field: &str) -> u64 {
    let status = Status(std::fs::read_to_string("/proc/self/status").unwrap());
    u64::from_str_radix(&status.get(field), 16).unwrap()
}
