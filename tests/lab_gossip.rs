//! Unicast gossip across a router, with real daemons in the network-namespace lab: two
//! subnets (`a1..` on 198.18.1.0/24, `b1..` on 198.18.2.0/24) joined by a router that
//! forwards unicast and never multicast, so whatever one subnet learns of the other came
//! by gossip. Needs root: `#[ignore = "needs root"]`, run with `--include-ignored`.
//!
//! Every host is started with `--interface eth0`, so its gossip advertise address is its
//! lab address rather than whatever a route lookup picks.

use crate::util;
use util::{counter, rejected, Reaper};

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use diskd_lab as lab;
use lab::{disk_line, wait_for, Host, Lab};

/// For "eventually" conditions that need a join or a multicast exchange first: forty
/// protocol periods, generous because CI runs two of these labs at once on two cores with
/// debug builds. A lab of a few hosts that needs longer to know every member is slow
/// enough to be a fault worth seeing.
const LONG: Duration = Duration::from_secs(20);
/// What "within a few seconds" means for gossip spreading a change or a clean stop.
const FEW_SECONDS: Duration = Duration::from_secs(10);
/// What a kill -9 may take to be noticed with the default 500 ms protocol period
/// (suspicion, then declared down).
const KILL_DETECTION: Duration = Duration::from_secs(30);
/// The default gossip port.
const GOSSIP_PORT: u16 = 32004;

/// The UUID of the one disk of host `name` (`a1`, `b2`, ...: hex digits already).
fn uuid_of(name: &str) -> String {
    format!("{n}{n}{n}{n}-0000-4000-8000-0000000000{n}", n = name)
}

/// The fake blkid line of host `name`'s disk.
fn disk_of(name: &str) -> String {
    disk_line(
        &format!("/dev/sd{name}"),
        &uuid_of(name),
        &format!("disk of {name}"),
    )
}

/// `diskd keygen FILE`; returns the path.
fn keygen(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    util::run_diskd(&["keygen", path.to_str().unwrap()], None).expect_code(0);
    path
}

/// A keyed two-subnet lab (daemons not started): every host holds the fleet key, uses
/// `eth0`, has one disk, and gets `extra` flags. Returns the key directory (keep it
/// alive), the key and the lab.
fn fleet(per_subnet: usize, extra: &[&str]) -> (tempfile::TempDir, PathBuf, Lab) {
    let keys = tempfile::tempdir().unwrap();
    let key = keygen(keys.path(), "fleet.key");
    let mut args = vec!["--key-file", key.to_str().unwrap(), "--interface", "eth0"];
    args.extend_from_slice(extra);
    let mut lab = Lab::two_subnets(per_subnet, &args);
    for h in &mut lab.hosts {
        h.set_disks(&disk_of(&h.name));
    }
    (keys, key, lab)
}

/// Give host `name` a `--seed` (repeatable).
fn seed(lab: &mut Lab, name: &str, target: &str) {
    let h = lab.host(name);
    h.args.push("--seed".into());
    h.args.push(target.into());
}

/// Whether `host` lists host `of`'s disk, and if so whether live.
fn sighting(host: &Host, of: &str) -> Option<bool> {
    host.query(&uuid_of(of)).first().map(|r| r["live"] == true)
}

/// The hosts whose disks `host` lists (`list --json`, one client run however many hosts:
/// cheap enough to poll several daemons at once on a busy machine).
fn hosts_listed(host: &Host) -> std::collections::BTreeSet<String> {
    let r = host.client(&["list", "--json"]);
    assert!(matches!(r.code(), 0 | 1), "list failed: {}", r.stderr());
    r.json()
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter_map(|d| d["host"].as_str().map(str::to_string))
        .collect()
}

/// The `peers --json` row of node `node` on `host`, if it is listed exactly once; panics
/// if it is listed more than once (a peer is one row however it is heard).
fn peer_row(host: &Host, node: &str) -> Option<serde_json::Value> {
    let rows: Vec<serde_json::Value> = host
        .peers()
        .into_iter()
        .filter(|p| p["node"] == node)
        .collect();
    assert!(
        rows.len() <= 1,
        "{node} listed {} times on {}: {rows:?}",
        rows.len(),
        host.name
    );
    rows.into_iter().next()
}

