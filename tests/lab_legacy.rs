//! Mixed fleets: Perl diskd datagrams in and out (`--legacy`), in the lab. Needs root.
//! The Perl side is played by raw datagrams from python3, and our own legacy datagrams are
//! parsed back with python3-yaml, a YAML parser independent of ours.

use crate::util;
use util::counter;

use std::process::{Command, Stdio};
use std::time::Duration;

use diskd_lab as lab;
use lab::{disk_line, sh, wait_for, Lab};

const LONG: Duration = Duration::from_secs(20);
/// The daemon's longest random delay before answering a ping (`peer::pacer::PING_JITTER_MS`), plus a margin for the send.
const PING_JITTER: Duration = Duration::from_millis(diskd::peer::pacer::PING_JITTER_MS + 200);
const UA: &str = "aaaaaaaa-0000-4000-8000-00000000000a";
const PERL_UUID: &str = "6fe176fb-83a0-4e4a-af6a-f578ca7a1f65";

fn perl_datagram() -> String {
    format!("diskd:---\n- - {PERL_UUID}\n  - backup\n  - /dev/sdb1\n- - ~\n  - ~\n  - /dev/sdc1\n")
}

/// Send `datagram` `times` times from namespace `ns`, paced 50 ms apart (pacing: a Perl
/// daemon does not send in bursts).
fn send_from(ns: &str, datagram: &str, times: usize) {
    let script = format!(
        "import socket,time\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n\
         s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n\
         s.setsockopt(socket.IPPROTO_IP,socket.IP_MULTICAST_TTL,1)\n\
         for i in range({times}):\n    s.sendto({:?}.encode(),('230.1.2.3',32003))\n    time.sleep(0.05)\n",
        datagram
    );
    sh(&["ip", "netns", "exec", ns, "python3", "-c", &script]);
}

#[test]
#[ignore = "needs root"]
fn perl_datagrams_are_listed_only_with_legacy_on() {
    util::require_root();
    let mut lab = Lab::new(3, &["--announce-interval", "1s"]);
    lab.host("a").args.push("--legacy".into());
    lab.host("a")
        .set_disks(&disk_line("/dev/sda1", UA, "disk of a"));
    lab.host("a").start();
    lab.host("b").start();
    let perl_ns = lab.hosts[2].ns.clone();
    send_from(&perl_ns, &perl_datagram(), 3);
    let a = lab.host("a");
    wait_for("a to list the Perl daemon's disk", LONG, || {
        !a.query(PERL_UUID).is_empty()
    });
    let row = &a.query(PERL_UUID)[0];
    assert_eq!(row["host"], "198.18.0.3");
    assert_eq!(row["addr"], "198.18.0.3");
    assert_eq!(row["label"], "backup");
    assert_eq!(row["device"], "/dev/sdb1");
    assert_eq!(row["fstype"], serde_json::Value::Null);
    assert_eq!(row["live"], true);
    let all = a.client(&["list", "--host", "198.18.0.3", "--json"]).json();
    assert_eq!(all.as_array().unwrap().len(), 2);
    let peers = a.peers();
    let perl = peers
        .iter()
        .find(|p| p["node"] == "198.18.0.3")
        .expect("perl peer listed");
    assert_eq!(perl["legacy"], true);
    assert_eq!(perl["disks"], 2);
    // The Perl daemon replaces its whole list with every datagram: a disk it no longer
    // sends becomes a last known location.
    send_from(&perl_ns, "diskd:---\n- - ~\n  - ~\n  - /dev/sdc1\n", 1);
    wait_for("the dropped disk to be last-known", LONG, || {
        a.query(PERL_UUID)
            .first()
            .is_some_and(|r| r["live"] == false)
    });
    // b, without --legacy, drops them and counts them.
    let b = lab.host("b");
    assert!(b.query(PERL_UUID).is_empty());
    assert!(
        b.status()["counters"]["rejected_by_reason"]["legacy"]
            .as_u64()
            .unwrap_or(0)
            >= 3
    );
    // Garbage behind the prefix is rejected and counted, not listed.
    send_from(&perl_ns, "diskd:--- {not: [a, list", 1);
    let a = lab.host("a");
    wait_for("a to count the bad legacy datagram", LONG, || {
        a.status()["counters"]["rejected_by_reason"]["legacy_invalid"]
            .as_u64()
            .unwrap_or(0)
            >= 1
    });
}

