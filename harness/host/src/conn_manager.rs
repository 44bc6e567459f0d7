// Envoy's HTTP connection manager's request preparation before any filter runs (the HTTP/1.1
// codec's header order, Host as :authority, rejections, added headers) and its router's own.

use std::time::Duration;

use super::error::HostError;
use super::headers::HeaderMap;
use super::stream::{reply_headers, Http, LocalReply, Step, StreamData, Which};
use super::worker::Vm;

/// Envoy's HTTP connection manager and router as a default configuration has them (a plaintext
/// HTTP/1.1 listener, `use_remote_address: false`, `generate_request_id: true`, one route), applied
/// by a proxy whose `ProxyOptions::connection_manager` is set: `Http::request_headers` prepares the
/// client's headers before the filter sees them (or rejects the request without calling it), and
/// `Http::upstream_request` shows what the router sends on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectionManager {
    /// Seeds the `x-request-id` of each request: the same seed gives the same ids, in order.
    /// Default 0.
    pub seed: u64,
    /// The route's timeout (`RouteAction.timeout`), written by the router as
    /// `x-envoy-expected-rq-timeout-ms`; zero is no timeout (no header). Default 15 s, Envoy's.
    pub route_timeout: Duration,
}

impl Default for ConnectionManager {
    fn default() -> ConnectionManager {
        ConnectionManager { seed: 0, route_timeout: Duration::from_secs(15) }
    }
}

/// Hop-by-hop and proxy headers Envoy drops from every request that is not an upgrade
/// (`ConnectionManagerUtility::mutateRequestHeaders`: removeConnection, removeUpgrade,
/// removeEnvoyInternalRequest, removeKeepAlive, removeProxyConnection, removeTransferEncoding;
/// `mutateXfccRequestHeader`: no mutual TLS ⇒ removeForwardedClientCert).
const DROPPED: [&[u8]; 7] = [
    b"connection",
    b"upgrade",
    b"x-envoy-internal",
    b"keep-alive",
    b"proxy-connection",
    b"transfer-encoding",
    b"x-forwarded-client-cert",
];

/// What a client may not set on an external request (`ConnectionManagerUtility::cleanInternalHeaders`;
/// with `use_remote_address: false` and no `x-forwarded-for`, every request is external).
const INTERNAL: [&[u8]; 14] = [
    b"x-envoy-retriable-status-codes",
    b"x-envoy-retriable-header-names",
    b"x-envoy-retry-on",
    b"x-envoy-retry-grpc-on",
    b"x-envoy-max-retries",
    b"x-envoy-upstream-alt-stat-name",
    b"x-envoy-upstream-rq-timeout-ms",
    b"x-envoy-upstream-rq-per-try-timeout-ms",
    b"x-envoy-upstream-rq-timeout-alt-response",
    b"x-envoy-expected-rq-timeout-ms",
    b"x-envoy-force-trace",
    b"x-envoy-ip-tags",
    b"x-envoy-original-url",
    b"x-envoy-hedge-on-per-try-timeout",
];

/// Whether the connection manager drops request header `name` (any case) before any filter
/// sees it: a hop-by-hop or proxy header (`connection` and `upgrade` kept on an upgrade), or one a
/// client may not set on an external request. The one list for every path that prepares
/// requests as Envoy does, `ebb proxy`'s filterless listeners included.
pub fn drops_request_header(name: &[u8], upgrade: bool) -> bool {
    let is = |listed: &&[u8]| listed.eq_ignore_ascii_case(name);
    let kept_for_upgrade = upgrade && [&b"connection"[..], b"upgrade"].iter().any(is);
    (DROPPED.iter().any(is) && !kept_for_upgrade) || INTERNAL.iter().any(is)
}

/// Pseudo-headers in the order Envoy's HTTP/1.1 codec puts them: `:authority` as the `Host`
/// line is read, `:path` and `:method` when the headers are complete, then `:scheme` from the
/// connection manager. Envoy's header map keeps pseudo-headers in front in insertion order
/// (`HeaderMapImpl::HeaderList::insert`, "as required by nghttp2").
const PSEUDO_ORDER: [&[u8]; 4] = [b":authority", b":path", b":method", b":scheme"];

impl ConnectionManager {
    /// The `x-request-id` Envoy's request ID extension would give request `n`: a version-4 UUID
    /// (`RandomGeneratorImpl::uuid`, `source/common/common/random_generator.cc`: random bytes
    /// with the version nibble 4 and the variant bits 10), drawn from `seed` and `n` instead of
    /// the system's randomness so that runs repeat.
    pub fn request_id(&self, n: u64) -> String {
        String::from_utf8_lossy(&self.request_id_bytes(n)).into_owned()
    }

