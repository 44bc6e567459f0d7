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
