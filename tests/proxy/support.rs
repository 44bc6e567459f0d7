// Helpers of the `ebb proxy` tests: real upstream servers on loopback threads, the proxy as a
// child process (killed when dropped), plain HTTP/1.1 and h2c clients, scripts/ebb-ctl.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

use crate::util;
use crate::KEY;

/// Longest any wait of these tests may take.
const WAIT: Duration = Duration::from_secs(20);

/// A request an upstream saw.
#[derive(Clone, Debug)]
pub struct Seen {
    pub headers: Vec<(String, String)>,
    /// The request's trailers (`/trailers` only, which reads the body to its end first).
    pub trailers: Vec<(String, String)>,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
    }
}

/// A real upstream on a loopback port: HTTP/1.1 answering `NAME METHOD PATH BODY` with
/// `x-upstream: NAME` (`/slow?ms=N` first waits N ms), or a TCP echo server.
pub struct Upstream {
    pub addr: SocketAddr,
    seen: Arc<Mutex<VecDeque<Seen>>>,
    /// `/hold` requests wait until this is set (or the tests' longest wait).
    released: Arc<std::sync::atomic::AtomicBool>,
    /// Connections accepted so far, and open now.
    accepted: Arc<std::sync::atomic::AtomicUsize>,
    open: Arc<std::sync::atomic::AtomicUsize>,
}

