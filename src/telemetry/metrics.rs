//! The metrics pilot exposes: ContainerPilot's built-in ones under their names
//! (`containerpilot_events`, `containerpilot_control_http_requests`,
//! `containerpilot_watch_instances`), pilot's own, and the config's `telemetry.metrics`, fed
//! by `putmetric`. Exposition is by the `prometheus` crate; summaries, which it lacks, are a
//! small collector of our own over its data model.

use crate::config::{Metric, MetricKind};
use prometheus::core::{Collector, Desc};
use prometheus::proto::{self, MetricFamily, MetricType};
use prometheus::{
    CounterVec, Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts,
    Registry,
};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

/// How many recent observations a summary keeps for its quantiles.
const SUMMARY_WINDOW: usize = 1024;
const QUANTILES: [f64; 3] = [0.5, 0.9, 0.99];

pub enum Custom {
    Counter(prometheus::Counter),
    Gauge(Gauge),
    Histogram(Histogram),
    Summary(Arc<Summary>),
}

pub struct Metrics {
    pub registry: Registry,
    pub events: IntCounterVec,
    pub control_requests: IntCounterVec,
    pub watch_instances: GaugeVec,
    pub restarts: CounterVec,
    pub check_seconds: HistogramVec,
    pub consul_errors: IntCounter,
    pub orphans_reaped: IntCounter,
    /// Mirrors `logging::dropped_lines()` at each scrape (the logger keeps its own count: it
    /// must not depend on telemetry, which may not exist).
    log_lines_dropped: IntCounter,
    custom: HashMap<String, Custom>,
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

impl Metrics {
    pub fn new(config_metrics: &[Metric]) -> Result<Metrics, String> {
        let registry = Registry::new();
        let reg = |c: Box<dyn Collector>| registry.register(c).map_err(|e| e.to_string());
        let events = IntCounterVec::new(
            Opts::new("containerpilot_events", "count of events published, by code and source"),
            &["code", "source"],
        )
        .unwrap();
        reg(Box::new(events.clone()))?;
        let control_requests = IntCounterVec::new(
            Opts::new(
                "containerpilot_control_http_requests",
                "count of requests to the control socket, by status code and path",
            ),
            &["code", "path"],
        )
        .unwrap();
        reg(Box::new(control_requests.clone()))?;
        let watch_instances = GaugeVec::new(
            Opts::new("containerpilot_watch_instances", "passing instances of each watched service"),
            &["service"],
        )
        .unwrap();
        reg(Box::new(watch_instances.clone()))?;
        let restarts =
            CounterVec::new(Opts::new("pilot_job_restarts_total", "restarts of each job after it exited"), &["job"])
                .unwrap();
        reg(Box::new(restarts.clone()))?;
        let check_seconds = HistogramVec::new(
            HistogramOpts::new("pilot_health_check_duration_seconds", "how long each job's health check took"),
            &["job"],
        )
        .unwrap();
        reg(Box::new(check_seconds.clone()))?;
        let consul_errors =
            IntCounter::new("pilot_consul_errors_total", "Consul calls that failed or were refused").unwrap();
        reg(Box::new(consul_errors.clone()))?;
        let orphans_reaped =
            IntCounter::new("pilot_orphans_reaped_total", "orphaned processes reaped by pilot").unwrap();
        reg(Box::new(orphans_reaped.clone()))?;
        let log_lines_dropped = IntCounter::new(
            "pilot_log_lines_dropped_total",
            "log lines dropped because pilot's log output was blocked (a reader that stopped reading)",
        )
        .unwrap();
        reg(Box::new(log_lines_dropped.clone()))?;

        let mut custom = HashMap::new();
        for m in config_metrics {
            let name = full_name(m);
            let opts = Opts::new(name.clone(), m.help.clone());
            let c = match m.kind {
                MetricKind::Counter => {
                    Custom::Counter(prometheus::Counter::with_opts(opts).map_err(|e| format!("metric {name}: {e}"))?)
                }
                MetricKind::Gauge => Custom::Gauge(Gauge::with_opts(opts).map_err(|e| format!("metric {name}: {e}"))?),
                MetricKind::Histogram => Custom::Histogram(
                    Histogram::with_opts(HistogramOpts::new(name.clone(), m.help.clone()))
                        .map_err(|e| format!("metric {name}: {e}"))?,
                ),
                MetricKind::Summary => Custom::Summary(Arc::new(Summary::new(&name, &m.help)?)),
            };
            match &c {
                Custom::Counter(x) => reg(Box::new(x.clone())),
                Custom::Gauge(x) => reg(Box::new(x.clone())),
                Custom::Histogram(x) => reg(Box::new(x.clone())),
                Custom::Summary(x) => reg(Box::new(SummaryRef(x.clone()))),
            }
            .map_err(|e| format!("metric {name}: {e}"))?;
            custom.insert(name, c);
        }
        Ok(Metrics {
            registry,
            events,
            control_requests,
            watch_instances,
            restarts,
            check_seconds,
            consul_errors,
            orphans_reaped,
            log_lines_dropped,
            custom,
        })
    }

