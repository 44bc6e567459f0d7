// The bootstrap's clusters as ebb proxy reaches them: endpoints fixed or found by name (STRICT_DNS,
// resolved again every dns_refresh_rate), Envoy's round-robin and least-request choice, breakers.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use crate::bootstrap::{Cluster, Discovery, LbPolicy};
use crate::dns;
use crate::stats::ClusterStats;

/// Envoy's circuit-breaker defaults (cluster.proto: 1024 of each).
const DEFAULT_MAX: u64 = 1024;

/// One set of endpoints, replaced whole when a resolution finds others.
struct Hosts {
    endpoints: Vec<SocketAddr>,
    /// Requests in flight per endpoint (least request).
    active: Vec<AtomicU64>,
}

impl Hosts {
    fn new(endpoints: Vec<SocketAddr>) -> Arc<Hosts> {
        let active = endpoints.iter().map(|_| AtomicU64::new(0)).collect();
        Arc::new(Hosts { endpoints, active })
    }
}

/// How a STRICT_DNS cluster finds its endpoints again.
pub struct Names {
    /// Name and port of each endpoint of `load_assignment`.
    names: Vec<(String, u16)>,
    pub every: Duration,
    /// The cluster's `dns_resolvers`; the system's resolver when empty.
    resolvers: Vec<SocketAddr>,
}

pub struct Upstream {
    pub name: String,
    hosts: RwLock<Arc<Hosts>>,
    pub connect_timeout: Duration,
    lb: LbPolicy,
    next: AtomicUsize,
    /// Requests in flight to the cluster, against `max_requests`.
    requests: AtomicU64,
    /// Upstream connections open to the cluster from every worker (HTTP pools and tcp_proxy),
    /// against `max_connections`.
    connections: AtomicU64,
    pub max_requests: u64,
    pub max_connections: u64,
    pub stats: ClusterStats,
    /// None for fixed endpoints (STATIC, or replaced with --cluster).
    pub names: Option<Names>,
}

/// A request's (or a TCP connection's) claim on a cluster: released when dropped.
pub struct Claim {
    upstream: Arc<Upstream>,
    hosts: Arc<Hosts>,
    endpoint: usize,
    /// Counted against max_connections (tcp_proxy) rather than max_requests.
    connection: bool,
}

impl Claim {
    pub fn address(&self) -> SocketAddr {
        self.hosts.endpoints[self.endpoint]
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        if self.connection {
            self.upstream.close_connection();
        } else {
            self.upstream.requests.fetch_sub(1, Ordering::Relaxed);
        }
        self.hosts.active[self.endpoint].fetch_sub(1, Ordering::Relaxed);
    }
}

/// Why no endpoint was claimed.
#[derive(Debug, PartialEq, Eq)]
pub enum NoClaim {
    /// The cluster has no endpoint (Envoy: 503 `no healthy upstream`).
    NoEndpoint,
    /// `max_requests` reached (Envoy: 503 with `x-envoy-overloaded`).
    Overflow,
}

impl Names {
    /// Every address of every name (STRICT_DNS: each is an endpoint, as Envoy does).
    pub fn resolve(&self) -> Result<Vec<SocketAddr>, String> {
        let mut all = Vec::new();
        for (host, port) in &self.names {
            if self.resolvers.is_empty() {
                let found = (host.as_str(), *port)
                    .to_socket_addrs()
                    .map_err(|e| format!("cannot resolve {host}:{port} ({e})"))?;
                all.extend(found);
            } else {
                let ips = dns::resolve_a(host, &self.resolvers).map_err(|e| format!("cannot resolve {host}: {e}"))?;
                all.extend(ips.into_iter().map(|ip| SocketAddr::new(ip.into(), *port)));
            }
        }
        Ok(all)
    }
}

