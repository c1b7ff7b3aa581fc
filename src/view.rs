//! The fleet-wide picture as users see it: the JSON shapes docs/commands.md shows and the
//! order and liveness rules, computed from the store's raw records.
//!
//! Kept apart from the store so that the rules ("live first, then most recently seen";
//! "live = in the latest inventory of a live host") live in one place for every command.

use std::collections::HashMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::model::layout::HealthFigures;
pub use crate::model::rfc3339;
use crate::model::{
    DiskHealth, FsUsage, Hardware, HealthPoint, HealthState, Millis, PeerRecord, Probe, Sighting,
    Stay,
};
use crate::store::Store;

/// A disk, as printed by `query --json` and `list --json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskView {
    /// Node name of the host.
    pub host: String,
    /// Address of the host.
    pub addr: Option<String>,
    /// Filesystem UUID.
    pub uuid: Option<String>,
    /// Filesystem label.
    pub label: Option<String>,
    /// Device path on the host.
    pub device: String,
    /// Filesystem type.
    pub fstype: Option<String>,
    /// Mountpoints on the host.
    pub mountpoints: Vec<String>,
    /// Size, model, serial, ...: every field null when unknown (or from an older peer).
    #[serde(flatten)]
    pub hardware: Hardware,
    /// What its host's blkid made of it: `signature`, `empty` (probed, nothing found),
    /// `in_use` (holders or partitions), `failed` (could not probe), or `unknown` (not
    /// probed, or from a peer or store that predates probing). Only `empty` can be blank.
    #[serde(default)]
    pub probe: Probe,
    /// SMART health of the physical disk (a partition shows its parent's); null when no
    /// reading exists.
    #[serde(default)]
    pub health: Option<HealthView>,
    /// Size of the mounted filesystem, bytes (null when not mounted or unknown).
    #[serde(default)]
    pub fs_size: Option<u64>,
    /// Bytes in use on it.
    #[serde(default)]
    pub fs_used: Option<u64>,
    /// Bytes still free for unprivileged users.
    #[serde(default)]
    pub fs_avail: Option<u64>,
    /// In the latest inventory of a live host.
    pub live: bool,
    /// RFC 3339 time the host last reported the disk.
    pub last_seen: String,
}

#[cfg(test)]
impl DiskView {
    /// A live record of `device` on `host` with nothing else known: what tests start from.
    pub fn sample(host: &str, device: &str) -> DiskView {
        DiskView {
            host: host.into(),
            addr: None,
            uuid: None,
            label: None,
            device: device.into(),
            fstype: None,
            mountpoints: vec![],
            hardware: Hardware::default(),
            probe: Probe::default(),
            health: None,
            fs_size: None,
            fs_used: None,
            fs_avail: None,
            live: true,
            last_seen: "2026-12-06T10:00:00Z".into(),
        }
    }
}

impl DiskView {
    /// How full its filesystem is, in percent of the size (as `df` rounds: up), when known.
    pub fn use_percent(&self) -> Option<u64> {
        // In u128: a peer's figures are only checked to be within the size, which may be
        // anything up to u64::MAX.
        let (size, used, avail) = (self.fs_size?, self.fs_used?, self.fs_avail?);
        let (used, usable) = (u128::from(used), u128::from(used) + u128::from(avail));
        (size > 0 && usable > 0)
            .then(|| u64::try_from((used * 100).div_ceil(usable)).unwrap_or(100))
    }
}

/// A disk's SMART reading as JSON shows it: [`DiskHealth`] with its time in RFC 3339.
pub type HealthView = HealthFigures<HealthState, String, String>;

impl HealthView {
    /// A reading of `state` with no figures: what tests start from.
    #[cfg(test)]
    pub fn sample(state: HealthState) -> HealthView {
        HealthView::of(DiskHealth {
            state,
            ..DiskHealth::default()
        })
    }

    /// The view of a reading.
    pub fn of(h: DiskHealth) -> HealthView {
        HealthFigures::of_record(&h, |state| state, str::to_string, rfc3339)
    }
}

/// A peer, as printed by `peers --json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerView {
    /// Node name.
    pub node: String,
    /// Address its last datagram came from.
    pub addr: Option<String>,
    /// Heard within `peer_expiry` and not gone.
    pub live: bool,
    /// RFC 3339 time it was last heard.
    pub last_seen: String,
    /// Disks in its latest inventory.
    pub disks: usize,
    /// Its permanent node id.
    pub node_id: String,
    /// Speaks the Perl diskd wire format.
    pub legacy: bool,
    /// Another node id uses the same node name (a reinstalled or cloned machine).
    pub name_conflict: bool,
    /// Fingerprint of the key that sealed its last datagram.
    pub key: Option<String>,
    /// How it is heard: `multicast`, `gossip`, `both` or `legacy`.
    #[serde(default)]
    pub via: String,
}

