// Runbooks that act on what is true: a step triggered by a pool condition (`when`), a step that
// runs only if its condition still holds when it acts (`only_if`), and failed attempts (`fails`).
// Hooks of the replay (`Sim`): triggers evaluated at each scrape, and a gate before each action.

use crate::alert::{Alert, Transition};
use crate::scenario::{Recovery, Scenario, StillTrue};

use super::{ns, Ev, Sim};

/// The pool-condition triggers of a scenario's runbooks: evaluated like alert rules at every
/// scrape, but never pages (they are not in the report's alerts, and detect nothing).
pub(super) struct Triggers {
    /// (recovery index, its condition as an alert).
    conditions: Vec<(usize, Alert)>,
}

impl Triggers {
    pub(super) fn new(scenario: &Scenario) -> Triggers {
        let index = |name: &str| scenario.pools.iter().position(|p| p.name == name).unwrap_or(0);
        let conditions = scenario
            .recovery
            .iter()
            .enumerate()
            .filter_map(|(r, rule)| rule.when.as_ref().map(|w| (r, Alert::new(w.as_rule(r), index(&w.pool)))))
            .collect();
        Triggers { conditions }
    }

    fn holds(&self, r: usize) -> bool {
        self.conditions.iter().any(|(i, a)| *i == r && a.firing)
    }
}

impl Sim<'_> {
    /// Evaluates the pool-condition triggers at scrape `t`; a condition that starts to hold
    /// schedules its runbook `after` from now.
    pub(super) fn evaluate_triggers(&mut self, t: u64) {
        if self.triggers.conditions.is_empty() {
            return;
        }
        let scrape_s = self.scenario.scrape_interval.as_millis() as f64 / 1000.0;
        let mut due = Vec::new();
        for (r, alert) in &mut self.triggers.conditions {
            let samples = &self.pools[alert.pool].samples;
            let Some(last) = samples.len().checked_sub(1) else { continue };
            if alert.evaluate(samples, last, scrape_s) == Some(Transition::Fired) {
                due.push(*r);
            }
        }
        let scenario = self.scenario;
        for r in due {
            let rule = &scenario.recovery[r];
            let text = format!("{}: runbook due in {}", rule.trigger(), rule.after);
            self.schedule(t.saturating_add(ns(rule.after.as_millis())), Ev::Recovery(r, 0));
            self.event(t, "runbook", text);
        }
    }

    /// Whether attempt `attempt` of runbook `r` acts now: its condition must still hold, and the
    /// first `fails` attempts fail (the next one is scheduled). Says why in the timeline if not.
    pub(super) fn runbook_acts(&mut self, r: usize, attempt: u32, t: u64) -> bool {
        let scenario = self.scenario;
        let rule: &Recovery = &scenario.recovery[r];
        let condition = rule.only_if.unwrap_or_default();
        let why_not = match condition {
            StillTrue::Always => None,
            StillTrue::Trigger if rule.when.is_some() => {
                (!self.triggers.holds(r)).then(|| format!("{} no longer holds", rule.trigger()))
            }
            StillTrue::Trigger => {
                let firing = self.alerts.iter().any(|a| a.rule.name == rule.on && a.firing);
                (!firing).then(|| format!("{} is no longer firing", rule.on))
            }
            StillTrue::BelowExpected => match self.runbook_pool(rule) {
                Some(p) => (!self.below_expected(p))
                    .then(|| format!("{} is back to its expected hosts", self.scenario.pools[p].name)),
                None => (!(0..self.pools.len()).any(|p| self.below_expected(p)))
                    .then(|| "every pool is at its expected hosts".to_string()),
            },
        };
        if let Some(why) = why_not {
            self.event(t, "runbook", format!("runbook for {}: not run, {why}", rule.trigger()));
            return false;
        }
        if attempt < rule.fails {
            let next = t.saturating_add(ns(rule.retry_every().as_millis()));
            let text = format!(
                "runbook for {}: attempt {} of {} fails, next in {}",
                rule.trigger(),
                attempt + 1,
                rule.fails + 1,
                rule.retry_every()
            );
            self.schedule(next, Ev::Recovery(r, attempt.saturating_add(1)));
            self.event(t, "runbook", text);
            return false;
        }
        true
    }

    /// The pool a runbook acts on or watches: the one it restores, its `when` pool, or its
    /// alert's pool.
    fn runbook_pool(&self, rule: &Recovery) -> Option<usize> {
        let named = rule.restore.as_ref().or(rule.when.as_ref().map(|w| &w.pool));
        match named {
            Some(name) => self.scenario.pools.iter().position(|p| &p.name == name),
            None => self.alerts.iter().find(|a| a.rule.name == rule.on && a.pool < self.pools.len()).map(|a| a.pool),
        }
    }

    /// The pool's last scrape showed fewer available hosts than expected.
    fn below_expected(&self, pool: usize) -> bool {
        self.pools[pool].samples.last().is_some_and(|s| s.available < s.expected)
    }
}
