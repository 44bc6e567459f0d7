// Where a run's report goes, for `ebb replay` and `ebb gameday` alike: the files asked for
// (--json, --junit, --html) and the terminal (the whole report, or one verdict line with --quiet).

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::Context;
use ebb_harness::report::{self, Report};

/// The report files a command line asks for: the same flags for `ebb replay` and `ebb gameday`.
#[derive(clap::Args, Debug)]
pub struct Files {
    /// Write the whole result as JSON (the report contract) to FILE.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Write JUnit XML to FILE: one test case per SLO, failed when the SLO is missed.
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    /// Write a self-contained HTML report to FILE: verdict, SLO table, a timeline chart per pool
    /// (traffic, errors, capacity, latency, alerts, impact, deploys and recovery), pools, events.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
}

/// Writes `report` to `files`, prints it (or its verdict line when `quiet`), then one line per
/// file written: `written` first (files the command wrote itself), then the report's.
pub fn emit<'a>(
    report: &Report,
    took_s: f64,
    files: &'a Files,
    quiet: bool,
    mut written: Vec<(&'static str, &'a Path)>,
) -> anyhow::Result<()> {
    if let Some(path) = files.json.as_deref() {
        let mut text = serde_json::to_string_pretty(report)?;
        text.push('\n');
        write(path, &text)?;
        written.push(("report", path));
    }
    if let Some(path) = files.junit.as_deref() {
        write(path, &report::junit(report, took_s))?;
        written.push(("junit", path));
    }
    if let Some(path) = files.html.as_deref() {
        write(path, &report::html(report))?;
        written.push(("html", path));
    }
    let color = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    if quiet {
        println!("{}: {}", report.scenario, report.verdict);
    } else {
        print!("{}", report.render(color));
    }
    for (what, path) in written {
        println!("{what}: {}", path.display());
    }
    Ok(())
}

/// Writes `text` to `path`, creating its folder.
pub fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}
