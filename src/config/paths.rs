//! Where things are by default: the socket, the store, the home directory.

use super::*;

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

/// Expand a leading `~/` with `$HOME`.
pub fn expand_home(p: &Path) -> PathBuf {
    match p.strip_prefix("~") {
        Ok(rest) => home_dir().join(rest),
        Err(_) => p.to_path_buf(),
    }
}

pub(super) fn home_dir() -> PathBuf {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/root"))
}

pub(super) fn default_store() -> PathBuf {
    match std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        Some(d) => PathBuf::from(d).join("diskd"),
        None => home_dir().join(".local/share/diskd"),
    }
}
