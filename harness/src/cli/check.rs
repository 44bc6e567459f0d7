// `ebb check`: load and check scenario files without running them (syntax, unknown fields,
// names that must exist, moments, commands against the filter's caps).

use std::path::PathBuf;
use std::process::ExitCode;

use ebb_harness::scenario::Scenario;

#[derive(clap::Args)]
pub struct Args {
    /// Scenario files to check.
    #[arg(required = true, value_name = "SCENARIO.json")]
    files: Vec<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut bad = 0;
    for file in &args.files {
        match Scenario::load(file) {
            Ok(s) => println!("{}: ok ({}, {} pools, {} SLOs)", file.display(), s.name, s.pools.len(), s.slos.len()),
            Err(e) => {
                bad += 1;
                eprintln!("{e}");
            }
        }
    }
    Ok(ExitCode::from(if bad == 0 { 0 } else { 2 }))
}
