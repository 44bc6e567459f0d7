// Alert rules evaluated at every scrape as Prometheus does: a condition over a window of the
// pool's outcomes or over the filter's capacity gauges, which must hold for `for` to fire.

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
    pub firing: bool,
    pub fired_s: Vec<f64>,
    pub resolved_s: Vec<f64>,
}

impl Alert {
    pub fn new(rule: AlertRule, pool: usize) -> Alert {
        Alert { rule, pool, pending_since: None, firing: false, fired_s: Vec::new(), resolved_s: Vec::new() }
    }

    /// Evaluates the rule at scrape `k` of its pool's samples (taken every `scrape_s` seconds).
    pub fn evaluate(&mut self, samples: &[Sample], k: usize, scrape_s: f64) -> Option<Transition> {
        let t = samples[k].t_s;
        let holds = self.condition(samples, k, scrape_s);
        if !holds {
            self.pending_since = None;
            if self.firing {
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
