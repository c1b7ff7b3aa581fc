//! The SMART watcher driven for real: a fake sysfs tree of whole disks, partitions and
//! devices without SMART, and a fake `smartctl` script that answers with the fixtures of
//! `tests/fixtures/smart` (and the exit status smartctl gives with each), logs its argv,
//! and can hang or print garbage.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use diskd_watchers::{
    HealthState, Observation, SmartReading, SmartWatcher, SmartWatcherConfig, Watcher,
};

#[path = "../src/fake_sysfs.rs"]
mod fake_sysfs;
use fake_sysfs::FakeSysfs;

/// A machine in temporary directories: `sysfs` is its sysfs; in `dir`, `bin/smartctl` is
/// its smartctl, and `answers/` what that smartctl prints for each device (`NAME.out`,
/// `NAME.status`, `NAME.hang`), with `answers/argv.log` the arguments of every run.
struct Machine {
    dir: tempfile::TempDir,
    sysfs: FakeSysfs,
}

const SATA0: &str = "devices/pci0000:00/0000:00:1f.2/ata1/host0/target0:0:0/0:0:0:0";
const SATA1: &str = "devices/pci0000:00/0000:00:1f.2/ata2/host1/target1:0:0/1:0:0:0";
const SATA2: &str = "devices/pci0000:00/0000:00:1f.2/ata3/host2/target2:0:0/2:0:0:0";
const NVME: &str = "devices/pci0000:00/0000:00:1d.0/0000:3d:00.0/nvme/nvme0";

/// The fake smartctl: the device is its last argument; a device marked to hang first
/// forks a sleeping child (whose pid it writes down) and sleeps itself; a run that starts
/// while another is under way writes OVERLAP to the log.
const SCRIPT: &str = r#"#!/bin/sh
dir='@DIR@'
echo "$*" >> "$dir/argv.log"
for last in "$@"; do :; done
name=$(basename "$last")
if [ -e "$dir/$name.hang" ]; then
    sleep 60 &
    echo $! > "$dir/$name.child"
    sleep 60
fi
mkdir "$dir/running" 2>/dev/null || echo OVERLAP >> "$dir/argv.log"
cat "$dir/$name.out"
status=$(cat "$dir/$name.status")
rmdir "$dir/running"
exit "$status"
"#;

impl Machine {
    fn new() -> Machine {
        let m = Machine {
            dir: tempfile::tempdir().unwrap(),
            sysfs: FakeSysfs::new(),
        };
        std::fs::create_dir_all(m.answers()).unwrap();
        std::fs::create_dir_all(m.dir.path().join("bin")).unwrap();
        let script = SCRIPT.replace("@DIR@", &m.answers().display().to_string());
        let path = m.smartctl();
        std::fs::write(&path, script).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        m
    }

    fn sys(&self) -> PathBuf {
        self.sysfs.root().to_path_buf()
    }

    fn answers(&self) -> PathBuf {
        self.dir.path().join("answers")
    }

    fn smartctl(&self) -> PathBuf {
        self.dir.path().join("bin/smartctl")
    }

    /// A SCSI-attached disk (or, `scsi_type` 5, a CD drive) below `scsi`.
    fn scsi(&self, scsi: &str, name: &str, dev: &str, scsi_type: u8) {
        let path = format!("{scsi}/block/{name}");
        self.sysfs.block(&path, 1_953_525_168, dev);
        self.sysfs.link(&format!("{path}/device"), scsi);
        self.sysfs
            .file(&format!("{scsi}/type"), format!("{scsi_type}\n"));
    }

