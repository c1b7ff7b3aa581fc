//! Every command-line flag of `diskd`, defined and documented in this one place: the
//! commands and the flags every command takes here, the daemon's options in `options`.
//!
//! The daemon's flags mirror the config keys (docs/configuration.md) one to one; `config`
//! turns them plus the YAML file into one validated `Config`. Options are `Option<_>` so
//! that "not given on the command line" can fall back to the file, then to the default.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::protocol::Request;

mod options;
pub use options::*;

/// Where is this disk right now, and where was it last seen?
///
/// diskd runs on every machine of a fleet, inventories the local disks, shares the inventory
/// with the other daemons and answers queries over a private unix socket.
///
/// Without a subcommand, diskd is an interactive client of the local daemon (a REPL with
/// history in ~/.diskd_history); when stdin is not a terminal it runs the commands it reads,
/// one per line.
#[derive(Debug, Parser)]
#[command(
    name = "diskd",
    version = env!("DISKD_LONG_VERSION"),
    propagate_version = true,
    max_term_width = 100
)]
pub struct Cli {
    /// `--socket` and `--config`.
    #[command(flatten)]
    pub global: Global,

    /// Run the daemon in the foreground (same as `diskd daemon`).
    #[arg(short = 'd', long = "daemon")]
    pub daemon_flag: bool,

    /// What to do; without one, start the interactive client.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The options every command takes, the daemon and the clients alike: where the socket is
/// (a client finds it from the config file too).
#[derive(Debug, Default, Clone, clap::Args)]
pub struct Global {
    /// The daemon's control socket [socket; default: ~/.diskd-socket].
    #[arg(long, global = true, env = "DISKD_SOCKET", value_name = "PATH")]
    pub socket: Option<PathBuf>,

    /// A YAML config file (see config/diskd.yaml for every key).
    #[arg(long, global = true, env = "DISKD_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// The one-shot client commands alone, with the same global options: what a script calling
/// `diskd query` in a loop runs through, without building the daemon's seventy flags (the
/// biggest part of parsing, which is the biggest part of a one-shot's own start-up). Any
/// command line it does not take whole (help, a bad flag, the daemon, the REPL) goes to
/// [`Cli`], which has the last word on errors and help.
#[derive(Debug, Parser)]
#[command(name = "diskd", version = env!("DISKD_LONG_VERSION"), max_term_width = 100)]
pub struct ClientCli {
    /// `--socket` and `--config`.
    #[command(flatten)]
    pub global: Global,
    /// The request.
    #[command(subcommand)]
    pub request: Request,
}

impl ClientCli {
    /// The one-shot request of this command line, if it is exactly one (else `None`:
    /// parse it with [`Cli`]).
    pub fn try_from_env() -> Option<ClientCli> {
        let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
        // Help and version go through `Cli`, so they print the whole program's.
        if args.iter().skip(1).any(|a| {
            let a = a.as_encoded_bytes();
            a == b"-h" || a == b"--help" || a == b"-V" || a == b"--version" || a == b"help"
        }) {
            return None;
        }
        ClientCli::try_parse_from(args).ok()
    }
}

/// The subcommands. One-shot commands exit 0 on success, 1 when nothing matched or the
/// request was refused, 2 on bad usage, 3 when the daemon could not be reached or failed.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon in the foreground; logs go to stderr. Never forks.
    Daemon(Box<DaemonArgs>),
    /// The control commands, as on the socket (defined once in `protocol::commands`).
    #[command(flatten)]
    Request(Request),
    /// Write a fresh random 32-byte key (base64, mode 0600) for --key-file; to stdout
    /// without FILE. Never overwrites an existing file.
    Keygen {
        /// Where to write the key.
        file: Option<PathBuf>,
    },
    /// Print shell completions for SHELL to stdout, generated from these flag definitions.
    ///
    /// For example: `diskd completions bash >
    /// /usr/local/share/bash-completion/completions/diskd`, `diskd completions zsh >
    /// "${fpath[1]}/_diskd"`, `diskd completions fish > ~/.config/fish/completions/diskd.fish`.
    Completions {
        /// The shell to write completions for.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) to stdout, generated from these flag definitions.
    ///
    /// For example: `diskd man > /usr/local/share/man/man1/diskd.1`, or read it now with
    /// `diskd man | man -l -`.
    Man,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn clap_definitions_are_consistent() {
        Cli::command().debug_assert();
    }
}
