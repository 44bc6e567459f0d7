// Authentication of control API calls: HMAC-SHA256 over method, path, timestamp and body,
// a timestamp window, and a memory of signatures already used so captures cannot be replayed.

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::error::CommandError;

/// Header carrying the request's Unix time in seconds.
pub const TIMESTAMP_HEADER: &str = "x-ebb-timestamp";
/// Header carrying the hex HMAC-SHA256 signature.
pub const SIGNATURE_HEADER: &str = "x-ebb-signature";
/// Most signatures remembered at once; a full memory refuses new calls rather than forget.
pub const MAX_REMEMBERED: usize = 4096;

type HmacSha256 = Hmac<Sha256>;

fn mac(key: &[u8], method: &str, path: &str, timestamp: &str, body: &[u8]) -> HmacSha256 {
    // Keys of any length are valid for HMAC; new_from_slice cannot fail for it.
    let mut mac = HmacSha256::new_from_slice(key).unwrap_or_else(|_| unreachable!("hmac takes any key length"));
    for part in [method.as_bytes(), b"\n", path.as_bytes(), b"\n", timestamp.as_bytes(), b"\n", body] {
        mac.update(part);
    }
    mac
}

/// The signature a client sends: hex HMAC-SHA256 of `METHOD\nPATH\nTIMESTAMP\nBODY`, where PATH
/// is the request's `:path` (with any query) and TIMESTAMP the `x-ebb-timestamp` value.
pub fn sign(key: &[u8], method: &str, path: &str, timestamp: u64, body: &[u8]) -> String {
    hex::encode(mac(key, method, path, &timestamp.to_string(), body).finalize().into_bytes())
}

/// Signatures seen within the window, shared by all workers of a proxy.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SeenSignatures {
    /// (signature, forget after ms)
    pub entries: Vec<(String, u64)>,
}

impl SeenSignatures {
    pub fn from_json(bytes: &[u8]) -> Self {
        serde_json::from_slice(bytes).unwrap_or_default()
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Records a signature; errors if it was used before or the memory is full.
    pub fn remember(&mut self, signature: &str, forget_after: u64, now: u64) -> Result<(), CommandError> {
        self.entries.retain(|(_, until)| *until > now);
        if self.entries.iter().any(|(s, _)| s == signature) {
            return Err(CommandError::Unauthorized("this signed request was already used".into()));
        }
        if self.entries.len() >= MAX_REMEMBERED {
            return Err(CommandError::Unauthorized("too many signed requests in the window; retry later".into()));
        }
        self.entries.push((signature.to_string(), forget_after));
        Ok(())
    }
}

/// A checked signature, to be remembered (see [`SeenSignatures::remember`]) before acting.
#[derive(Debug, PartialEq, Eq)]
pub struct Verified {
    pub signature: String,
    /// When the signature can be forgotten: its timestamp plus the window, in ms.
    pub forget_after: u64,
}

/// A control call as received: what the signature covers, and the two auth headers.
#[derive(Clone, Copy, Debug)]
pub struct Signed<'a> {
    pub method: &'a str,
    /// `:path`, with any query string.
    pub path: &'a str,
    pub timestamp: Option<&'a str>,
    pub signature: Option<&'a str>,
    pub body: &'a [u8],
}

/// Verifies a call's signature and timestamp (constant-time comparison). `now` and `window`
/// in milliseconds.
pub fn verify(key: &[u8], window: u64, now: u64, call: Signed<'_>) -> Result<Verified, CommandError> {
    let Signed { method, path, timestamp, signature, body } = call;
    let timestamp = timestamp.ok_or_else(|| CommandError::Unauthorized(format!("missing {TIMESTAMP_HEADER}")))?;
    let signature = signature.ok_or_else(|| CommandError::Unauthorized(format!("missing {SIGNATURE_HEADER}")))?;
    let seconds: u64 = timestamp
        .trim()
        .parse()
        .map_err(|_| CommandError::Unauthorized(format!("{TIMESTAMP_HEADER} must be Unix seconds")))?;
    let at = seconds.saturating_mul(1000);
    if at.abs_diff(now) > window {
        return Err(CommandError::Unauthorized(format!(
            "{TIMESTAMP_HEADER} is {}s away from the proxy's clock (window {}s)",
            at.abs_diff(now) / 1000,
            window / 1000
        )));
    }
    let raw = hex::decode(signature.trim())
        .map_err(|_| CommandError::Unauthorized(format!("{SIGNATURE_HEADER} must be hex")))?;
    mac(key, method, path, timestamp, body)
        .verify_slice(&raw)
        .map_err(|_| CommandError::Unauthorized("bad signature".into()))?;
    Ok(Verified { signature: signature.trim().to_ascii_lowercase(), forget_after: at.saturating_add(window) })
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"0123456789abcdef";

    #[test]
    fn a_signed_request_verifies_once() {
        let sig = sign(KEY, "POST", "/.ebb/v1/faults", 1_000, b"{}");
        let call = Signed {
            method: "POST",
            path: "/.ebb/v1/faults",
            timestamp: Some("1000"),
            signature: Some(&sig),
            body: b"{}",
        };
        let ok = verify(KEY, 300_000, 1_000_000, call).unwrap();
        let mut seen = SeenSignatures::default();
        seen.remember(&ok.signature, ok.forget_after, 1_000_000).unwrap();
        assert_eq!(seen.remember(&ok.signature, ok.forget_after, 1_000_001).unwrap_err().status(), 401);
    }

    #[test]
    fn any_change_or_staleness_is_refused() {
        let sig = sign(KEY, "POST", "/.ebb/v1/faults", 1_000, b"{}");
        let check = |m: &str, p: &str, ts: Option<&str>, s: Option<&str>, body: &[u8], now: u64| {
            let call = Signed { method: m, path: p, timestamp: ts, signature: s, body };
            verify(KEY, 300_000, now, call).unwrap_err().to_string()
        };
        assert!(
            check("DELETE", "/.ebb/v1/faults", Some("1000"), Some(&sig), b"{}", 1_000_000).contains("bad signature")
        );
        assert!(check("POST", "/.ebb/v1/faults", Some("1000"), Some(&sig), b"{ }", 1_000_000).contains("bad signature"));
        assert!(check("POST", "/.ebb/v1/faults", Some("1001"), Some(&sig), b"{}", 1_000_000).contains("bad signature"));
        assert!(check("POST", "/.ebb/v1/faults", Some("1000"), Some(&sig), b"{}", 1_301_000).contains("away from"));
        assert!(
            check("POST", "/.ebb/v1/faults", None, Some(&sig), b"{}", 1_000_000).contains("missing x-ebb-timestamp")
        );
        assert!(
            check("POST", "/.ebb/v1/faults", Some("1000"), None, b"{}", 1_000_000).contains("missing x-ebb-signature")
        );
        assert!(check("POST", "/.ebb/v1/faults", Some("1000"), Some("zz"), b"{}", 1_000_000).contains("hex"));
        let other = sign(b"another-key-0000", "POST", "/.ebb/v1/faults", 1_000, b"{}");
        assert!(
            check("POST", "/.ebb/v1/faults", Some("1000"), Some(&other), b"{}", 1_000_000).contains("bad signature")
        );
    }
}
