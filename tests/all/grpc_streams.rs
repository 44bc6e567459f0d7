//! proxy_grpc_stream / proxy_grpc_send / proxy_grpc_close / proxy_grpc_cancel: tokens, what
//! the filter sends, half-close, the remote side driven by the caller (callbacks in order,
//! close status through get_status), Envoy's status codes, and cancellation.

use ebb_harness::{CallAnswer, CallId, CallKind, GrpcStreamEvent, HeaderMap, PendingCall, Proxy, ProxyOptions, Step};

use crate::util::{self, check, messages, result_of};

fn auth_proxy() -> Proxy {
    util::probe_with(ProxyOptions {
        clusters: vec!["auth".into()],
        log_level: ebb_harness::LogLevel::Trace,
        ..ProxyOptions::default()
    })
}

/// Runs request headers with `commands` on worker 0 and leaves the exchange open.
fn open(proxy: &mut Proxy, commands: &str) -> (ebb_harness::StreamId, Step) {
    let mut http = proxy.worker(0).expect("worker").http();
    let step = http.request_headers(&util::request(commands), true);
    (http.id(), step)
}

/// The only pending call, which must be a gRPC stream.
fn the_stream(proxy: &Proxy) -> PendingCall {
    let calls = proxy.pending_calls();
    check(proxy, calls.len() == 1, &format!("one pending call expected, got {calls:#?}"));
    let call = calls.into_iter().next().expect("one call");
    assert!(matches!(call.kind, CallKind::GrpcStream { .. }), "{call:#?}");
    call
}

fn map(pairs: &[(&str, &str)]) -> HeaderMap {
    HeaderMap::from_pairs(pairs)
}

fn event(proxy: &mut Proxy, id: CallId, e: GrpcStreamEvent) {
    proxy.grpc_stream_event(id, e).unwrap_or_else(|err| panic!("event refused: {err}\n{:#?}", messages(proxy)));
}

/// Log lines the probe wrote from the stream callbacks, in order.
fn stream_callbacks(proxy: &Proxy) -> Vec<String> {
    messages(proxy).into_iter().filter(|m| m.starts_with("on_grpc_stream_")).collect()
}

fn sent(call: &PendingCall) -> Vec<String> {
    call.sent.iter().map(|m| String::from_utf8_lossy(m).into_owned()).collect()
}

#[test]
fn a_stream_is_recorded_with_its_service_metadata_and_a_stream_token() {
    let mut proxy = auth_proxy();
    let (_, step) = open(&mut proxy, "stream:auth");
    assert!(matches!(step, Step::Continue), "opening a stream does not pause: {step:?}");
    assert_eq!(result_of(&proxy, "stream:auth"), "Ok(6)", "cpp-host: first stream token of a VM is 6 (4k + 2)");
    let call = the_stream(&proxy);
    assert_eq!(call.kind, CallKind::GrpcStream { service: "probe.Log".into(), method: "Push".into() });
    assert_eq!(call.cluster, "auth");
    assert_eq!(call.headers.get(b"x-md"), Some(&b"1"[..]), "initial metadata");
    assert_eq!(call.deadline_ns, None, "streams have no timeout");
    assert!(call.sent.is_empty() && !call.local_closed);

    // Tokens count per VM and per kind: the next stream on this VM is 10, a unary call is
    // still 1, and another worker starts again at 6.
    open(&mut proxy, "stream:auth,grpc:auth");
    assert_eq!(result_of(&proxy, "stream:auth"), "Ok(10)");
    assert_eq!(result_of(&proxy, "grpc:auth"), "Ok(5)");
    let mut two =
        util::probe_with(ProxyOptions { clusters: vec!["auth".into()], workers: 2, ..ProxyOptions::default() });
    two.worker(1).expect("worker 1").http().request_headers(&util::request("stream:auth"), true);
    assert_eq!(result_of(&two, "stream:auth"), "Ok(6)");
}

