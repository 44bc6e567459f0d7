// `ebb gameday`: plays a scenario's deploy tooling and timeline against live proxies through
// their signed control API, observes what the real system does (the filter's state and metrics,
// the team's Alertmanager or the scenario's own rules), and judges the replay's SLOs on it.
// Safety first: every fault carries a TTL capped to the game day's remaining time and an id behind
// the run's own id; every end clears (and confirms through `/state`) this run's faults, and the
// console's Halt or a stop condition sends the kill switch to every target.

mod alerts;
mod cleanup;
mod console;
mod dry_run;
pub mod latency;
mod observe;
pub mod plan;
mod recover;
pub mod run_id;
pub use crate::signals;
pub mod target;

pub use console::{LiveSink, NoConsole};
pub use dry_run::dry_run;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use ebb_chart::live::{self, LiveEvent};
use ebb_engine::control::Response;
use ebb_engine::Duration;

use crate::alert::{Alert, Transition};
use crate::clock::Clock;
use crate::http::{self, Url};
use crate::report::{self, AlertResult, Event, Live, Report, Requests};
use crate::scenario::{Scenario, Signal};
use crate::sim::recovery;
use crate::sim::stats::{self, Bucket, Sample};
use alerts::{fetch_alerts, Tracked};
use plan::{Act, Step};
use run_id::RunId;
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
    /// A halt request from outside (the console's Halt button): the kill switch to every target.
    pub halt: Arc<AtomicBool>,
    /// Play even on a target that carries another game day's faults.
    pub force: bool,
    /// `(pool, listener stat prefix)`: judge the pool's latency on that HTTP listener's
    /// `envoy_http_downstream_rq_time` instead of its cluster's `envoy_cluster_upstream_rq_time`.
    pub latency_listeners: Vec<(String, String)>,
}

