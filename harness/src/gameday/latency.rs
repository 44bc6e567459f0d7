// Latency as the proxies measured it: Envoy's request-time histograms on `/stats/prometheus`
// (cumulative `le` buckets in milliseconds) summed over pages, the quantile of what a window of
// looks added as Prometheus' histogram_quantile computes it, and the latency SLOs and rules on it.

use std::fmt;

use super::Runner;
use crate::report::Report;
use crate::scenario::{AlertRule, Signal};

/// Where a pool's latency is read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// `envoy_cluster_upstream_rq_time{envoy_cluster_name="<cluster>"}`: from the request let go
    /// upstream to its answer. Per pool (a pool's cluster has its name), but without the time
    /// the filter held the request (a `delay`).
    Cluster(String),
    /// `envoy_http_downstream_rq_time{envoy_http_conn_manager_prefix="<prefix>"}`: from arrival
    /// to the answer, the filter's delays included, for every pool behind that listener.
    Listener(String),
}

impl Source {
    /// The histogram's name and the label that selects it.
    fn series(&self) -> (&'static str, &'static str, &str) {
        match self {
            Source::Cluster(c) => ("envoy_cluster_upstream_rq_time", "envoy_cluster_name", c),
            Source::Listener(p) => ("envoy_http_downstream_rq_time", "envoy_http_conn_manager_prefix", p),
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (name, label, value) = self.series();
        write!(f, "{name}{{{label}=\"{value}\"}}")
    }
}

/// A histogram's cumulative counts: `(le, count)` for each finite bound in milliseconds, in
/// order, and the count of every observation (`+Inf`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Histogram {
    pub buckets: Vec<(f64, u64)>,
    pub count: u64,
}

/// A quantile of a histogram, and the bucket it was interpolated in (its resolution).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Quantile {
    pub ms: f64,
    pub lower_ms: f64,
    /// None: the rank fell in `+Inf`, and `ms` is the highest finite bound (as Prometheus says).
    pub upper_ms: Option<f64>,
}

impl Quantile {
    /// `0.497s (in the 250–500 ms bucket)`.
    pub fn describe(&self) -> String {
        let secs = (self.ms / 1000.0 * 1000.0).round() / 1000.0;
        match self.upper_ms {
            Some(upper) => format!("{secs}s (in the {}–{} ms bucket)", self.lower_ms, upper),
            None => format!("{secs}s or more (above the highest bucket, {} ms)", self.lower_ms),
        }
    }
}

/// Adds the histogram `source` names on a Prometheus text `page` to `into`; whether the page has it.
pub fn add(page: &str, source: &Source, into: &mut Histogram) -> bool {
    let (name, label, value) = source.series();
    let bucket = format!("{name}_bucket");
    let mut found = false;
    for line in page.lines() {
        if line.starts_with('#') {
            continue;
        }
        let Some((series, count)) = line.rsplit_once(' ') else { continue };
        let Some((metric, labels)) = series.split_once('{') else { continue };
        if metric != bucket || super::observe::label(labels, label).as_deref() != Some(value) {
            continue;
        }
        let (Some(le), Ok(count)) = (super::observe::label(labels, "le"), count.trim().parse::<f64>()) else {
            continue;
        };
        if !count.is_finite() || count < 0.0 {
            continue;
        }
        found = true;
        // The float-to-integer cast saturates.
        let count = count as u64;
        if le == "+Inf" {
            into.count = into.count.saturating_add(count);
            continue;
        }
        let Ok(le) = le.parse::<f64>() else { continue };
        if !le.is_finite() {
            continue;
        }
        match into.buckets.iter_mut().find(|(b, _)| *b == le) {
            Some((_, n)) => *n = n.saturating_add(count),
            None => {
                let at = into.buckets.partition_point(|(b, _)| *b < le);
                into.buckets.insert(at, (le, count));
            }
        }
    }
    found
}

