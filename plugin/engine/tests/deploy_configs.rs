//! Keeps the deployment files in deploy/ in step with the filter's code: every plugin
//! configuration they embed must be one `ebb_engine::Config::parse` accepts, and the Envoy wiring
//! the filter relies on (root ids, one vm_id, FAIL_OPEN, a loopback-only control listener that
//! never forwards, the `ebb_pool` tag rule for every metric name in metrics.rs) must hold.
//! A change to config.rs or metrics.rs that breaks a deployment file fails here, not in staging.

use std::path::{Path, PathBuf};

use ebb_engine::metrics::{GlobalMetric, PoolMetric};
use ebb_engine::{Config, Protocol};
use regex::Regex;
use serde_json::Value;

const HTTP_WASM: &str = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm";
const NETWORK_WASM: &str = "type.googleapis.com/envoy.extensions.filters.network.wasm.v3.Wasm";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(relative: &str) -> String {
    let path = repo().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// Every YAML document of a file, as JSON values (anchors and aliases resolved).
fn yaml_documents(relative: &str) -> Vec<Value> {
    let text = read(relative);
    serde_norway::Deserializer::from_str(&text)
        .map(|doc| serde::Deserialize::deserialize(doc).unwrap_or_else(|e| panic!("{relative} is not valid YAML: {e}")))
        .collect()
}

/// Parses a configuration the way the filter does, failing with the field path.
fn parse_config(bytes: &[u8], what: &str) -> Config {
    Config::parse(bytes).unwrap_or_else(|e| panic!("{what}: ebb_engine::Config::parse refused it: {e}"))
}

fn str_at<'a>(value: &'a Value, pointer: &str, what: &str) -> &'a str {
    value.pointer(pointer).and_then(Value::as_str).unwrap_or_else(|| panic!("{what}: no string at {pointer}"))
}

/// One ebb filter found in envoy.yaml.
struct WasmFilter {
    listener: String,
    network: bool,
    /// The `config` (PluginConfig) object.
    plugin: Value,
    /// The filter chain it sits in: names of every filter, in order.
    chain: Vec<String>,
}

fn listeners(bootstrap: &Value) -> &Vec<Value> {
    bootstrap.pointer("/static_resources/listeners").and_then(Value::as_array).expect("static_resources.listeners")
}

fn hcm(listener: &Value) -> Option<&Value> {
    listener
        .pointer("/filter_chains/0/filters")?
        .as_array()?
        .iter()
        .find_map(|f| (f["name"] == "envoy.filters.network.http_connection_manager").then(|| &f["typed_config"]))
}

fn wasm_filters(bootstrap: &Value) -> Vec<WasmFilter> {
    let mut found = Vec::new();
    for listener in listeners(bootstrap) {
        let name = listener["name"].as_str().unwrap_or("?").to_string();
        for chain in listener["filter_chains"].as_array().into_iter().flatten() {
            let filters = chain["filters"].as_array().expect("filters");
            let names: Vec<String> = filters.iter().map(|f| f["name"].as_str().unwrap_or("?").to_string()).collect();
            for f in filters {
                if f["typed_config"]["@type"] == NETWORK_WASM {
                    found.push(WasmFilter {
                        listener: name.clone(),
                        network: true,
                        plugin: f["typed_config"]["config"].clone(),
                        chain: names.clone(),
                    });
                }
            }
            for hcm in filters.iter().filter(|f| f["name"] == "envoy.filters.network.http_connection_manager") {
                let http = hcm["typed_config"]["http_filters"].as_array().expect("http_filters");
                let names: Vec<String> = http.iter().map(|f| f["name"].as_str().unwrap_or("?").to_string()).collect();
                for f in http.iter().filter(|f| f["typed_config"]["@type"] == HTTP_WASM) {
                    found.push(WasmFilter {
                        listener: name.clone(),
                        network: false,
                        plugin: f["typed_config"]["config"].clone(),
                        chain: names.clone(),
                    });
                }
            }
        }
    }
    found
}

