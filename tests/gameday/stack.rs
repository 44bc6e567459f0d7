// The staging loop around `ebb gameday`, started by the tests on loopback and stopped when
// dropped: Prometheus scraping ebb proxy's admin endpoint every second with the shipped alert
// rules (their `for:` shortened), Alertmanager routing the capacity alert to `ebb webhook`, which
// runs scripts/recover-pool.sh, and `ebb gameday` itself as a process.

use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::{free_port, http1};
use crate::util;
use crate::KEY;

/// Longest any one wait here may take.
const WAIT: Duration = Duration::from_secs(30);

/// A temporary folder, removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(what: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("ebb-gameday-{what}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        TempDir(dir)
    }

    pub fn file(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text).expect("write temp file");
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A server process (Prometheus, Alertmanager), killed when dropped.
pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    dir: TempDir,
}

impl Server {
    fn start(mut cmd: Command, addr: SocketAddr, dir: TempDir) -> Server {
        let log = std::fs::File::create(dir.0.join("log")).expect("log");
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(log);
        let child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {cmd:?} (Debian's package installed?): {e}"));
        let mut server = Server { child, addr, dir };
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("{cmd:?} exited ({status}):\n{}", server.log());
            }
            if std::net::TcpStream::connect(addr).is_ok() && http1(addr, "GET", "/-/ready", &[], b"").status == 200 {
                return server;
            }
            assert!(start.elapsed() < WAIT, "{cmd:?} never became ready:\n{}", server.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.0.join("log")).unwrap_or_default()
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// deploy/prometheus/ebb-alerts.yaml with every `for:` divided by `scale` (`for: 5m` is `for: 5s`
/// at 60): the shipped expressions, labels and annotations, on the game day's clock.
pub fn scaled_rules(scale: u64) -> String {
    let text = std::fs::read_to_string(util::workspace().join("deploy/prometheus/ebb-alerts.yaml")).expect("rules");
    let mut out = String::new();
    for line in text.lines() {
        match line.trim_start().strip_prefix("for: ") {
            Some(hold) => {
                let (n, unit) = hold.split_at(hold.len() - 1);
                let seconds = n.parse::<u64>().expect("a `for:` in whole units")
                    * match unit {
                        "s" => 1,
                        "m" => 60,
                        "h" => 3600,
                        _ => panic!("unexpected `for: {hold}`"),
                    };
                let indent = &line[..line.len() - line.trim_start().len()];
                out.push_str(&format!("{indent}for: {}ms", seconds * 1000 / scale));
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    assert!(out.contains(&format!("for: {}ms", 300_000 / scale)), "the capacity alert's `for: 5m` was scaled:\n{out}");
    out
}

/// Prometheus scraping `admin` every second, evaluating the rules (`for:` cut) every second and
/// sending alerts to `alertmanager`.
pub fn prometheus(admin: SocketAddr, alertmanager: SocketAddr) -> Server {
    let dir = TempDir::new("prometheus");
    // `for:` over 120 while the game day plays at 60: `for: 5m` holds 2m30s of scenario time, which
    // leaves Prometheus' scrape and evaluation lag (a second each, a minute each at 60x) room
    // inside the scenario's 8-minute detection SLO on a loaded machine.
    dir.file("ebb-alerts.yaml", &scaled_rules(120));
    let config = dir.file(
        "prometheus.yml",
        &format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\n\
             rule_files: [ebb-alerts.yaml]\n\
             alerting:\n  alertmanagers:\n  - static_configs:\n    - targets: ['{alertmanager}']\n\
             scrape_configs:\n- job_name: envoy\n  metrics_path: /stats/prometheus\n  static_configs:\n  - targets: ['{admin}']\n"
        ),
    );
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let mut cmd = Command::new(std::env::var("EBB_PROMETHEUS").unwrap_or_else(|_| "/usr/bin/prometheus".into()));
    cmd.arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.tsdb.path={}", dir.0.join("data").display()))
        .arg(format!("--web.listen-address={addr}"))
        .arg("--rules.alert.resend-delay=1s");
    Server::start(cmd, addr, dir)
}

/// Alertmanager with deploy/alertmanager/ebb-gameday.yml: EbbPoolBelowExpectedCapacity to the
/// webhook at `hook` with the bearer token in the file given (none configured when `hook` is
/// None), its waits cut for --time-scale 60.
pub fn alertmanager(hook: Option<(SocketAddr, &Path)>) -> Server {
    let dir = TempDir::new("alertmanager");
    let shipped =
        std::fs::read_to_string(util::workspace().join("deploy/alertmanager/ebb-gameday.yml")).expect("config");
    let mut text = shipped.clone();
    for (from, to) in [("group_wait: 10s", "group_wait: 0s"), ("group_interval: 1m", "group_interval: 1s")] {
        assert!(text.contains(from), "{from} in the shipped configuration");
        text = text.replace(from, to);
    }
    let url = "url: http://127.0.0.1:9095/recover-pool";
    assert!(text.contains(url), "the shipped webhook");
    let credentials = "credentials_file: /etc/ebb/webhook.token";
    assert!(text.contains(credentials), "the shipped bearer token");
    text = match hook {
        Some((addr, token)) => text
            .replace(url, &format!("url: http://{addr}/recover-pool"))
            .replace(credentials, &format!("credentials_file: {}", token.display())),
        // The receiver with nothing behind it: the alert fires and nobody recovers.
        None => text.split("  webhook_configs:").next().expect("receivers").to_string(),
    };
    let config = dir.file("alertmanager.yml", &text);
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let mut cmd =
        Command::new(std::env::var("EBB_ALERTMANAGER").unwrap_or_else(|_| "/usr/bin/prometheus-alertmanager".into()));
    cmd.arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.path={}", dir.0.join("data").display()))
        .arg(format!("--web.listen-address={addr}"))
        .arg("--cluster.listen-address=");
    Server::start(cmd, addr, dir)
}

/// `ebb webhook` as docs/staging.md runs it: Alertmanager's webhook, with the bearer token of
/// `token_file`, each notification piped into scripts/recover-pool.sh against `control`.
pub struct Webhook {
    pub addr: SocketAddr,
    pub process: Gameday,
}

impl Webhook {
    /// `ebb webhook --listen 127.0.0.1:0 ARGS -- COMMAND`, once it says where it listens.
    pub fn start(args: &[&str], command: &[&str], env: &[(&str, &str)]) -> Webhook {
        let mut cmd = Command::new(util::ebb_binary());
        cmd.arg("webhook").arg("--listen=127.0.0.1:0").args(args).arg("--").args(command).envs(env.iter().copied());
        let process = Gameday::spawn(cmd);
        process.wait_for("ebb webhook: listening on http://");
        let stderr = process.stderr();
        let addr = stderr
            .split("listening on http://")
            .nth(1)
            .and_then(|rest| rest.split(' ').next())
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no address in {stderr}"));
        Webhook { addr, process }
    }

    /// The receiver of the staging loop: scripts/recover-pool.sh against `control`, with the
    /// control key from a file, as docs/staging.md shows it.
    pub fn recover_pool(control: SocketAddr, dir: &TempDir) -> Webhook {
        let token = token_file(dir);
        let key = key_file(dir);
        let url = format!("EBB_CONTROL_URL=http://{control}");
        let key = format!("EBB_KEY_FILE={}", key.display());
        Webhook::start(
            &[&format!("--token-file={}", token.display())],
            &["env", &url, &key, "scripts/recover-pool.sh", "--verbose"],
            &[],
        )
    }

    /// What it logged: each run, its output and exit status.
    pub fn log(&self) -> String {
        self.process.stderr()
    }
}

/// The bearer token Alertmanager sends the webhook.
pub fn token_file(dir: &TempDir) -> PathBuf {
    dir.file("webhook.token", "gameday-webhook-token-8d1e\n")
}

/// A child's output stream, read on a thread of its own.
type Pipe = Box<dyn Read + Send>;

/// `ebb gameday` (or another `ebb` command) as a child process, its stdout and stderr read on threads.
pub struct Gameday {
    child: Child,
    stderr: Arc<Mutex<String>>,
    stdout: Arc<Mutex<String>>,
}

/// The key file of the tests' proxies.
pub fn key_file(dir: &TempDir) -> PathBuf {
    dir.file("control.key", &format!("{KEY}\n"))
}

impl Gameday {
    pub fn start(args: &[&str], env: &[(&str, &str)]) -> Gameday {
        let mut cmd = Command::new(util::ebb_binary());
        cmd.arg("gameday").args(args).envs(env.iter().copied());
        Gameday::spawn(cmd)
    }

    /// Any `ebb` command, run from the workspace without the caller's key in its environment.
    pub fn spawn(mut cmd: Command) -> Gameday {
        for var in ["EBB_KEY", "EBB_KEY_FILE"] {
            if !cmd.get_envs().any(|(k, _)| k == var) {
                cmd.env_remove(var);
            }
        }
        cmd.current_dir(util::workspace()).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        let stderr = Arc::new(Mutex::new(String::new()));
        let stdout = Arc::new(Mutex::new(String::new()));
        let pipes: [(Pipe, Arc<Mutex<String>>); 2] = [
            (Box::new(child.stderr.take().expect("stderr")), stderr.clone()),
            (Box::new(child.stdout.take().expect("stdout")), stdout.clone()),
        ];
        for (mut pipe, sink) in pipes {
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = pipe.read(&mut buf) {
                    if n == 0 {
                        return;
                    }
                    sink.lock().expect("output").push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            });
        }
        Gameday { child, stderr, stdout }
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().expect("stderr").clone()
    }

    pub fn stdout(&self) -> String {
        self.stdout.lock().expect("stdout").clone()
    }

    /// Waits until stderr shows `text` (a progress line).
    pub fn wait_for(&self, text: &str) {
        let start = Instant::now();
        while !self.stderr().contains(text) {
            assert!(start.elapsed() < WAIT, "ebb never said {text:?}:\n{}", self.stderr());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn signal(&self, signal: &str) {
        // bash's builtin kill: no procps needed on a minimal CI image.
        let status =
            Command::new("bash").arg("-c").arg(format!("kill -{signal} {}", self.child.id())).status().expect("kill");
        assert!(status.success());
    }

    /// Waits for the exit (within `within`): its status code, None when a signal ended it.
    pub fn wait(&mut self, within: Duration) -> Option<i32> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                // The reader threads take the last bytes.
                std::thread::sleep(Duration::from_millis(100));
                return status.code();
            }
            assert!(start.elapsed() < within, "ebb gameday did not end within {within:?}:\n{}", self.stderr());
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Gameday {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `ebb gameday ARGS` to its end: status, stdout, stderr.
pub fn gameday(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(util::ebb_binary())
        .arg("gameday")
        .args(args)
        .env_remove("EBB_KEY")
        .env_remove("EBB_KEY_FILE")
        .envs(env.iter().copied())
        .current_dir(util::workspace())
        .output()
        .expect("run ebb gameday")
}

pub fn scenario(name: &str) -> String {
    path(&util::workspace().join("scenarios").join(format!("{name}.json")))
}

pub fn path(p: &Path) -> String {
    p.display().to_string()
}
