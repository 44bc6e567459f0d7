// Which proxy the host plays (Envoy, Kong's ngx_wasm_module, or the strict intersection of the
// two) and every ngx_wasm_module quirk a filter can see, each with the source that shows it.

use std::fmt;

use super::abi::status;
use super::metrics::{MetricKind, Stat};
use super::state::HostState;
use super::stream::StreamData;

/// The proxy the host plays (`ProxyOptions::host_profile`, `ebb request --host-profile`).
///
/// A filter that passes its tests under [`HostProfile::Strict`] runs in both proxies: what either
/// refuses is refused there, and where they report differently the filter gets the report a
/// filter written against Envoy is most likely to mishandle.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum HostProfile {
    /// Envoy (proxy-wasm-cpp-host): the host's behaviour without a profile.
    #[default]
    Envoy,
    /// Kong's ngx_wasm_module in nginx (`proxy_wasm` directive): its traps, its refusals and
    /// what it reports differently (docs/abi.md, "Host profiles").
    NgxWasm,
    /// Envoy and ngx_wasm_module at once: whatever either refuses is refused (a trap where
    /// ngx_wasm_module traps); where they differ in what they report (`end_of_stream`, CAS,
    /// local-reply bodies, replaced bodies), the less convenient report.
    Strict,
}

impl HostProfile {
    /// Every profile, Envoy first.
    pub const ALL: [HostProfile; 3] = [HostProfile::Envoy, HostProfile::NgxWasm, HostProfile::Strict];

    /// `envoy`, `ngx-wasm` or `strict`, as the command line spells it.
    pub fn name(self) -> &'static str {
        match self {
            HostProfile::Envoy => "envoy",
            HostProfile::NgxWasm => "ngx-wasm",
            HostProfile::Strict => "strict",
        }
    }

    /// ngx_wasm_module's refusals and reports apply (ngx-wasm and strict).
    #[inline]
    pub(crate) fn ngx(self) -> bool {
        self != HostProfile::Envoy
    }

    /// Envoy's refusals apply (envoy and strict).
    #[inline]
    pub(crate) fn envoy(self) -> bool {
        self != HostProfile::NgxWasm
    }
}

impl fmt::Display for HostProfile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for HostProfile {
    type Err = String;
    fn from_str(s: &str) -> Result<HostProfile, String> {
        HostProfile::ALL
            .into_iter()
            .find(|p| p.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| format!("unknown host profile {s:?} (expected envoy, ngx-wasm or strict)"))
    }
}

