//! `ebb proxy` end to end: the staging bootstrap (deploy/envoy/envoy.yaml, its key rendered as
//! docs/staging.md says) served on loopback ports with 2 workers in front of real upstream servers
//! started by each test, driven by real HTTP/1.1, h2c and TCP clients and by scripts/ebb-ctl.
//! Every wait is bounded; every process started is stopped when its test ends.

// These tests wait on real processes and sockets, so they read the wall clock to bound each wait
// (the harness's own rule, one clock, is about the code under test).
#![allow(clippy::disallowed_types)]

#[path = "../all/util.rs"]
mod util;

mod support;
mod upstream;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use support::{ctl, get, http1, promtool_check, Proxy, Upstream};

/// The staging bootstrap as a deployment renders it: the placeholder key replaced.
pub const KEY: &str = "proxy-test-key-6f1d0c2a9b8e7d6c5b4a39281706f5e4";

#[test]
fn pass_through_is_intact_over_http1_and_h2c_and_routes_by_prefix() {
    let web = Upstream::http("web");
    let api = Upstream::http("api");
    let proxy = Proxy::staging(&web, &api, None, |y| y);
    let id = support::post_as_envoy_sends_it(proxy.ingress(), &web);
    let again = http1(proxy.ingress(), "GET", "/", &[], b"");
    assert_eq!(again.status, 200);
    assert_ne!(web.last().header("x-request-id"), Some(id), "each request its own id");

    let r = http1(proxy.ingress(), "GET", "/api/repos", &[], b"");
    assert_eq!((r.status, r.header("x-upstream").as_deref()), (200, Some("api")));

    let r = support::h2c_get(proxy.ingress(), "/api/h2");
    assert_eq!(r, (200, b"api GET /api/h2 ".to_vec()));
}

#[test]
fn the_control_api_is_refused_on_the_ingress_and_answered_on_the_control_listener() {
    let web = Upstream::http("web");
    let api = Upstream::http("api");
    let proxy = Proxy::staging(&web, &api, None, |y| y);
    // RBAC in front of the prefix, after the connection manager normalised the path.
    for path in ["/.ebb/v1/state", "//.ebb/v1/state", "/x/../.ebb/v1/state", "/%2eebb/v1/state"] {
        let r = http1(proxy.ingress(), "GET", path, &[], b"");
        assert_eq!(r.status, 403, "{path}: {r:?}");
    }
    assert_eq!(web.count(), 0, "nothing under /.ebb/ reached an upstream");
    let state = ctl(&proxy, &["state"]);
    assert!(state.contains("\"armed\":true") && state.contains("\"name\":\"web\""), "{state}");
    let r = http1(proxy.control(), "GET", "/elsewhere", &[], b"");
    assert_eq!(r.status, 404);
    assert!(String::from_utf8_lossy(&r.body).contains("ebb control API not answering"));
}

