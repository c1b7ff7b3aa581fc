//! Probing one device alone: the block devices sysfs lists, and what blkid's exit status
//! and output say about one of them (a signature, empty, in use, or not readable).

use super::*;

/// When the probes of a scan that must end by `deadline` must end: by then, but with at
/// least a second for them, which the daemon's grace beyond a watcher's timeout allows.
pub(super) fn probe_deadline(deadline: tokio::time::Instant) -> tokio::time::Instant {
    deadline.max(tokio::time::Instant::now() + Duration::from_secs(1))
}

/// A block device sysfs lists, as the probing needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct BlockDevice {
    /// `/dev/<kernel name>`.
    pub(super) device: String,
    pub(super) devno: (u32, u32),
    /// Other block devices hold it (`holders/`), or it has partitions.
    pub(super) in_use: bool,
}

/// The block devices under `root/class/block` with a medium (size > 0), not RAM disks,
/// wanted by the filters. Anything unreadable is left out (it is not probed; a device
/// sysfs lists but this cannot read stays `Unknown` for the daemon, which is never
/// blank).
pub(super) fn list_block_devices(root: &Path, wanted: impl Fn(&str) -> bool) -> Vec<BlockDevice> {
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
pub(super) fn parse_devno(text: &str) -> Option<(u32, u32)> {
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
pub(super) fn judge_probe(
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
pub(super) fn reason(device: &str, stderr: &[u8]) -> String {
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
