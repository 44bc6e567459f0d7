// The live console of `ebb gameday` end to end: its server on loopback fed by a scripted game day,
// the page built by `make console` in real headless Chromium (over WebDriver), and raw HTTP for
// what a browser would not send: no token, a wrong Host, a foreign Origin. Every wait is bounded.

// These tests wait on a real browser and sockets, so they read the wall clock to bound each wait
// (the harness's own rule, one clock, is about the code under test).
#![allow(clippy::disallowed_types)]

mod driver;
mod http;
mod webdriver;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ebb_harness::console::live::LiveEvent;
use ebb_harness::console::{Console, ConsoleError, ConsoleOptions};
use serde_json::Value;
use webdriver::Browser;

/// The page built by `make console` (which `make test` runs first).
fn assets() -> PathBuf {
    let dir = std::env::var_os("EBB_CONSOLE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../dist/console"));
    assert!(dir.join("ebb_console_bg.wasm").is_file(), "{} is not built: run `make console` first", dir.display());
    dir
}

fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().expect("an address")
}

fn console() -> (Console, Arc<AtomicBool>) {
    let halt = Arc::new(AtomicBool::new(false));
    let options = ConsoleOptions { assets: Some(assets()), allow_remote: false };
    let console = Console::start_with(loopback(), halt.clone(), options).expect("the console starts");
    (console, halt)
}

fn token_of(console: &Console) -> String {
    console.url().split_once("?token=").expect("a token in the URL").1.to_string()
}

fn publish(console: &Console, events: &[LiveEvent]) {
    for e in events {
        console.publish(e);
    }
}

