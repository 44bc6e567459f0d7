// The decisions: which pool a request or connection belongs to, what state each pool is in at a
// given time, and what happens to a request (blackhole, delay, abort, admission under capacity).

use crate::config::{Config, PoolConfig, Protocol};
use crate::duration::Duration;
use crate::fault::{DrainMode, Fault, FaultSpec, Queue};
use crate::request::Request;
use crate::rng::Rng;
use crate::state::FaultSet;

/// Opt-in per-request fault headers (`header_faults: true`).
pub const ABORT_HEADER: &str = "x-ebb-abort";
pub const ABORT_GRPC_HEADER: &str = "x-ebb-abort-grpc";
pub const DELAY_HEADER: &str = "x-ebb-delay";

/// A pool at one moment, as the metrics and the control API report it.
#[derive(Clone, Debug, PartialEq)]
pub struct PoolStatus {
    pub name: String,
    pub protocol: Protocol,
    pub expected_hosts: u32,
    pub available_hosts: u32,
    /// Concurrent requests or connections the available hosts serve.
    pub capacity: u64,
    pub deploy_in_progress: bool,
    /// Hosts removed by capacity-mode drains and deploys.
    pub capacity_drained: u32,
    /// Hosts removed by blackhole-mode drains and deploys.
    pub blackhole_drained: u32,
    /// The queue of the first capacity drain that asks for one.
    pub queue: Option<Queue>,
    /// Index (in `Engine::faults().faults`) of the capacity-limiting fault, for replies and logs.
    pub limiting_fault: Option<usize>,
    pub blackhole_fault: Option<usize>,
    /// Ids of the faults active on the pool.
    pub faults: Vec<String>,
}

/// A pool's gauges at one moment (see `Engine::pool_gauges`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolGauges {
    pub expected_hosts: u32,
    pub available_hosts: u32,
    pub capacity: u64,
    pub deploy_in_progress: bool,
}

/// What the filter must do with a request before (and unless) it is forwarded.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Forward, after admission.
    Forward,
    /// Answer locally with this status (or gRPC status), as the fault filter does.
    Abort { status: u16, grpc_status: Option<u32>, fault: String },
    /// The request went to a drained host in blackhole mode: fail it like a dead upstream.
    Blackhole { fault: String },
    /// A TCP connection to close at once.
    Close { fault: String },
}

/// How a forwarded request or accepted connection is admitted.
#[derive(Clone, Debug, PartialEq)]
pub enum Admission {
    /// No capacity fault on the pool: no accounting beyond the in-flight gauge.
    Free,
    /// Count it against the pool's remaining capacity across all workers; over it, queue or shed.
    /// `fault` indexes `Engine::faults().faults` (resolved to an id only when a reply needs it).
    Limited { pool: usize, capacity: u64, queue: Option<Queue>, fault: usize },
}

/// The whole decision for one request or connection.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// Hold the request this long first (and which fault asked).
    pub delay: Option<(Duration, String)>,
    pub action: Action,
    pub admission: Admission,
}

impl Plan {
    const PASS: Plan = Plan { delay: None, action: Action::Forward, admission: Admission::Free };
}

/// The engine one VM holds: the configuration, its view of the proxy's faults, and a generator.
pub struct Engine {
    config: Config,
    faults: FaultSet,
    /// The configured pool each fault of `faults` names (by index), found once per fault set
    /// so that a request's decision compares indices, not names.
    fault_pools: Vec<Option<usize>>,
    rng: Rng,
}

/// What the faults active on one pool add up to at one moment.
#[derive(Default)]
struct Load {
    capacity_drained: u32,
    blackhole_drained: u32,
    queue: Option<Queue>,
    limiting_fault: Option<usize>,
    blackhole_fault: Option<usize>,
}

impl Load {
    /// The hosts `pool` has left and the concurrent requests they serve.
    fn remaining(&self, pool: &PoolConfig) -> (u32, u64) {
        let drained = self.capacity_drained.saturating_add(self.blackhole_drained).min(pool.hosts);
        let available = pool.hosts - drained;
        (available, u64::from(available) * u64::from(pool.capacity_per_host))
    }
}