/// What `host` knows of gossip, for failure messages: its `status` gossip object, its
/// peers (node, via, live) and whose disks it lists.
fn gossip_state(host: &Host) -> String {
    let st = host.client(&["status", "--json"]);
    let gossip = if st.code() == 0 {
        st.json()["gossip"].to_string()
    } else {
        format!("(status failed: {})", st.stderr())
    };
    let peers = host.client(&["peers", "--json"]);
    let peers = if peers.code() == 0 {
        peers
            .json()
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|p| format!("{}/{}/live={}", p["node"], p["via"], p["live"]))
            .collect::<Vec<_>>()
            .join(" ")
    } else {
        "(peers failed)".into()
    };
    let lists = host.client(&["list", "--json"]);
    let lists = if matches!(lists.code(), 0 | 1) {
        format!("{:?}", hosts_listed(host))
    } else {
        "(list failed)".into()
    };
    format!(
        "{}: gossip={gossip} peers=[{peers}] disks of {lists}",
        host.name
    )
}

/// Poll `cond` until it holds or `limit` passes, and return how long it took. Unlike
/// `wait_for`, a timeout reports what the `watchers` knew of gossip then, so a failure
/// says why and not only that.
fn within(
    what: &str,
    limit: Duration,
    watchers: &[&Host],
    mut cond: impl FnMut() -> bool,
) -> Duration {
    let start = Instant::now();
    loop {
        if cond() {
            let took = start.elapsed();
            eprintln!("{what}: {took:?}");
            return took;
        }
        if start.elapsed() > limit {
            let state: Vec<String> = watchers.iter().map(|h| gossip_state(h)).collect();
            panic!(
                "timed out after {:?} (limit {limit:?}) waiting for {what}\n{}",
                start.elapsed(),
                state.join("\n")
            );
        }
        // Poll interval of a wait on a real condition, not a wait for time.
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Start python3 `script` in `host`'s namespace and wait for it to print `ready` (its
/// socket is bound and joined): what is sent after that cannot be missed for lack of a
/// listener.
fn listener(host: &Host, script: &str) -> Reaper {
    use std::io::BufRead;
    let mut child = Command::new("ip")
        .args(["netns", "exec", &host.ns, "python3", "-c", script])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    let reaper = Reaper(Some(child));
    assert_eq!(
        line.trim(),
        "ready",
        "listener on {} did not start",
        host.name
    );
    reaper
}

/// Run python3 `script` in `host`'s namespace to completion.
fn python_in(host: &Host, script: &str) {
    let out = host.try_exec(&["python3", "-c", script]);
    assert!(
        out.status.success(),
        "python in {} failed: {}",
        host.name,
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
#[ignore = "needs root"]
fn the_router_forwards_unicast_and_no_multicast() {
    util::require_root();
    let lab = Lab::two_subnets(2, &[]);
    // Listeners on the default group and port, on a2 (a1's subnet) and b1 (across the
    // router). Each prints what it gets; b1 stops at a unicast "end" marker, a2 after
    // ten multicast datagrams. Bound to the wildcard address so unicast arrives too.
    let listen = |stop: &str| {
        format!(
            "import socket,struct\n\
             s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n\
             s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n\
             s.bind(('0.0.0.0',32003))\n\
             s.setsockopt(socket.IPPROTO_IP,socket.IP_ADD_MEMBERSHIP,struct.pack('4s4s',socket.inet_aton('230.1.2.3'),socket.inet_aton('0.0.0.0')))\n\
             s.settimeout(20)\n\
             print('ready',flush=True)\n\
             got=[]\n\
             while True:\n\
             \x20   d,a=s.recvfrom(2000)\n\
             \x20   got.append(d.decode()+'@'+a[0])\n\
             \x20   if {stop}: break\n\
             print(' '.join(got))\n"
        )
    };
    let a2 = listener(lab.get("a2"), &listen("len(got)==10"));
    let b1 = listener(lab.get("b1"), &listen("d==b'end'"));
    // From a1: ten multicast datagrams with a TTL that would cross several routers, then a
    // unicast marker to b1 through the router (same path, so it arrives after any
    // forwarded multicast would have; the 0.2 s before it is a deliberate wait for time to
    // pass, for a forwarding router's queue to empty first).
    python_in(
        lab.get("a1"),
        "import socket,time\n\
         s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n\
         s.setsockopt(socket.IPPROTO_IP,socket.IP_MULTICAST_TTL,8)\n\
         for i in range(10): s.sendto(b'mc',('230.1.2.3',32003))\n\
         time.sleep(0.2)\n\
         s.sendto(b'end',('198.18.2.1',32003))\n",
    );
    let on_a2 = a2.output();
    let on_b1 = b1.output();
    assert_eq!(
        on_a2.trim(),
        ["mc@198.18.1.1"; 10].join(" "),
        "multicast on a1's own subnet"
    );
    assert_eq!(
        on_b1.trim(),
        "end@198.18.1.1",
        "across the router: the unicast marker, and no multicast before it"
    );
}

#[test]
#[ignore = "needs root"]
fn without_gossip_multicast_stays_on_its_subnet() {
    util::require_root();
    // No keys, so no gossip; TTL 8, so only the router can stop a1's announces.
    let mut lab = Lab::two_subnets(
        2,
        &[
            "--interface",
            "eth0",
            "--ttl",
            "8",
            "--announce-interval",
            "1s",
        ],
    );
    for h in &mut lab.hosts {
        h.set_disks(&disk_of(&h.name));
    }
    lab.start_all();
    let (a1, a2, b1, b2) = (lab.get("a1"), lab.get("a2"), lab.get("b1"), lab.get("b2"));
    wait_for("a2 to see a1's disk", LONG, || sighting(a2, "a1").is_some());
    wait_for("b2 to see b1's disk", LONG, || sighting(b2, "b1").is_some());
    wait_for("a1 to see a2's disk", LONG, || sighting(a1, "a2").is_some());
    // a2 has heard a1; by the time a1 has announced three more times, anything the router
    // forwarded would have arrived too.
    let base = counter(&a1.status(), "announces");
    wait_for("a1 to announce 3 more times", LONG, || {
        counter(&a1.status(), "announces") >= base + 3
    });
    for b in [b1, b2] {
        for a in ["a1", "a2"] {
            assert_eq!(
                sighting(b, a),
                None,
                "{}: {a}'s disk crossed the router",
                b.name
            );
        }
        let peers: Vec<serde_json::Value> = b.peers();
        assert!(
            peers
                .iter()
                .all(|p| p["node"].as_str().unwrap_or("").starts_with('b')),
            "{} heard across the router: {peers:?}",
            b.name
        );
    }
    assert!(b1.status()["gossip"].is_null(), "gossip runs without keys");
}

#[test]
#[ignore = "needs root"]
fn a_seed_across_the_router_joins_both_subnets() {
    util::require_root();
    // b1 alone knows a seed; every other host must learn through a LAN neighbour that
    // multicast on its subnet made a gossip member.
    let (_keys, _k, mut lab) = fleet(3, &["--announce-interval", "5s"]);
    seed(&mut lab, "b1", "198.18.1.1");
    lab.start_all();
    let names: std::collections::BTreeSet<String> =
        lab.hosts.iter().map(|h| h.name.clone()).collect();
    let everyone: Vec<&Host> = lab.hosts.iter().collect();
    within("every host to list every disk", LONG, &everyone, || {
        lab.hosts.iter().all(|h| hosts_listed(h) == names)
    });
    // b2 has no seed: it learned a's hosts by gossip only, as live hosts with their disks.
    let b2 = lab.get("b2");
    within("b2 to list a1..a3 as gossip peers", LONG, &[b2], || {
        ["a1", "a2", "a3"]
            .iter()
            .all(|a| peer_row(b2, a).is_some_and(|p| p["via"] == "gossip"))
    });
    for a in ["a1", "a2", "a3"] {
        let rows = b2.query(&uuid_of(a));
        assert_eq!(rows.len(), 1, "{rows:?}");
        assert_eq!(rows[0]["host"], a, "{rows:?}");
        assert_eq!(rows[0]["label"], format!("disk of {a}"), "{rows:?}");
        assert_eq!(rows[0]["live"], true, "{rows:?}");
        let p = peer_row(b2, a).unwrap_or_else(|| panic!("{a} not among b2's peers"));
        assert_eq!(p["via"], "gossip", "{p}");
        assert_eq!(p["live"], true, "{p}");
    }
    // Membership spreads on its own schedule (SWIM), apart from the pushes that brought the
    // disks: all five others, each once, eventually.
    within(
        "b2's failure detector to hold the 5 others live",
        LONG,
        &[b2],
        || {
            let g = &b2.status()["gossip"];
            g["members"] == 5 && g["members_live"] == 5
        },
    );
    let st = b2.status();
    let g = &st["gossip"];
    assert_eq!(g["advertise"], format!("198.18.2.2:{GOSSIP_PORT}"), "{g}");
    assert!(g["listen"].is_string(), "{g}");
    assert_eq!(g["seeds"], serde_json::json!([]), "{g}");
    assert!(g["bytes_in"].as_u64().unwrap_or(0) > 0, "{g}");
    assert!(g["bytes_out"].as_u64().unwrap_or(0) > 0, "{g}");
    let b1 = lab.get("b1");
    within("b1's seed to show joined", LONG, &[b1], || {
        b1.status()["gossip"]["seeds"][0]["state"] == "joined"
    });
    let g1 = b1.status()["gossip"].clone();
    assert_eq!(
        g1["seeds"][0]["seed"],
        format!("198.18.1.1:{GOSSIP_PORT}"),
        "{g1}"
    );
}

#[test]
#[ignore = "needs root"]
fn a_new_disk_crosses_the_router_within_seconds() {
    util::require_root();
    // Long multicast and scan intervals: only the change itself can carry the new disk.
    let (_keys, _k, mut lab) = fleet(2, &["--announce-interval", "60s", "--disk-interval", "60s"]);
    seed(&mut lab, "b1", "198.18.1.1");
    lab.start_all();
    let (b1, b2) = (lab.get("b1"), lab.get("b2"));
    within(
        "b1 and b2 to list a1's and a2's disks",
        LONG,
        &[b1, b2],
        || {
            [b1, b2]
                .iter()
                .all(|b| sighting(b, "a1").is_some() && sighting(b, "a2").is_some())
        },
    );
    // a2 is not the seed: the change must travel from a member b1 and b2 learned of.
    let new_uuid = "a2a2a2a2-1111-4000-8000-000000000002";
    let a2 = lab.host("a2");
    a2.set_disks(&format!(
        "{}{}",
        disk_of("a2"),
        disk_line("/dev/sdz9", new_uuid, "new on a2")
    ));
    a2.client(&["refresh"]).expect_code(0);
    let (b1, b2) = (lab.get("b1"), lab.get("b2"));
    within("a2's new disk on b1 and b2", FEW_SECONDS, &[b1, b2], || {
        [b1, b2].iter().all(|b| {
            b.query(new_uuid)
                .first()
                .is_some_and(|r| r["host"] == "a2" && r["live"] == true)
        })
    });
}

#[test]
#[ignore = "needs root"]
fn a_stopped_or_killed_host_is_not_live_across_the_router_and_keeps_its_disks() {
    util::require_root();
    // Multicast expiry (default 180 s) is far beyond these limits, and b1 hears no
    // multicast from a's subnet anyway: only the gossip failure detector can explain it.
    let (_keys, _k, mut lab) = fleet(3, &[]);
    seed(&mut lab, "b1", "198.18.1.1");
    for h in ["a1", "a2", "a3", "b1"] {
        lab.host(h).start();
    }
    let b1 = lab.get("b1");
    within("b1 to list a1..a3 live", LONG, &[b1], || {
        ["a1", "a2", "a3"]
            .iter()
            .all(|a| sighting(b1, a) == Some(true))
    });
    // A clean stop.
    lab.host("a2").stop();
    let b1 = lab.get("b1");
    within("a2 (SIGTERM) not live on b1", FEW_SECONDS, &[b1], || {
        sighting(b1, "a2") == Some(false)
    });
    let p = peer_row(b1, "a2").expect("a2 still among b1's peers");
    assert_eq!(p["live"], false, "{p}");
    // A kill -9: nothing said, only missed probes.
    lab.host("a3").kill9();
    let b1 = lab.get("b1");
    within("a3 (SIGKILL) not live on b1", KILL_DETECTION, &[b1], || {
        sighting(b1, "a3") == Some(false)
    });
    // Both keep their disks, last known; the host that still runs is still live.
    for a in ["a2", "a3"] {
        let rows = b1.query(&uuid_of(a));
        assert_eq!(rows.len(), 1, "{a}: {rows:?}");
        assert_eq!(rows[0]["host"], a, "{rows:?}");
        assert_eq!(rows[0]["live"], false, "{rows:?}");
    }
    assert_eq!(sighting(b1, "a1"), Some(true), "{}", gossip_state(b1));
}

#[test]
#[ignore = "needs root"]
fn strangers_learn_nothing_inject_nothing_and_are_counted() {
    util::require_root();
    let (keys, _k, mut lab) = fleet(2, &["--announce-interval", "5s"]);
    seed(&mut lab, "b1", "198.18.1.1");
    // b2 holds another key and points at a real member.
    let other = keygen(keys.path(), "other.key");
    {
        let b2 = lab.host("b2");
        let i = b2.args.iter().position(|a| a == "--key-file").unwrap();
        b2.args[i + 1] = other.display().to_string();
    }
    seed(&mut lab, "b2", "198.18.1.1");
    lab.start_all();
    let (a1, a2, b1, b2) = (lab.get("a1"), lab.get("a2"), lab.get("b1"), lab.get("b2"));
    within("b1 to list a1's and a2's disks", LONG, &[b1, a1], || {
        sighting(b1, "a1").is_some() && sighting(b1, "a2").is_some()
    });
    // b2 tried: a1 refused it for its key (nothing else on a1's subnet uses that key).
    within("a1 to refuse b2's key", LONG, &[a1, b2], || {
        rejected(&a1.status(), "unknown_key") >= 1
    });
    let st = b2.status();
    assert_ne!(
        st["gossip"]["seeds"][0]["state"], "joined",
        "{}",
        st["gossip"]
    );
    for a in ["a1", "a2", "b1"] {
        assert_eq!(sighting(b2, a), None, "b2 learned {a}'s disk");
    }
    let b2_peers = b2.peers();
    assert!(b2_peers.is_empty(), "b2 heard of: {b2_peers:?}");
    for h in [a1, a2, b1] {
        assert_eq!(
            sighting(h, "b2"),
            None,
            "b2 injected its disk into {}",
            h.name
        );
        assert!(
            peer_row(h, "b2").is_none(),
            "b2 is among {}'s peers",
            h.name
        );
    }

    // What a keyless diskd would say (a plaintext datagram in the multicast format), and
    // garbage, sent straight to a1's gossip port from b2's host.
    let plain = diskd::peer::wire::encode(&diskd::peer::wire::Envelope {
        node_id: "0123456789abcdef0123456789abcdef".into(),
        node: "keyless".into(),
        boot: 1,
        seq: 1,
        sent_ms: diskd::model::now_millis(),
        body: diskd::peer::wire::Body::Ping,
    });
    const GARBAGE: u64 = 30;
    let before = a1.status();
    python_in(
        b2,
        &format!(
            "import socket,os,random\n\
             s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n\
             t=('198.18.1.1',{GOSSIP_PORT})\n\
             s.sendto(bytes.fromhex('{}'),t)\n\
             for i in range({GARBAGE}):\n\
             \x20   d=os.urandom(random.randint(1,1200))\n\
             \x20   if i%3==1: d=b'DSKS\\x01'+d\n\
             \x20   s.sendto(d,t)\n",
            hex::encode(&plain)
        ),
    );
    within(
        "a1 to count the plaintext datagram and the garbage",
        LONG,
        &[a1],
        || {
            let st = a1.status();
            rejected(&st, "plaintext") > rejected(&before, "plaintext")
                && counter(&st, "packets_rejected") > counter(&before, "packets_rejected") + GARBAGE
        },
    );
    // a1 still answers and is still a live member on the other subnet.
    assert_eq!(sighting(a1, "a1"), Some(true));
    assert!(peer_row(a1, "keyless").is_none(), "{:?}", a1.peers());
    let b1 = lab.get("b1");
    assert_eq!(sighting(b1, "a1"), Some(true), "{}", gossip_state(b1));
    assert!(
        peer_row(a1, "b1").is_some_and(|p| p["live"] == true),
        "{}",
        gossip_state(a1)
    );
}

#[test]
#[ignore = "needs root"]
fn a_peer_heard_both_ways_is_listed_once() {
    util::require_root();
    let (_keys, _k, mut lab) = fleet(2, &["--announce-interval", "2s"]);
    seed(&mut lab, "a1", "198.18.1.2");
    seed(&mut lab, "a2", "198.18.1.1");
    seed(&mut lab, "b1", "198.18.1.1");
    for h in ["a1", "a2", "b1"] {
        lab.host(h).start();
    }
    let (a1, b1) = (lab.get("a1"), lab.get("b1"));
    // Every `via` shown for a peer across the router, from the moment it is listed: it was
    // never heard by multicast, so it must never be shown as a multicast peer, not even
    // before the first status refresh after it is heard.
    let mut across: Vec<(String, String)> = Vec::new();
    let mut note = |observer: &Host, node: &str| -> Option<serde_json::Value> {
        let row = peer_row(observer, node)?;
        let seen = (
            format!("{node} on {}", observer.name),
            row["via"].to_string(),
        );
        if !across.contains(&seen) {
            across.push(seen);
        }
        Some(row)
    };
    within(
        "a1 to hear a2 both ways and b1 by gossip, b1 to hear a1 and a2 by gossip",
        LONG,
        &[a1, b1],
        || {
            let b1_on_a1 = note(a1, "b1").is_some_and(|p| p["via"] == "gossip");
            let a_on_b1 = ["a1", "a2"]
                .iter()
                .all(|a| note(b1, a).is_some_and(|p| p["via"] == "gossip" && p["live"] == true));
            b1_on_a1 && a_on_b1 && peer_row(a1, "a2").is_some_and(|p| p["via"] == "both")
        },
    );
    assert!(
        across.iter().all(|(_, via)| via != "\"multicast\""),
        "a peer only reachable across the router was listed as a multicast peer: {across:?}"
    );
    let peers = a1.peers();
    assert_eq!(peers.len(), 2, "{peers:?}");
    assert_eq!(b1.peers().len(), 2, "{:?}", b1.peers());
    // One row per disk too, however many ways it arrived (b1's inventory may land a
    // moment after b1 is first listed: it is pushed when each sees the other).
    within("a1 to list b1's disk", LONG, &[a1, b1], || {
        !a1.query(&uuid_of("b1")).is_empty()
    });
    assert_eq!(a1.query(&uuid_of("a2")).len(), 1);
    assert_eq!(a1.query(&uuid_of("b1")).len(), 1);
}

#[test]
#[ignore = "needs root"]
fn a_restarted_host_keeps_what_gossip_taught_then_rejoins() {
    util::require_root();
    let (_keys, _k, mut lab) = fleet(1, &[]);
    seed(&mut lab, "b1", "198.18.1.1");
    lab.start_all();
    let b1 = lab.get("b1");
    within("b1 to list a1's disk live", LONG, &[b1], || {
        sighting(b1, "a1") == Some(true)
    });
    // b1 restarts while a1 is down: whatever b1 lists of a1 then came from its store,
    // since nothing can answer it.
    lab.host("b1").stop();
    lab.host("a1").stop();
    lab.host("b1").start();
    let b1 = lab.get("b1");
    let rows = b1.query(&uuid_of("a1"));
    assert_eq!(rows.len(), 1, "b1 forgot a1's disk across its restart");
    assert_eq!(rows[0]["host"], "a1", "{rows:?}");
    assert!(peer_row(b1, "a1").is_some(), "{:?}", b1.peers());
    let seeds = b1.status()["gossip"]["seeds"].clone();
    assert_ne!(
        seeds[0]["state"], "joined",
        "joined a seed that is down: {seeds}"
    );
    // a1 comes back with a new disk (b1 may still show a1 live from before its restart, so
    // only something a1 says after its return proves that b1 joined again).
    let new_uuid = "a1a1a1a1-2222-4000-8000-0000000000a1";
    lab.host("a1").set_disks(&format!(
        "{}{}",
        disk_of("a1"),
        disk_line("/dev/sdy1", new_uuid, "new on a1")
    ));
    lab.host("a1").start();
    let b1 = lab.get("b1");
    within("b1 to rejoin a1 and list its new disk", LONG, &[b1], || {
        b1.query(new_uuid)
            .first()
            .is_some_and(|r| r["live"] == true)
    });
    // The status is refreshed on its own tick: eventually.
    within("b1's seed to show joined", LONG, &[b1], || {
        b1.status()["gossip"]["seeds"][0]["state"] == "joined"
    });
}

#[test]
#[ignore = "needs root"]
fn a_seed_that_starts_late_is_joined() {
    util::require_root();
    let (_keys, _k, mut lab) = fleet(2, &[]);
    seed(&mut lab, "b1", "198.18.1.1");
    seed(&mut lab, "b2", "198.18.1.1");
    let started = Instant::now();
    lab.host("b1").start();
    lab.host("b2").start();
    // The seed is down: b1 says so. (The seed's row, once the status has one: the gossip
    // status is refreshed on its own tick, so the first look may find none yet.)
    let seed_state = |b: &Host| -> Option<serde_json::Value> {
        let st = b.status();
        let s = st["gossip"]["seeds"].as_array()?.clone();
        assert_eq!(s.len(), 1, "{}", st["gossip"]);
        assert_eq!(s[0]["seed"], format!("198.18.1.1:{GOSSIP_PORT}"), "{s:?}");
        Some(s[0]["state"].clone())
    };
    let b1 = lab.get("b1");
    let mut states = Vec::new();
    wait_for("b1 to report its seed unanswered", LONG, || {
        let Some(s) = seed_state(b1) else {
            return false;
        };
        states.push(s.clone());
        s == "trying" || s == "never answered"
    });
    assert_ne!(
        states[0], "joined",
        "joined a seed that is not running: {states:?}"
    );
    // A deliberate wait for time to pass: the seed starts some seconds in, so that b1 and
    // b2 are past their first attempts.
    std::thread::sleep(Duration::from_secs(3).saturating_sub(started.elapsed()));
    let b1 = lab.get("b1");
    let now = seed_state(b1);
    assert!(
        now.as_ref().is_some_and(|s| s != "joined"),
        "joined a seed that is not running: {now:?}"
    );
    lab.host("a1").start();
    let (b1, b2) = (lab.get("b1"), lab.get("b2"));
    within("b1 and b2 to join the late seed", LONG, &[b1, b2], || {
        [b1, b2].iter().all(|b| {
            sighting(b, "a1") == Some(true) && seed_state(b).is_some_and(|s| s == "joined")
        })
    });
    // And a1 learned them.
    let a1 = lab.get("a1");
    within("a1 to list b1's and b2's disks", LONG, &[a1], || {
        sighting(a1, "b1").is_some() && sighting(a1, "b2").is_some()
    });
}

#[test]
fn a_seed_without_a_key_is_refused_with_one_line() {
    let d = util::TestDaemon::new("").arg("--seed").arg("198.18.1.1");
    let (code, stderr) = d.run_expect_exit_within(Duration::from_secs(20));
    assert_eq!(code, 2, "{stderr}");
    // Log lines may come first; the error is the one line of diskd's own.
    let lines: Vec<&str> = stderr.lines().filter(|l| l.starts_with("diskd:")).collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(
        lines[0]["diskd:".len()..]
            .trim_start()
            .starts_with("gossip.seeds:"),
        "{stderr}"
    );
}
