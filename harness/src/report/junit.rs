// JUnit XML of a replay for CI systems: one test case per SLO (failed when missed, with target
// and measurement), the scenario as the test suite, the terminal rendering as its output.

use std::fmt::Write as _;

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
    property("start", &format!("{} UTC", report.start));
    property("duration", &human(report.duration_s));
    property("seed", &report.seed.to_string());
    property("verdict", &report.verdict);
    property("expected", report.expected.as_deref().unwrap_or("unstated"));
    property("requests_simulated", &report.requests.simulated.to_string());
    property("requests_sample", &report.requests.sample.to_string());
    property("requests_represented", &report.requests.represented.to_string());
    property("filter_failures", &report.requests.filter_failures.to_string());
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

/// Escapes an attribute value (XML or HTML): markup, both quotes, and whitespace that a parser
/// would otherwise fold into spaces.
pub(super) fn attr(value: &str) -> String {
    escape(value, true)
}

/// Escapes element content (XML or HTML); newlines stay as they are.
pub(super) fn text(value: &str) -> String {
    escape(value, false)
}

/// Characters XML 1.0 cannot carry at all (controls other than tab, newline and carriage return)
/// become U+FFFD, so that no report text can make the document ill-formed.
fn escape(value: &str, in_attribute: bool) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' if in_attribute => {
                let _ = write!(out, "&#{};", c as u32);
            }
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{fffe}' || c == '\u{ffff}' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{attr, text};

    #[test]
    fn escapes_markup_quotes_and_controls() {
        assert_eq!(attr(r#"<a b="c" d='e'>&"#), "&lt;a b=&quot;c&quot; d=&apos;e&apos;&gt;&amp;");
        assert_eq!(attr("x\ny\u{1b}[31m"), "x&#10;y\u{fffd}[31m");
        assert_eq!(text("x\ny < z"), "x\ny &lt; z");
    }
}
