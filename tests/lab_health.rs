//! Health and capacity across hosts in the network-namespace lab: a disk turning `failing`
//! on A runs B's `health-changed` hook once, with its health in the environment; and a
//! real loop filesystem mounted on A shows with its size and free space in `diskd df` on
//! both hosts. Needs root.

use crate::hardware::{blkid_sdq2, fake_sysfs, SERIAL};
use crate::health::{ata, fake_smartctl, smart_says};
use crate::hooks::{recorder, runs, wait_runs};
use crate::util;
use crate::wait_events::Loop;

use std::time::Duration;

use diskd_lab::wait_for;
use serde_json::Value;

const LONG: Duration = Duration::from_secs(30);

/// `df -B1`'s size, used and available bytes of the filesystem at `mnt`: what statvfs says,
/// asked by another program.
fn df(mnt: &str) -> (u64, u64, u64) {
    let out = util::system("df", &["-B1", "--output=size,used,avail", mnt]);
    let figures: Vec<u64> = out
        .lines()
        .nth(1)
        .unwrap_or_else(|| panic!("df printed {out:?}"))
        .split_whitespace()
        .map(|n| n.parse().unwrap())
        .collect();
    (figures[0], figures[1], figures[2])
}

/// The health state of host `of`'s `device`, as `list --json` on `lab_host` shows it.
fn state(lab: &diskd_lab::Lab, on: &str, of: &str, device: &str) -> Value {
    let rows = lab.get(on).client(&["list", "--json"]).json();
    rows.as_array()
        .into_iter()
        .flatten()
        .find(|r| r["host"] == of && r["device"] == device)
        .map(|r| r["health"]["state"].clone())
        .unwrap_or(Value::Null)
}

#[test]
#[ignore = "needs root"]
fn a_failing_disk_on_a_runs_bs_hook_once_and_df_shows_a_real_filesystem_on_both() {
    util::require_root();
    // A real ext4 on a loop device, mounted before the daemons start: each daemon's mount
    // namespace (`ip netns exec`) is a copy of this one, so both see the mount.
    let mut fs = Loop::new();
    let mnt = fs.mount();
    let (keys, _, mut lab) = util::keyed_lab(2, &["--announce-interval", "2s"]);
    let _keys = keys;

    // A: the fake sysfs's disk sdq read by a fake smartctl once a second, the loop device.
    let a_dir = lab.host("a").dir.clone();
    let sysfs = a_dir.join("sys");
    fake_sysfs(&sysfs);
    let smartctl = fake_smartctl(&a_dir);
    smart_says(&smartctl, "sdq", &ata(true, 0, 0), 0);
    {
        let a = lab.host("a");
        a.hardware = true;
        a.args.extend(
            [
                "--sysfs",
                sysfs.to_str().unwrap(),
                "--smartctl",
                smartctl.to_str().unwrap(),
                "--smart-interval",
                "1s",
                // Only the fake tree's devices and the loop device: not this machine's.
                "--include-device",
                "/dev/sdq*",
                "--include-device",
                &fs.dev,
            ]
            .map(String::from),
        );
    }
    lab.host("a").set_disks(&format!(
        "{}DEVNAME={}\nUUID={}\nLABEL=diskd-wait\nTYPE=ext4\n\n",
        blkid_sdq2(),
        fs.dev,
        fs.uuid
    ));

    // B: a hook for failing disks, and one for any change of health.
    let b_dir = lab.host("b").dir.clone();
    let rec = recorder(&b_dir);
    let config = b_dir.join("diskd.yaml");
    std::fs::write(
        &config,
        format!(
            "hooks:\n\
             \x20 - {{on: [health-changed], health: [failing], run: [{r}, failing]}}\n\
             \x20 - {{on: [health-changed], run: [{r}, any]}}\n",
            r = rec.display()
        ),
    )
    .unwrap();
    lab.host("b")
        .args
        .extend(["--config".to_string(), config.display().to_string()]);
    lab.start_all();

    // B knows A's disk as healthy: a first reading that is ok runs nothing.
    wait_for("A's sdq ok on B", LONG, || {
        state(&lab, "b", "a", "/dev/sdq") == "ok"
    });

    // df on both hosts: A's real filesystem, with what statvfs says of it.
    let (size, used, avail) = df(&mnt);
    for host in ["a", "b"] {
        let row = |lab: &diskd_lab::Lab| -> Option<Value> {
            let rows = lab.get(host).client(&["df", "--json"]).json();
            rows.as_array()?
                .iter()
                .find(|r| r["host"] == "a" && r["device"] == fs.dev.as_str())
                .cloned()
        };
        wait_for(&format!("A's loop filesystem in {host}'s df"), LONG, || {
            row(&lab).is_some()
        });
        let r = row(&lab).unwrap();
        assert_eq!(r["mountpoint"], mnt.as_str(), "{r}");
        assert_eq!(r["fs_size"], size, "{r}");
        assert_eq!(r["fs_used"], used, "{r}");
        assert_eq!(r["fs_avail"], avail, "{r}");
        assert_eq!(r["uuid"], fs.uuid.as_str(), "{r}");
        let table = lab.get(host).client(&["df"]).stdout();
        assert!(table.contains(&fs.dev) && table.contains("USE%"), "{table}");
    }

    // The disk fails on A: B's hooks run once each, with its health.
    smart_says(&smartctl, "sdq", &ata(false, 8, 0), 8);
    let failing = wait_runs(&b_dir, "failing", 1);
    let run = &failing[0];
    assert_eq!(run["DISKD_EVENT"], "health-changed");
    assert_eq!(run["DISKD_HOST"], "a");
    assert_eq!(run["DISKD_DEVICE"], "/dev/sdq");
    assert_eq!(run["DISKD_SERIAL"], SERIAL);
    assert_eq!(run["DISKD_HEALTH"], "failing");
    assert_eq!(run["DISKD_HEALTH_WAS"], "ok");
    assert_eq!(run["DISKD_SEALED"], "1");
    wait_runs(&b_dir, "any", 1);

    // A reads the disk every second and tells B each new reading: B has seen three more
    // (the `checked` time it shows moved three times), and still ran each hook once.
    let checked = |lab: &diskd_lab::Lab| -> Option<String> {
        let rows = lab.get("b").client(&["list", "--json"]).json();
        rows.as_array()?
            .iter()
            .find(|r| r["host"] == "a" && r["device"] == "/dev/sdq")
            .and_then(|r| r["health"]["checked"].as_str().map(str::to_string))
    };
    let mut seen = vec![checked(&lab)];
    wait_for("three more readings on B", LONG, || {
        let now = checked(&lab);
        if seen.last() != Some(&now) {
            seen.push(now);
        }
        seen.len() >= 4
    });
    assert_eq!(runs(&b_dir, "failing").len(), 1, "once per change");
    assert_eq!(runs(&b_dir, "any").len(), 1, "once per change");
    assert_eq!(
        state(&lab, "b", "a", "/dev/sdq2"),
        "failing",
        "the partition shows its disk's"
    );
    drop(lab);
    drop(fs);
}
