// What a game day will send, and when: the scenario's deploy tooling and timeline as control
// calls at scenario times, their durations compressed by the time scale, and every fault's TTL
// capped to the game day's remaining time plus a margin, so that a runner killed outright leaves
// nothing behind for long.

use ebb_engine::{Duration, FaultRequest};

use super::run_id::{RunId, MAX_FAULT_ID};
use crate::scenario::Scenario;

/// Real time a fault may outlive the game day's end (its remaining time is the rest of the cap).
pub const TTL_MARGIN: Duration = Duration::from_secs(15);

/// One control call of the plan.
#[derive(Clone, Debug, PartialEq)]
pub enum Act {
    /// Boxed: a fault request is far larger than the other calls.
    Add(Box<FaultRequest>),
    Restore(String),
    Clear(String),
    ClearAll,
}

impl Act {
    /// Method and route after the control prefix.
    pub fn call(&self) -> (&'static str, String) {
        match self {
            Act::Add(_) => ("POST", "faults".into()),
            Act::Restore(pool) => ("POST", format!("pools/{pool}/restore")),
            Act::Clear(id) => ("DELETE", format!("faults/{id}")),
            Act::ClearAll => ("DELETE", "faults".into()),
        }
    }
}

/// A call at a scenario time.
#[derive(Clone, Debug, PartialEq)]
pub struct Step {
    /// Scenario milliseconds from the start.
    pub at_ms: u64,
    pub act: Act,
    /// In words, for progress lines and the report.
    pub text: String,
    /// Where it comes from in the scenario (`deploys[0]`, `timeline[2]`).
    pub origin: String,
}

/// The scenario's calls in time order: deploy runs (and their retries) and timeline entries.
pub fn plan(scenario: &Scenario) -> Vec<Step> {
    let mut steps = Vec::new();
    for (i, run) in scenario.deploys.iter().enumerate() {
        let at_ms = scenario.offset_ms(run.at);
        let outcome = match run.fail_at_batch {
            Some(j) => format!("fails at batch {j}, {}", serde_plain(&run.on_abort)),
            None => "completes".into(),
        };
        for pool in &run.pools {
            steps.push(Step {
                at_ms,
                act: Act::Add(Box::new(scenario.deploy_fault(i, run, pool, false))),
                text: format!(
                    "deploy {} of {pool}: {} batches every {}, {outcome}",
                    i + 1,
                    run.batches,
                    run.batch_interval
                ),
                origin: format!("deploys[{i}]"),
            });
        }
        if let (Some(j), Some(wait)) = (run.fail_at_batch, run.retry_after) {
            let abort = u64::from(j).saturating_mul(run.batch_interval.as_millis()).saturating_add(wait.as_millis());
            let retry_ms = at_ms.saturating_add(abort);
            if retry_ms <= scenario.duration.as_millis() {
                for pool in &run.pools {
                    steps.push(Step {
                        at_ms: retry_ms,
                        act: Act::Add(Box::new(scenario.deploy_fault(i, run, pool, true))),
                        text: format!("deploy {} of {pool} (retry): completes", i + 1),
                        origin: format!("deploys[{i}].retry_after"),
                    });
                }
            }
        }
    }
    for (i, action) in scenario.timeline.iter().enumerate() {
        let note = if action.note.is_empty() { String::new() } else { format!(" ({})", action.note) };
        let (act, text) = if let Some(fault) = &action.command {
            let kind = fault.spec().map(|s| s.name()).unwrap_or("fault");
            (Act::Add(Box::new(fault.clone())), format!("add {kind} {}{note}", fault.id.clone().unwrap_or_default()))
        } else if let Some(pool) = &action.restore {
            (Act::Restore(pool.clone()), format!("restore pool {pool}{note}"))
        } else if let Some(id) = &action.clear {
            (Act::Clear(id.clone()), format!("clear fault {id}{note}"))
        } else {
            (Act::ClearAll, format!("kill switch{note}"))
        };
        steps.push(Step { at_ms: scenario.offset_ms(action.at), act, text, origin: format!("timeline[{i}]") });
    }
    steps.sort_by_key(|s| s.at_ms);
    steps
}

