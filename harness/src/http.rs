// The blocking HTTP/1.1 client for ebb's calls to other programs: game-day control APIs, admin
// pages and Alertmanager, and the loopback Prometheus of a `--rules` replay (ureq underneath).
// Plain http only; every call under a timeout, answers capped in size, no redirects followed.

use std::time::Duration;

use ureq::http;

/// Largest answer read by default (an Alertmanager with many alerts stays far below).
pub const MAX_ANSWER: u64 = 16 * 1024 * 1024;

/// Why a call got no HTTP answer.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("{0} is not an http://HOST:PORT URL (https is not spoken: reach the control listener on loopback or through a tunnel)")]
    BadUrl(String),
    #[error("cannot connect to {0}: {1}")]
    Connect(String, String),
    #[error("no answer from {0}: {1}")]
    Io(String, String),
    #[error("{0} answered something that is not HTTP: {1}")]
    NotHttp(String, String),
    #[error("{0} answered more than {1} bytes")]
    TooLarge(String, u64),
}
/// `http://host:port` with an optional path prefix, split.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Url {
    /// `host:port` as written (sent as `Host`, and what a control call signs).
    pub authority: String,
    /// The path before any request path, without its trailing `/` (`""` for none).
    pub base_path: String,
}

impl Url {
    pub fn parse(text: &str) -> Result<Url, HttpError> {
        let bad = || HttpError::BadUrl(text.to_string());
        let rest = text.strip_prefix("http://").ok_or_else(bad)?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if authority.is_empty() || authority.contains(['@', '?', '#', ' ']) {
            return Err(bad());
        }
        let authority = if authority.rsplit_once(':').is_some_and(|(_, p)| p.parse::<u16>().is_ok()) {
            authority.to_ascii_lowercase()
        } else if authority.contains(':') && !authority.ends_with(']') {
            return Err(bad());
        } else {
            format!("{}:80", authority.to_ascii_lowercase())
        };
        Ok(Url { authority, base_path: path.trim_end_matches('/').to_string() })
    }

    pub fn show(&self) -> String {
        format!("http://{}{}", self.authority, self.base_path)
    }
}

#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A client: one pool of kept-alive connections, one timeout for each whole call.
pub struct Client {
    agent: ureq::Agent,
    max_answer: u64,
}

impl Client {
    /// `timeout` bounds each call from connecting to the answer's last byte.
    pub fn new(timeout: Duration, max_answer: u64) -> Client {
        let config = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .timeout_connect(Some(timeout.min(CONNECT_TIMEOUT)))
            // Statuses are the caller's to judge; a redirect is an answer, not an instruction.
            .http_status_as_error(false)
            .max_redirects(0)
            .user_agent(concat!("ebb/", env!("CARGO_PKG_VERSION")))
            .build();
        Client { agent: config.into(), max_answer }
    }

    /// One request to `url` + `path`; `headers` are sent as given (a `host` among them replaces
    /// the URL's: a control call's signature covers the host it was signed for).
    pub fn call<K: AsRef<str>, V: AsRef<str>>(
        &self,
        url: &Url,
        method: &str,
        path: &str,
        headers: &[(K, V)],
        body: &[u8],
    ) -> Result<Answer, HttpError> {
        let shown = format!("{}{path}", url.show());
        let bad = |e: &dyn std::fmt::Display| HttpError::BadUrl(format!("{shown} ({e})"));
        let mut request = http::Request::builder()
            .method(http::Method::from_bytes(method.as_bytes()).map_err(|e| bad(&e))?)
            .uri(format!("http://{}{}{path}", url.authority, url.base_path));
        for (k, v) in headers {
            let (k, v) = (k.as_ref(), v.as_ref());
            if k.eq_ignore_ascii_case("connection") || k.eq_ignore_ascii_case("content-length") {
                continue;
            }
            // A header value never carries a line break (a command's JSON is one line).
            request = request.header(k, v.replace(['\r', '\n'], " "));
        }
        let request = request.body(body).map_err(|e| bad(&e))?;
        let mut response = self.agent.run(request).map_err(|e| classify(&url.show(), &shown, e))?;
        let status = response.status().as_u16();
        let body = response.body_mut().with_config().limit(self.max_answer).read_to_vec().map_err(|e| match e {
            ureq::Error::BodyExceedsLimit(n) => HttpError::TooLarge(shown.clone(), n),
            e => classify(&url.show(), &shown, e),
        })?;
        Ok(Answer { status, body })
    }
}

