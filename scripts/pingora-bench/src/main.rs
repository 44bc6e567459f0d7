// A pass-through Pingora proxy, the engine issue 11 named first, measured beside `ebb proxy` and
// nginx by scripts/bench-proxy.sh (PINGORA=1): one upstream (UPSTREAM, HOST:PORT), listening on
// LISTEN, THREADS worker threads without work stealing (each thread its own runtime, as Envoy's).
use async_trait::async_trait;
use pingora_core::prelude::*;
use pingora_core::server::configuration::ServerConf;
use pingora_proxy::{ProxyHttp, Session};
use std::cell::Cell;

thread_local! {
    // Stands in for "this worker thread's VM": one per OS thread, touched per request.
    static PER_THREAD: Cell<u64> = const { Cell::new(0) };
}

struct Pass {
    upstream: String,
}

#[async_trait]
impl ProxyHttp for Pass {
    type CTX = ();
    fn new_ctx(&self) {}

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        PER_THREAD.with(|c| c.set(c.get() + 1));
        Ok(Box::new(HttpPeer::new(self.upstream.as_str(), false, String::new())))
    }
}

fn main() {
    let upstream = std::env::var("UPSTREAM").unwrap_or_else(|_| "127.0.0.1:18081".into());
    let listen = std::env::var("LISTEN").unwrap_or_else(|_| "127.0.0.1:18080".into());
    let threads: usize = std::env::var("THREADS").ok().and_then(|t| t.parse().ok()).unwrap_or(2);
    let conf = ServerConf { threads, work_stealing: false, ..ServerConf::default() };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut proxy = pingora_proxy::http_proxy_service(&server.configuration, Pass { upstream });
    proxy.add_tcp(&listen);
    server.add_service(proxy);
    server.run_forever();
}
