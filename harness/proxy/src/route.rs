// What the connection manager decides before any filter runs, with Envoy's rules: the path as
// normalised (`normalize_path`, `merge_slashes`), the virtual host and route, and RBAC's verdict.

use crate::bootstrap::{HeaderMatch, HttpManager, PathMatch, Permission, Rbac, RbacAction, Route, VirtualHost};

/// Envoy's `normalize_path` (RFC 3986 section 6: percent-decoding of unreserved characters,
/// upper-case hex, `.` and `..` segments removed) and `merge_slashes`, on the path part; the
/// query is kept as is. None: the path cannot be normalised (it climbs above the root with an
/// encoded slash, or is not absolute), and Envoy answers 400.
pub fn normalize(path: &str, normalize_path: bool, merge_slashes: bool) -> Option<String> {
    let (path_part, query) = match path.find('?') {
        Some(i) => path.split_at(i),
        None => (path, ""),
    };
    let mut out = path_part.to_string();
    if normalize_path {
        if !out.starts_with('/') {
            return None;
        }
        out = remove_dot_segments(&decode_unreserved(&out)?);
    }
    if merge_slashes {
        let mut merged = String::with_capacity(out.len());
        for c in out.chars() {
            if !(c == '/' && merged.ends_with('/')) {
                merged.push(c);
            }
        }
        out = merged;
    }
    Some(out + query)
}

/// Decodes `%XX` where XX is an unreserved character (ALPHA, DIGIT, `-._~`), upper-cases the
/// hex of the others; a malformed escape makes the path invalid.
fn decode_unreserved(path: &str) -> Option<String> {
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = path.get(i + 1..i + 3)?;
            let value = u8::from_str_radix(hex, 16).ok()?;
            if value.is_ascii_alphanumeric() || b"-._~".contains(&value) {
                out.push(char::from(value));
            } else {
                out.push('%');
                out.push_str(&hex.to_ascii_uppercase());
            }
            i += 3;
        } else {
            let c = path[i..].chars().next()?;
            out.push(c);
            i += c.len_utf8();
        }
    }
    Some(out)
}

/// RFC 3986 5.2.4 on an absolute path.
fn remove_dot_segments(path: &str) -> String {
    let mut segments: Vec<&str> = Vec::new();
    let parts: Vec<&str> = path.split('/').skip(1).collect();
    let last = parts.len().saturating_sub(1);
    for (i, seg) in parts.iter().enumerate() {
        match *seg {
            "." => {
                if i == last {
                    segments.push("");
                }
            }
            ".." => {
                segments.pop();
                if i == last {
                    segments.push("");
                }
            }
            s => segments.push(s),
        }
    }
    format!("/{}", segments.join("/"))
}

/// The virtual host for `authority` (port ignored), by Envoy's order: exact names, then the
/// longest `*.suffix`, then the longest `prefix.*`, then `*`.
pub fn virtual_host<'a>(manager: &'a HttpManager, authority: &str) -> Option<&'a VirtualHost> {
    // Case-insensitive without lower-cased copies: this runs for every request.
    let host = strip_port(authority);
    let mut best: Option<(u8, usize, &VirtualHost)> = None;
    for vh in &manager.virtual_hosts {
        for d in &vh.domains {
            let rank = if d == "*" {
                Some((0, 0))
            } else if let Some(suffix) = d.strip_prefix('*') {
                ends_with_ignore_case(host, suffix).then_some((2, suffix.len()))
            } else if let Some(prefix) = d.strip_suffix('*') {
                starts_with_ignore_case(host, prefix).then_some((1, prefix.len()))
            } else {
                (d.eq_ignore_ascii_case(host) || d.eq_ignore_ascii_case(authority)).then_some((3, d.len()))
            };
            if let Some((class, len)) = rank {
                if best.is_none_or(|(c, l, _)| (class, len) > (c, l)) {
                    best = Some((class, len, vh));
                }
            }
        }
    }
    best.map(|(_, _, vh)| vh)
}

fn ends_with_ignore_case(text: &str, suffix: &str) -> bool {
    let (text, suffix) = (text.as_bytes(), suffix.as_bytes());
    text.len() >= suffix.len() && text[text.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
}

fn starts_with_ignore_case(text: &str, prefix: &str) -> bool {
    let (text, prefix) = (text.as_bytes(), prefix.as_bytes());
    text.len() >= prefix.len() && text[..prefix.len()].eq_ignore_ascii_case(prefix)
}

fn strip_port(authority: &str) -> &str {
    if authority.starts_with('[') {
        return authority.split_once(']').map_or(authority, |(h, _)| &authority[..h.len() + 1]);
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => authority,
    }
}

/// The first route of `vh` that matches, in order, as Envoy picks it.
pub fn route<'a>(vh: &'a VirtualHost, path: &str, header: &dyn Fn(&str) -> Option<String>) -> Option<&'a Route> {
    let path_only = path.split('?').next().unwrap_or(path);
    vh.routes.iter().find(|r| {
        let path_ok = match &r.path {
            PathMatch::Prefix(p) => path_only.starts_with(p.as_str()),
            PathMatch::Exact(p) => path_only == p,
        };
        path_ok && r.headers.iter().all(|h| header_matches(h, header))
    })
}

