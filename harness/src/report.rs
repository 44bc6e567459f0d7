// The replay's result (contract 4: versioned JSON for users' CI) and its terminal rendering:
// a compact timeline and one verdict row per SLO. JUnit XML and the HTML page live in `report/`.

mod build;
mod chart;
pub mod episodes;
mod html;
pub mod impact;
mod junit;
pub mod local;

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

pub use build::{build, Observed};
pub use episodes::Episode;
pub use html::html;
pub use junit::junit;
pub use local::{TimeZone, ZoneOffset};

/// The report format version.
pub const VERSION: u32 = 1;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub version: u32,
    pub scenario: String,
    pub description: String,
    /// UTC clock time of t = 0.
    pub start: String,
    /// The scenario's time zone (with `timezone` or `date`): local times of every `*_s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<TimeZone>,
    pub seed: u64,
    pub duration_s: f64,
    /// `pass` when every SLO was met.
    pub verdict: String,
    /// The verdict the scenario says it should have, if it says.
    pub expected: Option<String>,
    pub requests: Requests,
    pub slos: Vec<SloResult>,
    pub alerts: Vec<AlertResult>,
    pub pools: Vec<PoolResult>,
    /// What happened, in order.
    pub events: Vec<Event>,
    /// Per-minute series for charts.
    pub series: Vec<PoolSeries>,
    /// Set by `ebb gameday`: the run was live, against real proxies (absent from replays).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub live: Option<Live>,
}

