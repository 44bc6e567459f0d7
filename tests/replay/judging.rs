//! Judging (issue 13, points 5-9): every capacity loss judged, runbooks that act on what is true,
//! impact spans that noise does not stretch, error budgets over a period, and when a loss begins.

use ebb_harness::report::{self, Report};
use ebb_harness::scenario::Scenario;
use ebb_harness::sim;
use ebb_harness::sim::stats::LATENCY_BOUNDS_MS;
use ebb_harness::Plugin;

use super::{at, pool, replay, wasm};

/// A one-pool scenario (web: 10 hosts x 4, 1s, 8 requests a second from 00:00) with these
/// fields added (`, "timeline": [...]` and the like) and these SLOs.
fn scenario(duration: &str, fields: &str, slos: &str) -> String {
    format!(
        r#"{{"version": 1, "name": "judging", "duration": "{duration}", "sample": 5,
            "pools": [{{"name": "web", "hosts": 10, "capacity_per_host": 4, "service_time": "1s"}}],
            "traffic": [{{"pool": "web", "points": [["00:00", 8]]}}]{fields},
            "slos": {slos}}}"#
    )
}

fn run(text: &str) -> Report {
    let scenario = Scenario::parse(std::path::Path::new("judging.json"), text.as_bytes())
        .unwrap_or_else(|e| panic!("{e}\n{text}"));
    let plugin = Plugin::load(wasm()).expect("load ebb.wasm");
    sim::replay(&scenario, &plugin, &mut |_| {}).unwrap_or_else(|e| panic!("{e}"))
}

fn drain(at: &str, id: &str) -> String {
    format!(r#"{{"at": "{at}", "command": {{"id": "{id}", "ttl": "12h", "drain": {{"pool": "web", "hosts": 3}}}}}}"#)
}

fn texts<'r>(r: &'r Report, kind: &str) -> Vec<&'r str> {
    r.events.iter().filter(|e| e.kind == kind).map(|e| e.text.as_str()).collect()
}

const CAPACITY_ALERT: &str =
    r#"{"name": "WebCapacity", "pool": "web", "signal": "available_ratio", "below": 1.0, "for": "1m"}"#;

