use super::sniff::check_log_readable;
use super::*;
use crate::model::{Hardware, Probe};
use std::sync::atomic::Ordering;

/// An ext4 disk with a UUID and a label, nothing else known (also for the compaction and
/// health tests).
pub(super) fn disk(uuid: &str, label: &str, dev: &str) -> DiskRecord {
    fs_disk(Some(uuid), Some(label), dev, Some("ext4"))
}

/// A disk known by what blkid says of it (`uuid`, `label`, filesystem type `fstype`) at
/// `dev`, nothing else known.
fn fs_disk(uuid: Option<&str>, label: Option<&str>, dev: &str, fstype: Option<&str>) -> DiskRecord {
    DiskRecord {
        uuid: uuid.map(Into::into),
        label: label.map(Into::into),
        device: dev.into(),
        fstype: fstype.map(Into::into),
        ..DiskRecord::default()
    }
}

/// A sighting of `disk` on host `host` (node `node_id`, at `addr`), seen from `first_seen`
/// to `last_seen`.
fn sighting(
    node_id: &str,
    host: &str,
    addr: &str,
    disk: DiskRecord,
    present: bool,
    first_seen: Millis,
    last_seen: Millis,
) -> Sighting {
    Sighting {
        node_id: node_id.into(),
        host: host.into(),
        addr: Some(addr.into()),
        disk,
        present,
        first_seen,
        last_seen,
    }
}

#[test]
fn node_id_is_made_once_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    let id = {
        let s = Store::open(dir.path()).unwrap();
        s.node_id().to_string()
    };
    assert_eq!(id.len(), 32);
    let s = Store::open(dir.path()).unwrap();
    assert_eq!(s.node_id(), id);
}

#[test]
fn publishing_is_a_diff_and_keeps_vanished_disks() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path()).unwrap();
    let a = disk("AAAA-1", "alpha", "/dev/sda1");
    let b = disk("bbbb-2", "beta", "/dev/sdb1");
    let d = s
        .publish(Owner::Local, "h", None, &[a.clone(), b.clone()], 1000)
        .into_result()
        .unwrap();
    assert_eq!(d.appeared.len(), 2);
    let d = s
        .publish(Owner::Local, "h", None, &[a.clone(), b.clone()], 2000)
        .into_result()
        .unwrap();
    assert!(d.is_empty());
    let d = s
        .publish(Owner::Local, "h", None, std::slice::from_ref(&a), 3000)
        .into_result()
        .unwrap();
    assert_eq!(d.vanished, vec![b.clone()]);
    let all = s.sightings().unwrap();
    assert_eq!(all.len(), 2);
    let gone = all.iter().find(|x| x.disk == b).unwrap();
    assert!(!gone.present);
    assert_eq!(gone.last_seen, 2000);
    assert_eq!(gone.first_seen, 1000);
    // It comes back: present again, first_seen kept.
    let d = s
        .publish(Owner::Local, "h", None, &[a, b.clone()], 4000)
        .into_result()
        .unwrap();
    assert_eq!(d.appeared, vec![b.clone()]);
    let back = s.find("beta").unwrap();
    assert_eq!(back.len(), 1);
    assert!(back[0].present);
    assert_eq!(back[0].first_seen, 1000);
}

#[test]
fn find_matches_uuid_any_case_label_exact_and_device() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path()).unwrap();
    s.publish(
        Owner::Local,
        "h",
        None,
        &[disk("AbCd-1", "My Disk", "/dev/sdc1")],
        1,
    )
    .into_result()
    .unwrap();
    assert_eq!(s.find("abcd-1").unwrap().len(), 1);
    assert_eq!(s.find("ABCD-1").unwrap().len(), 1);
    assert_eq!(s.find("My Disk").unwrap().len(), 1);
    assert_eq!(s.find("my disk").unwrap().len(), 0);
    assert_eq!(s.find("/dev/sdc1").unwrap().len(), 1);
    assert_eq!(s.find("/dev/sdc").unwrap().len(), 0);
}

#[test]
fn duplicate_uuids_in_one_inventory_are_both_kept() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path()).unwrap();
    let d = s
        .publish(
            Owner::Local,
            "h",
            None,
            &[
                disk("same", "a", "/dev/sda1"),
                disk("same", "b", "/dev/sdb1"),
            ],
            1,
        )
        .into_result()
        .unwrap();
    assert_eq!(d.appeared.len(), 2);
    assert_eq!(s.find("same").unwrap().len(), 2);
}

#[test]
fn peer_and_local_data_are_separate() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path()).unwrap();
    s.publish(Owner::Local, "me", None, &[disk("u1", "l1", "/dev/a")], 1)
        .into_result()
        .unwrap();
    s.publish(
        Owner::Peer("peer1"),
        "other",
        Some("198.18.0.2"),
        &[disk("u2", "l2", "/dev/b")],
        1,
    )
    .into_result()
    .unwrap();
    // A local scan without u1 does not touch the peer's record.
    s.publish(Owner::Local, "me", None, &[], 2)
        .into_result()
        .unwrap();
    let peer_rec = s.find("u2").unwrap();
    assert!(peer_rec[0].present);
    assert_eq!(peer_rec[0].addr.as_deref(), Some("198.18.0.2"));
    assert!(!s.find("u1").unwrap()[0].present);
}

#[test]
fn liveness_of_hosts() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path()).unwrap();
    let exp = Duration::from_secs(10);
    let me = s.node_id().to_string();
    assert!(s.host_is_live(&me, 1_000_000, exp));
    assert!(!s.host_is_live("unknown", 1_000_000, exp));
    let mut p = PeerRecord {
        node: "peer".into(),
        ..peer_rec("p", 100_000)
    };
    s.upsert_peer(&p).unwrap();
    assert!(s.host_is_live("p", 105_000, exp));
    assert!(!s.host_is_live("p", 111_000, exp));
    p.gone = true;
    s.upsert_peer(&p).unwrap();
    assert!(!s.host_is_live("p", 105_000, exp));
    assert_eq!(s.peers().len(), 1);
}

#[test]
fn data_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = Store::open(dir.path()).unwrap();
        s.publish(Owner::Local, "h", None, &[disk("u", "l", "/dev/x")], 5)
            .into_result()
            .unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(s.flush()).unwrap();
    }
    let s = Store::open(dir.path()).unwrap();
    assert_eq!(s.find("u").unwrap().len(), 1);
}

#[test]
fn wrong_schema_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    drop(Store::open(dir.path()).unwrap());
    write_schema(dir.path(), "99");
    let e = Store::open(dir.path()).unwrap_err();
    assert!(matches!(e, StoreError::Schema { .. }), "{e}");
    assert!(e.to_string().contains("99"));
    // Still 99: nothing was rewritten.
    let db = sled_open(dir.path());
    assert_eq!(
        &*db.open_tree(META)
            .unwrap()
            .get(KEY_SCHEMA)
            .unwrap()
            .unwrap(),
        b"99"
    );
}

#[test]
fn a_data_file_sled_would_start_over_is_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let id = {
        let s = Store::open(dir.path()).unwrap();
        s.publish(Owner::Local, "h", None, &[disk("u", "l", "/dev/x")], 1)
            .into_result()
            .unwrap();
        s.node_id().to_string()
    };
    // A real store passes the check and opens again, data and id intact.
    check_log_readable(dir.path()).unwrap();
    {
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(s.node_id(), id);
        assert_eq!(s.find("u").unwrap().len(), 1);
    }

    // Overwritten with garbage (sled would zero it and start afresh): refused, unchanged.
    let db = dir.path().join("db");
    let garbage: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&db, &garbage).unwrap();
    let e = Store::open(dir.path()).unwrap_err();
    assert!(matches!(e, StoreError::Unreadable { .. }), "{e}");
    assert!(e.to_string().contains("nothing was changed"), "{e}");
    assert_eq!(std::fs::read(&db).unwrap(), garbage);

    // A log sled made but never wrote (all zeroes) is nothing to lose: opened as new.
    std::fs::write(&db, vec![0u8; 4096]).unwrap();
    check_log_readable(dir.path()).unwrap();
}

#[test]
fn no_store_yet_and_tiny_files_are_left_to_sled() {
    let dir = tempfile::tempdir().unwrap();
    check_log_readable(&dir.path().join("missing")).unwrap();
    check_log_readable(dir.path()).unwrap();
    std::fs::write(dir.path().join("db"), b"short").unwrap();
    check_log_readable(dir.path()).unwrap();
}

// ---- schema 3: one value per host, history, conversion of schema 2 ----

fn peer_rec(id: &str, last_seen: Millis) -> PeerRecord {
    PeerRecord {
        node_id: id.into(),
        node: format!("host-{id}"),
        addr: None,
        first_seen: 0,
        last_seen,
        gone: false,
        legacy: false,
        disks: 0,
        key: None,
        boot: 0,
        sent_ms: 0,
    }
}

#[test]
fn an_unchanged_inventory_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path()).unwrap();
    let writes = || s.inner.host_writes.load(Ordering::Relaxed);
    let inv = [disk("u1", "l1", "/dev/a"), disk("u2", "l2", "/dev/b")];
    s.publish(Owner::Peer("p1"), "peer", Some("192.0.2.9"), &inv, 1)
        .into_result()
        .unwrap();
    assert_eq!(writes(), 1);
    for t in 2..10 {
        let d = s
            .publish(Owner::Peer("p1"), "peer", Some("192.0.2.9"), &inv, t)
            .into_result()
            .unwrap();
        assert!(d.is_empty());
    }
    assert_eq!(writes(), 1, "announces that change nothing write nothing");
    s.publish(Owner::Local, "me", None, &inv[..1], 10)
        .into_result()
        .unwrap();
    s.publish(Owner::Local, "me", None, &inv[..1], 11)
        .into_result()
        .unwrap();
    assert_eq!(writes(), 2);
    assert_eq!(s.host_seen(s.node_id()), Some(11));
    // One changed disk rewrites that host only.
    let d = s
        .publish(
            Owner::Peer("p1"),
            "peer",
            Some("192.0.2.9"),
            &[inv[0].clone(), disk("u2", "renamed", "/dev/b")],
            12,
        )
        .into_result()
        .unwrap();
    assert_eq!(d.changed.len(), 1);
    assert_eq!(writes(), 3);
    assert_eq!(s.find("renamed").unwrap().len(), 1);
    assert!(s.find("l2").unwrap().is_empty());
    // Two host values (no peer record was upserted), meta (schema, node id, local seen).
    assert_eq!(s.records(), 2 + 3);
}

