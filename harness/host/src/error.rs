// Typed errors of the host: what failed, in which filter, thread, callback and request,
// and whose fault it is (the filter's, the caller's or the host's own).

use std::fmt;
use std::sync::Arc;

/// One of a proxy's VMs: the main thread's (ticks, queues, singleton work) or a worker's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Thread {
    /// The main thread's VM (instance 0).
    Main,
    /// Worker `n` (0-based), whose VM serves streams.
    Worker(u32),
}

impl Thread {
    /// Instance index inside a proxy: 0 for main, 1 + n for worker n.
    pub(crate) fn index(self) -> usize {
        match self {
            Thread::Main => 0,
            Thread::Worker(n) => n as usize + 1,
        }
    }

    pub(crate) fn from_index(index: usize) -> Thread {
        match index {
            0 => Thread::Main,
            n => Thread::Worker(u32::try_from(n - 1).unwrap_or(u32::MAX)),
        }
    }
}

impl fmt::Display for Thread {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Thread::Main => f.write_str("main"),
            Thread::Worker(n) => write!(f, "worker {n}"),
        }
    }
}

/// Whose fault an error is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The filter misbehaved: trap, deadline, memory limit, bad module, rejected configuration.
    Filter,
    /// The caller used the host API wrongly (unknown stream, step out of order, bad input).
    Caller,
    /// The host itself failed (I/O, wasmtime internals).
    Host,
}

/// How a guest callback failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureKind {
    /// The guest trapped (a Rust panic ends as `unreachable`).
    Trap,
    /// The callback ran past its deadline (an infinite loop, or just too slow).
    Deadline,
    /// The guest tried to grow its memory past the limit.
    MemoryLimit,
    /// Instantiation failed (start-up traps, linking).
    Instantiate,
}

impl fmt::Display for FailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FailureKind::Trap => "trapped",
            FailureKind::Deadline => "exceeded its deadline",
            FailureKind::MemoryLimit => "exceeded the memory limit",
            FailureKind::Instantiate => "failed to instantiate",
        })
    }
}

/// Every error the host returns. Messages name the filter, and where relevant the thread,
/// the callback and the request.
#[derive(Clone, Debug, thiserror::Error)]
pub enum HostError {
    /// The module file could not be read.
    #[error("filter {filter}: cannot read {path}: {message}")]
    Read { filter: Arc<str>, path: String, message: String },
    /// The bytes are not a loadable Proxy-Wasm module.
    #[error("filter {filter}: invalid module: {message}")]
    InvalidModule { filter: Arc<str>, message: String },
    /// A guest callback failed; the VM is marked failed and never reused.
    #[error("filter {filter}: {thread}: {callback} {kind}{}: {message}", on_request(.request))]
    Callback {
        filter: Arc<str>,
        thread: Thread,
        callback: &'static str,
        /// The request or connection being served, when there was one.
        request: Option<String>,
        kind: FailureKind,
        message: String,
    },
    /// `proxy_on_vm_start` or `proxy_on_configure` returned false: Envoy refuses the filter.
    #[error("filter {filter}: {thread}: {callback} returned false: the filter rejected its configuration")]
    Rejected { filter: Arc<str>, thread: Thread, callback: &'static str },
    /// The caller used the API wrongly.
    #[error("harness: {0}")]
    Usage(String),
}

fn on_request(request: &Option<String>) -> String {
    match request {
        Some(r) => format!(" on {r}"),
        None => String::new(),
    }
}

impl HostError {
    /// Whose fault this is.
    pub fn fault(&self) -> Fault {
        match self {
            HostError::Read { .. } => Fault::Host,
            HostError::InvalidModule { .. } | HostError::Callback { .. } | HostError::Rejected { .. } => Fault::Filter,
            HostError::Usage(_) => Fault::Caller,
        }
    }

    pub(crate) fn usage(message: impl Into<String>) -> HostError {
        HostError::Usage(message.into())
    }
}
