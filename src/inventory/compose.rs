//! One record per device from what every watcher knows about it: blkid's filesystem,
//! sysfs's hardware, the mount table's mountpoints.
//!
//! Two watchers describe the same devices (blkid and sysfs), each on its own schedule, so
//! a device that just appeared may be known to one and not yet to the other. Publishing
//! that half-known state would tell the fleet twice about one plugged disk: first as a
//! blank disk (sysfs was quicker), then as a filesystem with another identity; or first
//! without hardware, then "changed". So a *new* device that only one of them reports is
//! held back until the other has had a look that began after the device was first seen
//! (then the absence is the truth: a blank disk, or a filesystem sysfs does not list), or
//! until [`HOLD`] has passed (a failing or hung watcher delays nobody for long). Devices
//! already published are never held: holding them would report them gone.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use diskd_watchers::{
    mounts::mountpoints_for, Contents, DiskInfo, HardwareInfo, MountEntry, SmartReading,
};
use tokio::time::Instant;

use crate::model::{DiskHealth, DiskRecord, FsUsage, Probe};

/// The longest a new device waits for the other device watcher (see the module
/// documentation).
pub const HOLD: Duration = Duration::from_secs(5);

/// A device number: (major, minor).
type Devno = (u32, u32);

/// An observation and when the scan that made it began.
#[derive(Debug)]
struct Timed<T> {
    value: T,
    started: Instant,
}

/// The latest observation of every watcher, and what is needed to decide what to hold.
#[derive(Debug)]
pub struct Composer {
    /// Whether a hardware watcher runs at all (else nothing waits for it).
    hardware_expected: bool,
    disks: Option<Timed<Vec<DiskInfo>>>,
    hardware: Option<Timed<Vec<HardwareInfo>>>,
    /// The hardware watcher has had its first try (it may have failed).
    hardware_tried: bool,
    mounts: Option<Vec<MountEntry>>,
    /// The latest SMART reading of each whole disk; `None` before the SMART watcher's
    /// first pass of this run.
    smart: Option<Vec<SmartReading>>,
    /// What each device's record said of its health before this run (see
    /// [`Composer::remember_health`]), shown until the first pass.
    remembered: HashMap<String, DiskHealth>,
    /// The capacity figures last published, by device (see [`steady_usage`]).
    usage: HashMap<String, FsUsage>,
    /// When each device now observed was first observed (by either watcher).
    noticed: HashMap<Devno, Instant>,
    /// Devices in the last composition.
    published: HashSet<Devno>,
    /// When the composer was made: what the devices of a watcher's first observation
    /// count as noticed at (they were there before anyone looked).
    start: Instant,
}

impl Composer {
    /// A composer; `hardware_expected` when a hardware watcher runs.
    pub fn new(hardware_expected: bool) -> Composer {
        Composer {
            hardware_expected,
            disks: None,
            hardware: None,
            hardware_tried: false,
            mounts: None,
            smart: None,
            remembered: HashMap::new(),
            usage: HashMap::new(),
            noticed: HashMap::new(),
            published: HashSet::new(),
            start: Instant::now(),
        }
    }

    /// blkid's latest observation, from a scan that began at `started`; `full`: a scan of
    /// every device, not a quick look at the ones the kernel named. Only a full scan counts
    /// as blkid having looked at a held device: a quick look may not have probed it (an
    /// event named the disk, not yet its partition), so its absence proves nothing.
    pub fn disks(&mut self, disks: Vec<DiskInfo>, started: Instant, full: bool) {
        let first = self.disks.is_none();
        self.notice(disks.iter().filter_map(|d| d.devno), started, first);
        let looked = match (&self.disks, full) {
            (Some(prev), false) => prev.started,
            _ => started,
        };
        self.disks = Some(Timed {
            value: disks,
            started: looked,
        });
    }

    /// sysfs's latest observation, from a scan that began at `started`.
    pub fn hardware(&mut self, hardware: Vec<HardwareInfo>, started: Instant) {
        let first = self.hardware.is_none();
        self.notice(hardware.iter().map(|h| h.devno), started, first);
        self.hardware = Some(Timed {
            value: hardware,
            started,
        });
        self.hardware_tried = true;
    }

