// The bootstrap's Wasm filters started through ebb-host the way Envoy starts them: per vm_id one
// shared-data and stats namespace, one process's shared queues, a main-thread VM, one per worker.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use ebb_host::{Clock, CompileCache, FailurePolicy, LogLevel, Plugin, Process, Proxy, ProxyOptions};

use crate::bootstrap::{self, Bootstrap};

/// Every Wasm filter of a bootstrap, in `Bootstrap::wasm_filters` order: the main thread's
/// proxies (`main`, no workers: Envoy's main-thread VM, ticking on the admin thread) and, per
/// worker thread, one proxy of one worker VM each.
pub struct Filters {
    pub main: Vec<Proxy>,
    pub workers: Vec<Vec<Proxy>>,
    /// `name root_id` of each filter, for log lines (`wasm log NAME ROOT_ID: message`).
    pub labels: Vec<String>,
    /// The same for each worker's proxies (singleton services have none there).
    pub worker_labels: Vec<String>,
}

fn policy(p: bootstrap::FailurePolicy) -> FailurePolicy {
    match p {
        bootstrap::FailurePolicy::FailClosed => FailurePolicy::FailClosed,
        bootstrap::FailurePolicy::FailOpen => FailurePolicy::FailOpen,
        bootstrap::FailurePolicy::FailReload => FailurePolicy::FailReload,
    }
}

/// Loads and starts every filter. `upstreams` are the clusters' first endpoints, which the
/// filters' `proxy_http_call`/`proxy_grpc_call` reach.
pub fn start(
    bootstrap: &Bootstrap,
    concurrency: usize,
    upstreams: &[(String, SocketAddr)],
    cache: Option<&CompileCache>,
) -> Result<Filters, String> {
    let mut plugins: HashMap<PathBuf, Plugin> = HashMap::new();
    // The first main-thread proxy of each vm_id: the others of that vm_id start beside it and so
    // share its shared data and stats, as filters with one vm_id do in Envoy.
    let mut anchors: HashMap<String, usize> = HashMap::new();
    // One process: every filter reaches every vm_id's shared queues, from any thread.
    let process = Process::new();
    let mut filters = Filters {
        main: Vec::new(),
        workers: (0..concurrency).map(|_| Vec::new()).collect(),
        labels: Vec::new(),
        worker_labels: Vec::new(),
    };
    // Listeners' filters first (their indexes are the ones streams use), then services.
    let listed = bootstrap.wasm_filters().map(|(l, w)| (format!("listener {} filter {}", l.name, w.name), w, true));
    let services = bootstrap.services.iter().map(|s| (format!("service {}", s.filter.name), &s.filter, !s.singleton));
    for (at, wasm, on_workers) in listed.chain(services) {
        let plugin = match plugins.get(&wasm.code) {
            Some(p) => p.clone(),
            None => {
                let p = Plugin::load_cached(&wasm.code, cache).map_err(|e| format!("{at}: {e}"))?;
                // A stale cache entry recompiled, an import the host does not implement.
                for w in p.warnings() {
                    eprintln!("[warning][main] {at}: {w}");
                }
                plugins.insert(wasm.code.clone(), p.clone());
                p
            }
        };
        // The main thread's proxy runs the main VM alone; each worker's runs its worker VM
        // alone: one main VM per filter configuration per process, as Envoy.
        let options = |workers: usize| ProxyOptions {
            name: wasm.name.clone(),
            vm_id: wasm.vm_id.clone(),
            root_id: wasm.root_id.clone(),
            plugin_config: wasm.configuration.clone(),
            vm_config: wasm.vm_configuration.clone(),
            workers,
            main_vm: workers == 0,
            failure_policy: policy(wasm.failure_policy),
            upstreams: upstreams.to_vec(),
            log_level: LogLevel::Info,
            max_log_records: 100_000,
            ..ProxyOptions::default()
        };
        let clock = Clock::real();
        let main = match anchors.get(&wasm.vm_id) {
            Some(&i) => filters.main[i].new_beside(&plugin, options(0), clock.clone()),
            None => Proxy::new_in(&process, &plugin, options(0), clock.clone()),
        }
        .map_err(|e| format!("{at}: {e}"))?;
        let index = filters.main.len();
        filters.main.push(main);
        let anchor = *anchors.entry(wasm.vm_id.clone()).or_insert(index);
        // A singleton service runs on the main thread only, with ticks and no streams.
        for worker in filters.workers.iter_mut().filter(|_| on_workers) {
            let proxy = filters.main[anchor]
                .new_beside(&plugin, options(1), clock.clone())
                .map_err(|e| format!("{at}: {e}"))?;
            worker.push(proxy);
        }
        let label = format!("{} {}", wasm.name, wasm.root_id);
        if on_workers {
            filters.worker_labels.push(label.clone());
        }
        filters.labels.push(label);
    }
    Ok(filters)
}

/// Prints a proxy's new log lines as Envoy's do (`wasm log NAME ROOT_ID: message`).
pub fn print_logs(proxy: &Proxy, label: &str, thread: &str) {
    for record in proxy.drain_logs() {
        eprintln!("[{}][{thread}] wasm log {label}: {}", record.level.as_str(), record.message);
    }
}
