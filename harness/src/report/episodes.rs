// Capacity-loss episodes of a pool: every loss is judged, not only the first, each with when it
// began (for hosts an aborted deploy left drained, when they were drained), its detection and restore.

use ebb_engine::fault::OnAbort;
use serde::{Deserialize, Serialize};

use super::human;
use crate::scenario::Scenario;
use crate::sim::stats::Sample;

/// One loss of capacity, from its beginning to the scrape that shows the pool whole again.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Episode {
    /// When the loss began: the first scrape below expected hosts with no deployment in progress,
    /// or, for hosts an aborted deploy left drained, the moment that deploy drained them.
    pub lost_s: f64,
    /// The first scrape below expected hosts with no deployment in progress.
    pub unplanned_s: f64,
    /// The aborted deploy that left the hosts drained (`deploy 1`, `timeline[2]`), if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub left_by: Option<String>,
    /// The first alert on the pool to fire since the drop began (before `lost_s` when it paged
    /// during the deploy), and no later than the restore.
    pub detected_s: Option<f64>,
    /// The first scrape back at the expected hosts.
    pub restored_s: Option<f64>,
}

impl Episode {
    /// Seconds from the loss to its detection (0 when the page came first); None: never.
    pub fn time_to_detect(&self) -> Option<f64> {
        self.detected_s.map(|d| (d - self.lost_s).max(0.0))
    }

    /// Seconds from the loss to the restore; None: never.
    pub fn time_to_restore(&self) -> Option<f64> {
        self.restored_s.map(|r| (r - self.lost_s).max(0.0))
    }

    /// The page came before the loss began: during the deploy that left the hosts drained.
    pub fn paged_early(&self) -> bool {
        self.detected_s.is_some_and(|d| d < self.lost_s)
    }

    /// Time to detect in words: `5m15s`, `never`, or `paged before the deploy ended` (never a
    /// `0s` that reads as a bug).
    pub fn detect_words(&self) -> String {
        match self.time_to_detect() {
            None => "never".into(),
            Some(_) if self.paged_early() => match &self.left_by {
                Some(_) => "paged before the deploy ended".into(),
                None => "paged before the loss began".into(),
            },
            Some(t) => human(t),
        }
    }

    /// Time to restore in words: `11m`, `never`.
    pub fn restore_words(&self) -> String {
        self.time_to_restore().map_or_else(|| "never".into(), human)
    }
}

/// Hosts of `pool` an aborted deploy leaves drained: drained at `drained_s`, the deploy over at
/// `ended_s` (seconds from the start).
struct LeftDrained {
    drained_s: f64,
    ended_s: f64,
    label: String,
}

/// Every rollout of the scenario that aborts and leaves its failed batch of `pool` drained: the
/// tooling's (`deploys`) and those sent as commands (`timeline`).
fn left_drained(scenario: &Scenario, pool: &str) -> Vec<LeftDrained> {
    let mut out = Vec::new();
    // Batch j (1-based) drains (j-1) intervals into the rollout; the abort comes j intervals in.
    let mut add = |start_ms: u64, batch: u32, interval_ms: u64, label: String| {
        let drained = start_ms.saturating_add(u64::from(batch.saturating_sub(1)).saturating_mul(interval_ms));
        let ended = start_ms.saturating_add(u64::from(batch).saturating_mul(interval_ms));
        out.push(LeftDrained { drained_s: drained as f64 / 1000.0, ended_s: ended as f64 / 1000.0, label });
    };
    for (i, run) in scenario.deploys.iter().enumerate() {
        if let (Some(j), OnAbort::LeaveDrained) = (run.fail_at_batch, run.on_abort) {
            if run.pools.iter().any(|p| p == pool) {
                let j = j.min(run.batches);
                add(scenario.offset_ms(run.at), j, run.batch_interval.as_millis(), format!("deploy {}", i + 1));
            }
        }
    }
    for (i, action) in scenario.timeline.iter().enumerate() {
        let Some(command) = &action.command else { continue };
        let Some(deploy) = &command.deploy else { continue };
        if let (Some(j), OnAbort::LeaveDrained, true) = (deploy.abort_at_batch, deploy.on_abort, deploy.pool == pool) {
            let start = scenario.offset_ms(action.at).saturating_add(command.start_in.map_or(0, |d| d.as_millis()));
            add(start, j.min(deploy.batches), deploy.batch_interval.as_millis(), format!("timeline[{i}]"));
        }
    }
    out
}

