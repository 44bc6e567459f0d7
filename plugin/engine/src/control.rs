// The control API's routes and responses: parse a call, apply a mutation to the fault set, and
// render state as JSON. Authentication is in `auth`; the filter layer does the shared-data I/O.

use serde::{Deserialize, Serialize};

use crate::clip::{clip, quoted, VALUE};
use crate::config::{from_json, Config, Protocol};
use crate::duration::Duration;
use crate::engine::{Engine, PoolStatus};
use crate::error::CommandError;
use crate::fault::{Fault, FaultRequest, FaultSpec};
use crate::state::FaultSet;

/// A read of the proxy's state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum View {
    /// `GET {prefix}faults`
    Faults,
    /// `GET {prefix}pools`
    Pools,
    /// `GET {prefix}state`: faults, pools and whether the filter is armed.
    State,
}

/// A change to the proxy's faults.
#[derive(Clone, Debug, PartialEq)]
pub enum Mutation {
    /// `POST {prefix}faults` with a fault as the body.
    Add(Box<FaultRequest>),
    /// `DELETE {prefix}faults/{id}`
    Clear(String),
    /// `DELETE {prefix}faults`: the kill switch.
    ClearAll,
    /// `POST {prefix}pools/{name}/restore`: remove every fault on a pool.
    Restore(String),
}

impl Mutation {
    /// True when a captured signature must not be usable twice: adding a fault. Clearing and
    /// restoring only ever remove faults, so a replay does nothing harmful, and the kill switch
    /// must work whatever the state of the replay memory (full, contended, unreadable).
    pub fn single_use(&self) -> bool {
        matches!(self, Mutation::Add(_))
    }
}

/// Longest command (`x-ebb-command`) read, in bytes; a fault is a few hundred.
pub const MAX_COMMAND_BYTES: usize = 16 * 1024;

/// Whether a control call carries a request body, judged from the request itself. Some hosts
/// (ngx_wasm_module) report `end_of_stream = false` on the headers of every request, so that
/// alone does not mean a body follows: HTTP/1.1 has a body only with `transfer-encoding` or a
/// non-zero `content-length`, and HTTP/2 clients send `content-length` with theirs.
pub fn has_body(end_of_stream: bool, content_length: Option<&str>, transfer_encoding: Option<&str>) -> bool {
    if end_of_stream {
        return false;
    }
    if transfer_encoding.is_some() {
        return true;
    }
    content_length.is_some_and(|v| v.trim().parse::<u64>().map_or(true, |n| n > 0))
}

/// The refusal of a request body on a control call.
pub fn body_error() -> CommandError {
    CommandError::invalid("", "send the command in the x-ebb-command header, not the request body")
}

/// The refusal of a path that reads as the control prefix only once normalised.
pub fn lookalike_error(prefix: &str, path: &str) -> CommandError {
    CommandError::invalid(
        "",
        format!(
            "{} is not a control path as written: the control API answers only {prefix}… exactly, without \
             percent-escapes, '.' or '..' segments, doubled slashes or other letter case",
            quoted(crate::control_path::route_part(path))
        ),
    )
}

#[derive(Clone, Debug, PartialEq)]
#[allow(clippy::large_enum_variant)] // one per control call; boxing buys nothing
pub enum Call {
    View(View),
    Mutate(Mutation),
}

/// Routes a control request. `path` may carry a query string; it is ignored for routing.
pub fn parse_call(prefix: &str, method: &str, path: &str, body: &[u8]) -> Result<Call, CommandError> {
    let path = crate::control_path::route_part(path);
    let rest = path
        .strip_prefix(prefix)
        .ok_or_else(|| CommandError::NotFound(format!("{} is not under {prefix}", clip(path, VALUE))))?;
    if body.len() > MAX_COMMAND_BYTES {
        return Err(CommandError::invalid(
            "",
            format!("the command has {} bytes; at most {MAX_COMMAND_BYTES} are read", body.len()),
        ));
    }
    let segments: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    let method = method.to_ascii_uppercase();
    let wrong = || CommandError::Method(clip(&method, 16).into_owned());
    match (segments.as_slice(), method.as_str()) {
        (["faults"], "GET") => Ok(Call::View(View::Faults)),
        (["faults"], "POST") if body.iter().all(u8::is_ascii_whitespace) => {
            Err(CommandError::invalid("", "send the fault as JSON in the x-ebb-command header"))
        }
        (["faults"], "POST") => {
            let request: FaultRequest = from_json(body).map_err(|e| CommandError::invalid(e.path, e.message))?;
            Ok(Call::Mutate(Mutation::Add(Box::new(request))))
        }
        (["faults"], "DELETE") => Ok(Call::Mutate(Mutation::ClearAll)),
        (["faults"], _) => Err(wrong()),
        (["faults", id], "DELETE") => Ok(Call::Mutate(Mutation::Clear(id.to_string()))),
        (["faults", _], _) => Err(wrong()),
        (["pools"], "GET") => Ok(Call::View(View::Pools)),
        (["pools"], _) => Err(wrong()),
        (["pools", pool, "restore"], "POST") => Ok(Call::Mutate(Mutation::Restore(pool.to_string()))),
        (["pools", _, "restore"], _) => Err(wrong()),
        (["state"], "GET") => Ok(Call::View(View::State)),
        (["state"], _) => Err(wrong()),
        _ => Err(CommandError::NotFound(format!(
            "no route {}; try GET {prefix}state, GET|POST|DELETE {prefix}faults, DELETE {prefix}faults/ID, POST {prefix}pools/NAME/restore",
            clip(path, VALUE)
        ))),
    }
}

