//! The control API's hardening, through the real ebb.wasm: signatures bound to the proxy they
//! were made for, a kill switch that works whatever the replay memory holds, control paths that
//! cannot be slipped past under another spelling, ebb's headers kept from the upstream, bodies
//! judged from the request, key hygiene, and configurations that disarm rather than arm or fail.

use ebb_engine::auth::{sign, sign_v1, MAX_REMEMBERED, SIGNATURE_HEADER, TIMESTAMP_HEADER};
use ebb_engine::control::Response;
use ebb_harness::{Proxy, Step};

use super::{config, gauge, get, proxy, KEY};

const HOST: &str = "ebb-control";

/// Sends raw request headers on worker 0: the first step and what reached the upstream.
fn send(p: &mut Proxy, headers: &[(&str, &str)], end_of_stream: bool) -> (Step, Option<Vec<(String, String)>>) {
    let mut http = p.worker(0).unwrap().http();
    let step = http.request_headers(headers, end_of_stream);
    let upstream = http.upstream_request().map(|m| m.headers.to_strings());
    if matches!(step, Step::Continue) {
        http.response_headers(&[(":status", "200")], true);
    }
    http.finish().unwrap();
    (step, upstream)
}

fn reply(step: Step) -> (u32, Response) {
    let Step::LocalReply(reply) = step else { panic!("expected a local reply, got {step:?}") };
    let body: Response = serde_json::from_slice(&reply.body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&reply.body)));
    (reply.status, body)
}

fn now_s(p: &Proxy) -> u64 {
    p.clock().now_ns() / 1_000_000_000
}

/// A call signed (v2) for `signed_for`, presented at `authority`.
fn signed_call(
    p: &mut Proxy,
    method: &str,
    path: &str,
    command: &str,
    signed_for: &str,
    authority: &str,
) -> (u32, Response) {
    let ts = now_s(p);
    let sig = sign(KEY.as_bytes(), method, signed_for, path, ts, command.as_bytes());
    present(p, method, path, command, authority, ts, &sig)
}

fn present(
    p: &mut Proxy,
    method: &str,
    path: &str,
    command: &str,
    authority: &str,
    ts: u64,
    sig: &str,
) -> (u32, Response) {
    let ts = ts.to_string();
    let mut headers = vec![
        (":method", method),
        (":path", path),
        (":authority", authority),
        (TIMESTAMP_HEADER, &ts),
        (SIGNATURE_HEADER, sig),
    ];
    if !command.is_empty() {
        headers.push(("x-ebb-command", command));
    }
    let (step, upstream) = send(p, &headers, true);
    assert!(upstream.is_none(), "a control call never reaches the upstream");
    reply(step)
}

fn call(p: &mut Proxy, method: &str, path: &str, command: &str) -> (u32, Response) {
    signed_call(p, method, path, command, HOST, HOST)
}

fn messages(p: &Proxy) -> Vec<String> {
    p.logs().iter().map(|l| l.message.clone()).collect()
}

#[test]
fn a_signature_is_good_only_at_the_authority_it_names() {
    let mut p = proxy(&config(""), 1);
    let drain = r#"{"id":"d","drain":{"pool":"api","hosts":1}}"#;
    let (status, r) = signed_call(&mut p, "POST", "/.ebb/v1/faults?n=1", drain, "proxy-a:9902", "proxy-b:9902");
    assert_eq!((status, r.error.as_deref()), (401, Some("unauthorized: bad signature")));
    // Host names are compared without regard to case.
    let (status, r) = signed_call(&mut p, "POST", "/.ebb/v1/faults?n=2", drain, "proxy-a:9902", "Proxy-A:9902");
    assert_eq!(status, 201, "{r:?}");
    assert_eq!(gauge(&p, "ebb.commands_refused_total"), 1);
}

