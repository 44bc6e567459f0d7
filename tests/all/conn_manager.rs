//! What Envoy's HTTP connection manager and router do around the filter
//! (`ProxyOptions::connection_manager`, always on in `ebb request`), read from Envoy's sources:
//! `source/common/http/conn_manager_utility.cc` (`mutateRequestHeaders`, `cleanInternalHeaders`),
//! `source/common/http/conn_manager_impl.cc` (`ActiveStream::decodeHeaders`),
//! `source/common/http/header_map_impl.h` (`HeaderList::insert`: pseudo-headers in front) and
//! `source/common/router/router.cc` (`FilterUtility::finalTimeout`, `setTimeoutHeaders`).

use std::time::Duration;

use ebb_harness::{ConnectionManager, LogLevel, Proxy, ProxyOptions, Step};
use serde_json::Value;

use crate::util;

fn proxy(cm: ConnectionManager) -> Proxy {
    util::probe_with(ProxyOptions {
        log_level: LogLevel::Trace,
        connection_manager: Some(cm),
        ..ProxyOptions::default()
    })
}

/// The request curl sends to the SDK's http_headers example (`GET /hello`, Host, User-Agent,
/// Accept), as the HTTP/1.1 codec hands it over, plus the probe's command.
fn curl(probe: &str) -> Vec<(&'static str, String)> {
    vec![
        (":method", "GET".into()),
        (":path", "/hello".into()),
        ("Host", "localhost:10000".into()),
        ("User-Agent", "curl/7.81.0".into()),
        ("Accept", "*/*".into()),
        ("x-probe", probe.into()),
    ]
}

/// The SDK's http_headers example records, from a real Envoy, `:authority, :path, :method,
/// :scheme, user-agent, accept, x-forwarded-proto, x-request-id` (examples/http_headers/README.md):
/// Host turned into `:authority` as the HTTP/1.1 codec reads it, `:path` and `:method` when the
/// headers are complete, `:scheme` and `x-forwarded-proto` from `mutateRequestHeaders`, a UUID
/// `x-request-id` from the request ID extension, pseudo-headers kept in front by the header map.
#[test]
fn the_filter_sees_the_request_as_envoys_connection_manager_prepares_it() {
    let cm = ConnectionManager::default();
    let mut proxy = proxy(cm.clone());
    let mut http = proxy.worker(0).expect("worker").http();
    assert!(matches!(http.request_headers(&curl("pairs"), true), Step::Continue));
    http.finish().expect("finish");
    let id = cm.request_id(1);
    assert_eq!(
        util::result_of(&proxy, "pairs"),
        format!(
            ":authority=localhost:10000|:path=/hello|:method=GET|:scheme=http|user-agent=curl/7.81.0|accept=*/*|\
             x-probe=pairs|x-forwarded-proto=http|x-request-id={id}"
        )
    );
}

