//! The config is a Go `text/template` rendered over the environment before it is parsed,
//! exactly as in ContainerPilot (`gtmpl` is a Rust implementation of that language). The
//! seven ContainerPilot functions are provided; a missing variable renders as "" (Go's
//! `missingkey=zero`), and, unlike ContainerPilot, values containing `=` are kept whole.
//!
//! A config is hostile input: a 61-byte template that calls itself, three nested
//! `range loop 10000` or a `printf "%999999999d"` must give a diagnostic, not a crash, a
//! hang or a runaway thread. So rendering runs on its own thread with a large, explicit
//! stack, under a [`gtmpl::Budget`] enforced inside the engine (vendor/gtmpl is patched for
//! it): the work stops when any limit below is reached, and the thread ends with it.

use super::diagnostic::Diagnostic;
use gtmpl::error::{ExecError, ParseError};
use gtmpl::{Budget, Context, Func, FuncError, Template};
use gtmpl_value::{Number, Value};
use std::collections::HashMap;
use std::sync::LazyLock;
use std::time::{Duration, Instant};

/// Wall-clock limit of one rendering, checked inside the engine every 1024 steps: on a
/// loaded machine the step budget alone could take longer than a reload should.
pub const TIME_LIMIT: Duration = Duration::from_secs(5);
/// Nodes walked, range iterations and function calls. A real config takes a few hundred.
pub const MAX_STEPS: u64 = 1_000_000;
/// The rendered config. The file itself is at most 1 MiB (see `config::MAX_FILE`); loops
/// may expand it, but not without bound.
pub const MAX_OUTPUT: usize = 4 << 20;
/// Total bytes of the values template functions return (a loop of `printf` on a long
/// string would otherwise copy gigabytes without writing any output). A real config's
/// functions return a few kilobytes; this also bounds the memory one rendering can hold.
pub const MAX_VALUE_BYTES: u64 = 16 << 20;
/// `{{ template }}` calls inside each other (Go allows 100000 on its growable stacks).
pub const MAX_TEMPLATE_DEPTH: usize = 100;
/// Nested walks and pipelines across template calls: this is what bounds the stack.
pub const MAX_NESTING: usize = 2_000;
/// Items `loop` and `split` may make in one call.
pub const MAX_ITEMS: usize = 10_000;
/// The render thread's stack: enough for `MAX_NESTING` levels with a wide margin (the
/// unit test `deepest_allowed_nesting_fits_the_stack` runs the worst case). Only the pages
/// touched are ever committed.
const STACK_SIZE: usize = 64 << 20;

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
    let deadline = Instant::now() + TIME_LIMIT;
    let handle = std::thread::Builder::new()
        .name("template".into())
        .stack_size(STACK_SIZE)
        .spawn(move || {
            KV.with(|k| *k.borrow_mut() = (kv, Vec::new()));
            let out = render_now(&text, &env, deadline);
            let keys = KV.with(|k| std::mem::take(&mut k.borrow_mut().1));
            let _ = tx.send(out.map(|t| (t, keys)));
        })
        .map_err(|e| Diagnostic::error("", format!("template: cannot start rendering: {e}")))?;
    // The engine stops itself at the deadline; the margin only covers a single function
    // call that is slow (a big regex), so this wait is bounded too.
    match rx.recv_timeout(TIME_LIMIT + Duration::from_secs(5)) {
        Ok(result) => {
            // The thread has only its thread-locals left to drop: wait for it, so that when
            // rendering returns nothing of it is left running or allocated.
            let _ = handle.join();
            result
        }
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            Err(Diagnostic::error("", format!("template: rendering did not finish within {TIME_LIMIT:?}")))
        }
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
            Err(Diagnostic::error("", "template: the template engine failed on this input"))
        }
    }
}

/// Where rendered output goes: refuses to grow past `MAX_OUTPUT`.
struct CappedOutput {
    bytes: Vec<u8>,
    full: bool,
}