#[test]
fn v1_signatures_need_the_explicit_switch() {
    let v1 = |p: &Proxy, method: &str, path: &str| sign_v1(KEY.as_bytes(), method, path, now_s(p), b"");
    let mut p = proxy(&config(""), 1);
    let (ts, sig) = (now_s(&p), v1(&p, "GET", "/.ebb/v1/state"));
    let (status, r) = present(&mut p, "GET", "/.ebb/v1/state", "", HOST, ts, &sig);
    assert_eq!(status, 401);
    assert!(r.error.unwrap().contains("accept_v1_signatures"));

    let legacy = config("").replace(r#""control":{"key":"#, r#""control":{"accept_v1_signatures":true,"key":"#);
    let mut p = proxy(&legacy, 1);
    let (ts, sig) = (now_s(&p), v1(&p, "GET", "/.ebb/v1/state"));
    assert_eq!(present(&mut p, "GET", "/.ebb/v1/state", "", HOST, ts, &sig).0, 200);
    // v2 works there too.
    assert_eq!(call(&mut p, "GET", "/.ebb/v1/state", "").0, 200);
}

#[test]
fn the_kill_switch_works_when_the_replay_memory_is_full() {
    let one_fault = config("").replace(r#""max_drain_fraction":0.5"#, r#""max_drain_fraction":0.5,"max_faults":1"#);
    let mut p = proxy(&one_fault, 2);
    let drain = r#"{"id":"held","ttl":"1h","drain":{"pool":"api","hosts":2}}"#;
    assert_eq!(call(&mut p, "POST", "/.ebb/v1/faults?n=0", drain).0, 201);
    // Fill the memory of used signatures: each signed add is remembered, even when refused
    // (here over max_faults).
    for n in 1..MAX_REMEMBERED {
        let (status, r) = call(&mut p, "POST", &format!("/.ebb/v1/faults?n={n}"), r#"{"abort":{"status":503}}"#);
        assert_eq!(status, 422, "{n}: {r:?}");
    }
    let (status, r) = call(&mut p, "POST", "/.ebb/v1/faults?n=full", r#"{"abort":{"status":503}}"#);
    assert_eq!(status, 401);
    assert!(r.error.unwrap().contains("too many signed requests"));
    // Clearing needs no room in it: one fault, a pool, everything.
    assert_eq!(call(&mut p, "DELETE", "/.ebb/v1/faults/nope", "").0, 404, "no such fault, but not refused");
    let (status, r) = call(&mut p, "POST", "/.ebb/v1/pools/api/restore", "");
    assert_eq!((status, r.cleared), (200, Some(vec!["held".to_string()])));
    let (status, r) = call(&mut p, "DELETE", "/.ebb/v1/faults", "");
    assert_eq!((status, r.cleared), (200, Some(vec![])));
}

#[test]
fn a_replayed_clear_is_harmless_and_adds_stay_single_use() {
    let mut p = proxy(&config(""), 2);
    let ts = now_s(&p);
    let add = r#"{"id":"d","drain":{"pool":"api","hosts":1}}"#;
    let add_sig = sign(KEY.as_bytes(), "POST", HOST, "/.ebb/v1/faults", ts, add.as_bytes());
    assert_eq!(present(&mut p, "POST", "/.ebb/v1/faults", add, HOST, ts, &add_sig).0, 201);
    let (status, r) = present(&mut p, "POST", "/.ebb/v1/faults", add, HOST, ts, &add_sig);
    assert_eq!(status, 401, "{r:?}");
    assert!(r.error.unwrap().contains("already used"));

    let clear_sig = sign(KEY.as_bytes(), "DELETE", HOST, "/.ebb/v1/faults", ts, b"");
    for expected in [vec!["d".to_string()], vec![]] {
        let (status, r) = present(&mut p, "DELETE", "/.ebb/v1/faults", "", HOST, ts, &clear_sig);
        assert_eq!((status, r.cleared), (200, Some(expected)));
    }
    assert_eq!(gauge(&p, "ebb.active_faults"), 0);
}

#[test]
fn a_rollout_that_overflows_is_refused_not_half_applied() {
    let mut p = proxy(&config(""), 1);
    // 3 x 71 million days of milliseconds wraps a u64 to a few seconds: the filter used to
    // accept it, drain the first batch and report no deploy in progress.
    let deploy = r#"{"ttl":"1h","deploy":{"pool":"api","batches":3,"batch_interval":"71172382953d"}}"#;
    let (status, r) = call(&mut p, "POST", "/.ebb/v1/faults", deploy);
    assert_eq!(status, 422, "{r:?}");
    let error = r.error.unwrap();
    assert!(error.contains("deploy.batch_interval") && error.contains("limits.max_ttl 12h"), "{error}");
    p.advance(std::time::Duration::from_secs(1));
    assert_eq!(gauge(&p, "ebb.pool.api.available_hosts"), 10);
    assert_eq!(gauge(&p, "ebb.active_faults"), 0);
}

#[test]
fn look_alikes_of_the_control_path_are_refused_not_forwarded() {
    for configuration in [config(""), r#"{"pools":"disarmed"}"#.to_string()] {
        let mut p = proxy(&configuration, 1);
        for path in [
            "/.EBB/v1/state",
            "/%2eebb/v1/state",
            "/%2Eebb/v1/faults",
            "/x/../.ebb/v1/state",
            "//.ebb/v1/state",
            "/.ebb/v1/./state",
            "/.Ebb/v1",
        ] {
            let (step, upstream) = send(&mut p, &[(":method", "GET"), (":path", path), (":authority", HOST)], true);
            assert!(upstream.is_none(), "{path} reached the upstream");
            let (status, r) = reply(step);
            assert_eq!(status, 400, "{path}: {r:?}");
            assert!(r.error.unwrap().contains("not a control path as written"), "{path}");
        }
        assert!(messages(&p).iter().any(|m| m.contains("refused") && m.contains("%2eebb")));
    }
    // Ordinary paths that only resemble it still pass.
    let mut p = proxy(&config(""), 1);
    for path in ["/.ebbx/state", "/app/.ebb/v1/state", "/static/a.js"] {
        let (step, upstream) =
            send(&mut p, &[(":method", "GET"), (":path", path), (":authority", "web.example")], true);
        assert!(matches!(step, Step::Continue) && upstream.is_some(), "{path}: {step:?}");
    }
}

#[test]
fn ebb_headers_never_reach_the_upstream() {
    let off = r#"{"pools":[{"name":"web","match":{"authority":"web.example"},"hosts":4,"capacity_per_host":10}]}"#;
    // A signature in any case, even an empty one, takes the timestamp and command with it.
    let signatures = [(SIGNATURE_HEADER, "v2=00"), ("X-Ebb-Signature", ""), ("X-EBB-SIGNATURE", "v1=zz")];
    for configuration in [config(""), off.to_string(), r#"{"pools":"disarmed"}"#.to_string()] {
        for signature in signatures {
            let mut p = proxy(&configuration, 1);
            let mut headers = get("web.example");
            for (k, v) in [signature, (TIMESTAMP_HEADER, "1"), ("x-ebb-command", "{}"), ("x-kept", "1")] {
                headers.push((k.to_string(), v.to_string()));
            }
            let (step, upstream) =
                send(&mut p, &headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect::<Vec<_>>(), true);
            assert!(matches!(step, Step::Continue), "{configuration}: {step:?}");
            let upstream = upstream.expect("forwarded");
            let names: Vec<String> = upstream.iter().map(|(k, _)| k.to_ascii_lowercase()).collect();
            assert!(names.iter().any(|n| n == "x-kept"), "{names:?}");
            for gone in [SIGNATURE_HEADER, TIMESTAMP_HEADER, "x-ebb-command"] {
                assert!(
                    !names.iter().any(|n| n == gone),
                    "{configuration}, {signature:?}: {gone} forwarded: {names:?}"
                );
            }
        }
    }
}

#[test]
fn bodies_are_judged_from_the_request_not_from_end_of_stream() {
    let mut p = proxy(&config(""), 1);
    // As ngx_wasm_module calls it: end_of_stream = 0 on the headers of a body-less GET.
    let unsigned = [(":method", "GET"), (":path", "/.ebb/v1/state"), (":authority", HOST)];
    let (status, r) = reply(send(&mut p, &unsigned, false).0);
    assert_eq!(status, 401, "{r:?}");
    let ts = now_s(&p).to_string();
    let sig = sign(KEY.as_bytes(), "POST", HOST, "/.ebb/v1/pools/api/restore", now_s(&p), b"");
    let restore = [
        (":method", "POST"),
        (":path", "/.ebb/v1/pools/api/restore"),
        (":authority", HOST),
        (TIMESTAMP_HEADER, ts.as_str()),
        (SIGNATURE_HEADER, sig.as_str()),
    ];
    assert_eq!(reply(send(&mut p, &restore, false).0).0, 200, "a body-less signed POST");
    // A body, even with the command in its header: the README's 400.
    let add = r#"{"drain":{"pool":"api","hosts":1}}"#;
    let sig = sign(KEY.as_bytes(), "POST", HOST, "/.ebb/v1/faults", now_s(&p), add.as_bytes());
    let mut with_body = vec![
        (":method", "POST"),
        (":path", "/.ebb/v1/faults"),
        (":authority", HOST),
        (TIMESTAMP_HEADER, ts.as_str()),
        (SIGNATURE_HEADER, sig.as_str()),
        ("x-ebb-command", add),
    ];
    for framing in [("content-length", "2"), ("transfer-encoding", "chunked")] {
        with_body.push(framing);
        let (status, r) = reply(send(&mut p, &with_body, false).0);
        assert_eq!(status, 400, "{framing:?}: {r:?}");
        assert!(r.error.unwrap().contains("x-ebb-command header, not the request body"));
        with_body.pop();
    }
    assert_eq!(gauge(&p, "ebb.active_faults"), 0);
    // Every refusal is logged, on one bounded line.
    let refusals: Vec<String> = messages(&p).into_iter().filter(|m| m.contains("refused")).collect();
    assert_eq!(refusals.len(), 3, "{refusals:?}");
    assert_eq!(gauge(&p, "ebb.commands_refused_total"), 3);
}

#[test]
fn refusals_of_huge_requests_log_one_bounded_line() {
    let mut p = proxy(&config(""), 1);
    let path = format!("/.ebb/v1/{}", "z".repeat(50_000));
    let (status, _) = call(&mut p, "GET", &path, "");
    assert_eq!(status, 404);
    let id = "Q".repeat(10_000);
    let (status, r) = call(&mut p, "POST", "/.ebb/v1/faults", &format!(r#"{{"id":"{id}","abort":{{"status":503}}}}"#));
    assert_eq!(status, 400);
    assert!(r.error.unwrap().len() < 300);
    for line in messages(&p).iter().filter(|m| m.contains("refused")) {
        assert!(line.len() <= 600, "{} bytes: {}", line.len(), &line[..120]);
    }
}

#[test]
fn published_keys_turn_the_control_api_off_and_short_keys_warn() {
    let published = config("").replace(KEY, "a-secret-of-16-bytes-or-more");
    let mut p = proxy(&published, 1);
    assert_eq!(gauge(&p, "ebb.armed"), 1, "the filter itself stays armed");
    assert!(
        messages(&p).iter().any(|m| m.contains("example key") && m.contains("control API off")),
        "{:?}",
        messages(&p)
    );
    let ts = now_s(&p);
    let sig = sign(b"a-secret-of-16-bytes-or-more", "DELETE", HOST, "/.ebb/v1/faults", ts, b"");
    let (status, r) = present(&mut p, "DELETE", "/.ebb/v1/faults", "", HOST, ts, &sig);
    assert_eq!(status, 503, "{r:?}");
    assert!(r.error.unwrap().starts_with("control API off"));
    let (step, _) = send(&mut p, &[(":method", "GET"), (":path", "/"), (":authority", "web.example")], true);
    assert!(matches!(step, Step::Continue));

    let p = proxy(&config(""), 1);
    let warnings: Vec<String> = messages(&p).into_iter().filter(|m| m.contains("control.key has 22 bytes")).collect();
    assert!(!warnings.is_empty(), "{:?}", messages(&p));
    let strong = proxy(&config("").replace(KEY, &"k".repeat(40)), 1);
    assert!(!messages(&strong).iter().any(|m| m.contains("control.key")), "{:?}", messages(&strong));
}

#[test]
fn configurations_that_are_not_objects_or_too_large_disarm() {
    for configuration in ["[]".to_string(), r#"{"limits":[]}"#.to_string()] {
        let p = proxy(&configuration, 1);
        assert_eq!(gauge(&p, "ebb.armed"), 0, "{configuration}");
        assert!(messages(&p).iter().any(|m| m.contains("disarmed") && m.contains("expected a JSON object")));
    }
    // 100 MB: refused unread, so the VM (128 MiB of linear memory) does not fail.
    let mut big = br#"{"pools":[],"header_faults":false,"x":""#.to_vec();
    big.resize(100 << 20, b' ');
    let mut p = proxy(std::str::from_utf8(&big).unwrap(), 1);
    assert_eq!(gauge(&p, "ebb.armed"), 0);
    assert!(messages(&p).iter().any(|m| m.contains("disarmed") && m.contains("104857600 bytes")), "{:?}", messages(&p));
    let (step, _) = send(&mut p, &[(":method", "GET"), (":path", "/"), (":authority", "web.example")], true);
    assert!(matches!(step, Step::Continue), "{step:?}");
    let thread = p.worker(0).unwrap().thread();
    assert!(p.failure(thread).is_none());
}

#[test]
fn a_huge_invalid_id_is_not_written_whole_into_the_log() {
    let id = "I".repeat(900 * 1024);
    let configuration = config(&format!(r#","faults":[{{"id":"{id}","abort":{{"status":503}}}}]"#));
    let p = proxy(&configuration, 2);
    assert_eq!(gauge(&p, "ebb.armed"), 0);
    let lines = messages(&p);
    assert!(lines.iter().any(|m| m.contains("disarmed") && m.contains(&format!("({} bytes)", id.len()))), "{lines:?}");
    for line in lines {
        assert!(line.len() < 1500, "{} bytes logged", line.len());
    }
}
