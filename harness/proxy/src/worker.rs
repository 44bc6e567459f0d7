// One worker thread of ebb proxy, as an Envoy worker: its own event loop (a current-thread tokio
// runtime), its own VM of every Wasm filter, and every connection it accepts served to the end.

use std::cell::RefCell;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ebb_host::{int_value, HeaderMap, Proxy, Step, StreamId};
use http_body_util::BodyExt;
use hyper::body::{Body as _, Frame, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{oneshot, watch};

use crate::body::{Aborted, ChunkSender, ProxyBody};
use crate::bootstrap::{HttpFilter, HttpManager, ListenerKind, RouteAction};
use crate::direct::{Head, Refused, X_EXPECTED_TIMEOUT, X_FORWARDED_PROTO, X_REQUEST_ID};
use crate::filters::print_logs;
use crate::pool::{Failed, Pool, UpstreamBody};
use crate::route;
use crate::server::Shared;

/// How often a worker fires its VMs' due ticks and checks paused streams: the precision of
/// timers such as delay faults.
const TICK_EVERY: Duration = Duration::from_millis(5);
/// Envoy's route timeout default (15 s) and stream idle timeout default (5 min).
const DEFAULT_ROUTE_TIMEOUT: Duration = Duration::from_secs(15);
const STREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// How long the rest of a request body answered early (413, a filter's reply) is read and dropped.
const DRAIN_UNREAD: Duration = Duration::from_secs(5);
const RESET_BEFORE_HEADERS: &str =
    "upstream connect error or disconnect/reset before headers. reset reason: connection failure";

type Body = ProxyBody;

/// A paused stream waiting for its filter to resume it.
struct Waiter {
    filter: usize,
    id: StreamId,
    tx: oneshot::Sender<Step>,
}

pub struct Worker {
    pub index: usize,
    filters: RefCell<Vec<Proxy>>,
    waiters: RefCell<Vec<Waiter>>,
    shared: Arc<Shared>,
    /// The worker's upstream connections.
    pool: Rc<Pool>,
}

/// Runs worker `index` on this thread until shutdown and the drain of its connections.
pub fn run(index: usize, filters: Vec<Proxy>, shared: Arc<Shared>, listeners: Vec<std::net::TcpListener>) {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ebb proxy: worker {index}: cannot start its event loop: {e}");
            shared.stop();
            return;
        }
    };
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async move {
        let worker = Rc::new(Worker {
            index,
            filters: RefCell::new(filters),
            waiters: RefCell::new(Vec::new()),
            shared: shared.clone(),
            pool: Rc::new(Pool::default()),
        });
        // An item queued for one of this worker's VMs, from any thread, wakes its loop at once.
        let queued = Arc::new(tokio::sync::Notify::new());
        for proxy in worker.filters.borrow().iter() {
            let queued = queued.clone();
            proxy.set_queue_waker(move || queued.notify_one());
        }
        let ticker = tokio::task::spawn_local(tick_loop(worker.clone(), queued));
        let mut accepts = Vec::new();
        for (i, listener) in listeners.into_iter().enumerate() {
            let listener = match listener.try_clone().and_then(|l| {
                l.set_nonblocking(true)?;
                tokio::net::TcpListener::from_std(l)
            }) {
                Ok(l) => l,
                Err(e) => {
                    eprintln!("ebb proxy: worker {index}: listener {}: {e}", shared.bootstrap.listeners[i].name);
                    shared.stop();
                    return;
                }
            };
            accepts.push(tokio::task::spawn_local(accept_loop(worker.clone(), i, listener)));
        }
        for a in accepts {
            let _ = a.await;
        }
        // Draining: in-flight connections finish within the drain time, then the loop ends.
        let deadline = tokio::time::Instant::now() + shared.drain_time;
        while shared.connections.load(Ordering::Acquire) > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        ticker.abort();
    });
}

async fn tick_loop(worker: Rc<Worker>, queued: Arc<tokio::sync::Notify>) {
    let mut every = tokio::time::interval(TICK_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let thread = format!("worker_{}", worker.index);
    let mut ticks = 0u32;
    loop {
        tokio::select! {
            _ = every.tick() => ticks = ticks.wrapping_add(1),
            _ = queued.notified() => {}
        }
        // About once a second: connections to endpoints DNS took out of their cluster.
        if ticks.is_multiple_of(200) {
            worker.pool.forget_removed(&worker.shared.upstreams);
        }
        {
            let mut filters = worker.filters.borrow_mut();
            for (i, proxy) in filters.iter_mut().enumerate() {
                for e in proxy.tick() {
                    eprintln!("[error][{thread}] {e}");
                }
                print_logs(proxy, &worker.shared.worker_labels[i], &thread);
            }
        }
        worker.wake_resumed();
    }
}

impl Worker {
    /// Hands every paused stream that its filter resumed (or ended) its step.
    fn wake_resumed(&self) {
        let mut waiters = self.waiters.borrow_mut();
        if waiters.is_empty() {
            return;
        }
        let mut filters = self.filters.borrow_mut();
        let mut still = Vec::with_capacity(waiters.len());
        for w in waiters.drain(..) {
            if w.tx.is_closed() {
                continue;
            }
            let step = match filters[w.filter].http_stream(w.id) {
                Some(mut http) => http.resume(),
                None => Step::Closed { details: "stream gone".into() },
            };
            match step {
                Step::Pause => still.push(w),
                other => {
                    let _ = w.tx.send(other);
                }
            }
        }
        *waiters = still;
    }

    /// Waits until the filter resumes a paused stream, or the stream idle timeout.
    async fn resumed(&self, filter: usize, id: StreamId) -> Step {
        let (tx, rx) = oneshot::channel();
        self.waiters.borrow_mut().push(Waiter { filter, id, tx });
        match tokio::time::timeout(STREAM_IDLE_TIMEOUT, rx).await {
            Ok(Ok(step)) => step,
            _ => Step::Closed { details: "stream_idle_timeout".into() },
        }
    }
}

async fn accept_loop(worker: Rc<Worker>, listener_index: usize, listener: tokio::net::TcpListener) {
    let mut stop = worker.shared.shutdown.subscribe();
    let shared = worker.shared.clone();
    let spec = &shared.bootstrap.listeners[listener_index];
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.changed() => return,
        };
        let (socket, peer) = match accepted {
            Ok(x) => x,
            Err(_) => continue,
        };
        let _ = socket.set_nodelay(true);
        shared.listener_stats[listener_index].downstream_cx_total.fetch_add(1, Ordering::Relaxed);
        shared.connections.fetch_add(1, Ordering::AcqRel);
        let worker = worker.clone();
        let stop = worker.shared.shutdown.subscribe();
        let local = spec.address;
        match &spec.kind {
            ListenerKind::Http { .. } => {
                tokio::task::spawn_local(async move {
                    serve_http(worker.clone(), listener_index, socket, peer, local, stop).await;
                    worker.shared.connections.fetch_sub(1, Ordering::AcqRel);
                });
            }
            ListenerKind::Tcp { .. } => {
                tokio::task::spawn_local(async move {
                    serve_tcp(worker.clone(), listener_index, socket, peer).await;
                    worker.shared.connections.fetch_sub(1, Ordering::AcqRel);
                });
            }
        }
    }
}

