// The network (TCP) context: counts connections of TCP pools, refuses those over a drained
// pool's capacity, and closes the blackholed or reset share of new connections.

use std::borrow::Cow;
use std::cell::RefCell;
use std::rc::Rc;

use ebb_engine::metrics::PoolMetric;
use ebb_engine::request::Request;
use ebb_engine::{Action as Verdict, Admission, FaultSpec, Protocol};
use proxy_wasm::traits::{Context, StreamContext};
use proxy_wasm::types::{Action, PeerType};

use super::http::{property_port, property_string};
use super::metrics::increment;
use super::slots::{self, Slot, Taken};
use super::{hostcall, now_ms, Vm};

struct Conn;

impl Request for Conn {
    fn header(&mut self, _name: &str) -> Option<Cow<'_, str>> {
        None
    }

    fn cluster(&mut self) -> Option<String> {
        property_string(b"xds\0cluster_name").or_else(|| property_string(b"cluster_name"))
    }

    fn port(&mut self) -> Option<u16> {
        property_port()
    }
}

pub(crate) struct Tcp {
    vm: Rc<RefCell<Vm>>,
    /// The capacity slot the connection holds.
    counted: Option<Slot>,
    /// The pool's `completed_total` to count once the connection ends (see `http::ReqState`).
    completes: Option<u32>,
}

impl Tcp {
    pub fn new(vm: Rc<RefCell<Vm>>) -> Self {
        Tcp { vm, counted: None, completes: None }
    }

    /// Counts the connection's end once, whichever of close and log comes first.
    fn close(&mut self) {
        increment(self.completes.take(), 1);
        if let Some(slot) = self.counted.take() {
            slot.free();
        }
    }
}

impl Context for Tcp {}

impl StreamContext for Tcp {
    fn on_new_connection(&mut self) -> Action {
        let now = now_ms();
        let refuse = {
            let mut guard = self.vm.borrow_mut();
            let vm = &mut *guard;
            let Some(engine) = vm.engine.as_mut() else { return Action::Continue };
            let pool = engine.match_pool(Protocol::Tcp, &mut Conn);
            if let Some(pool) = pool {
                self.completes = vm.metrics.pool_id(pool, PoolMetric::Completed);
                vm.metrics.pool_add(pool, PoolMetric::Requests, 1);
            }
            let plan = engine.decide_tcp(now, pool);
            match plan.action {
                Verdict::Close { fault } => {
                    let reset =
                        engine.faults().faults.iter().any(|f| f.id == fault && matches!(f.spec, FaultSpec::Reset(_)));
                    if let Some(pool) = pool {
                        vm.metrics.pool_add(pool, if reset { PoolMetric::Reset } else { PoolMetric::Blackholed }, 1);
                    }
                    true
                }
                _ => match plan.admission {
                    Admission::Free => false,
                    Admission::Limited { pool: index, capacity, .. } => {
                        match slots::take(&vm.metrics, index, capacity) {
                            Taken::Slot(slot) => {
                                self.counted = Some(slot);
                                false
                            }
                            Taken::Uncounted => false,
                            Taken::Full => {
                                vm.metrics.pool_add(index, PoolMetric::Shed, 1);
                                true
                            }
                        }
                    }
                },
            }
        };
        // Stop here so tcp_proxy never connects upstream, then close the client; if the host
        // refuses the close, let the connection through rather than hold it open for ever.
        if refuse && hostcall::close_downstream() {
            return Action::Pause;
        }
        Action::Continue
    }

    fn on_downstream_close(&mut self, _peer_type: PeerType) {
        self.close();
    }

    fn on_log(&mut self) {
        self.close();
    }
}
