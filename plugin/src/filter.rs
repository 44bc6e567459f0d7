// The root context of each VM: reads the configuration (or disarms), keeps this VM's view of the
// proxy's faults in step with shared data, expires faults and publishes gauges from on_tick, and
// runs the timers of delayed and queued requests. HTTP and TCP contexts live in `http` and `tcp`.

mod control;
mod http;
mod metrics;
mod shared;
mod tcp;

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, UNIX_EPOCH};

use ebb_engine::metrics::{GlobalMetric, PoolMetric};
use ebb_engine::state::config_hash;
use ebb_engine::Engine;
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext, StreamContext};
use proxy_wasm::types::ContextType;

use metrics::Metrics;

/// How often a VM with delayed or queued requests wakes, in ms: the delay precision.
const FAST_TICK_MS: u64 = 10;

/// Milliseconds since the Unix epoch on the proxy's clock (simulated in the harness).
pub(crate) fn now_ms() -> u64 {
    hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_millis() as u64)
}

/// What a VM's root shares with its HTTP and TCP contexts.
pub(crate) struct Vm {
    /// None while the configuration is invalid: the filter is disarmed and passes traffic.
    pub engine: Option<Engine>,
    pub metrics: Metrics,
    /// CAS of the fault set this VM last read; a different CAS means a command landed.
    pub faults_cas: u32,
    /// Requests of this VM waiting on a timer: delays, and queues in front of a drained pool.
    pub pending: Vec<http::Pending>,
    /// Shared-data key of each pool's in-flight counter, by pool index.
    pub slot_keys: Vec<String>,
    /// The tick period now armed, and the configured one, in ms.
    pub tick_ms: u64,
    pub base_tick_ms: u64,
}

impl Vm {
    /// Reads the shared fault set if it changed since the last read.
    pub fn sync(&mut self) {
        let Some(engine) = self.engine.as_mut() else { return };
        let (_, cas) = shared::read(shared::FAULTS_KEY);
        if cas != self.faults_cas {
            let (set, cas) = shared::read_faults();
            engine.set_faults(set);
            self.faults_cas = cas;
        }
    }

    /// Re-arms this VM's tick: fast while requests wait on a timer, the configured period
    /// otherwise. Callable from any context of the VM (the period belongs to its root).
    pub fn retick(&mut self) {
        let want = if self.pending.is_empty() { self.base_tick_ms } else { FAST_TICK_MS.min(self.base_tick_ms) };
        if want != self.tick_ms && hostcalls::set_tick_period(Duration::from_millis(want)).is_ok() {
            self.tick_ms = want;
        }
    }
}

pub struct Root {
    context_id: u32,
    vm: Rc<RefCell<Vm>>,
    kind: ContextType,
}

impl Root {
    pub fn new(context_id: u32) -> Self {
        Root {
            context_id,
            vm: Rc::new(RefCell::new(Vm {
                engine: None,
                metrics: Metrics::default(),
                faults_cas: 0,
                pending: Vec::new(),
                slot_keys: Vec::new(),
                tick_ms: 0,
                base_tick_ms: 1000,
            })),
            kind: ContextType::HttpContext,
        }
    }

    /// Sets the gauges every VM agrees on (so a `record` from any of them is the same value).
    fn publish(&self, now: u64) {
        let vm = self.vm.borrow();
        let Some(engine) = vm.engine.as_ref() else {
            vm.metrics.set(GlobalMetric::Armed, 0);
            return;
        };
        vm.metrics.set(GlobalMetric::Armed, 1);
        vm.metrics.set(GlobalMetric::ActiveFaults, engine.active(now).count() as u64);
        for i in 0..engine.config().pools.len() {
            if let Some(s) = engine.pool_status(i, now) {
                vm.metrics.pool_set(i, PoolMetric::ExpectedHosts, u64::from(s.expected_hosts));
                vm.metrics.pool_set(i, PoolMetric::AvailableHosts, u64::from(s.available_hosts));
                vm.metrics.pool_set(i, PoolMetric::Capacity, s.capacity);
                vm.metrics.pool_set(i, PoolMetric::DeployInProgress, u64::from(s.deploy_in_progress));
            }
        }
    }

