//! diskd: where is this disk right now, and where was it last seen?
//!
//! Data flows one way: the watchers (crate `diskd-watchers`) observe this machine, the
//! `inventory` writer puts what they find into the `store`, the `peer` layer shares it and
//! learns the fleet's, and the `control` server answers from the store; `hooks`, beside
//! it, runs the operator's commands on changes of the fleet picture, and `http` (opt-in)
//! serves the same answers to browsers and Prometheus. Shared vocabulary
//! lives in the leaves (`model`, `telemetry`, `protocol`); `daemon` wires the services and
//! is imported by nobody. The `client` talks to the control socket; `flags` and `config`
//! turn the command line and the YAML file into one validated configuration before
//! anything starts. docs/architecture.md draws the picture.
// No unsafe code, but for one audited block: a hook's supplementary groups are set between
// fork and exec (`hooks::run::run_as`), which std offers no stable safe call for yet.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod client;
pub mod config;
pub mod control;
pub mod daemon;
pub mod flags;
pub mod generate;
pub mod hooks;
pub mod http;
pub mod inventory;
pub mod model;
pub mod mount;
pub mod peer;
pub mod protocol;
pub mod secret;
pub mod store;
pub mod telemetry;
#[cfg(test)]
mod test_support;
pub mod view;
