// `--rules`: a team's Prometheus rule files judged by Prometheus itself during a replay. promtool
// checks the files; a loopback Prometheus receives the replay's series by remote write and answers
// each rule's expression at its group's evaluation times; ebb applies `for`/`keep_firing_for`.

pub mod alerting;
pub mod remote;
pub mod server;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;

use crate::series::Recorder;
use alerting::{AlertState, Labels, State};

/// Prometheus's default `evaluation_interval`, for a group without `interval`.
pub const DEFAULT_INTERVAL_MS: i64 = 60_000;
/// Rule files read at most (a rule file is configuration).
const MAX_RULE_FILE_BYTES: u64 = 4 << 20;

#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    #[error(
        "{0} not found on PATH: --rules needs Prometheus 2.42 or later (prometheus and promtool). \
         Install it with `apt-get install prometheus` (Debian, Ubuntu) or from https://prometheus.io/download/"
    )]
    Missing(String),
    #[error("{file}: promtool check rules failed:\n{message}")]
    Invalid { file: PathBuf, message: String },
    #[error("{0}")]
    Io(String),
    #[error("Prometheus {0}")]
    Prometheus(String),
    #[error("interrupted")]
    Interrupted,
}

/// A rule file as Prometheus reads it (the fields ebb uses; promtool has checked the rest).
#[derive(Deserialize)]
struct File {
    #[serde(default)]
    groups: Vec<GroupSpec>,
}

#[derive(Deserialize)]
struct GroupSpec {
    name: String,
    #[serde(default)]
    interval: Option<String>,
    #[serde(default)]
    rules: Vec<RuleSpec>,
}

#[derive(Deserialize)]
struct RuleSpec {
    #[serde(default)]
    record: Option<String>,
    #[serde(default)]
    alert: Option<String>,
    expr: String,
    #[serde(default, rename = "for")]
    hold: Option<String>,
    #[serde(default)]
    keep_firing_for: Option<String>,
    #[serde(default)]
    labels: std::collections::BTreeMap<String, String>,
}

pub enum Kind {
    Record(String),
    Alert { name: String, state: AlertState },
}

pub struct Rule {
    pub kind: Kind,
    pub expr: String,
    pub labels: Vec<(String, String)>,
}

pub struct Group {
    pub name: String,
    /// The file it came from, as given.
    pub file: String,
    pub interval_ms: i64,
    pub rules: Vec<Rule>,
}

/// Rule files checked by promtool and read.
pub struct RuleFiles {
    pub files: Vec<PathBuf>,
    pub groups: Vec<Group>,
}

impl RuleFiles {
    /// Checks `files` with `promtool check rules` and reads their groups.
    pub fn load(files: &[PathBuf]) -> Result<RuleFiles, RulesError> {
        let mut groups = Vec::new();
        for file in files {
            check(file)?;
            groups.extend(read(file)?);
        }
        Ok(RuleFiles { files: files.to_vec(), groups })
    }

    /// What the scenario names that the files do not define, one line each: runbooks that never
    /// run and `no_page` SLOs that cannot fail (with rule files the scenario's own alerts are not
    /// evaluated). Reported in the timeline, not refused: a rule missing from the files is exactly
    /// what a replay with them should show.
    pub fn unknown_names(&self, scenario: &crate::scenario::Scenario) -> Vec<String> {
        let defined = self.alert_names();
        let mut unknown = Vec::new();
        for (i, r) in scenario.recovery.iter().enumerate() {
            // A runbook triggered by a pool condition (`when`) names no alert.
            if !r.on.is_empty() && !defined.contains(&r.on.as_str()) {
                unknown.push(format!("recovery[{i}].on: no rule file defines alert {}: this runbook never runs", r.on));
            }
        }
        for (i, slo) in scenario.slos.iter().enumerate() {
            for (j, a) in slo.no_page.iter().flat_map(|n| n.alerts.iter()).enumerate() {
                if !defined.contains(&a.as_str()) {
                    unknown.push(format!("slos[{i}].no_page.alerts[{j}]: no rule file defines alert {a}"));
                }
            }
        }
        unknown
    }

    /// The names of the alerts the files define.
    pub fn alert_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self
            .groups
            .iter()
            .flat_map(|g| g.rules.iter())
            .filter_map(|r| match &r.kind {
                Kind::Alert { name, .. } => Some(name.as_str()),
                Kind::Record(_) => None,
            })
            .collect();
        names.sort_unstable();
        names.dedup();
        names
    }
}

