// Every hostcall the filter makes, straight to the ABI: a refusal is a value, never a panic (the
// SDK's wrappers panic on statuses they do not expect), and is logged once per VM and call.

use std::cell::Cell;
use std::ptr::{null, null_mut};

/// `proxy_status_t` values the filter tells apart; any other is a refusal by the host.
mod status {
    pub const OK: u32 = 0;
    pub const NOT_FOUND: u32 = 1;
    pub const BAD_ARGUMENT: u32 = 2;
    pub const CAS_MISMATCH: u32 = 8;
}

/// `proxy_map_type_t::HTTP_REQUEST_HEADERS`.
const HTTP_REQUEST_HEADERS: u32 = 0;
/// `proxy_buffer_type_t::PLUGIN_CONFIGURATION`.
const PLUGIN_CONFIGURATION: u32 = 7;
/// `proxy_stream_type_t` values.
const STREAM_HTTP_REQUEST: u32 = 0;
const STREAM_DOWNSTREAM: u32 = 2;

// The same imports the SDK declares, with the status as a plain integer: a host may answer a
// status the SDK's enum has no variant for (UNIMPLEMENTED, 12), which must not become UB.
#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_get_current_time_nanoseconds(return_time: *mut u64) -> u32;
    fn proxy_set_tick_period_milliseconds(period: u32) -> u32;
    fn proxy_get_buffer_bytes(
        buffer_type: u32,
        start: usize,
        max_size: usize,
        return_buffer_data: *mut *mut u8,
        return_buffer_size: *mut usize,
    ) -> u32;
    fn proxy_get_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
    ) -> u32;
    fn proxy_remove_header_map_value(map_type: u32, key_data: *const u8, key_size: usize) -> u32;
    fn proxy_get_header_map_pairs(map_type: u32, return_map_data: *mut *mut u8, return_map_size: *mut usize) -> u32;
    fn proxy_get_property(
        path_data: *const u8,
        path_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
    ) -> u32;
    fn proxy_get_shared_data(
        key_data: *const u8,
        key_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
        return_cas: *mut u32,
    ) -> u32;
    fn proxy_set_shared_data(
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
        cas: u32,
    ) -> u32;
    fn proxy_set_effective_context(context_id: u32) -> u32;
    fn proxy_continue_stream(stream_type: u32) -> u32;
    fn proxy_close_stream(stream_type: u32) -> u32;
    #[allow(clippy::too_many_arguments)]
    fn proxy_send_local_response(
        status_code: u32,
        status_code_details_data: *const u8,
        status_code_details_size: usize,
        body_data: *const u8,
        body_size: usize,
        headers_data: *const u8,
        headers_size: usize,
        grpc_status: i32,
    ) -> u32;
    fn proxy_define_metric(metric_type: u32, name_data: *const u8, name_size: usize, return_id: *mut u32) -> u32;
    fn proxy_increment_metric(metric_id: u32, offset: i64) -> u32;
    fn proxy_record_metric(metric_id: u32, value: u64) -> u32;
    fn proxy_get_metric(metric_id: u32, return_value: *mut u64) -> u32;
}

/// A hostcall the host may refuse; each is logged once per VM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Call {
    Time,
    TickPeriod,
    PluginConfiguration,
    Header,
    Headers,
    Property,
    SharedRead,
    SharedWrite,
    Resume,
    CloseDownstream,
    LocalReply,
    RemoveHeader,
    DefineMetric,
    IncrementMetric,
    RecordMetric,
    GetMetric,
}

