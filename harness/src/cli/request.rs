// `ebb request`: one HTTP exchange (or one TCP connection with --tcp) through any filter,
// printing what reached the upstream, what the client got, the logs and the metrics.

use std::process::ExitCode;

use anyhow::{bail, Context};
use ebb_harness::{
    CallAnswer, CallKind, Clock, ConnectionManager, FailurePolicy, Fault, GrpcStreamEvent, HeaderMap, HostError,
    Limits, LogLevel, Message, Metric, Peer, PendingCall, Plugin, Proxy, ProxyOptions, Step, StreamId,
};
use serde_json::{json, Value};

use super::args;
use super::exit;

pub const EXAMPLES: &str = "\
Examples:
  # A GET through the filter, upstream answering 200 with a body:
  ebb request --plugin dist/ebb.wasm --config '{}' -H 'x-user: 42' --path /api --response-body ok

  # An auth filter that calls cluster `auth` first; the call is answered with 403:
  ebb request --plugin authz.wasm --call-response 'auth=403:denied' --json

  # The same filter calling a real authorization server on this machine:
  ebb request --plugin authz.wasm --upstream 'auth=127.0.0.1:9000' --json

  # A filter that streams to gRPC cluster `logs`: the stream is answered with status 0 and
  # one message, and the output shows what the filter sent on it:
  ebb request --plugin logger.wasm --call-response 'logs=0:ack'

  # Let 2.5 s of simulated time pass first, so that the filter's ticks fire:
  ebb request --plugin dist/ebb.wasm --config @ebb.json --at 2500ms

  # Does the filter run in Kong's ngx_wasm_module too? Play its quirks (or --host-profile
  # strict: whatever Envoy or Kong refuses):
  ebb request --plugin dist/ebb.wasm --config @ebb.json --host-profile ngx-wasm

  # A network (TCP) filter: client data in, upstream data back; the output names the cluster
  # Envoy's TCP proxy would pick (the filter may set envoy.tcp_proxy.cluster in filter state):
  ebb request --plugin tcp.wasm --tcp --data 'hello' --response-body 'world'

  # The same request id again (x-request-id is seeded), and a 2 s route timeout upstream:
  ebb request --plugin my-filter.wasm --seed 7 --route-timeout 2s --json

Exit status: 0 when the exchange ran, 1 when the filter failed (trap, deadline,
memory limit, rejected configuration), 2 for bad input or a harness error.";

