// Load-dependent failure: a pool whose hosts stay above their concurrency bound loses one host
// per `for` to a crash; each comes back after its restart delay and, like a newly launched host,
// serves slower while it warms up. Evaluated at every scrape, from what the pool holds then.

use std::collections::VecDeque;

use ebb_engine::rng::Rng;

use crate::scenario;

/// One pool's overload state.
#[derive(Debug)]
pub struct Overload {
    concurrency: f64,
    hold_ns: u64,
    restart_ns: u64,
    warmup_ns: u64,
    factor: f64,
    /// Since when the pool has been overloaded at every scrape.
    hot_since: Option<u64>,
    /// When each crashed host is back, earliest first.
    crashed: VecDeque<u64>,
    /// Hosts that serve slower from `from` until `until`: restarted, or launched and joining the
    /// load balancer at `from` (a step's `register_after` may put that in the future).
    warming: Vec<Warming>,
    /// Hosts warming at the last scrape or start: the share of requests served slower.
    warm_now: u64,
}

/// Hosts that warm up together.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Warming {
    from: u64,
    until: u64,
    hosts: u64,
}

/// What changed at a scrape, for the timeline.
#[derive(Debug, Default, PartialEq)]
pub struct Change {
    pub crashed: bool,
    pub restarted: u64,
}

fn ns(ms: u64) -> u64 {
    ms.saturating_mul(1_000_000)
}

impl Overload {
    pub fn new(o: &scenario::Overload) -> Overload {
        Overload {
            concurrency: f64::from(o.concurrency),
            hold_ns: ns(o.hold.as_millis()),
            restart_ns: ns(o.restart.as_millis()),
            warmup_ns: ns(o.warmup.as_millis()),
            factor: o.warmup_factor,
            hot_since: None,
            crashed: VecDeque::new(),
            warming: Vec::new(),
            warm_now: 0,
        }
    }

    /// Hosts down after a crash.
    pub fn crashed(&self) -> u64 {
        self.crashed.len() as u64
    }

    /// `hosts` hosts start serving at `t` (launched, restarted, or joining the load balancer
    /// later): they warm up from then, and slow no request before.
    pub fn started(&mut self, t: u64, hosts: u64) {
        if self.warmup_ns == 0 || hosts == 0 {
            return;
        }
        self.warming.push(Warming { from: t, until: t.saturating_add(self.warmup_ns), hosts });
    }

    /// A restore at `t` adds `hosts` launched hosts to the load balancer now: those still
    /// waiting to join warm up from now, not again when they would have joined.
    pub fn registered_now(&mut self, t: u64, hosts: u64) {
        self.warming.retain(|w| w.from <= t);
        self.started(t, hosts);
        self.recount(t);
    }

    /// Forgets warm-ups over by `t` and counts the hosts warming at `t`.
    fn recount(&mut self, t: u64) {
        self.warming.retain(|w| w.until > t);
        self.warm_now = self.warming.iter().filter(|w| w.from <= t).map(|w| w.hosts).fold(0, u64::saturating_add);
    }

    /// A restore of the pool at `t`: the operator restarts every crashed host now rather than
    /// waiting for its restart delay (they warm up), and the fresh hosts get a whole `for` before
    /// the next crash. Returns how many came back.
    pub fn restart_all(&mut self, t: u64) -> u64 {
        let n = self.crashed();
        self.crashed.clear();
        self.started(t, n);
        self.recount(t);
        self.hot_since = None;
        n
    }

    /// The scrape at `t`: `load` requests in service or waiting on `serving` hosts, of which
    /// `members` are registered. Restarts those due, then crashes one host if the pool has been
    /// over its bound for `for`.
    pub fn scrape(&mut self, t: u64, load: u64, serving: u64, members: u64) -> Change {
        let mut change = Change::default();
        while self.crashed.front().is_some_and(|&back| back <= t) {
            self.crashed.pop_front();
            change.restarted += 1;
        }
        self.started(t, change.restarted);
        self.recount(t);
        // A host removed by a scale-in cannot stay crashed.
        while self.crashed() > members {
            self.crashed.pop_back();
        }
        let overloaded = serving > 0 && load as f64 / serving as f64 > self.concurrency;
        if !overloaded {
            self.hot_since = None;
            return change;
        }
        let since = *self.hot_since.get_or_insert(t);
        if t.saturating_sub(since) >= self.hold_ns {
            self.crashed.push_back(t.saturating_add(self.restart_ns));
            change.crashed = true;
            // The next host needs another `for` of overload.
            self.hot_since = Some(t);
        }
        change
    }

    /// How many times longer a request takes on the host it lands on: `warmup_factor` when that
    /// host is warming (a share `warming / serving` of requests), else 1. Draws only while a host
    /// warms, so replays without warming hosts draw as they always did.
    pub fn service_factor(&self, serving: u64, rng: &mut Rng) -> f64 {
        if self.warm_now == 0 || serving == 0 {
            return 1.0;
        }
        let share = (self.warm_now as f64 / serving as f64).min(1.0);
        if rng.roll(100.0 * share) {
            self.factor
        } else {
            1.0
        }
    }

