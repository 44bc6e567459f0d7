// A small blocking HTTP/1.1 client for the game day's calls: control APIs, admin pages and
// Alertmanager, all plain HTTP on operators' networks. One request per connection, every read
// and write under a timeout, answers capped in size: a stuck or hostile peer cannot hold a run.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// Largest answer read (an Alertmanager with many alerts stays far below).
const MAX_ANSWER: u64 = 16 * 1024 * 1024;

/// Why a call got no HTTP answer.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("{0} is not an http://HOST:PORT URL (https is not spoken: reach the control listener on loopback or through a tunnel)")]
    BadUrl(String),
    #[error("cannot connect to {0}: {1}")]
    Connect(String, std::io::Error),
    #[error("no answer from {0}: {1}")]
    Io(String, std::io::Error),
    #[error("{0} answered something that is not HTTP")]
    NotHttp(String),
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

/// One request to `url` + `path`; `headers` are sent as given (a `host` among them replaces the URL's).
pub fn call(
    url: &Url,
    method: &str,
    path: &str,
    headers: &[(String, String)],
    body: &[u8],
    timeout: Duration,
) -> Result<Answer, HttpError> {
    let shown = format!("{}{path}", url.show());
    let addr = url
        .authority
        .to_socket_addrs()
        .map_err(|e| HttpError::Connect(url.show(), e))?
        .next()
        .ok_or_else(|| HttpError::Connect(url.show(), std::io::ErrorKind::NotFound.into()))?;
    let mut stream = TcpStream::connect_timeout(&addr, timeout).map_err(|e| HttpError::Connect(url.show(), e))?;
    let io = |e| HttpError::Io(shown.clone(), e);
    stream.set_read_timeout(Some(timeout)).map_err(io)?;
    stream.set_write_timeout(Some(timeout)).map_err(io)?;
    let mut head = format!("{method} {}{path} HTTP/1.1\r\n", url.base_path);
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        head.push_str(&format!("host: {}\r\n", url.authority));
    }
    for (k, v) in headers {
        if k.eq_ignore_ascii_case("connection") || k.eq_ignore_ascii_case("content-length") {
            continue;
        }
        // A header value never carries a line break (a command's JSON is one line).
        head.push_str(&format!("{k}: {}\r\n", v.replace(['\r', '\n'], " ")));
    }
    head.push_str(&format!("connection: close\r\ncontent-length: {}\r\n\r\n", body.len()));
    stream.write_all(head.as_bytes()).map_err(io)?;
    stream.write_all(body).map_err(io)?;
    let mut raw = Vec::new();
    stream.take(MAX_ANSWER).read_to_end(&mut raw).map_err(io)?;
    parse(&raw).ok_or(HttpError::NotHttp(shown))
}

fn parse(raw: &[u8]) -> Option<Answer> {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..split]).ok()?;
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let chunked = lines.any(|l| {
        l.split_once(':').is_some_and(|(k, v)| {
            k.trim().eq_ignore_ascii_case("transfer-encoding") && v.to_ascii_lowercase().contains("chunked")
        })
    });
    let rest = &raw[split + 4..];
    let body = if chunked { dechunk(rest)? } else { rest.to_vec() };
    Some(Answer { status, body })
}

fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = data.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&data[..eol]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        if size == 0 {
            return Some(out);
        }
        let start = eol.checked_add(2)?;
        let end = start.checked_add(size)?;
        out.extend_from_slice(data.get(start..end)?);
        data = data.get(end.checked_add(2)?..)?;
    }
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

    #[test]
    fn answers_are_read_whole_or_dechunked() {
        let a = parse(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").expect("answer");
        assert_eq!((a.status, a.body.as_slice()), (200, b"ok".as_slice()));
        let a = parse(b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
            .expect("answer");
        assert_eq!((a.status, a.body.as_slice()), (201, b"abcde".as_slice()));
        assert!(parse(b"garbage").is_none());
        assert!(parse(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffff\r\nab").is_none());
    }
}
