// The decisions: which pool a request or connection belongs to, what state each pool is in at a
// given time, and what happens to a request (blackhole, delay, abort, admission under capacity).

use crate::config::{Config, Protocol};
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

impl PoolStatus {
    /// True when requests must pass admission against `capacity`.
    pub fn limited(&self) -> bool {
        self.capacity_drained > 0
    }
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
    rng: Rng,
}

impl Engine {
    pub fn new(config: Config, seed: u64) -> Self {
        Engine { config, faults: FaultSet::default(), rng: Rng::new(seed) }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn faults(&self) -> &FaultSet {
        &self.faults
    }

    /// Replaces this VM's view with the proxy's shared fault set.
    pub fn set_faults(&mut self, faults: FaultSet) {
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
                match req.header(":authority") {
                    Some(got) => {
                        let got: &str = &got;
                        let host = got.rsplit_once(':').map_or(got, |(h, port)| {
                            if port.bytes().all(|b| b.is_ascii_digit()) {
                                h
                            } else {
                                got
                            }
                        });
                        if !host.eq_ignore_ascii_case(authority) {
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
        self.status(index, now, true)
    }

    /// The id of fault `index`, or "" if the fault set changed since it was found.
    pub fn fault_id(&self, index: usize) -> &str {
        self.faults.faults.get(index).map_or("", |f| f.id.as_str())
    }

    /// `pool_status`; without `named`, the name and fault ids are left empty so the request
    /// path allocates nothing.
    fn status(&self, index: usize, now: u64, named: bool) -> Option<PoolStatus> {
        let pool = self.config.pools.get(index)?;
        let mut status = PoolStatus {
            name: if named { pool.name.clone() } else { String::new() },
            protocol: pool.protocol,
            expected_hosts: pool.hosts,
            available_hosts: pool.hosts,
            capacity: 0,
            deploy_in_progress: false,
            capacity_drained: 0,
            blackhole_drained: 0,
            queue: None,
            limiting_fault: None,
            blackhole_fault: None,
            faults: Vec::new(),
        };
        for (i, fault) in self.faults.faults.iter().enumerate() {
            if !fault.active(now) || fault.pool() != Some(pool.name.as_str()) {
                continue;
            }
            if named {
                status.faults.push(fault.id.clone());
            }
            status.deploy_in_progress |= fault.deploying(now);
            let drained = fault.drained_hosts(pool.hosts, now);
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
                    status.capacity_drained = status.capacity_drained.saturating_add(drained);
                    status.limiting_fault.get_or_insert(i);
                    if status.queue.is_none() {
                        status.queue = queue;
                    }
                }
                DrainMode::Blackhole => {
                    status.blackhole_drained = status.blackhole_drained.saturating_add(drained);
                    status.blackhole_fault.get_or_insert(i);
                }
            }
        }
        let drained = status.capacity_drained.saturating_add(status.blackhole_drained).min(pool.hosts);
        status.available_hosts = pool.hosts - drained;
        status.capacity = u64::from(status.available_hosts) * u64::from(pool.capacity_per_host);
        Some(status)
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
        let status = pool.and_then(|p| self.status(p, now, false));
        let pool_name = pool.and_then(|p| self.config.pools.get(p)).map(|p| p.name.as_str());
        let mut plan = Plan::PASS;
        if let Some(s) = &status {
            if let Some(fault) = s.blackhole_fault {
                let share = 100.0 * f64::from(s.blackhole_drained) / f64::from(s.expected_hosts.max(1));
                if self.rng.roll(share) {
                    plan.action = Action::Blackhole { fault: self.fault_id(fault).to_string() };
                    return plan;
                }
            }
        }
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
        if let (Some(s), Some(index)) = (&status, pool) {
            if s.limited() {
                plan.admission = Admission::Limited {
                    pool: index,
                    capacity: s.capacity,
                    queue: s.queue,
                    fault: s.limiting_fault.unwrap_or(usize::MAX),
                };
            }
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
        let status = pool.and_then(|p| self.status(p, now, false));
        let pool_name = pool.and_then(|p| self.config.pools.get(p)).map(|p| p.name.as_str());
        let mut plan = Plan::PASS;
        if let Some(s) = &status {
            if let Some(fault) = s.blackhole_fault {
                let share = 100.0 * f64::from(s.blackhole_drained) / f64::from(s.expected_hosts.max(1));
                if self.rng.roll(share) {
                    plan.action = Action::Close { fault: self.fault_id(fault).to_string() };
                    return plan;
                }
            }
        }
        for fault in self.faults.faults.iter().filter(|f| f.active(now)) {
            if let FaultSpec::Reset(r) = &fault.spec {
                if (r.pool.is_none() || r.pool.as_deref() == pool_name) && self.rng.roll(r.percent) {
                    plan.action = Action::Close { fault: fault.id.clone() };
                    return plan;
                }
            }
        }
        if let (Some(s), Some(index)) = (&status, pool) {
            if s.limited() {
                plan.admission = Admission::Limited {
                    pool: index,
                    capacity: s.capacity,
                    queue: None,
                    fault: s.limiting_fault.unwrap_or(usize::MAX),
                };
            }
        }
        plan
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
        assert_eq!((s.available_hosts, s.capacity, s.limited()), (6, 60, true));
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
        add(&mut e, r#"{"reset":{"pool":"ssh","percent":100}}"#, 0);
        assert!(matches!(e.decide_tcp(1, Some(2)).action, Action::Close { .. }));
    }
}
