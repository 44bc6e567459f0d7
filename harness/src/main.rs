//! `ebb`: the command line of ebb's harness. A thin `main`: parsing and work live in `cli`,
//! and every error ends as an exit code (0 ok, 1 the filter failed, 2 bad input or harness error).

use std::process::ExitCode;

mod cli;

fn main() -> ExitCode {
    quiet_on_closed_pipes();
    match cli::run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ebb: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Rust ignores SIGPIPE, so that a write to a closed pipe is an error; `println!` turns that
/// error into a panic ("failed printing to stdout: Broken pipe") in `ebb … | head`. Other Unix
/// tools die of the signal instead, silently, and the shell reports the pipeline as usual: the
/// default action is restored before anything is written, for every subcommand.
fn quiet_on_closed_pipes() {
    #[cfg(unix)]
    // SAFETY: signal(2) with SIG_DFL takes no pointers and installs no handler; it runs first
    // thing in main, before any other thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
