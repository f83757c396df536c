//! A job's identity, applied in the child between fork and exec: supplementary groups, gid,
//! uid, the five capability sets and `no_new_privs`.
//!
//! Everything is decided before fork (`identity` turns the config's `user`, `group`,
//! `capabilities` and `no_new_privs` into a [`Plan`] of plain numbers); the child only makes
//! system calls on it. They are *raw* system calls (`syscall(SYS_setresuid, ..)`), not libc's
//! `setuid`: musl and glibc make those change every thread of the process, through a signal
//! broadcast and locks that are not async-signal-safe in the child of a threaded process (nor
//! in spawn's child, which shares the parent's memory). The kernel keeps credentials per task,
//! so the raw call changes exactly the child, which is what is wanted.
//!
//! # Why every set, and why ambient
//! For a job that keeps capabilities `K` (`capabilities: [...]`), every set ends up `K`:
//! - *bounding*: the ceiling for anything the job ever executes, also set-user-ID programs
//!   and files with capabilities; dropped first, while pilot still has `CAP_SETPCAP`;
//! - *permitted* and *effective*: what the job has;
//! - *inheritable* and *ambient*: what survives `execve`. For a program run as a user other
//!   than root, the kernel computes the new permitted set as
//!   `(inheritable & file inheritable) | (file permitted & bounding) | ambient`, and an
//!   ordinary program file has no file capabilities: **the ambient set is the only way a
//!   non-root program keeps capabilities across exec**. Ambient capabilities must be in both
//!   the permitted and the inheritable set, hence inheritable = `K` too. (For root, exec gives
//!   `inheritable | bounding`, which is `K` as well.)
//!
//! The order matters: the bounding set is dropped while `CAP_SETPCAP` is still effective;
//! groups and gid are set while `CAP_SETGID` is; `PR_SET_KEEPCAPS` keeps the permitted set
//! across the switch to a non-root uid (which clears the effective and ambient sets); then
//! capset and the ambient raises; `no_new_privs` last.

/// What the child does, all decided before fork. `None` leaves that part as pilot has it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// The supplementary groups, exactly (set with setgroups).
    pub groups: Option<Vec<libc::gid_t>>,
    /// The capabilities kept, as a mask of capability numbers: every set becomes this.
    pub keep: Option<u64>,
    pub no_new_privs: bool,
}

/// A step of [`apply_in_child`] that failed; sent through spawn's error pipe with the
/// capability it was about (if any) and the errno.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Step {
    BoundingDrop = 1,
    Setgroups,
    Setgid,
    KeepCaps,
    Setuid,
    Capset,
    AmbientClear,
    AmbientRaise,
    NoNewPrivs,
}

impl Step {
    const ALL: [Step; 9] = [
        Step::BoundingDrop,
        Step::Setgroups,
        Step::Setgid,
        Step::KeepCaps,
        Step::Setuid,
        Step::Capset,
        Step::AmbientClear,
        Step::AmbientRaise,
        Step::NoNewPrivs,
    ];
}

/// A failed step, the capability number it concerned (0 when none) and the errno.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failure {
    pub step: Step,
    pub cap: u8,
    pub errno: i32,
}

impl Failure {
    /// Step and capability packed into 16 bits, for the error pipe.
    pub fn code(self) -> u32 {
        self.step as u32 | (self.cap as u32) << 8
    }

    pub fn from_code(code: u32, errno: i32) -> Option<Failure> {
        let step = Step::ALL.into_iter().find(|s| *s as u32 == code & 0xff)?;
        Some(Failure { step, cap: (code >> 8) as u8, errno })
    }

