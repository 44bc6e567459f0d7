// One worker's upstream HTTP/1.1 connections, as Envoy's per-worker connection pools: per cluster
// and endpoint, idle ones reused newest first, new ones within the cluster's max_connections.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::sync::oneshot;

use crate::body::{BoxError, ProxyBody};
use crate::cluster::{Claim, Upstream};

type Sender = SendRequest<ProxyBody>;

/// Why a request got no response from the upstream.
#[derive(Debug)]
pub enum Failed {
    /// No connection could be made (refused, or not within the cluster's connect_timeout).
    Connect,
    /// The connection ended (or broke) after the request left, before the response headers.
    Reset,
}

/// Which of this worker's pools: a cluster (its index among the upstreams) and an endpoint.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Key {
    cluster: usize,
    address: SocketAddr,
}

/// What a request waiting for a connection gets: one a finished request let go, or leave to
/// open a new one (one of the worker's connections to the endpoint closed).
enum Handoff {
    Conn(Sender),
    Connect,
}

/// The worker's connections to one endpoint of one cluster.
struct Endpoint {
    key: Key,
    /// Idle connections, the most recently used last.
    idle: Vec<Sender>,
    /// This worker's connections to the endpoint: idle, busy or still connecting.
    open: usize,
    /// Requests waiting for a connection (the cluster is at max_connections), oldest first.
    waiting: VecDeque<oneshot::Sender<Handoff>>,
    /// The cluster no longer has the endpoint (DNS moved it): connections let go are closed.
    removed: bool,
}

/// What `checkout` found.
enum Checkout {
    Idle(Sender),
    /// A new connection is allowed and counted: open it.
    Connect,
    Wait(oneshot::Receiver<Handoff>),
}

#[derive(Default)]
pub struct Pool {
    /// Few per worker (clusters × endpoints): a scan beats hashing the key on every request.
    endpoints: RefCell<Vec<Endpoint>>,
}

impl Pool {
    /// Sends `request` to `address` of `upstream` (index `cluster`) on an idle connection of this
    /// worker, a new one, or the next one a request lets go when the cluster is at its
    /// max_connections (as Envoy queues it, until the route timeout drops the wait). A request
    /// that an idle connection could not take because the upstream had closed it meanwhile (it
    /// never left: hyper gives it back) goes on the next connection, as Envoy and hyper-util do.
    pub async fn send(
        self: &Rc<Self>,
        upstream: &Arc<Upstream>,
        cluster: usize,
        address: SocketAddr,
        mut request: Request<ProxyBody>,
    ) -> Result<(Response<Incoming>, Lease), Failed> {
        let key = Key { cluster, address };
        loop {
            let mut sender = match self.checkout(key, upstream) {
                Checkout::Idle(sender) => sender,
                Checkout::Connect => self.connect(key, upstream).await?,
                Checkout::Wait(handoff) => match handoff.await {
                    Ok(Handoff::Conn(sender)) => sender,
                    Ok(Handoff::Connect) | Err(_) => continue,
                },
            };
            match sender.try_send_request(request).await {
                Ok(response) => return Ok((response, Lease { pool: self.clone(), key, sender: Some(sender) })),
                Err(mut e) => match e.take_message() {
                    Some(unsent) => request = unsent,
                    None => return Err(Failed::Reset),
                },
            }
        }
    }

