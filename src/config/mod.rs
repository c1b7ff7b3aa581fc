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
mod watchers;

use file::*;
pub use hooks::*;
pub use net::*;
pub use paths::*;
pub use settings::*;
pub use watchers::*;

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
    /// What the watchers look at, how often.
    pub watchers: Watchers,
    /// Answer at most one ping per this period.
    pub ping_min_interval: Duration,
    /// How peers' datagrams are sealed and checked.
    pub security: Security,
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
    /// Who may run what on the control socket, and how many sessions each.
    pub control: ControlSettings,
    /// How the daemon's log lines are written.
    pub log_format: LogFormat,
    /// What the configuration is odd about without being wrong; logged at start (the
    /// log is set up from the configuration, so it cannot be written while loading).
    pub warnings: Vec<String>,
    /// The read-only HTTP listener (dashboards, metrics, JSON API); `None`: off.
    pub http: Option<HttpSettings>,
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

/// Key `key`'s duration, `default` when it is not set: every duration key is optional, and
/// none may be zero (a zero interval would spin, a zero timeout would fail every run).
fn duration(key: &str, value: Option<String>, default: Duration) -> Result<Duration, ConfigError> {
    let Some(value) = value else {
        return Ok(default);
    };
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
                .control
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

        let multicast = Multicast::from_options(f.multicast)?;
        let watchers = Watchers::from_options(f.watchers)?;
        let ping_min_interval = duration(
            "ping.min_interval",
            f.ping.min_interval,
            Duration::from_secs(5),
        )?;
        let security = Security::from_options(f.security)?;
        let mount = MountSettings::from_options(f.mount)?;
        let gossip = gossip_settings(f.gossip, !security.key_files.is_empty())?;
        let mut warnings = Vec::new();
        let http = http_settings(f.http, &mut warnings)?;
        let hooks = hooks_settings(f.hooks.unwrap_or_default())?;
        if security.key_files.is_empty() {
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
        // The groups first, then the limits: the first key wrong is the one reported.
        group_name("socket_group", &socket_group)?;
        group_name("control.admin_group", &f.control.admin_group)?;
        let peers = PeerLimits::from_options(f.peers)?;
        let control = ControlSettings::from_options(f.control)?;
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
            watchers,
            ping_min_interval,
            security,
            mount,
            hooks,
            hooks_max_running,
            socket_group,
            control,
            log_format,
            warnings,
            http,
        })
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