/// Arguments of `ebb request`.
#[derive(clap::Args)]
pub struct Args {
    /// The filter (.wasm, Proxy-Wasm ABI 0.2.0 or 0.2.1).
    #[arg(long, value_name = "FILTER.wasm")]
    plugin: std::path::PathBuf,
    /// Plugin configuration given to on_configure: a string, or @FILE.
    #[arg(long, value_name = "STRING|@FILE", default_value = "")]
    config: String,
    /// VM configuration given to on_vm_start: a string, or @FILE.
    #[arg(long, value_name = "STRING|@FILE", default_value = "")]
    vm_config: String,
    /// The filter's root_id.
    #[arg(long, default_value = "")]
    root_id: String,
    /// The filter's vm_id.
    #[arg(long, default_value = "")]
    vm_id: String,
    /// Request header 'name: value' (repeatable).
    #[arg(short = 'H', long = "header", value_name = "'name: value'", value_parser = args::header)]
    headers: Vec<(String, String)>,
    /// Request method.
    #[arg(long, default_value = "GET")]
    method: String,
    /// Request path.
    #[arg(long, default_value = "/")]
    path: String,
    /// Request Host (Envoy's connection manager turns it into :authority); a -H 'host: ...'
    /// wins over it.
    #[arg(long, default_value = "example.com")]
    authority: String,
    /// Seeds the x-request-id Envoy's connection manager gives the request (the same seed
    /// gives the same id).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// The route's timeout: the router sends it upstream as x-envoy-expected-rq-timeout-ms
    /// (0s: none).
    #[arg(long, value_name = "DURATION", default_value = "15s")]
    route_timeout: String,
    /// Request body (none by default): a string, or @FILE.
    #[arg(long, value_name = "STRING|@FILE")]
    body: Option<String>,
    /// Status the upstream answers with.
    #[arg(long, default_value_t = 200)]
    response_status: u16,
    /// Upstream response header 'name: value' (repeatable).
    #[arg(long = "response-header", value_name = "'name: value'", value_parser = args::header)]
    response_headers: Vec<(String, String)>,
    /// Upstream response body (in --tcp mode: the data the upstream sends back): a string, or @FILE.
    #[arg(long, value_name = "STRING|@FILE")]
    response_body: Option<String>,
    /// Answer the filter's calls to CLUSTER with STATUS and BODY (repeatable). For gRPC, STATUS
    /// is the gRPC status (0 = OK, BODY the message); a gRPC stream gets initial metadata, BODY
    /// as one message if STATUS is 0, then a close with STATUS. Calls to other clusters are
    /// refused as Envoy refuses unknown clusters.
    #[arg(long = "call-response", value_name = "CLUSTER=STATUS[:BODY]")]
    call_responses: Vec<String>,
    /// Send the filter's calls to CLUSTER to a real server at HOST:PORT (repeatable): HTTP
    /// calls as HTTP/1.1, gRPC calls over HTTP/2 without TLS. The exchange waits (wall time)
    /// for the answer up to the call's timeout, which then ends it as Envoy does (504).
    #[arg(long = "upstream", value_name = "CLUSTER=HOST:PORT", value_parser = args::upstream)]
    upstreams: Vec<(String, std::net::SocketAddr)>,
    /// A property the filter can read, by dotted path (repeatable), e.g. source.address=10.0.0.1:5000.
    #[arg(long = "property", value_name = "PATH=VALUE", value_parser = args::key_value)]
    properties: Vec<(String, String)>,
    /// Worker VMs to start (the exchange runs on worker 0). 0 plays a singleton service (Envoy's
    /// bootstrap extension with `singleton: true`): the main VM only runs its lifecycle and
    /// ticks (--at), and no request or connection is sent.
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// Simulated time to let pass before the request (ticks fire), e.g. 1500ms.
    #[arg(long, value_name = "DURATION")]
    at: Option<String>,
    /// Longest simulated time to wait for a paused stream (a delay, a queued request) to be
    /// resumed by the filter's timers: the clock runs from event to event (ticks, call
    /// timeouts) until the stream resumes, is answered, or this much has passed.
    #[arg(long, value_name = "DURATION", default_value = "5s")]
    wait: String,
    /// Lowest log level kept (trace, debug, info, warn, error, critical).
    #[arg(long, default_value = "info")]
    log_level: LogLevel,
    /// Most log lines kept; past it the oldest go, and the output says how many.
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    max_log_lines: usize,
    /// When the filter fails (trap, deadline, memory limit), let the stream continue without it
    /// (Envoy FAIL_OPEN) instead of answering it with a local 503 `wasm_fail_stream` (fail-closed,
    /// Envoy's default).
    #[arg(long)]
    fail_open: bool,
    /// ebb's own safety net (Envoy has none): a callback running longer than this (wall time) is
    /// cut and counts as a failure.
    #[arg(long, value_name = "DURATION", default_value = "1s")]
    callback_deadline: String,
    /// The proxy the host plays: does the filter run in Kong's ngx_wasm_module too?
    #[arg(long, value_enum, default_value_t = args::HostProfile::Envoy)]
    host_profile: args::HostProfile,
    /// With --host-profile ngx-wasm or strict: play a wasm{} block without `shm_kv *`, where
    /// every shared-data call traps.
    #[arg(long)]
    no_shm_kv: bool,
    /// Drive a TCP connection through a network filter instead of an HTTP exchange.
    #[arg(long)]
    tcp: bool,
    /// Client data for --tcp.
    #[arg(long, requires = "tcp")]
    data: Option<String>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// Print log lines in full (a trap's backtrace included) instead of their first line.
    #[arg(long, short = 'v')]
    verbose: bool,
}

struct CallResponse {
    cluster: String,
    status: u16,
    body: String,
}