impl Upstream {
    pub fn http(name: &'static str) -> Upstream {
        Upstream::http_on(name, SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// `http` on a given address (127.0.0.2 and up are loopback too, on Linux).
    pub fn http_on(name: &'static str, addr: SocketAddr) -> Upstream {
        let listener = TcpListener::bind(addr).expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("addr");
        let seen = Arc::new(Mutex::new(VecDeque::new()));
        let log = seen.clone();
        let released = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let gate = released.clone();
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let open = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (count, live) = (accepted.clone(), open.clone());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                loop {
                    let Ok((stream, _)) = listener.accept().await else { return };
                    count.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
                    live.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
                    let (log, gate, live) = (log.clone(), gate.clone(), live.clone());
                    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let (log, gate) = (log.clone(), gate.clone());
                        async move { Ok::<_, Infallible>(answer(name, req, log, gate).await) }
                    });
                    tokio::spawn(async move {
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                        live.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
                    });
                }
            });
        });
        Upstream { addr, seen, released, accepted, open }
    }

    /// An HTTP/1.1 upstream that answers `200 NAME` on a keep-alive connection (no
    /// `connection: close`) and then closes it at once, as a server whose keep-alive timeout
    /// ran out does: every request after the first finds the proxy's pooled connection closed.
    pub fn closing_after_each_response(name: &'static str) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let seen: Arc<Mutex<VecDeque<Seen>>> = Arc::default();
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (log, count) = (seen.clone(), accepted.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                count.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
                let _ = stream.set_read_timeout(Some(WAIT));
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).is_ok_and(|n| n == 1) {
                    head.push(byte[0]);
                }
                log.lock().expect("seen").push_back(Seen { headers: Vec::new(), trailers: Vec::new() });
                let reply = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{name}", name.len());
                let _ = stream.write_all(reply.as_bytes());
                // Dropped: closed with no warning, between requests.
            }
        });
        Upstream { addr, seen, released: Arc::default(), accepted, open: Arc::default() }
    }

    /// Connections the upstream accepted so far.
    pub fn connections(&self) -> usize {
        self.accepted.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Connections open now (`http` upstreams).
    pub fn open_connections(&self) -> usize {
        self.open.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Lets every `/hold` request answer.
    pub fn release(&self) {
        self.released.store(true, std::sync::atomic::Ordering::Release);
    }

    pub fn echo() -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                std::thread::spawn(move || {
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = stream.read(&mut buf) {
                        if n == 0 || stream.write_all(&buf[..n]).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Upstream {
            addr,
            seen: Arc::default(),
            released: Arc::default(),
            accepted: Arc::default(),
            open: Arc::default(),
        }
    }

    pub fn count(&self) -> usize {
        self.seen.lock().expect("seen").len()
    }

    pub fn last(&self) -> Seen {
        self.seen.lock().expect("seen").back().cloned().expect("the upstream saw a request")
    }

    pub fn wait_for_requests(&self, n: usize) {
        let start = Instant::now();
        while self.count() < n {
            assert!(start.elapsed() < WAIT, "the upstream saw {} requests, not {n}", self.count());
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

async fn answer(
    name: &str,
    req: Request<Incoming>,
    log: Arc<Mutex<VecDeque<Seen>>>,
    gate: Arc<std::sync::atomic::AtomicBool>,
) -> Response<ProxyTestBody> {
    let (parts, body) = req.into_parts();
    let headers = parts
        .headers
        .iter()
        .map(|(k, v)| (k.as_str().to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
        .collect();
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
    if path == "/trailers" {
        // Reads the body and its trailers; answers with a body and a declared trailer.
        let collected = body.collect().await.ok();
        let trailers = collected
            .as_ref()
            .and_then(|c| c.trailers())
            .map(|t| {
                t.iter().map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned())).collect()
            })
            .unwrap_or_default();
        let body = collected.map(|c| c.to_bytes()).unwrap_or_default();
        log.lock().expect("seen").push_back(Seen { headers, trailers });
        let mut end = hyper::HeaderMap::new();
        end.insert("x-upstream-trailer", hyper::header::HeaderValue::from_static("up"));
        let text = format!("{name} trailers {}", String::from_utf8_lossy(&body));
        return Response::builder()
            .header("x-upstream", name)
            .header("trailer", "x-upstream-trailer")
            .body(ProxyTestBody::Trailed(Some(Bytes::from(text)), Some(end)))
            .expect("response");
    }
    log.lock().expect("seen").push_back(Seen { headers, trailers: Vec::new() });
    if path == "/count" {
        // Reads the upload as it streams, keeping only its length and checksum.
        let mut body = body;
        let (mut n, mut sum) = (0u64, 0u64);
        while let Some(frame) = body.frame().await {
            let Ok(data) = frame.map(|f| f.into_data().unwrap_or_default()) else { break };
            sum = data.iter().fold(sum, |s, b| s.wrapping_mul(31).wrapping_add(u64::from(*b)));
            n += data.len() as u64;
        }
        return Response::builder()
            .header("x-upstream", name)
            .body(ProxyTestBody::whole(format!("{n} {sum}")))
            .expect("response");
    }
    if let Some(n) = path.strip_prefix("/bytes?n=").and_then(|n| n.parse::<u64>().ok()) {
        return Response::builder()
            .header("x-upstream", name)
            .header("content-length", n.to_string())
            .body(ProxyTestBody::pattern(n))
            .expect("response");
    }
    let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    if let Some(ms) = path.strip_prefix("/slow?ms=").and_then(|m| m.parse().ok()) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    if path == "/hold" {
        let start = tokio::time::Instant::now();
        while !gate.load(std::sync::atomic::Ordering::Acquire) && start.elapsed() < WAIT {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let text = format!("{name} {} {path} {}", parts.method, String::from_utf8_lossy(&body));
    Response::builder().header("x-upstream", name).body(ProxyTestBody::whole(text)).expect("response")
}

/// The byte at offset `i` of the test pattern (not periodic in any power of two).
pub fn pattern_byte(i: u64) -> u8 {
    (i % 251) as u8
}

/// The checksum `/count` computes, over `n` bytes of the pattern.
pub fn pattern_sum(n: u64) -> u64 {
    (0..n).fold(0u64, |s, i| s.wrapping_mul(31).wrapping_add(u64::from(pattern_byte(i))))
}

/// An upstream's response body: whole, or `n` bytes of the pattern made 64 KiB at a time.
pub enum ProxyTestBody {
    Whole(Option<Bytes>),
    Pattern {
        sent: u64,
        total: u64,
    },
    /// Data, then trailers.
    Trailed(Option<Bytes>, Option<hyper::HeaderMap>),
}

impl ProxyTestBody {
    fn whole(text: String) -> ProxyTestBody {
        ProxyTestBody::Whole(Some(Bytes::from(text)))
    }

    fn pattern(total: u64) -> ProxyTestBody {
        ProxyTestBody::Pattern { sent: 0, total }
    }
}

impl hyper::body::Body for ProxyTestBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Infallible>>> {
        let frame = match self.get_mut() {
            ProxyTestBody::Whole(bytes) => bytes.take().map(hyper::body::Frame::data),
            ProxyTestBody::Pattern { sent, total } => {
                let n = (*total - *sent).min(64 << 10);
                let chunk: Vec<u8> = (*sent..*sent + n).map(pattern_byte).collect();
                *sent += n;
                (n > 0).then(|| hyper::body::Frame::data(Bytes::from(chunk)))
            }
            ProxyTestBody::Trailed(data, trailers) => match data.take() {
                Some(data) => Some(hyper::body::Frame::data(data)),
                None => trailers.take().map(hyper::body::Frame::trailers),
            },
        };
        std::task::Poll::Ready(frame.map(Ok))
    }
}

/// An HTTP response as a client got it.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.clone())
    }
}

/// One HTTP/1.1 request on a fresh connection (`Connection: close`), read to the end.
/// Sends a POST carrying a client's own headers, hop-by-hop ones and Envoy's internal ones a
/// client may not set, and checks that the client got `web`'s answer and `web` the request as
/// Envoy's connection manager and router send it (conn_manager_utility.cc
/// mutateRequestHeaders/cleanInternalHeaders, router.cc setTimeoutHeaders). Returns the
/// `x-request-id` the upstream saw.
pub fn post_as_envoy_sends_it(ingress: SocketAddr, web: &Upstream) -> String {
    let headers = [
        ("x-custom", "kept"),
        ("content-type", "text/plain"),
        ("x-envoy-upstream-rq-timeout-ms", "1"),
        ("keep-alive", "timeout=5"),
        ("x-forwarded-client-cert", "forged"),
    ];
    let r = http1(ingress, "POST", "/submit?x=1", &headers, b"hello body");
    assert_eq!((r.status, r.header("x-upstream").as_deref()), (200, Some("web")), "{r:?}");
    assert_eq!(r.body, b"web POST /submit?x=1 hello body");
    let seen = web.last();
    assert_eq!(seen.header("x-custom").as_deref(), Some("kept"));
    assert_eq!(seen.header("content-type").as_deref(), Some("text/plain"));
    assert_eq!(seen.header("host").as_deref(), Some("bitbucket.test"));
    assert_eq!(seen.header("x-forwarded-proto").as_deref(), Some("http"));
    let id = seen.header("x-request-id").expect("the connection manager adds x-request-id");
    let shape: Vec<usize> = id.split('-').map(str::len).collect();
    assert_eq!((shape, id.chars().nth(14)), (vec![8, 4, 4, 4, 12], Some('4')), "a version-4 UUID: {id}");
    assert_eq!(seen.header("x-envoy-expected-rq-timeout-ms").as_deref(), Some("15000"));
    for gone in ["x-envoy-upstream-rq-timeout-ms", "keep-alive", "x-forwarded-client-cert", "connection"] {
        assert_eq!(seen.header(gone), None, "{gone} is not sent upstream (dropped, not honoured)");
    }
    id
}

pub fn http1(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect to ebb proxy");
    stream.set_read_timeout(Some(WAIT)).expect("timeout");
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nhost: bitbucket.test\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes()).expect("write");
    stream.write_all(body).expect("write body");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read the response");
    parse_response(&raw)
}

fn parse_response(raw: &[u8]) -> Reply {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or_else(|| panic!("no response head in {raw:?}"));
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.lines();
    let status = lines.next().and_then(|l| l.split(' ').nth(1)).and_then(|s| s.parse().ok()).expect("status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    if headers.iter().any(|(k, v)| k == "transfer-encoding" && v.contains("chunked")) {
        body = dechunk(&body);
    }
    Reply { status, headers, body }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = data.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(String::from_utf8_lossy(&data[..eol]).trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        out.extend_from_slice(&data[eol + 2..eol + 2 + size]);
        data = &data[eol + 2 + size + 2..];
    }
    out
}

/// A response with its trailers, as a client got it.
#[derive(Debug)]
pub struct Trailed {
    pub status: u16,
    pub body: Vec<u8>,
    pub trailers: Vec<(String, String)>,
}

impl Trailed {
    pub fn trailer(&self, name: &str) -> Option<String> {
        self.trailers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.clone())
    }
}

/// An HTTP/2 connection with prior knowledge (h2c), its driver spawned on the current runtime.
async fn h2c_connect<B>(addr: SocketAddr) -> hyper::client::conn::http2::SendRequest<B>
where
    B: hyper::body::Body + Unpin + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (sender, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("h2c handshake");
    tokio::spawn(conn);
    sender
}

/// A POST over h2c whose body (`body`, then the `trailers`) comes as two frames, with `headers`.
pub fn h2c_post_with_trailers(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    trailers: &[(&str, &str)],
) -> Trailed {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        let mut sender = h2c_connect(addr).await;
        let mut end = hyper::HeaderMap::new();
        for (k, v) in trailers {
            end.append(
                hyper::header::HeaderName::from_bytes(k.as_bytes()).expect("name"),
                hyper::header::HeaderValue::from_str(v).expect("value"),
            );
        }
        let mut req = Request::builder().method("POST").uri(format!("http://bitbucket.test{path}"));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(ProxyTestBody::Trailed(Some(Bytes::copy_from_slice(body)), Some(end))).expect("request");
        let resp = tokio::time::timeout(WAIT, sender.send_request(req)).await.expect("in time").expect("h2 response");
        let status = resp.status().as_u16();
        let collected = resp.into_body().collect().await.expect("body");
        let trailers = collected
            .trailers()
            .map(|t| {
                t.iter().map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned())).collect()
            })
            .unwrap_or_default();
        Trailed { status, body: collected.to_bytes().to_vec(), trailers }
    })
}

