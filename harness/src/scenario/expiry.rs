// Faults that end by their TTL before the scenario expects them to matter: `ebb check` warns about
// them (a warning fails it only with --deny-warnings), so no fault quietly vanishes at 10 minutes.

use std::path::Path;

use ebb_engine::fault::{FaultKind, OnAbort};
use ebb_engine::{Duration, FaultRequest};

use super::error::{Problem, ScenarioError};
use super::{position, source, Scenario};

/// One fault the scenario starts, and when its TTL ends it.
struct Started<'s> {
    /// Where it is written, for the warning: its `ttl` when given.
    path: String,
    /// `timeline[3]`, `deploys[0]`.
    origin: String,
    id: Option<&'s str>,
    pool: Option<&'s str>,
    /// Milliseconds from the start: when it was sent, and when its TTL ends it.
    sent_ms: u64,
    expires_ms: u64,
    ttl: Duration,
    /// The TTL was not written: `limits.default_ttl` (a command) or `limits.max_ttl` (a deploy).
    defaulted: Option<&'static str>,
}

impl Scenario {
    /// Reads and checks a scenario file as [`Scenario::load`] does, and also returns its warnings,
    /// each with the line and column of the value it is about.
    pub fn load_with_warnings(path: &Path) -> Result<(Scenario, Vec<Problem>), ScenarioError> {
        let bytes = source::read(path).map_err(|message| ScenarioError::file(path.to_path_buf(), message))?;
        let scenario = Scenario::parse(path, &bytes)?;
        let text = source::strip_bom(&bytes);
        let warnings = scenario
            .expiry_warnings()
            .into_iter()
            .map(|(path, message)| {
                let (line, column) = position::locate(text, &path);
                Problem { line: Some(line), column: Some(column), path, message }
            })
            .collect();
        Ok((scenario, warnings))
    }

    /// Faults whose TTL ends them before a later action of the timeline clears or restores them,
    /// or, when their TTL was left to its default, before the end of the replay with nothing
    /// planned to end them: (JSON path, message). A TTL written out is the scenario saying when
    /// the fault ends, so only the first case is a warning for it.
    pub fn expiry_warnings(&self) -> Vec<(String, String)> {
        let end_ms = self.duration.as_millis();
        let mut warnings = Vec::new();
        for fault in self.started() {
            if fault.expires_ms >= end_ms {
                continue;
            }
            let clock = |ms: u64| self.clock_label(ms as f64 / 1000.0);
            let ttl = match fault.defaulted {
                Some(limit) => format!("its ttl is {limit}, {}: none is given", fault.ttl),
                None => format!("ttl {}", fault.ttl),
            };
            let what = match fault.id {
                Some(id) => format!("fault {id:?} of {}", fault.origin),
                None => format!("the fault of {}", fault.origin),
            };
            match self.ended_by(&fault) {
                Some((ending_ms, _)) if ending_ms <= fault.expires_ms => {}
                Some((ending_ms, action)) => warnings.push((
                    fault.path.clone(),
                    format!(
                        "warning: {what} expires at {} ({ttl}), before {action} at {}; give it a ttl that lasts until then",
                        clock(fault.expires_ms),
                        clock(ending_ms)
                    ),
                )),
                None if fault.defaulted.is_some() && !self.restore_planned(fault.pool) => warnings.push((
                    fault.path.clone(),
                    format!(
                        "warning: {what} expires at {} ({ttl}), before the replay ends at {}, and nothing \
                         restores it; give it a ttl (the replay shows it as `expired`)",
                        clock(fault.expires_ms),
                        clock(end_ms)
                    ),
                )),
                None => {}
            }
        }
        warnings
    }

    /// The faults the timeline's commands and the deploys that leave a batch drained start.
    fn started(&self) -> Vec<Started<'_>> {
        let limits = &self.filter.limits;
        let mut started = Vec::new();
        for (i, action) in self.timeline.iter().enumerate() {
            let Some(command) = &action.command else { continue };
            if command.spec().is_err() {
                continue;
            }
            let sent_ms = self.offset_ms(action.at);
            let ttl = command.ttl.unwrap_or(limits.default_ttl);
            let begins = sent_ms.saturating_add(command.start_in.unwrap_or(Duration::ZERO).as_millis());
            started.push(Started {
                path: format!("timeline[{i}].command{}", if command.ttl.is_some() { ".ttl" } else { "" }),
                origin: format!("timeline[{i}]"),
                id: command.id.as_deref(),
                pool: pool_of(command),
                sent_ms,
                expires_ms: begins.saturating_add(ttl.as_millis()),
                ttl,
                defaulted: command.ttl.is_none().then_some("limits.default_ttl"),
            });
        }
        for (i, run) in self.deploys.iter().enumerate() {
            // A rollout that completes (or gives its batch back) leaves nothing for the TTL to end.
            if run.fail_at_batch.is_none() || run.on_abort == OnAbort::Restore {
                continue;
            }
            let ttl = run.ttl.unwrap_or(limits.max_ttl);
            let sent_ms = self.offset_ms(run.at);
            for pool in &run.pools {
                started.push(Started {
                    path: format!("deploys[{i}]{}", if run.ttl.is_some() { ".ttl" } else { "" }),
                    origin: format!("deploys[{i}] (the batch it leaves drained in {pool})"),
                    id: None,
                    pool: Some(pool),
                    sent_ms,
                    expires_ms: sent_ms.saturating_add(ttl.as_millis()),
                    ttl,
                    defaulted: run.ttl.is_none().then_some("limits.max_ttl"),
                });
            }
        }
        started
    }

    /// The first later timeline action that ends `fault` (clears its id, restores its pool, or
    /// uses the kill switch): when, and in words.
    fn ended_by(&self, fault: &Started<'_>) -> Option<(u64, String)> {
        self.timeline
            .iter()
            .enumerate()
            .filter_map(|(j, a)| {
                let at = self.offset_ms(a.at);
                if at < fault.sent_ms {
                    return None;
                }
                let words = if a.clear.is_some() && a.clear.as_deref() == fault.id {
                    format!("timeline[{j}] clears it")
                } else if a.restore.is_some() && a.restore.as_deref() == fault.pool {
                    format!("timeline[{j}] restores pool {}", a.restore.as_deref().unwrap_or_default())
                } else if a.clear_all {
                    format!("timeline[{j}] uses the kill switch")
                } else {
                    return None;
                };
                Some((at, words))
            })
            .min_by_key(|(at, _)| *at)
    }

    /// Whether a runbook may end faults of `pool`: one restores it, uses the kill switch or runs
    /// a program (which can do anything).
    fn restore_planned(&self, pool: Option<&str>) -> bool {
        self.recovery
            .iter()
            .any(|r| r.clear_all || r.run.is_some() || (r.restore.is_some() && r.restore.as_deref() == pool))
    }
}

/// The pool a command's fault is on, if it has one (read from the request, which the scenario
/// holds, rather than from a spec built from it).
fn pool_of(command: &FaultRequest) -> Option<&str> {
    let kinds: [Option<&dyn FaultKind>; 5] = [
        command.drain.as_ref().map(|f| f as &dyn FaultKind),
        command.deploy.as_ref().map(|f| f as &dyn FaultKind),
        command.abort.as_ref().map(|f| f as &dyn FaultKind),
        command.delay.as_ref().map(|f| f as &dyn FaultKind),
        command.reset.as_ref().map(|f| f as &dyn FaultKind),
    ];
    kinds.into_iter().flatten().find_map(FaultKind::pool)
}