/// A hyper executor for the worker's thread-local tasks (HTTP/2 streams).
#[derive(Clone, Copy)]
struct LocalExec;

impl<F> hyper::rt::Executor<F> for LocalExec
where
    F: std::future::Future + 'static,
{
    fn execute(&self, fut: F) {
        tokio::task::spawn_local(fut);
    }
}

async fn serve_http(
    worker: Rc<Worker>,
    listener: usize,
    socket: tokio::net::TcpStream,
    peer: SocketAddr,
    local: SocketAddr,
    mut stop: watch::Receiver<bool>,
) {
    // The connection's addresses as the filters read them, formatted once per connection.
    let addresses = Rc::new(Addresses {
        source: peer.to_string(),
        destination: local.to_string(),
        port: int_value(i64::from(local.port())),
    });
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let (worker, addresses) = (worker.clone(), addresses.clone());
        async move { Ok::<_, Infallible>(handle(worker, listener, req, &addresses).await) }
    });
    let builder = hyper_util::server::conn::auto::Builder::new(LocalExec);
    let conn = builder.serve_connection(TokioIo::new(socket), service);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = stop.changed() => {
            // Draining: finish the requests in flight on this connection, accept no more.
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

fn text_response(status: u16, body: &str, extra: &[(&str, &str)]) -> Response<Body> {
    let mut builder = Response::builder().status(status);
    if !body.is_empty() {
        builder = builder.header("content-type", "text/plain");
    }
    for (k, v) in extra {
        builder = builder.header(*k, *v);
    }
    builder.body(ProxyBody::whole(Bytes::from(body.to_string()))).unwrap_or_else(|_| Response::new(ProxyBody::empty()))
}

/// Streams of one exchange that are open in the filters, finished (on_log) when the exchange
/// ends however it ends: answered (its body sent to the end), failed, or dropped because the
/// client went away.
struct Open {
    worker: Rc<Worker>,
    streams: Vec<(usize, StreamId)>,
}

impl Open {
    /// Finishes the streams of `filter` and of every filter after it: a reply made there goes
    /// back through the filters before it only, as Envoy's local replies do.
    fn cut_at(&mut self, filter: usize) {
        if let Some(at) = self.streams.iter().position(|(f, _)| *f == filter) {
            for (f, id) in self.streams.split_off(at) {
                finish(&self.worker, f, id);
            }
        }
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        let Ok(mut filters) = self.worker.filters.try_borrow_mut() else { return };
        for (filter, id) in self.streams.drain(..) {
            if let Some(http) = filters[filter].http_stream(id) {
                let _ = http.finish();
            }
        }
    }
}

/// The request after the connection manager. With a Wasm filter on the listener, in the host's
/// map as the filters see it (pseudo-headers first, as Envoy's codec presents them; bytes from
/// the client to the upstream, no text copies); without, on hyper's map (`direct`), the same
/// request without the round trip through the host's map.
// One per request, held in its future and never in a collection: boxing the larger variant
// would cost the direct path an allocation per request for nothing.
#[allow(clippy::large_enum_variant)]
enum Exchange {
    Host { headers: HeaderMap, path: String, spare: hyper::HeaderMap },
    Direct(Head),
}

impl Exchange {
    /// A header as the filters see it (route and RBAC matchers).
    fn header(&self, name: &str) -> Option<String> {
        match self {
            Exchange::Host { headers, .. } => headers.get_str(name),
            Exchange::Direct(head) => head.header(name),
        }
    }

    /// The normalised path the route is chosen by.
    fn path(&self) -> &str {
        match self {
            Exchange::Host { path, .. } => path,
            Exchange::Direct(head) => head.path(),
        }
    }

    fn authority(&self) -> std::borrow::Cow<'_, str> {
        match self {
            Exchange::Host { headers, .. } => String::from_utf8_lossy(headers.get(b":authority").unwrap_or_default()),
            Exchange::Direct(head) => head.authority(),
        }
    }
}

/// A downstream connection's addresses, as the `source.*` and `destination.*` properties.
struct Addresses {
    source: String,
    destination: String,
    port: Vec<u8>,
}

/// What answers a request: a response the proxy or a filter made whole, or the upstream's
/// headers with its body still to come.
enum Answer {
    Local(HeaderMap, Bytes),
    /// The upstream's response in the host's map for the filters, with its head as hyper read
    /// it (hop-by-hop headers removed): sent as it is when no filter changes the headers.
    Upstream(HeaderMap, hyper::http::response::Parts, UpstreamBody),
    /// The upstream's response as hyper read it, for a route with no Wasm filter: passed on as
    /// it is (hop-by-hop headers removed), with no header map conversion either way.
    Direct(hyper::http::response::Parts, UpstreamBody),
}

/// Why the request body's pump stopped the exchange before the upstream answered.
enum Stop {
    /// Filter `filter` answered (a local reply, a fail-closed 503, or 413 over the buffer limit).
    Reply {
        filter: usize,
        headers: HeaderMap,
        body: Bytes,
    },
    Reset,
}

async fn handle(worker: Rc<Worker>, listener: usize, req: Request<Incoming>, addresses: &Addresses) -> Response<Body> {
    let shared = worker.shared.clone();
    let started = tokio::time::Instant::now();
    let ListenerKind::Http { manager, .. } = &shared.bootstrap.listeners[listener].kind else {
        return text_response(500, "not an HTTP listener", &[]);
    };
    let response = exchange(&worker, listener, manager, req, addresses).await;
    let elapsed = started.elapsed().as_secs_f64() * 1000.0;
    shared.http_stats[listener].record(response.status().as_u16(), elapsed);
    response
}

