// The replay: a discrete-event simulation in which synthetic traffic passes through the real
// filter in simulated proxies, is served by simulated pools, and feeds scrapes, alert rules,
// recovery actions and, at the end, the report with its SLO verdicts. Times are u64 nanoseconds
// that only ever add saturating: a moment past the end is simply never reached.

pub mod budget;
pub mod overload;
pub mod queue;
pub mod recovery;
mod runbook;
pub mod scaling;
pub mod stats;
pub mod traffic;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};

use ebb_engine::metrics::PoolMetric;
use ebb_engine::rng::Rng;
use ebb_engine::{FaultRequest, Protocol};

use crate::alert::{Alert, Transition};
use crate::clock::Clock;
use crate::control::{self, RawRequest, RawResponse};
use crate::host::{
    FailurePolicy, HeaderMap, HostError, HostProfile, Peer, Plugin, Proxy, ProxyOptions, Step, StreamId,
};
use crate::report::{self, AlertResult, Event, Report, Requests};
use crate::rules;
use crate::scenario::{Scenario, Service};
use crate::series::Recorder;
use budget::Meter;
pub use budget::{estimate, Budget, Estimate};
use stats::{Bucket, Sample};
use traffic::Curve;

/// How often paused requests (delays, queues) are looked at, in ms.
const POLL_MS: u64 = 10;
/// Filter failures reported one by one in the timeline; the rest are counted.
const MAX_FAILURE_EVENTS: u64 = 5;
/// Control calls of one recovery program reported one by one in the timeline; the rest are counted.
const MAX_CALL_EVENTS: usize = 20;

/// Why a replay could not run or finish (the scenario loaded; the host or filter could not
/// start, or the replay is larger than its budget).
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("proxy {proxy}: {source}")]
    Proxy { proxy: usize, source: HostError },
    #[error("the filter refused the replay's configuration: {0}")]
    Config(String),
    /// Refused before it ran: the estimate is over the budget.
    #[error("the replay would exceed its budget: {}", over.join("; "))]
    TooLarge { estimate: Estimate, over: Vec<String> },
    /// Stopped while it ran: it did more than its budget allows (what the estimate could not
    /// foresee, such as requests held by delays and polled meanwhile).
    #[error("the replay stopped at {at} (simulated): {what}, its budget")]
    OverBudget { what: String, at: String },
    /// `--rules`: Prometheus could not evaluate them (it stopped, or the replay was interrupted).
    #[error("the replay stopped at {at} (simulated): {reason}")]
    Rules { at: String, reason: crate::rules::RulesError },
    /// The rule files could not be used (Prometheus missing, promtool refused one), or
    /// Prometheus did not start.
    #[error("{0}")]
    RuleFiles(crate::rules::RulesError),
}

/// The `:status` of what a client got (0 if it has none).
fn status_of(m: &crate::host::Message) -> u32 {
    m.headers.get_str(":status").and_then(|s| s.parse().ok()).unwrap_or(0)
}

/// Nanoseconds in `ms` milliseconds, saturating: a time past u64 is never reached.
fn ns(ms: u64) -> u64 {
    ms.saturating_mul(1_000_000)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Ev {
    Scrape,
    /// A deploy run; `true` for the tooling's retry after an abort.
    Deploy(usize, bool),
    Timeline(usize),
    /// A runbook step and its attempt (0 first).
    Recovery(usize, u32),
    Poll,
    Done(usize),
    Arrival(usize),
}

struct Flight {
    proxy: usize,
    stream: StreamId,
    pool: usize,
    start_ns: u64,
    /// Holding an upstream slot (to release when done).
    serving: bool,
}

struct PoolSim {
    curve: Curve,
    protocol: Protocol,
    /// Every request's headers, kept as the host's map: copied into each stream in one go.
    headers: HeaderMap,
    mean_ms: u64,
    exponential: bool,
    timeout_ns: u64,
    capacity_per_host: u64,
    /// Upstream slots (available hosts x capacity) and how many are busy.
    slots: u64,
    panic_threshold: f64,
    /// In Envoy's panic mode (too few hosts left), the share of requests sent to drained hosts.
    panic_share: f64,
    busy: u64,
    waiting: VecDeque<(usize, u64)>,
    bucket: Bucket,
    samples: Vec<Sample>,
    requests: u64,
    errors: u64,
    /// The pool's hosts beside the filter's faults: scaling, registration (sim/scaling.rs).
    hosts: scaling::Hosts,
    /// Load-dependent crashes and warm-up (sim/overload.rs).
    overload: Option<overload::Overload>,
    /// Requests one serving host holds waiting (sim/queue.rs); None: no bound.
    backlog: Option<u64>,
    /// True when scaling or overload is modelled; otherwise the filter's gauges are the hosts.
    modelled: bool,
}

struct Sim<'s> {
    scenario: &'s Scenario,
    /// Host proxies per simulated Envoy: HTTP side, then TCP side if any pool is TCP.
    sides: usize,
    key: String,
    proxies: Vec<Proxy>,
    pools: Vec<PoolSim>,
    alerts: Vec<Alert>,
    flights: Vec<Option<Flight>>,
    free: Vec<usize>,
    paused: Vec<usize>,
    poll_armed: bool,
    /// The upstream's answers, as the host's maps: a served request's and a given-up one's.
    served: HeaderMap,
    gave_up: HeaderMap,
    queue: BinaryHeap<Reverse<(u64, u64, Ev)>>,
    seq: u64,
    rng: Rng,
    start_ns: u64,
    end_ns: u64,
    next_proxy: usize,
    nonce: u64,
    events: Vec<Event>,
    simulated: u64,
    filter_failures: u64,
    /// Serves the control API to recovery programs; started at the first one, stopped with the
    /// replay.
    server: Option<recovery::ControlServer>,
    /// The recovery rules each alert triggers, by alert index.
    runbooks: Vec<Vec<usize>>,
    /// The runbooks' pool-condition triggers.
    triggers: runbook::Triggers,
    meter: Meter,
    /// `--export-series` and `--rules`: every scrape's series (None otherwise: no cost).
    series: Option<Box<Recorder>>,
    /// `--rules`: the rule files, evaluated by Prometheus at every scrape.
    rules: Option<Box<rules::Evaluator>>,
    /// Why the rules stopped the replay.
    rules_error: Option<ReplayError>,
}

/// What a replay produces besides its report, on request: the series a deployment would scrape
/// (`--export-series`) and alerts from Prometheus rule files (`--rules`).
#[derive(Default)]
pub struct Extras {
    pub series: bool,
    pub rules: Option<rules::RuleFiles>,
}

