//! The daemon's options, one struct per section of the config file: each field is a flag
//! of `diskd daemon` and a key of the file, defined and documented once (see
//! [`DaemonArgs`]).

use std::path::PathBuf;

use clap::{Args, Parser};

use super::{Cli, Command};
use serde::{Deserialize, Serialize};

/// The daemon's options: `diskd daemon`'s flags and the config file's keys, defined once.
///
/// Each section of the file is one struct below, and each field of it is both a flag
/// (clap) and a key (serde, unknown keys refused): its doc comment is the flag's help and
/// names the key and the default as `[KEY; default: X]`, from which the reference in
/// docs/configuration.md is generated (a test checks each default stated against what the
/// daemon does). A key the command line does not take is `#[arg(skip)]`; a switch
/// (`--no-gossip`) is a flag of its own that `switches_to_keys` turns into its key.
/// `config` reads the file into this struct, lays the flags over it (`layered` in
/// src/config/file.rs: a flag given wins) and checks and resolves the result into
/// `Config`. Adding an option: a field here, its check in `config`, and a regenerated
/// reference (docs/architecture.md).
#[derive(Debug, Default, Clone, Args, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[command(next_help_heading = "Daemon options (each overrides the config key in brackets)")]
#[serde(deny_unknown_fields)]
pub struct DaemonArgs {
    /// This machine's name in the fleet [node_name; default: the hostname].
    #[arg(long, value_name = "NAME")]
    pub node_name: Option<String>,
    /// The daemon's control socket; `--socket` is a flag of every command, the clients'
    /// too [socket; default: ~/.diskd-socket].
    #[arg(skip)]
    pub socket: Option<PathBuf>,
    /// Directory of the sled store [store; default: $XDG_DATA_HOME/diskd].
    #[arg(long, value_name = "DIR")]
    pub store: Option<PathBuf>,
    /// Make the control socket mode 0660 and owned by this group, whose members may run the
    /// read-only commands [socket_group; default: none, mode 0600].
    #[arg(long, value_name = "GROUP")]
    pub socket_group: Option<String>,
    /// `multicast:`.
    #[command(flatten)]
    #[serde(default)]
    pub multicast: MulticastArgs,
    /// `peers:`.
    #[command(flatten)]
    #[serde(default)]
    pub peers: PeersArgs,
    /// `watchers:`.
    #[command(flatten)]
    #[serde(default)]
    pub watchers: WatchersArgs,
    /// `ping:`.
    #[command(flatten)]
    #[serde(default)]
    pub ping: PingArgs,
    /// `security:`.
    #[command(flatten)]
    #[serde(default)]
    pub security: SecurityArgs,
    /// `mount:`.
    #[command(flatten)]
    #[serde(default)]
    pub mount: MountArgs,
    /// `gossip:`.
    #[command(flatten)]
    #[serde(default)]
    pub gossip: GossipArgs,
    /// `http:` (written with every key commented out, as in config/diskd.yaml, it is null:
    /// off).
    #[command(flatten)]
    #[serde(default, deserialize_with = "null_is_default")]
    pub http: HttpArgs,
    /// `log:`.
    #[command(flatten)]
    #[serde(default)]
    pub log: LogArgs,
    /// `control:`.
    #[command(flatten)]
    #[serde(default)]
    pub control: ControlArgs,
    /// Commands run on changes of the fleet picture (docs/hooks-and-events.md) [hooks;
    /// default: none].
    // Each entry is read on its own, so an error names `hooks[i]` and its key.
    #[arg(skip)]
    #[cfg_attr(test, schemars(with = "Option<Vec<serde_json::Value>>"))]
    pub hooks: Option<Vec<serde_yaml::Value>>,
    /// Hook commands running at once (1-256); more runs wait in a queue of 256
    /// [hooks_max_running; default: 4].
    #[arg(skip)]
    pub hooks_max_running: Option<usize>,
}

impl DaemonArgs {
    /// The options of `diskd daemon ARGS` (for tests and tools that start from a command
    /// line, as a user would write it).
    pub fn parse_from<I, T>(args: I) -> Result<DaemonArgs, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let argv = ["diskd".into(), "daemon".into()]
            .into_iter()
            .chain(args.into_iter().map(Into::into));
        match Cli::try_parse_from(argv)?.command {
            Some(Command::Daemon(a)) => Ok(*a),
            _ => unreachable!("`diskd daemon ...` parses as the daemon subcommand"),
        }
    }

    /// Turn the switches given on the command line into the keys they set, so that what
    /// is laid over the file says everything in keys.
    pub fn switches_to_keys(mut self) -> DaemonArgs {
        let set = |on: bool, key: &mut Option<bool>, value: bool| {
            if on {
                *key = Some(value);
            }
        };
        set(
            self.multicast.no_multicast,
            &mut self.multicast.enabled,
            false,
        );
        set(self.multicast.legacy_flag, &mut self.multicast.legacy, true);
        set(
            self.watchers.hardware.no_hardware,
            &mut self.watchers.hardware.enabled,
            false,
        );
        set(
            self.watchers.smart.no_smart,
            &mut self.watchers.smart.enabled,
            false,
        );
        set(self.mount.allow_mount, &mut self.mount.enabled, true);
        set(self.gossip.no_gossip, &mut self.gossip.enabled, false);
        self
    }
}