/// `n` disks, the `i`th with UUID `{i:08x}-uuid`, label `label {i}` and device `/dev/d{i}`.
fn many_disks(n: usize) -> Vec<DiskRecord> {
    (0..n)
        .map(|i| {
            disk(
                &format!("{i:08x}-uuid"),
                &format!("label {i}"),
                &format!("/dev/d{i}"),
            )
        })
        .collect()
}

#[test]
fn a_large_inventory_is_split_and_read_back_whole() {
    let dir = tempfile::tempdir().unwrap();
    let many = many_disks(3000);
    {
        let s = Store::open(dir.path()).unwrap();
        s.publish(Owner::Peer("big"), "big-host", None, &many, 5)
            .into_result()
            .unwrap();
        s.publish(Owner::Peer("small"), "small-host", None, &many[..2], 5)
            .into_result()
            .unwrap();
        let chunks = *lock(&s.inner.chunks).get("big").unwrap();
        assert!(chunks > 1, "{chunks}");
        s.sled().unwrap().db.flush().unwrap();
    }
    let s = Store::open(dir.path()).unwrap();
    assert_eq!(s.sightings_len(), 3002);
    assert_eq!(s.find("label 2999").unwrap().len(), 1);
    assert_eq!(s.find("00000001-UUID").unwrap().len(), 2);
    assert_eq!(s.find_host("big-host").unwrap().len(), 3000);
    // Fewer chunks after shrinking... vanished disks are kept, so forget the host instead.
    s.remove_peer("big").unwrap();
    assert_eq!(s.sightings_len(), 2);
    s.sled().unwrap().db.flush().unwrap();
    drop(s);
    let s = Store::open(dir.path()).unwrap();
    assert_eq!(s.sightings_len(), 2);
    assert!(s.find_host("big-host").unwrap().is_empty());
    assert_eq!(s.find("label 1").unwrap().len(), 1);
}

/// Each stay of a history: its device, first and last seen, and whether it is current.
fn stays(h: &[Stay]) -> Vec<(&str, Millis, Millis, bool)> {
    h.iter()
        .map(|x| (x.device.as_str(), x.first_seen, x.last_seen, x.current))
        .collect()
}

#[test]
fn history_keeps_every_stay_newest_first() {
    let dir = tempfile::tempdir().unwrap();
    let u = "AAAA-1111";
    {
        let s = Store::open(dir.path()).unwrap();
        s.publish(Owner::Local, "h", None, &[disk(u, "x", "/dev/sdb1")], 1000)
            .into_result()
            .unwrap();
        s.publish(Owner::Local, "h", None, &[disk(u, "x", "/dev/sdb1")], 2000)
            .into_result()
            .unwrap();
        // Moved to another device: a new stay; the old one lasted until 2000.
        s.publish(Owner::Local, "h", None, &[disk(u, "x", "/dev/sdc1")], 3000)
            .into_result()
            .unwrap();
        let h = s.history("aaaa-1111").unwrap();
        assert_eq!(
            stays(&h),
            vec![
                ("/dev/sdc1", 3000, 3000, true),
                ("/dev/sdb1", 1000, 2000, false)
            ]
        );
        // The old device finds it too.
        assert_eq!(s.history("/dev/sdb1").unwrap(), h);
        // Then it moves to a peer: its stay on h ends, one begins there.
        s.publish(Owner::Local, "h", None, &[], 4000)
            .into_result()
            .unwrap();
        s.upsert_peer(&peer_rec("p", 5000)).unwrap();
        s.publish(
            Owner::Peer("p"),
            "peer",
            Some("192.0.2.7"),
            &[disk(u, "x", "/dev/sdz9")],
            5000,
        )
        .into_result()
        .unwrap();
        s.sled().unwrap().db.flush().unwrap();
    }
    let s = Store::open(dir.path()).unwrap();
    let h = s.history("x").unwrap();
    let got: Vec<_> = h
        .iter()
        .map(|x| {
            (
                x.host.as_str(),
                x.device.as_str(),
                x.first_seen,
                x.last_seen,
                x.current,
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("peer", "/dev/sdz9", 5000, 5000, true),
            ("h", "/dev/sdc1", 3000, 3000, false),
            ("h", "/dev/sdb1", 1000, 2000, false)
        ]
    );
    assert_eq!(h[0].addr.as_deref(), Some("192.0.2.7"));
    assert!(s.history("nothing").unwrap().is_empty());
}

#[test]
fn history_is_bounded_per_disk() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path()).unwrap();
    for t in 0..100u64 {
        let dev = format!("/dev/sd{}", t % 2);
        s.publish(Owner::Local, "h", None, &[disk("u", "l", &dev)], 1000 + t)
            .into_result()
            .unwrap();
    }
    let h = s.history("u").unwrap();
    assert_eq!(h.len(), MAX_STAYS);
    assert_eq!(h[0].first_seen, 1099);
    assert!(h[0].current);
    assert_eq!(h[MAX_STAYS - 1].first_seen, 1099 - MAX_STAYS as u64 + 1);
    // A disk without a UUID is its device on its host.
    let nouuid = DiskRecord {
        uuid: None,
        ..disk("", "plain", "/dev/sdq")
    };
    s.publish(Owner::Local, "h", None, &[nouuid], 2000)
        .into_result()
        .unwrap();
    assert_eq!(s.history("plain").unwrap().len(), 1);
}

/// A copy of the schema-2 fixture (the sled files only) in a temp dir.
fn fixture_copy() -> tempfile::TempDir {
    copy_of_fixture("store-v2")
}

/// A copy of the sled files of `tests/fixtures/NAME` in a temp dir (never opened in place:
/// opening converts it).
fn copy_of_fixture(name: &str) -> tempfile::TempDir {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    let dir = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(&src).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name == "conf" || name == "db" || name.starts_with("snap.") {
            std::fs::copy(e.path(), dir.path().join(&name)).unwrap();
        }
    }
    std::fs::create_dir_all(dir.path().join("blobs")).unwrap();
    dir
}

/// `term` finds one sighting, of disk `want`.
fn assert_finds_one(s: &Store, term: &str, want: &DiskRecord) {
    let f = s.find(term).unwrap();
    assert_eq!(f.len(), 1, "{term}: {f:?}");
    assert_eq!(&f[0].disk, want, "{term}");
}

const FIXTURE_A: &str = "07964bbb2408b9270cc78230daa887cc";
const FIXTURE_B: &str = "a6ea126af91f5044e7ec6e9f716bf51f";

/// Host `fixture-b` of the schema-2 and schema-3 fixtures (node `node_id`), as its peer
/// record reads: gone, with two disks, heard from `seen.0` to `seen.1`, its last datagram
/// of run `boot` sent at `sent_ms`.
fn fixture_b_peer(node_id: &str, seen: (Millis, Millis), boot: u64, sent_ms: Millis) -> PeerRecord {
    PeerRecord {
        node: "fixture-b".into(),
        addr: Some("127.0.0.1".into()),
        first_seen: seen.0,
        gone: true,
        disks: 2,
        boot,
        sent_ms,
        ..peer_rec(node_id, seen.1)
    }
}

/// The disk `uuid` (any case) of host `fixture-a` is attached here at `dir`, mounted on
/// its host at `path` (as both the schema-2 and the schema-3 fixture hold one).
#[track_caller]
fn assert_attached_from_fixture_a(s: &Store, uuid: &str, dir: &str, path: &str) {
    assert_eq!(
        s.attach(uuid),
        Some(AttachRecord {
            dir: dir.into(),
            host: "fixture-a".into(),
            path: path.into(),
        })
    );
}

/// `disks` published as the fixtures' own inventory (host fixture-a at 192.0.2.2) at `now`,
/// once written and flushed.
fn publish_as_fixture_a(s: &Store, disks: &[DiskRecord], now: Millis) -> InventoryDiff {
    s.publish(Owner::Local, "fixture-a", Some("192.0.2.2"), disks, now)
        .into_result()
        .unwrap()
}

/// Everything the fixture holds (see tests/fixtures/store-v2/README.md), as read now.
fn assert_fixture(s: &Store) {
    assert_eq!(s.node_id(), FIXTURE_A);
    let (t_a, t_b) = (1795688288055, 1795688290093);
    let a = |disk, present| sighting(FIXTURE_A, "fixture-a", "192.0.2.2", disk, present, t_a, t_a);
    let b = |disk| sighting(FIXTURE_B, "fixture-b", "127.0.0.1", disk, true, t_b, t_b);
    let backup = fs_disk(
        Some("6fe176fb-83a0-4e4a-af6a-f578ca7a1f65"),
        Some("backup"),
        "/dev/sdb1",
        Some("ext4"),
    );
    let big = fs_disk(
        Some("A1B2C3D4-0000-4000-8000-0000000000C1"),
        Some("my \"big\" disk 2"),
        "/dev/sdc1",
        Some("xfs"),
    );
    let nouuid = fs_disk(None, Some("nouuid"), "/dev/sde1", Some("vfat"));
    let peer_disk = fs_disk(
        Some("0b0b0b0b-1111-4222-8333-444455556666"),
        Some("peer disk"),
        "/dev/sdd1",
        Some("ext4"),
    );
    assert_eq!(
        s.sightings().unwrap(),
        vec![
            a(backup.clone(), true),
            a(big.clone(), false),
            b(nouuid.clone()),
            b(peer_disk.clone())
        ]
    );
    assert_eq!(s.sightings_len(), 4);
    assert_eq!(s.host_seen(FIXTURE_A), Some(1795688291767));
    assert_eq!(s.local_inventory(), vec![backup.clone()]);
    assert_eq!(
        s.peers(),
        vec![fixture_b_peer(
            FIXTURE_B,
            (1795688290063, 1795688292789),
            8860704361122469820,
            1795688292789,
        )]
    );
    assert_eq!(s.host_seen(FIXTURE_B), Some(1795688292789));
    assert_attached_from_fixture_a(
        s,
        "6FE176FB-83A0-4E4A-AF6A-F578CA7A1F65",
        "/mnt/backup here",
        "/srv/diskd/6fe176fb-83a0-4e4a-af6a-f578ca7a1f65",
    );
    let one = |term: &str, want: &DiskRecord| assert_finds_one(s, term, want);
    one("6FE176FB-83a0-4e4a-af6a-f578ca7a1f65", &backup);
    one("a1b2c3d4-0000-4000-8000-0000000000c1", &big);
    one("my \"big\" disk 2", &big);
    one("/dev/sdd1", &peer_disk);
    one("nouuid", &nouuid);
    assert_eq!(s.find_host("fixture-b").unwrap().len(), 2);
    assert_eq!(s.find_host("fixture-a").unwrap().len(), 2);
    let h = s.history("backup").unwrap();
    assert_eq!(h.len(), 1);
    assert_eq!((h[0].first_seen, h[0].current), (1795688288055, true));
}

