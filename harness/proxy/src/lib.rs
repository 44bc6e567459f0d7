//! `ebb proxy`: an Envoy v3 bootstrap served on real sockets, every Wasm filter in it run through
//! ebb's host (`ebb-host`) the way Envoy runs it. This crate holds the bootstrap subset it serves
//! (`bootstrap`), refusing any field it does not serve by its YAML path.

pub mod bootstrap;
mod yaml;

pub use bootstrap::{Bootstrap, BootstrapError};