    /// What smartctl answers for `/dev/NAME`: a fixture and its exit status.
    fn answer(&self, name: &str, fixture: &str, status: u8) {
        let text = std::fs::read(format!(
            "{}/tests/fixtures/smart/{fixture}.json",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap();
        self.answer_raw(name, &text, status);
    }

    fn answer_raw(&self, name: &str, out: &[u8], status: u8) {
        std::fs::write(self.answers().join(format!("{name}.out")), out).unwrap();
        std::fs::write(
            self.answers().join(format!("{name}.status")),
            status.to_string(),
        )
        .unwrap();
    }

    fn hang(&self, name: &str) {
        std::fs::write(self.answers().join(format!("{name}.hang")), "").unwrap();
    }

    /// The argv (after the program) of every smartctl run so far.
    fn runs(&self) -> Vec<String> {
        std::fs::read_to_string(self.answers().join("argv.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    fn watcher(&self, interval: Duration, timeout: Duration) -> SmartWatcher {
        SmartWatcher::new(SmartWatcherConfig {
            command: vec![self.smartctl().display().to_string()],
            interval,
            timeout,
            sysfs: self.sys(),
            ..SmartWatcherConfig::default()
        })
    }
}

/// Every kind of block device: three whole disks, a partition, and devices without SMART
/// of their own (loop, CD drive, device-mapper, md, zram), and one that only its SCSI
/// type (5, CD/DVD) tells apart.
fn machine() -> Machine {
    let m = Machine::new();
    m.scsi(SATA0, "sda", "8:0", 0);
    m.sysfs
        .block(&format!("{SATA0}/block/sda/sda1"), 2048, "8:1");
    m.sysfs
        .file(&format!("{SATA0}/block/sda/sda1/partition"), "1\n");
    m.scsi(SATA1, "sdb", "8:16", 0);
    m.sysfs
        .block(&format!("{NVME}/nvme0n1"), 1_953_525_168, "259:0");
    m.sysfs.link(&format!("{NVME}/nvme0n1/device"), NVME);
    m.scsi(SATA2, "sr0", "11:0", 5);
    m.scsi(
        "devices/pci0000:00/0000:00:14.0/usb1/1-1/1-1:1.0/host6/target6:0:0/6:0:0:0",
        "sdx",
        "8:96",
        5,
    );
    m.sysfs.block("devices/virtual/block/loop0", 2048, "7:0");
    m.sysfs.block("devices/virtual/block/dm-0", 2048, "253:0");
    m.sysfs.block("devices/virtual/block/md0", 2048, "9:0");
    m.sysfs.block("devices/virtual/block/zram0", 2048, "252:0");
    for name in ["sda1", "sr0", "sdx", "loop0", "dm-0", "md0", "zram0"] {
        m.answer_raw(name, b"{}", 0);
    }
    m.answer("sda", "ata-hdd-reallocated", 64);
    m.answer("sdb", "ata-ssd-healthy", 0);
    m.answer("nvme0n1", "nvme-critical", 8);
    m
}

async fn readings(w: &SmartWatcher) -> Vec<SmartReading> {
    match w.scan().await.unwrap() {
        Observation::Smart(r) => r,
        other => panic!("not a SMART observation: {other:?}"),
    }
}

fn reading<'a>(all: &'a [SmartReading], device: &str) -> &'a SmartReading {
    all.iter()
        .find(|r| r.device == device)
        .unwrap_or_else(|| panic!("{device} missing from {all:#?}"))
}

fn now_ms() -> u64 {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    u64::try_from(d.as_millis()).unwrap()
}

#[tokio::test]
async fn each_whole_disk_is_read_once_and_judged() {
    let m = machine();
    let w = m.watcher(Duration::from_secs(3600), Duration::from_secs(10));
    assert_eq!(w.name(), "smart");
    let before = now_ms();
    let all = readings(&w).await;
    let after = now_ms();

    let found: Vec<(&str, (u32, u32), HealthState)> = all
        .iter()
        .map(|r| (r.device.as_str(), r.devno, r.health.state))
        .collect();
    assert_eq!(
        found,
        [
            ("/dev/nvme0n1", (259, 0), HealthState::Failing),
            ("/dev/sda", (8, 0), HealthState::Warning),
            ("/dev/sdb", (8, 16), HealthState::Ok),
        ]
    );
    let sda = &reading(&all, "/dev/sda").health;
    assert_eq!(sda.reasons, ["8 reallocated sectors", "3 pending sectors"]);
    assert_eq!(
        (
            sda.reallocated_sectors,
            sda.pending_sectors,
            sda.temperature_c
        ),
        (Some(8), Some(3), Some(36))
    );
    let nvme = &reading(&all, "/dev/nvme0n1").health;
    assert_eq!(nvme.reasons[1], "NVMe critical warning 0x05");
    for r in &all {
        let checked = r.health.checked.expect("a reading has its time");
        assert!((before..=after).contains(&checked), "{r:?}");
    }

    // Only whole disks, one run each, the device path last, never two at once.
    assert_eq!(
        m.runs(),
        [
            "--json -a -n standby /dev/nvme0n1",
            "--json -a -n standby /dev/sda",
            "--json -a -n standby /dev/sdb",
        ]
    );
    assert_eq!(
        w.argv("/dev/sda").last().map(String::as_str),
        Some("/dev/sda")
    );
    assert!(Observation::Smart(all.clone()).problems().is_empty());

    // Not due again: the same readings from the cache, no run.
    assert_eq!(readings(&w).await, all);
    assert_eq!(m.runs().len(), 3);
}

#[tokio::test]
async fn concurrent_scans_never_run_two_smartctl_at_once() {
    let m = machine();
    let w = m.watcher(Duration::ZERO, Duration::from_secs(10));
    let (a, b) = tokio::join!(readings(&w), readings(&w));
    assert_eq!(a.len(), 3);
    assert_eq!(b.len(), 3);
    let runs = m.runs();
    assert_eq!(runs.len(), 6, "{runs:?}");
    assert!(!runs.iter().any(|l| l == "OVERLAP"), "{runs:?}");
}

#[tokio::test]
async fn a_disk_in_standby_keeps_its_last_reading() {
    let m = machine();
    // Every scan reads every disk again.
    let w = m.watcher(Duration::ZERO, Duration::from_secs(10));
    m.answer("nvme0n1", "standby", 2);
    let first = readings(&w).await;
    let sda_awake = reading(&first, "/dev/sda").health.clone();
    assert_eq!(sda_awake.state, HealthState::Warning);
    // Never read awake: nothing to keep.
    let nvme = &reading(&first, "/dev/nvme0n1").health;
    assert_eq!(nvme.state, HealthState::Unknown);
    assert_eq!(nvme.reasons, ["in standby, not woken"]);

    m.answer("sda", "standby", 2);
    let second = readings(&w).await;
    assert_eq!(m.runs().len(), 6, "every disk was asked again");
    assert_eq!(
        reading(&second, "/dev/sda").health,
        sda_awake,
        "same reading, same time"
    );
    assert_eq!(
        Observation::Smart(second).problems(),
        ["/dev/nvme0n1: in standby, not woken"]
    );

    // Awake again: a new reading.
    m.answer("sda", "ata-ssd-healthy", 0);
    let third = readings(&w).await;
    assert_eq!(reading(&third, "/dev/sda").health.state, HealthState::Ok);
}

#[tokio::test]
async fn a_disk_is_read_again_only_once_its_reading_is_interval_old() {
    let m = machine();
    let interval = Duration::from_millis(1500);
    let w = m.watcher(interval, Duration::from_secs(10));
    assert_eq!(w.schedule().interval, interval, "before the first scan");
    let first = readings(&w).await;
    let first_done = Instant::now();
    assert_eq!(m.runs().len(), 3);

    // What the daemon waits before the next scan: until the first disk is due.
    let wait = w.schedule().interval;
    assert!(wait > Duration::ZERO && wait <= interval, "{wait:?}");
    assert_eq!(readings(&w).await, first);
    assert_eq!(m.runs().len(), 3, "not due yet");

    // The time passing is what is under test: the daemon sleeps the schedule's interval.
    tokio::time::sleep(w.schedule().interval).await;
    assert!(first_done.elapsed() >= interval);
    let again = readings(&w).await;
    assert_eq!(m.runs()[3..], m.runs()[..3], "all three are due again");
    assert!(
        reading(&again, "/dev/sda").health.checked > reading(&first, "/dev/sda").health.checked
    );

    // A disk plugged in meanwhile is read at once, and alone; then not again.
    m.scsi(
        "devices/pci0000:00/0000:00:1f.2/ata4/host3/target3:0:0/3:0:0:0",
        "sdc",
        "8:32",
        0,
    );
    m.answer("sdc", "usb-sat", 0);
    let with_sdc = readings(&w).await;
    assert_eq!(with_sdc.len(), 4);
    assert_eq!(reading(&with_sdc, "/dev/sdc").health.state, HealthState::Ok);
    assert_eq!(m.runs()[6..], ["--json -a -n standby /dev/sdc"]);
    assert_eq!(readings(&w).await, with_sdc);
    assert_eq!(m.runs().len(), 7);
}

/// Whether process `pid` is gone (or a zombie, dead but not reaped by a PID 1 that does
/// not reap).
fn dead(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z')),
    }
}

#[tokio::test]
async fn a_hanging_smartctl_is_killed_with_its_child() {
    let m = machine();
    m.hang("sda");
    let timeout = Duration::from_secs(1);
    let w = m.watcher(Duration::from_secs(3600), timeout);
    let started = Instant::now();
    let all = readings(&w).await;
    let took = started.elapsed();
    assert!(took >= timeout, "{took:?}");
    assert!(took < timeout + Duration::from_secs(4), "{took:?}");

    let sda = &reading(&all, "/dev/sda").health;
    assert_eq!(sda.state, HealthState::Unknown);
    assert_eq!(sda.reasons, ["smartctl timed out after 1s"]);
    assert!(sda.checked.is_some());
    // The disks after it were still read.
    assert_eq!(reading(&all, "/dev/sdb").health.state, HealthState::Ok);
    assert_eq!(
        Observation::Smart(all.clone()).problems(),
        ["/dev/sda: smartctl timed out after 1s"]
    );

    let child: i32 = std::fs::read_to_string(m.answers().join("sda.child"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // SIGKILL was sent to the group before the scan returned; the kernel takes a moment
    // to tear the process down.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !dead(child) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(dead(child), "the hanging smartctl's child {child} survived");

    // A pass allows a full timeout per known disk, and one more.
    let limit = w.schedule().timeout;
    assert!(limit >= timeout * 4, "{limit:?}");
    // The hung disk is not tried again before its interval: no hang per scan.
    let again = readings(&w).await;
    assert_eq!(reading(&again, "/dev/sda").health, *sda);
    assert_eq!(m.runs().len(), 3);
}

#[tokio::test]
async fn garbage_too_much_output_and_a_missing_smartctl_are_unknown() {
    let m = machine();
    m.answer_raw("sda", b"smartctl: this is not JSON\n", 0);
    m.answer_raw("sdb", &vec![b' '; 1024 * 1024 + 1], 0);
    let w = m.watcher(Duration::from_secs(3600), Duration::from_secs(10));
    let all = readings(&w).await;
    let sda = &reading(&all, "/dev/sda").health;
    assert_eq!(sda.state, HealthState::Unknown);
    assert!(
        sda.reasons[0].starts_with("unusable smartctl output: not JSON"),
        "{sda:?}"
    );
    let sdb = &reading(&all, "/dev/sdb").health;
    assert_eq!(sdb.state, HealthState::Unknown);
    assert!(
        sdb.reasons[0].contains("more than 1048576 bytes"),
        "{sdb:?}"
    );
    assert_eq!(
        reading(&all, "/dev/nvme0n1").health.state,
        HealthState::Failing
    );
    let problems = Observation::Smart(all).problems();
    assert_eq!(problems.len(), 2);
    assert!(problems[0].starts_with("/dev/sda: unusable smartctl output"));

    let missing = SmartWatcher::new(SmartWatcherConfig {
        command: vec!["smartctl-not-installed-here".into()],
        sysfs: m.sys(),
        ..SmartWatcherConfig::default()
    });
    let all = readings(&missing).await;
    assert_eq!(all.len(), 3);
    for r in &all {
        assert_eq!(r.health.state, HealthState::Unknown);
        assert_eq!(r.health.reasons, ["smartctl-not-installed-here: not found"]);
    }
}

#[tokio::test]
async fn a_missing_sysfs_is_an_error_not_an_empty_machine() {
    let dir = tempfile::tempdir().unwrap();
    let w = SmartWatcher::new(SmartWatcherConfig {
        sysfs: dir.path().join("nowhere"),
        ..SmartWatcherConfig::default()
    });
    assert!(w.scan().await.is_err());
}

#[tokio::test]
async fn a_disk_read_failing_or_warning_keeps_its_verdict_when_smartctl_then_hangs() {
    let m = machine();
    // Read at every scan (interval zero), killed after a second.
    let w = m.watcher(Duration::ZERO, Duration::from_secs(1));
    let first = readings(&w).await;
    let sda = reading(&first, "/dev/sda").health.clone();
    assert_eq!(sda.state, HealthState::Warning);
    // The dying disk hangs smartctl: it stays `warning`, with the time of the reading
    // and why the last run gave nothing.
    m.hang("sda");
    let after = readings(&w).await;
    let now = &reading(&after, "/dev/sda").health;
    assert_eq!(now.state, HealthState::Warning, "{now:?}");
    assert_eq!(now.checked, sda.checked);
    assert_eq!(
        now.reasons.last().map(String::as_str),
        Some("last read failed: smartctl timed out after 1s")
    );
    assert_eq!(now.reasons[..sda.reasons.len()], sda.reasons[..]);
    // A healthy disk whose run fails is `unknown`, as ever.
    m.answer_raw("sdb", b"not JSON", 0);
    let later = readings(&w).await;
    assert_eq!(
        reading(&later, "/dev/sdb").health.state,
        HealthState::Unknown
    );
    // The reason is not repeated on every failed run.
    let sda_later = &reading(&later, "/dev/sda").health;
    assert_eq!(sda_later.reasons.len(), now.reasons.len(), "{sda_later:?}");
}
