//! `wait` and `events` across hosts in the network-namespace lab: what one daemon learns
//! from another ends a `wait` and shows in `events`. Needs root: `#[ignore = "needs root"]`,
//! run with `--include-ignored`.

use crate::util;

use std::time::Duration;

use diskd_lab::{disk_line, wait_for, Host, Lab};
use serde_json::Value;
use util::Bg;

const UA: &str = "aaaaaaaa-0000-4000-8000-00000000000a";
const UNEW: &str = "aaaaaaaa-1111-4000-8000-0000000000ee";
const LONG: Duration = Duration::from_secs(30);

/// Long intervals: only change-triggered announces (and goodbyes) explain what b sees.
const QUIET: [&str; 4] = ["--announce-interval", "60s", "--disk-interval", "1h"];

/// Two hosts, a with one disk, b with none, each knowing the other live.
fn two_hosts() -> Lab {
    let mut lab = Lab::new(2, &QUIET);
    lab.host("a")
        .set_disks(&disk_line("/dev/sda1", UA, "disk of a"));
    lab.start_all();
    let b = lab.get("b");
    wait_for("b to know a's disk live", LONG, || {
        b.query(UA).first().is_some_and(|r| r["live"] == true)
    });
    lab
}

/// Start `diskd ARGS` (`events` or `wait`) against `h`'s daemon, and wait until the daemon
/// counts it among its event listeners: from then on it sees every change.
fn start_on(h: &Host, args: &[&str]) -> Bg {
    let listeners = || util::counter(&h.status(), "event_listeners");
    let before = listeners();
    let bg = Bg::spawn(&h.socket(), args);
    wait_for("the command to listen on the daemon", LONG, || {
        listeners() > before
    });
    bg
}

fn refresh(h: &Host, blkid: &str) {
    h.set_disks(blkid);
    h.client(&["refresh"]).expect_code(0);
}

/// `diskd wait` on b, started before the disk exists anywhere, returns when a gets it; and
/// one started while a is away returns when a comes back with it.
#[test]
#[ignore = "needs root"]
fn wait_on_b_returns_when_a_gets_the_disk_and_when_a_comes_back() {
    util::require_root();
    let mut lab = two_hosts();
    let mut w = start_on(
        lab.get("b"),
        &[
            "wait",
            "travel disk",
            "--host",
            "a",
            "--json",
            "--timeout",
            "5m",
        ],
    );
    assert!(
        w.running(),
        "returned before the disk existed: {:?}",
        w.lines()
    );
    refresh(
        lab.get("a"),
        &format!(
            "{}{}",
            disk_line("/dev/sda1", UA, "disk of a"),
            disk_line("/dev/sdz1", UNEW, "travel disk")
        ),
    );
    let status = w.finish();
    assert_eq!(status.code(), Some(0), "{}", w.stderr());
    let v: Value = serde_json::from_str(&w.lines().join("\n")).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v[0]["uuid"], UNEW);
    assert_eq!(v[0]["host"], "a");
    assert_eq!(v[0]["addr"], "198.18.0.1");
    assert_eq!(v[0]["device"], "/dev/sdz1");
    assert_eq!(v[0]["live"], true);

    // a stops (with a goodbye): its disk is a last known location on b, which `wait` does
    // not take for an answer; a's return with the disk ends the wait.
    lab.host("a").stop();
    let b = lab.get("b");
    wait_for("a's disks not live on b", LONG, || {
        b.query(UNEW).first().is_some_and(|r| r["live"] == false)
    });
    let mut w = start_on(b, &["wait", UNEW, "--timeout", "5m"]);
    assert!(
        w.running(),
        "returned for a last-known disk: {:?}",
        w.lines()
    );
    lab.host("a").start();
    let status = w.finish();
    assert_eq!(status.code(), Some(0), "{}", w.stderr());
    let out = w.lines().join("\n");
    assert!(out.contains(UNEW) && out.contains(" live "), "{out}");
}

/// `diskd events --json` on b shows a's disk appear and vanish, then a lost when it stops.
#[test]
#[ignore = "needs root"]
fn events_on_b_show_what_happens_on_a() {
    util::require_root();
    let mut lab = two_hosts();
    let ev = start_on(lab.get("b"), &["events", "--json"]);
    let a = lab.get("a");
    let only_ua = disk_line("/dev/sda1", UA, "disk of a");
    refresh(
        a,
        &format!("{only_ua}{}", disk_line("/dev/sdz1", UNEW, "new on a")),
    );
    wait_for("appeared on b", LONG, || has(&ev, "appeared", UNEW));
    refresh(a, &only_ua);
    wait_for("vanished on b", LONG, || has(&ev, "vanished", UNEW));
    lab.host("a").stop();
    wait_for("peer-lost on b", LONG, || {
        ev.objects().iter().any(|o| o["event"] == "peer-lost")
    });
    let all = ev.objects();
    let at = |kind: &str, uuid: Option<&str>| {
        all.iter()
            .position(|o| o["event"] == kind && uuid.is_none_or(|u| o["uuid"] == u))
            .unwrap_or_else(|| panic!("no {kind} in {all:#?}"))
    };
    let (appeared, vanished, lost) = (
        at("appeared", Some(UNEW)),
        at("vanished", Some(UNEW)),
        at("peer-lost", None),
    );
    assert!(appeared < vanished && vanished < lost, "{all:#?}");
    let new = &all[appeared];
    assert_eq!(new["host"], "a");
    assert_eq!(new["addr"], "198.18.0.1");
    assert_eq!(new["label"], "new on a");
    assert_eq!(new["device"], "/dev/sdz1");
    assert_eq!(new["local"], false);
    let lost = &all[lost];
    assert_eq!(lost["node"], "a");
    assert_eq!(lost["addr"], "198.18.0.1");
    assert_eq!(lost["local"], false);
    assert_eq!(lost["node_id"].as_str().map(str::len), Some(32), "{lost}");
    // Each change once: one appeared and one vanished of the new disk, one peer-lost (a's
    // other disk vanishes with it, as its host was lost).
    let count = |kind: &str, uuid: Option<&str>| {
        all.iter()
            .filter(|o| o["event"] == kind && uuid.is_none_or(|u| o["uuid"] == u))
            .count()
    };
    assert_eq!(count("appeared", Some(UNEW)), 1, "{all:#?}");
    assert_eq!(count("vanished", Some(UNEW)), 1, "{all:#?}");
    assert_eq!(count("peer-lost", None), 1, "{all:#?}");
    wait_for("a's disk vanished with a", LONG, || {
        has(&ev, "vanished", UA)
    });
}

fn has(ev: &Bg, kind: &str, uuid: &str) -> bool {
    ev.objects()
        .iter()
        .any(|o| o["event"] == kind && o["uuid"] == uuid)
}
