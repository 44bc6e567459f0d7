// What the console knows of the game day: every live event folded into one state (samples per pool,
// alert spans, SLO clocks, commands, notes, the verdict), and the scenario time it shows between events.

use std::collections::BTreeMap;

use ebb_chart::live::{AlertPhase, AlertState, LiveEvent, SloClock, Verdict};

/// Most samples kept per pool, commands and notes kept: a long game day cannot exhaust the tab's
/// memory. Samples are thinned (`thin`), so the chart keeps its whole span.
pub const MAX_SAMPLES: usize = 4096;
pub const MAX_ROWS: usize = 2000;

/// One scrape of one pool.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct HostSample {
    pub t_s: f64,
    pub expected: u64,
    pub available: u64,
}

/// A time an alert fired; `to_s` is `None` while it still fires.
#[derive(Clone, Debug, PartialEq)]
pub struct AlertSpan {
    pub name: String,
    pub from_s: f64,
    pub to_s: Option<f64>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct CommandRow {
    pub t_s: f64,
    pub target: String,
    pub command: String,
    pub outcome: String,
    pub ok: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Ending {
    pub t_s: f64,
    pub verdict: Verdict,
    pub summary: String,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct State {
    /// False until the Start event: nothing to show yet.
    pub started: bool,
    pub scenario: String,
    pub duration_s: f64,
    pub time_scale: f64,
    pub pools: Vec<String>,
    pub targets: Vec<String>,
    pub phase: String,
    pub samples: BTreeMap<String, Vec<HostSample>>,
    pub alerts: Vec<AlertState>,
    pub alert_spans: Vec<AlertSpan>,
    pub slos: Vec<SloClock>,
    pub commands: Vec<CommandRow>,
    /// Commands dropped from the front of `commands` (so row numbers stay those of the game day).
    pub commands_dropped: usize,
    pub notes: Vec<(f64, String)>,
    pub end: Option<Ending>,
    /// Scenario time of the latest event, and the wall time (ms) it arrived: the clock between events.
    anchor: Option<(f64, f64)>,
}

impl State {
    /// Folds one event in; `now_ms` is the wall time it arrived. A Start begins afresh (a console
    /// that reconnects is sent the Start and the history again).
    pub fn apply(&mut self, event: &LiveEvent, now_ms: f64) {
        match event {
            LiveEvent::Start { scenario, duration_s, time_scale, pools, targets, slos } => {
                *self = State {
                    started: true,
                    scenario: scenario.clone(),
                    duration_s: finite_or(*duration_s, 0.0).max(0.0),
                    time_scale: if time_scale.is_finite() && *time_scale > 0.0 { *time_scale } else { 1.0 },
                    pools: pools.clone(),
                    targets: targets.clone(),
                    slos: slos.clone(),
                    anchor: Some((0.0, now_ms)),
                    ..State::default()
                };
            }
            LiveEvent::Sample { t_s, phase, pools, alerts, slos } => {
                let t = self.advance(*t_s, now_ms);
                self.phase = phase.clone();
                for p in pools {
                    if !self.pools.contains(&p.pool) {
                        self.pools.push(p.pool.clone());
                    }
                    let series = self.samples.entry(p.pool.clone()).or_default();
                    series.push(HostSample { t_s: t, expected: p.expected, available: p.available });
                    if series.len() > MAX_SAMPLES {
                        thin(series);
                    }
                }
                self.track_alerts(alerts, t);
                self.alerts = alerts.clone();
                self.slos = slos.clone();
            }
            LiveEvent::Command { t_s, target, command, outcome, ok } => {
                let t = self.advance(*t_s, now_ms);
                self.commands.push(CommandRow {
                    t_s: t,
                    target: target.clone(),
                    command: command.clone(),
                    outcome: outcome.clone(),
                    ok: *ok,
                });
                if self.commands.len() > MAX_ROWS {
                    self.commands.remove(0);
                    self.commands_dropped = self.commands_dropped.saturating_add(1);
                }
            }
            LiveEvent::Note { t_s, text } => {
                let t = self.advance(*t_s, now_ms);
                self.notes.push((t, text.clone()));
                if self.notes.len() > MAX_ROWS {
                    self.notes.remove(0);
                }
            }
            LiveEvent::End { t_s, verdict, summary } => {
                let t = self.advance(*t_s, now_ms);
                for span in self.alert_spans.iter_mut().filter(|s| s.to_s.is_none()) {
                    span.to_s = Some(t);
                }
                self.end = Some(Ending { t_s: t, verdict: *verdict, summary: summary.clone() });
            }
        }
    }

    /// Moves the clock's anchor to an event's time (never backwards) and returns that time.
    fn advance(&mut self, t_s: f64, now_ms: f64) -> f64 {
        let t = finite_or(t_s, 0.0).max(0.0);
        let latest = self.anchor.map_or(0.0, |(a, _)| a);
        let t = t.max(latest);
        self.anchor = Some((t, now_ms));
        t
    }

    /// Opens a span for each alert that started firing, closes the spans of those that stopped.
    fn track_alerts(&mut self, alerts: &[AlertState], t: f64) {
        for a in alerts.iter().filter(|a| a.state == AlertPhase::Firing) {
            if !self.alert_spans.iter().any(|s| s.name == a.name && s.to_s.is_none()) {
                let from = a.since_s.filter(|s| s.is_finite() && *s <= t).unwrap_or(t).max(0.0);
                self.alert_spans.push(AlertSpan { name: a.name.clone(), from_s: from, to_s: None });
                if self.alert_spans.len() > MAX_ROWS {
                    self.alert_spans.remove(0);
                }
            }
        }
        for span in self.alert_spans.iter_mut().filter(|s| s.to_s.is_none()) {
            let firing = alerts.iter().any(|a| a.name == span.name && a.state == AlertPhase::Firing);
            if !firing {
                span.to_s = Some(t);
            }
        }
    }

    /// Scenario seconds now: the latest event's time plus the wall time since, scaled, up to the
    /// scenario's end. Frozen when the game day ended or the console lost its connection.
    pub fn elapsed_s(&self, now_ms: f64, connected: bool) -> f64 {
        if let Some(end) = &self.end {
            return end.t_s;
        }
        let Some((t, at_ms)) = self.anchor else { return 0.0 };
        if !connected {
            return t;
        }
        let since = ((now_ms - at_ms) / 1000.0).max(0.0) * self.time_scale;
        let now = t + finite_or(since, 0.0);
        // Between scrapes the clock runs on, but never past the end or far past the latest event.
        let cap = if self.duration_s > t { self.duration_s } else { t };
        now.min(cap)
    }
}

fn finite_or(v: f64, default: f64) -> f64 {
    if v.is_finite() {
        v
    } else {
        default
    }
}

/// Makes room in a pool's samples. Samples equal to the one before change nothing on a step chart,
/// so they go first; only if that is not enough, every other sample of the older half goes.
fn thin(series: &mut Vec<HostSample>) {
    let last = series.len().saturating_sub(1);
    let mut previous: Option<(u64, u64)> = None;
    let mut i = 0;
    series.retain(|s| {
        let same = previous == Some((s.expected, s.available));
        previous = Some((s.expected, s.available));
        let keep = !same || i == last;
        i += 1;
        keep
    });
    if series.len() > MAX_SAMPLES {
        let half = series.len() / 2;
        let mut i = 0;
        series.retain(|_| {
            let keep = i >= half || i % 2 == 0;
            i += 1;
            keep
        });
    }
}
