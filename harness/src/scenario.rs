// The scenario format (contract 3: versioned JSON): topology, traffic, the deploy tooling and
// timeline under test, alert rules, recovery, SLOs. Parsing reports file, line, column and the
// JSON path; checks of meaning (`check`) run before anything is simulated.

mod check;
pub mod error;
mod expiry;
pub mod format;
pub mod limits;
mod position;
mod shape;
mod source;
pub mod time;
pub mod zone;

use std::path::{Path, PathBuf};

use ebb_engine::config::Limits;
use ebb_engine::fault::{DrainMode, OnAbort};
use ebb_engine::{Config, Duration, FaultRequest, Protocol};
use limits::{MAX_CAPACITY_PER_HOST, MAX_HOSTS, MAX_PROXIES, MAX_RATE, MAX_SAMPLE, MAX_WORKERS};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use error::{Problem, ScenarioError};
pub use time::{At, ClockTime};
pub use zone::{Day, Zone};

/// The scenario format version this harness reads.
pub const VERSION: u32 = 1;

/// An incident to replay.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// The JSON Schema this file follows, for editors (`"../docs/scenario.schema.json"` from the
    /// shipped scenarios, as `ebb schema` prints it). Ignored by ebb.
    #[serde(rename = "$schema", default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
    /// Format version; must be 1.
    pub version: u32,
    /// Short name, used in reports.
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// The verdict this scenario is meant to produce (shipped scenarios state it; tests check it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect: Option<Verdict>,
    /// IANA time zone of every clock time in this file (`"America/New_York"`); needs `date`.
    /// Reports show that zone's times with their abbreviation, and UTC. Default: clock times in UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<Zone>,
    /// The day the replay starts on, `YYYY-MM-DD` (in `timezone`): it fixes the offset from UTC
    /// and any DST change in the replay. Default: 2021-02-05.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub date: Option<Day>,
    /// Clock time at which the replay starts (in `timezone`, else UTC). Default `00:00`.
    #[serde(default)]
    pub start: ClockTime,
    /// How long to replay, e.g. `10h`: 1ms to 7d. No duration in a scenario may exceed 7d.
    pub duration: Duration,
    /// Seed of traffic and service times: the same file and seed give the same report.
    #[serde(default = "one")]
    pub seed: u64,
    /// Real requests each simulated request stands for (reported, never hidden). Default 1.
    #[serde(default = "one_u32")]
    #[schemars(range(min = 1, max = MAX_SAMPLE))]
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
    /// Prometheus rule files (YAML, paths relative to this file), e.g.
    /// `["../deploy/prometheus/ebb-alerts.yaml"]`. When given, their alerts, evaluated by
    /// Prometheus itself during the replay, replace `alerts`: `recovery[].on` and `no_page` name
    /// them. Needs Prometheus 2.42+ (`prometheus`, `promtool`). `ebb replay --rules` overrides it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<String>,
    #[serde(default)]
    pub recovery: Vec<Recovery>,
    /// When a pool counts as impaired for customers (for `impact_*` in the report).
    #[serde(default)]
    pub impact: Impact,
    pub slos: Vec<Slo>,
    /// When a live game day (`ebb gameday`) must halt, as AWS FIS's stop conditions: reaching one
    /// sends the kill switch to every target. A replay checks them but never halts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stop_conditions: Vec<StopCondition>,
    /// The folder of the scenario file, set when it is loaded (never read from JSON): recovery
    /// programs (`run`) start there, so a scenario and its scripts move together.
    #[serde(skip)]
    pub dir: PathBuf,
}

