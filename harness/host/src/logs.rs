// Log lines a proxy's VMs write (proxy_log and WASI stdout/stderr), kept for the caller to
// read or drain, bounded so that a long simulation cannot grow without limit.

use std::collections::VecDeque;

use super::error::Thread;

/// `proxy_log_level_t`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Trace = 0,
    Debug = 1,
    Info = 2,
    Warn = 3,
    Error = 4,
    Critical = 5,
}

impl LogLevel {
    pub(crate) fn from_abi(level: i32) -> Option<LogLevel> {
        Some(match level {
            0 => LogLevel::Trace,
            1 => LogLevel::Debug,
            2 => LogLevel::Info,
            3 => LogLevel::Warn,
            4 => LogLevel::Error,
            5 => LogLevel::Critical,
            _ => return None,
        })
    }

    /// Lower-case name (`info`, `warn`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Trace => "trace",
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
            LogLevel::Critical => "critical",
        }
    }
}

impl std::str::FromStr for LogLevel {
    type Err = String;
    fn from_str(s: &str) -> Result<LogLevel, String> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "trace" => LogLevel::Trace,
            "debug" => LogLevel::Debug,
            "info" => LogLevel::Info,
            "warn" | "warning" => LogLevel::Warn,
            "error" => LogLevel::Error,
            "critical" => LogLevel::Critical,
            other => return Err(format!("unknown log level {other:?}")),
        })
    }
}

/// One log line.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct LogRecord {
    /// Clock time of the line (nanoseconds since the Unix epoch).
    pub time_ns: u64,
    pub level: LogLevel,
    /// The VM that wrote it.
    #[serde(serialize_with = "thread_name")]
    pub thread: Thread,
    pub message: String,
    /// True for what the filter wrote (`proxy_log`, WASI stdout/stderr), which Envoy prints as
    /// `wasm log NAME ROOT_ID VM_ID: message`; false for the host's own lines.
    pub filter: bool,
}

impl LogRecord {
    /// The line as Envoy's log shows it: a filter's line is prefixed as Envoy's `Context::log`
    /// does (`"wasm log{}: {}"` with cpp-host's `PluginBase::makeLogPrefix`: name, root_id and
    /// vm_id, each after a space when not empty), so that the same text can be grepped in both.
    pub fn envoy_line(&self, name: &str, root_id: &str, vm_id: &str) -> String {
        if !self.filter {
            return self.message.clone();
        }
        let mut line = String::from("wasm log");
        for part in [name, root_id, vm_id].into_iter().filter(|p| !p.is_empty()) {
            line.push(' ');
            line.push_str(part);
        }
        line.push_str(": ");
        line.push_str(&self.message);
        line
    }
}

fn thread_name<S: serde::Serializer>(t: &Thread, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(t)
}

/// Bounded log storage: past `capacity` the oldest lines go and are counted in `dropped`.
pub(crate) struct LogSink {
    pub records: VecDeque<LogRecord>,
    pub capacity: usize,
    pub dropped: u64,
}

impl LogSink {
    pub(crate) fn new(capacity: usize) -> LogSink {
        LogSink { records: VecDeque::new(), capacity, dropped: 0 }
    }

    pub(crate) fn push(&mut self, record: LogRecord) {
        if self.capacity == 0 {
            self.dropped += 1;
            return;
        }
        if self.records.len() == self.capacity {
            self.records.pop_front();
            self.dropped += 1;
        }
        self.records.push_back(record);
    }
}