fn envoy() -> Value {
    let mut docs = yaml_documents("deploy/envoy/envoy.yaml");
    assert_eq!(docs.len(), 1, "envoy.yaml is one bootstrap document");
    docs.remove(0)
}

fn envoy_config() -> (String, Config) {
    let filters = wasm_filters(&envoy());
    let text = str_at(&filters[0].plugin, "/configuration/value", "first ebb filter").to_string();
    let config = parse_config(text.as_bytes(), "deploy/envoy/envoy.yaml");
    (text, config)
}

#[test]
fn envoy_embeds_one_valid_configuration_in_every_ebb_filter() {
    let bootstrap = envoy();
    let filters = wasm_filters(&bootstrap);
    let seen: Vec<(&str, bool)> = filters.iter().map(|f| (f.listener.as_str(), f.network)).collect();
    assert_eq!(seen, [("ingress_http", false), ("ingress_ssh", true), ("ebb_control", false)]);
    let (first, _) = envoy_config();
    for f in &filters {
        let what = format!("envoy.yaml, listener {}", f.listener);
        assert_eq!(
            str_at(&f.plugin, "/configuration/@type", &what),
            "type.googleapis.com/google.protobuf.StringValue",
            "{what}: the filter reads a JSON string"
        );
        let text = str_at(&f.plugin, "/configuration/value", &what);
        parse_config(text.as_bytes(), &what);
        // Static faults are installed once per configuration hash: one string for all filters.
        assert_eq!(text, first, "{what}: every ebb filter must carry the same configuration bytes");
    }
}

#[test]
fn envoy_filters_share_a_vm_fail_open_and_pick_their_side_by_root_id() {
    let filters = wasm_filters(&envoy());
    let first_vm = &filters[0].plugin["vm_config"];
    for f in &filters {
        let what = format!("envoy.yaml, listener {}", f.listener);
        // plugin/src/filter.rs: a root_id ending in `tcp` is the network side.
        let root_id = str_at(&f.plugin, "/root_id", &what);
        assert_eq!(root_id.ends_with("tcp"), f.network, "{what}: root_id {root_id:?} selects the wrong side");
        assert_eq!(str_at(&f.plugin, "/failure_policy", &what), "FAIL_OPEN", "{what}");
        assert_eq!(str_at(&f.plugin, "/vm_config/vm_id", &what), "ebb", "{what}");
        assert_eq!(&f.plugin["vm_config"], first_vm, "{what}: a different vm_config means a different VM and data");
        let next = if f.network { "envoy.filters.network.tcp_proxy" } else { "envoy.filters.http.router" };
        let at = f.chain.iter().position(|n| n.ends_with(".wasm")).expect("wasm in its chain");
        assert_eq!(f.chain.get(at + 1).map(String::as_str), Some(next), "{what}: ebb must sit right before {next}");
    }
    let names: Vec<&str> = filters.iter().map(|f| f.plugin["name"].as_str().unwrap_or("")).collect();
    let mut unique = names.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), names.len(), "plugin names tell the filters apart in Envoy's logs: {names:?}");
}