/// The JSON Schema (draft 2020-12) of the scenario format, from the types above and their `///` docs.
pub fn json_schema() -> schemars::Schema {
    let mut schema =
        schemars::generate::SchemaSettings::draft2020_12().into_generator().into_root_schema_for::<Scenario>();
    schema.insert("title".into(), "ebb scenario".into());
    schema.insert("$comment".into(), format!("scenario format version {VERSION}; generated by `ebb schema`").into());
    schema
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

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
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
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Topology {
    /// Envoy proxies sharing the traffic, 1 to 1000. Default 1.
    #[schemars(range(min = 1, max = MAX_PROXIES))]
    pub proxies: u32,
    /// Worker threads (VMs) per proxy, 1 to 64. Default 2.
    #[schemars(range(min = 1, max = MAX_WORKERS))]
    pub workers: u32,
}

impl Default for Topology {
    fn default() -> Self {
        Topology { proxies: 1, workers: 2 }
    }
}

/// Filter options passed into the generated plugin configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
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
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Pool {
    pub name: String,
    /// `http` (default) or `tcp`.
    #[serde(default)]
    pub protocol: Protocol,
    /// Hosts the pool is expected to have, 1 to 100,000.
    #[schemars(range(min = 1, max = MAX_HOSTS))]
    pub hosts: u32,
    /// Concurrent requests (connections) one host serves, 1 to 1,000,000; `hosts` times this is
    /// at most 1,000,000,000.
    #[schemars(range(min = 1, max = MAX_CAPACITY_PER_HOST))]
    pub capacity_per_host: u32,
    /// Mean time a host takes for one request (HTTP) or how long a connection lasts (TCP).
    pub service_time: Duration,
    /// `exponential` (default) or `fixed` service times.
    #[serde(default)]
    pub service: Service,
    /// Longest a request waits for a free host before the pool answers 503. Default `30s`.
    #[serde(default = "default_upstream_timeout")]
    pub timeout: Duration,
    /// Envoy's panic threshold, 0 to 1: below this share of expected hosts, the load balancer
    /// spreads requests over every host again, drained ones included, and those fail.
    /// Default 0.5 (Envoy's default); 0 turns panic mode off.
    #[serde(default = "default_panic_threshold")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub panic_threshold: f64,
    /// Scale-out and scale-in: from each step's moment on, the pool is expected to have that
    /// many hosts (an autoscaler's desired size). Scale-in removes the oldest hosts first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scaling: Vec<ScaleStep>,
    /// Load-dependent failure: a host crashes when its concurrency stays above a bound, restarts
    /// after a delay and serves slower while it warms up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overload: Option<Overload>,
    /// Requests (connections) one host holds waiting beyond `capacity_per_host` (its listen
    /// backlog or worker queue), 0 to 1,000,000. Beyond it the host refuses at once. Default:
    /// no bound (a request waits up to `timeout`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = MAX_CAPACITY_PER_HOST))]
    pub backlog_per_host: Option<u32>,
}

/// One step of a pool's size: from `at` on, `hosts` hosts are expected.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ScaleStep {
    pub at: At,
    /// Hosts expected from `at` on, 0 to 100,000.
    #[schemars(range(min = 0, max = MAX_HOSTS))]
    pub hosts: u32,
    /// `false`: the hosts this step launches are never added to the load balancer (a
    /// registration fault): expected, but never available, until the pool is restored.
    /// Default `true`.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub registered: bool,
    /// How long a launched host takes to join the load balancer (boot, health checks).
    /// Default `0s`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub register_after: Duration,
}

fn yes() -> bool {
    true
}

fn is_true(b: &bool) -> bool {
    *b
}

fn is_zero(d: &Duration) -> bool {
    *d == Duration::ZERO
}

/// When a host fails under load, and how it comes back.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Overload {
    /// Requests (connections) per serving host, in service and waiting, above which a host is
    /// overloaded; 1 to 1,000,000.
    #[schemars(range(min = 1, max = MAX_CAPACITY_PER_HOST))]
    pub concurrency: u32,
    /// How long the pool must stay overloaded (at every scrape) before a host crashes; each
    /// further `for` overloaded crashes one more. Default `1m`.
    #[serde(default = "default_window", rename = "for")]
    pub hold: Duration,
    /// How long a crashed host takes to come back. Default `5m`.
    #[serde(default = "default_restart")]
    pub restart: Duration,
    /// How long a restarted or newly launched host serves slower. Default `0s`.
    #[serde(default)]
    pub warmup: Duration,
    /// How many times slower a warming host serves, 1 to 100. Default 2.
    #[serde(default = "default_warmup_factor")]
    #[schemars(range(min = 1.0, max = 100.0))]
    pub warmup_factor: f64,
}

