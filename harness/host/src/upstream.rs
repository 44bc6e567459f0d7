// Real upstreams for clusters (`ProxyOptions::upstreams`): calls to them leave over real sockets
// from a thread of their own, and their answers wait in a channel until the proxy delivers them.

use std::net::SocketAddr;
use std::sync::mpsc;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};

use super::calls::{CallAnswer, CallId, CallKind};
use super::headers::HeaderMap;

/// One call on its way to a real upstream.
pub(crate) struct Job {
    pub id: CallId,
    pub addr: SocketAddr,
    pub kind: CallKind,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
    pub timeout_ms: u32,
}

/// The sending side, kept in the proxy's shared state so that any VM's hostcall can dispatch.
pub(crate) struct Upstreams {
    pub clusters: Vec<(String, SocketAddr)>,
    jobs: tokio::sync::mpsc::UnboundedSender<Job>,
}

impl Upstreams {
    /// Starts the client thread; answers arrive on the returned receiver. The thread ends
    /// when `Upstreams` is dropped, abandoning calls still in flight.
    pub(crate) fn start(
        clusters: Vec<(String, SocketAddr)>,
    ) -> std::io::Result<(Upstreams, mpsc::Receiver<(CallId, CallAnswer)>)> {
        let (jobs, mut incoming) = tokio::sync::mpsc::unbounded_channel::<Job>();
        let (answers, received) = mpsc::channel();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_io().build()?;
        std::thread::Builder::new().name("ebb-upstreams".into()).spawn(move || {
            runtime.block_on(async move {
                let mut in_flight = tokio::task::JoinSet::new();
                while let Some(job) = incoming.recv().await {
                    let answers = answers.clone();
                    in_flight.spawn(async move {
                        let id = job.id;
                        let answer = send(job).await.unwrap_or(CallAnswer::Failure);
                        // The proxy may be gone; then nobody waits for the answer.
                        let _ = answers.send((id, answer));
                    });
                    while in_flight.try_join_next().is_some() {}
                }
            });
        })?;
        Ok((Upstreams { clusters, jobs }, received))
    }

    pub(crate) fn address(&self, cluster: &str) -> Option<SocketAddr> {
        self.clusters.iter().find(|(name, _)| name == cluster).map(|(_, addr)| *addr)
    }

    /// Hands a call to the client thread. False when the thread is gone.
    pub(crate) fn dispatch(&self, job: Job) -> bool {
        self.jobs.send(job).is_ok()
    }
}

type Failed = Box<dyn std::error::Error + Send + Sync>;

/// The router's answer when the upstream refuses the connection: Envoy's async client sends
/// an HTTP call through the router (`source/common/http/async_client_impl.cc`), whose
/// `Filter::onUpstreamReset` (`source/common/router/router.cc`) answers 503 with this body
/// (`Http::Utility::resetReasonToString(ConnectionFailure)` = "connection failure") through
/// `sendLocalReply`, and the filter receives it as the call's response.
pub(crate) const CONNECT_FAILURE_BODY: &str =
    "upstream connect error or disconnect/reset before headers. reset reason: connection failure";

fn connect_failure() -> CallAnswer {
    let body = CONNECT_FAILURE_BODY.as_bytes().to_vec();
    CallAnswer::Http {
        headers: HeaderMap::from_pairs(&[
            (":status", "503"),
            ("content-length", body.len().to_string().as_str()),
            ("content-type", "text/plain"),
        ]),
        body,
        trailers: HeaderMap::new(),
    }
}

async fn send(job: Job) -> Result<CallAnswer, Failed> {
    let stream = match tokio::net::TcpStream::connect(job.addr).await {
        Ok(stream) => stream,
        Err(_) if matches!(job.kind, CallKind::Http) => return Ok(connect_failure()),
        Err(e) => return Err(e.into()),
    };
    stream.set_nodelay(true)?;
    let io = TokioIo::new(stream);
    match &job.kind {
        CallKind::Http => {
            let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await?;
            tokio::spawn(connection);
            let response = sender.send_request(http_request(&job)?).await?;
            http_answer(response).await
        }
        // Streams would need the filter's later sends relayed; the call ends as an
        // unreachable upstream's does (close with UNAVAILABLE), and the hostcall logged why.
        CallKind::GrpcStream { .. } => Err("gRPC streams to real upstreams are not supported".into()),
        CallKind::Grpc { service, method } => {
            let (mut sender, connection) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await?;
            tokio::spawn(connection);
            let response = sender.send_request(grpc_request(&job, service, method)?).await?;
            grpc_answer(response).await
        }
    }
}

