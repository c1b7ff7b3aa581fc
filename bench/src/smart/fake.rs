//! The simulated host of `diskd-bench smart`: a sysfs tree with N whole disks (SATA and
//! NVMe, each with one partition), a fake blkid that reports the partitions' filesystems,
//! and a fake smartctl that prints a real smartctl 7 `--json -a` output per disk.
//!
//! Device numbers are 259:4096 and up, which no device of a normal machine has, so the
//! mount watcher (it reads this machine's real mount table) can never join one of the
//! fake records to a real mount. Names are the kernel's (`sda`..`sdz`, `sdaa`..,
//! `nvme0n1`..) and are never opened: neither fake touches `/dev`.

use std::fmt::Write as _;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// One fixture: what smartctl printed for a real disk (the watcher's own test fixtures).
pub struct Fixture {
    /// File name, for the report.
    pub name: &'static str,
    /// smartctl's stdout.
    pub json: &'static str,
}

macro_rules! fixture {
    ($name:literal) => {
        Fixture {
            name: $name,
            json: include_str!(concat!(
                "../../../watchers/tests/fixtures/smart/",
                $name,
                ".json"
            )),
        }
    };
}

/// Healthy spinning SATA disk (read through a USB bridge in the fixture; smartctl's
/// output of the drive is the same on a SATA port).
static ATA_HDD: Fixture = fixture!("usb-sat");
/// SATA disk with command timeouts (a `warning`; smartctl's packed raw values).
static ATA_TIMEOUTS: Fixture = fixture!("ata-packed");
/// Healthy SATA SSD.
static ATA_SSD: Fixture = fixture!("ata-ssd-healthy");
/// SATA disk with reallocated sectors (a `warning`).
static ATA_REALLOCATED: Fixture = fixture!("ata-hdd-reallocated");
/// SATA disk whose overall assessment failed (`failing`).
static ATA_FAILING: Fixture = fixture!("ata-failing");
/// Healthy NVMe SSD.
static NVME_OK: Fixture = fixture!("nvme-healthy");
/// NVMe SSD past its rated endurance.
static NVME_WORN: Fixture = fixture!("nvme-worn");

/// One simulated whole disk.
pub struct FakeDisk {
    /// Kernel name (`sdaa`, `nvme3n1`).
    pub name: String,
    /// Its one partition's kernel name.
    pub part: String,
    /// NVMe (else SATA).
    pub nvme: bool,
    /// What its smartctl prints.
    pub fixture: &'static Fixture,
    /// The partition's filesystem UUID (blkid).
    pub uuid: String,
}

/// The kernel's name of the `i`th SCSI disk: `sda`..`sdz`, then `sdaa`..`sdzz`.
fn sd_name(i: usize) -> String {
    let letter = |n: usize| char::from(b'a' + (n % 26) as u8);
    if i < 26 {
        format!("sd{}", letter(i))
    } else {
        format!("sd{}{}", letter(i / 26 - 1), letter(i))
    }
}

/// The host's disks: one in three NVMe (a storage server: HDDs and SSDs in the bays,
/// NVMe for cache), most healthy, one SATA disk in ten with reallocated sectors, one in
/// forty failing, one in ten with command timeouts, one NVMe in ten worn out: every
/// verdict and both protocols take part.
pub fn plan(n: usize) -> Vec<FakeDisk> {
    let (mut sata, mut nvme) = (0usize, 0usize);
    (0..n)
        .map(|i| {
            let is_nvme = i % 3 == 2;
            let (name, part, fixture) = if is_nvme {
                let k = nvme;
                nvme += 1;
                let f = if k % 10 == 9 { &NVME_WORN } else { &NVME_OK };
                (format!("nvme{k}n1"), format!("nvme{k}n1p1"), f)
            } else {
                let s = sata;
                sata += 1;
                let f = match s % 40 {
                    39 => &ATA_FAILING,
                    x if x % 10 == 9 => &ATA_REALLOCATED,
                    x if x % 10 == 4 => &ATA_TIMEOUTS,
                    x if x % 2 == 0 => &ATA_HDD,
                    _ => &ATA_SSD,
                };
                let name = sd_name(s);
                (name.clone(), format!("{name}1"), f)
            };
            FakeDisk {
                name,
                part,
                nvme: is_nvme,
                fixture,
                uuid: format!("{:08x}-5a5a-4000-8000-{:012x}", 0x5eed_0000 + i, i),
            }
        })
        .collect()
}

/// A string field of a fixture's JSON, for the fake sysfs (model, serial).
fn field(v: &serde_json::Value, key: &str) -> Option<String> {
    v.get(key).and_then(|s| s.as_str()).map(str::to_string)
}

/// Write `text` at `path`, creating its directory.
fn write(path: &Path, text: &[u8]) -> Result<(), String> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))
}

fn link(target: &str, at: &Path) -> Result<(), String> {
    symlink(target, at).map_err(|e| format!("{}: {e}", at.display()))
}