/// The plan as run `run` sends it: every fault id it adds or clears by name behind the run id
/// (`gd1a2b3c-deploy1-web`), a fault the scenario leaves unnamed named `t1`, `t2`… first, so
/// that the cleanup can name it and leave another game day's faults alone.
pub fn for_run(mut steps: Vec<Step>, run: &RunId) -> Vec<Step> {
    let mut unnamed = 0u32;
    for step in &mut steps {
        match &mut step.act {
            Act::Add(fault) => {
                let id = fault.id.clone().unwrap_or_else(|| {
                    unnamed = unnamed.saturating_add(1);
                    format!("t{unnamed}")
                });
                fault.id = Some(run.fault_id(&id));
            }
            Act::Clear(id) => *id = run.fault_id(id),
            Act::Restore(_) | Act::ClearAll => {}
        }
    }
    steps
}

/// The first fault id of the scenario too long to carry a run id (`origin`, id, longest allowed).
pub fn id_too_long(steps: &[Step]) -> Option<(String, String, usize)> {
    // `gd1a2b3c-`: what a run id adds.
    let room = MAX_FAULT_ID - 9;
    steps.iter().find_map(|s| {
        let id = match &s.act {
            Act::Add(fault) => fault.id.as_deref()?,
            Act::Clear(id) => id.as_str(),
            _ => return None,
        };
        (id.len() > room).then(|| (s.origin.clone(), id.to_string(), room))
    })
}

/// `leave_drained`, as the scenario spells it.
fn serde_plain<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_value(value).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
}

/// Scenario time `d` in real time at `scale` scenario seconds per real second: at least 1ms
/// when `d` is not zero, so that nothing scaled becomes "no time".
pub fn scaled(d: Duration, scale: f64) -> Duration {
    if d.as_millis() == 0 {
        return d;
    }
    // The float-to-integer cast saturates; scale is checked finite and positive by the caller.
    Duration::from_millis(((d.as_millis() as f64 / scale).round() as u64).max(1))
}

