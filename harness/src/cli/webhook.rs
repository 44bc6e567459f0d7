// `ebb webhook`: serve Alertmanager's webhook and run a recovery command per notification, until
// Ctrl-C or SIGTERM (then running commands finish, within their timeout, before it exits).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use ebb_harness::signals;
use ebb_harness::webhook::{Options, Receiver};

pub const EXAMPLES: &str = "Examples:
  # Restore the pool of every EbbPoolBelowExpectedCapacity notification (deploy/alertmanager/ebb-gameday.yml):
  ebb webhook --listen 127.0.0.1:9095 --token-file /etc/ebb/webhook.token -- \\
    env EBB_CONTROL_URL=http://127.0.0.1:9902 EBB_KEY_FILE=/etc/ebb/control.key scripts/recover-pool.sh --verbose

Each notification (Alertmanager's webhook JSON, version 4) is checked (400 with the reason
otherwise) and its command runs once: the JSON on stdin; in the environment EBB_ALERT, EBB_POOL
(the ebb_pool or pool label), EBB_STATUS, EBB_RECEIVER, EBB_GROUP_KEY and every common label as
EBB_LABEL_<NAME>. One run at a time per alert group: a notification for a group whose command is
running waits for it (the newest replaces an older one waiting). A run past --timeout is killed
with its process group. Each run is logged on stderr with its output and exit status.

With --token-file, a request needs `Authorization: Bearer <token>` (Alertmanager:
http_config.authorization.credentials_file); without it, only loopback addresses are served.

Exit status: 0 stopped by Ctrl-C or SIGTERM; 2 bad arguments, or the address cannot be served.";

#[derive(clap::Args)]
pub struct Args {
    /// Address to serve (a loopback one unless --token-file and --allow-remote; port 0 picks one).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9095")]
    listen: SocketAddr,
    /// File holding the bearer token every request must carry.
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// Serve an address other than loopback (needs --token-file).
    #[arg(long, requires = "token_file")]
    allow_remote: bool,
    /// Longest one run may take before it is killed with its process group.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = duration)]
    timeout: std::time::Duration,
    /// The command to run for each notification, and its arguments (after `--`).
    #[arg(last = true, required = true, value_name = "COMMAND")]
    command: Vec<String>,
}

fn duration(text: &str) -> Result<std::time::Duration, String> {
    let d = ebb_engine::Duration::parse(text)?;
    if d.as_millis() == 0 {
        return Err("must be longer than 0s".into());
    }
    Ok(std::time::Duration::from_millis(d.as_millis()))
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    match serve(args) {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) => {
            eprintln!("ebb webhook: {e:#}");
            Ok(ExitCode::from(2))
        }
    }
}

fn serve(args: Args) -> anyhow::Result<()> {
    let token = match &args.token_file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("cannot read token file {}", path.display()))?
                .trim()
                .to_string(),
        ),
        None => None,
    };
    let shown = args.command.join(" ");
    signals::install();
    let receiver = Receiver::start(Options {
        listen: args.listen,
        token,
        argv: args.command,
        timeout: args.timeout,
        allow_remote: args.allow_remote,
    })?;
    let auth = if args.token_file.is_some() { "bearer token required" } else { "no token" };
    eprintln!(
        "ebb webhook: listening on http://{} ({auth}); each notification runs: {shown} (timeout {:?})",
        receiver.addr(),
        args.timeout
    );
    let why = loop {
        if let Some(why) = signals::received() {
            break why;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    eprintln!("ebb webhook: {why}: no more notifications taken");
    receiver.stop();
    eprintln!("ebb webhook: stopped");
    Ok(())
}
