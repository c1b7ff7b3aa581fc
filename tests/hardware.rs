//! Hardware identity end to end, without root: the real daemon reading a fake sysfs tree
//! (the shapes of the kernel's files) beside a fake blkid, and the machine's own `/sys`
//! where it has a disk with a serial number.

use crate::util;

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use util::{wait_for, TestDaemon};

const LONG: Duration = Duration::from_secs(20);
pub const SERIAL: &str = "ZFN0TEST";
const WWN: &str = "naa.5000c500deadbeef";
const SIZE: u64 = 4_000_787_030_016;
const PART_UUID: &str = "5e5e5e5e-0000-4000-8000-000000000002";

/// A fake sysfs: a SATA disk `sdq` (serial, WWN, model) with a partition `sdq1` that blkid
/// does not report and a partition `sdq2` that the fake blkid reports as ext4. Device
/// numbers are ones no real device here has, so nothing on this machine can be mistaken
/// for them; and there is no `/dev/sdq1` to probe, so sdq1 is never called blank (real
/// blank devices: `devices::only_a_device_blkid_probed_and_found_empty_is_blank`).
pub fn fake_sysfs(root: &Path) {
    let dev = root.join("devices/pci0000:00/0000:00:1f.2/ata1/host0/target0:0:0/0:0:0:0");
    let disk = dev.join("block/sdq");
    let write = |p: PathBuf, text: &[u8]| {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    };
    write(dev.join("model"), b"ST4000DM004-2CV1\n");
    write(dev.join("vendor"), b"ATA     \n");
    write(dev.join("wwid"), format!("{WWN}\n").as_bytes());
    let mut vpd = vec![0u8, 0x80, 0, SERIAL.len() as u8];
    vpd.extend_from_slice(SERIAL.as_bytes());
    write(dev.join("vpd_pg80"), &vpd);
    write(disk.join("dev"), b"259:900\n");
    write(disk.join("size"), format!("{}\n", SIZE / 512).as_bytes());
    write(disk.join("removable"), b"0\n");
    write(disk.join("queue/rotational"), b"1\n");
    symlink("../../../0:0:0:0", disk.join("device")).unwrap();
    for (n, sectors) in [(1u32, 2048u64), (2, 4096)] {
        let p = disk.join(format!("sdq{n}"));
        write(p.join("dev"), format!("259:{}\n", 900 + n).as_bytes());
        write(p.join("size"), format!("{sectors}\n").as_bytes());
        write(p.join("partition"), format!("{n}\n").as_bytes());
    }
    let class = root.join("class/block");
    std::fs::create_dir_all(&class).unwrap();
    let rel = "../../devices/pci0000:00/0000:00:1f.2/ata1/host0/target0:0:0/0:0:0:0/block/sdq";
    symlink(rel, class.join("sdq")).unwrap();
    symlink(format!("{rel}/sdq1"), class.join("sdq1")).unwrap();
    symlink(format!("{rel}/sdq2"), class.join("sdq2")).unwrap();
}

pub fn blkid_sdq2() -> String {
    format!("DEVNAME=/dev/sdq2\nUUID={PART_UUID}\nTYPE=ext4\nLABEL=datapart\n\n")
}

/// A daemon reading the fake tree.
fn daemon(dir: &Path) -> TestDaemon {
    let sysfs = dir.join("sys");
    fake_sysfs(&sysfs);
    TestDaemon::new(&blkid_sdq2()).hardware(&sysfs).start()
}

fn list(d: &TestDaemon, args: &[&str]) -> Vec<Value> {
    let mut all = vec!["list", "--json"];
    all.extend_from_slice(args);
    let r = d.client(&all);
    r.json().as_array().cloned().unwrap_or_default()
}

fn by_device<'a>(rows: &'a [Value], device: &str) -> &'a Value {
    rows.iter()
        .find(|r| r["device"] == device)
        .unwrap_or_else(|| panic!("no {device} in {rows:#?}"))
}

#[test]
fn hardware_and_filesystem_merge_into_one_record_per_device() {
    let dir = tempfile::tempdir().unwrap();
    let d = daemon(dir.path());
    wait_for("three records", LONG, || list(&d, &[]).len() == 3);
    let rows = list(&d, &[]);
    let sdq = by_device(&rows, "/dev/sdq");
    assert_eq!(sdq["size"], SIZE, "{sdq}");
    assert_eq!(sdq["model"], "ST4000DM004-2CV1");
    assert_eq!(sdq["vendor"], "ATA");
    assert_eq!(sdq["serial"], SERIAL);
    assert_eq!(sdq["wwn"], WWN);
    assert_eq!(sdq["transport"], "sata");
    assert_eq!(sdq["rotational"], true);
    assert_eq!(sdq["removable"], false);
    assert_eq!(sdq["parent"], Value::Null);
    assert_eq!(sdq["uuid"], Value::Null);
    assert_eq!(sdq["live"], true);
    // The partition blkid knows: its filesystem and its hardware, one record.
    let part = by_device(&rows, "/dev/sdq2");
    assert_eq!(part["uuid"], PART_UUID, "{part}");
    assert_eq!(part["label"], "datapart");
    assert_eq!(part["fstype"], "ext4");
    assert_eq!(part["size"], 4096 * 512);
    assert_eq!(part["parent"], "/dev/sdq");
    assert_eq!(part["transport"], "sata");
    assert_eq!(part["serial"], Value::Null, "the serial is the disk's");
    assert_eq!(part["probe"], "signature");
    let unprobed = by_device(&rows, "/dev/sdq1");
    assert_eq!(unprobed["uuid"], Value::Null);
    assert_eq!(unprobed["size"], 2048 * 512);
    assert_eq!(unprobed["probe"], "failed", "{unprobed}");
    assert_eq!(sdq["probe"], "in_use", "a disk with partitions: {sdq}");

    // `list --blank`: nothing. The disk has partitions; sdq1 could not be probed (no
    // device node), so nobody saw it empty; and status says so.
    let r = d.client(&["list", "--blank", "--json"]);
    r.expect_code(1);
    assert_eq!(r.json(), Value::Array(vec![]));
    let h = d.disks_health();
    assert_eq!(h["state"], "cannot_probe", "{h}");
    assert_eq!(
        h["problems"],
        serde_json::json!(["cannot probe /dev/sdq1: /dev/sdq1 is not the block device 259:901"]),
        "{h}"
    );

    // The table shows sizes in human units.
    let table = d.client(&["list"]);
    table.expect_code(0);
    let header = table
        .stdout()
        .lines()
        .next()
        .unwrap_or_default()
        .to_string();
    assert!(header.contains("SIZE"), "{header}");
    let sdq_line = table
        .stdout()
        .lines()
        .find(|l| l.contains("/dev/sdq "))
        .map(str::to_string)
        .unwrap_or_default();
    assert!(sdq_line.contains("3.6T"), "{sdq_line}");
}

