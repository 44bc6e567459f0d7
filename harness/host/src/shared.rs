// Shared data (key → value with CAS versions) and shared queues of one proxy (= one vm_id),
// seen by all its VMs, with proxy-wasm-cpp-host's rules.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};

use super::abi::status;

/// Hashes shared-data keys a word at a time (FxHash's mix). A filter's CAS counters take this
/// map on every admitted request, and std's SipHash was a third of each `proxy_set_shared_data`;
/// the keys come from the proxy's own filters, so there is no one to flood the map.
#[derive(Default)]
pub(crate) struct KeyHasher(u64);

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl KeyHasher {
    fn mix(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(SEED);
    }
}

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.mix(u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]));
        }
        let mut tail = [0u8; 8];
        let rest = chunks.remainder();
        tail[..rest.len()].copy_from_slice(rest);
        // The length goes in with the tail, so "a" and "a\0" differ.
        self.mix(u64::from_le_bytes(tail) ^ ((rest.len() as u64) << 56));
    }
    fn write_usize(&mut self, n: usize) {
        self.mix(n as u64);
    }
}

/// Key → (value, cas). The CAS counter is global to the proxy and never 0, as in cpp-host
/// `shared_data.cc`: 0 in a `set` means "unconditional".
#[derive(Default)]
pub(crate) struct SharedData {
    map: HashMap<Vec<u8>, (Vec<u8>, u32), BuildHasherDefault<KeyHasher>>,
    next_cas: u32,
}

impl SharedData {
    fn next_cas(&mut self) -> u32 {
        self.next_cas = self.next_cas.wrapping_add(1);
        if self.next_cas == 0 {
            self.next_cas = 1;
        }
        self.next_cas
    }

    /// The value and its CAS, or None.
    pub(crate) fn get(&self, key: &[u8]) -> Option<(&[u8], u32)> {
        self.map.get(key).map(|(v, cas)| (v.as_slice(), *cas))
    }

    /// Sets `key`. cpp-host's rule: on an existing key a non-zero `cas` must match (else
    /// CAS_MISMATCH); on a missing key `cas` is ignored (creation races: last writer wins).
    /// With `exact` (ngx_wasm_module, `ngx_wa_shm_kv_set_locked`), `cas` must equal the key's
    /// current CAS, 0 for a missing key: an unconditional write to an existing key is refused.
    pub(crate) fn set(&mut self, key: &[u8], value: &[u8], cas: u32, exact: bool) -> i32 {
        if exact && cas != self.map.get(key).map_or(0, |e| e.1) {
            return status::CAS_MISMATCH;
        }
        let next = self.next_cas();
        match self.map.get_mut(key) {
            Some(entry) => {
                if cas != 0 && cas != entry.1 {
                    return status::CAS_MISMATCH;
                }
                entry.0.clear();
                entry.0.extend_from_slice(value);
                entry.1 = next;
            }
            None => {
                self.map.insert(key.to_vec(), (value.to_vec(), next));
            }
        }
        status::OK
    }

    /// All keys, sorted, for inspection by the caller.
    pub(crate) fn keys(&self) -> Vec<Vec<u8>> {
        let mut keys: Vec<_> = self.map.keys().cloned().collect();
        keys.sort();
        keys
    }
}

/// Who is told about new items: the last VM (and its root context) to register the queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Registrant {
    pub instance: usize,
    pub root_context: u32,
}

struct Queue {
    registrant: Registrant,
    items: VecDeque<Vec<u8>>,
}

/// Shared queues by name (the vm_id is the proxy's own), tokens from 1.
#[derive(Default)]
pub(crate) struct Queues {
    by_name: HashMap<Vec<u8>, u32>,
    queues: HashMap<u32, Queue>,
    /// `proxy_on_queue_ready` notifications not delivered yet, in enqueue order. cpp-host posts
    /// them to the registrant's thread, so they run after the current callback, never inside it.
    pub(crate) ready: Vec<(Registrant, u32)>,
}

