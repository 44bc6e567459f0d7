// `ebb gameday`: play a scenario against live proxies, judge its SLOs on what they did, write
// the replay's reports, and exit with a status that says how it ended.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::Context;
use ebb_harness::console::{Console, ConsoleOptions};
use ebb_harness::gameday::target::Target;
use ebb_harness::gameday::{self, signals, Ending, LiveSink, NoConsole, Options, StartError};
use ebb_harness::http::Url;
use ebb_harness::scenario::Scenario;
use ebb_harness::Clock;

use super::output::{self, Files};

pub const EXAMPLES: &str = "Examples:
  # See every call it would send, with its time, and send nothing:
  ebb gameday scenarios/gameday-aborted-deploy.json --target edge=http://127.0.0.1:9902 --dry-run

  # Play it 60 times faster against one proxy, alerts from the team's Alertmanager:
  EBB_KEY_FILE=/etc/ebb/control.key ebb gameday scenarios/gameday-aborted-deploy.json \\
    --target edge=http://127.0.0.1:9902 --metrics http://127.0.0.1:9901/stats/prometheus \\
    --alertmanager http://127.0.0.1:9093 --time-scale 60 --html out/gameday.html

The key comes from --key-file, EBB_KEY_FILE or EBB_KEY, never from the command line. Every fault
carries a TTL of at most the game day's remaining time plus 15s and an id behind the run's id
(gd1a2b3c-deploy1-web). At any end the run clears its own faults by id; after the console's Halt
or a stop condition it sends the kill switch to every target instead; /.ebb/v1/state must confirm
that none of its faults is left. A target carrying another game day's faults is refused (exit 4)
unless --force.

Exit status:
  0  the scenario ran to its end and every SLO was met
  1  it ran to its end and an SLO was missed (as `ebb replay`)
  2  usage or input error: bad arguments, invalid scenario, no key (nothing was sent)
  3  halted: Ctrl-C, SIGTERM, the console's Halt or a stop condition (faults cleared)
  4  target error: a target, metrics page or Alertmanager unreachable, the key refused, a
     command refused, a target carrying another game day's faults (without --force), or a
     target where no confirmation that the faults are gone could be had";

/// Exit statuses (see EXAMPLES).
const PASS: u8 = 0;
const SLO_MISSED: u8 = 1;
const INPUT: u8 = 2;
const HALTED: u8 = 3;
const TARGET: u8 = 4;

#[derive(clap::Args)]
pub struct Args {
    /// The scenario file (JSON; see scenarios/gameday-*.json and docs/scenarios.md).
    #[arg(value_name = "SCENARIO.json")]
    scenario: PathBuf,
    /// A proxy to drive: a name and its control listener's URL (deploy/envoy: http://127.0.0.1:9902).
    /// Repeat for a fleet: every call goes to every target.
    #[arg(long = "target", value_name = "NAME=CONTROL_URL", required = true, value_parser = Target::parse)]
    targets: Vec<Target>,
    /// File holding the control key (else EBB_KEY_FILE, else EBB_KEY).
    #[arg(long, value_name = "FILE")]
    key_file: Option<PathBuf>,
    /// A target's admin /stats/prometheus URL, scraped for the filter's request counts
    /// (repeat per proxy; a URL without a path gets /stats/prometheus).
    #[arg(long = "metrics", value_name = "URL", value_parser = metrics_url)]
    metrics: Vec<Url>,
    /// Judge POOL's latency on the HTTP listener STAT_PREFIX's envoy_http_downstream_rq_time (from
    /// arrival to answer, the filter's delays included, every pool behind that listener counted)
    /// instead of its cluster's envoy_cluster_upstream_rq_time (upstream only, without the
    /// filter's delays). deploy/envoy: ingress_http. Repeat per pool.
    #[arg(long = "latency-listener", value_name = "POOL=STAT_PREFIX", value_parser = pool_prefix)]
    latency_listeners: Vec<(String, String)>,
    /// The team's Alertmanager: alert states from GET /api/v2/alerts, recovery by its receivers.
    /// Without it, the scenario's own alert rules run on what is scraped and its runbooks recover.
    #[arg(long, value_name = "URL", value_parser = url)]
    alertmanager: Option<Url>,
    /// Scenario seconds per real second (60: a 20-minute scenario in 20 seconds).
    #[arg(long, value_name = "X", default_value_t = 1.0)]
    time_scale: f64,
    /// Serve the live console on ADDR (127.0.0.1:PORT; port 0 picks one): open the URL it prints
    /// (its token included) to watch pools, alerts and SLO clocks, and Halt the game day.
    #[arg(long, value_name = "ADDR")]
    console: Option<SocketAddr>,
    /// Let --console listen on an address other than loopback (anyone who can reach it and has
    /// the URL can halt the game day).
    #[arg(long, requires = "console")]
    console_allow_remote: bool,
    /// Play even when a target carries faults of another game day (its faults are left alone,
    /// but both verdicts then include what the other did).
    #[arg(long)]
    force: bool,
    /// Print every planned call with its time and send nothing.
    #[arg(long)]
    dry_run: bool,
    #[command(flatten)]
    files: Files,
    /// Print only the verdict line at the end (progress lines still go to stderr).
    #[arg(long, short)]
    quiet: bool,
}