impl std::io::Write for CappedOutput {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.bytes.len() + buf.len() > MAX_OUTPUT {
            self.full = true;
            return Err(std::io::Error::other("output limit"));
        }
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// `.NAME` in a template: each gets "" unless the environment has it (see render_now).
static FIELD: LazyLock<regex_lite::Regex> =
    LazyLock::new(|| regex_lite::Regex::new(r"\.([A-Za-z_][A-Za-z0-9_]*)").expect("static regex"));

fn render_now(text: &str, env: &HashMap<String, String>, deadline: Instant) -> Result<String, Diagnostic> {
    let mut data = env.clone();
    // gtmpl prints "<no value>" for a missing map key; Go's missingkey=zero prints "".
    for cap in FIELD.captures_iter(text) {
        data.entry(cap[1].to_string()).or_default();
    }
    let budget = Budget {
        max_template_depth: MAX_TEMPLATE_DEPTH,
        max_nesting: MAX_NESTING,
        max_steps: MAX_STEPS,
        max_value_bytes: MAX_VALUE_BYTES,
        deadline: Some(deadline),
    };
    let mut tmpl = Template { budget, ..Template::default() };
    let env_for_fn = env.clone();
    tmpl.add_func("default", default as Func);
    tmpl.add_func("split", split as Func);
    tmpl.add_func("join", join as Func);
    tmpl.add_func("replaceAll", replace_all as Func);
    tmpl.add_func("regexReplaceAll", regex_replace_all as Func);
    tmpl.add_func("loop", loop_ as Func);
    // `env` must see the same environment as `.VAR` (including --env overlays), so it
    // reads a copy set just before rendering (this thread renders only this config).
    ENV.with(|e| *e.borrow_mut() = env_for_fn);
    tmpl.add_func("env", env_fn as Func);
    tmpl.add_func("kv", kv_fn as Func);
    // gtmpl has panicked on malformed input (see check_actions_are_ascii); a config must
    // get a diagnostic, never a crash, so a panic in the engine becomes an error too.
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        tmpl.parse(text).map_err(|e| parse_error(text, &e))?;
        let mut out = CappedOutput { bytes: Vec::new(), full: false };
        match tmpl.execute(&mut out, &Context::from(data)) {
            Ok(()) => String::from_utf8(out.bytes)
                .map_err(|_| Diagnostic::error("", "template: the rendered config is not UTF-8 text")),
            Err(_) if out.full => Err(Diagnostic::error(
                "",
                format!("template: rendering stopped: the rendered config is larger than {} MiB", MAX_OUTPUT >> 20),
            )),
            Err(e) => Err(exec_error(text, &e)),
        }
    }));
    outcome.unwrap_or_else(|_| Err(Diagnostic::error("", "template: the template engine failed on this input")))
}