/// `promtool check rules FILE`: its own message when the file does not parse.
fn check(file: &Path) -> Result<(), RulesError> {
    let output = Command::new("promtool").arg("check").arg("rules").arg(file).output().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            RulesError::Missing("promtool".into())
        } else {
            RulesError::Io(format!("running promtool: {e}"))
        }
    })?;
    if output.status.success() {
        return Ok(());
    }
    let mut message = String::from_utf8_lossy(&output.stdout).trim().to_string();
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !stderr.trim().is_empty() {
        if !message.is_empty() {
            message.push('\n');
        }
        message.push_str(stderr.trim());
    }
    Err(RulesError::Invalid { file: file.to_path_buf(), message })
}

fn read(path: &Path) -> Result<Vec<Group>, RulesError> {
    use std::io::Read;
    let io = |e: std::io::Error| RulesError::Io(format!("reading {}: {e}", path.display()));
    let mut text = String::new();
    std::fs::File::open(path).map_err(io)?.take(MAX_RULE_FILE_BYTES + 1).read_to_string(&mut text).map_err(io)?;
    if text.len() as u64 > MAX_RULE_FILE_BYTES {
        return Err(RulesError::Io(format!("{}: larger than {MAX_RULE_FILE_BYTES} bytes", path.display())));
    }
    let invalid = |message: String| RulesError::Invalid { file: path.to_path_buf(), message };
    let file: File = serde_norway::from_str(&text).map_err(|e| invalid(e.to_string()))?;
    let shown = path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned());
    let mut groups = Vec::new();
    for (g, spec) in file.groups.into_iter().enumerate() {
        let at = |field: &str| format!("groups[{g}].{field}");
        let interval_ms = match &spec.interval {
            Some(text) => {
                duration_ms(text).ok_or_else(|| invalid(format!("{}: not a duration: {text:?}", at("interval"))))?
            }
            None => DEFAULT_INTERVAL_MS,
        };
        if interval_ms <= 0 {
            return Err(invalid(format!("{}: must be more than 0", at("interval"))));
        }
        let mut rules = Vec::new();
        for (r, rule) in spec.rules.into_iter().enumerate() {
            let field = |f: &str| format!("groups[{g}].rules[{r}].{f}");
            let ms = |value: &Option<String>, f: &str| -> Result<i64, RulesError> {
                match value {
                    Some(text) => {
                        duration_ms(text).ok_or_else(|| invalid(format!("{}: not a duration: {text:?}", field(f))))
                    }
                    None => Ok(0),
                }
            };
            let kind = match (rule.record, rule.alert) {
                (Some(name), None) => Kind::Record(name),
                (None, Some(name)) => Kind::Alert {
                    name,
                    state: AlertState::new(ms(&rule.hold, "for")?, ms(&rule.keep_firing_for, "keep_firing_for")?),
                },
                _ => return Err(invalid(format!("{}: give one of record or alert", field("")))),
            };
            rules.push(Rule { kind, expr: rule.expr, labels: rule.labels.into_iter().collect() });
        }
        groups.push(Group { name: spec.name, file: shown.clone(), interval_ms, rules });
    }
    Ok(groups)
}

/// A Prometheus duration (`1h30m`, `5m`, `250ms`, `1d`) in milliseconds.
pub fn duration_ms(text: &str) -> Option<i64> {
    const UNITS: [(&str, i64); 7] = [
        ("ms", 1),
        ("s", 1_000),
        ("m", 60_000),
        ("h", 3_600_000),
        ("d", 86_400_000),
        ("w", 604_800_000),
        ("y", 31_536_000_000),
    ];
    let mut rest = text.trim();
    if rest.is_empty() {
        return None;
    }
    if rest == "0" {
        return Some(0);
    }
    let mut total: i64 = 0;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        if digits == 0 {
            return None;
        }
        let n: i64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        // `ms` before `m`: the longest unit that matches.
        let (unit, scale) = UNITS.iter().find(|(u, _)| rest.starts_with(u))?;
        rest = &rest[unit.len()..];
        total = total.checked_add(n.checked_mul(*scale)?)?;
    }
    Some(total)
}

/// An alert's change, aggregated by alert name and pool: the first of its alerts on the pool to
/// fire fires it; the last to resolve resolves it.
#[derive(Clone, Debug, PartialEq)]
pub struct Change {
    pub alert: String,
    /// The pool its labels name (`ebb_pool`, else `envoy_cluster_name`), if one of the replay's.
    pub pool: Option<String>,
    /// The rule file's name.
    pub file: String,
    pub firing: bool,
    /// The evaluation time (ms since the Unix epoch).
    pub at_ms: i64,
}

/// What one call of [`Evaluator::evaluate`] found.
#[derive(Default)]
pub struct Outcome {
    pub changes: Vec<Change>,
    /// Rules Prometheus could not evaluate (each said once), for the timeline.
    pub failures: Vec<String>,
}

