//! The config is a Go `text/template` rendered over the environment before it is parsed,
//! exactly as in ContainerPilot (`gtmpl` is a Rust implementation of that language). The
//! seven ContainerPilot functions are provided; a missing variable renders as "" (Go's
//! `missingkey=zero`), and, unlike ContainerPilot, values containing `=` are kept whole.

use super::diagnostic::Diagnostic;
use gtmpl::{Context, Func, FuncError, Template};
use gtmpl_value::{Number, Value};
use std::collections::HashMap;

/// How long rendering may take. gtmpl 0.7.1 has looped forever on malformed actions
/// (found by fuzzing); a config must get a diagnostic, never hang `check-config` or `run`.
const RENDER_LIMIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Consul KV values for `{{ kv "key" ["default"] }}`. Offline (check-config, or before
/// the keys are known), `kv` gives its default or "" and only notes the key.
#[derive(Debug, Clone, Default)]
pub enum Kv {
    #[default]
    Offline,
    /// Each key's value (None: not in Consul), or why they could not be read.
    Fetched(Result<HashMap<String, Option<String>>, String>),
}

pub fn render(text: &str, env: &HashMap<String, String>) -> Result<String, Diagnostic> {
    render_with_kv(text, env, &Kv::Offline).map(|(t, _)| t)
}

/// Render, also returning the KV keys the template asked for, in order.
pub fn render_with_kv(text: &str, env: &HashMap<String, String>, kv: &Kv) -> Result<(String, Vec<String>), Diagnostic> {
    check_actions_are_ascii(text)?;
    let (tx, rx) = std::sync::mpsc::channel();
    let (text, env, kv) = (text.to_string(), env.clone(), kv.clone());
    std::thread::Builder::new()
        .name("template".into())
        .spawn(move || {
            KV.with(|k| *k.borrow_mut() = (kv, Vec::new()));
            let out = render_now(&text, &env);
            let keys = KV.with(|k| std::mem::take(&mut k.borrow_mut().1));
            let _ = tx.send(out.map(|t| (t, keys)));
        })
        .map_err(|e| Diagnostic::error("", format!("template: cannot start rendering: {e}")))?;
    rx.recv_timeout(RENDER_LIMIT).unwrap_or_else(|_| {
        Err(Diagnostic::error(
            "",
            format!("template: rendering did not finish within {RENDER_LIMIT:?}; check for an unclosed {{{{"),
        ))
    })
}

fn render_now(text: &str, env: &HashMap<String, String>) -> Result<String, Diagnostic> {
    let mut data = env.clone();
    // gtmpl prints "<no value>" for a missing map key; Go's missingkey=zero prints "".
    let field = regex::Regex::new(r"\.([A-Za-z_][A-Za-z0-9_]*)").expect("static regex");
    for cap in field.captures_iter(text) {
        data.entry(cap[1].to_string()).or_default();
    }
    let mut tmpl = Template::default();
    let env_for_fn = env.clone();
    tmpl.add_func("default", default as Func);
    tmpl.add_func("split", split as Func);
    tmpl.add_func("join", join as Func);
    tmpl.add_func("replaceAll", replace_all as Func);
    tmpl.add_func("regexReplaceAll", regex_replace_all as Func);
    tmpl.add_func("loop", loop_ as Func);
    // `env` must see the same environment as `.VAR` (including --env overlays), so it
    // reads a process-wide copy set just before rendering.
    ENV.with(|e| *e.borrow_mut() = env_for_fn);
    tmpl.add_func("env", env_fn as Func);
    tmpl.add_func("kv", kv_fn as Func);
    // gtmpl has panicked on malformed input (see check_actions_are_ascii); a config must
    // get a diagnostic, never a crash, so a panic in the engine becomes an error too.
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        tmpl.parse(text).map_err(|e| template_error(&e.to_string()))?;
        tmpl.render(&Context::from(data)).map_err(|e| template_error(&e.to_string()))
    }));
    outcome.unwrap_or_else(|_| Err(Diagnostic::error("", "template: the template engine failed on this input")))
}

/// gtmpl 0.7.1's lexer slices inside a multi-byte character, and panics, when one appears
/// inside `{{ }}` outside a string (found by fuzzing). Go's templates have no use for
/// non-ASCII there except in string literals, and the likely cause is a typographic quote
/// pasted from a web page, so say so with the position.
fn check_actions_are_ascii(text: &str) -> Result<(), Diagnostic> {
    let mut rest = text;
    let mut offset = 0;
    while let Some(open) = rest.find("{{") {
        let action_start = offset + open + 2;
        let action = &text[action_start..];
        let end = action.find("}}").unwrap_or(action.len());
        let bad = |c: &char| !c.is_ascii() || (c.is_ascii_control() && !matches!(c, '\t' | '\n' | '\r'));
        if let Some((i, c)) = action[..end].char_indices().find(|(_, c)| bad(c)) {
            let at = action_start + i;
            let line = text[..at].matches('\n').count() + 1;
            let column = text[..at].rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            return Err(Diagnostic::error(
                "",
                format!("template: character {c:?} inside {{{{ }}}}: only printable ASCII is allowed there (check for typographic quotes)"),
            )
            .at(line, column));
        }
        offset = action_start + end;
        rest = &text[offset..];
    }
    Ok(())
}

