//! ebb's harness: a Proxy-Wasm ABI v0.2.1 host on wasmtime that runs any proxy-wasm filter
//! the way Envoy does — main and worker VMs, Envoy's callback order and status codes, shared
//! data and queues, metrics, calls answered by the caller — on a clock the caller owns, so
//! that every test, replay and game day runs the same `.wasm` Envoy would.
//!
//! ```no_run
//! use ebb_harness::{Clock, Plugin, Proxy, ProxyOptions, Step};
//! let plugin = Plugin::load("dist/ebb.wasm")?;
//! let mut proxy = Proxy::new(&plugin, ProxyOptions::default(), Clock::default())?;
//! let mut http = proxy.worker(0)?.http();
//! let step = http.request_headers(&[(":method", "GET"), (":path", "/"), (":authority", "app")], true);
//! assert!(matches!(step, Step::Continue));
//! http.response_headers(&[(":status", "200")], true);
//! http.finish()?;
//! # Ok::<(), ebb_harness::HostError>(())
//! ```

pub mod alert;
pub mod clock;
pub mod control;
pub mod host;
pub mod report;
pub mod scenario;
pub mod sim;
pub mod slo;

pub use clock::Clock;
pub use host::*;
