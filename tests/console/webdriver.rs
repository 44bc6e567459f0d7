// Headless Chromium driven over the W3C WebDriver protocol (chromedriver started by the test,
// stopped with it): open a page, run a script, click, read the browser's console log.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::http;

/// The element key of the W3C protocol.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// Longest wait for one WebDriver command: Chromium starting on two busy cores is the slow one.
const CALL_TIMEOUT: Duration = Duration::from_secs(120);

/// One browser at a time: two Chromiums starting at once on two cores time each other out.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

pub struct Browser {
    _turn: MutexGuard<'static, ()>,
    driver: Child,
    addr: SocketAddr,
    session: String,
    profile: PathBuf,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port()
}

/// The Chromium binary: Debian's real one rather than its wrapper script.
fn chromium() -> String {
    for path in ["/usr/lib/chromium/chromium", "/usr/bin/chromium", "/usr/bin/chromium-browser"] {
        if std::path::Path::new(path).exists() {
            return path.into();
        }
    }
    panic!("Chromium is not installed: install Debian's chromium and chromium-driver (.ci/run does)");
}

impl Browser {
    /// Starts chromedriver and a headless Chromium with an empty profile of its own.
    pub fn start() -> Browser {
        // A test that failed while holding the turn leaves the lock poisoned, not unusable.
        let turn = ONE_AT_A_TIME.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let port = free_port();
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver runs (Debian's chromium-driver; .ci/run installs it)");
        let profile = std::env::temp_dir().join(format!("ebb-console-chromium-{}-{port}", std::process::id()));
        let mut browser = Browser { _turn: turn, driver, addr, session: String::new(), profile };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not listen on {addr} within 20s");
            std::thread::sleep(Duration::from_millis(50));
        }
        let capabilities = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium(),
                "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                         "--disable-background-networking", "--disable-component-update", "--disable-sync",
                         "--window-size=1200,1600", format!("--user-data-dir={}", browser.profile.display())],
            },
            "goog:loggingPrefs": { "browser": "ALL" },
            "timeouts": { "pageLoad": 20000, "script": 20000 },
        }}});
        let reply = browser.call("POST", "/session", Some(capabilities));
        browser.session = reply["sessionId"].as_str().unwrap_or_else(|| panic!("no session: {reply}")).to_string();
        browser
    }

    /// One WebDriver command; its `value`. Panics on a WebDriver error.
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let headers: &[(&str, &str)] = if body.is_empty() { &[] } else { &[("Content-Type", "application/json")] };
        let reply = http::request_within(
            self.addr,
            &self.addr.to_string(),
            method,
            path,
            headers,
            body.as_bytes(),
            CALL_TIMEOUT,
        );
        let value: Value = serde_json::from_slice(&reply.body)
            .unwrap_or_else(|e| panic!("{method} {path}: not JSON ({e}): {}", reply.text()));
        assert!(reply.status == 200, "{method} {path}: {} {value}", reply.status);
        value["value"].clone()
    }

    fn session_path(&self, rest: &str) -> String {
        format!("/session/{}{rest}", self.session)
    }

    pub fn open(&self, url: &str) {
        self.call("POST", &self.session_path("/url"), Some(json!({ "url": url })));
    }

    /// Runs `script` (a function body) in the page; its return value.
    pub fn run(&self, script: &str) -> Value {
        self.call("POST", &self.session_path("/execute/sync"), Some(json!({ "script": script, "args": [] })))
    }

    /// Runs `script` until it returns `true`, or panics after `within` with `what`.
    pub fn wait_for(&self, what: &str, within: Duration, script: &str) {
        let deadline = Instant::now() + within;
        loop {
            if self.run(script) == Value::Bool(true) {
                return;
            }
            assert!(Instant::now() < deadline, "the page did not show {what} within {within:?}; log: {:?}", self.log());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Clicks the element `css` selects, as a user would (WebDriver's own pointer click).
    pub fn click(&self, css: &str) {
        let element =
            self.call("POST", &self.session_path("/element"), Some(json!({ "using": "css selector", "value": css })));
        let id = element[ELEMENT].as_str().unwrap_or_else(|| panic!("no element {css}: {element}")).to_string();
        self.call("POST", &self.session_path(&format!("/element/{id}/click")), Some(json!({})));
    }

    /// A PNG of the window, base64-encoded (written out when EBB_CONSOLE_SCREENSHOT names a file).
    pub fn screenshot_base64(&self) -> String {
        self.call("GET", &self.session_path("/screenshot"), None).as_str().unwrap_or_default().to_string()
    }

    /// The browser's console log since the last call: (level, message).
    pub fn log(&self) -> Vec<(String, String)> {
        let entries = self.call("POST", &self.session_path("/se/log"), Some(json!({ "type": "browser" })));
        entries
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|e| {
                        (e["level"].as_str().unwrap_or("").to_string(), e["message"].as_str().unwrap_or("").to_string())
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let path = self.session_path("");
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                http::request(self.addr, "DELETE", &path, &[], b"")
            }));
        }
        // chromedriver's own shutdown quits every browser it started, even one whose session we
        // never learnt (a start that timed out on our side); killing only the driver would orphan it.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            http::request_within(
                self.addr,
                &self.addr.to_string(),
                "GET",
                "/shutdown",
                &[],
                b"",
                Duration::from_secs(10),
            )
        }));
        let deadline = Instant::now() + Duration::from_secs(10);
        while matches!(self.driver.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}
