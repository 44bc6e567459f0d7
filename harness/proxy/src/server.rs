// Starting and stopping ebb proxy: sockets bound up front (a port in use is one clear error),
// filters started, worker threads and the admin thread running, and a drain on shutdown.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use ebb_host::{CompileCache, ConnectionManager};
use tokio::sync::watch;

use crate::bootstrap::{Bootstrap, HttpFilter, ListenerKind};
use crate::cluster::Upstream;
use crate::stats::{tagger, ListenerStats, RequestStats, Tagger};
use crate::{admin, filters, worker};

/// How to run a bootstrap, beyond what it says.
#[derive(Clone, Debug)]
pub struct Options {
    /// Worker threads (Envoy's `--concurrency`). Default 2.
    pub concurrency: usize,
    /// Listener addresses by listener name, replacing the bootstrap's (port 0: any free port).
    pub listeners: Vec<(String, SocketAddr)>,
    /// The admin address, replacing the bootstrap's.
    pub admin: Option<SocketAddr>,
    /// Endpoints by cluster name, replacing the bootstrap's.
    pub clusters: Vec<(String, Vec<SocketAddr>)>,
    /// How long in-flight requests may take to finish after a shutdown starts. Default 5 s.
    pub drain_time: Duration,
    /// Wasm code files read from another path than the bootstrap names (`/etc/envoy/ebb.wasm`
    /// → `dist/ebb.wasm`), so a staging bootstrap runs unchanged on a laptop.
    pub code: Vec<(PathBuf, PathBuf)>,
    /// Where compiled filters are kept between runs (none: compiled at every start).
    pub compile_cache: Option<CompileCache>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            concurrency: 2,
            listeners: Vec::new(),
            admin: None,
            clusters: Vec::new(),
            drain_time: Duration::from_secs(5),
            code: Vec::new(),
            compile_cache: None,
        }
    }
}

/// Why ebb proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Bootstrap(#[from] crate::bootstrap::BootstrapError),
    #[error("listener {name}: cannot listen on {address}: {source}")]
    Bind { name: String, address: SocketAddr, source: std::io::Error },
    #[error("--listener {0}: the bootstrap has no listener of that name")]
    UnknownListener(String),
    #[error("--cluster {0}: the bootstrap has no cluster of that name")]
    UnknownCluster(String),
    #[error("--wasm-file {}: no Wasm filter of the bootstrap reads that file", .0.display())]
    UnknownCode(PathBuf),
    #[error("{0}")]
    Cluster(String),
    #[error("{0}")]
    Filter(String),
    #[error("cannot start a thread: {0}")]
    Thread(std::io::Error),
}

/// What every thread of the proxy shares.
pub struct Shared {
    pub bootstrap: Bootstrap,
    pub upstreams: Vec<Arc<Upstream>>,
    pub tagger: Tagger,
    /// Per listener (index): requests through its connection manager.
    pub http_stats: Vec<RequestStats>,
    pub listener_stats: Vec<ListenerStats>,
    /// Per listener: index of its first HTTP / network Wasm filter among all filters.
    pub http_filter_base: Vec<usize>,
    pub network_filter_base: Vec<usize>,
    /// `name root_id` per filter, for log lines: main-thread proxies, and each worker's.
    pub labels: Vec<String>,
    pub worker_labels: Vec<String>,
    /// Per filter: whether a failed callback lets the stream continue (FAIL_OPEN).
    pub fail_open: Vec<bool>,
    pub shutdown: watch::Sender<bool>,
    /// Connections open on all workers.
    pub connections: AtomicU64,
    pub drain_time: Duration,
    request_ids: AtomicU64,
    /// Envoy's connection manager and router defaults, its request ids seeded at start.
    pub connection_manager: ConnectionManager,
}

impl Shared {
    /// Starts the shutdown: listeners stop accepting, connections drain.
    pub fn stop(&self) {
        let _ = self.shutdown.send(true);
    }

