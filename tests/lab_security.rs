//! Trust nothing on the wire: keys, forgeries, replays, rotation, floods and faults, with
//! real daemons in the network-namespace lab. Needs root.

use crate::util;
use util::{counter, key_args, keyed_lab, keygen, rejected};

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use diskd_lab as lab;
use lab::{disk_line, wait_for, Lab};

const UA: &str = "aaaaaaaa-0000-4000-8000-00000000000a";
const UB: &str = "bbbbbbbb-0000-4000-8000-00000000000b";
const LONG: Duration = Duration::from_secs(20);
/// The fake-peer flood makes the daemon write thousands of peers; in a debug build on a
/// busy CI machine that takes a while.
const FLOOD_DEADLINE: Duration = Duration::from_secs(180);

/// Run python3 in a namespace (for raw datagrams the daemon must not trust).
fn python_in(ns: &str, script: &str) -> std::process::Output {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "python3", "-c", script])
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

use lab::PY_JOIN_GROUP as JOIN;

#[test]
#[ignore = "needs root"]
fn keyed_hosts_talk_and_show_which_key_signed() {
    util::require_root();
    let (_keys, k, mut lab) = keyed_lab(2, &["--announce-interval", "1s"]);
    lab.host("a")
        .set_disks(&disk_line("/dev/sda1", UA, "disk of a"));
    lab.host("b")
        .set_disks(&disk_line("/dev/sdb1", UB, "disk of b"));
    lab.start_all();
    let b = lab.host("b");
    wait_for("b to see a's disk", LONG, || !b.query(UA).is_empty());
    let st = b.status();
    let fp = st["keys"][0]
        .as_str()
        .expect("signing key fingerprint")
        .to_string();
    assert_eq!(fp.len(), 16);
    assert_eq!(st["peer_keys"]["a"], fp.as_str(), "{st}");
    let peers = b.peers();
    assert_eq!(peers[0]["key"], fp.as_str());
    // The key itself is never shown.
    let key_text = std::fs::read_to_string(&k).unwrap();
    let all = b.client(&["status"]).stdout() + &b.client(&["peers", "--json"]).stdout();
    assert!(!all.contains(key_text.trim()));
}

