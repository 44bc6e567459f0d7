// The series a real deployment scrapes from each simulated Envoy, kept at every scrape of a replay:
// the filter's metrics from the host's registry and the Envoy stats the simulator can derive.
// Names and labels are Envoy's `/stats/prometheus` ones (ebb proxy's tag extraction with the stats
// tags of deploy/envoy/envoy.yaml), plus the `instance` and `job` labels Prometheus adds. They feed
// `ebb replay --export-series` (OpenMetrics text) and `--rules` (remote-written to Prometheus).

use std::collections::HashMap;
use std::fmt::Write as _;

use ebb_host::{Metric, MetricKind};
use ebb_proxy::stats::{prometheus_name, tagger, Tagger, TIME_BUCKETS_MS};

/// The bootstrap whose stats tags name the series: the one deploy/envoy ships, so that its alert
/// rules (deploy/prometheus) run unchanged on a replay's series.
const ENVOY_BOOTSTRAP: &str = include_str!("../../deploy/envoy/envoy.yaml");
/// The job label of every series, as the scrape job in docs/staging.md names Envoy's admin target.
pub const JOB: &str = "envoy";
/// The HTTP connection manager's stat prefix in deploy/envoy/envoy.yaml (`ingress_http`): every
/// HTTP pool's requests enter through it.
pub const HTTP_PREFIX: &str = "ingress_http";

/// The `instance` label of simulated Envoy `envoy`: a host name and its admin port (9901 in
/// deploy/envoy/envoy.yaml), as Prometheus labels a scraped target.
pub fn instance(envoy: usize) -> String {
    format!("envoy-{envoy}:9901")
}

/// One series: its labels (`__name__` first, then sorted) and samples (milliseconds since the
/// Unix epoch, value), in time order.
pub struct Series {
    /// The metric family the series belongs to (a histogram's `_bucket`, `_sum` and `_count`
    /// series share one), and its OpenMetrics type.
    pub family: String,
    pub kind: &'static str,
    pub labels: Vec<(String, String)>,
    pub samples: Vec<(i64, f64)>,
}

impl Series {
    pub fn name(&self) -> &str {
        self.labels.first().map_or("", |(_, v)| v.as_str())
    }
}

/// Envoy's request statistics of one scope (a cluster or the connection manager) in one Envoy.
#[derive(Clone, Default)]
struct RequestStats {
    total: u64,
    /// Responses by class, 1xx..5xx.
    classes: [u64; 5],
    /// Cumulative counts per bound of `TIME_BUCKETS_MS`, then the count and sum (ms).
    time_buckets: [u64; TIME_BUCKETS_MS.len()],
    time_count: u64,
    time_sum_ms: u64,
}

impl RequestStats {
    fn respond(&mut self, status: u16, elapsed_ms: u64) {
        if let Some(class) = usize::from(status / 100).checked_sub(1).and_then(|i| self.classes.get_mut(i)) {
            *class = class.saturating_add(1);
        }
        for (bound, n) in TIME_BUCKETS_MS.iter().zip(self.time_buckets.iter_mut()) {
            if elapsed_ms as f64 <= *bound {
                *n = n.saturating_add(1);
            }
        }
        self.time_count = self.time_count.saturating_add(1);
        self.time_sum_ms = self.time_sum_ms.saturating_add(elapsed_ms);
    }
}

/// What the simulator told about a request still in flight.
#[derive(Clone, Copy, Default)]
struct InFlight {
    /// When the filter let it go upstream (0: not yet).
    forwarded_ns: u64,
    /// The status of the filter's local reply, when it answered.
    local_status: Option<u16>,
}