impl Upstream {
    /// Resolves the cluster's endpoints; `overrides` replace them (tests point clusters at
    /// loopback servers).
    pub fn resolve(cluster: &Cluster, overrides: Option<&[SocketAddr]>) -> Result<Upstream, String> {
        let names = match (overrides, cluster.discovery) {
            (None, Discovery::StrictDns) => Some(Names {
                names: cluster.endpoints.iter().map(|e| (e.host.clone(), e.port)).collect(),
                every: cluster.dns_refresh_rate,
                resolvers: cluster.dns_resolvers.clone(),
            }),
            _ => None,
        };
        let endpoints = match (overrides, &names) {
            (Some(list), _) => list.to_vec(),
            (None, Some(names)) => names.resolve().map_err(|e| {
                format!("cluster {}: {e}; point it elsewhere with --cluster {}=HOST:PORT", cluster.name, cluster.name)
            })?,
            (None, None) => {
                let mut all = Vec::new();
                for e in &cluster.endpoints {
                    let found = (e.host.as_str(), e.port).to_socket_addrs().map_err(|err| {
                        format!("cluster {}: cannot resolve {}:{} ({err})", cluster.name, e.host, e.port)
                    })?;
                    all.extend(found);
                }
                all
            }
        };
        let stats = ClusterStats::default();
        stats.membership_total.store(endpoints.len() as u64, Ordering::Relaxed);
        Ok(Upstream {
            name: cluster.name.clone(),
            connect_timeout: cluster.connect_timeout,
            lb: cluster.lb_policy,
            next: AtomicUsize::new(0),
            hosts: RwLock::new(Hosts::new(endpoints)),
            requests: AtomicU64::new(0),
            connections: AtomicU64::new(0),
            max_requests: cluster.max_requests.unwrap_or(DEFAULT_MAX),
            max_connections: cluster.max_connections.unwrap_or(DEFAULT_MAX),
            stats,
            names,
        })
    }

    /// The endpoints now.
    pub fn endpoints(&self) -> Vec<SocketAddr> {
        self.current().endpoints.clone()
    }

    /// Whether `address` is one of the endpoints now.
    pub fn has_endpoint(&self, address: SocketAddr) -> bool {
        self.current().endpoints.contains(&address)
    }

