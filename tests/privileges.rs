//! Least privilege for jobs (`user`, `group`, `capabilities`, `no_new_privs`): what a job and
//! its health check see in `/proc/self/status`, with pilot as PID 1 as real root, as the root
//! of a user namespace with a range of ids mapped, and as the root of an unprivileged
//! `unshare --map-root-user` namespace (where setgroups is denied and only root is mapped);
//! failures that must leave pilot running its other jobs; and `check-config`.

mod common;
#[path = "common/privileges.rs"]
mod privs;

use common::consul;
use common::*;
use privs::{Container, Ns, expected, own_caps};
use std::process::Command;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(60);
const NET_BIND_SERVICE: u64 = 1 << 10;
const KILL: u64 = 1 << 5;

/// A job that writes what it is to `$OUT/NAME`, and a "service" that stays up until its
/// health check (run with the job's identity) has written `$OUT/NAME.check`.
fn dump(name: &str) -> String {
    format!(r#"["sh", "-c", "cat /proc/self/status > \"$OUT/{name}\""]"#)
}

fn service(name: &str) -> String {
    format!(
        r#"["sh", "-c", "cat /proc/self/status > \"$OUT/{name}\"; i=0; while [ ! -s \"$OUT/{name}.check\" ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done"]"#
    )
}

fn assert_ran(c: &Container, out: &std::process::Output, names: &[&str]) {
    for n in names {
        assert!(
            c.out().join(n).exists(),
            "{n} did not run:\nstdout:\n{}\nstderr:\n{}",
            text(&out.stdout),
            text(&out.stderr)
        );
    }
}

#[test]
fn as_real_root_jobs_and_health_checks_get_exactly_their_user_groups_and_capabilities() {
    assert!(is_root(), "this test makes PID and mount namespaces: run it as root");
    let passwd = "root:x:0:0:root:/root:/bin/sh\nsvc:x:4321:4322::/nonexistent:/bin/false\n";
    let group = "root:x:0:\nsvc:x:4322:\nextra:x:5000:svc\nunrelated:x:5001:root,svc2\nmore:x:5002:other,svc\n";
    let config = format!(
        r#"{{jobs: [
        {{name: "web", exec: {web}, user: "svc", capabilities: ["net_bind_service"],
          health: {{exec: {check}, interval: 1, ttl: 10}}}},
        {{name: "numeric", exec: {numeric}, user: 7777, group: 7778}},
        {{name: "rootless", exec: {rootless}, capabilities: []}},
        {{name: "root-keeps-two", exec: {two}, user: "root", capabilities: ["CAP_KILL", "CAP_NET_BIND_SERVICE"]}},
        {{name: "optout", exec: {optout}, user: "svc", no_new_privs: false}},
        {{name: "legacy", exec: {legacy}}},
        ]}}"#,
        web = service("web"),
        check = dump("web.check"),
        numeric = dump("numeric"),
        rootless = dump("rootless"),
        two = dump("root-keeps-two"),
        optout = dump("optout"),
        legacy = dump("legacy"),
    );
    let c = Container::new("root", passwd, group, &config);
    let out = c.run(Ns::Root, LIMIT);
    assert_ran(&c, &out, &["web", "web.check", "numeric", "rootless", "root-keeps-two", "optout", "legacy"]);
    let all = own_caps("CapBnd");
    let (eff, bnd) = (own_caps("CapEff"), all);
    // initgroups: the primary group and every group listing svc, in /etc/group's order.
    let web = expected(4321, 4322, "4322 5000 5002", NET_BIND_SERVICE, NET_BIND_SERVICE, NET_BIND_SERVICE, true);
    assert_eq!(c.status("web").identity(), web, "the job");
    assert_eq!(c.status("web.check").identity(), web, "its health check runs as the job does");
    // A uid without a passwd entry: its group only; no capabilities (the kernel's rule for
    // a non-root user), the bounding set untouched, no_new_privs on.
    assert_eq!(c.status("numeric").identity(), expected(7777, 7778, "7778", 0, bnd, 0, true));
    // Root keeping nothing.
    let rootless = c.status("rootless");
    assert_eq!(rootless.get("Uid"), "0 0 0 0");
    assert_eq!(
        rootless.identity()[3..],
        expected(0, 0, "", 0, 0, 0, true)[3..],
        "capabilities: [] leaves root with no capability in any set"
    );
    assert_eq!(
        c.status("root-keeps-two").identity(),
        expected(0, 0, "0 5001", KILL | NET_BIND_SERVICE, KILL | NET_BIND_SERVICE, KILL | NET_BIND_SERVICE, true)
    );
    assert_eq!(c.status("optout").get("NoNewPrivs"), "0", "no_new_privs: false is honoured");
    assert_eq!(c.status("optout").get("Uid"), "4321 4321 4321 4321");
    // A job without the options runs as before: pilot's capabilities, no no_new_privs.
    let legacy = c.status("legacy");
    assert_eq!((legacy.get("CapEff"), legacy.get("NoNewPrivs")), (format!("{eff:016x}"), "0".to_string()));
}

