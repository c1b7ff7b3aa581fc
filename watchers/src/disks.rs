//! The `disks` watcher: which block devices carry a filesystem right now, according to blkid.
//!
//! blkid is an external program that reads from devices, so it can hang (a dying USB disk,
//! an unresponsive network block device) and its output includes labels chosen by whoever
//! formatted the disk. Both are treated as hostile: the child runs in its own process group
//! that is killed as a whole on timeout, its output is capped, and labels are decoded, never
//! interpreted.

use std::collections::{BTreeSet, HashSet};
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Duration;

use async_trait::async_trait;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::{Child, Command};

use crate::events::LazyBlockEvents;
use crate::filter::DeviceFilter;
use crate::{Contents, DiskInfo, Observation, WatchError, Watcher};

/// More stdout than this is not a device list but a runaway program; 16 MiB is thousands of
/// times what a machine with hundreds of disks produces.
const MAX_STDOUT: usize = 16 * 1024 * 1024;
/// Only the first line of stderr is reported, but the rest must still be drained so the
/// child does not block on a full pipe; this much is kept.
const MAX_STDERR_KEPT: usize = 64 * 1024;
/// A value longer than this cannot be a real UUID, label or type (labels are at most a few
/// hundred bytes on any filesystem); a record carrying one is garbage, not a disk.
const MAX_VALUE_LEN: usize = 4096;
/// Error messages quote at most this many characters of stderr, so one chatty failure
/// cannot flood logs and `status`.
const MAX_STDERR_LINE: usize = 200;
/// After SIGKILL a process normally disappears at once, but one stuck in uninterruptible
/// I/O (the very reason blkid hangs) only dies when the I/O returns; the scan does not wait
/// longer than this for it and leaves the reaping to tokio.
const REAP_GRACE: Duration = Duration::from_secs(2);

/// Settings of the `disks` watcher, as the daemon's configuration resolved them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskWatcherConfig {
    /// The blkid program (one element; standard arguments are added, see
    /// [`effective_argv`]) or a complete argv run as given (more than one element), so that
    /// wrappers like `sudo blkid ...` or test fixtures can stand in for blkid.
    pub command: Vec<String>,
    /// How often the disks are scanned.
    pub interval: Duration,
    /// How long one blkid run may take before it is killed.
    pub timeout: Duration,
    /// Glob patterns on the device path; when non-empty, only matching devices are
    /// reported, so a machine can ignore its system disks.
    pub include: Vec<String>,
    /// Glob patterns on the device path; matching devices are never reported (loop
    /// devices of snaps, for example), even when `include` matches them.
    pub exclude: Vec<String>,
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
            interval: Duration::from_secs(60),
            timeout: Duration::from_secs(15),
            include: Vec::new(),
            exclude: Vec::new(),
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
    /// Compiles the include/exclude globs once, so a bad pattern is reported at startup
    /// rather than on every scan.
    ///
    /// In the patterns `*` does not cross `/` (as in a shell): `/dev/*` means the nodes
    /// directly in `/dev`, `/dev/**` everything below it.
    pub fn new(cfg: DiskWatcherConfig) -> Result<DiskWatcher, globset::Error> {
        let filter = DeviceFilter::new(&cfg.include, &cfg.exclude)?;
        let argv = effective_argv(&cfg.command);
        Ok(DiskWatcher {
            cfg,
            argv,
            filter,
            events: LazyBlockEvents::default(),
            changes: std::sync::Mutex::new(Changes::default()),
            last: std::sync::Mutex::new(None),
        })
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
        let (status, stdout, err) = self.run_raw(argv, self.cfg.timeout).await?;
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

    /// Runs `argv` for at most `timeout`: its exit status, stdout and (capped) stderr, or
    /// why it did not run to its end (its process group is killed then).
    async fn run_raw(
        &self,
        argv: &[String],
        timeout: Duration,
    ) -> Result<(ExitStatus, String, Vec<u8>), WatchError> {
        let program = argv.first().cloned().unwrap_or_default();
        let mut child = spawn(argv).await?;
        // With process_group(0) the child's pid is also its process group id.
        let mut group = GroupGuard {
            pgid: child.id().and_then(|id| i32::try_from(id).ok()),
        };
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();

        let outcome = tokio::time::timeout(timeout, collect(&mut child, stdout, stderr)).await;
        let (status, out, err) = match outcome {
            Ok(Ok(done)) => {
                // The child is reaped; whatever it left behind in its group is no longer
                // ours to kill (and the group id may be reused once the group is empty).
                group.disarm();
                done
            }
            Ok(Err(fail)) => {
                group.kill();
                reap(&mut child, &program).await;
                return Err(match fail {
                    RunFail::TooBig => WatchError::BadOutput(format!(
                        "{program} wrote more than {MAX_STDOUT} bytes to stdout"
                    )),
                    RunFail::Io(source) => WatchError::Io {
                        what: format!("reading from {program}"),
                        source,
                    },
                });
            }
            Err(_elapsed) => {
                group.kill();
                reap(&mut child, &program).await;
                return Err(WatchError::TimedOut { program, timeout });
            }
        };
        Ok((status, String::from_utf8_lossy(&out).into_owned(), err))
    }

    /// The argv that probes one device alone: `blkid -p -o export DEVICE` (low-level
    /// probing, no cache, the export form). `None` for a configured command line, which is
    /// run as given and cannot be told to probe one device: such a daemon calls no device
    /// empty (README, "Blank disks").
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
        let judged = match self.run_raw(&argv, left.min(self.cfg.timeout)).await {
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

/// When the probes of a scan that must end by `deadline` must end: by then, but with at
/// least a second for them, which the daemon's grace beyond a watcher's timeout allows.
fn probe_deadline(deadline: tokio::time::Instant) -> tokio::time::Instant {
    deadline.max(tokio::time::Instant::now() + Duration::from_secs(1))
}

/// A block device sysfs lists, as the probing needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct BlockDevice {
    /// `/dev/<kernel name>`.
    device: String,
    devno: (u32, u32),
    /// Other block devices hold it (`holders/`), or it has partitions.
    in_use: bool,
}

/// The block devices under `root/class/block` with a medium (size > 0), not RAM disks,
/// wanted by the filters. Anything unreadable is left out (it is not probed; a device
/// sysfs lists but this cannot read stays `Unknown` for the daemon, which is never
/// blank).
fn list_block_devices(root: &Path, wanted: impl Fn(&str) -> bool) -> Vec<BlockDevice> {
    let Ok(entries) = std::fs::read_dir(root.join("class/block")) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if name.starts_with("ram") {
            continue;
        }
        let device = format!("/dev/{}", name.replace('!', "/"));
        if !wanted(&device) {
            continue;
        }
        let Ok(dir) = std::fs::canonicalize(entry.path()) else {
            continue;
        };
        let read = |rel: &str| std::fs::read_to_string(dir.join(rel)).ok();
        let Some(devno) = read("dev").and_then(|t| parse_devno(t.trim())) else {
            continue;
        };
        let size: u64 = read("size")
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(0);
        if size == 0 {
            continue;
        }
        let holders = std::fs::read_dir(dir.join("holders"))
            .map(|mut d| d.next().is_some())
            .unwrap_or(false);
        let partitions = std::fs::read_dir(&dir)
            .map(|d| d.flatten().any(|e| e.path().join("partition").is_file()))
            .unwrap_or(false);
        out.push(BlockDevice {
            device,
            devno,
            in_use: holders || partitions,
        });
    }
    out.sort_by(|a, b| a.device.cmp(&b.device));
    out
}

