//! Starting a process: `clone(CLONE_VM)` + execve by hand, with the supervisor thread never
//! waiting on a file system.
//!
//! `std::process::Command` is not usable in an init: it passes the *current* (fully
//! blocked) signal mask to the child, and after an exec failure it calls `waitpid` on the
//! child itself, racing pilot's global reaper (the ContainerPilot #439 class of bug). Here
//! the child gets back the mask pilot inherited, default signal actions, the soft
//! `RLIMIT_NOFILE` pilot started with, its own process group and, for the payload, the
//! terminal.
//!
//! # Why `CLONE_VM` without `CLONE_VFORK`
//! The child shares pilot's memory (no copy of the page tables, no copy-on-write faults
//! afterwards: a health check every few seconds pays that each time with `fork`), but the
//! supervisor thread is *not* suspended until the child has exec'd, as it would be with
//! `CLONE_VFORK` (and `posix_spawn`). Everything that touches the program's file system
//! happens in the child: the search of `PATH` (execve on each candidate, with `execvpe`'s
//! rules), the `#!` interpreter's and the ELF loader's lookup inside execve, and the read of
//! a script's first bytes for the diagnosis of a failure. When those live on a hung CVMFS
//! (FUSE) or NFS mount, the *child* waits in the kernel, killable, and pilot goes on
//! forwarding signals, reaping, checking and answering (ContainerPilot has the same property:
//! Go blocks only the goroutine that forks).
//!
//! The price is the bookkeeping `CLONE_VFORK` made unnecessary: the child's arguments, its
//! stack and the memory where it reports a failure must outlive the call, so they are kept
//! in an [`InFlight`] record per child. The kernel tells when the child stops using them
//! (asked by the child's `set_tid_address`, as `CLONE_CHILD_CLEARTID` would, it clears a word
//! of the record at the child's execve or exit): the stack and arguments are freed then, the
//! small report at reap, where a failure the child left becomes the same message and code the
//! machine got before (127 not found, 126 cannot run).
//!
//! The child makes raw system calls only (`init::sys`): it runs on the supervisor thread's
//! thread-local storage, so no libc wrapper (errno, cancellation state) may run in it.

use super::signals::Inherited;
use super::sys::sys;
use std::cell::UnsafeCell;
use std::ffi::CString;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicI32, AtomicU32, Ordering};

pub enum Stdio {
    Inherit,
    /// `/dev/null`, opened by the child (the supervisor thread opens no file for a spawn).
    Null,
    Fd(RawFd),
}

pub struct Spec<'a> {
    /// The program as the job names it: a path (with a `/`) or a name the child looks up on
    /// `path`, as `execvp` does.
    pub program: &'a str,
    /// The `PATH` to search (None: `/usr/local/bin:/usr/bin:/bin`).
    pub path: Option<&'a str>,
    pub argv: &'a [String],
    pub env: &'a [(String, String)],
    pub stdin: Stdio,
    pub stdout: Stdio,
    pub stderr: Stdio,
    /// Make the child's process group the terminal's foreground group (the payload).
    pub foreground: bool,
    /// The job's `user`, `group`, `capabilities`, `no_new_privs` (None: pilot's own).
    pub privileges: Option<&'a super::privileges::Plan>,
}

/// Why a process did not start, worded for the job's log line, with the shell's code.
#[derive(Debug)]
pub struct SpawnError {
    /// The child, when there was one (its exit has been or will be reaped like any other).
    pub pid: Option<i32>,
    /// The whole message: "X: command not found", "cannot execute P: ...".
    pub message: String,
    /// The shell convention: 127 when the program (or its interpreter) does not exist, 126
    /// when it cannot run.
    pub code: i32,
    /// The errno's kind, when an errno is behind it.
    pub kind: std::io::ErrorKind,
}

impl SpawnError {
    /// The exit status a shell would give: 127 not found, 126 cannot run.
    pub fn exit_code(&self) -> i32 {
        self.code
    }

    fn before_clone(program: &str, error: std::io::Error) -> SpawnError {
        SpawnError { pid: None, message: format!("cannot execute {program}: {error}"), code: 126, kind: error.kind() }
    }
}

impl std::fmt::Display for SpawnError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// The step of the child's set-up that failed, left with its errno in the record the parent
/// reads once the child is reaped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
enum Step {
    Setpgid = 1,
    Tcsetpgrp,
    /// Opening /dev/null for stdin.
    DevNull,
    /// Moving a descriptor out of the way of 0–2 before the dup2s.
    Relocate,
    DupStdin,
    DupStdout,
    DupStderr,
    /// Default actions for every handled signal, no alternate stack.
    SignalDefaults,
    Mask,
    /// Giving back the soft RLIMIT_NOFILE pilot started with.
    Nofile,
    /// execve of a candidate that is an executable file (`detail`: which candidate).
    Execve,
    /// The ENOEXEC fallback: `/bin/sh SCRIPT ARGS...`.
    ExecveShell,
    /// No candidate exists.
    NotFound,
    /// Candidates exist but none is an executable file (`detail`: the first).
    NotExecutable,
    /// The job's identity (`privileges::apply_in_child`); `detail` says which of its steps,
    /// and for which capability.
    Privileges,
    /// execve gave EACCES for an executable file whose own file system is mounted `noexec`
    /// (`detail`: which candidate): grid sites mount /tmp, /dev/shm and scratch that way.
    Noexec,
}

impl Step {
    const ALL: [Step; 16] = [
        Step::Setpgid,
        Step::Tcsetpgrp,
        Step::DevNull,
        Step::Relocate,
        Step::DupStdin,
        Step::DupStdout,
        Step::DupStderr,
        Step::SignalDefaults,
        Step::Mask,
        Step::Nofile,
        Step::Execve,
        Step::ExecveShell,
        Step::NotFound,
        Step::NotExecutable,
        Step::Privileges,
        Step::Noexec,
    ];

    fn dup(target: usize) -> Step {
        [Step::DupStdin, Step::DupStdout, Step::DupStderr][target]
    }

    fn describe(self) -> &'static str {
        match self {
            Step::Setpgid => "setpgid (own process group)",
            Step::Tcsetpgrp => "tcsetpgrp (taking the terminal)",
            Step::DevNull => "opening /dev/null for stdin",
            Step::Relocate => "moving a descriptor above 2",
            Step::DupStdin => "dup2 of stdin",
            Step::DupStdout => "dup2 of stdout",
            Step::DupStderr => "dup2 of stderr",
            Step::SignalDefaults => "resetting signal actions to their defaults",
            Step::Mask => "restoring the signal mask",
            Step::Nofile => "restoring the soft RLIMIT_NOFILE",
            Step::Execve => "execve",
            Step::ExecveShell => "execve of /bin/sh for a script without #!",
            Step::NotFound => "looking up the program",
            Step::NotExecutable => "looking up the program",
            Step::Privileges => "setting the job's user and capabilities",
            Step::Noexec => "execve",
        }
    }
}

