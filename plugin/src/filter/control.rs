// The control API inside the filter: recognise control paths and their look-alikes on every
// request, keep ebb's headers from the upstream, authenticate, route, apply changes to the
// shared fault set under CAS (so every worker sees them within a tick), and answer with JSON.

use std::borrow::Cow;
use std::cell::RefCell;
use std::rc::Rc;

use ebb_engine::auth::{self, SIGNATURE_HEADER, TIMESTAMP_HEADER};
use ebb_engine::clip::{clip, LINE, VALUE};
use ebb_engine::config::{ConfigError, MAX_CONFIG_BYTES};
use ebb_engine::control::{self as api, Call as Route};
use ebb_engine::control_path::{classify, PathClass};
use ebb_engine::keys::{self, KeyVerdict};
use ebb_engine::metrics::GlobalMetric;
use ebb_engine::request::Request;
use ebb_engine::{CommandError, Config};

use super::http::{Lazy, Reply};
use super::{hostcall, now_ms, shared, Vm};

/// Header carrying a command's JSON: Envoy does not hand a body to a filter that paused on the
/// request headers (unless the listener sets allow_on_headers_stop_iteration).
pub(crate) const COMMAND_HEADER: &str = "x-ebb-command";
/// The prefix guarded while the filter is disarmed (the configured one is unknown then).
pub(crate) const DEFAULT_PREFIX: &str = "/.ebb/";
/// ebb's own request headers: a signature, its timestamp and a command are for the filter,
/// never for the upstream (a captured signature could be replayed from there). Removed together
/// from any request that carries the signature.
const EBB_HEADERS: [&str; 3] = [SIGNATURE_HEADER, TIMESTAMP_HEADER, COMMAND_HEADER];
/// What the names of [`EBB_HEADERS`] start with (checked at compile time below).
const EBB_PREFIX: &str = "x-ebb-";
const _: () = {
    let (prefix, mut h) = (EBB_PREFIX.as_bytes(), 0);
    while h < EBB_HEADERS.len() {
        let name = EBB_HEADERS[h].as_bytes();
        assert!(name.len() >= prefix.len());
        let mut i = 0;
        while i < prefix.len() {
            assert!(name[i] == prefix[i], "an ebb header outside the x-ebb- prefix would be forwarded");
            i += 1;
        }
        h += 1;
    }
};

/// A control call's method, authority, path and authentication headers.
pub(crate) struct Call {
    method: String,
    authority: String,
    path: String,
    timestamp: Option<String>,
    signature: Option<String>,
}

impl Call {
    fn from_headers(req: &mut dyn Request, path: String) -> Self {
        Call {
            method: req.header(":method").unwrap_or_default().into_owned(),
            authority: req.header(":authority").unwrap_or_default().into_owned(),
            path,
            timestamp: req.header(TIMESTAMP_HEADER).map(Cow::into_owned),
            signature: req.header(SIGNATURE_HEADER).map(Cow::into_owned),
        }
    }
}

/// Runs first on every request. Returns the reply for a control call or a look-alike of the
/// control path (never forwarded); for any other request, removes ebb's headers and returns
/// None. Armed or disarmed, control on or off.
pub(crate) fn intercept(vm: &Rc<RefCell<Vm>>, req: &mut Lazy, end_of_stream: bool) -> Option<Reply> {
    let found = {
        let vm = vm.borrow();
        let prefix = match vm.engine.as_ref() {
            // Disarmed: the configured prefix is unknown, so guard the default one rather than
            // forward signed control calls upstream.
            None => Some(DEFAULT_PREFIX),
            Some(e) => e.config().control.as_ref().map(|c| c.path_prefix.as_str()),
        };
        prefix.and_then(|prefix| {
            let path = req.header(":path")?;
            match classify(prefix, &path) {
                PathClass::Outside => None,
                PathClass::Control => Some((path.into_owned(), None)),
                PathClass::LookAlike => {
                    let refusal = api::lookalike_error(prefix, &path);
                    Some((path.into_owned(), Some(refusal)))
                }
            }
        })
    };
    let Some((path, refusal)) = found else {
        strip_ebb_headers(req);
        return None;
    };
    Some(answer(vm, req, path, refusal, end_of_stream))
}

/// The reply to a control call or a look-alike of the control path. Out of line and cold: every
/// request passes `intercept`, few are control calls, and this code (JSON, signatures, the fault
/// set) would otherwise sit between the instructions every request runs.
#[cold]
#[inline(never)]
fn answer(
    vm: &Rc<RefCell<Vm>>,
    req: &mut Lazy,
    path: String,
    refusal: Option<CommandError>,
    end_of_stream: bool,
) -> Reply {
    let call = Call::from_headers(req, path);
    if let Some(e) = refusal {
        return refuse(vm, &call, &e);
    }
    let body = !end_of_stream && {
        let length = req.header("content-length").map(Cow::into_owned);
        api::has_body(false, length.as_deref(), req.header("transfer-encoding").as_deref())
    };
    if body {
        return refuse(vm, &call, &api::body_error());
    }
    let command = req.header(COMMAND_HEADER).unwrap_or_default();
    handle(vm, &call, command.as_bytes(), now_ms())
}

