// The SVG timeline of one pool, written by hand: linear scales, paths, axis ticks, shaded spans
// and event markers, drawn from a `PoolTimeline` that the HTML report and the live console both fill.
// Every number is printed with fixed precision, so the same timeline gives the same bytes.

use std::fmt::Write as _;

use crate::markup::{attr, text};

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

/// Colours, shared with the pages' legends.
pub const TRAFFIC: &str = "#2563eb";
pub const ERRORS: &str = "#dc2626";
pub const CAPACITY: &str = "#059669";
/// Hosts launched but never registered with the load balancer: another loss than a drain.
pub const UNREGISTERED: &str = "#ea580c";
pub const EXPECTED: &str = "#52525b";
pub const LATENCY: &str = "#7c3aed";
pub const ALERT: &str = "#f59e0b";
pub const IMPACT: &str = "#ef4444";
pub const DEPLOY: &str = "#9333ea";
pub const COMMAND: &str = "#475569";
pub const RECOVERY: &str = "#16a34a";
pub const REFUSED: &str = "#dc2626";

/// Everything the chart of one pool shows. Times are seconds from the scenario's start.
#[derive(Clone, Debug, PartialEq)]
pub struct PoolTimeline {
    pub pool: String,
    /// The right end of the time axis (at least one second is drawn).
    pub end_s: f64,
    pub time_axis: TimeAxis,
    pub values: Values,
    /// Spans in which customers were impaired, shaded red.
    pub impacts: Vec<Span>,
    /// Spans in which an alert fired, shaded amber.
    pub alerts: Vec<Span>,
    /// Vertical markers, in the order they are labelled.
    pub markers: Vec<Marker>,
}

/// How the time axis is labelled.
#[derive(Clone, Debug, PartialEq)]
pub enum TimeAxis {
    /// UTC clock times; `start_s` is t = 0 as seconds since midnight (a replay's scenario clock).
    Clock { start_s: f64 },
    /// Local clock times of a time zone: `start_s` as for `Clock`, and from each `(t_s, shift_s)`
    /// on, the clock reads `shift_s` seconds more than at the start (a DST change: 3600 or -3600).
    Zoned { start_s: f64, shifts: Vec<(f64, f64)> },
    /// Time since the start, `m:ss` or `h:mm` (a game day running now, possibly time-scaled).
    Elapsed,
}

