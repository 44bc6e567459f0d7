// A report from what a run observed: per-pool scrapes, alert firings and events, whether a replay
// simulated them or `ebb gameday` scraped them from live proxies. Capacity loss, detection,
// restore and impact are read from the scrapes the same way for both, and the SLOs judged on them.

use std::collections::HashMap;

use crate::report::{self, AlertResult, Event, PoolResult, PoolSeries, Report, Requests};
use crate::scenario::Scenario;
use crate::sim::stats::{self, Bucket, Sample};
use crate::slo;

/// What a run saw, pool by pool in the scenario's order.
pub struct Observed<'a> {
    /// Each pool's scrapes.
    pub samples: Vec<&'a [Sample]>,
    /// Each pool's requests and errors over the whole run (a replay also counts what finished
    /// after its last scrape).
    pub totals: Vec<(u64, u64)>,
    pub alerts: Vec<AlertResult>,
    /// Commands, alerts, recovery and the like, in any order (sorted here).
    pub events: Vec<Event>,
    pub requests: Requests,
    /// How long the run lasted, in scenario seconds.
    pub duration_s: f64,
}

/// The report of `scenario` from what was observed: pools' loss, detection and restore moments,
/// impact, SLO verdicts and per-minute series.
pub fn build(scenario: &Scenario, observed: Observed<'_>) -> Report {
    let Observed { samples, totals, alerts, mut events, requests, duration_s } = observed;
    let index: HashMap<&str, usize> = scenario.pools.iter().enumerate().map(|(i, p)| (p.name.as_str(), i)).collect();
    let mut alerts_of = vec![Vec::new(); scenario.pools.len()];
    for (k, a) in alerts.iter().enumerate() {
        if let Some(of) = index.get(a.pool.as_str()).and_then(|&i| alerts_of.get_mut(i)) {
            of.push(k);
        }
    }
    let mut pools = Vec::new();
    let mut extra = Vec::new();
    for (i, pool) in scenario.pools.iter().enumerate() {
        let name = pool.name.clone();
        let s = samples.get(i).copied().unwrap_or_default();
        let lost = s.iter().position(|x| x.available < x.expected && !x.deploying);
        let restored = lost.and_then(|l| s[l..].iter().find(|x| x.available >= x.expected)).map(|x| x.t_s);
        let lost_s = lost.map(|l| s[l].t_s);
        // Detected: the first alert on the pool to fire since the drop that ended in the loss
        // began (errors often page while the drain is still "in progress"); an alert before the
        // loss counts as detection at the loss.
        let drop_start = lost.map(|l| {
            let mut k = l;
            while k > 0 && s[k - 1].available < s[k - 1].expected {
                k -= 1;
            }
            s[k].t_s
        });
        let detected = drop_start.zip(lost_s).and_then(|(from, l)| {
            alerts_of[i]
                .iter()
                .flat_map(|&k| alerts[k].fired_s.iter().copied())
                .filter(|&f| f >= from)
                .fold(None, |m: Option<f64>, f| Some(m.map_or(f, |m: f64| m.min(f))))
                .map(|f| f.max(l))
        });
        let scrape_s = scenario.scrape_interval.as_millis() as f64 / 1000.0;
        let n = ((scenario.impact.window.as_millis() as f64 / 1000.0) / scrape_s).round().max(1.0) as usize;
        let impaired = |k: usize| {
            let b = stats::window(s, k, n);
            b.error_ratio().is_some_and(|r| r > scenario.impact.error_ratio)
                || scenario.impact.latency_p90.is_some_and(|l| b.quantile(0.9).is_some_and(|q| q > l))
        };
        let impact_start = (0..s.len()).find(|&k| impaired(k)).map(|k| s[k].t_s);
        let impact_end = (0..s.len()).rev().find(|&k| impaired(k)).map(|k| s[k].t_s);
        let min_ratio = s.iter().map(Sample::available_ratio).fold(1.0, f64::min);
        if let Some(t) = lost_s {
            // A registration fault is told apart from a drain: the hosts exist, the balancer
            // never got them.
            let text = match lost.map(|l| s[l].unregistered) {
                Some(n) if n > 0 => {
                    format!("{name} below expected hosts: {n} launched hosts not registered with the load balancer")
                }
                _ => format!("{name} below expected hosts, no deploy in progress"),
            };
            extra.push(Event { t_s: t, kind: "capacity_lost".into(), text });
        }
        if let Some(t) = restored {
            extra.push(Event {
                t_s: t,
                kind: "capacity_restored".into(),
                text: format!("{name} back to expected hosts"),
            });
        }
        if let (Some(a), Some(b)) = (impact_start, impact_end) {
            extra.push(Event {
                t_s: a.max(0.0),
                kind: "impact_start".into(),
                text: format!("{name} customers impaired"),
            });
            extra.push(Event { t_s: b, kind: "impact_end".into(), text: format!("{name} impairment ends") });
        }
        let (requests, errors) = totals.get(i).copied().unwrap_or_default();
        pools.push(PoolResult {
            name,
            capacity_lost_s: lost_s,
            detected_s: detected,
            restored_s: restored,
            impact_start_s: impact_start.map(|a| a.max(0.0)),
            impact_end_s: impact_end,
            min_capacity_ratio: min_ratio,
            requests,
            errors,
        });
    }
    events.extend(extra);
    events.sort_by(|a, b| a.t_s.total_cmp(&b.t_s));
    let slos = slo::evaluate(scenario, &pools, &alerts, &samples);
    let verdict = if slos.iter().all(|s| s.pass) { "pass" } else { "fail" };
    let series = samples.iter().zip(&scenario.pools).map(|(s, p)| minute_series(&p.name, s)).collect();
    Report {
        version: report::VERSION,
        scenario: scenario.name.clone(),
        description: scenario.description.clone(),
        start: scenario.start.to_string(),
        seed: scenario.seed,
        duration_s,
        verdict: verdict.into(),
        expected: scenario.expect.map(|v| v.as_str().to_string()),
        requests,
        slos,
        alerts,
        pools,
        events,
        series,
        live: None,
    }
}

