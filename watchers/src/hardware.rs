//! The `hardware` watcher: what each block device physically is (size, model, vendor,
//! serial, WWN, transport, loop backing file), read straight from sysfs.
//!
//! blkid answers "which filesystem is on it"; this answers "which disk is it", which is
//! what an operator needs to find the thing in a rack or a drawer. It runs no child process
//! and needs no udev database: every value comes from `/sys/class/block/*` and the device
//! directories those entries link to. The values are whatever firmware and drivers put
//! there (padded, sometimes binary), so each one is cleaned and capped, and a value that
//! cannot be read is simply absent: one odd attribute never hides a device.

use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::events::LazyBlockEvents;
use crate::filter::DeviceFilter;
use crate::{Observation, Schedule, WatchError, Watcher};

/// Longest model, vendor, serial, WWN or transport kept, in bytes: real ones are at most a
/// few dozen (SCSI INQUIRY: 16-byte model; NVMe: 40-byte model, 20-byte serial), so
/// anything longer is firmware garbage that must not bloat the inventory every peer stores.
const MAX_TEXT: usize = 128;
/// Longest loop backing file kept, in bytes: enough for any sensible image path, while a
/// path near `PATH_MAX` is not copied to the whole fleet.
const MAX_BACKING_FILE: usize = 1024;
/// At most this much of one attribute file is read. Sysfs text attributes are at most a
/// page; a binary VPD page could claim more, but only its first [`MAX_TEXT`] bytes are kept.
const MAX_READ: u64 = 4096;
/// Sysfs `size` counts 512-byte sectors whatever the device's logical block size.
const SECTOR: u64 = 512;

/// What sysfs knows about a block device: the identity printed on the drive's label and
/// the facts an operator needs to tell "the new 4 TB disk" from the others. Every field
/// is `None` when unknown.
///
/// Its postcard layout is part of wire revision 2 (the hardware trailer) and of store
/// schema 4: a field is only ever added with a new trailer tag and a new schema.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Hardware {
    /// Size in bytes.
    pub size: Option<u64>,
    /// Model, as the drive reports it.
    pub model: Option<String>,
    /// Vendor, as the drive reports it.
    pub vendor: Option<String>,
    /// Serial number (whole disks only; a partition names its disk in `parent`).
    pub serial: Option<String>,
    /// World wide name / wwid (whole disks only).
    pub wwn: Option<String>,
    /// How it is attached: `usb`, `sata`, `nvme`, `virtio`, `scsi`, `loop`, `mmc`, ...
    pub transport: Option<String>,
    /// Removable media (a card reader, a USB stick).
    pub removable: Option<bool>,
    /// Spinning disk.
    pub rotational: Option<bool>,
    /// The whole disk a partition belongs to (`/dev/sda` for `/dev/sda1`).
    pub parent: Option<String>,
    /// The file behind a loop device.
    pub backing_file: Option<String>,
}

impl Hardware {
    /// Nothing is known.
    pub fn is_empty(&self) -> bool {
        self == &Hardware::default()
    }
}

/// One block device as sysfs describes it.
///
/// Whole disks carry the identity (model, vendor, serial, WWN); a partition carries only
/// its own size and the [`HardwareInfo::parent`] that leads to them, so the identity of a
/// disk is stated once however many partitions it has.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HardwareInfo {
    /// `/dev/<kernel name>` (`/dev/sda1`, `/dev/nvme0n1`; a `!` in the kernel name is a
    /// `/`, as in `/dev/cciss/c0d0`): the same path blkid reports, so the two can be joined.
    pub device: String,
    /// (major, minor) from the `dev` attribute: ties this device to blkid's and the mount
    /// table's view even when they name it by another path.
    pub devno: (u32, u32),
    /// What sysfs says about it. Whole disks carry the identity (model, vendor, serial,
    /// WWN); a partition carries only its own size and the `parent` that leads to them.
    /// `size` is always present in a reported device: a device of size 0 has no medium and
    /// is not reported.
    pub hardware: Hardware,
}

/// Settings of the `hardware` watcher, as the daemon's configuration resolved them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HardwareWatcherConfig {
    /// Where sysfs is mounted; another directory lets tests feed a fake tree.
    pub root: PathBuf,
    /// How often sysfs is scanned when no block event arrives, and how long one scan may
    /// take before the daemon counts it as hung (an attribute read can reach a device).
    pub schedule: Schedule,
    /// Which device paths are reported (the `disks` watcher's filter).
    pub filter: DeviceFilter,
}

impl Default for HardwareWatcherConfig {
    /// The defaults the daemon uses when nothing is configured, so tests and embedders get
    /// the same behaviour without repeating them.
    fn default() -> Self {
        HardwareWatcherConfig {
            root: PathBuf::from("/sys"),
            schedule: Schedule {
                interval: Duration::from_secs(60),
                timeout: Duration::from_secs(15),
            },
            filter: DeviceFilter::default(),
        }
    }
}

