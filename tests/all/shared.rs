//! Shared data (cpp-host CAS rules, one namespace across a proxy's VMs) and shared queues
//! (last registrant is notified, after the step that enqueued).

use std::time::Duration;

use ebb_harness::Thread;

use crate::util::{self, result_of};

#[test]
fn cas_increments_from_every_vm_add_up() {
    let mut proxy = util::probe("tick=100;shared_tick=hits", 2);
    assert!(proxy.advance(Duration::from_millis(100)).is_empty());
    let (value, cas) = proxy.shared_data(b"hits").expect("written");
    assert_eq!(value, b"3", "main and two workers each added one");
    assert_ne!(cas, 0, "CAS values are never 0");
}

#[test]
fn creation_ignores_cas_and_a_stale_cas_is_a_mismatch() {
    let mut proxy = util::probe("", 1);
    util::exchange(&mut proxy, 0, "shared-set:k=v1@777");
    assert_eq!(result_of(&proxy, "shared-set:k=v1@777"), "Ok(())", "a set on a missing key ignores cas");
    let (_, cas) = proxy.shared_data(b"k").expect("created");
    let stale = format!("shared-set:k=v2@{}", cas.wrapping_add(100));
    util::exchange(&mut proxy, 0, &stale);
    assert_eq!(result_of(&proxy, &stale), "Err(CasMismatch)");
    let fresh = format!("shared-set:k=v3@{cas}");
    util::exchange(&mut proxy, 0, &fresh);
    assert_eq!(result_of(&proxy, &fresh), "Ok(())");
    let (value, cas2) = proxy.shared_data(b"k").expect("set");
    assert_eq!(value, b"v3");
    assert_ne!(cas2, cas);
    util::exchange(&mut proxy, 0, "shared-get:missing");
    assert_eq!(result_of(&proxy, "shared-get:missing"), "None cas=None");
}

#[test]
fn the_last_registrant_gets_on_queue_ready_after_the_enqueueing_step() {
    let mut proxy = util::probe("queue=jobs", 2);
    util::exchange(&mut proxy, 0, "enqueue:jobs=one");
    assert_eq!(result_of(&proxy, "enqueue:jobs=one"), "Ok(())");
    let logs = proxy.logs();
    let ready: Vec<_> = logs.iter().filter(|l| l.message.starts_with("on_queue_ready")).collect();
    assert_eq!(ready.len(), 1, "{logs:#?}");
    assert_eq!(ready[0].thread, Thread::Worker(1), "worker 1 registered last");
    assert_eq!(ready[0].message, "on_queue_ready queue=1 item=one");
    assert_eq!(proxy.queue_depth("jobs"), Some(0), "dequeued by the registrant");
    let enq = logs.iter().position(|l| l.message == "probe enqueue:jobs=one => Ok(())").expect("enqueued");
    let got = logs.iter().position(|l| l.message.starts_with("on_queue_ready")).expect("ready");
    assert!(enq < got);
}
