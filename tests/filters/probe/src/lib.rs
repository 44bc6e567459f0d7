//! The conformance probe: a Rust SDK filter that runs the hostcalls each request asks for
//! (request header `x-probe: cmd,cmd,...`) and logs what the host answered, one line per
//! command (`probe <cmd> => <result>`), so that tests can assert the host's behaviour.
//! Root behaviour comes from the plugin configuration, `key=value;key=value`:
//! `tick=MS` (then `tick_again=MS` sets it a second time), `queue=NAME`, `shared_tick=KEY`,
//! `tick_enqueue=[VM_ID/]NAME=VALUE` (enqueued once, on the first tick that finds the queue),
//! `reject=1`, `type=tcp`, `declare=NAME` (declares a read-only property in on_configure),
//! `tcp_cluster=NAME` (a TCP connection sets Envoy's `envoy.tcp_proxy.cluster` filter state).

use std::collections::HashMap;
use std::time::{Duration, UNIX_EPOCH};

use log::{error, info};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext, StreamContext};
use proxy_wasm::types::{Action, ContextType, GrpcStatusCode, LogLevel, MetricType, PeerType, Status};

/// Raw hostcalls, for asserting status codes the SDK would turn into panics.
#[allow(clashing_extern_declarations)]
mod raw {
    #[link(wasm_import_module = "env")]
    extern "C" {
        pub fn proxy_get_header_map_value(
            map_type: u32,
            key_data: *const u8,
            key_size: usize,
            return_value_data: *mut *mut u8,
            return_value_size: *mut usize,
        ) -> u32;
        pub fn proxy_continue_stream(stream_type: u32) -> u32;
        pub fn proxy_increment_metric(metric_id: u32, offset: i64) -> u32;
        pub fn proxy_get_log_level(return_level: *mut u32) -> u32;
        pub fn proxy_set_effective_context(context_id: u32) -> u32;
        pub fn proxy_grpc_send(token: u32, message: *const u8, message_size: usize, end_stream: u32) -> u32;
        pub fn proxy_grpc_close(token: u32) -> u32;
        pub fn proxy_grpc_cancel(token: u32) -> u32;
        pub fn proxy_set_property(path: *const u8, path_size: usize, value: *const u8, value_size: usize) -> u32;
        /// No host provides this: it shows how a host treats imports it lacks.
        pub fn proxy_probe_no_such_hostcall() -> u32;
    }

    /// (status, value) of a header map lookup.
    pub fn get_header(map: u32, key: &str) -> (u32, Option<String>) {
        let mut ptr: *mut u8 = std::ptr::null_mut();
        let mut len: usize = 0;
        let status = unsafe { proxy_get_header_map_value(map, key.as_ptr(), key.len(), &mut ptr, &mut len) };
        if status != 0 || ptr.is_null() {
            return (status, None);
        }
        // The host allocated exactly `len` bytes with our allocator: we own them now.
        let bytes = unsafe { Vec::from_raw_parts(ptr, len, len) };
        (status, Some(String::from_utf8_lossy(&bytes).into_owned()))
    }
}

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Trace);
    proxy_wasm::set_root_context(|id| -> Box<dyn RootContext> {
        Box::new(Root { id, config: HashMap::new(), ticks: None, queue: None })
    });
}}

fn parse_config(bytes: &[u8]) -> HashMap<String, String> {
    String::from_utf8_lossy(bytes)
        .split(';')
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            Some((k.trim().to_owned(), v.trim().to_owned()))
        })
        .collect()
}

struct Root {
    id: u32,
    config: HashMap<String, String>,
    ticks: Option<u32>,
    queue: Option<u32>,
}

impl Context for Root {}

/// Enqueues `value` on queue `target`: `NAME` in the filter's own vm_id, or `VM_ID/NAME`.
fn enqueue(target: &str, value: &str) -> String {
    let own = || {
        hostcalls::get_property(vec!["plugin_vm_id"])
            .ok()
            .flatten()
            .and_then(|b| String::from_utf8(b).ok())
            .unwrap_or_default()
    };
    let (vm, name) = match target.split_once('/') {
        Some((vm, name)) => (vm.to_owned(), name),
        None => (own(), target),
    };
    match hostcalls::resolve_shared_queue(&vm, name) {
        Ok(Some(id)) => format!("{:?}", hostcalls::enqueue_shared_queue(id, Some(value.as_bytes()))),
        _ => "no such queue".into(),
    }
}

