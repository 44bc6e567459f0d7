//! The ebb filter itself, built from `plugin/`, driven through the host.

use ebb_harness::{Clock, Plugin, Proxy, ProxyOptions, Step};

use crate::util;

#[test]
fn ebb_with_no_fault_passes_requests_through_on_every_worker() {
    let plugin = Plugin::load(util::ebb_wasm()).expect("ebb.wasm loads");
    let mut proxy = Proxy::new(
        &plugin,
        ProxyOptions { plugin_config: b"{}".to_vec(), workers: 2, ..ProxyOptions::default() },
        Clock::default(),
    )
    .expect("ebb starts with {}");
    for w in 0..2 {
        let mut http = proxy.worker(w).expect("worker").http();
        let step = http.request_headers(&util::request(""), true);
        assert!(matches!(step, Step::Continue), "worker {w}: {step:?}");
        assert!(matches!(http.response_headers(&[(":status", "200")], true), Step::Continue));
        let client = http.client_response().expect("client got the response");
        assert_eq!(client.headers.get(b":status"), Some(&b"200"[..]));
        http.finish().expect("finish");
    }
    assert!(proxy.failure(ebb_harness::Thread::Worker(0)).is_none());
}

fn ebb(config: &str, workers: usize) -> Proxy {
    let plugin = Plugin::load(util::ebb_wasm()).expect("ebb.wasm loads");
    Proxy::new(
        &plugin,
        ProxyOptions { plugin_config: config.as_bytes().to_vec(), workers, ..ProxyOptions::default() },
        Clock::default(),
    )
    .unwrap_or_else(|e| panic!("ebb starts with {config}: {e}"))
}

fn gauge(proxy: &Proxy, name: &str) -> u64 {
    proxy.metric(name).unwrap_or_else(|| panic!("{name} not defined; metrics: {:?}", proxy.metrics())).value
}

#[test]
fn a_static_abort_answers_on_every_worker_then_expires_from_ticks_alone() {
    let mut proxy = ebb(r#"{"faults":[{"id":"a1","ttl":"2s","abort":{"status":503}}],"tick":"100ms"}"#, 2);
    for w in 0..2 {
        let mut http = proxy.worker(w).expect("worker").http();
        let step = http.request_headers(&util::request(""), true);
        let Step::LocalReply(reply) = step else {
            panic!("worker {w}: expected the abort, got {step:?}\nlogs: {:#?}", proxy.logs());
        };
        assert_eq!(reply.status, 503);
        assert_eq!(reply.headers.get(b"x-ebb-fault"), Some(&b"a1"[..]));
        http.finish().expect("finish");
    }
    assert_eq!(gauge(&proxy, "ebb.aborted_total"), 2, "counted across workers");
    // No traffic: only ticks can expire the fault.
    let errors = proxy.advance(std::time::Duration::from_secs(3));
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(gauge(&proxy, "ebb.active_faults"), 0);
    assert_eq!(gauge(&proxy, "ebb.faults_expired_total"), 1, "counted once per proxy");
    assert!(matches!(util::exchange(&mut proxy, 1, ""), Step::Continue));
    let text = proxy.render_prometheus();
    assert!(text.contains("ebb_aborted_total{} 2"), "{text}");
}

#[test]
fn a_capacity_drain_sheds_over_capacity_across_workers() {
    let mut proxy = ebb(
        r#"{"pools":[{"name":"web","hosts":2,"capacity_per_host":1}],
            "faults":[{"id":"d1","ttl":"1h","drain":{"pool":"web","hosts":1}}],"tick":"100ms"}"#,
        2,
    );
    // One host left × capacity 1: the first request in flight takes the whole budget.
    let first = {
        let mut http = proxy.worker(0).expect("worker").http();
        let step = http.request_headers(&util::request(""), true);
        assert!(matches!(step, Step::Continue), "admitted: {step:?}");
        http.id()
    };
    let mut http = proxy.worker(1).expect("worker").http();
    let step = http.request_headers(&util::request(""), true);
    let Step::LocalReply(reply) = step else {
        panic!("expected the second request to be shed, got {step:?}\nlogs: {:#?}", proxy.logs());
    };
    assert_eq!(reply.status, 503);
    assert_eq!(reply.headers.get(b"x-envoy-overloaded"), Some(&b"true"[..]));
    http.finish().expect("finish");
    let mut http = proxy.http_stream(first).expect("first still open");
    http.response_headers(&[(":status", "200")], true);
    http.finish().expect("finish");
    assert_eq!(gauge(&proxy, "ebb.pool.web.shed_total"), 1);
    assert_eq!(gauge(&proxy, "ebb.pool.web.available_hosts"), 1);
    // The budget is free again: the next request is admitted on either worker.
    assert!(matches!(util::exchange(&mut proxy, 1, ""), Step::Continue));
}
