//! JSON5 text to a JSON value, refusing what a config must not contain before it can do
//! harm: nesting deeper than [`MAX_NESTING`] (the parser recurses once per level, and 10,000
//! `[` overflowed the control thread's stack on reload), a key given twice in one object
//! (JSON5 keeps the last one silently, so a templated duplicate would override a value
//! nobody sees), and `NaN`/`Infinity` (JSON cannot hold them: they became `null`, and so the
//! default, without a word).

use super::diagnostic::Diagnostic;
use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};
use std::cell::RefCell;
use std::collections::HashSet;
use std::fmt;

/// How deeply arrays and objects may nest. ContainerPilot configs need fewer than 10
/// levels; 64 leaves room for any hand-written `meta` while keeping the parser's recursion
/// far inside the smallest thread stack pilot parses on.
pub const MAX_NESTING: usize = 64;

/// Parse JSON5 text, turning an error into a diagnostic with line, column, the offending
/// line and a caret under the column.
pub fn parse(text: &str) -> Result<Value, Diagnostic> {
    check_nesting(text)?;
    let problem = RefCell::new(None);
    let mut de = json5::Deserializer::from_str(text);
    let parsed = ValueSeed { path: String::new(), problem: &problem }.deserialize(&mut de);
    // json5 only checks for trailing characters in `from_str`: do the same.
    let parsed = parsed.and_then(|v| json5::from_str::<serde::de::IgnoredAny>(text).map(|_| v));
    parsed.map_err(|e| {
        let pos = e.position();
        let mut msg = e.to_string();
        if let Some(p) = pos {
            msg = msg.strip_suffix(&format!(" at {p}")).unwrap_or(&msg).to_string();
        }
        let (line, col) = pos.map_or((1, 1), |p| (p.line + 1, p.column + 1));
        let d = match problem.into_inner() {
            Some(Problem { path, message }) => Diagnostic::error(path, message),
            None => {
                let mut message = format!("JSON5 syntax: {msg}");
                match text.lines().nth(line - 1) {
                    // A literal token in the config is not in the environment, so redaction
                    // cannot know it: do not print a line that names one.
                    Some(src) if src.to_ascii_lowercase().contains("token") => {
                        message.push_str("\n    (the line is not shown: it may hold a token)")
                    }
                    Some(src) => message.push_str(&format!("\n    {src}\n    {}^", " ".repeat(col - 1))),
                    None => {}
                }
                if msg.contains("comma") {
                    message.push_str("\n    (a comma is missing between two members, or after the previous line)");
                }
                Diagnostic::error("", message)
            }
        };
        if pos.is_some() { d.at(line, col) } else { d }
    })
}

/// Scan for the first bracket nested deeper than `MAX_NESTING`, skipping strings and
/// comments the way JSON5 defines them, so that the parser never sees such a text.
fn check_nesting(text: &str) -> Result<(), Diagnostic> {
    let bytes = text.as_bytes();
    let mut depth = 0usize;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            quote @ (b'"' | b'\'') => {
                i += 1;
                while i < bytes.len() && bytes[i] != quote {
                    // An escape skips the next byte (an escaped quote, or a line continuation).
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
            }
            b'/' if bytes.get(i + 1) == Some(&b'/') => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                i = text[i + 2..].find("*/").map_or(bytes.len(), |end| i + 2 + end + 1);
            }
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_NESTING {
                    let (line, col) = super::template::line_col(text, i);
                    return Err(Diagnostic::error(
                        "",
                        format!(
                            "arrays and objects nested deeper than {MAX_NESTING} levels (a config needs fewer than 10)"
                        ),
                    )
                    .at(line, col));
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    Ok(())
}

/// What made the value visitor fail: reported with this path instead of as a syntax error.
struct Problem {
    path: String,
    message: String,
}

/// Deserializes any JSON5 value into a `serde_json::Value`, knowing where it is.
struct ValueSeed<'p> {
    path: String,
    problem: &'p RefCell<Option<Problem>>,
}

impl ValueSeed<'_> {
    fn fail<E: serde::de::Error>(&self, message: String) -> E {
        *self.problem.borrow_mut() = Some(Problem { path: self.path.clone(), message: message.clone() });
        E::custom(message)
    }
}