impl Engine {
    pub fn new(config: Config, seed: u64) -> Self {
        Engine { config, faults: FaultSet::default(), fault_pools: Vec::new(), rng: Rng::new(seed) }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn faults(&self) -> &FaultSet {
        &self.faults
    }

    /// Replaces this VM's view with the proxy's shared fault set.
    pub fn set_faults(&mut self, faults: FaultSet) {
        let config = &self.config;
        self.fault_pools = faults.faults.iter().map(|f| config.pool(f.pool()?).map(|(i, _)| i)).collect();
        self.faults = faults;
    }

    /// Faults active at `now` (started, not expired).
    pub fn active(&self, now: u64) -> impl Iterator<Item = &Fault> {
        self.faults.faults.iter().filter(move |f| f.active(now))
    }

    /// The first pool of `protocol` whose match fits. Only asks the request what the pool
    /// matches need.
    pub fn match_pool(&self, protocol: Protocol, req: &mut dyn Request) -> Option<usize> {
        self.config.pools.iter().position(|pool| {
            if pool.protocol != protocol {
                return false;
            }
            let m = &pool.matcher;
            if let Some(cluster) = &m.cluster {
                if req.cluster().as_deref() != Some(cluster.as_str()) {
                    return false;
                }
            }
            if let Some(authority) = &m.authority {
                match req.header_bytes(":authority") {
                    Some(got) => {
                        if !crate::ascii::eq_ignore_case(without_port(&got), authority.as_bytes()) {
                            return false;
                        }
                    }
                    None => return false,
                }
            }
            if let Some(prefix) = &m.path_prefix {
                match req.header(":path") {
                    Some(path) if path.starts_with(prefix.as_str()) => {}
                    _ => return false,
                }
            }
            if let Some(port) = m.port {
                if req.port() != Some(port) {
                    return false;
                }
            }
            true
        })
    }

    /// The state of pool `index` at `now`.
    pub fn pool_status(&self, index: usize, now: u64) -> Option<PoolStatus> {
        self.status(index, now)
    }

    /// The part of [`Engine::pool_status`] the gauges publish: every VM reads it every `tick`
    /// for every pool, so it clones no name or fault id.
    pub fn pool_gauges(&self, index: usize, now: u64) -> Option<PoolGauges> {
        self.gauges(index, now, |_| {}).map(|(gauges, _)| gauges)
    }

    /// The id of fault `index`, or "" if the fault set changed since it was found.
    pub fn fault_id(&self, index: usize) -> &str {
        self.faults.faults.get(index).map_or("", |f| f.id.as_str())
    }

    /// The state of pool `index` at `now`, with its name and the ids of its active faults.
    fn status(&self, index: usize, now: u64) -> Option<PoolStatus> {
        let pool = self.config.pools.get(index)?;
        let mut faults = Vec::new();
        let (gauges, load) = self.gauges(index, now, |fault| faults.push(fault.id.clone()))?;
        Some(PoolStatus {
            name: pool.name.clone(),
            protocol: pool.protocol,
            expected_hosts: gauges.expected_hosts,
            available_hosts: gauges.available_hosts,
            capacity: gauges.capacity,
            deploy_in_progress: gauges.deploy_in_progress,
            capacity_drained: load.capacity_drained,
            blackhole_drained: load.blackhole_drained,
            queue: load.queue,
            limiting_fault: load.limiting_fault,
            blackhole_fault: load.blackhole_fault,
            faults,
        })
    }

    /// Pool `index`'s gauges and load at `now`; `each` sees every fault active on it.
    fn gauges(&self, index: usize, now: u64, mut each: impl FnMut(&Fault)) -> Option<(PoolGauges, Load)> {
        let pool = self.config.pools.get(index)?;
        let mut deploy_in_progress = false;
        let load = self.load(index, now, |fault| {
            each(fault);
            deploy_in_progress |= fault.deploying(now);
        });
        let (available_hosts, capacity) = load.remaining(pool);
        Some((PoolGauges { expected_hosts: pool.hosts, available_hosts, capacity, deploy_in_progress }, load))
    }

    /// What the faults active on pool `index` at `now` add up to; `each` sees every one of them.
    /// The request path calls it with a no-op `each`, so a decision allocates nothing.
    fn load(&self, index: usize, now: u64, mut each: impl FnMut(&Fault)) -> Load {
        let mut load = Load::default();
        let Some(pool) = self.config.pools.get(index) else { return load };
        for (i, fault) in self.faults.faults.iter().enumerate() {
            if self.fault_pools.get(i).copied().flatten() != Some(index) || !fault.active(now) {
                continue;
            }
            each(fault);
            // Active, so started: `now - start_ms` cannot wrap.
            let drained = fault.spec.kind().drained_hosts(pool.hosts, now - fault.start_ms);
            if drained == 0 {
                continue;
            }
            let (mode, queue) = match &fault.spec {
                FaultSpec::Drain(d) => (d.mode, d.queue),
                FaultSpec::Deploy(d) => (d.mode, None),
                _ => continue,
            };
            match mode {
                DrainMode::Capacity => {
                    load.capacity_drained = load.capacity_drained.saturating_add(drained);
                    load.limiting_fault.get_or_insert(i);
                    if load.queue.is_none() {
                        load.queue = queue;
                    }
                }
                DrainMode::Blackhole => {
                    load.blackhole_drained = load.blackhole_drained.saturating_add(drained);
                    load.blackhole_fault.get_or_insert(i);
                }
            }
        }
        load
    }

    /// The plan's first part for a request or connection of `pool`: a blackhole roll, then the
    /// admission its capacity faults ask for. `Err` carries the blackholing fault's id.
    fn admission(&mut self, pool: Option<usize>, now: u64) -> Result<Admission, String> {
        let Some((index, config)) = pool.and_then(|p| Some((p, self.config.pools.get(p)?))) else {
            return Ok(Admission::Free);
        };
        let load = self.load(index, now, |_| {});
        if let Some(fault) = load.blackhole_fault {
            let share = 100.0 * f64::from(load.blackhole_drained) / f64::from(config.hosts.max(1));
            if self.rng.roll(share) {
                return Err(self.fault_id(fault).to_string());
            }
        }
        if load.capacity_drained == 0 {
            return Ok(Admission::Free);
        }
        Ok(Admission::Limited {
            pool: index,
            capacity: load.remaining(config).1,
            queue: load.queue,
            fault: load.limiting_fault.unwrap_or(usize::MAX),
        })
    }

    /// Whether `decide_http` may plan anything but a pass (a fault is installed, or requests may
    /// carry header faults). When false the filter needs neither the clock nor a decision, and
    /// so makes no hostcall for them.
    pub fn may_act_http(&self) -> bool {
        !self.faults.faults.is_empty() || self.config.header_faults
    }

    /// Decides the fate of an HTTP request of pool `pool` (if any) arriving at `now`.
    pub fn decide_http(&mut self, now: u64, pool: Option<usize>, req: &mut dyn Request) -> Plan {
        if !self.may_act_http() {
            return Plan::PASS;
        }
        let admission = match self.admission(pool, now) {
            Ok(admission) => admission,
            Err(fault) => return Plan { action: Action::Blackhole { fault }, ..Plan::PASS },
        };
        let pool_name = pool.and_then(|p| self.config.pools.get(p)).map(|p| p.name.as_str());
        let mut plan = Plan { admission, ..Plan::PASS };
        for fault in self.faults.faults.iter().filter(|f| f.active(now)) {
            let applies = |target: Option<&str>| target.is_none() || target == pool_name;
            match &fault.spec {
                FaultSpec::Delay(d)
                    if plan.delay.is_none()
                        && applies(d.pool.as_deref())
                        && d.matcher.matches(req)
                        && self.rng.roll(d.percent) =>
                {
                    plan.delay = Some((d.delay, fault.id.clone()));
                }
                FaultSpec::Abort(a)
                    if plan.action == Action::Forward
                        && applies(a.pool.as_deref())
                        && a.matcher.matches(req)
                        && self.rng.roll(a.percent) =>
                {
                    plan.action = Action::Abort {
                        status: a.status.unwrap_or(200),
                        grpc_status: a.grpc_status,
                        fault: fault.id.clone(),
                    };
                }
                _ => {}
            }
        }
        if self.config.header_faults {
            self.header_faults(req, &mut plan);
        }
        plan
    }

    /// Per-request faults asked for in headers, within the configured caps. Malformed or
    /// over-cap values are ignored: a header never breaks a request.
    fn header_faults(&self, req: &mut dyn Request, plan: &mut Plan) {
        let limits = &self.config.limits;
        if plan.delay.is_none() {
            if let Some(d) = req.header(DELAY_HEADER).and_then(|v| Duration::parse(&v).ok()) {
                if d > Duration::ZERO && d <= limits.max_delay {
                    plan.delay = Some((d, DELAY_HEADER.to_string()));
                }
            }
        }
        if plan.action == Action::Forward && limits.max_abort_percent > 0.0 {
            if let Some(status) = req.header(ABORT_HEADER).and_then(|v| v.trim().parse::<u16>().ok()) {
                if (200..=599).contains(&status) {
                    plan.action = Action::Abort { status, grpc_status: None, fault: ABORT_HEADER.to_string() };
                }
            } else if let Some(grpc) = req.header(ABORT_GRPC_HEADER).and_then(|v| v.trim().parse::<u32>().ok()) {
                if grpc <= 16 {
                    plan.action =
                        Action::Abort { status: 200, grpc_status: Some(grpc), fault: ABORT_GRPC_HEADER.to_string() };
                }
            }
        }
    }

    /// Decides the fate of a new TCP connection of pool `pool` (if any) at `now`.
    pub fn decide_tcp(&mut self, now: u64, pool: Option<usize>) -> Plan {
        if self.faults.faults.is_empty() {
            return Plan::PASS;
        }
        let admission = match self.admission(pool, now) {
            Ok(admission) => admission,
            Err(fault) => return Plan { action: Action::Close { fault }, ..Plan::PASS },
        };
        let pool_name = pool.and_then(|p| self.config.pools.get(p)).map(|p| p.name.as_str());
        for fault in self.faults.faults.iter().filter(|f| f.active(now)) {
            if let FaultSpec::Reset(r) = &fault.spec {
                if (r.pool.is_none() || r.pool.as_deref() == pool_name) && self.rng.roll(r.percent) {
                    return Plan { action: Action::Close { fault: fault.id.clone() }, ..Plan::PASS };
                }
            }
        }
        // TCP has no queue: over capacity, a connection is refused at once.
        let admission = match admission {
            Admission::Limited { pool, capacity, fault, .. } => {
                Admission::Limited { pool, capacity, queue: None, fault }
            }
            Admission::Free => Admission::Free,
        };
        Plan { admission, ..Plan::PASS }
    }
}

/// An authority without its `:port` (digits after the last colon, possibly none), from the end:
/// the request path's one scan of the header, instead of a search for the colon and a second
/// pass over the port.
fn without_port(authority: &[u8]) -> &[u8] {
    let digits = authority.iter().rev().take_while(|b| b.is_ascii_digit()).count();
    match authority.len().checked_sub(digits + 1) {
        Some(colon) if authority[colon] == b':' => &authority[..colon],
        _ => authority,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::from_json;
    use crate::request::StaticRequest;

    fn engine(extra: &str) -> Engine {
        let json = format!(
            r#"{{"pools":[
                {{"name":"web","match":{{"authority":"bitbucket.org"}},"hosts":10,"capacity_per_host":10}},
                {{"name":"api","match":{{"cluster":"api"}},"hosts":4,"capacity_per_host":5}},
                {{"name":"ssh","protocol":"tcp","match":{{"port":22}},"hosts":4,"capacity_per_host":50}}
            ]{extra}}}"#
        );
        Engine::new(Config::parse(json.as_bytes()).unwrap(), 7)
    }

    fn add(e: &mut Engine, json: &str, now: u64) {
        let mut set = e.faults().clone();
        set.add(e.config(), &from_json(json.as_bytes()).unwrap(), now).unwrap();
        e.set_faults(set);
    }

    #[test]
    fn pools_match_by_authority_cluster_and_port() {
        let e = engine("");
        assert_eq!(e.match_pool(Protocol::Http, &mut StaticRequest::http("/", "BitBucket.org:443")), Some(0));
        assert_eq!(e.match_pool(Protocol::Http, &mut StaticRequest::http("/", "x").with_cluster("api")), Some(1));
        assert_eq!(e.match_pool(Protocol::Http, &mut StaticRequest::http("/", "other")), None);
        let mut conn = StaticRequest { port: Some(22), ..Default::default() };
        assert_eq!(e.match_pool(Protocol::Tcp, &mut conn), Some(2));
    }

    #[test]
    fn an_authority_matches_with_or_without_a_port_and_in_any_case() {
        let e = engine("");
        for authority in ["bitbucket.org", "BITBUCKET.ORG:443", "bitbucket.org:", "bitbucket.org:8080"] {
            let pool = e.match_pool(Protocol::Http, &mut StaticRequest::http("/", authority));
            assert_eq!(pool, Some(0), "{authority}");
        }
        for authority in ["bitbucket.org:x", "bitbucket.org.evil", "xbitbucket.org", "bitbucket.org:1:2", ":443", ""] {
            let pool = e.match_pool(Protocol::Http, &mut StaticRequest::http("/", authority));
            assert_eq!(pool, None, "{authority}");
        }
        assert_eq!(without_port(b"[::1]:8080"), b"[::1]");
        assert_eq!(without_port(b"[::1]"), b"[::1]");
    }

    proptest::proptest! {
        /// The port is stripped exactly when what follows the last colon is all digits.
        #[test]
        fn without_port_strips_digits_after_the_last_colon(authority in "[a-z0-9:\\[\\].]{0,12}") {
            let expected = match authority.rsplit_once(':') {
                Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
                _ => authority.as_str(),
            };
            proptest::prop_assert_eq!(without_port(authority.as_bytes()), expected.as_bytes());
        }
    }

    #[test]
    fn a_drain_limits_only_the_pool_it_names() {
        let mut e = engine("");
        add(&mut e, r#"{"ttl":"1m","drain":{"pool":"api","hosts":2}}"#, 0);
        let web = e.decide_http(1, Some(0), &mut StaticRequest::http("/", "bitbucket.org"));
        assert_eq!(web.admission, Admission::Free);
        let api = e.decide_http(1, Some(1), &mut StaticRequest::http("/", "x").with_cluster("api"));
        assert!(matches!(api.admission, Admission::Limited { pool: 1, .. }), "{api:?}");
        assert_eq!(e.pool_status(1, 1).map(|s| s.faults), Some(vec![e.faults().faults[0].id.clone()]));
        assert_eq!(e.pool_status(0, 1).map(|s| s.faults), Some(Vec::new()));
    }

    #[test]
    fn no_faults_means_pass_through() {
        let mut e = engine("");
        let plan =
            e.decide_http(0, Some(0), &mut StaticRequest::http("/", "bitbucket.org").with_header(ABORT_HEADER, "503"));
        assert_eq!(plan, Plan::PASS, "header faults are off unless configured");
    }

    #[test]
    fn only_faults_or_header_faults_let_a_request_be_acted_on() {
        // The filter skips the clock and the decision when this is false: it must never be false
        // while some request could get a plan other than a pass.
        let mut e = engine("");
        assert!(!e.may_act_http());
        add(&mut e, r#"{"ttl":"1m","abort":{"status":503,"percent":100}}"#, 0);
        assert!(e.may_act_http());
        let plan = e.decide_http(1, None, &mut StaticRequest::http("/", "x"));
        assert_ne!(plan, Plan::PASS);
        let with_headers = engine(r#","header_faults":true"#);
        assert!(with_headers.may_act_http());
    }

    #[test]
    fn capacity_drain_limits_admission_and_expires() {
        let mut e = engine("");
        add(&mut e, r#"{"ttl":"1m","drain":{"pool":"web","hosts":4}}"#, 0);
        let s = e.pool_status(0, 1).unwrap();
        assert_eq!((s.available_hosts, s.capacity, s.capacity_drained), (6, 60, 4));
        let plan = e.decide_http(1, Some(0), &mut StaticRequest::http("/", "bitbucket.org"));
        assert!(matches!(plan.admission, Admission::Limited { capacity: 60, .. }), "{plan:?}");
        let later = e.decide_http(60_000, Some(0), &mut StaticRequest::http("/", "bitbucket.org"));
        assert_eq!(later, Plan::PASS, "the fault expired");
        assert_eq!(e.pool_status(0, 60_000).unwrap().available_hosts, 10);
    }

    #[test]
    fn blackhole_fails_the_drained_share_at_once() {
        let mut e = engine("");
        add(&mut e, r#"{"drain":{"pool":"web","hosts":3,"mode":"blackhole"}}"#, 0);
        let failed = (0..10_000)
            .filter(|_| {
                let plan = e.decide_http(1, Some(0), &mut StaticRequest::http("/", "bitbucket.org"));
                matches!(plan.action, Action::Blackhole { .. })
            })
            .count();
        assert!((2_800..3_200).contains(&failed), "{failed}");
    }

    #[test]
    fn delay_then_abort_on_matching_requests_only() {
        let mut e = engine("");
        add(&mut e, r#"{"delay":{"delay":"200ms","match":{"path_prefix":"/api"}}}"#, 0);
        add(&mut e, r#"{"abort":{"status":502,"match":{"headers":[{"name":"X-Canary","value":"1"}]}}}"#, 0);
        let plan = e.decide_http(1, None, &mut StaticRequest::http("/api/x", "h").with_header("x-canary", "1"));
        assert_eq!(plan.delay.map(|d| d.0), Some(Duration::from_millis(200)));
        assert!(matches!(plan.action, Action::Abort { status: 502, .. }));
        let plain = e.decide_http(1, None, &mut StaticRequest::http("/web", "h"));
        assert_eq!(plain, Plan::PASS);
    }

    #[test]
    fn header_faults_honour_caps_when_opted_in() {
        let mut e = engine(r#","header_faults":true,"limits":{"max_delay":"1s"}"#);
        let plan = e.decide_http(
            0,
            None,
            &mut StaticRequest::http("/", "h").with_header(DELAY_HEADER, "5s").with_header(ABORT_HEADER, "503"),
        );
        assert_eq!(plan.delay, None, "over max_delay: ignored");
        assert!(matches!(plan.action, Action::Abort { status: 503, .. }));
        let junk = e.decide_http(0, None, &mut StaticRequest::http("/", "h").with_header(ABORT_HEADER, "lots"));
        assert_eq!(junk, Plan::PASS);
    }

    #[test]
    fn deploy_reports_progress_and_tcp_resets() {
        let mut e = engine("");
        add(&mut e, r#"{"ttl":"1h","deploy":{"pool":"ssh","batches":2,"batch_interval":"5m","abort_at_batch":1}}"#, 0);
        let during = e.pool_status(2, 1).unwrap();
        assert!(during.deploy_in_progress && during.available_hosts == 2);
        let after = e.pool_status(2, 3_000_000).unwrap();
        assert!(!after.deploy_in_progress && after.available_hosts == 2, "aborted and left drained");
        // The gauges the timer publishes are the status's own figures, at every moment.
        for (status, now) in [(&during, 1), (&after, 3_000_000)] {
            let g = e.pool_gauges(2, now).unwrap();
            assert_eq!(
                (g.expected_hosts, g.available_hosts, g.capacity, g.deploy_in_progress),
                (status.expected_hosts, status.available_hosts, status.capacity, status.deploy_in_progress)
            );
        }
        assert_eq!(e.pool_gauges(3, 1), None, "no such pool");
        add(&mut e, r#"{"reset":{"pool":"ssh","percent":100}}"#, 0);
        assert!(matches!(e.decide_tcp(1, Some(2)).action, Action::Close { .. }));
    }
}
