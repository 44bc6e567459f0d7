// One VM of a proxy (the main thread's or a worker's): its own instance, root context and
// tick timer; every guest call goes through `Vm::call`, which enforces the deadline and
// turns traps into typed errors that mark the VM failed for good.

use std::sync::Arc;
use std::time::Duration;

use wasmtime::{Instance, Store, Trap, TypedFunc, WasmParams, WasmResults};

use super::calls::{CallAnswer, CallRecord, GrpcStreamEvent};
use super::error::{FailureKind, HostError, Thread};
use super::logs::LogLevel;
use super::module::{Plugin, EPOCH_TICK};
use super::profile::HostProfile;
use super::state::{CallResponse, HostState, ProxyShared};
use super::FailurePolicy;

/// `proxy_on_http_call_response(root, token, headers, body_size, trailers)`.
pub(crate) type CallResponseFn = TypedFunc<(i32, i32, i32, i32, i32), ()>;

/// Every callback the host may call, looked up once per instance.
#[derive(Default)]
pub(crate) struct Exports {
    pub initialize: Option<TypedFunc<(), ()>>,
    pub start: Option<TypedFunc<(), ()>>,
    pub main: Option<TypedFunc<(i32, i32), i32>>,
    pub on_context_create: Option<TypedFunc<(i32, i32), ()>>,
    pub on_vm_start: Option<TypedFunc<(i32, i32), i32>>,
    pub on_configure: Option<TypedFunc<(i32, i32), i32>>,
    pub on_done: Option<TypedFunc<i32, i32>>,
    pub on_log: Option<TypedFunc<i32, ()>>,
    pub on_delete: Option<TypedFunc<i32, ()>>,
    pub on_tick: Option<TypedFunc<i32, ()>>,
    pub on_queue_ready: Option<TypedFunc<(i32, i32), ()>>,
    pub on_new_connection: Option<TypedFunc<i32, i32>>,
    pub on_downstream_data: Option<TypedFunc<(i32, i32, i32), i32>>,
    pub on_upstream_data: Option<TypedFunc<(i32, i32, i32), i32>>,
    pub on_downstream_connection_close: Option<TypedFunc<(i32, i32), ()>>,
    pub on_upstream_connection_close: Option<TypedFunc<(i32, i32), ()>>,
    pub on_request_headers: Option<TypedFunc<(i32, i32, i32), i32>>,
    pub on_request_body: Option<TypedFunc<(i32, i32, i32), i32>>,
    pub on_request_trailers: Option<TypedFunc<(i32, i32), i32>>,
    pub on_response_headers: Option<TypedFunc<(i32, i32, i32), i32>>,
    pub on_response_body: Option<TypedFunc<(i32, i32, i32), i32>>,
    pub on_response_trailers: Option<TypedFunc<(i32, i32), i32>>,
    pub on_http_call_response: Option<CallResponseFn>,
    pub on_grpc_receive_initial_metadata: Option<TypedFunc<(i32, i32, i32), ()>>,
    pub on_grpc_receive: Option<TypedFunc<(i32, i32, i32), ()>>,
    pub on_grpc_receive_trailing_metadata: Option<TypedFunc<(i32, i32, i32), ()>>,
    pub on_grpc_close: Option<TypedFunc<(i32, i32, i32), ()>>,
}

fn typed<P: WasmParams, R: WasmResults>(
    instance: &Instance,
    store: &mut Store<HostState>,
    name: &str,
) -> Result<Option<TypedFunc<P, R>>, String> {
    match instance.get_func(&mut *store, name) {
        None => Ok(None),
        Some(f) => {
            f.typed::<P, R>(&*store).map(Some).map_err(|e| format!("export {name} has the wrong signature: {e}"))
        }
    }
}

