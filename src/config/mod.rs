//! One validated `Config` built from defaults, the YAML file and the flags, in that order.
//!
//! Everything that can be wrong with the configuration is found here, before anything
//! starts, and reported as one line naming the key (exit 2), so a daemon never runs
//! half-configured.

mod file;
mod hooks;
mod net;
mod paths;
mod settings;
#[cfg(test)]
mod tests;

use file::*;
pub use hooks::*;
pub use net::*;
pub use paths::*;
pub use settings::*;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::flags::{DaemonArgs, GossipArgs, HttpArgs, PeersArgs};
use crate::model::{limits, FleetEventKind};
use diskd_watchers::{DiskWatcherConfig, HardwareWatcherConfig, Schedule, SmartWatcherConfig};

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
    pub disks: DiskWatcherConfig,
    /// Mount table scan period.
    pub mount_interval: Duration,
    /// The sysfs hardware watcher, when enabled.
    pub hardware: Option<HardwareWatcherConfig>,
    /// The SMART watcher, when enabled (by default: when smartctl is found).
    pub smart: Option<SmartWatcherConfig>,
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

const KEY_BLKID: &str = "watchers.disks.command";
const KEY_SMARTCTL: &str = "watchers.smart.command";

/// The SMART watcher's settings. Enabled by default only when smartctl is found (a machine
/// without smartmontools is not told every 30 minutes that it is missing); enabled
/// explicitly (or with a command named), a missing smartctl shows as every disk's
/// `unknown` reason.
fn smart_config(
    s: crate::flags::SmartArgs,
    hardware: Option<&HardwareWatcherConfig>,
    filter: &diskd_watchers::filter::DeviceFilter,
) -> Result<Option<SmartWatcherConfig>, ConfigError> {
    let named = s.command.is_some();
    let command = match s.command {
        Some(c) => c.into_argv(KEY_SMARTCTL)?,
        None => vec!["smartctl".to_string()],
    };
    if command.is_empty() || command[0].is_empty() {
        return Err(err(format!("{KEY_SMARTCTL}: must name a program")));
    }
    let interval = match s.interval {
        Some(v) => duration("watchers.smart.interval", &v)?,
        None => Duration::from_secs(30 * 60),
    };
    let timeout = match s.timeout {
        Some(v) => duration("watchers.smart.timeout", &v)?,
        None => Duration::from_secs(30),
    };
    // A smartctl named in the config or on the command line is meant to run: if it is
    // missing, every disk says so.
    let found = program_path(&command[0]);
    let enabled = s.enabled.unwrap_or(named || found.is_some());
    // Run what was found: a user's PATH may lack the sbin directory smartctl lives in.
    let mut command = command;
    if let (false, Some(path)) = (named, found) {
        command[0] = path.display().to_string();
    }
    Ok(enabled.then(|| SmartWatcherConfig {
        command,
        interval,
        timeout,
        sysfs: hardware.map_or_else(|| PathBuf::from("/sys"), |h| h.root.clone()),
        filter: filter.clone(),
    }))
}

/// Where `program` is as an executable file: itself when it has a `/`, else in `$PATH` or
/// the sbin directories (where smartctl lives but a user's PATH may not reach).
pub fn program_path(program: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.contains('/') {
        return executable(Path::new(program)).then(|| PathBuf::from(program));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/local/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(program))
        .find(|p| executable(p))
}

/// Split a command line into words as a shell would (quotes keep a path with spaces one
/// word), without ever running a shell: the control socket's quoting with a shell's
/// leniency ([`crate::protocol::frame::split_command`]).
fn split_words(key: &str, s: &str) -> Result<Vec<String>, ConfigError> {
    crate::protocol::frame::split_command(s).map_err(|e| err(format!("{key}: {e}")))
}

