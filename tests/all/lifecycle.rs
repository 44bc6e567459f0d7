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
