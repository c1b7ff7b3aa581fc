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
/// One hook command at a time (`hooks_max_running: 1`): runs start and finish in the order
/// of their events, so a marker's recorded run comes after every earlier one's.
fn hooks_on(lab: &mut Lab, name: &str, hooks_yaml: &str) {
    let h = lab.host(name);
    let file = h.dir.join("diskd.yaml");
    std::fs::write(&file, format!("hooks_max_running: 1\nhooks:\n{hooks_yaml}")).unwrap();
    let f = file.to_string_lossy().into_owned();
    h.args.extend(["--config".to_string(), f]);
}

/// Markers sent after what must not set off a hook. A's disks are what a test sets plus
/// every marker so far; each new marker is a disk `marker-N` on A, which runs B's marker
/// hook. B applies A's datagrams in order and runs hooks one at a time in the order of
/// their events (see [`hooks_on`]), so once the marker's run is recorded, whatever A sent
/// before it has been applied and any hook it set off has run.
struct Markers {
    dir: std::path::PathBuf,
    sent: usize,
}

impl Markers {
    /// The hook that records markers (append it to B's hooks).
    fn hook(rec: &Path) -> String {
        format!(
            "  - {{on: [appeared], host: a, match: 'marker-*', run: [{}, marker]}}\n",
            rec.display()
        )
    }

    /// Give A these disks, and the markers so far.
    fn set_a(&self, lab: &mut Lab, disks: &str) {
        let markers: String = (1..=self.sent)
            .map(|i| {
                diskd_lab::disk_line(
                    &format!("/dev/sdm{i}"),
                    &format!("abcdef01-0000-4000-8000-00000000{i:04}"),
                    &format!("marker-{i}"),
                )
            })
            .collect();
        lab.host("a").set_disks(&format!("{disks}{markers}"));
        lab.host("a").client(&["refresh"]).expect_code(0);
    }

    /// Send one more marker from A (whose own disks are `disks`) and wait for its run on B.
    fn send(&mut self, lab: &mut Lab, disks: &str) {
        self.sent += 1;
        self.set_a(lab, disks);
        wait_runs(&self.dir, "marker", self.sent);
    }
}

#[test]
#[ignore = "needs root"]
fn a_disk_appearing_on_a_runs_bs_hook_once_and_vanishing_runs_the_vanished_hook() {
    util::require_root();
    // A long expiry: B's restart below must find A still live, as it would in a real fleet
    // restarting one daemon; announces every 2 s give plenty of re-announces.
    // Keys: peers' events are sealed, so `local: false` hooks run on them.
    let (_keys, _, mut lab) =
        util::keyed_lab(2, &["--announce-interval", "2s", "--peer-expiry", "60s"]);
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
             \x20 - {{on: [peer-live], host: 'not-*', run: [{r}, never]}}\n{}",
            Markers::hook(&rec)
        ),
    );
    let mut markers = Markers {
        dir: dir.clone(),
        sent: 0,
    };
    lab.start_all();
    let peer_live = wait_runs(&dir, "peer-live", 1);
    assert_eq!(peer_live[0]["DISKD_EVENT"], "peer-live");
    assert_eq!(peer_live[0]["DISKD_HOST"], "a");
    assert_eq!(peer_live[0]["DISKD_ADDR"], "198.18.0.1");
    assert_eq!(peer_live[0]["DISKD_UUID"], "");
    assert_eq!(peer_live[0]["DISKD_LABEL"], "");
    assert_eq!(peer_live[0]["DISKD_LOCAL"], "0");
    assert_eq!(peer_live[0]["DISKD_SEALED"], "1");
    assert_eq!(peer_live[0]["DISKD_NODE"], "b");

    // A gets the disk (and one that does not match).
    let a_disks = format!(
        "{}{}",
        diskd_lab::disk_line("/dev/sdz1", UUID, "lab-backup-1"),
        diskd_lab::disk_line("/dev/sdz2", OTHER, "photos")
    );
    markers.set_a(&mut lab, &a_disks);
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
        ("DISKD_SEALED", "1"),
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
    markers.send(&mut lab, &a_disks);
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
    markers.send(&mut lab, &a_disks);
    let b = lab.get("b");
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
    // A deliberate wait for time to pass: a vanished hook would run once the goodbye
    // grace (5 s) ran out without A back; the marker after it shows what B made of that.
    std::thread::sleep(Duration::from_secs(6)); // deliberate: past the goodbye grace
    markers.send(&mut lab, &a_disks);
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
    let a_disks = diskd_lab::disk_line("/dev/sdz2", OTHER, "photos");
    markers.set_a(&mut lab, &a_disks);
    let v = &wait_runs(&dir, "vanished", 1)[0];
    assert_eq!(v["DISKD_EVENT"], "vanished");
    assert_eq!(v["DISKD_UUID"], UUID);
    assert_eq!(v["DISKD_LABEL"], "lab-backup-1");
    assert_eq!(v["DISKD_HOST"], "a");
    markers.send(&mut lab, &a_disks);
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
    let (_keys, _, mut lab) = util::keyed_lab(2, &["--announce-interval", "2s"]);
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

