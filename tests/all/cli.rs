//! `ebb request` run as a real process: JSON output, exit codes.

use std::process::Command;

use serde_json::Value;

use crate::util;

fn ebb(args: &[&str]) -> (i32, String, String) {
    let bin = util::ebb_binary();
    let out = Command::new(&bin).args(args).output().unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()));
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn json(args: &[&str]) -> (i32, Value) {
    let (code, stdout, stderr) = ebb(args);
    let v = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("ebb {args:?}: not JSON ({e}):\n{stdout}\nstderr:\n{stderr}"));
    (code, v)
}

#[test]
fn request_json_shows_the_upstream_the_response_logs_and_metrics() {
    let probe = util::filter("probe");
    let p = probe.to_str().expect("utf-8 path");
    let (code, v) = json(&[
        "request",
        "--plugin",
        p,
        "--json",
        "--config",
        "tick=100",
        "--at",
        "250ms",
        "-H",
        "x-probe: add:x-added=1,call:auth,metric:counter:probe.hits=1",
        "--call-response",
        "auth=200:ok",
        "--response-status",
        "201",
        "--response-body",
        "made",
    ]);
    assert_eq!(code, 0, "{v:#}");
    assert_eq!(v["error"], Value::Null);
    let upstream = &v["upstream"]["headers"];
    assert!(upstream.as_array().expect("headers").iter().any(|h| h[0] == "x-added"), "{v:#}");
    assert_eq!(v["response"]["status"], 201);
    assert_eq!(v["response"]["body"], "made");
    assert_eq!(v["calls"][0]["cluster"], "auth");
    assert_eq!(v["local_reply"], Value::Null);
    let metrics = v["metrics"].as_array().expect("metrics");
    assert!(metrics.iter().any(|m| m["name"] == "probe.hits" && m["value"] == 1), "{v:#}");
    assert!(
        metrics.iter().any(|m| m["name"] == "probe.ticks" && m["value"] == 4),
        "ticks at 100 and 200 ms on 2 VMs: {v:#}"
    );
    let logs = v["logs"].as_array().expect("logs");
    assert!(logs.iter().any(|l| l["message"] == "on_done id=2" && l["thread"] == "worker 0"), "{v:#}");
}

#[test]
fn request_json_shows_a_local_reply_and_no_upstream() {
    let probe = util::filter("probe");
    let (code, v) =
        json(&["request", "--plugin", probe.to_str().expect("utf-8"), "--json", "-H", "x-probe: local-reply:418"]);
    assert_eq!(code, 0);
    assert_eq!(v["upstream"], Value::Null);
    assert_eq!(v["local_reply"]["status"], 418);
    assert_eq!(v["response"]["status"], 418);
}

#[test]
fn a_failing_filter_exits_1_with_the_error_and_bad_input_exits_2() {
    let probe = util::filter("probe");
    let (code, v) = json(&["request", "--plugin", probe.to_str().expect("utf-8"), "--json", "-H", "x-probe: panic"]);
    assert_eq!(code, 1, "{v:#}");
    let error = v["error"].as_str().expect("error text");
    assert!(error.contains("proxy_on_request_headers") && error.contains("trapped"), "{error}");

    let (code, _, stderr) = ebb(&["request", "--plugin", "/nonexistent.wasm"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("/nonexistent.wasm"), "{stderr}");
}

#[test]
fn request_tcp_drives_a_network_filter() {
    let probe = util::filter("probe");
    let (code, v) = json(&[
        "request",
        "--plugin",
        probe.to_str().expect("utf-8"),
        "--json",
        "--config",
        "type=tcp",
        "--tcp",
        "--data",
        "make it upper",
        "--response-body",
        "fine",
    ]);
    assert_eq!(code, 0, "{v:#}");
    assert_eq!(v["tcp"]["to_upstream"], "MAKE IT UPPER");
    assert_eq!(v["tcp"]["to_downstream"], "fine");
    let logs = v["logs"].as_array().expect("logs");
    assert!(logs.iter().any(|l| l["message"] == "on_downstream_close id=2 peer=2"), "{v:#}");
}

#[test]
fn request_answers_the_grpc_streams_a_filter_opens_and_shows_what_it_sent() {
    let probe = util::filter("probe");
    let p = probe.to_str().expect("utf-8");
    // The filter waits for its stream: answered with status 0 and one message, it resumes.
    let args = ["request", "--plugin", p, "-H", "x-probe: stream-wait:auth,send:hello,send-end:bye"];
    let (code, v) = json(&[&args[..], &["--json", "--call-response", "auth=0:pong"]].concat());
    assert_eq!(code, 0, "{v:#}");
    let call = &v["calls"][0];
    assert_eq!(call["kind"]["kind"], "grpc_stream", "{v:#}");
    assert_eq!(call["kind"]["service"], "probe.Log");
    assert_eq!(call["sent"], serde_json::json!(["hello", "bye"]), "{v:#}");
    assert_eq!(call["half_closed"], true);
    assert_eq!(call["answer"], 0);
    let logs = v["logs"].as_array().expect("logs");
    let has = |m: &str| logs.iter().any(|l| l["message"] == m);
    assert!(has("on_grpc_stream_message id=2 token=6 size=4 message=pong"), "{v:#}");
    assert!(has("on_grpc_stream_close id=2 token=6 status=0 get_status=(0, None)"), "{v:#}");
    assert_eq!(v["response"]["status"], 200, "resumed and reached the upstream: {v:#}");

    // A stream the filter does not wait for is answered before the exchange ends; a gRPC
    // error status sends no message. The text output shows what was sent.
    let (code, stdout, stderr) =
        ebb(&["request", "--plugin", p, "-H", "x-probe: stream:auth,send:one", "--call-response", "auth=7"]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(stdout.contains(r#"stream to "auth" sent ["one"], answered 7"#), "{stdout}");
    assert!(stdout.contains("on_grpc_stream_close id=2 token=6 status=7"), "{stdout}");
    assert!(!stdout.contains("on_grpc_stream_message"), "{stdout}");
}