/// A control API response body. Fields a response does not carry are omitted; the same type
/// reads responses back (harness, recovery tools).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    /// HTTP status, on refusals.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Why the call was refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub armed: Option<bool>,
    /// The proxy's clock, ms since the Unix epoch (`state` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub now_ms: Option<u64>,
    /// The fault just added.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<FaultView>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub faults: Option<Vec<FaultView>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pools: Option<Vec<PoolView>>,
    /// Ids of the faults removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cleared: Option<Vec<String>>,
}

impl Response {
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// A fault as the control API shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FaultView {
    pub id: String,
    /// `drain`, `deploy`, `abort`, `delay` or `reset`.
    pub kind: String,
    pub pool: Option<String>,
    /// `active`, `scheduled` (start_in not reached) or `expired`.
    pub state: String,
    /// A deploy whose rollout is under way.
    pub deploying: bool,
    pub start_ms: u64,
    pub expires_ms: u64,
    pub expires_in: Duration,
    pub from_config: bool,
    pub spec: FaultSpec,
}

/// A pool as the control API shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PoolView {
    pub name: String,
    pub protocol: Protocol,
    pub expected_hosts: u32,
    pub available_hosts: u32,
    pub capacity: u64,
    pub deploy_in_progress: bool,
    pub faults: Vec<String>,
}

fn done(cleared: Vec<String>) -> Response {
    Response { ok: true, cleared: Some(cleared), ..Response::default() }
}

/// Applies a mutation; returns the HTTP status and the response body. On error nothing changes.
pub fn apply(
    set: &mut FaultSet,
    config: &Config,
    mutation: &Mutation,
    now: u64,
) -> Result<(u16, Response), CommandError> {
    set.prune(now);
    match mutation {
        Mutation::Add(request) => {
            let fault = fault_view(set.add(config, request, now)?, now);
            Ok((201, Response { ok: true, fault: Some(fault), ..Response::default() }))
        }
        Mutation::Clear(id) => Ok((200, done(vec![set.clear(id)?.id]))),
        Mutation::ClearAll => Ok((200, done(set.clear_all()))),
        Mutation::Restore(pool) => Ok((200, done(set.restore_pool(config, pool)?))),
    }
}

/// Renders a view of the engine's state at `now`.
pub fn view(engine: &Engine, view: &View, now: u64) -> Response {
    let faults = || Some(engine.faults().live(now).map(|f| fault_view(f, now)).collect());
    let pools = || {
        Some(
            (0..engine.config().pools.len())
                .filter_map(|i| engine.pool_status(i, now))
                .map(|s| pool_view(&s))
                .collect(),
        )
    };
    match view {
        View::Faults => Response { ok: true, faults: faults(), ..Response::default() },
        View::Pools => Response { ok: true, pools: pools(), ..Response::default() },
        View::State => Response {
            ok: true,
            armed: Some(true),
            now_ms: Some(now),
            faults: faults(),
            pools: pools(),
            ..Response::default()
        },
    }
}

/// The body of a refusal.
pub fn error_response(err: &CommandError) -> Response {
    Response { ok: false, status: Some(err.status()), error: Some(err.to_string()), ..Response::default() }
}

pub fn fault_view(fault: &Fault, now: u64) -> FaultView {
    let state = if fault.expired(now) {
        "expired"
    } else if fault.active(now) {
        "active"
    } else {
        "scheduled"
    };
    FaultView {
        id: fault.id.clone(),
        kind: fault.spec.name().to_string(),
        pool: fault.pool().map(str::to_string),
        state: state.to_string(),
        deploying: fault.deploying(now),
        start_ms: fault.start_ms,
        expires_ms: fault.expires_ms,
        expires_in: Duration::from_millis(fault.expires_ms.saturating_sub(now)),
        from_config: fault.from_config,
        spec: fault.spec.clone(),
    }
}

