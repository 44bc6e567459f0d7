// Alert rules evaluated at every scrape as Prometheus does: a condition over a window of the
// pool's outcomes or over the filter's capacity gauges, which must hold for `for` to fire. Alerts
// of Prometheus rule files (`--rules`, src/rules/) are kept here too, their state set from outside.

use crate::scenario::{AlertRule, Signal};
use crate::sim::stats::{window, Sample};

/// A change of an alert's state at a scrape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    Fired,
    Resolved,
}

/// One rule and its history.
pub struct Alert {
    pub rule: AlertRule,
    /// Index of the rule's pool.
    pub pool: usize,
    pending_since: Option<f64>,
    /// When the condition last held (for `keep_firing_for`).
    last_true: f64,
    pub firing: bool,
    pub fired_s: Vec<f64>,
    pub resolved_s: Vec<f64>,
    /// The rule file of an alert Prometheus evaluates (None: the scenario's own rule).
    pub origin: Option<String>,
    /// The pool a Prometheus alert's labels name (`ebb_pool`, else `envoy_cluster_name`), if any.
    pub pool_label: Option<String>,
}

impl Alert {
    pub fn new(rule: AlertRule, pool: usize) -> Alert {
        Alert {
            rule,
            pool,
            pending_since: None,
            last_true: f64::NEG_INFINITY,
            firing: false,
            fired_s: Vec::new(),
            resolved_s: Vec::new(),
            origin: None,
            pool_label: None,
        }
    }

    /// An alert of rule file `file`, evaluated by Prometheus, on `pool` (its name and index) when
    /// its labels name one. Its rule holds only the name and pool: the condition is the file's.
    pub fn external(name: &str, pool: Option<String>, index: Option<usize>, file: &str) -> Alert {
        let rule = AlertRule {
            name: name.to_string(),
            pool: pool.clone().unwrap_or_default(),
            signal: Signal::AvailableRatio,
            window: ebb_engine::Duration::ZERO,
            above: None,
            below: None,
            hold: ebb_engine::Duration::ZERO,
            keep_firing_for: ebb_engine::Duration::ZERO,
            unless_deploying: false,
            min_requests: 0,
        };
        let mut alert = Alert::new(rule, index.unwrap_or(usize::MAX));
        alert.origin = Some(file.to_string());
        alert.pool_label = pool;
        alert
    }

    /// Evaluates the rule at scrape `k` of its pool's samples (taken every `scrape_s` seconds).
    pub fn evaluate(&mut self, samples: &[Sample], k: usize, scrape_s: f64) -> Option<Transition> {
        let holds = self.condition(samples, k, scrape_s);
        self.step(samples[k].t_s, holds)
    }

    /// Moves the alert to time `t` (seconds), its condition holding or not, through `for` and
    /// `keep_firing_for`: for a condition computed elsewhere (a game day's observed latency).
    pub fn step(&mut self, t: f64, holds: bool) -> Option<Transition> {
        if holds {
            self.last_true = t;
        } else {
            self.pending_since = None;
            let keep = self.rule.keep_firing_for.as_millis() as f64 / 1000.0;
            if self.firing && t - self.last_true >= keep {
                self.firing = false;
                self.resolved_s.push(t);
                return Some(Transition::Resolved);
            }
            return None;
        }
        let since = *self.pending_since.get_or_insert(t);
        if !self.firing && t - since >= self.rule.hold.as_millis() as f64 / 1000.0 {
            self.firing = true;
            self.fired_s.push(t);
            return Some(Transition::Fired);
        }
        None
    }

    fn condition(&self, samples: &[Sample], k: usize, scrape_s: f64) -> bool {
        let rule = &self.rule;
        if rule.unless_deploying && samples[k].deploying {
            return false;
        }
        let Some(value) = signal(rule, samples, k, scrape_s) else { return false };
        match (rule.above, rule.below) {
            (Some(above), _) => value > above,
            (None, Some(below)) => value < below,
            (None, None) => false,
        }
    }
}

/// The rule's signal at scrape `k`; None when a request-based window has too few requests.
pub fn signal(rule: &AlertRule, samples: &[Sample], k: usize, scrape_s: f64) -> Option<f64> {
    if rule.signal == Signal::AvailableRatio {
        return Some(samples[k].available_ratio());
    }
    let n = ((rule.window.as_millis() as f64 / 1000.0) / scrape_s).round().max(1.0) as usize;
    let b = window(samples, k, n);
    if b.requests < rule.min_requests.max(1) {
        return None;
    }
    match rule.signal {
        Signal::ErrorRatio => b.error_ratio(),
        Signal::ShedRatio => b.shed_ratio(),
        Signal::LatencyP50 => b.quantile(0.5),
        Signal::LatencyP90 => b.quantile(0.9),
        Signal::LatencyP99 => b.quantile(0.99),
        Signal::AvailableRatio => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::{AlertRule, Signal};
    use ebb_engine::Duration;

    fn samples(available: &[u64]) -> Vec<Sample> {
        available
            .iter()
            .enumerate()
            .map(|(i, &a)| Sample { t_s: 15.0 * (i + 1) as f64, available: a, expected: 10, ..Sample::default() })
            .collect()
    }

    fn rule(hold: u64, keep: u64) -> AlertRule {
        AlertRule {
            name: "cap".into(),
            pool: "web".into(),
            signal: Signal::AvailableRatio,
            window: Duration::from_secs(60),
            above: None,
            below: Some(1.0),
            hold: Duration::from_secs(hold),
            keep_firing_for: Duration::from_secs(keep),
            unless_deploying: false,
            min_requests: 1,
        }
    }

    fn run(alert: &mut Alert, s: &[Sample]) -> Vec<(f64, Transition)> {
        (0..s.len()).filter_map(|k| alert.evaluate(s, k, 15.0).map(|t| (s[k].t_s, t))).collect()
    }

    #[test]
    fn fires_after_holding_for_and_resolves_when_false() {
        let s = samples(&[10, 8, 8, 8, 8, 8, 10, 10]);
        let got = run(&mut Alert::new(rule(60, 0), 0), &s);
        assert_eq!(got, vec![(90.0, Transition::Fired), (105.0, Transition::Resolved)]);
    }

    #[test]
    fn a_blip_shorter_than_for_never_fires_and_keep_firing_for_rides_out_gaps() {
        let s = samples(&[8, 8, 10, 8, 8, 8, 8, 8, 10, 8, 10, 10, 10]);
        assert!(run(&mut Alert::new(rule(60, 0), 0), &s[..3]).is_empty());
        let got = run(&mut Alert::new(rule(60, 30), 0), &s);
        assert_eq!(got, vec![(120.0, Transition::Fired), (180.0, Transition::Resolved)]);
    }
}
