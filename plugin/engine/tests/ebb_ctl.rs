//! scripts/ebb-ctl, the operators' and recovery tools' client, signs exactly as the filter checks:
//! its `sign` subcommand agrees with `ebb_engine::auth::sign` (scheme v2), and the requests it
//! really sends (caught by a one-shot HTTP server on loopback) pass `auth::verify` for the Host
//! they were sent to, and no other, and route with `control::parse_call` the way the filter does.
//! Needs bash, curl and openssl, like the script.

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use ebb_engine::auth::{self, Signed};
use ebb_engine::control::{self, Call, Mutation, View};
use ebb_engine::FaultRequest;

const KEY: &str = "staging-key-0123456789";
const PREFIX: &str = "/.ebb/v1/";
/// A fixed clock for the signatures (EBB_TIMESTAMP), so nothing here reads the wall clock.
const NOW_S: u64 = 1_700_000_000;

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/ebb-ctl")
}

/// Runs `bash scripts/ebb-ctl ARGS` with a clean ebb environment plus `env`.
fn ebb_ctl(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new("bash");
    cmd.arg(script()).args(args);
    for var in ["EBB_URL", "EBB_KEY", "EBB_KEY_FILE", "EBB_PREFIX", "EBB_TIMESTAMP", "EBB_TIMEOUT"] {
        cmd.env_remove(var);
    }
    cmd.envs(env.iter().copied());
    match cmd.output() {
        Ok(out) => out,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            panic!("bash not found: scripts/ebb-ctl needs bash, curl and openssl (apt-get install curl openssl)")
        }
        Err(e) => panic!("could not run scripts/ebb-ctl: {e}"),
    }
}