/// 1-based line and column (in characters) of byte offset `pos` of `text`.
pub fn line_col(text: &str, pos: usize) -> (usize, usize) {
    let mut pos = pos.min(text.len());
    while !text.is_char_boundary(pos) {
        pos -= 1;
    }
    let before = &text[..pos];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

fn parse_error(text: &str, e: &ParseError) -> Diagnostic {
    match e {
        ParseError::WithContext(ctx, msg) => {
            let d = Diagnostic::error("", format!("template: {msg}"));
            match ctx.pos {
                Some(pos) => {
                    let (line, col) = line_col(text, pos);
                    d.at(line, col)
                }
                None => d.at(ctx.line.max(1), 1),
            }
        }
        other => Diagnostic::error("", format!("template: {other}")),
    }
}

fn exec_error(text: &str, e: &ExecError) -> Diagnostic {
    match e {
        ExecError::At(pos, inner) => {
            let (line, col) = line_col(text, *pos);
            Diagnostic::error("", format!("template: {inner}")).at(line, col)
        }
        other => Diagnostic::error("", format!("template: {other}")),
    }
}

/// gtmpl 0.7.1's lexer sliced inside a multi-byte character, and panicked, when one
/// appeared inside `{{ }}` outside a string (found by fuzzing; fixed in vendor/gtmpl too).
/// Go's templates have no use for non-ASCII there except in string literals, and the likely
/// cause is a typographic quote pasted from a web page, so say so with the position.
fn check_actions_are_ascii(text: &str) -> Result<(), Diagnostic> {
    let mut rest = text;
    let mut offset = 0;
    while let Some(open) = rest.find("{{") {
        let action_start = offset + open + 2;
        let action = &text[action_start..];
        let end = action.find("}}").unwrap_or(action.len());
        let bad = |c: &char| !c.is_ascii() || (c.is_ascii_control() && !matches!(c, '\t' | '\n' | '\r'));
        if let Some((i, c)) = action[..end].char_indices().find(|(_, c)| bad(c)) {
            let (line, column) = line_col(text, action_start + i);
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
    check_kv_key(&key)?;
    KV.with(|state| {
        let mut state = state.borrow_mut();
        if !state.1.contains(&key) {
            // Each distinct key is one request to the agent while the config loads.
            if state.1.len() >= MAX_KV_KEYS {
                return Err(FuncError::Generic(format!("kv: more than {MAX_KV_KEYS} distinct keys")));
            }
            state.1.push(key.clone());
        }
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

/// Distinct Consul KV keys one config may read: each is a request to the agent while the
/// config loads (a reload waits for them), and a config reads a handful.
pub const MAX_KV_KEYS: usize = 100;

/// A KV key becomes part of the agent's URL path (`/v1/kv/KEY`): refuse what would change
/// the request instead of naming a key (a query, a fragment, an escape, `..`), and control
/// characters.
fn check_kv_key(key: &str) -> Result<(), FuncError> {
    let bad = if key.trim_matches('/').is_empty() {
        Some("is empty")
    } else if key.chars().any(|c| c.is_control() || c == ' ') {
        Some("contains a space or a control character")
    } else if key.contains(['?', '#', '%', '\\']) {
        Some("contains '?', '#', '%' or a backslash")
    } else if key.split('/').any(|seg| seg == ".." || seg == ".") {
        Some("contains a '.' or '..' path segment")
    } else if key.len() > 512 {
        Some("is longer than 512 bytes")
    } else {
        None
    };
    match bad {
        Some(why) => Err(FuncError::Generic(format!("kv: key \"{}\" {why}", key.escape_debug()))),
        None => Ok(()),
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

fn too_big(func: &str, bytes: usize) -> FuncError {
    FuncError::Generic(format!("{func}: the result would be {bytes} bytes, more than the limit of {MAX_OUTPUT}"))
}

fn split(a: &[Value]) -> Result<Value, FuncError> {
    let [sep, s] = args::<2>("split", a)?;
    let (s, sep) = (text(&s), text(&sep));
    let s = s.trim();
    if s.is_empty() {
        return Ok(Value::Array(Vec::new()));
    }
    // Count before allocating: `split "" $long` would make a value per character.
    let items = if sep.is_empty() { s.chars().count() + 2 } else { s.matches(sep.as_str()).count() + 1 };
    if items > MAX_ITEMS {
        return Err(FuncError::Generic(format!("split: {items} items is more than the limit of {MAX_ITEMS}")));
    }
    Ok(Value::Array(s.split(sep.as_str()).map(|p| Value::String(p.to_string())).collect()))
}

fn join(a: &[Value]) -> Result<Value, FuncError> {
    let [sep, list] = args::<2>("join", a)?;
    let items: Vec<String> = match list {
        Value::Array(items) => items.iter().map(text).collect(),
        other => vec![text(&other)],
    };
    let sep = text(&sep);
    let bytes = items.iter().map(String::len).sum::<usize>().saturating_add(sep.len().saturating_mul(items.len()));
    if bytes > MAX_OUTPUT {
        return Err(too_big("join", bytes));
    }
    Ok(Value::String(items.join(&sep)))
}

fn replace_all(a: &[Value]) -> Result<Value, FuncError> {
    let [from, to, s] = args::<3>("replaceAll", a)?;
    let (from, to, s) = (text(&from), text(&to), text(&s));
    // The result's size is known before replacing: refuse a multiplication of a long
    // string by a long replacement instead of allocating it.
    let count = if from.is_empty() { s.chars().count() + 1 } else { s.matches(from.as_str()).count() };
    let bytes =
        (s.len() - count.saturating_mul(from.len()).min(s.len())).saturating_add(count.saturating_mul(to.len()));
    if bytes > MAX_OUTPUT {
        return Err(too_big("replaceAll", bytes));
    }
    Ok(Value::String(s.replace(&from, &to)))
}

fn regex_replace_all(a: &[Value]) -> Result<Value, FuncError> {
    let [re, to, s] = args::<3>("regexReplaceAll", a)?;
    let (to, s) = (text(&to), text(&s));
    // A bounded compiled size bounds the time and memory a hostile pattern can take.
    let re = regex_lite::RegexBuilder::new(&text(&re))
        .size_limit(1 << 20)
        .build()
        .map_err(|e| FuncError::Generic(format!("regexReplaceAll: {e}")))?;
    let mut out = String::new();
    let mut last = 0;
    for caps in re.captures_iter(&s) {
        let m = caps.get(0).expect("group 0 always matches");
        out.push_str(&s[last..m.start()]);
        caps.expand(&to, &mut out);
        last = m.end();
        if out.len() > MAX_OUTPUT {
            return Err(too_big("regexReplaceAll", out.len()));
        }
    }
    out.push_str(&s[last..]);
    Ok(Value::String(out))
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

/// `loop N` is 0..N; `loop A B` counts from A towards B (exclusive), downwards if B < A.
/// At most `MAX_ITEMS`: a typo such as `loop 100000000` would otherwise make rendering (and
/// so `check-config` in an image's `%test`) take minutes.
fn loop_(a: &[Value]) -> Result<Value, FuncError> {
    let (start, stop) = match a {
        [n] => (0, int_arg(n)?),
        [s, e] => (int_arg(s)?, int_arg(e)?),
        _ => return Err(FuncError::Generic("loop: expected 1 or 2 arguments".into())),
    };
    let len = (i128::from(stop) - i128::from(start)).abs();
    if len > MAX_ITEMS as i128 {
        return Err(FuncError::Generic(format!("loop: {len} items is more than the limit of {MAX_ITEMS}")));
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
        // Go's RE2 semantics, which ContainerPilot had: \d, \w and \b are ASCII.
        assert_eq!(r("{{ .S | regexReplaceAll \"\\\\d\" \"#\" }}", &[("S", "1\u{663}2")]), "#\u{663}#");
        assert_eq!(r("{{ .S | regexReplaceAll \"\\\\w+\" \"<$0>\" }}", &[("S", "ab\u{e9}c")]), "<ab>\u{e9}<c>");
        assert_eq!(
            r("{{ .S | regexReplaceAll \"(?P<k>[a-z]+)=(\\\\d+)\" \"${2}:$k\" }}", &[("S", "a=1 b=22")]),
            "1:a 22:b"
        );
        assert_eq!(r("{{ range loop 3 }}{{.}}{{ end }}", &[]), "012");
        assert_eq!(r("{{ range loop 5 1 }}{{.}}{{ end }}", &[]), "5432");
        assert_eq!(r("{{ range loop 1 .N }}{{.}}{{ end }}", &[("N", "3")]), "12");
    }

    #[test]
    fn unicode_classes_are_refused_with_the_reason() {
        // regex-lite has no Unicode tables (docs/size.md): \pL is an error naming the function.
        let e = render("{{ \"x\" | regexReplaceAll \"\\\\pL\" \"\" }}", &HashMap::new()).unwrap_err();
        assert!(e.message.contains("regexReplaceAll"), "{}", e.message);
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
    fn string_escapes_never_hang_the_parser() {
        // Found by fuzzing: an escape that consumed nothing looped forever in gtmpl's parser.
        for t in [r#"{{ printf "%We\ul" 55 }}"#, r#"{{ "\u" }}"#, r#"{{ "\x" }}"#, r#"{{ "\u12" }}"#, r#"{{ "\U1" }}"#]
        {
            assert!(err(t).message.contains("unable to unqote string"), "{t}: {}", err(t).message);
        }
        assert_eq!(r(r#"{{ "\u00e9\x41\U0001F600\xc3\xa9" }}"#, &[]), "\u{e9}A\u{1F600}\u{e9}");
        assert_eq!(r(r#"{{ "\ud83d\ude00" }}"#, &[]), "\u{1F600}");
        assert_eq!(r("{{ `a\\u` }}", &[]), "a\\u");
    }

    #[test]
    fn kv_keys_are_checked_and_bounded() {
        let env = HashMap::new();
        for key in ["../agent/self", "a?raw", "a#b", "a%2f", "a b", "a\\nb", "", "/", "a/./b"] {
            let t = format!("{{{{ kv \"{key}\" \"d\" }}}}");
            let e = render_with_kv(&t, &env, &Kv::Offline).unwrap_err();
            assert!(e.message.contains("kv: key"), "{key}: {}", e.message);
        }
        let t = "{{ range $i := loop 1000 }}{{ kv (printf \"k/%d\" $i) \"d\" }}{{ end }}";
        let e = render_with_kv(t, &env, &Kv::Offline).unwrap_err();
        assert!(e.message.contains("more than 100 distinct keys"), "{}", e.message);
        let t = "{{ range loop 1000 }}{{ kv \"svc/a-b_c.d/e\" \"d\" }}{{ end }}";
        let (_, keys) = render_with_kv(t, &env, &Kv::Offline).unwrap();
        assert_eq!(keys, vec!["svc/a-b_c.d/e".to_string()]);
    }

    #[test]
    fn errors_carry_a_line() {
        let e = render("a\n{{ .bad", &HashMap::new()).unwrap_err();
        assert_eq!(e.line, Some(2));
        assert!(e.message.starts_with("template:"), "{}", e.message);
    }

    fn err(t: &str) -> Diagnostic {
        render(t, &HashMap::new()).unwrap_err()
    }

    #[test]
    fn error_positions_are_the_real_line_and_column() {
        // gtmpl 0.7.1 counted a line per delimiter: a 1-line file got ":6:1".
        let e = err("{{ if 1 }}{{ end }}{{ if 2 }}{{ end }}{{ nosuch }}");
        assert_eq!((e.line, e.column), (Some(1), Some(42)), "{e}");
        assert!(e.message.contains("function nosuch not defined"), "{}", e.message);
        let e = err("a\nb\n  {{ template \"x\" }}");
        assert_eq!((e.line, e.column), (Some(3), Some(15)), "{e}");
        assert!(e.message.contains("template x not defined"), "{}", e.message);
        let e = err("{\n  a: {{ .X | printf \"%[0]d\" }}\n}");
        assert_eq!(e.line, Some(2), "{e}");
    }

    #[test]
    fn recursion_is_refused_not_a_stack_overflow() {
        let t = "{{ define \"t\" }}{{ template \"t\" }}{{ end }}{{ template \"t\" }}";
        assert_eq!(t.len(), 61);
        let e = err(t);
        assert!(e.message.contains("nested deeper than 100"), "{}", e.message);
        assert_eq!(e.line, Some(1));
        // Mutual recursion with output on the way down.
        let e = err(
            "{{define \"a\"}}x{{template \"b\"}}{{end}}{{define \"b\"}}{{template \"a\"}}{{end}}{{template \"a\"}}",
        );
        assert!(e.message.contains("nested deeper than"), "{}", e.message);
    }

    #[test]
    fn deep_parse_nesting_is_refused() {
        for (open, close) in [("(", ")"), ("{{ if 1 }}", "{{ end }}"), ("{{ range loop 1 }}", "{{ end }}")] {
            let n = 10_000;
            let t = if open == "(" {
                format!("{{{{ {}1{} }}}}", open.repeat(n), close.repeat(n))
            } else {
                format!("{}{}", open.repeat(n), close.repeat(n))
            };
            let e = err(&t);
            assert!(e.message.contains("nesting deeper than 100"), "{open}: {}", e.message);
            assert_eq!(e.line, Some(1));
        }
        let chain = format!("{{{{ if 0 }}}}{}{{{{ end }}}}", "{{ else if 0 }}".repeat(5_000));
        assert!(err(&chain).message.contains("nesting deeper than"));
    }

    #[test]
    fn deepest_allowed_nesting_fits_the_stack() {
        // 99 levels of parentheses inside 99 levels of `if`, inside templates calling each
        // other 99 deep: the worst the limits allow, on the real render thread.
        let (open, close) = ("{{ if 1 }}".repeat(45), "{{ end }}".repeat(45));
        let parens = format!("{{{{ {}1{} }}}}", "(".repeat(50), ")".repeat(50));
        let mut t = String::new();
        for i in 0..99 {
            let call = format!("{{{{ template \"t{}\" }}}}", i + 1);
            t.push_str(&format!("{{{{ define \"t{i}\" }}}}{open}{parens}{call}{close}{{{{ end }}}}"));
        }
        t.push_str(&format!("{{{{ define \"t99\" }}}}{parens}{{{{ end }}}}{{{{ template \"t0\" }}}}"));
        let e = render(&t, &HashMap::new()).unwrap_err();
        assert!(e.message.contains("nested deeper than 2000"), "{}", e.message);
        // Just under the limit, with the deepest parentheses at the bottom (they recurse
        // through more functions per level): this one renders.
        let (open, close) = ("{{ if 1 }}".repeat(90), "{{ end }}".repeat(90));
        let mut t = String::new();
        for i in 0..20 {
            let call = format!("{{{{ template \"t{}\" }}}}", i + 1);
            t.push_str(&format!("{{{{ define \"t{i}\" }}}}{open}{call}{close}{{{{ end }}}}"));
        }
        let parens = format!("{{{{ {}1{} }}}}", "(".repeat(99), ")".repeat(99));
        t.push_str(&format!("{{{{ define \"t20\" }}}}{parens}{{{{ end }}}}{{{{ template \"t0\" }}}}"));
        assert_eq!(render(&t, &HashMap::new()).unwrap(), "1");
    }

    #[test]
    fn bombs_stop_within_the_budget() {
        let started = Instant::now();
        let e = err("{{ range loop 10000 }}{{ range loop 10000 }}{{ range loop 10000 }}x{{ end }}{{ end }}{{ end }}");
        assert!(e.message.contains("rendering stopped"), "{}", e.message);
        let e = err("{{ range loop 10000 }}{{ range loop 10000 }}{{ range loop 10000 }}{{ end }}{{ end }}{{ end }}");
        assert!(e.message.contains("more than 1000000 steps"), "{}", e.message);
        let e = err("{{ printf \"%999999999d\" 1 }}");
        assert!(e.message.contains("larger than 65535"), "{}", e.message);
        let e = err("{{ range loop 10000 }}{{ printf \"%60000d\" 1 }}{{ end }}");
        assert!(e.message.contains("larger than 4 MiB"), "{}", e.message);
        let e = err("{{ range loop 10000 }}{{ $x := printf \"%60000d\" 1 }}{{ end }}");
        assert!(e.message.contains("more than 16777216 bytes"), "{}", e.message);
        let e = err(
            "{{ \"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\" | replaceAll \"a\" (printf \"%60000d\" 1) }}",
        );
        assert!(e.message.contains("replaceAll: the result would be"), "{}", e.message);
        let e = err(
            "{{ printf \"%60000d\" 1 | regexReplaceAll \" \" \"$0$0$0$0$0$0$0$0$0$0$0$0$0$0$0$0$0$0$0$0$0$0$0$0$0$0$0$0$0$0$0$0$0$0$0$0$0$0$0$0$0$0$0$0$0$0$0$0$0$0$0$0$0$0$0$0$0$0$0$0$0$0$0$0$0$0$0$0$0$0$0$0$0$0$0$0$0$0$0$0\" }}",
        );
        // On a loaded machine the time limit may come first: either way it is refused.
        let refused = ["regexReplaceAll: the result would be", "the time limit for rendering ran out"];
        assert!(refused.iter().any(|r| e.message.contains(r)), "{}", e.message);
        let e = err("{{ printf \"%20000d\" 1 | replaceAll \" \" \"a\" | split \"\" }}");
        assert!(e.message.contains("split: 20002 items"), "{}", e.message);
        // Slow calls that the step budget alone would allow for minutes: the deadline.
        let e = err(
            "{{ range loop 10000 }}{{ range loop 100 }}{{ regexReplaceAll \"(ab|cd|ef){1,200}\" \"\" \"x\" }}{{ end }}{{ end }}",
        );
        assert!(e.message.contains("the time limit for rendering ran out"), "{}", e.message);
        // Generous: only "it did not run for minutes" (the bombs above took hours before).
        assert!(started.elapsed() < Duration::from_secs(60));
    }
}