#[test]
fn as_root_of_a_user_namespace_ids_are_mapped_ids_and_an_unmapped_uid_is_a_clear_error() {
    assert!(is_root(), "this test writes a user namespace's uid_map: run it as root");
    let passwd = "root:x:0:0:root:/root:/bin/sh\nsvc:x:500:501::/:/bin/false\n";
    let group = "root:x:0:\nsvc:x:501:\nextra:x:600:svc\n";
    let config = format!(
        r#"{{jobs: [
        {{name: "web", exec: {web}, user: "svc", capabilities: ["net_bind_service"],
          health: {{exec: {check}, interval: 1, ttl: 10}}}},
        {{name: "unmapped", exec: {bad}, user: 1500, group: 501}},
        {{name: "after", exec: {after}, when: {{source: "unmapped", once: "exitFailed"}}}},
        ]}}"#,
        web = service("web"),
        check = dump("web.check"),
        bad = dump("unmapped"),
        after = dump("after"),
    );
    let c = Container::new("userns", passwd, group, &config);
    let out = c.run(Ns::MappedUserns, LIMIT);
    let log = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert_ran(&c, &out, &["web", "web.check", "after"]);
    let web = expected(500, 501, "501 600", NET_BIND_SERVICE, NET_BIND_SERVICE, NET_BIND_SERVICE, true);
    assert_eq!(c.status("web").identity(), web, "the job, in the namespace's ids");
    assert_eq!(c.status("web.check").identity(), web, "its health check");
    assert!(!c.out().join("unmapped").exists(), "the job with an unmapped uid must not run");
    assert!(
        log.contains("job unmapped: ")
            && log.contains("setuid(1500) failed: EINVAL")
            && log.contains("uid 1500 is not mapped in pilot's user namespace"),
        "{log}"
    );
}

#[test]
fn in_an_unprivileged_map_root_user_namespace_capabilities_work_and_setgroups_fails_clearly() {
    assert!(is_root(), "this test switches to uid 65534 with setpriv: run it as root");
    let passwd = "root:x:0:0:root:/root:/bin/sh\nsvc:x:1000:1000::/:/bin/false\n";
    let group = "root:x:0:\nsvc:x:1000:\n";
    let config = format!(
        r#"{{jobs: [
        {{name: "caps", exec: {caps}, capabilities: ["CAP_NET_BIND_SERVICE", "kill"]}},
        {{name: "svc", exec: {svc}, user: "svc"}},
        {{name: "after", exec: {after}, when: {{source: "svc", once: "exitFailed"}}}},
        ]}}"#,
        caps = dump("caps"),
        svc = dump("svc"),
        after = dump("after"),
    );
    let c = Container::new("maproot", passwd, group, &config);
    let out = c.run(Ns::MapRootUser, LIMIT);
    let log = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert_ran(&c, &out, &["caps", "after"]);
    // Root of the namespace, its groups unmapped (the overflow gid): only the sets change.
    let caps = c.status("caps");
    assert_eq!(caps.get("Uid"), "0 0 0 0");
    let keep = KILL | NET_BIND_SERVICE;
    assert_eq!(caps.identity()[3..], expected(0, 0, "", keep, keep, keep, true)[3..]);
    assert!(!c.out().join("svc").exists());
    assert!(
        log.contains("job svc: ")
            && log.contains("setgroups([1000]) failed: EPERM")
            && log.contains("/proc/self/setgroups is 'deny'"),
        "{log}"
    );
}

