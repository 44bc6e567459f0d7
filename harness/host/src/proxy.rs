// A proxy: one filter configuration (name, vm_id, root_id, configs) running in a main-thread
// VM plus W worker VMs, as Envoy runs it; owns their timers, calls, metrics, logs and shared data.

use std::net::SocketAddr;
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use super::calls::{CallAnswer, CallId, CallKind, Calls, GrpcStreamEvent, PendingCall};
use super::conn_manager::ConnectionManager;
use super::error::{HostError, Thread};
use super::logs::{LogLevel, LogRecord, LogSink};
use super::metrics::{render_prometheus, Metric, Registry};
use super::module::Plugin;
use super::process::Process;
use super::profile::HostProfile;
use super::properties::PropertyMap;
use super::shared::{Mailbox, SharedData};
use super::state::{lock, ProxyShared};
use super::stream::{Http, StreamData, StreamId, Tcp};
use super::upstream::Upstreams;
use super::worker::Vm;
use crate::clock::Clock;

/// What happens to streams on a VM that failed (Envoy `failure_policy`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FailurePolicy {
    /// Envoy's default: later streams get a local 503 with details `wasm_fail_stream`
    /// (TCP: the connection is closed).
    #[default]
    FailClosed,
    /// The filter is bypassed: later streams go through untouched.
    FailOpen,
    /// Envoy's FAIL_RELOAD: a new stream on a VM that failed at run time gets a fresh VM
    /// (instantiated and configured again), at most once per backoff interval
    /// (`ProxyOptions::reload_backoff`, doubled after each failed reload up to 10×); until
    /// then streams are failed closed.
    FailReload,
}

/// Resource limits of each VM.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Largest linear memory a VM may grow to, in bytes. Default 128 MiB.
    pub memory_bytes: usize,
    /// Longest a single callback may run before it is interrupted (counted on the wall
    /// clock by the epoch watchdog, 10 ms granularity). Default 1 s.
    pub callback_deadline: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits { memory_bytes: 128 << 20, callback_deadline: Duration::from_secs(1) }
    }
}

/// How to run a filter: Envoy's `PluginConfig` and `VmConfig`, plus the harness's own knobs.
#[derive(Clone, Debug)]
pub struct ProxyOptions {
    /// Plugin name (`PluginConfig.name`, property `plugin_name`). Default: the filter's name.
    pub name: String,
    /// `vm_id`: names the shared-data and queue namespace. Default empty.
    pub vm_id: String,
    /// `root_id` (property `plugin_root_id`). Default empty.
    pub root_id: String,
    /// Bytes handed to `proxy_on_configure` (PLUGIN_CONFIGURATION). Default empty.
    pub plugin_config: Vec<u8>,
    /// Bytes handed to `proxy_on_vm_start` (VM_CONFIGURATION). Default empty.
    pub vm_config: Vec<u8>,
    /// Worker VMs (each its own instance, as Envoy's worker threads). Default 1.
    pub workers: usize,
    /// Start the main-thread VM. Default true. False: only the worker VMs run, for a process
    /// that keeps its one main-thread VM per filter configuration in another `Proxy` (Envoy
    /// runs one per process, not one per worker); `Thread::Main` then names no VM here.
    pub main_vm: bool,
    /// Default fail-closed, as Envoy.
    pub failure_policy: FailurePolicy,
    pub limits: Limits,
    /// Base interval between VM reloads under `FailReload` (Envoy `ReloadConfig.backoff`,
    /// default 1 s).
    pub reload_backoff: Duration,
    /// Properties by dotted path (`source.address` → value bytes); they override the
    /// defaults (`plugin_name`, `plugin_root_id`, `plugin_vm_id`, `cluster_name`,
    /// `route_name`, `source.address`, `destination.address`).
    pub properties: Vec<(String, Vec<u8>)>,
    /// Clusters `proxy_http_call` / `proxy_grpc_call` / `proxy_grpc_stream` may target, answered
    /// by the caller (`Proxy::answer_call`, `grpc_stream_event`); others get BAD_ARGUMENT (gRPC:
    /// PARSE_FAILURE), as in Envoy for unknown clusters. Default none.
    pub clusters: Vec<String>,
    /// Clusters served by real servers: the host sends calls to them (HTTP/1.1; gRPC over
    /// HTTP/2 without TLS) and delivers the answers from `Proxy::poll_upstreams`,
    /// `await_upstreams` and `advance_to`. Default none.
    pub upstreams: Vec<(String, SocketAddr)>,
    /// Log lines below this level are dropped, and `proxy_get_log_level` returns it.
    /// Default `Info` (Envoy's default).
    pub log_level: LogLevel,
    /// Most log lines kept (oldest dropped first). Default 10 000.
    pub max_log_records: usize,
    /// The proxy the host plays: Envoy (default), Kong's ngx_wasm_module, or the strict
    /// intersection of both (docs/abi.md, "Host profiles").
    pub host_profile: HostProfile,
    /// ngx_wasm_module's `shm_kv *` in the `wasm{}` block: shared data has a default namespace.
    /// Without it, under `NgxWasm` and `Strict`, every shared-data call traps. Default true;
    /// ignored under `Envoy`.
    pub shm_kv_namespace: bool,
    /// Play Envoy's HTTP connection manager and router around the filter: request headers are
    /// prepared (or rejected) before the filter sees them and `Http::upstream_request` is what
    /// the router sends (see `ConnectionManager`). Default none: the filter gets the headers as
    /// given and the upstream what the filter let through.
    pub connection_manager: Option<ConnectionManager>,
    /// Mixed into the seed of every VM's WASI `random_get` stream (each VM's also depends on its
    /// index), so that the proxies of one simulation draw different randomness, as separate
    /// Envoys do. Default 0.
    pub random_seed: u64,
    /// Names Envoy's `stats_config.stats_matcher` rejects, by prefix of the name the filter
    /// defines: such a metric is defined (the filter gets an id) but is a null stat, as in Envoy:
    /// updates are ignored, it reads back as 0 and no snapshot shows it. Default none. A proxy
    /// started `new_beside` another keeps the other's (they share one set of stats).
    pub stats_rejected_prefixes: Vec<String>,
}

