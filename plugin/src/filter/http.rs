// The HTTP context: matches a request to its pool, asks the engine for a plan, and carries it
// out (local reply, pause for a delay, admission against capacity, queueing) with few host calls.

use std::borrow::Cow;
use std::cell::RefCell;
use std::rc::Rc;

use ebb_engine::header_map::HeaderMap;
use ebb_engine::metrics::{GlobalMetric, PoolMetric};
use ebb_engine::request::Request;
use ebb_engine::{Action as Verdict, Admission, Protocol};
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;

use super::metrics::increment;
use super::slots::{self, Slot, Taken};
use super::{control, hostcall, now_ms, Vm};

/// A request's accounting, kept in its context (a request that waits gets its slot through
/// `Vm::late_slots` instead, so that no request allocates for this).
#[derive(Default)]
pub(crate) struct ReqState {
    /// Index of its pool, when it has one.
    pub pool: Option<usize>,
    /// The capacity slot it holds.
    pub counted: Option<Slot>,
    /// The pool's `completed_total` to count when it finishes, kept by id: the pool's index may
    /// mean another pool after a reconfiguration, and `requests_total` was counted by name.
    pub completes: Option<u32>,
}

/// What a waiting request waits for.
pub(crate) enum Wait {
    /// A delay fault; then the rest of the plan.
    Delay { action: Verdict, admission: Admission },
    /// A slot of a drained pool's capacity; shed at `deadline`.
    Queue { pool: usize, capacity: u64, deadline: u64, fault: String },
}

pub(crate) struct Pending {
    pub context_id: u32,
    pub due: u64,
    pub wait: Wait,
    /// The request's pool, for its counters.
    pub pool: Option<usize>,
}

/// A local reply to send.
pub(crate) struct Reply {
    pub status: u32,
    pub headers: Vec<(&'static str, String)>,
    pub body: String,
}

impl Reply {
    /// Sends the reply on the effective context; false if the host refused it (logged once per
    /// VM), in which case the caller lets the request through rather than leave it paused.
    #[inline(never)]
    pub fn send(&self) -> bool {
        let headers: Vec<(&str, &str)> = self.headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        hostcall::send_local_reply(self.status, &headers, self.body.as_bytes())
    }
}

/// What to do after the plan ran: forward, answer, or wait on a timer.
enum Outcome {
    Forward,
    Reply(Reply),
    Wait,
}

/// The request's headers as the engine and the control API ask for them.
///
/// Where the configuration makes every request read two headers or more (the control API's
/// `:path`, then a pool's `:authority`), they are fetched with one host call
/// (`proxy_get_header_map_pairs`) the first time any is needed, and ebb's signature is looked for
/// in that map too. Otherwise each header is asked for on its own (`proxy_get_header_map_value`),
/// `:path` and `:authority` kept once read: handing the map over (the host calls back into the
/// VM's allocator) and indexing it costs more than two look-ups (`:authority` and the signature,
/// which is absent from nearly every request and then costs no hand-over). With the control API
/// on, three look-ups cost more than the map (12,056 against 11,799 instructions per exchange in
/// the host bench's `ebb_drain_control` row). A host that refuses the map, or hands over one that
/// does not parse, is asked header by header, as is one that leaves pseudo-headers (`:path`, ...)
/// out of it.
///
/// ebb's headers are removed from the request after the map was fetched; the map still lists
/// them, which nothing after the control check asks for.
#[derive(Default)]
pub(crate) struct Lazy {
    /// Fetch the whole map at the first look-up (see `Vm::headers_at_once`).
    at_once: bool,
    /// None until fetched; Some(None) when the host gave no usable map.
    map: Option<Option<HeaderMap>>,
    /// As the host gave them: decoded only when asked for as text.
    path: Option<Option<Vec<u8>>>,
    authority: Option<Option<Vec<u8>>>,
}

/// A header's value as text; bytes that are not UTF-8 are replaced, never refused.
fn text(bytes: &[u8]) -> Cow<'_, str> {
    // `from_utf8` first: its ASCII fast path beats the lossy decoder's chunk iterator.
    std::str::from_utf8(bytes).map_or_else(|_| String::from_utf8_lossy(bytes), Cow::Borrowed)
}

/// [`text`] for a value the filter owns: no copy when it is UTF-8.
fn owned(bytes: Vec<u8>) -> Cow<'static, str> {
    Cow::Owned(String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()))
}

