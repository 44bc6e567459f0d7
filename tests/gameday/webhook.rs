//! `ebb webhook` on its own: what it refuses (method, token, payload), what a command gets (the
//! notification on stdin, the labels in its environment), one run at a time per alert group, the
//! timeout, and SIGTERM waiting for the running command.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::stack::{TempDir, Webhook};
use crate::support::http1;

const TOKEN: &str = "webhook-test-token-31f4";

/// An Alertmanager 0.25 notification for `pool`, with its status.
fn notification(pool: &str, status: &str) -> String {
    format!(
        r#"{{"receiver":"recover-pool","status":"{status}","alerts":[{{"status":"{status}",
 "labels":{{"alertname":"EbbPoolBelowExpectedCapacity","ebb_pool":"{pool}","severity":"page"}},"annotations":{{}},
 "startsAt":"2026-12-01T17:03:04.5Z","endsAt":"0001-01-01T00:00:00Z","generatorURL":"","fingerprint":"{pool}"}}],
 "groupLabels":{{"alertname":"EbbPoolBelowExpectedCapacity","ebb_pool":"{pool}"}},
 "commonLabels":{{"alertname":"EbbPoolBelowExpectedCapacity","ebb_pool":"{pool}","severity":"page"}},
 "commonAnnotations":{{}},"externalURL":"http://am","version":"4",
 "groupKey":"{{}}:{{ebb_pool=\"{pool}\"}}","truncatedAlerts":0}}"#
    )
}

fn post(hook: &Webhook, token: Option<&str>, body: &str) -> (u16, String) {
    let bearer = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("content-type", "application/json")];
    if let Some(b) = &bearer {
        headers.push(("authorization", b.as_str()));
    }
    let reply = http1(hook.addr, "POST", "/recover-pool", &headers, body.as_bytes());
    (reply.status, String::from_utf8_lossy(&reply.body).into_owned())
}