impl Default for ProxyOptions {
    fn default() -> ProxyOptions {
        ProxyOptions {
            name: String::new(),
            vm_id: String::new(),
            root_id: String::new(),
            plugin_config: Vec::new(),
            vm_config: Vec::new(),
            workers: 1,
            main_vm: true,
            failure_policy: FailurePolicy::default(),
            limits: Limits::default(),
            reload_backoff: Duration::from_secs(1),
            properties: Vec::new(),
            clusters: Vec::new(),
            upstreams: Vec::new(),
            log_level: LogLevel::Info,
            max_log_records: 10_000,
            host_profile: HostProfile::Envoy,
            shm_kv_namespace: true,
            connection_manager: None,
            random_seed: 0,
            stats_rejected_prefixes: Vec::new(),
        }
    }
}

/// A real upstream's answer to a call, as delivered to the filter.
#[derive(Debug)]
pub struct UpstreamAnswer {
    pub call: PendingCall,
    pub answer: CallAnswer,
    /// The filter failed while handling the answer.
    pub error: Option<HostError>,
}

/// Queue notifications delivered per step at most: a filter that enqueues from its own
/// `on_queue_ready` forever must not hang the harness.
const MAX_QUEUE_ROUNDS: usize = 10_000;

/// One running filter configuration: a main-thread VM and `workers` worker VMs.
pub struct Proxy {
    /// The VMs by instance index minus `first` (see `vm_slot`).
    pub(crate) vms: Vec<Vm>,
    /// The instance index of `vms[0]`: 0 with a main-thread VM, 1 without.
    first: usize,
    shared: Arc<ProxyShared>,
    plugin: Plugin,
    next_connection: u64,
    /// Answers of real upstreams, delivered by `poll_upstreams`.
    answers: Option<mpsc::Receiver<(CallId, CallAnswer)>>,
    limits: Limits,
    policy: FailurePolicy,
    /// Per VM: when it was last (re)loaded and the current reload interval (FAIL_RELOAD).
    reloads: Vec<Reload>,
    reload_backoff_ns: u64,
    pub(crate) connection_manager: Option<ConnectionManager>,
    /// Requests the connection manager prepared so far (numbers their `x-request-id`).
    pub(crate) requests: u64,
}

#[derive(Clone, Copy)]
struct Reload {
    last_load_ns: u64,
    interval_ns: u64,
}

