//! The private control socket: framing, the server, sessions and one type per command.
//!
//! Layered as in mini-redis: `protocol::frame` knows the framing, `connection` knows lines on a
//! stream, `cmd` knows the store; a command never touches a socket.

pub mod access;
pub mod cmd;
pub mod connection;
mod context;
pub mod server;
pub mod sessions;
pub mod socket;
pub mod table;

pub use context::{Context, Handles};