fn parse_call_response(value: &str) -> anyhow::Result<CallResponse> {
    let (cluster, rest) =
        value.split_once('=').with_context(|| format!("--call-response {value:?}: expected CLUSTER=STATUS[:BODY]"))?;
    let (status, body) = rest.split_once(':').unwrap_or((rest, ""));
    let status = status.parse().with_context(|| format!("--call-response {value:?}: bad status {status:?}"))?;
    Ok(CallResponse { cluster: cluster.to_owned(), status, body: body.to_owned() })
}

/// A gRPC status must be one of gRPC's codes (0 OK .. 16 UNAUTHENTICATED).
fn grpc_status(c: &CallResponse) -> Result<u32, HostError> {
    if c.status > 16 {
        return Err(HostError::Usage(format!(
            "--call-response {}={}: {} is not a gRPC status (0-16) and the call to {:?} is gRPC",
            c.cluster, c.status, c.status, c.cluster
        )));
    }
    Ok(u32::from(c.status))
}

/// What happened, for printing.
#[derive(Default)]
struct Report {
    steps: Vec<(String, String)>,
    upstream: Option<Message>,
    response: Option<Message>,
    local_reply: Option<ebb_harness::LocalReply>,
    calls: Vec<Value>,
    error: Option<HostError>,
    stuck: bool,
    tcp: Option<Value>,
    /// `--workers 0`: the main VM only, no stream.
    singleton: bool,
    /// `--wait` in nanoseconds, and the simulated time it ends at once a stream first paused.
    wait_ns: u64,
    wait_until_ns: Option<u64>,
    /// Steps the filter's timers resumed, with the simulated time they waited (ns).
    resumed: Vec<(String, u64)>,
    /// What the filter set with Envoy's `set_envoy_filter_state` foreign function.
    filter_state: Vec<(String, Vec<u8>)>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let cache = ebb_harness::host::CompileCache::from_env();
    let plugin = Plugin::load_cached(&args.plugin, cache.as_ref()).context("cannot load the filter")?;
    let calls: Vec<CallResponse> =
        args.call_responses.iter().map(|v| parse_call_response(v)).collect::<anyhow::Result<_>>()?;
    let callback_deadline = args::duration(&args.callback_deadline).context("--callback-deadline")?;
    if callback_deadline.is_zero() {
        bail!("--callback-deadline must be more than 0");
    }
    let options = ProxyOptions {
        vm_id: args.vm_id.clone(),
        root_id: args.root_id.clone(),
        plugin_config: args::string_or_file(&args.config).context("--config")?,
        vm_config: args::string_or_file(&args.vm_config).context("--vm-config")?,
        workers: args.workers,
        limits: Limits { callback_deadline, ..Limits::default() },
        failure_policy: if args.fail_open { FailurePolicy::FailOpen } else { FailurePolicy::FailClosed },
        properties: args.properties.iter().map(|(k, v)| (k.clone(), v.clone().into_bytes())).collect(),
        clusters: calls.iter().map(|c| c.cluster.clone()).collect(),
        upstreams: args.upstreams.clone(),
        log_level: args.log_level,
        max_log_records: args.max_log_lines,
        host_profile: args.host_profile.into(),
        shm_kv_namespace: !args.no_shm_kv,
        // The request goes through Envoy's connection manager first, and what the upstream got
        // is what the router sends.
        connection_manager: Some(ConnectionManager {
            seed: args.seed,
            route_timeout: args::duration(&args.route_timeout).context("--route-timeout")?,
        }),
        ..ProxyOptions::default()
    };
    let mut proxy = match Proxy::new(&plugin, options, Clock::default()) {
        Ok(p) => p,
        Err(e) if e.fault() == Fault::Filter => {
            let report = Report { error: Some(e), ..Report::default() };
            print(&args, &plugin, None, &report);
            return Ok(ExitCode::from(exit::FAILED));
        }
        Err(e) => return Err(e.into()),
    };
    let wait = args::duration(&args.wait).context("--wait")?;
    let mut report = Report { wait_ns: u64::try_from(wait.as_nanos()).unwrap_or(u64::MAX), ..Report::default() };
    if let Some(at) = &args.at {
        let d = args::duration(at).context("--at")?;
        if let Some(e) = proxy.advance(d).into_iter().next() {
            report.error = Some(e);
        }
    }
    if args.workers == 0 {
        report.singleton = true;
    } else if report.error.is_none() {
        if args.tcp {
            run_tcp(&args, &mut proxy, &mut report)?;
        } else {
            run_http(&args, &mut proxy, &calls, &mut report)?;
        }
    }
    print(&args, &plugin, Some(&proxy), &report);
    if let Some(e) = report.error.as_ref().filter(|e| e.fault() == Fault::Caller) {
        bail!("{e}");
    }
    Ok(ExitCode::from(if report.error.is_some() { exit::FAILED } else { exit::OK }))
}