/// Turn sightings into views, ordered live first, then most recently seen.
pub fn disks(
    store: &Store,
    sightings: Vec<Sighting>,
    now: Millis,
    expiry: Duration,
) -> Vec<DiskView> {
    let mut hosts: HashMap<String, (bool, Option<Millis>)> = HashMap::new();
    let mut rows: Vec<(Millis, DiskView)> = sightings
        .into_iter()
        .map(|s| {
            let (live_host, host_seen) = *hosts.entry(s.node_id.clone()).or_insert_with(|| {
                (
                    store.host_is_live(&s.node_id, now, expiry),
                    store.host_seen(&s.node_id),
                )
            });
            // A record still in its host's inventory was seen whenever the host last was:
            // the store does not rewrite unchanged records for that.
            let last_seen = if s.present {
                s.last_seen.max(host_seen.unwrap_or(0))
            } else {
                s.last_seen
            };
            let view = DiskView {
                host: s.host,
                addr: s.addr,
                uuid: s.disk.uuid,
                label: s.disk.label,
                device: s.disk.device,
                fstype: s.disk.fstype,
                mountpoints: s.disk.mountpoints,
                hardware: s.disk.hardware,
                probe: s.disk.probe,
                health: s.disk.health.map(HealthView::of),
                fs_size: s.disk.fs.map(|u: FsUsage| u.size),
                fs_used: s.disk.fs.map(|u| u.used),
                fs_avail: s.disk.fs.map(|u| u.avail),
                live: s.present && live_host,
                last_seen: rfc3339(last_seen),
            };
            (last_seen, view)
        })
        .collect();
    rows.sort_by(|(ta, a), (tb, b)| {
        b.live
            .cmp(&a.live)
            .then(tb.cmp(ta))
            .then_with(|| a.host.cmp(&b.host))
            .then_with(|| a.device.cmp(&b.device))
    });
    rows.into_iter().map(|(_, v)| v).collect()
}

/// A stay of a disk, as printed by `history --json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StayView {
    /// Where and when: host, address, device, label, and the RFC 3339 times the stay
    /// began and the disk was last seen there.
    #[serde(flatten)]
    pub stay: Stay<String>,
    /// The disk is still there, in the latest inventory of a live host.
    pub live: bool,
    /// The SMART readings taken during this stay, newest first (of the disk's last 64).
    #[serde(default)]
    pub health: Vec<ReadingView>,
}

/// One kept SMART reading, as `history --json` prints it: the time in RFC 3339.
pub type ReadingView = HealthPoint<String>;

/// One physical disk's health, as `health --json` prints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthRow {
    /// Node name of its host.
    pub host: String,
    /// Address of its host.
    pub addr: Option<String>,
    /// The whole disk's device path.
    pub device: String,
    /// Model, as sysfs reports it.
    pub model: Option<String>,
    /// Serial number.
    pub serial: Option<String>,
    /// Size in bytes.
    pub size: Option<u64>,
    /// In the latest inventory of a live host (else the last reading known).
    pub live: bool,
    /// The reading.
    #[serde(flatten)]
    pub health: HealthView,
}

/// One mounted filesystem, as `df --json` prints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DfRow {
    /// Node name of its host.
    pub host: String,
    /// Address of its host.
    pub addr: Option<String>,
    /// Device path on the host.
    pub device: String,
    /// Filesystem UUID.
    pub uuid: Option<String>,
    /// Filesystem label.
    pub label: Option<String>,
    /// Filesystem type.
    pub fstype: Option<String>,
    /// Where it is mounted (the first mountpoint of a filesystem mounted at several).
    pub mountpoint: String,
    /// Size, bytes.
    pub fs_size: u64,
    /// Bytes in use.
    pub fs_used: u64,
    /// Bytes free for unprivileged users.
    pub fs_avail: u64,
    /// Use in percent of what users can have (`df`'s Use%).
    pub use_percent: Option<u64>,
}

