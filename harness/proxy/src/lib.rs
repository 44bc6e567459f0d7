//! `ebb proxy`: an Envoy v3 bootstrap served on real sockets, every Wasm filter in it run through
//! ebb's host (`ebb-host`) the way Envoy runs it: one VM per worker thread plus the main thread's,
//! shared data and stats per vm_id across them, ticks from the real clock.
//!
//! `bootstrap` is the subset of Envoy's configuration it serves (any other field is refused by its
//! YAML path); `route` is what the connection manager decides before filters run; `direct` the
//! connection manager and router for a listener with no Wasm filter; `cluster` the upstreams;
//! `pool` a worker's upstream connections; `worker` a worker thread's event loop; `body` the
//! bodies it streams; `admin` the main thread; `server` start/stop.

mod admin;
mod body;
pub mod bootstrap;
mod cluster;
mod direct;
mod dns;
mod filters;
mod pool;
mod route;
mod server;
pub mod stats;
mod worker;
mod yaml;

pub use bootstrap::{Bootstrap, BootstrapError};
pub use server::{Options, Server, StartError};