/// A chunked HTTP/1.1 POST (`Connection: close`) whose body ends with `trailers` (declared in
/// the `trailer` header), asking for response trailers (`TE: trailers`); the response read raw,
/// its chunked body and trailers decoded.
pub fn http1_chunked_with_trailers(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    trailers: &[(&str, &str)],
) -> Trailed {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect to ebb proxy");
    stream.set_read_timeout(Some(WAIT)).expect("timeout");
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nhost: bitbucket.test\r\nconnection: close\r\ntransfer-encoding: chunked\r\nte: trailers\r\n"
    );
    if !trailers.is_empty() {
        let names: Vec<&str> = trailers.iter().map(|(k, _)| *k).collect();
        req.push_str(&format!("trailer: {}\r\n", names.join(", ")));
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str(&format!("\r\n{:x}\r\n", body.len()));
    let mut raw = req.into_bytes();
    raw.extend_from_slice(body);
    raw.extend_from_slice(b"\r\n0\r\n");
    for (k, v) in trailers {
        raw.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
    }
    raw.extend_from_slice(b"\r\n");
    stream.write_all(&raw).expect("write");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read the response");
    let reply = parse_response(&raw);
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("head") + 4;
    let trailers = chunked_trailers(&raw[split..]);
    Trailed { status: reply.status, body: reply.body, trailers }
}

