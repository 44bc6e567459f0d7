// The control API inside the filter: authenticate, route, apply the change to the shared fault
// set under CAS (so every worker sees it within a tick), and answer with JSON.

use std::cell::RefCell;
use std::rc::Rc;

use ebb_engine::auth::{self, SIGNATURE_HEADER, TIMESTAMP_HEADER};
use ebb_engine::control::{self as api, Call as Route};
use ebb_engine::metrics::GlobalMetric;
use ebb_engine::request::Request;
use ebb_engine::CommandError;

use super::http::Reply;
use super::{shared, Vm};

/// Header carrying a command's JSON (see `http` for why not the body).
pub(crate) const COMMAND_HEADER: &str = "x-ebb-command";
/// The prefix guarded while the filter is disarmed (the configured one is unknown then).
pub(crate) const DEFAULT_PREFIX: &str = "/.ebb/";

/// A control call's method, path and authentication headers.
pub(crate) struct Call {
    method: String,
    path: String,
    timestamp: Option<String>,
    signature: Option<String>,
}

impl Call {
    pub fn from_headers(req: &mut dyn Request, path: String) -> Self {
        Call {
            method: req.header(":method").unwrap_or_default(),
            path,
            timestamp: req.header(TIMESTAMP_HEADER),
            signature: req.header(SIGNATURE_HEADER),
        }
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

/// A control call that sent a body: refused at once, so the caller does not wait for a body
/// the proxy may never pass to the filter.
pub(crate) fn body_refused() -> Reply {
    let body = api::Response {
        ok: false,
        status: Some(400),
        error: Some(format!("send the command in the {COMMAND_HEADER} header, not the request body")),
        ..api::Response::default()
    };
    json_reply(400, &body)
}

/// Answers one control call. Refusals change nothing and are counted.
pub(crate) fn handle(vm: &Rc<RefCell<Vm>>, call: &Call, body: &[u8], now: u64) -> Reply {
    match run(vm, call, body, now) {
        Ok((status, value)) => json_reply(status, &value),
        Err(e) => {
            let vm = vm.borrow();
            vm.metrics.add(GlobalMetric::CommandsRefused, 1);
            log::warn!("ebb: control {} {} refused: {e}", call.method, call.path);
            json_reply(e.status(), &api::error_response(&e))
        }
    }
}

fn run(vm: &Rc<RefCell<Vm>>, call: &Call, body: &[u8], now: u64) -> Result<(u16, api::Response), CommandError> {
    let (config, prefix, key, window) = {
        let vm = vm.borrow();
        let engine = vm.engine.as_ref().ok_or_else(|| {
            CommandError::Busy("filter disarmed: its configuration is invalid (see the proxy log)".into())
        })?;
        let control =
            engine.config().control.as_ref().ok_or_else(|| CommandError::NotFound("control API is off".into()))?;
        (engine.config().clone(), control.path_prefix.clone(), control.key.clone(), control.window.as_millis())
    };
    // Authenticate before anything else: an unsigned caller learns nothing about routes or state.
    let signed = auth::Signed {
        method: &call.method,
        path: &call.path,
        timestamp: call.timestamp.as_deref(),
        signature: call.signature.as_deref(),
        body,
    };
    let verified = auth::verify(key.as_bytes(), window, now, signed)?;
    let route = api::parse_call(&prefix, &call.method, &call.path, body)?;
    // Changes are single-use: a captured signed change cannot be replayed. Reads change nothing,
    // so identical reads within a second (say, polling every worker) are allowed.
    if matches!(route, Route::Mutate(_)) {
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
            log::info!("ebb: control {} {} accepted", call.method, call.path);
            Ok((status, value))
        }
    }
}
