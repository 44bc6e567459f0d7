// Shared data I/O with compare-and-swap: the proxy's fault set and the control API's used
// signatures, agreed on by every VM (workers and main thread) of one proxy.

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