    fn checkout(&self, key: Key, upstream: &Upstream) -> Checkout {
        let mut endpoints = self.endpoints.borrow_mut();
        let at = match endpoints.iter().position(|e| e.key == key) {
            Some(at) => at,
            None => {
                endpoints.push(Endpoint { key, idle: Vec::new(), open: 0, waiting: VecDeque::new(), removed: false });
                endpoints.len() - 1
            }
        };
        let endpoint = &mut endpoints[at];
        // Chosen by its cluster: the endpoint is the cluster's (again).
        endpoint.removed = false;
        let mut i = endpoint.idle.len();
        while i > 0 {
            i -= 1;
            if endpoint.idle[i].is_ready() {
                return Checkout::Idle(endpoint.idle.remove(i));
            }
            // Closed (the upstream ended it while idle): its task has counted it out. One neither
            // ready nor closed is still finishing its last response: left for later.
            if endpoint.idle[i].is_closed() {
                endpoint.idle.remove(i);
            }
        }
        // Envoy's pool opens a connection over the breaker when it has none at all, so that a
        // request never waits on connections other workers hold.
        if upstream.open_connection(endpoint.open == 0) {
            endpoint.open += 1;
            return Checkout::Connect;
        }
        upstream.stats.cx_overflow.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        endpoint.waiting.push_back(tx);
        Checkout::Wait(rx)
    }

    /// Opens a connection counted by `checkout`; its task counts it out when it ends.
    async fn connect(self: &Rc<Self>, key: Key, upstream: &Arc<Upstream>) -> Result<Sender, Failed> {
        // Counted out if this future is dropped (the route timeout) before the task owns it.
        let mut counted = Counted { pool: self.clone(), key, upstream: upstream.clone(), armed: true };
        let stats = &upstream.stats;
        let stream =
            match tokio::time::timeout(upstream.connect_timeout, tokio::net::TcpStream::connect(key.address)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(_)) => {
                    stats.cx_connect_fail.fetch_add(1, Ordering::Relaxed);
                    return Err(Failed::Connect);
                }
                Err(_) => {
                    stats.cx_connect_fail.fetch_add(1, Ordering::Relaxed);
                    stats.cx_connect_timeout.fetch_add(1, Ordering::Relaxed);
                    return Err(Failed::Connect);
                }
            };
        let _ = stream.set_nodelay(true);
        let Ok((sender, connection)) = http1::Builder::new().handshake(TokioIo::new(stream)).await else {
            return Err(Failed::Connect);
        };
        stats.cx_total.fetch_add(1, Ordering::Relaxed);
        counted.armed = false;
        let ended = Counted { pool: self.clone(), key, upstream: upstream.clone(), armed: true };
        tokio::task::spawn_local(async move {
            let _ = connection.await;
            drop(ended);
        });
        Ok(sender)
    }

    /// A connection a request let go with its response read to the end: to the oldest waiting
    /// request, or idle.
    fn put(&self, key: Key, mut sender: Sender) {
        if sender.is_closed() {
            return;
        }
        let mut endpoints = self.endpoints.borrow_mut();
        let Some(endpoint) = endpoints.iter_mut().find(|e| e.key == key) else { return };
        if endpoint.removed {
            return;
        }
        while let Some(waiter) = endpoint.waiting.pop_front() {
            match waiter.send(Handoff::Conn(sender)) {
                Ok(()) => return,
                // That request is gone (its timeout): the next one.
                Err(Handoff::Conn(back)) => sender = back,
                Err(Handoff::Connect) => return,
            }
        }
        endpoint.idle.push(sender);
    }

    /// Closes the idle connections to endpoints their cluster no longer has (a DNS resolution
    /// moved it), as Envoy drains the pools of removed hosts; busy ones are closed when their
    /// request lets them go. Fixed clusters never change and are not looked at.
    pub fn forget_removed(&self, upstreams: &[Arc<Upstream>]) {
        let mut endpoints = self.endpoints.borrow_mut();
        for endpoint in endpoints.iter_mut() {
            let Some(upstream) = upstreams.get(endpoint.key.cluster) else { continue };
            if upstream.names.is_some() && !upstream.has_endpoint(endpoint.key.address) {
                endpoint.removed = true;
                endpoint.idle.clear();
            }
        }
    }

    /// A connection of `key` closed, or never opened: one fewer, and the oldest waiting request
    /// may open one in its place.
    fn closed(&self, key: Key, upstream: &Upstream) {
        upstream.close_connection();
        let mut endpoints = self.endpoints.borrow_mut();
        let Some(at) = endpoints.iter().position(|e| e.key == key) else { return };
        let endpoint = &mut endpoints[at];
        endpoint.open = endpoint.open.saturating_sub(1);
        while let Some(waiter) = endpoint.waiting.pop_front() {
            if waiter.send(Handoff::Connect).is_ok() {
                break;
            }
        }
        // An endpoint left behind (DNS moved the cluster elsewhere) does not stay listed.
        endpoint.idle.retain(|s| !s.is_closed());
        if endpoint.open == 0 && endpoint.waiting.is_empty() {
            endpoints.swap_remove(at);
        }
    }
}

