//! Every command-line flag of `diskd`, defined and documented in this one place.
//!
//! The daemon's flags mirror the config keys (docs/configuration.md) one to one; `config.rs` turns
//! them plus the YAML file into one validated `Config`. Options are `Option<_>` here so that
//! "not given on the command line" can fall back to the file, then to the default.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::protocol::Request;

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

/// Flags of `diskd daemon`. Each one overrides the config key named in its help.
#[derive(Debug, Default, Args)]
#[command(next_help_heading = "Daemon options (each overrides the config key in brackets)")]
pub struct DaemonArgs {
    /// This machine's name in the fleet [node_name; default: the hostname].
    #[arg(long, value_name = "NAME")]
    pub node_name: Option<String>,
    /// Directory of the sled store [store; default: $XDG_DATA_HOME/diskd].
    #[arg(long, value_name = "DIR")]
    pub store: Option<PathBuf>,
    /// Multicast group, IPv4 or IPv6 [multicast.group; default: 230.1.2.3].
    #[arg(long, value_name = "ADDR")]
    pub group: Option<String>,
    /// UDP port [multicast.port; default: 32003].
    #[arg(long, value_name = "PORT")]
    pub port: Option<u16>,
    /// Interface to multicast on, by name or address [multicast.interface; default: the
    /// system's choice].
    #[arg(long, value_name = "IF")]
    pub interface: Option<String>,
    /// Multicast TTL / hop limit: hops + 1 to cross routers, 0 keeps datagrams on this
    /// machine [multicast.ttl; default: 1].
    #[arg(long, value_name = "N")]
    pub ttl: Option<u32>,
    /// Anti-entropy announce period [multicast.announce_interval; default: 60s].
    #[arg(long, value_name = "DURATION")]
    pub announce_interval: Option<String>,
    /// A peer not heard for this long is not live [multicast.peer_expiry; default: 3 x announce interval].
    #[arg(long, value_name = "DURATION")]
    pub peer_expiry: Option<String>,
    /// Most peers remembered; at the cap newcomers are refused and counted, and no peer
    /// with disks is ever forgotten to make room [peers.max; default: 16384].
    #[arg(long, value_name = "N")]
    pub max_peers: Option<usize>,
    /// Largest datagram sent; bigger inventories go in chunks [multicast.max_datagram; default: 1400].
    #[arg(long, value_name = "BYTES")]
    pub max_datagram: Option<usize>,
    /// Also speak the Perl diskd wire format [multicast.legacy: true].
    #[arg(long)]
    pub legacy: bool,
    /// blkid program or argv; one word runs `WORD -c /dev/null -o export`
    /// [watchers.disks.command; default: blkid].
    #[arg(long, value_name = "CMD")]
    pub blkid: Option<String>,
    /// Disk scan period [watchers.disks.interval; default: 60s].
    #[arg(long, value_name = "DURATION")]
    pub disk_interval: Option<String>,
    /// A disk scan running longer is killed [watchers.disks.timeout; default: 15s].
    #[arg(long, value_name = "DURATION")]
    pub disk_timeout: Option<String>,
    /// Only watch devices matching this glob; repeatable [watchers.disks.include; default:
    /// all].
    #[arg(long, value_name = "GLOB")]
    pub include_device: Vec<String>,
    /// Never watch devices matching this glob; repeatable [watchers.disks.exclude].
    #[arg(long, value_name = "GLOB")]
    pub exclude_device: Vec<String>,
    /// Mount table scan period [watchers.mounts.interval; default: 10s].
    #[arg(long, value_name = "DURATION")]
    pub mount_interval: Option<String>,
    /// Do not read hardware identity (size, model, serial) from sysfs; no blank disks
    /// either [watchers.hardware.enabled: false].
    #[arg(long)]
    pub no_hardware: bool,
    /// Hardware (sysfs) scan period; block device events trigger one at once as well
    /// [watchers.hardware.interval; default: 60s].
    #[arg(long, value_name = "DURATION")]
    pub hardware_interval: Option<String>,
    /// Where sysfs is mounted [watchers.hardware.sysfs; default: /sys].
    #[arg(long, value_name = "DIR")]
    pub sysfs: Option<PathBuf>,
    /// Answer at most one ping per this period [ping.min_interval; default: 5s].
    #[arg(long, value_name = "DURATION")]
    pub ping_interval: Option<String>,
    /// Key file; repeatable, the first one signs [security.key_files; default: none:
    /// datagrams unauthenticated, with a warning].
    #[arg(long, value_name = "FILE")]
    pub key_file: Vec<PathBuf>,
    /// Drop authenticated datagrams whose timestamp is further than this from our clock
    /// [security.max_clock_skew; default: 5m].
    #[arg(long, value_name = "DURATION")]
    pub max_clock_skew: Option<String>,
    /// Allow mount requests [mount.enabled: true].
    #[arg(long)]
    pub allow_mount: bool,
    /// Where diskd mounts disks [mount.root; default: /srv/diskd].
    #[arg(long, value_name = "DIR")]
    pub mount_root: Option<PathBuf>,
    /// UUID or label glob that may be mounted; repeatable [mount.allow].
    #[arg(long, value_name = "GLOB")]
    pub mount_allow: Vec<String>,
    /// Argv template to reach a remote mount [mount.attach_command; default: sshfs
    /// {addr}:{path} {target}].
    #[arg(long, value_name = "TEMPLATE")]
    pub attach_command: Option<String>,
    /// Do not open the multicast sockets (gossip only) [multicast.enabled: false].
    #[arg(long)]
    pub no_multicast: bool,
    /// Do not run the gossip listener even though keys are configured [gossip.enabled: false].
    #[arg(long)]
    pub no_gossip: bool,
    /// Join the fleet through this gossip member; repeatable; names are resolved again on
    /// every retry. Needs --key-file [gossip.seeds].
    #[arg(long, value_name = "HOST[:PORT]")]
    pub seed: Vec<String>,
    /// UDP port of the gossip listener [gossip.port; default: 32004].
    #[arg(long, value_name = "PORT")]
    pub gossip_port: Option<u16>,
    /// Address the gossip listener binds [gossip.listen; default: all addresses].
    #[arg(long, value_name = "ADDR[:PORT]")]
    pub gossip_listen: Option<String>,
    /// Address other members reach us at [gossip.advertise; default: the address of
    /// multicast.interface, else the route to the first seed].
    #[arg(long, value_name = "ADDR[:PORT]")]
    pub gossip_advertise: Option<String>,
    /// Gossip protocol period [gossip.interval; default: 500ms].
    #[arg(long, value_name = "DURATION")]
    pub gossip_interval: Option<String>,
    /// Serve the read-only web page, /metrics and the JSON API on ADDR:PORT (port 0: any
    /// free port, shown by `status`); any address but loopback needs --http-token-file
    /// [http.listen; default: off].
    #[arg(long = "http", value_name = "ADDR:PORT")]
    pub http: Option<String>,
    /// File (mode 0600) with the bearer token every HTTP request must send as
    /// `Authorization: Bearer TOKEN` [http.token_file].
    #[arg(long, value_name = "FILE")]
    pub http_token_file: Option<PathBuf>,
    /// Log filter when RUST_LOG is not set (error, warn, info, debug, trace).
    #[arg(long, value_name = "LEVEL")]
    pub log_level: Option<String>,
    /// `text` for people, `json` for log shippers: one object per line with timestamp,
    /// level, target, message and fields [log.format; default: text].
    #[arg(long, value_name = "FORMAT")]
    pub log_format: Option<String>,
    /// Make the control socket mode 0660 and owned by this group, whose members may run the
    /// read-only commands [socket_group; default: none, mode 0600].
    #[arg(long, value_name = "GROUP")]
    pub socket_group: Option<String>,
    /// Members of this group may also run mount, umount, refresh, announce, ping and debug
    /// over the socket [control.admin_group; default: only root and the daemon's user].
    #[arg(long, value_name = "GROUP")]
    pub admin_group: Option<String>,
    /// At most this many control sessions per uid at once; root, the daemon's user and
    /// admins are not held to it [control.max_sessions_per_user; default: 32].
    #[arg(long, value_name = "N")]
    pub max_sessions_per_user: Option<String>,
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
