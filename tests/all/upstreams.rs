//! Calls to real upstreams (`ProxyOptions::upstreams`, `ebb request --upstream`): HTTP/1.1 and
//! unary gRPC over HTTP/2 to servers listening on loopback, refused connections, timeouts.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::mpsc;
use std::time::Duration;

use ebb_harness::{CallAnswer, Clock, LogLevel, Proxy, ProxyOptions, Step, StreamId};
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};

use crate::util::{self, messages};

/// What a test server saw of one request.
#[derive(Debug)]
struct Seen {
    method: String,
    path: String,
    headers: hyper::HeaderMap,
    body: Vec<u8>,
}

/// How a test server answers.
#[derive(Clone, Copy)]
enum Serve {
    /// HTTP/1.1: 200 "allowed" with `x-from: upstream`.
    Http,
    /// HTTP/2 gRPC: one message "allowed" and `grpc-status` in the trailers.
    Grpc { status: u32 },
    /// Reads the request and never answers.
    Never,
}

/// A real server on a loopback port, on a thread of its own; requests it receives are sent to
/// the returned channel.
fn server(serve: Serve) -> (SocketAddr, mpsc::Receiver<Seen>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                let tx = tx.clone();
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let tx = tx.clone();
                    async move { Ok::<_, Infallible>(answer(serve, req, tx).await) }
                });
                let io = TokioIo::new(stream);
                tokio::spawn(async move {
                    let _ = match serve {
                        Serve::Grpc { .. } => {
                            hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                                .serve_connection(io, service)
                                .await
                        }
                        _ => hyper::server::conn::http1::Builder::new().serve_connection(io, service).await,
                    };
                });
            }
        });
    });
    (addr, rx)
}

type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

async fn answer(serve: Serve, req: Request<Incoming>, tx: mpsc::Sender<Seen>) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let body = body.collect().await.map(|b| b.to_bytes().to_vec()).unwrap_or_default();
    let _ = tx.send(Seen {
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        headers: parts.headers,
        body,
    });
    let response = Response::builder();
    match serve {
        Serve::Http => response.header("x-from", "upstream").body(Full::new(Bytes::from_static(b"allowed")).boxed()),
        // OK: a message, then grpc-status in the trailers.
        Serve::Grpc { status: 0 } => {
            let frame = Bytes::from_static(b"\0\0\0\0\x07allowed");
            let body = Full::new(frame).with_trailers(async {
                let mut trailers = hyper::HeaderMap::new();
                trailers.insert("grpc-status", 0.into());
                Some(Ok(trailers))
            });
            response.header("content-type", "application/grpc").body(body.boxed())
        }
        // An error: trailers-only, grpc-status in the headers.
        Serve::Grpc { status } => response
            .header("content-type", "application/grpc")
            .header("grpc-status", status.to_string())
            .body(Full::new(Bytes::new()).boxed()),
        Serve::Never => {
            std::future::pending::<()>().await;
            unreachable!("never answers")
        }
    }
    .expect("response")
}

fn proxy_to(addr: SocketAddr, clock: Clock) -> Proxy {
    let plugin = util::plugin("probe");
    let options =
        ProxyOptions { upstreams: vec![("auth".into(), addr)], log_level: LogLevel::Trace, ..ProxyOptions::default() };
    Proxy::new(&plugin, options, clock).expect("probe starts")
}

/// A request whose filter calls `auth` (`call:auth` or `grpc:auth`); it pauses.
fn calling(proxy: &mut Proxy, command: &str) -> StreamId {
    let mut http = proxy.worker(0).expect("worker").http();
    assert!(matches!(http.request_headers(&util::request(command), true), Step::Pause));
    http.id()
}

#[test]
fn an_http_call_reaches_the_real_server_and_its_answer_resumes_the_request() {
    let (addr, seen) = server(Serve::Http);
    let mut proxy = proxy_to(addr, Clock::default());
    let id = calling(&mut proxy, "call:auth");
    assert!(proxy.pending_calls().is_empty(), "the host answers calls to upstreams, not the caller");
    assert_eq!(proxy.upstream_calls()[0].upstream, Some(addr));
    let answered = proxy.await_upstreams(Duration::from_secs(10));
    assert_eq!(answered.len(), 1, "{answered:?}");
    assert!(matches!(&answered[0].answer, CallAnswer::Http { headers, .. } if headers.get(b":status") == Some(b"200")));
    let request = seen.recv_timeout(Duration::from_secs(1)).expect("the server saw the call");
    assert_eq!((request.method.as_str(), request.path.as_str()), ("GET", "/check"));
    assert_eq!(request.headers.get("host").map(|h| h.as_bytes()), Some(&b"auth"[..]));
    assert_eq!(request.body, b"ping");
    assert!(proxy.upstream_calls().is_empty());
    assert!(matches!(proxy.http_stream(id).expect("open").resume(), Step::Continue));
    assert!(messages(&proxy).contains(&"probe call answered status=200 body=allowed".to_string()));
}

/// Envoy's async client sends an HTTP call through the router (`async_client_impl.cc`), whose
/// `Filter::onUpstreamReset` (`source/common/router/router.cc`) answers a refused connection
/// with a 503 and "... reset reason: connection failure"
/// (`Http::Utility::resetReasonToString`): the filter receives that as the call's response.
#[test]
fn a_refused_connection_is_answered_with_the_routers_503() {
    let addr = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr")
    }; // closed again: nothing listens there
    let mut proxy = proxy_to(addr, Clock::default());
    let id = calling(&mut proxy, "call:auth");
    let answered = proxy.await_upstreams(Duration::from_secs(10));
    let Some(CallAnswer::Http { headers, body, .. }) = answered.first().map(|a| &a.answer) else {
        panic!("expected an HTTP response: {answered:?}");
    };
    assert_eq!(headers.get(b":status"), Some(&b"503"[..]));
    let expected = "upstream connect error or disconnect/reset before headers. reset reason: connection failure";
    assert_eq!(body, expected.as_bytes());
    assert_eq!(headers.get_str("content-length"), Some(expected.len().to_string()));
    let step = proxy.http_stream(id).expect("open").resume();
    assert!(matches!(&step, Step::LocalReply(r) if r.status == 403), "the filter saw a 503 answer: {step:?}");
    assert!(messages(&proxy).contains(&format!("probe call answered status=503 body={expected}")));
}

