// Capacity admission under a drain: the slots of each pool held through the whole proxy, counted
// with two counters every worker adds to (`slots_taken_total`, `slots_freed_total`), without a lock.

use std::cell::{Cell, RefCell};

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
        if hostcall::increment_metric(self.0, 1) {
            FREED_SEEN.with(|seen| raise(&mut seen.borrow_mut(), self.0, |n| n.saturating_add(1)));
        }
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
    /// Per `slots_freed_total` id: a value the counter has reached (the last read, plus this VM's
    /// own frees since). A few pools: searched, not hashed.
    static FREED_SEEN: RefCell<Vec<(u32, u64)>> = const { RefCell::new(Vec::new()) };
}

/// Counters whose value is kept in `FREED_SEEN` before it starts again: a host that gives a metric
/// defined again a new id (each reconfiguration) would otherwise grow it without end. Forgetting
/// costs nothing but one more read on the next shed.
const MAX_SEEN: usize = 64;

/// Moves the value known for counter `id` to `f(known)`, or to `f(0)` for a counter not seen yet.
fn raise(seen: &mut Vec<(u32, u64)>, id: u32, f: impl FnOnce(u64) -> u64) {
    if let Some((_, n)) = seen.iter_mut().find(|(i, _)| *i == id) {
        *n = f(*n);
        return;
    }
    if seen.len() >= MAX_SEEN {
        seen.clear();
    }
    seen.push((id, f(0)));
}

fn freed_seen(id: u32) -> u64 {
    FREED_SEEN.with(|seen| seen.borrow().iter().find(|(i, _)| *i == id).map_or(0, |(_, n)| *n))
}

/// Takes one of `capacity` slots of `pool` for the whole proxy.
///
/// Every worker adds 1 to `slots_taken_total` for each attempt and 1 to `slots_freed_total` for
/// each slot given back or attempt refused; both are the proxy-wide sums every host keeps for a
/// counter (Envoy's stats, Kong's per-worker slots summed on read). The attempt adds itself to
/// `taken` and reads it back, and compares it with a value `freed` had reached before that read.
/// A slot is freed only after it was taken, so that difference is never below the slots really
/// held, the attempt's own included, and admitting when it is at most `capacity` never admits
/// more than `capacity` at once, on any number of threads or processes.
///
/// The value of `freed` is the one this VM saw last plus its own frees since (the counter only
/// grows, so an older value only makes the count larger). Only when that count says "full" is
/// `freed` read again, and `taken` after it, so that a slot another worker freed is found before
/// anything is shed. An admission therefore costs two calls that hand over one integer each (four
/// when the refresh finds room), a shed six. Two attempts that overlap at the very limit may both see the other and both
/// be refused; the next finds the slot. (A shared-data counter under CAS was exact there, but cost
/// a read and a write under the host's lock per step, a call back into the VM's allocator per read,
/// and a retry for every write another worker made in between.)
pub(crate) fn take(metrics: &Metrics, pool: usize, capacity: u64) -> Taken {
    let (Some(taken), Some(freed)) =
        (metrics.pool_id(pool, PoolMetric::SlotsTaken), metrics.pool_id(pool, PoolMetric::SlotsFreed))
    else {
        return Taken::Uncounted;
    };
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
    if taken_now.saturating_sub(freed_seen(freed)) <= capacity {
        return Taken::Slot(slot);
    }
    // Full by what this VM knows: read `freed` as it is now, then `taken` again after it. The
    // order matters: `freed` read after `taken` could count a slot freed by an attempt that
    // `taken` does not include, and so count one slot too few.
    let Some(freed_now) = hostcall::get_metric(freed) else {
        slot.free();
        return Taken::Uncounted;
    };
    let Some(taken_now) = hostcall::get_metric(taken) else {
        slot.free();
        return Taken::Uncounted;
    };
    FREED_SEEN.with(|seen| raise(&mut seen.borrow_mut(), freed, |n| n.max(freed_now)));
    if taken_now.saturating_sub(freed_now) <= capacity {
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
