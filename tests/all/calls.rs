//! proxy_http_call: dispatch to caller-answered clusters, pause and resume, answers,
//! failures ((11, "reset")), timeouts (504 on the clock), refusals (BAD_ARGUMENT),
//! and continue_stream(UPSTREAM) ⇒ UNIMPLEMENTED.

use std::time::Duration;

use ebb_harness::{CallAnswer, CallKind, Proxy, ProxyOptions, Step, StreamId};

use crate::util::{self, messages, result_of};

fn auth_proxy() -> ebb_harness::Proxy {
    util::probe_with(ProxyOptions {
        clusters: vec!["auth".into()],
        log_level: ebb_harness::LogLevel::Trace,
        ..ProxyOptions::default()
    })
}

/// A request on worker 0 whose filter calls `auth`, with that call answered by `answer`.
fn answered(answer: CallAnswer) -> (Proxy, StreamId) {
    let mut proxy = auth_proxy();
    let id = {
        let mut http = proxy.worker(0).expect("worker").http();
        http.request_headers(&util::request("call:auth"), true);
        http.id()
    };
    let call = proxy.pending_calls().remove(0);
    proxy.answer_call(call.id, answer).expect("answered");
    (proxy, id)
}

#[test]
fn a_paused_request_resumes_when_the_call_is_answered_200() {
    let mut proxy = auth_proxy();
    let id = {
        let mut http = proxy.worker(0).expect("worker").http();
        assert!(matches!(http.request_headers(&util::request("call:auth"), true), Step::Pause));
        http.id()
    };
    let calls = proxy.pending_calls();
    assert_eq!(calls.len(), 1);
    let call = &calls[0];
    assert_eq!((call.cluster.as_str(), &call.kind), ("auth", &CallKind::Http));
    assert_eq!(call.headers.get(b":path"), Some(&b"/check"[..]));
    assert_eq!(call.body, b"ping");
    assert!(call.deadline_ns.is_some(), "500 ms timeout");
    proxy.answer_call(call.id, CallAnswer::http(200, &[("x-a", "1")], "allowed")).expect("answered");
    let mut http = proxy.http_stream(id).expect("open");
    assert!(matches!(http.resume(), Step::Continue), "continue_stream resumed it");
    assert!(http.upstream_request().is_some());
    http.finish().expect("finish");
    assert_eq!(result_of(&proxy, "call:auth"), "Ok(4)", "first token of a VM is 4, as cpp-host pre-increments");
    assert!(messages(&proxy).contains(&"probe call answered status=200 body=allowed".to_string()));
}

#[test]
fn a_denying_answer_ends_in_the_filters_local_reply() {
    let (mut proxy, id) = answered(CallAnswer::http(403, &[] as &[(&str, &str)], "no"));
    let mut http = proxy.http_stream(id).expect("open");
    let step = http.resume();
    assert!(matches!(&step, Step::LocalReply(r) if r.status == 403), "{step:?}");
    assert!(http.upstream_request().is_none());
    http.finish().expect("finish");
}

#[test]
fn a_failed_call_reports_reset_through_get_status() {
    let (mut proxy, id) = answered(CallAnswer::Failure);
    let step = proxy.http_stream(id).expect("open").resume();
    assert!(matches!(&step, Step::LocalReply(r) if r.status == 503), "{step:?}");
    let logs = messages(&proxy);
    assert!(logs.iter().any(|l| l.contains("headers=0 body=0")), "{logs:#?}");
    assert!(logs.contains(&"probe call failed status=11 message=Some(\"reset\")".to_string()), "{logs:#?}");
}

#[test]
fn an_unanswered_call_times_out_on_the_clock_with_a_504() {
    let mut proxy = auth_proxy();
    let id = {
        let mut http = proxy.worker(0).expect("worker").http();
        http.request_headers(&util::request("call:auth"), true);
        http.id()
    };
    assert!(proxy.advance(Duration::from_millis(499)).is_empty());
    assert_eq!(proxy.pending_calls().len(), 1, "not yet");
    assert!(proxy.advance(Duration::from_millis(1)).is_empty());
    assert!(proxy.pending_calls().is_empty(), "timed out at 500 ms");
    let step = proxy.http_stream(id).expect("open").resume();
    assert!(matches!(&step, Step::LocalReply(r) if r.status == 403), "{step:?}");
    assert!(messages(&proxy).contains(&"probe call answered status=504 body=upstream request timeout".to_string()));
}

