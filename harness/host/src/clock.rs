// The one clock of the harness: simulated (the caller moves it) or real (the wall clock).
// Nothing else in the harness reads the wall clock; the clippy ban on Instant/SystemTime stops at this file.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Nanoseconds since the Unix epoch at which a default simulated clock starts:
/// 2026-01-01T00:00:00Z, so that logs and `proxy_get_current_time_nanoseconds` look plausible.
pub const DEFAULT_SIMULATED_START_NS: u64 = 1_767_225_600_000_000_000;

/// The clock every time-related part of the harness reads: tick timers, call timeouts,
/// `proxy_get_current_time_nanoseconds` and WASI `clock_time_get`.
///
/// Cheap to clone (an `Arc`); clones share the same time. Times are `u64` nanoseconds since
/// the Unix epoch.
#[derive(Clone, Debug)]
pub struct Clock {
    inner: Arc<Backend>,
}

#[derive(Debug)]
enum Backend {
    /// Time only moves when the caller moves it.
    Simulated { now_ns: AtomicU64 },
    /// Wall time, read through a monotonic origin so that it never goes backwards.
    Real(RealTime),
}

#[allow(clippy::disallowed_types)]
#[derive(Debug)]
struct RealTime {
    origin: std::time::Instant,
    origin_unix_ns: u64,
}

impl Clock {
    /// A simulated clock starting at `start_ns` (nanoseconds since the Unix epoch).
    pub fn simulated(start_ns: u64) -> Clock {
        Clock { inner: Arc::new(Backend::Simulated { now_ns: AtomicU64::new(start_ns) }) }
    }

    /// A real-time clock backed by the system clock (its Unix time read once, then advanced
    /// monotonically).
    #[allow(clippy::disallowed_types)]
    pub fn real() -> Clock {
        let origin_unix_ns = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        Clock { inner: Arc::new(Backend::Real(RealTime { origin: std::time::Instant::now(), origin_unix_ns })) }
    }

    /// True for a simulated clock.
    pub fn is_simulated(&self) -> bool {
        matches!(*self.inner, Backend::Simulated { .. })
    }

    /// Now, in nanoseconds since the Unix epoch.
    pub fn now_ns(&self) -> u64 {
        match &*self.inner {
            Backend::Simulated { now_ns } => now_ns.load(Ordering::Acquire),
            Backend::Real(real) => {
                let elapsed = u64::try_from(real.origin.elapsed().as_nanos()).unwrap_or(u64::MAX);
                real.origin_unix_ns.saturating_add(elapsed)
            }
        }
    }

    /// Moves a simulated clock to `t_ns` if that is later than now (time never goes back).
    /// Returns false, doing nothing, for a real-time clock.
    pub fn set_ns(&self, t_ns: u64) -> bool {
        match &*self.inner {
            Backend::Simulated { now_ns } => {
                now_ns.fetch_max(t_ns, Ordering::AcqRel);
                true
            }
            Backend::Real(_) => false,
        }
    }

    /// Moves a simulated clock forward by `by`. Returns false for a real-time clock.
    pub fn advance(&self, by: Duration) -> bool {
        let by_ns = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        self.set_ns(self.now_ns().saturating_add(by_ns))
    }
}

impl Default for Clock {
    /// A simulated clock at [`DEFAULT_SIMULATED_START_NS`].
    fn default() -> Clock {
        Clock::simulated(DEFAULT_SIMULATED_START_NS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simulated_time_moves_only_forward_and_only_when_told() {
        let clock = Clock::simulated(1_000);
        let other = clock.clone();
        assert_eq!(clock.now_ns(), 1_000);
        assert!(clock.advance(Duration::from_nanos(500)));
        assert_eq!(other.now_ns(), 1_500);
        clock.set_ns(10);
        assert_eq!(clock.now_ns(), 1_500, "time never goes back");
    }

    #[test]
    fn real_time_cannot_be_moved() {
        let clock = Clock::real();
        assert!(!clock.is_simulated());
        assert!(!clock.set_ns(0));
        assert!(clock.now_ns() > DEFAULT_SIMULATED_START_NS / 2);
    }
}