async fn exchange(
    worker: &Rc<Worker>,
    listener: usize,
    manager: &HttpManager,
    req: Request<Incoming>,
    addresses: &Addresses,
) -> Response<Body> {
    let shared = worker.shared.clone();
    let (mut parts, body) = req.into_parts();
    let end_of_request = body.is_end_stream();
    let raw_path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let Some(path) = route::normalize(raw_path, manager.normalize_path, manager.merge_slashes) else {
        return text_response(400, "Bad Request", &[]);
    };
    // Envoy's connection manager before any filter (ebb-host's, as `ebb request` plays it): the
    // codec's header order, Host as :authority, hop-by-hop and internal headers dropped,
    // x-forwarded-proto and x-request-id added, a request with no host refused. With no Wasm
    // filter to see the request, the same on hyper's map (`direct`, held to the host's by tests).
    let n = shared.next_request();
    let mut ex = if manager.http_filters.iter().any(|f| matches!(f, HttpFilter::Wasm(_))) {
        let mut given: Vec<(&[u8], &[u8])> = Vec::with_capacity(parts.headers.len() + 3);
        if let Some(a) = parts.uri.authority() {
            given.push((b":authority", a.as_str().as_bytes()));
        }
        given.push((b":path", path.as_bytes()));
        given.push((b":method", parts.method.as_str().as_bytes()));
        given.extend(parts.headers.iter().map(|(k, v)| (k.as_str().as_bytes(), v.as_bytes())));
        match shared.connection_manager.decode_request(n, &given) {
            Ok(headers) => {
                // hyper's map, emptied: its room is reused for the request the router sends.
                let mut spare = std::mem::take(&mut parts.headers);
                spare.clear();
                Exchange::Host { headers, path, spare }
            }
            Err(reply) => {
                let body = String::from_utf8_lossy(&reply.body);
                return text_response(u16::try_from(reply.status).unwrap_or(400), &body, &[]);
            }
        }
    } else {
        match Head::decode(&shared.connection_manager, n, &parts, path, end_of_request) {
            Ok(head) => Exchange::Direct(head),
            Err(Refused(status, body)) => return text_response(status, body, &[]),
        }
    };
    // The request's head shares hyper's read buffer: let go of it before the first wait, so that
    // the connection's next read (hyper reads ahead for the next request) reuses that buffer
    // instead of allocating another.
    drop(parts);

    // The route is chosen before any filter runs (filters see `xds.cluster_name`).
    let chosen = {
        let lookup = |name: &str| ex.header(name);
        route::virtual_host(manager, &ex.authority())
            .and_then(|vh| route::route(vh, ex.path(), &lookup).map(|r| &r.action))
    };
    let Some(action) = chosen else {
        return text_response(404, "", &[]);
    };
    let cluster_name = match action {
        RouteAction::Cluster { name, .. } => Some(name.as_str()),
        RouteAction::DirectResponse { .. } => None,
    };

    let mut open = Open { worker: worker.clone(), streams: Vec::new() };
    let filter_base = shared.http_filter_base[listener];
    let limit = shared.bootstrap.listeners[listener].buffer_limit;
    let mut wasm_seen = 0;
    let mut reply: Option<(HeaderMap, Bytes)> = None;
    for filter in &manager.http_filters {
        match filter {
            HttpFilter::Rbac(rbac) => {
                let lookup = |name: &str| ex.header(name);
                let path_now = ex.header(":path").unwrap_or_default();
                if !route::rbac_allows(rbac, &path_now, &lookup) {
                    let denied = local_parts(403, "RBAC: access denied", &[]);
                    return respond_through(worker, open, Answer::Local(denied.0, denied.1), limit).await;
                }
            }
            HttpFilter::Wasm(_) => {
                let index = filter_base + wasm_seen;
                wasm_seen += 1;
                // A listener with a Wasm filter has its requests in the host's map.
                let Exchange::Host { headers, .. } = &mut ex else { continue };
                let run =
                    run_request_filter(worker, &mut open, index, headers, end_of_request, cluster_name, addresses);
                match run.await {
                    FilterOutcome::Continue => {}
                    FilterOutcome::Reply(headers, body) => {
                        reply = Some((headers, body));
                        break;
                    }
                    FilterOutcome::Reset => return text_response(503, "", &[]),
                }
            }
            HttpFilter::Router => {}
        }
    }
    let answer = match (reply, action) {
        (Some((headers, body)), _) => Answer::Local(headers, body),
        (None, RouteAction::DirectResponse { status, body }) => {
            let (headers, body) = local_parts(*status, body.as_deref().unwrap_or(""), &[]);
            Answer::Local(headers, body)
        }
        (None, RouteAction::Cluster { name, timeout }) => {
            // The request body as Envoy streams it: nothing, the client's body as it comes when
            // no filter is in the way, or each chunk through the filters as they let it go.
            let (upstream_body, verdict) = if end_of_request {
                (ProxyBody::empty(), None)
            } else if open.streams.is_empty() {
                (ProxyBody::peer(body), None)
            } else {
                let (tx, upstream_body) = ProxyBody::channel();
                let (verdict_tx, verdict) = oneshot::channel();
                let pump = pump_request(worker.clone(), open.streams.clone(), body, tx, verdict_tx, limit);
                tokio::task::spawn_local(pump);
                (upstream_body, Some(verdict))
            };
            let direct = open.streams.is_empty();
            let upstream = forward(worker, name, *timeout, ex, upstream_body, direct);
            match verdict {
                None => upstream.await,
                Some(mut verdict) => {
                    tokio::pin!(upstream);
                    // A filter's answer on the request body wins over the upstream's.
                    let stopped = tokio::select! {
                        biased;
                        v = &mut verdict => v.ok(),
                        a = &mut upstream => return respond_through(worker, open, a, limit).await,
                    };
                    match stopped {
                        None => upstream.await,
                        Some(Stop::Reset) => return text_response(503, "", &[]),
                        Some(Stop::Reply { filter, headers, body }) => {
                            open.cut_at(filter);
                            Answer::Local(headers, body)
                        }
                    }
                }
            }
        }
    };
    respond_through(worker, open, answer, limit).await
}

enum FilterOutcome {
    Continue,
    /// The filter answered (local reply, after its own response callbacks): the response to
    /// run back through the filters before it.
    Reply(HeaderMap, Bytes),
    Reset,
}