/// Set the schema of a closed store to `schema` (as another release, or a run interrupted
/// after its commit point, left it).
fn write_schema(path: &Path, schema: &str) {
    let db = sled_open(path);
    db.open_tree(META)
        .unwrap()
        .insert(KEY_SCHEMA, schema.as_bytes())
        .unwrap();
    db.flush().unwrap();
}

/// The schema and tree names of a closed store.
fn layout_of(path: &Path) -> (String, Vec<String>) {
    let db = sled_open(path);
    let schema = db
        .open_tree(META)
        .unwrap()
        .get(KEY_SCHEMA)
        .unwrap()
        .unwrap();
    let names = db
        .tree_names()
        .iter()
        .map(|n| String::from_utf8_lossy(n).into_owned())
        .collect();
    (String::from_utf8_lossy(&schema).into_owned(), names)
}

#[test]
fn a_schema_2_store_is_converted_keeping_everything() {
    let dir = fixture_copy();
    assert_eq!(layout_of(dir.path()).0, "2");
    {
        let s = Store::open(dir.path()).unwrap();
        assert_fixture(&s);
    }
    let (schema, trees) = layout_of(dir.path());
    assert_eq!(schema, "6");
    assert!(
        !trees.iter().any(|t| t == "sightings" || t == "index"),
        "{trees:?}"
    );
    // Opened again as the schema-4 store it now is.
    let s = Store::open(dir.path()).unwrap();
    assert_fixture(&s);
    // And it goes on working: the vanished disk comes back.
    let disks = s.local_inventory();
    let back = s.find("my \"big\" disk 2").unwrap()[0].disk.clone();
    let d = publish_as_fixture_a(&s, &[disks[0].clone(), back], 1795688300000);
    assert_eq!(d.appeared.len(), 1);
    assert_eq!(s.history("my \"big\" disk 2").unwrap().len(), 2);
}

#[test]
fn an_interrupted_conversion_is_redone_from_scratch() {
    let dir = fixture_copy();
    // A run that wrote the new tree and died before the schema flipped...
    drop(Store::open_until(dir.path(), migrate::Until::NewTrees).unwrap());
    {
        let db = sled_open(dir.path());
        assert_eq!(
            db.open_tree(META)
                .unwrap()
                .get(KEY_SCHEMA)
                .unwrap()
                .unwrap(),
            b"2"
        );
        // ... and half-written: one host missing, a stray key from elsewhere.
        let hosts = db.open_tree(HOSTS).unwrap();
        hosts.remove(chunk_key(FIXTURE_B, 0)).unwrap();
        hosts
            .insert(chunk_key("ffff", 0), &b"\0\0\0\x01junk"[..])
            .unwrap();
        db.flush().unwrap();
    }
    {
        let s = Store::open(dir.path()).unwrap();
        assert_fixture(&s);
        assert!(s.find_host("host-ffff").unwrap().is_empty());
        assert_eq!(lock(&s.inner.chunks).len(), 2, "the stray key was cleared");
    }
    assert_eq!(layout_of(dir.path()).0, "6");

    // Died after the flip, before the old trees were dropped: they are dropped now.
    let dir = fixture_copy();
    drop(Store::open_until(dir.path(), migrate::Until::NewTrees).unwrap());
    write_schema(dir.path(), "6");
    assert_fixture(&Store::open(dir.path()).unwrap());
    let (schema, trees) = layout_of(dir.path());
    assert_eq!(schema, "6");
    assert!(
        !trees.iter().any(|t| t == "sightings" || t == "index"),
        "{trees:?}"
    );
}

#[test]
fn readers_answer_while_a_local_write_is_in_progress() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path()).unwrap();
    s.publish(Owner::Local, "h", None, &[disk("u", "l", "/dev/x")], 1)
        .into_result()
        .unwrap();
    // A writer holding its lock (as during a write and flush) does not hold readers.
    let _writing = lock(&s.inner.local_writer);
    let s2 = s.clone();
    let t = std::thread::spawn(move || {
        (
            s2.find("u").unwrap().len(),
            s2.sightings().unwrap().len(),
            s2.local_inventory().len(),
            s2.history("u").unwrap().len(),
        )
    });
    assert_eq!(t.join().unwrap(), (1, 1, 1, 1));
}

/// Open the store's sled directly, as a test inspecting it does. A `Store` dropped just
/// before may still be closing (sled's own threads hold its lock for a moment), so a lock
/// error is retried for a while.
fn sled_open(path: &std::path::Path) -> sled::Db {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match sled::open(path) {
            Ok(db) => return db,
            Err(e) if std::time::Instant::now() < deadline && e.to_string().contains("lock") => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(e) => panic!("cannot open {}: {e}", path.display()),
        }
    }
}

#[test]
fn a_hosts_last_known_disks_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path()).unwrap();
    let peer = "0123456789abcdef0123456789abcdef";
    let many: Vec<DiskRecord> = (0..MAX_ABSENT_PER_HOST + 10)
        .map(|i| disk(&format!("u{i}"), &format!("l{i}"), &format!("/dev/d{i}")))
        .collect();
    s.publish(Owner::Peer(peer), "busy", None, &many, 1)
        .into_result()
        .unwrap();
    assert_eq!(s.find_host("busy").unwrap().len(), MAX_ABSENT_PER_HOST + 10);
    // All of them gone at once, one new disk: the oldest absent ones beyond the cap go.
    s.publish(
        Owner::Peer(peer),
        "busy",
        None,
        &[disk("new", "n", "/dev/n")],
        2,
    )
    .into_result()
    .unwrap();
    let known = s.find_host("busy").unwrap();
    assert_eq!(known.len(), MAX_ABSENT_PER_HOST + 1);
    assert_eq!(known.iter().filter(|x| x.present).count(), 1);
    drop(s);
    let s = Store::open(dir.path()).unwrap();
    assert_eq!(s.find_host("busy").unwrap().len(), MAX_ABSENT_PER_HOST + 1);
}

// ---- schema 4: hardware, identity by WWN or serial, conversion of schema 3 ----

/// Every hardware field known.
fn full_hardware(serial: &str, wwn: &str) -> crate::model::Hardware {
    crate::model::Hardware {
        size: Some(4_000_787_030_016),
        model: Some("WDC WD40EFRX-68N32N0".into()),
        vendor: Some("ATA".into()),
        serial: Some(serial.into()),
        wwn: Some(wwn.into()),
        transport: Some("sata".into()),
        removable: Some(false),
        rotational: Some(true),
        parent: Some("/dev/sda".into()),
        backing_file: Some("/var/lib/images/disk \"one\".img".into()),
    }
}

/// A disk without a filesystem, known by its hardware only.
fn blank(dev: &str, serial: Option<&str>, wwn: Option<&str>) -> DiskRecord {
    DiskRecord {
        probe: Default::default(),
        uuid: None,
        label: None,
        device: dev.into(),
        fstype: None,
        mountpoints: vec![],
        hardware: crate::model::Hardware {
            serial: serial.map(Into::into),
            wwn: wwn.map(Into::into),
            ..Default::default()
        },
        health: None,
        fs: None,
    }
}

/// The bytes of a key.
fn key_bytes(k: &Key<'_>) -> Vec<u8> {
    k.bytes().collect()
}

#[test]
fn a_key_is_the_identity_byte_for_byte() {
    use crate::model::wwn_key;
    let uuids = [
        None,
        Some(""),
        Some("  "),
        Some("6FE176FB-83a0-4E4A-af6a-f578ca7a1f65"),
        Some(" spaced UUID "),
    ];
    let wwns = [
        None,
        Some(""),
        Some(" \t"),
        Some("0x5000C500A1B2C3D4"),
        Some("naa.5000C500A1B2C3D4"),
        Some("NAA.5000c500a1b2c3d4"),
        Some("eui.0025388B91B12345"),
        Some("  0X5000C500A1B2C3D4  "),
        Some("0x"),
        Some("naa"),
        Some("5000C500A1B2C3D4"),
        Some("0xnaa.ABC"),
        Some("Éui.ÄB"),
    ];
    let serials = [
        None,
        Some(""),
        Some(" "),
        Some("WD-WCC4E1234567"),
        Some("s/n 1 "),
    ];
    let devices = ["/dev/sdb", "/dev/disk/by-id/ata-X Y", ""];
    let mut records = Vec::new();
    for u in uuids {
        for w in wwns {
            for s in serials {
                for d in devices {
                    records.push(DiskRecord {
                        uuid: u.map(Into::into),
                        label: Some("l".into()),
                        ..blank(d, s, w)
                    });
                }
            }
        }
    }
    for d in &records {
        let id = d.identity();
        assert_eq!(key_bytes(&Key::of(d)), id.as_bytes(), "{d:?}");
        let mut dup = Key::of(d);
        dup.dup = true;
        assert_eq!(
            key_bytes(&dup),
            format!("{id}\0{}", d.device).as_bytes(),
            "{d:?}"
        );
        // An entry's key, from the stored (borrowed) disk.
        let view = DiskView::of(d);
        assert_eq!(view.identity(), id);
        for dup in [false, true] {
            let e = EntryView {
                disk: view.clone(),
                present: true,
                first_seen: 0,
                last_seen: 0,
                since: 0,
                dup,
                place: None,
                past: vec![],
                readings: Default::default(),
            };
            let want = if dup {
                format!("{id}\0{}", d.device)
            } else {
                id.clone()
            };
            assert_eq!(key_bytes(&e.key()), want.as_bytes(), "{d:?}");
        }
    }
    // Compared and hashed as that text.
    for a in records.iter().step_by(7) {
        for b in records.iter().step_by(5) {
            let (ka, kb) = (Key::of(a), Key::of(b));
            assert_eq!(ka.cmp(&kb), a.identity().cmp(&b.identity()), "{a:?} {b:?}");
            if ka == kb {
                use std::hash::{BuildHasher, BuildHasherDefault};
                let h = BuildHasherDefault::<TermHasher>::default();
                assert_eq!(h.hash_one(ka), h.hash_one(kb));
            }
        }
    }
    // The WWN term is the term of `wwn_key`.
    for w in wwns.into_iter().flatten() {
        assert_eq!(
            layout::wwn_key_bytes(w).collect::<Vec<u8>>(),
            wwn_key(w).as_bytes(),
            "{w:?}"
        );
        assert_eq!(term_wwn(w), term(b'w', &wwn_key(w)), "{w:?}");
    }
}