#[test]
#[ignore = "needs root"]
fn forged_and_replayed_datagrams_change_nothing() {
    util::require_root();
    // Host c runs no daemon: it is the attacker, without the key.
    let (_keys, _k, mut lab) = keyed_lab(3, &["--announce-interval", "1s", "--peer-expiry", "30s"]);
    lab.host("a")
        .set_disks(&disk_line("/dev/sda1", UA, "disk of a"));
    lab.host("b")
        .set_disks(&disk_line("/dev/sdb1", UB, "disk of b"));
    lab.host("a").start();
    lab.host("b").start();
    let b = lab.host("b");
    wait_for("b to see a", LONG, || !b.query(UA).is_empty());
    let attacker = lab.hosts[2].ns.clone();
    let capture = lab.hosts[2].dir.join("capture.hex");

    // 1. A forgery in the right format, unsealed: an inventory claiming a disk for "evil",
    //    and a goodbye claiming to be a.
    let a_id = lab.host("a").status()["node_id"]
        .as_str()
        .unwrap()
        .to_string();
    let forged_inventory = diskd::peer::wire::encode(&diskd::peer::wire::Envelope {
        node_id: "0123456789abcdef0123456789abcdef".into(),
        node: "evil".into(),
        boot: 1,
        seq: 1,
        sent_ms: diskd::model::now_millis(),
        body: diskd::peer::wire::Body::Inventory(diskd::peer::wire::Chunk {
            generation: 1,
            index: 0,
            count: 1,
            total: 1,
            disks: vec![diskd::model::DiskRecord {
                probe: Default::default(),
                uuid: Some("eeeeeeee-0000-4000-8000-00000000000e".into()),
                label: Some("forged".into()),
                device: "/dev/evil".into(),
                fstype: None,
                mountpoints: vec![],
                hardware: Default::default(),
                health: None,
                fs: None,
            }],
        }),
    });
    let forged_goodbye = diskd::peer::wire::encode(&diskd::peer::wire::Envelope {
        node_id: a_id.clone(),
        node: "a".into(),
        boot: 99,
        seq: 1,
        sent_ms: diskd::model::now_millis(),
        body: diskd::peer::wire::Body::Goodbye,
    });
    let before = lab.host("b").status();
    let send = |datagrams: &[Vec<u8>]| {
        let hexes: Vec<String> = datagrams.iter().map(hex::encode).collect();
        format!("{JOIN}for h in {hexes:?}:\n    s.sendto(bytes.fromhex(h),('230.1.2.3',32003))\n")
    };
    python_in(&attacker, &send(&[forged_inventory, forged_goodbye]));
    let b = lab.host("b");
    wait_for("b to count the forgeries", LONG, || {
        rejected(&b.status(), "plaintext") >= rejected(&before, "plaintext") + 2
    });
    assert!(b.query("forged").is_empty(), "a forged disk was accepted");
    assert_eq!(
        b.query(UA)[0]["live"],
        true,
        "a forged goodbye was accepted"
    );

    // 2. Replay: capture a's sealed traffic, including its goodbye; restart a; play it back.
    //    The recorder writes "SENDER HEX" per datagram until it is killed.
    let recorder = Command::new("ip")
        .args(["netns", "exec", &attacker, "python3", "-c"])
        .arg(format!(
            "{JOIN}f=open('{}','w')\nwhile True:\n    d,a=s.recvfrom(70000)\n    f.write(a[0]+' '+d.hex()+'\\n'); f.flush()\n",
            capture.display()
        ))
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let recorder = scopeguard(recorder);
    // (sender, datagram), whole lines only: the recorder may be writing one as we look.
    let recorded = || -> Vec<(String, Vec<u8>)> {
        std::fs::read_to_string(&capture)
            .unwrap_or_default()
            .split_inclusive('\n')
            .filter_map(|l| l.strip_suffix('\n')?.split_once(' '))
            .filter_map(|(from, h)| Some((from.to_string(), hex::decode(h).ok()?)))
            .collect()
    };
    let (a_addr, b_addr) = (lab.hosts[0].addr.clone(), lab.hosts[1].addr.clone());
    let from = |who: &str| recorded().iter().filter(|(f, _)| f == who).count();
    wait_for("a few announces of a recorded", LONG, || from(&a_addr) >= 2);
    // b's datagrams are replayed only up to here: one b sent while a was down was never
    // seen by a, and a would rightly take it as new.
    let b_seen_by_a = from(&b_addr);
    lab.host("a").stop(); // its goodbye is captured too
    let a_at_stop = from(&a_addr);
    lab.host("a").start();
    // Two more datagrams of a: at least one was sent after the restart, so the goodbye, sent
    // before it on the same path, has been recorded.
    wait_for("a's datagrams after its restart recorded", LONG, || {
        from(&a_addr) >= a_at_stop + 2
    });
    drop(recorder);
    let all = recorded();
    let captured: Vec<Vec<u8>> = all
        .iter()
        .filter(|(f, _)| *f == a_addr)
        .chain(all.iter().filter(|(f, _)| *f == b_addr).take(b_seen_by_a))
        .map(|(_, d)| d.clone())
        .collect();
    assert!(
        all.iter().all(|(f, _)| *f == a_addr || *f == b_addr),
        "datagrams from elsewhere: {all:?}"
    );
    assert!(
        captured.len() >= 3,
        "captured only {} datagrams",
        captured.len()
    );
    assert!(
        captured.iter().all(|d| d.starts_with(b"DSKS")),
        "unsealed traffic on a keyed lab"
    );
    let b = lab.host("b");
    wait_for("a live again on b", LONG, || {
        b.query(UA).first().is_some_and(|r| r["live"] == true)
    });
    let before = b.status();
    let before_a = lab.host("a").status();
    python_in(&attacker, &send(&captured));
    let replays = |st: &serde_json::Value| rejected(st, "replay") + rejected(st, "clock_skew");
    let base = replays(&before) + replays(&before_a);
    wait_for("every replayed datagram to be refused", LONG, || {
        replays(&lab.hosts[0].status()) + replays(&lab.hosts[1].status())
            >= base + captured.len() as u64
    });
    // Each captured datagram came from a or b and was refused by the other one; nothing
    // was accepted.
    assert_eq!(
        replays(&lab.hosts[0].status()) + replays(&lab.hosts[1].status()),
        base + captured.len() as u64
    );
    let b = lab.host("b");
    // The replayed goodbye did not mark a as gone. No pause needed before looking: every
    // captured datagram has been counted as refused (above), so none was acted on.
    assert_eq!(b.query(UA)[0]["live"], true, "a replayed goodbye worked");
    let peers = b.peers();
    let a = peers.iter().find(|p| p["node"] == "a").unwrap();
    assert_eq!(a["live"], true);
}