/// How many bytes of a program the child reads after a failed execve, for the diagnosis.
const HEAD: usize = 256;

/// What a file says it needs to run: the interpreter of its `#!` line, or, for an ELF
/// program, its dynamic loader (execve reports a missing one as ENOENT too).
enum Needs {
    Interpreter(String),
    Elf,
    Nothing,
}

/// What a program needs to run (see [`Needs`]), from its first bytes (read by the child).
fn needs(head: &[u8]) -> Needs {
    if head.starts_with(b"\x7fELF") {
        return Needs::Elf;
    }
    let Some(line) = head.strip_prefix(b"#!") else { return Needs::Nothing };
    let line = line.split(|b| *b == b'\n').next().unwrap_or(line);
    // As the kernel reads it (binfmt_script): blanks are spaces and tabs only, so the `\r` of
    // a DOS line ending is part of the name, and the reason it is not found.
    let blank = |b: &u8| *b == b' ' || *b == b'\t';
    let start = line.iter().position(|b| !blank(b)).unwrap_or(line.len());
    let name = line[start..].split(|b| blank(b) || *b == 0).next().unwrap_or_default();
    match name.is_empty() {
        false => Needs::Interpreter(String::from_utf8_lossy(name).into_owned()),
        true => Needs::Nothing,
    }
}

/// An interpreter's name for a message: escaped when it has control characters (a `\r`
/// printed raw would hide itself), with the likely cause of a trailing `\r`.
fn shown(interp: &str) -> String {
    if !interp.chars().any(char::is_control) {
        return interp.to_string();
    }
    let dos = if interp.ends_with('\r') { " (the #! line ends with \\r: DOS line endings)" } else { "" };
    format!("\"{}\"{dos}", interp.escape_debug())
}

/// "E2BIG: Argument list too long (os error 7)": the errno's name, then the system's text
/// once (Errno's Display has its own description already).
fn errno_text(errno: i32) -> String {
    let os = std::io::Error::from_raw_os_error(errno);
    format!("{:?}: {os}", nix::errno::Errno::from_raw(errno))
}

/// The text of an execve failure of `program`, an executable file (so ENOENT or EACCES is
/// about what it needs: its `#!` interpreter or its loader), and its code.
fn exec_failure(program: &str, step: Step, errno: i32, head: &[u8]) -> (String, i32) {
    let name = errno_text(errno);
    let code = if errno == libc::ENOENT { 127 } else { 126 };
    match step {
        Step::Execve if matches!(errno, libc::ENOENT | libc::EACCES) => match needs(head) {
            Needs::Interpreter(interp) if errno == libc::ENOENT => {
                (format!("interpreter {} of {program} not found", shown(&interp)), code)
            }
            Needs::Interpreter(interp) => {
                (format!("interpreter {} of {program} cannot run: {name}", shown(&interp)), code)
            }
            Needs::Elf if errno == libc::ENOENT => {
                (format!("its dynamic loader (ELF interpreter) is missing: {name}"), code)
            }
            _ => (name, code),
        },
        Step::Execve if errno == libc::ENOEXEC => {
            let what = match needs(head) {
                Needs::Elf => "an ELF program for another machine (the image's architecture?)",
                _ => "a binary, not a script /bin/sh could run",
            };
            (format!("{name}: {what}"), 126)
        }
        Step::Execve => (name, code),
        _ => (format!("{program} has no #! line and /bin/sh cannot run it: {name}"), 126),
    }
}

/// Where execvp would look for `program`: the path itself when it has a `/`, else each
/// directory of `path` (an empty entry is the current directory). Pure string work: nothing
/// here touches a file system. Also `pathsearch`'s (check-config), so both look in the same places.
pub fn candidates(program: &str, path: Option<&str>) -> Vec<String> {
    if program.contains('/') {
        return vec![program.to_string()];
    }
    path.unwrap_or("/usr/local/bin:/usr/bin:/bin")
        .split(':')
        .map(
            |dir| {
                if dir.is_empty() { format!("./{program}") } else { format!("{}/{program}", dir.trim_end_matches('/')) }
            },
        )
        .collect()
}

fn cstring(program: &str, s: &str) -> Result<CString, SpawnError> {
    CString::new(s).map_err(|_| {
        let e = std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("argument contains a NUL byte: {s:?}"));
        SpawnError::before_clone(program, e)
    })
}

/// The child's stack: its own mapping with a guard page below (an overflow faults in the
/// child instead of writing over pilot's heap, which the child shares). 64 KiB: the child
/// makes raw system calls only, a few hundred bytes deep; only the pages it touches are ever
/// faulted in, and they are given back when it has exec'd.
struct Stack {
    base: *mut libc::c_void,
    len: usize,
}

const STACK: usize = 64 << 10;