#[test]
fn find_by_serial_exactly_and_by_wwn_in_any_form() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path()).unwrap();
    let whole = blank(
        "/dev/sdb",
        Some("WD-WCC4E1234567"),
        Some("0x5000C500A1B2C3D4"),
    );
    let nvme = blank("/dev/nvme0n1", Some("S4EWNX0R123456"), None);
    let part = disk("1111-2222", "data", "/dev/sdb1");
    s.publish(
        Owner::Local,
        "h",
        None,
        &[whole.clone(), nvme.clone(), part],
        1,
    )
    .into_result()
    .unwrap();
    s.publish(
        Owner::Peer("p"),
        "peer",
        None,
        &[blank("/dev/sdx", None, Some("eui.0025388B91B12345"))],
        1,
    )
    .into_result()
    .unwrap();
    let only = |term: &str, want: &str| {
        let f = s.find(term).unwrap();
        assert_eq!(f.len(), 1, "{term}: {f:?}");
        assert_eq!(f[0].disk.device, want, "{term}");
    };
    only("WD-WCC4E1234567", "/dev/sdb");
    only("S4EWNX0R123456", "/dev/nvme0n1");
    assert!(
        s.find("wd-wcc4e1234567").unwrap().is_empty(),
        "serial: exact"
    );
    assert!(s.find("WD-WCC4E123456").unwrap().is_empty());
    for w in [
        "0x5000C500A1B2C3D4",
        "0x5000c500a1b2c3d4",
        "naa.5000c500a1b2c3d4",
        "NAA.5000C500A1B2C3D4",
        "5000c500a1b2c3d4",
    ] {
        only(w, "/dev/sdb");
    }
    only("0x0025388b91b12345", "/dev/sdx");
    only("eui.0025388B91B12345", "/dev/sdx");
    assert!(s.find("0x5000c500a1b2c3d").unwrap().is_empty());
    // The full record comes back, hardware and all.
    assert_eq!(s.find("WD-WCC4E1234567").unwrap()[0].disk, whole);
    assert_eq!(s.history("S4EWNX0R123456").unwrap().len(), 1);
}

#[test]
fn a_blank_disk_is_its_serial_on_every_host_in_history() {
    let dir = tempfile::tempdir().unwrap();
    let serial = "ZA1B2C3D";
    let s = Store::open(dir.path()).unwrap();
    // On host A (this node) at /dev/sdb, then gone from it.
    s.publish(
        Owner::Local,
        "host-a",
        None,
        &[blank("/dev/sdb", Some(serial), None)],
        1000,
    )
    .into_result()
    .unwrap();
    s.publish(Owner::Local, "host-a", None, &[], 2000)
        .into_result()
        .unwrap();
    // Then on host B, another device path, and B has a disk of its own at /dev/sdb.
    s.upsert_peer(&peer_rec("b", 3000)).unwrap();
    s.publish(
        Owner::Peer("b"),
        "host-b",
        Some("192.0.2.8"),
        &[
            blank("/dev/sdc", Some(serial), None),
            blank("/dev/sdb", None, None),
        ],
        3000,
    )
    .into_result()
    .unwrap();
    let got = |term: &str| -> Vec<(String, String, bool)> {
        s.history(term)
            .unwrap()
            .into_iter()
            .map(|x| (x.host, x.device, x.current))
            .collect()
    };
    let both = vec![
        ("host-b".to_string(), "/dev/sdc".to_string(), true),
        ("host-a".to_string(), "/dev/sdb".to_string(), false),
    ];
    assert_eq!(got(serial), both);
    // The device path it had on A finds the same disk; B's own /dev/sdb is another disk
    // (a device path identifies a disk on one host only).
    let by_dev = got("/dev/sdb");
    assert_eq!(by_dev.len(), 3, "{by_dev:?}");
    assert!(by_dev.contains(&("host-b".into(), "/dev/sdb".into(), true)));
    // Both sightings are found by the serial.
    assert_eq!(s.find(serial).unwrap().len(), 2);

    // A disk known by its WWN moves from B to A the same way.
    let wwn = "naa.5000cca01234abcd";
    s.publish(
        Owner::Peer("b"),
        "host-b",
        Some("192.0.2.8"),
        &[blank("/dev/sdd", None, Some(wwn))],
        4000,
    )
    .into_result()
    .unwrap();
    s.publish(Owner::Peer("b"), "host-b", Some("192.0.2.8"), &[], 5000)
        .into_result()
        .unwrap();
    s.publish(
        Owner::Local,
        "host-a",
        None,
        &[blank(
            "/dev/sde",
            Some("other serial"),
            Some("0x5000CCA01234ABCD"),
        )],
        6000,
    )
    .into_result()
    .unwrap();
    let h = got("0x5000cca01234abcd");
    assert_eq!(
        h,
        vec![
            ("host-a".to_string(), "/dev/sde".to_string(), true),
            ("host-b".to_string(), "/dev/sdd".to_string(), false),
        ]
    );
    assert_eq!(got("other serial"), h);
}

#[test]
fn hardware_round_trips_and_a_serial_keeps_its_entry_across_devices() {
    let dir = tempfile::tempdir().unwrap();
    let whole = DiskRecord {
        probe: Default::default(),
        uuid: None,
        label: None,
        device: "/dev/sda".into(),
        fstype: None,
        mountpoints: vec![],
        hardware: full_hardware("WD-WX12345678", "0x50014ee2b5c6d7e8"),
        health: None,
        fs: None,
    };
    let mut part = disk("AAAA-0001", "data \"one\"", "/dev/sda1");
    part.mountpoints = vec!["/srv/data one".into()];
    part.hardware = crate::model::Hardware {
        size: Some(1 << 40),
        model: Some("".into()),
        removable: Some(true),
        rotational: Some(false),
        parent: Some("/dev/sda".into()),
        ..Default::default()
    };
    let stick = blank("/dev/sdb", Some("USB-0001"), None);
    let inv = vec![whole.clone(), part.clone(), stick.clone()];
    {
        let s = Store::open(dir.path()).unwrap();
        s.publish(Owner::Local, "h", None, &inv, 1000)
            .into_result()
            .unwrap();
        // A change of the hardware alone is a change.
        let mut bigger = whole.clone();
        bigger.hardware.size = Some(8_001_563_222_016);
        let d = s
            .publish(
                Owner::Local,
                "h",
                None,
                &[bigger.clone(), part.clone(), stick.clone()],
                2000,
            )
            .into_result()
            .unwrap();
        assert_eq!((d.changed, d.was), (vec![bigger], vec![whole.clone()]));
        s.publish(Owner::Local, "h", None, &inv, 3000)
            .into_result()
            .unwrap();
    }
    let s = Store::open(dir.path()).unwrap();
    let mut back = s.local_inventory();
    back.sort_by(|a, b| a.device.cmp(&b.device));
    assert_eq!(back, inv);
    assert_eq!(s.find("WD-WX12345678").unwrap()[0].disk, whole);
    assert_eq!(s.find("naa.50014EE2B5C6D7E8").unwrap()[0].disk, whole);
    assert_eq!(s.find("/dev/sda1").unwrap()[0].disk, part);

    // The stick moves to another device: the same entry (one sighting, first seen kept),
    // a changed disk rather than one vanished and one appeared, and a past stay.
    let moved = blank("/dev/sdc", Some("USB-0001"), None);
    let d = s
        .publish(
            Owner::Local,
            "h",
            None,
            &[whole.clone(), part.clone(), moved.clone()],
            4000,
        )
        .into_result()
        .unwrap();
    assert!(d.appeared.is_empty() && d.vanished.is_empty(), "{d:?}");
    assert_eq!(
        (d.changed, d.was),
        (vec![moved.clone()], vec![stick.clone()])
    );
    drop(s);
    let s = Store::open(dir.path()).unwrap();
    assert_eq!(s.sightings_len(), 3);
    let f = s.find("USB-0001").unwrap();
    assert_eq!(f.len(), 1);
    assert_eq!((f[0].first_seen, &f[0].disk), (1000, &moved));
    assert_eq!(
        stays(&s.history("USB-0001").unwrap()),
        vec![
            ("/dev/sdc", 4000, 4000, true),
            ("/dev/sdb", 1000, 3000, false)
        ]
    );
}

const V3_A: &str = "e9570b22aa8ac2c1c200563a4cced0c4";
const V3_B: &str = "3b2d244500ce5cfcbb612cb4f4cc15ee";