/// Records a step; answers the filter's calls while it pauses. Returns false when the
/// exchange cannot go on (paused for good, local reply, reset, failure).
fn settle(
    proxy: &mut Proxy,
    id: StreamId,
    what: &str,
    mut step: Step,
    calls: &[CallResponse],
    report: &mut Report,
) -> bool {
    loop {
        report.steps.push((what.to_owned(), step.name().to_owned()));
        match step {
            Step::Continue => return true,
            Step::Pause => {
                let pending = proxy.pending_calls();
                if pending.is_empty() && proxy.upstream_calls().is_empty() {
                    match wait_for_timers(proxy, id, what, report) {
                        Some(next) => {
                            step = next;
                            continue;
                        }
                        None => {
                            report.stuck = true;
                            return false;
                        }
                    }
                }
                for call in pending {
                    if let Err(e) = answer(proxy, call, calls, report) {
                        report.error = Some(e);
                        return false;
                    }
                }
                if !wait_for_upstreams(proxy, report) {
                    return false;
                }
                step = match proxy.http_stream(id) {
                    Some(mut h) => h.resume(),
                    None => return false,
                };
            }
            Step::LocalReply(_) | Step::Closed { .. } => return false,
            // The host applied the failure policy in this step: fail-closed answered the
            // stream (a local 503), fail-open let it continue without the filter.
            Step::Failed(e) => {
                report.error = Some(e);
                return proxy
                    .http_stream(id)
                    .is_some_and(|mut h| h.client_response().is_none() && h.local_reply().is_none());
            }
        }
    }
}

/// A paused stream nobody answers a call for: runs simulated time from event to event (ticks,
/// call timeouts), as Envoy's timers would, until the filter resumes or answers the stream, makes
/// a call, or `--wait` (counted from the first pause of the exchange) has passed. None when the
/// stream is still paused then.
fn wait_for_timers(proxy: &mut Proxy, id: StreamId, what: &str, report: &mut Report) -> Option<Step> {
    let paused_at = proxy.clock().now_ns();
    let until = *report.wait_until_ns.get_or_insert(paused_at.saturating_add(report.wait_ns));
    loop {
        let now = proxy.clock().now_ns();
        let next = proxy.next_due_ns().filter(|&t| t <= until).map(|t| t.max(now));
        let to = next.unwrap_or(until);
        if let Some(e) = proxy.advance_to(to).into_iter().next() {
            report.error = Some(e);
            return None;
        }
        let step = proxy.http_stream(id)?.resume();
        if !matches!(step, Step::Pause) {
            report.resumed.push((what.to_owned(), to.saturating_sub(paused_at)));
            return Some(step);
        }
        if !proxy.pending_calls().is_empty() || !proxy.upstream_calls().is_empty() {
            return Some(step);
        }
        if next.is_none() || to >= until {
            return None;
        }
    }
}

