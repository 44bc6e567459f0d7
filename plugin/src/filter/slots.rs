// Capacity admission under a drain: the slots of each pool held through the whole proxy, counted
// with two counters every worker adds to (`slots_taken_total`, `slots_freed_total`), without a lock.

use std::cell::Cell;

use ebb_engine::metrics::PoolMetric;

use super::hostcall;
use super::metrics::Metrics;

/// A slot a request or connection holds: the counter to add to when it gives it back. Kept by id,
/// like `completed_total`, because after a reconfiguration the pool's index may name another pool
/// (a host gives a name defined again the id it had).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Slot(u32);

impl Slot {
    /// Gives the slot back.
    pub fn free(self) {
        hostcall::increment_metric(self.0, 1);
    }
}

/// What asking for a slot gave.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Taken {
    /// Admitted, holding this slot until it ends.
    Slot(Slot),
    /// Every slot of the remaining capacity is held: shed or queue.
    Full,
    /// The counters cannot be used (a refused metric call, or a host whose counters do not
    /// count): let the request through uncounted. A chaos tool must not break traffic on its own
    /// failure; the refusal is logged once.
    Uncounted,
}

thread_local! {
    /// Whether this VM has logged that its counters read back as 0.
    static SILENT_COUNTERS: Cell<bool> = const { Cell::new(false) };
}

/// Takes one of `capacity` slots of `pool` for the whole proxy.
///
/// Every worker adds 1 to `slots_taken_total` for each attempt and 1 to `slots_freed_total` for
/// each slot given back or attempt refused; both are the proxy-wide sums every host keeps for a
/// counter (Envoy's stats, Kong's per-worker slots summed on read). The attempt reads `freed`
/// first, then adds itself to `taken` and reads it back: a slot is freed only after it was taken,
/// so `taken − freed` read in that order is never below the slots really held, itself included.
/// Admitting when that is at most `capacity` therefore never admits more than `capacity` at once,
/// on any number of threads or processes. Two attempts that overlap at the very limit may both see
/// the other and both be refused; the next finds the slot. A shared-data counter under CAS was
/// exact there too, but cost a read and a write under the host's lock per step, a call back into
/// the VM's allocator per read and a retry per write another worker made in between; these are
/// four calls that hand over one integer each.
pub(crate) fn take(metrics: &Metrics, pool: usize, capacity: u64) -> Taken {
    let (Some(taken), Some(freed)) =
        (metrics.pool_id(pool, PoolMetric::SlotsTaken), metrics.pool_id(pool, PoolMetric::SlotsFreed))
    else {
        return Taken::Uncounted;
    };
    let Some(freed_before) = hostcall::get_metric(freed) else { return Taken::Uncounted };
    if !hostcall::increment_metric(taken, 1) {
        return Taken::Uncounted;
    }
    let slot = Slot(freed);
    let Some(taken_now) = hostcall::get_metric(taken) else {
        slot.free();
        return Taken::Uncounted;
    };
    if taken_now == 0 {
        // Our own increment is not in it: a null counter (Envoy's stats matcher rejecting the
        // name makes one). Nothing can be admitted against it.
        return silent_counters(PoolMetric::SlotsTaken);
    }
    if taken_now.saturating_sub(freed_before) <= capacity {
        return Taken::Slot(slot);
    }
    slot.free();
    // Before anything is shed, check that frees count: were `slots_freed_total` a null counter,
    // every slot would look held for ever and the pool would shed everything. Read only here,
    // on the way to a shed, so admitted requests pay nothing for it.
    match hostcall::get_metric(freed) {
        Some(0) | None => silent_counters(PoolMetric::SlotsFreed),
        Some(_) => Taken::Full,
    }
}

/// A counter that does not count, or cannot be read: logged once per VM; the request goes through.
fn silent_counters(counter: PoolMetric) -> Taken {
    if !SILENT_COUNTERS.replace(true) {
        log::warn!(
            "ebb: the host's counters read back as 0 after an increment ({}); capacity drains let requests \
             through uncounted (logged once per VM)",
            counter.suffix()
        );
    }
    Taken::Uncounted
}
