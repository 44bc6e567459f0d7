// Checks of meaning, run before anything is simulated: names that must exist, ranges and limits,
// moments inside the replay, and every command against the filter's own rules and caps.
// Linear in the file: names are looked up in maps, and only the problems shown are spelled out.

mod model;

use std::collections::HashMap;

use ebb_engine::{Duration, FaultRequest, FaultSet, Protocol};

use super::error::{listing, nearest, thousands, Problems};
use super::limits::{
    MAX_CAPACITY_PER_HOST, MAX_DURATION, MAX_HOSTS, MAX_PROXIES, MAX_RATE, MAX_SAMPLE, MAX_SLOTS, MAX_WORKERS,
};
use super::{At, Pool, Scenario, Signal, MAX_BUDGET_PERIOD, MAX_FAILED_ATTEMPTS, VERSION};

/// Shortest and longest real time a recovery program may be given.
const RUN_TIMEOUT_MIN: Duration = Duration::from_secs(1);
const RUN_TIMEOUT_MAX: Duration = Duration::from_secs(600);

/// Names of one kind (pools, alerts) and where each is first declared.
struct Names<'s> {
    kind: &'static str,
    index: HashMap<&'s str, usize>,
    /// In declaration order, for listings.
    order: Vec<&'s str>,
}

impl<'s> Names<'s> {
    fn new(kind: &'static str) -> Names<'s> {
        Names { kind, index: HashMap::new(), order: Vec::new() }
    }

    /// Declares `name` at position `i`; the position of an earlier declaration if there was one.
    fn declare(&mut self, name: &'s str, i: usize) -> Option<usize> {
        match self.index.get(name) {
            Some(&first) => Some(first),
            None => {
                self.index.insert(name, i);
                self.order.push(name);
                None
            }
        }
    }

    fn get(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied()
    }

    /// Problem at `path` unless `name` is declared.
    fn require(&self, problems: &mut Problems, path: String, name: &str) -> Option<usize> {
        let found = self.get(name);
        if found.is_none() {
            problems.add(path, || self.unknown(name));
        }
        found
    }

    fn unknown(&self, name: &str) -> String {
        let hint =
            nearest(name, self.order.iter().copied()).map(|n| format!("did you mean {n:?}? ")).unwrap_or_default();
        format!("no {} named {name:?} ({hint}{}s: {})", self.kind, self.kind, listing(self.order.iter().copied()))
    }
}

/// `d` within `lo..=hi`, or the problem's message.
fn within(d: Duration, lo: Duration, hi: Duration) -> Result<(), String> {
    if d < lo || d > hi {
        Err(format!("must be between {lo} and {hi}, not {d}"))
    } else {
        Ok(())
    }
}

fn at_most(d: Duration, hi: Duration) -> Result<(), String> {
    within(d, Duration::ZERO, hi)
}

fn rate_ok(rate: f64) -> bool {
    rate.is_finite() && (0.0..=MAX_RATE).contains(&rate)
}

fn rate_message() -> String {
    format!("a rate is a number of requests per second, from 0 to {}", thousands(MAX_RATE as u64))
}

impl Scenario {
    /// Checks of meaning. Every problem is counted; the first few are kept with their JSON path.
    pub fn check(&self) -> Problems {
        let mut p = Problems::default();
        if self.version != VERSION {
            // Nothing else can be read right in another version's terms.
            p.add("version", || format!("this ebb reads scenario version {VERSION}, not {}", self.version));
            return p;
        }
        self.check_run(&mut p);
        let pools = self.check_pools(&mut p);
        self.check_traffic(&mut p, &pools);
        self.check_deploys(&mut p, &pools);
        self.check_timeline(&mut p, &pools);
        let alerts = self.check_alerts(&mut p, &pools);
        self.check_rules(&mut p);
        self.check_recovery(&mut p, &pools, &alerts);
        self.check_impact(&mut p);
        self.check_slos(&mut p, &pools, &alerts);
        self.check_stop_conditions(&mut p, &pools);
        p
    }

