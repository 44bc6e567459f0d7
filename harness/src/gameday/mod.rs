// `ebb gameday`: plays a scenario's deploy tooling and timeline against live proxies through
// their signed control API, observes what the real system does (the filter's state and metrics,
// the team's Alertmanager or the scenario's own rules), and judges the replay's SLOs on it.
// Safety first: every fault carries a TTL capped to the game day's remaining time, and any end
// but a normal one sends the kill switch to every target and confirms it through `/state`.

pub mod http;
mod observe;
pub mod plan;
pub mod signals;
pub mod target;

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use ebb_chart::live::{self, AlertPhase, AlertState, LiveEvent, PoolSample, SloClock, SloPhase};
use ebb_engine::control::Response;
use ebb_engine::Duration;

use crate::alert::{Alert, Transition};
use crate::clock::Clock;
use crate::control::{RawRequest, RawResponse};
use crate::report::{self, AlertResult, Event, Live, Report, Requests};
use crate::scenario::{Scenario, Signal};
use crate::sim::recovery;
use crate::sim::stats::{self, Bucket, Sample};
use http::Url;
use plan::{Act, Step};
use target::{Signer, Target, TargetError, PREFIX};

/// Fastest the runner scrapes and evaluates, in real time, whatever the time scale.
const MIN_SCRAPE_MS: u64 = 100;
/// Longest the runner sleeps before it looks at halt requests again.
const POLL_MS: u64 = 50;
/// Attempts, and the wait between them, to see through `/state` that the faults are gone.
const CONFIRM_TRIES: u32 = 5;
const CONFIRM_GAP_MS: u64 = 300;
/// Largest time scale: beyond it the filter's 1s tick is longer than a scenario's hours.
pub const MAX_TIME_SCALE: f64 = 100_000.0;

/// Where live events go: the console, when one is built in (`ebb_console`).
pub trait LiveSink {
    fn publish(&self, event: &LiveEvent);
}

/// No console.
pub struct NoConsole;

impl LiveSink for NoConsole {
    fn publish(&self, _: &LiveEvent) {}
}

/// How a game day is run.
pub struct Options {
    pub targets: Vec<Target>,
    /// The control key (from a file or the environment, never the command line).
    pub key: String,
    /// `/stats/prometheus` pages of the targets' admin endpoints.
    pub metrics: Vec<Url>,
    /// The team's Alertmanager: alerts come from it and recovery is its receivers'.
    pub alertmanager: Option<Url>,
    /// Scenario seconds per real second.
    pub time_scale: f64,
    /// A halt request from outside (the console's Halt button), treated exactly as Ctrl-C.
    pub halt: Arc<AtomicBool>,
}

/// Why a game day could not start: nothing was sent.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The scenario or the options cannot make a game day (exit 2).
    #[error("{0}")]
    Input(String),
    /// A target, metrics page or Alertmanager did not answer as it must (exit 4).
    #[error("{0}")]
    Target(String),
}

/// How the game day ended.
#[derive(Clone, Debug, PartialEq)]
pub enum Ending {
    /// The scenario ran to its end.
    Completed,
    /// Ctrl-C, SIGTERM, a halt request or a stop condition, in words.
    Halted(String),
    /// An error of the runner's own: a target unreachable, a command refused, Alertmanager down.
    Failed(String),
}

/// The result of a game day that started.
pub struct Outcome {
    pub report: Report,
    pub ending: Ending,
    /// Every target confirmed through `/state` that no fault of this game day is left.
    pub clean: bool,
}

/// Checks that `scenario` can be played live with `options`, before anything is sent.
pub fn check(scenario: &Scenario, options: &Options) -> Result<(), StartError> {
    let bad = |m: String| Err(StartError::Input(m));
    let scale = options.time_scale;
    if !(scale.is_finite() && scale > 0.0 && scale <= MAX_TIME_SCALE) {
        return bad(format!("--time-scale must be above 0 and at most {MAX_TIME_SCALE}, not {scale}"));
    }
    if options.targets.is_empty() {
        return bad("give at least one --target NAME=CONTROL_URL".into());
    }
    let mut names = HashSet::new();
    for t in &options.targets {
        if !names.insert(t.name.as_str()) {
            return bad(format!("target {} is given twice", t.name));
        }
    }
    if options.key.trim().is_empty() {
        return bad("no key: give --key-file FILE, or set EBB_KEY_FILE or EBB_KEY (the proxies' control.key)".into());
    }
    let counted = |s: Signal| !matches!(s, Signal::AvailableRatio);
    let mut needs_metrics = Vec::new();
    for (i, slo) in scenario.slos.iter().enumerate() {
        if slo.latency_p99.is_some() {
            return bad(format!(
                "slos[{i}] ({}): a game day observes the filter's counts, not latency; drop it or replay the scenario",
                slo.label()
            ));
        }
        if slo.error_ratio.is_some() || slo.error_budget.is_some() {
            needs_metrics.push(format!("slos[{i}]"));
        }
    }
    if options.alertmanager.is_none() {
        for (i, a) in scenario.alerts.iter().enumerate() {
            if matches!(a.signal, Signal::LatencyP50 | Signal::LatencyP90 | Signal::LatencyP99) {
                return bad(format!(
                    "alerts[{i}] ({}): a game day cannot evaluate latency rules itself; give --alertmanager",
                    a.name
                ));
            }
            if counted(a.signal) {
                needs_metrics.push(format!("alerts[{i}]"));
            }
        }
    }
    for (i, c) in scenario.stop_conditions.iter().enumerate() {
        if counted(c.signal) {
            needs_metrics.push(format!("stop_conditions[{i}]"));
        }
    }
    if options.metrics.is_empty() && !needs_metrics.is_empty() {
        return bad(format!(
            "{} count requests: give --metrics with each target's admin /stats/prometheus URL",
            needs_metrics.join(", ")
        ));
    }
    Ok(())
}

