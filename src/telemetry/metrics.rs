//! The metrics pilot exposes: ContainerPilot's built-in ones (`containerpilot_events_total`,
//! `containerpilot_control_http_requests_total`, `containerpilot_watch_instances`: CP's names
//! with the `_total` that Prometheus' conventions give counters), pilot's own, and the
//! config's `telemetry.metrics`, fed by `putmetric`. A small data model of our own, written
//! out by `exposition` in the format the scraper asks for.

use super::exposition::{Format, Writer};
use crate::config::{Metric, MetricKind};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};

/// How many recent observations a summary keeps for its quantiles.
const SUMMARY_WINDOW: usize = 1024;
const QUANTILES: [f64; 3] = [0.5, 0.9, 0.99];
/// The `prometheus` crate's and Go client's default buckets, which pilot has always used.
const BUCKETS: [f64; 11] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// The state of one series of each kind.
pub trait Value: Default + Send {
    const KIND: MetricKind;
    /// Write this series' samples; `name` is the family's name (a counter's without `_total`).
    fn write(&self, w: &mut Writer, name: &str, labels: &[(&str, &str)]);
}

#[derive(Default)]
pub struct CounterValue(f64);
#[derive(Default)]
pub struct GaugeValue(f64);
#[derive(Default)]
pub struct HistogramValue {
    /// Observations at or below each of `BUCKETS` (cumulative, as exposed).
    buckets: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}
/// The last `SUMMARY_WINDOW` observations for the quantiles; sum and count over all time.
#[derive(Default)]
pub struct SummaryValue {
    window: VecDeque<f64>,
    sum: f64,
    count: u64,
}

impl Value for CounterValue {
    const KIND: MetricKind = MetricKind::Counter;
    fn write(&self, w: &mut Writer, name: &str, labels: &[(&str, &str)]) {
        w.sample(name, "_total", labels, None, self.0);
    }
}

impl Value for GaugeValue {
    const KIND: MetricKind = MetricKind::Gauge;
    fn write(&self, w: &mut Writer, name: &str, labels: &[(&str, &str)]) {
        w.sample(name, "", labels, None, self.0);
    }
}

impl Value for HistogramValue {
    const KIND: MetricKind = MetricKind::Histogram;
    fn write(&self, w: &mut Writer, name: &str, labels: &[(&str, &str)]) {
        for (le, n) in BUCKETS.iter().zip(self.buckets) {
            w.sample(name, "_bucket", labels, Some(("le", *le)), n as f64);
        }
        w.sample(name, "_bucket", labels, Some(("le", f64::INFINITY)), self.count as f64);
        w.sample(name, "_sum", labels, None, self.sum);
        w.sample(name, "_count", labels, None, self.count as f64);
    }
}

impl Value for SummaryValue {
    const KIND: MetricKind = MetricKind::Summary;
    fn write(&self, w: &mut Writer, name: &str, labels: &[(&str, &str)]) {
        let mut sorted: Vec<f64> = self.window.iter().copied().collect();
        sorted.sort_by(|a, b| a.total_cmp(b));
        for q in QUANTILES {
            let v = if sorted.is_empty() { f64::NAN } else { sorted[((sorted.len() - 1) as f64 * q).round() as usize] };
            w.sample(name, "", labels, Some(("quantile", q)), v);
        }
        w.sample(name, "_sum", labels, None, self.sum);
        w.sample(name, "_count", labels, None, self.count as f64);
    }
}

/// A metric family: its series by label values. The label values pilot uses come from the
/// config (job, watch and event names, a fixed list of control paths), so the number of
/// series is bounded by it.
pub struct Family<V> {
    /// The family's name; a counter's without `_total` (see `exposed_name`).
    name: String,
    help: String,
    labels: &'static [&'static str],
    series: Mutex<BTreeMap<Vec<String>, V>>,
}

/// One series of a family, as `Family::with_label_values` returns it.
pub struct Series<'a, V> {
    family: &'a Family<V>,
    key: Vec<String>,
}