fn header_matches(m: &HeaderMatch, header: &dyn Fn(&str) -> Option<String>) -> bool {
    let value = header(&m.name);
    let hit = match (&m.exact, value) {
        (None, v) => v.is_some(),
        (Some(want), Some(v)) => *want == v,
        (Some(_), None) => false,
    };
    hit != m.invert
}

/// RBAC's verdict: true when the request may go on. A policy matches when any of its
/// permissions does (principals are `any`); DENY refuses a match, ALLOW refuses a non-match.
pub fn rbac_allows(rbac: &Rbac, path: &str, header: &dyn Fn(&str) -> Option<String>) -> bool {
    // RBAC's url_path matches the path without its query, as Envoy's PathMatcher does.
    let path_only = path.split('?').next().unwrap_or(path);
    let matched = rbac.policies.iter().any(|policy| {
        policy.any_principal
            && policy.permissions.iter().any(|p| match p {
                Permission::Any => true,
                Permission::PathPrefix(prefix) => path_only.starts_with(prefix.as_str()),
                Permission::PathExact(exact) => path_only == exact,
                Permission::Header(h) => header_matches(h, header),
            })
    });
    match rbac.action {
        RbacAction::Deny => !matched,
        RbacAction::Allow => matched,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_normalised_as_envoy_does() {
        let n = |p| normalize(p, true, true);
        assert_eq!(n("/a/../.ebb/v1/state").as_deref(), Some("/.ebb/v1/state"));
        assert_eq!(n("//.ebb//v1/state?x=/../").as_deref(), Some("/.ebb/v1/state?x=/../"));
        assert_eq!(n("/%2eebb/v1/state").as_deref(), Some("/.ebb/v1/state"));
        assert_eq!(n("/a/%2f/b").as_deref(), Some("/a/%2F/b"));
        assert_eq!(n("/../../x").as_deref(), Some("/x"));
        assert_eq!(n("/a/.").as_deref(), Some("/a/"));
        assert_eq!(n("/%zz"), None);
        assert_eq!(n("relative"), None);
        assert_eq!(normalize("//a/../b", false, false).as_deref(), Some("//a/../b"));
    }

    #[test]
    fn virtual_hosts_are_chosen_by_envoys_order() {
        let vh = |name: &str, domains: &[&str]| VirtualHost {
            name: name.into(),
            domains: domains.iter().map(|d| d.to_string()).collect(),
            routes: vec![],
        };
        let manager = HttpManager {
            stat_prefix: "x".into(),
            normalize_path: false,
            merge_slashes: false,
            virtual_hosts: vec![
                vh("any", &["*"]),
                vh("suffix", &["*.example.org"]),
                vh("prefix", &["cdn.*"]),
                vh("exact", &["api.example.org"]),
            ],
            http_filters: vec![],
        };
        let pick = |a| virtual_host(&manager, a).map(|v| v.name.as_str());
        assert_eq!(pick("api.example.org:8080"), Some("exact"));
        assert_eq!(pick("www.example.org"), Some("suffix"));
        assert_eq!(pick("other"), Some("any"));
        assert_eq!(pick("cdn.example.net"), Some("prefix"));
        // Host names compare without regard to case, as Envoy lower-cases them.
        assert_eq!(pick("API.Example.ORG:8080"), Some("exact"));
        assert_eq!(pick("WWW.EXAMPLE.ORG"), Some("suffix"));
        assert_eq!(pick("CDN.example.net"), Some("prefix"));
        assert_eq!(pick("example.org"), Some("any"));
    }

    #[test]
    fn rbac_deny_matches_the_path_without_its_query() {
        let rbac = Rbac {
            action: RbacAction::Deny,
            policies: vec![crate::bootstrap::RbacPolicy {
                name: "p".into(),
                permissions: vec![Permission::PathPrefix("/.ebb/".into())],
                any_principal: true,
            }],
        };
        let none = |_: &str| None;
        assert!(!rbac_allows(&rbac, "/.ebb/v1/state?x", &none));
        assert!(rbac_allows(&rbac, "/web?/.ebb/", &none));
    }
}
