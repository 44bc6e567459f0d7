// Faults as data: the request a user sends, the record the proxy keeps, and the trait each kind
// (drain, deploy, abort, delay, reset; one module each) implements.

mod abort;
mod delay;
mod deploy;
mod drain;
mod reset;

use serde::{Deserialize, Serialize};

pub use abort::Abort;
pub use delay::Delay;
pub use deploy::{Deploy, OnAbort};
pub use drain::{Drain, DrainMode, Queue};
pub use reset::Reset;

use crate::config::{Config, Protocol};
use crate::duration::Duration;
use crate::error::CommandError;

/// What every fault kind answers; times are milliseconds since the fault started.
pub trait FaultKind {
    /// The pool the fault acts on, if it is tied to one.
    fn pool(&self) -> Option<&str>;
    /// Checks the fault against the configuration and its caps.
    fn check(&self, config: &Config, ttl: Duration) -> Result<(), CommandError>;
    /// Hosts removed from a pool of `hosts` hosts, `elapsed` ms after the start.
    fn drained_hosts(&self, _hosts: u32, _elapsed: u64) -> u32 {
        0
    }
    /// The most hosts this fault ever removes at once (checked against `max_drain_fraction`).
    fn max_drained_hosts(&self, _hosts: u32) -> u32 {
        0
    }
    /// True while a planned rollout is under way (so alerts can tell it from a stuck drain).
    fn deploying(&self, _elapsed: u64) -> bool {
        false
    }
}

/// A fault as a user asks for it: exactly one of the kind fields is set.
///
/// ```json
/// {"id": "web-drain", "ttl": "2h", "drain": {"pool": "web", "hosts": 4}}
/// ```
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema), schemars(rename = "FaultRequest"))]
#[serde(remote = "Self", deny_unknown_fields)]
pub struct FaultRequest {
    /// Unique id, `[a-z0-9_-]`; generated (`f1`, `f2`, ...) when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// How long the fault lives once started; default `limits.default_ttl`, capped by `limits.max_ttl`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<Duration>,
    /// Delay before the fault starts. Default `0s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_in: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain: Option<Drain>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deploy: Option<Deploy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort: Option<Abort>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<Delay>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reset: Option<Reset>,
}

/// One fault kind with its parameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultSpec {
    Drain(Drain),
    Deploy(Deploy),
    Abort(Abort),
    Delay(Delay),
    Reset(Reset),
}

impl FaultSpec {
    pub fn kind(&self) -> &dyn FaultKind {
        match self {
            FaultSpec::Drain(f) => f,
            FaultSpec::Deploy(f) => f,
            FaultSpec::Abort(f) => f,
            FaultSpec::Delay(f) => f,
            FaultSpec::Reset(f) => f,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            FaultSpec::Drain(_) => "drain",
            FaultSpec::Deploy(_) => "deploy",
            FaultSpec::Abort(_) => "abort",
            FaultSpec::Delay(_) => "delay",
            FaultSpec::Reset(_) => "reset",
        }
    }
}

impl FaultRequest {
    /// The one kind this request asks for.
    pub fn spec(&self) -> Result<FaultSpec, CommandError> {
        let mut kinds = Vec::with_capacity(1);
        if let Some(f) = &self.drain {
            kinds.push(FaultSpec::Drain(f.clone()));
        }
        if let Some(f) = &self.deploy {
            kinds.push(FaultSpec::Deploy(f.clone()));
        }
        if let Some(f) = &self.abort {
            kinds.push(FaultSpec::Abort(f.clone()));
        }
        if let Some(f) = &self.delay {
            kinds.push(FaultSpec::Delay(f.clone()));
        }
        if let Some(f) = &self.reset {
            kinds.push(FaultSpec::Reset(f.clone()));
        }
        match kinds.len() {
            1 => Ok(kinds.remove(0)),
            0 => Err(CommandError::invalid("", "a fault needs one of: drain, deploy, abort, delay, reset")),
            _ => Err(CommandError::invalid(
                "",
                "a fault has exactly one kind; found several of drain, deploy, abort, delay, reset",
            )),
        }
    }
}

/// A fault the proxy holds: absolute times in milliseconds since the Unix epoch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Fault {
    pub id: String,
    pub start_ms: u64,
    pub expires_ms: u64,
    /// True for faults from the plugin configuration (so a new configuration can replace them).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub from_config: bool,
    pub spec: FaultSpec,
}

impl Fault {
    pub fn active(&self, now: u64) -> bool {
        now >= self.start_ms && now < self.expires_ms
    }

    pub fn expired(&self, now: u64) -> bool {
        now >= self.expires_ms
    }

    pub fn pool(&self) -> Option<&str> {
        self.spec.kind().pool()
    }

    pub fn deploying(&self, now: u64) -> bool {
        self.active(now) && self.spec.kind().deploying(now - self.start_ms)
    }
}

/// Checks that `pool` names a configured pool of the given protocol.
pub(crate) fn check_pool(
    config: &Config,
    pool: &str,
    field: &str,
    protocol: Option<Protocol>,
) -> Result<u32, CommandError> {
    match config.pool(pool) {
        None => {
            let names: Vec<&str> = config.pools.iter().map(|p| p.name.as_str()).collect();
            Err(CommandError::invalid(
                field,
                format!(
                    "no pool named {} (configured: {})",
                    crate::clip::quoted(pool),
                    if names.is_empty() {
                        "none".to_string()
                    } else {
                        crate::clip::clip_owned(names.join(", "), crate::clip::LINE / 2)
                    }
                ),
            ))
        }
        Some((_, p)) => match protocol {
            Some(want) if want != p.protocol => Err(CommandError::invalid(
                field,
                format!("pool {pool:?} is {:?}, this fault needs a {:?} pool", p.protocol, want).to_lowercase(),
            )),
            _ => Ok(p.hosts),
        },
    }
}

/// Checks a percentage against the abort cap.
pub(crate) fn check_percent(config: &Config, percent: f64, field: &str) -> Result<(), CommandError> {
    if !(0.0..=100.0).contains(&percent) || percent.is_nan() {
        return Err(CommandError::invalid(field, "percent must be between 0 and 100"));
    }
    if percent > config.limits.max_abort_percent {
        return Err(CommandError::over_cap(format!(
            "{field} {} exceeds limits.max_abort_percent {}",
            decimal(percent),
            decimal(config.limits.max_abort_percent)
        )));
    }
    Ok(())
}

pub(crate) fn default_percent() -> f64 {
    100.0
}

/// Formats a ratio or percentage with up to three decimals. Messages use this rather than
/// `{}` on f64, whose formatting code would add ~10 KB to the .wasm.
pub(crate) fn decimal(value: f64) -> String {
    let thousandths = (value * 1000.0).round() as i64;
    let (whole, frac) = (thousandths / 1000, (thousandths % 1000).unsigned_abs());
    if frac == 0 {
        return whole.to_string();
    }
    let sign = if thousandths < 0 && whole == 0 { "-" } else { "" };
    let digits = format!("{frac:03}");
    format!("{sign}{whole}.{}", digits.trim_end_matches('0'))
}

crate::objects::object_only!(FaultRequest);

#[cfg(test)]
mod tests {
    #[test]
    fn decimals_read_like_the_input() {
        let got: Vec<String> = [0.5, 20.0, 0.125, 33.3333, -0.25, 100.0].iter().map(|&v| super::decimal(v)).collect();
        assert_eq!(got, ["0.5", "20", "0.125", "33.333", "-0.25", "100"]);
    }
}