/// A hostcall that traps in ngx_wasm_module where Envoy answers with a status.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Quirk {
    IncrementNotCounter(MetricKind),
    RecordOnCounter,
    GetHistogram,
    MetricNotFound(&'static str),
    DefineUnknownType(i32),
    TickOutsideRoot,
    TickAlreadySet,
    SharedDataNoNamespace(&'static str),
    LocalReplyStashed,
    ResponseAlreadySent,
    NotImplemented(&'static str),
    ForeignFunction,
}

impl Quirk {
    /// What the filter did.
    fn what(self) -> String {
        match self {
            Quirk::IncrementNotCounter(kind) => format!("proxy_increment_metric on a {}", kind_name(kind)),
            Quirk::RecordOnCounter => "proxy_record_metric on a counter".into(),
            Quirk::GetHistogram => "proxy_get_metric on a histogram".into(),
            Quirk::MetricNotFound(call) => format!("{call} with a metric id it never defined"),
            Quirk::DefineUnknownType(t) => format!("proxy_define_metric with unknown type {t}"),
            Quirk::TickOutsideRoot => "proxy_set_tick_period_milliseconds outside the root context".into(),
            Quirk::TickAlreadySet => "proxy_set_tick_period_milliseconds when a period is already set".into(),
            Quirk::SharedDataNoNamespace(call) => {
                format!("{call} with no shared-data namespace configured (`shm_kv *` in the wasm{{}} block)")
            }
            Quirk::LocalReplyStashed => "a second proxy_send_local_response before the first took effect".into(),
            Quirk::ResponseAlreadySent => "proxy_send_local_response after the response was sent".into(),
            Quirk::NotImplemented(call) => format!("{call}, which it does not implement,"),
            Quirk::ForeignFunction => "proxy_call_foreign_function".into(),
        }
    }

    /// Where ngx_wasm_module does it (file, function, its own message).
    fn source(self) -> &'static str {
        match self {
            Quirk::IncrementNotCounter(_) => {
                "ngx_proxy_wasm_host.c, ngx_proxy_wasm_hfuncs_increment_metric: \"metric not a counter\""
            }
            Quirk::RecordOnCounter => "ngx_proxy_wasm_host.c, ngx_proxy_wasm_hfuncs_record_metric: \"metric is a counter\"",
            Quirk::GetHistogram => "ngx_proxy_wasm_host.c, ngx_proxy_wasm_hfuncs_get_metric: \"metric is a histogram\"",
            Quirk::MetricNotFound(_) => "ngx_proxy_wasm_host.c, ngx_wa_metrics_* NGX_DECLINED: \"metric not found\"",
            Quirk::DefineUnknownType(_) => {
                "ngx_proxy_wasm_host.c, ngx_proxy_wasm_hfuncs_define_metric: \"could not define metric: unknown type\""
            }
            Quirk::TickOutsideRoot => {
                "ngx_proxy_wasm_host.c, ngx_proxy_wasm_hfuncs_set_tick_period: \"can only set tick_period in root context\""
            }
            Quirk::TickAlreadySet => {
                "ngx_proxy_wasm_host.c, ngx_proxy_wasm_hfuncs_set_tick_period: \"tick_period already set\""
            }
            Quirk::SharedDataNoNamespace(_) => {
                "ngx_wa_shm_kv.c, ngx_wa_shm_kv_resolve_key; ngx_proxy_wasm_host.c: \"could not resolve namespace\""
            }
            Quirk::LocalReplyStashed => {
                "ngx_http_wasm_local_response.c, ngx_http_wasm_stash_local_response: \"local response already stashed\""
            }
            Quirk::ResponseAlreadySent => {
                "ngx_http_wasm_local_response.c, ngx_http_wasm_stash_local_response: \"response already sent\""
            }
            Quirk::NotImplemented(_) => {
                "ngx_proxy_wasm_host.c, ngx_proxy_wasm_hfuncs_nop; ngx_wavm.c: \"host function not yet implemented\""
            }
            Quirk::ForeignFunction => {
                "ngx_proxy_wasm_host.c, ngx_proxy_wasm_hfuncs_call_foreign_function: \"unknown foreign function\""
            }
        }
    }

    /// The trap: names the quirk, the profile and the source, so that a failed step says why.
    pub(crate) fn trap(self, profile: HostProfile) -> wasmtime::Error {
        wasmtime::Error::msg(format!(
            "host profile {profile}: {} traps in Kong's ngx_wasm_module ({})",
            self.what(),
            self.source()
        ))
    }
}

fn kind_name(kind: MetricKind) -> &'static str {
    match kind {
        MetricKind::Counter => "counter",
        MetricKind::Gauge => "gauge",
        MetricKind::Histogram => "histogram",
    }
}

/// Hostcalls ngx_wasm_module links but does not implement (`ngx_proxy_wasm_hfuncs_nop`): a call
/// traps. Called at the top of each; costs one branch under Envoy. Kong's module runs
/// proxy-wasm in the http{} subsystem only, so what only a TCP connection (a network filter,
/// Envoy's alone) can do, closing it, keeps Envoy's answer.
#[inline]
pub(crate) fn not_implemented(st: &HostState, call: &'static str) -> wasmtime::Result<()> {
    if st.profile.ngx() && !matches!(st.streams.get(&st.effective_context), Some(StreamData::Tcp(_))) {
        return Err(Quirk::NotImplemented(call).trap(st.profile));
    }
    Ok(())
}