/// The capacity-loss episodes of pool `pool` from its scrapes `s`; `fired` are the firings of
/// the alerts on the pool (any order).
pub fn episodes(scenario: &Scenario, pool: &str, s: &[Sample], fired: &[f64]) -> Vec<Episode> {
    let scrape_s = scenario.scrape_interval.as_millis() as f64 / 1000.0;
    let leftovers = left_drained(scenario, pool);
    let below = |x: &Sample| x.available < x.expected;
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(l) = (from..s.len()).find(|&i| below(&s[i]) && !s[i].deploying) {
        // The drop that ended in the loss began at the first scrape of its unbroken run below
        // expected (often while the deploy still ran, and error alerts page then).
        let mut d = l;
        while d > from && below(&s[d - 1]) {
            d -= 1;
        }
        let (drop_s, unplanned_s) = (s[d].t_s, s[l].t_s);
        let restored = (l..s.len()).find(|&i| !below(&s[i]));
        let restored_s = restored.map(|i| s[i].t_s);
        // Hosts an aborted deploy left drained are lost from when it drained them, if that
        // deploy ended within this drop (the scrape that shows the drain comes up to one
        // interval after it).
        let left = leftovers
            .iter()
            .filter(|x| x.ended_s >= drop_s - scrape_s && x.ended_s <= unplanned_s)
            .max_by(|a, b| a.ended_s.total_cmp(&b.ended_s));
        let lost_s = left.map_or(unplanned_s, |x| x.drained_s.min(unplanned_s));
        let until = restored_s.unwrap_or(f64::INFINITY);
        let detected_s = fired
            .iter()
            .copied()
            .filter(|&f| f >= drop_s.min(lost_s) && f <= until)
            .fold(None, |m: Option<f64>, f| Some(m.map_or(f, |m| m.min(f))));
        out.push(Episode { lost_s, unplanned_s, left_by: left.map(|x| x.label.clone()), detected_s, restored_s });
        match restored {
            Some(r) => from = r + 1,
            None => break,
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scrapes(available: &[(u64, bool)]) -> Vec<Sample> {
        available
            .iter()
            .enumerate()
            .map(|(i, &(a, deploying))| Sample {
                t_s: 60.0 * (i + 1) as f64,
                available: a,
                expected: 10,
                deploying,
                ..Sample::default()
            })
            .collect()
    }

    fn scenario(extra: &str) -> Scenario {
        let text = format!(
            r#"{{"version": 1, "name": "t", "duration": "1h", "scrape_interval": "1m",
                "pools": [{{"name": "web", "hosts": 10, "capacity_per_host": 1, "service_time": "1s"}}],
                "traffic": [{{"pool": "web", "points": [["+0s", 1]]}}],
                "slos": [{{"time_to_detect": {{"pool": "web", "max": "5m"}}}}] {extra}}}"#
        );
        Scenario::parse(std::path::Path::new("t.json"), text.as_bytes()).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn a_second_loss_in_the_same_pool_is_an_episode_of_its_own() {
        let s = scrapes(&[(10, false), (7, false), (7, false), (10, false), (10, false), (8, false), (8, false)]);
        let e = episodes(&scenario(""), "web", &s, &[180.0]);
        assert_eq!(e.len(), 2, "{e:?}");
        assert_eq!((e[0].lost_s, e[0].detected_s, e[0].restored_s), (120.0, Some(180.0), Some(240.0)));
        assert_eq!((e[1].lost_s, e[1].detected_s, e[1].restored_s), (360.0, None, None));
        assert_eq!(e[1].detect_words(), "never");
    }

    #[test]
    fn hosts_an_aborted_deploy_left_drained_are_lost_from_when_it_drained_them() {
        let deploy = r#", "deploys": [{"at": "+1m", "pools": ["web"], "batches": 3, "batch_interval": "2m", "fail_at_batch": 2}]"#;
        // Batch 1 out from 1m, batch 2 from 3m, the deploy over at 5m.
        let s = scrapes(&[(6, true), (6, true), (6, true), (6, true), (7, false), (7, false), (10, false)]);
        let e = episodes(&scenario(deploy), "web", &s, &[210.0]);
        assert_eq!(e.len(), 1);
        assert_eq!((e[0].lost_s, e[0].unplanned_s), (180.0, 300.0));
        assert_eq!(e[0].left_by.as_deref(), Some("deploy 1"));
        assert_eq!(e[0].detect_words(), "30s");
        // Paged while batch 1 was out: before the loss began, and said so.
        let e = episodes(&scenario(deploy), "web", &s, &[120.0]);
        assert!(e[0].paged_early());
        assert_eq!(e[0].detect_words(), "paged before the deploy ended");
        assert_eq!(e[0].time_to_detect(), Some(0.0));
    }
}