/// `http:` written with nothing under it (`http:` and commented-out keys) is null.
fn null_is_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// `multicast:`: the LAN's group, and how this daemon announces on it.
#[derive(Debug, Default, Clone, Args, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct MulticastArgs {
    /// Whether to open the multicast sockets [multicast.enabled; default: true].
    #[arg(skip)]
    pub enabled: Option<bool>,
    /// Do not open the multicast sockets (gossip only) [multicast.enabled: false].
    #[arg(id = "no-multicast", long = "no-multicast")]
    #[serde(skip)]
    pub no_multicast: bool,
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
    /// Largest datagram sent; bigger inventories go in chunks [multicast.max_datagram; default: 1400].
    #[arg(long, value_name = "BYTES")]
    pub max_datagram: Option<usize>,
    /// Whether to speak the Perl diskd wire format too [multicast.legacy; default: false].
    #[arg(skip)]
    pub legacy: Option<bool>,
    /// Also speak the Perl diskd wire format [multicast.legacy: true].
    #[arg(id = "legacy", long = "legacy")]
    #[serde(skip)]
    pub legacy_flag: bool,
}

/// `peers:`: how many peers and disks are remembered.
#[derive(Debug, Default, Clone, Args, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct PeersArgs {
    /// Most peers remembered; at the cap newcomers are refused and counted, and no peer
    /// with disks is ever forgotten to make room [peers.max; default: 16384].
    #[arg(id = "max-peers", long = "max-peers", value_name = "N")]
    pub max: Option<usize>,
    /// Disk records of all peers together (present and last known); at the cap an
    /// inventory that adds disks is refused and counted [peers.max_records; default:
    /// 1048576].
    #[arg(skip)]
    pub max_records: Option<usize>,
}

/// `watchers:`: the disk (blkid), mount table and hardware (sysfs) watchers.
#[derive(Debug, Default, Clone, Args, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct WatchersArgs {
    /// `watchers.disks:`.
    #[command(flatten)]
    #[serde(default)]
    pub disks: DisksArgs,
    /// `watchers.mounts:`.
    #[command(flatten)]
    #[serde(default)]
    pub mounts: MountsArgs,
    /// `watchers.hardware:`.
    #[command(flatten)]
    #[serde(default)]
    pub hardware: HardwareArgs,
    /// `watchers.smart:`.
    #[command(flatten)]
    #[serde(default)]
    pub smart: SmartArgs,
}

/// `watchers.disks:`: blkid and which devices it reports.
#[derive(Debug, Default, Clone, Args, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct DisksArgs {
    /// blkid program or argv; one word runs `WORD -c /dev/null -o export`
    /// [watchers.disks.command; default: blkid].
    #[arg(id = "blkid", long = "blkid", value_name = "CMD", value_parser = parse_command)]
    pub command: Option<CommandLine>,
    /// Disk scan period [watchers.disks.interval; default: 60s].
    #[arg(id = "disk-interval", long = "disk-interval", value_name = "DURATION")]
    pub interval: Option<String>,
    /// A disk scan running longer is killed [watchers.disks.timeout; default: 15s].
    #[arg(id = "disk-timeout", long = "disk-timeout", value_name = "DURATION")]
    pub timeout: Option<String>,
    /// Only watch devices matching this glob; repeatable [watchers.disks.include; default:
    /// all].
    #[arg(id = "include-device", long = "include-device", value_name = "GLOB")]
    pub include: Option<Vec<String>>,
    /// Never watch devices matching this glob; repeatable [watchers.disks.exclude].
    #[arg(id = "exclude-device", long = "exclude-device", value_name = "GLOB")]
    pub exclude: Option<Vec<String>>,
}

/// A command as the file may write it: one string (split into words as the control socket
/// splits a line: a shell's quoting, without a shell) or a list of words.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(untagged)]
pub enum CommandLine {
    /// `blkid -c /dev/null`.
    One(String),
    /// `[blkid, -c, /dev/null]`.
    Many(Vec<String>),
}

