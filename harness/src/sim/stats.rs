// Outcome statistics streamed into fixed buckets: per pool and scrape interval, counts and a
// latency histogram, with running totals so that any window of scrapes is one subtraction.
// Nothing per request is kept, so memory is flat in the replay's request count.

use serde::{Deserialize, Serialize};

/// Upper bounds of the latency histogram, in milliseconds (the last bucket is open).
pub const LATENCY_BOUNDS_MS: [u64; 20] =
    [1, 2, 5, 10, 20, 50, 100, 150, 200, 300, 500, 750, 1_000, 1_500, 2_000, 3_000, 5_000, 10_000, 30_000, 60_000];

/// Outcomes of the requests (or connections) that finished in one interval.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Bucket {
    pub requests: u64,
    /// Failed: 5xx local replies, upstream timeouts, refused or closed connections.
    pub errors: u64,
    /// Failed by the filter (shed, blackholed, aborted, reset).
    pub shed: u64,
    /// Counts per latency bound, then one for everything slower.
    pub latency: [u64; 21],
}

impl Bucket {
    pub fn record(&mut self, latency_ms: u64, error: bool, by_filter: bool) {
        self.requests = self.requests.saturating_add(1);
        self.errors = self.errors.saturating_add(u64::from(error));
        self.shed = self.shed.saturating_add(u64::from(by_filter));
        let i = LATENCY_BOUNDS_MS.iter().position(|b| latency_ms <= *b).unwrap_or(LATENCY_BOUNDS_MS.len());
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
            latency: [0; 21],
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
