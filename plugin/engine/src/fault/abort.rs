// `abort`: answer a share of matching requests with an HTTP or gRPC error, like Envoy's fault filter.

use serde::{Deserialize, Serialize};

use super::{check_percent, check_pool, default_percent, FaultKind};
use crate::config::{Config, Protocol};
use crate::duration::Duration;
use crate::error::CommandError;
use crate::request::RequestMatch;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema), schemars(rename = "Abort"))]
#[serde(remote = "Self", deny_unknown_fields)]
pub struct Abort {
    /// Only requests of this HTTP pool; absent means every request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    /// HTTP status of the local reply, 200 to 599 (give this or `grpc_status`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// gRPC status code 0 to 16; the reply is HTTP 200 with `grpc-status`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc_status: Option<u32>,
    /// Share of matching requests aborted, 0 to 100. Default 100.
    #[serde(default = "default_percent")]
    pub percent: f64,
    /// Which requests the fault applies to.
    #[serde(default, rename = "match", skip_serializing_if = "RequestMatch::is_empty")]
    pub matcher: RequestMatch,
}

impl FaultKind for Abort {
    fn pool(&self) -> Option<&str> {
        self.pool.as_deref()
    }

    fn check(&self, config: &Config, _ttl: Duration) -> Result<(), CommandError> {
        if let Some(pool) = &self.pool {
            check_pool(config, pool, "abort.pool", Some(Protocol::Http))?;
        }
        match (self.status, self.grpc_status) {
            (Some(_), Some(_)) => return Err(CommandError::invalid("abort", "give status or grpc_status, not both")),
            (None, None) => return Err(CommandError::invalid("abort", "give status (HTTP) or grpc_status")),
            (Some(s), None) if !(200..=599).contains(&s) => {
                return Err(CommandError::invalid("abort.status", "must be an HTTP status from 200 to 599"))
            }
            (None, Some(g)) if g > 16 => {
                return Err(CommandError::invalid("abort.grpc_status", "must be a gRPC status from 0 to 16"))
            }
            _ => {}
        }
        check_percent(config, self.percent, "abort.percent")
    }
}

crate::objects::object_only!(Abort);
