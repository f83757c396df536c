//! Typed reads of a parsed JSON5 tree with ContainerPilot's decoding rules (mapstructure
//! with `ErrorUnused` and `WeaklyTypedInput`): field names match case-insensitively, unknown
//! keys are errors (here with a "did you mean"), numbers and bools are accepted where a
//! string is expected and numeric strings where a number is. Every problem is recorded with
//! its field path and decoding carries on, so one run of `check-config` lists them all.

use super::diagnostic::{Diagnostic, did_you_mean};
use super::duration;
use serde_json::{Map, Value};
use std::time::Duration;

#[derive(Default)]
pub struct Decoder {
    pub diags: Vec<Diagnostic>,
}

/// One JSON object being decoded; `finish` reports the keys nobody asked for.
pub struct Obj<'a> {
    pub path: String,
    map: &'a Map<String, Value>,
    known: &'static [&'static str],
}

pub fn join(path: &str, key: &str) -> String {
    if path.is_empty() { key.to_string() } else { format!("{path}.{key}") }
}

pub fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

impl<'a> Obj<'a> {
    /// Case-insensitive lookup, as mapstructure does for struct fields. Null counts as absent.
    pub fn get(&self, key: &str) -> Option<&'a Value> {
        self.map
            .get(key)
            .or_else(|| self.map.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)).map(|(_, v)| v))
            .filter(|v| !v.is_null())
    }

    pub fn field(&self, key: &str) -> String {
        join(&self.path, key)
    }

    pub fn finish(self, d: &mut Decoder) {
        for key in self.map.keys() {
            if !self.known.iter().any(|k| k.eq_ignore_ascii_case(key)) {
                let mut msg = format!("unknown key '{}'", shorten(key));
                match did_you_mean(key, self.known) {
                    Some(s) => msg.push_str(&format!("; did you mean '{s}'?")),
                    None => msg.push_str(&format!("; expected one of: {}", self.known.join(", "))),
                }
                d.error(join(&self.path, key), msg);
            }
        }
    }
}

impl Decoder {
    pub fn error(&mut self, path: impl Into<String>, msg: impl Into<String>) {
        self.diags.push(Diagnostic::error(path, msg));
    }

    pub fn warning(&mut self, path: impl Into<String>, msg: impl Into<String>) {
        self.diags.push(Diagnostic::warning(path, msg));
    }

