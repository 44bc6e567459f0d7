// `ebb check`: load and check scenario files without running them (syntax, unknown fields,
// names that must exist, moments, limits, commands against the filter's caps), warn of faults
// that expire unseen, print what a replay would cost and which programs it would run, and refuse
// a replay over budget.

use std::path::PathBuf;
use std::process::ExitCode;

use ebb_harness::scenario::error::{thousands, SHOWN};
use ebb_harness::scenario::{Scenario, ScenarioError};
use ebb_harness::sim::{self, Budget};

#[derive(clap::Args)]
pub struct Args {
    /// Scenario files to check.
    #[arg(required = true, value_name = "SCENARIO.json")]
    files: Vec<PathBuf>,
    /// Accept scenarios whose estimated replay is over the default budget (20 million simulated
    /// requests, 1,024 VMs, 4 GiB), up to the large one (2 billion requests, 16,384 VMs, 256 GiB).
    #[arg(long)]
    allow_large: bool,
    /// Fail (exit 2) on warnings too, such as a fault whose TTL ends it before a later command
    /// clears it.
    #[arg(long)]
    deny_warnings: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let budget = Budget::new(args.allow_large);
    let mut bad = 0;
    for file in &args.files {
        let (s, warnings) = match Scenario::load_with_warnings(file) {
            Ok(loaded) => loaded,
            Err(e) => {
                bad += 1;
                eprintln!("{e}");
                continue;
            }
        };
        if !warnings.is_empty() {
            let more = warnings.len().saturating_sub(SHOWN);
            let problems = warnings.into_iter().take(SHOWN).collect();
            let shown = ScenarioError { file: file.clone(), problems, more };
            eprintln!("{shown}");
            if args.deny_warnings {
                bad += 1;
                continue;
            }
        }
        let estimate = sim::estimate(&s);
        let over = estimate.over(&budget);
        if !over.is_empty() {
            bad += 1;
            eprintln!("{}: {}", file.display(), over_budget(&over, args.allow_large));
            continue;
        }
        let (pools, slos) = (s.pools.len(), s.slos.len());
        let plural = |n: usize, one: &'static str, many: &'static str| if n == 1 { one } else { many };
        println!(
            "{}: ok ({}, {pools} {}, {slos} {})",
            file.display(),
            s.name,
            plural(pools, "pool", "pools"),
            plural(slos, "SLO", "SLOs")
        );
        println!("  estimate: {estimate}");
        let programs = programs(&s);
        if !programs.is_empty() {
            println!("  runs programs (read them first; `ebb replay --no-programs` refuses to run them):");
            for line in programs {
                println!("    {line}");
            }
        }
    }
    Ok(ExitCode::from(if bad == 0 { 0 } else { 2 }))
}

/// Why a scenario is refused for its size, and how to go on.
pub(crate) fn over_budget(over: &[String], allow_large: bool) -> String {
    let what = over.join("; ");
    if allow_large {
        format!("a replay would exceed even the large budget: {what}")
    } else {
        format!(
            "a replay would exceed the budget: {what}. Shorten it, lower its rates or `sample` more, or pass \
             --allow-large (up to {})",
            Budget::LARGE
        )
    }
}

/// The programs a replay of `s` runs, one line each (`recovery[3].run: ../x.sh --verbose (on
/// Alert, 5m after it fires)`); the first few, and how many more.
pub(crate) fn programs(s: &Scenario) -> Vec<String> {
    let programs = s.programs();
    let mut lines: Vec<String> = programs
        .iter()
        .take(SHOWN)
        .map(|(path, r)| {
            let argv: Vec<String> = r.run.iter().flatten().map(|a| shown(a)).collect();
            format!("{path}: {} (on {:?}, {} after it fires)", argv.join(" "), r.trigger(), r.after)
        })
        .collect();
    if programs.len() > SHOWN {
        lines.push(format!("… and {} more", thousands((programs.len() - SHOWN) as u64)));
    }
    lines
}

/// An argument shown unambiguously: bare when plain, else quoted with escapes (spaces, quotes
/// and control characters can neither hide nor merge arguments).
fn shown(arg: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "_-./=:,+@%".contains(c);
    if !arg.is_empty() && arg.chars().all(plain) {
        arg.to_string()
    } else {
        format!("{arg:?}")
    }
}