/// `MAJOR:MINOR`.
fn parse_devno(text: &str) -> Option<(u32, u32)> {
    let (major, minor) = text.split_once(':')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

/// What `blkid -p -o export DEVICE` came to, from its exit code (`None`: killed by a
/// signal), stdout and stderr: a [`DiskInfo`] whose contents are `Signature` (with what
/// it read) or `Empty`, or why the device's contents stay unknown.
///
/// util-linux blkid exits 0 when it found a signature (and prints it), 2 when it found
/// nothing, and 8 when it found several (ambivalent: a signature all the same). Exit 2 is
/// also what it says, after a line on stderr, when it cannot open the device (`blkid:
/// error: /dev/vda: Operation not permitted`), so only a silent exit 2 is "empty". (A read
/// error in the middle of probing is, alas, silent too: blkid's `lowprobe_device` returns
/// "nothing detected" for it.) The output is the device's, so it is parsed like any other
/// blkid output: anything but one record for this very device is not believed.
fn judge_probe(
    device: &str,
    code: Option<i32>,
    stdout: &str,
    stderr: &[u8],
) -> Result<DiskInfo, String> {
    let blank = |contents| DiskInfo {
        uuid: None,
        label: None,
        device: device.to_string(),
        fstype: None,
        devno: None,
        contents,
    };
    let said = reason(device, stderr);
    match code {
        Some(0) => {
            let (found, skipped) = parse_blkid_counted(stdout);
            match found.as_slice() {
                [one] if skipped == 0 && one.device == device => Ok(DiskInfo {
                    contents: Contents::Signature,
                    ..one.clone()
                }),
                [] => Err("blkid found something but printed no record of it".into()),
                _ => Err("blkid's answer is not one record of this device".into()),
            }
        }
        Some(2) if stdout.trim().is_empty() && said.is_empty() => Ok(blank(Contents::Empty)),
        Some(2) if !said.is_empty() => Err(said),
        Some(2) => Err("blkid found nothing but printed something".into()),
        Some(8) => Ok(blank(Contents::Signature)),
        other => {
            let status = other.map_or("a signal".to_string(), |c| format!("exit status {c}"));
            if said.is_empty() {
                Err(format!("blkid ended with {status}"))
            } else {
                Err(format!("blkid ended with {status}: {said}"))
            }
        }
    }
}

/// blkid's complaint about `device` on stderr, without its `blkid: error: /dev/x: `
/// prefix (the message names the device already) and without control characters (it goes
/// to `status` and logs).
fn reason(device: &str, stderr: &[u8]) -> String {
    let line = first_line(stderr);
    let needle = format!("{device}: ");
    let text = match line.find(&needle) {
        Some(i) => &line[i + needle.len()..],
        None => line.as_str(),
    };
    text.chars()
        .filter(|c| !c.is_control())
        .collect::<String>()
        .trim()
        .to_string()
}

#[async_trait]
impl Watcher for DiskWatcher {
    fn name(&self) -> &'static str {
        "disks"
    }

    fn interval(&self) -> Duration {
        self.cfg.interval
    }

    fn timeout(&self) -> Duration {
        self.cfg.timeout
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
        let deadline = tokio::time::Instant::now() + self.cfg.timeout;
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
        let deadline = tokio::time::Instant::now() + self.cfg.timeout;
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

/// The argv actually run for a configured command.
///
/// A single word is taken to be blkid and gets `-c /dev/null -o export`: plain `blkid`
/// answers from its cache file (`/run/blkid/blkid.tab`), which may still list image files
/// probed earlier and devices that are gone; `-c /dev/null` makes it probe the devices in
/// `/proc/partitions` now, so the list is what is attached now. `-o export` is the form
/// whose escaping is unambiguous. A longer command is run exactly as given, so the operator
/// keeps full control. An empty command means plain `blkid`.
pub fn effective_argv(command: &[String]) -> Vec<String> {
    match command {
        [] => effective_argv(&["blkid".to_string()]),
        [program] => vec![
            program.clone(),
            "-c".to_string(),
            "/dev/null".to_string(),
            "-o".to_string(),
            "export".to_string(),
        ],
        _ => command.to_vec(),
    }
}

/// Kills the child's whole process group unless disarmed, also when the scan future is
/// dropped half-way (the daemon's own timeout, shutdown): `kill_on_drop` only reaches the
/// direct child, not whatever it started.
struct GroupGuard {
    pgid: Option<i32>,
}

impl GroupGuard {
    fn kill(&mut self) {
        if let Some(pgid) = self.pgid.take() {
            if let Err(e) = killpg(Pid::from_raw(pgid), Signal::SIGKILL) {
                if e != nix::errno::Errno::ESRCH {
                    tracing::warn!(pgid, error = %e, "could not kill process group");
                }
            }
        }
    }

    fn disarm(&mut self) {
        self.pgid = None;
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Starts the command in its own process group with stdin closed.
async fn spawn(argv: &[String]) -> Result<Child, WatchError> {
    let Some((program, args)) = argv.split_first() else {
        return Err(WatchError::NotFound {
            program: String::new(),
        });
    };
    crate::process::spawn_in_group(|| {
        let mut cmd = Command::new(program);
        cmd.args(args);
        cmd
    })
    .await
    .map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => WatchError::NotFound {
            program: program.clone(),
        },
        io::ErrorKind::PermissionDenied => WatchError::PermissionDenied {
            what: program.clone(),
        },
        _ => WatchError::Io {
            what: format!("running {program}"),
            source: e,
        },
    })
}

enum RunFail {
    TooBig,
    Io(io::Error),
}

impl From<io::Error> for RunFail {
    fn from(e: io::Error) -> Self {
        RunFail::Io(e)
    }
}

/// Reads stdout and stderr while waiting for the child, all at once: reading one pipe to
/// the end before the other (or waiting before reading) deadlocks as soon as the child
/// fills the pipe we are not reading.
async fn collect(
    child: &mut Child,
    stdout: Option<tokio::process::ChildStdout>,
    stderr: Option<tokio::process::ChildStderr>,
) -> Result<(ExitStatus, Vec<u8>, Vec<u8>), RunFail> {
    let (status, out, err) = tokio::try_join!(
        async { child.wait().await.map_err(RunFail::Io) },
        read_capped(stdout),
        read_stderr(stderr),
    )?;
    Ok((status, out, err))
}

async fn read_capped<R: AsyncRead + Unpin>(pipe: Option<R>) -> Result<Vec<u8>, RunFail> {
    let Some(pipe) = pipe else {
        return Ok(Vec::new());
    };
    let mut buf = Vec::new();
    // One byte more than allowed tells "exactly the limit" from "over it".
    pipe.take(MAX_STDOUT as u64 + 1)
        .read_to_end(&mut buf)
        .await?;
    if buf.len() > MAX_STDOUT {
        return Err(RunFail::TooBig);
    }
    Ok(buf)
}

async fn read_stderr<R: AsyncRead + Unpin>(pipe: Option<R>) -> Result<Vec<u8>, RunFail> {
    let Some(mut pipe) = pipe else {
        return Ok(Vec::new());
    };
    let mut kept = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let n = pipe.read(&mut chunk).await?;
        if n == 0 {
            return Ok(kept);
        }
        let room = MAX_STDERR_KEPT.saturating_sub(kept.len());
        kept.extend_from_slice(&chunk[..n.min(room)]);
    }
}

/// Waits for a killed child so it does not linger as a zombie, but only briefly (see
/// [`REAP_GRACE`]).
async fn reap(child: &mut Child, program: &str) {
    // In case the child left its group, kill it directly as well.
    let _ = child.start_kill();
    if tokio::time::timeout(REAP_GRACE, child.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            program,
            "killed child has not exited yet (stuck in I/O?); leaving it to be reaped later"
        );
    }
}

