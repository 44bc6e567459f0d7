//! Envoy's foreign functions (`proxy_call_foreign_function`), as registered in
//! `source/extensions/common/wasm/foreign.cc` (`compress`, `uncompress`, `set_envoy_filter_state`,
//! `declare_property`, `clear_route_cache`) with the context methods they call in
//! `source/extensions/common/wasm/context.cc` (`Context::setEnvoyFilterState`,
//! `Context::declareProperty`, `Context::setProperty`), and the TCP proxy reading
//! `envoy.tcp_proxy.cluster` (`source/common/tcp_proxy/tcp_proxy.cc`, `PerConnectionCluster`).

use ebb_harness::{Clock, LogLevel, Proxy, ProxyOptions, Step, TCP_PROXY_CLUSTER};
use serde_json::Value;

use crate::util;

fn run(config: &str, commands: &str) -> (Proxy, Vec<(String, Vec<u8>)>) {
    let mut proxy = util::probe(config, 1);
    let mut http = proxy.worker(0).expect("worker").http();
    let step = http.request_headers(&util::request(commands), true);
    assert!(matches!(step, Step::Continue), "{step:?}\n{:?}", util::messages(&proxy));
    let state = http.filter_state();
    http.finish().expect("finish");
    (proxy, state)
}

/// `compress`/`uncompress` are zlib's `compress`/`uncompress` (a zlib stream, header 0x78);
/// anything zlib refuses is `WasmResult::SerializationFailure`.
#[test]
fn compress_and_uncompress_are_zlib() {
    let (proxy, _) = run("", "compress:hello hello hello hello,uncompress-bad");
    let compressed = util::result_of(&proxy, "compress:hello hello hello hello");
    assert!(compressed.starts_with("zlib 78"), "{compressed}");
    assert!(compressed.ends_with(r#"back=Ok("hello hello hello hello")"#), "{compressed}");
    assert_eq!(util::result_of(&proxy, "uncompress-bad"), "Err(SerializationFailure)");
}

/// `Context::setEnvoyFilterState`: the key must name a registered object factory (else
/// NOT_FOUND), the factory must accept the value (else BAD_ARGUMENT), and the arguments must
/// parse as `SetEnvoyFilterStateArguments` (else BAD_ARGUMENT).
#[test]
fn set_envoy_filter_state_follows_envoys_registry() {
    let commands = "filter-state:envoy.string=abc,filter-state:envoy.no.such.factory=1,\
                    filter-state:envoy.network.transport_socket.original_dst_address=nowhere,\
                    filter-state-bad,clear-route-cache,foreign:expr_create";
    let (proxy, state) = run("", commands);
    assert_eq!(util::result_of(&proxy, "filter-state:envoy.string=abc"), "Ok(None)");
    assert_eq!(util::result_of(&proxy, "filter-state:envoy.no.such.factory=1"), "Err(NotFound)");
    assert_eq!(
        util::result_of(&proxy, "filter-state:envoy.network.transport_socket.original_dst_address=nowhere"),
        "Err(BadArgument)"
    );
    assert_eq!(util::result_of(&proxy, "filter-state-bad"), "Err(BadArgument)");
    assert_eq!(util::result_of(&proxy, "clear-route-cache"), "Ok(None)");
    assert_eq!(util::result_of(&proxy, "foreign:expr_create"), "Err(NotFound)", "no CEL in this host");
    assert_eq!(state, vec![("envoy.string".to_owned(), b"abc".to_vec())]);
}

/// `declare_property` from the root context makes a property read-only once set on a stream
/// (`CelState::setValue` refuses a second value: BAD_ARGUMENT); undeclared properties stay
/// mutable, and a declaration from a stream context has no effect (Envoy keeps it on that
/// context while `setProperty` consults the root context's).
#[test]
fn a_declared_read_only_property_is_set_once() {
    let commands = "set-prop-raw:tag=a,set-prop-raw:tag=b,set-prop-raw:free=a,set-prop-raw:free=b,\
                    declare:late,set-prop-raw:late=a,set-prop-raw:late=b";
    let (proxy, _) = run("declare=tag", commands);
    assert_eq!(util::result_of(&proxy, "declare tag"), "Ok(None)");
    assert_eq!(util::result_of(&proxy, "set-prop-raw:tag=a"), "status=0");
    assert_eq!(util::result_of(&proxy, "set-prop-raw:tag=b"), "status=2", "read-only: BAD_ARGUMENT");
    assert_eq!(util::result_of(&proxy, "set-prop-raw:free=b"), "status=0");
    assert_eq!(util::result_of(&proxy, "declare:late"), "Ok(None)");
    assert_eq!(util::result_of(&proxy, "set-prop-raw:late=b"), "status=0", "declared from a stream: no effect");
}

fn tcp_cluster(config: &str) -> Option<String> {
    let options = ProxyOptions {
        plugin_config: config.as_bytes().to_vec(),
        log_level: LogLevel::Trace,
        ..ProxyOptions::default()
    };
    let mut proxy = Proxy::new(&util::plugin("probe"), options, Clock::default()).expect("proxy");
    let mut tcp = proxy.worker(0).expect("worker").tcp();
    assert!(matches!(tcp.new_connection(), Step::Continue));
    let chosen = tcp.upstream_cluster();
    let state = tcp.filter_state();
    tcp.finish().expect("finish");
    if chosen.as_deref() == Some("canary") {
        assert_eq!(state, vec![(TCP_PROXY_CLUSTER.to_owned(), b"canary".to_vec())]);
    }
    chosen
}

/// The SDK's envoy_tcp_routing example: a network filter picks the TCP proxy's cluster by
/// setting `envoy.tcp_proxy.cluster` in `on_new_connection`; otherwise the configured cluster.
#[test]
fn a_network_filter_chooses_the_tcp_proxys_cluster() {
    assert_eq!(tcp_cluster("type=tcp;tcp_cluster=canary").as_deref(), Some("canary"));
    assert_eq!(tcp_cluster("type=tcp").as_deref(), Some("backend"), "the configured cluster_name");
}

#[test]
fn ebb_request_shows_the_chosen_cluster() {
    let probe = util::filter("probe");
    let p = probe.to_str().expect("utf-8 path");
    let args = ["request", "--plugin", p, "--tcp", "--config", "type=tcp;tcp_cluster=canary", "--data", "hi"];
    let out = std::process::Command::new(util::ebb_binary()).args(args).arg("--json").output().expect("run ebb");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let v: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{stdout}"));
    assert_eq!(v["tcp"]["upstream_cluster"], "canary", "{v:#}");
    assert_eq!(v["filter_state"][TCP_PROXY_CLUSTER], "canary", "{v:#}");
    let out = std::process::Command::new(util::ebb_binary()).args(args).output().expect("run ebb");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("upstream cluster: canary (Envoy's TCP proxy)"), "{text}");
}