/// Longest wait for a real upstream when the filter gave its call no timeout (Envoy would
/// wait for ever).
const UNTIMED_CALL_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Waits for the answers of real upstreams, each up to its call's timeout, which then
/// answers it as Envoy does (504). False when the exchange cannot go on.
fn wait_for_upstreams(proxy: &mut Proxy, report: &mut Report) -> bool {
    while let Some(next) = proxy.upstream_calls().into_iter().next() {
        let now = proxy.clock().now_ns();
        let wait =
            next.deadline_ns.map_or(UNTIMED_CALL_WAIT, |d| std::time::Duration::from_nanos(d.saturating_sub(now)));
        let answered = proxy.await_upstreams(wait);
        if answered.is_empty() {
            let Some(deadline) = next.deadline_ns else {
                report.calls.push(call_json(&next, json!(format!("no answer from {}", upstream_of(&next)))));
                report.stuck = true;
                return false;
            };
            report.calls.push(call_json(&next, json!("timeout")));
            if let Some(e) = proxy.advance_to(deadline.max(now)).into_iter().next() {
                report.error = Some(e);
                return false;
            }
        }
        for a in answered {
            report.calls.push(call_json(&a.call, answer_json(&a.answer)));
            if let Some(e) = a.error {
                report.error = Some(e);
                return false;
            }
        }
    }
    true
}

fn upstream_of(call: &PendingCall) -> String {
    call.upstream.map(|a| a.to_string()).unwrap_or_default()
}

fn call_json(call: &PendingCall, answer: Value) -> Value {
    let mut v = json!({
        "cluster": call.cluster,
        "kind": call.kind,
        "headers": pairs(&call.headers),
        "body": String::from_utf8_lossy(&call.body),
        "answer": answer,
    });
    if let Some(addr) = call.upstream {
        v["upstream"] = json!(addr.to_string());
    }
    v
}

/// What an answer looked like: the status (HTTP or gRPC), or "reset".
fn answer_json(answer: &CallAnswer) -> Value {
    match answer {
        CallAnswer::Http { headers, .. } => json!(headers.get_str(":status").and_then(|s| s.parse::<u16>().ok())),
        CallAnswer::Grpc { status, .. } => json!(status),
        CallAnswer::Failure => json!("reset"),
    }
}

/// Answers one call with the `--call-response` for its cluster (a reset when there is none) and
/// records it in the report. gRPC statuses are STATUS as given, as for unary calls: 0 is OK.
fn answer(proxy: &mut Proxy, call: PendingCall, calls: &[CallResponse], report: &mut Report) -> Result<(), HostError> {
    let response = calls.iter().find(|c| c.cluster == call.cluster);
    let mut shown = call_json(&call, response.map_or(json!("reset"), |c| json!(c.status)));
    let result = match (response, &call.kind) {
        (_, CallKind::GrpcStream { .. }) => {
            let (result, seen) = match response.map(grpc_status).transpose() {
                Ok(_) => answer_stream(proxy, &call, response),
                Err(e) => (Err(e), call.clone()),
            };
            shown["sent"] = seen.sent.iter().map(|m| json!(String::from_utf8_lossy(m))).collect();
            shown["half_closed"] = json!(seen.local_closed);
            result
        }
        (Some(c), CallKind::Http) => proxy.answer_call(
            call.id,
            CallAnswer::http(c.status, &[("content-length", c.body.len().to_string())], c.body.clone()),
        ),
        (Some(c), CallKind::Grpc { .. }) => grpc_status(c).and_then(|status| {
            proxy.answer_call(
                call.id,
                CallAnswer::Grpc {
                    status,
                    message: c.body.clone().into_bytes(),
                    initial_metadata: HeaderMap::new(),
                    trailing_metadata: HeaderMap::new(),
                },
            )
        }),
        (None, _) => proxy.answer_call(call.id, CallAnswer::Failure),
    };
    report.calls.push(shown);
    result
}

