// An HTTP exchange or a TCP connection driven step by step through one worker's VM, with
// Envoy's ordering: lazy context creation, pause/buffer/resume, deferred local replies and
// closes, the failure policy, then done → log → delete.

use super::abi::stream_type;
use super::error::{HostError, Thread};
use super::foreign::FilterState;
use super::headers::HeaderMap;
use super::logs::LogLevel;
use super::properties::PropertyPath;
use super::properties::{int_value, PropertyMap};
use super::proxy::Proxy;
use super::state::Deferred;
use super::worker::Vm;
use super::FailurePolicy;

/// What one step of a stream came to.
#[derive(Clone, Debug)]
pub enum Step {
    /// The filter let the data through.
    Continue,
    /// The filter paused (`Action::Pause`); the data is buffered until it resumes the stream
    /// with `proxy_continue_stream` (see `Http::resume`).
    Pause,
    /// The filter answered with `proxy_send_local_response` (or the failure policy did); the
    /// exchange is over. What the client got is in `Http::client_response`.
    LocalReply(LocalReply),
    /// The stream was reset or the connection closed (`proxy_close_stream`, a local reply
    /// after the response started, fail-closed TCP).
    Closed { details: String },
    /// The filter failed in this step (trap, deadline, memory); its VM is now failed. The
    /// failure policy already applied to this stream, as Envoy does right after the callback:
    /// fail-closed answered it (`Http::client_response`: a local 503 `wasm_fail_stream`),
    /// fail-open let it continue without the filter. Later streams follow the policy too.
    Failed(HostError),
}

impl Step {
    /// Short name: `continue`, `pause`, `local_reply`, `closed`, `failed`.
    pub fn name(&self) -> &'static str {
        match self {
            Step::Continue => "continue",
            Step::Pause => "pause",
            Step::LocalReply(_) => "local_reply",
            Step::Closed { .. } => "closed",
            Step::Failed(_) => "failed",
        }
    }
}

/// A local reply as the filter sent it (before its own response callbacks ran on it).
#[derive(Clone, Debug, PartialEq)]
pub struct LocalReply {
    /// HTTP status code.
    pub status: u32,
    /// Additional headers the filter gave, keys lower-cased.
    pub headers: HeaderMap,
    pub body: Vec<u8>,
    /// Response code details (whitespace replaced by `_`, as Envoy does).
    pub details: String,
    /// gRPC status (0..=16), None for "no gRPC status" (the SDK passes -1).
    pub grpc_status: Option<u32>,
}

/// Headers, body and trailers of one direction of an exchange as they left the filter.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Message {
    pub headers: HeaderMap,
    pub body: Vec<u8>,
    pub trailers: HeaderMap,
    /// True when everything up to end of stream went through.
    pub complete: bool,
}

/// Identifies a stream in its proxy, for reopening a handle with `Proxy::http_stream`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct StreamId {
    pub thread: Thread,
    /// The stream's context id inside its VM.
    pub context: u32,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum Paused {
    #[default]
    No,
    Headers,
    Body,
    Trailers,
}

/// One direction of an HTTP exchange.
#[derive(Default)]
pub(crate) struct Side {
    pub headers: HeaderMap,
    pub has_headers: bool,
    /// The filter wrote to the headers (added, replaced, removed one that was there, or set
    /// the map) since they were given.
    pub headers_changed: bool,
    /// Headers as forwarded, kept when the filter changes them after forwarding.
    pub sent_headers: Option<HeaderMap>,
    pub headers_forwarded: bool,
    pub trailers: HeaderMap,
    pub has_trailers: bool,
    pub trailers_delivered: bool,
    pub trailers_forwarded: bool,
    /// Body bytes held by the filter (buffered while paused), readable in body callbacks.
    pub body: Vec<u8>,
    pub body_visible: bool,
    pub forwarded_body: Vec<u8>,
    pub end_stream: bool,
    pub paused: Paused,
}

impl Side {
    fn reset(&mut self) {
        self.headers.clear();
        self.has_headers = false;
        self.headers_changed = false;
        self.sent_headers = None;
        self.headers_forwarded = false;
        self.trailers.clear();
        self.has_trailers = false;
        self.trailers_delivered = false;
        self.trailers_forwarded = false;
        self.body.clear();
        self.body_visible = false;
        self.forwarded_body.clear();
        self.end_stream = false;
        self.paused = Paused::No;
    }

    pub(crate) fn snapshot_headers(&mut self) {
        if self.headers_forwarded && self.sent_headers.is_none() {
            self.sent_headers = Some(self.headers.clone());
        }
    }

    fn forward_body(&mut self) {
        if self.forwarded_body.is_empty() {
            // Nothing forwarded waits to be taken (a proxy takes each piece as it goes): the
            // held bytes become the forwarded ones without a copy.
            std::mem::swap(&mut self.forwarded_body, &mut self.body);
        } else {
            self.forwarded_body.extend_from_slice(&self.body);
        }
        self.body.clear();
        self.body_visible = false;
    }

    /// The headers as they left the filter, None before they did.
    fn headers_out(&self) -> Option<&HeaderMap> {
        self.headers_forwarded.then(|| self.sent_headers.as_ref().unwrap_or(&self.headers))
    }

