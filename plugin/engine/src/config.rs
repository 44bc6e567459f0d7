// The plugin configuration: pools, blast-radius limits, the control API and static faults.
// Parsed from the JSON string Envoy passes to on_configure; every error names the field.

use serde::{Deserialize, Serialize};

use crate::clip::{clip, clip_owned, quoted, LINE};
use crate::duration::Duration;
use crate::fault::FaultRequest;
use crate::objects::object_only;

/// Largest plugin configuration read, in bytes. A real one is a few KB; a larger document is
/// refused before it is read or parsed (the filter disarms), so it cannot exhaust the VM.
pub const MAX_CONFIG_BYTES: usize = 1 << 20;

/// Upper bounds of the configuration's numbers. Within them every product and sum the engine
/// forms on times (ms since the epoch) and counts fits its integer type with room to spare.
pub mod bounds {
    use crate::duration::Duration;

    pub const POOLS: usize = 1024;
    pub const HOSTS: u32 = 1_000_000;
    pub const CAPACITY_PER_HOST: u32 = 1_000_000;
    /// Longest `limits.max_ttl`: 30 days.
    pub const MAX_TTL: Duration = Duration::from_secs(30 * 86_400);
    /// Longest `limits.max_delay`: 1 hour.
    pub const MAX_DELAY: Duration = Duration::from_secs(3_600);
    pub const MAX_FAULTS: u32 = 1024;
    /// Longest `control.window`: 1 hour.
    pub const WINDOW: Duration = Duration::from_secs(3_600);
}

/// The whole plugin configuration (the `configuration` string in Envoy's PluginConfig).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(remote = "Self", deny_unknown_fields)]
pub struct Config {
    /// Upstream pools the filter accounts for and can drain.
    #[serde(default)]
    pub pools: Vec<PoolConfig>,
    /// Blast-radius caps; every command and static fault is checked against them.
    #[serde(default)]
    pub limits: Limits,
    /// The signed control API; absent means off.
    #[serde(default)]
    pub control: Option<ControlConfig>,
    /// Honour per-request fault headers (`x-ebb-abort`, `x-ebb-delay`). Default false.
    #[serde(default)]
    pub header_faults: bool,
    /// Faults installed when the configuration is applied (for fleets driven by xDS/Istio).
    #[serde(default)]
    pub faults: Vec<FaultRequest>,
    /// How often each VM wakes to expire faults and pick up commands. Default `1s`.
    #[serde(default = "default_tick")]
    pub tick: Duration,
}

fn default_tick() -> Duration {
    Duration::from_secs(1)
}

/// Which side of Envoy a pool is on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// Requests through the HTTP filter; capacity counts concurrent requests.
    #[default]
    Http,
    /// Connections through the network filter; capacity counts concurrent connections.
    Tcp,
}

/// One upstream pool.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(remote = "Self", deny_unknown_fields)]
pub struct PoolConfig {
    /// Name, `[a-z0-9_-]`, at most 63 characters; becomes the `ebb_pool` metric label.
    pub name: String,
    /// `http` (default) or `tcp`.
    #[serde(default)]
    pub protocol: Protocol,
    /// Which requests or connections belong to the pool; all given fields must match.
    /// An empty match takes everything of the pool's protocol not taken by an earlier pool.
    #[serde(default, rename = "match")]
    pub matcher: PoolMatch,
    /// Hosts the pool is expected to have.
    pub hosts: u32,
    /// Concurrent requests (HTTP) or connections (TCP) one host serves.
    pub capacity_per_host: u32,
}

/// How a request or connection is matched to a pool.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(remote = "Self", deny_unknown_fields)]
pub struct PoolMatch {
    /// Envoy's upstream cluster name (property `xds.cluster_name`; HTTP only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// The `:authority` header (HTTP only), compared case-insensitively, port ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authority: Option<String>,
    /// A prefix of `:path` (HTTP only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_prefix: Option<String>,
    /// The downstream connection's destination port (property `destination.port`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
}

