//! One validated `Config` built from defaults, the YAML file and the flags, in that order.
//!
//! Everything that can be wrong with the configuration is found here, before anything
//! starts, and reported as one line naming the key (exit 2), so a daemon never runs
//! half-configured.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::flags::DaemonArgs;
use crate::model::FleetEventKind;

/// Default multicast group, the same as the Perl diskd so both find each other.
pub const DEFAULT_GROUP: &str = "230.1.2.3";
/// Default UDP port, the same as the Perl diskd.
pub const DEFAULT_PORT: u16 = 32003;
/// Default socket path, relative to the home directory, the same as the Perl diskd.
pub const DEFAULT_SOCKET: &str = "~/.diskd-socket";
/// Default UDP port of the unicast gossip listener (next to the multicast port).
pub const DEFAULT_GOSSIP_PORT: u16 = 32004;
/// Default argv template for `mount --attach`.
pub const DEFAULT_ATTACH: &str = "sshfs {addr}:{path} {target}";

/// A configuration problem: one line naming the key or path.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

fn err(msg: impl Into<String>) -> ConfigError {
    ConfigError(msg.into())
}

/// The daemon's complete, validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// This machine's name in the fleet.
    pub node_name: String,
    /// Control socket path.
    pub socket: PathBuf,
    /// Directory of the sled store.
    pub store: PathBuf,
    /// Peer-layer settings.
    pub multicast: Multicast,
    /// Disk watcher settings.
    pub disks: DiskSettings,
    /// Mount table scan period.
    pub mount_interval: Duration,
    /// The sysfs hardware watcher, when enabled.
    pub hardware: Option<HardwareSettings>,
    /// Answer at most one ping per this period.
    pub ping_min_interval: Duration,
    /// Key files; the first signs.
    pub key_files: Vec<PathBuf>,
    /// Authenticated datagrams whose timestamp is further than this from our clock are
    /// dropped (bounds how old a replayed capture can be).
    pub max_clock_skew: Duration,
    /// Mount-request policy.
    pub mount: MountSettings,
    /// Unicast gossip (routed networks).
    pub gossip: Gossip,
    /// How much of the fleet is remembered.
    pub peers: PeerLimits,
    /// Commands run on changes of the fleet picture, in the order written (YAML only).
    pub hooks: Vec<Hook>,
    /// At most this many hook commands run at once; the others wait in a queue.
    pub hooks_max_running: usize,
    /// The control socket's group (`socket_group`), by name: resolved at start (see
    /// [`Config::access`]), so a config naming a group this machine lacks still loads.
    pub socket_group: Option<String>,
    /// The group that may run the commands that change something (`control.admin_group`).
    pub admin_group: Option<String>,
    /// At most this many control sessions open at once per uid
    /// (`control.max_sessions_per_user`), so that one user cannot fill the session table;
    /// root, the daemon's user and admins are not held to it.
    pub max_sessions_per_user: usize,
    /// How the daemon's log lines are written.
    pub log_format: LogFormat,
    /// What the configuration is odd about without being wrong; logged at start (the
    /// log is set up from the configuration, so it cannot be written while loading).
    pub warnings: Vec<String>,
    /// The read-only HTTP listener (dashboards, metrics, JSON API); `None`: off.
    pub http: Option<HttpSettings>,
}

/// The HTTP listener. Off unless asked for: it exposes the fleet's inventory, so on any
/// address but loopback it requires a bearer token (see [`HttpSettings::token_file`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpSettings {
    /// Address and port to bind; port 0 picks a free one (`status` shows which).
    pub listen: SocketAddr,
    /// File holding the bearer token every request must present. Required unless
    /// `listen` is a loopback address; when given, required on loopback too.
    pub token_file: Option<PathBuf>,
}

/// Unicast gossip settings. Gossip runs only with keys: on a routed network an unsealed
/// inventory would be readable (and forgeable) by anyone on the path.
#[derive(Debug, Clone)]
pub struct Gossip {
    /// Whether the gossip listener runs (keys configured and not turned off).
    pub enabled: bool,
    /// Where to join: `HOST[:PORT]`, resolved again on every retry (names may move).
    pub seeds: Vec<Seed>,
    /// Address and port the listener binds.
    pub listen: SocketAddr,
    /// The address other members reach us at; `None`: found at start (see the peer layer).
    pub advertise: Option<SocketAddr>,
    /// Protocol period: membership gossip runs at this pace and probes at twice it.
    pub interval: Duration,
}

/// A gossip seed as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seed {
    /// Host name or address.
    pub host: String,
    /// UDP port.
    pub port: u16,
}

impl std::fmt::Display for Seed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl Seed {
    /// Parse `HOST`, `HOST:PORT`, `ADDR`, `ADDR:PORT` or `[V6]:PORT`.
    pub fn parse(text: &str, default_port: u16) -> Result<Seed, String> {
        let text = text.trim();
        if let Ok(sa) = text.parse::<SocketAddr>() {
            return Ok(Seed {
                host: sa.ip().to_string(),
                port: sa.port(),
            });
        }
        if let Ok(ip) = text
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
        {
            return Ok(Seed {
                host: ip.to_string(),
                port: default_port,
            });
        }
        let (host, port) = match text.rsplit_once(':') {
            Some((h, p)) => (
                h,
                p.parse::<u16>()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(|| format!("{text:?}: {p:?} is not a port (1-65535)"))?,
            ),
            None => (text, default_port),
        };
        let valid = !host.is_empty()
            && host.len() <= 253
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_');
        if !valid {
            return Err(format!("{text:?} is not HOST[:PORT]"));
        }
        Ok(Seed {
            host: host.to_string(),
            port,
        })
    }
}

/// Multicast settings (used by the peer layer).
#[derive(Debug, Clone)]
pub struct Multicast {
    /// Whether the multicast sockets are opened at all (off: gossip only).
    pub enabled: bool,
    /// Group address.
    pub group: IpAddr,
    /// UDP port.
    pub port: u16,
    /// Interface name or address; `None` lets the system choose.
    pub interface: Option<String>,
    /// TTL / hop limit.
    pub ttl: u32,
    /// Anti-entropy announce period.
    pub announce_interval: Duration,
    /// A peer not heard for this long is not live.
    pub peer_expiry: Duration,
    /// Also speak the Perl wire format.
    pub legacy: bool,
    /// Largest datagram we send; bigger inventories go as several chunks.
    pub max_datagram: usize,
}

/// DiskWatcher settings.
#[derive(Debug, Clone)]
pub struct DiskSettings {
    /// blkid argv.
    pub command: Vec<String>,
    /// Scan period.
    pub interval: Duration,
    /// Scan timeout.
    pub timeout: Duration,
    /// Device globs to include (empty: all).
    pub include: Vec<String>,
    /// Device globs to exclude.
    pub exclude: Vec<String>,
}

/// A group, by the name the operator gave and the id it resolved to at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupRef {
    /// The name, for messages.
    pub name: String,
    /// The numeric id.
    pub gid: u32,
}

/// Access to the control socket.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Access {
    /// The socket's group (mode 0660); none: mode 0600, only the daemon's user.
    pub socket_group: Option<GroupRef>,
    /// A group whose members may run the commands that change something.
    pub admin_group: Option<GroupRef>,
}

/// The daemon's log format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// Human text (ANSI colours on a terminal).
    #[default]
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

impl LogFormat {
    /// From the `log.format` value.
    pub fn parse(key: &str, v: &str) -> Result<LogFormat, ConfigError> {
        match v {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(err(format!(
                "{key}: {other:?} is not a log format (text or json)"
            ))),
        }
    }
}

/// Resolve a group name (or a numeric id) through the system's group database.
fn system_group(key: &str, name: &str) -> Result<GroupRef, ConfigError> {
    let found = match name.parse::<u32>() {
        Ok(gid) => nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(gid)),
        Err(_) => nix::unistd::Group::from_name(name),
    };
    match found {
        Ok(Some(g)) => Ok(GroupRef {
            name: g.name,
            gid: g.gid.as_raw(),
        }),
        Ok(None) => Err(err(format!("{key}: no group named {name:?}"))),
        Err(e) => Err(err(format!("{key}: cannot look up group {name:?}: {e}"))),
    }
}

/// Hardware watcher settings (it shares the disk watcher's include/exclude globs, so one
/// list says which devices this machine reports).
#[derive(Debug, Clone)]
pub struct HardwareSettings {
    /// Scan period (kernel events trigger a scan at once as well).
    pub interval: Duration,
    /// Where sysfs is mounted (another tree for containers and tests).
    pub sysfs: PathBuf,
}