/// Turn stays (newest first, as the store gives them) into views. A current stay was seen
/// whenever its host last was, as for `disks`. Each kept SMART reading goes to the stay it
/// was taken in: the one whose time span holds it, else the nearest (a host's clock may be
/// a little off ours).
pub fn stays(
    store: &Store,
    stays: Vec<Stay>,
    readings: Vec<HealthPoint>,
    now: Millis,
    expiry: Duration,
) -> Vec<StayView> {
    let spans: Vec<(Millis, Millis)> = stays
        .iter()
        .map(|s| {
            let last_seen = if s.current {
                s.last_seen.max(store.host_seen(&s.node_id).unwrap_or(0))
            } else {
                s.last_seen
            };
            (s.first_seen, last_seen)
        })
        .collect();
    let mut during: Vec<Vec<ReadingView>> = vec![Vec::new(); stays.len()];
    for r in readings {
        let distance = |&(first, last): &(Millis, Millis)| {
            first.saturating_sub(r.checked) + r.checked.saturating_sub(last)
        };
        let nearest = (0..spans.len()).min_by_key(|&i| distance(&spans[i]));
        if let Some(i) = nearest {
            during[i].push(r.map(rfc3339, |state| state));
        }
    }
    stays
        .into_iter()
        .zip(spans)
        .zip(during)
        .map(|((s, (_, last_seen)), health)| StayView {
            health,
            live: s.current && store.host_is_live(&s.node_id, now, expiry),
            stay: Stay { last_seen, ..s }.map(rfc3339),
        })
        .collect()
}

/// Turn peer records into views, live first, then by name. `via` says which peers gossip
/// reaches (`gossip` or `both`); the others are multicast (or legacy) peers.
pub fn peers(
    records: Vec<PeerRecord>,
    now: Millis,
    expiry: Duration,
    via: impl Fn(&str) -> Option<&'static str>,
) -> Vec<PeerView> {
    let mut ids_by_name: HashMap<String, usize> = HashMap::new();
    for p in &records {
        *ids_by_name.entry(p.node.clone()).or_default() += 1;
    }
    let mut v: Vec<PeerView> = records
        .into_iter()
        .map(|p| PeerView {
            via: if p.legacy {
                "legacy"
            } else {
                via(&p.node_id).unwrap_or("multicast")
            }
            .to_string(),
            live: p.is_live(now, expiry),
            name_conflict: ids_by_name.get(&p.node).is_some_and(|&n| n > 1),
            last_seen: rfc3339(p.last_seen),
            node: p.node,
            addr: p.addr,
            disks: p.disks,
            node_id: p.node_id,
            legacy: p.legacy,
            key: p.key,
        })
        .collect();
    v.sort_by(|a, b| b.live.cmp(&a.live).then_with(|| a.node.cmp(&b.node)));
    v
}

#[cfg(test)]
mod tests {

    #[test]
    fn use_percent_rounds_up_as_df_and_survives_any_figures() {
        let mut v = DiskView::sample("a", "/dev/x");
        assert_eq!(v.use_percent(), None);
        (v.fs_size, v.fs_used, v.fs_avail) = (Some(1000), Some(900), Some(50));
        assert_eq!(v.use_percent(), Some(95));
        // A peer's figures within its size, at their largest: no overflow.
        (v.fs_size, v.fs_used, v.fs_avail) = (Some(u64::MAX), Some(u64::MAX), Some(u64::MAX));
        assert_eq!(v.use_percent(), Some(50));
    }

    use super::*;
    use crate::model::DiskRecord;
    use crate::store::Owner;

    #[test]
    fn live_first_then_most_recent() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let d = |u: &str| DiskRecord {
            probe: Default::default(),
            uuid: Some(u.into()),
            label: None,
            device: format!("/dev/{u}"),
            fstype: None,
            mountpoints: vec![],
            hardware: Default::default(),
            health: None,
            fs: None,
        };
        for (inventory, now) in [
            (vec![d("a"), d("b")], 1000),
            (vec![d("b")], 2000),
            (vec![d("b"), d("c")], 3000),
            (vec![d("c")], 4000),
        ] {
            store
                .publish(Owner::Local, "me", None, &inventory, now)
                .into_result()
                .unwrap();
        }
        let v = disks(
            &store,
            store.sightings().unwrap(),
            5000,
            Duration::from_secs(60),
        );
        let order: Vec<_> = v
            .iter()
            .map(|x| (x.uuid.clone().unwrap(), x.live))
            .collect();
        assert_eq!(
            order,
            vec![
                ("c".to_string(), true),
                ("b".to_string(), false),
                ("a".to_string(), false)
            ]
        );
        assert_eq!(v[2].last_seen, "1970-01-01T00:00:01Z");
    }
}
