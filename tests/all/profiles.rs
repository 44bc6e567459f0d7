//! Host profiles: the same probe requests under Envoy, Kong's ngx_wasm_module and the strict
//! intersection. Each quirk is accepted by Envoy and refused (or reported differently) by
//! ngx-wasm and strict, and a trap names the quirk and the profile.

use std::process::Command;
use std::time::Duration;

use ebb_harness::{Clock, FailurePolicy, Fault, HostError, HostProfile, Proxy, ProxyOptions, Step};

use crate::util::{self, messages, result_of};

const KONG: [HostProfile; 2] = [HostProfile::NgxWasm, HostProfile::Strict];

fn options(profile: HostProfile, config: &str) -> ProxyOptions {
    ProxyOptions {
        plugin_config: config.as_bytes().to_vec(),
        log_level: ebb_harness::LogLevel::Trace,
        host_profile: profile,
        ..ProxyOptions::default()
    }
}

fn probe(profile: HostProfile, config: &str) -> Proxy {
    util::probe_with(options(profile, config))
}

/// Runs `commands` in one body-less request; returns the request step.
fn run(profile: HostProfile, commands: &str) -> (Proxy, Step) {
    let mut proxy = probe(profile, "");
    let step = util::exchange(&mut proxy, 0, commands);
    (proxy, step)
}

/// The step failed with a trap that names the profile, the quirk and ngx_wasm_module's source.
fn assert_quirk(profile: HostProfile, step: &Step, quirk: &str, source: &str) -> HostError {
    let Step::Failed(e) = step else { panic!("{profile}: expected a trap for {quirk:?}, got {step:?}") };
    let text = e.to_string();
    assert_eq!(e.fault(), Fault::Filter, "{text}");
    for part in [&format!("host profile {profile}: "), quirk, "traps in Kong's ngx_wasm_module", source] {
        assert!(text.contains(part), "{profile}: {part:?} missing from the error: {text}");
    }
    e.clone()
}

#[test]
fn increments_on_gauges_and_histograms_trap_where_only_counters_count() {
    let (proxy, step) = run(HostProfile::Envoy, "metric:gauge:g=2,metric:gauge:g=-1");
    assert!(matches!(step, Step::Continue), "{step:?}");
    assert_eq!(result_of(&proxy, "metric:gauge:g=-1"), "status=0");
    assert_eq!(proxy.metric("g").expect("gauge").value, 1);
    for profile in KONG {
        let (proxy, step) = run(profile, "metric:gauge:g=1");
        assert_quirk(profile, &step, "proxy_increment_metric on a gauge", "ngx_proxy_wasm_hfuncs_increment_metric");
        assert_eq!(proxy.metric("g").expect("defined before the trap").value, 0);
        let (_, step) = run(profile, "metric:histogram:h=1");
        assert_quirk(profile, &step, "proxy_increment_metric on a histogram", "metric not a counter");
        let (proxy, step) = run(profile, "metric:counter:c=3");
        assert!(matches!(step, Step::Continue), "{profile}: counters still count: {step:?}");
        assert_eq!(proxy.metric("c").expect("counter").value, 3);
    }
}

#[test]
fn counter_deltas_below_one_are_refused_by_envoy_and_strict_and_subtract_in_kong() {
    for (profile, status, value) in [
        (HostProfile::Envoy, "status=2", 5),
        (HostProfile::NgxWasm, "status=0", 4),
        (HostProfile::Strict, "status=2", 5),
    ] {
        let (proxy, step) = run(profile, "metric:counter:c=5,metric:counter:c=-1");
        assert!(matches!(step, Step::Continue), "{profile}: {step:?}");
        assert_eq!(result_of(&proxy, "metric:counter:c=-1"), status, "{profile}");
        assert_eq!(proxy.metric("c").expect("counter").value, value, "{profile}");
    }
}