    fn check_stop_conditions(&self, p: &mut Problems, pools: &Names<'_>) {
        for (i, c) in self.stop_conditions.iter().enumerate() {
            let at = |field: &str| format!("stop_conditions[{i}].{field}");
            pools.require(p, at("pool"), &c.pool);
            if !matches!(c.signal, Signal::ErrorRatio | Signal::ShedRatio | Signal::AvailableRatio) {
                p.add(at("signal"), || {
                    "a game day observes error_ratio, shed_ratio and available_ratio, not latency".into()
                });
            }
            match (c.above, c.below) {
                (Some(v), None) | (None, Some(v)) => {
                    let field = if c.above.is_some() { "above" } else { "below" };
                    if !(v.is_finite() && (0.0..=1.0).contains(&v)) {
                        p.add(at(field), || format!("a ratio from 0 to 1, not {v}"));
                    }
                }
                _ => p.add(format!("stop_conditions[{i}]"), || "give exactly one of above or below".into()),
            }
            if c.window < self.scrape_interval || c.window > MAX_DURATION {
                p.add(at("window"), || {
                    format!(
                        "must be between scrape_interval ({}) and {MAX_DURATION}, not {}",
                        self.scrape_interval, c.window
                    )
                });
            }
            Self::check_duration(p, at("for"), at_most(c.hold, MAX_DURATION));
        }
    }

    /// A problem at `path` unless moment `at` is inside the replay.
    fn check_moment(&self, p: &mut Problems, path: String, at: At) {
        if self.offset_ms(at) > self.duration.as_millis() {
            p.add(path, || format!("{at} is after the end of the replay ({} from {})", self.duration, self.start));
        }
    }

    fn check_duration(p: &mut Problems, path: String, result: Result<(), String>) {
        if let Err(message) = result {
            p.add(path, || message);
        }
    }

    fn check_run(&self, p: &mut Problems) {
        if self.timezone.is_some() && self.date.is_none() {
            p.add("timezone", || {
                "a timezone needs a `date` (\"YYYY-MM-DD\", the day the replay starts): without the day, its offset from UTC and any DST change are unknown".into()
            });
        }
        // A start the clocks skip would silently begin an hour later, and push the clock times
        // written before the jump's end to the next day.
        if let (Some(zone), Some(date), Some(read)) = (&self.timezone, self.date, self.reading(0.0)) {
            if read.local_s.saturating_mul(1000) != self.start.millis() {
                p.add("start", || {
                    format!(
                        "{} does not exist on {date} in {zone}: the clocks skip it (a DST change); start before the jump or after it",
                        self.start
                    )
                });
            }
        }
        Self::check_duration(p, "duration".into(), within(self.duration, Duration::from_millis(1), MAX_DURATION));
        if !(1..=MAX_SAMPLE).contains(&self.sample) {
            p.add("sample", || format!("must be between 1 and {}", thousands(MAX_SAMPLE.into())));
        }
        if !(1..=MAX_PROXIES).contains(&self.topology.proxies) {
            p.add("topology.proxies", || format!("must be between 1 and {MAX_PROXIES}"));
        }
        if !(1..=MAX_WORKERS).contains(&self.topology.workers) {
            p.add("topology.workers", || format!("must be between 1 and {MAX_WORKERS}"));
        }
        Self::check_duration(
            p,
            "scrape_interval".into(),
            within(self.scrape_interval, Duration::from_secs(1), MAX_DURATION),
        );
        let limits = &self.filter.limits;
        Self::check_duration(p, "filter.limits.max_ttl".into(), at_most(limits.max_ttl, MAX_DURATION));
        Self::check_duration(p, "filter.limits.max_delay".into(), at_most(limits.max_delay, MAX_DURATION));
        // The filter's own rules for its caps and tick, on a configuration without pools (those
        // are checked one by one below, which keeps this linear in the number of pools).
        if let Err(e) = self.config_with(Vec::new()).validate() {
            p.add(format!("filter.{}", e.path), || e.message);
        }
    }

