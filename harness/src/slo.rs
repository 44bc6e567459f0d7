// SLO verdicts: each objective of the scenario checked against what the replay measured
// (pool capacity moments, alert firings, outcome windows), with target and measurement in words.

use std::collections::{HashMap, HashSet};

use crate::report::{human, AlertResult, PoolResult, SloResult};
use crate::scenario::{Scenario, Slo};
use crate::sim::stats::{window, Sample};

/// Checks every SLO of `scenario`. `samples[i]` are pool i's scrapes.
pub fn evaluate(
    scenario: &Scenario,
    pools: &[PoolResult],
    alerts: &[AlertResult],
    samples: &[&[Sample]],
) -> Vec<SloResult> {
    let index: HashMap<&str, usize> = scenario.pools.iter().enumerate().map(|(i, p)| (p.name.as_str(), i)).collect();
    let pool_index = |name: &str| index.get(name).copied().unwrap_or(0);
    scenario.slos.iter().map(|slo| check(scenario, &pool_index, slo, pools, alerts, samples)).collect()
}

fn check(
    scenario: &Scenario,
    pool_index: &dyn Fn(&str) -> usize,
    slo: &Slo,
    pools: &[PoolResult],
    alerts: &[AlertResult],
    samples: &[&[Sample]],
) -> SloResult {
    let name = slo.label();
    let result =
        |pass: bool, target: String, measured: String| SloResult { name: name.clone(), pass, target, measured };
    let scrape_s = scenario.scrape_interval.as_millis() as f64 / 1000.0;
    // Both time SLOs measure from the unplanned capacity loss to a later moment of the pool.
    let timed = [
        (&slo.time_to_detect, (|p: &PoolResult| p.detected_s) as fn(&PoolResult) -> Option<f64>),
        (&slo.time_to_restore, |p: &PoolResult| p.restored_s),
    ];
    for (objective, moment) in timed {
        if let Some(p) = objective {
            let pool = &pools[pool_index(&p.pool)];
            let target = format!("<= {}", p.max);
            return match (pool.capacity_lost_s, moment(pool)) {
                (None, _) => result(true, target, "no capacity loss".into()),
                (Some(_), None) => result(false, target, "never".into()),
                (Some(lost), Some(t)) => result(t - lost <= p.max.as_millis() as f64 / 1000.0, target, human(t - lost)),
            };
        }
    }
    if let Some(n) = &slo.no_page {
        let watched: HashSet<&str> = n.alerts.iter().map(String::as_str).collect();
        let fired: Vec<String> = alerts
            .iter()
            .filter(|a| watched.contains(a.name.as_str()) && !a.fired_s.is_empty())
            .map(|a| format!("{} x{}", a.name, a.fired_s.len()))
            .collect();
        let measured = if fired.is_empty() { "silent".to_string() } else { fired.join(", ") };
        return result(fired.is_empty(), "no firing".into(), measured);
    }
    if let Some(r) = &slo.error_ratio {
        let s = samples[pool_index(&r.pool)];
        let n = (r.window.as_millis() as f64 / 1000.0 / scrape_s).round().max(1.0) as usize;
        let worst = (0..s.len()).filter_map(|k| window(s, k, n).error_ratio()).fold(0.0, f64::max);
        return result(worst <= r.max, format!("<= {}", percent(r.max)), format!("worst {}", percent(worst)));
    }
    if let Some(r) = &slo.latency_p99 {
        let s = samples[pool_index(&r.pool)];
        let n = (r.window.as_millis() as f64 / 1000.0 / scrape_s).round().max(1.0) as usize;
        let worst = (0..s.len()).filter_map(|k| window(s, k, n).quantile(0.99)).fold(0.0, f64::max);
        return result(worst <= r.max, format!("<= {}s", r.max), format!("worst {worst}s"));
    }
    if let Some(b) = &slo.error_budget {
        let pool = &pools[pool_index(&b.pool)];
        let allowed = pool.requests as f64 * (1.0 - b.objective);
        let consumed = if allowed > 0.0 { pool.errors as f64 / allowed } else { 0.0 };
        return result(consumed <= b.max, format!("<= {}", percent(b.max)), format!("{} of budget", percent(consumed)));
    }
    result(false, "?".into(), "unknown objective".into())
}

/// `0.4%`, `12.5%`.
pub fn percent(ratio: f64) -> String {
    let p = ratio * 100.0;
    if p == 0.0 {
        "0%".into()
    } else if p < 1.0 {
        format!("{p:.2}%")
    } else {
        format!("{p:.1}%")
    }
}