    /// Removes expired faults from the shared set. Only the VM whose write lands counts and logs
    /// them, so the expiry counter is not multiplied by the number of VMs.
    fn expire(&mut self, now: u64) {
        let has_expired = {
            let vm = self.vm.borrow();
            vm.engine.as_ref().is_some_and(|e| e.faults().faults.iter().any(|f| f.expired(now)))
        };
        if !has_expired {
            return;
        }
        if let Ok(Some(gone)) = shared::update_faults(|set| {
            let gone = set.prune(now);
            (!gone.is_empty()).then_some(gone)
        }) {
            let vm = self.vm.borrow();
            vm.metrics.add(GlobalMetric::FaultsExpired, gone.len() as i64);
            for f in &gone {
                log::info!("ebb: fault {} ({}) expired", f.id, f.spec.name());
            }
        }
        self.vm.borrow_mut().sync();
    }
}

impl Context for Root {}

impl RootContext for Root {
    fn on_vm_start(&mut self, _vm_configuration_size: usize) -> bool {
        true
    }

    fn on_configure(&mut self, plugin_configuration_size: usize) -> bool {
        let root_id = hostcalls::get_property(vec!["plugin_root_id"]).ok().flatten().unwrap_or_default();
        self.kind = if root_id.ends_with(b"tcp") { ContextType::StreamContext } else { ContextType::HttpContext };
        let (bytes, parsed) = control::read_configuration(plugin_configuration_size);
        let now = now_ms();
        let config = match parsed {
            Ok(config) => config,
            Err(e) => {
                // Disarmed, never broken: traffic passes untouched and the metric says why to look.
                log::error!("ebb: invalid configuration, filter disarmed (traffic passes untouched): {e}");
                let mut vm = self.vm.borrow_mut();
                vm.engine = None;
                vm.metrics = Metrics::define(&[]);
                drop(vm);
                self.publish(now);
                return true;
            }
        };
        control::log_key_verdict(&config);
        let names: Vec<String> = config.pools.iter().map(|p| p.name.clone()).collect();
        let hash = config_hash(&bytes);
        let installed =
            shared::update_faults(|set| (set.config_hash != hash).then(|| set.apply_config(&config, hash, now)));
        match installed {
            Ok(Some(refused)) => {
                for (i, e) in refused {
                    log::warn!("ebb: static fault faults[{i}] not installed: {e}");
                }
            }
            Ok(None) => {}
            Err(status) => log::warn!("ebb: could not install static faults ({status:?}); will retry on reconfigure"),
        }
        {
            let mut vm = self.vm.borrow_mut();
            let seed = now ^ (u64::from(self.context_id) << 32) ^ hash;
            vm.base_tick_ms = config.tick.as_millis();
            vm.engine = Some(Engine::new(config, seed));
            vm.metrics = Metrics::define(&names);
            vm.slot_keys = names.iter().map(|n| shared::counter_key(n)).collect();
            vm.faults_cas = u32::MAX;
            vm.sync();
        }
        log::info!("ebb: armed with {} pool(s)", names.len());
        self.publish(now);
        self.vm.borrow_mut().retick();
        true
    }

    fn on_tick(&mut self) {
        let now = now_ms();
        self.vm.borrow_mut().sync();
        self.expire(now);
        self.publish(now);
        http::run_pending(&self.vm, now);
        self.vm.borrow_mut().retick();
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(http::Http::new(context_id, self.vm.clone())))
    }

    fn create_stream_context(&self, _context_id: u32) -> Option<Box<dyn StreamContext>> {
        Some(Box::new(tcp::Tcp::new(self.vm.clone())))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(self.kind)
    }
}