/// Mount settings.
#[derive(Debug, Clone)]
pub struct MountSettings {
    /// Whether mount requests are honoured at all.
    pub enabled: bool,
    /// Where disks get mounted.
    pub root: PathBuf,
    /// The UUID/label globs that may be mounted, compiled with the device globs' rules
    /// (`*` stops at `/`).
    pub allow_set: globset::GlobSet,
    /// Argv template for `--attach`.
    pub attach_command: String,
}

/// How many peers, and how many of their disk records, a daemon remembers. The peer layer
/// refuses what does not fit, and never forgets a peer that has disks to make room: a
/// flood of forged newcomers must not erase the last known locations the fleet keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerLimits {
    /// `peers.max`: most peers remembered.
    pub max: usize,
    /// `peers.max_records`: most disk records of all peers together.
    pub max_records: usize,
}

impl PeerLimits {
    /// Room for a fleet of 10,000 machines, with margin for replaced ones.
    pub const DEFAULT_MAX: usize = 16_384;
    /// 64 disks for each of 16,384 peers.
    pub const DEFAULT_MAX_RECORDS: usize = 1_048_576;
    /// The largest `peers.max` (its rate-limit maps are sized from it).
    pub const LARGEST_MAX: usize = 1_048_576;

    fn from_file(f: FilePeers, args: &DaemonArgs) -> Result<PeerLimits, ConfigError> {
        let max = args.max_peers.or(f.max).unwrap_or(Self::DEFAULT_MAX);
        if !(1..=Self::LARGEST_MAX).contains(&max) {
            return Err(err(format!(
                "peers.max: {max} is not in 1-{} (peers remembered)",
                Self::LARGEST_MAX
            )));
        }
        let max_records = f.max_records.unwrap_or(Self::DEFAULT_MAX_RECORDS);
        if max_records == 0 {
            return Err(err("peers.max_records: must be at least 1"));
        }
        Ok(PeerLimits { max, max_records })
    }
}

impl Default for PeerLimits {
    fn default() -> Self {
        PeerLimits {
            max: Self::DEFAULT_MAX,
            max_records: Self::DEFAULT_MAX_RECORDS,
        }
    }
}

