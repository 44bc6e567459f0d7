// `ebb schema`: print the JSON Schema (draft 2020-12) of the scenario format, so that editors
// validate and complete scenario files; `docs/scenario.schema.json` is its output, kept in step by
// a test (in docs/, not scenarios/, so that `ebb check scenarios/*.json` checks only scenarios).

use std::process::ExitCode;

use ebb_harness::scenario;

pub const EXAMPLES: &str = "Examples:
  # Refresh the schema the shipped scenarios point at:
  ebb schema > docs/scenario.schema.json

  # Point a scenario at it, relative to the scenario (ebb ignores the key, editors read it):
  {\"$schema\": \"../docs/scenario.schema.json\", \"version\": 1, ...}";

#[derive(clap::Args)]
pub struct Args {}

pub fn run(_: Args) -> anyhow::Result<ExitCode> {
    let mut text = serde_json::to_string_pretty(&scenario::json_schema())?;
    text.push('\n');
    print!("{text}");
    Ok(ExitCode::SUCCESS)
}