/// A response the proxy makes itself (RBAC, router errors, direct responses), as the headers and
/// body that then run back through the filters.
fn local_parts(status: u16, body: &str, extra: &[(&str, &str)]) -> (HeaderMap, Bytes) {
    let mut headers = HeaderMap::new();
    headers.add(b":status", status.to_string().as_bytes());
    if !body.is_empty() {
        headers.add(b"content-type", b"text/plain");
    }
    for (k, v) in extra {
        headers.add(k.as_bytes(), v.as_bytes());
    }
    (headers, Bytes::from(body.to_string()))
}

/// The properties `ebb proxy` sets on every stream, as Envoy knows them: converted to the ABI's
/// form once, not per request.
static STREAM_PROPERTIES: std::sync::LazyLock<[ebb_host::PropertyPath; 5]> = std::sync::LazyLock::new(|| {
    ["source.address", "destination.address", "destination.port", "xds.cluster_name", "cluster_name"]
        .map(ebb_host::PropertyPath::new)
});

/// Runs one Wasm filter's request headers; waits while it pauses. The body follows later, in
/// chunks (`pump_request`).
async fn run_request_filter(
    worker: &Rc<Worker>,
    open: &mut Open,
    filter: usize,
    request: &mut HeaderMap,
    end_of_request: bool,
    cluster: Option<&str>,
    addresses: &Addresses,
) -> FilterOutcome {
    let (id, mut step) = {
        let mut filters = worker.filters.borrow_mut();
        let proxy = &mut filters[filter];
        let Ok(w) = proxy.worker(0) else { return FilterOutcome::Continue };
        let mut http = w.http();
        let [source, destination, port, xds_cluster, cluster_name] = &*STREAM_PROPERTIES;
        http.set_properties(&[
            (source, addresses.source.as_bytes()),
            (destination, addresses.destination.as_bytes()),
            (port, &addresses.port),
        ]);
        if let Some(cluster) = cluster {
            http.set_properties(&[(xds_cluster, cluster.as_bytes()), (cluster_name, cluster.as_bytes())]);
        }
        let id = http.id();
        let step = http.request_header_map(request, end_of_request);
        (id, step)
    };
    open.streams.push((filter, id));
    if matches!(step, Step::Pause) {
        step = worker.resumed(filter, id).await;
    }
    let mut filters = worker.filters.borrow_mut();
    let Some(mut http) = filters[filter].http_stream(id) else { return FilterOutcome::Reset };
    match step {
        Step::Continue => {
            if let Some(headers) = http.request_headers_out() {
                request.clone_from(headers);
            }
            FilterOutcome::Continue
        }
        Step::LocalReply(_) | Step::Failed(_) | Step::Pause => match http.client_response() {
            Some(m) => {
                // This filter already ran its response callbacks on its reply.
                drop(filters);
                open.cut_at(filter);
                FilterOutcome::Reply(m.headers, Bytes::from(m.body))
            }
            // Envoy checks for failure right after each callback (cpp-host's CHECK_FAIL_HTTP):
            // fail-open lets the stream continue, fail-closed answers it with a local 503.
            None if matches!(step, Step::Failed(_)) && worker.shared.fail_open[filter] => FilterOutcome::Continue,
            None if matches!(step, Step::Failed(_)) => {
                drop(filters);
                open.cut_at(filter);
                let (headers, body) = local_parts(503, "", &[]);
                FilterOutcome::Reply(headers, body)
            }
            None => FilterOutcome::Reset,
        },
        Step::Closed { .. } => FilterOutcome::Reset,
    }
}

fn finish(worker: &Rc<Worker>, filter: usize, id: StreamId) {
    let mut filters = worker.filters.borrow_mut();
    if let Some(http) = filters[filter].http_stream(id) {
        let _ = http.finish();
    }
}

/// What one chunk of body came to after the filters.
enum Through {
    /// What the last filter let go (empty while one of them buffers), and the trailers that end
    /// the body after it, if any.
    Data(Bytes, Option<HeaderMap>),
    /// A filter buffered more than the buffer limit.
    Over(usize),
    /// A filter answered (local reply, or fail-closed).
    Reply(usize, HeaderMap, Bytes),
    Reset,
}

/// One body step of a filter's stream: request or response side.
fn body_step(worker: &Rc<Worker>, filter: usize, id: StreamId, request: bool, data: &[u8], eos: bool) -> Step {
    let mut filters = worker.filters.borrow_mut();
    match filters[filter].http_stream(id) {
        Some(mut http) if request => http.request_body(data, eos),
        Some(mut http) => http.response_body(data, eos),
        None => Step::Closed { details: "stream gone".into() },
    }
}

/// The trailers step of a filter's stream: request or response side.
fn trailers_step(worker: &Rc<Worker>, filter: usize, id: StreamId, request: bool, trailers: &HeaderMap) -> Step {
    let mut filters = worker.filters.borrow_mut();
    let pairs: Vec<(&[u8], &[u8])> = trailers.iter().collect();
    match filters[filter].http_stream(id) {
        Some(mut http) if request => http.request_trailers(&pairs),
        Some(mut http) => http.response_trailers(&pairs),
        None => Step::Closed { details: "stream gone".into() },
    }
}

/// The trailers a filter let go on one side (given ones as it left them, or ones it added at
/// the end of its body).
fn trailers_out(worker: &Rc<Worker>, filter: usize, id: StreamId, request: bool) -> Option<HeaderMap> {
    let mut filters = worker.filters.borrow_mut();
    let mut http = filters[filter].http_stream(id)?;
    if request {
        http.request_trailers_out()
    } else {
        http.response_trailers_out()
    }
}

/// Takes what the filter let go on one side, and says how much it still holds.
fn let_go(worker: &Rc<Worker>, filter: usize, id: StreamId, request: bool) -> (Bytes, usize) {
    let mut filters = worker.filters.borrow_mut();
    match filters[filter].http_stream(id) {
        Some(mut http) if request => (Bytes::from(http.take_request_body()), http.buffered_request()),
        Some(mut http) => (Bytes::from(http.take_response_body()), http.buffered_response()),
        None => (Bytes::new(), 0),
    }
}

/// How one filter's step on a chunk ended.
enum One {
    /// It let these bytes go on (and continued, or holds the rest).
    Out(Bytes),
    Stopped(Through),
}