    /// The hardware watcher failed: whatever it knew stands, but the first write need not
    /// wait for it any more.
    pub fn hardware_failed(&mut self) {
        self.hardware_tried = true;
    }

    /// The mount table.
    pub fn mounts(&mut self, mounts: Vec<MountEntry>) {
        self.mounts = Some(mounts);
    }

    /// The SMART watcher's readings: every whole disk it looked at.
    pub fn smart(&mut self, readings: Vec<SmartReading>) {
        self.smart = Some(readings);
        self.remembered.clear();
    }

    /// The records stored before this run: until the SMART watcher's first pass, a device
    /// shows the reading its record had (a pass over many disks takes a while, and a
    /// reading that vanishes and comes back is a change for the whole fleet).
    pub fn remember_health(&mut self, records: &[DiskRecord]) {
        self.remembered = records
            .iter()
            .filter_map(|r| Some((r.device.clone(), r.health.clone()?)))
            .collect();
    }

    /// Whether there is anything to publish: a good disk scan (an empty inventory would
    /// mark every known disk as gone), and the hardware watcher's first try, so that the
    /// first inventory of a run is whole rather than hardware arriving as "changed".
    pub fn ready(&self) -> bool {
        self.disks.is_some() && (!self.hardware_expected || self.hardware_tried)
    }

    fn notice(&mut self, devnos: impl Iterator<Item = Devno>, started: Instant, first: bool) {
        let at = if first { self.start } else { started };
        for devno in devnos {
            self.noticed.entry(devno).or_insert(at);
        }
    }

