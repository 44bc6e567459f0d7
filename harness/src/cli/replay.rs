// `ebb replay`: run a scenario through the real filter on a simulated clock, print the timeline
// and SLO verdicts and write the JSON, JUnit and HTML reports; exit 0 when every SLO is met, 1 when one is missed.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use ebb_harness::host::{FailurePolicy, Plugin};
use ebb_harness::rules::RuleFiles;
use ebb_harness::scenario::Scenario;
use ebb_harness::sim::{self, Budget, Extras, HostSettings, ReplayError};
use ebb_harness::Clock;

use super::check;
use super::output::{self, Files};

pub const EXAMPLES: &str = "Examples:
  # The seed incident as it happened (its capacity SLOs fail, exit 1):
  ebb replay scenarios/bitbucket-2021-02-05.json

  # The same with the capacity alert added, the report as JSON for CI:
  ebb replay scenarios/bitbucket-2021-02-05-capacity-alert.json --json out/report.json

  # In CI: JUnit for the test dashboard, HTML to keep as an artifact, only the verdict line:
  ebb replay scenarios/bitbucket-2021-02-05.json --quiet \\
    --junit out/bitbucket.junit.xml --html out/bitbucket.html

  # Open the HTML report after a game day (self-contained: charts, events, pools, SLOs):
  ebb replay scenarios/blackhole-drain.json --html out/blackhole.html && xdg-open out/blackhole.html

  # A scenario you have not read: refuse to run its recovery programs (they run as you):
  ebb replay downloaded.json --no-programs

  # Your own Prometheus alert rules judged by Prometheus itself (needs prometheus and promtool):
  ebb replay scenarios/bitbucket-2021-02-05-prometheus.json \
    --rules deploy/prometheus/ebb-alerts.yaml deploy/prometheus/slo-burn-rate.yaml

  # The series a real Prometheus would have scraped, for your own dashboards and tools:
  ebb replay scenarios/bitbucket-2021-02-05.json --export-series out/bitbucket.om
  promtool tsdb create-blocks-from openmetrics out/bitbucket.om data/

Exit status: 0 every SLO met, 1 an SLO missed, 2 invalid scenario, a replay over its budget
(see `ebb check`; --allow-large raises it), programs refused by --no-programs, a rule file
promtool refuses, Prometheus missing, or harness error.
NO_COLOR=1 turns colours off in the terminal (the HTML report always has them).";