impl<V: Value> Family<V> {
    fn new(name: &str, help: &str, labels: &'static [&'static str]) -> Family<V> {
        let name = match V::KIND {
            MetricKind::Counter => name.strip_suffix("_total").unwrap_or(name),
            _ => name,
        };
        // promtool and Prometheus want help on every family; the config's `help` is optional.
        let help = if help.trim().is_empty() { "set by pilot putmetric (no help in the config)" } else { help };
        Family { name: name.into(), help: help.into(), labels, series: Mutex::new(BTreeMap::new()) }
    }

    /// The series with these label values (one per label name, in order).
    pub fn with_label_values(&self, values: &[&str]) -> Series<'_, V> {
        debug_assert_eq!(values.len(), self.labels.len(), "{}: label values", self.name);
        Series { family: self, key: values.iter().map(|v| v.to_string()).collect() }
    }

    fn update(&self, key: &[String], f: impl FnOnce(&mut V)) {
        let mut series = self.series.lock().unwrap_or_else(|e| e.into_inner());
        match series.get_mut(key) {
            Some(v) => f(v),
            None => f(series.entry(key.to_vec()).or_default()),
        }
    }

    /// Every sample name this family writes, for clash checks between families.
    fn names(&self) -> Vec<String> {
        let suffixes: &[&str] = match V::KIND {
            MetricKind::Counter => &["", "_total"],
            MetricKind::Gauge => &[""],
            MetricKind::Histogram => &["", "_bucket", "_sum", "_count"],
            MetricKind::Summary => &["", "_sum", "_count"],
        };
        suffixes.iter().map(|s| format!("{}{s}", self.name)).collect()
    }
}

impl Family<CounterValue> {
    /// A counter without labels goes up by one.
    pub fn inc(&self) {
        self.with_label_values(&[]).inc();
    }

    /// The value of a counter without labels.
    pub fn get(&self) -> f64 {
        self.series.lock().unwrap_or_else(|e| e.into_inner()).get(&Vec::new()).map_or(0.0, |v| v.0)
    }
}

impl Series<'_, CounterValue> {
    pub fn inc(&self) {
        self.inc_by(1.0);
    }

    /// Adds `v`; a negative or non-finite `v` is ignored (a counter only goes up).
    pub fn inc_by(&self, v: f64) {
        if v.is_finite() && v >= 0.0 {
            self.family.update(&self.key, |c| c.0 += v);
        }
    }
}

impl Series<'_, GaugeValue> {
    pub fn set(&self, v: f64) {
        self.family.update(&self.key, |g| g.0 = v);
    }
}

impl Series<'_, HistogramValue> {
    pub fn observe(&self, v: f64) {
        self.family.update(&self.key, |h| {
            for (le, n) in BUCKETS.iter().zip(h.buckets.iter_mut()) {
                if v <= *le {
                    *n += 1;
                }
            }
            h.sum += v;
            h.count += 1;
        });
    }
}

impl Series<'_, SummaryValue> {
    pub fn observe(&self, v: f64) {
        self.family.update(&self.key, |s| {
            if s.window.len() == SUMMARY_WINDOW {
                s.window.pop_front();
            }
            s.window.push_back(v);
            s.sum += v;
            s.count += 1;
        });
    }
}

/// A family of any kind, for writing them all out in one order.
trait Exposed: Send + Sync {
    fn name(&self) -> &str;
    fn names(&self) -> Vec<String>;
    fn write(&self, w: &mut Writer);
}

impl<V: Value> Exposed for Family<V> {
    fn name(&self) -> &str {
        &self.name
    }

    fn names(&self) -> Vec<String> {
        Family::names(self)
    }

    fn write(&self, w: &mut Writer) {
        let series = self.series.lock().unwrap_or_else(|e| e.into_inner());
        if series.is_empty() && !self.labels.is_empty() {
            return;
        }
        w.family(&self.name, V::KIND, &self.help);
        if series.is_empty() {
            V::default().write(w, &self.name, &[]);
        }
        for (values, v) in series.iter() {
            let labels: Vec<(&str, &str)> =
                self.labels.iter().copied().zip(values.iter().map(String::as_str)).collect();
            v.write(w, &self.name, &labels);
        }
    }
}