impl Lazy {
    pub(crate) fn new(at_once: bool) -> Self {
        Lazy { at_once, ..Lazy::default() }
    }

    /// The request's header map, fetched the first time; None if the host gave no usable one.
    fn map(&mut self) -> Option<&HeaderMap> {
        self.map.get_or_insert_with(|| hostcall::request_header_pairs().and_then(HeaderMap::parse)).as_ref()
    }

    /// The map, only if it was fetched already.
    fn fetched(&self) -> Option<&HeaderMap> {
        self.map.as_ref().and_then(Option::as_ref)
    }

    /// Whether a header whose name starts with `prefix` may be there: false only when the
    /// fetched map has none; None when the map was not fetched (ask the host).
    pub(crate) fn may_have_prefix(&self, prefix: &str) -> Option<bool> {
        self.fetched().map(|m| m.any_with_prefix(prefix))
    }

    /// The slot `:path` and `:authority` are kept in once read header by header.
    fn slot(&mut self, name: &str) -> Option<&mut Option<Option<Vec<u8>>>> {
        match name {
            ":path" => Some(&mut self.path),
            ":authority" => Some(&mut self.authority),
            _ => None,
        }
    }

    /// False only when the fetched map lacks `name` (so there is nothing to remove).
    pub(crate) fn may_have(&self, name: &str) -> bool {
        self.fetched().is_none_or(|m| m.get(name).is_some())
    }
}

impl Request for Lazy {
    fn header(&mut self, name: &str) -> Option<Cow<'_, str>> {
        let value = self.header_bytes(name)?;
        Some(match value {
            Cow::Borrowed(bytes) => text(bytes),
            Cow::Owned(bytes) => owned(bytes),
        })
    }

    fn header_bytes(&mut self, name: &str) -> Option<Cow<'_, [u8]>> {
        if !self.at_once {
            return match self.slot(name) {
                Some(slot) => slot.get_or_insert_with(|| hostcall::request_header(name)).as_deref().map(Cow::Borrowed),
                None => hostcall::request_header(name).map(Cow::Owned),
            };
        }
        match self.map().map(|m| m.get(name)) {
            Some(Some(value)) => Some(Cow::Borrowed(value)),
            Some(None) if !name.starts_with(':') => None,
            // Pseudo-headers a host keeps out of its map, or no map at all: ask for this one.
            _ => hostcall::request_header(name).map(Cow::Owned),
        }
    }

    fn cluster(&mut self) -> Option<String> {
        property_string(b"xds\0cluster_name").or_else(|| property_string(b"cluster_name"))
    }

    fn port(&mut self) -> Option<u16> {
        property_port()
    }
}

/// A property as text (bytes that are not UTF-8 replaced), None when absent or empty.
pub(crate) fn property_string(path: &[u8]) -> Option<String> {
    let bytes = hostcall::property(path)?;
    (!bytes.is_empty()).then(|| owned(bytes).into_owned())
}

/// `destination.port`: Envoy encodes integers as 8 bytes little-endian; other hosts give text.
pub(crate) fn property_port() -> Option<u16> {
    let bytes = hostcall::property(b"destination\0port")?;
    if let Ok(raw) = <[u8; 8]>::try_from(bytes.as_slice()) {
        return u16::try_from(u64::from_le_bytes(raw)).ok();
    }
    std::str::from_utf8(&bytes).ok()?.trim().parse().ok()
}

#[cold]
#[inline(never)]
fn fault_reply(status: u16, grpc_status: Option<u32>, fault: &str) -> Reply {
    let mut headers = vec![("x-ebb-fault", fault.to_string())];
    match grpc_status {
        Some(code) => {
            headers.push(("content-type", "application/grpc".to_string()));
            headers.push(("grpc-status", code.to_string()));
            headers.push(("grpc-message", "fault filter abort".to_string()));
            Reply { status: 200, headers, body: String::new() }
        }
        None => Reply { status: u32::from(status), headers, body: "fault filter abort".to_string() },
    }
}

#[cold]
#[inline(never)]
fn shed_reply(pool: &str, fault: &str) -> Reply {
    Reply {
        status: 503,
        headers: vec![("x-ebb-fault", fault.to_string()), ("x-envoy-overloaded", "true".to_string())],
        body: format!("upstream overflow: pool {pool} is over its drained capacity"),
    }
}