/// Describes every block device from sysfs once per scan, and rescans on block events.
#[derive(Debug)]
pub struct HardwareWatcher {
    cfg: HardwareWatcherConfig,
    /// Shared with the blocking scan task, which must own what it uses: it may outlive a
    /// scan the daemon gave up on.
    filter: Arc<DeviceFilter>,
    /// This watcher's own block device events, opened on first use.
    events: LazyBlockEvents,
}

impl HardwareWatcher {
    /// The watcher's name (`status`, `refresh`), for callers that ask this one to scan.
    pub const NAME: &'static str = "hardware";

    /// A watcher with these settings (its device filter compiled already).
    pub fn new(cfg: HardwareWatcherConfig) -> HardwareWatcher {
        let filter = Arc::new(cfg.filter.clone());
        HardwareWatcher {
            cfg,
            filter,
            events: LazyBlockEvents::default(),
        }
    }
}

#[async_trait]
impl Watcher for HardwareWatcher {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn schedule(&self) -> Schedule {
        self.cfg.schedule
    }

    /// Any block event: a full sysfs scan is cheap, so which devices it named does not
    /// matter (and no quick look is offered).
    async fn changed(&self) {
        let _named = self.events.next().await;
    }

    /// Reads sysfs on the blocking pool: the reads are fast, but some attributes are
    /// produced by the driver on demand and may wait for the device.
    async fn scan(&self) -> Result<Observation, WatchError> {
        let root = self.cfg.root.clone();
        let filter = Arc::clone(&self.filter);
        let found = tokio::task::spawn_blocking(move || read_sysfs(&root, |d| filter.wanted(d)))
            .await
            .map_err(|e| WatchError::Io {
                what: format!("reading {}", self.cfg.root.join("class/block").display()),
                source: io::Error::other(e),
            })??;
        Ok(Observation::Hardware(found))
    }
}

/// Describes the block devices under `root` (a sysfs mount, normally `/sys`) for which
/// `wanted` accepts the `/dev/...` path, sorted by device path.
///
/// Devices without a medium (size 0: an unattached loop device, an empty card reader) and
/// RAM disks (`ram*`) are left out, as is a device that disappears while it is read. Only a
/// missing or unreadable `root/class/block` is an error, so the daemon keeps its previous
/// observation instead of reporting every disk gone.
pub fn read_sysfs(
    root: &Path,
    wanted: impl Fn(&str) -> bool,
) -> Result<Vec<HardwareInfo>, WatchError> {
    let class = root.join("class/block");
    let entries = std::fs::read_dir(&class).map_err(|e| list_error(&class, e))?;
    // Transports are judged on the path below the root, so that where the root itself lies
    // (a test's temporary directory) cannot look like a bus.
    let real_root = std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
    let mut found = Vec::new();
    for entry in entries {
        // A listing that broke off half-way would make the rest of the disks look gone.
        let entry = entry.map_err(|e| list_error(&class, e))?;
        // Kernel names are ASCII; anything else is no device we could name in `/dev`.
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if let Some(info) = read_device(&real_root, &entry.path(), &name, &wanted) {
            found.push(info);
        }
    }
    found.sort_by(|a, b| a.device.cmp(&b.device));
    forget_shared_usb_serials(&mut found);
    Ok(found)
}

/// A serial that several USB disks of this machine report is their bridge's (a multi-bay
/// dock, a card reader, a bridge chip with a made-up serial), not any one disk's: kept, it
/// would make them one disk, and the next disk in that bay the previous one. Forgotten,
/// each is known by its device, as a disk without a serial is.
fn forget_shared_usb_serials(found: &mut [HardwareInfo]) {
    let usb_serial = |h: &HardwareInfo| {
        (h.hardware.parent.is_none() && h.hardware.transport.as_deref() == Some("usb"))
            .then(|| h.hardware.serial.clone())
            .flatten()
    };
    let mut count: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for s in found.iter().filter_map(usb_serial) {
        *count.entry(s).or_default() += 1;
    }
    for h in found.iter_mut() {
        if usb_serial(h).is_some_and(|s| count.get(&s).copied().unwrap_or(0) > 1) {
            h.hardware.serial = None;
        }
    }
}

/// The error for a `class/block` directory that cannot be listed.
fn list_error(class: &Path, e: io::Error) -> WatchError {
    let what = class.display().to_string();
    match e.kind() {
        io::ErrorKind::NotFound => WatchError::NotFound { program: what },
        io::ErrorKind::PermissionDenied => WatchError::PermissionDenied { what },
        _ => WatchError::Io {
            what: format!("listing {what}"),
            source: e,
        },
    }
}