    /// What failed, for the job's log line: `setuid(1000) failed: EPERM: Operation not
    /// permitted`, and what that usually means here.
    pub fn describe(self, plan: &Plan) -> String {
        let id = |v: Option<u32>| v.map(|v| v.to_string()).unwrap_or_default();
        let what = match self.step {
            Step::BoundingDrop => format!("dropping capability {} from the bounding set (PR_CAPBSET_DROP)", self.cap),
            Step::Setgroups => {
                let groups = plan.groups.as_deref().unwrap_or_default();
                let shown: Vec<String> = groups.iter().take(16).map(|g| g.to_string()).collect();
                let more = if groups.len() > 16 { ",..." } else { "" };
                format!("setgroups([{}{more}])", shown.join(","))
            }
            Step::Setgid => format!("setgid({})", id(plan.gid)),
            Step::KeepCaps => "prctl(PR_SET_KEEPCAPS)".to_string(),
            Step::Setuid => format!("setuid({})", id(plan.uid)),
            Step::Capset => format!("capset (permitted, effective, inheritable = {:#x})", plan.keep.unwrap_or(0)),
            Step::AmbientClear => "clearing the ambient set (PR_CAP_AMBIENT_CLEAR_ALL)".to_string(),
            Step::AmbientRaise => format!("raising capability {} in the ambient set (PR_CAP_AMBIENT_RAISE)", self.cap),
            Step::NoNewPrivs => "prctl(PR_SET_NO_NEW_PRIVS)".to_string(),
        };
        let errno = nix::errno::Errno::from_raw(self.errno);
        let mut msg = format!("{what} failed: {errno:?}: {}", errno.desc());
        if let Some(hint) = self.hint(plan) {
            msg.push_str(&format!(" ({hint})"));
        }
        msg
    }

    /// The usual reason for this errno at this step in a container.
    fn hint(self, plan: &Plan) -> Option<String> {
        let in_userns = || {
            // A full identity map means no user namespace (or one mapping everything).
            std::fs::read_to_string("/proc/self/uid_map")
                .map(|m| !m.split_whitespace().eq(["0", "0", "4294967295"]))
                .unwrap_or(false)
        };
        match (self.step, self.errno) {
            (Step::Setuid, libc::EINVAL) => Some(format!(
                "uid {} is not mapped in pilot's user namespace: see /proc/self/uid_map",
                plan.uid.unwrap_or_default()
            )),
            (Step::Setgid, libc::EINVAL) => Some(format!(
                "gid {} is not mapped in pilot's user namespace: see /proc/self/gid_map",
                plan.gid.unwrap_or_default()
            )),
            (Step::Setgroups, libc::EINVAL) => {
                Some("a group is not mapped in pilot's user namespace: see /proc/self/gid_map".into())
            }
            (Step::Setgroups, libc::EPERM)
                if std::fs::read_to_string("/proc/self/setgroups").is_ok_and(|s| s.trim() == "deny") =>
            {
                Some("setgroups is denied in this user namespace (/proc/self/setgroups is 'deny', as `unshare --map-root-user` sets it): leave out `user` and `group`".into())
            }
            (Step::Setgroups | Step::Setgid, libc::EPERM) => Some("pilot lacks CAP_SETGID".into()),
            (Step::Setuid, libc::EPERM) => Some("pilot lacks CAP_SETUID".into()),
            (Step::BoundingDrop, libc::EPERM) => Some("pilot lacks CAP_SETPCAP".into()),
            (Step::Capset | Step::AmbientRaise, libc::EPERM) => {
                Some("pilot does not have all the capabilities the job is to keep".into())
            }
            (Step::AmbientClear | Step::AmbientRaise, libc::EINVAL) => {
                Some("the kernel has no ambient capabilities (Linux 4.3 or later is needed)".into())
            }
            (_, libc::EPERM) if in_userns() => Some("pilot runs in a user namespace".into()),
            _ => None,
        }
    }
}

/// Why an exec as the job's user may be refused with EACCES where pilot could run it.
pub fn exec_denied(plan: &Plan) -> String {
    match (plan.uid, plan.gid) {
        (Some(uid), gid) => {
            let gid = gid.map(|g| format!(" gid {g}")).unwrap_or_default();
            format!(
                "the job runs as uid {uid}{gid}, which may not read or execute the program, its interpreter, or a directory on the way"
            )
        }
        (None, Some(gid)) => {
            format!("the job runs with gid {gid}, which may lack permission on the program or its interpreter")
        }
        (None, None) => "the job runs without pilot's capabilities, e.g. CAP_DAC_OVERRIDE".to_string(),
    }
}