/// Adds 1 to a shared-data counter with compare-and-swap; returns the value written.
fn shared_increment(key: &str) -> Result<u64, Status> {
    for _ in 0..8 {
        let (value, cas) = hostcalls::get_shared_data(key)?;
        let n = value.and_then(|v| String::from_utf8(v).ok()).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0) + 1;
        match hostcalls::set_shared_data(key, Some(n.to_string().as_bytes()), cas) {
            Ok(()) => return Ok(n),
            Err(Status::CasMismatch) => info!("probe shared {key}: cas mismatch, retrying"),
            Err(e) => return Err(e),
        }
    }
    Err(Status::CasMismatch)
}

impl RootContext for Root {
    fn on_vm_start(&mut self, size: usize) -> bool {
        let vm = self.get_vm_configuration().unwrap_or_default();
        info!("on_vm_start root={} size={} vm_config={}", self.id, size, String::from_utf8_lossy(&vm));
        true
    }

    fn on_configure(&mut self, size: usize) -> bool {
        let cfg = self.get_plugin_configuration().unwrap_or_default();
        info!("on_configure root={} size={} config={}", self.id, size, String::from_utf8_lossy(&cfg));
        self.config = parse_config(&cfg);
        if self.config.contains_key("reject") {
            error!("probe rejects its configuration");
            return false;
        }
        if let Some(ms) = self.config.get("tick").and_then(|v| v.parse::<u64>().ok()) {
            self.ticks = hostcalls::define_metric(MetricType::Counter, "probe.ticks").ok();
            self.set_tick_period(Duration::from_millis(ms));
        }
        if let Some(ms) = self.config.get("tick_again").and_then(|v| v.parse::<u64>().ok()) {
            info!("probe tick_again => {:?}", hostcalls::set_tick_period(Duration::from_millis(ms)));
        }
        if let Some(name) = self.config.get("declare").cloned() {
            // DeclarePropertyArguments { name = 1, readonly = 2 }
            let mut args = proto_bytes(1, name.as_bytes());
            args.extend([0x10, 1]);
            info!("probe declare {name} => {:?}", hostcalls::call_foreign_function("declare_property", Some(&args)));
        }
        if let Some(name) = self.config.get("queue").cloned() {
            let id = self.register_shared_queue(&name);
            self.queue = Some(id);
            info!("probe registered queue {name} as {id}");
        }
        true
    }

    fn on_tick(&mut self) {
        let now = self.get_current_time().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        info!("on_tick root={} now={now}", self.id);
        for id in WAITING.with(|w| std::mem::take(&mut *w.borrow_mut())) {
            let set = hostcalls::set_effective_context(id);
            info!("probe resumes {id} from the tick => {set:?} {:?}", hostcalls::resume_http_request());
        }
        if let Some(id) = self.ticks {
            let _ = hostcalls::increment_metric(id, 1);
        }
        if let Some(target) = self.config.get("tick_enqueue").cloned() {
            // Once the queue exists: the value is enqueued on the first tick that finds it.
            let (q, v) = kv(&target);
            let result = enqueue(q, v);
            info!("probe tick_enqueue {target} => {result}");
            if result == "Ok(())" {
                self.config.remove("tick_enqueue");
            }
        }
        if let Some(key) = self.config.get("shared_tick") {
            info!("probe shared_tick => {:?}", shared_increment(key));
        }
    }

    fn on_queue_ready(&mut self, queue_id: u32) {
        while let Ok(Some(item)) = self.dequeue_shared_queue(queue_id) {
            info!("on_queue_ready queue={queue_id} item={}", String::from_utf8_lossy(&item));
        }
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        info!("create_http_context id={context_id} root={}", self.id);
        Some(Box::new(Probe {
            id: context_id,
            buffer_body: false,
            buffer_response: false,
            response_local_reply: None,
            stream: None,
            wait_stream: false,
            add_trailer: None,
            add_response_trailer: None,
        }))
    }

    fn create_stream_context(&self, context_id: u32) -> Option<Box<dyn StreamContext>> {
        info!("create_stream_context id={context_id}");
        Some(Box::new(TcpProbe { id: context_id, cluster: self.config.get("tcp_cluster").cloned() }))
    }

