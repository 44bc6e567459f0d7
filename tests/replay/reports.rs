// The replay's other outputs: JUnit XML (one test case per SLO, well-formed whatever the names),
// the self-contained HTML report (deterministic, no script or remote resource), and the JSON
// Schema of the scenario format (never stale, and every shipped scenario follows it).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ebb_harness::report::{self, Report};
use ebb_harness::scenario::Scenario;
use quick_xml::events::{BytesStart, Event};
use quick_xml::XmlVersion;

use super::{ebb, replay, root, wasm};

/// A JUnit element as parsed back: its name and attributes.
#[derive(Debug)]
struct Element {
    name: String,
    attrs: BTreeMap<String, String>,
}

fn element(e: &BytesStart) -> Element {
    let name = e.name().as_ref().to_string();
    let attrs = e
        .attributes()
        .map(|a| {
            let a = a.expect("well-formed attribute");
            let key = a.key.as_ref().to_string();
            (key, a.normalized_value(XmlVersion::Implicit1_0).expect("attribute value").into_owned())
        })
        .collect();
    Element { name, attrs }
}

/// Parses `xml` strictly (end tags must match) into its elements, in document order.
fn parse_xml(xml: &str) -> Vec<Element> {
    let mut reader = quick_xml::Reader::from_str(xml);
    reader.config_mut().check_end_names = true;
    let mut out = Vec::new();
    let mut depth = 0i32;
    loop {
        match reader
            .read_event()
            .unwrap_or_else(|e| panic!("ill-formed XML at {}: {e}\n{xml}", reader.error_position()))
        {
            Event::Start(e) => {
                depth += 1;
                out.push(element(&e));
            }
            Event::Empty(e) => out.push(element(&e)),
            Event::End(_) => depth -= 1,
            Event::Eof => break,
            _ => {}
        }
    }
    assert_eq!(depth, 0, "unclosed elements:\n{xml}");
    out
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ebb-reports-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temporary folder");
    dir
}

/// Checks the JUnit document against the report it came from.
fn check_junit(xml: &str, report: &Report) {
    let elements = parse_xml(xml);
    let suite = elements.iter().find(|e| e.name == "testsuite").expect("a testsuite");
    let missed: Vec<_> = report.slos.iter().filter(|s| !s.pass).collect();
    assert_eq!(suite.attrs["name"], report.scenario);
    assert_eq!(suite.attrs["tests"], report.slos.len().to_string());
    assert_eq!(suite.attrs["failures"], missed.len().to_string());
    assert!(suite.attrs["time"].parse::<f64>().is_ok(), "time in seconds: {:?}", suite.attrs["time"]);
    let cases: Vec<&Element> = elements.iter().filter(|e| e.name == "testcase").collect();
    let names: Vec<&str> = cases.iter().map(|c| c.attrs["name"].as_str()).collect();
    let slo_names: Vec<&str> = report.slos.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, slo_names, "one test case per SLO, in order");
    assert!(cases.iter().all(|c| c.attrs["classname"] == report.scenario));
    let failures: Vec<&Element> = elements.iter().filter(|e| e.name == "failure").collect();
    assert_eq!(failures.len(), missed.len(), "a failure per missed SLO:\n{xml}");
    for (f, slo) in failures.iter().zip(&missed) {
        let message = &f.attrs["message"];
        assert!(message.contains(&slo.target) && message.contains(&slo.measured), "{message} for {slo:?}");
    }
}