#[test]
fn a_disk_is_found_by_its_serial_or_wwn_in_query_wait_and_history() {
    let dir = tempfile::tempdir().unwrap();
    let d = daemon(dir.path());
    for term in [SERIAL, WWN, "0x5000C500DEADBEEF", "5000c500deadbeef"] {
        wait_for(&format!("query {term}"), LONG, || {
            d.client(&["query", term, "--json"]).code() == 0
        });
        let rows = d.client(&["query", term, "--json"]).json();
        let rows = rows.as_array().unwrap();
        assert_eq!(rows.len(), 1, "{term}: {rows:#?}");
        assert_eq!(rows[0]["device"], "/dev/sdq");
    }
    d.client(&["query", "ZFN0TES"]).expect_code(1);
    d.client(&["wait", SERIAL, "--timeout", "10s", "--json"])
        .expect_code(0);
    let h = d.client(&["history", SERIAL, "--json"]);
    h.expect_code(0);
    assert_eq!(h.json()[0]["device"], "/dev/sdq", "{}", h.stdout());
}

#[test]
fn a_peer_sees_the_hardware_and_what_blkid_made_of_each_device() {
    let dir = tempfile::tempdir().unwrap();
    let sysfs = dir.path().join("sys");
    fake_sysfs(&sysfs);
    let net = util::local_only_multicast("with-hw");
    let mut a = TestDaemon::new(&blkid_sdq2()).hardware(&sysfs);
    a.args.splice(..net.len(), net.clone());
    let _a = a.arg("--announce-interval").arg("2s").start();
    let mut b = TestDaemon::new("");
    let mut b_net = net.clone();
    b_net[1] = "watcher".into();
    b.args.splice(..b_net.len(), b_net);
    let b = b.arg("--announce-interval").arg("2s").start();
    wait_for("b to see a's disk by its serial", LONG, || {
        b.client(&["query", SERIAL, "--json"]).code() == 0
    });
    let rows = b.client(&["query", SERIAL, "--json"]).json();
    let r = &rows[0];
    assert_eq!(r["host"], "with-hw", "{r}");
    assert_eq!(r["size"], SIZE);
    assert_eq!(r["wwn"], WWN);
    assert_eq!(r["model"], "ST4000DM004-2CV1");
    wait_for("b to see a's unprobed partition", LONG, || {
        list(&b, &[])
            .iter()
            .any(|r| r["device"] == "/dev/sdq1" && r["host"] == "with-hw" && r["probe"] == "failed")
    });
    // Nobody saw it empty: not blank on b either.
    b.client(&["list", "--blank", "--json"]).expect_code(1);
    let rows = list(&b, &[]);
    let sdq2 = by_device(&rows, "/dev/sdq2");
    assert_eq!(sdq2["probe"], "signature", "{sdq2}");
}

/// The first block device of this machine whose sysfs directory names a serial number, as
/// `/dev/NAME` and the serial.
fn machine_disk_with_serial() -> Option<(String, String)> {
    let mut names: Vec<_> = std::fs::read_dir("/sys/class/block")
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names.into_iter().find_map(|name| {
        let base = Path::new("/sys/class/block").join(&name);
        ["serial", "device/serial"].iter().find_map(|f| {
            let s = std::fs::read_to_string(base.join(f)).ok()?;
            let s = s.split_whitespace().collect::<Vec<_>>().join(" ");
            let size: u64 = std::fs::read_to_string(base.join("size"))
                .ok()?
                .trim()
                .parse()
                .ok()?;
            (!s.is_empty() && size > 0).then(|| (format!("/dev/{name}"), s))
        })
    })
}

#[test]
fn query_finds_this_machines_disk_by_the_serial_in_sysfs() {
    let Some((device, serial)) = machine_disk_with_serial() else {
        eprintln!("this machine has no block device with a serial in sysfs; nothing to find");
        return;
    };
    let d = TestDaemon::new("")
        .hardware(Path::new("/sys"))
        .arg("--include-device")
        .arg(&device)
        .start();
    wait_for(&format!("query {serial}"), LONG, || {
        d.client(&["query", &serial, "--json"]).code() == 0
    });
    let rows = d.client(&["query", &serial, "--json"]).json();
    assert_eq!(rows[0]["device"], device.as_str(), "{rows}");
    assert_eq!(rows[0]["serial"], serial.as_str());
    assert!(rows[0]["size"].as_u64().unwrap_or(0) > 0, "{rows}");
}
