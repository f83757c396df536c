//! Starting a job's (or health check's) process: wire its stdio (the payload inherits
//! pilot's; other jobs get /dev/null as stdin and, unless `raw`, a pipe for their output) and
//! start it through `init::spawn`, whose child searches PATH and reads the program: nothing
//! here touches a file system (see the supervisor thread's invariant in ARCHITECTURE.md).
//! The job's identity was resolved when its config was loaded (`identity::Plans`).

use super::machine::{RunRequest, SpawnFailure};
use crate::init::privileges::Plan;
use crate::init::signals::Inherited;
use crate::init::spawn::{self, InFlight, Spec, Stdio};
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
    plan: Option<&Plan>,
    inherited: &Inherited,
    inflight: &mut InFlight,
) -> Result<Launched, Failed> {
    let fail = |code, message| Failed { failure: SpawnFailure { pid: None, code, message }, output: None };
    let Some(program) = req.argv.first() else { return Err(fail(127, "empty command".into())) };
    // Jobs that are not raw have their output logged line by line with their name.
    let pipe = if req.raw { None } else { std::io::pipe().ok() };
    let out = match &pipe {
        Some((_, w)) => Stdio::Fd(w.as_raw_fd()),
        None => Stdio::Inherit,
    };
    let err = match &pipe {
        Some((_, w)) => Stdio::Fd(w.as_raw_fd()),
        None => Stdio::Inherit,
    };
    // The payload keeps pilot's stdin; other processes get /dev/null (opened by the child).
    let stdin = if req.main { Stdio::Inherit } else { Stdio::Null };
    let spec = Spec {
        program,
        path,
        argv: req.argv,
        env,
        stdin,
        stdout: out,
        stderr: err,
        foreground: req.main,
        privileges: plan,
    };
    let result = spawn::spawn(&spec, inherited, inflight);
    // Only the child may hold the write end now, so the reader sees EOF when it is done.
    let output = pipe.map(|(reader, writer)| {
        drop(writer);
        reader
    });
    match result {
        Ok(pid) => Ok(Launched { pid, output }),
        Err(e) => Err(Failed { failure: SpawnFailure { pid: e.pid, code: e.exit_code(), message: e.message }, output }),
    }
}
