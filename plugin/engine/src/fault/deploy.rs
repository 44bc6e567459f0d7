// `deploy`: a rolling deployment in batches; each batch drains its hosts, then returns them.
// It can abort at batch j and either leave that batch drained (the seed incident) or restore it.

use serde::{Deserialize, Serialize};

use super::{check_pool, DrainMode, FaultKind};
use crate::config::Config;
use crate::duration::Duration;
use crate::error::CommandError;

/// What the deploy tooling does to the batch in flight when it aborts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum OnAbort {
    /// The batch stays out of the pool until someone restores it (or the TTL expires).
    #[default]
    LeaveDrained,
    /// The tooling returns the batch to the pool as it aborts.
    Restore,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema), schemars(rename = "Deploy"))]
#[serde(remote = "Self", deny_unknown_fields)]
pub struct Deploy {
    /// The pool being deployed to.
    pub pool: String,
    /// Batches the pool's hosts are split into (sizes differ by at most one host).
    pub batches: u32,
    /// How long each batch stays drained before the next one starts.
    pub batch_interval: Duration,
    /// Abort while batch j (1-based) is drained; absent means the rollout completes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort_at_batch: Option<u32>,
    /// `leave_drained` (default) or `restore`.
    #[serde(default)]
    pub on_abort: OnAbort,
    /// How drained hosts fail: `capacity` (default) or `blackhole`.
    #[serde(default)]
    pub mode: DrainMode,
}

impl Deploy {
    /// Hosts in batch `i` (0-based): earlier batches take the remainder.
    fn batch_size(&self, hosts: u32, i: u32) -> u32 {
        let b = self.batches.max(1);
        hosts / b + u32::from(i < hosts % b)
    }

    /// Batches that run: all, or up to and including the aborted one.
    fn batches_run(&self) -> u32 {
        self.abort_at_batch.map_or(self.batches, |j| j.min(self.batches))
    }

    /// How long the rollout runs before it completes or aborts; saturates rather than wraps
    /// (an admitted deploy never comes near: see [`Deploy::check_rollout`]).
    pub fn rollout_ms(&self) -> u64 {
        u64::from(self.batches_run()).saturating_mul(self.batch_interval.as_millis())
    }

    /// Refuses a rollout longer than `max_ttl`, or one whose length does not fit in 64 bits.
    /// Left unchecked, `batches × batch_interval` wrapped to a short rollout: the deploy reported
    /// no progress while its first batch stayed drained.
    pub fn check_rollout(&self, max_ttl: Duration) -> Result<(), CommandError> {
        let rollout = u64::from(self.batches_run()).checked_mul(self.batch_interval.as_millis());
        match rollout {
            Some(ms) if ms <= max_ttl.as_millis() => Ok(()),
            Some(ms) => Err(CommandError::over_cap(format!(
                "deploy.batch_interval: the rollout ({} batches x {}) takes {}, longer than limits.max_ttl {max_ttl}",
                self.batches_run(),
                self.batch_interval,
                Duration::from_millis(ms)
            ))),
            None => Err(CommandError::over_cap(format!(
                "deploy.batch_interval: the rollout ({} batches x {}) overflows; it must fit in limits.max_ttl {max_ttl}",
                self.batches_run(),
                self.batch_interval
            ))),
        }
    }
}

impl FaultKind for Deploy {
    fn pool(&self) -> Option<&str> {
        Some(&self.pool)
    }

    fn check(&self, config: &Config, ttl: Duration) -> Result<(), CommandError> {
        let hosts = check_pool(config, &self.pool, "deploy.pool", None)?;
        if self.batches == 0 || self.batches > hosts {
            return Err(CommandError::invalid(
                "deploy.batches",
                format!("must be between 1 and the pool's {hosts} hosts"),
            ));
        }
        if self.batch_interval == Duration::ZERO {
            return Err(CommandError::invalid("deploy.batch_interval", "must be longer than 0s"));
        }
        self.check_rollout(config.limits.max_ttl)?;
        if let Some(j) = self.abort_at_batch {
            if j == 0 || j > self.batches {
                return Err(CommandError::invalid(
                    "deploy.abort_at_batch",
                    format!("must be between 1 and batches ({})", self.batches),
                ));
            }
        }
        if ttl.as_millis() < self.rollout_ms() {
            return Err(CommandError::invalid(
                "ttl",
                format!("{ttl} is shorter than the rollout ({})", Duration::from_millis(self.rollout_ms())),
            ));
        }
        Ok(())
    }

    fn drained_hosts(&self, hosts: u32, elapsed: u64) -> u32 {
        let interval = self.batch_interval.as_millis().max(1);
        let run = self.batches_run();
        let batch = elapsed / interval;
        if batch < u64::from(run) {
            return self.batch_size(hosts, batch as u32);
        }
        match (self.abort_at_batch, self.on_abort) {
            (Some(j), OnAbort::LeaveDrained) => self.batch_size(hosts, j.min(self.batches).saturating_sub(1)),
            _ => 0,
        }
    }

    fn max_drained_hosts(&self, hosts: u32) -> u32 {
        self.batch_size(hosts, 0)
    }

    fn deploying(&self, elapsed: u64) -> bool {
        elapsed < self.rollout_ms()
    }
}

crate::objects::object_only!(Deploy);

#[cfg(test)]
mod tests {
    use super::*;

    fn deploy(abort: Option<u32>, on_abort: OnAbort) -> Deploy {
        Deploy {
            pool: "web".into(),
            batches: 3,
            batch_interval: Duration::from_secs(60),
            abort_at_batch: abort,
            on_abort,
            mode: DrainMode::Capacity,
        }
    }

    #[test]
    fn batches_drain_in_turn_then_return() {
        let d = deploy(None, OnAbort::LeaveDrained);
        // 10 hosts in 3 batches: 4, 3, 3.
        let drained: Vec<u32> =
            [0, 59_999, 60_000, 120_000, 179_999, 180_000].iter().map(|&t| d.drained_hosts(10, t)).collect();
        assert_eq!(drained, [4, 4, 3, 3, 3, 0]);
        assert!(d.deploying(179_999) && !d.deploying(180_000));
    }

    #[test]
    fn abort_leaves_the_batch_in_flight_drained() {
        let d = deploy(Some(2), OnAbort::LeaveDrained);
        assert_eq!(d.drained_hosts(10, 60_000), 3);
        assert_eq!(d.drained_hosts(10, 7 * 3_600_000), 3, "still drained hours later");
        assert!(!d.deploying(120_000), "an aborted rollout is no longer in progress");
    }

    #[test]
    fn abort_with_restore_returns_the_batch() {
        let d = deploy(Some(2), OnAbort::Restore);
        assert_eq!(d.drained_hosts(10, 119_999), 3);
        assert_eq!(d.drained_hosts(10, 120_000), 0);
    }
}
