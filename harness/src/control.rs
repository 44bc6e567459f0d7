// Signed control API calls from the harness into a simulated proxy's filter: the same requests
// scripts/ebb-ctl and users' recovery tools send to Envoy, sent through the host's HTTP path.

use ebb_engine::auth::{sign, SIGNATURE_HEADER, TIMESTAMP_HEADER};
use ebb_engine::control::Response;

use crate::host::{Proxy, Step};

/// Header carrying a command's JSON (the filter reads commands from headers, as in Envoy).
pub const COMMAND_HEADER: &str = "x-ebb-command";

/// Why a control call did not get a JSON answer from the filter.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("the filter did not answer the control call locally (step: {0})")]
    NotAnswered(&'static str),
    #[error("the filter's answer is not control API JSON ({0}): {1}")]
    NotJson(String, String),
    #[error(transparent)]
    Host(#[from] crate::host::HostError),
}

/// Sends one signed control call on `worker` of `proxy` and returns the status and response.
/// `nonce` makes otherwise identical changes within one second distinct (replay protection).
pub fn call(
    proxy: &mut Proxy,
    worker: usize,
    key: &str,
    method: &str,
    path: &str,
    command: Option<&str>,
    nonce: u64,
) -> Result<(u32, Response), ControlError> {
    let path = format!("{path}?n={nonce}");
    let now_s = proxy.clock().now_ns() / 1_000_000_000;
    let body = command.unwrap_or("");
    let signature = sign(key.as_bytes(), method, &path, now_s, body.as_bytes());
    let mut headers: Vec<(&str, String)> = vec![
        (":method", method.to_string()),
        (":path", path.clone()),
        (":authority", "ebb-control".to_string()),
        (":scheme", "http".to_string()),
        (TIMESTAMP_HEADER, now_s.to_string()),
        (SIGNATURE_HEADER, signature),
    ];
    if let Some(command) = command {
        headers.push((COMMAND_HEADER, command.to_string()));
    }
    let mut http = proxy.worker(worker)?.http();
    let step = http.request_headers(&headers, true);
    let Step::LocalReply(reply) = step else {
        let name = step.name();
        let _ = http.finish();
        return Err(ControlError::NotAnswered(name));
    };
    http.finish()?;
    let response: Response = serde_json::from_slice(&reply.body)
        .map_err(|e| ControlError::NotJson(e.to_string(), String::from_utf8_lossy(&reply.body).into_owned()))?;
    Ok((reply.status, response))
}