    /// `request_id` as the bytes of its text, on the stack: this runs for every request `ebb
    /// proxy` serves.
    fn request_id_bytes(&self, n: u64) -> [u8; 36] {
        let hi = splitmix64(self.seed ^ splitmix64(n));
        let lo = splitmix64(hi ^ n.rotate_left(32));
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&hi.to_be_bytes());
        b[8..].copy_from_slice(&lo.to_be_bytes());
        b[6] = (b[6] & 0x0f) | 0x40;
        b[8] = (b[8] & 0x3f) | 0x80;
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut out = [b'-'; 36];
        let mut at = 0;
        for (i, x) in b.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                at += 1;
            }
            out[at] = DIGITS[usize::from(x >> 4)];
            out[at + 1] = DIGITS[usize::from(x & 0x0f)];
            at += 2;
        }
        out
    }

    /// The request headers the filter chain gets for request `n` of the proxy, or the local
    /// reply the connection manager sends instead (the filter is never called):
    ///
    /// - keys lower-cased; a `host` header becomes `:authority` when none is given (the HTTP/1.1
    ///   codec's translation: "For HTTP/1.1 Host has already been translated to :authority",
    ///   `ConnectionManagerImpl::ActiveStream::decodeHeaders`);
    /// - a pseudo-header given twice: 400 `Bad Request`, details `http1.codec_error` (the codec
    ///   refuses the header block, `ServerConnectionImpl::sendProtocolError`); no `:authority`:
    ///   400, details `missing_host_header`; no `:path`: 404, details `missing_path_rejected`
    ///   (`decodeHeaders`, MissingHost and MissingPath);
    /// - pseudo-headers first in the HTTP/1.1 codec's order (see `PSEUDO_ORDER`), `:scheme`
    ///   `http` when absent (plaintext listener), then the other headers in arrival order
    ///   without hop-by-hop and internal ones (`mutateRequestHeaders`, `cleanInternalHeaders`),
    ///   then `x-forwarded-proto: http` and `x-request-id` when the client sent none.
    pub fn decode_request<K: AsRef<[u8]>, V: AsRef<[u8]>>(
        &self,
        n: u64,
        headers: &[(K, V)],
    ) -> Result<HeaderMap, LocalReply> {
        // Read straight from the pairs (keys in any case), so the headers are copied once, into
        // the map the filters get.
        let given = || headers.iter().map(|(k, v)| (k.as_ref(), v.as_ref()));
        let get = |name: &[u8]| given().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v);
        let pseudo = || given().filter(|(k, _)| k.starts_with(b":"));
        for (i, (k, _)) in pseudo().enumerate() {
            if pseudo().take(i).any(|(seen, _)| seen.eq_ignore_ascii_case(k)) {
                return Err(reject(400, b"Bad Request", "http1.codec_error"));
            }
        }
        let host = get(b"host").filter(|_| get(b":authority").is_none());
        let pseudo_value = |name: &[u8]| match (name, host) {
            (b":authority", Some(h)) => Some(h),
            _ => get(name),
        };
        if pseudo_value(b":authority").is_none_or(<[u8]>::is_empty) {
            return Err(reject(400, b"", "missing_host_header"));
        }
        let connect = get(b":method") == Some(b"CONNECT");
        if !connect && pseudo_value(b":path").is_none_or(<[u8]>::is_empty) {
            return Err(reject(404, b"", "missing_path_rejected"));
        }
        // Room for everything given, the pseudo-headers' names, the two headers added below and
        // the router's timeout header (`route_in_place`): no regrowth on the way to the upstream.
        let size = headers.iter().map(|(k, v)| k.as_ref().len() + v.as_ref().len()).sum::<usize>();
        let mut out = HeaderMap::with_capacity(size + 192, headers.len() + 6);
        for name in PSEUDO_ORDER {
            match pseudo_value(name) {
                Some(v) => out.add(name, v),
                None if name == b":scheme" => out.add(name, b"http"),
                None => {}
            }
        }
        for (k, v) in pseudo() {
            if !PSEUDO_ORDER.iter().any(|p| p.eq_ignore_ascii_case(k)) {
                out.add(k, v);
            }
        }
        let upgrade = get(b"upgrade").is_some()
            && get(b"connection").is_some_and(|c| c.to_ascii_lowercase().windows(7).any(|w| w == b"upgrade"));
        for (k, v) in given().filter(|(k, _)| !k.starts_with(b":")) {
            if (host.is_some() && k.eq_ignore_ascii_case(b"host")) || drops_request_header(k, upgrade) {
                continue;
            }
            out.add(k, v);
        }
        if out.get(b"x-forwarded-proto").is_none() {
            out.add(b"x-forwarded-proto", b"http");
        }
        if out.get(b"x-request-id").is_none() {
            out.add(b"x-request-id", &self.request_id_bytes(n));
        }
        Ok(out)
    }

    /// The request headers as the router sends them upstream (`router.cc`,
    /// `FilterUtility::finalTimeout` → `setTimeoutHeaders`): a filter's
    /// `x-envoy-upstream-rq-timeout-ms` (and `-per-try-timeout-ms`) replace the route's timeout
    /// and are removed; `x-envoy-expected-rq-timeout-ms` is the per-try timeout when it is shorter
    /// than the global one, else the global one, and absent when that is 0 (no timeout).
    pub fn route_request(&self, headers: &HeaderMap) -> HeaderMap {
        let mut out = headers.clone();
        self.route_in_place(&mut out);
        out
    }

    /// `route_request` on the request's own map (a proxy that sends it on needs no copy).
    pub fn route_in_place(&self, out: &mut HeaderMap) {
        let millis = |name: &[u8]| -> Option<Option<u64>> {
            let v = out.get(name)?;
            Some(std::str::from_utf8(v).ok().and_then(|t| t.trim().parse().ok()))
        };
        let route = u64::try_from(self.route_timeout.as_millis()).unwrap_or(u64::MAX);
        let (global_header, per_try_header) =
            (millis(b"x-envoy-upstream-rq-timeout-ms"), millis(b"x-envoy-upstream-rq-per-try-timeout-ms"));
        let global = match global_header {
            Some(given) => {
                out.remove(b"x-envoy-upstream-rq-timeout-ms");
                given.unwrap_or(route)
            }
            None => route,
        };
        let mut per_try = match per_try_header {
            Some(given) => {
                out.remove(b"x-envoy-upstream-rq-per-try-timeout-ms");
                given.unwrap_or(0)
            }
            None => 0,
        };
        if per_try >= global && global != 0 {
            per_try = 0;
        }
        let expected = if per_try == 0 { global } else { per_try };
        if expected > 0 {
            // Digits on the stack: this runs for every request `ebb proxy` routes.
            out.replace(b"x-envoy-expected-rq-timeout-ms", itoa::Buffer::new().format(expected).as_bytes());
        }
    }
}