#[test]
fn request_ids_repeat_per_seed_and_differ_between_seeds_and_requests() {
    let ids = |seed: u64| {
        let mut proxy = proxy(ConnectionManager { seed, ..ConnectionManager::default() });
        (0..2)
            .map(|_| {
                util::exchange(&mut proxy, 0, "get:x-request-id");
                util::result_of(&proxy, "get:x-request-id")
            })
            .collect::<Vec<_>>()
    };
    let (a, again, other) = (ids(1), ids(1), ids(2));
    assert_eq!(a, again, "same seed, same ids");
    assert_ne!(a[0], a[1], "each request its own id");
    assert_ne!(a, other, "another seed, other ids");
    // A client's own id is kept (not an edge request: use_remote_address is false).
    let mut proxy = proxy(ConnectionManager::default());
    let mut headers = curl("get:x-request-id");
    headers.push(("x-request-id", "from-client".into()));
    let mut http = proxy.worker(0).expect("worker").http();
    http.request_headers(&headers, true);
    http.finish().expect("finish");
    assert_eq!(util::result_of(&proxy, "get:x-request-id"), r#"(0, Some("from-client"))"#);
}

/// RFC 9113 forbids a pseudo-header twice; Envoy refuses the header block in the codec
/// (`ServerConnectionImpl::sendProtocolError`: 400 "Bad Request", details `http1.codec_error`)
/// before any filter exists, so the filter never sees the request nor the reply.
#[test]
fn a_duplicated_pseudo_header_is_answered_400_before_the_filter_runs() {
    let mut proxy = proxy(ConnectionManager::default());
    let mut headers = curl("pairs");
    headers.push((":path", "/other".into()));
    let mut http = proxy.worker(0).expect("worker").http();
    let step = http.request_headers(&headers, true);
    let Step::LocalReply(reply) = step else { panic!("rejected before the filter: {step:?}") };
    assert_eq!((reply.status, reply.details.as_str()), (400, "http1.codec_error"));
    let client = http.client_response().expect("the client got the 400");
    assert!(http.upstream_request().is_none());
    http.finish().expect("finish");
    assert_eq!(client.headers.get(b":status"), Some(&b"400"[..]));
    assert_eq!(client.body, b"Bad Request");
    let logs = util::messages(&proxy);
    assert!(!logs.iter().any(|m| m.contains("on_request_headers") || m.contains("create_http_context")), "{logs:?}");

    // No Host at all: 400 missing_host_header (`decodeHeaders`, MissingHost).
    let mut http = proxy.worker(0).expect("worker").http();
    let step = http.request_headers(&[(":method", "GET"), (":path", "/")], true);
    http.finish().expect("finish");
    assert!(
        matches!(step, Step::LocalReply(ref r) if r.status == 400 && r.details == "missing_host_header"),
        "{step:?}"
    );
}

/// `cleanInternalHeaders`: a client may not set the router's timeouts (every request is external
/// with `use_remote_address: false` and no x-forwarded-for); hop-by-hop headers go too.
#[test]
fn a_client_cannot_set_envoys_internal_headers() {
    let mut proxy = proxy(ConnectionManager::default());
    let mut headers = curl("get:x-envoy-upstream-rq-timeout-ms,get:connection,get:x-forwarded-proto");
    headers.push(("x-envoy-upstream-rq-timeout-ms", "1".into()));
    headers.push(("connection", "keep-alive".into()));
    headers.push(("x-forwarded-proto", "https".into()));
    let mut http = proxy.worker(0).expect("worker").http();
    http.request_headers(&headers, true);
    let up = http.upstream_request().expect("forwarded");
    http.finish().expect("finish");
    assert_eq!(util::result_of(&proxy, "get:x-envoy-upstream-rq-timeout-ms"), "(1, None)");
    assert_eq!(util::result_of(&proxy, "get:connection"), "(1, None)");
    assert_eq!(util::result_of(&proxy, "get:x-forwarded-proto"), r#"(0, Some("https"))"#, "a trusted hop's is kept");
    assert_eq!(up.headers.get(b"x-envoy-expected-rq-timeout-ms"), Some(&b"15000"[..]), "the client's 1 ms is gone");
}

/// The router writes the timeout it enforces as `x-envoy-expected-rq-timeout-ms` (the route's,
/// 15 s by default); a filter's `x-envoy-upstream-rq-timeout-ms` replaces it and is consumed.
#[test]
fn the_upstream_gets_the_routers_expected_timeout() {
    let mut proxy = proxy(ConnectionManager::default());
    let mut http = proxy.worker(0).expect("worker").http();
    http.request_headers(&curl(""), true);
    let up = http.upstream_request().expect("forwarded");
    http.finish().expect("finish");
    assert_eq!(up.headers.get(b"x-envoy-expected-rq-timeout-ms"), Some(&b"15000"[..]));
    assert_eq!(up.headers.iter().next().map(|(k, _)| k), Some(&b":authority"[..]));

    let mut proxy = proxy_with_timeout(Duration::from_millis(2500));
    let mut http = proxy.worker(0).expect("worker").http();
    http.request_headers(&curl("add:x-envoy-upstream-rq-timeout-ms=700"), true);
    let up = http.upstream_request().expect("forwarded");
    http.finish().expect("finish");
    assert_eq!(up.headers.get(b"x-envoy-expected-rq-timeout-ms"), Some(&b"700"[..]));
    assert_eq!(up.headers.get(b"x-envoy-upstream-rq-timeout-ms"), None, "the router consumes it");
}

fn proxy_with_timeout(route_timeout: Duration) -> Proxy {
    proxy(ConnectionManager { route_timeout, ..ConnectionManager::default() })
}

fn ebb_json(args: &[&str]) -> Value {
    let probe = util::filter("probe");
    let out = std::process::Command::new(util::ebb_binary())
        .args(["request", "--plugin", probe.to_str().expect("utf-8 path"), "--json"])
        .args(args)
        .output()
        .expect("run ebb");
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}):\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr)))
}

fn header<'v>(message: &'v Value, name: &str) -> Option<&'v str> {
    message["headers"].as_array()?.iter().find(|p| p[0] == name).and_then(|p| p[1].as_str())
}

#[test]
fn ebb_request_shows_what_the_upstream_receives_from_envoy() {
    let v = ebb_json(&["--authority", "shop.example", "--path", "/cart", "-H", "user-agent: curl/8"]);
    let up = &v["upstream"];
    let names: Vec<&str> = up["headers"].as_array().expect("headers").iter().filter_map(|p| p[0].as_str()).collect();
    assert_eq!(
        names,
        [
            ":authority",
            ":path",
            ":method",
            ":scheme",
            "user-agent",
            "x-forwarded-proto",
            "x-request-id",
            "x-envoy-expected-rq-timeout-ms"
        ],
        "{v:#}"
    );
    assert_eq!(header(up, ":authority"), Some("shop.example"), "{v:#}");
    assert_eq!(header(up, "x-envoy-expected-rq-timeout-ms"), Some("15000"), "{v:#}");
    let id = header(up, "x-request-id").expect("x-request-id").to_owned();
    assert_eq!(header(&ebb_json(&["--authority", "shop.example"])["upstream"], "x-request-id"), Some(id.as_str()));
    let other = ebb_json(&["--seed", "9", "--route-timeout", "3s"]);
    assert_ne!(header(&other["upstream"], "x-request-id"), Some(id.as_str()), "{other:#}");
    assert_eq!(header(&other["upstream"], "x-envoy-expected-rq-timeout-ms"), Some("3000"), "{other:#}");

    let rejected = ebb_json(&["-H", ":method: POST"]);
    assert_eq!(rejected["response"]["status"], 400, "{rejected:#}");
    assert_eq!(rejected["local_reply"]["details"], "http1.codec_error", "{rejected:#}");
    assert_eq!(rejected["upstream"], Value::Null, "{rejected:#}");
}