/// `ms` of scenario time in real milliseconds.
fn real_ms(ms: u64, scale: f64) -> u64 {
    // The float-to-integer cast saturates.
    (ms as f64 / scale).round() as u64
}

/// What `--dry-run` prints: every planned call with its scenario and real time, the recovery
/// that would answer alerts, and the cleanup at the end. Nothing is sent.
pub fn dry_run(scenario: &Scenario, options: &Options) -> String {
    let scale = options.time_scale;
    let duration_real = real_ms(scenario.duration.as_millis(), scale);
    let targets: Vec<String> = options.targets.iter().map(|t| format!("{} ({})", t.name, t.url.show())).collect();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{}: {} at {scale}x ({} real) against {}",
        scenario.name,
        scenario.duration,
        Duration::from_millis(duration_real),
        targets.join(", ")
    );
    let _ =
        writeln!(out, "planned calls (each signed and sent to every target, then confirmed through {PREFIX}state):");
    let _ = writeln!(out, "  {:<10} {:<10} call", "scenario", "real");
    for step in plan::plan(scenario) {
        let real = real_ms(step.at_ms, scale);
        let (method, route) = step.act.call();
        let mut line = format!(
            "  +{:<9} +{:<9} {method} {PREFIX}{route}",
            Duration::from_millis(step.at_ms).to_string(),
            Duration::from_millis(real).to_string()
        );
        if let Act::Add(fault) = &step.act {
            let sent = plan::for_sending(fault, scale, Duration::from_millis(duration_real.saturating_sub(real)));
            let _ = write!(line, " x-ebb-command: {}", serde_json::to_string(&sent).unwrap_or_default());
        }
        let _ = writeln!(out, "{line}  # {}: {}", step.origin, step.text);
    }
    match &options.alertmanager {
        Some(am) => {
            let _ = writeln!(
                out,
                "alerts: from Alertmanager {}; recovery: its receivers (the scenario's runbooks do not run)",
                am.show()
            );
        }
        None => {
            for (i, r) in scenario.recovery.iter().enumerate() {
                let what = if let Some(pool) = &r.restore {
                    format!("POST {PREFIX}pools/{pool}/restore")
                } else if let Some(argv) = &r.run {
                    format!("run {} (EBB_CONTROL_URL: a loopback URL that forwards to every target)", argv.join(" "))
                } else {
                    format!("DELETE {PREFIX}faults (kill switch)")
                };
                let _ = writeln!(
                    out,
                    "  when {} fires, +{} scenario (+{} real) later: {what}  # recovery[{i}]",
                    r.on,
                    r.after,
                    Duration::from_millis(real_ms(r.after.as_millis(), scale))
                );
            }
        }
    }
    for c in &scenario.stop_conditions {
        let _ = writeln!(out, "  halt (kill switch) if {}", c.describe());
    }
    let _ = writeln!(
        out,
        "  +{:<9} +{:<9} DELETE {PREFIX}faults/ID for each fault this game day added; any other end: DELETE {PREFIX}faults (kill switch)",
        scenario.duration.to_string(),
        Duration::from_millis(duration_real).to_string()
    );
    let _ = writeln!(out, "dry run: nothing was sent");
    out
}

/// An alert as the runner tracks it: the scenario's rule evaluated here, or one Alertmanager holds.
struct Tracked {
    name: String,
    pool: String,
    firing: bool,
    fired_s: Vec<f64>,
    resolved_s: Vec<f64>,
}

struct Runner<'a> {
    scenario: &'a Scenario,
    options: &'a Options,
    sink: &'a dyn LiveSink,
    progress: &'a mut dyn FnMut(&str),
    signer: Signer,
    clock: Clock,
    start_ns: u64,
    duration_real_ms: u64,
    /// The faults this game day added, per target.
    own: Vec<Vec<String>>,
    samples: Vec<Vec<Sample>>,
    /// The counters at the previous scrape, per pool.
    counters: HashMap<String, observe::Counters>,
    rules: Vec<Alert>,
    stops: Vec<Alert>,
    /// Alertmanager's alerts, by (name, pool).
    am: Vec<Tracked>,
    /// Runbooks due: (real ms, recovery index, alert name, pool).
    due: Vec<(u64, usize, String, String)>,
    server: Option<recovery::ControlServer>,
    events: Vec<Event>,
    phase: String,
}

