// The `env` imports of Proxy-Wasm ABI v0.2.1 (and 0.2.0): every hostcall the Rust SDK can
// make, with Envoy's status codes and side effects. Deferred work goes to `HostState::deferred`.

use wasmtime::Linker;

use super::calls::{CallKind, CallRecord, PendingCall, RemotePhase};
use super::headers::{parse_pairs, HeaderMap};
use super::logs::LogLevel;
use super::memory::{hand_over, ret_u32, slice, split, write_u32, write_u64, Ctx};
use super::metrics::{MetricKind, Stat};
use super::profile::{self, Quirk};
use super::shared::Registrant;
use super::state::{lock, AbiVersion, Deferred, HostState};
use super::stream::{LocalReply, StreamData};
use super::upstream::Job;

/// `proxy_status_t`.
pub(crate) mod status {
    pub const OK: i32 = 0;
    pub const NOT_FOUND: i32 = 1;
    pub const BAD_ARGUMENT: i32 = 2;
    pub const PARSE_FAILURE: i32 = 4;
    pub const INVALID_MEMORY_ACCESS: i32 = 6;
    pub const EMPTY: i32 = 7;
    pub const CAS_MISMATCH: i32 = 8;
    /// cpp-host's `BrokenConnection`, the `proxy_get_status` code of a failed call.
    pub const BROKEN_CONNECTION: i32 = 11;
    pub const UNIMPLEMENTED: i32 = 12;
}

/// The low two bits of a call token: which kind of call it names (cpp-host `CalloutType`).
const GRPC_CALL: u32 = 1;
const GRPC_STREAM: u32 = 2;

/// `proxy_buffer_type_t`.
mod buffer {
    pub const HTTP_REQUEST_BODY: i32 = 0;
    pub const HTTP_RESPONSE_BODY: i32 = 1;
    pub const DOWNSTREAM_DATA: i32 = 2;
    pub const UPSTREAM_DATA: i32 = 3;
    pub const HTTP_CALL_RESPONSE_BODY: i32 = 4;
    pub const GRPC_CALL_MESSAGE: i32 = 5;
    pub const VM_CONFIGURATION: i32 = 6;
    pub const PLUGIN_CONFIGURATION: i32 = 7;
}

/// `proxy_stream_type_t`.
pub(crate) mod stream_type {
    pub const HTTP_REQUEST: i32 = 0;
    pub const HTTP_RESPONSE: i32 = 1;
    pub const DOWNSTREAM: i32 = 2;
    pub const UPSTREAM: i32 = 3;
}

/// Status or early-return status: lets hostcall bodies use `?` on failures.
type Status = Result<i32, i32>;

fn flat(r: Status) -> i32 {
    r.unwrap_or_else(|s| s)
}

/// Envoy runs `_initialize`/`main` in restricted mode: only `proxy_log` and WASI. Anything
/// else there fails the VM start, as in cpp-host.
fn guard(c: &Ctx<'_>, name: &'static str) -> wasmtime::Result<()> {
    if c.data().restricted {
        return Err(wasmtime::Error::msg(format!(
            "{name} called during VM initialization; Envoy allows only proxy_log and WASI \
             there (move it to on_vm_start or on_configure)"
        )));
    }
    Ok(())
}

/// Copies `bytes` into the scratch buffer for `hand_over`.
fn stage(st: &mut HostState, bytes: &[u8]) {
    st.scratch.clear();
    st.scratch.extend_from_slice(bytes);
}

/// The header map `map_type` of the effective context, or BAD_ARGUMENT when it does not
/// exist in the current phase (Envoy: `getMap` returns null ⇒ BadArgument). `write` marks
/// maps already forwarded so that what left the filter is kept (copy-on-write).
fn header_map(st: &mut HostState, map_type: i32, write: bool) -> Result<&mut HeaderMap, i32> {
    match map_type {
        4 | 6 => return st.call_response.as_mut().map(|r| &mut r.headers).ok_or(status::BAD_ARGUMENT),
        5 | 7 => return st.call_response.as_mut().map(|r| &mut r.trailers).ok_or(status::BAD_ARGUMENT),
        0..=3 => {}
        _ => return Err(status::BAD_ARGUMENT),
    }
    let ctx = st.effective_context;
    let Some(StreamData::Http(http)) = st.streams.get_mut(&ctx) else {
        return Err(status::BAD_ARGUMENT);
    };
    let side = if map_type < 2 { &mut http.request } else { &mut http.response };
    if map_type % 2 == 0 {
        if !side.has_headers {
            return Err(status::BAD_ARGUMENT);
        }
        if write {
            side.snapshot_headers();
            side.headers_changed = true;
        }
        Ok(&mut side.headers)
    } else {
        if !side.has_trailers {
            // Envoy lets a filter add trailers in the last body callback (`addDecodedTrailers`):
            // they are its own, so it is not called with them; they go on with its body.
            if side.body_visible && side.end_stream && write {
                side.has_trailers = true;
                side.trailers_delivered = true;
                side.trailers.clear();
            } else {
                return Err(status::BAD_ARGUMENT);
            }
        }
        Ok(&mut side.trailers)
    }
}