#[derive(clap::Args)]
pub struct Args {
    /// The scenario file (JSON; see scenarios/ and docs/scenarios.md).
    #[arg(value_name = "SCENARIO.json")]
    scenario: PathBuf,
    /// The filter to replay with. Default: $EBB_PLUGIN, else dist/ebb.wasm in the current folder,
    /// else ebb.wasm beside the ebb binary, else the dist/ebb.wasm of the checkout it was built in.
    #[arg(long, value_name = "FILTER.wasm")]
    plugin: Option<PathBuf>,
    #[command(flatten)]
    files: Files,
    /// Replace the scenario's seed.
    #[arg(long)]
    seed: Option<u64>,
    /// The proxy the simulated fleet plays (envoy, ngx-wasm or strict; see `ebb request --help`).
    #[arg(long, value_enum, default_value_t = super::args::HostProfile::Envoy)]
    host_profile: super::args::HostProfile,
    /// The filter's failure_policy is FAIL_OPEN (as deploy/envoy/envoy.yaml ships it): a request
    /// whose filter callback fails goes on to the upstream. Default: Envoy's fail-closed (a 503).
    #[arg(long)]
    fail_open: bool,
    /// Print only the verdict line.
    #[arg(long, short)]
    quiet: bool,
    /// Replay scenarios whose estimated cost is over the default budget (20 million simulated
    /// requests, 1,024 VMs, 4 GiB), up to the large one; the replay still stops if it does more.
    #[arg(long)]
    allow_large: bool,
    /// Refuse (exit 2) a scenario whose recovery runs programs (`recovery[].run`), listing them:
    /// for a scenario you have not read. A verdict without its programs would judge another scenario.
    #[arg(long)]
    no_programs: bool,
    /// Write the series each simulated Envoy exposes, scraped at the scenario's scrape interval, to
    /// FILE as OpenMetrics text (Envoy's /stats/prometheus names; see docs/metrics.md), for
    /// `promtool tsdb create-blocks-from openmetrics` and your own tools.
    #[arg(long, value_name = "FILE")]
    export_series: Option<PathBuf>,
    /// Prometheus rule files whose alerts the SLOs judge and the runbooks act on, evaluated by a
    /// loopback Prometheus during the replay (replaces the scenario's `alerts` and `rules`; needs
    /// prometheus and promtool 2.42+; see docs/scenarios.md).
    #[arg(long, value_name = "FILE", num_args = 1..)]
    rules: Vec<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut scenario = Scenario::load(&args.scenario)?;
    if let Some(seed) = args.seed {
        scenario.seed = seed;
    }
    if args.no_programs {
        let programs = check::programs(&scenario);
        if !programs.is_empty() {
            anyhow::bail!(
                "{}: refused by --no-programs: its recovery runs programs, as you, on this machine:\n  {}",
                args.scenario.display(),
                programs.join("\n  ")
            );
        }
    }
    let rule_files: Vec<PathBuf> = if args.rules.is_empty() {
        scenario.rules.iter().map(|f| scenario.dir.join(f)).collect()
    } else {
        args.rules.clone()
    };
    let rules = if rule_files.is_empty() { None } else { Some(RuleFiles::load(&rule_files)?) };
    let budget = Budget::new(args.allow_large);
    let plugin_path = find_plugin(args.plugin.as_deref())?;
    // Compiled once per filter build and kept (see docs/benchmarks.md, "Replay"); EBB_COMPILE_CACHE=off
    // compiles every time.
    let cache = ebb_harness::host::CompileCache::from_env();
    let plugin = Plugin::load_cached(&plugin_path, cache.as_ref())
        .with_context(|| format!("loading {}", plugin_path.display()))?;
    for w in plugin.warnings() {
        eprintln!("warning: {w}");
    }
    let tty = std::io::stderr().is_terminal();
    let mut last = -1i64;
    let mut progress = |done: f64| {
        let pct = (done * 100.0) as i64;
        if tty && !args.quiet && pct != last {
            last = pct;
            let bar = "#".repeat((pct / 4) as usize);
            eprint!("\r  replaying {:<25} {pct:>3}%", bar);
            if pct >= 100 {
                eprint!("\r{:60}\r", "");
            }
            let _ = std::io::stderr().flush();
        }
    };
    // Wall time, for the JUnit report only (the replay itself runs on its simulated clock).
    let clock = Clock::real();
    let started = clock.now_ns();
    let extras = Extras { series: args.export_series.is_some(), rules };
    let host = HostSettings {
        profile: args.host_profile.into(),
        failure_policy: if args.fail_open { FailurePolicy::FailOpen } else { FailurePolicy::FailClosed },
    };
    let replayed = if extras.series || extras.rules.is_some() {
        sim::replay_extras(&scenario, &plugin, budget, host, extras, &mut progress)
    } else {
        sim::replay_as(&scenario, &plugin, budget, host, &mut progress).map(|r| (r, None))
    };
    if replayed.is_err() && tty && !args.quiet {
        // The progress bar's line, so that the error starts a line of its own.
        eprint!("\r{:60}\r", "");
    }
    let (report, series) = match replayed {
        Ok(done) => done,
        Err(ReplayError::TooLarge { over, .. }) => {
            anyhow::bail!("{}: {}", args.scenario.display(), check::over_budget(&over, args.allow_large))
        }
        Err(e @ ReplayError::OverBudget { .. }) => {
            let hint = if args.allow_large { "" } else { "; --allow-large raises the budget" };
            anyhow::bail!("{}: {e}{hint}", args.scenario.display())
        }
        Err(ReplayError::RuleFiles(e)) => anyhow::bail!("{}: {e}", args.scenario.display()),
        Err(e) => return Err(e.into()),
    };
    let took_s = clock.now_ns().saturating_sub(started) as f64 / 1e9;
    let mut written = Vec::new();
    if let (Some(path), Some(series)) = (&args.export_series, &series) {
        output::write(path, &series.openmetrics())?;
        written.push(("series", path.as_path()));
    }
    output::emit(&report, took_s, &args.files, args.quiet, written)?;
    Ok(ExitCode::from(if report.passed() { 0 } else { 1 }))
}

/// The filter a replay runs: `--plugin`, `$EBB_PLUGIN`, or the first ebb.wasm found where a
/// build leaves it, so that `ebb replay` works from any folder.
fn find_plugin(given: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(path) = given {
        return Ok(path.to_path_buf());
    }
    if let Some(path) = std::env::var_os("EBB_PLUGIN").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(path));
    }
    let mut looked = vec![PathBuf::from("dist/ebb.wasm")];
    if let Some(dir) = std::env::current_exe().ok().and_then(|exe| exe.parent().map(Path::to_path_buf)) {
        looked.push(dir.join("ebb.wasm"));
        // target/release/ebb in a checkout: its dist/ is two folders up.
        looked.push(dir.join("../../dist/ebb.wasm"));
    }
    match looked.iter().find(|p| p.is_file()) {
        Some(found) => Ok(found.clone()),
        None => anyhow::bail!(
            "no filter to replay with: give --plugin FILTER.wasm or set EBB_PLUGIN (looked for {}; `make wasm` builds dist/ebb.wasm)",
            looked.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
        ),
    }
}