impl Http<'_> {
    /// `request_headers` through the proxy's connection manager: the prepared headers go to
    /// the filter; a rejected request is answered without it.
    pub(crate) fn prepared_request_headers<K: AsRef<[u8]>, V: AsRef<[u8]>>(
        &mut self,
        headers: &[(K, V)],
        end_of_stream: bool,
    ) -> Step {
        let ctx = self.id.context;
        let n = self.proxy.requests.saturating_add(1);
        self.proxy.requests = n;
        let decoded = match &self.proxy.connection_manager {
            Some(cm) => cm.decode_request(n, headers),
            None => Ok(HeaderMap::from_pairs(headers)),
        };
        match decoded {
            Ok(map) => self.vm().http_headers(ctx, Which::Request, |m| *m = map, end_of_stream),
            Err(reply) => self.vm().http_reject(ctx, headers, reply),
        }
    }
}

impl Vm {
    /// The connection manager answers the request itself before the filter chain exists: no
    /// context is created and the filter sees neither the request nor the reply (Envoy's
    /// `sendLocalReply` from `decodeHeaders` runs no encoder filter either).
    fn http_reject<K: AsRef<[u8]>, V: AsRef<[u8]>>(&mut self, ctx: u32, headers: &[(K, V)], reply: LocalReply) -> Step {
        let Some(StreamData::Http(h)) = self.store.data_mut().streams.get_mut(&ctx) else {
            return Step::Failed(HostError::usage(format!("no HTTP stream with context {ctx} (finished already?)")));
        };
        if h.request.has_headers {
            return Step::Failed(HostError::usage("headers were already sent"));
        }
        h.request.headers.clear();
        h.request.headers.extend(headers);
        h.request.has_headers = true;
        h.request.end_stream = true;
        h.last = Some(Which::Request);
        let response = &mut h.response;
        response.headers = reply_headers(&h.request.headers, &reply, &reply.body);
        response.has_headers = true;
        response.headers_forwarded = true;
        if !super::stream::is_grpc(&h.request.headers) {
            response.forwarded_body = reply.body.clone();
        }
        response.end_stream = true;
        h.local_reply = Some(reply.clone());
        Step::LocalReply(reply)
    }
}

