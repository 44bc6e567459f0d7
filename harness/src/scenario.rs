// The scenario format (contract 3: versioned JSON): topology, traffic, the deploy tooling and
// timeline under test, alert rules, recovery, SLOs. Parsing reports file, line, column and the
// JSON path; checks of meaning run before anything is simulated.

pub mod time;

use std::path::{Path, PathBuf};

use ebb_engine::config::Limits;
use ebb_engine::fault::{DrainMode, OnAbort};
use ebb_engine::{Config, Duration, FaultRequest, FaultSet, Protocol};
use serde::{Deserialize, Serialize};

pub use time::{At, ClockTime};

/// The scenario format version this harness reads.
pub const VERSION: u32 = 1;

/// An incident to replay.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Format version; must be 1.
    pub version: u32,
    /// Short name, used in reports.
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// The verdict this scenario is meant to produce (shipped scenarios state it; tests check it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect: Option<Verdict>,
    /// UTC clock time at which the replay starts. Default `00:00`.
    #[serde(default)]
    pub start: ClockTime,
    /// How long to replay, e.g. `10h`.
    pub duration: Duration,
    /// Seed of traffic and service times: the same file and seed give the same report.
    #[serde(default = "one")]
    pub seed: u64,
    /// Real requests each simulated request stands for (reported, never hidden). Default 1.
    #[serde(default = "one_u32")]
    pub sample: u32,
    #[serde(default)]
    pub topology: Topology,
    /// Options of the ebb filter beyond the pools (which come from `pools`).
    #[serde(default)]
    pub filter: FilterOptions,
    pub pools: Vec<Pool>,
    pub traffic: Vec<Traffic>,
    /// Rolling deployments run by the deploy tooling under test.
    #[serde(default)]
    pub deploys: Vec<DeployRun>,
    /// Commands and operator actions at given moments.
    #[serde(default)]
    pub timeline: Vec<Action>,
    /// How often metrics are scraped and alert rules evaluated. Default `15s`.
    #[serde(default = "default_scrape")]
    pub scrape_interval: Duration,
    #[serde(default)]
    pub alerts: Vec<AlertRule>,
    #[serde(default)]
    pub recovery: Vec<Recovery>,
    /// When a pool counts as impaired for customers (for `impact_*` in the report).
    #[serde(default)]
    pub impact: Impact,
    pub slos: Vec<Slo>,
    /// The folder of the scenario file, set when it is loaded (never read from JSON): recovery
    /// programs (`run`) start there, so a scenario and its scripts move together.
    #[serde(skip)]
    pub dir: PathBuf,
}

fn one() -> u64 {
    1
}
fn one_u32() -> u32 {
    1
}
fn default_scrape() -> Duration {
    Duration::from_secs(15)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Pass,
    Fail,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Fail => "fail",
        }
    }
}

/// Proxies in front of the pools and the workers of each.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Topology {
    /// Envoy proxies sharing the traffic. Default 1.
    pub proxies: u32,
    /// Worker threads (VMs) per proxy. Default 2.
    pub workers: u32,
}

impl Default for Topology {
    fn default() -> Self {
        Topology { proxies: 1, workers: 2 }
    }
}

/// Filter options passed into the generated plugin configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FilterOptions {
    /// Blast-radius caps (see docs/configuration.md). Default: the filter's, with `max_ttl` 24h.
    pub limits: Limits,
    /// The filter's tick. Default `1s`.
    pub tick: Duration,
}

impl Default for FilterOptions {
    fn default() -> Self {
        FilterOptions {
            limits: Limits { max_ttl: Duration::from_secs(24 * 3600), ..Limits::default() },
            tick: Duration::from_secs(1),
        }
    }
}

/// An upstream pool and how its hosts serve.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pool {
    pub name: String,
    /// `http` (default) or `tcp`.
    #[serde(default)]
    pub protocol: Protocol,
    pub hosts: u32,
    /// Concurrent requests (connections) one host serves.
    pub capacity_per_host: u32,
    /// Mean time a host takes for one request (HTTP) or how long a connection lasts (TCP).
    pub service_time: Duration,
    /// `exponential` (default) or `fixed` service times.
    #[serde(default)]
    pub service: Service,
    /// Longest a request waits for a free host before the pool answers 503. Default `30s`.
    #[serde(default = "default_upstream_timeout")]
    pub timeout: Duration,
}