/// Runs the game day: checks, preflight (nothing is sent if a target, metrics page or
/// Alertmanager does not answer), the timeline, cleanup and the report. `progress` gets one line
/// per command and per change of state; `sink` gets the live events.
pub fn run(
    scenario: &Scenario,
    options: &Options,
    sink: &dyn LiveSink,
    progress: &mut dyn FnMut(&str),
) -> Result<Outcome, StartError> {
    check(scenario, options)?;
    let clock = Clock::real();
    let start_ns = clock.now_ns();
    let pool_index: HashMap<&str, usize> =
        scenario.pools.iter().enumerate().map(|(i, p)| (p.name.as_str(), i)).collect();
    let at = |name: &str| pool_index.get(name).copied().unwrap_or(0);
    let mut runner = Runner {
        scenario,
        options,
        sink,
        progress,
        signer: Signer::new(options.key.clone(), start_ns),
        clock,
        start_ns,
        duration_real_ms: real_ms(scenario.duration.as_millis(), options.time_scale),
        own: vec![Vec::new(); options.targets.len()],
        samples: vec![Vec::new(); scenario.pools.len()],
        counters: HashMap::new(),
        rules: scenario.alerts.iter().map(|r| Alert::new(r.clone(), at(&r.pool))).collect(),
        stops: scenario
            .stop_conditions
            .iter()
            .enumerate()
            .map(|(i, c)| Alert::new(c.as_rule(i), at(&c.pool)))
            .collect(),
        am: Vec::new(),
        due: Vec::new(),
        server: None,
        events: Vec::new(),
        phase: "starting".into(),
    };
    runner.preflight()?;
    let ending = runner.play();
    let clean = runner.clean_up(&ending);
    let report = runner.report(&ending, clean);
    let verdict = match (&ending, report.passed()) {
        (Ending::Completed, true) => live::Verdict::Pass,
        (Ending::Completed, false) => live::Verdict::Fail,
        (Ending::Halted(_), _) => live::Verdict::Halted,
        (Ending::Failed(_), _) => live::Verdict::Error,
    };
    let summary = match &ending {
        Ending::Completed => format!("verdict: {}", report.verdict),
        Ending::Halted(why) => format!("halted: {why}"),
        Ending::Failed(why) => format!("stopped by an error: {why}"),
    };
    let t_s = runner.t_s();
    sink.publish(&LiveEvent::End { t_s, verdict, summary });
    Ok(Outcome { report, ending, clean })
}

