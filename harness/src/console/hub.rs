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
    /// Scenario time of the latest event: when the console adds a note of its own (Halt).
    latest_s: f64,
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
                log.latest_s = 0.0;
            }
            _ => {
                if log.events.len() >= MAX_LOG {
                    log.events.pop_front();
                }
                log.events.push_back(bytes.clone());
            }
        }
        if let Some(t) = event_time(event).filter(|t| t.is_finite()) {
            log.latest_s = log.latest_s.max(t);
        }
        // A stream whose queue is full belongs to a browser that stopped reading: dropped.
        log.streams.retain(|stream| stream.try_send(bytes.clone()).is_ok());
        if matches!(event, LiveEvent::End { .. }) {
            log.ended = true;
            log.streams.clear();
        }
    }

    /// Scenario time of the latest event published.
    pub fn latest_s(&self) -> f64 {
        self.lock().latest_s
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

fn event_time(event: &LiveEvent) -> Option<f64> {
    match event {
        LiveEvent::Start { .. } => None,
        LiveEvent::Sample { t_s, .. }
        | LiveEvent::Command { t_s, .. }
        | LiveEvent::Note { t_s, .. }
        | LiveEvent::End { t_s, .. } => Some(*t_s),
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

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    fn note(t_s: f64) -> LiveEvent {
        LiveEvent::Note { t_s, text: format!("note {t_s}") }
    }

    fn start() -> LiveEvent {
        LiveEvent::Start {
            scenario: "s".into(),
            duration_s: 60.0,
            time_scale: 1.0,
            pools: vec![],
            targets: vec![],
            slos: vec![],
        }
    }

    /// Every frame the stream has ready now (without waiting for more).
    fn ready_text(stream: &mut EventStream) -> String {
        let runtime = tokio::runtime::Builder::new_current_thread().build().expect("a runtime");
        let mut text = String::new();
        runtime.block_on(async {
            loop {
                let next = tokio::select! {
                    biased;
                    frame = stream.frame() => frame,
                    () = std::future::ready(()) => None,
                };
                match next {
                    Some(Ok(frame)) => text.push_str(&String::from_utf8_lossy(&frame.into_data().unwrap_or_default())),
                    _ => break,
                }
            }
        });
        text
    }

    #[test]
    fn a_late_stream_gets_the_start_and_the_kept_history_in_order() {
        let hub = Hub::default();
        hub.publish(&note(1.0));
        hub.publish(&start());
        for i in 0..(MAX_LOG + 5) {
            hub.publish(&note(i as f64));
        }
        assert_eq!(hub.latest_s(), (MAX_LOG + 4) as f64);
        let mut stream = hub.subscribe().expect("a stream");
        let text = ready_text(&mut stream);
        let events: Vec<&str> = text.split("\n\n").filter(|e| !e.is_empty()).collect();
        assert_eq!(events.len(), 1 + MAX_LOG, "the Start and the latest {MAX_LOG} events");
        assert!(events[0].starts_with(r#"data: {"type":"start""#), "{}", events[0]);
        assert!(events[1].contains(r#""t_s":5.0"#), "the oldest five went first: {}", events[1]);
        assert!(events[MAX_LOG].contains(&format!(r#""t_s":{}.0"#, MAX_LOG + 4)));
        // Then live ones.
        hub.publish(&note(99_999.0));
        assert!(ready_text(&mut stream).contains("99999"));
    }

    #[test]
    fn a_browser_that_stops_reading_is_dropped_without_blocking_the_runner() {
        let hub = Hub::default();
        hub.publish(&start());
        let _stalled = hub.subscribe().expect("a stream");
        for i in 0..(QUEUE + 10) {
            hub.publish(&note(i as f64));
        }
        assert_eq!(hub.lock().streams.len(), 0, "the full queue's stream was let go");
    }

    #[test]
    fn streams_are_capped_and_end_with_the_game_day() {
        let hub = Hub::default();
        hub.publish(&start());
        let streams: Vec<EventStream> = (0..MAX_STREAMS).map(|_| hub.subscribe().expect("a stream")).collect();
        assert!(hub.subscribe().is_none(), "one too many");
        drop(streams);
        let mut stream = hub.subscribe().expect("closed streams make room");
        hub.publish(&LiveEvent::End { t_s: 30.0, verdict: ebb_chart::live::Verdict::Pass, summary: String::new() });
        assert!(ready_text(&mut stream).contains(r#""type":"end""#));
        assert!(stream.rx.is_closed(), "nothing follows the end");
    }
}
