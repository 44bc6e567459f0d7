// The bodies ebb proxy sends on, either way: whole (local replies, what a filter buffered to the
// end), a peer's body passed on untouched (no filter in the way), or frames as filters let them go.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::sync::mpsc;

use crate::pool::UpstreamBody;

/// Why a streamed body was cut short (the peer sees a reset).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Aborted(pub &'static str);

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Frames of a body on their way (data, then trailers if any), as a pump task sends them; `Err`
/// aborts the body.
pub type ChunkSender = mpsc::Sender<Result<Frame<Bytes>, Aborted>>;

/// Chunks in flight per streamed body: the pump waits for the peer beyond that (backpressure),
/// so a large body never sits whole in the proxy.
pub const CHUNKS_IN_FLIGHT: usize = 4;

pub enum ProxyBody {
    /// The whole body (None once sent).
    Whole(Option<Bytes>),
    /// The client's body, frames (trailers too) passed as they come.
    Peer(Incoming),
    /// The upstream's body passed as it comes (its endpoint claimed until it has gone).
    Upstream(UpstreamBody),
    /// Frames from a pump task; the body ends when the sender is dropped.
    Chunks(mpsc::Receiver<Result<Frame<Bytes>, Aborted>>),
}

impl ProxyBody {
    pub fn whole(bytes: Bytes) -> ProxyBody {
        ProxyBody::Whole(Some(bytes))
    }

    /// The client's body passed on.
    pub fn peer(body: Incoming) -> ProxyBody {
        ProxyBody::Peer(body)
    }

    pub fn empty() -> ProxyBody {
        ProxyBody::Whole(None)
    }

    /// A streamed body and the sender that feeds it.
    pub fn channel() -> (ChunkSender, ProxyBody) {
        let (tx, rx) = mpsc::channel(CHUNKS_IN_FLIGHT);
        (tx, ProxyBody::Chunks(rx))
    }

    /// Whether the length is known before the body is sent (hyper then sets content-length).
    pub fn is_whole(&self) -> bool {
        matches!(self, ProxyBody::Whole(_))
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            ProxyBody::Whole(bytes) => Poll::Ready(bytes.take().filter(|b| !b.is_empty()).map(|b| Ok(Frame::data(b)))),
            ProxyBody::Peer(incoming) => Pin::new(incoming).poll_frame(cx).map_err(Into::into),
            ProxyBody::Upstream(body) => Pin::new(body).poll_frame(cx),
            ProxyBody::Chunks(rx) => match rx.poll_recv(cx) {
                Poll::Ready(Some(Ok(frame))) => Poll::Ready(Some(Ok(frame))),
                Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
                Poll::Ready(None) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Whole(bytes) => bytes.as_ref().is_none_or(Bytes::is_empty),
            ProxyBody::Peer(incoming) => incoming.is_end_stream(),
            ProxyBody::Upstream(body) => body.is_end_stream(),
            ProxyBody::Chunks(_) => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Whole(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            ProxyBody::Peer(incoming) => incoming.size_hint(),
            ProxyBody::Upstream(body) => body.size_hint(),
            ProxyBody::Chunks(_) => SizeHint::default(),
        }
    }
}
