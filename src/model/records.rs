//! The records everyone shares: what a host reports about a disk, a (host, disk) sighting,
//! a peer, an attach. The store keeps them (postcard in sled: positional, so a field is
//! never removed or reordered without a new store `SCHEMA_VERSION`), the peer layer sends
//! them, the control server shows them.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Millis;

/// A disk as a host reports it: the facts that travel between daemons.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskRecord {
    /// Filesystem UUID.
    pub uuid: Option<String>,
    /// Filesystem label.
    pub label: Option<String>,
    /// Device path on its host.
    pub device: String,
    /// Filesystem type.
    pub fstype: Option<String>,
    /// Where it is mounted on its host.
    pub mountpoints: Vec<String>,
}

impl DiskRecord {
    /// The key that identifies this disk on one host: its UUID (lower case) when it has
    /// one, so the same disk on another device path stays one record; else its device.
    pub fn identity(&self) -> String {
        match &self.uuid {
            Some(u) if !u.is_empty() => format!("uuid:{}", u.to_ascii_lowercase()),
            _ => format!("dev:{}", self.device),
        }
    }

    /// Whether a query term names this disk: UUID in any case, label exactly, device path
    /// exactly.
    pub fn matches(&self, term: &str) -> bool {
        self.uuid
            .as_deref()
            .is_some_and(|u| u.eq_ignore_ascii_case(term))
            || self.label.as_deref() == Some(term)
            || self.device == term
    }
}

/// A disk seen on a host: the (host, disk) pair with its history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sighting {
    /// Node id of the host.
    pub node_id: String,
    /// Node name of the host when last seen.
    pub host: String,
    /// Address of the host when last seen.
    pub addr: Option<String>,
    /// The disk as last reported.
    pub disk: DiskRecord,
    /// Whether the disk is in its host's latest inventory.
    pub present: bool,
    /// When this host first reported this disk.
    pub first_seen: Millis,
    /// When this host last reported this disk.
    pub last_seen: Millis,
}

/// Liveness window of a Perl diskd peer: three of its 600 s announce periods.
pub const LEGACY_EXPIRY: Duration = Duration::from_secs(1800);

/// A peer daemon ever heard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerRecord {
    /// Its permanent node id.
    pub node_id: String,
    /// Its node name.
    pub node: String,
    /// The address its last datagram came from.
    pub addr: Option<String>,
    /// When it was first heard.
    pub first_seen: Millis,
    /// When it was last heard.
    pub last_seen: Millis,
    /// It said goodbye after it was last heard.
    pub gone: bool,
    /// It speaks the Perl diskd wire format.
    pub legacy: bool,
    /// How many disks its latest inventory holds.
    pub disks: usize,
    /// Fingerprint of the key that sealed its last datagram (none without keys).
    pub key: Option<String>,
    /// Boot id of its run when last heard (replay protection across our restarts).
    pub boot: u64,
    /// The latest timestamp it sent that we accepted, ms since the epoch.
    pub sent_ms: u64,
}

impl PeerRecord {
    /// Heard within `expiry` and not gone. A legacy (Perl) peer announces only every 600 s,
    /// so for it the expiry is at least three of its announce periods.
    pub fn is_live(&self, now: Millis, expiry: Duration) -> bool {
        let expiry = if self.legacy {
            expiry.max(LEGACY_EXPIRY)
        } else {
            expiry
        };
        !self.gone && now.saturating_sub(self.last_seen) <= expiry.as_millis() as Millis
    }
}

/// A remote mount made reachable here by `mount --attach`, so `umount` can undo it even
/// after a restart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachRecord {
    /// The directory on this machine.
    pub dir: String,
    /// The owner's node name.
    pub host: String,
    /// The mountpoint on the owner.
    pub path: String,
}

/// One stay of a disk: a stretch of time it spent on one host at one device path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stay {
    /// Node id of the host.
    pub node_id: String,
    /// Node name of the host then.
    pub host: String,
    /// Address of the host then.
    pub addr: Option<String>,
    /// Device path on the host.
    pub device: String,
    /// Filesystem label then.
    pub label: Option<String>,
    /// When the stay began.
    pub first_seen: Millis,
    /// When the disk was last seen there (for a current stay, as stored: its host's seen
    /// time extends it).
    pub last_seen: Millis,
    /// The disk is still there (in its host's latest inventory, at this device).
    pub current: bool,
}
