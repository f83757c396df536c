//! Who a job runs as: the config's `user`, `group`, `capabilities` and `no_new_privs`
//! (`config::privileges`) resolved into the plain numbers the spawn child applies
//! (`init::privileges::Plan`), and `check-config`'s look at them.
//!
//! Names are looked up in the container's own `/etc/passwd` and `/etc/group`, read when the
//! config is loaded and at each reload (`resolve_config`; not per spawn, see there), as plain
//! files: pilot is a static binary and has no NSS, and a site's LDAP or SSSD on the host is not
//! what the container's jobs should resolve against. The files are read with `fsread` (regular
//! files of bounded size, never a hang on a FIFO), only for jobs that name a user or group.
//!
//! The rules, as `initgroups(3)` and `su` apply them:
//! - `user` by name, or by a uid that has a passwd entry: that uid; the primary group is
//!   `group` if given, else the entry's; the supplementary groups are the primary group plus
//!   every group of `/etc/group` that lists the user's name as a member.
//! - `user` as a uid without a passwd entry: `group` is required (there is no primary group to
//!   take, and Docker's answer, gid 0, would leave the job in root's group); the supplementary
//!   groups are just that group.
//! - `group` alone: pilot's uid, that gid, and that group as the only supplementary group
//!   (pilot's own groups, root's among them, are not passed on).

use crate::config::privileges::{Account, Privileges, Resolved};
use crate::config::{Config, Diagnostic};
use crate::init::privileges::Plan;
use caps::{CapSet, Capability};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// The largest `/etc/passwd` or `/etc/group` read (a site's may list many pool accounts).
const MAX_FILE: u64 = 16 << 20;

/// Where the account files are: the container's `/etc`.
pub fn etc() -> PathBuf {
    PathBuf::from("/etc")
}

/// One line of `/etc/passwd`, the fields used.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PasswdEntry<'a> {
    name: &'a str,
    uid: u32,
    gid: u32,
}

/// One line of `/etc/group`, the fields used; the member list stays text (a hostile file may
/// list millions of members: they are scanned, never collected).
#[derive(Debug, Clone, PartialEq, Eq)]
struct GroupEntry<'a> {
    name: &'a str,
    gid: u32,
    members: &'a str,
}

impl GroupEntry<'_> {
    fn has_member(&self, user: &str) -> bool {
        self.members.split(',').any(|m| same_name(m.trim(), user))
    }
}

/// A uid or gid field. `4294967295` is `(uid_t)-1`, which set*id calls take as "leave
/// unchanged": a line with it is skipped, or a job meant to drop root would keep it.
fn id(field: &str) -> Option<u32> {
    field.trim().parse().ok().filter(|id| *id != u32::MAX)
}

/// The lines that can be entries: comments, blank and NIS (`+`/`-`) lines are skipped, as
/// glibc's files backend does (malformed ones are skipped by the callers).
fn entry_lines(text: &str) -> impl Iterator<Item = &str> {
    text.lines().filter(|l| !l.is_empty() && !l.starts_with(['#', '+', '-']))
}

/// `name:password:uid:gid:...` lines, read as they are needed (nothing is collected).
fn passwd_entries(text: &str) -> impl Iterator<Item = PasswdEntry<'_>> {
    entry_lines(text).filter_map(|line| {
        let mut f = line.split(':');
        let name = f.next()?;
        let _password = f.next()?;
        let uid = id(f.next()?)?;
        let gid = id(f.next()?)?;
        (!name.is_empty()).then_some(PasswdEntry { name, uid, gid })
    })
}

/// `name:password:gid:member,member` lines.
fn group_entries(text: &str) -> impl Iterator<Item = GroupEntry<'_>> {
    entry_lines(text).filter_map(|line| {
        let mut f = line.split(':');
        let name = f.next()?;
        let _password = f.next()?;
        let gid = id(f.next()?)?;
        let members = f.next().unwrap_or("");
        (!name.is_empty()).then_some(GroupEntry { name, gid, members })
    })
}

