// `ebb replay`: run a scenario through the real filter on a simulated clock, print the timeline
// and SLO verdicts and write the JSON, JUnit and HTML reports; exit 0 when every SLO is met, 1 when one is missed.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use ebb_harness::host::Plugin;
use ebb_harness::report;
use ebb_harness::scenario::Scenario;
use ebb_harness::{sim, Clock};

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

Exit status: 0 every SLO met, 1 an SLO missed, 2 invalid scenario or harness error.
NO_COLOR=1 turns colours off in the terminal (the HTML report always has them).";

#[derive(clap::Args)]
pub struct Args {
    /// The scenario file (JSON; see scenarios/ and docs/scenarios.md).
    #[arg(value_name = "SCENARIO.json")]
    scenario: PathBuf,
    /// The filter to replay with.
    #[arg(long, value_name = "FILTER.wasm", default_value = "dist/ebb.wasm")]
    plugin: PathBuf,
    /// Write the whole result as JSON (the report contract) to FILE.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Write JUnit XML to FILE: one test case per SLO, failed when the SLO is missed.
    #[arg(long, value_name = "FILE")]
    junit: Option<PathBuf>,
    /// Write a self-contained HTML report to FILE: verdict, SLO table, a timeline chart per pool
    /// (traffic, errors, capacity, latency, alerts, impact, deploys and recovery), pools, events.
    #[arg(long, value_name = "FILE")]
    html: Option<PathBuf>,
    /// Replace the scenario's seed.
    #[arg(long)]
    seed: Option<u64>,
    /// The proxy the simulated fleet plays (envoy, ngx-wasm or strict; see `ebb request --help`).
    #[arg(long, value_enum, default_value_t = super::args::HostProfile::Envoy)]
    host_profile: super::args::HostProfile,
    /// Print only the verdict line.
    #[arg(long, short)]
    quiet: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut scenario = Scenario::load(&args.scenario)?;
    if let Some(seed) = args.seed {
        scenario.seed = seed;
    }
    let plugin = Plugin::load(&args.plugin).with_context(|| format!("loading {}", args.plugin.display()))?;
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
    let report = sim::replay_as(&scenario, &plugin, args.host_profile.into(), &mut progress)?;
    let took_s = clock.now_ns().saturating_sub(started) as f64 / 1e9;
    let mut written = Vec::new();
    if let Some(path) = &args.json {
        let mut text = serde_json::to_string_pretty(&report)?;
        text.push('\n');
        write(path, &text)?;
        written.push(("report", path));
    }
    if let Some(path) = &args.junit {
        write(path, &report::junit(&report, took_s))?;
        written.push(("junit", path));
    }
    if let Some(path) = &args.html {
        write(path, &report::html(&report))?;
        written.push(("html", path));
    }
    let color = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    if args.quiet {
        println!("{}: {}", report.scenario, report.verdict);
    } else {
        print!("{}", report.render(color));
    }
    for (what, path) in written {
        println!("{what}: {}", path.display());
    }
    Ok(ExitCode::from(if report.passed() { 0 } else { 1 }))
}

/// Writes `text` to `path`, creating its folder.
fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}