/// The trailer fields after a chunked body's last chunk.
fn chunked_trailers(mut data: &[u8]) -> Vec<(String, String)> {
    while let Some(eol) = data.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(String::from_utf8_lossy(&data[..eol]).trim(), 16).unwrap_or(0);
        if size == 0 {
            let rest = String::from_utf8_lossy(&data[eol + 2..]).into_owned();
            return rest
                .split("\r\n")
                .take_while(|l| !l.is_empty())
                .filter_map(|l| l.split_once(':'))
                .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
                .collect();
        }
        data = &data[eol + 2 + size + 2..];
    }
    Vec::new()
}

/// GET over HTTP/2 with prior knowledge (h2c), with hyper's client.
pub fn h2c_get(addr: SocketAddr, path: &str) -> (u16, Vec<u8>) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        let mut sender = h2c_connect(addr).await;
        let req = Request::builder()
            .uri(format!("http://bitbucket.test{path}"))
            .body(Full::new(Bytes::new()))
            .expect("request");
        let resp = tokio::time::timeout(WAIT, sender.send_request(req)).await.expect("in time").expect("h2 response");
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.expect("body").to_bytes().to_vec();
        (status, body)
    })
}

/// A GET on the admin endpoint, as text.
pub fn get(addr: SocketAddr, path: &str) -> String {
    String::from_utf8_lossy(&http1(addr, "GET", path, &[], b"").body).into_owned()
}

