// Authentication of control API calls: HMAC-SHA256 over what the call does and where it was sent
// (scheme v2), a timestamp window, and a memory of signatures already used by single-use changes.

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::CommandError;

/// Header carrying the request's Unix time in seconds.
pub const TIMESTAMP_HEADER: &str = "x-ebb-timestamp";
/// Header carrying the signature: `v2=HEX` (or bare HEX, scheme v1, where allowed).
pub const SIGNATURE_HEADER: &str = "x-ebb-signature";
/// Most signatures remembered at once; a full memory refuses new single-use changes rather
/// than forget one. The kill switch never consults it (see `control::Mutation::single_use`).
pub const MAX_REMEMBERED: usize = 4096;
/// First line of every v2 string to sign: a signature of another scheme or tool never verifies.
pub const V2_CONTEXT: &str = "ebb-v2";
/// How a v2 signature starts in [`SIGNATURE_HEADER`].
pub const V2_TAG: &str = "v2=";

type HmacSha256 = Hmac<Sha256>;

fn keyed(key: &[u8]) -> HmacSha256 {
    // Keys of any length are valid for HMAC; new_from_slice cannot fail for it.
    HmacSha256::new_from_slice(key).unwrap_or_else(|_| unreachable!("hmac takes any key length"))
}

/// The exact bytes a v2 signature covers, one field a line:
///
/// ```text
/// ebb-v2
/// METHOD          as sent (GET, POST, DELETE)
/// AUTHORITY       the :authority (Host) the caller addressed, lower-cased, port kept
/// PATH            the :path as sent, query included
/// TIMESTAMP       the x-ebb-timestamp value (Unix seconds)
/// SHA256(COMMAND) lower-case hex SHA-256 of the x-ebb-command value (of "" when there is none)
/// ```
///
/// No field can hold a line break (HTTP forbids them in header values), so the lines are
/// unambiguous; the command is hashed so that its bytes, whatever they are, end the string.
pub fn string_to_sign_v2(method: &str, authority: &str, path: &str, timestamp: &str, command: &[u8]) -> String {
    format!(
        "{V2_CONTEXT}\n{method}\n{}\n{path}\n{timestamp}\n{}",
        authority.trim().to_ascii_lowercase(),
        hex::encode(Sha256::digest(command))
    )
}

fn mac_v2(key: &[u8], method: &str, authority: &str, path: &str, timestamp: &str, command: &[u8]) -> HmacSha256 {
    let mut mac = keyed(key);
    mac.update(string_to_sign_v2(method, authority, path, timestamp, command).as_bytes());
    mac
}

fn mac_v1(key: &[u8], method: &str, path: &str, timestamp: &str, body: &[u8]) -> HmacSha256 {
    let mut mac = keyed(key);
    for part in [method.as_bytes(), b"\n", path.as_bytes(), b"\n", timestamp.as_bytes(), b"\n", body] {
        mac.update(part);
    }
    mac
}

/// The `x-ebb-signature` value of a v2 call: `v2=` and the hex HMAC-SHA256, keyed with
/// `control.key`, of [`string_to_sign_v2`].
pub fn sign(key: &[u8], method: &str, authority: &str, path: &str, timestamp: u64, command: &[u8]) -> String {
    let mac = mac_v2(key, method, authority, path, &timestamp.to_string(), command);
    format!("{V2_TAG}{}", hex::encode(mac.finalize().into_bytes()))
}

/// The legacy v1 signature (bare hex HMAC-SHA256 of `METHOD\nPATH\nTIMESTAMP\nBODY`): valid at
/// every proxy sharing the key. Accepted only with `control.accept_v1_signatures: true`.
pub fn sign_v1(key: &[u8], method: &str, path: &str, timestamp: u64, body: &[u8]) -> String {
    hex::encode(mac_v1(key, method, path, &timestamp.to_string(), body).finalize().into_bytes())
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
    /// The signature as remembered: `v2=hex` or `v1=hex`, lower-case.
    pub signature: String,
    /// When the signature can be forgotten: its timestamp plus the window, in ms.
    pub forget_after: u64,
}

/// A control call as received: what the signature covers, and the two auth headers.
#[derive(Clone, Copy, Debug)]
pub struct Signed<'a> {
    pub method: &'a str,
    /// `:authority` as received (Host in HTTP/1.1).
    pub authority: &'a str,
    /// `:path`, with any query string.
    pub path: &'a str,
    pub timestamp: Option<&'a str>,
    pub signature: Option<&'a str>,
    /// The command (`x-ebb-command`), empty when there is none.
    pub body: &'a [u8],
}