/// Kill a child process when dropped (the recorder must not outlive a failing test).
struct Guard(std::process::Child);
fn scopeguard(c: std::process::Child) -> Guard {
    Guard(c)
}
impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
#[ignore = "needs root"]
fn rotation_accepts_both_keys_then_drops_the_old_one() {
    util::require_root();
    let keys = tempfile::tempdir().unwrap();
    let old = keygen(keys.path(), "old.key");
    let new = keygen(keys.path(), "new.key");
    let mut lab = Lab::new(2, &["--announce-interval", "1s", "--peer-expiry", "3s"]);
    lab.host("a")
        .set_disks(&disk_line("/dev/sda1", UA, "disk of a"));
    lab.host("b")
        .set_disks(&disk_line("/dev/sdb1", UB, "disk of b"));
    let set_keys = |lab: &mut Lab, host: &str, ks: &[&Path]| {
        let h = lab.host(host);
        h.args
            .retain(|a| !a.starts_with("--key-file") && !a.ends_with(".key"));
        h.args.extend(key_args(ks));
    };
    // Step 0: everybody on the old key.
    set_keys(&mut lab, "a", &[&old]);
    set_keys(&mut lab, "b", &[&old]);
    lab.start_all();
    let fp_of = |lab: &mut Lab, h: &str| {
        lab.host(h).status()["keys"][0]
            .as_str()
            .unwrap()
            .to_string()
    };
    let old_fp = fp_of(&mut lab, "a");
    let b = lab.host("b");
    wait_for("b to hear a under the old key", LONG, || {
        b.status()["peer_keys"]["a"] == old_fp.as_str()
    });
    // Step 1: b adds the new key, still signing with the old one; step 2: a makes the new key first.
    lab.host("b").stop();
    set_keys(&mut lab, "b", &[&old, &new]);
    lab.host("b").start();
    lab.host("a").stop();
    set_keys(&mut lab, "a", &[&new, &old]);
    lab.host("a").start();
    let new_fp = fp_of(&mut lab, "a");
    assert_ne!(new_fp, old_fp);
    let b = lab.host("b");
    wait_for("b to hear a under the new key", LONG, || {
        b.status()["peer_keys"]["a"] == new_fp.as_str()
    });
    let a = lab.host("a");
    wait_for(
        "a to hear b under the old key (b still signs with it)",
        LONG,
        || a.status()["peer_keys"]["b"] == old_fp.as_str(),
    );
    // Rotation completes: b keeps only the new key. A peer still on the old key only is
    // rejected from now on.
    lab.host("b").stop();
    set_keys(&mut lab, "b", &[&new]);
    lab.host("b").start();
    lab.host("a").stop();
    set_keys(&mut lab, "a", &[&old]);
    lab.host("a").start();
    let b = lab.host("b");
    wait_for("b to reject a's old-key datagrams", LONG, || {
        rejected(&b.status(), "unknown_key") >= 2
    });
    wait_for("a to expire on b", LONG, || {
        b.query(UA).first().is_some_and(|r| r["live"] == false)
    });
}

