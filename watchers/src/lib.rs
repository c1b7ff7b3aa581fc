//! Sources of truth about the disks attached to this machine:
//!
//! - [`DiskWatcher`] (`disks`, `disks.rs`): which block devices carry a filesystem, from
//!   blkid.
//! - [`MountWatcher`] (`mounts`, `mounts.rs`): where each device is mounted, from the
//!   kernel's mount table.
//! - [`HardwareWatcher`] (`hardware`, `hardware.rs`): what each block device physically is
//!   (size, model, serial, WWN, transport), from sysfs.
//! - [`SmartWatcher`] (`smart`, `smart/`): the SMART health of each whole disk, from
//!   `smartctl --json`.
//!
//! Every source is a [`Watcher`]: the daemon keeps to the schedule (interval, timeout,
//! `refresh`), a watcher only states its [`Schedule`] and knows how to look once.
//!
//! # Adding a watcher
//!
//! A new source is one new file here with a type that implements [`Watcher`], plus an
//! [`Observation`] variant for what it sees, re-exported from this file. The four
//! existing watchers show the patterns: `disks` runs an untrusted program (own process
//! group, capped output, killed on timeout), `mounts` reads a proc file and waits for its
//! POLLPRI notification, `hardware` reads sysfs on the blocking pool, `smart` runs a slow
//! program per disk on each disk's own schedule. Reuse rather than
//! copy: the include/exclude device globs (`filter.rs`) and the lazily opened block device
//! events ([`events::LazyBlockEvents`], one instance per watcher). The daemon's scheduler
//! does not change, but a new variant needs a place where the daemon stores observations
//! (`src/inventory`), which matches on [`Observation`] exhaustively.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::time::Duration;

use async_trait::async_trait;

pub mod disks;
pub mod events;
#[cfg(test)]
mod fake_sysfs;
pub mod filter;
pub mod hardware;
pub mod mounts;
pub mod process;
pub mod smart;

pub use disks::{DiskWatcher, DiskWatcherConfig};
pub use hardware::{Hardware, HardwareInfo, HardwareWatcher, HardwareWatcherConfig};
pub use mounts::MountWatcher;
pub use smart::{DiskHealth, HealthState, SmartReading, SmartWatcher, SmartWatcherConfig};

/// A block device as blkid saw it in one scan: one with a filesystem (or at least a
/// signature), or, when the watcher probes the devices its scan did not report, what that
/// probe came to ([`DiskInfo::contents`]).
///
/// `devno` is the (major, minor) of the device node, so that mounts can be matched to disks
/// even when the mount table names the device by another path (`/dev/mapper/*`, a symlink,
/// `/dev/dm-0`) or the mount is a bind mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskInfo {
    /// Filesystem UUID, as blkid reports it (`UUID=`).
    pub uuid: Option<String>,
    /// Filesystem label (`LABEL=`), decoded from blkid's escapes; may hold any UTF-8.
    pub label: Option<String>,
    /// Device path as blkid names it, for example `/dev/sdb1`.
    pub device: String,
    /// Filesystem type (`TYPE=`).
    pub fstype: Option<String>,
    /// (major, minor) of the device node, when it could be stat'ed.
    pub devno: Option<(u32, u32)>,
    /// What blkid made of it: only [`Contents::Empty`] lets a device be called blank.
    pub contents: Contents,
}

/// What blkid made of a device. A device missing from blkid's scan is not thereby empty
/// (blkid skips what it cannot open, and says nothing about it), so the watcher probes such
/// a device alone and records the outcome; an operator picks the disk to format from the
/// devices seen [`Contents::Empty`], and from no other.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Contents {
    /// blkid reported a signature (a filesystem, a partition table, a RAID or LVM member):
    /// what every device of its scan has.
    #[default]
    Signature,
    /// Probed alone (`blkid -p`), with the node checked to be the device sysfs lists
    /// before and after: no signature.
    Empty,
    /// Used by other block devices (`holders/`: device-mapper, md, LVM) or divided into
    /// partitions: not blank whatever a probe would say, so not probed.
    InUse,
    /// Could not be probed: why, as `status` shows it (`cannot probe /dev/vda: Operation
    /// not permitted`).
    Unreadable(String),
}

/// One line of the kernel's mount table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    /// (major, minor) of the mounted device (field 3 of mountinfo).
    pub devno: (u32, u32),
    /// Where it is mounted, with mountinfo's octal escapes decoded.
    pub mountpoint: String,
    /// Mount source (for example `/dev/sdb1`), escapes decoded.
    pub source: String,
    /// Filesystem type.
    pub fstype: String,
    /// Size and free space of the mounted filesystem (`statvfs`), for mounts of block
    /// devices; `None` for others, or when it could not be asked.
    pub usage: Option<FsUsage>,
}

/// How full a mounted filesystem is, in bytes, as `df` counts: `used` is size minus free
/// blocks, `avail` what an unprivileged user may still write (so `used + avail` may be less
/// than `size`: the root reserve).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct FsUsage {
    /// Total size.
    pub size: u64,
    /// In use.
    pub used: u64,
    /// Free for unprivileged users.
    pub avail: u64,
}

