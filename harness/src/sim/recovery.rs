// External recovery programs: the team's own script, run when an alert fires, with the alert as
// Alertmanager webhook JSON on stdin and a loopback URL where the replay serves the filter's
// control API. The script recovers with signed calls exactly as it would against staging Envoy:
// the loopback server hands each request, unchanged, to the simulation thread, which sends it
// through the simulated proxies' filter and returns the filter's answer.
//
// Simulated time stands still while the program runs: the simulation thread blocks in `run`,
// answering forwarded requests, until the program exits or its (real-time) timeout passes.

use std::convert::Infallible;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use hyper::{Request, Response, StatusCode};
use tokio::sync::oneshot;

use crate::clock::Clock;
use crate::control::{RawRequest, RawResponse};

/// Largest request body the loopback server reads. Control calls carry their command in a header;
/// a body is only read so that the filter can refuse it, as Envoy's would.
const MAX_BODY: usize = 64 * 1024;
/// How often the simulation thread looks at the program while no request comes in.
const POLL: std::time::Duration = std::time::Duration::from_millis(5);
/// Bytes of stdout and stderr kept (the end), and lines of them shown in a failure event.
const TAIL_BYTES: usize = 8 * 1024;
const TAIL_LINES: usize = 5;
/// Longest line of output shown in an event.
const TAIL_LINE_CHARS: usize = 200;

/// A request from a recovery program waiting for the filter's answer.
pub struct Forwarded {
    pub request: RawRequest,
    reply: oneshot::Sender<RawResponse>,
}

impl Forwarded {
    /// Sends the answer back to the caller (who may have given up: then nobody hears it).
    pub fn answer(self, response: RawResponse) {
        let _ = self.reply.send(response);
    }
}

/// The loopback HTTP server of one replay (127.0.0.1, a port the system picks), on a thread of its
/// own. Dropping it stops the server and closes every connection.
pub struct ControlServer {
    // First, so that it stops (thread joined) before `requests` is dropped.
    _server: crate::loopback::Server,
    url: String,
    requests: mpsc::Receiver<Forwarded>,
}