fn parse_command(s: &str) -> Result<CommandLine, std::convert::Infallible> {
    Ok(CommandLine::One(s.to_string()))
}

/// `watchers.mounts:`.
#[derive(Debug, Default, Clone, Args, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct MountsArgs {
    /// Mount table scan period [watchers.mounts.interval; default: 10s].
    #[arg(
        id = "mount-interval",
        long = "mount-interval",
        value_name = "DURATION"
    )]
    pub interval: Option<String>,
}

/// `watchers.hardware:`.
#[derive(Debug, Default, Clone, Args, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct HardwareArgs {
    /// Whether to read hardware identity (size, model, serial) from sysfs; without it no
    /// disk is known to be blank [watchers.hardware.enabled; default: true].
    #[arg(skip)]
    pub enabled: Option<bool>,
    /// Do not read hardware identity (size, model, serial) from sysfs; no blank disks
    /// either [watchers.hardware.enabled: false].
    #[arg(id = "no-hardware", long = "no-hardware")]
    #[serde(skip)]
    pub no_hardware: bool,
    /// Hardware (sysfs) scan period; block device events trigger one at once as well
    /// [watchers.hardware.interval; default: 60s].
    #[arg(
        id = "hardware-interval",
        long = "hardware-interval",
        value_name = "DURATION"
    )]
    pub interval: Option<String>,
    /// Where sysfs is mounted [watchers.hardware.sysfs; default: /sys].
    #[arg(id = "sysfs", long = "sysfs", value_name = "DIR")]
    pub sysfs: Option<PathBuf>,
}

/// `watchers.smart:`: SMART health of whole disks, from smartctl.
#[derive(Debug, Default, Clone, Args, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct SmartArgs {
    /// Whether to read SMART health with smartctl [watchers.smart.enabled; default: on
    /// when smartctl is found, or when a command is named].
    #[arg(skip)]
    pub enabled: Option<bool>,
    /// Do not read SMART health [watchers.smart.enabled: false].
    #[arg(id = "no-smart", long = "no-smart")]
    #[serde(skip)]
    pub no_smart: bool,
    /// smartctl program or argv (smartmontools 7 or later; the watcher adds `--json -a -n
    /// standby DEVICE`) [watchers.smart.command; default: smartctl].
    #[arg(id = "smartctl", long = "smartctl", value_name = "CMD", value_parser = parse_command)]
    pub command: Option<CommandLine>,
    /// How often each disk is read again; a plugged disk is read at once, a disk in
    /// standby is not woken [watchers.smart.interval; default: 30m].
    #[arg(
        id = "smart-interval",
        long = "smart-interval",
        value_name = "DURATION"
    )]
    pub interval: Option<String>,
    /// A smartctl run longer than this is killed with its process group
    /// [watchers.smart.timeout; default: 30s].
    #[arg(skip)]
    pub timeout: Option<String>,
}

/// `ping:`.
#[derive(Debug, Default, Clone, Args, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct PingArgs {
    /// Answer at most one ping per this period [ping.min_interval; default: 5s].
    #[arg(id = "ping-interval", long = "ping-interval", value_name = "DURATION")]
    pub min_interval: Option<String>,
}

/// `security:`: the fleet's keys.
#[derive(Debug, Default, Clone, Args, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct SecurityArgs {
    /// Key file; repeatable, the first one signs [security.key_files; default: none:
    /// datagrams unauthenticated, with a warning].
    #[arg(id = "key-file", long = "key-file", value_name = "FILE")]
    pub key_files: Option<Vec<PathBuf>>,
    /// Drop authenticated datagrams whose timestamp is further than this from our clock
    /// [security.max_clock_skew; default: 5m].
    #[arg(long, value_name = "DURATION")]
    pub max_clock_skew: Option<String>,
}

/// `mount:`: mounting disks for peers and reaching them from here.
#[derive(Debug, Default, Clone, Args, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct MountArgs {
    /// Whether peers' mount requests are served [mount.enabled; default: false].
    #[arg(skip)]
    pub enabled: Option<bool>,
    /// Allow mount requests [mount.enabled: true].
    #[arg(id = "allow-mount", long = "allow-mount")]
    #[serde(skip)]
    pub allow_mount: bool,
    /// Where diskd mounts disks [mount.root; default: /srv/diskd].
    #[arg(id = "mount-root", long = "mount-root", value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// UUID or label glob that may be mounted; repeatable [mount.allow].
    #[arg(id = "mount-allow", long = "mount-allow", value_name = "GLOB")]
    pub allow: Option<Vec<String>>,
    /// Argv template to reach a remote mount [mount.attach_command; default: sshfs
    /// {addr}:{path} {target}].
    #[arg(long, value_name = "TEMPLATE")]
    pub attach_command: Option<String>,
}

