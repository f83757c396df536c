//! `pilot check-config` and `pilot template` on good and bad files, with exact messages:
//! the ContainerPilot v3 configs of tests/fixtures/containerpilot are the compatibility set.

mod common;
use common::*;
use std::process::Command;
use std::time::Duration;

/// pilot's own ContainerPilot v3 configs (tests/fixtures/containerpilot/README.md): every
/// file at the top is valid for ContainerPilot 3.8.0, every file in `mistakes/` is not.
const FIXTURES: &str = CP_FIXTURES;

fn check(args: &[&str]) -> (i32, String) {
    let out = run_limited(
        Command::new(pilot()).arg("check-config").args(args).env("CONSUL", "consul").env("APP_PORT", "8000"),
        Duration::from_secs(10),
    );
    (out.status.code().unwrap(), text(&out.stdout) + &text(&out.stderr))
}

#[test]
fn valid_containerpilot_configs_pass() {
    let files = json5_files(FIXTURES);
    assert!(files.len() >= 15, "the compatibility set: {files:?}");
    for f in files {
        let (code, out) = check(&["-c", &f]);
        assert_eq!(code, 0, "{f}: {out}");
        assert!(out.contains(": valid: "), "{out}");
    }
}

#[test]
fn broken_documentation_examples_are_rejected_precisely() {
    let cases: &[(&str, &[&str])] = &[
        ("missing-comma-between-jobs", &["missing-comma-between-jobs.json5:14:5: error: JSON5 syntax: expected comma"]),
        ("missing-comma-in-when", &["missing-comma-in-when.json5:14:9: error: JSON5 syntax: expected comma"]),
        ("missing-comma-after-exec", &["missing-comma-after-exec.json5:9:7: error: JSON5 syntax: expected comma"]),
        (
            "health-without-interval-or-ttl",
            &[
                "health-without-interval-or-ttl.json5: error: jobs[0].health.interval: is required",
                "health-without-interval-or-ttl.json5: error: jobs[0].health.ttl: is required",
            ],
        ),
        ("health-without-ttl", &["health-without-ttl.json5: error: jobs[0].health.ttl: is required"]),
        (
            "misspelt-keys",
            &[
                "misspelt-keys.json5: error: jobs[0].health.tll: unknown key 'tll'; did you mean 'ttl'?",
                "misspelt-keys.json5: error: jobs[1].restart: unknown key 'restart'; did you mean 'restarts'?",
            ],
        ),
    ];
    let mistakes = format!("{FIXTURES}/mistakes");
    assert_eq!(json5_files(&mistakes).len(), cases.len(), "every mistake has its expected diagnostics here");
    for (name, expected) in cases {
        let (code, out) = check(&["-c", &format!("{mistakes}/{name}.json5")]);
        assert_eq!(code, 1, "{name}: {out}");
        for e in *expected {
            assert!(out.contains(e), "{name}: expected `{e}` in:\n{out}");
        }
    }
}

#[test]
fn field_errors_name_the_path_and_what_was_expected() {
    let dir = scratch("fields");
    let cfg = write_config(
        &dir,
        r#"{
          jobs: [
            { name: "ok", exec: "true" },
            { name: "svc", exec: "true", port: 80, health: { exec: "true", interval: 5, ttl: "soon" },
              restarts: -1, when: { once: "exitSucess", source: "ok" } },
          ],
          logging: { level: "LOUD" },
        }"#,
    );
    let (code, out) = check(&["-c", &cfg]);
    assert_eq!(code, 1);
    for e in [
        "error: jobs[1].health.ttl: invalid duration 'soon'",
        "error: jobs[1].restarts: '-1' invalid: number must be positive integer",
        "error: jobs[1].when.once: 'exitSucess' is not a valid event; did you mean 'exitSuccess'?",
        "error: logging.level: unknown log level 'LOUD'",
    ] {
        assert!(out.contains(e), "expected `{e}` in:\n{out}");
    }
}

