// The main thread of ebb proxy, as Envoy's: the main-thread VM of every Wasm filter (its ticks and
// logs) and the admin endpoint (/stats/prometheus, /stats, /ready, /config_dump, /quitquitquit).

use std::cell::RefCell;
use std::convert::Infallible;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ebb_host::{MetricKind, Proxy};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

use crate::bootstrap::ListenerKind;
use crate::filters::print_logs;
use crate::server::Shared;
use crate::stats::Page;

/// The main-thread VMs' tick precision.
const TICK_EVERY: Duration = Duration::from_millis(5);

pub fn run(shared: Arc<Shared>, main: Vec<Proxy>, socket: Option<std::net::TcpListener>) {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ebb proxy: main thread: cannot start its event loop: {e}");
            shared.stop();
            return;
        }
    };
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async move {
        let mut stop = shared.shutdown.subscribe();
        let listener = socket.and_then(|s| {
            s.set_nonblocking(true).ok()?;
            tokio::net::TcpListener::from_std(s).ok()
        });
        // The main VMs: ticked here, read by every admin request. Never borrowed across an await.
        let main = Rc::new(RefCell::new(main));
        // An item queued for a main-thread VM, from any worker, wakes this loop at once.
        let queued = Arc::new(tokio::sync::Notify::new());
        for proxy in main.borrow().iter() {
            let queued = queued.clone();
            proxy.set_queue_waker(move || queued.notify_one());
        }
        let mut every = tokio::time::interval(TICK_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            let woken = async {
                tokio::select! {
                    _ = every.tick() => {}
                    _ = queued.notified() => {}
                }
            };
            tokio::select! {
                _ = stop.changed() => break,
                _ = woken => {
                    for (i, proxy) in main.borrow_mut().iter_mut().enumerate() {
                        for e in proxy.tick() {
                            eprintln!("[error][main] {e}");
                        }
                        print_logs(proxy, &shared.labels[i], "main");
                    }
                }
                accepted = async { match &listener { Some(l) => l.accept().await.ok(), None => std::future::pending().await } } => {
                    let Some((socket, _)) = accepted else { continue };
                    let (shared, main) = (shared.clone(), main.clone());
                    tokio::task::spawn_local(async move {
                        // Each stats request renders its page at the moment of the call: Prometheus
                        // keeps its scrapes on one connection, and each must see the numbers of its
                        // time. Answered before any await, so the main VMs are never borrowed across one.
                        let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                            let response = answer(&shared, || render_pages(&shared, &main.borrow()), &req);
                            async move { Ok::<_, Infallible>(response) }
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(socket), service)
                            .await;
                    });
                }
            }
        }
    });
}

/// The pages the admin serves, rendered per request.
struct Pages {
    prometheus: String,
    stats: String,
}