/// Plays the remote side of a gRPC stream: empty initial metadata, BODY as one message if
/// STATUS is 0, empty trailing metadata, close with STATUS (no response: close with 14).
/// Returns the stream as it stood before the close, so that the report shows everything the
/// filter sent, including from the callbacks (sends after the close go nowhere).
fn answer_stream(
    proxy: &mut Proxy,
    call: &PendingCall,
    response: Option<&CallResponse>,
) -> (Result<(), HostError>, PendingCall) {
    let mut events = Vec::new();
    if let Some(c) = response {
        events.push(GrpcStreamEvent::InitialMetadata(HeaderMap::new()));
        if c.status == 0 {
            events.push(GrpcStreamEvent::Message(c.body.clone().into_bytes()));
        }
        events.push(GrpcStreamEvent::TrailingMetadata(HeaderMap::new()));
    }
    let status = response.map_or(14, |c| u32::from(c.status));
    events.push(GrpcStreamEvent::Close { status, message: String::new() });
    let mut seen = call.clone();
    for event in events {
        // The filter may cancel the stream from any callback: then it is over.
        match proxy.pending_call(call.id) {
            Some(now) => seen = now,
            None => break,
        }
        if let Err(e) = proxy.grpc_stream_event(call.id, event) {
            return (Err(e), seen);
        }
    }
    (Ok(()), seen)
}

fn run_http(args: &Args, proxy: &mut Proxy, calls: &[CallResponse], report: &mut Report) -> anyhow::Result<()> {
    // An HTTP/1.1 request as a client sends it: the request line, then Host and the headers.
    let mut headers = vec![(":method".to_owned(), args.method.clone()), (":path".to_owned(), args.path.clone())];
    if !args.headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        headers.push(("host".to_owned(), args.authority.clone()));
    }
    headers.extend(args.headers.iter().cloned());
    let body = match &args.body {
        Some(b) => args::string_or_file(b).context("--body")?,
        None => Vec::new(),
    };
    let id = {
        let http = proxy.worker(0)?.http();
        http.id()
    };
    let step = reopen(proxy, id)?.request_headers(&headers, body.is_empty());
    let mut going = settle(proxy, id, "request_headers", step, calls, report);
    if going && !body.is_empty() {
        let step = reopen(proxy, id)?.request_body(&body, true);
        going = settle(proxy, id, "request_body", step, calls, report);
    }
    if going {
        let mut response = vec![(":status".to_owned(), args.response_status.to_string())];
        response.extend(args.response_headers.iter().cloned());
        let rbody = match &args.response_body {
            Some(b) => args::string_or_file(b).context("--response-body")?,
            None => Vec::new(),
        };
        if !rbody.is_empty() && !response.iter().any(|(k, _)| k.eq_ignore_ascii_case("content-length")) {
            response.push(("content-length".into(), rbody.len().to_string()));
        }
        let step = reopen(proxy, id)?.response_headers(&response, rbody.is_empty());
        going = settle(proxy, id, "response_headers", step, calls, report);
        if going && !rbody.is_empty() {
            let step = reopen(proxy, id)?.response_body(&rbody, true);
            settle(proxy, id, "response_body", step, calls, report);
        }
    }
    // Streams the filter opened without waiting for them are answered before the exchange
    // ends (finishing it would cancel them), so that the report shows what was sent on them.
    for call in proxy.pending_calls().into_iter().filter(|c| matches!(c.kind, CallKind::GrpcStream { .. })) {
        if report.error.is_some() {
            break;
        }
        if let Err(e) = answer(proxy, call, calls, report) {
            report.error = Some(e);
        }
    }
    let mut http = reopen(proxy, id)?;
    report.upstream = http.upstream_request();
    report.response = http.client_response();
    report.local_reply = http.local_reply();
    report.filter_state = http.filter_state();
    if let Err(e) = http.finish() {
        report.error.get_or_insert(e);
    }
    Ok(())
}

fn reopen(proxy: &mut Proxy, id: StreamId) -> anyhow::Result<ebb_harness::Http<'_>> {
    match proxy.http_stream(id) {
        Some(h) => Ok(h),
        None => bail!("the stream went away"),
    }
}

