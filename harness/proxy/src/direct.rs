// Envoy's connection manager and router for a listener with no Wasm filter, straight on hyper's
// request head: the upstream request ebb-host's ConnectionManager gives, without the host's map.

use bytes::{Bytes, BytesMut};
use ebb_host::{drops_request_header, ConnectionManager};
use hyper::header::{HeaderName, HeaderValue, HOST};
use hyper::http::request::Parts;
use hyper::{HeaderMap, Method, Request, Uri};

use crate::body::ProxyBody;

/// The names the connection manager and router add, as constants: parsing them would copy each
/// into an allocation of its own.
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub const X_EXPECTED_TIMEOUT: HeaderName = HeaderName::from_static("x-envoy-expected-rq-timeout-ms");

/// A request as the connection manager leaves it, for a route with no Wasm filter.
pub struct Head {
    method: Method,
    /// The normalised path (and query).
    path: String,
    /// `:authority`: the URI's authority, else the Host header.
    authority: HeaderValue,
    /// The client's Host header when the URI has an authority of its own (absolute form): the
    /// connection manager keeps it as an ordinary header then.
    host: Option<HeaderValue>,
    /// The headers the upstream gets but the router's timeout: Host first, then the client's
    /// in its order, then the added ones. Built once, in the order the router sends them.
    headers: HeaderMap,
    /// Headers the connection manager keeps but the router does not send: an upgrade's
    /// `connection`, and `content-length` where hyper sets the length (or trailers follow).
    connection: Option<HeaderValue>,
    content_length: Option<HeaderValue>,
}

