//! The job stanza's least-privilege extensions (pilot's, not ContainerPilot's): `user`,
//! `group`, `capabilities` and `no_new_privs`. This file decodes and validates them into
//! types; names of users and groups are looked up in the container's files when the config
//! is loaded or reloaded (and by `check-config`), in `identity`, and the kernel side is
//! `init::privileges`.

use super::decode::{Decoder, Obj, shorten, type_name};
use caps::Capability;
use serde_json::Value;
use std::fmt;

/// A user or a group as the config names it: a numeric id, or a name to look up in the
/// container's `/etc/passwd` or `/etc/group`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Account {
    Id(u32),
    Name(String),
}

impl fmt::Display for Account {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Account::Id(id) => write!(f, "{id}"),
            Account::Name(name) => f.write_str(name),
        }
    }
}

/// Who a job (and everything pilot spawns for it: its health check too) runs as, and what it
/// keeps. The default, every field `None`, is ContainerPilot's behaviour: the job runs as
/// pilot does, and nothing is changed before exec.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Privileges {
    pub user: Option<Account>,
    pub group: Option<Account>,
    /// The capabilities the job keeps, in every set (bounding, permitted, effective,
    /// inheritable, ambient); `Some(vec![])` keeps none. `None`: the kernel's rule, i.e. a
    /// root job keeps pilot's capabilities and a job switched to another user keeps none.
    pub capabilities: Option<Vec<Capability>>,
    /// As written; see [`Privileges::no_new_privs`] for the default.
    pub no_new_privs: Option<bool>,
    /// `user` and `group` as numbers, resolved in the container's `/etc` when the config is
    /// loaded or reloaded (`identity::resolve_config`, off the supervisor thread), never at a
    /// spawn: the supervisor thread touches no file system.
    pub resolved: Resolved,
}

/// The outcome of looking up a job's `user` and `group` (see [`Privileges::resolved`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Resolved {
    /// Not looked up (a config that was never loaded for running, or a job without them).
    #[default]
    Pending,
    /// The uid, primary gid and supplementary groups (None: pilot's own).
    Accounts { uid: Option<u32>, gid: Option<u32>, groups: Option<Vec<u32>> },
    /// Why not: the message names the file and the account.
    Failed(String),
}

impl Privileges {
    /// Whether anything is to be changed before exec.
    pub fn is_default(&self) -> bool {
        self.user.is_none() && self.group.is_none() && self.capabilities.is_none() && self.no_new_privs.is_none()
    }

    /// Whether the job gets `PR_SET_NO_NEW_PRIVS`. Unless the config says, it does when it
    /// uses any of `user`, `group` or `capabilities`: those set a ceiling, and without
    /// no_new_privs the job could climb back over it by executing a set-user-ID program or
    /// one with file capabilities from the image (`su`, `sudo`, `mount`, `ping`). Jobs that use
    /// none of them run as ContainerPilot runs them.
    pub fn no_new_privs(&self) -> bool {
        self.no_new_privs.unwrap_or(self.user.is_some() || self.group.is_some() || self.capabilities.is_some())
    }
}

/// The job keys decoded here.
pub const KEYS: [&str; 4] = ["user", "group", "capabilities", "no_new_privs"];

/// Decode the keys of the job `o` (named `job`, when it has a usable name: the messages
/// name it too, as check-config's later look at the accounts does).
pub fn decode(d: &mut Decoder, o: &Obj, job: Option<&str>) -> Privileges {
    let before = d.diags.len();
    let p = Privileges {
        user: o.get("user").and_then(|v| account(d, &o.field("user"), v, "user")),
        group: o.get("group").and_then(|v| account(d, &o.field("group"), v, "group")),
        capabilities: o.get("capabilities").map(|v| capabilities(d, &o.field("capabilities"), v)),
        no_new_privs: o.get("no_new_privs").and_then(|v| d.bool(&o.field("no_new_privs"), v)),
        resolved: Resolved::Pending,
    };
    if let Some(job) = job {
        for diag in &mut d.diags[before..] {
            diag.message = format!("job '{}': {}", shorten(job), diag.message);
        }
    }
    p
}

/// The largest id a config may give: `(uid_t)-1` means "unchanged" to setresuid.
const MAX_ID: u32 = u32::MAX - 1;

