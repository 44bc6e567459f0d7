// Outcome statistics streamed into fixed buckets: per pool and scrape interval, counts and a
// latency histogram, with running totals so that any window of scrapes is one subtraction.
// Nothing per request is kept, so memory is flat in the replay's request count.

/// Upper bounds of the latency histogram, in milliseconds (the last bucket is open): about ten
/// a decade, so that a quantile read from them is within 25% of the truth (a chart's p90 band
/// no longer sits flat at a coarse bound).
pub const LATENCY_BOUNDS_MS: [u64; 46] = [
    1, 2, 3, 4, 5, 6, 8, 10, 12, 15, 20, 25, 30, 40, 50, 60, 80, 100, 120, 150, 200, 250, 300, 400, 500, 600, 800,
    1_000, 1_200, 1_500, 2_000, 2_500, 3_000, 4_000, 5_000, 6_000, 8_000, 10_000, 12_000, 15_000, 20_000, 25_000,
    30_000, 40_000, 50_000, 60_000,
];
/// Latency counts: one per bound, then one for everything slower.
const LATENCY_BUCKETS: usize = LATENCY_BOUNDS_MS.len() + 1;

/// Outcomes of the requests (or connections) that finished in one interval.
#[derive(Clone, Debug, PartialEq)]
pub struct Bucket {
    pub requests: u64,
    /// Failed: 5xx local replies, upstream timeouts, refused or closed connections.
    pub errors: u64,
    /// Failed by the filter (shed, blackholed, aborted, reset).
    pub shed: u64,
    /// Counts per latency bound, then one for everything slower.
    pub latency: [u64; LATENCY_BUCKETS],
}

impl Default for Bucket {
    fn default() -> Self {
        Bucket { requests: 0, errors: 0, shed: 0, latency: [0; LATENCY_BUCKETS] }
    }
}

impl Bucket {
    pub fn record(&mut self, latency_ms: u64, error: bool, by_filter: bool) {
        self.requests = self.requests.saturating_add(1);
        self.errors = self.errors.saturating_add(u64::from(error));
        self.shed = self.shed.saturating_add(u64::from(by_filter));
        // The first bound at or above the latency (the open bucket past the last).
        let i = LATENCY_BOUNDS_MS.partition_point(|b| *b < latency_ms);
        self.latency[i] = self.latency[i].saturating_add(1);
    }

    pub fn merge(&mut self, other: &Bucket) {
        self.requests = self.requests.saturating_add(other.requests);
        self.errors = self.errors.saturating_add(other.errors);
        self.shed = self.shed.saturating_add(other.shed);
        for (a, b) in self.latency.iter_mut().zip(other.latency.iter()) {
            *a = a.saturating_add(*b);
        }
    }

    /// What `self` (a running total) holds beyond `earlier` (the same total, before).
    fn since(&self, earlier: &Bucket) -> Bucket {
        let mut b = Bucket {
            requests: self.requests.saturating_sub(earlier.requests),
            errors: self.errors.saturating_sub(earlier.errors),
            shed: self.shed.saturating_sub(earlier.shed),
            latency: [0; LATENCY_BUCKETS],
        };
        for (i, n) in b.latency.iter_mut().enumerate() {
            *n = self.latency[i].saturating_sub(earlier.latency[i]);
        }
        b
    }

    pub fn error_ratio(&self) -> Option<f64> {
        (self.requests > 0).then(|| self.errors as f64 / self.requests as f64)
    }

    pub fn shed_ratio(&self) -> Option<f64> {
        (self.requests > 0).then(|| self.shed as f64 / self.requests as f64)
    }

    /// The latency quantile `q` in seconds: the upper bound of the bucket that holds it
    /// (as Prometheus' histogram_quantile would report at worst).
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.requests == 0 {
            return None;
        }
        let rank = (q * self.requests as f64).ceil().max(1.0) as u64;
        let mut seen = 0u64;
        for (i, n) in self.latency.iter().enumerate() {
            seen = seen.saturating_add(*n);
            if seen >= rank {
                let ms =
                    LATENCY_BOUNDS_MS.get(i).copied().unwrap_or(2 * LATENCY_BOUNDS_MS[LATENCY_BOUNDS_MS.len() - 1]);
                return Some(ms as f64 / 1000.0);
            }
        }
        None
    }

    /// The latency quantile `q` in seconds, interpolated linearly within the bucket that holds
    /// it, as Prometheus' `histogram_quantile` does (for charts; alerts and SLOs read the bound).
    pub fn quantile_interpolated(&self, q: f64) -> Option<f64> {
        if self.requests == 0 {
            return None;
        }
        let rank = (q * self.requests as f64).max(0.0);
        let mut seen = 0u64;
        for (i, &n) in self.latency.iter().enumerate() {
            let below = seen as f64;
            seen = seen.saturating_add(n);
            if n > 0 && seen as f64 >= rank {
                let lower = if i == 0 { 0 } else { LATENCY_BOUNDS_MS[i - 1] };
                // The open bucket has no upper bound: its lower one is all that is known.
                let Some(&upper) = LATENCY_BOUNDS_MS.get(i) else { return Some(lower as f64 / 1000.0) };
                let within = ((rank - below) / n as f64).clamp(0.0, 1.0);
                return Some((lower as f64 + (upper - lower) as f64 * within) / 1000.0);
            }
        }
        None
    }
}