    /// The records to publish now, and when to compose again because something is held.
    pub fn compose(&mut self, now: Instant) -> (Vec<DiskRecord>, Option<Instant>) {
        let no_disks = Vec::new();
        let no_hardware = Vec::new();
        let disks = self.disks.as_ref().map_or(&no_disks, |t| &t.value);
        let hardware = self.hardware.as_ref().map_or(&no_hardware, |t| &t.value);
        let mounts = self.mounts.as_deref().unwrap_or(&[]);
        let by_devno: HashMap<Devno, &HardwareInfo> =
            hardware.iter().map(|h| (h.devno, h)).collect();
        let by_device: HashMap<&str, &HardwareInfo> =
            hardware.iter().map(|h| (h.device.as_str(), h)).collect();

        // Whether a new device seen by one watcher only waits for the other, whose latest
        // look began at `other` (None: it has not looked yet).
        let mut wake: Option<Instant> = None;
        let mut held = |devno: Devno, other: Option<Instant>| -> bool {
            if self.published.contains(&devno) {
                return false;
            }
            let noticed = self.noticed.get(&devno).copied().unwrap_or(self.start);
            if other.is_some_and(|o| o >= noticed) || now >= noticed + HOLD {
                return false;
            }
            let until = noticed + HOLD;
            wake = Some(wake.map_or(until, |w| w.min(until)));
            true
        };

        let hardware_started = self.hardware.as_ref().map(|t| t.started);
        let disks_started = self.disks.as_ref().map(|t| t.started);
        let mut used: HashSet<Devno> = HashSet::new();
        let mut records = Vec::with_capacity(disks.len() + hardware.len());
        let health = |devno: Option<Devno>, device: &str, parent: Option<&str>| match &self.smart {
            Some(readings) => health_of(readings, devno, device, parent),
            None => self.remembered.get(device).cloned(),
        };
        let mut devnos = HashSet::new();
        // What blkid's lone probes made of the devices its scan did not report: not devices
        // of their own but what is known of sysfs's devices (one gone from sysfs is gone,
        // whatever the last probe said).
        let (signatures, probed): (Vec<&DiskInfo>, Vec<&DiskInfo>) = disks
            .iter()
            .partition(|d| matches!(d.contents, Contents::Signature));
        let probe_by_devno: HashMap<Devno, Probe> = probed
            .iter()
            .filter_map(|d| Some((d.devno?, probe_of(&d.contents))))
            .collect();
        for d in signatures {
            let hw = d
                .devno
                .and_then(|n| by_devno.get(&n))
                .or_else(|| by_device.get(d.device.as_str()))
                .copied();
            match (hw, d.devno) {
                (Some(h), _) => {
                    used.insert(h.devno);
                }
                (None, Some(devno)) if self.hardware_expected && held(devno, hardware_started) => {
                    continue;
                }
                _ => {}
            }
            devnos.extend(d.devno.or(hw.map(|h| h.devno)));
            let hardware = hw.map(|h| h.hardware.clone()).unwrap_or_default();
            let mountpoints = mountpoints_for(d, mounts);
            records.push(DiskRecord {
                uuid: d.uuid.clone(),
                label: d.label.clone(),
                device: d.device.clone(),
                fstype: d.fstype.clone(),
                fs: usage_at(&mountpoints, mounts),
                mountpoints,
                health: health(
                    d.devno.or(hw.map(|h| h.devno)),
                    &d.device,
                    hardware.parent.as_deref(),
                ),
                hardware,
                probe: probe_of(&d.contents),
            });
        }
        for h in hardware {
            if used.contains(&h.devno) || held(h.devno, disks_started) {
                continue;
            }
            devnos.insert(h.devno);
            // A device blkid's scan did not report: still a disk someone may be looking
            // for. What its lone probe said, if it had one; else (not probed yet, or
            // probing is not possible) its contents are unknown, never blank.
            let as_disk = DiskInfo {
                uuid: None,
                label: None,
                device: h.device.clone(),
                fstype: None,
                devno: Some(h.devno),
                contents: Contents::Signature,
            };
            let mountpoints = mountpoints_for(&as_disk, mounts);
            records.push(DiskRecord {
                device: h.device.clone(),
                fs: usage_at(&mountpoints, mounts),
                mountpoints,
                health: health(Some(h.devno), &h.device, h.hardware.parent.as_deref()),
                hardware: h.hardware.clone(),
                probe: probe_by_devno
                    .get(&h.devno)
                    .copied()
                    .unwrap_or(Probe::Unknown),
                ..DiskRecord::default()
            });
        }
        // Forget devices no watcher reports any more: back, they are new again.
        let seen: HashSet<Devno> = disks
            .iter()
            .filter_map(|d| d.devno)
            .chain(hardware.iter().map(|h| h.devno))
            .collect();
        self.noticed.retain(|n, _| seen.contains(n));
        self.published = devnos;
        let before = std::mem::take(&mut self.usage);
        for r in &mut records {
            r.fs = steady_usage(before.get(&r.device), r.fs);
            if let Some(u) = r.fs {
                self.usage.insert(r.device.clone(), u);
            }
        }
        (records, wake)
    }
}

/// The SMART reading of a device: its own when it is a whole disk the SMART watcher read,
/// else its parent's (a partition shows its disk's health).
fn health_of(
    smart: &[SmartReading],
    devno: Option<Devno>,
    device: &str,
    parent: Option<&str>,
) -> Option<DiskHealth> {
    let own = smart
        .iter()
        .find(|r| Some(r.devno) == devno || r.device == device);
    let parent = || {
        let parent = parent?;
        let name = parent.strip_prefix("/dev/").unwrap_or(parent);
        smart
            .iter()
            .find(|r| r.device.strip_prefix("/dev/").unwrap_or(&r.device) == name)
    };
    own.or_else(parent).map(|r| r.health.clone())
}

/// How full the filesystem at the first of a device's mountpoints is.
fn usage_at(mountpoints: &[String], mounts: &[MountEntry]) -> Option<FsUsage> {
    let first = mountpoints.first()?;
    mounts
        .iter()
        .find(|m| &m.mountpoint == first && m.usage.is_some())
        .and_then(|m| m.usage)
}

/// The capacity to publish: the figures published before while the size is the same and
/// use has moved by less than 1 % of it. Every write changes `used`, and a record that
/// changes is a new inventory for the whole fleet: without this a busy filesystem would
/// resend its host's inventory on every mount scan.
fn steady_usage(before: Option<&FsUsage>, now: Option<FsUsage>) -> Option<FsUsage> {
    match (before, now) {
        (Some(b), Some(n)) if b.size == n.size && b.used.abs_diff(n.used) < n.size / 100 => {
            Some(*b)
        }
        _ => now,
    }
}

