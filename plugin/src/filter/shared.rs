// Shared data I/O with compare-and-swap: the proxy's fault set and per-pool admission counters,
// agreed on by every VM (workers and main thread) of one proxy.

use ebb_engine::auth::SeenSignatures;
use ebb_engine::FaultSet;
use proxy_wasm::hostcalls;
use proxy_wasm::types::Status;

/// Key of the proxy's fault set (JSON).
pub const FAULTS_KEY: &str = "ebb.faults";
/// Key of the signatures already used on the control API (JSON).
pub const SIGNATURES_KEY: &str = "ebb.signatures";
/// Attempts before a contended update gives up (and the caller fails safe).
const ATTEMPTS: usize = 16;

/// Reads a key: its bytes (empty when absent) and its CAS (0 when absent).
pub fn read(key: &str) -> (Vec<u8>, u32) {
    match hostcalls::get_shared_data(key) {
        Ok((data, cas)) => (data.unwrap_or_default(), cas.unwrap_or(0)),
        Err(_) => (Vec::new(), 0),
    }
}

/// Read-modify-write under CAS. `change` returns the new bytes, or None to leave the key alone;
/// its result `R` is returned once the write landed. Always passes back the CAS it read, because
/// some hosts refuse an unconditional write to an existing key.
pub fn update<R>(key: &str, mut change: impl FnMut(&[u8]) -> Option<(Vec<u8>, R)>) -> Result<Option<R>, Status> {
    for _ in 0..ATTEMPTS {
        let (bytes, cas) = read(key);
        let Some((new, result)) = change(&bytes) else {
            return Ok(None);
        };
        match hostcalls::set_shared_data(key, Some(&new), if cas == 0 { None } else { Some(cas) }) {
            Ok(()) => return Ok(Some(result)),
            Err(Status::CasMismatch) => continue,
            Err(other) => return Err(other),
        }
    }
    Err(Status::CasMismatch)
}

/// The proxy's fault set and its CAS; an unreadable value reads as empty (fail safe: no faults).
pub fn read_faults() -> (FaultSet, u32) {
    let (bytes, cas) = read(FAULTS_KEY);
    if bytes.is_empty() {
        return (FaultSet::default(), cas);
    }
    match FaultSet::from_json(&bytes) {
        Ok(set) => (set, cas),
        Err(e) => {
            log::error!("ebb: shared fault set unreadable, treating as empty: {e}");
            (FaultSet::default(), cas)
        }
    }
}

/// Updates the fault set under CAS; see [`update`].
pub fn update_faults<R>(mut change: impl FnMut(&mut FaultSet) -> Option<R>) -> Result<Option<R>, Status> {
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

/// Key of a pool's in-flight counter (built once per configuration: no allocation per request).
pub fn counter_key(pool: &str) -> String {
    format!("ebb.inflight.{pool}")
}

fn decode(bytes: &[u8]) -> u64 {
    bytes.get(..8).and_then(|b| b.try_into().ok()).map_or(0, u64::from_le_bytes)
}

/// Takes one slot of a pool's capacity across all workers. `Some(true)`: admitted and counted;
/// `Some(false)`: full; `None`: the counter could not be updated, so the request is let through
/// uncounted (a chaos tool must not break traffic on its own failure).
pub fn try_acquire(key: &str, capacity: u64) -> Option<bool> {
    let mut full = false;
    match update(key, |bytes| {
        let n = decode(bytes);
        if n >= capacity {
            full = true;
            return None;
        }
        Some(((n + 1).to_le_bytes().to_vec(), ()))
    }) {
        Ok(Some(())) => Some(true),
        Ok(None) if full => Some(false),
        _ => None,
    }
}

/// Returns a slot taken by [`try_acquire`].
pub fn release(key: &str) {
    let result = update(key, |bytes| {
        let n = decode(bytes);
        (n > 0).then(|| ((n - 1).to_le_bytes().to_vec(), ()))
    });
    if result.is_err() {
        log::warn!("ebb: could not release a slot ({key})");
    }
}
