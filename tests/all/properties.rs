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