impl Call {
    fn import(self) -> &'static str {
        match self {
            Call::Time => "proxy_get_current_time_nanoseconds",
            Call::TickPeriod => "proxy_set_tick_period_milliseconds",
            Call::PluginConfiguration => "proxy_get_buffer_bytes (plugin configuration)",
            Call::Header => "proxy_get_header_map_value",
            Call::Headers => "proxy_get_header_map_pairs",
            Call::Property => "proxy_get_property",
            Call::SharedRead => "proxy_get_shared_data",
            Call::SharedWrite => "proxy_set_shared_data",
            Call::Resume => "proxy_continue_stream",
            Call::CloseDownstream => "proxy_close_stream",
            Call::LocalReply => "proxy_send_local_response",
            Call::RemoveHeader => "proxy_remove_header_map_value",
            Call::DefineMetric => "proxy_define_metric",
            Call::IncrementMetric => "proxy_increment_metric",
            Call::RecordMetric => "proxy_record_metric",
            Call::GetMetric => "proxy_get_metric",
        }
    }

    /// What the filter does instead, for the log line.
    fn fallback(self) -> &'static str {
        match self {
            Call::Time => "the clock reads as 0, so no fault is active",
            Call::TickPeriod => "no tick: faults expire, commands land and gauges update only on traffic",
            Call::PluginConfiguration => "the configuration reads as empty",
            Call::Header | Call::Property => "the value reads as absent, so the request matches no pool that needs it",
            Call::Headers => "headers are asked for one by one",
            Call::SharedRead => "faults read as none",
            Call::SharedWrite => "commands and expiries are not recorded",
            Call::Resume => "a held request is left to the proxy's own timeouts",
            Call::CloseDownstream => "the connection is let through",
            Call::LocalReply => "the request is forwarded instead",
            Call::RemoveHeader => "ebb's signature, timestamp and command headers are forwarded",
            Call::DefineMetric => "the metric is skipped",
            Call::IncrementMetric => "the counter is not updated, and capacity drains let requests through uncounted",
            Call::RecordMetric => "the metric is not updated",
            Call::GetMetric => "the in_flight gauge is not updated, and capacity drains let requests through uncounted",
        }
    }

    fn bit(self) -> u32 {
        1 << (self as u32)
    }
}

thread_local! {
    /// Calls already reported on this VM (one bit per `Call`).
    static REPORTED: Cell<u32> = const { Cell::new(0) };
}

/// Notes that the host refused `call` with `code`: one log line per VM and call, so a host
/// that refuses something on every request does not flood its log.
pub(crate) fn refused(call: Call, code: u32) {
    let first = REPORTED.with(|r| {
        let seen = r.get();
        r.set(seen | call.bit());
        seen & call.bit() == 0
    });
    if first {
        log::warn!(
            "ebb: the host refused {} (status {code}): {}; traffic is not affected (logged once per VM)",
            call.import(),
            call.fallback()
        );
    }
}

fn check(call: Call, code: u32) -> bool {
    if code == status::OK {
        return true;
    }
    refused(call, code);
    false
}

/// Takes ownership of bytes the host allocated in this module's memory (through the SDK's
/// `proxy_on_memory_allocate`, which allocates exactly `size` bytes).
///
/// # Safety
/// `data` must be null or a `size`-byte allocation handed over by the host.
unsafe fn take(data: *mut u8, size: usize) -> Option<Vec<u8>> {
    if data.is_null() {
        return None;
    }
    // SAFETY: per the contract above, the allocation is `size` bytes and now ours.
    Some(unsafe { Vec::from_raw_parts(data, size, size) })
}

/// Milliseconds since the Unix epoch on the proxy's clock; 0 if the host refuses.
pub(crate) fn now_ms() -> u64 {
    let mut ns: u64 = 0;
    // SAFETY: the host writes one u64 through a valid pointer.
    let code = unsafe { proxy_get_current_time_nanoseconds(&mut ns) };
    if check(Call::Time, code) {
        ns / 1_000_000
    } else {
        0
    }
}

/// Arms the root context's tick; false if refused.
pub(crate) fn set_tick_period(ms: u32) -> bool {
    // SAFETY: plain value argument.
    check(Call::TickPeriod, unsafe { proxy_set_tick_period_milliseconds(ms) })
}

/// The plugin configuration bytes, at most `max` (empty when there are none or the host refuses).
pub(crate) fn plugin_configuration(max: usize) -> Vec<u8> {
    let (mut data, mut size) = (null_mut(), 0usize);
    // SAFETY: out-pointers are valid; on OK the host hands over `size` bytes.
    let code = unsafe { proxy_get_buffer_bytes(PLUGIN_CONFIGURATION, 0, max, &mut data, &mut size) };
    match code {
        status::OK => unsafe { take(data, size) }.unwrap_or_default(),
        status::NOT_FOUND => Vec::new(),
        other => {
            refused(Call::PluginConfiguration, other);
            Vec::new()
        }
    }
}

