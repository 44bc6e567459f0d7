// The names of every metric the filter defines. Envoy shows them in /stats as written here and
// in /stats/prometheus with dots as underscores; `ebb.pool.<pool>.` becomes the `ebb_pool` label
// through the tag-extraction rule in deploy/envoy (see docs/metrics.md).

/// Gauge or counter, as `proxy_define_metric` takes them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
}

/// Per-pool metrics, named `ebb.pool.<pool>.<name>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoolMetric {
    /// Hosts the pool should have (configuration).
    ExpectedHosts,
    /// Hosts in the pool now: expected minus drained. The capacity alert compares the two.
    AvailableHosts,
    /// Concurrent requests/connections the available hosts serve.
    Capacity,
    /// 1 while a rolling deployment is under way on the pool.
    DeployInProgress,
    /// Requests (HTTP) or connections (TCP) in flight through this proxy.
    InFlight,
    /// Requests or connections matched to the pool.
    Requests,
    /// Shed over capacity by a capacity drain or deploy (local 503).
    Shed,
    /// Failed by a blackhole drain or deploy.
    Blackholed,
    /// Answered by an abort fault.
    Aborted,
    /// Held by a delay fault.
    Delayed,
    /// Connections closed by a reset fault.
    Reset,
    /// Requests that waited in a drain's queue.
    Queued,
}

impl PoolMetric {
    pub const ALL: [PoolMetric; 12] = [
        PoolMetric::ExpectedHosts,
        PoolMetric::AvailableHosts,
        PoolMetric::Capacity,
        PoolMetric::DeployInProgress,
        PoolMetric::InFlight,
        PoolMetric::Requests,
        PoolMetric::Shed,
        PoolMetric::Blackholed,
        PoolMetric::Aborted,
        PoolMetric::Delayed,
        PoolMetric::Reset,
        PoolMetric::Queued,
    ];

    pub fn suffix(self) -> &'static str {
        match self {
            PoolMetric::ExpectedHosts => "expected_hosts",
            PoolMetric::AvailableHosts => "available_hosts",
            PoolMetric::Capacity => "capacity",
            PoolMetric::DeployInProgress => "deploy_in_progress",
            PoolMetric::InFlight => "in_flight",
            PoolMetric::Requests => "requests_total",
            PoolMetric::Shed => "shed_total",
            PoolMetric::Blackholed => "blackholed_total",
            PoolMetric::Aborted => "aborted_total",
            PoolMetric::Delayed => "delayed_total",
            PoolMetric::Reset => "reset_total",
            PoolMetric::Queued => "queued_total",
        }
    }

    pub fn kind(self) -> Kind {
        match self {
            PoolMetric::ExpectedHosts
            | PoolMetric::AvailableHosts
            | PoolMetric::Capacity
            | PoolMetric::DeployInProgress
            | PoolMetric::InFlight => Kind::Gauge,
            _ => Kind::Counter,
        }
    }

    /// The stat name Envoy shows in /stats.
    pub fn name(self, pool: &str) -> String {
        format!("ebb.pool.{pool}.{}", self.suffix())
    }
}

/// Proxy-wide metrics, named `ebb.<name>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GlobalMetric {
    /// 1 when the configuration is valid and faults can be injected; 0 when disarmed.
    Armed,
    /// Faults active now.
    ActiveFaults,
    /// Control API calls that changed something.
    CommandsAccepted,
    /// Control API calls refused (bad input, over a cap, unauthorized).
    CommandsRefused,
    /// Faults that reached their TTL.
    FaultsExpired,
    /// Requests answered by abort faults, any pool or none.
    Aborted,
    /// Requests held by delay faults, any pool or none.
    Delayed,
}

impl GlobalMetric {
    pub const ALL: [GlobalMetric; 7] = [
        GlobalMetric::Armed,
        GlobalMetric::ActiveFaults,
        GlobalMetric::CommandsAccepted,
        GlobalMetric::CommandsRefused,
        GlobalMetric::FaultsExpired,
        GlobalMetric::Aborted,
        GlobalMetric::Delayed,
    ];

    pub fn name(self) -> &'static str {
        match self {
            GlobalMetric::Armed => "ebb.armed",
            GlobalMetric::ActiveFaults => "ebb.active_faults",
            GlobalMetric::CommandsAccepted => "ebb.commands_accepted_total",
            GlobalMetric::CommandsRefused => "ebb.commands_refused_total",
            GlobalMetric::FaultsExpired => "ebb.faults_expired_total",
            GlobalMetric::Aborted => "ebb.aborted_total",
            GlobalMetric::Delayed => "ebb.delayed_total",
        }
    }

    pub fn kind(self) -> Kind {
        match self {
            GlobalMetric::Armed | GlobalMetric::ActiveFaults => Kind::Gauge,
            _ => Kind::Counter,
        }
    }
}
