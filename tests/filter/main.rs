//! The ebb filter (the real .wasm, freshly built) in the harness host, the way Envoy runs it:
//! several workers, a simulated clock, shared data, ticks. Each test is a behaviour an SRE
//! relies on in staging.

#![allow(clippy::unwrap_used)] // a failed unwrap in a test helper is a test failure with its message

use std::time::Duration;

use ebb_engine::auth::{sign, SIGNATURE_HEADER, TIMESTAMP_HEADER};
use ebb_engine::control::Response;
use ebb_harness::{Clock, Plugin, Proxy, ProxyOptions, Step};

const KEY: &str = "staging-key-0123456789";

#[path = "../all/util.rs"]
mod util;

mod control;
mod portability;

/// ebb.wasm, built from source once per test run so tests never use a stale binary.
fn plugin() -> Plugin {
    let path = util::ebb_wasm();
    Plugin::load(&path).unwrap_or_else(|e| panic!("load {}: {e}", path.display()))
}

fn config(extra: &str) -> String {
    format!(
        r#"{{"pools":[
            {{"name":"web","match":{{"authority":"web.example"}},"hosts":4,"capacity_per_host":1}},
            {{"name":"api","match":{{"authority":"api.example"}},"hosts":10,"capacity_per_host":100}}
          ],
          "limits":{{"max_ttl":"12h","max_drain_fraction":0.5}},
          "control":{{"key":"{KEY}"}}{extra}}}"#
    )
}

fn proxy(config: &str, workers: usize) -> Proxy {
    start(&plugin(), config, workers)
}

/// A proxy of `workers` workers (plus the main thread's VM) running `plugin` with `config`, the
/// host playing `EBB_TEST_HOST_PROFILE` (envoy by default).
fn start(plugin: &Plugin, config: &str, workers: usize) -> Proxy {
    Proxy::new(plugin, options(config, workers), Clock::default()).expect("proxy starts")
}

/// What `start` runs a proxy with, for tests that change one option more.
fn options(config: &str, workers: usize) -> ProxyOptions {
    ProxyOptions {
        name: "ebb".into(),
        vm_id: "ebb".into(),
        root_id: "ebb".into(),
        plugin_config: config.as_bytes().to_vec(),
        workers,
        host_profile: util::host_profile(),
        ..ProxyOptions::default()
    }
}

fn gauge(proxy: &Proxy, name: &str) -> u64 {
    proxy.metric(name).unwrap_or_else(|| panic!("metric {name} not defined")).value
}

fn get(authority: &str) -> Vec<(String, String)> {
    vec![(":method".into(), "GET".into()), (":path".into(), "/".into()), (":authority".into(), authority.into())]
}

/// Sends a request on `worker` and returns its first step (the stream stays open).
fn open(proxy: &mut Proxy, worker: usize, headers: &[(String, String)]) -> (ebb_harness::StreamId, Step) {
    let mut http = proxy.worker(worker).unwrap().http();
    let step = http.request_headers(headers, true);
    (http.id(), step)
}

/// Completes an open exchange with a 200 from the upstream.
fn complete(proxy: &mut Proxy, id: ebb_harness::StreamId) {
    let mut http = proxy.http_stream(id).expect("stream open");
    http.response_headers(&[(":status", "200")], true);
    http.finish().unwrap();
}

/// A signed control call on `worker`: (status, response).
fn control(proxy: &mut Proxy, worker: usize, method: &str, path: &str, body: &str) -> (u32, Response) {
    let now_s = proxy.clock().now_ns() / 1_000_000_000;
    let sig = sign(KEY.as_bytes(), method, "ebb-control", path, now_s, body.as_bytes());
    call(proxy, worker, method, path, body, Some((now_s, sig)))
}