/// One worker of a proxy, to open streams on.
pub struct Worker<'p> {
    proxy: &'p mut Proxy,
    index: usize,
}

impl<'p> Worker<'p> {
    /// Opens an HTTP exchange (its context is created at the first request headers).
    pub fn http(self) -> Http<'p> {
        self.proxy.maybe_reload(self.index);
        let connection = self.proxy.next_connection_id();
        let ctx = self.proxy.vm_mut(self.index).open_http(connection);
        let thread = Thread::from_index(self.index);
        Http { proxy: self.proxy, id: StreamId { thread, context: ctx } }
    }

    /// Opens a TCP connection (call `new_connection` on it first).
    pub fn tcp(self) -> Tcp<'p> {
        self.proxy.maybe_reload(self.index);
        let connection = self.proxy.next_connection_id();
        let ctx = self.proxy.vm_mut(self.index).open_tcp(connection);
        let thread = Thread::from_index(self.index);
        Tcp { proxy: self.proxy, id: StreamId { thread, context: ctx } }
    }

    pub fn thread(&self) -> Thread {
        Thread::from_index(self.index)
    }
}

impl Proxy {
    /// Starts the main VM and every worker VM, each running `_initialize`, then
    /// `proxy_on_context_create(root, 0)`, `proxy_on_vm_start`, `proxy_on_configure`.
    /// A VM that fails or rejects its configuration fails the whole proxy, as Envoy refuses
    /// the filter.
    pub fn new(plugin: &Plugin, options: ProxyOptions, clock: Clock) -> Result<Proxy, HostError> {
        Proxy::new_in(&Process::new(), plugin, options, clock)
    }

    /// Like `new`, in `process`: the proxy's VMs reach the shared queues of every other proxy
    /// of that process by (vm_id, name), as filters of one Envoy do across vm_ids and threads.
    /// Shared data and stats stay its own (see `new_beside`).
    pub fn new_in(process: &Process, plugin: &Plugin, options: ProxyOptions, clock: Clock) -> Result<Proxy, HostError> {
        let metrics = Registry::rejecting(options.stats_rejected_prefixes.clone());
        Proxy::start(plugin, options, clock, process.clone(), Arc::default(), Arc::new(Mutex::new(metrics)))
    }

    /// Starts a second filter configuration in the same Envoy and `vm_id` as `self` — the
    /// network filter beside the HTTP one, say. Like Envoy, it shares `self`'s shared data and
    /// stats (same name, same stat) and its process's shared queues; its VMs, timers, calls and
    /// logs are its own.
    pub fn new_beside(&self, plugin: &Plugin, options: ProxyOptions, clock: Clock) -> Result<Proxy, HostError> {
        let process = Process { queues: self.shared.queues.clone() };
        Proxy::start(plugin, options, clock, process, self.shared.shared_data.clone(), self.shared.metrics.clone())
    }

    /// The process this proxy runs in (for `new_in`).
    pub fn process(&self) -> Process {
        Process { queues: self.shared.queues.clone() }
    }

    /// Called, from whatever thread enqueues, each time an item is queued for one of this
    /// proxy's VMs (the registrant of a shared queue): the owner should then step the proxy
    /// (`tick`, or any stream step) on its own thread, which delivers `proxy_on_queue_ready`,
    /// as Envoy posts it to the registrant's thread. Without a waker, the next step delivers it.
    pub fn set_queue_waker(&self, wake: impl Fn() + Send + Sync + 'static) {
        self.shared.mailbox.set_waker(Some(Arc::new(wake)));
    }

