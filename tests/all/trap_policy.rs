//! A trap in a stream callback is answered in that same step, as Envoy does: proxy-wasm-cpp-host
//! checks for failure right after each callback (`src/context.cc`, `CHECK_FAIL_HTTP`), and
//! Envoy's `Context::failStream` (`source/extensions/common/wasm/context.cc`) sends a local 503
//! with details `wasm_fail_stream` and gRPC status Unavailable; fail-open returns Continue.

use std::time::Duration;

use ebb_harness::{Clock, FailurePolicy, LogLevel, ProxyOptions, Step};
use serde_json::Value;

use crate::util;

fn proxy(policy: FailurePolicy) -> ebb_harness::Proxy {
    util::probe_with(ProxyOptions {
        workers: 1,
        failure_policy: policy,
        log_level: LogLevel::Trace,
        ..ProxyOptions::default()
    })
}

fn grpc_request(commands: &str) -> Vec<(String, String)> {
    let mut headers = util::request(commands);
    headers[0].1 = "POST".into();
    headers.push(("content-type".into(), "application/grpc".into()));
    headers
}

#[test]
fn fail_closed_answers_the_trapping_stream_with_a_local_503_in_the_same_step() {
    let mut proxy = proxy(FailurePolicy::FailClosed);
    let mut http = proxy.worker(0).expect("worker").http();
    let step = http.request_headers(&util::request("panic"), true);
    assert!(matches!(step, Step::Failed(_)), "the step reports the trap: {step:?}");
    let reply = http.local_reply().expect("answered in the same step");
    assert_eq!((reply.status, reply.details.as_str()), (503, "wasm_fail_stream"));
    let client = http.client_response().expect("the client got the 503");
    assert!(http.upstream_request().is_none(), "the upstream is never reached");
    http.finish().expect("finish");
    assert_eq!(client.headers.get(b":status"), Some(&b"503"[..]));
    assert_eq!(client.headers.get(b"grpc-status"), None, "not a gRPC request: no grpc-status");
}

#[test]
fn fail_closed_answers_a_grpc_request_with_unavailable() {
    let mut proxy = proxy(FailurePolicy::FailClosed);
    let mut http = proxy.worker(0).expect("worker").http();
    assert!(matches!(http.request_headers(&grpc_request("panic"), true), Step::Failed(_)));
    let client = http.client_response().expect("the client got a trailers-only gRPC response");
    http.finish().expect("finish");
    assert_eq!(client.headers.get(b":status"), Some(&b"200"[..]));
    assert_eq!(client.headers.get(b"content-type"), Some(&b"application/grpc"[..]));
    assert_eq!(client.headers.get(b"grpc-status"), Some(&b"14"[..]));
}

#[test]
fn fail_open_continues_the_trapping_stream_as_if_the_callback_returned_continue() {
    let mut proxy = proxy(FailurePolicy::FailOpen);
    let mut http = proxy.worker(0).expect("worker").http();
    assert!(matches!(http.request_headers(&util::request("panic"), true), Step::Failed(_)));
    assert!(http.local_reply().is_none());
    let up = http.upstream_request().expect("the request goes on to the upstream");
    assert_eq!(up.headers.get(b":path"), Some(&b"/probe?x=1"[..]));
    assert!(matches!(http.response_headers(&[(":status", "200")], true), Step::Continue));
    let client = http.client_response().expect("the upstream's response reaches the client");
    http.finish().expect("finish");
    assert_eq!(client.headers.get(b":status"), Some(&b"200"[..]));
}

fn ebb_json(args: &[&str]) -> (i32, Value) {
    let out = std::process::Command::new(util::ebb_binary()).args(args).output().expect("run ebb");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let v = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!("ebb {args:?}: not JSON ({e}):\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr))
    });
    (out.status.code().unwrap_or(-1), v)
}

#[test]
fn ebb_request_shows_what_fail_open_changes() {
    let probe = util::filter("probe");
    let p = probe.to_str().expect("utf-8 path");
    let base = ["request", "--plugin", p, "--json", "-H", "x-probe: panic", "--response-body", "from upstream"];
    let (code, closed) = ebb_json(&base);
    assert_eq!(code, 1, "{closed:#}");
    assert_eq!(closed["response"]["status"], 503, "{closed:#}");
    assert_eq!(closed["local_reply"]["details"], "wasm_fail_stream", "{closed:#}");
    assert_eq!(closed["upstream"], Value::Null, "{closed:#}");

    let (code, open) = ebb_json(&[&base[..], &["--fail-open"]].concat());
    assert_eq!(code, 1, "the filter still failed: {open:#}");
    assert!(open["error"].as_str().is_some_and(|e| e.contains("panic") || e.contains("unreachable")), "{open:#}");
    assert_ne!(open["upstream"], Value::Null, "{open:#}");
    assert_eq!(open["response"]["status"], 200, "{open:#}");
    assert_eq!(open["response"]["body"], "from upstream", "{open:#}");
}

#[test]
fn ebb_request_takes_the_callback_deadline() {
    let probe = util::filter("probe");
    let p = probe.to_str().expect("utf-8 path");
    let args = ["request", "--plugin", p, "--json", "-H", "x-probe: loop", "--callback-deadline", "2500ms"];
    let clock = Clock::real();
    let started = clock.now_ns();
    let (code, v) = ebb_json(&args);
    let took = Duration::from_nanos(clock.now_ns().saturating_sub(started));
    assert_eq!(code, 1, "{v:#}");
    assert!(v["error"].as_str().is_some_and(|e| e.contains("exceeded its deadline")), "{v:#}");
    assert!(took >= Duration::from_millis(2400), "cut after {took:?}, not at the 2.5 s given (default 1 s)");
}