fn account(d: &mut Decoder, path: &str, v: &Value, what: &str) -> Option<Account> {
    let file = if what == "user" { "/etc/passwd" } else { "/etc/group" };
    match v {
        Value::Number(n) => match n.as_u64() {
            Some(id) if id <= MAX_ID as u64 => Some(Account::Id(id as u32)),
            _ => {
                d.error(path, format!("{n} is not a {what} id: expected 0..{MAX_ID} or a name from {file}"));
                None
            }
        },
        Value::String(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => match s.parse::<u32>() {
            Ok(id) if id <= MAX_ID => Some(Account::Id(id)),
            _ => {
                d.error(path, format!("'{}' is not a {what} id: expected 0..{MAX_ID}", shorten(s)));
                None
            }
        },
        Value::String(s) => {
            // What a line of /etc/passwd or /etc/group can hold as its first field.
            let bad =
                s.is_empty() || s.len() > 256 || s.chars().any(|c| c == ':' || c.is_whitespace() || c.is_control());
            if bad {
                d.error(
                    path,
                    format!("{:?} is not a {what} name: expected a name from {file} or a numeric id", shorten(s)),
                );
                return None;
            }
            Some(Account::Name(s.clone()))
        }
        other => {
            d.error(path, format!("expected a {what} name or a numeric id, got {}", type_name(other)));
            None
        }
    }
}

/// A capability by any of the names an admin writes: `CAP_NET_BIND_SERVICE`,
/// `net_bind_service`, in any case.
pub fn parse_capability(name: &str) -> Option<Capability> {
    let canonical = caps::to_canonical(name.trim());
    canonical.parse::<Capability>().ok()
}

fn capabilities(d: &mut Decoder, path: &str, v: &Value) -> Vec<Capability> {
    let items = match v {
        Value::Array(items) => items,
        other => {
            d.error(
                path,
                format!(
                    "expected an array of capability names (e.g. [\"CAP_NET_BIND_SERVICE\"], or [] for none), got {}",
                    type_name(other)
                ),
            );
            return Vec::new();
        }
    };
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let at = format!("{path}[{i}]");
        let Value::String(name) = item else {
            d.error(
                at,
                format!("expected a capability name such as \"CAP_NET_BIND_SERVICE\", got {}", type_name(item)),
            );
            continue;
        };
        match parse_capability(name) {
            Some(c) if out.contains(&c) => d.warning(at, format!("{c} is listed twice")),
            Some(c) => out.push(c),
            None => d.error(at, unknown_capability(name)),
        }
    }
    out
}

fn unknown_capability(name: &str) -> String {
    let known: Vec<String> = caps::all().into_iter().map(|c| c.to_string()).collect();
    let mut known: Vec<&str> = known.iter().map(String::as_str).collect();
    known.sort_unstable();
    let canonical = caps::to_canonical(name.trim());
    let mut msg = format!("unknown capability '{}'", shorten(name));
    match super::diagnostic::did_you_mean(&canonical, &known) {
        Some(s) => msg.push_str(&format!("; did you mean '{s}'?")),
        None => msg.push_str("; expected a name from capabilities(7), such as CAP_NET_BIND_SERVICE"),
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_job(text: &str) -> (Privileges, Vec<String>) {
        let v = crate::config::parse_json5(text).unwrap();
        let mut d = Decoder::default();
        let keys: &'static [&'static str] = &KEYS;
        let o = d.object("jobs[0]", &v, keys).unwrap();
        let p = decode(&mut d, &o, None);
        o.finish(&mut d);
        (p, d.diags.iter().map(|x| format!("{}: {}", x.path, x.message)).collect())
    }

    #[test]
    fn names_and_ids() {
        let (p, d) = decode_job(r#"{user: "consul", group: 1000, capabilities: ["net_bind_service", "CAP_KILL"]}"#);
        assert!(d.is_empty(), "{d:?}");
        assert_eq!(p.user, Some(Account::Name("consul".into())));
        assert_eq!(p.group, Some(Account::Id(1000)));
        assert_eq!(p.capabilities, Some(vec![Capability::CAP_NET_BIND_SERVICE, Capability::CAP_KILL]));
        assert!(p.no_new_privs(), "on by default when privileges are dropped");
        let (p, _) = decode_job(r#"{user: "1000", no_new_privs: false}"#);
        assert_eq!(p.user, Some(Account::Id(1000)));
        assert!(!p.no_new_privs());
        let (p, _) = decode_job(r#"{capabilities: []}"#);
        assert_eq!(p.capabilities, Some(vec![]));
        assert!(Privileges::default().is_default() && !Privileges::default().no_new_privs());
    }

    #[test]
    fn typos_and_bad_values_are_errors_naming_the_field() {
        let (_, d) = decode_job(r#"{capabilities: ["CAP_NET_BIND_SERVCE", "net_admn", "bogus", 7]}"#);
        assert!(d.iter().any(|m| m == "jobs[0].capabilities[0]: unknown capability 'CAP_NET_BIND_SERVCE'; did you mean 'CAP_NET_BIND_SERVICE'?"), "{d:?}");
        assert!(
            d.iter().any(|m| m
                .starts_with("jobs[0].capabilities[1]: unknown capability 'net_admn'; did you mean 'CAP_NET_ADMIN'")),
            "{d:?}"
        );
        assert!(
            d.iter().any(|m| m.starts_with("jobs[0].capabilities[2]: unknown capability 'bogus'; expected")),
            "{d:?}"
        );
        assert!(d.iter().any(|m| m.starts_with("jobs[0].capabilities[3]: expected a capability name")), "{d:?}");
        let (_, d) = decode_job(r#"{capabilities: "CAP_KILL", user: -1, group: "a:b"}"#);
        assert!(d.iter().any(|m| m.starts_with("jobs[0].capabilities: expected an array")), "{d:?}");
        assert!(d.iter().any(|m| m.starts_with("jobs[0].user: -1 is not a user id")), "{d:?}");
        assert!(d.iter().any(|m| m.starts_with("jobs[0].group: \"a:b\" is not a group name")), "{d:?}");
        let (_, d) = decode_job(r#"{user: 4294967295, group: "99999999999"}"#);
        assert!(d.iter().any(|m| m.starts_with("jobs[0].user: 4294967295 is not a user id")), "{d:?}");
        assert!(d.iter().any(|m| m.starts_with("jobs[0].group: '99999999999' is not a group id")), "{d:?}");
        let (_, d) = decode_job(r#"{no_new_privs: "maybe"}"#);
        assert!(d.iter().any(|m| m.starts_with("jobs[0].no_new_privs: expected true or false")), "{d:?}");
    }
}