/// Aggregates scrapes into minutes for the report's charts.
fn minute_series(pool: &str, samples: &[Sample]) -> PoolSeries {
    let mut series = PoolSeries { pool: pool.to_string(), ..PoolSeries::default() };
    let mut current: Option<(f64, Bucket, f64, f64)> = None;
    let flush = |series: &mut PoolSeries, (minute, b, ratio, unregistered): (f64, Bucket, f64, f64)| {
        series.t_s.push(minute);
        series.requests.push(b.requests);
        series.errors.push(b.errors);
        series.available_ratio.push(ratio);
        series.p90_s.push(b.quantile(0.9).unwrap_or(0.0));
        series.unregistered_ratio.push(unregistered);
    };
    let unregistered = |s: &Sample| if s.expected == 0 { 0.0 } else { s.unregistered as f64 / s.expected as f64 };
    for s in samples {
        let minute = ((s.t_s - 1e-9) / 60.0).floor().max(0.0) * 60.0;
        match current.as_mut() {
            Some((m, b, ratio, u)) if *m == minute => {
                b.merge(&s.bucket);
                *ratio = ratio.min(s.available_ratio());
                *u = u.max(unregistered(s));
            }
            _ => {
                if let Some(done) = current.take() {
                    flush(&mut series, done);
                }
                current = Some((minute, s.bucket.clone(), s.available_ratio(), unregistered(s)));
            }
        }
    }
    if let Some(done) = current {
        flush(&mut series, done);
    }
    // Only a pool with a registration fault has the series: other reports stay as they were.
    if series.unregistered_ratio.iter().all(|&u| u == 0.0) {
        series.unregistered_ratio.clear();
    }
    series
}