#[test]
fn records_on_counters_and_reads_of_histograms_trap() {
    let (proxy, step) = run(HostProfile::Envoy, "record:counter:c=3,metric-get:histogram:h");
    assert!(matches!(step, Step::Continue), "{step:?}");
    assert_eq!(result_of(&proxy, "record:counter:c=3"), "Ok(())");
    assert_eq!(result_of(&proxy, "metric-get:histogram:h"), "Err(BadArgument)");
    for profile in KONG {
        let (_, step) = run(profile, "record:counter:c=3");
        assert_quirk(profile, &step, "proxy_record_metric on a counter", "metric is a counter");
        let (_, step) = run(profile, "metric-get:histogram:h");
        assert_quirk(profile, &step, "proxy_get_metric on a histogram", "metric is a histogram");
        let (proxy, step) = run(profile, "record:gauge:g=7,record:histogram:h=7,metric-get:gauge:g");
        assert!(matches!(step, Step::Continue), "{profile}: {step:?}");
        assert_eq!(result_of(&proxy, "metric-get:gauge:g"), "Ok(7)");
    }
}

#[test]
fn the_tick_period_is_set_from_the_root_context_only() {
    let mut proxy = probe(HostProfile::Envoy, "");
    let step = util::exchange(&mut proxy, 0, "tick:50");
    assert!(matches!(step, Step::Continue), "{step:?}");
    assert_eq!(result_of(&proxy, "tick:50"), "Ok(())");
    assert!(proxy.advance(Duration::from_millis(120)).is_empty());
    let ticks = messages(&proxy).iter().filter(|m| m.starts_with("on_tick")).count();
    assert_eq!(ticks, 2, "Envoy sets the worker's period from an HTTP context");
    for profile in KONG {
        let (_, step) = run(profile, "tick:50");
        assert_quirk(
            profile,
            &step,
            "proxy_set_tick_period_milliseconds outside the root context",
            "can only set tick_period in root context",
        );
    }
}

#[test]
fn a_tick_period_once_set_cannot_change() {
    let mut proxy = probe(HostProfile::Envoy, "tick=100;tick_again=30");
    assert_eq!(result_of(&proxy, "tick_again"), "Ok(())");
    assert!(proxy.advance(Duration::from_millis(100)).is_empty());
    assert_eq!(proxy.metric("probe.ticks").expect("counter").value, 6, "3 ticks of 30 ms on 2 VMs");
    for profile in KONG {
        let Err(err) = Proxy::new(&util::plugin("probe"), options(profile, "tick=100;tick_again=30"), Clock::default())
        else {
            panic!("{profile}: the second period must trap in on_configure")
        };
        let text = err.to_string();
        assert!(text.contains("proxy_on_configure"), "{text}");
        assert!(
            text.contains(&format!(
                "host profile {profile}: proxy_set_tick_period_milliseconds when a period is already set"
            )),
            "{text}"
        );
        assert!(text.contains("tick_period already set"), "{text}");
        // Nor can it be turned off: the module refuses any call once a period is set, 0 too.
        let Err(err) = Proxy::new(&util::plugin("probe"), options(profile, "tick=100;tick_again=0"), Clock::default())
        else {
            panic!("{profile}: turning the timer off must trap too")
        };
        assert!(err.to_string().contains("tick_period already set"), "{err}");
    }
}

#[test]
fn header_callbacks_get_end_of_stream_0_even_without_a_body() {
    for (profile, eos) in [(HostProfile::Envoy, true), (HostProfile::NgxWasm, false), (HostProfile::Strict, false)] {
        let (proxy, step) = run(profile, "");
        assert!(matches!(step, Step::Continue), "{step:?}");
        let logs = messages(&proxy);
        for callback in ["on_request_headers", "on_response_headers"] {
            let line = logs.iter().find(|l| l.starts_with(callback)).unwrap_or_else(|| panic!("{logs:#?}"));
            assert!(line.contains(&format!(" eos={eos}")), "{profile}: {line}");
        }
    }
}