pub fn pool_view(s: &PoolStatus) -> PoolView {
    PoolView {
        name: s.name.clone(),
        protocol: s.protocol,
        expected_hosts: s.expected_hosts,
        available_hosts: s.available_hosts,
        capacity: s.capacity,
        deploy_in_progress: s.deploy_in_progress,
        faults: s.faults.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: &str = "/.ebb/v1/";

    #[test]
    fn routes() {
        assert_eq!(parse_call(P, "GET", "/.ebb/v1/state?x=1", b"").unwrap(), Call::View(View::State));
        assert_eq!(parse_call(P, "delete", "/.ebb/v1/faults", b"").unwrap(), Call::Mutate(Mutation::ClearAll));
        assert_eq!(
            parse_call(P, "POST", "/.ebb/v1/pools/web/restore", b"").unwrap(),
            Call::Mutate(Mutation::Restore("web".into()))
        );
        assert_eq!(parse_call(P, "PUT", "/.ebb/v1/faults", b"").unwrap_err().status(), 405);
        assert_eq!(parse_call(P, "GET", "/.ebb/v1/nope", b"").unwrap_err().status(), 404);
        let bad = parse_call(P, "POST", "/.ebb/v1/faults", br#"{"drain":{"pool":"web","hostz":1}}"#).unwrap_err();
        assert_eq!(bad.status(), 400);
        assert!(bad.to_string().contains("drain") && bad.to_string().contains("hostz"), "{bad}");
    }

    #[test]
    fn only_adding_a_fault_is_single_use() {
        let add = Mutation::Add(Box::default());
        assert!(add.single_use());
        for m in [Mutation::ClearAll, Mutation::Clear("a".into()), Mutation::Restore("web".into())] {
            assert!(!m.single_use(), "{m:?}: the kill switch must not depend on the replay memory");
        }
    }

    #[test]
    fn a_body_is_judged_from_the_request_not_end_of_stream_alone() {
        // ngx_wasm_module: end_of_stream is false on the headers of a body-less GET.
        assert!(!has_body(false, None, None));
        assert!(!has_body(false, Some("0"), None));
        assert!(!has_body(true, Some("12"), None), "end of stream on the headers: nothing follows");
        assert!(has_body(false, Some("2"), None));
        assert!(has_body(false, Some("junk"), None), "an unreadable length is not taken as none");
        assert!(has_body(false, None, Some("chunked")));
    }

    #[test]
    fn commands_are_bounded_and_their_header_named() {
        let big = format!(r#"{{"id":"{}","abort":{{"status":503}}}}"#, "a".repeat(MAX_COMMAND_BYTES));
        let err = parse_call(P, "POST", "/.ebb/v1/faults", big.as_bytes()).unwrap_err();
        assert!(err.status() == 400 && err.to_string().contains("at most 16384"), "{err}");
        let err = parse_call(P, "POST", "/.ebb/v1/faults", b"").unwrap_err();
        assert!(err.status() == 400 && err.to_string().contains("x-ebb-command"), "{err}");
        let long = format!("/.ebb/v1/{}", "x".repeat(100_000));
        let err = parse_call(P, "GET", &long, b"").unwrap_err().to_string();
        assert!(err.len() < 400 && err.contains("(100009 bytes)"), "{err}");
    }

    #[test]
    fn mutations_report_what_changed() {
        let config = Config::parse(br#"{"pools":[{"name":"web","hosts":10,"capacity_per_host":10}]}"#).unwrap();
        let mut set = FaultSet::default();
        let add = |body: &str| match parse_call(P, "POST", "/.ebb/v1/faults", body.as_bytes()).unwrap() {
            Call::Mutate(m) => m,
            other => panic!("{other:?}"),
        };
        let (status, body) =
            apply(&mut set, &config, &add(r#"{"id":"d1","drain":{"pool":"web","hosts":2}}"#), 0).unwrap();
        assert_eq!(status, 201);
        let fault = body.fault.unwrap();
        assert_eq!((fault.state.as_str(), fault.expires_in), ("active", Duration::from_secs(600)));
        let (_, body) = apply(&mut set, &config, &Mutation::Restore("web".into()), 5).unwrap();
        assert_eq!(body.cleared, Some(vec!["d1".to_string()]));
        assert_eq!(apply(&mut set, &config, &Mutation::Clear("d1".into()), 5).unwrap_err().status(), 404);
    }
}
