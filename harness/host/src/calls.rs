// Outgoing calls (`proxy_http_call`, `proxy_grpc_call`, `proxy_grpc_stream`): recorded as pending
// for the caller to answer or drive, with deadlines on the harness clock; answers go back to the VM.

use std::collections::BTreeMap;

use super::error::{HostError, Thread};
use super::headers::HeaderMap;

/// A call's id, unique within its proxy (not the token the filter sees).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct CallId(pub u64);

/// What kind of call the filter made.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum CallKind {
    Http,
    /// A unary gRPC call; `body` holds the request message.
    Grpc {
        service: String,
        method: String,
    },
    /// A gRPC stream (`proxy_grpc_stream`): what the filter sends is in `PendingCall::sent`; the
    /// caller drives the other side with `Proxy::grpc_stream_event`.
    #[serde(rename = "grpc_stream")]
    GrpcStream {
        service: String,
        method: String,
    },
}

/// A call the filter made that waits for the caller's answer.
#[derive(Clone, Debug)]
pub struct PendingCall {
    pub id: CallId,
    /// The VM that made the call.
    pub thread: Thread,
    /// Cluster name as the filter gave it (one of `ProxyOptions::clusters`).
    pub cluster: String,
    pub kind: CallKind,
    /// Request headers (HTTP) or initial metadata (gRPC).
    pub headers: HeaderMap,
    pub body: Vec<u8>,
    pub trailers: HeaderMap,
    /// When the call times out (clock nanoseconds), or None for no timeout (timeout 0; streams).
    pub deadline_ns: Option<u64>,
    /// The real server the host sent the call to (a cluster in `ProxyOptions::upstreams`);
    /// None when the caller answers it.
    pub upstream: Option<std::net::SocketAddr>,
    /// gRPC streams: the messages the filter sent (`proxy_grpc_send`), oldest first. Empty
    /// messages count: Envoy sends them as empty gRPC frames.
    pub sent: Vec<Vec<u8>>,
    /// gRPC streams: the filter half-closed its side (`proxy_grpc_close`, or a send with
    /// `end_stream`); later sends are dropped, as Envoy's async stream drops them.
    pub local_closed: bool,
}

/// One thing the remote side of a gRPC stream does, in the order a gRPC server does them:
/// initial metadata once, messages, trailing metadata once, then close (which may come at any
/// point, e.g. for a trailers-only error).
#[derive(Clone, Debug, PartialEq)]
pub enum GrpcStreamEvent {
    /// `proxy_on_grpc_receive_initial_metadata`; the map is readable as type 4 in the callback.
    InitialMetadata(HeaderMap),
    /// `proxy_on_grpc_receive`; the message is readable as buffer 5 in the callback.
    Message(Vec<u8>),
    /// `proxy_on_grpc_receive_trailing_metadata`; the map is readable as type 5 in the callback.
    TrailingMetadata(HeaderMap),
    /// `proxy_on_grpc_close` with gRPC `status` (0 = OK); `proxy_get_status` returns
    /// (`status`, `message`) in the callback. The stream is no longer pending afterwards.
    Close { status: u32, message: String },
}

/// The caller's answer to a pending call.
#[derive(Clone, Debug)]
pub enum CallAnswer {
    /// An HTTP response; `headers` should carry `:status`.
    Http { headers: HeaderMap, body: Vec<u8>, trailers: HeaderMap },
    /// A gRPC response: status 0 = OK with `message`, else an error status.
    Grpc { status: u32, message: Vec<u8>, initial_metadata: HeaderMap, trailing_metadata: HeaderMap },
    /// The connection failed or was reset: `on_http_call_response` with no headers, and
    /// `proxy_get_status` = (11, "reset") as in Envoy.
    Failure,
}

impl CallAnswer {
    /// An HTTP answer from a status, headers and body.
    pub fn http<K: AsRef<[u8]>, V: AsRef<[u8]>>(
        status: u16,
        headers: &[(K, V)],
        body: impl Into<Vec<u8>>,
    ) -> CallAnswer {
        let mut map = HeaderMap::new();
        map.add(b":status", status.to_string().as_bytes());
        map.extend(headers);
        CallAnswer::Http { headers: map, body: body.into(), trailers: HeaderMap::new() }
    }