#[test]
fn shared_data_writes_need_the_current_cas_in_kong() {
    // First write creates the key (no CAS), the second overwrites it unconditionally, the third
    // creates another key with a CAS that names no version.
    let commands = "shared-set:k=a,shared-set:k=b,shared-set:n=v@99,shared-get:k";
    let (proxy, step) = run(HostProfile::Envoy, commands);
    assert!(matches!(step, Step::Continue), "{step:?}");
    assert_eq!(result_of(&proxy, "shared-set:k=b"), "Ok(())");
    assert_eq!(result_of(&proxy, "shared-set:n=v@99"), "Ok(())", "cpp-host ignores the CAS of a new key");
    assert_eq!(proxy.shared_data(b"k").map(|(v, _)| v), Some(b"b".to_vec()));
    for profile in KONG {
        let (proxy, step) = run(profile, commands);
        assert!(matches!(step, Step::Continue), "{profile}: {step:?}");
        assert_eq!(result_of(&proxy, "shared-set:k=a"), "Ok(())", "{profile}");
        assert_eq!(result_of(&proxy, "shared-set:k=b"), "Err(CasMismatch)", "{profile}");
        assert_eq!(result_of(&proxy, "shared-set:n=v@99"), "Err(CasMismatch)", "{profile}");
        assert_eq!(proxy.shared_data(b"k").map(|(v, _)| v), Some(b"a".to_vec()), "{profile}");
        assert_eq!(proxy.shared_data(b"n"), None, "{profile}");
        // Read-modify-write with the CAS it read works everywhere.
        let (proxy, step) = run(profile, "shared-inc:hits,shared-inc:hits");
        assert!(matches!(step, Step::Continue), "{profile}: {step:?}");
        assert_eq!(result_of(&proxy, "shared-inc:hits"), "Ok(2)", "{profile}");
    }
}

#[test]
fn shared_data_traps_without_a_namespace() {
    let no_namespace = |profile| ProxyOptions { shm_kv_namespace: false, ..options(profile, "") };
    let mut proxy = util::probe_with(no_namespace(HostProfile::Envoy));
    let step = util::exchange(&mut proxy, 0, "shared-get:k,shared-set:k=v");
    assert!(matches!(step, Step::Continue), "Envoy has no such setting: {step:?}");
    for profile in KONG {
        let mut proxy = util::probe_with(no_namespace(profile));
        let step = util::exchange(&mut proxy, 0, "shared-get:k");
        assert_quirk(profile, &step, "proxy_get_shared_data with no shared-data namespace configured", "shm_kv *");
        let mut proxy = util::probe_with(no_namespace(profile));
        let step = util::exchange(&mut proxy, 0, "shared-set:k=v");
        assert_quirk(
            profile,
            &step,
            "proxy_set_shared_data with no shared-data namespace",
            "could not resolve namespace",
        );
        // With the namespace (the default), the same calls work.
        let (_, step) = run(profile, "shared-get:k,shared-set:k=v");
        assert!(matches!(step, Step::Continue), "{profile}: {step:?}");
    }
}

#[test]
fn local_reply_bodies_reach_the_client_with_a_line_feed() {
    for (profile, body, length) in [
        (HostProfile::Envoy, &b"denied by probe"[..], "15"),
        (HostProfile::NgxWasm, b"denied by probe\n", "16"),
        (HostProfile::Strict, b"denied by probe\n", "16"),
    ] {
        let mut proxy = probe(profile, "");
        let mut http = proxy.worker(0).expect("worker").http();
        let Step::LocalReply(reply) = http.request_headers(&util::request("local-reply:403"), true) else {
            panic!("{profile}: expected a local reply")
        };
        assert_eq!(reply.body, b"denied by probe", "{profile}: the reply as the filter sent it");
        let client = http.client_response().expect("the client got the reply");
        let ctx = http.id().context;
        http.finish().expect("finish");
        assert_eq!(client.body, body, "{profile}");
        assert_eq!(client.headers.get(b"content-length"), Some(length.as_bytes()), "{profile}");
        let seen = format!("on_response_body id={ctx} size={length} eos=true");
        assert!(messages(&proxy).contains(&seen), "{profile}: the filter's response callbacks see it too");
    }
}