#[test]
fn bad_key_files_stop_the_daemon_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let open = dir.path().join("open.key");
    std::fs::write(&open, format!("{}\n", "ab".repeat(32))).unwrap();
    std::fs::set_permissions(&open, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let short = dir.path().join("short.key");
    std::fs::write(&short, "abcd\n").unwrap();
    std::fs::set_permissions(&short, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    for (path, word) in [
        (&open, "644"),
        (&short, "short.key"),
        (&dir.path().join("missing.key"), "missing.key"),
    ] {
        let d = util::TestDaemon::new("")
            .arg("--key-file")
            .arg(path.to_str().unwrap());
        let (code, stderr) = d.run_expect_exit();
        assert_eq!(code, 2, "{stderr}");
        assert!(
            stderr.contains("security.key_files") && stderr.contains(word),
            "{stderr}"
        );
        assert_eq!(
            stderr
                .trim()
                .lines()
                .filter(|l| l.starts_with("diskd:"))
                .count(),
            1,
            "{stderr}"
        );
    }
    // keygen refuses to overwrite.
    let k = keygen(dir.path(), "k.key");
    let r = util::run_diskd(&["keygen", k.to_str().unwrap()], None);
    r.expect_code(2);
}

#[test]
#[ignore = "needs root"]
fn a_flood_of_random_datagrams_is_survived_and_accounted_for() {
    util::require_root();
    let (_keys, _k, mut lab) = keyed_lab(2, &["--announce-interval", "60s"]);
    lab.host("a")
        .set_disks(&disk_line("/dev/sda1", UA, "disk of a"));
    lab.host("a").start();
    let a_ns = lab.hosts[0].ns.clone();
    let snmp = |ns: &str| -> u64 {
        // UDP RcvbufErrors: datagrams the kernel dropped because the socket buffer was full.
        let out = Command::new("ip")
            .args(["netns", "exec", ns, "cat", "/proc/net/snmp"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let udp: Vec<&str> = text.lines().filter(|l| l.starts_with("Udp:")).collect();
        let names: Vec<&str> = udp[0].split_whitespace().collect();
        let values: Vec<&str> = udp[1].split_whitespace().collect();
        let i = names.iter().position(|n| *n == "RcvbufErrors").unwrap();
        values[i].parse().unwrap()
    };
    let a = lab.host("a");
    // Start-up traffic is over after two announces: the start-up one and the change
    // announce of the first disk scan (nothing else is due within the 60 s interval).
    wait_for("a's start-up and first-scan announces", LONG, || {
        counter(&a.status(), "announces") >= 2
    });
    let before = a.status();
    let drops_before = snmp(&a_ns);
    // 50,000 datagrams of random bytes, 1-1400 long; a quarter start with the sealed magic
    // and a quarter with the plaintext one, so they get past the first check. Paced at
    // 15,000 a second (pacing of the load).
    let flood = r#"
import socket, os, random, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
t = time.time()
for i in range(50000):
    d = os.urandom(random.randint(1, 1400))
    if i % 4 == 1: d = b'DSKS\x01' + d
    if i % 4 == 2: d = b'DSKD\x01' + d
    s.sendto(d, ('230.1.2.3', 32003))
    if i % 500 == 0: time.sleep(max(0, t + i / 15000 - time.time()))
"#;
    let attacker = lab.hosts[1].ns.clone();
    let sender = Command::new("ip")
        .args(["netns", "exec", &attacker, "python3", "-c", flood])
        .spawn()
        .unwrap();
    // (its exit status is checked below, once the flood is over)
    let mut sender = scopeguard(sender);
    // Queries keep answering throughout the flood.
    let a = lab.host("a");
    let status = loop {
        if let Some(st) = sender.0.try_wait().unwrap() {
            break st;
        }
        assert_eq!(a.query(UA).len(), 1, "query failed during the flood");
    };
    assert!(status.success(), "the flood script failed");
    let a = lab.host("a");
    wait_for("every datagram accounted for", LONG, || {
        let st = a.status();
        let counted = counter(&st, "packets_rejected") - counter(&before, "packets_rejected")
            + (counter(&st, "packets_received") - counter(&before, "packets_received"));
        counted + (snmp(&a_ns) - drops_before) >= 50_000
    });
    let st = a.status();
    let rejected_now = counter(&st, "packets_rejected") - counter(&before, "packets_rejected");
    let received_now = counter(&st, "packets_received") - counter(&before, "packets_received");
    let dropped = snmp(&a_ns) - drops_before;
    assert_eq!(received_now, 0, "a random datagram was accepted");
    assert_eq!(
        rejected_now + dropped,
        50_000,
        "rejected {rejected_now}, kernel dropped {dropped}"
    );
    assert!(
        rejected_now >= 40_000,
        "the daemon saw only {rejected_now} of 50,000"
    );
    assert_eq!(a.query(UA)[0]["live"], true);
}

#[test]
#[ignore = "needs root"]
fn kill_9_in_a_loop_while_peers_announce_loses_nothing_committed() {
    util::require_root();
    let mut lab = Lab::new(2, &["--announce-interval", "1s"]);
    lab.host("b")
        .set_disks(&disk_line("/dev/sdb1", UB, "disk of b"));
    lab.start_all();
    let mut lines = disk_line("/dev/sda1", UA, "disk of a");
    for round in 0..20 {
        // A new local disk each round, committed (refresh returns after the store flush).
        let uuid = format!("{round:08x}-0000-4000-8000-0000000000aa");
        lines.push_str(&disk_line(
            &format!("/dev/round{round}"),
            &uuid,
            &format!("round {round}"),
        ));
        lab.host("a").set_disks(&lines);
        lab.host("a").client(&["refresh"]).expect_code(0);
        let a = lab.host("a");
        wait_for("b's disk on a", LONG, || !a.query(UB).is_empty());
        a.kill9();
        a.start();
        // Everything committed before the kill: every round's disk and b's disk.
        for r in 0..=round {
            let u = format!("{r:08x}-0000-4000-8000-0000000000aa");
            assert_eq!(
                a.query(&u).len(),
                1,
                "round {round}: disk of round {r} lost"
            );
        }
        assert_eq!(a.query(UB).len(), 1, "round {round}: peer disk lost");
    }
}

#[test]
#[ignore = "needs root"]
fn blkid_faults_never_stop_queries_nor_lose_the_inventory() {
    util::require_root();
    let mut lab = Lab::new(
        2,
        &[
            "--announce-interval",
            "1s",
            "--disk-timeout",
            "1s",
            "--disk-interval",
            "1s",
        ],
    );
    lab.host("a")
        .set_disks(&disk_line("/dev/sda1", UA, "disk of a"));
    lab.host("b")
        .set_disks(&disk_line("/dev/sdb1", UB, "disk of b"));
    lab.start_all();
    let b = lab.host("b");
    wait_for("b to see a", LONG, || !b.query(UA).is_empty());
    // blkid on a now hangs forever.
    let blkid = lab.host("a").blkid.clone();
    let tmp = blkid.with_extension("hang");
    std::fs::write(&tmp, "#!/bin/sh\nsleep 1000\n").unwrap();
    std::fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    std::fs::rename(&tmp, &blkid).unwrap();
    let a = lab.host("a");
    wait_for("the hang to show in status", LONG, || {
        let st = a.status();
        st["watchers"]["disks"]["failures"]["timed_out"]
            .as_u64()
            .unwrap_or(0)
            >= 2
    });
    // Throughout: local and remote queries answer, the last good inventory is kept.
    for _ in 0..20 {
        assert_eq!(a.query(UA)[0]["live"], true);
        assert_eq!(a.query(UB).len(), 1);
    }
    let b = lab.host("b");
    assert_eq!(
        b.query(UA)[0]["live"],
        true,
        "a's disk vanished on b during the hang"
    );

    // Missing, failing and garbage-printing blkid: each shows in status with its reason,
    // and the last good inventory stays, here and on the peer.
    let broken: [(&str, Option<&str>); 3] = [
        ("not_found", None),
        (
            "failed",
            Some("#!/bin/sh\necho 'blkid: cannot open /dev/sda1' >&2\nexit 4\n"),
        ),
        (
            "bad_output",
            Some("#!/bin/sh\necho 'this is not blkid output'\n"),
        ),
    ];
    for (reason, script) in broken {
        let _ = std::fs::remove_file(&blkid);
        if let Some(body) = script {
            std::fs::write(&tmp, body).unwrap();
            std::fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o755))
                .unwrap();
            std::fs::rename(&tmp, &blkid).unwrap();
        }
        let a = lab.host("a");
        let r = a.client(&["refresh"]);
        r.expect_code(3);
        assert!(r.stdout().contains("disks: failed"), "{}", r.stdout());
        let st = a.status();
        assert_eq!(st["watchers"]["disks"]["state"], reason, "{st}");
        assert!(st["watchers"]["disks"]["last_error"].is_string());
        assert_eq!(
            a.query(UA)[0]["live"],
            true,
            "{reason}: the last good inventory was dropped"
        );
        // Once b has heard two more announces from a (its only peer; the second was surely
        // sent after the failed scan, from the kept inventory), it still has the disk live.
        let b = lab.host("b");
        let b_received = counter(&b.status(), "packets_received");
        wait_for("b to hear a's next announces", LONG, || {
            counter(&b.status(), "packets_received") >= b_received + 2
        });
        assert_eq!(
            b.query(UA)[0]["live"],
            true,
            "{reason}: a's disk vanished on b"
        );
    }
}

/// Datagrams from `n` made-up peers, each announcing `disks` disks, as hex lines for
/// python. Peer `i` of `salt` is node `fake-SALT-I`; its disks' UUIDs are [`fake_uuid`].
fn fake_peer_datagrams(n: usize, disks: usize, salt: u32) -> String {
    use diskd::peer::wire::{encode, Body, Chunk, Envelope};
    let mut out = String::with_capacity(n * (200 + disks * 100));
    for i in 0..n {
        let env = Envelope {
            node_id: format!("{salt:08x}{i:024x}"),
            node: format!("fake-{salt}-{i}"),
            boot: 1,
            seq: 1,
            sent_ms: diskd::model::now_millis(),
            body: Body::Inventory(Chunk {
                generation: 1,
                index: 0,
                count: 1,
                total: disks as u32,
                disks: (0..disks)
                    .map(|d| diskd::model::DiskRecord {
                        probe: Default::default(),
                        uuid: Some(fake_uuid(salt, i, d)),
                        label: Some(format!("fake disk {i}.{d}")),
                        device: format!("/dev/fake{i}x{d}"),
                        fstype: None,
                        mountpoints: vec![],
                        hardware: Default::default(),
                        health: None,
                        fs: None,
                    })
                    .collect(),
            }),
        };
        out.push_str(&hex::encode(encode(&env)));
        out.push('\n');
    }
    out
}

/// The UUID of disk `d` of fake peer `i` of `salt`.
fn fake_uuid(salt: u32, i: usize, d: usize) -> String {
    format!("{i:08x}-{d:04x}-4bee-8f00-{salt:012x}")
}

/// UDP receive-buffer drops in namespace `ns` (`RcvbufErrors` of /proc/net/snmp):
/// datagrams the kernel dropped because a socket's buffer was full.
fn rcvbuf_drops(ns: &str) -> u64 {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "cat", "/proc/net/snmp"])
        .output()
        .expect("read /proc/net/snmp");
    let text = String::from_utf8_lossy(&out.stdout);
    let udp: Vec<&str> = text.lines().filter(|l| l.starts_with("Udp:")).collect();
    let names: Vec<&str> = udp[0].split_whitespace().collect();
    let values: Vec<&str> = udp[1].split_whitespace().collect();
    let i = names.iter().position(|n| *n == "RcvbufErrors").unwrap();
    values[i].parse().unwrap()
}

