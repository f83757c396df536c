//! Durations the way ContainerPilot reads them: a bare integer (number or string) is
//! seconds; otherwise Go's `time.ParseDuration` syntax (`1h30m`, `500ms`, `1.5s`).
//!
//! Parsed in integer nanoseconds with overflow checks, as Go does: anything longer than Go's
//! `time.Duration` can hold (2^63-1 ns, about 292 years) is an error, not a panic of
//! `Duration::from_secs_f64` or of a deadline computed from it later. `NaN`, `Inf` and
//! friends are not durations.

use std::time::Duration;

/// Go's largest `time.Duration`, in nanoseconds.
pub const MAX_NANOS: u64 = i64::MAX as u64;
/// The same in whole seconds: the largest bare number of seconds accepted.
pub const MAX_SECS: u64 = MAX_NANOS / 1_000_000_000;

fn too_long(s: &str) -> String {
    format!("duration '{s}' is longer than Go's maximum of 2562047h47m16.854775807s")
}

/// Parse a Go duration string or bare seconds. Negative values are rejected: pilot has no
/// use for them, and a typo'd sign is better caught than silently treated as zero.
pub fn parse(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    if s.is_empty() {
        return Err("expected a duration like \"10s\" or \"500ms\", got an empty string".into());
    }
    let (negative, body) = match s.as_bytes()[0] {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    if !body.is_empty() && body.bytes().all(|b| b.is_ascii_digit()) {
        // A bare integer is seconds (ContainerPilot); "-0" is zero, as in Go.
        let zero = body.bytes().all(|b| b == b'0');
        if negative && !zero {
            return Err(format!("duration '{s}' must not be negative"));
        }
        return match body.parse::<u64>() {
            Ok(secs) if secs <= MAX_SECS => Ok(Duration::from_secs(secs)),
            _ => Err(too_long(s)),
        };
    }
    let nanos = parse_go(body).map_err(|e| match e {
        GoError::Invalid => invalid(s),
        GoError::Overflow => too_long(s),
        GoError::MissingUnit => format!("duration '{s}' is missing a unit (ns, us, ms, s, m, h)"),
        GoError::UnknownUnit(u) => {
            format!("duration '{s}' has unknown unit '{u}' (expected ns, us, ms, s, m or h)")
        }
    })?;
    if negative && nanos != 0 {
        return Err(format!("duration '{s}' must not be negative"));
    }
    Ok(Duration::from_nanos(nanos))
}

/// A number of seconds from a JSON number: finite, not negative, within Go's range.
pub fn from_secs_f64(secs: f64) -> Result<Duration, String> {
    if !secs.is_finite() {
        return Err(format!("{secs} is not a duration"));
    }
    if secs < 0.0 {
        return Err(format!("duration {secs} must not be negative"));
    }
    let nanos = (secs * 1e9).round();
    // 2^63 as f64; every f64 below it converts to u64 exactly enough.
    if nanos >= 9_223_372_036_854_775_808.0 {
        return Err(too_long(&secs.to_string()));
    }
    Ok(Duration::from_nanos(nanos as u64))
}

enum GoError {
    Invalid,
    Overflow,
    MissingUnit,
    UnknownUnit(String),
}

/// Go's `time.ParseDuration` on a string without its sign, in nanoseconds.
fn parse_go(mut s: &str) -> Result<u64, GoError> {
    if s == "0" {
        return Ok(0);
    }
    if s.is_empty() {
        return Err(GoError::Invalid);
    }
    let mut total: u128 = 0;
    while !s.is_empty() {
        let digits = |t: &str| t.bytes().take_while(u8::is_ascii_digit).count();
        let int_len = digits(s);
        let (int_part, rest) = s.split_at(int_len);
        let (frac_part, rest) = match rest.strip_prefix('.') {
            Some(r) => r.split_at(digits(r)),
            None => ("", rest),
        };
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(GoError::Invalid);
        }
        let unit_len = rest.find(|c: char| c == '.' || c.is_ascii_digit()).unwrap_or(rest.len());
        let (unit, rest) = rest.split_at(unit_len);
        let scale: u128 = match unit {
            "ns" => 1,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "" => return Err(GoError::MissingUnit),
            other => return Err(GoError::UnknownUnit(other.to_string())),
        };
        // The integer part: more than 20 digits overflows whatever the unit.
        let whole: u128 = if int_part.is_empty() {
            0
        } else if int_part.trim_start_matches('0').len() > 20 {
            return Err(GoError::Overflow);
        } else {
            int_part.parse().map_err(|_| GoError::Invalid)?
        };
        // The fraction: its first 20 digits are more precise than a nanosecond of an hour.
        let frac_digits = &frac_part[..frac_part.len().min(20)];
        let frac: u128 = if frac_digits.is_empty() { 0 } else { frac_digits.parse().map_err(|_| GoError::Invalid)? };
        let frac_nanos = frac * scale / 10u128.pow(frac_digits.len() as u32);
        total = total.saturating_add(whole.saturating_mul(scale)).saturating_add(frac_nanos);
        if total > u128::from(MAX_NANOS) {
            return Err(GoError::Overflow);
        }
        s = rest;
    }
    Ok(total as u64)
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
        assert!(parse("-5").unwrap_err().contains("negative"));
        assert!(parse("").is_err());
        assert!(parse(".s").unwrap_err().contains("invalid duration"));
        assert!(parse("1..5s").is_err());
    }

    #[test]
    fn go_syntax_in_integer_nanoseconds() {
        assert_eq!(parse("1h2m3s4ms5us6ns").unwrap(), Duration::new(3723, 4_005_006));
        assert_eq!(parse("1.000000001s").unwrap(), Duration::new(1, 1));
        assert_eq!(parse(".5m").unwrap(), Duration::from_secs(30));
        assert_eq!(parse("1\u{b5}s").unwrap(), Duration::from_micros(1));
        assert_eq!(parse("-0").unwrap(), Duration::ZERO);
        assert_eq!(parse("+10s").unwrap(), Duration::from_secs(10));
    }

    #[test]
    fn longer_than_go_allows_is_an_error_not_a_panic() {
        let max = "2562047h47m16.854775807s";
        assert_eq!(parse(max).unwrap(), Duration::from_nanos(MAX_NANOS));
        for s in [
            "2562047h47m16.854775808s",
            "3000000000000000h",
            "99999999999999999999h",
            "9999999999999999999999999999999999999999ns",
            "9223372037",
            "99999999999999999999999",
            "2562048h",
        ] {
            let e = parse(s).unwrap_err();
            assert!(e.contains("longer than Go's maximum of 2562047h47m16.854775807s"), "{s}: {e}");
        }
        assert_eq!(parse("9223372036").unwrap(), Duration::from_secs(MAX_SECS));
    }

    #[test]
    fn nan_and_infinity_are_not_durations() {
        for s in ["NaN", "nan", "Inf", "inf", "+Inf", "-Infinity", "Infinity", "1e9", "0x10"] {
            assert!(parse(s).is_err(), "{s}");
        }
        assert!(from_secs_f64(f64::NAN).is_err());
        assert!(from_secs_f64(f64::INFINITY).is_err());
        assert!(from_secs_f64(1e30).unwrap_err().contains("longer than"));
        assert!(from_secs_f64(-1.5).unwrap_err().contains("negative"));
        assert_eq!(from_secs_f64(1.5).unwrap(), Duration::from_millis(1500));
    }
}