/// Removes ebb's headers from a signed request about to be forwarded: each one it may carry (all
/// three when no header map was fetched to check). A removal the host refuses is logged once per
/// VM (`hostcall`) and otherwise ignored: the request goes on.
fn strip_ebb_headers(req: &mut Lazy) {
    // A signature is what a copy in an upstream's logs could replay; a timestamp or command
    // without one authorizes nothing. So the signature decides for all three, and a request that
    // certainly has none (nearly every one) keeps its headers as they are: one scan of the map
    // when it was fetched, else one look-up, which a missing header answers without handing
    // anything over, instead of three removals. Present, or the look-up refused: all three go.
    let signed = match req.may_have_prefix(EBB_PREFIX) {
        Some(false) => false,
        Some(true) => req.may_have(SIGNATURE_HEADER),
        None => !hostcall::request_header_absent(SIGNATURE_HEADER),
    };
    if !signed {
        return;
    }
    for name in EBB_HEADERS {
        if req.may_have(name) {
            hostcall::remove_request_header(name);
        }
    }
}

/// The plugin configuration, read only when it is within [`MAX_CONFIG_BYTES`]: a larger one is
/// refused unread (the filter disarms) instead of being copied into the VM's memory.
pub(crate) fn read_configuration(size: usize) -> (Vec<u8>, Result<Config, ConfigError>) {
    if size > MAX_CONFIG_BYTES {
        return (Vec::new(), Err(ConfigError::too_large(size)));
    }
    // One byte over the limit tells a host that under-reported the size from one that did not.
    let bytes = hostcall::plugin_configuration(MAX_CONFIG_BYTES + 1);
    let parsed = Config::parse(&bytes);
    (bytes, parsed)
}

/// Logs what the key rules make of `control.key`, once per configuration.
pub(crate) fn log_key_verdict(config: &Config) {
    let Some(control) = &config.control else { return };
    match keys::judge(&control.key) {
        KeyVerdict::Refused(why) => log::error!("ebb: control API off: {why}"),
        KeyVerdict::Weak(why) => log::warn!("ebb: {why}"),
        KeyVerdict::Fine => {}
    }
}

fn json_reply(status: u16, body: &api::Response) -> Reply {
    let mut text = String::from_utf8(body.to_json()).unwrap_or_default();
    text.push('\n');
    Reply {
        status: u32::from(status),
        headers: vec![("content-type", "application/json".to_string()), ("cache-control", "no-store".to_string())],
        body: text,
    }
}

/// A refusal: counted, logged on one bounded line, answered with the error as JSON.
fn refuse(vm: &Rc<RefCell<Vm>>, call: &Call, e: &CommandError) -> Reply {
    vm.borrow().metrics.add(GlobalMetric::CommandsRefused, 1);
    let line = format!("ebb: control {} {} refused: {e}", clip(&call.method, 16), clip(&call.path, VALUE));
    log::warn!("{}", clip(&line, LINE));
    json_reply(e.status(), &api::error_response(e))
}

/// Answers one control call. Refusals change nothing and are counted.
fn handle(vm: &Rc<RefCell<Vm>>, call: &Call, body: &[u8], now: u64) -> Reply {
    match run(vm, call, body, now) {
        Ok((status, value)) => json_reply(status, &value),
        Err(e) => refuse(vm, call, &e),
    }
}

fn run(vm: &Rc<RefCell<Vm>>, call: &Call, body: &[u8], now: u64) -> Result<(u16, api::Response), CommandError> {
    let (config, control) = {
        let vm = vm.borrow();
        let engine = vm.engine.as_ref().ok_or_else(|| {
            CommandError::Busy("filter disarmed: its configuration is invalid (see the proxy log)".into())
        })?;
        let control =
            engine.config().control.clone().ok_or_else(|| CommandError::NotFound("control API is off".into()))?;
        (engine.config().clone(), control)
    };
    if let KeyVerdict::Refused(why) = keys::judge(&control.key) {
        return Err(CommandError::Off(why));
    }
    // Authenticate before anything else: an unsigned caller learns nothing about routes or state.
    let signed = auth::Signed {
        method: &call.method,
        authority: &call.authority,
        path: &call.path,
        timestamp: call.timestamp.as_deref(),
        signature: call.signature.as_deref(),
        body,
    };
    let window = control.window.as_millis();
    let verified = auth::verify(control.key.as_bytes(), window, now, control.accept_v1_signatures, signed)?;
    let route = api::parse_call(&control.path_prefix, &call.method, &call.path, body)?;
    // Adding a fault is single-use: a captured signed change cannot be replayed. Clearing and
    // restoring skip the replay memory (whatever its state, the kill switch works), and reads
    // change nothing, so they may repeat too.
    if matches!(&route, Route::Mutate(m) if m.single_use()) {
        shared::remember_signature(&verified.signature, verified.forget_after, now)?;
    }
    match route {
        Route::View(view) => {
            let mut vm = vm.borrow_mut();
            vm.sync();
            let engine = vm.engine.as_ref().ok_or_else(|| CommandError::NotFound("filter disarmed".into()))?;
            Ok((200, api::view(engine, &view, now)))
        }
        Route::Mutate(mutation) => {
            let mut refusal = None;
            let outcome = shared::update_faults(|set| match api::apply(set, &config, &mutation, now) {
                Ok(done) => Some(done),
                Err(e) => {
                    refusal = Some(e);
                    None
                }
            });
            if let Some(e) = refusal {
                return Err(e);
            }
            let (status, value) = match outcome {
                Ok(Some(done)) => done,
                Ok(None) => return Err(CommandError::NotFound("nothing to change".into())),
                Err(status) => {
                    return Err(CommandError::Busy(format!("shared state contended ({status:?}); retry")));
                }
            };
            let mut vm = vm.borrow_mut();
            vm.sync();
            vm.metrics.add(GlobalMetric::CommandsAccepted, 1);
            log::info!("ebb: control {} {} accepted", call.method, clip(&call.path, VALUE));
            Ok((status, value))
        }
    }
}
