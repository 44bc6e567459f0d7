// What a replay will cost, known before it runs (simulated requests, VMs, memory, steps), the
// budget it must fit, and the meter that stops a replay exceeding its budget anyway.
// `ebb check` prints the estimate; `ebb check` and `ebb replay` refuse one over budget.

use std::collections::HashMap;
use std::fmt;

use super::stats::Sample;
use super::traffic::Curve;
use crate::scenario::error::thousands;
use crate::scenario::Scenario;
use ebb_engine::Protocol;

// Memory figures measured on replays of ebb.wasm (resident set, docs/scenarios.md#budget),
// rounded up: the estimate should err on the large side.

/// One VM: a wasmtime instance of ebb.wasm with the pages it touches and the host's per-worker
/// state (measured: 82 KiB with 4,096 VMs).
const VM_BYTES: u64 = 128 * 1024;
/// The engine, the compiled module and the rest of a small replay (measured: 30 MiB).
const BASE_BYTES: u64 = 32 * 1024 * 1024;
/// One request in flight: the simulator's record, the host's stream and the filter's context
/// (measured: 1.1 KiB with 60,000 in flight).
const FLIGHT_BYTES: u64 = 2 * 1024;
/// Steps per simulated request besides reading its curve: its arrival and its end.
const STEPS_PER_REQUEST: u64 = 2;

/// The most a replay may do. The meter counts requests and steps as the replay runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget {
    /// Simulated requests and connections.
    pub requests: u64,
    /// VMs: proxies x workers (x 2 with a TCP pool, whose network filter has VMs of its own).
    pub vms: u64,
    /// Estimated memory, in bytes.
    pub memory_bytes: u64,
    /// Steps of the simulator: events (arrivals, ends, scrapes, polls...), gauges read, alert
    /// rules evaluated, paused requests looked at, and the slow curves' once-a-second re-reads.
    pub steps: u64,
}

impl Budget {
    /// What `ebb check` and `ebb replay` accept: about three minutes (150,000 simulated requests
    /// a second on one core) and 4 GiB at most.
    pub const DEFAULT: Budget = Budget { requests: 20_000_000, vms: 1_024, memory_bytes: 4 << 30, steps: 400_000_000 };
    /// With `--allow-large`: hours, but still a bound, never a hang. Each VM reserves 4 GiB of
    /// address space (wasmtime's default), so 16,384 VMs are 64 TiB of the 128 TiB a process has.
    pub const LARGE: Budget =
        Budget { requests: 2_000_000_000, vms: 16_384, memory_bytes: 256 << 30, steps: 40_000_000_000 };

    pub fn new(allow_large: bool) -> Budget {
        if allow_large {
            Budget::LARGE
        } else {
            Budget::DEFAULT
        }
    }
}

impl fmt::Display for Budget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} simulated requests, {} VMs, {}, {} steps",
            thousands(self.requests),
            thousands(self.vms),
            mib(self.memory_bytes),
            thousands(self.steps)
        )
    }
}

/// What a replay of a scenario is expected to cost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Estimate {
    /// The integral of every pool's rate curve over the replay (Poisson arrivals follow it
    /// closely: the count differs by about its square root).
    pub requests: u64,
    pub vms: u64,
    /// VMs, scrapes kept for the report, requests in flight at the peak rates, and the rest.
    pub memory_bytes: u64,
    pub steps: u64,
}

impl Estimate {
    /// Each figure over `budget`, in words; empty when it fits.
    pub fn over(&self, budget: &Budget) -> Vec<String> {
        let mut over = Vec::new();
        let mut check = |what: &str, got: u64, max: u64, shown: fn(u64) -> String| {
            if got > max {
                over.push(format!("{} {what} (budget {})", shown(got), shown(max)));
            }
        };
        check("simulated requests", self.requests, budget.requests, thousands);
        check("VMs", self.vms, budget.vms, thousands);
        check("of memory", self.memory_bytes, budget.memory_bytes, mib);
        check("steps", self.steps, budget.steps, thousands);
        over
    }
}

impl fmt::Display for Estimate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "~{} simulated requests, {} VMs, ~{}, ~{} steps",
            thousands(self.requests),
            thousands(self.vms),
            mib(self.memory_bytes),
            thousands(self.steps)
        )
    }
}

fn mib(bytes: u64) -> String {
    format!("{} MiB", thousands(bytes.div_ceil(1 << 20)))
}

/// Floats to counts: rounded up, saturating (a float past u64 is u64::MAX, NaN is 0).
fn count(x: f64) -> u64 {
    x.max(0.0).ceil() as u64
}

