// `delay`: hold a share of matching requests for a fixed time, then let them through.
// The filter pauses the request and resumes it from a timer; the worker is never blocked.

use serde::{Deserialize, Serialize};

use super::{check_pool, default_percent, FaultKind};
use crate::config::{Config, Protocol};
use crate::duration::Duration;
use crate::error::CommandError;
use crate::request::RequestMatch;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema), schemars(rename = "Delay"))]
#[serde(remote = "Self", deny_unknown_fields)]
pub struct Delay {
    /// Only requests of this HTTP pool; absent means every request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    /// How long each delayed request is held; at most `limits.max_delay`.
    pub delay: Duration,
    /// Share of matching requests delayed, 0 to 100. Default 100.
    #[serde(default = "default_percent")]
    pub percent: f64,
    /// Which requests the fault applies to.
    #[serde(default, rename = "match", skip_serializing_if = "RequestMatch::is_empty")]
    pub matcher: RequestMatch,
}

impl FaultKind for Delay {
    fn pool(&self) -> Option<&str> {
        self.pool.as_deref()
    }

    fn check(&self, config: &Config, _ttl: Duration) -> Result<(), CommandError> {
        if let Some(pool) = &self.pool {
            check_pool(config, pool, "delay.pool", Some(Protocol::Http))?;
        }
        if self.delay == Duration::ZERO {
            return Err(CommandError::invalid("delay.delay", "must be longer than 0s"));
        }
        if self.delay > config.limits.max_delay {
            return Err(CommandError::over_cap(format!(
                "delay.delay {} exceeds limits.max_delay {}",
                self.delay, config.limits.max_delay
            )));
        }
        if !(0.0..=100.0).contains(&self.percent) {
            return Err(CommandError::invalid("delay.percent", "must be between 0 and 100"));
        }
        Ok(())
    }
}

crate::objects::object_only!(Delay);
