//! Disk health end to end, without root: the real daemon reading a fake sysfs tree (a SATA
//! disk `sdq` with two partitions) and running a fake smartctl that prints what a test
//! writes for each device, as smartmontools 7 prints it with `--json`.

use crate::hardware::{blkid_sdq2, fake_sysfs, SERIAL};
use crate::util;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use util::{wait_for, TestDaemon};

const LONG: Duration = Duration::from_secs(30);

/// A fake smartctl: logs its argv, prints `DIR/smart/NAME.json` for the device named by its
/// last argument and exits with `DIR/smart/NAME.rc` (0 without one); a device without a
/// file is "No such device" (exit 2), as smartctl says it.
pub fn fake_smartctl(dir: &Path) -> PathBuf {
    let data = dir.join("smart");
    std::fs::create_dir_all(&data).unwrap();
    let path = dir.join("smartctl");
    util::script(
        &path,
        &format!(
            "for a; do dev=\"$a\"; done\n\
             name=$(basename \"$dev\")\n\
             echo \"$*\" >> {d}/argv.log\n\
             [ -f {d}/$name.json ] || {{ echo \"Smartctl open device: $dev failed: No such device\" >&2; exit 2; }}\n\
             cat {d}/$name.json\n\
             exit $(cat {d}/$name.rc 2>/dev/null || echo 0)\n",
            d = data.display()
        ),
    );
    path
}

/// What the fake smartctl prints for `name` next (written whole, then renamed: a read
/// never sees half a file).
pub fn smart_says(smartctl: &Path, name: &str, json: &str, rc: i32) {
    let data = smartctl.parent().unwrap().join("smart");
    let tmp = data.join(format!(".{name}.tmp"));
    std::fs::write(data.join(format!("{name}.rc")), rc.to_string()).unwrap();
    std::fs::write(&tmp, json).unwrap();
    std::fs::rename(tmp, data.join(format!("{name}.json"))).unwrap();
}

/// An ATA disk's `smartctl --json -a` output (the fields the verdict reads), with these
/// raw values of attributes 5 (reallocated) and 197 (pending).
pub fn ata(passed: bool, reallocated: u64, pending: u64) -> String {
    let attr = |id: u32, name: &str, raw: u64| {
        format!(
            r#"{{"id": {id}, "name": "{name}", "value": 100, "worst": 100, "thresh": 10,
                "when_failed": "", "flags": {{"value": 51, "string": "PO--CK ", "prefailure": true}},
                "raw": {{"value": {raw}, "string": "{raw}"}}}}"#
        )
    };
    format!(
        r#"{{"json_format_version": [1, 0],
  "smartctl": {{"version": [7, 3], "argv": ["smartctl", "--json", "-a", "/dev/sdq"], "exit_status": {status}}},
  "device": {{"name": "/dev/sdq", "info_name": "/dev/sdq [SAT]", "type": "sat", "protocol": "ATA"}},
  "model_name": "ST4000DM004-2CV1", "serial_number": "{SERIAL}",
  "smart_status": {{"passed": {passed}}},
  "ata_smart_attributes": {{"revision": 10, "table": [{a5}, {a9}, {a194}, {a197}]}},
  "power_on_time": {{"hours": 31207}},
  "temperature": {{"current": 41}}}}"#,
        status = if passed { 0 } else { 8 },
        a5 = attr(5, "Reallocated_Sector_Ct", reallocated),
        a9 = attr(9, "Power_On_Hours", 31207),
        a194 = attr(194, "Temperature_Celsius", 41),
        a197 = attr(197, "Current_Pending_Sector", pending),
    )
}

/// A daemon (not started) reading the fake sysfs's disk `sdq` with a fake smartctl that
/// prints `json` for it; and that smartctl, to change what it prints.
pub fn sdq_daemon(dir: &Path, json: &str) -> (TestDaemon, PathBuf) {
    let sysfs = dir.join("sys");
    fake_sysfs(&sysfs);
    let smartctl = fake_smartctl(dir);
    smart_says(&smartctl, "sdq", json, 0);
    let d = TestDaemon::new(&blkid_sdq2())
        .hardware(&sysfs)
        .smart(&smartctl);
    (d, smartctl)
}