fn first_line(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("")
        .chars()
        .take(MAX_STDERR_LINE)
        .collect()
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

/// Parses blkid output in either the default form (`DEV: KEY="value" ...`, one device a
/// line) or the `-o export` form (`KEY=value` lines, blocks separated by blank lines),
/// detected line by line, so the parser works whatever command the operator configured.
///
/// Labels are decoded from blkid's escaping (backslash escapes, `\xHH`, octal `\NNN`, and
/// the `M-` notation blkid uses for non-ASCII bytes unless run with `-d`) into UTF-8,
/// replacing invalid bytes. Unparsable lines and records without a device are skipped, so
/// one odd line does not hide every other disk; only output with content but not a single
/// usable record is an error.
pub fn parse_blkid(output: &str) -> Result<Vec<DiskInfo>, WatchError> {
    let (disks, skipped) = parse_blkid_counted(output);
    if skipped > 0 {
        tracing::debug!(
            skipped,
            parsed = disks.len(),
            "skipped unparsable blkid output"
        );
    }
    if disks.is_empty() && !output.trim().is_empty() {
        return Err(WatchError::BadOutput(format!(
            "no device record in blkid output ({skipped} unparsable lines or records)"
        )));
    }
    Ok(disks)
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Form {
    Plain,
    Export,
}

#[derive(Default)]
struct Record {
    device: Option<String>,
    uuid: Option<String>,
    label: Option<String>,
    fstype: Option<String>,
    too_long: bool,
    has_fields: bool,
}

impl Record {
    fn set(&mut self, key: &str, raw: &str, form: Form) {
        self.has_fields = true;
        if raw.len() > MAX_VALUE_LEN {
            self.too_long = true;
            return;
        }
        let slot = match (key, form) {
            ("UUID", _) => &mut self.uuid,
            ("LABEL", _) => &mut self.label,
            ("TYPE", _) => &mut self.fstype,
            ("DEVNAME", Form::Export) => &mut self.device,
            _ => return,
        };
        let value = decode_value(raw, form);
        *slot = if value.is_empty() { None } else { Some(value) };
    }

    /// The finished record, or `None` when it must be skipped.
    fn finish(self) -> Option<DiskInfo> {
        if self.too_long {
            return None;
        }
        Some(DiskInfo {
            device: self.device?,
            uuid: self.uuid,
            label: self.label,
            fstype: self.fstype,
            devno: None,
            contents: Contents::Signature,
        })
    }
}

/// The parser proper; also returns how many lines or records were skipped.
fn parse_blkid_counted(output: &str) -> (Vec<DiskInfo>, usize) {
    let mut disks = Vec::new();
    let mut skipped = 0usize;
    let mut open: Option<Record> = None;

    fn close(rec: Option<Record>, disks: &mut Vec<DiskInfo>, skipped: &mut usize) {
        if let Some(rec) = rec {
            match rec.finish() {
                Some(d) => disks.push(d),
                None => *skipped += 1,
            }
        }
    }

    for line in output.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.trim().is_empty() {
            close(open.take(), &mut disks, &mut skipped);
            continue;
        }
        if let Some((key, value)) = export_line(line) {
            let rec = open.get_or_insert_with(Record::default);
            // A second DEVNAME without a blank line in between starts the next device.
            if key == "DEVNAME" && rec.device.is_some() {
                close(open.take(), &mut disks, &mut skipped);
            }
            open.get_or_insert_with(Record::default)
                .set(key, value, Form::Export);
            continue;
        }
        match parse_plain_line(line) {
            Some(rec) => close(Some(rec), &mut disks, &mut skipped),
            None => skipped += 1,
        }
    }
    close(open.take(), &mut disks, &mut skipped);
    (disks, skipped)
}

/// `KEY=value` with a shell-variable-like key, as `-o export` prints.
fn export_line(line: &str) -> Option<(&str, &str)> {
    let (key, value) = line.split_once('=')?;
    let mut chars = key.chars();
    let first = chars.next()?;
    if !(first.is_ascii_alphabetic() || first == '_')
        || !chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        return None;
    }
    Some((key, value))
}

/// `/dev/sdb1: UUID="..." LABEL="..." TYPE="..."`; `None` if the line is not of that shape.
fn parse_plain_line(line: &str) -> Option<Record> {
    let (device, mut rest) = line.split_once(": ")?;
    if device.is_empty() {
        return None;
    }
    let mut rec = Record {
        device: Some(device.to_string()),
        ..Record::default()
    };
    loop {
        rest = rest.trim_start_matches(' ');
        if rest.is_empty() {
            break;
        }
        let (key, after) = rest.split_once("=\"")?;
        if key.is_empty() || !key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return None;
        }
        let end = closing_quote(after)?;
        rec.set(key, &after[..end], Form::Plain);
        rest = &after[end + 1..];
        // Pairs are separated by spaces; anything glued to the closing quote is not blkid.
        if !(rest.is_empty() || rest.starts_with(' ')) {
            return None;
        }
    }
    if !rec.has_fields {
        return None;
    }
    Some(rec)
}

/// Byte index of the `"` that ends a plain-form value, skipping escaped characters.
fn closing_quote(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\\' if !caret_backslash(b, i) => i += 2,
            b'"' => return Some(i),
            _ => i += 1,
        }
    }
    None
}

