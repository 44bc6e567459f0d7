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
