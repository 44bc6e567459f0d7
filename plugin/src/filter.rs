// The root context of each VM: reads the configuration (or disarms), keeps this VM's view of the
// proxy's faults in step with shared data, expires faults and publishes gauges every `tick`, and
// runs the timers of delayed and queued requests. HTTP and TCP contexts live in `http` and `tcp`.

mod control;
mod hostcall;
mod http;
mod metrics;
mod shared;
mod slots;
mod tcp;

use std::cell::RefCell;
use std::rc::Rc;

use ebb_engine::metrics::{GlobalMetric, PoolMetric};
use ebb_engine::state::config_hash;
use ebb_engine::Engine;
use proxy_wasm::traits::{Context, HttpContext, RootContext, StreamContext};
use proxy_wasm::types::ContextType;

use metrics::Metrics;

pub(crate) use hostcall::now_ms;

/// The longest a delayed or queued request waits past its time, in ms: the period of an HTTP
/// root's timer. The timer is armed once and never changed (Kong's module traps on a second
/// `proxy_set_tick_period_milliseconds`), so it runs at this period from the start; the ticks in
/// between housekeeping rounds cost no hostcall when nothing waits.
const DELAY_PRECISION_MS: u64 = 10;

/// The tick of a configuration the filter could not read (and so of a disarmed filter).
const DEFAULT_TICK_MS: u64 = 1000;

/// What a VM's root shares with its HTTP and TCP contexts.
pub(crate) struct Vm {
    /// None while the configuration is invalid: the filter is disarmed and passes traffic.
    pub engine: Option<Engine>,
    pub metrics: Metrics,
    /// CAS of the fault set this VM last read; a different CAS means a command landed.
    pub faults_cas: u32,
    /// Requests of this VM waiting on a timer: delays, and queues in front of a drained pool.
    pub pending: Vec<http::Pending>,
    /// Slots taken on the timer for requests that waited (context id, slot), returned when the
    /// request ends; a request admitted at once keeps its slot in its own context.
    pub late_slots: Vec<(u32, slots::Slot)>,
    /// Every request reads two headers or more (see `http::Lazy`): fetch its header map at once.
    pub headers_at_once: bool,
}

impl Vm {
    /// Reads the shared fault set if it changed since the last read (one read either way).
    pub fn sync(&mut self) {
        let Some(engine) = self.engine.as_mut() else { return };
        // A refused read keeps the current view; the refusal is logged once.
        let Ok((bytes, cas)) = shared::read(shared::FAULTS_KEY) else { return };
        if cas != self.faults_cas {
            engine.set_faults(shared::parse_faults(&bytes));
            self.faults_cas = cas;
        }
    }
}

/// How the root's timer is armed: once, with `period_ms`; housekeeping (sync, expiry, gauges)
/// runs every `every` ticks, that is every configured `tick`.
struct Timer {
    /// The period armed, in ms; 0 until the host accepted one.
    period_ms: u64,
    every: u64,
    /// Ticks left until the next housekeeping round.
    left: u64,
}

impl Timer {
    /// The period a root of `kind` wants: TCP contexts never wait on a timer, HTTP ones hold
    /// delayed and queued requests unless `limits.max_delay` is 0 (no delay or queue fits).
    fn period_for(kind: ContextType, tick_ms: u64, holds: bool) -> u64 {
        match kind {
            ContextType::HttpContext if holds => tick_ms.min(DELAY_PRECISION_MS),
            _ => tick_ms,
        }
        .max(1)
    }

    /// Arms the timer for `tick_ms` the first time; afterwards only the housekeeping interval
    /// follows a new `tick` (at the period armed first, which a host may not let us change).
    fn configure(&mut self, kind: ContextType, tick_ms: u64, holds: bool) {
        let want = Timer::period_for(kind, tick_ms, holds);
        if self.period_ms == 0 {
            if hostcall::set_tick_period(u32::try_from(want).unwrap_or(u32::MAX)) {
                self.period_ms = want;
            }
        } else if want != self.period_ms {
            log::info!(
                "ebb: the timer stays at {} ms (armed once per root context); `tick` is kept as a multiple of it",
                self.period_ms
            );
        }
        self.every = tick_ms.checked_div(self.period_ms).unwrap_or(1).max(1);
        self.left = self.every;
    }

    /// Counts a tick; true when a housekeeping round is due.
    fn due(&mut self) -> bool {
        self.left = self.left.saturating_sub(1);
        if self.left == 0 {
            self.left = self.every;
            return true;
        }
        false
    }
}

/// Whether every request of `config` reads two headers or more: `:path` for the control API or a
/// pool's path prefix, and `:authority` for a pool's match.
/// Eight bytes of the host's randomness (WASI `random_get`: the OS's in Envoy, a seeded stream per
/// VM in ebb's host), read once per configuration; 0, with one log line, if the host refuses.
fn vm_entropy() -> u64 {
    let mut bytes = [0u8; 8];
    match getrandom::fill(&mut bytes) {
        Ok(()) => u64::from_le_bytes(bytes),
        Err(e) => {
            log::warn!("ebb: no randomness from the host ({e}); percentages roll from the clock alone");
            0
        }
    }
}

