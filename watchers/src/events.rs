//! Kernel change notifications, so a watcher rescans when something happened instead of
//! waiting for its interval.
//!
//! - Block devices: kernel uevents over netlink (`NETLINK_KOBJECT_UEVENT`), filtered to the
//!   block subsystem. Where that socket cannot be opened, a comparison of
//!   `/proc/partitions` every 250 ms stands in: no child process, a few hundred bytes read.
//!   (A loop device attach arrives as `change`, not `add`; every action counts.)
//! - Mounts: `/proc/self/mountinfo` signals a change of the mount table with POLLPRI/POLLERR
//!   on an open descriptor, which tokio waits for through epoll: no polling at all.
//!
//! Events are coalesced: a burst (a disk with partitions, a loop attach) wakes the watcher
//! once.

use std::io::{self, Read, Seek};
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Duration;

use nix::sys::socket::{
    bind, recv, socket, AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType,
};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// How often `/proc/partitions` is compared when uevents are not available.
pub const PARTITIONS_POLL: Duration = Duration::from_millis(250);

/// A source of "block devices changed" events.
pub enum BlockEvents {
    /// Kernel uevents.
    Netlink(AsyncFd<OwnedFd>),
    /// Comparing `/proc/partitions`.
    Partitions {
        /// The content last seen.
        last: String,
    },
}

impl std::fmt::Debug for BlockEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BlockEvents::Netlink(_) => f.write_str("BlockEvents::Netlink"),
            BlockEvents::Partitions { .. } => f.write_str("BlockEvents::Partitions"),
        }
    }
}

fn netlink_socket() -> io::Result<AsyncFd<OwnedFd>> {
    let fd = socket(
        AddressFamily::Netlink,
        SockType::Datagram,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkKObjectUEvent,
    )?;
    // Group 1: the kernel's own uevents (udev's rebroadcasts are group 2).
    bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 1))?;
    register(fd, Interest::READABLE)
}

/// Register a descriptor with tokio. `AsyncFd::with_interest` is deprecated in favour of an
/// `unsafe` constructor because a registered type could close or replace its descriptor
/// behind tokio's back; `OwnedFd` and `File`, owned by the `AsyncFd` and never handed out
/// mutably except for reads, cannot, so the safe constructor is sound here and this crate
/// stays free of `unsafe`.
#[allow(deprecated)]
fn register<T: std::os::fd::AsRawFd>(inner: T, interest: Interest) -> io::Result<AsyncFd<T>> {
    AsyncFd::with_interest(inner, interest)
}

/// Whether a uevent message is about a block device.
pub fn is_block_uevent(msg: &[u8]) -> bool {
    msg.split(|&b| b == 0)
        .any(|field| field == b"SUBSYSTEM=block")
}

/// The device name (`DEVNAME=loop3`, relative to `/dev`) a uevent message is about.
pub fn uevent_devname(msg: &[u8]) -> Option<&str> {
    msg.split(|&b| b == 0)
        .find_map(|field| field.strip_prefix(b"DEVNAME="))
        .and_then(|name| std::str::from_utf8(name).ok())
}

impl BlockEvents {
    /// Open the best source available here.
    pub fn open() -> BlockEvents {
        match netlink_socket() {
            Ok(fd) => BlockEvents::Netlink(fd),
            Err(e) => {
                tracing::info!(
                    "kernel uevents unavailable ({e}); comparing /proc/partitions every {PARTITIONS_POLL:?}"
                );
                BlockEvents::Partitions {
                    last: std::fs::read_to_string("/proc/partitions").unwrap_or_default(),
                }
            }
        }
    }