fn reject(status: u32, body: &[u8], details: &str) -> LocalReply {
    LocalReply { status, headers: HeaderMap::new(), body: body.to_vec(), details: details.into(), grpc_status: None }
}

/// SplitMix64: a full-period mix of a counter, enough to spread request numbers over UUIDs.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_and_internal_headers_go_in_any_case_and_an_upgrade_keeps_its_own() {
        let cm = ConnectionManager::default();
        let keys = |pairs: &[(&str, &str)]| -> Vec<String> {
            let out = cm.decode_request(1, pairs).expect("decoded");
            out.iter().map(|(k, _)| String::from_utf8_lossy(k).into_owned()).collect()
        };
        let plain = keys(&[
            (":Method", "GET"),
            (":path", "/"),
            ("Host", "a"),
            ("Connection", "keep-alive"),
            ("Keep-Alive", "5"),
            ("X-Envoy-Retry-On", "5xx"),
            ("X-Custom", "v"),
        ]);
        assert_eq!(
            plain,
            [":authority", ":path", ":method", ":scheme", "x-custom", "x-forwarded-proto", "x-request-id"]
        );
        let upgrade = keys(&[
            (":method", "GET"),
            (":path", "/ws"),
            ("Host", "a"),
            ("Connection", "Upgrade"),
            ("Upgrade", "websocket"),
        ]);
        assert_eq!(
            upgrade,
            [":authority", ":path", ":method", ":scheme", "connection", "upgrade", "x-forwarded-proto", "x-request-id"]
        );
        let twice = cm.decode_request(1, &[(":path", "/"), (":PATH", "/x"), ("host", "a")]);
        assert_eq!(twice.err().map(|r| r.status), Some(400), "a pseudo-header given twice, in any case");
    }

    #[test]
    fn request_ids_are_version_4_uuids_that_repeat_per_seed() {
        let cm = ConnectionManager::default();
        let id = cm.request_id(1);
        let parts: Vec<&str> = id.split('-').collect();
        assert_eq!(parts.iter().map(|p| p.len()).collect::<Vec<_>>(), [8, 4, 4, 4, 12], "{id}");
        assert!(parts[2].starts_with('4'), "version 4: {id}");
        assert!(matches!(parts[3].as_bytes()[0], b'8' | b'9' | b'a' | b'b'), "variant 10: {id}");
        assert_eq!(id, cm.request_id(1));
        assert_ne!(id, cm.request_id(2));
        assert_ne!(id, ConnectionManager { seed: 7, ..cm }.request_id(1));
        // The id is the 16 bytes in hex, grouped 8-4-4-4-12, every digit of them.
        for n in [0, 1, 2, 77, u64::MAX] {
            let id = cm.request_id(n);
            let hex: String = id.chars().filter(|c| *c != '-').collect();
            assert_eq!(hex.len(), 32, "{id}");
            assert!(hex.bytes().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()), "{id}");
            let hi = splitmix64(cm.seed ^ splitmix64(n));
            assert_eq!(&hex[..12], &format!("{hi:016x}")[..12], "the first bytes are the mix's: {id}");
        }
    }

    #[test]
    fn router_timeouts_follow_the_filters_headers() {
        let cm = ConnectionManager::default();
        let plain = cm.route_request(&HeaderMap::from_pairs(&[(":path", "/")]));
        assert_eq!(plain.get(b"x-envoy-expected-rq-timeout-ms"), Some(&b"15000"[..]));
        let set = cm.route_request(&HeaderMap::from_pairs(&[
            ("x-envoy-upstream-rq-timeout-ms", "3000"),
            ("x-envoy-upstream-rq-per-try-timeout-ms", "500"),
        ]));
        assert_eq!(set.get(b"x-envoy-expected-rq-timeout-ms"), Some(&b"500"[..]));
        assert_eq!(set.get(b"x-envoy-upstream-rq-timeout-ms"), None);
        let none = ConnectionManager { route_timeout: Duration::ZERO, ..cm }.route_request(&HeaderMap::new());
        assert_eq!(none.get(b"x-envoy-expected-rq-timeout-ms"), None, "0 is no timeout");
    }
}
