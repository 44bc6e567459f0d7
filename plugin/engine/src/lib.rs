//! ebb's fault engine: the plain-Rust heart of the ebb filter.
//!
//! It owns the plugin configuration and control API (contract 1 in DESIGN-NOTES: JSON types
//! shared by the filter, the harness and recovery tools), the fault kinds, expiry, blast-radius
//! caps, pool capacity state and the per-request decisions. It makes no proxy-wasm calls, so it
//! is tested natively; `ebb-plugin` binds it to the SDK, and the harness uses it to validate
//! commands and sign requests, never to predict behaviour (that comes from the .wasm).

pub mod ascii;
pub mod auth;
pub mod clip;
pub mod config;
pub mod control;
pub mod control_path;
pub mod duration;
pub mod engine;
pub mod error;
pub mod fault;
pub mod header_map;
pub mod keys;
pub mod metrics;
mod objects;
pub mod request;
pub mod rng;
pub mod state;

pub use config::{Config, ConfigError, PoolConfig, Protocol};
pub use duration::Duration;
pub use engine::{Action, Admission, Engine, Plan, PoolGauges, PoolStatus};
pub use error::CommandError;
pub use fault::{Fault, FaultRequest, FaultSpec};
pub use state::FaultSet;