pub type CounterVec = Family<CounterValue>;
pub type GaugeVec = Family<GaugeValue>;
pub type HistogramVec = Family<HistogramValue>;
pub type SummaryVec = Family<SummaryValue>;

/// A metric of the config's telemetry stanza.
#[derive(Clone)]
pub enum Custom {
    Counter(Arc<CounterVec>),
    Gauge(Arc<GaugeVec>),
    Histogram(Arc<HistogramVec>),
    Summary(Arc<SummaryVec>),
}

pub struct Metrics {
    pub events: Arc<CounterVec>,
    pub control_requests: Arc<CounterVec>,
    pub watch_instances: Arc<GaugeVec>,
    pub restarts: Arc<CounterVec>,
    pub check_seconds: Arc<HistogramVec>,
    pub consul_errors: Arc<CounterVec>,
    pub orphans_reaped: Arc<CounterVec>,
    /// Mirrors `logging::dropped_lines()` at each scrape (the logger keeps its own count: it
    /// must not depend on telemetry, which may not exist).
    log_lines_dropped: Arc<CounterVec>,
    custom: HashMap<String, Custom>,
    /// Every family, sorted by name: the order of the exposition.
    all: Vec<Arc<dyn Exposed>>,
}

/// The exported name of a config metric: namespace_subsystem_name, skipping empty parts
/// (ContainerPilot #569 matched `putmetric` against `__name` and never updated such metrics).
pub fn full_name(m: &Metric) -> String {
    [m.namespace.as_str(), m.subsystem.as_str(), m.name.as_str()]
        .iter()
        .filter(|s| !s.is_empty())
        .cloned()
        .collect::<Vec<_>>()
        .join("_")
}

/// Prometheus' metric name rule, `[a-zA-Z_:][a-zA-Z0-9_:]*`.
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// The series name Prometheus stores for a config metric: a counter's gets `_total` when
/// the config's name lacks it (both formats agree on it; ContainerPilot exposed it bare).
pub fn exposed_name(m: &Metric) -> String {
    let name = full_name(m);
    if m.kind == MetricKind::Counter && !name.ends_with("_total") { format!("{name}_total") } else { name }
}

impl Metrics {
    pub fn new(config_metrics: &[Metric]) -> Result<Metrics, String> {
        let mut all: Vec<Arc<dyn Exposed>> = Vec::new();
        fn keep<V: Value + Sync + 'static>(all: &mut Vec<Arc<dyn Exposed>>, f: Family<V>) -> Arc<Family<V>> {
            let f = Arc::new(f);
            all.push(f.clone());
            f
        }
        let events = keep(
            &mut all,
            Family::new("containerpilot_events", "count of events published, by code and source", &["code", "source"]),
        );
        let control_requests = keep(
            &mut all,
            Family::new(
                "containerpilot_control_http_requests",
                "count of requests to the control socket, by status code and path",
                &["code", "path"],
            ),
        );
        let watch_instances = keep(
            &mut all,
            Family::new("containerpilot_watch_instances", "passing instances of each watched service", &["service"]),
        );
        let restarts =
            keep(&mut all, Family::new("pilot_job_restarts_total", "restarts of each job after it exited", &["job"]));
        let check_seconds = keep(
            &mut all,
            Family::new("pilot_health_check_duration_seconds", "how long each job's health check took", &["job"]),
        );
        let consul_errors =
            keep(&mut all, Family::new("pilot_consul_errors_total", "Consul calls that failed or were refused", &[]));
        let orphans_reaped =
            keep(&mut all, Family::new("pilot_orphans_reaped_total", "orphaned processes reaped by pilot", &[]));
        let log_lines_dropped = keep(
            &mut all,
            Family::new(
                "pilot_log_lines_dropped_total",
                "log lines dropped because pilot's log output was blocked (a reader that stopped reading)",
                &[],
            ),
        );

