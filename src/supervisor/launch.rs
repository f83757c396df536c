//! Starting a job's (or health check's) process: find the program on PATH, wire its stdio
//! (the payload inherits pilot's; other jobs get /dev/null as stdin and, unless `raw`, a
//! pipe for their output) and fork/exec it through `init::spawn`.

use super::machine::{RunRequest, SpawnFailure};
use crate::init::signals::Inherited;
use crate::init::spawn::{self, Spec, Stdio};
use crate::pathsearch;
use std::io::PipeReader;
use std::os::fd::AsRawFd;

/// A started process, and the read end of its output pipe (None when raw: not captured).
pub struct Launched {
    pub pid: i32,
    pub output: Option<PipeReader>,
}

/// Launch failed: why, and the read end of the pipe if a child was forked (its last words
/// before exec failed may still be worth logging).
pub struct Failed {
    pub failure: SpawnFailure,
    pub output: Option<PipeReader>,
}

pub fn launch(
    req: &RunRequest,
    env: &[(String, String)],
    path: Option<&str>,
    inherited: &Inherited,
) -> Result<Launched, Failed> {
    let fail = |code, message| Failed { failure: SpawnFailure { pid: None, code, message }, output: None };
    let program = match req.argv.first().map(|p| pathsearch::resolve(p, path)) {
        Some(Ok(p)) => p,
        Some(Err(e)) => return Err(fail(e.code, e.message)),
        None => return Err(fail(127, "empty command".into())),
    };
    // Jobs that are not raw have their output logged line by line with their name.
    let pipe = if req.raw { None } else { std::io::pipe().ok() };
    let devnull = std::fs::File::open("/dev/null").ok();
    let out = match &pipe {
        Some((_, w)) => Stdio::Fd(w.as_raw_fd()),
        None => Stdio::Inherit,
    };
    let err = match &pipe {
        Some((_, w)) => Stdio::Fd(w.as_raw_fd()),
        None => Stdio::Inherit,
    };
    let stdin = match (&devnull, req.main) {
        (Some(f), false) => Stdio::Fd(f.as_raw_fd()),
        _ => Stdio::Inherit,
    };
    // The job's identity, resolved now (before fork) in the container's /etc.
    let plan = match crate::identity::plan(req.privileges, &crate::identity::etc()) {
        Ok(plan) => plan,
        Err(e) => {
            return Err(fail(126, format!("cannot run {} with its user and capabilities: {e}", program.display())));
        }
    };
    let spec = Spec {
        program: &program,
        argv: req.argv,
        env,
        stdin,
        stdout: out,
        stderr: err,
        foreground: req.main,
        privileges: plan.as_ref(),
    };
    let result = spawn::spawn(&spec, inherited);
    // Only the child may hold the write end now, so the reader sees EOF when it is done.
    let output = pipe.map(|(reader, writer)| {
        drop(writer);
        reader
    });
    match result {
        Ok(pid) => Ok(Launched { pid, output }),
        Err(e) => Err(Failed {
            failure: SpawnFailure {
                pid: e.pid,
                code: e.exit_code(),
                message: format!("cannot execute {}: {}", program.display(), e.error),
            },
            output,
        }),
    }
}