/// One `class/block` entry, or `None` when it is not reported (see [`read_sysfs`]).
fn read_device(
    real_root: &Path,
    link: &Path,
    name: &str,
    wanted: impl Fn(&str) -> bool,
) -> Option<HardwareInfo> {
    if name.starts_with("ram") {
        return None;
    }
    let device = dev_path(name);
    if !wanted(&device) {
        return None;
    }
    // Gone since the listing (or a link we cannot follow): nothing to describe.
    let dir = std::fs::canonicalize(link).ok()?;
    let size = read_size(&dir)?;
    let devno = read_devno(&dir)?;

    let partition = dir.join("partition").exists();
    // A partition's directory sits inside its disk's; the disk holds the attributes a
    // partition shares with it.
    let (disk_dir, disk_name, parent) = if partition {
        let disk_dir = dir.parent()?;
        let disk_name = disk_dir.file_name()?.to_str()?;
        (disk_dir, disk_name, Some(dev_path(disk_name)))
    } else {
        (dir.as_path(), name, None)
    };
    let below_root = match disk_dir.strip_prefix(real_root) {
        Ok(rel) => Path::new("/").join(rel),
        Err(_) => disk_dir.to_path_buf(),
    };
    let transport = transport(&below_root.to_string_lossy(), disk_name);

    let mut info = HardwareInfo {
        device,
        devno,
        hardware: Hardware {
            size: Some(size),
            transport: transport.map(str::to_string),
            removable: read_flag(&disk_dir.join("removable")),
            rotational: read_flag(&disk_dir.join("queue/rotational")),
            parent,
            backing_file: read_backing_file(&dir.join("loop/backing_file")),
            ..Hardware::default()
        },
    };
    if !partition {
        let hw = dir.join("device");
        info.hardware.model = read_text(&hw.join("model"))
            .or_else(|| {
                (transport == Some("mmc"))
                    .then(|| read_text(&hw.join("name")))
                    .flatten()
            })
            .filter(|m| !is_bare_hex_id(m));
        info.hardware.vendor = read_text(&hw.join("vendor")).filter(|v| !is_bare_hex_id(v));
        info.hardware.serial = read_text(&dir.join("serial"))
            .or_else(|| read_text(&hw.join("serial")))
            .or_else(|| read_bytes(&hw.join("vpd_pg80")).and_then(|page| vpd_serial(&page)))
            .or_else(|| {
                (transport == Some("usb"))
                    .then(|| usb_serial(real_root, &dir))
                    .flatten()
            });
        info.hardware.wwn = read_text(&dir.join("wwid")).or_else(|| read_text(&hw.join("wwid")));
    }
    // Vanished while being read: whatever was read may be half a device.
    if !dir.exists() {
        return None;
    }
    Some(info)
}

/// `/dev/<kernel name>`; the kernel writes `/` in a device name as `!` (`cciss!c0d0`).
fn dev_path(name: &str) -> String {
    format!("/dev/{}", name.replace('!', "/"))
}

/// How a disk is attached, from its real sysfs path below the root (`/devices/...`) and its
/// kernel name; the first match wins, because a USB disk's path also names SCSI hosts and a
/// virtio disk's a PCI bus.
fn transport(path: &str, name: &str) -> Option<&'static str> {
    let t = if path.contains("/virtual/block/loop") || name.starts_with("loop") {
        "loop"
    } else if path.contains("/usb") {
        "usb"
    } else if path.contains("/nvme") {
        "nvme"
    } else if path.contains("/mmc") {
        // Also covers `/mmc_host/`.
        "mmc"
    } else if path.contains("/virtio") {
        "virtio"
    } else if path.contains("/ata") {
        "sata"
    } else if path.contains("/host") && path.contains("/target") {
        "scsi"
    } else if path.contains("/virtual/") {
        "virtual"
    } else {
        return None;
    };
    Some(t)
}

/// Size in bytes; `None` (the device is not reported) when there is no medium, the
/// attribute is gone or it is not a number.
fn read_size(dir: &Path) -> Option<u64> {
    let sectors: u64 = read_text(&dir.join("size"))?.parse().ok()?;
    if sectors == 0 {
        return None;
    }
    sectors.checked_mul(SECTOR)
}

