// Recovery by the scenario's runbooks when no Alertmanager is given: a built-in restore or kill
// switch sent like any planned call, or the team's program with a loopback control URL that
// forwards each of its calls, unchanged, to every target.

use super::http;
use super::plan::{Act, Step};
use super::target::{self, Target};
use super::Runner;
use crate::control::{RawRequest, RawResponse};
use crate::sim::recovery;

impl Runner<'_> {
    /// Recovery rule `r`, triggered by `alert` on `pool`: a built-in runbook or the team's program.
    pub(super) fn recover(&mut self, r: usize, alert: &str, pool: &str) -> Result<(), String> {
        let rule = &self.scenario.recovery[r];
        let origin = format!("recovery[{r}]");
        if let Some(argv) = &rule.run {
            return self.run_program(r, argv, alert, pool);
        }
        let (act, text) = match &rule.restore {
            Some(p) => (Act::Restore(p.clone()), format!("runbook for {alert}: restore pool {p}")),
            None => (Act::ClearAll, format!("runbook for {alert}: kill switch")),
        };
        let step = Step { at_ms: 0, act, text, origin };
        self.execute(&step, "recovery").map_err(|e| e.to_string())
    }

    /// Runs a recovery program with a loopback control URL that forwards each call, unchanged, to
    /// every target (their first answer goes back), as a replay does with its simulated proxies.
    pub(super) fn run_program(&mut self, r: usize, argv: &[String], alert: &str, pool: &str) -> Result<(), String> {
        let rule = &self.scenario.recovery[r];
        let shown = argv.join(" ");
        self.note("recovery", format!("runbook for {alert}: run {shown}"));
        if self.server.is_none() {
            let server =
                recovery::ControlServer::start().map_err(|e| format!("cannot serve a loopback control URL: {e}"))?;
            self.server = Some(server);
        }
        let Some(server) = self.server.take() else { return Ok(()) };
        let url = server.url().to_string();
        let webhook = recovery::webhook(alert, pool, &format!("{alert} on {pool}"), self.now_s(), &url);
        let program = recovery::Program {
            argv,
            dir: &self.scenario.dir,
            env: vec![
                ("EBB_CONTROL_URL", url.clone()),
                ("EBB_URL", url),
                ("EBB_KEY", self.options.key.clone()),
                ("EBB_ALERT", alert.to_string()),
                ("EBB_POOL", pool.to_string()),
            ],
            stdin: webhook.to_string().into_bytes(),
            timeout: std::time::Duration::from_millis(rule.run_timeout().as_millis()),
        };
        let targets = &self.options.targets;
        let mut calls = Vec::new();
        let outcome = recovery::run(&program, &server, &mut |request| {
            let response = forward(targets, request);
            let path = request.path.split('?').next().unwrap_or_default().to_string();
            calls.push(format!("{} {path} -> {}", request.method, response.status));
            response
        });
        self.server = Some(server);
        for call in calls {
            self.note("command", format!("recovery program: {call}"));
        }
        match outcome {
            recovery::Outcome::NotStarted(why) => self.note("refused", format!("runbook for {alert}: {why}")),
            recovery::Outcome::Exited { status, took_s, output } => {
                let how = status.code().map_or_else(|| status.to_string(), |c| format!("exit {c}"));
                self.note("recovery", format!("{shown}: {how} after {took_s:.2}s"));
                if !status.success() {
                    self.note("refused", format!("runbook for {alert}: {shown} failed ({how}); {}", output.summary()));
                }
            }
            recovery::Outcome::TimedOut { took_s, output } => {
                self.note(
                    "refused",
                    format!("runbook for {alert}: {shown} killed at its timeout ({took_s:.2}s); {}", output.summary()),
                );
            }
        }
        Ok(())
    }
}

/// A recovery program's request, unchanged (its own signature, its own `Host`), to every target;
/// the first target's answer goes back.
fn forward(targets: &[Target], request: &RawRequest) -> RawResponse {
    let mut first = None;
    for target in targets {
        let response = match http::call(
            &target.url,
            &request.method,
            &request.path,
            &request.headers,
            &request.body,
            target::CALL_TIMEOUT,
        ) {
            Ok(a) => RawResponse {
                status: a.status,
                headers: vec![("content-type".into(), "application/json".into())],
                body: a.body,
            },
            Err(e) => RawResponse {
                status: 502,
                headers: vec![("content-type".into(), "application/json".into())],
                body: serde_json::json!({"ok": false, "error": format!("target {}: {e}", target.name)})
                    .to_string()
                    .into_bytes(),
            },
        };
        first.get_or_insert(response);
    }
    first.unwrap_or(RawResponse { status: 503, headers: Vec::new(), body: b"no target\n".to_vec() })
}
