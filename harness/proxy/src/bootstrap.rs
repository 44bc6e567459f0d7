// The subset of Envoy's v3 bootstrap that `ebb proxy` serves, as typed values with Envoy's
// meaning; any other field is refused by its YAML path, never ignored.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_norway::Value;

use crate::yaml::Node;

/// Largest bootstrap read, in bytes: a bootstrap is configuration, not data.
pub const MAX_BOOTSTRAP_BYTES: u64 = 4 << 20;

#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: larger than {MAX_BOOTSTRAP_BYTES} bytes; a bootstrap is configuration")]
    TooLarge { path: PathBuf },
    #[error("{0}")]
    Yaml(String),
    #[error("{path}: not served by ebb proxy (remove it, or use Envoy)")]
    NotServed { path: String },
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
}

impl BootstrapError {
    pub(crate) fn invalid(path: &str, message: String) -> BootstrapError {
        let path = if path.is_empty() { "(document)".to_string() } else { path.to_string() };
        BootstrapError::Invalid { path, message }
    }
}

/// An Envoy bootstrap, as far as ebb proxy serves it.
#[derive(Clone, Debug, PartialEq)]
pub struct Bootstrap {
    pub node_id: Option<String>,
    pub admin: Option<SocketAddr>,
    pub stats_tags: Vec<StatsTag>,
    pub listeners: Vec<Listener>,
    pub clusters: Vec<Cluster>,
    /// `bootstrap_extensions` of type `envoy.extensions.wasm.v3.WasmService`: filters with no
    /// streams, on the main thread only when `singleton`, else on every worker too.
    pub services: Vec<WasmService>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct WasmService {
    pub filter: WasmFilter,
    pub singleton: bool,
}

/// `stats_config.stats_tags[]`: a tag extracted from metric names by a regex.
#[derive(Clone, Debug, PartialEq)]
pub struct StatsTag {
    pub tag_name: String,
    pub regex: String,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Listener {
    pub name: String,
    pub address: SocketAddr,
    pub kind: ListenerKind,
    /// `per_connection_buffer_limit_bytes` (default 1 MiB): the most body a filter may hold
    /// while it buffers (StopIterationAndBuffer) before Envoy answers 413 (request) or 500
    /// (response).
    pub buffer_limit: usize,
}

/// Envoy's `per_connection_buffer_limit_bytes` default.
pub const DEFAULT_BUFFER_LIMIT: usize = 1 << 20;

#[derive(Clone, Debug, PartialEq)]
pub enum ListenerKind {
    /// `envoy.filters.network.http_connection_manager`, after any network Wasm filters.
    Http { network_filters: Vec<WasmFilter>, manager: HttpManager },
    /// `envoy.filters.network.tcp_proxy`, after any network Wasm filters.
    Tcp { network_filters: Vec<WasmFilter>, stat_prefix: String, cluster: String },
}

#[derive(Clone, Debug, PartialEq)]
pub struct HttpManager {
    pub stat_prefix: String,
    pub normalize_path: bool,
    pub merge_slashes: bool,
    pub virtual_hosts: Vec<VirtualHost>,
    /// In order; the router is last (Envoy requires it to be the terminal filter).
    pub http_filters: Vec<HttpFilter>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct VirtualHost {
    pub name: String,
    /// `*`, exact names, `*.suffix` and `prefix.*`, as Envoy matches them.
    pub domains: Vec<String>,
    pub routes: Vec<Route>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Route {
    pub path: PathMatch,
    /// Every header matcher must match (`present_match` or `exact_match`/`string_match.exact`).
    pub headers: Vec<HeaderMatch>,
    pub action: RouteAction,
}

#[derive(Clone, Debug, PartialEq)]
pub enum PathMatch {
    Prefix(String),
    Exact(String),
}

#[derive(Clone, Debug, PartialEq)]
pub struct HeaderMatch {
    pub name: String,
    /// None: the header must be present.
    pub exact: Option<String>,
    pub invert: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub enum RouteAction {
    Cluster { name: String, timeout: Option<Duration> },
    DirectResponse { status: u16, body: Option<String> },
}

#[derive(Clone, Debug, PartialEq)]
pub enum HttpFilter {
    Wasm(WasmFilter),
    Rbac(Rbac),
    Router,
}

/// `envoy.filters.http.rbac` as far as path and header rules go.
#[derive(Clone, Debug, PartialEq)]
pub struct Rbac {
    pub action: RbacAction,
    pub policies: Vec<RbacPolicy>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RbacAction {
    Allow,
    Deny,
}

#[derive(Clone, Debug, PartialEq)]
pub struct RbacPolicy {
    pub name: String,
    /// Any one matches.
    pub permissions: Vec<Permission>,
    /// Only `any: true` is served: ebb proxy has no peer identities.
    pub any_principal: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Permission {
    Any,
    PathPrefix(String),
    PathExact(String),
    Header(HeaderMatch),
}

/// A Wasm filter (HTTP or network) or service: Envoy's `PluginConfig` and `VmConfig`.
#[derive(Clone, Debug, PartialEq)]
pub struct WasmFilter {
    pub name: String,
    pub root_id: String,
    pub vm_id: String,
    pub runtime: String,
    pub code: PathBuf,
    pub configuration: Vec<u8>,
    pub vm_configuration: Vec<u8>,
    pub failure_policy: FailurePolicy,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailurePolicy {
    FailClosed,
    FailOpen,
    FailReload,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Cluster {
    pub name: String,
    pub discovery: Discovery,
    pub connect_timeout: Duration,
    pub lb_policy: LbPolicy,
    pub endpoints: Vec<Endpoint>,
    pub max_connections: Option<u64>,
    pub max_requests: Option<u64>,
    /// STRICT_DNS: how often the names are resolved again (`dns_refresh_rate`, default 5 s).
    pub dns_refresh_rate: Duration,
    /// STRICT_DNS: the DNS servers asked (`dns_resolvers`); the system's resolver when empty.
    pub dns_resolvers: Vec<SocketAddr>,
}

/// Envoy's `dns_refresh_rate` default.
pub const DEFAULT_DNS_REFRESH_RATE: Duration = Duration::from_secs(5);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Discovery {
    Static,
    StrictDns,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LbPolicy {
    RoundRobin,
    LeastRequest,
}

/// An endpoint as written: a host name (STRICT_DNS) or an IP, and a port.
#[derive(Clone, Debug, PartialEq)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
}

/// Envoy's default connect timeout (cluster.proto): 5 s.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

const HCM: &str =
    "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";
const TCP_PROXY: &str = "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy";
const NETWORK_WASM: &str = "type.googleapis.com/envoy.extensions.filters.network.wasm.v3.Wasm";
const HTTP_WASM: &str = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm";
const RBAC: &str = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC";
const ROUTER: &str = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router";
const WASM_SERVICE: &str = "type.googleapis.com/envoy.extensions.wasm.v3.WasmService";
const STRING_VALUE: &str = "type.googleapis.com/google.protobuf.StringValue";

impl Bootstrap {
    /// Reads and parses a bootstrap file. Relative Wasm code paths stay as written: Envoy reads
    /// them relative to its working directory, and so does ebb proxy.
    pub fn load(path: &Path) -> Result<Bootstrap, BootstrapError> {
        use std::io::Read;
        let read = |source| BootstrapError::Read { path: path.to_path_buf(), source };
        let file = std::fs::File::open(path).map_err(read)?;
        if !file.metadata().map_err(read)?.is_file() {
            return Err(read(std::io::Error::other("not a regular file")));
        }
        let mut text = String::new();
        file.take(MAX_BOOTSTRAP_BYTES + 1).read_to_string(&mut text).map_err(read)?;
        if text.len() as u64 > MAX_BOOTSTRAP_BYTES {
            return Err(BootstrapError::TooLarge { path: path.to_path_buf() });
        }
        Bootstrap::parse(&text).map_err(|e| match e {
            BootstrapError::Yaml(m) => BootstrapError::Yaml(format!("{}: {m}", path.display())),
            other => other,
        })
    }

    /// Parses a bootstrap's YAML (or JSON, which is YAML) text.
    pub fn parse(text: &str) -> Result<Bootstrap, BootstrapError> {
        let value: Value = serde_norway::from_str(text).map_err(|e| BootstrapError::Yaml(e.to_string()))?;
        let mut root = Node::root(value)?;
        let node_id = match root.node("node")? {
            Some(mut node) => {
                let id = node.string("id")?;
                node.string("cluster")?;
                node.finish()?;
                id
            }
            None => None,
        };
        let admin = match root.node("admin")? {
            Some(mut admin) => {
                let address = socket_address(admin.require_node("address")?)?;
                admin.finish()?;
                Some(address)
            }
            None => None,
        };
        let mut stats_tags = Vec::new();
        if let Some(mut stats) = root.node("stats_config")? {
            for mut tag in stats.nodes("stats_tags")? {
                let path = tag.child("regex");
                let tag_name = tag.require_string("tag_name")?;
                let regex = tag.string("regex")?.ok_or_else(|| {
                    BootstrapError::invalid(&path, "only tags extracted by `regex` are served (not fixed_value)".into())
                })?;
                tag.finish()?;
                stats_tags.push(StatsTag { tag_name, regex });
            }
            stats.finish()?;
        }
        let mut services = Vec::new();
        for mut extension in root.nodes("bootstrap_extensions")? {
            extension.require_string("name")?;
            let (_, mut config) = typed_config(&mut extension, &[WASM_SERVICE])?;
            let singleton = config.bool("singleton")?.unwrap_or(false);
            let filter = wasm_filter(&mut config)?;
            config.finish()?;
            extension.finish()?;
            services.push(WasmService { filter, singleton });
        }
        let mut listeners = Vec::new();
        let mut clusters = Vec::new();
        if let Some(mut resources) = root.node("static_resources")? {
            for node in resources.nodes("listeners")? {
                listeners.push(listener(node)?);
            }
            for node in resources.nodes("clusters")? {
                clusters.push(cluster(node)?);
            }
            resources.finish()?;
        }
        root.finish()?;
        let bootstrap = Bootstrap { node_id, admin, stats_tags, listeners, clusters, services };
        bootstrap.check_references()?;
        Ok(bootstrap)
    }

    /// Every route and tcp_proxy names a cluster that exists; names are unique.
    fn check_references(&self) -> Result<(), BootstrapError> {
        let mut seen = std::collections::HashSet::new();
        for (i, c) in self.clusters.iter().enumerate() {
            if !seen.insert(c.name.as_str()) {
                return Err(BootstrapError::invalid(
                    &format!("static_resources.clusters[{i}].name"),
                    format!("cluster {:?} is defined twice", c.name),
                ));
            }
        }
        let known = |name: &str| self.clusters.iter().any(|c| c.name == name);
        let mut names = std::collections::HashSet::new();
        for (l, listener) in self.listeners.iter().enumerate() {
            let at = format!("static_resources.listeners[{l}]");
            if !names.insert(listener.name.as_str()) {
                return Err(BootstrapError::invalid(
                    &format!("{at}.name"),
                    format!("listener {:?} is defined twice", listener.name),
                ));
            }
            match &listener.kind {
                ListenerKind::Tcp { cluster, .. } if !known(cluster) => {
                    return Err(BootstrapError::invalid(
                        &at,
                        format!("tcp_proxy names cluster {cluster:?}, which is not defined"),
                    ));
                }
                ListenerKind::Http { manager, .. } => {
                    for vh in &manager.virtual_hosts {
                        for route in &vh.routes {
                            if let RouteAction::Cluster { name, .. } = &route.action {
                                if !known(name) {
                                    return Err(BootstrapError::invalid(
                                        &at,
                                        format!(
                                            "virtual host {:?} routes to cluster {name:?}, which is not defined",
                                            vh.name
                                        ),
                                    ));
                                }
                            }
                        }
                    }
                }
                ListenerKind::Tcp { .. } => {}
            }
        }
        Ok(())
    }

    /// Every Wasm filter of the bootstrap, with the listener it belongs to.
    pub fn wasm_filters(&self) -> impl Iterator<Item = (&Listener, &WasmFilter)> {
        self.listeners.iter().flat_map(|l| {
            let (network, http) = match &l.kind {
                ListenerKind::Http { network_filters, manager } => {
                    (network_filters.as_slice(), manager.http_filters.as_slice())
                }
                ListenerKind::Tcp { network_filters, .. } => (network_filters.as_slice(), &[][..]),
            };
            network
                .iter()
                .chain(http.iter().filter_map(|f| match f {
                    HttpFilter::Wasm(w) => Some(w),
                    _ => None,
                }))
                .map(move |w| (l, w))
        })
    }
}

impl Listener {
    /// The listener's Wasm filters (network, then HTTP), to adjust before starting them.
    pub fn wasm_filters_mut(&mut self) -> impl Iterator<Item = &mut WasmFilter> {
        let (network, http): (&mut Vec<WasmFilter>, Option<&mut Vec<HttpFilter>>) = match &mut self.kind {
            ListenerKind::Http { network_filters, manager } => (network_filters, Some(&mut manager.http_filters)),
            ListenerKind::Tcp { network_filters, .. } => (network_filters, None),
        };
        network.iter_mut().chain(http.into_iter().flat_map(|h| {
            h.iter_mut().filter_map(|f| match f {
                HttpFilter::Wasm(w) => Some(w),
                _ => None,
            })
        }))
    }
}

fn socket_address(mut address: Node) -> Result<SocketAddr, BootstrapError> {
    let mut socket = address.require_node("socket_address")?;
    let at = socket.path().to_string();
    let host = socket.require_string("address")?;
    let port = socket.u64("port_value")?.unwrap_or(0);
    socket.finish()?;
    address.finish()?;
    let ip: IpAddr = host
        .parse()
        .map_err(|_| BootstrapError::invalid(&format!("{at}.address"), format!("{host:?} is not an IP address")))?;
    let port = u16::try_from(port)
        .map_err(|_| BootstrapError::invalid(&format!("{at}.port_value"), format!("{port} is not a port")))?;
    Ok(SocketAddr::new(ip, port))
}

/// `typed_config` with its `@type`, checked against what the filter's name allows.
fn typed_config(filter: &mut Node, allowed: &[&str]) -> Result<(String, Node), BootstrapError> {
    let mut config = filter.require_node("typed_config")?;
    let at = config.child("@type");
    let type_url = config.require_string("@type")?;
    if !allowed.contains(&type_url.as_str()) {
        return Err(BootstrapError::invalid(
            &at,
            format!("{type_url} is not served here; ebb proxy serves {}", allowed.join(", ")),
        ));
    }
    Ok((type_url, config))
}

fn listener(mut node: Node) -> Result<Listener, BootstrapError> {
    let name = node.require_string("name")?;
    let address = socket_address(node.require_node("address")?)?;
    let buffer_limit = node
        .u64("per_connection_buffer_limit_bytes")?
        .map_or(DEFAULT_BUFFER_LIMIT, |n| usize::try_from(n).unwrap_or(usize::MAX));
    let at = node.child("filter_chains");
    let mut chains = node.nodes("filter_chains")?;
    if chains.len() != 1 {
        return Err(BootstrapError::invalid(
            &at,
            format!("exactly one filter chain is served, found {}", chains.len()),
        ));
    }
    let mut chain = chains.remove(0);
    let filters_at = chain.child("filters");
    let mut network_filters = Vec::new();
    let mut kind = None;
    for mut filter in chain.nodes("filters")? {
        let here = filter.path().to_string();
        if kind.is_some() {
            return Err(BootstrapError::invalid(&here, "nothing may follow the terminal network filter".into()));
        }
        filter.require_string("name")?;
        let (type_url, mut config) = typed_config(&mut filter, &[NETWORK_WASM, HCM, TCP_PROXY])?;
        match type_url.as_str() {
            NETWORK_WASM => network_filters.push(wasm_filter(&mut config)?),
            HCM => kind = Some(Kind::Http(http_manager(&mut config)?)),
            _ => {
                let stat_prefix = config.require_string("stat_prefix")?;
                let cluster = config.require_string("cluster")?;
                kind = Some(Kind::Tcp { stat_prefix, cluster });
            }
        }
        config.finish()?;
        filter.finish()?;
    }
    chain.finish()?;
    node.finish()?;
    let kind = match kind {
        Some(Kind::Http(manager)) => ListenerKind::Http { network_filters, manager },
        Some(Kind::Tcp { stat_prefix, cluster }) => ListenerKind::Tcp { network_filters, stat_prefix, cluster },
        None => {
            return Err(BootstrapError::invalid(
                &filters_at,
                "the chain must end in http_connection_manager or tcp_proxy".into(),
            ))
        }
    };
    Ok(Listener { name, address, kind, buffer_limit })
}

enum Kind {
    Http(HttpManager),
    Tcp { stat_prefix: String, cluster: String },
}

fn http_manager(config: &mut Node) -> Result<HttpManager, BootstrapError> {
    let stat_prefix = config.require_string("stat_prefix")?;
    let normalize_path = config.bool("normalize_path")?.unwrap_or(false);
    let merge_slashes = config.bool("merge_slashes")?.unwrap_or(false);
    if let Some(codec) = config.string("codec_type")? {
        if !matches!(codec.as_str(), "AUTO" | "HTTP1" | "HTTP2") {
            return Err(BootstrapError::invalid(
                &config.child("codec_type"),
                format!("{codec} is not served (AUTO, HTTP1, HTTP2)"),
            ));
        }
    }
    let mut route_config = config.require_node("route_config")?;
    route_config.string("name")?;
    let mut virtual_hosts = Vec::new();
    for mut vh in route_config.nodes("virtual_hosts")? {
        let name = vh.require_string("name")?;
        let domains = vh.strings("domains")?;
        let mut routes = Vec::new();
        for r in vh.nodes("routes")? {
            routes.push(route(r)?);
        }
        vh.finish()?;
        virtual_hosts.push(VirtualHost { name, domains, routes });
    }
    route_config.finish()?;
    let filters_at = config.child("http_filters");
    let mut http_filters = Vec::new();
    for mut filter in config.nodes("http_filters")? {
        let here = filter.path().to_string();
        if http_filters.last() == Some(&HttpFilter::Router) {
            return Err(BootstrapError::invalid(&here, "the router must be the last HTTP filter".into()));
        }
        filter.require_string("name")?;
        let (type_url, mut typed) = typed_config(&mut filter, &[HTTP_WASM, RBAC, ROUTER])?;
        http_filters.push(match type_url.as_str() {
            HTTP_WASM => HttpFilter::Wasm(wasm_filter(&mut typed)?),
            RBAC => HttpFilter::Rbac(rbac(&mut typed)?),
            _ => HttpFilter::Router,
        });
        typed.finish()?;
        filter.finish()?;
    }
    if http_filters.last() != Some(&HttpFilter::Router) {
        return Err(BootstrapError::invalid(
            &filters_at,
            "the last HTTP filter must be envoy.filters.http.router".into(),
        ));
    }
    Ok(HttpManager { stat_prefix, normalize_path, merge_slashes, virtual_hosts, http_filters })
}

fn route(mut node: Node) -> Result<Route, BootstrapError> {
    let mut matcher = node.require_node("match")?;
    let path = match (matcher.string("prefix")?, matcher.string("path")?) {
        (Some(p), None) => PathMatch::Prefix(p),
        (None, Some(p)) => PathMatch::Exact(p),
        _ => return Err(BootstrapError::invalid(matcher.path(), "exactly one of prefix or path is served".into())),
    };
    let mut headers = Vec::new();
    for h in matcher.nodes("headers")? {
        headers.push(header_match(h)?);
    }
    matcher.finish()?;
    let action = match (node.node("route")?, node.node("direct_response")?) {
        (Some(mut route), None) => {
            let name = route.require_string("cluster")?;
            let timeout = route.duration("timeout")?;
            route.finish()?;
            RouteAction::Cluster { name, timeout }
        }
        (None, Some(mut direct)) => {
            let at = direct.child("status");
            let status = direct
                .u64("status")?
                .ok_or_else(|| BootstrapError::invalid(&at, "required field is missing".into()))?;
            let status = u16::try_from(status)
                .ok()
                .filter(|s| (200..600).contains(s))
                .ok_or_else(|| BootstrapError::invalid(&at, format!("{status} is not an HTTP status (200-599)")))?;
            let body = match direct.node("body")? {
                Some(mut body) => {
                    let text = body.require_string("inline_string")?;
                    body.finish()?;
                    Some(text)
                }
                None => None,
            };
            direct.finish()?;
            RouteAction::DirectResponse { status, body }
        }
        _ => {
            return Err(BootstrapError::invalid(
                node.path(),
                "exactly one of route or direct_response is served".into(),
            ))
        }
    };
    node.finish()?;
    Ok(Route { path, headers, action })
}

fn header_match(mut node: Node) -> Result<HeaderMatch, BootstrapError> {
    let name = node.require_string("name")?.to_ascii_lowercase();
    let invert = node.bool("invert_match")?.unwrap_or(false);
    let present = node.bool("present_match")?;
    let mut exact = node.string("exact_match")?;
    if let Some(mut string_match) = node.node("string_match")? {
        exact = Some(string_match.require_string("exact")?);
        string_match.finish()?;
    }
    if exact.is_none() && present != Some(true) {
        return Err(BootstrapError::invalid(
            node.path(),
            "a header matcher needs present_match: true, exact_match or string_match.exact".into(),
        ));
    }
    node.finish()?;
    Ok(HeaderMatch { name, exact, invert })
}

fn rbac(config: &mut Node) -> Result<Rbac, BootstrapError> {
    let mut rules = config.require_node("rules")?;
    let at = rules.child("action");
    let action = match rules.string("action")?.as_deref() {
        None | Some("ALLOW") => RbacAction::Allow,
        Some("DENY") => RbacAction::Deny,
        Some(other) => return Err(BootstrapError::invalid(&at, format!("{other} is not served (ALLOW, DENY)"))),
    };
    let mut policies = Vec::new();
    for (name, mut policy) in rules.entries("policies")? {
        let mut permissions = Vec::new();
        for p in policy.nodes("permissions")? {
            permissions.push(permission(p)?);
        }
        let mut any_principal = false;
        for mut principal in policy.nodes("principals")? {
            let at = principal.child("any");
            if principal.bool("any")? != Some(true) {
                return Err(BootstrapError::invalid(&at, "only `any: true` principals are served".into()));
            }
            principal.finish()?;
            any_principal = true;
        }
        policy.finish()?;
        policies.push(RbacPolicy { name, permissions, any_principal });
    }
    rules.finish()?;
    Ok(Rbac { action, policies })
}

fn permission(mut node: Node) -> Result<Permission, BootstrapError> {
    let permission = if node.bool("any")? == Some(true) {
        Permission::Any
    } else if let Some(mut url_path) = node.node("url_path")? {
        let mut path = url_path.require_node("path")?;
        let p = match (path.string("prefix")?, path.string("exact")?) {
            (Some(prefix), None) => Permission::PathPrefix(prefix),
            (None, Some(exact)) => Permission::PathExact(exact),
            _ => return Err(BootstrapError::invalid(path.path(), "exactly one of prefix or exact is served".into())),
        };
        path.finish()?;
        url_path.finish()?;
        p
    } else if let Some(header) = node.node("header")? {
        Permission::Header(header_match(header)?)
    } else {
        return Err(BootstrapError::invalid(node.path(), "served permissions: any, url_path.path, header".into()));
    };
    node.finish()?;
    Ok(permission)
}

/// Envoy's `envoy.extensions.wasm.v3.PluginConfig` under a filter's `config`.
fn wasm_filter(typed: &mut Node) -> Result<WasmFilter, BootstrapError> {
    let mut config = typed.require_node("config")?;
    let name = config.string("name")?.unwrap_or_default();
    let root_id = config.string("root_id")?.unwrap_or_default();
    let configuration = string_value(&mut config, "configuration")?;
    let policy_at = config.child("failure_policy");
    let fail_open = config.bool("fail_open")?;
    let failure_policy = match (config.string("failure_policy")?.as_deref(), fail_open) {
        (Some("FAIL_CLOSED") | Some("UNSPECIFIED"), _) | (None, None | Some(false)) => FailurePolicy::FailClosed,
        (Some("FAIL_OPEN"), _) | (None, Some(true)) => FailurePolicy::FailOpen,
        (Some("FAIL_RELOAD"), _) => FailurePolicy::FailReload,
        (Some(other), _) => {
            return Err(BootstrapError::invalid(
                &policy_at,
                format!("{other} is not a failure policy (FAIL_CLOSED, FAIL_OPEN, FAIL_RELOAD)"),
            ))
        }
    };
    let mut vm = config.require_node("vm_config")?;
    let vm_id = vm.string("vm_id")?.unwrap_or_default();
    let runtime_at = vm.child("runtime");
    let runtime = vm.require_string("runtime")?;
    if !runtime.starts_with("envoy.wasm.runtime.") {
        return Err(BootstrapError::invalid(&runtime_at, format!("{runtime} is not an Envoy Wasm runtime")));
    }
    let vm_configuration = string_value(&mut vm, "configuration")?;
    let mut code = vm.require_node("code")?;
    let mut local = code.require_node("local")?;
    let file_at = local.child("filename");
    let filename = local.string("filename")?.ok_or_else(|| {
        BootstrapError::invalid(
            &file_at,
            "code is read from a local file (filename); inline and remote code are not served".into(),
        )
    })?;
    local.finish()?;
    code.finish()?;
    vm.finish()?;
    config.finish()?;
    Ok(WasmFilter {
        name,
        root_id,
        vm_id,
        runtime,
        code: PathBuf::from(filename),
        configuration,
        vm_configuration,
        failure_policy,
    })
}

/// A `google.protobuf.StringValue` in an `Any` (absent = empty).
fn string_value(node: &mut Node, key: &str) -> Result<Vec<u8>, BootstrapError> {
    let Some(mut any) = node.node(key)? else { return Ok(Vec::new()) };
    let at = any.child("@type");
    match any.string("@type")?.as_deref() {
        Some(STRING_VALUE) => {}
        other => {
            return Err(BootstrapError::invalid(
                &at,
                format!("{} is not served; use {STRING_VALUE}", other.unwrap_or("a missing @type")),
            ))
        }
    }
    let value = any.string("value")?.unwrap_or_default();
    any.finish()?;
    Ok(value.into_bytes())
}

fn cluster(mut node: Node) -> Result<Cluster, BootstrapError> {
    let name = node.require_string("name")?;
    let type_at = node.child("type");
    let discovery = match node.string("type")?.as_deref() {
        None | Some("STATIC") => Discovery::Static,
        Some("STRICT_DNS") => Discovery::StrictDns,
        Some(other) => {
            return Err(BootstrapError::invalid(&type_at, format!("{other} is not served (STATIC, STRICT_DNS)")))
        }
    };
    let connect_timeout = node.duration("connect_timeout")?.unwrap_or(DEFAULT_CONNECT_TIMEOUT);
    let refresh_at = node.child("dns_refresh_rate");
    let dns_refresh_rate = node.duration("dns_refresh_rate")?.unwrap_or(DEFAULT_DNS_REFRESH_RATE);
    // Envoy's validation: at least 1 ms.
    if dns_refresh_rate < Duration::from_millis(1) {
        return Err(BootstrapError::invalid(&refresh_at, "must be at least 1ms".into()));
    }
    let dns_resolvers = node.nodes("dns_resolvers")?.into_iter().map(socket_address).collect::<Result<Vec<_>, _>>()?;
    let lb_at = node.child("lb_policy");
    let lb_policy = match node.string("lb_policy")?.as_deref() {
        None | Some("ROUND_ROBIN") => LbPolicy::RoundRobin,
        Some("LEAST_REQUEST") => LbPolicy::LeastRequest,
        Some(other) => {
            return Err(BootstrapError::invalid(&lb_at, format!("{other} is not served (ROUND_ROBIN, LEAST_REQUEST)")))
        }
    };
    let (mut max_connections, mut max_requests) = (None, None);
    if let Some(mut breakers) = node.node("circuit_breakers")? {
        for mut threshold in breakers.nodes("thresholds")? {
            if let Some(priority) = threshold.string("priority")? {
                if priority != "DEFAULT" {
                    return Err(BootstrapError::invalid(
                        &threshold.child("priority"),
                        "only DEFAULT thresholds are served".into(),
                    ));
                }
            }
            max_connections = threshold.u64("max_connections")?.or(max_connections);
            max_requests = threshold.u64("max_requests")?.or(max_requests);
            threshold.finish()?;
        }
        breakers.finish()?;
    }
    let mut assignment = node.require_node("load_assignment")?;
    assignment.string("cluster_name")?;
    let mut endpoints = Vec::new();
    for mut locality in assignment.nodes("endpoints")? {
        for mut lb in locality.nodes("lb_endpoints")? {
            let mut endpoint = lb.require_node("endpoint")?;
            let mut address = endpoint.require_node("address")?;
            let mut socket = address.require_node("socket_address")?;
            let at = socket.path().to_string();
            let host = socket.require_string("address")?;
            let port = socket.u64("port_value")?.unwrap_or(0);
            let port = u16::try_from(port)
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| BootstrapError::invalid(&format!("{at}.port_value"), format!("{port} is not a port")))?;
            if discovery == Discovery::Static && host.parse::<IpAddr>().is_err() {
                return Err(BootstrapError::invalid(
                    &format!("{at}.address"),
                    format!("{host:?} is a name: a STATIC cluster needs IP addresses (or use type: STRICT_DNS)"),
                ));
            }
            socket.finish()?;
            address.finish()?;
            endpoint.finish()?;
            lb.finish()?;
            endpoints.push(Endpoint { host, port });
        }
        locality.finish()?;
    }
    assignment.finish()?;
    node.finish()?;
    Ok(Cluster {
        name,
        discovery,
        connect_timeout,
        lb_policy,
        endpoints,
        max_connections,
        max_requests,
        dns_refresh_rate,
        dns_resolvers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn staging() -> String {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/envoy/envoy.yaml");
        std::fs::read_to_string(path).expect("deploy/envoy/envoy.yaml")
    }

    #[test]
    fn the_staging_bootstrap_is_served_unchanged() {
        let b = Bootstrap::parse(&staging()).expect("deploy/envoy/envoy.yaml parses");
        assert_eq!(b.admin, Some("127.0.0.1:9901".parse().unwrap()));
        assert_eq!(b.stats_tags.len(), 1);
        assert_eq!(b.stats_tags[0].tag_name, "ebb_pool");
        let names: Vec<&str> = b.listeners.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, ["ingress_http", "ingress_ssh", "ebb_control"]);
        let ListenerKind::Http { manager, .. } = &b.listeners[0].kind else { panic!("ingress_http is HTTP") };
        assert!(manager.normalize_path && manager.merge_slashes);
        assert!(matches!(&manager.http_filters[0], HttpFilter::Rbac(r) if r.action == RbacAction::Deny
            && r.policies[0].permissions == [Permission::PathPrefix("/.ebb/".into())]));
        let wasm: Vec<(&str, &str, FailurePolicy)> =
            b.wasm_filters().map(|(l, w)| (l.name.as_str(), w.root_id.as_str(), w.failure_policy)).collect();
        assert_eq!(
            wasm,
            [
                ("ingress_http", "ebb", FailurePolicy::FailOpen),
                ("ingress_ssh", "ebb_tcp", FailurePolicy::FailOpen),
                ("ebb_control", "ebb", FailurePolicy::FailOpen)
            ]
        );
        // The anchored configuration is the same bytes in all three filters.
        let configs: Vec<&[u8]> = b.wasm_filters().map(|(_, w)| w.configuration.as_slice()).collect();
        assert!(configs.windows(2).all(|w| w[0] == w[1]) && configs[0].starts_with(b"{"));
        let ssh = b.clusters.iter().find(|c| c.name == "ssh").unwrap();
        assert_eq!((ssh.discovery, ssh.connect_timeout), (Discovery::StrictDns, Duration::from_secs(2)));
        assert_eq!(ssh.endpoints, [Endpoint { host: "ssh.staging.internal".into(), port: 22 }]);
    }

    #[test]
    fn any_field_not_served_is_refused_by_its_path() {
        let text = staging().replace("merge_slashes: true", "merge_slashes: true\n          use_remote_address: true");
        let err = Bootstrap::parse(&text).unwrap_err().to_string();
        assert_eq!(
            err,
            "static_resources.listeners[0].filter_chains[0].filters[0].typed_config.use_remote_address: \
             not served by ebb proxy (remove it, or use Envoy)"
        );
        let err = Bootstrap::parse("overload_manager: {}\n").unwrap_err().to_string();
        assert_eq!(err, "overload_manager: not served by ebb proxy (remove it, or use Envoy)");
    }

    #[test]
    fn wrong_values_name_their_path_and_what_was_expected() {
        let cases = [
            (staging().replace("type: STRICT_DNS\n    connect_timeout: 2s\n    load_assignment:\n      cluster_name: web", "type: EDS\n    connect_timeout: 2s\n    load_assignment:\n      cluster_name: web"),
             "static_resources.clusters[0].type: EDS is not served (STATIC, STRICT_DNS)"),
            (staging().replace("route: { cluster: api }", "route: { cluster: apis }"),
             "static_resources.listeners[0]: virtual host \"staging\" routes to cluster \"apis\", which is not defined"),
            (staging().replace("connect_timeout: 2s\n    load_assignment:\n      cluster_name: ssh", "connect_timeout: 2\n    load_assignment:\n      cluster_name: ssh"),
             "static_resources.clusters[2].connect_timeout: expected a duration such as \"2s\", found a number"),
        ];
        for (text, want) in cases {
            assert_eq!(Bootstrap::parse(&text).unwrap_err().to_string(), want);
        }
    }

    #[test]
    fn wasm_services_are_read_with_their_singleton_flag() {
        let text = "bootstrap_extensions:\n- name: envoy.bootstrap.wasm\n  typed_config:\n    \"@type\": type.googleapis.com/envoy.extensions.wasm.v3.WasmService\n    singleton: true\n    config:\n      name: hello\n      vm_config:\n        runtime: envoy.wasm.runtime.v8\n        code: { local: { filename: hello.wasm } }\n";
        let b = Bootstrap::parse(text).unwrap();
        assert_eq!(b.services.len(), 1);
        assert!(b.services[0].singleton);
        assert_eq!(b.services[0].filter.code, PathBuf::from("hello.wasm"));
    }

    #[test]
    fn the_router_must_end_the_http_filters() {
        let text = staging().replacen(
            "          - name: envoy.filters.http.router\n            typed_config:\n              \"@type\": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router\n\n  # ----",
            "\n  # ----",
            1,
        );
        let err = Bootstrap::parse(&text).unwrap_err().to_string();
        assert!(err.ends_with("http_filters: the last HTTP filter must be envoy.filters.http.router"), "{err}");
    }
}
