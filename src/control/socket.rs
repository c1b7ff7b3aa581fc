//! The socket file: refuse a path a live daemon serves, take over a stale one, create it
//! mode 0600 (or 0660 for a `socket_group`) in a directory others cannot tamper with,
//! remove it on clean shutdown.
//!
//! A socket file is stale only when connecting to it is refused (`ECONNREFUSED`: nobody
//! listens). Any other failure leaves the file alone and stops the start: a live daemon
//! whose backlog is full answers `EAGAIN`, and removing its socket would cut it off from
//! every client for good. The probe does not wait (a non-blocking connect), so a stuck
//! daemon cannot hang this one's start either.

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
    /// Something listens on this path but takes no connection now (its backlog is full).
    #[error(
        "socket {0}: a process listens there but accepts no connection (its backlog is full: \
         a live diskd that is stuck or stopped?); not removing it (stop that process, or use --socket)"
    )]
    Busy(String),
    /// Connecting failed otherwise: whether a daemon serves the path is unknown.
    #[error(
        "socket {0}: cannot tell whether a daemon serves it (connect: {1}); not removing it \
         (remove it by hand if it is stale, or use --socket)"
    )]
    Unknown(String, io::Error),
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
        Ok(_) => match probe(path) {
            Ok(()) => Err(SocketError::InUse(shown)),
            Err(e) if e.raw_os_error() == Some(nix::libc::ECONNREFUSED) => {
                tracing::info!(socket = %shown, "removing a stale socket (nobody listens there)");
                match std::fs::remove_file(path) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => Err(SocketError::Io(shown, e)),
                    _ => Ok(()),
                }
            }
            // Removed between the look and the connect: free.
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Err(SocketError::Busy(shown)),
            Err(e) => Err(SocketError::Unknown(shown, e)),
        },
    }
}

/// Connect to `path` without waiting: a unix stream connect either is queued at once or
/// fails (`EAGAIN` when the listener's backlog is full, `ECONNREFUSED` when nobody
/// listens); it never blocks or goes on in the background.
fn probe(path: &Path) -> io::Result<()> {
    connect_now(path).map(drop)
}

/// The connection [`probe`] makes (a test keeps it, so that it stays in the backlog).
fn connect_now(path: &Path) -> io::Result<std::os::fd::OwnedFd> {
    use nix::sys::socket::{connect, socket, AddressFamily, SockFlag, SockType, UnixAddr};
    let fd = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    let addr = UnixAddr::new(path)?;
    connect(std::os::fd::AsRawFd::as_raw_fd(&fd), &addr)?;
    Ok(fd)
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

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::socket::{
        bind, listen, socket, AddressFamily, Backlog, SockFlag, SockType, UnixAddr,
    };
    use std::os::fd::{AsRawFd, OwnedFd};

    /// A listener that never accepts, with a backlog of one.
    fn listener(path: &Path) -> OwnedFd {
        let fd = socket(
            AddressFamily::Unix,
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .unwrap();
        bind(fd.as_raw_fd(), &UnixAddr::new(path).unwrap()).unwrap();
        listen(&fd, Backlog::new(1).unwrap()).unwrap();
        fd
    }

    #[test]
    fn only_a_refused_connect_makes_a_socket_stale() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sock");

        // Nobody listens: stale, removed.
        drop(listener(&path));
        check_free(&path).unwrap();
        assert!(!path.exists(), "a stale socket is taken over");

        // A listener: in use, kept.
        let l = listener(&path);
        let e = check_free(&path).unwrap_err();
        assert!(matches!(e, SocketError::InUse(_)), "{e}");
        assert!(path.exists());

        // Its backlog full (it accepts nothing): EAGAIN, kept, and said so.
        let mut queued = Vec::new();
        let full = loop {
            match connect_now(&path) {
                Ok(fd) => queued.push(fd),
                Err(e) => break e,
            }
            assert!(queued.len() < 100, "the backlog never filled");
        };
        assert_eq!(full.kind(), io::ErrorKind::WouldBlock, "{full}");
        let e = check_free(&path).unwrap_err();
        assert!(matches!(e, SocketError::Busy(_)), "{e}");
        let text = e.to_string();
        assert!(
            text.contains("backlog is full") && text.contains("not removing it"),
            "{text}"
        );
        assert!(!text.contains('\n'), "{text:?}");
        assert!(path.exists(), "a busy daemon's socket was removed");
        drop(queued);
        drop(l);
    }
}