/// Headers the client computes itself (Envoy's async client does the same).
fn hop_by_hop(name: &[u8]) -> bool {
    name.starts_with(b":")
        || name.eq_ignore_ascii_case(b"content-length")
        || name.eq_ignore_ascii_case(b"transfer-encoding")
        || name.eq_ignore_ascii_case(b"connection")
        || name.eq_ignore_ascii_case(b"host")
}

fn with_headers(mut builder: hyper::http::request::Builder, headers: &HeaderMap) -> hyper::http::request::Builder {
    for (name, value) in headers.iter().filter(|(name, _)| !hop_by_hop(name)) {
        builder = builder.header(name, value);
    }
    builder
}

fn http_request(job: &Job) -> Result<Request<Full<Bytes>>, Failed> {
    let text = |key: &[u8]| String::from_utf8_lossy(job.headers.get(key).unwrap_or_default()).into_owned();
    let builder = Request::builder()
        .method(text(b":method").as_str())
        .uri(text(b":path"))
        .header(hyper::header::HOST, text(b":authority"));
    Ok(with_headers(builder, &job.headers).body(Full::new(Bytes::from(job.body.clone())))?)
}

/// The parts of a response as the filter sees them: `:status` first, then the headers.
fn response_headers<B>(response: &Response<B>) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.add(b":status", response.status().as_str().as_bytes());
    for (name, value) in response.headers() {
        headers.add(name.as_str().as_bytes(), value.as_bytes());
    }
    headers
}

fn trailer_map(trailers: Option<&hyper::HeaderMap>) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in trailers.into_iter().flatten() {
        map.add(name.as_str().as_bytes(), value.as_bytes());
    }
    map
}

async fn http_answer(response: Response<hyper::body::Incoming>) -> Result<CallAnswer, Failed> {
    let headers = response_headers(&response);
    let collected = response.into_body().collect().await?;
    let trailers = trailer_map(collected.trailers());
    Ok(CallAnswer::Http { headers, body: collected.to_bytes().to_vec(), trailers })
}

fn grpc_request(job: &Job, service: &str, method: &str) -> Result<Request<Full<Bytes>>, Failed> {
    let authority = job.addr.to_string();
    let mut builder = Request::builder()
        .method("POST")
        .uri(format!("http://{authority}/{service}/{method}"))
        .header(hyper::header::CONTENT_TYPE, "application/grpc")
        .header(hyper::header::TE, "trailers");
    if job.timeout_ms > 0 {
        builder = builder.header("grpc-timeout", format!("{}m", job.timeout_ms));
    }
    let length = u32::try_from(job.body.len())?;
    let mut frame = Vec::with_capacity(5 + job.body.len());
    frame.push(0); // not compressed
    frame.extend(length.to_be_bytes());
    frame.extend(&job.body);
    Ok(with_headers(builder, &job.headers).body(Full::new(Bytes::from(frame)))?)
}

async fn grpc_answer(response: Response<hyper::body::Incoming>) -> Result<CallAnswer, Failed> {
    let http_status = response.status().as_u16();
    let mut initial_metadata = response_headers(&response);
    initial_metadata.remove(b":status");
    let collected = response.into_body().collect().await?;
    let trailing_metadata = trailer_map(collected.trailers());
    if http_status != 200 {
        // gRPC's mapping of an HTTP status that is not 200 (grpc/doc/http-grpc-status-mapping.md),
        // which Envoy's httpToGrpcStatus follows.
        let status = super::stream::http_to_grpc_status(u32::from(http_status));
        return Ok(CallAnswer::Grpc { status, message: Vec::new(), initial_metadata, trailing_metadata });
    }
    // Trailers-only responses carry grpc-status in the headers.
    let status = trailing_metadata
        .get(b"grpc-status")
        .or_else(|| initial_metadata.get(b"grpc-status"))
        .and_then(|s| std::str::from_utf8(s).ok()?.parse().ok())
        .unwrap_or(2);
    let body = collected.to_bytes();
    let message = match body.get(1..5) {
        Some(len) => {
            let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
            body.get(5..5 + len).ok_or("truncated gRPC message")?.to_vec()
        }
        None => Vec::new(),
    };
    Ok(CallAnswer::Grpc { status, message, initial_metadata, trailing_metadata })
}