thread_local! {
    static ENV: std::cell::RefCell<HashMap<String, String>> = Default::default();
    static KV: std::cell::RefCell<(Kv, Vec<String>)> = Default::default();
}

fn kv_fn(a: &[Value]) -> Result<Value, FuncError> {
    let (key, default) = match a {
        [k] => (text(k), None),
        [k, d] => (text(k), Some(text(d))),
        _ => return Err(FuncError::Generic("kv: expected a key and an optional default".into())),
    };
    KV.with(|state| {
        let mut state = state.borrow_mut();
        state.1.push(key.clone());
        let value = match &state.0 {
            Kv::Offline => Some(default.clone().unwrap_or_default()),
            Kv::Fetched(Ok(values)) => values.get(&key).cloned().flatten().or(default.clone()),
            Kv::Fetched(Err(_)) => default.clone(),
        };
        match (value, &state.0) {
            (Some(v), _) => Ok(Value::String(v)),
            (None, Kv::Fetched(Err(why))) => {
                Err(FuncError::Generic(format!("kv \"{key}\": {why} (give a default: kv \"{key}\" \"value\")")))
            }
            (None, _) => Err(FuncError::Generic(format!(
                "kv: key \"{key}\" is not in Consul (give a default: kv \"{key}\" \"value\")"
            ))),
        }
    })
}

fn template_error(msg: &str) -> Diagnostic {
    // gtmpl reports "template: :LINE:message" with LINE one past the offending line.
    let rest = msg.strip_prefix("template: ").unwrap_or(msg);
    let mut parts = rest.splitn(3, ':');
    let (_, line, tail) = (parts.next(), parts.next(), parts.next());
    match (line.and_then(|l| l.trim().parse::<usize>().ok()), tail) {
        (Some(line), Some(tail)) => {
            Diagnostic::error("", format!("template: {}", tail.trim())).at(line.saturating_sub(1).max(1), 1)
        }
        _ => Diagnostic::error("", format!("template: {rest}")),
    }
}

fn args<const N: usize>(name: &str, a: &[Value]) -> Result<[Value; N], FuncError> {
    <[Value; N]>::try_from(a.to_vec()).map_err(|_| FuncError::ExactlyXArgs(name.to_string(), N))
}

fn text(v: &Value) -> String {
    match v {
        Value::NoValue | Value::Nil => String::new(),
        other => other.to_string(),
    }
}

fn default(a: &[Value]) -> Result<Value, FuncError> {
    let [dflt, value] = args::<2>("default", a)?;
    Ok(match &value {
        Value::String(s) if !s.is_empty() => value.clone(),
        _ => Value::String(text(&dflt)),
    })
}

fn env_fn(a: &[Value]) -> Result<Value, FuncError> {
    let [name] = args::<1>("env", a)?;
    let key = text(&name);
    Ok(Value::String(ENV.with(|e| e.borrow().get(&key).cloned()).unwrap_or_default()))
}

fn split(a: &[Value]) -> Result<Value, FuncError> {
    let [sep, s] = args::<2>("split", a)?;
    let s = text(&s);
    let s = s.trim();
    if s.is_empty() {
        return Ok(Value::Array(Vec::new()));
    }
    Ok(Value::Array(s.split(text(&sep).as_str()).map(|p| Value::String(p.to_string())).collect()))
}

fn join(a: &[Value]) -> Result<Value, FuncError> {
    let [sep, list] = args::<2>("join", a)?;
    let items: Vec<String> = match list {
        Value::Array(items) => items.iter().map(text).collect(),
        other => vec![text(&other)],
    };
    Ok(Value::String(items.join(&text(&sep))))
}

fn replace_all(a: &[Value]) -> Result<Value, FuncError> {
    let [from, to, s] = args::<3>("replaceAll", a)?;
    Ok(Value::String(text(&s).replace(&text(&from), &text(&to))))
}

fn regex_replace_all(a: &[Value]) -> Result<Value, FuncError> {
    let [re, to, s] = args::<3>("regexReplaceAll", a)?;
    let re = regex::Regex::new(&text(&re)).map_err(|e| FuncError::Generic(format!("regexReplaceAll: {e}")))?;
    Ok(Value::String(re.replace_all(&text(&s), text(&to).as_str()).into_owned()))
}

fn int_arg(v: &Value) -> Result<i64, FuncError> {
    match v {
        Value::Number(n) => n.as_i64().ok_or_else(|| FuncError::Generic("loop: expected an integer".into())),
        other => text(other)
            .trim()
            .parse()
            .map_err(|_| FuncError::Generic(format!("loop: expected an integer, got '{}'", text(other)))),
    }
}

/// Longest sequence `loop` makes: a typo such as `loop 100000000` would otherwise make
/// rendering (and so `check-config` in an image's `%test`) take minutes.
pub const MAX_LOOP: i64 = 10_000;

