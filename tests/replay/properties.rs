// Property tests (proptest) of the scenario parser and the simulator's arithmetic: arbitrary
// JSON and bytes never panic, every error has a line and a column, what loads reads back the
// same; replays with durations and rates at the bounds never wrap or hang. Findings: docs/fuzzing.md.

use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration as StdDuration;

use ebb_harness::scenario::{Scenario, ScenarioError};
use ebb_harness::sim::{self, Budget, ReplayError};
use ebb_harness::Plugin;
use proptest::prelude::*;
use serde_json::Value;

use super::hardening::Stopwatch;
use super::{root, wasm};

fn plugin() -> &'static Plugin {
    static PLUGIN: OnceLock<Plugin> = OnceLock::new();
    PLUGIN.get_or_init(|| Plugin::load(wasm()).unwrap_or_else(|e| panic!("loading ebb.wasm: {e}")))
}

fn base() -> &'static Value {
    static BASE: OnceLock<Value> = OnceLock::new();
    BASE.get_or_init(|| {
        let path = root().join("scenarios/blackhole-drain.json");
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{e}"))).unwrap_or_default()
    })
}

/// Every JSON pointer into `v`, the root included.
fn pointers(v: &Value, at: String, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                pointers(child, format!("{at}/{}", k.replace('~', "~0").replace('/', "~1")), out);
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                pointers(child, format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
    out.push(at);
}

/// Numbers where arithmetic breaks: zero, negatives, the limits and just past them, the edges
/// of u32, u64 and f64.
fn numbers() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::from(0)),
        Just(Value::from(-1)),
        Just(Value::from(1)),
        Just(Value::from(0.5)),
        Just(Value::from(1_000_000)),
        Just(Value::from(1_000_001)),
        Just(Value::from(100_001)),
        Just(Value::from(u32::MAX)),
        Just(Value::from(u64::from(u32::MAX) + 1)),
        Just(Value::from(u64::MAX)),
        Just(Value::from(i64::MIN)),
        Just(Value::from(1e308)),
        Just(Value::from(-1e308)),
        Just(Value::from(5e-324)),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_filter("JSON has no NaN or infinity", |f| f.is_finite()).prop_map(Value::from),
    ]
}

/// Strings the format gives meaning to, at and past their limits, and a few it does not.
fn strings() -> impl Strategy<Value = Value> {
    prop_oneof![
        prop::sample::select(vec![
            "0",
            "1ms",
            "1s",
            "15s",
            "7d",
            "7d1ms",
            "8d",
            "213503d",
            "99999999999999999999d",
            "+0s",
            "+1ms",
            "+7d",
            "+213503d",
            "00:00",
            "23:59:59",
            "24:00",
            "web",
            "api",
            "",
            "\u{0}",
            "\u{1b}[2J",
            "?",
            "ebb",
            "WebErrorRate",
            "pass",
            "tcp",
            "http",
            "blackhole",
            "restore",
            "error_ratio",
            "available_ratio",
        ])
        .prop_map(Value::from),
        "[a-z0-9+:?\\[\\].]{0,10}".prop_map(Value::from),
        any::<String>().prop_map(Value::from),
    ]
}

/// Keys: the format's own (so that values reach deep into it), and anything.
fn keys() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "version",
            "name",
            "duration",
            "pools",
            "traffic",
            "slos",
            "hosts",
            "capacity_per_host",
            "service_time",
            "points",
            "bursts",
            "at",
            "for",
            "rate",
            "alerts",
            "recovery",
            "after",
            "run",
            "timeline",
            "command",
            "drain",
            "pool",
            "topology",
            "proxies",
            "workers",
            "impact",
            "window",
            "max",
            "error_ratio",
            "$schema",
        ])
        .prop_map(String::from),
        any::<String>(),
    ]
}

fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![Just(Value::Null), any::<bool>().prop_map(Value::from), numbers(), strings()];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((keys(), inner), 0..6).prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// The shipped blackhole scenario with one value replaced (or removed): mostly valid, so that
/// the checks of meaning and the paths to positions are exercised, not only the parser.
fn mutated() -> impl Strategy<Value = Vec<u8>> {
    let mut all = Vec::new();
    pointers(base(), String::new(), &mut all);
    (prop::sample::select(all), json(), any::<bool>(), any::<bool>()).prop_map(|(pointer, value, remove, pretty)| {
        let mut v = base().clone();
        let (parent, key) = pointer.rsplit_once('/').unwrap_or(("", ""));
        match (remove, v.pointer_mut(parent)) {
            (true, Some(Value::Object(map))) => {
                map.remove(&key.replace("~1", "/").replace("~0", "~"));
            }
            _ => {
                if let Some(slot) = v.pointer_mut(&pointer) {
                    *slot = value;
                }
            }
        }
        let text = if pretty { serde_json::to_vec_pretty(&v) } else { serde_json::to_vec(&v) };
        text.unwrap_or_default()
    })
}

