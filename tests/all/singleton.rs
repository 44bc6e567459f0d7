//! Singleton services: a bootstrap extension with `singleton: true` runs one VM on Envoy's main
//! thread (`source/extensions/bootstrap/wasm/config.cc`, `WasmFactory::createBootstrapExtension`:
//! a singleton gets no per-worker thread-local VM), with its timer and no streams. Here that is
//! `workers: 0`.

use std::time::Duration;

use ebb_harness::{Clock, LogLevel, Proxy, ProxyOptions, Thread};
use serde_json::Value;

use crate::util;

#[test]
fn workers_0_is_the_main_vm_alone_with_its_ticks() {
    let options = ProxyOptions {
        workers: 0,
        plugin_config: b"tick=100".to_vec(),
        log_level: LogLevel::Trace,
        ..ProxyOptions::default()
    };
    let mut proxy = Proxy::new(&util::plugin("probe"), options, Clock::default()).expect("a singleton starts");
    assert_eq!(proxy.workers(), 0);
    assert!(proxy.worker(0).is_err(), "no worker: no stream");
    proxy.advance(Duration::from_millis(250));
    let logs = proxy.logs();
    assert_eq!(logs.iter().filter(|l| l.message.starts_with("on_configure")).count(), 1, "one VM");
    assert!(logs.iter().all(|l| l.thread == Thread::Main), "{logs:#?}");
    assert_eq!(logs.iter().filter(|l| l.message.starts_with("on_tick")).count(), 2, "ticks at 100 and 200 ms");
}

#[test]
fn ebb_request_with_workers_0_runs_the_singleton_and_sends_no_request() {
    let probe = util::filter("probe");
    let p = probe.to_str().expect("utf-8 path");
    let args = ["request", "--plugin", p, "--json", "--workers", "0", "--config", "tick=100", "--at", "250ms"];
    let out = std::process::Command::new(util::ebb_binary()).args(args).output().expect("run ebb");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let v: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"));
    assert_eq!(out.status.code(), Some(0), "{v:#}");
    assert_eq!(v["singleton"], true, "{v:#}");
    assert_eq!(v["steps"].as_array().map(Vec::len), Some(0), "no stream: {v:#}");
    let logs = v["logs"].as_array().expect("logs");
    let configures = logs.iter().filter(|l| l["message"].as_str().is_some_and(|m| m.starts_with("on_configure")));
    assert_eq!(configures.count(), 1, "the main VM only, not one worker more: {v:#}");
    let metrics = v["metrics"].as_array().expect("metrics");
    assert!(metrics.iter().any(|m| m["name"] == "probe.ticks" && m["value"] == 2), "{v:#}");
}