/// Why the connection manager refuses a request (no filter is called): status and body.
#[derive(Debug, PartialEq, Eq)]
pub struct Refused(pub u16, pub &'static str);

impl Head {
    /// The connection manager's decoding (`ConnectionManager::decode_request`) of request `n`
    /// whose path normalised is `path`; `whole` when the request has no body to stream (its
    /// length is then hyper's to set). Every value is copied into one buffer: the client's head
    /// shares hyper's read buffer, which can then be reused for the connection's next request.
    pub fn decode(cm: &ConnectionManager, n: u64, parts: &Parts, path: String, whole: bool) -> Result<Head, Refused> {
        let given = &parts.headers;
        let uri_authority = parts.uri.authority().map(|a| a.as_str().as_bytes());
        let authority = match uri_authority {
            Some(a) => a,
            None => given.get(HOST).map_or(&b""[..], HeaderValue::as_bytes),
        };
        if authority.is_empty() {
            return Err(Refused(400, ""));
        }
        if path.is_empty() && parts.method != Method::CONNECT {
            return Err(Refused(404, ""));
        }
        let connection_upgrade = given
            .get(hyper::header::CONNECTION)
            .is_some_and(|c| c.as_bytes().to_ascii_lowercase().windows(7).any(|w| w == b"upgrade"));
        let upgrade = given.contains_key(hyper::header::UPGRADE) && connection_upgrade;
        let size = authority.len() + given.iter().map(|(_, v)| v.len()).sum::<usize>();
        let mut data = BytesMut::with_capacity(size);
        data.extend_from_slice(authority);
        for (_, v) in given {
            data.extend_from_slice(v.as_bytes());
        }
        let data = data.freeze();
        let slice = |at: &mut usize, len: usize| -> Option<HeaderValue> {
            let value = HeaderValue::from_maybe_shared(data.slice(*at..*at + len)).ok();
            *at += len;
            value
        };
        let mut at = 0;
        let authority = slice(&mut at, authority.len()).ok_or(Refused(400, "Bad Request"))?;
        let mut headers = HeaderMap::with_capacity(given.len() + 4);
        headers.insert(HOST, authority.clone());
        // The router sends a streamed body's length unless trailers follow (HTTP/1.1 carries them
        // only in a chunked body).
        let drop_length = whole || given.contains_key(hyper::header::TRAILER);
        let (mut host, mut connection, mut content_length) = (None, None, None);
        for (k, v) in given {
            let value = slice(&mut at, v.len()).ok_or(Refused(400, "Bad Request"))?;
            if k == HOST {
                // Translated to :authority, or (absolute form) kept but sent as Host no more.
                if uri_authority.is_some() && host.is_none() {
                    host = Some(value);
                }
                continue;
            }
            let name = k.as_str();
            if upgrade && name == "connection" {
                connection.get_or_insert(value);
                continue;
            }
            if drop_length && k == hyper::header::CONTENT_LENGTH {
                content_length.get_or_insert(value);
                continue;
            }
            if drops_request_header(name.as_bytes(), upgrade) {
                continue;
            }
            headers.append(k.clone(), value);
        }
        if !headers.contains_key(X_FORWARDED_PROTO) {
            headers.append(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
        }
        if !headers.contains_key(X_REQUEST_ID) {
            let id = HeaderValue::from_maybe_shared(Bytes::from(cm.request_id(n)))
                .map_err(|_| Refused(400, "Bad Request"))?;
            headers.append(X_REQUEST_ID, id);
        }
        Ok(Head { method: parts.method.clone(), path, authority, host, headers, connection, content_length })
    }

    pub fn path(&self) -> &str {
        &self.path
    }

    pub fn authority(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(self.authority.as_bytes())
    }

    /// A header as the filters would see it after the connection manager (route and RBAC
    /// matchers): pseudo-headers, the added ones, none of the dropped ones.
    pub fn header(&self, name: &str) -> Option<String> {
        let text = |v: &HeaderValue| String::from_utf8_lossy(v.as_bytes()).into_owned();
        match name {
            ":authority" => Some(text(&self.authority)),
            ":path" => Some(self.path.clone()),
            ":method" => Some(self.method.as_str().to_string()),
            ":scheme" => Some("http".into()),
            "host" => self.host.as_ref().map(text),
            "connection" => self.connection.as_ref().map(text),
            "content-length" => self.content_length.as_ref().or_else(|| self.headers.get(name)).map(text),
            _ => self.headers.get(name).map(text),
        }
    }

    /// The request the router sends (`ConnectionManager::route_in_place` with the route's
    /// timeout, then the HTTP/1.1 request line): `x-envoy-expected-rq-timeout-ms` unless the
    /// timeout is zero. None if the path is not a valid URI.
    pub fn into_request(self, body: ProxyBody, timeout_ms: u64) -> Option<Request<ProxyBody>> {
        let mut request = Request::new(body);
        *request.method_mut() = self.method;
        *request.uri_mut() = Uri::from_maybe_shared(Bytes::from(self.path)).ok()?;
        let mut headers = self.headers;
        if timeout_ms > 0 {
            headers.insert(X_EXPECTED_TIMEOUT, expected_timeout(timeout_ms));
        }
        *request.headers_mut() = headers;
        Some(request)
    }
}

/// The value of `x-envoy-expected-rq-timeout-ms` for `ms`, formatted once per thread while the
/// route's timeout stays the same (it is the same for every request of a route).
fn expected_timeout(ms: u64) -> HeaderValue {
    thread_local! {
        static LAST: std::cell::RefCell<Option<(u64, HeaderValue)>> = const { std::cell::RefCell::new(None) };
    }
    LAST.with_borrow_mut(|last| match last {
        Some((at, value)) if *at == ms => value.clone(),
        _ => last.insert((ms, HeaderValue::from(ms))).1.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    use proptest::prelude::*;

    /// Every name of ebb-host's DROPPED and INTERNAL lists, the ones the connection manager and
    /// router add or read, and ordinary ones: the vocabulary requests are drawn from.
    const NAMES: &[&str] = &[
        "connection",
        "upgrade",
        "x-envoy-internal",
        "keep-alive",
        "proxy-connection",
        "transfer-encoding",
        "x-forwarded-client-cert",
        "x-envoy-retriable-status-codes",
        "x-envoy-retriable-header-names",
        "x-envoy-retry-on",
        "x-envoy-retry-grpc-on",
        "x-envoy-max-retries",
        "x-envoy-upstream-alt-stat-name",
        "x-envoy-upstream-rq-timeout-ms",
        "x-envoy-upstream-rq-per-try-timeout-ms",
        "x-envoy-upstream-rq-timeout-alt-response",
        "x-envoy-expected-rq-timeout-ms",
        "x-envoy-force-trace",
        "x-envoy-ip-tags",
        "x-envoy-original-url",
        "x-envoy-hedge-on-per-try-timeout",
        "x-envoy-decorator-operation",
        "x-forwarded-proto",
        "x-forwarded-for",
        "x-request-id",
        "host",
        "content-length",
        "te",
        "trailer",
        "user-agent",
        "accept",
        "x-custom",
    ];

    const VALUES: &[&str] = &["http", "https", "Upgrade", "keep-alive, upgrade", "close", "7", "0", "api.example", ""];

    /// What a path made of a request: the request line and headers sent upstream, and what the
    /// route and RBAC matchers read for each name of the vocabulary.
    type Outcome = (Vec<(String, String)>, Vec<(String, Option<String>)>);

    /// What the matchers read for each name of the vocabulary and each pseudo-header.
    fn seen(read: impl Fn(&str) -> Option<String>) -> Vec<(String, Option<String>)> {
        NAMES
            .iter()
            .chain(&[":authority", ":path", ":method", ":scheme"])
            .map(|name| (name.to_string(), read(name)))
            .collect()
    }

    /// What the host's path gives: decode_request, route_in_place, and the router's request as
    /// `worker::upstream_request` builds it from the host's map.
    fn through_host(
        cm: &ConnectionManager,
        n: u64,
        parts: &Parts,
        path: &str,
        timeout: Duration,
        whole: bool,
    ) -> Result<Outcome, u16> {
        let mut given: Vec<(&[u8], &[u8])> = Vec::new();
        if let Some(a) = parts.uri.authority() {
            given.push((b":authority", a.as_str().as_bytes()));
        }
        given.push((b":path", path.as_bytes()));
        given.push((b":method", parts.method.as_str().as_bytes()));
        given.extend(parts.headers.iter().map(|(k, v)| (k.as_str().as_bytes(), v.as_bytes())));
        let mut decoded = cm.decode_request(n, &given).map_err(|r| u16::try_from(r.status).unwrap_or(0))?;
        let seen = seen(|name| decoded.get_str(name));
        let router = ConnectionManager { route_timeout: timeout, ..cm.clone() };
        router.route_in_place(&mut decoded);
        let drop_length = whole || decoded.get(b"trailer").is_some();
        let mut sent = vec![
            ("method".to_string(), String::from_utf8_lossy(decoded.get(b":method").unwrap_or_default()).into_owned()),
            ("uri".to_string(), String::from_utf8_lossy(decoded.get(b":path").unwrap_or_default()).into_owned()),
        ];
        let mut map = HeaderMap::new();
        if let Some(a) = decoded.get(b":authority") {
            map.insert(HOST, HeaderValue::from_bytes(a).unwrap());
        }
        for (k, v) in decoded.iter() {
            if k.starts_with(b":")
                || matches!(k, b"host" | b"transfer-encoding" | b"connection")
                || (drop_length && k == b"content-length")
            {
                continue;
            }
            map.append(HeaderName::from_bytes(k).unwrap(), HeaderValue::from_bytes(v).unwrap());
        }
        sent.extend(map.iter().map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned())));
        Ok((sent, seen))
    }

    fn through_direct(
        cm: &ConnectionManager,
        n: u64,
        parts: &Parts,
        path: &str,
        timeout: Duration,
        whole: bool,
    ) -> Result<Outcome, u16> {
        let head = Head::decode(cm, n, parts, path.to_string(), whole).map_err(|r| r.0)?;
        let seen = seen(|name| head.header(name));
        let ms = u64::try_from(timeout.as_millis()).unwrap();
        let request = head.into_request(ProxyBody::empty(), ms).unwrap();
        let mut sent =
            vec![("method".to_string(), request.method().to_string()), ("uri".to_string(), request.uri().to_string())];
        sent.extend(
            request.headers().iter().map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned())),
        );
        Ok((sent, seen))
    }

    fn parts(method: &str, uri: &str, headers: &[(&str, &str)]) -> Parts {
        let mut builder = Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            builder = builder.header(*k, *v);
        }
        builder.body(()).unwrap().into_parts().0
    }

    #[test]
    fn a_plain_request_goes_upstream_as_the_hosts_connection_manager_sends_it() {
        let cm = ConnectionManager { seed: 7, ..ConnectionManager::default() };
        let p = parts("GET", "/a?b", &[("host", "web"), ("user-agent", "wrk"), ("x-envoy-retry-on", "5xx")]);
        let direct = through_direct(&cm, 3, &p, "/a?b", Duration::from_secs(15), true).unwrap();
        assert_eq!(direct, through_host(&cm, 3, &p, "/a?b", Duration::from_secs(15), true).unwrap());
        let names: Vec<&str> = direct.0.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            names,
            [
                "method",
                "uri",
                "host",
                "user-agent",
                "x-forwarded-proto",
                "x-request-id",
                "x-envoy-expected-rq-timeout-ms"
            ]
        );
    }

    #[test]
    fn refusals_are_the_hosts() {
        let cm = ConnectionManager::default();
        let no_host = parts("GET", "/", &[("user-agent", "x")]);
        assert_eq!(through_direct(&cm, 0, &no_host, "/", Duration::ZERO, true), Err(400));
        assert_eq!(through_host(&cm, 0, &no_host, "/", Duration::ZERO, true), Err(400));
        let empty_host = parts("GET", "/", &[("host", "")]);
        assert_eq!(through_direct(&cm, 0, &empty_host, "/", Duration::ZERO, true), Err(400));
        assert_eq!(through_host(&cm, 0, &empty_host, "/", Duration::ZERO, true), Err(400));
    }

    proptest! {
        /// Any request from the vocabulary (absolute form or not, upgrades, repeated names, client
        /// ids, any route timeout) reaches the upstream exactly as through ebb-host's connection
        /// manager and the router, and route and RBAC matchers read the same headers.
        #[test]
        fn the_direct_path_is_the_hosts_connection_manager(
            absolute in any::<bool>(),
            method in prop::sample::select(vec!["GET", "POST", "HEAD", "OPTIONS"]),
            headers in prop::collection::vec((prop::sample::select(NAMES), prop::sample::select(VALUES)), 0..10),
            timeout_ms in prop::sample::select(vec![0u64, 1, 15_000]),
            whole in any::<bool>(),
            n in any::<u64>(),
        ) {
            let cm = ConnectionManager { seed: 11, ..ConnectionManager::default() };
            let uri = if absolute { "http://api.example:8080/p?q=1" } else { "/p?q=1" };
            let p = parts(method, uri, &headers);
            let timeout = Duration::from_millis(timeout_ms);
            prop_assert_eq!(
                through_direct(&cm, n, &p, "/p?q=1", timeout, whole),
                through_host(&cm, n, &p, "/p?q=1", timeout, whole)
            );
        }
    }
}
