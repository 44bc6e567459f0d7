// Shared data (key → value with CAS versions) of one vm_id, and the shared queues of one process
// by (vm_id, name) with the mailboxes that carry their notifications, with cpp-host's rules.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use super::abi::status;
use super::state::lock;

/// Key → (value, cas). The CAS counter is global to the proxy and never 0, as in cpp-host
/// `shared_data.cc`: 0 in a `set` means "unconditional".
#[derive(Default)]
pub(crate) struct SharedData {
    // FxHash: a filter's CAS counters take this map on every admitted request, and std's SipHash
    // was a third of each `proxy_set_shared_data`; the keys come from the proxy's own filters,
    // so there is no one to flood the map.
    map: HashMap<Vec<u8>, (Vec<u8>, u32), rustc_hash::FxBuildHasher>,
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

/// Where `proxy_on_queue_ready` notifications for one proxy's VMs are posted: the enqueuer may be
/// on any thread, the delivery happens on the owner's (cpp-host's `call_on_thread`).
#[derive(Default)]
pub(crate) struct Mailbox {
    /// Set while notifications wait, so that steps skip the lock otherwise.
    pending: AtomicBool,
    /// Set when the proxy is gone: later posts are dropped.
    closed: AtomicBool,
    /// (instance, root context, token), in enqueue order.
    ready: Mutex<Vec<(usize, u32, u32)>>,
    /// Called after each post, from the enqueuing thread, so the owner's event loop runs now.
    waker: Mutex<Option<Waker>>,
}

/// Wakes the thread that owns a proxy (see `Proxy::set_queue_waker`).
pub(crate) type Waker = Arc<dyn Fn() + Send + Sync>;

impl Mailbox {
    pub(crate) fn post(&self, instance: usize, root_context: u32, token: u32) {
        if self.closed.load(Ordering::Acquire) {
            return;
        }
        lock(&self.ready).push((instance, root_context, token));
        self.pending.store(true, Ordering::Release);
        let waker = lock(&self.waker).clone();
        if let Some(wake) = waker {
            wake();
        }
    }

    /// Whether notifications may be waiting (a plain load: `take` says for sure).
    #[inline]
    pub(crate) fn waiting(&self) -> bool {
        self.pending.load(Ordering::Acquire)
    }

    /// The notifications waiting, if any (a plain load first: this runs on every step).
    pub(crate) fn take(&self) -> Vec<(usize, u32, u32)> {
        if !self.pending.load(Ordering::Acquire) || !self.pending.swap(false, Ordering::AcqRel) {
            return Vec::new();
        }
        std::mem::take(&mut *lock(&self.ready))
    }

    /// Marks notifications as waiting again (the rest of a round cut short).
    pub(crate) fn repost(&self) {
        self.pending.store(true, Ordering::Release);
    }

    pub(crate) fn set_waker(&self, waker: Option<Waker>) {
        *lock(&self.waker) = waker;
    }

    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        lock(&self.ready).clear();
        *lock(&self.waker) = None;
    }
}

/// Who is told about new items: the last VM (and its root context) to register the queue.
#[derive(Clone)]
pub(crate) struct Registrant {
    pub mailbox: Arc<Mailbox>,
    pub instance: usize,
    pub root_context: u32,
}

#[cfg(test)]
impl Registrant {
    fn same(&self, other: &Registrant) -> bool {
        Arc::ptr_eq(&self.mailbox, &other.mailbox)
            && self.instance == other.instance
            && self.root_context == other.root_context
    }
}

struct Queue {
    registrant: Registrant,
    items: VecDeque<Vec<u8>>,
}

/// Items one queue holds at most: a queue nobody dequeues must not grow without bound. Past it,
/// an enqueue drops the oldest item (and is still Ok, as the filter cannot act on a refusal).
pub(crate) const MAX_QUEUE_ITEMS: usize = 100_000;

/// The shared queues of one process (one Envoy), as cpp-host's `SharedQueue`: by (vm_id, name)
/// across every VM of every thread, tokens process-wide from 1.
#[derive(Default)]
pub(crate) struct Queues {
    by_key: HashMap<(Vec<u8>, Vec<u8>), u32>,
    queues: HashMap<u32, Queue>,
    next_token: u32,
}

impl Queues {
    /// Registers (or re-registers) `name` of `vm_id`; the caller becomes the one notified, and
    /// items already queued are kept.
    pub(crate) fn register(&mut self, vm_id: &[u8], name: &[u8], registrant: Registrant) -> u32 {
        if let Some(&token) = self.by_key.get(&(vm_id.to_vec(), name.to_vec())) {
            if let Some(q) = self.queues.get_mut(&token) {
                q.registrant = registrant;
            }
            return token;
        }
        self.next_token = self.next_token.saturating_add(1);
        let token = self.next_token;
        self.by_key.insert((vm_id.to_vec(), name.to_vec()), token);
        self.queues.insert(token, Queue { registrant, items: VecDeque::new() });
        token
    }

