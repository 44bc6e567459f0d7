// The `ebb` command line: one module per subcommand under `cli/`, each turning its
// arguments into calls on the harness library and its result into an exit code.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod args;
mod check;
mod fmt;
mod gameday;
mod output;
mod proxy;
mod replay;
mod request;
mod schema;
mod webhook;

/// Chaos-testing harness for proxies: runs proxy-wasm filters the way Envoy does.
#[derive(Parser)]
#[command(name = "ebb", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Send one HTTP exchange (or TCP connection) through a filter and show what happened.
    #[command(after_long_help = request::EXAMPLES)]
    Request(Box<request::Args>),
    /// Replay an incident scenario through the filter and judge it against its SLOs.
    #[command(after_long_help = replay::EXAMPLES)]
    Replay(replay::Args),
    /// Serve an Envoy bootstrap on real sockets, its Wasm filters run through ebb's host.
    #[command(after_long_help = proxy::EXAMPLES)]
    Proxy(proxy::Args),
    /// Play a scenario against live proxies (a game day) and judge it against its SLOs.
    #[command(after_long_help = gameday::EXAMPLES)]
    Gameday(Box<gameday::Args>),
    /// Serve Alertmanager's webhook: run a recovery command for each notification.
    #[command(after_long_help = webhook::EXAMPLES)]
    Webhook(webhook::Args),
    /// Check scenario files without running them.
    Check(check::Args),
    /// Write scenario files in ebb's layout (`--check`: list those that are not, for CI).
    #[command(after_long_help = fmt::EXAMPLES)]
    Fmt(fmt::Args),
    /// Print the JSON Schema of the scenario format (for editors; see docs/scenario.schema.json).
    #[command(after_long_help = schema::EXAMPLES)]
    Schema(schema::Args),
}

/// Exit codes shared by every subcommand.
pub(crate) mod exit {
    /// Everything ran and the filter did not fail.
    pub const OK: u8 = 0;
    /// The filter failed (trap, deadline, memory limit, rejected configuration).
    pub const FAILED: u8 = 1;
}

pub fn run() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    match cli.command {
        Command::Request(args) => request::run(*args),
        Command::Replay(args) => replay::run(args),
        Command::Proxy(args) => proxy::run(args),
        Command::Gameday(args) => gameday::run(*args),
        Command::Webhook(args) => webhook::run(args),
        Command::Check(args) => check::run(args),
        Command::Fmt(args) => fmt::run(args),
        Command::Schema(args) => schema::run(args),
    }
}