    /// What Envoy's async client answers on a timeout: a local 504 "upstream request timeout";
    /// for a gRPC call that 504 becomes UNAVAILABLE (14), as Envoy maps HTTP statuses to gRPC.
    pub(crate) fn timeout(kind: &CallKind) -> CallAnswer {
        if !matches!(kind, CallKind::Http) {
            return CallAnswer::Grpc {
                status: 14,
                message: Vec::new(),
                initial_metadata: HeaderMap::new(),
                trailing_metadata: HeaderMap::new(),
            };
        }
        let body = b"upstream request timeout".to_vec();
        let len = body.len().to_string();
        CallAnswer::http(504, &[("content-length", len.as_str()), ("content-type", "text/plain")], body)
    }
}

/// How far the remote side of a gRPC stream has gone, so that events out of gRPC's order are
/// refused instead of reaching the filter in an order Envoy never produces.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum RemotePhase {
    Start,
    InitialMetadata,
    TrailingMetadata,
}

pub(crate) struct CallRecord {
    pub public: PendingCall,
    pub instance: usize,
    pub token: u32,
    pub context: u32,
    /// gRPC streams only.
    pub remote: RemotePhase,
    /// gRPC streams: the filter called `proxy_grpc_close`. Envoy releases the handle at the
    /// remote close only then (a send with `end_stream` half-closes but keeps it).
    pub close_called: bool,
}

impl CallRecord {
    /// Moves a gRPC stream's remote side on by `event`, or says why it cannot happen now.
    pub(crate) fn advance(&mut self, event: &GrpcStreamEvent) -> Result<(), HostError> {
        let id = self.public.id.0;
        let next = match event {
            GrpcStreamEvent::InitialMetadata(_) if self.remote == RemotePhase::Start => RemotePhase::InitialMetadata,
            GrpcStreamEvent::InitialMetadata(_) => {
                return Err(HostError::usage(format!("gRPC stream {id}: initial metadata was already sent")))
            }
            GrpcStreamEvent::Message(_) if self.remote == RemotePhase::InitialMetadata => RemotePhase::InitialMetadata,
            GrpcStreamEvent::Message(_) => {
                return Err(HostError::usage(format!(
                    "gRPC stream {id}: a message must come after initial metadata and before trailing metadata"
                )))
            }
            GrpcStreamEvent::TrailingMetadata(_) if self.remote < RemotePhase::TrailingMetadata => {
                RemotePhase::TrailingMetadata
            }
            GrpcStreamEvent::TrailingMetadata(_) => {
                return Err(HostError::usage(format!("gRPC stream {id}: trailing metadata was already sent")))
            }
            GrpcStreamEvent::Close { .. } => self.remote,
        };
        self.remote = next;
        Ok(())
    }
}

#[derive(Default)]
pub(crate) struct Calls {
    pub pending: BTreeMap<CallId, CallRecord>,
    /// gRPC streams the remote side closed before the filter called `proxy_grpc_close`, by (VM
    /// instance, token) → context. Envoy keeps such a handle until the filter closes or cancels
    /// it, so calls on it answer OK (sends go nowhere) instead of NOT_FOUND.
    pub remote_closed: BTreeMap<(usize, u32), u32>,
    next: u64,
}

impl Calls {
    pub(crate) fn next_id(&mut self) -> CallId {
        self.next += 1;
        CallId(self.next)
    }

    /// The earliest deadline among pending calls.
    pub(crate) fn next_deadline(&self) -> Option<(u64, CallId)> {
        self.pending.values().filter_map(|c| c.public.deadline_ns.map(|d| (d, c.public.id))).min()
    }

    /// Calls sent to real upstreams and not answered yet.
    pub(crate) fn in_flight(&self) -> usize {
        self.pending.values().filter(|c| c.public.upstream.is_some()).count()
    }

    /// Drops the calls of a VM that is replaced.
    pub(crate) fn cancel_instance(&mut self, instance: usize) {
        self.pending.retain(|_, c| c.instance != instance);
        self.remote_closed.retain(|&(i, _), _| i != instance);
    }

    /// Drops the calls and streams of a context that went away (Envoy cancels them and resets
    /// streams, with no callbacks).
    pub(crate) fn cancel_context(&mut self, instance: usize, context: u32) {
        self.pending.retain(|_, c| !(c.instance == instance && c.context == context));
        self.remote_closed.retain(|&(i, _), c| !(i == instance && *c == context));
    }

    /// The pending call of VM `instance` with `token`.
    pub(crate) fn by_token(&self, instance: usize, token: u32) -> Option<CallId> {
        self.pending.values().find(|c| c.instance == instance && c.token == token).map(|c| c.public.id)
    }
}
