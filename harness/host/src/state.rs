// What one VM's wasmtime `Store` holds: the guest's memory and allocator, its contexts and
// streams, timers and deferred actions, and a handle on the proxy-wide shared state.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use wasmtime::{Memory, ResourceLimiter, TypedFunc};

use super::calls::Calls;
use super::error::Thread;
use super::logs::{LogLevel, LogRecord, LogSink};
use super::metrics::{Registry, Stat};
use super::profile::HostProfile;
use super::properties::PropertyMap;
use super::shared::{Mailbox, Queues, SharedData};
use super::stream::{HttpData, LocalReply, StreamData};
use crate::clock::Clock;

/// Proxy-Wasm ABI versions the host loads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum AbiVersion {
    V0_2_0,
    V0_2_1,
}

/// State every VM of one proxy shares (Envoy: per vm_id, process-wide).
pub(crate) struct ProxyShared {
    pub filter: Arc<str>,
    pub vm_id: String,
    pub root_id: String,
    pub clock: Clock,
    /// The proxy the host plays.
    pub profile: HostProfile,
    /// ngx_wasm_module's `shm_kv *`: shared data has a namespace (else, under ngx-wasm and
    /// strict, shared-data calls trap).
    pub shm_kv_namespace: bool,
    pub vm_config: Vec<u8>,
    pub plugin_config: Vec<u8>,
    /// Lines below this level are not kept; `proxy_get_log_level` returns it.
    pub log_level: LogLevel,
    pub clusters: Vec<String>,
    /// Clusters served by real servers, and the thread that calls them.
    pub upstreams: Option<super::upstream::Upstreams>,
    pub properties: PropertyMap,
    pub logs: Mutex<LogSink>,
    /// Shared per vm_id: a proxy started `beside` another shares its data (see `Proxy::new_beside`).
    pub shared_data: Arc<Mutex<SharedData>>,
    /// The process's shared queues, by (vm_id, name) across every proxy of the process.
    pub queues: Arc<Mutex<Queues>>,
    /// Where queue notifications for this proxy's VMs are posted, from any thread.
    pub mailbox: Arc<Mailbox>,
    /// Envoy's stats are process-wide by name: shared like `shared_data`.
    pub metrics: Arc<Mutex<Registry>>,
    pub calls: Mutex<Calls>,
    /// Set once any call was made, so that finishing a stream skips the calls lock until then.
    pub any_calls: AtomicBool,
    /// Clusters the filter called that no `clusters`/`upstreams` entry names (refused as Envoy
    /// refuses unknown clusters), first call first, each once.
    pub unknown_clusters: Mutex<Vec<String>>,
    /// `ProxyOptions::random_seed`: this proxy's part of each VM's `random_get` seed.
    pub random_seed: u64,
}

/// Locks a mutex, recovering from poisoning: the host never panics while holding these
/// locks, and a poisoned lock must not turn into a second panic.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl ProxyShared {
    pub(crate) fn calls_outstanding(&self) -> bool {
        self.any_calls.load(Ordering::Relaxed)
    }

    /// Whether `proxy_http_call` / `proxy_grpc_call` may target `cluster`.
    pub(crate) fn knows_cluster(&self, cluster: &str) -> bool {
        let known = self.clusters.iter().any(|c| c == cluster)
            || self.upstreams.as_ref().is_some_and(|u| u.address(cluster).is_some());
        if !known {
            let mut unknown = lock(&self.unknown_clusters);
            if unknown.len() < 64 && !unknown.iter().any(|c| c == cluster) {
                unknown.push(cluster.to_owned());
            }
        }
        known
    }

    pub(crate) fn log(&self, thread: Thread, level: LogLevel, message: String) {
        self.record(thread, level, message, false);
    }

    /// `filter`: the filter wrote the line (see `LogRecord::filter`).
    pub(crate) fn record(&self, thread: Thread, level: LogLevel, message: String, filter: bool) {
        if level < self.log_level {
            return;
        }
        let time_ns = self.clock.now_ns();
        lock(&self.logs).push(LogRecord { time_ns, level, thread, message, filter });
    }
}

/// Context ids, small sequential integers, hashed with FxHash (one multiply) as the shared-data
/// keys are: std's SipHash would be most of a look-up. Never iterated, so order is no concern.
pub(crate) type IdMap<V> = HashMap<u32, V, rustc_hash::FxBuildHasher>;

/// Work a hostcall asks for that Envoy runs only after the VM call returns.
#[derive(Debug)]
pub(crate) enum Deferred {
    /// `proxy_continue_stream(stream_type)` for `context`.
    Continue { context: u32, stream: i32 },
    /// `proxy_close_stream(stream_type)` for `context`.
    Close { context: u32, stream: i32 },
    /// `proxy_send_local_response` for `context`.
    LocalReply { context: u32, reply: LocalReply },
}

/// The response of a call being delivered (`on_http_call_response` / gRPC callbacks).
#[derive(Default)]
pub(crate) struct CallResponse {
    pub headers: super::headers::HeaderMap,
    pub body: Vec<u8>,
    pub trailers: super::headers::HeaderMap,
}

/// The memory limit of a VM; remembers that it was hit so that the resulting trap is
/// reported as a memory-limit failure.
pub(crate) struct MemoryLimit {
    pub max_bytes: usize,
    pub hit: bool,
}