/// The error's promises: something to show, each problem with a line and a column inside the
/// text, a path without unknown steps, and nothing that moves a terminal's cursor.
fn well_formed(e: &ScenarioError, text: &[u8]) -> Result<(), TestCaseError> {
    prop_assert!(!e.problems.is_empty(), "an error without problems");
    let lines = text.iter().filter(|&&b| b == b'\n').count() + 2;
    for p in &e.problems {
        let (line, column) = (p.line.unwrap_or(0), p.column.unwrap_or(0));
        prop_assert!(line >= 1 && column >= 1, "no line and column: {e}");
        prop_assert!(line <= lines, "line {line} of a {lines}-line text: {e}");
        prop_assert!(!p.path.contains('?'), "an unknown path step: {e}");
    }
    let shown = e.to_string();
    prop_assert!(!shown.chars().any(|c| c.is_control() && c != '\n'), "a control character: {shown:?}");
    Ok(())
}

/// Parses `text`; errors must be well formed, and what loads must read back the same.
fn parse_property(text: &[u8]) -> Result<(), TestCaseError> {
    let file = Path::new("fuzz.json");
    match Scenario::parse(file, text) {
        Err(e) => well_formed(&e, text),
        Ok(s) => {
            let again = serde_json::to_vec(&s).map_err(|e| TestCaseError::fail(e.to_string()))?;
            match Scenario::parse(file, &again) {
                Ok(t) => prop_assert!(t == s, "a scenario reads back differently:\n{s:?}\n{t:?}"),
                Err(e) => prop_assert!(false, "a scenario that loaded does not load again: {e}"),
            }
            // Its estimate is arithmetic on whatever it holds: it must not panic either.
            let _ = sim::estimate(&s);
            Ok(())
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn arbitrary_json_never_panics_and_every_error_has_a_position(value in json(), pretty in any::<bool>()) {
        let text = if pretty { serde_json::to_vec_pretty(&value) } else { serde_json::to_vec(&value) };
        parse_property(&text.unwrap_or_default())?;
    }

    #[test]
    fn a_scenario_with_any_value_changed_is_read_or_refused_with_a_position(text in mutated()) {
        parse_property(&text)?;
    }

    #[test]
    fn arbitrary_bytes_and_cut_scenarios_are_refused_with_a_position(
        bytes in prop::collection::vec(any::<u8>(), 0..512),
        cut in 0usize..2_000,
        bom in any::<bool>(),
    ) {
        parse_property(&bytes)?;
        let text = serde_json::to_vec_pretty(base()).unwrap_or_default();
        let mut cut_text = if bom { b"\xEF\xBB\xBF".to_vec() } else { Vec::new() };
        cut_text.extend_from_slice(&text[..cut.min(text.len())]);
        parse_property(&cut_text)?;
    }
}

/// A one-pool replay whose every time and rate is drawn from values at the bounds.
#[derive(Debug, Clone)]
struct Bounds {
    start: &'static str,
    duration: &'static str,
    scrape: &'static str,
    rate: f64,
    burst_rate: f64,
    burst_for: &'static str,
    burst_at_end: bool,
    hold: &'static str,
    keep: &'static str,
    after: &'static str,
    retry_after: &'static str,
    batch_interval: &'static str,
    sample: u32,
    service_time: &'static str,
    timeout: &'static str,
}

fn bounds() -> impl Strategy<Value = Bounds> {
    let durations = || prop::sample::select(vec!["0s", "1ms", "1s", "90s", "1d", "7d"]);
    (
        (
            prop::sample::select(vec!["00:00", "23:59:59"]),
            prop::sample::select(vec!["1ms", "1s", "10m", "7d"]),
            prop::sample::select(vec!["1s", "15s", "1d"]),
            prop::sample::select(vec![0.0, 1e-9, 0.5, 50.0, 1e6]),
            prop::sample::select(vec![0.0, 3.0, 1e6]),
            prop::sample::select(vec!["1ms", "5m", "7d"]),
            any::<bool>(),
        ),
        (
            durations(),
            durations(),
            durations(),
            durations(),
            prop::sample::select(vec!["1ms", "1m", "1d"]),
            prop::sample::select(vec![1u32, 25, 1_000_000]),
            prop::sample::select(vec!["1ms", "1s", "7d"]),
            prop::sample::select(vec!["0s", "30s", "7d"]),
        ),
    )
        .prop_map(|((start, duration, scrape, rate, burst_rate, burst_for, burst_at_end), rest)| {
            let (hold, keep, after, retry_after, batch_interval, sample, service_time, timeout) = rest;
            Bounds {
                start,
                duration,
                scrape,
                rate,
                burst_rate,
                burst_for,
                burst_at_end,
                hold,
                keep,
                after,
                retry_after,
                batch_interval,
                sample,
                service_time,
                timeout,
            }
        })
}

fn bounded_scenario(b: &Bounds) -> String {
    let burst_at = if b.burst_at_end { format!("+{}", b.duration) } else { "+0s".into() };
    format!(
        r#"{{"version": 1, "name": "bounds", "start": "{start}", "duration": "{duration}", "scrape_interval": "{scrape}",
          "sample": {sample}, "topology": {{"proxies": 1, "workers": 1}},
          "filter": {{"limits": {{"max_ttl": "7d", "max_drain_fraction": 1.0}}}},
          "pools": [{{"name": "web", "hosts": 4, "capacity_per_host": 2, "service_time": "{service_time}", "timeout": "{timeout}"}}],
          "traffic": [{{"pool": "web", "points": [["+0s", {rate}]],
                        "bursts": [{{"at": "{burst_at}", "for": "{burst_for}", "rate": {burst_rate}}}]}}],
          "deploys": [{{"at": "+0s", "pools": ["web"], "batches": 4, "batch_interval": "{batch_interval}",
                        "fail_at_batch": 1, "retry_after": "{retry_after}", "ttl": "7d"}}],
          "alerts": [{{"name": "Cap", "pool": "web", "signal": "available_ratio", "below": 1.0,
                       "for": "{hold}", "keep_firing_for": "{keep}", "window": "{scrape}"}}],
          "recovery": [{{"on": "Cap", "after": "{after}", "restore": "web"}}],
          "slos": [{{"time_to_restore": {{"pool": "web", "max": "7d"}}}},
                   {{"error_ratio": {{"pool": "web", "max": 0.5, "window": "{scrape}"}}}}]}}"#,
        start = b.start,
        duration = b.duration,
        scrape = b.scrape,
        sample = b.sample,
        service_time = b.service_time,
        timeout = b.timeout,
        rate = b.rate,
        burst_at = burst_at,
        burst_for = b.burst_for,
        burst_rate = b.burst_rate,
        batch_interval = b.batch_interval,
        retry_after = b.retry_after,
        hold = b.hold,
        keep = b.keep,
        after = b.after,
    )
}