/// Every datagram `a` has read (accepted or rejected) or the kernel dropped for want of
/// room in its namespace `a_ns`: what the daemon has accounted for of what was sent to it.
fn accounted(a: &lab::Host, a_ns: &str) -> u64 {
    let st = a.status();
    let rejected: u64 = st["counters"]["rejected_by_reason"]
        .as_object()
        .map_or(0, |m| m.values().filter_map(|v| v.as_u64()).sum());
    util::counter(&st, "packets_received") + rejected + rcvbuf_drops(a_ns)
}

/// Send the datagrams of `hex` (one per line) to the group from namespace `ns`, 50 at a
/// time, each batch once `a` (in `a_ns`) has accounted for every datagram before it: the
/// load goes as fast as the daemon reads it, and when this returns all of it has been read
/// or dropped by the kernel.
fn send_paced(ns: &str, dir: &Path, hex: &str, a: &lab::Host, a_ns: &str) {
    let file = dir.join("batch.hex");
    let script = format!(
        concat!(
            "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n",
            "s.setsockopt(socket.IPPROTO_IP,socket.IP_MULTICAST_TTL,1)\n",
            "for l in open('{}'):\n",
            "    s.sendto(bytes.fromhex(l.strip()),('230.1.2.3',32003))\n",
        ),
        file.display()
    );
    let lines: Vec<&str> = hex.lines().collect();
    let mut target = accounted(a, a_ns);
    for batch in lines.chunks(50) {
        std::fs::write(&file, batch.join("\n")).unwrap();
        python_in(ns, &script);
        target += batch.len() as u64;
        wait_for("the daemon to read the batch", FLOOD_DEADLINE, || {
            accounted(a, a_ns) >= target
        });
    }
}