fn default_upstream_timeout() -> Duration {
    Duration::from_secs(30)
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Service {
    #[default]
    Exponential,
    Fixed,
}

impl Pool {
    /// The `:authority` simulated requests of this pool carry.
    pub fn authority(&self) -> String {
        format!("{}.ebb.test", self.name)
    }
}

/// Load on one pool: simulated requests (connections) per second over time.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Traffic {
    pub pool: String,
    /// A rate curve: `[moment, per second]` points joined by straight lines; flat before the
    /// first point and after the last.
    #[serde(default)]
    pub points: Vec<(At, f64)>,
    /// A daily cycle added to the points: lowest at `trough`, highest 12 hours later.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diurnal: Option<Diurnal>,
    /// Extra load for a while.
    #[serde(default)]
    pub bursts: Vec<Burst>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Diurnal {
    pub min: f64,
    pub max: f64,
    /// Clock time of the lowest rate. Default `03:00`.
    #[serde(default = "default_trough")]
    pub trough: ClockTime,
}

fn default_trough() -> ClockTime {
    ClockTime(3 * 3_600_000)
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Burst {
    pub at: At,
    #[serde(rename = "for")]
    pub lasts: Duration,
    /// Extra requests per second.
    pub rate: f64,
}

/// A rolling deployment by the deploy tooling under test: one `deploy` fault per pool.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeployRun {
    pub at: At,
    pub pools: Vec<String>,
    pub batches: u32,
    pub batch_interval: Duration,
    /// The tooling fails while this batch (1-based) is drained, and aborts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fail_at_batch: Option<u32>,
    /// What the tooling does to the batch in flight when it aborts. Default `leave_drained`.
    #[serde(default)]
    pub on_abort: OnAbort,
    #[serde(default)]
    pub mode: DrainMode,
    /// Safety TTL of the deploy faults. Default `limits.max_ttl`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<Duration>,
}

/// One timeline entry: exactly one of `command`, `restore`, `clear`, `clear_all`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Action {
    pub at: At,
    /// A fault to add through the control API (the filter's fault format).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<FaultRequest>,
    /// Restore a pool: clear every fault on it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore: Option<String>,
    /// Clear one fault by id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clear: Option<String>,
    /// The kill switch.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub clear_all: bool,
    /// Shown in the timeline.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub note: String,
}

impl Default for At {
    fn default() -> Self {
        At::Offset(Duration::ZERO)
    }
}

/// What an alert rule watches, per pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Signal {
    /// Failed / all requests over `window` (local 5xx, upstream 503, refused connections).
    ErrorRatio,
    /// Requests shed or failed by the filter / all requests over `window`.
    ShedRatio,
    /// Latency quantiles over `window`, in seconds.
    LatencyP50,
    LatencyP90,
    LatencyP99,
    /// The filter's `available_hosts / expected_hosts` (lowest over proxies): the capacity signal.
    AvailableRatio,
}

/// An alert rule, evaluated at every scrape like Prometheus: the condition must hold for `for`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertRule {
    pub name: String,
    pub pool: String,
    pub signal: Signal,
    /// Window for request-based signals. Default `1m`.
    #[serde(default = "default_window")]
    pub window: Duration,
    /// Fire when the signal is above this value...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub above: Option<f64>,
    /// ...or below this value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub below: Option<f64>,
    /// How long the condition must hold. Default `0s`.
    #[serde(default, rename = "for")]
    pub hold: Duration,
    /// Stay silent while the filter reports a deployment in progress on the pool.
    #[serde(default)]
    pub unless_deploying: bool,
    /// Request-based signals need at least this many requests in the window. Default 1.
    #[serde(default = "one")]
    pub min_requests: u64,
}

fn default_window() -> Duration {
    Duration::from_secs(60)
}