    /// The number of the next request this proxy receives (its `x-request-id` comes from it).
    pub fn next_request(&self) -> u64 {
        self.request_ids.fetch_add(1, Ordering::Relaxed)
    }
}

/// A running ebb proxy.
pub struct Server {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
    /// Bound addresses by listener name, and the admin's.
    pub listeners: Vec<(String, SocketAddr)>,
    pub admin: Option<SocketAddr>,
}

impl Server {
    /// Binds every socket, starts every filter on every thread, and serves.
    pub fn start(mut bootstrap: Bootstrap, options: Options) -> Result<Server, StartError> {
        for (name, address) in &options.listeners {
            let l = bootstrap
                .listeners
                .iter_mut()
                .find(|l| &l.name == name)
                .ok_or_else(|| StartError::UnknownListener(name.clone()))?;
            l.address = *address;
        }
        for (from, to) in &options.code {
            let mut used = false;
            for l in &mut bootstrap.listeners {
                for w in l.wasm_filters_mut() {
                    if &w.code == from {
                        w.code = to.clone();
                        used = true;
                    }
                }
            }
            if !used {
                return Err(StartError::UnknownCode(from.clone()));
            }
        }
        if let Some(a) = options.admin {
            bootstrap.admin = Some(a);
        }
        for (name, _) in &options.clusters {
            if !bootstrap.clusters.iter().any(|c| &c.name == name) {
                return Err(StartError::UnknownCluster(name.clone()));
            }
        }
        let upstreams: Vec<Arc<Upstream>> = bootstrap
            .clusters
            .iter()
            .map(|c| {
                let overrides = options.clusters.iter().find(|(n, _)| *n == c.name).map(|(_, a)| a.as_slice());
                Upstream::resolve(c, overrides).map(Arc::new)
            })
            .collect::<Result<_, _>>()
            .map_err(StartError::Cluster)?;
        // Bind first: a port in use fails before any filter starts.
        let mut sockets = Vec::new();
        let mut bound = Vec::new();
        for l in &bootstrap.listeners {
            let socket = TcpListener::bind(l.address).map_err(|source| StartError::Bind {
                name: l.name.clone(),
                address: l.address,
                source,
            })?;
            let address = socket.local_addr().map_err(StartError::Thread)?;
            bound.push((l.name.clone(), address));
            sockets.push(socket);
        }
        let admin_socket = match bootstrap.admin {
            Some(address) => Some(TcpListener::bind(address).map_err(|source| StartError::Bind {
                name: "admin".into(),
                address,
                source,
            })?),
            None => None,
        };
        let admin_address = admin_socket.as_ref().and_then(|s| s.local_addr().ok());
        // Filters reach clusters at their first endpoint (proxy_http_call, proxy_grpc_call).
        let call_targets: Vec<(String, SocketAddr)> =
            upstreams.iter().filter_map(|u| u.endpoints().first().map(|a| (u.name.clone(), *a))).collect();
        let concurrency = options.concurrency.max(1);
        let started = filters::start(&bootstrap, concurrency, &call_targets, options.compile_cache.as_ref())
            .map_err(StartError::Filter)?;
        let (mut http_filter_base, mut network_filter_base) = (Vec::new(), Vec::new());
        let mut next = 0;
        for l in &bootstrap.listeners {
            let (network, http) = match &l.kind {
                ListenerKind::Http { network_filters, manager } => (
                    network_filters.len(),
                    manager.http_filters.iter().filter(|f| matches!(f, HttpFilter::Wasm(_))).count(),
                ),
                ListenerKind::Tcp { network_filters, .. } => (network_filters.len(), 0),
            };
            network_filter_base.push(next);
            http_filter_base.push(next + network);
            next += network + http;
        }
        let tagger = tagger(&bootstrap.stats_tags).map_err(StartError::Filter)?;
        let bootstrap_fail_open: Vec<bool> = bootstrap
            .wasm_filters()
            .map(|(_, w)| w.failure_policy == crate::bootstrap::FailurePolicy::FailOpen)
            .collect();
        let (shutdown, _) = watch::channel(false);
        let listeners = bootstrap.listeners.len();
        let shared = Arc::new(Shared {
            bootstrap,
            upstreams,
            tagger,
            http_stats: (0..listeners).map(|_| RequestStats::default()).collect(),
            listener_stats: (0..listeners).map(|_| ListenerStats::default()).collect(),
            http_filter_base,
            network_filter_base,
            labels: started.labels.clone(),
            worker_labels: started.worker_labels.clone(),
            fail_open: bootstrap_fail_open,
            shutdown,
            connections: AtomicU64::new(0),
            drain_time: options.drain_time,
            request_ids: AtomicU64::new(1),
            // Random per start, as Envoy's ids are: two runs never share an x-request-id.
            connection_manager: ConnectionManager { seed: random_seed(), ..ConnectionManager::default() },
        });
        let mut threads = Vec::new();
        for (index, filters) in started.workers.into_iter().enumerate() {
            let shared = shared.clone();
            let sockets: Vec<TcpListener> =
                sockets.iter().map(|s| s.try_clone()).collect::<Result<_, _>>().map_err(StartError::Thread)?;
            let handle = std::thread::Builder::new()
                .name(format!("ebb-worker-{index}"))
                .spawn(move || worker::run(index, filters, shared, sockets))
                .map_err(StartError::Thread)?;
            threads.push(handle);
        }
        let main_filters = started.main;
        let admin_shared = shared.clone();
        let handle = std::thread::Builder::new()
            .name("ebb-main".into())
            .spawn(move || admin::run(admin_shared, main_filters, admin_socket))
            .map_err(StartError::Thread)?;
        threads.push(handle);
        // STRICT_DNS names resolved again every dns_refresh_rate, off the request path.
        if shared.upstreams.iter().any(|u| u.names.is_some()) {
            let dns_shared = shared.clone();
            let handle = std::thread::Builder::new()
                .name("ebb-dns".into())
                .spawn(move || {
                    crate::cluster::refresh_until(&dns_shared.upstreams, || *dns_shared.shutdown.borrow());
                })
                .map_err(StartError::Thread)?;
            threads.push(handle);
        }
        Ok(Server { shared, threads, listeners: bound, admin: admin_address })
    }

