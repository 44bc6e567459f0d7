//! ebb's integration tests: one binary, a module per topic, helpers in `util`.
//! Run with `cargo test -p ebb-tests`; the test filters under `tests/filters/` (and the
//! `ebb` command, and the ebb filter) are built from source by the first test that needs them.

mod util;

mod bodies;
mod calls;
mod cli;
mod conn_manager;
mod ebb_filter;
mod failures;
mod foreign;
mod grpc_replies;
mod grpc_streams;
mod headers;
mod lifecycle;
mod local_reply;
mod metrics;
mod modules;
mod profiles;
mod properties;
mod request_cli;
mod shared;
mod singleton;
mod tcp;
mod ticks;
mod trap_policy;
mod upstreams;
