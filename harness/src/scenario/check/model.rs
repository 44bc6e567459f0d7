// Checks of the pool model's fields (scaling steps, overload, backlog): ranges, moments inside
// the replay, steps in time order. Every problem carries its JSON path, as the other checks do.

use ebb_engine::Duration;

use super::super::limits::{MAX_CAPACITY_PER_HOST, MAX_DURATION, MAX_HOSTS, MAX_SLOTS};
use super::{at_most, within, Problems};
use crate::scenario::error::thousands;
use crate::scenario::{Pool, Scenario};

impl Scenario {
    pub(super) fn check_pool_model(&self, p: &mut Problems, i: usize, pool: &Pool) {
        let at = |field: &str| format!("pools[{i}].{field}");
        let mut previous: Option<u64> = None;
        for (j, step) in pool.scaling.iter().enumerate() {
            let at = |field: &str| format!("pools[{i}].scaling[{j}].{field}");
            self.check_moment(p, at("at"), step.at);
            let offset = self.offset_ms(step.at);
            if previous.is_some_and(|before| offset < before) {
                p.add(at("at"), || {
                    format!("steps go in time order: {} is before pools[{i}].scaling[{}].at", step.at, j - 1)
                });
            }
            previous = Some(offset);
            if step.hosts > MAX_HOSTS {
                p.add(at("hosts"), || format!("must be at most {}", thousands(MAX_HOSTS.into())));
            }
            if u64::from(step.hosts).saturating_mul(u64::from(pool.capacity_per_host)) > MAX_SLOTS {
                p.add(at("hosts"), || format!("hosts x capacity_per_host must be at most {}", thousands(MAX_SLOTS)));
            }
            Self::check_duration(p, at("register_after"), at_most(step.register_after, MAX_DURATION));
        }
        if let Some(o) = &pool.overload {
            let at = |field: &str| format!("pools[{i}].overload.{field}");
            if !(1..=MAX_CAPACITY_PER_HOST).contains(&o.concurrency) {
                p.add(at("concurrency"), || {
                    format!("requests per host, from 1 to {}", thousands(MAX_CAPACITY_PER_HOST.into()))
                });
            }
            Self::check_duration(p, at("for"), at_most(o.hold, MAX_DURATION));
            Self::check_duration(p, at("restart"), within(o.restart, Duration::from_millis(1), MAX_DURATION));
            Self::check_duration(p, at("warmup"), at_most(o.warmup, MAX_DURATION));
            if !(o.warmup_factor.is_finite() && (1.0..=100.0).contains(&o.warmup_factor)) {
                p.add(at("warmup_factor"), || "how many times slower a warming host serves, from 1 to 100".into());
            }
        }
        if let Some(backlog) = pool.backlog_per_host {
            if u64::from(backlog).saturating_add(u64::from(pool.capacity_per_host)) > u64::from(MAX_CAPACITY_PER_HOST) {
                p.add(at("backlog_per_host"), || {
                    format!(
                        "capacity_per_host + backlog_per_host must be at most {}",
                        thousands(MAX_CAPACITY_PER_HOST.into())
                    )
                });
            }
        }
    }
}
