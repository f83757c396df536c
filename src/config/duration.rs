//! Durations the way ContainerPilot reads them: a bare integer (number or string) is
//! seconds; otherwise Go's `time.ParseDuration` syntax (`1h30m`, `500ms`, `1.5s`).

use std::time::Duration;

/// Parse a Go duration string or bare seconds. Negative values are rejected: pilot has no
/// use for them, and a typo'd sign is better caught than silently treated as zero.
pub fn parse(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    if s.is_empty() {
        return Err("expected a duration like \"10s\" or \"500ms\", got an empty string".into());
    }
    if let Ok(secs) = s.parse::<i64>() {
        return u64::try_from(secs)
            .map(Duration::from_secs)
            .map_err(|_| format!("duration '{s}' must not be negative"));
    }
    if s.starts_with('-') {
        return Err(format!("duration '{s}' must not be negative"));
    }
    let mut rest = s.strip_prefix('+').unwrap_or(s);
    let mut total = 0f64;
    while !rest.is_empty() {
        let num_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        let (num, tail) = rest.split_at(num_len);
        let value: f64 = num.parse().map_err(|_| invalid(s))?;
        let unit_len = tail.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let scale = match unit {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "" => return Err(format!("duration '{s}' is missing a unit (ns, us, ms, s, m, h)")),
            other => return Err(format!("duration '{s}' has unknown unit '{other}' (expected ns, us, ms, s, m or h)")),
        };
        total += value * scale;
        rest = tail;
    }
    Ok(Duration::from_secs_f64(total))
}

fn invalid(s: &str) -> String {
    format!("invalid duration '{s}': expected a number of seconds or a value like \"10s\", \"1m30s\", \"500ms\"")
}

/// Render a duration the way Consul and Go print them (`15s`, `1m0s` is not needed).
pub fn to_go_string(d: Duration) -> String {
    if d.subsec_nanos() == 0 { format!("{}s", d.as_secs()) } else { format!("{}ms", d.as_millis()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_containerpilot_forms() {
        assert_eq!(parse("10").unwrap(), Duration::from_secs(10));
        assert_eq!(parse("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse("0").unwrap(), Duration::ZERO);
    }

    #[test]
    fn rejects_bad_forms_with_reason() {
        assert!(parse("1.5").unwrap_err().contains("missing a unit"));
        assert!(parse("10x").unwrap_err().contains("unknown unit 'x'"));
        assert!(parse("xx").unwrap_err().contains("invalid duration"));
        assert!(parse("-5s").unwrap_err().contains("negative"));
        assert!(parse("").is_err());
    }
}