impl Stack {
    fn new() -> std::io::Result<Stack> {
        // SAFETY: sysconf reads a value.
        let page = (unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).max(4096) as usize;
        let len = STACK + page;
        // SAFETY: a fresh private anonymous mapping, touching no existing memory.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        let stack = Stack { base, len };
        // SAFETY: the lowest page of our own mapping becomes the guard.
        if unsafe { libc::mprotect(base, page, libc::PROT_NONE) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(stack)
    }

    /// The top, 16-aligned (the stack grows down on every target pilot builds for).
    fn top(&self) -> *mut libc::c_void {
        ((self.base as usize + self.len) & !15) as *mut libc::c_void
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        // SAFETY: our own mapping, no longer used by any child (see `Record`).
        unsafe { libc::munmap(self.base, self.len) };
    }
}

/// What the child writes and the parent reads: kept until the child is reaped, in a page of
/// its own mapped `MAP_SHARED`, so that the child's writes reach the parent also when the
/// child does *not* share our memory (the fork-like fallback, see [`spawn`]).
struct Shared {
    /// Non-zero from before the clone; cleared by the kernel when the child stops using our
    /// memory, at its execve or its exit (the child's `set_tid_address`, as
    /// `CLONE_CHILD_CLEARTID` would, which musl's clone() refuses).
    tid: AtomicI32,
    /// 0 until the child fails; then a `Step`, written last (Release).
    step: AtomicU32,
    detail: AtomicU32,
    errno: AtomicI32,
    head_len: AtomicU32,
    /// The program's first bytes after a failed execve (written by the child before `step`).
    head: UnsafeCell<[u8; HEAD]>,
}

/// The page [`Shared`] lives in (`MAP_SHARED | MAP_ANONYMOUS`), unmapped when dropped.
struct SharedPage {
    ptr: *mut Shared,
    len: usize,
}

impl SharedPage {
    fn new() -> std::io::Result<SharedPage> {
        let len = std::mem::size_of::<Shared>().next_multiple_of(4096);
        // SAFETY: a fresh shared anonymous mapping, touching no existing memory.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        let ptr = ptr.cast::<Shared>();
        let shared = Shared {
            tid: AtomicI32::new(-1),
            step: AtomicU32::new(0),
            detail: AtomicU32::new(0),
            errno: AtomicI32::new(0),
            head_len: AtomicU32::new(0),
            head: UnsafeCell::new([0; HEAD]),
        };
        // SAFETY: the mapping is page-aligned (so aligned for Shared), writable and large
        // enough; nothing else refers to it yet.
        unsafe { ptr.write(shared) };
        Ok(SharedPage { ptr, len })
    }
}

impl SharedPage {
    /// As new, for the next child: only after the previous one was reaped (nothing else
    /// writes the page then; `head` is read only up to `head_len`).
    fn reset(&self) {
        self.tid.store(-1, Ordering::Relaxed);
        self.step.store(0, Ordering::Relaxed);
        self.detail.store(0, Ordering::Relaxed);
        self.errno.store(0, Ordering::Relaxed);
        self.head_len.store(0, Ordering::Relaxed);
    }
}

impl std::ops::Deref for SharedPage {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        // SAFETY: initialised in `new`, mapped until drop; only accessed through atomics and
        // the `head` cell (written by the child before it publishes `step`).
        unsafe { &*self.ptr }
    }
}

