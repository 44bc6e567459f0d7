//! Replays of real public incidents (issue 13, "Scenarios that ship"): each as it happened (its
//! verdict fails) and with its fix (passes), and the moments the replay finds stay within a
//! minute of the times the incident's own report publishes. One test per incident.

use ebb_harness::report::{PoolResult, Report};
use ebb_harness::scenario::{At, Scenario};
use ebb_harness::sim;
use ebb_harness::Plugin;

use crate::{root, wasm};

/// How far a replayed moment may be from the published one.
const TOLERANCE_S: f64 = 60.0;

/// A shipped scenario and its replay.
struct Replayed {
    name: String,
    scenario: Scenario,
    report: Report,
}

fn replayed(name: &str) -> Replayed {
    let path = root().join("scenarios").join(format!("{name}.json"));
    let scenario = Scenario::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let plugin = Plugin::load(wasm()).expect("load ebb.wasm");
    let report = sim::replay(&scenario, &plugin, &mut |_| {}).unwrap_or_else(|e| panic!("{name}: {e}"));
    Replayed { name: name.to_string(), scenario, report }
}

impl Replayed {
    fn pool(&self, name: &str) -> &PoolResult {
        self.report.pools.iter().find(|p| p.name == name).unwrap_or_else(|| panic!("{}: no pool {name}", self.name))
    }

    /// Asserts the verdict, with the report when it is not.
    fn verdict(&self, want: &str) {
        assert_eq!(self.report.verdict, want, "{}:\n{}", self.name, self.report.render(false));
        assert_eq!(self.report.requests.filter_failures, 0, "{}: the filter failed", self.name);
    }

    /// Asserts that `replayed` (seconds from the start) is within a minute of `published`, a
    /// clock time as the incident report gives it, read on the scenario's own clock (its zone).
    fn near(&self, what: &str, replayed: Option<f64>, published: &str) {
        let at = At::parse(published).unwrap_or_else(|e| panic!("{e}"));
        let want = self.scenario.offset_ms(at) as f64 / 1000.0;
        let got =
            replayed.unwrap_or_else(|| panic!("{}: {what} never happened:\n{}", self.name, self.report.render(false)));
        assert!(
            (got - want).abs() <= TOLERANCE_S,
            "{}: {what} at {} in the replay, published {published} (more than a minute apart):\n{}",
            self.name,
            self.report.clock(got),
            self.report.render(false)
        );
    }

    /// When the first event of `kind` whose text contains `words` happened.
    fn event(&self, kind: &str, words: &str) -> Option<f64> {
        self.report.events.iter().find(|e| e.kind == kind && e.text.contains(words)).map(|e| e.t_s)
    }
}

/// Interact, 2018-04-18 (times EDT): new servers never registered with the load balancer while
/// the old ones were retired; the outage at 06:22 lasted until AWS fixed ELB at 07:05.
#[test]
fn interact_2018_04_18() {
    let r = replayed("interact-2018-04-18");
    r.verdict("fail");
    let web = r.pool("web");
    let loss = web.episodes.first().unwrap_or_else(|| panic!("no capacity loss:\n{}", r.report.render(false)));
    r.near("capacity lost (the rotation's new servers never register)", Some(loss.lost_s), "06:00");
    let none_left = r.report.series[0].capacity_steps.iter().find(|(_, ratio)| *ratio == 0.0).map(|(t, _)| *t);
    r.near("the outage (no registered server left)", none_left, "06:22");
    r.near("detection (the error alert pages)", loss.detected_s, "06:22");
    r.near("the disaster recovery plan", r.event("runbook", "fail"), "06:45");
    r.near("restore (AWS resolves the ELB incident)", loss.restored_s, "07:05");
    let impact = web.impacts.first().expect("customers impaired");
    r.near("customers impaired", Some(impact.start_s), "06:22");
    // The report reads in the incident's zone, with UTC beside it.
    let text = r.report.render(false);
    assert!(text.contains("from 2018-04-18 05:45 EDT (09:45 UTC)"), "{text}");
    let paged = r.report.clock_and_utc(loss.detected_s.unwrap_or_default());
    assert!(paged.starts_with("06:22:") && paged.contains(" EDT (10:22:"), "{paged}");
    assert!(text.contains(&format!("  {paged}  alert ")), "{text}");

    let fixed = replayed("interact-2018-04-18-fixed");
    fixed.verdict("pass");
    let web = fixed.pool("web");
    assert_eq!(web.errors, 0, "the old servers keep serving:\n{}", fixed.report.render(false));
    let loss = web.episodes.first().expect("the registration fault is still a capacity loss");
    fixed.near("detection (the capacity alert pages)", loss.detected_s, "06:05");
    fixed.near("restore (AWS resolves the ELB incident)", loss.restored_s, "07:05");
    assert!(fixed.event("runbook", "").is_none() && fixed.event("recovery", "").is_none(), "no DR plan needed");
}

/// The share of `pool`'s requests that failed in the minute starting at `clock` (local, as the
/// incident report gives it).
fn minute_error_share(r: &Replayed, pool: &str, clock: &str) -> f64 {
    let at = At::parse(clock).unwrap_or_else(|e| panic!("{e}"));
    let t = r.scenario.offset_ms(at) as f64 / 1000.0;
    let series = r.report.series.iter().find(|s| s.pool == pool).unwrap_or_else(|| panic!("no series of {pool}"));
    let i = series.t_s.iter().position(|&s| s == t).unwrap_or_else(|| panic!("{}: no minute {clock}", r.name));
    series.errors[i] as f64 / series.requests[i].max(1) as f64
}

