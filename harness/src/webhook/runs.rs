// The command runs of `ebb webhook`: one per notification, never two at once for one alert group
// (a notification arriving while its group's command runs waits, the newest replacing an older
// one still waiting), each bounded by a timeout that kills its whole process group.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use crate::clock::Clock;

use super::notification::Notification;

/// Most alert groups with a command running or waiting at once; beyond, a notification is
/// refused (503) and Alertmanager sends it again later.
pub const MAX_GROUPS: usize = 32;
/// Bytes of a command's stdout and stderr logged (each, the start).
const MAX_OUTPUT: u64 = 16 * 1024;
/// How often a running command is looked at.
const POLL: Duration = Duration::from_millis(20);

/// What became of a notification handed over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accepted {
    /// Its command started.
    Started,
    /// Its group's command is running: this one runs after it.
    Queued,
    /// Too many groups at once, or the receiver is stopping: try again later.
    Refused,
}

struct Group {
    /// The notification to run once the running command ends.
    waiting: Option<Notification>,
}

struct State {
    groups: HashMap<String, Group>,
    stopping: bool,
}

/// The command and the groups with a command running.
pub struct Runs {
    argv: Vec<String>,
    timeout: Duration,
    state: Mutex<State>,
    idle: Condvar,
}

impl Runs {
    pub fn new(argv: Vec<String>, timeout: Duration) -> Arc<Runs> {
        Arc::new(Runs {
            argv,
            timeout,
            state: Mutex::new(State { groups: HashMap::new(), stopping: false }),
            idle: Condvar::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A poisoned lock only means a run's thread panicked: the map is still consistent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs the command for `n` now, or after its group's running command.
    pub fn submit(self: &Arc<Runs>, n: Notification) -> Accepted {
        let mut state = self.lock();
        if state.stopping {
            return Accepted::Refused;
        }
        if let Some(group) = state.groups.get_mut(&n.group_key) {
            if let Some(old) = group.waiting.replace(n) {
                log(&format!("{}: a newer notification replaces the one waiting ({})", old.describe(), old.status));
            }
            return Accepted::Queued;
        }
        if state.groups.len() >= MAX_GROUPS {
            log(&format!("{}: refused, {MAX_GROUPS} alert groups already running", n.describe()));
            return Accepted::Refused;
        }
        state.groups.insert(n.group_key.clone(), Group { waiting: None });
        drop(state);
        let runs = self.clone();
        let key = n.group_key.clone();
        let spawned = std::thread::Builder::new().name("ebb-webhook-run".into()).spawn(move || runs.group(n));
        if let Err(e) = spawned {
            log(&format!("cannot start a thread for the command: {e}"));
            self.lock().groups.remove(&key);
            self.idle.notify_all();
            return Accepted::Refused;
        }
        Accepted::Started
    }

    /// The runs of one group, one after the other, until none is waiting.
    fn group(&self, mut n: Notification) {
        loop {
            self.run(&n);
            let mut state = self.lock();
            let stopping = state.stopping;
            let Some(group) = state.groups.get_mut(&n.group_key) else { return };
            match group.waiting.take() {
                Some(next) if !stopping => n = next,
                left => {
                    if let Some(dropped) = left {
                        log(&format!("{}: stopping, the waiting notification is not run", dropped.describe()));
                    }
                    state.groups.remove(&n.group_key);
                    self.idle.notify_all();
                    return;
                }
            }
        }
    }

    /// Takes no more notifications and waits for the running commands (each within its timeout);
    /// waiting ones are dropped.
    pub fn stop(&self) {
        let mut state = self.lock();
        state.stopping = true;
        let running = state.groups.len();
        if running > 0 {
            log(&format!(
                "stopping: waiting for {running} running command(s), each within its {:?} timeout",
                self.timeout
            ));
        }
        while !state.groups.is_empty() {
            state = self.idle.wait(state).unwrap_or_else(|e| e.into_inner());
        }
    }

    fn run(&self, n: &Notification) {
        let shown = self.argv.join(" ");
        let who = n.describe();
        log(&format!("{who}: {} notification ({} alert(s), {} firing): running {shown}", n.status, n.alerts, n.firing));
        let clock = Clock::real();
        let started = clock.now_ns();
        let (outcome, stdout, stderr) = run_command(&self.argv, n, self.timeout, &clock);
        let took = clock.now_ns().saturating_sub(started) as f64 / 1e9;
        for (name, text) in [("stdout", stdout), ("stderr", stderr)] {
            for line in text.lines().filter(|l| !l.trim().is_empty()) {
                log(&format!("{who}: {name}: {line}"));
            }
        }
        match outcome {
            Ok(Some(status)) => {
                let how = status.code().map_or_else(|| status.to_string(), |c| format!("exit {c}"));
                log(&format!("{who}: {shown}: {how} after {took:.2}s"));
            }
            Ok(None) => log(&format!("{who}: {shown}: killed at its timeout ({:?}) after {took:.2}s", self.timeout)),
            Err(e) => log(&format!("{who}: cannot run {shown}: {e}")),
        }
    }
}

fn log(line: &str) {
    eprintln!("ebb webhook: {line}");
}

/// Runs `argv` with the notification on stdin and its labels in the environment: its exit
/// status (None: killed at `timeout`) and the start of its stdout and stderr.
fn run_command(
    argv: &[String],
    n: &Notification,
    timeout: Duration,
    clock: &Clock,
) -> (std::io::Result<Option<ExitStatus>>, String, String) {
    let Some((program, args)) = argv.split_first() else {
        return (Err(std::io::Error::other("no command")), String::new(), String::new());
    };
    let mut command = Command::new(program);
    command.args(args).envs(n.env()).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    // Its own process group, so that a timeout stops what it started too.
    #[cfg(unix)]
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) => return (Err(e), String::new(), String::new()),
    };
    let body = n.body.clone();
    let stdin = child.stdin.take().map(|mut pipe| {
        // A writer thread: a notification larger than a pipe's buffer must not block the timeout.
        std::thread::spawn(move || {
            let _ = pipe.write_all(&body);
        })
    });
    let read = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut text = Vec::new();
            if let Some(pipe) = pipe {
                let mut pipe = pipe.take(MAX_OUTPUT);
                let _ = pipe.read_to_end(&mut text);
                // Drain the rest, so the command never blocks on a full pipe.
                let _ = std::io::copy(pipe.get_mut(), &mut std::io::sink());
            }
            String::from_utf8_lossy(&text).into_owned()
        })
    };
    let stdout = read(child.stdout.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let stderr = read(child.stderr.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let deadline = clock.now_ns().saturating_add(u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX));
    let outcome = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Ok(Some(status)),
            Ok(None) if clock.now_ns() >= deadline => {
                kill_group(&mut child);
                break Ok(None);
            }
            Ok(None) => std::thread::sleep(POLL),
            Err(e) => {
                kill_group(&mut child);
                break Err(e);
            }
        }
    };
    // The group is gone (or exited): the pipes close and the threads end.
    if let Some(t) = stdin {
        let _ = t.join();
    }
    let out = stdout.join().unwrap_or_default();
    let err = stderr.join().unwrap_or_default();
    (outcome, out, err)
}

/// Kills the command and everything in its process group, and reaps it.
fn kill_group(child: &mut std::process::Child) {
    #[cfg(unix)]
    if let Ok(pid) = libc::pid_t::try_from(child.id()) {
        // SAFETY: kill(2) with a negative pid signals the process group the child leads (it was
        // started with process_group(0)); no memory is involved.
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
        }
    }
    let _ = child.kill();
    let _ = child.wait();
}