/// The cost of replaying `s` (checked: it reads the limits `ebb check` enforces, and is linear
/// in the scenario's size).
pub fn estimate(s: &Scenario) -> Estimate {
    let duration_s = s.duration.as_millis() as f64 / 1000.0;
    let sides: u64 = if s.pools.iter().any(|p| p.protocol == Protocol::Tcp) { 2 } else { 1 };
    let proxies = u64::from(s.topology.proxies);
    let vms = proxies.saturating_mul(u64::from(s.topology.workers)).saturating_mul(sides);
    let pools: HashMap<&str, usize> = s.pools.iter().enumerate().map(|(i, p)| (p.name.as_str(), i)).collect();
    let held_s = |i: usize| {
        let p = &s.pools[i];
        (p.service_time.as_millis() as f64
            + p.timeout.as_millis() as f64
            + s.filter.limits.max_delay.as_millis() as f64)
            / 1000.0
    };
    let (mut requests, mut in_flight, mut request_steps) = (0.0f64, 0.0f64, 0.0f64);
    for t in &s.traffic {
        let curve = Curve::new(s, &[t]);
        let n = curve.integral(duration_s);
        requests += n;
        request_steps += n * (STEPS_PER_REQUEST + curve.cost()) as f64;
        // Little's law at the peak rate, with every request held as long as it can be.
        in_flight += curve.peak() * pools.get(t.pool.as_str()).map_or(0.0, |&i| held_s(i));
    }
    let scrape_ms = s.scrape_interval.as_millis().max(1);
    let scrapes = s.duration.as_millis() / scrape_ms;
    let n_pools = s.pools.len() as u64;
    let n_alerts = s.alerts.len() as u64;
    let minutes = s.duration.as_millis().div_ceil(60_000);
    let memory = BASE_BYTES
        .saturating_add(vms.saturating_mul(VM_BYTES))
        .saturating_add(n_pools.saturating_mul(scrapes).saturating_mul(std::mem::size_of::<Sample>() as u64))
        // The report's per-minute series: five numbers per pool and minute.
        .saturating_add(n_pools.saturating_mul(minutes).saturating_mul(5 * 8))
        .saturating_add(count(in_flight).saturating_mul(FLIGHT_BYTES));
    let requests = count(requests);
    // Each scrape reads three gauges per pool and proxy and evaluates every alert rule.
    let per_scrape = 1u64.saturating_add(n_pools.saturating_mul(proxies).saturating_mul(3)).saturating_add(n_alerts);
    let steps = count(request_steps)
        .saturating_add(scrapes.saturating_mul(per_scrape))
        // A slow or idle curve is re-read once a second at most.
        .saturating_add(n_pools.saturating_mul(count(duration_s)));
    Estimate { requests, vms, memory_bytes: memory, steps }
}

/// Counts what a replay does against its budget; the simulator stops at the first figure over.
#[derive(Debug)]
pub struct Meter {
    budget: Budget,
    pub requests: u64,
    pub steps: u64,
}

impl Meter {
    pub fn new(budget: Budget) -> Meter {
        Meter { budget, requests: 0, steps: 0 }
    }

    pub fn request(&mut self) {
        self.requests = self.requests.saturating_add(1);
    }

    pub fn steps(&mut self, n: u64) {
        self.steps = self.steps.saturating_add(n);
    }

    /// What went over the budget, in words, if anything did.
    pub fn exceeded(&self) -> Option<String> {
        if self.requests > self.budget.requests {
            Some(format!("more than {} simulated requests", thousands(self.budget.requests)))
        } else if self.steps > self.budget.steps {
            Some(format!("more than {} steps", thousands(self.budget.steps)))
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn over_names_every_figure_past_the_budget() {
        let e = Estimate { requests: 30_000_000, vms: 2, memory_bytes: 5 << 30, steps: 1 };
        let over = e.over(&Budget::DEFAULT);
        assert_eq!(over.len(), 2, "{over:?}");
        assert!(over[0].contains("30,000,000 simulated requests (budget 20,000,000)"), "{over:?}");
        assert!(over[1].contains("5,120 MiB of memory"), "{over:?}");
        assert!(e.over(&Budget::LARGE).is_empty());
    }

    #[test]
    fn the_meter_stops_at_the_first_figure_over() {
        let mut m = Meter::new(Budget { requests: 2, vms: 1, memory_bytes: 1, steps: 10 });
        m.request();
        m.request();
        m.steps(10);
        assert_eq!(m.exceeded(), None);
        m.request();
        assert!(m.exceeded().is_some_and(|w| w.contains("more than 2 simulated requests")));
        let mut m = Meter::new(Budget::DEFAULT);
        m.steps(u64::MAX);
        m.steps(u64::MAX);
        assert!(m.exceeded().is_some_and(|w| w.contains("steps")), "saturates, never wraps");
    }
}