/// Everything the schema-3 fixture holds (see tests/fixtures/store-v3/README.md), as read
/// now: the same as the previous release read it, every hardware field unknown.
fn assert_fixture_v3(s: &Store) {
    assert_eq!(s.node_id(), V3_A);
    let sig = |id: &str, disk, present, first_seen, last_seen| {
        let (host, addr) = if id == V3_A {
            ("fixture-a", "192.0.2.2")
        } else {
            ("fixture-b", "127.0.0.1")
        };
        sighting(id, host, addr, disk, present, first_seen, last_seen)
    };
    let t_a = 1795706183561;
    let t_b = 1795706183751;
    let blank_sdh = fs_disk(None, None, "/dev/sdh", None);
    let backup = fs_disk(
        Some("5d6e7f80-1a2b-4c3d-8e9f-0a1b2c3d4e5f"),
        Some("backup"),
        "/dev/sdb1",
        Some("ext4"),
    );
    let moving = fs_disk(
        Some("77777777-2222-4333-8444-555566667777"),
        Some("moving disk"),
        "/dev/sdg1",
        Some("ext4"),
    );
    let big = fs_disk(
        Some("C0FFEE00-0000-4000-8000-0000000000C3"),
        Some("my \"big\" disk 3"),
        "/dev/sdc1",
        Some("xfs"),
    );
    let nouuid = fs_disk(None, Some("no uuid 'here'"), "/dev/sde1", Some("vfat"));
    let peer_disk = fs_disk(
        Some("0b0b0b0b-1111-4222-8333-444455556666"),
        Some("peer disk"),
        "/dev/sdd1",
        Some("ext4"),
    );
    let all = s.sightings().unwrap();
    assert_eq!(
        all,
        vec![
            sig(V3_B, nouuid.clone(), true, t_b, t_b),
            sig(V3_B, peer_disk.clone(), true, t_b, t_b),
            sig(V3_A, blank_sdh.clone(), true, t_a, t_a),
            sig(V3_A, backup.clone(), true, t_a, t_a),
            sig(V3_A, moving.clone(), true, t_a, 1795706185402),
            sig(V3_A, big.clone(), false, t_a, t_a),
        ]
    );
    assert!(all.iter().all(|x| x.disk.hardware.is_empty()));
    assert_eq!(s.sightings_len(), 6);
    assert_eq!(s.host_seen(V3_A), Some(1795706185402));
    assert_eq!(s.host_seen(V3_B), Some(1795706186527));
    assert_eq!(
        s.local_inventory(),
        vec![blank_sdh.clone(), backup.clone(), moving.clone()]
    );
    assert_eq!(
        s.host_inventory(V3_B),
        vec![nouuid.clone(), peer_disk.clone()]
    );
    assert_eq!(
        s.peers(),
        vec![fixture_b_peer(
            V3_B,
            (1795706183730, 1795706186527),
            4703081784212532427,
            1795706186526,
        )]
    );
    assert_attached_from_fixture_a(
        s,
        "5D6E7F80-1A2B-4C3D-8E9F-0A1B2C3D4E5F",
        "/mnt/backup \"here\"",
        "/srv/diskd/5d6e7f80-1a2b-4c3d-8e9f-0a1b2c3d4e5f",
    );
    let one = |term: &str, want: &DiskRecord| assert_finds_one(s, term, want);
    one("5D6E7F80-1a2b-4c3d-8e9f-0a1b2c3d4e5f", &backup);
    one("c0ffee00-0000-4000-8000-0000000000c3", &big);
    one("my \"big\" disk 3", &big);
    one("/dev/sdh", &blank_sdh);
    one("no uuid 'here'", &nouuid);
    one("/dev/sdd1", &peer_disk);
    assert!(s.find("/dev/sdf1").unwrap().is_empty(), "a past device");
    assert_eq!(s.find_host("fixture-a").unwrap().len(), 4);
    assert_eq!(s.find_host("fixture-b").unwrap().len(), 2);
    // The history of the disk that moved, by its UUID, its label, either device.
    let stay = |device: &str, first_seen, last_seen, current| Stay {
        node_id: V3_A.into(),
        host: "fixture-a".into(),
        addr: Some("192.0.2.2".into()),
        device: device.into(),
        label: Some("moving disk".into()),
        first_seen,
        last_seen,
        current,
    };
    let moved = vec![
        stay("/dev/sdg1", 1795706185402, 1795706185402, true),
        stay("/dev/sdf1", t_a, t_a, false),
    ];
    for term in [
        "77777777-2222-4333-8444-555566667777",
        "moving disk",
        "/dev/sdf1",
        "/dev/sdg1",
    ] {
        assert_eq!(s.history(term).unwrap(), moved, "{term}");
    }
    let h = s.history("my \"big\" disk 3").unwrap();
    assert_eq!(h.len(), 1);
    assert_eq!(
        (h[0].first_seen, h[0].last_seen, h[0].current),
        (t_a, t_a, false)
    );
    let h = s.history("no uuid 'here'").unwrap();
    assert_eq!(h.len(), 1);
    assert_eq!((h[0].host.as_str(), h[0].current), ("fixture-b", true));
}

/// A copy of fixture `name`, a store of schema `schema` with hosts `nodes` (none of them
/// converted yet), opened once and closed: converted to schema 6 keeping everything
/// (`assert_held`) without a host value written by the open itself, with every tree and
/// every host marked current.
#[track_caller]
fn convert_fixture(
    name: &str,
    schema: &str,
    nodes: &[&str],
    assert_held: fn(&Store),
) -> tempfile::TempDir {
    let dir = copy_of_fixture(name);
    assert_eq!(layout_of(dir.path()).0, schema);
    assert_eq!(
        current_marks(dir.path()),
        nodes
            .iter()
            .map(|n| (n.to_string(), false))
            .collect::<BTreeMap<_, _>>()
    );
    {
        let s = Store::open(dir.path()).unwrap();
        assert_held(&s);
        assert_eq!(s.inner.host_writes.load(Ordering::Relaxed), 0);
    }
    let (schema, trees) = layout_of(dir.path());
    assert_eq!(schema, "6");
    for t in ["meta", "hosts", "peers", "attaches"] {
        assert!(trees.iter().any(|x| x == t), "{t}: {trees:?}");
    }
    assert_converted(dir.path());
    dir
}

/// A closed store is of schema 6, every host's chunk 0 marked current.
#[track_caller]
fn assert_converted(path: &Path) {
    assert_eq!(layout_of(path).0, "6");
    assert!(current_marks(path).values().all(|&v6| v6));
}

/// A conversion of a closed store of schema `schema` (3, 4 or 5) that rewrote one host and
/// died before the schema flipped: the schema is still `schema`, one host marked current.
#[track_caller]
fn convert_one_host_and_die(path: &Path, schema: &str) {
    drop(Store::open_until(path, migrate::Until::Hosts(1)).unwrap());
    assert_eq!(layout_of(path).0, schema);
    let marks = current_marks(path);
    assert_eq!(marks.values().filter(|&&v| v).count(), 1, "{marks:?}");
}

