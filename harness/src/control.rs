// Signed control API calls from the harness into a simulated proxy's filter: the same requests
// scripts/ebb-ctl and users' recovery tools send to Envoy, sent through the host's HTTP path.

use ebb_engine::auth::{sign, SIGNATURE_HEADER, TIMESTAMP_HEADER};
use ebb_engine::control::Response;

use crate::host::{LocalReply, Proxy, Step};

/// Header carrying a command's JSON (the filter reads commands from headers, as in Envoy).
pub const COMMAND_HEADER: &str = "x-ebb-command";
/// The `:authority` the harness's own calls address (and sign, scheme v2).
pub const AUTHORITY: &str = "ebb-control";

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

/// Sends one signed control call (scheme v2, bound to [`AUTHORITY`]) on `worker` of `proxy` and
/// returns the status and response. `nonce` makes otherwise identical changes within one second
/// distinct (adding a fault is single-use).
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
    let signature = sign(key.as_bytes(), method, AUTHORITY, &path, now_s, body.as_bytes());
    let mut headers: Vec<(&str, String)> = vec![
        (":method", method.to_string()),
        (":path", path.clone()),
        (":authority", AUTHORITY.to_string()),
        (":scheme", "http".to_string()),
        (TIMESTAMP_HEADER, now_s.to_string()),
        (SIGNATURE_HEADER, signature),
    ];
    if let Some(command) = command {
        headers.push((COMMAND_HEADER, command.to_string()));
    }
    let reply = exchange(proxy, worker, &headers, true)?;
    let response: Response = serde_json::from_slice(&reply.body)
        .map_err(|e| ControlError::NotJson(e.to_string(), String::from_utf8_lossy(&reply.body).into_owned()))?;
    Ok((reply.status, response))
}

/// An HTTP request as a client sent it to the control listener: `path` with its query, header
/// names lower-case (as HTTP/2 and Envoy have them).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RawRequest {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// What the control listener answered.
#[derive(Clone, Debug, PartialEq)]
pub struct RawResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// The answer of deploy/envoy's control listener when the filter lets a request through (a path
/// outside the control prefix, or the filter bypassed): its route is a 404 direct response.
pub const NOT_ANSWERED_BODY: &str = "ebb control API not answering: filter bypassed, disarmed or wrong path\n";

/// Connection-level headers Envoy drops before its filters run; everything else reaches the
/// filter as the client sent it (the signature headers above all).
const HOP_BY_HOP: [&str; 7] =
    ["host", "connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "upgrade"];

/// Sends a client's request, unchanged, through the filter on `worker` of `proxy`, as Envoy's
/// control listener would: `Host` becomes `:authority` (what a v2 signature covers), a request
/// with a body is not at its end on the headers (the filter refuses it with 400, because Envoy
/// would not hand it the body), and a request the filter does not answer gets the listener's 404.
/// The caller's own signature is checked by the filter; nothing is signed here.
pub fn forward(proxy: &mut Proxy, worker: usize, request: &RawRequest) -> Result<RawResponse, ControlError> {
    let authority = request.headers.iter().find(|(k, _)| k == "host").map_or("ebb-control", |(_, v)| v.as_str());
    let mut headers: Vec<(&str, &str)> =
        vec![(":method", &request.method), (":path", &request.path), (":authority", authority), (":scheme", "http")];
    headers.extend(
        request
            .headers
            .iter()
            .filter(|(k, _)| !HOP_BY_HOP.contains(&k.as_str()) && !k.starts_with(':'))
            .map(|(k, v)| (k.as_str(), v.as_str())),
    );
    match exchange(proxy, worker, &headers, request.body.is_empty()) {
        Ok(reply) => {
            let mut headers = reply.headers.to_strings();
            headers.retain(|(k, _)| !k.starts_with(':'));
            Ok(RawResponse { status: u16::try_from(reply.status).unwrap_or(500), headers, body: reply.body })
        }
        Err(ControlError::NotAnswered(_)) => Ok(RawResponse {
            status: 404,
            headers: vec![("content-type".into(), "text/plain".into())],
            body: NOT_ANSWERED_BODY.as_bytes().to_vec(),
        }),
        Err(e) => Err(e),
    }
}

/// One exchange on the control listener: request headers in, the filter's local reply out (the
/// filter answers control calls on the request headers and never forwards them).
fn exchange<K: AsRef<[u8]>, V: AsRef<[u8]>>(
    proxy: &mut Proxy,
    worker: usize,
    headers: &[(K, V)],
    end_of_stream: bool,
) -> Result<LocalReply, ControlError> {
    let mut http = proxy.worker(worker)?.http();
    let step = http.request_headers(headers, end_of_stream);
    let Step::LocalReply(reply) = step else {
        let name = step.name();
        let _ = http.finish();
        return Err(ControlError::NotAnswered(name));
    };
    http.finish()?;
    Ok(reply)
}
