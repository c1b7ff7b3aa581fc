//! SMART health of whole disks, from smartmontools' `smartctl --json`.
//!
//! The question an operator asks of a fleet is "which disk is about to die, and where is
//! it": the answer has to come from the drive itself, and smartctl is the one tool that
//! speaks every protocol (ATA, NVMe, SCSI, and ATA behind USB bridges) and prints it as
//! JSON. It is treated as the disks watcher treats blkid: an external program that may
//! hang on a dying disk, so it runs in its own process group, killed with it on timeout,
//! with its output capped and never trusted to be well-formed.
//!
//! - `whole.rs`: which devices are read (physical whole disks only).
//! - `run.rs`: the watcher, each disk on its own schedule, one smartctl at a time.
//! - `parse.rs`: smartctl's JSON of every protocol and version into [`SmartData`].
//! - `verdict.rs`: the rules that make a reading `ok`, `warning` or `failing`.
//!
//! The types here travel from the watcher to the daemon's records, the wire and the store
//! (one type from smartctl to the fleet, as [`crate::Hardware`] is for sysfs).

use serde::{Deserialize, Serialize};

/// The one-word verdict on a disk, with the rules in README ("Disk health").
///
/// Declared from best to worst, so `Ord` sorts worst last (and `Reverse` worst first).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum HealthState {
    /// Nothing SMART reports is wrong.
    Ok,
    /// No reading: smartctl missing, failed, hung or printed garbage, or the disk has no
    /// SMART. What went wrong is in `reasons`.
    #[default]
    Unknown,
    /// Counters that a healthy disk keeps at zero are not (reallocated or pending sectors,
    /// media errors, ...), the wear is at 90 % or more, or it runs at its own temperature
    /// limit.
    Warning,
    /// SMART's overall assessment failed, an NVMe critical warning is set, or the spare
    /// area is below its threshold.
    Failing,
}

impl HealthState {
    /// Its word in the tables, JSON and hook environment.
    pub fn as_str(self) -> &'static str {
        match self {
            HealthState::Ok => "ok",
            HealthState::Unknown => "unknown",
            HealthState::Warning => "warning",
            HealthState::Failing => "failing",
        }
    }

    /// Its byte on the wire and in the store (stable: codes are never reused); a code this
    /// build does not know reads as `Unknown`.
    pub fn code(self) -> u8 {
        match self {
            HealthState::Unknown => 0,
            HealthState::Ok => 1,
            HealthState::Warning => 2,
            HealthState::Failing => 3,
        }
    }

    /// See [`HealthState::code`].
    pub fn from_code(code: u8) -> HealthState {
        match code {
            1 => HealthState::Ok,
            2 => HealthState::Warning,
            3 => HealthState::Failing,
            _ => HealthState::Unknown,
        }
    }
}

impl std::fmt::Display for HealthState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What one SMART reading of a physical disk says: the verdict, why, and the figures an
/// operator watches for a trend. A figure the drive does not report is `None`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DiskHealth {
    /// The verdict.
    pub state: HealthState,
    /// Why it is not `ok`, one short phrase each (`5 reallocated sectors`, `smartctl: not
    /// found`); empty when `ok`.
    pub reasons: Vec<String>,
    /// Current temperature, degrees Celsius.
    pub temperature_c: Option<i32>,
    /// Power-on time, hours.
    pub power_on_hours: Option<u64>,
    /// ATA attribute 5 (reallocated sectors), or a SCSI disk's grown defect list.
    pub reallocated_sectors: Option<u64>,
    /// ATA attribute 197 (sectors waiting to be reallocated).
    pub pending_sectors: Option<u64>,
    /// NVMe media and data integrity errors.
    pub media_errors: Option<u64>,
    /// NVMe percentage of the rated endurance used (may exceed 100).
    pub percentage_used: Option<u32>,
    /// When the reading was taken, ms since the epoch: a disk in standby is not woken, and
    /// keeps the reading (and this time) of its last look while awake.
    pub checked: Option<u64>,
}

/// One whole disk's reading, as the SMART watcher reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmartReading {
    /// The whole disk's device path (`/dev/sda`); its partitions show this reading too.
    pub device: String,
    /// (major, minor) of the whole disk, from sysfs.
    pub devno: (u32, u32),
    /// The reading.
    pub health: DiskHealth,
}

pub mod parse;
mod run;
#[cfg(test)]
mod tests;
mod verdict;
mod whole;

pub use parse::{parse_smartctl, SmartData};
pub use run::{SmartWatcher, MAX_OUTPUT, SMARTCTL_OPTIONS};
pub use verdict::verdict;

use std::path::PathBuf;
use std::time::Duration;

use crate::filter::DeviceFilter;

/// Settings of the `smart` watcher, as the daemon's configuration resolved them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmartWatcherConfig {
    /// smartctl's argv before the options the watcher adds (`--json`, `-n standby`, the
    /// device path last): a path, or a program with leading arguments.
    pub command: Vec<String>,
    /// How often each disk is read again (the watcher's own [`Watcher::schedule`] follows
    /// its disks, see there).
    ///
    /// [`Watcher::schedule`]: crate::Watcher::schedule
    pub interval: Duration,
    /// How long one smartctl run may take before it and its process group are killed.
    pub timeout: Duration,
    /// Where sysfs is mounted (the hardware watcher's): which whole disks there are.
    pub sysfs: PathBuf,
    /// Which device paths are read (the `disks` watcher's filter).
    pub filter: DeviceFilter,
}

impl Default for SmartWatcherConfig {
    /// The defaults the daemon uses when nothing is configured.
    fn default() -> Self {
        SmartWatcherConfig {
            command: vec!["smartctl".into()],
            interval: Duration::from_secs(30 * 60),
            timeout: Duration::from_secs(30),
            sysfs: PathBuf::from("/sys"),
            filter: DeviceFilter::default(),
        }
    }
}