/// One scrape of one pool.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Sample {
    /// Seconds since the replay started.
    pub t_s: f64,
    /// The filter's gauges (lowest available and highest expected over proxies).
    pub available: u64,
    pub expected: u64,
    pub deploying: bool,
    /// Expected hosts launched but not registered with the load balancer (a registration fault,
    /// sim/scaling.rs): a loss of another kind than a drain.
    pub unregistered: u64,
    /// What finished since the previous scrape.
    pub bucket: Bucket,
    /// What finished up to this scrape, set by [`push`]: a window is the difference of two.
    pub cumulative: Bucket,
}

impl Sample {
    pub fn available_ratio(&self) -> f64 {
        if self.expected == 0 {
            1.0
        } else {
            self.available as f64 / self.expected as f64
        }
    }
}

/// Appends `sample`, with the running total of everything before it.
pub fn push(samples: &mut Vec<Sample>, mut sample: Sample) {
    let mut cumulative = samples.last().map(|s| s.cumulative.clone()).unwrap_or_default();
    cumulative.merge(&sample.bucket);
    sample.cumulative = cumulative;
    samples.push(sample);
}

/// The buckets of the last `n` samples up to and including `end`, merged: in constant time, so
/// that alert rules and SLOs over long windows cost the same as over short ones.
pub fn window(samples: &[Sample], end: usize, n: usize) -> Bucket {
    let first = (end + 1).saturating_sub(n);
    match first.checked_sub(1) {
        Some(before) => samples[end].cumulative.since(&samples[before].cumulative),
        None => samples[end].cumulative.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_and_ratios() {
        let mut b = Bucket::default();
        for ms in [10, 10, 10, 10, 10, 10, 10, 10, 10, 900] {
            b.record(ms, ms > 500, false);
        }
        assert_eq!(b.quantile(0.5), Some(0.01));
        assert_eq!(b.quantile(0.99), Some(1.0));
        assert_eq!(b.error_ratio(), Some(0.1));
        assert_eq!(Bucket::default().quantile(0.5), None);
    }

    #[test]
    fn latency_bounds_are_fine_enough_for_a_chart() {
        // Each bound at most 2x the one before (1-2-5 steps were 2.5x), and none past 60s.
        for w in LATENCY_BOUNDS_MS.windows(2) {
            assert!(w[0] < w[1] && w[1] <= 2 * w[0], "{w:?}");
        }
        let mut b = Bucket::default();
        // Latencies spread evenly over 1.0s to 1.2s: the bound says 1.2s, interpolation about 1.16s.
        for k in 0..100 {
            b.record(1_001 + 2 * k, false, false);
        }
        assert_eq!(b.quantile(0.9), Some(1.2));
        let p90 = b.quantile_interpolated(0.9).unwrap_or_default();
        assert!((1.15..=1.19).contains(&p90), "{p90}");
        assert_eq!(Bucket::default().quantile_interpolated(0.9), None);
    }

    #[test]
    fn a_window_is_the_merge_of_its_samples() {
        let mut samples = Vec::new();
        for k in 0..50u64 {
            let mut bucket = Bucket::default();
            for r in 0..(k % 7) {
                bucket.record(k * 37 + r * 400, (k + r) % 3 == 0, r == 1);
            }
            push(&mut samples, Sample { t_s: k as f64, bucket, ..Sample::default() });
        }
        for end in 0..samples.len() {
            for n in [1, 2, 5, 20, 49, 50, 51, usize::MAX] {
                let mut merged = Bucket::default();
                for s in &samples[(end + 1).saturating_sub(n)..=end] {
                    merged.merge(&s.bucket);
                }
                assert_eq!(window(&samples, end, n), merged, "end {end}, n {n}");
            }
        }
    }
}
