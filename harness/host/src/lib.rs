//! ebb's Proxy-Wasm host: a Proxy-Wasm ABI v0.2.1 host on wasmtime that runs any proxy-wasm
//! filter the way Envoy does — main and worker VMs, Envoy's callback order and status codes,
//! shared data and queues, metrics, calls answered by the caller or sent to real upstreams — on a
//! clock the caller owns. `ProxyOptions::host_profile` makes it play Kong's ngx_wasm_module
//! instead, or both proxies' refusals at once (`HostProfile::Strict`), so that a filter's tests
//! say whether it runs in both. It knows nothing of ebb's own filter: `ebb request`, the replay
//! simulator and the tests are its users.
//!
//! ```no_run
//! use ebb_host::{Clock, Plugin, Proxy, ProxyOptions, Step};
//! let plugin = Plugin::load("dist/ebb.wasm")?;
//! let mut proxy = Proxy::new(&plugin, ProxyOptions::default(), Clock::default())?;
//! let mut http = proxy.worker(0)?.http();
//! let step = http.request_headers(&[(":method", "GET"), (":path", "/"), (":authority", "app")], true);
//! assert!(matches!(step, Step::Continue));
//! http.response_headers(&[(":status", "200")], true);
//! http.finish()?;
//! # Ok::<(), ebb_host::HostError>(())
//! ```

pub mod clock;

mod abi;
mod calls;
mod compile_cache;
mod conn_manager;
mod error;
mod foreign;
mod headers;
mod logs;
mod memory;
mod metrics;
mod module;
mod process;
mod profile;
mod properties;
mod proxy;
mod shared;
mod state;
mod stream;
mod upstream;
mod wasi;
mod worker;

pub use calls::{CallAnswer, CallId, CallKind, GrpcStreamEvent, PendingCall};
pub use clock::Clock;
pub use compile_cache::{CompileCache, CACHE_ENV};
pub use conn_manager::{drops_request_header, ConnectionManager};
pub use error::{FailureKind, Fault, HostError, Thread};
pub use foreign::TCP_PROXY_CLUSTER;
pub use headers::{parse_pairs, HeaderMap, Pair, PairsError};
pub use logs::{LogLevel, LogRecord};
pub use metrics::{prometheus_name, render_prometheus, Metric, MetricKind, HISTOGRAM_BUCKETS};
pub use module::Plugin;
pub use process::Process;
pub use profile::HostProfile;
pub use properties::{int_value, path_key, PropertyPath};
pub use proxy::{FailurePolicy, Limits, Proxy, ProxyOptions, UpstreamAnswer, Worker};
pub use state::AbiVersion;
pub use stream::{CloseRequest, Http, LocalReply, Message, Peer, Step, StreamId, Tcp};