/// What the on-call or the tooling does when an alert fires: a built-in runbook action or the
/// team's own recovery program. Exactly one of `restore`, `clear_all`, `run`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recovery {
    /// The alert that triggers it.
    pub on: String,
    /// Time from the alert firing to the action (diagnosis, approvals). Default `0s`.
    #[serde(default)]
    pub after: Duration,
    /// Restore this pool through the control API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore: Option<String>,
    /// Use the kill switch.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub clear_all: bool,
    /// Run this program (argv, no shell) with the alert as Alertmanager webhook JSON on stdin and
    /// `EBB_CONTROL_URL`, `EBB_KEY`, `EBB_TIMESTAMP`, `EBB_ALERT`, `EBB_POOL` in its environment;
    /// it recovers through the control API, as it would against Envoy. It runs in the scenario
    /// file's folder, and a relative program path (one with a `/`) starts there. Simulated time
    /// waits while it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<Vec<String>>,
    /// Real time the program may take before it is killed (with what it started), 1s to 10m.
    /// Default `1m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
}

/// Default `timeout` of a recovery program.
pub const DEFAULT_RUN_TIMEOUT: Duration = Duration::from_secs(60);

impl Recovery {
    /// How long the program may run (real time).
    pub fn run_timeout(&self) -> Duration {
        self.timeout.unwrap_or(DEFAULT_RUN_TIMEOUT)
    }
}

/// When customers are impaired: error ratio or p90 latency over `window` above these.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Impact {
    /// Default 0.01.
    pub error_ratio: f64,
    /// p90 latency in seconds; default none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_p90: Option<f64>,
    /// Default `5m`: long enough that a handful of unlucky requests is not an impact.
    pub window: Duration,
}

impl Default for Impact {
    fn default() -> Self {
        Impact { error_ratio: 0.01, latency_p90: None, window: Duration::from_secs(300) }
    }
}