/// The record's probe from what blkid made of the device: the one place a watcher's
/// outcome becomes what the fleet is told.
fn probe_of(contents: &Contents) -> Probe {
    match contents {
        Contents::Signature => Probe::Signature,
        Contents::Empty => Probe::Empty,
        Contents::InUse => Probe::InUse,
        Contents::Unreadable(_) => Probe::Failed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Hardware;

    fn disk(device: &str, devno: (u32, u32), uuid: Option<&str>) -> DiskInfo {
        DiskInfo {
            contents: diskd_watchers::Contents::Signature,
            uuid: uuid.map(str::to_string),
            label: None,
            device: device.into(),
            fstype: uuid.map(|_| "ext4".to_string()),
            devno: Some(devno),
        }
    }

    fn hw(device: &str, devno: (u32, u32)) -> HardwareInfo {
        HardwareInfo {
            device: device.into(),
            devno,
            hardware: Hardware {
                size: Some(1 << 30),
                serial: Some(format!("SER-{}", devno.1)),
                transport: Some("loop".into()),
                ..Hardware::default()
            },
        }
    }

    /// blkid's look at `disks` (`full`: a full scan) ends now; what is composed then.
    fn after_blkid(
        c: &mut Composer,
        disks: Vec<DiskInfo>,
        full: bool,
    ) -> (Vec<DiskRecord>, Option<Instant>) {
        c.disks(disks, Instant::now(), full);
        c.compose(Instant::now())
    }

    fn devices(records: &[DiskRecord]) -> Vec<(&str, Option<&str>, Option<u64>)> {
        let mut v: Vec<_> = records
            .iter()
            .map(|r| (r.device.as_str(), r.uuid.as_deref(), r.hardware.size))
            .collect();
        v.sort();
        v
    }

    #[tokio::test(start_paused = true)]
    async fn both_watchers_merge_into_one_record_and_a_blank_device_is_one_too() {
        let mut c = Composer::new(true);
        let t0 = Instant::now();
        c.disks(vec![disk("/dev/loop1", (7, 1), Some("u-1"))], t0, true);
        assert!(!c.ready(), "the first write waits for the hardware watcher");
        c.hardware(vec![hw("/dev/loop1", (7, 1)), hw("/dev/loop2", (7, 2))], t0);
        assert!(c.ready());
        let (records, wake) = c.compose(Instant::now());
        assert_eq!(
            devices(&records),
            [
                ("/dev/loop1", Some("u-1"), Some(1 << 30)),
                ("/dev/loop2", None, Some(1 << 30))
            ]
        );
        assert_eq!(wake, None);
        let blank = records.iter().find(|r| r.device == "/dev/loop2").unwrap();
        assert_eq!(blank.identity(), "serial:SER-2");
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_device_waits_for_the_other_watcher_but_not_for_ever() {
        let loop3 = || disk("/dev/loop3", (7, 3), Some("u-3"));
        let mut c = Composer::new(true);
        c.disks(vec![], Instant::now(), true);
        c.hardware(vec![], Instant::now());
        assert!(c.compose(Instant::now()).0.is_empty());
        tokio::time::advance(Duration::from_secs(1)).await;

        // sysfs saw loop3 first: not published as blank before blkid looked again.
        c.hardware(vec![hw("/dev/loop3", (7, 3))], Instant::now());
        let (records, wake) = c.compose(Instant::now());
        assert!(records.is_empty(), "{records:?}");
        assert_eq!(wake, Some(Instant::now() + HOLD));
        // blkid's look, begun after: it has a filesystem. One record, whole.
        tokio::time::advance(Duration::from_millis(5)).await;
        let (records, wake) = after_blkid(&mut c, vec![loop3()], true);
        assert_eq!(
            devices(&records),
            [("/dev/loop3", Some("u-3"), Some(1 << 30))]
        );
        assert_eq!(wake, None);

        // blkid saw loop4 first: not published without its hardware...
        tokio::time::advance(Duration::from_millis(5)).await;
        let both = vec![loop3(), disk("/dev/loop4", (7, 4), Some("u-4"))];
        let (records, _) = after_blkid(&mut c, both, true);
        assert_eq!(records.len(), 1, "loop3 stays, loop4 waits");
        // ...unless sysfs does not answer within HOLD.
        tokio::time::advance(HOLD).await;
        let (records, wake) = c.compose(Instant::now());
        assert_eq!(
            devices(&records),
            [
                ("/dev/loop3", Some("u-3"), Some(1 << 30)),
                ("/dev/loop4", Some("u-4"), None)
            ]
        );
        assert_eq!(wake, None);

        // A blank device: blkid's later look does not list it, so it is blank.
        tokio::time::advance(Duration::from_secs(1)).await;
        c.hardware(
            vec![hw("/dev/loop3", (7, 3)), hw("/dev/loop5", (7, 5))],
            Instant::now(),
        );
        assert_eq!(c.compose(Instant::now()).0.len(), 2, "loop5 waits");
        // A quick look at what the kernel named (say, loop3 only) proves nothing of loop5.
        tokio::time::advance(Duration::from_millis(2)).await;
        let (records, _) = after_blkid(&mut c, vec![loop3()], false);
        assert_eq!(
            devices(&records),
            [("/dev/loop3", Some("u-3"), Some(1 << 30))],
            "loop5 still waits (loop4 is gone)"
        );
        tokio::time::advance(Duration::from_millis(5)).await;
        let (records, _) = after_blkid(&mut c, vec![loop3()], true);
        assert_eq!(
            devices(&records),
            [
                ("/dev/loop3", Some("u-3"), Some(1 << 30)),
                ("/dev/loop5", None, Some(1 << 30))
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn published_devices_are_never_held_and_no_hardware_watcher_holds_nothing() {
        let mut c = Composer::new(false);
        c.disks(
            vec![disk("/dev/sdb1", (8, 17), Some("u"))],
            Instant::now(),
            true,
        );
        assert!(c.ready());
        assert_eq!(c.compose(Instant::now()).0.len(), 1);

        let mut c = Composer::new(true);
        c.disks(
            vec![disk("/dev/loop1", (7, 1), Some("u-1"))],
            Instant::now(),
            true,
        );
        c.hardware(vec![hw("/dev/loop1", (7, 1))], Instant::now());
        assert_eq!(c.compose(Instant::now()).0.len(), 1);
        tokio::time::advance(Duration::from_secs(1)).await;
        // sysfs no longer lists it (say, a failed read), blkid does: still published.
        c.hardware(vec![], Instant::now() - Duration::from_millis(500));
        let (records, wake) = c.compose(Instant::now());
        assert_eq!(devices(&records), [("/dev/loop1", Some("u-1"), None)]);
        assert_eq!(wake, None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_record_says_what_blkid_made_of_its_device_and_nothing_is_empty_by_default() {
        let mut c = Composer::new(true);
        let t0 = Instant::now();
        let probed = |device: &str, devno, contents| DiskInfo {
            contents,
            ..disk(device, devno, None)
        };
        c.disks(
            vec![
                disk("/dev/loop1", (7, 1), Some("u-1")),
                probed("/dev/loop2", (7, 2), Contents::Empty),
                probed(
                    "/dev/loop3",
                    (7, 3),
                    Contents::Unreadable("cannot probe /dev/loop3: Operation not permitted".into()),
                ),
                probed("/dev/loop4", (7, 4), Contents::InUse),
            ],
            t0,
            true,
        );
        c.hardware(
            (1..=5)
                .map(|i| hw(&format!("/dev/loop{i}"), (7, i)))
                .collect(),
            t0,
        );
        let (records, _) = c.compose(Instant::now());
        let mut got: Vec<(&str, Probe, bool)> = records
            .iter()
            .map(|r| (r.device.as_str(), r.probe, r.probed_empty()))
            .collect();
        got.sort_by_key(|g| g.0);
        assert_eq!(
            got,
            [
                ("/dev/loop1", Probe::Signature, false),
                ("/dev/loop2", Probe::Empty, true),
                ("/dev/loop3", Probe::Failed, false),
                ("/dev/loop4", Probe::InUse, false),
                // sysfs lists it, blkid said nothing of it: unknown, not blank.
                ("/dev/loop5", Probe::Unknown, false),
            ]
        );
        // Every record has its hardware, one record per device.
        assert!(records.iter().all(|r| r.hardware.size == Some(1 << 30)));
        // Gone from sysfs (detached), gone at once, whatever its last probe said: never a
        // record without its hardware first.
        c.hardware(
            [1, 3, 4, 5]
                .map(|i| hw(&format!("/dev/loop{i}"), (7, i)))
                .to_vec(),
            Instant::now(),
        );
        let (records, _) = c.compose(Instant::now());
        assert!(
            records.iter().all(|r| r.device != "/dev/loop2"),
            "{records:?}"
        );
        assert_eq!(records.len(), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn devices_without_a_device_number_are_published_as_blkid_says() {
        let mut c = Composer::new(true);
        c.hardware_failed();
        let mut d = disk("/dev/sdz9", (0, 0), Some("u"));
        d.devno = None;
        c.disks(vec![d], Instant::now(), true);
        assert!(c.ready());
        assert_eq!(c.compose(Instant::now()).0.len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn health_shows_on_partitions_is_kept_across_a_restart_and_usage_is_steady() {
        use crate::model::{DiskHealth, FsUsage, HealthState};
        let reading = |state| DiskHealth {
            state,
            checked: Some(1),
            ..DiskHealth::default()
        };
        let mut c = Composer::new(true);
        // What the store held for this machine before the restart.
        let before = DiskRecord {
            device: "/dev/sda1".into(),
            health: Some(reading(HealthState::Failing)),
            ..DiskRecord::default()
        };
        c.remember_health(&[before]);
        let mut part = hw("/dev/sda1", (8, 1));
        part.hardware.parent = Some("/dev/sda".into());
        c.hardware(vec![hw("/dev/sda", (8, 0)), part], Instant::now());
        c.disks(
            vec![disk("/dev/sda1", (8, 1), Some("u"))],
            Instant::now(),
            true,
        );
        let health = |c: &mut Composer, device: &str| {
            let (records, _) = c.compose(Instant::now());
            records
                .into_iter()
                .find(|r| r.device == device)
                .and_then(|r| r.health)
                .map(|h| h.state)
        };
        // Before the first pass: the stored reading stands (the disk itself had none).
        assert_eq!(health(&mut c, "/dev/sda1"), Some(HealthState::Failing));
        assert_eq!(health(&mut c, "/dev/sda"), None);
        // The pass: the whole disk's reading, shown by its partition too.
        c.smart(vec![SmartReading {
            device: "/dev/sda".into(),
            devno: (8, 0),
            health: reading(HealthState::Warning),
        }]);
        assert_eq!(health(&mut c, "/dev/sda"), Some(HealthState::Warning));
        assert_eq!(health(&mut c, "/dev/sda1"), Some(HealthState::Warning));

        // Capacity: figures move with the fleet only when use moves by 1 % of the size.
        let mounted = |used| MountEntry {
            devno: (8, 1),
            mountpoint: "/srv".into(),
            source: "/dev/sda1".into(),
            fstype: "ext4".into(),
            usage: Some(FsUsage {
                size: 1000,
                used,
                avail: 1000 - used,
            }),
        };
        let fs = |c: &mut Composer| {
            let (records, _) = c.compose(Instant::now());
            records
                .into_iter()
                .find(|r| r.device == "/dev/sda1")
                .and_then(|r| r.fs)
                .map(|u| u.used)
        };
        c.mounts(vec![mounted(500)]);
        assert_eq!(fs(&mut c), Some(500));
        c.mounts(vec![mounted(509)]);
        assert_eq!(fs(&mut c), Some(500), "less than 1 %: unchanged");
        c.mounts(vec![mounted(510)]);
        assert_eq!(fs(&mut c), Some(510));
    }
}