/// `proxy_increment_metric` under ngx-wasm and strict: only counters (ngx_wa_metrics.c,
/// `ngx_wa_metrics_increment`), which take any delta there (`counter += n`), while strict keeps
/// Envoy's refusal of a delta ≤ 0.
pub(crate) fn increment_metric(st: &HostState, stat: Option<&Stat>, delta: i64) -> wasmtime::Result<i32> {
    let call = "proxy_increment_metric";
    match stat.map(|s| (s, s.kind())) {
        None => Err(Quirk::MetricNotFound(call).trap(st.profile)),
        Some((_, MetricKind::Counter)) if st.profile.envoy() && delta <= 0 => Ok(status::BAD_ARGUMENT),
        Some((s, MetricKind::Counter)) => Ok(s.add(delta)),
        Some((_, kind)) => Err(Quirk::IncrementNotCounter(kind).trap(st.profile)),
    }
}

/// `proxy_record_metric` under ngx-wasm and strict: gauges and histograms only
/// (`ngx_wa_metrics_record`).
pub(crate) fn record_metric(st: &HostState, stat: Option<&Stat>, value: u64) -> wasmtime::Result<i32> {
    match stat.map(|s| (s, s.kind())) {
        None => Err(Quirk::MetricNotFound("proxy_record_metric").trap(st.profile)),
        Some((_, MetricKind::Counter)) => Err(Quirk::RecordOnCounter.trap(st.profile)),
        Some((s, _)) => Ok(s.record(value)),
    }
}

/// `proxy_get_metric` under ngx-wasm and strict: an unknown id or a histogram traps.
pub(crate) fn get_metric(st: &HostState, stat: Option<&Stat>) -> wasmtime::Result<u64> {
    match stat.map(|s| (s, s.kind())) {
        None => Err(Quirk::MetricNotFound("proxy_get_metric").trap(st.profile)),
        Some((_, MetricKind::Histogram)) => Err(Quirk::GetHistogram.trap(st.profile)),
        Some((s, _)) => Ok(s.get().unwrap_or(0)),
    }
}

/// `proxy_set_tick_period_milliseconds` under ngx-wasm and strict: only a callback of the root
/// context may set it (a call response delivered to a stream is not one), and only while no
/// period is set: once one is, any call traps, 0 included (the module checks the period it has
/// before it looks at the new one), so a period can be neither changed nor turned off.
pub(crate) fn check_tick(st: &HostState) -> wasmtime::Result<()> {
    if st.active_context != st.root_context || st.effective_context != st.root_context {
        return Err(Quirk::TickOutsideRoot.trap(st.profile));
    }
    if st.tick_period_ns != 0 {
        return Err(Quirk::TickAlreadySet.trap(st.profile));
    }
    Ok(())
}

/// Shared data under ngx-wasm and strict: without `shm_kv *` there is no namespace for a key
/// and the call traps (`ngx_wa_shm_kv_resolve_key` returns NGX_DECLINED).
#[inline]
pub(crate) fn check_shared_data(st: &HostState, call: &'static str) -> wasmtime::Result<()> {
    if st.profile.ngx() && !st.shared.shm_kv_namespace {
        return Err(Quirk::SharedDataNoNamespace(call).trap(st.profile));
    }
    Ok(())
}

/// `proxy_set_buffer_bytes` on an HTTP body under ngx-wasm and strict. ngx_wasm_module
/// (`ngx_proxy_wasm_hfuncs_set_buffer` → `ngx_http_wasm_set_req_body`/`_set_resp_body` →
/// `ngx_wasm_chain_append`) keeps the first `start` bytes, drops the rest, and appends the value
/// cut to `size` bytes (`size` 0 with `start` > 0 means the whole value); start 0 and size 0
/// prepend. So the SDK's "replace the body" (start 0, size = old length) cuts a longer value to
/// the old size. Envoy refuses a start inside the body (BAD_ARGUMENT): strict does too.
pub(crate) fn splice(profile: HostProfile, buf: &mut Vec<u8>, start: usize, size: usize, value: &[u8]) -> i32 {
    if start == 0 && size == 0 && !value.is_empty() {
        buf.splice(0..0, value.iter().copied());
        return status::OK;
    }
    if profile.envoy() && start > 0 && start < buf.len() {
        return status::BAD_ARGUMENT;
    }
    let size = if start > 0 && size == 0 { value.len() } else { size };
    buf.truncate(start);
    buf.extend_from_slice(&value[..value.len().min(size)]);
    status::OK
}