fn default_restart() -> Duration {
    Duration::from_secs(300)
}

fn default_warmup_factor() -> f64 {
    2.0
}

fn default_panic_threshold() -> f64 {
    0.5
}

fn default_upstream_timeout() -> Duration {
    Duration::from_secs(30)
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
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

/// Load on one pool: simulated requests (connections) per second over time. One entry per pool;
/// every rate is 0 to 1,000,000 per second.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Traffic {
    pub pool: String,
    /// A rate curve: `[moment, per second]` points joined by straight lines; flat before the
    /// first point and after the last.
    #[serde(default)]
    #[schemars(schema_with = "points_schema")]
    pub points: Vec<(At, f64)>,
    /// A daily cycle added to the points: lowest at `trough`, highest 12 hours later.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diurnal: Option<Diurnal>,
    /// Extra load for a while.
    #[serde(default)]
    pub bursts: Vec<Burst>,
}

/// `[moment, rate]` pairs; the rate within its limits.
fn points_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "array",
        "default": [],
        "items": {
            "type": "array",
            "prefixItems": [generator.subschema_for::<At>(), {"type": "number", "minimum": 0.0, "maximum": MAX_RATE}],
            "minItems": 2,
            "maxItems": 2
        }
    })
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Diurnal {
    #[schemars(range(min = 0.0, max = MAX_RATE))]
    pub min: f64,
    #[schemars(range(min = 0.0, max = MAX_RATE))]
    pub max: f64,
    /// Clock time of the lowest rate. Default `03:00`.
    #[serde(default = "default_trough")]
    pub trough: ClockTime,
}

fn default_trough() -> ClockTime {
    ClockTime(3 * 3_600_000)
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Burst {
    /// When it starts, inside the replay.
    pub at: At,
    /// How long it lasts (it may run past the end).
    #[serde(rename = "for")]
    pub lasts: Duration,
    /// Extra requests per second, 0 to 1,000,000.
    #[schemars(range(min = 0.0, max = MAX_RATE))]
    pub rate: f64,
}

/// A rolling deployment by the deploy tooling under test: one `deploy` fault per pool.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
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
    /// After an abort, the tooling starts the rollout again this long after the failure, and
    /// the retry completes (the failure was transient). Default: no retry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<Duration>,
    /// Safety TTL of the deploy faults. Default `limits.max_ttl`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<Duration>,
}

/// One timeline entry: exactly one of `command`, `restore`, `clear`, `clear_all`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
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
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
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
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
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
    /// Once firing, keep firing until the condition has been false this long (Prometheus'
    /// `keep_firing_for`), so that a noisy signal does not flap. Default `0s`.
    #[serde(default)]
    pub keep_firing_for: Duration,
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

/// What the on-call or the tooling does when an alert fires (or a pool condition holds): a
/// built-in runbook action or the team's own recovery program. Exactly one of `on` and `when`,
/// and exactly one of `restore`, `clear_all`, `run`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Recovery {
    /// The alert that triggers it (or give `when`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
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
    /// A pool condition that triggers it instead of an alert: the pool's available hosts below
    /// a share of the expected ones for a while.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<PoolTrigger>,
    /// What must still be true when the step acts, `after` the trigger: `trigger` (default: the
    /// alert still firing, or the `when` condition still holding), `below_expected` (the pool
    /// still has fewer available hosts than expected) or `always`. Otherwise it is skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub only_if: Option<StillTrue>,
    /// Attempts that fail before one succeeds (failed manual attempts). Default 0.
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    #[schemars(range(max = MAX_FAILED_ATTEMPTS))]
    pub fails: u32,
    /// Time between a failed attempt and the next. Default `5m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_every: Option<Duration>,
}

fn is_zero_u32(n: &u32) -> bool {
    *n == 0
}

/// Most failed attempts a runbook step may have.
pub const MAX_FAILED_ATTEMPTS: u32 = 100;
/// Default time between a failed runbook attempt and the next.
pub const DEFAULT_RETRY_EVERY: Duration = Duration::from_secs(300);

