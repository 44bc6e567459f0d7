// The router's upstream connections and a listener with no Wasm filter: connections reused per
// worker, an upstream closing idle ones, max_connections, and Envoy's answers to failed upstreams.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::support::{self, free_port, http1, plain_bootstrap, Proxy, Silent, Upstream};

const WAIT: Duration = Duration::from_secs(20);
const RESET_BEFORE_HEADERS: &str =
    "upstream connect error or disconnect/reset before headers. reset reason: connection failure";

fn metric(proxy: &Proxy, name: &str) -> String {
    let page = proxy.prometheus();
    let prefix = format!("{name}{{envoy_cluster_name=\"backend\"}} ");
    page.lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .unwrap_or_else(|| panic!("no {name} for backend on the page:\n{page}"))
        .to_string()
}

#[test]
fn a_listener_with_no_wasm_filter_passes_requests_through_as_envoys_connection_manager_does() {
    let web = Upstream::http("web");
    let proxy = Proxy::start_yaml(&plain_bootstrap("", ""), &[("backend", &web)], &[]);
    support::post_as_envoy_sends_it(proxy.ingress(), &web);
    // A client's own request id is kept.
    let r = http1(proxy.ingress(), "GET", "/", &[("x-request-id", "client-id")], b"");
    assert_eq!(r.status, 200);
    assert_eq!(web.last().header("x-request-id").as_deref(), Some("client-id"));
    // No host: Envoy's 400, the upstream never asked.
    let before = web.count();
    let mut stream = std::net::TcpStream::connect(proxy.ingress()).expect("connect");
    std::io::Write::write_all(&mut stream, b"GET / HTTP/1.0\r\n\r\n").expect("write");
    let mut raw = Vec::new();
    stream.set_read_timeout(Some(WAIT)).expect("timeout");
    std::io::Read::read_to_end(&mut stream, &mut raw).expect("read");
    assert!(raw.starts_with(b"HTTP/1.0 400") || raw.starts_with(b"HTTP/1.1 400"), "{}", String::from_utf8_lossy(&raw));
    assert_eq!(web.count(), before);
    // h2c, and bodies streamed both ways.
    assert_eq!(support::h2c_get(proxy.ingress(), "/h2"), (200, b"web GET /h2 ".to_vec()));
    const N: u64 = 8 << 20;
    let r = support::upload(proxy.ingress(), "/count", &[], N);
    assert_eq!(String::from_utf8_lossy(&r.body), format!("{N} {}", support::pattern_sum(N)), "{r:?}");
    let (r, n, sum) = support::download(proxy.ingress(), &format!("/bytes?n={N}"), &[]);
    assert_eq!((r.status, n, sum), (200, N, support::pattern_sum(N)));
}

#[test]
fn requests_reuse_the_workers_upstream_connection() {
    let web = Upstream::http("web");
    let proxy = Proxy::start_yaml(&plain_bootstrap("", ""), &[("backend", &web)], &["--concurrency=1"]);
    for i in 0..10 {
        let r = http1(proxy.ingress(), "GET", &format!("/n{i}"), &[], b"");
        assert_eq!((r.status, r.body), (200, format!("web GET /n{i} ").into_bytes()));
    }
    assert_eq!(web.connections(), 1, "ten requests one after another, one upstream connection");
    assert_eq!(metric(&proxy, "envoy_cluster_upstream_cx_total"), "1");
    assert_eq!(metric(&proxy, "envoy_cluster_upstream_cx_active"), "1");
}

#[test]
fn an_upstream_that_closes_idle_connections_costs_no_request() {
    let web = Upstream::closing_after_each_response("web");
    let proxy = Proxy::start_yaml(&plain_bootstrap("", ""), &[("backend", &web)], &["--concurrency=1"]);
    for _ in 0..10 {
        let r = http1(proxy.ingress(), "GET", "/", &[], b"");
        assert_eq!((r.status, r.body.as_slice()), (200, &b"web"[..]), "{r:?}");
    }
    assert_eq!(web.connections(), 10, "each request found the last connection closed and opened another");
    assert_eq!(metric(&proxy, "envoy_cluster_upstream_cx_total"), "10");
}

