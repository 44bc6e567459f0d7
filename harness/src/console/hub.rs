// The console's event log and its live subscribers: what a browser that connects now is sent first
// (the Start event and everything since), and the fan-out of each new event to every open stream.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};

use ebb_chart::live::LiveEvent;
use hyper::body::{Bytes, Frame};
use tokio::sync::mpsc;

/// Events kept after the Start for consoles that connect later (about 5.5 hours of one-second
/// samples); the oldest go first. A console that reconnects sees the kept history.
pub const MAX_LOG: usize = 20_000;
/// Events queued for one browser that does not read them; past that it is dropped (its
/// EventSource reconnects and is sent the history again).
const QUEUE: usize = 1024;
/// Streams open at once; more are refused.
pub const MAX_STREAMS: usize = 64;

#[derive(Default)]
struct Log {
    start: Option<Bytes>,
    events: VecDeque<Bytes>,
    streams: Vec<mpsc::Sender<Bytes>>,
    /// After the End event no more follow: streams are closed and new ones closed after the history.
    ended: bool,
}

#[derive(Default)]
pub struct Hub {
    log: Mutex<Log>,
}

/// One event as a server-sent event's bytes. serde_json writes no raw newline, so one `data:` line.
fn frame(event: &LiveEvent) -> Option<Bytes> {
    match serde_json::to_string(event) {
        Ok(json) => Some(Bytes::from(format!("data: {json}\n\n"))),
        Err(e) => {
            log::warn!("console: cannot send a live event: {e}");
            None
        }
    }
}

impl Hub {
    fn lock(&self) -> std::sync::MutexGuard<'_, Log> {
        // A panic elsewhere while holding the lock leaves a log that is still whole.
        self.log.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records an event and sends it to every open stream; never blocks.
    pub fn publish(&self, event: &LiveEvent) {
        let Some(bytes) = frame(event) else { return };
        let mut log = self.lock();
        match event {
            LiveEvent::Start { .. } => {
                log.start = Some(bytes.clone());
                log.events.clear();
                log.ended = false;
            }
            _ => {
                if log.events.len() >= MAX_LOG {
                    log.events.pop_front();
                }
                log.events.push_back(bytes.clone());
            }
        }
        log.streams.retain(|stream| stream.try_send(bytes.clone()).is_ok());
        if matches!(event, LiveEvent::End { .. }) {
            log.ended = true;
            log.streams.clear();
        }
    }

    /// A new stream: the history first, then live events. `None` when too many are open.
    pub fn subscribe(&self) -> Option<EventStream> {
        let mut log = self.lock();
        log.streams.retain(|s| !s.is_closed());
        if log.streams.len() >= MAX_STREAMS {
            return None;
        }
        let mut history = Vec::new();
        if let Some(start) = &log.start {
            history.extend_from_slice(start);
            for e in &log.events {
                history.extend_from_slice(e);
            }
        }
        let (tx, rx) = mpsc::channel(QUEUE);
        if !log.ended {
            log.streams.push(tx);
        }
        // With the game day over the sender is dropped here: the stream ends after the history.
        Some(EventStream { first: (!history.is_empty()).then(|| Bytes::from(history)), rx })
    }
}

/// The body of `GET /events`.
pub struct EventStream {
    first: Option<Bytes>,
    rx: mpsc::Receiver<Bytes>,
}

impl hyper::body::Body for EventStream {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if let Some(first) = self.first.take() {
            return Poll::Ready(Some(Ok(Frame::data(first))));
        }
        self.rx.poll_recv(cx).map(|next| next.map(|bytes| Ok(Frame::data(bytes))))
    }
}