#[test]
fn a_second_loss_in_the_same_pool_is_judged_and_the_worst_decides() {
    // Lost at 00:10 and restored at 00:20; lost again at 01:00 and never restored.
    let fields = format!(
        r#", "timeline": [{}, {{"at": "00:20", "restore": "web"}}, {}], "alerts": [{CAPACITY_ALERT}]"#,
        drain("00:10", "first"),
        drain("01:00", "second")
    );
    let slos =
        r#"[{"time_to_detect": {"pool": "web", "max": "5m"}}, {"time_to_restore": {"pool": "web", "max": "30m"}}]"#;
    let r = run(&scenario("2h", &fields, slos));
    let web = pool(&r, "web");
    assert_eq!(web.episodes.len(), 2, "{}", r.render(false));
    assert!((at("00:10")..=at("00:11")).contains(&web.episodes[0].lost_s), "{:?}", web.episodes);
    assert!(web.episodes[0].restored_s.is_some());
    assert!((at("01:00")..=at("01:01")).contains(&web.episodes[1].lost_s), "{:?}", web.episodes);
    assert_eq!(web.episodes[1].restored_s, None);
    assert!(web.episodes[1].detected_s.is_some(), "the capacity alert pages the second loss too");
    assert_eq!(texts(&r, "capacity_lost").len(), 2, "{}", r.render(false));
    let restore = r.slos.iter().find(|s| s.name == "web: time to restore capacity").unwrap();
    assert!(!restore.pass, "the second loss is never restored: {restore:?}");
    assert!(restore.measured.starts_with("2 losses: ") && restore.measured.contains("never (missed)"), "{restore:?}");
    let detect = r.slos.iter().find(|s| s.name == "web: time to detect capacity loss").unwrap();
    assert!(detect.pass, "{detect:?}");
    assert_eq!(r.verdict, "fail");
    // Every rendering lists both.
    let junit = report::junit(&r, 1.0);
    assert!(junit.contains(r#"name="capacity_loss.web.1""#) && junit.contains(r#"name="capacity_loss.web.2""#));
    let html = report::html(&r);
    assert_eq!(html.matches(r#"<tr class="episode">"#).count(), 2);
    let json: serde_json::Value = serde_json::to_value(&r).unwrap();
    assert_eq!(json["pools"][0]["episodes"].as_array().map(Vec::len), Some(2));
}

#[test]
fn a_runbook_whose_alert_resolved_does_not_act() {
    // A brief blip of errors at 00:05 pages; its runbook is due an hour later, when the alert
    // has long resolved: it must not erase the drain at 00:30 it knows nothing of.
    let fields = format!(
        r#", "timeline": [{{"at": "00:05", "command": {{"id": "blip", "ttl": "1m", "abort": {{"pool": "web", "status": 503}}}}}}, {}],
            "alerts": [{{"name": "WebErrors", "pool": "web", "signal": "error_ratio", "window": "1m", "above": 0.05}}],
            "recovery": [{{"on": "WebErrors", "after": "1h", "restore": "web"}}]"#,
        drain("00:30", "drain")
    );
    let slos = r#"[{"time_to_restore": {"pool": "web", "max": "2h"}}]"#;
    let r = run(&scenario("2h", &fields, slos));
    assert!(texts(&r, "recovery").is_empty(), "{}", r.render(false));
    assert!(
        texts(&r, "runbook").iter().any(|t| t.contains("not run, WebErrors is no longer firing")),
        "{}",
        r.render(false)
    );
    assert_eq!(pool(&r, "web").restored_s, None);
    // `only_if: always` is the old behaviour, kept for whoever wants it.
    let always = fields.replace(r#""restore": "web"}"#, r#""restore": "web", "only_if": "always"}"#);
    let r = run(&scenario("2h", &always, slos));
    assert_eq!(texts(&r, "recovery").len(), 1);
}

#[test]
fn a_runbook_triggered_by_a_pool_condition_with_failed_attempts() {
    // No alert at all: the runbook watches the pool. Two attempts fail, five minutes apart.
    let fields = format!(
        r#", "timeline": [{}],
            "recovery": [{{"when": {{"pool": "web", "below": 1.0, "for": "5m"}}, "after": "5m", "restore": "web",
                           "fails": 2, "retry_every": "5m", "only_if": "below_expected"}}]"#,
        drain("00:10", "drain")
    );
    let slos = r#"[{"time_to_restore": {"pool": "web", "max": "1h"}}]"#;
    let r = run(&scenario("2h", &fields, slos));
    let web = pool(&r, "web");
    let restored = web.restored_s.expect("restored by the pool-triggered runbook");
    // Condition from 00:10, holds 5m (00:15), acts 5m later (00:20), fails twice: 00:30.
    assert!((at("00:30")..=at("00:31")).contains(&restored), "{restored}\n{}", r.render(false));
    let runbook = texts(&r, "runbook");
    assert!(runbook.iter().any(|t| t.contains("attempt 1 of 3 fails")), "{runbook:?}");
    assert!(runbook.iter().any(|t| t.contains("attempt 2 of 3 fails")), "{runbook:?}");
    assert_eq!(texts(&r, "recovery").len(), 1);
    assert!(r.alerts.is_empty(), "a pool condition is no page");
    assert_eq!(web.detected_s, None);
}

#[test]
fn check_wants_one_trigger_per_runbook_and_sane_attempts() {
    let bad = scenario(
        "1h",
        r#", "alerts": [{"name": "A", "pool": "web", "signal": "error_ratio", "above": 0.1}],
            "recovery": [{"on": "A", "when": {"pool": "web"}, "restore": "web"},
                         {"restore": "web"},
                         {"when": {"pool": "wbe", "below": 2}, "restore": "web", "fails": 101, "retry_every": "8d"}]"#,
        r#"[{"error_ratio": {"pool": "web", "max": 0.1}}]"#,
    );
    let e = Scenario::parse(std::path::Path::new("bad.json"), bad.as_bytes()).unwrap_err().to_string();
    for part in [
        "recovery[0]: give exactly one trigger",
        "recovery[1]: give exactly one trigger",
        "recovery[2].when.pool: no pool named \"wbe\"",
        "recovery[2].when.below: a share of expected hosts",
        "recovery[2].fails: at most 100",
        "recovery[2].retry_every: must be between",
    ] {
        assert!(e.contains(part), "{part}:\n{e}");
    }
    assert!(e.contains("bad.json:4:"), "positions: {e}");
}

#[test]
fn one_noisy_window_is_no_impact_and_two_impacts_are_two_spans() {
    // 30 seconds of errors at 00:20 (noise), then half the requests fail 05:00-05:20.
    let fields = r#", "timeline": [
        {"at": "00:20", "command": {"id": "noise", "ttl": "30s", "abort": {"pool": "web", "status": 503}}},
        {"at": "05:00", "command": {"id": "real", "ttl": "20m", "abort": {"pool": "web", "status": 503, "percent": 50}}}]"#;
    let r = run(&scenario("6h", fields, r#"[{"error_ratio": {"pool": "web", "max": 1.0}}]"#));
    let web = pool(&r, "web");
    assert_eq!(web.impacts.len(), 1, "{:?}\n{}", web.impacts, r.render(false));
    let (start, end) = (web.impact_start_s.unwrap(), web.impact_end_s.unwrap());
    assert!((at("05:00")..=at("05:02")).contains(&start), "{start}");
    assert!((at("05:18")..=at("05:21")).contains(&end), "the impact ends with the errors, not hours later: {end}");
    // Longer noise, lasting past `impact.for`, is an impact of its own: two spans, not one over hours.
    let longer = fields.replace(r#""ttl": "30s""#, r#""ttl": "4m""#);
    let r = run(&scenario("6h", &longer, r#"[{"error_ratio": {"pool": "web", "max": 1.0}}]"#));
    let spans = &pool(&r, "web").impacts;
    assert_eq!(spans.len(), 2, "{spans:?}");
    assert!(spans[0].end_s < at("00:30") && spans[1].start_s >= at("05:00"), "{spans:?}");
}

#[test]
fn an_error_budget_over_thirty_days_is_spent_in_part_by_the_replayed_window() {
    let fields = r#", "timeline": [{"at": "00:10", "command": {"id": "errors", "ttl": "10m", "abort": {"pool": "web", "status": 503, "percent": 10}}}]"#;
    let slos = r#"[{"error_budget": {"pool": "web", "objective": 0.999, "max": 0.5, "period": "30d"}},
                   {"error_budget": {"pool": "web", "objective": 0.999, "max": 0.5}}]"#;
    let r = run(&scenario("1h", fields, slos));
    let web = pool(&r, "web");
    // 30 days at the window's rate: 720 times its requests.
    let share = web.errors as f64 / (web.requests as f64 * 720.0 * (1.0 - 0.999));
    let period = &r.slos[0];
    assert_eq!(period.target, "<= 50.0% of the 30d budget");
    assert_eq!(period.measured, format!("{} of the 30d budget", ebb_harness::slo::percent(share)));
    assert!(period.pass, "{period:?}");
    // The window's own budget is spent many times over.
    assert!(!r.slos[1].pass, "{:?}", r.slos[1]);
    let bad =
        scenario("1h", "", r#"[{"error_budget": {"pool": "web", "objective": 0.999, "max": 0.5, "period": "400d"}}]"#);
    let e = Scenario::parse(std::path::Path::new("b.json"), bad.as_bytes()).unwrap_err().to_string();
    assert!(e.contains("slos[0].error_budget.period: must be between 1s and 366d"), "{e}");
}

#[test]
fn hosts_an_aborted_deploy_left_drained_are_lost_from_when_it_drained_them() {
    let r = replay("bitbucket-2021-02-05");
    // The deploy at 00:10 (3 batches, 2m apart) fails at batch 2, drained at 00:12 and left out.
    // Web and API share deploy 1; SSH has its own rollout (deploy 2), which takes its hosts down
    // under the balancer as it goes.
    for (name, deploy) in [("ssh", "deploy 2"), ("web", "deploy 1"), ("api", "deploy 1")] {
        let p = pool(&r, name);
        assert_eq!(p.capacity_lost_s, Some(at("00:12")), "{name}\n{}", r.render(false));
        assert_eq!(p.episodes[0].left_by.as_deref(), Some(deploy), "{name}");
    }
    let ssh = &pool(&r, "ssh").episodes[0];
    let paged = ssh.detected_s.expect("SSH pages");
    // The incident report: SSH down from 00:10, detected within two minutes. The page comes
    // during the rollout, before the batch it leaves out is drained, and says so (never "0s").
    assert!((at("00:10")..=at("00:12")).contains(&paged), "{paged}");
    assert!(ssh.paged_early());
    assert_eq!(ssh.detect_words(), "paged before the deploy ended");
    // Restored about 00:21, as in the incident: 9 minutes after the loss began.
    let ttr = ssh.time_to_restore().unwrap();
    assert!((480.0..=720.0).contains(&ttr), "{ttr}");
}

#[test]
fn the_chart_draws_capacity_steps_when_they_happened_and_latency_between_bounds() {
    let r = replay("bitbucket-2021-02-05");
    let web = r.series.iter().find(|s| s.pool == "web").unwrap();
    let first_drop = web.capacity_steps.iter().find(|(_, ratio)| *ratio < 1.0).expect("a drop").0;
    // The deploy starts at 00:10: the step is drawn then (the scrape that saw it), not at 00:09.
    assert!((at("00:10")..=at("00:10") + 15.0).contains(&first_drop), "{first_drop}");
    // p90 from finer buckets, interpolated: not stuck on the bounds of the histogram.
    let off_bound = web
        .p90_s
        .iter()
        .filter(|&&p| p > 0.0 && !LATENCY_BOUNDS_MS.iter().any(|&b| (b as f64 / 1000.0 - p).abs() < 1e-9))
        .count();
    assert!(off_bound > web.p90_s.len() / 2, "{off_bound} of {}", web.p90_s.len());
}