/// Small enough that each case runs in well under a second.
/// The memory figure is only an estimate, mostly of requests held up to a 7d `timeout`; the
/// requests and steps bound what really runs.
const TINY: Budget = Budget { requests: 100_000, vms: 2, memory_bytes: 64 << 30, steps: 2_000_000 };

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn replays_at_the_bounds_never_wrap_or_hang(b in bounds()) {
        let text = bounded_scenario(&b);
        let s = match Scenario::parse(Path::new("bounds.json"), text.as_bytes()) {
            Ok(s) => s,
            // Some draws are refused (a deploy longer than its TTL...): refused well is fine.
            Err(e) => return well_formed(&e, text.as_bytes()),
        };
        let estimate = sim::estimate(&s);
        let started = Stopwatch::start();
        let result = sim::replay_within(&s, plugin(), TINY, &mut |_| {});
        // A hang guard, not a speed target (that is `make bench`): generous, because a loaded CI
        // machine has run a case in 35 s; a replay the step budget failed to stop never ends.
        prop_assert!(started.elapsed() < StdDuration::from_secs(180), "{b:?} took {:?}", started.elapsed());
        let r = match result {
            Ok(r) => r,
            Err(ReplayError::TooLarge { over, .. }) => {
                prop_assert!(!estimate.over(&TINY).is_empty() && !over.is_empty());
                return Ok(());
            }
            Err(ReplayError::OverBudget { what, .. }) => {
                prop_assert!(what.contains("more than"), "{what}");
                return Ok(());
            }
            Err(e) => return Err(TestCaseError::fail(format!("{b:?}: {e}"))),
        };
        let end = r.duration_s;
        let timeline = r.render(false);
        for e in &r.events {
            prop_assert!((0.0..=end + 1e-9).contains(&e.t_s), "an event at {} of {end}s: {b:?}\n{timeline}", e.t_s);
        }
        for a in &r.alerts {
            for t in a.fired_s.iter().chain(&a.resolved_s) {
                prop_assert!((0.0..=end + 1e-9).contains(t), "an alert at {t} of {end}s: {b:?}");
            }
        }
        // A runbook acts `after` its alert fired, never earlier (a wrapped sum would act at once).
        let after_s = ebb_engine::Duration::parse(b.after).map_or(0.0, |d| d.as_millis() as f64 / 1000.0);
        let first_fired = r.alerts.iter().flat_map(|a| a.fired_s.iter().copied()).fold(f64::INFINITY, f64::min);
        for e in r.events.iter().filter(|e| e.kind == "recovery") {
            prop_assert!(e.t_s + 1e-6 >= first_fired + after_s, "a runbook at {} before {first_fired} + {after_s}: {b:?}\n{timeline}", e.t_s);
        }
        prop_assert_eq!(r.requests.represented, r.requests.simulated.saturating_mul(u64::from(b.sample)));
        // The estimate is honest: Poisson arrivals stay within a few deviations of it.
        let (n, est) = (r.requests.simulated as f64, estimate.requests as f64);
        prop_assert!(n <= est + 10.0 * est.sqrt() + 50.0, "{n} simulated, {est} estimated: {b:?}");
    }
}