/// Waits out one filter's step on the end of a stream or on a chunk: a pause mid-stream holds
/// the data (the filter sees it again with the next chunks), at the end it is waited for.
async fn settle_one(
    worker: &Rc<Worker>,
    filter: usize,
    id: StreamId,
    request: bool,
    mut step: Step,
    at_end: bool,
    limit: usize,
) -> One {
    loop {
        match step {
            Step::Pause => {
                let (out, held) = let_go(worker, filter, id, request);
                if held > limit {
                    return One::Stopped(Through::Over(filter));
                }
                if !at_end {
                    return One::Out(out);
                }
                // The end of the stream is in the filter's hands: wait for it to let go.
                step = worker.resumed(filter, id).await;
            }
            Step::Continue => return One::Out(let_go(worker, filter, id, request).0),
            Step::Failed(_) if worker.shared.fail_open[filter] => {
                return One::Out(let_go(worker, filter, id, request).0)
            }
            Step::LocalReply(_) | Step::Failed(_) => {
                let mut filters = worker.filters.borrow_mut();
                return One::Stopped(
                    match filters[filter].http_stream(id).and_then(|mut http| http.client_response()) {
                        Some(m) => Through::Reply(filter, m.headers, Bytes::from(m.body)),
                        None => Through::Reset,
                    },
                );
            }
            Step::Closed { .. } => return One::Stopped(Through::Reset),
        }
    }
}

/// One chunk of body (and the trailers that end it, if they came) through the filters in
/// `streams` order, as Envoy's filter chain passes data: a filter that continues lets it go on,
/// one that pauses (StopIterationAndBuffer) holds it and sees it again with the next chunks, up
/// to `limit` bytes held; at the end of the stream a paused filter is waited for. Trailers go to
/// each filter's `on_*_trailers` after its body; trailers a filter adds in its last body
/// callback go to the filters after it (Envoy's `addDecodedTrailers`).
async fn through_body(
    worker: &Rc<Worker>,
    streams: &[(usize, StreamId)],
    request: bool,
    chunk: Chunk,
    limit: usize,
) -> Through {
    let Chunk { mut data, eos, mut trailers } = chunk;
    for &(filter, id) in streams {
        if data.is_empty() && !eos {
            break;
        }
        let body_eos = eos && trailers.is_none();
        if !data.is_empty() || body_eos {
            let step = body_step(worker, filter, id, request, &data, body_eos);
            data = match settle_one(worker, filter, id, request, step, body_eos, limit).await {
                One::Out(out) => out,
                One::Stopped(stop) => return stop,
            };
            if body_eos {
                trailers = trailers_out(worker, filter, id, request);
                continue;
            }
        }
        let Some(given) = trailers.take() else { continue };
        let step = trailers_step(worker, filter, id, request, &given);
        let released = match settle_one(worker, filter, id, request, step, true, limit).await {
            One::Out(out) => out,
            One::Stopped(stop) => return stop,
        };
        // What the filter held of the body goes on before its trailers.
        if !released.is_empty() {
            data = if data.is_empty() { released } else { [data, released].concat().into() };
        }
        trailers = trailers_out(worker, filter, id, request);
    }
    Through::Data(data, trailers)
}

/// A piece of a peer's body: data, whether it ends the body, and the trailers that end it.
struct Chunk {
    data: Bytes,
    eos: bool,
    trailers: Option<HeaderMap>,
}

/// The next piece of a peer's body; Err if the peer reset.
async fn next_chunk<B: hyper::body::Body<Data = Bytes> + Unpin>(body: &mut B) -> Result<Chunk, ()> {
    let end = Chunk { data: Bytes::new(), eos: true, trailers: None };
    match body.frame().await {
        None => Ok(end),
        Some(Err(_)) => Err(()),
        Some(Ok(frame)) => match frame.into_data() {
            Ok(data) => Ok(Chunk { data, eos: body.is_end_stream(), trailers: None }),
            Err(frame) => match frame.into_trailers() {
                Ok(map) => {
                    let mut trailers = HeaderMap::new();
                    for (k, v) in &map {
                        trailers.add(k.as_str().as_bytes(), v.as_bytes());
                    }
                    Ok(Chunk { trailers: Some(trailers), ..end })
                }
                Err(_) => Ok(end),
            },
        },
    }
}

/// The frames that end a body: its last data, then its trailers (names and values the peer
/// would refuse are left out).
fn end_frames(data: Bytes, trailers: Option<HeaderMap>) -> Vec<Frame<Bytes>> {
    let mut frames = Vec::with_capacity(2);
    if !data.is_empty() {
        frames.push(Frame::data(data));
    }
    if let Some(trailers) = trailers {
        let mut map = hyper::HeaderMap::new();
        for (k, v) in trailers.iter() {
            if let (Ok(k), Ok(v)) =
                (hyper::header::HeaderName::from_bytes(k), hyper::header::HeaderValue::from_bytes(v))
            {
                map.append(k, v);
            }
        }
        frames.push(Frame::trailers(map));
    }
    frames
}

/// Sends `frames` down a streamed body; false once its reader has gone (the peer left).
async fn send_frames(tx: &ChunkSender, frames: Vec<Frame<Bytes>>) -> bool {
    for frame in frames {
        if tx.send(Ok(frame)).await.is_err() {
            return false;
        }
    }
    true
}

/// Streams the client's request body through the filters to the upstream, chunk by chunk.
/// A filter that answers on the body, or that buffers past the limit (413), stops the
/// exchange through `verdict`; the upstream's body is then cut short.
async fn pump_request(
    worker: Rc<Worker>,
    streams: Vec<(usize, StreamId)>,
    mut body: Incoming,
    tx: ChunkSender,
    verdict: oneshot::Sender<Stop>,
    limit: usize,
) {
    let stop = loop {
        let Ok(chunk) = next_chunk(&mut body).await else {
            break Stop::Reset;
        };
        let eos = chunk.eos;
        match through_body(&worker, &streams, true, chunk, limit).await {
            Through::Data(out, trailers) => {
                if !send_frames(&tx, end_frames(out, trailers)).await {
                    return;
                }
                if eos {
                    return;
                }
            }
            Through::Over(filter) => {
                let (headers, body) = local_parts(413, "Payload Too Large", &[]);
                break Stop::Reply { filter, headers, body };
            }
            Through::Reply(filter, headers, body) => break Stop::Reply { filter, headers, body },
            Through::Reset => break Stop::Reset,
        }
    };
    let _ = verdict.send(stop);
    // An upstream body that merely ended would look complete to a chunked upstream: abort it.
    let _ = tokio::time::timeout(Duration::from_secs(1), tx.send(Err(Aborted("request stopped by a filter")))).await;
    drop(tx);
    // The rest of the upload is read and dropped for a while, so that the client, still
    // writing, reads the answer instead of a reset.
    let _ = tokio::time::timeout(DRAIN_UNREAD, async {
        while let Ok(Chunk { eos: false, .. }) = next_chunk(&mut body).await {}
    })
    .await;
}