/// Keeps every series of every scrape of a replay.
pub struct Recorder {
    tagger: Tagger,
    /// The HTTP pools by index: their cluster name (`None` for TCP pools, whose connections Envoy
    /// counts in other stats that ebb does not derive).
    clusters: Vec<Option<String>>,
    /// Per simulated Envoy and pool: the connection manager's and the cluster's request stats.
    downstream: Vec<Vec<RequestStats>>,
    upstream: Vec<Vec<RequestStats>>,
    flights: HashMap<usize, InFlight>,
    index: HashMap<Vec<(String, String)>, usize>,
    series: Vec<Series>,
    scrapes: usize,
}

impl Recorder {
    /// A recorder for `envoys` simulated Envoys serving `pools` (name, is HTTP).
    pub fn new(envoys: usize, pools: &[(String, bool)]) -> Recorder {
        // The shipped bootstrap is parsed by ebb proxy's own parser; tests keep it parseable. A
        // bootstrap it could not read would only lose the `ebb_pool` tag, never the replay.
        let tags = ebb_proxy::Bootstrap::parse(ENVOY_BOOTSTRAP).map(|b| b.stats_tags).unwrap_or_default();
        let tagger = tagger(&tags).unwrap_or_else(|_| tagger(&[]).unwrap_or_else(|_| unreachable_tagger()));
        Recorder {
            tagger,
            clusters: pools.iter().map(|(name, http)| http.then(|| name.clone())).collect(),
            downstream: vec![vec![RequestStats::default(); pools.len()]; envoys],
            upstream: vec![vec![RequestStats::default(); pools.len()]; envoys],
            flights: HashMap::new(),
            index: HashMap::new(),
            series: Vec::new(),
            scrapes: 0,
        }
    }

    /// A request (or connection) of `pool` arrived at Envoy `envoy` as flight `flight`.
    pub fn arrived(&mut self, flight: usize, envoy: usize, pool: usize) {
        self.flights.insert(flight, InFlight::default());
        if self.is_http(pool) {
            if let Some(s) = self.downstream.get_mut(envoy).and_then(|e| e.get_mut(pool)) {
                s.total = s.total.saturating_add(1);
            }
        }
    }

    /// The filter let the flight go upstream at `t_ns` (the first time counts: a request that
    /// waits for a free host is one upstream request).
    pub fn forwarded(&mut self, flight: usize, envoy: usize, pool: usize, t_ns: u64) {
        let Some(f) = self.flights.get_mut(&flight) else { return };
        if f.forwarded_ns != 0 {
            return;
        }
        f.forwarded_ns = t_ns.max(1);
        if self.clusters.get(pool).is_some_and(Option::is_some) {
            if let Some(s) = self.upstream.get_mut(envoy).and_then(|e| e.get_mut(pool)) {
                s.total = s.total.saturating_add(1);
            }
        }
    }

    /// The filter answered the flight itself with `status`.
    pub fn local_reply(&mut self, flight: usize, status: u16) {
        if let Some(f) = self.flights.get_mut(&flight) {
            f.local_status = Some(status);
        }
    }

    /// The flight ended at `t_ns`: `error` as the simulator counts it, `by_filter` when the filter
    /// (not the upstream) ended it.
    pub fn finished(&mut self, flight: usize, envoy: usize, pool: usize, start_ns: u64, t_ns: u64, error: bool) {
        let f = self.flights.remove(&flight).unwrap_or_default();
        if !self.is_http(pool) {
            return;
        }
        // What the client got: the filter's reply, else the upstream's 200 or the 503 Envoy
        // answers for a request whose host never answered in time (or failed in panic routing).
        let status = f.local_status.unwrap_or(if error { 503 } else { 200 });
        let elapsed_ms = t_ns.saturating_sub(start_ns) / 1_000_000;
        if let Some(s) = self.downstream.get_mut(envoy).and_then(|e| e.get_mut(pool)) {
            s.respond(status, elapsed_ms);
        }
        if f.forwarded_ns != 0 && f.local_status.is_none() {
            let upstream_ms = t_ns.saturating_sub(f.forwarded_ns) / 1_000_000;
            if let Some(s) = self.upstream.get_mut(envoy).and_then(|e| e.get_mut(pool)) {
                s.respond(status, upstream_ms);
            }
        }
    }

