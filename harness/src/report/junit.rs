// JUnit XML of a replay for CI systems: one test case per SLO (failed when missed, with target
// and measurement), the scenario as the test suite, the terminal rendering as its output.

use std::fmt::Write as _;

use ebb_chart::markup::{attr, text};

use super::{human, Report};

/// The report as JUnit XML. `time_s` is how long the replay took (wall time, for CI dashboards);
/// everything else comes from `report`, so the same report and time give the same bytes.
pub fn junit(report: &Report, time_s: f64) -> String {
    let tests = report.slos.len();
    let failures = report.slos.iter().filter(|s| !s.pass).count();
    let time = format!("{:.3}", time_s.max(0.0));
    let mut out = String::new();
    let _ = writeln!(out, r#"<?xml version="1.0" encoding="UTF-8"?>"#);
    let _ = writeln!(
        out,
        r#"<testsuites name="ebb replay" tests="{tests}" failures="{failures}" errors="0" time="{time}">"#
    );
    let _ = writeln!(
        out,
        r#"  <testsuite name="{}" tests="{tests}" failures="{failures}" errors="0" skipped="0" time="{time}">"#,
        attr(&report.scenario)
    );
    let _ = writeln!(out, "    <properties>");
    let mut property = |name: &str, value: &str| {
        let _ = writeln!(out, r#"      <property name="{name}" value="{}"/>"#, attr(value));
    };
    property("start", &report.start_words());
    property("duration", &human(report.duration_s));
    property("seed", &report.seed.to_string());
    property("verdict", &report.verdict);
    property("expected", report.expected.as_deref().unwrap_or("unstated"));
    property("requests_simulated", &report.requests.simulated.to_string());
    property("requests_sample", &report.requests.sample.to_string());
    property("requests_represented", &report.requests.represented.to_string());
    property("filter_failures", &report.requests.filter_failures.to_string());
    // Every capacity loss, each judged by the time SLOs.
    for pool in &report.pools {
        for (n, e) in pool.episodes.iter().enumerate() {
            let at = |t: Option<f64>| t.map_or_else(|| "never".to_string(), |t| report.clock(t));
            property(
                &format!("capacity_loss.{}.{}", pool.name, n + 1),
                &format!(
                    "lost {}, detected {} (time to detect {}), restored {} (time to restore {})",
                    report.clock(e.lost_s),
                    at(e.detected_s),
                    e.detect_words(),
                    at(e.restored_s),
                    e.restore_words()
                ),
            );
        }
    }
    let _ = writeln!(out, "    </properties>");
    for slo in &report.slos {
        let _ = write!(out, r#"    <testcase classname="{}" name="{}""#, attr(&report.scenario), attr(&slo.name));
        if slo.pass {
            let _ = writeln!(out, "/>");
            continue;
        }
        let message = format!("SLO missed: target {}, measured {}", slo.target, slo.measured);
        let _ = writeln!(out, ">");
        let _ = write!(
            out,
            r#"      <failure message="{}" type="slo">{}"#,
            attr(&message),
            text(&format!("{}\ntarget: {}\nmeasured: {}", slo.name, slo.target, slo.measured))
        );
        let _ = writeln!(out, "</failure>");
        let _ = writeln!(out, "    </testcase>");
    }
    let _ = writeln!(out, "    <system-out>{}</system-out>", text(&report.render(false)));
    let _ = writeln!(out, "  </testsuite>");
    let _ = writeln!(out, "</testsuites>");
    out
}
