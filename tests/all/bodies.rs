//! Bodies: Pause in a body callback buffers (later callbacks see the cumulative size),
//! `set_buffer_bytes` replaces, and a pause at headers holds the body without body callbacks.

use ebb_harness::Step;

use crate::util::{self, messages};

#[test]
fn paused_body_chunks_accumulate_and_can_be_rewritten() {
    let mut proxy = util::probe("", 1);
    let mut http = proxy.worker(0).expect("worker").http();
    assert!(matches!(http.request_headers(&util::request("buffer-body"), false), Step::Continue));
    assert!(matches!(http.request_body(b"hello ", false), Step::Pause));
    assert!(matches!(http.request_body(b"world", true), Step::Continue));
    let up = http.upstream_request().expect("upstream");
    let ctx = http.id().context;
    http.finish().expect("finish");
    assert_eq!(up.body, b"[hello world]");
    assert!(up.complete);
    let logs = messages(&proxy);
    assert!(logs.contains(&format!("on_request_body id={ctx} size=6 eos=false")), "{logs:?}");
    assert!(logs.contains(&format!("on_request_body id={ctx} size=11 eos=true")), "cumulative: {logs:?}");
}

#[test]
fn a_pause_at_headers_holds_the_body_without_calling_the_filter() {
    let mut proxy = util::probe("", 1);
    let mut http = proxy.worker(0).expect("worker").http();
    assert!(matches!(http.request_headers(&util::request("pause"), false), Step::Pause));
    assert!(matches!(http.request_body(b"held", true), Step::Pause));
    assert!(http.upstream_request().is_none(), "nothing reached the upstream");
    let ctx = http.id().context;
    http.finish().expect("finish");
    let logs = messages(&proxy);
    assert!(!logs.iter().any(|l| l.starts_with(&format!("on_request_body id={ctx}"))), "{logs:?}");
}
