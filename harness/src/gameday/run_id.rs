// A game day's run id (`gd` and 6 random hex digits): the prefix of every fault id it adds, so
// that two game days on one proxy tell their faults apart and each cleans up only its own.

use std::fmt;

/// `gd1a2b3c`: two letters and six hex digits.
const LEN: usize = 8;
/// The filter's longest fault id (`1 to 63 of a-z, 0-9, '_' and '-'`).
pub const MAX_FAULT_ID: usize = 63;

/// One game day's run id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunId(String);

impl RunId {
    /// A new random run id (from the operating system's generator).
    pub fn new() -> Result<RunId, getrandom::Error> {
        let mut bytes = [0u8; 3];
        getrandom::fill(&mut bytes)?;
        Ok(RunId(format!("gd{:02x}{:02x}{:02x}", bytes[0], bytes[1], bytes[2])))
    }

    /// The id this run gives the scenario's fault `id`: `gd1a2b3c-deploy1-web`.
    pub fn fault_id(&self, id: &str) -> String {
        format!("{}-{id}", self.0)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The run id of a fault a game day added (`gd1a2b3c-…`), whichever game day it was; None for a
/// fault added otherwise (by hand, by a recovery script, by the configuration).
pub fn of(fault_id: &str) -> Option<&str> {
    let run = fault_id.get(..LEN)?;
    let hex = run.strip_prefix("gd")?;
    let is_hex = hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    (is_hex && fault_id.as_bytes().get(LEN) == Some(&b'-')).then_some(run)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_prefix_fault_ids_and_are_recognised_in_them() {
        let a = RunId::new().expect("random");
        let b = RunId::new().expect("random");
        assert_ne!(a, b, "two runs, two ids");
        let id = a.fault_id("deploy1-web");
        assert!(id.starts_with("gd") && id.ends_with("-deploy1-web") && id.len() == LEN + 1 + 11, "{id}");
        assert_eq!(of(&id), Some(a.as_str()));
        assert_eq!(of("gd00ff1a-x"), Some("gd00ff1a"));
        for not_a_game_day in ["deploy1-web", "gd00ff1a", "gd00ff1ax", "gd00fg1a-x", "gdx", "GD00FF1A-x", ""] {
            assert_eq!(of(not_a_game_day), None, "{not_a_game_day}");
        }
    }
}