fn call(
    proxy: &mut Proxy,
    worker: usize,
    method: &str,
    path: &str,
    body: &str,
    auth: Option<(u64, String)>,
) -> (u32, Response) {
    let mut headers = vec![
        (":method".to_string(), method.to_string()),
        (":path".to_string(), path.to_string()),
        (":authority".to_string(), "ebb-control".to_string()),
    ];
    if let Some((ts, sig)) = auth {
        headers.push((TIMESTAMP_HEADER.into(), ts.to_string()));
        headers.push((SIGNATURE_HEADER.into(), sig));
    }
    if !body.is_empty() {
        // As scripts/ebb-ctl sends it: Envoy does not show a paused filter the body by default.
        headers.push(("x-ebb-command".into(), body.into()));
    }
    let mut http = proxy.worker(worker).unwrap().http();
    let step = http.request_headers(&headers, true);
    let Step::LocalReply(reply) = step else { panic!("control call not answered locally: {step:?}") };
    assert!(http.upstream_request().is_none(), "a control call must never reach the upstream");
    let response: Response = serde_json::from_slice(&reply.body)
        .unwrap_or_else(|e| panic!("control reply is not JSON ({e}): {}", String::from_utf8_lossy(&reply.body)));
    http.finish().unwrap();
    (reply.status, response)
}

#[test]
fn a_control_call_with_a_body_is_refused_at_once_not_left_hanging() {
    let mut p = proxy(&config(""), 1);
    let headers =
        [(":method", "POST"), (":path", "/.ebb/v1/faults"), (":authority", "ebb-control"), ("content-length", "2")];
    let mut http = p.worker(0).unwrap().http();
    let Step::LocalReply(reply) = http.request_headers(&headers, false) else {
        panic!("expected an answer at the headers")
    };
    assert_eq!(reply.status, 400);
    assert!(String::from_utf8_lossy(&reply.body).contains("x-ebb-command"));
    assert!(http.upstream_request().is_none());
}

