// The chart a team reads during and after a rehearsal, and the events that feed it live.
// Pure Rust with no I/O, so the same code runs in the `ebb` binary and in the browser.

pub mod live;
pub mod markup;
pub mod timeline;

pub use timeline::{pool_chart, PoolTimeline};
