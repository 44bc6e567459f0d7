// `ebb schema`: print the JSON Schema (draft 2020-12) of the scenario format, so that editors
// validate and complete scenario files; `scenarios/schema.json` is its output, kept in step by a test.

use std::process::ExitCode;

use ebb_harness::scenario;

pub const EXAMPLES: &str = "Examples:
  # Refresh the schema the shipped scenarios point at:
  ebb schema > scenarios/schema.json

  # Point a scenario at it (first key of the file; ebb ignores it, editors read it):
  {\"$schema\": \"./schema.json\", \"version\": 1, ...}";

#[derive(clap::Args)]
pub struct Args {}

pub fn run(_: Args) -> anyhow::Result<ExitCode> {
    let mut text = serde_json::to_string_pretty(&scenario::json_schema())?;
    text.push('\n');
    print!("{text}");
    Ok(ExitCode::SUCCESS)
}
