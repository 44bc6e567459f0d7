//! Recovery by an external program: the scenario's script gets the alert as Alertmanager webhook
//! JSON and recovers through the filter's signed control API on a loopback URL; failures,
//! timeouts and bad signatures show in the report, and the replay always ends.

use std::path::{Path, PathBuf};

use ebb_harness::report::{Event, Report};
use ebb_harness::scenario::Scenario;
use ebb_harness::{sim, Clock, Plugin};

use super::{pool, replay, root, wasm};

fn events<'r>(report: &'r Report, kind: &str) -> Vec<&'r Event> {
    report.events.iter().filter(|e| e.kind == kind).collect()
}

fn has(report: &Report, kind: &str, parts: &[&str]) -> bool {
    events(report, kind).iter().any(|e| parts.iter().all(|p| e.text.contains(p)))
}

#[test]
fn the_recovery_script_restores_pools_through_the_control_api() {
    let r = replay("bitbucket-2021-02-05-external-recovery");
    let timeline = r.render(false);
    assert_eq!(r.verdict, "pass", "{timeline}");
    assert!(events(&r, "refused").is_empty(), "{timeline}");
    for name in ["web", "api"] {
        assert!(
            has(&r, "recovery", &["../scripts/recover-pool.sh --verbose: exit 0", "1 control call"]),
            "the script ran and made one call per alert:\n{timeline}"
        );
        assert!(
            has(&r, "command", &[&format!("recovery program: POST /.ebb/v1/pools/{name}/restore -> 200")]),
            "{name} restored through the control API:\n{timeline}"
        );
        let p = pool(&r, name);
        let (detected, restored) = (p.detected_s.unwrap(), p.restored_s.unwrap());
        // The rule runs the script 5 minutes after the alert; the next scrape sees the pool whole.
        assert!((300.0..=330.0).contains(&(restored - detected)), "{name}: detected {detected}, restored {restored}");
    }
}

/// A replay of a pool whose 3 hosts are drained at +2m, with a capacity alert (1m) whose recovery
/// rule runs `run` after 30s; written to a folder of its own with the `scripts` given.
struct Case {
    dir: PathBuf,
}

impl Case {
    fn new(name: &str, run: &str, timeout: &str, scripts: &[(&str, &str)]) -> Case {
        let dir = std::env::temp_dir().join(format!("ebb-recovery-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        for (file, text) in scripts {
            let path = dir.join(file);
            std::fs::write(&path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let mut perms =
                std::fs::metadata(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).permissions();
            std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
            std::fs::set_permissions(&path, perms).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        }
        let scenario = format!(
            r#"{{"version": 1, "name": "{name}", "duration": "10m", "seed": 5,
              "filter": {{"limits": {{"max_ttl": "1h", "max_drain_fraction": 0.8}}}},
              "pools": [{{"name": "web", "hosts": 10, "capacity_per_host": 4, "service_time": "1s"}}],
              "traffic": [{{"pool": "web", "points": [["+0s", 4]]}}],
              "timeline": [{{"at": "+2m", "command": {{"id": "lost", "ttl": "1h", "drain": {{"pool": "web", "hosts": 3}}}}}}],
              "alerts": [{{"name": "WebCapacity", "pool": "web", "signal": "available_ratio", "below": 1.0, "for": "1m"}}],
              "recovery": [{{"on": "WebCapacity", "after": "30s", "run": {run}, "timeout": "{timeout}"}}],
              "slos": [{{"time_to_restore": {{"pool": "web", "max": "5m"}}}}]}}"#
        );
        std::fs::write(dir.join("scenario.json"), scenario).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        Case { dir }
    }

    fn replay(&self) -> Report {
        let scenario = Scenario::load(&self.dir.join("scenario.json")).unwrap_or_else(|e| panic!("{e}"));
        let plugin = Plugin::load(wasm()).unwrap_or_else(|e| panic!("loading ebb.wasm: {e}"));
        sim::replay(&scenario, &plugin, &mut |_| {}).unwrap_or_else(|e| panic!("{}: {e}", self.dir.display()))
    }
}

impl Drop for Case {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.dir).ok();
    }
}