/// `capset(2)`'s header and data, version 3 (64 capabilities in two 32-bit words).
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// Apply `plan` to the calling task: the only function the spawn child calls here.
///
/// # Safety
/// Only for the spawn child just before execve: makes only raw system calls (`init::sys`:
/// prctl, setgroups, setresgid, setresuid, capset; no libc wrapper, no errno) on memory
/// prepared before the clone, allocates nothing and takes no locks.
pub unsafe fn apply_in_child(plan: &Plan) -> Result<(), Failure> {
    use super::sys::sys;
    let fail = |step, cap: u8, errno: i32| Failure { step, cap, errno };
    let prctl = |op: libc::c_int, a: usize, b: usize| {
        // SAFETY: prctl with integer arguments only.
        unsafe { sys!(libc::SYS_prctl, op, a, b, 0, 0) }
    };
    // SAFETY: each call below is a system call on integers, or on pointers to memory that
    // lives for the whole call (`plan`, a local struct); none allocates or locks.
    unsafe {
        if let Some(keep) = plan.keep {
            // Up to the kernel's last capability: PR_CAPBSET_READ gives EINVAL past it. Only
            // what is in the set is dropped, so a pilot whose bounding set is already small
            // enough needs no CAP_SETPCAP.
            for cap in 0..64u8 {
                let Ok(has) = prctl(libc::PR_CAPBSET_READ, cap as usize, 0) else { break };
                if has == 1 && keep & (1u64 << cap) == 0 {
                    prctl(libc::PR_CAPBSET_DROP, cap as usize, 0).map_err(|e| fail(Step::BoundingDrop, cap, e))?;
                }
            }
        }
        if let Some(groups) = &plan.groups {
            sys!(libc::SYS_setgroups, groups.len(), groups.as_ptr()).map_err(|e| fail(Step::Setgroups, 0, e))?;
        }
        if let Some(gid) = plan.gid {
            sys!(libc::SYS_setresgid, gid, gid, gid).map_err(|e| fail(Step::Setgid, 0, e))?;
        }
        if let Some(uid) = plan.uid {
            // Without KEEPCAPS the switch away from root empties the permitted set, and the
            // capabilities to keep could not be raised again.
            if plan.keep.is_some() {
                prctl(libc::PR_SET_KEEPCAPS, 1, 0).map_err(|e| fail(Step::KeepCaps, 0, e))?;
            }
            sys!(libc::SYS_setresuid, uid, uid, uid).map_err(|e| fail(Step::Setuid, 0, e))?;
        }
        if let Some(keep) = plan.keep {
            let header = CapHeader { version: CAPABILITY_VERSION_3, pid: 0 };
            let word = |shift: u32| (keep >> shift) as u32;
            let data = [
                CapData { effective: word(0), permitted: word(0), inheritable: word(0) },
                CapData { effective: word(32), permitted: word(32), inheritable: word(32) },
            ];
            sys!(libc::SYS_capset, &header as *const CapHeader, data.as_ptr()).map_err(|e| fail(Step::Capset, 0, e))?;
            let ambient = libc::PR_CAP_AMBIENT;
            prctl(ambient, libc::PR_CAP_AMBIENT_CLEAR_ALL as usize, 0).map_err(|e| fail(Step::AmbientClear, 0, e))?;
            for cap in (0..64u8).filter(|c| keep & (1u64 << c) != 0) {
                prctl(ambient, libc::PR_CAP_AMBIENT_RAISE as usize, cap as usize)
                    .map_err(|e| fail(Step::AmbientRaise, cap, e))?;
            }
        }
        if plan.no_new_privs {
            prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0).map_err(|e| fail(Step::NoNewPrivs, 0, e))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_codes_round_trip_and_read_well() {
        let plan = Plan {
            uid: Some(1000),
            gid: Some(100),
            groups: Some(vec![100, 27]),
            keep: Some(1 << 10),
            ..Plan::default()
        };
        for step in Step::ALL {
            let f = Failure { step, cap: 10, errno: libc::EPERM };
            assert_eq!(Failure::from_code(f.code(), libc::EPERM), Some(f));
        }
        let f = Failure { step: Step::Setuid, cap: 0, errno: libc::EPERM };
        assert!(f.describe(&plan).starts_with("setuid(1000) failed: EPERM: "), "{}", f.describe(&plan));
        let f = Failure { step: Step::Setuid, cap: 0, errno: libc::EINVAL };
        assert!(f.describe(&plan).contains("uid 1000 is not mapped"), "{}", f.describe(&plan));
        let f = Failure { step: Step::Setgroups, cap: 0, errno: libc::EPERM };
        assert!(f.describe(&plan).starts_with("setgroups([100,27]) failed: EPERM"), "{}", f.describe(&plan));
        assert_eq!(Failure::from_code(0, 1), None);
    }
}
