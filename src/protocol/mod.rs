//! The control protocol, shared by the server (`control`) and the client (`client`): the
//! framing of a session and the definition of every command.
//!
//! Each command is defined once, in [`commands`], as clap types: the socket parser, `help`,
//! the `diskd` subcommands, the man page and the shell completions are all generated from
//! that one definition, so they cannot drift apart.

pub mod commands;
pub mod frame;

pub use commands::{Request, SessionCommand};
