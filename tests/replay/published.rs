//! Published incidents of other companies replayed (issue 13, "Scenarios that ship"): each as it
//! happened fails and its fix passes, and what the replay detects and restores comes within a
//! minute of the times the incident report published.

use ebb_harness::report::{Event, Report};

use super::{at, pool, replay};

/// How far a replayed moment may be from the published one.
const MINUTE: f64 = 60.0;

/// Seconds from a replay's `start` to the clock time `clock` (both `HH:MM`, same day).
fn since(start: &str, clock: &str) -> f64 {
    at(clock) - at(start)
}

fn near(r: &Report, start: &str, what: &str, got: Option<f64>, published: &str) {
    let want = since(start, published);
    let got = got.unwrap_or_else(|| panic!("{what}: never, published {published}\n{}", r.render(false)));
    assert!(
        (got - want).abs() <= MINUTE,
        "{what}: {got}s from the start, published {published} ({want}s)\n{}",
        r.render(false)
    );
}

fn events<'r>(r: &'r Report, kind: &str) -> Vec<&'r Event> {
    r.events.iter().filter(|e| e.kind == kind).collect()
}

fn failed(r: &Report) -> Vec<&str> {
    r.slos.iter().filter(|s| !s.pass).map(|s| s.name.as_str()).collect()
}

/// The errors of minute `clock` of pool `name`, as a share of its requests.
fn error_share(r: &Report, start: &str, name: &str, clock: &str) -> f64 {
    let series = r.series.iter().find(|s| s.pool == name).unwrap();
    let t = since(start, clock);
    let i = series.t_s.iter().position(|&s| s == t).unwrap_or_else(|| panic!("no minute {clock}"));
    series.errors[i] as f64 / series.requests[i].max(1) as f64
}

/// NamePros, 2022-05-24 (times EDT; the scenario is in UTC, 4 hours later): 3 of 4 web servers
/// out from 04:45 and never replaced; the last one offline 07:13-07:17 and again from 07:20;
/// back at 07:31.
#[test]
fn namepros_as_it_happened_fails_at_the_published_times() {
    let start = "08:30";
    let r = replay("namepros-2022-05-24");
    assert_eq!(r.verdict, "fail");
    let web = pool(&r, "web");
    near(&r, start, "capacity lost (04:45 EDT)", web.capacity_lost_s, "08:45");
    near(&r, start, "detected (offline at 07:13 EDT)", web.detected_s, "11:13");
    near(&r, start, "restored (07:31 EDT)", web.restored_s, "11:31");
    near(&r, start, "impact (offline at 07:13 EDT)", web.impact_start_s, "11:13");
    assert_eq!(web.impacts.len(), 1, "one outage, not three: {:?}", web.impacts);
    near(&r, start, "impact ends (07:31 EDT)", web.impact_end_s, "11:31");
    let crashes = events(&r, "crash");
    near(&r, start, "the last server drops offline (07:13 EDT)", crashes.first().map(|e| e.t_s), "11:13");
    near(&r, start, "and recovers (07:17 EDT)", events(&r, "restart").first().map(|e| e.t_s), "11:17");
    near(&r, start, "offline again (07:20 EDT)", crashes.get(1).map(|e| e.t_s), "11:20");
    let attempt = events(&r, "runbook").into_iter().find(|e| e.text.contains("attempt 1 of 2 fails"));
    near(&r, start, "the failed manual attempt (07:20 EDT)", attempt.map(|e| e.t_s), "11:20");
    assert!(error_share(&r, start, "web", "11:22") > 0.99, "the site is offline at 07:22 EDT");
    assert!(error_share(&r, start, "web", "11:33") < 0.01, "and serves again at 07:33 EDT");
    assert_eq!(web.episodes.len(), 1, "one loss, from 04:45 to 07:31: {:?}", web.episodes);
    let failed = failed(&r);
    for slo in ["web: time to restore capacity", "web: error budget at 0.999"] {
        assert!(failed.contains(&slo), "{slo} must fail: {failed:?}");
    }
}