/// The rule groups evaluated during a replay.
pub struct Evaluator {
    server: server::Server,
    groups: Vec<Group>,
    /// Per group: its next evaluation time.
    due_ms: Vec<i64>,
    pools: Vec<String>,
    /// Per series of the recorder: how many of its samples Prometheus has.
    written: Vec<usize>,
    /// Firing alerts per (alert, pool).
    firing: HashMap<(String, Option<String>), usize>,
    /// Rules (group, rule) whose failure was reported.
    failed: std::collections::HashSet<(usize, usize)>,
}

impl Evaluator {
    /// Starts Prometheus for `files`; the first evaluation of each group is one interval after
    /// `start_ms`. `pools` are the replay's pool names (to map alerts to pools).
    pub fn start(files: RuleFiles, pools: Vec<String>, start_ms: u64) -> Result<Evaluator, RulesError> {
        let server = server::Server::start()?;
        let start = i64::try_from(start_ms).unwrap_or(i64::MAX);
        let due_ms = files.groups.iter().map(|g| start.saturating_add(g.interval_ms)).collect();
        Ok(Evaluator {
            server,
            groups: files.groups,
            due_ms,
            pools,
            written: Vec::new(),
            firing: HashMap::new(),
            failed: Default::default(),
        })
    }

    /// Stops Prometheus and removes its data.
    pub fn stop(self) {
        self.server.stop();
    }

    /// Evaluates every group due by `now_ms` (in order of due time, then of the files), each at
    /// its own due time over the samples scraped up to it.
    pub fn evaluate(&mut self, now_ms: u64, series: &Recorder) -> Result<Outcome, RulesError> {
        if server::interrupted() {
            return Err(RulesError::Interrupted);
        }
        let now = i64::try_from(now_ms).unwrap_or(i64::MAX);
        let mut outcome = Outcome::default();
        loop {
            let next = (0..self.groups.len()).filter(|&g| self.due_ms[g] <= now).min_by_key(|&g| (self.due_ms[g], g));
            let Some(g) = next else { break };
            let at = self.due_ms[g];
            self.write_scraped(at, series)?;
            self.evaluate_group(g, at, &mut outcome)?;
            self.due_ms[g] = at.saturating_add(self.groups[g].interval_ms);
        }
        Ok(outcome)
    }

    /// Remote-writes every sample scraped up to `at` that Prometheus does not have yet.
    fn write_scraped(&mut self, at: i64, series: &Recorder) -> Result<(), RulesError> {
        let all = series.series();
        self.written.resize(all.len(), 0);
        let mut request = remote::WriteRequest::default();
        for (s, written) in all.iter().zip(self.written.iter_mut()) {
            let new = &s.samples[*written..];
            let n = new.iter().take_while(|(t, _)| *t <= at).count();
            if n == 0 {
                continue;
            }
            request.timeseries.push(remote::TimeSeries {
                labels: remote::labels(&s.labels),
                samples: new[..n].iter().map(|&(timestamp, value)| remote::Sample { value, timestamp }).collect(),
            });
            *written += n;
        }
        self.write(&request)
    }

    fn write(&mut self, request: &remote::WriteRequest) -> Result<(), RulesError> {
        if request.timeseries.is_empty() {
            return Ok(());
        }
        let body = remote::body(request).map_err(|e| RulesError::Io(format!("compressing a remote write: {e}")))?;
        self.server.write(&body)
    }

    fn evaluate_group(&mut self, g: usize, at: i64, outcome: &mut Outcome) -> Result<(), RulesError> {
        for r in 0..self.groups[g].rules.len() {
            let expr = self.groups[g].rules[r].expr.clone();
            let answer = self.server.query(&expr, at)?;
            let result = match vector(&answer) {
                Ok(result) => result,
                Err(why) => {
                    // As Prometheus does: the rule is skipped at this evaluation, its alerts unchanged.
                    if self.failed.insert((g, r)) {
                        let group = &self.groups[g];
                        outcome.failures.push(format!(
                            "rule {} of group {} ({}) not evaluated: {why}",
                            r + 1,
                            group.name,
                            group.file
                        ));
                    }
                    continue;
                }
            };
            let group = &mut self.groups[g];
            let rule = &mut group.rules[r];
            match &mut rule.kind {
                Kind::Record(name) => {
                    // Written at the evaluation time, so that later rules of the group see it.
                    let mut request = remote::WriteRequest::default();
                    for (mut labels, value) in result {
                        labels.retain(|(k, _)| k != "__name__");
                        override_labels(&mut labels, &rule.labels);
                        labels.push(("__name__".into(), name.clone()));
                        request.timeseries.push(remote::TimeSeries {
                            labels: remote::labels(&labels),
                            samples: vec![remote::Sample { value, timestamp: at }],
                        });
                    }
                    self.write(&request)?;
                }
                Kind::Alert { name, state } => {
                    let alerts: Vec<Labels> = result
                        .into_iter()
                        .map(|(mut labels, _)| {
                            labels.retain(|(k, _)| k != "__name__");
                            override_labels(&mut labels, &rule.labels);
                            override_labels(&mut labels, &[("alertname".into(), name.clone())]);
                            labels.sort();
                            labels
                        })
                        .collect();
                    let name = name.clone();
                    let file = group.file.clone();
                    let transitions = state.eval(at, &alerts);
                    // The ALERTS series Prometheus writes, so that rules may use them.
                    let mut request = remote::WriteRequest::default();
                    for (labels, s) in state.current() {
                        let mut labels = labels.clone();
                        labels.push(("__name__".into(), "ALERTS".into()));
                        let which = if s == State::Firing { "firing" } else { "pending" };
                        labels.push(("alertstate".into(), which.into()));
                        request.timeseries.push(remote::TimeSeries {
                            labels: remote::labels(&labels),
                            samples: vec![remote::Sample { value: 1.0, timestamp: at }],
                        });
                    }
                    for t in transitions {
                        let pool = pool_of(&t.labels, &self.pools);
                        let count = self.firing.entry((name.clone(), pool.clone())).or_insert(0);
                        let before = *count;
                        *count = if t.firing { count.saturating_add(1) } else { count.saturating_sub(1) };
                        if (before == 0) != (*count == 0) {
                            outcome.changes.push(Change {
                                alert: name.clone(),
                                pool,
                                file: file.clone(),
                                firing: t.firing,
                                at_ms: at,
                            });
                        }
                    }
                    self.write(&request)?;
                }
            }
        }
        Ok(())
    }
}