/// The staging bootstrap with its key rendered and `edit` applied, written to a temporary file.
pub fn render(edit: impl Fn(String) -> String) -> PathBuf {
    let text = std::fs::read_to_string(util::workspace().join("deploy/envoy/envoy.yaml")).expect("staging bootstrap");
    let text = edit(text.replace("CHANGE-ME-ebb-staging-placeholder-key", KEY));
    write_temp(&text)
}

fn write_temp(text: &str) -> PathBuf {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = std::env::temp_dir().join(format!("ebb-proxy-test-{}-{n}.yaml", std::process::id()));
    std::fs::write(&path, text).expect("write bootstrap");
    path
}

/// A bootstrap with one HTTP listener, one Wasm filter (`code`) and a router to `backend`.
pub fn single_filter_bootstrap(code: &Path, policy: &str) -> PathBuf {
    configured_filter_bootstrap(code, policy, "")
}

/// `single_filter_bootstrap` with the filter's plugin `configuration`.
pub fn configured_filter_bootstrap(code: &Path, policy: &str, configuration: &str) -> PathBuf {
    let wasm = format!(
        r#"          - name: envoy.filters.http.wasm
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
              config:
                name: probe
                failure_policy: {policy}
                configuration: {{ "@type": type.googleapis.com/google.protobuf.StringValue, value: "{configuration}" }}
                vm_config:
                  runtime: envoy.wasm.runtime.v8
                  code: {{ local: {{ filename: {} }} }}
"#,
        code.display()
    );
    write_temp(&format!(
        r#"{}  clusters:
  - name: backend
    type: STATIC
    load_assignment:
      cluster_name: backend
      endpoints:
      - lb_endpoints:
        - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: 9 }} }} }}
"#,
        ingress_to_backend(&wasm)
    ))
}

/// A bootstrap with no Wasm filter (the router only): everything to the cluster `backend`, its
/// route's fields `route` (`timeout: 0.2s`) and the cluster's `cluster` (`connect_timeout: …`,
/// `circuit_breakers: …`), each a YAML flow-mapping's inside.
pub fn plain_bootstrap(route: &str, cluster: &str) -> PathBuf {
    let listener = ingress_to_backend("")
        .replace("route: { cluster: backend }", &format!("route: {{ cluster: backend, {route} }}"));
    write_temp(&format!(
        r#"{listener}  clusters:
  - {{ name: backend, type: STATIC, {cluster}
      load_assignment: {{ cluster_name: backend, endpoints: [ {{ lb_endpoints: [ {{ endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: 9 }} }} }} }} ] }} ] }} }}
"#
    ))
}

/// The admin and one HTTP listener routing everything to the cluster `backend`, through
/// `http_filters` (YAML list items, indented for the list) and the router; clusters go after it.
fn ingress_to_backend(http_filters: &str) -> String {
    format!(
        r#"admin: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }} }}
static_resources:
  listeners:
  - name: ingress_http
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{ prefix: / }}
                route: {{ cluster: backend }}
          http_filters:
{http_filters}          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
"#
    )
}

/// `single_filter_bootstrap` plus the same code as a bootstrap Wasm service, with the same plugin
/// `configuration` for the filter and the service.
pub fn with_configured_service(code: &Path, singleton: bool, configuration: &str) -> PathBuf {
    with_service(code, singleton, configuration, configuration)
}

/// `single_filter_bootstrap` with the filter's `filter_config`, plus the same code as a bootstrap
/// Wasm service (vm_id `service`, root_id `service`) with `configuration`.
pub fn with_service(code: &Path, singleton: bool, filter_config: &str, configuration: &str) -> PathBuf {
    let base =
        std::fs::read_to_string(configured_filter_bootstrap(code, "FAIL_CLOSED", filter_config)).expect("bootstrap");
    write_temp(&format!(
        r#"bootstrap_extensions:
- name: envoy.bootstrap.wasm
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.wasm.v3.WasmService
    singleton: {singleton}
    config:
      name: service
      root_id: service
      configuration: {{ "@type": type.googleapis.com/google.protobuf.StringValue, value: "{configuration}" }}
      vm_config:
        vm_id: service
        runtime: envoy.wasm.runtime.v8
        code: {{ local: {{ filename: {} }} }}
{base}"#,
        code.display()
    ))
}