        let mut custom = HashMap::new();
        for m in config_metrics {
            let name = full_name(m);
            // The name is written into the exposition as it is: one that is not a metric
            // name (a newline in a namespace) would forge lines.
            if !valid_name(&name) {
                return Err(format!("metric '{}': not a valid Prometheus metric name", name.escape_debug()));
            }
            let c = match m.kind {
                MetricKind::Counter => Custom::Counter(keep(&mut all, Family::new(&name, &m.help, &[]))),
                MetricKind::Gauge => Custom::Gauge(keep(&mut all, Family::new(&name, &m.help, &[]))),
                MetricKind::Histogram => Custom::Histogram(keep(&mut all, Family::new(&name, &m.help, &[]))),
                MetricKind::Summary => Custom::Summary(keep(&mut all, Family::new(&name, &m.help, &[]))),
            };
            custom.insert(name, c);
        }
        // Two families writing one name would make the exposition unparsable for Prometheus.
        let mut seen = HashMap::new();
        for f in &all {
            for n in f.names() {
                if let Some(other) = seen.insert(n.clone(), f.name().to_string()) {
                    return Err(format!("metric {}: its series {n} clashes with those of metric {other}", f.name()));
                }
            }
        }
        all.sort_by(|a, b| a.name().cmp(b.name()));
        Ok(Metrics {
            events,
            control_requests,
            watch_instances,
            restarts,
            check_seconds,
            consul_errors,
            orphans_reaped,
            log_lines_dropped,
            custom,
            all,
        })
    }

    /// The config metric `putmetric` names: by its config name (as with ContainerPilot), or
    /// a counter by the name it is exposed under (with the `_total` pilot added).
    fn custom(&self, name: &str) -> Option<&Custom> {
        self.custom.get(name).or_else(|| match self.custom.get(name.strip_suffix("_total")?) {
            Some(c @ Custom::Counter(_)) => Some(c),
            _ => None,
        })
    }

    /// Whether `put` would accept this value, without changing anything.
    pub fn check(&self, name: &str, value: f64) -> Result<(), String> {
        match self.custom(name) {
            None => Err(format!("no metric '{name}' in the telemetry stanza")),
            Some(Custom::Counter(_)) if value < 0.0 => Err(format!("{name}: a counter cannot go down ({value})")),
            Some(_) if !value.is_finite() => Err(format!("{name}: {value} is not a finite number")),
            Some(_) => Ok(()),
        }
    }

    /// `putmetric name=value`: a counter adds, a gauge is set, histograms and summaries observe.
    pub fn put(&self, name: &str, value: f64) -> Result<(), String> {
        self.check(name, value)?;
        match self.custom(name) {
            None => {}
            Some(Custom::Counter(c)) => c.with_label_values(&[]).inc_by(value),
            Some(Custom::Gauge(g)) => g.with_label_values(&[]).set(value),
            Some(Custom::Histogram(h)) => h.with_label_values(&[]).observe(value),
            Some(Custom::Summary(s)) => s.with_label_values(&[]).observe(value),
        }
        Ok(())
    }

    /// The exposition in `format`.
    pub fn render(&self, format: Format) -> String {
        let dropped = crate::logging::dropped_lines() as f64;
        let lines = &self.log_lines_dropped;
        lines.with_label_values(&[]).inc_by(dropped - lines.get().min(dropped));
        let mut w = Writer::new(format);
        for f in &self.all {
            f.write(&mut w);
        }
        w.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metric(name: &str, kind: &str) -> Metric {
        Metric {
            namespace: "app".into(),
            subsystem: String::new(),
            name: name.into(),
            help: format!("{name} help"),
            kind: MetricKind::parse(kind).expect("a metric kind"),
        }
    }

    #[test]
    fn put_feeds_each_kind() {
        let m = Metrics::new(&[
            metric("jobs", "counter"),
            metric("load", "gauge"),
            metric("lat", "histogram"),
            metric("size", "summary"),
        ])
        .unwrap();
        m.put("app_jobs", 2.0).unwrap();
        m.put("app_jobs", 1.0).unwrap();
        m.put("app_load", 0.5).unwrap();
        m.put("app_lat", 0.2).unwrap();
        for v in 1..=100 {
            m.put("app_size", v as f64).unwrap();
        }
        assert!(m.put("app_jobs", -1.0).is_err());
        assert!(m.put("nope", 1.0).unwrap_err().contains("no metric 'nope'"));
        m.put("app_jobs_total", 1.0).unwrap();
        assert!(m.put("app_load_total", 1.0).is_err(), "only a counter is named with the _total pilot adds");
        let text = m.render(Format::Classic);
        assert!(text.contains("# TYPE app_jobs_total counter\napp_jobs_total 4\n"), "{text}");
        assert!(text.contains("app_load 0.5"), "{text}");
        assert!(text.contains("app_lat_count 1"), "{text}");
        assert!(text.contains("# TYPE app_size summary"), "{text}");
        assert!(
            text.contains("app_size{quantile=\"0.5\"} 51") || text.contains("app_size{quantile=\"0.5\"} 50"),
            "{text}"
        );
        assert!(text.contains("app_size_count 100"), "{text}");
        assert!(!text.contains("# EOF"), "{text}");

        m.events.with_label_values(&["startup", "global"]).inc();
        let om = m.render(Format::OpenMetrics);
        assert!(om.contains("# TYPE app_jobs counter\napp_jobs_total 4\n"), "{om}");
        assert!(om.contains("# TYPE containerpilot_events counter\n"), "{om}");
        assert!(om.ends_with("\n# EOF\n"), "{om}");
        assert!(om.contains("app_lat_bucket{le=\"+Inf\"} 1\n"), "{om}");
    }

    #[test]
    fn built_in_counters_end_in_total_and_every_family_has_help() {
        let m = Metrics::new(&[]).unwrap();
        m.events.with_label_values(&["startup", "global"]).inc();
        m.control_requests.with_label_values(&["200", "/v3/ping"]).inc();
        m.consul_errors.inc();
        let text = m.render(Format::Classic);
        assert!(text.contains("containerpilot_events_total{code=\"startup\",source=\"global\"} 1\n"), "{text}");
        assert!(text.contains("containerpilot_control_http_requests_total{code=\"200\",path=\"/v3/ping\"} 1\n"));
        assert!(text.contains("pilot_consul_errors_total 1\n"), "{text}");
        for line in text.lines().filter(|l| l.starts_with("# TYPE")) {
            let name = line.split(' ').nth(2).unwrap();
            assert!(text.contains(&format!("# HELP {name} ")), "{name} without help: {text}");
            if line.ends_with(" counter") {
                assert!(name.ends_with("_total"), "{line}");
            }
        }
        // A family with labels and no series yet is left out (no header without samples).
        assert!(!text.contains("containerpilot_watch_instances"), "{text}");
    }

    #[test]
    fn clashing_series_names_are_refused() {
        let err = Metrics::new(&[metric("x", "counter"), metric("x_total", "gauge")]).err().unwrap();
        assert!(err.contains("app_x_total"), "{err}");
        let err = Metrics::new(&[metric("lat", "histogram"), metric("lat_count", "gauge")]).err().unwrap();
        assert!(err.contains("app_lat_count"), "{err}");
        let builtin = Metric { namespace: "containerpilot".into(), ..metric("events_total", "counter") };
        assert!(Metrics::new(&[builtin]).is_err());
        // A namespace that would write its own lines into the exposition.
        let forged = Metric { namespace: "x 1\n# EOF\ny".into(), ..metric("n", "gauge") };
        assert!(Metrics::new(&[forged]).err().unwrap().contains("not a valid"));
        let mut blank = metric("quiet", "gauge");
        blank.help.clear();
        let text = Metrics::new(&[blank]).unwrap().render(Format::Classic);
        assert!(text.contains("# HELP app_quiet set by pilot putmetric"), "{text}");
    }
}
