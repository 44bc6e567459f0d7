// The control API's routes and responses: parse a call, apply a mutation to the fault set, and
// render state as JSON. Authentication is in `auth`; the filter layer does the shared-data I/O.

use serde_json::{json, Value};

use crate::config::{from_json, Config};
use crate::duration::Duration;
use crate::engine::{Engine, PoolStatus};
use crate::error::CommandError;
use crate::fault::{Fault, FaultRequest};
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
    Add(FaultRequest),
    /// `DELETE {prefix}faults/{id}`
    Clear(String),
    /// `DELETE {prefix}faults`: the kill switch.
    ClearAll,
    /// `POST {prefix}pools/{name}/restore`: remove every fault on a pool.
    Restore(String),
}

#[derive(Clone, Debug, PartialEq)]
pub enum Call {
    View(View),
    Mutate(Mutation),
}

/// Routes a control request. `path` may carry a query string; it is ignored for routing.
pub fn parse_call(prefix: &str, method: &str, path: &str, body: &[u8]) -> Result<Call, CommandError> {
    let path = path.split(['?', '#']).next().unwrap_or("");
    let rest =
        path.strip_prefix(prefix).ok_or_else(|| CommandError::NotFound(format!("{path} is not under {prefix}")))?;
    let segments: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    let method = method.to_ascii_uppercase();
    let wrong = || CommandError::Method(method.clone());
    match (segments.as_slice(), method.as_str()) {
        (["faults"], "GET") => Ok(Call::View(View::Faults)),
        (["faults"], "POST") => {
            let request: FaultRequest = from_json(body).map_err(|e| CommandError::invalid(e.path, e.message))?;
            Ok(Call::Mutate(Mutation::Add(request)))
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
            "no route {path}; try GET {prefix}state, GET|POST|DELETE {prefix}faults, DELETE {prefix}faults/ID, POST {prefix}pools/NAME/restore"
        ))),
    }
}

/// Applies a mutation; returns the HTTP status and the response body. On error nothing changes.
pub fn apply(set: &mut FaultSet, config: &Config, mutation: &Mutation, now: u64) -> Result<(u16, Value), CommandError> {
    set.prune(now);
    match mutation {
        Mutation::Add(request) => {
            let fault = set.add(config, request, now)?;
            Ok((201, json!({"ok": true, "fault": fault_json(fault, now)})))
        }
        Mutation::Clear(id) => {
            let fault = set.clear(id)?;
            Ok((200, json!({"ok": true, "cleared": [fault.id]})))
        }
        Mutation::ClearAll => Ok((200, json!({"ok": true, "cleared": set.clear_all()}))),
        Mutation::Restore(pool) => Ok((200, json!({"ok": true, "cleared": set.restore_pool(config, pool)?}))),
    }
}

/// Renders a view of the engine's state at `now`.
pub fn view(engine: &Engine, view: &View, now: u64) -> Value {
    let faults = || -> Vec<Value> { engine.faults().live(now).map(|f| fault_json(f, now)).collect() };
    let pools = || -> Vec<Value> {
        (0..engine.config().pools.len()).filter_map(|i| engine.pool_status(i, now)).map(|s| pool_json(&s)).collect()
    };
    match view {
        View::Faults => json!({"ok": true, "faults": faults()}),
        View::Pools => json!({"ok": true, "pools": pools()}),
        View::State => json!({"ok": true, "armed": true, "now_ms": now, "faults": faults(), "pools": pools()}),
    }
}

/// The body of a refusal.
pub fn error_json(err: &CommandError) -> Value {
    json!({"ok": false, "status": err.status(), "error": err.to_string()})
}

pub fn fault_json(fault: &Fault, now: u64) -> Value {
    let state = if fault.expired(now) {
        "expired"
    } else if fault.active(now) {
        "active"
    } else {
        "scheduled"
    };
    json!({
        "id": fault.id,
        "kind": fault.spec.name(),
        "pool": fault.pool(),
        "state": state,
        "deploying": fault.deploying(now),
        "start_ms": fault.start_ms,
        "expires_ms": fault.expires_ms,
        "expires_in": Duration::from_millis(fault.expires_ms.saturating_sub(now)).to_string(),
        "from_config": fault.from_config,
        "spec": fault.spec,
    })
}

pub fn pool_json(s: &PoolStatus) -> Value {
    json!({
        "name": s.name,
        "protocol": s.protocol,
        "expected_hosts": s.expected_hosts,
        "available_hosts": s.available_hosts,
        "capacity": s.capacity,
        "deploy_in_progress": s.deploy_in_progress,
        "faults": s.faults,
    })
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
        assert_eq!(body["fault"]["state"], "active");
        assert_eq!(body["fault"]["expires_in"], "10m");
        let (_, body) = apply(&mut set, &config, &Mutation::Restore("web".into()), 5).unwrap();
        assert_eq!(body["cleared"], json!(["d1"]));
        assert_eq!(apply(&mut set, &config, &Mutation::Clear("d1".into()), 5).unwrap_err().status(), 404);
    }
}
