// The console's hook: where live events go (the browser console of crate::console, or nowhere),
// and what the runner tells it at every scrape: pools, alerts and SLO clocks.

use ebb_chart::live::{AlertPhase, AlertState, LiveEvent, PoolSample, SloClock, SloPhase};

use super::Runner;

/// Where live events go: the live console (`--console`), or nowhere.
pub trait LiveSink {
    fn publish(&self, event: &LiveEvent);
}

impl LiveSink for crate::console::Console {
    fn publish(&self, event: &LiveEvent) {
        crate::console::Console::publish(self, event);
    }
}

/// No console.
pub struct NoConsole;

impl LiveSink for NoConsole {
    fn publish(&self, _: &LiveEvent) {}
}

impl Runner<'_> {
    /// The time SLOs' clocks as the console shows them.
    pub(super) fn slo_clocks(&self) -> Vec<SloClock> {
        let tracked = self.tracked();
        let t_s = self.t_s();
        self.scenario
            .slos
            .iter()
            .map(|slo| {
                let timed =
                    slo.time_to_detect.as_ref().map(|p| (p, true)).or(slo.time_to_restore.as_ref().map(|p| (p, false)));
                let Some((within, detect)) = timed else {
                    return SloClock { name: slo.label(), state: SloPhase::Running, deadline_s: None };
                };
                let s = self
                    .scenario
                    .pools
                    .iter()
                    .position(|p| p.name == within.pool)
                    .map_or(&[][..], |i| &self.samples[i][..]);
                let Some(lost) = s.iter().position(|x| x.available < x.expected && !x.deploying) else {
                    return SloClock { name: slo.label(), state: SloPhase::Waiting, deadline_s: None };
                };
                let lost_s = s[lost].t_s;
                let deadline = lost_s + within.max.as_millis() as f64 / 1000.0;
                let met = if detect {
                    tracked
                        .iter()
                        .filter(|a| a.pool == within.pool)
                        .flat_map(|a| a.fired_s.iter())
                        .any(|&f| f <= deadline)
                        || tracked.iter().any(|a| a.pool == within.pool && a.firing)
                } else {
                    s[lost..].iter().any(|x| x.available >= x.expected && x.t_s <= deadline)
                };
                let state = if met {
                    SloPhase::Met
                } else if t_s > deadline {
                    SloPhase::Missed
                } else {
                    SloPhase::Running
                };
                SloClock { name: slo.label(), state, deadline_s: Some(deadline) }
            })
            .collect()
    }

    pub(super) fn publish_sample(&self, t_s: f64) {
        let pools = self
            .scenario
            .pools
            .iter()
            .zip(&self.samples)
            .filter_map(|(p, s)| {
                s.last().map(|x| PoolSample { pool: p.name.clone(), expected: x.expected, available: x.available })
            })
            .collect();
        let alerts = self
            .tracked()
            .into_iter()
            .map(|a| AlertState {
                name: format!("{} ({})", a.name, a.pool),
                state: if a.firing { AlertPhase::Firing } else { AlertPhase::Inactive },
                since_s: if a.firing { a.fired_s.last().copied() } else { a.resolved_s.last().copied() },
            })
            .collect();
        self.sink.publish(&LiveEvent::Sample {
            t_s,
            phase: self.phase.clone(),
            pools,
            alerts,
            slos: self.slo_clocks(),
        });
    }
}
