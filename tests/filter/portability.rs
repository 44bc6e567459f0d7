//! ebb.wasm written for the strictest host (issue 9): gauges only set, the timer armed once from
//! the root, refused hostcalls answered with a safe default and one log line, and exact
//! capacity across workers whatever the order of their shared-data writes.
//!
//! Every proxy here is built through `start`, so that a host profile can be applied in one place.

use std::time::Duration;

use ebb_harness::{Plugin, Proxy, Step};

use super::{complete, config, control, gauge, get, open, plugin, start, util};

/// ebb.wasm with the named imports renamed, so that the host answers every call to them with
/// UNIMPLEMENTED (its stub for hostcalls it does not provide): a host refusing those calls.
fn refusing(imports: &[&str]) -> Plugin {
    let path = util::ebb_wasm();
    let mut wasm = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    for name in imports {
        // An import entry: module name ("env", length-prefixed), then the field name.
        let mut entry = b"\x03env".to_vec();
        entry.push(u8::try_from(name.len()).expect("short name"));
        entry.extend_from_slice(name.as_bytes());
        let at = wasm
            .windows(entry.len())
            .position(|w| w == entry.as_slice())
            .unwrap_or_else(|| panic!("ebb.wasm does not import {name}"));
        wasm[at + entry.len() - 1] = b'~';
    }
    Plugin::from_bytes("ebb-refused", &wasm).expect("the patched module loads")
}

/// How many log lines contain `fragment`.
fn lines(proxy: &Proxy, fragment: &str) -> usize {
    proxy.logs().iter().filter(|l| l.message.contains(fragment)).count()
}

fn assert_no_vm_failed(proxy: &mut Proxy, workers: usize) {
    for w in 0..workers {
        let thread = proxy.worker(w).unwrap().thread();
        assert!(proxy.failure(thread).is_none(), "worker {w} failed: {:?}", proxy.failure(thread));
    }
}

#[test]
fn in_flight_is_the_whole_proxy_and_follows_requests_and_completions() {
    let mut p = start(&plugin(), &config(""), 2);
    let (a, _) = open(&mut p, 0, &get("web.example"));
    let (_b, _) = open(&mut p, 0, &get("web.example"));
    let (c, _) = open(&mut p, 1, &get("web.example"));
    p.advance(Duration::from_secs(1));
    assert_eq!(gauge(&p, "ebb.pool.web.in_flight"), 3, "two requests on worker 0, one on worker 1");
    assert_eq!(gauge(&p, "ebb.pool.web.requests_total"), 3);
    assert_eq!(gauge(&p, "ebb.pool.web.completed_total"), 0);
    complete(&mut p, c);
    complete(&mut p, a);
    assert_eq!(gauge(&p, "ebb.pool.web.completed_total"), 2, "completions count at once");
    p.advance(Duration::from_secs(1));
    assert_eq!(gauge(&p, "ebb.pool.web.in_flight"), 1, "set from the counters at the next tick");
    assert_eq!(gauge(&p, "ebb.pool.api.in_flight"), 0);
}

