//! Tick timers: one per VM (main and each worker), on the simulated clock, in a
//! deterministic order; no traffic needed.

use std::time::Duration;

use ebb_harness::Thread;

use crate::util;

#[test]
fn every_vm_ticks_on_the_simulated_clock_in_order() {
    let mut proxy = util::probe("tick=100", 2);
    let start = proxy.clock().now_ns();
    assert!(proxy.advance(Duration::from_millis(350)).is_empty());
    let ticks: Vec<(Thread, String)> =
        proxy.logs().into_iter().filter(|l| l.message.starts_with("on_tick")).map(|l| (l.thread, l.message)).collect();
    let mut expected = Vec::new();
    for n in 1..=3u64 {
        for t in [Thread::Main, Thread::Worker(0), Thread::Worker(1)] {
            expected.push((t, format!("on_tick root=1 now={}", start + n * 100_000_000)));
        }
    }
    assert_eq!(ticks, expected);
    assert_eq!(proxy.metric("probe.ticks").expect("counter").value, 9);
    assert_eq!(proxy.clock().now_ns(), start + 350_000_000);
}

#[test]
fn the_same_run_twice_gives_the_same_logs() {
    let run = || {
        let mut proxy = util::probe("tick=70;shared_tick=k", 2);
        proxy.advance(Duration::from_millis(500));
        util::exchange(&mut proxy, 1, "time,shared-get:k");
        proxy.logs()
    };
    assert_eq!(run(), run());
}