#[test]
fn a_second_local_reply_traps_in_kong_and_is_ignored_by_envoy() {
    let commands = "local-reply:403,local-reply:404";
    let (proxy, step) = run(HostProfile::Envoy, commands);
    let Step::LocalReply(reply) = step else { panic!("expected a local reply, got {step:?}") };
    assert_eq!(reply.status, 403, "the first reply wins");
    assert!(messages(&proxy).iter().any(|m| m.contains("second proxy_send_local_response")), "warned");
    for profile in KONG {
        let (_, step) = run(profile, commands);
        assert_quirk(profile, &step, "a second proxy_send_local_response", "local response already stashed");
    }
}

#[test]
fn a_replaced_body_is_cut_to_the_size_it_replaces() {
    for (profile, upstream) in
        [(HostProfile::Envoy, &b"[hello]"[..]), (HostProfile::NgxWasm, b"[hell"), (HostProfile::Strict, b"[hell")]
    {
        let mut proxy = probe(profile, "");
        let mut http = proxy.worker(0).expect("worker").http();
        assert!(matches!(http.request_headers(&util::request("buffer-body"), false), Step::Continue));
        let step = http.request_body(b"hello", true);
        assert!(matches!(step, Step::Continue), "{profile}: {step:?}");
        let got = http.upstream_request().expect("forwarded");
        assert_eq!(got.body, upstream, "{profile}: the probe wraps the body in brackets");
    }
}

#[test]
fn hostcalls_kong_does_not_implement_trap() {
    let (proxy, step) = run(HostProfile::Envoy, "log-level,done,foreign:compress,foreign:no_such_function");
    assert!(matches!(step, Step::Continue), "{step:?}");
    assert_eq!(result_of(&proxy, "done"), "Ok(())");
    assert!(result_of(&proxy, "foreign:compress").starts_with("Ok(Some([120, "), "Envoy registers zlib's compress");
    assert_eq!(result_of(&proxy, "foreign:no_such_function"), "Err(NotFound)");
    assert!(result_of(&proxy, "log-level").starts_with("status=0"));
    for profile in KONG {
        for (command, call) in [("log-level", "proxy_get_log_level"), ("done", "proxy_done")] {
            let (_, step) = run(profile, command);
            assert_quirk(profile, &step, &format!("{call}, which it does not implement,"), "not yet implemented");
        }
        let (_, step) = run(profile, "foreign:compress");
        assert_quirk(profile, &step, "proxy_call_foreign_function", "unknown foreign function");
    }
}

#[test]
fn closing_a_tcp_connection_stays_envoys_while_resetting_an_http_stream_traps() {
    for profile in KONG {
        // Network filters exist in Envoy only: closing a connection keeps Envoy's answer.
        let mut proxy = probe(profile, "type=tcp");
        let mut tcp = proxy.worker(0).expect("worker").tcp();
        assert!(matches!(tcp.new_connection(), Step::Continue));
        let step = tcp.downstream_data(b"please close", false);
        assert!(matches!(&step, Step::Closed { details } if details == "wasm_downstream_close"), "{profile}: {step:?}");
        // An HTTP stream cannot be reset from the filter in Kong (proxy_close_stream is a nop there).
        let (_, step) = run(profile, "close");
        assert_quirk(profile, &step, "proxy_close_stream, which it does not implement,", "ngx_proxy_wasm_hfuncs_nop");
    }
}

