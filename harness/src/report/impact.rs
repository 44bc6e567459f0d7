// When customers were impaired: spans of sustained impairment read from a pool's scrapes, so that
// one noisy window is not an impact and two impacts hours apart are not one span over the hours.

use serde::{Deserialize, Serialize};

use crate::scenario::Scenario;
use crate::sim::stats::{window, Sample};

/// One impact: from the first to the last impaired scrape of a sustained run.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Span {
    pub start_s: f64,
    pub end_s: f64,
}

/// The impacts of a pool. A scrape is impaired when both its trailing `impact.window` and its
/// own scrape interval are over the thresholds (the impairment is going on, not remembered by
/// the window). Impaired scrapes less than one window apart form one run; a run is an impact
/// when it lasts at least `impact.for`.
pub fn spans(scenario: &Scenario, s: &[Sample]) -> Vec<Span> {
    let impact = &scenario.impact;
    let scrape_s = scenario.scrape_interval.as_millis() as f64 / 1000.0;
    let window_s = impact.window.as_millis() as f64 / 1000.0;
    let n = (window_s / scrape_s).round().max(1.0) as usize;
    let over = |k: usize, n: usize| {
        let b = window(s, k, n);
        b.error_ratio().is_some_and(|r| r > impact.error_ratio)
            || impact.latency_p90.is_some_and(|l| b.quantile(0.9).is_some_and(|q| q > l))
    };
    let sustained = impact.sustained.as_millis() as f64 / 1000.0;
    let mut out = Vec::new();
    let mut run: Option<Span> = None;
    for k in (0..s.len()).filter(|&k| over(k, 1) && over(k, n)) {
        let t = s[k].t_s;
        run = match run {
            Some(r) if t - r.end_s <= window_s => Some(Span { start_s: r.start_s, end_s: t }),
            Some(r) => {
                out.extend(lasting(r, sustained));
                Some(Span { start_s: t, end_s: t })
            }
            None => Some(Span { start_s: t, end_s: t }),
        };
    }
    if let Some(r) = run {
        out.extend(lasting(r, sustained));
    }
    out
}

/// The run, if it lasted long enough to be an impact.
fn lasting(run: Span, sustained_s: f64) -> Option<Span> {
    (run.end_s - run.start_s >= sustained_s).then_some(Span { start_s: run.start_s.max(0.0), end_s: run.end_s })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::stats::{push, Bucket};

    fn scenario() -> Scenario {
        let text = r#"{"version": 1, "name": "t", "duration": "10h", "scrape_interval": "1m",
            "pools": [{"name": "web", "hosts": 10, "capacity_per_host": 1, "service_time": "1s"}],
            "traffic": [{"pool": "web", "points": [["+0s", 1]]}],
            "slos": [{"error_budget": {"pool": "web", "objective": 0.99, "max": 1}}]}"#;
        Scenario::parse(std::path::Path::new("t.json"), text.as_bytes()).unwrap_or_else(|e| panic!("{e}"))
    }

    /// One scrape a minute for ten hours, 100 requests each, `errors(minute)` of them failed.
    fn minutes(errors: impl Fn(usize) -> u64) -> Vec<Sample> {
        let mut s = Vec::new();
        for m in 0..600 {
            let mut bucket = Bucket::default();
            for r in 0..100 {
                bucket.record(10, r < errors(m), false);
            }
            push(&mut s, Sample { t_s: 60.0 * (m + 1) as f64, bucket, ..Sample::default() });
        }
        s
    }

    #[test]
    fn one_noisy_minute_is_no_impact_and_two_incidents_are_two_spans() {
        let noisy = minutes(|m| if m == 30 { 40 } else { 0 });
        assert_eq!(spans(&scenario(), &noisy), vec![]);
        let two = minutes(|m| if (60..90).contains(&m) || (400..420).contains(&m) { 20 } else { 0 });
        let got = spans(&scenario(), &two);
        assert_eq!(got, vec![Span { start_s: 3660.0, end_s: 5400.0 }, Span { start_s: 24060.0, end_s: 25200.0 }]);
    }
}