/// Build the sysfs tree of `disks` under `root`, in the kernel's layout (what
/// `tests/hardware.rs::fake_sysfs` does for one disk): SATA disks under an AHCI port with
/// model, vendor, WWN and the serial in VPD page 0x80; NVMe namespaces under their
/// controller with model and serial there. Every disk gets the fixture's model and a
/// serial of its own.
pub fn sysfs(root: &Path, disks: &[FakeDisk]) -> Result<(), String> {
    let class = root.join("class/block");
    std::fs::create_dir_all(&class).map_err(|e| format!("{}: {e}", class.display()))?;
    for (i, d) in disks.iter().enumerate() {
        let json: serde_json::Value = serde_json::from_str(d.fixture.json)
            .map_err(|e| format!("fixture {}: {e}", d.fixture.name))?;
        let model = field(&json, "model_name").unwrap_or_else(|| "FAKE DISK".into());
        let serial = format!("BENCH{i:06}");
        let sectors: u64 = if d.nvme { 1_953_525_168 } else { 7_814_037_168 };
        let rotational = std::ptr::eq(d.fixture, &ATA_HDD)
            || std::ptr::eq(d.fixture, &ATA_TIMEOUTS)
            || std::ptr::eq(d.fixture, &ATA_REALLOCATED)
            || std::ptr::eq(d.fixture, &ATA_FAILING);
        // The device directory (model, serial) and the disk's directory below it.
        let (devdir_rel, disk_rel) = if d.nvme {
            let k = d.name.trim_start_matches("nvme").trim_end_matches("n1");
            let ctrl = format!(
                "devices/pci0000:00/0000:00:1d.0/0000:{:02x}:00.0/nvme/nvme{k}",
                0x10 + i % 0xe0
            );
            let disk = format!("{ctrl}/{}", d.name);
            (ctrl, disk)
        } else {
            let port = format!(
                "devices/pci0000:00/0000:00:17.0/ata{}/host{i}/target{i}:0:0/{i}:0:0:0",
                i + 1
            );
            let disk = format!("{port}/block/{}", d.name);
            (port, disk)
        };
        let devdir = root.join(&devdir_rel);
        let disk = root.join(&disk_rel);
        write(&devdir.join("model"), format!("{model}\n").as_bytes())?;
        if d.nvme {
            write(&devdir.join("serial"), format!("{serial}\n").as_bytes())?;
            write(&devdir.join("firmware_rev"), b"2B2QEXM7\n")?;
            write(
                &disk.join("wwid"),
                format!("eui.0025385b{i:08x}\n").as_bytes(),
            )?;
            // As the kernel links it: `nvme0n1/device` -> `../../nvme0`, the controller.
            let ctrl = devdir_rel.rsplit('/').next().unwrap_or_default();
            link(&format!("../../{ctrl}"), &disk.join("device"))?;
        } else {
            write(&devdir.join("vendor"), b"ATA     \n")?;
            write(&devdir.join("type"), b"0\n")?;
            write(
                &devdir.join("wwid"),
                format!("naa.5000c500{i:08x}\n").as_bytes(),
            )?;
            let mut vpd = vec![0u8, 0x80, 0, serial.len() as u8];
            vpd.extend_from_slice(serial.as_bytes());
            write(&devdir.join("vpd_pg80"), &vpd)?;
        }
        let minor = 4096 + 2 * i;
        write(&disk.join("dev"), format!("259:{minor}\n").as_bytes())?;
        write(&disk.join("size"), format!("{sectors}\n").as_bytes())?;
        write(&disk.join("removable"), b"0\n")?;
        write(
            &disk.join("queue/rotational"),
            if rotational { b"1\n" } else { b"0\n" },
        )?;
        if !d.nvme {
            link(&format!("../../../{i}:0:0:0"), &disk.join("device"))?;
        }
        let part = disk.join(&d.part);
        write(&part.join("dev"), format!("259:{}\n", minor + 1).as_bytes())?;
        write(
            &part.join("size"),
            format!("{}\n", sectors - 2048).as_bytes(),
        )?;
        write(&part.join("partition"), b"1\n")?;
        let rel = format!("../../{disk_rel}");
        link(&rel, &class.join(&d.name))?;
        link(&format!("{rel}/{}", d.part), &class.join(&d.part))?;
    }
    Ok(())
}

/// The fake blkid's output: each partition's filesystem, as `blkid -o export` prints it.
pub fn blkid_output(disks: &[FakeDisk]) -> String {
    let mut out = String::new();
    for (i, d) in disks.iter().enumerate() {
        let fstype = if i % 2 == 0 { "xfs" } else { "ext4" };
        let _ = write!(
            out,
            "DEVNAME=/dev/{}\nUUID={}\nTYPE={fstype}\nLABEL=data-{}\n\n",
            d.part, d.uuid, d.name
        );
    }
    out
}