/// `replay_with` that also records the series (returned when `extras.series`) and, with
/// `extras.rules`, takes its alerts from the rule files, evaluated by Prometheus during the replay.
pub fn replay_extras(
    scenario: &Scenario,
    plugin: &Plugin,
    budget: Budget,
    host: HostSettings,
    extras: Extras,
    progress: &mut dyn FnMut(f64),
) -> Result<(Report, Option<Recorder>), ReplayError> {
    let estimate = budget::estimate(scenario);
    let over = estimate.over(&budget);
    if !over.is_empty() {
        return Err(ReplayError::TooLarge { estimate, over });
    }
    let unknown = extras.rules.as_ref().map(|files| files.unknown_names(scenario)).unwrap_or_default();
    let mut sim = Sim::new(scenario, plugin, budget, host)?;
    for text in unknown {
        sim.event(sim.start_ns, "refused", text);
    }
    if extras.series || extras.rules.is_some() {
        let pools: Vec<(String, bool)> =
            scenario.pools.iter().map(|p| (p.name.clone(), p.protocol == Protocol::Http)).collect();
        sim.series = Some(Box::new(Recorder::new(scenario.topology.proxies as usize, &pools)));
    }
    if let Some(files) = extras.rules {
        let pools: Vec<String> = scenario.pools.iter().map(|p| p.name.clone()).collect();
        let evaluator =
            rules::Evaluator::start(files, pools, sim.start_ns / 1_000_000).map_err(ReplayError::RuleFiles)?;
        sim.rules = Some(Box::new(evaluator));
        // The rule files' alerts replace the scenario's own.
        sim.alerts.clear();
        sim.runbooks.clear();
    }
    sim.run(progress)?;
    if let Some(e) = sim.rules_error.take() {
        return Err(e);
    }
    if let Some(rules) = sim.rules.take() {
        rules.stop();
    }
    let series = if extras.series { sim.series.take().map(|b| *b) } else { None };
    Ok((sim.report(), series))
}

/// Replays `scenario` through `plugin` within the default budget; `progress` hears the fraction
/// done now and then.
pub fn replay(scenario: &Scenario, plugin: &Plugin, progress: &mut dyn FnMut(f64)) -> Result<Report, ReplayError> {
    replay_within(scenario, plugin, Budget::DEFAULT, progress)
}

/// Replays `scenario` if its estimate fits `budget`, and stops it if it does more than that anyway.
pub fn replay_within(
    scenario: &Scenario,
    plugin: &Plugin,
    budget: Budget,
    progress: &mut dyn FnMut(f64),
) -> Result<Report, ReplayError> {
    replay_with(scenario, plugin, budget, HostProfile::Envoy, progress)
}

/// `replay_within` with every simulated proxy playing `profile` (`ebb replay --host-profile`).
pub fn replay_with(
    scenario: &Scenario,
    plugin: &Plugin,
    budget: Budget,
    profile: HostProfile,
    progress: &mut dyn FnMut(f64),
) -> Result<Report, ReplayError> {
    replay_as(scenario, plugin, budget, HostSettings { profile, ..HostSettings::default() }, progress)
}

/// How the simulated proxies run the filter.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HostSettings {
    /// The proxy the host plays. Default Envoy.
    pub profile: HostProfile,
    /// Envoy's `failure_policy` for the filter. Default fail-closed, Envoy's default.
    pub failure_policy: FailurePolicy,
}

/// `replay_within` with the simulated proxies set up as `host` says.
pub fn replay_as(
    scenario: &Scenario,
    plugin: &Plugin,
    budget: Budget,
    host: HostSettings,
    progress: &mut dyn FnMut(f64),
) -> Result<Report, ReplayError> {
    if !scenario.rules.is_empty() {
        // The scenario's own rule files: its alerts are theirs, evaluated by Prometheus.
        let paths: Vec<_> = scenario.rules.iter().map(|f| scenario.dir.join(f)).collect();
        let rules = rules::RuleFiles::load(&paths).map_err(ReplayError::RuleFiles)?;
        let extras = Extras { series: false, rules: Some(rules) };
        return replay_extras(scenario, plugin, budget, host, extras, progress).map(|(report, _)| report);
    }
    let estimate = budget::estimate(scenario);
    let over = estimate.over(&budget);
    if !over.is_empty() {
        return Err(ReplayError::TooLarge { estimate, over });
    }
    let mut sim = Sim::new(scenario, plugin, budget, host)?;
    sim.run(progress)?;
    Ok(sim.report())
}

