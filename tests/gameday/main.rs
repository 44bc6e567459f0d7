//! `ebb gameday` end to end, everything real on loopback: `ebb proxy deploy/envoy/envoy.yaml`
//! (ports overridden, key rendered) in front of small upstreams, Prometheus scraping its admin
//! endpoint with the shipped alert rules (faster `for:`), Alertmanager routing the capacity alert
//! to a webhook that runs scripts/recover-pool.sh, and `ebb gameday` playing
//! scenarios/gameday-aborted-deploy.json at --time-scale 60. Every wait is bounded; every process
//! started is stopped when its test ends.

// These tests wait on real processes and sockets, so they read the wall clock to bound each wait.
#![allow(clippy::disallowed_types)]

#[path = "../all/util.rs"]
mod util;

// The `ebb proxy` tests' helpers: upstreams, the proxy as a process, ebb-ctl.
#[allow(dead_code)]
#[path = "../proxy/support.rs"]
mod support;

mod stack;
mod webhook;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ebb_chart::live::{self, LiveEvent};
use ebb_harness::gameday::target::Target;
use ebb_harness::gameday::{self, Ending, LiveSink, Options};
use ebb_harness::scenario::Scenario;
use stack::{alertmanager, gameday, key_file, path, prometheus, scenario, token_file, Gameday, TempDir, Webhook};
use support::{ctl, free_port, Proxy, Upstream};

/// The staging bootstrap as a deployment renders it: the placeholder key replaced.
pub const KEY: &str = "gameday-test-key-5e2b8c1d0f9a7e6d5c4b3a2918070605";

/// The shipped game day: 20 scenario minutes, 20 seconds at 60x.
const GAMEDAY: &str = "gameday-aborted-deploy";

fn staging() -> (Proxy, [Upstream; 3]) {
    let upstreams = [Upstream::http("web"), Upstream::http("api"), Upstream::echo()];
    let proxy = Proxy::staging(&upstreams[0], &upstreams[1], Some(&upstreams[2]), |y| y);
    (proxy, upstreams)
}

fn target(proxy: &Proxy) -> String {
    format!("--target=edge=http://{}", proxy.control())
}

fn metrics(proxy: &Proxy) -> String {
    format!("--metrics=http://{}/stats/prometheus", proxy.admin())
}

/// The faults on the proxy, from its state (through scripts/ebb-ctl, as an operator would look).
fn faults(proxy: &Proxy) -> Vec<String> {
    let state: serde_json::Value = serde_json::from_str(&ctl(proxy, &["state"])).expect("state JSON");
    state["faults"].as_array().expect("faults").iter().map(|f| f["id"].as_str().unwrap_or("").to_string()).collect()
}

/// The run id a game day printed at its start (`run gd1a2b3c: …`).
fn run_id(stderr: &str) -> String {
    let at = stderr.find(": run gd").unwrap_or_else(|| panic!("no run id printed:\n{stderr}"));
    stderr[at + 6..at + 14].to_string()
}

fn report(file: &std::path::Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(file).expect("report written")).expect("report JSON")
}

fn pool<'r>(report: &'r serde_json::Value, name: &str) -> &'r serde_json::Value {
    report["pools"].as_array().expect("pools").iter().find(|p| p["name"] == name).expect("pool in the report")
}