/// `gossip:`: unicast gossip across routers.
#[derive(Debug, Default, Clone, Args, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct GossipArgs {
    /// Whether the gossip listener runs when keys are configured [gossip.enabled; default:
    /// true].
    #[arg(skip)]
    pub enabled: Option<bool>,
    /// Do not run the gossip listener even though keys are configured [gossip.enabled: false].
    #[arg(id = "no-gossip", long = "no-gossip")]
    #[serde(skip)]
    pub no_gossip: bool,
    /// Join the fleet through this gossip member; repeatable; names are resolved again on
    /// every retry. Needs --key-file [gossip.seeds].
    #[arg(id = "seed", long = "seed", value_name = "HOST[:PORT]")]
    pub seeds: Option<Vec<String>>,
    /// UDP port of the gossip listener [gossip.port; default: 32004].
    #[arg(id = "gossip-port", long = "gossip-port", value_name = "PORT")]
    pub port: Option<u16>,
    /// Address the gossip listener binds [gossip.listen; default: all addresses].
    #[arg(
        id = "gossip-listen",
        long = "gossip-listen",
        value_name = "ADDR[:PORT]"
    )]
    pub listen: Option<String>,
    /// Address other members reach us at [gossip.advertise; default: the address of
    /// multicast.interface, else the route to the first seed].
    #[arg(
        id = "gossip-advertise",
        long = "gossip-advertise",
        value_name = "ADDR[:PORT]"
    )]
    pub advertise: Option<String>,
    /// Gossip protocol period [gossip.interval; default: 500ms].
    #[arg(
        id = "gossip-interval",
        long = "gossip-interval",
        value_name = "DURATION"
    )]
    pub interval: Option<String>,
}

/// `http:`: the read-only web page, /metrics and the JSON API.
#[derive(Debug, Default, Clone, Args, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct HttpArgs {
    /// Serve the read-only web page, /metrics and the JSON API on ADDR:PORT (port 0: any
    /// free port, shown by `status`); any address but loopback needs --http-token-file
    /// [http.listen; default: off].
    #[arg(id = "http", long = "http", value_name = "ADDR:PORT")]
    pub listen: Option<String>,
    /// File (mode 0600) with the bearer token every HTTP request must send as
    /// `Authorization: Bearer TOKEN` [http.token_file].
    #[arg(id = "http-token-file", long = "http-token-file", value_name = "FILE")]
    pub token_file: Option<PathBuf>,
}

/// `log:`.
#[derive(Debug, Default, Clone, Args, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct LogArgs {
    /// Log filter when RUST_LOG is not set (error, warn, info, debug, trace).
    #[arg(id = "log-level", long = "log-level", value_name = "LEVEL")]
    #[serde(skip)]
    pub level: Option<String>,
    /// `text` for people, `json` for log shippers: one object per line with timestamp,
    /// level, target, message and fields [log.format; default: text].
    #[arg(id = "log-format", long = "log-format", value_name = "FORMAT")]
    pub format: Option<String>,
}

/// `control:`: who may use the control socket, and how much of it.
#[derive(Debug, Default, Clone, Args, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct ControlArgs {
    /// Members of this group may also run mount, umount, refresh, announce, ping and debug
    /// over the socket [control.admin_group; default: only root and the daemon's user].
    #[arg(id = "admin-group", long = "admin-group", value_name = "GROUP")]
    pub admin_group: Option<String>,
    /// At most this many control sessions per uid at once; root, the daemon's user and
    /// admins are not held to it [control.max_sessions_per_user; default: 32].
    #[arg(id = "max-sessions-per-user", long = "max-sessions-per-user", value_name = "N", value_parser = parse_yaml_scalar)]
    #[cfg_attr(test, schemars(with = "Option<serde_json::Value>"))]
    pub max_sessions_per_user: Option<serde_yaml::Value>,
}

/// A flag's text read as YAML reads a scalar (`32` a number, `x` a string), so that a bad
/// value gets the same message from the flag as from the file.
fn parse_yaml_scalar(s: &str) -> Result<serde_yaml::Value, std::convert::Infallible> {
    // `null` (`~`) given as a flag is a value to refuse, not "no flag".
    Ok(serde_yaml::from_str::<serde_yaml::Value>(s)
        .ok()
        .filter(|v| !v.is_null())
        .unwrap_or_else(|| serde_yaml::Value::String(s.to_string())))
}