    fn get_type(&self) -> Option<ContextType> {
        if self.config.get("type").map(String::as_str) == Some("tcp") {
            Some(ContextType::StreamContext)
        } else {
            Some(ContextType::HttpContext)
        }
    }
}

thread_local! {
    /// `wait-tick`: streams paused until the root's next tick resumes them.
    static WAITING: std::cell::RefCell<Vec<u32>> = const { std::cell::RefCell::new(Vec::new()) };
}

struct Probe {
    id: u32,
    buffer_body: bool,
    /// `buffer-response-body`: the response body is held to its end (StopIterationAndBuffer).
    buffer_response: bool,
    response_local_reply: Option<u32>,
    /// The gRPC stream the last `stream` command opened.
    stream: Option<u32>,
    /// `stream-wait`: the request waits for the stream to close (resumed on status 0).
    wait_stream: bool,
    /// `add-trailer:K=V`: added to the request trailers (to the given ones in
    /// on_request_trailers, else as new ones in the last body callback).
    add_trailer: Option<(String, String)>,
    /// `add-response-trailer:K=V`: the same on the response.
    add_response_trailer: Option<(String, String)>,
}

/// Header pairs as `k=v|k=v`.
fn pairs(pairs: Vec<(String, String)>) -> String {
    pairs.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("|")
}

/// Metadata as `k=v|k=v`.
fn metadata(pairs: Vec<(String, Vec<u8>)>) -> String {
    pairs.iter().map(|(k, v)| format!("{k}={}", String::from_utf8_lossy(v))).collect::<Vec<_>>().join("|")
}

/// One length-delimited protobuf field (`string`/`bytes`), for foreign-function arguments.
fn proto_bytes(field: u8, value: &[u8]) -> Vec<u8> {
    let mut out = vec![(field << 3) | 2];
    let mut len = value.len();
    loop {
        let byte = (len & 0x7f) as u8;
        len >>= 7;
        if len == 0 {
            out.push(byte);
            break;
        }
        out.push(byte | 0x80);
    }
    out.extend_from_slice(value);
    out
}

/// `set_envoy_filter_state` with `SetEnvoyFilterStateArguments { path = 1, value = 2 }`.
fn set_filter_state(key: &str, value: &str) -> Result<Option<Vec<u8>>, Status> {
    let mut args = proto_bytes(1, key.as_bytes());
    args.extend(proto_bytes(2, value.as_bytes()));
    hostcalls::call_foreign_function("set_envoy_filter_state", Some(&args))
}

fn kv(arg: &str) -> (&str, &str) {
    arg.split_once('=').unwrap_or((arg, ""))
}

fn metric_type(kind: &str) -> MetricType {
    match kind {
        "gauge" => MetricType::Gauge,
        "histogram" => MetricType::Histogram,
        _ => MetricType::Counter,
    }
}

fn show(bytes: Option<Vec<u8>>) -> String {
    match bytes {
        None => "None".into(),
        Some(b) => match String::from_utf8(b.clone()) {
            Ok(s) if !s.contains('\0') && (b.len() != 8 || s.chars().all(|c| !c.is_control())) => {
                format!("text:{s}")
            }
            _ if b.len() == 8 => {
                let mut a = [0u8; 8];
                a.copy_from_slice(&b);
                format!("int:{}", i64::from_le_bytes(a))
            }
            _ => format!("bytes:{b:?}"),
        },
    }
}

