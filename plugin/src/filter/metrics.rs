// The filter's metric handles, defined once per VM and configuration: counters are incremented,
// gauges recorded from a value every VM agrees on. Names come from `ebb_engine::metrics`.

use std::cell::Cell;

use ebb_engine::metrics::{GlobalMetric, Kind, PoolMetric};

use super::hostcall;

fn define(kind: Kind, name: &str) -> Option<u32> {
    // `proxy_metric_type_t`: 0 counter, 1 gauge.
    let t = match kind {
        Kind::Counter => 0,
        Kind::Gauge => 1,
    };
    hostcall::define_metric(t, name)
}

/// One defined metric: its id (None: the host refused to define it) and, for a gauge, the value
/// this VM last recorded, so that an unchanged gauge costs no hostcall.
#[derive(Default)]
struct Handle {
    id: Option<u32>,
    recorded: Cell<Option<u64>>,
}

impl Handle {
    fn new(kind: Kind, name: &str) -> Self {
        Handle { id: define(kind, name), recorded: Cell::new(None) }
    }

    fn record(&self, value: u64) {
        let Some(id) = self.id else { return };
        if self.recorded.replace(Some(value)) != Some(value) {
            hostcall::record_metric(id, value);
        }
    }
}

/// Every metric of the configuration, indexed like `GlobalMetric::ALL` and `PoolMetric::ALL`.
#[derive(Default)]
pub struct Metrics {
    global: Vec<Handle>,
    pools: Vec<Vec<Handle>>,
}

impl Metrics {
    pub fn define(pools: &[String]) -> Self {
        Metrics {
            global: GlobalMetric::ALL.iter().map(|m| Handle::new(m.kind(), m.name())).collect(),
            pools: pools
                .iter()
                .map(|p| PoolMetric::ALL.iter().map(|m| Handle::new(m.kind(), &m.name(p))).collect())
                .collect(),
        }
    }

    fn pool_handle(&self, pool: usize, m: PoolMetric) -> Option<&Handle> {
        self.pools.get(pool)?.get(m.index())
    }

    /// The id of a pool's metric, to keep with a request whose completion it will count (the
    /// configuration, and with it the pool's index, may change while the request is in flight).
    pub fn pool_id(&self, pool: usize, m: PoolMetric) -> Option<u32> {
        self.pool_handle(pool, m)?.id
    }

    /// Adds to a counter. Gauges are never incremented (some hosts trap on it), and counters
    /// only grow (Envoy refuses a delta of 0 or less).
    pub fn add(&self, m: GlobalMetric, delta: u64) {
        if m.kind() == Kind::Counter {
            increment(self.global.get(m.index()).and_then(|h| h.id), delta);
        }
    }

    pub fn pool_add(&self, pool: usize, m: PoolMetric, delta: u64) {
        if m.kind() == Kind::Counter {
            increment(self.pool_id(pool, m), delta);
        }
    }

    /// Sets a gauge (never a counter: a record adds to an Envoy counter, and traps in others).
    pub fn set(&self, m: GlobalMetric, value: u64) {
        if m.kind() == Kind::Gauge {
            if let Some(h) = self.global.get(m.index()) {
                h.record(value);
            }
        }
    }

    pub fn pool_set(&self, pool: usize, m: PoolMetric, value: u64) {
        if m.kind() == Kind::Gauge {
            if let Some(h) = self.pool_handle(pool, m) {
                h.record(value);
            }
        }
    }

    /// Requests or connections of `pool` in flight through the whole proxy: `requests_total`
    /// minus `completed_total`, both read as the proxy-wide sums every worker adds to. None if
    /// the host cannot read them back.
    pub fn in_flight(&self, pool: usize) -> Option<u64> {
        // Completions first: every request counted in them was counted in requests before, so
        // the difference never goes below the true count even while other workers run.
        let completed = hostcall::get_metric(self.pool_id(pool, PoolMetric::Completed)?)?;
        let requests = hostcall::get_metric(self.pool_id(pool, PoolMetric::Requests)?)?;
        Some(requests.saturating_sub(completed))
    }
}

/// Increments counter `id` by `delta` (nothing for 0: Envoy refuses it).
pub fn increment(id: Option<u32>, delta: u64) {
    let (Some(id), Ok(delta @ 1..)) = (id, i64::try_from(delta)) else { return };
    hostcall::increment_metric(id, delta);
}
