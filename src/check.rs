//! `pilot check-config` and `pilot template`: offline answers about a config, for the
//! image's `%test` section and for admins before an image ships.

use crate::config::{self, Diagnostic, Severity};
use crate::pathsearch::{self, Lookup};

/// Output format of `check-config`.
#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
}

/// The largest `--env FILE` read (see `config::MAX_FILE`).
const MAX_ENV_FILE: u64 = 1 << 20;

/// Read `--env FILE`: KEY=VALUE lines; blank lines, `#` comments and `export ` allowed.
/// Names must be what a process environment can hold and a template can name.
fn read_env_file(path: &str) -> Result<Vec<(String, String)>, String> {
    let text = read_env_text(path)?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((k, v)) = line.split_once('=') else {
            return Err(format!("{path}:{}: expected KEY=VALUE, got '{line}'", n + 1));
        };
        let (k, v) = (k.trim(), v.trim());
        let v = v.strip_prefix('"').and_then(|x| x.strip_suffix('"')).unwrap_or(v);
        if k.is_empty() || k.chars().any(|c| c.is_whitespace() || c.is_control() || c == '=') {
            return Err(format!("{path}:{}: '{}' is not a variable name", n + 1, k.escape_debug()));
        }
        if v.contains('\0') {
            return Err(format!("{path}:{}: the value of {k} contains a NUL character", n + 1));
        }
        out.push((k.to_string(), v.to_string()));
    }
    Ok(out)
}

fn read_env_text(path: &str) -> Result<String, String> {
    crate::fsread::read_regular(std::path::Path::new(path), MAX_ENV_FILE).map_err(|e| format!("env file: {e}"))
}

fn load(config_flag: Option<&str>, env_file: Option<&str>, kv: Option<config::KvFetch>) -> Result<config::Loaded, i32> {
    let extra = match env_file.map(read_env_file).transpose() {
        Ok(e) => e.unwrap_or_default(),
        Err(e) => {
            eprintln!("pilot: {e}");
            return Err(2);
        }
    };
    let Some(path) = config::locate(config_flag) else {
        eprintln!("pilot: no config given: use -c FILE, $PILOT_CONFIG or $CONTAINERPILOT");
        return Err(2);
    };
    Ok(config::load_with(path, &config::environment(&extra), kv))
}

/// Warn about (or, strictly, reject) programs that are not where the config says.
fn check_programs(loaded: &mut config::Loaded, env_path: Option<&str>, strict: bool) {
    let Some(cfg) = &loaded.config else { return };
    let mut found = Vec::new();
    for (i, job) in cfg.jobs.iter().enumerate() {
        let execs = [
            (format!("jobs[{i}].exec"), job.exec.as_ref()),
            (format!("jobs[{i}].health.exec"), job.health.as_ref().and_then(|h| h.exec.as_ref())),
        ];
        for (path, argv) in execs {
            let Some(argv) = argv else { continue };
            let problem = match pathsearch::lookup(&argv[0], env_path) {
                Lookup::Found(_) => continue,
                Lookup::NotFound if argv[0].contains('/') => format!("program '{}' does not exist", argv[0]),
                Lookup::NotFound => format!("program '{}' not found on PATH", argv[0]),
                Lookup::NotExecutable(p) => format!("'{}' is not an executable file", p.display()),
            };
            let mut d = if strict { Diagnostic::error(path, problem) } else { Diagnostic::warning(path, problem) };
            d.file = loaded.path.display().to_string();
            found.push(d);
        }
    }
    loaded.diags.extend(found);
}

pub fn check_config(config_flag: Option<&str>, env_file: Option<&str>, format: Format, strict: bool) -> i32 {
    let mut loaded = match load(config_flag, env_file, None) {
        Ok(l) => l,
        Err(code) => return code,
    };
    let path_var = env_file
        .and_then(|f| read_env_file(f).ok())
        .and_then(|e| e.into_iter().find(|(k, _)| k == "PATH").map(|(_, v)| v))
        .or_else(|| std::env::var("PATH").ok());
    check_programs(&mut loaded, path_var.as_deref(), strict);
    if let Some(cfg) = &loaded.config {
        // Users, groups and capabilities against this container's /etc and pilot's own rights.
        let file = loaded.path.display().to_string();
        let found = crate::identity::check(cfg, &crate::identity::etc());
        loaded.diags.extend(found.into_iter().map(|d| crate::config::Diagnostic { file: file.clone(), ..d }));
    }
    let errors = loaded.errors().count();
    let warnings = loaded.diags.iter().filter(|d| d.severity == Severity::Warning).count();
    let valid = loaded.config.is_some() && errors == 0 && !(strict && warnings > 0);
    let file = loaded.path.display().to_string();
    match format {
        Format::Json => {
            let out = serde_json::json!({"file": file, "valid": valid, "errors": errors, "warnings": warnings, "diagnostics": loaded.diags});
            println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
        }
        Format::Text => {
            for d in &loaded.diags {
                println!("{d}");
            }
            match (&loaded.config, valid) {
                (Some(c), true) => println!(
                    "{file}: valid: {} job(s), {} watch(es){}{}",
                    c.jobs.len(),
                    c.watches.len(),
                    if c.telemetry.is_some() { ", telemetry" } else { "" },
                    if warnings > 0 { format!(", {warnings} warning(s)") } else { String::new() }
                ),
                _ => println!("{file}: invalid: {errors} error(s), {warnings} warning(s)"),
            }
        }
    }
    if valid { 0 } else { 1 }
}

pub fn template(config_flag: Option<&str>, env_file: Option<&str>) -> i32 {
    let loaded = match load(config_flag, env_file, Some(&crate::consul::kv::fetch)) {
        Ok(l) => l,
        Err(code) => return code,
    };
    match &loaded.rendered {
        Some(text) => {
            print!("{}", loaded.secrets.redact(text));
            0
        }
        None => {
            for d in &loaded.diags {
                eprintln!("pilot: {d}");
            }
            1
        }
    }
}
