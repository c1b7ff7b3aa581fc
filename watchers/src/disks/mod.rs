//! The `disks` watcher: which block devices carry a filesystem right now, according to blkid.
//!
//! blkid is an external program that reads from devices, so it can hang (a dying USB disk,
//! an unresponsive network block device) and its output includes labels chosen by whoever
//! formatted the disk. Both are treated as hostile: the child runs in its own process group
//! that is killed as a whole on timeout, its output is capped, and labels are decoded, never
//! interpreted.

mod blkid;
mod probe;
pub(crate) mod run;
#[cfg(test)]
mod tests;

use std::collections::{BTreeSet, HashSet};
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Duration;

use async_trait::async_trait;
use nix::sys::signal::Signal;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::{Child, Command};

use crate::events::LazyBlockEvents;
use crate::filter::DeviceFilter;
use crate::process::GroupGuard;
use crate::{Contents, DiskInfo, Observation, Schedule, WatchError, Watcher};

pub use blkid::parse_blkid;
use blkid::*;
use probe::*;
pub use run::effective_argv;
use run::*;

/// Settings of the `disks` watcher, as the daemon's configuration resolved them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskWatcherConfig {
    /// The blkid program (one element; standard arguments are added, see
    /// [`effective_argv`]) or a complete argv run as given (more than one element), so that
    /// wrappers like `sudo blkid ...` or test fixtures can stand in for blkid.
    pub command: Vec<String>,
    /// How often the disks are scanned, and how long one blkid run may take before it is
    /// killed.
    pub schedule: Schedule,
    /// Which device paths are reported (`watchers.disks.include` / `exclude`), so a
    /// machine can ignore its system disks or the loop devices of snaps.
    pub filter: DeviceFilter,
    /// Where sysfs is mounted, when the devices a scan does not report are to be probed
    /// one by one (see [`DiskWatcher::scan`]): the daemon sets it with the hardware
    /// watcher, the only source of blank-disk records. `None`: no probing.
    pub probe_sysfs: Option<PathBuf>,
}

impl Default for DiskWatcherConfig {
    /// The defaults the daemon uses when nothing is configured, so tests and embedders get
    /// the same behaviour without repeating them.
    fn default() -> Self {
        DiskWatcherConfig {
            command: vec!["blkid".to_string()],
            schedule: Schedule {
                interval: Duration::from_secs(60),
                timeout: Duration::from_secs(15),
            },
            filter: DeviceFilter::default(),
            probe_sysfs: None,
        }
    }
}

/// Finds the block devices with a filesystem by running blkid once per scan.
#[derive(Debug)]
pub struct DiskWatcher {
    cfg: DiskWatcherConfig,
    argv: Vec<String>,
    filter: DeviceFilter,
    /// Block device events, opened on first use by the daemon's scheduler.
    events: LazyBlockEvents,
    /// What the events since the last scan named: what a quick look probes.
    changes: std::sync::Mutex<Changes>,
    /// The latest observation (a full scan, or a quick look merged into one): what a quick
    /// look patches.
    last: std::sync::Mutex<Option<Vec<DiskInfo>>>,
}

/// The devices named by block events since the last scan.
#[derive(Debug, Default)]
struct Changes {
    /// Device paths (`/dev/loop3`).
    devices: BTreeSet<String>,
    /// Something changed that the events did not name (events lost, the
    /// `/proc/partitions` fallback): only a full scan will do.
    unknown: bool,
}

/// Kinds of block device (kernel name prefixes) that blkid's own enumeration lists as
/// `/dev/<kernel name>`, the name the uevent gives, so probing one by that name reports
/// it exactly as a full scan does. Others are left to a full scan: device-mapper nodes
/// are enumerated as `/dev/mapper/<name>` while the kernel says `dm-0`, md arrays may be
/// listed under `/dev/md/`, and anything unknown is not worth a guess.
const QUICK_KINDS: [&str; 8] = ["loop", "sd", "vd", "xvd", "hd", "nvme", "mmcblk", "sr"];

