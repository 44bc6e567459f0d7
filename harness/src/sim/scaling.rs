// A pool's hosts as its infrastructure has them, beside the filter's faults: the autoscaler's
// desired size over time (scale-out and scale-in steps) and which launched hosts the load
// balancer knows (registration), combined with the filter's drains and overload crashes into the
// available and expected hosts every scrape reads.

use std::collections::VecDeque;

use crate::scenario::{Pool, Scenario};

/// Hosts launched together by one step, oldest cohort first.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Cohort {
    count: u64,
    /// When they join the load balancer (ns); None: never (a registration fault), until the
    /// pool is restored.
    joins_ns: Option<u64>,
}

/// One pool's hosts and its scaling steps.
#[derive(Debug)]
pub struct Hosts {
    cohorts: VecDeque<Cohort>,
    /// (when, hosts, registered, register_after ns), in time order.
    steps: Vec<(u64, u64, bool, u64)>,
    next: usize,
    /// Unregistered hosts at the last scrape, to say when that changes.
    unregistered: u64,
}

/// One step applied.
#[derive(Clone, Debug, PartialEq)]
pub struct Scaled {
    pub at: u64,
    pub text: String,
    /// Hosts it launched, and when they join the load balancer (never: None).
    pub launched: u64,
    pub joins_ns: Option<u64>,
}

/// What a scrape reads of a pool: the load balancer's view and the autoscaler's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct View {
    /// Hosts that serve: registered, not crashed, not drained by the filter.
    pub available: u64,
    /// Hosts the pool is expected to have (the autoscaler's desired size).
    pub expected: u64,
    /// Hosts the load balancer knows (registered), serving or not: Envoy's panic threshold is a
    /// share of these.
    pub members: u64,
    /// Expected hosts that were launched but are not registered with the load balancer.
    pub unregistered: u64,
}

impl Hosts {
    pub fn new(scenario: &Scenario, pool: &Pool, start_ns: u64) -> Hosts {
        let ms = |ms: u64| ms.saturating_mul(1_000_000);
        let steps = pool
            .scaling
            .iter()
            .map(|s| {
                let at = start_ns.saturating_add(ms(scenario.offset_ms(s.at)));
                (at, u64::from(s.hosts), s.registered, ms(s.register_after.as_millis()))
            })
            .collect();
        let initial = Cohort { count: u64::from(pool.hosts), joins_ns: Some(0) };
        Hosts { cohorts: VecDeque::from([initial]), steps, next: 0, unregistered: 0 }
    }

    pub fn expected(&self) -> u64 {
        self.cohorts.iter().map(|c| c.count).sum()
    }

    /// Hosts the load balancer knows at `t`.
    pub fn registered(&self, t: u64) -> u64 {
        self.cohorts.iter().filter(|c| c.joins_ns.is_some_and(|j| j <= t)).map(|c| c.count).sum()
    }

    /// Applies the steps due by `t`: what each did, for the timeline and the warm-up.
    pub fn scale(&mut self, t: u64, name: &str) -> Vec<Scaled> {
        let mut done = Vec::new();
        while let Some(&(at, hosts, registered, after)) = self.steps.get(self.next) {
            if at > t {
                break;
            }
            self.next += 1;
            let before = self.expected();
            if hosts > before {
                let joins_ns = registered.then(|| at.saturating_add(after));
                self.cohorts.push_back(Cohort { count: hosts - before, joins_ns });
                let how = match (registered, after) {
                    (false, _) => format!(
                        "; the {} new hosts are never registered with the load balancer (registration fault)",
                        hosts - before
                    ),
                    (true, 0) => String::new(),
                    (true, ns) => format!(
                        "; they join the load balancer after {}",
                        ebb_engine::Duration::from_millis(ns / 1_000_000)
                    ),
                };
                let text = format!("{name} scales out from {before} to {hosts} hosts{how}");
                done.push(Scaled { at, text, launched: hosts - before, joins_ns });
            } else if hosts < before {
                // The oldest hosts go first, as an autoscaler's default termination policy does.
                let mut remove = before - hosts;
                while remove > 0 {
                    let Some(front) = self.cohorts.front_mut() else { break };
                    let n = front.count.min(remove);
                    front.count -= n;
                    remove -= n;
                    if front.count == 0 {
                        self.cohorts.pop_front();
                    }
                }
                let text = format!("{name} scales in from {before} to {hosts} hosts (oldest first)");
                done.push(Scaled { at, text, launched: 0, joins_ns: None });
            }
        }
        done
    }

