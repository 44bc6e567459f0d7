// The proxies a game day drives: each a named control URL, called with signed requests exactly
// as scripts/ebb-ctl signs them (scheme v2, bound to the URL's host:port), and read back through
// `/.ebb/v1/state` to confirm that what was asked took effect.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ebb_engine::auth::{sign, SIGNATURE_HEADER, TIMESTAMP_HEADER};
use ebb_engine::control::Response;

use crate::control::COMMAND_HEADER;
use crate::http::{self, HttpError, Url};

/// The control API's prefix (deploy/envoy/envoy.yaml, the filter's default).
pub const PREFIX: &str = "/.ebb/v1/";
/// Longest a target may take to answer one call.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// One `--target NAME=CONTROL_URL`.
#[derive(Clone, Debug)]
pub struct Target {
    pub name: String,
    pub url: Url,
}

/// Why a call to a target failed.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("target {target} ({url}) cannot be reached: {source}")]
    Unreachable { target: String, url: String, source: HttpError },
    #[error("target {target} refused the control key (401): {error}; check --key-file, EBB_KEY_FILE or EBB_KEY")]
    WrongKey { target: String, error: String },
    #[error("target {target}: the filter is not answering its control API (HTTP {status}, not ebb's JSON): bypassed, disarmed, or not the control listener")]
    NotAnswering { target: String, status: u16 },
    #[error("target {target} refused {what} (HTTP {status}): {error}")]
    Refused { target: String, what: String, status: u16, error: String },
}

impl Target {
    /// `NAME=http://HOST:PORT`.
    pub fn parse(text: &str) -> Result<Target, String> {
        let (name, url) = text.split_once('=').ok_or_else(|| format!("expected NAME=CONTROL_URL, got {text:?}"))?;
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
            return Err(format!("target name {name:?} must be letters, digits, '-', '_' or '.'"));
        }
        let url = Url::parse(url).map_err(|e| e.to_string())?;
        if !url.base_path.is_empty() {
            return Err(format!("{}: a control URL has no path (the prefix is {PREFIX})", url.show()));
        }
        Ok(Target { name: name.to_string(), url })
    }
}

/// Signs and sends control calls with one key.
pub struct Signer {
    key: String,
    /// Makes every call's path unique: the filter refuses a signature it has seen (replay
    /// protection), and two identical calls within a second would otherwise share one.
    run: u64,
    nonce: AtomicU64,
}

impl Signer {
    /// `run` distinguishes this run's calls from another run's (the start time will do).
    pub fn new(key: String, run: u64) -> Signer {
        Signer { key, run, nonce: AtomicU64::new(0) }
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    /// One signed call (`route` after the prefix, `command` the fault JSON for an add) at
    /// Unix second `now_s`; the filter's JSON answer, or why there is none.
    pub fn call(
        &self,
        target: &Target,
        method: &str,
        route: &str,
        command: Option<&str>,
        now_s: u64,
    ) -> Result<Response, TargetError> {
        let n = self.nonce.fetch_add(1, Ordering::Relaxed);
        let path = format!("{PREFIX}{route}?gameday={:x}-{n}", self.run);
        let body = command.unwrap_or("");
        let signature = sign(self.key.as_bytes(), method, &target.url.authority, &path, now_s, body.as_bytes());
        let mut headers =
            vec![(TIMESTAMP_HEADER.to_string(), now_s.to_string()), (SIGNATURE_HEADER.to_string(), signature)];
        if let Some(command) = command {
            headers.push((COMMAND_HEADER.to_string(), command.to_string()));
        }
        let answer = http::call(&target.url, method, &path, &headers, b"", CALL_TIMEOUT).map_err(|source| {
            TargetError::Unreachable { target: target.name.clone(), url: target.url.show(), source }
        })?;
        let Ok(response) = serde_json::from_slice::<Response>(&answer.body) else {
            return Err(TargetError::NotAnswering { target: target.name.clone(), status: answer.status });
        };
        match answer.status {
            200..=299 => Ok(response),
            401 => Err(TargetError::WrongKey {
                target: target.name.clone(),
                error: response.error.unwrap_or_else(|| "bad signature".into()),
            }),
            status => Err(TargetError::Refused {
                target: target.name.clone(),
                what: format!("{method} {PREFIX}{route}"),
                status,
                error: response.error.unwrap_or_default(),
            }),
        }
    }

    /// `GET state`: faults, pools and the proxy's clock.
    pub fn state(&self, target: &Target, now_s: u64) -> Result<Response, TargetError> {
        self.call(target, "GET", "state", None, now_s)
    }
}