/// A file of `etc`; a missing one is empty (a minimal image may have no `/etc/group`), any
/// other trouble is an error naming it. Bytes that are not UTF-8 (a Latin-1 GECOS field in an
/// old image) become U+FFFD rather than an error for the whole file: glibc reads these files
/// byte by byte, and the fields pilot uses are names and numbers. A name with such a byte is
/// never matched (`same_name`): two different bytes both read as U+FFFD, and a config name
/// could be written with it.
///
/// Read on a helper thread given up after [`READ_WAIT`]: the image's `/etc` may sit on a hung
/// FUSE or NFS mount, and the caller (the control thread at a reload, pilot's start) must
/// not hang with it. At most [`MAX_HUNG`] such readers are left behind; after that the read
/// fails at once.
fn read_etc(etc: &Path, name: &str) -> Result<String, String> {
    let path = etc.join(name);
    if HUNG.load(Ordering::SeqCst) >= MAX_HUNG {
        return Err(format!(
            "cannot read '{}': earlier reads of it are still hung (a hung file system?)",
            path.display()
        ));
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let owned = path.clone();
    HUNG.fetch_add(1, Ordering::SeqCst);
    let spawned = std::thread::Builder::new().name("read /etc".into()).spawn(move || {
        let read = read_etc_now(&owned);
        HUNG.fetch_sub(1, Ordering::SeqCst);
        let _ = tx.send(read);
    });
    if let Err(e) = spawned {
        HUNG.fetch_sub(1, Ordering::SeqCst);
        return Err(format!("cannot read '{}': no thread to read it: {e}", path.display()));
    }
    rx.recv_timeout(READ_WAIT).unwrap_or_else(|_| {
        Err(format!("cannot read '{}': no answer within {READ_WAIT:?} (a hung file system?)", path.display()))
    })
}

/// How long a read of `/etc/passwd` or `/etc/group` may take.
const READ_WAIT: std::time::Duration = std::time::Duration::from_secs(5);
/// Readers of the account files that have not come back (a hung file system).
static HUNG: AtomicUsize = AtomicUsize::new(0);
const MAX_HUNG: usize = 2;

fn read_etc_now(path: &Path) -> Result<String, String> {
    if !path.exists() && path.symlink_metadata().is_err() {
        return Ok(String::new());
    }
    crate::fsread::read_regular_bytes(path, MAX_FILE).map(|b| String::from_utf8_lossy(&b).into_owned())
}

/// Whether a name from the file is `wanted`: equal, and all of it was UTF-8 in the file.
fn same_name(name: &str, wanted: &str) -> bool {
    name == wanted && !name.contains(char::REPLACEMENT_CHARACTER)
}

/// A job's user, primary group and supplementary groups as numbers (None: pilot's own).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accounts {
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub groups: Option<Vec<u32>>,
}

/// The job field a resolution failed on, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unresolved {
    pub field: &'static str,
    pub message: String,
}

impl std::fmt::Display for Unresolved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

fn user_error(message: String) -> Unresolved {
    Unresolved { field: "user", message }
}

fn group_error(message: String) -> Unresolved {
    Unresolved { field: "group", message }
}

/// The kernel's limit on supplementary groups (NGROUPS_MAX).
const MAX_GROUPS: usize = 65536;

/// The account files of one `etc`, each read at most once (check-config resolves every job
/// against the same files).
struct EtcFiles<'a> {
    etc: &'a Path,
    passwd: std::cell::OnceCell<Result<String, String>>,
    group: std::cell::OnceCell<Result<String, String>>,
}

