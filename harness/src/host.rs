// The Proxy-Wasm host: loads filters (`Plugin`), runs them as proxies of main + worker VMs
// (`Proxy`), and drives HTTP exchanges and TCP connections through them step by step.

mod abi;
mod calls;
mod error;
mod headers;
mod logs;
mod memory;
mod metrics;
mod module;
mod properties;
mod proxy;
mod shared;
mod state;
mod stream;
mod upstream;
mod wasi;
mod worker;

pub use calls::{CallAnswer, CallId, CallKind, GrpcStreamEvent, PendingCall};
pub use error::{FailureKind, Fault, HostError, Thread};
pub use headers::{parse_pairs, HeaderMap, Pair, PairsError};
pub use logs::{LogLevel, LogRecord};
pub use metrics::{prometheus_name, render_prometheus, Metric, MetricKind, HISTOGRAM_BUCKETS};
pub use module::Plugin;
pub use properties::{int_value, path_key};
pub use proxy::{FailurePolicy, Limits, Proxy, ProxyOptions, UpstreamAnswer, Worker};
pub use state::AbiVersion;
pub use stream::{CloseRequest, Http, LocalReply, Message, Peer, Step, StreamId, Tcp};