/// Whether a device named by a uevent may be probed alone (see [`QUICK_KINDS`]).
fn quick_kind(device: &str) -> bool {
    device
        .strip_prefix("/dev/")
        .is_some_and(|name| !name.contains('/') && QUICK_KINDS.iter().any(|k| name.starts_with(k)))
}

/// Lock a mutex around plain data; a poisoned lock only means a panic elsewhere
/// mid-update, and the data is still usable.
fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl DiskWatcher {
    /// A watcher with these settings (its device filter compiled already).
    pub fn new(cfg: DiskWatcherConfig) -> DiskWatcher {
        let filter = cfg.filter.clone();
        let argv = effective_argv(&cfg.command);
        DiskWatcher {
            cfg,
            argv,
            filter,
            events: LazyBlockEvents::default(),
            changes: std::sync::Mutex::new(Changes::default()),
            last: std::sync::Mutex::new(None),
        }
    }

    /// The argv each scan runs, so `debug` output can show exactly what is executed.
    pub fn argv(&self) -> &[String] {
        &self.argv
    }

    /// Remember what a burst of block events named (`None`: something unnamed changed)
    /// for the next quick look.
    fn note(&self, devices: Option<Vec<String>>) {
        let mut changes = lock(&self.changes);
        match devices {
            Some(devices) => changes.devices.extend(devices),
            None => changes.unknown = true,
        }
    }

    /// Whether a device passes the include/exclude filters.
    fn wanted(&self, device: &str) -> bool {
        self.filter.wanted(device)
    }

    /// Runs `argv` (the scan's, or the quick look's) and returns its stdout, mapping every
    /// way it can go wrong to a [`WatchError`].
    async fn run(&self, argv: &[String]) -> Result<String, WatchError> {
        let program = argv.first().cloned().unwrap_or_default();
        let (status, stdout, err) = self.run_raw(argv, self.cfg.schedule.timeout).await?;
        if status.success() {
            return Ok(stdout);
        }
        // blkid's way of saying "no devices with a signature at all" is exit status 2,
        // silently; on a machine with only unformatted disks that is the correct, empty
        // answer. Exit 2 with a message is a failure (a shell that cannot read its script,
        // a blkid that cannot probe): taking it as "no disks" would drop the inventory.
        if status.code() == Some(2) && stdout.trim().is_empty() && err.trim_ascii().is_empty() {
            return Ok(String::new());
        }
        Err(WatchError::Failed {
            program,
            status: status.to_string(),
            stderr: first_line(&err),
        })
    }

    /// Runs `argv` for at most `timeout` (see [`run_capped`]), stdout as text.
    async fn run_raw(
        &self,
        argv: &[String],
        timeout: Duration,
    ) -> Result<(ExitStatus, String, Vec<u8>), WatchError> {
        let (status, out, err) = run_capped(argv, timeout, MAX_STDOUT).await?;
        Ok((status, String::from_utf8_lossy(&out).into_owned(), err))
    }

    /// The argv that probes one device alone: `blkid -p -o export DEVICE` (low-level
    /// probing, no cache, the export form). `None` for a configured command line, which is
    /// run as given and cannot be told to probe one device: such a daemon calls no device
    /// empty (docs/commands.md, "Blank disks").
    fn probe_argv(&self, device: &str) -> Option<Vec<String>> {
        let program = match self.cfg.command.as_slice() {
            [] => "blkid".to_string(),
            [program] => program.clone(),
            _ => return None,
        };
        Some(vec![
            program,
            "-p".to_string(),
            "-o".to_string(),
            "export".to_string(),
            device.to_string(),
        ])
    }

    /// Probe, one by one, the block devices sysfs lists (with a medium, wanted by the
    /// filters; `only`: of these paths only) that `reported` does not hold, and say what
    /// each came to (see [`Contents`]). Nothing when probing is off. A device used by
    /// others is not probed; every probe ends by `deadline` (a hung one is killed and its
    /// device, and any left unprobed, is `Unreadable`), so that a dying disk never makes
    /// the whole scan time out and keep a stale inventory.
    async fn probe_unreported(
        &self,
        reported: &[DiskInfo],
        only: Option<&[String]>,
        deadline: tokio::time::Instant,
    ) -> Vec<DiskInfo> {
        let Some(root) = self.cfg.probe_sysfs.clone() else {
            return Vec::new();
        };
        let filter = self.filter.clone();
        let listed =
            tokio::task::spawn_blocking(move || list_block_devices(&root, |d| filter.wanted(d)))
                .await
                .unwrap_or_default();
        let known_devnos: HashSet<(u32, u32)> = reported.iter().filter_map(|d| d.devno).collect();
        let known_paths: HashSet<&str> = reported.iter().map(|d| d.device.as_str()).collect();
        let mut out = Vec::new();
        for dev in listed {
            if known_devnos.contains(&dev.devno) || known_paths.contains(dev.device.as_str()) {
                continue;
            }
            if only.is_some_and(|o| !o.contains(&dev.device)) {
                continue;
            }
            let mut info = if dev.in_use {
                DiskInfo {
                    uuid: None,
                    label: None,
                    device: dev.device.clone(),
                    fstype: None,
                    devno: None,
                    contents: Contents::InUse,
                }
            } else {
                self.probe_one(&dev, deadline).await
            };
            info.devno = Some(dev.devno);
            out.push(info);
        }
        out
    }

    /// Probe one device alone (see [`judge_probe`]), its node checked before and after.
    /// A signature the full scan missed (one written since) comes back with what the probe
    /// read of it.
    async fn probe_one(&self, dev: &BlockDevice, deadline: tokio::time::Instant) -> DiskInfo {
        let device = dev.device.as_str();
        let unreadable = |why: String| DiskInfo {
            uuid: None,
            label: None,
            device: device.to_string(),
            fstype: None,
            devno: None,
            contents: Contents::Unreadable(format!("cannot probe {device}: {why}")),
        };
        let Some(argv) = self.probe_argv(device) else {
            return unreadable("the configured blkid command line cannot probe one device".into());
        };
        let (major, minor) = dev.devno;
        let node_ok = || device_number(device) == Some(dev.devno);
        // blkid says "nothing found" (exit 2, silently) for a path that does not exist or
        // is no block device too: the node must be the device sysfs lists.
        if !node_ok() {
            return unreadable(format!("{device} is not the block device {major}:{minor}"));
        }
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            return unreadable("no time was left in this scan".into());
        }
        let judged = match self
            .run_raw(&argv, left.min(self.cfg.schedule.timeout))
            .await
        {
            Ok((status, stdout, stderr)) => judge_probe(device, status.code(), &stdout, &stderr),
            Err(e) => Err(e.to_string()),
        };
        match judged {
            Ok(info) if info.contents == Contents::Empty && !node_ok() => {
                unreadable("the device changed while it was probed".into())
            }
            Ok(info) => info,
            Err(why) => unreadable(why),
        }
    }
}