impl<'a> EtcFiles<'a> {
    fn new(etc: &'a Path) -> EtcFiles<'a> {
        EtcFiles { etc, passwd: Default::default(), group: Default::default() }
    }

    fn passwd(&self) -> Result<&str, Unresolved> {
        let text = self.passwd.get_or_init(|| read_etc(self.etc, "passwd"));
        text.as_deref().map_err(|e| user_error(e.clone()))
    }

    fn group(&self) -> Result<&str, Unresolved> {
        let text = self.group.get_or_init(|| read_etc(self.etc, "group"));
        text.as_deref().map_err(|e| group_error(e.clone()))
    }
}

/// Resolve `user` and `group` against the account files in `etc`.
pub fn resolve(p: &Privileges, etc: &Path) -> Result<Accounts, Unresolved> {
    resolve_in(p, &EtcFiles::new(etc))
}

fn resolve_in(p: &Privileges, files: &EtcFiles) -> Result<Accounts, Unresolved> {
    let etc = files.etc;
    if p.user.is_none() && p.group.is_none() {
        return Ok(Accounts { uid: None, gid: None, groups: None });
    }
    let passwd = match &p.user {
        Some(_) => files.passwd()?,
        None => "",
    };
    let entry = match &p.user {
        Some(Account::Name(n)) => Some(
            passwd_entries(passwd)
                .find(|e| same_name(e.name, n))
                .ok_or_else(|| user_error(format!("no user '{n}' in {}", etc.join("passwd").display())))?,
        ),
        Some(Account::Id(u)) => passwd_entries(passwd).find(|e| e.uid == *u),
        None => None,
    };
    let needs_groups_file = matches!(p.group, Some(Account::Name(_))) || entry.is_some();
    let group_text = match needs_groups_file {
        true => files.group()?,
        false => "",
    };
    let gid = match &p.group {
        Some(Account::Id(g)) => *g,
        Some(Account::Name(n)) => {
            group_entries(group_text)
                .find(|g| same_name(g.name, n))
                .ok_or_else(|| group_error(format!("no group '{n}' in {}", etc.join("group").display())))?
                .gid
        }
        None => match (&p.user, &entry) {
            (_, Some(e)) => e.gid,
            (Some(Account::Id(u)), None) => {
                return Err(group_error(format!(
                    "uid {u} has no entry in {}, so it has no primary group: set 'group' too",
                    etc.join("passwd").display()
                )));
            }
            // Not reached (no user and no group returned above); an error, never a panic.
            _ => return Err(group_error("neither 'user' nor 'group' names an account".into())),
        },
    };
    // initgroups: the primary group, then every group listing the user, each once, in the
    // file's order; more than the kernel takes is an error found here, not in the child.
    let mut groups = vec![gid];
    let mut seen = std::collections::HashSet::from([gid]);
    if let Some(e) = &entry {
        for g in group_entries(group_text).filter(|g| g.has_member(e.name)) {
            if seen.insert(g.gid) {
                groups.push(g.gid);
                if groups.len() > MAX_GROUPS {
                    return Err(group_error(format!(
                        "user '{}' is in more than {MAX_GROUPS} groups, the kernel's limit",
                        e.name
                    )));
                }
            }
        }
    }
    let uid = match (&p.user, &entry) {
        (_, Some(e)) => Some(e.uid),
        (Some(Account::Id(u)), None) => Some(*u),
        _ => None,
    };
    Ok(Accounts { uid, gid: Some(gid), groups: Some(groups) })
}

/// The capabilities as the mask `init::privileges` applies.
pub fn mask(caps: &[Capability]) -> u64 {
    caps.iter().fold(0, |m, c| m | c.bitmask())
}

/// What pilot has itself, for the checks before fork.
fn own(set: CapSet) -> u64 {
    caps::read(None, set).map(|s| s.iter().fold(0, |m, c| m | c.bitmask())).unwrap_or(0)
}

fn names(mask: u64) -> String {
    let mut list: Vec<String> =
        caps::all().into_iter().filter(|c| mask & c.bitmask() != 0).map(|c| c.to_string()).collect();
    list.sort_unstable();
    // A long list (a whole bounding set) is cut: the count says the rest.
    if list.len() > 6 {
        let rest = list.len() - 5;
        list.truncate(5);
        return format!("{} and {rest} more", list.join(", "));
    }
    list.join(", ")
}

/// Whether `groups` are pilot's supplementary groups already (in any order).
fn already_ours(groups: &[u32]) -> bool {
    let Ok(current) = nix::unistd::getgroups() else { return false };
    let mut current: Vec<u32> = current.iter().map(|g| g.as_raw()).collect();
    let mut want = groups.to_vec();
    for list in [&mut current, &mut want] {
        list.sort_unstable();
        list.dedup();
    }
    current == want
}

/// Resolve every job's `user` and `group` into [`Resolved`] in the container's `etc`, once
/// per config: when it is loaded for running and at each reload, on the thread that loads it
/// (pilot's start, the control thread), never on the supervisor thread at a spawn. The
/// image's `/etc` does not change under a running container (and a job that adds an account
/// can have pilot pick it up with a reload, which reads the files again); reading them per
/// spawn put a file system on the supervisor thread's path, which hangs with a hung CVMFS or
/// NFS mount. A name that does not resolve is kept as the job's failure: the job then fails
/// to start with that message, as before, and the other jobs run.
pub fn resolve_config(cfg: &mut Config, etc: &Path) {
    let files = EtcFiles::new(etc);
    for job in &mut cfg.jobs {
        let p = &mut job.privileges;
        p.resolved = match resolve_in(p, &files) {
            Ok(a) => Resolved::Accounts { uid: a.uid, gid: a.gid, groups: a.groups },
            Err(e) => Resolved::Failed(e.message),
        };
    }
}

/// Whether any job of `cfg` names a user or a group (so its config needs [`resolve_config`]).
pub fn needs_resolving(cfg: &Config) -> bool {
    cfg.jobs.iter().any(|j| j.privileges.user.is_some() || j.privileges.group.is_some())
}

/// Everything the spawn child is to do for a job, or why it cannot be done (a user that did
/// not resolve, a capability pilot does not have itself). Called before the clone, for the
/// job's process and its health check alike; `None` for a job without privilege options.
/// System calls only (capget, getgroups): the accounts were resolved with the config.
pub fn plan(p: &Privileges) -> Result<Option<Plan>, String> {
    if p.is_default() {
        return Ok(None);
    }
    let accounts = match (&p.resolved, p.user.is_some() || p.group.is_some()) {
        (_, false) => Accounts { uid: None, gid: None, groups: None },
        (Resolved::Accounts { uid, gid, groups }, true) => Accounts { uid: *uid, gid: *gid, groups: groups.clone() },
        (Resolved::Failed(e), true) => return Err(e.clone()),
        (Resolved::Pending, true) => {
            return Err("its user and group were not looked up when the config was loaded".to_string());
        }
    };
    let keep = p.capabilities.as_deref().map(mask);
    if let Some(keep) = keep {
        // Checked here so the message names the capabilities (the child can only say EPERM).
        let missing = keep & !own(CapSet::Permitted);
        if missing != 0 {
            return Err(format!(
                "cannot keep {}: pilot itself does not have {} (not in its permitted set)",
                names(missing),
                if missing.count_ones() == 1 { "it" } else { "them" }
            ));
        }
        let to_drop = own(CapSet::Bounding) & !keep;
        if to_drop != 0 && own(CapSet::Effective) & Capability::CAP_SETPCAP.bitmask() == 0 {
            return Err(format!(
                "cannot drop {} from the bounding set: pilot lacks CAP_SETPCAP (run pilot as root, or list them in 'capabilities')",
                names(to_drop)
            ));
        }
    }
    // A group list that is already pilot's needs no setgroups, which an unprivileged pilot
    // could not make (it runs jobs as itself then).
    let groups = accounts.groups.filter(|g| !already_ours(g));
    Ok(Some(Plan { uid: accounts.uid, gid: accounts.gid, groups, keep, no_new_privs: p.no_new_privs() }))
}

/// `check-config`'s look at the privilege options: names that do not resolve in this
/// container's `etc` are errors naming the job; options that will fail or not fully apply
/// because of how pilot runs (not root, missing capabilities, no_new_privs already set) are
/// warnings that say what will happen at spawn.
pub fn check(cfg: &Config, etc: &Path) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    let mut uses = Vec::new();
    let files = EtcFiles::new(etc);
    for (i, job) in cfg.jobs.iter().enumerate() {
        let p = &job.privileges;
        if p.is_default() {
            continue;
        }
        uses.push(i);
        match resolve_in(p, &files) {
            Err(e) => out.push(Diagnostic::error(format!("jobs[{i}].{}", e.field), format!("job '{}': {e}", job.name))),
            Ok(a) => out.extend(namespace_problems(&a).into_iter().map(|(field, problem)| {
                Diagnostic::warning(
                    format!("jobs[{i}].{field}"),
                    format!("job '{}': {problem}: it will not start in this namespace", job.name),
                )
            })),
        }
    }
    let Some(&first) = uses.first() else { return out };
    let euid = nix::unistd::geteuid().as_raw();
    let effective = own(CapSet::Effective);
    let permitted = own(CapSet::Permitted);
    // What the options in use need: setuid for `user`, setgroups/setgid for either, and
    // CAP_SETPCAP to drop capabilities from the bounding set.
    let any = |f: fn(&Privileges) -> bool| uses.iter().any(|&i| f(&cfg.jobs[i].privileges));
    let lacking: Vec<&str> = [
        (Capability::CAP_SETUID, "CAP_SETUID", any(|p| p.user.is_some())),
        (Capability::CAP_SETGID, "CAP_SETGID", any(|p| p.user.is_some() || p.group.is_some())),
        (Capability::CAP_SETPCAP, "CAP_SETPCAP", any(|p| p.capabilities.is_some())),
    ]
    .into_iter()
    .filter(|(c, _, needed)| *needed && effective & c.bitmask() == 0)
    .map(|(_, n, _)| n)
    .collect();
    if euid != 0 || !lacking.is_empty() {
        let who = if euid != 0 { format!("pilot runs as uid {euid}, not root") } else { "pilot is root".to_string() };
        let lacks = if lacking.is_empty() { String::new() } else { format!(" and lacks {}", lacking.join(", ")) };
        out.push(Diagnostic::warning(
            format!("jobs[{first}]"),
            format!(
                "{who}{lacks}: jobs with 'user', 'group' or 'capabilities' can only run as pilot's own user and group and keep no more than pilot has; a job asking for more fails to start with the reason (e.g. \"setuid(1000) failed: EPERM\"), and pilot keeps running its other jobs"
            ),
        ));
    }
    for &i in &uses {
        let job = &cfg.jobs[i];
        if let Some(keep) = job.privileges.capabilities.as_deref().map(mask) {
            let missing = keep & !permitted;
            if missing != 0 {
                out.push(Diagnostic::warning(
                    format!("jobs[{i}].capabilities"),
                    format!(
                        "job '{}': pilot does not have {} itself, so the job cannot keep it and will not start",
                        job.name,
                        names(missing)
                    ),
                ));
            }
        }
        if job.privileges.no_new_privs == Some(false) && own_no_new_privs() {
            out.push(Diagnostic::warning(
                format!("jobs[{i}].no_new_privs"),
                format!(
                    "job '{}': pilot already runs with no_new_privs (as Apptainer and many container runtimes set it), which no process can turn off: the job gets it anyway",
                    job.name
                ),
            ));
        }
    }
    out
}