    fn message(&self) -> Option<Message> {
        if !self.headers_forwarded {
            return None;
        }
        Some(Message {
            headers: self.headers_out()?.clone(),
            body: self.forwarded_body.clone(),
            trailers: if self.trailers_forwarded { self.trailers.clone() } else { HeaderMap::new() },
            complete: self.end_stream && self.paused == Paused::No && self.body.is_empty(),
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Which {
    Request,
    Response,
}

/// State of one HTTP stream, kept in its VM's store so that hostcalls can reach it.
#[derive(Default)]
pub(crate) struct HttpData {
    pub created: bool,
    pub request: Side,
    pub response: Side,
    pub local_reply: Option<LocalReply>,
    pub closed: Option<String>,
    pub connection_id: u64,
    pub properties: PropertyMap,
    pub in_local_reply: bool,
    /// The filter failed in this stream or its VM had failed (fail-open: bypassed).
    pub bypass: bool,
    pub last: Option<Which>,
    /// `set_envoy_filter_state` objects.
    pub filter_state: FilterState,
}

impl HttpData {
    fn reset(&mut self) {
        self.created = false;
        self.request.reset();
        self.response.reset();
        self.local_reply = None;
        self.closed = None;
        self.properties.clear();
        self.in_local_reply = false;
        self.bypass = false;
        self.last = None;
        self.filter_state.clear();
    }

    fn side(&mut self, which: Which) -> &mut Side {
        match which {
            Which::Request => &mut self.request,
            Which::Response => &mut self.response,
        }
    }
}

/// One direction of a TCP connection.
#[derive(Default)]
pub(crate) struct Direction {
    pub buffered: Vec<u8>,
    pub visible: bool,
    pub forwarded: Vec<u8>,
    pub paused: bool,
    pub end_stream: bool,
}

/// State of one TCP connection.
#[derive(Default)]
pub(crate) struct TcpData {
    pub created: bool,
    /// Data from the client, towards the upstream.
    pub downstream: Direction,
    /// Data from the upstream, towards the client.
    pub upstream: Direction,
    pub closed: Option<String>,
    pub close_requests: Vec<CloseRequest>,
    pub connection_id: u64,
    pub properties: PropertyMap,
    pub bypass: bool,
    /// `set_envoy_filter_state` objects.
    pub filter_state: FilterState,
    /// The cluster the TCP proxy chose once the filter let the connection through.
    pub upstream_cluster: Option<String>,
}

/// A `proxy_close_stream` a TCP filter asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseRequest {
    /// Close the client side (Envoy: `wasm_downstream_close`).
    Downstream,
    /// Close the upstream side.
    Upstream,
}

pub(crate) enum StreamData {
    Http(Box<HttpData>),
    Tcp(Box<TcpData>),
}

impl StreamData {
    pub(crate) fn properties_mut(&mut self) -> &mut PropertyMap {
        match self {
            StreamData::Http(h) => &mut h.properties,
            StreamData::Tcp(t) => &mut t.properties,
        }
    }

    /// A property the filter set on this stream.
    pub(crate) fn filter_property(&self, path: &[u8]) -> Option<&[u8]> {
        match self {
            StreamData::Http(h) => h.properties.get(path),
            StreamData::Tcp(t) => t.properties.get(path),
        }
    }

    /// A property as Envoy derives it from the stream, after those the filter set.
    pub(crate) fn property(&self, path: &[u8]) -> Option<Vec<u8>> {
        let (props, conn) = match self {
            StreamData::Http(h) => (&h.properties, h.connection_id),
            StreamData::Tcp(t) => (&t.properties, t.connection_id),
        };
        if let Some(v) = props.get(path) {
            return Some(v.to_vec());
        }
        if path == b"connection_id" || path == b"connection\0id" {
            return Some(conn.to_le_bytes().to_vec());
        }
        let StreamData::Http(h) = self else {
            return None;
        };
        let req = &h.request.headers;
        let header = |name: &[u8]| req.get(name).map(<[u8]>::to_vec);
        match path {
            b"request\0path" => header(b":path"),
            b"request\0url_path" => header(b":path").map(|p| {
                let end = p.iter().position(|&b| b == b'?').unwrap_or(p.len());
                p[..end].to_vec()
            }),
            b"request\0method" => header(b":method"),
            b"request\0host" => header(b":authority"),
            b"request\0scheme" => header(b":scheme"),
            b"request\0id" => header(b"x-request-id"),
            b"request\0user_agent" => header(b"user-agent"),
            b"response\0code" => {
                let code = match &h.local_reply {
                    Some(r) => Some(i64::from(r.status)),
                    None => h.response.headers.get(b":status").and_then(|s| std::str::from_utf8(s).ok()?.parse().ok()),
                };
                code.map(int_value)
            }
            b"response\0code_details" => h.local_reply.as_ref().map(|r| r.details.as_bytes().to_vec()),
            _ => {
                // request.headers.<name>
                let prefix = b"request\0headers\0";
                if path.starts_with(prefix) {
                    return header(&path[prefix.len()..]);
                }
                None
            }
        }
    }

    /// "GET /path (context 3)" for error messages.
    pub(crate) fn describe(&self, context: u32) -> String {
        match self {
            StreamData::Http(h) => {
                let m = h.request.headers.get_str(":method").unwrap_or_default();
                let p = h.request.headers.get_str(":path").unwrap_or_default();
                if m.is_empty() && p.is_empty() {
                    format!("HTTP stream (context {context})")
                } else {
                    format!("request {m} {p} (context {context})")
                }
            }
            StreamData::Tcp(t) => format!("TCP connection {} (context {context})", t.connection_id),
        }
    }
}

fn fail_closed_reply() -> LocalReply {
    LocalReply {
        status: 503,
        headers: HeaderMap::new(),
        body: Vec::new(),
        details: "wasm_fail_stream".into(),
        grpc_status: Some(14),
    }
}

/// Envoy's `Grpc::Common::hasGrpcContentType`: `application/grpc`, alone or followed by `+`
/// (`application/grpc-web` is not gRPC).
pub(crate) fn is_grpc(request: &HeaderMap) -> bool {
    request.get(b"content-type").is_some_and(|ct| match ct.strip_prefix(b"application/grpc") {
        Some(rest) => rest.is_empty() || rest[0] == b'+',
        None => false,
    })
}

/// Envoy's `Grpc::Utility::httpToGrpcStatus` (`source/common/grpc/status.cc`).
pub(crate) fn http_to_grpc_status(http: u32) -> u32 {
    match http {
        400 => 13,
        401 => 16,
        403 => 7,
        404 => 12,
        429 | 502 | 503 | 504 => 14,
        _ => 2,
    }
}

/// Envoy's `Http::Utility::PercentEncoding::encode` as `grpc-message` uses it: bytes outside
/// ' '..'}' and '%' become `%XX`.
fn percent_encode(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    for &b in text {
        if !(b' '..b'~').contains(&b) || b == b'%' {
            out.extend_from_slice(format!("%{b:02X}").as_bytes());
        } else {
            out.push(b);
        }
    }
    out
}

/// The response headers a local reply sends, as Envoy's `Http::Utility::prepareLocalReply`
/// (`source/common/http/utility.cc`) builds them: the filter's headers after `:status`; for a
/// gRPC request a trailers-only response (`:status 200`, `content-type: application/grpc`,
/// `grpc-status` the filter's or mapped from the HTTP status, the body percent-encoded in
/// `grpc-message`, no body); otherwise the body with its length, and the filter's gRPC status
/// ignored. `body` is the body the client gets (non-gRPC).
pub(crate) fn reply_headers(request: &HeaderMap, reply: &LocalReply, body: &[u8]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    if is_grpc(request) {
        headers.add(b":status", b"200");
        for (k, v) in reply.headers.iter() {
            if k != b"content-length" && k != b"content-type" {
                headers.add(k, v);
            }
        }
        headers.add(b"content-type", b"application/grpc");
        if headers.get(b"grpc-status").is_none() {
            let g = reply.grpc_status.unwrap_or_else(|| http_to_grpc_status(reply.status));
            headers.add(b"grpc-status", g.to_string().as_bytes());
        }
        let message = reply.body.strip_suffix(b"\n").unwrap_or(&reply.body);
        if !message.is_empty() {
            headers.add(b"grpc-message", &percent_encode(message));
        }
        return headers;
    }
    headers.add(b":status", reply.status.to_string().as_bytes());
    for (k, v) in reply.headers.iter() {
        headers.add(k, v);
    }
    if !body.is_empty() {
        headers.add(b"content-length", body.len().to_string().as_bytes());
        if headers.get(b"content-type").is_none() {
            headers.add(b"content-type", b"text/plain");
        }
    }
    headers
}

/// Applies a callback's action (0 = Continue, else Pause) at `stage` of a side.
fn apply_action(h: &mut HttpData, which: Which, stage: Paused, action: i32) {
    if h.local_reply.is_some() || h.closed.is_some() {
        return;
    }
    let side = h.side(which);
    if action != 0 {
        side.paused = stage;
        return;
    }
    side.paused = Paused::No;
    match stage {
        Paused::Headers => side.headers_forwarded = true,
        Paused::Body => {
            side.forward_body();
            // Trailers the filter added in its last body callback follow its body.
            side.trailers_forwarded |= side.has_trailers && side.trailers_delivered;
        }
        Paused::Trailers => {
            side.forward_body();
            side.trailers_forwarded = true;
        }
        Paused::No => {}
    }
}

/// The stream-driving half of a VM.
impl Vm {
    fn http(&mut self, ctx: u32) -> Option<&mut HttpData> {
        match self.store.data_mut().streams.get_mut(&ctx) {
            Some(StreamData::Http(h)) => Some(h),
            _ => None,
        }
    }

    fn tcp(&mut self, ctx: u32) -> Option<&mut TcpData> {
        match self.store.data_mut().streams.get_mut(&ctx) {
            Some(StreamData::Tcp(t)) => Some(t),
            _ => None,
        }
    }

    pub(crate) fn open_http(&mut self, connection_id: u64) -> u32 {
        let st = self.store.data_mut();
        let ctx = st.alloc_context_id();
        let mut data = st.pool.pop().unwrap_or_default();
        data.reset();
        data.connection_id = connection_id;
        st.streams.insert(ctx, StreamData::Http(data));
        ctx
    }

    pub(crate) fn open_tcp(&mut self, connection_id: u64) -> u32 {
        let st = self.store.data_mut();
        let ctx = st.alloc_context_id();
        st.streams.insert(ctx, StreamData::Tcp(Box::new(TcpData { connection_id, ..TcpData::default() })));
        ctx
    }

    /// Calls `proxy_on_context_create(ctx, root)` once, lazily (Envoy: at request headers or
    /// new connection).
    fn ensure_created(&mut self, ctx: u32, created: bool) -> Result<(), HostError> {
        if created {
            return Ok(());
        }
        let root = self.root_context();
        self.call("proxy_on_context_create", |e| e.on_context_create.as_ref(), (ctx as i32, root as i32), ctx)?;
        Ok(())
    }

    /// Outcome of the stream as the caller sees it now.
    fn http_outcome(&mut self, ctx: u32, which: Which) -> Step {
        let Some(h) = self.http(ctx) else {
            return Step::Failed(HostError::usage(format!("no HTTP stream with context {ctx}")));
        };
        if let Some(details) = &h.closed {
            return Step::Closed { details: details.clone() };
        }
        if let Some(reply) = &h.local_reply {
            return Step::LocalReply(reply.clone());
        }
        if h.side(which).paused != Paused::No {
            Step::Pause
        } else {
            Step::Continue
        }
    }

    /// Applies the failure policy to a step on a stream of a failed VM. None when the VM is fine.
    fn http_failed_step(&mut self, ctx: u32, which: Which) -> Option<Step> {
        self.failed.as_ref()?;
        let policy = self.policy;
        let h = self.http(ctx)?;
        h.bypass = true;
        match policy {
            FailurePolicy::FailOpen => {
                // The filter is bypassed: everything goes through untouched.
                let side = h.side(which);
                side.paused = Paused::No;
                side.headers_forwarded = side.has_headers;
                side.forward_body();
                side.trailers_forwarded = side.has_trailers;
                Some(Step::Continue)
            }
            // FAIL_RELOAD: the stream of a failed VM (or one opened during the reload backoff)
            // is failed closed; the next stream may get a reloaded VM.
            FailurePolicy::FailClosed | FailurePolicy::FailReload => {
                if h.local_reply.is_none() && h.closed.is_none() {
                    if h.response.headers_forwarded {
                        h.closed = Some("wasm_fail_stream".into());
                    } else {
                        let reply = fail_closed_reply();
                        h.response.reset();
                        h.response.headers = reply_headers(&h.request.headers, &reply, &[]);
                        h.response.has_headers = true;
                        h.response.headers_forwarded = true;
                        h.response.end_stream = true;
                        h.local_reply = Some(reply);
                    }
                }
                Some(self.http_outcome(ctx, which))
            }
        }
    }

    /// The stream, if a step on `which` is allowed now; else the step to return.
    fn check_open(&mut self, ctx: u32, which: Which, needs_headers: bool) -> Result<&mut HttpData, Step> {
        let Some(h) = self.http(ctx) else {
            return Err(Step::Failed(HostError::usage(format!(
                "no HTTP stream with context {ctx} (finished already?)"
            ))));
        };
        if h.local_reply.is_some() || h.closed.is_some() {
            return Err(Step::Failed(HostError::usage("the exchange is over (local reply or reset); finish it")));
        }
        let reached = h.request.headers_forwarded || h.bypass;
        let side = h.side(which);
        if needs_headers && !side.has_headers {
            return Err(Step::Failed(HostError::usage("send headers first")));
        }
        if !needs_headers && side.has_headers {
            return Err(Step::Failed(HostError::usage("headers were already sent")));
        }
        if needs_headers && side.end_stream {
            return Err(Step::Failed(HostError::usage("end of stream was already sent")));
        }
        if which == Which::Response && !reached {
            return Err(Step::Failed(HostError::usage(
                "the request never reached the upstream: there is no response to send",
            )));
        }
        h.last = Some(which);
        Ok(h)
    }

    /// A side's headers, written by `fill` into the stream's own (pooled) map.
    pub(crate) fn http_headers(
        &mut self,
        ctx: u32,
        which: Which,
        fill: impl FnOnce(&mut HeaderMap),
        end_of_stream: bool,
    ) -> Step {
        let h = match self.check_open(ctx, which, false) {
            Ok(h) => h,
            Err(step) => return step,
        };
        let side = h.side(which);
        side.headers.clear();
        fill(&mut side.headers);
        side.headers_changed = false;
        side.has_headers = true;
        side.end_stream = end_of_stream;
        let n = side.headers.len() as i32;
        let created = h.created;
        h.created = true;
        if let Some(step) = self.http_failed_step(ctx, which) {
            return step;
        }
        if let Err(e) = self.ensure_created(ctx, created) {
            return self.stream_failed(ctx, e);
        }
        // ngx_wasm_module passes end_of_stream = 0 to both header callbacks, body or not
        // (ngx_http_proxy_wasm.c, `ngx_http_proxy_wasm_on_request_headers`/`_on_response_headers`).
        let eos = end_of_stream && !self.profile.ngx();
        let args = (ctx as i32, n, eos as i32);
        let result = match which {
            Which::Request => self.call("proxy_on_request_headers", |e| e.on_request_headers.as_ref(), args, ctx),
            Which::Response => self.call("proxy_on_response_headers", |e| e.on_response_headers.as_ref(), args, ctx),
        };
        let action = match result {
            Ok(a) => a.unwrap_or(0),
            Err(e) => return self.stream_failed(ctx, e),
        };
        self.settle(ctx, which, Paused::Headers, action)
    }

    pub(crate) fn http_body(&mut self, ctx: u32, which: Which, chunk: &[u8], end_of_stream: bool) -> Step {
        let h = match self.check_open(ctx, which, true) {
            Ok(h) => h,
            Err(step) => return step,
        };
        let side = h.side(which);
        side.body.extend_from_slice(chunk);
        side.end_stream = end_of_stream;
        if let Some(step) = self.http_failed_step(ctx, which) {
            return step;
        }
        let Some(h) = self.http(ctx) else {
            return Step::Continue;
        };
        let side = h.side(which);
        if side.paused == Paused::Headers {
            // StopAllIteration: Envoy buffers without calling the filter until it resumes.
            return Step::Pause;
        }
        self.deliver_body(ctx, which)
    }

    fn deliver_body(&mut self, ctx: u32, which: Which) -> Step {
        let Some(h) = self.http(ctx) else {
            return Step::Continue;
        };
        let side = h.side(which);
        side.body_visible = true;
        let eos = side.end_stream && !side.has_trailers;
        let len = side.body.len() as i32;
        let args = (ctx as i32, len, eos as i32);
        let result = match which {
            Which::Request => self.call("proxy_on_request_body", |e| e.on_request_body.as_ref(), args, ctx),
            Which::Response => self.call("proxy_on_response_body", |e| e.on_response_body.as_ref(), args, ctx),
        };
        let action = match result {
            Ok(a) => a.unwrap_or(0),
            Err(e) => return self.stream_failed(ctx, e),
        };
        self.settle(ctx, which, Paused::Body, action)
    }

    pub(crate) fn http_trailers<K: AsRef<[u8]>, V: AsRef<[u8]>>(
        &mut self,
        ctx: u32,
        which: Which,
        trailers: &[(K, V)],
    ) -> Step {
        let h = match self.check_open(ctx, which, true) {
            Ok(h) => h,
            Err(step) => return step,
        };
        let side = h.side(which);
        side.trailers.clear();
        side.trailers.extend(trailers);
        side.has_trailers = true;
        side.end_stream = true;
        if let Some(step) = self.http_failed_step(ctx, which) {
            return step;
        }
        let Some(h) = self.http(ctx) else {
            return Step::Continue;
        };
        if h.side(which).paused == Paused::Headers {
            return Step::Pause;
        }
        self.deliver_trailers(ctx, which)
    }

    fn deliver_trailers(&mut self, ctx: u32, which: Which) -> Step {
        let Some(h) = self.http(ctx) else {
            return Step::Continue;
        };
        let side = h.side(which);
        side.trailers_delivered = true;
        let n = side.trailers.len() as i32;
        let args = (ctx as i32, n);
        let result = match which {
            Which::Request => self.call("proxy_on_request_trailers", |e| e.on_request_trailers.as_ref(), args, ctx),
            Which::Response => self.call("proxy_on_response_trailers", |e| e.on_response_trailers.as_ref(), args, ctx),
        };
        let action = match result {
            Ok(a) => a.unwrap_or(0),
            Err(e) => return self.stream_failed(ctx, e),
        };
        self.settle(ctx, which, Paused::Trailers, action)
    }

    /// A callback of this stream failed. cpp-host checks for failure right after each callback
    /// (`src/context.cc`, `CHECK_FAIL_HTTP` / `CHECK_FAIL_NETWORK`): fail-open returns Continue,
    /// otherwise `failStream` answers the stream (Envoy `Context::failStream`: local 503,
    /// `wasm_fail_stream`, gRPC Unavailable) in that same step. The step still reports the
    /// failure; what the client got is in `Http::client_response`.
    fn stream_failed(&mut self, ctx: u32, e: HostError) -> Step {
        if self.failed.is_some() {
            if let Some(which) = self.http(ctx).map(|h| h.last.unwrap_or(Which::Request)) {
                self.http_failed_step(ctx, which);
            } else {
                self.tcp_failed_step(ctx);
            }
        }
        if let Some(h) = self.http(ctx) {
            h.bypass = true;
        }
        if let Some(t) = self.tcp(ctx) {
            t.bypass = true;
        }
        Step::Failed(e)
    }

    /// Applies a callback's action, runs what it deferred, and says where the stream stands.
    fn settle(&mut self, ctx: u32, which: Which, stage: Paused, action: i32) -> Step {
        let deferred = !self.store.data().deferred.is_empty();
        if let Some(h) = self.http(ctx) {
            apply_action(h, which, stage, action);
            if !deferred && h.local_reply.is_none() && h.closed.is_none() {
                // The common case: nothing deferred, so the side's state is the answer.
                return if h.side(which).paused == Paused::No { Step::Continue } else { Step::Pause };
            }
        }
        if deferred {
            self.run_deferred();
        }
        self.http_outcome(ctx, which)
    }

    /// Runs what hostcalls deferred (continue, close, local reply) until nothing is left.
    #[inline]
    pub(crate) fn run_deferred(&mut self) {
        // Most callbacks defer nothing: one check, no call.
        if !self.in_deferred && !self.store.data().deferred.is_empty() {
            self.drain_deferred();
        }
    }

    fn drain_deferred(&mut self) {
        self.in_deferred = true;
        loop {
            let next = {
                let st = self.store.data_mut();
                if st.deferred.is_empty() {
                    break;
                }
                st.deferred.remove(0)
            };
            if self.failed.is_some() {
                self.store.data_mut().deferred.clear();
                break;
            }
            match next {
                Deferred::Continue { context, stream } => self.resume(context, stream),
                Deferred::Close { context, stream } => self.close(context, stream),
                Deferred::LocalReply { context, reply } => self.local_reply(context, reply),
            }
        }
        self.in_deferred = false;
    }

    fn resume(&mut self, ctx: u32, stream: i32) {
        if stream == stream_type::DOWNSTREAM {
            if let Some(t) = self.tcp(ctx) {
                // Envoy's continueReading hands the buffered data to the next filters.
                t.downstream.paused = false;
                t.downstream.forwarded.extend_from_slice(&t.downstream.buffered);
                t.downstream.buffered.clear();
                t.downstream.visible = false;
            }
            return;
        }
        let which = if stream == stream_type::HTTP_REQUEST { Which::Request } else { Which::Response };
        let Some(h) = self.http(ctx) else {
            return;
        };
        if h.local_reply.is_some() || h.closed.is_some() {
            return;
        }
        let side = h.side(which);
        match side.paused {
            Paused::No => {}
            Paused::Headers => {
                side.paused = Paused::No;
                side.headers_forwarded = true;
                let has_body = !side.body.is_empty();
                let pending_trailers = side.has_trailers && !side.trailers_delivered;
                if has_body {
                    // StopAllIteration resumed: the filter now sees the data it missed.
                    if let Step::Pause | Step::Failed(_) = self.deliver_body(ctx, which) {
                        return;
                    }
                }
                if pending_trailers {
                    let _ = self.deliver_trailers(ctx, which);
                }
            }
            Paused::Body => {
                side.paused = Paused::No;
                side.forward_body();
                if side.has_trailers && !side.trailers_delivered {
                    let _ = self.deliver_trailers(ctx, which);
                } else {
                    // Added by the filter in its last body callback: they follow its body.
                    side.trailers_forwarded |= side.has_trailers;
                }
            }
            Paused::Trailers => {
                side.paused = Paused::No;
                side.forward_body();
                side.trailers_forwarded = true;
            }
        }
    }

    fn close(&mut self, ctx: u32, stream: i32) {
        if let Some(h) = self.http(ctx) {
            if h.closed.is_none() && h.local_reply.is_none() {
                h.closed = Some("wasm_close_stream".into());
            }
            return;
        }
        if let Some(t) = self.tcp(ctx) {
            let (req, details) = if stream == stream_type::UPSTREAM {
                (CloseRequest::Upstream, "wasm_upstream_close")
            } else {
                (CloseRequest::Downstream, "wasm_downstream_close")
            };
            t.close_requests.push(req);
            if t.closed.is_none() {
                t.closed = Some(details.into());
            }
        }
    }

    /// Envoy's deferred `sendLocalReply`: the response is built, then runs through the same
    /// filter's `on_response_headers` / `on_response_body` before reaching the client.
    fn local_reply(&mut self, ctx: u32, reply: LocalReply) {
        let ngx = self.profile.ngx();
        let Some(h) = self.http(ctx) else {
            self.store
                .data()
                .log(LogLevel::Warn, "proxy_send_local_response outside an HTTP stream: ignored (as in Envoy)".into());
            return;
        };
        if h.local_reply.is_some() || h.in_local_reply || h.closed.is_some() {
            self.store
                .data()
                .log(LogLevel::Warn, "second proxy_send_local_response on one stream ignored (envoy#28826)".into());
            return;
        }
        if h.response.headers_forwarded {
            // The client already has response headers: Envoy can only reset the stream.
            h.closed = Some("local reply after the response started: stream reset".into());
            return;
        }
        let created = h.created;
        h.request.paused = Paused::No;
        h.request.body_visible = false;
        let grpc = is_grpc(&h.request.headers);
        let mut body = reply.body.clone();
        if ngx && !body.is_empty() && !grpc {
            // ngx_wasm_module sends the body with a line feed appended, counted in its
            // content-length (ngx_http_wasm_local_response.c, `ngx_http_wasm_stash_local_response`).
            body.push(b'\n');
        }
        let headers = reply_headers(&h.request.headers, &reply, &body);
        let resp = &mut h.response;
        resp.reset();
        resp.headers = headers;
        if !grpc {
            resp.body = body;
        }
        resp.has_headers = true;
        resp.end_stream = true;
        let n = resp.headers.len() as i32;
        let body_len = resp.body.len() as i32;
        h.in_local_reply = true;
        h.local_reply = Some(reply);
        if created {
            let args = (ctx as i32, n, (body_len == 0 && !ngx) as i32);
            if self.call("proxy_on_response_headers", |e| e.on_response_headers.as_ref(), args, ctx).is_err() {
                return;
            }
            if body_len > 0 {
                if let Some(h) = self.http(ctx) {
                    h.response.body_visible = true;
                    h.response.headers_forwarded = true;
                }
                let args = (ctx as i32, body_len, 1);
                if self.call("proxy_on_response_body", |e| e.on_response_body.as_ref(), args, ctx).is_err() {
                    return;
                }
            }
        }
        if let Some(h) = self.http(ctx) {
            h.in_local_reply = false;
            h.response.headers_forwarded = true;
            h.response.paused = Paused::No;
            h.response.forward_body();
        }
    }

    /// done → log → delete, then the stream's state is recycled and its calls cancelled.
    pub(crate) fn finish(&mut self, ctx: u32) -> Result<(), HostError> {
        let created = match self.store.data().streams.get(&ctx) {
            Some(StreamData::Http(h)) => h.created,
            Some(StreamData::Tcp(t)) => t.created,
            None => return Err(HostError::usage(format!("no stream with context {ctx}"))),
        };
        let mut result = Ok(());
        if created && self.failed.is_none() {
            result = (|| {
                let c = ctx as i32;
                // false means "I will call proxy_done"; this host finishes the context anyway.
                self.call("proxy_on_done", |e| e.on_done.as_ref(), c, ctx)?;
                self.call("proxy_on_log", |e| e.on_log.as_ref(), c, ctx)?;
                self.call("proxy_on_delete", |e| e.on_delete.as_ref(), c, ctx)?;
                Ok(())
            })();
        }
        let instance = self.store.data().instance;
        let st = self.store.data_mut();
        // Actions deferred by on_done/on_log/on_delete of this stream have nothing to act on.
        if !st.deferred.is_empty() {
            st.deferred.retain(|d| match d {
                Deferred::Continue { context, .. }
                | Deferred::Close { context, .. }
                | Deferred::LocalReply { context, .. } => *context != ctx,
            });
        }
        if let Some(StreamData::Http(h)) = st.streams.remove(&ctx) {
            if st.pool.len() < 64 {
                st.pool.push(h);
            }
        }
        if !st.deferred.is_empty() {
            self.run_deferred();
        }
        let shared = &self.store.data().shared;
        if shared.calls_outstanding() {
            super::state::lock(&shared.calls).cancel_context(instance, ctx);
        }
        result
    }

    pub(crate) fn http_resume(&mut self, ctx: u32) -> Step {
        let which = match self.http(ctx) {
            Some(h) => h.last.unwrap_or(Which::Request),
            None => return Step::Failed(HostError::usage(format!("no HTTP stream with context {ctx}"))),
        };
        self.http_outcome(ctx, which)
    }

    pub(crate) fn http_view(&mut self, ctx: u32) -> Option<&HttpData> {
        self.http(ctx).map(|h| &*h)
    }

    // --- TCP ---

    fn tcp_failed_step(&mut self, ctx: u32) -> Option<Step> {
        self.failed.as_ref()?;
        let policy = self.policy;
        let t = self.tcp(ctx)?;
        t.bypass = true;
        Some(match policy {
            FailurePolicy::FailOpen => {
                for d in [&mut t.downstream, &mut t.upstream] {
                    d.forwarded.extend_from_slice(&d.buffered);
                    d.buffered.clear();
                    d.paused = false;
                }
                Step::Continue
            }
            FailurePolicy::FailClosed | FailurePolicy::FailReload => {
                let details = t.closed.get_or_insert_with(|| "wasm_fail_stream".into()).clone();
                Step::Closed { details }
            }
        })
    }

    fn tcp_outcome(&mut self, ctx: u32, downstream: bool) -> Step {
        let Some(t) = self.tcp(ctx) else {
            return Step::Failed(HostError::usage(format!("no TCP connection with context {ctx}")));
        };
        if let Some(details) = &t.closed {
            return Step::Closed { details: details.clone() };
        }
        let d = if downstream { &t.downstream } else { &t.upstream };
        if d.paused {
            return Step::Pause;
        }
        if downstream && t.upstream_cluster.is_none() {
            self.choose_tcp_cluster(ctx);
        }
        Step::Continue
    }

    pub(crate) fn tcp_new_connection(&mut self, ctx: u32) -> Step {
        let Some(t) = self.tcp(ctx) else {
            return Step::Failed(HostError::usage(format!("no TCP connection with context {ctx}")));
        };
        if t.created {
            return Step::Failed(HostError::usage("new_connection was already called"));
        }
        t.created = true;
        if let Some(step) = self.tcp_failed_step(ctx) {
            return step;
        }
        if let Err(e) = self.ensure_created(ctx, false) {
            return self.stream_failed(ctx, e);
        }
        let action = match self.call("proxy_on_new_connection", |e| e.on_new_connection.as_ref(), ctx as i32, ctx) {
            Ok(a) => a.unwrap_or(0),
            Err(e) => return self.stream_failed(ctx, e),
        };
        if let Some(t) = self.tcp(ctx) {
            t.downstream.paused = action != 0;
        }
        self.run_deferred();
        self.tcp_outcome(ctx, true)
    }

    pub(crate) fn tcp_data(&mut self, ctx: u32, downstream: bool, chunk: &[u8], end_of_stream: bool) -> Step {
        let Some(t) = self.tcp(ctx) else {
            return Step::Failed(HostError::usage(format!("no TCP connection with context {ctx}")));
        };
        if !t.created {
            return Step::Failed(HostError::usage("call new_connection first"));
        }
        if t.closed.is_some() {
            return Step::Failed(HostError::usage("the connection is closed"));
        }
        let d = if downstream { &mut t.downstream } else { &mut t.upstream };
        d.buffered.extend_from_slice(chunk);
        d.end_stream = end_of_stream;
        d.visible = true;
        let len = d.buffered.len() as i32;
        if let Some(step) = self.tcp_failed_step(ctx) {
            return step;
        }
        let args = (ctx as i32, len, end_of_stream as i32);
        let result = if downstream {
            self.call("proxy_on_downstream_data", |e| e.on_downstream_data.as_ref(), args, ctx)
        } else {
            self.call("proxy_on_upstream_data", |e| e.on_upstream_data.as_ref(), args, ctx)
        };
        let action = match result {
            Ok(a) => a.unwrap_or(0),
            Err(e) => return self.stream_failed(ctx, e),
        };
        if let Some(t) = self.tcp(ctx) {
            let d = if downstream { &mut t.downstream } else { &mut t.upstream };
            if action == 0 {
                d.paused = false;
                d.forwarded.extend_from_slice(&d.buffered);
                d.buffered.clear();
                d.visible = false;
            } else {
                // StopIteration: the data stays in the connection buffer and is offered again,
                // with what arrives next, on the next call.
                d.paused = true;
            }
        }
        self.run_deferred();
        self.tcp_outcome(ctx, downstream)
    }

    pub(crate) fn tcp_close(&mut self, ctx: u32, downstream: bool, peer: i32) -> Result<(), HostError> {
        let Some(t) = self.tcp(ctx) else {
            return Err(HostError::usage(format!("no TCP connection with context {ctx}")));
        };
        if !t.created || t.bypass || self.failed.is_some() {
            return Ok(());
        }
        if downstream {
            self.call(
                "proxy_on_downstream_connection_close",
                |e| e.on_downstream_connection_close.as_ref(),
                (ctx as i32, peer),
                ctx,
            )?;
        } else {
            self.call(
                "proxy_on_upstream_connection_close",
                |e| e.on_upstream_connection_close.as_ref(),
                (ctx as i32, peer),
                ctx,
            )?;
        }
        self.run_deferred();
        Ok(())
    }

    pub(crate) fn tcp_view(&mut self, ctx: u32) -> Option<&TcpData> {
        self.tcp(ctx).map(|t| &*t)
    }
}

/// A handle on one HTTP exchange of a proxy's worker. Drive it in Envoy's order: request
/// headers, body chunks, trailers, then the response side, then [`Http::finish`].
/// Handles borrow the proxy; keep the [`StreamId`] and reopen with `Proxy::http_stream` to
/// interleave many exchanges.
pub struct Http<'p> {
    pub(crate) proxy: &'p mut Proxy,
    pub(crate) id: StreamId,
}

impl Http<'_> {
    /// The stream's id, to reopen it later.
    pub fn id(&self) -> StreamId {
        self.id
    }

    pub(crate) fn vm(&mut self) -> &mut Vm {
        self.proxy.vm_mut(self.id.thread.index())
    }

    fn done(&mut self, step: Step) -> Step {
        self.proxy.after_step();
        step
    }

    /// Sets a property of this stream only (`xds.cluster_name`, `source.address`, ... by dotted
    /// path), as Envoy knows them per stream once the route is chosen; it overrides the proxy's
    /// `ProxyOptions::properties`. Call it before the request headers.
    pub fn set_property(&mut self, path: &str, value: &[u8]) {
        let ctx = self.id.context;
        if let Some(stream) = self.vm().store.data_mut().streams.get_mut(&ctx) {
            stream.properties_mut().set_dotted(path, value);
        }
    }

    /// `set_property` for several at once, by paths converted once (a proxy's per-request
    /// `xds.cluster_name`, `source.address`, ...): the stream is looked up once.
    pub fn set_properties(&mut self, properties: &[(&PropertyPath, &[u8])]) {
        let ctx = self.id.context;
        if let Some(stream) = self.vm().store.data_mut().streams.get_mut(&ctx) {
            let map = stream.properties_mut();
            for (path, value) in properties {
                map.set(path.as_bytes(), value);
            }
        }
    }

    /// Request headers from the client (`:method`, `:path`, `:authority`, ... included);
    /// creates the filter's context on first call, then calls `proxy_on_request_headers`.
    /// With `ProxyOptions::connection_manager`, the headers are first prepared as Envoy's
    /// connection manager does, or the request is rejected before the filter sees it
    /// (`Step::LocalReply`).
    pub fn request_headers<K: AsRef<[u8]>, V: AsRef<[u8]>>(&mut self, headers: &[(K, V)], end_of_stream: bool) -> Step {
        let ctx = self.id.context;
        let step = match self.proxy.connection_manager.is_some() {
            false => self.vm().http_headers(ctx, Which::Request, |map| map.extend(headers), end_of_stream),
            true => self.prepared_request_headers(headers, end_of_stream),
        };
        self.done(step)
    }

    /// A chunk of request body; while the filter pauses, chunks accumulate and each body
    /// callback sees everything buffered so far (Envoy's StopIterationAndBuffer).
    pub fn request_body(&mut self, chunk: &[u8], end_of_stream: bool) -> Step {
        let ctx = self.id.context;
        let step = self.vm().http_body(ctx, Which::Request, chunk, end_of_stream);
        self.done(step)
    }

    /// Request trailers (end of the request).
    pub fn request_trailers<K: AsRef<[u8]>, V: AsRef<[u8]>>(&mut self, trailers: &[(K, V)]) -> Step {
        let ctx = self.id.context;
        let step = self.vm().http_trailers(ctx, Which::Request, trailers);
        self.done(step)
    }

    /// Response headers from the upstream (`:status` included).
    pub fn response_headers<K: AsRef<[u8]>, V: AsRef<[u8]>>(
        &mut self,
        headers: &[(K, V)],
        end_of_stream: bool,
    ) -> Step {
        let ctx = self.id.context;
        let step = self.vm().http_headers(ctx, Which::Response, |map| map.extend(headers), end_of_stream);
        self.done(step)
    }

    /// `request_headers` from a map the caller keeps (a proxy's own copy of the request): its
    /// entries are copied into the stream's map, with no list of pairs in between. The
    /// connection manager, if set, prepares them as for `request_headers`.
    pub fn request_header_map(&mut self, headers: &HeaderMap, end_of_stream: bool) -> Step {
        let ctx = self.id.context;
        let step = match self.proxy.connection_manager.is_some() {
            false => self.vm().http_headers(ctx, Which::Request, |map| map.clone_from(headers), end_of_stream),
            true => self.prepared_request_headers(&headers.iter().collect::<Vec<_>>(), end_of_stream),
        };
        self.done(step)
    }

    /// `response_headers` from a map the caller keeps (see `request_header_map`).
    pub fn response_header_map(&mut self, headers: &HeaderMap, end_of_stream: bool) -> Step {
        let ctx = self.id.context;
        let step = self.vm().http_headers(ctx, Which::Response, |map| map.clone_from(headers), end_of_stream);
        self.done(step)
    }

    /// The request headers as the filter let them go (before the connection manager's router,
    /// unlike `upstream_request`), None while it holds them: lent, so that a proxy copies them
    /// into its own map (`HeaderMap::clone_from`) instead of taking a new one per request.
    pub fn request_headers_out(&mut self) -> Option<&HeaderMap> {
        let ctx = self.id.context;
        self.vm().http_view(ctx)?.request.headers_out()
    }

    /// The response headers as the filter let them go, None while it holds them (see
    /// `request_headers_out`). A local reply's are here too, once its response callbacks ran.
    pub fn response_headers_out(&mut self) -> Option<&HeaderMap> {
        let ctx = self.id.context;
        self.vm().http_view(ctx)?.response.headers_out()
    }

    /// Whether the filter changed the request headers it was given: added, replaced or set
    /// any, or removed one that was there. A proxy that kept its own form of the headers sends
    /// that when they are unchanged, instead of converting the filter's map back.
    pub fn request_headers_changed(&mut self) -> bool {
        let ctx = self.id.context;
        self.vm().http_view(ctx).is_some_and(|h| h.request.headers_changed)
    }

    /// Whether the filter changed the response headers it was given (see
    /// `request_headers_changed`). A local reply's headers are the filter's own: check
    /// `local_reply` first.
    pub fn response_headers_changed(&mut self) -> bool {
        let ctx = self.id.context;
        self.vm().http_view(ctx).is_some_and(|h| h.response.headers_changed)
    }

    /// A chunk of response body.
    pub fn response_body(&mut self, chunk: &[u8], end_of_stream: bool) -> Step {
        let ctx = self.id.context;
        let step = self.vm().http_body(ctx, Which::Response, chunk, end_of_stream);
        self.done(step)
    }

    /// Response trailers (end of the response).
    pub fn response_trailers<K: AsRef<[u8]>, V: AsRef<[u8]>>(&mut self, trailers: &[(K, V)]) -> Step {
        let ctx = self.id.context;
        let step = self.vm().http_trailers(ctx, Which::Response, trailers);
        self.done(step)
    }

    /// Where the stream stands now on the side last stepped: `Pause` while the filter has
    /// not resumed it, `Continue` once it called `proxy_continue_stream` (from a tick, a call
    /// response, a queue callback...), or the local reply / reset that ended it meanwhile.
    pub fn resume(&mut self) -> Step {
        let ctx = self.id.context;
        self.vm().http_resume(ctx)
    }

    /// What reached the upstream: None if the request headers never left the filter.
    /// With `ProxyOptions::connection_manager`, as the router sends it on.
    pub fn upstream_request(&mut self) -> Option<Message> {
        let ctx = self.id.context;
        let mut message = self.vm().http_view(ctx)?.request.message()?;
        if let Some(cm) = &self.proxy.connection_manager {
            message.headers = cm.route_request(&message.headers);
        }
        Some(message)
    }

    /// What the client got (the upstream response or a local reply, after the filter's
    /// response callbacks): None if nothing yet.
    pub fn client_response(&mut self) -> Option<Message> {
        let ctx = self.id.context;
        self.vm().http_view(ctx)?.response.message()
    }

    /// Takes the request body the filter has let through so far: a proxy that streams the
    /// body hands each piece on and keeps only what the filter buffers (`buffered_request`).
    /// Later `upstream_request` bodies start after what was taken.
    pub fn take_request_body(&mut self) -> Vec<u8> {
        self.take_body(Which::Request)
    }

    /// Takes the response body the filter has let through so far (see `take_request_body`).
    pub fn take_response_body(&mut self) -> Vec<u8> {
        self.take_body(Which::Response)
    }

    /// The request trailers the filter let through (given ones, possibly changed, or ones it
    /// added in its last body callback), None while it holds them or if there are none.
    pub fn request_trailers_out(&mut self) -> Option<HeaderMap> {
        self.trailers_out(Which::Request)
    }

    /// The response trailers the filter let through (see `request_trailers_out`).
    pub fn response_trailers_out(&mut self) -> Option<HeaderMap> {
        self.trailers_out(Which::Response)
    }

    fn trailers_out(&mut self, which: Which) -> Option<HeaderMap> {
        let ctx = self.id.context;
        let side = self.vm().http(ctx)?.side(which);
        side.trailers_forwarded.then(|| side.trailers.clone())
    }

    /// Request body bytes the filter holds (buffered while it pauses), not let through yet:
    /// what Envoy counts against the buffer limit.
    pub fn buffered_request(&mut self) -> usize {
        let ctx = self.id.context;
        self.vm().http(ctx).map_or(0, |h| h.request.body.len())
    }

    /// Response body bytes the filter holds (see `buffered_request`).
    pub fn buffered_response(&mut self) -> usize {
        let ctx = self.id.context;
        self.vm().http(ctx).map_or(0, |h| h.response.body.len())
    }

    fn take_body(&mut self, which: Which) -> Vec<u8> {
        let ctx = self.id.context;
        self.vm().http(ctx).map(|h| std::mem::take(&mut h.side(which).forwarded_body)).unwrap_or_default()
    }

    /// The local reply the filter (or the fail-closed policy) sent, if any.
    pub fn local_reply(&mut self) -> Option<LocalReply> {
        let ctx = self.id.context;
        self.vm().http_view(ctx)?.local_reply.clone()
    }

    /// Ends the exchange: `proxy_on_done`, `proxy_on_log`, `proxy_on_delete`; the
    /// stream's outstanding calls are cancelled.
    pub fn finish(mut self) -> Result<(), HostError> {
        let ctx = self.id.context;
        let result = self.vm().finish(ctx);
        self.proxy.after_step();
        result
    }
}

/// A handle on one TCP connection of a proxy's worker (network filter).
pub struct Tcp<'p> {
    pub(crate) proxy: &'p mut Proxy,
    pub(crate) id: StreamId,
}