impl ResourceLimiter for MemoryLimit {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.max_bytes {
            self.hit = true;
            return Err(wasmtime::Error::msg(format!(
                "memory growth to {desired} bytes refused: the limit is {} bytes",
                self.max_bytes
            )));
        }
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        // Tables hold function references; a million is far beyond any filter.
        Ok(desired <= 1_000_000)
    }
}

/// The data of one VM's store.
pub(crate) struct HostState {
    pub shared: Arc<ProxyShared>,
    /// `shared.profile`, kept here so that hostcalls branch on it without a pointer chase.
    pub profile: HostProfile,
    pub thread: Thread,
    pub instance: usize,
    pub memory: Option<Memory>,
    /// `proxy_on_memory_allocate`, else `malloc`. Behind an `Arc` because a hostcall clones it
    /// to call it with the store borrowed: cloning a `TypedFunc` clones its registered type
    /// (several atomic reference counts), which cost 5 % of a replay.
    pub alloc: Option<Arc<TypedFunc<i32, i32>>>,
    pub limits: MemoryLimit,
    /// True during `_initialize`/`main`: Envoy allows only logging and WASI there.
    pub restricted: bool,
    /// The callback running now, for error messages and for what is readable in it.
    pub callback: &'static str,
    pub root_context: u32,
    pub next_context: u32,
    /// The context the running callback was called for.
    pub active_context: u32,
    /// The context hostcalls act on (`proxy_set_effective_context` changes it).
    pub effective_context: u32,
    pub streams: IdMap<StreamData>,
    /// Finished HTTP streams kept for reuse, so that an exchange does not allocate.
    #[allow(clippy::vec_box)] // boxes move between the pool and the stream table as is
    pub pool: Vec<Box<HttpData>>,
    /// Tick period in nanoseconds (0 = off) and when the next tick is due.
    pub tick_period_ns: u64,
    pub next_tick_ns: Option<u64>,
    /// Metric ids this VM handed out, per metric type: id = 4 * k + type, value = the stat.
    pub metric_ids: [Vec<Arc<Stat>>; 3],
    /// `proxy_get_status`: code and message of the last call response.
    pub status: (u32, Vec<u8>),
    pub call_response: Option<CallResponse>,
    /// Tokens of this VM's calls, gRPC calls and gRPC streams (cpp-host: 4k, 4k + 1, 4k + 2;
    /// the low bits tell `proxy_grpc_send`/`_close`/`_cancel` which kind a token names).
    pub next_http_token: u32,
    pub next_grpc_token: u32,
    pub next_grpc_stream_token: u32,
    pub deferred: Vec<Deferred>,
    /// Bytes about to be handed to the guest (see `memory::hand_over`).
    pub scratch: Vec<u8>,
    /// Properties set on the root context.
    pub root_properties: PropertyMap,
    /// WASI `random_get` state: deterministic per VM (seeded from the VM's index and the
    /// proxy's `random_seed`).
    pub rng: u64,
    /// Unknown imports already warned about (warn once each).
    pub warned: Vec<String>,
    /// Properties the root context declared (`declare_property`).
    pub declared: Vec<super::foreign::Declared>,
}

impl HostState {
    pub(crate) fn new(shared: Arc<ProxyShared>, instance: usize, memory_bytes: usize) -> HostState {
        // xorshift never leaves 0, so a seed that mixes to 0 takes the base seed.
        let rng = match 0x853c_49e6_748f_ea9b
            ^ (instance as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
            ^ shared.random_seed.wrapping_mul(0xD1B5_4A32_D192_ED03)
        {
            0 => 0x853c_49e6_748f_ea9b,
            seed => seed,
        };
        HostState {
            profile: shared.profile,
            shared,
            thread: Thread::from_index(instance),
            instance,
            memory: None,
            alloc: None,
            limits: MemoryLimit { max_bytes: memory_bytes, hit: false },
            restricted: false,
            callback: "instantiate",
            root_context: 0,
            next_context: 1,
            active_context: 0,
            effective_context: 0,
            streams: IdMap::default(),
            pool: Vec::new(),
            tick_period_ns: 0,
            next_tick_ns: None,
            metric_ids: [Vec::new(), Vec::new(), Vec::new()],
            status: (0, Vec::new()),
            call_response: None,
            // cpp-host pre-increments its counters (from 0, 1 and 2), so a VM's first HTTP call
            // is 4, its first gRPC call 5 and its first gRPC stream 6.
            next_http_token: 4,
            next_grpc_token: 5,
            next_grpc_stream_token: 6,
            deferred: Vec::new(),
            scratch: Vec::new(),
            root_properties: PropertyMap::default(),
            rng,
            warned: Vec::new(),
            declared: Vec::new(),
        }
    }

    pub(crate) fn log(&self, level: LogLevel, message: String) {
        self.shared.log(self.thread, level, message);
    }

    /// A line the filter wrote (`proxy_log`, WASI output).
    pub(crate) fn filter_log(&self, level: LogLevel, message: String) {
        self.shared.record(self.thread, level, message, true);
    }

    pub(crate) fn alloc_context_id(&mut self) -> u32 {
        let id = self.next_context;
        self.next_context += 1;
        id
    }

    /// Next pseudo-random u64 (xorshift64*): deterministic, never the wall clock.
    pub(crate) fn next_random(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}