/// The router: the request to one endpoint of the cluster, with Envoy's errors. The upstream's
/// body is not read here: it streams on from `respond_through`.
async fn forward(
    worker: &Rc<Worker>,
    cluster: &str,
    timeout: Option<Duration>,
    ex: Exchange,
    body: ProxyBody,
    direct: bool,
) -> Answer {
    let local = |status, text, extra| {
        let (headers, body) = local_parts(status, text, extra);
        Answer::Local(headers, body)
    };
    let shared = worker.shared.clone();
    let Some(index) = shared.upstreams.iter().position(|u| u.name == cluster) else {
        return local(503, "no healthy upstream", &[]);
    };
    let upstream = &shared.upstreams[index];
    let claim = match upstream.claim() {
        Ok(c) => c,
        Err(crate::cluster::NoClaim::NoEndpoint) => return local(503, "no healthy upstream", &[]),
        Err(crate::cluster::NoClaim::Overflow) => {
            return local(
                503,
                "upstream connect error or disconnect/reset before headers. reset reason: overflow",
                &[("x-envoy-overloaded", "true")],
            )
        }
    };
    // The router's timeout headers (Envoy's `FilterUtility::finalTimeout`): a filter's
    // x-envoy-upstream-rq-timeout-ms replaces the route's (only a filter can set it: the
    // connection manager drops a client's); 0 is none, for either.
    let route = timeout.unwrap_or(DEFAULT_ROUTE_TIMEOUT);
    let from_filter = match &ex {
        Exchange::Host { headers, .. } => headers.get_str("x-envoy-upstream-rq-timeout-ms"),
        Exchange::Direct(_) => None,
    };
    let timeout = match from_filter.and_then(|v| v.trim().parse::<u64>().ok()) {
        Some(0) => STREAM_IDLE_TIMEOUT,
        Some(ms) => Duration::from_millis(ms),
        None if route.is_zero() => STREAM_IDLE_TIMEOUT,
        None => route,
    };
    // A whole body's length is hyper's to set; a streamed one keeps the client's, unless
    // trailers are declared: HTTP/1.1 carries them only in a chunked body.
    // The request's map, once sent, holds the response for the filters: its room is reused.
    let mut response_map = None;
    let request = match ex {
        Exchange::Host { mut headers, spare, .. } => {
            let router = ebb_host::ConnectionManager { route_timeout: route, ..shared.connection_manager.clone() };
            router.route_in_place(&mut headers);
            let drop_length = body.is_whole() || headers.get(b"trailer").is_some();
            let request = upstream_request(&headers, spare, body, drop_length);
            response_map = Some(headers);
            request
        }
        Exchange::Direct(head) => head.into_request(body, u64::try_from(route.as_millis()).unwrap_or(u64::MAX)),
    };
    let Some(request) = request else {
        return local(400, "Bad Request", &[]);
    };
    let started = tokio::time::Instant::now();
    let result = tokio::time::timeout(timeout, worker.pool.send(upstream, index, claim.address(), request)).await;
    let elapsed = started.elapsed().as_secs_f64() * 1000.0;
    let stats = &upstream.stats;
    match result {
        Err(_) => {
            stats.rq_timeout.fetch_add(1, Ordering::Relaxed);
            stats.rq.record(504, elapsed);
            local(504, "upstream request timeout", &[])
        }
        // Envoy answers a connect timeout as a connection failure too (`onPoolFailure`).
        Ok(Err(Failed::Connect | Failed::Reset)) => {
            stats.rq.record(503, elapsed);
            local(503, RESET_BEFORE_HEADERS, &[])
        }
        Ok(Ok((response, lease))) => {
            let (mut parts, body) = response.into_parts();
            let body = UpstreamBody::new(body, lease, claim);
            stats.rq.record(parts.status.as_u16(), elapsed);
            parts.headers.remove(hyper::header::TRANSFER_ENCODING);
            parts.headers.remove(hyper::header::CONNECTION);
            parts.version = hyper::Version::default();
            parts.extensions = Default::default();
            if direct {
                return Answer::Direct(parts, body);
            }
            let size = parts.headers.iter().map(|(k, v)| k.as_str().len() + v.len()).sum::<usize>();
            let mut headers = response_map.unwrap_or_default();
            headers.clear();
            headers.reserve(size + 10, parts.headers.len() + 1);
            headers.add(b":status", parts.status.as_str().as_bytes());
            for (k, v) in &parts.headers {
                headers.add(k.as_str().as_bytes(), v.as_bytes());
            }
            Answer::Upstream(headers, parts, body)
        }
    }
}

/// The request the router sends, built in place (a builder moves its parts at every header) in
/// `room`, an empty map whose allocation is reused, or None if a header is not valid HTTP. Its
/// URI is the origin form the connection sends as it is.
fn upstream_request(
    given: &HeaderMap,
    room: hyper::HeaderMap,
    body: ProxyBody,
    drop_length: bool,
) -> Option<Request<Body>> {
    let mut request = Request::new(body);
    debug_assert!(room.is_empty());
    *request.headers_mut() = room;
    let (mut method, mut path) = (None, None);
    let skip = |k: &[u8]| matches!(k, b"host") || (drop_length && k == b"content-length");
    to_hyper(given, request.headers_mut(), skip, |k, value| match k {
        b":method" => {
            method = Some(value);
            None
        }
        b":path" => {
            path = Some(value);
            None
        }
        b":authority" => Some(hyper::header::HOST),
        _ => None,
    })?;
    if let Some(m) = method {
        *request.method_mut() = hyper::Method::from_bytes(&m).ok()?;
    }
    *request.uri_mut() = match path {
        Some(path) => hyper::Uri::from_maybe_shared(path).ok()?,
        None => hyper::Uri::from_static("/"),
    };
    Some(request)
}

/// Names the connection manager and router add to every request, as constants: parsing them
/// would copy each into an allocation of its own.
const ADDED_NAMES: [hyper::header::HeaderName; 3] = [X_FORWARDED_PROTO, X_REQUEST_ID, X_EXPECTED_TIMEOUT];

