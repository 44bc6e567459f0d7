// `drain`: k of n hosts (or a fraction) leave a pool, gracefully (capacity) or as a blackhole.

use serde::{Deserialize, Serialize};

use super::{check_pool, FaultKind};
use crate::config::{Config, Protocol};
use crate::duration::Duration;
use crate::error::CommandError;

/// How drained hosts fail.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum DrainMode {
    /// Graceful: the remaining hosts absorb the load; requests over the remaining capacity are
    /// shed (local 503) or queued, then shed.
    #[default]
    Capacity,
    /// Drained hosts still receive their share and fail it: errors at once, in proportion.
    Blackhole,
}

/// Queueing of requests over capacity (capacity mode only).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema), schemars(rename = "Queue"))]
#[serde(remote = "Self", deny_unknown_fields)]
pub struct Queue {
    /// Most requests waiting per worker; beyond it they are shed at once.
    pub max: u32,
    /// Longest wait before a queued request is shed. Default `1s`.
    #[serde(default = "default_queue_timeout")]
    pub timeout: Duration,
}

fn default_queue_timeout() -> Duration {
    Duration::from_secs(1)
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema), schemars(rename = "Drain"))]
#[serde(remote = "Self", deny_unknown_fields)]
pub struct Drain {
    /// The pool to drain.
    pub pool: String,
    /// Hosts to remove (give this or `fraction`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hosts: Option<u32>,
    /// Share of the pool's hosts to remove, 0 to 1, rounded to the nearest host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fraction: Option<f64>,
    /// `capacity` (default) or `blackhole`.
    #[serde(default)]
    pub mode: DrainMode,
    /// Queue requests over capacity instead of shedding them at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<Queue>,
}

impl Drain {
    fn count(&self, hosts: u32) -> u32 {
        match (self.hosts, self.fraction) {
            (Some(k), _) => k.min(hosts),
            (None, Some(f)) => ((f * hosts as f64).round() as u32).min(hosts),
            (None, None) => 0,
        }
    }
}

impl FaultKind for Drain {
    fn pool(&self) -> Option<&str> {
        Some(&self.pool)
    }

    fn check(&self, config: &Config, _ttl: Duration) -> Result<(), CommandError> {
        let hosts = check_pool(config, &self.pool, "drain.pool", None)?;
        if self.queue.is_some() && config.pool(&self.pool).is_some_and(|(_, p)| p.protocol == Protocol::Tcp) {
            return Err(CommandError::invalid(
                "drain.queue",
                "only HTTP pools queue; tcp connections over capacity are refused",
            ));
        }
        match (self.hosts, self.fraction) {
            (Some(_), Some(_)) => return Err(CommandError::invalid("drain", "give hosts or fraction, not both")),
            (None, None) => return Err(CommandError::invalid("drain", "give hosts (a count) or fraction (0 to 1)")),
            (Some(k), None) if k == 0 || k > hosts => {
                return Err(CommandError::invalid(
                    "drain.hosts",
                    format!("must be between 1 and the pool's {hosts} hosts"),
                ))
            }
            (None, Some(f)) if !(f > 0.0 && f <= 1.0) => {
                return Err(CommandError::invalid("drain.fraction", "must be above 0 and at most 1"))
            }
            _ => {}
        }
        if self.count(hosts) == 0 {
            return Err(CommandError::invalid("drain.fraction", format!("rounds to 0 of {hosts} hosts")));
        }
        if let Some(q) = &self.queue {
            if self.mode == DrainMode::Blackhole {
                return Err(CommandError::invalid("drain.queue", "only capacity drains queue"));
            }
            if q.timeout == Duration::ZERO || q.timeout > config.limits.max_delay {
                return Err(CommandError::invalid(
                    "drain.queue.timeout",
                    format!("must be between 1ms and limits.max_delay ({})", config.limits.max_delay),
                ));
            }
        }
        Ok(())
    }

    fn drained_hosts(&self, hosts: u32, _elapsed: u64) -> u32 {
        self.count(hosts)
    }

    fn max_drained_hosts(&self, hosts: u32) -> u32 {
        self.count(hosts)
    }
}

crate::objects::object_only!(Queue, Drain);
