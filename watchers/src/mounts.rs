//! The `mounts` watcher: where each device is mounted, from the kernel's own mount table.
//!
//! `/proc/self/mountinfo` rather than `/proc/mounts` because only mountinfo carries the
//! device number, which is what ties a mount to a disk when the mount table names the
//! device differently than blkid does (device-mapper, symlinks, bind mounts).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::{DiskInfo, FsUsage, MountEntry, Observation, Schedule, WatchError, Watcher};

/// Reading a proc file cannot really hang, but the daemon wants a limit for every watcher.
const TIMEOUT: Duration = Duration::from_secs(5);

/// Reads the mount table once per scan.
#[derive(Debug)]
pub struct MountWatcher {
    path: PathBuf,
    schedule: Schedule,
    /// POLLPRI notifications of the mount table, opened on first use.
    events: tokio::sync::Mutex<Option<crate::events::MountEvents>>,
    /// Mountpoints whose `statvfs` has not returned yet (see `ask`).
    stuck: Arc<std::sync::Mutex<HashSet<String>>>,
}

impl MountWatcher {
    /// The watcher's name (`status`, `refresh`), for callers that ask this one to scan.
    pub const NAME: &'static str = "mounts";

    /// Watches this process's view of the mounts, which is the view that matters to the
    /// daemon (it is what it could open) and, outside containers, the host's.
    pub fn new(interval: Duration) -> MountWatcher {
        MountWatcher::with_path("/proc/self/mountinfo", interval)
    }

    /// Reads a mountinfo-format file from elsewhere, so tests can feed fixtures.
    pub fn with_path(path: impl Into<PathBuf>, interval: Duration) -> MountWatcher {
        MountWatcher {
            path: path.into(),
            schedule: Schedule {
                interval,
                timeout: TIMEOUT,
            },
            events: tokio::sync::Mutex::new(None),
            stuck: Arc::default(),
        }
    }
}

#[async_trait]
impl Watcher for MountWatcher {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn schedule(&self) -> Schedule {
        self.schedule
    }

    async fn changed(&self) {
        let mut events = self.events.lock().await;
        if events.is_none() {
            match crate::events::MountEvents::open(&self.path) {
                Ok(e) => *events = Some(e),
                Err(e) => {
                    tracing::info!(path = %self.path.display(), "no mount change notifications ({e}); scanning on the interval");
                    drop(events);
                    return std::future::pending().await;
                }
            }
        }
        if let Some(e) = events.as_mut() {
            if let Err(err) = e.next().await {
                tracing::warn!("mount change notifications failed: {err}");
                *events = None;
                drop(events);
                // Do not spin on a broken descriptor: let the interval do the work a while.
                tokio::time::sleep(self.schedule.interval).await;
            }
        }
    }

    async fn scan(&self) -> Result<Observation, WatchError> {
        let what = self.path.display().to_string();
        let bytes = match tokio::fs::read(&self.path).await {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(WatchError::NotFound { program: what })
            }
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                return Err(WatchError::PermissionDenied { what })
            }
            Err(source) => {
                return Err(WatchError::Io {
                    what: format!("reading {what}"),
                    source,
                })
            }
        };
        let text = String::from_utf8_lossy(&bytes);
        let mut mounts = parse_mountinfo(&text);
        // Every system has at least a root mount; content without a single parsable line
        // is not a mount table, and reporting "nothing mounted" would be a lie.
        if mounts.is_empty() && !text.trim().is_empty() {
            return Err(WatchError::BadOutput(format!(
                "{what}: no parsable mountinfo line"
            )));
        }
        let stuck = Arc::clone(&self.stuck);
        let mounts = tokio::task::spawn_blocking(move || {
            for m in &mut mounts {
                m.usage = ask(m, &stuck);
            }
            mounts
        })
        .await
        .map_err(|e| WatchError::Io {
            what: "asking filesystems for their size".into(),
            source: std::io::Error::other(e.to_string()),
        })?;
        Ok(Observation::Mounts(mounts))
    }
}

/// How long one filesystem may take to say how full it is before the scan goes on without
/// its figures.
const STATVFS_WAIT: Duration = Duration::from_millis(500);