/// `ebb proxy` running as a child process; killed when dropped.
pub struct Proxy {
    child: Child,
    addresses: Vec<(String, SocketAddr)>,
    /// Stderr, read on a thread of its own (so the pipe never fills).
    stderr: Arc<Mutex<String>>,
}

impl Proxy {
    /// The staging bootstrap (`edit` applied) on free loopback ports, 2 workers.
    pub fn staging(web: &Upstream, api: &Upstream, ssh: Option<&Upstream>, edit: impl Fn(String) -> String) -> Proxy {
        Proxy::staging_with(web, api, ssh, &[], edit)
    }

    /// `staging` with more arguments (they win over the defaults).
    pub fn staging_with(
        web: &Upstream,
        api: &Upstream,
        ssh: Option<&Upstream>,
        extra: &[&str],
        edit: impl Fn(String) -> String,
    ) -> Proxy {
        let yaml = render(edit);
        let ssh_addr = ssh.map_or_else(|| web.addr, |s| s.addr);
        let wasm = util::ebb_wasm();
        let code = format!("--wasm-file=/etc/envoy/ebb.wasm={}", wasm.display());
        let mut args = vec![code.as_str()];
        let ssh_arg = format!("--cluster=ssh={ssh_addr}");
        args.push(&ssh_arg);
        args.extend_from_slice(extra);
        Proxy::start_yaml(&yaml, &[("web", web), ("api", api)], &args)
    }

