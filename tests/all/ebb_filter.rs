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
