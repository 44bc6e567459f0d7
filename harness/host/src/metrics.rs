// Metrics of one proxy with Envoy's semantics (same name = same stat across VMs, counter
// increments > 0, record on a counter adds) and their Prometheus text as Envoy renders it.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::abi::status;
use super::state::lock;

/// A metric's type, numbered as `proxy_metric_type_t`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MetricKind {
    Counter = 0,
    Gauge = 1,
    Histogram = 2,
}

impl MetricKind {
    pub(crate) fn from_abi(t: i32) -> Option<MetricKind> {
        match t {
            0 => Some(MetricKind::Counter),
            1 => Some(MetricKind::Gauge),
            2 => Some(MetricKind::Histogram),
            _ => None,
        }
    }

    fn prometheus_type(self) -> &'static str {
        match self {
            MetricKind::Counter => "counter",
            MetricKind::Gauge => "gauge",
            MetricKind::Histogram => "histogram",
        }
    }
}

/// Envoy's default histogram bucket bounds (`HistogramSettingsImpl::defaultBuckets`).
pub const HISTOGRAM_BUCKETS: [f64; 19] = [
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0, 60000.0, 300000.0,
    600000.0, 1800000.0, 3600000.0,
];

/// One metric as read back by the caller, aggregated across the proxy's VMs.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Metric {
    /// The name the filter defined (Envoy shows it as is in `/stats`).
    pub name: String,
    pub kind: MetricKind,
    /// Counter total or gauge value (u64, wrapping like Envoy's gauges); for a histogram,
    /// the number of recorded values.
    pub value: u64,
    /// Sum of recorded values (histograms only, else 0).
    pub sum: u64,
    /// Cumulative counts per bound of [`HISTOGRAM_BUCKETS`] (histograms only, else empty).
    pub buckets: Vec<u64>,
}

/// One stat, shared by every VM that defined its (kind, name). A VM keeps an `Arc` of each stat it
/// defined, so updates and reads take no proxy-wide lock: a counter or gauge is one atomic, as in
/// Envoy (whose stats are atomics shared by all workers). Only a histogram's buckets are locked.
pub(crate) struct Stat {
    name: String,
    kind: MetricKind,
    /// Rejected by a stats matcher, so a null stat (Envoy's `NullCounterImpl` and kin): defined,
    /// never updated, read as 0 and never shown.
    null: bool,
    /// Counter total or gauge value.
    value: AtomicU64,
    /// A histogram's count, sum and buckets (None for counters and gauges).
    histogram: Option<Mutex<Histogram>>,
}

#[derive(Default)]
struct Histogram {
    count: u64,
    sum: u64,
    buckets: [u64; HISTOGRAM_BUCKETS.len()],
}

impl Stat {
    pub(crate) fn kind(&self) -> MetricKind {
        self.kind
    }

    /// `proxy_increment_metric`: counters need delta > 0; gauges add or subtract;
    /// histograms refuse (BAD_ARGUMENT), as in Envoy.
    pub(crate) fn increment(&self, delta: i64) -> i32 {
        self.bump(delta, true)
    }

    /// Adds `delta` (any sign, wrapping) to a counter or gauge: ngx_wasm_module's `counter += n`.
    pub(crate) fn add(&self, delta: i64) -> i32 {
        self.bump(delta, false)
    }

    /// `increment` and `add`: histograms refused, counters also refused a delta of 0 or less
    /// when `positive_counters`; a null stat accepts and does not move.
    fn bump(&self, delta: i64, positive_counters: bool) -> i32 {
        match self.kind {
            MetricKind::Histogram => status::BAD_ARGUMENT,
            MetricKind::Counter if positive_counters && delta <= 0 => status::BAD_ARGUMENT,
            MetricKind::Counter | MetricKind::Gauge => {
                if !self.null {
                    // AcqRel: a VM that reads this value also sees every update the adding VM
                    // made before it (capacity slots compare two counters and rely on that).
                    self.value.fetch_add(delta as u64, Ordering::AcqRel);
                }
                status::OK
            }
        }
    }