/// Sets `extra` in `labels`, replacing a label of the same name (rule labels win, as in Prometheus).
fn override_labels(labels: &mut Vec<(String, String)>, extra: &[(String, String)]) {
    for (k, v) in extra {
        labels.retain(|(name, _)| name != k);
        labels.push((k.clone(), v.clone()));
    }
}

/// The pool an alert is on: its `ebb_pool` label, else its `envoy_cluster_name`, when that names
/// one of the replay's pools.
pub fn pool_of(labels: &[(String, String)], pools: &[String]) -> Option<String> {
    ["ebb_pool", "envoy_cluster_name"]
        .iter()
        .find_map(|key| labels.iter().find(|(k, v)| k == key && pools.contains(v)).map(|(_, v)| v.clone()))
}

/// The instant vector of a query's JSON answer, or why there is none.
fn vector(answer: &serde_json::Value) -> Result<Vec<(Labels, f64)>, String> {
    if answer.get("status").and_then(|s| s.as_str()) != Some("success") {
        let kind = answer.get("errorType").and_then(|s| s.as_str()).unwrap_or("error");
        let error = answer.get("error").and_then(|s| s.as_str()).unwrap_or("no reason given");
        return Err(format!("{kind}: {error}"));
    }
    let data = answer.get("data").ok_or("no data")?;
    let kind = data.get("resultType").and_then(|s| s.as_str()).unwrap_or("");
    if kind != "vector" {
        return Err(format!("the expression gives a {kind}, not an instant vector"));
    }
    let mut out = Vec::new();
    for item in data.get("result").and_then(|r| r.as_array()).map(Vec::as_slice).unwrap_or_default() {
        let labels: Labels = item
            .get("metric")
            .and_then(|m| m.as_object())
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string())).collect())
            .unwrap_or_default();
        let value = item
            .get("value")
            .and_then(|v| v.get(1))
            .and_then(|v| v.as_str())
            .and_then(|v| match v {
                "NaN" => Some(f64::NAN),
                "+Inf" => Some(f64::INFINITY),
                "-Inf" => Some(f64::NEG_INFINITY),
                v => v.parse().ok(),
            })
            .ok_or("a sample without a value")?;
        out.push((labels, value));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_durations() {
        assert_eq!(duration_ms("5m"), Some(300_000));
        assert_eq!(duration_ms("1h30m"), Some(5_400_000));
        assert_eq!(duration_ms("250ms"), Some(250));
        assert_eq!(duration_ms("0"), Some(0));
        assert_eq!(duration_ms("5"), None);
        assert_eq!(duration_ms("m"), None);
    }

    #[test]
    fn alerts_map_to_pools_by_ebb_pool_then_cluster() {
        let pools = vec!["web".to_string(), "api".to_string()];
        let l = |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<Labels>();
        assert_eq!(pool_of(&l(&[("ebb_pool", "web")]), &pools), Some("web".into()));
        assert_eq!(pool_of(&l(&[("envoy_cluster_name", "api")]), &pools), Some("api".into()));
        assert_eq!(pool_of(&l(&[("ebb_pool", "ssh"), ("envoy_cluster_name", "api")]), &pools), Some("api".into()));
        assert_eq!(pool_of(&l(&[("envoy_http_conn_manager_prefix", "ingress_http")]), &pools), None);
    }
}
