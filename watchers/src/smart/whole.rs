//! Which devices get a SMART reading: the physical whole disks among what the hardware
//! watcher reports, so that both agree on which disks exist and the filter means the
//! same to both.
//!
//! Partitions share their disk's reading (the daemon copies it), and virtual devices
//! (loop, zram, device-mapper, md) have no SMART of their own: asking smartctl about them
//! would only put a permanent `unknown` on them. Optical drives are left out because
//! SMART commands to them are meaningless and some spin the disc up.

use std::path::Path;

use crate::filter::DeviceFilter;
use crate::hardware::{read_sysfs, HardwareInfo};
use crate::WatchError;

/// Kernel name prefixes of block devices that are not physical disks (`sr`: optical).
const NOT_PHYSICAL: [&str; 6] = ["loop", "zram", "ram", "dm-", "md", "sr"];

/// SCSI peripheral device type of a CD/DVD drive (`device/type`).
const TYPE_ROM: &str = "5";

/// A whole disk to read: device path and (major, minor).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct WholeDisk {
    /// `/dev/sda`.
    pub device: String,
    /// From sysfs `dev`.
    pub devno: (u32, u32),
}

/// The whole physical disks under `root` (a sysfs mount) that `filter` admits, sorted by
/// device path. An error only when sysfs cannot be listed (see [`read_sysfs`]).
pub(crate) fn whole_disks(
    root: &Path,
    filter: &DeviceFilter,
) -> Result<Vec<WholeDisk>, WatchError> {
    let found = read_sysfs(root, |d| filter.wanted(d))?;
    Ok(found
        .into_iter()
        .filter(|info| is_physical_whole_disk(root, info))
        .map(|info| WholeDisk {
            device: info.device,
            devno: info.devno,
        })
        .collect())
}

/// Whether a device the hardware watcher reports is a whole physical disk (see the
/// module docs). `read_sysfs` has already left out devices of size 0.
fn is_physical_whole_disk(root: &Path, info: &HardwareInfo) -> bool {
    if info.hardware.parent.is_some() || info.hardware.transport.as_deref() == Some("loop") {
        return false;
    }
    let Some(name) = info.device.strip_prefix("/dev/") else {
        return false;
    };
    if NOT_PHYSICAL.iter().any(|p| name.starts_with(p)) {
        return false;
    }
    // The kernel writes a `/` in a device name as `!` (`cciss!c0d0`).
    let kernel_name = name.replace('/', "!");
    let kind = std::fs::read_to_string(
        root.join("class/block")
            .join(kernel_name)
            .join("device/type"),
    );
    !kind.is_ok_and(|t| t.trim() == TYPE_ROM)
}