/// Carries out the part of a plan after any delay: the verdict, then admission. A slot taken
/// is written to `counted`.
fn settle(
    vm: &mut Vm,
    context_id: u32,
    pool: Option<usize>,
    counted: &mut Option<Slot>,
    verdict: Verdict,
    admission: Admission,
    now: u64,
) -> Outcome {
    match verdict {
        Verdict::Abort { status, grpc_status, fault } => {
            vm.metrics.add(GlobalMetric::Aborted, 1);
            if let Some(p) = pool {
                vm.metrics.pool_add(p, PoolMetric::Aborted, 1);
            }
            return Outcome::Reply(fault_reply(status, grpc_status, &fault));
        }
        Verdict::Blackhole { fault } | Verdict::Close { fault } => {
            if let Some(p) = pool {
                vm.metrics.pool_add(p, PoolMetric::Blackholed, 1);
            }
            return Outcome::Reply(blackhole_reply(fault));
        }
        Verdict::Forward => {}
    }
    let Admission::Limited { pool: index, capacity, .. } = admission else {
        return Outcome::Forward;
    };
    match slots::take(&vm.metrics, index, capacity) {
        Taken::Slot(slot) => {
            *counted = Some(slot);
            Outcome::Forward
        }
        Taken::Uncounted => Outcome::Forward,
        Taken::Full => over_capacity(vm, context_id, pool, admission, now),
    }
}

/// A request the drained pool has no slot for: queued if the drain has a queue with room, shed
/// otherwise. Out of line: admitted requests (the common case) never run it.
#[cold]
#[inline(never)]
fn over_capacity(vm: &mut Vm, context_id: u32, pool: Option<usize>, admission: Admission, now: u64) -> Outcome {
    let Admission::Limited { pool: index, capacity, queue, fault } = admission else { return Outcome::Forward };
    let waiting = vm.pending.iter().filter(|p| matches!(p.wait, Wait::Queue { .. })).count();
    let fault = vm.engine.as_ref().map(|e| e.fault_id(fault).to_string()).unwrap_or_default();
    match queue {
        Some(q) if (waiting as u64) < u64::from(q.max) => {
            vm.metrics.pool_add(index, PoolMetric::Queued, 1);
            vm.pending.push(Pending {
                context_id,
                due: now,
                wait: Wait::Queue { pool: index, capacity, deadline: now.saturating_add(q.timeout.as_millis()), fault },
                pool,
            });
            Outcome::Wait
        }
        _ => {
            vm.metrics.pool_add(index, PoolMetric::Shed, 1);
            Outcome::Reply(shed_reply(pool_name(vm, index), &fault))
        }
    }
}

/// What a request sent to a drained host in blackhole mode gets: Envoy's answer to a dead upstream.
#[cold]
#[inline(never)]
fn blackhole_reply(fault: String) -> Reply {
    Reply {
        status: 503,
        headers: vec![("x-ebb-fault", fault)],
        body: "upstream connect error or disconnect/reset before headers. reset reason: connection failure".to_string(),
    }
}

fn pool_name(vm: &Vm, index: usize) -> &str {
    vm.engine.as_ref().and_then(|e| e.config().pools.get(index)).map_or("", |p| p.name.as_str())
}

/// Wakes delayed requests whose time came and queued requests that got a slot or timed out.
/// Host calls happen with the VM state released, on each request's own context.
pub(crate) fn run_pending(vm: &Rc<RefCell<Vm>>, now: u64) {
    let mut actions: Vec<(u32, Outcome)> = Vec::new();
    {
        let mut guard = vm.borrow_mut();
        let vm = &mut *guard;
        let pending = std::mem::take(&mut vm.pending);
        let mut full = false;
        for p in pending {
            match p.wait {
                Wait::Delay { .. } if p.due > now => vm.pending.push(p),
                Wait::Delay { action, admission } => {
                    let mut counted = None;
                    let outcome = settle(vm, p.context_id, p.pool, &mut counted, action, admission, now);
                    if let Some(slot) = counted {
                        vm.late_slots.push((p.context_id, slot));
                    }
                    if !matches!(outcome, Outcome::Wait) {
                        actions.push((p.context_id, outcome));
                    }
                }
                Wait::Queue { pool, capacity, deadline, ref fault } => {
                    let admitted = if full { Taken::Full } else { slots::take(&vm.metrics, pool, capacity) };
                    match admitted {
                        Taken::Slot(slot) => {
                            vm.late_slots.push((p.context_id, slot));
                            actions.push((p.context_id, Outcome::Forward));
                        }
                        Taken::Uncounted => actions.push((p.context_id, Outcome::Forward)),
                        Taken::Full if now >= deadline => {
                            full = true;
                            vm.metrics.pool_add(pool, PoolMetric::Shed, 1);
                            actions.push((p.context_id, Outcome::Reply(shed_reply(pool_name(vm, pool), fault))));
                        }
                        Taken::Full => {
                            full = true;
                            vm.pending.push(p);
                        }
                    }
                }
            }
        }
    }
    for (context_id, outcome) in actions {
        if !hostcall::set_effective_context(context_id) {
            continue; // the stream is gone
        }
        match outcome {
            Outcome::Forward => hostcall::resume_request(),
            Outcome::Reply(reply) => {
                if !reply.send() {
                    hostcall::resume_request();
                }
            }
            Outcome::Wait => {}
        }
    }
}