#[test]
#[ignore = "needs root"]
fn our_legacy_datagrams_parse_back_with_an_independent_yaml_parser() {
    util::require_root();
    let mut lab = Lab::new(2, &["--announce-interval", "1s"]);
    let hostile = "photos: 2024 # \\\"best\\\" yes";
    let disks = format!(
        "{}{}{}",
        disk_line("/dev/sda1", UA, "disk of a"),
        disk_line("/dev/sda2", "1234", hostile),
        "/dev/sda3: TYPE=\"swap\"\n"
    );
    lab.host("a").args.push("--legacy".into());
    lab.host("a").set_disks(&disks);
    lab.host("a").start();
    let a = lab.host("a");
    wait_for("a's inventory", LONG, || {
        a.client(&["list", "--json"])
            .json()
            .as_array()
            .map(|v| v.len())
            == Some(3)
    });
    // b plays the Perl daemon: read a datagram with the diskd: prefix, YAML-load the rest.
    let ns = lab.hosts[1].ns.clone();
    let script = format!(
        "{}import yaml,json\n\
s.settimeout(10)\n\
while True:\n\
\x20   d,a=s.recvfrom(1500)\n\
\x20   if d.startswith(b'diskd:'):\n\
\x20       print(json.dumps(yaml.safe_load(d[6:].decode())))\n\
\x20       break\n",
        lab::PY_JOIN_GROUP
    );
    let out = Command::new("ip")
        .args(["netns", "exec", &ns, "python3", "-c", &script])
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    assert!(out.status.success());
    let got: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut triples: Vec<Vec<serde_json::Value>> = serde_json::from_value(got).unwrap();
    triples.sort_by_key(|t| t[2].as_str().unwrap_or("").to_string());
    let unescaped = "photos: 2024 # \"best\" yes";
    assert_eq!(
        serde_json::to_value(&triples).unwrap(),
        serde_json::json!([
            [UA, "disk of a", "/dev/sda1"],
            ["1234", unescaped, "/dev/sda2"],
            [null, null, "/dev/sda3"]
        ])
    );
}

#[test]
#[ignore = "needs root"]
fn legacy_peers_are_listed_but_trigger_nothing_when_keys_are_set() {
    util::require_root();
    let keys = tempfile::tempdir().unwrap();
    let key = keys.path().join("k");
    util::run_diskd(&["keygen", key.to_str().unwrap()], None).expect_code(0);
    let mut lab = Lab::new(
        2,
        &[
            "--announce-interval",
            "60s",
            "--legacy",
            "--key-file",
            key.to_str().unwrap(),
        ],
    );
    lab.host("a")
        .set_disks(&disk_line("/dev/sda1", UA, "disk of a"));
    lab.host("a").start();
    let a = lab.host("a");
    // Start-up traffic is over after two announces: the start-up one and the change
    // announce of the first disk scan (nothing else is due within the 60 s interval).
    wait_for("a's start-up and first-scan announces", LONG, || {
        counter(&a.status(), "announces") >= 2
    });
    let before = a.status();
    let perl_ns = lab.hosts[1].ns.clone();
    send_from(&perl_ns, &perl_datagram(), 5);
    let a = lab.host("a");
    wait_for("a to list the Perl daemon's disk", LONG, || {
        !a.query(PERL_UUID).is_empty()
    });
    // A datagram is handled (and a ping answer decided, counted in pings_answered) as it
    // is received: once all five are counted, nothing more can be decided.
    wait_for("all five Perl datagrams received", LONG, || {
        counter(&a.status(), "packets_received") >= counter(&before, "packets_received") + 5
    });
    // A deliberate wait for time to pass: an answer would go out at most PING_JITTER after
    // it was decided; wait that long before checking that no announce went out.
    std::thread::sleep(PING_JITTER);
    let after = a.status();
    assert_eq!(
        counter(&after, "announces"),
        counter(&before, "announces"),
        "a legacy datagram triggered an announce"
    );
    assert_eq!(
        counter(&after, "pings_answered"),
        counter(&before, "pings_answered")
    );
}

#[test]
#[ignore = "needs root"]
fn an_inventory_too_big_for_1500_bytes_is_cut_and_reported() {
    util::require_root();
    let mut lab = Lab::new(2, &["--announce-interval", "1s", "--legacy"]);
    let disks: String = (0..100)
        .map(|i| {
            disk_line(
                &format!("/dev/sd{i}"),
                &format!("{i:08x}-0000-4000-8000-000000000000"),
                &format!("disk {i}"),
            )
        })
        .collect();
    lab.host("a").set_disks(&disks);
    lab.host("a").start();
    let a = lab.host("a");
    wait_for("the cut to show in status", LONG, || {
        a.status()["legacy_left_out"].as_u64().unwrap_or(0) > 0
    });
    let left = a.status()["legacy_left_out"].as_u64().unwrap();
    assert!(left < 100);
    assert!(a.client(&["status"]).stdout().contains("left out"));
    let ns = lab.hosts[1].ns.clone();
    let script = format!(
        "{}import yaml\n\
s.settimeout(10)\n\
while True:\n\
\x20   d,a=s.recvfrom(65535)\n\
\x20   if d.startswith(b'diskd:'):\n\
\x20       assert len(d) <= 1500, len(d)\n\
\x20       print(len(yaml.safe_load(d[6:].decode())))\n\
\x20       break\n",
        lab::PY_JOIN_GROUP
    );
    let out = sh(&["ip", "netns", "exec", &ns, "python3", "-c", &script]);
    let sent: u64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    assert_eq!(sent + left, 100);
}