#[test]
fn properties_kong_lacks_are_absent_and_it_reports_some_as_text() {
    let commands = "prop:cluster_name,prop:plugin_vm_id,prop:source.address,prop:source.port,prop:plugin_root_id";
    let expect = |profile| -> [&str; 5] {
        match profile {
            HostProfile::Envoy => ["text:backend", "text:probe-vm", "text:127.0.0.1:40000", "None", "text:probe"],
            HostProfile::NgxWasm => ["None", "None", "text:127.0.0.1", "text:40000", "text:1"],
            HostProfile::Strict => ["None", "None", "text:127.0.0.1:40000", "None", "text:probe"],
        }
    };
    for profile in HostProfile::ALL {
        let mut proxy = util::probe_with(ProxyOptions {
            root_id: "probe".into(),
            vm_id: "probe-vm".into(),
            ..options(profile, "")
        });
        let step = util::exchange(&mut proxy, 0, commands);
        assert!(matches!(step, Step::Continue), "{profile}: {step:?}");
        let got: Vec<String> = commands.split(',').map(|c| result_of(&proxy, c)).collect();
        assert_eq!(got, expect(profile), "{profile}");
    }
}

#[test]
fn a_quirk_trap_goes_through_the_failure_policy() {
    for profile in KONG {
        // Fail-closed: the next request on that worker is answered 503 by the host.
        let (mut proxy, step) = run(profile, "metric:gauge:g=1");
        let err = assert_quirk(profile, &step, "on a gauge", "metric not a counter");
        assert!(matches!(&err, HostError::Callback { callback: "proxy_on_request_headers", .. }), "{err:?}");
        let Step::LocalReply(reply) = util::exchange(&mut proxy, 0, "") else { panic!("fail-closed") };
        assert_eq!((reply.status, reply.details.as_str()), (503, "wasm_fail_stream"));
        // Fail-open: the filter is bypassed and traffic flows.
        let mut proxy =
            util::probe_with(ProxyOptions { failure_policy: FailurePolicy::FailOpen, ..options(profile, "") });
        assert!(matches!(util::exchange(&mut proxy, 0, "metric:gauge:g=1"), Step::Failed(_)));
        let mut http = proxy.worker(0).expect("worker").http();
        assert!(matches!(http.request_headers(&util::request(""), true), Step::Continue));
        assert!(http.upstream_request().is_some(), "{profile}: bypassed, the request reaches the upstream");
    }
}

#[test]
fn ebb_request_plays_the_profile_it_is_given() {
    let probe = util::filter("probe");
    let run = |extra: &[&str]| {
        let mut args = vec!["request", "--plugin", probe.to_str().expect("utf-8 path"), "--json"];
        args.extend_from_slice(extra);
        let out = Command::new(util::ebb_binary()).args(&args).output().expect("ebb runs");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {}", String::from_utf8_lossy(&out.stderr)));
        (out.status.code(), v)
    };
    let (code, v) = run(&["-H", "x-probe: metric:gauge:g=1"]);
    assert_eq!(code, Some(0), "{v:#}");
    let (code, v) = run(&["-H", "x-probe: metric:gauge:g=1", "--host-profile", "ngx-wasm"]);
    assert_eq!(code, Some(1), "{v:#}");
    let error = v["error"].as_str().expect("an error");
    assert!(error.contains("host profile ngx-wasm: proxy_increment_metric on a gauge"), "{error}");
    let (code, v) = run(&["-H", "x-probe: shared-get:k", "--host-profile", "strict", "--no-shm-kv"]);
    assert_eq!(code, Some(1), "{v:#}");
    assert!(v["error"].as_str().expect("an error").contains("host profile strict: proxy_get_shared_data"), "{v:#}");
    let (code, v) = run(&["-H", "x-probe: local-reply:403", "--host-profile", "strict"]);
    assert_eq!(code, Some(0), "{v:#}");
    assert_eq!(v["response"]["body"], "denied by probe\n");
}
