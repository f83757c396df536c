//! Where the control socket lives. ContainerPilot's `/var/run/containerpilot.socket` is on a
//! read-only image root under Apptainer, and one fixed path would be shared by every
//! container of a host. pilot's default is in the first writable per-job or per-user
//! runtime directory: `$_CONDOR_SCRATCH_DIR/pilot.sock` (unique per HTCondor job), else
//! `pilot-<instance>.sock` in `$XDG_RUNTIME_DIR`, `$TMPDIR` or `/tmp`, where the instance
//! is the one in service IDs (slot, Apptainer instance, PILOT_INSTANCE, else random). Jobs
//! find it in `$PILOT_SOCKET`; `pilot status` and friends derive it the same way, else use
//! the one live `pilot*.sock` of their own user they find (never another user's socket).

use crate::consul::service::Identity;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

pub use crate::sockpath::MAX_PATH;

fn writable(dir: &Path) -> bool {
    dir.is_dir() && nix::unistd::access(dir, nix::unistd::AccessFlags::W_OK).is_ok()
}

/// The candidate runtime directories, best first, with whether each is per-job.
pub fn runtime_dirs(env: &dyn Fn(&str) -> Option<String>) -> Vec<(PathBuf, bool)> {
    let mut v = Vec::new();
    if let Some(d) = env("_CONDOR_SCRATCH_DIR").filter(|d| !d.is_empty()) {
        v.push((PathBuf::from(d), true));
    }
    for k in ["XDG_RUNTIME_DIR", "TMPDIR"] {
        if let Some(d) = env(k).filter(|d| !d.is_empty()) {
            v.push((PathBuf::from(d), false));
        }
    }
    v.push((PathBuf::from("/tmp"), false));
    v
}

/// The socket path for this pilot.
pub fn default_path(identity: &Identity, env: &dyn Fn(&str) -> Option<String>) -> Result<PathBuf, String> {
    let name = format!("pilot-{}.sock", identity.instance);
    let mut tried = Vec::new();
    for (dir, per_job) in runtime_dirs(env) {
        let path = dir.join(if per_job { "pilot.sock" } else { name.as_str() });
        if !writable(&dir) {
            tried.push(format!("{} (not writable)", dir.display()));
        } else if path.as_os_str().len() > MAX_PATH {
            tried.push(format!("{} (path longer than {MAX_PATH} bytes)", path.display()));
        } else {
            return Ok(path);
        }
    }
    Err(format!("no place for the control socket: {}", tried.join(", ")))
}

/// Clear the way for binding `path`: a stale socket of a dead pilot is removed; a live one
/// is never taken over.
pub fn claim(path: &Path) -> Result<(), String> {
    if path.as_os_str().len() > MAX_PATH {
        return Err(format!(
            "control socket {}: longer than {MAX_PATH} bytes, the limit for a Unix socket path",
            path.display()
        ));
    }
    if std::fs::symlink_metadata(path).is_err() {
        return Ok(());
    }
    if UnixStream::connect(path).is_ok() {
        return Err(format!(
            "control socket {}: another pilot is running and listening on it; give this one its own (control.socket or PILOT_INSTANCE)",
            path.display()
        ));
    }
    std::fs::remove_file(path).map_err(|e| {
        format!("control socket {}: a stale socket is in the way and cannot be removed: {e}", path.display())
    })
}

/// Whether `path` is a socket owned by us (our effective uid) with a pilot of ours or
/// root's listening on it. A socket file anybody else created is never connected to: it may
/// be a trap waiting for a `putenv DB_PASSWORD=…`.
fn ours_and_live(path: &Path) -> bool {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let Ok(meta) = std::fs::symlink_metadata(path) else { return false };
    meta.file_type().is_socket()
        && meta.uid() == nix::unistd::geteuid().as_raw()
        && crate::httpd::client::connect_trusted(path).is_ok()
}

/// For the CLI clients: `$PILOT_SOCKET`, else the per-job `$_CONDOR_SCRATCH_DIR/pilot.sock`
/// if it is ours and live, else this environment's default path if it is, else the one live
/// `pilot*.sock` of ours in the runtime directories. Sockets of other users are ignored
/// (they do not count as "several pilots" either).
pub fn find(env: &dyn Fn(&str) -> Option<String>) -> Result<PathBuf, String> {
    if let Some(p) = env("PILOT_SOCKET").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    if let Some(d) = env("_CONDOR_SCRATCH_DIR").filter(|d| !d.is_empty()) {
        let p = PathBuf::from(d).join("pilot.sock");
        if ours_and_live(&p) {
            return Ok(p);
        }
    }
    let identity = Identity::detect(env);
    if identity.source != "random"
        && let Ok(p) = default_path(&identity, env)
        && ours_and_live(&p)
    {
        return Ok(p);
    }
    let mut live = Vec::new();
    let dirs = runtime_dirs(env);
    for (dir, _) in &dirs {
        let Ok(entries) = std::fs::read_dir(dir) else { continue };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with("pilot")
                && name.ends_with(".sock")
                && !live.contains(&e.path())
                && ours_and_live(&e.path())
            {
                live.push(e.path());
            }
        }
    }
    match live.len() {
        1 => Ok(live.remove(0)),
        0 => Err(format!(
            "no running pilot of yours found (looked for pilot*.sock owned by uid {} in {}); give --socket PATH or set PILOT_SOCKET",
            nix::unistd::geteuid(),
            dirs.iter().map(|(d, _)| d.display().to_string()).collect::<Vec<_>>().join(", ")
        )),
        _ => Err(format!(
            "several pilots are running here: {}; choose one with --socket PATH",
            live.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ident(instance: &str, source: &'static str) -> Identity {
        Identity { hostname: "h".into(), instance: instance.into(), source, slot: None }
    }

    #[test]
    fn per_job_dir_first_then_named_by_instance() {
        let tmp = std::env::temp_dir();
        let t = tmp.display().to_string();
        let env = |k: &str| (k == "_CONDOR_SCRATCH_DIR" || k == "TMPDIR").then(|| t.clone());
        assert_eq!(default_path(&ident("slot1_2", "htcondor-slot"), &env).unwrap(), tmp.join("pilot.sock"));
        let env = |k: &str| (k == "TMPDIR").then(|| t.clone());
        assert_eq!(default_path(&ident("ab12cd34", "random"), &env).unwrap(), tmp.join("pilot-ab12cd34.sock"));
    }

    #[test]
    fn too_long_or_unwritable_dirs_are_skipped() {
        let long = format!("/tmp/{}", "x".repeat(120));
        let env = |k: &str| {
            (k == "XDG_RUNTIME_DIR").then(|| long.clone()).or_else(|| (k == "TMPDIR").then(|| "/nonexistent".into()))
        };
        let p = default_path(&ident("i", "random"), &env).unwrap();
        assert_eq!(p, PathBuf::from("/tmp/pilot-i.sock"));
    }

    #[test]
    fn claim_refuses_paths_over_the_limit() {
        let long = PathBuf::from(format!("/tmp/{}.sock", "y".repeat(110)));
        assert!(claim(&long).unwrap_err().contains("longer than 107 bytes"));
    }
}