    /// The address a listener is bound to.
    pub fn address(&self, listener: &str) -> Option<SocketAddr> {
        self.listeners.iter().find(|(n, _)| n == listener).map(|(_, a)| *a)
    }

    /// Starts the shutdown (as SIGTERM does).
    pub fn stop(&self) {
        self.shared.stop();
    }

    /// Serves until SIGINT or SIGTERM (or `/quitquitquit`), then stops accepting, lets the
    /// requests in flight finish within the drain time, and returns.
    pub fn serve_until_signal(self) -> std::io::Result<()> {
        use tokio::signal::unix::{signal, SignalKind};
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let mut stopped = self.shared.shutdown.subscribe();
        runtime.block_on(async {
            let mut term = signal(SignalKind::terminate())?;
            let mut int = signal(SignalKind::interrupt())?;
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
                _ = stopped.changed() => {}
            }
            Ok::<_, std::io::Error>(())
        })?;
        self.stop();
        self.wait();
        Ok(())
    }

    /// Waits for every thread to end (after a shutdown and the drain).
    pub fn wait(self) {
        for t in self.threads {
            let _ = t.join();
        }
    }
}

/// A seed from the OS's randomness; a fixed one if the OS has none to give (ids stay unique
/// within the process either way).
fn random_seed() -> u64 {
    let mut bytes = [0u8; 8];
    match getrandom::fill(&mut bytes) {
        Ok(()) => u64::from_le_bytes(bytes),
        Err(_) => 0x5eed,
    }
}