/// Properties ngx_wasm_module does not have or reports differently
/// (`ngx_proxy_wasm_properties.c`, table `pw2ngx`). None: answer as Envoy does.
///
/// ngx-wasm and strict: `cluster_name`, `route_name`, `plugin_vm_id`, `node`,
/// `response.code_details` ("not supported" / NYI there) and Envoy's `connection_id` are absent.
/// ngx-wasm only, as text (nginx variables): `response.code`, `connection.id`, `source.address`
/// without the port, `source.port`, and `plugin_root_id` as the root context's number. Strict
/// keeps Envoy's encoding of those: a portable filter must accept both.
pub(crate) fn property(
    st: &HostState,
    path: &[u8],
    stream_value: impl FnOnce(&[u8]) -> Option<Vec<u8>>,
) -> Option<Option<Vec<u8>>> {
    match path {
        b"cluster_name" | b"route_name" | b"plugin_vm_id" | b"node" | b"response\0code_details" | b"connection_id" => {
            return Some(None)
        }
        _ if st.profile.envoy() => return None,
        _ => {}
    }
    let text = |v: Option<Vec<u8>>| -> Option<Vec<u8>> {
        let raw = <[u8; 8]>::try_from(v?.as_slice()).ok()?;
        Some(i64::from_le_bytes(raw).to_string().into_bytes())
    };
    let source = || st.shared.properties.get(b"source\0address").map(<[u8]>::to_vec).unwrap_or_default();
    match path {
        b"response\0code" => Some(text(stream_value(path))),
        b"connection\0id" => Some(text(stream_value(b"connection_id"))),
        b"source\0address" => {
            let address = source();
            let end = address.iter().rposition(|&b| b == b':').unwrap_or(address.len());
            Some(Some(address[..end].to_vec()))
        }
        b"source\0port" => {
            let address = source();
            Some(address.iter().rposition(|&b| b == b':').map(|i| address[i + 1..].to_vec()))
        }
        b"plugin_root_id" => Some(Some(st.root_context.to_string().into_bytes())),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for p in HostProfile::ALL {
            assert_eq!(p.name().parse::<HostProfile>(), Ok(p));
        }
        assert!("nginx".parse::<HostProfile>().is_err());
    }

    #[test]
    fn splice_cuts_a_replacement_to_the_size_it_replaces() {
        let mut body = b"hello".to_vec();
        assert_eq!(splice(HostProfile::NgxWasm, &mut body, 0, 5, b"[hello]"), status::OK);
        assert_eq!(body, b"[hell");
        let mut body = b"hello world".to_vec();
        assert_eq!(splice(HostProfile::NgxWasm, &mut body, 0, 5, b"HELLO"), status::OK);
        assert_eq!(body, b"HELLO", "what follows the replaced range is dropped");
        let mut body = b"hello".to_vec();
        assert_eq!(splice(HostProfile::NgxWasm, &mut body, 0, 0, b">"), status::OK);
        assert_eq!(body, b">hello", "start 0, size 0 prepends");
        let mut body = b"hello".to_vec();
        assert_eq!(splice(HostProfile::NgxWasm, &mut body, 5, 0, b"!"), status::OK);
        assert_eq!(body, b"hello!", "at the end, size 0 appends the whole value");
        let mut body = b"hello".to_vec();
        assert_eq!(splice(HostProfile::NgxWasm, &mut body, 2, 1, b"LLO"), status::OK);
        assert_eq!(body, b"heL");
        let mut body = b"hello".to_vec();
        assert_eq!(splice(HostProfile::Strict, &mut body, 2, 1, b"LLO"), status::BAD_ARGUMENT);
        assert_eq!(body, b"hello", "strict refuses a start inside the body, as Envoy");
    }
}