fn headers_at_once(config: &ebb_engine::Config) -> bool {
    let pools = |f: fn(&ebb_engine::PoolConfig) -> bool| config.pools.iter().any(f);
    let path = config.control.is_some() || pools(|p| p.matcher.path_prefix.is_some());
    path && pools(|p| p.matcher.authority.is_some())
}

pub struct Root {
    context_id: u32,
    vm: Rc<RefCell<Vm>>,
    kind: ContextType,
    timer: Timer,
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
                late_slots: Vec::new(),
                headers_at_once: false,
            })),
            kind: ContextType::HttpContext,
            timer: Timer { period_ms: 0, every: 1, left: 1 },
        }
    }

    /// Sets the gauges every VM agrees on (so a `record` from any of them is the same value),
    /// `in_flight` included: it is read back from the proxy-wide counters, not kept per VM.
    fn publish(&self, now: u64) {
        let vm = self.vm.borrow();
        let Some(engine) = vm.engine.as_ref() else {
            vm.metrics.set(GlobalMetric::Armed, 0);
            return;
        };
        vm.metrics.set(GlobalMetric::Armed, 1);
        vm.metrics.set(GlobalMetric::ActiveFaults, engine.active(now).count() as u64);
        for i in 0..engine.config().pools.len() {
            if let Some(s) = engine.pool_gauges(i, now) {
                vm.metrics.pool_set(i, PoolMetric::ExpectedHosts, u64::from(s.expected_hosts));
                vm.metrics.pool_set(i, PoolMetric::AvailableHosts, u64::from(s.available_hosts));
                vm.metrics.pool_set(i, PoolMetric::Capacity, s.capacity);
                vm.metrics.pool_set(i, PoolMetric::DeployInProgress, u64::from(s.deploy_in_progress));
            }
            if let Some(n) = vm.metrics.in_flight(i) {
                vm.metrics.pool_set(i, PoolMetric::InFlight, n);
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
            vm.metrics.add(GlobalMetric::FaultsExpired, gone.len() as u64);
            for f in &gone {
                log::info!("ebb: fault {} ({}) expired", f.id, f.spec.name());
            }
        }
        self.vm.borrow_mut().sync();
    }

    /// A tick's work: housekeeping when `due`, waiting requests when `waiting`.
    #[inline(never)]
    fn work(&mut self, due: bool, waiting: bool) {
        let now = now_ms();
        if due {
            self.housekeeping(now);
        }
        if waiting {
            http::run_pending(&self.vm, now);
        }
    }

    /// Sync, expiry and gauges: once per configured `tick`.
    fn housekeeping(&mut self, now: u64) {
        self.vm.borrow_mut().sync();
        self.expire(now);
        self.publish(now);
    }
}

impl Context for Root {}

impl RootContext for Root {
    fn on_vm_start(&mut self, _vm_configuration_size: usize) -> bool {
        true
    }

    fn on_configure(&mut self, plugin_configuration_size: usize) -> bool {
        let root_id = hostcall::property(b"plugin_root_id").unwrap_or_default();
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
                vm.headers_at_once = false;
                drop(vm);
                self.timer.configure(self.kind, DEFAULT_TICK_MS, true);
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
            Err(e) => log::warn!("ebb: could not install static faults ({e:?}); will retry on reconfigure"),
        }
        let tick_ms = config.tick.as_millis();
        let holds = config.limits.max_delay.as_millis() > 0;
        let at_once = headers_at_once(&config);
        {
            let mut vm = self.vm.borrow_mut();
            // Every VM of a proxy, and every proxy of a fleet, configures in the same millisecond
            // with the same root context id and configuration: without the host's randomness
            // they would all roll the same numbers, and a 1% abort would hit the n-th request
            // of every worker at once.
            let seed = now ^ (u64::from(self.context_id) << 32) ^ hash ^ vm_entropy();
            vm.engine = Some(Engine::new(config, seed));
            vm.metrics = Metrics::define(&names);
            vm.headers_at_once = at_once;
            vm.faults_cas = u32::MAX;
            vm.sync();
        }
        log::info!("ebb: armed with {} pool(s)", names.len());
        self.timer.configure(self.kind, tick_ms, holds);
        self.publish(now);
        true
    }

    fn on_tick(&mut self) {
        let due = self.timer.due();
        let waiting = !self.vm.borrow().pending.is_empty();
        // Most ticks of an HTTP root find nothing to do: no hostcall at all then, and none of
        // the work's stack frame either (it lives in `work`, kept out of line).
        if due || waiting {
            self.work(due, waiting);
        }
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
