//! Scenario replays through the real ebb.wasm: the shipped scenarios give the verdicts they
//! state, the seed incident's timeline comes out of the model, replays are deterministic, and
//! bad scenarios are refused with file, line and path before anything runs.

#![allow(clippy::unwrap_used)] // a failed unwrap in a test helper is a test failure with its message

use std::path::{Path, PathBuf};
use std::process::Command;

use ebb_harness::report::Report;
use ebb_harness::scenario::Scenario;
use ebb_harness::sim;
use ebb_harness::Plugin;

#[path = "../all/util.rs"]
mod util;

mod expiry;
mod formatting;
mod hardening;
mod incidents;
mod judging;
mod model;
mod properties;
mod recovery;
mod reports;
mod rolls;
mod rules;
mod schema_docs;
mod traps;
mod zones;

fn root() -> PathBuf {
    util::workspace()
}

fn wasm() -> PathBuf {
    util::ebb_wasm()
}

fn replay(name: &str) -> Report {
    let path = root().join("scenarios").join(format!("{name}.json"));
    let scenario = Scenario::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let plugin = Plugin::load(wasm()).expect("load ebb.wasm");
    sim::replay(&scenario, &plugin, &mut |_| {}).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn at(clock: &str) -> f64 {
    let (h, m) = clock.split_once(':').unwrap();
    (h.parse::<f64>().unwrap() * 60.0 + m.parse::<f64>().unwrap()) * 60.0
}

fn pool<'r>(report: &'r Report, name: &str) -> &'r ebb_harness::report::PoolResult {
    report.pools.iter().find(|p| p.name == name).unwrap()
}

#[test]
fn every_shipped_scenario_gives_the_verdict_it_states() {
    let mut checked = 0;
    for entry in std::fs::read_dir(root().join("scenarios")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        let report = replay(&name);
        let expected = report.expected.clone().unwrap_or_else(|| panic!("{name} states no expected verdict"));
        assert_eq!(report.verdict, expected, "{name}:\n{}", report.render(false));
        assert_eq!(report.requests.filter_failures, 0, "{name}: the filter failed:\n{}", report.render(false));
        assert!(
            !report.events.iter().any(|e| e.kind == "refused"),
            "{name}: a command was refused:\n{}",
            report.render(false)
        );
        checked += 1;
    }
    assert!(checked >= 6, "expected at least six shipped scenarios, found {checked}");
}

#[test]
fn the_seed_incident_unfolds_from_the_model() {
    let r = replay("bitbucket-2021-02-05");
    assert_eq!(r.verdict, "fail");
    let ssh = pool(&r, "ssh");
    let web = pool(&r, "web");
    let api = pool(&r, "api");
    let ssh_alert = r.alerts.iter().find(|a| a.name == "SSHErrorRate").unwrap();
    let first = ssh_alert.fired_s[0];
    assert!(first > at("00:10") && first <= at("00:14"), "SSH pages within minutes of 00:10: {first}");
    let restored = ssh.restored_s.expect("SSH restored");
    assert!((at("00:18")..=at("00:25")).contains(&restored), "SSH restored about 11 minutes in: {restored}");
    for p in [web, api] {
        let lost = p.capacity_lost_s.expect("web and api left drained");
        assert!(lost < at("00:20"), "{}: drained by the aborted deploy: {lost}", p.name);
        let impact = p.impact_start_s.expect("customers impaired once traffic rises");
        assert!((at("06:40")..=at("07:40")).contains(&impact), "{}: impact from about 07:10: {impact}", p.name);
        let detected = p.detected_s.expect("customer-impact alerts fire at last");
        assert!(detected > at("08:00"), "{}: detected only by customer impact: {detected}", p.name);
        let back = p.restored_s.expect("restored at the end");
        assert!((at("08:50")..=at("09:40")).contains(&back), "{}: restored around 09:10: {back}", p.name);
        assert!(p.min_capacity_ratio < 0.8);
    }
    let failed: Vec<&str> = r.slos.iter().filter(|s| !s.pass).map(|s| s.name.as_str()).collect();
    assert!(failed.contains(&"web: time to detect capacity loss"), "{failed:?}");
    assert!(failed.contains(&"web: time to restore capacity"), "{failed:?}");
    assert!(r.requests.simulated > 500_000, "every request goes through the .wasm: {}", r.requests.simulated);
}