/// A pool condition that triggers a runbook: `available_hosts / expected_hosts` below `below`
/// for `for`, evaluated at every scrape like an alert rule (but never a page).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PoolTrigger {
    pub pool: String,
    /// Share of expected hosts, 0 to 1. Default 1 (any host missing).
    #[serde(default = "one_f64")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub below: f64,
    /// How long the condition must hold. Default `0s`.
    #[serde(default, rename = "for")]
    pub hold: Duration,
    /// Not while a deployment is in progress on the pool (its planned drain). Default true.
    #[serde(default = "yes")]
    pub unless_deploying: bool,
}

fn one_f64() -> f64 {
    1.0
}

/// The condition a runbook step checks when it acts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum StillTrue {
    /// Its alert still firing (or its `when` condition still holding).
    #[default]
    Trigger,
    /// Its pool still below expected hosts.
    BelowExpected,
    /// Nothing: it acts whatever happened meanwhile.
    Always,
}

impl PoolTrigger {
    /// The condition as an alert rule, so that it is evaluated exactly as alerts are.
    pub fn as_rule(&self, index: usize) -> AlertRule {
        AlertRule {
            name: format!("recovery[{index}].when"),
            pool: self.pool.clone(),
            signal: Signal::AvailableRatio,
            window: default_window(),
            above: None,
            below: Some(self.below),
            hold: self.hold,
            keep_firing_for: Duration::ZERO,
            unless_deploying: self.unless_deploying,
            min_requests: 1,
        }
    }

    /// In words: `web below 100% of expected hosts for 5m`.
    pub fn describe(&self) -> String {
        format!("{} below {}% of expected hosts for {}", self.pool, (self.below * 100.0).round(), self.hold)
    }
}

/// "Halt the game day if the error ratio of pool P exceeds X for Y": a pool's signal past a
/// threshold for `for`, evaluated at every scrape like an alert rule.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StopCondition {
    pub pool: String,
    /// `error_ratio` (default), `shed_ratio` or `available_ratio`; a game day observes no latency.
    #[serde(default = "default_stop_signal")]
    pub signal: Signal,
    /// Halt when the signal is above this value...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub above: Option<f64>,
    /// ...or below this value (0 to 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub below: Option<f64>,
    /// Window of the request-based signals, at least `scrape_interval`. Default `1m`.
    #[serde(default = "default_window")]
    pub window: Duration,
    /// How long the condition must hold. Default `0s`: the first scrape past the threshold halts.
    #[serde(default, rename = "for")]
    pub hold: Duration,
    /// Request-based signals need at least this many requests in the window. Default 1.
    #[serde(default = "one")]
    pub min_requests: u64,
}

fn default_stop_signal() -> Signal {
    Signal::ErrorRatio
}

impl StopCondition {
    /// The condition as an alert rule, so that it is evaluated exactly as alerts are.
    pub fn as_rule(&self, index: usize) -> AlertRule {
        AlertRule {
            name: format!("stop_conditions[{index}]"),
            pool: self.pool.clone(),
            signal: self.signal,
            window: self.window,
            above: self.above,
            below: self.below,
            hold: self.hold,
            keep_firing_for: Duration::ZERO,
            unless_deploying: false,
            min_requests: self.min_requests,
        }
    }

    /// In words, for the timeline: `error_ratio of web > 0.5 for 30s`.
    pub fn describe(&self) -> String {
        let signal =
            serde_json::to_value(self.signal).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default();
        let threshold = match (self.above, self.below) {
            (Some(a), _) => format!("> {a}"),
            (None, Some(b)) => format!("< {b}"),
            _ => String::new(),
        };
        format!("{signal} of {} {threshold} for {}", self.pool, self.hold)
    }
}

/// Default `timeout` of a recovery program.
pub const DEFAULT_RUN_TIMEOUT: Duration = Duration::from_secs(60);

impl Recovery {
    /// How long the program may run (real time).
    pub fn run_timeout(&self) -> Duration {
        self.timeout.unwrap_or(DEFAULT_RUN_TIMEOUT)
    }