/// Blast-radius caps.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema), schemars(rename = "Limits"))]
#[serde(remote = "Self", deny_unknown_fields, default)]
pub struct Limits {
    /// Longest TTL any fault may have. Default `1h`.
    pub max_ttl: Duration,
    /// TTL of a fault that names none. Default `10m`.
    pub default_ttl: Duration,
    /// Largest share of a pool's hosts all drains together may remove, 0 to 1. Default 0.5.
    #[cfg_attr(feature = "schema", schemars(range(min = 0.0, max = 1.0)))]
    pub max_drain_fraction: f64,
    /// Largest abort or reset percentage, 0 to 100. Default 100.
    #[cfg_attr(feature = "schema", schemars(range(min = 0.0, max = 100.0)))]
    pub max_abort_percent: f64,
    /// Longest injected delay. Default `10s`.
    pub max_delay: Duration,
    /// Most faults active at once, at most 1024. Default 16.
    #[cfg_attr(feature = "schema", schemars(range(min = 0, max = 1024)))]
    pub max_faults: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_ttl: Duration::from_secs(3600),
            default_ttl: Duration::from_secs(600),
            max_drain_fraction: 0.5,
            max_abort_percent: 100.0,
            max_delay: Duration::from_secs(10),
            max_faults: 16,
        }
    }
}

/// The control API: requests under `path_prefix` are answered by the filter and never forwarded.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(remote = "Self", deny_unknown_fields)]
pub struct ControlConfig {
    /// Path prefix, starting and ending with `/`. Default `/.ebb/v1/`.
    #[serde(default = "default_prefix")]
    pub path_prefix: String,
    /// HMAC-SHA256 key, at least 16 bytes (32 or more advised). Requests are signed with it
    /// (see `auth`). Keys published in ebb's docs are refused (see `keys`).
    pub key: String,
    /// How far a request's timestamp may be from the proxy's clock, 1s to 1h. Default `5m`.
    #[serde(default = "default_window")]
    pub window: Duration,
    /// Also accept scheme v1 signatures (bare hex, not bound to the authority). Default false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub accept_v1_signatures: bool,
}

object_only!(Config, PoolConfig, PoolMatch, Limits, ControlConfig);

fn default_prefix() -> String {
    "/.ebb/v1/".to_string()
}

fn default_window() -> Duration {
    Duration::from_secs(300)
}

/// A configuration problem: the JSON path of the field and what was expected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}{message}", if path == "." { String::new() } else { format!("{path}: ") })]
pub struct ConfigError {
    /// JSON path such as `pools[1].capacity_per_host`, or `.` for the whole document.
    pub path: String,
    pub message: String,
}

impl ConfigError {
    /// Both parts are clipped: a configuration can carry a megabyte-long key or value, and the
    /// error goes to every worker's log. serde_json's trailing "at line L column C" is kept.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        let message = message.into();
        let (text, position) = match message.rfind(" at line ") {
            Some(at) if message[at..].contains(" column ") => message.split_at(at),
            _ => (message.as_str(), ""),
        };
        let message = format!("{}{position}", clip(text, LINE));
        ConfigError { path: clip_owned(path.into(), LINE / 2), message }
    }
}

/// Deserializes JSON, reporting the path of the offending field (with line and column).
#[cfg(feature = "field-paths")]
pub fn from_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ConfigError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        ConfigError::new(if path.is_empty() { ".".to_string() } else { path }, e.into_inner().to_string())
    })?;
    de.end().map_err(|e| ConfigError::new(".", e.to_string()))?;
    Ok(value)
}

/// Deserializes JSON; without `field-paths` the message still names the field, line and column.
#[cfg(not(feature = "field-paths"))]
pub fn from_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ConfigError> {
    serde_json::from_slice(bytes).map_err(|e| ConfigError::new(".", e.to_string()))
}

