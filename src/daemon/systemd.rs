//! Readiness for the service manager (`Type=notify` in `config/diskd.service`).
//!
//! READY=1 goes out once the control socket is bound and served, so units ordered after
//! diskd (and `systemctl start`) find a daemon that answers; STOPPING=1 goes out when
//! shutdown begins. Without `NOTIFY_SOCKET` (not started by systemd) both do nothing. A
//! failed notification is logged, never fatal: the daemon itself works either way.

use std::path::Path;

use sd_notify::NotifyState;

/// Tell the service manager that the daemon serves on `socket`.
pub(crate) fn ready(socket: &Path) {
    let status = format!("serving on {}", socket.display());
    send(&[NotifyState::Ready, NotifyState::Status(&status)]);
}

/// Tell the service manager that the daemon is shutting down.
pub(crate) fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("shutting down")]);
}

fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!("cannot notify the service manager through NOTIFY_SOCKET: {e}");
    }
}
