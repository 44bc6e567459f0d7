// The end of every game day: its own faults cleared by id (another game day's are left alone),
// the kill switch to every target after an emergency (the console's Halt, a stop condition) or
// when clearing by id fails, then each target's `/state` read until none of its faults is left.

use ebb_engine::Duration;

use super::target::{TargetError, PREFIX};
use super::{plan, Ending, Runner, CONFIRM_GAP_MS, CONFIRM_TRIES};

impl Runner<'_> {
    /// This game day's faults cleared by id; after an emergency, the kill switch to every
    /// target. Then `/state` must show none of this game day's faults on any target.
    pub(super) fn clean_up(&mut self, ending: &Ending) -> bool {
        let kill_switch = self.emergency;
        let how = if kill_switch {
            "sending the kill switch to every target".to_string()
        } else {
            format!("clearing this game day's faults (run {}) on every target", self.run_id)
        };
        match ending {
            Ending::Completed => {}
            Ending::Halted(why) => self.note("halt", format!("halted: {why}; {how}")),
            Ending::Failed(why) => self.note("refused", format!("error: {why}; {how}")),
        }
        self.phase = "cleanup".into();
        let mut clean = true;
        for k in 0..self.options.targets.len() {
            let target = self.options.targets[k].clone();
            let sent = if kill_switch {
                self.signer
                    .call(&target, "DELETE", "faults", None, self.now_s())
                    .map(|r| format!("kill switch sent to {}: cleared {}", target.name, list(r.cleared.as_deref())))
            } else {
                let mut cleared = Vec::new();
                let mut result = Ok(());
                for id in self.own[k].clone() {
                    match self.signer.call(&target, "DELETE", &format!("faults/{id}"), None, self.now_s()) {
                        Ok(_) => cleared.push(id),
                        Err(TargetError::Refused { status: 404, .. }) => {}
                        Err(e) => result = Err(e),
                    }
                }
                match result {
                    Ok(()) => Ok(format!(
                        "{}: cleared this game day's faults still there: {}",
                        target.name,
                        list(Some(&cleared))
                    )),
                    // Safety first: what cannot be cleared by id goes with the kill switch.
                    Err(e) => {
                        self.note("refused", format!("cleanup: {e}; sending the kill switch to {}", target.name));
                        self.signer.call(&target, "DELETE", "faults", None, self.now_s()).map(|r| {
                            format!("kill switch sent to {}: cleared {}", target.name, list(r.cleared.as_deref()))
                        })
                    }
                }
            };
            match sent {
                Ok(line) => self.note("cleanup", line),
                Err(e) => self.note("refused", format!("cleanup: {e}")),
            }
            match self.confirm_gone(k) {
                Ok(()) => self.note(
                    "cleanup",
                    format!("{}: {PREFIX}state confirms no fault of this game day is left", target.name),
                ),
                Err(why) => {
                    clean = false;
                    let ttl = Duration::from_millis(
                        self.duration_real_ms
                            .saturating_sub(self.elapsed_ms())
                            .saturating_add(plan::TTL_MARGIN.as_millis()),
                    );
                    self.note("refused", format!("{}: cannot confirm that no fault of this game day is left: {why}; each expires by its TTL, at most {ttl} from now", target.name));
                }
            }
        }
        clean
    }

    pub(super) fn confirm_gone(&self, k: usize) -> Result<(), String> {
        let target = &self.options.targets[k];
        let mut last = String::new();
        for attempt in 0..CONFIRM_TRIES {
            if attempt > 0 {
                std::thread::sleep(std::time::Duration::from_millis(CONFIRM_GAP_MS));
            }
            match self.signer.state(target, self.now_s()) {
                Ok(state) => {
                    let left: Vec<String> = state
                        .faults
                        .iter()
                        .flatten()
                        .filter(|f| self.own[k].contains(&f.id) && f.state != "expired")
                        .map(|f| f.id.clone())
                        .collect();
                    if left.is_empty() {
                        return Ok(());
                    }
                    last = format!("still there: {}", left.join(", "));
                }
                Err(e) => last = e.to_string(),
            }
        }
        Err(last)
    }
}

fn list(items: Option<&[String]>) -> String {
    match items {
        Some(items) if !items.is_empty() => items.join(", "),
        _ => "nothing".into(),
    }
}