impl Config {
    /// Parses and checks a configuration. An empty document means "no pools, no faults"; a
    /// document over [`MAX_CONFIG_BYTES`] is refused unread.
    pub fn parse(bytes: &[u8]) -> Result<Config, ConfigError> {
        if bytes.len() > MAX_CONFIG_BYTES {
            return Err(ConfigError::too_large(bytes.len()));
        }
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Config { tick: default_tick(), ..Config::default() });
        }
        let config: Config = from_json(bytes)?;
        config.validate()?;
        Ok(config)
    }

    /// Checks meaning: names, ranges, and every static fault against the limits.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.pools.len() > bounds::POOLS {
            return Err(ConfigError::new(
                "pools",
                format!("at most {} pools, got {}", bounds::POOLS, self.pools.len()),
            ));
        }
        let mut seen: Vec<&str> = Vec::new();
        for (i, pool) in self.pools.iter().enumerate() {
            let at = |field: &str| format!("pools[{i}].{field}");
            if !valid_name(&pool.name) {
                return Err(ConfigError::new(
                    at("name"),
                    format!("{} is not a pool name: use 1 to 63 of a-z, 0-9, '_' and '-'", quoted(&pool.name)),
                ));
            }
            if seen.contains(&pool.name.as_str()) {
                return Err(ConfigError::new(at("name"), format!("pool {:?} is declared twice", pool.name)));
            }
            seen.push(&pool.name);
            if pool.hosts == 0 || pool.hosts > bounds::HOSTS {
                return Err(ConfigError::new(at("hosts"), format!("must be between 1 and {}", bounds::HOSTS)));
            }
            if pool.capacity_per_host == 0 || pool.capacity_per_host > bounds::CAPACITY_PER_HOST {
                return Err(ConfigError::new(
                    at("capacity_per_host"),
                    format!("must be between 1 and {}", bounds::CAPACITY_PER_HOST),
                ));
            }
            if pool.protocol == Protocol::Tcp
                && (pool.matcher.authority.is_some()
                    || pool.matcher.path_prefix.is_some()
                    || pool.matcher.cluster.is_some())
            {
                // The network filter runs before tcp_proxy picks a cluster, so the cluster is
                // never known when a connection arrives.
                return Err(ConfigError::new(
                    at("match"),
                    "a tcp pool matches on port only (or nothing: every connection of the listener)",
                ));
            }
        }
        let l = &self.limits;
        if !(0.0..=1.0).contains(&l.max_drain_fraction) {
            return Err(ConfigError::new("limits.max_drain_fraction", "must be between 0 and 1"));
        }
        if !(0.0..=100.0).contains(&l.max_abort_percent) {
            return Err(ConfigError::new("limits.max_abort_percent", "must be between 0 and 100"));
        }
        if l.max_ttl == Duration::ZERO || l.max_ttl > bounds::MAX_TTL {
            return Err(ConfigError::new("limits.max_ttl", format!("must be between 1ms and {}", bounds::MAX_TTL)));
        }
        if l.max_delay > bounds::MAX_DELAY {
            return Err(ConfigError::new("limits.max_delay", format!("must be at most {}", bounds::MAX_DELAY)));
        }
        if l.max_faults > bounds::MAX_FAULTS {
            return Err(ConfigError::new("limits.max_faults", format!("must be at most {}", bounds::MAX_FAULTS)));
        }
        if l.default_ttl > l.max_ttl || l.default_ttl == Duration::ZERO {
            return Err(ConfigError::new(
                "limits.default_ttl",
                format!("must be between 1ms and limits.max_ttl ({})", l.max_ttl),
            ));
        }
        if let Some(c) = &self.control {
            if !c.path_prefix.starts_with('/') || !c.path_prefix.ends_with('/') || c.path_prefix.len() < 3 {
                return Err(ConfigError::new(
                    "control.path_prefix",
                    format!("{} must start and end with '/', like \"/.ebb/v1/\"", quoted(&c.path_prefix)),
                ));
            }
            if !crate::control_path::valid_prefix(&c.path_prefix) {
                return Err(ConfigError::new(
                    "control.path_prefix",
                    "use only letters, digits, '.', '_', '-', '~' and '/', with no empty, '.' or '..' segment",
                ));
            }
            if c.key.len() < 16 {
                return Err(ConfigError::new("control.key", "must be at least 16 bytes"));
            }
            if c.window < Duration::from_secs(1) || c.window > bounds::WINDOW {
                return Err(ConfigError::new("control.window", format!("must be between 1s and {}", bounds::WINDOW)));
            }
        }
        if self.tick < Duration::from_millis(10) || self.tick > Duration::from_secs(60) {
            return Err(ConfigError::new("tick", "must be between 10ms and 60s"));
        }
        let mut set = crate::state::FaultSet::default();
        for (i, request) in self.faults.iter().enumerate() {
            set.add(self, request, 0).map_err(|e| ConfigError::new(format!("faults[{i}]"), e.to_string()))?;
        }
        Ok(())
    }

    /// The pool with this name.
    pub fn pool(&self, name: &str) -> Option<(usize, &PoolConfig)> {
        self.pools.iter().enumerate().find(|(_, p)| p.name == name)
    }
}