/// (major, minor) from `dev` (`8:1`); every block device has one, so a device without it
/// is gone or not a block device.
fn read_devno(dir: &Path) -> Option<(u32, u32)> {
    let text = read_text(&dir.join("dev"))?;
    let (major, minor) = text.split_once(':')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

/// A `0`/`1` attribute.
fn read_flag(path: &Path) -> Option<bool> {
    match read_text(path)?.as_str() {
        "1" => Some(true),
        "0" => Some(false),
        _ => None,
    }
}

/// The start of an attribute file; `None` when it cannot be opened or read.
fn read_bytes(path: &Path) -> Option<Vec<u8>> {
    let file = std::fs::File::open(path).ok()?;
    let mut buf = Vec::new();
    file.take(MAX_READ).read_to_end(&mut buf).ok()?;
    Some(buf)
}

/// A text attribute, cleaned by [`clean_text`].
fn read_text(path: &Path) -> Option<String> {
    clean_text(&String::from_utf8_lossy(&read_bytes(path)?))
}

/// A loop device's backing file: trimmed and without control characters, but inner
/// spaces are kept, because they are part of the path.
fn read_backing_file(path: &Path) -> Option<String> {
    let raw = read_bytes(path)?;
    let text: String = String::from_utf8_lossy(&raw)
        .trim()
        .chars()
        .filter(|c| !c.is_control())
        .collect();
    let text = cap(text, MAX_BACKING_FILE);
    (!text.is_empty()).then_some(text)
}

/// Firmware pads its strings with spaces and sometimes NULs: control characters are
/// dropped, runs of whitespace become one space, the ends are trimmed and the result is
/// capped at [`MAX_TEXT`] bytes. Nothing left means no value.
fn clean_text(raw: &str) -> Option<String> {
    let printable: String = raw
        .chars()
        .filter(|c| !c.is_control() || c.is_whitespace())
        .collect();
    let words: Vec<&str> = printable.split_whitespace().collect();
    let text = cap(words.join(" "), MAX_TEXT);
    let text = text.trim_end();
    (!text.is_empty()).then(|| text.to_string())
}

/// `text` cut to at most `max` bytes, at a character boundary.
fn cap(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

/// Whether a value is only a numeric id (`0x1af4`), which names no vendor or model.
fn is_bare_hex_id(text: &str) -> bool {
    text.strip_prefix("0x")
        .or_else(|| text.strip_prefix("0X"))
        .is_some_and(|hex| !hex.is_empty() && hex.chars().all(|c| c.is_ascii_hexdigit()))
}

/// The serial number in a SCSI Unit Serial Number VPD page (`vpd_pg80`): byte 1 is the page
/// code 0x80, bytes 2..4 the big-endian length of the ASCII serial that follows. A page
/// shorter than it claims yields what it has; non-ASCII bytes are dropped.
fn vpd_serial(page: &[u8]) -> Option<String> {
    if page.get(1) != Some(&0x80) {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([*page.get(2)?, *page.get(3)?]));
    let body = page.get(4..)?;
    let ascii: String = body[..len.min(body.len())]
        .iter()
        .filter(|b| b.is_ascii())
        .map(|&b| char::from(b))
        .collect();
    clean_text(&ascii)
}

/// The serial of the USB device a disk belongs to: the first directory above the disk
/// that is a USB device (has `idVendor`); not further up, where hubs have their own. Not
/// for a device with several logical units (a card reader with a slot per card type): its
/// serial is the reader's, and every card in it would be the same disk.
fn usb_serial(real_root: &Path, dir: &Path) -> Option<String> {
    // `.../targetH:C:T/H:C:T:L/block/sdX`: the units beside this one.
    let target = dir.parent()?.parent()?.parent()?;
    let units = std::fs::read_dir(target)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().contains(':'))
                .count()
        })
        .unwrap_or(0);
    if units > 1 {
        return None;
    }
    let usb = dir
        .ancestors()
        .skip(1)
        .take_while(|a| a.starts_with(real_root) && *a != real_root)
        .find(|a| a.join("idVendor").exists())?;
    read_text(&usb.join("serial"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake_sysfs::FakeSysfs;

    impl FakeSysfs {
        /// What the hardware watcher reads of the whole tree.
        fn read(&self) -> Vec<HardwareInfo> {
            read_sysfs(self.root(), |_| true).unwrap()
        }
    }

    const SATA: &str = "devices/pci0000:00/0000:00:1f.2/ata1/host0/target0:0:0/0:0:0:0";
    const NVME: &str = "devices/pci0000:00/0000:00:1d.0/0000:3d:00.0/nvme/nvme0";
    const USB: &str = "devices/pci0000:00/0000:00:14.0/usb1/1-1";
    const VIRTIO: &str = "devices/pci0000:00/0000:00:02.0/virtio1";
    const MMC: &str = "devices/platform/fe320000.mmc/mmc_host/mmc0/mmc0:aaaa";

    /// A VPD page 0x80 holding `serial`.
    fn vpd_page(serial: &[u8]) -> Vec<u8> {
        let len = u16::try_from(serial.len()).unwrap().to_be_bytes();
        let mut page = vec![0x00, 0x80, len[0], len[1]];
        page.extend_from_slice(serial);
        page
    }

    /// A whole disk's block directory `dir` (`sectors`, `dev`), with its `removable` flag,
    /// its `queue/rotational` flag when the driver writes one, and its `device` link to
    /// `device`.
    fn whole_disk(
        sys: &FakeSysfs,
        dir: &str,
        (sectors, dev): (u64, &str),
        removable: bool,
        rotational: Option<bool>,
        device: &str,
    ) {
        let flag = |on: bool| if on { "1\n" } else { "0\n" };
        sys.block(dir, sectors, dev);
        sys.file(&format!("{dir}/removable"), flag(removable));
        if let Some(rotational) = rotational {
            sys.file(&format!("{dir}/queue/rotational"), flag(rotational));
        }
        sys.link(&format!("{dir}/device"), device);
    }

    /// A SATA SSD with two partitions, as a 2.5" disk on an Intel AHCI controller shows it.
    fn sata(sys: &FakeSysfs) {
        let sda = format!("{SATA}/block/sda");
        whole_disk(sys, &sda, (1_953_525_168, "8:0"), false, Some(true), SATA);
        sys.file(&format!("{SATA}/model"), "  WDC  WD10EZEX-08W \n");
        sys.file(&format!("{SATA}/vendor"), "ATA     \n");
        sys.file(&format!("{SATA}/wwid"), "naa.50014ee2b5c1d2e3\n");
        sys.file(
            &format!("{SATA}/vpd_pg80"),
            vpd_page(b"     WD-WCC6Y0ABCDEF\0"),
        );
        for (n, sectors, minor) in [(1, 2048, 1), (2, 1_953_520_000, 2)] {
            let part = format!("{sda}/sda{n}");
            sys.block(&part, sectors, &format!("8:{minor}"));
            sys.file(&format!("{part}/partition"), format!("{n}\n"));
        }
    }

    fn nvme(sys: &FakeSysfs) {
        let ns = format!("{NVME}/nvme0n1");
        whole_disk(sys, &ns, (1_000_215_216, "259:0"), false, Some(false), NVME);
        sys.file(&format!("{ns}/wwid"), "eui.0025388b91b2c3d4\n");
        sys.file(
            &format!("{NVME}/model"),
            "Samsung SSD 970 EVO Plus 1TB            \n",
        );
        sys.file(&format!("{NVME}/serial"), "S4EWNX0R123456P     \n");
    }

    /// A USB stick: the SCSI device knows model and vendor, the USB device the serial; the
    /// root hub above has a "serial" of its own that must not be taken.
    fn usb(sys: &FakeSysfs) {
        let scsi = format!("{USB}/1-1:1.0/host2/target2:0:0/2:0:0:0");
        let sdb = format!("{scsi}/block/sdb");
        whole_disk(sys, &sdb, (60_063_744, "8:16"), true, Some(true), &scsi);
        sys.file(&format!("{scsi}/model"), "Cruzer Blade    \n");
        sys.file(&format!("{scsi}/vendor"), "SanDisk \n");
        sys.file(&format!("{USB}/idVendor"), "0781\n");
        sys.file(&format!("{USB}/serial"), "4C530001230313109522\n");
        sys.file("devices/pci0000:00/0000:00:14.0/usb1/idVendor", "1d6b\n");
        sys.file(
            "devices/pci0000:00/0000:00:14.0/usb1/serial",
            "0000:00:14.0\n",
        );
    }

    fn virtio(sys: &FakeSysfs) {
        let vda = format!("{VIRTIO}/block/vda");
        whole_disk(sys, &vda, (536_870_912, "254:0"), false, None, VIRTIO);
        // virtio-blk writes its serial without a newline.
        sys.file(&format!("{vda}/serial"), "overlayblk0");
        sys.file(&format!("{VIRTIO}/vendor"), "0x1af4\n");
        sys.file(&format!("{VIRTIO}/device"), "0x0002\n");
    }

    /// An attached loop device whose image was deleted, an unattached one, a RAM disk.
    fn loops(sys: &FakeSysfs) {
        sys.block("devices/virtual/block/loop3", 204_800, "7:3");
        sys.file(
            "devices/virtual/block/loop3/loop/backing_file",
            "/var/lib/images/my  disk.img (deleted)\n",
        );
        sys.file("devices/virtual/block/loop3/queue/rotational", "0\n");
        sys.block("devices/virtual/block/loop0", 0, "7:0");
        sys.block("devices/virtual/block/ram0", 8192, "1:0");
    }

    fn mmc(sys: &FakeSysfs) {
        let blk = format!("{MMC}/block/mmcblk0");
        sys.block(&blk, 62_521_344, "179:0");
        sys.link(&format!("{blk}/device"), MMC);
        sys.file(&format!("{MMC}/name"), "SD64G\n");
        sys.file(&format!("{MMC}/serial"), "0x1234abcd\n");
    }

    fn machine() -> FakeSysfs {
        let sys = FakeSysfs::new();
        sata(&sys);
        nvme(&sys);
        usb(&sys);
        virtio(&sys);
        loops(&sys);
        mmc(&sys);
        sys
    }

    fn get<'a>(all: &'a [HardwareInfo], device: &str) -> &'a HardwareInfo {
        all.iter()
            .find(|d| d.device == device)
            .unwrap_or_else(|| panic!("{device} missing from {all:#?}"))
    }

    /// What sysfs says of `device`, numbered `devno`.
    fn info(device: &str, devno: (u32, u32), hardware: Hardware) -> HardwareInfo {
        HardwareInfo {
            device: device.into(),
            devno,
            hardware,
        }
    }

    /// A machine with only what `setup` puts in its sysfs reads as `want`, alone.
    #[track_caller]
    fn assert_reads_alone(setup: fn(&FakeSysfs), want: HardwareInfo) {
        let sys = FakeSysfs::new();
        setup(&sys);
        assert_eq!(sys.read(), [want]);
    }

    fn s(text: &str) -> Option<String> {
        Some(text.to_string())
    }

    #[test]
    fn a_whole_machine_sorted_without_empty_and_ram_devices() {
        let all = machine().read();
        let names: Vec<&str> = all.iter().map(|d| d.device.as_str()).collect();
        assert_eq!(
            names,
            [
                "/dev/loop3",
                "/dev/mmcblk0",
                "/dev/nvme0n1",
                "/dev/sda",
                "/dev/sda1",
                "/dev/sda2",
                "/dev/sdb",
                "/dev/vda"
            ]
        );
    }

    #[test]
    fn sata_disk_with_a_vpd_serial_and_padded_model() {
        let sys = FakeSysfs::new();
        sata(&sys);
        let all = sys.read();
        assert_eq!(
            get(&all, "/dev/sda"),
            &info(
                "/dev/sda",
                (8, 0),
                Hardware {
                    size: Some(1_953_525_168 * 512),
                    model: s("WDC WD10EZEX-08W"),
                    vendor: s("ATA"),
                    serial: s("WD-WCC6Y0ABCDEF"),
                    wwn: s("naa.50014ee2b5c1d2e3"),
                    transport: s("sata"),
                    removable: Some(false),
                    rotational: Some(true),
                    parent: None,
                    backing_file: None,
                }
            )
        );
    }

    #[test]
    fn partitions_inherit_how_the_disk_is_attached_but_not_its_identity() {
        let sys = FakeSysfs::new();
        sata(&sys);
        let all = sys.read();
        for (dev, devno, size) in [
            ("/dev/sda1", (8, 1), 2048 * 512),
            ("/dev/sda2", (8, 2), 1_953_520_000 * 512),
        ] {
            assert_eq!(
                get(&all, dev),
                &info(
                    dev,
                    devno,
                    Hardware {
                        size: Some(size),
                        transport: s("sata"),
                        removable: Some(false),
                        rotational: Some(true),
                        parent: s("/dev/sda"),
                        ..Hardware::default()
                    }
                )
            );
        }
    }

    #[test]
    fn nvme_namespace_with_controller_model_and_serial() {
        assert_reads_alone(
            nvme,
            info(
                "/dev/nvme0n1",
                (259, 0),
                Hardware {
                    size: Some(1_000_215_216 * 512),
                    model: s("Samsung SSD 970 EVO Plus 1TB"),
                    vendor: None,
                    serial: s("S4EWNX0R123456P"),
                    wwn: s("eui.0025388b91b2c3d4"),
                    transport: s("nvme"),
                    removable: Some(false),
                    rotational: Some(false),
                    parent: None,
                    backing_file: None,
                },
            ),
        );
    }

    #[test]
    fn usb_stick_takes_the_serial_of_its_usb_device_not_the_hub() {
        assert_reads_alone(
            usb,
            info(
                "/dev/sdb",
                (8, 16),
                Hardware {
                    size: Some(60_063_744 * 512),
                    model: s("Cruzer Blade"),
                    vendor: s("SanDisk"),
                    serial: s("4C530001230313109522"),
                    wwn: None,
                    transport: s("usb"),
                    removable: Some(true),
                    rotational: Some(true),
                    parent: None,
                    backing_file: None,
                },
            ),
        );
    }

    #[test]
    fn a_card_reader_or_a_dock_lends_its_serial_to_no_disk() {
        let sys = FakeSysfs::new();
        // A card reader: one USB device, a unit per slot; a card in the first.
        let reader = "devices/pci0000:00/0000:00:14.0/usb1/1-2";
        for (unit, name, size, dev) in [(0, "sdc", 62_521_344, "8:32"), (1, "sdd", 0, "8:48")] {
            let scsi = format!("{reader}/1-2:1.0/host3/target3:0:0/3:0:0:{unit}");
            sys.block(&format!("{scsi}/block/{name}"), size, dev);
            sys.link(&format!("{scsi}/block/{name}/device"), &scsi);
        }
        sys.file(&format!("{reader}/idVendor"), "05e3\n");
        sys.file(&format!("{reader}/serial"), "000000000819\n");
        // A two-bay dock whose bridge gives both disks its own serial.
        let dock = "devices/pci0000:00/0000:00:14.0/usb2/2-1";
        for (t, name, dev) in [(0, "sde", "8:64"), (1, "sdf", "8:80")] {
            let scsi = format!("{dock}/2-1:1.0/host4/target4:0:{t}/4:0:{t}:0");
            sys.block(&format!("{scsi}/block/{name}"), 1_000_000, dev);
            sys.link(&format!("{scsi}/block/{name}/device"), &scsi);
        }
        sys.file(&format!("{dock}/idVendor"), "152d\n");
        sys.file(&format!("{dock}/serial"), "0123456789ABCDEF\n");
        usb(&sys);
        let found = sys.read();
        let serial = |d: &str| {
            found
                .iter()
                .find(|h| h.device == d)
                .map(|h| h.hardware.serial.clone())
                .unwrap_or_else(|| panic!("no {d} in {found:?}"))
        };
        assert_eq!(serial("/dev/sdc"), None, "the reader's serial");
        assert_eq!(serial("/dev/sde"), None, "the dock's serial");
        assert_eq!(serial("/dev/sdf"), None, "the dock's serial");
        // A stick is its USB device: its serial stays.
        assert_eq!(serial("/dev/sdb"), s("4C530001230313109522"));
    }

    #[test]
    fn virtio_disk_has_a_serial_but_a_pci_id_is_no_vendor() {
        assert_reads_alone(
            virtio,
            info(
                "/dev/vda",
                (254, 0),
                Hardware {
                    size: Some(536_870_912 * 512),
                    serial: s("overlayblk0"),
                    transport: s("virtio"),
                    removable: Some(false),
                    ..Hardware::default()
                },
            ),
        );
    }

    #[test]
    fn loop_device_keeps_its_deleted_backing_file_and_empty_ones_are_skipped() {
        assert_reads_alone(
            loops,
            info(
                "/dev/loop3",
                (7, 3),
                Hardware {
                    size: Some(204_800 * 512),
                    transport: s("loop"),
                    rotational: Some(false),
                    backing_file: s("/var/lib/images/my  disk.img (deleted)"),
                    ..Hardware::default()
                },
            ),
        );
    }

    #[test]
    fn mmc_card_model_comes_from_its_name() {
        let sys = FakeSysfs::new();
        mmc(&sys);
        let all = sys.read();
        let card = get(&all, "/dev/mmcblk0");
        assert_eq!(card.hardware.model, s("SD64G"));
        assert_eq!(card.hardware.serial, s("0x1234abcd"));
        assert_eq!(card.hardware.transport, s("mmc"));
    }

    #[test]
    fn other_transports_and_odd_names() {
        let sys = FakeSysfs::new();
        sys.block("devices/virtual/block/dm-0", 100, "253:0");
        sys.block(
            "devices/pci0000:00/0000:00:05.0/cciss0/c0d0/block/cciss!c0d0",
            100,
            "104:0",
        );
        sys.block(
            "devices/pci0000:00/0000:00:10.0/host3/target3:0:1/3:0:1:0/block/sdc",
            100,
            "8:32",
        );
        let all = sys.read();
        let transports: Vec<(&str, Option<&str>)> = all
            .iter()
            .map(|d| (d.device.as_str(), d.hardware.transport.as_deref()))
            .collect();
        assert_eq!(
            transports,
            [
                ("/dev/cciss/c0d0", None),
                ("/dev/dm-0", Some("virtual")),
                ("/dev/sdc", Some("scsi")),
            ]
        );
    }

    #[test]
    fn include_and_exclude_globs_on_the_device_path() {
        let sys = machine();
        let w = HardwareWatcher::new(HardwareWatcherConfig {
            root: sys.root().to_path_buf(),
            filter: DeviceFilter::new(
                &["/dev/sd*".into(), "/dev/loop*".into()],
                &["/dev/sda2".into(), "/dev/loop*".into()],
            )
            .unwrap(),
            ..HardwareWatcherConfig::default()
        });
        let all = read_sysfs(sys.root(), |d| w.filter.wanted(d)).unwrap();
        let names: Vec<&str> = all.iter().map(|d| d.device.as_str()).collect();
        assert_eq!(names, ["/dev/sda", "/dev/sda1", "/dev/sdb"]);
        // Excluding the disk does not hide its partitions, nor change what they say.
        let parts = read_sysfs(sys.root(), |d| d != "/dev/sda").unwrap();
        assert_eq!(get(&parts, "/dev/sda1").hardware.transport, s("sata"));
        assert!(DeviceFilter::new(&["/dev/[".into()], &[]).is_err());
    }

    #[test]
    fn vanished_and_broken_devices_are_skipped_silently() {
        let sys = FakeSysfs::new();
        virtio(&sys);
        // Removed between the listing and the reading: the link dangles.
        sys.link("class/block/sdz", "devices/virtual/block/gone");
        // No usable size or device number.
        sys.block("devices/virtual/block/dm-1", 100, "253:1");
        std::fs::write(sys.root().join("devices/virtual/block/dm-1/size"), "many\n").unwrap();
        sys.block("devices/virtual/block/dm-2", 100, "garbage");
        sys.file("devices/virtual/block/dm-3/dev", "253:3\n");
        sys.link("class/block/dm-3", "devices/virtual/block/dm-3");
        let names: Vec<String> = sys.read().into_iter().map(|d| d.device).collect();
        assert_eq!(names, ["/dev/vda"]);
    }

    #[test]
    fn a_missing_class_block_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = read_sysfs(dir.path(), |_| true).unwrap_err();
        assert!(matches!(err, WatchError::NotFound { .. }), "{err:?}");
        let err = read_sysfs(&dir.path().join("nowhere"), |_| true).unwrap_err();
        assert!(matches!(err, WatchError::NotFound { .. }), "{err:?}");
    }

    #[test]
    fn text_is_trimmed_collapsed_stripped_and_capped() {
        assert_eq!(
            clean_text("  Samsung\t SSD \n 860  \n"),
            s("Samsung SSD 860")
        );
        assert_eq!(clean_text("A\0B \x1b[31m C\u{85}D"), s("AB [31m C D"));
        assert_eq!(clean_text(" \n\0 "), None);
        let long = "é".repeat(100);
        let capped = clean_text(&long).unwrap();
        assert_eq!(capped.len(), 128);
        assert_eq!(clean_text(&format!("x{long}")).unwrap().len(), 127);
        assert!(is_bare_hex_id("0x1af4") && is_bare_hex_id("0X00FF"));
        assert!(!is_bare_hex_id("0x") && !is_bare_hex_id("ATA") && !is_bare_hex_id("0xZ1"));
    }

    #[test]
    fn vpd_serial_pages() {
        assert_eq!(vpd_serial(&vpd_page(b"  ABC123  ")), s("ABC123"));
        // Longer than the page: what is there; non-ASCII dropped.
        let mut short = vpd_page(b"XY\xffZ");
        short[3] = 200;
        assert_eq!(vpd_serial(&short), s("XYZ"));
        // Only the claimed length counts.
        let mut long = vpd_page(b"ABCDEF");
        long[3] = 3;
        assert_eq!(vpd_serial(&long), s("ABC"));
        // Another page, a truncated header, an empty serial.
        let mut other = vpd_page(b"ABC");
        other[1] = 0x83;
        assert_eq!(vpd_serial(&other), None);
        assert_eq!(vpd_serial(&[0, 0x80, 0]), None);
        assert_eq!(vpd_serial(&vpd_page(b"    ")), None);
    }

    #[test]
    fn a_long_backing_file_is_capped() {
        let sys = FakeSysfs::new();
        sys.block("devices/virtual/block/loop1", 8, "7:1");
        let path = format!("/{}\n", "a".repeat(2000));
        sys.file("devices/virtual/block/loop1/loop/backing_file", path);
        let all = sys.read();
        assert_eq!(
            all[0].hardware.backing_file.as_ref().map(String::len),
            Some(1024)
        );
    }

    #[tokio::test]
    async fn the_watcher_scans_the_configured_root() {
        let sys = machine();
        let w = HardwareWatcher::new(HardwareWatcherConfig {
            root: sys.root().to_path_buf(),
            filter: DeviceFilter::new(&[], &["/dev/sd*".into()]).unwrap(),
            ..HardwareWatcherConfig::default()
        });
        assert_eq!(w.name(), "hardware");
        assert_eq!(w.schedule().interval, Duration::from_secs(60));
        assert_eq!(w.schedule().timeout, Duration::from_secs(15));
        let Observation::Hardware(all) = w.scan().await.unwrap() else {
            panic!("not a hardware observation");
        };
        assert_eq!(all.len(), 4);
        assert!(all.iter().all(|d| !d.device.starts_with("/dev/sd")));
        assert_eq!(w.scan_changed().await, None);
    }

    /// This machine's own sysfs: whatever it holds must read without error, and only
    /// devices with a medium are reported.
    #[test]
    fn the_real_sysfs_reads() {
        let all = read_sysfs(Path::new("/sys"), |_| true).unwrap();
        for d in &all {
            assert!(d.hardware.size.is_some_and(|s| s > 0), "{d:?}");
            assert!(d.device.starts_with("/dev/"), "{d:?}");
        }
        let mut sorted = all.clone();
        sorted.sort_by(|a, b| a.device.cmp(&b.device));
        assert_eq!(all, sorted);
    }
}