/// Add to a closed store a host `node_id` named "peer" whose one disk is `peer` (seen from
/// 5 to 6), as an older schema wrote it (`encode`: `migrate::encode_v4` or `encode_v5`).
fn write_old_peer(
    path: &Path,
    node_id: &str,
    peer: &DiskRecord,
    encode: fn(&HostView<'_>, usize) -> Vec<Vec<u8>>,
) {
    let db = sled_open(path);
    let entries = vec![layout::Entry {
        key: peer.identity(),
        s: Sighting {
            node_id: node_id.into(),
            host: "peer".into(),
            addr: None,
            disk: peer.clone(),
            present: true,
            first_seen: 5,
            last_seen: 6,
        },
        since: 5,
    }];
    let chunks = layout::encode_entries("peer", None, &entries).unwrap();
    let view = layout::HostView::decode(layout::unframed(&chunks[0])).unwrap();
    let hosts = db.open_tree(HOSTS).unwrap();
    for (i, c) in encode(&view, layout::CHUNK_BYTES).into_iter().enumerate() {
        hosts.insert(chunk_key(node_id, i as u32), c).unwrap();
    }
    db.flush().unwrap();
}

/// A disk for `write_old_peer`: UUID `uuid` at `device`, serial number `serial`, nothing
/// else known.
fn old_peer_disk(uuid: &str, device: &str, serial: &str) -> DiskRecord {
    DiskRecord {
        uuid: Some(uuid.into()),
        device: device.into(),
        hardware: Hardware {
            serial: Some(serial.into()),
            ..Hardware::default()
        },
        ..DiskRecord::default()
    }
}

/// Every key and value of tree `hosts` of a closed store.
fn hosts_of(path: &Path) -> Vec<(Vec<u8>, Vec<u8>)> {
    let db = sled_open(path);
    db.open_tree(HOSTS)
        .unwrap()
        .iter()
        .map(|kv| {
            let (k, v) = kv.unwrap();
            (k.to_vec(), v.to_vec())
        })
        .collect()
}

/// The count (marked) each host's chunk 0 starts with, of `hosts_of` a store.
fn chunk0_counts(hosts: &[(Vec<u8>, Vec<u8>)]) -> Vec<u32> {
    hosts
        .iter()
        .filter(|(k, _)| parse_chunk_key(k).is_some_and(|(_, i)| i == 0))
        .map(|(_, v)| u32::from_be_bytes(v[..4].try_into().unwrap()))
        .collect()
}

/// For each host of a closed store: whether its chunk 0 is marked as this schema's (5).
fn current_marks(path: &Path) -> BTreeMap<String, bool> {
    hosts_of(path)
        .into_iter()
        .filter_map(|(k, v)| {
            let (id, i) = parse_chunk_key(&k)?;
            (i == 0).then(|| (id.to_string(), layout::is_current(&v)))
        })
        .collect()
}

#[test]
fn a_schema_3_store_is_converted_keeping_everything() {
    let dir = convert_fixture("store-v3", "3", &[V3_A, V3_B], assert_fixture_v3);
    // Opened again as the schema-5 store it now is, and it goes on working: the moving
    // disk is found by its serial now that the watchers report it, keeping its history.
    let s = Store::open(dir.path()).unwrap();
    assert_fixture_v3(&s);
    let mut inv = s.local_inventory();
    inv[2].hardware.serial = Some("MOV-1".into());
    let d = publish_as_fixture_a(&s, &inv, 1795706200000);
    assert_eq!(d.changed.len(), 1);
    assert_eq!(s.history("MOV-1").unwrap().len(), 2);
}

#[test]
fn reopening_a_converted_store_changes_nothing() {
    let dir = copy_of_fixture("store-v3");
    drop(Store::open(dir.path()).unwrap());
    let hosts = hosts_of(dir.path());
    let meta = layout_of(dir.path());
    {
        let s = Store::open(dir.path()).unwrap();
        assert_fixture_v3(&s);
        assert_eq!(s.inner.host_writes.load(Ordering::Relaxed), 0);
    }
    assert_eq!(hosts_of(dir.path()), hosts, "no host value was rewritten");
    assert_eq!(layout_of(dir.path()), meta);
}

#[test]
fn an_interrupted_schema_3_conversion_completes() {
    let dir = copy_of_fixture("store-v3");
    // A run that rewrote one host and died before the schema flipped.
    convert_one_host_and_die(dir.path(), "3");
    let converted = hosts_of(dir.path());
    {
        let s = Store::open(dir.path()).unwrap();
        assert_fixture_v3(&s);
    }
    assert_converted(dir.path());
    // The host converted before the crash was left as it was.
    let after = hosts_of(dir.path());
    let first = converted
        .iter()
        .find(|(k, v)| parse_chunk_key(k).is_some_and(|(_, i)| i == 0) && layout::is_current(v))
        .unwrap();
    assert!(after.contains(first));

    // A run that died before it rewrote any host changed nothing; the next one converts
    // everything.
    let dir = copy_of_fixture("store-v3");
    let before = hosts_of(dir.path());
    drop(Store::open_until(dir.path(), migrate::Until::Hosts(0)).unwrap());
    assert_eq!(hosts_of(dir.path()), before);
    assert_eq!(layout_of(dir.path()).0, "3");
    assert_fixture_v3(&Store::open(dir.path()).unwrap());
    assert_eq!(layout_of(dir.path()).0, "6");
}

#[test]
fn a_schema_3_store_left_with_schema_2_trees_drops_them() {
    // A schema-2 conversion by the previous release that died after its commit point.
    let dir = copy_of_fixture("store-v3");
    {
        let db = sled_open(dir.path());
        db.open_tree(migrate::V2_SIGHTINGS)
            .unwrap()
            .insert(b"x\0uuid:y", &b"old"[..])
            .unwrap();
        db.open_tree(META)
            .unwrap()
            .insert(migrate::V2_KEY_INDEXED, &b"1"[..])
            .unwrap();
        db.flush().unwrap();
    }
    assert_fixture_v3(&Store::open(dir.path()).unwrap());
    let (schema, trees) = layout_of(dir.path());
    assert_eq!(schema, "6");
    assert!(!trees.iter().any(|t| t == "sightings"), "{trees:?}");
}

#[test]
fn a_store_from_a_newer_diskd_is_refused_untouched() {
    let dir = copy_of_fixture("store-v3");
    drop(Store::open(dir.path()).unwrap());
    write_schema(dir.path(), "7");
    let hosts = hosts_of(dir.path());
    let e = Store::open(dir.path()).unwrap_err();
    match &e {
        StoreError::Schema {
            found, expected, ..
        } => assert_eq!((found.as_str(), *expected), ("7", 6)),
        other => panic!("{other}"),
    }
    assert!(e.to_string().contains("nothing was changed"), "{e}");
    assert_eq!(layout_of(dir.path()).0, "7");
    assert_eq!(hosts_of(dir.path()), hosts);
}

#[test]
fn a_large_schema_3_host_is_converted_whole() {
    // Values as the previous release wrote them: a host over several chunks (with a stray
    // key past its last chunk, which a write would have removed), a small one, and one that
    // does not decode (left as it is, as schema 3 left it).
    let dir = tempfile::tempdir().unwrap();
    let many = many_disks(3000);
    let mut moved = many.clone();
    moved[7].device = "/dev/moved7".into();
    let values: Vec<(String, Vec<Vec<u8>>)> = {
        let big = merge(None, "big-host", Some("192.0.2.3"), &many, 1000, 1000);
        let big = big.host.unwrap();
        let big_bytes = big.encode().unwrap().1;
        let big = HostView::decode(unframed(&big_bytes)).unwrap();
        let later = merge(
            Some(&big),
            "big-host",
            Some("192.0.2.3"),
            &moved,
            2000,
            1000,
        );
        let small = merge(None, "small-host", None, &many[..2], 1000, 1000);
        vec![
            (
                "big".to_string(),
                migrate::encode_v3(later.host.as_ref().unwrap(), layout::CHUNK_BYTES),
            ),
            (
                "small".to_string(),
                migrate::encode_v3(small.host.as_ref().unwrap(), layout::CHUNK_BYTES),
            ),
            ("junk".to_string(), vec![b"\0\0\0\x01junk".to_vec()]),
        ]
    };
    let big_chunks = values[0].1.len() as u32;
    assert!(big_chunks > 1, "{big_chunks}");
    {
        let db = sled_open(dir.path());
        let meta = db.open_tree(META).unwrap();
        meta.insert(KEY_SCHEMA, &b"3"[..]).unwrap();
        meta.insert(KEY_NODE_ID, &b"0123"[..]).unwrap();
        let hosts = db.open_tree(HOSTS).unwrap();
        for (id, chunks) in &values {
            for (i, c) in chunks.iter().enumerate() {
                hosts.insert(chunk_key(id, i as u32), c.clone()).unwrap();
            }
        }
        hosts
            .insert(chunk_key("big", big_chunks + 3), &b"stray"[..])
            .unwrap();
        db.flush().unwrap();
    }
    {
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(s.sightings_len(), 3002);
        assert_eq!(s.find("label 2999").unwrap().len(), 1);
        assert_eq!(s.find("00000001-UUID").unwrap().len(), 2);
        assert_eq!(s.find_host("big-host").unwrap().len(), 3000);
        let h = s.history("00000007-uuid").unwrap();
        let got: Vec<_> = h.iter().map(|x| (x.device.as_str(), x.current)).collect();
        assert_eq!(got, vec![("/dev/moved7", true), ("/dev/d7", false)]);
        assert_eq!(h[0].addr.as_deref(), Some("192.0.2.3"));
    }
    assert_eq!(layout_of(dir.path()).0, "6");
    let hosts = hosts_of(dir.path());
    let keys_of = |id: &str| -> Vec<u32> {
        hosts
            .iter()
            .filter_map(|(k, _)| parse_chunk_key(k).filter(|(h, _)| *h == id).map(|x| x.1))
            .collect()
    };
    let big_now = keys_of("big");
    assert_eq!(
        big_now,
        (0..big_now.len() as u32).collect::<Vec<_>>(),
        "numbered without a gap, the stray key gone"
    );
    // The value that never decoded is still there, unchanged.
    assert_eq!(keys_of("junk"), vec![0]);
    assert!(hosts.contains(&(chunk_key("junk", 0), b"\0\0\0\x01junk".to_vec())));
}

#[test]
fn a_disk_known_by_its_device_keeps_its_entry_once_its_hardware_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path()).unwrap();
    let host = fleet::Host {
        node_id: "x",
        name: "h",
        addr: None,
        local: true,
        sealed: true,
    };
    let part = disk("u-1", "data", "/dev/sda1");
    // As a store, a watcher or a peer older than hardware identity knew them.
    s.publish(
        Owner::Local,
        "h",
        None,
        &[
            blank("/dev/sda", None, None),
            part.clone(),
            blank("/dev/sdb", None, None),
        ],
        1000,
    )
    .into_result()
    .unwrap();
    // The hardware is read: the same disks, no disk vanished or appeared, no event.
    let sda = DiskRecord {
        hardware: full_hardware("WD-1", "naa.5000000000000001"),
        ..blank("/dev/sda", None, None)
    };
    let sdb = blank("/dev/sdb", Some("USB-2"), None);
    let d = s
        .publish(
            Owner::Local,
            "h",
            None,
            &[sda.clone(), part.clone(), sdb.clone()],
            2000,
        )
        .into_result()
        .unwrap();
    assert!(d.appeared.is_empty() && d.vanished.is_empty(), "{d:?}");
    assert_eq!(d.changed, vec![sda.clone(), sdb.clone()]);
    assert!(
        d.events(&host, 2000).is_empty(),
        "{:?}",
        d.events(&host, 2000)
    );
    assert_eq!(s.sightings_len(), 3);
    let f = s.find("USB-2").unwrap();
    assert_eq!((f.len(), f[0].first_seen), (1, 1000));
    assert_eq!(s.history("/dev/sdb").unwrap().len(), 1, "no new stay");
    // A watcher that fails to read it once: still the same disk, and back again.
    let d = s
        .publish(
            Owner::Local,
            "h",
            None,
            &[sda.clone(), part.clone(), blank("/dev/sdb", None, None)],
            3000,
        )
        .into_result()
        .unwrap();
    assert!(d.appeared.is_empty() && d.vanished.is_empty(), "{d:?}");
    let d = s
        .publish(
            Owner::Local,
            "h",
            None,
            &[sda.clone(), part.clone(), sdb.clone()],
            4000,
        )
        .into_result()
        .unwrap();
    assert!(d.appeared.is_empty() && d.vanished.is_empty(), "{d:?}");
    assert_eq!(s.sightings_len(), 3);
    assert_eq!(s.find("USB-2").unwrap()[0].first_seen, 1000);

    // Another disk with its own serial at that device is another disk.
    let other = blank("/dev/sdb", Some("USB-3"), None);
    let d = s
        .publish(
            Owner::Local,
            "h",
            None,
            &[sda.clone(), part.clone(), other.clone()],
            5000,
        )
        .into_result()
        .unwrap();
    assert_eq!((d.appeared, d.vanished), (vec![other], vec![sdb]));
    assert_eq!(s.sightings_len(), 4);
    // A disk that was absent is not taken over: it comes back as what it is.
    s.publish(Owner::Local, "h", None, &[sda.clone(), part.clone()], 6000)
        .into_result()
        .unwrap();
    let d = s
        .publish(
            Owner::Local,
            "h",
            None,
            &[sda, part, blank("/dev/sdb", None, None)],
            7000,
        )
        .into_result()
        .unwrap();
    assert_eq!(d.appeared.len(), 1);
    assert_eq!(s.sightings_len(), 5);
}