/// Counts a connection out of its pool and cluster when dropped while armed.
struct Counted {
    pool: Rc<Pool>,
    key: Key,
    upstream: Arc<Upstream>,
    armed: bool,
}

impl Drop for Counted {
    fn drop(&mut self) {
        if self.armed {
            self.pool.closed(self.key, &self.upstream);
        }
    }
}

/// A connection lent to one request: back to the pool once its response has been read to the
/// end, else dropped (hyper closes a connection whose response was not read through).
pub struct Lease {
    pool: Rc<Pool>,
    key: Key,
    sender: Option<Sender>,
}

impl Lease {
    fn release(&mut self) {
        if let Some(sender) = self.sender.take() {
            self.pool.put(self.key, sender);
        }
    }
}

/// An upstream's response body on its way to the client: the endpoint stays claimed (breakers,
/// least request) until it has gone, as Envoy counts a request active until it completes, and
/// the connection goes back to the pool as soon as the body has been read to its end.
pub struct UpstreamBody {
    body: Incoming,
    lease: Lease,
    _claim: Claim,
}

impl UpstreamBody {
    pub fn new(body: Incoming, lease: Lease, claim: Claim) -> UpstreamBody {
        UpstreamBody { body, lease, _claim: claim }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => this.lease.release(),
            Poll::Ready(Some(Ok(_))) if this.body.is_end_stream() => this.lease.release(),
            // A broken body: the connection is not reused.
            Poll::Ready(Some(Err(_))) => this.lease.sender = None,
            _ => {}
        }
        polled.map_err(Into::into)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for UpstreamBody {
    /// A body that ended without being polled to its end (empty, or its length reached).
    fn drop(&mut self) {
        if self.body.is_end_stream() {
            self.lease.release();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::time::Duration;

    use http_body_util::BodyExt;

    use super::*;
    use crate::bootstrap::{Cluster, Discovery, Endpoint, LbPolicy};

    fn upstream(address: SocketAddr) -> Arc<Upstream> {
        let cluster = Cluster {
            name: "web".into(),
            discovery: Discovery::Static,
            connect_timeout: Duration::from_secs(5),
            lb_policy: LbPolicy::RoundRobin,
            endpoints: vec![Endpoint { host: "127.0.0.1".into(), port: address.port() }],
            max_connections: None,
            max_requests: None,
            dns_refresh_rate: Duration::from_secs(5),
            dns_resolvers: Vec::new(),
        };
        Arc::new(Upstream::resolve(&cluster, Some(&[address])).expect("cluster"))
    }

    fn get() -> Request<ProxyBody> {
        let mut request = Request::new(ProxyBody::empty());
        request.headers_mut().insert(hyper::header::HOST, hyper::header::HeaderValue::from_static("web"));
        request
    }

    /// An upstream on a thread: on connection `i` it answers one request with body `i`. The first
    /// connection it then closes when told to on `close`, right after writing a byte to
    /// `signal`, and says so on `closed`.
    fn closing_upstream(
        signal: std::os::unix::net::UnixStream,
    ) -> (SocketAddr, std::sync::mpsc::Sender<()>, std::sync::mpsc::Receiver<()>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let address = listener.local_addr().expect("address");
        let (close, close_now) = std::sync::mpsc::channel::<()>();
        let (closed, closes) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut signal = signal;
            for (i, stream) in listener.incoming().enumerate() {
                let Ok(mut stream) = stream else { return };
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).is_ok_and(|n| n == 1) {
                    head.push(byte[0]);
                }
                let _ = stream.write_all(format!("HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\n{i}").as_bytes());
                if i == 0 {
                    if close_now.recv_timeout(Duration::from_secs(20)).is_err() {
                        return;
                    }
                    let _ = signal.write_all(b"x");
                    drop(stream);
                    let _ = closed.send(());
                }
            }
        });
        (address, close, closes)
    }