/// The ranges of ids a user namespace map (`/proc/self/uid_map`) makes valid here, as
/// (first, count); None when it cannot be read.
fn mapped(file: &str) -> Option<Vec<(u64, u64)>> {
    let text = std::fs::read_to_string(file).ok()?;
    // Each line: first id inside, first id outside, count.
    let ranges = text.lines().filter_map(|l| match l.split_whitespace().collect::<Vec<_>>()[..] {
        [inside, _, count] => Some((inside.parse().ok()?, count.parse().ok()?)),
        _ => None,
    });
    Some(ranges.collect())
}

fn is_mapped(ranges: &Option<Vec<(u64, u64)>>, id: u32) -> bool {
    ranges.as_ref().is_none_or(|r| r.iter().any(|&(first, count)| (first..first + count).contains(&(id as u64))))
}

/// What pilot's own user namespace will refuse of `a`, as (field, problem): an unmapped uid
/// or gid, or setgroups denied (`unshare --map-root-user`). check-config usually runs where
/// the jobs will (`apptainer test`), so this is what will happen at spawn.
fn namespace_problems(a: &Accounts) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    let uids = mapped("/proc/self/uid_map");
    let gids = mapped("/proc/self/gid_map");
    if let Some(uid) = a.uid.filter(|u| !is_mapped(&uids, *u)) {
        out.push(("user", format!("uid {uid} is not mapped in pilot's user namespace (see /proc/self/uid_map)")));
    }
    let groups = a.groups.iter().flatten().chain(a.gid.iter());
    if let Some(gid) = groups.copied().find(|g| !is_mapped(&gids, *g)) {
        out.push(("group", format!("gid {gid} is not mapped in pilot's user namespace (see /proc/self/gid_map)")));
    }
    let denied = std::fs::read_to_string("/proc/self/setgroups").is_ok_and(|s| s.trim() == "deny");
    if denied && a.groups.as_deref().is_some_and(|g| !already_ours(g)) {
        out.push(("group", "setgroups is denied in pilot's user namespace (/proc/self/setgroups is 'deny', as with `unshare --map-root-user`), so its groups cannot be set".to_string()));
    }
    out
}