#[test]
fn on_a_real_clock_a_silent_upstream_times_out_and_its_late_answer_is_dropped() {
    let (addr, seen) = server(Serve::Never);
    let mut proxy = proxy_to(addr, Clock::real());
    let id = calling(&mut proxy, "call:auth");
    assert!(proxy.await_upstreams(Duration::from_millis(100)).is_empty(), "no answer yet");
    seen.recv_timeout(Duration::from_secs(5)).expect("the server got the call");
    std::thread::sleep(Duration::from_millis(450));
    assert!(proxy.tick().is_empty());
    assert!(proxy.upstream_calls().is_empty(), "timed out after 500 ms");
    let step = proxy.http_stream(id).expect("open").resume();
    assert!(matches!(&step, Step::LocalReply(r) if r.status == 403), "{step:?}");
    assert!(messages(&proxy).contains(&"probe call answered status=504 body=upstream request timeout".to_string()));
}

#[test]
fn a_unary_grpc_call_goes_over_http2_with_grpc_framing() {
    let (addr, seen) = server(Serve::Grpc { status: 0 });
    let mut proxy = proxy_to(addr, Clock::default());
    let id = calling(&mut proxy, "grpc:auth");
    let answered = proxy.await_upstreams(Duration::from_secs(10));
    assert!(matches!(answered.first().map(|a| &a.answer), Some(CallAnswer::Grpc { status: 0, .. })), "{answered:?}");
    let request = seen.recv_timeout(Duration::from_secs(1)).expect("the server saw the call");
    assert_eq!((request.method.as_str(), request.path.as_str()), ("POST", "/probe.Auth/Check"));
    assert_eq!(request.headers.get("content-type").map(|h| h.as_bytes()), Some(&b"application/grpc"[..]));
    assert_eq!(request.headers.get("x-md").map(|h| h.as_bytes()), Some(&b"1"[..]));
    assert_eq!(request.headers.get("grpc-timeout").map(|h| h.as_bytes()), Some(&b"500m"[..]));
    assert_eq!(request.body, b"\0\0\0\0\x03req", "one uncompressed length-prefixed message");
    assert!(matches!(proxy.http_stream(id).expect("open").resume(), Step::Continue));
    assert!(messages(&proxy).contains(&"on_grpc_call_response token=5 status=0 message=allowed".to_string()));
}

#[test]
fn a_grpc_error_status_from_the_server_reaches_the_filter() {
    let (addr, _seen) = server(Serve::Grpc { status: 7 });
    let mut proxy = proxy_to(addr, Clock::default());
    let id = calling(&mut proxy, "grpc:auth");
    let answered = proxy.await_upstreams(Duration::from_secs(10));
    assert!(matches!(answered.first().map(|a| &a.answer), Some(CallAnswer::Grpc { status: 7, .. })), "{answered:?}");
    let step = proxy.http_stream(id).expect("open").resume();
    assert!(matches!(&step, Step::LocalReply(r) if r.status == 403), "{step:?}");
}

#[test]
fn ebb_request_sends_calls_to_an_upstream_given_on_the_command_line() {
    let (addr, seen) = server(Serve::Http);
    let probe = util::filter("probe");
    let upstream = format!("auth={addr}");
    let out = std::process::Command::new(util::ebb_binary())
        .args(["request", "--plugin", probe.to_str().expect("utf-8"), "--json", "-H", "x-probe: call:auth"])
        .args(["--upstream", &upstream])
        .output()
        .expect("ebb runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_str(&stdout).expect("JSON");
    assert_eq!(v["calls"][0]["upstream"], addr.to_string(), "{v:#}");
    assert_eq!(v["calls"][0]["answer"], 200);
    assert_eq!(v["response"]["status"], 200, "the request went on after the call");
    assert_eq!(seen.recv_timeout(Duration::from_secs(1)).expect("seen").path, "/check");
}

#[test]
fn ebb_request_refuses_an_upstream_that_is_not_host_port() {
    let probe = util::filter("probe");
    let out = std::process::Command::new(util::ebb_binary())
        .args(["request", "--plugin", probe.to_str().expect("utf-8"), "--upstream", "auth=nowhere"])
        .output()
        .expect("ebb runs");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--upstream") && stderr.contains("HOST:PORT"), "{stderr}");
}

#[test]
fn a_grpc_stream_to_a_real_upstream_is_closed_unavailable_with_a_warning() {
    let (addr, _seen) = server(Serve::Grpc { status: 0 });
    let mut proxy = proxy_to(addr, Clock::default());
    calling(&mut proxy, "stream-wait:auth");
    let answered = proxy.await_upstreams(Duration::from_secs(10));
    assert!(matches!(answered.first().map(|a| &a.answer), Some(CallAnswer::Failure)), "{answered:?}");
    let logs = messages(&proxy);
    assert!(logs.iter().any(|l| l.contains("streams to real upstreams are not supported")), "{logs:#?}");
    assert!(logs.iter().any(|l| l.starts_with("on_grpc_stream_close") && l.contains("status=14")), "{logs:#?}");
}
