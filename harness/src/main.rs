//! `ebb`: the command line of ebb's harness. A thin `main`: parsing and work live in `cli`,
//! and every error ends as an exit code (0 ok, 1 the filter failed, 2 bad input or harness error).

use std::process::ExitCode;

mod cli;

fn main() -> ExitCode {
    match cli::run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ebb: {e:#}");
            ExitCode::from(2)
        }
    }
}
