//! `--rules` and `--export-series` with the real Prometheus 2.42 (prometheus and promtool from
//! PATH, on loopback): the team's rule files decide the Bitbucket verdicts, a wrong rule gets the
//! verdict it deserves, the exported series load into promtool and match the report, and missing
//! Prometheus or a rule file promtool refuses end with exit 2 and say why.

use std::path::{Path, PathBuf};
use std::process::Command;

use ebb_harness::report::Report;
use ebb_harness::rules::server::Server;
use ebb_harness::rules::RuleFiles;
use ebb_harness::scenario::Scenario;
use ebb_harness::sim::{self, Budget, Extras, HostSettings};
use ebb_harness::Plugin;

use super::{at, ebb, pool, root, wasm};

fn temp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ebb-rules-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `deploy/prometheus/ebb-alerts.yaml` as the incident's team had it: the error pages, not the
/// capacity group.
fn errors_only(dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(root().join("deploy/prometheus/ebb-alerts.yaml")).unwrap();
    let (from, to) = (text.find("- name: ebb-errors").unwrap(), text.find("- name: ebb-filter").unwrap());
    let path = dir.join("errors-only.yaml");
    std::fs::write(&path, format!("groups:\n{}", &text[from..to])).unwrap();
    path
}

fn replay_with_rules(scenario: &Scenario, files: &[PathBuf]) -> Report {
    let plugin = Plugin::load(wasm()).expect("load ebb.wasm");
    let rules = RuleFiles::load(files).unwrap_or_else(|e| panic!("{e}"));
    let extras = Extras { series: false, rules: Some(rules) };
    let (report, _) =
        sim::replay_extras(scenario, &plugin, Budget::DEFAULT, HostSettings::default(), extras, &mut |_| {})
            .unwrap_or_else(|e| panic!("{}: {e}", scenario.name));
    report
}

fn load(name: &str) -> Scenario {
    Scenario::load(&root().join("scenarios").join(format!("{name}.json"))).unwrap_or_else(|e| panic!("{e}"))
}

fn fired(report: &Report, alert: &str, pool: &str) -> Vec<f64> {
    report.alerts.iter().filter(|a| a.name == alert && a.pool == pool).flat_map(|a| a.fired_s.clone()).collect()
}