/// Removes a request header of the current HTTP context (absent is fine); false if refused.
pub(crate) fn remove_request_header(name: &str) -> bool {
    // SAFETY: the name is a valid slice for the duration of the call.
    let code = unsafe { proxy_remove_header_map_value(HTTP_REQUEST_HEADERS, name.as_ptr(), name.len()) };
    code == status::OK || code == status::NOT_FOUND || check(Call::RemoveHeader, code)
}

/// What the host answered for one request header.
enum Lookup {
    /// OK, with the value handed over (None when the host handed over no buffer).
    Found(Option<Vec<u8>>),
    /// NOT_FOUND.
    Absent,
    /// Any other status (logged once).
    Refused,
}

fn lookup_request_header(name: &str) -> Lookup {
    let (mut data, mut size) = (null_mut(), 0usize);
    // SAFETY: the key is a valid slice; on OK the host hands over `size` bytes.
    let code =
        unsafe { proxy_get_header_map_value(HTTP_REQUEST_HEADERS, name.as_ptr(), name.len(), &mut data, &mut size) };
    match code {
        status::OK => Lookup::Found(unsafe { take(data, size) }),
        status::NOT_FOUND => Lookup::Absent,
        other => {
            refused(Call::Header, other);
            Lookup::Refused
        }
    }
}

/// A request header of the current HTTP context, or None (absent, refused, or handed over as
/// no buffer).
pub(crate) fn request_header(name: &str) -> Option<Vec<u8>> {
    match lookup_request_header(name) {
        Lookup::Found(value) => value,
        Lookup::Absent | Lookup::Refused => None,
    }
}

/// Whether the host says the request has no header `name` (NOT_FOUND). A value, even an empty
/// one, or a refusal is false: a caller that strips the header acts as if it were there.
pub(crate) fn request_header_absent(name: &str) -> bool {
    matches!(lookup_request_header(name), Lookup::Absent)
}

/// Every request header of the current HTTP context, serialized as the ABI has it (see
/// `ebb_engine::header_map`), in one call; None if the host refuses. No headers is an empty map.
pub(crate) fn request_header_pairs() -> Option<Vec<u8>> {
    let (mut data, mut size) = (null_mut(), 0usize);
    // SAFETY: out-pointers are valid; on OK the host hands over `size` bytes (or none when empty).
    let code = unsafe { proxy_get_header_map_pairs(HTTP_REQUEST_HEADERS, &mut data, &mut size) };
    match code {
        status::OK => Some(unsafe { take(data, size) }.unwrap_or_default()),
        other => {
            refused(Call::Headers, other);
            None
        }
    }
}

/// A property by path as the ABI gives it, segments joined by NUL (`b"xds\0cluster_name"`: a
/// constant, not joined per request), or None (absent, empty or refused).
pub(crate) fn property(path: &[u8]) -> Option<Vec<u8>> {
    let (mut data, mut size) = (null_mut(), 0usize);
    // SAFETY: the path is a valid slice; on OK the host hands over `size` bytes.
    let code = unsafe { proxy_get_property(path.as_ptr(), path.len(), &mut data, &mut size) };
    match code {
        status::OK => unsafe { take(data, size) },
        status::NOT_FOUND => None,
        other => {
            refused(Call::Property, other);
            None
        }
    }
}

/// A shared-data value and its CAS. `Ok(None)`: the key does not exist. `Err(())`: refused.
pub(crate) fn shared_get(key: &str) -> Result<Option<(Vec<u8>, u32)>, ()> {
    let (mut data, mut size, mut cas) = (null_mut(), 0usize, 0u32);
    // SAFETY: the key is a valid slice, out-pointers are valid; on OK the host hands over `size`
    // bytes (or none for an empty value).
    let code = unsafe { proxy_get_shared_data(key.as_ptr(), key.len(), &mut data, &mut size, &mut cas) };
    match code {
        status::OK => Ok(Some((unsafe { take(data, size) }.unwrap_or_default(), cas))),
        status::NOT_FOUND => Ok(None),
        other => {
            refused(Call::SharedRead, other);
            Err(())
        }
    }
}