impl Histogram {
    /// What `self` (cumulative, later) holds beyond `earlier`. A proxy that restarted counts
    /// again from zero: its window reads what it counted since.
    pub fn since(&self, earlier: &Histogram) -> Histogram {
        let before = |le: f64| earlier.buckets.iter().find(|(b, _)| *b == le).map_or(0, |(_, n)| *n);
        Histogram {
            buckets: self.buckets.iter().map(|&(le, n)| (le, n.saturating_sub(before(le)))).collect(),
            count: self.count.saturating_sub(earlier.count),
        }
    }

    /// `histogram_quantile(q)`: the bucket that holds rank `q × count`, and linear
    /// interpolation within it (from 0 for the first). None without observations.
    pub fn quantile(&self, q: f64) -> Option<Quantile> {
        if self.count == 0 || !(0.0..=1.0).contains(&q) {
            return None;
        }
        let rank = q * self.count as f64;
        // Cumulative counts never fall with the bound; a subtraction across a restart may make
        // them, and Prometheus then takes the running maximum, as here.
        let mut lower = (0.0, 0u64);
        for &(le, n) in &self.buckets {
            let n = n.max(lower.1).min(self.count);
            if n as f64 >= rank && n > 0 {
                let (start, below) = lower;
                let inside = n - below;
                let fraction = if inside == 0 { 1.0 } else { (rank - below as f64) / inside as f64 };
                return Some(Quantile { ms: start + (le - start) * fraction, lower_ms: start, upper_ms: Some(le) });
            }
            lower = (le, n);
        }
        Some(Quantile { ms: lower.0, lower_ms: lower.0, upper_ms: None })
    }
}