#[test]
fn a_delay_resumes_on_time_and_the_worker_keeps_its_tick() {
    let delay = r#","faults":[{"id":"slow","ttl":"1h","delay":{"delay":"200ms","pool":"web"}}]"#;
    let mut p = start(&plugin(), &config(delay), 2);
    let configured_ns = p.clock().now_ns();
    let at = |ms: u64| configured_ns + ms * 1_000_000;
    p.advance_to(at(300));
    let (id, step) = open(&mut p, 0, &get("web.example"));
    assert!(matches!(step, Step::Pause), "{step:?}");
    p.advance_to(at(495));
    assert!(p.http_stream(id).unwrap().upstream_request().is_none(), "held at 195 ms");
    p.advance_to(at(510));
    assert!(p.http_stream(id).unwrap().upstream_request().is_some(), "released within 10 ms of 200 ms");
    // A command lands through worker 1 at 600 ms. Worker 0 held a delayed request, but its timer
    // was never re-armed for it: it still picks commands up on the tick it had from configure
    // (1 s after), not a tick later than that.
    p.advance_to(at(600));
    let (status, r) =
        control(&mut p, 1, "POST", "/.ebb/v1/faults", r#"{"id":"late","abort":{"pool":"api","status":503}}"#);
    assert_eq!(status, 201, "{r:?}");
    p.advance_to(at(1_050));
    let Step::LocalReply(reply) = open(&mut p, 0, &get("api.example")).1 else {
        panic!("worker 0 has not picked the command up at 1.05 s")
    };
    assert_eq!(reply.status, 503);
}

#[test]
fn refused_metric_calls_leave_traffic_untouched_and_are_logged_once_per_vm() {
    let plugin = refusing(&["proxy_increment_metric", "proxy_record_metric", "proxy_get_metric"]);
    let abort = r#","faults":[{"id":"a","abort":{"pool":"api","status":503}},
                               {"id":"d","ttl":"1h","drain":{"pool":"web","hosts":2}}]"#;
    let mut p = start(&plugin, &config(abort), 2);
    for i in 0..20 {
        let (id, step) = open(&mut p, i % 2, &get("web.example"));
        assert!(matches!(step, Step::Continue), "request {i} under capacity: {step:?}");
        complete(&mut p, id);
        let (_, step) = open(&mut p, i % 2, &get("api.example"));
        let Step::LocalReply(reply) = step else { panic!("request {i}: the abort still answers: {step:?}") };
        assert_eq!(reply.status, 503);
    }
    p.advance(Duration::from_secs(3));
    assert_no_vm_failed(&mut p, 2);
    // Three VMs (main and two workers); 40 requests and 3 ticks: still one line per VM and call.
    for call in ["proxy_increment_metric", "proxy_record_metric", "proxy_get_metric"] {
        let n = lines(&p, &format!("the host refused {call}"));
        assert!((1..=3).contains(&n), "{call}: {n} log lines");
    }
}

#[test]
fn a_drain_lets_every_request_through_where_shared_data_or_metric_reads_are_refused() {
    // Capacity would be 2 of these 6. With no shared data the fault set cannot even be read, so
    // nothing is drained; with no `proxy_get_metric` the held slots cannot be counted, so nothing
    // is shed. Either way every request goes through, and each VM says why once.
    let drain = r#","faults":[{"id":"d","ttl":"1h","drain":{"pool":"web","hosts":2}}]"#;
    let cases: [(&[&str], &str); 2] = [
        (&["proxy_get_shared_data", "proxy_set_shared_data"], "the host refused proxy_get_shared_data"),
        (&["proxy_get_metric"], "the host refused proxy_get_metric"),
    ];
    for (calls, logged) in cases {
        let mut p = start(&refusing(calls), &config(drain), 2);
        let opened: Vec<_> = (0..6).map(|i| open(&mut p, i % 2, &get("web.example"))).collect();
        for (i, (_, step)) in opened.iter().enumerate() {
            assert!(matches!(step, Step::Continue), "{calls:?}: request {i}: {step:?}");
        }
        for (id, _) in opened {
            complete(&mut p, id);
        }
        p.advance(Duration::from_secs(3));
        assert_no_vm_failed(&mut p, 2);
        assert_eq!(lines(&p, logged), 3, "{calls:?}: main and both workers, once each");
    }
}

