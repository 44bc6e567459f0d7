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
    /// Until when each warming host serves slower, earliest first.
    warming: VecDeque<u64>,
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
            warming: VecDeque::new(),
        }
    }

    /// Hosts down after a crash.
    pub fn crashed(&self) -> u64 {
        self.crashed.len() as u64
    }

    /// `hosts` hosts start now (launched or restarted): they warm up.
    pub fn started(&mut self, t: u64, hosts: u64) {
        if self.warmup_ns == 0 {
            return;
        }
        let until = t.saturating_add(self.warmup_ns);
        // Bounded by the pool's hosts: a step launches at most 100,000.
        let n = hosts.min(crate::scenario::limits::MAX_HOSTS.into());
        self.warming.extend(std::iter::repeat_n(until, usize::try_from(n).unwrap_or(0)));
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
        while self.warming.front().is_some_and(|&until| until <= t) {
            self.warming.pop_front();
        }
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
        if self.warming.is_empty() || serving == 0 {
            return 1.0;
        }
        let share = (self.warming.len() as f64 / serving as f64).min(1.0);
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
    fn a_scrape_under_the_bound_resets_the_clock() {
        let mut o = overload();
        o.scrape(0, 50, 10, 10);
        o.scrape(15 * S, 10, 10, 10);
        assert!(!o.scrape(30 * S, 50, 10, 10).crashed);
        assert!(!o.scrape(45 * S, 50, 10, 10).crashed);
        assert!(o.scrape(60 * S, 50, 10, 10).crashed);
    }
}