/// `loop N` is 0..N; `loop A B` counts from A towards B (exclusive), downwards if B < A.
fn loop_(a: &[Value]) -> Result<Value, FuncError> {
    let (start, stop) = match a {
        [n] => (0, int_arg(n)?),
        [s, e] => (int_arg(s)?, int_arg(e)?),
        _ => return Err(FuncError::Generic("loop: expected 1 or 2 arguments".into())),
    };
    let len = (i128::from(stop) - i128::from(start)).abs();
    if len > i128::from(MAX_LOOP) {
        return Err(FuncError::Generic(format!("loop: {len} items is more than the limit of {MAX_LOOP}")));
    }
    let seq: Vec<i64> = if stop >= start { (start..stop).collect() } else { ((stop + 1)..=start).rev().collect() };
    Ok(Value::Array(seq.into_iter().map(|i| Value::Number(Number::from(i))).collect()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(t: &str, env: &[(&str, &str)]) -> String {
        render(t, &env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()).unwrap()
    }

    #[test]
    fn variables_and_missing_keys() {
        assert_eq!(r("Hello, {{.NONAME}}!", &[]), "Hello, !");
        assert_eq!(r("{{ .A }}", &[("A", "x=y=z")]), "x=y=z");
    }

    #[test]
    fn containerpilot_functions() {
        assert_eq!(r("{{ .X | default 100 }}", &[]), "100");
        assert_eq!(r("{{ .X | default \"d\" }}", &[("X", "v")]), "v");
        assert_eq!(r("{{ env \"A\" }}", &[("A", "1")]), "1");
        assert_eq!(r("{{ .L | split \",\" | join \"-\" }}", &[("L", "a,b,c")]), "a-b-c");
        assert_eq!(r("{{ .S | replaceAll \".\" \"_\" }}", &[("S", "a.b")]), "a_b");
        assert_eq!(r("{{ .S | regexReplaceAll \"([a-z])\\\\.\" \"${1}-\" }}", &[("S", "a.b")]), "a-b");
        assert_eq!(r("{{ range loop 3 }}{{.}}{{ end }}", &[]), "012");
        assert_eq!(r("{{ range loop 5 1 }}{{.}}{{ end }}", &[]), "5432");
        assert_eq!(r("{{ range loop 1 .N }}{{.}}{{ end }}", &[("N", "3")]), "12");
    }

    #[test]
    fn non_ascii_in_actions_is_an_error_not_a_panic() {
        let e = render("a\n  {{ \u{23e}PP }}", &HashMap::new()).unwrap_err();
        assert_eq!((e.line, e.column), (Some(2), Some(6)));
        assert!(e.message.contains("only printable ASCII"), "{}", e.message);
        let e = render("{{ .X | default \u{201c}a\u{201d} }}", &HashMap::new()).unwrap_err();
        assert!(e.message.contains('\u{201c}'), "{}", e.message);
        assert_eq!(render("caf\u{e9} {{ .X }}", &HashMap::new()).unwrap(), "caf\u{e9} ");
    }

    #[test]
    fn huge_loops_are_refused_quickly() {
        let e = render("{{ range loop 100000000 }}{{ end }}", &HashMap::new()).unwrap_err();
        assert!(e.message.contains("more than the limit of 10000"), "{}", e.message);
        assert!(render("{{ range loop -9223372036854775807 9223372036854775807 }}{{ end }}", &HashMap::new()).is_err());
    }

    #[test]
    fn documented_loop_idiom() {
        let t = "{{ range $i := loop 0 3 -}}{{ if (env (printf \"S_%d\" $i)) -}}[{{$i}}]{{- end }}{{- end }}";
        assert_eq!(r(t, &[("S_1", "x")]), "[1]");
    }

    #[test]
    fn kv_offline_fetched_and_missing() {
        let env = HashMap::new();
        let t = "a={{ kv \"cfg/a\" }} b={{ kv \"cfg/b\" \"B\" }}";
        let (out, keys) = render_with_kv(t, &env, &Kv::Offline).unwrap();
        assert_eq!((out.as_str(), keys), ("a= b=B", vec!["cfg/a".to_string(), "cfg/b".to_string()]));
        let values = HashMap::from([("cfg/a".to_string(), Some("1".to_string())), ("cfg/b".to_string(), None)]);
        let (out, _) = render_with_kv(t, &env, &Kv::Fetched(Ok(values))).unwrap();
        assert_eq!(out, "a=1 b=B");
        let e = render_with_kv(t, &env, &Kv::Fetched(Ok(HashMap::new()))).unwrap_err();
        assert!(e.message.contains("\"cfg/a\" is not in Consul"), "{}", e.message);
        let e = render_with_kv(t, &env, &Kv::Fetched(Err("agent down".into()))).unwrap_err();
        assert!(e.message.contains("agent down"), "{}", e.message);
    }

    #[test]
    fn errors_carry_a_line() {
        let e = render("a\n{{ .bad", &HashMap::new()).unwrap_err();
        assert_eq!(e.line, Some(2));
        assert!(e.message.starts_with("template:"), "{}", e.message);
    }
}