fn check_config(config: &str, as_nobody: bool) -> (i32, String) {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let c = Container::new(&format!("check-{n}"), "", "", config);
    let path = c.dir.join("pilot.json5");
    let mut cmd = if as_nobody {
        let mut cmd = Command::new("setpriv");
        cmd.args(["--reuid", "65534", "--regid", "65534", "--clear-groups", pilot()]);
        cmd
    } else {
        Command::new(pilot())
    };
    let out = run_limited(cmd.arg("check-config").arg("-c").arg(&path), LIMIT);
    (out.status.code().unwrap_or(-1), format!("{}{}", text(&out.stdout), text(&out.stderr)))
}

#[test]
fn check_config_refuses_unknown_users_groups_and_capabilities_naming_the_job() {
    let (code, out) = check_config(
        r#"{jobs: [{name: "agent", exec: "true", user: "no-such-user-for-pilot"},
                   {name: "sensor", exec: "true", group: "no-such-group-for-pilot"},
                   {name: "numeric", exec: "true", user: 4242424}]}"#,
        false,
    );
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("jobs[0].user: job 'agent': no user 'no-such-user-for-pilot' in /etc/passwd"), "{out}");
    assert!(out.contains("jobs[1].group: job 'sensor': no group 'no-such-group-for-pilot' in /etc/group"), "{out}");
    assert!(out.contains("jobs[2].group: job 'numeric': uid 4242424 has no entry in /etc/passwd"), "{out}");
    let (code, out) = check_config(
        r#"{jobs: [{name: "agent", exec: "true", capabilities: ["CAP_NET_BIND_SERVCE"], no_new_privs: "sometimes"}]}"#,
        false,
    );
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(
            "jobs[0].capabilities[0]: job 'agent': unknown capability 'CAP_NET_BIND_SERVCE'; did you mean 'CAP_NET_BIND_SERVICE'?"
        ),
        "{out}"
    );
    assert!(out.contains("jobs[0].no_new_privs: job 'agent': expected true or false"), "{out}");
    // Known names are fine (root exists in every passwd).
    let (code, out) =
        check_config(r#"{jobs: [{name: "agent", exec: "true", user: "root", capabilities: ["kill"]}]}"#, false);
    assert_eq!(code, 0, "{out}");
}

#[test]
fn check_config_warns_and_explains_when_pilot_is_not_root() {
    assert!(is_root(), "this test switches to uid 65534 with setpriv: run it as root");
    let (code, out) = check_config(r#"{jobs: [{name: "agent", exec: "true", user: 0, capabilities: ["kill"]}]}"#, true);
    assert_eq!(code, 0, "a warning, not an error: {out}");
    assert!(out.contains("warning: jobs[0]: pilot runs as uid 65534, not root and lacks CAP_SETUID"), "{out}");
    assert!(out.contains("fails to start with the reason"), "{out}");
    assert!(out.contains("jobs[0].capabilities: job 'agent': pilot does not have CAP_KILL itself"), "{out}");
    // Without the options, no warning.
    let (code, out) = check_config(r#"{jobs: [{name: "agent", exec: "true"}]}"#, true);
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains("warning"), "{out}");
}

#[test]
fn the_readme_worker_node_example_passes_check_config_in_a_container_with_a_consul_user() {
    assert!(is_root(), "this test makes a mount namespace: run it as root");
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let section = readme.split("## Least privilege for jobs").nth(1).expect("the README section");
    let example = section.split("```json5").nth(1).and_then(|s| s.split("```").next()).expect("its json5 example");
    assert!(example.contains("user: \"consul\"") && example.contains("condor_master"), "{example}");
    let c = Container::new(
        "readme",
        "root:x:0:0::/root:/bin/sh\nconsul:x:100:1000::/consul:/bin/false\n",
        "root:x:0:\nconsul:x:1000:\n",
        example,
    );
    let d = c.dir.display();
    let script =
        format!("mount --bind {d}/etc/passwd /etc/passwd && mount --bind {d}/etc/group /etc/group && exec \"$@\"");
    let out = run_limited(
        Command::new("unshare")
            .args(["--mount", "--", "sh", "-c", &script, "sh", pilot(), "check-config", "-c"])
            .arg(c.dir.join("pilot.json5")),
        LIMIT,
    );
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{all}");
    // Only the programs missing on this machine may be warned about.
    for line in all.lines().filter(|l| l.contains(": warning:")) {
        assert!(line.contains("not found on PATH"), "{all}");
    }
}

#[test]
fn a_fifo_or_a_huge_file_for_etc_passwd_fails_that_job_without_hanging_pilot() {
    assert!(is_root(), "this test makes PID and mount namespaces: run it as root");
    let config = format!(
        r#"{{jobs: [
        {{name: "svc", exec: {svc}, user: "svc"}},
        {{name: "by-id", exec: {by_id}, user: 0, capabilities: ["kill"]}},
        {{name: "other", exec: {other}}},
        ]}}"#,
        svc = dump("svc"),
        by_id = dump("by-id"),
        other = dump("other"),
    );
    let c = Container::new("fifo", "", "root:x:0:\n", &config);
    let passwd = c.dir.join("etc/passwd");
    std::fs::remove_file(&passwd).unwrap();
    let made = Command::new("mkfifo").arg(&passwd).status().unwrap();
    assert!(made.success());
    let out = c.run(Ns::Root, LIMIT);
    let log = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert_ran(&c, &out, &["other"]);
    assert!(!c.out().join("svc").exists() && !c.out().join("by-id").exists(), "{log}");
    assert!(log.contains("job svc: ") && log.contains("'/etc/passwd': it is a FIFO"), "{log}");
    assert!(log.contains("job by-id: ") && log.contains("'/etc/passwd': it is a FIFO"), "{log}");

    // 20 MiB of passwd: refused by size, not read into memory.
    let c = Container::new("huge", "", "root:x:0:\n", &config);
    let f = std::fs::File::create(c.dir.join("etc/passwd")).unwrap();
    f.set_len(20 << 20).unwrap();
    let out = c.run(Ns::Root, LIMIT);
    let log = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert_ran(&c, &out, &["other"]);
    assert!(log.contains("job svc: ") && log.contains("more than the limit"), "{log}");
}