/// A service level objective: exactly one kind.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Slo {
    /// Shown in the verdict table; a name is generated when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// An alert on the pool fires within `max` of unplanned capacity loss.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_to_detect: Option<PoolWithin>,
    /// The pool is back to its expected hosts within `max` of the loss.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_to_restore: Option<PoolWithin>,
    /// None of these alerts fires (alert precision: e.g. during a healthy deployment).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_page: Option<NoPage>,
    /// The error ratio over every `window` stays at or below `max`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_ratio: Option<RatioWithin>,
    /// The p99 latency of every `window` stays at or below `max` seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_p99: Option<RatioWithin>,
    /// Error budget consumed over the replay, against `objective` (e.g. 0.999), at most `max`
    /// (1.0 = the whole budget of the replayed period).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_budget: Option<Budget>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolWithin {
    pub pool: String,
    pub max: Duration,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoPage {
    pub alerts: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RatioWithin {
    pub pool: String,
    pub max: f64,
    /// Default `5m`.
    #[serde(default = "default_slo_window")]
    pub window: Duration,
}

fn default_slo_window() -> Duration {
    Duration::from_secs(300)
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Budget {
    pub pool: String,
    pub objective: f64,
    pub max: f64,
}

/// A scenario that does not load: where, and what was expected. Always the scenario's fault.
#[derive(Debug, thiserror::Error)]
#[error("{file}{}: {path}{message}", location(*line, *column), path = if path.is_empty() { String::new() } else { format!("{path}: ") })]
pub struct ScenarioError {
    pub file: PathBuf,
    /// 1-based line and column, when the JSON parser knows them.
    pub line: Option<usize>,
    pub column: Option<usize>,
    /// JSON path of the offending value, e.g. `alerts[2].for`.
    pub path: String,
    pub message: String,
}

fn location(line: Option<usize>, column: Option<usize>) -> String {
    match (line, column) {
        (Some(l), Some(c)) => format!(":{l}:{c}"),
        (Some(l), None) => format!(":{l}"),
        _ => String::new(),
    }
}

impl Scenario {
    /// Reads, parses and checks a scenario file.
    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        let bytes = std::fs::read(path).map_err(|e| ScenarioError {
            file: path.to_path_buf(),
            line: None,
            column: None,
            path: String::new(),
            message: format!("cannot read: {e}"),
        })?;
        Scenario::parse(path, &bytes)
    }

    /// Parses and checks scenario JSON; `file` names it in errors.
    pub fn parse(file: &Path, bytes: &[u8]) -> Result<Scenario, ScenarioError> {
        let json_error = |path: String, inner: serde_json::Error| {
            let (line, column) = (inner.line(), inner.column());
            let mut message = inner.to_string();
            if let Some(at) = message.find(" at line ") {
                message.truncate(at);
            }
            ScenarioError {
                file: file.to_path_buf(),
                line: (line > 0).then_some(line),
                column: (column > 0).then_some(column),
                path: if path == "." { String::new() } else { path },
                message,
            }
        };
        let mut de = serde_json::Deserializer::from_slice(bytes);
        let scenario: Scenario =
            serde_path_to_error::deserialize(&mut de).map_err(|e| json_error(e.path().to_string(), e.into_inner()))?;
        de.end().map_err(|e| json_error(String::new(), e))?;
        let mut scenario = scenario;
        scenario.dir = file.parent().map(Path::to_path_buf).unwrap_or_default();
        scenario.check().map_err(|(path, message)| ScenarioError {
            file: file.to_path_buf(),
            line: None,
            column: None,
            path,
            message,
        })?;
        Ok(scenario)
    }

    /// Milliseconds from the start to `at`.
    pub fn offset_ms(&self, at: At) -> u64 {
        at.offset_ms(self.start)
    }

    /// The control API key the replay signs with (derived from the seed; never a secret).
    pub fn control_key(&self) -> String {
        format!("ebb-replay-key-{:016x}", self.seed)
    }

    /// The ebb plugin configuration every simulated proxy runs.
    pub fn plugin_config(&self) -> Config {
        let proxies = self.topology.proxies.max(1);
        let pools = self
            .pools
            .iter()
            .map(|p| ebb_engine::PoolConfig {
                name: p.name.clone(),
                protocol: p.protocol,
                matcher: match p.protocol {
                    Protocol::Http => {
                        ebb_engine::config::PoolMatch { authority: Some(p.authority()), ..Default::default() }
                    }
                    // The one TCP pool takes every connection of the network filter's listener,
                    // as a dedicated SSH listener does in deploy/envoy.
                    Protocol::Tcp => ebb_engine::config::PoolMatch::default(),
                },
                hosts: p.hosts,
                // Each proxy admits its share of a host's concurrency.
                capacity_per_host: p.capacity_per_host.div_ceil(proxies),
            })
            .collect();
        Config {
            pools,
            limits: self.filter.limits.clone(),
            control: Some(ebb_engine::config::ControlConfig {
                path_prefix: "/.ebb/v1/".into(),
                key: self.control_key(),
                window: Duration::from_secs(300),
            }),
            header_faults: false,
            faults: Vec::new(),
            tick: self.filter.tick,
        }
    }

    /// The fault a deploy run asks the filter for, per pool.
    pub fn deploy_fault(&self, index: usize, run: &DeployRun, pool: &str) -> FaultRequest {
        FaultRequest {
            id: Some(format!("deploy{}-{pool}", index + 1)),
            ttl: Some(run.ttl.unwrap_or(self.filter.limits.max_ttl)),
            deploy: Some(ebb_engine::fault::Deploy {
                pool: pool.to_string(),
                batches: run.batches,
                batch_interval: run.batch_interval,
                abort_at_batch: run.fail_at_batch,
                on_abort: run.on_abort,
                mode: run.mode,
            }),
            ..FaultRequest::default()
        }
    }

    /// Checks of meaning: names that must exist, ranges, moments inside the replay, and every
    /// command against the filter's own rules and caps. Errors are (JSON path, message).
    pub fn check(&self) -> Result<(), (String, String)> {
        let err = |path: String, message: String| Err((path, message));
        if self.version != VERSION {
            return err("version".into(), format!("this ebb reads scenario version {VERSION}, not {}", self.version));
        }
        if self.duration == Duration::ZERO || self.duration > Duration::from_secs(7 * 86_400) {
            return err("duration".into(), "must be between 1ms and 7d".into());
        }
        if self.sample == 0 {
            return err("sample".into(), "must be at least 1".into());
        }
        if !(1..=1000).contains(&self.topology.proxies) || !(1..=64).contains(&self.topology.workers) {
            return err("topology".into(), "proxies must be 1 to 1000 and workers 1 to 64".into());
        }
        if self.scrape_interval < Duration::from_secs(1) {
            return err("scrape_interval".into(), "must be at least 1s".into());
        }
        let config = self.plugin_config();
        if self.pools.iter().filter(|p| p.protocol == Protocol::Tcp).count() > 1 {
            let i = self.pools.iter().rposition(|p| p.protocol == Protocol::Tcp).unwrap_or(0);
            return err(
                format!("pools[{i}].protocol"),
                "a replay models one TCP listener, so at most one pool can be tcp".into(),
            );
        }
        for (i, p) in self.pools.iter().enumerate() {
            if p.service_time == Duration::ZERO {
                return err(format!("pools[{i}].service_time"), "must be longer than 0s".into());
            }
        }
        if let Err(e) = config.validate() {
            // Pool errors come back as pools[i].field: the same paths as in the scenario.
            let path = if e.path.starts_with("pools") { e.path.clone() } else { format!("filter.{}", e.path) };
            return err(path, e.message);
        }
        let pool_names: Vec<&str> = self.pools.iter().map(|p| p.name.as_str()).collect();
        let known_pool = |path: String, name: &str| -> Result<(), (String, String)> {
            if pool_names.contains(&name) {
                Ok(())
            } else {
                Err((path, format!("no pool named {name:?} (pools: {})", pool_names.join(", "))))
            }
        };
        let within = |path: String, at: At| -> Result<(), (String, String)> {
            if self.offset_ms(at) > self.duration.as_millis() {
                Err((path, format!("{at} is after the end of the replay ({} from {})", self.duration, self.start)))
            } else {
                Ok(())
            }
        };
        for (i, t) in self.traffic.iter().enumerate() {
            known_pool(format!("traffic[{i}].pool"), &t.pool)?;
            if t.points.is_empty() && t.diurnal.is_none() && t.bursts.is_empty() {
                return err(format!("traffic[{i}]"), "give points, diurnal or bursts".into());
            }
            for (j, (at, rate)) in t.points.iter().enumerate() {
                if !(rate.is_finite() && *rate >= 0.0) {
                    return err(
                        format!("traffic[{i}].points[{j}]"),
                        "a rate is a number of requests per second, 0 or more".into(),
                    );
                }
                within(format!("traffic[{i}].points[{j}]"), *at)?;
            }
            if let Some(d) = &t.diurnal {
                if !(d.min >= 0.0 && d.max >= d.min) {
                    return err(format!("traffic[{i}].diurnal"), "needs 0 <= min <= max".into());
                }
            }
        }
        let mut set = FaultSet::default();
        for (i, run) in self.deploys.iter().enumerate() {
            within(format!("deploys[{i}].at"), run.at)?;
            for (j, pool) in run.pools.iter().enumerate() {
                known_pool(format!("deploys[{i}].pools[{j}]"), pool)?;
                let fault = self.deploy_fault(i, run, pool);
                FaultSet::default()
                    .add(&config, &fault, 0)
                    .map_err(|e| (format!("deploys[{i}]"), format!("pool {pool}: {e}")))?;
            }
        }
        for (i, a) in self.timeline.iter().enumerate() {
            within(format!("timeline[{i}].at"), a.at)?;
            let kinds = usize::from(a.command.is_some())
                + usize::from(a.restore.is_some())
                + usize::from(a.clear.is_some())
                + usize::from(a.clear_all);
            if kinds != 1 {
                return err(format!("timeline[{i}]"), "give exactly one of command, restore, clear, clear_all".into());
            }
            if let Some(pool) = &a.restore {
                known_pool(format!("timeline[{i}].restore"), pool)?;
            }
            if let Some(command) = &a.command {
                set.add(&config, command, 0).map_err(|e| (format!("timeline[{i}].command"), e.to_string()))?;
                set = FaultSet::default();
            }
        }
        let mut alert_names: Vec<&str> = Vec::new();
        for (i, a) in self.alerts.iter().enumerate() {
            if alert_names.contains(&a.name.as_str()) {
                return err(format!("alerts[{i}].name"), format!("alert {:?} is defined twice", a.name));
            }
            alert_names.push(&a.name);
            known_pool(format!("alerts[{i}].pool"), &a.pool)?;
            if a.above.is_some() == a.below.is_some() {
                return err(format!("alerts[{i}]"), "give exactly one of above or below".into());
            }
            if a.window < self.scrape_interval {
                return err(
                    format!("alerts[{i}].window"),
                    format!("must be at least scrape_interval ({})", self.scrape_interval),
                );
            }
        }
        let known_alert = |path: String, name: &str| -> Result<(), (String, String)> {
            if alert_names.contains(&name) {
                Ok(())
            } else {
                Err((path, format!("no alert named {name:?} (alerts: {})", alert_names.join(", "))))
            }
        };
        for (i, r) in self.recovery.iter().enumerate() {
            known_alert(format!("recovery[{i}].on"), &r.on)?;
            if usize::from(r.restore.is_some()) + usize::from(r.clear_all) + usize::from(r.run.is_some()) != 1 {
                return err(format!("recovery[{i}]"), "give exactly one of restore, clear_all or run".into());
            }
            if let Some(run) = &r.run {
                if run.first().is_none_or(|program| program.is_empty()) {
                    return err(
                        format!("recovery[{i}].run"),
                        "give the program and its arguments, like [\"scripts/recover-pool.sh\", \"--verbose\"]".into(),
                    );
                }
            }
            if let Some(timeout) = r.timeout {
                if r.run.is_none() {
                    return err(format!("recovery[{i}].timeout"), "only a recovery program (run) has a timeout".into());
                }
                if timeout < Duration::from_secs(1) || timeout > Duration::from_secs(600) {
                    return err(format!("recovery[{i}].timeout"), format!("must be between 1s and 10m, not {timeout}"));
                }
            }
            if let Some(pool) = &r.restore {
                known_pool(format!("recovery[{i}].restore"), pool)?;
            }
        }
        if self.slos.is_empty() {
            return err("slos".into(), "a scenario needs at least one SLO: it is what the verdict is made of".into());
        }
        for (i, s) in self.slos.iter().enumerate() {
            let at = |f: &str| format!("slos[{i}].{f}");
            let kinds = [
                s.time_to_detect.is_some(),
                s.time_to_restore.is_some(),
                s.no_page.is_some(),
                s.error_ratio.is_some(),
                s.latency_p99.is_some(),
                s.error_budget.is_some(),
            ];
            if kinds.iter().filter(|k| **k).count() != 1 {
                return err(
                    format!("slos[{i}]"),
                    "give exactly one of time_to_detect, time_to_restore, no_page, error_ratio, latency_p99, error_budget".into(),
                );
            }
            if let Some(p) = s.time_to_detect.as_ref().or(s.time_to_restore.as_ref()) {
                known_pool(at("pool"), &p.pool)?;
            }
            if let Some(n) = &s.no_page {
                for (j, a) in n.alerts.iter().enumerate() {
                    known_alert(format!("slos[{i}].no_page.alerts[{j}]"), a)?;
                }
            }
            if let Some(r) = s.error_ratio.as_ref().or(s.latency_p99.as_ref()) {
                known_pool(at("pool"), &r.pool)?;
            }
            if let Some(b) = &s.error_budget {
                known_pool(at("error_budget.pool"), &b.pool)?;
                if !(b.objective > 0.0 && b.objective < 1.0) {
                    return err(at("error_budget.objective"), "must be between 0 and 1, like 0.999".into());
                }
            }
        }
        Ok(())
    }
}

impl Slo {
    /// The name shown in reports.
    pub fn label(&self) -> String {
        if let Some(name) = &self.name {
            return name.clone();
        }
        if let Some(p) = &self.time_to_detect {
            return format!("{}: time to detect capacity loss", p.pool);
        }
        if let Some(p) = &self.time_to_restore {
            return format!("{}: time to restore capacity", p.pool);
        }
        if let Some(n) = &self.no_page {
            return format!("no page from {}", n.alerts.join(", "));
        }
        if let Some(r) = &self.error_ratio {
            return format!("{}: error ratio per {}", r.pool, r.window);
        }
        if let Some(r) = &self.latency_p99 {
            return format!("{}: p99 latency per {}", r.pool, r.window);
        }
        if let Some(b) = &self.error_budget {
            return format!("{}: error budget at {}", b.pool, b.objective);
        }
        "slo".into()
    }
}
