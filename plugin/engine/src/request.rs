// What the engine may ask about a request or connection, answered lazily by the filter layer
// (each answer can cost a host call), and the header/path matchers of abort and delay faults.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

/// A request or connection as the engine sees it. Implementations fetch on demand and cache,
/// so the engine only pays for what the configuration actually matches on.
pub trait Request {
    /// A request header by lower-case name (`:path`, `:authority`, ...). None on TCP. Borrowed
    /// where the implementation holds the value already: a match then allocates nothing.
    fn header(&mut self, name: &str) -> Option<Cow<'_, str>>;
    /// The header's bytes as the host gave them, for a comparison that need not decode them
    /// (the pool's authority): an implementation that holds raw bytes skips the UTF-8 check.
    fn header_bytes(&mut self, name: &str) -> Option<Cow<'_, [u8]>> {
        self.header(name).map(|value| match value {
            Cow::Borrowed(s) => Cow::Borrowed(s.as_bytes()),
            Cow::Owned(s) => Cow::Owned(s.into_bytes()),
        })
    }
    /// Envoy's upstream cluster name, if known at this point.
    fn cluster(&mut self) -> Option<String>;
    /// The downstream connection's destination port.
    fn port(&mut self) -> Option<u16>;
}

/// Which requests an abort or delay applies to; all given conditions must hold.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema), schemars(rename = "RequestMatch"))]
#[serde(remote = "Self", deny_unknown_fields)]
pub struct RequestMatch {
    /// A prefix of `:path`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_prefix: Option<String>,
    /// Headers that must be present (and equal `value`, when given), as in Envoy's fault filter.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<HeaderMatch>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema), schemars(rename = "HeaderMatch"))]
#[serde(remote = "Self", deny_unknown_fields)]
pub struct HeaderMatch {
    /// Header name, compared case-insensitively.
    pub name: String,
    /// Exact value; absent means "present with any value".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

impl RequestMatch {
    pub fn is_empty(&self) -> bool {
        self.path_prefix.is_none() && self.headers.is_empty()
    }

    pub fn matches(&self, req: &mut dyn Request) -> bool {
        if let Some(prefix) = &self.path_prefix {
            match req.header(":path") {
                Some(path) if path.starts_with(prefix.as_str()) => {}
                _ => return false,
            }
        }
        self.headers.iter().all(|h| match (req.header(&h.name.to_ascii_lowercase()), &h.value) {
            (Some(_), None) => true,
            (Some(got), Some(want)) => got == want.as_str(),
            (None, _) => false,
        })
    }
}

/// A request built from fixed values: for tests and for the harness's native checks.
#[derive(Clone, Debug, Default)]
pub struct StaticRequest {
    pub headers: Vec<(String, String)>,
    pub cluster: Option<String>,
    pub port: Option<u16>,
}

impl StaticRequest {
    pub fn http(path: &str, authority: &str) -> Self {
        StaticRequest {
            headers: vec![(":path".into(), path.into()), (":authority".into(), authority.into())],
            ..Default::default()
        }
    }

    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_ascii_lowercase(), value.into()));
        self
    }

    pub fn with_cluster(mut self, cluster: &str) -> Self {
        self.cluster = Some(cluster.into());
        self
    }
}

impl Request for StaticRequest {
    fn header(&mut self, name: &str) -> Option<Cow<'_, str>> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| Cow::Borrowed(v.as_str()))
    }

    fn cluster(&mut self) -> Option<String> {
        self.cluster.clone()
    }

    fn port(&mut self) -> Option<u16> {
        self.port
    }
}

crate::objects::object_only!(RequestMatch, HeaderMatch);