/// The host's map into hyper's: regular headers appended (hop-by-hop ones and those `skip`
/// names left out), pseudo-headers handed to `pseudo`, which may name the header the value goes
/// in as (`:authority` as `host`) in its place; None if a header is not valid HTTP. Every
/// value is a slice of one copy of them all, not an allocation each, and names hyper knows
/// (standard ones and `ADDED_NAMES`) are not copied at all.
fn to_hyper(
    given: &HeaderMap,
    out: &mut hyper::HeaderMap,
    skip: impl Fn(&[u8]) -> bool,
    mut pseudo: impl FnMut(&[u8], Bytes) -> Option<hyper::header::HeaderName>,
) -> Option<()> {
    use hyper::header::{HeaderName, HeaderValue};
    let mut data = bytes::BytesMut::with_capacity(given.iter().map(|(_, v)| v.len()).sum());
    for (_, v) in given.iter() {
        data.extend_from_slice(v);
    }
    let data = data.freeze();
    out.reserve(given.len());
    let mut at = 0;
    for (k, v) in given.iter() {
        let value = data.slice(at..at + v.len());
        at += v.len();
        if k.starts_with(b":") {
            if let Some(name) = pseudo(k, value.clone()) {
                out.insert(name, HeaderValue::from_maybe_shared(value).ok()?);
            }
        } else if !(matches!(k, b"transfer-encoding" | b"connection") || skip(k)) {
            let name = match ADDED_NAMES.iter().find(|n| n.as_str().as_bytes() == k) {
                Some(known) => known.clone(),
                None => HeaderName::from_bytes(k).ok()?,
            };
            out.append(name, HeaderValue::from_maybe_shared(value).ok()?);
        }
    }
    Some(())
}

/// The response's body while it goes back through the filters: whole, or the upstream's still
/// to stream.
enum Back {
    Whole(Bytes),
    Streamed(UpstreamBody),
}

/// Runs the response back through the filters that saw the request (last first) and builds
/// what the client gets. A whole body goes through at once; the upstream's streams through
/// chunk by chunk, and the filters' streams are finished when it ends.
async fn respond_through(worker: &Rc<Worker>, mut open: Open, answer: Answer, limit: usize) -> Response<Body> {
    let (mut headers, mut kept, mut body) = match answer {
        Answer::Local(headers, body) => (headers, None, Back::Whole(body)),
        Answer::Upstream(headers, parts, body) => (headers, Some(parts), Back::Streamed(body)),
        Answer::Direct(parts, body) => return Response::from_parts(parts, ProxyBody::Upstream(body)),
    };
    let streams: Vec<(usize, StreamId)> = open.streams.iter().rev().copied().collect();
    for &(filter, id) in &streams {
        let end = match &body {
            Back::Whole(b) => b.is_empty(),
            Back::Streamed(incoming) => incoming.is_end_stream(),
        };
        let mut step = {
            let mut filters = worker.filters.borrow_mut();
            match filters[filter].http_stream(id) {
                Some(mut http) => http.response_header_map(&headers, end),
                None => continue,
            }
        };
        if matches!(step, Step::Pause) {
            step = worker.resumed(filter, id).await;
        }
        if let (Step::Continue, Back::Whole(b)) = (&step, &body) {
            if !b.is_empty() {
                step = body_step(worker, filter, id, false, b, true);
                if matches!(step, Step::Pause) {
                    step = worker.resumed(filter, id).await;
                }
            }
        }
        if let Step::Closed { .. } = step {
            return text_response(503, "", &[]);
        }
        let mut filters = worker.filters.borrow_mut();
        if let Some(mut http) = filters[filter].http_stream(id) {
            if http.local_reply().is_some() {
                // A reply made here replaces the upstream's body, which is dropped unread.
                if let Some(m) = http.client_response() {
                    headers = m.headers;
                    kept = None;
                    body = Back::Whole(Bytes::from(m.body));
                }
            } else {
                let changed = http.response_headers_changed();
                if let Some(out) = http.response_headers_out() {
                    if changed {
                        headers.clone_from(out);
                        kept = None;
                    }
                    if matches!(body, Back::Whole(_)) {
                        body = Back::Whole(Bytes::from(http.take_response_body()));
                    }
                }
            }
        }
    }
    let mut upstream = match body {
        Back::Whole(bytes) => return client_head(&headers, kept, ProxyBody::whole(bytes)),
        Back::Streamed(incoming) if open.streams.is_empty() => {
            return client_head(&headers, kept, ProxyBody::Upstream(incoming));
        }
        // Nothing follows headers that ended the stream: the filters were told so.
        Back::Streamed(incoming) if incoming.is_end_stream() => {
            return client_head(&headers, kept, ProxyBody::empty());
        }
        Back::Streamed(incoming) => incoming,
    };
    // The headers wait for the first chunk the filters let go: a filter that buffers the whole
    // body over the limit still gets Envoy's 500 instead of a response cut short.
    let (first, ended) = loop {
        let Ok(chunk) = next_chunk(&mut upstream).await else {
            return text_response(503, "upstream reset after headers", &[]);
        };
        let eos = chunk.eos;
        match through_body(worker, &streams, false, chunk, limit).await {
            Through::Data(out, None) if eos => {
                return client_head(&headers, kept, ProxyBody::whole(out));
            }
            Through::Data(out, trailers) => {
                let frames = end_frames(out, trailers);
                if !frames.is_empty() {
                    break (frames, eos);
                }
            }
            Through::Over(_) => return text_response(500, "Internal Server Error", &[]),
            Through::Reply(_, headers, body) => return client_response(&headers, ProxyBody::whole(body)),
            Through::Reset => return text_response(503, "", &[]),
        }
    };
    let (tx, client_body) = ProxyBody::channel();
    let streams_left = std::mem::take(&mut open.streams);
    let worker = worker.clone();
    tokio::task::spawn_local(async move {
        // The streams are finished (on_log) when the body has gone, or the client went away.
        let open = Open { worker: worker.clone(), streams: streams_left };
        if !send_frames(&tx, first).await {
            return;
        }
        if ended {
            return;
        }
        loop {
            let Ok(chunk) = next_chunk(&mut upstream).await else {
                let _ = tx.send(Err(Aborted("upstream reset"))).await;
                return;
            };
            let eos = chunk.eos;
            match through_body(&worker, &streams, false, chunk, limit).await {
                Through::Data(out, trailers) => {
                    if !send_frames(&tx, end_frames(out, trailers)).await {
                        return;
                    }
                    if eos {
                        drop(open);
                        return;
                    }
                }
                // The headers went out: Envoy resets the stream.
                Through::Over(_) | Through::Reply(..) | Through::Reset => {
                    let _ = tx.send(Err(Aborted("response stopped by a filter"))).await;
                    return;
                }
            }
        }
    });
    client_head(&headers, kept, client_body)
}