/// Whether pilot itself has `NoNewPrivs` (from /proc/self/status).
fn own_no_new_privs() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .map(|s| s.lines().any(|l| l.strip_prefix("NoNewPrivs:").is_some_and(|v| v.trim() == "1")))
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scratch `etc`, removed when dropped.
    struct Etc(PathBuf);

    impl Drop for Etc {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    impl std::ops::Deref for Etc {
        type Target = Path;
        fn deref(&self) -> &Path {
            &self.0
        }
    }

    fn scratch() -> Etc {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("pilot-identity-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Etc(dir)
    }

    fn etc_with(passwd: &str, group: &str) -> Etc {
        let etc = scratch();
        std::fs::write(etc.join("passwd"), passwd).unwrap();
        std::fs::write(etc.join("group"), group).unwrap();
        etc
    }

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n# comment\n+nis\nconsul:x:100:1000::/var/lib/consul:/sbin/nologin\nbroken:line\ncondor:x:64:64::/:/bin/false\n";
    const GROUP: &str =
        "root:x:0:\nconsul:x:1000:\ndocker:x:999:condor,consul\nwheel:x:10:condor\nmonitor:x:2000: consul \n";

    fn privs(user: Option<Account>, group: Option<Account>) -> Privileges {
        Privileges { user, group, ..Privileges::default() }
    }

    #[test]
    fn initgroups_semantics_for_a_named_user() {
        let etc = etc_with(PASSWD, GROUP);
        let a = resolve(&privs(Some(Account::Name("consul".into())), None), &etc).unwrap();
        assert_eq!(a, Accounts { uid: Some(100), gid: Some(1000), groups: Some(vec![1000, 999, 2000]) });
        // By uid with an entry: the same, and `group` replaces the primary group.
        let a = resolve(&privs(Some(Account::Id(100)), Some(Account::Name("wheel".into()))), &etc).unwrap();
        assert_eq!(a, Accounts { uid: Some(100), gid: Some(10), groups: Some(vec![10, 999, 2000]) });
        // A uid without an entry needs a group, and gets only that one.
        let e = resolve(&privs(Some(Account::Id(4242)), None), &etc).unwrap_err();
        assert_eq!(e.field, "group");
        let e = e.message;
        assert!(e.contains("uid 4242 has no entry") && e.contains("set 'group'"), "{e}");
        let a = resolve(&privs(Some(Account::Id(4242)), Some(Account::Id(4242))), &etc).unwrap();
        assert_eq!(a, Accounts { uid: Some(4242), gid: Some(4242), groups: Some(vec![4242]) });
        // Group alone: pilot's uid.
        let a = resolve(&privs(None, Some(Account::Name("monitor".into()))), &etc).unwrap();
        assert_eq!(a, Accounts { uid: None, gid: Some(2000), groups: Some(vec![2000]) });
    }

    #[test]
    fn unknown_names_are_errors_naming_the_file() {
        let etc = etc_with(PASSWD, GROUP);
        let e = resolve(&privs(Some(Account::Name("consol".into())), None), &etc).unwrap_err();
        assert_eq!(e.field, "user");
        let e = e.message;
        assert!(e.starts_with("no user 'consol' in ") && e.ends_with("/passwd"), "{e}");
        let e = resolve(&privs(None, Some(Account::Name("nogroup".into()))), &etc).unwrap_err().message;
        assert!(e.starts_with("no group 'nogroup' in "), "{e}");
        // The broken line is skipped, not taken for a user.
        assert!(resolve(&privs(Some(Account::Name("broken".into())), None), &etc).is_err());
        // (uid_t)-1 would mean "unchanged" to setresuid: such a user does not exist.
        let etc = etc_with("evil:x:4294967295:0::/:/bin/sh\nevil2:x:0:4294967295::/:/bin/sh\n", "g:x:4294967295:\n");
        for user in ["evil", "evil2"] {
            let e = resolve(&privs(Some(Account::Name(user.into())), None), &etc).unwrap_err();
            assert!(e.message.starts_with(&format!("no user '{user}'")), "{e}");
        }
        assert!(resolve(&privs(None, Some(Account::Name("g".into()))), &etc).is_err());
    }

    #[test]
    fn a_user_in_too_many_groups_is_an_error_found_without_quadratic_work() {
        // 200,000 groups listing the user (and a line of a million members): the kernel
        // takes 65,536; a quadratic dedup would take minutes here.
        let mut group = String::from("svc:x:1000:\nbig:x:1:");
        group.push_str(&"m,".repeat(1_000_000));
        group.push_str("svc\n");
        for g in 2..200_002u32 {
            group.push_str(&format!("g{g}:x:{g}:svc\n"));
        }
        let etc = etc_with("svc:x:1000:1000::/:/bin/sh\n", &group);
        let e = resolve(&privs(Some(Account::Name("svc".into())), None), &etc).unwrap_err();
        assert_eq!(e.field, "group");
        assert!(e.message.contains("more than 65536 groups"), "{e}");
        // Within the limit: every group once, the big line's too.
        let group = "svc:x:1000:\nbig:x:1:a,b,svc,c\ndup:x:1:svc\n";
        let etc = etc_with("svc:x:1000:1000::/:/bin/sh\n", group);
        let a = resolve(&privs(Some(Account::Name("svc".into())), None), &etc).unwrap();
        assert_eq!(a.groups, Some(vec![1000, 1]));
    }

    #[test]
    fn a_latin1_gecos_field_does_not_hide_every_account() {
        // Old images (and `adduser` on a Latin-1 system) leave non-UTF-8 bytes in the GECOS
        // field or a name: glibc reads such files byte by byte, so every other line resolves.
        let dir = scratch();
        std::fs::write(
            dir.join("passwd"),
            b"jose:x:1001:1001:Jos\xe9 Mu\xf1oz:/home/jose:/bin/sh\nconsul:x:100:1000::/:/bin/sh\nn\xe9:x:7:7::/:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(dir.join("group"), b"consul:x:1000:\nd\xe9v:x:999:consul,jos\xe9\nmon:x:2000:consul,n\xe9\n")
            .unwrap();
        let a = resolve(&privs(Some(Account::Name("consul".into())), None), &dir).unwrap();
        assert_eq!(a, Accounts { uid: Some(100), gid: Some(1000), groups: Some(vec![1000, 999, 2000]) });
        let a = resolve(&privs(Some(Account::Name("jose".into())), None), &dir).unwrap();
        assert_eq!(a.uid, Some(1001));
        // A name that is not UTF-8 cannot be what a config names, not even through the
        // replacement character that stands for its invalid byte.
        assert!(resolve(&privs(Some(Account::Name("n\u{FFFD}".into())), None), &dir).is_err());
        assert!(resolve(&privs(None, Some(Account::Name("d\u{FFFD}v".into()))), &dir).is_err());
        // By uid, such a user still runs, in its primary group only.
        let a = resolve(&privs(Some(Account::Id(7)), None), &dir).unwrap();
        assert_eq!(a, Accounts { uid: Some(7), gid: Some(7), groups: Some(vec![7]) });
    }

    #[test]
    fn a_fifo_for_passwd_is_an_error_not_a_hang() {
        let dir = scratch();
        nix::unistd::mkfifo(&dir.join("passwd"), nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let e = resolve(&privs(Some(Account::Name("x".into())), None), &dir).unwrap_err().message;
        assert!(e.contains("FIFO"), "{e}");
    }

    #[test]
    fn the_mask_has_one_bit_per_capability() {
        assert_eq!(mask(&[Capability::CAP_NET_BIND_SERVICE, Capability::CAP_KILL]), (1 << 10) | (1 << 5));
        assert_eq!(names((1 << 10) | (1 << 5)), "CAP_KILL, CAP_NET_BIND_SERVICE");
        assert!(names(u64::MAX).ends_with(" and 36 more"), "{}", names(u64::MAX));
    }
}
