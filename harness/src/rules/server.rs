// The Prometheus server a `--rules` replay runs on loopback: started on a free port with an empty
// configuration and a temporary TSDB, fed by remote write, asked instant queries; always stopped and
// its folder removed (on drop, on error, and by Ctrl-C through a flag the replay checks).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::http::{Client, Url};
use crate::{signals, Clock};

use super::RulesError;

/// Longest wait for the server to answer /-/ready after it starts.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest wait for one HTTP exchange with it (a write or a query).
const IO_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest answer read from it.
const MAX_BODY: u64 = 64 << 20;
/// Ports tried before giving up (another program may take the free port first).
const PORT_ATTEMPTS: usize = 3;

/// Servers started by this process, to name their folders apart.
static STARTED: AtomicU64 = AtomicU64::new(0);

/// True once SIGINT/SIGTERM came while a server runs: the replay stops at its next evaluation.
pub fn interrupted() -> bool {
    signals::received().is_some()
}

pub struct Server {
    child: Child,
    dir: PathBuf,
    http: Client,
    url: Url,
}

impl Server {
    /// Starts `prometheus` from PATH on a new, temporary TSDB; waits (bounded) until it is ready.
    pub fn start() -> Result<Server, RulesError> {
        Server::start_on(None)
    }

    /// Starts `prometheus` on the TSDB in `data` (kept when it stops), or on a temporary one.
    pub fn start_on(data: Option<&Path>) -> Result<Server, RulesError> {
        let n = STARTED.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("ebb-rules-{}-{n}-{}", std::process::id(), Clock::real().now_ns()));
        let mut last = String::new();
        for _ in 0..PORT_ATTEMPTS {
            match Server::spawn(&dir, data) {
                Ok(server) => {
                    signals::install();
                    return Ok(server);
                }
                Err(Spawn::Fatal(e)) => {
                    let _ = std::fs::remove_dir_all(&dir);
                    return Err(e);
                }
                Err(Spawn::Retry(why)) => last = why,
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
        Err(RulesError::Prometheus(format!("did not start on loopback after {PORT_ATTEMPTS} attempts: {last}")))
    }

    fn spawn(dir: &Path, data: Option<&Path>) -> Result<Server, Spawn> {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| Spawn::Fatal(RulesError::Io(format!("finding a free loopback port: {e}"))))?
            .port();
        // Created at each attempt: a failed attempt's server removes the folder when dropped.
        std::fs::create_dir_all(dir.join("data"))
            .map_err(|e| Spawn::Fatal(RulesError::Io(format!("creating {}: {e}", dir.display()))))?;
        let config = dir.join("prometheus.yml");
        std::fs::write(&config, "# ebb replay --rules: no scrapes, no rules; ebb writes and queries.\nglobal: {}\n")
            .map_err(|e| Spawn::Fatal(RulesError::Io(format!("writing {}: {e}", config.display()))))?;
        let log_path = dir.join("prometheus.log");
        let log = std::fs::File::create(&log_path)
            .map_err(|e| Spawn::Fatal(RulesError::Io(format!("creating {}: {e}", log_path.display()))))?;
        let log2 = log.try_clone().map_err(|e| Spawn::Fatal(RulesError::Io(e.to_string())))?;
        let mut command = Command::new("prometheus");
        command
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", data.map_or_else(|| dir.join("data"), Path::to_path_buf).display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--web.enable-remote-write-receiver")
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2);
        #[cfg(target_os = "linux")]
        {
            use std::os::unix::process::CommandExt;
            // SAFETY: prctl(2) with PR_SET_PDEATHSIG is async-signal-safe and touches no memory of
            // the parent: the server is killed if ebb dies without stopping it (SIGKILL, a crash).
            unsafe {
                command.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                    Ok(())
                });
            }
        }
        let child = command.spawn().map_err(|e| {
            Spawn::Fatal(if e.kind() == std::io::ErrorKind::NotFound {
                RulesError::Missing("prometheus".into())
            } else {
                RulesError::Prometheus(format!("cannot start prometheus: {e}"))
            })
        })?;
        let url =
            Url::parse(&format!("http://127.0.0.1:{port}")).map_err(|e| Spawn::Fatal(RulesError::Io(e.to_string())))?;
        let http = Client::new(IO_TIMEOUT, MAX_BODY);
        let mut server = Server { child, dir: dir.to_path_buf(), http, url };
        let clock = Clock::real();
        let deadline = clock.now_ns().saturating_add(u64::try_from(READY_TIMEOUT.as_nanos()).unwrap_or(u64::MAX));
        loop {
            if let Ok(Some(status)) = server.child.try_wait() {
                let log = server.log_tail();
                // Stopped by Drop below; the folder stays for the next attempt.
                let why = format!("prometheus exited ({status}): {log}");
                return Err(if log.contains("address already in use") {
                    Spawn::Retry(why)
                } else {
                    Spawn::Fatal(RulesError::Prometheus(why))
                });
            }
            if interrupted() {
                return Err(Spawn::Fatal(RulesError::Interrupted));
            }
            if server.exchange("GET", "/-/ready", &[], &[]).is_ok_and(|(status, _)| status == 200) {
                return Ok(server);
            }
            if clock.now_ns() > deadline {
                let why = format!("not ready after {}s: {}", READY_TIMEOUT.as_secs(), server.log_tail());
                return Err(Spawn::Fatal(RulesError::Prometheus(why)));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its folder (configuration, log and, unless given, the TSDB): removed when it stops.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The last lines of the server's log, for error messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        let tail = lines[lines.len().saturating_sub(3)..].join(" / ");
        if tail.is_empty() {
            "(no log)".into()
        } else {
            tail.chars().take(600).collect()
        }
    }

    /// POSTs a remote-write body.
    pub fn write(&mut self, body: &[u8]) -> Result<(), RulesError> {
        let headers = [
            ("Content-Type", "application/x-protobuf"),
            ("Content-Encoding", "snappy"),
            ("X-Prometheus-Remote-Write-Version", "0.1.0"),
        ];
        let (status, answer) = self.exchange("POST", "/api/v1/write", &headers, body)?;
        if !(200..300).contains(&status) {
            let text = String::from_utf8_lossy(&answer);
            return Err(RulesError::Prometheus(format!("refused a remote write ({status}): {}", text.trim())));
        }
        Ok(())
    }

    /// An instant query at `t_ms`: the JSON answer (success or a query error alike).
    pub fn query(&mut self, expr: &str, t_ms: i64) -> Result<serde_json::Value, RulesError> {
        let body = format!("query={}&time={}.{:03}", form_encode(expr), t_ms.div_euclid(1000), t_ms.rem_euclid(1000));
        let headers = [("Content-Type", "application/x-www-form-urlencoded")];
        let (status, answer) = self.exchange("POST", "/api/v1/query", &headers, body.as_bytes())?;
        serde_json::from_slice(&answer).map_err(|e| {
            RulesError::Prometheus(format!("answered a query with {status} and no JSON ({e}): {}", self.log_tail()))
        })
    }

    fn exchange(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<(u16, Vec<u8>), RulesError> {
        let answer = self.http.call(&self.url, method, path, headers, body).map_err(|e| {
            if interrupted() {
                RulesError::Interrupted
            } else {
                RulesError::Prometheus(format!("{method} {path}: {e}; {}", self.log_tail()))
            }
        })?;
        Ok((answer.status, answer.body))
    }

    /// Stops the server and removes its folder (also done on drop).
    pub fn stop(self) {}
}

impl Drop for Server {
    fn drop(&mut self) {
        // SIGTERM first, so that it closes its TSDB; SIGKILL if it has not exited in 5 s.
        if let Ok(pid) = libc::pid_t::try_from(self.child.id()) {
            // SAFETY: kill(2) on our own child's pid, which it still is until we wait for it.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
        let clock = Clock::real();
        let deadline = clock.now_ns().saturating_add(5_000_000_000);
        while clock.now_ns() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
        signals::restore();
    }
}

enum Spawn {
    Retry(String),
    Fatal(RulesError),
}

/// `application/x-www-form-urlencoded` encoding of a value.
fn form_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 3);
    for b in text.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(b as char),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_encoding_keeps_promql_intact() {
        assert_eq!(form_encode("a{b=\"c d\"} > 0.5"), "a%7Bb%3D%22c%20d%22%7D%20%3E%200.5");
    }
}