/// Holds a delayed request until `due`; the root's timer resumes it (see `run_pending`). Its
/// period was set once, at configure, so nothing here touches it. Out of line (cold): most
/// requests are not delayed.
#[cold]
#[inline(never)]
fn hold(vm: &mut Vm, context_id: u32, pool: Option<usize>, due: u64, action: Verdict, admission: Admission) {
    vm.metrics.add(GlobalMetric::Delayed, 1);
    if let Some(p) = pool {
        vm.metrics.pool_add(p, PoolMetric::Delayed, 1);
    }
    vm.pending.push(Pending { context_id, due, wait: Wait::Delay { action, admission }, pool });
}

pub(crate) struct Http {
    context_id: u32,
    vm: Rc<RefCell<Vm>>,
    req: ReqState,
}

impl Http {
    pub fn new(context_id: u32, vm: Rc<RefCell<Vm>>) -> Self {
        Http { context_id, vm, req: ReqState::default() }
    }
}

impl Context for Http {}

impl HttpContext for Http {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let mut lazy = Lazy::new(self.vm.borrow().headers_at_once);
        // Control calls and look-alikes of the control path are answered here, never forwarded;
        // every other request leaves without ebb's signature, timestamp and command headers.
        if let Some(reply) = control::intercept(&self.vm, &mut lazy, end_of_stream) {
            reply.send();
            return Action::Pause;
        }
        if self.vm.borrow().engine.is_none() {
            return Action::Continue;
        }
        let mut guard = self.vm.borrow_mut();
        let vm = &mut *guard;
        let Some(engine) = vm.engine.as_mut() else { return Action::Continue };
        let pool = engine.match_pool(Protocol::Http, &mut lazy);
        // With no fault installed (and no header faults) the plan is a pass: the clock, a
        // hostcall, is read only when a fault may act.
        let now = if engine.may_act_http() { now_ms() } else { 0 };
        let plan = engine.decide_http(now, pool, &mut lazy);
        self.req.pool = pool;
        if let Some(p) = pool {
            self.req.completes = vm.metrics.pool_id(p, PoolMetric::Completed);
            vm.metrics.pool_add(p, PoolMetric::Requests, 1);
        }
        if let Some((delay, _fault)) = plan.delay {
            hold(vm, self.context_id, pool, now.saturating_add(delay.as_millis()), plan.action, plan.admission);
            return Action::Pause;
        }
        let outcome = settle(vm, self.context_id, pool, &mut self.req.counted, plan.action, plan.admission, now);
        drop(guard);
        match outcome {
            Outcome::Forward => Action::Continue,
            Outcome::Wait => Action::Pause,
            // A refused reply must not leave the request paused for ever: let it through.
            Outcome::Reply(reply) if reply.send() => Action::Pause,
            Outcome::Reply(_) => Action::Continue,
        }
    }

    fn on_log(&mut self) {
        let mut vm = self.vm.borrow_mut();
        vm.pending.retain(|p| p.context_id != self.context_id);
        increment(self.req.completes.take(), 1);
        let counted = self.req.counted.take().or_else(|| {
            let at = vm.late_slots.iter().position(|(id, _)| *id == self.context_id)?;
            Some(vm.late_slots.swap_remove(at).1)
        });
        if let Some(slot) = counted {
            slot.free();
        }
    }
}