    /// What triggers it, in words: the alert's name, or the pool condition.
    pub fn trigger(&self) -> String {
        match &self.when {
            Some(w) => w.describe(),
            None => self.on.clone(),
        }
    }

    pub fn retry_every(&self) -> Duration {
        self.retry_every.unwrap_or(DEFAULT_RETRY_EVERY)
    }
}

/// When customers are impaired: error ratio or p90 latency over `window` above these.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Impact {
    /// 0 to 1. Default 0.01.
    #[schemars(range(min = 0.0, max = 1.0))]
    pub error_ratio: f64,
    /// p90 latency in seconds; default none.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0))]
    pub latency_p90: Option<f64>,
    /// At least `scrape_interval`. Default `5m`: long enough that a handful of unlucky requests
    /// is not an impact.
    pub window: Duration,
    /// How long impairment must last to be an impact (gaps shorter than `window` bridged):
    /// shorter runs are noise. Default `2m`.
    #[serde(rename = "for")]
    pub sustained: Duration,
}

/// Default `impact.for`.
pub const DEFAULT_IMPACT_FOR: Duration = Duration::from_secs(120);

impl Default for Impact {
    fn default() -> Self {
        Impact { error_ratio: 0.01, latency_p90: None, window: Duration::from_secs(300), sustained: DEFAULT_IMPACT_FOR }
    }
}

