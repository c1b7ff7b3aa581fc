//! The records everyone shares: what a host reports about a disk, a (host, disk) sighting,
//! a peer, an attach. The store keeps them (postcard in sled: positional, so a field is
//! never removed or reordered without a new store `SCHEMA_VERSION`), the peer layer sends
//! them, the control server shows them.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Millis;

/// A disk as a host reports it: the facts that travel between daemons.
///
/// A device without a filesystem is a record too (`uuid`, `fstype` null): a blank disk is
/// exactly what someone looking for "the new disk" wants to find. Whether it *is* blank
/// (nothing on it, safe to format) is what its [`Probe`] says, never the missing
/// filesystem alone: a device blkid could not open has no filesystem type either.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
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
    /// What the hardware says (all unknown from a watcher that cannot tell, or from a
    /// peer that predates hardware identity).
    pub hardware: Hardware,
    /// What its host's blkid made of it (`Unknown` from a peer or a store that predates
    /// probing). Wire trailer 3 and store schema 5 carry it.
    #[serde(default)]
    pub probe: Probe,
    /// The SMART health of the physical disk (a partition shows its whole disk's); `None`
    /// when no reading exists (no SMART watcher, not a disk, an older peer).
    ///
    /// Skipped by serde on purpose: postcard writes a record positionally, and the layouts
    /// that carry whole records (the delta, the store's older schemas) must stay those of
    /// the previous release. Wire trailer 4, the delta's condition trailer and store
    /// schema 6 carry it explicitly.
    #[serde(skip)]
    pub health: Option<DiskHealth>,
    /// How full its mounted filesystem is (`statvfs`, refreshed with the mount watcher);
    /// `None` when not mounted or not asked. Carried like `health`.
    #[serde(skip)]
    pub fs: Option<FsUsage>,
}

/// What a host's blkid made of a device: the only ground on which `list --blank` offers a
/// device to be formatted, here and on every peer, so it travels with the record.
///
/// The wire and the store carry it as one byte ([`Probe::code`]); a code this build does
/// not know reads as `Unknown`, which is never blank: an operator must never be told to
/// format a disk nobody saw empty.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Probe {
    /// No probe outcome: a record from a peer or store that predates probing, or a device
    /// blkid has not looked at yet. Never blank.
    #[default]
    Unknown,
    /// blkid reported a signature: a filesystem, a partition table, a RAID or LVM member.
    Signature,
    /// blkid probed the device alone (`blkid -p`) and found no signature.
    Empty,
    /// Other block devices use it (holders: device-mapper, md, LVM; or partitions): not
    /// blank whatever is on it.
    InUse,
    /// blkid could not probe it (permission, I/O error, timeout): its contents are unknown.
    Failed,
}

impl Probe {
    /// Its byte on the wire and in the store (stable: codes are never reused).
    pub fn code(self) -> u8 {
        match self {
            Probe::Unknown => 0,
            Probe::Signature => 1,
            Probe::Empty => 2,
            Probe::InUse => 3,
            Probe::Failed => 4,
        }
    }

    /// The outcome of a code; one this build does not know (a later release's) is
    /// `Unknown`.
    pub fn from_code(code: u8) -> Probe {
        match code {
            1 => Probe::Signature,
            2 => Probe::Empty,
            3 => Probe::InUse,
            4 => Probe::Failed,
            _ => Probe::Unknown,
        }
    }
}

/// What sysfs knows about a block device; defined by the hardware watcher that reads it
/// (one type from sysfs to the wire and the store).
pub use diskd_watchers::Hardware;

/// A disk's SMART reading and its verdict; defined by the SMART watcher that takes it.
pub use diskd_watchers::{DiskHealth, HealthState};

/// How full a mounted filesystem is; defined by the mount watcher that asks.
pub use diskd_watchers::FsUsage;

/// A WWN as compared: lower case, without the `0x`, `naa.` or `eui.` prefix, so
/// `0x5000C500A1B2C3D4` (udev) finds `naa.5000c500a1b2c3d4` (sysfs).
pub fn wwn_key(wwn: &str) -> String {
    let lower = wwn.trim().to_ascii_lowercase();
    for prefix in ["0x", "naa.", "eui."] {
        if let Some(rest) = lower.strip_prefix(prefix) {
            return rest.to_string();
        }
    }
    lower
}

impl DiskRecord {
    /// Whether the record itself says "nothing on it": blkid probed it and found no
    /// signature, nothing uses it, it holds no filesystem and is not mounted. (Partitions
    /// of the disk that are still attached are judged against the rest of the host's
    /// records: see `list --blank`.)
    pub fn probed_empty(&self) -> bool {
        self.probe == Probe::Empty
            && self.uuid.is_none()
            && self.fstype.is_none()
            && self.mountpoints.is_empty()
    }

    /// The key that identifies this disk on one host: its UUID (lower case) when it has
    /// one, so the same disk on another device path stays one record; else its WWN or
    /// serial (a blank disk moved to another port or host is still the same disk); else
    /// its device.
    pub fn identity(&self) -> String {
        match self.identity_parts() {
            ("uuid:", u) => format!("uuid:{}", u.to_ascii_lowercase()),
            ("wwn:", w) => format!("wwn:{}", wwn_key(w)),
            (kind, text) => format!("{kind}{text}"),
        }
    }