    fn start(
        plugin: &Plugin,
        options: ProxyOptions,
        clock: Clock,
        process: Process,
        shared_data: Arc<Mutex<SharedData>>,
        metrics: Arc<Mutex<Registry>>,
    ) -> Result<Proxy, HostError> {
        let name = if options.name.is_empty() { plugin.name().to_owned() } else { options.name.clone() };
        let mut properties = PropertyMap::default();
        let defaults: [(&str, &[u8]); 7] = [
            ("plugin_name", name.as_bytes()),
            ("plugin_root_id", options.root_id.as_bytes()),
            ("plugin_vm_id", options.vm_id.as_bytes()),
            ("cluster_name", b"backend"),
            ("route_name", b"default"),
            ("source.address", b"127.0.0.1:40000"),
            ("destination.address", b"127.0.0.1:10000"),
        ];
        for (k, v) in defaults {
            properties.set_dotted(k, v);
        }
        for (k, v) in &options.properties {
            properties.set_dotted(k, v);
        }
        let (upstreams, answers) = if options.upstreams.is_empty() {
            (None, None)
        } else {
            let (u, a) = Upstreams::start(options.upstreams.clone())
                .map_err(|e| HostError::usage(format!("cannot start the upstream client: {e}")))?;
            (Some(u), Some(a))
        };
        let shared = Arc::new(ProxyShared {
            filter: plugin.name_arc(),
            vm_id: options.vm_id.clone(),
            root_id: options.root_id.clone(),
            clock,
            profile: options.host_profile,
            shm_kv_namespace: options.shm_kv_namespace,
            vm_config: options.vm_config.clone(),
            plugin_config: options.plugin_config.clone(),
            log_level: options.log_level,
            clusters: options.clusters.clone(),
            upstreams,
            properties,
            logs: Mutex::new(LogSink::new(options.max_log_records)),
            shared_data,
            queues: process.queues,
            mailbox: Arc::new(Mailbox::default()),
            metrics,
            calls: Mutex::new(Calls::default()),
            any_calls: Default::default(),
            unknown_clusters: Default::default(),
            random_seed: options.random_seed,
        });
        let mut proxy = Proxy {
            vms: Vec::with_capacity(options.workers + 1),
            first: usize::from(!options.main_vm),
            shared: shared.clone(),
            plugin: plugin.clone(),
            next_connection: 0,
            answers,
            limits: options.limits,
            policy: options.failure_policy,
            reloads: Vec::with_capacity(options.workers + 1),
            reload_backoff_ns: u64::try_from(options.reload_backoff.as_nanos()).unwrap_or(u64::MAX).max(1),
            connection_manager: options.connection_manager.clone(),
            requests: 0,
        };
        let now = proxy.shared.clock.now_ns();
        for index in proxy.first..=options.workers {
            let vm = proxy.start_vm(index, 1)?;
            proxy.vms.push(vm);
            proxy.reloads.push(Reload { last_load_ns: now, interval_ns: proxy.reload_backoff_ns });
        }
        proxy.after_step();
        Ok(proxy)
    }

    /// The VM of instance `index` (0 = main thread, i + 1 = worker i). Instance indexes come
    /// from this proxy's own VMs and workers, so the index is one of its VMs.
    pub(crate) fn vm_mut(&mut self, index: usize) -> &mut Vm {
        &mut self.vms[index - self.first]
    }

    /// The VM of instance `index`, None if this proxy has no such VM.
    pub(crate) fn vm(&self, index: usize) -> Option<&Vm> {
        self.vms.get(index.checked_sub(self.first)?)
    }

    fn start_vm(&self, index: usize, first_context: u32) -> Result<Vm, HostError> {
        Vm::start(
            &self.plugin,
            self.shared.clone(),
            index,
            self.limits.memory_bytes,
            self.limits.callback_deadline,
            self.policy,
            first_context,
        )
    }

    /// FAIL_RELOAD, as Envoy's `maybeReloadHandleIfNeeded`: a VM that failed at run time is
    /// replaced by a fresh one when a stream opens on it and the backoff interval has passed
    /// since its last load. Differences: no jitter in the backoff, and a VM with streams still
    /// open is not replaced until they finish (Envoy lets them finish on the old VM).
    fn maybe_reload(&mut self, index: usize) {
        let Some(vm) = self.vm(index) else { return };
        let runtime_failure = matches!(&vm.failed, Some(HostError::Callback { .. }));
        if self.policy != FailurePolicy::FailReload || !runtime_failure || !vm.store.data().streams.is_empty() {
            return;
        }
        let now = self.shared.clock.now_ns();
        let reload = self.reloads[index - self.first];
        if now.saturating_sub(reload.last_load_ns) < reload.interval_ns {
            return;
        }
        let thread = Thread::from_index(index);
        // Context ids go on from the failed VM's, so that ids of its streams stay dead.
        let first_context = vm.store.data().next_context;
        match self.start_vm(index, first_context) {
            Ok(fresh) => {
                lock(&self.shared.calls).cancel_instance(index);
                *self.vm_mut(index) = fresh;
                self.reloads[index - self.first] = Reload { last_load_ns: now, interval_ns: self.reload_backoff_ns };
                self.shared.log(thread, LogLevel::Info, "reloaded the Wasm VM after its failure (FAIL_RELOAD)".into());
            }
            Err(e) => {
                let max = self.reload_backoff_ns.saturating_mul(10);
                self.reloads[index - self.first] =
                    Reload { last_load_ns: now, interval_ns: reload.interval_ns.saturating_mul(2).min(max) };
                self.shared.log(thread, LogLevel::Warn, format!("Failed to reload Wasm plugin: {e}"));
            }
        }
        self.after_step();
    }

