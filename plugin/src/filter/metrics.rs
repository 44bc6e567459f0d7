// The filter's metric handles: defined once per VM and configuration, then incremented or set.
// Names come from the engine (`ebb_engine::metrics`), so docs and harness agree with Envoy's view.

use ebb_engine::metrics::{GlobalMetric, Kind, PoolMetric};
use proxy_wasm::hostcalls;
use proxy_wasm::types::MetricType;

fn define(kind: Kind, name: &str) -> Option<u32> {
    let t = match kind {
        Kind::Counter => MetricType::Counter,
        Kind::Gauge => MetricType::Gauge,
    };
    hostcalls::define_metric(t, name).ok()
}

/// Ids of every metric; a metric the host refused to define is skipped silently.
#[derive(Default)]
pub struct Metrics {
    global: Vec<Option<u32>>,
    pools: Vec<Vec<Option<u32>>>,
}

impl Metrics {
    pub fn define(pools: &[String]) -> Self {
        Metrics {
            global: GlobalMetric::ALL.iter().map(|m| define(m.kind(), m.name())).collect(),
            pools: pools
                .iter()
                .map(|p| PoolMetric::ALL.iter().map(|m| define(m.kind(), &m.name(p))).collect())
                .collect(),
        }
    }

    fn global_id(&self, m: GlobalMetric) -> Option<u32> {
        let i = GlobalMetric::ALL.iter().position(|x| *x == m)?;
        *self.global.get(i)?
    }

    fn pool_id(&self, pool: usize, m: PoolMetric) -> Option<u32> {
        let i = PoolMetric::ALL.iter().position(|x| *x == m)?;
        *self.pools.get(pool)?.get(i)?
    }

    /// Adds to a counter (or moves a gauge); errors are ignored: metrics never break traffic.
    pub fn add(&self, m: GlobalMetric, delta: i64) {
        if let Some(id) = self.global_id(m) {
            let _ = hostcalls::increment_metric(id, delta);
        }
    }

    pub fn set(&self, m: GlobalMetric, value: u64) {
        if let Some(id) = self.global_id(m) {
            let _ = hostcalls::record_metric(id, value);
        }
    }

    pub fn pool_add(&self, pool: usize, m: PoolMetric, delta: i64) {
        if let Some(id) = self.pool_id(pool, m) {
            let _ = hostcalls::increment_metric(id, delta);
        }
    }

    pub fn pool_set(&self, pool: usize, m: PoolMetric, value: u64) {
        if let Some(id) = self.pool_id(pool, m) {
            let _ = hostcalls::record_metric(id, value);
        }
    }
}
