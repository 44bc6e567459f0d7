//! The ebb proxy-wasm filter: partial drains, deployment aborts, aborts, delays and resets,
//! injected on command and always undone.
//!
//! The decisions live in `ebb-engine` (plain Rust, tested natively). This crate is the thin layer
//! that binds the engine to the Proxy-Wasm ABI v0.2.1 through the Rust SDK: it only builds for
//! wasm32 (`make wasm` writes `dist/ebb.wasm`).

#[cfg(target_arch = "wasm32")]
mod filter;

#[cfg(target_arch = "wasm32")]
proxy_wasm::main! {{
    // Only registration here: Envoy allows nothing but logging and WASI during _initialize.
    proxy_wasm::set_log_level(proxy_wasm::types::LogLevel::Info);
    proxy_wasm::set_root_context(|context_id| -> Box<dyn proxy_wasm::traits::RootContext> {
        Box::new(filter::Root::new(context_id))
    });
}}