#[test]
fn max_connections_caps_upstream_connections_and_the_requests_over_it_wait_for_one() {
    let web = Upstream::http("web");
    let yaml = plain_bootstrap("", "circuit_breakers: { thresholds: [ { max_connections: 1 } ] },");
    let proxy = Proxy::start_yaml(&yaml, &[("backend", &web)], &["--concurrency=1"]);
    let ingress = proxy.ingress();
    let (tx, rx) = mpsc::channel();
    for _ in 0..4 {
        let tx = tx.clone();
        std::thread::spawn(move || tx.send(http1(ingress, "GET", "/hold", &[], b"")));
    }
    web.wait_for_requests(1);
    // The three others are queued (Envoy's upstream_cx_overflow), not sent on new connections.
    proxy.wait_for_metric("envoy_cluster_upstream_cx_overflow{envoy_cluster_name=\"backend\"} 3");
    assert_eq!(web.count(), 1);
    web.release();
    for _ in 0..4 {
        let r = rx.recv_timeout(WAIT).expect("every request is answered");
        assert_eq!(r.status, 200, "{r:?}");
    }
    assert_eq!(web.count(), 4);
    assert_eq!(web.connections(), 1, "one after another on the one connection");
}

#[test]
fn a_refused_connection_is_envoys_503_and_a_silent_endpoint_ends_at_the_clusters_connect_timeout() {
    let refused = format!("--cluster=backend=127.0.0.1:{}", free_port());
    let proxy = Proxy::start_yaml(&plain_bootstrap("", ""), &[], &[refused.as_str()]);
    let r = http1(proxy.ingress(), "GET", "/", &[], b"");
    assert_eq!((r.status, String::from_utf8_lossy(&r.body).as_ref()), (503, RESET_BEFORE_HEADERS));
    assert_eq!(metric(&proxy, "envoy_cluster_upstream_cx_connect_fail"), "1");
    assert_eq!(metric(&proxy, "envoy_cluster_upstream_cx_active"), "0");

    let silent = Silent::new();
    let to = format!("--cluster=backend={}", silent.addr);
    let proxy = Proxy::start_yaml(&plain_bootstrap("", "connect_timeout: 0.25s,"), &[], &[to.as_str()]);
    let started = Instant::now();
    let r = http1(proxy.ingress(), "GET", "/", &[], b"");
    let took = started.elapsed();
    assert_eq!((r.status, String::from_utf8_lossy(&r.body).as_ref()), (503, RESET_BEFORE_HEADERS));
    // The cluster's 0.25 s, not Envoy's 5 s default nor the route's 15 s.
    assert!(took >= Duration::from_millis(250) && took < Duration::from_secs(3), "answered after {took:?}");
    assert_eq!(metric(&proxy, "envoy_cluster_upstream_cx_connect_timeout"), "1");
    assert_eq!(metric(&proxy, "envoy_cluster_upstream_cx_connect_fail"), "1");
}

#[test]
fn an_upstream_slower_than_the_route_timeout_is_envoys_504_and_its_connection_is_not_reused() {
    let web = Upstream::http("web");
    let proxy = Proxy::start_yaml(&plain_bootstrap("timeout: 0.3s", ""), &[("backend", &web)], &["--concurrency=1"]);
    let r = http1(proxy.ingress(), "GET", "/hold", &[], b"");
    assert_eq!((r.status, String::from_utf8_lossy(&r.body).as_ref()), (504, "upstream request timeout"));
    assert_eq!(metric(&proxy, "envoy_cluster_upstream_rq_timeout"), "1");
    web.release();
    // The connection the late response was due on is closed, not lent to the next request.
    let r = http1(proxy.ingress(), "GET", "/after", &[], b"");
    assert_eq!((r.status, r.body), (200, b"web GET /after ".to_vec()));
    assert_eq!(web.connections(), 2);
}

#[test]
fn a_route_timeout_of_zero_is_no_timeout_as_in_envoy() {
    let web = Upstream::http("web");
    let proxy = Proxy::start_yaml(&plain_bootstrap("timeout: 0s", ""), &[("backend", &web)], &[]);
    let r = http1(proxy.ingress(), "GET", "/slow?ms=300", &[], b"");
    assert_eq!((r.status, r.body), (200, b"web GET /slow?ms=300 ".to_vec()));
    assert_eq!(web.last().header("x-envoy-expected-rq-timeout-ms"), None, "no timeout, no header");
    assert_eq!(metric(&proxy, "envoy_cluster_upstream_rq_timeout"), "0");
}
