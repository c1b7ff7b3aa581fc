//! Hooks across hosts in the network-namespace lab: a disk that appears on A runs B's hook
//! once, with the right environment; not again when A re-announces or B restarts; a
//! `vanished` hook when it goes; a hostile label crossing the wire runs nothing. Needs root.

use crate::hooks::{export_disk, recorder, runs, wait_runs};
use crate::util;

use std::path::Path;
use std::time::Duration;

use diskd_lab::{wait_for, Lab};

const LONG: Duration = Duration::from_secs(30);
const UUID: &str = "abcdef01-0000-4000-8000-0000000000aa";
const OTHER: &str = "abcdef01-0000-4000-8000-0000000000bb";

/// Give host `name` a config file with these hooks.
fn hooks_on(lab: &mut Lab, name: &str, hooks_yaml: &str) {
    let h = lab.host(name);
    let file = h.dir.join("diskd.yaml");
    std::fs::write(&file, format!("hooks:\n{hooks_yaml}")).unwrap();
    let f = file.to_string_lossy().into_owned();
    h.args.extend(["--config".to_string(), f]);
}

fn packets_received(h: &diskd_lab::Host) -> u64 {
    h.status()["counters"]["packets_received"]
        .as_u64()
        .unwrap_or(0)
}

/// Let `h` receive `n` more datagrams, so whatever they could have set off has happened.
fn let_packets_arrive(h: &diskd_lab::Host, n: u64) {
    let base = packets_received(h);
    wait_for(&format!("{n} more datagrams on {}", h.name), LONG, || {
        packets_received(h) >= base + n
    });
    // The last one may still be being applied; hooks start within milliseconds of it.
    std::thread::sleep(Duration::from_millis(500));
}

#[test]
#[ignore = "needs root"]
fn a_disk_appearing_on_a_runs_bs_hook_once_and_vanishing_runs_the_vanished_hook() {
    util::require_root();
    // A long expiry: B's restart below must find A still live, as it would in a real fleet
    // restarting one daemon; announces every 2 s give plenty of re-announces.
    let mut lab = Lab::new(2, &["--announce-interval", "2s", "--peer-expiry", "60s"]);
    let dir = lab.host("b").dir.clone();
    let rec = recorder(&dir);
    let r = rec.display();
    hooks_on(
        &mut lab,
        "b",
        &format!(
            "  - {{on: [appeared], match: 'lab-backup*', run: [{r}, appeared]}}\n\
             \x20 - {{on: [vanished], match: 'lab-backup*', run: [{r}, vanished]}}\n\
             \x20 - {{on: [appeared, vanished], local: true, run: [{r}, local]}}\n\
             \x20 - {{on: [peer-live], host: a, run: [{r}, peer-live]}}\n\
             \x20 - {{on: [peer-live], host: 'not-*', run: [{r}, never]}}\n"
        ),
    );
    lab.start_all();
    let peer_live = wait_runs(&dir, "peer-live", 1);
    assert_eq!(peer_live[0]["DISKD_EVENT"], "peer-live");
    assert_eq!(peer_live[0]["DISKD_HOST"], "a");
    assert_eq!(peer_live[0]["DISKD_ADDR"], "198.18.0.1");
    assert_eq!(peer_live[0]["DISKD_UUID"], "");
    assert_eq!(peer_live[0]["DISKD_LABEL"], "");
    assert_eq!(peer_live[0]["DISKD_LOCAL"], "0");
    assert_eq!(peer_live[0]["DISKD_NODE"], "b");

    // A gets the disk (and one that does not match).
    lab.host("a").set_disks(&format!(
        "{}{}",
        diskd_lab::disk_line("/dev/sdz1", UUID, "lab-backup-1"),
        diskd_lab::disk_line("/dev/sdz2", OTHER, "photos")
    ));
    lab.host("a").client(&["refresh"]).expect_code(0);
    let v = &wait_runs(&dir, "appeared", 1)[0];
    let want = [
        ("DISKD_EVENT", "appeared"),
        ("DISKD_HOST", "a"),
        ("DISKD_ADDR", "198.18.0.1"),
        ("DISKD_UUID", UUID),
        ("DISKD_LABEL", "lab-backup-1"),
        ("DISKD_DEVICE", "/dev/sdz1"),
        ("DISKD_FSTYPE", "ext4"),
        ("DISKD_MOUNTPOINT", ""),
        ("DISKD_LOCAL", "0"),
        ("DISKD_NODE", "b"),
        ("ARGC", "1"),
    ];
    for (k, val) in want {
        assert_eq!(v[k], val, "{k} in {v:#?}");
    }
    assert_eq!(v["DISKD_SOCKET"], lab.host("b").socket().to_string_lossy());
    assert!(v["DISKD_TIME"].ends_with('Z'), "{v:#?}");

    // Re-announces (forced, and the periodic ones) change nothing: no second run.
    lab.host("a").client(&["announce"]).expect_code(0);
    let_packets_arrive(lab.get("b"), 3);
    assert_eq!(
        runs(&dir, "appeared").len(),
        1,
        "a re-announce ran the hook again"
    );

    // A restart of B: the disk was live before and is live after: no second run, and
    // A's liveness did not change either.
    let before = lab.get("b").status()["hooks"].clone();
    assert_eq!(before[0]["runs"], 1, "{before}");
    lab.host("b").stop();
    lab.host("b").start();
    let b = lab.get("b");
    wait_for("b to hear a again", LONG, || {
        b.peers()
            .iter()
            .any(|p| p["node"] == "a" && p["live"] == true)
    });
    let_packets_arrive(b, 3);
    assert_eq!(
        runs(&dir, "appeared").len(),
        1,
        "b's restart ran the hook again"
    );
    assert_eq!(
        runs(&dir, "peer-live").len(),
        1,
        "b's restart made a peer-live"
    );
    assert_eq!(
        b.status()["hooks"][0]["runs"],
        0,
        "counters are per run of the daemon"
    );

    // A clean restart of A, the disk's host (an upgrade): it says goodbye and is back
    // within the grace, so nothing changed for the fleet and no hook runs again.
    lab.host("a").stop();
    lab.host("a").start();
    let b = lab.get("b");
    let_packets_arrive(b, 3);
    std::thread::sleep(Duration::from_secs(6)); // past the goodbye grace
    assert_eq!(
        runs(&dir, "appeared").len(),
        1,
        "a's restart ran the appeared hook again"
    );
    assert!(
        runs(&dir, "vanished").is_empty(),
        "a's restart ran the vanished hook"
    );

    // The disk goes: the vanished hook runs, once, with the disk as it was.
    lab.host("a")
        .set_disks(&diskd_lab::disk_line("/dev/sdz2", OTHER, "photos"));
    lab.host("a").client(&["refresh"]).expect_code(0);
    let v = &wait_runs(&dir, "vanished", 1)[0];
    assert_eq!(v["DISKD_EVENT"], "vanished");
    assert_eq!(v["DISKD_UUID"], UUID);
    assert_eq!(v["DISKD_LABEL"], "lab-backup-1");
    assert_eq!(v["DISKD_HOST"], "a");
    let_packets_arrive(lab.get("b"), 2);
    assert_eq!(runs(&dir, "vanished").len(), 1);
    assert_eq!(runs(&dir, "appeared").len(), 1);
    // Nothing of A's is local to B; no peer is called not-*.
    assert!(runs(&dir, "local").is_empty());
    assert!(runs(&dir, "never").is_empty());
    let st = lab.get("b").status();
    for h in st["hooks"].as_array().unwrap() {
        assert_eq!(h["failures"], 0, "{st}");
        assert_eq!(h["dropped"], 0, "{st}");
    }
}