#[test]
fn the_cli_writes_junit_with_a_failed_case_per_missed_slo_and_a_self_contained_html_report() {
    let dir = temp_dir("cli");
    let (junit, html) = (dir.join("out/r.junit.xml"), dir.join("out/r.html"));
    let out = ebb(&[
        "replay",
        "scenarios/bitbucket-2021-02-05.json",
        "--plugin",
        wasm().to_str().unwrap(),
        "--quiet",
        "--junit",
        junit.to_str().unwrap(),
        "--html",
        html.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "missed SLOs exit 1: {}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains(&format!("junit: {}", junit.display())), "{stdout}");
    assert!(stdout.contains(&format!("html: {}", html.display())), "{stdout}");

    let report = replay("bitbucket-2021-02-05");
    assert!(report.slos.iter().any(|s| s.pass) && report.slos.iter().any(|s| !s.pass), "a mixed verdict to check");
    check_junit(&std::fs::read_to_string(&junit).unwrap(), &report);

    let page = std::fs::read_to_string(&html).unwrap();
    check_html(&page, &report);
    assert!(page == report::html(&report), "the CLI's HTML differs from the same replay's in this process");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn junit_stays_well_formed_whatever_the_names() {
    let mut report = replay("blackhole-drain");
    report.scenario = "a<b & \"c\" 'd'".into();
    report.slos[0].name = "p99 < 2s & errors > 0 \u{1b}[31m".into();
    report.slos[0].pass = false;
    report.slos[0].measured = "\"worst\" 5s <".into();
    report.description = "]]> <!-- -->".into();
    let xml = report::junit(&report, 1.25);
    let mut expected = report.clone();
    // The one character XML cannot carry comes back as U+FFFD.
    expected.slos[0].name = "p99 < 2s & errors > 0 \u{fffd}[31m".into();
    check_junit(&xml, &expected);
    assert!(xml.contains(r#"time="1.250""#), "{xml}");
}

/// What the HTML report must be: self-contained, with a chart per pool and a row per SLO.
fn check_html(page: &str, report: &Report) {
    assert!(page.starts_with("<!DOCTYPE html>"), "{}", &page[..80.min(page.len())]);
    for banned in ["<script", "http://", "https://", "<link", "<img", "<iframe", "@import", "url("] {
        assert!(!page.contains(banned), "the report must be self-contained, found {banned:?}");
    }
    assert_eq!(page.matches("<svg class=\"chart\"").count(), report.pools.len(), "one chart per pool");
    assert_eq!(page.matches("<svg").count(), page.matches("</svg>").count());
    assert_eq!(page.matches("<tr class=\"slo").count(), report.slos.len(), "one row per SLO");
    for slo in &report.slos {
        let name = slo.name.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
        assert!(page.contains(&format!("<td>{name}</td>")), "no row for SLO {:?}", slo.name);
    }
    let badge = if report.passed() { "badge pass\">PASS" } else { "badge fail\">FAIL" };
    assert!(page.contains(badge), "verdict badge {badge}");
    for (i, _) in report.events.iter().enumerate() {
        assert!(page.contains(&format!("<td class=\"num\">{}</td>", i + 1)), "event {} missing", i + 1);
    }
    // Every alert firing is shaded on its pool's chart, with the clock time it fired.
    let firings: usize = report.alerts.iter().map(|a| a.fired_s.len()).sum();
    assert_eq!(page.matches(" firing ").count(), firings, "one shaded span per alert firing");
    // The time axis reads in UTC clock times from the report's start.
    assert!(page.contains(&format!(">{}</text>", &report.start[..5])) || report.start.len() > 5);
}

#[test]
fn the_html_report_is_byte_identical_across_replays() {
    let a = report::html(&replay("slow-partial-drain"));
    let b = report::html(&replay("slow-partial-drain"));
    assert!(a == b, "two replays of the same file and seed give different HTML");
    check_html(&a, &replay("slow-partial-drain"));
}

/// The scenario format's JSON Schema, where the shipped scenarios' `$schema` points.
const SCHEMA: &str = "docs/scenario.schema.json";

fn schema() -> serde_json::Value {
    let path = root().join(SCHEMA);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn the_schema_in_docs_is_what_ebb_schema_prints() {
    let out = ebb(&["schema"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let path = root().join(SCHEMA);
    if std::env::var_os("BLESS").is_some() {
        std::fs::write(&path, &out.stdout).unwrap();
    }
    let committed = std::fs::read(&path).unwrap_or_default();
    assert!(
        committed == out.stdout,
        "{} is stale: run `ebb schema > {SCHEMA}` (or BLESS=1 cargo test) and review the diff",
        path.display()
    );
    let schema = schema();
    assert_eq!(schema["$schema"], "https://json-schema.org/draft/2020-12/schema");
    jsonschema::meta::validate(&schema).unwrap_or_else(|e| panic!("not a valid 2020-12 schema: {e}"));
}

fn errors(validator: &jsonschema::Validator, scenario: &serde_json::Value) -> Vec<String> {
    validator.iter_errors(scenario).map(|e| format!("{}: {e}", e.instance_path())).collect()
}

#[test]
fn every_shipped_scenario_follows_the_schema_and_so_may_name_it() {
    let validator = jsonschema::validator_for(&schema()).expect("the schema compiles");
    let mut checked = 0;
    for entry in std::fs::read_dir(root().join("scenarios")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        let errs = errors(&validator, &value);
        assert!(errs.is_empty(), "{}:\n{}", path.display(), errs.join("\n"));
        // Each names the schema, which the schema and ebb both accept.
        assert_eq!(value["$schema"], "../docs/scenario.schema.json", "{}", path.display());
        Scenario::parse(&path, text.as_bytes()).unwrap_or_else(|e| panic!("$schema refused by ebb: {e}"));
        checked += 1;
    }
    assert!(checked >= 6, "found {checked} scenarios");
}

#[test]
fn the_schema_refuses_what_ebb_refuses() {
    let validator = jsonschema::validator_for(&schema()).expect("the schema compiles");
    let base: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root().join("scenarios/blackhole-drain.json")).unwrap()).unwrap();
    let variant = |pointer: &str, value: serde_json::Value| {
        let mut v = base.clone();
        *v.pointer_mut(pointer).unwrap_or_else(|| panic!("no {pointer} in blackhole-drain.json")) = value;
        v
    };
    let mut typo = base.clone();
    typo.as_object_mut().unwrap().insert("duraton".into(), "1h".into());
    let mut fault_typo = base.clone();
    let drain = fault_typo.pointer_mut("/timeline/0/command/drain").and_then(|d| d.as_object_mut()).unwrap();
    drain.insert("hostz".into(), 2.into());
    let cases = [
        ("an unknown field", typo),
        ("a duration without unit", variant("/duration", "90".into())),
        ("a fractional duration", variant("/duration", "1.5h".into())),
        ("an hour past 23", variant("/start", "24:00".into())),
        ("a one-digit hour", variant("/start", "7:10".into())),
        ("a moment that is neither", variant("/timeline/0/at", "10m".into())),
        ("an unknown signal", variant("/alerts/0/signal", "error_rate".into())),
        ("an unknown fault field", fault_typo),
        ("a negative rate", variant("/traffic/0/points/0/1", (-1).into())),
        ("a rate past the limit", variant("/traffic/0/points/0/1", 1e308.into())),
        ("too many hosts", variant("/pools/0/hosts", 200_000.into())),
        ("no hosts", variant("/pools/0/hosts", 0.into())),
        ("a negative error budget", variant("/slos/2/error_budget/max", (-1).into())),
        ("a sample of 0", variant("/sample", 0.into())),
        ("an object as an array", variant("/pools/0", serde_json::json!(["web", "http", 10, 4, "1s"]))),
    ];
    for (what, scenario) in cases {
        assert!(!errors(&validator, &scenario).is_empty(), "the schema accepts {what}");
        let bytes = serde_json::to_vec(&scenario).unwrap();
        assert!(Scenario::parse(Path::new("s.json"), &bytes).is_err(), "ebb accepts {what}");
    }
    for (pointer, good) in [("/start", "23:59:30"), ("/timeline/0/at", "+1h30m"), ("/duration", "1h")] {
        let scenario = variant(pointer, good.into());
        assert!(errors(&validator, &scenario).is_empty(), "the schema refuses {good} at {pointer}");
    }
}
