//! Local replies to gRPC requests are trailers-only gRPC responses, as Envoy's
//! `Http::Utility::prepareLocalReply` (`source/common/http/utility.cc`) builds them for
//! `sendLocalReply` (reached from `Context::sendLocalResponse`,
//! `source/extensions/common/wasm/context.cc`); other requests ignore the filter's gRPC status.

use ebb_harness::{Message, Step};

use crate::util;

fn reply(content_type: Option<&str>, commands: &str) -> Message {
    let mut proxy = util::probe("", 1);
    let mut http = proxy.worker(0).expect("worker").http();
    let mut headers = util::request(commands);
    if let Some(ct) = content_type {
        headers.push(("content-type".into(), ct.into()));
    }
    let step = http.request_headers(&headers, true);
    assert!(matches!(step, Step::LocalReply(_)), "{step:?}");
    assert!(http.upstream_request().is_none());
    let client = http.client_response().expect("client response");
    http.finish().expect("finish");
    client
}

#[test]
fn a_grpc_deny_is_a_trailers_only_response_with_the_filters_status_and_message() {
    let client = reply(Some("application/grpc"), "grpc-reply");
    let h = |k: &str| client.headers.get_str(k);
    assert_eq!(h(":status").as_deref(), Some("200"));
    assert_eq!(h("content-type").as_deref(), Some("application/grpc"));
    assert_eq!(h("grpc-status").as_deref(), Some("7"), "the filter's gRPC status");
    // Http::Utility::PercentEncoding::encode: '%', '~' and non-ASCII bytes are escaped.
    assert_eq!(h("grpc-message").as_deref(), Some("denied: 100%25 %7Esure%C3%A9"));
    assert_eq!(h("x-local").as_deref(), Some("1"), "the filter's headers are kept");
    assert_eq!(h("content-length"), None);
    assert!(client.body.is_empty(), "trailers-only: no body");
}

#[test]
fn a_grpc_request_denied_with_an_http_status_gets_the_mapped_grpc_status() {
    // Grpc::Utility::httpToGrpcStatus (source/common/grpc/status.cc): 404 → 12 UNIMPLEMENTED.
    let client = reply(Some("application/grpc+proto"), "local-reply:404");
    assert_eq!(client.headers.get_str(":status").as_deref(), Some("200"));
    assert_eq!(client.headers.get_str("grpc-status").as_deref(), Some("12"));
    assert_eq!(client.headers.get_str("grpc-message").as_deref(), Some("denied by probe"));
    let client = reply(Some("application/grpc"), "local-reply:503");
    assert_eq!(client.headers.get_str("grpc-status").as_deref(), Some("14"));
}

#[test]
fn a_non_grpc_request_ignores_the_filters_grpc_status() {
    // Grpc::Common::hasGrpcContentType: application/grpc-web is not gRPC.
    for ct in [None, Some("application/grpc-web")] {
        let client = reply(ct, "grpc-reply");
        assert_eq!(client.headers.get_str(":status").as_deref(), Some("200"), "{ct:?}");
        assert_eq!(client.headers.get_str("grpc-status"), None, "{ct:?}");
        assert_eq!(client.body, "denied: 100% ~sure\u{e9}".as_bytes(), "{ct:?}");
    }
    let client = reply(None, "local-reply:403");
    assert_eq!(client.headers.get_str("grpc-status"), None);
}