    fn is_http(&self, pool: usize) -> bool {
        self.clusters.get(pool).is_some_and(Option::is_some)
    }

    /// Records a scrape at `t_ms` (Unix epoch) of Envoy `envoy`, whose filter's metrics are `metrics`.
    pub fn scrape(&mut self, t_ms: i64, envoy: usize, metrics: &[Metric]) {
        if envoy == 0 {
            self.scrapes = self.scrapes.saturating_add(1);
        }
        let instance = instance(envoy);
        self.add(t_ms, &instance, "up", "gauge", Vec::new(), 1.0);
        for m in metrics {
            let stat = format!("wasmcustom.{}", m.name);
            match m.kind {
                MetricKind::Counter => self.scalar(t_ms, &instance, &stat, "counter", m.value as f64),
                MetricKind::Gauge => self.scalar(t_ms, &instance, &stat, "gauge", m.value as f64),
                MetricKind::Histogram => {
                    let buckets: Vec<(f64, u64)> =
                        ebb_host::HISTOGRAM_BUCKETS.iter().copied().zip(m.buckets.iter().copied()).collect();
                    self.histogram(t_ms, &instance, &stat, &buckets, m.value, m.sum as f64);
                }
            }
        }
        for pool in 0..self.clusters.len() {
            let Some(cluster) = self.clusters[pool].clone() else { continue };
            let Some(up) = self.upstream.get(envoy).and_then(|e| e.get(pool)).cloned() else { continue };
            self.request_stats(t_ms, &instance, &format!("cluster.{cluster}.upstream_rq"), &up);
        }
        // Every HTTP pool enters through one connection manager: its stats are the sum over pools.
        let mut down = RequestStats::default();
        let mut any_http = false;
        for (pool, s) in self.downstream.get(envoy).map(|v| v.as_slice()).unwrap_or_default().iter().enumerate() {
            if !self.is_http(pool) {
                continue;
            }
            any_http = true;
            down.total = down.total.saturating_add(s.total);
            for (a, b) in down.classes.iter_mut().zip(s.classes) {
                *a = a.saturating_add(b);
            }
            for (a, b) in down.time_buckets.iter_mut().zip(s.time_buckets) {
                *a = a.saturating_add(b);
            }
            down.time_count = down.time_count.saturating_add(s.time_count);
            down.time_sum_ms = down.time_sum_ms.saturating_add(s.time_sum_ms);
        }
        if any_http {
            self.request_stats(t_ms, &instance, &format!("http.{HTTP_PREFIX}.downstream_rq"), &down);
        }
    }

    /// `<prefix>_total`, `<prefix>_<n>xx` for every class and the `<prefix>_time` histogram.
    fn request_stats(&mut self, t_ms: i64, instance: &str, prefix: &str, s: &RequestStats) {
        self.scalar(t_ms, instance, &format!("{prefix}_total"), "counter", s.total as f64);
        for (i, n) in s.classes.iter().enumerate() {
            self.scalar(t_ms, instance, &format!("{prefix}_{}xx", i + 1), "counter", *n as f64);
        }
        let buckets: Vec<(f64, u64)> = TIME_BUCKETS_MS.iter().copied().zip(s.time_buckets.iter().copied()).collect();
        self.histogram(t_ms, instance, &format!("{prefix}_time"), &buckets, s.time_count, s.time_sum_ms as f64);
    }

    fn scalar(&mut self, t_ms: i64, instance: &str, stat: &str, kind: &'static str, value: f64) {
        let (name, tags) = self.tagger.extract(stat);
        let name = prometheus_name(&name);
        self.add(t_ms, instance, &name, kind, tags, value);
    }

