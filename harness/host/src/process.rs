// One Envoy process as the host plays it: what every filter configuration in it shares whatever
// its vm_id (the shared-queue registry), so that separate simulated Envoys stay apart.

use std::sync::{Arc, Mutex};

use super::shared::Queues;

/// One proxy process (one Envoy). Filters started in the same `Process` (`Proxy::new_in`, or
/// `Proxy::new_beside` a proxy of it) reach each other's shared queues by (vm_id, name), from
/// any thread, as Envoy's process-wide registry does; `Proxy::new` starts a process of its own.
#[derive(Clone, Default)]
pub struct Process {
    pub(crate) queues: Arc<Mutex<Queues>>,
}

impl Process {
    pub fn new() -> Process {
        Process::default()
    }
}

impl std::fmt::Debug for Process {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Process").finish_non_exhaustive()
    }
}