impl Probe {
    /// Runs one command; returns true if the request must pause.
    fn run(&mut self, cmd: &str) -> bool {
        let (name, arg) = cmd.split_once(':').unwrap_or((cmd, ""));
        let mut pause = false;
        let result: String = match name {
            "get" => format!("{:?}", raw::get_header(0, arg)),
            "get-map" => {
                let (map, key) = arg.split_once(':').unwrap_or(("0", arg));
                format!("{:?}", raw::get_header(map.parse().unwrap_or(0), key))
            }
            "add" => {
                let (k, v) = kv(arg);
                self.add_http_request_header(k, v);
                "ok".into()
            }
            "replace" => {
                let (k, v) = kv(arg);
                self.set_http_request_header(k, Some(v));
                "ok".into()
            }
            "remove" => {
                self.remove_http_request_header(arg);
                "ok".into()
            }
            "pairs" => {
                self.get_http_request_headers().iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("|")
            }
            "set-pairs" => {
                let pairs: Vec<(&str, &str)> = arg.split('|').map(kv).collect();
                self.set_http_request_headers(pairs);
                "ok".into()
            }
            "local-reply" => {
                let code = arg.parse().unwrap_or(403);
                self.send_http_response(code, vec![("x-local", "1")], Some(b"denied by probe"));
                pause = true;
                "sent".into()
            }
            "grpc-reply" => {
                // The SDK's gRPC deny: status 200, the message as body, gRPC status 7.
                let status = hostcalls::send_grpc_response(
                    GrpcStatusCode::PermissionDenied,
                    Some("denied: 100% ~sure\u{e9}"),
                    vec![("x-local", b"1")],
                );
                pause = true;
                format!("{status:?}")
            }
            "resp-local-reply" => {
                self.response_local_reply = arg.parse().ok();
                "armed".into()
            }
            "wait-tick" => {
                WAITING.with(|w| w.borrow_mut().push(self.id));
                pause = true;
                "waiting for a tick".into()
            }
            "pause" => {
                pause = true;
                "pausing".into()
            }
            "call" | "call-bad" => {
                let mut headers = vec![(":method", "GET"), (":path", "/check")];
                if name == "call" {
                    headers.push((":authority", "auth"));
                }
                let r = self.dispatch_http_call(arg, headers, Some(b"ping"), vec![], Duration::from_millis(500));
                pause = r.is_ok();
                format!("{r:?}")
            }
            "grpc" => {
                let r = self.dispatch_grpc_call(
                    arg,
                    "probe.Auth",
                    "Check",
                    vec![("x-md", b"1".as_slice())],
                    Some(b"req"),
                    Duration::from_millis(500),
                );
                pause = r.is_ok();
                format!("{r:?}")
            }
            // gRPC streams: `stream:CLUSTER` opens one (service probe.Log, method Push,
            // metadata x-md=1) and `stream-wait:CLUSTER` also pauses until it closes; `send:MSG`,
            // `send-end:MSG`, `stream-close`, `stream-cancel` act on the last one opened (through
            // the SDK, which returns NotFound/BadArgument as errors); `grpc-send:TOKEN`,
            // `grpc-close:TOKEN`, `grpc-cancel:TOKEN` make the raw hostcall and log its status.
            "stream" | "stream-wait" => {
                let r = self.open_grpc_stream(arg, "probe.Log", "Push", vec![("x-md", b"1".as_slice())]);
                if let Ok(token) = r {
                    self.stream = Some(token);
                    if name == "stream-wait" {
                        self.wait_stream = true;
                        pause = true;
                    }
                }
                format!("{r:?}")
            }
            "send" | "send-end" => match self.stream {
                Some(token) => {
                    format!(
                        "{:?}",
                        hostcalls::send_grpc_stream_message(token, Some(arg.as_bytes()), name == "send-end")
                    )
                }
                None => "no stream".into(),
            },
            "stream-close" => match self.stream {
                Some(token) => format!("{:?}", hostcalls::close_grpc_stream(token)),
                None => "no stream".into(),
            },
            "stream-cancel" => match self.stream {
                Some(token) => format!("{:?}", hostcalls::cancel_grpc_stream(token)),
                None => "no stream".into(),
            },
            "grpc-send" | "grpc-close" | "grpc-cancel" => {
                let token = arg.parse().unwrap_or(0);
                let status = unsafe {
                    match name {
                        "grpc-send" => raw::proxy_grpc_send(token, b"raw".as_ptr(), 3, 0),
                        "grpc-close" => raw::proxy_grpc_close(token),
                        _ => raw::proxy_grpc_cancel(token),
                    }
                };
                format!("status={status}")
            }
            // `tick:MS` sets the tick period from the HTTP context.
            "tick" => format!("{:?}", hostcalls::set_tick_period(Duration::from_millis(arg.parse().unwrap_or(100)))),
            "foreign" => format!("{:?}", hostcalls::call_foreign_function(arg, None)),
            // Envoy's foreign functions: `compress:TEXT` compresses then uncompresses TEXT,
            // `uncompress-bad` feeds uncompress garbage, `filter-state:KEY=VALUE` sets filter
            // state, `filter-state-bad` sends a truncated argument message, `declare:NAME`
            // declares a read-only property from the stream context, `clear-route-cache`.
            "compress" => match hostcalls::call_foreign_function("compress", Some(arg.as_bytes())) {
                Ok(Some(z)) if z.len() > 2 => {
                    let back = hostcalls::call_foreign_function("uncompress", Some(&z));
                    let back = back.map(|b| String::from_utf8_lossy(&b.unwrap_or_default()).into_owned());
                    format!("zlib {:02x}{:02x} len={} back={back:?}", z[0], z[1], z.len())
                }
                other => format!("{other:?}"),
            },
            "uncompress-bad" => format!("{:?}", hostcalls::call_foreign_function("uncompress", Some(b"not zlib"))),
            "filter-state" => {
                let (k, v) = kv(arg);
                format!("{:?}", set_filter_state(k, v))
            }
            "filter-state-bad" => {
                format!("{:?}", hostcalls::call_foreign_function("set_envoy_filter_state", Some(&[0x0a, 5, b'k'])))
            }
            "declare" => {
                let mut args = proto_bytes(1, arg.as_bytes());
                args.extend([0x10, 1]);
                format!("{:?}", hostcalls::call_foreign_function("declare_property", Some(&args)))
            }
            "clear-route-cache" => format!("{:?}", hostcalls::call_foreign_function("clear_route_cache", None)),
            "done" => format!("{:?}", hostcalls::done()),
            "missing-hostcall" => format!("status={}", unsafe { raw::proxy_probe_no_such_hostcall() }),
            "continue-upstream" => format!("status={}", unsafe { raw::proxy_continue_stream(3) }),
            "effective" => format!("status={}", unsafe { raw::proxy_set_effective_context(arg.parse().unwrap_or(0)) }),
            "log-level" => {
                let mut level = 99u32;
                let status = unsafe { raw::proxy_get_log_level(&mut level) };
                format!("status={status} level={level}")
            }
            "panic" => panic!("probe was asked to panic"),
            "loop" => {
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            "oom" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(std::hint::black_box(vec![1u8; 1 << 20]));
                }
            }
            "shared-inc" => format!("{:?}", shared_increment(arg)),
            "shared-get" => {
                let (v, cas) = self.get_shared_data(arg);
                format!("{} cas={cas:?}", show(v))
            }
            "shared-set" => {
                let (k, rest) = kv(arg);
                let (v, cas) = rest.split_once('@').unwrap_or((rest, "0"));
                let cas = cas.parse::<u32>().ok().filter(|c| *c != 0);
                format!("{:?}", self.set_shared_data(k, Some(v.as_bytes()), cas))
            }
            "enqueue" => {
                let (q, v) = kv(arg);
                enqueue(q, v)
            }
            "metric" => {
                // metric:KIND:NAME=DELTA (increment, raw status)
                let (kind, rest) = arg.split_once(':').unwrap_or(("counter", arg));
                let (n, delta) = kv(rest);
                match hostcalls::define_metric(metric_type(kind), n) {
                    Ok(id) => {
                        format!("status={}", unsafe { raw::proxy_increment_metric(id, delta.parse().unwrap_or(1)) })
                    }
                    Err(e) => format!("define failed {e:?}"),
                }
            }
            "record" => {
                let (kind, rest) = arg.split_once(':').unwrap_or(("counter", arg));
                let (n, v) = kv(rest);
                let id = hostcalls::define_metric(metric_type(kind), n);
                format!("{:?}", id.and_then(|id| hostcalls::record_metric(id, v.parse().unwrap_or(0))))
            }
            "metric-get" => {
                let (kind, n) = arg.split_once(':').unwrap_or(("counter", arg));
                let id = hostcalls::define_metric(metric_type(kind), n);
                format!("{:?}", id.and_then(hostcalls::get_metric))
            }
            "prop" => show(self.get_property(arg.split('.').collect())),
            // Segments separated by '|', so that a segment may contain dots.
            "prop-path" => show(self.get_property(arg.split('|').collect())),
            "set-prop" => {
                let (k, v) = kv(arg);
                self.set_property(k.split('.').collect(), Some(v.as_bytes()));
                "ok".into()
            }
            // `set-prop-raw:NAME=VALUE`: the raw hostcall's status (the SDK panics on anything but OK).
            "set-prop-raw" => {
                let (k, v) = kv(arg);
                format!("status={}", unsafe { raw::proxy_set_property(k.as_ptr(), k.len(), v.as_ptr(), v.len()) })
            }
            "time" => {
                format!("{}", self.get_current_time().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0))
            }
            "buffer-body" => {
                self.buffer_body = true;
                "armed".into()
            }
            // The name is also declared in the `trailer` header, as HTTP/1.1 wants it before the body.
            "add-trailer" => {
                let (k, v) = kv(arg);
                self.add_http_request_header("trailer", k);
                self.add_trailer = Some((k.to_owned(), v.to_owned()));
                "armed".into()
            }
            "add-response-trailer" => {
                let (k, v) = kv(arg);
                self.add_response_trailer = Some((k.to_owned(), v.to_owned()));
                "armed".into()
            }
            "buffer-response-body" => {
                self.buffer_response = true;
                "armed".into()
            }
            "close" => {
                self.reset_http_request();
                "ok".into()
            }
            "" => return false,
            other => format!("unknown command {other}"),
        };
        info!("probe {cmd} => {result}");
        pause
    }
}

