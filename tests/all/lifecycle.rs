//! Envoy's lifecycle: VM start order per VM, lazy context creation, callback order of an
//! exchange, configuration rejection.

use ebb_harness::{Clock, HostError, Plugin, Proxy, ProxyOptions, Step, Thread};

use crate::util::{self, messages};

#[test]
fn every_vm_starts_with_vm_start_then_configure() {
    let proxy = util::probe_with(ProxyOptions {
        plugin_config: b"a=1".to_vec(),
        vm_config: b"vm-cfg".to_vec(),
        workers: 2,
        ..ProxyOptions::default()
    });
    let logs = proxy.logs();
    for thread in [Thread::Main, Thread::Worker(0), Thread::Worker(1)] {
        let mine: Vec<&str> = logs.iter().filter(|l| l.thread == thread).map(|l| l.message.as_str()).collect();
        assert_eq!(
            mine,
            vec!["on_vm_start root=1 size=6 vm_config=vm-cfg", "on_configure root=1 size=3 config=a=1"],
            "{thread}"
        );
    }
}

#[test]
fn the_http_context_is_created_at_request_headers_and_callbacks_run_in_envoys_order() {
    let mut proxy = util::probe("", 1);
    let before = messages(&proxy).len();
    let id = proxy.worker(0).expect("worker").http().id();
    assert_eq!(messages(&proxy).len(), before, "opening a stream calls nothing in the VM");
    let mut http = proxy.http_stream(id).expect("still open");
    assert!(matches!(http.request_headers(&util::request(""), false), Step::Continue));
    assert!(matches!(http.request_body(b"abc", false), Step::Continue));
    assert!(matches!(http.request_body(b"de", true), Step::Continue));
    assert!(matches!(http.response_headers(&[(":status", "200")], false), Step::Continue));
    assert!(matches!(http.response_body(b"ok", true), Step::Continue));
    http.finish().expect("finish");
    let ctx = id.context;
    let after: Vec<String> = messages(&proxy)[before..].to_vec();
    let expected = vec![
        format!("create_http_context id={ctx} root=1"),
        format!("on_request_headers id={ctx} n=4 eos=false"),
        format!("on_request_body id={ctx} size=3 eos=false"),
        format!("on_request_body id={ctx} size=2 eos=true"),
        format!("on_response_headers id={ctx} n=1 eos=false status=200"),
        format!("on_response_body id={ctx} size=2 eos=true"),
        format!("on_done id={ctx}"),
        format!("on_log id={ctx}"),
        format!("on_delete id={ctx}"),
    ];
    assert_eq!(after, expected);
    assert!(proxy.http_stream(id).is_none(), "a finished stream is gone");
}

#[test]
fn a_rejected_configuration_refuses_the_proxy_naming_the_filter() {
    let err = Proxy::new(
        &util::plugin("probe"),
        ProxyOptions { plugin_config: b"reject=1".to_vec(), ..ProxyOptions::default() },
        Clock::default(),
    )
    .err()
    .expect("a rejecting filter must not start");
    assert!(matches!(err, HostError::Rejected { callback: "proxy_on_configure", .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("ebb_testfilter_probe.wasm") && text.contains("proxy_on_configure"), "{text}");
}

#[test]
fn an_abi_0_2_0_module_loads_and_0_1_0_does_not() {
    let old = Plugin::from_bytes("old", &util::tiny_module(&["proxy_abi_version_0_2_0"], true)).expect("0.2.0 loads");
    assert_eq!(old.abi_version(), ebb_harness::AbiVersion::V0_2_0);
    let mut proxy = Proxy::new(&old, ProxyOptions::default(), Clock::default()).expect("starts without callbacks");
    let mut http = proxy.worker(0).expect("worker").http();
    assert!(matches!(http.request_headers(&util::request(""), true), Step::Continue));
    let err = Plugin::from_bytes("ancient", &util::tiny_module(&["proxy_abi_version_0_1_0"], true)).expect_err("0.1.0");
    assert!(err.to_string().contains("0.1.0"), "{err}");
}

/// A module whose `_initialize` calls `proxy_set_tick_period_milliseconds(100)`.
fn hostcall_in_initialize() -> Vec<u8> {
    let mut m = b"\0asm\x01\0\0\0".to_vec();
    m.extend([0x01, 0x09, 0x02, 0x60, 0x01, 0x7f, 0x01, 0x7f, 0x60, 0x00, 0x00]); // (i32)->i32, ()->()
    let name = b"proxy_set_tick_period_milliseconds";
    let mut import = vec![0x01, 0x03];
    import.extend(b"env");
    import.push(name.len() as u8);
    import.extend(name);
    import.extend([0x00, 0x00]);
    m.extend([0x02, import.len() as u8]);
    m.extend(import);
    m.extend([0x03, 0x03, 0x02, 0x01, 0x01]); // functions 1 and 2: () -> ()
    m.extend([0x05, 0x03, 0x01, 0x00, 0x01]);
    let mut exports = vec![0x03, 0x06];
    exports.extend(b"memory");
    exports.extend([0x02, 0x00, 0x0b]);
    exports.extend(b"_initialize");
    exports.extend([0x00, 0x01, 0x17]);
    exports.extend(b"proxy_abi_version_0_2_1");
    exports.extend([0x00, 0x02]);
    m.extend([0x07, exports.len() as u8]);
    m.extend(exports);
    // _initialize: i32.const 100, call 0, drop; marker: empty.
    m.extend([0x0a, 0x0d, 0x02, 0x08, 0x00, 0x41, 0xe4, 0x00, 0x10, 0x00, 0x1a, 0x0b, 0x02, 0x00, 0x0b]);
    m
}

#[test]
fn only_logging_and_wasi_are_allowed_during_initialize() {
    let plugin = Plugin::from_bytes("eager.wasm", &hostcall_in_initialize()).expect("loads");
    let err = Proxy::new(&plugin, ProxyOptions::default(), Clock::default())
        .err()
        .expect("a hostcall in _initialize fails the VM start");
    let text = err.to_string();
    assert!(matches!(err, HostError::Callback { callback: "_initialize", .. }), "{err:?}");
    assert!(text.contains("proxy_set_tick_period_milliseconds") && text.contains("eager.wasm"), "{text}");
}

#[test]
fn a_proxy_can_move_to_another_thread() {
    fn assert_send<T: Send>() {}
    assert_send::<Proxy>();
    assert_send::<Plugin>();
}

#[test]
fn effective_context_and_log_level_follow_envoy() {
    let mut proxy = util::probe("", 1);
    util::exchange(&mut proxy, 0, "effective:1,effective:9999,log-level");
    assert_eq!(util::result_of(&proxy, "effective:1"), "status=0", "the root context");
    assert_eq!(util::result_of(&proxy, "effective:9999"), "status=2", "unknown context");
    assert_eq!(
        util::result_of(&proxy, "log-level"),
        "status=0 level=0",
        "proxy_get_log_level returns the proxy's level (trace here)"
    );
}
