//! Local replies: deferred until the callback returns, then the filter's own response
//! callbacks run on them before the client gets them; the upstream is never reached.

use ebb_harness::Step;

use crate::util::{self, messages};

#[test]
fn a_local_reply_runs_through_the_filters_response_callbacks() {
    let mut proxy = util::probe("", 1);
    let mut http = proxy.worker(0).expect("worker").http();
    let step = http.request_headers(&util::request("local-reply:403"), true);
    let Step::LocalReply(reply) = step else {
        panic!("expected a local reply, got {step:?}");
    };
    assert_eq!(reply.status, 403);
    assert_eq!(reply.body, b"denied by probe");
    assert_eq!(reply.headers.get(b"x-local"), Some(&b"1"[..]));
    assert!(http.upstream_request().is_none());
    let client = http.client_response().expect("the client got the reply");
    let ctx = http.id().context;
    http.finish().expect("finish");
    assert_eq!(client.headers.get(b":status"), Some(&b"403"[..]));
    assert_eq!(client.headers.get(b"x-probe-seen"), Some(&b"1"[..]), "on_response_headers ran on it");
    assert_eq!(client.headers.get(b"content-length"), Some(&b"15"[..]));
    assert_eq!(client.body, b"denied by probe");
    let logs = messages(&proxy);
    let sent = logs.iter().position(|l| l == "probe local-reply:403 => sent").expect("sent");
    let seen = logs
        .iter()
        .position(|l| l == &format!("on_response_headers id={ctx} n=4 eos=false status=403"))
        .unwrap_or_else(|| panic!("{logs:#?}"));
    assert!(sent < seen, "the reply is deferred until the callback returned");
    assert!(logs.contains(&format!("on_response_body id={ctx} size=15 eos=true")), "{logs:#?}");
}

#[test]
fn a_local_reply_in_the_response_phase_replaces_the_upstream_response() {
    let mut proxy = util::probe("", 1);
    let mut http = proxy.worker(0).expect("worker").http();
    assert!(matches!(http.request_headers(&util::request("resp-local-reply:500"), true), Step::Continue));
    let step = http.response_headers(&[(":status", "200")], false);
    assert!(matches!(&step, Step::LocalReply(r) if r.status == 500), "{step:?}");
    let client = http.client_response().expect("client");
    http.finish().expect("finish");
    assert_eq!(client.headers.get(b":status"), Some(&b"500"[..]));
    assert_eq!(client.body, b"replaced by probe");
}

#[test]
fn close_stream_resets_the_exchange() {
    let mut proxy = util::probe("", 1);
    let mut http = proxy.worker(0).expect("worker").http();
    let step = http.request_headers(&util::request("close"), true);
    assert!(matches!(&step, Step::Closed { details } if details == "wasm_close_stream"), "{step:?}");
    http.finish().expect("finish");
}
