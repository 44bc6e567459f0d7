// `ebb gameday --dry-run`: every call the plan would send, with its scenario and real time, the
// recovery that would answer alerts and the cleanup at the end. Nothing is signed or sent.

use std::fmt::Write as _;

use ebb_engine::Duration;

use super::plan::{self, Act};
use super::target::PREFIX;
use super::{real_ms, Options};
use crate::scenario::Scenario;

/// What `--dry-run` prints: every planned call with its scenario and real time, the recovery
/// that would answer alerts, and the cleanup at the end. Nothing is sent.
pub fn dry_run(scenario: &Scenario, options: &Options) -> String {
    let scale = options.time_scale;
    let duration_real = real_ms(scenario.duration.as_millis(), scale);
    let targets: Vec<String> = options.targets.iter().map(|t| format!("{} ({})", t.name, t.url.show())).collect();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{}: {} at {scale}x ({} real) against {}",
        scenario.name,
        scenario.duration,
        Duration::from_millis(duration_real),
        targets.join(", ")
    );
    let _ = writeln!(out, "planned calls (each signed and sent to every target, then confirmed through {PREFIX}state;");
    let _ = writeln!(out, "each fault id gets the run's id in front when played, gd1a2b3c-deploy1-web):");
    let _ = writeln!(out, "  {:<10} {:<10} call", "scenario", "real");
    for step in plan::plan(scenario) {
        let real = real_ms(step.at_ms, scale);
        let (method, route) = step.act.call();
        let mut line = format!(
            "  +{:<9} +{:<9} {method} {PREFIX}{route}",
            Duration::from_millis(step.at_ms).to_string(),
            Duration::from_millis(real).to_string()
        );
        if let Act::Add(fault) = &step.act {
            let sent = plan::for_sending(fault, scale, Duration::from_millis(duration_real.saturating_sub(real)));
            let _ = write!(line, " x-ebb-command: {}", serde_json::to_string(&sent).unwrap_or_default());
        }
        let _ = writeln!(out, "{line}  # {}: {}", step.origin, step.text);
    }
    match &options.alertmanager {
        Some(am) => {
            let _ = writeln!(
                out,
                "alerts: from Alertmanager {}; recovery: its receivers (the scenario's runbooks do not run)",
                am.show()
            );
        }
        None => {
            for (i, r) in scenario.recovery.iter().enumerate() {
                let what = if let Some(pool) = &r.restore {
                    format!("POST {PREFIX}pools/{pool}/restore")
                } else if let Some(argv) = &r.run {
                    format!("run {} (EBB_CONTROL_URL: a loopback URL that forwards to every target)", argv.join(" "))
                } else {
                    format!("DELETE {PREFIX}faults (kill switch)")
                };
                let _ = writeln!(
                    out,
                    "  when {} fires, +{} scenario (+{} real) later: {what}  # recovery[{i}]",
                    r.trigger(),
                    r.after,
                    Duration::from_millis(real_ms(r.after.as_millis(), scale))
                );
            }
        }
    }
    for c in &scenario.stop_conditions {
        let _ = writeln!(out, "  halt (kill switch) if {}", c.describe());
    }
    let _ = writeln!(
        out,
        "  +{:<9} +{:<9} DELETE {PREFIX}faults/ID for each fault this game day added (also on Ctrl-C, SIGTERM or an error); after the console's Halt or a stop condition: DELETE {PREFIX}faults (kill switch)",
        scenario.duration.to_string(),
        Duration::from_millis(duration_real).to_string()
    );
    let _ = writeln!(out, "dry run: nothing was sent");
    out
}