#[test]
fn sends_are_recorded_in_order_and_end_stream_half_closes() {
    let mut proxy = auth_proxy();
    open(&mut proxy, "stream:auth,send:one,send:,send-end:three,send:four");
    let call = the_stream(&proxy);
    assert_eq!(sent(&call), ["one", "", "three"], "an empty message is a message; nothing after end_stream");
    assert!(call.local_closed, "end_stream half-closed the filter's side");
    // Envoy's async stream drops sends after the local end and the hostcall still says OK.
    assert_eq!(result_of(&proxy, "send:four"), "Ok(())");
    assert_eq!(result_of(&proxy, "send-end:three"), "Ok(())");
}

#[test]
fn the_remote_side_is_delivered_in_order_and_close_reports_its_status() {
    let mut proxy = auth_proxy();
    open(&mut proxy, "stream:auth,send:hello");
    let id = the_stream(&proxy).id;
    event(&mut proxy, id, GrpcStreamEvent::InitialMetadata(map(&[("x-init", "1")])));
    event(&mut proxy, id, GrpcStreamEvent::Message(b"m1".to_vec()));
    event(&mut proxy, id, GrpcStreamEvent::Message(b"m2".to_vec()));
    assert!(proxy.pending_call(id).is_some(), "still open until the remote side closes");
    event(&mut proxy, id, GrpcStreamEvent::TrailingMetadata(map(&[("x-trail", "2"), ("x-more", "3")])));
    event(&mut proxy, id, GrpcStreamEvent::Close { status: 7, message: "denied".into() });
    assert_eq!(
        stream_callbacks(&proxy),
        [
            "on_grpc_stream_initial_metadata id=2 token=6 n=1 metadata=x-init=1",
            "on_grpc_stream_message id=2 token=6 size=2 message=m1",
            "on_grpc_stream_message id=2 token=6 size=2 message=m2",
            "on_grpc_stream_trailing_metadata id=2 token=6 n=2 metadata=x-trail=2|x-more=3",
            "on_grpc_stream_close id=2 token=6 status=7 get_status=(7, Some(\"denied\"))",
        ],
        "callbacks in order, on the request's context (id 2), with what get_grpc_stream_* return"
    );
    assert!(proxy.pending_calls().is_empty(), "closed streams are no longer pending");
    let after = proxy.grpc_stream_event(id, GrpcStreamEvent::Message(b"late".to_vec()));
    assert!(after.is_err(), "no events after close: {after:?}");
}

#[test]
fn events_out_of_grpc_order_are_refused_without_reaching_the_filter() {
    let mut proxy = auth_proxy();
    open(&mut proxy, "stream:auth");
    let id = the_stream(&proxy).id;
    assert!(proxy.grpc_stream_event(id, GrpcStreamEvent::Message(b"x".to_vec())).is_err(), "message first");
    event(&mut proxy, id, GrpcStreamEvent::InitialMetadata(HeaderMap::new()));
    assert!(proxy.grpc_stream_event(id, GrpcStreamEvent::InitialMetadata(HeaderMap::new())).is_err(), "twice");
    event(&mut proxy, id, GrpcStreamEvent::TrailingMetadata(HeaderMap::new()));
    assert!(proxy.grpc_stream_event(id, GrpcStreamEvent::Message(b"x".to_vec())).is_err(), "after trailers");
    assert_eq!(stream_callbacks(&proxy).len(), 2, "{:#?}", stream_callbacks(&proxy));

    // A unary call is not a stream.
    open(&mut proxy, "grpc:auth");
    let unary = proxy.pending_calls().into_iter().find(|c| matches!(c.kind, CallKind::Grpc { .. })).expect("unary");
    assert!(proxy.grpc_stream_event(unary.id, GrpcStreamEvent::InitialMetadata(HeaderMap::new())).is_err());
}