#[test]
fn the_bitbucket_verdict_comes_from_the_teams_rule_files_evaluated_by_prometheus() {
    let dir = temp("bitbucket");
    let scenario = load("bitbucket-2021-02-05-prometheus");
    let burn = root().join("deploy/prometheus/slo-burn-rate.yaml");
    let alerts = root().join("deploy/prometheus/ebb-alerts.yaml");

    // As it happened: only the error pages. Web and API stay drained all night, the capacity
    // SLOs fail, and the runbooks of the missing rule are reported as never running.
    let before = replay_with_rules(&scenario, &[errors_only(&dir), burn.clone()]);
    assert_eq!(before.verdict, "fail", "{}", before.render(false));
    let web = pool(&before, "web");
    assert!(web.detected_s.is_none_or(|d| d >= at("07:00")), "{}", before.render(false));
    assert!(before.events.iter().any(|e| e.kind == "refused" && e.text.contains("EbbPoolBelowExpectedCapacity")));
    assert!(fired(&before, "EbbPoolBelowExpectedCapacity", "web").is_empty());

    // With the capacity rule (the scenario's own rule files): the runbook it triggers during
    // the replay restores every pool within minutes, and the SLOs pass.
    let after = replay_with_rules(&scenario, &[alerts, burn]);
    assert_eq!(after.verdict, "pass", "{}", after.render(false));
    for name in ["web", "api"] {
        let p = pool(&after, name);
        assert!(p.restored_s.unwrap() < at("01:00"), "{name}:\n{}", after.render(false));
    }
    // Side by side: the SRE-Workbook burn-rate pages stay silent all night while the capacity
    // alert fires, and the timeline shows which file each page came from.
    let capacity = fired(&after, "EbbPoolBelowExpectedCapacity", "web");
    assert_eq!(capacity.len(), 1, "{}", after.render(false));
    assert!(after.alerts.iter().all(|a| !a.name.starts_with("EnvoyErrorBudgetBurn")), "{:?}", after.alerts);
    assert!(after.slos.iter().any(|s| s.name.contains("EnvoyErrorBudgetBurnFast") && s.pass && s.measured == "silent"));
    let text = after.render(false);
    assert!(text.contains("EbbPoolBelowExpectedCapacity fires (ebb-alerts.yaml, on web)"), "{text}");

    // Prometheus's evaluation agrees with ebb's built-in rule of the same meaning (the shipped
    // capacity-alert scenario) within one evaluation interval (the groups' default 1m).
    let builtin = super::replay("bitbucket-2021-02-05-capacity-alert");
    for (name, rule) in [("web", "WebCapacityBelowExpected"), ("api", "APICapacityBelowExpected")] {
        let ours = pool(&builtin, name).detected_s.unwrap();
        let prometheus = pool(&after, name).detected_s.unwrap();
        assert!((ours - prometheus).abs() <= 60.0, "{name}: built-in {ours}s, Prometheus {prometheus}s");
        let first_builtin = builtin.alerts.iter().find(|a| a.name == rule).unwrap().fired_s[0];
        let first_prometheus = fired(&after, "EbbPoolBelowExpectedCapacity", name)[0];
        assert!((first_builtin - first_prometheus).abs() <= 60.0, "{name}: {first_builtin} vs {first_prometheus}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_capacity_rule_without_the_deploy_guard_pages_during_a_healthy_deploy() {
    let dir = temp("guard");
    // The healthy rolling deploy at peak, judged by the rule files instead of its own alerts.
    let text = std::fs::read_to_string(root().join("scenarios/healthy-deploy-at-peak.json")).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let o = v.as_object_mut().unwrap();
    o.remove("alerts");
    o.insert("rules".into(), serde_json::json!(["rules.yaml"]));
    o.insert(
        "slos".into(),
        serde_json::json!([{ "name": "no capacity page during a healthy deployment",
                             "no_page": { "alerts": ["EbbPoolBelowExpectedCapacity"] } }]),
    );
    let path = dir.join("healthy.json");
    std::fs::write(&path, serde_json::to_string_pretty(&v).unwrap()).unwrap();
    let shipped = std::fs::read_to_string(root().join("deploy/prometheus/ebb-alerts.yaml")).unwrap();
    let guard = " unless on(ebb_pool) ebb_pool_deploy_in_progress == 1";
    assert!(shipped.contains(guard));
    let verdict = |rules: &str| {
        std::fs::write(dir.join("rules.yaml"), rules).unwrap();
        let scenario = Scenario::load(&path).unwrap_or_else(|e| panic!("{e}"));
        // The scenario's own `rules` field, through the plain replay.
        let plugin = Plugin::load(wasm()).unwrap();
        sim::replay(&scenario, &plugin, &mut |_| {}).unwrap_or_else(|e| panic!("{e}"))
    };
    let right = verdict(&shipped);
    assert_eq!(right.verdict, "pass", "{}", right.render(false));
    let wrong = verdict(&shipped.replace(guard, ""));
    assert_eq!(wrong.verdict, "fail", "{}", wrong.render(false));
    let slo = &wrong.slos[0];
    assert!(slo.measured.starts_with("EbbPoolBelowExpectedCapacity x"), "{slo:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn exported_series_load_into_promtool_and_a_query_gives_the_reports_figures() {
    let dir = temp("export");
    let om = dir.join("series.om");
    let json = dir.join("report.json");
    let wasm = wasm().to_string_lossy().into_owned();
    let out = ebb(&[
        "replay",
        "scenarios/bitbucket-2021-02-05.json",
        "--plugin",
        &wasm,
        "--quiet",
        "--json",
        json.to_str().unwrap(),
        "--export-series",
        om.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    let report: Report = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let text = std::fs::read_to_string(&om).unwrap();
    assert!(text.ends_with("# EOF\n"));
    assert!(text.contains("# TYPE ebb_pool_available_hosts gauge\n"));
    let tsdb = dir.join("tsdb");
    let created = Command::new("promtool")
        .args(["tsdb", "create-blocks-from", "openmetrics"])
        .arg(&om)
        .arg(&tsdb)
        .output()
        .expect("promtool on PATH (apt-get install prometheus)");
    assert!(
        created.status.success(),
        "{}{}",
        String::from_utf8_lossy(&created.stdout),
        String::from_utf8_lossy(&created.stderr)
    );

    let mut server = Server::start_on(Some(&tsdb)).unwrap_or_else(|e| panic!("{e}"));
    // 2021-02-05T10:00:00Z, the last scrape.
    let end_ms = 1_612_483_200_000 + 10 * 3_600_000;
    let value = |server: &mut Server, expr: &str, t_ms: i64| -> f64 {
        let answer = server.query(expr, t_ms).unwrap();
        let result = answer["data"]["result"].as_array().unwrap_or_else(|| panic!("{expr}: {answer}"));
        assert_eq!(result.len(), 1, "{expr}: {answer}");
        result[0]["value"][1].as_str().unwrap().parse().unwrap()
    };
    let minutes = |pool: &str| report.series.iter().find(|s| s.pool == pool).unwrap();
    let (web, api) = (minutes("web"), minutes("api"));
    let sum = |v: &[u64]| v.iter().sum::<u64>() as f64;
    // Every web and API request and error went through the connection manager.
    let requests = sum(&web.requests) + sum(&api.requests);
    assert_eq!(value(&mut server, "sum(envoy_http_downstream_rq_xx)", end_ms), requests);
    let errors = sum(&web.errors) + sum(&api.errors);
    assert!(errors > 0.0);
    assert_eq!(value(&mut server, "sum(envoy_http_downstream_rq_xx{envoy_response_code_class=\"5\"})", end_ms), errors);
    assert_eq!(value(&mut server, "sum(envoy_http_downstream_rq_time_count)", end_ms), requests);
    // The filter's gauges: web below its expected hosts from the moment the report says.
    // The first scrape below expected with no deploy in progress (the loss itself began earlier,
    // when the aborted deploy drained the batch it left out).
    let lost = pool(&report, "web").episodes[0].unplanned_s;
    let t = |s: f64| 1_612_483_200_000 + (s * 1000.0) as i64;
    let expr = "ebb_pool_available_hosts{ebb_pool=\"web\"} < ebb_pool_expected_hosts unless on(ebb_pool) ebb_pool_deploy_in_progress == 1";
    assert_eq!(value(&mut server, &format!("count({expr})"), t(lost)), 1.0);
    let before = server.query(&format!("count({expr})"), t(lost - 15.0)).unwrap();
    assert_eq!(before["data"]["result"].as_array().map(Vec::len), Some(0), "{before}");
    drop(server);
    assert!(tsdb.is_dir(), "a TSDB given to the server is kept");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_rule_file_promtool_refuses_is_shown_with_its_message_and_exit_2() {
    let dir = temp("bad");
    let bad = dir.join("bad.yaml");
    std::fs::write(
        &bad,
        "groups:\n- name: g\n  rules:\n  - alert: A\n    expr: rate(ebb_pool_requests_total[5m] > 1\n",
    )
    .unwrap();
    let wasm = wasm().to_string_lossy().into_owned();
    let out = ebb(&["replay", "scenarios/blackhole-drain.json", "--plugin", &wasm, "--rules", bad.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(&format!("{}: promtool check rules failed", bad.display())), "{stderr}");
    // promtool's own words: the parse error of the expression.
    assert!(stderr.contains("parse error") || stderr.contains("unclosed"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn without_prometheus_the_replay_says_how_to_install_it_and_exits_2() {
    let wasm = wasm().to_string_lossy().into_owned();
    let out = Command::new(super::util::ebb_binary())
        .current_dir(root())
        .args(["replay", "scenarios/bitbucket-2021-02-05-prometheus.json", "--plugin", &wasm])
        .env("PATH", "/nonexistent")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("apt-get install prometheus"), "{stderr}");
    assert!(stderr.contains("promtool not found on PATH"), "{stderr}");
}

#[test]
fn prometheus_is_stopped_and_its_temporary_tsdb_removed() {
    let server = Server::start().unwrap_or_else(|e| panic!("{e}"));
    let (pid, dir) = (server.pid(), server.dir().to_path_buf());
    assert!(dir.join("data").is_dir());
    assert!(Path::new(&format!("/proc/{pid}")).exists());
    server.stop();
    assert!(!dir.exists(), "{} left behind", dir.display());
    // Reaped, not a zombie: its /proc entry is gone.
    assert!(!Path::new(&format!("/proc/{pid}")).exists(), "prometheus {pid} still there");
}

#[test]
fn a_scenario_naming_alerts_no_rule_file_defines_says_so_in_its_timeline() {
    let scenario = load("healthy-deploy-at-peak");
    let rules = RuleFiles::load(&[root().join("deploy/prometheus/ebb-alerts.yaml")]).unwrap();
    let plugin = Plugin::load(wasm()).unwrap();
    let extras = Extras { series: true, rules: Some(rules) };
    let (report, series) =
        sim::replay_extras(&scenario, &plugin, Budget::DEFAULT, HostSettings::default(), extras, &mut |_| {}).unwrap();
    assert_eq!(series.unwrap().scrapes(), 240, "an hour of 15s scrapes");
    let refused: Vec<&str> = report.events.iter().filter(|e| e.kind == "refused").map(|e| e.text.as_str()).collect();
    assert!(
        refused
            .iter()
            .any(|t| t.contains("slos[0].no_page.alerts[0]: no rule file defines alert WebCapacityBelowExpected")),
        "{refused:?}"
    );
}
