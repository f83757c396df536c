//! The init layer: everything that touches signals, process creation and reaping. All of
//! pilot's `unsafe` code and raw libc calls live here, each with a `SAFETY:` note.

pub mod alloc;
pub mod nofile;
pub mod privileges;
pub mod signals;
pub mod spawn;
pub(crate) mod sys;
pub mod trim;
pub mod wait;

use log::debug;

/// How a process ended, as `waitpid` reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    Code(i32),
    Signaled(i32),
}

impl ExitStatus {
    /// The shell convention pilot exits with: the code, or 128+signal.
    pub fn as_shell_code(self) -> i32 {
        match self {
            ExitStatus::Code(c) => c,
            ExitStatus::Signaled(s) => 128 + s,
        }
    }

    pub fn success(self) -> bool {
        self == ExitStatus::Code(0)
    }
}

impl std::fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExitStatus::Code(c) => write!(f, "exit status {c}"),
            ExitStatus::Signaled(s) => write!(f, "killed by {}", signals::name(*s)),
        }
    }
}

/// Become the reaper of every orphan below us. As PID 1 the kernel already makes us that;
/// otherwise (Apptainer's default, no PID namespace) ask for `PR_SET_CHILD_SUBREAPER`.
pub fn become_reaper() -> Result<(), String> {
    let pid = std::process::id();
    if pid == 1 {
        debug!("running as PID 1: reaping every orphan in this PID namespace");
        return Ok(());
    }
    // SAFETY: prctl with PR_SET_CHILD_SUBREAPER takes one integer argument and touches no
    // memory of ours.
    let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1 as libc::c_ulong, 0, 0, 0) };
    if rc != 0 {
        return Err(format!("cannot become a child subreaper: {}", std::io::Error::last_os_error()));
    }
    debug!("not PID 1 (pid {pid}): set PR_SET_CHILD_SUBREAPER, so orphans of our jobs are reaped by pilot");
    Ok(())
}

/// Send `sig` to a process, or to its whole process group. ESRCH (already gone) is not an
/// error worth reporting: exits race with signals all the time.
pub fn kill(pid: i32, sig: i32, group: bool) -> bool {
    let target = if group { -pid } else { pid };
    // SAFETY: kill(2) takes plain integers.
    unsafe { libc::kill(target, sig) == 0 }
}

/// Make a child started with `std::process::Command` die (SIGKILL) when the thread that
/// spawned it exits: for helpers such as test agents, which must not outlive a crashed test.
pub fn die_with_parent(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs between fork and exec and only calls prctl, which is
    // async-signal-safe and touches no memory of ours.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0);
            Ok(())
        });
    }
}

/// Signal every process pilot may signal (`kill(-1, sig)`): as PID 1 of a PID namespace,
/// every other process in it, whoever its parent is. Only for the end of a shutdown as
/// PID 1; as a subreaper it would reach the whole machine's processes of our uid.
pub fn kill_everyone(sig: i32) -> bool {
    // SAFETY: kill(2) takes plain integers.
    unsafe { libc::kill(-1, sig) == 0 }
}

/// Whether pilot has any child at all, running or exited but not yet reaped. Asked with
/// `waitid(P_ALL, WEXITED | WNOHANG | WNOWAIT)`, which reaps nothing (the signal thread stays
/// the only reaper) and, unlike the lists in /proc (see proc(5) on `children`), cannot miss
/// a child: ECHILD is the kernel saying there is none.
pub fn has_children() -> bool {
    // SAFETY: siginfo_t is plain data, zeroed is a valid value; waitid writes it.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: waitid with WNOWAIT only reads the children's state and writes `info`.
    let rc = unsafe { libc::waitid(libc::P_ALL, 0, &mut info, libc::WEXITED | libc::WNOHANG | libc::WNOWAIT) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ECHILD)
}

/// Pids of every live process whose parent is `parent` (used at the end of shutdown to find
/// daemons that escaped their job's process group and orphans reparented to pilot).
pub fn children_of(parent: u32) -> Vec<i32> {
    // Fast path: the kernel's list of each thread's children (CONFIG_PROC_CHILDREN), so
    // pilot's exit does not cost a read of every process on a busy worker node.
    if let Some(list) = children_from_tasks(parent) {
        return list.into_iter().filter(|pid| !is_zombie(*pid)).collect();
    }
    children_by_scan(parent)
}

/// `children_of` by reading every /proc/PID/stat: slower, but it does not depend on the
/// `children` files, which may miss children while they fork and exit (proc(5)).
pub fn children_by_scan(parent: u32) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| {
                    // Fields after the ")" that closes comm: state, ppid, ...
                    let rest = s.get(s.rfind(')')? + 2..)?;
                    let mut it = rest.split(' ');
                    let state = it.next()?;
                    let ppid = it.next()?.parse::<u32>().ok()?;
                    Some(ppid == parent && state != "Z")
                })
                .unwrap_or(false)
        })
        .collect()
}

fn children_from_tasks(parent: u32) -> Option<Vec<i32>> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{parent}/task")).ok()?.flatten() {
        let list = std::fs::read_to_string(task.path().join("children")).ok()?;
        out.extend(list.split_whitespace().filter_map(|p| p.parse::<i32>().ok()));
    }
    Some(out)
}

fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.get(s.rfind(')')? + 2..).map(|r| r.starts_with('Z')))
        .unwrap_or(false)
}
