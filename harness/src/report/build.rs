// A report from what a run observed: per-pool scrapes, alert firings and events, whether a replay
// simulated them or `ebb gameday` scraped them from live proxies. Capacity loss, detection,
// restore and impact are read from the scrapes the same way for both, and the SLOs judged on them.

use std::collections::HashMap;

use crate::report::{self, episodes, impact, AlertResult, Event, PoolResult, PoolSeries, Report, Requests};
use crate::scenario::{ClockTime, Scenario};
use crate::sim::stats::{Bucket, Sample};
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
        let mut fired: Vec<f64> = alerts_of[i].iter().flat_map(|&k| alerts[k].fired_s.iter().copied()).collect();
        fired.sort_by(f64::total_cmp);
        let episodes = episodes::episodes(scenario, &name, s, &fired);
        let impacts = impact::spans(scenario, s);
        let min_ratio = s.iter().map(Sample::available_ratio).fold(1.0, f64::min);
        let clock = |t: f64| scenario.clock_label(t);
        for (n, e) in episodes.iter().enumerate() {
            let nth = if n == 0 { String::new() } else { format!(" (loss {})", n + 1) };
            // A registration fault is told apart from a drain: the hosts exist, the balancer
            // never got them.
            let unregistered = s.iter().find(|x| x.t_s >= e.lost_s).map_or(0, |x| x.unregistered);
            let text = match &e.left_by {
                Some(by) => format!(
                    "{name} below expected hosts{nth}: the batch the aborted {by} drained at {} was left out (no deploy in progress from {})",
                    clock(e.lost_s),
                    clock(e.unplanned_s)
                ),
                None if unregistered > 0 => format!(
                    "{name} below expected hosts{nth}: {unregistered} launched hosts not registered with the load balancer"
                ),
                None => format!("{name} below expected hosts{nth}, no deploy in progress"),
            };
            extra.push(Event { t_s: e.lost_s, kind: "capacity_lost".into(), text });
            if let Some(t) = e.restored_s {
                extra.push(Event {
                    t_s: t,
                    kind: "capacity_restored".into(),
                    text: format!("{name} back to expected hosts{nth}"),
                });
            }
        }
        for span in &impacts {
            extra.push(Event {
                t_s: span.start_s,
                kind: "impact_start".into(),
                text: format!("{name} customers impaired"),
            });
            extra.push(Event { t_s: span.end_s, kind: "impact_end".into(), text: format!("{name} impairment ends") });
        }
        let (requests, errors) = totals.get(i).copied().unwrap_or_default();
        let first = episodes.first();
        pools.push(PoolResult {
            name,
            capacity_lost_s: first.map(|e| e.lost_s),
            detected_s: first.and_then(|e| e.detected_s),
            restored_s: first.and_then(|e| e.restored_s),
            impact_start_s: impacts.first().map(|x| x.start_s),
            impact_end_s: impacts.first().map(|x| x.end_s),
            min_capacity_ratio: min_ratio,
            requests,
            errors,
            episodes,
            impacts,
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
        // UTC, whatever the zone: a consumer adds `*_s` to it.
        start: match scenario.zone() {
            None => scenario.start.to_string(),
            Some(_) => ClockTime(scenario.start_epoch_ms() % 86_400_000).to_string(),
        },
        timezone: report::local::time_zone(scenario, duration_s),
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
        series.p90_s.push(b.quantile_interpolated(0.9).unwrap_or(0.0));
        series.unregistered_ratio.push(unregistered);
    };
    let unregistered = |s: &Sample| if s.expected == 0 { 0.0 } else { s.unregistered as f64 / s.expected as f64 };
    for s in samples {
        let ratio = s.available_ratio();
        if series.capacity_steps.last().is_none_or(|&(_, last)| last != ratio) {
            // The first step starts at the replay's start: the scrapes before it saw none.
            let t = if series.capacity_steps.is_empty() { 0.0 } else { s.t_s };
            series.capacity_steps.push((t, ratio));
        }
    }
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