    pub fn describe_crash(&self, load: u64, serving: u64) -> String {
        let per_host = if serving == 0 { 0.0 } else { load as f64 / serving as f64 };
        format!(
            "a host crashes under overload ({per_host:.1} requests per host > {}); back in {}",
            self.concurrency,
            ebb_engine::Duration::from_millis(self.restart_ns / 1_000_000)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ebb_engine::Duration;

    const S: u64 = 1_000_000_000;

    fn overload() -> Overload {
        Overload::new(&scenario::Overload {
            concurrency: 4,
            hold: Duration::from_secs(30),
            restart: Duration::from_secs(120),
            warmup: Duration::from_secs(60),
            warmup_factor: 3.0,
        })
    }

    #[test]
    fn a_host_crashes_after_for_of_overload_and_restarts_warm() {
        let mut o = overload();
        assert_eq!(o.scrape(0, 50, 10, 10), Change::default(), "5 per host: hot, not yet for 30s");
        assert_eq!(o.scrape(15 * S, 50, 10, 10), Change::default());
        assert!(o.scrape(30 * S, 50, 10, 10).crashed);
        assert_eq!(o.crashed(), 1);
        assert!(!o.scrape(45 * S, 50, 9, 10).crashed, "the next crash needs another 30s");
        assert!(o.scrape(60 * S, 50, 9, 10).crashed);
        assert_eq!(o.scrape(150 * S, 0, 8, 10).restarted, 1, "back 120s after the first crash");
        assert_eq!(o.crashed(), 1);
        let mut rng = Rng::new(1);
        let slow = (0..1000).filter(|_| o.service_factor(9, &mut rng) > 1.0).count();
        assert!((60..200).contains(&slow), "1 of 9 hosts warming: {slow} of 1000 slow");
        // The second host, back at 180s, is seen at the next scrape and warms until 271s.
        assert_eq!(o.scrape(211 * S, 0, 10, 10).restarted, 1);
        o.scrape(300 * S, 0, 10, 10);
        assert_eq!(o.service_factor(10, &mut rng), 1.0, "both warm after 60s");
    }

    #[test]
    fn a_restore_restarts_crashed_hosts_at_once_and_they_warm_up() {
        let mut o = overload();
        o.scrape(0, 50, 10, 10);
        assert!(o.scrape(30 * S, 50, 10, 10).crashed);
        assert_eq!(o.restart_all(40 * S), 1, "back at the restore, not 120s after the crash");
        assert_eq!(o.crashed(), 0);
        let mut rng = Rng::new(1);
        assert!((0..100).any(|_| o.service_factor(10, &mut rng) > 1.0), "warming until 100s");
        assert_eq!(o.scrape(150 * S, 0, 10, 10).restarted, 0, "no second restart of the same host");
        assert!(!o.scrape(160 * S, 50, 10, 10).crashed, "a whole `for` again before the next crash");
        assert!(!o.scrape(175 * S, 50, 10, 10).crashed);
        assert!(o.scrape(190 * S, 50, 10, 10).crashed);
    }

    #[test]
    fn hosts_that_join_later_slow_no_request_before_they_join() {
        let mut o = overload();
        // Launched at 0, joining the load balancer at 600s (a step's register_after).
        o.started(600 * S, 7);
        o.scrape(15 * S, 0, 3, 3);
        let mut rng = Rng::new(1);
        assert!((0..1000).all(|_| o.service_factor(3, &mut rng) == 1.0), "booting hosts serve nothing yet");
        o.scrape(615 * S, 0, 10, 10);
        let slow = (0..1000).filter(|_| o.service_factor(10, &mut rng) > 1.0).count();
        assert!(slow > 500, "7 of 10 hosts warming once they joined: {slow} of 1000 slow");
        o.scrape(700 * S, 0, 10, 10);
        assert_eq!(o.service_factor(10, &mut rng), 1.0, "warm 60s after they joined");
        // A restore that registers them early starts their warm-up then, and only once.
        let mut o = overload();
        o.started(600 * S, 7);
        o.registered_now(100 * S, 7);
        assert!((0..100).any(|_| o.service_factor(10, &mut rng) > 1.0), "warming from the restore");
        o.scrape(615 * S, 0, 10, 10);
        assert_eq!(o.service_factor(10, &mut rng), 1.0, "not warming again at 600s");
    }

    #[test]
    fn a_scrape_under_the_bound_resets_the_clock() {
        let mut o = overload();
        o.scrape(0, 50, 10, 10);
        o.scrape(15 * S, 10, 10, 10);
        assert!(!o.scrape(30 * S, 50, 10, 10).crashed);
        assert!(!o.scrape(45 * S, 50, 10, 10).crashed);
        assert!(o.scrape(60 * S, 50, 10, 10).crashed);
    }
}