    pub(crate) fn resolve(&self, vm_id: &[u8], name: &[u8]) -> Option<u32> {
        self.by_key.get(&(vm_id.to_vec(), name.to_vec())).copied()
    }

    /// Appends `value`; the registrant to notify (the caller posts it once the lock is let go),
    /// or NOT_FOUND for an unknown token.
    pub(crate) fn enqueue(&mut self, token: u32, value: &[u8]) -> Result<Registrant, i32> {
        let q = self.queues.get_mut(&token).ok_or(status::NOT_FOUND)?;
        if q.items.len() >= MAX_QUEUE_ITEMS {
            q.items.pop_front();
        }
        q.items.push_back(value.to_vec());
        Ok(q.registrant.clone())
    }

    /// Ok(Some(item)), Ok(None) when empty, Err(NOT_FOUND) for an unknown token.
    pub(crate) fn dequeue(&mut self, token: u32) -> Result<Option<Vec<u8>>, i32> {
        match self.queues.get_mut(&token) {
            Some(q) => Ok(q.items.pop_front()),
            None => Err(status::NOT_FOUND),
        }
    }

    /// Items waiting in `name` of `vm_id`, for inspection by the caller.
    pub(crate) fn depth(&self, vm_id: &[u8], name: &[u8]) -> Option<usize> {
        let token = self.resolve(vm_id, name)?;
        self.queues.get(&token).map(|q| q.items.len())
    }

    /// Whether `registrant` is the one notified for `token` (for tests).
    #[cfg(test)]
    fn notifies(&self, token: u32, registrant: &Registrant) -> bool {
        self.queues.get(&token).is_some_and(|q| q.registrant.same(registrant))
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
    fn last_registrant_is_notified_by_vm_id_and_name() {
        let mut q = Queues::default();
        let (ma, mb) = (Arc::new(Mailbox::default()), Arc::new(Mailbox::default()));
        let a = Registrant { mailbox: ma.clone(), instance: 1, root_context: 1 };
        let b = Registrant { mailbox: mb.clone(), instance: 0, root_context: 1 };
        let t = q.register(b"vm", b"q", a.clone());
        assert_eq!(q.register(b"vm", b"q", b.clone()), t);
        assert!(q.notifies(t, &b) && !q.notifies(t, &a));
        let other = q.register(b"other", b"q", a.clone());
        assert_ne!(other, t, "the same name in another vm_id is another queue");
        assert_eq!(q.resolve(b"vm", b"q"), Some(t));
        assert_eq!(q.resolve(b"", b"q"), None);
        let to = q.enqueue(t, b"x").map(|r| r.same(&b)).map_err(|_| ());
        assert_eq!(to, Ok(true));
        assert_eq!(q.dequeue(t), Ok(Some(b"x".to_vec())));
        assert_eq!(q.dequeue(t), Ok(None));
        assert_eq!(q.dequeue(99), Err(status::NOT_FOUND));
        assert!(q.enqueue(99, b"x").is_err());
    }

    #[test]
    fn a_mailbox_delivers_once_and_wakes_its_owner() {
        let mailbox = Mailbox::default();
        let woken = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let w = woken.clone();
        mailbox.set_waker(Some(Arc::new(move || {
            w.fetch_add(1, Ordering::Relaxed);
        })));
        assert!(mailbox.take().is_empty());
        mailbox.post(2, 1, 7);
        mailbox.post(2, 1, 7);
        assert_eq!(woken.load(Ordering::Relaxed), 2);
        assert_eq!(mailbox.take(), vec![(2, 1, 7), (2, 1, 7)]);
        assert!(mailbox.take().is_empty());
        mailbox.close();
        mailbox.post(2, 1, 7);
        assert!(mailbox.take().is_empty(), "a closed mailbox drops posts");
    }

    #[test]
    fn a_queue_nobody_reads_stays_bounded() {
        let mut q = Queues::default();
        let r = Registrant { mailbox: Arc::new(Mailbox::default()), instance: 0, root_context: 1 };
        let t = q.register(b"", b"q", r);
        for i in 0..MAX_QUEUE_ITEMS + 5 {
            assert!(q.enqueue(t, i.to_string().as_bytes()).is_ok());
        }
        assert_eq!(q.depth(b"", b"q"), Some(MAX_QUEUE_ITEMS));
        assert_eq!(q.dequeue(t), Ok(Some(b"5".to_vec())), "the oldest went first");
    }
}