/// A Perl-format datagram, as a stranger on the LAN (host `c`, no daemon) can send it.
fn send_perl_datagram(lab: &Lab, uuid: &str, label: &str) {
    let datagram = format!("diskd:---\n- - {uuid}\n  - {label}\n  - /dev/sdx9\n");
    let script = format!(
        "{}s.setsockopt(socket.IPPROTO_IP,socket.IP_MULTICAST_TTL,1)\n\
         s.sendto({datagram:?}.encode(),('230.1.2.3',32003))\n",
        diskd_lab::PY_JOIN_GROUP
    );
    lab.get("c").exec(&["python3", "-c", &script]);
}

#[test]
#[ignore = "needs root"]
fn a_strangers_unsealed_datagram_runs_no_hook_and_a_sealed_peers_disk_runs_it_once() {
    util::require_root();
    // Keys, and on b the Perl wire format heard too: a hook on every disk that appears
    // anywhere. (a speaks only the sealed format: in Perl's it would be a second, unsealed
    // host.)
    let (_keys, _, mut lab) = util::keyed_lab(3, &["--announce-interval", "2s"]);
    lab.host("b").args.push("--legacy".into());
    let dir = lab.host("b").dir.clone();
    let rec = recorder(&dir);
    hooks_on(
        &mut lab,
        "b",
        &format!(
            "  - {{on: [appeared], run: [{}, appeared]}}\n",
            rec.display()
        ),
    );
    lab.host("a").start();
    lab.host("b").start();
    let b = lab.get("b");
    let listeners = || util::counter(&b.status(), "event_listeners");
    let before = listeners();
    let events = util::Bg::spawn(&b.socket(), &["events", "--json"]);
    wait_for("the event stream to listen", LONG, || listeners() > before);
    // The stranger announces a disk in the Perl format: heard (it is listed), not trusted.
    send_perl_datagram(&lab, OTHER, "forged");
    let b = lab.get("b");
    wait_for("the stranger's disk to be listed", LONG, || {
        !b.query(OTHER).is_empty()
    });
    wait_for("the refusal to be counted", LONG, || {
        b.status()["hooks"][0]["unsealed_refused"] == 1
    });
    assert_eq!(b.query(OTHER)[0]["host"], "198.18.0.3");
    // A's disk, sealed under the fleet key: the hook runs once, and knows it was sealed.
    lab.host("a")
        .set_disks(&diskd_lab::disk_line("/dev/sdz1", UUID, "lab-backup-1"));
    lab.host("a").client(&["refresh"]).expect_code(0);
    let v = &wait_runs(&dir, "appeared", 1)[0];
    assert_eq!(v["DISKD_UUID"], UUID);
    assert_eq!(v["DISKD_HOST"], "a");
    assert_eq!(v["DISKD_SEALED"], "1");
    let st = lab.get("b").status();
    assert_eq!(st["hooks"][0]["runs"], 1, "{st}");
    assert_eq!(st["hooks"][0]["unsealed_refused"], 1, "{st}");
    // The event stream says which was which.
    let appeared = |uuid: &str| -> Vec<serde_json::Value> {
        events
            .objects()
            .into_iter()
            .filter(|e| e["event"] == "appeared" && e["uuid"] == uuid)
            .collect()
    };
    wait_for("both appearances in the event stream", LONG, || {
        !appeared(UUID).is_empty() && !appeared(OTHER).is_empty()
    });
    assert_eq!(appeared(OTHER)[0]["sealed"], false);
    assert_eq!(appeared(UUID)[0]["sealed"], true);
}

#[test]
#[ignore = "needs root"]
fn without_keys_a_hook_on_peers_needs_allow_unsealed_and_then_runs_unsealed() {
    util::require_root();
    let mut lab = Lab::new(2, &["--announce-interval", "2s"]);
    let dir = lab.host("b").dir.clone();
    let rec = recorder(&dir);
    // The same hook as with keys: refused at start, exit 2, one line naming it.
    hooks_on(
        &mut lab,
        "b",
        &format!(
            "  - {{on: [appeared], run: [{}, appeared]}}\n",
            rec.display()
        ),
    );
    let b = lab.get("b");
    let mut args = vec!["daemon", "--socket"];
    let sock = b.socket().display().to_string();
    let store = b.dir.join("store").display().to_string();
    args.extend([
        sock.as_str(),
        "--store",
        &store,
        "--no-hardware",
        "--no-smart",
    ]);
    args.extend(b.args.iter().map(String::as_str));
    let r = util::run_diskd(&args, None);
    r.expect_code(2);
    let err = r.stderr();
    assert!(
        err.contains("hooks[0]: runs on other hosts' events") && err.trim().lines().count() == 1,
        "{err}"
    );
    // allow_unsealed: it runs, and is told the event came unsealed.
    let config = lab.host("b").dir.join("diskd.yaml");
    std::fs::write(
        &config,
        format!(
            "hooks:\n  - {{on: [appeared], allow_unsealed: true, run: [{}, appeared]}}\n",
            rec.display()
        ),
    )
    .unwrap();
    lab.host("a")
        .set_disks(&diskd_lab::disk_line("/dev/sdz1", UUID, "lab-backup-1"));
    lab.start_all();
    let v = &wait_runs(&dir, "appeared", 1)[0];
    assert_eq!(v["DISKD_UUID"], UUID);
    assert_eq!(v["DISKD_SEALED"], "0");
    let b = lab.get("b");
    let st = b.status();
    assert_eq!(st["hooks"][0]["unsealed_refused"], 0, "{st}");
    assert_eq!(st["hooks"][0]["allow_unsealed"], true, "{st}");
}
