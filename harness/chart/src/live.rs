// What `ebb gameday` tells its live console while it runs: one JSON object per server-sent event.
// Times are scenario seconds since the start (not wall time), so a time-scaled game day reads like the scenario.

use serde::{Deserialize, Serialize};

/// One server-sent event of the live console (`data:` is this, as JSON, tagged by `type`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum LiveEvent {
    /// Sent first (and again to every console that connects later).
    Start {
        scenario: String,
        /// Scenario length in scenario seconds.
        duration_s: f64,
        /// Scenario seconds per wall second (1 = real time).
        time_scale: f64,
        pools: Vec<String>,
        targets: Vec<String>,
        slos: Vec<SloClock>,
    },
    /// What was observed at one scrape.
    Sample {
        t_s: f64,
        /// The timeline phase in force (the latest timeline entry's name or kind).
        phase: String,
        pools: Vec<PoolSample>,
        alerts: Vec<AlertState>,
        slos: Vec<SloClock>,
    },
    /// A signed command sent to one target, and what came of it.
    Command { t_s: f64, target: String, command: String, outcome: String, ok: bool },
    /// Anything else the team should see (a stop condition met, a target unreachable, the kill switch sent).
    Note { t_s: f64, text: String },
    /// The verdict; no event follows.
    End { t_s: f64, verdict: Verdict, summary: String },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PoolSample {
    pub pool: String,
    pub expected: u64,
    pub available: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertPhase {
    Inactive,
    Pending,
    Firing,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AlertState {
    pub name: String,
    pub state: AlertPhase,
    /// Scenario second the alert entered its state, when known.
    pub since_s: Option<f64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SloPhase {
    /// The clock has not started (nothing to detect or restore yet).
    Waiting,
    /// Counting down to `deadline_s`.
    Running,
    Met,
    Missed,
}

/// An SLO's clock, for the countdown on the console.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SloClock {
    pub name: String,
    pub state: SloPhase,
    /// Scenario second by which the SLO must be met, once its clock runs.
    pub deadline_s: Option<f64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Pass,
    Fail,
    /// Ended by Ctrl-C, SIGTERM, Halt or a stop condition before the scenario's end.
    Halted,
    /// ebb gameday's own error (a target unreachable, a refused command).
    Error,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The browser parses exactly what the server writes: the tag and field names are the wire format.
    #[test]
    fn events_are_tagged_json() {
        let e = LiveEvent::Command {
            t_s: 12.5,
            target: "edge".into(),
            command: "drain web 50%".into(),
            outcome: "applied".into(),
            ok: true,
        };
        let text = serde_json::to_string(&e).expect("serialises");
        assert!(text.starts_with(r#"{"type":"command","t_s":12.5"#), "{text}");
        let back: LiveEvent = serde_json::from_str(&text).expect("parses");
        assert_eq!(back, e);
        let a = serde_json::to_string(&AlertPhase::Firing).expect("serialises");
        assert_eq!(a, r#""firing""#);
    }
}