#[test]
#[ignore = "needs root"]
fn a_hostile_label_from_a_peer_reaches_the_hook_verbatim_and_runs_nothing() {
    util::require_root();
    let mut lab = Lab::new(2, &["--announce-interval", "2s"]);
    let b_dir = lab.host("b").dir.clone();
    let a_dir = lab.host("a").dir.clone();
    let pwned = b_dir.join("pwned");
    let p = pwned.display();
    let hostile = format!(
        "x'; touch {p}1 $(touch {p}2) \"`touch {p}3`\n$(id) ; touch {p}4 # \\ > {p}5 \"$$\""
    );
    assert!(
        hostile.len() <= 256,
        "the wire takes labels up to 256 bytes"
    );
    for (name, dir, local) in [("a", &a_dir, "true"), ("b", &b_dir, "false")] {
        let rec = recorder(dir);
        hooks_on(
            &mut lab,
            name,
            &format!(
                "  - {{on: [appeared], local: {local}, run: [{}, appeared]}}\n",
                rec.display()
            ),
        );
    }
    let blkid = lab.host("a").blkid.clone();
    std::fs::write(
        blkid.with_extension("out"),
        export_disk("/dev/sdh1", UUID, hostile.as_bytes()),
    )
    .unwrap();
    lab.start_all();
    // On A (a local disk) and on B (it crossed the wire).
    for (dir, host_local) in [(&a_dir, "1"), (&b_dir, "0")] {
        let v = &wait_runs(dir, "appeared", 1)[0];
        assert_eq!(v["DISKD_LABEL"], hostile, "{v:#?}");
        assert_eq!(v["DISKD_UUID"], UUID);
        assert_eq!(v["DISKD_HOST"], "a");
        assert_eq!(v["DISKD_LOCAL"], host_local);
        assert_eq!(v["ARGC"], "1");
    }
    for i in 1..=5 {
        let f = format!("{p}{i}");
        assert!(!Path::new(&f).exists(), "{f} exists: a label ran a command");
    }
    for h in ["a", "b"] {
        let st = lab.get(h).status();
        assert_eq!(st["hooks"][0]["runs"], 1, "{st}");
        assert_eq!(st["hooks"][0]["failures"], 0, "{st}");
    }
}