impl Exports {
    fn new(instance: &Instance, store: &mut Store<HostState>) -> Result<Exports, String> {
        Ok(Exports {
            initialize: typed(instance, store, "_initialize")?,
            start: typed(instance, store, "_start")?,
            main: typed(instance, store, "main")?,
            on_context_create: typed(instance, store, "proxy_on_context_create")?,
            on_vm_start: typed(instance, store, "proxy_on_vm_start")?,
            on_configure: typed(instance, store, "proxy_on_configure")?,
            on_done: typed(instance, store, "proxy_on_done")?,
            on_log: typed(instance, store, "proxy_on_log")?,
            on_delete: typed(instance, store, "proxy_on_delete")?,
            on_tick: typed(instance, store, "proxy_on_tick")?,
            on_queue_ready: typed(instance, store, "proxy_on_queue_ready")?,
            on_new_connection: typed(instance, store, "proxy_on_new_connection")?,
            on_downstream_data: typed(instance, store, "proxy_on_downstream_data")?,
            on_upstream_data: typed(instance, store, "proxy_on_upstream_data")?,
            on_downstream_connection_close: typed(instance, store, "proxy_on_downstream_connection_close")?,
            on_upstream_connection_close: typed(instance, store, "proxy_on_upstream_connection_close")?,
            on_request_headers: typed(instance, store, "proxy_on_request_headers")?,
            on_request_body: typed(instance, store, "proxy_on_request_body")?,
            on_request_trailers: typed(instance, store, "proxy_on_request_trailers")?,
            on_response_headers: typed(instance, store, "proxy_on_response_headers")?,
            on_response_body: typed(instance, store, "proxy_on_response_body")?,
            on_response_trailers: typed(instance, store, "proxy_on_response_trailers")?,
            on_http_call_response: typed(instance, store, "proxy_on_http_call_response")?,
            on_grpc_receive_initial_metadata: typed(instance, store, "proxy_on_grpc_receive_initial_metadata")?,
            on_grpc_receive: typed(instance, store, "proxy_on_grpc_receive")?,
            on_grpc_receive_trailing_metadata: typed(instance, store, "proxy_on_grpc_receive_trailing_metadata")?,
            on_grpc_close: typed(instance, store, "proxy_on_grpc_close")?,
        })
    }
}

/// One VM: a wasmtime store and instance of the plugin.
pub(crate) struct Vm {
    pub store: Store<HostState>,
    pub exports: Exports,
    /// Set by the first failure; a failed VM is never called again.
    pub failed: Option<HostError>,
    pub policy: FailurePolicy,
    /// The proxy the host plays (a copy of the store's, read on the stream path).
    pub profile: HostProfile,
    deadline_ticks: u64,
    /// True while deferred actions are being run, so that nested callbacks leave theirs to
    /// the outer loop.
    pub in_deferred: bool,
}

