// `ebb webhook`: an Alertmanager webhook receiver that runs the team's recovery command for each
// notification (the JSON on stdin, the group's labels in the environment) on ebb's loopback HTTP
// server: an optional bearer token, every notification checked, runs bounded and serialised per
// alert group (runs.rs), a clean stop that lets running commands finish.

mod notification;
mod runs;

pub use notification::{parse, Notification};
pub use runs::{Accepted, Runs};

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, ALLOW, AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use hyper::{Method, Request, Response, StatusCode};

/// Largest notification read (Alertmanager's for a few hundred alerts stays far below).
const MAX_BODY: usize = 1024 * 1024;

/// How the receiver runs.
pub struct Options {
    pub listen: SocketAddr,
    /// The bearer token Alertmanager sends (`http_config.authorization`), if one is required.
    pub token: Option<String>,
    /// The command and its arguments.
    pub argv: Vec<String>,
    /// Longest one run may take before its process group is killed.
    pub timeout: Duration,
    /// Listen on an address other than loopback (a token is required then).
    pub allow_remote: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("no command to run: give it after `--` (ebb webhook -- scripts/recover-pool.sh)")]
    NoCommand,
    #[error("the token is empty: a token file holds the bearer token Alertmanager sends")]
    EmptyToken,
    #[error("{0} is not a loopback address: anyone who reaches it could run the command; give --token-file (and --allow-remote), or listen on 127.0.0.1")]
    Remote(SocketAddr),
    #[error("cannot listen on {0}: {1}")]
    Listen(SocketAddr, std::io::Error),
    #[error("cannot start the server: {0}")]
    Runtime(std::io::Error),
}

/// A running receiver, on a thread of its own.
pub struct Receiver {
    addr: SocketAddr,
    runs: Arc<Runs>,
    server: crate::loopback::Server,
}

impl Receiver {
    pub fn start(options: Options) -> Result<Receiver, WebhookError> {
        if options.argv.is_empty() {
            return Err(WebhookError::NoCommand);
        }
        if options.token.as_deref().is_some_and(|t| t.trim().is_empty()) {
            return Err(WebhookError::EmptyToken);
        }
        let remote_allowed = options.allow_remote && options.token.is_some();
        if !(options.listen.ip().is_loopback() || remote_allowed) {
            return Err(WebhookError::Remote(options.listen));
        }
        let listener =
            std::net::TcpListener::bind(options.listen).map_err(|e| WebhookError::Listen(options.listen, e))?;
        listener.set_nonblocking(true).map_err(WebhookError::Runtime)?;
        let addr = listener.local_addr().map_err(WebhookError::Runtime)?;
        let runs = Runs::new(options.argv, options.timeout);
        let token: Option<Arc<str>> = options.token.map(Arc::from);
        let served = runs.clone();
        let server = crate::loopback::Server::spawn(listener, "ebb webhook", "ebb-webhook", move |request| {
            handle(request, token.clone(), served.clone())
        })
        .map_err(WebhookError::Runtime)?;
        Ok(Receiver { addr, runs, server })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops listening, then waits for the running commands (each within its timeout).
    pub fn stop(mut self) {
        self.shut_down();
    }

    fn shut_down(&mut self) {
        self.server.stop();
        self.runs.stop();
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.shut_down();
    }
}

/// Compares without stopping at the first difference, so timing tells nothing of the token.
fn same_token(given: &str, token: &str) -> bool {
    let (a, b) = (given.as_bytes(), token.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn answer(status: StatusCode, ok: bool, text: &str) -> Response<Full<Bytes>> {
    let key = if ok { "status" } else { "error" };
    let body = serde_json::json!({ "ok": ok, key: text }).to_string();
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn refuse(status: StatusCode, why: &str) -> Response<Full<Bytes>> {
    eprintln!("ebb webhook: refused a request ({}): {why}", status.as_u16());
    answer(status, false, why)
}

async fn handle(
    request: Request<Incoming>,
    token: Option<Arc<str>>,
    runs: Arc<Runs>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if request.method() != Method::POST {
        let mut r = refuse(StatusCode::METHOD_NOT_ALLOWED, "POST Alertmanager's webhook notifications here");
        r.headers_mut().insert(ALLOW, HeaderValue::from_static("POST"));
        return Ok(r);
    }
    if let Some(token) = &token {
        let given = request.headers().get(AUTHORIZATION).and_then(|v| v.to_str().ok());
        let bearer = given.and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")));
        if !bearer.is_some_and(|b| same_token(b.trim(), token)) {
            let why = if given.is_some() { "wrong bearer token" } else { "no Authorization: Bearer token" };
            let mut r = refuse(StatusCode::UNAUTHORIZED, why);
            r.headers_mut().insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return Ok(r);
        }
    }
    let body = match Limited::new(request.into_body(), MAX_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) => {
            return Ok(refuse(StatusCode::PAYLOAD_TOO_LARGE, &format!("body unreadable or over {MAX_BODY} bytes: {e}")))
        }
    };
    let notification = match parse(&body) {
        Ok(n) => n,
        Err(why) => {
            return Ok(refuse(StatusCode::BAD_REQUEST, &format!("not an Alertmanager webhook notification: {why}")))
        }
    };
    Ok(match runs.submit(notification) {
        Accepted::Started => answer(StatusCode::OK, true, "running"),
        Accepted::Queued => answer(StatusCode::OK, true, "queued behind the group's running command"),
        Accepted::Refused => {
            answer(StatusCode::SERVICE_UNAVAILABLE, false, "too many alert groups running, or stopping: send it again")
        }
    })
}
