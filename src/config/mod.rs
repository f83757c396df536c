//! Loading a config: find the file, render its template over the environment, parse the
//! JSON5, decode and validate. Every step reports diagnostics that name the file, and none
//! of them can crash, hang or exhaust pilot whatever the file holds: the file is read only
//! if regular and small (`MAX_FILE`), rendering has a budget (`template`), parsing a nesting
//! limit (`json`), and secrets are redacted from every diagnostic (`redact`).

pub mod decode;
pub mod diagnostic;
pub mod duration;
pub mod json;
pub mod model;
pub mod privileges;
pub mod redact;
pub mod template;

pub use diagnostic::{Diagnostic, Severity};
pub use model::*;

use std::collections::HashMap;
use std::path::PathBuf;

/// Where the config comes from: `-c`, else `$PILOT_CONFIG`, else `$CONTAINERPILOT`.
pub fn locate(flag: Option<&str>) -> Option<PathBuf> {
    let raw = flag
        .map(str::to_string)
        .or_else(|| std::env::var("PILOT_CONFIG").ok().filter(|s| !s.is_empty()))
        .or_else(|| std::env::var("CONTAINERPILOT").ok().filter(|s| !s.is_empty()))?;
    Some(PathBuf::from(raw.strip_prefix("file://").unwrap_or(&raw)))
}

/// The outcome of loading; `config` is usable only when `errors()` is empty.
pub struct Loaded {
    pub path: PathBuf,
    /// The rendered text, secrets included: print it only through `secrets.redact`.
    pub rendered: Option<String>,
    pub config: Option<Config>,
    /// Already redacted.
    pub diags: Vec<Diagnostic>,
    /// What must not be shown of this config (see `redact`).
    pub secrets: redact::Secrets,
}

impl Loaded {
    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.diags.iter().filter(|d| d.severity == Severity::Error)
    }

    pub fn is_valid(&self) -> bool {
        self.config.is_some() && self.errors().next().is_none()
    }
}

/// The process environment, overlaid by `extra` (from `check-config --env FILE`).
pub fn environment(extra: &[(String, String)]) -> HashMap<String, String> {
    let mut env: HashMap<String, String> = std::env::vars().collect();
    env.extend(extra.iter().cloned());
    env
}

/// Reads Consul KV keys for `{{ kv }}` given the config's `consul` stanza (see consul::kv).
pub type KvFetch<'a> = &'a dyn Fn(Option<&Consul>, &[String]) -> Result<HashMap<String, Option<String>>, String>;

/// Load without reaching Consul: `kv` renders as its default (check-config is offline).
pub fn load(path: PathBuf, env: &HashMap<String, String>) -> Loaded {
    load_with(path, env, None)
}

/// The largest config file read. ContainerPilot configs are a few kilobytes; a megabyte
/// is far beyond any real one, and bounds what a `pilot reload` of a wrong file (a log, an
/// image, `/dev/zero`) can make pilot read and render.
pub const MAX_FILE: u64 = 1 << 20;

/// Load; a template that uses `kv` is rendered twice: once offline to learn the keys and
/// the `consul` stanza, then with the values read from that agent.
pub fn load_with(path: PathBuf, env: &HashMap<String, String>, fetch: Option<KvFetch>) -> Loaded {
    let file = path.display().to_string();
    let secrets = redact::Secrets::new(env, &[]);
    let mut loaded = Loaded { path, rendered: None, config: None, diags: Vec::new(), secrets };
    let text = match crate::fsread::read_regular(&loaded.path, MAX_FILE) {
        Ok(t) => t,
        Err(e) => {
            loaded.diags.push(Diagnostic::error("", format!("config file: {e}")));
            return finish(loaded, &file, env);
        }
    };
    let mut rendered = template::render_with_kv(&text, env, &template::Kv::Offline);
    if let (Ok((first, keys)), Some(fetch)) = (&rendered, fetch)
        && !keys.is_empty()
    {
        let stanza = parse_json5(first)
            .ok()
            .and_then(|v| Config::decode(&v, &mut decode::Decoder::default()))
            .and_then(|c| c.consul);
        let values = fetch(stanza.as_ref(), keys);
        rendered = template::render_with_kv(&text, env, &template::Kv::Fetched(values));
    }
    let rendered = match rendered {
        Ok((r, _)) => r,
        Err(d) => {
            loaded.diags.push(d);
            return finish(loaded, &file, env);
        }
    };
    loaded.rendered = Some(rendered.clone());
    match parse_json5(&rendered) {
        Err(d) => loaded.diags.push(d),
        Ok(value) => {
            let mut decoder = decode::Decoder::default();
            loaded.config = Config::decode(&value, &mut decoder);
            loaded.diags.extend(decoder.diags);
        }
    }
    finish(loaded, &file, env)
}

/// Render, parse and validate config text; the whole pipeline minus the file, for the
/// fuzz target. Must never panic, whatever the input.
pub fn check_text(text: &str, env: &HashMap<String, String>) -> Vec<Diagnostic> {
    let rendered = match template::render(text, env) {
        Ok(r) => r,
        Err(d) => return vec![d],
    };
    match parse_json5(&rendered) {
        Err(d) => vec![d],
        Ok(value) => {
            let mut decoder = decode::Decoder::default();
            Config::decode(&value, &mut decoder);
            decoder.diags
        }
    }
}

/// Name the file in every diagnostic and redact secrets from them, now that the config's
/// own Consul token is known (when it could be decoded).
fn finish(mut loaded: Loaded, file: &str, env: &HashMap<String, String>) -> Loaded {
    let token = loaded.config.as_ref().and_then(|c| c.consul.as_ref()).and_then(|c| c.token.clone());
    if let Some(token) = token {
        loaded.secrets = redact::Secrets::new(env, &[&token]);
    }
    if loaded.diags.len() > MAX_DIAGNOSTICS {
        let dropped = loaded.diags.split_off(MAX_DIAGNOSTICS);
        let errors = dropped.iter().filter(|d| d.severity == Severity::Error).count();
        let message = format!("{} more problems not shown ({errors} of them errors)", dropped.len());
        loaded.diags.push(if errors > 0 { Diagnostic::error("", message) } else { Diagnostic::warning("", message) });
    }
    for d in &mut loaded.diags {
        d.file = file.to_string();
        loaded.secrets.redact_diagnostic(d);
    }
    loaded
}

/// Diagnostics kept for one config: plenty to fix a real file in one pass, and a bound on a
/// reload's answer and on stderr for a file made of thousands of mistakes.
pub const MAX_DIAGNOSTICS: usize = 200;

/// Parse JSON5 text (see `json::parse`: nesting limit, duplicate keys, no NaN).
pub fn parse_json5(text: &str) -> Result<serde_json::Value, Diagnostic> {
    json::parse(text)
}