/// Longest wait for a connection (a peer that is down refuses at once; one that is gone, never).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

fn classify(base: &str, shown: &str, e: ureq::Error) -> HttpError {
    match e {
        ureq::Error::HostNotFound | ureq::Error::ConnectionFailed => {
            HttpError::Connect(base.to_string(), e.to_string())
        }
        ureq::Error::Io(io) if matches!(io.kind(), std::io::ErrorKind::ConnectionRefused) => {
            HttpError::Connect(base.to_string(), io.to_string())
        }
        ureq::Error::Protocol(_) | ureq::Error::LargeResponseHeader(..) => {
            HttpError::NotHttp(shown.to_string(), e.to_string())
        }
        e => HttpError::Io(shown.to_string(), e.to_string()),
    }
}

/// One call on a fresh client (no connection kept): the game day's occasional calls.
pub fn call<K: AsRef<str>, V: AsRef<str>>(
    url: &Url,
    method: &str,
    path: &str,
    headers: &[(K, V)],
    body: &[u8],
    timeout: Duration,
) -> Result<Answer, HttpError> {
    Client::new(timeout, MAX_ANSWER).call(url, method, path, headers, body)
}

/// A GET with no headers of its own, on a fresh client.
pub fn get(url: &Url, path: &str, timeout: Duration) -> Result<Answer, HttpError> {
    call::<&str, &str>(url, "GET", path, &[], b"", timeout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_keep_their_authority_and_refuse_what_is_not_plain_http() {
        let u = Url::parse("http://127.0.0.1:9902").expect("url");
        assert_eq!((u.authority.as_str(), u.base_path.as_str()), ("127.0.0.1:9902", ""));
        let u = Url::parse("http://Alerts.example/am/").expect("url");
        assert_eq!((u.authority.as_str(), u.base_path.as_str()), ("alerts.example:80", "/am"));
        for bad in ["https://x:1", "127.0.0.1:9902", "http://", "http://a@b:1", "http://x:y"] {
            assert!(Url::parse(bad).is_err(), "{bad}");
        }
    }

    /// A one-connection server on loopback that answers `answer` and hands back what it read.
    fn serve_once(answer: &'static [u8]) -> (Url, std::thread::JoinHandle<String>) {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = Url::parse(&format!("http://{}", listener.local_addr().expect("addr"))).expect("url");
        let server = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().expect("accept");
            conn.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
            let mut seen = Vec::new();
            let mut buf = [0u8; 4096];
            while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = conn.read(&mut buf).expect("read");
                assert!(n > 0, "client closed before its request ended");
                seen.extend_from_slice(&buf[..n]);
            }
            conn.write_all(answer).expect("write");
            String::from_utf8_lossy(&seen).into_owned()
        });
        (url, server)
    }

    #[test]
    fn chunked_answers_are_read_whole_and_a_given_host_is_sent_as_is() {
        let (url, server) =
            serve_once(b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n");
        let headers = [("host", "signed.example:9901"), ("x-ebb-signature", "abc")];
        let answer = call(&url, "GET", "/.ebb/v1/state", &headers, b"", Duration::from_secs(5)).expect("answer");
        assert_eq!((answer.status, answer.text().as_str()), (201, "abcde"));
        let request = server.join().expect("server");
        assert!(request.starts_with("GET /.ebb/v1/state HTTP/1.1\r\n"), "{request}");
        assert!(request.to_ascii_lowercase().contains("host: signed.example:9901\r\n"), "{request}");
        assert!(!request.contains(url.authority.as_str()), "the URL's host replaced the given one: {request}");
    }

    #[test]
    fn an_answer_over_the_cap_is_refused_and_a_closed_port_is_a_connect_error() {
        let (url, server) = serve_once(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n0123456789");
        let client = Client::new(Duration::from_secs(5), 4);
        let err = client.call::<&str, &str>(&url, "GET", "/", &[], b"").expect_err("over the cap");
        assert!(matches!(err, HttpError::TooLarge(..)), "{err}");
        server.join().expect("server");
        // The listener is gone: nothing listens on that port any more.
        let err = get(&url, "/", Duration::from_secs(5)).expect_err("refused");
        assert!(matches!(err, HttpError::Connect(..)), "{err}");
        let (url, server) = serve_once(b"SSH-2.0-OpenSSH_9.2\r\n\r\n");
        let err = get(&url, "/", Duration::from_secs(5)).expect_err("not http");
        assert!(matches!(err, HttpError::NotHttp(..)), "{err}");
        server.join().expect("server");
    }
}
