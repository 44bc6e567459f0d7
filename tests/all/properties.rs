//! Properties: defaults, caller-set values, values derived from the request, and values the
//! filter sets itself.

use ebb_harness::ProxyOptions;

use crate::util::{self, result_of};

#[test]
fn properties_come_from_options_the_request_and_the_filter() {
    let mut proxy = util::probe_with(ProxyOptions {
        name: "chaos".into(),
        root_id: "chaos_root".into(),
        properties: vec![("source.address".into(), b"10.1.2.3:5555".to_vec())],
        log_level: ebb_harness::LogLevel::Trace,
        ..ProxyOptions::default()
    });
    util::exchange(
        &mut proxy,
        0,
        "prop:plugin_name,prop:plugin_root_id,prop:source.address,prop:request.path,prop:request.url_path,prop:request.method,prop:connection_id,prop:no.such,set-prop:my.key=v1,prop:my.key",
    );
    assert_eq!(result_of(&proxy, "prop:plugin_name"), "text:chaos");
    assert_eq!(result_of(&proxy, "prop:plugin_root_id"), "text:chaos_root");
    assert_eq!(result_of(&proxy, "prop:source.address"), "text:10.1.2.3:5555");
    assert_eq!(result_of(&proxy, "prop:request.path"), "text:/probe?x=1");
    assert_eq!(result_of(&proxy, "prop:request.url_path"), "text:/probe");
    assert_eq!(result_of(&proxy, "prop:request.method"), "text:GET");
    assert_eq!(result_of(&proxy, "prop:connection_id"), "int:1");
    assert_eq!(result_of(&proxy, "prop:no.such"), "None");
    assert_eq!(result_of(&proxy, "prop:my.key"), "text:v1");
}

/// Envoy's property paths are NUL-separated segments (`source/extensions/common/wasm/context.cc`,
/// `Context::getProperty` splits the path at `\0`), so a segment may contain dots, as filter
/// metadata keys do: `metadata.filter_metadata["envoy.filters.http.lua"]` names one.
#[test]
fn a_property_segment_with_dots_is_written_in_brackets() {
    let mut proxy = util::probe_with(ProxyOptions {
        properties: vec![(r#"metadata.filter_metadata["envoy.filters.http.lua"].key"#.into(), b"lua-v".to_vec())],
        log_level: ebb_harness::LogLevel::Trace,
        ..ProxyOptions::default()
    });
    util::exchange(&mut proxy, 0, "prop-path:metadata|filter_metadata|envoy.filters.http.lua|key");
    assert_eq!(result_of(&proxy, "prop-path:metadata|filter_metadata|envoy.filters.http.lua|key"), "text:lua-v");

    let probe = util::filter("probe");
    let out = std::process::Command::new(util::ebb_binary())
        .args(["request", "--plugin", probe.to_str().expect("utf-8"), "--json", "--log-level", "trace"])
        .args(["--property", r#"metadata.filter_metadata['envoy.filters.http.lua'].key=from-cli"#])
        .args(["-H", "x-probe: prop-path:metadata|filter_metadata|envoy.filters.http.lua|key"])
        .output()
        .expect("run ebb");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("envoy.filters.http.lua|key => text:from-cli"), "{stdout}");
}