    #[test]
    fn a_request_an_idle_connection_closed_under_it_never_sent_goes_on_a_new_one() {
        let (signal, signalled) = std::os::unix::net::UnixStream::pair().expect("pair");
        let (address, close, closes) = closing_upstream(signal);
        let upstream = upstream(address);
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let local = tokio::task::LocalSet::new();
        local.block_on(&runtime, async {
            signalled.set_nonblocking(true).expect("nonblocking");
            let signalled = tokio::net::UnixStream::from_std(signalled).expect("signal");
            let pool = Rc::new(Pool::default());
            let (response, lease) = pool.send(&upstream, 0, address, get()).await.expect("first response");
            let claim = upstream.claim().expect("claim");
            let body = UpstreamBody::new(response.into_body(), lease, claim).collect().await.expect("body");
            assert_eq!(body.to_bytes(), "0");
            // Read to its end: the connection is idle in the pool. The upstream signals, then
            // closes it. This future wakes on the signal in the same turn of the event loop as
            // the connection's task on the close, and runs first: it takes the connection
            // before its task has seen the close, as a request does when both arrive together.
            // hyper gives the unsent request back, and it goes on a new connection.
            close.send(()).expect("close");
            closes.recv_timeout(Duration::from_secs(20)).expect("closed");
            signalled.readable().await.expect("signal");
            let (response, lease) = pool.send(&upstream, 0, address, get()).await.expect("second response");
            let claim = upstream.claim().expect("claim");
            let body = UpstreamBody::new(response.into_body(), lease, claim).collect().await.expect("body");
            assert_eq!(body.to_bytes(), "1", "answered on the second connection");
            assert_eq!(upstream.stats.cx_total.load(Ordering::Relaxed), 2);
        });
    }

    #[test]
    fn a_response_read_to_its_end_lends_its_connection_again_and_one_cut_short_does_not() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let address = listener.local_addr().expect("address");
        // Keeps every connection open and answers each request on it with a 4-byte body.
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                std::thread::spawn(move || loop {
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") {
                        if !stream.read(&mut byte).is_ok_and(|n| n == 1) {
                            return;
                        }
                        head.push(byte[0]);
                    }
                    if stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nbody").is_err() {
                        return;
                    }
                });
            }
        });
        let upstream = upstream(address);
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let local = tokio::task::LocalSet::new();
        local.block_on(&runtime, async {
            let pool = Rc::new(Pool::default());
            for _ in 0..3 {
                let (response, lease) = pool.send(&upstream, 0, address, get()).await.expect("response");
                let claim = upstream.claim().expect("claim");
                let body = UpstreamBody::new(response.into_body(), lease, claim).collect().await.expect("body");
                assert_eq!(body.to_bytes(), "body");
            }
            assert_eq!(upstream.stats.cx_total.load(Ordering::Relaxed), 1, "one connection for three requests");
            // A response dropped before its body was read: its connection is not lent again.
            let (response, lease) = pool.send(&upstream, 0, address, get()).await.expect("response");
            drop((response, lease));
            let (_response, _lease) = pool.send(&upstream, 0, address, get()).await.expect("response");
            assert_eq!(upstream.stats.cx_total.load(Ordering::Relaxed), 2);
        });
    }
}