/// Waits for `flag` to be set, up to `within`.
fn wait_flag(flag: &AtomicBool, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while !flag.load(Ordering::SeqCst) {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

#[test]
fn the_page_follows_the_game_day_and_halt_sets_the_kill_switch() {
    let (console, halt) = console();
    let url = console.url();
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    publish(&console, &driver::drain());

    let browser = Browser::start();
    browser.open(&url);
    // The history is drawn: both pools, web drained to 5 of 10, the alert firing on web's chart only.
    browser.wait_for(
        "both pools' charts",
        Duration::from_secs(20),
        "return document.querySelectorAll('svg.chart').length === 2 && document.getElementById('console').dataset.events === '8'",
    );
    let seen = browser.run(
        "const now = p => document.querySelector(`svg.chart[data-pool=\"${p}\"] text.now`).textContent;
         const spans = p => document.querySelectorAll(`svg.chart[data-pool=\"${p}\"] rect.span`).length;
         return { web: now('web'), ssh: now('ssh'), webSpans: spans('web'), sshSpans: spans('ssh'),
                  pools: [...document.querySelectorAll('svg.chart')].map(s => s.dataset.pool),
                  phase: document.getElementById('phase').textContent,
                  commands: document.querySelectorAll('tr.command').length,
                  firing: document.querySelector('tr.alert.firing td').textContent,
                  detect: document.querySelector('tr.slo.met td').textContent };",
    );
    assert_eq!(seen["pools"], serde_json::json!(["web", "ssh"]), "{seen}");
    assert_eq!(seen["web"], "5/10", "{seen}");
    assert_eq!(seen["ssh"], "4/4", "{seen}");
    assert_eq!((seen["webSpans"].as_u64(), seen["sshSpans"].as_u64()), (Some(1), Some(0)), "{seen}");
    assert_eq!(seen["phase"], "deploy aborted", "{seen}");
    assert_eq!(seen["commands"], 2, "{seen}");
    assert_eq!(seen["firing"], "EbbPoolBelowExpectedCapacity web", "{seen}");
    assert_eq!(seen["detect"], "detect within 10m", "{seen}");
    // The restore-SLO's clock counts down while the page is open.
    let clock = "return document.querySelector('tr.slo.running td.clock').textContent";
    let first = browser.run(clock);
    assert!(first.as_str().is_some_and(|c| c.ends_with(" left")), "{first}");
    browser.wait_for(
        "the SLO clock moving",
        Duration::from_secs(10),
        &format!("return document.querySelector('tr.slo.running td.clock').textContent !== {first}"),
    );

    // Halt: the button asks the server, which sets the runner's kill-switch flag.
    assert!(!halt.load(Ordering::SeqCst));
    browser.click("#halt");
    assert!(wait_flag(&halt, Duration::from_secs(10)), "Halt did not reach the halt flag");
    browser.wait_for(
        "Halt's answer",
        Duration::from_secs(10),
        "return document.getElementById('halt-result').textContent.startsWith('halt requested')",
    );
    // The server says so on every open page.
    browser.wait_for(
        "the halt note",
        Duration::from_secs(10),
        "return document.getElementById('notes').textContent.includes('Halt pressed in the console')",
    );

    // Live events keep arriving: the recovery restores web, and the verdict ends the page.
    publish(&console, &driver::restore());
    browser.wait_for(
        "the restore and the verdict",
        Duration::from_secs(10),
        "const v = document.getElementById('verdict');
         return v !== null && v.textContent === 'PASS'
           && document.querySelector('svg.chart[data-pool=\"web\"] text.now').textContent === '10/10'
           && document.getElementById('halt').disabled",
    );
    let problems: Vec<_> = browser.log().into_iter().filter(|(level, _)| level != "INFO" && level != "DEBUG").collect();
    assert!(problems.is_empty(), "the browser's console reported: {problems:?}");
    let shown = browser.run("return document.getElementById('problem').textContent");
    assert_eq!(shown, "", "the page reported a problem");
    if let Some(file) = std::env::var_os("EBB_CONSOLE_SCREENSHOT") {
        std::fs::write(file, browser.screenshot_base64()).expect("screenshot written");
    }
    drop(browser);
    console.close();
}

/// A page on another origin (another loopback port), with no policy of its own: what an attacker's
/// tab would be. Serves a few requests, for at most 30 s.
fn attacker_page() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    let addr = listener.local_addr().expect("an address");
    listener.set_nonblocking(true).expect("nonblocking");
    std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut served = 0;
        while served < 8 && Instant::now() < deadline {
            match listener.accept() {
                Ok((mut stream, _)) => {
                    use std::io::{Read, Write};
                    let _ = stream.set_nonblocking(false);
                    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
                    let mut head = [0u8; 4096];
                    let _ = stream.read(&mut head);
                    let page = "<!DOCTYPE html><html><head><link rel=\"icon\" href=\"data:,\"></head><body>elsewhere</body></html>";
                    let _ = write!(
                        stream,
                        "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{page}",
                        page.len()
                    );
                    served += 1;
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    });
    addr
}

#[test]
fn a_page_on_another_origin_cannot_halt() {
    // A page elsewhere that knows the token still cannot make the browser send Halt: the custom
    // header needs CORS consent, which the console never gives, and a form carries no header.
    let (console, halt) = console();
    let token = token_of(&console);
    let browser = Browser::start();
    browser.open(&format!("http://{}/", attacker_page()));
    let outcome = browser.run(&format!(
        "return fetch('http://{}/halt', {{ method: 'POST', headers: {{ 'X-Ebb-Token': '{token}' }} }})
           .then(r => 'status ' + r.status, e => 'blocked: ' + e.name)
           .then(s => {{ window.__ebb = s; return s; }}) && null",
        console.addr()
    ));
    assert_eq!(outcome, Value::Null);
    browser.wait_for("the cross-origin fetch to settle", Duration::from_secs(10), "return window.__ebb !== undefined");
    let outcome = browser.run("return window.__ebb");
    assert_eq!(outcome, "blocked: TypeError", "{outcome}");
    // A plain form post from there carries no header at all.
    browser.run(&format!(
        "const f = document.createElement('form'); f.method = 'POST'; f.action = 'http://{}/halt?token={token}';
         document.body.appendChild(f); f.submit(); return null;",
        console.addr()
    ));
    std::thread::sleep(Duration::from_millis(500));
    assert!(!halt.load(Ordering::SeqCst), "a request from another origin set the halt flag");
    // The browser said why: the console gave no CORS consent. (This also shows that the log the
    // first test finds empty is the browser's real console log.)
    let log = browser.log();
    assert!(log.iter().any(|(level, message)| level == "SEVERE" && message.contains("CORS")), "{log:?}");
    drop(browser);
}

#[test]
fn every_request_needs_the_token_and_halt_needs_it_in_a_header() {
    let (console, halt) = console();
    let token = token_of(&console);
    let addr = console.addr();
    let origin = format!("http://{addr}");
    for path in ["/", "/index.html", "/events", "/boot.js", "/ebb_console_bg.wasm", "/nothing"] {
        let reply = http::request(addr, "GET", path, &[], b"");
        assert_eq!(reply.status, 401, "GET {path} without the token: {}", reply.text());
        let wrong = format!("{path}?token={}", "0".repeat(64));
        assert_eq!(http::request(addr, "GET", &wrong, &[], b"").status, 401, "GET {path} with a wrong token");
    }
    // The token in the URL, a cookie or the body does not do for Halt: only the header.
    let in_query = format!("/halt?token={token}");
    let cookie = format!("token={token}");
    let reply = http::request(addr, "POST", &in_query, &[("Origin", &origin), ("Cookie", &cookie)], token.as_bytes());
    assert_eq!(reply.status, 401, "{}", reply.text());
    assert!(!halt.load(Ordering::SeqCst));

    // With it: the page, with the token written into its script URL and a strict policy.
    let page = http::request(addr, "GET", &format!("/?token={token}"), &[], b"");
    assert_eq!(page.status, 200);
    assert!(page.text().contains(&format!("boot.js?token={token}")));
    assert!(page.header("content-security-policy").is_some_and(|c| c.contains("default-src 'none'")));
    let wasm = http::request(addr, "GET", &format!("/ebb_console_bg.wasm?token={token}"), &[], b"");
    assert_eq!((wasm.status, wasm.header("content-type")), (200, Some("application/wasm")));
    assert_eq!(&wasm.body[..4], b"\0asm");
    // A name that is not this server's (a DNS-rebinding page) is refused even with the token.
    let rebound = http::request_as(
        addr,
        &format!("attacker.example:{}", addr.port()),
        "GET",
        &format!("/?token={token}"),
        &[],
        b"",
    );
    assert_eq!(rebound.status, 421);

    let reply = http::request(addr, "POST", "/halt", &[("Origin", &origin), ("X-Ebb-Token", &token)], b"");
    assert_eq!(reply.status, 202, "{}", reply.text());
    assert!(halt.load(Ordering::SeqCst));
}

#[test]
fn a_post_from_a_foreign_origin_is_refused() {
    let (console, halt) = console();
    let token = token_of(&console);
    let addr = console.addr();
    for origin in [Some("http://attacker.example"), Some("null"), Some("https://127.0.0.1:1"), None] {
        let mut headers = vec![("X-Ebb-Token", token.as_str())];
        if let Some(o) = origin {
            headers.push(("Origin", o));
        }
        let reply = http::request(addr, "POST", "/halt", &headers, b"");
        assert_eq!(reply.status, 403, "Origin {origin:?}: {}", reply.text());
    }
    assert!(!halt.load(Ordering::SeqCst), "a foreign origin set the halt flag");
    let own = format!("http://localhost:{}", addr.port());
    let reply = http::request_as(
        addr,
        &format!("localhost:{}", addr.port()),
        "POST",
        "/halt",
        &[("Origin", &own), ("X-Ebb-Token", &token)],
        b"",
    );
    assert_eq!(reply.status, 202, "the page's own origin by name: {}", reply.text());
    assert!(halt.load(Ordering::SeqCst));
}

#[test]
fn a_console_that_connects_late_gets_the_start_the_history_and_then_live_events() {
    let (console, _) = console();
    let token = token_of(&console);
    let drain = driver::drain();
    publish(&console, &drain);
    let path = format!("/events?token={token}");
    let addr = console.addr();
    let reader = std::thread::spawn(move || {
        http::read_events(addr, &path, Duration::from_secs(20), |events| {
            events.iter().any(|e| e.contains(r#""type":"end""#))
        })
    });
    // Published while the stream is open: they arrive live, after the history.
    std::thread::sleep(Duration::from_millis(300));
    publish(&console, &driver::restore());
    let (status, events) = reader.join().expect("the reader");
    assert_eq!(status, 200);
    let parsed: Vec<LiveEvent> = events.iter().map(|e| serde_json::from_str(e).expect("an event")).collect();
    let expected: Vec<LiveEvent> = drain.into_iter().chain(driver::restore()).collect();
    assert_eq!(parsed, expected);
    // After the end, a new stream gets the whole game day and then ends (the page does not spin).
    let (status, again) =
        http::read_events(addr, &format!("/events?token={token}"), Duration::from_secs(10), |_| false);
    assert_eq!((status, again.len()), (200, expected.len()));
}

#[test]
fn it_listens_on_loopback_unless_told_otherwise_and_needs_its_page_built() {
    let halt = Arc::new(AtomicBool::new(false));
    let anywhere: SocketAddr = "0.0.0.0:0".parse().expect("an address");
    let refused =
        Console::start_with(anywhere, halt.clone(), ConsoleOptions { assets: Some(assets()), allow_remote: false });
    match refused {
        Err(e @ ConsoleError::NotLoopback { .. }) => assert!(e.to_string().contains("--console-allow-remote"), "{e}"),
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("listened on 0.0.0.0 without being allowed to"),
    }
    let allowed =
        Console::start_with(anywhere, halt.clone(), ConsoleOptions { assets: Some(assets()), allow_remote: true })
            .expect("allowed explicitly");
    assert!(allowed.addr().ip().is_unspecified());
    drop(allowed);

    let empty = std::env::temp_dir().join(format!("ebb-console-empty-{}", std::process::id()));
    std::fs::create_dir_all(&empty).expect("a folder");
    let missing =
        Console::start_with(loopback(), halt, ConsoleOptions { assets: Some(empty.clone()), allow_remote: false });
    let _ = std::fs::remove_dir_all(&empty);
    match missing {
        Err(e @ ConsoleError::AssetsMissing { .. }) => assert!(e.to_string().contains("make console"), "{e}"),
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("started without its page"),
    }
}

#[test]
fn closing_the_console_stops_its_server() {
    let (console, _) = console();
    let addr = console.addr();
    let token = token_of(&console);
    let stream = std::thread::spawn(move || {
        http::read_events(addr, &format!("/events?token={token}"), Duration::from_secs(20), |_| false)
    });
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    console.close();
    let (status, _) = stream.join().expect("the reader");
    assert_eq!(status, 200);
    assert!(started.elapsed() < Duration::from_secs(5), "an open stream held the close for {:?}", started.elapsed());
    assert!(std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_err(), "still listening");
}