#[test]
fn envoy_control_listener_is_loopback_only_and_never_forwards() {
    let bootstrap = envoy();
    let (_, config) = envoy_config();
    let control = config.control.as_ref().expect("the staging configuration enables the control API");
    assert!(
        control.key.contains("CHANGE-ME"),
        "deploy/envoy/envoy.yaml must carry the placeholder key, never a real one (render it at deploy time)"
    );
    let listener = listeners(&bootstrap).iter().find(|l| l["name"] == "ebb_control").expect("ebb_control listener");
    assert_eq!(str_at(listener, "/address/socket_address/address", "ebb_control"), "127.0.0.1");
    assert_eq!(listener.pointer("/address/socket_address/port_value"), Some(&Value::from(9902)));
    let hosts =
        hcm(listener).expect("ebb_control is HTTP")["route_config"]["virtual_hosts"].as_array().expect("vhosts");
    for route in hosts.iter().flat_map(|h| h["routes"].as_array().expect("routes")) {
        assert!(route.get("route").is_none(), "ebb_control must not forward: {route}");
        assert_eq!(route.pointer("/direct_response/status"), Some(&Value::from(404)), "{route}");
    }
    let admin = str_at(&bootstrap, "/admin/address/socket_address/address", "admin");
    assert_eq!(admin, "127.0.0.1", "admin's /config_dump shows the control key");

    // The public HTTP listener shares the configuration, so the filter would answer control calls
    // there too: an RBAC DENY on a prefix of control.path_prefix must come before it.
    let public = listeners(&bootstrap).iter().find(|l| l["name"] == "ingress_http").expect("ingress_http");
    let http = hcm(public).expect("ingress_http is HTTP")["http_filters"].as_array().expect("http_filters");
    let rbac =
        http.iter().position(|f| f["name"] == "envoy.filters.http.rbac").expect("an RBAC filter on ingress_http");
    let wasm = http.iter().position(|f| f["typed_config"]["@type"] == HTTP_WASM).expect("ebb on ingress_http");
    assert!(rbac < wasm, "RBAC must run before ebb");
    let rules = &http[rbac]["typed_config"]["rules"];
    assert_eq!(rules["action"], "DENY");
    let prefixes: Vec<&str> = rules["policies"]
        .as_object()
        .expect("policies")
        .values()
        .flat_map(|p| p["permissions"].as_array().expect("permissions"))
        .filter_map(|p| p.pointer("/url_path/path/prefix").and_then(Value::as_str))
        .collect();
    assert!(
        prefixes.iter().any(|p| control.path_prefix.starts_with(p)),
        "RBAC prefixes {prefixes:?} do not cover control.path_prefix {}",
        control.path_prefix
    );
}

#[test]
fn envoy_pools_match_the_clusters_and_ports_envoy_routes_to() {
    let bootstrap = envoy();
    let (_, config) = envoy_config();
    let clusters: Vec<&str> = bootstrap
        .pointer("/static_resources/clusters")
        .and_then(Value::as_array)
        .expect("clusters")
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    let public = listeners(&bootstrap).iter().find(|l| l["name"] == "ingress_http").expect("ingress_http");
    let routed: Vec<&str> = hcm(public).expect("HTTP")["route_config"]["virtual_hosts"]
        .as_array()
        .expect("vhosts")
        .iter()
        .flat_map(|h| h["routes"].as_array().expect("routes"))
        .filter_map(|r| r.pointer("/route/cluster").and_then(Value::as_str))
        .collect();
    let ssh = listeners(&bootstrap).iter().find(|l| l["name"] == "ingress_ssh").expect("ingress_ssh");
    let ssh_port = ssh.pointer("/address/socket_address/port_value").and_then(Value::as_u64).expect("port");
    for pool in &config.pools {
        match pool.protocol {
            Protocol::Http => {
                let cluster = pool.matcher.cluster.as_deref().unwrap_or_else(|| {
                    panic!("http pool {}: match on the cluster, or control-listener traffic counts", pool.name)
                });
                assert!(routed.contains(&cluster), "pool {}: no route to cluster {cluster}", pool.name);
                assert!(clusters.contains(&cluster), "pool {}: no cluster {cluster}", pool.name);
            }
            // The cluster is not known when a connection opens (tcp_proxy picks it later).
            Protocol::Tcp => {
                assert_eq!(pool.matcher.port.map(u64::from), Some(ssh_port), "tcp pool {} port", pool.name)
            }
        }
    }
}

/// What Envoy's tag extraction does with one rule: the first capture group is removed from the
/// name, the second becomes the tag's value.
fn extract(rule: &Regex, name: &str) -> Option<(String, String)> {
    let caps = rule.captures(name)?;
    let (remove, value) = (caps.get(1)?, caps.get(2)?);
    Some((format!("{}{}", &name[..remove.start()], &name[remove.end()..]), value.as_str().to_string()))
}

