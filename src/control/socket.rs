//! The socket file: refuse a path a live daemon serves, take over a stale one, create it
//! mode 0600 (or 0660 for a `socket_group`) in a directory others cannot tamper with,
//! remove it on clean shutdown.

use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

use tokio::net::UnixListener;

use crate::config::GroupRef;

/// Why the socket cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    /// Another daemon answers on this path.
    #[error("socket {0}: a live diskd already serves it (stop it first, or use --socket)")]
    InUse(String),
    /// The parent directory is missing or unsafe.
    #[error("socket {0}: {1}")]
    Parent(String, String),
    /// The path exists and is not a socket.
    #[error("socket {0}: exists and is not a socket; not replacing it")]
    NotSocket(String),
    /// Any other I/O failure.
    #[error("socket {0}: {1}")]
    Io(String, io::Error),
}

/// Check that `path` can be served: the parent is a safe directory, and no live daemon
/// answers there. A stale socket file (nobody listening) is removed.
pub fn check_free(path: &Path) -> Result<(), SocketError> {
    let shown = path.display().to_string();
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let meta = std::fs::metadata(parent).map_err(|e| {
        SocketError::Parent(
            shown.clone(),
            format!("directory {}: {e}", parent.display()),
        )
    })?;
    if !meta.is_dir() {
        return Err(SocketError::Parent(
            shown,
            format!("{} is not a directory", parent.display()),
        ));
    }
    let mode = meta.permissions().mode();
    let sticky = mode & 0o1000 != 0;
    if mode & 0o022 != 0 && !sticky {
        return Err(SocketError::Parent(
            shown,
            format!(
                "directory {} is writable by others (mode {:o}); anyone could replace the socket",
                parent.display(),
                mode & 0o7777
            ),
        ));
    }
    let me = nix::unistd::getuid().as_raw();
    if meta.uid() != me && meta.uid() != 0 {
        return Err(SocketError::Parent(
            shown,
            format!("directory {} belongs to another user", parent.display()),
        ));
    }
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(SocketError::Io(shown, e)),
        Ok(m) if !m.file_type().is_socket() => Err(SocketError::NotSocket(shown)),
        Ok(_) => match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => Err(SocketError::InUse(shown)),
            Err(_) => {
                tracing::info!(socket = %shown, "removing a stale socket (nobody answers there)");
                std::fs::remove_file(path).map_err(|e| SocketError::Io(shown, e))
            }
        },
    }
}

/// Bind the listener and make the socket mode 0600, or 0660 and owned by `group` (its
/// members may connect; what they may run is `control::access`'s business).
pub fn bind(path: &Path, group: Option<&GroupRef>) -> Result<UnixListener, SocketError> {
    let shown = path.display().to_string();
    let listener = UnixListener::bind(path).map_err(|e| SocketError::Io(shown.clone(), e))?;
    let mode = match group {
        Some(g) => {
            std::os::unix::fs::chown(path, None, Some(g.gid))
                .map_err(|e| SocketError::Io(format!("{shown} (group {})", g.name), e))?;
            warn_if_unreachable(path, g);
            0o660
        }
        None => 0o600,
    };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| SocketError::Io(shown, e))?;
    Ok(listener)
}

/// A group-readable socket in a directory the group cannot enter reaches nobody: say so
/// at start rather than let every member get "permission denied".
fn warn_if_unreachable(path: &Path, g: &GroupRef) {
    let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) else {
        return;
    };
    let Ok(meta) = std::fs::metadata(parent) else {
        return;
    };
    let mode = meta.permissions().mode();
    let enterable = mode & 0o001 != 0 || (mode & 0o010 != 0 && meta.gid() == g.gid);
    if !enterable {
        tracing::warn!(
            socket = %path.display(),
            "socket_group {}: its members cannot enter {} (mode {:o}); make it 0755 \
             (RuntimeDirectoryMode= in the unit)",
            g.name,
            parent.display(),
            mode & 0o7777
        );
    }
}

/// Remove the socket file at shutdown (only if it is still a socket).
pub fn remove(path: &Path) {
    if let Ok(m) = std::fs::symlink_metadata(path) {
        if m.file_type().is_socket() {
            if let Err(e) = std::fs::remove_file(path) {
                tracing::warn!(socket = %path.display(), "cannot remove the socket: {e}");
            }
        }
    }
}