    /// The filter this proxy runs.
    pub fn plugin(&self) -> &Plugin {
        &self.plugin
    }

    /// The plugin's name (`ProxyOptions::name`, else the filter's): property `plugin_name`, and
    /// the name in Envoy's `wasm log NAME ROOT_ID VM_ID:` prefix (see `LogRecord::envoy_line`).
    pub fn plugin_name(&self) -> String {
        String::from_utf8_lossy(self.shared.properties.get(b"plugin_name").unwrap_or_default()).into_owned()
    }

    /// The clock the proxy reads.
    pub fn clock(&self) -> &Clock {
        &self.shared.clock
    }

    /// The vm_id.
    pub fn vm_id(&self) -> &str {
        &self.shared.vm_id
    }

    /// The root_id.
    pub fn root_id(&self) -> &str {
        &self.shared.root_id
    }

    /// The proxy the host plays.
    pub fn host_profile(&self) -> HostProfile {
        self.shared.profile
    }

    /// Number of worker VMs.
    pub fn workers(&self) -> usize {
        self.vms.len() + self.first - 1
    }

    /// Worker `i` (0-based), to open streams on.
    pub fn worker(&mut self, i: usize) -> Result<Worker<'_>, HostError> {
        if i >= self.workers() {
            return Err(HostError::usage(format!("worker {i} does not exist (the proxy has {})", self.workers())));
        }
        Ok(Worker { proxy: self, index: i + 1 })
    }

    /// Reopens the handle of an HTTP stream that is still open.
    pub fn http_stream(&mut self, id: StreamId) -> Option<Http<'_>> {
        let vm = self.vm(id.thread.index())?;
        match vm.store.data().streams.get(&id.context) {
            Some(StreamData::Http(_)) => Some(Http { proxy: self, id }),
            _ => None,
        }
    }

    /// Reopens the handle of a TCP connection that is still open.
    pub fn tcp_stream(&mut self, id: StreamId) -> Option<Tcp<'_>> {
        let vm = self.vm(id.thread.index())?;
        match vm.store.data().streams.get(&id.context) {
            Some(StreamData::Tcp(_)) => Some(Tcp { proxy: self, id }),
            _ => None,
        }
    }

    /// Why a VM failed, if it did.
    pub fn failure(&self, thread: Thread) -> Option<&HostError> {
        self.vm(thread.index())?.failed.as_ref()
    }

    fn next_connection_id(&mut self) -> u64 {
        self.next_connection += 1;
        self.next_connection
    }

    /// Moves a simulated clock to `t_ns`, firing on the way, in time order, every tick due on
    /// every VM (ties: main first, then workers in order) and every call timeout (before
    /// ticks due at the same time). On a real-time clock fires what is due now. Returns the
    /// failures that happened (those VMs are now failed).
    pub fn advance_to(&mut self, t_ns: u64) -> Vec<HostError> {
        // Notifications another thread posted since this proxy's last step.
        self.after_step();
        // Only a proxy with real upstreams has answers to collect (a replay's never does).
        let mut errors: Vec<HostError> = if self.answers.is_some() {
            self.poll_upstreams().into_iter().filter_map(|a| a.error).collect()
        } else {
            Vec::new()
        };
        // The clock is reached through `self.shared` each time rather than cloned once: this runs
        // before every simulated event, and a clone and drop are two locked instructions.
        let clock = &self.shared.clock;
        let limit = if clock.is_simulated() { t_ns } else { clock.now_ns() };
        loop {
            let tick = self.next_vm_tick();
            let timeout = if self.shared.calls_outstanding() { lock(&self.shared.calls).next_deadline() } else { None };
            match (tick, timeout) {
                (_, Some((due, id))) if due <= limit && tick.is_none_or(|(t, _)| due <= t) => {
                    self.shared.clock.set_ns(due);
                    let kind = lock(&self.shared.calls).pending.get(&id).map(|c| c.public.kind.clone());
                    let answer = CallAnswer::timeout(kind.as_ref().unwrap_or(&super::calls::CallKind::Http));
                    if let Err(e) = self.answer_call(id, answer) {
                        errors.push(e);
                    }
                }
                (Some((due, i)), _) if due <= limit => {
                    self.shared.clock.set_ns(due);
                    if let Err(e) = self.vm_mut(i).tick(due) {
                        errors.push(e);
                    }
                    self.after_step();
                }
                _ => break,
            }
        }
        self.shared.clock.set_ns(t_ns);
        errors
    }

    /// The earliest tick due on any VM and that VM's instance index; on a tie, the lowest index
    /// (the main thread before the workers). A plain loop: this runs once per tick, ten million
    /// times in a ten-hour replay, where `min` over an iterator of options cost 70 instructions.
    #[inline]
    fn next_vm_tick(&self) -> Option<(u64, usize)> {
        let mut best: Option<(u64, usize)> = None;
        for (slot, vm) in self.vms.iter().enumerate() {
            if let Some(t) = vm.next_tick() {
                if best.is_none_or(|(b, _)| t < b) {
                    best = Some((t, slot));
                }
            }
        }
        best.map(|(t, slot)| (t, slot + self.first))
    }

    /// When the next timer is due (a VM's tick or a call's timeout), if any: where
    /// `advance_to` would stop next. Lets a caller step simulated time event by event.
    pub fn next_due_ns(&self) -> Option<u64> {
        let tick = self.next_vm_tick().map(|(t, _)| t);
        let timeout = if self.shared.calls_outstanding() {
            lock(&self.shared.calls).next_deadline().map(|(due, _)| due)
        } else {
            None
        };
        tick.into_iter().chain(timeout).min()
    }

    /// Clusters the filter called that this proxy does not know (neither in
    /// `ProxyOptions::clusters` nor `upstreams`): Envoy refuses such calls, and so does the host;
    /// this says which to add. First call first, at most 64.
    pub fn unknown_clusters(&self) -> Vec<String> {
        lock(&self.shared.unknown_clusters).clone()
    }

    /// `advance_to(now + by)`.
    pub fn advance(&mut self, by: Duration) -> Vec<HostError> {
        let by_ns = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        let t = self.shared.clock.now_ns().saturating_add(by_ns);
        self.advance_to(t)
    }

    /// Fires what is due at the clock's current time.
    pub fn tick(&mut self) -> Vec<HostError> {
        let now = self.shared.clock.now_ns();
        self.advance_to(now)
    }

    /// Calls the filters made that wait for the caller's answer, in the order they were made
    /// (calls to real upstreams are the host's to answer: see `upstream_calls`).
    pub fn pending_calls(&self) -> Vec<PendingCall> {
        self.calls_to(false)
    }

    /// Calls sent to real upstreams whose answers have not been delivered yet.
    pub fn upstream_calls(&self) -> Vec<PendingCall> {
        self.calls_to(true)
    }

    fn calls_to(&self, upstream: bool) -> Vec<PendingCall> {
        let calls = lock(&self.shared.calls);
        calls.pending.values().filter(|c| c.public.upstream.is_some() == upstream).map(|c| c.public.clone()).collect()
    }

    /// Delivers the answers real upstreams have sent so far (without waiting) and returns
    /// them. Answers to calls that already timed out or were cancelled are dropped, as Envoy
    /// drops them.
    pub fn poll_upstreams(&mut self) -> Vec<UpstreamAnswer> {
        let mut delivered = Vec::new();
        loop {
            let Some(Ok((id, answer))) = self.answers.as_ref().map(mpsc::Receiver::try_recv) else {
                return delivered;
            };
            delivered.extend(self.deliver_upstream(id, answer));
        }
    }

    /// Waits up to `wait` (wall time) for a real upstream to answer, then delivers every answer
    /// that has arrived. Returns at once when no call to a real upstream is in flight; the
    /// clock does not move while waiting (on a simulated clock the answer arrives at once).
    pub fn await_upstreams(&mut self, wait: Duration) -> Vec<UpstreamAnswer> {
        let in_flight = self.shared.calls_outstanding() && lock(&self.shared.calls).in_flight() > 0;
        let first = match (&self.answers, in_flight) {
            (Some(answers), true) => answers.recv_timeout(wait).ok(),
            _ => None,
        };
        let mut delivered: Vec<UpstreamAnswer> =
            first.and_then(|(id, a)| self.deliver_upstream(id, a)).into_iter().collect();
        delivered.extend(self.poll_upstreams());
        delivered
    }

    fn deliver_upstream(&mut self, id: CallId, answer: CallAnswer) -> Option<UpstreamAnswer> {
        let call = lock(&self.shared.calls).pending.get(&id)?.public.clone();
        let error = self.answer_call(id, answer.clone()).err();
        Some(UpstreamAnswer { call, answer, error })
    }

    /// One pending call (or open gRPC stream), as `pending_calls` shows it.
    pub fn pending_call(&self, id: CallId) -> Option<PendingCall> {
        lock(&self.shared.calls).pending.get(&id).map(|c| c.public.clone())
    }

    /// Answers a pending call: the VM that made it gets `proxy_on_http_call_response` (or the
    /// gRPC callbacks) with the originating context effective.
    ///
    /// A gRPC stream answered this way gets the whole exchange at once: `CallAnswer::Grpc` is
    /// initial metadata, the message if the status is 0 (OK), trailing metadata and close with
    /// the status; `CallAnswer::Failure` is a close with 14 (UNAVAILABLE). It stops early if the
    /// filter cancels the stream on the way.
    pub fn answer_call(&mut self, id: CallId, answer: CallAnswer) -> Result<(), HostError> {
        let is_stream = lock(&self.shared.calls)
            .pending
            .get(&id)
            .is_some_and(|r| matches!(r.public.kind, CallKind::GrpcStream { .. }));
        if is_stream {
            return self.answer_stream(id, answer);
        }
        let record = lock(&self.shared.calls).pending.remove(&id);
        let Some(record) = record else {
            return Err(HostError::usage(format!("no pending call {}", id.0)));
        };
        let vm = self.vm_mut(record.instance);
        if vm.failed.is_some() {
            return Ok(());
        }
        let result = vm.deliver_call(record, answer);
        self.after_step();
        result
    }

    fn answer_stream(&mut self, id: CallId, answer: CallAnswer) -> Result<(), HostError> {
        let events = match answer {
            CallAnswer::Grpc { status, message, initial_metadata, trailing_metadata } => {
                let mut events = vec![GrpcStreamEvent::InitialMetadata(initial_metadata)];
                if status == 0 {
                    events.push(GrpcStreamEvent::Message(message));
                }
                events.push(GrpcStreamEvent::TrailingMetadata(trailing_metadata));
                events.push(GrpcStreamEvent::Close { status, message: String::new() });
                events
            }
            CallAnswer::Failure => vec![GrpcStreamEvent::Close { status: 14, message: String::new() }],
            CallAnswer::Http { .. } => {
                return Err(HostError::usage(format!(
                    "call {} is a gRPC stream: answer it with CallAnswer::Grpc or CallAnswer::Failure",
                    id.0
                )))
            }
        };
        for event in events {
            if !lock(&self.shared.calls).pending.contains_key(&id) {
                break;
            }
            self.grpc_stream_event(id, event)?;
        }
        Ok(())
    }

    /// Delivers what the remote side of gRPC stream `id` does: the VM that opened it gets
    /// `proxy_on_grpc_receive_initial_metadata`, `proxy_on_grpc_receive`,
    /// `proxy_on_grpc_receive_trailing_metadata` or `proxy_on_grpc_close` with the originating
    /// context effective. After `Close` the stream is no longer pending. Events out of gRPC's
    /// order (see `GrpcStreamEvent`), unknown ids and ids of other kinds of calls are usage
    /// errors; on a failed VM the stream is dropped and nothing is delivered.
    pub fn grpc_stream_event(&mut self, id: CallId, event: GrpcStreamEvent) -> Result<(), HostError> {
        let closing = matches!(event, GrpcStreamEvent::Close { .. });
        let (instance, token, context, close_called) = {
            let mut calls = lock(&self.shared.calls);
            let Some(record) = calls.pending.get_mut(&id) else {
                return Err(HostError::usage(format!("no pending gRPC stream {}", id.0)));
            };
            if !matches!(record.public.kind, CallKind::GrpcStream { .. }) {
                return Err(HostError::usage(format!("call {} is not a gRPC stream", id.0)));
            }
            record.advance(&event)?;
            let key = (record.instance, record.token, record.context, record.close_called);
            if self.vm(key.0).is_none_or(|vm| vm.failed.is_some()) {
                calls.pending.remove(&id);
                return Ok(());
            }
            if closing {
                calls.pending.remove(&id);
                // While `on_grpc_close` runs, and after it unless the filter had called
                // `proxy_grpc_close`, Envoy keeps the handle: sends answer OK, close releases it.
                calls.remote_closed.insert((key.0, key.1), key.2);
            }
            key
        };
        let vm = self.vm_mut(instance);
        let result = vm.deliver_stream_event(token, context, event);
        if closing && (close_called || vm.failed.is_some()) {
            lock(&self.shared.calls).remote_closed.remove(&(instance, token));
        }
        self.after_step();
        result
    }

    /// Every metric the filter defined, aggregated across VMs (same name = same stat).
    pub fn metrics(&self) -> Vec<Metric> {
        lock(&self.shared.metrics).snapshot()
    }

    /// One metric by name, if defined.
    pub fn metric(&self, name: &str) -> Option<Metric> {
        lock(&self.shared.metrics).find(name)
    }

    /// The metrics in Prometheus text format with Envoy's names (no `envoy_` prefix for
    /// Wasm metrics, non-alphanumerics as `_`).
    pub fn render_prometheus(&self) -> String {
        render_prometheus(&self.metrics())
    }

    /// A copy of the log lines kept so far.
    pub fn logs(&self) -> Vec<LogRecord> {
        lock(&self.shared.logs).records.iter().cloned().collect()
    }

    /// Takes the log lines kept so far.
    pub fn drain_logs(&self) -> Vec<LogRecord> {
        lock(&self.shared.logs).records.drain(..).collect()
    }

    /// Log lines dropped because the sink was full.
    pub fn dropped_logs(&self) -> u64 {
        lock(&self.shared.logs).dropped
    }

    /// A shared-data entry (value, cas).
    pub fn shared_data(&self, key: &[u8]) -> Option<(Vec<u8>, u32)> {
        lock(&self.shared.shared_data).get(key).map(|(v, cas)| (v.to_vec(), cas))
    }

    /// Every shared-data key, sorted.
    pub fn shared_data_keys(&self) -> Vec<Vec<u8>> {
        lock(&self.shared.shared_data).keys()
    }

    /// Items waiting in a shared queue, None if it was never registered.
    /// (This proxy's vm_id's queues; the process holds those of every vm_id.)
    pub fn queue_depth(&self, name: &str) -> Option<usize> {
        lock(&self.shared.queues).depth(self.shared.vm_id.as_bytes(), name.as_bytes())
    }

    /// Delivers pending `proxy_on_queue_ready` notifications to this proxy's VMs, whichever
    /// thread enqueued (cpp-host posts them to the registrant's thread: they run after the step
    /// that enqueued, never inside it).
    #[inline]
    pub(crate) fn after_step(&mut self) {
        // One load on the common path: this runs after every tick and every step.
        if self.shared.mailbox.waiting() {
            self.deliver_queue_ready();
        }
    }

    #[cold]
    fn deliver_queue_ready(&mut self) {
        for _ in 0..MAX_QUEUE_ROUNDS {
            let ready = self.shared.mailbox.take();
            if ready.is_empty() {
                return;
            }
            for (instance, root_context, token) in ready {
                let slot = instance.checked_sub(self.first);
                if let Some(vm) = slot.and_then(|s| self.vms.get_mut(s)) {
                    if vm.failed.is_none() {
                        // A failure is recorded on the VM and logged; streams see it next.
                        let _ = vm.queue_ready(root_context, token);
                    }
                }
            }
        }
        self.shared.log(
            Thread::Main,
            LogLevel::Warn,
            format!("more than {MAX_QUEUE_ROUNDS} rounds of queue notifications in one step; the rest wait for the next step"),
        );
        self.shared.mailbox.repost();
    }
}

impl Drop for Proxy {
    /// Notifications for VMs that are gone are dropped from then on (the registry may outlive
    /// the proxy in its process).
    fn drop(&mut self) {
        self.shared.mailbox.close();
    }
}