#[test]
fn close_half_closes_and_the_remote_side_still_answers() {
    let mut proxy = auth_proxy();
    let (id, step) = open(&mut proxy, "stream-wait:auth,send:a,stream-close,send:b");
    assert!(matches!(step, Step::Pause));
    assert_eq!(result_of(&proxy, "stream-close"), "Ok(())");
    assert_eq!(result_of(&proxy, "send:b"), "Ok(())", "dropped after the local close, still OK");
    let call = the_stream(&proxy);
    assert_eq!(sent(&call), ["a"]);
    assert!(call.local_closed);
    event(&mut proxy, call.id, GrpcStreamEvent::InitialMetadata(HeaderMap::new()));
    event(&mut proxy, call.id, GrpcStreamEvent::Message(b"ack".to_vec()));
    event(&mut proxy, call.id, GrpcStreamEvent::Close { status: 0, message: String::new() });
    let callbacks = stream_callbacks(&proxy);
    assert_eq!(callbacks.len(), 3, "{callbacks:#?}");
    assert_eq!(callbacks[2], "on_grpc_stream_close id=2 token=6 status=0 get_status=(0, None)");
    // The probe resumes the request it paused once the stream closes with OK.
    let mut http = proxy.http_stream(id).expect("open");
    assert!(matches!(http.resume(), Step::Continue));
    http.finish().expect("finish");
    // Closed on both sides: the handle is gone.
    util::exchange(&mut proxy, 0, "grpc-send:6,grpc-close:6");
    assert_eq!(result_of(&proxy, "grpc-send:6"), "status=1");
    assert_eq!(result_of(&proxy, "grpc-close:6"), "status=1");
}

#[test]
fn a_remote_close_keeps_the_handle_until_the_filter_closes_it() {
    let mut proxy = auth_proxy();
    open(&mut proxy, "stream:auth,send-end:last");
    let id = the_stream(&proxy).id;
    event(&mut proxy, id, GrpcStreamEvent::Close { status: 13, message: "boom".into() });
    check(&proxy, proxy.pending_calls().is_empty(), "no longer pending after close");
    // Envoy releases the handle at the remote close only if the filter had called close (a
    // send with end_stream is not enough): until then sends answer OK and go nowhere.
    open(&mut proxy, "grpc-send:6,grpc-close:6,grpc-cancel:6");
    assert_eq!(result_of(&proxy, "grpc-send:6"), "status=0");
    assert_eq!(result_of(&proxy, "grpc-close:6"), "status=0");
    assert_eq!(result_of(&proxy, "grpc-cancel:6"), "status=1", "released by the close");
}

#[test]
fn unknown_tokens_are_not_found_and_tokens_of_other_kinds_are_bad_arguments() {
    let mut proxy = auth_proxy();
    util::exchange(&mut proxy, 0, "grpc-send:10,grpc-close:14,grpc-cancel:18");
    assert_eq!(result_of(&proxy, "grpc-send:10"), "status=1");
    assert_eq!(result_of(&proxy, "grpc-close:14"), "status=1");
    assert_eq!(result_of(&proxy, "grpc-cancel:18"), "status=1");
    // Envoy: sends only go to streams; close/cancel take gRPC calls and streams, not HTTP calls.
    util::exchange(&mut proxy, 0, "grpc-send:5,grpc-close:4,grpc-cancel:8");
    assert_eq!(result_of(&proxy, "grpc-send:5"), "status=2");
    assert_eq!(result_of(&proxy, "grpc-close:4"), "status=2");
    assert_eq!(result_of(&proxy, "grpc-cancel:8"), "status=2");
}

#[test]
fn cancel_drops_the_stream_without_callbacks() {
    let mut proxy = auth_proxy();
    open(&mut proxy, "stream:auth,send:a,stream-cancel,send:b,stream-close");
    assert_eq!(result_of(&proxy, "stream-cancel"), "Ok(())");
    assert_eq!(result_of(&proxy, "send:b"), "Err(NotFound)");
    assert_eq!(result_of(&proxy, "stream-close"), "Err(NotFound)");
    assert!(proxy.pending_calls().is_empty());
    assert!(stream_callbacks(&proxy).is_empty(), "a reset stream calls nothing back");
}

