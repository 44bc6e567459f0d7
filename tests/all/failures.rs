//! Robustness: traps, infinite loops and memory blow-ups end in typed errors naming the
//! filter, the callback and the request; the VM is failed for good and later streams follow
//! the failure policy. The harness never hangs.

use std::time::Duration;

use ebb_harness::{FailureKind, FailurePolicy, HostError, Limits, LogLevel, ProxyOptions, Step, Thread};

use crate::util;

fn options(policy: FailurePolicy) -> ProxyOptions {
    ProxyOptions {
        workers: 2,
        failure_policy: policy,
        limits: Limits { memory_bytes: 32 << 20, callback_deadline: Duration::from_millis(200) },
        log_level: LogLevel::Trace,
        ..ProxyOptions::default()
    }
}

fn failure_of(step: Step) -> (FailureKind, String, HostError) {
    match step {
        Step::Failed(e @ HostError::Callback { kind, .. }) => (kind, e.to_string(), e),
        other => panic!("expected a callback failure, got {other:?}"),
    }
}

#[test]
fn a_panic_fails_the_vm_and_later_streams_fail_closed() {
    let mut proxy = util::probe_with(options(FailurePolicy::FailClosed));
    let (kind, text, _) = failure_of(util::exchange(&mut proxy, 0, "panic"));
    assert_eq!(kind, FailureKind::Trap);
    for part in ["ebb_testfilter_probe.wasm", "worker 0", "proxy_on_request_headers", "GET /probe?x=1"] {
        assert!(text.contains(part), "{part:?} missing from {text}");
    }
    let logs = util::messages(&proxy);
    assert!(logs.iter().any(|l| l.contains("probe was asked to panic")), "SDK panic hook logs: {logs:#?}");
    assert!(proxy.failure(Thread::Worker(0)).is_some());

    let step = util::exchange(&mut proxy, 0, "");
    assert!(matches!(&step, Step::LocalReply(r) if r.status == 503 && r.details == "wasm_fail_stream"), "{step:?}");
    assert!(matches!(util::exchange(&mut proxy, 1, ""), Step::Continue), "worker 1 is unaffected");
}

#[test]
fn fail_open_bypasses_a_failed_vm() {
    let mut proxy = util::probe_with(options(FailurePolicy::FailOpen));
    failure_of(util::exchange(&mut proxy, 0, "panic"));
    let mut http = proxy.worker(0).expect("worker").http();
    assert!(matches!(http.request_headers(&util::request("add:x-never=1"), true), Step::Continue));
    let up = http.upstream_request().expect("bypassed to the upstream");
    http.finish().expect("finish");
    assert_eq!(up.headers.get(b"x-never"), None, "the filter did not run");
}

#[test]
fn an_infinite_loop_is_cut_at_the_deadline() {
    let mut proxy = util::probe_with(options(FailurePolicy::FailClosed));
    let (kind, text, _) = failure_of(util::exchange(&mut proxy, 1, "loop"));
    assert_eq!(kind, FailureKind::Deadline, "{text}");
    assert!(text.contains("worker 1") && text.contains("proxy_on_request_headers"), "{text}");
}

#[test]
fn memory_growth_past_the_limit_is_reported_as_such() {
    let mut proxy = util::probe_with(options(FailurePolicy::FailClosed));
    let (kind, text, _) = failure_of(util::exchange(&mut proxy, 0, "oom"));
    assert_eq!(kind, FailureKind::MemoryLimit, "{text}");
}

/// FAIL_RELOAD with a 2 s backoff on a simulated clock.
fn reloading() -> ebb_harness::Proxy {
    util::probe_with(ProxyOptions {
        failure_policy: FailurePolicy::FailReload,
        reload_backoff: Duration::from_secs(2),
        ..options(FailurePolicy::FailReload)
    })
}

#[test]
fn fail_reload_gives_the_next_stream_a_fresh_vm_once_the_backoff_has_passed() {
    let mut proxy = reloading();
    proxy.advance(Duration::from_secs(5));
    failure_of(util::exchange(&mut proxy, 0, "panic"));
    assert!(proxy.failure(Thread::Worker(0)).is_some());
    let step = util::exchange(&mut proxy, 0, "add:x-a=1");
    assert!(matches!(&step, Step::Continue), "last load was 5 s ago: reloaded at once: {step:?}");
    assert!(proxy.failure(Thread::Worker(0)).is_none(), "the fresh VM is healthy");
    let logs = util::messages(&proxy);
    assert!(logs.iter().any(|l| l.contains("reloaded the Wasm VM")), "{logs:#?}");
    assert_eq!(
        logs.iter().filter(|l| l.starts_with("on_configure")).count(),
        4,
        "main + 2 workers at start, then worker 0 again: {logs:#?}"
    );
}

#[test]
fn fail_reload_fails_streams_closed_during_the_backoff() {
    let mut proxy = reloading();
    proxy.advance(Duration::from_secs(5));
    failure_of(util::exchange(&mut proxy, 0, "panic"));
    assert!(matches!(util::exchange(&mut proxy, 0, ""), Step::Continue), "reloaded at t=5s");
    proxy.advance(Duration::from_millis(500));
    failure_of(util::exchange(&mut proxy, 0, "panic"));
    let step = util::exchange(&mut proxy, 0, "");
    assert!(matches!(&step, Step::LocalReply(r) if r.status == 503 && r.details == "wasm_fail_stream"), "{step:?}");
    proxy.advance(Duration::from_millis(1500));
    assert!(matches!(util::exchange(&mut proxy, 0, ""), Step::Continue), "2 s after the last load");
}

#[test]
fn fail_reload_waits_for_the_failed_vms_open_streams() {
    let mut proxy = reloading();
    proxy.advance(Duration::from_secs(5));
    let open = {
        let mut http = proxy.worker(0).expect("worker").http();
        http.request_headers(&util::request(""), true);
        http.id()
    };
    failure_of(util::exchange(&mut proxy, 0, "panic"));
    let step = util::exchange(&mut proxy, 0, "");
    assert!(matches!(&step, Step::LocalReply(r) if r.status == 503), "a stream is still open: {step:?}");
    proxy.http_stream(open).expect("still open").finish().expect("finish");
    assert!(matches!(util::exchange(&mut proxy, 0, ""), Step::Continue), "reloaded once it finished");
    assert!(proxy.http_stream(open).is_none(), "the old stream's id does not name a new stream");
}
