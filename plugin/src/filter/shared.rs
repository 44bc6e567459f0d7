// Shared data I/O with compare-and-swap: the proxy's fault set and per-pool admission counters,
// agreed on by every VM (workers and main thread) of one proxy.

use std::cell::Cell;

use ebb_engine::auth::SeenSignatures;
use ebb_engine::FaultSet;

use super::hostcall::{self, WriteError};

/// Key of the proxy's fault set (JSON).
pub const FAULTS_KEY: &str = "ebb.faults";
/// Key of the signatures already used on the control API (JSON).
pub const SIGNATURES_KEY: &str = "ebb.signatures";
/// Attempts before a contended update gives up (and the caller fails safe).
const ATTEMPTS: usize = 16;

/// Why an update did not land.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SharedError {
    /// Other VMs kept writing the key for every attempt.
    Contended,
    /// The host refused a read or a write (logged once per VM).
    Refused,
}

/// Reads a key: its bytes (empty when absent) and its CAS (0 when absent).
pub fn read(key: &str) -> Result<(Vec<u8>, u32), SharedError> {
    match hostcall::shared_get(key) {
        Ok(Some(found)) => Ok(found),
        Ok(None) => Ok((Vec::new(), 0)),
        Err(()) => Err(SharedError::Refused),
    }
}

/// Read-modify-write under CAS. `change` returns the new bytes, or None to leave the key alone;
/// its result `R` is returned once the write landed. Always passes back the CAS it read, because
/// some hosts refuse an unconditional write to an existing key.
pub fn update<R>(key: &str, mut change: impl FnMut(&[u8]) -> Option<(Vec<u8>, R)>) -> Result<Option<R>, SharedError> {
    for _ in 0..ATTEMPTS {
        let (bytes, cas) = read(key)?;
        let Some((new, result)) = change(&bytes) else {
            return Ok(None);
        };
        match hostcall::shared_set(key, &new, cas) {
            Ok(()) => return Ok(Some(result)),
            Err(WriteError::CasMismatch) => continue,
            Err(WriteError::Refused) => return Err(SharedError::Refused),
        }
    }
    Err(SharedError::Contended)
}

/// Parses a fault set read from shared data; an unreadable value reads as empty (fail safe).
pub fn parse_faults(bytes: &[u8]) -> FaultSet {
    if bytes.is_empty() {
        return FaultSet::default();
    }
    FaultSet::from_json(bytes).unwrap_or_else(|e| {
        log::error!("ebb: shared fault set unreadable, treating as empty: {e}");
        FaultSet::default()
    })
}

/// Updates the fault set under CAS; see [`update`].
pub fn update_faults<R>(mut change: impl FnMut(&mut FaultSet) -> Option<R>) -> Result<Option<R>, SharedError> {
    update(FAULTS_KEY, |bytes| {
        let mut set =
            if bytes.is_empty() { FaultSet::default() } else { FaultSet::from_json(bytes).unwrap_or_default() };
        let result = change(&mut set)?;
        Some((set.to_json(), result))
    })
}

/// Remembers a control API signature across workers; errors if it was seen.
pub fn remember_signature(signature: &str, forget_after: u64, now: u64) -> Result<(), ebb_engine::CommandError> {
    let mut refusal = None;
    let outcome = update(SIGNATURES_KEY, |bytes| {
        let mut seen = SeenSignatures::from_json(bytes);
        match seen.remember(signature, forget_after, now) {
            Ok(()) => Some((seen.to_json(), ())),
            Err(e) => {
                refusal = Some(e);
                None
            }
        }
    });
    match (refusal, outcome) {
        (Some(e), _) => Err(e),
        (None, Ok(_)) => Ok(()),
        (None, Err(_)) => Err(ebb_engine::CommandError::Busy("could not record the signature; retry".into())),
    }
}

/// Guessed writes that may miss in a row before a counter goes back to reading first, until the
/// next housekeeping round.
const MAX_MISSES: u8 = 2;

fn decode(bytes: &[u8]) -> u64 {
    bytes.get(..8).and_then(|b| b.try_into().ok()).map_or(0, u64::from_le_bytes)
}

