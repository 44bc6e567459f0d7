//! The pool model beside the filter's faults (issue 13, "Model"): pools that scale and hosts
//! never registered with the load balancer, hosts that crash under load and warm up, a bounded
//! queue at the upstream, and graceful drains. Each replay here goes through the real ebb.wasm.

use std::path::Path;

use ebb_harness::report::Report;
use ebb_harness::scenario::Scenario;
use ebb_harness::sim;
use ebb_harness::Plugin;

use super::{at, pool, replay as shipped, wasm};

fn run(name: &str, text: &str) -> Report {
    let scenario = Scenario::parse(Path::new(name), text.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
    let plugin = Plugin::load(wasm()).expect("load ebb.wasm");
    sim::replay(&scenario, &plugin, &mut |_| {}).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn kinds<'r>(r: &'r Report, kind: &str) -> Vec<&'r ebb_harness::report::Event> {
    r.events.iter().filter(|e| e.kind == kind).collect()
}

/// Web scales out from 4 to 12 hosts at +10m; `registered` says whether the new ones reach the
/// load balancer. A capacity alert restores the pool 5 minutes after it fires.
fn scale_out(registered: bool) -> String {
    format!(
        r#"{{"version": 1, "name": "scale-out", "duration": "40m", "seed": 7,
          "pools": [{{"name": "web", "hosts": 4, "capacity_per_host": 4, "service_time": "1s",
                     "scaling": [{{"at": "+10m", "hosts": 12, "registered": {registered}}}]}}],
          "traffic": [{{"pool": "web", "points": [["+0s", 10], ["+10m", 10], ["+15m", 40]]}}],
          "alerts": [{{"name": "WebCapacity", "pool": "web", "signal": "available_ratio", "below": 1.0, "for": "2m"}}],
          "recovery": [{{"on": "WebCapacity", "after": "5m", "restore": "web"}}],
          "slos": [{{"time_to_restore": {{"pool": "web", "max": "5m"}}}}]}}"#
    )
}

#[test]
fn hosts_launched_but_never_registered_are_expected_and_not_available() {
    let r = run("unregistered.json", &scale_out(false));
    let web = pool(&r, "web");
    let lost = web.capacity_lost_s.expect("a registration fault is a capacity loss");
    assert_eq!(lost, at("00:10"), "{}", r.render(false));
    assert!((web.min_capacity_ratio - 4.0 / 12.0).abs() < 1e-9, "4 of 12 serve: {}", web.min_capacity_ratio);
    let loss = kinds(&r, "capacity_lost");
    assert!(loss[0].text.contains("not registered with the load balancer"), "told apart from a drain: {loss:?}");
    assert!(kinds(&r, "scale")[0].text.contains("registration fault"), "{}", r.render(false));
    assert!(kinds(&r, "registration")[0].text.contains("8 of 12"), "{}", r.render(false));
    // The alert fires at 00:12, its runbook's restore registers the hosts at 00:17.
    let registered = kinds(&r, "registered");
    assert_eq!(registered.len(), 1, "{}", r.render(false));
    assert!((at("00:16")..=at("00:18")).contains(&registered[0].t_s), "{}", r.render(false));
    assert!(web.restored_s.is_some_and(|t| t <= at("00:18")), "{}", r.render(false));
    // Until then the 4 registered hosts carry the traffic meant for 12: the pool is impaired.
    assert!(web.errors > 0, "16 slots against rising load:\n{}", r.render(false));
    let series = &r.series[0];
    assert_eq!(series.unregistered_ratio.len(), series.t_s.len());
    let share = series.unregistered_ratio[11];
    assert!((share - 8.0 / 12.0).abs() < 1e-9, "minute 11: {share}");
    assert_eq!(series.unregistered_ratio[30], 0.0, "registered by then");
    let html = ebb_harness::report::html(&r);
    assert!(html.contains(r#"class="unregistered""#), "the chart draws the unregistered hosts");

    let healthy = run("registered.json", &scale_out(true));
    let web = pool(&healthy, "web");
    assert_eq!(web.capacity_lost_s, None, "{}", healthy.render(false));
    assert_eq!(web.errors, 0, "{}", healthy.render(false));
    assert!(healthy.series[0].unregistered_ratio.is_empty(), "no registration fault, no series");
}

#[test]
fn a_drain_is_not_reported_as_a_registration_fault() {
    let text = r#"{"version": 1, "name": "drain", "duration": "20m", "seed": 7,
      "pools": [{"name": "web", "hosts": 4, "capacity_per_host": 4, "service_time": "200ms", "scaling": []}],
      "traffic": [{"pool": "web", "points": [["+0s", 5]]}],
      "timeline": [{"at": "+5m", "command": {"ttl": "1h", "drain": {"pool": "web", "hosts": 1}}}],
      "slos": [{"time_to_restore": {"pool": "web", "max": "5m"}}]}"#;
    let r = run("drain.json", text);
    let loss = kinds(&r, "capacity_lost");
    assert!(loss[0].text.contains("no deploy in progress"), "{loss:?}");
    assert!(r.series[0].unregistered_ratio.is_empty());
}

#[test]
fn scale_in_removes_the_oldest_hosts_even_when_the_new_ones_were_never_registered() {
    let text = r#"{"version": 1, "name": "scale-in", "duration": "20m", "seed": 7,
      "pools": [{"name": "web", "hosts": 4, "capacity_per_host": 4, "service_time": "200ms",
                 "scaling": [{"at": "+5m", "hosts": 8, "registered": false}, {"at": "+10m", "hosts": 4}]}],
      "traffic": [{"pool": "web", "points": [["+0s", 5]]}],
      "slos": [{"error_ratio": {"pool": "web", "max": 0.01}}]}"#;
    let r = run("scale-in.json", text);
    let web = pool(&r, "web");
    assert_eq!(web.min_capacity_ratio, 0.0, "the 4 hosts the balancer knew are gone:\n{}", r.render(false));
    assert!(web.errors as f64 > 0.3 * web.requests as f64, "half the replay with no host:\n{}", r.render(false));
    assert_eq!(r.verdict, "fail");
    assert_eq!(kinds(&r, "scale").len(), 2);
}