/// Why a game day could not start: nothing was sent.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The scenario or the options cannot make a game day (exit 2).
    #[error("{0}")]
    Input(String),
    /// A target, metrics page or Alertmanager did not answer as it must, or a target carries
    /// another game day's faults (exit 4).
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
    if let Some((origin, id, room)) = plan::id_too_long(&plan::plan(scenario)) {
        return bad(format!(
            "{origin}: fault id {id:?} is {} characters; a game day puts its run id in front (gd1a2b3c-), which leaves {room}",
            id.len()
        ));
    }
    if options.key.trim().is_empty() {
        return bad("no key: give --key-file FILE, or set EBB_KEY_FILE or EBB_KEY (the proxies' control.key)".into());
    }
    for (pool, _) in &options.latency_listeners {
        if !scenario.pools.iter().any(|p| &p.name == pool) {
            return bad(format!("--latency-listener {pool}=…: the scenario has no pool {pool}"));
        }
    }
    let counted = |s: Signal| !matches!(s, Signal::AvailableRatio);
    let mut needs_metrics = Vec::new();
    for (i, slo) in scenario.slos.iter().enumerate() {
        if slo.error_ratio.is_some() || slo.error_budget.is_some() || slo.latency_p99.is_some() {
            needs_metrics.push(format!("slos[{i}]"));
        }
    }
    if options.alertmanager.is_none() {
        for (i, a) in scenario.alerts.iter().enumerate() {
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
            "{} count or time requests: give --metrics with each target's admin /stats/prometheus URL",
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

struct Runner<'a> {
    scenario: &'a Scenario,
    options: &'a Options,
    sink: &'a dyn LiveSink,
    progress: &'a mut dyn FnMut(&str),
    signer: Signer,
    /// The prefix of every fault id this run adds.
    run_id: RunId,
    /// The end is an emergency (the console's Halt, a stop condition): the kill switch, not
    /// this run's faults by id.
    emergency: bool,
    clock: Clock,
    start_ns: u64,
    duration_real_ms: u64,
    /// The faults this game day added, per target.
    own: Vec<Vec<String>>,
    samples: Vec<Vec<Sample>>,
    /// The counters at the previous scrape, per pool.
    counters: HashMap<String, observe::Counters>,
    /// Where each pool's latency is read, when a latency SLO or rule evaluated here needs it.
    latency_of: Vec<Option<latency::Source>>,
    /// Each pool's request-time histogram (cumulative) at the start, and at every look since
    /// (one per sample).
    latency_start: Vec<latency::Histogram>,
    latency: Vec<Vec<latency::Histogram>>,
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
    let run_id = RunId::new().map_err(|e| StartError::Input(format!("no random run id from the system: {e}")))?;
    let mut runner = Runner {
        scenario,
        options,
        sink,
        progress,
        signer: Signer::new(options.key.clone(), start_ns),
        run_id,
        emergency: false,
        clock,
        start_ns,
        duration_real_ms: real_ms(scenario.duration.as_millis(), options.time_scale),
        own: vec![Vec::new(); options.targets.len()],
        samples: vec![Vec::new(); scenario.pools.len()],
        counters: HashMap::new(),
        latency_of: latency_sources(scenario, options),
        latency_start: vec![latency::Histogram::default(); scenario.pools.len()],
        latency: vec![Vec::new(); scenario.pools.len()],
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
            let live = || state.faults.iter().flatten().filter(|f| f.state != "expired");
            let (theirs, others): (Vec<_>, Vec<_>) = live().partition(|f| run_id::of(&f.id).is_some());
            if !theirs.is_empty() {
                let mut runs: Vec<&str> = theirs.iter().filter_map(|f| run_id::of(&f.id)).collect();
                runs.dedup();
                let faults: Vec<String> =
                    theirs.iter().map(|f| format!("{} (expires in {})", f.id, f.expires_in)).collect();
                let what = format!(
                    "target {} carries faults of another game day (run {}): {}",
                    target.name,
                    runs.join(", "),
                    faults.join(", ")
                );
                if !self.options.force {
                    return Err(StartError::Target(format!(
                        "{what}. Two game days on one proxy drain the same pools and page the same alerts: \
                         neither verdict would say what its own faults did. Wait for it to end (its faults \
                         expire by their TTL), or pass --force to play alongside it"
                    )));
                }
                (self.progress)(&format!("gameday: {what}; --force: playing alongside it, its faults are left alone"));
            }
            if !others.is_empty() {
                let ids: Vec<&str> = others.iter().map(|f| f.id.as_str()).collect();
                (self.progress)(&format!(
                    "gameday: target {} already has faults ({}); they are not this game day's and are left alone",
                    target.name,
                    ids.join(", ")
                ));
            }
        }
        let scrape = self.scrape_metrics().map_err(StartError::Target)?;
        for (i, source) in self.latency_of.iter().enumerate() {
            if let (Some(source), false) = (source, scrape.timed[i]) {
                let pool = &self.scenario.pools[i].name;
                let hint = match source {
                    latency::Source::Cluster(_) => {
                        format!(" (a pool's cluster must have its name; or give --latency-listener {pool}=STAT_PREFIX)")
                    }
                    latency::Source::Listener(_) => String::new(),
                };
                return Err(StartError::Target(format!(
                    "no --metrics page has {source}, which times pool {pool}'s requests{hint}"
                )));
            }
        }
        self.counters = scrape.counters;
        self.latency_start = scrape.latency;
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
        self.note(
            "start",
            format!(
                "run {}: every fault this game day adds is named {}-…; only those are cleared at its end",
                self.run_id, self.run_id
            ),
        );
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

    /// A halt request, in words. The console's Halt is an emergency: the kill switch.
    fn halted(&mut self) -> Option<String> {
        if let Some(why) = signals::received() {
            return Some(why.to_string());
        }
        let halt = self.options.halt.load(Ordering::SeqCst);
        self.emergency |= halt;
        halt.then(|| "halted by request (the console's Halt)".to_string())
    }

    /// The timeline, scrapes and recovery, to the end or until something stops it.
    fn play(&mut self) -> Ending {
        let steps = plan::for_run(plan::plan(self.scenario), &self.run_id);
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
                    Ok(Some(stop)) => {
                        self.emergency = true;
                        Ending::Halted(stop)
                    }
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
                    Ok(Some(stop)) => {
                        self.emergency = true;
                        return Ending::Halted(stop);
                    }
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

    /// The counters of every metrics page summed by pool, and the request-time histograms of
    /// the pools whose latency is watched.
    fn scrape_metrics(&self) -> Result<Scrape, String> {
        let n = self.scenario.pools.len();
        let mut scrape =
            Scrape { counters: HashMap::new(), latency: vec![latency::Histogram::default(); n], timed: vec![false; n] };
        for url in &self.options.metrics {
            let answer = http::get(url, "", target::CALL_TIMEOUT).map_err(|e| format!("metrics: {e}"))?;
            if answer.status != 200 {
                return Err(format!("metrics: {} answered HTTP {}", url.show(), answer.status));
            }
            let page = answer.text();
            observe::add_counters(&page, &mut scrape.counters);
            for (i, source) in self.latency_of.iter().enumerate() {
                if let Some(source) = source {
                    scrape.timed[i] |= latency::add(&page, source, &mut scrape.latency[i]);
                }
            }
        }
        Ok(scrape)
    }

    /// Pool `i`'s latency over the `n` looks up to look `k`: what its histogram gained.
    fn latency_window(&self, i: usize, k: usize, n: usize) -> Option<latency::Histogram> {
        let looks = self.latency.get(i)?;
        let end = looks.get(k)?;
        let start = match (k + 1).checked_sub(n).and_then(|first| first.checked_sub(1)) {
            Some(before) => looks.get(before)?,
            None => self.latency_start.get(i)?,
        };
        Some(end.since(start))
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
        let Scrape { counters, latency: timed, .. } = self.scrape_metrics()?;
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
            self.latency[i].push(timed[i].clone());
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
        self.judge_latency(&mut report);
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

/// One look at every metrics page.
struct Scrape {
    counters: HashMap<String, observe::Counters>,
    /// Per pool: its request-time histogram (cumulative), and whether any page had it.
    latency: Vec<latency::Histogram>,
    timed: Vec<bool>,
}

/// Where each pool's latency is read, for the pools a latency SLO or a latency rule evaluated
/// here watches: its listener's histogram when `--latency-listener` names one, else its cluster's.
fn latency_sources(scenario: &Scenario, options: &Options) -> Vec<Option<latency::Source>> {
    let latency_signal = |s: Signal| matches!(s, Signal::LatencyP50 | Signal::LatencyP90 | Signal::LatencyP99);
    scenario
        .pools
        .iter()
        .map(|pool| {
            let by_slo = scenario.slos.iter().any(|s| s.latency_p99.as_ref().is_some_and(|r| r.pool == pool.name));
            let by_rule = options.alertmanager.is_none()
                && scenario.alerts.iter().any(|a| a.pool == pool.name && latency_signal(a.signal));
            (by_slo || by_rule).then(|| match options.latency_listeners.iter().find(|(p, _)| p == &pool.name) {
                Some((_, prefix)) => latency::Source::Listener(prefix.clone()),
                None => latency::Source::Cluster(pool.name.clone()),
            })
        })
        .collect()
}