#[async_trait]
impl Watcher for DiskWatcher {
    fn name(&self) -> &'static str {
        "disks"
    }

    fn schedule(&self) -> Schedule {
        self.cfg.schedule
    }

    async fn changed(&self) {
        let devices = self.events.next().await;
        self.note(devices);
    }

    /// blkid's scan of every device, then (with probing on, see
    /// [`DiskWatcherConfig::probe_sysfs`]) a probe of each device sysfs lists that the scan
    /// did not report: blkid's scan silently skips a device it cannot open, so its absence
    /// says nothing about what is on it. Few devices normally (the blank ones).
    async fn scan(&self) -> Result<Observation, WatchError> {
        // Whatever was notified before this scan starts, it sees.
        *lock(&self.changes) = Changes::default();
        let deadline = tokio::time::Instant::now() + self.cfg.schedule.timeout;
        let output = self.run(&self.argv).await?;
        let mut disks = parse_blkid(&output)?;
        disks.retain(|d| self.wanted(&d.device));
        for disk in &mut disks {
            disk.devno = device_number(&disk.device);
        }
        let probed = self
            .probe_unreported(&disks, None, probe_deadline(deadline))
            .await;
        disks.extend(probed);
        *lock(&self.last) = Some(disks.clone());
        Ok(Observation::Disks(disks))
    }

    /// blkid on the named devices only (`blkid -c /dev/null -o export DEV...`), merged into
    /// the last observation. On the benchmark VM (10 block devices) that saves 0.6 ms of a
    /// 3.4 ms blkid run; on a machine with many disks, or a slow one, the full scan probes
    /// every one of them (and waits for the slowest) before a plugged disk is reported. Declined (a full scan instead) for a
    /// configured command other than plain blkid (its arguments are not ours to extend),
    /// for events that named nothing or devices of a kind blkid enumerates under another
    /// name (see [`QUICK_KINDS`]), before the first full scan, when the probe fails or
    /// reports anything but what was asked, and when a probed disk shares its UUID with a
    /// disk already listed (which of the two is listed first decides how the store keys
    /// them, and only a full scan knows blkid's order).
    async fn scan_changed(&self) -> Option<Observation> {
        let deadline = tokio::time::Instant::now() + self.cfg.schedule.timeout;
        let changes = std::mem::take(&mut *lock(&self.changes));
        if changes.unknown || changes.devices.is_empty() || self.cfg.command.len() > 1 {
            return None;
        }
        let last = lock(&self.last).clone()?;
        if !changes.devices.iter().all(|d| quick_kind(d)) {
            return None;
        }
        // Devices the filters drop are not probed at all.
        let probe: Vec<String> = changes
            .devices
            .into_iter()
            .filter(|d| self.wanted(d))
            .collect();
        let found = if probe.is_empty() {
            Vec::new()
        } else {
            let mut argv = self.argv.clone();
            argv.extend(probe.iter().cloned());
            let output = self.run(&argv).await.ok()?;
            let (found, skipped) = parse_blkid_counted(&output);
            // Output that yields no disk is garbage, not "the device is gone" (that is
            // blkid printing nothing): a full scan judges it, and keeps the last inventory.
            let garbage = found.is_empty() && !output.trim().is_empty();
            if garbage || skipped > 0 || found.iter().any(|d| !probe.contains(&d.device)) {
                return None;
            }
            found
        };
        let mut disks: Vec<DiskInfo> = last
            .into_iter()
            .filter(|d| !probe.contains(&d.device))
            .collect();
        for mut disk in found {
            let shared_uuid = disk.uuid.is_some()
                && disks
                    .iter()
                    .any(|d| d.uuid == disk.uuid && d.device != disk.device);
            if shared_uuid {
                return None;
            }
            disk.devno = device_number(&disk.device);
            disks.push(disk);
        }
        // The named devices blkid did not report are probed as a full scan would, so a
        // blank disk does not flip to unknown and back.
        let probed = self
            .probe_unreported(&disks, Some(&probe), probe_deadline(deadline))
            .await;
        disks.extend(probed);
        *lock(&self.last) = Some(disks.clone());
        Some(Observation::Disks(disks))
    }
}

/// (major, minor) of a block device node; `None` for anything else (a regular file that a
/// custom command reported, a vanished device), because only a real device number can be
/// matched against the mount table.
pub fn device_number(device: &str) -> Option<(u32, u32)> {
    let meta = std::fs::metadata(device).ok()?;
    if !meta.file_type().is_block_device() {
        return None;
    }
    Some(split_dev(meta.rdev()))
}

/// Splits a Linux `dev_t` the way glibc's `major()`/`minor()` do.
fn split_dev(dev: u64) -> (u32, u32) {
    // The masks are 32-bit: `(dev >> 12) & !0xff` on 64 bits would drag major bits into
    // the minor.
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & 0xffff_f000);
    let minor = (dev & 0xff) | ((dev >> 12) & 0xffff_ff00);
    // Both fit in 32 bits by construction of the encoding; saturate rather than panic.
    (
        u32::try_from(major).unwrap_or(u32::MAX),
        u32::try_from(minor).unwrap_or(u32::MAX),
    )
}
