// The largest values a scenario may give: what a replay can model at all. `ebb check` refuses
// anything past them, so no time or count in the simulator can overflow (docs/scenarios.md#limits).

use ebb_engine::Duration;

/// The longest replay, and the longest any duration in a scenario may be (a runbook's `after`,
/// a retry, a window, a TTL...): nothing longer can happen inside a replay. In nanoseconds it is
/// 6.0e14, far from u64's 1.8e19, so sums of a few such times never wrap.
pub const MAX_DURATION: Duration = Duration::from_secs(7 * 86_400);

/// Most simulated requests (connections) per second in one rate: a point, a burst or a daily
/// cycle's `max`. Past it a replay could not keep up anyway (about 150,000 per second of wall time).
pub const MAX_RATE: f64 = 1_000_000.0;

/// Most hosts in a pool.
pub const MAX_HOSTS: u32 = 100_000;

/// Most concurrent requests (connections) one host serves.
pub const MAX_CAPACITY_PER_HOST: u32 = 1_000_000;

/// Most upstream slots in a pool: `hosts x capacity_per_host`.
pub const MAX_SLOTS: u64 = 1_000_000_000;

/// Most real requests one simulated request may stand for.
pub const MAX_SAMPLE: u32 = 1_000_000;

/// Simulated Envoy proxies and worker threads (VMs) per proxy.
pub const MAX_PROXIES: u32 = 1_000;
pub const MAX_WORKERS: u32 = 64;

/// The largest scenario file read (a 500,000-pool scenario is about 40 MB).
pub const MAX_FILE_BYTES: u64 = 64 * 1024 * 1024;
