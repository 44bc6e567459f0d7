// A small HTTP/1.1 client over std's TcpStream for the console tests: every call has a deadline
// (socket timeouts), bodies by Content-Length, chunks or the connection's end.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

fn connect(addr: SocketAddr, timeout: Duration) -> TcpStream {
    let stream = TcpStream::connect_timeout(&addr, timeout).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    stream.set_read_timeout(Some(timeout)).expect("read timeout");
    stream.set_write_timeout(Some(timeout)).expect("write timeout");
    stream
}

fn write_request(stream: &mut TcpStream, method: &str, host: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) {
    let mut head =
        format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).expect("request written");
    stream.write_all(body).expect("body written");
}

/// A response's status, headers, and where its body starts.
type Head = (u16, Vec<(String, String)>, usize);

/// Splits a response's head from what follows it, once the head is whole.
fn parse_head(buf: &[u8]) -> Option<Head> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&buf[..end]);
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers =
        lines.filter_map(|l| l.split_once(':').map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))).collect();
    Some((status, headers, end + 4))
}

/// Decodes the complete chunks of a chunked body; `true` once the last chunk was seen.
fn dechunk(mut raw: &[u8]) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    loop {
        let Some(line_end) = raw.windows(2).position(|w| w == b"\r\n") else { return (out, false) };
        let size = usize::from_str_radix(String::from_utf8_lossy(&raw[..line_end]).trim(), 16).unwrap_or(0);
        if size == 0 {
            return (out, true);
        }
        let start = line_end + 2;
        if raw.len() < start + size + 2 {
            return (out, false);
        }
        out.extend_from_slice(&raw[start..start + size]);
        raw = &raw[start + size + 2..];
    }
}

/// One request; the whole response. Panics past `timeout` (a test that hangs is a failed test).
pub fn request(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
    request_as(addr, &addr.to_string(), method, path, headers, body)
}

/// `request` with a `Host` header of the caller's choosing.
pub fn request_as(
    addr: SocketAddr,
    host: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Reply {
    request_within(addr, host, method, path, headers, body, Duration::from_secs(30))
}

/// `request_as` with its own deadline (starting a browser on a busy machine takes a while).
pub fn request_within(
    addr: SocketAddr,
    host: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    timeout: Duration,
) -> Reply {
    let mut stream = connect(addr, timeout);
    write_request(&mut stream, method, host, path, headers, body);
    // Read until the body is whole: by its length, its last chunk, or the connection's end (some
    // servers keep the connection open despite `Connection: close`).
    let mut raw = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = stream.read(&mut buf).unwrap_or_else(|e| panic!("{method} {path}: reading the response: {e}"));
        raw.extend_from_slice(&buf[..n]);
        if let Some((status, headers, at)) = parse_head(&raw) {
            let header =
                |name: &str| headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.clone());
            let chunked = header("transfer-encoding").is_some_and(|v| v.contains("chunked"));
            let length = header("content-length").and_then(|v| v.parse::<usize>().ok());
            let whole = match (chunked, length) {
                (true, _) => dechunk(&raw[at..]).1,
                (false, Some(length)) => raw.len() - at >= length,
                (false, None) => false,
            };
            if whole || n == 0 {
                let body = match (chunked, length) {
                    (true, _) => dechunk(&raw[at..]).0,
                    (false, Some(length)) => raw[at..(at + length).min(raw.len())].to_vec(),
                    (false, None) => raw[at..].to_vec(),
                };
                return Reply { status, headers, body };
            }
        }
        assert!(n > 0, "{method} {path}: the connection closed before a whole response");
    }
}

/// Reads a server-sent event stream until `done` holds for the `data:` payloads received so far
/// (or the stream ends, or `within` passes); returns the payloads.
pub fn read_events(
    addr: SocketAddr,
    path: &str,
    within: Duration,
    done: impl Fn(&[String]) -> bool,
) -> (u16, Vec<String>) {
    let mut stream = connect(addr, Duration::from_millis(200));
    write_request(&mut stream, "GET", &addr.to_string(), path, &[], b"");
    let deadline = Instant::now() + within;
    let mut raw = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        let read = match stream.read(&mut buf) {
            Ok(0) => None,
            Ok(n) => Some(n),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => Some(0),
            Err(e) => panic!("reading {path}: {e}"),
        };
        if let Some(n) = read {
            raw.extend_from_slice(&buf[..n]);
        }
        if let Some((status, headers, at)) = parse_head(&raw) {
            let chunked =
                headers.iter().any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
            let (body, _) = if chunked { dechunk(&raw[at..]) } else { (raw[at..].to_vec(), false) };
            let text = String::from_utf8_lossy(&body);
            // Only events whose blank line has arrived: the rest may be half an event.
            let complete = &text[..text.rfind("\n\n").map_or(0, |i| i + 2)];
            let events: Vec<String> =
                complete.split("\n\n").filter_map(|e| e.strip_prefix("data: ").map(str::to_string)).collect();
            if status != 200 || read.is_none() || done(&events) || Instant::now() > deadline {
                return (status, events);
            }
        } else if read.is_none() || Instant::now() > deadline {
            panic!("{path}: no response head within {within:?}");
        }
    }
}