    /// `proxy_record_metric`: a counter adds, a gauge sets, a histogram records.
    pub(crate) fn record(&self, value: u64) -> i32 {
        if self.null {
            return status::OK;
        }
        // A histogram is the stat with buckets (`define` gives them to histograms only).
        match (&self.histogram, self.kind) {
            (Some(h), _) => {
                let mut h = lock(h);
                h.count += 1;
                h.sum = h.sum.wrapping_add(value);
                let v = value as f64;
                for (count, bound) in h.buckets.iter_mut().zip(HISTOGRAM_BUCKETS) {
                    if v <= bound {
                        *count += 1;
                    }
                }
            }
            (None, MetricKind::Counter) => {
                self.value.fetch_add(value, Ordering::AcqRel);
            }
            (None, _) => self.value.store(value, Ordering::Release),
        }
        status::OK
    }

    /// `proxy_get_metric`: histograms refuse (BAD_ARGUMENT); a null stat reads 0 (it never moves).
    pub(crate) fn get(&self) -> Result<u64, i32> {
        match self.kind {
            MetricKind::Histogram => Err(status::BAD_ARGUMENT),
            MetricKind::Counter | MetricKind::Gauge => Ok(self.value.load(Ordering::Acquire)),
        }
    }

    /// The stat as the caller reads it back.
    fn metric(&self) -> Metric {
        let (value, sum, buckets) = match &self.histogram {
            Some(h) => {
                let h = lock(h);
                (h.count, h.sum, h.buckets.to_vec())
            }
            None => (self.value.load(Ordering::Acquire), 0, Vec::new()),
        };
        Metric { name: self.name.clone(), kind: self.kind, value, sum, buckets }
    }
}

/// The proxy's stats by (kind, name): where a VM's `proxy_define_metric` finds or creates one.
#[derive(Default)]
pub(crate) struct Registry {
    stats: Vec<Arc<Stat>>,
    index: HashMap<(MetricKind, String), usize>,
    /// Prefixes of names a stats matcher rejects (`ProxyOptions::stats_rejected_prefixes`).
    rejected_prefixes: Vec<String>,
}

impl Registry {
    pub(crate) fn rejecting(rejected_prefixes: Vec<String>) -> Registry {
        Registry { rejected_prefixes, ..Registry::default() }
    }

    /// The stat for (kind, name), created on first use.
    pub(crate) fn define(&mut self, kind: MetricKind, name: &str) -> Arc<Stat> {
        if let Some(&i) = self.index.get(&(kind, name.to_owned())) {
            return self.stats[i].clone();
        }
        let stat = Arc::new(Stat {
            name: name.to_owned(),
            kind,
            null: self.rejected_prefixes.iter().any(|p| name.starts_with(p.as_str())),
            value: AtomicU64::new(0),
            histogram: (kind == MetricKind::Histogram).then(Mutex::default),
        });
        self.index.insert((kind, name.to_owned()), self.stats.len());
        self.stats.push(stat.clone());
        stat
    }

    /// The stat named `name`, the first by kind (counter, gauge, histogram) when several are:
    /// what `snapshot` sorts first. Looked up, not copied out of a snapshot: a replay reads
    /// gauges at every scrape.
    pub(crate) fn find(&self, name: &str) -> Option<Metric> {
        let mut key = (MetricKind::Counter, name.to_owned());
        for kind in [MetricKind::Counter, MetricKind::Gauge, MetricKind::Histogram] {
            key.0 = kind;
            if let Some(&i) = self.index.get(&key) {
                if !self.stats[i].null {
                    return Some(self.stats[i].metric());
                }
            }
        }
        None
    }

    /// Every stat but null ones, sorted by name then kind.
    pub(crate) fn snapshot(&self) -> Vec<Metric> {
        let mut all: Vec<Metric> = self.stats.iter().filter(|s| !s.null).map(|s| s.metric()).collect();
        all.sort_by(|a, b| a.name.cmp(&b.name).then(a.kind.cmp(&b.kind)));
        all
    }
}

