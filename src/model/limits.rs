//! Bounds on what one peer may tell us and on what we send; anything beyond is rejected,
//! not truncated. Shared by the wire format (which enforces them) and the configuration
//! (which must not let `max_datagram` leave the range the wire accepts).

/// Largest datagram accepted (the largest UDP payload over IPv4).
pub const MAX_DATAGRAM: usize = 65_507;
/// Smallest `max_datagram` a sender may be configured with.
pub const MIN_DATAGRAM: usize = 576;
/// Node name length, bytes.
pub const NODE_NAME: usize = 64;
/// Chunks in one inventory generation.
pub const CHUNKS: u16 = 1024;
/// Disks in one datagram.
pub const DISKS_PER_CHUNK: usize = 512;
/// Disks in one peer's inventory.
pub const DISKS_PER_PEER: u32 = 8192;
/// UUID length.
pub const UUID: usize = 64;
/// Label length (blkid labels are at most 256 bytes in practice).
pub const LABEL: usize = 256;
/// Device path length.
pub const DEVICE: usize = 256;
/// Filesystem type length.
pub const FSTYPE: usize = 32;
/// Mountpoints per disk.
pub const MOUNTPOINTS: usize = 16;
/// Mountpoint length.
pub const MOUNTPOINT: usize = 1024;
/// Model, vendor, serial and WWN length (sysfs values are far shorter; an NVMe wwid is
/// the longest, about 70 bytes).
pub const HARDWARE_TEXT: usize = 128;
/// Transport name length (`usb`, `nvme`, ...).
pub const TRANSPORT: usize = 16;
/// Backing file path length of a loop device.
pub const BACKING_FILE: usize = 1024;
/// Most control sessions open at once.
pub const MAX_SESSIONS: usize = 1024;
/// Sessions of the control table only privileged callers (root, the daemon's user,
/// admins) may use: what is left to them when other users together hold all they may.
pub const RESERVED_SESSIONS: usize = 64;
/// The default `control.max_sessions_per_user`.
pub const DEFAULT_MAX_SESSIONS_PER_USER: usize = 32;
/// Of the reserved sessions, those only root may use (an admin is a local user too).
pub const ROOT_SESSIONS: usize = 8;