/// What is plotted against time.
#[derive(Clone, Debug, PartialEq)]
pub enum Values {
    /// The report's per-interval traffic with the capacity ratio on a right-hand axis and a p90
    /// latency strip underneath.
    Traffic(Traffic),
    /// Expected and available hosts as step lines (the live console's samples).
    Hosts(Vec<HostStep>),
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Traffic {
    /// Length of one interval; each point is drawn at its interval's middle.
    pub interval_s: f64,
    pub points: Vec<TrafficPoint>,
    /// The capacity step line (available / expected hosts, 0 to 1).
    pub capacity: Vec<RatioStep>,
    /// Share of expected hosts never registered with the load balancer (0 to 1): drawn as a
    /// hatched band hanging from the top of the capacity axis, apart from the capacity line, so
    /// that a registration fault does not read as a drain. Empty when there is none.
    pub unregistered: Vec<RatioStep>,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TrafficPoint {
    /// Start of the interval.
    pub t_s: f64,
    /// Requests and errors in the interval, in real requests.
    pub requests: f64,
    pub errors: f64,
    /// p90 latency in seconds; the strip is drawn only when every point has one.
    pub p90_s: Option<f64>,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RatioStep {
    pub from_s: f64,
    pub to_s: f64,
    pub ratio: f64,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct HostStep {
    pub from_s: f64,
    pub to_s: f64,
    pub expected: u64,
    pub available: u64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Span {
    pub from_s: f64,
    pub to_s: f64,
    /// The tooltip.
    pub title: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MarkerKind {
    Deploy,
    Command,
    /// A command that was refused or failed.
    Refused,
    Recovery,
    /// The pool's size changed (scaling) or launched hosts joined the load balancer.
    Scale,
}

impl MarkerKind {
    fn color(self) -> &'static str {
        match self {
            MarkerKind::Deploy => DEPLOY,
            MarkerKind::Command => COMMAND,
            MarkerKind::Refused => REFUSED,
            MarkerKind::Recovery => RECOVERY,
            MarkerKind::Scale => UNREGISTERED,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Marker {
    pub t_s: f64,
    pub kind: MarkerKind,
    /// Printed above the plot (a number referring to a table row).
    pub label: String,
    /// The tooltip.
    pub title: String,
}

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

/// A whole-number axis (hosts): the first of 1, 2, 5, 10, 20, 50... giving at most `ticks` steps.
fn whole_axis(max: f64, ticks: usize) -> (f64, f64) {
    let max = if max.is_nan() { 1.0 } else { max.max(1.0) };
    let mut step = 1.0;
    // Bounded: a count beyond f64's range still ends.
    for m in [2.0, 2.5, 2.0].iter().cycle().take(1024) {
        if max / step <= ticks as f64 {
            break;
        }
        step *= m;
    }
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
pub fn clock(start_s: f64, t: f64, step: f64) -> String {
    let s = ((start_s + t).round() as u64) % 86_400;
    if step < 60.0 {
        format!("{:02}:{:02}:{:02}", s / 3600, (s / 60) % 60, s % 60)
    } else {
        format!("{:02}:{:02}", s / 3600, (s / 60) % 60)
    }
}

/// `m:ss` below an hour, `h:mm:ss` above: time since the start.
pub fn elapsed(t: f64) -> String {
    let s = t.max(0.0).round() as u64;
    if s >= 3600 {
        format!("{}:{:02}:{:02}", s / 3600, (s / 60) % 60, s % 60)
    } else {
        format!("{}:{:02}", s / 60, s % 60)
    }
}

/// True when `text` belongs on `pool`'s chart: it names the pool (as a whole word), or it names
/// none of `pools` at all (a kill switch, a fault command known by its id, an alert on every pool).
pub fn concerns(text: &str, pool: &str, pools: &[&str]) -> bool {
    let words: Vec<&str> = text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-')).collect();
    let named: Vec<&&str> = pools.iter().filter(|p| words.contains(p)).collect();
    named.is_empty() || named.iter().any(|p| **p == pool)
}

/// The SVG chart of one pool.
pub fn pool_chart(timeline: &PoolTimeline) -> String {
    let mut out = String::new();
    let pool = timeline.pool.as_str();
    let end = timeline.end_s.max(1.0);
    let start_s = match timeline.time_axis {
        TimeAxis::Clock { start_s } | TimeAxis::Zoned { start_s, .. } => start_s,
        TimeAxis::Elapsed => 0.0,
    };
    let right = WIDTH - RIGHT;
    let x = Scale::new((0.0, end), (LEFT, right));
    let bottom = TOP + PLOT_H;
    let traffic = match &timeline.values {
        Values::Traffic(traffic) => Some(traffic),
        Values::Hosts(_) => None,
    };
    // The latency strip is the traffic chart's; the hosts chart ends at the plot.
    let (height, strip_top, strip_bottom) = match traffic {
        Some(_) => (HEIGHT, bottom + GAP, bottom + GAP + STRIP_H),
        None => (HEIGHT - GAP - STRIP_H, bottom, bottom),
    };
    let what = match traffic {
        Some(_) => "traffic, errors, capacity, alerts and events",
        None => "expected and available hosts, alerts and commands",
    };

    if traffic.is_some() {
        let _ = writeln!(
            out,
            r#"<svg class="chart" viewBox="0 0 {WIDTH} {height}" role="img" aria-label="{}">"#,
            attr(&format!("timeline of pool {pool}: {what}"))
        );
    } else {
        let _ = writeln!(
            out,
            r#"<svg class="chart" viewBox="0 0 {WIDTH} {height}" role="img" data-pool="{}" aria-label="{}">"#,
            attr(pool),
            attr(&format!("timeline of pool {pool}: {what}"))
        );
    }
    let _ = writeln!(out, "<title>{}</title>", text(&format!("pool {pool}")));
    // Plot backgrounds.
    let _ = writeln!(
        out,
        r##"<rect x="{LEFT:.1}" y="{TOP:.1}" width="{:.1}" height="{PLOT_H:.1}" fill="#fafafa" stroke="#d4d4d8"/>"##,
        right - LEFT
    );
    if traffic.is_some() {
        let _ = writeln!(
            out,
            r##"<rect x="{LEFT:.1}" y="{strip_top:.1}" width="{:.1}" height="{STRIP_H:.1}" fill="#fafafa" stroke="#d4d4d8"/>"##,
            right - LEFT
        );
    }

    // Shaded spans: customer impact, then alerts firing.
    let plot_span = |out: &mut String, span: &Span, color: &str, opacity: f64| {
        let (x0, x1) = (x.at(span.from_s), x.at(span.to_s));
        let _ = writeln!(
            out,
            r#"<rect class="span" x="{x0:.1}" y="{TOP:.1}" width="{:.1}" height="{:.1}" fill="{color}" fill-opacity="{opacity}"><title>{}</title></rect>"#,
            (x1 - x0).max(1.0),
            strip_bottom - TOP,
            text(&span.title)
        );
    };
    for span in &timeline.impacts {
        plot_span(&mut out, span, IMPACT, 0.10);
    }
    for span in &timeline.alerts {
        plot_span(&mut out, span, ALERT, 0.28);
    }

    let y_max = match &timeline.values {
        Values::Traffic(traffic) => traffic_axes(&mut out, traffic, strip_top, strip_bottom),
        Values::Hosts(steps) => host_axes(&mut out, steps),
    };

    // Time axis: ticks on round clock times (or round offsets from the start).
    let step = time_step(end);
    let first = ((start_s / step).ceil() * step) - start_s;
    let mut t = first;
    while t <= end + 1e-9 {
        let px = x.at(t);
        let label = match &timeline.time_axis {
            TimeAxis::Clock { .. } => clock(start_s, t, step),
            TimeAxis::Zoned { shifts, .. } => {
                let shift = shifts.iter().rev().find(|(at, _)| *at <= t).map_or(0.0, |(_, s)| *s);
                // A day added: a clock set back never reads before midnight.
                clock(start_s + shift + 86_400.0, t, step)
            }
            TimeAxis::Elapsed => elapsed(t),
        };
        let _ = writeln!(
            out,
            r##"<line x1="{px:.1}" y1="{TOP:.1}" x2="{px:.1}" y2="{strip_bottom:.1}" stroke="#e4e4e7" stroke-dasharray="2 3"/><text x="{px:.1}" y="{:.1}" class="tick" text-anchor="middle">{label}</text>"##,
            strip_bottom + 16.0,
        );
        t += step;
    }

    match &timeline.values {
        Values::Traffic(traffic) => traffic_series(&mut out, traffic, x, end, y_max, strip_top, strip_bottom),
        Values::Hosts(steps) => host_series(&mut out, steps, x, y_max),
    }

    // Markers; labels take the first of three rows where they do not overlap an earlier one.
    let mut rows = [f64::NEG_INFINITY; 3];
    for m in &timeline.markers {
        let color = m.kind.color();
        let px = x.at(m.t_s);
        let w = 7.0 * m.label.len() as f64 + 6.0;
        let _ = writeln!(
            out,
            r#"<line x1="{px:.1}" y1="{:.1}" x2="{px:.1}" y2="{strip_bottom:.1}" stroke="{color}" stroke-width="1.2" stroke-dasharray="{}"><title>{}</title></line>"#,
            TOP - 4.0,
            if m.kind == MarkerKind::Recovery { "none" } else { "4 3" },
            text(&m.title)
        );
        if let Some(row) = rows.iter().position(|&r| px - w / 2.0 > r + 2.0) {
            rows[row] = px + w / 2.0;
            let cy = TOP - 8.0 - 11.0 * row as f64;
            let _ = writeln!(
                out,
                r#"<text x="{px:.1}" y="{cy:.1}" class="marker" text-anchor="middle" fill="{color}">{}</text>"#,
                text(&m.label)
            );
        }
    }
    let _ = writeln!(out, "</svg>");
    out
}

/// The top of the latency strip's axis.
fn p90_max(traffic: &Traffic) -> f64 {
    nice_axis(traffic.points.iter().filter_map(|p| p.p90_s).fold(0.0, f64::max), 2).0
}

/// Axes of the traffic chart: requests per interval on the left, capacity ratio on the right,
/// p90 latency in the strip. Returns the top of the requests axis.
fn traffic_axes(out: &mut String, traffic: &Traffic, strip_top: f64, strip_bottom: f64) -> f64 {
    let right = WIDTH - RIGHT;
    let bottom = TOP + PLOT_H;
    let max_requests = traffic.points.iter().map(|p| p.requests).fold(0.0, f64::max);
    let (y_max, y_step) = nice_axis(max_requests, 4);
    let y = Scale::new((0.0, y_max), (bottom, TOP));
    let ratio = Scale::new((0.0, 1.0), (bottom, TOP));
    let p_max = p90_max(traffic);

    // Grid and left axis (requests per interval).
    left_axis(out, &y, y_max, y_step, TRAFFIC, "requests / min");
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
    y_max
}

/// The traffic chart's series: requests and errors as areas, the capacity steps, the p90 strip.
fn traffic_series(
    out: &mut String,
    traffic: &Traffic,
    x: Scale,
    end: f64,
    y_max: f64,
    strip_top: f64,
    strip_bottom: f64,
) {
    let bottom = TOP + PLOT_H;
    let points = &traffic.points;
    let y = Scale::new((0.0, y_max), (bottom, TOP));
    let ratio = Scale::new((0.0, 1.0), (bottom, TOP));
    let p = Scale::new((0.0, p90_max(traffic)), (strip_bottom, strip_top));

    // One point per interval, drawn at the middle of its interval.
    let half = traffic.interval_s / 2.0;
    let mid = |i: usize| points[i].t_s + half.min(end - points[i].t_s).max(0.0);
    let n = points.len();
    if n == 0 {
        return;
    }
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
    let requests = |i: usize| points[i].requests;
    let errors = |i: usize| points[i].errors;
    let _ = writeln!(out, r#"<path d="{}" fill="{TRAFFIC}" fill-opacity="0.08" stroke="none"/>"#, area(&requests, y));
    let _ = writeln!(
        out,
        r#"<path d="{}" fill="none" stroke="{TRAFFIC}" stroke-width="1.5"><title>requests per minute</title></path>"#,
        line(&requests, y)
    );
    if points.iter().any(|p| p.errors > 0.0) {
        let _ = writeln!(
            out,
            r#"<path d="{}" fill="{ERRORS}" fill-opacity="0.55" stroke="{ERRORS}" stroke-width="1"><title>errors per minute</title></path>"#,
            area(&errors, y)
        );
    }
    // Unregistered hosts: a hatched band from the top of the capacity axis down by their share.
    if traffic.unregistered.iter().any(|s| s.ratio > 0.0) {
        let _ = writeln!(
            out,
            r#"<defs><pattern id="unregistered" width="6" height="6" patternUnits="userSpaceOnUse" patternTransform="rotate(45)"><line x1="0" y1="0" x2="0" y2="6" stroke="{UNREGISTERED}" stroke-width="2"/></pattern></defs>"#
        );
        for s in traffic.unregistered.iter().filter(|s| s.ratio > 0.0) {
            let (x0, x1) = (x.at(s.from_s), x.at(s.to_s));
            let (top, low) = (ratio.at(1.0), ratio.at(1.0 - s.ratio.min(1.0)));
            let _ = writeln!(
                out,
                r#"<rect class="unregistered" x="{x0:.1}" y="{top:.1}" width="{:.1}" height="{:.1}" fill="url(#unregistered)" fill-opacity="0.5" stroke="none"><title>{:.0}% of expected hosts not registered with the load balancer</title></rect>"#,
                (x1 - x0).max(0.0),
                (low - top).max(0.0),
                s.ratio * 100.0
            );
        }
    }
    // Capacity: a step line.
    let d = steps(traffic.capacity.iter().map(|s| (x.at(s.from_s), x.at(s.to_s), ratio.at(s.ratio))));
    let _ = writeln!(
        out,
        r#"<path d="{d}" fill="none" stroke="{CAPACITY}" stroke-width="2"><title>available / expected hosts</title></path>"#
    );
    if points.iter().all(|p| p.p90_s.is_some()) {
        let p90 = |i: usize| points[i].p90_s.unwrap_or(0.0);
        let mut d = line(&p90, p);
        let _ = write!(d, " L{:.1},{strip_bottom:.1} L{:.1},{strip_bottom:.1} Z", x.at(mid(n - 1)), x.at(mid(0)));
        let _ = writeln!(
            out,
            r#"<path d="{d}" fill="{LATENCY}" fill-opacity="0.18" stroke="{LATENCY}" stroke-width="1"><title>p90 latency</title></path>"#
        );
    }
}

/// The hosts axis on the left; returns its top.
fn host_axes(out: &mut String, hosts: &[HostStep]) -> f64 {
    let bottom = TOP + PLOT_H;
    let max_hosts = hosts.iter().map(|s| s.expected.max(s.available)).max().unwrap_or(0) as f64;
    let (y_max, y_step) = whole_axis(max_hosts, 4);
    let y = Scale::new((0.0, y_max), (bottom, TOP));
    left_axis(out, &y, y_max, y_step, CAPACITY, "hosts");
    y_max
}

/// Horizontal grid lines with their tick labels every `step` up to `max`, and the left axis's
/// rotated title in `colour`.
fn left_axis(out: &mut String, y: &Scale, max: f64, step: f64, colour: &str, title: &str) {
    let right = WIDTH - RIGHT;
    let mut v = 0.0;
    while v <= max + 1e-9 {
        let py = y.at(v);
        let _ = writeln!(
            out,
            r##"<line x1="{LEFT:.1}" y1="{py:.1}" x2="{right:.1}" y2="{py:.1}" stroke="#e4e4e7"/><text x="{:.1}" y="{:.1}" class="tick" text-anchor="end">{}</text>"##,
            LEFT - 6.0,
            py + 4.0,
            compact(v)
        );
        v += step;
    }
    let _ = writeln!(
        out,
        r#"<text x="14" y="{:.1}" class="axis" transform="rotate(-90 14 {:.1})" text-anchor="middle" fill="{colour}">{title}</text>"#,
        TOP + PLOT_H / 2.0,
        TOP + PLOT_H / 2.0
    );
}

/// Hosts: the expected count dashed, the available count solid over a light fill.
fn host_series(out: &mut String, hosts: &[HostStep], x: Scale, y_max: f64) {
    let right = WIDTH - RIGHT;
    let bottom = TOP + PLOT_H;
    let y = Scale::new((0.0, y_max), (bottom, TOP));
    if hosts.is_empty() {
        return;
    }
    let available = steps(hosts.iter().map(|s| (x.at(s.from_s), x.at(s.to_s), y.at(s.available as f64))));
    let first = x.at(hosts[0].from_s);
    let last = x.at(hosts[hosts.len() - 1].to_s);
    let _ = writeln!(
        out,
        r#"<path class="available-area" d="{available} L{last:.1},{bottom:.1} L{first:.1},{bottom:.1} Z" fill="{CAPACITY}" fill-opacity="0.10" stroke="none"/>"#
    );
    let expected = steps(hosts.iter().map(|s| (x.at(s.from_s), x.at(s.to_s), y.at(s.expected as f64))));
    let _ = writeln!(
        out,
        r#"<path class="expected" d="{expected}" fill="none" stroke="{EXPECTED}" stroke-width="1.5" stroke-dasharray="6 4"><title>expected hosts</title></path>"#
    );
    let _ = writeln!(
        out,
        r#"<path class="available" d="{available}" fill="none" stroke="{CAPACITY}" stroke-width="2"><title>available hosts</title></path>"#
    );
    let now = &hosts[hosts.len() - 1];
    let _ = writeln!(
        out,
        r#"<text class="now" x="{:.1}" y="{:.1}" fill="{CAPACITY}">{}/{}</text>"#,
        (last + 4.0).min(right + 4.0),
        y.at(now.available as f64) + 4.0,
        now.available,
        now.expected
    );
}

/// A step path through `(x0, x1, y)` segments, each horizontal from x0 to x1 at y.
fn steps(segments: impl Iterator<Item = (f64, f64, f64)>) -> String {
    let mut d = String::new();
    for (i, (x0, x1, y)) in segments.enumerate() {
        let _ = write!(d, "{}{x0:.1},{y:.1} L{x1:.1},{y:.1}", if i == 0 { "M" } else { " L" });
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axes_are_round() {
        assert_eq!(nice_axis(930.0, 4), (1000.0, 250.0));
        assert_eq!(nice_axis(0.0, 4), (1.0, 0.25));
        assert_eq!(whole_axis(0.0, 4), (1.0, 1.0));
        assert_eq!(whole_axis(3.0, 4), (3.0, 1.0));
        assert_eq!(whole_axis(12.0, 4), (15.0, 5.0));
        assert_eq!(whole_axis(10.0, 4), (10.0, 5.0));
        assert_eq!(whole_axis(150.0, 4), (150.0, 50.0));
        assert_eq!(time_step(36_000.0), 3600.0);
        assert_eq!(time_step(7200.0), 900.0);
        assert_eq!(clock(0.0, 3600.0 * 25.0, 3600.0), "01:00");
        assert_eq!(elapsed(75.4), "1:15");
        assert_eq!(elapsed(3725.0), "1:02:05");
        assert_eq!(compact(26_000.0), "26k");
        assert_eq!(compact(1_500.0), "1.5k");
        assert_eq!(seconds(0.25), "0.25s");
        assert_eq!(seconds(3.0), "3s");
    }

    #[test]
    fn texts_go_to_the_pools_they_name() {
        let pools = ["web", "api", "ssh"];
        assert!(concerns("runbook for X: restore pool ssh", "ssh", &pools));
        assert!(!concerns("runbook for X: restore pool ssh", "web", &pools));
        assert!(concerns("kill switch", "web", &pools), "no pool named: every chart");
        assert!(concerns("command: add drain web-drain", "api", &pools), "an id is not a pool");
    }

    fn hosts_timeline(steps: Vec<HostStep>) -> PoolTimeline {
        PoolTimeline {
            pool: "web".into(),
            end_s: 600.0,
            time_axis: TimeAxis::Elapsed,
            values: Values::Hosts(steps),
            impacts: Vec::new(),
            alerts: vec![Span { from_s: 120.0, to_s: 300.0, title: "capacity <low> firing".into() }],
            markers: vec![Marker {
                t_s: 60.0,
                kind: MarkerKind::Command,
                label: "1".into(),
                title: "drain web \"50%\"".into(),
            }],
        }
    }

    /// The live chart: the drop from 10 to 5 hosts is drawn where it happened, on a hosts axis,
    /// with elapsed-time ticks, and every text escaped.
    #[test]
    fn hosts_are_drawn_as_steps_on_a_hosts_axis() {
        let svg = pool_chart(&hosts_timeline(vec![
            HostStep { from_s: 0.0, to_s: 60.0, expected: 10, available: 10 },
            HostStep { from_s: 60.0, to_s: 300.0, expected: 10, available: 5 },
        ]));
        assert!(svg.starts_with(r#"<svg class="chart" viewBox="0 0 960 246" role="img" data-pool="web""#), "{svg}");
        // x: 64 + t/600 * 844; y: 210 - hosts/10 * 170.
        assert!(svg.contains(r#"class="available" d="M64.0,40.0 L148.4,40.0 L148.4,125.0 L486.0,125.0""#), "{svg}");
        assert!(svg.contains(r#"class="expected" d="M64.0,40.0 L148.4,40.0 L148.4,40.0 L486.0,40.0""#), "{svg}");
        assert!(svg.contains(">hosts</text>"));
        assert!(svg.contains(">5/10</text>"), "the latest count is printed at the line's end");
        assert!(svg.contains(">1:00</text>") && svg.contains(">10:00</text>"), "elapsed ticks: {svg}");
        assert!(svg.contains("capacity &lt;low&gt; firing"));
        assert!(svg.contains("drain web &quot;50%&quot;"));
        assert!(!svg.contains("p90"), "no latency strip on the live chart");
    }

    #[test]
    fn an_empty_live_chart_still_draws_its_axes() {
        let svg = pool_chart(&hosts_timeline(Vec::new()));
        assert!(svg.contains(">hosts</text>") && svg.ends_with("</svg>\n"));
        assert!(!svg.contains("class=\"available\""));
    }
}