impl ControlServer {
    pub fn start() -> std::io::Result<ControlServer> {
        let listener = std::net::TcpListener::bind(("127.0.0.1", 0))?;
        listener.set_nonblocking(true)?;
        let url = format!("http://{}", listener.local_addr()?);
        let (to_sim, requests) = mpsc::channel();
        let server = crate::loopback::Server::spawn(
            listener,
            "recovery control server",
            "ebb-control-server",
            move |request| handle(request, to_sim.clone()),
        )?;
        Ok(ControlServer { url, requests, _server: server })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Answers requests nobody is serving now (from a program that finished but left something
    /// behind): simulated time has moved on, so they must not reach the filter late.
    fn refuse_pending(&self) {
        while let Ok(forwarded) = self.requests.try_recv() {
            forwarded.answer(refusal(
                503,
                "no recovery program is running: the replay takes control calls only while one runs",
            ));
        }
    }
}

async fn handle(
    request: Request<Incoming>,
    to_sim: mpsc::Sender<Forwarded>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = request.into_parts();
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(collected) => collected.to_bytes().to_vec(),
        Err(e) => {
            return Ok(http_response(refusal(413, &format!("request body unreadable or over {MAX_BODY} bytes: {e}"))))
        }
    };
    let request = RawRequest {
        method: parts.method.as_str().to_string(),
        path: parts.uri.path_and_query().map_or_else(|| "/".to_string(), |p| p.as_str().to_string()),
        headers: parts
            .headers
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
            .collect(),
        body,
    };
    let (reply, answer) = oneshot::channel();
    if to_sim.send(Forwarded { request, reply }).is_err() {
        return Ok(http_response(refusal(503, "the replay has ended")));
    }
    let response = answer.await.unwrap_or_else(|_| {
        refusal(503, "no recovery program is running: the replay takes control calls only while one runs")
    });
    Ok(http_response(response))
}

fn http_response(response: RawResponse) -> Response<Full<Bytes>> {
    let mut http = Response::new(Full::new(Bytes::from(response.body)));
    *http.status_mut() = StatusCode::from_u16(response.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    for (k, v) in &response.headers {
        // hyper frames the body itself.
        if k.eq_ignore_ascii_case("content-length") || k.eq_ignore_ascii_case("transfer-encoding") {
            continue;
        }
        if let (Ok(k), Ok(v)) = (HeaderName::from_bytes(k.as_bytes()), HeaderValue::from_str(v)) {
            http.headers_mut().append(k, v);
        }
    }
    http
}

/// An answer in the control API's own shape (`{"ok": false, "error": ...}`), for calls the
/// replay cannot put through the filter.
fn refusal(status: u16, error: &str) -> RawResponse {
    let body = serde_json::json!({ "ok": false, "status": status, "error": error }).to_string();
    RawResponse {
        status,
        headers: vec![(CONTENT_TYPE.as_str().to_string(), "application/json".into())],
        body: body.into_bytes(),
    }
}

/// One run of a recovery program.
pub struct Program<'a> {
    /// Program and arguments, as in the scenario.
    pub argv: &'a [String],
    /// The scenario's folder: the program runs there, and a relative program path starts there.
    pub dir: &'a Path,
    pub env: Vec<(&'static str, String)>,
    pub stdin: Vec<u8>,
    pub timeout: std::time::Duration,
}

/// How a run ended.
pub enum Outcome {
    /// The program could not be started (or waited for); the text says why.
    NotStarted(String),
    Exited {
        status: ExitStatus,
        took_s: f64,
        output: Output,
    },
    /// Killed, with what it started, when its timeout passed.
    TimedOut {
        took_s: f64,
        output: Output,
    },
}

/// The ends of the program's stdout and stderr.
#[derive(Default)]
pub struct Output {
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    /// A few last lines of each stream, for an event.
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        for (name, text) in [("stderr", &self.stderr), ("stdout", &self.stdout)] {
            let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
            if lines.is_empty() {
                continue;
            }
            let tail: Vec<String> = lines[lines.len().saturating_sub(TAIL_LINES)..]
                .iter()
                .map(|l| {
                    if l.chars().count() > TAIL_LINE_CHARS {
                        format!("{}…", l.chars().take(TAIL_LINE_CHARS).collect::<String>())
                    } else {
                        (*l).to_string()
                    }
                })
                .collect();
            parts.push(format!("{name}: {}", tail.join(" | ")));
        }
        if parts.is_empty() {
            "no output".into()
        } else {
            parts.join("; ")
        }
    }
}

/// Where the program is: a path with a `/` is taken from the scenario's folder (made absolute,
/// since the child starts in that folder and a relative path would be looked up again from
/// there); a bare name is looked up in `PATH`.
pub fn resolve(program: &str, dir: &Path) -> PathBuf {
    let path = Path::new(program);
    if path.is_absolute() || !program.contains('/') {
        return path.to_path_buf();
    }
    let joined = dir.join(path);
    std::path::absolute(&joined).unwrap_or(joined)
}

/// Runs `program` to its end or its timeout, answering its control calls with `forward` (which
/// sends them through the filter). Blocks the simulation, so simulated time waits.
pub fn run(
    program: &Program<'_>,
    server: &ControlServer,
    forward: &mut dyn FnMut(&RawRequest) -> RawResponse,
) -> Outcome {
    let Some((name, args)) = program.argv.split_first() else {
        return Outcome::NotStarted("no program given".into());
    };
    let path = resolve(name, program.dir);
    let mut command = Command::new(&path);
    command
        .args(args)
        // A key file from the user's own environment (for staging) would win over EBB_KEY in
        // scripts/ebb-ctl and sign with the wrong key.
        .env_remove("EBB_KEY_FILE")
        .envs(program.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if !program.dir.as_os_str().is_empty() {
        command.current_dir(program.dir);
    }
    // Its own process group, so that a timeout stops what it started too (a `sleep` in a shell
    // script would otherwise outlive it).
    #[cfg(unix)]
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    server.refuse_pending();
    let clock = Clock::real();
    let started = clock.now_ns();
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) => {
            let from = if path.as_os_str() == name.as_str() {
                "looked up in PATH".to_string()
            } else {
                format!("relative program paths start in the scenario's folder {}", display_dir(program.dir))
            };
            return Outcome::NotStarted(format!("cannot start {} ({from}): {e}", path.display()));
        }
    };
    if let Some(mut stdin) = child.stdin.take() {
        // The webhook JSON is a few hundred bytes, well within a pipe's buffer: this never blocks.
        // A program that does not read stdin may have exited already (broken pipe): not an error,
        // and not the SIGPIPE that `ebb` lets end it when its own output is closed (main.rs).
        without_sigpipe(|| {
            let _ = stdin.write_all(&program.stdin);
        });
    }
    let stdout = tail(child.stdout.take());
    let stderr = tail(child.stderr.take());
    let timeout_ns = u64::try_from(program.timeout.as_nanos()).unwrap_or(u64::MAX);
    let deadline = started.saturating_add(timeout_ns);
    let took = |clock: &Clock| clock.now_ns().saturating_sub(started) as f64 / 1e9;
    let ended = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Ok(status),
            Ok(None) => {}
            Err(e) => {
                stop(&mut child);
                return Outcome::NotStarted(format!("cannot wait for {}: {e}", path.display()));
            }
        }
        let now = clock.now_ns();
        if now >= deadline {
            stop(&mut child);
            break Err(());
        }
        let wait = std::time::Duration::from_nanos(deadline - now).min(POLL);
        match server.requests.recv_timeout(wait) {
            Ok(forwarded) => {
                let response = forward(&forwarded.request);
                forwarded.answer(response);
            }
            Err(RecvTimeoutError::Timeout) => {}
            // The server thread is gone (it logged why): the program sees refused connections.
            Err(RecvTimeoutError::Disconnected) => std::thread::sleep(wait),
        }
    };
    let took_s = took(&clock);
    if ended.is_ok() {
        // Whatever the program left running would act on a clock that has moved on.
        kill_group(&child);
    }
    server.refuse_pending();
    let output = Output { stdout: stdout.collect(), stderr: stderr.collect() };
    match ended {
        Ok(status) => Outcome::Exited { status, took_s, output },
        Err(()) => Outcome::TimedOut { took_s, output },
    }
}