#[test]
fn a_refused_timer_or_local_reply_never_breaks_a_request() {
    let plugin = refusing(&["proxy_set_tick_period_milliseconds", "proxy_send_local_response"]);
    let mut p = start(&plugin, &config(r#","faults":[{"id":"a","abort":{"pool":"api","status":503}}]"#), 1);
    assert_eq!(lines(&p, "the host refused proxy_set_tick_period_milliseconds"), 2, "once per VM");
    for _ in 0..5 {
        // The abort cannot be answered locally: the request goes on instead of hanging.
        let (id, step) = open(&mut p, 0, &get("api.example"));
        assert!(matches!(step, Step::Continue), "{step:?}");
        assert!(p.http_stream(id).unwrap().upstream_request().is_some());
        complete(&mut p, id);
    }
    assert_no_vm_failed(&mut p, 1);
    assert_eq!(lines(&p, "the host refused proxy_send_local_response"), 1);
}

#[test]
fn a_refused_header_map_falls_back_to_one_header_at_a_time() {
    // The filter reads a request's headers with one `proxy_get_header_map_pairs`; a host that
    // refuses it must still see pools matched, aborts answered and ebb's headers stripped.
    let plugin = refusing(&["proxy_get_header_map_pairs"]);
    let mut p = start(&plugin, &config(r#","faults":[{"id":"a","abort":{"pool":"api","status":503}}]"#), 2);
    for i in 0..6 {
        let mut headers = get("web.example");
        headers.push(("x-ebb-signature".into(), "v2=00".into()));
        let (id, step) = open(&mut p, i % 2, &headers);
        assert!(matches!(step, Step::Continue), "request {i}: {step:?}");
        let forwarded = p.http_stream(id).unwrap().upstream_request().expect("forwarded");
        assert!(forwarded.headers.get(b"x-ebb-signature").is_none(), "request {i}: ebb's header forwarded");
        complete(&mut p, id);
        let (_, step) = open(&mut p, i % 2, &get("api.example"));
        let Step::LocalReply(reply) = step else { panic!("request {i}: api matched by :authority: {step:?}") };
        assert_eq!(reply.status, 503);
    }
    assert_no_vm_failed(&mut p, 2);
    assert_eq!(lines(&p, "the host refused proxy_get_header_map_pairs"), 2, "once per worker");
}

#[test]
fn a_refused_header_look_up_strips_ebb_headers_all_the_same() {
    // With the control API off, the filter looks the signature up on its own and strips ebb's
    // headers only when it is there: a host that refuses the look-up must not get them forwarded.
    let plugin = refusing(&["proxy_get_header_map_value"]);
    let off = r#"{"pools":[{"name":"web","match":{"authority":"web.example"},"hosts":4,"capacity_per_host":10}]}"#;
    let mut p = start(&plugin, off, 1);
    for i in 0..3 {
        let mut headers = get("web.example");
        for (k, v) in [("x-ebb-signature", "v2=00"), ("x-ebb-timestamp", "1"), ("x-ebb-command", "{}")] {
            headers.push((k.into(), v.into()));
        }
        let (id, step) = open(&mut p, 0, &headers);
        assert!(matches!(step, Step::Continue), "request {i}: {step:?}");
        let forwarded = p.http_stream(id).unwrap().upstream_request().expect("forwarded");
        for gone in ["x-ebb-signature", "x-ebb-timestamp", "x-ebb-command"] {
            assert!(forwarded.headers.get(gone.as_bytes()).is_none(), "request {i}: {gone} forwarded");
        }
        complete(&mut p, id);
    }
    assert_no_vm_failed(&mut p, 1);
    assert_eq!(lines(&p, "the host refused proxy_get_header_map_value"), 1, "once per VM");
}

/// A small deterministic generator for the interleaving test.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        ((self.0 >> 33) % n as u64) as usize
    }
}

#[test]
fn capacity_stays_exact_whatever_the_order_of_workers() {
    // 4 hosts x 1, 2 drained: 2 requests fit across the 3 workers. Each VM compares the taken
    // slots with the frees it last read plus its own; workers interleaving at random make that
    // guess stale, and the fresh reads before any shed must keep the count exact all the same.
    let drain = r#","faults":[{"id":"d","ttl":"1h","drain":{"pool":"web","hosts":2}}]"#;
    let mut p = start(&plugin(), &config(drain), 3);
    let mut rng = Lcg(9);
    // Requests admitted and not finished yet: what the shared counter must equal.
    let mut open_now: Vec<ebb_harness::StreamId> = Vec::new();
    let (mut admitted, mut shed) = (0usize, 0u64);
    for step in 0..400 {
        match rng.below(10) {
            0..=4 => {
                let worker = rng.below(3);
                let (id, outcome) = open(&mut p, worker, &get("web.example"));
                let fits = open_now.len() < 2;
                match outcome {
                    Step::Continue => {
                        assert!(fits, "step {step}: admitted over capacity on worker {worker}");
                        admitted += 1;
                        open_now.push(id);
                    }
                    Step::LocalReply(reply) => {
                        assert!(!fits, "step {step}: shed on worker {worker} with a slot free");
                        assert_eq!(reply.status, 503);
                        shed += 1;
                        p.http_stream(id).unwrap().finish().unwrap();
                    }
                    other => panic!("step {step}: {other:?}"),
                }
            }
            5..=8 if !open_now.is_empty() => {
                let id = open_now.swap_remove(rng.below(open_now.len()));
                complete(&mut p, id);
            }
            _ => {
                p.advance(Duration::from_millis(700));
            }
        }
    }
    assert!(admitted > 50 && shed > 20, "the sequence exercised both sides: {admitted} admitted, {shed} shed");
    assert_eq!(gauge(&p, "ebb.pool.web.shed_total"), shed);
}