#[test]
fn namepros_with_an_autoscaler_that_replaces_unhealthy_servers_passes() {
    let start = "08:30";
    let r = replay("namepros-2022-05-24-autoscaler-replaces");
    assert_eq!(r.verdict, "pass", "{}", r.render(false));
    let web = pool(&r, "web");
    near(&r, start, "the same 3 servers fail (04:45 EDT)", web.capacity_lost_s, "08:45");
    near(&r, start, "replaced 8 minutes later", web.restored_s, "08:53");
    assert!(events(&r, "crash").is_empty(), "the last server is never alone under morning traffic");
    assert_eq!(web.errors, 0, "{}", r.render(false));
    assert!(r.alerts.iter().all(|a| a.fired_s.is_empty()), "nothing pages: {:?}", r.alerts);
}

/// Inkling, 2024-04-09 (times PDT; the scenario is in UTC, 7 hours later): scale-in at 11:58
/// after a drop in traffic, a slow scale-out, timeouts, then downtime from 12:30 to 12:38.
#[test]
fn inkling_as_it_happened_fails_at_the_published_times() {
    let start = "18:30";
    let r = replay("inkling-2024-04-09");
    assert_eq!(r.verdict, "fail");
    let api = pool(&r, "api");
    near(&r, start, "the scale-in (11:58 PDT)", events(&r, "scale").first().map(|e| e.t_s), "18:58");
    near(&r, start, "detected (downtime from 12:30 PDT)", api.detected_s, "19:30");
    // The restore restarts the crashed hosts (their own restart is 30 minutes away) and adds the
    // ones still booting (they would join at 12:40): the platform is back at 12:38.
    near(&r, start, "restored (12:38 PDT)", api.restored_s, "19:38");
    let crashes = events(&r, "crash");
    assert_eq!(crashes.len(), 3, "the 3 hosts left crash one after another: {crashes:?}");
    near(&r, start, "the last host down (12:30 PDT)", crashes.last().map(|e| e.t_s), "19:30");
    for minute in ["19:31", "19:34", "19:37"] {
        assert!(error_share(&r, start, "api", minute) > 0.99, "downtime at {minute} UTC");
    }
    assert!(error_share(&r, start, "api", "19:39") < 0.01, "back at 12:39 PDT");
    // Latency first: the 3 hosts queue before requests time out, and both before the downtime.
    let series = &r.series[0];
    let slow = series.p90_s.iter().position(|&p| p > 2.0).expect("the queue shows as latency");
    let erring = series.errors.iter().position(|&e| e > 0).expect("then timeouts");
    assert!(slow < erring, "latency (minute {slow}) before timeouts (minute {erring})");
    assert!(series.t_s[erring] < since(start, "19:25"), "intermittent timeouts before the crashes");
    let failed = failed(&r);
    for slo in ["api: error ratio per 5m", "api: error budget at 0.999"] {
        assert!(failed.contains(&slo), "{slo} must fail: {failed:?}");
    }
}

#[test]
fn inkling_with_a_capacity_floor_passes() {
    let start = "18:30";
    let r = replay("inkling-2024-04-09-capacity-floor");
    assert_eq!(r.verdict, "pass", "{}", r.render(false));
    let api = pool(&r, "api");
    assert!(events(&r, "crash").is_empty(), "{}", r.render(false));
    assert_eq!(api.errors, 0, "{}", r.render(false));
    assert!(r.alerts.iter().all(|a| a.fired_s.is_empty()), "nothing pages: {:?}", r.alerts);
    // The scale-out's hosts still boot for 25 minutes and warm up only once they join: until
    // then they slow no request (the p99 SLO passes).
    near(&r, start, "the new hosts join (12:40 PDT)", api.restored_s, "19:40");
}
