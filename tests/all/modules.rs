//! Module validation: not a Proxy-Wasm module, no ABI marker, no memory export, garbage.

use ebb_harness::{Fault, HostError, Plugin};

use crate::util;

fn invalid(bytes: &[u8]) -> String {
    match Plugin::from_bytes("bad.wasm", bytes) {
        Err(e @ HostError::InvalidModule { .. }) => {
            assert_eq!(e.fault(), Fault::Filter);
            e.to_string()
        }
        other => panic!("expected InvalidModule, got {other:?}"),
    }
}

#[test]
fn a_module_without_the_abi_marker_is_refused_by_name() {
    let text = invalid(&util::tiny_module(&["something_else"], true));
    assert!(text.starts_with("filter bad.wasm: invalid module:"), "{text}");
    assert!(text.contains("proxy_abi_version_0_2_1"), "{text}");
}

#[test]
fn a_module_without_memory_is_refused() {
    let text = invalid(&util::tiny_module(&["proxy_abi_version_0_2_1"], false));
    assert!(text.contains("memory"), "{text}");
}

#[test]
fn garbage_is_refused() {
    invalid(b"\0asm garbage");
    invalid(b"not wasm at all");
}

#[test]
fn a_missing_file_is_a_read_error() {
    let err = Plugin::load("/nonexistent/filter.wasm").expect_err("missing");
    assert!(matches!(err, HostError::Read { .. }), "{err:?}");
    assert_eq!(err.fault(), Fault::Host);
}

#[test]
fn imports_the_host_lacks_are_stubbed_with_a_warning() {
    let plugin = util::plugin("probe");
    let warnings = plugin.warnings();
    assert!(warnings.iter().any(|w| w.contains("env.proxy_probe_no_such_hostcall")), "{warnings:?}");
    let mut proxy = util::probe("", 1);
    util::exchange(&mut proxy, 0, "missing-hostcall");
    assert_eq!(util::result_of(&proxy, "missing-hostcall"), "status=12", "UNIMPLEMENTED, not a trap");
}
