// The SVG timeline of one pool, written by hand: linear scales, paths, axis ticks, shaded spans
// and event markers. Every number is printed with fixed precision, so a report gives the same bytes.

use std::fmt::Write as _;

use super::junit::{attr, text};
use super::{human, Event, Report};
use crate::scenario::ClockTime;

/// Drawing size in SVG user units (the page scales it to its width).
const WIDTH: f64 = 960.0;
const HEIGHT: f64 = 300.0;
/// Margins around the main plot: room for the axes, the marker labels and the latency strip.
const LEFT: f64 = 64.0;
const RIGHT: f64 = 52.0;
const TOP: f64 = 40.0;
const PLOT_H: f64 = 170.0;
const GAP: f64 = 14.0;
const STRIP_H: f64 = 40.0;

/// Colours, shared with the page's legend (html.rs).
pub const TRAFFIC: &str = "#2563eb";
pub const ERRORS: &str = "#dc2626";
pub const CAPACITY: &str = "#059669";
pub const LATENCY: &str = "#7c3aed";
pub const ALERT: &str = "#f59e0b";
pub const IMPACT: &str = "#ef4444";
pub const DEPLOY: &str = "#9333ea";
pub const COMMAND: &str = "#475569";
pub const RECOVERY: &str = "#16a34a";

/// Maps a domain interval onto a pixel interval.
#[derive(Clone, Copy)]
struct Scale {
    d0: f64,
    d1: f64,
    r0: f64,
    r1: f64,
}

impl Scale {
    fn new(domain: (f64, f64), range: (f64, f64)) -> Scale {
        let d1 = if domain.1 > domain.0 { domain.1 } else { domain.0 + 1.0 };
        Scale { d0: domain.0, d1, r0: range.0, r1: range.1 }
    }

    fn at(self, v: f64) -> f64 {
        let f = ((v - self.d0) / (self.d1 - self.d0)).clamp(0.0, 1.0);
        self.r0 + f * (self.r1 - self.r0)
    }
}

/// A "nice" upper bound and step for an axis from 0 to `max` with about `ticks` ticks.
fn nice_axis(max: f64, ticks: usize) -> (f64, f64) {
    if max.is_nan() || max <= 0.0 {
        return (1.0, 0.25);
    }
    let raw = max / ticks as f64;
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0].iter().map(|m| m * magnitude).find(|s| *s >= raw).unwrap_or(10.0 * magnitude);
    ((max / step).ceil() * step, step)
}

/// `950`, `1.2k`, `26k`, `1.5M`: compact axis labels.
fn compact(v: f64) -> String {
    let (n, unit) = if v >= 1e6 {
        (v / 1e6, "M")
    } else if v >= 1e3 {
        (v / 1e3, "k")
    } else {
        (v, "")
    };
    if n >= 10.0 || n.fract().abs() < 1e-9 {
        format!("{n:.0}{unit}")
    } else {
        format!("{n:.1}{unit}")
    }
}

/// Seconds like `0.25s`, `1.5s`, `30s`.
fn seconds(v: f64) -> String {
    let s = format!("{v:.2}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    format!("{s}s")
}

/// The time-axis step: a round clock interval giving at most about ten ticks.
fn time_step(duration_s: f64) -> f64 {
    const STEPS: [f64; 14] =
        [1.0, 5.0, 15.0, 30.0, 60.0, 300.0, 600.0, 900.0, 1800.0, 3600.0, 7200.0, 10800.0, 21600.0, 43200.0];
    STEPS.iter().copied().find(|s| duration_s / s <= 10.0).unwrap_or(86_400.0)
}

/// `HH:MM` (or `HH:MM:SS` below a minute's step) of `start + t`, UTC.
fn clock(start_s: f64, t: f64, step: f64) -> String {
    let s = ((start_s + t).round() as u64) % 86_400;
    if step < 60.0 {
        format!("{:02}:{:02}:{:02}", s / 3600, (s / 60) % 60, s % 60)
    } else {
        format!("{:02}:{:02}", s / 3600, (s / 60) % 60)
    }
}

/// The kind of a vertical marker, if the event is one.
fn marker_color(kind: &str) -> Option<&'static str> {
    match kind {
        "deploy" => Some(DEPLOY),
        "command" => Some(COMMAND),
        "recovery" => Some(RECOVERY),
        _ => None,
    }
}

