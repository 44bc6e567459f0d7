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
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{oneshot, watch};

use crate::bootstrap::{HttpFilter, HttpManager, ListenerKind, RouteAction};
use crate::filters::print_logs;
use crate::route;
use crate::server::Shared;

/// Largest request or response body a worker buffers for its filters, in bytes.
pub const MAX_BODY_BYTES: usize = 16 << 20;
/// How often a worker fires its VMs' due ticks and checks paused streams: the precision of
/// timers such as delay faults.
const TICK_EVERY: Duration = Duration::from_millis(5);
/// Envoy's route timeout default (15 s) and stream idle timeout default (5 min).
const DEFAULT_ROUTE_TIMEOUT: Duration = Duration::from_secs(15);
const STREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
const RESET_BEFORE_HEADERS: &str =
    "upstream connect error or disconnect/reset before headers. reset reason: connection failure";

type Body = Full<Bytes>;

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
    client: Client<HttpConnector, Body>,
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
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(5)));
        let client = Client::builder(TokioExecutor::new()).build(connector);
        let worker = Rc::new(Worker {
            index,
            filters: RefCell::new(filters),
            waiters: RefCell::new(Vec::new()),
            shared: shared.clone(),
            client,
        });
        let ticker = tokio::task::spawn_local(tick_loop(worker.clone()));
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