// ---- the file, as written by people: every key optional, unknown keys rejected ----

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    node_name: Option<String>,
    socket: Option<PathBuf>,
    store: Option<PathBuf>,
    #[serde(default)]
    multicast: FileMulticast,
    #[serde(default)]
    watchers: FileWatchers,
    #[serde(default)]
    ping: FilePing,
    #[serde(default)]
    security: FileSecurity,
    #[serde(default)]
    mount: FileMount,
    #[serde(default)]
    gossip: FileGossip,
    /// `http:` with every key commented out (as in config/diskd.yaml) is null: off.
    http: Option<FileHttp>,
    /// Each entry is read on its own (see [`hooks_settings`]), so an error names
    /// `hooks[i]` and its key.
    hooks: Option<Vec<serde_yaml::Value>>,
    hooks_max_running: Option<usize>,
    socket_group: Option<String>,
    #[serde(default)]
    control: FileControl,
    #[serde(default)]
    log: FileLog,
    #[serde(default)]
    peers: FilePeers,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FilePeers {
    max: Option<usize>,
    max_records: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileControl {
    admin_group: Option<String>,
    /// Read as any YAML value, so a string or a negative number gets a message naming
    /// the key and the range rather than serde's.
    max_sessions_per_user: Option<serde_yaml::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileLog {
    format: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileGossip {
    enabled: Option<bool>,
    seeds: Option<Vec<String>>,
    port: Option<u16>,
    listen: Option<String>,
    advertise: Option<String>,
    interval: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileHttp {
    listen: Option<String>,
    token_file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileMulticast {
    enabled: Option<bool>,
    group: Option<String>,
    port: Option<u16>,
    interface: Option<String>,
    ttl: Option<u32>,
    announce_interval: Option<String>,
    peer_expiry: Option<String>,
    legacy: Option<bool>,
    max_datagram: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileWatchers {
    #[serde(default)]
    disks: FileDisks,
    #[serde(default)]
    mounts: FileMounts,
    #[serde(default)]
    hardware: FileHardware,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileHardware {
    enabled: Option<bool>,
    interval: Option<String>,
    sysfs: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDisks {
    command: Option<StringOrList>,
    interval: Option<String>,
    timeout: Option<String>,
    include: Option<Vec<String>>,
    exclude: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileMounts {
    interval: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FilePing {
    min_interval: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSecurity {
    key_files: Option<Vec<PathBuf>>,
    max_clock_skew: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileMount {
    enabled: Option<bool>,
    root: Option<PathBuf>,
    allow: Option<Vec<String>>,
    attach_command: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum StringOrList {
    One(String),
    Many(Vec<String>),
}

impl StringOrList {
    fn into_argv(self, key: &str) -> Result<Vec<String>, ConfigError> {
        match self {
            StringOrList::One(s) => split_words(key, &s),
            StringOrList::Many(v) => Ok(v),
        }
    }
}

const KEY_BLKID: &str = "watchers.disks.command";

/// Split a command line into words as a shell would (quotes keep a path with spaces one
/// word), without ever running a shell.
fn split_words(key: &str, s: &str) -> Result<Vec<String>, ConfigError> {
    shell_words::split(s).map_err(|e| err(format!("{key}: {e}")))
}

/// Compile globs as every pattern of diskd is compiled (the watchers' device globs too):
/// `*` does not cross `/`. A bad pattern names its key.
fn glob_set(key: &str, globs: &[String]) -> Result<globset::GlobSet, ConfigError> {
    let mut set = globset::GlobSetBuilder::new();
    for g in globs {
        let glob = globset::GlobBuilder::new(g)
            .literal_separator(true)
            .build()
            .map_err(|e| err(format!("{key}: {g:?}: {e}")))?;
        set.add(glob);
    }
    set.build().map_err(|e| err(format!("{key}: {e}")))
}

/// Read only the `socket` key of a config file, for the client: a client started with
/// `--config` talks to the daemon that config describes. Errors are reported, not ignored.
pub fn socket_from_file(path: &Path) -> Result<Option<PathBuf>, ConfigError> {
    Ok(load_file(path)?.socket.map(|p| expand_home(&p)))
}

/// The socket path a client uses when nothing else names one.
pub fn default_socket() -> PathBuf {
    expand_home(Path::new(DEFAULT_SOCKET))
}

/// The system service's socket (config/diskd-system.yaml, the Debian package).
pub const SYSTEM_SOCKET: &str = "/run/diskd/diskd.sock";

/// The sockets a client tries, in order, when nothing names one: the user's own daemon's
/// (`~/.diskd-socket`), then the system daemon's.
pub fn client_default_sockets() -> Vec<PathBuf> {
    vec![default_socket(), PathBuf::from(SYSTEM_SOCKET)]
}

fn load_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| err(format!("config {}: {e}", path.display())))?;
    if text.trim().is_empty() {
        return Ok(FileConfig::default());
    }
    serde_yaml::from_str(&text).map_err(|e| err(format!("config {}: {e}", path.display())))
}

/// Expand a leading `~/` with `$HOME`.
pub fn expand_home(p: &Path) -> PathBuf {
    match p.strip_prefix("~") {
        Ok(rest) => home_dir().join(rest),
        Err(_) => p.to_path_buf(),
    }
}

fn home_dir() -> PathBuf {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/root"))
}

fn default_store() -> PathBuf {
    match std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        Some(d) => PathBuf::from(d).join("diskd"),
        None => home_dir().join(".local/share/diskd"),
    }
}

fn duration(key: &str, value: &str) -> Result<Duration, ConfigError> {
    let d = humantime::parse_duration(value.trim())
        .map_err(|e| err(format!("{key}: invalid duration {value:?}: {e}")))?;
    if d.is_zero() {
        return Err(err(format!("{key}: must be greater than zero")));
    }
    Ok(d)
}

impl Config {
    /// Who may reach the control socket and run what, with the groups resolved through
    /// the system's group database now (at the daemon's start).
    pub fn access(&self) -> Result<Access, ConfigError> {
        Ok(Access {
            socket_group: self
                .socket_group
                .as_deref()
                .map(|g| system_group("socket_group", g))
                .transpose()?,
            admin_group: self
                .admin_group
                .as_deref()
                .map(|g| system_group("control.admin_group", g))
                .transpose()?,
        })
    }
}

fn pick<T>(flag: Option<T>, file: Option<T>) -> Option<T> {
    flag.or(file)
}

impl Config {
    /// Build the configuration: defaults, then `file` (if any), then `args`.
    /// `socket_flag` is the global `--socket`.
    pub fn load(
        file: Option<&Path>,
        socket_flag: Option<&Path>,
        args: &DaemonArgs,
    ) -> Result<Config, ConfigError> {
        let f = match file {
            Some(p) => load_file(p)?,
            None => FileConfig::default(),
        };

        let node_name = match pick(args.node_name.clone(), f.node_name) {
            Some(n) => n,
            None => hostname::get()
                .map_err(|e| err(format!("node_name: cannot read the hostname: {e}")))?
                .to_string_lossy()
                .into_owned(),
        };
        validate_node_name(&node_name)?;

        let socket = socket_flag
            .map(Path::to_path_buf)
            .or(f.socket)
            .map(|p| expand_home(&p))
            .unwrap_or_else(default_socket);
        let store = pick(args.store.clone(), f.store)
            .map(|p| expand_home(&p))
            .unwrap_or_else(default_store);

        let m = f.multicast;
        let group_text = pick(args.group.clone(), m.group).unwrap_or_else(|| DEFAULT_GROUP.into());
        let group: IpAddr = group_text.trim().parse().map_err(|_| {
            err(format!(
                "multicast.group: {group_text:?} is not an IP address"
            ))
        })?;
        if !group.is_multicast() {
            return Err(err(format!(
                "multicast.group: {group} is not a multicast address"
            )));
        }
        let port = pick(args.port, m.port).unwrap_or(DEFAULT_PORT);
        if port == 0 {
            return Err(err("multicast.port: must be 1-65535"));
        }
        let ttl = pick(args.ttl, m.ttl).unwrap_or(1);
        if ttl > 255 {
            return Err(err(format!("multicast.ttl: {ttl} is not in 0-255")));
        }
        let max_datagram = pick(args.max_datagram, m.max_datagram).unwrap_or(1400);
        if !(crate::model::limits::MIN_DATAGRAM..=crate::model::limits::MAX_DATAGRAM)
            .contains(&max_datagram)
        {
            return Err(err(format!(
                "multicast.max_datagram: {max_datagram} is not in {}-{}",
                crate::model::limits::MIN_DATAGRAM,
                crate::model::limits::MAX_DATAGRAM
            )));
        }
        let announce_interval = match pick(args.announce_interval.clone(), m.announce_interval) {
            Some(v) => duration("multicast.announce_interval", &v)?,
            None => Duration::from_secs(60),
        };
        let peer_expiry = match pick(args.peer_expiry.clone(), m.peer_expiry) {
            Some(v) => duration("multicast.peer_expiry", &v)?,
            None => announce_interval * 3,
        };
        if peer_expiry < announce_interval {
            return Err(err(format!(
                "multicast.peer_expiry: {} is shorter than announce_interval {}",
                humantime::format_duration(peer_expiry),
                humantime::format_duration(announce_interval)
            )));
        }
        let interface = pick(args.interface.clone(), m.interface).filter(|s| !s.is_empty());
        let multicast = Multicast {
            enabled: !args.no_multicast && m.enabled.unwrap_or(true),
            group,
            port,
            interface,
            ttl,
            announce_interval,
            peer_expiry,
            legacy: args.legacy || m.legacy.unwrap_or(false),
            max_datagram,
        };

        let d = f.watchers.disks;
        let command = match (&args.blkid, d.command) {
            (Some(flag), _) => split_words(KEY_BLKID, flag)?,
            (None, Some(c)) => c.into_argv(KEY_BLKID)?,
            (None, None) => vec!["blkid".to_string()],
        };
        if command.is_empty() || command[0].is_empty() {
            return Err(err(format!("{KEY_BLKID}: must name a program")));
        }
        let include = if args.include_device.is_empty() {
            d.include.unwrap_or_default()
        } else {
            args.include_device.clone()
        };
        let exclude = if args.exclude_device.is_empty() {
            d.exclude.unwrap_or_default()
        } else {
            args.exclude_device.clone()
        };
        for (key, globs) in [
            ("watchers.disks.include", &include),
            ("watchers.disks.exclude", &exclude),
        ] {
            glob_set(key, globs)?;
        }
        let disks = DiskSettings {
            command,
            interval: match pick(args.disk_interval.clone(), d.interval) {
                Some(v) => duration("watchers.disks.interval", &v)?,
                None => Duration::from_secs(60),
            },
            timeout: match pick(args.disk_timeout.clone(), d.timeout) {
                Some(v) => duration("watchers.disks.timeout", &v)?,
                None => Duration::from_secs(15),
            },
            include,
            exclude,
        };
        let mount_interval = match pick(args.mount_interval.clone(), f.watchers.mounts.interval) {
            Some(v) => duration("watchers.mounts.interval", &v)?,
            None => Duration::from_secs(10),
        };
        let h = f.watchers.hardware;
        let hardware = if !args.no_hardware && h.enabled.unwrap_or(true) {
            Some(HardwareSettings {
                interval: match pick(args.hardware_interval.clone(), h.interval) {
                    Some(v) => duration("watchers.hardware.interval", &v)?,
                    None => Duration::from_secs(60),
                },
                sysfs: args
                    .sysfs
                    .clone()
                    .or(h.sysfs)
                    .unwrap_or_else(|| PathBuf::from("/sys")),
            })
        } else {
            None
        };
        let ping_min_interval = match pick(args.ping_interval.clone(), f.ping.min_interval) {
            Some(v) => duration("ping.min_interval", &v)?,
            None => Duration::from_secs(5),
        };
        let key_files: Vec<PathBuf> = if args.key_file.is_empty() {
            f.security.key_files.unwrap_or_default()
        } else {
            args.key_file.clone()
        }
        .iter()
        .map(|p| expand_home(p))
        .collect();

        let max_clock_skew = match pick(args.max_clock_skew.clone(), f.security.max_clock_skew) {
            Some(v) => duration("security.max_clock_skew", &v)?,
            None => Duration::from_secs(300),
        };

        let fm = f.mount;
        let allow = if args.mount_allow.is_empty() {
            fm.allow.unwrap_or_default()
        } else {
            args.mount_allow.clone()
        };
        let allow_set = glob_set("mount.allow", &allow)?;
        let root = pick(args.mount_root.clone(), fm.root)
            .map(|p| expand_home(&p))
            .unwrap_or_else(|| PathBuf::from("/srv/diskd"));
        if !root.is_absolute() {
            return Err(err(format!(
                "mount.root: {} is not an absolute path",
                root.display()
            )));
        }
        let attach_command = pick(args.attach_command.clone(), fm.attach_command)
            .unwrap_or_else(|| DEFAULT_ATTACH.into());
        match shell_words::split(&attach_command) {
            Ok(words) if !words.is_empty() => {}
            Ok(_) => return Err(err("mount.attach_command: must name a program")),
            Err(e) => return Err(err(format!("mount.attach_command: {e}"))),
        }
        let mount = MountSettings {
            enabled: args.allow_mount || fm.enabled.unwrap_or(false),
            root,
            allow_set,
            attach_command,
        };

        let gossip = gossip_settings(f.gossip, args, !key_files.is_empty())?;
        let mut warnings = Vec::new();
        let http = http_settings(f.http.unwrap_or_default(), args, &mut warnings)?;
        let hooks = hooks_settings(f.hooks.unwrap_or_default())?;
        if key_files.is_empty() {
            // Without keys every peer is heard unsealed: a hook that runs on peers' events
            // would run on whatever anyone on the LAN sends.
            if let Some(h) = hooks.iter().find(|h| !h.local && !h.allow_unsealed) {
                return Err(err(format!(
                    "hooks[{}]: runs on other hosts' events, and without security.key_files \
                     (--key-file) anyone on the network can forge those; configure keys, set \
                     local: true, or accept the risk with allow_unsealed: true",
                    h.index
                )));
            }
        }
        let hooks_max_running = f.hooks_max_running.unwrap_or(DEFAULT_HOOKS_MAX_RUNNING);
        if !(1..=MAX_HOOKS_RUNNING).contains(&hooks_max_running) {
            return Err(err(format!(
                "hooks_max_running: {hooks_max_running} is not in 1-{MAX_HOOKS_RUNNING}"
            )));
        }
        let socket_group = pick(args.socket_group.clone(), f.socket_group);
        let admin_group = pick(args.admin_group.clone(), f.control.admin_group);
        for (key, g) in [
            ("socket_group", &socket_group),
            ("control.admin_group", &admin_group),
        ] {
            if g.as_deref().is_some_and(|g| g.trim().is_empty()) {
                return Err(err(format!("{key}: must name a group")));
            }
        }
        let peers = PeerLimits::from_file(f.peers, args)?;
        let max_sessions_per_user = max_sessions_per_user(
            args.max_sessions_per_user
                .as_deref()
                .map(|flag| {
                    // A flag is text: a number in it is read as YAML reads one.
                    serde_yaml::from_str::<serde_yaml::Value>(flag)
                        .unwrap_or_else(|_| serde_yaml::Value::String(flag.to_string()))
                })
                .or(f.control.max_sessions_per_user)
                .as_ref(),
        )?;
        let log_format = match pick(args.log_format.clone(), f.log.format) {
            Some(v) => LogFormat::parse("log.format", &v)?,
            None => LogFormat::Text,
        };

        Ok(Config {
            gossip,
            peers,
            node_name,
            socket,
            store,
            multicast,
            disks,
            mount_interval,
            hardware,
            ping_min_interval,
            key_files,
            max_clock_skew,
            mount,
            hooks,
            hooks_max_running,
            socket_group,
            admin_group,
            max_sessions_per_user,
            log_format,
            warnings,
            http,
        })
    }
}

/// `control.max_sessions_per_user`: a whole number from 1 to the session table's size.
fn max_sessions_per_user(value: Option<&serde_yaml::Value>) -> Result<usize, ConfigError> {
    use crate::model::limits::{DEFAULT_MAX_SESSIONS_PER_USER, MAX_SESSIONS};
    const KEY: &str = "control.max_sessions_per_user";
    let Some(v) = value else {
        return Ok(DEFAULT_MAX_SESSIONS_PER_USER);
    };
    let shown = match v {
        serde_yaml::Value::Sequence(_) => "a list".to_string(),
        serde_yaml::Value::Mapping(_) => "a mapping".to_string(),
        serde_yaml::Value::Tagged(_) => "a tagged value".to_string(),
        other => serde_yaml::to_string(other)
            .map(|t| t.trim().replace('\n', " "))
            .unwrap_or_default(),
    };
    match v.as_u64() {
        Some(n) if (1..=MAX_SESSIONS as u64).contains(&n) => Ok(n as usize),
        _ if v.is_number() => Err(err(format!(
            "{KEY}: {shown} is not in 1-{MAX_SESSIONS} (sessions one uid may have open)"
        ))),
        _ => Err(err(format!(
            "{KEY}: {shown} is not a number (sessions one uid may have open, 1-{MAX_SESSIONS}; \
             default {DEFAULT_MAX_SESSIONS_PER_USER})"
        ))),
    }
}

/// Whether `ip` is a loopback address (127.0.0.0/8, `::1`, or 127.x mapped into IPv6):
/// only such a listener is reachable from this machine alone, so only there may the HTTP
/// listener run without a token. The unspecified address (`0.0.0.0`, `::`) is every
/// address, so it is not loopback.
pub fn is_loopback(ip: IpAddr) -> bool {
    ip.to_canonical().is_loopback()
}

/// `http.listen` and `http.token_file`: off without a listen address; a listener that
/// other machines can reach never runs without a token.
fn http_settings(
    h: FileHttp,
    args: &DaemonArgs,
    warnings: &mut Vec<String>,
) -> Result<Option<HttpSettings>, ConfigError> {
    let token_file = pick(args.http_token_file.clone(), h.token_file).map(|p| expand_home(&p));
    if let Some(t) = &token_file {
        if t.as_os_str().is_empty() {
            return Err(err("http.token_file: empty path"));
        }
    }
    let Some(text) = pick(args.http.clone(), h.listen) else {
        if token_file.is_some() {
            warnings.push(
                "http.token_file is set but http.listen is not: no HTTP listener runs".into(),
            );
        }
        return Ok(None);
    };
    let listen: SocketAddr = text.trim().parse().map_err(|_| {
        err(format!(
            "http.listen: {text:?} is not ADDR:PORT (an IP address and a port, [::1]:9180 for IPv6)"
        ))
    })?;
    if listen.ip().is_multicast() {
        return Err(err(format!("http.listen: {listen} is a multicast address")));
    }
    if token_file.is_none() && !is_loopback(listen.ip()) {
        return Err(err(format!(
            "http.token_file: required when http.listen ({listen}) is not a loopback address (write a token to a file of mode 0600)"
        )));
    }
    Ok(Some(HttpSettings { listen, token_file }))
}

/// An address with an optional port (`ADDR`, `ADDR:PORT`, `[V6]:PORT`).
fn addr_with_port(key: &str, text: &str, default_port: u16) -> Result<SocketAddr, ConfigError> {
    let text = text.trim();
    if let Ok(sa) = text.parse::<SocketAddr>() {
        return Ok(sa);
    }
    text.trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
        .map(|ip| SocketAddr::new(ip, default_port))
        .map_err(|_| err(format!("{key}: {text:?} is not ADDR[:PORT]")))
}

fn gossip_settings(
    g: FileGossip,
    args: &DaemonArgs,
    have_keys: bool,
) -> Result<Gossip, ConfigError> {
    let port = pick(args.gossip_port, g.port).unwrap_or(DEFAULT_GOSSIP_PORT);
    if port == 0 {
        return Err(err("gossip.port: must be 1-65535"));
    }
    let seed_texts = if args.seed.is_empty() {
        g.seeds.unwrap_or_default()
    } else {
        args.seed.clone()
    };
    let seeds = seed_texts
        .iter()
        .map(|s| Seed::parse(s, port).map_err(|e| err(format!("gossip.seeds: {e}"))))
        .collect::<Result<Vec<_>, _>>()?;
    let advertise = match pick(args.gossip_advertise.clone(), g.advertise) {
        Some(t) => {
            let a = addr_with_port("gossip.advertise", &t, port)?;
            if a.ip().is_unspecified() || a.ip().is_multicast() {
                return Err(err(format!(
                    "gossip.advertise: {a} is not an address other hosts can reach"
                )));
            }
            Some(a)
        }
        None => None,
    };
    // Without an explicit listen address, listen on every address of the family we
    // advertise (IPv4 unless told otherwise).
    let any = match advertise {
        Some(a) if a.is_ipv6() => IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
        _ => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
    };
    let listen = match pick(args.gossip_listen.clone(), g.listen) {
        Some(t) => addr_with_port("gossip.listen", &t, port)?,
        None => SocketAddr::new(any, port),
    };
    if let Some(a) = advertise {
        if a.is_ipv6() != listen.is_ipv6() {
            return Err(err(format!(
                "gossip.advertise: {a} and gossip.listen {listen} are of different address families"
            )));
        }
    }
    let interval = match pick(args.gossip_interval.clone(), g.interval) {
        Some(v) => duration("gossip.interval", &v)?,
        None => Duration::from_millis(500),
    };
    if interval < Duration::from_millis(50) || interval > Duration::from_secs(60) {
        return Err(err(format!(
            "gossip.interval: {} is not between 50ms and 60s",
            humantime::format_duration(interval)
        )));
    }
    let wanted = !args.no_gossip && g.enabled.unwrap_or(true);
    if !have_keys {
        // Gossip crosses routers: never in the clear. Asking for it without keys is a
        // mistake worth stopping for; merely not having keys just leaves it off.
        if !seeds.is_empty() {
            return Err(err(
                "gossip.seeds: gossip needs security.key_files (--key-file); it never runs unsealed",
            ));
        }
        if g.enabled == Some(true) {
            return Err(err(
                "gossip.enabled: gossip needs security.key_files (--key-file); it never runs unsealed",
            ));
        }
    }
    Ok(Gossip {
        enabled: wanted && have_keys,
        seeds,
        listen,
        advertise,
        interval,
    })
}

// ---- hooks ----

/// Default of `hooks_max_running`.
pub const DEFAULT_HOOKS_MAX_RUNNING: usize = 4;
/// The largest `hooks_max_running` accepted.
pub const MAX_HOOKS_RUNNING: usize = 256;
/// Default of a hook's `timeout`.
pub const DEFAULT_HOOK_TIMEOUT: Duration = Duration::from_secs(60);

/// A hook: a command run on some changes of the fleet picture, validated and compiled.
/// The runner is `crate::hooks`.
#[derive(Debug, Clone)]
pub struct Hook {
    /// Its place in the `hooks` list (`hook[0]` in logs and `status`).
    pub index: usize,
    /// The kinds of change it runs on (no duplicates, in the order written).
    pub on: Vec<FleetEventKind>,
    /// `match`: UUID or label glob; for peer events only the default `*` matches.
    pub disk: Pattern,
    /// `host`: host-name glob.
    pub host: Pattern,
    /// `local`: only this machine's disks.
    pub local: bool,
    /// The argv run (never through a shell); `run[0]` is looked up in `PATH` when it
    /// has no `/`.
    pub run: Vec<String>,
    /// Killed with its process group after this long.
    pub timeout: Duration,
    /// `allow_unsealed`: also run for events of peers heard unsealed (no keys, legacy Perl
    /// peers), whose every word anyone on the LAN could have written.
    pub allow_unsealed: bool,
    /// `user` (and `group`): whom the command runs as; `None`: the daemon's user.
    pub run_as: Option<RunAs>,
}

/// A hook's `user` and `group`, looked up when the config is read: the command runs with
/// this uid, gid and the user's supplementary groups, set before exec (as systemd's
/// `User=`), so a hook can be given less than the daemon's root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunAs {
    /// The user's name (for `USER`, `LOGNAME` and messages).
    pub user: String,
    /// Its uid.
    pub uid: u32,
    /// `group`'s gid, else the user's primary group.
    pub gid: u32,
    /// The user's supplementary groups from the group database, with `gid` first.
    pub groups: Vec<u32>,
    /// The user's home directory (for `HOME`).
    pub home: PathBuf,
}

impl RunAs {
    /// Look up `user` (a name or a numeric uid) and `group` for `hooks[i]`, whose keys
    /// `user_key` and `group_key` errors name.
    /// `None` when that is who the daemon runs as already (not root: it could not
    /// switch, nor set groups, and need not).
    fn lookup(
        user_key: &str,
        user: &str,
        group_key: &str,
        group: Option<&str>,
    ) -> Result<Option<RunAs>, ConfigError> {
        use nix::unistd::{getgrouplist, Gid, Group, Uid, User};
        let found = match user.parse::<u32>() {
            Ok(uid) => User::from_uid(Uid::from_raw(uid)),
            Err(_) => User::from_name(user),
        };
        let u = match found {
            Ok(Some(u)) => u,
            Ok(None) => return Err(err(format!("{user_key}: no user {user:?} on this machine"))),
            Err(e) => return Err(err(format!("{user_key}: cannot look up {user:?}: {e}"))),
        };
        let gid = match group {
            None => u.gid,
            Some(g) => {
                let found = match g.parse::<u32>() {
                    Ok(gid) => Group::from_gid(Gid::from_raw(gid)),
                    Err(_) => Group::from_name(g),
                };
                match found {
                    Ok(Some(g)) => g.gid,
                    Ok(None) => {
                        return Err(err(format!("{group_key}: no group {g:?} on this machine")))
                    }
                    Err(e) => return Err(err(format!("{group_key}: cannot look up {g:?}: {e}"))),
                }
            }
        };
        let me = nix::unistd::geteuid();
        if !me.is_root() {
            if u.uid == me && gid == nix::unistd::getegid() {
                return Ok(None);
            }
            return Err(err(format!(
                "{user_key}: running a hook as {:?} (or with another group) needs the daemon \
                 to run as root",
                u.name
            )));
        }
        let name = std::ffi::CString::new(u.name.clone())
            .map_err(|_| err(format!("{user_key}: the user's name holds a NUL byte")))?;
        let mut groups = vec![gid.as_raw()];
        match getgrouplist(&name, u.gid) {
            Ok(list) => groups.extend(
                list.into_iter()
                    .map(Gid::as_raw)
                    .filter(|g| *g != gid.as_raw()),
            ),
            Err(e) => {
                return Err(err(format!(
                    "{user_key}: cannot read the groups of {:?}: {e}",
                    u.name
                )))
            }
        }
        Ok(Some(RunAs {
            user: u.name,
            uid: u.uid.as_raw(),
            gid: gid.as_raw(),
            groups,
            home: u.dir,
        }))
    }
}

/// A glob of a hook (`match`, `host`) as written and compiled. `*` (the default) matches
/// everything, also what has no value to test (a disk without UUID or label, a peer).
#[derive(Debug, Clone)]
pub struct Pattern {
    text: String,
    /// `None`: `*`.
    set: Option<globset::GlobSet>,
}

impl Pattern {
    fn compile(key: &str, text: Option<String>) -> Result<Pattern, ConfigError> {
        let text = text.unwrap_or_else(|| "*".to_string());
        let set = if text == "*" {
            None
        } else {
            Some(glob_set(key, std::slice::from_ref(&text))?)
        };
        Ok(Pattern { text, set })
    }

    /// The pattern as written.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Whether it is `*`, matching everything.
    pub fn is_any(&self) -> bool {
        self.set.is_none()
    }

    /// Whether any of `values` matches (always, for `*`).
    pub fn matches_any<'a>(&self, values: impl IntoIterator<Item = Option<&'a str>>) -> bool {
        match &self.set {
            None => true,
            Some(set) => values.into_iter().flatten().any(|v| set.is_match(v)),
        }
    }
}

/// A hook as written: every value read on its own, so that an error names its key.
#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a hook: a map with `on` and `run` (and optionally `match`, `host`, `local`, `timeout`, `user`, `group`, `allow_unsealed`)"
)]
struct FileHook {
    on: Option<serde_yaml::Value>,
    #[serde(rename = "match")]
    pattern: Option<serde_yaml::Value>,
    host: Option<serde_yaml::Value>,
    local: Option<serde_yaml::Value>,
    run: Option<serde_yaml::Value>,
    timeout: Option<serde_yaml::Value>,
    user: Option<serde_yaml::Value>,
    group: Option<serde_yaml::Value>,
    allow_unsealed: Option<serde_yaml::Value>,
}

/// One value of a hook, typed; a wrong type names `hooks[i].key`.
fn hook_value<T: serde::de::DeserializeOwned>(
    key: &str,
    value: Option<serde_yaml::Value>,
) -> Result<Option<T>, ConfigError> {
    match value {
        None | Some(serde_yaml::Value::Null) => Ok(None),
        Some(v) => serde_yaml::from_value(v)
            .map(Some)
            .map_err(|e| err(format!("{key}: {e}"))),
    }
}

/// A glob of a hook: text, or a number as written (a label `2024` needs no quotes).
fn hook_text(key: &str, value: Option<serde_yaml::Value>) -> Result<Option<String>, ConfigError> {
    match value {
        Some(serde_yaml::Value::Number(n)) => Ok(Some(n.to_string())),
        v => hook_value(key, v),
    }
}

/// A string or a list of strings, with a message naming the key and what was expected
/// (serde's own one, for an untagged enum, says neither).
fn string_or_list(
    key: &str,
    value: Option<serde_yaml::Value>,
    expected: &str,
) -> Result<Option<StringOrList>, ConfigError> {
    match value {
        None | Some(serde_yaml::Value::Null) => Ok(None),
        Some(v) => serde_yaml::from_value(v).map(Some).map_err(|_| {
            err(format!(
                "{key}: expected {expected}, as text or a list of text"
            ))
        }),
    }
}

fn hooks_settings(entries: Vec<serde_yaml::Value>) -> Result<Vec<Hook>, ConfigError> {
    entries
        .into_iter()
        .enumerate()
        .map(|(i, v)| hook_settings(i, v))
        .collect()
}

fn hook_settings(index: usize, entry: serde_yaml::Value) -> Result<Hook, ConfigError> {
    let at = format!("hooks[{index}]");
    let f: FileHook = serde_yaml::from_value(entry).map_err(|e| err(format!("{at}: {e}")))?;

    let key = format!("{at}.on");
    let names: Vec<String> = match string_or_list(&key, f.on, "a list of event names")? {
        None => {
            return Err(err(format!(
                "{key}: required (a list of events: {})",
                event_names()
            )))
        }
        Some(StringOrList::One(name)) => vec![name],
        Some(StringOrList::Many(names)) => names,
    };
    if names.is_empty() {
        return Err(err(format!(
            "{key}: must list at least one event ({})",
            event_names()
        )));
    }
    let mut on = Vec::new();
    for name in &names {
        let kind = FleetEventKind::parse(name.trim())
            .ok_or_else(|| err(format!("{key}: unknown event {name:?} ({})", event_names())))?;
        if !on.contains(&kind) {
            on.push(kind);
        }
    }

    let key = format!("{at}.match");
    let disk = Pattern::compile(&key, hook_text(&key, f.pattern)?)?;
    let host_key = format!("{at}.host");
    let host = Pattern::compile(&host_key, hook_text(&host_key, f.host)?)?;
    let local_key = format!("{at}.local");
    let local = hook_value::<bool>(&local_key, f.local)?.unwrap_or(false);
    // A hook that can never run is a mistake worth stopping for: peer events carry no disk
    // (so no UUID or label to match) and are never about this machine.
    if on.iter().all(|k| k.is_peer()) {
        if !disk.is_any() {
            return Err(err(format!(
                "{key}: {:?} never matches: peer-live and peer-lost have no disk (use host, or add disk events)",
                disk.text()
            )));
        }
        if local {
            return Err(err(format!(
                "{local_key}: true never matches: peer-live and peer-lost are never about this machine"
            )));
        }
    }

    let key = format!("{at}.run");
    let run = match string_or_list(&key, f.run, "an argv list, or a command line")? {
        None => {
            return Err(err(format!(
                "{key}: required (an argv list, or a command line split into words)"
            )))
        }
        Some(r) => r.into_argv(&key)?,
    };
    if run.first().is_none_or(|p| p.is_empty()) {
        return Err(err(format!("{key}: must name a program")));
    }
    if let Some(i) = run.iter().position(|w| w.contains('\0')) {
        return Err(err(format!("{key}: word {i} contains a NUL byte")));
    }

    let key = format!("{at}.timeout");
    let timeout = match f.timeout {
        Some(serde_yaml::Value::Number(n)) => {
            return Err(err(format!("{key}: {n} has no unit (write {n}s or {n}m)")))
        }
        Some(t) => match hook_value::<String>(&key, Some(t))? {
            Some(t) => duration(&key, &t)?,
            None => DEFAULT_HOOK_TIMEOUT,
        },
        None => DEFAULT_HOOK_TIMEOUT,
    };

    let unsealed_key = format!("{at}.allow_unsealed");
    let allow_unsealed = hook_value::<bool>(&unsealed_key, f.allow_unsealed)?.unwrap_or(false);
    let user_key = format!("{at}.user");
    let group_key = format!("{at}.group");
    let user = hook_text(&user_key, f.user)?;
    let group = hook_text(&group_key, f.group)?;
    let run_as = match (user, group) {
        (None, None) => None,
        (None, Some(_)) => {
            return Err(err(format!(
                "{group_key}: needs {user_key} (the user whose groups the command gets)"
            )))
        }
        (Some(u), g) => {
            RunAs::lookup(&user_key, u.trim(), &group_key, g.as_deref().map(str::trim))?
        }
    };

    Ok(Hook {
        index,
        on,
        disk,
        host,
        local,
        run,
        timeout,
        allow_unsealed,
        run_as,
    })
}

fn event_names() -> String {
    FleetEventKind::ALL
        .iter()
        .map(|k| k.name())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Node names travel in replies and (later) on the wire: keep them printable and short.
fn validate_node_name(name: &str) -> Result<(), ConfigError> {
    if name.is_empty() || name.len() > 64 {
        return Err(err(format!(
            "node_name: {name:?} must be 1 to 64 bytes long"
        )));
    }
    if name.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(err(format!(
            "node_name: {name:?} must not contain spaces or control characters"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn load_yaml(yaml: &str, args: &DaemonArgs) -> Result<Config, ConfigError> {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(yaml.as_bytes()).unwrap();
        Config::load(Some(f.path()), None, args)
    }

    #[test]
    fn defaults_match_the_interface() {
        let c = Config::load(None, None, &DaemonArgs::default()).unwrap();
        assert_eq!(c.multicast.group.to_string(), "230.1.2.3");
        assert_eq!(c.multicast.port, 32003);
        assert_eq!(c.multicast.ttl, 1);
        assert_eq!(c.multicast.announce_interval, Duration::from_secs(60));
        assert_eq!(c.multicast.peer_expiry, Duration::from_secs(180));
        assert_eq!(c.disks.command, vec!["blkid"]);
        assert_eq!(c.disks.timeout, Duration::from_secs(15));
        assert_eq!(c.mount_interval, Duration::from_secs(10));
        assert_eq!(c.ping_min_interval, Duration::from_secs(5));
        assert!(c.socket.ends_with(".diskd-socket"));
        assert_eq!(c.mount.root, PathBuf::from("/srv/diskd"));
        assert!(!c.mount.enabled);
    }

    #[test]
    fn flags_win_over_the_file() {
        let args = DaemonArgs {
            port: Some(4000),
            ..Default::default()
        };
        let c = load_yaml(
            "multicast:\n  port: 5000\n  group: ff05::d15c\nwatchers:\n  disks:\n    command: [/bin/echo, hi]\n",
            &args,
        )
        .unwrap();
        assert_eq!(c.multicast.port, 4000);
        assert_eq!(c.multicast.group.to_string(), "ff05::d15c");
        assert_eq!(c.disks.command, vec!["/bin/echo", "hi"]);
    }

    #[test]
    fn commands_split_as_a_shell_would_so_paths_may_hold_spaces() {
        let c = load_yaml(
            "watchers:\n  disks:\n    command: \"'/opt/my tools/blkid' -c /dev/null\"\nmount:\n  attach_command: \"sshfs -o 'IdentityFile=/root/my key' {addr}:{path} {target}\"\n",
            &DaemonArgs::default(),
        )
        .unwrap();
        assert_eq!(
            c.disks.command,
            vec!["/opt/my tools/blkid", "-c", "/dev/null"]
        );
        assert_eq!(
            c.mount.attach_command,
            "sshfs -o 'IdentityFile=/root/my key' {addr}:{path} {target}"
        );
        let e = load_yaml(
            "mount:\n  attach_command: \"sshfs '{addr}\"\n",
            &DaemonArgs::default(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("mount.attach_command"), "{e}");
    }

    #[test]
    fn mount_allow_globs_follow_the_device_glob_rules() {
        let args = DaemonArgs {
            mount_allow: vec!["backup*".into()],
            ..Default::default()
        };
        let c = Config::load(None, None, &args).unwrap();
        assert!(c.mount.allow_set.is_match("backup-2024"));
        // `*` stops at `/`, as in watchers.disks.include.
        assert!(!c.mount.allow_set.is_match("backup/../etc"));
        let bad = DaemonArgs {
            mount_allow: vec!["[".into()],
            ..Default::default()
        };
        let e = Config::load(None, None, &bad).unwrap_err();
        assert!(e.to_string().contains("mount.allow"), "{e}");
    }

    #[test]
    fn bad_values_name_their_key() {
        let d = DaemonArgs::default();
        let cases = [
            ("multicast:\n  grop: 1\n", "grop"),
            ("multicast:\n  group: 10.0.0.1\n", "multicast.group"),
            ("multicast:\n  ttl: 256\n", "multicast.ttl"),
            (
                "multicast:\n  max_datagram: 100\n",
                "multicast.max_datagram",
            ),
            (
                "multicast:\n  announce_interval: soon\n",
                "multicast.announce_interval",
            ),
            (
                "watchers:\n  disks:\n    timeout: 0s\n",
                "watchers.disks.timeout",
            ),
            (
                "watchers:\n  disks:\n    include: ['[']\n",
                "watchers.disks.include",
            ),
            ("node_name: 'a b'\n", "node_name"),
            ("mount:\n  root: relative\n", "mount.root"),
            ("- just\n- a list\n", "config"),
        ];
        for (yaml, key) in cases {
            let e = load_yaml(yaml, &d).unwrap_err().to_string();
            assert!(
                e.contains(key),
                "{yaml:?} gave {e:?}, expected it to name {key}"
            );
            assert!(
                !e.contains('\n') || key == "config",
                "multi-line error: {e:?}"
            );
        }
    }

    #[test]
    fn gossip_needs_keys_and_parses_seeds() {
        let key = tempfile::NamedTempFile::new().unwrap();
        let keyed = |seeds: Vec<&str>| DaemonArgs {
            key_file: vec![key.path().to_path_buf()],
            seed: seeds.into_iter().map(String::from).collect(),
            ..Default::default()
        };
        // No keys: gossip stays off; asking for it is an error naming the key.
        let c = Config::load(None, None, &DaemonArgs::default()).unwrap();
        assert!(!c.gossip.enabled);
        assert!(c.multicast.enabled);
        let e = Config::load(
            None,
            None,
            &DaemonArgs {
                seed: vec!["a.example".into()],
                ..Default::default()
            },
        )
        .unwrap_err();
        assert!(e.to_string().starts_with("gossip.seeds:"), "{e}");
        let e = load_yaml("gossip:\n  enabled: true\n", &DaemonArgs::default()).unwrap_err();
        assert!(e.to_string().starts_with("gossip.enabled:"), "{e}");

        let c = Config::load(
            None,
            None,
            &keyed(vec![
                "seed.example",
                "198.18.1.1:4000",
                "[fd00::1]:5",
                "fd00::2",
                "h:7",
            ]),
        )
        .unwrap();
        assert!(c.gossip.enabled);
        assert_eq!(c.gossip.listen.to_string(), "0.0.0.0:32004");
        assert_eq!(c.gossip.interval, Duration::from_millis(500));
        let shown: Vec<String> = c.gossip.seeds.iter().map(|s| s.to_string()).collect();
        assert_eq!(
            shown,
            [
                "seed.example:32004",
                "198.18.1.1:4000",
                "[fd00::1]:5",
                "[fd00::2]:32004",
                "h:7"
            ]
        );
        for bad in ["", "a b", "host:0", "host:x", "x;rm -rf /"] {
            let e = Config::load(None, None, &keyed(vec![bad])).unwrap_err();
            assert!(e.to_string().starts_with("gossip.seeds:"), "{bad:?}: {e}");
        }
        let mut args = keyed(vec![]);
        args.no_gossip = true;
        args.no_multicast = true;
        let c = Config::load(None, None, &args).unwrap();
        assert!(!c.gossip.enabled && !c.multicast.enabled);
        let mut args = keyed(vec![]);
        args.gossip_advertise = Some("0.0.0.0".into());
        let e = Config::load(None, None, &args).unwrap_err();
        assert!(e.to_string().starts_with("gossip.advertise:"), "{e}");
        let mut args = keyed(vec![]);
        args.gossip_advertise = Some("fd00::9".into());
        let c = Config::load(None, None, &args).unwrap();
        assert_eq!(c.gossip.listen.to_string(), "[::]:32004");
        assert_eq!(c.gossip.advertise.unwrap().to_string(), "[fd00::9]:32004");
        let e = load_yaml("gossip:\n  interval: 10ms\n", &DaemonArgs::default()).unwrap_err();
        assert!(e.to_string().starts_with("gossip.interval:"), "{e}");
    }

    #[test]
    fn the_session_share_defaults_to_32_and_must_be_a_count() {
        let d = DaemonArgs::default();
        let c = Config::load(None, None, &d).unwrap();
        assert_eq!(c.max_sessions_per_user, 32);
        let c = load_yaml("control:\n  max_sessions_per_user: 4\n", &d).unwrap();
        assert_eq!(c.max_sessions_per_user, 4);
        // The flag wins, and is checked as the key is.
        let mut flagged = DaemonArgs {
            max_sessions_per_user: Some("7".into()),
            ..DaemonArgs::default()
        };
        let c = load_yaml("control:\n  max_sessions_per_user: 4\n", &flagged).unwrap();
        assert_eq!(c.max_sessions_per_user, 7);
        flagged.max_sessions_per_user = Some("0".into());
        let e = Config::load(None, None, &flagged).unwrap_err().to_string();
        assert!(
            e.contains("control.max_sessions_per_user: 0 is not in 1-1024"),
            "{e}"
        );
        flagged.max_sessions_per_user = Some("x: y".into());
        let e = Config::load(None, None, &flagged).unwrap_err().to_string();
        assert!(e.contains("is not a number"), "{e}");
        assert!(!e.contains('\n'), "{e:?}");
        for (value, want) in [
            ("0", "control.max_sessions_per_user: 0 is not in 1-1024"),
            ("-3", "control.max_sessions_per_user: -3 is not in 1-1024"),
            ("2.5", "control.max_sessions_per_user: 2.5 is not in 1-1024"),
            (
                "5000",
                "control.max_sessions_per_user: 5000 is not in 1-1024",
            ),
            (
                "lots",
                "control.max_sessions_per_user: lots is not a number",
            ),
            (
                "'32'",
                "control.max_sessions_per_user: '32' is not a number",
            ),
            (
                "[1, 2]",
                "control.max_sessions_per_user: a list is not a number",
            ),
        ] {
            let e = load_yaml(&format!("control:\n  max_sessions_per_user: {value}\n"), &d)
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{value}: {e}");
            assert!(!e.contains('\n'), "{value}: {e:?}");
        }
    }

    #[test]
    fn hooks_parse_with_defaults_and_bad_entries_name_their_key() {
        let d = DaemonArgs::default();
        let c = Config::load(None, None, &d).unwrap();
        assert!(c.hooks.is_empty());
        assert_eq!(c.hooks_max_running, 4);
        let c = load_yaml(
            "hooks:\n\
             - on: [appeared, mounted, appeared]\n\
             \x20 match: 'backup*'\n\
             \x20 local: true\n\
             \x20 run: \"'/opt/my hooks/backup' --quiet\"\n\
             \x20 timeout: 10m\n\
             - {on: peer-lost, host: 2024, local: false, allow_unsealed: true, run: [/bin/echo, 'a b']}\n\
             hooks_max_running: 2\n",
            &d,
        )
        .unwrap();
        assert_eq!(c.hooks_max_running, 2);
        let h = &c.hooks[0];
        assert_eq!(h.index, 0);
        assert_eq!(h.on, [FleetEventKind::Appeared, FleetEventKind::Mounted]);
        assert_eq!(h.run, ["/opt/my hooks/backup", "--quiet"]);
        assert_eq!(h.timeout, Duration::from_secs(600));
        assert_eq!(h.disk.text(), "backup*");
        assert!(h.host.is_any() && h.local && !h.allow_unsealed);
        let h = &c.hooks[1];
        assert_eq!(h.on, [FleetEventKind::PeerLost]);
        assert_eq!(h.host.text(), "2024");
        assert_eq!(h.run, ["/bin/echo", "a b"]);
        assert_eq!(h.timeout, DEFAULT_HOOK_TIMEOUT);
        assert!(h.allow_unsealed && h.run_as.is_none());

        let ok = "- {on: [appeared], run: x}\n";
        let cases = [
            (
                "- {on: [plugged], run: x}\n",
                "hooks[1].on: unknown event \"plugged\"",
            ),
            ("- {on: [], run: x}\n", "hooks[1].on:"),
            ("- {run: x}\n", "hooks[1].on: required"),
            ("- {on: [appeared]}\n", "hooks[1].run: required"),
            (
                "- {on: [appeared], run: []}\n",
                "hooks[1].run: must name a program",
            ),
            (
                "- {on: [appeared], run: ''}\n",
                "hooks[1].run: must name a program",
            ),
            ("- {on: [appeared], run: \"a 'b\"}\n", "hooks[1].run:"),
            (
                "- {on: [appeared], run: [\"a\\0\"]}\n",
                "hooks[1].run: word 0",
            ),
            (
                "- {on: [appeared], run: x, match: '['}\n",
                "hooks[1].match:",
            ),
            ("- {on: [appeared], run: x, host: 'a{'}\n", "hooks[1].host:"),
            (
                "- {on: [appeared], run: x, timeout: soon}\n",
                "hooks[1].timeout:",
            ),
            (
                "- {on: [appeared], run: x, timeout: 60}\n",
                "hooks[1].timeout: 60 has no unit",
            ),
            (
                "- {on: [appeared], run: x, colour: red}\n",
                "hooks[1]: unknown field `colour`",
            ),
            (
                "- {on: [appeared], run: x, local: maybe}\n",
                "hooks[1].local:",
            ),
            (
                "- {on: [peer-live], run: x, match: 'b*'}\n",
                "hooks[1].match:",
            ),
            (
                "- {on: [peer-live], run: x, local: true}\n",
                "hooks[1].local:",
            ),
            ("- a string\n", "hooks[1]: invalid type"),
            (
                "- {on: [appeared], run: x, allow_unsealed: maybe}\n",
                "hooks[1].allow_unsealed:",
            ),
            (
                "- {on: [appeared], run: x, user: no-such-user-here}\n",
                "hooks[1].user: no user \"no-such-user-here\"",
            ),
            (
                "- {on: [appeared], run: x, group: root}\n",
                "hooks[1].group: needs hooks[1].user",
            ),
            (
                "- {on: [appeared], run: x, user: root, group: no-such-group-here}\n",
                "hooks[1].group: no group \"no-such-group-here\"",
            ),
        ];
        // With keys, peers' events are sealed: hooks on them need nothing more.
        let keyed = "security:\n  key_files: [/k]\n";
        for (entry, want) in cases {
            let yaml = format!("{keyed}hooks:\n{ok}{entry}");
            let e = load_yaml(&yaml, &d).unwrap_err().to_string();
            assert!(
                e.starts_with(want),
                "{yaml:?} gave {e:?}, expected {want:?}"
            );
            assert!(!e.contains('\n'), "multi-line error: {e:?}");
        }
        // Peer events with a disk event besides: `match` applies to the disk events.
        load_yaml(
            &format!("{keyed}hooks:\n- {{on: [appeared, peer-live], match: 'b*', run: x}}\n"),
            &d,
        )
        .unwrap();
        for n in ["0", "257"] {
            let e = load_yaml(&format!("hooks_max_running: {n}\n"), &d).unwrap_err();
            assert!(e.to_string().starts_with("hooks_max_running:"), "{e}");
        }
    }

    #[test]
    fn peer_limits_default_and_are_bounded() {
        let d = DaemonArgs::default();
        let c = load_yaml("", &d).unwrap();
        assert_eq!(c.peers, PeerLimits::default());
        let c = load_yaml("peers: {max: 1000, max_records: 5000}\n", &d).unwrap();
        assert_eq!((c.peers.max, c.peers.max_records), (1000, 5000));
        let flag = DaemonArgs {
            max_peers: Some(7),
            ..DaemonArgs::default()
        };
        assert_eq!(
            load_yaml("peers: {max: 1000}\n", &flag).unwrap().peers.max,
            7
        );
        for (yaml, want) in [
            ("peers: {max: 0}\n", "peers.max: 0 is not in 1-1048576"),
            (
                "peers: {max: 1000000000000}\n",
                "peers.max: 1000000000000 is not in",
            ),
            (
                "peers: {max_records: 0}\n",
                "peers.max_records: must be at least 1",
            ),
            ("peers: {colour: red}\n", "unknown field"),
        ] {
            let e = load_yaml(yaml, &d).unwrap_err().to_string();
            assert!(e.contains(want), "{yaml:?}: {e}");
        }
    }

    #[test]
    fn without_keys_a_hook_on_peers_events_must_accept_them_unsealed() {
        let d = DaemonArgs::default();
        let e = load_yaml(
            "hooks:\n- {on: [appeared], local: true, run: x}\n- {on: [appeared], run: x}\n",
            &d,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("hooks[1]: runs on other hosts' events"),
            "{e}"
        );
        assert!(
            e.contains("allow_unsealed: true") && !e.contains('\n'),
            "{e}"
        );
        let c = load_yaml(
            "hooks:\n- {on: [appeared], local: true, run: x}\n\
             - {on: [peer-live], allow_unsealed: true, run: x}\n",
            &d,
        )
        .unwrap();
        assert!(!c.hooks[0].allow_unsealed && c.hooks[1].allow_unsealed);
    }

    #[test]
    fn a_hook_user_is_looked_up_with_its_groups() {
        let d = DaemonArgs::default();
        let yaml = "hooks:\n- {on: [appeared], local: true, user: nobody, run: x}\n";
        if nix::unistd::geteuid().is_root() {
            let c = load_yaml(yaml, &d).unwrap();
            let who = c.hooks[0].run_as.clone().unwrap();
            let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
            assert_eq!(
                (who.user.as_str(), who.uid),
                ("nobody", nobody.uid.as_raw())
            );
            assert_eq!(who.gid, nobody.gid.as_raw());
            assert_eq!(who.groups.first(), Some(&who.gid));
            let c = load_yaml(
                "hooks:\n- {on: [appeared], local: true, user: nobody, group: 0, run: x}\n",
                &d,
            )
            .unwrap();
            assert_eq!(c.hooks[0].run_as.as_ref().unwrap().gid, 0);
        } else {
            let e = load_yaml(yaml, &d).unwrap_err().to_string();
            assert!(e.contains("needs the daemon"), "{e}");
        }
    }

    #[test]
    fn the_example_config_parses_also_with_its_hooks_uncommented() {
        let text = include_str!("../config/diskd.yaml");
        let d = DaemonArgs::default();
        let c = load_yaml(text, &d).unwrap();
        assert!(c.hooks.is_empty());
        let uncommented: String = text
            .lines()
            .map(|l| match l.strip_prefix("# ") {
                Some(rest) if rest.starts_with("hooks:") || rest.starts_with("  ") => rest,
                _ => l,
            })
            .map(|l| format!("{l}\n"))
            .collect();
        let c = load_yaml(&uncommented, &d).unwrap();
        assert_eq!(c.hooks.len(), 1, "{uncommented}");
        assert_eq!(c.hooks[0].run, ["/usr/local/bin/backup-to", "--quiet"]);
    }

    #[test]
    fn loopback_is_127_8_and_ipv6_1_and_their_mapped_forms() {
        for ip in [
            "127.0.0.1",
            "127.1.2.3",
            "127.255.255.254",
            "::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(is_loopback(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "0.0.0.0",
            "::",
            "198.18.0.1",
            "10.0.0.1",
            "128.0.0.1",
            "::2",
            "::ffff:198.18.0.1",
            "fe80::1",
        ] {
            assert!(!is_loopback(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn http_is_off_by_default_and_needs_a_token_off_loopback() {
        let c = Config::load(None, None, &DaemonArgs::default()).unwrap();
        assert_eq!(c.http, None);
        let http = |listen: &str, token: Option<&str>| DaemonArgs {
            http: Some(listen.into()),
            http_token_file: token.map(PathBuf::from),
            ..Default::default()
        };
        // Loopback: no token needed; port 0 is allowed (a free port, shown by `status`).
        for l in ["127.0.0.1:9180", "[::1]:0", "127.0.0.2:80"] {
            let c = Config::load(None, None, &http(l, None)).unwrap();
            assert_eq!(c.http.unwrap().listen, l.parse().unwrap());
        }
        // Anywhere else: a token file, or exit 2 with one line naming the key.
        for l in [
            "0.0.0.0:9180",
            "[::]:9180",
            "198.18.0.1:9180",
            "[fd00::1]:1",
        ] {
            let e = Config::load(None, None, &http(l, None))
                .unwrap_err()
                .to_string();
            assert!(e.starts_with("http.token_file: required"), "{l}: {e}");
            assert!(!e.contains('\n'), "{e}");
            let c = Config::load(None, None, &http(l, Some("/etc/diskd/http.token"))).unwrap();
            let h = c.http.unwrap();
            assert_eq!(h.token_file, Some(PathBuf::from("/etc/diskd/http.token")));
        }
        // From the file; the flag wins.
        let c = load_yaml(
            "http:\n  listen: 198.18.0.1:9180\n  token_file: /t\n",
            &DaemonArgs::default(),
        )
        .unwrap();
        assert_eq!(c.http.unwrap().listen.to_string(), "198.18.0.1:9180");
        let c = load_yaml(
            "http:\n  listen: 198.18.0.1:9180\n  token_file: /t\n",
            &http("127.0.0.1:1", None),
        )
        .unwrap();
        let h = c.http.unwrap();
        assert_eq!(h.listen.to_string(), "127.0.0.1:1");
        assert_eq!(h.token_file, Some(PathBuf::from("/t")));
        // A token file without a listener: nothing to serve, not an error.
        let c = load_yaml("http:\n  token_file: /t\n", &DaemonArgs::default()).unwrap();
        assert_eq!(c.http, None);
        let cases = [
            ("http:\n  listen: localhost:9180\n", "http.listen:"),
            ("http:\n  listen: 127.0.0.1\n", "http.listen:"),
            ("http:\n  listen: 127.0.0.1:99999\n", "http.listen:"),
            (
                "http:\n  listen: 230.1.2.3:80\n  token_file: /t\n",
                "http.listen:",
            ),
            ("http:\n  listn: 127.0.0.1:1\n", "listn"),
            (
                "http:\n  listen: 127.0.0.1:1\n  token_file: ''\n",
                "http.token_file:",
            ),
        ];
        for (yaml, want) in cases {
            let e = load_yaml(yaml, &DaemonArgs::default())
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{yaml:?} gave {e:?}, expected {want:?}");
            assert!(!e.contains('\n'), "multi-line error: {e:?}");
        }
    }

    #[test]
    fn missing_file_is_an_error_naming_it() {
        let e = Config::load(
            Some(Path::new("/nonexistent/diskd.yaml")),
            None,
            &DaemonArgs::default(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("/nonexistent/diskd.yaml"));
    }
}