    /// Which source this is, for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            BlockEvents::Netlink(_) => "uevent",
            BlockEvents::Partitions { .. } => "partitions",
        }
    }

    /// Wait until block devices changed; a burst of events counts once. Returns the
    /// devices the burst named (`/dev/loop3`), or `None` when that is not known (events
    /// were lost, a block event without a name, or the `/proc/partitions` fallback).
    pub async fn next(&mut self) -> io::Result<Option<Vec<String>>> {
        match self {
            BlockEvents::Netlink(fd) => {
                let mut buf = vec![0u8; 8192];
                loop {
                    let mut guard = fd.readable().await?;
                    let mut block = false;
                    let mut devices = Some(Vec::new());
                    // Drain everything queued: one wake-up per burst.
                    loop {
                        match guard.try_io(|inner| {
                            recv(inner.get_ref().as_raw_fd(), &mut buf, MsgFlags::empty())
                                .map_err(io::Error::from)
                        }) {
                            Ok(Ok(n)) if is_block_uevent(&buf[..n]) => {
                                block = true;
                                match (uevent_devname(&buf[..n]), devices.as_mut()) {
                                    (Some(name), Some(list)) => list.push(format!("/dev/{name}")),
                                    _ => devices = None,
                                }
                            }
                            Ok(Ok(_)) => {}
                            Ok(Err(e)) if e.raw_os_error() == Some(nix::libc::ENOBUFS) => {
                                // Events were lost: assume something changed, anywhere.
                                block = true;
                                devices = None;
                            }
                            Ok(Err(e)) => return Err(e),
                            Err(_would_block) => break,
                        }
                    }
                    if block {
                        // The moment the kernel's news reached us: the first step of a
                        // disk's way to the fleet that diskd can time (see BENCHMARKS.md,
                        // "Latency budget").
                        tracing::debug!(?devices, "block device event");
                        if let Some(list) = devices.as_mut() {
                            list.sort();
                            list.dedup();
                        }
                        return Ok(devices);
                    }
                }
            }
            BlockEvents::Partitions { last } => loop {
                tokio::time::sleep(PARTITIONS_POLL).await;
                let now = tokio::fs::read_to_string("/proc/partitions").await?;
                if now != *last {
                    *last = now;
                    return Ok(None);
                }
            },
        }
    }
}

/// Block device events opened on the first wait, as every watcher that rescans on them
/// needs: the daemon only asks for changes once it schedules the watcher, so a watcher
/// that is built but never run opens no socket. Each watcher owns its own instance, so
/// each sees every burst: the kernel gives every socket its own copy of an event, but a
/// message read from a shared socket would be gone for the other reader.
#[derive(Debug, Default)]
pub struct LazyBlockEvents {
    source: tokio::sync::Mutex<Option<BlockEvents>>,
}

impl LazyBlockEvents {
    /// Wait until block devices changed, opening the source on first use. Returns what
    /// [`BlockEvents::next`] names; when the source fails it is replaced by the
    /// `/proc/partitions` comparison and `None` is returned (something may have changed
    /// that nobody saw), so a watcher is never left without notifications. Cancel-safe, as
    /// `Watcher::changed` must be: `BlockEvents::next` only awaits before it has consumed
    /// anything, so a dropped wait loses no event.
    pub async fn next(&self) -> Option<Vec<String>> {
        let mut events = self.source.lock().await;
        let source = events.get_or_insert_with(|| {
            let e = BlockEvents::open();
            tracing::debug!(source = e.kind(), "watching block device events");
            e
        });
        match source.next().await {
            Ok(devices) => devices,
            Err(e) => {
                tracing::warn!(
                    "block device events failed: {e}; comparing /proc/partitions instead"
                );
                *events = Some(BlockEvents::Partitions {
                    last: std::fs::read_to_string("/proc/partitions").unwrap_or_default(),
                });
                None
            }
        }
    }
}

/// Change notifications of a mount table file (`/proc/self/mountinfo`).
#[derive(Debug)]
pub struct MountEvents {
    file: AsyncFd<std::fs::File>,
}

impl MountEvents {
    /// Open `path` and watch it for POLLPRI.
    pub fn open(path: &std::path::Path) -> io::Result<MountEvents> {
        let file = std::fs::File::open(path)?;
        Ok(MountEvents {
            file: register(file, Interest::PRIORITY)?,
        })
    }

    /// Wait until the mount table changed.
    pub async fn next(&mut self) -> io::Result<()> {
        let mut guard = self.file.ready_mut(Interest::PRIORITY).await?;
        // Reading the table again re-arms the notification.
        let f = guard.get_inner_mut();
        f.rewind()?;
        let mut sink = Vec::new();
        f.read_to_end(&mut sink)?;
        guard.clear_ready();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_uevents_are_recognised() {
        let loop_change = b"change@/devices/virtual/block/loop3\0ACTION=change\0DEVPATH=/devices/virtual/block/loop3\0SUBSYSTEM=block\0DEVNAME=loop3\0DEVTYPE=disk\0SEQNUM=4242\0";
        assert!(is_block_uevent(loop_change));
        let net = b"add@/devices/virtual/net/veth0\0ACTION=add\0SUBSYSTEM=net\0INTERFACE=veth0\0";
        assert!(!is_block_uevent(net));
        assert!(!is_block_uevent(b"SUBSYSTEM=blocked\0"));
        assert_eq!(uevent_devname(loop_change), Some("loop3"));
        assert_eq!(uevent_devname(net), None);
    }
}