#[test]
fn a_stream_of_a_finished_request_is_cancelled() {
    let mut proxy = auth_proxy();
    util::exchange(&mut proxy, 0, "stream:auth,send:a");
    assert!(proxy.pending_calls().is_empty(), "finishing the request cancelled its stream");
    util::exchange(&mut proxy, 0, "grpc-send:6");
    assert_eq!(result_of(&proxy, "grpc-send:6"), "status=1");
    assert!(stream_callbacks(&proxy).is_empty());

    // The same once the remote side had closed it: the handle goes with the request.
    let (id, _) = open(&mut proxy, "stream:auth");
    let call = the_stream(&proxy).id;
    event(&mut proxy, call, GrpcStreamEvent::Close { status: 0, message: String::new() });
    proxy.http_stream(id).expect("open").finish().expect("finish");
    util::exchange(&mut proxy, 0, "grpc-close:10");
    assert_eq!(result_of(&proxy, "grpc-close:10"), "status=1");
}

#[test]
fn unknown_clusters_are_refused_with_parse_failure() {
    let mut proxy = auth_proxy();
    util::exchange(&mut proxy, 0, "stream:nowhere");
    assert_eq!(result_of(&proxy, "stream:nowhere"), "Err(ParseFailure)");
    assert!(proxy.pending_calls().is_empty());
}

#[test]
fn a_filter_may_send_from_a_stream_callback() {
    let mut proxy = auth_proxy();
    open(&mut proxy, "stream:auth,send:ping");
    let id = the_stream(&proxy).id;
    event(&mut proxy, id, GrpcStreamEvent::InitialMetadata(HeaderMap::new()));
    event(&mut proxy, id, GrpcStreamEvent::Message(b"reply:pong".to_vec()));
    assert!(messages(&proxy).contains(&"probe reply pong => Ok(())".to_string()));
    assert_eq!(sent(&proxy.pending_call(id).expect("open")), ["ping", "pong"]);
}

#[test]
fn answer_call_plays_a_whole_exchange_on_a_stream() {
    let mut proxy = auth_proxy();
    let (id, step) = open(&mut proxy, "stream-wait:auth");
    assert!(matches!(step, Step::Pause));
    let call = the_stream(&proxy);
    let answer = CallAnswer::Grpc {
        status: 0,
        message: b"allowed".to_vec(),
        initial_metadata: map(&[("x-i", "1")]),
        trailing_metadata: HeaderMap::new(),
    };
    proxy.answer_call(call.id, answer).expect("answered");
    assert_eq!(
        stream_callbacks(&proxy),
        [
            "on_grpc_stream_initial_metadata id=2 token=6 n=1 metadata=x-i=1",
            "on_grpc_stream_message id=2 token=6 size=7 message=allowed",
            "on_grpc_stream_trailing_metadata id=2 token=6 n=0 metadata=",
            "on_grpc_stream_close id=2 token=6 status=0 get_status=(0, None)",
        ]
    );
    assert!(proxy.pending_calls().is_empty());
    assert!(matches!(proxy.http_stream(id).expect("open").resume(), Step::Continue));

    // A failure is a close with UNAVAILABLE; the probe denies the request it held.
    let mut proxy = auth_proxy();
    let (id, _) = open(&mut proxy, "stream-wait:auth");
    let call = the_stream(&proxy);
    proxy.answer_call(call.id, CallAnswer::Failure).expect("answered");
    assert_eq!(stream_callbacks(&proxy), ["on_grpc_stream_close id=2 token=6 status=14 get_status=(14, None)"]);
    let step = proxy.http_stream(id).expect("open").resume();
    assert!(matches!(&step, Step::LocalReply(r) if r.status == 403), "{step:?}");

    // An HTTP answer does not fit a stream.
    let mut proxy = auth_proxy();
    open(&mut proxy, "stream:auth");
    let call = the_stream(&proxy);
    assert!(proxy.answer_call(call.id, CallAnswer::http(200, &[] as &[(&str, &str)], "")).is_err());
}