impl<'s> Sim<'s> {
    fn new(
        scenario: &'s Scenario,
        plugin: &Plugin,
        budget: Budget,
        host: HostSettings,
    ) -> Result<Sim<'s>, ReplayError> {
        let config = serde_json::to_vec(&scenario.plugin_config()).map_err(|e| ReplayError::Config(e.to_string()))?;
        let start_ns = ns(scenario.start_epoch_ms());
        // Each simulated Envoy runs the HTTP filter (root_id `ebb`) and, when a pool is TCP, the
        // network filter (root_id `ebb_tcp`) beside it on the same vm_id, as deploy/envoy does:
        // they share data and stats, so commands sent to the HTTP side reach the TCP side.
        let sides: &[(&str, Protocol)] = if scenario.pools.iter().any(|p| p.protocol == Protocol::Tcp) {
            &[("ebb", Protocol::Http), ("ebb_tcp", Protocol::Tcp)]
        } else {
            &[("ebb", Protocol::Http)]
        };
        let mut proxies = Vec::new();
        for i in 0..scenario.topology.proxies as usize {
            for (side, (root_id, _)) in sides.iter().enumerate() {
                let options = ProxyOptions {
                    name: "ebb".into(),
                    vm_id: "ebb".into(),
                    root_id: (*root_id).into(),
                    plugin_config: config.clone(),
                    workers: scenario.topology.workers as usize,
                    host_profile: host.profile,
                    failure_policy: host.failure_policy,
                    // Each host proxy (an Envoy's HTTP or TCP side) its own randomness, from the seed.
                    random_seed: scenario.seed ^ ((proxies.len() as u64 + 1) << 32),
                    ..ProxyOptions::default()
                };
                // One clock per proxy: each is advanced lazily, to the moment it is next used.
                let clock = Clock::simulated(start_ns);
                let proxy = match proxies.last() {
                    Some(http) if side > 0 => Proxy::new_beside(http, plugin, options, clock),
                    _ => Proxy::new(plugin, options, clock),
                }
                .map_err(|source| ReplayError::Proxy { proxy: i, source })?;
                proxies.push(proxy);
            }
        }
        let sides = sides.len();
        // Looked up by name once, not searched per pool, alert or rule: linear in the scenario.
        let pool_index: HashMap<&str, usize> =
            scenario.pools.iter().enumerate().map(|(i, p)| (p.name.as_str(), i)).collect();
        let mut traffic_of: Vec<Vec<&crate::scenario::Traffic>> = vec![Vec::new(); scenario.pools.len()];
        for t in &scenario.traffic {
            if let Some(&i) = pool_index.get(t.pool.as_str()) {
                traffic_of[i].push(t);
            }
        }
        let pools = scenario
            .pools
            .iter()
            .zip(traffic_of)
            .map(|(p, traffic)| {
                let headers = match p.protocol {
                    Protocol::Http => HeaderMap::from_pairs(&[
                        (":method", "GET"),
                        (":path", "/"),
                        (":authority", p.authority().as_str()),
                        (":scheme", "https"),
                        ("user-agent", "ebb-replay"),
                    ]),
                    Protocol::Tcp => HeaderMap::new(),
                };
                PoolSim {
                    curve: Curve::new(scenario, &traffic),
                    protocol: p.protocol,
                    headers,
                    mean_ms: p.service_time.as_millis(),
                    exponential: p.service == Service::Exponential,
                    timeout_ns: ns(p.timeout.as_millis()),
                    capacity_per_host: u64::from(p.capacity_per_host),
                    slots: u64::from(p.hosts).saturating_mul(u64::from(p.capacity_per_host)),
                    panic_threshold: p.panic_threshold,
                    panic_share: 0.0,
                    busy: 0,
                    waiting: VecDeque::new(),
                    bucket: Bucket::default(),
                    samples: Vec::new(),
                    requests: 0,
                    errors: 0,
                    hosts: scaling::Hosts::new(scenario, p, start_ns),
                    overload: p.overload.as_ref().map(overload::Overload::new),
                    backlog: p.backlog_per_host.map(u64::from),
                    modelled: !p.scaling.is_empty() || p.overload.is_some(),
                }
            })
            .collect();
        let alerts: Vec<Alert> = scenario
            .alerts
            .iter()
            .map(|rule| Alert::new(rule.clone(), pool_index.get(rule.pool.as_str()).copied().unwrap_or(0)))
            .collect();
        let alert_index: HashMap<&str, usize> =
            scenario.alerts.iter().enumerate().map(|(i, a)| (a.name.as_str(), i)).collect();
        let mut runbooks = vec![Vec::new(); alerts.len()];
        for (r, rule) in scenario.recovery.iter().enumerate() {
            if let Some(&a) = alert_index.get(rule.on.as_str()) {
                runbooks[a].push(r);
            }
        }
        let mut sim = Sim {
            scenario,
            sides,
            key: scenario.control_key(),
            proxies,
            pools,
            alerts,
            flights: Vec::new(),
            free: Vec::new(),
            paused: Vec::new(),
            poll_armed: false,
            served: HeaderMap::from_pairs(&[(":status", "200"), ("content-type", "text/html")]),
            gave_up: HeaderMap::from_pairs(&[(":status", "503")]),
            queue: BinaryHeap::new(),
            seq: 0,
            rng: Rng::new(scenario.seed),
            start_ns,
            end_ns: start_ns.saturating_add(ns(scenario.duration.as_millis())),
            next_proxy: 0,
            nonce: 0,
            events: Vec::new(),
            simulated: 0,
            filter_failures: 0,
            server: None,
            runbooks,
            triggers: runbook::Triggers::new(scenario),
            meter: Meter::new(budget),
            series: None,
            rules: None,
            rules_error: None,
        };
        let ms = |at| start_ns.saturating_add(ns(scenario.offset_ms(at)));
        for (i, run) in scenario.deploys.iter().enumerate() {
            sim.schedule(ms(run.at), Ev::Deploy(i, false));
        }
        for (i, action) in scenario.timeline.iter().enumerate() {
            sim.schedule(ms(action.at), Ev::Timeline(i));
        }
        sim.schedule(start_ns.saturating_add(ns(scenario.scrape_interval.as_millis())), Ev::Scrape);
        for p in 0..sim.pools.len() {
            sim.next_arrival(p, 0.0);
        }
        // Proxies start with their filter configured; let the first tick publish the gauges.
        Ok(sim)
    }

    /// Queues `ev` at `t_ns`; a moment past the end is never reached, so it is not queued.
    fn schedule(&mut self, t_ns: u64, ev: Ev) {
        if t_ns > self.end_ns {
            return;
        }
        self.seq += 1;
        self.queue.push(Reverse((t_ns, self.seq, ev)));
    }

    fn t_s(&self, t_ns: u64) -> f64 {
        t_ns.saturating_sub(self.start_ns) as f64 / 1e9
    }

    fn event(&mut self, t_ns: u64, kind: &str, text: String) {
        let t_s = self.t_s(t_ns);
        self.events.push(Event { t_s, kind: kind.into(), text });
    }

    fn next_arrival(&mut self, pool: usize, after_s: f64) {
        let end_s = self.t_s(self.end_ns);
        let curve = &self.pools[pool].curve;
        self.meter.steps(curve.cost());
        if let Some(t) = curve.next_arrival(after_s, end_s, &mut self.rng) {
            // The float-to-integer cast saturates (and NaN is 0).
            self.schedule(self.start_ns.saturating_add((t * 1e9) as u64), Ev::Arrival(pool));
        }
    }

    fn run(&mut self, progress: &mut dyn FnMut(f64)) -> Result<(), ReplayError> {
        let total = self.end_ns.saturating_sub(self.start_ns).max(1) as f64;
        let mut reported = 0.0;
        while let Some(Reverse((t, _, ev))) = self.queue.pop() {
            if t > self.end_ns {
                break;
            }
            self.meter.steps(1);
            if let Some(what) = self.meter.exceeded() {
                let at = self.scenario.clock_label(self.t_s(t));
                return Err(ReplayError::OverBudget { what, at });
            }
            match ev {
                Ev::Arrival(pool) => self.arrive(pool, t),
                Ev::Done(flight) => self.done(flight, t),
                Ev::Poll => self.poll(t),
                Ev::Scrape => self.scrape(t),
                Ev::Deploy(i, retry) => self.deploy(i, retry, t),
                Ev::Timeline(i) => self.timeline(i, t),
                Ev::Recovery(i, attempt) => {
                    if self.runbook_acts(i, attempt, t) {
                        self.recover(i, t);
                    }
                }
            }
            let done = t.saturating_sub(self.start_ns) as f64 / total;
            if done - reported >= 0.01 {
                reported = done;
                progress(done);
            }
        }
        progress(1.0);
        Ok(())
    }

    /// The host proxy serving `protocol` for simulated Envoy `envoy`.
    fn side(&self, envoy: usize, protocol: Protocol) -> usize {
        envoy * self.sides + usize::from(protocol == Protocol::Tcp && self.sides > 1)
    }

    fn advance(&mut self, proxy: usize, t: u64) {
        for e in self.proxies[proxy].advance_to(t) {
            self.failure(t, format!("proxy {proxy}: {e}"));
        }
    }

    fn failure(&mut self, t: u64, text: String) {
        self.filter_failures += 1;
        if self.filter_failures <= MAX_FAILURE_EVENTS {
            self.event(t, "filter_failure", text);
        }
    }

    fn alloc(&mut self, flight: Flight) -> usize {
        match self.free.pop() {
            Some(i) => {
                self.flights[i] = Some(flight);
                i
            }
            None => {
                self.flights.push(Some(flight));
                self.flights.len() - 1
            }
        }
    }

    fn arrive(&mut self, pool: usize, t: u64) {
        self.next_arrival(pool, self.t_s(t));
        self.simulated = self.simulated.saturating_add(1);
        self.meter.request();
        let envoy = self.next_proxy;
        self.next_proxy = (self.next_proxy + 1) % self.scenario.topology.proxies as usize;
        let worker = (self.rng.next_u64() % u64::from(self.scenario.topology.workers)) as usize;
        let protocol = self.pools[pool].protocol;
        let proxy = self.side(envoy, protocol);
        self.advance(proxy, t);
        let (stream, step) = match self.proxies[proxy].worker(worker) {
            Ok(w) => match protocol {
                Protocol::Http => {
                    let mut http = w.http();
                    let step = http.request_header_map(&self.pools[pool].headers, true);
                    (http.id(), step)
                }
                Protocol::Tcp => {
                    let mut tcp = w.tcp();
                    let step = tcp.new_connection();
                    (tcp.id(), step)
                }
            },
            Err(e) => {
                self.failure(t, format!("proxy {proxy} worker {worker}: {e}"));
                return;
            }
        };
        let flight = self.alloc(Flight { proxy, stream, pool, start_ns: t, serving: false });
        if let Some(series) = self.series.as_deref_mut() {
            series.arrived(flight, envoy, pool);
        }
        self.handle(flight, step, t);
    }

    /// What the filter did with a new request or connection.
    fn handle(&mut self, flight: usize, step: Step, t: u64) {
        match step {
            Step::Continue => self.admit(flight, t),
            Step::Pause => {
                self.paused.push(flight);
                if !self.poll_armed {
                    self.poll_armed = true;
                    self.schedule(t.saturating_add(ns(POLL_MS)), Ev::Poll);
                }
            }
            Step::LocalReply(reply) => {
                if let Some(series) = self.series.as_deref_mut() {
                    series.local_reply(flight, u16::try_from(reply.status).unwrap_or(u16::MAX));
                }
                let error = reply.status >= 500 || reply.grpc_status.is_some_and(|g| g != 0);
                self.finish(flight, t, error, true);
            }
            Step::Closed { .. } => self.finish(flight, t, true, true),
            Step::Failed(e) => {
                self.failure(t, e.to_string());
                // The host applied the failure policy in that same step, as Envoy does right
                // after the callback: fail-closed answered the stream (503) or closed the
                // connection, fail-open let it go on to the upstream like any other.
                match self.after_failure(flight) {
                    Some(error) => self.finish(flight, t, error, true),
                    None => self.admit(flight, t),
                }
            }
        }
    }

    /// Where a stream whose filter just failed stands: Some(error) when it is over (what the
    /// client got is a 5xx, or the connection was closed), None when it went on upstream.
    fn after_failure(&mut self, flight: usize) -> Option<bool> {
        let f = self.flights[flight].as_ref()?;
        let (proxy, stream, pool) = (f.proxy, f.stream, f.pool);
        match self.pools[pool].protocol {
            Protocol::Http => {
                let mut http = self.proxies[proxy].http_stream(stream)?;
                match http.client_response() {
                    Some(reply) => Some(status_of(&reply) >= 500),
                    None if http.upstream_request().is_some() => None,
                    None => Some(true),
                }
            }
            Protocol::Tcp => {
                let mut tcp = self.proxies[proxy].tcp_stream(stream)?;
                tcp.closed().map(|_| true)
            }
        }
    }

    /// Hands a forwarded request to its pool: served at once or queued for a free host.
    fn admit(&mut self, flight: usize, t: u64) {
        let Some(f) = self.flights[flight].as_ref() else { return };
        let pool = f.pool;
        if let Some(series) = self.series.as_deref_mut() {
            series.forwarded(flight, f.proxy / self.sides, pool, t);
        }
        let p = &mut self.pools[pool];
        if p.panic_share > 0.0 && self.rng.roll(100.0 * p.panic_share) {
            // Panic routing picked a drained host: the connection fails at once.
            self.respond_error(flight, t);
            return;
        }
        if p.busy < p.slots {
            p.busy += 1;
            let mut service = traffic::service_ms(p.mean_ms, p.exponential, &mut self.rng);
            if let Some(o) = &p.overload {
                // A warming host serves slower (sim/overload.rs).
                let factor = o.service_factor(p.slots / p.capacity_per_host.max(1), &mut self.rng);
                service = (service as f64 * factor).round() as u64;
            }
            if let Some(f) = self.flights[flight].as_mut() {
                f.serving = true;
            }
            self.schedule(t.saturating_add(ns(service)), Ev::Done(flight));
        } else if p.backlog.is_some() || (p.modelled && p.slots == 0) {
            // No host serving (all unregistered or crashed) is a full backlog: refused at once,
            // as Envoy answers "no healthy upstream", rather than waiting for a host that may
            // never come.
            self.queue_at_host(pool, flight, t);
        } else {
            p.waiting.push_back((flight, t));
        }
    }

    /// Every slot of `pool` is busy and its hosts have a bounded backlog, or none serves
    /// (sim/queue.rs): the request waits there, or is refused at once when the backlog is full.
    fn queue_at_host(&mut self, pool: usize, flight: usize, t: u64) {
        // Requests that waited past the timeout have given up: they hold no place.
        while let Some(&(next, since)) = self.pools[pool].waiting.front() {
            if t.saturating_sub(since) <= self.pools[pool].timeout_ns {
                break;
            }
            self.pools[pool].waiting.pop_front();
            self.respond_error(next, t);
        }
        let p = &mut self.pools[pool];
        if queue::full(p.backlog, p.waiting.len(), p.slots / p.capacity_per_host.max(1)) {
            self.respond_error(flight, t);
        } else {
            p.waiting.push_back((flight, t));
        }
    }

    /// The upstream answered (or the connection ended): respond through the filter.
    fn done(&mut self, flight: usize, t: u64) {
        let Some(f) = self.flights[flight].as_ref() else { return };
        let (proxy, stream, pool) = (f.proxy, f.stream, f.pool);
        self.advance(proxy, t);
        let (mut failure, mut error) = (None, false);
        match self.pools[pool].protocol {
            Protocol::Http => {
                if let Some(mut http) = self.proxies[proxy].http_stream(stream) {
                    let step = http.response_header_map(&self.served, true);
                    if let Step::Failed(_) | Step::LocalReply(_) | Step::Closed { .. } = step {
                        // The filter's VM failed in this step or before it (fail-closed answers
                        // with a 503 instead of the upstream's answer; fail-open passes it on), or
                        // the filter answered or reset the stream itself.
                        error = http.client_response().is_none_or(|r| status_of(&r) >= 500);
                    }
                    if let Step::Failed(e) = step {
                        failure = Some(e);
                    }
                }
            }
            Protocol::Tcp => {
                if let Some(mut tcp) = self.proxies[proxy].tcp_stream(stream) {
                    let _ = tcp.downstream_close(Peer::Remote);
                }
            }
        }
        if let Some(e) = failure {
            self.failure(t, e.to_string());
        }
        self.finish(flight, t, error, error);
        self.release(pool, t);
    }

    /// A host of `pool` is free: serve the next waiting request, failing those that waited
    /// past the pool's timeout.
    fn release(&mut self, pool: usize, t: u64) {
        self.pools[pool].busy = self.pools[pool].busy.saturating_sub(1);
        while self.pools[pool].busy < self.pools[pool].slots {
            let Some((next, since)) = self.pools[pool].waiting.pop_front() else { break };
            if t.saturating_sub(since) > self.pools[pool].timeout_ns {
                self.respond_error(next, t);
                continue;
            }
            self.admit(next, t);
        }
    }

    /// The pool gave up on a queued request: 503 through the filter.
    fn respond_error(&mut self, flight: usize, t: u64) {
        let Some(f) = self.flights[flight].as_ref() else { return };
        let (proxy, stream, pool) = (f.proxy, f.stream, f.pool);
        self.advance(proxy, t);
        if self.pools[pool].protocol == Protocol::Http {
            if let Some(mut http) = self.proxies[proxy].http_stream(stream) {
                http.response_header_map(&self.gave_up, true);
            }
        }
        self.finish(flight, t, true, false);
    }

    /// Records the outcome, ends the stream in the host and frees the flight.
    fn finish(&mut self, flight: usize, t: u64, error: bool, by_filter: bool) {
        let Some(f) = self.flights[flight].take() else { return };
        self.free.push(flight);
        let result = match self.pools[f.pool].protocol {
            Protocol::Http => self.proxies[f.proxy].http_stream(f.stream).map(|h| h.finish()),
            Protocol::Tcp => self.proxies[f.proxy].tcp_stream(f.stream).map(|c| c.finish()),
        };
        if let Some(Err(e)) = result {
            self.failure(t, e.to_string());
        }
        if let Some(series) = self.series.as_deref_mut() {
            series.finished(flight, f.proxy / self.sides, f.pool, f.start_ns, t, error);
        }
        let p = &mut self.pools[f.pool];
        let latency_ms = t.saturating_sub(f.start_ns) / 1_000_000;
        p.bucket.record(latency_ms, error, by_filter);
        p.requests = p.requests.saturating_add(1);
        p.errors = p.errors.saturating_add(u64::from(error));
    }

    /// Looks at paused requests: resumed ones go upstream, answered ones are done.
    fn poll(&mut self, t: u64) {
        self.poll_armed = false;
        let paused = std::mem::take(&mut self.paused);
        self.meter.steps(paused.len() as u64);
        for flight in paused {
            let Some(f) = self.flights[flight].as_ref() else { continue };
            let (proxy, stream) = (f.proxy, f.stream);
            self.advance(proxy, t);
            let (forwarded, reply) = match self.proxies[proxy].http_stream(stream) {
                Some(mut http) => (http.upstream_request().is_some(), http.client_response()),
                None => (false, None),
            };
            if let Some(reply) = reply {
                let status = reply.headers.get_str(":status").and_then(|s| s.parse::<u32>().ok()).unwrap_or(0);
                if let Some(series) = self.series.as_deref_mut() {
                    series.local_reply(flight, u16::try_from(status).unwrap_or(u16::MAX));
                }
                self.finish(flight, t, status >= 500, true);
            } else if forwarded {
                self.admit(flight, t);
            } else {
                self.paused.push(flight);
            }
        }
        if !self.paused.is_empty() {
            self.poll_armed = true;
            self.schedule(t.saturating_add(ns(POLL_MS)), Ev::Poll);
        }
    }

    fn gauge(&self, proxy: usize, pool: &str, metric: PoolMetric) -> u64 {
        self.proxies[proxy].metric(&metric.name(pool)).map_or(0, |m| m.value)
    }

    fn scrape(&mut self, t: u64) {
        self.schedule(t.saturating_add(ns(self.scenario.scrape_interval.as_millis())), Ev::Scrape);
        let proxies = u64::from(self.scenario.topology.proxies);
        self.meter.steps((self.pools.len() as u64).saturating_mul(proxies).saturating_mul(3));
        self.meter.steps(self.alerts.len() as u64);
        for proxy in 0..self.proxies.len() {
            self.advance(proxy, t);
        }
        self.expired();
        let t_s = self.t_s(t);
        let scrape_s = self.scenario.scrape_interval.as_millis() as f64 / 1000.0;
        for pool in 0..self.pools.len() {
            let name = self.scenario.pools[pool].name.clone();
            let (mut available, mut expected, mut deploying) = (u64::MAX, 0, false);
            let protocol = self.pools[pool].protocol;
            for envoy in 0..self.scenario.topology.proxies as usize {
                let proxy = self.side(envoy, protocol);
                available = available.min(self.gauge(proxy, &name, PoolMetric::AvailableHosts));
                expected = expected.max(self.gauge(proxy, &name, PoolMetric::ExpectedHosts));
                deploying |= self.gauge(proxy, &name, PoolMetric::DeployInProgress) > 0;
            }
            let hosts = self.pool_hosts(pool, t, available, expected);
            let (available, expected, unregistered) = (hosts.available, hosts.expected, hosts.unregistered);
            let p = &mut self.pools[pool];
            // The hosts still in the pool are the ones that serve.
            p.slots = available.saturating_mul(p.capacity_per_host);
            // Envoy's panic threshold is a share of the hosts the load balancer knows.
            let ratio = if hosts.members == 0 { 1.0 } else { available as f64 / hosts.members as f64 };
            p.panic_share = if ratio < p.panic_threshold { 1.0 - ratio } else { 0.0 };
            let bucket = std::mem::take(&mut p.bucket);
            let sample = Sample { t_s, available, expected, deploying, bucket, unregistered, ..Sample::default() };
            stats::push(&mut p.samples, sample);
        }
        self.evaluate_triggers(t);
        if self.series.is_some() {
            self.scrape_series(t);
            if self.rules.is_some() {
                return self.evaluate_rules(t);
            }
        }
        let mut fired = Vec::new();
        for (i, alert) in self.alerts.iter_mut().enumerate() {
            let samples = &self.pools[alert.pool].samples;
            match alert.evaluate(samples, samples.len() - 1, scrape_s) {
                Some(Transition::Fired) => fired.push((i, true)),
                Some(Transition::Resolved) => fired.push((i, false)),
                None => {}
            }
        }
        for (i, firing) in fired {
            self.alert_changed(i, firing, t);
        }
    }

    /// Faults that ended by their TTL since the last scrape, from the filter's own log line
    /// (`ebb: fault ID (KIND) expired`) of the first simulated Envoy: every Envoy holds the same
    /// faults, and a fault nobody cleared should not vanish from the timeline unseen.
    fn expired(&mut self) {
        for side in 0..self.sides.min(self.proxies.len()) {
            for record in self.proxies[side].drain_logs() {
                let Some(what) = record.message.strip_prefix("ebb: fault ").and_then(|m| m.strip_suffix(" expired"))
                else {
                    continue;
                };
                let text = format!("fault {what} expired: its ttl ran out");
                self.event(record.time_ns.clamp(self.start_ns, self.end_ns), "expired", text);
            }
        }
    }

    /// Alert `i` fired (and its runbooks are due) or resolved at `t`.
    fn alert_changed(&mut self, i: usize, firing: bool, t: u64) {
        let name = self.alerts[i].rule.name.clone();
        if firing {
            let alert = &self.alerts[i];
            let text = match (&alert.origin, &alert.pool_label) {
                (Some(file), Some(pool)) => format!("{name} fires ({file}, on {pool})"),
                (Some(file), None) => format!("{name} fires ({file})"),
                (None, _) => format!("{name} fires ({} on {})", signal_name(alert), alert.rule.pool),
            };
            self.event(t, "alert", text);
            for r in self.runbooks[i].clone() {
                let after = self.scenario.recovery[r].after.as_millis();
                self.schedule(t.saturating_add(ns(after)), Ev::Recovery(r, 0));
            }
        } else {
            let text = match (&self.alerts[i].origin, &self.alerts[i].pool_label) {
                (Some(_), Some(pool)) => format!("{name} resolved (on {pool})"),
                _ => format!("{name} resolved"),
            };
            self.event(t, "resolved", text);
        }
    }

    /// Records this scrape's series of every simulated Envoy (the filter's metrics from its
    /// registry, shared by its HTTP and TCP sides, and the Envoy stats derived from the flights).
    fn scrape_series(&mut self, t: u64) {
        let t_ms = i64::try_from(t / 1_000_000).unwrap_or(i64::MAX);
        for envoy in 0..self.scenario.topology.proxies as usize {
            let metrics = self.proxies[self.side(envoy, Protocol::Http)].metrics();
            if let Some(series) = self.series.as_deref_mut() {
                series.scrape(t_ms, envoy, &metrics);
            }
        }
    }

    /// Evaluates the rule groups due by `t` in Prometheus and applies their alerts' changes.
    fn evaluate_rules(&mut self, t: u64) {
        let (Some(rules), Some(series)) = (self.rules.as_deref_mut(), self.series.as_deref()) else { return };
        let outcome = match rules.evaluate(t / 1_000_000, series) {
            Ok(outcome) => outcome,
            Err(reason) => {
                let at = self.scenario.clock_label(self.t_s(t));
                self.rules_error = Some(ReplayError::Rules { at, reason });
                // Nothing more happens: the replay ends here with the error.
                self.queue.clear();
                return;
            }
        };
        for text in outcome.failures {
            self.event(t, "refused", text);
        }
        for change in outcome.changes {
            let at = u64::try_from(change.at_ms).unwrap_or(0).saturating_mul(1_000_000).clamp(self.start_ns, t);
            let i = match self.alerts.iter().position(|a| a.rule.name == change.alert && a.pool_label == change.pool) {
                Some(i) => i,
                None => {
                    let pool =
                        change.pool.as_deref().and_then(|p| self.scenario.pools.iter().position(|q| q.name == p));
                    self.alerts.push(Alert::external(&change.alert, change.pool.clone(), pool, &change.file));
                    // Its runbooks: those on its name that restore its pool, or act fleet-wide.
                    let runbooks = (0..self.scenario.recovery.len())
                        .filter(|&r| {
                            let rule = &self.scenario.recovery[r];
                            rule.on == change.alert
                                && rule.restore.as_ref().is_none_or(|p| Some(p) == change.pool.as_ref())
                        })
                        .collect();
                    self.runbooks.push(runbooks);
                    self.alerts.len() - 1
                }
            };
            let t_s = self.t_s(at);
            let alert = &mut self.alerts[i];
            alert.firing = change.firing;
            if change.firing {
                alert.fired_s.push(t_s);
            } else {
                alert.resolved_s.push(t_s);
            }
            self.alert_changed(i, change.firing, at);
        }
    }

    /// Sends one control call to every simulated Envoy (its HTTP side; the TCP side shares its
    /// data); returns the first refusal, if any.
    fn command(&mut self, t: u64, method: &str, path: &str, body: Option<&str>) -> Option<String> {
        let mut refusal = None;
        for envoy in 0..self.scenario.topology.proxies as usize {
            let proxy = self.side(envoy, Protocol::Http);
            self.advance(proxy, t);
            self.nonce += 1;
            match control::call(&mut self.proxies[proxy], 0, &self.key, method, path, body, self.nonce) {
                Ok((status, _)) if status < 300 => {}
                Ok((status, r)) => {
                    refusal.get_or_insert(format!("{status} {}", r.error.unwrap_or_default()));
                }
                Err(e) => {
                    refusal.get_or_insert(e.to_string());
                }
            }
        }
        if refusal.is_none() {
            self.restored(t, method, path);
        }
        refusal
    }

    /// A restore the filter accepted (`POST /.ebb/v1/pools/<pool>/restore`, from the timeline, a
    /// runbook or a recovery program) also adds the pool's launched but unregistered hosts to
    /// the load balancer and restarts its crashed hosts, as an operator restoring a pool does
    /// (sim/scaling.rs, sim/overload.rs).
    fn restored(&mut self, t: u64, method: &str, path: &str) {
        let path = path.split('?').next().unwrap_or_default();
        let Some(name) = path.strip_prefix("/.ebb/v1/pools/").and_then(|rest| rest.strip_suffix("/restore")) else {
            return;
        };
        let Some(pool) = self.scenario.pools.iter().position(|p| p.name == name) else { return };
        if method != "POST" || !self.pools[pool].modelled {
            return;
        }
        let p = &mut self.pools[pool];
        let joined = p.hosts.register_all(t);
        if joined > 0 {
            if let Some(o) = p.overload.as_mut() {
                o.registered_now(t, joined);
            }
            self.event(t, "registered", format!("{name}: {joined} launched hosts added to the load balancer"));
        }
        let restarted = self.pools[pool].overload.as_mut().map_or(0, |o| o.restart_all(t));
        if restarted > 0 {
            self.event(
                t,
                "restart",
                format!("{name}: {restarted} crashed host(s) restarted by the restore, warming up"),
            );
        }
    }

    /// The pool's hosts at a scrape, from the filter's gauges: as they are when the pool models
    /// neither scaling nor overload, else with its steps, registration and crashes applied
    /// (sim/scaling.rs, sim/overload.rs), and what changed put in the timeline.
    fn pool_hosts(&mut self, pool: usize, t: u64, available: u64, expected: u64) -> scaling::View {
        let p = &mut self.pools[pool];
        if !p.modelled {
            return scaling::View { available, expected, members: expected, unregistered: 0 };
        }
        let name = &self.scenario.pools[pool].name;
        let mut texts: Vec<(u64, &str, String)> = Vec::new();
        for step in p.hosts.scale(t, name) {
            if let (Some(o), Some(joins)) = (p.overload.as_mut(), step.joins_ns) {
                o.started(joins, step.launched);
            }
            texts.push((step.at, "scale", step.text));
        }
        if let Some(o) = p.overload.as_mut() {
            let load = p.busy.saturating_add(p.waiting.len() as u64);
            let serving = p.slots / p.capacity_per_host.max(1);
            let change = o.scrape(t, load, serving, p.hosts.registered(t));
            if change.restarted > 0 {
                let text = format!("{name}: {} crashed host(s) back, warming up", change.restarted);
                texts.push((t, "restart", text));
            }
            if change.crashed {
                texts.push((t, "crash", format!("{name}: {}", o.describe_crash(load, serving))));
            }
        }
        let crashed = p.overload.as_ref().map_or(0, overload::Overload::crashed);
        let (view, change) = p.hosts.view(t, available, expected, crashed);
        if let Some(text) = change {
            texts.push((t, "registration", format!("{name}: {text}")));
        }
        for (at, kind, text) in texts {
            self.event(at, kind, text);
        }
        view
    }

    fn add_fault(&mut self, t: u64, fault: &FaultRequest) -> Option<String> {
        let body = serde_json::to_string(fault).unwrap_or_default();
        self.command(t, "POST", "/.ebb/v1/faults", Some(&body))
    }

    fn deploy(&mut self, i: usize, retry: bool, t: u64) {
        let run = self.scenario.deploys[i].clone();
        if let (Some(j), Some(wait), false) = (run.fail_at_batch, run.retry_after, retry) {
            let abort = u64::from(j).saturating_mul(run.batch_interval.as_millis()).saturating_add(wait.as_millis());
            self.schedule(t.saturating_add(ns(abort)), Ev::Deploy(i, true));
        }
        let outcome = match run.fail_at_batch.filter(|_| !retry) {
            Some(j) => format!(
                "fails at batch {j}, {}",
                if run.on_abort == ebb_engine::fault::OnAbort::Restore {
                    "restores on abort"
                } else {
                    "leaves the batch drained"
                }
            ),
            None => "completes".into(),
        };
        self.event(
            t,
            "deploy",
            format!(
                "deploy {}{} of {}: {} batches every {}, {outcome}",
                i + 1,
                if retry { " (retry)" } else { "" },
                run.pools.join(", "),
                run.batches,
                run.batch_interval
            ),
        );
        for pool in &run.pools {
            let fault = self.scenario.deploy_fault(i, &run, pool, retry);
            if let Some(why) = self.add_fault(t, &fault) {
                self.event(t, "refused", format!("deploy {} of {pool} refused by the filter: {why}", i + 1));
            }
        }
    }

    fn timeline(&mut self, i: usize, t: u64) {
        let action = self.scenario.timeline[i].clone();
        let note = if action.note.is_empty() { String::new() } else { format!(" ({})", action.note) };
        let (text, refusal) = if let Some(fault) = &action.command {
            let kind = fault.spec().map(|s| s.name()).unwrap_or("fault");
            (format!("command: add {kind} {}{note}", fault.id.clone().unwrap_or_default()), self.add_fault(t, fault))
        } else if let Some(pool) = &action.restore {
            (
                format!("operator restores pool {pool}{note}"),
                self.command(t, "POST", &format!("/.ebb/v1/pools/{pool}/restore"), None),
            )
        } else if let Some(id) = &action.clear {
            (
                format!("operator clears fault {id}{note}"),
                self.command(t, "DELETE", &format!("/.ebb/v1/faults/{id}"), None),
            )
        } else {
            (format!("kill switch{note}"), self.command(t, "DELETE", "/.ebb/v1/faults", None))
        };
        self.event(t, "command", text);
        if let Some(why) = refusal {
            self.event(t, "refused", why);
        }
    }

    fn recover(&mut self, i: usize, t: u64) {
        let rule = self.scenario.recovery[i].clone();
        if let Some(argv) = &rule.run {
            return self.run_program(i, argv, t);
        }
        let (text, refusal) = match &rule.restore {
            Some(pool) => (
                format!("runbook for {}: restore pool {pool}", rule.trigger()),
                self.command(t, "POST", &format!("/.ebb/v1/pools/{pool}/restore"), None),
            ),
            None => (
                format!("runbook for {}: kill switch", rule.trigger()),
                self.command(t, "DELETE", "/.ebb/v1/faults", None),
            ),
        };
        self.event(t, "recovery", text);
        if let Some(why) = refusal {
            self.event(t, "refused", why);
        }
    }

    /// Runs recovery rule `i`'s program on the alert, simulated time standing still meanwhile.
    fn run_program(&mut self, i: usize, argv: &[String], t: u64) {
        let scenario = self.scenario;
        let rule = &scenario.recovery[i];
        let shown = argv.join(" ");
        self.event(t, "recovery", format!("runbook for {}: run {shown}", rule.on));
        if self.server.is_none() {
            match recovery::ControlServer::start() {
                Ok(server) => self.server = Some(server),
                Err(e) => {
                    let text = format!("runbook for {}: cannot serve the control API on 127.0.0.1: {e}", rule.on);
                    return self.event(t, "refused", text);
                }
            }
        }
        let Some(server) = self.server.take() else { return };
        let (pool, summary) = match (self.alerts.iter().find(|a| a.rule.name == rule.on), &rule.when) {
            (_, Some(when)) => (when.pool.clone(), rule.trigger()),
            (Some(a), None) => (a.rule.pool.clone(), format!("{} on {}", signal_name(a), a.rule.pool)),
            (None, None) => (String::new(), rule.on.clone()),
        };
        // The rule was scheduled `after` the alert fired.
        let fired_s = t.saturating_sub(ns(rule.after.as_millis())) / 1_000_000_000;
        let now_s = t / 1_000_000_000;
        let url = server.url().to_string();
        let webhook = recovery::webhook(&rule.on, &pool, &summary, fired_s, &url);
        let program = recovery::Program {
            argv,
            dir: &scenario.dir,
            env: vec![
                ("EBB_CONTROL_URL", url.clone()),
                // scripts/ebb-ctl's own variable, so that it reaches the replay without --url.
                ("EBB_URL", url),
                ("EBB_KEY", self.key.clone()),
                // The simulated clock, for signing: the filter checks timestamps against it.
                ("EBB_TIMESTAMP", now_s.to_string()),
                ("EBB_ALERT", rule.on.clone()),
                ("EBB_POOL", pool),
            ],
            stdin: webhook.to_string().into_bytes(),
            timeout: std::time::Duration::from_millis(rule.run_timeout().as_millis()),
        };
        let mut calls = 0usize;
        let outcome = recovery::run(&program, &server, &mut |request| {
            calls += 1;
            self.forward(t, request, calls <= MAX_CALL_EVENTS)
        });
        self.server = Some(server);
        let counted = if calls > MAX_CALL_EVENTS {
            format!(", {calls} control calls ({} not shown)", calls - MAX_CALL_EVENTS)
        } else {
            format!(", {calls} control call{}", if calls == 1 { "" } else { "s" })
        };
        match outcome {
            recovery::Outcome::NotStarted(why) => self.event(t, "refused", format!("runbook for {}: {why}", rule.on)),
            recovery::Outcome::Exited { status, took_s, output } => {
                let how = match status.code() {
                    Some(code) => format!("exit {code}"),
                    None => status.to_string(),
                };
                self.event(t, "recovery", format!("{shown}: {how} after {took_s:.2}s{counted}"));
                if !status.success() {
                    let text = format!("runbook for {}: {shown} failed ({how}); {}", rule.on, output.summary());
                    self.event(t, "refused", text);
                }
            }
            recovery::Outcome::TimedOut { took_s, output } => {
                let timeout = rule.run_timeout();
                self.event(t, "recovery", format!("{shown}: killed at its {timeout} timeout ({took_s:.2}s){counted}"));
                let text = format!("runbook for {}: {shown} timed out after {timeout}; {}", rule.on, output.summary());
                self.event(t, "refused", text);
            }
        }
    }

    /// Sends a recovery program's request, unchanged, to every simulated Envoy's control API (the
    /// HTTP side; the TCP side shares its data) and returns the first Envoy's answer.
    fn forward(&mut self, t: u64, request: &RawRequest, log: bool) -> RawResponse {
        let mut first = None;
        let mut refusal = None;
        for envoy in 0..self.scenario.topology.proxies as usize {
            let proxy = self.side(envoy, Protocol::Http);
            self.advance(proxy, t);
            let response = control::forward(&mut self.proxies[proxy], 0, request).unwrap_or_else(|e| {
                // The filter failed on the call: Envoy would answer from its failure policy.
                let body = serde_json::json!({ "ok": false, "error": format!("proxy {envoy}: {e}") });
                RawResponse {
                    status: 500,
                    headers: vec![("content-type".into(), "application/json".into())],
                    body: body.to_string().into_bytes(),
                }
            });
            if response.status >= 300 && refusal.is_none() {
                refusal = Some(format!("{} {}", response.status, why_refused(&response.body)));
            }
            first.get_or_insert(response);
        }
        let Some(response) = first else {
            return RawResponse { status: 503, headers: Vec::new(), body: b"no proxy in the replay\n".to_vec() };
        };
        if refusal.is_none() {
            self.restored(t, &request.method, &request.path);
        }
        if log {
            // The query is left out: clients add a random nonce there (replay protection).
            let path = request.path.split('?').next().unwrap_or_default();
            self.event(t, "command", format!("recovery program: {} {path} -> {}", request.method, response.status));
            if let Some(why) = refusal {
                self.event(t, "refused", format!("recovery program's {} {path}: {why}", request.method));
            }
        }
        response
    }

    fn report(self) -> Report {
        let scenario = self.scenario;
        let alerts = self
            .alerts
            .iter()
            .map(|a| AlertResult {
                name: a.rule.name.clone(),
                pool: a.rule.pool.clone(),
                fired_s: a.fired_s.clone(),
                resolved_s: a.resolved_s.clone(),
            })
            .collect();
        let sample = scenario.sample;
        let observed = report::Observed {
            // Borrowed, not copied: a ten-hour replay holds thousands of scrapes per pool.
            samples: self.pools.iter().map(|p| p.samples.as_slice()).collect(),
            totals: self.pools.iter().map(|p| (p.requests, p.errors)).collect(),
            alerts,
            events: self.events,
            requests: Requests {
                simulated: self.simulated,
                sample,
                represented: self.simulated.saturating_mul(u64::from(sample)),
                filter_failures: self.filter_failures,
            },
            duration_s: scenario.duration.as_millis() as f64 / 1000.0,
        };
        report::build(scenario, observed)
    }
}

/// The error of a control API answer, or its text.
fn why_refused(body: &[u8]) -> String {
    let text = match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(v) => v.get("error").and_then(|e| e.as_str()).map(str::to_string),
        Err(_) => None,
    }
    .unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_string());
    text.chars().take(200).collect()
}

fn signal_name(alert: &Alert) -> String {
    if let Some(file) = &alert.origin {
        return format!("PromQL, {file}");
    }
    let rule = &alert.rule;
    let threshold = match (rule.above, rule.below) {
        (Some(a), _) => format!("> {a}"),
        (None, Some(b)) => format!("< {b}"),
        _ => String::new(),
    };
    // The scenario's own spelling of the signal (`error_ratio`), not the Rust variant name.
    let signal =
        serde_json::to_value(rule.signal).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default();
    format!("{signal} {threshold}")
}
