// A DNS client for STRICT_DNS clusters that name their `dns_resolvers`: one A query over UDP to
// each server in turn (RFC 1035), as Envoy's c-ares resolver asks the servers it is given.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::Duration;

/// How long one server may take to answer.
const TIMEOUT: Duration = Duration::from_secs(2);

/// The IPv4 addresses of `name`, from the first of `servers` that answers.
pub fn resolve_a(name: &str, servers: &[SocketAddr]) -> Result<Vec<Ipv4Addr>, String> {
    let mut last = String::from("no DNS server given");
    for server in servers {
        match ask(name, *server) {
            Ok(found) => return Ok(found),
            Err(e) => last = format!("{server}: {e}"),
        }
    }
    Err(last)
}

fn ask(name: &str, server: SocketAddr) -> Result<Vec<Ipv4Addr>, String> {
    let bind: SocketAddr =
        if server.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { (std::net::Ipv6Addr::UNSPECIFIED, 0).into() };
    let socket = UdpSocket::bind(bind).map_err(|e| e.to_string())?;
    socket.set_read_timeout(Some(TIMEOUT)).map_err(|e| e.to_string())?;
    socket.connect(server).map_err(|e| e.to_string())?;
    let id = id_for(name);
    socket.send(&query(id, name)?).map_err(|e| e.to_string())?;
    let mut buf = [0u8; 1500];
    let n = socket.recv(&mut buf).map_err(|e| e.to_string())?;
    parse_answer(&buf[..n], id)
}

/// A query id that differs per name and per call (not a security boundary: loopback servers).
fn id_for(name: &str) -> u16 {
    static NEXT: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0x5eed);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    name.bytes().fold(n, |h, b| h.rotate_left(5) ^ u16::from(b))
}

/// A recursive query for the A records of `name`.
pub fn query(id: u16, name: &str) -> Result<Vec<u8>, String> {
    let mut q = Vec::with_capacity(18 + name.len());
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.trim_end_matches('.').split('.') {
        let len = u8::try_from(label.len())
            .ok()
            .filter(|l| (1..=63).contains(l))
            .ok_or(format!("{name:?} is not a DNS name"))?;
        q.push(len);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    Ok(q)
}

/// The A records of an answer to query `id`.
pub fn parse_answer(msg: &[u8], id: u16) -> Result<Vec<Ipv4Addr>, String> {
    let short = || "truncated DNS answer".to_string();
    let header = msg.get(..12).ok_or_else(short)?;
    if u16::from_be_bytes([header[0], header[1]]) != id || header[2] & 0x80 == 0 {
        return Err("not the answer to this query".into());
    }
    match header[3] & 0x0f {
        0 => {}
        3 => return Err("no such name (NXDOMAIN)".into()),
        code => return Err(format!("DNS error {code}")),
    }
    let questions = u16::from_be_bytes([header[4], header[5]]);
    let answers = u16::from_be_bytes([header[6], header[7]]);
    let mut at = 12;
    for _ in 0..questions {
        at = skip_name(msg, at).ok_or_else(short)? + 4;
    }
    let mut found = Vec::new();
    for _ in 0..answers {
        at = skip_name(msg, at).ok_or_else(short)?;
        let fixed = msg.get(at..at + 10).ok_or_else(short)?;
        let kind = u16::from_be_bytes([fixed[0], fixed[1]]);
        let len = usize::from(u16::from_be_bytes([fixed[8], fixed[9]]));
        let data = msg.get(at + 10..at + 10 + len).ok_or_else(short)?;
        if kind == 1 && len == 4 {
            found.push(Ipv4Addr::new(data[0], data[1], data[2], data[3]));
        }
        at += 10 + len;
    }
    Ok(found)
}

/// The offset after the name at `at` (labels, ending in 0 or a compression pointer).
fn skip_name(msg: &[u8], mut at: usize) -> Option<usize> {
    loop {
        let len = *msg.get(at)?;
        match len {
            0 => return Some(at + 1),
            l if l & 0xc0 == 0xc0 => return Some(at + 2),
            l => at += 1 + usize::from(l),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_with_a_compressed_name_gives_its_a_records() {
        let q = query(0x1234, "web.test").unwrap();
        let mut a = q.clone();
        a[2] = 0x81;
        a[3] = 0x80;
        a[7] = 2;
        for ip in [[127, 0, 0, 2], [127, 0, 0, 3]] {
            a.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 5, 0, 4]);
            a.extend_from_slice(&ip);
        }
        let found = parse_answer(&a, 0x1234).unwrap();
        assert_eq!(found, [Ipv4Addr::new(127, 0, 0, 2), Ipv4Addr::new(127, 0, 0, 3)]);
        assert!(parse_answer(&a, 0x1235).is_err(), "another query's answer");
        a[3] = 0x83;
        assert_eq!(parse_answer(&a, 0x1234).unwrap_err(), "no such name (NXDOMAIN)");
        assert!(parse_answer(&a[..20], 0x1234).is_err());
    }
}