/// The Prometheus name Envoy gives a Wasm metric: custom stat namespaces get no `envoy_`
/// prefix (envoy PR#17357), and every character outside `[a-zA-Z0-9_]` becomes `_`.
pub fn prometheus_name(name: &str) -> String {
    let mut out: String = name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect();
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

/// Prometheus text exposition of `metrics`, as Envoy's `/stats/prometheus` prints Wasm
/// metrics (`{}` for metrics without tags, sorted by name).
pub fn render_prometheus(metrics: &[Metric]) -> String {
    let mut out = String::new();
    let mut sorted: Vec<&Metric> = metrics.iter().collect();
    sorted.sort_by_key(|m| (prometheus_name(&m.name), m.kind));
    for m in sorted {
        let name = prometheus_name(&m.name);
        let _ = writeln!(out, "# TYPE {name} {}", m.kind.prometheus_type());
        match m.kind {
            MetricKind::Counter | MetricKind::Gauge => {
                let _ = writeln!(out, "{name}{{}} {}", m.value);
            }
            MetricKind::Histogram => {
                for (count, bound) in m.buckets.iter().zip(HISTOGRAM_BUCKETS) {
                    let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {count}");
                }
                let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", m.value);
                let _ = writeln!(out, "{name}_sum{{}} {}", m.sum);
                let _ = writeln!(out, "{name}_count{{}} {}", m.value);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envoy_semantics() {
        let mut r = Registry::default();
        let c = r.define(MetricKind::Counter, "chaos.aborts_total");
        assert!(Arc::ptr_eq(&r.define(MetricKind::Counter, "chaos.aborts_total"), &c), "one stat per name");
        assert_eq!(c.increment(0), status::BAD_ARGUMENT);
        assert_eq!(c.increment(-1), status::BAD_ARGUMENT);
        assert_eq!(c.increment(2), status::OK);
        assert_eq!(c.record(3), status::OK, "record on a counter adds");
        assert_eq!(c.get(), Ok(5));
        let h = r.define(MetricKind::Histogram, "lat");
        assert_eq!(h.increment(1), status::BAD_ARGUMENT);
        assert_eq!(h.get(), Err(status::BAD_ARGUMENT));
        assert_eq!(h.record(7), status::OK);
        let text = render_prometheus(&r.snapshot());
        assert!(text.contains("# TYPE chaos_aborts_total counter\nchaos_aborts_total{} 5\n"));
        assert!(text.contains("lat_bucket{le=\"5\"} 0\nlat_bucket{le=\"10\"} 1\n"));
        assert!(text.contains("lat_count{} 1\n"));
    }

    #[test]
    fn workers_add_to_one_stat_without_a_lock_and_a_null_stat_never_moves() {
        let mut r = Registry::rejecting(vec!["dropped.".into()]);
        let stats: Vec<(Arc<Stat>, Arc<Stat>)> = (0..4)
            .map(|_| (r.define(MetricKind::Counter, "ebb.requests_total"), r.define(MetricKind::Counter, "dropped.n")))
            .collect();
        std::thread::scope(|s| {
            for (kept, dropped) in &stats {
                s.spawn(move || {
                    for _ in 0..1000 {
                        assert_eq!(kept.increment(1), status::OK);
                        assert_eq!(dropped.increment(1), status::OK, "a null stat accepts updates");
                    }
                });
            }
        });
        assert_eq!(r.find("ebb.requests_total").map(|m| m.value), Some(4000));
        assert_eq!(stats[0].1.get(), Ok(0), "a null stat reads 0");
        assert!(r.snapshot().iter().all(|m| m.name != "dropped.n"), "and is never listed");
    }

    #[test]
    fn find_is_the_first_of_the_snapshot_by_name() {
        let mut r = Registry::default();
        let g = r.define(MetricKind::Gauge, "ebb.pool.web.in_flight");
        assert_eq!(g.record(9), status::OK);
        assert_eq!(r.find("ebb.pool.web.in_flight").map(|m| (m.kind, m.value)), Some((MetricKind::Gauge, 9)));
        let c = r.define(MetricKind::Counter, "ebb.pool.web.in_flight");
        assert_eq!(c.increment(2), status::OK);
        let first = r.snapshot().into_iter().find(|m| m.name == "ebb.pool.web.in_flight");
        assert_eq!(r.find("ebb.pool.web.in_flight"), first, "the same stat the snapshot lists first");
        assert_eq!(r.find("ebb.pool.web"), None);
    }
}
