// Outgoing calls (`proxy_http_call`, `proxy_grpc_call`): recorded as pending for the caller
// to answer, with deadlines on the harness clock; answers are delivered back to the VM.

use std::collections::BTreeMap;

use super::error::Thread;
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
    /// When the call times out (clock nanoseconds), or None for no timeout (timeout 0).
    pub deadline_ns: Option<u64>,
    /// The real server the host sent the call to (a cluster in `ProxyOptions::upstreams`);
    /// None when the caller answers it.
    pub upstream: Option<std::net::SocketAddr>,
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

    /// What Envoy's async client answers on a timeout: a local 504 "upstream request timeout".
    pub(crate) fn timeout() -> CallAnswer {
        let body = b"upstream request timeout".to_vec();
        let len = body.len().to_string();
        CallAnswer::http(504, &[("content-length", len.as_str()), ("content-type", "text/plain")], body)
    }
}

pub(crate) struct CallRecord {
    pub public: PendingCall,
    pub instance: usize,
    pub token: u32,
    pub context: u32,
}

#[derive(Default)]
pub(crate) struct Calls {
    pub pending: BTreeMap<CallId, CallRecord>,
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
    }

    /// Drops the calls of a context that went away (Envoy cancels them).
    pub(crate) fn cancel_context(&mut self, instance: usize, context: u32) {
        self.pending.retain(|_, c| !(c.instance == instance && c.context == context));
    }
}
