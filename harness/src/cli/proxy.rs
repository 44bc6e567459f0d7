// `ebb proxy`: serve an Envoy bootstrap on real sockets with its Wasm filters run through ebb's
// host, until SIGINT/SIGTERM; ports and cluster endpoints may be overridden for tests.

use std::io::Write as _;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use ebb_proxy::{Bootstrap, Options, Server};

use super::args;

pub const EXAMPLES: &str = "\
Examples:
  # The staging bootstrap, on free loopback ports, in front of local servers:
  ebb proxy deploy/envoy/envoy.yaml --concurrency 2 --wasm-file /etc/envoy/ebb.wasm=dist/ebb.wasm \\
      --listener ingress_http=127.0.0.1:8080 --listener ingress_ssh=127.0.0.1:2222 \\
      --listener ebb_control=127.0.0.1:9902 --admin 127.0.0.1:9901 \\
      --cluster web=127.0.0.1:9000 --cluster api=127.0.0.1:9001 --cluster ssh=127.0.0.1:22

  # Then, as against Envoy:
  curl -s 127.0.0.1:9901/stats/prometheus | grep ebb_pool_available_hosts
  EBB_KEY=... scripts/ebb-ctl --url http://127.0.0.1:9902 state

Every field of the bootstrap has Envoy's meaning; a field ebb proxy does not serve is refused
with its YAML path (exit 2). Wasm code paths are read relative to the working directory, as
Envoy reads them. On start it prints `listening NAME ADDRESS` per listener (port 0 picks a free
port), then `ready`. SIGINT or SIGTERM (or POST /quitquitquit on the admin) stops accepting,
lets requests in flight finish within --drain-time, and exits 0.";

#[derive(clap::Args)]
pub struct Args {
    /// The Envoy v3 bootstrap (YAML or JSON).
    #[arg(value_name = "ENVOY.yaml")]
    bootstrap: PathBuf,
    /// Worker threads, each with its own VM of every Wasm filter (Envoy's --concurrency).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=256))]
    concurrency: u16,
    /// Listen on ADDRESS instead of the bootstrap's address for listener NAME (repeatable).
    #[arg(long = "listener", value_name = "NAME=HOST:PORT", value_parser = named_address)]
    listeners: Vec<(String, SocketAddr)>,
    /// The admin endpoint's address instead of the bootstrap's.
    #[arg(long, value_name = "HOST:PORT", value_parser = address)]
    admin: Option<SocketAddr>,
    /// Send cluster NAME's traffic to these endpoints instead of the bootstrap's (repeatable).
    #[arg(long = "cluster", value_name = "NAME=HOST:PORT[,HOST:PORT...]", value_parser = cluster)]
    clusters: Vec<(String, Vec<SocketAddr>)>,
    /// Read the Wasm code the bootstrap names FILE from LOCAL instead (repeatable):
    /// `--wasm-file /etc/envoy/ebb.wasm=dist/ebb.wasm`.
    #[arg(long = "wasm-file", value_name = "FILE=LOCAL", value_parser = code_path)]
    code: Vec<(PathBuf, PathBuf)>,
    /// How long requests in flight may take to finish after SIGTERM/SIGINT.
    #[arg(long, default_value = "5s", value_parser = args::duration)]
    drain_time: Duration,
}

fn address(value: &str) -> Result<SocketAddr, String> {
    value
        .to_socket_addrs()
        .map_err(|e| format!("{value:?} is not a HOST:PORT that resolves: {e}"))?
        .next()
        .ok_or_else(|| format!("{value:?} resolves to no address"))
}

fn code_path(value: &str) -> Result<(PathBuf, PathBuf), String> {
    let (from, to) = value.split_once('=').ok_or_else(|| format!("expected FILE=LOCAL, got {value:?}"))?;
    Ok((PathBuf::from(from), PathBuf::from(to)))
}

fn named_address(value: &str) -> Result<(String, SocketAddr), String> {
    let (name, addr) = value.split_once('=').ok_or_else(|| format!("expected NAME=HOST:PORT, got {value:?}"))?;
    Ok((name.to_string(), address(addr)?))
}

fn cluster(value: &str) -> Result<(String, Vec<SocketAddr>), String> {
    let (name, list) =
        value.split_once('=').ok_or_else(|| format!("expected NAME=HOST:PORT[,HOST:PORT...], got {value:?}"))?;
    let endpoints = list.split(',').map(address).collect::<Result<Vec<_>, _>>()?;
    Ok((name.to_string(), endpoints))
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let bootstrap = match Bootstrap::load(&args.bootstrap) {
        Ok(b) => b,
        Err(e) => {
            let file = args.bootstrap.display();
            let message = e.to_string();
            // Read/size/YAML errors already name the file.
            if message.starts_with(&*file.to_string()) || message.starts_with("cannot read") {
                eprintln!("ebb proxy: {message}");
            } else {
                eprintln!("ebb proxy: {file}: {message}");
            }
            return Ok(ExitCode::from(2));
        }
    };
    let options = Options {
        concurrency: usize::from(args.concurrency),
        listeners: args.listeners,
        admin: args.admin,
        clusters: args.clusters,
        drain_time: args.drain_time,
        code: args.code,
        // As `ebb replay`: $EBB_COMPILE_CACHE, else the user's cache folder (`off` to compile each time).
        compile_cache: ebb_host::CompileCache::from_env(),
    };
    let server = match Server::start(bootstrap, options) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("ebb proxy: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    let mut out = std::io::stdout().lock();
    for (name, address) in &server.listeners {
        writeln!(out, "listening {name} {address}")?;
    }
    if let Some(admin) = server.admin {
        writeln!(out, "listening admin {admin}")?;
    }
    writeln!(out, "ready")?;
    out.flush()?;
    drop(out);
    server.serve_until_signal()?;
    eprintln!("ebb proxy: stopped");
    Ok(ExitCode::SUCCESS)
}