fn lines(file: &Path) -> Vec<String> {
    std::fs::read_to_string(file).unwrap_or_default().lines().map(str::to_string).collect()
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < Duration::from_secs(20), "never: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn the_webhook_checks_each_notification_and_runs_its_command_once_at_a_time_per_group() {
    let dir = TempDir::new("webhook");
    let token = dir.file("token", &format!("{TOKEN}\n"));
    let log = dir.0.join("runs.log");
    // Each run: its start and end in the log, its stdin and environment kept, a pool-dependent length.
    let script = dir.file(
        "run.sh",
        &format!(
            "set -eu\n\
             echo \"start $EBB_POOL $EBB_STATUS\" >> {log}\n\
             cat > {dir}/$EBB_POOL.$EBB_STATUS.json\n\
             env | grep '^EBB_' | sort > {dir}/$EBB_POOL.env\n\
             case $EBB_POOL in slow) sleep 30 ;; *) sleep 1 ;; esac\n\
             echo \"end $EBB_POOL $EBB_STATUS\" >> {log}\n\
             echo \"restored $EBB_POOL\"\n\
             exit 3\n",
            log = log.display(),
            dir = dir.0.display()
        ),
    );
    let hook = Webhook::start(
        &[&format!("--token-file={}", token.display()), "--timeout=2s"],
        &["bash", &script.display().to_string()],
        &[],
    );

    // What is refused, before anything runs: each with its reason.
    let get = http1(hook.addr, "GET", "/recover-pool", &[], b"");
    assert_eq!(get.status, 405);
    let firing = notification("web", "firing");
    assert_eq!(post(&hook, None, &firing).0, 401);
    assert_eq!(post(&hook, Some("wrong"), &firing).0, 401);
    let (status, body) = post(&hook, Some(TOKEN), &firing.replace(r#""version":"4""#, r#""version":"3""#));
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("version: expected \\\"4\\\""), "{body}");
    let (status, body) =
        post(&hook, Some(TOKEN), &firing.replacen(r#""ebb_pool":"web","severity""#, r#""ebb_pool":1,"severity""#, 1));
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("alerts[0].labels.ebb_pool: expected a string"), "{body}");
    assert!(lines(&log).is_empty(), "nothing ran");

    // web three times at once (the second waits, the third replaces it), api alongside.
    assert_eq!(post(&hook, Some(TOKEN), &firing), (200, r#"{"ok":true,"status":"running"}"#.to_string()));
    let (status, body) = post(
        &hook,
        Some(TOKEN),
        &notification("web", "resolved").replace("\"fingerprint\":\"web\"", "\"fingerprint\":\"w2\""),
    );
    assert_eq!((status, body.contains("queued")), (200, true), "{body}");
    let resolved = notification("web", "resolved");
    assert_eq!(post(&hook, Some(TOKEN), &resolved).0, 200);
    assert_eq!(post(&hook, Some(TOKEN), &notification("api", "firing")).0, 200);
    wait_until("web ran twice and api once", || lines(&log).iter().filter(|l| l.starts_with("end")).count() == 3);
    let runs = lines(&log);
    let web: Vec<&str> = runs.iter().map(String::as_str).filter(|l| l.contains(" web ")).collect();
    assert_eq!(web, ["start web firing", "end web firing", "start web resolved", "end web resolved"], "{runs:?}");
    let api_start = runs.iter().position(|l| l == "start api firing").expect("api ran");
    let web_end = runs.iter().position(|l| l == "end web firing").expect("web ended");
    assert!(api_start < web_end, "another group runs alongside: {runs:?}");

    // The command got the notification unchanged on stdin and the labels in its environment.
    let stdin = std::fs::read_to_string(dir.0.join("web.firing.json")).expect("stdin kept");
    assert_eq!(stdin, firing);
    let env = std::fs::read_to_string(dir.0.join("api.env")).expect("env kept");
    for var in [
        "EBB_ALERT=EbbPoolBelowExpectedCapacity",
        "EBB_POOL=api",
        "EBB_LABEL_SEVERITY=page",
        "EBB_STATUS=firing",
        "EBB_RECEIVER=recover-pool",
    ] {
        assert!(env.lines().any(|l| l == var), "{var} in\n{env}");
    }
    let logged = hook.log();
    assert!(
        logged.contains("alertname=EbbPoolBelowExpectedCapacity, ebb_pool=web, severity=page: stdout: restored web"),
        "{logged}"
    );
    assert!(logged.contains("a newer notification replaces the one waiting (resolved)"), "{logged}");
    assert!(
        logged.contains(&format!("ebb_pool=api, severity=page: bash {}: exit 3 after", script.display())),
        "{logged}"
    );
    assert!(logged.contains("refused a request (401): wrong bearer token"), "{logged}");

    // A run past --timeout is killed with what it started.
    assert_eq!(post(&hook, Some(TOKEN), &notification("slow", "firing")).0, 200);
    wait_until("the slow run is killed", || hook.log().contains("killed at its timeout (2s)"));
    assert!(!lines(&log).iter().any(|l| l == "end slow firing"), "{:?}", lines(&log));

    // SIGTERM while a command runs: no more notifications, the run finishes, exit 0.
    assert_eq!(post(&hook, Some(TOKEN), &notification("db", "firing")).0, 200);
    wait_until("db started", || lines(&log).iter().any(|l| l == "start db firing"));
    let mut process = hook.process;
    process.signal("TERM");
    assert_eq!(process.wait(Duration::from_secs(10)), Some(0), "{}", process.stderr());
    assert!(lines(&log).iter().any(|l| l == "end db firing"), "the running command finished: {:?}", lines(&log));
    let logged = process.stderr();
    assert!(
        logged.contains("stopping: waiting for 1 running command(s)")
            && logged.trim_end().ends_with("ebb webhook: stopped"),
        "{logged}"
    );
}

#[test]
fn the_webhook_refuses_a_non_loopback_address_without_a_token_and_a_missing_command() {
    let out = std::process::Command::new(crate::util::ebb_binary())
        .args(["webhook", "--listen=0.0.0.0:0", "--", "true"])
        .output()
        .expect("run ebb webhook");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("0.0.0.0:0 is not a loopback address"), "{out:?}");
    let out = std::process::Command::new(crate::util::ebb_binary()).args(["webhook"]).output().expect("run");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}