#[test]
fn the_blank_disk_of_a_schema_3_store_keeps_its_entry_when_its_serial_is_read() {
    let dir = copy_of_fixture("store-v3");
    let s = Store::open(dir.path()).unwrap();
    let mut inv = s.local_inventory();
    assert_eq!(inv[0].device, "/dev/sdh");
    inv[0].hardware = full_hardware("ZZ-SDH", "0x5000000000000999");
    let d = publish_as_fixture_a(&s, &inv, 1795706200000);
    assert!(d.appeared.is_empty() && d.vanished.is_empty(), "{d:?}");
    assert_eq!(s.sightings_len(), 6);
    let f = s.find("ZZ-SDH").unwrap();
    assert_eq!((f.len(), f[0].first_seen), (1, 1795706183561));
    assert_eq!(s.history("0x5000000000000999").unwrap().len(), 1);
}

/// The disk labelled `backup` of the schema-4 and schema-5 fixtures: ext4, UUID `uuid`, at
/// `device`, a virtual disk of 1 MiB.
fn fixture_backup(uuid: &str, device: &str, probe: Probe) -> DiskRecord {
    DiskRecord {
        uuid: Some(uuid.into()),
        label: Some("backup".into()),
        device: device.into(),
        fstype: Some("ext4".into()),
        hardware: Hardware {
            size: Some(1 << 20),
            transport: Some("virtual".into()),
            ..Hardware::default()
        },
        probe,
        ..DiskRecord::default()
    }
}

/// The disk `/dev/sdq` of the schema-4 and schema-5 fixtures: no filesystem, a 4 TB SATA
/// disk with serial `serial` and WWN `wwn` (every hardware field known but its parent and
/// backing file; its model another than `full_hardware`'s).
fn fixture_sdq(serial: &str, wwn: &str, probe: Probe) -> DiskRecord {
    DiskRecord {
        device: "/dev/sdq".into(),
        hardware: Hardware {
            model: Some("ST4000DM004-2CV1".into()),
            parent: None,
            backing_file: None,
            ..full_hardware(serial, wwn)
        },
        probe,
        ..DiskRecord::default()
    }
}

const V4_NODE: &str = "69b18685b2cf24b56c55a614f062fe11";

/// Everything the schema-4 fixture holds (see tests/fixtures/store-v4/README.md), as read
/// now: what the previous release read, every probe unknown (so nothing is blank).
fn assert_fixture_v4(s: &Store) {
    assert_eq!(s.node_id(), V4_NODE);
    let t = 1796520742871;
    let sig = |disk| sighting(V4_NODE, "fixture-v4", "192.0.2.2", disk, true, t, t);
    let backup = fixture_backup(
        "5d6e7f80-1a2b-4c3d-8e9f-0a1b2c3d4e5f",
        "/dev/sdr",
        Probe::Unknown,
    );
    let sdq = fixture_sdq("ZFN0V4", "naa.5000c500deadbeef", Probe::Unknown);
    assert_eq!(s.sightings().unwrap(), vec![sig(backup), sig(sdq.clone())]);
    assert_eq!(s.host_seen(V4_NODE), Some(t));
    // Schema 4 called sdq blank for want of a filesystem; nobody saw it empty.
    assert!(!sdq.probed_empty());
    assert_eq!(s.find("ZFN0V4").unwrap().len(), 1);
    assert_eq!(s.find("naa.5000C500DEADBEEF").unwrap().len(), 1);
}

#[test]
fn a_schema_4_store_is_converted_keeping_everything_and_calling_nothing_blank() {
    let dir = convert_fixture("store-v4", "4", &[V4_NODE], assert_fixture_v4);
    // Reopened as schema 5: nothing rewritten, and the watchers' next report (sdq probed
    // and found empty) is a change that is kept.
    let hosts = hosts_of(dir.path());
    let s = Store::open(dir.path()).unwrap();
    assert_fixture_v4(&s);
    let mut inv = s.local_inventory();
    let sdq = inv.iter_mut().find(|d| d.device == "/dev/sdq").unwrap();
    sdq.probe = Probe::Empty;
    let d = s
        .publish(
            Owner::Local,
            "fixture-v4",
            Some("192.0.2.2"),
            &inv,
            1796520800000,
        )
        .into_result()
        .unwrap();
    assert_eq!(d.changed.len(), 1);
    drop(s);
    assert_ne!(hosts_of(dir.path()), hosts);
    let s = Store::open(dir.path()).unwrap();
    let back = s.find("ZFN0V4").unwrap();
    assert_eq!(back[0].disk.probe, Probe::Empty);
    assert!(back[0].disk.probed_empty());
}

#[test]
fn an_interrupted_schema_4_conversion_completes_and_a_schema_4_reader_skips_converted_hosts() {
    // Two hosts written as schema 4 wrote them (the fixture's, and a peer's).
    let dir = copy_of_fixture("store-v4");
    let peer = old_peer_disk(
        "0b0b0b0b-1111-4222-8333-444455556666",
        "/dev/sdd1",
        "PEER-1",
    );
    write_old_peer(
        dir.path(),
        "ffffffffffffffffffffffffffffffff",
        &peer,
        migrate::encode_v4,
    );
    // A run that rewrote one host and died before the schema flipped.
    convert_one_host_and_die(dir.path(), "4");
    // What schema 4 would read of it now: the host still v4 whole, the converted one
    // nothing (never misread).
    let v4_read: Vec<bool> = chunk0_counts(&hosts_of(dir.path()))
        .into_iter()
        .map(|count| {
            // schema 4's `join_chunks`: its mark is the high bit, the rest the count
            count & layout::FRAME_V4 == layout::FRAME_V4
                && (count & !layout::FRAME_V4) as usize <= 1
        })
        .collect();
    assert_eq!(v4_read.iter().filter(|&&r| r).count(), 1, "{v4_read:?}");
    // The next start completes it.
    {
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(s.sightings_len(), 3);
        let peer = s.find("PEER-1").unwrap();
        assert_eq!(peer[0].host, "peer");
        assert_eq!(peer[0].disk.probe, Probe::Unknown);
        assert_eq!(s.find("ZFN0V4").unwrap().len(), 1);
    }
    assert_converted(dir.path());
}

const V5_NODE: &str = "7198cf448f34a5f987ba334b8d32d275";

/// Everything the schema-5 fixture holds (see tests/fixtures/store-v5/README.md), as read
/// now: what the previous release read, every disk with its history, health and usage
/// unknown and no readings.
fn assert_fixture_v5(s: &Store) {
    assert_eq!(s.node_id(), V5_NODE);
    let (t1, t2) = (1796552772131, 1796552773420);
    let sig = |disk, first_seen, last_seen| {
        sighting(
            V5_NODE,
            "fixture-v5",
            "192.0.2.2",
            disk,
            true,
            first_seen,
            last_seen,
        )
    };
    let backup = fixture_backup(
        "7a8b9c0d-1e2f-4a3b-8c4d-5e6f7a8b9c0d",
        "/dev/sds",
        Probe::Signature,
    );
    let sdq = fixture_sdq("ZFN0V5", "naa.5000c500feedf00d", Probe::Failed);
    let all = s.sightings().unwrap();
    assert_eq!(all, vec![sig(backup, t1, t2), sig(sdq, t1, t1)]);
    assert!(all
        .iter()
        .all(|x| x.disk.health.is_none() && x.disk.fs.is_none()));
    assert_eq!(s.host_seen(V5_NODE), Some(t2));
    assert_eq!(
        stays(&s.history("backup").unwrap()),
        vec![("/dev/sds", t2, t2, true), ("/dev/sdr", t1, t1, false)]
    );
    assert_eq!(s.history("ZFN0V5").unwrap().len(), 1);
    assert_eq!(s.find("naa.5000C500FEEDF00D").unwrap().len(), 1);
    assert_eq!(
        s.find("/dev/sdr").unwrap().len(),
        0,
        "a past device is history only"
    );
    for term in ["backup", "ZFN0V5", "/dev/sdr"] {
        assert_eq!(s.health_log(term).unwrap(), vec![], "{term}");
    }
}

#[test]
fn a_schema_5_store_is_converted_keeping_every_disk_and_its_history() {
    let dir = convert_fixture("store-v5", "5", &[V5_NODE], assert_fixture_v5);
    // Reopened as schema 6: nothing rewritten; the watchers' next report (sdq read by the
    // SMART watcher, the filesystem's usage) is a change that is kept, with its reading.
    let hosts = hosts_of(dir.path());
    drop(Store::open(dir.path()).unwrap());
    assert_eq!(hosts_of(dir.path()), hosts);
    let s = Store::open(dir.path()).unwrap();
    assert_fixture_v5(&s);
    let mut inv = s.local_inventory();
    let sdq = inv.iter_mut().find(|d| d.device == "/dev/sdq").unwrap();
    sdq.health = Some(reading(1796552800000, 0));
    let sds = inv.iter_mut().find(|d| d.device == "/dev/sds").unwrap();
    sds.fs = Some(usage());
    let d = s
        .publish(
            Owner::Local,
            "fixture-v5",
            Some("192.0.2.2"),
            &inv,
            1796552800000,
        )
        .into_result()
        .unwrap();
    assert_eq!(d.changed.len(), 2);
    drop(s);
    let s = Store::open(dir.path()).unwrap();
    let back = s.find("ZFN0V5").unwrap();
    assert_eq!(back[0].disk.health, Some(reading(1796552800000, 0)));
    assert_eq!(s.health_log("ZFN0V5").unwrap().len(), 1);
    assert_eq!(s.find("backup").unwrap()[0].disk.fs, Some(usage()));
    assert_eq!(s.history("backup").unwrap().len(), 2);
}