impl Runner<'_> {
    /// The scenario's `latency_p99` SLOs on the observed histograms: the worst p99 of every
    /// window of looks. A pool no request was timed in fails (nothing shows the objective met).
    pub(super) fn judge_latency(&self, report: &mut Report) {
        let scrape_s = self.scenario.scrape_interval.as_millis() as f64 / 1000.0;
        for (i, slo) in self.scenario.slos.iter().enumerate() {
            let Some(r) = &slo.latency_p99 else { continue };
            let Some(p) = self.scenario.pools.iter().position(|x| x.name == r.pool) else { continue };
            let Some(source) = self.latency_of.get(p).cloned().flatten() else { continue };
            let n = (r.window.as_millis() as f64 / 1000.0 / scrape_s).round().max(1.0) as usize;
            let worst = (0..self.latency[p].len())
                .filter_map(|k| self.latency_window(p, k, n)?.quantile(0.99))
                .max_by(|a, b| a.ms.total_cmp(&b.ms));
            let (pass, measured) = match worst {
                None => (false, format!("no request timed by {source}")),
                Some(q) => {
                    (q.upper_ms.is_some() && q.ms <= r.max * 1000.0, format!("worst {} of {source}", q.describe()))
                }
            };
            if let Some(result) = report.slos.get_mut(i) {
                result.pass = pass;
                result.measured = measured;
            }
        }
        report.verdict = if report.slos.iter().all(|s| s.pass) { "pass" } else { "fail" }.into();
    }

    /// Whether latency rule `rule` on pool `pool` holds at the latest look; None for a rule on
    /// another signal (the replay's code evaluates those).
    pub(super) fn latency_condition(&self, rule: &AlertRule, pool: usize) -> Option<bool> {
        let q = match rule.signal {
            Signal::LatencyP50 => 0.5,
            Signal::LatencyP90 => 0.9,
            Signal::LatencyP99 => 0.99,
            _ => return None,
        };
        let samples = self.samples.get(pool)?;
        let k = samples.len().checked_sub(1)?;
        if rule.unless_deploying && samples[k].deploying {
            return Some(false);
        }
        let scrape_s = self.scenario.scrape_interval.as_millis() as f64 / 1000.0;
        let n = (rule.window.as_millis() as f64 / 1000.0 / scrape_s).round().max(1.0) as usize;
        let value = self
            .latency_window(pool, k, n)
            .filter(|h| h.count >= rule.min_requests.max(1))
            .and_then(|h| h.quantile(q))
            .map(|q| q.ms / 1000.0);
        Some(match (value, rule.above, rule.below) {
            (Some(v), Some(above), _) => v > above,
            (Some(v), None, Some(below)) => v < below,
            _ => false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A page as ebb proxy (and Envoy) writes it: Envoy's default buckets.
    fn page(web: [u64; 4], inf: u64) -> String {
        format!(
            "# TYPE envoy_cluster_upstream_rq_time histogram\n\
             envoy_cluster_upstream_rq_time_bucket{{envoy_cluster_name=\"web\",le=\"100\"}} {}\n\
             envoy_cluster_upstream_rq_time_bucket{{envoy_cluster_name=\"web\",le=\"250\"}} {}\n\
             envoy_cluster_upstream_rq_time_bucket{{envoy_cluster_name=\"web\",le=\"500\"}} {}\n\
             envoy_cluster_upstream_rq_time_bucket{{envoy_cluster_name=\"web\",le=\"1000\"}} {}\n\
             envoy_cluster_upstream_rq_time_bucket{{envoy_cluster_name=\"web\",le=\"+Inf\"}} {inf}\n\
             envoy_cluster_upstream_rq_time_sum{{envoy_cluster_name=\"web\"}} 1\n\
             envoy_cluster_upstream_rq_time_bucket{{envoy_cluster_name=\"api\",le=\"100\"}} 7\n\
             envoy_cluster_upstream_rq_time_bucket{{envoy_cluster_name=\"api\",le=\"+Inf\"}} 7\n\
             envoy_http_downstream_rq_time_bucket{{envoy_http_conn_manager_prefix=\"ingress_http\",le=\"100\"}} 3\n\
             envoy_http_downstream_rq_time_bucket{{envoy_http_conn_manager_prefix=\"ingress_http\",le=\"+Inf\"}} 9\n",
            web[0], web[1], web[2], web[3]
        )
    }

    #[test]
    fn histograms_are_read_by_source_and_summed_over_pages() {
        let web = Source::Cluster("web".into());
        let mut h = Histogram::default();
        assert!(add(&page([1, 2, 3, 4], 5), &web, &mut h));
        assert!(add(&page([1, 2, 3, 4], 5), &web, &mut h));
        assert_eq!(h, Histogram { buckets: vec![(100.0, 2), (250.0, 4), (500.0, 6), (1000.0, 8)], count: 10 });
        let mut l = Histogram::default();
        assert!(add(&page([0; 4], 0), &Source::Listener("ingress_http".into()), &mut l));
        assert_eq!(l, Histogram { buckets: vec![(100.0, 3)], count: 9 });
        assert!(!add(&page([0; 4], 0), &Source::Cluster("ssh".into()), &mut Histogram::default()));
        assert_eq!(web.to_string(), "envoy_cluster_upstream_rq_time{envoy_cluster_name=\"web\"}");
    }

    #[test]
    fn quantiles_interpolate_within_the_bucket_as_histogram_quantile_does() {
        let web = Source::Cluster("web".into());
        let (mut before, mut after) = (Histogram::default(), Histogram::default());
        add(&page([10, 10, 10, 10], 10), &web, &mut before);
        // 100 more: 90 under 100 ms, 10 between 250 and 500 ms.
        add(&page([100, 100, 110, 110], 110), &web, &mut after);
        let window = after.since(&before);
        assert_eq!(window.count, 100);
        // histogram_quantile(0.99): rank 99, in (250, 500] holding 10 from 90: 250 + 250 × 9/10.
        let p99 = window.quantile(0.99).expect("observations");
        assert_eq!(p99, Quantile { ms: 475.0, lower_ms: 250.0, upper_ms: Some(500.0) });
        assert_eq!(p99.describe(), "0.475s (in the 250–500 ms bucket)");
        // Rank 45 of 90 in (0, 100].
        assert_eq!(window.quantile(0.45).map(|q| q.ms), Some(50.0));
        // Above every finite bound: the highest bound, as Prometheus answers.
        let slow = Histogram { buckets: vec![(100.0, 0), (1000.0, 0)], count: 4 };
        assert_eq!(slow.quantile(0.99), Some(Quantile { ms: 1000.0, lower_ms: 1000.0, upper_ms: None }));
        assert_eq!(Histogram::default().quantile(0.99), None);
        // A restart: the later page counts less; nothing is negative.
        assert_eq!(before.since(&after).count, 0);
    }
}
