// The proxy's own statistics under Envoy's names, and `/stats/prometheus`: Envoy's tag extraction
// (the bootstrap's `stats_tags` and the built-in cluster/listener tags) applied to every metric.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use ebb_host::{Metric, MetricKind};
use regex::Regex;

use crate::bootstrap::StatsTag;

/// Envoy's default histogram bucket bounds, in milliseconds (`supported_buckets`).
pub const TIME_BUCKETS_MS: [f64; 19] = [
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0, 60000.0, 300000.0,
    600000.0, 1800000.0, 3600000.0,
];

/// Counters and a time histogram of one response-producing scope (a cluster or a connection
/// manager): requests, responses by class, and their duration.
#[derive(Default)]
pub struct RequestStats {
    pub total: AtomicU64,
    /// 1xx..5xx.
    pub classes: [AtomicU64; 5],
    pub time: Histogram,
}

impl RequestStats {
    pub fn record(&self, status: u16, elapsed_ms: f64) {
        self.total.fetch_add(1, Ordering::Relaxed);
        if let Some(class) = usize::from(status / 100).checked_sub(1).and_then(|i| self.classes.get(i)) {
            class.fetch_add(1, Ordering::Relaxed);
        }
        self.time.record(elapsed_ms);
    }
}

#[derive(Default)]
pub struct Histogram {
    /// Per bucket, the values that fell in it and in no lower one: one atomic add per record on
    /// the request path (not one per bucket it is under); the page sums them up.
    buckets: [AtomicU64; TIME_BUCKETS_MS.len()],
    count: AtomicU64,
    /// Sum in microseconds, so it stays an integer.
    sum_us: AtomicU64,
}

impl Histogram {
    pub fn record(&self, ms: f64) {
        if let Some(bucket) = TIME_BUCKETS_MS.iter().position(|bound| ms <= *bound) {
            self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add((ms * 1000.0) as u64, Ordering::Relaxed);
    }

    /// The cumulative count of each bucket (values ≤ its bound), as Prometheus shows them.
    pub fn cumulative(&self) -> [u64; TIME_BUCKETS_MS.len()] {
        let mut total = 0u64;
        std::array::from_fn(|i| {
            total = total.saturating_add(self.buckets[i].load(Ordering::Relaxed));
            total
        })
    }
}

/// Per cluster.
#[derive(Default)]
pub struct ClusterStats {
    pub rq: RequestStats,
    /// Upstream connections opened (HTTP pools), and how many were refused by max_connections.
    pub cx_total: AtomicU64,
    pub cx_overflow: AtomicU64,
    pub cx_connect_fail: AtomicU64,
    pub cx_connect_timeout: AtomicU64,
    pub rq_timeout: AtomicU64,
    pub rq_pending_overflow: AtomicU64,
    pub membership_total: AtomicU64,
}

/// Per listener: connections accepted.
#[derive(Default)]
pub struct ListenerStats {
    pub downstream_cx_total: AtomicU64,
}

/// Tag extraction as Envoy's `TagExtractorImpl`: when the regex matches, the first capture group
/// is removed from the name, and the tag's value is the second group (or the first).
pub struct Tagger {
    rules: Vec<(String, Regex)>,
}

impl Tagger {
    pub fn new(tags: &[StatsTag]) -> Result<Tagger, String> {
        let rules = tags
            .iter()
            .map(|t| {
                Regex::new(&t.regex)
                    .map(|r| (t.tag_name.clone(), r))
                    .map_err(|e| format!("stats tag {}: {e}", t.tag_name))
            })
            .collect::<Result<_, _>>()?;
        Ok(Tagger { rules })
    }

