use super::*;
use crate::model::DiskRecord;
use crate::store::tests::disk;
use crate::store::{Owner, Published};
use std::process::Command;

#[test]
fn a_flush_clears_only_what_was_written_before_it() {
    let mut d = Durability::default();
    d.wrote(Wrote::Host("a"));
    let mark = d.mark();
    d.wrote(Wrote::Host("b"));
    d.wrote(Wrote::Peer("p"));
    d.flushed(mark);
    assert_eq!(d.hosts.keys().collect::<Vec<_>>(), ["b"]);
    assert!(d.health().is_ok());
    d.flushed(d.mark());
    assert!(d.hosts.is_empty() && d.peers.is_empty());
}

#[test]
fn while_failing_only_a_rewrite_makes_writes_durable() {
    let mut d = Durability::default();
    d.wrote(Wrote::Host("a"));
    d.wrote(Wrote::LocalSeen);
    assert!(d.failed("No space left on device".into(), 1_000));
    assert!(!d.failed("again".into(), 2_000), "logged once per failure");
    // A write that failed is not in sled: a later good flush does not make it durable.
    d.flushed(d.mark());
    let h = d.health();
    assert_eq!(
        (h.state, h.error.as_deref(), h.failing_since, h.failures),
        ("failing", Some("again"), Some(1_000), 2)
    );
    assert_eq!(h.pending_hosts, 1);
    let mark = d.mark();
    d.wrote(Wrote::Host("c")); // during the rewrite
    assert_eq!(d.recovered(mark, 5_000), Some(4_000));
    let h = d.health();
    assert!(h.is_ok() && h.error.is_none() && h.failing_since.is_none());
    assert_eq!(d.hosts.keys().collect::<Vec<_>>(), ["c"]);
    assert!(d.local_seen.is_none());
    assert_eq!(d.recovered(d.mark(), 6_000), None);
}

fn disks(n: usize, tag: &str) -> Vec<DiskRecord> {
    (0..n)
        .map(|i| {
            disk(
                &format!("{i:08x}-{tag}-0000-0000-000000000000"),
                &format!("{tag}-{i}-{}", "x".repeat(100)),
                &format!("/dev/{tag}{i}"),
            )
        })
        .collect()
}

/// Unmounts the tmpfs (dropping the store first), also when an assertion fails.
struct Tmpfs(tempfile::TempDir);

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0.path()).status();
    }
}

fn sh(args: &[&str]) {
    let st = Command::new(args[0]).args(&args[1..]).status().unwrap();
    assert!(st.success(), "{args:?}: {st}");
}

/// Fill the filesystem of `dir` with `dir/filler` until ENOSPC.
fn fill(dir: &Path) {
    use std::io::Write;
    let mut f = std::fs::File::create(dir.join("filler")).unwrap();
    let block = vec![0xa5u8; 64 * 1024];
    loop {
        if f.write_all(&block).is_err() {
            break;
        }
    }
    let _ = f.sync_all();
}

/// The store on a small tmpfs: it fills, writes fail, our inventory is published all the
/// same; space returns, a repair (reopening sled) makes everything durable, and a fresh
/// open finds what was committed before the failure and what came during it.
#[test]
#[ignore = "needs root"]
fn a_full_disk_then_room_again() {
    crate::test_support::needs_root("mounts a tmpfs");
    let tmp = Tmpfs(tempfile::tempdir().unwrap());
    let dir = tmp.0.path().to_path_buf();
    sh(&[
        "mount",
        "-t",
        "tmpfs",
        "-o",
        "size=8m",
        "tmpfs",
        dir.to_str().unwrap(),
    ]);
    let path = dir.join("store");
    let before = disks(50, "before");
    let during = disks(3000, "during");
    let node_id;
    {
        let s = Store::open(&path).unwrap();
        node_id = s.node_id().to_string();
        s.publish(Owner::Local, "me", None, &before, 1_000)
            .into_result()
            .unwrap();
        assert!(s.health().is_ok());
        fill(&dir);
        // Big enough not to fit in sled's buffers: the write or the flush fails.
        let Published { diff, durable } = s.publish(Owner::Local, "me", None, &during, 2_000);
        let err = durable.expect_err("a full disk fails the write");
        assert_eq!(diff.appeared.len(), 3000);
        assert_eq!(s.local_inventory().len(), 3000, "published in memory");
        assert_eq!(s.find("/dev/during2999").unwrap().len(), 1);
        // A peer's inventory and record: kept in memory too.
        let peer = crate::model::PeerRecord {
            node_id: "peer1".into(),
            node: "host1".into(),
            addr: None,
            first_seen: 2_000,
            last_seen: 2_000,
            gone: false,
            legacy: false,
            disks: 500,
            key: None,
            boot: 1,
            sent_ms: 2_000,
        };
        let _ = s.upsert_peer(&peer);
        let Published { diff, durable } = s.publish(
            Owner::Peer("peer1"),
            "host1",
            None,
            &disks(500, "peer"),
            2_000,
        );
        assert!(durable.is_err(), "sled stays failed after ENOSPC");
        // What changed, for the fleet events, though the write failed.
        assert_eq!(diff.appeared.len(), 500);
        assert_eq!(s.find("/dev/peer499").unwrap().len(), 1);
        let h = s.health();
        assert_eq!(h.state, "failing");
        assert!(h.error.unwrap().contains(&err.to_string()[..10]));
        // Still full: retrying fails and keeps answering from memory.
        assert!(s.repair().is_err());
        assert_eq!(s.health().state, "failing");
        assert_eq!(s.local_inventory().len(), 3000);
        // Room again.
        std::fs::remove_file(dir.join("filler")).unwrap();
        s.repair().expect("repairs once there is room");
        let h = s.health();
        assert!(h.is_ok(), "{h:?}");
        // sled 0.34 stays failed after ENOSPC: the repair reopened it.
        assert!(h.reopens >= 1, "{h:?}");
        assert_eq!(h.pending_hosts, 0);
        // And writes work normally afterwards.
        s.publish(Owner::Local, "me", None, &during[..2999], 3_000)
            .into_result()
            .unwrap();
        s.publish(Owner::Local, "me", None, &during, 4_000)
            .into_result()
            .unwrap();
    }
    let s = Store::open(&path).unwrap();
    assert_eq!(s.node_id(), node_id);
    assert_eq!(s.local_inventory().len(), 3000);
    // Disks committed before the failure are still known (not present now).
    let old = s.find("/dev/before7").unwrap();
    assert_eq!(old.len(), 1);
    assert!(!old[0].present);
    assert_eq!(s.host_seen(&node_id), Some(4_000));
    assert_eq!(s.find("/dev/peer499").unwrap().len(), 1);
    assert_eq!(s.peer("peer1").map(|p| p.disks), Some(500));
    drop(s);
}