impl Context for Probe {
    fn on_http_call_response(&mut self, token: u32, headers: usize, body: usize, trailers: usize) {
        info!("on_http_call_response token={token} headers={headers} body={body} trailers={trailers}");
        if headers == 0 {
            let (code, message) = self.get_grpc_status();
            info!("probe call failed status={code} message={message:?}");
            self.send_http_response(503, vec![], Some(b"auth unavailable"));
            return;
        }
        let status = self.get_http_call_response_header(":status").unwrap_or_default();
        let body = self.get_http_call_response_body(0, body).unwrap_or_default();
        info!("probe call answered status={status} body={}", String::from_utf8_lossy(&body));
        if status == "200" {
            self.resume_http_request();
        } else {
            self.send_http_response(403, vec![("x-auth", "denied")], Some(b"denied"));
        }
    }

    fn on_grpc_call_response(&mut self, token: u32, status: u32, size: usize) {
        let body = self.get_grpc_call_response_body(0, size).unwrap_or_default();
        info!("on_grpc_call_response token={token} status={status} message={}", String::from_utf8_lossy(&body));
        if status == 0 {
            self.resume_http_request();
        } else {
            self.send_http_response(403, vec![], Some(b"grpc denied"));
        }
    }

    fn on_grpc_stream_initial_metadata(&mut self, token: u32, n: u32) {
        let md = metadata(self.get_grpc_stream_initial_metadata());
        info!("on_grpc_stream_initial_metadata id={} token={token} n={n} metadata={md}", self.id);
    }