    fn histogram(&mut self, t_ms: i64, instance: &str, stat: &str, buckets: &[(f64, u64)], count: u64, sum: f64) {
        let (name, tags) = self.tagger.extract(stat);
        let name = prometheus_name(&name);
        for (bound, n) in buckets {
            let mut labels = tags.clone();
            labels.push(("le".into(), bound.to_string()));
            self.add_in(t_ms, instance, &name, &format!("{name}_bucket"), "histogram", labels, *n as f64);
        }
        let mut labels = tags.clone();
        labels.push(("le".into(), "+Inf".into()));
        self.add_in(t_ms, instance, &name, &format!("{name}_bucket"), "histogram", labels, count as f64);
        self.add_in(t_ms, instance, &name, &format!("{name}_sum"), "histogram", tags.clone(), sum);
        self.add_in(t_ms, instance, &name, &format!("{name}_count"), "histogram", tags, count as f64);
    }

    fn add(&mut self, t_ms: i64, instance: &str, name: &str, kind: &'static str, tags: Vec<(String, String)>, v: f64) {
        // OpenMetrics names a counter's family without its `_total` suffix.
        let family = match kind {
            "counter" => name.strip_suffix("_total").unwrap_or(name),
            _ => name,
        };
        self.add_in(t_ms, instance, family, name, kind, tags, v);
    }

    #[allow(clippy::too_many_arguments)]
    fn add_in(
        &mut self,
        t_ms: i64,
        instance: &str,
        family: &str,
        name: &str,
        kind: &'static str,
        mut tags: Vec<(String, String)>,
        value: f64,
    ) {
        tags.push(("instance".into(), instance.to_string()));
        tags.push(("job".into(), JOB.into()));
        tags.sort();
        let mut labels = Vec::with_capacity(tags.len() + 1);
        labels.push(("__name__".to_string(), name.to_string()));
        labels.extend(tags);
        let i = match self.index.get(&labels) {
            Some(&i) => i,
            None => {
                self.series.push(Series { family: family.into(), kind, labels: labels.clone(), samples: Vec::new() });
                self.index.insert(labels, self.series.len() - 1);
                self.series.len() - 1
            }
        };
        self.series[i].samples.push((t_ms, value));
    }

    /// Every series so far, in the order they first appeared.
    pub fn series(&self) -> &[Series] {
        &self.series
    }

    /// How many scrapes were recorded.
    pub fn scrapes(&self) -> usize {
        self.scrapes
    }

    /// The series as OpenMetrics text: families grouped and sorted by name, each with its
    /// `# TYPE`, every sample with its timestamp in seconds, and the closing `# EOF`.
    pub fn openmetrics(&self) -> String {
        let mut families: Vec<&str> = self.series.iter().map(|s| s.family.as_str()).collect();
        families.sort_unstable();
        families.dedup();
        let mut by_family: HashMap<&str, Vec<&Series>> = HashMap::new();
        for s in &self.series {
            by_family.entry(s.family.as_str()).or_default().push(s);
        }
        let mut out = String::new();
        for family in families {
            let mut members = by_family.remove(family).unwrap_or_default();
            members.sort_by(|a, b| a.labels.cmp(&b.labels));
            let kind = members.first().map_or("unknown", |s| s.kind);
            let _ = writeln!(out, "# TYPE {family} {kind}");
            for s in members {
                let labels: Vec<String> = s.labels[1..].iter().map(|(k, v)| format!("{k}=\"{}\"", escape(v))).collect();
                let head = format!("{}{{{}}}", s.name(), labels.join(","));
                for (t, v) in &s.samples {
                    let _ = writeln!(out, "{head} {} {}.{:03}", number(*v), t.div_euclid(1000), t.rem_euclid(1000));
                }
            }
        }
        out.push_str("# EOF\n");
        out
    }
}