#[test]
fn envoy_tag_rule_turns_every_pool_metric_into_one_labelled_series() {
    let bootstrap = envoy();
    let tags = bootstrap.pointer("/stats_config/stats_tags").and_then(Value::as_array).expect("stats_tags");
    let rule = tags.iter().find(|t| t["tag_name"] == "ebb_pool").expect("an ebb_pool tag rule");
    let regex = Regex::new(str_at(rule, "/regex", "ebb_pool rule")).expect("the rule compiles");
    let (_, config) = envoy_config();
    for pool in config.pools.iter().map(|p| p.name.as_str()).chain(["a-b_9"]) {
        for metric in PoolMetric::ALL {
            let name = metric.name(pool);
            // Envoy extracts tags from the full name, under the wasmcustom namespace.
            for (full, stripped) in [(format!("wasmcustom.{name}"), "wasmcustom."), (name.clone(), "")] {
                let (tag_extracted, value) =
                    extract(&regex, &full).unwrap_or_else(|| panic!("the ebb_pool rule misses {full}"));
                assert_eq!(value, pool, "{full}");
                assert_eq!(tag_extracted, format!("{stripped}ebb.pool.{}", metric.suffix()), "{full}");
            }
        }
    }
    for metric in GlobalMetric::ALL {
        assert!(extract(&regex, &format!("wasmcustom.{}", metric.name())).is_none(), "{}", metric.name());
    }
}

/// Every configuration in the Istio manifests, by WasmPlugin name.
fn istio_plugins() -> Vec<(String, Value)> {
    let dir = repo().join("deploy/istio");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no manifests in deploy/istio");
    let mut plugins = Vec::new();
    for file in files {
        let relative = format!("deploy/istio/{}", file.file_name().expect("name").to_string_lossy());
        for doc in yaml_documents(&relative) {
            if doc["kind"] == "WasmPlugin" {
                plugins.push((format!("{relative} {}", doc["metadata"]["name"]), doc));
            }
        }
    }
    plugins
}

#[test]
fn istio_plugins_carry_one_valid_configuration_and_fail_open() {
    let plugins = istio_plugins();
    let mut sides = Vec::new();
    let mut first: Option<Value> = None;
    for (what, doc) in &plugins {
        let spec = &doc["spec"];
        assert_eq!(spec["failStrategy"], "FAIL_OPEN", "{what}");
        let root_id = str_at(spec, "/pluginName", what);
        let network = spec["type"] == "NETWORK";
        assert_eq!(root_id.ends_with("tcp"), network, "{what}: pluginName {root_id:?} selects the wrong side");
        sides.push(network);
        // Istio passes pluginConfig (a Struct) to the filter as JSON.
        let json = serde_json::to_vec(&spec["pluginConfig"]).expect("JSON");
        let config = parse_config(&json, what);
        if let Some(control) = &config.control {
            assert!(control.key.contains("CHANGE-ME"), "{what}: commit the placeholder key, never a real one");
        }
        match &first {
            None => first = Some(spec["pluginConfig"].clone()),
            Some(f) => assert_eq!(&spec["pluginConfig"], f, "{what}: every ebb plugin needs the same pluginConfig"),
        }
    }
    sides.sort();
    assert_eq!(sides, [false, true], "one HTTP and one NETWORK WasmPlugin");
}

#[test]
fn istio_denies_the_control_prefix_to_remote_peers() {
    let plugins = istio_plugins();
    let config = parse_config(&serde_json::to_vec(&plugins[0].1["spec"]["pluginConfig"]).expect("JSON"), "istio");
    let prefix = config.control.expect("control").path_prefix;
    let policy = yaml_documents("deploy/istio/wasmplugin.yaml")
        .into_iter()
        .find(|d| d["kind"] == "AuthorizationPolicy")
        .expect("an AuthorizationPolicy for the control prefix");
    assert_eq!(policy["spec"]["action"], "DENY");
    let paths: Vec<&str> = policy["spec"]["rules"]
        .as_array()
        .expect("rules")
        .iter()
        .flat_map(|r| r["to"].as_array().expect("to"))
        .flat_map(|t| t["operation"]["paths"].as_array().expect("paths"))
        .filter_map(Value::as_str)
        .collect();
    assert!(
        paths.iter().any(|p| p.strip_suffix('*').is_some_and(|p| prefix.starts_with(p))),
        "{paths:?} do not cover {prefix}"
    );
}