    fn on_grpc_stream_message(&mut self, token: u32, size: usize) {
        let message = self.get_grpc_stream_message(0, size).unwrap_or_default();
        let text = String::from_utf8_lossy(&message).into_owned();
        info!("on_grpc_stream_message id={} token={token} size={size} message={text}", self.id);
        // A message `reply:X` makes the filter send X back from inside the callback.
        if let Some(reply) = text.strip_prefix("reply:") {
            let r = hostcalls::send_grpc_stream_message(token, Some(reply.as_bytes()), false);
            info!("probe reply {reply} => {r:?}");
        }
    }

    fn on_grpc_stream_trailing_metadata(&mut self, token: u32, n: u32) {
        let md = metadata(self.get_grpc_stream_trailing_metadata());
        info!("on_grpc_stream_trailing_metadata id={} token={token} n={n} metadata={md}", self.id);
    }

    fn on_grpc_stream_close(&mut self, token: u32, status: u32) {
        let (code, message) = self.get_grpc_status();
        info!("on_grpc_stream_close id={} token={token} status={status} get_status=({code}, {message:?})", self.id);
        if self.wait_stream {
            self.wait_stream = false;
            if status == 0 {
                self.resume_http_request();
            } else {
                self.send_http_response(403, vec![], Some(b"stream denied"));
            }
        }
    }

    fn on_done(&mut self) -> bool {
        info!("on_done id={}", self.id);
        true
    }
}

impl HttpContext for Probe {
    fn on_http_request_headers(&mut self, n: usize, eos: bool) -> Action {
        info!("on_request_headers id={} n={n} eos={eos}", self.id);
        let commands = self.get_http_request_header("x-probe").unwrap_or_default();
        let mut pause = false;
        for cmd in commands.split(',') {
            pause |= self.run(cmd.trim());
        }
        if pause {
            Action::Pause
        } else {
            Action::Continue
        }
    }