    fn check_pools<'s>(&'s self, p: &mut Problems) -> Names<'s> {
        let mut names = Names::new("pool");
        let mut tcp: Option<usize> = None;
        // One configuration, its one pool replaced each time: the filter's rules for a pool
        // (name, hosts, capacity) without building a configuration per pool.
        let mut config = self.config_with(Vec::with_capacity(1));
        for (i, pool) in self.pools.iter().enumerate() {
            let at = |field: &str| format!("pools[{i}].{field}");
            config.pools.clear();
            config.pools.push(self.pool_config(pool));
            if let Err(e) = config.validate() {
                if let Some(field) = e.path.strip_prefix("pools[0].") {
                    p.add(at(field), || e.message);
                }
            }
            if let Some(first) = names.declare(&pool.name, i) {
                p.add(at("name"), || format!("pool {:?} is declared twice (first as pools[{first}])", pool.name));
            }
            if pool.protocol == Protocol::Tcp {
                if let Some(first) = tcp {
                    p.add(at("protocol"), || {
                        format!("a replay models one TCP listener, so at most one pool can be tcp (pools[{first}] is)")
                    });
                }
                tcp.get_or_insert(i);
            }
            if pool.hosts > MAX_HOSTS {
                p.add(at("hosts"), || format!("must be at most {}", thousands(MAX_HOSTS.into())));
            }
            if pool.capacity_per_host > MAX_CAPACITY_PER_HOST {
                p.add(at("capacity_per_host"), || {
                    format!("must be at most {}", thousands(MAX_CAPACITY_PER_HOST.into()))
                });
            }
            if u64::from(pool.hosts).saturating_mul(u64::from(pool.capacity_per_host)) > MAX_SLOTS {
                p.add(at("hosts"), || format!("hosts x capacity_per_host must be at most {}", thousands(MAX_SLOTS)));
            }
            Self::check_duration(
                p,
                at("service_time"),
                within(pool.service_time, Duration::from_millis(1), MAX_DURATION),
            );
            Self::check_duration(p, at("timeout"), at_most(pool.timeout, MAX_DURATION));
            if !(0.0..=1.0).contains(&pool.panic_threshold) {
                p.add(at("panic_threshold"), || "must be between 0 and 1".into());
            }
            self.check_pool_model(p, i, pool);
        }
        names
    }

    fn check_traffic(&self, p: &mut Problems, pools: &Names<'_>) {
        // One entry per pool: two would have to be merged (summed? the later one wins?), and a
        // reader of the file could not tell which. Refused, with where the first one is.
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for (i, t) in self.traffic.iter().enumerate() {
            let at = |field: &str| format!("traffic[{i}].{field}");
            pools.require(p, at("pool"), &t.pool);
            if let Some(first) = seen.insert(&t.pool, i) {
                seen.insert(&t.pool, first);
                p.add(at("pool"), || {
                    format!(
                        "pool {:?} already has traffic (traffic[{first}]); give its points, diurnal and bursts in one entry",
                        t.pool
                    )
                });
            }
            if t.points.is_empty() && t.diurnal.is_none() && t.bursts.is_empty() {
                p.add(format!("traffic[{i}]"), || "give points, diurnal or bursts".into());
            }
            for (j, (moment, rate)) in t.points.iter().enumerate() {
                if !rate_ok(*rate) {
                    p.add(format!("traffic[{i}].points[{j}][1]"), rate_message);
                }
                self.check_moment(p, format!("traffic[{i}].points[{j}][0]"), *moment);
            }
            if let Some(d) = &t.diurnal {
                if !(rate_ok(d.min) && rate_ok(d.max) && d.min <= d.max) {
                    p.add(at("diurnal"), || format!("needs 0 <= min <= max <= {}", thousands(MAX_RATE as u64)));
                }
            }
            for (j, b) in t.bursts.iter().enumerate() {
                let at = |field: &str| format!("traffic[{i}].bursts[{j}].{field}");
                self.check_moment(p, at("at"), b.at);
                Self::check_duration(p, at("for"), within(b.lasts, Duration::from_millis(1), MAX_DURATION));
                if !rate_ok(b.rate) {
                    p.add(at("rate"), || format!("{} (extra, added to the curve)", rate_message()));
                }
            }
        }
    }

    fn check_deploys(&self, p: &mut Problems, pools: &Names<'_>) {
        for (i, run) in self.deploys.iter().enumerate() {
            let at = |field: &str| format!("deploys[{i}].{field}");
            self.check_moment(p, at("at"), run.at);
            Self::check_duration(p, at("batch_interval"), at_most(run.batch_interval, MAX_DURATION));
            if let Some(retry) = run.retry_after {
                Self::check_duration(p, at("retry_after"), at_most(retry, MAX_DURATION));
                if run.fail_at_batch.is_none() {
                    p.add(at("retry_after"), || "only a deploy that fails (fail_at_batch) retries".into());
                }
            }
            if run.pools.is_empty() {
                p.add(at("pools"), || "name at least one pool".into());
            }
            let mut named: HashMap<&str, usize> = HashMap::new();
            for (j, pool) in run.pools.iter().enumerate() {
                let path = format!("deploys[{i}].pools[{j}]");
                if let Some(first) = named.insert(pool, j) {
                    named.insert(pool, first);
                    p.add(path, || format!("pool {pool:?} is named twice (deploys[{i}].pools[{first}])"));
                    continue;
                }
                let Some(k) = pools.require(p, path, pool) else { continue };
                for retry in [false, true] {
                    let fault = self.deploy_fault(i, run, pool, retry);
                    if let Err(e) = self.try_fault(&self.pools[k], &fault) {
                        p.add(format!("deploys[{i}]"), || format!("pool {pool}: {e}"));
                        break;
                    }
                }
            }
        }
    }

    fn check_timeline(&self, p: &mut Problems, pools: &Names<'_>) {
        for (i, a) in self.timeline.iter().enumerate() {
            self.check_moment(p, format!("timeline[{i}].at"), a.at);
            let kinds = usize::from(a.command.is_some())
                + usize::from(a.restore.is_some())
                + usize::from(a.clear.is_some())
                + usize::from(a.clear_all);
            if kinds != 1 {
                p.add(format!("timeline[{i}]"), || "give exactly one of command, restore, clear, clear_all".into());
            }
            if let Some(pool) = &a.restore {
                pools.require(p, format!("timeline[{i}].restore"), pool);
            }
            if let Some(command) = &a.command {
                let path = format!("timeline[{i}].command");
                let spec = match command.spec() {
                    Ok(spec) => spec,
                    Err(e) => {
                        p.add(path, || e.to_string());
                        continue;
                    }
                };
                let pool = match spec.kind().pool() {
                    Some(name) => match pools.get(name) {
                        Some(k) => Some(&self.pools[k]),
                        None => {
                            p.add(path, || pools.unknown(name));
                            continue;
                        }
                    },
                    None => None,
                };
                let result = match pool {
                    Some(pool) => self.try_fault(pool, command),
                    None => self.try_fault_without_pool(command),
                };
                if let Err(e) = result {
                    p.add(path, || e);
                }
            }
        }
    }

    fn check_alerts<'s>(&'s self, p: &mut Problems, pools: &Names<'_>) -> Names<'s> {
        let mut names = Names::new("alert");
        for (i, a) in self.alerts.iter().enumerate() {
            let at = |field: &str| format!("alerts[{i}].{field}");
            if let Some(first) = names.declare(&a.name, i) {
                p.add(at("name"), || format!("alert {:?} is defined twice (first as alerts[{first}])", a.name));
            }
            pools.require(p, at("pool"), &a.pool);
            if a.above.is_some() == a.below.is_some() {
                p.add(format!("alerts[{i}]"), || "give exactly one of above or below".into());
            }
            if a.window < self.scrape_interval || a.window > MAX_DURATION {
                p.add(at("window"), || {
                    format!(
                        "must be between scrape_interval ({}) and {MAX_DURATION}, not {}",
                        self.scrape_interval, a.window
                    )
                });
            }
            Self::check_duration(p, at("for"), at_most(a.hold, MAX_DURATION));
            Self::check_duration(p, at("keep_firing_for"), at_most(a.keep_firing_for, MAX_DURATION));
        }
        names
    }

    /// Rule files name files next to the scenario (promtool checks their content at replay).
    fn check_rules(&self, p: &mut Problems) {
        for (i, file) in self.rules.iter().enumerate() {
            if file.trim().is_empty() {
                p.add(format!("rules[{i}]"), || {
                    "give the path of a Prometheus rule file, like \"../deploy/prometheus/ebb-alerts.yaml\"".into()
                });
            } else if !self.dir.join(file).is_file() {
                let dir = if self.dir.as_os_str().is_empty() { ".".into() } else { self.dir.display().to_string() };
                p.add(format!("rules[{i}]"), || {
                    format!("no rule file {file:?} in {dir} (paths are relative to the scenario file)")
                });
            }
        }
    }

    fn check_recovery(&self, p: &mut Problems, pools: &Names<'_>, alerts: &Names<'_>) {
        for (i, r) in self.recovery.iter().enumerate() {
            let at = |field: &str| format!("recovery[{i}].{field}");
            match (r.on.is_empty(), &r.when) {
                (true, None) | (false, Some(_)) => p.add(format!("recovery[{i}]"), || {
                    "give exactly one trigger: on (an alert's name) or when (a pool condition)".into()
                }),
                // With rule files, the alerts are theirs: checked against them when the replay loads them.
                (false, None) if self.rules.is_empty() => {
                    alerts.require(p, at("on"), &r.on);
                }
                _ => {}
            }
            if let Some(w) = &r.when {
                pools.require(p, at("when.pool"), &w.pool);
                if !(0.0..=1.0).contains(&w.below) {
                    p.add(at("when.below"), || "a share of expected hosts, from 0 to 1 (1 = any host missing)".into());
                }
                Self::check_duration(p, at("when.for"), at_most(w.hold, MAX_DURATION));
            }
            if r.fails > MAX_FAILED_ATTEMPTS {
                p.add(at("fails"), || format!("at most {MAX_FAILED_ATTEMPTS} failed attempts"));
            }
            if let Some(every) = r.retry_every {
                if r.fails == 0 {
                    p.add(at("retry_every"), || "only a step that fails (fails) is retried".into());
                }
                Self::check_duration(p, at("retry_every"), within(every, Duration::from_millis(1), MAX_DURATION));
            }
            Self::check_duration(p, at("after"), at_most(r.after, MAX_DURATION));
            if usize::from(r.restore.is_some()) + usize::from(r.clear_all) + usize::from(r.run.is_some()) != 1 {
                p.add(format!("recovery[{i}]"), || "give exactly one of restore, clear_all or run".into());
            }
            if let Some(run) = &r.run {
                if run.first().is_none_or(|program| program.is_empty()) {
                    p.add(at("run"), || {
                        "give the program and its arguments, like [\"scripts/recover-pool.sh\", \"--verbose\"]".into()
                    });
                }
            }
            if let Some(timeout) = r.timeout {
                if r.run.is_none() {
                    p.add(at("timeout"), || "only a recovery program (run) has a timeout".into());
                }
                Self::check_duration(p, at("timeout"), within(timeout, RUN_TIMEOUT_MIN, RUN_TIMEOUT_MAX));
            }
            if let Some(pool) = &r.restore {
                pools.require(p, at("restore"), pool);
            }
        }
    }

    fn check_impact(&self, p: &mut Problems) {
        let impact = &self.impact;
        if !(0.0..=1.0).contains(&impact.error_ratio) {
            p.add("impact.error_ratio", || "must be between 0 and 1, like 0.01".into());
        }
        if let Some(latency) = impact.latency_p90 {
            if !(latency.is_finite() && latency >= 0.0) {
                p.add("impact.latency_p90", || "a latency in seconds, 0 or more".into());
            }
        }
        Self::check_window(p, "impact.window".into(), impact.window);
        Self::check_duration(p, "impact.for".into(), at_most(impact.sustained, MAX_DURATION));
    }

    /// A window of scrapes for SLOs and impact: one shorter than `scrape_interval` covers one
    /// scrape (the defaults are shorter than a long scrape interval), and `0s` covers nothing.
    fn check_window(p: &mut Problems, path: String, window: Duration) {
        Self::check_duration(p, path, within(window, Duration::from_millis(1), MAX_DURATION));
    }

    fn check_slos(&self, p: &mut Problems, pools: &Names<'_>, alerts: &Names<'_>) {
        if self.slos.is_empty() {
            p.add("slos", || "a scenario needs at least one SLO: it is what the verdict is made of".into());
        }
        for (i, s) in self.slos.iter().enumerate() {
            let at = |field: &str| format!("slos[{i}].{field}");
            let kinds = [
                s.time_to_detect.is_some(),
                s.time_to_restore.is_some(),
                s.no_page.is_some(),
                s.error_ratio.is_some(),
                s.latency_p99.is_some(),
                s.error_budget.is_some(),
            ];
            if kinds.iter().filter(|k| **k).count() != 1 {
                p.add(format!("slos[{i}]"), || {
                    "give exactly one of time_to_detect, time_to_restore, no_page, error_ratio, latency_p99, error_budget"
                        .into()
                });
            }
            for (kind, within) in [("time_to_detect", &s.time_to_detect), ("time_to_restore", &s.time_to_restore)] {
                if let Some(w) = within {
                    pools.require(p, at(&format!("{kind}.pool")), &w.pool);
                    Self::check_duration(p, at(&format!("{kind}.max")), at_most(w.max, MAX_DURATION));
                }
            }
            if let Some(n) = &s.no_page {
                if n.alerts.is_empty() {
                    p.add(at("no_page.alerts"), || "name at least one alert".into());
                }
                for (j, a) in n.alerts.iter().enumerate() {
                    if self.rules.is_empty() {
                        alerts.require(p, format!("slos[{i}].no_page.alerts[{j}]"), a);
                    }
                }
            }
            if let Some(r) = &s.error_ratio {
                pools.require(p, at("error_ratio.pool"), &r.pool);
                if !(0.0..=1.0).contains(&r.max) {
                    p.add(at("error_ratio.max"), || "must be between 0 and 1, like 0.01".into());
                }
                Self::check_window(p, at("error_ratio.window"), r.window);
            }
            if let Some(r) = &s.latency_p99 {
                pools.require(p, at("latency_p99.pool"), &r.pool);
                if !(r.max.is_finite() && r.max >= 0.0) {
                    p.add(at("latency_p99.max"), || "a latency in seconds, 0 or more".into());
                }
                Self::check_window(p, at("latency_p99.window"), r.window);
            }
            if let Some(b) = &s.error_budget {
                pools.require(p, at("error_budget.pool"), &b.pool);
                if !(b.objective > 0.0 && b.objective < 1.0) {
                    p.add(at("error_budget.objective"), || "must be between 0 and 1, like 0.999".into());
                }
                if !(b.max.is_finite() && b.max >= 0.0) {
                    p.add(at("error_budget.max"), || "a share of the budget, 0 or more (1.0 = all of it)".into());
                }
                if let Some(period) = b.period {
                    Self::check_duration(
                        p,
                        at("error_budget.period"),
                        within(period, Duration::from_secs(1), MAX_BUDGET_PERIOD),
                    );
                }
            }
        }
    }

    /// `fault` against the filter's rules and caps, on a configuration holding only `pool`:
    /// the filter's checks of a fault read no other pool, and this keeps them linear.
    fn try_fault(&self, pool: &Pool, fault: &FaultRequest) -> Result<(), String> {
        let config = self.config_with(vec![self.pool_config(pool)]);
        FaultSet::default().add(&config, fault, 0).map(|_| ()).map_err(|e| e.to_string())
    }

    fn try_fault_without_pool(&self, fault: &FaultRequest) -> Result<(), String> {
        let config = self.config_with(Vec::new());
        FaultSet::default().add(&config, fault, 0).map(|_| ()).map_err(|e| e.to_string())
    }
}