/// Which end closed a TCP connection (`proxy_peer_type_t`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Peer {
    Unknown = 0,
    Local = 1,
    Remote = 2,
}

impl Tcp<'_> {
    /// The connection's id, to reopen it later with `Proxy::tcp_stream`.
    pub fn id(&self) -> StreamId {
        self.id
    }

    fn vm(&mut self) -> &mut Vm {
        self.proxy.vm_mut(self.id.thread.index())
    }

    /// Sets a property of this connection only (see `Http::set_property`).
    pub fn set_property(&mut self, path: &str, value: &[u8]) {
        let ctx = self.id.context;
        if let Some(stream) = self.vm().store.data_mut().streams.get_mut(&ctx) {
            stream.properties_mut().set_dotted(path, value);
        }
    }

    /// A client connected: creates the context and calls `proxy_on_new_connection`.
    pub fn new_connection(&mut self) -> Step {
        let ctx = self.id.context;
        let step = self.vm().tcp_new_connection(ctx);
        self.proxy.after_step();
        step
    }

    /// Bytes from the client (`proxy_on_downstream_data`).
    pub fn downstream_data(&mut self, data: &[u8], end_of_stream: bool) -> Step {
        let ctx = self.id.context;
        let step = self.vm().tcp_data(ctx, true, data, end_of_stream);
        self.proxy.after_step();
        step
    }

    /// Bytes from the upstream (`proxy_on_upstream_data`).
    pub fn upstream_data(&mut self, data: &[u8], end_of_stream: bool) -> Step {
        let ctx = self.id.context;
        let step = self.vm().tcp_data(ctx, false, data, end_of_stream);
        self.proxy.after_step();
        step
    }

    /// The client side closed (`proxy_on_downstream_connection_close`).
    pub fn downstream_close(&mut self, peer: Peer) -> Result<(), HostError> {
        let ctx = self.id.context;
        let r = self.vm().tcp_close(ctx, true, peer as i32);
        self.proxy.after_step();
        r
    }

    /// The upstream side closed (`proxy_on_upstream_connection_close`).
    pub fn upstream_close(&mut self, peer: Peer) -> Result<(), HostError> {
        let ctx = self.id.context;
        let r = self.vm().tcp_close(ctx, false, peer as i32);
        self.proxy.after_step();
        r
    }

    /// Bytes that went through to the upstream so far.
    pub fn to_upstream(&mut self) -> Vec<u8> {
        let ctx = self.id.context;
        self.vm().tcp_view(ctx).map(|t| t.downstream.forwarded.clone()).unwrap_or_default()
    }

    /// Bytes that went through to the client so far.
    pub fn to_downstream(&mut self) -> Vec<u8> {
        let ctx = self.id.context;
        self.vm().tcp_view(ctx).map(|t| t.upstream.forwarded.clone()).unwrap_or_default()
    }

    /// Bytes that went through to the upstream since the last call, taken out of the stream:
    /// what a proxy writes to the upstream socket (a long connection keeps nothing).
    pub fn take_to_upstream(&mut self) -> Vec<u8> {
        let ctx = self.id.context;
        self.vm().tcp(ctx).map(|t| std::mem::take(&mut t.downstream.forwarded)).unwrap_or_default()
    }

    /// Bytes that went through to the client since the last call (see `take_to_upstream`).
    pub fn take_to_downstream(&mut self) -> Vec<u8> {
        let ctx = self.id.context;
        self.vm().tcp(ctx).map(|t| std::mem::take(&mut t.upstream.forwarded)).unwrap_or_default()
    }

    /// Why the connection was closed (`wasm_fail_stream`, `wasm_downstream_close`, ...), if it was.
    pub fn closed(&mut self) -> Option<String> {
        let ctx = self.id.context;
        self.vm().tcp_view(ctx)?.closed.clone()
    }

    /// `proxy_close_stream` requests the filter made, in order.
    pub fn close_requests(&mut self) -> Vec<CloseRequest> {
        let ctx = self.id.context;
        self.vm().tcp_view(ctx).map(|t| t.close_requests.clone()).unwrap_or_default()
    }

    /// Ends the connection: `proxy_on_done`, `proxy_on_log`, `proxy_on_delete`.
    pub fn finish(mut self) -> Result<(), HostError> {
        let ctx = self.id.context;
        let r = self.vm().finish(ctx);
        self.proxy.after_step();
        r
    }
}