/// A pool's admission counter in shared data (requests holding a slot, all VMs together), and
/// what this VM knows of it.
///
/// A CAS update is a read and a write. The ABI does not say which CAS a write gave the key, but
/// every host we know gives each write to a key a CAS greater than all the key's earlier ones
/// (proxy-wasm-cpp-host and ebb's host from one counter for all keys, Kong's module by adding 1
/// to the key's own). So after a write under CAS `c` the key's CAS is `c + 1` exactly when ours
/// was the last write and the host counts per key, or nothing else was written in between, and
/// otherwise is not `c + 1` and never will be. The next update of this VM therefore first tries
/// the write alone, under `c + 1`, with the value it wrote: it lands only if the key still holds
/// that value, and a miss costs one refused write before the usual read and write. Two misses in
/// a row (another worker writing the key, or other keys written in between on a host with one
/// counter) turn the guess off until the next housekeeping round, which also forgets what this
/// VM knows so a CAS seen long ago is never reused after a host's counter wrapped round.
pub struct Counter {
    key: String,
    /// (value, CAS) of the key as this VM last read or wrote it.
    known: Cell<Option<(u64, u32)>>,
    misses: Cell<u8>,
}

impl Counter {
    /// The counter of `pool`, created at 0 in shared data when it does not exist yet. Without
    /// that, the first requests of two workers could both find no key and both write 1 (a write
    /// to a missing key ignores the CAS), admitting one request more than the capacity.
    pub fn new(pool: &str) -> Self {
        let key = format!("ebb.inflight.{pool}");
        if let Ok(None) = hostcall::shared_get(&key) {
            // A racing creation writes the same 0; a racing first admission finds the key.
            let _ = hostcall::shared_set(&key, &0u64.to_le_bytes(), 0);
        }
        Counter { key, known: Cell::new(None), misses: Cell::new(0) }
    }

    /// Forgets the known CAS and re-arms the guess (once per housekeeping round).
    pub fn forget(&self) {
        self.known.set(None);
        self.misses.set(0);
    }

    /// Adds 1 (`up`) or takes 1 unless `allow` refuses the current value. Ok(false): refused.
    fn step(&self, allow: impl Fn(u64) -> bool, up: bool) -> Result<bool, SharedError> {
        let apply = |n: u64| if up { n.saturating_add(1) } else { n.saturating_sub(1) };
        if let Some((n, cas)) = self.known.take() {
            if allow(n) && self.misses.get() < MAX_MISSES {
                let next = apply(n);
                match hostcall::shared_set(&self.key, &next.to_le_bytes(), cas) {
                    Ok(()) => {
                        self.misses.set(0);
                        self.known.set(cas.checked_add(1).map(|c| (next, c)));
                        return Ok(true);
                    }
                    Err(WriteError::CasMismatch) => self.misses.set(self.misses.get().saturating_add(1)),
                    Err(WriteError::Refused) => return Err(SharedError::Refused),
                }
            }
        }
        for _ in 0..ATTEMPTS {
            let (bytes, cas) = read(&self.key)?;
            let n = decode(&bytes);
            if cas == 0 {
                // No key (its creation at configure failed, or a host evicted it): create it at
                // 0 and read again, so that the update itself always carries a CAS.
                if hostcall::shared_set(&self.key, &0u64.to_le_bytes(), 0) == Err(WriteError::Refused) {
                    return Err(SharedError::Refused);
                }
                continue;
            }
            if !allow(n) {
                self.known.set(Some((n, cas)));
                return Ok(false);
            }
            let next = apply(n);
            match hostcall::shared_set(&self.key, &next.to_le_bytes(), cas) {
                Ok(()) => {
                    self.known.set(cas.checked_add(1).map(|c| (next, c)));
                    return Ok(true);
                }
                Err(WriteError::CasMismatch) => continue,
                Err(WriteError::Refused) => return Err(SharedError::Refused),
            }
        }
        Err(SharedError::Contended)
    }

    /// Takes one slot of the pool's capacity across all workers. `Some(true)`: admitted and
    /// counted; `Some(false)`: full; `None`: the counter could not be updated, so the request
    /// is let through uncounted (a chaos tool must not break traffic on its own failure).
    pub fn try_acquire(&self, capacity: u64) -> Option<bool> {
        self.step(|n| n < capacity, true).ok()
    }

    /// Returns a slot taken by [`Counter::try_acquire`].
    pub fn release(&self) {
        // A refusal was logged once already; contention this long is rare enough to log each time.
        if let Err(SharedError::Contended) = self.step(|n| n > 0, false) {
            log::warn!("ebb: could not release a slot of {}: shared data contended", self.key);
        }
    }
}