impl Drop for SharedPage {
    fn drop(&mut self) {
        // SAFETY: our own mapping; the child is reaped or never comes back to it (see
        // `InFlight`'s Drop for one that may).
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// What the child reads until it has exec'd: freed then (or at reap).
struct Payload {
    _argv: Vec<CString>,
    _argv_p: Vec<*const libc::c_char>,
    _env: Vec<CString>,
    _env_p: Vec<*const libc::c_char>,
    _sh_argv: Vec<*const libc::c_char>,
    _plan: Option<Box<super::privileges::Plan>>,
    /// From `Box::into_raw` (the child holds a raw pointer to it: a `Box` moved around here
    /// would claim unique access); freed in Drop.
    args: *mut ChildArgs,
    /// Taken out (to be used again, see [`InFlight::spare`]) when the payload is done with.
    stack: Option<Stack>,
}

impl Drop for Payload {
    fn drop(&mut self) {
        // SAFETY: made by Box::into_raw in `spawn`, freed once, here; the child no longer
        // reads it (a payload is dropped only then: see `Record`).
        drop(unsafe { Box::from_raw(self.args) });
    }
}

/// One child that has not been reaped yet.
struct Record {
    shared: SharedPage,
    /// Whether the child shares our memory (`CLONE_VM`); false in the fork-like fallback,
    /// where it has copies of everything but the shared page.
    shares_memory: bool,
    payload: Option<Payload>,
    /// The program as the job names it, and where the child looked, for the messages.
    program: String,
    candidates: Vec<CString>,
    _candidates_p: Vec<*const libc::c_char>,
    plan: Option<super::privileges::Plan>,
}

impl Record {
    /// Whether the child still uses our memory (has neither exec'd nor exited).
    fn in_use(&self) -> bool {
        self.shares_memory && self.shared.tid.load(Ordering::Acquire) != 0
    }
}

/// The children spawned and not yet reaped, with what each may still use of pilot's memory.
/// Owned by the supervisor (the one reaper); bounded by the processes pilot runs (a job has
/// one process, a check one at a time).
#[derive(Default)]
pub struct InFlight {
    /// By pid. A list, not a map: a few entries (one per running process), scanned at each
    /// spawn and reap anyway, and no second hash table's code in the binary.
    records: Vec<(i32, Record)>,
    /// Stacks and report pages of children that are done with them, used again by the next
    /// spawns: a health check every few seconds would otherwise map, fault in and unmap both
    /// each time (about a tenth of pilot's own CPU per check). At most [`SPARES`] of each.
    spare_stacks: Vec<Stack>,
    spare_pages: Vec<SharedPage>,
}

/// How many stacks and report pages are kept for reuse: a check and a job or two starting
/// at once; more would hold memory a quiet pilot does not need.
const SPARES: usize = 2;

impl InFlight {
    /// Free the stacks and arguments of children that have exec'd (or exited): called at
    /// each spawn and reap, and by the supervisor before it waits (a few atomic loads).
    pub fn prune(&mut self) {
        for (_, r) in self.records.iter_mut() {
            if r.payload.is_some() && !r.in_use() {
                Self::spare_stack(&mut self.spare_stacks, r.payload.take());
                // Done with our memory and no failure left (the child stores its step before
                // it exits): it exec'd, or a signal ended it; either way no message will name
                // a candidate. A job runs for days: its list (one string per PATH entry, MBs
                // for a PATH of tens of thousands) must not stay with it.
                if r.shared.step.load(Ordering::Acquire) == 0 {
                    r._candidates_p = Vec::new();
                    r.candidates = Vec::new();
                }
            }
        }
    }

    /// Keep the stack of a payload nobody uses any more for the next spawn (or unmap it, past
    /// [`SPARES`]); the payload's arguments are freed.
    fn spare_stack(spares: &mut Vec<Stack>, payload: Option<Payload>) {
        if let Some(stack) = payload.and_then(|mut p| p.stack.take())
            && spares.len() < SPARES
        {
            spares.push(stack);
        }
    }

    /// A stack for the next child: a spare one, else a new mapping.
    fn stack(&mut self) -> std::io::Result<Stack> {
        self.spare_stacks.pop().map_or_else(Stack::new, Ok)
    }

    /// A report page for the next child, as new: a spare one reset, else a new mapping.
    fn page(&mut self) -> std::io::Result<SharedPage> {
        match self.spare_pages.pop() {
            Some(page) => {
                page.reset();
                Ok(page)
            }
            None => SharedPage::new(),
        }
    }

    /// How many children are recorded (for tests and the debug log).
    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// `pid` was reaped: forget it, and say why it never ran its program, if it did not.
    pub fn reaped(&mut self, pid: i32) -> Option<SpawnError> {
        let at = self.records.iter().position(|(p, _)| *p == pid)?;
        let (_, mut r) = self.records.swap_remove(at);
        self.prune();
        // Reaped: the child is gone, whatever it did with our memory (also when the kernel
        // never cleared `tid`: set_tid_address refused by a filter).
        Self::spare_stack(&mut self.spare_stacks, r.payload.take());
        let failure = self.failure(pid, &r);
        if self.spare_pages.len() < SPARES {
            self.spare_pages.push(r.shared);
        }
        failure
    }

    /// Why the reaped child `pid` (record `r`) never ran its program, if it did not.
    fn failure(&self, pid: i32, r: &Record) -> Option<SpawnError> {
        let step = r.shared.step.load(Ordering::Acquire);
        let step = Step::ALL.into_iter().find(|s| *s as u32 == step)?;
        let detail = r.shared.detail.load(Ordering::Relaxed);
        let errno = r.shared.errno.load(Ordering::Relaxed);
        let head_len = (r.shared.head_len.load(Ordering::Relaxed) as usize).min(HEAD);
        // SAFETY: the child is gone (reaped): nothing writes `head` any more.
        let head: &[u8; HEAD] = unsafe { &*r.shared.head.get() };
        let head = &head[..head_len];
        let candidate = |i: u32| {
            r.candidates.get(i as usize).map(|c| c.to_string_lossy().into_owned()).unwrap_or_else(|| r.program.clone())
        };
        let kind = std::io::Error::from_raw_os_error(errno).kind();
        let error = |message: String, code: i32| Some(SpawnError { pid: Some(pid), message, code, kind });
        match step {
            Step::NotFound => error(format!("{}: command not found", r.program), 127),
            // Not its `#!` interpreter, not the job's user: the file system of the file itself.
            Step::Noexec => {
                let program = candidate(detail);
                let text = format!("{}: its file system is mounted noexec", errno_text(errno));
                error(format!("cannot execute {program}: {text}"), 126)
            }
            Step::NotExecutable => {
                let why = match r.plan.as_ref() {
                    Some(plan) => super::privileges::exec_denied(plan),
                    None => "not an executable file".to_string(),
                };
                error(format!("{}: permission denied ({why})", candidate(detail)), 126)
            }
            Step::Privileges => {
                let plan = r.plan.as_ref();
                let text = match (plan, super::privileges::Failure::from_code(detail, errno)) {
                    (Some(plan), Some(f)) => f.describe(plan),
                    _ => format!("{} failed: {}", step.describe(), errno_text(errno)),
                };
                error(format!("cannot execute {}: {text}", r.program), 126)
            }
            Step::Execve | Step::ExecveShell => {
                let program = candidate(detail);
                // As the job's user, EACCES is most likely about that user's permissions, not
                // about the interpreter `exec_failure` would name.
                if let (Some(plan), libc::EACCES) = (r.plan.as_ref(), errno) {
                    let text = format!("EACCES: permission denied ({})", super::privileges::exec_denied(plan));
                    return error(format!("cannot execute {program}: {text}"), 126);
                }
                let (text, code) = exec_failure(&program, step, errno, head);
                error(format!("cannot execute {program}: {text}"), code)
            }
            other => {
                error(format!("cannot execute {}: {} failed: {}", r.program, other.describe(), errno_text(errno)), 126)
            }
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        // A child that has not exec'd yet (pilot is ending with it stuck in a lookup) still
        // runs on its stack and reads its arguments: leave them to it.
        for (_, r) in self.records.drain(..) {
            if r.in_use() {
                std::mem::forget(r);
            }
        }
    }
}

/// Everything the child gets: raw pointers into its `Record`, which outlives its use.
struct ChildArgs {
    shared: *const Shared,
    candidates: *const *const libc::c_char,
    n_candidates: usize,
    argv: *const *const libc::c_char,
    env: *const *const libc::c_char,
    /// `/bin/sh CANDIDATE ARGS...`: the child writes the candidate into slot 1.
    sh_argv: *mut *const libc::c_char,
    /// -1: inherit.
    fds: [RawFd; 3],
    null_stdin: bool,
    take_tty: bool,
    mask: libc::sigset_t,
    /// The signals the child puts back to their default action (`signals::handled`).
    handled: u64,
    nofile: Option<libc::rlimit>,
    plan: *const super::privileges::Plan,
}

/// Start `spec`'s process. Returns its pid as soon as it exists: whether its program ran is
/// known when it is reaped ([`InFlight::reaped`]). An error here is one found before the
/// clone (a NUL in an argument, no memory, no process left).
pub fn spawn(spec: &Spec, inherited: &Inherited, inflight: &mut InFlight) -> Result<i32, SpawnError> {
    inflight.prune();
    let program = spec.program;
    if program.is_empty() {
        return Err(SpawnError {
            pid: None,
            message: "empty command".into(),
            code: 127,
            kind: std::io::ErrorKind::NotFound,
        });
    }
    // Everything the child needs is built before the clone: the child shares our memory and
    // may only make raw system calls (no allocation, no locks, no libc).
    let candidates =
        candidates(program, spec.path).iter().map(|c| cstring(program, c)).collect::<Result<Vec<_>, _>>()?;
    let candidates_p: Vec<*const libc::c_char> = candidates.iter().map(|c| c.as_ptr()).collect();
    let argv = spec.argv.iter().map(|a| cstring(program, a)).collect::<Result<Vec<_>, _>>()?;
    let env = spec.env.iter().map(|(k, v)| cstring(program, &format!("{k}={v}"))).collect::<Result<Vec<_>, _>>()?;
    let mut argv_p: Vec<*const libc::c_char> = argv.iter().map(|c| c.as_ptr()).collect();
    argv_p.push(std::ptr::null());
    let mut env_p: Vec<*const libc::c_char> = env.iter().map(|c| c.as_ptr()).collect();
    env_p.push(std::ptr::null());
    // For a script without `#!` (execve gives ENOEXEC): `/bin/sh SCRIPT ARGS...`, as
    // execvp and tini do; slot 1 is the candidate that gave ENOEXEC.
    let mut sh_argv: Vec<*const libc::c_char> = vec![c"/bin/sh".as_ptr(), std::ptr::null()];
    sh_argv.extend(argv_p.iter().skip(1).copied());
    if sh_argv.last() != Some(&std::ptr::null()) {
        sh_argv.push(std::ptr::null());
    }
    let fds = [&spec.stdin, &spec.stdout, &spec.stderr].map(|s| match s {
        Stdio::Inherit | Stdio::Null => -1,
        Stdio::Fd(fd) => *fd,
    });
    let plan = spec.privileges.map(|p| Box::new(p.clone()));
    let stack = inflight.stack().map_err(|e| SpawnError::before_clone(program, e))?;
    let shared = inflight.page().map_err(|e| SpawnError::before_clone(program, e))?;
    let args = Box::new(ChildArgs {
        shared: shared.ptr,
        candidates: candidates_p.as_ptr(),
        n_candidates: candidates_p.len(),
        argv: argv_p.as_ptr(),
        env: env_p.as_ptr(),
        sh_argv: sh_argv.as_mut_ptr(),
        fds,
        null_stdin: matches!(spec.stdin, Stdio::Null),
        // Not checked with isatty here: that is an ioctl on whatever fd 0 is, and the child's
        // tcsetpgrp ignores ENOTTY anyway.
        take_tty: spec.foreground,
        mask: inherited.mask,
        handled: super::signals::handled(),
        nofile: super::nofile::original(),
        plan: plan.as_deref().map_or(std::ptr::null(), |p| p as *const _),
    });
    let args_ptr: *mut ChildArgs = Box::into_raw(args);
    let top = stack.top();

    // SAFETY: clone with CLONE_VM: the child runs `child_entry` on `stack` in our address
    // space, concurrently with this thread. Everything it reads or writes (`args`, the
    // vectors it points into, `shared`, `stack`) is memory owned by the `Record` made below,
    // which is not freed while the child uses it: the payload only once the kernel has
    // cleared `shared.tid` (set_tid_address in the child: at its execve or exit), the rest at
    // reap, and never if pilot drops the record while the child still runs (see `InFlight`'s
    // Drop). The child makes raw system calls only, allocates nothing, takes no lock and
    // never returns (see `child`). SIGCHLD as the exit signal: the supervisor reaps it.
    let mut shares_memory = true;
    #[cfg(test)]
    let fork_like = FORK_LIKE.get();
    #[cfg(not(test))]
    let fork_like = false;
    let mut pid = if fork_like {
        -1
    } else {
        // SAFETY: see above.
        unsafe { libc::clone(child_entry, top, libc::CLONE_VM | libc::SIGCHLD, args_ptr.cast()) }
    };
    // Refusals of CLONE_VM itself, not a lack of memory or processes (ENOMEM, EAGAIN: the
    // fork-like clone would fail the same way, and is not tried).
    let refused = |e: Option<i32>| matches!(e, Some(libc::EINVAL | libc::EPERM | libc::EACCES | libc::ENOSYS));
    if fork_like || (pid < 0 && refused(std::io::Error::last_os_error().raw_os_error())) {
        // CLONE_VM without CLONE_THREAD refused: qemu-user (how the aarch64 build is tested)
        // allows CLONE_VM for threads only (EINVAL), and a seccomp filter may too, with the
        // errno it was written with: EPERM, the usual one (libseccomp's and the container
        // runtimes' default), EACCES or ENOSYS. Then a fork-like
        // clone: the child runs the same code on copies of everything, and its report still
        // reaches us through the MAP_SHARED page.
        shares_memory = false;
        if !fork_like && !FELL_BACK.swap(true, Ordering::Relaxed) {
            log::debug!("clone(CLONE_VM) refused: processes start fork-like (a page-table copy each)");
        }
        // SAFETY: as above, but the child has its own copy of our memory (no CLONE_VM): it
        // cannot touch ours except the shared page, which lives until it is reaped.
        pid = unsafe { libc::clone(child_entry, top, libc::SIGCHLD, args_ptr.cast()) };
    }
    if pid < 0 {
        let error = std::io::Error::last_os_error();
        // No child: nothing uses the payload.
        // SAFETY: from Box::into_raw above, not shared with anyone.
        drop(unsafe { Box::from_raw(args_ptr) });
        return Err(SpawnError::before_clone(program, error));
    }
    // The child sets its own process group too; whichever comes first wins, and a group
    // signal sent right after spawn cannot miss (the classic race of job-control shells).
    // EACCES (it has exec'd already) and ESRCH (gone) are fine.
    // SAFETY: setpgid takes plain integers.
    unsafe { libc::setpgid(pid, pid) };
    let payload = Payload {
        _argv: argv,
        _argv_p: argv_p,
        _env: env,
        _env_p: env_p,
        _sh_argv: sh_argv,
        _plan: plan,
        args: args_ptr,
        stack: Some(stack),
    };
    let plan = spec.privileges.cloned();
    let record = Record {
        shared,
        shares_memory,
        // A child with its own copy of our memory needs none of ours.
        payload: shares_memory.then_some(payload),
        program: program.to_string(),
        candidates,
        _candidates_p: candidates_p,
        plan,
    };
    inflight.records.push((pid, record));
    Ok(pid)
}

/// Whether the fork-like fallback was logged already (once per pilot).
static FELL_BACK: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

#[cfg(test)]
thread_local! {
    /// Tests: spawn as the fallback does, fork-like (both ways must give the same results).
    /// Per thread, so the other tests running at the same time keep spawning with CLONE_VM.
    static FORK_LIKE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

extern "C" fn child_entry(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the `ChildArgs` `spawn` passed to clone, alive while we use it; we
    // are the child of that clone (see `child`).
    unsafe {
        let args = &*(arg as *const ChildArgs);
        child(args)
    }
}

/// Leave the step, its detail and errno for the parent and exit (127 for ENOENT and
/// NotFound, else 126).
///
/// # Safety
/// Only for the child of `spawn`: stores to the shared record, then exit_group.
unsafe fn fail(args: &ChildArgs, step: Step, detail: u32, errno: i32) -> ! {
    // SAFETY: `shared` lives until we are reaped; atomics.
    let shared = unsafe { &*args.shared };
    shared.detail.store(detail, Ordering::Relaxed);
    shared.errno.store(errno, Ordering::Relaxed);
    shared.step.store(step as u32, Ordering::Release);
    // A full barrier (one instruction): the step is visible before the kernel's clear of
    // `tid` at our exit, which `InFlight::prune` takes as "no failure left" when it sees
    // step 0 (a release store alone does not order the later store on aarch64).
    std::sync::atomic::fence(Ordering::SeqCst);
    let code = if errno == libc::ENOENT || step == Step::NotFound { 127 } else { 126 };
    // SAFETY: exit_group ends this process (the child alone: it has its own thread group).
    unsafe {
        let _ = sys!(libc::SYS_exit_group, code);
    }
    #[allow(clippy::empty_loop)]
    loop {}
}

/// What a path is, for the lookup: execve's error alone cannot tell "no such file" from "its
/// interpreter is missing" (both ENOENT).
enum Kind {
    /// A regular file with an execute bit: execve's error about it is final.
    Runnable,
    /// There, but a directory or without an execute bit: remembered, the search goes on.
    NotRunnable,
    Missing,
}

/// # Safety
/// Only in the child: one raw stat on a path prepared before the clone.
unsafe fn kind(path: *const libc::c_char) -> Kind {
    // SAFETY: an all-zero stat is a valid value; newfstatat writes it.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: a valid C string and a valid stat buffer.
    match unsafe { sys!(libc::SYS_newfstatat, libc::AT_FDCWD, path, &mut st as *mut libc::stat, 0) } {
        Err(_) => Kind::Missing,
        Ok(_) if st.st_mode & libc::S_IFMT == libc::S_IFREG && st.st_mode & 0o111 != 0 => Kind::Runnable,
        Ok(_) => Kind::NotRunnable,
    }
}

/// Whether `path`'s file system is mounted `noexec` (execve's EACCES is then about the file
/// itself, not its `#!` interpreter).
///
/// # Safety
/// Only in the child: one raw statfs on a path prepared before the clone.
unsafe fn noexec(path: *const libc::c_char) -> bool {
    // The kernel's struct statfs on 64-bit targets: 15 words (fsid is two ints), `f_flags`
    // the 11th (the libc crate does not expose it).
    let mut st = [0u64; 16];
    // SAFETY: a valid C string and a buffer larger than the kernel's struct statfs.
    let ok = unsafe { sys!(libc::SYS_statfs, path, st.as_mut_ptr()) }.is_ok();
    ok && st[10] & libc::ST_NOEXEC != 0
}

/// Whether the bytes [`read_head`] left are a binary's, not a script's: the ELF magic, or a
/// NUL before the first newline in the first 80 bytes (bash's test).
///
/// # Safety
/// Only in the child, after `read_head`: reads the record's buffer, which only it writes.
unsafe fn binary_head(args: &ChildArgs) -> bool {
    // SAFETY: `shared` lives until we are reaped; `head` was written by this child only.
    let (head, len) = unsafe {
        let shared = &*args.shared;
        (&*shared.head.get(), (shared.head_len.load(Ordering::Relaxed) as usize).min(HEAD))
    };
    let head = &head[..len];
    let first_line = head[..len.min(80)].split(|b| *b == b'\n').next().unwrap_or_default();
    head.starts_with(b"\x7fELF") || first_line.contains(&0)
}

/// Read the first bytes of `path` into the shared record, for the parent's diagnosis: with
/// `O_NONBLOCK` (a FIFO swapped in must not block), and only from a regular file.
///
/// # Safety
/// Only in the child: raw open, fstat, read, close into the record's buffer.
unsafe fn read_head(args: &ChildArgs, path: *const libc::c_char) {
    // SAFETY: `shared` lives until we are reaped; only the child writes `head`, before it
    // publishes `step`.
    unsafe {
        let shared = &*args.shared;
        let flags = libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC;
        let Ok(fd) = sys!(libc::SYS_openat, libc::AT_FDCWD, path, flags, 0) else { return };
        let mut st: libc::stat = std::mem::zeroed();
        if sys!(libc::SYS_fstat, fd, &mut st as *mut libc::stat).is_ok() && st.st_mode & libc::S_IFMT == libc::S_IFREG {
            let head = shared.head.get() as *mut u8;
            let mut n = 0;
            while n < HEAD {
                match sys!(libc::SYS_read, fd, head.add(n), HEAD - n) {
                    Ok(0) | Err(_) => break,
                    Ok(k) => n += k,
                }
            }
            shared.head_len.store(n as u32, Ordering::Relaxed);
        }
        let _ = sys!(libc::SYS_close, fd);
    }
}

/// The child: default signal actions, own process group, the terminal for the payload, the
/// three standard descriptors, the job's identity, the original RLIMIT_NOFILE, the inherited
/// mask, then execve on each candidate as execvpe does. Every call is checked and a failure
/// is reported with its step.
///
/// # Safety
/// Only for the child of `spawn`, which shares pilot's memory and the supervisor thread's
/// thread-local storage while that thread runs on: makes raw system calls only (no libc
/// function, no errno), allocates nothing, takes no lock, writes no memory but its own stack,
/// slot 1 of `sh_argv` and the shared record, and never returns. (Its descriptor table and
/// signal actions are its own copies: no CLONE_FILES or CLONE_SIGHAND.)
unsafe fn child(args: &ChildArgs) -> ! {
    // SAFETY: raw system calls on memory prepared before the clone (see above).
    unsafe {
        // Have the kernel clear `tid` (and wake a futex on it) when this child stops using
        // our memory, at its execve or exit: what CLONE_CHILD_CLEARTID does, asked for here
        // because musl's clone() refuses that flag (EINVAL, no system call) and the fallback
        // would then be taken every time. Never fails; before it, `tid` reads -1 (in use).
        let _ = sys!(libc::SYS_set_tid_address, (*args.shared).tid.as_ptr());
        // Then: no handler of pilot's may run here (a fault would otherwise run pilot's
        // handler on the supervisor thread's alternate stack).
        if let Err(e) = super::signals::defaults_in_child(args.handled) {
            fail(args, Step::SignalDefaults, 0, e);
        }
        if let Err(e) = sys!(libc::SYS_setpgid, 0, 0) {
            fail(args, Step::Setpgid, 0, e);
        }
        // SIGTTOU is still blocked here, so this works from a background group. No terminal
        // (ENOTTY) or a hung-up one (ENXIO) is no reason not to run, as in tini.
        if args.take_tty {
            let pid = sys!(libc::SYS_getpid).unwrap_or(0) as libc::pid_t;
            if let Err(e) = sys!(libc::SYS_ioctl, 0, libc::TIOCSPGRP, &pid as *const libc::pid_t)
                && e != libc::ENOTTY
                && e != libc::ENXIO
            {
                fail(args, Step::Tcsetpgrp, 0, e);
            }
        }
        let mut fds = args.fds;
        if args.null_stdin {
            match sys!(libc::SYS_openat, libc::AT_FDCWD, c"/dev/null".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC, 0) {
                Ok(fd) => fds[0] = fd as RawFd,
                Err(e) => fail(args, Step::DevNull, 0, e),
            }
        }
        // A source descriptor that is itself 0, 1 or 2 (pilot was started with one of them
        // closed) would be overwritten by an earlier dup: move such descriptors above 2 first.
        for fd in fds.iter_mut() {
            if (0..3).contains(fd) {
                match sys!(libc::SYS_fcntl, *fd, libc::F_DUPFD_CLOEXEC, 3) {
                    Ok(moved) => *fd = moved as RawFd,
                    Err(e) => fail(args, Step::Relocate, 0, e),
                }
            }
        }
        for (target, fd) in fds.iter().enumerate() {
            // dup3 (aarch64 has no dup2); the source is never the target (moved above).
            if *fd >= 0
                && let Err(e) = sys!(libc::SYS_dup3, *fd, target, 0)
            {
                fail(args, Step::dup(target), 0, e);
            }
        }
        // The job's identity (issue 15): raw setgroups, setresgid, setresuid, capset, prctl.
        if !args.plan.is_null()
            && let Err(f) = super::privileges::apply_in_child(&*args.plan)
        {
            fail(args, Step::Privileges, f.code(), f.errno);
        }
        if let Some(lim) = &args.nofile
            && let Err(e) = sys!(libc::SYS_prlimit64, 0, libc::RLIMIT_NOFILE, lim as *const libc::rlimit, 0)
        {
            fail(args, Step::Nofile, 0, e);
        }
        if let Err(e) = super::signals::restore_mask_in_child(&Inherited { mask: args.mask }) {
            fail(args, Step::Mask, 0, e);
        }
        // The lookup, as execvpe: ENOEXEC → /bin/sh; a missing candidate → the next; one
        // that is there but not an executable file → remembered, the next; any other failure
        // of an executable file is final (its interpreter or loader is missing, E2BIG, ...).
        let mut not_runnable: Option<u32> = None;
        for i in 0..args.n_candidates {
            let path = *args.candidates.add(i);
            let e = match sys!(libc::SYS_execve, path, args.argv, args.env) {
                Err(e) => e,
                Ok(_) => libc::EINVAL, // execve does not return on success
            };
            if e == libc::ENOEXEC {
                // A binary (an ELF for another machine: an image of the wrong architecture)
                // is no script: /bin/sh would run its bytes as commands ("ELF...: not found",
                // 127). Tested as bash does: the ELF magic, or a NUL in the first line.
                read_head(args, path);
                if binary_head(args) {
                    fail(args, Step::Execve, i as u32, e);
                }
                *args.sh_argv.add(1) = path;
                let e = sys!(libc::SYS_execve, c"/bin/sh".as_ptr(), args.sh_argv, args.env).err().unwrap_or(0);
                fail(args, Step::ExecveShell, i as u32, e);
            }
            match kind(path) {
                Kind::Runnable => {
                    if e == libc::EACCES && noexec(path) {
                        fail(args, Step::Noexec, i as u32, e);
                    }
                    if e == libc::ENOENT || e == libc::EACCES {
                        read_head(args, path);
                    }
                    fail(args, Step::Execve, i as u32, e);
                }
                Kind::NotRunnable => {
                    not_runnable.get_or_insert(i as u32);
                }
                // execvpe's rule: EACCES on a path that cannot even be stat'ed (a directory on
                // the way the job's user may not search) is remembered as well.
                Kind::Missing if e == libc::EACCES => {
                    not_runnable.get_or_insert(i as u32);
                }
                Kind::Missing => {}
            }
        }
        match not_runnable {
            Some(i) => fail(args, Step::NotExecutable, i, libc::EACCES),
            None => fail(args, Step::NotFound, 0, libc::ENOENT),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reap(pid: i32) -> i32 {
        let mut status = 0;
        // SAFETY: waitpid writes one int through a valid pointer.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        libc::WEXITSTATUS(status)
    }

    fn inherited() -> Inherited {
        // SAFETY: an all-zero sigset_t is a valid (empty) set.
        Inherited { mask: unsafe { std::mem::zeroed() } }
    }

    fn spec<'a>(program: &'a str, argv: &'a [String]) -> Spec<'a> {
        Spec {
            program,
            path: Some("/nonexistent:/usr/bin:/bin"),
            argv,
            env: &[],
            stdin: Stdio::Null,
            stdout: Stdio::Inherit,
            stderr: Stdio::Inherit,
            foreground: false,
            privileges: None,
        }
    }

    #[test]
    fn a_failing_dup2_is_reported_with_its_step_and_errno() {
        let argv = ["true".to_string()];
        // No such descriptor: dup2 gives EBADF.
        let spec = Spec { stdout: Stdio::Fd(1_000_000), ..spec("/bin/true", &argv) };
        let mut inflight = InFlight::default();
        let pid = spawn(&spec, &inherited(), &mut inflight).unwrap();
        assert_eq!(reap(pid), 126);
        let e = inflight.reaped(pid).expect("a failure was left");
        assert_eq!(e.exit_code(), 126);
        // The errno's name and description, each once.
        assert_eq!(
            e.message,
            "cannot execute /bin/true: dup2 of stdout failed: EBADF: Bad file descriptor (os error 9)"
        );
        assert!(inflight.is_empty());
    }

    #[test]
    fn the_child_searches_path_as_execvp_does() {
        let mut inflight = InFlight::default();
        let argv = ["true".to_string()];
        let pid = spawn(&spec("true", &argv), &inherited(), &mut inflight).unwrap();
        assert_eq!(reap(pid), 0);
        assert!(inflight.reaped(pid).is_none(), "it ran");

        let argv = ["no-such-program-xyz".to_string()];
        let pid = spawn(&spec("no-such-program-xyz", &argv), &inherited(), &mut inflight).unwrap();
        assert_eq!(reap(pid), 127);
        let e = inflight.reaped(pid).unwrap();
        assert_eq!((e.code, e.message.as_str()), (127, "no-such-program-xyz: command not found"));

        let argv = ["/etc".to_string()];
        let pid = spawn(&spec("/etc", &argv), &inherited(), &mut inflight).unwrap();
        assert_eq!(reap(pid), 126);
        let e = inflight.reaped(pid).unwrap();
        assert_eq!((e.code, e.message.as_str()), (126, "/etc: permission denied (not an executable file)"));
    }

    #[test]
    fn a_missing_interpreter_is_named_from_the_bytes_the_child_read() {
        let dir = std::env::temp_dir().join(format!("pilot-spawn-interp-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let script = dir.join("s");
        std::fs::write(&script, "#!/nonexistent/interp -x\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let s = script.display().to_string();
        let argv = [s.clone()];
        let mut inflight = InFlight::default();
        let pid = spawn(&spec(&s, &argv), &inherited(), &mut inflight).unwrap();
        assert_eq!(reap(pid), 127);
        let e = inflight.reaped(pid).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(e.message, format!("cannot execute {s}: interpreter /nonexistent/interp of {s} not found"));
    }

    #[test]
    fn what_a_program_needs_is_read_from_its_first_bytes() {
        assert!(matches!(needs(b""), Needs::Nothing));
        assert!(matches!(needs(b"#!/bin/sh -e\nx"), Needs::Interpreter(i) if i == "/bin/sh"));
        assert!(matches!(needs(b"\x7fELF\x02"), Needs::Elf));
    }

    #[test]
    fn candidates_are_computed_without_the_file_system() {
        assert_eq!(candidates("a/b", Some("/x")), ["a/b"]);
        assert_eq!(candidates("sh", Some("/x/::/y")), ["/x/sh", "./sh", "/y/sh"]);
        assert_eq!(candidates("sh", None), ["/usr/local/bin/sh", "/usr/bin/sh", "/bin/sh"]);
    }

    #[test]
    fn the_stack_and_arguments_are_freed_once_the_child_has_execd() {
        let argv = ["sleep".to_string(), "5".to_string()];
        let mut inflight = InFlight::default();
        let pid = spawn(&spec("sleep", &argv), &inherited(), &mut inflight).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            inflight.prune();
            if inflight.records.iter().all(|(_, r)| r.payload.is_none()) {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "the child never released our memory");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        // SAFETY: kill takes plain integers.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        let mut status = 0;
        // SAFETY: waitpid writes one int through a valid pointer.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert!(libc::WIFSIGNALED(status), "it ran sleep until killed");
        assert!(inflight.reaped(pid).is_none(), "no failure: it exec'd");
        assert!(inflight.is_empty());
    }

    /// A check every few seconds reuses the stack and report page of the one before: the
    /// same mappings come back, and a failure left in a page is never read for the next child.
    #[test]
    fn stacks_and_report_pages_are_used_again_and_start_clean() {
        let mut inflight = InFlight::default();
        let run = |program: &str, inflight: &mut InFlight| {
            let argv = [program.to_string()];
            let pid = spawn(&spec(program, &argv), &inherited(), inflight).unwrap();
            let (stack, page) = {
                let r = &inflight.records.last().unwrap().1;
                (r.payload.as_ref().and_then(|p| p.stack.as_ref()).map(|s| s.base as usize), r.shared.ptr as usize)
            };
            reap(pid);
            (inflight.reaped(pid), stack, page)
        };
        let (failed, stack1, page1) = run("no-such-program-anywhere", &mut inflight);
        assert!(failed.is_some_and(|e| e.code == 127), "the first one fails");
        assert_eq!((inflight.spare_stacks.len(), inflight.spare_pages.len()), (1, 1));
        let (ok, stack2, page2) = run("true", &mut inflight);
        assert!(ok.is_none(), "the next child's report starts clean: {:?}", ok.map(|e| e.message));
        assert_eq!((stack2, page2), (stack1, page1), "the same stack and page were used again");
        // Never more spares than SPARES, however many children ended at once.
        let argv = ["true".to_string()];
        let pids: Vec<i32> =
            (0..5).map(|_| spawn(&spec("true", &argv), &inherited(), &mut inflight).unwrap()).collect();
        for pid in pids {
            reap(pid);
            assert!(inflight.reaped(pid).is_none());
        }
        assert!(inflight.spare_stacks.len() <= SPARES && inflight.spare_pages.len() <= SPARES);
    }

    /// Many children at once, each with its own record: every one runs or reports, none
    /// reads another's arguments.
    #[test]
    fn a_burst_of_spawns_keeps_each_childs_arguments() {
        let mut inflight = InFlight::default();
        let mut pids = Vec::new();
        for i in 0..100 {
            let argv = ["sh".to_string(), "-c".to_string(), format!("exit {}", i % 50)];
            pids.push((spawn(&spec("sh", &argv), &inherited(), &mut inflight).unwrap(), i % 50));
        }
        for (pid, code) in pids {
            assert_eq!(reap(pid), code);
            assert!(inflight.reaped(pid).is_none());
        }
        assert!(inflight.is_empty());
    }

    /// Where CLONE_VM without CLONE_THREAD is refused (qemu-user, which runs the aarch64
    /// tests), the fork-like fallback reports the same successes and failures.
    #[test]
    fn the_fork_like_fallback_reports_the_same() {
        FORK_LIKE.set(true);
        let mut inflight = InFlight::default();
        let argv = ["true".to_string()];
        let ok = spawn(&spec("true", &argv), &inherited(), &mut inflight).unwrap();
        let bad_fd = Spec { stdout: Stdio::Fd(1_000_000), ..spec("/bin/true", &argv) };
        let bad_fd = spawn(&bad_fd, &inherited(), &mut inflight).unwrap();
        let argv = ["no-such-program-xyz".to_string()];
        let missing = spawn(&spec("no-such-program-xyz", &argv), &inherited(), &mut inflight).unwrap();
        FORK_LIKE.set(false);
        assert!(inflight.records.iter().all(|(_, r)| !r.shares_memory && r.payload.is_none()));
        assert_eq!(reap(ok), 0);
        assert!(inflight.reaped(ok).is_none());
        assert_eq!(reap(bad_fd), 126);
        assert!(inflight.reaped(bad_fd).unwrap().message.contains("dup2 of stdout failed: EBADF"));
        assert_eq!(reap(missing), 127);
        assert_eq!(inflight.reaped(missing).unwrap().message, "no-such-program-xyz: command not found");
    }

    #[test]
    fn a_nul_in_an_argument_fails_before_the_clone() {
        let argv = ["a\0b".to_string()];
        let mut inflight = InFlight::default();
        let e = spawn(&spec("/bin/true", &argv), &inherited(), &mut inflight).unwrap_err();
        assert!(e.pid.is_none() && e.to_string().contains("NUL"), "{e}");
        assert!(inflight.is_empty());
    }
}
