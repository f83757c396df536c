//! The two text formats Prometheus scrapes: the classic one (`text/plain; version=0.0.4`)
//! and OpenMetrics 1.0 (`application/openmetrics-text`, ending in `# EOF`), chosen from the
//! scraper's `Accept` header. Written by hand rather than by the `prometheus` crate: pilot
//! needs four metric kinds without labels beyond a few strings, and the crate (which has no
//! OpenMetrics writer) cost more of the static binary than this file (docs/size.md).

use crate::config::MetricKind;
use std::fmt::Write as _;

/// Which text format an answer is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Prometheus' classic text format, for curl, promtool and scrapers that ask for nothing.
    Classic,
    /// OpenMetrics 1.0, for a scraper that asks for it (Prometheus does, first).
    OpenMetrics,
}

impl Format {
    /// The format an `Accept` header asks for: OpenMetrics when it lists
    /// `application/openmetrics-text` with a weight no lower than any text/plain or wildcard
    /// (Prometheus sends both, OpenMetrics first and weighted higher); else the classic one.
    pub fn negotiate(accept: &str) -> Format {
        let (mut open, mut classic) = (0.0f32, 0.0f32);
        for item in accept.split(',') {
            let mut parts = item.split(';');
            let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            let q = parts
                .filter_map(|p| {
                    let (k, v) = p.split_once('=')?;
                    k.trim().eq_ignore_ascii_case("q").then(|| v.trim().parse::<f32>().unwrap_or(0.0))
                })
                .next()
                .unwrap_or(1.0);
            let q = if q.is_finite() { q.clamp(0.0, 1.0) } else { 0.0 };
            match media.as_str() {
                "application/openmetrics-text" => open = open.max(q),
                "text/plain" | "text/*" | "*/*" => classic = classic.max(q),
                _ => {}
            }
        }
        if open > 0.0 && open >= classic { Format::OpenMetrics } else { Format::Classic }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Classic => "text/plain; version=0.0.4; charset=utf-8",
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

/// Builds one exposition: families one after another, each a header then its samples.
pub struct Writer {
    format: Format,
    out: String,
}

impl Writer {
    pub fn new(format: Format) -> Writer {
        Writer { format, out: String::new() }
    }

    /// The `# HELP` and `# TYPE` lines of a family. `name` is the family's name without a
    /// counter's `_total`: OpenMetrics names the family so, while the classic format names it
    /// after its samples (`_total` included), which is what promtool checks.
    pub fn family(&mut self, name: &str, kind: MetricKind, help: &str) {
        let suffix = if kind == MetricKind::Counter && self.format == Format::Classic { "_total" } else { "" };
        let kind = match kind {
            MetricKind::Counter => "counter",
            MetricKind::Gauge => "gauge",
            MetricKind::Histogram => "histogram",
            MetricKind::Summary => "summary",
        };
        let help = escape(help, self.format == Format::OpenMetrics);
        let _ = writeln!(self.out, "# HELP {name}{suffix} {help}\n# TYPE {name}{suffix} {kind}");
    }

    /// One sample: `name` + `suffix` (`_total`, `_bucket`, `_sum`, `_count` or ""), the
    /// series' labels and, for buckets and quantiles, one more label.
    pub fn sample(&mut self, name: &str, suffix: &str, labels: &[(&str, &str)], extra: Option<(&str, f64)>, v: f64) {
        self.out.push_str(name);
        self.out.push_str(suffix);
        let extra = extra.map(|(k, x)| (k, number(x)));
        let all = labels.iter().map(|(k, v)| (*k, *v)).chain(extra.as_ref().map(|(k, x)| (*k, x.as_str())));
        let mut first = true;
        for (k, v) in all {
            self.out.push(if first { '{' } else { ',' });
            first = false;
            let _ = write!(self.out, "{k}=\"{}\"", escape(v, true));
        }
        if !first {
            self.out.push('}');
        }
        self.out.push(' ');
        self.out.push_str(&number(v));
        self.out.push('\n');
    }

    pub fn finish(mut self) -> String {
        if self.format == Format::OpenMetrics {
            self.out.push_str("# EOF\n");
        }
        self.out
    }
}

/// A value as both formats spell it (Go's `+Inf`, `-Inf` and `NaN`; Rust's shortest
/// round-tripping decimal otherwise, which never uses an exponent).
fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf".into() } else { "-Inf".into() }
    } else {
        v.to_string()
    }
}

/// Backslash and newline escaped (HELP text in both formats), and `"` too (label values, and
/// OpenMetrics' HELP).
fn escape(s: &str, quote: bool) -> std::borrow::Cow<'_, str> {
    if !(s.contains(['\\', '\n']) || quote && s.contains('"')) {
        return s.into();
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' if quote => out.push_str("\\\""),
            c => out.push(c),
        }
    }
    out.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_accept_header_gets_openmetrics() {
        // What Prometheus 2.5x and 3.x send.
        let prom2 = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        let prom3 = "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.5,application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=1.0.0;escaping=allow-utf-8;q=0.3,text/plain;version=0.0.4;q=0.2,*/*;q=0.1";
        assert_eq!(Format::negotiate(prom2), Format::OpenMetrics);
        assert_eq!(Format::negotiate(prom3), Format::OpenMetrics);
        assert_eq!(Format::negotiate("Application/OpenMetrics-Text"), Format::OpenMetrics);
        for classic in [
            "",
            "*/*",
            "text/plain",
            "text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
            "application/openmetrics-text;q=0",
            "application/openmetrics-text;q=0.2,text/plain;q=0.9",
            "application/openmetrics-text;q=NaN",
            "application/openmetrics-text;q=garbage",
        ] {
            assert_eq!(Format::negotiate(classic), Format::Classic, "{classic}");
        }
    }

    #[test]
    fn formats_differ_in_counter_family_names_and_eof() {
        for (format, head, tail) in [
            (Format::Classic, "# HELP a_total h\\\\\\n\"x\"\n# TYPE a_total counter\n", ""),
            (Format::OpenMetrics, "# HELP a h\\\\\\n\\\"x\\\"\n# TYPE a counter\n", "# EOF\n"),
        ] {
            let mut w = Writer::new(format);
            w.family("a", MetricKind::Counter, "h\\\n\"x\"");
            w.sample("a", "_total", &[("job", "q\"\\\n")], None, 3.0);
            w.sample("a", "_bucket", &[], Some(("le", f64::INFINITY)), f64::NAN);
            let want = format!("{head}a_total{{job=\"q\\\"\\\\\\n\"}} 3\na_bucket{{le=\"+Inf\"}} NaN\n{tail}");
            assert_eq!(w.finish(), want);
        }
    }
}