impl<'de> DeserializeSeed<'de> for ValueSeed<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<Value, D::Error> {
        de.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ValueSeed<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON5 value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Value, E> {
        match serde_json::Number::from_f64(v) {
            Some(n) => Ok(Value::Number(n)),
            None => Err(self.fail(format!("{v} is not a usable number here: write a finite number or a string"))),
        }
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, de: D) -> Result<Value, D::Error> {
        de.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        loop {
            let seed = ValueSeed { path: format!("{}[{}]", self.path, items.len()), problem: self.problem };
            match seq.next_element_seed(seed)? {
                Some(v) => items.push(v),
                None => return Ok(Value::Array(items)),
            }
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        let mut seen = HashSet::new();
        while let Some(key) = map.next_key_seed(KeySeed { seen: &seen, parent: &self })? {
            seen.insert(key.clone());
            let path = super::decode::join(&self.path, &key);
            let value = map.next_value_seed(ValueSeed { path, problem: self.problem })?;
            out.insert(key, value);
        }
        Ok(Value::Object(out))
    }
}

/// An object key, refused if the object already has it. Failing here (in the key's
/// visitor) makes json5 report the position of the second key.
struct KeySeed<'a, 'p> {
    seen: &'a HashSet<String>,
    parent: &'a ValueSeed<'p>,
}

impl<'de> DeserializeSeed<'de> for KeySeed<'_, '_> {
    type Value = String;

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<String, D::Error> {
        de.deserialize_str(self)
    }
}

impl Visitor<'_> for KeySeed<'_, '_> {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_str<E: serde::de::Error>(self, key: &str) -> Result<String, E> {
        if self.seen.contains(key) {
            let path = super::decode::join(&self.parent.path, key);
            let message = format!("duplicate key '{key}': only one value may be given (JSON5 would keep the last)");
            *self.parent.problem.borrow_mut() = Some(Problem { path, message: message.clone() });
            return Err(E::custom(message));
        }
        Ok(key.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syntax_errors_point_at_line_and_column() {
        let d = parse("{\n  a: 1\n  b: 2\n}").unwrap_err();
        assert_eq!(d.line, Some(3));
        assert!(d.message.contains("expected comma"), "{}", d.message);
        assert!(d.message.contains("b: 2"), "{}", d.message);
        assert!(parse("{a: 1} x").unwrap_err().message.contains("trailing"), "trailing characters");
    }

    #[test]
    fn values_come_through() {
        let v = parse("{a: [1, -2, 1.5, 'x', true, null], b: {c: 0x10}, // c\n /* d */ e: +Infinity-Infinity}");
        assert!(v.is_err());
        let v = parse("{a: [1, -2, 1.5, 'x', true, null], b: {c: 0x10}, // c\n /* d */}").unwrap();
        assert_eq!(v, serde_json::json!({"a": [1, -2, 1.5, "x", true, null], "b": {"c": 16}}));
    }

    #[test]
    fn duplicate_keys_are_errors_with_path_and_position() {
        let d = parse("{\n  jobs: [{name: 'a',\n    name: 'b'}]\n}").unwrap_err();
        assert_eq!(d.path, "jobs[0].name");
        assert!(d.message.contains("duplicate key 'name'"), "{}", d.message);
        assert_eq!((d.line, d.column), (Some(3), Some(5)));
        assert!(parse("{a: {x: 1}, b: {x: 1}}").is_ok());
    }

    #[test]
    fn nan_and_infinity_are_errors() {
        for t in ["{a: NaN}", "{a: Infinity}", "{a: -Infinity}", "{a: [1, +Infinity]}"] {
            let d = parse(t).unwrap_err();
            assert!(d.message.contains("not a usable number"), "{t}: {}", d.message);
            assert!(d.line.is_some(), "{t}");
        }
        assert_eq!(parse("{a: NaN}").unwrap_err().path, "a");
    }

    #[test]
    fn deep_nesting_is_refused_before_parsing() {
        for n in [65, 10_000, 40_000] {
            let t = format!("{{jobs:\n  {}", "[".repeat(n));
            let d = parse(&t).unwrap_err();
            assert!(d.message.contains("nested deeper than 64"), "{}", d.message);
            assert_eq!((d.line, d.column), (Some(2), Some(66)), "{n}");
        }
        let ok = format!("{}{}", "[".repeat(64), "]".repeat(64));
        assert!(parse(&ok).is_ok());
        // Brackets inside strings and comments do not count.
        let quoted = format!(
            "{{a: '{}', b: \"{}\\\"[\" // {}\n /* {} */}}",
            "[".repeat(100),
            "{".repeat(100),
            "[".repeat(100),
            "[".repeat(100)
        );
        assert!(parse(&quoted).is_ok(), "{:?}", parse(&quoted));
    }
}