fn list(d: &TestDaemon) -> Vec<Value> {
    d.client(&["list", "--json"])
        .json()
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn state_of(d: &TestDaemon, device: &str) -> Value {
    list(d)
        .into_iter()
        .find(|r| r["device"] == device)
        .map(|r| r["health"]["state"].clone())
        .unwrap_or(Value::Null)
}

#[test]
fn a_disks_reading_shows_on_its_partitions_and_health_check_says_when_to_worry() {
    let dir = tempfile::tempdir().unwrap();
    let (d, smartctl) = sdq_daemon(dir.path(), &ata(true, 8, 0));
    let d = d.arg("--smart-interval").arg("1s").start();
    wait_for("sdq's reading", LONG, || {
        state_of(&d, "/dev/sdq") == "warning"
    });

    // The whole disk is read, with the device last; its partitions never are.
    let argv = std::fs::read_to_string(dir.path().join("smart/argv.log")).unwrap();
    let first = argv.lines().next().unwrap();
    assert!(first.ends_with("-n standby /dev/sdq"), "{argv}");
    assert!(first.starts_with("--json"), "{argv}");
    assert!(!argv.contains("sdq1") && !argv.contains("sdq2"), "{argv}");

    let rows = list(&d);
    let sdq = rows.iter().find(|r| r["device"] == "/dev/sdq").unwrap();
    let h = &sdq["health"];
    assert_eq!(h["reallocated_sectors"], 8, "{h}");
    assert_eq!(h["pending_sectors"], 0, "{h}");
    assert_eq!(h["temperature_c"], 41, "{h}");
    assert_eq!(h["power_on_hours"], 31207, "{h}");
    assert_eq!(
        h["media_errors"],
        Value::Null,
        "an ATA disk has no NVMe figures: {h}"
    );
    assert!(
        h["checked"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{h}"
    );
    assert!(
        h["reasons"].to_string().contains("reallocated"),
        "the reason names what fired: {h}"
    );
    // Partitions show their disk's reading.
    for part in ["/dev/sdq1", "/dev/sdq2"] {
        let p = rows.iter().find(|r| r["device"] == part).unwrap();
        assert_eq!(p["health"]["state"], "warning", "{p}");
    }
    // Not mounted: no capacity figures.
    assert_eq!(sdq["fs_size"], Value::Null);

    // `health`: one row for the disk and its partitions.
    let r = d.client(&["health", "--json"]);
    r.expect_code(0);
    let rows = r.json();
    assert_eq!(rows.as_array().map(Vec::len), Some(1), "{rows}");
    assert_eq!(rows[0]["device"], "/dev/sdq");
    assert_eq!(rows[0]["serial"], SERIAL);
    assert_eq!(rows[0]["state"], "warning");
    assert_eq!(rows[0]["model"], "ST4000DM004-2CV1");
    // The term may be the partition's filesystem: its disk answers.
    let by_label = d.client(&["health", "datapart", "--json"]).json();
    assert_eq!(by_label[0]["device"], "/dev/sdq", "{by_label}");
    d.client(&["health", "no-such-disk"]).expect_code(1);
    let table = d.client(&["list"]).stdout();
    assert!(
        table.lines().next().unwrap().contains("USE%  HEALTH"),
        "{table}"
    );
    // --check: exit 1 while a disk needs attention.
    d.client(&["health", "--check"]).expect_code(1);

    // Watching the fleet's events from here on.
    let events = d.listening(&["events", "--json"]);

    // The disk fails: one health-changed event, with the state before.
    smart_says(&smartctl, "sdq", &ata(false, 8, 3), 8);
    wait_for("sdq failing", LONG, || {
        state_of(&d, "/dev/sdq") == "failing"
    });
    let health_events = |events: &util::Bg| -> Vec<Value> {
        events
            .objects()
            .into_iter()
            .filter(|e| e["event"] == "health-changed")
            .collect()
    };
    wait_for("the health-changed event", LONG, || {
        !health_events(&events).is_empty()
    });
    // Later readings of the same verdict (one a second) say nothing more.
    let scans = |d: &TestDaemon| {
        d.status_json()["watchers"]["smart"]["scans_ok"]
            .as_u64()
            .unwrap_or(0)
    };
    let now = scans(&d);
    wait_for("three more SMART passes", LONG, || scans(&d) >= now + 3);
    let ev = health_events(&events);
    assert_eq!(ev.len(), 1, "once per change, once per disk: {ev:#?}");
    assert_eq!(ev[0]["device"], "/dev/sdq");
    assert_eq!(ev[0]["health"]["state"], "failing");
    assert_eq!(ev[0]["health_was"], "warning");
    assert_eq!(ev[0]["local"], true);

    // A failing disk whose smartctl then prints garbage stays failing: a dying disk must
    // not fall silent. Why the run failed joins its reasons.
    smart_says(&smartctl, "sdq", "this is not JSON\n", 0);
    let reasons = |d: &TestDaemon| -> String {
        list(d)
            .into_iter()
            .find(|r| r["device"] == "/dev/sdq")
            .map(|r| r["health"]["reasons"].to_string())
            .unwrap_or_default()
    };
    wait_for("the failed run in sdq's reasons", LONG, || {
        reasons(&d).contains("last read failed")
    });
    assert_eq!(state_of(&d, "/dev/sdq"), "failing");
    // Healthy again, then garbage: the disk's health is unknown, status says why, and the
    // log says it once.
    smart_says(&smartctl, "sdq", &ata(true, 0, 0), 0);
    wait_for("sdq ok", LONG, || state_of(&d, "/dev/sdq") == "ok");
    smart_says(&smartctl, "sdq", "this is not JSON\n", 0);
    wait_for("sdq unknown", LONG, || {
        state_of(&d, "/dev/sdq") == "unknown"
    });
    let now = scans(&d);
    wait_for("three more SMART passes", LONG, || scans(&d) >= now + 3);
    let smart = &d.status_json()["watchers"]["smart"];
    assert_eq!(smart["state"], "cannot_read", "{smart}");
    assert!(
        smart["problems"].to_string().contains("/dev/sdq"),
        "{smart}"
    );
    let log = d.log_text();
    assert_eq!(
        log.matches("health unknown").count(),
        1,
        "one log line per change of state, not per scan:\n{log}"
    );
    // `unknown` is not trouble: --check is quiet.
    d.client(&["health", "--check"]).expect_code(0);

    // The trend: the disk's readings, kept with its history (the partition's filesystem
    // names it), newest first: unknown, ok, failing, and warning ones.
    let stays = d.client(&["history", "datapart", "--json"]).json();
    let readings: Vec<&str> = stays[0]["health"]
        .as_array()
        .unwrap_or_else(|| panic!("no readings in {stays}"))
        .iter()
        .map(|r| r["state"].as_str().unwrap())
        .collect();
    assert_eq!(readings.first(), Some(&"unknown"), "{readings:?}");
    assert_eq!(readings.last(), Some(&"warning"), "{readings:?}");
    assert!(readings.contains(&"failing"), "{readings:?}");
    assert!(readings.contains(&"ok"), "{readings:?}");
    assert!(readings.len() <= 64, "{readings:?}");
    let newest_first = stays[0]["health"].as_array().unwrap();
    assert!(
        newest_first
            .windows(2)
            .all(|w| w[0]["checked"].as_str() >= w[1]["checked"].as_str()),
        "{stays}"
    );
    assert_eq!(newest_first.last().unwrap()["reallocated_sectors"], 8);
}

#[test]
fn without_smartctl_an_explicitly_enabled_watcher_says_so_for_each_disk() {
    let dir = tempfile::tempdir().unwrap();
    let sysfs = dir.path().join("sys");
    fake_sysfs(&sysfs);
    let missing = dir.path().join("no-such-smartctl");
    let d = TestDaemon::new(&blkid_sdq2())
        .hardware(&sysfs)
        .smart(&missing)
        .start();
    wait_for("sdq unknown", LONG, || {
        state_of(&d, "/dev/sdq") == "unknown"
    });
    let rows = list(&d);
    let sdq = rows.iter().find(|r| r["device"] == "/dev/sdq").unwrap();
    assert!(
        sdq["health"]["reasons"].to_string().contains("not found"),
        "{sdq}"
    );
    let smart = &d.status_json()["watchers"]["smart"];
    assert_eq!(smart["state"], "cannot_read", "{smart}");
}