fn run_tcp(args: &Args, proxy: &mut Proxy, report: &mut Report) -> anyhow::Result<()> {
    let mut tcp = proxy.worker(0)?.tcp();
    let mut steps = Vec::new();
    let mut error = None;
    let fail_open = args.fail_open;
    let mut record = |what: &str, step: Step| -> bool {
        steps.push((what.to_owned(), step.name().to_owned()));
        match step {
            // Fail-open: the connection goes on without the filter; fail-closed closed it.
            Step::Failed(e) => {
                error = Some(e);
                fail_open
            }
            Step::Closed { .. } => false,
            _ => true,
        }
    };
    let mut going = record("new_connection", tcp.new_connection());
    if going {
        if let Some(data) = &args.data {
            going = record("downstream_data", tcp.downstream_data(data.as_bytes(), false));
        }
    }
    if going {
        if let Some(data) = &args.response_body {
            record("upstream_data", tcp.upstream_data(data.as_bytes(), false));
        }
    }
    let close_requests = tcp.close_requests();
    let upstream_cluster = tcp.upstream_cluster();
    report.filter_state = tcp.filter_state();
    let to_upstream = tcp.to_upstream();
    let to_downstream = tcp.to_downstream();
    let mut close_error = tcp.downstream_close(Peer::Remote).err();
    if close_error.is_none() {
        close_error = tcp.upstream_close(Peer::Local).err();
    }
    if let Err(e) = tcp.finish() {
        close_error.get_or_insert(e);
    }
    report.steps = steps;
    report.error = error.or(close_error);
    report.tcp = Some(json!({
        "to_upstream": String::from_utf8_lossy(&to_upstream),
        "to_downstream": String::from_utf8_lossy(&to_downstream),
        "close_requests": close_requests.iter().map(|c| format!("{c:?}").to_lowercase()).collect::<Vec<_>>(),
        // The cluster Envoy's TCP proxy sends the connection to (the filter may choose it with
        // the `envoy.tcp_proxy.cluster` filter state); null if the filter never let it through.
        "upstream_cluster": upstream_cluster,
    }));
    Ok(())
}

fn pairs(map: &HeaderMap) -> Value {
    Value::Array(map.to_strings().into_iter().map(|(k, v)| json!([k, v])).collect())
}

fn message(m: &Option<Message>, status: bool) -> Value {
    match m {
        None => Value::Null,
        Some(m) => {
            let mut v = json!({
                "headers": pairs(&m.headers),
                "body": String::from_utf8_lossy(&m.body),
                "trailers": pairs(&m.trailers),
                "complete": m.complete,
            });
            if status {
                v["status"] = json!(m.headers.get_str(":status").and_then(|s| s.parse::<u16>().ok()));
            }
            v
        }
    }
}

fn metric_json(m: &Metric) -> Value {
    json!({ "name": m.name, "type": m.kind, "value": m.value })
}