impl Runner<'_> {
    fn elapsed_ms(&self) -> u64 {
        self.clock.now_ns().saturating_sub(self.start_ns) / 1_000_000
    }

    /// Scenario seconds since the start.
    fn t_s(&self) -> f64 {
        self.elapsed_ms() as f64 * self.options.time_scale / 1000.0
    }

    fn now_s(&self) -> u64 {
        self.clock.now_ns() / 1_000_000_000
    }

    fn say(&mut self, line: String) {
        let stamp = self.stamp(self.t_s());
        (self.progress)(&format!("gameday {stamp}: {line}"));
    }

    /// `+8m15s (8.3s real)`: scenario time to the second, and real time.
    fn stamp(&self, t_s: f64) -> String {
        let t = Duration::from_secs(t_s.max(0.0) as u64);
        format!("+{t} ({:.1}s real)", t_s / self.options.time_scale)
    }

    fn note(&mut self, kind: &str, text: String) {
        let t_s = self.t_s();
        self.sink.publish(&LiveEvent::Note { t_s, text: text.clone() });
        self.say(text.clone());
        self.events.push(Event { t_s, kind: kind.into(), text });
    }

    fn preflight(&mut self) -> Result<(), StartError> {
        let now_s = self.now_s();
        for target in &self.options.targets {
            let state = self.signer.state(target, now_s).map_err(|e| StartError::Target(e.to_string()))?;
            let pools: Vec<&str> = state.pools.iter().flatten().map(|p| p.name.as_str()).collect();
            let missing: Vec<&str> =
                self.scenario.pools.iter().map(|p| p.name.as_str()).filter(|p| !pools.contains(p)).collect();
            if !missing.is_empty() {
                return Err(StartError::Target(format!(
                    "target {} has no pool {} (its pools: {}): the scenario's pools must be the filter's",
                    target.name,
                    missing.join(", "),
                    pools.join(", ")
                )));
            }
            let faults: Vec<String> = state.faults.iter().flatten().map(|f| f.id.clone()).collect();
            if !faults.is_empty() {
                (self.progress)(&format!(
                    "gameday: target {} already has faults ({}); they are not this game day's",
                    target.name,
                    faults.join(", ")
                ));
            }
        }
        self.counters = self.scrape_metrics().map_err(StartError::Target)?;
        if let Some(am) = &self.options.alertmanager {
            fetch_alerts(am).map_err(StartError::Target)?;
        }
        let targets = self.options.targets.iter().map(|t| t.name.clone()).collect();
        let slos = self.slo_clocks();
        self.sink.publish(&LiveEvent::Start {
            scenario: self.scenario.name.clone(),
            duration_s: self.scenario.duration.as_millis() as f64 / 1000.0,
            time_scale: self.options.time_scale,
            pools: self.scenario.pools.iter().map(|p| p.name.clone()).collect(),
            targets,
            slos,
        });
        (self.progress)(&format!(
            "gameday: {} starts: {} at {}x ({} real) against {}",
            self.scenario.name,
            self.scenario.duration,
            self.options.time_scale,
            Duration::from_millis(self.duration_real_ms),
            self.options.targets.iter().map(|t| t.name.as_str()).collect::<Vec<_>>().join(", ")
        ));
        Ok(())
    }

    /// A halt request, in words.
    fn halted(&self) -> Option<String> {
        if let Some(why) = signals::received() {
            return Some(why.to_string());
        }
        self.options.halt.load(Ordering::SeqCst).then(|| "halted by request (the console's Halt)".to_string())
    }

    /// The timeline, scrapes and recovery, to the end or until something stops it.
    fn play(&mut self) -> Ending {
        let steps = plan::plan(self.scenario);
        let scale = self.options.time_scale;
        let scrape_ms = real_ms(self.scenario.scrape_interval.as_millis(), scale).max(MIN_SCRAPE_MS);
        let mut next_step = 0;
        let mut next_scrape = scrape_ms;
        loop {
            if let Some(why) = self.halted() {
                return Ending::Halted(why);
            }
            let now = self.elapsed_ms();
            if now >= self.duration_real_ms {
                // The last look: what the end of the scenario shows.
                return match self.observe() {
                    Ok(None) => Ending::Completed,
                    Ok(Some(stop)) => Ending::Halted(stop),
                    Err(e) => Ending::Failed(e),
                };
            }
            while let Some(step) = steps.get(next_step).filter(|s| real_ms(s.at_ms, scale) <= now) {
                next_step += 1;
                if let Err(e) = self.execute(step, "command") {
                    return Ending::Failed(e.to_string());
                }
            }
            let ready: Vec<_> = self.due.iter().filter(|d| d.0 <= now).cloned().collect();
            self.due.retain(|d| d.0 > now);
            for (_, r, alert, pool) in ready {
                if let Err(e) = self.recover(r, &alert, &pool) {
                    return Ending::Failed(e);
                }
            }
            if now >= next_scrape {
                next_scrape = next_scrape.saturating_add(scrape_ms).max(now.saturating_add(1));
                match self.observe() {
                    Ok(None) => {}
                    Ok(Some(stop)) => return Ending::Halted(stop),
                    Err(e) => return Ending::Failed(e),
                }
            }
            let next = [
                Some(next_scrape),
                steps.get(next_step).map(|s| real_ms(s.at_ms, scale)),
                self.due.iter().map(|d| d.0).min(),
                Some(self.duration_real_ms),
            ]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(0);
            let wait = next.saturating_sub(self.elapsed_ms()).min(POLL_MS);
            if wait > 0 {
                std::thread::sleep(std::time::Duration::from_millis(wait));
            }
        }
    }

    /// Sends one planned call to every target and confirms it through `/state`.
    fn execute(&mut self, step: &Step, kind: &str) -> Result<(), TargetError> {
        self.phase = step.text.clone();
        let remaining = Duration::from_millis(self.duration_real_ms.saturating_sub(self.elapsed_ms()));
        let (method, route) = step.act.call();
        let command = match &step.act {
            Act::Add(fault) => Some(
                serde_json::to_string(&plan::for_sending(fault, self.options.time_scale, remaining))
                    .unwrap_or_default(),
            ),
            _ => None,
        };
        let t_s = self.t_s();
        for (k, target) in self.options.targets.iter().enumerate() {
            let now_s = self.now_s();
            let answer = match self.signer.call(target, method, &route, command.as_deref(), now_s) {
                // A fault cleared by name that has already gone (expired, restored) is what was asked.
                Err(TargetError::Refused { status: 404, .. }) if matches!(step.act, Act::Clear(_)) => {
                    Ok(Response::default())
                }
                other => other,
            };
            let outcome = match &answer {
                Ok(r) => match (&r.fault, &r.cleared) {
                    (Some(f), _) => format!("added {} (ttl {})", f.id, f.expires_in),
                    (None, Some(c)) if c.is_empty() => "nothing to clear".to_string(),
                    (None, Some(c)) => format!("cleared {}", c.join(", ")),
                    _ => "done".to_string(),
                },
                Err(e) => e.to_string(),
            };
            self.sink.publish(&LiveEvent::Command {
                t_s,
                target: target.name.clone(),
                command: format!("{method} {PREFIX}{route}"),
                outcome: outcome.clone(),
                ok: answer.is_ok(),
            });
            let text = format!("{}: {} -> {}: {outcome}", step.origin, step.text, target.name);
            let stamp = self.stamp(t_s);
            (self.progress)(&format!("gameday {stamp}: {kind}: {text}"));
            self.events.push(Event { t_s, kind: kind.into(), text });
            let response = answer?;
            if let Some(f) = &response.fault {
                self.own[k].push(f.id.clone());
            }
            self.confirm(k, &step.act, response.fault.as_ref().map(|f| f.id.as_str()))?;
        }
        Ok(())
    }

    /// Reads target `k`'s state to see that `act` took effect.
    fn confirm(&self, k: usize, act: &Act, added: Option<&str>) -> Result<(), TargetError> {
        let target = &self.options.targets[k];
        let state = self.signer.state(target, self.now_s())?;
        let faults: Vec<&str> = state.faults.iter().flatten().map(|f| f.id.as_str()).collect();
        let problem = match act {
            Act::Add(_) => added.filter(|id| !faults.contains(id)).map(|id| format!("fault {id} is not in its state")),
            Act::Restore(pool) => state
                .pools
                .iter()
                .flatten()
                .find(|p| &p.name == pool && !p.faults.is_empty())
                .map(|p| format!("pool {pool} still has faults {}", p.faults.join(", "))),
            Act::Clear(id) => faults.contains(&id.as_str()).then(|| format!("fault {id} is still in its state")),
            Act::ClearAll => {
                let left: Vec<&str> = self.own[k].iter().map(String::as_str).filter(|id| faults.contains(id)).collect();
                (!left.is_empty()).then(|| format!("faults {} are still in its state", left.join(", ")))
            }
        };
        match problem {
            None => Ok(()),
            Some(error) => Err(TargetError::Refused {
                target: target.name.clone(),
                what: format!("the confirmation through {PREFIX}state"),
                status: 200,
                error,
            }),
        }
    }

    /// Recovery rule `r`, triggered by `alert` on `pool`: a built-in runbook or the team's program.
    fn recover(&mut self, r: usize, alert: &str, pool: &str) -> Result<(), String> {
        let rule = &self.scenario.recovery[r];
        let origin = format!("recovery[{r}]");
        if let Some(argv) = &rule.run {
            return self.run_program(r, argv, alert, pool);
        }
        let (act, text) = match &rule.restore {
            Some(p) => (Act::Restore(p.clone()), format!("runbook for {alert}: restore pool {p}")),
            None => (Act::ClearAll, format!("runbook for {alert}: kill switch")),
        };
        let step = Step { at_ms: 0, act, text, origin };
        self.execute(&step, "recovery").map_err(|e| e.to_string())
    }

    /// Runs a recovery program with a loopback control URL that forwards each call, unchanged, to
    /// every target (their first answer goes back), as a replay does with its simulated proxies.
    fn run_program(&mut self, r: usize, argv: &[String], alert: &str, pool: &str) -> Result<(), String> {
        let rule = &self.scenario.recovery[r];
        let shown = argv.join(" ");
        self.note("recovery", format!("runbook for {alert}: run {shown}"));
        if self.server.is_none() {
            let server =
                recovery::ControlServer::start().map_err(|e| format!("cannot serve a loopback control URL: {e}"))?;
            self.server = Some(server);
        }
        let Some(server) = self.server.take() else { return Ok(()) };
        let url = server.url().to_string();
        let webhook = recovery::webhook(alert, pool, &format!("{alert} on {pool}"), self.now_s(), &url);
        let program = recovery::Program {
            argv,
            dir: &self.scenario.dir,
            env: vec![
                ("EBB_CONTROL_URL", url.clone()),
                ("EBB_URL", url),
                ("EBB_KEY", self.options.key.clone()),
                ("EBB_ALERT", alert.to_string()),
                ("EBB_POOL", pool.to_string()),
            ],
            stdin: webhook.to_string().into_bytes(),
            timeout: std::time::Duration::from_millis(rule.run_timeout().as_millis()),
        };
        let targets = &self.options.targets;
        let mut calls = Vec::new();
        let outcome = recovery::run(&program, &server, &mut |request| {
            let response = forward(targets, request);
            let path = request.path.split('?').next().unwrap_or_default().to_string();
            calls.push(format!("{} {path} -> {}", request.method, response.status));
            response
        });
        self.server = Some(server);
        for call in calls {
            self.note("command", format!("recovery program: {call}"));
        }
        match outcome {
            recovery::Outcome::NotStarted(why) => self.note("refused", format!("runbook for {alert}: {why}")),
            recovery::Outcome::Exited { status, took_s, output } => {
                let how = status.code().map_or_else(|| status.to_string(), |c| format!("exit {c}"));
                self.note("recovery", format!("{shown}: {how} after {took_s:.2}s"));
                if !status.success() {
                    self.note("refused", format!("runbook for {alert}: {shown} failed ({how}); {}", output.summary()));
                }
            }
            recovery::Outcome::TimedOut { took_s, output } => {
                self.note(
                    "refused",
                    format!("runbook for {alert}: {shown} killed at its timeout ({took_s:.2}s); {}", output.summary()),
                );
            }
        }
        Ok(())
    }

    /// The counters of every metrics page, summed by pool.
    fn scrape_metrics(&self) -> Result<HashMap<String, observe::Counters>, String> {
        let mut counters = HashMap::new();
        for url in &self.options.metrics {
            let answer =
                http::call(url, "GET", "", &[], b"", target::CALL_TIMEOUT).map_err(|e| format!("metrics: {e}"))?;
            if answer.status != 200 {
                return Err(format!("metrics: {} answered HTTP {}", url.show(), answer.status));
            }
            observe::add_counters(&answer.text(), &mut counters);
        }
        Ok(counters)
    }

    /// One scrape: every target's state, the metrics, the alerts; then rules and stop conditions.
    /// A stop condition met, in words; an error of a target, metrics page or Alertmanager.
    fn observe(&mut self) -> Result<Option<String>, String> {
        let t_s = self.t_s();
        let n = self.scenario.pools.len();
        let (mut available, mut expected, mut deploying) = (vec![u64::MAX; n], vec![0u64; n], vec![false; n]);
        for target in &self.options.targets {
            let state = self.signer.state(target, self.now_s()).map_err(|e| e.to_string())?;
            for view in state.pools.iter().flatten() {
                if let Some(i) = self.scenario.pools.iter().position(|p| p.name == view.name) {
                    available[i] = available[i].min(u64::from(view.available_hosts));
                    expected[i] = expected[i].max(u64::from(view.expected_hosts));
                    deploying[i] |= view.deploy_in_progress;
                }
            }
        }
        let counters = self.scrape_metrics()?;
        for (i, pool) in self.scenario.pools.iter().enumerate() {
            let now = counters.get(&pool.name).copied().unwrap_or_default();
            let before = self.counters.get(&pool.name).copied().unwrap_or_default();
            // A proxy that restarted starts its counters again: what it counts since is new.
            let failed = now.failed.saturating_sub(before.failed);
            let bucket = Bucket {
                requests: now.requests.saturating_sub(before.requests),
                errors: failed,
                shed: failed,
                ..Bucket::default()
            };
            let available = if available[i] == u64::MAX { 0 } else { available[i] };
            let previous = self.samples[i].last().map(|s| (s.available, s.deploying));
            if previous != Some((available, deploying[i])) {
                let deploy = if deploying[i] { ", deployment in progress" } else { "" };
                self.say(format!("pool {}: {available}/{} hosts{deploy}", pool.name, expected[i]));
            }
            let sample =
                Sample { t_s, available, expected: expected[i], deploying: deploying[i], bucket, ..Sample::default() };
            stats::push(&mut self.samples[i], sample);
        }
        self.counters = counters;
        match self.options.alertmanager.clone() {
            Some(am) => self.track_alertmanager(&am, t_s)?,
            None => self.evaluate_rules(),
        }
        let scrape_s = self.scenario.scrape_interval.as_millis() as f64 / 1000.0;
        let mut stop = None;
        for (k, c) in self.stops.iter_mut().enumerate() {
            let samples = &self.samples[c.pool];
            if c.evaluate(samples, samples.len() - 1, scrape_s) == Some(Transition::Fired) && stop.is_none() {
                stop = Some(format!(
                    "stop condition stop_conditions[{k}] met: {}",
                    self.scenario.stop_conditions[k].describe()
                ));
            }
        }
        self.publish_sample(t_s);
        Ok(stop)
    }

    /// The scenario's own rules on what was scraped; runbooks scheduled on firing.
    fn evaluate_rules(&mut self) {
        let scrape_s = self.scenario.scrape_interval.as_millis() as f64 / 1000.0;
        let mut changes = Vec::new();
        for (i, alert) in self.rules.iter_mut().enumerate() {
            let samples = &self.samples[alert.pool];
            if let Some(t) = alert.evaluate(samples, samples.len() - 1, scrape_s) {
                changes.push((i, t));
            }
        }
        for (i, t) in changes {
            let (name, pool) = (self.rules[i].rule.name.clone(), self.rules[i].rule.pool.clone());
            match t {
                Transition::Fired => {
                    self.note("alert", format!("{name} fires (on {pool}, the scenario's rule)"));
                    let now = self.elapsed_ms();
                    for (r, rule) in self.scenario.recovery.iter().enumerate() {
                        if rule.on == name {
                            let due = now.saturating_add(real_ms(rule.after.as_millis(), self.options.time_scale));
                            self.due.push((due, r, name.clone(), pool.clone()));
                        }
                    }
                }
                Transition::Resolved => self.note("resolved", format!("{name} resolved")),
            }
        }
    }

    /// Alertmanager's active alerts on the scenario's pools: new ones fired when they started,
    /// gone ones resolved now.
    fn track_alertmanager(&mut self, am: &Url, t_s: f64) -> Result<(), String> {
        let active = fetch_alerts(am)?;
        let start_ms = self.start_ns / 1_000_000;
        let mut seen = HashSet::new();
        for a in active {
            let Some(pool) = a.pool.filter(|p| self.scenario.pools.iter().any(|q| &q.name == p)) else { continue };
            seen.insert((a.name.clone(), pool.clone()));
            let k = match self.am.iter().position(|x| x.name == a.name && x.pool == pool) {
                Some(k) => k,
                None => {
                    self.am.push(Tracked {
                        name: a.name.clone(),
                        pool: pool.clone(),
                        firing: false,
                        fired_s: Vec::new(),
                        resolved_s: Vec::new(),
                    });
                    self.am.len() - 1
                }
            };
            if !self.am[k].firing {
                // When Prometheus started firing it, on the scenario's clock; before the game day is 0.
                let fired = a
                    .starts_at_ms
                    .map_or(t_s, |ms| (ms.saturating_sub(start_ms) as f64 * self.options.time_scale / 1000.0).min(t_s));
                let fired = self.am[k].resolved_s.last().map_or(fired, |r| fired.max(*r));
                self.am[k].firing = true;
                self.am[k].fired_s.push(fired);
                self.note("alert", format!("{} fires on {pool} (Alertmanager)", a.name));
            }
        }
        for k in 0..self.am.len() {
            let key = (self.am[k].name.clone(), self.am[k].pool.clone());
            if self.am[k].firing && !seen.contains(&key) {
                self.am[k].firing = false;
                self.am[k].resolved_s.push(t_s);
                self.note("resolved", format!("{} on {} resolved (Alertmanager)", key.0, key.1));
            }
        }
        Ok(())
    }

    fn tracked(&self) -> Vec<Tracked> {
        match self.options.alertmanager {
            Some(_) => self
                .am
                .iter()
                .map(|a| Tracked {
                    name: a.name.clone(),
                    pool: a.pool.clone(),
                    firing: a.firing,
                    fired_s: a.fired_s.clone(),
                    resolved_s: a.resolved_s.clone(),
                })
                .collect(),
            None => self
                .rules
                .iter()
                .map(|a| Tracked {
                    name: a.rule.name.clone(),
                    pool: a.rule.pool.clone(),
                    firing: a.firing,
                    fired_s: a.fired_s.clone(),
                    resolved_s: a.resolved_s.clone(),
                })
                .collect(),
        }
    }

    /// The time SLOs' clocks as the console shows them.
    fn slo_clocks(&self) -> Vec<SloClock> {
        let tracked = self.tracked();
        let t_s = self.t_s();
        self.scenario
            .slos
            .iter()
            .map(|slo| {
                let timed =
                    slo.time_to_detect.as_ref().map(|p| (p, true)).or(slo.time_to_restore.as_ref().map(|p| (p, false)));
                let Some((within, detect)) = timed else {
                    return SloClock { name: slo.label(), state: SloPhase::Running, deadline_s: None };
                };
                let s = self
                    .scenario
                    .pools
                    .iter()
                    .position(|p| p.name == within.pool)
                    .map_or(&[][..], |i| &self.samples[i][..]);
                let Some(lost) = s.iter().position(|x| x.available < x.expected && !x.deploying) else {
                    return SloClock { name: slo.label(), state: SloPhase::Waiting, deadline_s: None };
                };
                let lost_s = s[lost].t_s;
                let deadline = lost_s + within.max.as_millis() as f64 / 1000.0;
                let met = if detect {
                    tracked
                        .iter()
                        .filter(|a| a.pool == within.pool)
                        .flat_map(|a| a.fired_s.iter())
                        .any(|&f| f <= deadline)
                        || tracked.iter().any(|a| a.pool == within.pool && a.firing)
                } else {
                    s[lost..].iter().any(|x| x.available >= x.expected && x.t_s <= deadline)
                };
                let state = if met {
                    SloPhase::Met
                } else if t_s > deadline {
                    SloPhase::Missed
                } else {
                    SloPhase::Running
                };
                SloClock { name: slo.label(), state, deadline_s: Some(deadline) }
            })
            .collect()
    }

    fn publish_sample(&self, t_s: f64) {
        let pools = self
            .scenario
            .pools
            .iter()
            .zip(&self.samples)
            .filter_map(|(p, s)| {
                s.last().map(|x| PoolSample { pool: p.name.clone(), expected: x.expected, available: x.available })
            })
            .collect();
        let alerts = self
            .tracked()
            .into_iter()
            .map(|a| AlertState {
                name: format!("{} ({})", a.name, a.pool),
                state: if a.firing { AlertPhase::Firing } else { AlertPhase::Inactive },
                since_s: if a.firing { a.fired_s.last().copied() } else { a.resolved_s.last().copied() },
            })
            .collect();
        self.sink.publish(&LiveEvent::Sample {
            t_s,
            phase: self.phase.clone(),
            pools,
            alerts,
            slos: self.slo_clocks(),
        });
    }

    /// At the end: this game day's faults cleared by id; at any other end, the kill switch to
    /// every target. Then `/state` must show none of this game day's faults on any target.
    fn clean_up(&mut self, ending: &Ending) -> bool {
        let kill_switch = *ending != Ending::Completed;
        match ending {
            Ending::Completed => {}
            Ending::Halted(why) => self.note("halt", format!("halted: {why}; sending the kill switch to every target")),
            Ending::Failed(why) => {
                self.note("refused", format!("error: {why}; sending the kill switch to every target"))
            }
        }
        self.phase = "cleanup".into();
        let mut clean = true;
        for k in 0..self.options.targets.len() {
            let target = self.options.targets[k].clone();
            let sent = if kill_switch {
                self.signer
                    .call(&target, "DELETE", "faults", None, self.now_s())
                    .map(|r| format!("kill switch sent to {}: cleared {}", target.name, list(r.cleared.as_deref())))
            } else {
                let mut cleared = Vec::new();
                let mut result = Ok(());
                for id in self.own[k].clone() {
                    match self.signer.call(&target, "DELETE", &format!("faults/{id}"), None, self.now_s()) {
                        Ok(_) => cleared.push(id),
                        Err(TargetError::Refused { status: 404, .. }) => {}
                        Err(e) => result = Err(e),
                    }
                }
                result.map(|()| {
                    format!("{}: cleared this game day's faults still there: {}", target.name, list(Some(&cleared)))
                })
            };
            match sent {
                Ok(line) => self.note("cleanup", line),
                Err(e) => self.note("refused", format!("cleanup: {e}")),
            }
            match self.confirm_gone(k) {
                Ok(()) => self.note(
                    "cleanup",
                    format!("{}: {PREFIX}state confirms no fault of this game day is left", target.name),
                ),
                Err(why) => {
                    clean = false;
                    let ttl = Duration::from_millis(
                        self.duration_real_ms
                            .saturating_sub(self.elapsed_ms())
                            .saturating_add(plan::TTL_MARGIN.as_millis()),
                    );
                    self.note("refused", format!("{}: cannot confirm that no fault of this game day is left: {why}; each expires by its TTL, at most {ttl} from now", target.name));
                }
            }
        }
        clean
    }

    fn confirm_gone(&self, k: usize) -> Result<(), String> {
        let target = &self.options.targets[k];
        let mut last = String::new();
        for attempt in 0..CONFIRM_TRIES {
            if attempt > 0 {
                std::thread::sleep(std::time::Duration::from_millis(CONFIRM_GAP_MS));
            }
            match self.signer.state(target, self.now_s()) {
                Ok(state) => {
                    let left: Vec<String> = state
                        .faults
                        .iter()
                        .flatten()
                        .filter(|f| self.own[k].contains(&f.id) && f.state != "expired")
                        .map(|f| f.id.clone())
                        .collect();
                    if left.is_empty() {
                        return Ok(());
                    }
                    last = format!("still there: {}", left.join(", "));
                }
                Err(e) => last = e.to_string(),
            }
        }
        Err(last)
    }

    fn report(&mut self, ending: &Ending, clean: bool) -> Report {
        let t_s = self.t_s().min(self.scenario.duration.as_millis() as f64 / 1000.0);
        let totals: Vec<(u64, u64)> = self
            .samples
            .iter()
            .map(|s| s.last().map_or((0, 0), |x| (x.cumulative.requests, x.cumulative.errors)))
            .collect();
        let observed_requests = totals.iter().map(|t| t.0).fold(0u64, u64::saturating_add);
        let alerts = self
            .tracked()
            .into_iter()
            .map(|a| AlertResult { name: a.name, pool: a.pool, fired_s: a.fired_s, resolved_s: a.resolved_s })
            .collect();
        let observed = report::Observed {
            samples: self.samples.iter().map(Vec::as_slice).collect(),
            totals,
            alerts,
            events: std::mem::take(&mut self.events),
            requests: Requests {
                simulated: observed_requests,
                sample: 1,
                represented: observed_requests,
                filter_failures: 0,
            },
            duration_s: t_s,
        };
        let mut report = report::build(self.scenario, observed);
        let ended = match ending {
            Ending::Completed => "completed".to_string(),
            Ending::Halted(why) => format!("halted: {why}"),
            Ending::Failed(why) => format!("error: {why}"),
        };
        report.live = Some(Live {
            targets: self.options.targets.iter().map(|t| format!("{}={}", t.name, t.url.show())).collect(),
            time_scale: self.options.time_scale,
            alerts_from: self
                .options
                .alertmanager
                .as_ref()
                .map_or_else(|| "the scenario's rules".into(), |u| format!("Alertmanager {}", u.show())),
            ended,
            clean,
        });
        report
    }
}