/// `usage_of`, on a thread of its own, waited for at most [`STATVFS_WAIT`]. A filesystem
/// whose call hangs (a dead disk, a hung FUSE daemon behind `fuseblk`) costs one thread
/// while it hangs, not one per scan: it is in `stuck` until its call returns, and is not
/// asked again meanwhile. The mount table itself never waits for it.
fn ask(m: &MountEntry, stuck: &Arc<std::sync::Mutex<HashSet<String>>>) -> Option<FsUsage> {
    let lock = || stuck.lock().unwrap_or_else(|p| p.into_inner());
    if !asked(m) || lock().contains(&m.mountpoint) {
        return None;
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let entry = m.clone();
    let marks = Arc::clone(stuck);
    let spawned = std::thread::Builder::new()
        .name("diskd-statvfs".into())
        .spawn(move || {
            let _ = tx.send(usage_of(&entry));
            marks
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&entry.mountpoint);
        });
    if spawned.is_err() {
        return None;
    }
    match rx.recv_timeout(STATVFS_WAIT) {
        Ok(usage) => usage,
        Err(_) => {
            lock().insert(m.mountpoint.clone());
            tracing::warn!(mountpoint = %m.mountpoint, "statvfs did not answer within {STATVFS_WAIT:?}; its size is left out until it does");
            None
        }
    }
}

/// Whether a mount is asked for its size at all (see [`usage_of`]).
fn asked(m: &MountEntry) -> bool {
    m.devno.0 != 0 || m.source.starts_with("/dev/")
}

/// `statvfs` of a mount of a block device: what `df` shows for it. Network and FUSE
/// filesystems (anonymous device numbers, major 0, and no `/dev/` source) are not asked:
/// an unreachable server could block the call for minutes. btrfs also mounts under major
/// 0, but names its device as the source.
fn usage_of(m: &MountEntry) -> Option<FsUsage> {
    if !asked(m) {
        return None;
    }
    let st = nix::sys::statvfs::statvfs(Path::new(&m.mountpoint)).ok()?;
    let frag = st.fragment_size() as u64;
    let size = (st.blocks() as u64).saturating_mul(frag);
    let free = (st.blocks_free() as u64).saturating_mul(frag);
    let avail = (st.blocks_available() as u64).saturating_mul(frag);
    Some(FsUsage {
        size,
        used: size.saturating_sub(free),
        avail,
    })
}

/// Parses `/proc/<pid>/mountinfo` (see proc(5)), skipping lines that do not have its
/// shape so that one odd line does not hide the rest of the table.
///
/// Mount points and sources are decoded from the kernel's octal escapes (`\040` for a
/// space, `\011`, `\012`, `\134`, ...) and converted to UTF-8, replacing invalid bytes.
pub fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    text.lines().filter_map(parse_line).collect()
}

/// `36 35 98:0 /mnt1 /mnt/parent rw,noatime master:1 - ext3 /dev/root rw,errors=continue`
fn parse_line(line: &str) -> Option<MountEntry> {
    let fields: Vec<&str> = line.split_ascii_whitespace().collect();
    let [id, parent, devno, _root, mountpoint, _options, rest @ ..] = fields.as_slice() else {
        return None;
    };
    id.parse::<u64>().ok()?;
    parent.parse::<u64>().ok()?;
    let (major, minor) = devno.split_once(':')?;
    let devno = (major.parse::<u32>().ok()?, minor.parse::<u32>().ok()?);
    // Zero or more optional fields (`shared:1`, `master:2`, ...) end at a lone `-`.
    let sep = rest.iter().position(|f| *f == "-")?;
    let fstype = rest.get(sep + 1)?;
    let source = rest.get(sep + 2)?;
    Some(MountEntry {
        devno,
        mountpoint: unescape_octal(mountpoint),
        source: unescape_octal(source),
        fstype: unescape_octal(fstype),
        usage: None,
    })
}