#[test]
fn the_capacity_alert_catches_the_leftover_drain_within_minutes() {
    let r = replay("bitbucket-2021-02-05-capacity-alert");
    for name in ["web", "api"] {
        let p = pool(&r, name);
        // From 00:12, when the aborted deploy drained the batch it left out: the alert needs 5m
        // with no deploy in progress, which starts at 00:14.
        let ttd = p.detected_s.unwrap() - p.capacity_lost_s.unwrap();
        assert!(ttd <= 8.0 * 60.0, "{name}: {ttd}");
        assert!(p.impact_start_s.is_none(), "{name}: restored before traffic rose");
    }
}

#[test]
fn a_replay_is_byte_for_byte_deterministic() {
    let a = serde_json::to_vec(&replay("blackhole-drain")).unwrap();
    let b = serde_json::to_vec(&replay("blackhole-drain")).unwrap();
    assert!(a == b, "two replays of the same file and seed differ");
}

fn ebb(args: &[&str]) -> std::process::Output {
    Command::new(util::ebb_binary()).current_dir(root()).args(args).env("NO_COLOR", "1").output().unwrap()
}

#[test]
fn the_cli_exit_status_and_json_report_are_a_contract() {
    let dir = std::env::temp_dir().join(format!("ebb-replay-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join("report.json");
    let wasm = wasm().to_string_lossy().into_owned();
    let out = ebb(&["replay", "scenarios/blackhole-drain.json", "--plugin", &wasm, "--json", json.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(v["verdict"], "pass");
    for slo in v["slos"].as_array().unwrap() {
        for field in ["name", "pass", "target", "measured"] {
            assert!(!slo[field].is_null(), "slo without {field}: {slo}");
        }
    }
    let alert = &v["alerts"][0];
    assert!(alert["fired_s"].is_array() && alert["resolved_s"].is_array());
    let pool = &v["pools"][0];
    for field in ["capacity_lost_s", "detected_s", "restored_s", "impact_start_s", "impact_end_s", "min_capacity_ratio"]
    {
        assert!(pool.get(field).is_some(), "pool without {field}");
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("verdict: PASS"), "{stdout}");

    let out = ebb(&["replay", "scenarios/bitbucket-2021-02-05.json", "--plugin", &wasm, "--quiet"]);
    assert_eq!(out.status.code(), Some(1), "a missed SLO exits 1");

    let bad = dir.join("bad.json");
    std::fs::write(&bad, "{\n  \"version\": 1,\n  \"name\": \"x\",\n  \"duraton\": \"1h\"\n}\n").unwrap();
    let out = ebb(&["replay", bad.to_str().unwrap(), "--plugin", &wasm]);
    assert_eq!(out.status.code(), Some(2), "invalid input exits 2");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.json:4:") && err.contains("duraton") && err.contains("duration"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn check_refuses_meaningless_scenarios_before_running_them() {
    let base = std::fs::read_to_string(root().join("scenarios/blackhole-drain.json")).unwrap();
    let cases = [
        (base.replace("\"restore\": \"web\"", "\"restore\": \"wbe\""), "recovery[0].restore", "no pool named \"wbe\""),
        (base.replace("\"ttl\": \"2h\"", "\"ttl\": \"48h\""), "timeline[0].command", "max_ttl"),
        (base.replace("\"hosts\": 3,", "\"hosts\": 9,"), "timeline[0].command", "max_drain_fraction"),
        (base.replace("\"on\": \"WebErrorRate\"", "\"on\": \"Nope\""), "recovery[0].on", "no alert named"),
        (base.replace("\"at\": \"02:10\"", "\"at\": \"05:10\""), "timeline[0].at", "after the end"),
        (base.replace("\"for\": \"2m\"", "\"for\": \"2 minutes\""), "alerts[0].for", "duration"),
    ];
    for (text, path, message) in cases {
        let err = Scenario::parse(Path::new("s.json"), text.as_bytes()).expect_err(path).to_string();
        assert!(err.contains(path) && err.contains(message), "want {path} / {message}, got: {err}");
    }
    let out = ebb(&["check", "scenarios/bitbucket-2021-02-05.json", "scenarios/blackhole-drain.json"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn below_the_panic_threshold_drained_hosts_get_traffic_again_and_fail_it() {
    let scenario = |threshold: f64| {
        format!(
            r#"{{"version": 1, "name": "panic", "duration": "20m", "seed": 3,
              "filter": {{"limits": {{"max_ttl": "1h", "max_drain_fraction": 0.8}}}},
              "pools": [{{"name": "web", "hosts": 10, "capacity_per_host": 4, "service_time": "1s", "panic_threshold": {threshold}}}],
              "traffic": [{{"pool": "web", "points": [["+0s", 5]]}}],
              "timeline": [{{"at": "+5m", "command": {{"ttl": "1h", "drain": {{"pool": "web", "hosts": 6}}}}}}],
              "slos": [{{"error_ratio": {{"pool": "web", "max": 0.01}}}}]}}"#
        )
    };
    let plugin = Plugin::load(wasm()).unwrap();
    let run = |threshold: f64| {
        let s = Scenario::parse(Path::new("panic.json"), scenario(threshold).as_bytes()).unwrap();
        sim::replay(&s, &plugin, &mut |_| {}).unwrap()
    };
    let calm = run(0.0);
    assert_eq!(calm.verdict, "pass", "4 hosts carry 5 rps; no panic mode:\n{}", calm.render(false));
    let panic = run(0.5);
    let web = pool(&panic, "web");
    let ratio = web.errors as f64 / web.requests as f64;
    // 15 of 20 minutes at 40% of hosts: about 60% of those requests hit drained hosts.
    assert!((0.35..0.55).contains(&ratio), "error ratio {ratio}:\n{}", panic.render(false));
}

#[test]
fn deploy_tooling_that_retries_after_an_abort_still_leaves_the_failed_batch_behind() {
    let text = std::fs::read_to_string(root().join("scenarios/healthy-deploy-at-peak.json")).unwrap();
    let text = text.replace(
        "\"batch_interval\": \"3m\"",
        "\"batch_interval\": \"3m\", \"fail_at_batch\": 2, \"retry_after\": \"2m\"",
    );
    assert!(text.contains("retry_after"), "the scenario's deploy changed shape");
    let scenario = Scenario::parse(Path::new("retry.json"), text.as_bytes()).unwrap();
    let plugin = Plugin::load(wasm()).unwrap();
    let r = sim::replay(&scenario, &plugin, &mut |_| {}).unwrap();
    let retry = r.events.iter().find(|e| e.kind == "deploy" && e.text.contains("(retry)")).expect("a retry");
    // Aborted at the end of batch 2 (13:21), retried two minutes later.
    // The replay starts at 13:00: deploy at 13:15, batch 2 ends at 13:21, retry at 13:23.
    assert_eq!(retry.t_s, at("00:23"), "{}", r.render(false));
    assert!(!r.events.iter().any(|e| e.kind == "refused"), "{}", r.render(false));
    let web = pool(&r, "web");
    assert!(web.capacity_lost_s.is_some(), "the retry completes but the aborted batch stays drained");
    let alert = r.alerts.iter().find(|a| a.name == "WebCapacityBelowExpected").unwrap();
    assert!(!alert.fired_s.is_empty(), "and the capacity alert sees it once no deploy is in progress");
}

/// `ebb replay` from any folder: the filter from `EBB_PLUGIN` when `--plugin` is not given, and
/// without either, a clear error that says where it looked. `ebb check` counts in words ("1 pool").
#[test]
fn replay_finds_its_filter_from_any_folder_and_check_counts_in_words() {
    let dir = std::env::temp_dir().join(format!("ebb-anywhere-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let scenario = root().join("scenarios/blackhole-drain.json");
    let run = |env: &[(&str, &str)], args: &[&str]| {
        let mut cmd = Command::new(util::ebb_binary());
        cmd.current_dir(&dir).args(args).env("NO_COLOR", "1").env_remove("EBB_PLUGIN");
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    };
    let wasm = wasm().to_string_lossy().into_owned();
    let s = scenario.to_string_lossy().into_owned();
    let out = run(&[("EBB_PLUGIN", &wasm)], &["replay", &s, "--quiet"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let out = run(&[("EBB_PLUGIN", "/nonexistent/ebb.wasm")], &["replay", &s, "--quiet"]);
    assert_ne!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/ebb.wasm"), "names the file it tried");
    let out = run(&[], &["check", &s]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("(blackhole-drain, 1 pool, "), "{text}");
    let _ = std::fs::remove_dir_all(&dir);
}
