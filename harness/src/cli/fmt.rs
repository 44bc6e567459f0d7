// `ebb fmt`: rewrite scenario files in the layout a person would write (scenario/format.rs), or
// with `--check` list those that are not in it, for CI.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use ebb_harness::scenario::format;

pub const EXAMPLES: &str = "Examples:
  # Format scenario files in place:
  ebb fmt scenarios/*.json

  # In CI: exit 1 and list the files that are not formatted, changing nothing:
  ebb fmt --check scenarios/*.json";

#[derive(clap::Args)]
pub struct Args {
    /// Scenario files to format.
    #[arg(required = true, value_name = "SCENARIO.json")]
    files: Vec<PathBuf>,
    /// Change nothing: list the files that are not formatted, and exit 1 if there is one.
    #[arg(long)]
    check: bool,
}

/// Exit 0: every file formatted (or already was); 1: `--check` found files that are not; 2: a
/// file could not be read, parsed or written.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let (mut unformatted, mut failed) = (0, 0);
    for file in &args.files {
        let (bytes, formatted) = match format::format_file(file) {
            Ok(pair) => pair,
            Err(e) => {
                failed += 1;
                eprintln!("{e}");
                continue;
            }
        };
        if bytes == formatted.as_bytes() {
            continue;
        }
        if args.check {
            unformatted += 1;
            println!("{}: not formatted (run `ebb fmt {}`)", file.display(), file.display());
            continue;
        }
        if let Err(e) = replace(file, formatted.as_bytes()) {
            failed += 1;
            eprintln!("{}: {e:#}", file.display());
            continue;
        }
        println!("{}: formatted", file.display());
    }
    Ok(ExitCode::from(if failed > 0 {
        2
    } else if unformatted > 0 {
        1
    } else {
        0
    }))
}

/// Writes `bytes` to a file beside `path`, then renames it over `path`: an interrupted `ebb fmt`
/// leaves the old file or the new one, never half of one. The file's permissions are kept.
fn replace(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let name = path.file_name().context("not a file name")?.to_string_lossy();
    let temp = path.with_file_name(format!(".{name}.ebb-fmt.{}", std::process::id()));
    let permissions = std::fs::metadata(path).context("cannot read its metadata")?.permissions();
    let written = write_then_rename(&temp, path, bytes, permissions);
    if written.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    written.with_context(|| format!("cannot write {}", temp.display()))
}

fn write_then_rename(temp: &Path, path: &Path, bytes: &[u8], permissions: std::fs::Permissions) -> std::io::Result<()> {
    let mut out = std::fs::File::create(temp)?;
    out.write_all(bytes)?;
    out.sync_all()?;
    std::fs::set_permissions(temp, permissions)?;
    std::fs::rename(temp, path)
}
