//! A filter that traps, replayed under both of Envoy's failure policies: the replay counts each
//! request as Envoy would answer it. proxy-wasm-cpp-host checks for failure right after each
//! callback (`src/context.cc`, `CHECK_FAIL_HTTP`); Envoy's `Context::failStream`
//! (`source/extensions/common/wasm/context.cc`) answers the stream with a local 503 under
//! fail-closed, and under fail-open the stream goes on as if the callback had returned Continue:
//! to the upstream, whose answer reaches the client.

use std::path::Path;

use ebb_harness::report::Report;
use ebb_harness::scenario::Scenario;
use ebb_harness::sim::{self, Budget, HostSettings};
use ebb_harness::{FailurePolicy, Plugin};

use crate::util;

/// One minute of 5 requests a second to a pool with room to spare, scraped only at the end
/// (the trap filter publishes none of ebb's gauges). The trap filter traps in the phase the
/// pool's name says (its authority is `<pool>.ebb.test`).
fn replay(pool: &str, failure_policy: FailurePolicy) -> Report {
    let text = format!(
        r#"{{"version": 1, "name": "traps", "duration": "1m", "scrape_interval": "1m", "seed": 4,
          "pools": [{{"name": "{pool}", "hosts": 10, "capacity_per_host": 10, "service_time": "10ms"}}],
          "traffic": [{{"pool": "{pool}", "points": [["+0s", 5]]}}],
          "slos": [{{"error_ratio": {{"pool": "{pool}", "max": 0.5, "window": "1m"}}}}]}}"#
    );
    let scenario = Scenario::parse(Path::new("traps.json"), text.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
    let plugin = Plugin::load(util::filter("trap")).unwrap_or_else(|e| panic!("loading the trap filter: {e}"));
    let host = HostSettings { failure_policy, ..HostSettings::default() };
    sim::replay_as(&scenario, &plugin, Budget::DEFAULT, host, &mut |_| {}).unwrap_or_else(|e| panic!("{e}"))
}

fn counts(report: &Report) -> (u64, u64, u64) {
    let pool = &report.pools[0];
    (pool.requests, pool.errors, report.requests.filter_failures)
}

#[test]
fn a_trap_in_the_request_phase_is_a_503_fail_closed_and_served_fail_open() {
    let (requests, errors, failures) = counts(&replay("request-trap", FailurePolicy::FailClosed));
    assert!(requests > 100 && failures > 0, "{requests} requests, {failures} traps");
    assert_eq!(errors, requests, "fail-closed: every request is a 503 (the trapping ones included)");

    let (requests, errors, failures) = counts(&replay("request-trap", FailurePolicy::FailOpen));
    assert!(requests > 100 && failures > 0, "{requests} requests, {failures} traps");
    assert_eq!(errors, 0, "fail-open: the trapping request goes on to the upstream and gets its answer");
}

#[test]
fn a_trap_in_the_response_phase_is_a_503_fail_closed_and_the_upstreams_answer_fail_open() {
    let (requests, errors, failures) = counts(&replay("response-trap", FailurePolicy::FailClosed));
    assert!(requests > 100, "{requests} requests");
    assert!(failures > 0, "the response-phase trap is a filter failure in the report");
    assert_eq!(errors, requests, "fail-closed: the client got a 503 instead of the upstream's answer");

    let (requests, errors, failures) = counts(&replay("response-trap", FailurePolicy::FailOpen));
    assert!(requests > 100 && failures > 0, "{requests} requests, {failures} traps");
    assert_eq!(errors, 0, "fail-open: the upstream's answer reaches the client");
}

/// `ebb replay --fail-open` is the policy deploy/envoy/envoy.yaml ships: the same trapping filter
/// fails its SLO fail-closed (exit 1) and passes it fail-open (exit 0).
#[test]
fn the_cli_replays_with_the_failure_policy_it_is_given() {
    let dir = std::env::temp_dir().join(format!("ebb-traps-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("traps.json");
    std::fs::write(
        &file,
        r#"{"version": 1, "name": "traps", "duration": "1m", "scrape_interval": "1m", "seed": 4,
          "pools": [{"name": "request-trap", "hosts": 10, "capacity_per_host": 10, "service_time": "10ms"}],
          "traffic": [{"pool": "request-trap", "points": [["+0s", 5]]}],
          "slos": [{"error_ratio": {"pool": "request-trap", "max": 0.5, "window": "1m"}}]}"#,
    )
    .expect("write the scenario");
    let trap = util::filter("trap").to_string_lossy().into_owned();
    let scenario = file.to_string_lossy().into_owned();
    let closed = super::ebb(&["replay", &scenario, "--plugin", &trap, "--quiet"]);
    assert_eq!(closed.status.code(), Some(1), "{}", String::from_utf8_lossy(&closed.stderr));
    let open = super::ebb(&["replay", &scenario, "--plugin", &trap, "--quiet", "--fail-open"]);
    assert_eq!(open.status.code(), Some(0), "{}", String::from_utf8_lossy(&open.stderr));
    let _ = std::fs::remove_dir_all(&dir);
}