/// Ten hosts of 4 slots at 30 requests a second of 1s, with a burst of 25 more for 10 minutes;
/// a host crashes after a minute with more than 5 requests held per serving host, and is back
/// 20 seconds later. The fix scales the pool out at +1m, before the burst.
fn overloaded(hosts_before_burst: u32) -> String {
    format!(
        r#"{{"version": 1, "name": "overload", "duration": "40m", "seed": 11,
          "pools": [{{"name": "web", "hosts": 10, "capacity_per_host": 4, "service_time": "1s", "timeout": "20s",
                     "scaling": [{{"at": "+1m", "hosts": {hosts_before_burst}}}],
                     "overload": {{"concurrency": 5, "for": "1m", "restart": "20s", "warmup": "1m", "warmup_factor": 2}}}}],
          "traffic": [{{"pool": "web", "points": [["+0s", 30]], "bursts": [{{"at": "+5m", "for": "10m", "rate": 25}}]}}],
          "slos": [{{"error_ratio": {{"pool": "web", "max": 0.05, "window": "5m"}}}}]}}"#
    )
}

#[test]
fn hosts_crash_under_sustained_overload_and_come_back_by_themselves() {
    let r = run("overload.json", &overloaded(10));
    let crashes = kinds(&r, "crash");
    assert!(crashes.len() >= 2, "the burst overloads the pool, which cascades:\n{}", r.render(false));
    assert!(crashes[0].t_s > at("00:05"), "only once the load comes: {}", crashes[0].t_s);
    let restarts = kinds(&r, "restart");
    assert!(!restarts.is_empty(), "crashed hosts restart:\n{}", r.render(false));
    assert!(restarts[0].t_s >= crashes[0].t_s + 20.0);
    assert!(crashes.last().is_some_and(|c| c.t_s < at("00:20")), "no crash once the burst is over");
    let web = pool(&r, "web");
    assert!(web.capacity_lost_s.is_some() && web.min_capacity_ratio < 1.0, "a crash is a capacity loss");
    assert!(web.restored_s.is_some(), "hosts come back with no action:\n{}", r.render(false));
    assert!(r.series[0].available_ratio.last().is_some_and(|&a| a == 1.0), "all back by the end");
    assert_eq!(r.verdict, "fail", "{}", r.render(false));

    // The fix, without deleting any scripted fault: scale out before the burst.
    let fixed = run("overload-fixed.json", &overloaded(16));
    assert!(kinds(&fixed, "crash").is_empty(), "{}", fixed.render(false));
    assert_eq!(fixed.verdict, "pass", "{}", fixed.render(false));
}

/// Four hosts of 2 slots, 500ms each: 16 requests a second at most. Half the hosts are drained
/// from +2m for 3 minutes while the load rises from 6 to 12 requests a second: from within what
/// the two hosts left serve (8) to half as much again.
fn drained_with_backlog(backlog: &str) -> String {
    format!(
        r#"{{"version": 1, "name": "queue", "duration": "8m", "seed": 5, "scrape_interval": "5s",
          "pools": [{{"name": "web", "hosts": 4, "capacity_per_host": 2, "service_time": "500ms", "service": "fixed"{backlog}}}],
          "traffic": [{{"pool": "web", "points": [["+0s", 4], ["+2m", 4], ["+5m", 12], ["+5m", 4]]}}],
          "timeline": [{{"at": "+2m", "command": {{"ttl": "3m", "drain": {{"pool": "web", "hosts": 2}}}}}}],
          "alerts": [
            {{"name": "Slow", "pool": "web", "signal": "latency_p90", "window": "10s", "above": 0.6}},
            {{"name": "Errors", "pool": "web", "signal": "error_ratio", "window": "10s", "above": 0.05}}],
          "slos": [{{"latency_p99": {{"pool": "web", "max": 10.0}}}}]}}"#
    )
}