async fn tick_loop(worker: Rc<Worker>) {
    let mut every = tokio::time::interval(TICK_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let thread = format!("worker_{}", worker.index);
    loop {
        every.tick().await;
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
    builder.body(Full::new(Bytes::from(body.to_string()))).unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

/// Streams of one exchange that are open in the filters, finished (on_log) when the exchange
/// ends however it ends: answered, failed, or dropped because the client went away.
struct Open {
    worker: Rc<Worker>,
    streams: Vec<(usize, StreamId)>,
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

/// The request as the filters see it: pseudo-headers first, as Envoy's codec presents them.
/// Headers stay bytes in the host's map from the client to the upstream: no text copies.
struct Exchange {
    headers: HeaderMap,
    body: Bytes,
}

impl Exchange {
    fn header(&self, name: &str) -> Option<String> {
        self.headers.get_str(name)
    }
}

/// A downstream connection's addresses, as the `source.*` and `destination.*` properties.
struct Addresses {
    source: String,
    destination: String,
    port: Vec<u8>,
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
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, MAX_BODY_BYTES).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return text_response(413, "Payload Too Large", &[]),
    };
    let raw_path = parts.uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
    let Some(path) = route::normalize(&raw_path, manager.normalize_path, manager.merge_slashes) else {
        return text_response(400, "Bad Request", &[]);
    };
    // Envoy's connection manager before any filter (ebb-host's, as `ebb request` plays it): the
    // codec's header order, Host as :authority, hop-by-hop and internal headers dropped,
    // x-forwarded-proto and x-request-id added, a request with no host refused.
    let uri_authority = parts.uri.authority().map(|a| a.as_str().to_string());
    let mut given: Vec<(&[u8], &[u8])> = Vec::with_capacity(parts.headers.len() + 3);
    if let Some(a) = &uri_authority {
        given.push((b":authority", a.as_bytes()));
    }
    given.push((b":path", path.as_bytes()));
    given.push((b":method", parts.method.as_str().as_bytes()));
    given.extend(parts.headers.iter().map(|(k, v)| (k.as_str().as_bytes(), v.as_bytes())));
    let headers = match shared.connection_manager.decode_request(shared.next_request(), &given) {
        Ok(headers) => headers,
        Err(reply) => {
            let body = String::from_utf8_lossy(&reply.body);
            return text_response(u16::try_from(reply.status).unwrap_or(400), &body, &[]);
        }
    };
    let authority = headers.get_str(":authority").unwrap_or_default();
    let mut ex = Exchange { headers, body };

    // The route is chosen before any filter runs (filters see `xds.cluster_name`).
    let chosen = {
        let lookup = |name: &str| ex.header(name);
        route::virtual_host(manager, &authority)
            .and_then(|vh| route::route(vh, &path, &lookup).map(|r| r.action.clone()))
    };
    let Some(action) = chosen else {
        return text_response(404, "", &[]);
    };
    let cluster_name = match &action {
        RouteAction::Cluster { name, .. } => Some(name.clone()),
        RouteAction::DirectResponse { .. } => None,
    };

    let mut open = Open { worker: worker.clone(), streams: Vec::new() };
    let filter_base = shared.http_filter_base[listener];
    let mut wasm_seen = 0;
    let mut reply: Option<(HeaderMap, Bytes)> = None;
    for filter in &manager.http_filters {
        match filter {
            HttpFilter::Rbac(rbac) => {
                let lookup = |name: &str| ex.header(name);
                let path_now = ex.header(":path").unwrap_or_default();
                if !route::rbac_allows(rbac, &path_now, &lookup) {
                    return respond_through(worker, &mut open, local_parts(403, "RBAC: access denied", &[])).await;
                }
            }
            HttpFilter::Wasm(_) => {
                let index = filter_base + wasm_seen;
                wasm_seen += 1;
                match run_request_filter(worker, &mut open, index, &mut ex, cluster_name.as_deref(), addresses).await {
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
    let (resp_headers, resp_body) = match reply {
        Some(r) => r,
        None => match action {
            RouteAction::DirectResponse { status, body } => local_parts(status, body.as_deref().unwrap_or(""), &[]),
            RouteAction::Cluster { name, timeout } => forward(worker, &name, timeout, &mut ex).await,
        },
    };
    respond_through(worker, &mut open, (resp_headers, resp_body)).await
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

/// Runs one Wasm filter's request side; waits while it pauses.
async fn run_request_filter(
    worker: &Rc<Worker>,
    open: &mut Open,
    filter: usize,
    ex: &mut Exchange,
    cluster: Option<&str>,
    addresses: &Addresses,
) -> FilterOutcome {
    let (id, mut step) = {
        let mut filters = worker.filters.borrow_mut();
        let proxy = &mut filters[filter];
        let Ok(w) = proxy.worker(0) else { return FilterOutcome::Continue };
        let mut http = w.http();
        if let Some(cluster) = cluster {
            http.set_property("xds.cluster_name", cluster.as_bytes());
            http.set_property("cluster_name", cluster.as_bytes());
        }
        http.set_property("source.address", addresses.source.as_bytes());
        http.set_property("destination.address", addresses.destination.as_bytes());
        http.set_property("destination.port", &addresses.port);
        let id = http.id();
        let pairs: Vec<(&[u8], &[u8])> = ex.headers.iter().collect();
        let step = http.request_headers(&pairs, ex.body.is_empty());
        (id, step)
    };
    open.streams.push((filter, id));
    if matches!(step, Step::Pause) {
        step = worker.resumed(filter, id).await;
    }
    if matches!(step, Step::Continue) && !ex.body.is_empty() {
        step = {
            let mut filters = worker.filters.borrow_mut();
            match filters[filter].http_stream(id) {
                Some(mut http) => http.request_body(&ex.body, true),
                None => Step::Closed { details: "stream gone".into() },
            }
        };
        if matches!(step, Step::Pause) {
            step = worker.resumed(filter, id).await;
        }
    }
    let mut filters = worker.filters.borrow_mut();
    let Some(mut http) = filters[filter].http_stream(id) else { return FilterOutcome::Reset };
    match step {
        Step::Continue => {
            if let Some(m) = http.upstream_request() {
                ex.headers = m.headers;
                ex.body = Bytes::from(m.body);
            }
            FilterOutcome::Continue
        }
        Step::LocalReply(_) | Step::Failed(_) | Step::Pause => match http.client_response() {
            Some(m) => {
                // This filter already ran its response callbacks on its reply.
                drop(filters);
                open.streams.retain(|(f, _)| *f != filter);
                finish(worker, filter, id);
                FilterOutcome::Reply(m.headers, Bytes::from(m.body))
            }
            // Envoy checks for failure right after each callback (cpp-host's CHECK_FAIL_HTTP):
            // fail-open lets the stream continue, fail-closed answers it with a local 503.
            None if matches!(step, Step::Failed(_)) && worker.shared.fail_open[filter] => FilterOutcome::Continue,
            None if matches!(step, Step::Failed(_)) => {
                drop(filters);
                open.streams.retain(|(f, _)| *f != filter);
                finish(worker, filter, id);
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

/// The router: the request to one endpoint of the cluster, with Envoy's errors.
async fn forward(
    worker: &Rc<Worker>,
    cluster: &str,
    timeout: Option<Duration>,
    ex: &mut Exchange,
) -> (HeaderMap, Bytes) {
    let shared = worker.shared.clone();
    let Some(upstream) = shared.upstreams.iter().find(|u| u.name == cluster) else {
        return local_parts(503, "no healthy upstream", &[]);
    };
    let claim = match upstream.claim() {
        Ok(c) => c,
        Err(crate::cluster::NoClaim::NoEndpoint) => return local_parts(503, "no healthy upstream", &[]),
        Err(crate::cluster::NoClaim::Overflow) => {
            return local_parts(
                503,
                "upstream connect error or disconnect/reset before headers. reset reason: overflow",
                &[("x-envoy-overloaded", "true")],
            )
        }
    };
    // The router's timeout headers (Envoy's `FilterUtility::finalTimeout`): a filter's
    // x-envoy-upstream-rq-timeout-ms replaces the route's; 0 is none.
    let route = timeout.unwrap_or(DEFAULT_ROUTE_TIMEOUT);
    let timeout = match ex.header("x-envoy-upstream-rq-timeout-ms").and_then(|v| v.trim().parse::<u64>().ok()) {
        Some(0) => STREAM_IDLE_TIMEOUT,
        Some(ms) => Duration::from_millis(ms),
        None => route,
    };
    let router = ebb_host::ConnectionManager { route_timeout: route, ..shared.connection_manager.clone() };
    router.route_in_place(&mut ex.headers);
    let path = ex.header(":path").unwrap_or_else(|| "/".into());
    let uri = format!("http://{}{}", claim.address(), path);
    let mut builder = Request::builder().method(ex.header(":method").unwrap_or_else(|| "GET".into()).as_str()).uri(uri);
    if let Some(authority) = ex.header(":authority") {
        builder = builder.header("host", authority);
    }
    for (k, v) in ex.headers.iter() {
        if k.starts_with(b":") || matches!(k, b"host" | b"content-length" | b"transfer-encoding" | b"connection") {
            continue;
        }
        builder = builder.header(k, v);
    }
    let Ok(request) = builder.body(Full::new(ex.body.clone())) else {
        return local_parts(400, "Bad Request", &[]);
    };
    let started = tokio::time::Instant::now();
    let result = tokio::time::timeout(timeout, async {
        let resp = worker.client.request(request).await?;
        let (parts, body) = resp.into_parts();
        let bytes = Limited::new(body, MAX_BODY_BYTES).collect().await.map(|b| b.to_bytes()).map_err(|_| ());
        Ok::<_, hyper_util::client::legacy::Error>((parts, bytes))
    })
    .await;
    let elapsed = started.elapsed().as_secs_f64() * 1000.0;
    let stats = &upstream.stats;
    match result {
        Err(_) => {
            stats.rq_timeout.fetch_add(1, Ordering::Relaxed);
            stats.rq.record(504, elapsed);
            local_parts(504, "upstream request timeout", &[])
        }
        Ok(Err(e)) => {
            if e.is_connect() {
                stats.cx_connect_fail.fetch_add(1, Ordering::Relaxed);
            }
            stats.rq.record(503, elapsed);
            local_parts(503, RESET_BEFORE_HEADERS, &[])
        }
        Ok(Ok((parts, Err(())))) => {
            stats.rq.record(parts.status.as_u16(), elapsed);
            local_parts(502, "upstream response too large or reset", &[])
        }
        Ok(Ok((parts, Ok(body)))) => {
            stats.rq.record(parts.status.as_u16(), elapsed);
            let mut headers = HeaderMap::new();
            headers.add(b":status", parts.status.as_str().as_bytes());
            for (k, v) in &parts.headers {
                if k == "transfer-encoding" || k == "connection" {
                    continue;
                }
                headers.add(k.as_str().as_bytes(), v.as_bytes());
            }
            (headers, body)
        }
    }
}

/// Runs the response back through the filters that saw the request (last first), finishes
/// their streams, and builds what the client gets.
async fn respond_through(
    worker: &Rc<Worker>,
    open: &mut Open,
    (mut headers, mut body): (HeaderMap, Bytes),
) -> Response<Body> {
    let streams: Vec<(usize, StreamId)> = open.streams.iter().rev().copied().collect();
    for (filter, id) in streams {
        let mut step = {
            let mut filters = worker.filters.borrow_mut();
            match filters[filter].http_stream(id) {
                Some(mut http) => {
                    let pairs: Vec<(&[u8], &[u8])> = headers.iter().collect();
                    http.response_headers(&pairs, body.is_empty())
                }
                None => continue,
            }
        };
        if matches!(step, Step::Pause) {
            step = worker.resumed(filter, id).await;
        }
        if matches!(step, Step::Continue) && !body.is_empty() {
            step = {
                let mut filters = worker.filters.borrow_mut();
                match filters[filter].http_stream(id) {
                    Some(mut http) => http.response_body(&body, true),
                    None => continue,
                }
            };
            if matches!(step, Step::Pause) {
                step = worker.resumed(filter, id).await;
            }
        }
        let mut filters = worker.filters.borrow_mut();
        if let Some(mut http) = filters[filter].http_stream(id) {
            match step {
                Step::Closed { .. } => {
                    drop(filters);
                    return text_response(503, "", &[]);
                }
                _ => {
                    if let Some(m) = http.client_response() {
                        headers = m.headers;
                        body = Bytes::from(m.body);
                    }
                }
            }
        }
    }
    for (f, id) in std::mem::take(&mut open.streams) {
        finish(worker, f, id);
    }
    let status = headers.get(b":status").and_then(|v| std::str::from_utf8(v).ok()?.parse::<u16>().ok()).unwrap_or(502);
    let mut builder = Response::builder().status(status);
    for (k, v) in headers.iter() {
        if k.starts_with(b":") || k == b"content-length" {
            continue;
        }
        builder = builder.header(k, v);
    }
    builder.body(Full::new(body)).unwrap_or_else(|_| text_response(502, "invalid response headers", &[]))
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
    let Ok(Ok(mut server)) = connect else {
        upstream.stats.cx_connect_fail.fetch_add(1, Ordering::Relaxed);
        finish_tcp(&worker, &streams);
        return;
    };
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