    fn on_http_request_body(&mut self, size: usize, eos: bool) -> Action {
        info!("on_request_body id={} size={size} eos={eos}", self.id);
        if let Some((k, v)) = self.add_trailer.take_if(|_| eos) {
            self.add_http_request_trailer(&k, &v);
        }
        if !self.buffer_body {
            return Action::Continue;
        }
        if !eos {
            return Action::Pause;
        }
        let body = self.get_http_request_body(0, size).unwrap_or_default();
        let mut wrapped = b"[".to_vec();
        wrapped.extend_from_slice(&body);
        wrapped.push(b']');
        self.set_http_request_body(0, size, &wrapped);
        Action::Continue
    }

    fn on_http_request_trailers(&mut self, n: usize) -> Action {
        info!("on_request_trailers id={} n={n} {}", self.id, pairs(self.get_http_request_trailers()));
        if let Some((k, v)) = self.add_trailer.take() {
            self.add_http_request_trailer(&k, &v);
        }
        Action::Continue
    }

    fn on_http_response_trailers(&mut self, n: usize) -> Action {
        info!("on_response_trailers id={} n={n} {}", self.id, pairs(self.get_http_response_trailers()));
        if let Some((k, v)) = self.add_response_trailer.take() {
            self.add_http_response_trailer(&k, &v);
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, n: usize, eos: bool) -> Action {
        let status = self.get_http_response_header(":status").unwrap_or_default();
        info!("on_response_headers id={} n={n} eos={eos} status={status}", self.id);
        self.set_http_response_header("x-probe-seen", Some("1"));
        if let Some((k, _)) = &self.add_response_trailer {
            self.add_http_response_header("trailer", k);
        }
        if let Some(code) = self.response_local_reply.take() {
            self.send_http_response(code, vec![], Some(b"replaced by probe"));
            return Action::Pause;
        }
        Action::Continue
    }

    fn on_http_response_body(&mut self, size: usize, eos: bool) -> Action {
        info!("on_response_body id={} size={size} eos={eos}", self.id);
        if let Some((k, v)) = self.add_response_trailer.take_if(|_| eos) {
            self.add_http_response_trailer(&k, &v);
        }
        if self.buffer_response && !eos {
            return Action::Pause;
        }
        Action::Continue
    }

    fn on_log(&mut self) {
        info!("on_log id={}", self.id);
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        info!("on_delete id={}", self.id);
    }
}

struct TcpProbe {
    id: u32,
    /// `tcp_cluster=NAME`: the cluster this connection asks Envoy's TCP proxy for.
    cluster: Option<String>,
}

impl Context for TcpProbe {}

impl StreamContext for TcpProbe {
    fn on_new_connection(&mut self) -> Action {
        info!("on_new_connection id={}", self.id);
        if let Some(cluster) = &self.cluster {
            info!("probe tcp_cluster {cluster} => {:?}", set_filter_state("envoy.tcp_proxy.cluster", cluster));
        }
        Action::Continue
    }

    fn on_downstream_data(&mut self, size: usize, eos: bool) -> Action {
        let data = self.get_downstream_data(0, size).unwrap_or_default();
        let text = String::from_utf8_lossy(&data).into_owned();
        info!("on_downstream_data id={} size={size} eos={eos} data={text}", self.id);
        if text.contains("close") {
            self.close_downstream();
        }
        if text.contains("upper") {
            self.set_downstream_data(0, size, text.to_uppercase().as_bytes());
        }
        if text.trim_end().ends_with("hold") && !eos {
            return Action::Pause;
        }
        Action::Continue
    }

    fn on_upstream_data(&mut self, size: usize, eos: bool) -> Action {
        let data = self.get_upstream_data(0, size).unwrap_or_default();
        info!("on_upstream_data id={} size={size} eos={eos} data={}", self.id, String::from_utf8_lossy(&data));
        Action::Continue
    }

    fn on_downstream_close(&mut self, peer: PeerType) {
        info!("on_downstream_close id={} peer={}", self.id, peer as u32);
    }

    fn on_upstream_close(&mut self, peer: PeerType) {
        info!("on_upstream_close id={} peer={}", self.id, peer as u32);
    }

    fn on_log(&mut self) {
        info!("on_log id={}", self.id);
    }
}