/// Runs `write` with SIGPIPE blocked in this thread, and drops the SIGPIPE a write to a closed
/// pipe raised meanwhile: `ebb` runs with SIGPIPE's default action (death), which is right for
/// its stdout and wrong for a recovery program's stdin.
#[cfg(unix)]
fn without_sigpipe(write: impl FnOnce()) {
    // SAFETY: the sigset_t values live on this stack for the calls that take their addresses;
    // pthread_sigmask, sigpending and sigwait only read and write them and this thread's mask.
    unsafe {
        let mut pipe: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut pipe);
        libc::sigaddset(&mut pipe, libc::SIGPIPE);
        let blocked = libc::pthread_sigmask(libc::SIG_BLOCK, &pipe, &mut old) == 0;
        write();
        if blocked {
            let mut pending: libc::sigset_t = std::mem::zeroed();
            if libc::sigpending(&mut pending) == 0 && libc::sigismember(&pending, libc::SIGPIPE) == 1 {
                let mut signal = 0;
                libc::sigwait(&pipe, &mut signal);
            }
            libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        }
    }
}

#[cfg(not(unix))]
fn without_sigpipe(write: impl FnOnce()) {
    write();
}

fn display_dir(dir: &Path) -> String {
    if dir.as_os_str().is_empty() {
        "(the current directory)".into()
    } else {
        std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf()).display().to_string()
    }
}

/// Kills the program and its process group, and reaps it.
fn stop(child: &mut Child) {
    kill_group(child);
    let _ = child.kill();
    let _ = child.wait();
}

#[cfg(unix)]
fn kill_group(child: &Child) {
    if let Ok(pgid) = libc::pid_t::try_from(child.id()) {
        // SAFETY: kill(2) takes no pointers; a negative pid names the process group the child
        // leads (process_group(0) above). It fails harmlessly once the group is empty.
        unsafe {
            libc::kill(-pgid, libc::SIGKILL);
        }
    }
}