    /// The kind of [`DiskRecord::identity`] (`uuid:`, `wwn:`, `serial:` or `dev:`) and its
    /// text before case folding.
    pub fn identity_parts(&self) -> (&'static str, &str) {
        identity_parts(
            self.uuid.as_deref(),
            self.hardware.wwn.as_deref(),
            self.hardware.serial.as_deref(),
            &self.device,
        )
    }

    /// Whether a query term names this disk: UUID in any case, label exactly, device path
    /// exactly, serial number exactly, WWN in any case with or without its `0x`/`naa.`
    /// prefix.
    pub fn matches(&self, term: &str) -> bool {
        matches(
            self.uuid.as_deref(),
            self.label.as_deref(),
            &self.device,
            self.hardware.serial.as_deref(),
            self.hardware.wwn.as_deref(),
            term,
        )
    }
}

/// See [`DiskRecord::identity_parts`]; shared with the store's borrowed records.
pub fn identity_parts<'a>(
    uuid: Option<&'a str>,
    wwn: Option<&'a str>,
    serial: Option<&'a str>,
    device: &'a str,
) -> (&'static str, &'a str) {
    let nonempty = |v: Option<&'a str>| v.filter(|s| !s.trim().is_empty());
    if let Some(u) = nonempty(uuid) {
        ("uuid:", u)
    } else if let Some(w) = nonempty(wwn) {
        ("wwn:", w)
    } else if let Some(s) = nonempty(serial) {
        ("serial:", s)
    } else {
        ("dev:", device)
    }
}

/// See [`DiskRecord::matches`]; shared with the store's borrowed records.
pub fn matches(
    uuid: Option<&str>,
    label: Option<&str>,
    device: &str,
    serial: Option<&str>,
    wwn: Option<&str>,
    term: &str,
) -> bool {
    uuid.is_some_and(|u| u.eq_ignore_ascii_case(term))
        || label == Some(term)
        || device == term
        || serial.is_some_and(|s| !s.is_empty() && s == term)
        || wwn.is_some_and(|w| !w.trim().is_empty() && wwn_key(w) == wwn_key(term))
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

/// One SMART reading of a disk as its host's store keeps it (`Store::health_log`): when it
/// was taken, the verdict, and the figures whose trend tells a disk going bad (the last 64
/// readings are kept per host and disk, so a slow rise of reallocated sectors shows).
///
/// One type for the reading wherever it goes, its time and verdict in the representation
/// the place wants: here ms since the epoch and a [`HealthState`]; `history --json` shows
/// the time in RFC 3339 (`view::ReadingView`), the store keeps the verdict as its
/// [`HealthState::code`] (`store::layout::Reading`, positional postcard).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthPoint<Time = Millis, State = HealthState> {
    /// When the reading was taken (`DiskHealth::checked`).
    pub checked: Time,
    /// The verdict then.
    pub state: State,
    /// Temperature then, degrees Celsius.
    pub temperature_c: Option<i32>,
    /// Reallocated sectors (or grown defects) then.
    pub reallocated_sectors: Option<u64>,
    /// Sectors waiting to be reallocated then.
    pub pending_sectors: Option<u64>,
    /// NVMe media and data integrity errors then.
    pub media_errors: Option<u64>,
}

impl<Time, State> HealthPoint<Time, State> {
    /// The same reading, its time and its verdict turned into another representation.
    pub fn map<T, S>(
        self,
        time: impl FnOnce(Time) -> T,
        state: impl FnOnce(State) -> S,
    ) -> HealthPoint<T, S> {
        HealthPoint {
            checked: time(self.checked),
            state: state(self.state),
            temperature_c: self.temperature_c,
            reallocated_sectors: self.reallocated_sectors,
            pending_sectors: self.pending_sectors,
            media_errors: self.media_errors,
        }
    }
}

/// One stay of a disk: a stretch of time it spent on one host at one device path.
///
/// Its times are `Time`: ms since the epoch as the store gives them; RFC 3339 text in
/// `history --json`, whose [`view::StayView`](crate::view::StayView) carries a stay and
/// shows neither its node id nor `current` (hence their `serde(skip)`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stay<Time = Millis> {
    /// Node id of the host.
    #[serde(skip)]
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
    pub first_seen: Time,
    /// When the disk was last seen there (for a current stay, as stored: its host's seen
    /// time extends it).
    pub last_seen: Time,
    /// The disk is still there (in its host's latest inventory, at this device).
    #[serde(skip)]
    pub current: bool,
}

impl<Time> Stay<Time> {
    /// The same stay, its times turned into another representation.
    pub fn map<T>(self, time: impl Fn(Time) -> T) -> Stay<T> {
        Stay {
            node_id: self.node_id,
            host: self.host,
            addr: self.addr,
            device: self.device,
            label: self.label,
            first_seen: time(self.first_seen),
            last_seen: time(self.last_seen),
            current: self.current,
        }
    }
}
