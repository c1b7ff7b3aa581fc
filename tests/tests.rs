//! diskd's integration tests: one test binary (as ripgrep does), one module per area, all
//! sharing the harness in `util`, so the harness is compiled once and not once per file.
//!
//! Tests that need root (loop devices, mounts, network namespaces, sshd) are
//! `#[ignore = "needs root"]`: a normal `cargo test --workspace` lists them as ignored, and
//! root (CI) runs them with `cargo test --workspace -- --include-ignored`. Each calls
//! `util::require_root()` first, so one run without root fails instead of passing.

mod util;

mod access;
mod client;
mod daemon;
mod devices;
pub mod hardware;
pub mod health;
mod hooks;
mod hostile;
mod http;
mod lab_events;
mod lab_gossip;
mod lab_health;
mod lab_hooks;
mod lab_legacy;
mod lab_mount;
mod lab_peers;
mod lab_security;
mod packaging;
mod store_full;
mod wait_events;
