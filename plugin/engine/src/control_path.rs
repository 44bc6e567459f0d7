// Recognising control API paths as Envoy and upstream servers read them: the prefix exactly as
// configured routes; a look-alike that normalises onto it is refused rather than forwarded.

/// What a request's `:path` is to the control API.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PathClass {
    /// Under the prefix, exactly as configured and in canonical form: a control call.
    Control,
    /// Not written as the prefix, but read as under it by a normalising proxy or server (other
    /// case, percent-escapes, `.`/`..` segments, doubled slashes, backslashes, `;` parameters):
    /// answered with a refusal, never forwarded.
    LookAlike,
    /// Anything else: ordinary traffic.
    Outside,
}

/// The part of a `:path` that routes: without its query or fragment.
pub fn route_part(path: &str) -> &str {
    let end = path.bytes().position(|b| b == b'?' || b == b'#').unwrap_or(path.len());
    &path[..end]
}

/// A prefix the classifier can recognise: `/`-delimited segments of letters, digits and
/// `.`, `_`, `-`, `~`, none empty, `.` or `..`.
pub fn valid_prefix(prefix: &str) -> bool {
    let Some(inner) = prefix.strip_prefix('/').and_then(|p| p.strip_suffix('/')) else { return false };
    !inner.is_empty()
        && inner.split('/').all(|s| {
            !s.is_empty()
                && s != "."
                && s != ".."
                && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'~'))
        })
}

/// Classifies a request path against the control prefix. Cheap for ordinary paths (one scan, no
/// allocation): it runs on every request.
pub fn classify(prefix: &str, path: &str) -> PathClass {
    let raw = route_part(path);
    if raw.starts_with(prefix) && canonical(raw) {
        return PathClass::Control;
    }
    let under = if needs_normalising(raw) { under_prefix(&normalise(raw), prefix) } else { under_prefix(raw, prefix) };
    if under {
        PathClass::LookAlike
    } else {
        PathClass::Outside
    }
}

/// No escapes, backslashes, parameters, empty (except a trailing one), `.` or `..` segments.
fn canonical(raw: &str) -> bool {
    if raw.bytes().any(|b| matches!(b, b'%' | b'\\' | b';')) {
        return false;
    }
    let segments: Vec<&str> = raw.split('/').skip(1).collect();
    segments.iter().enumerate().all(|(i, s)| match *s {
        "" => i + 1 == segments.len(),
        "." | ".." => false,
        _ => true,
    })
}

/// One pass, no allocation (substring searches cost several times more in the .wasm).
fn needs_normalising(raw: &str) -> bool {
    let bytes = raw.as_bytes();
    if bytes.first() != Some(&b'/') {
        return true;
    }
    let mut previous = 0;
    for &b in bytes {
        match b {
            b'%' | b'\\' | b';' => return true,
            b'.' | b'/' if previous == b'/' => return true,
            _ => previous = b,
        }
    }
    false
}

/// True when `path` (or `path/`) starts with `prefix`, ignoring ASCII case.
fn under_prefix(path: &str, prefix: &str) -> bool {
    let (p, pre) = (path.as_bytes(), prefix.as_bytes());
    if p.len() >= pre.len() {
        return p[..pre.len()].eq_ignore_ascii_case(pre);
    }
    p.len() + 1 == pre.len() && pre[p.len()] == b'/' && pre[..p.len()].eq_ignore_ascii_case(p)
}

/// The loosest reading a server might give a path: every percent-escape decoded (three rounds,
/// for double encoding), `\` as `/`, `;parameters` dropped, dot segments resolved, empty segments
/// merged, ASCII lower-case.
pub fn normalise(raw: &str) -> String {
    let mut bytes = raw.as_bytes().to_vec();
    for _ in 0..3 {
        if !bytes.contains(&b'%') {
            break;
        }
        bytes = percent_decode(&bytes);
    }
    let mut segments: Vec<&[u8]> = Vec::new();
    let mut trailing = false;
    for segment in bytes.split(|&b| b == b'/' || b == b'\\') {
        let segment = segment.split(|&b| b == b';').next().unwrap_or_default();
        trailing = matches!(segment, b"" | b"." | b"..");
        match segment {
            b"" | b"." => {}
            b".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let mut out = Vec::with_capacity(bytes.len() + 1);
    for s in &segments {
        out.push(b'/');
        out.extend_from_slice(s);
    }
    if trailing || out.is_empty() {
        out.push(b'/');
    }
    out.make_ascii_lowercase();
    String::from_utf8_lossy(&out).into_owned()
}

fn percent_decode(bytes: &[u8]) -> Vec<u8> {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: &str = "/.ebb/v1/";

    #[test]
    fn the_prefix_as_written_routes() {
        for path in ["/.ebb/v1/state", "/.ebb/v1/faults?nonce=ab", "/.ebb/v1/pools/web/restore", "/.ebb/v1/faults/"] {
            assert_eq!(classify(P, path), PathClass::Control, "{path}");
        }
    }

    #[test]
    fn look_alikes_are_caught() {
        for path in [
            "/.EBB/v1/state",
            "/.ebb/V1/state",
            "/%2eebb/v1/state",
            "/%2Eebb%2Fv1%2Fstate",
            "/%252eebb/v1/state",
            "/x/../.ebb/v1/state",
            "/./.ebb/v1/state",
            "//.ebb/v1/state",
            "/.ebb//v1/state",
            "/.ebb/v1//faults",
            "/.ebb/v1/./faults",
            "\\.ebb\\v1\\state",
            "/.ebb;x=1/v1/state",
            "/.ebb/v1",
            "/.ebb/v1/faults/%2e%2e/state",
            ".ebb/v1/state",
        ] {
            assert_eq!(classify(P, path), PathClass::LookAlike, "{path}");
        }
    }

    #[test]
    fn ordinary_paths_pass() {
        for path in
            ["/", "/.ebbx/v1/state", "/api/.ebb/v1/state", "/.ebb/v2/state", "/static/app.js", "", "/%zz", "/a%"]
        {
            assert_eq!(classify(P, path), PathClass::Outside, "{path}");
        }
        // Escaping out of the prefix is not a look-alike: no server reads it as a control path.
        assert_eq!(classify(P, "/.ebb/v1/../../x"), PathClass::Outside);
    }

    #[test]
    fn prefixes() {
        assert!(valid_prefix("/.ebb/v1/") && valid_prefix("/_chaos/"));
        for bad in ["/", "//", "/a//b/", "/./", "/a/../", "/a%2e/", "a/", "/a", "/a b/"] {
            assert!(!valid_prefix(bad), "{bad}");
        }
    }
}