/// blkid writes the byte 0x9c (part of `Ü` and many other characters) as `M-^\` without
/// escaping that backslash, in both forms; it must not be taken as an escape, or `Ürlaub`
/// would lose its `r` and a label ending in `Ü` would swallow its closing quote.
fn caret_backslash(b: &[u8], i: usize) -> bool {
    i >= 3 && &b[i - 3..i] == b"M-^"
}

/// Decodes one value: backslash escapes first (per form), then blkid's `M-` notation for
/// non-ASCII bytes, then bytes to UTF-8, lossily.
fn decode_value(raw: &str, form: Form) -> String {
    let src = raw.as_bytes();
    let mut bytes = Vec::with_capacity(src.len());
    // Whether each byte was written as itself (and so may be part of `M-` notation) rather
    // than as a numeric escape.
    let mut literal = Vec::with_capacity(src.len());
    let mut i = 0;
    while i < src.len() {
        let c = src[i];
        if c != b'\\' || caret_backslash(src, i) {
            bytes.push(c);
            literal.push(true);
            i += 1;
            continue;
        }
        if let Some(byte) = hex_escape(&src[i + 1..]) {
            bytes.push(byte);
            literal.push(false);
            i += 4;
            continue;
        }
        if let Some(byte) = octal_escape(&src[i + 1..]) {
            bytes.push(byte);
            literal.push(false);
            i += 4;
            continue;
        }
        match (form, src.get(i + 1)) {
            // Export form escapes any special character by putting a backslash before it.
            (Form::Export, Some(&next)) => {
                bytes.push(next);
                literal.push(true);
                i += 2;
            }
            // Default form escapes only `"` and `\`; any other backslash is itself.
            (Form::Plain, Some(&next)) if next == b'"' || next == b'\\' => {
                bytes.push(next);
                literal.push(true);
                i += 2;
            }
            _ => {
                bytes.push(b'\\');
                literal.push(true);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&decode_meta(&bytes, &literal)).into_owned()
}

fn hex_escape(s: &[u8]) -> Option<u8> {
    match s {
        [b'x', h, l, ..] if h.is_ascii_hexdigit() && l.is_ascii_hexdigit() => {
            let text = std::str::from_utf8(&s[1..3]).ok()?;
            u8::from_str_radix(text, 16).ok()
        }
        _ => None,
    }
}

fn octal_escape(s: &[u8]) -> Option<u8> {
    match s {
        [a, b, c, ..] if [a, b, c].iter().all(|d| (b'0'..=b'7').contains(d)) => {
            let text = std::str::from_utf8(&s[..3]).ok()?;
            // `\400` and above are not a byte; leave such text alone.
            u8::from_str_radix(text, 8).ok()
        }
        _ => None,
    }
}

/// Replaces runs of `M-x` / `M-^x` (blkid's `cat -v` style notation for bytes >= 0x80) by
/// the bytes they stand for, but only as far as those bytes form valid UTF-8: a label that
/// really contains text like `TEAM-A` stays as it is.
fn decode_meta(bytes: &[u8], literal: &[bool]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let mut run = Vec::new();
        let mut ends = Vec::new();
        let mut j = i;
        while let Some((byte, next)) = meta_at(bytes, literal, j) {
            run.push(byte);
            ends.push(next);
            j = next;
        }
        let valid = match std::str::from_utf8(&run) {
            Ok(_) => run.len(),
            Err(e) => e.valid_up_to(),
        };
        if valid > 0 {
            out.extend_from_slice(&run[..valid]);
            i = ends[valid - 1];
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    out
}

/// The byte written as `M-...` at `j`, and where the notation ends.
fn meta_at(bytes: &[u8], literal: &[bool], j: usize) -> Option<(u8, usize)> {
    let lit = |k: usize| literal.get(k).copied().unwrap_or(false);
    if bytes.get(j) != Some(&b'M') || bytes.get(j + 1) != Some(&b'-') || !lit(j) || !lit(j + 1) {
        return None;
    }
    let c = *bytes.get(j + 2)?;
    if !lit(j + 2) {
        return None;
    }
    if c == b'^' && lit(j + 3) {
        match bytes.get(j + 3) {
            Some(&b'?') => return Some((0xff, j + 4)),
            Some(&d) if (0x40..=0x5f).contains(&d) => return Some(((d ^ 0x40) | 0x80, j + 4)),
            _ => {}
        }
    }
    if (0x20..=0x7e).contains(&c) {
        return Some((c | 0x80, j + 3));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::path::{Path, PathBuf};
    use std::time::Instant;

    fn disk(device: &str, uuid: Option<&str>, label: Option<&str>, t: Option<&str>) -> DiskInfo {
        DiskInfo {
            device: device.to_string(),
            uuid: uuid.map(str::to_string),
            label: label.map(str::to_string),
            fstype: t.map(str::to_string),
            devno: None,
            contents: Contents::Signature,
        }
    }

    #[test]
    fn argv_single_word_gets_fresh_probe_and_export() {
        assert_eq!(
            effective_argv(&["blkid".into()]),
            vec!["blkid", "-c", "/dev/null", "-o", "export"]
        );
        assert_eq!(
            effective_argv(&["sudo".into(), "blkid".into()]),
            vec!["sudo", "blkid"]
        );
        assert_eq!(effective_argv(&[])[0], "blkid");
    }

    #[test]
    fn plain_form_with_hostile_labels() {
        let out = concat!(
            "/dev/sda1: UUID=\"1111-AAAA\" TYPE=\"vfat\" PARTUUID=\"abc-01\"\n",
            "/dev/sdb1: UUID=\"u2\" LABEL=\"my disk\" BLOCK_SIZE=\"4096\" TYPE=\"ext4\"\n",
            "/dev/sdc1: LABEL=\"say \\\"hi\\\" \\\\o/\" TYPE=\"ext4\"\n",
            "/dev/sdd1: LABEL=\"$(rm -rf /); echo pwned\" UUID=\"u4\"\n",
            "/dev/sde1: LABEL=\"Fotos 2024 — Ürlaub\" TYPE=\"exfat\"\n",
            "/dev/sdf1: LABEL=\"a\\x20b\\040c\\xc3\\x9c\" TYPE=\"xfs\"\n",
            "/dev/sdg1: PARTUUID=\"only-partuuid\"\n",
        );
        let (got, skipped) = parse_blkid_counted(out);
        assert_eq!(skipped, 0);
        assert_eq!(
            got,
            vec![
                disk("/dev/sda1", Some("1111-AAAA"), None, Some("vfat")),
                disk("/dev/sdb1", Some("u2"), Some("my disk"), Some("ext4")),
                disk("/dev/sdc1", None, Some("say \"hi\" \\o/"), Some("ext4")),
                disk(
                    "/dev/sdd1",
                    Some("u4"),
                    Some("$(rm -rf /); echo pwned"),
                    None
                ),
                disk(
                    "/dev/sde1",
                    None,
                    Some("Fotos 2024 — Ürlaub"),
                    Some("exfat")
                ),
                disk("/dev/sdf1", None, Some("a b cÜ"), Some("xfs")),
                disk("/dev/sdg1", None, None, None),
            ]
        );
    }

    #[test]
    fn export_form_with_hostile_labels() {
        let out = concat!(
            "DEVNAME=/dev/sda1\nUUID=1111-AAAA\nTYPE=vfat\nPARTUUID=abc-01\n\n",
            "DEVNAME=/dev/sdb1\nUUID=u2\nLABEL=my\\ disk\nBLOCK_SIZE=4096\nTYPE=ext4\n\n",
            "DEVNAME=/dev/sdc1\nLABEL=say\\ \\\"hi\\\"\\ \\\\o/\nTYPE=ext4\n\n",
            "DEVNAME=/dev/sdd1\nLABEL=\\$(rm\\ -rf\\ /);\\ echo\\ \\`pwned\\`\\ \\<x\\>\nUUID=u4\n\n",
            "DEVNAME=/dev/sde1\nLABEL=Fotos\\ 2024\\ —\\ Ürlaub\nTYPE=exfat\n\n",
            "DEVNAME=/dev/sdf1\nLABEL=a\\x20b\\'c\nTYPE=xfs\n",
        );
        let (got, skipped) = parse_blkid_counted(out);
        assert_eq!(skipped, 0);
        assert_eq!(
            got,
            vec![
                disk("/dev/sda1", Some("1111-AAAA"), None, Some("vfat")),
                disk("/dev/sdb1", Some("u2"), Some("my disk"), Some("ext4")),
                disk("/dev/sdc1", None, Some("say \"hi\" \\o/"), Some("ext4")),
                disk(
                    "/dev/sdd1",
                    Some("u4"),
                    Some("$(rm -rf /); echo `pwned` <x>"),
                    None
                ),
                disk(
                    "/dev/sde1",
                    None,
                    Some("Fotos 2024 — Ürlaub"),
                    Some("exfat")
                ),
                disk("/dev/sdf1", None, Some("a b'c"), Some("xfs")),
            ]
        );
    }

    /// What blkid 2.38 really prints, without `-d`, for labels with non-ASCII characters
    /// (captured from ext4 images).
    #[test]
    fn meta_notation_from_real_blkid() {
        let export = concat!(
            "DEVNAME=/dev/a\nLABEL=FotosM-bM-^@M-^TM-CM-^\\\\ \\$(x)\n\n",
            "DEVNAME=/dev/b\nLABEL=M-CM-^\\rlaub\n\n",
            "DEVNAME=/dev/c\nLABEL=MM-CM-^\\\n\n",
            "DEVNAME=/dev/d\nLABEL=Fotos\\ M-bM-^@M-^T\\ M-CM-^\\\n\n",
            "DEVNAME=/dev/e\nLABEL=a\\\\b\\\"c\n",
        );
        let plain = concat!(
            "/dev/a: LABEL=\"FotosM-bM-^@M-^TM-CM-^\\ $(x)\" TYPE=\"ext4\"\n",
            "/dev/b: LABEL=\"M-CM-^\\rlaub\" TYPE=\"ext4\"\n",
            "/dev/c: LABEL=\"MM-CM-^\\\" TYPE=\"ext4\"\n",
            "/dev/d: LABEL=\"Fotos M-bM-^@M-^T M-CM-^\\\" TYPE=\"ext4\"\n",
            "/dev/e: LABEL=\"a\\\\b\\\"c\" TYPE=\"ext4\"\n",
        );
        let want = ["Fotos—Ü $(x)", "Ürlaub", "MÜ", "Fotos — Ü", "a\\b\"c"];
        for out in [export, plain] {
            let labels: Vec<String> = parse_blkid(out)
                .unwrap()
                .into_iter()
                .map(|d| d.label.unwrap())
                .collect();
            assert_eq!(labels, want, "{out}");
        }
        // Text that merely looks like the notation stays as it is.
        let plain = "/dev/x: LABEL=\"TEAM-A M-x ^b TEAM-M-CM-^\\\"\n";
        assert_eq!(
            parse_blkid(plain).unwrap()[0].label.as_deref(),
            Some("TEAM-A M-x ^b TEAM-Ü")
        );
    }

    #[test]
    fn garbage_lines_and_records_are_skipped() {
        let out = concat!(
            "blkid: warning: something odd\n",
            "/dev/sda1: UUID=\"u1\" TYPE=\"ext4\"\n",
            "/dev/sdz: UUID=\"unterminated\n",
            "\x00\x01 binary junk\n",
            "/dev/sdy: UUID=\"x\"garbage\n",
            "\n",
            "UUID=no-devname\nTYPE=ext4\n\n",
            "DEVNAME=/dev/sdb1\nthis line is junk\nUUID=u2\n\n",
        );
        let (got, skipped) = parse_blkid_counted(out);
        assert_eq!(
            got,
            vec![
                disk("/dev/sda1", Some("u1"), None, Some("ext4")),
                disk("/dev/sdb1", Some("u2"), None, None),
            ]
        );
        assert_eq!(skipped, 6);
    }

    #[test]
    fn overlong_values_drop_the_record() {
        let long = "x".repeat(MAX_VALUE_LEN + 1);
        let out = format!(
            "/dev/sda1: LABEL=\"{long}\"\n/dev/sdb1: UUID=\"u\"\nDEVNAME=/dev/sdc1\nLABEL={long}\n"
        );
        let got = parse_blkid(&out).unwrap();
        assert_eq!(got, vec![disk("/dev/sdb1", Some("u"), None, None)]);
    }

    #[test]
    fn consecutive_devnames_without_blank_line() {
        let out = "DEVNAME=/dev/a\nTYPE=ext4\nDEVNAME=/dev/b\nTYPE=xfs\n";
        let got = parse_blkid(out).unwrap();
        assert_eq!(
            got,
            vec![
                disk("/dev/a", None, None, Some("ext4")),
                disk("/dev/b", None, None, Some("xfs"))
            ]
        );
    }

    #[test]
    fn empty_and_all_garbage_output() {
        assert_eq!(parse_blkid("").unwrap(), vec![]);
        assert_eq!(parse_blkid("\n \n").unwrap(), vec![]);
        let err = parse_blkid("hello\nworld: nope\nUUID=x\n").unwrap_err();
        assert_eq!(err.kind(), "bad_output");
    }

    fn watcher(cfg: DiskWatcherConfig) -> DiskWatcher {
        DiskWatcher::new(cfg).unwrap()
    }

    #[test]
    fn include_and_exclude_globs() {
        let w = watcher(DiskWatcherConfig {
            include: vec!["/dev/sd*".into(), "/dev/mapper/**".into()],
            exclude: vec!["/dev/sda*".into()],
            ..DiskWatcherConfig::default()
        });
        assert!(w.wanted("/dev/sdb1"));
        assert!(w.wanted("/dev/mapper/vg-data"));
        assert!(!w.wanted("/dev/sda1"));
        assert!(!w.wanted("/dev/nvme0n1p1"));
        assert!(!w.wanted("/dev/sdx/deeper"));

        let all = watcher(DiskWatcherConfig {
            exclude: vec!["/dev/loop*".into()],
            ..DiskWatcherConfig::default()
        });
        assert!(all.wanted("/dev/nvme0n1p1"));
        assert!(!all.wanted("/dev/loop3"));

        assert!(DiskWatcher::new(DiskWatcherConfig {
            include: vec!["[".into()],
            ..DiskWatcherConfig::default()
        })
        .is_err());
    }

    #[test]
    fn devno_split_and_stat() {
        assert_eq!(split_dev(0x0811), (8, 17));
        // Large numbers use the extended encoding; check against the libc macro.
        let dev = nix::sys::stat::makedev(4321, 0x12345);
        assert_eq!(split_dev(dev), (4321, 0x12345));
        assert_eq!(device_number("/nonexistent/dev"), None);
        assert_eq!(device_number("/etc/hostname"), None);
    }

    fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    fn cfg_for(command: Vec<String>, timeout: Duration) -> DiskWatcherConfig {
        DiskWatcherConfig {
            command,
            timeout,
            ..DiskWatcherConfig::default()
        }
    }

    fn s(p: &Path) -> String {
        p.to_str().unwrap().to_string()
    }

    #[tokio::test]
    async fn fake_blkid_output_is_parsed_and_filtered() {
        let dir = tempfile::tempdir().unwrap();
        let args = dir.path().join("args");
        let body = format!(
            "echo \"$@\" > '{}'\ncat <<'EOF'\nDEVNAME=/dev/null\nTYPE=weird\n\nDEVNAME=/dev/sdb1\nLABEL=my\\ disk\nUUID=u\n\nDEVNAME=/dev/loop0\nTYPE=squashfs\nEOF\n",
            s(&args)
        );
        let path = script(dir.path(), "blkid", &body);
        let mut cfg = cfg_for(vec![s(&path)], Duration::from_secs(5));
        cfg.exclude = vec!["/dev/loop*".into()];
        let obs = watcher(cfg).scan().await.unwrap();
        assert_eq!(
            obs,
            Observation::Disks(vec![
                // /dev/null is a character device: no devno.
                disk("/dev/null", None, None, Some("weird")),
                disk("/dev/sdb1", Some("u"), Some("my disk"), None),
            ])
        );
        let args = std::fs::read_to_string(args).unwrap();
        assert_eq!(args.trim(), "-c /dev/null -o export");
    }

    #[tokio::test]
    async fn failing_command_reports_first_stderr_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = script(
            dir.path(),
            "fail",
            "echo '  \n  first problem  ' >&2\necho second >&2\nexit 1\n",
        );
        let err = watcher(cfg_for(vec![s(&path), "x".into()], Duration::from_secs(5)))
            .scan()
            .await
            .unwrap_err();
        match err {
            WatchError::Failed {
                program,
                status,
                stderr,
            } => {
                assert_eq!(program, s(&path));
                assert!(status.contains('1'), "{status}");
                assert_eq!(stderr, "first problem");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[tokio::test]
    async fn exit_2_without_output_means_no_devices() {
        let dir = tempfile::tempdir().unwrap();
        let path = script(dir.path(), "none", "exit 2\n");
        let obs = watcher(cfg_for(vec![s(&path)], Duration::from_secs(5)))
            .scan()
            .await
            .unwrap();
        assert_eq!(obs, Observation::Disks(vec![]));

        let path = script(dir.path(), "two", "echo '/dev/sda1: UUID=\"u\"'\nexit 2\n");
        let err = watcher(cfg_for(vec![s(&path)], Duration::from_secs(5)))
            .scan()
            .await
            .unwrap_err();
        assert_eq!(err.kind(), "failed");

        // Exit 2 with a message is no "nothing found": dash says this, with status 2, when
        // the script it was started for is gone; taking it as empty dropped the inventory.
        let path = script(
            dir.path(),
            "said",
            "echo 'sh: 0: cannot open /x/blkid: No such file' >&2\nexit 2\n",
        );
        let err = watcher(cfg_for(vec![s(&path)], Duration::from_secs(5)))
            .scan()
            .await
            .unwrap_err();
        assert_eq!(err.kind(), "failed");
        assert!(err.to_string().contains("cannot open"), "{err}");
    }

    #[tokio::test]
    async fn missing_and_non_executable_programs() {
        let err = watcher(cfg_for(
            vec!["/nonexistent/dir/blkid".into()],
            Duration::from_secs(5),
        ))
        .scan()
        .await
        .unwrap_err();
        assert!(matches!(err, WatchError::NotFound { .. }), "{err:?}");

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("noexec");
        std::fs::write(&path, "#!/bin/sh\necho hi\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = watcher(cfg_for(vec![s(&path)], Duration::from_secs(5)))
            .scan()
            .await
            .unwrap_err();
        assert!(
            matches!(err, WatchError::PermissionDenied { .. }),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn huge_output_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = script(dir.path(), "yes", "exec yes DEVNAME=/dev/sda\n");
        let started = Instant::now();
        let err = watcher(cfg_for(vec![s(&path)], Duration::from_secs(10)))
            .scan()
            .await
            .unwrap_err();
        assert_eq!(err.kind(), "bad_output", "{err:?}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    /// A fake blkid for quick looks: without device arguments it prints `full`; with
    /// some, the `probe-<name>` file of each device that has one (and exits 2, as blkid
    /// does, when none has). Every call's arguments are appended to `calls`.
    fn quick_fixture(dir: &Path, full: &str) -> (PathBuf, PathBuf) {
        let calls = dir.join("calls");
        std::fs::write(dir.join("full"), full).unwrap();
        let body = format!(
            r#"echo "$*" >> '{calls}'
shift 4
if [ $# -eq 0 ]; then cat '{dir}/full'; exit 0; fi
found=0
for d in "$@"; do
  f='{dir}/probe-'$(basename "$d")
  if [ -f "$f" ]; then cat "$f"; found=1; fi
done
[ $found -eq 1 ] || exit 2
"#,
            calls = s(&calls),
            dir = s(dir),
        );
        (script(dir, "blkid", &body), calls)
    }

    fn devices(obs: Option<Observation>) -> Option<Vec<(String, Option<String>)>> {
        match obs? {
            Observation::Disks(d) => Some(d.into_iter().map(|d| (d.device, d.uuid)).collect()),
            other => panic!("disks expected, got {other:?}"),
        }
    }

    fn pair(device: &str, uuid: &str) -> (String, Option<String>) {
        (device.to_string(), Some(uuid.to_string()))
    }

    #[tokio::test]
    async fn a_quick_look_probes_only_the_named_devices_and_patches_the_last_scan() {
        let dir = tempfile::tempdir().unwrap();
        let (blkid, calls) = quick_fixture(
            dir.path(),
            "DEVNAME=/dev/loop1\nUUID=u1\nTYPE=ext4\n\nDEVNAME=/dev/loop2\nUUID=u2\n",
        );
        std::fs::write(
            dir.path().join("probe-loop7"),
            "DEVNAME=/dev/loop7\nUUID=u7\n",
        )
        .unwrap();
        let w = watcher(cfg_for(vec![s(&blkid)], Duration::from_secs(5)));
        // Nothing to patch before the first full scan.
        w.note(Some(vec!["/dev/loop7".into()]));
        assert_eq!(w.scan_changed().await, None);
        w.scan().await.unwrap();

        // An attach: probed alone, added to what the full scan saw.
        w.note(Some(vec!["/dev/loop7".into()]));
        assert_eq!(
            devices(w.scan_changed().await),
            Some(vec![
                pair("/dev/loop1", "u1"),
                pair("/dev/loop2", "u2"),
                pair("/dev/loop7", "u7")
            ])
        );
        let last = std::fs::read_to_string(&calls).unwrap();
        assert_eq!(
            last.lines().last(),
            Some("-c /dev/null -o export /dev/loop7")
        );

        // A detach: blkid finds nothing there (exit 2), so it is gone; the patch builds on
        // the previous quick look, not only on the last full scan.
        w.note(Some(vec!["/dev/loop2".into()]));
        assert_eq!(
            devices(w.scan_changed().await),
            Some(vec![pair("/dev/loop1", "u1"), pair("/dev/loop7", "u7")])
        );

        // Nothing noted since: nothing to look at quickly.
        assert_eq!(w.scan_changed().await, None);
    }

    #[tokio::test]
    async fn a_quick_look_declines_what_only_a_full_scan_gets_right() {
        let dir = tempfile::tempdir().unwrap();
        let (blkid, calls) = quick_fixture(dir.path(), "DEVNAME=/dev/loop1\nUUID=u1\n");
        std::fs::write(
            dir.path().join("probe-loop5"),
            "DEVNAME=/dev/loop5\nUUID=u1\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("probe-loop6"),
            "DEVNAME=/dev/mapper/x\nUUID=u6\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("probe-loop9"),
            "DEVNAME=/dev/loop9\nUUID=u9\n",
        )
        .unwrap();
        let mut cfg = cfg_for(vec![s(&blkid)], Duration::from_secs(5));
        cfg.exclude = vec!["/dev/loop9".into()];
        let w = watcher(cfg);
        w.scan().await.unwrap();
        // Events that named nothing, or a device blkid lists under another name.
        w.note(None);
        assert_eq!(w.scan_changed().await, None);
        w.note(Some(vec!["/dev/dm-0".into()]));
        assert_eq!(w.scan_changed().await, None);
        // A probe answering for another device than asked.
        w.note(Some(vec!["/dev/loop6".into()]));
        assert_eq!(w.scan_changed().await, None);
        // A clone of a listed disk: which one is listed first is blkid's order.
        w.note(Some(vec!["/dev/loop5".into()]));
        assert_eq!(w.scan_changed().await, None);
        // An excluded device is not even probed.
        let before = std::fs::read_to_string(&calls).unwrap().lines().count();
        w.note(Some(vec!["/dev/loop9".into()]));
        assert_eq!(
            devices(w.scan_changed().await),
            Some(vec![pair("/dev/loop1", "u1")])
        );
        assert_eq!(
            std::fs::read_to_string(&calls).unwrap().lines().count(),
            before
        );
        // A full scan forgets what was noted before it.
        w.note(Some(vec!["/dev/loop7".into()]));
        w.scan().await.unwrap();
        assert_eq!(w.scan_changed().await, None);

        // A configured command line is run as given, never extended.
        let custom = watcher(cfg_for(
            vec![
                s(&blkid),
                "-c".into(),
                "/dev/null".into(),
                "-o".into(),
                "export".into(),
            ],
            Duration::from_secs(5),
        ));
        custom.scan().await.unwrap();
        custom.note(Some(vec!["/dev/loop1".into()]));
        assert_eq!(custom.scan_changed().await, None);
    }

    #[test]
    fn a_lone_probe_is_empty_only_when_blkid_found_nothing_and_said_nothing() {
        let dev = "/dev/loop7";
        let judge = |code, out: &str, err: &str| judge_probe(dev, code, out, err.as_bytes());
        // Nothing there.
        assert_eq!(judge(Some(2), "", "").unwrap().contents, Contents::Empty);
        // blkid could not open it: exit 2 as well, after a line on stderr.
        assert_eq!(
            judge(
                Some(2),
                "",
                "blkid: error: /dev/loop7: Operation not permitted\n"
            ),
            Err("Operation not permitted".to_string())
        );
        // A signature, as `-p -o export` prints it.
        let found = judge(
            Some(0),
            "DEVNAME=/dev/loop7\nUUID=u7\nVERSION=1.0\nTYPE=ext4\nUSAGE=filesystem\n",
            "",
        )
        .unwrap();
        assert_eq!(found.contents, Contents::Signature);
        assert_eq!(
            (found.uuid.as_deref(), found.fstype.as_deref()),
            (Some("u7"), Some("ext4"))
        );
        // A partition table only: a signature without a filesystem.
        let table = judge(
            Some(0),
            "DEVNAME=/dev/loop7\nPTUUID=0ec59955\nPTTYPE=dos\n",
            "",
        );
        assert_eq!(table.unwrap().contents, Contents::Signature);
        // Several signatures (ambivalent): a signature all the same.
        assert_eq!(
            judge(Some(8), "", "blkid: /dev/loop7: ambivalent result")
                .unwrap()
                .contents,
            Contents::Signature
        );
        // Answers that are not believed: another device, nothing parsable, output with
        // "nothing found", other exits, a signal.
        for (code, out, err) in [
            (Some(0), "DEVNAME=/dev/sda1\nTYPE=ext4\n", ""),
            (
                Some(0),
                "DEVNAME=/dev/loop7\nTYPE=ext4\n\nDEVNAME=/dev/loop8\n",
                "",
            ),
            (Some(0), "garbage\n", ""),
            (Some(0), "", ""),
            (Some(2), "DEVNAME=/dev/loop7\n", ""),
            (Some(4), "", "blkid: out of memory"),
            (Some(1), "", ""),
            (None, "", ""),
        ] {
            assert!(judge(code, out, err).is_err(), "{code:?} {out:?} {err:?}");
        }
        // What goes to status has no control characters and is capped.
        let hostile = format!("blkid: error: /dev/loop7: \x1b[31mred{}", "x".repeat(1000));
        let why = judge(Some(2), "", &hostile).unwrap_err();
        assert!(
            !why.contains('\x1b') && why.len() <= MAX_STDERR_LINE,
            "{why:?}"
        );
        assert_eq!(
            judge(Some(3), "", "something odd"),
            Err("blkid ended with exit status 3: something odd".to_string())
        );
    }

    #[test]
    fn sysfs_devices_to_probe_skip_empty_and_ram_and_mark_used_ones() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let block = |name: &str, dev: &str, size: &str| {
            let d = root.join("devices/virtual/block").join(name);
            std::fs::create_dir_all(d.join("holders")).unwrap();
            std::fs::write(d.join("dev"), dev).unwrap();
            std::fs::write(d.join("size"), size).unwrap();
            std::fs::create_dir_all(root.join("class/block")).unwrap();
            std::os::unix::fs::symlink(&d, root.join("class/block").join(name)).unwrap();
            d
        };
        block("loop0", "7:0\n", "0\n");
        block("ram0", "1:0\n", "8192\n");
        block("loop1", "7:1\n", "2048\n");
        let held = block("loop2", "7:2\n", "2048\n");
        std::fs::write(held.join("holders/dm-0"), "").unwrap();
        let parted = block("loop3", "7:3\n", "2048\n");
        std::fs::create_dir_all(parted.join("loop3p1")).unwrap();
        std::fs::write(parted.join("loop3p1/partition"), "1\n").unwrap();
        block("loop4", "garbage", "2048\n");
        let got = list_block_devices(root, |d| d != "/dev/loop9");
        let want = [
            ("/dev/loop1", (7, 1), false),
            ("/dev/loop2", (7, 2), true),
            ("/dev/loop3", (7, 3), true),
        ];
        let got: Vec<(&str, (u32, u32), bool)> = got
            .iter()
            .map(|b| (b.device.as_str(), b.devno, b.in_use))
            .collect();
        assert_eq!(got, want);
    }

    #[tokio::test]
    async fn devices_the_scan_missed_are_probed_and_a_missing_node_is_never_empty() {
        // A fake sysfs listing /dev/sdz9 (no such node here) and /dev/null's neighbour;
        // a fake blkid whose scan reports nothing and whose probes say "nothing found"
        // (as blkid does for a path that does not exist).
        let dir = tempfile::tempdir().unwrap();
        let sys = dir.path().join("sys");
        let d = sys.join("devices/virtual/block/sdz9");
        std::fs::create_dir_all(d.join("holders")).unwrap();
        std::fs::write(d.join("dev"), "259:999\n").unwrap();
        std::fs::write(d.join("size"), "2048\n").unwrap();
        std::fs::create_dir_all(sys.join("class/block")).unwrap();
        std::os::unix::fs::symlink(&d, sys.join("class/block/sdz9")).unwrap();
        let calls = dir.path().join("calls");
        let blkid = script(
            dir.path(),
            "blkid",
            &format!("echo \"$*\" >> '{}'\nexit 2\n", s(&calls)),
        );
        let mut cfg = cfg_for(vec![s(&blkid)], Duration::from_secs(5));
        cfg.probe_sysfs = Some(sys.clone());
        let obs = watcher(cfg).scan().await.unwrap();
        let Observation::Disks(disks) = &obs else {
            panic!("{obs:?}")
        };
        assert_eq!(disks.len(), 1, "{disks:?}");
        assert_eq!(disks[0].device, "/dev/sdz9");
        assert_eq!(disks[0].devno, Some((259, 999)));
        assert_eq!(
            disks[0].contents,
            Contents::Unreadable(
                "cannot probe /dev/sdz9: /dev/sdz9 is not the block device 259:999".into()
            )
        );
        assert_eq!(
            obs.problems(),
            ["cannot probe /dev/sdz9: /dev/sdz9 is not the block device 259:999"]
        );
        // Only the scan ran: a node that is not the device is not even probed.
        let ran = std::fs::read_to_string(&calls).unwrap();
        assert_eq!(ran.trim(), "-c /dev/null -o export");

        // Without probing (no hardware watcher), nothing but the scan.
        let cfg = cfg_for(vec![s(&blkid)], Duration::from_secs(5));
        assert_eq!(
            watcher(cfg).scan().await.unwrap(),
            Observation::Disks(vec![])
        );
    }

    #[test]
    fn probe_argv_for_plain_blkid_only() {
        let w = watcher(cfg_for(
            vec!["/usr/sbin/blkid".into()],
            Duration::from_secs(1),
        ));
        assert_eq!(
            w.probe_argv("/dev/sdb").unwrap(),
            ["/usr/sbin/blkid", "-p", "-o", "export", "/dev/sdb"]
        );
        let custom = watcher(cfg_for(
            vec!["sudo".into(), "blkid".into()],
            Duration::from_secs(1),
        ));
        assert_eq!(custom.probe_argv("/dev/sdb"), None);
    }

    #[test]
    fn quick_kinds() {
        for ok in [
            "/dev/loop3",
            "/dev/sdb1",
            "/dev/nvme0n1p2",
            "/dev/vdc",
            "/dev/mmcblk0p1",
        ] {
            assert!(quick_kind(ok), "{ok}");
        }
        for no in [
            "/dev/dm-0",
            "/dev/md127",
            "/dev/mapper/vg-lv",
            "loop3",
            "/dev/loop/0",
        ] {
            assert!(!quick_kind(no), "{no}");
        }
    }

    /// State letter from /proc/<pid>/stat, or None when the process is gone.
    fn proc_state(pid: i32) -> Option<char> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let after = &stat[stat.rfind(')')? + 1..];
        after.trim_start().chars().next()
    }

    #[tokio::test]
    async fn hanging_command_and_its_children_are_killed() {
        let dir = tempfile::tempdir().unwrap();
        let pids = dir.path().join("pids");
        let body = format!(
            "sleep 1000 &\necho \"$$ $!\" > '{}'\nsleep 1000; wait\n",
            s(&pids)
        );
        let path = script(dir.path(), "hang", &body);
        let timeout = Duration::from_millis(300);
        let started = Instant::now();
        let err = watcher(cfg_for(vec![s(&path), "arg".into()], timeout))
            .scan()
            .await
            .unwrap_err();
        let took = started.elapsed();
        assert!(matches!(err, WatchError::TimedOut { .. }), "{err:?}");
        assert!(took < Duration::from_millis(1500), "took {took:?}");

        let text = std::fs::read_to_string(&pids).unwrap();
        let mut it = text.split_whitespace().map(|p| p.parse::<i32>().unwrap());
        let (shell, background) = (it.next().unwrap(), it.next().unwrap());
        // We reaped the shell ourselves: it must be gone entirely.
        assert_eq!(proc_state(shell), None, "shell {shell} still there");
        // The orphaned grandchild is reaped by init (or not, in some containers): gone or
        // a zombie is fine, running or sleeping is not.
        let deadline = Instant::now() + Duration::from_millis(500);
        loop {
            match proc_state(background) {
                None | Some('Z') | Some('X') => break,
                Some(state) if Instant::now() > deadline => {
                    panic!("background sleep {background} survived in state {state}")
                }
                Some(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }
}