/// What smartctl's JSON says its exit status was (the status bits the watcher reads).
fn exit_status(json: &str) -> u8 {
    serde_json::from_str::<serde_json::Value>(json)
        .ok()
        .and_then(|v| v.pointer("/smartctl/exit_status").and_then(|s| s.as_u64()))
        .and_then(|s| u8::try_from(s).ok())
        .unwrap_or(0)
}

/// Write each disk's smartctl output (`NAME.json`) and status (`NAME.rc`) into `dir`.
pub fn smart_data(dir: &Path, disks: &[FakeDisk]) -> Result<(), String> {
    for d in disks {
        write(
            &dir.join(format!("{}.json", d.name)),
            d.fixture.json.as_bytes(),
        )?;
        let rc = exit_status(d.fixture.json);
        write(
            &dir.join(format!("{}.rc", d.name)),
            format!("{rc}\n").as_bytes(),
        )?;
    }
    Ok(())
}

/// Which fake smartctl the daemon runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum FakeKind {
    /// `diskd-bench-smartctl`, built beside this bench: one exec per disk.
    Binary,
    /// A `/bin/sh` script: the shell, then `sleep` (when there is a delay) and `cat`.
    Shell,
}

impl FakeKind {
    /// Its name in the report.
    pub fn as_str(self) -> &'static str {
        match self {
            FakeKind::Binary => "binary",
            FakeKind::Shell => "shell",
        }
    }
}

/// `s` in single quotes for the daemon's word splitting (`--smartctl` is split as a shell
/// would, without running one); a path with a quote in it is refused, not mangled.
fn quoted(s: &Path) -> Result<String, String> {
    let s = s
        .to_str()
        .ok_or_else(|| format!("{}: not UTF-8", s.display()))?;
    if s.contains('\'') {
        return Err(format!("{s}: a path with a single quote"));
    }
    Ok(format!("'{s}'"))
}

/// The `--smartctl` value for `kind` with this delay, reading `data` (see [`smart_data`]);
/// the shell script is written into `dir`.
pub fn smartctl_command(
    kind: FakeKind,
    dir: &Path,
    data: &Path,
    delay: Duration,
) -> Result<String, String> {
    match kind {
        FakeKind::Binary => {
            let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
            let helper = exe.with_file_name("diskd-bench-smartctl");
            if !helper.exists() {
                return Err(format!(
                    "{} not found: build it with `cargo build --release -p diskd-bench`",
                    helper.display()
                ));
            }
            Ok(format!(
                "{} {} {}",
                quoted(&helper)?,
                quoted(data)?,
                delay.as_micros()
            ))
        }
        FakeKind::Shell => {
            let script = dir.join(format!("smartctl-{}us.sh", delay.as_micros()));
            let d = quoted(data)?;
            let sleep = if delay.is_zero() {
                String::new()
            } else {
                format!("sleep {:.6}\n", delay.as_secs_f64())
            };
            let body = format!(
                "#!/bin/sh\n\
                 for a; do dev=\"$a\"; done\n\
                 name=\"${{dev##*/}}\"\n\
                 [ -f {d}/\"$name\".json ] || {{ echo \"Smartctl open device: $dev failed: No such device\" >&2; exit 2; }}\n\
                 {sleep}\
                 read rc < {d}/\"$name\".rc\n\
                 cat {d}/\"$name\".json\n\
                 exit \"$rc\"\n"
            );
            write(&script, body.as_bytes())?;
            std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))
                .map_err(|e| format!("{}: {e}", script.display()))?;
            quoted(&script)
        }
    }
}

/// Where the fake tree, data and scripts of one benchmark live (removed when dropped).
pub struct Host {
    pub dir: tempfile::TempDir,
    pub sysfs: PathBuf,
    pub data: PathBuf,
    pub blkid: PathBuf,
    pub disks: Vec<FakeDisk>,
}

impl Host {
    /// Build the whole simulated host.
    pub fn new(n: usize) -> Result<Host, String> {
        let dir = tempfile::Builder::new()
            .prefix("diskd-bench-smart.")
            .tempdir()
            .map_err(|e| format!("tempdir: {e}"))?;
        let disks = plan(n);
        let sysfs_root = dir.path().join("sys");
        sysfs(&sysfs_root, &disks)?;
        let data = dir.path().join("smart");
        smart_data(&data, &disks)?;
        let blkid = dir.path().join("blkid");
        let out = blkid.with_extension("out");
        write(&out, blkid_output(&disks).as_bytes())?;
        write(
            &blkid,
            format!("#!/bin/sh\ncat {}\n", quoted(&out)?).as_bytes(),
        )?;
        std::fs::set_permissions(&blkid, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| format!("{}: {e}", blkid.display()))?;
        Ok(Host {
            dir,
            sysfs: sysfs_root,
            data,
            blkid,
            disks,
        })
    }
}
