//! Finding a program the way `execvp` would, done before fork so that the child only has
//! to call `execve` and so `check-config` can report a missing program offline.

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

pub fn lookup(program: &str, path_var: Option<&str>) -> Lookup {
    if program.contains('/') {
        let p = PathBuf::from(program);
        return match is_executable(&p) {
            Some(true) => Lookup::Found(p),
            Some(false) => Lookup::NotExecutable(p),
            None => Lookup::NotFound,
        };
    }
    let mut not_exec = None;
    for dir in path_var.unwrap_or("/usr/local/bin:/usr/bin:/bin").split(':') {
        let candidate = Path::new(if dir.is_empty() { "." } else { dir }).join(program);
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
    }
}