/// The buffer `buffer_type` as readable now, or NOT_FOUND.
fn buffer(st: &mut HostState, buffer_type: i32) -> Result<&mut Vec<u8>, i32> {
    let ctx = st.effective_context;
    match buffer_type {
        buffer::HTTP_REQUEST_BODY | buffer::HTTP_RESPONSE_BODY => {
            let Some(StreamData::Http(http)) = st.streams.get_mut(&ctx) else {
                return Err(status::NOT_FOUND);
            };
            let side = if buffer_type == buffer::HTTP_REQUEST_BODY { &mut http.request } else { &mut http.response };
            if side.body_visible {
                Ok(&mut side.body)
            } else {
                Err(status::NOT_FOUND)
            }
        }
        buffer::DOWNSTREAM_DATA | buffer::UPSTREAM_DATA => {
            let Some(StreamData::Tcp(tcp)) = st.streams.get_mut(&ctx) else {
                return Err(status::NOT_FOUND);
            };
            let dir = if buffer_type == buffer::DOWNSTREAM_DATA { &mut tcp.downstream } else { &mut tcp.upstream };
            if dir.visible {
                Ok(&mut dir.buffered)
            } else {
                Err(status::NOT_FOUND)
            }
        }
        buffer::HTTP_CALL_RESPONSE_BODY | buffer::GRPC_CALL_MESSAGE => {
            st.call_response.as_mut().map(|r| &mut r.body).ok_or(status::NOT_FOUND)
        }
        _ => Err(status::NOT_FOUND),
    }
}

/// Read-only buffers (configurations), staged into scratch.
fn stage_buffer(st: &mut HostState, buffer_type: i32, start: usize, max: usize) -> Status {
    let shared = st.shared.clone();
    let bytes: &[u8] = match buffer_type {
        buffer::VM_CONFIGURATION => &shared.vm_config,
        // Envoy offers the plugin configuration only while `on_configure` runs.
        buffer::PLUGIN_CONFIGURATION if st.callback == "proxy_on_configure" => &shared.plugin_config,
        buffer::PLUGIN_CONFIGURATION => return Err(status::NOT_FOUND),
        _ => {
            let buf = buffer(st, buffer_type)?;
            if start > buf.len() {
                return Err(status::BAD_ARGUMENT);
            }
            let end = start.saturating_add(max).min(buf.len());
            let taken = std::mem::take(&mut st.scratch);
            let mut scratch = taken;
            scratch.clear();
            if let Ok(buf) = buffer(st, buffer_type) {
                scratch.extend_from_slice(&buf[start..end]);
            }
            st.scratch = scratch;
            return Ok(status::OK);
        }
    };
    if start > bytes.len() {
        return Err(status::BAD_ARGUMENT);
    }
    let end = start.saturating_add(max).min(bytes.len());
    stage(st, &bytes[start..end]);
    Ok(status::OK)
}