    pub fn start_yaml(yaml: &Path, clusters: &[(&str, &Upstream)], extra: &[&str]) -> Proxy {
        let mut cmd = Command::new(util::ebb_binary());
        cmd.arg("proxy").arg(yaml).arg("--admin=127.0.0.1:0").arg("--drain-time=5s");
        if !extra.iter().any(|e| e.starts_with("--concurrency")) {
            cmd.arg("--concurrency=2");
        }
        let text = std::fs::read_to_string(yaml).expect("bootstrap");
        for name in ["ingress_http", "ingress_ssh", "ebb_control"] {
            let overridden = extra.iter().any(|e| e.starts_with(&format!("--listener={name}=")));
            if text.contains(&format!("name: {name}")) && !overridden {
                cmd.arg(format!("--listener={name}=127.0.0.1:0"));
            }
        }
        for (name, upstream) in clusters {
            cmd.arg(format!("--cluster={name}={}", upstream.addr));
        }
        cmd.args(extra).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut err_pipe = child.stderr.take().expect("stderr");
        let sink = stderr.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err_pipe.read(&mut buf) {
                if n == 0 {
                    return;
                }
                sink.lock().expect("stderr").push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let mut addresses = Vec::new();
        let started = Instant::now();
        loop {
            let line = lines.next().and_then(Result::ok);
            match line.as_deref() {
                Some("ready") => break,
                Some(l) if l.starts_with("listening ") => {
                    let mut parts = l.split(' ').skip(1);
                    let name = parts.next().expect("name").to_string();
                    let addr = parts.next().and_then(|a| a.parse().ok()).expect("address");
                    addresses.push((name, addr));
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    std::thread::sleep(Duration::from_millis(50));
                    panic!("ebb proxy did not start ({:?}):\n{}", started.elapsed(), stderr.lock().expect("stderr"));
                }
            }
        }
        Proxy { child, addresses, stderr }
    }

    fn addr(&self, name: &str) -> SocketAddr {
        self.addresses.iter().find(|(n, _)| n == name).map(|(_, a)| *a).unwrap_or_else(|| panic!("no listener {name}"))
    }

    pub fn ingress(&self) -> SocketAddr {
        self.addr("ingress_http")
    }

    pub fn control(&self) -> SocketAddr {
        self.addr("ebb_control")
    }

    pub fn ssh(&self) -> SocketAddr {
        self.addr("ingress_ssh")
    }

    pub fn admin(&self) -> SocketAddr {
        self.addr("admin")
    }

    /// What the proxy wrote to stderr so far (filter logs among it).
    pub fn logs(&self) -> String {
        self.stderr.lock().expect("stderr").clone()
    }

    pub fn prometheus(&self) -> String {
        get(self.admin(), "/stats/prometheus")
    }

    /// Waits until `/stats/prometheus` shows `line` (a command reaches every worker within a tick).
    pub fn wait_for_metric(&self, line: &str) {
        let start = Instant::now();
        loop {
            let page = self.prometheus();
            if page.contains(line) {
                return;
            }
            assert!(
                start.elapsed() < WAIT,
                "{line:?} never showed:\n{page}\nlogs:\n{}",
                self.stderr.lock().expect("stderr")
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until the proxy's stderr contains `text`; returns all of it.
    pub fn wait_for_log(&self, text: &str) -> String {
        let start = Instant::now();
        loop {
            let logs = self.logs();
            if logs.contains(text) {
                return logs;
            }
            assert!(start.elapsed() < WAIT, "{text:?} never logged:\n{logs}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM.
    pub fn terminate(&mut self) {
        // bash's builtin kill: no procps needed on a minimal CI image.
        let status =
            Command::new("bash").arg("-c").arg(format!("kill -TERM {}", self.child.id())).status().expect("kill");
        assert!(status.success());
    }

    pub fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let start = Instant::now();
        while start.elapsed() < within {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `scripts/ebb-ctl` against the proxy's control listener; its output (stdout and stderr).
pub fn ctl(proxy: &Proxy, args: &[&str]) -> String {
    let out = Command::new("bash")
        .arg(util::workspace().join("scripts/ebb-ctl"))
        .args(args)
        .env("EBB_URL", format!("http://{}", proxy.control()))
        .env("EBB_KEY", KEY)
        .output()
        .expect("run scripts/ebb-ctl");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "ebb-ctl {args:?} failed: {text}");
    text
}

/// A loopback endpoint that never completes a connection: a listener with no room in its
/// accept queue (backlog 0, one connection already waiting, never accepted), so the kernel drops
/// every further SYN and a connect waits until its own timeout.
pub struct Silent {
    pub addr: SocketAddr,
    _listener: tokio::net::TcpListener,
    _waiting: TcpStream,
    _rt: tokio::runtime::Runtime,
}

impl Silent {
    pub fn new() -> Silent {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let listener = rt.block_on(async {
            let socket = tokio::net::TcpSocket::new_v4().expect("socket");
            socket.bind(SocketAddr::from(([127, 0, 0, 1], 0))).expect("bind");
            socket.listen(0).expect("listen")
        });
        let addr = listener.local_addr().expect("addr");
        let waiting = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("fill the accept queue");
        Silent { addr, _listener: listener, _waiting: waiting, _rt: rt }
    }
}

/// A loopback port free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port()
}

/// `promtool check metrics` on a page: exit 0 (lint warnings allowed).
pub fn promtool_check(page: &str) {
    let mut child = Command::new(std::env::var("EBB_PROMTOOL").unwrap_or_else(|_| "promtool".into()))
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian's prometheus package) must be installed");
    child.stdin.take().expect("stdin").write_all(page.as_bytes()).expect("write");
    let out = child.wait_with_output().expect("promtool");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    // promtool exits 3 for lint problems only (names, help text), 1 for a page it cannot parse.
    assert!(out.status.code() != Some(1), "promtool cannot parse the page: {text}\n{page}");
}

/// Starts `ebb proxy` expecting it to fail: its exit code and stderr.
pub fn start_fails(yaml: &Path, extra: &[&str]) -> (i32, String) {
    let wasm = util::ebb_wasm();
    let mut cmd = Command::new(util::ebb_binary());
    cmd.arg("proxy").arg(yaml).arg(format!("--wasm-file=/etc/envoy/ebb.wasm={}", wasm.display()));
    for (name, port) in [("ingress_http", 0), ("ingress_ssh", 0), ("ebb_control", 0)] {
        if !extra.iter().any(|e| e.contains(&format!("={name}="))) {
            cmd.arg(format!("--listener={name}=127.0.0.1:{port}"));
        }
    }
    cmd.args([
        "--admin=127.0.0.1:0",
        "--cluster=web=127.0.0.1:9",
        "--cluster=api=127.0.0.1:9",
        "--cluster=ssh=127.0.0.1:9",
    ]);
    // Later --wasm-file wins? No: the test's own override replaces the default one.
    if extra.iter().any(|e| e.starts_with("--wasm-file")) {
        cmd = rebuild_without_default_code(cmd);
    }
    cmd.args(extra);
    let out = cmd.output().expect("run ebb proxy");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn rebuild_without_default_code(cmd: Command) -> Command {
    let mut fresh = Command::new(cmd.get_program());
    fresh.args(cmd.get_args().filter(|a| !a.to_string_lossy().starts_with("--wasm-file")));
    fresh
}

/// An upload of `n` bytes of the pattern on a fresh connection, written as it goes (never held
/// whole), then the response read to the end.
pub fn upload(addr: SocketAddr, path: &str, headers: &[(&str, &str)], n: u64) -> Reply {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect to ebb proxy");
    stream.set_read_timeout(Some(WAIT)).expect("timeout");
    stream.set_write_timeout(Some(WAIT)).expect("timeout");
    let mut head =
        format!("POST {path} HTTP/1.1\r\nhost: bitbucket.test\r\nconnection: close\r\ncontent-length: {n}\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).expect("write");
    let mut sent = 0;
    while sent < n {
        let chunk: Vec<u8> = (sent..n.min(sent + (64 << 10))).map(pattern_byte).collect();
        stream.write_all(&chunk).expect("write body");
        sent += chunk.len() as u64;
    }
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read the response");
    parse_response(&raw)
}

/// A download read as it streams: status, headers, body length and checksum (the body is
/// never held whole). The response must carry a content-length.
pub fn download(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> (Reply, u64, u64) {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect to ebb proxy");
    stream.set_read_timeout(Some(WAIT)).expect("timeout");
    let mut req = format!("GET {path} HTTP/1.1\r\nhost: bitbucket.test\r\nconnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes()).expect("write");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(stream.read(&mut byte).expect("read the head"), 1, "the response ended in its head: {head:?}");
        head.push(byte[0]);
    }
    let reply = parse_response(&head);
    let (mut n, mut sum) = (0u64, 0u64);
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let got = stream.read(&mut buf).expect("read the body");
        if got == 0 {
            break;
        }
        sum = buf[..got].iter().fold(sum, |s, b| s.wrapping_mul(31).wrapping_add(u64::from(*b)));
        n += got as u64;
    }
    (reply, n, sum)
}

impl Proxy {
    /// The proxy process's peak resident memory so far (VmHWM), in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).expect("/proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM in /proc/PID/status")
    }
}

/// A DNS server on a loopback UDP port that answers every A query with one address, which the
/// test changes as it goes (the resolver a STRICT_DNS cluster's `dns_resolvers` names).
pub struct Dns {
    pub addr: SocketAddr,
    answer: Arc<Mutex<[u8; 4]>>,
}

impl Dns {
    pub fn start(ip: [u8; 4]) -> Dns {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind a UDP port");
        let addr = socket.local_addr().expect("addr");
        let answer = Arc::new(Mutex::new(ip));
        let current = answer.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while let Ok((n, peer)) = socket.recv_from(&mut buf) {
                if n < 12 {
                    continue;
                }
                // The query back with: response, recursion available, one answer pointing at
                // the question's name, TTL 0.
                let mut reply = buf[..n].to_vec();
                reply[2] = 0x81;
                reply[3] = 0x80;
                reply[6..12].copy_from_slice(&[0, 1, 0, 0, 0, 0]);
                reply.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 0, 0, 4]);
                reply.extend_from_slice(&*current.lock().expect("answer"));
                let _ = socket.send_to(&reply, peer);
            }
        });
        Dns { addr, answer }
    }

    pub fn answer(&self, ip: [u8; 4]) {
        *self.answer.lock().expect("answer") = ip;
    }
}

/// A bootstrap with one HTTP listener (no Wasm filter) routing to a STRICT_DNS cluster `backend`
/// of `name:port`, resolved through `resolver` every `refresh`.
pub fn strict_dns_bootstrap(resolver: SocketAddr, name: &str, port: u16, refresh: &str) -> PathBuf {
    write_temp(&format!(
        r#"{}  clusters:
  - name: backend
    type: STRICT_DNS
    dns_refresh_rate: {refresh}
    dns_resolvers:
    - socket_address: {{ address: {}, port_value: {} }}
    load_assignment:
      cluster_name: backend
      endpoints:
      - lb_endpoints:
        - endpoint: {{ address: {{ socket_address: {{ address: {name}, port_value: {port} }} }} }}
"#,
        ingress_to_backend(""),
        resolver.ip(),
        resolver.port()
    ))
}