/// The SLOs of the replay that failed.
fn failed_slos(r: &Replayed) -> Vec<&str> {
    r.report.slos.iter().filter(|s| !s.pass).map(|s| s.name.as_str()).collect()
}

/// NamePros, 2022-05-24 (times EDT): 3 of 4 web servers unusable from 04:45 and never replaced;
/// the last one offline at 07:13, back at 07:17, offline again at 07:20 (the failed manual
/// replacement), and the site back at 07:31 when the autoscaling configuration was reset.
#[test]
fn namepros_2022_05_24() {
    let r = replayed("namepros-2022-05-24");
    r.verdict("fail");
    let web = r.pool("web");
    assert_eq!(web.episodes.len(), 1, "one loss, from 04:45 to 07:31: {:?}", web.episodes);
    r.near("capacity lost (all but one server unusable)", web.capacity_lost_s, "04:45");
    r.near("the last server drops offline", r.event("crash", ""), "07:13");
    r.near("detection (the error alert pages as the site goes offline)", web.detected_s, "07:13");
    r.near("the server recovers", r.event("restart", ""), "07:17");
    r.near("the failed manual replacement", r.event("runbook", "attempt 1 of 2 fails"), "07:20");
    let second = r.report.events.iter().filter(|e| e.kind == "crash").nth(1).map(|e| e.t_s);
    r.near("offline again", second, "07:20");
    r.near("restore (the autoscaling configuration reset)", web.restored_s, "07:31");
    assert_eq!(web.impacts.len(), 1, "one outage of customers, not three: {:?}", web.impacts);
    r.near("customers impaired", web.impact_start_s, "07:13");
    r.near("customers served again", web.impact_end_s, "07:31");
    assert!(minute_error_share(&r, "web", "07:22") > 0.99, "offline at 07:22");
    assert!(minute_error_share(&r, "web", "07:33") < 0.01, "serving at 07:33");
    let failed = failed_slos(&r);
    for slo in ["web: time to restore capacity", "web: error budget at 0.999"] {
        assert!(failed.contains(&slo), "{slo} must fail: {failed:?}");
    }
    let text = r.report.render(false);
    assert!(text.contains("07:13:00 EDT (11:13:00 UTC)"), "the timeline reads in EDT and UTC:\n{text}");

    let fixed = replayed("namepros-2022-05-24-autoscaler-replaces");
    fixed.verdict("pass");
    let web = fixed.pool("web");
    fixed.near("the same servers fail", web.capacity_lost_s, "04:45");
    fixed.near("the autoscaler's replacements in service", web.restored_s, "04:53");
    assert!(fixed.event("crash", "").is_none(), "the last server is never alone under morning traffic");
    assert_eq!(web.errors, 0, "{}", fixed.report.render(false));
    assert!(fixed.report.alerts.iter().all(|a| a.fired_s.is_empty()), "nothing pages: {:?}", fixed.report.alerts);
}

/// Inkling, 2024-04-09 (times PDT): a scale-in at 11:58 after a drop in traffic, a scale-out
/// whose instances were slow to come online, intermittent timeouts, then downtime from 12:30 to
/// 12:38, ended by adding capacity and restarting the core services.
#[test]
fn inkling_2024_04_09() {
    let r = replayed("inkling-2024-04-09");
    r.verdict("fail");
    let api = r.pool("api");
    r.near("the scale-in", r.event("scale", "scales in"), "11:58");
    let crashes: Vec<f64> = r.report.events.iter().filter(|e| e.kind == "crash").map(|e| e.t_s).collect();
    assert_eq!(crashes.len(), 3, "the 3 hosts left crash one after another: {crashes:?}");
    r.near("the downtime (no host left serving)", crashes.last().copied(), "12:30");
    r.near("detection (the downtime page)", api.detected_s, "12:30");
    // The restore restarts the crashed hosts (their own restart is 30 minutes away) and adds the
    // ones still booting (they would join at 12:40): the platform is back at 12:38.
    r.near("restore (capacity added, core services restarted)", api.restored_s, "12:38");
    for minute in ["12:31", "12:34", "12:37"] {
        assert!(minute_error_share(&r, "api", minute) > 0.99, "downtime at {minute}");
    }
    assert!(minute_error_share(&r, "api", "12:39") < 0.01, "serving again at 12:39");
    // Latency first: the 3 hosts queue before requests time out, and both before the downtime.
    let series = &r.report.series[0];
    let slow = series.p90_s.iter().position(|&p| p > 2.0).expect("the queue shows as latency");
    let erring = series.errors.iter().position(|&e| e > 0).expect("then timeouts");
    assert!(slow < erring, "latency (minute {slow}) before timeouts (minute {erring})");
    assert!(series.t_s[erring] + 60.0 < crashes[0], "intermittent timeouts before the first crash");
    let failed = failed_slos(&r);
    for slo in ["api: error ratio per 5m", "api: error budget at 0.999"] {
        assert!(failed.contains(&slo), "{slo} must fail: {failed:?}");
    }

    let fixed = replayed("inkling-2024-04-09-capacity-floor");
    fixed.verdict("pass");
    let api = fixed.pool("api");
    assert!(fixed.event("crash", "").is_none(), "{}", fixed.report.render(false));
    assert_eq!(api.errors, 0, "{}", fixed.report.render(false));
    assert!(fixed.report.alerts.iter().all(|a| a.fired_s.is_empty()), "nothing pages: {:?}", fixed.report.alerts);
    // The scale-out's hosts still boot for 25 minutes and warm up only once they join: until
    // then they slow no request, and the p99 SLO passes.
    fixed.near("the new hosts join the load balancer", api.restored_s, "12:40");
}
