//! A fault without `ttl` ends at `limits.default_ttl` (10 minutes): `ebb check` warns, with its
//! position, when that comes before the scenario means it to matter, and the replay shows the
//! fault's end as an `expired` event.

use std::path::Path;

use ebb_harness::report;
use ebb_harness::scenario::Scenario;
use ebb_harness::sim;
use ebb_harness::Plugin;

use crate::{at, ebb, wasm};

/// A drain of web at 00:10, cleared at `clear` (or never); `ttl` is the command's `ttl`, if any.
fn scenario(ttl: Option<&str>, clear: Option<&str>) -> String {
    let ttl = ttl.map(|t| format!(r#""ttl": "{t}", "#)).unwrap_or_default();
    let clear = clear
        .map(|c| {
            format!(
                r#",
    {{"at": "{c}", "clear": "drain-web", "note": "the operator ends it"}}"#
            )
        })
        .unwrap_or_default();
    format!(
        r#"{{
  "version": 1,
  "name": "expiry",
  "duration": "1h",
  "scrape_interval": "15s",
  "pools": [{{"name": "web", "hosts": 10, "capacity_per_host": 4, "service_time": "100ms"}}],
  "traffic": [{{"pool": "web", "points": [["+0s", 5]]}}],
  "timeline": [
    {{"at": "00:10", "command": {{"id": "drain-web", {ttl}"drain": {{"pool": "web", "hosts": 2}}}}}}{clear}
  ],
  "slos": [{{"error_ratio": {{"pool": "web", "max": 0.5}}}}]
}}
"#
    )
}

fn check(name: &str, text: &str, deny: bool) -> (Option<i32>, String) {
    let dir = std::env::temp_dir().join(format!("ebb-expiry-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join(name);
    std::fs::write(&file, text).unwrap();
    let path = file.to_str().unwrap();
    let args: Vec<&str> = if deny { vec!["check", "--deny-warnings", path] } else { vec!["check", path] };
    let out = ebb(&args);
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn check_warns_of_a_fault_that_expires_before_the_clear_that_names_it() {
    let (code, err) = check("before-clear.json", &scenario(None, Some("00:45")), false);
    assert_eq!(code, Some(0), "a warning does not fail check: {err}");
    // Line 9 holds the command; its column is where the command's object starts.
    assert!(err.contains("before-clear.json:9:") && err.contains("timeline[0].command: warning:"), "{err}");
    assert!(
        err.contains("expires at 00:20:00")
            && err.contains("limits.default_ttl, 10m")
            && err.contains("before timeline[1] clears it at 00:45:00"),
        "{err}"
    );
    let (code, _) = check("before-clear.json", &scenario(None, Some("00:45")), true);
    assert_eq!(code, Some(2), "--deny-warnings fails on it");

    // Too short a ttl, written out, is the same mistake; its position is the ttl's.
    let (_, err) = check("short.json", &scenario(Some("20m"), Some("00:45")), false);
    assert!(err.contains("timeline[0].command.ttl: warning:") && err.contains("(ttl 20m)"), "{err}");

    // A ttl that lasts until the clear, or one that outlives the replay: nothing to say.
    for (ttl, clear) in [(Some("40m"), Some("00:45")), (Some("2h"), None)] {
        let (code, err) = check("fine.json", &scenario(ttl, clear), true);
        assert_eq!(code, Some(0), "{ttl:?} {clear:?}: {err}");
        assert!(!err.contains("warning"), "{err}");
    }
}

#[test]
fn check_warns_of_a_default_ttl_ending_a_fault_nothing_restores() {
    let (code, err) = check("never-cleared.json", &scenario(None, None), false);
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("expires at 00:20:00") && err.contains("before the replay ends at 01:00:00"), "{err}");
    // A runbook that restores the pool is a plan to end it.
    let text = scenario(None, None).replace(
        r#""slos":"#,
        r#""alerts": [{"name": "Low", "pool": "web", "signal": "available_ratio", "below": 1.0}],
  "recovery": [{"on": "Low", "after": "30m", "restore": "web"}],
  "slos":"#,
    );
    let (code, err) = check("planned.json", &text, true);
    assert_eq!(code, Some(0), "{err}");
}

#[test]
fn the_replay_shows_a_fault_ended_by_its_ttl_as_expired() {
    let text = scenario(None, Some("00:45"));
    let s = Scenario::parse(Path::new("expiry.json"), text.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
    let plugin = Plugin::load(wasm()).unwrap();
    let r = sim::replay(&s, &plugin, &mut |_| {}).unwrap();
    let expired: Vec<_> = r.events.iter().filter(|e| e.kind == "expired").collect();
    assert_eq!(expired.len(), 1, "{}", r.render(false));
    let e = expired[0];
    assert!(e.text.contains("drain-web"), "{}", e.text);
    // 10 minutes after 00:10, at the filter's next tick (1s).
    assert!(e.t_s >= at("00:20") && e.t_s <= at("00:20") + 1.0, "{} {}", e.t_s, r.render(false));
    assert!(r.render(false).contains("expired"), "the terminal timeline shows it");
    assert!(report::html(&r).contains("drain-web (drain) expired"), "and the HTML event table");

    // Cleared in time, it never expires.
    let s = Scenario::parse(Path::new("expiry.json"), scenario(None, Some("00:15")).as_bytes()).unwrap();
    let r = sim::replay(&s, &plugin, &mut |_| {}).unwrap();
    assert!(!r.events.iter().any(|e| e.kind == "expired"), "{}", r.render(false));
}