#[cfg(not(unix))]
fn kill_group(_child: &Child) {}

/// The end of a stream, read on a thread of its own so that a chatty program never blocks on a
/// full pipe. Detached: a process that keeps the pipe open cannot hold up the replay.
struct Tail {
    kept: Arc<Mutex<Vec<u8>>>,
    done: mpsc::Receiver<()>,
}

fn tail<R: Read + Send + 'static>(stream: Option<R>) -> Tail {
    let kept = Arc::new(Mutex::new(Vec::new()));
    let (finished, done) = mpsc::channel();
    if let Some(mut stream) = stream {
        let kept = Arc::clone(&kept);
        let spawned = std::thread::Builder::new().name("ebb-recovery-output".into()).spawn(move || {
            let mut chunk = [0u8; 4096];
            while let Ok(n) = stream.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                let mut kept = kept.lock().unwrap_or_else(|e| e.into_inner());
                kept.extend_from_slice(&chunk[..n]);
                let excess = kept.len().saturating_sub(TAIL_BYTES);
                kept.drain(..excess);
            }
            let _ = finished.send(());
        });
        if spawned.is_err() {
            log::warn!("recovery program output: cannot start a reader thread; output not kept");
        }
    }
    Tail { kept, done }
}

impl Tail {
    /// What was kept, once the stream ended (or after a moment, if something still holds it).
    fn collect(self) -> String {
        let _ = self.done.recv_timeout(std::time::Duration::from_millis(200));
        let kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        String::from_utf8_lossy(&kept).into_owned()
    }
}

/// The alert as an Alertmanager (webhook_config) notification, version 4, as a team's recovery
/// receiver gets it in production. `starts_at_s`: when the alert fired, Unix seconds.
pub fn webhook(alert: &str, pool: &str, summary: &str, starts_at_s: u64, external_url: &str) -> serde_json::Value {
    let labels = serde_json::json!({ "alertname": alert, "pool": pool, "severity": "page" });
    let annotations = serde_json::json!({ "summary": summary });
    serde_json::json!({
        "version": "4",
        "groupKey": format!("{{}}:{{alertname=\"{alert}\"}}"),
        "truncatedAlerts": 0,
        "status": "firing",
        "receiver": "ebb",
        "groupLabels": { "alertname": alert },
        "commonLabels": labels,
        "commonAnnotations": annotations,
        "externalURL": external_url,
        "alerts": [{
            "status": "firing",
            "labels": labels,
            "annotations": annotations,
            "startsAt": rfc3339(starts_at_s),
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "",
        }],
    })
}

/// Unix seconds as `YYYY-MM-DDTHH:MM:SSZ` (UTC).
pub fn rfc3339(unix_s: u64) -> String {
    let (days, secs) = (unix_s / 86_400, unix_s % 86_400);
    // Days to a civil date (H. Hinnant's algorithm), for dates from 1970 on.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", secs / 3600, secs / 60 % 60, secs % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_on_the_incident_day() {
        assert_eq!(rfc3339(1_612_483_200), "2021-02-05T00:00:00Z");
        assert_eq!(rfc3339(1_612_483_200 + 7 * 3600 + 10 * 60 + 15), "2021-02-05T07:10:15Z");
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_614_556_800), "2021-03-01T00:00:00Z");
    }

    #[test]
    fn relative_program_paths_start_in_the_scenario_folder() {
        let dir = Path::new("/work/scenarios");
        assert_eq!(resolve("../scripts/r.sh", dir), Path::new("/work/scenarios/../scripts/r.sh"));
        assert_eq!(resolve("python3", dir), Path::new("python3"));
        assert_eq!(resolve("/bin/true", dir), Path::new("/bin/true"));
    }

    #[test]
    fn output_summary_keeps_the_last_lines() {
        let output = Output { stdout: "a\nb\n".into(), stderr: (1..=9).map(|i| format!("e{i}\n")).collect() };
        assert_eq!(output.summary(), "stderr: e5 | e6 | e7 | e8 | e9; stdout: a | b");
        assert_eq!(Output::default().summary(), "no output");
    }
}
