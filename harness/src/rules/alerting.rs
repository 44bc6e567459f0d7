// An alerting rule's state across evaluations, as Prometheus 2.42's rules/alerting.go keeps it:
// each series of the expression's result is an alert, pending from its first evaluation, firing once
// it has been active for `for`, and resolved at the first evaluation without it unless
// `keep_firing_for` keeps it firing.

use std::collections::BTreeMap;

/// Labels of one alert (the result's labels without `__name__`, plus the rule's and `alertname`).
pub type Labels = Vec<(String, String)>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Pending,
    Firing,
    /// Resolved; kept (as Prometheus keeps it for 15 minutes) until it is replaced or forgotten.
    Inactive,
}

#[derive(Clone, Debug)]
struct Active {
    state: State,
    active_at: i64,
    /// When the expression last stopped returning it while firing (`keep_firing_for`).
    keep_firing_since: Option<i64>,
    resolved_at: Option<i64>,
}

/// Prometheus keeps a resolved alert this long (`resolvedRetention`) before forgetting it.
const RESOLVED_RETENTION_MS: i64 = 15 * 60 * 1000;

/// What changed at one evaluation.
#[derive(Clone, Debug, PartialEq)]
pub struct Transition {
    pub labels: Labels,
    pub firing: bool,
}

/// One alerting rule's alerts.
#[derive(Default)]
pub struct AlertState {
    hold_ms: i64,
    keep_firing_for_ms: i64,
    active: BTreeMap<Labels, Active>,
}

impl AlertState {
    pub fn new(hold_ms: i64, keep_firing_for_ms: i64) -> AlertState {
        AlertState { hold_ms, keep_firing_for_ms, active: BTreeMap::new() }
    }

    /// Applies the result of the rule's expression at `ts` (one label set per returned series);
    /// returns the alerts that started firing or stopped.
    pub fn eval(&mut self, ts: i64, result: &[Labels]) -> Vec<Transition> {
        let mut changes = Vec::new();
        for labels in result {
            match self.active.get(labels) {
                Some(a) if a.state != State::Inactive => {}
                _ => {
                    self.active.insert(
                        labels.clone(),
                        Active { state: State::Pending, active_at: ts, keep_firing_since: None, resolved_at: None },
                    );
                }
            }
        }
        let returned: std::collections::BTreeSet<&Labels> = result.iter().collect();
        let mut forget = Vec::new();
        for (labels, a) in self.active.iter_mut() {
            if !returned.contains(labels) {
                let mut keep_firing = false;
                if a.state == State::Firing && self.keep_firing_for_ms > 0 {
                    let since = *a.keep_firing_since.get_or_insert(ts);
                    keep_firing = ts.saturating_sub(since) < self.keep_firing_for_ms;
                }
                if a.state == State::Pending
                    || a.resolved_at.is_some_and(|r| ts.saturating_sub(r) > RESOLVED_RETENTION_MS)
                {
                    forget.push(labels.clone());
                }
                if a.state != State::Inactive && !keep_firing {
                    if a.state == State::Firing {
                        changes.push(Transition { labels: labels.clone(), firing: false });
                    }
                    a.state = State::Inactive;
                    a.resolved_at = Some(ts);
                }
                if !keep_firing {
                    continue;
                }
            } else {
                a.keep_firing_since = None;
            }
            if a.state == State::Pending && ts.saturating_sub(a.active_at) >= self.hold_ms {
                a.state = State::Firing;
                changes.push(Transition { labels: labels.clone(), firing: true });
            }
        }
        for labels in forget {
            self.active.remove(&labels);
        }
        changes
    }

    /// The alerts pending or firing now, for the `ALERTS` series.
    pub fn current(&self) -> impl Iterator<Item = (&Labels, State)> {
        self.active.iter().filter(|(_, a)| a.state != State::Inactive).map(|(l, a)| (l, a.state))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(state: &mut AlertState, present: &[bool]) -> Vec<(i64, bool)> {
        let labels: Labels = vec![("alertname".into(), "A".into())];
        let mut out = Vec::new();
        for (k, p) in present.iter().enumerate() {
            let ts = (k as i64 + 1) * 60_000;
            let result = if *p { vec![labels.clone()] } else { Vec::new() };
            out.extend(state.eval(ts, &result).into_iter().map(|t| (ts, t.firing)));
        }
        out
    }

    #[test]
    fn pending_for_then_firing_then_resolved() {
        // `for: 2m` at 1m intervals: active at 1m, firing at 3m, resolved at 5m.
        let got = run(&mut AlertState::new(120_000, 0), &[true, true, true, true, false, false]);
        assert_eq!(got, vec![(180_000, true), (300_000, false)]);
    }

    #[test]
    fn a_gap_resets_pending_and_keep_firing_for_rides_out_gaps() {
        assert!(run(&mut AlertState::new(120_000, 0), &[true, true, false, true, true, false]).is_empty());
        // Firing at 1m (no `for`); absent from 2m: kept until 2m + 2m is reached, resolved at 4m.
        let got = run(&mut AlertState::new(0, 120_000), &[true, false, false, false, false]);
        assert_eq!(got, vec![(60_000, true), (240_000, false)]);
        // Back before keep_firing_for ran out: still the same firing alert.
        let got = run(&mut AlertState::new(0, 120_000), &[true, false, true, false, false, false]);
        assert_eq!(got, vec![(60_000, true), (360_000, false)]);
    }
}
