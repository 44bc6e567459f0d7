// The set of faults a proxy holds: what commands change and what every worker reads back.
// Serialized to JSON in shared data so that all VMs of one proxy agree on it.

use serde::{Deserialize, Serialize};

use crate::clip::quoted;
use crate::config::{valid_name, Config};
use crate::duration::Duration;
use crate::error::CommandError;
use crate::fault::{Fault, FaultRequest, FaultSpec};

/// All faults of a proxy, active or scheduled. Expired faults are pruned by whoever writes next;
/// readers ignore them, so expiry never waits for a write.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FaultSet {
    pub faults: Vec<Fault>,
    /// Source of generated ids (`f1`, `f2`, ...).
    #[serde(default)]
    pub next_id: u64,
    /// Hash of the configuration whose static faults are installed.
    #[serde(default)]
    pub config_hash: u64,
}

impl FaultSet {
    pub fn from_json(bytes: &[u8]) -> Result<FaultSet, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    pub fn to_json(&self) -> Vec<u8> {
        // A FaultSet holds only strings, numbers and enums: serialization cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Faults not yet expired at `now` (active or scheduled).
    pub fn live(&self, now: u64) -> impl Iterator<Item = &Fault> {
        self.faults.iter().filter(move |f| !f.expired(now))
    }

    /// Removes expired faults and returns them.
    pub fn prune(&mut self, now: u64) -> Vec<Fault> {
        let (gone, kept) = std::mem::take(&mut self.faults).into_iter().partition(|f| f.expired(now));
        self.faults = kept;
        gone
    }

    /// Checks a fault request against the configuration, the caps and the faults already held,
    /// and adds it. On error nothing changes.
    pub fn add(&mut self, config: &Config, request: &FaultRequest, now: u64) -> Result<&Fault, CommandError> {
        let fault = self.admit(config, request, now)?;
        self.faults.push(fault);
        self.next_id = self.next_id.saturating_add(u64::from(request.id.is_none()));
        Ok(self.faults.last().expect("just pushed"))
    }

    fn admit(&self, config: &Config, request: &FaultRequest, now: u64) -> Result<Fault, CommandError> {
        let spec = request.spec()?;
        let limits = &config.limits;
        let id = match &request.id {
            Some(id) if !valid_name(id) => {
                return Err(CommandError::invalid(
                    "id",
                    format!("{} is not an id: use 1 to 63 of a-z, 0-9, '_' and '-'", quoted(id)),
                ))
            }
            Some(id) => id.clone(),
            None => format!("f{}", self.next_id.saturating_add(1)),
        };
        if self.live(now).any(|f| f.id == id) {
            return Err(CommandError::Conflict(id));
        }
        if let FaultSpec::Deploy(d) = &spec {
            // Before the TTL is derived from it: batches x batch_interval must not wrap.
            d.check_rollout(limits.max_ttl)?;
        }
        let ttl = match (request.ttl, &spec) {
            (Some(ttl), _) => ttl,
            // A deploy without a TTL lives at least through its rollout.
            (None, FaultSpec::Deploy(d)) => limits.default_ttl.max(Duration::from_millis(d.rollout_ms())),
            (None, _) => limits.default_ttl,
        };
        if ttl == Duration::ZERO {
            return Err(CommandError::invalid("ttl", "must be longer than 0s"));
        }
        if ttl > limits.max_ttl {
            return Err(CommandError::over_cap(format!("ttl {ttl} exceeds limits.max_ttl {}", limits.max_ttl)));
        }
        let start_in = request.start_in.unwrap_or_default();
        if start_in > limits.max_ttl {
            return Err(CommandError::over_cap(format!(
                "start_in {start_in} exceeds limits.max_ttl {}",
                limits.max_ttl
            )));
        }
        spec.kind().check(config, ttl)?;
        let live = self.live(now).count();
        if live >= limits.max_faults as usize {
            return Err(CommandError::over_cap(format!(
                "{live} faults are active; limits.max_faults is {}",
                limits.max_faults
            )));
        }
        if let Some(pool) = spec.kind().pool() {
            if let Some((_, p)) = config.pool(pool) {
                let new = spec.kind().max_drained_hosts(p.hosts);
                if new > 0 {
                    // u64: one pool's faults can together name more hosts than a u32 holds.
                    let held: u64 = self
                        .live(now)
                        .filter(|f| f.pool() == Some(pool))
                        .map(|f| u64::from(f.spec.kind().max_drained_hosts(p.hosts)))
                        .fold(0, u64::saturating_add);
                    let cap = (limits.max_drain_fraction * f64::from(p.hosts) + 1e-9).floor() as u64;
                    let total = held.saturating_add(u64::from(new));
                    if total > cap {
                        return Err(CommandError::over_cap(format!(
                            "pool {pool}: draining {} of {} hosts exceeds limits.max_drain_fraction {} (at most {cap})",
                            total,
                            p.hosts,
                            crate::fault::decimal(limits.max_drain_fraction)
                        )));
                    }
                }
            }
        }
        let start_ms = now.saturating_add(start_in.as_millis());
        Ok(Fault { id, start_ms, expires_ms: start_ms.saturating_add(ttl.as_millis()), from_config: false, spec })
    }

    /// Removes one fault.
    pub fn clear(&mut self, id: &str) -> Result<Fault, CommandError> {
        let at = self
            .faults
            .iter()
            .position(|f| f.id == id)
            .ok_or_else(|| CommandError::NotFound(format!("no fault {}", quoted(id))))?;
        Ok(self.faults.remove(at))
    }

    /// The kill switch: removes every fault, returns their ids.
    pub fn clear_all(&mut self) -> Vec<String> {
        self.faults.drain(..).map(|f| f.id).collect()
    }

    /// Removes every fault acting on `pool`: what recovery tooling calls.
    pub fn restore_pool(&mut self, config: &Config, pool: &str) -> Result<Vec<String>, CommandError> {
        if config.pool(pool).is_none() {
            return Err(CommandError::NotFound(format!("no pool {}", quoted(pool))));
        }
        let (gone, kept): (Vec<Fault>, Vec<Fault>) =
            std::mem::take(&mut self.faults).into_iter().partition(|f| f.pool() == Some(pool));
        self.faults = kept;
        Ok(gone.into_iter().map(|f| f.id).collect())
    }

    /// Installs the static faults of a configuration once: when its hash differs from the one
    /// installed, the previous configuration's static faults are replaced. Faults that fail
    /// their checks are skipped and returned with the reason.
    pub fn apply_config(&mut self, config: &Config, hash: u64, now: u64) -> Vec<(usize, CommandError)> {
        if self.config_hash == hash {
            return Vec::new();
        }
        self.faults.retain(|f| !f.from_config);
        self.config_hash = hash;
        let mut refused = Vec::new();
        for (i, request) in config.faults.iter().enumerate() {
            match self.admit(config, request, now) {
                Ok(mut fault) => {
                    fault.from_config = true;
                    self.next_id = self.next_id.saturating_add(u64::from(request.id.is_none()));
                    self.faults.push(fault);
                }
                Err(e) => refused.push((i, e)),
            }
        }
        refused
    }
}

/// FNV-1a: a stable hash of configuration bytes (no std hasher: its output may change).
pub fn config_hash(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> Config {
        let json = format!(
            r#"{{"pools":[{{"name":"web","hosts":10,"capacity_per_host":10}},{{"name":"ssh","protocol":"tcp","hosts":4,"capacity_per_host":50}}]{extra}}}"#
        );
        Config::parse(json.as_bytes()).unwrap()
    }

    fn req(json: &str) -> FaultRequest {
        crate::config::from_json(json.as_bytes()).unwrap()
    }

    #[test]
    fn ttl_defaults_caps_and_expiry() {
        let c = config("");
        let mut set = FaultSet::default();
        let f = set.add(&c, &req(r#"{"drain":{"pool":"web","hosts":2}}"#), 1_000).unwrap();
        assert_eq!((f.id.as_str(), f.start_ms, f.expires_ms), ("f1", 1_000, 601_000));
        let err = set.add(&c, &req(r#"{"ttl":"2h","drain":{"pool":"web","hosts":1}}"#), 0).unwrap_err();
        assert_eq!(err.status(), 422, "{err}");
        assert!(set.prune(600_999).is_empty());
        assert_eq!(set.prune(601_000).len(), 1);
    }

    #[test]
    fn drain_cap_counts_every_live_fault_on_the_pool() {
        let c = config("");
        let mut set = FaultSet::default();
        set.add(&c, &req(r#"{"drain":{"pool":"web","hosts":3}}"#), 0).unwrap();
        set.add(&c, &req(r#"{"drain":{"pool":"web","fraction":0.2}}"#), 0).unwrap();
        let err = set.add(&c, &req(r#"{"drain":{"pool":"web","hosts":1}}"#), 0).unwrap_err();
        assert!(err.to_string().contains("draining 6 of 10 hosts exceeds"), "{err}");
        assert_eq!(set.faults.len(), 2, "a refused command changes nothing");
    }

    #[test]
    fn deploys_too_long_to_roll_out_are_refused_before_their_ttl_is_derived() {
        let c = config(r#","limits":{"max_ttl":"1d","default_ttl":"1h"}"#);
        let mut set = FaultSet::default();
        // Without a TTL the deploy's TTL is its rollout: that product must not wrap.
        let wraps = req(r#"{"deploy":{"pool":"web","batches":3,"batch_interval":"71172382953d"}}"#);
        let err = set.add(&c, &wraps, 0).unwrap_err();
        assert_eq!(err.status(), 422, "{err}");
        assert!(err.to_string().contains("deploy.batch_interval") && err.to_string().contains("overflows"), "{err}");
        let long = req(r#"{"deploy":{"pool":"web","batches":5,"batch_interval":"5h"}}"#);
        assert!(set.add(&c, &long, 0).unwrap_err().to_string().contains("longer than limits.max_ttl 1d"));
        assert!(set.faults.is_empty());
        let fits = req(r#"{"deploy":{"pool":"web","batches":4,"batch_interval":"6h"}}"#);
        assert_eq!(set.add(&c, &fits, 0).unwrap().expires_ms, 86_400_000);
    }

    #[test]
    fn a_huge_id_is_refused_without_being_echoed() {
        let c = config("");
        let id = "Q".repeat(1 << 20);
        let err = set_add_err(&c, &format!(r#"{{"id":"{id}","abort":{{"status":503}}}}"#));
        assert!(err.len() < 300 && err.contains("(1048576 bytes)"), "{err}");
    }

    fn set_add_err(c: &Config, json: &str) -> String {
        FaultSet::default().add(c, &req(json), 0).unwrap_err().to_string()
    }

    #[test]
    fn ids_conflict_until_expiry_and_pools_restore() {
        let c = config("");
        let mut set = FaultSet::default();
        set.add(&c, &req(r#"{"id":"a","ttl":"1m","abort":{"status":503,"percent":10}}"#), 0).unwrap();
        assert_eq!(set.add(&c, &req(r#"{"id":"a","abort":{"status":503}}"#), 0).unwrap_err().status(), 409);
        set.add(&c, &req(r#"{"id":"a","abort":{"status":503}}"#), 60_000).unwrap();
        set.add(&c, &req(r#"{"id":"d","drain":{"pool":"web","hosts":1}}"#), 60_000).unwrap();
        assert_eq!(set.restore_pool(&c, "web").unwrap(), vec!["d".to_string()]);
        assert_eq!(set.restore_pool(&c, "nope").unwrap_err().status(), 404);
    }

    #[test]
    fn bad_requests_are_refused_with_the_field() {
        let c = config(r#","limits":{"max_abort_percent":20,"max_faults":1}"#);
        let mut set = FaultSet::default();
        let cases = [
            (r#"{}"#, 400, "needs one of"),
            (r#"{"drain":{"pool":"web","hosts":1},"abort":{"status":503}}"#, 400, "exactly one"),
            (r#"{"drain":{"pool":"api","hosts":1}}"#, 400, "no pool named \"api\""),
            (r#"{"abort":{"status":503,"percent":50}}"#, 422, "max_abort_percent"),
            (r#"{"abort":{"status":99}}"#, 400, "abort.status"),
            (r#"{"reset":{"pool":"web"}}"#, 400, "tcp pool"),
            (r#"{"delay":{"delay":"20s"}}"#, 422, "max_delay"),
            (r#"{"id":"Bad Id","abort":{"status":503}}"#, 400, "not an id"),
            (
                r#"{"ttl":"1m","deploy":{"pool":"web","batches":5,"batch_interval":"1m"}}"#,
                400,
                "shorter than the rollout",
            ),
        ];
        for (json, status, text) in cases {
            let err = set.add(&c, &req(json), 0).unwrap_err();
            assert_eq!(err.status(), status, "{json}: {err}");
            assert!(err.to_string().contains(text), "{json}: {err}");
        }
        set.add(&c, &req(r#"{"abort":{"status":503,"percent":20}}"#), 0).unwrap();
        assert!(set
            .add(&c, &req(r#"{"abort":{"status":503,"percent":10}}"#), 0)
            .unwrap_err()
            .to_string()
            .contains("max_faults"));
    }

    #[test]
    fn static_faults_install_once_per_configuration() {
        let c = config(r#","faults":[{"id":"s","drain":{"pool":"web","hosts":1}}]"#);
        let mut set = FaultSet::default();
        assert!(set.apply_config(&c, 7, 0).is_empty());
        set.clear("s").unwrap();
        set.apply_config(&c, 7, 10);
        assert!(set.faults.is_empty(), "same configuration: a cleared static fault stays cleared");
        set.apply_config(&c, 8, 10);
        assert_eq!(set.faults.len(), 1);
        assert!(set.faults[0].from_config);
    }

    #[test]
    fn json_round_trip() {
        let c = config("");
        let mut set = FaultSet::default();
        set.add(&c, &req(r#"{"deploy":{"pool":"web","batches":2,"batch_interval":"1m","abort_at_batch":1}}"#), 5)
            .unwrap();
        assert_eq!(FaultSet::from_json(&set.to_json()).unwrap(), set);
    }
}