/// What one scan found. Each watcher fills the variant it is responsible for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observation {
    /// The complete list of disks attached now.
    Disks(Vec<DiskInfo>),
    /// The complete mount table now.
    Mounts(Vec<MountEntry>),
    /// Every block device with a medium now, as sysfs describes it, sorted by device path.
    Hardware(Vec<HardwareInfo>),
    /// The SMART reading of every whole disk the hardware watcher reports, sorted by
    /// device path.
    Smart(Vec<SmartReading>),
}

impl Observation {
    /// What a scan that worked could still not do (a device blkid could not probe, a disk
    /// without a SMART reading): shown by `status` in place of "ok", since such a device's
    /// contents or health are unknown. A SMART problem is `/dev/sda: <first reason>`.
    pub fn problems(&self) -> Vec<String> {
        match self {
            Observation::Disks(disks) => disks
                .iter()
                .filter_map(|d| match &d.contents {
                    Contents::Unreadable(why) => Some(why.clone()),
                    _ => None,
                })
                .collect(),
            Observation::Smart(readings) => readings
                .iter()
                .filter(|r| r.health.state == HealthState::Unknown)
                .map(|r| match r.health.reasons.first() {
                    Some(why) => format!("{}: {why}", r.device),
                    None => format!("{}: no SMART reading", r.device),
                })
                .collect(),
            Observation::Mounts(_) | Observation::Hardware(_) => Vec::new(),
        }
    }
}

/// Why a scan produced nothing usable. The daemon keeps the previous observation and shows
/// the error in `status`; the variant is the "state" whose changes get logged.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// The program to run does not exist.
    #[error("{program}: not found")]
    NotFound {
        /// The program that was looked for.
        program: String,
    },
    /// The program or file exists but we may not run or read it.
    #[error("{what}: permission denied")]
    PermissionDenied {
        /// The program or file.
        what: String,
    },
    /// The program ran and failed.
    #[error("{program} exited with {status}: {stderr}")]
    Failed {
        /// The program that ran.
        program: String,
        /// Exit status as text (`exit status: 2`, `signal: 9`).
        status: String,
        /// The first line of its stderr, trimmed.
        stderr: String,
    },
    /// The program ran longer than allowed; it and its process group were killed.
    #[error("{program} timed out after {timeout:?} and was killed")]
    TimedOut {
        /// The program that hung.
        program: String,
        /// The limit it exceeded.
        timeout: Duration,
    },
    /// Output that cannot be understood at all (not a single parsable record, too large, ...).
    #[error("unusable output: {0}")]
    BadOutput(String),
    /// Any other I/O error.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

impl WatchError {
    /// A short stable name for the kind of failure, used to log only on state changes and
    /// to count failures by reason in `status`.
    pub fn kind(&self) -> &'static str {
        match self {
            WatchError::NotFound { .. } => "not_found",
            WatchError::PermissionDenied { .. } => "permission_denied",
            WatchError::Failed { .. } => "failed",
            WatchError::TimedOut { .. } => "timed_out",
            WatchError::BadOutput(_) => "bad_output",
            WatchError::Io { .. } => "io",
        }
    }
}

/// When the daemon runs a watcher, as one value: most watchers take it whole from their
/// settings, and the SMART watcher, which follows its disks, works out both parts at once.
/// The daemon asks for it again around each scan, so a schedule that changes is always
/// current.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    /// How often the daemon runs a scan.
    pub interval: Duration,
    /// How long one scan may take before it counts as hung.
    pub timeout: Duration,
}

/// A source of observations about this machine.
///
/// Implementations do the looking; they do not loop, sleep or enforce their own timeout
/// beyond what is needed to clean up after themselves (the DiskWatcher kills its child on
/// timeout because only it knows the child).
#[async_trait]
pub trait Watcher: Send + Sync {
    /// Name used in logs, `status` and `debug` (`disks`, `mounts`, `hardware`).
    fn name(&self) -> &'static str;
    /// Asked after each scan for the wait until the next, and before each for its limit,
    /// so a schedule that follows what the watcher found (the SMART watcher's) is current.
    fn schedule(&self) -> Schedule;
    /// Look once.
    async fn scan(&self) -> Result<Observation, WatchError>;

    /// Look only at what the change notifications since the last scan named, merged into
    /// the last observation: what the daemon runs first on an isolated kernel event, so a
    /// plugged disk is not kept waiting by every other device's probe. `None` when this
    /// watcher cannot tell what changed, or the quick look failed: the daemon then runs
    /// [`Watcher::scan`]. The daemon always runs a full `scan` shortly after a quick one
    /// (once the burst has settled), which corrects anything a quick look got wrong; a
    /// quick look must still never report a device differently from how `scan` would, or
    /// the fleet would see it change twice. The default never looks quickly.
    async fn scan_changed(&self) -> Option<Observation> {
        None
    }

    /// Resolves when what this watcher looks at may have changed (a kernel event), so the
    /// daemon rescans at once instead of waiting for the interval. The default never
    /// resolves: such a watcher is polled on its interval only. Must be cancel-safe: the
    /// daemon drops the future whenever another branch wins.
    async fn changed(&self) {
        std::future::pending::<()>().await
    }
}