/// Envoy `Buffer::copyFrom`: start 0 drains `size` bytes then prepends; start ≥ length
/// appends; anything else is BAD_ARGUMENT.
fn splice(buf: &mut Vec<u8>, start: usize, size: usize, value: &[u8]) -> i32 {
    if start == 0 {
        let drained = size.min(buf.len());
        buf.splice(0..drained, value.iter().copied());
        status::OK
    } else if start >= buf.len() {
        buf.extend_from_slice(value);
        status::OK
    } else {
        status::BAD_ARGUMENT
    }
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// What `proxy_grpc_call` and `proxy_grpc_stream` both read: cluster, service, method and the
/// initial metadata (malformed metadata is PARSE_FAILURE, as in Envoy).
struct GrpcTarget {
    cluster: String,
    service: String,
    method: String,
    metadata: HeaderMap,
}

fn grpc_target(
    mem: &[u8],
    cluster: (i32, i32),
    service: (i32, i32),
    method: (i32, i32),
    metadata: (i32, i32),
) -> Result<GrpcTarget, i32> {
    let cluster = lossy(slice(mem, cluster.0, cluster.1)?);
    let service = lossy(slice(mem, service.0, service.1)?);
    let method = lossy(slice(mem, method.0, method.1)?);
    let pairs = parse_pairs(slice(mem, metadata.0, metadata.1)?).map_err(|_| status::PARSE_FAILURE)?;
    Ok(GrpcTarget { cluster, service, method, metadata: HeaderMap::from_pairs(&pairs) })
}

/// The value of property `path` for the effective context, staged into scratch.
fn stage_property(st: &mut HostState, path: &[u8]) -> Status {
    let ctx = st.effective_context;
    if st.profile.ngx() {
        let stream = st.streams.get(&ctx);
        let set_by_filter = stream.and_then(|s| s.filter_property(path)).or(st.root_properties.get(path)).is_some();
        let answer =
            if set_by_filter { None } else { profile::property(st, path, |p| stream.and_then(|s| s.property(p))) };
        match answer {
            Some(Some(v)) => {
                stage(st, &v);
                return Ok(status::OK);
            }
            Some(None) => return Err(status::NOT_FOUND),
            None => {}
        }
    }
    // What the proxy or the filter set on the stream (a proxy's per-request `xds.cluster_name`)
    // is staged straight from the stream's map.
    if let Some(v) = st.streams.get(&ctx).and_then(|s| s.filter_property(path)) {
        st.scratch.clear();
        st.scratch.extend_from_slice(v);
        return Ok(status::OK);
    }
    let shared = st.shared.clone();
    let mut found: Option<Vec<u8>> = None;
    if let Some(stream) = st.streams.get(&ctx) {
        found = stream.property(path);
    }
    if found.is_none() {
        found = st.root_properties.get(path).map(<[u8]>::to_vec);
    }
    if found.is_none() {
        found = shared.properties.get(path).map(<[u8]>::to_vec);
    }
    match found {
        Some(v) => {
            stage(st, &v);
            Ok(status::OK)
        }
        None => Err(status::NOT_FOUND),
    }
}

fn metric_stat(st: &HostState, id: i32) -> Result<&Stat, i32> {
    let id = id as u32;
    let kind = (id & 3) as usize;
    let k = (id >> 2) as usize;
    st.metric_ids.get(kind).and_then(|ids| ids.get(k)).map(|s| &**s).ok_or(status::NOT_FOUND)
}

/// ngx_wasm_module traps a local reply it cannot send (`ngx_http_wasm_stash_local_response`): a
/// second one before the first took effect, or one after the response went out. Envoy ignores
/// the first case with a warning and resets the stream in the second.
fn check_local_reply(st: &HostState) -> wasmtime::Result<()> {
    let ctx = st.effective_context;
    let stashed = st.deferred.iter().any(|d| matches!(d, Deferred::LocalReply { context, .. } if *context == ctx));
    if stashed {
        return Err(Quirk::LocalReplyStashed.trap(st.profile));
    }
    if let Some(StreamData::Http(h)) = st.streams.get(&ctx) {
        if (h.local_reply.is_some() && !h.in_local_reply) || h.response.headers_forwarded {
            return Err(Quirk::ResponseAlreadySent.trap(st.profile));
        }
    }
    Ok(())
}

/// Defines every `env` hostcall for an `abi` module. Returns the names defined, so that the
/// module's other `env` imports can get an UNIMPLEMENTED stub.
pub(crate) fn add_to_linker(linker: &mut Linker<HostState>, abi: AbiVersion) -> wasmtime::Result<Vec<&'static str>> {
    let mut names = vec![
        "proxy_log",
        "proxy_get_current_time_nanoseconds",
        "proxy_set_tick_period_milliseconds",
        "proxy_done",
        "proxy_set_effective_context",
        "proxy_get_buffer_bytes",
        "proxy_set_buffer_bytes",
        "proxy_get_buffer_status",
        "proxy_get_header_map_size",
        "proxy_get_header_map_pairs",
        "proxy_set_header_map_pairs",
        "proxy_get_header_map_value",
        "proxy_add_header_map_value",
        "proxy_replace_header_map_value",
        "proxy_remove_header_map_value",
        "proxy_continue_stream",
        "proxy_close_stream",
        "proxy_get_status",
        "proxy_send_local_response",
        "proxy_http_call",
        "proxy_grpc_call",
        "proxy_grpc_stream",
        "proxy_grpc_send",
        "proxy_grpc_cancel",
        "proxy_grpc_close",
        "proxy_set_shared_data",
        "proxy_get_shared_data",
        "proxy_register_shared_queue",
        "proxy_resolve_shared_queue",
        "proxy_enqueue_shared_queue",
        "proxy_dequeue_shared_queue",
        "proxy_define_metric",
        "proxy_record_metric",
        "proxy_increment_metric",
        "proxy_get_metric",
        "proxy_get_property",
        "proxy_set_property",
        "proxy_call_foreign_function",
    ];
    const E: &str = "env";

    linker.func_wrap(E, "proxy_log", |mut c: Ctx<'_>, level: i32, p: i32, l: i32| {
        Ok(flat((|| {
            let level = LogLevel::from_abi(level).ok_or(status::BAD_ARGUMENT)?;
            let (mem, st) = split(&mut c)?;
            let message = lossy(slice(mem, p, l)?);
            st.filter_log(level, message);
            Ok(status::OK)
        })()))
    })?;

    if abi >= AbiVersion::V0_2_1 {
        names.push("proxy_get_log_level");
        linker.func_wrap(E, "proxy_get_log_level", |mut c: Ctx<'_>, ret: i32| {
            guard(&c, "proxy_get_log_level")?;
            profile::not_implemented(c.data(), "proxy_get_log_level")?;
            let level = c.data().shared.log_level as u32;
            Ok(ret_u32(&mut c, ret, level))
        })?;
    }

    linker.func_wrap(E, "proxy_get_current_time_nanoseconds", |mut c: Ctx<'_>, ret: i32| {
        guard(&c, "proxy_get_current_time_nanoseconds")?;
        let now = c.data().shared.clock.now_ns();
        Ok(flat((|| {
            let (mem, _) = split(&mut c)?;
            write_u64(mem, ret, now)?;
            Ok(status::OK)
        })()))
    })?;

    linker.func_wrap(E, "proxy_set_tick_period_milliseconds", |mut c: Ctx<'_>, ms: i32| {
        guard(&c, "proxy_set_tick_period_milliseconds")?;
        let st = c.data_mut();
        if st.profile.ngx() {
            profile::check_tick(st)?;
        }
        let period = u64::from(ms as u32) * 1_000_000;
        st.tick_period_ns = period;
        // Envoy arms the timer from now; 0 disables it.
        st.next_tick_ns = (period > 0).then(|| st.shared.clock.now_ns().saturating_add(period));
        Ok(status::OK)
    })?;

    linker.func_wrap(E, "proxy_done", |c: Ctx<'_>| {
        guard(&c, "proxy_done")?;
        profile::not_implemented(c.data(), "proxy_done")?;
        c.data().log(LogLevel::Debug, "proxy_done called (context finishes at once in this host)".into());
        Ok(status::OK)
    })?;

    linker.func_wrap(E, "proxy_set_effective_context", |mut c: Ctx<'_>, ctx: i32| {
        guard(&c, "proxy_set_effective_context")?;
        let st = c.data_mut();
        let ctx = ctx as u32;
        if ctx == st.root_context || st.streams.contains_key(&ctx) {
            st.effective_context = ctx;
            Ok(status::OK)
        } else {
            Ok(status::BAD_ARGUMENT)
        }
    })?;

    linker.func_wrap(
        E,
        "proxy_get_buffer_bytes",
        |mut c: Ctx<'_>, t: i32, start: i32, max: i32, rp: i32, rs: i32| {
            guard(&c, "proxy_get_buffer_bytes")?;
            let staged = stage_buffer(c.data_mut(), t, start as u32 as usize, max as u32 as usize);
            match staged {
                Ok(_) => hand_over(&mut c, rp, rs),
                Err(s) => Ok(s),
            }
        },
    )?;

    linker.func_wrap(
        E,
        "proxy_set_buffer_bytes",
        |mut c: Ctx<'_>, t: i32, start: i32, size: i32, vp: i32, vl: i32| {
            guard(&c, "proxy_set_buffer_bytes")?;
            Ok(flat((|| {
                let (mem, st) = split(&mut c)?;
                let value = slice(mem, vp, vl)?;
                if t == buffer::VM_CONFIGURATION || t == buffer::PLUGIN_CONFIGURATION {
                    return Err(status::BAD_ARGUMENT);
                }
                let profile = st.profile;
                let buf = buffer(st, t)?;
                let (start, size) = (start as u32 as usize, size as u32 as usize);
                if profile.ngx() && (t == buffer::HTTP_REQUEST_BODY || t == buffer::HTTP_RESPONSE_BODY) {
                    return Ok(profile::splice(profile, buf, start, size, value));
                }
                Ok(splice(buf, start, size, value))
            })()))
        },
    )?;

    linker.func_wrap(E, "proxy_get_buffer_status", |mut c: Ctx<'_>, t: i32, rs: i32, ru: i32| {
        guard(&c, "proxy_get_buffer_status")?;
        Ok(flat((|| {
            let (mem, st) = split(&mut c)?;
            let len = match t {
                buffer::VM_CONFIGURATION => st.shared.vm_config.len(),
                buffer::PLUGIN_CONFIGURATION if st.callback == "proxy_on_configure" => st.shared.plugin_config.len(),
                _ => buffer(st, t)?.len(),
            };
            write_u32(mem, rs, len as u32)?;
            write_u32(mem, ru, 0)?;
            Ok(status::OK)
        })()))
    })?;

    linker.func_wrap(E, "proxy_get_header_map_size", |mut c: Ctx<'_>, t: i32, rs: i32| {
        guard(&c, "proxy_get_header_map_size")?;
        Ok(flat((|| {
            let (mem, st) = split(&mut c)?;
            let len = header_map(st, t, false)?.serialized_len();
            write_u32(mem, rs, len as u32)?;
            Ok(status::OK)
        })()))
    })?;

    linker.func_wrap(E, "proxy_get_header_map_pairs", |mut c: Ctx<'_>, t: i32, rp: i32, rs: i32| {
        guard(&c, "proxy_get_header_map_pairs")?;
        let st = c.data_mut();
        let mut scratch = std::mem::take(&mut st.scratch);
        let staged = header_map(st, t, false).map(|map| {
            scratch.clear();
            scratch.resize(map.serialized_len(), 0);
            map.serialize_into(&mut scratch);
        });
        st.scratch = scratch;
        match staged {
            Ok(()) => hand_over(&mut c, rp, rs),
            Err(s) => Ok(s),
        }
    })?;

    linker.func_wrap(E, "proxy_set_header_map_pairs", |mut c: Ctx<'_>, t: i32, p: i32, l: i32| {
        guard(&c, "proxy_set_header_map_pairs")?;
        Ok(flat((|| {
            let (mem, st) = split(&mut c)?;
            let bytes = slice(mem, p, l)?;
            let pairs = parse_pairs(bytes).map_err(|_| status::BAD_ARGUMENT)?;
            let map = header_map(st, t, true)?;
            map.clear();
            for (k, v) in pairs {
                map.add(k, v);
            }
            Ok(status::OK)
        })()))
    })?;

    linker.func_wrap(
        E,
        "proxy_get_header_map_value",
        |mut c: Ctx<'_>, t: i32, kp: i32, kl: i32, rp: i32, rs: i32| {
            guard(&c, "proxy_get_header_map_value")?;
            let staged = (|| {
                let (mem, st) = split(&mut c)?;
                let key = slice(mem, kp, kl)?;
                let mut scratch = std::mem::take(&mut st.scratch);
                let found = header_map(st, t, false).and_then(|map| {
                    let v = map.get(key).ok_or(status::NOT_FOUND)?;
                    scratch.clear();
                    scratch.extend_from_slice(v);
                    Ok(status::OK)
                });
                st.scratch = scratch;
                found
            })();
            match staged {
                Ok(_) => hand_over(&mut c, rp, rs),
                Err(s) => Ok(s),
            }
        },
    )?;

    linker.func_wrap(
        E,
        "proxy_add_header_map_value",
        |mut c: Ctx<'_>, t: i32, kp: i32, kl: i32, vp: i32, vl: i32| {
            guard(&c, "proxy_add_header_map_value")?;
            Ok(flat((|| {
                let (mem, st) = split(&mut c)?;
                let key = slice(mem, kp, kl)?;
                let value = slice(mem, vp, vl)?;
                header_map(st, t, true)?.add(key, value);
                Ok(status::OK)
            })()))
        },
    )?;

    linker.func_wrap(
        E,
        "proxy_replace_header_map_value",
        |mut c: Ctx<'_>, t: i32, kp: i32, kl: i32, vp: i32, vl: i32| {
            guard(&c, "proxy_replace_header_map_value")?;
            Ok(flat((|| {
                let (mem, st) = split(&mut c)?;
                let key = slice(mem, kp, kl)?;
                let value = slice(mem, vp, vl)?;
                header_map(st, t, true)?.replace(key, value);
                Ok(status::OK)
            })()))
        },
    )?;

    linker.func_wrap(E, "proxy_remove_header_map_value", |mut c: Ctx<'_>, t: i32, kp: i32, kl: i32| {
        guard(&c, "proxy_remove_header_map_value")?;
        Ok(flat((|| {
            let (mem, st) = split(&mut c)?;
            let key = slice(mem, kp, kl)?;
            // Removing what is not there changes nothing (`headers_changed` stays false): filters
            // strip headers that requests rarely carry.
            if header_map(st, t, false)?.get(key).is_some() {
                header_map(st, t, true)?.remove(key);
            }
            Ok(status::OK)
        })()))
    })?;

    linker.func_wrap(E, "proxy_continue_stream", |mut c: Ctx<'_>, t: i32| {
        guard(&c, "proxy_continue_stream")?;
        let st = c.data_mut();
        Ok(match t {
            // Envoy has no way to resume an upstream connection's reads from a filter.
            stream_type::UPSTREAM => status::UNIMPLEMENTED,
            stream_type::HTTP_REQUEST | stream_type::HTTP_RESPONSE | stream_type::DOWNSTREAM => {
                let context = st.effective_context;
                st.deferred.push(Deferred::Continue { context, stream: t });
                status::OK
            }
            _ => status::BAD_ARGUMENT,
        })
    })?;

    linker.func_wrap(E, "proxy_close_stream", |mut c: Ctx<'_>, t: i32| {
        guard(&c, "proxy_close_stream")?;
        profile::not_implemented(c.data(), "proxy_close_stream")?;
        let st = c.data_mut();
        Ok(match t {
            0..=3 => {
                let context = st.effective_context;
                st.deferred.push(Deferred::Close { context, stream: t });
                status::OK
            }
            _ => status::BAD_ARGUMENT,
        })
    })?;

    linker.func_wrap(E, "proxy_get_status", |mut c: Ctx<'_>, rc: i32, rp: i32, rs: i32| {
        guard(&c, "proxy_get_status")?;
        profile::not_implemented(c.data(), "proxy_get_status")?;
        let st = c.data_mut();
        let (code, message) = (st.status.0, std::mem::take(&mut st.status.1));
        stage(st, &message);
        st.status.1 = message;
        let written = (|| {
            let (mem, _) = split(&mut c)?;
            write_u32(mem, rc, code)
        })();
        match written {
            Ok(()) => hand_over(&mut c, rp, rs),
            Err(s) => Ok(s),
        }
    })?;

    linker.func_wrap(
        E,
        "proxy_send_local_response",
        |mut c: Ctx<'_>, code: i32, dp: i32, dl: i32, bp: i32, bl: i32, hp: i32, hl: i32, grpc: i32| {
            guard(&c, "proxy_send_local_response")?;
            if c.data().profile.ngx() {
                check_local_reply(c.data())?;
            }
            Ok(flat((|| {
                let (mem, st) = split(&mut c)?;
                // Envoy replaces whitespace in details (`StringUtil::replaceAllEmptySpace`).
                let details: String =
                    lossy(slice(mem, dp, dl)?).chars().map(|ch| if ch.is_whitespace() { '_' } else { ch }).collect();
                let body = slice(mem, bp, bl)?.to_vec();
                let pairs = parse_pairs(slice(mem, hp, hl)?).map_err(|_| status::BAD_ARGUMENT)?;
                let headers = HeaderMap::from_pairs(&pairs);
                let reply = LocalReply {
                    status: code as u32,
                    headers,
                    body,
                    details,
                    grpc_status: u32::try_from(grpc).ok().filter(|g| *g <= 16),
                };
                let context = st.effective_context;
                st.deferred.push(Deferred::LocalReply { context, reply });
                Ok(status::OK)
            })()))
        },
    )?;

    linker.func_wrap(
        E,
        "proxy_http_call",
        |mut c: Ctx<'_>,
         up: i32,
         ul: i32,
         hp: i32,
         hl: i32,
         bp: i32,
         bl: i32,
         tp: i32,
         tl: i32,
         timeout_ms: i32,
         ret: i32| {
            guard(&c, "proxy_http_call")?;
            Ok(flat((|| {
                let (mem, st) = split(&mut c)?;
                let cluster = lossy(slice(mem, up, ul)?);
                let headers = HeaderMap::from_pairs(
                    &parse_pairs(slice(mem, hp, hl)?).map_err(|_| status::BAD_ARGUMENT)?,
                );
                let body = slice(mem, bp, bl)?.to_vec();
                let trailers = HeaderMap::from_pairs(
                    &parse_pairs(slice(mem, tp, tl)?).map_err(|_| status::BAD_ARGUMENT)?,
                );
                // Envoy: unknown cluster, negative timeout or missing :path/:method/:authority.
                if !st.shared.knows_cluster(&cluster)
                    || timeout_ms < 0
                    || headers.get(b":path").is_none()
                    || headers.get(b":method").is_none()
                    || headers.get(b":authority").is_none()
                {
                    st.log(
                        LogLevel::Debug,
                        format!("proxy_http_call to {cluster:?} refused: unknown cluster or missing :path/:method/:authority"),
                    );
                    return Err(status::BAD_ARGUMENT);
                }
                let token = st.next_http_token;
                st.next_http_token = st.next_http_token.wrapping_add(4);
                write_u32(mem, ret, token)?;
                register_call(st, cluster, CallKind::Http, headers, body, trailers, timeout_ms, token);
                Ok(status::OK)
            })()))
        },
    )?;

    linker.func_wrap(
        E,
        "proxy_grpc_call",
        |mut c: Ctx<'_>,
         up: i32,
         ul: i32,
         sp: i32,
         sl: i32,
         mp: i32,
         ml: i32,
         hp: i32,
         hl: i32,
         bp: i32,
         bl: i32,
         timeout_ms: i32,
         ret: i32| {
            guard(&c, "proxy_grpc_call")?;
            profile::not_implemented(c.data(), "proxy_grpc_call")?;
            Ok(flat((|| {
                let (mem, st) = split(&mut c)?;
                let GrpcTarget { cluster, service, method, metadata } =
                    grpc_target(mem, (up, ul), (sp, sl), (mp, ml), (hp, hl))?;
                let message = slice(mem, bp, bl)?.to_vec();
                if !st.shared.knows_cluster(&cluster) || timeout_ms < 0 {
                    return Err(status::PARSE_FAILURE);
                }
                let token = st.next_grpc_token;
                st.next_grpc_token = st.next_grpc_token.wrapping_add(4);
                write_u32(mem, ret, token)?;
                let kind = CallKind::Grpc { service, method };
                register_call(st, cluster, kind, metadata, message, HeaderMap::new(), timeout_ms, token);
                Ok(status::OK)
            })()))
        },
    )?;

    linker.func_wrap(
        E,
        "proxy_grpc_stream",
        |mut c: Ctx<'_>, up: i32, ul: i32, sp: i32, sl: i32, mp: i32, ml: i32, hp: i32, hl: i32, ret: i32| {
            guard(&c, "proxy_grpc_stream")?;
            profile::not_implemented(c.data(), "proxy_grpc_stream")?;
            Ok(flat((|| {
                let (mem, st) = split(&mut c)?;
                let GrpcTarget { cluster, service, method, metadata } =
                    grpc_target(mem, (up, ul), (sp, sl), (mp, ml), (hp, hl))?;
                // Envoy: a cluster it does not know is PARSE_FAILURE, as for unary calls.
                if !st.shared.knows_cluster(&cluster) {
                    return Err(status::PARSE_FAILURE);
                }
                let token = st.next_grpc_stream_token;
                st.next_grpc_stream_token = st.next_grpc_stream_token.wrapping_add(4);
                write_u32(mem, ret, token)?;
                let kind = CallKind::GrpcStream { service, method };
                register_call(st, cluster, kind, metadata, Vec::new(), HeaderMap::new(), 0, token);
                Ok(status::OK)
            })()))
        },
    )?;

    linker.func_wrap(E, "proxy_grpc_send", |mut c: Ctx<'_>, token: i32, mp: i32, ml: i32, end: i32| {
        guard(&c, "proxy_grpc_send")?;
        profile::not_implemented(c.data(), "proxy_grpc_send")?;
        Ok(flat((|| {
            let (mem, st) = split(&mut c)?;
            let message = slice(mem, mp, ml)?;
            let token = token as u32;
            if token & 3 != GRPC_STREAM {
                return Err(status::BAD_ARGUMENT);
            }
            let mut calls = lock(&st.shared.calls);
            if calls.remote_closed.contains_key(&(st.instance, token)) {
                return Ok(status::OK);
            }
            let id = calls.by_token(st.instance, token).ok_or(status::NOT_FOUND)?;
            let call = calls.pending.get_mut(&id).map(|r| &mut r.public).ok_or(status::NOT_FOUND)?;
            // Envoy's async stream turns sends after the local end into no-ops, still OK.
            if !call.local_closed {
                call.sent.push(message.to_vec());
                call.local_closed = end != 0;
            }
            Ok(status::OK)
        })()))
    })?;

    for (name, cancel) in [("proxy_grpc_cancel", true), ("proxy_grpc_close", false)] {
        linker.func_wrap(E, name, move |mut c: Ctx<'_>, token: i32| {
            guard(&c, name)?;
            profile::not_implemented(c.data(), name)?;
            let st = c.data_mut();
            let token = token as u32;
            let instance = st.instance;
            let mut calls = lock(&st.shared.calls);
            let found = calls.by_token(instance, token);
            Ok(match token & 3 {
                // Unary: both drop the call, without callbacks.
                GRPC_CALL => match found {
                    Some(id) => {
                        calls.pending.remove(&id);
                        status::OK
                    }
                    None => status::NOT_FOUND,
                },
                // A stream whose remote side closed: either call releases the handle.
                GRPC_STREAM if calls.remote_closed.remove(&(instance, token)).is_some() => status::OK,
                // Cancel resets the stream (no callbacks, it is gone); close half-closes it and
                // the remote side may still answer.
                GRPC_STREAM => match found {
                    Some(id) if cancel => {
                        calls.pending.remove(&id);
                        status::OK
                    }
                    Some(id) => {
                        if let Some(r) = calls.pending.get_mut(&id) {
                            r.public.local_closed = true;
                            r.close_called = true;
                        }
                        status::OK
                    }
                    None => status::NOT_FOUND,
                },
                // HTTP call tokens (and 4k + 3) name no gRPC call: Envoy says BAD_ARGUMENT.
                _ => status::BAD_ARGUMENT,
            })
        })?;
    }

    linker.func_wrap(E, "proxy_set_shared_data", |mut c: Ctx<'_>, kp: i32, kl: i32, vp: i32, vl: i32, cas: i32| {
        guard(&c, "proxy_set_shared_data")?;
        profile::check_shared_data(c.data(), "proxy_set_shared_data")?;
        Ok(flat((|| {
            let (mem, st) = split(&mut c)?;
            let key = slice(mem, kp, kl)?;
            let value = slice(mem, vp, vl)?;
            Ok(lock(&st.shared.shared_data).set(key, value, cas as u32, st.profile.ngx()))
        })()))
    })?;

    linker.func_wrap(E, "proxy_get_shared_data", |mut c: Ctx<'_>, kp: i32, kl: i32, rp: i32, rs: i32, rcas: i32| {
        guard(&c, "proxy_get_shared_data")?;
        profile::check_shared_data(c.data(), "proxy_get_shared_data")?;
        let found = (|| {
            let (mem, st) = split(&mut c)?;
            let key = slice(mem, kp, kl)?;
            let shared = st.shared.clone();
            let data = lock(&shared.shared_data);
            let (value, cas) = data.get(key).ok_or(status::NOT_FOUND)?;
            stage(st, value);
            write_u32(mem, rcas, cas)?;
            Ok(status::OK)
        })();
        match found {
            Ok(_) => hand_over(&mut c, rp, rs),
            Err(s) => Ok(s),
        }
    })?;

    linker.func_wrap(E, "proxy_register_shared_queue", |mut c: Ctx<'_>, np: i32, nl: i32, ret: i32| {
        guard(&c, "proxy_register_shared_queue")?;
        Ok(flat((|| {
            let (mem, st) = split(&mut c)?;
            let name = slice(mem, np, nl)?;
            let registrant =
                Registrant { mailbox: st.shared.mailbox.clone(), instance: st.instance, root_context: st.root_context };
            let token = lock(&st.shared.queues).register(st.shared.vm_id.as_bytes(), name, registrant);
            write_u32(mem, ret, token)?;
            Ok(status::OK)
        })()))
    })?;

    linker.func_wrap(
        E,
        "proxy_resolve_shared_queue",
        |mut c: Ctx<'_>, vp: i32, vl: i32, np: i32, nl: i32, ret: i32| {
            guard(&c, "proxy_resolve_shared_queue")?;
            profile::not_implemented(c.data(), "proxy_resolve_shared_queue")?;
            Ok(flat((|| {
                let (mem, st) = split(&mut c)?;
                let vm_id = slice(mem, vp, vl)?;
                let name = slice(mem, np, nl)?;
                // Any vm_id of the process, as given (cpp-host's `resolveQueue`).
                let token = lock(&st.shared.queues).resolve(vm_id, name).ok_or(status::NOT_FOUND)?;
                write_u32(mem, ret, token)?;
                Ok(status::OK)
            })()))
        },
    )?;

    linker.func_wrap(E, "proxy_enqueue_shared_queue", |mut c: Ctx<'_>, token: i32, vp: i32, vl: i32| {
        guard(&c, "proxy_enqueue_shared_queue")?;
        Ok(flat((|| {
            let (mem, st) = split(&mut c)?;
            let value = slice(mem, vp, vl)?;
            let registrant = lock(&st.shared.queues).enqueue(token as u32, value)?;
            // Posted once the registry's lock is let go: the registrant may be on another thread.
            registrant.mailbox.post(registrant.instance, registrant.root_context, token as u32);
            Ok(status::OK)
        })()))
    })?;

    linker.func_wrap(E, "proxy_dequeue_shared_queue", |mut c: Ctx<'_>, token: i32, rp: i32, rs: i32| {
        guard(&c, "proxy_dequeue_shared_queue")?;
        let st = c.data_mut();
        let item = lock(&st.shared.queues).dequeue(token as u32);
        match item {
            Ok(Some(v)) => {
                stage(st, &v);
                hand_over(&mut c, rp, rs)
            }
            Ok(None) => Ok(status::EMPTY),
            Err(s) => Ok(s),
        }
    })?;

    linker.func_wrap(E, "proxy_define_metric", |mut c: Ctx<'_>, t: i32, np: i32, nl: i32, ret: i32| {
        guard(&c, "proxy_define_metric")?;
        if c.data().profile.ngx() && MetricKind::from_abi(t).is_none() {
            return Err(Quirk::DefineUnknownType(t).trap(c.data().profile));
        }
        Ok(flat((|| {
            let kind = MetricKind::from_abi(t).ok_or(status::BAD_ARGUMENT)?;
            let (mem, st) = split(&mut c)?;
            let name = lossy(slice(mem, np, nl)?);
            let stat = lock(&st.shared.metrics).define(kind, &name);
            let ids = &mut st.metric_ids[kind as usize];
            let id = ((ids.len() as u32) << 2) | kind as u32;
            ids.push(stat);
            write_u32(mem, ret, id)?;
            Ok(status::OK)
        })()))
    })?;

    linker.func_wrap(E, "proxy_record_metric", |c: Ctx<'_>, id: i32, value: i64| {
        guard(&c, "proxy_record_metric")?;
        let st = c.data();
        if st.profile.ngx() {
            return profile::record_metric(st, metric_stat(st, id).ok(), value as u64);
        }
        Ok(flat(metric_stat(st, id).map(|s| s.record(value as u64))))
    })?;

    linker.func_wrap(E, "proxy_increment_metric", |c: Ctx<'_>, id: i32, delta: i64| {
        guard(&c, "proxy_increment_metric")?;
        let st = c.data();
        if st.profile.ngx() {
            return profile::increment_metric(st, metric_stat(st, id).ok(), delta);
        }
        Ok(flat(metric_stat(st, id).map(|s| s.increment(delta))))
    })?;

    linker.func_wrap(E, "proxy_get_metric", |mut c: Ctx<'_>, id: i32, ret: i32| {
        guard(&c, "proxy_get_metric")?;
        let ngx_value = if c.data().profile.ngx() {
            Some(profile::get_metric(c.data(), metric_stat(c.data(), id).ok())?)
        } else {
            None
        };
        Ok(flat((|| {
            let (mem, st) = split(&mut c)?;
            let value = match ngx_value {
                Some(v) => v,
                None => metric_stat(st, id)?.get()?,
            };
            write_u64(mem, ret, value)?;
            Ok(status::OK)
        })()))
    })?;

    linker.func_wrap(E, "proxy_get_property", |mut c: Ctx<'_>, pp: i32, pl: i32, rp: i32, rs: i32| {
        guard(&c, "proxy_get_property")?;
        let staged = (|| {
            let (mem, st) = split(&mut c)?;
            let path = slice(mem, pp, pl)?;
            stage_property(st, path)
        })();
        match staged {
            Ok(_) => hand_over(&mut c, rp, rs),
            Err(s) => Ok(s),
        }
    })?;

    linker.func_wrap(E, "proxy_set_property", |mut c: Ctx<'_>, pp: i32, pl: i32, vp: i32, vl: i32| {
        guard(&c, "proxy_set_property")?;
        Ok(flat((|| {
            let (mem, st) = split(&mut c)?;
            let path = slice(mem, pp, pl)?;
            let value = slice(mem, vp, vl)?;
            let ctx = st.effective_context;
            match st.streams.get_mut(&ctx) {
                Some(stream) if super::foreign::refuses_set(&st.declared, stream, path) => {
                    return Err(status::BAD_ARGUMENT)
                }
                Some(stream) => stream.properties_mut().set(path, value),
                None => st.root_properties.set(path, value),
            }
            Ok(status::OK)
        })()))
    })?;

    linker.func_wrap(
        E,
        "proxy_call_foreign_function",
        |mut c: Ctx<'_>, np: i32, nl: i32, ap: i32, al: i32, rp: i32, rs: i32| {
            guard(&c, "proxy_call_foreign_function")?;
            if c.data().profile.ngx() {
                return Err(Quirk::ForeignFunction.trap(c.data().profile));
            }
            // cpp-host `call_foreign_function`: name and arguments read, the function run, its
            // result handed over through the guest's allocator.
            let result = (|| {
                let (mem, st) = split(&mut c)?;
                let name = slice(mem, np, nl)?.to_vec();
                let args = slice(mem, ap, al)?.to_vec();
                super::foreign::call(st, &name, &args)
            })();
            match result {
                Ok(bytes) => {
                    stage(c.data_mut(), &bytes);
                    hand_over(&mut c, rp, rs)
                }
                Err(s) => Ok(s),
            }
        },
    )?;

    Ok(names)
}