    /// A restore of the pool: the operator adds every launched host to the load balancer.
    /// Returns how many joined.
    pub fn register_all(&mut self, t: u64) -> u64 {
        let mut joined = 0;
        for c in &mut self.cohorts {
            if c.joins_ns.is_none_or(|j| j > t) {
                joined += c.count;
                c.joins_ns = Some(t);
            }
        }
        joined
    }

    /// The view at `t` from the filter's gauges (`filter_available` of `filter_expected`
    /// configured hosts) and the hosts down after a crash. Also returns a timeline text when the
    /// number of unregistered hosts changed.
    pub fn view(
        &mut self,
        t: u64,
        filter_available: u64,
        filter_expected: u64,
        crashed: u64,
    ) -> (View, Option<String>) {
        let expected = self.expected();
        let members = self.registered(t);
        let drained = filter_expected.saturating_sub(filter_available);
        let available = members.saturating_sub(crashed).saturating_sub(drained);
        let unregistered = expected.saturating_sub(members);
        let change = (unregistered != self.unregistered).then(|| {
            let was = std::mem::replace(&mut self.unregistered, unregistered);
            if unregistered > was {
                format!("{unregistered} of {expected} expected hosts are not registered with the load balancer")
            } else if unregistered == 0 {
                "every expected host is registered with the load balancer".to_string()
            } else {
                format!("{unregistered} of {expected} expected hosts still not registered with the load balancer")
            }
        });
        (View { available, expected, members, unregistered }, change)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::At;
    use crate::scenario::ScaleStep;
    use ebb_engine::Duration;

    fn hosts(steps: Vec<ScaleStep>) -> Hosts {
        let text = br#"{"version": 1, "name": "s", "duration": "1h",
            "pools": [{"name": "web", "hosts": 4, "capacity_per_host": 1, "service_time": "1s"}],
            "traffic": [{"pool": "web", "points": [["+0s", 1]]}],
            "slos": [{"error_ratio": {"pool": "web", "max": 0.5}}]}"#;
        let mut scenario = Scenario::parse(std::path::Path::new("s.json"), text).unwrap();
        scenario.pools[0].scaling = steps;
        Hosts::new(&scenario, &scenario.pools[0], 0)
    }

    fn step(min: u64, hosts: u32, registered: bool) -> ScaleStep {
        ScaleStep { at: At::Offset(Duration::from_secs(min * 60)), hosts, registered, register_after: Duration::ZERO }
    }

    const MIN: u64 = 60_000_000_000;

    #[test]
    fn unregistered_hosts_are_expected_but_never_available() {
        let mut h = hosts(vec![step(10, 10, false)]);
        assert_eq!(h.view(0, 4, 4, 0).0, View { available: 4, expected: 4, members: 4, unregistered: 0 });
        let done = h.scale(10 * MIN, "web");
        assert!(done[0].text.contains("registration fault"), "{done:?}");
        let (v, change) = h.view(10 * MIN, 4, 4, 0);
        assert_eq!(v, View { available: 4, expected: 10, members: 4, unregistered: 6 });
        assert!(change.unwrap().contains("6 of 10"));
        assert_eq!(h.register_all(20 * MIN), 6);
        assert_eq!(h.view(20 * MIN, 4, 4, 0).0.available, 10);
    }

    #[test]
    fn scale_in_removes_the_oldest_hosts_first() {
        let mut h = hosts(vec![step(1, 10, false), step(2, 6, true)]);
        h.scale(2 * MIN, "web");
        // The 4 registered hosts were the oldest: the 6 left were never registered.
        let (v, _) = h.view(2 * MIN, 4, 4, 0);
        assert_eq!((v.available, v.expected, v.unregistered), (0, 6, 6));
    }

    #[test]
    fn filter_drains_and_crashes_come_off_the_registered_hosts() {
        let mut h = hosts(vec![step(1, 8, true)]);
        h.scale(MIN, "web");
        let (v, _) = h.view(MIN, 3, 4, 2);
        assert_eq!((v.available, v.expected, v.members), (8 - 1 - 2, 8, 8));
    }
}
