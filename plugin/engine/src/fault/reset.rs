// `reset`: close a share of new TCP connections of a pool as they arrive.

use serde::{Deserialize, Serialize};

use super::{check_percent, check_pool, default_percent, FaultKind};
use crate::config::{Config, Protocol};
use crate::duration::Duration;
use crate::error::CommandError;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema), schemars(rename = "Reset"))]
#[serde(remote = "Self", deny_unknown_fields)]
pub struct Reset {
    /// Only connections of this TCP pool; absent means every connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    /// Share of new connections closed, 0 to 100. Default 100.
    #[serde(default = "default_percent")]
    pub percent: f64,
}

impl FaultKind for Reset {
    fn pool(&self) -> Option<&str> {
        self.pool.as_deref()
    }

    fn check(&self, config: &Config, _ttl: Duration) -> Result<(), CommandError> {
        if let Some(pool) = &self.pool {
            check_pool(config, pool, "reset.pool", Some(Protocol::Tcp))?;
        }
        check_percent(config, self.percent, "reset.percent")
    }
}

crate::objects::object_only!(Reset);