/// Why a shared-data write did not land.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WriteError {
    /// Someone wrote the key since `cas` was read: read again and retry.
    CasMismatch,
    /// The host refused the write (already logged).
    Refused,
}

/// Writes `value` under `cas` (0: the key must not exist yet, or the host ignores the CAS).
pub(crate) fn shared_set(key: &str, value: &[u8], cas: u32) -> Result<(), WriteError> {
    // SAFETY: key and value are valid slices.
    let code = unsafe { proxy_set_shared_data(key.as_ptr(), key.len(), value.as_ptr(), value.len(), cas) };
    match code {
        status::OK => Ok(()),
        status::CAS_MISMATCH => Err(WriteError::CasMismatch),
        other => {
            refused(Call::SharedWrite, other);
            Err(WriteError::Refused)
        }
    }
}

/// Makes `context_id` the effective context; false if it is gone (BAD_ARGUMENT) or refused.
pub(crate) fn set_effective_context(context_id: u32) -> bool {
    // SAFETY: plain value argument.
    match unsafe { proxy_set_effective_context(context_id) } {
        status::OK => true,
        status::BAD_ARGUMENT => false,
        other => {
            refused(Call::Resume, other);
            false
        }
    }
}

/// Resumes the effective context's paused request.
pub(crate) fn resume_request() {
    // SAFETY: plain value argument.
    check(Call::Resume, unsafe { proxy_continue_stream(STREAM_HTTP_REQUEST) });
}

/// Closes the effective context's downstream connection; false if refused.
pub(crate) fn close_downstream() -> bool {
    // SAFETY: plain value argument.
    check(Call::CloseDownstream, unsafe { proxy_close_stream(STREAM_DOWNSTREAM) })
}

/// Sends a local reply on the effective context; false if refused.
pub(crate) fn send_local_reply(status_code: u32, headers: &[(&str, &str)], body: &[u8]) -> bool {
    // The ABI's map encoding: count, then (key length, value length) pairs, then each key and
    // value followed by a NUL.
    let size = 4 + headers.iter().map(|(k, v)| k.len() + v.len() + 10).sum::<usize>();
    let mut map = Vec::with_capacity(size);
    map.extend_from_slice(&(headers.len() as u32).to_le_bytes());
    for (k, v) in headers {
        map.extend_from_slice(&(k.len() as u32).to_le_bytes());
        map.extend_from_slice(&(v.len() as u32).to_le_bytes());
    }
    for (k, v) in headers {
        map.extend_from_slice(k.as_bytes());
        map.push(0);
        map.extend_from_slice(v.as_bytes());
        map.push(0);
    }
    let body_ptr = if body.is_empty() { null() } else { body.as_ptr() };
    // SAFETY: every pointer is a valid slice (or null with size 0).
    let code =
        unsafe { proxy_send_local_response(status_code, null(), 0, body_ptr, body.len(), map.as_ptr(), map.len(), -1) };
    check(Call::LocalReply, code)
}

/// Defines a metric (`proxy_metric_type_t`: 0 counter, 1 gauge); None if refused.
pub(crate) fn define_metric(metric_type: u32, name: &str) -> Option<u32> {
    let mut id = 0u32;
    // SAFETY: the name is a valid slice; the id pointer is valid.
    let code = unsafe { proxy_define_metric(metric_type, name.as_ptr(), name.len(), &mut id) };
    check(Call::DefineMetric, code).then_some(id)
}

/// Adds `delta` to counter `id`; false if refused.
pub(crate) fn increment_metric(id: u32, delta: i64) -> bool {
    // SAFETY: plain value arguments.
    check(Call::IncrementMetric, unsafe { proxy_increment_metric(id, delta) })
}

pub(crate) fn record_metric(id: u32, value: u64) {
    // SAFETY: plain value arguments.
    check(Call::RecordMetric, unsafe { proxy_record_metric(id, value) });
}

/// A metric's proxy-wide value, or None if refused.
pub(crate) fn get_metric(id: u32) -> Option<u64> {
    let mut value = 0u64;
    // SAFETY: the value pointer is valid.
    let code = unsafe { proxy_get_metric(id, &mut value) };
    check(Call::GetMetric, code).then_some(value)
}