#[test]
fn missing_programs_warn_and_strict_makes_them_errors() {
    let dir = scratch("strict");
    let cfg = write_config(&dir, r#"{ jobs: [{ name: "a", exec: "no-such-program-xyz --flag" }] }"#);
    let (code, out) = check(&["-c", &cfg]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("warning: jobs[0].exec: program 'no-such-program-xyz' not found on PATH"), "{out}");
    let (code, out) = check(&["-c", &cfg, "--strict"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("error: jobs[0].exec: program 'no-such-program-xyz' not found on PATH"), "{out}");
}

#[test]
fn json_format_and_env_file() {
    let dir = scratch("json");
    let cfg = write_config(
        &dir,
        r#"{ jobs: [{ name: "{{ .SVC | default "fallback" }}", exec: "true", port: {{ .PORT }}, health: { interval: 1, ttl: 2 } }] }"#,
    );
    let env = dir.join("env");
    std::fs::write(&env, "# the container's environment\nexport SVC=web\nPORT=8080\n").unwrap();
    let (code, out) = check(&["-c", &cfg, "--env", env.to_str().unwrap(), "--format", "json"]);
    assert_eq!(code, 0, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["valid"], true);
    let rendered = run_limited(
        Command::new(pilot()).args(["template", "-c", &cfg, "--env", env.to_str().unwrap()]),
        Duration::from_secs(5),
    );
    assert!(text(&rendered.stdout).contains(r#"name: "web", exec: "true", port: 8080"#), "{}", text(&rendered.stdout));
    // Without the env file PORT is empty: a JSON5 syntax error pointing at the line.
    let (code, out) = check(&["-c", &cfg, "--format", "json"]);
    assert_eq!(code, 1);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["diagnostics"][0]["line"], 1, "{out}");
}

#[test]
fn usage_errors_exit_2() {
    let (code, _) = check(&[]);
    assert_eq!(code, 2, "no config given");
    let (code, _) = check(&["--format", "yaml", "-c", "x"]);
    assert_eq!(code, 2);
    let out = run_limited(Command::new(pilot()).arg("run"), Duration::from_secs(5));
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("nothing to run"));
}

#[test]
fn containerpilot_variable_may_be_a_file_url() {
    let dir = scratch("cpvar");
    let cfg = write_config(&dir, r#"{ jobs: [{ name: "a", exec: "true" }] }"#);
    let out = run_limited(
        Command::new(pilot())
            .arg("check-config")
            .env_remove("PILOT_CONFIG")
            .env("CONTAINERPILOT", format!("file://{cfg}")),
        Duration::from_secs(5),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
}

#[test]
fn every_subcommand_has_help() {
    for sub in ["run", "check-config", "template", "version"] {
        let out = run_limited(Command::new(pilot()).args([sub, "--help"]), Duration::from_secs(5));
        assert!(out.status.success() && text(&out.stdout).contains("Usage: pilot"), "{sub}");
    }
}

#[test]
fn the_papers_figure_2_config_is_valid() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/apptainer/examples/figure2-worker-node.json5");
    let (code, out) = check(&["-c", path]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("valid: 2 job(s)"), "{out}");
}

#[test]
fn exec_strings_with_double_spaces_warn() {
    let dir = scratch("spaces");
    let cfg = write_config(&dir, r#"{ jobs: [{ name: "a", exec: "true  x" }] }"#);
    let (code, out) = check(&["-c", &cfg]);
    assert_eq!(code, 0);
    assert!(out.contains("warning: jobs[0].exec: has several spaces in a row"), "{out}");
}

#[test]
fn consul_settings_are_checked_offline() {
    let dir = scratch("consul-settings");
    let cfg = write_config(
        &dir,
        r#"{ consul: "unix:///run/consul.sock",
             jobs: [{ name: "app", exec: "true", port: 80, interfaces: ["eth0", "eth0:inet5"],
                      health: { exec: "true", interval: 5, ttl: 10 } }] }"#,
    );
    let (code, out) = check(&["-c", &cfg]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("jobs[0].interfaces[1]: 'eth0:inet5' is not an interface spec"), "{out}");
    assert!(!out.contains("consul:"), "unix:// is a valid agent address: {out}");
    // `kv` is not fetched offline: check-config renders its default and needs no agent.
    let cfg = write_config(&dir, r#"{ jobs: [{ name: "a", exec: ["echo", "{{ kv "x/y" "d" }}"] }] }"#);
    let (code, out) = check(&["-c", &cfg]);
    assert_eq!(code, 0, "{out}");
}

#[test]
fn a_control_socket_path_must_fit_sun_path() {
    let dir = scratch("long-socket");
    let cfg = write_config(
        &dir,
        &format!(
            r#"{{ control: {{ socket: "/tmp/{}.sock" }}, jobs: [{{ name: "a", exec: "true" }}] }}"#,
            "s".repeat(110)
        ),
    );
    let (code, out) = check(&["-c", &cfg]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("control.socket: 120 bytes is longer than a Unix socket path may be (107 bytes)"), "{out}");
}

#[test]
fn the_shipped_example_configs_are_valid() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/apptainer/examples");
    let mut n = 0;
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let path = e.path().display().to_string();
        let (code, out) = check(&["-c", &path]);
        assert_eq!(code, 0, "{path}: {out}");
        n += 1;
    }
    assert!(n >= 3, "figure2, payload wrapper and CVMFS pre-flight examples");
}

#[test]
fn a_missing_consul_stanza_is_worth_a_warning_unless_the_site_set_consul_http_addr() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/apptainer/examples/htcondor-payload.json5");
    let run = |addr: Option<&str>| {
        let mut cmd = Command::new(pilot());
        cmd.args(["check-config", "-c", path]).env_remove("CONSUL_HTTP_ADDR");
        if let Some(a) = addr {
            cmd.env("CONSUL_HTTP_ADDR", a);
        }
        let out = run_limited(&mut cmd, Duration::from_secs(10));
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout) + &text(&out.stderr)
    };
    assert!(run(None).contains("warning: consul: no consul stanza"), "{}", run(None));
    assert!(!run(Some("127.0.0.1:8500")).contains("no consul stanza"), "{}", run(Some("127.0.0.1:8500")));
}