#[allow(clippy::too_many_arguments)]
fn register_call(
    st: &mut HostState,
    cluster: String,
    kind: CallKind,
    headers: HeaderMap,
    body: Vec<u8>,
    trailers: HeaderMap,
    timeout_ms: i32,
    token: u32,
) {
    let deadline_ns =
        (timeout_ms > 0).then(|| st.shared.clock.now_ns().saturating_add(u64::from(timeout_ms as u32) * 1_000_000));
    st.shared.any_calls.store(true, std::sync::atomic::Ordering::Relaxed);
    let upstream = st.shared.upstreams.as_ref().and_then(|u| Some((u, u.address(&cluster)?)));
    let mut calls = lock(&st.shared.calls);
    let id = calls.next_id();
    if let Some((upstreams, addr)) = upstream {
        let job = Job {
            id,
            addr,
            kind: kind.clone(),
            headers: headers.clone(),
            body: body.clone(),
            timeout_ms: timeout_ms.max(0) as u32,
        };
        if matches!(kind, CallKind::GrpcStream { .. }) {
            st.shared.log(
                st.thread,
                LogLevel::Warn,
                format!("gRPC stream to {cluster} ({addr}): streams to real upstreams are not supported; closing it with 14"),
            );
        }
        if !upstreams.dispatch(job) {
            // Only if the client thread died; the call then ends at its timeout, as a call
            // to an unreachable upstream would.
            st.shared.log(st.thread, LogLevel::Error, format!("call to {cluster} ({addr}) could not be sent"));
        }
    }
    let upstream = upstream.map(|(_, addr)| addr);
    calls.pending.insert(
        id,
        CallRecord {
            public: PendingCall {
                id,
                thread: st.thread,
                cluster,
                kind,
                headers,
                body,
                trailers,
                deadline_ns,
                upstream,
                sent: Vec::new(),
                local_closed: false,
            },
            instance: st.instance,
            token,
            context: st.effective_context,
            remote: RemotePhase::Start,
            close_called: false,
        },
    );
}