#[test]
fn check_config_in_a_user_namespace_warns_of_unmapped_ids_and_denied_setgroups() {
    assert!(is_root(), "this test writes a user namespace's uid_map: run it as root");
    let passwd = "root:x:0:0:root:/root:/bin/sh\nsvc:x:500:501::/:/bin/false\nfar:x:1500:501::/:/bin/false\n";
    let group = "root:x:0:\nsvc:x:501:\nfargroup:x:2500:svc\n";
    let config = r#"{jobs: [
        {name: "fine", exec: "true", capabilities: ["kill"]},
        {name: "svc", exec: "true", user: "svc"},
        {name: "far", exec: "true", user: "far", group: 501}]}"#;
    let c = Container::new("check-userns", passwd, group, config);
    let out = c.pilot(Ns::MappedUserns, "check-config", LIMIT);
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "warnings only: {all}");
    assert!(all.contains("jobs[1].group: job 'svc': gid 2500 is not mapped in pilot's user namespace"), "{all}");
    assert!(all.contains("jobs[2].user: job 'far': uid 1500 is not mapped in pilot's user namespace"), "{all}");
    assert!(!all.contains("'fine'"), "{all}");

    let out = c.pilot(Ns::MapRootUser, "check-config", LIMIT);
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "warnings only: {all}");
    assert!(all.contains("jobs[1].group: job 'svc': setgroups is denied in pilot's user namespace"), "{all}");
    assert!(all.contains("jobs[1].user: job 'svc': uid 500 is not mapped"), "{all}");
    assert!(!all.contains("'fine'"), "{all}");
}

#[test]
fn a_program_the_jobs_user_may_not_execute_is_named_with_that_user() {
    assert!(is_root(), "this test runs a job as uid 65534: run it as root");
    let c = Container::new("eacces", "", "", "{}");
    let script = c.dir.join("etc/private.sh");
    std::fs::write(&script, "#!/bin/sh\necho ran\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o700)).unwrap();
    let config = format!(
        r#"{{jobs: [{{name: "private", exec: "{s}", user: 65534, group: 65534}},
                    {{name: "as-root", exec: "{s}", capabilities: ["CAP_CHOWN"]}}]}}"#,
        s = script.display()
    );
    std::fs::write(c.dir.join("pilot.json5"), config).unwrap();
    let out = run_limited(Command::new(pilot()).arg("run").arg("-c").arg(c.dir.join("pilot.json5")), LIMIT);
    let log = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(
        log.contains("job private: cannot execute")
            && log.contains("EACCES: permission denied (the job runs as uid 65534 gid 65534"),
        "{log}"
    );
    assert!(!log.contains("interpreter /bin/sh"), "the interpreter is not the problem: {log}");
    assert!(log.contains("as-root ran"), "root (the owner) may run it: {log}");
}