fn print(args: &Args, plugin: &Plugin, proxy: Option<&Proxy>, report: &Report) {
    let logs = proxy.map(Proxy::logs).unwrap_or_default();
    let metrics = proxy.map(Proxy::metrics).unwrap_or_default();
    if args.json {
        let mut out = json!({
            "filter": plugin.name(),
            "steps": report.steps.iter().map(|(w, s)| json!({"step": w, "result": s})).collect::<Vec<_>>(),
            "upstream": message(&report.upstream, false),
            "local_reply": report.local_reply.as_ref().map(|r| json!({
                "status": r.status,
                "headers": pairs(&r.headers),
                "body": String::from_utf8_lossy(&r.body),
                "details": r.details,
            })),
            "response": message(&report.response, true),
            "calls": report.calls,
            "stuck": report.stuck,
            "singleton": report.singleton,
            "resumed": report.resumed.iter().map(|(w, ns)| json!({"step": w, "after_ms": *ns as f64 / 1e6})).collect::<Vec<_>>(),
            "logs": logs,
            "metrics": metrics.iter().map(metric_json).collect::<Vec<_>>(),
            "warnings": plugin.warnings(),
            "unknown_clusters": proxy.map(Proxy::unknown_clusters).unwrap_or_default(),
            "dropped_logs": proxy.map_or(0, Proxy::dropped_logs),
            "filter_state": report.filter_state.iter()
                .map(|(k, v)| (k.clone(), json!(String::from_utf8_lossy(v))))
                .collect::<serde_json::Map<_, _>>(),
            "error": report.error.as_ref().map(ToString::to_string),
        });
        if let Some(tcp) = &report.tcp {
            out["tcp"] = tcp.clone();
        }
        println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
        return;
    }
    println!("filter: {}", plugin.name());
    for w in plugin.warnings() {
        println!("warning: {w}");
    }
    for (what, result) in &report.steps {
        println!("step {what}: {result}");
    }
    for (what, ns) in &report.resumed {
        println!("{what}: resumed by the filter after {} ms of simulated time", *ns as f64 / 1e6);
    }
    for call in &report.calls {
        match (call.get("sent"), call["upstream"].as_str()) {
            (Some(sent), _) => {
                let half = if call["half_closed"] == json!(true) { " (half-closed)" } else { "" };
                println!("stream to {} sent {sent}{half}, answered {}", call["cluster"], call["answer"]);
            }
            (None, Some(addr)) => println!("call to {} ({addr}) answered {}", call["cluster"], call["answer"]),
            (None, None) => println!("call to {} answered {}", call["cluster"], call["answer"]),
        }
    }
    if report.singleton {
        println!("singleton (--workers 0): the main VM ran its lifecycle and ticks; no stream was sent");
    } else if let Some(tcp) = &report.tcp {
        println!("to upstream: {}", tcp["to_upstream"]);
        println!("to client:   {}", tcp["to_downstream"]);
        println!("close requests: {}", tcp["close_requests"]);
        match tcp["upstream_cluster"].as_str() {
            Some(c) => println!("upstream cluster: {c} (Envoy's TCP proxy)"),
            None => println!("upstream cluster: none (the filter never let the connection through)"),
        }
    } else {
        match &report.upstream {
            None => println!("upstream: never reached"),
            Some(m) => {
                println!("upstream got:");
                print_message(m);
            }
        }
        if let Some(r) = &report.local_reply {
            let details =
                if r.details.is_empty() { "no response code details: the filter gave none" } else { &r.details };
            println!("local reply: {} ({details})", r.status);
        }
        match &report.response {
            None => println!("client got: nothing"),
            Some(m) => {
                println!("client got:");
                print_message(m);
            }
        }
    }
    for (k, v) in &report.filter_state {
        println!("filter state: {k} = {}", String::from_utf8_lossy(v));
    }
    if let Some(proxy) = proxy {
        for c in proxy.unknown_clusters() {
            println!(
                "note: the filter called cluster {c:?}, which nothing answers (refused as Envoy refuses an \
                 unknown cluster): add --call-response '{c}=STATUS:BODY' or --upstream '{c}=HOST:PORT'"
            );
        }
        let dropped = proxy.dropped_logs();
        if dropped > 0 {
            println!("note: {dropped} log lines were dropped (the oldest; the host keeps the latest)");
        }
    }
    if report.stuck {
        println!("note: the filter paused and did not resume the stream within --wait {}", args.wait);
    }
    if let Some(proxy) = proxy.filter(|_| !logs.is_empty()) {
        println!("logs:");
        let (name, root_id, vm_id) = (proxy.plugin_name(), proxy.root_id().to_owned(), proxy.vm_id().to_owned());
        for l in &logs {
            let line = l.envoy_line(&name, &root_id, &vm_id);
            match line.split_once('\n') {
                Some((first, _)) if !args.verbose => {
                    println!("  [{} {}] {first} (more with --verbose)", l.level.as_str(), l.thread)
                }
                _ => println!("  [{} {}] {line}", l.level.as_str(), l.thread),
            }
        }
    }
    if !metrics.is_empty() {
        println!("metrics:");
        for m in &metrics {
            println!("  {} ({:?}) = {}", m.name, m.kind, m.value);
        }
    }
    if let Some(e) = &report.error {
        println!("error: {e}");
    }
}

fn print_message(m: &Message) {
    for (k, v) in m.headers.to_strings() {
        println!("  {k}: {v}");
    }
    if !m.body.is_empty() {
        println!("  body: {}", String::from_utf8_lossy(&m.body));
    }
    for (k, v) in m.trailers.to_strings() {
        println!("  trailer {k}: {v}");
    }
}
