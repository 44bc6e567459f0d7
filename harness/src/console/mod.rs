// The live console's server for `ebb gameday --console`: serves the page built by `make console`,
// streams live events (GET /events) and takes Halt (POST /halt), on a thread and runtime of its own.
//
// It lives in the `ebb` crate rather than in ebb-console because that crate is built for the browser
// only (wasm32-unknown-unknown), while this side needs hyper, tokio and the operating system.

mod auth;
mod hub;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use ebb_chart::live::LiveEvent;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};

/// The events the console publishes (ebb-chart's wire format).
pub use ebb_chart::live;

pub use auth::TOKEN_HEADER;
use auth::{allowed_hosts, check_origin, query_token, same_token, Refusal};
use hub::Hub;

/// Where `make console` puts the page; `EBB_CONSOLE_DIR` overrides it.
pub const ASSETS_ENV: &str = "EBB_CONSOLE_DIR";
const ASSETS_DIR: &str = "dist/console";

/// The files of the page, their content types, and whether they are the page itself (the token
/// is written into it so that its scripts can send it).
const ASSETS: [(&str, &str); 5] = [
    ("index.html", "text/html; charset=utf-8"),
    ("boot.js", "text/javascript; charset=utf-8"),
    ("style.css", "text/css; charset=utf-8"),
    ("ebb_console.js", "text/javascript; charset=utf-8"),
    ("ebb_console_bg.wasm", "application/wasm"),
];

/// The page may run its own scripts and WebAssembly, talk to this server, and nothing else.
const CSP: &str = "default-src 'none'; script-src 'self' 'wasm-unsafe-eval'; connect-src 'self'; style-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error("the console would listen on {addr}, which is not a loopback address: anyone who can reach it could watch the game day (the token still guards it). Use 127.0.0.1 or [::1], or allow it explicitly with --console-allow-remote")]
    NotLoopback { addr: SocketAddr },
    #[error("the console's page is not built: {missing} is missing (looked in {looked}). Run `make console` to build it, or point {ASSETS_ENV} at a built dist/console")]
    AssetsMissing { missing: String, looked: String },
    #[error("the console cannot read {}: {source}", path.display())]
    AssetUnreadable { path: PathBuf, source: std::io::Error },
    #[error("the console cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("the console cannot make its token: the operating system gave no randomness ({0})")]
    Random(String),
    #[error("the console cannot start its server thread: {0}")]
    Thread(std::io::Error),
}

/// How the console starts, beyond its address.
#[derive(Clone, Debug, Default)]
pub struct ConsoleOptions {
    /// The built page (`make console`'s dist/console); found by `find_assets` when `None`.
    pub assets: Option<PathBuf>,
    /// Listen on an address other than loopback (`--console-allow-remote`).
    pub allow_remote: bool,
}

/// The page's files, read once at start: requests never touch the file system.
struct Assets {
    files: Vec<(&'static str, &'static str, Bytes)>,
}

impl Assets {
    fn load(dir: &Path) -> Result<Assets, ConsoleError> {
        let mut files = Vec::new();
        for (name, content_type) in ASSETS {
            let path = dir.join(name);
            let bytes = std::fs::read(&path).map_err(|source| {
                if source.kind() == std::io::ErrorKind::NotFound {
                    ConsoleError::AssetsMissing {
                        missing: path.display().to_string(),
                        looked: dir.display().to_string(),
                    }
                } else {
                    ConsoleError::AssetUnreadable { path: path.clone(), source }
                }
            })?;
            files.push((name, content_type, Bytes::from(bytes)));
        }
        Ok(Assets { files })
    }

    fn get(&self, name: &str) -> Option<(&'static str, &Bytes)> {
        self.files.iter().find(|(n, _, _)| *n == name).map(|(_, t, b)| (*t, b))
    }
}

/// The built page: `$EBB_CONSOLE_DIR`, else dist/console under the working directory, else the
/// one of the checkout the `ebb` binary was built in (target/*/ebb → dist/console).
pub fn find_assets() -> Result<PathBuf, ConsoleError> {
    if let Some(dir) = std::env::var_os(ASSETS_ENV) {
        return Ok(PathBuf::from(dir));
    }
    let mut candidates = vec![PathBuf::from(ASSETS_DIR)];
    if let Some(root) = std::env::current_exe().ok().and_then(|exe| exe.ancestors().nth(3).map(Path::to_path_buf)) {
        candidates.push(root.join(ASSETS_DIR));
    }
    if let Some(found) = candidates.iter().find(|dir| dir.join("index.html").is_file()) {
        return Ok(found.clone());
    }
    Err(ConsoleError::AssetsMissing {
        missing: "index.html".into(),
        looked: candidates.iter().map(|c| c.display().to_string()).collect::<Vec<_>>().join(", "),
    })
}

/// What every request handler shares.
struct Shared {
    token: String,
    hosts: Option<Vec<String>>,
    assets: Assets,
    hub: Arc<Hub>,
    halt: Arc<AtomicBool>,
}

/// The running console. Dropping it (or `close`) stops the server and closes every stream.
pub struct Console {
    url: String,
    addr: SocketAddr,
    hub: Arc<Hub>,
    server: crate::loopback::Server,
}

impl Console {
    /// Serves the console on `addr` (loopback only; port 0 picks one). Halt sets `halt`.
    pub fn start(addr: SocketAddr, halt: Arc<AtomicBool>) -> Result<Console, ConsoleError> {
        Console::start_with(addr, halt, ConsoleOptions::default())
    }

