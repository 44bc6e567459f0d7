// A compiled filter (`Plugin`), shared by every VM of every proxy that runs it: validation
// (ABI marker, `memory` export), linking of every import, and pre-instantiation.

use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use wasmtime::{Config, Engine, ExternType, InstancePre, Linker, Module, Val, ValType};

use super::abi::{self, status};
use super::compile_cache::{CompileCache, Outcome};
use super::error::HostError;
use super::logs::LogLevel;
use super::state::{AbiVersion, HostState};
use super::wasi::{self, errno};

/// How often the watchdog thread bumps the engine's epoch; callback deadlines are counted in
/// these ticks.
pub(crate) const EPOCH_TICK: Duration = Duration::from_millis(10);

/// The process-wide engine: one compiler configuration for every filter, and one watchdog
/// thread that advances the epoch so that a looping guest is interrupted at its deadline.
fn engine() -> Result<&'static Engine, String> {
    static ENGINE: OnceLock<Result<Engine, String>> = OnceLock::new();
    ENGINE
        .get_or_init(|| {
            let mut config = Config::new();
            // Epoch interruption costs a load and compare at loop heads and function entries;
            // fuel would be deterministic but several times slower on the hot path.
            config.epoch_interruption(true);
            if perf_map_wanted(std::env::var_os("EBB_PERF_MAP").as_deref()) {
                // `perf record` then names the filter's functions (from the module's name section,
                // so build it unstripped) instead of bare JIT addresses.
                config.profiler(wasmtime::ProfilingStrategy::PerfMap);
            }
            let engine = Engine::new(&config).map_err(|e| format!("{e:?}"))?;
            let weak = engine.weak();
            std::thread::Builder::new()
                .name("ebb-epoch".into())
                .spawn(move || loop {
                    std::thread::sleep(EPOCH_TICK);
                    match weak.upgrade() {
                        Some(engine) => engine.increment_epoch(),
                        None => break,
                    }
                })
                .map_err(|e| format!("cannot start the epoch watchdog thread: {e}"))?;
            Ok(engine)
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// Whether `EBB_PERF_MAP` asks for `/tmp/perf-PID.map` (set, not empty and not off).
fn perf_map_wanted(value: Option<&std::ffi::OsStr>) -> bool {
    value.is_some_and(|v| !v.is_empty() && !super::compile_cache::is_off(v))
}

/// A loaded, validated and linked Proxy-Wasm module. Cheap to clone; load once and start as
/// many proxies as needed from it.
#[derive(Clone)]
pub struct Plugin {
    inner: Arc<PluginInner>,
}

struct PluginInner {
    name: Arc<str>,
    engine: Engine,
    pre: InstancePre<HostState>,
    abi: AbiVersion,
    warnings: Vec<String>,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin").field("name", &self.inner.name).field("abi", &self.inner.abi).finish()
    }
}

impl Plugin {
    /// Loads a module from a `.wasm` (or `.wat`-free binary) file; the filter is named after
    /// the file name.
    pub fn load(path: impl AsRef<Path>) -> Result<Plugin, HostError> {
        Plugin::load_cached(path, None)
    }

    /// [`Plugin::load`] through a compile cache (see [`Plugin::from_bytes_cached`]).
    pub fn load_cached(path: impl AsRef<Path>, cache: Option<&CompileCache>) -> Result<Plugin, HostError> {
        let path = path.as_ref();
        let name: Arc<str> = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| path.display().to_string())
            .into();
        let bytes = std::fs::read(path).map_err(|e| HostError::Read {
            filter: name.clone(),
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        Plugin::from_bytes_cached(&name, &bytes, cache)
    }

    /// Compiles and validates module bytes; `name` names the filter in every error and log.
    pub fn from_bytes(name: &str, bytes: &[u8]) -> Result<Plugin, HostError> {
        Plugin::from_bytes_cached(name, bytes, None)
    }

    /// [`Plugin::from_bytes`], the machine code taken from `cache` when it holds a verified
    /// entry for these bytes (and stored there otherwise). A cache that cannot be used adds a
    /// warning to [`Plugin::warnings`]; the filter loads either way.
    pub fn from_bytes_cached(name: &str, bytes: &[u8], cache: Option<&CompileCache>) -> Result<Plugin, HostError> {
        let filter: Arc<str> = name.into();
        let invalid = |message: String| HostError::InvalidModule { filter: filter.clone(), message };
        let engine = engine().map_err(|e| invalid(format!("cannot create the engine: {e}")))?;
        let mut warnings = Vec::new();
        let module = match cache {
            None => Module::new(engine, bytes),
            Some(cache) => cache.module(engine, bytes).map(|(module, outcome)| {
                if let Outcome::Compiled { warning: Some(w) } = outcome {
                    warnings.push(w);
                }
                module
            }),
        }
        .map_err(|e| invalid(format!("{e:?}")))?;

        let exports: Vec<String> = module.exports().map(|e| e.name().to_owned()).collect();
        let has = |n: &str| exports.iter().any(|e| e == n);
        let abi = if has("proxy_abi_version_0_2_1") {
            AbiVersion::V0_2_1
        } else if has("proxy_abi_version_0_2_0") {
            AbiVersion::V0_2_0
        } else if has("proxy_abi_version_0_1_0") {
            return Err(invalid(
                "Proxy-Wasm ABI 0.1.0 is not supported (export proxy_abi_version_0_2_1 or _0_2_0)".into(),
            ));
        } else {
            return Err(invalid(
                "missing or unknown Proxy-Wasm ABI version: no proxy_abi_version_0_2_1 or \
                 proxy_abi_version_0_2_0 export (is this a proxy-wasm filter?)"
                    .into(),
            ));
        };
        if !matches!(module.get_export("memory"), Some(ExternType::Memory(_))) {
            return Err(invalid("the module does not export its memory as `memory`".into()));
        }

        let mut linker: Linker<HostState> = Linker::new(engine);
        let env_names = abi::add_to_linker(&mut linker, abi).map_err(|e| invalid(format!("{e:?}")))?;
        let wasi_names = wasi::add_to_linker(&mut linker).map_err(|e| invalid(format!("{e:?}")))?;

        // Imports the host does not provide get a stub answering UNIMPLEMENTED (WASI: ENOSYS)
        // and a warning when called, so that a module linking more than it uses still loads —
        // Envoy's own host traps only when such a function is actually reached.
        for import in module.imports() {
            let (m, n) = (import.module(), import.name());
            let ty = match import.ty() {
                ExternType::Func(ty) => ty,
                other => return Err(invalid(format!("imports {m}.{n} ({other:?}), which the host does not provide"))),
            };
            let known = if m == "env" {
                env_names.contains(&n)
            } else if wasi::MODULES.contains(&m) {
                wasi_names.contains(&n)
            } else {
                false
            };
            if known {
                continue;
            }
            let is_wasi = wasi::MODULES.contains(&m);
            let code = if is_wasi { errno::NOSYS } else { status::UNIMPLEMENTED };
            let label = format!("{m}.{n}");
            warnings.push(format!("import {label} is not implemented by the host; calls return {code}"));
            let results: Vec<ValType> = ty.results().collect();
            linker
                .func_new(m, n, ty.clone(), move |mut caller, _params, out| {
                    let st = caller.data_mut();
                    if !st.warned.contains(&label) {
                        st.warned.push(label.clone());
                        st.log(LogLevel::Warn, format!("unimplemented hostcall {label} called; returning {code}"));
                    }
                    for (slot, ty) in out.iter_mut().zip(&results) {
                        *slot = match ty {
                            ValType::I32 => Val::I32(code),
                            ValType::I64 => Val::I64(i64::from(code)),
                            ValType::F32 => Val::F32(0),
                            ValType::F64 => Val::F64(0),
                            _ => Val::null_func_ref(),
                        };
                    }
                    Ok(())
                })
                .map_err(|e| invalid(format!("{e:?}")))?;
        }
        let pre = linker.instantiate_pre(&module).map_err(|e| invalid(format!("cannot link: {e:?}")))?;
        Ok(Plugin { inner: Arc::new(PluginInner { name: filter, engine: engine.clone(), pre, abi, warnings }) })
    }

    /// The filter's name (the file name, or the name given to [`Plugin::from_bytes`]).
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    pub(crate) fn name_arc(&self) -> Arc<str> {
        self.inner.name.clone()
    }

    /// The module's ABI version (from its marker export).
    pub fn abi_version(&self) -> AbiVersion {
        self.inner.abi
    }

    /// Load-time warnings (imports the host does not implement).
    pub fn warnings(&self) -> &[String] {
        &self.inner.warnings
    }

    pub(crate) fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    pub(crate) fn pre(&self) -> &InstancePre<HostState> {
        &self.inner.pre
    }
}
