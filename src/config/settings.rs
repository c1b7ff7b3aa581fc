//! The validated settings of each section of the configuration, as the services get them.

use super::*;

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

impl Multicast {
    /// Checked here, before any socket opens: a group that is not multicast, a port 0 or
    /// an expiry shorter than the announce period is refused with its key.
    pub(super) fn from_options(m: crate::flags::MulticastArgs) -> Result<Multicast, ConfigError> {
        let group_text = m.group.unwrap_or_else(|| DEFAULT_GROUP.into());
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
        let port = m.port.unwrap_or(DEFAULT_PORT);
        if port == 0 {
            return Err(err("multicast.port: must be 1-65535"));
        }
        let ttl = m.ttl.unwrap_or(1);
        if ttl > 255 {
            return Err(err(format!("multicast.ttl: {ttl} is not in 0-255")));
        }
        let max_datagram = m.max_datagram.unwrap_or(1400);
        if !(limits::MIN_DATAGRAM..=limits::MAX_DATAGRAM).contains(&max_datagram) {
            return Err(err(format!(
                "multicast.max_datagram: {max_datagram} is not in {}-{}",
                limits::MIN_DATAGRAM,
                limits::MAX_DATAGRAM
            )));
        }
        let announce_interval = duration(
            "multicast.announce_interval",
            m.announce_interval,
            Duration::from_secs(60),
        )?;
        let peer_expiry = duration(
            "multicast.peer_expiry",
            m.peer_expiry,
            announce_interval * 3,
        )?;
        if peer_expiry < announce_interval {
            return Err(err(format!(
                "multicast.peer_expiry: {} is shorter than announce_interval {}",
                humantime::format_duration(peer_expiry),
                humantime::format_duration(announce_interval)
            )));
        }
        let interface = m.interface.filter(|s| !s.is_empty());
        Ok(Multicast {
            enabled: m.enabled.unwrap_or(true),
            group,
            port,
            interface,
            ttl,
            announce_interval,
            peer_expiry,
            legacy: m.legacy.unwrap_or(false),
            max_datagram,
        })
    }
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
pub(super) fn system_group(key: &str, name: &str) -> Result<GroupRef, ConfigError> {
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

/// The `security` section: how peers' datagrams are sealed and checked. Without key files
/// every peer is heard unsealed, which gossip refuses and a hook on peers' events must
/// accept in so many words (`allow_unsealed`).
#[derive(Debug, Clone)]
pub struct Security {
    /// Key files; the first signs.
    pub key_files: Vec<PathBuf>,
    /// Authenticated datagrams whose timestamp is further than this from our clock are
    /// dropped (bounds how old a replayed capture can be).
    pub max_clock_skew: Duration,
}

impl Security {
    /// Key paths expand `~` here, so the peer layer loads exactly the files named.
    pub(super) fn from_options(s: crate::flags::SecurityArgs) -> Result<Security, ConfigError> {
        Ok(Security {
            key_files: s
                .key_files
                .unwrap_or_default()
                .iter()
                .map(|p| expand_home(p))
                .collect(),
            max_clock_skew: duration(
                "security.max_clock_skew",
                s.max_clock_skew,
                Duration::from_secs(300),
            )?,
        })
    }
}

/// The `control` section: who may run the commands that change something, and how many
/// sessions one user may hold, so that no user can lock the others out of the socket.
#[derive(Debug, Clone)]
pub struct ControlSettings {
    /// The group that may run the commands that change something (`control.admin_group`),
    /// by name: resolved at start (see [`Config::access`]).
    pub admin_group: Option<String>,
    /// At most this many control sessions open at once per uid
    /// (`control.max_sessions_per_user`), so that one user cannot fill the session table;
    /// root, the daemon's user and admins are not held to it.
    pub max_sessions_per_user: usize,
}

impl ControlSettings {
    /// The admin group is not looked up here but at start ([`Config::access`]), so a
    /// config naming a group this machine lacks still loads; `Config::load` checks that
    /// it names something, with the socket's group, before any limit.
    pub(super) fn from_options(
        c: crate::flags::ControlArgs,
    ) -> Result<ControlSettings, ConfigError> {
        Ok(ControlSettings {
            max_sessions_per_user: max_sessions_per_user(c.max_sessions_per_user.as_ref())?,
            admin_group: c.admin_group,
        })
    }
}

/// A group named in the configuration names something (it is looked up at start).
pub(super) fn group_name(key: &str, group: &Option<String>) -> Result<(), ConfigError> {
    match group {
        Some(g) if g.trim().is_empty() => Err(err(format!("{key}: must name a group"))),
        _ => Ok(()),
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

impl MountSettings {
    /// The allow globs are compiled once, here, with the device globs' rules; a relative
    /// root is refused, so where disks are mounted never depends on the working directory.
    pub(super) fn from_options(fm: crate::flags::MountArgs) -> Result<MountSettings, ConfigError> {
        let allow = fm.allow.unwrap_or_default();
        let allow_set = glob_set("mount.allow", &allow)?;
        let root = fm
            .root
            .map(|p| expand_home(&p))
            .unwrap_or_else(|| PathBuf::from("/srv/diskd"));
        if !root.is_absolute() {
            return Err(err(format!(
                "mount.root: {} is not an absolute path",
                root.display()
            )));
        }
        let attach_command = fm.attach_command.unwrap_or_else(|| DEFAULT_ATTACH.into());
        if split_words("mount.attach_command", &attach_command)?.is_empty() {
            return Err(err("mount.attach_command: must name a program"));
        }
        Ok(MountSettings {
            enabled: fm.enabled.unwrap_or(false),
            root,
            allow_set,
            attach_command,
        })
    }
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

    pub(super) fn from_options(f: PeersArgs) -> Result<PeerLimits, ConfigError> {
        let max = f.max.unwrap_or(Self::DEFAULT_MAX);
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