    pub fn object<'a>(&mut self, path: &str, v: &'a Value, known: &'static [&'static str]) -> Option<Obj<'a>> {
        match v {
            Value::Object(map) => {
                // Keys match case-insensitively (mapstructure), so `name` and `Name` in one
                // object would set the same field twice: which one wins is not obvious.
                for field in known {
                    let mut same = map.keys().filter(|k| k.eq_ignore_ascii_case(field));
                    if let (Some(a), Some(b)) = (same.next(), same.next()) {
                        self.error(
                            join(path, b),
                            format!("'{a}' and '{b}' both set '{field}' (keys match case-insensitively)"),
                        );
                    }
                }
                Some(Obj { path: path.to_string(), map, known })
            }
            other => {
                self.error(path, format!("expected an object, got {}", type_name(other)));
                None
            }
        }
    }

    /// A string, or a number/bool written where a string was expected (weak typing).
    pub fn string(&mut self, path: &str, v: &Value) -> Option<String> {
        match v {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(if *b { "1" } else { "0" }.to_string()),
            other => {
                self.error(path, format!("expected a string, got {}", type_name(other)));
                None
            }
        }
    }

    /// An integer within `range`; `what` says what it is ("a TCP port"). A value out of
    /// range is reported as given (`1e30`), never as a saturated conversion of it.
    pub fn int_in(&mut self, path: &str, v: &Value, range: std::ops::RangeInclusive<i64>, what: &str) -> Option<i64> {
        let out_of_range = |d: &mut Decoder| {
            d.error(path, format!("{} is not {what}: expected {}..{}", describe(v), range.start(), range.end()));
            None
        };
        let parsed = match v {
            Value::Number(n) => match (n.as_i64(), n.as_f64()) {
                (Some(i), _) => Some(i),
                // Weak typing truncates a fraction, as Go's int(f) does, but only in range.
                (None, Some(f)) if f.is_finite() && f.trunc() >= i64::MIN as f64 && f.trunc() < i64::MAX as f64 => {
                    Some(f.trunc() as i64)
                }
                _ => return out_of_range(self),
            },
            Value::String(s) => match parse_go_int(s.trim()) {
                Some(i) => Some(i),
                None if !s.trim().is_empty()
                    && s.trim().trim_start_matches(['-', '+']).bytes().all(|b| b.is_ascii_digit()) =>
                {
                    return out_of_range(self);
                }
                None => None,
            },
            Value::Bool(b) => Some(*b as i64),
            _ => None,
        };
        match parsed {
            None => {
                self.error(path, format!("expected an integer, got {}", describe(v)));
                None
            }
            Some(i) if !range.contains(&i) => out_of_range(self),
            Some(i) => Some(i),
        }
    }

    pub fn int(&mut self, path: &str, v: &Value) -> Option<i64> {
        self.int_in(path, v, i64::MIN..=i64::MAX, "a 64-bit integer")
    }

    /// A string that goes to the operating system (a path, a program's argument), where a
    /// NUL byte cannot be passed: an error naming the field instead of a failure later.
    pub fn os_string(&mut self, path: &str, v: &Value) -> Option<String> {
        let s = self.string(path, v)?;
        if s.contains('\0') {
            self.error(path, "contains a NUL character, which cannot be passed to the operating system");
            return None;
        }
        Some(s)
    }

    pub fn bool(&mut self, path: &str, v: &Value) -> Option<bool> {
        let parsed = match v {
            Value::Bool(b) => Some(*b),
            Value::Number(n) => Some(n.as_f64() != Some(0.0)),
            Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
                "1" | "t" | "true" => Some(true),
                "0" | "f" | "false" | "" => Some(false),
                _ => None,
            },
            _ => None,
        };
        if parsed.is_none() {
            self.error(path, format!("expected true or false, got {}", describe(v)));
        }
        parsed
    }

    /// A duration: a bare number of seconds or a Go duration string, within Go's range.
    pub fn duration(&mut self, path: &str, v: &Value) -> Option<Duration> {
        let text = match v {
            Value::Number(n) if n.as_i64().is_none() && n.as_u64().is_none() => {
                let secs = n.as_f64().unwrap_or(f64::NAN);
                return duration::from_secs_f64(secs).map_err(|e| self.error(path, e)).ok();
            }
            Value::Number(_) | Value::String(_) => self.string(path, v)?,
            other => {
                self.error(
                    path,
                    format!("expected a duration like \"10s\" or a number of seconds, got {}", type_name(other)),
                );
                return None;
            }
        };
        duration::parse(&text).map_err(|e| self.error(path, e)).ok()
    }

    /// An array of strings; pilot also accepts a lone string as a one-element list.
    pub fn string_list(&mut self, path: &str, v: &Value) -> Vec<String> {
        match v {
            Value::Array(items) => {
                items.iter().enumerate().filter_map(|(i, item)| self.string(&format!("{path}[{i}]"), item)).collect()
            }
            Value::String(s) => vec![s.clone()],
            Value::Object(m) if m.is_empty() => Vec::new(),
            other => {
                self.error(path, format!("expected an array of strings, got {}", type_name(other)));
                Vec::new()
            }
        }
    }

    /// An array of strings, and only that: ContainerPilot 3.8.0 refuses a lone string for its
    /// `[]string` fields (job and telemetry `tags`), and so does pilot: `tags: "a,b"` would
    /// silently be one tag. The message shows the fix.
    pub fn string_array(&mut self, path: &str, v: &Value) -> Vec<String> {
        match v {
            Value::String(s) => {
                // The fix, quoted, when it is short and plain; a hostile value is not echoed.
                let fix = if s.len() <= 40 && !s.chars().any(char::is_control) {
                    format!("write [{}]", Value::from(s.as_str()))
                } else {
                    "write an array, e.g. [\"web\"]".to_string()
                };
                self.error(path, format!("expected an array of strings, got a string; {fix}"));
                Vec::new()
            }
            other => self.string_list(path, other),
        }
    }

    /// ContainerPilot's `exec`: a string split on single spaces (no shell, no quoting), or
    /// an array whose first element is the program.
    pub fn exec(&mut self, path: &str, v: &Value) -> Option<Vec<String>> {
        let argv: Vec<String> = match v {
            Value::String(s) => {
                if s.trim().contains("  ") {
                    self.warning(path, "has several spaces in a row: ContainerPilot splits exec strings on single spaces, so this passes empty arguments; use an array");
                }
                s.trim().split(' ').map(str::to_string).collect()
            }
            Value::Array(items) => items
                .iter()
                .map(|item| match item {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect(),
            other => {
                self.error(
                    path,
                    format!("expected a command string or an array of arguments, got {}", type_name(other)),
                );
                return None;
            }
        };
        if argv.is_empty() || argv[0].is_empty() {
            self.error(path, "the command is empty: expected a program and its arguments");
            return None;
        }
        if let Some(i) = argv.iter().position(|a| a.contains('\0')) {
            let at = if matches!(v, Value::Array(_)) { format!("{path}[{i}]") } else { path.to_string() };
            self.error(at, "contains a NUL character, which cannot be passed to a program");
            return None;
        }
        Some(argv)
    }
}

fn describe(v: &Value) -> String {
    match v {
        Value::String(s) => format!("\"{}\"", shorten(s)),
        Value::Number(n) => n.to_string(),
        other => type_name(other).to_string(),
    }
}

/// A value as quoted in a diagnostic: at most 100 characters, control characters escaped,
/// so that a hostile value can neither flood the output nor forge lines in it.
pub fn shorten(s: &str) -> String {
    let mut out: String = s.chars().take(100).flat_map(char::escape_debug).collect();
    if s.chars().nth(100).is_some() {
        out.push_str("...");
    }
    out
}

/// `strconv.ParseInt(s, 0, 64)`: decimal, or 0x/0o/0b prefixed.
fn parse_go_int(s: &str) -> Option<i64> {
    let (neg, body) = match s.strip_prefix('-') {
        Some(b) => (true, b),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let value = if let Some(h) = body.strip_prefix("0x").or_else(|| body.strip_prefix("0X")) {
        i64::from_str_radix(h, 16).ok()
    } else if let Some(o) = body.strip_prefix("0o").or_else(|| body.strip_prefix("0O")) {
        i64::from_str_radix(o, 8).ok()
    } else if let Some(b) = body.strip_prefix("0b").or_else(|| body.strip_prefix("0B")) {
        i64::from_str_radix(b, 2).ok()
    } else {
        body.parse().ok()
    }?;
    Some(if neg { -value } else { value })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn weak_typing_matches_mapstructure() {
        let mut d = Decoder::default();
        assert_eq!(d.int("x", &json!("0x10")), Some(16));
        assert_eq!(d.int("x", &json!(1.7)), Some(1));
        assert_eq!(d.string("x", &json!(10)), Some("10".into()));
        assert_eq!(d.bool("x", &json!("")), Some(false));
        assert!(d.diags.is_empty());
        assert_eq!(d.int("x", &json!("ten")), None);
        assert_eq!(d.diags[0].message, "expected an integer, got \"ten\"");
    }

    #[test]
    fn out_of_range_numbers_are_shown_as_given() {
        let mut d = Decoder::default();
        let v: Value = serde_json::from_str("1e30").unwrap();
        assert_eq!(d.int_in("port", &v, 0..=65535, "a TCP port"), None);
        assert_eq!(d.diags[0].message, "1e+30 is not a TCP port: expected 0..65535");
        assert_eq!(d.int_in("port", &json!("99999999999999999999"), 0..=65535, "a TCP port"), None);
        assert!(d.diags[1].message.contains("\"99999999999999999999\" is not a TCP port"), "{}", d.diags[1].message);
        assert_eq!(d.int_in("port", &json!(u64::MAX), 0..=65535, "a TCP port"), None);
        assert_eq!(d.int_in("port", &json!(65536), 0..=65535, "a TCP port"), None);
        assert_eq!(d.int_in("port", &json!(65535.9), 0..=65535, "a TCP port"), Some(65535));
    }

    #[test]
    fn durations_are_range_checked() {
        let mut d = Decoder::default();
        assert_eq!(d.duration("t", &json!(1.5)), Some(Duration::from_millis(1500)));
        assert_eq!(d.duration("t", &json!(10)), Some(Duration::from_secs(10)));
        assert_eq!(d.duration("t", &json!(1e30)), None);
        assert_eq!(d.duration("t", &json!(u64::MAX)), None);
        assert_eq!(d.duration("t", &json!(-1)), None);
        assert_eq!(d.duration("t", &json!("3000000000000000h")), None);
        assert_eq!(d.duration("t", &json!("NaN")), None);
        assert!(
            d.diags.iter().filter(|x| x.message.contains("longer than Go's maximum")).count() == 3,
            "{:?}",
            d.diags
        );
    }

    #[test]
    fn nul_is_refused_where_it_would_reach_the_os() {
        let mut d = Decoder::default();
        assert!(d.exec("e", &json!(["sh", "-c", "a\u{0}b"])).is_none());
        assert_eq!(d.diags[0].path, "e[2]");
        assert!(d.exec("e", &json!("sh a\u{0}b")).is_none());
        assert!(d.os_string("p", &json!("/tmp/a\u{0}")).is_none());
        assert_eq!(d.diags.len(), 3);
    }

    #[test]
    fn keys_differing_only_in_case_are_reported() {
        let mut d = Decoder::default();
        let v = json!({"name": "a", "Name": "b"});
        d.object("jobs[0]", &v, &["name"]).unwrap();
        assert_eq!(d.diags.len(), 1, "{:?}", d.diags);
        assert!(d.diags[0].message.contains("both set 'name'"));
    }

    #[test]
    fn exec_string_splits_on_single_spaces() {
        let mut d = Decoder::default();
        assert_eq!(d.exec("e", &json!(" a  'b c' ")).unwrap(), vec!["a", "", "'b", "c'"]);
        assert_eq!(d.exec("e", &json!(["sh", "-c", 1])).unwrap(), vec!["sh", "-c", "1"]);
        assert!(d.exec("e", &json!("")).is_none());
    }

    #[test]
    fn a_lone_string_for_a_string_array_is_refused_with_the_fix() {
        let mut d = Decoder::default();
        assert_eq!(d.string_array("tags", &json!(["a", "b"])), vec!["a", "b"]);
        assert!(d.diags.is_empty());
        assert!(d.string_array("tags", &json!("web")).is_empty());
        assert_eq!(d.diags[0].message, "expected an array of strings, got a string; write [\"web\"]");
        d.string_array("tags", &json!(format!("x\n{}", "y".repeat(10_000))));
        assert_eq!(d.diags[1].message, "expected an array of strings, got a string; write an array, e.g. [\"web\"]");
    }

    #[test]
    fn unknown_keys_are_reported_with_suggestion() {
        let mut d = Decoder::default();
        let v = json!({"Name": "a", "tll": 3});
        let o = d.object("jobs[0]", &v, &["name", "ttl"]).unwrap();
        assert_eq!(o.get("name"), Some(&json!("a")));
        o.finish(&mut d);
        assert_eq!(d.diags.len(), 1);
        assert_eq!(d.diags[0].path, "jobs[0].tll");
        assert_eq!(d.diags[0].message, "unknown key 'tll'; did you mean 'ttl'?");
    }
}