fn list(items: Option<&[String]>) -> String {
    match items {
        Some(items) if !items.is_empty() => items.join(", "),
        _ => "nothing".into(),
    }
}

/// Alertmanager's active alerts, or why they cannot be read.
fn fetch_alerts(am: &Url) -> Result<Vec<observe::ActiveAlert>, String> {
    let path = "/api/v2/alerts?active=true&silenced=false&inhibited=false";
    let answer =
        http::call(am, "GET", path, &[], b"", target::CALL_TIMEOUT).map_err(|e| format!("Alertmanager: {e}"))?;
    if answer.status != 200 {
        return Err(format!("Alertmanager {} answered HTTP {} to GET /api/v2/alerts", am.show(), answer.status));
    }
    observe::active_alerts(&answer.body).map_err(|e| format!("Alertmanager {}: {e}", am.show()))
}

/// A recovery program's request, unchanged (its own signature, its own `Host`), to every target;
/// the first target's answer goes back.
fn forward(targets: &[Target], request: &RawRequest) -> RawResponse {
    let mut first = None;
    for target in targets {
        let response = match http::call(
            &target.url,
            &request.method,
            &request.path,
            &request.headers,
            &request.body,
            target::CALL_TIMEOUT,
        ) {
            Ok(a) => RawResponse {
                status: a.status,
                headers: vec![("content-type".into(), "application/json".into())],
                body: a.body,
            },
            Err(e) => RawResponse {
                status: 502,
                headers: vec![("content-type".into(), "application/json".into())],
                body: serde_json::json!({"ok": false, "error": format!("target {}: {e}", target.name)})
                    .to_string()
                    .into_bytes(),
            },
        };
        first.get_or_insert(response);
    }
    first.unwrap_or(RawResponse { status: 503, headers: Vec::new(), body: b"no target\n".to_vec() })
}