impl ConfigError {
    /// A configuration over [`MAX_CONFIG_BYTES`].
    pub fn too_large(len: usize) -> Self {
        ConfigError::new(".", format!("the configuration has {len} bytes; at most {MAX_CONFIG_BYTES} are read"))
    }
}

pub(crate) fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_configuration_is_valid_and_inert() {
        let c = Config::parse(b"  ").unwrap();
        assert!(c.pools.is_empty() && c.control.is_none() && !c.header_faults);
        assert_eq!(c.tick, Duration::from_secs(1));
    }

    #[test]
    fn unknown_fields_are_named() {
        let err =
            Config::parse(br#"{"pools":[{"name":"web","hosts":4,"capacity_per_host":10,"cpacity":1}]}"#).unwrap_err();
        assert_eq!(err.path, "pools[0].cpacity");
        assert!(err.message.contains("unknown field `cpacity`"), "{err}");
    }

    #[test]
    fn wrong_types_name_field_line_and_column() {
        let err = Config::parse(b"{\n  \"pools\": [{\"name\": \"web\", \"hosts\": \"four\"}]}").unwrap_err();
        assert_eq!(err.path, "pools[0].hosts");
        assert!(err.message.contains("line 2"), "{err}");
    }

    #[test]
    fn meaning_is_checked() {
        let cases: &[(&str, &str)] = &[
            (r#"{"pools":[{"name":"Web","hosts":1,"capacity_per_host":1}]}"#, "pools[0].name"),
            (r#"{"pools":[{"name":"w","hosts":0,"capacity_per_host":1}]}"#, "pools[0].hosts"),
            (
                r#"{"pools":[{"name":"w","hosts":1,"capacity_per_host":1},{"name":"w","hosts":1,"capacity_per_host":1}]}"#,
                "pools[1].name",
            ),
            (
                r#"{"pools":[{"name":"s","protocol":"tcp","match":{"path_prefix":"/"},"hosts":1,"capacity_per_host":1}]}"#,
                "pools[0].match",
            ),
            (
                r#"{"pools":[{"name":"s","protocol":"tcp","match":{"cluster":"ssh"},"hosts":1,"capacity_per_host":1}]}"#,
                "pools[0].match",
            ),
            (r#"{"limits":{"max_drain_fraction":1.5}}"#, "limits.max_drain_fraction"),
            (r#"{"limits":{"max_ttl":"1m"}}"#, "limits.default_ttl"),
            (r#"{"control":{"key":"short"}}"#, "control.key"),
            (r#"{"control":{"key":"0123456789abcdef","path_prefix":"ebb"}}"#, "control.path_prefix"),
            (r#"{"faults":[{"drain":{"pool":"nope","hosts":1}}]}"#, "faults[0]"),
            (r#"{"pools":[{"name":"w","hosts":1000001,"capacity_per_host":1}]}"#, "pools[0].hosts"),
            (r#"{"pools":[{"name":"w","hosts":1,"capacity_per_host":4000000000}]}"#, "pools[0].capacity_per_host"),
            (r#"{"limits":{"max_ttl":"31d"}}"#, "limits.max_ttl"),
            (r#"{"limits":{"max_delay":"2h"}}"#, "limits.max_delay"),
            (r#"{"limits":{"max_faults":100000}}"#, "limits.max_faults"),
            (r#"{"control":{"key":"0123456789abcdef","window":"2h"}}"#, "control.window"),
            (r#"{"control":{"key":"0123456789abcdef","path_prefix":"/%2eebb/"}}"#, "control.path_prefix"),
            (r#"{"control":{"key":"0123456789abcdef","path_prefix":"/a/../b/"}}"#, "control.path_prefix"),
        ];
        for (json, path) in cases {
            let err = Config::parse(json.as_bytes()).unwrap_err();
            assert_eq!(&err.path, path, "{json}: {err}");
        }
    }

    #[test]
    fn only_objects_are_configurations() {
        // serde reads a struct from an array of its fields, so `[]` used to arm the filter
        // with every default, and `"limits": []` passed as the default limits.
        for json in [
            "[]",
            "[[]]",
            "null",
            "1",
            "\"{}\"",
            "true",
            r#"{"limits":[]}"#,
            r#"{"pools":[["web","http",{},4,10]]}"#,
            r#"{"control":["/.ebb/v1/","0123456789abcdef0123456789abcdef","5m"]}"#,
            r#"{"faults":[[null,null,null,{"pool":"web","hosts":1}]]}"#,
        ] {
            let err = Config::parse(json.as_bytes()).expect_err(json);
            assert!(
                err.message.contains("expected a JSON object") || err.message.contains("invalid type"),
                "{json}: {err}"
            );
        }
    }

    #[test]
    fn an_oversized_configuration_is_refused_unparsed() {
        let mut big = br#"{"pools":[],"x":""#.to_vec();
        big.resize(MAX_CONFIG_BYTES + 1, b'a');
        let err = Config::parse(&big).unwrap_err();
        assert_eq!(err.path, ".");
        assert!(err.message.contains(&format!("{} bytes", MAX_CONFIG_BYTES + 1)), "{err}");
    }

    #[test]
    fn huge_values_are_never_echoed_whole() {
        let id = "X".repeat(512 * 1024);
        let name = "N".repeat(512 * 1024);
        for json in [
            format!(
                r#"{{"pools":[{{"name":"web","hosts":1,"capacity_per_host":1}}],"faults":[{{"id":"{id}","drain":{{"pool":"web","hosts":1}}}}]}}"#
            ),
            format!(r#"{{"pools":[{{"name":"{name}","hosts":1,"capacity_per_host":1}}]}}"#),
            format!(r#"{{"{name}":1}}"#),
            format!(r#"{{"pools":[{{"name":"web","hosts":"{name}"}}]}}"#),
        ] {
            let err = Config::parse(json.as_bytes()).unwrap_err().to_string();
            assert!(err.len() < 1200, "{} bytes: {}", err.len(), &err[..200]);
            assert!(err.contains("bytes)"), "says how long the value was: {err}");
        }
        // serde_json's position survives the cut.
        let err = Config::parse(format!("{{\n\"{name}\":1}}").as_bytes()).unwrap_err().to_string();
        assert!(err.ends_with("at line 2 column 524290"), "{err}");
    }

    #[test]
    fn a_deploy_whose_rollout_overflows_is_refused_with_its_field_and_limit() {
        // 3 x 71 million days wraps a u64 of milliseconds to 4.6 s: the deploy was accepted,
        // reported no rollout in progress and left its first batch drained.
        let json = r#"{"pools":[{"name":"web","hosts":10,"capacity_per_host":10}],"limits":{"max_ttl":"1d"},
            "faults":[{"ttl":"1h","deploy":{"pool":"web","batches":3,"batch_interval":"71172382953d"}}]}"#;
        let err = Config::parse(json.as_bytes()).unwrap_err();
        assert_eq!(err.path, "faults[0]");
        assert!(
            err.message.contains("deploy.batch_interval")
                && err.message.contains("overflows")
                && err.message.contains("limits.max_ttl 1d"),
            "{err}"
        );
        let long = json.replace("71172382953d", "9h");
        let err = Config::parse(long.as_bytes()).unwrap_err();
        assert!(err.message.contains("takes 1d3h, longer than limits.max_ttl 1d"), "{err}");
    }
}