fn render_pages(shared: &Shared, main: &[Proxy]) -> Pages {
    let t = &shared.tagger;
    let mut page = Page::default();
    let mut stats = Vec::new();
    let mut scalar = |page: &mut Page, name: String, kind: MetricKind, value: u64| {
        stats.push(format!("{name}: {value}"));
        page.scalar(t, &name, kind, value);
    };
    for u in &shared.upstreams {
        let s = &u.stats;
        let c = &u.name;
        scalar(
            &mut page,
            format!("cluster.{c}.upstream_rq_total"),
            MetricKind::Counter,
            s.rq.total.load(Ordering::Relaxed),
        );
        for (i, class) in s.rq.classes.iter().enumerate() {
            let n = class.load(Ordering::Relaxed);
            scalar(&mut page, format!("cluster.{c}.upstream_rq_{}xx", i + 1), MetricKind::Counter, n);
        }
        for (name, counter) in [
            ("upstream_cx_total", &s.cx_total),
            ("upstream_cx_overflow", &s.cx_overflow),
            ("upstream_cx_connect_fail", &s.cx_connect_fail),
            ("upstream_cx_connect_timeout", &s.cx_connect_timeout),
        ] {
            scalar(&mut page, format!("cluster.{c}.{name}"), MetricKind::Counter, counter.load(Ordering::Relaxed));
        }
        scalar(&mut page, format!("cluster.{c}.upstream_cx_active"), MetricKind::Gauge, u.connections());
        scalar(
            &mut page,
            format!("cluster.{c}.upstream_rq_timeout"),
            MetricKind::Counter,
            s.rq_timeout.load(Ordering::Relaxed),
        );
        scalar(
            &mut page,
            format!("cluster.{c}.upstream_rq_pending_overflow"),
            MetricKind::Counter,
            s.rq_pending_overflow.load(Ordering::Relaxed),
        );
        let members = s.membership_total.load(Ordering::Relaxed);
        scalar(&mut page, format!("cluster.{c}.membership_total"), MetricKind::Gauge, members);
        // No health checking: every endpoint counts as healthy, as in Envoy without health checks.
        scalar(&mut page, format!("cluster.{c}.membership_healthy"), MetricKind::Gauge, members);
        page.histogram(t, &format!("cluster.{c}.upstream_rq_time"), &s.rq.time);
    }
    for (i, l) in shared.bootstrap.listeners.iter().enumerate() {
        if let ListenerKind::Http { manager, .. } = &l.kind {
            let p = &manager.stat_prefix;
            let s = &shared.http_stats[i];
            scalar(
                &mut page,
                format!("http.{p}.downstream_rq_total"),
                MetricKind::Counter,
                s.total.load(Ordering::Relaxed),
            );
            for (k, class) in s.classes.iter().enumerate() {
                let n = class.load(Ordering::Relaxed);
                scalar(&mut page, format!("http.{p}.downstream_rq_{}xx", k + 1), MetricKind::Counter, n);
            }
            page.histogram(t, &format!("http.{p}.downstream_rq_time"), &s.time);
        }
        let address = l.address.to_string().replace(':', "_");
        let cx = shared.listener_stats[i].downstream_cx_total.load(Ordering::Relaxed);
        scalar(&mut page, format!("listener.{address}.downstream_cx_total"), MetricKind::Counter, cx);
    }
    // Proxies of one vm_id share one stats registry: render each registry once.
    let mut seen = std::collections::HashSet::new();
    for proxy in main {
        if !seen.insert(proxy.vm_id().to_string()) {
            continue;
        }
        let metrics = proxy.metrics();
        for m in &metrics {
            if m.kind != MetricKind::Histogram {
                stats.push(format!("wasmcustom.{}: {}", m.name, m.value));
            }
        }
        page.wasm(t, &metrics);
    }
    stats.sort();
    Pages { prometheus: page.render(), stats: stats.join("\n") + "\n" }
}

fn text(status: u16, content_type: &str, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

/// The answer to one admin request; `pages` renders the stats pages, only for the paths that show them.
fn answer(shared: &Shared, pages: impl FnOnce() -> Pages, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    match (req.method().as_str(), req.uri().path()) {
        ("GET", "/stats/prometheus") => text(200, "text/plain; version=0.0.4", pages().prometheus),
        ("GET", "/stats") => text(200, "text/plain", pages().stats),
        ("GET", "/ready") => text(200, "text/plain", "LIVE\n".into()),
        ("GET", "/config_dump") => text(200, "application/json", config_dump(shared)),
        ("POST", "/quitquitquit") => {
            shared.stop();
            text(200, "text/plain", "OK\n".into())
        }
        (_, "/quitquitquit") => text(405, "text/plain", "use POST\n".into()),
        _ => text(
            404,
            "text/plain",
            "admin pages: /stats/prometheus /stats /ready /config_dump /quitquitquit (POST)\n".into(),
        ),
    }
}

/// The served configuration with every Wasm filter's `control.key` redacted (Envoy shows it).
fn config_dump(shared: &Shared) -> String {
    let filters: Vec<serde_json::Value> = shared
        .bootstrap
        .wasm_filters()
        .map(|(l, w)| {
            let mut configuration: serde_json::Value = serde_json::from_slice(&w.configuration)
                .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&w.configuration).into_owned()));
            if let Some(key) = configuration.get_mut("control").and_then(|c| c.get_mut("key")) {
                *key = serde_json::Value::String("[redacted]".into());
            }
            serde_json::json!({
                "listener": l.name,
                "name": w.name,
                "root_id": w.root_id,
                "vm_id": w.vm_id,
                "code": w.code.display().to_string(),
                "configuration": configuration,
            })
        })
        .collect();
    let listeners: Vec<serde_json::Value> = shared
        .bootstrap
        .listeners
        .iter()
        .map(|l| serde_json::json!({"name": l.name, "address": l.address.to_string()}))
        .collect();
    let clusters: Vec<serde_json::Value> = shared
        .upstreams
        .iter()
        .map(|u| {
            serde_json::json!({"name": u.name, "endpoints": u.endpoints().iter().map(|e| e.to_string()).collect::<Vec<_>>()})
        })
        .collect();
    let dump = serde_json::json!({"listeners": listeners, "clusters": clusters, "wasm_filters": filters});
    serde_json::to_string_pretty(&dump).unwrap_or_default() + "\n"
}