impl Vm {
    /// Instantiates the plugin and runs Envoy's start sequence: `_initialize` (+ `main`) in
    /// restricted mode, then `proxy_on_context_create(root, 0)`, `proxy_on_vm_start(root,
    /// vm_config_len)`, `proxy_on_configure(root, plugin_config_len)`.
    pub(crate) fn start(
        plugin: &Plugin,
        shared: Arc<ProxyShared>,
        instance: usize,
        memory_bytes: usize,
        deadline: Duration,
        policy: FailurePolicy,
        first_context: u32,
    ) -> Result<Vm, HostError> {
        let filter = shared.filter.clone();
        let thread = Thread::from_index(instance);
        let mut store = Store::new(plugin.engine(), HostState::new(shared, instance, memory_bytes));
        store.limiter(|st| &mut st.limits);
        store.epoch_deadline_trap();
        let deadline_ticks = (deadline.as_millis() / EPOCH_TICK.as_millis()).max(1) as u64 + 1;
        store.set_epoch_deadline(deadline_ticks);
        let fail = |message: String| HostError::Callback {
            filter: filter.clone(),
            thread,
            callback: "instantiate",
            request: None,
            kind: FailureKind::Instantiate,
            message,
        };
        let instance_handle = plugin.pre().instantiate(&mut store).map_err(|e| fail(format!("{e:?}")))?;
        let exports = Exports::new(&instance_handle, &mut store)
            .map_err(|m| HostError::InvalidModule { filter: filter.clone(), message: m })?;
        let memory = instance_handle.get_memory(&mut store, "memory");
        let alloc = match typed::<i32, i32>(&instance_handle, &mut store, "proxy_on_memory_allocate") {
            Ok(Some(f)) => Some(f),
            _ => typed::<i32, i32>(&instance_handle, &mut store, "malloc").ok().flatten(),
        };
        {
            let st = store.data_mut();
            st.memory = memory;
            st.alloc = alloc.map(Arc::new);
            st.next_context = first_context;
        }
        let profile = store.data().profile;
        let mut vm = Vm { store, exports, failed: None, policy, profile, deadline_ticks, in_deferred: false };

        vm.store.data_mut().restricted = true;
        if vm.exports.initialize.is_some() {
            vm.call("_initialize", |e| e.initialize.as_ref(), (), 0)?;
            vm.call("main", |e| e.main.as_ref(), (0, 0), 0)?;
        } else {
            vm.call("_start", |e| e.start.as_ref(), (), 0)?;
        }
        vm.store.data_mut().restricted = false;

        let root = vm.store.data_mut().alloc_context_id();
        {
            let st = vm.store.data_mut();
            st.root_context = root;
        }
        vm.call("proxy_on_context_create", |e| e.on_context_create.as_ref(), (root as i32, 0), root)?;
        let root_i = root as i32;
        let vm_len = vm.store.data().shared.vm_config.len() as i32;
        if vm.call("proxy_on_vm_start", |e| e.on_vm_start.as_ref(), (root_i, vm_len), root)? == Some(0) {
            return Err(vm.reject("proxy_on_vm_start"));
        }
        let cfg_len = vm.store.data().shared.plugin_config.len() as i32;
        if vm.call("proxy_on_configure", |e| e.on_configure.as_ref(), (root_i, cfg_len), root)? == Some(0) {
            return Err(vm.reject("proxy_on_configure"));
        }
        vm.run_deferred();
        Ok(vm)
    }

    fn reject(&mut self, callback: &'static str) -> HostError {
        let st = self.store.data();
        let err = HostError::Rejected { filter: st.shared.filter.clone(), thread: st.thread, callback };
        self.failed = Some(err.clone());
        err
    }

    pub(crate) fn root_context(&self) -> u32 {
        self.store.data().root_context
    }

    /// Calls the guest export `pick` selects (None if the module lacks it) for `context`
    /// (0 = none), with the deadline armed and the context made current. A failure marks the
    /// VM failed and is logged like Envoy does.
    pub(crate) fn call<P: WasmParams, R: WasmResults>(
        &mut self,
        callback: &'static str,
        pick: impl FnOnce(&Exports) -> Option<&TypedFunc<P, R>>,
        args: P,
        context: u32,
    ) -> Result<Option<R>, HostError> {
        self.call_as(callback, pick, args, context, context)
    }

    /// Like `call`, with the callback's own context (`active`, e.g. the root for call
    /// responses) distinct from the one hostcalls act on (`effective`).
    pub(crate) fn call_as<P: WasmParams, R: WasmResults>(
        &mut self,
        callback: &'static str,
        pick: impl FnOnce(&Exports) -> Option<&TypedFunc<P, R>>,
        args: P,
        active: u32,
        effective: u32,
    ) -> Result<Option<R>, HostError> {
        if let Some(err) = &self.failed {
            return Err(err.clone());
        }
        let Some(f) = pick(&self.exports) else {
            return Ok(None);
        };
        self.store.set_epoch_deadline(self.deadline_ticks);
        let st = self.store.data_mut();
        st.callback = callback;
        st.active_context = active;
        st.effective_context = effective;
        match f.call(&mut self.store, args) {
            Ok(r) => Ok(Some(r)),
            Err(e) => Err(self.fail(callback, effective, e)),
        }
    }