#[test]
fn a_failing_program_is_reported_with_its_output() {
    let case = Case::new(
        "fails",
        r#"["./fail.sh", "--flag"]"#,
        "10s",
        &[(
            "fail.sh",
            "#!/bin/sh\njq -r '.alerts[0].startsAt' 2>/dev/null || cat\necho \"alert $EBB_ALERT on $EBB_POOL at $EBB_TIMESTAMP: $1\" >&2\nexit 3\n",
        )],
    );
    let r = case.replay();
    let timeline = r.render(false);
    assert_eq!(r.verdict, "fail", "the pool stays drained:\n{timeline}");
    assert!(has(&r, "recovery", &["./fail.sh --flag: exit 3"]), "{timeline}");
    // The webhook's startsAt is the simulated firing time; the environment names the alert and
    // carries the simulated clock (2021-02-05, the replay's day).
    let fired = r.alerts[0].fired_s[0];
    let fired_at = format!("2021-02-05T00:0{}:{:02}Z", fired as u64 / 60, fired as u64 % 60);
    let now_s = 1_612_483_200 + fired as u64 + 30;
    let line = format!("alert WebCapacity on web at {now_s}: --flag");
    assert!(has(&r, "refused", &["runbook for WebCapacity", "failed (exit 3)", "stderr:", &line]), "{timeline}");
    assert!(has(&r, "refused", &["stdout:", &fired_at]), "{fired_at}:\n{timeline}");
    assert!(pool(&r, "web").restored_s.is_none());
}

#[test]
fn a_program_past_its_timeout_is_killed_and_the_replay_goes_on() {
    let case = Case::new("sleeps", r#"["./sleep.sh"]"#, "1s", &[("sleep.sh", "#!/bin/sh\necho waiting\nsleep 30\n")]);
    let clock = Clock::real();
    let started = clock.now_ns();
    let r = case.replay();
    let took_s = (clock.now_ns() - started) as f64 / 1e9;
    let timeline = r.render(false);
    assert!(took_s < 10.0, "the replay waited {took_s}s for a program with a 1s timeout");
    assert!(has(&r, "recovery", &["./sleep.sh: killed at its 1s timeout"]), "{timeline}");
    assert!(has(&r, "refused", &["timed out after 1s", "stdout: waiting"]), "{timeline}");
    assert!(r.duration_s >= 600.0 && r.verdict == "fail", "{timeline}");
}

#[test]
fn a_program_that_cannot_start_is_an_error_event() {
    let case = Case::new("missing", r#"["./no-such-script.sh"]"#, "5s", &[]);
    let r = case.replay();
    let timeline = r.render(false);
    assert!(
        has(
            &r,
            "refused",
            &["cannot start", "no-such-script.sh", "relative program paths start in the scenario's folder"]
        ),
        "{timeline}"
    );
}

#[test]
fn the_filter_checks_the_programs_own_signature() {
    // The wrong key gets 401 from the filter; a body (the command belongs in x-ebb-command) gets
    // 400, as through Envoy. Neither restores the pool.
    let ctl = root().join("scripts/ebb-ctl");
    let script = format!(
        "#!/usr/bin/env bash\nEBB_KEY=not-the-key {ctl} --url \"$EBB_CONTROL_URL\" restore web\necho \"ebb-ctl: $?\"\n\
         curl -s -o /dev/null -w 'body: %{{http_code}}\\n' -X POST -d '{{}}' \
         -H \"x-ebb-timestamp: $EBB_TIMESTAMP\" -H 'x-ebb-signature: 00' \"$EBB_CONTROL_URL/.ebb/v1/pools/web/restore\"\n",
        ctl = ctl.display()
    );
    let case = Case::new("badkey", r#"["./badkey.sh"]"#, "20s", &[("badkey.sh", &script)]);
    let r = case.replay();
    let timeline = r.render(false);
    assert!(has(&r, "command", &["recovery program: POST /.ebb/v1/pools/web/restore -> 401"]), "{timeline}");
    assert!(has(&r, "refused", &["POST /.ebb/v1/pools/web/restore: 401", "bad signature"]), "{timeline}");
    assert!(has(&r, "command", &["recovery program: POST /.ebb/v1/pools/web/restore -> 400"]), "{timeline}");
    assert!(has(&r, "recovery", &["./badkey.sh: exit 0", "2 control calls"]), "{timeline}");
    assert!(pool(&r, "web").restored_s.is_none(), "the pool stays drained:\n{timeline}");
    assert_eq!(r.verdict, "fail");
}

#[test]
fn check_wants_one_recovery_action_and_a_sane_timeout() {
    let base = std::fs::read_to_string(root().join("scenarios/bitbucket-2021-02-05-external-recovery.json")).unwrap();
    let run = "\"run\": [\"../scripts/recover-pool.sh\", \"--verbose\"],";
    assert!(base.contains(run));
    let cases = [
        (base.replacen(run, &format!("{run} \"restore\": \"web\","), 1), "exactly one of restore, clear_all or run"),
        (base.replacen(run, "\"run\": [],", 1), "give the program"),
        (base.replacen("\"timeout\": \"30s\"", "\"timeout\": \"20m\"", 1), "between 1s and 10m"),
        (base.replacen("\"timeout\": \"30s\"", "\"timeout\": \"500ms\"", 1), "between 1s and 10m"),
    ];
    for (text, message) in cases {
        let err = Scenario::parse(Path::new("s.json"), text.as_bytes()).expect_err(message).to_string();
        assert!(err.contains("recovery[3]") && err.contains(message), "want {message}, got: {err}");
    }
}