/// A service level objective: exactly one kind.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
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

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PoolWithin {
    pub pool: String,
    pub max: Duration,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NoPage {
    pub alerts: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RatioWithin {
    pub pool: String,
    /// A ratio from 0 to 1 (`error_ratio`) or seconds (`latency_p99`).
    #[schemars(range(min = 0.0))]
    pub max: f64,
    /// At least `scrape_interval`. Default `5m`.
    #[serde(default = "default_slo_window")]
    pub window: Duration,
}

fn default_slo_window() -> Duration {
    Duration::from_secs(300)
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Budget {
    pub pool: String,
    /// Between 0 and 1, like 0.999.
    #[schemars(range(min = 0.0, max = 1.0))]
    pub objective: f64,
    /// Share of the budget, 0 or more (1.0 = all of it).
    #[schemars(range(min = 0.0))]
    pub max: f64,
    /// The period the budget is for, like `30d` (at most 366d): the replayed window spends a
    /// share of it, the period's requests estimated from the replay's mean rate. Default: the
    /// replayed window itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period: Option<Duration>,
}

/// Longest error budget period.
pub const MAX_BUDGET_PERIOD: Duration = Duration::from_secs(366 * 86_400);

/// `text` with control characters escaped (`\0`, `\u{1b}`), so that no error can move the
/// terminal's cursor or hide what follows.
fn printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

impl Scenario {
    /// Reads, parses and checks a scenario file (a regular file of at most 64 MiB).
    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        let bytes = source::read(path).map_err(|message| ScenarioError::file(path.to_path_buf(), message))?;
        Scenario::parse(path, &bytes)
    }

    /// Parses and checks scenario JSON; `file` names it in errors. Every problem found carries
    /// the line and column of the value at fault, whether the parser or a check of meaning found it.
    pub fn parse(file: &Path, bytes: &[u8]) -> Result<Scenario, ScenarioError> {
        let text = source::strip_bom(bytes);
        let json_error = |path: String, inner: serde_json::Error| {
            let mut message = inner.to_string();
            if let Some(at) = message.find(" at line ") {
                message.truncate(at);
            }
            if let Some(suggestion) = error::did_you_mean(&message) {
                message.push_str(&format!(" (did you mean `{suggestion}`?)"));
            }
            // serde_path_to_error writes `?` for a step it could not name, and `.` for the root:
            // the path is cut before either, and the position says the rest.
            let path = match path.find('?') {
                Some(cut) => path[..cut].trim_end_matches(['.', '[']).to_string(),
                None if path == "." => String::new(),
                None => path,
            };
            // A key as written may hold control characters: shown escaped, never raw.
            let (path, message) = (printable(&path), printable(&message));
            let (line, column) = match inner.line() {
                // Errors at the very end (an empty file, a missing `}`) have no column: the
                // end of the text is where something was expected.
                0 => position::line_column(text, text.len()),
                line => (line, inner.column().max(1)),
            };
            let problem = Problem { line: Some(line), column: Some(column), path, message };
            ScenarioError { file: file.to_path_buf(), problems: vec![problem], more: 0 }
        };
        let mut de = serde_json::Deserializer::from_slice(text);
        let scenario: Scenario =
            serde_path_to_error::deserialize(&mut de).map_err(|e| json_error(e.path().to_string(), e.into_inner()))?;
        de.end().map_err(|e| json_error(String::new(), e))?;
        let mut scenario = scenario;
        scenario.dir = file.parent().map(Path::to_path_buf).unwrap_or_default();
        let mut problems = scenario.check();
        if let (Ok(written), Ok(read)) =
            (serde_json::from_slice::<serde_json::Value>(text), serde_json::to_value(&scenario))
        {
            shape::objects_where_expected(&written, &read, &mut problems);
        }
        if !problems.is_empty() {
            let more = problems.total.saturating_sub(problems.kept.len());
            let problems = problems
                .kept
                .into_iter()
                .map(|(path, message)| {
                    let (line, column) = position::locate(text, &path);
                    Problem { line: Some(line), column: Some(column), path, message }
                })
                .collect();
            return Err(ScenarioError { file: file.to_path_buf(), problems, more });
        }
        Ok(scenario)
    }

    /// The programs a replay of this scenario runs (`recovery[].run`), with their JSON paths.
    pub fn programs(&self) -> Vec<(String, &Recovery)> {
        self.recovery
            .iter()
            .enumerate()
            .filter(|(_, r)| r.run.is_some())
            .map(|(i, r)| (format!("recovery[{i}].run"), r))
            .collect()
    }

    /// The control API key the replay signs with (derived from the seed; never a secret).
    pub fn control_key(&self) -> String {
        // 32 bytes or more: the filter warns about shorter keys.
        format!("ebb-replay-control-key-{:016x}", self.seed)
    }

    /// The ebb plugin configuration every simulated proxy runs.
    pub fn plugin_config(&self) -> Config {
        self.config_with(self.pools.iter().map(|p| self.pool_config(p)).collect())
    }

    /// What the filter is told of `pool`.
    fn pool_config(&self, p: &Pool) -> ebb_engine::PoolConfig {
        let proxies = self.topology.proxies.max(1);
        ebb_engine::PoolConfig {
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
            // Each proxy admits its share of a host's concurrency. A host with a backlog accepts
            // that many more and queues them (sim/queue.rs), so a capacity drain's admission
            // counts the backlog too: the remaining hosts answer late before the filter sheds.
            capacity_per_host: p.capacity_per_host.saturating_add(p.backlog_per_host.unwrap_or(0)).div_ceil(proxies),
        }
    }

    /// The plugin configuration with these pools (all of them, one, or none for checks).
    fn config_with(&self, pools: Vec<ebb_engine::PoolConfig>) -> Config {
        Config {
            pools,
            limits: self.filter.limits.clone(),
            control: Some(ebb_engine::config::ControlConfig {
                path_prefix: "/.ebb/v1/".into(),
                key: self.control_key(),
                window: Duration::from_secs(300),
                accept_v1_signatures: false,
            }),
            header_faults: false,
            faults: Vec::new(),
            tick: self.filter.tick,
        }
    }

    /// The fault a deploy run asks the filter for, per pool; `retry` for the tooling's retry
    /// after an abort, which runs every batch.
    pub fn deploy_fault(&self, index: usize, run: &DeployRun, pool: &str, retry: bool) -> FaultRequest {
        FaultRequest {
            id: Some(format!("deploy{}-{pool}{}", index + 1, if retry { "-retry" } else { "" })),
            ttl: Some(run.ttl.unwrap_or(self.filter.limits.max_ttl)),
            deploy: Some(ebb_engine::fault::Deploy {
                pool: pool.to_string(),
                batches: run.batches,
                batch_interval: run.batch_interval,
                abort_at_batch: if retry { None } else { run.fail_at_batch },
                on_abort: run.on_abort,
                mode: run.mode,
            }),
            ..FaultRequest::default()
        }
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