    /// The tag-extracted name and tags of a stat name.
    pub fn extract(&self, name: &str) -> (String, Vec<(String, String)>) {
        let mut name = name.to_string();
        let mut tags = Vec::new();
        for (tag, re) in &self.rules {
            let Some(caps) = re.captures(&name) else { continue };
            let Some(remove) = caps.get(1) else { continue };
            let value = caps.get(2).unwrap_or(remove).as_str().to_string();
            let range = remove.range();
            name.replace_range(range, "");
            tags.push((tag.clone(), value));
        }
        (name, tags)
    }
}

/// Envoy's Prometheus name: non-alphanumerics become `_`; `envoy_` in front, except for Wasm's
/// custom stats (`wasmcustom.` is stripped and nothing added).
pub fn prometheus_name(name: &str) -> String {
    let (custom, base) = match name.strip_prefix("wasmcustom.") {
        Some(rest) => (true, rest),
        None => (false, name),
    };
    let clean: String = base.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect();
    if custom {
        clean
    } else {
        format!("envoy_{clean}")
    }
}

/// One family of samples under one name, as the page prints them.
#[derive(Default)]
struct Family {
    kind: &'static str,
    /// Label set (sorted, rendered) → sample lines after the name.
    samples: BTreeMap<String, Vec<String>>,
}

/// Builds the `/stats/prometheus` page.
#[derive(Default)]
pub struct Page {
    families: BTreeMap<String, Family>,
}

fn labels(tags: &[(String, String)]) -> String {
    let mut tags: Vec<&(String, String)> = tags.iter().collect();
    tags.sort();
    let inner: Vec<String> = tags.iter().map(|(k, v)| format!("{k}=\"{}\"", escape(v))).collect();
    inner.join(",")
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

impl Page {
    fn family(&mut self, name: String, kind: &'static str) -> &mut Family {
        let f = self.families.entry(name).or_default();
        f.kind = kind;
        f
    }

    /// A counter or gauge under its stat name, tags extracted.
    pub fn scalar(&mut self, tagger: &Tagger, stat: &str, kind: MetricKind, value: u64) {
        let (name, tags) = tagger.extract(stat);
        let kind = if kind == MetricKind::Counter { "counter" } else { "gauge" };
        let labels = labels(&tags);
        self.family(prometheus_name(&name), kind)
            .samples
            .entry(labels.clone())
            .or_default()
            .push(format!("{{{labels}}} {value}"));
    }

    /// A histogram in milliseconds.
    pub fn histogram(&mut self, tagger: &Tagger, stat: &str, h: &Histogram) {
        let buckets = TIME_BUCKETS_MS.iter().map(|b| b.to_string()).zip(h.cumulative());
        let sum = h.sum_us.load(Ordering::Relaxed) as f64 / 1000.0;
        self.histogram_lines(tagger, stat, buckets, h.count.load(Ordering::Relaxed), &sum.to_string());
    }

    /// A histogram's family: cumulative `(bound, count)` buckets, then `+Inf`, `_sum`, `_count`.
    fn histogram_lines(
        &mut self,
        tagger: &Tagger,
        stat: &str,
        buckets: impl Iterator<Item = (String, u64)>,
        count: u64,
        sum: &str,
    ) {
        let (name, tags) = tagger.extract(stat);
        let base = labels(&tags);
        let sep = if base.is_empty() { "" } else { "," };
        let mut lines: Vec<String> =
            buckets.map(|(bound, n)| format!("_bucket{{{base}{sep}le=\"{bound}\"}} {n}")).collect();
        lines.push(format!("_bucket{{{base}{sep}le=\"+Inf\"}} {count}"));
        lines.push(format!("_sum{{{base}}} {sum}"));
        lines.push(format!("_count{{{base}}} {count}"));
        self.family(prometheus_name(&name), "histogram").samples.insert(base, lines);
    }

    /// The filters' metrics, as Envoy names them (`wasmcustom.` + the filter's name).
    pub fn wasm(&mut self, tagger: &Tagger, metrics: &[Metric]) {
        for m in metrics {
            let stat = format!("wasmcustom.{}", m.name);
            match m.kind {
                MetricKind::Counter | MetricKind::Gauge => self.scalar(tagger, &stat, m.kind, m.value),
                MetricKind::Histogram => {
                    let buckets =
                        ebb_host::HISTOGRAM_BUCKETS.iter().map(|b| b.to_string()).zip(m.buckets.iter().copied());
                    self.histogram_lines(tagger, &stat, buckets, m.value, &m.sum.to_string());
                }
            }
        }
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        for (name, family) in &self.families {
            let _ = writeln!(out, "# TYPE {name} {}", family.kind);
            for lines in family.samples.values() {
                for line in lines {
                    let _ = writeln!(out, "{name}{line}");
                }
            }
        }
        out
    }
}

/// Envoy's built-in tag rules for the stats ebb proxy keeps (from `well_known_names.cc`),
/// followed by the bootstrap's own.
pub fn tagger(bootstrap_tags: &[StatsTag]) -> Result<Tagger, String> {
    let builtin = [
        ("envoy.response_code_class", r"_rq_(\d)xx$"),
        ("envoy.cluster_name", r"^cluster\.((.+?)\.)"),
        ("envoy.http_conn_manager_prefix", r"^http\.((.*?)\.)"),
        ("envoy.tcp_prefix", r"^tcp\.((.*?)\.)"),
        ("envoy.listener_address", r"^listener\.(((?:[_.[:digit:]]*|[_\[\]aAbBcCdDeEfF[:digit:]]*))\.)"),
    ];
    let mut tags: Vec<StatsTag> =
        builtin.iter().map(|(n, r)| StatsTag { tag_name: n.to_string(), regex: r.to_string() }).collect();
    tags.extend(bootstrap_tags.iter().cloned());
    let mut t = Tagger::new(&tags)?;
    // Envoy's tag names become label names with `.` turned into `_`.
    for (name, _) in &mut t.rules {
        *name = name.replace('.', "_");
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn staging_tag() -> StatsTag {
        StatsTag {
            tag_name: "ebb_pool".into(),
            regex: r"^(?:wasmcustom\.)?ebb\.pool(\.([a-z0-9_-]+))\.[a-z_]+$".into(),
        }
    }

    #[test]
    fn wasm_metrics_get_the_staging_tag() {
        let t = tagger(&[staging_tag()]).unwrap();
        let mut page = Page::default();
        page.scalar(&t, "wasmcustom.ebb.pool.web.available_hosts", MetricKind::Gauge, 7);
        page.scalar(&t, "wasmcustom.ebb.armed", MetricKind::Gauge, 1);
        let text = page.render();
        assert!(
            text.contains("# TYPE ebb_pool_available_hosts gauge\nebb_pool_available_hosts{ebb_pool=\"web\"} 7\n"),
            "{text}"
        );
        assert!(text.contains("ebb_armed{} 1\n"), "{text}");
    }

    #[test]
    fn time_buckets_are_cumulative_on_the_page() {
        let h = Histogram::default();
        for ms in [0.2, 0.5, 3.0, 7000.0, 4_000_000.0] {
            h.record(ms);
        }
        let c = h.cumulative();
        // ≤0.5: 2, ≤1: 2, ≤5: 3, ... ≤10000: 4, ≤3600000: 4 (the last is over every bound).
        assert_eq!((c[0], c[1], c[2], c[11], c[12], c[18]), (2, 2, 3, 3, 4, 4));
        let mut page = Page::default();
        page.histogram(&tagger(&[]).unwrap(), "cluster.web.upstream_rq_time", &h);
        let text = page.render();
        assert!(text.contains("le=\"0.5\"} 2\n"), "{text}");
        assert!(text.contains("le=\"5\"} 3\n"), "{text}");
        assert!(text.contains("le=\"+Inf\"} 5\n"), "{text}");
    }

    #[test]
    fn envoy_stats_get_envoys_tags() {
        let t = tagger(&[]).unwrap();
        let mut page = Page::default();
        page.scalar(&t, "cluster.web.upstream_rq_2xx", MetricKind::Counter, 3);
        page.scalar(&t, "cluster.web.upstream_rq_total", MetricKind::Counter, 4);
        page.scalar(&t, "http.ingress_http.downstream_rq_5xx", MetricKind::Counter, 1);
        let text = page.render();
        assert!(
            text.contains("envoy_cluster_upstream_rq_xx{envoy_cluster_name=\"web\",envoy_response_code_class=\"2\"} 3"),
            "{text}"
        );
        assert!(text.contains("envoy_cluster_upstream_rq_total{envoy_cluster_name=\"web\"} 4"), "{text}");
        assert!(text.contains(
            "envoy_http_downstream_rq_xx{envoy_http_conn_manager_prefix=\"ingress_http\",envoy_response_code_class=\"5\"} 1"
        ));
    }
}
