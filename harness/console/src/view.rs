// The console's sections as HTML, from the state and the scenario time now: header, SLO clocks,
// alerts, one ebb-chart timeline per pool, commands and notes. Pure strings, every text escaped.

use std::fmt::Write as _;

use ebb_chart::live::{AlertPhase, SloClock, SloPhase, Verdict};
use ebb_chart::markup::{attr, text};
use ebb_chart::timeline::{concerns, elapsed, HostStep, Marker, MarkerKind, PoolTimeline, Span, TimeAxis, Values};

use crate::state::State;

/// Scenario name, phase, the clock and (at the end) the verdict.
pub fn header(state: &State, now_s: f64, connected: bool) -> String {
    if !state.started {
        return r#"<h1>ebb gameday</h1><p class="muted" id="waiting">waiting for the game day to start…</p>"#.into();
    }
    let mut out = String::new();
    let badge = match &state.end {
        Some(end) => {
            let (class, word) = match end.verdict {
                Verdict::Pass => ("pass", "PASS"),
                Verdict::Fail => ("fail", "FAIL"),
                Verdict::Halted => ("halted", "HALTED"),
                Verdict::Error => ("fail", "ERROR"),
            };
            format!(r#" <span class="badge {class}" id="verdict">{word}</span>"#)
        }
        None if connected => r#" <span class="badge live">LIVE</span>"#.to_string(),
        None => r#" <span class="badge lost">RECONNECTING</span>"#.to_string(),
    };
    let _ = write!(out, "<h1>{}{badge}</h1>", text(&state.scenario));
    let _ = write!(
        out,
        r#"<dl class="facts"><dt>elapsed</dt><dd id="elapsed">{} / {}</dd><dt>phase</dt><dd id="phase">{}</dd><dt>time scale</dt><dd>{}×</dd><dt>targets</dt><dd>{}</dd></dl>"#,
        elapsed(now_s),
        elapsed(state.duration_s),
        if state.phase.is_empty() { "—".to_string() } else { text(&state.phase) },
        scale(state.time_scale),
        text(&state.targets.join(", "))
    );
    if let Some(end) = &state.end {
        let _ = write!(out, r#"<p class="summary" id="summary">{}</p>"#, text(&end.summary));
    }
    out
}

/// `1`, `60`, `0.5`: the time scale without trailing zeros.
fn scale(x: f64) -> String {
    let s = format!("{x:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// What an SLO's clock shows at scenario time `now_s`.
pub fn countdown(slo: &SloClock, now_s: f64) -> String {
    match (slo.state, slo.deadline_s) {
        (SloPhase::Waiting, _) => "not started".into(),
        (SloPhase::Running, Some(deadline)) if deadline >= now_s => format!("{} left", elapsed(deadline - now_s)),
        (SloPhase::Running, Some(deadline)) => format!("over by {}", elapsed(now_s - deadline)),
        (SloPhase::Running, None) => "running".into(),
        (SloPhase::Met, _) => "met".into(),
        (SloPhase::Missed, _) => "missed".into(),
    }
}

/// The SLO clocks.
pub fn slos(state: &State, now_s: f64) -> String {
    if state.slos.is_empty() {
        return r#"<p class="muted">no SLOs</p>"#.into();
    }
    let mut out = String::from("<table><thead><tr><th>SLO</th><th>state</th><th>clock</th></tr></thead><tbody>");
    for slo in &state.slos {
        let class = match slo.state {
            SloPhase::Waiting => "waiting",
            SloPhase::Running => "running",
            SloPhase::Met => "met",
            SloPhase::Missed => "missed",
        };
        let _ = write!(
            out,
            r#"<tr class="slo {class}" data-slo="{}"><td>{}</td><td>{class}</td><td class="clock">{}</td></tr>"#,
            attr(&slo.name),
            text(&slo.name),
            countdown(slo, now_s)
        );
    }
    out.push_str("</tbody></table>");
    out
}

/// The alerts of the latest sample.
pub fn alerts(state: &State) -> String {
    if state.alerts.is_empty() {
        return r#"<p class="muted">no alerts reported</p>"#.into();
    }
    let mut out = String::from("<table><thead><tr><th>alert</th><th>state</th><th>since</th></tr></thead><tbody>");
    for a in &state.alerts {
        let class = match a.state {
            AlertPhase::Inactive => "inactive",
            AlertPhase::Pending => "pending",
            AlertPhase::Firing => "firing",
        };
        let since = a.since_s.filter(|s| s.is_finite()).map_or("—".to_string(), |s| format!("+{}", elapsed(s)));
        let _ = write!(
            out,
            r#"<tr class="alert {class}" data-alert="{}"><td>{}</td><td><span class="state {class}">{class}</span></td><td>{since}</td></tr>"#,
            attr(&a.name),
            text(&a.name)
        );
    }
    out.push_str("</tbody></table>");
    out
}

/// The chart model of one pool at scenario time `now_s`: its samples as host steps (the last one
/// held until now), alert spans and command markers (those naming another pool left out).
pub fn timeline(state: &State, pool: &str, now_s: f64) -> PoolTimeline {
    let pools: Vec<&str> = state.pools.iter().map(String::as_str).collect();
    let samples = state.samples.get(pool).map(Vec::as_slice).unwrap_or_default();
    let last_t = samples.last().map_or(0.0, |s| s.t_s);
    let now = now_s.max(last_t);
    let steps = samples
        .iter()
        .enumerate()
        .map(|(i, s)| HostStep {
            from_s: s.t_s,
            to_s: samples.get(i + 1).map_or(now, |next| next.t_s),
            expected: s.expected,
            available: s.available,
        })
        .collect();
    let alerts = state
        .alert_spans
        .iter()
        .filter(|s| concerns(&s.name, pool, &pools))
        .map(|s| {
            let to = s.to_s.unwrap_or(now);
            let until = if s.to_s.is_some() { format!("+{}", elapsed(to)) } else { "now".into() };
            Span { from_s: s.from_s, to_s: to, title: format!("{} firing +{}–{until}", s.name, elapsed(s.from_s)) }
        })
        .collect();
    let markers = state
        .commands
        .iter()
        .enumerate()
        .filter(|(_, c)| concerns(&c.command, pool, &pools))
        .map(|(i, c)| {
            let n = i + 1 + state.commands_dropped;
            Marker {
                t_s: c.t_s,
                kind: if c.ok { MarkerKind::Command } else { MarkerKind::Refused },
                label: n.to_string(),
                title: format!("#{n} +{} {}: {} → {}", elapsed(c.t_s), c.target, c.command, c.outcome),
            }
        })
        .collect();
    PoolTimeline {
        pool: pool.to_string(),
        end_s: state.duration_s.max(now),
        time_axis: TimeAxis::Elapsed,
        values: Values::Hosts(steps),
        impacts: Vec::new(),
        alerts,
        markers,
    }
}

/// One chart per pool.
pub fn charts(state: &State, now_s: f64) -> String {
    if state.pools.is_empty() {
        return r#"<p class="muted">no pools</p>"#.into();
    }
    let mut out = String::new();
    for pool in &state.pools {
        let now = state.samples.get(pool).and_then(|s| s.last());
        let counts = now.map_or(String::new(), |s| {
            format!(" <span class=\"counts\">{} of {} hosts</span>", s.available, s.expected)
        });
        let _ = write!(out, r#"<div class="pool" data-pool="{}"><h3>{}{counts}</h3>"#, attr(pool), text(pool));
        out.push_str(&ebb_chart::pool_chart(&timeline(state, pool, now_s)));
        out.push_str("</div>");
    }
    out
}

/// Every command sent, numbered as on the charts; the latest first.
pub fn commands(state: &State) -> String {
    if state.commands.is_empty() {
        return r#"<p class="muted">no command sent yet</p>"#.into();
    }
    let mut out = String::from(
        r#"<table><thead><tr><th class="num">#</th><th class="num">at</th><th>target</th><th>command</th><th>outcome</th></tr></thead><tbody>"#,
    );
    for (i, c) in state.commands.iter().enumerate().rev() {
        let _ = write!(
            out,
            r#"<tr class="command {}"><td class="num">{}</td><td class="num">+{}</td><td>{}</td><td><code>{}</code></td><td>{}</td></tr>"#,
            if c.ok { "ok" } else { "refused" },
            i + 1 + state.commands_dropped,
            elapsed(c.t_s),
            text(&c.target),
            text(&c.command),
            text(&c.outcome)
        );
    }
    out.push_str("</tbody></table>");
    out
}

/// Notes, the latest first.
pub fn notes(state: &State) -> String {
    if state.notes.is_empty() {
        return r#"<p class="muted">no notes</p>"#.into();
    }
    let mut out = String::from("<ul>");
    for (t, note) in state.notes.iter().rev() {
        let _ = write!(out, r#"<li><span class="at">+{}</span> {}</li>"#, elapsed(*t), text(note));
    }
    out.push_str("</ul>");
    out
}