/// The client's response: the upstream's head as hyper read it (`kept`) when no filter changed
/// the headers, else built from the filters' map. A whole body's length is hyper's to set either
/// way.
fn client_head(headers: &HeaderMap, kept: Option<hyper::http::response::Parts>, body: ProxyBody) -> Response<Body> {
    match kept {
        Some(mut parts) => {
            if body.is_whole() || parts.headers.contains_key(hyper::header::TRAILER) {
                parts.headers.remove(hyper::header::CONTENT_LENGTH);
            }
            Response::from_parts(parts, body)
        }
        None => client_response(headers, body),
    }
}

/// The client's response from the filters' headers. A whole body's length is hyper's to set;
/// a streamed one keeps the upstream's content-length (unless trailers are declared).
fn client_response(headers: &HeaderMap, body: ProxyBody) -> Response<Body> {
    let status = headers.get(b":status").and_then(|v| std::str::from_utf8(v).ok()?.parse::<u16>().ok()).unwrap_or(502);
    let Ok(status) = hyper::StatusCode::from_u16(status) else {
        return text_response(502, "invalid response headers", &[]);
    };
    // Declared trailers need a chunked body on HTTP/1.1 (see `forward`).
    let drop_length = body.is_whole() || headers.get(b"trailer").is_some();
    let mut response = Response::new(body);
    *response.status_mut() = status;
    match to_hyper(headers, response.headers_mut(), |k| drop_length && k == b"content-length", |_, _| None) {
        Some(()) => response,
        None => text_response(502, "invalid response headers", &[]),
    }
}

/// A TCP connection through the listener's network Wasm filters to its tcp_proxy cluster.
async fn serve_tcp(worker: Rc<Worker>, listener: usize, mut client: tokio::net::TcpStream, peer: SocketAddr) {
    let shared = worker.shared.clone();
    let spec = &shared.bootstrap.listeners[listener];
    let ListenerKind::Tcp { network_filters, cluster, .. } = &spec.kind else { return };
    let base = shared.network_filter_base[listener];
    let local = spec.address;
    let mut streams: Vec<(usize, StreamId)> = Vec::new();
    // New connection through each network filter, in order.
    for i in 0..network_filters.len() {
        let filter = base + i;
        let step = {
            let mut filters = worker.filters.borrow_mut();
            let Ok(w) = filters[filter].worker(0) else { continue };
            let mut tcp = w.tcp();
            tcp.set_property("source.address", peer.to_string().as_bytes());
            tcp.set_property("destination.address", local.to_string().as_bytes());
            tcp.set_property("destination.port", &int_value(i64::from(local.port())));
            streams.push((filter, tcp.id()));
            tcp.new_connection()
        };
        if matches!(step, Step::Closed { .. } | Step::LocalReply(_)) || closing(&worker, &streams) {
            finish_tcp(&worker, &streams);
            return;
        }
    }
    let Some(upstream) = shared.upstreams.iter().find(|u| &u.name == cluster) else {
        finish_tcp(&worker, &streams);
        return;
    };
    let Ok(claim) = upstream.claim_connection() else {
        finish_tcp(&worker, &streams);
        return;
    };
    let connect = tokio::time::timeout(upstream.connect_timeout, tokio::net::TcpStream::connect(claim.address())).await;
    let mut server = match connect {
        Ok(Ok(server)) => server,
        failed => {
            upstream.stats.cx_connect_fail.fetch_add(1, Ordering::Relaxed);
            if failed.is_err() {
                upstream.stats.cx_connect_timeout.fetch_add(1, Ordering::Relaxed);
            }
            finish_tcp(&worker, &streams);
            return;
        }
    };
    upstream.stats.cx_total.fetch_add(1, Ordering::Relaxed);
    let _ = server.set_nodelay(true);
    let (mut cr, mut cw) = client.split();
    let (mut sr, mut sw) = server.split();
    let mut from_client = vec![0u8; 16 << 10];
    let mut from_server = vec![0u8; 16 << 10];
    let (mut client_open, mut server_open) = (true, true);
    while client_open || server_open {
        tokio::select! {
            n = cr.read(&mut from_client), if client_open => {
                let n = n.unwrap_or(0);
                client_open = n > 0;
                let out = through(&worker, &streams, &from_client[..n], !client_open, true);
                if !out.is_empty() && sw.write_all(&out).await.is_err() { break; }
                if !client_open { let _ = sw.shutdown().await; }
            }
            n = sr.read(&mut from_server), if server_open => {
                let n = n.unwrap_or(0);
                server_open = n > 0;
                let out = through(&worker, &streams, &from_server[..n], !server_open, false);
                if !out.is_empty() && cw.write_all(&out).await.is_err() { break; }
                if !server_open { let _ = cw.shutdown().await; }
            }
        }
        if closing(&worker, &streams) {
            break;
        }
    }
    drop(claim);
    finish_tcp(&worker, &streams);
}

/// Data through every network filter (client → server in order, back in reverse).
fn through(worker: &Rc<Worker>, streams: &[(usize, StreamId)], data: &[u8], end: bool, downstream: bool) -> Vec<u8> {
    let mut filters = worker.filters.borrow_mut();
    let mut bytes = data.to_vec();
    let order: Vec<&(usize, StreamId)> =
        if downstream { streams.iter().collect() } else { streams.iter().rev().collect() };
    for (filter, id) in order {
        let Some(mut tcp) = filters[*filter].tcp_stream(*id) else { continue };
        if downstream {
            tcp.downstream_data(&bytes, end);
            bytes = tcp.take_to_upstream();
        } else {
            tcp.upstream_data(&bytes, end);
            bytes = tcp.take_to_downstream();
        }
    }
    bytes
}

/// Whether a network filter asked to close the connection (or its stream is gone).
fn closing(worker: &Rc<Worker>, streams: &[(usize, StreamId)]) -> bool {
    let mut filters = worker.filters.borrow_mut();
    streams.iter().any(|(filter, id)| match filters[*filter].tcp_stream(*id) {
        Some(mut tcp) => !tcp.close_requests().is_empty(),
        None => true,
    })
}

fn finish_tcp(worker: &Rc<Worker>, streams: &[(usize, StreamId)]) {
    let mut filters = worker.filters.borrow_mut();
    for (filter, id) in streams {
        if let Some(tcp) = filters[*filter].tcp_stream(*id) {
            let _ = tcp.finish();
        }
    }
}