    fn fail(&mut self, callback: &'static str, context: u32, e: wasmtime::Error) -> HostError {
        let st = self.store.data_mut();
        let kind = if st.limits.hit {
            FailureKind::MemoryLimit
        } else if matches!(e.downcast_ref::<Trap>(), Some(Trap::Interrupt)) {
            FailureKind::Deadline
        } else {
            FailureKind::Trap
        };
        let request = st.streams.get(&context).map(|s| s.describe(context));
        // The error's first line only: a trap's Display is "error while executing at wasm
        // backtrace: ..."; the trap itself says what happened. The full report goes to the log.
        let message = match e.downcast_ref::<Trap>() {
            Some(trap) => trap.to_string(),
            None => e.root_cause().to_string(),
        };
        let report = format!("{e:?}");
        st.deferred.clear();
        let err = HostError::Callback {
            filter: st.shared.filter.clone(),
            thread: st.thread,
            callback,
            request,
            kind,
            message,
        };
        // Envoy logs "Function: proxy_on_... failed: ..." at critical and fails the VM.
        st.log(LogLevel::Critical, format!("Function: {callback} failed ({kind}): {report}"));
        self.failed = Some(err.clone());
        err
    }

    /// When this VM's tick is next due (None if off or failed).
    pub(crate) fn next_tick(&self) -> Option<u64> {
        if self.failed.is_some() {
            return None;
        }
        self.store.data().next_tick_ns
    }

    /// Fires the tick due at `due`: re-arms the timer from `due`, then calls `on_tick`.
    pub(crate) fn tick(&mut self, due: u64) -> Result<(), HostError> {
        let st = self.store.data_mut();
        st.next_tick_ns = (st.tick_period_ns > 0).then(|| due.saturating_add(st.tick_period_ns));
        let root = st.root_context;
        self.call("proxy_on_tick", |e| e.on_tick.as_ref(), root as i32, root)?;
        self.run_deferred();
        Ok(())
    }

    pub(crate) fn queue_ready(&mut self, root: u32, token: u32) -> Result<(), HostError> {
        self.call("proxy_on_queue_ready", |e| e.on_queue_ready.as_ref(), (root as i32, token as i32), root)?;
        self.run_deferred();
        Ok(())
    }

    /// Delivers the answer to one of this VM's calls.
    pub(crate) fn deliver_call(&mut self, call: CallRecord, answer: CallAnswer) -> Result<(), HostError> {
        let root = self.root_context();
        // The response goes to the root context id (as go-sdk expects) with the originating
        // context made effective (as the Rust SDK then re-asserts by token).
        let origin = if self.store.data().streams.contains_key(&call.context) { call.context } else { root };
        let token = call.token as i32;
        let r = root as i32;
        let result = match answer {
            CallAnswer::Http { headers, body, trailers } => {
                let (nh, nb, nt) = (headers.len() as i32, body.len() as i32, trailers.len() as i32);
                self.set_call_response(Some(CallResponse { headers, body, trailers }), (0, Vec::new()));
                self.call_as(
                    "proxy_on_http_call_response",
                    |e| e.on_http_call_response.as_ref(),
                    (r, token, nh, nb, nt),
                    root,
                    origin,
                )
                .map(drop)
            }
            CallAnswer::Failure => {
                self.set_call_response(
                    Some(CallResponse::default()),
                    (super::abi::status::BROKEN_CONNECTION as u32, b"reset".to_vec()),
                );
                match &call.public.kind {
                    super::calls::CallKind::Http => self
                        .call_as(
                            "proxy_on_http_call_response",
                            |e| e.on_http_call_response.as_ref(),
                            (r, token, 0, 0, 0),
                            root,
                            origin,
                        )
                        .map(drop),
                    // gRPC UNAVAILABLE (14) for a reset. (`Proxy::answer_call` turns answers
                    // to streams into stream events; they never come here.)
                    super::calls::CallKind::Grpc { .. } | super::calls::CallKind::GrpcStream { .. } => self
                        .call_as(
                            "proxy_on_grpc_close",
                            |e| e.on_grpc_close.as_ref(),
                            (origin as i32, token, 14),
                            root,
                            origin,
                        )
                        .map(drop),
                }
            }
            CallAnswer::Grpc { status, message, initial_metadata, trailing_metadata } => {
                self.deliver_grpc(origin, token, status, message, initial_metadata, trailing_metadata)
            }
        };
        self.store.data_mut().call_response = None;
        result?;
        self.run_deferred();
        Ok(())
    }

