//! Finding a program the way `execvp` would, for `check-config`'s offline report of a
//! missing program. pilot does not use it to start anything: a `stat` of every PATH entry on
//! the supervisor thread would wait on whatever file system they are on (a hung CVMFS or NFS
//! mount stops PID 1 there), so the spawn child searches PATH itself (`init::spawn`), with
//! the same rules and messages.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

#[derive(Debug, PartialEq)]
pub enum Lookup {
    Found(PathBuf),
    /// Exists but is a directory or lacks execute permission: exit status 126.
    NotExecutable(PathBuf),
    /// Not there at all: exit status 127.
    NotFound,
}

fn is_executable(p: &Path) -> Option<bool> {
    let meta = std::fs::metadata(p).ok()?;
    Some(meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

/// Why a command cannot be run, with the shell's exit status for it.
#[derive(Debug, PartialEq)]
pub struct NotRunnable {
    /// 127: not found (or empty); 126: found but not executable.
    pub code: i32,
    pub message: String,
}

impl std::fmt::Display for NotRunnable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// `lookup` with the failure worded for the user: "empty command" (127), "X: command not
/// found" (127), "X: permission denied (not an executable file)" (126).
pub fn resolve(program: &str, path_var: Option<&str>) -> Result<PathBuf, NotRunnable> {
    if program.is_empty() {
        return Err(NotRunnable { code: 127, message: "empty command".into() });
    }
    match lookup(program, path_var) {
        Lookup::Found(p) => Ok(p),
        Lookup::NotFound => Err(NotRunnable { code: 127, message: format!("{program}: command not found") }),
        Lookup::NotExecutable(p) => Err(NotRunnable {
            code: 126,
            message: format!("{}: permission denied (not an executable file)", p.display()),
        }),
    }
}

/// Where `program` is: a path as given when it contains a `/`, else the first executable
/// file of that name in `path_var`'s directories. An empty name is not found (it would
/// otherwise name the first PATH directory itself).
pub fn lookup(program: &str, path_var: Option<&str>) -> Lookup {
    if program.is_empty() {
        return Lookup::NotFound;
    }
    let mut not_exec = None;
    for candidate in crate::init::spawn::candidates(program, path_var).into_iter().map(PathBuf::from) {
        match is_executable(&candidate) {
            Some(true) => return Lookup::Found(candidate),
            Some(false) => not_exec = not_exec.or(Some(candidate)),
            None => {}
        }
    }
    not_exec.map(Lookup::NotExecutable).unwrap_or(Lookup::NotFound)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_sh_and_reports_missing() {
        assert!(matches!(lookup("sh", Some("/nonexistent:/bin:/usr/bin")), Lookup::Found(_)));
        assert_eq!(lookup("no-such-program-xyz", Some("/bin")), Lookup::NotFound);
        assert_eq!(lookup("/etc", None), Lookup::NotExecutable(PathBuf::from("/etc")));
        assert_eq!(lookup("", Some("/bin")), Lookup::NotFound, "not the directory /bin/");
        assert_eq!(resolve("", Some("/bin")).unwrap_err().message, "empty command");
        assert_eq!(resolve("", None).unwrap_err().code, 127);
    }
}