    pub fn start_with(
        addr: SocketAddr,
        halt: Arc<AtomicBool>,
        options: ConsoleOptions,
    ) -> Result<Console, ConsoleError> {
        if !addr.ip().is_loopback() && !options.allow_remote {
            return Err(ConsoleError::NotLoopback { addr });
        }
        let dir = match options.assets {
            Some(dir) => dir,
            None => find_assets()?,
        };
        let assets = Assets::load(&dir)?;
        let token = auth::new_token().map_err(|e| ConsoleError::Random(e.to_string()))?;
        let listener = std::net::TcpListener::bind(addr).map_err(|source| ConsoleError::Bind { addr, source })?;
        let bound = listener.local_addr().map_err(|source| ConsoleError::Bind { addr, source })?;
        listener.set_nonblocking(true).map_err(|source| ConsoleError::Bind { addr, source })?;
        let hub = Arc::new(Hub::default());
        // Behind an explicitly allowed non-loopback address the name it is reached by is not known.
        let any_host = !bound.ip().is_loopback();
        let shared = Arc::new(Shared {
            token: token.clone(),
            hosts: allowed_hosts(bound, any_host),
            assets,
            hub: hub.clone(),
            halt,
        });
        // Streams still open are closed when the server stops.
        let server = crate::loopback::Server::spawn(listener, "console", "ebb-console", move |request| {
            handle(request, shared.clone())
        })
        .map_err(ConsoleError::Thread)?;
        Ok(Console { url: format!("http://{bound}/?token={token}"), addr: bound, hub, server })
    }

    /// The page's address with its token: the one thing to print and open.
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Sends an event to every open page and keeps it for pages that open later. Never blocks
    /// on a browser: one that falls behind is disconnected and, reconnecting, sent the history.
    pub fn publish(&self, event: &LiveEvent) {
        self.hub.publish(event);
    }

    /// Stops the server and closes every stream.
    pub fn close(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.server.stop();
    }
}

impl Drop for Console {
    fn drop(&mut self) {
        self.shutdown();
    }
}

type Body = UnsyncBoxBody<Bytes, Infallible>;

fn response(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()).boxed_unsync());
    *r.status_mut() = status;
    let h = r.headers_mut();
    if let Ok(v) = HeaderValue::from_str(content_type) {
        h.insert(CONTENT_TYPE, v);
    }
    security_headers(h);
    r
}

fn security_headers(h: &mut hyper::HeaderMap) {
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
}

fn refusal(status: StatusCode, error: &str) -> Response<Body> {
    let body = serde_json::json!({ "ok": false, "error": error }).to_string();
    response(status, "application/json", body)
}

async fn handle(request: Request<Incoming>, shared: Arc<Shared>) -> Result<Response<Body>, Infallible> {
    let state_changing = request.method() != Method::GET;
    if let Err(refused) = check_origin(request.headers(), shared.hosts.as_deref(), state_changing) {
        return Ok(match refused {
            Refusal::Host => {
                refusal(StatusCode::MISDIRECTED_REQUEST, "this console is reached only by its own address")
            }
            Refusal::Origin => refusal(StatusCode::FORBIDDEN, "a request from another page's origin is refused"),
        });
    }
    // The token: in the URL for page loads and the event stream, only in a header for Halt.
    let given = if state_changing {
        request.headers().get(TOKEN_HEADER).and_then(|v| v.to_str().ok())
    } else {
        query_token(request.uri().query())
    };
    if !given.is_some_and(|g| same_token(g, &shared.token)) {
        let what = if state_changing { "the X-Ebb-Token header" } else { "the URL's token" };
        return Ok(refusal(
            StatusCode::UNAUTHORIZED,
            &format!("{what} is missing or wrong: open the URL ebb gameday printed"),
        ));
    }
    let path = request.uri().path();
    Ok(match (request.method(), path) {
        (&Method::POST, "/halt") => {
            shared.halt.store(true, Ordering::SeqCst);
            log::warn!("console: Halt pressed");
            shared.hub.publish(&LiveEvent::Note {
                t_s: shared.hub.latest_s(),
                text: "Halt pressed in the console: ebb gameday sends the kill switch to every target".into(),
            });
            response(StatusCode::ACCEPTED, "application/json", r#"{"ok":true,"halt":true}"#)
        }
        (&Method::GET, "/events") => match shared.hub.subscribe() {
            Some(stream) => {
                let mut r = Response::new(stream.boxed_unsync());
                r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
                security_headers(r.headers_mut());
                r
            }
            None => refusal(StatusCode::SERVICE_UNAVAILABLE, "too many consoles open"),
        },
        (&Method::GET, "/" | "/index.html") => match shared.assets.get("index.html") {
            Some((content_type, page)) => {
                let page = String::from_utf8_lossy(page).replace("{{token}}", &shared.token);
                let mut r = response(StatusCode::OK, content_type, page);
                r.headers_mut().insert("content-security-policy", HeaderValue::from_static(CSP));
                r
            }
            None => refusal(StatusCode::NOT_FOUND, "no page"),
        },
        (&Method::GET, _) => match shared.assets.get(path.trim_start_matches('/')) {
            Some((content_type, bytes)) => response(StatusCode::OK, content_type, bytes.clone()),
            None => refusal(StatusCode::NOT_FOUND, "no such file"),
        },
        _ => refusal(StatusCode::METHOD_NOT_ALLOWED, "the console takes GET, and POST /halt"),
    })
}