    fn deliver_grpc(
        &mut self,
        origin: u32,
        token: i32,
        status: u32,
        message: Vec<u8>,
        initial: super::headers::HeaderMap,
        trailing: super::headers::HeaderMap,
    ) -> Result<(), HostError> {
        let ctx = origin as i32;
        let (ni, nm, nt) = (initial.len() as i32, message.len() as i32, trailing.len() as i32);
        self.set_call_response(
            Some(CallResponse { headers: initial, body: message, trailers: trailing }),
            (status, Vec::new()),
        );
        let root = self.root_context();
        if ni > 0 {
            self.call_as(
                "proxy_on_grpc_receive_initial_metadata",
                |e| e.on_grpc_receive_initial_metadata.as_ref(),
                (ctx, token, ni),
                root,
                origin,
            )?;
        }
        if status == 0 {
            self.call_as("proxy_on_grpc_receive", |e| e.on_grpc_receive.as_ref(), (ctx, token, nm), root, origin)?;
        }
        if nt > 0 {
            self.call_as(
                "proxy_on_grpc_receive_trailing_metadata",
                |e| e.on_grpc_receive_trailing_metadata.as_ref(),
                (ctx, token, nt),
                root,
                origin,
            )?;
        }
        if status != 0 {
            self.call_as(
                "proxy_on_grpc_close",
                |e| e.on_grpc_close.as_ref(),
                (ctx, token, status as i32),
                root,
                origin,
            )?;
        }
        Ok(())
    }

    /// Delivers what the remote side of the gRPC stream `token`, opened from `context`, did.
    /// The callbacks get the root context id, as in Envoy (streams belong to the root context
    /// there), with the originating context effective as for unary answers.
    pub(crate) fn deliver_stream_event(
        &mut self,
        token: u32,
        context: u32,
        event: GrpcStreamEvent,
    ) -> Result<(), HostError> {
        let root = self.root_context();
        let origin = if self.store.data().streams.contains_key(&context) { context } else { root };
        let (r, token) = (root as i32, token as i32);
        let result = match event {
            GrpcStreamEvent::InitialMetadata(headers) => {
                let n = headers.len() as i32;
                self.store.data_mut().call_response = Some(CallResponse { headers, ..CallResponse::default() });
                self.call_as(
                    "proxy_on_grpc_receive_initial_metadata",
                    |e| e.on_grpc_receive_initial_metadata.as_ref(),
                    (r, token, n),
                    root,
                    origin,
                )
            }
            GrpcStreamEvent::Message(body) => {
                let n = body.len() as i32;
                self.store.data_mut().call_response = Some(CallResponse { body, ..CallResponse::default() });
                self.call_as("proxy_on_grpc_receive", |e| e.on_grpc_receive.as_ref(), (r, token, n), root, origin)
            }
            GrpcStreamEvent::TrailingMetadata(trailers) => {
                let n = trailers.len() as i32;
                self.store.data_mut().call_response = Some(CallResponse { trailers, ..CallResponse::default() });
                self.call_as(
                    "proxy_on_grpc_receive_trailing_metadata",
                    |e| e.on_grpc_receive_trailing_metadata.as_ref(),
                    (r, token, n),
                    root,
                    origin,
                )
            }
            GrpcStreamEvent::Close { status, message } => {
                // Empty maps stay readable (Envoy hands out empty pairs there; the Rust SDK
                // would panic on BAD_ARGUMENT).
                self.set_call_response(Some(CallResponse::default()), (status, message.into_bytes()));
                self.call_as(
                    "proxy_on_grpc_close",
                    |e| e.on_grpc_close.as_ref(),
                    (r, token, status as i32),
                    root,
                    origin,
                )
            }
        };
        self.store.data_mut().call_response = None;
        result?;
        self.run_deferred();
        Ok(())
    }

    fn set_call_response(&mut self, response: Option<CallResponse>, status: (u32, Vec<u8>)) {
        let st = self.store.data_mut();
        st.call_response = response;
        st.status = status;
    }
}
