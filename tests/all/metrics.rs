//! Metrics with Envoy's semantics, aggregated across workers, and their Prometheus text.

use ebb_harness::MetricKind;

use crate::util::{self, result_of};

#[test]
fn counters_gauges_and_histograms_follow_envoy() {
    let mut proxy = util::probe("", 2);
    util::exchange(
        &mut proxy,
        0,
        "metric:counter:probe.hits=1,metric:counter:probe.hits=0,metric:counter:probe.hits=-3",
    );
    assert_eq!(result_of(&proxy, "metric:counter:probe.hits=1"), "status=0");
    assert_eq!(result_of(&proxy, "metric:counter:probe.hits=0"), "status=2", "counter delta 0");
    assert_eq!(result_of(&proxy, "metric:counter:probe.hits=-3"), "status=2", "counter delta < 0");
    util::exchange(&mut proxy, 1, "metric:counter:probe.hits=2,record:counter:probe.hits=5");
    assert_eq!(result_of(&proxy, "record:counter:probe.hits=5"), "Ok(())");
    let hits = proxy.metric("probe.hits").expect("defined");
    assert_eq!((hits.kind, hits.value), (MetricKind::Counter, 8), "1 + 2 + record 5 adds, across workers");

    util::exchange(
        &mut proxy,
        0,
        "metric:gauge:probe.level=5,metric:gauge:probe.level=-2,metric-get:gauge:probe.level",
    );
    assert_eq!(result_of(&proxy, "metric:gauge:probe.level=-2"), "status=0", "gauges may go down");
    assert_eq!(result_of(&proxy, "metric-get:gauge:probe.level"), "Ok(3)");
    util::exchange(&mut proxy, 1, "record:gauge:probe.level=42");
    assert_eq!(proxy.metric("probe.level").expect("gauge").value, 42, "record on a gauge sets");

    util::exchange(
        &mut proxy,
        0,
        "record:histogram:probe.latency=7,metric:histogram:probe.latency=1,metric-get:histogram:probe.latency",
    );
    assert_eq!(result_of(&proxy, "metric:histogram:probe.latency=1"), "status=2");
    assert_eq!(result_of(&proxy, "metric-get:histogram:probe.latency"), "Err(BadArgument)");

    let text = proxy.render_prometheus();
    assert!(text.contains("# TYPE probe_hits counter\nprobe_hits{} 8\n"), "{text}");
    assert!(text.contains("# TYPE probe_level gauge\nprobe_level{} 42\n"), "{text}");
    assert!(text.contains("probe_latency_bucket{le=\"10\"} 1\n"), "{text}");
    assert!(text.contains("probe_latency_count{} 1\n"), "{text}");
    assert!(!text.contains("envoy_"), "Wasm metrics carry no envoy_ prefix: {text}");
}