#[test]
fn an_overloaded_pool_with_a_backlog_answers_late_before_it_fails() {
    let fired =
        |r: &Report, name: &str| r.alerts.iter().find(|a| a.name == name).and_then(|a| a.fired_s.first().copied());
    // Without a backlog the filter sheds the moment the drained pool's slots are full.
    let shed = run("shed.json", &drained_with_backlog(""));
    let (slow, errors) = (fired(&shed, "Slow"), fired(&shed, "Errors"));
    assert!(errors.is_some(), "{}", shed.render(false));
    assert!(slow.is_none_or(|s| s >= errors.unwrap_or(0.0)), "errors first: {slow:?} {errors:?}");

    let queued = run("queue.json", &drained_with_backlog(r#", "backlog_per_host": 3"#));
    let (slow, errors) = (fired(&queued, "Slow"), fired(&queued, "Errors"));
    let slow = slow.unwrap_or_else(|| panic!("the queue shows as latency:\n{}", queued.render(false)));
    let errors = errors.unwrap_or_else(|| panic!("then the full backlog fails:\n{}", queued.render(false)));
    assert!(slow < errors, "latency first ({slow}), errors after ({errors}):\n{}", queued.render(false));
    // A full backlog refuses at once: nothing waits more than the backlog's worth of service.
    let worst = queued.slos[0].measured.clone();
    assert!(queued.slos[0].pass, "p99 within 10s, not the 30s timeout: {worst}");
}

#[test]
fn a_healthy_deploy_at_night_does_not_page_ssh_but_the_aborted_one_does() {
    let r = shipped("bitbucket-2021-02-05");
    let ssh = r.alerts.iter().find(|a| a.name == "SSHErrorRate").unwrap();
    let first = ssh.fired_s[0];
    assert!(first > at("00:10") && first <= at("00:14"), "the aborted deploy pages at 00:12: {first}");
    assert!(
        !ssh.fired_s.iter().any(|&t| (at("00:29")..=at("00:50")).contains(&t)),
        "the repeat deploy, which completes, must not page:\n{}",
        r.render(false)
    );
}

#[test]
fn check_names_the_path_of_a_bad_model_field() {
    let cases = [
        (r#""scaling": [{"at": "+5m", "hosts": 200000}]"#, "pools[0].scaling[0].hosts", "at most 100,000"),
        (
            r#""scaling": [{"at": "+5m", "hosts": 8}, {"at": "+1m", "hosts": 4}]"#,
            "pools[0].scaling[1].at",
            "time order",
        ),
        (r#""scaling": [{"at": "+2h", "hosts": 8}]"#, "pools[0].scaling[0].at", "after the end"),
        (r#""overload": {"concurrency": 0}"#, "pools[0].overload.concurrency", "from 1"),
        (r#""overload": {"concurrency": 4, "warmup_factor": 0.5}"#, "pools[0].overload.warmup_factor", "from 1 to 100"),
        (r#""overload": {"concurrency": 4, "restart": "0s"}"#, "pools[0].overload.restart", "between 1ms"),
        (r#""backlog_per_host": 999999"#, "pools[0].backlog_per_host", "at most 1,000,000"),
        (r#""scaling": [{"at": "+5m", "hosts": 8, "registerd": false}]"#, "pools[0].scaling[0]", "registered"),
    ];
    for (field, path, message) in cases {
        let text = format!(
            "{{\"version\": 1, \"name\": \"x\", \"duration\": \"1h\",\n \"pools\": [{{\"name\": \"web\", \"hosts\": 4, \"capacity_per_host\": 4, \"service_time\": \"1s\",\n  {field}}}],\n \"traffic\": [{{\"pool\": \"web\", \"points\": [[\"+0s\", 1]]}}],\n \"slos\": [{{\"error_ratio\": {{\"pool\": \"web\", \"max\": 0.5}}}}]}}"
        );
        let err = Scenario::parse(Path::new("m.json"), text.as_bytes()).expect_err(path).to_string();
        assert!(
            err.contains("m.json:3:") && err.contains(path) && err.contains(message),
            "want {path} / {message}, got: {err}"
        );
    }
}
