//! The YAML file's schema: what may be written, parsed strictly (an unknown key is an
//! error naming it), before anything is merged or checked.

use super::*;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileConfig {
    pub(super) node_name: Option<String>,
    pub(super) socket: Option<PathBuf>,
    pub(super) store: Option<PathBuf>,
    #[serde(default)]
    pub(super) multicast: FileMulticast,
    #[serde(default)]
    pub(super) watchers: FileWatchers,
    #[serde(default)]
    pub(super) ping: FilePing,
    #[serde(default)]
    pub(super) security: FileSecurity,
    #[serde(default)]
    pub(super) mount: FileMount,
    #[serde(default)]
    pub(super) gossip: FileGossip,
    /// `http:` with every key commented out (as in config/diskd.yaml) is null: off.
    pub(super) http: Option<FileHttp>,
    /// Each entry is read on its own (see [`hooks_settings`]), so an error names
    /// `hooks[i]` and its key.
    pub(super) hooks: Option<Vec<serde_yaml::Value>>,
    pub(super) hooks_max_running: Option<usize>,
    pub(super) socket_group: Option<String>,
    #[serde(default)]
    pub(super) control: FileControl,
    #[serde(default)]
    pub(super) log: FileLog,
    #[serde(default)]
    pub(super) peers: FilePeers,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FilePeers {
    pub(super) max: Option<usize>,
    pub(super) max_records: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileControl {
    pub(super) admin_group: Option<String>,
    /// Read as any YAML value, so a string or a negative number gets a message naming
    /// the key and the range rather than serde's.
    pub(super) max_sessions_per_user: Option<serde_yaml::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileLog {
    pub(super) format: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileGossip {
    pub(super) enabled: Option<bool>,
    pub(super) seeds: Option<Vec<String>>,
    pub(super) port: Option<u16>,
    pub(super) listen: Option<String>,
    pub(super) advertise: Option<String>,
    pub(super) interval: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileHttp {
    pub(super) listen: Option<String>,
    pub(super) token_file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileMulticast {
    pub(super) enabled: Option<bool>,
    pub(super) group: Option<String>,
    pub(super) port: Option<u16>,
    pub(super) interface: Option<String>,
    pub(super) ttl: Option<u32>,
    pub(super) announce_interval: Option<String>,
    pub(super) peer_expiry: Option<String>,
    pub(super) legacy: Option<bool>,
    pub(super) max_datagram: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileWatchers {
    #[serde(default)]
    pub(super) disks: FileDisks,
    #[serde(default)]
    pub(super) mounts: FileMounts,
    #[serde(default)]
    pub(super) hardware: FileHardware,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileHardware {
    pub(super) enabled: Option<bool>,
    pub(super) interval: Option<String>,
    pub(super) sysfs: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileDisks {
    pub(super) command: Option<StringOrList>,
    pub(super) interval: Option<String>,
    pub(super) timeout: Option<String>,
    pub(super) include: Option<Vec<String>>,
    pub(super) exclude: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileMounts {
    pub(super) interval: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FilePing {
    pub(super) min_interval: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileSecurity {
    pub(super) key_files: Option<Vec<PathBuf>>,
    pub(super) max_clock_skew: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileMount {
    pub(super) enabled: Option<bool>,
    pub(super) root: Option<PathBuf>,
    pub(super) allow: Option<Vec<String>>,
    pub(super) attach_command: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum StringOrList {
    One(String),
    Many(Vec<String>),
}

impl StringOrList {
    pub(super) fn into_argv(self, key: &str) -> Result<Vec<String>, ConfigError> {
        match self {
            StringOrList::One(s) => split_words(key, &s),
            StringOrList::Many(v) => Ok(v),
        }
    }
}

pub(super) fn load_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| err(format!("config {}: {e}", path.display())))?;
    if text.trim().is_empty() {
        return Ok(FileConfig::default());
    }
    serde_yaml::from_str(&text).map_err(|e| err(format!("config {}: {e}", path.display())))
}