fn text(out: &std::process::Output) -> String {
    format!(
        "--- stdout\n{}\n--- stderr\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The whole staging loop with the team's recovery: detected by Alertmanager, restored by the
/// webhook's script, every SLO met, nothing left behind.
#[test]
fn the_staging_loop_detects_and_restores_the_drained_pools_and_the_game_day_passes() {
    let (proxy, _upstreams) = staging();
    let dir = TempDir::new("pass");
    let hook = Webhook::recover_pool(proxy.control(), &dir);
    let am = alertmanager(Some((hook.addr, &token_file(&dir))));
    let prometheus = prometheus(proxy.admin(), am.addr);
    let (key, json) = (key_file(&dir), dir.0.join("report.json"));
    let (junit, html) = (dir.0.join("report.junit.xml"), dir.0.join("report.html"));
    let out = gameday(
        &[
            &scenario(GAMEDAY),
            &target(&proxy),
            &metrics(&proxy),
            &format!("--alertmanager={}", am.url()),
            "--time-scale=60",
            &format!("--key-file={}", path(&key)),
            &format!("--json={}", path(&json)),
            &format!("--junit={}", path(&junit)),
            &format!("--html={}", path(&html)),
        ],
        &[],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\nebb webhook: {}\nPrometheus' alerts: {}\nAlertmanager's: {}\n{}",
        text(&out),
        hook.log(),
        support::get(prometheus.addr, "/api/v1/alerts"),
        support::get(am.addr, "/api/v2/alerts"),
        am.log()
    );
    let r = report(&json);
    assert_eq!(r["verdict"], "pass");
    assert_eq!(r["live"]["ended"], "completed");
    assert_eq!(r["live"]["clean"], true);
    for name in ["web", "api", "ssh"] {
        let p = pool(&r, name);
        let (lost, detected, restored) =
            (p["capacity_lost_s"].as_f64(), p["detected_s"].as_f64(), p["restored_s"].as_f64());
        // The deploy starts at 1m, drains batch 2 at 3m and aborts at 5m (2 batches of 2m),
        // leaving it out: the loss begins at 3m and is seen, with no deploy in progress, at 5m.
        let lost = lost.unwrap_or_else(|| panic!("{name}: loss seen\n{}", text(&out)));
        assert_eq!(lost, 180.0, "{name}: lost at {lost}");
        let unplanned = p["episodes"][0]["unplanned_s"].as_f64().unwrap_or_default();
        assert!((290.0..=330.0).contains(&unplanned), "{name}: seen at {unplanned}");
        let detected = detected.unwrap_or_else(|| panic!("{name}: detected\n{}", text(&out)));
        let restored = restored.unwrap_or_else(|| panic!("{name}: restored\n{}", text(&out)));
        assert!(lost < detected && detected < restored, "{name}: {lost} < {detected} < {restored}");
    }
    let alerts = r["alerts"].as_array().expect("alerts");
    assert!(alerts.iter().any(|a| a["name"] == "EbbPoolBelowExpectedCapacity" && a["pool"] == "web"), "{alerts:?}");
    // Alertmanager reached `ebb webhook` with its bearer token; each pool's notification ran
    // recover-pool.sh once, which restored it.
    let log = hook.log();
    for pool in ["web", "api", "ssh"] {
        let restored = format!("stderr: recover-pool: pool {pool} restored");
        let line = log.lines().find(|l| l.ends_with(&restored)).unwrap_or_else(|| panic!("{restored}:\n{log}"));
        assert!(line.starts_with("ebb webhook: alertname=EbbPoolBelowExpectedCapacity, ebb_pool="), "{line}");
    }
    assert!(log.contains("scripts/recover-pool.sh --verbose: exit 0 after"), "{log}");
    assert!(!log.contains("refused a request"), "{log}");
    assert!(faults(&proxy).is_empty(), "nothing left: {:?}", faults(&proxy));
    // EBB_SHOW=1 prints the game day's output (docs/staging.md quotes a run).
    if std::env::var_os("EBB_SHOW").is_some() {
        eprintln!("{}", text(&out));
    }
    let xml = std::fs::read_to_string(&junit).expect("junit");
    assert!(xml.contains("failures=\"0\""), "{xml}");
    let page = std::fs::read_to_string(&html).expect("html");
    assert!(page.contains("— PASS — ebb gameday</title>") && page.contains("<dt>played live</dt>"), "{page}");
    assert!(!page.contains(" simulated, each through"), "a game day's requests are real");
}

/// The same loop with nothing behind the receiver: the alert fires, nobody restores, the
/// restore SLOs fail (exit 1), and the game day's own cleanup still leaves nothing behind.
#[test]
fn without_the_recovery_receiver_the_capacity_slo_fails() {
    let (proxy, _upstreams) = staging();
    let am = alertmanager(None);
    let _prometheus = prometheus(proxy.admin(), am.addr);
    let dir = TempDir::new("fail");
    let json = dir.0.join("report.json");
    let out = gameday(
        &[
            &scenario(GAMEDAY),
            &target(&proxy),
            &format!("--alertmanager={}", am.url()),
            "--time-scale=60",
            &format!("--json={}", path(&json)),
        ],
        &[("EBB_KEY", KEY)],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let r = report(&json);
    assert_eq!(r["verdict"], "fail");
    let web = pool(&r, "web");
    assert!(web["detected_s"].as_f64().is_some(), "Alertmanager saw the alert: {web}");
    assert!(web["restored_s"].is_null(), "nobody restored web: {web}");
    let slo =
        r["slos"].as_array().expect("slos").iter().find(|s| s["name"] == "web: time to restore capacity").cloned();
    assert_eq!(slo.map(|s| (s["pass"].clone(), s["measured"].clone())), Some((false.into(), "never".into())));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let run = run_id(&stderr);
    assert!(stderr.contains(&format!("cleared this game day's faults still there: {run}-deploy1-web")), "{stderr}");
    assert!(faults(&proxy).is_empty(), "nothing left: {:?}", faults(&proxy));
}

/// Ctrl-C (and SIGTERM) while the deploy has a batch drained: this run's faults cleared by id,
/// confirmed, exit 3.
#[test]
fn sigint_or_sigterm_in_the_middle_of_a_drain_clears_its_faults_and_exits_3() {
    let (proxy, _upstreams) = staging();
    for (signal, why) in [("INT", "interrupted (SIGINT, Ctrl-C)"), ("TERM", "terminated (SIGTERM)")] {
        let mut run = Gameday::start(&[&scenario(GAMEDAY), &target(&proxy), "--time-scale=60"], &[("EBB_KEY", KEY)]);
        run.wait_for("-deploy1-ssh (ttl");
        proxy.wait_for_metric("ebb_pool_available_hosts{ebb_pool=\"web\"} 6");
        let run_id = run_id(&run.stderr());
        let own = ["deploy1-web", "deploy1-api", "deploy1-ssh"].map(|id| format!("{run_id}-{id}"));
        assert_eq!(faults(&proxy), own);
        run.signal(signal);
        assert_eq!(run.wait(Duration::from_secs(15)), Some(3), "{}", run.stderr());
        let stderr = run.stderr();
        assert!(stderr.contains(&format!("halted: {why}; clearing this game day's faults (run {run_id})")), "{stderr}");
        assert!(
            stderr.contains(&format!("edge: cleared this game day's faults still there: {}", own.join(", "))),
            "{stderr}"
        );
        assert!(stderr.contains("edge: /.ebb/v1/state confirms no fault of this game day is left"), "{stderr}");
        assert!(faults(&proxy).is_empty(), "nothing left: {:?}", faults(&proxy));
        proxy.wait_for_metric("ebb_pool_available_hosts{ebb_pool=\"web\"} 10");
        assert!(run.stdout().contains(&format!("halted: {why}")), "the report says so:\n{}", run.stdout());
    }
}

/// A command the live filter refuses (its caps are stricter than the scenario's): the game day
/// stops on its own error, clears its own faults by id, and exits 4.
#[test]
fn a_command_the_filter_refuses_stops_the_game_day_and_clears_its_faults() {
    let (proxy, _upstreams) = staging();
    let dir = TempDir::new("refused");
    let file = dir.file(
        "refused.json",
        r#"{"version": 1, "name": "too-deep", "duration": "10m",
  "filter": {"limits": {"max_drain_fraction": 0.9}},
  "pools": [{"name": "web", "hosts": 10, "capacity_per_host": 50, "service_time": "50ms"},
            {"name": "api", "hosts": 6, "capacity_per_host": 40, "service_time": "50ms"}],
  "traffic": [],
  "timeline": [{"at": "+30s", "command": {"id": "api-drain", "ttl": "1h", "drain": {"pool": "api", "hosts": 2}}},
               {"at": "+1m", "command": {"id": "deep", "ttl": "1h", "drain": {"pool": "web", "hosts": 8}}}],
  "slos": [{"time_to_restore": {"pool": "web", "max": "5m"}}]}"#,
    );
    let out = gameday(&[&path(&file), &target(&proxy), "--time-scale=60"], &[("EBB_KEY", KEY)]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let run = run_id(&stderr);
    assert!(stderr.contains(&format!("added {run}-api-drain")), "{stderr}");
    assert!(stderr.contains("target edge refused POST /.ebb/v1/faults (HTTP 422)"), "{stderr}");
    assert!(stderr.contains(&format!("edge: cleared this game day's faults still there: {run}-api-drain")), "{stderr}");
    assert!(faults(&proxy).is_empty(), "nothing left: {:?}", faults(&proxy));
}

/// SIGKILL leaves the faults in place, but each carries a TTL of the game day's remaining time
/// plus 15s: they expire on their own, with no traffic and nobody calling.
#[test]
fn after_sigkill_the_faults_expire_by_their_ttl() {
    let (proxy, _upstreams) = staging();
    // 240x: the 20m scenario lasts 5s; the deploy starts at 0.25s real.
    let mut run = Gameday::start(&[&scenario(GAMEDAY), &target(&proxy), "--time-scale=240"], &[("EBB_KEY", KEY)]);
    run.wait_for("-deploy1-ssh (ttl");
    let killed = Instant::now();
    run.signal("KILL");
    assert_eq!(run.wait(Duration::from_secs(5)), None, "killed by the signal");
    assert_eq!(faults(&proxy).len(), 3, "SIGKILL: no cleanup ran");
    let state: serde_json::Value = serde_json::from_str(&ctl(&proxy, &["faults"])).expect("faults JSON");
    for f in state["faults"].as_array().expect("faults") {
        let expires_in: ebb_engine::Duration = serde_json::from_value(f["expires_in"].clone()).expect("a duration");
        assert!(expires_in.as_millis() <= 20_000, "TTL capped to the 5s game day + 15s: {expires_in}");
    }
    while !faults(&proxy).is_empty() {
        assert!(killed.elapsed() < Duration::from_secs(25), "the faults outlived their TTL: {:?}", faults(&proxy));
        std::thread::sleep(Duration::from_millis(250));
    }
    proxy.wait_for_metric("ebb_pool_available_hosts{ebb_pool=\"web\"} 10");
}

/// An unreachable target, a wrong key and an Alertmanager that is down are found before anything
/// is sent: one clear line each, exit 4, and the proxy untouched.
#[test]
fn an_unreachable_target_a_wrong_key_and_a_down_alertmanager_stop_it_before_anything_is_sent() {
    let (proxy, _upstreams) = staging();
    let gone = format!("--target=edge2=http://127.0.0.1:{}", free_port());
    let out = gameday(&[&scenario(GAMEDAY), &target(&proxy), &gone, "--time-scale=60"], &[("EBB_KEY", KEY)]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("target edge2 (http://127.0.0.1:") && stderr.contains("cannot be reached"), "{stderr}");
    assert!(stderr.contains("nothing was sent"), "{stderr}");

    let wrong = "gameday-wrong-key-0000000000000000000000000000";
    let out = gameday(&[&scenario(GAMEDAY), &target(&proxy), "--time-scale=60"], &[("EBB_KEY", wrong)]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("target edge refused the control key (401)"), "{stderr}");
    assert!(!stderr.contains(wrong), "the key is never printed: {stderr}");

    let am = format!("--alertmanager=http://127.0.0.1:{}", free_port());
    let out = gameday(&[&scenario(GAMEDAY), &target(&proxy), &am, "--time-scale=60"], &[("EBB_KEY", KEY)]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("Alertmanager: cannot connect to http://127.0.0.1:"), "{stderr}");

    let out = gameday(&[&scenario(GAMEDAY), &target(&proxy)], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no key: give --key-file FILE"), "{}", text(&out));
    assert!(faults(&proxy).is_empty(), "nothing was sent: {:?}", faults(&proxy));
}

/// A target that goes away in the middle: the game day stops with exit 4, names it, and says it
/// cannot confirm the faults are gone there (they expire by their TTL).
#[test]
fn a_target_lost_in_the_middle_is_named_and_the_exit_is_4() {
    let (mut proxy, _upstreams) = staging();
    let mut run = Gameday::start(&[&scenario(GAMEDAY), &target(&proxy), "--time-scale=60"], &[("EBB_KEY", KEY)]);
    run.wait_for("-deploy1-ssh (ttl");
    proxy.terminate();
    assert_eq!(proxy.wait_exit(Duration::from_secs(10)), Some(0), "the proxy stopped");
    assert_eq!(run.wait(Duration::from_secs(30)), Some(4), "{}", run.stderr());
    let stderr = run.stderr();
    assert!(
        stderr.contains("error: target edge (http://127.0.0.1:") && stderr.contains("cannot be reached"),
        "{stderr}"
    );
    assert!(stderr.contains("edge: cannot confirm that no fault of this game day is left"), "{stderr}");
}

/// A stop condition met halts the game day: a blackhole drain with real requests failing its
/// share, the error ratio over the threshold, the kill switch, exit 3.
#[test]
fn a_stop_condition_halts_the_game_day_and_clears_its_faults() {
    let (proxy, _upstreams) = staging();
    let dir = TempDir::new("stop");
    let file = dir.file(
        "stop.json",
        r#"{"version": 1, "name": "blackhole-with-a-stop-condition", "duration": "10m",
  "pools": [{"name": "web", "hosts": 10, "capacity_per_host": 50, "service_time": "50ms"}],
  "traffic": [{"pool": "web", "points": [["+0s", 5]]}],
  "scrape_interval": "15s",
  "timeline": [{"at": "+30s", "command": {"id": "dead-hosts", "ttl": "1h", "drain": {"pool": "web", "hosts": 5, "mode": "blackhole"}}}],
  "stop_conditions": [{"pool": "web", "signal": "error_ratio", "above": 0.2, "window": "30s", "min_requests": 5}],
  "slos": [{"error_ratio": {"pool": "web", "max": 0.01, "window": "1m"}}]}"#,
    );
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (stop, ingress) = (stop.clone(), proxy.ingress());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let _ = support::http1(ingress, "GET", "/", &[], b"");
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let mut run =
        Gameday::start(&[&path(&file), &target(&proxy), &metrics(&proxy), "--time-scale=30"], &[("EBB_KEY", KEY)]);
    let code = run.wait(Duration::from_secs(30));
    stop.store(true, Ordering::Relaxed);
    load.join().expect("load");
    assert_eq!(code, Some(3), "{}", run.stderr());
    let stderr = run.stderr();
    assert!(stderr.contains("stop condition stop_conditions[0] met: error_ratio of web > 0.2"), "{stderr}");
    // A stop condition is an emergency: the kill switch, not this run's faults by id.
    let run = run_id(&stderr);
    assert!(stderr.contains(&format!("kill switch sent to edge: cleared {run}-dead-hosts")), "{stderr}");
    assert!(faults(&proxy).is_empty(), "nothing left: {:?}", faults(&proxy));
}

/// Two game days on one proxy. Each names its faults behind its own run id, so both may use the
/// same scenario ids. A second one is refused while the first's faults are there (exit 4, nothing
/// sent); with --force it plays alongside, and its end clears and confirms only its own faults:
/// the first's stay until the first ends and clears them itself.
#[test]
fn two_game_days_on_one_proxy_clear_only_their_own_faults() {
    let (proxy, _upstreams) = staging();
    let dir = TempDir::new("two");
    // The first game day's own id for its api deploy, on purpose: run ids keep them apart.
    let second = dir.file(
        "second.json",
        r#"{"version": 1, "name": "second", "duration": "2m",
  "pools": [{"name": "api", "hosts": 6, "capacity_per_host": 40, "service_time": "50ms"}],
  "traffic": [],
  "timeline": [{"at": "+10s", "command": {"id": "deploy1-api", "ttl": "1h", "drain": {"pool": "api", "hosts": 1}}},
               {"at": "+1m", "clear": "deploy1-api"}],
  "slos": [{"time_to_restore": {"pool": "api", "max": "1h"}}]}"#,
    );
    // 40x: the first's deploy starts at 1.5s real and its runbooks restore the pools after 12s.
    let mut first = Gameday::start(&[&scenario(GAMEDAY), &target(&proxy), "--time-scale=40"], &[("EBB_KEY", KEY)]);
    first.wait_for("-deploy1-ssh (ttl");
    let a = run_id(&first.stderr());
    let theirs = ["deploy1-web", "deploy1-api", "deploy1-ssh"].map(|id| format!("{a}-{id}"));
    assert_eq!(faults(&proxy), theirs);

    let out = gameday(&[&path(&second), &target(&proxy), "--time-scale=60"], &[("EBB_KEY", KEY)]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "target edge carries faults of another game day (run {a}): {a}-deploy1-web (expires in"
        )),
        "{stderr}"
    );
    assert!(stderr.contains("pass --force to play alongside it") && stderr.contains("nothing was sent"), "{stderr}");
    assert_eq!(faults(&proxy), theirs, "the refused run sent nothing");

    let out = gameday(&[&path(&second), &target(&proxy), "--time-scale=60", "--force"], &[("EBB_KEY", KEY)]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(matches!(out.status.code(), Some(0 | 1)), "{}", text(&out));
    let b = run_id(&stderr);
    assert_ne!(a, b);
    assert!(stderr.contains("--force: playing alongside it, its faults are left alone"), "{stderr}");
    assert!(stderr.contains(&format!("added {b}-deploy1-api")), "{stderr}");
    assert!(stderr.contains(&format!("cleared {b}-deploy1-api")), "its own clear: {stderr}");
    assert!(stderr.contains("edge: /.ebb/v1/state confirms no fault of this game day is left"), "{stderr}");
    assert!(!stderr.contains("kill switch"), "{stderr}");
    assert_eq!(faults(&proxy), theirs, "the second game day left the first's faults alone");

    assert!(matches!(first.wait(Duration::from_secs(60)), Some(0 | 1)), "{}", first.stderr());
    let stderr = first.stderr();
    assert!(stderr.contains("edge: /.ebb/v1/state confirms no fault of this game day is left"), "{stderr}");
    assert!(faults(&proxy).is_empty(), "nothing left: {:?}", faults(&proxy));
}

/// Latency observed: a 300ms delay on web through ebb proxy, real requests timed by the proxy's
/// histograms. Judged on the ingress listener's envoy_http_downstream_rq_time (the filter's delay
/// is in it), the p99 SLO of 1s passes and the one of 200ms fails, each with the bucket it read;
/// the scenario's latency rule, evaluated here without Alertmanager, fires. On the cluster's
/// envoy_cluster_upstream_rq_time, which starts once the filter lets a request go, the delay is
/// not seen and the 200ms SLO passes.
#[test]
fn latency_slos_and_rules_are_judged_on_the_proxys_histograms() {
    let (proxy, _upstreams) = staging();
    let dir = TempDir::new("latency");
    let file = dir.file(
        "latency.json",
        r#"{"version": 1, "name": "slow-web", "duration": "2m", "scrape_interval": "15s",
  "pools": [{"name": "web", "hosts": 10, "capacity_per_host": 50, "service_time": "50ms"}],
  "traffic": [{"pool": "web", "points": [["+0s", 5]]}],
  "timeline": [{"at": "+10s", "command": {"id": "slow", "ttl": "1h", "delay": {"pool": "web", "delay": "300ms"}}}],
  "alerts": [{"name": "WebSlow", "pool": "web", "signal": "latency_p99", "above": 0.2, "window": "30s", "for": "15s"}],
  "slos": [{"name": "web p99 within 1s", "latency_p99": {"pool": "web", "max": 1.0, "window": "30s"}},
           {"name": "web p99 within 200ms", "latency_p99": {"pool": "web", "max": 0.2, "window": "30s"}}]}"#,
    );
    let stop = Arc::new(AtomicBool::new(false));
    let load: Vec<_> = (0..4)
        .map(|_| {
            let (stop, ingress) = (stop.clone(), proxy.ingress());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let _ = support::http1(ingress, "GET", "/", &[], b"");
                    std::thread::sleep(Duration::from_millis(20));
                }
            })
        })
        .collect();
    let play = |extra: &[&str], name: &str| {
        let json = dir.0.join(name);
        let mut args = vec![path(&file), target(&proxy), metrics(&proxy), "--time-scale=20".into()];
        args.push(format!("--json={}", path(&json)));
        args.extend(extra.iter().map(|a| a.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = gameday(&args, &[("EBB_KEY", KEY)]);
        (out, report(&json))
    };
    let slo = |r: &serde_json::Value, name: &str| {
        r["slos"].as_array().expect("slos").iter().find(|s| s["name"] == name).cloned().expect("the SLO")
    };
    let (out, r) = play(&["--latency-listener=web=ingress_http"], "listener.json");
    assert_eq!(out.status.code(), Some(1), "one SLO missed:\n{}", text(&out));
    let (within_1s, within_200ms) = (slo(&r, "web p99 within 1s"), slo(&r, "web p99 within 200ms"));
    assert_eq!(within_1s["pass"], true, "{within_1s}\n{}", text(&out));
    assert_eq!(within_200ms["pass"], false, "{within_200ms}\n{}", text(&out));
    let measured = within_200ms["measured"].as_str().expect("measured");
    assert!(
        measured.contains("(in the 250–500 ms bucket) of envoy_http_downstream_rq_time{envoy_http_conn_manager_prefix=\"ingress_http\"}"),
        "{measured}"
    );
    let alerts = r["alerts"].as_array().expect("alerts");
    assert!(
        alerts.iter().any(|a| a["name"] == "WebSlow" && a["fired_s"].as_array().is_some_and(|f| !f.is_empty())),
        "{alerts:?}\n{}",
        text(&out)
    );

    let (out, r) = play(&[], "cluster.json");
    stop.store(true, Ordering::Relaxed);
    for l in load {
        l.join().expect("load");
    }
    assert_eq!(out.status.code(), Some(0), "upstream latency is fast:\n{}", text(&out));
    let within_200ms = slo(&r, "web p99 within 200ms");
    assert_eq!(within_200ms["pass"], true, "{within_200ms}");
    assert!(
        within_200ms["measured"]
            .as_str()
            .is_some_and(|m| m.contains("envoy_cluster_upstream_rq_time{envoy_cluster_name=\"web\"}")),
        "{within_200ms}"
    );
    assert!(faults(&proxy).is_empty(), "nothing left: {:?}", faults(&proxy));
}

/// `--dry-run` prints each call with its scenario and real time, and the TTL it would carry;
/// it needs no key and no reachable target.
#[test]
fn dry_run_prints_every_planned_call_with_its_time_and_sends_nothing() {
    let nowhere = format!("--target=edge=http://127.0.0.1:{}", free_port());
    let out = gameday(&[&scenario(GAMEDAY), &nowhere, "--time-scale=60", "--dry-run"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.starts_with("gameday-aborted-deploy: 20m at 60x (20s real) against edge (http://127.0.0.1:"),
        "{stdout}"
    );
    for pool in ["web", "api", "ssh"] {
        let line = stdout
            .lines()
            .find(|l| l.contains(&format!("\"id\":\"deploy1-{pool}\"")))
            .unwrap_or_else(|| panic!("{stdout}"));
        assert!(line.trim_start().starts_with("+1m        +1s        POST /.ebb/v1/faults x-ebb-command: "), "{line}");
        // 2m batches at 60x are 2s; the TTL is the 19s left plus 15s.
        assert!(line.contains("\"ttl\":\"34s\"") && line.contains("\"batch_interval\":\"2s\""), "{line}");
    }
    assert!(
        stdout.contains(
            "when WebCapacityBelowExpected fires, +1m scenario (+1s real) later: POST /.ebb/v1/pools/web/restore"
        ),
        "{stdout}"
    );
    assert!(stdout.contains("halt (kill switch) if available_ratio of web < 0.5 for 1m"), "{stdout}");
    assert!(
        stdout.contains("DELETE /.ebb/v1/faults/ID for each fault this game day added (also on Ctrl-C, SIGTERM or an error); after the console's Halt or a stop condition: DELETE /.ebb/v1/faults (kill switch)"),
        "{stdout}"
    );
    assert!(stdout.trim_end().ends_with("dry run: nothing was sent"), "{stdout}");
}

/// Input errors exit 2 before anything is sent: a console on a non-loopback address without
/// --console-allow-remote, a bad time scale, a stop condition naming a pool that does not exist
/// (with its position, like every field).
#[test]
fn input_errors_exit_2_with_what_is_wrong() {
    let nowhere = format!("--target=edge=http://127.0.0.1:{}", free_port());
    let out = gameday(&[&scenario(GAMEDAY), &nowhere, "--console=0.0.0.0:0"], &[("EBB_KEY", KEY)]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--console-allow-remote"), "{}", text(&out));
    let out = gameday(&[&scenario(GAMEDAY), &nowhere, "--time-scale=0", "--dry-run"], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--time-scale must be above 0"), "{}", text(&out));
    let dir = TempDir::new("bad");
    let file = dir.file(
        "bad.json",
        "{\"version\": 1, \"name\": \"bad\", \"duration\": \"10m\",\n  \"pools\": [{\"name\": \"web\", \"hosts\": 10, \"capacity_per_host\": 50, \"service_time\": \"50ms\"}],\n  \"traffic\": [],\n  \"stop_conditions\": [{\"pool\": \"wbe\", \"above\": 0.5}],\n  \"slos\": [{\"time_to_restore\": {\"pool\": \"web\", \"max\": \"5m\"}}]}\n",
    );
    let out = gameday(&[&path(&file), &nowhere, "--dry-run"], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("bad.json:4:32: stop_conditions[0].pool: no pool named \"wbe\" (did you mean \"web\"?"),
        "{stderr}"
    );
}

/// What a console would get: every live event, in order. Halts the game day (as the console's
/// Halt button does) once the first command has been applied.
struct Recorder {
    events: std::sync::Mutex<Vec<LiveEvent>>,
    halt: Arc<AtomicBool>,
}

impl LiveSink for Recorder {
    fn publish(&self, event: &LiveEvent) {
        if matches!(event, LiveEvent::Command { ok: true, .. }) {
            self.halt.store(true, Ordering::SeqCst);
        }
        self.events.lock().expect("events").push(event.clone());
    }
}

/// The console's hook: the runner publishes Start, Command, Sample, Note and End events through
/// the sink, and a halt request from outside is treated as Ctrl-C: kill switch, confirmed.
#[test]
fn a_console_sees_every_event_and_its_halt_request_clears_the_faults() {
    let (proxy, _upstreams) = staging();
    let halt = Arc::new(AtomicBool::new(false));
    let recorder = Recorder { events: std::sync::Mutex::new(Vec::new()), halt: halt.clone() };
    let scenario = Scenario::load(std::path::Path::new(&scenario(GAMEDAY))).expect("scenario");
    let options = Options {
        targets: vec![Target::parse(&format!("edge=http://{}", proxy.control())).expect("target")],
        key: KEY.into(),
        metrics: Vec::new(),
        alertmanager: None,
        time_scale: 60.0,
        halt,
        force: false,
        latency_listeners: Vec::new(),
    };
    let mut lines = Vec::new();
    let outcome =
        gameday::run(&scenario, &options, &recorder, &mut |l: &str| lines.push(l.to_string())).expect("started");
    assert_eq!(outcome.ending, Ending::Halted("halted by request (the console's Halt)".into()), "{lines:#?}");
    assert!(outcome.clean, "{lines:#?}");
    assert!(faults(&proxy).is_empty(), "nothing left: {:?}", faults(&proxy));
    let events = recorder.events.lock().expect("events").clone();
    assert!(
        matches!(events.first(), Some(LiveEvent::Start { pools, .. }) if pools == &["web", "api", "ssh"]),
        "{events:?}"
    );
    assert!(
        matches!(events.last(), Some(LiveEvent::End { verdict: live::Verdict::Halted, .. })),
        "{:?}",
        events.last()
    );
    assert!(events.iter().any(|e| matches!(e, LiveEvent::Sample { pools, .. } if pools.len() == 3)), "{events:?}");
    assert!(
        events.iter().any(|e| matches!(e, LiveEvent::Note { text, .. } if text.contains("kill switch sent to edge"))),
        "{events:?}"
    );
    let commands = events.iter().filter(|e| matches!(e, LiveEvent::Command { .. })).count();
    assert!(commands >= 1, "{events:?}");
    assert!(lines.iter().any(|l| l.contains("confirms no fault of this game day is left")), "{lines:#?}");
}

/// `--console` on the command line: the URL it prints serves the page with its token, the event
/// stream starts with the game day's Start, and the page's Halt (token in a header, the page's
/// own Origin) ends the game day as Ctrl-C does: kill switch, confirmed, exit 3.
#[test]
fn the_console_url_it_prints_shows_the_game_day_and_its_halt_stops_it() {
    use std::io::{Read, Write};
    let (proxy, _upstreams) = staging();
    let mut run = Gameday::start(
        &[&scenario(GAMEDAY), &target(&proxy), "--time-scale=60", "--console=127.0.0.1:0"],
        &[("EBB_KEY", KEY)],
    );
    run.wait_for("-deploy1-ssh (ttl");
    let stderr = run.stderr();
    let url = stderr
        .lines()
        .find_map(|l| l.strip_prefix("console: "))
        .unwrap_or_else(|| panic!("no console URL printed:\n{stderr}"))
        .to_string();
    let rest = url.strip_prefix("http://").expect("an http URL");
    let (host, query) = rest.split_once("/?token=").expect("the token in the URL");
    let request = |head: String| -> String {
        let mut s = std::net::TcpStream::connect(host).expect("connect to the console");
        s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        s.write_all(head.as_bytes()).expect("write");
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        // The event stream never ends: read until the first event is in.
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
            if head.starts_with("GET /events") && String::from_utf8_lossy(&got).contains("\"type\":\"start\"") {
                break;
            }
        }
        String::from_utf8_lossy(&got).into_owned()
    };
    let page = request(format!("GET /?token={query} HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n"));
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    let events = request(format!("GET /events?token={query} HTTP/1.1\r\nhost: {host}\r\n\r\n"));
    assert!(events.contains("\"scenario\":\"gameday-aborted-deploy\""), "{events}");
    let refused = request(format!("GET /events HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n"));
    assert!(refused.starts_with("HTTP/1.1 403") || refused.starts_with("HTTP/1.1 401"), "no token: {refused}");
    let halted = request(format!(
        "POST /halt HTTP/1.1\r\nhost: {host}\r\norigin: http://{host}\r\nx-ebb-token: {query}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
    ));
    assert!(halted.starts_with("HTTP/1.1 2"), "{halted}");
    assert_eq!(run.wait(Duration::from_secs(20)), Some(3), "{}", run.stderr());
    assert!(run.stderr().contains("the console's Halt"), "{}", run.stderr());
    assert!(faults(&proxy).is_empty(), "nothing left: {:?}", faults(&proxy));
}