/// Verifies a call's signature and timestamp (constant-time comparison). `now` and `window`
/// in milliseconds. Bare-hex (v1) signatures pass only when `accept_v1` is set.
pub fn verify(key: &[u8], window: u64, now: u64, accept_v1: bool, call: Signed<'_>) -> Result<Verified, CommandError> {
    let Signed { method, authority, path, timestamp, signature, body } = call;
    // The string to sign separates fields with newlines: a field holding one could make two
    // different calls sign alike (found by fuzz/control_call). Real HTTP never carries them here.
    if [method, authority, path].iter().any(|f| f.bytes().any(|b| b.is_ascii_control())) {
        return Err(CommandError::Unauthorized("control characters in the method, authority or path".into()));
    }
    let timestamp = timestamp.ok_or_else(|| CommandError::Unauthorized(format!("missing {TIMESTAMP_HEADER}")))?;
    let signature = signature.ok_or_else(|| CommandError::Unauthorized(format!("missing {SIGNATURE_HEADER}")))?;
    let digits = timestamp.trim();
    let seconds: u64 = digits
        .parse()
        .ok()
        .filter(|_| !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(|| CommandError::Unauthorized(format!("{TIMESTAMP_HEADER} must be Unix seconds")))?;
    let at = seconds.saturating_mul(1000);
    if at.abs_diff(now) > window {
        return Err(CommandError::Unauthorized(format!(
            "{TIMESTAMP_HEADER} is {}s away from the proxy's clock (window {}s)",
            at.abs_diff(now) / 1000,
            window / 1000
        )));
    }
    let signature = signature.trim();
    let (scheme, hex_part) = match signature.split_once('=') {
        Some((tag, rest)) if tag.eq_ignore_ascii_case("v2") => ("v2", rest),
        Some(_) => {
            return Err(CommandError::Unauthorized(format!(
                "{SIGNATURE_HEADER} names an unknown scheme; send {V2_TAG}HEX (docs/configuration.md, Signing)"
            )))
        }
        None if accept_v1 => ("v1", signature),
        None => {
            return Err(CommandError::Unauthorized(format!(
                "v1 signature refused: sign with scheme v2 ({SIGNATURE_HEADER}: {V2_TAG}HEX, covering the authority), \
                 or set control.accept_v1_signatures"
            )))
        }
    };
    let raw =
        hex::decode(hex_part).map_err(|_| CommandError::Unauthorized(format!("{SIGNATURE_HEADER} must be hex")))?;
    let mac = if scheme == "v2" {
        mac_v2(key, method, authority, path, digits, body)
    } else {
        mac_v1(key, method, path, timestamp, body)
    };
    mac.verify_slice(&raw).map_err(|_| CommandError::Unauthorized("bad signature".into()))?;
    Ok(Verified {
        signature: format!("{scheme}={}", hex_part.to_ascii_lowercase()),
        forget_after: at.saturating_add(window),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";
    const HOST: &str = "ebb-control:9902";

    fn signed<'a>(
        m: &'a str,
        a: &'a str,
        p: &'a str,
        ts: Option<&'a str>,
        s: Option<&'a str>,
        b: &'a [u8],
    ) -> Signed<'a> {
        Signed { method: m, authority: a, path: p, timestamp: ts, signature: s, body: b }
    }

    #[test]
    fn fields_with_newlines_never_verify_so_none_can_stand_in_for_another() {
        // Found by fuzz/control_call: method "\n\n\n" at authority "\n" signs as at authority "".
        let sig = sign(KEY, "\n\n\n", "\n", "", 0, b"");
        let at =
            |authority| verify(KEY, 120_000, 0, false, signed("\n\n\n", authority, "", Some("0"), Some(&sig), b""));
        assert!(at("\n").is_err());
        assert!(at("").is_err());
    }

    #[test]
    fn a_signed_request_verifies_once() {
        let sig = sign(KEY, "POST", HOST, "/.ebb/v1/faults", 1_000, b"{}");
        assert!(sig.starts_with("v2=") && sig.len() == 3 + 64, "{sig}");
        let ok = verify(
            KEY,
            300_000,
            1_000_000,
            false,
            signed("POST", HOST, "/.ebb/v1/faults", Some("1000"), Some(&sig), b"{}"),
        )
        .unwrap();
        let mut seen = SeenSignatures::default();
        seen.remember(&ok.signature, ok.forget_after, 1_000_000).unwrap();
        assert_eq!(seen.remember(&ok.signature, ok.forget_after, 1_000_001).unwrap_err().status(), 401);
    }

    #[test]
    fn the_string_to_sign_is_the_documented_one() {
        let text = string_to_sign_v2("POST", " Proxy-A.Example:9902 ", "/.ebb/v1/faults?n=1", "1700000000", b"{}");
        assert_eq!(
            text,
            "ebb-v2\nPOST\nproxy-a.example:9902\n/.ebb/v1/faults?n=1\n1700000000\n\
             44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
        );
        // The worked example of docs/configuration.md, "Signing".
        assert_eq!(
            sign(KEY, "POST", "Proxy-A.Example:9902", "/.ebb/v1/faults?n=1", 1_700_000_000, b"{}"),
            "v2=05aea3b04e53572e8948e82358b0f9640027a83e7ffecf5d76a38839c0e21425"
        );
    }

    #[test]
    fn any_change_or_staleness_is_refused() {
        let sig = sign(KEY, "POST", HOST, "/.ebb/v1/faults", 1_000, b"{}");
        let check = |m: &str, a: &str, p: &str, ts: Option<&str>, s: Option<&str>, body: &[u8], now: u64| {
            verify(KEY, 300_000, now, false, signed(m, a, p, ts, s, body)).unwrap_err().to_string()
        };
        let p = "/.ebb/v1/faults";
        assert!(check("DELETE", HOST, p, Some("1000"), Some(&sig), b"{}", 1_000_000).contains("bad signature"));
        assert!(check("POST", "proxy-b:9902", p, Some("1000"), Some(&sig), b"{}", 1_000_000).contains("bad signature"));
        assert!(check("POST", HOST, p, Some("1000"), Some(&sig), b"{ }", 1_000_000).contains("bad signature"));
        assert!(check("POST", HOST, p, Some("1001"), Some(&sig), b"{}", 1_000_000).contains("bad signature"));
        assert!(check("POST", HOST, p, Some("1000"), Some(&sig), b"{}", 1_301_000).contains("away from"));
        assert!(check("POST", HOST, p, Some("+1000"), Some(&sig), b"{}", 1_000_000).contains("Unix seconds"));
        assert!(check("POST", HOST, p, None, Some(&sig), b"{}", 1_000_000).contains("missing x-ebb-timestamp"));
        assert!(check("POST", HOST, p, Some("1000"), None, b"{}", 1_000_000).contains("missing x-ebb-signature"));
        assert!(check("POST", HOST, p, Some("1000"), Some("v2=zz"), b"{}", 1_000_000).contains("hex"));
        assert!(check("POST", HOST, p, Some("1000"), Some("v3=00"), b"{}", 1_000_000).contains("unknown scheme"));
        let other = sign(b"another-key-0000", "POST", HOST, p, 1_000, b"{}");
        assert!(check("POST", HOST, p, Some("1000"), Some(&other), b"{}", 1_000_000).contains("bad signature"));
        // The authority is compared without regard to ASCII case, as host names are.
        let upper = signed("POST", "EBB-Control:9902", p, Some("1000"), Some(&sig), b"{}");
        assert!(verify(KEY, 300_000, 1_000_000, false, upper).is_ok());
    }

    #[test]
    fn v1_needs_the_switch() {
        let v1 = sign_v1(KEY, "DELETE", "/.ebb/v1/faults", 1_000, b"");
        let call = signed("DELETE", HOST, "/.ebb/v1/faults", Some("1000"), Some(&v1), b"");
        let refused = verify(KEY, 300_000, 1_000_000, false, call).unwrap_err().to_string();
        assert!(refused.contains("v1 signature refused") && refused.contains("accept_v1_signatures"), "{refused}");
        let ok = verify(KEY, 300_000, 1_000_000, true, call).unwrap();
        assert!(ok.signature.starts_with("v1="));
        // A v1 signature is not a v2 one with the tag added.
        let tagged = format!("v2={v1}");
        let call = signed("DELETE", HOST, "/.ebb/v1/faults", Some("1000"), Some(&tagged), b"");
        assert!(verify(KEY, 300_000, 1_000_000, true, call).is_err());
    }
}
