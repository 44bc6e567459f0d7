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