fn text(out: &Output) -> String {
    format!(
        "status {}\n--- stdout\n{}--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn script_signature(key: &str, method: &str, authority: &str, path: &str, timestamp: u64, body: &str) -> String {
    let ts = timestamp.to_string();
    let out = ebb_ctl(&["sign", method, authority, path, &ts, body], &[("EBB_KEY", key)]);
    assert!(out.status.success(), "ebb-ctl sign failed (are openssl and od installed?)\n{}", text(&out));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn sign_matches_the_engine_for_any_key_length_and_body() {
    let keys = [
        KEY.to_string(),
        "k".repeat(64),  // exactly one HMAC block
        "k".repeat(65),  // hashed first
        "x".repeat(200), // hashed first
        "clé-de-contrôle-ünïcode".to_string(),
    ];
    let calls = [
        ("GET", "/.ebb/v1/state", ""),
        ("POST", "/.ebb/v1/faults?nonce=ab12", r#"{"id":"web-drain","ttl":"30m","drain":{"pool":"web","hosts":4}}"#),
        ("DELETE", "/.ebb/v1/faults/web-drain", ""),
        ("POST", "/.ebb/v1/faults", "{\n  \"abort\": {\"status\": 503, \"match\": {\"path_prefix\": \"/é\"}}\n}\n\n"),
        ("POST", "/.ebb/v1/faults", " leading and trailing spaces "),
    ];
    for key in &keys {
        for (method, path, body) in calls {
            for authority in ["127.0.0.1:9902", "Proxy-A.example:443", "[::1]:9902"] {
                let want = auth::sign(key.as_bytes(), method, authority, path, NOW_S, body.as_bytes());
                assert_eq!(
                    script_signature(key, method, authority, path, NOW_S, body),
                    want,
                    "key of {} bytes, {method} {authority} {path} {body:?}",
                    key.len()
                );
            }
        }
    }
}

/// One HTTP/1.1 request as the proxy would receive it.
#[derive(Debug, Default)]
struct Seen {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

fn read_request(stream: &mut TcpStream) -> Seen {
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        let n = stream.read(&mut buf).expect("read request");
        assert!(n > 0, "client closed before the end of the headers");
        raw.extend_from_slice(&buf[..n]);
        if let Some(at) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break at;
        }
    };
    let head = String::from_utf8_lossy(&raw[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut start = lines.next().expect("request line").split(' ');
    let mut seen = Seen {
        method: start.next().expect("method").to_string(),
        path: start.next().expect("path").to_string(),
        ..Seen::default()
    };
    for line in lines {
        let (k, v) = line.split_once(':').expect("header line");
        // Envoy trims a header value's surrounding whitespace; so does this stand-in.
        seen.headers.push((k.to_ascii_lowercase(), v.trim().to_string()));
    }
    let length: usize = seen.header("content-length").map_or(0, |v| v.parse().expect("content-length"));
    let mut body = raw[head_end + 4..].to_vec();
    while body.len() < length {
        let n = stream.read(&mut buf).expect("read body");
        assert!(n > 0, "client closed mid-body");
        body.extend_from_slice(&buf[..n]);
    }
    seen.body = body;
    seen
}

/// Answers one request on a loopback port with `status` and `body`, and hands back what it saw.
fn serve_once(status: u16, body: &'static str) -> (String, JoinHandle<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    listener.set_nonblocking(true).expect("nonblocking");
    let handle = thread::spawn(move || {
        // Bounded: the script either connects within seconds or the test has already failed.
        for _ in 0..200 {
            match listener.accept() {
                Ok((mut stream, _)) => {
                    stream.set_nonblocking(false).expect("blocking");
                    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
                    let seen = read_request(&mut stream);
                    let reply = format!(
                        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    stream.write_all(reply.as_bytes()).expect("reply");
                    return seen;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => thread::sleep(Duration::from_millis(50)),
                Err(e) => panic!("accept: {e}"),
            }
        }
        panic!("ebb-ctl never connected");
    });
    (url, handle)
}

/// Runs one ebb-ctl command against a one-shot server; returns the script's output and the request.
fn call(args: &[&str], status: u16, reply: &'static str) -> (Output, Seen) {
    let (url, server) = serve_once(status, reply);
    let ts = NOW_S.to_string();
    let mut full = vec!["--url", url.as_str()];
    full.extend_from_slice(args);
    let out = ebb_ctl(&full, &[("EBB_KEY", KEY), ("EBB_TIMESTAMP", ts.as_str())]);
    let seen = match server.join() {
        Ok(seen) => seen,
        Err(_) => panic!("no request reached the server\n{}", text(&out)),
    };
    (out, seen)
}

/// Checks a caught request the way the filter does: signature over the command (header) and
/// the full path, then the route.
fn verify_and_route(seen: &Seen) -> Call {
    let command = seen.header("x-ebb-command").unwrap_or("");
    assert!(seen.body.is_empty(), "commands travel in x-ebb-command, not a body: {seen:?}");
    let host = seen.header("host").expect("a Host header");
    let signed = |authority| Signed {
        method: &seen.method,
        authority,
        path: &seen.path,
        timestamp: seen.header(auth::TIMESTAMP_HEADER),
        signature: seen.header(auth::SIGNATURE_HEADER),
        body: command.as_bytes(),
    };
    if let Err(e) = auth::verify(KEY.as_bytes(), 300_000, NOW_S * 1000, false, signed(host)) {
        panic!("the filter would refuse {seen:?}: {e}");
    }
    // Bound to its target: the same request presented at another proxy is refused.
    let elsewhere = auth::verify(KEY.as_bytes(), 300_000, NOW_S * 1000, false, signed("proxy-b.internal:9902"));
    assert!(elsewhere.is_err(), "a signature for {host} must not verify at another authority");
    control::parse_call(PREFIX, &seen.method, &seen.path, command.as_bytes())
        .unwrap_or_else(|e| panic!("the filter would not route {seen:?}: {e}"))
}

const OK: &str = r#"{"ok":true,"cleared":[]}"#;

#[test]
fn every_command_sends_a_request_the_filter_accepts() {
    let fault = r#"{"id":"web-drain","ttl":"30m","drain":{"pool":"web","hosts":4}}"#;
    let expected_fault: FaultRequest = serde_json::from_str(fault).expect("fault JSON");
    let cases: Vec<(Vec<&str>, Call)> = vec![
        (vec!["state"], Call::View(View::State)),
        (vec!["faults"], Call::View(View::Faults)),
        (vec!["pools"], Call::View(View::Pools)),
        (vec!["add", fault], Call::Mutate(Mutation::Add(Box::new(expected_fault.clone())))),
        (vec!["clear", "web-drain"], Call::Mutate(Mutation::Clear("web-drain".into()))),
        (vec!["clear-all"], Call::Mutate(Mutation::ClearAll)),
        (vec!["restore", "web"], Call::Mutate(Mutation::Restore("web".into()))),
    ];
    let mut paths = Vec::new();
    for (args, want) in cases {
        let (out, seen) = call(&args, 200, OK);
        assert!(out.status.success(), "{args:?}\n{}", text(&out));
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), OK, "{args:?}: prints the JSON response");
        assert_eq!(verify_and_route(&seen), want, "{args:?}");
        paths.push(seen.path);
    }
    paths.sort_unstable();
    paths.dedup();
    assert_eq!(paths.len(), 7, "every call carries its own nonce, so no two changes share a signature");
}

#[test]
fn a_pretty_printed_fault_file_is_sent_as_one_signed_line() {
    let dir = std::env::temp_dir().join(format!("ebb-ctl-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("fault.json");
    let pretty = "{\n\t\"id\": \"api-abort\",\n  \"abort\": {\"pool\": \"api\", \"status\": 503, \"percent\": 5}\n}\n";
    std::fs::write(&file, pretty).expect("write fault");
    let arg = format!("@{}", file.display());
    let (out, seen) = call(&["add", &arg], 201, OK);
    std::fs::remove_dir_all(&dir).ok();
    assert!(out.status.success(), "{}", text(&out));
    let want: FaultRequest = serde_json::from_str(pretty).expect("fault JSON");
    assert_eq!(verify_and_route(&seen), Call::Mutate(Mutation::Add(Box::new(want))));
}

#[test]
fn refusals_and_a_silent_filter_exit_non_zero() {
    let refusal = r#"{"ok":false,"status":422,"error":"over cap: pool web: draining 6 of 10 hosts exceeds limits.max_drain_fraction 0.5 (at most 5)"}"#;
    let (out, _) = call(&["add", r#"{"drain":{"pool":"web","hosts":6}}"#], 422, refusal);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("max_drain_fraction"), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("HTTP 422"), "{}", text(&out));

    // The control listener's direct_response: Envoy answered, the filter did not.
    let (out, _) = call(&["state"], 404, "ebb control API not answering: filter bypassed, disarmed or wrong path\n");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not answering"), "{}", text(&out));
}

#[test]
fn usage_errors_exit_2_without_sending_anything() {
    for (args, env, says) in [
        (vec!["state"], vec![], "no key"),
        (vec!["frobnicate"], vec![("EBB_KEY", KEY)], "unknown command"),
        (vec!["clear", "Bad Id"], vec![("EBB_KEY", KEY)], "fault id"),
        (vec!["--url", "http://127.0.0.1:9/x", "state"], vec![("EBB_KEY", KEY)], "no path"),
        (vec!["add"], vec![("EBB_KEY", KEY)], "usage"),
    ] {
        let out = ebb_ctl(&args, &env);
        assert_eq!(out.status.code(), Some(2), "{args:?}\n{}", text(&out));
        assert!(String::from_utf8_lossy(&out.stderr).contains(says), "{args:?}\n{}", text(&out));
    }
}