    fn current(&self) -> Arc<Hosts> {
        self.hosts.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Resolves the names again and takes the endpoints found if they differ (requests in
    /// flight keep theirs). A failed resolution keeps the hosts, as Envoy does. Returns
    /// whether they changed; fixed clusters never do.
    pub fn refresh(&self) -> Result<bool, String> {
        let Some(names) = &self.names else { return Ok(false) };
        let found = names.resolve()?;
        if found == self.current().endpoints {
            return Ok(false);
        }
        self.stats.membership_total.store(found.len() as u64, Ordering::Relaxed);
        *self.hosts.write().unwrap_or_else(PoisonError::into_inner) = Hosts::new(found);
        Ok(true)
    }

    /// Picks an endpoint for a request and counts it against `max_requests`.
    pub fn claim(self: &Arc<Self>) -> Result<Claim, NoClaim> {
        self.claim_under(false)
    }

    /// Picks an endpoint for a TCP connection (tcp_proxy) and counts it against `max_connections`.
    pub fn claim_connection(self: &Arc<Self>) -> Result<Claim, NoClaim> {
        self.claim_under(true)
    }

    /// Counts a new upstream connection against `max_connections`; `anyway` counts it over the
    /// limit (a worker's pool with no connection to the endpoint opens one regardless, as
    /// Envoy's does). False when over the limit and not `anyway`.
    pub fn open_connection(&self, anyway: bool) -> bool {
        if self.connections.fetch_add(1, Ordering::Relaxed) >= self.max_connections && !anyway {
            self.connections.fetch_sub(1, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// One upstream connection counted by `open_connection` closed.
    pub fn close_connection(&self) {
        self.connections.fetch_sub(1, Ordering::Relaxed);
    }

    /// Upstream connections open now, from every worker.
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }

    fn claim_under(self: &Arc<Self>, connection: bool) -> Result<Claim, NoClaim> {
        let hosts = self.current();
        let n = hosts.endpoints.len();
        if n == 0 {
            return Err(NoClaim::NoEndpoint);
        }
        let admitted = if connection {
            self.open_connection(false)
        } else if self.requests.fetch_add(1, Ordering::Relaxed) >= self.max_requests {
            self.requests.fetch_sub(1, Ordering::Relaxed);
            false
        } else {
            true
        };
        if !admitted {
            let overflow = if connection { &self.stats.cx_overflow } else { &self.stats.rq_pending_overflow };
            overflow.fetch_add(1, Ordering::Relaxed);
            return Err(NoClaim::Overflow);
        }
        let endpoint = match self.lb {
            LbPolicy::RoundRobin => self.next.fetch_add(1, Ordering::Relaxed) % n,
            // Envoy's least request picks the better of two choices; with the counts at hand,
            // the best of all is as good and deterministic for small loopback clusters.
            LbPolicy::LeastRequest => {
                let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
                (0..n)
                    .map(|i| (start + i) % n)
                    .min_by_key(|&i| hosts.active[i].load(Ordering::Relaxed))
                    .unwrap_or(start)
            }
        };
        hosts.active[endpoint].fetch_add(1, Ordering::Relaxed);
        Ok(Claim { upstream: self.clone(), hosts, endpoint, connection })
    }
}

/// Resolves STRICT_DNS clusters again in the background, each every `dns_refresh_rate`, until
/// `stop` says so (checked at least every 50 ms). Failures are logged and the hosts kept.
pub fn refresh_until(upstreams: &[Arc<Upstream>], stop: impl Fn() -> bool) {
    // The harness's one wall clock.
    let clock = ebb_host::Clock::real();
    let start = clock.now_ns();
    let elapsed = || Duration::from_nanos(clock.now_ns().saturating_sub(start));
    let mut due: Vec<(Duration, &Arc<Upstream>)> =
        upstreams.iter().filter_map(|u| u.names.as_ref().map(|n| (n.every, u))).collect();
    if due.is_empty() {
        return;
    }
    while !stop() {
        let now = elapsed();
        for (at, upstream) in &mut due {
            if *at > now {
                continue;
            }
            let every = upstream.names.as_ref().map_or(Duration::from_secs(5), |n| n.every);
            *at = now.saturating_add(every);
            match upstream.refresh() {
                Ok(true) => eprintln!(
                    "[info][main] cluster {}: DNS resolution changed the hosts to {:?}",
                    upstream.name,
                    upstream.endpoints()
                ),
                Ok(false) => {}
                Err(e) => eprintln!("[warning][main] cluster {}: {e}; keeping its hosts", upstream.name),
            }
        }
        let next = due.iter().map(|(at, _)| *at).min().unwrap_or_default();
        std::thread::sleep(next.saturating_sub(elapsed()).min(Duration::from_millis(50)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bootstrap::{Discovery, Endpoint};

    fn cluster(lb: LbPolicy, max_requests: Option<u64>) -> Cluster {
        Cluster {
            name: "web".into(),
            discovery: Discovery::Static,
            connect_timeout: Duration::from_secs(1),
            lb_policy: lb,
            endpoints: vec![
                Endpoint { host: "127.0.0.1".into(), port: 1 },
                Endpoint { host: "127.0.0.1".into(), port: 2 },
            ],
            max_connections: None,
            max_requests,
            dns_refresh_rate: Duration::from_secs(5),
            dns_resolvers: Vec::new(),
        }
    }

    #[test]
    fn round_robin_alternates_and_the_breaker_overflows() {
        let u = Arc::new(Upstream::resolve(&cluster(LbPolicy::RoundRobin, Some(2)), None).unwrap());
        let a = u.claim().unwrap();
        let b = u.claim().unwrap();
        assert_ne!(a.address(), b.address());
        assert!(matches!(u.claim(), Err(NoClaim::Overflow)));
        drop(a);
        assert!(u.claim().is_ok());
    }

    #[test]
    fn least_request_avoids_the_busy_endpoint() {
        let u = Arc::new(Upstream::resolve(&cluster(LbPolicy::LeastRequest, None), None).unwrap());
        let busy = u.claim().unwrap();
        for _ in 0..4 {
            let c = u.claim().unwrap();
            assert_ne!(c.address(), busy.address());
        }
    }
}
