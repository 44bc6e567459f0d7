// SLO verdicts: each objective of the scenario checked against what the replay measured
// (pool capacity moments, alert firings, outcome windows), with target and measurement in words.

use std::collections::{HashMap, HashSet};

use ebb_engine::Duration;

use crate::report::{AlertResult, Episode, PoolResult, SloResult};
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
    // Both time SLOs measure each capacity loss of the pool, from its beginning to a later moment;
    // the worst decides.
    let timed = [
        (&slo.time_to_detect, (|e: &Episode| (e.time_to_detect(), e.detect_words())) as Measure),
        (&slo.time_to_restore, |e: &Episode| (e.time_to_restore(), e.restore_words())),
    ];
    for (objective, measure) in timed {
        if let Some(p) = objective {
            let pool = &pools[pool_index(&p.pool)];
            let (pass, measured) = per_episode(scenario, &pool.episodes, p.max.as_millis() as f64 / 1000.0, measure);
            return result(pass, format!("<= {}", p.max), measured);
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
        let spent = budget_spent(pool.requests, pool.errors, b.objective, duration_s(scenario), b.period);
        let (target, measured) = match b.period {
            Some(period) => (
                format!("<= {} of the {period} budget", percent(b.max)),
                format!("{} of the {period} budget", percent(spent)),
            ),
            None => (format!("<= {}", percent(b.max)), format!("{} of budget", percent(spent))),
        };
        return result(spent <= b.max, target, measured);
    }
    result(false, "?".into(), "unknown objective".into())
}

type Measure = fn(&Episode) -> (Option<f64>, String);

/// Every episode against `max` seconds: passes when each was measured within it. One episode is
/// measured in words (`5m15s`, `never`); several are listed with the clock time each began.
fn per_episode(scenario: &Scenario, episodes: &[Episode], max_s: f64, measure: Measure) -> (bool, String) {
    if episodes.is_empty() {
        return (true, "no capacity loss".into());
    }
    let measured: Vec<(bool, String)> =
        episodes.iter().map(measure).map(|(t, words)| (t.is_some_and(|t| t <= max_s), words)).collect();
    let pass = measured.iter().all(|(ok, _)| *ok);
    if let [(_, words)] = measured.as_slice() {
        return (pass, words.clone());
    }
    let listed: Vec<String> = episodes
        .iter()
        .zip(&measured)
        .map(|(e, (ok, words))| {
            format!("{} {words}{}", &scenario.clock_label(e.lost_s)[..5], if *ok { "" } else { " (missed)" })
        })
        .collect();
    (pass, format!("{} losses: {}", episodes.len(), listed.join("; ")))
}

fn duration_s(scenario: &Scenario) -> f64 {
    scenario.duration.as_millis() as f64 / 1000.0
}

/// Share of the error budget the replayed window spent: its errors over what the budget allows,
/// `requests x (1 - objective)`, for the window itself or, with a `period`, for the period's
/// requests at the window's mean rate.
pub fn budget_spent(requests: u64, errors: u64, objective: f64, window_s: f64, period: Option<Duration>) -> f64 {
    let scale = match period {
        Some(p) if window_s > 0.0 => p.as_millis() as f64 / 1000.0 / window_s,
        _ => 1.0,
    };
    let allowed = requests as f64 * scale * (1.0 - objective);
    if allowed > 0.0 {
        errors as f64 / allowed
    } else {
        0.0
    }
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
