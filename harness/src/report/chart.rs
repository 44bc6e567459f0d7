// The report's side of its SVG timelines: each pool's per-minute series, alerts, impact and events
// put into ebb-chart's `PoolTimeline`, which draws them (the same code draws the live console).

use ebb_chart::timeline::{
    clock, concerns, Marker, MarkerKind, PoolTimeline, RatioStep, Span, TimeAxis, Traffic, TrafficPoint, Values,
};

use super::{human, Report};

/// Seconds in one point of the report's series.
const INTERVAL_S: f64 = 60.0;

/// The kind of a vertical marker, if the event is one.
fn marker_kind(kind: &str) -> Option<MarkerKind> {
    match kind {
        "deploy" => Some(MarkerKind::Deploy),
        "command" => Some(MarkerKind::Command),
        "recovery" => Some(MarkerKind::Recovery),
        "scale" | "registered" => Some(MarkerKind::Scale),
        _ => None,
    }
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

/// The timeline of the pool of `report.series[index]`; markers carry the event table's numbers.
pub fn pool_timeline(report: &Report, index: usize) -> Option<PoolTimeline> {
    let series = report.series.get(index)?;
    let pool = series.pool.as_str();
    let end = report.duration_s.max(1.0);
    let start_s = report.local_start_s();
    // Times in titles: UTC clock times as always, or local ones with the zone's abbreviation.
    let label = |t: f64, step: f64| match &report.timezone {
        None => clock(start_s, t, step),
        Some(_) => {
            let local = report.clock(t);
            if step < 60.0 {
                local
            } else {
                // `06:22:00 EDT` to `06:22 EDT`.
                local.get(..5).map_or_else(|| local.clone(), |hm| format!("{hm}{}", &local[8..]))
            }
        }
    };
    let utc = if report.timezone.is_none() { " UTC" } else { "" };
    let sample = f64::from(report.requests.sample.max(1));

    let n = series.t_s.len().min(series.requests.len()).min(series.errors.len());
    let has_p90 = series.p90_s.len() >= n;
    let points = (0..n)
        .map(|i| TrafficPoint {
            t_s: series.t_s[i],
            requests: series.requests[i] as f64 * sample,
            errors: series.errors[i] as f64 * sample,
            p90_s: if has_p90 { Some(series.p90_s[i]) } else { None },
        })
        .collect();
    // Capacity steps at the scrapes that saw them (a report without them: each minute's lowest).
    let capacity = if series.capacity_steps.is_empty() {
        series
            .available_ratio
            .iter()
            .enumerate()
            .take(n)
            .map(|(i, &ratio)| RatioStep { from_s: series.t_s[i], to_s: (series.t_s[i] + INTERVAL_S).min(end), ratio })
            .collect()
    } else {
        let steps = &series.capacity_steps;
        steps
            .iter()
            .enumerate()
            .map(|(i, &(from_s, ratio))| RatioStep {
                from_s,
                to_s: steps.get(i + 1).map_or(end, |&(next, _)| next).min(end),
                ratio,
            })
            .collect()
    };

    let unregistered = series
        .unregistered_ratio
        .iter()
        .enumerate()
        .take(n)
        .map(|(i, &ratio)| RatioStep { from_s: series.t_s[i], to_s: (series.t_s[i] + INTERVAL_S).min(end), ratio })
        .collect();

    let impacts = report
        .pools
        .iter()
        .find(|r| r.name == pool)
        .map(|result| {
            result
                .impacts
                .iter()
                .map(|x| Span {
                    from_s: x.start_s,
                    to_s: x.end_s,
                    title: format!("customers impaired {}–{}{utc}", label(x.start_s, 60.0), label(x.end_s, 60.0)),
                })
                .collect()
        })
        .unwrap_or_default();
    let alerts = report
        .alerts
        .iter()
        .filter(|a| a.pool == pool)
        .flat_map(|alert| {
            spans(&alert.fired_s, &alert.resolved_s, end).into_iter().map(|(from, to)| Span {
                from_s: from,
                to_s: to,
                title: format!("{} firing {}–{}{utc}", alert.name, label(from, 1.0), label(to, 1.0)),
            })
        })
        .collect();
    let pools: Vec<&str> = report.series.iter().map(|s| s.pool.as_str()).collect();
    let markers = report
        .events
        .iter()
        .enumerate()
        .filter_map(|(i, e)| {
            let kind = marker_kind(&e.kind)?;
            concerns(&e.text, pool, &pools).then(|| Marker {
                t_s: e.t_s,
                kind,
                label: (i + 1).to_string(),
                title: format!("#{} {} +{}: {}", i + 1, label(e.t_s, 1.0), human(e.t_s), e.text),
            })
        })
        .collect();

    Some(PoolTimeline {
        pool: pool.to_string(),
        end_s: end,
        time_axis: match &report.timezone {
            None => TimeAxis::Clock { start_s },
            // Each DST change moves the local clock by the difference of offsets.
            Some(zone) => TimeAxis::Zoned {
                start_s,
                shifts: zone
                    .offsets
                    .iter()
                    .map(|o| {
                        let first = zone.offsets.first().map_or(0, |f| f.utc_offset_s);
                        (o.t_s, f64::from(o.utc_offset_s.saturating_sub(first)))
                    })
                    .collect(),
            },
        },
        values: Values::Traffic(Traffic { interval_s: INTERVAL_S, points, capacity, unregistered }),
        impacts,
        alerts,
        markers,
    })
}

/// The SVG chart of the pool of `report.series[index]` (empty when there is no such series).
pub fn pool_chart(report: &Report, index: usize) -> String {
    pool_timeline(report, index).map_or_else(String::new, |timeline| ebb_chart::pool_chart(&timeline))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Event;

    #[test]
    fn alert_spans_end_at_their_resolution_or_the_end() {
        assert_eq!(spans(&[10.0, 100.0], &[50.0], 300.0), vec![(10.0, 50.0), (100.0, 300.0)]);
    }

    #[test]
    fn events_go_to_the_pools_they_name() {
        let e = |text: &str| Event { t_s: 0.0, kind: "recovery".into(), text: text.into() };
        let pools = ["web", "api", "ssh"];
        assert!(concerns(&e("runbook for X: restore pool ssh").text, "ssh", &pools));
        assert!(!concerns(&e("runbook for X: restore pool ssh").text, "web", &pools));
    }
}