/// How a live game day ran: its times are observed, on the scenario's clock.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Live {
    /// `NAME=CONTROL_URL` of each target.
    pub targets: Vec<String>,
    /// Scenario seconds per real second.
    pub time_scale: f64,
    /// `the scenario's rules` or `Alertmanager URL`.
    pub alerts_from: String,
    /// `completed`, `halted: …` or `error: …`.
    pub ended: String,
    /// Every target confirmed through its state that no fault of the game day was left.
    pub clean: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Requests {
    /// Requests and connections that went through the .wasm.
    pub simulated: u64,
    /// Real requests each simulated one stands for.
    pub sample: u32,
    /// simulated x sample.
    pub represented: u64,
    /// Calls of the filter that failed (traps, deadlines), if any.
    pub filter_failures: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SloResult {
    pub name: String,
    pub pass: bool,
    /// What was required, in words (`<= 10m`).
    pub target: String,
    /// What the replay measured, in words (`7h 2m`, `never`, `0.4%`).
    pub measured: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AlertResult {
    pub name: String,
    pub pool: String,
    /// Seconds from the start when it started firing, and when it stopped.
    pub fired_s: Vec<f64>,
    pub resolved_s: Vec<f64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PoolResult {
    pub name: String,
    /// When the first capacity loss began (see [`Episode::lost_s`]).
    pub capacity_lost_s: Option<f64>,
    /// The first loss's detection: the first alert on the pool since its drop began.
    pub detected_s: Option<f64>,
    /// First scrape after the first loss showing the expected hosts again.
    pub restored_s: Option<f64>,
    /// The first impact: its first and last impaired scrape.
    pub impact_start_s: Option<f64>,
    pub impact_end_s: Option<f64>,
    pub min_capacity_ratio: f64,
    pub requests: u64,
    pub errors: u64,
    /// Every capacity loss, in order: each is judged by the time SLOs.
    #[serde(default)]
    pub episodes: Vec<Episode>,
    /// Every impact, in order.
    #[serde(default)]
    pub impacts: Vec<impact::Span>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub t_s: f64,
    /// `deploy`, `command`, `alert`, `resolved`, `recovery`, `capacity_lost`, `capacity_restored`,
    /// `impact_start`, `impact_end`, `refused`, `filter_failure`, `expired` (a fault's TTL ran
    /// out); with the pool model, `scale`, `registration`, `registered`, `crash`, `restart`.
    pub kind: String,
    pub text: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PoolSeries {
    pub pool: String,
    /// Minute starts, seconds from the start.
    pub t_s: Vec<f64>,
    pub requests: Vec<u64>,
    pub errors: Vec<u64>,
    pub available_ratio: Vec<f64>,
    /// p90 latency in seconds (0 when no requests finished), interpolated within the histogram's
    /// bucket as Prometheus' `histogram_quantile` does.
    pub p90_s: Vec<f64>,
    /// The capacity ratio at each scrape where it changed: `[t_s, available / expected]`, so that
    /// a chart draws each step when it was seen rather than at the start of its minute.
    #[serde(default)]
    pub capacity_steps: Vec<(f64, f64)>,
    /// Share of expected hosts launched but not registered with the load balancer (highest in
    /// the minute); present only when a registration fault left some out.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unregistered_ratio: Vec<f64>,
}

impl Report {
    pub fn passed(&self) -> bool {
        self.verdict == "pass"
    }

    /// The terminal rendering: timeline, pools, verdict table. `color` adds ANSI colours.
    pub fn render(&self, color: bool) -> String {
        let paint =
            |code: &str, text: &str| if color { format!("\x1b[{code}m{text}\x1b[0m") } else { text.to_string() };
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{} ({} from {}, seed {})",
            paint("1", &self.scenario),
            human(self.duration_s),
            self.start_words(),
            self.seed
        );
        match &self.live {
            Some(live) => {
                let _ = writeln!(
                    out,
                    "live game day at {}x against {}: {} requests counted by the filter; alerts from {}; {}",
                    live.time_scale,
                    live.targets.join(", "),
                    self.requests.simulated,
                    live.alerts_from,
                    live.ended
                );
            }
            None => {
                let _ = writeln!(
                    out,
                    "{} simulated requests through ebb.wasm, each standing for {} real ({} in all)",
                    self.requests.simulated, self.requests.sample, self.requests.represented
                );
            }
        }
        if self.requests.filter_failures > 0 {
            let _ = writeln!(out, "{}", paint("31", &format!("filter failures: {}", self.requests.filter_failures)));
        }
        match &self.timezone {
            Some(zone) if self.clock_and_utc(0.0) != self.clock(0.0) => {
                let _ = writeln!(out, "\ntimeline ({}, UTC in brackets):", zone.name);
            }
            _ => {
                let _ = writeln!(out, "\ntimeline (UTC):");
            }
        }
        for e in &self.events {
            let code = match e.kind.as_str() {
                "alert" | "impact_start" | "capacity_lost" | "refused" | "filter_failure" | "crash"
                | "registration" => "31",
                "recovery" | "resolved" | "capacity_restored" | "impact_end" | "restart" | "registered" => "32",
                _ => "0",
            };
            let _ = writeln!(out, "  {}  {:<17} {}", self.clock_and_utc(e.t_s), paint(code, &e.kind), e.text);
        }
        match &self.timezone {
            Some(zone) => {
                let _ = writeln!(out, "\npools ({}):", zone.name);
            }
            None => {
                let _ = writeln!(out, "\npools:");
            }
        }
        let at = |t: Option<f64>| t.map_or("-".to_string(), |t| self.clock(t));
        // Times are 8 columns in UTC, more with a zone's abbreviation.
        let w = self.clock(0.0).len().max(8) + 1;
        let _ = writeln!(
            out,
            "  {:<8} {:>w$} {:>w$} {:>w$} {:>15} {:>9} {:>9}",
            "pool", "lost", "detected", "restored", "impact", "min cap", "errors"
        );
        for p in &self.pools {
            let impacts: Vec<String> = p
                .impacts
                .iter()
                .map(|x| format!("{}-{}", &self.clock(x.start_s)[..5], &self.clock(x.end_s)[..5]))
                .collect();
            // One row per capacity loss (each is judged), the pool's figures on the first.
            let rows = p.episodes.len().max(1);
            for row in 0..rows {
                let e = p.episodes.get(row);
                let impact = match (row, impacts.first()) {
                    (0, Some(first)) if impacts.len() > 1 => format!("{first} +{}", impacts.len() - 1),
                    (0, Some(first)) => first.clone(),
                    _ => "-".into(),
                };
                let (name, min_cap, errors) = if row == 0 {
                    (p.name.clone(), format!("{:.0}%", p.min_capacity_ratio * 100.0), p.errors.to_string())
                } else {
                    (String::new(), String::new(), String::new())
                };
                let _ = writeln!(
                    out,
                    "  {:<8} {:>w$} {:>w$} {:>w$} {:>15} {:>9} {:>9}",
                    name,
                    at(e.map(|e| e.lost_s)),
                    at(e.and_then(|e| e.detected_s)),
                    at(e.and_then(|e| e.restored_s)),
                    impact,
                    min_cap,
                    errors
                );
                if let Some(e) = e.filter(|e| e.paged_early()) {
                    let _ = writeln!(out, "  {:<8} {}", "", e.detect_words());
                }
            }
            if impacts.len() > 1 {
                let _ = writeln!(out, "  {:<8} impacts: {}", "", impacts.join(", "));
            }
        }
        let _ = writeln!(out, "\nSLOs:");
        let width = self.slos.iter().map(|s| s.name.len()).max().unwrap_or(4).max(4);
        // A long target (an error budget's) widens its column rather than running into the value.
        let target = self.slos.iter().map(|s| s.target.chars().count()).max().unwrap_or(0).max(12);
        let _ = writeln!(out, "  {:<6} {:<width$}  {:<target$} measured", "", "slo", "target");
        for s in &self.slos {
            let mark = if s.pass { paint("32", "pass  ") } else { paint("31", "FAIL  ") };
            let _ = writeln!(out, "  {mark} {:<width$}  {:<target$} {}", s.name, s.target, s.measured);
        }
        let verdict = if self.passed() { paint("1;32", "PASS") } else { paint("1;31", "FAIL") };
        let expected = match &self.expected {
            Some(e) if e == &self.verdict => " (as the scenario expects)".to_string(),
            Some(e) => format!(" (the scenario expects {e})"),
            None => String::new(),
        };
        let _ = writeln!(out, "\nverdict: {verdict}{expected}");
        out
    }
}

/// `7h2m`, `45s`, `1m30s`: durations in reports.
pub fn human(seconds: f64) -> String {
    ebb_engine::Duration::from_millis((seconds.max(0.0) * 1000.0).round() as u64 / 1000 * 1000).to_string()
}
