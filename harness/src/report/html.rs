// The self-contained HTML report a platform engineer opens after a game day: verdict, SLO table,
// one SVG timeline per pool, pools and events. Inline CSS and SVG only: no script, no fetch.

use crate::scenario::error::thousands;
use std::fmt::Write as _;

use ebb_chart::markup::text;
use ebb_chart::timeline as chart;

use super::chart::pool_chart;
use super::{human, Report};
use crate::slo::percent;

const STYLE: &str = "
:root { color-scheme: light; --fg: #18181b; --muted: #52525b; --line: #e4e4e7; --pass: #15803d; --fail: #b91c1c; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif; color: var(--fg); background: #f4f4f5; }
main { max-width: 1120px; margin: 0 auto; padding: 24px 20px 48px; }
header, section { background: #fff; border: 1px solid var(--line); border-radius: 10px; padding: 18px 22px; margin-bottom: 18px; }
h1 { font-size: 22px; margin: 0 0 6px; display: flex; align-items: center; gap: 12px; flex-wrap: wrap; }
h2 { font-size: 16px; margin: 0 0 12px; }
h3 { font-size: 14px; margin: 18px 0 4px; font-family: ui-monospace, SFMono-Regular, Menlo, monospace; }
p.description { margin: 0 0 14px; color: var(--muted); max-width: 80ch; }
.badge { font-size: 13px; font-weight: 700; letter-spacing: .06em; padding: 3px 10px; border-radius: 999px; color: #fff; }
.badge.pass { background: var(--pass); } .badge.fail { background: var(--fail); }
.expect { font-size: 13px; font-weight: 500; color: var(--muted); }
.expect.mismatch { color: var(--fail); font-weight: 700; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: 4px 16px; margin: 0; }
dl.facts dt { color: var(--muted); } dl.facts dd { margin: 0; }
table { border-collapse: collapse; width: 100%; font-variant-numeric: tabular-nums; }
th, td { text-align: left; padding: 6px 10px; border-bottom: 1px solid var(--line); vertical-align: top; }
th { font-size: 12px; text-transform: uppercase; letter-spacing: .04em; color: var(--muted); font-weight: 600; }
td.num, th.num { text-align: right; }
tr.missed td { background: #fef2f2; }
.mark { font-weight: 700; } .mark.pass { color: var(--pass); } .mark.fail { color: var(--fail); }
.kind { display: inline-block; font-size: 12px; padding: 1px 8px; border-radius: 4px; background: #f4f4f5; color: var(--muted); white-space: nowrap; }
.kind.bad { background: #fee2e2; color: #991b1b; } .kind.good { background: #dcfce7; color: #166534; }
.kind.deploy { background: #f3e8ff; color: #6b21a8; } .kind.command { background: #e2e8f0; color: #334155; }
.legend { display: flex; flex-wrap: wrap; gap: 6px 18px; font-size: 13px; color: var(--muted); margin-bottom: 4px; }
.legend span { display: inline-flex; align-items: center; gap: 6px; }
.swatch { display: inline-block; width: 16px; height: 10px; border-radius: 2px; }
.swatch.line { height: 3px; } .swatch.dash { height: 0; border-top: 2px dashed; border-radius: 0; }
svg.chart { width: 100%; height: auto; display: block; }
svg.chart text { font: 11px system-ui, sans-serif; fill: #71717a; }
svg.chart text.axis { font-size: 12px; }
svg.chart text.marker { font-size: 10px; font-weight: 700; }
svg.chart .span:hover { fill-opacity: .45; }
footer { color: var(--muted); font-size: 12px; text-align: center; }
code { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size: 13px; }
";

/// The report as one self-contained HTML page. Deterministic: the same report gives the same bytes.
pub fn html(report: &Report) -> String {
    let mut out = String::new();
    let verdict = if report.passed() { "pass" } else { "fail" };
    let _ = writeln!(out, "<!DOCTYPE html>");
    let _ = writeln!(out, r#"<html lang="en">"#);
    let _ = writeln!(out, "<head>");
    let _ = writeln!(out, r#"<meta charset="utf-8">"#);
    let _ = writeln!(out, r#"<meta name="viewport" content="width=device-width, initial-scale=1">"#);
    let tool = if report.live.is_some() { "ebb gameday" } else { "ebb replay" };
    let _ = writeln!(out, "<title>{} — {} — {tool}</title>", text(&report.scenario), verdict.to_uppercase());
    let _ = writeln!(out, "<style>{STYLE}</style>");
    let _ = writeln!(out, "</head>");
    let _ = writeln!(out, "<body>\n<main>");
    header(&mut out, report, verdict);
    slos(&mut out, report);
    timelines(&mut out, report);
    pools(&mut out, report);
    events(&mut out, report);
    match &report.timezone {
        None => {
            let _ = writeln!(
                out,
                "<footer>ebb replay · report format v{} · times in UTC from {} (+offset from the start)</footer>",
                report.version,
                text(&report.start)
            );
        }
        Some(zone) => {
            let _ = writeln!(
                out,
                "<footer>ebb replay · report format v{} · times in {} from {} (+offset from the start)</footer>",
                report.version,
                text(&zone.name),
                text(&report.start_words())
            );
        }
    }
    let _ = writeln!(out, "</main>\n</body>\n</html>");
    out
}

fn header(out: &mut String, report: &Report, verdict: &str) {
    let _ = writeln!(out, "<header>");
    let expect = match &report.expected {
        Some(e) if e == &report.verdict => {
            format!(r#"<span class="expect">expected {}: as the scenario states</span>"#, text(e))
        }
        Some(e) => format!(r#"<span class="expect mismatch">the scenario expects {}</span>"#, text(e)),
        None => r#"<span class="expect">no expected verdict stated</span>"#.to_string(),
    };
    let _ = writeln!(
        out,
        r#"<h1>{} <span class="badge {verdict}">{}</span> {expect}</h1>"#,
        text(&report.scenario),
        verdict.to_uppercase()
    );
    if !report.description.is_empty() {
        let _ = writeln!(out, r#"<p class="description">{}</p>"#, text(&report.description));
    }
    let r = &report.requests;
    let met = report.slos.iter().filter(|s| s.pass).count();
    let _ = writeln!(out, r#"<dl class="facts">"#);
    let mut fact = |name: &str, value: String| {
        let _ = writeln!(out, "<dt>{name}</dt><dd>{value}</dd>");
    };
    fact("SLOs", format!("{met} of {} met", report.slos.len()));
    match &report.live {
        // A game day: real requests, counted by the filter of the live proxies.
        Some(live) => {
            fact(
                "played live",
                format!(
                    "{} from {} at {}x against {}; {}",
                    human(report.duration_s),
                    text(&report.start_words()),
                    live.time_scale,
                    text(&live.targets.join(", ")),
                    text(&live.ended)
                ),
            );
            fact(
                "requests",
                format!("{} counted by the filter; alerts from {}", thousands(r.simulated), text(&live.alerts_from)),
            );
        }
        None => {
            fact(
                "replayed",
                format!(
                    "{} from {}, seed <code>{}</code>",
                    human(report.duration_s),
                    text(&report.start_words()),
                    report.seed
                ),
            );
            fact(
                "requests",
                format!(
                    "{} simulated, each through the real ebb.wasm, each standing for {} real {} ({} in all)",
                    thousands(r.simulated),
                    thousands(u64::from(r.sample)),
                    if r.sample == 1 { "request" } else { "requests" },
                    thousands(r.represented)
                ),
            );
        }
    }
    fact(
        "filter failures",
        if r.filter_failures == 0 {
            "none".to_string()
        } else {
            format!(
                r#"<span class="mark fail">{}</span> (traps or deadlines in the filter)"#,
                thousands(r.filter_failures)
            )
        },
    );
    let _ = writeln!(out, "</dl>\n</header>");
}

fn slos(out: &mut String, report: &Report) {
    let _ = writeln!(out, r#"<section id="slos">"#);
    let _ = writeln!(out, "<h2>SLO verdicts</h2>");
    let _ = writeln!(
        out,
        "<table>\n<thead><tr><th></th><th>SLO</th><th>target</th><th>measured</th></tr></thead>\n<tbody>"
    );
    for s in &report.slos {
        let (class, mark) = if s.pass { ("pass", "pass") } else { ("fail", "FAIL") };
        let _ = writeln!(
            out,
            r#"<tr class="slo{}"><td class="mark {class}">{mark}</td><td>{}</td><td>{}</td><td>{}</td></tr>"#,
            if s.pass { "" } else { " missed" },
            text(&s.name),
            text(&s.target),
            text(&s.measured)
        );
    }
    let _ = writeln!(out, "</tbody>\n</table>\n</section>");
}

fn timelines(out: &mut String, report: &Report) {
    let _ = writeln!(out, r#"<section id="timeline">"#);
    let _ = writeln!(out, "<h2>Timeline</h2>");
    let swatch = |class: &str, color: &str, opacity: f64, label: &str| {
        let style = if class.contains("dash") {
            format!("border-color:{color}")
        } else {
            format!("background:{color};opacity:{opacity}")
        };
        format!(r#"<span><i class="swatch {class}" style="{style}"></i>{label}</span>"#)
    };
    let _ = writeln!(
        out,
        r#"<div class="legend">{}{}{}{}{}{}{}{}{}</div>"#,
        swatch("line", chart::TRAFFIC, 1.0, "requests / min"),
        swatch("", chart::ERRORS, 0.6, "errors / min"),
        swatch("line", chart::CAPACITY, 1.0, "capacity (available / expected hosts)"),
        swatch("", chart::LATENCY, 0.4, "p90 latency"),
        swatch("", chart::ALERT, 0.45, "alert firing"),
        swatch("", chart::IMPACT, 0.2, "customers impaired"),
        swatch("dash", chart::DEPLOY, 1.0, "deploy"),
        swatch("dash", chart::COMMAND, 1.0, "command"),
        swatch("line", chart::RECOVERY, 1.0, "recovery"),
    );
    if report.series.iter().any(|s| !s.unregistered_ratio.is_empty()) {
        let _ = writeln!(
            out,
            r#"<div class="legend">{}{}</div>"#,
            swatch("", chart::UNREGISTERED, 0.5, "hosts launched but not registered with the load balancer (hatched)"),
            swatch("dash", chart::UNREGISTERED, 1.0, "scaling"),
        );
    }
    if report.requests.sample > 1 {
        let _ = writeln!(
            out,
            r#"<p class="description">Requests and errors per minute count real requests: simulated ones × {}. Numbered markers refer to the events below.</p>"#,
            report.requests.sample
        );
    } else {
        let _ = writeln!(out, r#"<p class="description">Numbered markers refer to the events below.</p>"#);
    }
    for (i, s) in report.series.iter().enumerate() {
        let _ = writeln!(out, "<h3>{}</h3>", text(&s.pool));
        out.push_str(&pool_chart(report, i));
    }
    let _ = writeln!(out, "</section>");
}

fn pools(out: &mut String, report: &Report) {
    let at = |t: Option<f64>| t.map_or("—".to_string(), |t| report.clock(t));
    let _ = writeln!(out, r#"<section id="pools">"#);
    let _ = writeln!(out, "<h2>Pools</h2>");
    let _ = writeln!(
        out,
        r#"<table>
<thead><tr><th>pool</th><th>capacity lost</th><th>detected</th><th class="num">to detect</th><th>restored</th><th class="num">to restore</th><th>customers impaired</th><th class="num">min capacity</th><th class="num">requests</th><th class="num">errors</th></tr></thead>
<tbody>"#
    );
    let sample = u64::from(report.requests.sample);
    for p in &report.pools {
        let impact = if p.impacts.is_empty() {
            "—".to_string()
        } else {
            let spans: Vec<String> =
                p.impacts.iter().map(|x| format!("{} – {}", report.clock(x.start_s), report.clock(x.end_s))).collect();
            spans.join("<br>")
        };
        let error_ratio = if p.requests > 0 { percent(p.errors as f64 / p.requests as f64) } else { "—".into() };
        // One row per capacity loss (each is judged); the pool's own figures span them.
        let rows = p.episodes.len().max(1);
        for row in 0..rows {
            let e = p.episodes.get(row);
            let pool_cells = if row == 0 {
                format!(r#"<td rowspan="{rows}"><code>{}</code></td>"#, text(&p.name))
            } else {
                String::new()
            };
            let tail = if row == 0 {
                format!(
                    r#"<td rowspan="{rows}">{impact}</td><td class="num" rowspan="{rows}">{:.0}%</td><td class="num" rowspan="{rows}">{}</td><td class="num" rowspan="{rows}">{} ({error_ratio})</td>"#,
                    p.min_capacity_ratio * 100.0,
                    thousands(p.requests.saturating_mul(sample)),
                    thousands(p.errors.saturating_mul(sample)),
                )
            } else {
                String::new()
            };
            let lost = match e {
                Some(e) => match &e.left_by {
                    Some(by) => format!("{} <small>(left drained by {})</small>", report.clock(e.lost_s), text(by)),
                    None => report.clock(e.lost_s),
                },
                None => "—".into(),
            };
            let _ = writeln!(
                out,
                r#"<tr class="episode">{pool_cells}<td>{lost}</td><td>{}</td><td class="num">{}</td><td>{}</td><td class="num">{}</td>{tail}</tr>"#,
                at(e.and_then(|e| e.detected_s)),
                e.map_or("—".into(), |e| text(&e.detect_words())),
                at(e.and_then(|e| e.restored_s)),
                e.map_or("—".into(), |e| text(&e.restore_words())),
            );
        }
    }
    let _ = writeln!(out, "</tbody>\n</table>");
    let _ = writeln!(
        out,
        r#"<p class="description">One row per capacity loss, each judged by the time SLOs. Capacity lost: the first scrape with fewer hosts than expected and no deployment in progress, or, for hosts an aborted deploy left drained, when it drained them. Detected: the first alert on the pool since that drop began. Restored: the first scrape back at the expected hosts. Customers impaired: each sustained impact. Requests and errors count real requests.</p>"#
    );
    let _ = writeln!(out, "</section>");
}

fn events(out: &mut String, report: &Report) {
    let _ = writeln!(out, r#"<section id="events">"#);
    let _ = writeln!(out, "<h2>Events</h2>");
    // With a zone, local time with UTC beside it; the column says which zone.
    let zone = match &report.timezone {
        Some(zone) => format!("{} (UTC)", zone.name),
        None => "UTC".into(),
    };
    let _ = writeln!(
        out,
        "<table>\n<thead><tr><th class=\"num\">#</th><th>{}</th><th class=\"num\">since start</th><th>kind</th><th>what</th></tr></thead>\n<tbody>",
        text(&zone)
    );
    for (i, e) in report.events.iter().enumerate() {
        let class = match e.kind.as_str() {
            "alert" | "impact_start" | "capacity_lost" | "refused" | "filter_failure" => "bad",
            "recovery" | "resolved" | "capacity_restored" | "impact_end" => "good",
            "deploy" => "deploy",
            "command" => "command",
            _ => "",
        };
        let _ = writeln!(
            out,
            r#"<tr><td class="num">{}</td><td>{}</td><td class="num">+{}</td><td><span class="kind {class}">{}</span></td><td>{}</td></tr>"#,
            i + 1,
            report.clock_and_utc(e.t_s),
            human(e.t_s),
            text(&e.kind.replace('_', " ")),
            text(&e.text)
        );
    }
    let _ = writeln!(out, "</tbody>\n</table>\n</section>");
}

#[cfg(test)]
mod tests {
    #[test]
    fn thousands_are_grouped() {
        assert_eq!(crate::scenario::error::thousands(26_420_025), "26,420,025");
        assert_eq!(crate::scenario::error::thousands(999), "999");
        assert_eq!(crate::scenario::error::thousands(1000), "1,000");
    }
}