impl Queues {
    /// Registers (or re-registers) `name`; the caller becomes the one notified.
    pub(crate) fn register(&mut self, name: &[u8], registrant: Registrant) -> u32 {
        if let Some(&token) = self.by_name.get(name) {
            if let Some(q) = self.queues.get_mut(&token) {
                q.registrant = registrant;
            }
            return token;
        }
        let token = u32::try_from(self.by_name.len() + 1).unwrap_or(u32::MAX);
        self.by_name.insert(name.to_vec(), token);
        self.queues.insert(token, Queue { registrant, items: VecDeque::new() });
        token
    }

    pub(crate) fn resolve(&self, name: &[u8]) -> Option<u32> {
        self.by_name.get(name).copied()
    }

    pub(crate) fn enqueue(&mut self, token: u32, value: &[u8]) -> i32 {
        match self.queues.get_mut(&token) {
            Some(q) => {
                q.items.push_back(value.to_vec());
                let registrant = q.registrant;
                self.ready.push((registrant, token));
                status::OK
            }
            None => status::NOT_FOUND,
        }
    }

    /// Ok(Some(item)), Ok(None) when empty, Err(NOT_FOUND) for an unknown token.
    pub(crate) fn dequeue(&mut self, token: u32) -> Result<Option<Vec<u8>>, i32> {
        match self.queues.get_mut(&token) {
            Some(q) => Ok(q.items.pop_front()),
            None => Err(status::NOT_FOUND),
        }
    }

    /// Items waiting in `name`, for inspection by the caller.
    pub(crate) fn depth(&self, name: &[u8]) -> Option<usize> {
        let token = self.by_name.get(name)?;
        self.queues.get(token).map(|q| q.items.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_of_every_length_stay_apart() {
        let mut d = SharedData::default();
        let keys: Vec<Vec<u8>> = (0..40).map(|n| vec![0u8; n]).chain((1..40).map(|n| vec![b'k'; n])).collect();
        for (i, k) in keys.iter().enumerate() {
            assert_eq!(d.set(k, &[i as u8], 0, false), status::OK);
        }
        for (i, k) in keys.iter().enumerate() {
            assert_eq!(d.get(k).map(|(v, _)| v.to_vec()), Some(vec![i as u8]), "key {k:?}");
        }
        assert_eq!(d.keys().len(), keys.len());
    }

    #[test]
    fn cas_rules_follow_cpp_host() {
        let mut d = SharedData::default();
        assert_eq!(d.set(b"k", b"v1", 12345, false), status::OK, "creation ignores cas");
        let (_, cas) = d.get(b"k").expect("set");
        assert_ne!(cas, 0);
        assert_eq!(d.set(b"k", b"v2", cas + 1, false), status::CAS_MISMATCH);
        assert_eq!(d.set(b"k", b"v2", cas, false), status::OK);
        let (v, cas2) = d.get(b"k").expect("set");
        assert_eq!(v, b"v2");
        assert_ne!(cas2, cas);
        assert_eq!(d.set(b"k", b"v3", 0, false), status::OK, "0 is unconditional");
    }

    #[test]
    fn exact_cas_follows_ngx_wasm_module() {
        let mut d = SharedData::default();
        assert_eq!(d.set(b"k", b"v1", 7, true), status::CAS_MISMATCH, "a missing key wants cas 0");
        assert!(d.get(b"k").is_none());
        assert_eq!(d.set(b"k", b"v1", 0, true), status::OK);
        let (_, cas) = d.get(b"k").expect("set");
        assert_eq!(d.set(b"k", b"v2", 0, true), status::CAS_MISMATCH, "no unconditional overwrite");
        assert_eq!(d.get(b"k").map(|(v, _)| v.to_vec()), Some(b"v1".to_vec()));
        assert_eq!(d.set(b"k", b"v2", cas, true), status::OK);
    }

    #[test]
    fn last_registrant_is_notified() {
        let mut q = Queues::default();
        let a = Registrant { instance: 1, root_context: 1 };
        let b = Registrant { instance: 2, root_context: 1 };
        let t = q.register(b"q", a);
        assert_eq!(q.register(b"q", b), t);
        assert_eq!(q.enqueue(t, b"x"), status::OK);
        assert_eq!(q.ready, vec![(b, t)]);
        assert_eq!(q.dequeue(t), Ok(Some(b"x".to_vec())));
        assert_eq!(q.dequeue(t), Ok(None));
        assert_eq!(q.dequeue(99), Err(status::NOT_FOUND));
    }
}