/// `fault` as sent at real time with `remaining` real time left in the game day: its schedule
/// (TTL, start, batch interval) compressed by `scale`, and a TTL of at most what is left of the
/// game day after it starts, plus [`TTL_MARGIN`]. A fault without a TTL gets that cap.
pub fn for_sending(fault: &FaultRequest, scale: f64, remaining: Duration) -> FaultRequest {
    let mut sent = fault.clone();
    sent.start_in = fault.start_in.map(|d| scaled(d, scale));
    if let Some(deploy) = sent.deploy.as_mut() {
        deploy.batch_interval = scaled(deploy.batch_interval, scale);
    }
    let start = sent.start_in.map_or(0, Duration::as_millis);
    // Whole seconds, rounded up: a TTL reads `34s`, not `33s999ms`.
    let cap_ms = remaining.as_millis().saturating_sub(start).saturating_add(TTL_MARGIN.as_millis());
    let cap = Duration::from_millis(cap_ms.div_ceil(1000).saturating_mul(1000));
    sent.ttl = Some(match fault.ttl.map(|d| scaled(d, scale)) {
        Some(ttl) if ttl < cap => ttl,
        _ => cap,
    });
    sent
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scenario() -> Scenario {
        let text = r#"{"version":1,"name":"g","duration":"20m","scrape_interval":"15s",
          "pools":[{"name":"web","hosts":10,"capacity_per_host":4,"service_time":"1s"}],
          "traffic":[{"pool":"web","points":[["+0s",1]]}],
          "deploys":[{"at":"+1m","pools":["web"],"batches":3,"batch_interval":"2m","fail_at_batch":2,"retry_after":"4m"}],
          "timeline":[{"at":"+30s","command":{"id":"d","ttl":"1h","drain":{"pool":"web","hosts":2}}},{"at":"+15m","restore":"web"}],
          "slos":[{"time_to_restore":{"pool":"web","max":"10m"}}]}"#;
        Scenario::parse(std::path::Path::new("g.json"), text.as_bytes()).expect("scenario")
    }

    #[test]
    fn the_plan_is_in_time_order_with_deploy_retries() {
        // The retry: 1m + 2 batches of 2m + retry_after 4m = 9m.
        let steps = plan(&scenario());
        let got: Vec<(u64, &str)> = steps.iter().map(|s| (s.at_ms, s.origin.as_str())).collect();
        assert_eq!(
            got,
            vec![
                (30_000, "timeline[0]"),
                (60_000, "deploys[0]"),
                (540_000, "deploys[0].retry_after"),
                (900_000, "timeline[1]")
            ]
        );
        assert_eq!(steps[3].act.call(), ("POST", "pools/web/restore".to_string()));
    }

    #[test]
    fn a_run_names_every_fault_it_adds_or_clears_behind_its_run_id() {
        let mut s = scenario();
        s.timeline.push(crate::scenario::Action { restore: None, clear: Some("d".into()), ..s.timeline[1].clone() });
        let mut unnamed = s.timeline[0].clone();
        unnamed.command.as_mut().expect("a command").id = None;
        s.timeline.push(unnamed);
        let run = RunId::new().expect("run id");
        let steps = for_run(plan(&s), &run);
        let ids: Vec<String> = steps
            .iter()
            .filter_map(|st| match &st.act {
                Act::Add(f) => f.id.clone(),
                Act::Clear(id) => Some(id.clone()),
                _ => None,
            })
            .collect();
        let want: Vec<String> =
            ["d", "t1", "deploy1-web", "deploy1-web-retry", "d"].iter().map(|id| run.fault_id(id)).collect();
        assert_eq!(ids, want);
        assert_eq!(id_too_long(&steps), None);
        let mut long = scenario();
        long.timeline[0].command.as_mut().expect("a command").id = Some("x".repeat(55));
        assert_eq!(id_too_long(&plan(&long)), Some(("timeline[0]".into(), "x".repeat(55), 54)));
    }

    #[test]
    fn durations_shrink_with_the_scale_and_ttls_never_outlast_the_game_day_by_more_than_the_margin() {
        let steps = plan(&scenario());
        let Act::Add(deploy) = &steps[1].act else { panic!("a deploy") };
        // 60x: a 2m batch interval is 2s; the deploy's 24h TTL is cut to the 19m (19s real) left + 15s.
        let sent = for_sending(deploy, 60.0, Duration::from_secs(19));
        assert_eq!(sent.deploy.as_ref().map(|d| d.batch_interval), Some(Duration::from_secs(2)));
        assert_eq!(sent.ttl, Some(Duration::from_secs(34)));
        let Act::Add(drain) = &steps[0].act else { panic!("a drain") };
        // A 1h TTL at 600x is 6s: shorter than the cap, kept.
        assert_eq!(for_sending(drain, 600.0, Duration::from_secs(100)).ttl, Some(Duration::from_secs(6)));
        // A fault with no TTL gets the cap; one that starts later has that much less.
        let mut late = drain.clone();
        late.ttl = None;
        late.start_in = Some(Duration::from_secs(60));
        let sent = for_sending(&late, 60.0, Duration::from_secs(10));
        assert_eq!((sent.start_in, sent.ttl), (Some(Duration::from_secs(1)), Some(Duration::from_secs(24))));
        assert_eq!(scaled(Duration::from_millis(10), 1000.0), Duration::from_millis(1));
        assert_eq!(scaled(Duration::ZERO, 1000.0), Duration::ZERO);
    }
}