/// Only reached if the built-in tag rules stopped compiling: no tags at all, names as Envoy's.
fn unreachable_tagger() -> Tagger {
    Tagger::new(&[]).unwrap_or_else(|_| unreachable!("an empty rule list always compiles"))
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// A sample value as OpenMetrics writes it: integers without a fraction.
fn number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gauge(name: &str, value: u64) -> Metric {
        Metric { name: name.into(), kind: MetricKind::Gauge, value, sum: 0, buckets: Vec::new() }
    }

    #[test]
    fn filter_metrics_get_envoys_names_and_the_staging_tag() {
        let mut r = Recorder::new(2, &[("web".into(), true)]);
        r.scrape(1_612_483_215_000, 1, &[gauge("ebb.pool.web.available_hosts", 7), gauge("ebb.armed", 1)]);
        let text = r.openmetrics();
        assert!(text.contains(
            "# TYPE ebb_pool_available_hosts gauge\nebb_pool_available_hosts{ebb_pool=\"web\",instance=\"envoy-1:9901\",job=\"envoy\"} 7 1612483215.000\n"
        ), "{text}");
        assert!(text.contains("ebb_armed{instance=\"envoy-1:9901\",job=\"envoy\"} 1 1612483215.000\n"), "{text}");
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn envoy_stats_follow_each_request_to_its_class_and_time() {
        let mut r = Recorder::new(1, &[("web".into(), true), ("ssh".into(), false)]);
        // Served in 120 ms after a 30 ms delay; shed by the filter; timed out upstream.
        r.arrived(0, 0, 0);
        r.forwarded(0, 0, 0, 30_000_000);
        r.finished(0, 0, 0, 0, 150_000_000, false);
        r.arrived(1, 0, 0);
        r.local_reply(1, 503);
        r.finished(1, 0, 0, 0, 1_000_000, true);
        r.arrived(2, 0, 0);
        r.forwarded(2, 0, 0, 1);
        r.forwarded(2, 0, 0, 5_000_000_000);
        r.arrived(3, 0, 1);
        r.finished(3, 0, 1, 0, 1, true);
        r.scrape(15_000, 0, &[]);
        let text = r.openmetrics();
        let has = |line: &str| assert!(text.contains(line), "{line} not in\n{text}");
        has("envoy_http_downstream_rq_total{envoy_http_conn_manager_prefix=\"ingress_http\",instance=\"envoy-0:9901\",job=\"envoy\"} 3 15.000\n");
        has("envoy_http_downstream_rq_xx{envoy_http_conn_manager_prefix=\"ingress_http\",envoy_response_code_class=\"5\",instance=\"envoy-0:9901\",job=\"envoy\"} 1 15.000\n");
        has("envoy_cluster_upstream_rq_total{envoy_cluster_name=\"web\",instance=\"envoy-0:9901\",job=\"envoy\"} 2 15.000\n");
        has("envoy_cluster_upstream_rq_xx{envoy_cluster_name=\"web\",envoy_response_code_class=\"2\",instance=\"envoy-0:9901\",job=\"envoy\"} 1 15.000\n");
        // Upstream time is from forwarding (120 ms), downstream from arrival (150 ms).
        has("envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name=\"web\",instance=\"envoy-0:9901\",job=\"envoy\",le=\"100\"} 0 15.000\n");
        has("envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name=\"web\",instance=\"envoy-0:9901\",job=\"envoy\",le=\"250\"} 1 15.000\n");
        has("envoy_cluster_upstream_rq_time_sum{envoy_cluster_name=\"web\",instance=\"envoy-0:9901\",job=\"envoy\"} 120 15.000\n");
        has("envoy_http_downstream_rq_time_sum{envoy_http_conn_manager_prefix=\"ingress_http\",instance=\"envoy-0:9901\",job=\"envoy\"} 151 15.000\n");
        assert!(!text.contains("ssh"), "TCP pools have no HTTP stats: {text}");
        assert_eq!(text.matches("# TYPE envoy_cluster_upstream_rq_time histogram").count(), 1);
    }
}
