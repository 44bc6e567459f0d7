// The test-only stand-in for `ebb gameday`: a scripted Bitbucket-shaped game day (a deploy that
// aborts and leaves pool web drained, the capacity alert, the recovery restoring it) as live events.

use ebb_harness::console::live::{AlertPhase, AlertState, LiveEvent, PoolSample, SloClock, SloPhase, Verdict};

pub const SCENARIO: &str = "bitbucket-2021-02-05 (game day)";

pub fn start() -> LiveEvent {
    LiveEvent::Start {
        scenario: SCENARIO.into(),
        duration_s: 1800.0,
        time_scale: 30.0,
        pools: vec!["web".into(), "ssh".into()],
        targets: vec!["edge-a".into(), "edge-b".into()],
        slos: vec![
            SloClock { name: "detect within 10m".into(), state: SloPhase::Waiting, deadline_s: None },
            SloClock { name: "restore within 30m".into(), state: SloPhase::Waiting, deadline_s: None },
        ],
    }
}

fn sample(t_s: f64, phase: &str, web: u64, alert: AlertPhase, detect: SloPhase, restore: SloPhase) -> LiveEvent {
    LiveEvent::Sample {
        t_s,
        phase: phase.into(),
        pools: vec![
            PoolSample { pool: "web".into(), expected: 10, available: web },
            PoolSample { pool: "ssh".into(), expected: 4, available: 4 },
        ],
        alerts: vec![AlertState {
            name: "EbbPoolBelowExpectedCapacity web".into(),
            state: alert,
            since_s: (alert != AlertPhase::Inactive).then_some(330.0),
        }],
        slos: vec![
            SloClock {
                name: "detect within 10m".into(),
                state: detect,
                deadline_s: (detect != SloPhase::Waiting).then_some(900.0),
            },
            SloClock {
                name: "restore within 30m".into(),
                state: restore,
                deadline_s: (restore != SloPhase::Waiting).then_some(2100.0),
            },
        ],
    }
}

fn command(t_s: f64, target: &str, command: &str) -> LiveEvent {
    LiveEvent::Command {
        t_s,
        target: target.into(),
        command: command.into(),
        outcome: "applied, confirmed by /state".into(),
        ok: true,
    }
}

/// Up to the drain: the deploy drains web and aborts, leaving 5 of 10 hosts; the alert fires.
pub fn drain() -> Vec<LiveEvent> {
    use AlertPhase::*;
    use SloPhase::*;
    vec![
        start(),
        sample(0.0, "steady", 10, Inactive, Waiting, Waiting),
        command(120.0, "edge-a", "add drain web 50% ttl 31m"),
        command(120.0, "edge-b", "add drain web 50% ttl 31m"),
        sample(150.0, "deploy web", 5, Inactive, Running, Running),
        LiveEvent::Note { t_s: 300.0, text: "deploy aborted: pool web left drained".into() },
        sample(330.0, "deploy aborted", 5, Pending, Running, Running),
        sample(390.0, "deploy aborted", 5, Firing, Met, Running),
    ]
}

/// The rest: the recovery restores web and the game day passes.
pub fn restore() -> Vec<LiveEvent> {
    use AlertPhase::*;
    use SloPhase::*;
    vec![
        command(600.0, "edge-a", "remove drain web"),
        command(600.0, "edge-b", "remove drain web"),
        sample(630.0, "recovery", 10, Inactive, Met, Met),
        LiveEvent::End {
            t_s: 660.0,
            verdict: Verdict::Pass,
            summary: "2 of 2 SLOs met; no fault left on any target".into(),
        },
    ]
}