#[test]
#[ignore = "needs root"]
fn forged_newcomers_at_the_peer_cap_are_refused_and_never_erase_history() {
    util::require_root();
    // 50 peers with 16 disks each are heard, then go offline; 2,000 forged peers follow.
    // The cap is 1,000: a (the daemon under test) holds b, the 50, and 949 of the forged.
    let mut lab = Lab::new(3, &["--announce-interval", "1s", "--peer-expiry", "3s"]);
    lab.host("a")
        .args
        .extend(["--max-peers".into(), "1000".into()]);
    lab.host("a")
        .set_disks(&disk_line("/dev/sda1", UA, "disk of a"));
    lab.host("b")
        .set_disks(&disk_line("/dev/sdb1", UB, "disk of b"));
    lab.host("a").start();
    lab.host("b").start();
    let a = lab.get("a");
    wait_for("a to hear b", LONG, || {
        a.peers()
            .iter()
            .any(|p| p["node"] == "b" && p["live"] == true)
    });
    let attacker = lab.hosts[2].ns.clone();
    let dir = lab.hosts[2].dir.clone();
    // Paced by the daemon's own counters, so the kernel keeps them all.
    let a_ns = lab.hosts[0].ns.clone();
    send_paced(&attacker, &dir, &fake_peer_datagrams(50, 16, 1), a, &a_ns);
    let history = |a: &lab::Host| -> Vec<serde_json::Value> {
        a.peers()
            .into_iter()
            .filter(|p| p["node"].as_str().is_some_and(|n| n.starts_with("fake-1-")))
            .collect()
    };
    assert_eq!(history(a).len(), 50);
    wait_for("the 50 peers to go offline", LONG, || {
        history(a).iter().all(|p| p["live"] == false)
    });
    let rss_before = a.rss_kib().unwrap();
    let drops_before = rcvbuf_drops(&lab.hosts[0].ns);

    let a = lab.get("a");
    send_paced(&attacker, &dir, &fake_peer_datagrams(2000, 1, 2), a, &a_ns);
    let drops = rcvbuf_drops(&lab.hosts[0].ns) - drops_before;

    // The table is full, and the 50 offline peers are all still in it.
    let peers = a.peers();
    assert_eq!(peers.len(), 1000, "peers remembered");
    assert_eq!(
        history(a).len(),
        50,
        "an offline peer with disks was forgotten"
    );
    let b = peers
        .iter()
        .find(|p| p["node"] == "b")
        .expect("live peer b was evicted");
    assert_eq!(b["live"], true);
    let admitted = peers
        .iter()
        .filter(|p| p["node"].as_str().is_some_and(|n| n.starts_with("fake-2-")))
        .count();
    assert_eq!(admitted, 1000 - 51);
    // Every newcomer that reached the daemon and did not fit was refused and counted.
    let st = a.status();
    assert_eq!(st["peers_max"], 1000, "{st}");
    // (The kernel's drop counter is the namespace's and also counts markers dropped while
    // the buffer was full, so it bounds the fakes lost from above.)
    let refused = st["peers_refused"].as_u64().unwrap();
    let unadmitted = 2000 - admitted as u64;
    assert!(
        refused <= unadmitted && refused + drops >= unadmitted,
        "{refused} refused of {unadmitted} newcomers that did not fit ({drops} kernel drops): {st}"
    );
    let text = a.client(&["status"]).stdout();
    assert!(
        text.contains(&format!(
            "peer table full (1000 max), {} datagrams of newcomers refused",
            st["peers_refused"]
        )),
        "{text}"
    );
    // Every one of the 50 peers' 800 disks answers with its last known location.
    let mut s = util::RawSession::connect(&a.socket());
    s.read_reply();
    for i in 0..50 {
        for d in 0..16 {
            let r = s.call(&format!("where {} --json", fake_uuid(1, i, d)));
            assert_eq!(r.status, "+OK", "disk {i}.{d}: {r:?}");
            let v: serde_json::Value = serde_json::from_str(&r.body.join("\n")).unwrap();
            assert_eq!(v[0]["host"], format!("fake-1-{i}"), "{v}");
            assert_eq!(v[0]["device"], format!("/dev/fake{i}x{d}"), "{v}");
            assert_eq!(v[0]["live"], false, "{v}");
        }
    }
    let (code, rows) = {
        let r = a.client(&["query", &fake_uuid(1, 49, 15), "--json"]);
        (r.code(), r.json())
    };
    assert_eq!(code, 0, "{rows}");
    assert_eq!(rows[0]["live"], false);
    let rss_after = a.rss_kib().unwrap();
    assert!(
        rss_after < rss_before + 100 * 1024,
        "memory grew from {rss_before} KiB to {rss_after} KiB"
    );
}
