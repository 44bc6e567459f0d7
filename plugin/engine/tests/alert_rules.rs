//! The Prometheus alerts in deploy/prometheus run against the filter's real metric names and pass
//! their promtool unit tests (the capacity alert fires for a drain left behind at night and stays
//! silent through a healthy rolling deployment). promtool runs as a real process; without it the
//! test fails and says how to get it: a skipped alert test is how the incident's gap came about.

use std::path::{Path, PathBuf};
use std::process::Command;

use ebb_engine::metrics::{GlobalMetric, Kind, PoolMetric};
use regex::Regex;

const RULES: &str = "deploy/prometheus/ebb-alerts.yaml";
const TESTS: &str = "deploy/prometheus/ebb-alerts.test.yaml";
/// SLO burn-rate pages on Envoy's own metrics, tested beside the capacity alert.
const BURN_RULES: &str = "deploy/prometheus/slo-burn-rate.yaml";
const BURN_TESTS: &str = "deploy/prometheus/slo-burn-rate.test.yaml";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `EBB_PROMTOOL`, or `promtool` from PATH.
fn promtool() -> String {
    std::env::var("EBB_PROMTOOL").unwrap_or_else(|_| "promtool".to_string())
}

/// Runs promtool with `args` from the repository root; fails with the command and its output.
fn run_promtool(args: &[&str]) -> String {
    let tool = promtool();
    let shown = format!("{tool} {}", args.join(" "));
    let output = match Command::new(&tool).args(args).current_dir(repo()).output() {
        Ok(output) => output,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "`{tool}` not found, so the alert rules cannot be tested. Run `.ci/run` (it installs it) or \
             `apt-get install prometheus` (Debian's package has promtool), or set EBB_PROMTOOL to its path."
        ),
        Err(e) => panic!("could not run `{shown}`: {e}"),
    };
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "`{shown}` failed ({}) in {}:\n{text}", output.status, repo().display());
    text
}

#[test]
fn rules_pass_promtool_check() {
    for rules in [RULES, BURN_RULES] {
        let out = run_promtool(&["check", "rules", "--lint=all", "--lint-fatal", rules]);
        assert!(out.contains("SUCCESS"), "{rules}: {out}");
    }
}

#[test]
fn rules_pass_their_unit_tests() {
    for tests in [TESTS, BURN_TESTS] {
        let out = run_promtool(&["test", "rules", tests]);
        assert!(out.contains("SUCCESS"), "{tests}: {out}");
    }
}

/// The Prometheus series name of every metric the filter defines (after the `ebb_pool` tag rule
/// of deploy/envoy/envoy.yaml), with its kind.
fn exported() -> Vec<(String, Kind)> {
    let pools = PoolMetric::ALL.iter().map(|m| (format!("ebb_pool_{}", m.suffix()), m.kind()));
    let global = GlobalMetric::ALL.iter().map(|m| (m.name().replace('.', "_"), m.kind()));
    pools.chain(global).collect()
}

#[test]
fn rules_and_tests_use_only_metrics_the_filter_exports() {
    let known = exported();
    let name = Regex::new(r"\bebb_[a-z_]+\b").expect("regex");
    let rated = Regex::new(r"\b(?:rate|irate|increase)\((ebb_[a-z_]+)").expect("regex");
    for file in [RULES, TESTS] {
        let text = std::fs::read_to_string(repo().join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        for m in name.find_iter(&text).map(|m| m.as_str()) {
            // `ebb_pool` alone is the label the tag rule adds.
            if m != "ebb_pool" {
                assert!(known.iter().any(|(k, _)| k == m), "{file}: {m} is not a metric the filter exports");
            }
        }
        for caps in rated.captures_iter(&text) {
            let m = &caps[1];
            let kind = known.iter().find(|(k, _)| k == m).map(|(_, kind)| *kind);
            assert_eq!(kind, Some(Kind::Counter), "{file}: rate() over {m}, which is not a counter");
        }
    }
    // The capacity alert's three inputs must stay gauges the filter publishes.
    for m in ["ebb_pool_available_hosts", "ebb_pool_expected_hosts", "ebb_pool_deploy_in_progress"] {
        assert!(known.contains(&(m.to_string(), Kind::Gauge)), "{m}");
    }
}