/// Decodes `\NNN` octal escapes into bytes, then the whole into UTF-8 (lossily).
fn unescape_octal(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' {
            if let Some(byte) = b
                .get(i + 1..i + 4)
                .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)))
                .and_then(|d| std::str::from_utf8(d).ok())
                .and_then(|d| u8::from_str_radix(d, 8).ok())
            {
                out.push(byte);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Where a disk is mounted, sorted and without duplicates.
///
/// The device number is the reliable key (it survives `/dev/mapper` names, symlinks and
/// bind mounts); the source path is the fallback for filesystems that mount under an
/// anonymous device number (btrfs shows `0:NN`) and for disks whose node could not be
/// stat'ed.
pub fn mountpoints_for(disk: &DiskInfo, mounts: &[MountEntry]) -> Vec<String> {
    let mut canonical_disk: Option<Option<PathBuf>> = None;
    let mut out: Vec<String> = mounts
        .iter()
        .filter(|m| {
            if disk.devno == Some(m.devno) {
                return true;
            }
            if m.source == disk.device {
                return true;
            }
            // Only real paths can name the same node; `tmpfs`, `proc`, ... cannot.
            if !m.source.starts_with('/') {
                return false;
            }
            let disk_path = canonical_disk
                .get_or_insert_with(|| std::fs::canonicalize(Path::new(&disk.device)).ok());
            match disk_path {
                Some(d) => std::fs::canonicalize(&m.source).is_ok_and(|s| s == *d),
                None => false,
            }
        })
        .map(|m| m.mountpoint.clone())
        .collect();
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURE: &str = concat!(
        "22 1 8:2 / / rw,relatime shared:1 - ext4 /dev/sda2 rw,errors=remount-ro\n",
        "36 22 8:17 / /media/my\\040disk rw,nosuid shared:5 master:2 - ext4 /dev/sdb1 rw\n",
        "37 22 8:17 /photos /srv/photos rw - ext4 /dev/sdb1 rw\n",
        "38 22 0:45 / /mnt/tab\\011and\\012nl\\134bs rw - btrfs /dev/sdc1 rw,space_cache\n",
        "39 22 0:5 / /proc rw,nosuid - proc proc rw\n",
        "40 22 253:0 / /data rw - xfs /dev/mapper/vg-data rw\n",
        "41 22 0:46 / /m\\303\\234 rw - vfat /dev/sdd\\0401 rw\n",
        "this is not mountinfo\n",
        "42 22 8:x / /bad rw - ext4 /dev/sde1 rw\n",
        "43 22 8:33 / /nosep rw ext4 /dev/sdf1 rw\n",
        "44 22 8:33 / /short rw -\n",
        "\n",
    );

    fn entry(devno: (u32, u32), mountpoint: &str, source: &str, fstype: &str) -> MountEntry {
        MountEntry {
            devno,
            mountpoint: mountpoint.into(),
            source: source.into(),
            fstype: fstype.into(),
            usage: None,
        }
    }

    #[test]
    fn block_device_mounts_get_their_size_and_others_are_not_asked() {
        // The root of this machine, whatever it is, called a block device mount.
        let root = entry((8, 2), "/", "/dev/sda2", "ext4");
        let usage = usage_of(&root).expect("statvfs of /");
        assert!(usage.size > 0 && usage.used <= usage.size && usage.avail <= usage.size);
        // An anonymous device with a non-device source (NFS, FUSE, proc) is never asked.
        assert_eq!(usage_of(&entry((0, 5), "/", "proc", "proc")), None);
        assert_eq!(usage_of(&entry((0, 61), "/", "host:/srv", "nfs4")), None);
        // btrfs: major 0, but a device as its source.
        assert!(usage_of(&entry((0, 45), "/", "/dev/sdc1", "btrfs")).is_some());
        // A mountpoint that is gone: no figure, no error.
        assert_eq!(
            usage_of(&entry((8, 2), "/nonexistent/diskd", "/dev/sda2", "ext4")),
            None
        );
    }

    #[test]
    fn a_filesystem_whose_call_has_not_returned_is_not_asked_again() {
        let stuck: Arc<std::sync::Mutex<HashSet<String>>> = Arc::default();
        let root = entry((8, 2), "/", "/dev/sda2", "ext4");
        assert!(ask(&root, &stuck).is_some(), "asked on a thread of its own");
        // Marked as hanging: left out, and no second thread is started for it.
        stuck.lock().unwrap().insert("/".into());
        assert_eq!(ask(&root, &stuck), None);
        assert!(stuck.lock().unwrap().contains("/"));
        assert_eq!(ask(&entry((0, 5), "/proc", "proc", "proc"), &stuck), None);
    }

    #[test]
    fn parses_escapes_optional_fields_and_skips_malformed() {
        assert_eq!(
            parse_mountinfo(FIXTURE),
            vec![
                entry((8, 2), "/", "/dev/sda2", "ext4"),
                entry((8, 17), "/media/my disk", "/dev/sdb1", "ext4"),
                entry((8, 17), "/srv/photos", "/dev/sdb1", "ext4"),
                entry((0, 45), "/mnt/tab\tand\nnl\\bs", "/dev/sdc1", "btrfs"),
                entry((0, 5), "/proc", "proc", "proc"),
                entry((253, 0), "/data", "/dev/mapper/vg-data", "xfs"),
                entry((0, 46), "/mÜ", "/dev/sdd 1", "vfat"),
            ]
        );
        assert_eq!(parse_mountinfo(""), vec![]);
    }

    fn disk(device: &str, devno: Option<(u32, u32)>) -> DiskInfo {
        DiskInfo {
            uuid: None,
            label: None,
            device: device.into(),
            fstype: None,
            devno,
            contents: crate::Contents::Signature,
        }
    }

    #[test]
    fn mountpoints_by_devno_and_by_source() {
        let mounts = parse_mountinfo(FIXTURE);
        // By device number, including the bind-style mount of a subdirectory.
        assert_eq!(
            mountpoints_for(&disk("/dev/sdb1", Some((8, 17))), &mounts),
            vec!["/media/my disk", "/srv/photos"]
        );
        // Device-mapper: blkid says /dev/dm-0, the table says /dev/mapper/..., same devno.
        assert_eq!(
            mountpoints_for(&disk("/dev/dm-0", Some((253, 0))), &mounts),
            vec!["/data"]
        );
        // btrfs mounts under an anonymous device number: matched by source.
        assert_eq!(
            mountpoints_for(&disk("/dev/sdc1", Some((8, 33))), &mounts),
            vec!["/mnt/tab\tand\nnl\\bs"]
        );
        // No devno at all: source still works; unknown disks match nothing.
        assert_eq!(
            mountpoints_for(&disk("/dev/sda2", None), &mounts),
            vec!["/"]
        );
        assert!(mountpoints_for(&disk("/dev/zzz", Some((99, 99))), &mounts).is_empty());
    }

    #[test]
    fn mountpoints_by_canonical_path_and_deduplicated() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("node");
        std::fs::write(&target, "").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let link = link.to_str().unwrap();
        let target = target.to_str().unwrap();
        let mounts = vec![
            entry((0, 50), "/b", link, "ext4"),
            entry((0, 50), "/a", target, "ext4"),
            entry((0, 50), "/a", link, "ext4"),
            entry((0, 51), "/other", "/dev/null", "ext4"),
        ];
        assert_eq!(
            mountpoints_for(&disk(target, None), &mounts),
            vec!["/a", "/b"]
        );
    }

    #[tokio::test]
    async fn watcher_reads_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mountinfo");
        std::fs::write(&path, FIXTURE).unwrap();
        let w = MountWatcher::with_path(&path, Duration::from_secs(1));
        assert_eq!(w.name(), "mounts");
        assert_eq!(w.schedule().timeout, Duration::from_secs(5));
        match w.scan().await.unwrap() {
            Observation::Mounts(m) => assert_eq!(m.len(), 7),
            other => panic!("unexpected {other:?}"),
        }

        std::fs::write(&path, "garbage\n").unwrap();
        assert_eq!(w.scan().await.unwrap_err().kind(), "bad_output");

        let missing = MountWatcher::with_path(dir.path().join("nope"), Duration::from_secs(1));
        assert_eq!(missing.scan().await.unwrap_err().kind(), "not_found");

        // The real table always has at least the root mount.
        match MountWatcher::new(Duration::from_secs(1))
            .scan()
            .await
            .unwrap()
        {
            Observation::Mounts(m) => assert!(m.iter().any(|e| e.mountpoint == "/")),
            other => panic!("unexpected {other:?}"),
        }
    }
}
