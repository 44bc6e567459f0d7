//! ebb's harness: the `ebb` command's library — scenarios, the replay simulator, alerts, SLOs,
//! reports and the CLI — over the Proxy-Wasm host of the `ebb-host` crate, re-exported here
//! (`ebb_harness::host`, and its items at the top level) so that callers need one dependency.

pub mod alert;
pub mod console;
pub mod control;
pub mod gameday;
pub mod http;
mod loopback;
pub mod report;
pub mod rules;
pub mod scenario;
pub mod series;
pub mod signals;
pub mod sim;
pub mod slo;
pub mod webhook;

pub use ebb_host as host;
pub use ebb_host::clock;
pub use ebb_host::*;
