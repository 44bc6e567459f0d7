// The browser side of `ebb gameday --console`: the page's state from the server-sent live events
// and its sections drawn with ebb-chart. `app` ties them to the DOM (wasm32 only).

pub mod state;
pub mod view;

#[cfg(target_arch = "wasm32")]
pub mod app;

use ebb_chart::live::LiveEvent;

/// One server-sent event's data as a live event; the error says what was wrong, for the page.
pub fn parse_event(data: &str) -> Result<LiveEvent, String> {
    serde_json::from_str(data).map_err(|e| format!("unreadable event from the game day ({e})"))
}