/// Compile globs by the one rule of every pattern of diskd (`diskd_watchers::filter::glob`:
/// `*` does not cross `/`). A bad pattern names its key.
fn glob_set(key: &str, globs: &[String]) -> Result<globset::GlobSet, ConfigError> {
    let mut set = globset::GlobSetBuilder::new();
    for g in globs {
        let glob =
            diskd_watchers::filter::glob(g).map_err(|e| err(format!("{key}: {g:?}: {e}")))?;
        set.add(glob);
    }
    set.build().map_err(|e| err(format!("{key}: {e}")))
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

impl Config {
    /// Build the configuration: defaults, then `file` (if any), then `args`.
    /// `socket_flag` is the global `--socket`.
    pub fn load(
        file: Option<&Path>,
        socket_flag: Option<&Path>,
        args: &DaemonArgs,
    ) -> Result<Config, ConfigError> {
        let file = match file {
            Some(p) => load_file(p)?,
            None => DaemonArgs::default(),
        };
        // From here on `f` is the one set of options: the file's, with the flags over it.
        let f = layered(file, args)?;

        let node_name = match f.node_name {
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
        let store = f
            .store
            .map(|p| expand_home(&p))
            .unwrap_or_else(default_store);

        let m = f.multicast;
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
        let announce_interval = match m.announce_interval {
            Some(v) => duration("multicast.announce_interval", &v)?,
            None => Duration::from_secs(60),
        };
        let peer_expiry = match m.peer_expiry {
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
        let interface = m.interface.filter(|s| !s.is_empty());
        let multicast = Multicast {
            enabled: m.enabled.unwrap_or(true),
            group,
            port,
            interface,
            ttl,
            announce_interval,
            peer_expiry,
            legacy: m.legacy.unwrap_or(false),
            max_datagram,
        };

        let d = f.watchers.disks;
        let command = match d.command {
            Some(c) => c.into_argv(KEY_BLKID)?,
            None => vec!["blkid".to_string()],
        };
        if command.is_empty() || command[0].is_empty() {
            return Err(err(format!("{KEY_BLKID}: must name a program")));
        }
        let filter = diskd_watchers::filter::DeviceFilter::new(
            &d.include.unwrap_or_default(),
            &d.exclude.unwrap_or_default(),
        )
        .map_err(|e| err(format!("watchers.disks.{e}")))?;
        let disk_timeout = match d.timeout {
            Some(v) => duration("watchers.disks.timeout", &v)?,
            None => Duration::from_secs(15),
        };
        let mount_interval = match f.watchers.mounts.interval {
            Some(v) => duration("watchers.mounts.interval", &v)?,
            None => Duration::from_secs(10),
        };
        let h = f.watchers.hardware;
        let hardware = if h.enabled.unwrap_or(true) {
            Some(HardwareWatcherConfig {
                root: h.sysfs.unwrap_or_else(|| PathBuf::from("/sys")),
                schedule: Schedule {
                    interval: match h.interval {
                        Some(v) => duration("watchers.hardware.interval", &v)?,
                        None => Duration::from_secs(60),
                    },
                    // A sysfs read can reach a device: it is held to the disk scans' timeout.
                    timeout: disk_timeout,
                },
                filter: filter.clone(),
            })
        } else {
            None
        };
        let smart = smart_config(f.watchers.smart, hardware.as_ref(), &filter)?;
        let disks = DiskWatcherConfig {
            command,
            schedule: Schedule {
                interval: match d.interval {
                    Some(v) => duration("watchers.disks.interval", &v)?,
                    None => Duration::from_secs(60),
                },
                timeout: disk_timeout,
            },
            filter,
            // Blank-disk records come from the hardware watcher's devices: with it, the
            // disks blkid's scan does not report are probed one by one, so that a device is
            // called blank only when blkid saw it empty.
            probe_sysfs: hardware.as_ref().map(|h| h.root.clone()),
        };
        let ping_min_interval = match f.ping.min_interval {
            Some(v) => duration("ping.min_interval", &v)?,
            None => Duration::from_secs(5),
        };
        let key_files: Vec<PathBuf> = f
            .security
            .key_files
            .unwrap_or_default()
            .iter()
            .map(|p| expand_home(p))
            .collect();

        let max_clock_skew = match f.security.max_clock_skew {
            Some(v) => duration("security.max_clock_skew", &v)?,
            None => Duration::from_secs(300),
        };

        let fm = f.mount;
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
        let mount = MountSettings {
            enabled: fm.enabled.unwrap_or(false),
            root,
            allow_set,
            attach_command,
        };

        let gossip = gossip_settings(f.gossip, !key_files.is_empty())?;
        let mut warnings = Vec::new();
        let http = http_settings(f.http, &mut warnings)?;
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
        let socket_group = f.socket_group;
        let admin_group = f.control.admin_group;
        for (key, g) in [
            ("socket_group", &socket_group),
            ("control.admin_group", &admin_group),
        ] {
            if g.as_deref().is_some_and(|g| g.trim().is_empty()) {
                return Err(err(format!("{key}: must name a group")));
            }
        }
        let peers = PeerLimits::from_options(f.peers)?;
        let max_sessions_per_user =
            max_sessions_per_user(f.control.max_sessions_per_user.as_ref())?;
        let log_format = match f.log.format {
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
            smart,
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

/// Node names travel in replies and (later) on the wire: keep them printable and short.
fn validate_node_name(name: &str) -> Result<(), ConfigError> {
    if name.is_empty() || name.len() > limits::NODE_NAME {
        return Err(err(format!(
            "node_name: {name:?} must be 1 to {} bytes long",
            limits::NODE_NAME
        )));
    }
    if name.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(err(format!(
            "node_name: {name:?} must not contain spaces or control characters"
        )));
    }
    Ok(())
}
