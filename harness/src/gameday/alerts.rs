// The alerts a game day watches: the scenario's own rules evaluated on what it scraped (their
// firing schedules the runbooks), or the active alerts of the team's Alertmanager.

use std::collections::HashSet;

use super::{observe, real_ms, target, Runner};
use crate::alert::Transition;
use crate::http::{self, Url};

/// An alert as the runner tracks it: the scenario's rule evaluated here, or one Alertmanager holds.
pub(super) struct Tracked {
    pub(super) name: String,
    pub(super) pool: String,
    pub(super) firing: bool,
    pub(super) fired_s: Vec<f64>,
    pub(super) resolved_s: Vec<f64>,
}

impl Runner<'_> {
    /// The scenario's own rules on what was scraped; runbooks scheduled on firing.
    pub(super) fn evaluate_rules(&mut self) {
        let scrape_s = self.scenario.scrape_interval.as_millis() as f64 / 1000.0;
        let mut changes = Vec::new();
        let latency: Vec<Option<bool>> = self.rules.iter().map(|a| self.latency_condition(&a.rule, a.pool)).collect();
        for (i, alert) in self.rules.iter_mut().enumerate() {
            let samples = &self.samples[alert.pool];
            let k = samples.len() - 1;
            let change = match latency[i] {
                Some(holds) => alert.step(samples[k].t_s, holds),
                None => alert.evaluate(samples, k, scrape_s),
            };
            if let Some(t) = change {
                changes.push((i, t));
            }
        }
        for (i, t) in changes {
            let (name, pool) = (self.rules[i].rule.name.clone(), self.rules[i].rule.pool.clone());
            match t {
                Transition::Fired => {
                    self.note("alert", format!("{name} fires (on {pool}, the scenario's rule)"));
                    let now = self.elapsed_ms();
                    for (r, rule) in self.scenario.recovery.iter().enumerate() {
                        if rule.on == name {
                            let due = now.saturating_add(real_ms(rule.after.as_millis(), self.options.time_scale));
                            self.due.push((due, r, name.clone(), pool.clone()));
                        }
                    }
                }
                Transition::Resolved => self.note("resolved", format!("{name} resolved")),
            }
        }
    }

    /// Alertmanager's active alerts on the scenario's pools: new ones fired when they started,
    /// gone ones resolved now.
    pub(super) fn track_alertmanager(&mut self, am: &Url, t_s: f64) -> Result<(), String> {
        let active = fetch_alerts(am)?;
        let start_ms = self.start_ns / 1_000_000;
        let mut seen = HashSet::new();
        for a in active {
            let Some(pool) = a.pool.filter(|p| self.scenario.pools.iter().any(|q| &q.name == p)) else { continue };
            seen.insert((a.name.clone(), pool.clone()));
            let k = match self.am.iter().position(|x| x.name == a.name && x.pool == pool) {
                Some(k) => k,
                None => {
                    self.am.push(Tracked {
                        name: a.name.clone(),
                        pool: pool.clone(),
                        firing: false,
                        fired_s: Vec::new(),
                        resolved_s: Vec::new(),
                    });
                    self.am.len() - 1
                }
            };
            if !self.am[k].firing {
                // When Prometheus started firing it, on the scenario's clock; before the game day is 0.
                let fired = a
                    .starts_at_ms
                    .map_or(t_s, |ms| (ms.saturating_sub(start_ms) as f64 * self.options.time_scale / 1000.0).min(t_s));
                let fired = self.am[k].resolved_s.last().map_or(fired, |r| fired.max(*r));
                self.am[k].firing = true;
                self.am[k].fired_s.push(fired);
                self.note("alert", format!("{} fires on {pool} (Alertmanager)", a.name));
            }
        }
        for k in 0..self.am.len() {
            let key = (self.am[k].name.clone(), self.am[k].pool.clone());
            if self.am[k].firing && !seen.contains(&key) {
                self.am[k].firing = false;
                self.am[k].resolved_s.push(t_s);
                self.note("resolved", format!("{} on {} resolved (Alertmanager)", key.0, key.1));
            }
        }
        Ok(())
    }

    pub(super) fn tracked(&self) -> Vec<Tracked> {
        match self.options.alertmanager {
            Some(_) => self
                .am
                .iter()
                .map(|a| Tracked {
                    name: a.name.clone(),
                    pool: a.pool.clone(),
                    firing: a.firing,
                    fired_s: a.fired_s.clone(),
                    resolved_s: a.resolved_s.clone(),
                })
                .collect(),
            None => self
                .rules
                .iter()
                .map(|a| Tracked {
                    name: a.rule.name.clone(),
                    pool: a.rule.pool.clone(),
                    firing: a.firing,
                    fired_s: a.fired_s.clone(),
                    resolved_s: a.resolved_s.clone(),
                })
                .collect(),
        }
    }
}

/// Alertmanager's active alerts, or why they cannot be read.
pub(super) fn fetch_alerts(am: &Url) -> Result<Vec<observe::ActiveAlert>, String> {
    let path = "/api/v2/alerts?active=true&silenced=false&inhibited=false";
    let answer = http::get(am, path, target::CALL_TIMEOUT).map_err(|e| format!("Alertmanager: {e}"))?;
    if answer.status != 200 {
        return Err(format!("Alertmanager {} answered HTTP {} to GET /api/v2/alerts", am.show(), answer.status));
    }
    observe::active_alerts(&answer.body).map_err(|e| format!("Alertmanager {}: {e}", am.show()))
}