/// True when `event` belongs on `pool`'s chart: it names the pool, or it names no pool at all
/// (a kill switch, a fault command known by its id).
fn concerns(event: &Event, pool: &str, pools: &[&str]) -> bool {
    let words: Vec<&str> = event.text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-')).collect();
    let named: Vec<&&str> = pools.iter().filter(|p| words.contains(p)).collect();
    named.is_empty() || named.iter().any(|p| **p == pool)
}

/// Intervals `[from, to)` from the starts and ends of an alert (an alert still firing at the end
/// runs to the end).
fn spans(fired: &[f64], resolved: &[f64], end: f64) -> Vec<(f64, f64)> {
    fired
        .iter()
        .map(|&f| {
            let to = resolved.iter().copied().find(|&r| r >= f).unwrap_or(end);
            (f, to)
        })
        .collect()
}

/// The SVG chart of the pool of `report.series[index]`; markers carry the event table's numbers.
pub fn pool_chart(report: &Report, index: usize) -> String {
    let mut out = String::new();
    let Some(series) = report.series.get(index) else { return out };
    let pool = series.pool.as_str();
    let end = report.duration_s.max(1.0);
    let start_s = ClockTime::parse(&report.start).unwrap_or_default().millis() as f64 / 1000.0;
    let sample = f64::from(report.requests.sample.max(1));
    let right = WIDTH - RIGHT;
    let x = Scale::new((0.0, end), (LEFT, right));
    let bottom = TOP + PLOT_H;
    let max_requests = series.requests.iter().copied().max().unwrap_or(0) as f64 * sample;
    let (y_max, y_step) = nice_axis(max_requests, 4);
    let y = Scale::new((0.0, y_max), (bottom, TOP));
    let ratio = Scale::new((0.0, 1.0), (bottom, TOP));
    let strip_top = bottom + GAP;
    let strip_bottom = strip_top + STRIP_H;
    let max_p90 = series.p90_s.iter().copied().fold(0.0, f64::max);
    let (p_max, _) = nice_axis(max_p90, 2);
    let p = Scale::new((0.0, p_max), (strip_bottom, strip_top));

    let _ = writeln!(
        out,
        r#"<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{}">"#,
        attr(&format!("timeline of pool {pool}: traffic, errors, capacity, alerts and events"))
    );
    let _ = writeln!(out, "<title>{}</title>", text(&format!("pool {pool}")));
    // Plot backgrounds.
    let _ = writeln!(
        out,
        r##"<rect x="{LEFT:.1}" y="{TOP:.1}" width="{:.1}" height="{PLOT_H:.1}" fill="#fafafa" stroke="#d4d4d8"/>"##,
        right - LEFT
    );
    let _ = writeln!(
        out,
        r##"<rect x="{LEFT:.1}" y="{strip_top:.1}" width="{:.1}" height="{STRIP_H:.1}" fill="#fafafa" stroke="#d4d4d8"/>"##,
        right - LEFT
    );

    // Shaded spans: customer impact, then alerts firing.
    let plot_span = |out: &mut String, from: f64, to: f64, color: &str, opacity: f64, title: &str| {
        let (x0, x1) = (x.at(from), x.at(to));
        let _ = writeln!(
            out,
            r#"<rect class="span" x="{x0:.1}" y="{TOP:.1}" width="{:.1}" height="{:.1}" fill="{color}" fill-opacity="{opacity}"><title>{}</title></rect>"#,
            (x1 - x0).max(1.0),
            strip_bottom - TOP,
            text(title)
        );
    };
    if let Some(result) = report.pools.iter().find(|r| r.name == pool) {
        if let (Some(a), Some(b)) = (result.impact_start_s, result.impact_end_s) {
            let title = format!("customers impaired {}–{} UTC", clock(start_s, a, 60.0), clock(start_s, b, 60.0));
            plot_span(&mut out, a, b, IMPACT, 0.10, &title);
        }
    }
    for alert in report.alerts.iter().filter(|a| a.pool == pool) {
        for (from, to) in spans(&alert.fired_s, &alert.resolved_s, end) {
            let title = format!("{} firing {}–{} UTC", alert.name, clock(start_s, from, 1.0), clock(start_s, to, 1.0));
            plot_span(&mut out, from, to, ALERT, 0.28, &title);
        }
    }

    // Grid and left axis (requests per minute).
    let mut v = 0.0;
    while v <= y_max + 1e-9 {
        let py = y.at(v);
        let _ = writeln!(
            out,
            r##"<line x1="{LEFT:.1}" y1="{py:.1}" x2="{right:.1}" y2="{py:.1}" stroke="#e4e4e7"/><text x="{:.1}" y="{:.1}" class="tick" text-anchor="end">{}</text>"##,
            LEFT - 6.0,
            py + 4.0,
            compact(v)
        );
        v += y_step;
    }
    let _ = writeln!(
        out,
        r#"<text x="14" y="{:.1}" class="axis" transform="rotate(-90 14 {:.1})" text-anchor="middle" fill="{TRAFFIC}">requests / min</text>"#,
        TOP + PLOT_H / 2.0,
        TOP + PLOT_H / 2.0
    );
    // Right axis (capacity).
    for (r, label) in [(0.0, "0%"), (0.5, "50%"), (1.0, "100%")] {
        let _ = writeln!(
            out,
            r#"<text x="{:.1}" y="{:.1}" class="tick" fill="{CAPACITY}">{label}</text>"#,
            right + 6.0,
            ratio.at(r) + 4.0
        );
    }
    let _ = writeln!(
        out,
        r#"<text x="{:.1}" y="{:.1}" class="axis" transform="rotate(90 {:.1} {:.1})" text-anchor="middle" fill="{CAPACITY}">capacity</text>"#,
        WIDTH - 10.0,
        TOP + PLOT_H / 2.0,
        WIDTH - 10.0,
        TOP + PLOT_H / 2.0
    );
    // Latency strip axis.
    let _ = writeln!(
        out,
        r#"<text x="{:.1}" y="{:.1}" class="tick" text-anchor="end">{}</text><text x="{:.1}" y="{:.1}" class="tick" text-anchor="end">0</text>"#,
        LEFT - 6.0,
        strip_top + 8.0,
        seconds(p_max),
        LEFT - 6.0,
        strip_bottom
    );
    let _ = writeln!(
        out,
        r#"<text x="{:.1}" y="{:.1}" class="tick" fill="{LATENCY}">p90</text>"#,
        right + 6.0,
        (strip_top + strip_bottom) / 2.0 + 4.0
    );

    // Time axis: ticks on round UTC clock times.
    let step = time_step(end);
    let first = ((start_s / step).ceil() * step) - start_s;
    let mut t = first;
    while t <= end + 1e-9 {
        let px = x.at(t);
        let _ = writeln!(
            out,
            r##"<line x1="{px:.1}" y1="{TOP:.1}" x2="{px:.1}" y2="{strip_bottom:.1}" stroke="#e4e4e7" stroke-dasharray="2 3"/><text x="{px:.1}" y="{:.1}" class="tick" text-anchor="middle">{}</text>"##,
            strip_bottom + 16.0,
            clock(start_s, t, step)
        );
        t += step;
    }

    // Series: one point per minute, drawn at the middle of its minute.
    let mid = |i: usize| series.t_s[i] + 30.0_f64.min(end - series.t_s[i]).max(0.0);
    let n = series.t_s.len().min(series.requests.len()).min(series.errors.len());
    if n > 0 {
        let line = |values: &dyn Fn(usize) -> f64, scale: Scale| {
            let mut d = String::new();
            for i in 0..n {
                let _ = write!(d, "{}{:.1},{:.1}", if i == 0 { "M" } else { " L" }, x.at(mid(i)), scale.at(values(i)));
            }
            d
        };
        let area = |values: &dyn Fn(usize) -> f64, scale: Scale| {
            format!("{} L{:.1},{bottom:.1} L{:.1},{bottom:.1} Z", line(values, scale), x.at(mid(n - 1)), x.at(mid(0)))
        };
        let requests = |i: usize| series.requests[i] as f64 * sample;
        let errors = |i: usize| series.errors[i] as f64 * sample;
        let _ =
            writeln!(out, r#"<path d="{}" fill="{TRAFFIC}" fill-opacity="0.08" stroke="none"/>"#, area(&requests, y));
        let _ = writeln!(
            out,
            r#"<path d="{}" fill="none" stroke="{TRAFFIC}" stroke-width="1.5"><title>requests per minute</title></path>"#,
            line(&requests, y)
        );
        if series.errors.iter().any(|&e| e > 0) {
            let _ = writeln!(
                out,
                r#"<path d="{}" fill="{ERRORS}" fill-opacity="0.55" stroke="{ERRORS}" stroke-width="1"><title>errors per minute</title></path>"#,
                area(&errors, y)
            );
        }
        // Capacity: a step line (the lowest ratio seen in each minute).
        let mut d = String::new();
        for (i, r) in series.available_ratio.iter().enumerate().take(n) {
            let (x0, x1) = (x.at(series.t_s[i]), x.at((series.t_s[i] + 60.0).min(end)));
            let _ = write!(
                d,
                "{}{x0:.1},{:.1} L{x1:.1},{:.1}",
                if i == 0 { "M" } else { " L" },
                ratio.at(*r),
                ratio.at(*r)
            );
        }
        let _ = writeln!(
            out,
            r#"<path d="{d}" fill="none" stroke="{CAPACITY}" stroke-width="2"><title>available / expected hosts</title></path>"#
        );
        if series.p90_s.len() >= n {
            let p90 = |i: usize| series.p90_s[i];
            let mut d = line(&p90, p);
            let _ = write!(d, " L{:.1},{strip_bottom:.1} L{:.1},{strip_bottom:.1} Z", x.at(mid(n - 1)), x.at(mid(0)));
            let _ = writeln!(
                out,
                r#"<path d="{d}" fill="{LATENCY}" fill-opacity="0.18" stroke="{LATENCY}" stroke-width="1"><title>p90 latency</title></path>"#
            );
        }
    }

    // Event markers, numbered as in the event table; labels take the first of three rows where
    // they do not overlap an earlier one.
    let pools: Vec<&str> = report.series.iter().map(|s| s.pool.as_str()).collect();
    let mut rows = [f64::NEG_INFINITY; 3];
    for (i, e) in report.events.iter().enumerate() {
        let Some(color) = marker_color(&e.kind) else { continue };
        if !concerns(e, pool, &pools) {
            continue;
        }
        let px = x.at(e.t_s);
        let label = (i + 1).to_string();
        let w = 7.0 * label.len() as f64 + 6.0;
        let _ = writeln!(
            out,
            r#"<line x1="{px:.1}" y1="{:.1}" x2="{px:.1}" y2="{strip_bottom:.1}" stroke="{color}" stroke-width="1.2" stroke-dasharray="{}"><title>{}</title></line>"#,
            TOP - 4.0,
            if e.kind == "recovery" { "none" } else { "4 3" },
            text(&format!("#{} {} +{}: {}", i + 1, clock(start_s, e.t_s, 1.0), human(e.t_s), e.text))
        );
        if let Some(row) = rows.iter().position(|&r| px - w / 2.0 > r + 2.0) {
            rows[row] = px + w / 2.0;
            let cy = TOP - 8.0 - 11.0 * row as f64;
            let _ = writeln!(
                out,
                r#"<text x="{px:.1}" y="{cy:.1}" class="marker" text-anchor="middle" fill="{color}">{label}</text>"#
            );
        }
    }
    let _ = writeln!(out, "</svg>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axes_are_round() {
        assert_eq!(nice_axis(930.0, 4), (1000.0, 250.0));
        assert_eq!(nice_axis(0.0, 4), (1.0, 0.25));
        assert_eq!(time_step(36_000.0), 3600.0);
        assert_eq!(time_step(7200.0), 900.0);
        assert_eq!(clock(0.0, 3600.0 * 25.0, 3600.0), "01:00");
        assert_eq!(compact(26_000.0), "26k");
        assert_eq!(compact(1_500.0), "1.5k");
        assert_eq!(seconds(0.25), "0.25s");
        assert_eq!(seconds(3.0), "3s");
    }

    #[test]
    fn events_go_to_the_pools_they_name() {
        let e = |text: &str| Event { t_s: 0.0, kind: "recovery".into(), text: text.into() };
        let pools = ["web", "api", "ssh"];
        assert!(concerns(&e("runbook for X: restore pool ssh"), "ssh", &pools));
        assert!(!concerns(&e("runbook for X: restore pool ssh"), "web", &pools));
        assert!(concerns(&e("kill switch"), "web", &pools), "no pool named: every chart");
        assert!(concerns(&e("command: add drain web-drain"), "api", &pools), "an id is not a pool");
    }
}
