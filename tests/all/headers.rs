//! Header maps with Envoy's rules: get/add/replace/remove/pairs, lower-cased keys, first
//! value of repeated keys, maps outside their phase ⇒ BAD_ARGUMENT, NOT_FOUND for absent keys.

use ebb_harness::Step;

use crate::util::{self, result_of};

#[test]
fn header_operations_reach_the_upstream_with_lower_cased_keys() {
    let mut proxy = util::probe("", 1);
    let mut http = proxy.worker(0).expect("worker").http();
    let mut headers = util::request("add:X-Added=yes,replace:x-one=uno,remove:x-gone,get:X-Multi,get:x-absent");
    headers.push(("x-one".into(), "1".into()));
    headers.push(("X-Multi".into(), "first".into()));
    headers.push(("x-multi".into(), "second".into()));
    headers.push(("x-gone".into(), "bye".into()));
    assert!(matches!(http.request_headers(&headers, true), Step::Continue));
    let upstream = http.upstream_request().expect("reached the upstream");
    http.finish().expect("finish");
    let h = upstream.headers;
    assert_eq!(h.get(b"x-added"), Some(&b"yes"[..]));
    assert!(h.iter().any(|(k, _)| k == b"x-added"), "stored lower-cased: {h:?}");
    assert_eq!(h.get(b"x-one"), Some(&b"uno"[..]));
    assert_eq!(h.get(b"x-gone"), None);
    assert!(h.iter().any(|(k, _)| k == b"x-multi"), "caller keys lower-cased too: {h:?}");
    assert_eq!(result_of(&proxy, "get:X-Multi"), "(0, Some(\"first\"))", "first value of repeats");
    assert_eq!(result_of(&proxy, "get:x-absent"), "(1, None)", "NOT_FOUND");
}

#[test]
fn pairs_round_trip_and_set_pairs_replaces_the_map() {
    let mut proxy = util::probe("", 1);
    util::exchange(&mut proxy, 0, "pairs");
    assert_eq!(result_of(&proxy, "pairs"), ":method=GET|:path=/probe?x=1|:authority=app|x-probe=pairs");
    let mut http = proxy.worker(0).expect("worker").http();
    http.request_headers(&util::request("set-pairs::method=POST|:path=/new|x-only=1"), true);
    let up = http.upstream_request().expect("upstream").headers;
    http.finish().expect("finish");
    assert_eq!(
        up.to_strings(),
        vec![
            (":method".to_string(), "POST".to_string()),
            (":path".into(), "/new".into()),
            ("x-only".into(), "1".into())
        ]
    );
}

#[test]
fn maps_outside_their_phase_are_bad_argument() {
    let mut proxy = util::probe("", 1);
    // 2 = HTTP_RESPONSE_HEADERS, 1 = request trailers, 6 = call response headers.
    util::exchange(&mut proxy, 0, "get-map:2::status,get-map:1:x,get-map:6::status,get-map:9:x");
    for cmd in ["get-map:2::status", "get-map:1:x", "get-map:6::status", "get-map:9:x"] {
        assert_eq!(result_of(&proxy, cmd), "(2, None)", "{cmd}");
    }
}

#[test]
fn a_filter_changes_headers_only_by_writing_what_is_there() {
    // What a proxy reads to send its own copy of the headers instead of the filter's map: a
    // removal of an absent header (a filter stripping headers requests rarely carry) changes
    // nothing; removing a present one, adding or replacing does.
    for (commands, extra, changed) in [
        ("get:x-one,remove:x-absent", None, false),
        ("remove:x-gone", Some(("x-gone", "bye")), true),
        ("add:x-added=1", None, true),
        ("replace:x-one=uno", None, true),
        ("set-pairs::method=GET|:path=/|:authority=app", None, true),
    ] {
        let mut proxy = util::probe("", 1);
        let mut http = proxy.worker(0).expect("worker").http();
        let mut headers = util::request(commands);
        headers.extend(extra.map(|(k, v)| (k.to_string(), v.to_string())));
        let map = ebb_harness::HeaderMap::from_pairs(&headers);
        assert!(matches!(http.request_header_map(&map, true), Step::Continue), "{commands}");
        assert_eq!(http.request_headers_changed(), changed, "{commands}");
        let out = http.request_headers_out().expect("forwarded").clone();
        assert_eq!(out, http.upstream_request().expect("forwarded").headers, "{commands}: the same map, lent");
        if !changed {
            assert_eq!(out, map, "{commands}: unchanged means equal");
        }
        // The probe sets x-probe-seen on every response.
        assert!(matches!(
            http.response_header_map(&ebb_harness::HeaderMap::from_pairs(&[(":status", "200")]), true),
            Step::Continue
        ));
        assert!(http.response_headers_changed());
        assert_eq!(http.response_headers_out().and_then(|h| h.get(b"x-probe-seen")), Some(&b"1"[..]));
        http.finish().expect("finish");
    }
}