#[test]
fn unknown_clusters_and_incomplete_headers_are_refused() {
    let mut proxy = auth_proxy();
    assert!(matches!(util::exchange(&mut proxy, 0, "call:nowhere"), Step::Continue));
    assert_eq!(result_of(&proxy, "call:nowhere"), "Err(BadArgument)");
    util::exchange(&mut proxy, 0, "call-bad:auth");
    assert_eq!(result_of(&proxy, "call-bad:auth"), "Err(BadArgument)", "no :authority");
    assert!(proxy.pending_calls().is_empty());
}

#[test]
fn finishing_a_stream_cancels_its_calls() {
    let mut proxy = auth_proxy();
    let mut http = proxy.worker(0).expect("worker").http();
    http.request_headers(&util::request("call:auth"), true);
    http.finish().expect("finish");
    assert!(proxy.pending_calls().is_empty());
}

#[test]
fn continue_stream_upstream_is_unimplemented() {
    let mut proxy = util::probe("", 1);
    util::exchange(&mut proxy, 0, "continue-upstream");
    assert_eq!(result_of(&proxy, "continue-upstream"), "status=12");
}

#[test]
fn a_unary_grpc_call_is_dispatched_and_answered() {
    let mut proxy = auth_proxy();
    let id = {
        let mut http = proxy.worker(0).expect("worker").http();
        assert!(matches!(http.request_headers(&util::request("grpc:auth"), true), Step::Pause));
        http.id()
    };
    let call = proxy.pending_calls().remove(0);
    assert_eq!(call.kind, CallKind::Grpc { service: "probe.Auth".into(), method: "Check".into() });
    assert_eq!(call.body, b"req");
    assert_eq!(call.headers.get(b"x-md"), Some(&b"1"[..]));
    assert_eq!(result_of(&proxy, "grpc:auth"), "Ok(5)", "gRPC tokens are 4k + 1, the first 5");
    let answer = CallAnswer::Grpc {
        status: 0,
        message: b"allowed".to_vec(),
        initial_metadata: ebb_harness::HeaderMap::new(),
        trailing_metadata: ebb_harness::HeaderMap::new(),
    };
    proxy.answer_call(call.id, answer).expect("answered");
    assert!(matches!(proxy.http_stream(id).expect("open").resume(), Step::Continue));
    assert!(messages(&proxy).contains(&"on_grpc_call_response token=5 status=0 message=allowed".to_string()));

    // A gRPC error status closes the call: the filter denies.
    let id = {
        let mut http = proxy.worker(0).expect("worker").http();
        http.request_headers(&util::request("grpc:auth"), true);
        http.id()
    };
    let call = proxy.pending_calls().remove(0);
    let answer = CallAnswer::Grpc {
        status: 7,
        message: Vec::new(),
        initial_metadata: ebb_harness::HeaderMap::new(),
        trailing_metadata: ebb_harness::HeaderMap::new(),
    };
    proxy.answer_call(call.id, answer).expect("answered");
    let step = proxy.http_stream(id).expect("open").resume();
    assert!(matches!(&step, Step::LocalReply(r) if r.status == 403), "{step:?}");
}

#[test]
fn an_unanswered_grpc_call_times_out_as_unavailable() {
    let mut proxy = auth_proxy();
    let id = {
        let mut http = proxy.worker(0).expect("worker").http();
        http.request_headers(&util::request("grpc:auth"), true);
        http.id()
    };
    assert!(proxy.advance(Duration::from_millis(500)).is_empty());
    assert!(proxy.pending_calls().is_empty(), "timed out at 500 ms");
    let logs = messages(&proxy);
    assert!(logs.iter().any(|l| l.starts_with("on_grpc_call_response token=5 status=14")), "{logs:#?}");
    let step = proxy.http_stream(id).expect("open").resume();
    assert!(matches!(&step, Step::LocalReply(r) if r.status == 403), "{step:?}");
}