#[test]
fn a_capacity_drain_sheds_only_above_the_remaining_capacity_of_both_workers_together() {
    let web = Upstream::http("web");
    let api = Upstream::http("api");
    // 4 hosts of 1 slot each: a drain of 2 leaves 2 slots for the whole proxy.
    let proxy = Proxy::staging(&web, &api, None, |y| {
        y.replace(r#""hosts": 10, "capacity_per_host": 50"#, r#""hosts": 4, "capacity_per_host": 1"#)
    });
    let added = ctl(&proxy, &["add", r#"{"id":"web-drain","ttl":"1m","drain":{"pool":"web","hosts":2}}"#]);
    assert!(added.contains("\"ok\":true"), "{added}");
    proxy.wait_for_metric("ebb_pool_available_hosts{ebb_pool=\"web\"} 2");
    // Six requests on separate connections (spread over both workers); the upstream holds the
    // admitted ones until four were shed, so each slot stays taken whatever the timing.
    let (tx, rx) = std::sync::mpsc::channel();
    for _ in 0..6 {
        let (addr, tx) = (proxy.ingress(), tx.clone());
        std::thread::spawn(move || tx.send(http1(addr, "GET", "/hold", &[], b"")));
    }
    let mut results: Vec<support::Reply> = Vec::new();
    while results.iter().filter(|r| r.status == 503).count() < 4 {
        results.push(rx.recv_timeout(Duration::from_secs(20)).expect("four requests are shed at once"));
    }
    web.release();
    while results.len() < 6 {
        results.push(rx.recv_timeout(Duration::from_secs(20)).expect("the admitted requests answer"));
    }
    let ok = results.iter().filter(|r| r.status == 200).count();
    let shed: Vec<_> = results.iter().filter(|r| r.status == 503).collect();
    assert_eq!((ok, shed.len()), (2, 4), "{results:?}");
    assert!(shed.iter().all(|r| r.header("x-envoy-overloaded").as_deref() == Some("true")));
    let page = proxy.prometheus();
    assert!(page.contains("ebb_pool_shed_total{ebb_pool=\"web\"} 4"), "{page}");
}

#[test]
fn a_blackhole_drain_fails_its_share_at_once_even_one_request_at_a_time() {
    let web = Upstream::http("web");
    let api = Upstream::http("api");
    let proxy = Proxy::staging(&web, &api, None, |y| y);
    let added =
        ctl(&proxy, &["add", r#"{"id":"bad-lb","ttl":"1m","drain":{"pool":"web","hosts":5,"mode":"blackhole"}}"#]);
    assert!(added.contains("\"ok\":true"), "{added}");
    proxy.wait_for_metric("ebb_pool_available_hosts{ebb_pool=\"web\"} 5");
    // No load at all: one request at a time. A capacity drain of 5 of 10 would admit every one;
    // a blackhole fails half of them, each rolled per request, over both workers.
    const N: usize = 200;
    let replies: Vec<_> = (0..N).map(|_| http1(proxy.ingress(), "GET", "/", &[], b"")).collect();
    let failed: Vec<_> = replies.iter().filter(|r| r.status == 503).collect();
    let ok = replies.iter().filter(|r| r.status == 200).count();
    assert_eq!(ok + failed.len(), N, "only 200s and 503s");
    // Binomial(200, 0.5): 60..=140 is over 5.6 standard deviations either side.
    assert!((60..=140).contains(&failed.len()), "{} of {N} failed", failed.len());
    for r in &failed {
        assert_eq!(r.header("x-ebb-fault").as_deref(), Some("bad-lb"), "{r:?}");
        assert!(String::from_utf8_lossy(&r.body).contains("reset reason: connection failure"), "{r:?}");
    }
    assert_eq!(web.count(), ok, "a blackholed request never reaches the upstream");
    proxy.wait_for_metric(&format!("ebb_pool_blackholed_total{{ebb_pool=\"web\"}} {}", failed.len()));
    proxy.wait_for_metric(&format!("ebb_pool_requests_total{{ebb_pool=\"web\"}} {N}"));
}

#[test]
fn tcp_connections_over_a_drained_ssh_pool_are_refused() {
    let web = Upstream::http("web");
    let api = Upstream::http("api");
    let ssh = Upstream::echo();
    // The ssh pool matches the listener's port, as Envoy's `destination.port`: listen on a port
    // chosen here and name it in the pool.
    let port = support::free_port();
    let proxy =
        Proxy::staging_with(&web, &api, Some(&ssh), &[&format!("--listener=ingress_ssh=127.0.0.1:{port}")], |y| {
            y.replace(r#""hosts": 4, "capacity_per_host": 200"#, r#""hosts": 2, "capacity_per_host": 1"#)
                .replace(r#""match": {"port": 2222}"#, &format!(r#""match": {{"port": {port}}}"#))
        });
    ctl(&proxy, &["add", r#"{"id":"ssh-drain","ttl":"1m","drain":{"pool":"ssh","hosts":1}}"#]);
    proxy.wait_for_metric("ebb_pool_available_hosts{ebb_pool=\"ssh\"} 1");
    let mut first = TcpStream::connect(proxy.ssh()).expect("connect");
    first.write_all(b"ping").expect("write");
    let mut buf = [0u8; 4];
    first.read_exact(&mut buf).expect("echoed");
    assert_eq!(&buf, b"ping");
    // The first connection holds the one slot left: a second is closed without reaching ssh.
    let mut second = TcpStream::connect(proxy.ssh()).expect("connect");
    second.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    let _ = second.write_all(b"pong");
    let mut got = Vec::new();
    let _ = second.read_to_end(&mut got);
    assert!(got.is_empty(), "the refused connection got {got:?}");
    first.write_all(b"more").expect("the admitted connection still works");
    first.read_exact(&mut buf).expect("echoed");
    assert_eq!(&buf, b"more");
}

#[test]
fn the_prometheus_page_is_what_the_alerts_expect_and_promtool_accepts_it() {
    let web = Upstream::http("web");
    let api = Upstream::http("api");
    let proxy = Proxy::staging(&web, &api, None, |y| y);
    for _ in 0..3 {
        assert_eq!(http1(proxy.ingress(), "GET", "/", &[], b"").status, 200);
    }
    ctl(&proxy, &["add", r#"{"id":"web-drain","ttl":"1m","drain":{"pool":"web","hosts":3}}"#]);
    proxy.wait_for_metric("ebb_pool_available_hosts{ebb_pool=\"web\"} 7");
    let page = proxy.prometheus();
    for line in [
        "ebb_pool_expected_hosts{ebb_pool=\"web\"} 10",
        "ebb_pool_deploy_in_progress{ebb_pool=\"web\"} 0",
        "envoy_cluster_upstream_rq_xx{envoy_cluster_name=\"web\",envoy_response_code_class=\"2\"} 3",
        "envoy_cluster_membership_healthy{envoy_cluster_name=\"web\"} 1",
    ] {
        assert!(page.contains(line), "missing {line:?} in\n{page}");
    }
    assert!(page.contains("envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name=\"web\",le=\"+Inf\"} 3"), "{page}");
    promtool_check(&page);
    // Prometheus keeps its scrapes on one connection: each must show the numbers of its time.
    let mut kept = TcpStream::connect(proxy.admin()).expect("connect to the admin");
    let before = scrape_on(&mut kept);
    assert!(before.contains("envoy_cluster_upstream_rq_total{envoy_cluster_name=\"web\"} 3"), "{before}");
    assert_eq!(http1(proxy.ingress(), "GET", "/", &[], b"").status, 200);
    let after = scrape_on(&mut kept);
    assert!(after.contains("envoy_cluster_upstream_rq_total{envoy_cluster_name=\"web\"} 4"), "{after}");
    let dump = get(proxy.admin(), "/config_dump");
    assert!(dump.contains("[redacted]") && !dump.contains(KEY), "the key never leaves through the admin");
}

#[test]
fn a_fault_expires_at_its_ttl_with_no_traffic_and_the_kill_switch_clears_everything() {
    let web = Upstream::http("web");
    let api = Upstream::http("api");
    let proxy = Proxy::staging(&web, &api, None, |y| y);
    ctl(&proxy, &["add", r#"{"id":"short","ttl":"2s","drain":{"pool":"api","hosts":2}}"#]);
    ctl(&proxy, &["add", r#"{"id":"long","ttl":"10m","drain":{"pool":"web","hosts":2}}"#]);
    proxy.wait_for_metric("ebb_pool_available_hosts{ebb_pool=\"api\"} 4");
    // No request at all: the main thread's and workers' ticks expire it.
    proxy.wait_for_metric("ebb_pool_available_hosts{ebb_pool=\"api\"} 6");
    let state = ctl(&proxy, &["state"]);
    assert!(!state.contains("\"short\"") && state.contains("\"long\""), "{state}");
    let cleared = ctl(&proxy, &["clear-all"]);
    assert!(cleared.contains("long"), "{cleared}");
    proxy.wait_for_metric("ebb_pool_available_hosts{ebb_pool=\"web\"} 10");
}

#[test]
fn a_trapping_filter_fails_closed_and_a_spinning_one_does_not_hang_its_worker() {
    let web = Upstream::http("web");
    let probe = util::filter("probe");
    let yaml = support::single_filter_bootstrap(&probe, "FAIL_CLOSED");
    let proxy = Proxy::start_yaml(&yaml, &[("backend", &web)], &[]);
    assert_eq!(http1(proxy.ingress(), "GET", "/", &[], b"").status, 200);
    let r = http1(proxy.ingress(), "GET", "/", &[("x-probe", "panic")], b"");
    assert_eq!(r.status, 503, "{r:?}");
    // The worker that trapped fails closed from now on; the proxy keeps serving and answering.
    let started = Instant::now();
    let r = http1(proxy.ingress(), "GET", "/", &[("x-probe", "loop")], b"");
    assert_eq!(r.status, 503, "a spinning callback is interrupted: {r:?}");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(get(proxy.admin(), "/ready"), "LIVE\n");
}

#[test]
fn sigterm_lets_requests_in_flight_finish_refuses_new_ones_and_exits_0() {
    let web = Upstream::http("web");
    let api = Upstream::http("api");
    let mut proxy = Proxy::staging(&web, &api, None, |y| y);
    let addr = proxy.ingress();
    let slow = std::thread::spawn(move || http1(addr, "GET", "/slow?ms=1000", &[], b""));
    web.wait_for_requests(1);
    proxy.terminate();
    let r = slow.join().expect("client");
    assert_eq!(r.status, 200, "the request in flight finished: {r:?}");
    assert!(TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err(), "new connections are refused");
    assert_eq!(proxy.wait_exit(Duration::from_secs(10)), Some(0));
}

#[test]
fn bad_starts_end_in_one_clear_line_and_exit_2() {
    let web = Upstream::http("web");
    let api = Upstream::http("api");
    let proxy = Proxy::staging(&web, &api, None, |y| y);
    let taken = proxy.ingress();
    let (code, err) = support::start_fails(&support::render(|y| y), &[&format!("--listener=ingress_http={taken}")]);
    assert_eq!(code, 2);
    assert!(err.contains("listener ingress_http: cannot listen on") && err.lines().count() == 1, "{err}");
    let (code, err) =
        support::start_fails(&support::render(|y| y), &["--wasm-file=/etc/envoy/ebb.wasm=/nonexistent/ebb.wasm"]);
    assert_eq!(code, 2);
    assert!(err.contains("/nonexistent/ebb.wasm"), "{err}");
    let (code, err) = support::start_fails(
        &support::render(|y| {
            y.replace("merge_slashes: true", "merge_slashes: true\n          use_remote_address: true")
        }),
        &[],
    );
    assert_eq!(code, 2);
    assert!(err.contains("typed_config.use_remote_address: not served by ebb proxy"), "{err}");
}

#[test]
fn a_singleton_wasm_service_runs_one_vm_on_the_main_thread() {
    let web = Upstream::http("web");
    let probe = util::filter("probe");
    let proxy =
        Proxy::start_yaml(&support::with_configured_service(&probe, true, "tick=20"), &[("backend", &web)], &[]);
    let logs = proxy.wait_for_log("wasm log service service: on_configure");
    let starts = events(&logs, "service service", "on_vm_start");
    assert_eq!(starts.len(), 1, "one VM, not one per worker:\n{logs}");
    assert_eq!(starts[0].0, "main", "{logs}");
    // Its tick runs once per period, on the main thread only: as often as the filter's main VM.
    let start = Instant::now();
    let logs = loop {
        let logs = proxy.logs();
        if events(&logs, "service service", "on_tick").len() >= 25 {
            break logs;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "the singleton does not tick:\n{logs}");
        std::thread::sleep(Duration::from_millis(20));
    };
    let service = events(&logs, "service service", "on_tick");
    assert!(service.iter().all(|(t, _)| *t == "main"), "{logs}");
    let filter_main = events(&logs, "probe ", "on_tick").iter().filter(|(t, _)| *t == "main").count();
    assert!(
        service.len().abs_diff(filter_main) <= 5,
        "{} singleton ticks, {filter_main} of the filter's main VM",
        service.len()
    );
}

#[test]
fn shared_queues_are_one_per_process_across_threads_and_vm_ids() {
    let web = Upstream::http("web");
    let probe = util::filter("probe");
    // The listener's filter (vm_id "") registers `to_workers` in each of its VMs, the last
    // registrant (a worker's) being the one notified; the singleton service (vm_id `service`, the
    // main thread only) registers `to_main` and enqueues on `to_workers` at its first tick.
    let yaml = support::with_service(
        &probe,
        true,
        "queue=to_workers",
        "queue=to_main;tick=20;tick_enqueue=/to_workers=from-main",
    );
    let proxy = Proxy::start_yaml(&yaml, &[("backend", &web)], &[]);
    // Main → worker: received by the registering worker VM, on its own thread.
    let logs = proxy.wait_for_log("item=from-main");
    let got = events(&logs, "probe ", "on_queue_ready");
    assert_eq!(got.len(), 1, "one item, one notification:\n{logs}");
    assert!(got[0].0.starts_with("worker_"), "the worker VM that registered last gets it:\n{logs}");
    assert!(logs.contains("wasm log service service: probe tick_enqueue /to_workers=from-main => Ok(())"), "{logs}");
    // Worker → main: a request on a worker enqueues on the service's queue, by its vm_id.
    let r = http1(proxy.ingress(), "GET", "/", &[("x-probe", "enqueue:service/to_main=from-worker")], b"");
    assert_eq!(r.status, 200, "{r:?}");
    proxy.wait_for_log("wasm log probe : probe enqueue:service/to_main=from-worker => Ok(())");
    let logs = proxy.wait_for_log("item=from-worker");
    let got = events(&logs, "service service", "on_queue_ready");
    assert_eq!(got.len(), 1, "{logs}");
    assert_eq!(got[0].0, "main", "the singleton dequeues it on the main thread:\n{logs}");
    // A name in another vm_id is another queue: the filter's own vm_id has no `to_main`.
    let r = http1(proxy.ingress(), "GET", "/", &[("x-probe", "enqueue:to_main=x")], b"");
    assert_eq!(r.status, 200);
    proxy.wait_for_log("probe enqueue:to_main=x => no such queue");
}

/// A `/trailers` exchange with the client's trailer `x-client: c` and a probe that adds
/// `x-filter: f` to the request's and `x-filter-resp: r` to the response's: the upstream got
/// both request trailers, and the client both the upstream's (`x-upstream-trailer: up`) and the filter's.
fn trailers_went_both_ways(r: &support::Trailed, web: &Upstream, proxy: &Proxy) {
    assert_eq!((r.status, r.body.as_slice()), (200, b"web trailers abc".as_slice()), "{r:?}");
    let seen = web.last();
    assert_eq!(
        seen.trailers,
        vec![("x-client".to_string(), "c".to_string()), ("x-filter".into(), "f".into())],
        "{seen:?}\n{}",
        proxy.logs()
    );
    assert_eq!(r.trailer("x-upstream-trailer").as_deref(), Some("up"), "{r:?}");
    assert_eq!(r.trailer("x-filter-resp").as_deref(), Some("r"), "{r:?}");
}

#[test]
fn trailers_go_through_wasm_filters_over_h2c() {
    let web = Upstream::http("web");
    let probe = util::filter("probe");
    let proxy = Proxy::start_yaml(&support::single_filter_bootstrap(&probe, "FAIL_CLOSED"), &[("backend", &web)], &[]);
    // The client's trailers reach on_request_trailers and the upstream, with the one the filter
    // adds there; the upstream's reach on_response_trailers and the client, with the filter's.
    let r = support::h2c_post_with_trailers(
        proxy.ingress(),
        "/trailers",
        // Named in `trailer`: the upstream is HTTP/1.1 (see docs/proxy.md, Bodies).
        &[
            ("x-probe", "add-trailer:x-filter=f,add-response-trailer:x-filter-resp=r"),
            ("te", "trailers"),
            ("trailer", "x-client"),
        ],
        b"abc",
        &[("x-client", "c")],
    );
    trailers_went_both_ways(&r, &web, &proxy);
    let logs = proxy.wait_for_log("on_response_trailers");
    assert!(logs.contains(" n=1 x-client=c"), "on_request_trailers saw the client's:\n{logs}");
    assert!(logs.contains(" n=1 x-upstream-trailer=up"), "on_response_trailers saw the upstream's:\n{logs}");
}

#[test]
fn trailers_go_through_wasm_filters_over_http1_chunked() {
    let web = Upstream::http("web");
    let probe = util::filter("probe");
    let proxy = Proxy::start_yaml(&support::single_filter_bootstrap(&probe, "FAIL_CLOSED"), &[("backend", &web)], &[]);
    // Chunked request trailers, to which the filter adds one (declared in `trailer`, as HTTP/1.1
    // wants it), and the upstream's, to which it adds one too.
    let r = support::http1_chunked_with_trailers(
        proxy.ingress(),
        "/trailers",
        &[("x-probe", "add-trailer:x-filter=f,add-response-trailer:x-filter-resp=r")],
        b"abc",
        &[("x-client", "c")],
    );
    trailers_went_both_ways(&r, &web, &proxy);

    // No trailers given: the filter adds them in its last body callback (Envoy's
    // addDecodedTrailers / addEncodedTrailers), on the request and on a response that had none.
    let r = support::http1_chunked_with_trailers(
        proxy.ingress(),
        "/trailers",
        &[("x-probe", "add-trailer:x-filter=f")],
        b"abc",
        &[],
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(web.last().trailers, vec![("x-filter".to_string(), "f".to_string())]);
    let r = support::http1_chunked_with_trailers(
        proxy.ingress(),
        "/",
        &[("x-probe", "add-response-trailer:x-filter-resp=r")],
        b"abc",
        &[],
    );
    assert_eq!((r.status, r.body.as_slice()), (200, b"web POST / abc".as_slice()), "{r:?}");
    assert_eq!(r.trailers, vec![("x-filter-resp".to_string(), "r".to_string())], "{r:?}");
}

/// The log lines `[level][THREAD] wasm log LABEL: EVENT ...`, as (thread, line) pairs.
fn events<'a>(logs: &'a str, label: &str, event: &str) -> Vec<(&'a str, &'a str)> {
    let needle = format!("] wasm log {label}: {event} ");
    logs.lines()
        .filter(|l| l.contains(&needle))
        .filter_map(|l| Some((l.split('[').nth(2)?.split(']').next()?, l)))
        .collect()
}

#[test]
fn one_main_vm_per_filter_per_process_and_one_per_worker() {
    let web = Upstream::http("web");
    let probe = util::filter("probe");
    // The listener's filter and a (non-singleton) service, both ticking every 20 ms.
    let proxy =
        Proxy::start_yaml(&support::with_configured_service(&probe, false, "tick=20"), &[("backend", &web)], &[]);
    assert_eq!(http1(proxy.ingress(), "GET", "/", &[], b"").status, 200);
    // Envoy with --concurrency 2: a main-thread VM and 2 worker VMs per filter configuration.
    // Each thread prints its VMs' lines on its own loop: wait until every thread has printed.
    proxy.wait_for_log("[main] wasm log service service: on_configure");
    for thread in ["worker_0", "worker_1"] {
        proxy.wait_for_log(&format!("[{thread}] wasm log service service: on_configure"));
    }
    let logs = proxy.logs();
    for label in ["probe ", "service service"] {
        let mut threads: Vec<&str> = events(&logs, label, "on_vm_start").into_iter().map(|(t, _)| t).collect();
        threads.sort_unstable();
        assert_eq!(threads, ["main", "worker_0", "worker_1"], "{label}: one VM per thread:\n{logs}");
    }
    // Each VM ticks once per period: once the main VM ticked 25 times, no thread ticked twice as
    // often (a second main VM on a worker thread would).
    let start = Instant::now();
    let logs = loop {
        let logs = proxy.logs();
        if events(&logs, "probe ", "on_tick").iter().filter(|(t, _)| *t == "main").count() >= 25 {
            break logs;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "the main VM does not tick:\n{logs}");
        std::thread::sleep(Duration::from_millis(20));
    };
    for label in ["probe ", "service service"] {
        let ticks = events(&logs, label, "on_tick");
        for thread in ["main", "worker_0", "worker_1"] {
            let n = ticks.iter().filter(|(t, _)| *t == thread).count();
            assert!((10..=35).contains(&n), "{label} ticked {n} times on {thread} in 25 main periods:\n{logs}");
        }
    }
}

/// One `GET /stats/prometheus` on a kept-alive connection; the body, read by its length.
fn scrape_on(stream: &mut TcpStream) -> String {
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    stream.write_all(b"GET /stats/prometheus HTTP/1.1\r\nhost: admin\r\n\r\n").expect("write");
    let mut raw = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        let n = stream.read(&mut buf).expect("read the page");
        assert!(n > 0, "the admin closed a kept-alive connection");
        raw.extend_from_slice(&buf[..n]);
        let Some(split) = raw.windows(4).position(|w| w == b"\r\n\r\n") else { continue };
        let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .expect("the page has a content-length");
        if raw.len() >= split + 4 + length {
            return String::from_utf8_lossy(&raw[split + 4..split + 4 + length]).into_owned();
        }
    }
}

#[test]
fn large_bodies_stream_through_ebb_wasm_intact_in_bounded_memory() {
    let web = Upstream::http("web");
    let api = Upstream::http("api");
    let proxy = Proxy::staging(&web, &api, None, |y| y);
    assert_eq!(http1(proxy.ingress(), "GET", "/", &[], b"").status, 200);
    let before = proxy.peak_rss_kib();
    const N: u64 = 64 << 20;
    // Upload: the upstream counts what it gets as it comes.
    let r = support::upload(proxy.ingress(), "/count", &[], N);
    assert_eq!((r.status, r.header("x-upstream").as_deref()), (200, Some("web")), "{r:?}");
    assert_eq!(String::from_utf8_lossy(&r.body), format!("{N} {}", support::pattern_sum(N)));
    // Download: read as it comes.
    let (r, n, sum) = support::download(proxy.ingress(), &format!("/bytes?n={N}"), &[]);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!((n, sum), (N, support::pattern_sum(N)), "every byte, in order");
    // A body held whole on the way would have grown the proxy by 64 MiB at least.
    let grown = proxy.peak_rss_kib().saturating_sub(before);
    assert!(grown < 24 << 10, "the proxy's peak memory grew by {grown} KiB for 2 x 64 MiB");
}

#[test]
fn a_buffering_filter_over_the_buffer_limit_gets_envoys_413_and_500() {
    let web = Upstream::http("web");
    let probe = util::filter("probe");
    let yaml = support::single_filter_bootstrap(&probe, "FAIL_CLOSED");
    let proxy = Proxy::start_yaml(&yaml, &[("backend", &web)], &[]);
    // Request: the probe holds the body to its end (StopIterationAndBuffer); 1 MiB is the limit.
    let r = support::upload(proxy.ingress(), "/count", &[("x-probe", "buffer-body")], 2 << 20);
    assert_eq!((r.status, String::from_utf8_lossy(&r.body).as_ref()), (413, "Payload Too Large"), "{r:?}");
    // A filter that lets the body go streams it, whatever its size.
    let r = support::upload(proxy.ingress(), "/count", &[], 2 << 20);
    assert_eq!(String::from_utf8_lossy(&r.body), format!("{} {}", 2 << 20, support::pattern_sum(2 << 20)));
    // Response: held to its end over the limit is a 500; under it, the whole body arrives.
    let buffer = [("x-probe", "buffer-response-body")];
    let (r, _, _) = support::download(proxy.ingress(), &format!("/bytes?n={}", 2 << 20), &buffer);
    assert_eq!(r.status, 500, "{r:?}");
    let (r, n, sum) = support::download(proxy.ingress(), &format!("/bytes?n={}", 512 << 10), &buffer);
    assert_eq!((r.status, n, sum), (200, 512 << 10, support::pattern_sum(512 << 10)), "{r:?}");
    // The probe saw the response body whole at its end.
    proxy.wait_for_log(&format!(" size={} eos=true", 512 << 10));
}

#[test]
fn a_strict_dns_cluster_follows_its_name_at_the_dns_refresh_rate() {
    // Two upstreams on one port of two loopback addresses; a DNS server on loopback names one,
    // then the other. (A real resolver over UDP, as the cluster's `dns_resolvers` says: the
    // system's resolver reads /etc/hosts, which a test may not change.)
    let first = Upstream::http("first");
    let _second = Upstream::http_on("second", std::net::SocketAddr::from(([127, 0, 0, 2], first.addr.port())));
    let dns = support::Dns::start([127, 0, 0, 1]);
    let yaml = support::strict_dns_bootstrap(dns.addr, "web.ebb.test", first.addr.port(), "0.2s");
    let proxy = Proxy::start_yaml(&yaml, &[], &[]);
    let upstream = || http1(proxy.ingress(), "GET", "/", &[], b"").header("x-upstream");
    assert_eq!(upstream().as_deref(), Some("first"));
    dns.answer([127, 0, 0, 2]);
    let start = Instant::now();
    while upstream().as_deref() != Some("second") {
        assert!(start.elapsed() < Duration::from_secs(10), "the new address was never used:\n{}", proxy.logs());
        std::thread::sleep(Duration::from_millis(50));
    }
    // Picked up within a few refreshes, without a restart, and for good.
    assert!(start.elapsed() < Duration::from_secs(3), "took {:?}", start.elapsed());
    for _ in 0..5 {
        assert_eq!(upstream().as_deref(), Some("second"));
    }
    // The idle connections to the address the name left are closed, as Envoy drains the pools of
    // removed hosts (within a second or so of the change).
    let start = Instant::now();
    while first.open_connections() > 0 {
        assert!(start.elapsed() < Duration::from_secs(10), "connections to the old address stay open");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        proxy.logs().contains("cluster backend: DNS resolution changed the hosts to [127.0.0.2:"),
        "{}",
        proxy.logs()
    );
}