    /// Whether `put` would accept this value, without changing anything.
    pub fn check(&self, name: &str, value: f64) -> Result<(), String> {
        match self.custom.get(name) {
            None => Err(format!("no metric '{name}' in the telemetry stanza")),
            Some(Custom::Counter(_)) if value < 0.0 => Err(format!("{name}: a counter cannot go down ({value})")),
            Some(_) if !value.is_finite() => Err(format!("{name}: {value} is not a finite number")),
            Some(_) => Ok(()),
        }
    }

    /// `putmetric name=value`: a counter adds, a gauge is set, histograms and summaries observe.
    pub fn put(&self, name: &str, value: f64) -> Result<(), String> {
        self.check(name, value)?;
        match self.custom.get(name) {
            None => {}
            Some(Custom::Counter(c)) => c.inc_by(value),
            Some(Custom::Gauge(g)) => g.set(value),
            Some(Custom::Histogram(h)) => h.observe(value),
            Some(Custom::Summary(s)) => s.observe(value),
        }
        Ok(())
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let dropped = crate::logging::dropped_lines();
        self.log_lines_dropped.inc_by(dropped.saturating_sub(self.log_lines_dropped.get()));
        let mut buf = Vec::new();
        let _ = prometheus::TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

/// A summary over the last `SUMMARY_WINDOW` observations (sum and count over all time).
pub struct Summary {
    desc: Desc,
    state: Mutex<(VecDeque<f64>, f64, u64)>,
}

impl Summary {
    fn new(name: &str, help: &str) -> Result<Summary, String> {
        let desc = Desc::new(name.into(), help.into(), Vec::new(), HashMap::new())
            .map_err(|e| format!("metric {name}: {e}"))?;
        Ok(Summary { desc, state: Mutex::new((VecDeque::new(), 0.0, 0)) })
    }

    pub fn observe(&self, v: f64) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if s.0.len() == SUMMARY_WINDOW {
            s.0.pop_front();
        }
        s.0.push_back(v);
        s.1 += v;
        s.2 += 1;
    }
}

struct SummaryRef(Arc<Summary>);

impl Collector for SummaryRef {
    fn desc(&self) -> Vec<&Desc> {
        vec![&self.0.desc]
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let s = self.0.state.lock().unwrap_or_else(|e| e.into_inner());
        let mut sorted: Vec<f64> = s.0.iter().copied().collect();
        sorted.sort_by(|a, b| a.total_cmp(b));
        let mut summary = proto::Summary::default();
        summary.set_sample_sum(s.1);
        summary.set_sample_count(s.2);
        let quantiles = QUANTILES
            .iter()
            .map(|q| {
                let mut x = proto::Quantile::default();
                x.set_quantile(*q);
                let v =
                    if sorted.is_empty() { f64::NAN } else { sorted[((sorted.len() - 1) as f64 * q).round() as usize] };
                x.set_value(v);
                x
            })
            .collect();
        summary.set_quantile(quantiles);
        let mut metric = proto::Metric::default();
        metric.set_summary(summary);
        let mut family = MetricFamily::default();
        family.set_name(self.0.desc.fq_name.clone());
        family.set_help(self.0.desc.help.clone());
        family.set_field_type(MetricType::SUMMARY);
        family.set_metric(vec![metric]);
        vec![family]
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
        let text = m.render();
        assert!(text.contains("app_jobs 3"), "{text}");
        assert!(text.contains("app_load 0.5"), "{text}");
        assert!(text.contains("app_lat_count 1"), "{text}");
        assert!(text.contains("# TYPE app_size summary"), "{text}");
        assert!(
            text.contains("app_size{quantile=\"0.5\"} 51") || text.contains("app_size{quantile=\"0.5\"} 50"),
            "{text}"
        );
        assert!(text.contains("app_size_count 100"), "{text}");
    }
}
