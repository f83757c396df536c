//! HTCondor's "old" ClassAd text, as the starter writes `$_CONDOR_JOB_AD` and
//! `$_CONDOR_MACHINE_AD`: one `Name = expression` per line. pilot needs only the literal
//! values (strings, numbers, booleans); any other expression is kept as its text.
//! Attribute names are case-insensitive, as in HTCondor.

use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Str(String),
    Int(i64),
    Real(f64),
    Bool(bool),
    Undefined,
    /// An expression pilot does not evaluate, as written.
    Expr(String),
}

impl Value {
    /// The value as text for meta and templates: strings unquoted, the rest as written.
    pub fn text(&self) -> String {
        match self {
            Value::Str(s) => s.clone(),
            Value::Int(i) => i.to_string(),
            Value::Real(r) => r.to_string(),
            Value::Bool(b) => {
                if *b {
                    "true".into()
                } else {
                    "false".into()
                }
            }
            Value::Undefined => "undefined".into(),
            Value::Expr(e) => e.clone(),
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct Ad {
    /// lower-cased name → (name as written, value)
    attrs: BTreeMap<String, (String, Value)>,
}

impl Ad {
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.attrs.get(&name.to_ascii_lowercase()).map(|(_, v)| v)
    }

    pub fn text(&self, name: &str) -> Option<String> {
        self.get(name).filter(|v| **v != Value::Undefined).map(Value::text)
    }

    pub fn len(&self) -> usize {
        self.attrs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.attrs.is_empty()
    }

    /// Every attribute, with its name as written.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.attrs.values().map(|(n, v)| (n.as_str(), v))
    }
}

/// Parse an ad; `file` names it in errors, which carry the line number.
pub fn parse(text: &str, file: &str) -> Result<Ad, String> {
    let mut ad = Ad::default();
    let lines: Vec<&str> = text.lines().collect();
    let mut i = 0;
    while i < lines.len() {
        let (number, line) = (i + 1, lines[i].trim_start());
        i += 1;
        // Blank lines, comments, and the separators of `condor_q -long` output.
        if line.trim().is_empty() || line.starts_with('#') || line.starts_with("***") {
            continue;
        }
        let (name, expr) = line
            .split_once('=')
            .ok_or_else(|| format!("{file}:{number}: expected 'Name = value', got '{}'", line.trim()))?;
        let name = name.trim();
        if name.is_empty()
            || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
            || name.starts_with(|c: char| c.is_ascii_digit())
        {
            return Err(format!("{file}:{number}: '{name}' is not an attribute name"));
        }
        // HTCondor writes a string holding a newline as is: the value goes on over lines.
        let mut expr = expr.trim().to_string();
        while expr.starts_with('"') && string(&expr[1..]).is_none() && !expr.ends_with("\\\"") && i < lines.len() {
            expr.push('\n');
            expr.push_str(lines[i]);
            i += 1;
        }
        let value = literal(expr.trim_end()).map_err(|e| format!("{file}:{number}: {name}: {e}"))?;
        ad.attrs.insert(name.to_ascii_lowercase(), (name.to_string(), value));
    }
    Ok(ad)
}

fn literal(expr: &str) -> Result<Value, String> {
    if let Some(rest) = expr.strip_prefix('"') {
        let (text, tail) = string(rest)
            // `"ends with \"`: old ClassAds cannot tell a final backslash from an escaped
            // quote; HTCondor writes it so, so read it so.
            .or_else(|| rest.strip_suffix("\\\"").filter(|r| string(r).is_none()).map(|r| (unescape(r) + "\\", "")))
            .ok_or("unterminated string: no closing quote")?;
        // `"a" + x` and the like are expressions, not literals.
        return Ok(if tail.trim().is_empty() { Value::Str(text) } else { Value::Expr(expr.to_string()) });
    }
    match expr.to_ascii_lowercase().as_str() {
        "true" => return Ok(Value::Bool(true)),
        "false" => return Ok(Value::Bool(false)),
        "undefined" => return Ok(Value::Undefined),
        _ => {}
    }
    if let Ok(i) = expr.parse::<i64>() {
        return Ok(Value::Int(i));
    }
    if expr.contains(['.', 'e', 'E'])
        && let Ok(r) = expr.parse::<f64>()
    {
        return Ok(Value::Real(r));
    }
    if expr.is_empty() {
        return Err("no value after '='".into());
    }
    Ok(Value::Expr(expr.to_string()))
}

/// A string after its opening quote, in old-ClassAd syntax: only `\"` is an escape (a
/// quote); any other backslash is itself. Its text and what follows the closing quote.
fn string(rest: &str) -> Option<(String, &str)> {
    let mut chars = rest.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((unescape(&rest[..i]), &rest[i + 1..])),
            '\\' if chars.peek().is_some_and(|(_, n)| *n == '"') => {
                chars.next();
            }
            _ => {}
        }
    }
    None
}

fn unescape(s: &str) -> String {
    s.replace("\\\"", "\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_and_expressions() {
        let ad = parse(
            "GlobalJobId = \"submit.example#12.3#1700000000\"\nClusterId = 12\nProcId = 3\nRequestMemory = 2048.5\nWantIOProxy = TRUE\nRequirements = (TARGET.Arch == \"X86_64\")\nNote = \"say \\\"hi\\\" \\ back\"\nNothing = undefined\n",
            "job.ad",
        )
        .unwrap();
        assert_eq!(ad.text("globaljobid").unwrap(), "submit.example#12.3#1700000000");
        assert_eq!(ad.get("ClusterId"), Some(&Value::Int(12)));
        assert_eq!(ad.get("RequestMemory"), Some(&Value::Real(2048.5)));
        assert_eq!(ad.get("WantIOProxy"), Some(&Value::Bool(true)));
        assert_eq!(ad.text("Requirements").unwrap(), "(TARGET.Arch == \"X86_64\")");
        assert_eq!(ad.text("Note").unwrap(), "say \"hi\" \\ back");
        assert_eq!(ad.text("Nothing"), None);
    }

    #[test]
    fn errors_name_the_file_and_line() {
        let e = parse("A = 1\nthis is not an attribute\n", "job.ad").unwrap_err();
        assert!(e.starts_with("job.ad:2:"), "{e}");
        let e = parse("A = \"open\n", "job.ad").unwrap_err();
        assert!(e.contains("job.ad:1: A: unterminated string"), "{e}");
        let ad = parse("A = \"line1\nline2\"\nB = \"ends with \\\"\nC = \"x\\\\\"y\"\n", "job.ad").unwrap();
        assert_eq!(ad.text("A").unwrap(), "line1\nline2");
        assert_eq!(ad.text("B").unwrap(), "ends with \\");
        assert_eq!(ad.text("C").unwrap(), "x\\\"y");
    }
}
