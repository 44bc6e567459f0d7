//! `ebb request` as a user runs it: simulated time for paused streams, bodies from files, gRPC
//! statuses checked, Envoy's default log level and log line prefix, notes for unknown clusters
//! and dropped log lines.

use std::process::Command;

use serde_json::Value;

use crate::util;

fn ebb(args: &[&str]) -> (i32, String, String) {
    let probe = util::filter("probe");
    let out = Command::new(util::ebb_binary())
        .args(["request", "--plugin", probe.to_str().expect("utf-8 path")])
        .args(args)
        .output()
        .expect("run ebb");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code().unwrap_or(-1), text(&out.stdout), text(&out.stderr))
}

fn json(args: &[&str]) -> Value {
    let (_, stdout, stderr) = ebb(&[args, &["--json"]].concat());
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{stdout}\n{stderr}"))
}

/// Envoy resumes a paused stream from the filter's timer (the root context's tick sets the
/// stream effective and calls `proxy_continue_stream`): the clock runs until it does.
#[test]
fn a_stream_paused_until_a_tick_resumes_in_simulated_time() {
    let v = json(&["--config", "tick=100", "-H", "x-probe: wait-tick", "--response-body", "late"]);
    assert_eq!(v["stuck"], false, "{v:#}");
    assert_eq!(v["response"]["status"], 200, "{v:#}");
    assert_eq!(v["response"]["body"], "late", "{v:#}");
    assert_eq!(v["resumed"][0]["step"], "request_headers", "{v:#}");
    assert_eq!(v["resumed"][0]["after_ms"], 100.0, "{v:#}");

    let (_, text, _) = ebb(&["--config", "tick=100", "-H", "x-probe: wait-tick"]);
    assert!(text.contains("request_headers: resumed by the filter after 100 ms of simulated time"), "{text}");
}

#[test]
fn a_stream_nothing_resumes_is_stuck_once_wait_has_passed() {
    let v = json(&["--config", "tick=100", "-H", "x-probe: wait-tick", "--wait", "50ms"]);
    assert_eq!(v["stuck"], true, "the first tick is at 100 ms: {v:#}");
    assert_eq!(v["upstream"], Value::Null, "{v:#}");
    let v = json(&["-H", "x-probe: pause"]);
    assert_eq!(v["stuck"], true, "no timer at all: {v:#}");
}

#[test]
fn bodies_come_from_files() {
    let dir = util::target_dir().join("request-cli-bodies");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let (req, resp) = (dir.join("req.bin"), dir.join("resp.bin"));
    std::fs::write(&req, "request from a file").expect("write");
    std::fs::write(&resp, "response from a file").expect("write");
    let at = |p: &std::path::Path| format!("@{}", p.display());
    let v = json(&["--method", "POST", "--body", &at(&req), "--response-body", &at(&resp)]);
    assert_eq!(v["upstream"]["body"], "request from a file", "{v:#}");
    assert_eq!(v["response"]["body"], "response from a file", "{v:#}");
    let (code, _, stderr) = ebb(&["--body", "@/nonexistent/body"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("--body") && stderr.contains("/nonexistent/body"), "{stderr}");
}

#[test]
fn a_grpc_call_response_status_outside_0_to_16_is_an_error() {
    let (code, stdout, stderr) = ebb(&["-H", "x-probe: grpc:auth", "--call-response", "auth=200:ok"]);
    assert_eq!(code, 2, "{stdout}\n{stderr}");
    assert!(stderr.contains("not a gRPC status (0-16)"), "{stderr}");
    let (code, _, stderr) = ebb(&["-H", "x-probe: grpc:auth", "--call-response", "auth=16:no"]);
    assert_eq!(code, 0, "{stderr}");
}

/// Envoy's default log level is info; the filter's lines carry Envoy's prefix
/// (`Context::log`: `"wasm log{}: {}"`, cpp-host `PluginBase::makeLogPrefix`).
#[test]
fn logs_are_at_info_by_default_and_prefixed_as_envoys() {
    let v = json(&["-H", "x-probe: log-level"]);
    let logs = v["logs"].as_array().expect("logs");
    let result = logs.iter().find_map(|l| l["message"].as_str()?.strip_prefix("probe log-level => "));
    assert_eq!(result, Some("status=0 level=2"), "proxy_get_log_level says info: {v:#}");
    assert!(logs.iter().all(|l| l["level"] != "trace" && l["level"] != "debug"), "{v:#}");

    let (_, text, _) = ebb(&["--root-id", "my_root", "-H", "x-probe: log-level"]);
    assert!(text.contains("wasm log ebb_testfilter_probe.wasm my_root: probe log-level => status=0"), "{text}");
}

#[test]
fn ebb_request_names_the_flag_for_an_unknown_cluster() {
    let (_, text, _) = ebb(&["-H", "x-probe: call:auth"]);
    assert!(text.contains("--call-response 'auth=STATUS:BODY' or --upstream 'auth=HOST:PORT'"), "{text}");
    let v = json(&["-H", "x-probe: call:auth"]);
    assert_eq!(v["unknown_clusters"][0], "auth", "{v:#}");
}

#[test]
fn an_empty_details_local_reply_and_a_trap_are_explained_briefly() {
    let (_, text, _) = ebb(&["-H", "x-probe: local-reply:403"]);
    assert!(text.contains("local reply: 403 (no response code details: the filter gave none)"), "{text}");
    let (_, short, _) = ebb(&["-H", "x-probe: panic"]);
    assert!(short.contains("(more with --verbose)"), "{short}");
    let (_, full, _) = ebb(&["-H", "x-probe: panic", "--verbose"]);
    assert!(!full.contains("(more with --verbose)"), "{full}");
    assert!(full.lines().count() > short.lines().count() + 2, "the backtrace only with --verbose:\n{short}\n{full}");
}

#[test]
fn ebb_request_says_how_many_log_lines_it_dropped() {
    let (_, text, _) = ebb(&["--max-log-lines", "2", "--log-level", "trace", "-H", "x-probe: log-level"]);
    let note = text.lines().find(|l| l.starts_with("note: ") && l.contains("log lines were dropped"));
    let dropped: u64 = note
        .and_then(|l| l.strip_prefix("note: ")?.split(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no count of dropped lines:\n{text}"));
    assert!(dropped > 0, "{text}");
    let kept = text.lines().filter(|l| l.starts_with("  [")).count();
    assert_eq!(kept, 2, "{text}");
    let v = json(&["--max-log-lines", "2", "--log-level", "trace", "-H", "x-probe: log-level"]);
    assert_eq!(v["dropped_logs"], dropped, "{v:#}");
}
