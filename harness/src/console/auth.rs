// Who may use the console: a random token in the URL printed at start (every request carries it;
// Halt only in a header), the Host the server was reached by, and for Halt the page's own Origin.

use hyper::header::{HeaderMap, HOST, ORIGIN};
use std::net::SocketAddr;

/// The header that carries the token on state-changing requests (a cookie could be sent by
/// another tab; a custom header cannot be, without this server's CORS consent, which it never gives).
pub const TOKEN_HEADER: &str = "x-ebb-token";

/// 32 random bytes from the operating system, as hex.
pub fn new_token() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    Ok(hex::encode(bytes))
}

/// Compares without stopping at the first difference, so timing tells nothing of the token.
pub fn same_token(given: &str, token: &str) -> bool {
    let (a, b) = (given.as_bytes(), token.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The `token` query parameter of a request's query string.
pub fn query_token(query: Option<&str>) -> Option<&str> {
    query?.split('&').find_map(|pair| pair.strip_prefix("token="))
}

/// The `Host` values this server answers to: its address, and on loopback the names of loopback.
/// Another name on a loopback server is a DNS-rebinding page: refused.
pub fn allowed_hosts(addr: SocketAddr, any_host: bool) -> Option<Vec<String>> {
    if any_host {
        return None;
    }
    let port = addr.port();
    let mut hosts = vec![addr.to_string()];
    if addr.ip().is_loopback() {
        for name in ["localhost", "127.0.0.1", "[::1]"] {
            let host = format!("{name}:{port}");
            if !hosts.contains(&host) {
                hosts.push(host);
            }
        }
    }
    Some(hosts)
}

/// Why a request is refused before its route is looked at.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// 421: the Host is not this server's.
    Host,
    /// 403: an Origin other than the page's own.
    Origin,
}

/// Checks Host and Origin: `Origin`, when present, must be `http://` and the request's own Host;
/// `origin_required` (state-changing requests) refuses a request without one too.
pub fn check_origin(headers: &HeaderMap, allowed: Option<&[String]>, origin_required: bool) -> Result<(), Refusal> {
    let host = headers.get(HOST).and_then(|h| h.to_str().ok()).unwrap_or("");
    if let Some(allowed) = allowed {
        if !allowed.iter().any(|a| a.eq_ignore_ascii_case(host)) {
            return Err(Refusal::Host);
        }
    }
    match headers.get(ORIGIN).map(|o| o.to_str().unwrap_or("")) {
        Some(origin) if host.is_empty() || !origin.eq_ignore_ascii_case(&format!("http://{host}")) => {
            Err(Refusal::Origin)
        }
        None if origin_required => Err(Refusal::Origin),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    fn headers(host: &str, origin: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(HOST, HeaderValue::from_str(host).expect("header"));
        if let Some(o) = origin {
            h.insert(ORIGIN, HeaderValue::from_str(o).expect("header"));
        }
        h
    }

    #[test]
    fn tokens_are_random_and_compared_whole() {
        let (a, b) = (new_token().expect("os randomness"), new_token().expect("os randomness"));
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
        assert!(same_token(&a, &a));
        assert!(!same_token(&a[..63], &a));
        assert!(!same_token(&b, &a));
        assert_eq!(query_token(Some("x=1&token=abc")), Some("abc"));
        assert_eq!(query_token(Some("tokens=abc")), None);
        assert_eq!(query_token(None), None);
    }

    #[test]
    fn only_the_pages_own_origin_and_host_pass() {
        let addr: SocketAddr = "127.0.0.1:8123".parse().expect("address");
        let allowed = allowed_hosts(addr, false).expect("loopback names");
        let ok = |host: &str, origin: Option<&str>, required: bool| {
            check_origin(&headers(host, origin), Some(&allowed), required)
        };
        assert_eq!(ok("127.0.0.1:8123", Some("http://127.0.0.1:8123"), true), Ok(()));
        assert_eq!(ok("localhost:8123", Some("http://localhost:8123"), true), Ok(()));
        assert_eq!(ok("localhost:8123", Some("http://127.0.0.1:8123"), true), Err(Refusal::Origin), "another origin");
        assert_eq!(ok("127.0.0.1:8123", Some("https://evil.example"), false), Err(Refusal::Origin));
        assert_eq!(ok("127.0.0.1:8123", Some("null"), false), Err(Refusal::Origin));
        assert_eq!(ok("127.0.0.1:8123", None, true), Err(Refusal::Origin), "Halt needs an Origin");
        assert_eq!(ok("127.0.0.1:8123", None, false), Ok(()), "a page load has none");
        assert_eq!(ok("evil.example:8123", None, false), Err(Refusal::Host), "DNS rebinding");
    }
}
