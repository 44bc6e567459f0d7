// The bootstrap's clusters as ebb proxy reaches them: endpoints resolved once at start (STRICT_DNS
// names on loopback), Envoy's round-robin and least-request choice, and the circuit breakers.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::bootstrap::{Cluster, LbPolicy};
use crate::stats::ClusterStats;

/// Envoy's circuit-breaker defaults (cluster.proto: 1024 of each).
const DEFAULT_MAX: u64 = 1024;

pub struct Upstream {
    pub name: String,
    pub endpoints: Vec<SocketAddr>,
    pub connect_timeout: Duration,
    lb: LbPolicy,
    next: AtomicUsize,
    /// Requests in flight per endpoint (least request).
    active: Vec<AtomicU64>,
    /// Requests (or TCP connections) in flight to the cluster, against the breakers.
    requests: AtomicU64,
    pub max_requests: u64,
    pub max_connections: u64,
    pub stats: ClusterStats,
}

/// A request's claim on a cluster: released when dropped.
pub struct Claim {
    upstream: Arc<Upstream>,
    endpoint: usize,
}

impl Claim {
    pub fn address(&self) -> SocketAddr {
        self.upstream.endpoints[self.endpoint]
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.upstream.requests.fetch_sub(1, Ordering::Relaxed);
        self.upstream.active[self.endpoint].fetch_sub(1, Ordering::Relaxed);
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

impl Upstream {
    /// Resolves the cluster's endpoints; `overrides` replace them (tests point clusters at
    /// loopback servers).
    pub fn resolve(cluster: &Cluster, overrides: Option<&[SocketAddr]>) -> Result<Upstream, String> {
        let endpoints = match overrides {
            Some(list) => list.to_vec(),
            None => {
                let mut all = Vec::new();
                for e in &cluster.endpoints {
                    let found = (e.host.as_str(), e.port).to_socket_addrs().map_err(|err| {
                        format!(
                            "cluster {}: cannot resolve {}:{} ({err}); point it elsewhere with --cluster {}=HOST:PORT",
                            cluster.name, e.host, e.port, cluster.name
                        )
                    })?;
                    // STRICT_DNS: every address of the name is an endpoint, as Envoy does.
                    all.extend(found);
                }
                all
            }
        };
        let active = endpoints.iter().map(|_| AtomicU64::new(0)).collect();
        let stats = ClusterStats::default();
        stats.membership_total.store(endpoints.len() as u64, Ordering::Relaxed);
        Ok(Upstream {
            name: cluster.name.clone(),
            connect_timeout: cluster.connect_timeout,
            lb: cluster.lb_policy,
            next: AtomicUsize::new(0),
            active,
            requests: AtomicU64::new(0),
            max_requests: cluster.max_requests.unwrap_or(DEFAULT_MAX),
            max_connections: cluster.max_connections.unwrap_or(DEFAULT_MAX),
            endpoints,
            stats,
        })
    }

    /// Picks an endpoint for a request and counts it against `max_requests`.
    pub fn claim(self: &Arc<Self>) -> Result<Claim, NoClaim> {
        self.claim_under(self.max_requests)
    }

    /// Picks an endpoint for a TCP connection (tcp_proxy) and counts it against `max_connections`.
    pub fn claim_connection(self: &Arc<Self>) -> Result<Claim, NoClaim> {
        self.claim_under(self.max_connections)
    }

    fn claim_under(self: &Arc<Self>, max: u64) -> Result<Claim, NoClaim> {
        if self.endpoints.is_empty() {
            return Err(NoClaim::NoEndpoint);
        }
        if self.requests.fetch_add(1, Ordering::Relaxed) >= max {
            self.requests.fetch_sub(1, Ordering::Relaxed);
            self.stats.rq_pending_overflow.fetch_add(1, Ordering::Relaxed);
            return Err(NoClaim::Overflow);
        }
        let n = self.endpoints.len();
        let endpoint = match self.lb {
            LbPolicy::RoundRobin => self.next.fetch_add(1, Ordering::Relaxed) % n,
            // Envoy's least request picks the better of two choices; with the counts at hand,
            // the best of all is as good and deterministic for small loopback clusters.
            LbPolicy::LeastRequest => {
                let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
                (0..n).map(|i| (start + i) % n).min_by_key(|&i| self.active[i].load(Ordering::Relaxed)).unwrap_or(start)
            }
        };
        self.active[endpoint].fetch_add(1, Ordering::Relaxed);
        Ok(Claim { upstream: self.clone(), endpoint })
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