#[test]
fn as_an_unprivileged_user_jobs_may_run_as_pilot_itself_and_what_needs_privilege_fails_clearly() {
    assert!(is_root(), "this test switches to uid 65534 with setpriv: run it as root");
    let config = format!(
        r#"{{jobs: [
        {{name: "itself", exec: {itself}, user: 65534, group: 65534}},
        {{name: "nocaps", exec: {nocaps}, capabilities: []}},
        {{name: "other", exec: {other}, user: 1000, group: 1000}},
        {{name: "after", exec: {after}, when: {{source: "other", once: "exitFailed"}}}},
        ]}}"#,
        itself = dump("itself"),
        nocaps = dump("nocaps"),
        other = dump("other"),
        after = dump("after"),
    );
    let c = Container::new("unprivileged", "", "", &config);
    let out = run_limited(
        Command::new("setpriv")
            .args(["--reuid", "65534", "--regid", "65534", "--groups", "65534", pilot(), "run", "-c"])
            .arg(c.dir.join("pilot.json5"))
            .env("OUT", c.out()),
        LIMIT,
    );
    let log = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert_ran(&c, &out, &["itself", "after"]);
    // Its own user, group and groups: nothing to change but no_new_privs.
    let itself = c.status("itself");
    assert_eq!((itself.get("Uid"), itself.get("Groups")), ("65534 65534 65534 65534".into(), "65534".into()));
    assert_eq!(itself.get("NoNewPrivs"), "1");
    assert!(!c.out().join("nocaps").exists() && !c.out().join("other").exists(), "{log}");
    assert!(log.contains("job nocaps: ") && log.contains("from the bounding set: pilot lacks CAP_SETPCAP"), "{log}");
    assert!(
        log.contains("job other: ")
            && log.contains("setgroups([1000]) failed: EPERM")
            && log.contains("pilot lacks CAP_SETGID"),
        "{log}"
    );
}

#[test]
fn a_real_consul_agent_and_its_health_check_run_unprivileged_as_in_the_readme() {
    assert!(is_root(), "this test makes PID and mount namespaces: run it as root");
    let (http, server, serf) = (consul::free_port(), consul::free_port(), consul::free_port());
    let mut c = Container::new(
        "consul",
        "root:x:0:0::/root:/bin/sh\nconsul:x:4500:4500::/nonexistent:/bin/false\n",
        "root:x:0:\nconsul:x:4500:\n",
        "{}",
    );
    let bin = c.bind_program(consul::consul_bin(), "consul");
    let bin = bin.display();
    // The agent as the README runs it (dev mode, every listener on free loopback ports); when
    // its check has passed, a root job records that and stops pilot (PID 1 here).
    let config = format!(
        r#"{{jobs: [
        {{name: "consul-agent", user: "consul", capabilities: [],
          exec: ["sh", "-c", "cat /proc/self/status > \"$OUT/agent\"; exec {bin} agent -dev -bind 127.0.0.1 -client 127.0.0.1 -http-port {http} -server-port {server} -serf-lan-port {serf} -serf-wan-port -1 -dns-port -1 -grpc-port -1 -grpc-tls-port -1 -https-port -1"],
          health: {{exec: ["sh", "-c", "cat /proc/self/status > \"$OUT/agent.check\" && {bin} members -http-addr=127.0.0.1:{http}"], interval: 1, ttl: 10, timeout: 5}}}},
        {{name: "done", exec: ["sh", "-c", "touch \"$OUT/healthy\"; kill -TERM 1"], when: {{source: "consul-agent", once: "healthy"}}}},
        ]}}"#
    );
    std::fs::write(c.dir.join("pilot.json5"), config).unwrap();
    let out = c.run(Ns::Root, Duration::from_secs(120));
    assert_ran(&c, &out, &["agent", "agent.check", "healthy"]);
    let none = expected(4500, 4500, "4500", 0, 0, 0, true);
    assert_eq!(c.status("agent").identity(), none, "the agent: user consul, no capability");
    assert_eq!(c.status("agent.check").identity(), none, "its health check, as the agent");
}