#[test]
fn a_disarmed_filter_still_never_forwards_control_calls() {
    let mut p = proxy(r#"{"pools":"not a list"}"#, 1);
    let (status, r) = control(&mut p, 0, "DELETE", "/.ebb/v1/faults", "");
    assert_eq!(status, 503, "{r:?}");
    assert!(r.error.unwrap().contains("disarmed"));
}

#[test]
fn invalid_configuration_disarms_and_passes_traffic() {
    let mut p =
        proxy(r#"{"pools":[{"name":"web","hosts":0,"capacity_per_host":1}],"faults":[{"abort":{"status":503}}]}"#, 2);
    assert_eq!(gauge(&p, "ebb.armed"), 0);
    let (_, step) = open(&mut p, 0, &get("web.example"));
    assert!(matches!(step, Step::Continue), "{step:?}");
    let logs: Vec<String> = p.logs().iter().map(|l| l.message.clone()).collect();
    assert!(logs.iter().any(|m| m.contains("disarmed") && m.contains("hosts")), "{logs:?}");
}

#[test]
fn a_capacity_drain_sheds_over_capacity_across_workers() {
    // 4 hosts x 1 request, 2 drained: 2 requests fit, wherever they arrive.
    let mut p = proxy(&config(r#","faults":[{"id":"d","ttl":"1h","drain":{"pool":"web","hosts":2}}]"#), 2);
    assert_eq!(gauge(&p, "ebb.pool.web.available_hosts"), 2);
    let (a, s1) = open(&mut p, 0, &get("web.example"));
    let (_b, s2) = open(&mut p, 1, &get("web.example"));
    assert!(matches!(s1, Step::Continue) && matches!(s2, Step::Continue), "{s1:?} {s2:?}");
    let (_, s3) = open(&mut p, 1, &get("web.example"));
    let Step::LocalReply(reply) = s3 else { panic!("third request should be shed: {s3:?}") };
    assert_eq!(reply.status, 503);
    assert_eq!(reply.headers.get_str("x-ebb-fault").as_deref(), Some("d"));
    // Another pool is untouched.
    let (_, other) = open(&mut p, 0, &get("api.example"));
    assert!(matches!(other, Step::Continue));
    // Three attempts, one given back at once: two slots held, counted for the whole proxy.
    let held = |p: &Proxy| gauge(p, "ebb.pool.web.slots_taken_total") - gauge(p, "ebb.pool.web.slots_freed_total");
    assert_eq!((gauge(&p, "ebb.pool.web.slots_taken_total"), held(&p)), (3, 2));
    // A slot frees on worker 0; worker 1 can use it.
    complete(&mut p, a);
    assert_eq!(held(&p), 1);
    let (_, s4) = open(&mut p, 1, &get("web.example"));
    assert!(matches!(s4, Step::Continue), "{s4:?}");
    assert_eq!(gauge(&p, "ebb.pool.web.shed_total"), 1);
    assert_eq!(held(&p), 2);
}

#[test]
fn a_drain_lets_traffic_through_uncounted_where_counters_do_not_count() {
    // Envoy's stats matcher rejecting the slot counters makes them null stats: they read back 0,
    // so no request can be admitted against them. The filter must not shed everything then.
    // Either counter alone: a null `slots_freed_total` would make every slot look held for ever.
    let plugin = plugin();
    for rejected in ["ebb.pool.web.slots_", "ebb.pool.web.slots_taken", "ebb.pool.web.slots_freed"] {
        let drain = config(r#","faults":[{"id":"d","ttl":"1h","drain":{"pool":"web","hosts":2}}]"#);
        let options = ProxyOptions { stats_rejected_prefixes: vec![rejected.into()], ..options(&drain, 2) };
        let mut p = Proxy::new(&plugin, options, Clock::default()).expect("proxy starts");
        for i in 0..6 {
            let (_, step) = open(&mut p, i % 2, &get("web.example"));
            assert!(matches!(step, Step::Continue), "{rejected}: request {i} goes through: {step:?}");
        }
        assert_eq!(gauge(&p, "ebb.pool.web.shed_total"), 0, "{rejected}");
        let warnings = p.logs().iter().filter(|l| l.message.contains("counters read back as 0")).count();
        assert_eq!(warnings, 2, "{rejected}: once per worker VM that asked");
    }
}

#[test]
fn commands_are_signed_reach_every_worker_within_a_tick_and_the_kill_switch_clears() {
    let mut p = proxy(&config(""), 3);
    let body = r#"{"id":"night-drain","ttl":"2h","drain":{"pool":"api","fraction":0.4}}"#;
    // Unsigned and wrongly signed calls change nothing.
    let (status, r) = call(&mut p, 0, "POST", "/.ebb/v1/faults", body, None);
    assert_eq!(status, 401, "{r:?}");
    let now_s = p.clock().now_ns() / 1_000_000_000;
    let forged = sign(b"not-the-key-at-all", "POST", "ebb-control", "/.ebb/v1/faults", now_s, body.as_bytes());
    assert_eq!(call(&mut p, 0, "POST", "/.ebb/v1/faults", body, Some((now_s, forged))).0, 401);
    assert_eq!(gauge(&p, "ebb.commands_refused_total"), 2);

    let sig = sign(KEY.as_bytes(), "POST", "ebb-control", "/.ebb/v1/faults", now_s, body.as_bytes());
    let (status, r) = call(&mut p, 1, "POST", "/.ebb/v1/faults", body, Some((now_s, sig.clone())));
    assert_eq!(status, 201, "{r:?}");
    assert_eq!(r.fault.as_ref().map(|f| f.state.as_str()), Some("active"));
    // The same signed request again is a replay.
    let (status, r) = call(&mut p, 2, "POST", "/.ebb/v1/faults", body, Some((now_s, sig)));
    assert_eq!(status, 401, "{r:?}");
    assert!(r.error.unwrap_or_default().contains("already used"));

    p.advance(Duration::from_secs(1));
    assert_eq!(gauge(&p, "ebb.pool.api.available_hosts"), 6);
    for worker in 0..3 {
        let (status, r) = control(&mut p, worker, "GET", "/.ebb/v1/pools", "");
        assert_eq!(status, 200);
        let api = r.pools.unwrap().into_iter().find(|x| x.name == "api").unwrap();
        assert_eq!((api.available_hosts, api.faults.clone()), (6, vec!["night-drain".to_string()]), "worker {worker}");
    }
    // Over the cap: refused with a reason.
    let (status, r) = control(&mut p, 0, "POST", "/.ebb/v1/faults", r#"{"drain":{"pool":"api","hosts":2}}"#);
    assert_eq!(status, 422);
    assert!(r.error.unwrap().contains("max_drain_fraction"));
    // Kill switch.
    let (status, r) = control(&mut p, 2, "DELETE", "/.ebb/v1/faults", "");
    assert_eq!((status, r.cleared), (200, Some(vec!["night-drain".to_string()])));
    p.advance(Duration::from_secs(1));
    assert_eq!(gauge(&p, "ebb.pool.api.available_hosts"), 10);
    assert_eq!(gauge(&p, "ebb.active_faults"), 0);
}

#[test]
fn an_aborted_deploy_leaves_its_batch_drained_and_stops_reporting_progress() {
    let deploy = r#","faults":[{"id":"deploy","ttl":"10h","deploy":{"pool":"api","batches":5,"batch_interval":"2m","abort_at_batch":2}}]"#;
    let mut p = proxy(&config(deploy), 2);
    p.advance(Duration::from_secs(1));
    assert_eq!(gauge(&p, "ebb.pool.api.deploy_in_progress"), 1);
    assert_eq!(gauge(&p, "ebb.pool.api.available_hosts"), 8);
    p.advance(Duration::from_secs(5 * 60));
    assert_eq!(gauge(&p, "ebb.pool.api.deploy_in_progress"), 0, "aborted: no deployment in progress");
    assert_eq!(gauge(&p, "ebb.pool.api.available_hosts"), 8, "the batch in flight stays out of the pool");
    p.advance(Duration::from_secs(7 * 3600));
    assert_eq!(gauge(&p, "ebb.pool.api.available_hosts"), 8, "still drained hours later");
    // Recovery tooling restores the pool.
    let (status, r) = control(&mut p, 1, "POST", "/.ebb/v1/pools/api/restore", "");
    assert_eq!((status, r.cleared), (200, Some(vec!["deploy".to_string()])));
    p.advance(Duration::from_secs(1));
    assert_eq!(gauge(&p, "ebb.pool.api.available_hosts"), 10);
}

#[test]
fn faults_expire_from_ticks_without_traffic_and_are_counted_once() {
    let mut p = proxy(&config(r#","faults":[{"id":"short","ttl":"5s","drain":{"pool":"api","hosts":3}}]"#), 4);
    assert_eq!(gauge(&p, "ebb.active_faults"), 1);
    p.advance(Duration::from_secs(6));
    assert_eq!(gauge(&p, "ebb.active_faults"), 0);
    assert_eq!(gauge(&p, "ebb.pool.api.available_hosts"), 10);
    assert_eq!(gauge(&p, "ebb.faults_expired_total"), 1, "five VMs, one expiry");
}

#[test]
fn a_delay_pauses_without_blocking_and_resumes_from_the_timer() {
    let mut p = proxy(&config(r#","faults":[{"id":"slow","delay":{"delay":"300ms","pool":"web"}}]"#), 1);
    let (id, step) = open(&mut p, 0, &get("web.example"));
    assert!(matches!(step, Step::Pause), "{step:?}");
    // The worker keeps serving other requests meanwhile.
    let (_, other) = open(&mut p, 0, &get("api.example"));
    assert!(matches!(other, Step::Continue));
    p.advance(Duration::from_millis(200));
    assert!(p.http_stream(id).unwrap().upstream_request().is_none(), "still held at 200ms");
    p.advance(Duration::from_millis(150));
    assert!(p.http_stream(id).unwrap().upstream_request().is_some(), "released after 300ms");
    assert_eq!(gauge(&p, "ebb.delayed_total"), 1);
}

#[test]
fn header_faults_only_when_opted_in() {
    let mut headers = get("api.example");
    headers.push(("x-ebb-abort".into(), "503".into()));
    let mut off = proxy(&config(""), 1);
    assert!(matches!(open(&mut off, 0, &headers).1, Step::Continue));
    let mut on = proxy(&config(r#","header_faults":true"#), 1);
    let Step::LocalReply(reply) = open(&mut on, 0, &headers).1 else { panic!("expected an abort") };
    assert_eq!(reply.status, 503);
}

#[test]
fn a_reset_without_a_pool_closes_every_new_connection() {
    let config = r#"{"faults":[{"id":"r","reset":{"percent":100}}]}"#;
    let options = ProxyOptions {
        root_id: "ebb_tcp".into(),
        plugin_config: config.into(),
        host_profile: util::host_profile(),
        ..ProxyOptions::default()
    };
    let mut p = Proxy::new(&plugin(), options, Clock::default()).unwrap();
    let step = p.worker(0).unwrap().tcp().new_connection();
    assert!(!matches!(step, Step::Continue), "{step:?}");
}

#[test]
fn tcp_resets_close_a_share_of_new_connections() {
    let config = r#"{"pools":[{"name":"ssh","protocol":"tcp","hosts":4,"capacity_per_host":10}],
                     "faults":[{"id":"r","reset":{"pool":"ssh","percent":100}}]}"#;
    let options = ProxyOptions {
        vm_id: "ebb".into(),
        root_id: "ebb_tcp".into(),
        plugin_config: config.as_bytes().to_vec(),
        host_profile: util::host_profile(),
        ..ProxyOptions::default()
    };
    let mut p = Proxy::new(&plugin(), options, Clock::default()).unwrap();
    let mut tcp = p.worker(0).unwrap().tcp();
    let step = tcp.new_connection();
    assert!(!matches!(step, Step::Continue), "a reset connection must not proceed: {step:?}");
    assert!(!tcp.close_requests().is_empty() || matches!(step, Step::Closed { .. }), "{step:?}");
    assert_eq!(gauge(&p, "ebb.pool.ssh.reset_total"), 1);
}

#[test]
fn a_drain_queue_admits_when_a_slot_frees_and_sheds_at_its_timeout() {
    let queue = r#","faults":[{"id":"q","drain":{"pool":"web","hosts":2,"queue":{"max":2,"timeout":"500ms"}}}]"#;
    let mut p = proxy(&config(queue), 1);
    let (a, _) = open(&mut p, 0, &get("web.example"));
    let (b, _) = open(&mut p, 0, &get("web.example"));
    let (c, step) = open(&mut p, 0, &get("web.example"));
    assert!(matches!(step, Step::Pause), "over capacity with a queue: wait, {step:?}");
    complete(&mut p, a);
    p.advance(Duration::from_millis(20));
    assert!(p.http_stream(c).unwrap().upstream_request().is_some(), "admitted once a slot freed");
    let (d, step) = open(&mut p, 0, &get("web.example"));
    assert!(matches!(step, Step::Pause));
    p.advance(Duration::from_millis(600));
    let reply = p.http_stream(d).unwrap().client_response().expect("answered after the queue timeout");
    assert_eq!(reply.headers.get_str(":status").as_deref(), Some("503"));
    assert_eq!(gauge(&p, "ebb.pool.web.queued_total"), 2);
    assert_eq!(gauge(&p, "ebb.pool.web.shed_total"), 1);
    // The slot the queued request took on the timer is returned when it ends, as one taken at
    // once is: both slots serve new requests again.
    complete(&mut p, b);
    complete(&mut p, c);
    for _ in 0..2 {
        let (_, step) = open(&mut p, 0, &get("web.example"));
        assert!(matches!(step, Step::Continue), "a returned slot admits at once: {step:?}");
    }
    let (_, step) = open(&mut p, 0, &get("web.example"));
    assert!(matches!(step, Step::Pause), "and the capacity is still 2: {step:?}");
}

#[test]
fn junk_headers_and_commands_never_break_the_filter() {
    let mut p = proxy(&config(r#","header_faults":true"#), 1);
    let junk = ["", "\u{0}\u{1}", "999999999999", "-5", "1e9", "{\"drain\":", "\u{fffd}\u{fffd}", "503 503"];
    for value in junk {
        let mut headers = get("web.example");
        for name in ["x-ebb-abort", "x-ebb-abort-grpc", "x-ebb-delay", "x-ebb-timestamp", "x-ebb-signature"] {
            headers.push((name.into(), value.into()));
        }
        let (id, step) = open(&mut p, 0, &headers);
        assert!(matches!(step, Step::Continue), "{value:?}: {step:?}");
        complete(&mut p, id);
        let (status, _) = control(&mut p, 0, "POST", "/.ebb/v1/faults", value);
        assert!(status == 400 || status == 401, "{value:?}: {status}");
        let (status, _) = control(&mut p, 0, "PATCH", &format!("/.ebb/v1/{value}"), "");
        assert!((400..500).contains(&status), "{value:?}: {status}");
    }
    let thread = p.worker(0).unwrap().thread();
    assert!(p.failure(thread).is_none(), "the VM never trapped");
    assert_eq!(gauge(&p, "ebb.active_faults"), 0);
}