fn url(text: &str) -> Result<Url, String> {
    Url::parse(text).map_err(|e| e.to_string())
}

fn pool_prefix(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((pool, prefix)) if !pool.is_empty() && !prefix.is_empty() => Ok((pool.into(), prefix.into())),
        _ => Err(format!("expected POOL=STAT_PREFIX (web=ingress_http), got {text:?}")),
    }
}

fn metrics_url(text: &str) -> Result<Url, String> {
    let mut u = url(text)?;
    if u.base_path.is_empty() {
        u.base_path = "/stats/prometheus".into();
    }
    Ok(u)
}

/// The key from `--key-file`, `EBB_KEY_FILE` or `EBB_KEY`, as scripts/ebb-ctl reads it.
fn key(file: Option<&Path>) -> anyhow::Result<String> {
    let from_env = std::env::var_os("EBB_KEY_FILE").filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(path) = file.map(Path::to_path_buf).or(from_env) {
        let text =
            std::fs::read_to_string(&path).with_context(|| format!("cannot read key file {}", path.display()))?;
        return Ok(text.trim_end_matches(['\n', '\r']).to_string());
    }
    Ok(std::env::var("EBB_KEY").unwrap_or_default())
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    match play(args) {
        Ok(code) => Ok(ExitCode::from(code)),
        Err(e) => {
            eprintln!("ebb gameday: {e:#}");
            Ok(ExitCode::from(INPUT))
        }
    }
}

fn play(args: Args) -> anyhow::Result<u8> {
    let scenario = Scenario::load(&args.scenario)?;
    let halt = Arc::new(AtomicBool::new(false));
    let console = match args.console {
        Some(addr) if !args.dry_run => {
            let options = ConsoleOptions { allow_remote: args.console_allow_remote, ..ConsoleOptions::default() };
            let console =
                Console::start_with(addr, halt.clone(), options).with_context(|| format!("--console {addr}"))?;
            eprintln!("console: {}", console.url());
            Some(console)
        }
        _ => None,
    };
    let options = Options {
        targets: args.targets.clone(),
        key: if args.dry_run {
            key(args.key_file.as_deref()).unwrap_or_default()
        } else {
            key(args.key_file.as_deref())?
        },
        metrics: args.metrics.clone(),
        alertmanager: args.alertmanager.clone(),
        time_scale: args.time_scale,
        halt,
        force: args.force,
        latency_listeners: args.latency_listeners.clone(),
    };
    if args.dry_run {
        // A dry run needs no key: it signs nothing.
        let checked = Options { key: "dry-run".into(), ..options };
        gameday::check(&scenario, &checked).map_err(|e| anyhow::anyhow!("{e}"))?;
        print!("{}", gameday::dry_run(&scenario, &checked));
        return Ok(PASS);
    }
    signals::install();
    let clock = Clock::real();
    let started = clock.now_ns();
    let mut progress = |line: &str| eprintln!("{line}");
    let sink: &dyn LiveSink = match &console {
        Some(c) => c,
        None => &NoConsole,
    };
    let outcome = match gameday::run(&scenario, &options, sink, &mut progress) {
        Ok(outcome) => outcome,
        Err(StartError::Input(e)) => {
            eprintln!("ebb gameday: {}: {e}", args.scenario.display());
            return Ok(INPUT);
        }
        Err(StartError::Target(e)) => {
            eprintln!("ebb gameday: {e}; nothing was sent");
            return Ok(TARGET);
        }
    };
    let took_s = clock.now_ns().saturating_sub(started) as f64 / 1e9;
    let report = &outcome.report;
    output::emit(report, took_s, &args.files, args.quiet, Vec::new())?;
    let code = match (&outcome.ending, outcome.clean) {
        (_, false) => TARGET,
        (Ending::Failed(_), _) => TARGET,
        (Ending::Halted(_), _) => HALTED,
        (Ending::Completed, _) if report.passed() => PASS,
        (Ending::Completed, _) => SLO_MISSED,
    };
    match &outcome.ending {
        Ending::Completed => {}
        Ending::Halted(why) => eprintln!("ebb gameday: halted ({why}); the report covers what ran until then"),
        Ending::Failed(why) => eprintln!("ebb gameday: stopped by an error: {why}"),
    }
    if !outcome.clean {
        eprintln!("ebb gameday: some target could not confirm that this game day's faults are gone (see above)");
    }
    Ok(code)
}