/// A reading taken at `checked` with `reallocated` sectors.
fn reading(checked: u64, reallocated: u64) -> crate::model::DiskHealth {
    crate::model::DiskHealth {
        state: if reallocated == 0 {
            crate::model::HealthState::Ok
        } else {
            crate::model::HealthState::Warning
        },
        reasons: if reallocated == 0 {
            vec![]
        } else {
            vec![format!("{reallocated} reallocated sectors")]
        },
        temperature_c: Some(30 + (checked % 10) as i32),
        power_on_hours: Some(1000),
        reallocated_sectors: Some(reallocated),
        pending_sectors: Some(0),
        media_errors: None,
        percentage_used: None,
        checked: Some(checked),
    }
}

fn usage() -> crate::model::FsUsage {
    crate::model::FsUsage {
        size: 1 << 30,
        used: 1 << 20,
        avail: (1 << 30) - (1 << 21),
    }
}

#[test]
fn stores_of_schemas_2_to_5_all_end_at_schema_6() {
    for name in ["store-v2", "store-v3", "store-v4", "store-v5"] {
        let dir = copy_of_fixture(name);
        let before = layout_of(dir.path()).0;
        let n = {
            let s = Store::open(dir.path()).unwrap();
            assert!(s.sightings_len() > 0, "{name}");
            assert!(s
                .sightings()
                .unwrap()
                .iter()
                .all(|x| x.disk.health.is_none() && x.disk.fs.is_none()));
            s.sightings_len()
        };
        assert_eq!(layout_of(dir.path()).0, "6", "{name} (was {before})");
        assert!(current_marks(dir.path()).values().all(|&v6| v6), "{name}");
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(s.sightings_len(), n, "{name}");
        assert_eq!(s.inner.host_writes.load(Ordering::Relaxed), 0, "{name}");
    }
}

#[test]
fn an_interrupted_schema_5_conversion_completes_and_a_schema_5_reader_skips_converted_hosts() {
    // Two hosts written as schema 5 wrote them (the fixture's, and a peer's).
    let dir = copy_of_fixture("store-v5");
    let peer = DiskRecord {
        probe: Probe::Signature,
        ..old_peer_disk(
            "0c0c0c0c-1111-4222-8333-444455556666",
            "/dev/sde1",
            "PEER-5",
        )
    };
    write_old_peer(
        dir.path(),
        "eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee",
        &peer,
        migrate::encode_v5,
    );
    // A run that rewrote one host and died before the schema flipped.
    convert_one_host_and_die(dir.path(), "5");
    // What schema 5 (and 4) would read of it now: the host still v5 whole, the converted
    // one nothing (never misread).
    let hosts = hosts_of(dir.path());
    let counts = chunk0_counts(&hosts);
    // schema 5's `join_framed`: both high bits its mark, the rest the count.
    let v5_read = counts
        .iter()
        .filter(|&&c| c & layout::FRAME_MARKS == layout::FRAME_V5)
        .count();
    assert_eq!(v5_read, 1, "{counts:x?}");
    // schema 4's: the highest bit its mark; schema 3's: no mark, the count as it is.
    assert!(counts
        .iter()
        .all(|&c| c & layout::FRAME_V4 != layout::FRAME_V4 || c & layout::FRAME_V6 != 0));
    assert!(counts.iter().all(|&c| c as usize > hosts.len()));
    // The next start completes it.
    {
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(s.sightings_len(), 3);
        let peer = s.find("PEER-5").unwrap();
        assert_eq!(peer[0].host, "peer");
        assert_eq!(peer[0].disk.probe, Probe::Signature);
        assert_eq!(peer[0].disk.health, None);
        assert_eq!(s.find_host("fixture-v5").unwrap().len(), 2);
        assert_eq!(s.history("backup").unwrap().len(), 2);
    }
    assert_converted(dir.path());
}

#[test]
fn health_and_usage_are_stored_and_each_new_reading_is_kept_newest_first() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path()).unwrap();
    let whole = |checked, reallocated| DiskRecord {
        health: Some(reading(checked, reallocated)),
        hardware: Hardware {
            serial: Some("SER-1".into()),
            ..Hardware::default()
        },
        ..DiskRecord {
            uuid: None,
            label: None,
            fstype: None,
            ..disk("x", "x", "/dev/sda")
        }
    };
    // A partition shows its disk's reading, and has its own usage.
    let part = |checked, reallocated| DiskRecord {
        health: Some(reading(checked, reallocated)),
        fs: Some(usage()),
        ..disk("11111111-2222-4333-8444-555566667777", "data", "/dev/sda1")
    };
    let inv = |checked, reallocated| vec![whole(checked, reallocated), part(checked, reallocated)];
    s.publish(Owner::Local, "h", None, &inv(1000, 0), 1)
        .into_result()
        .unwrap();
    let found = s.find("data").unwrap();
    assert_eq!(found[0].disk, part(1000, 0));
    assert_eq!(s.find("SER-1").unwrap()[0].disk, whole(1000, 0));
    // The same reading again (every inventory carries it): nothing written, one point.
    let writes = s.inner.host_writes.load(Ordering::Relaxed);
    s.publish(Owner::Local, "h", None, &inv(1000, 0), 2)
        .into_result()
        .unwrap();
    assert_eq!(s.inner.host_writes.load(Ordering::Relaxed), writes);
    // Usage that changed is stored, without a reading.
    let mut fuller = inv(1000, 0);
    fuller[1].fs = Some(crate::model::FsUsage {
        used: 1 << 29,
        ..usage()
    });
    s.publish(Owner::Local, "h", None, &fuller, 3)
        .into_result()
        .unwrap();
    assert_eq!(s.find("data").unwrap()[0].disk.fs, fuller[1].fs);
    assert_eq!(s.health_log("SER-1").unwrap().len(), 1);
    // New readings: newest first, for the disk and its partition alike.
    for (i, checked) in [2000, 3000].into_iter().enumerate() {
        s.publish(
            Owner::Local,
            "h",
            None,
            &inv(checked, i as u64 + 1),
            4 + i as u64,
        )
        .into_result()
        .unwrap();
    }
    let log = s.health_log("SER-1").unwrap();
    let points: Vec<_> = log
        .iter()
        .map(|p| (p.checked, p.state, p.reallocated_sectors))
        .collect();
    use crate::model::HealthState::{Ok as Fine, Warning};
    assert_eq!(
        points,
        vec![
            (3000, Warning, Some(2)),
            (2000, Warning, Some(1)),
            (1000, Fine, Some(0))
        ]
    );
    assert_eq!(log[0].temperature_c, Some(30));
    assert_eq!(log[0].pending_sectors, Some(0));
    assert_eq!(log[0].media_errors, None);
    assert_eq!(s.health_log("data").unwrap(), log);
    assert_eq!(s.health_log("/dev/sda1").unwrap(), log);
    // A reading that says nothing (no SMART watcher any more): the disk's health is
    // unknown now, its log stays.
    let mut unread = inv(3000, 2);
    for d in &mut unread {
        d.health = None;
    }
    s.publish(Owner::Local, "h", None, &unread, 10)
        .into_result()
        .unwrap();
    assert_eq!(s.find("SER-1").unwrap()[0].disk.health, None);
    assert_eq!(s.health_log("SER-1").unwrap(), log);
    // Kept across a reopen, as stored.
    drop(s);
    let s = Store::open(dir.path()).unwrap();
    assert_eq!(s.health_log("SER-1").unwrap(), log);
    assert_eq!(s.find("data").unwrap()[0].disk.fs, unread[1].fs);
    // At most MAX_READINGS, the oldest dropped.
    for i in 0..70u64 {
        s.publish(Owner::Local, "h", None, &inv(10_000 + i, 3), 20 + i)
            .into_result()
            .unwrap();
    }
    let log = s.health_log("SER-1").unwrap();
    assert_eq!(log.len(), MAX_READINGS);
    assert_eq!(log[0].checked, 10_069);
    assert_eq!(
        log[MAX_READINGS - 1].checked,
        10_069 - MAX_READINGS as u64 + 1
    );
    assert_eq!(s.health_log("no such disk").unwrap(), vec![]);
    // A vanished disk keeps its log.
    s.publish(Owner::Local, "h", None, &[], 200)
        .into_result()
        .unwrap();
    assert_eq!(s.health_log("SER-1").unwrap().len(), MAX_READINGS);
}

/// When each reading of the health log `term` finds was taken, newest first.
fn checked(s: &Store, term: &str) -> Vec<u64> {
    s.health_log(term)
        .unwrap()
        .iter()
        .map(|p| p.checked)
        .collect()
}

#[test]
fn a_disk_that_moved_brings_its_readings_and_a_shared_label_answers_one_disk() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path()).unwrap();
    let moving = |checked| DiskRecord {
        health: Some(reading(checked, 0)),
        hardware: Hardware {
            serial: Some("MOVER".into()),
            ..Hardware::default()
        },
        ..disk("aaaaaaaa-0000-4000-8000-000000000001", "shared", "/dev/sdb")
    };
    let other = DiskRecord {
        health: Some(reading(100, 0)),
        ..disk("bbbbbbbb-0000-4000-8000-000000000002", "shared", "/dev/sdc")
    };
    s.publish(Owner::Peer("p1"), "host-1", None, &[moving(1000)], 1)
        .into_result()
        .unwrap();
    s.publish(Owner::Peer("p1"), "host-1", None, &[moving(2000)], 2)
        .into_result()
        .unwrap();
    s.publish(Owner::Peer("p1"), "host-1", None, &[], 3)
        .into_result()
        .unwrap();
    s.publish(Owner::Peer("p2"), "host-2", None, &[moving(3000), other], 4)
        .into_result()
        .unwrap();
    let log = checked(&s, "MOVER");
    assert_eq!(log, vec![3000, 2000, 1000]);
    // Two disks labelled "shared": the one read last answers, never a mix.
    assert_eq!(checked(&s, "shared"), log);
    assert_eq!(
        checked(&s, "bbbbbbbb-0000-4000-8000-000000000002"),
        vec![100]
    );
}
