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
    /// Requests (HTTP) or connections (TCP) in flight through this proxy, all workers together:
    /// `Requests` minus `Completed`, recorded by every VM once per tick.
    InFlight,
    /// Requests or connections matched to the pool.
    Requests,
    /// Requests or connections matched to the pool that have finished (logged or closed).
    Completed,
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
    /// Capacity slots asked for under a capacity drain or deploy, one per attempt (admitted or not).
    SlotsTaken,
    /// Capacity slots given back: by requests that held one, and by attempts that found none free.
    /// `SlotsTaken` minus `SlotsFreed`, read proxy-wide, is what the pool's drained capacity admits
    /// against (see the filter's `slots`).
    SlotsFreed,
}

impl PoolMetric {
    pub const ALL: [PoolMetric; 15] = [
        PoolMetric::ExpectedHosts,
        PoolMetric::AvailableHosts,
        PoolMetric::Capacity,
        PoolMetric::DeployInProgress,
        PoolMetric::InFlight,
        PoolMetric::Requests,
        PoolMetric::Completed,
        PoolMetric::Shed,
        PoolMetric::Blackholed,
        PoolMetric::Aborted,
        PoolMetric::Delayed,
        PoolMetric::Reset,
        PoolMetric::Queued,
        PoolMetric::SlotsTaken,
        PoolMetric::SlotsFreed,
    ];

    /// Position in [`PoolMetric::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    pub fn suffix(self) -> &'static str {
        match self {
            PoolMetric::ExpectedHosts => "expected_hosts",
            PoolMetric::AvailableHosts => "available_hosts",
            PoolMetric::Capacity => "capacity",
            PoolMetric::DeployInProgress => "deploy_in_progress",
            PoolMetric::InFlight => "in_flight",
            PoolMetric::Requests => "requests_total",
            PoolMetric::Completed => "completed_total",
            PoolMetric::Shed => "shed_total",
            PoolMetric::Blackholed => "blackholed_total",
            PoolMetric::Aborted => "aborted_total",
            PoolMetric::Delayed => "delayed_total",
            PoolMetric::Reset => "reset_total",
            PoolMetric::Queued => "queued_total",
            // At most 18 characters, as `deploy_in_progress`: Kong's module caps a metric's name
            // (see docs/staging.md), and the pool name's limit is set for the longest suffix.
            PoolMetric::SlotsTaken => "slots_taken_total",
            PoolMetric::SlotsFreed => "slots_freed_total",
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

    /// Position in [`GlobalMetric::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

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

#[cfg(test)]
mod tests {
    use super::*;

    /// The rows of docs/metrics.md's tables: (stat, series, type) in order of appearance.
    fn documented() -> Vec<(String, String, String)> {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/metrics.md");
        let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
        text.lines()
            .filter_map(|line| {
                let cells: Vec<&str> = line.split('|').map(str::trim).collect();
                let stat = cells.get(1)?.strip_prefix('`')?.strip_suffix('`')?;
                let series = cells.get(2)?.trim_matches('`');
                let kind = cells.get(3)?;
                stat.starts_with("ebb.").then(|| (stat.to_string(), series.to_string(), kind.to_string()))
            })
            .collect()
    }

    #[test]
    fn every_pool_metric_name_fits_kongs_limit_with_the_longest_pool_name() {
        // ngx_wasm_module traps on a name over its `max_metric_name_length`; docs/staging.md
        // tells operators the longest ebb defines, its `pw.<module>.` prefix included, is 98.
        let pool = "p".repeat(63);
        for m in PoolMetric::ALL {
            let name = format!("pw.ebb.{}", m.name(&pool));
            assert!(name.len() <= 98, "{m:?}: {} characters", name.len());
        }
    }

    #[test]
    fn index_is_the_position_in_all() {
        for (i, m) in PoolMetric::ALL.iter().enumerate() {
            assert_eq!(m.index(), i, "{m:?}");
        }
        for (i, m) in GlobalMetric::ALL.iter().enumerate() {
            assert_eq!(m.index(), i, "{m:?}");
        }
    }

    #[test]
    fn docs_table_lists_every_metric_with_its_type_and_nothing_else() {
        // (stat, Prometheus series after the ebb_pool tag rule, kind)
        let mut defined: Vec<(String, String, Kind)> =
            PoolMetric::ALL.iter().map(|m| (m.name("<pool>"), format!("ebb_pool_{}", m.suffix()), m.kind())).collect();
        defined.extend(GlobalMetric::ALL.iter().map(|m| (m.name().to_string(), m.name().replace('.', "_"), m.kind())));
        let documented = documented();
        for (name, series, kind) in &defined {
            let row = documented.iter().find(|(stat, _, _)| stat == name);
            let Some((_, doc_series, doc_kind)) = row else { panic!("docs/metrics.md has no row for {name}") };
            assert_eq!(doc_series, series, "docs/metrics.md: the series of {name}");
            let want = match kind {
                Kind::Counter => "counter",
                Kind::Gauge => "gauge",
            };
            assert!(doc_kind.starts_with(want), "docs/metrics.md: {name} is a {want}, documented as {doc_kind}");
        }
        for (stat, _, _) in &documented {
            assert!(
                defined.iter().any(|(name, _, _)| name == stat),
                "docs/metrics.md documents {stat}, which the filter does not define"
            );
        }
        assert_eq!(documented.len(), defined.len(), "docs/metrics.md lists a metric twice");
    }
}
