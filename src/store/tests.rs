use super::*;
use std::sync::atomic::Ordering;

fn disk(uuid: &str, label: &str, dev: &str) -> DiskRecord {
    DiskRecord {
        uuid: Some(uuid.into()),
        label: Some(label.into()),
        device: dev.into(),
        fstype: Some("ext4".into()),
        mountpoints: vec![],
        hardware: Default::default(),
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
fn replace_local_is_a_diff_and_keeps_vanished_disks() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path()).unwrap();
    let a = disk("AAAA-1", "alpha", "/dev/sda1");
    let b = disk("bbbb-2", "beta", "/dev/sdb1");
    let d = s
        .replace_local("h", None, &[a.clone(), b.clone()], 1000)
        .unwrap();
    assert_eq!(d.appeared.len(), 2);
    let d = s
        .replace_local("h", None, &[a.clone(), b.clone()], 2000)
        .unwrap();
    assert!(d.is_empty());
    let d = s
        .replace_local("h", None, std::slice::from_ref(&a), 3000)
        .unwrap();
    assert_eq!(d.vanished, vec![b.clone()]);
    let all = s.sightings().unwrap();
    assert_eq!(all.len(), 2);
    let gone = all.iter().find(|x| x.disk == b).unwrap();
    assert!(!gone.present);
    assert_eq!(gone.last_seen, 2000);
    assert_eq!(gone.first_seen, 1000);
    // It comes back: present again, first_seen kept.
    let d = s.replace_local("h", None, &[a, b.clone()], 4000).unwrap();
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
    s.replace_local("h", None, &[disk("AbCd-1", "My Disk", "/dev/sdc1")], 1)
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
        .replace_local(
            "h",
            None,
            &[
                disk("same", "a", "/dev/sda1"),
                disk("same", "b", "/dev/sdb1"),
            ],
            1,
        )
        .unwrap();
    assert_eq!(d.appeared.len(), 2);
    assert_eq!(s.find("same").unwrap().len(), 2);
}

#[test]
fn peer_and_local_data_are_separate() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path()).unwrap();
    s.replace_local("me", None, &[disk("u1", "l1", "/dev/a")], 1)
        .unwrap();
    s.replace_peer_inventory(
        "peer1",
        "other",
        Some("198.18.0.2"),
        &[disk("u2", "l2", "/dev/b")],
        1,
    )
    .unwrap();
    // A local scan without u1 does not touch the peer's record.
    s.replace_local("me", None, &[], 2).unwrap();
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
        node_id: "p".into(),
        node: "peer".into(),
        addr: None,
        first_seen: 0,
        last_seen: 100_000,
        gone: false,
        legacy: false,
        disks: 0,
        key: None,
        boot: 0,
        sent_ms: 0,
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
        s.replace_local("h", None, &[disk("u", "l", "/dev/x")], 5)
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
    {
        let db = sled_open(dir.path());
        db.open_tree(META)
            .unwrap()
            .insert(KEY_SCHEMA, &b"99"[..])
            .unwrap();
        db.flush().unwrap();
    }
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
fn crc32_is_the_ieee_checksum() {
    assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    assert_eq!(crc32(b""), 0);
}

#[test]
fn a_data_file_sled_would_start_over_is_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let id = {
        let s = Store::open(dir.path()).unwrap();
        s.replace_local("h", None, &[disk("u", "l", "/dev/x")], 1)
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
    s.replace_peer_inventory("p1", "peer", Some("192.0.2.9"), &inv, 1)
        .unwrap();
    assert_eq!(writes(), 1);
    for t in 2..10 {
        let d = s
            .replace_peer_inventory("p1", "peer", Some("192.0.2.9"), &inv, t)
            .unwrap();
        assert!(d.is_empty());
    }
    assert_eq!(writes(), 1, "announces that change nothing write nothing");
    s.replace_local("me", None, &inv[..1], 10).unwrap();
    s.replace_local("me", None, &inv[..1], 11).unwrap();
    assert_eq!(writes(), 2);
    assert_eq!(s.host_seen(s.node_id()), Some(11));
    // One changed disk rewrites that host only.
    let d = s
        .replace_peer_inventory(
            "p1",
            "peer",
            Some("192.0.2.9"),
            &[inv[0].clone(), disk("u2", "renamed", "/dev/b")],
            12,
        )
        .unwrap();
    assert_eq!(d.changed.len(), 1);
    assert_eq!(writes(), 3);
    assert_eq!(s.find("renamed").unwrap().len(), 1);
    assert!(s.find("l2").unwrap().is_empty());
    // Two host values (no peer record was upserted), meta (schema, node id, local seen).
    assert_eq!(s.records(), 2 + 3);
}

#[test]
fn a_large_inventory_is_split_and_read_back_whole() {
    let dir = tempfile::tempdir().unwrap();
    let many: Vec<DiskRecord> = (0..3000)
        .map(|i| {
            disk(
                &format!("{i:08x}-uuid"),
                &format!("label {i}"),
                &format!("/dev/d{i}"),
            )
        })
        .collect();
    {
        let s = Store::open(dir.path()).unwrap();
        s.replace_peer_inventory("big", "big-host", None, &many, 5)
            .unwrap();
        s.replace_peer_inventory("small", "small-host", None, &many[..2], 5)
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

#[test]
fn history_keeps_every_stay_newest_first() {
    let dir = tempfile::tempdir().unwrap();
    let u = "AAAA-1111";
    {
        let s = Store::open(dir.path()).unwrap();
        s.replace_local("h", None, &[disk(u, "x", "/dev/sdb1")], 1000)
            .unwrap();
        s.replace_local("h", None, &[disk(u, "x", "/dev/sdb1")], 2000)
            .unwrap();
        // Moved to another device: a new stay; the old one lasted until 2000.
        s.replace_local("h", None, &[disk(u, "x", "/dev/sdc1")], 3000)
            .unwrap();
        let h = s.history("aaaa-1111").unwrap();
        let got: Vec<_> = h
            .iter()
            .map(|x| (x.device.as_str(), x.first_seen, x.last_seen, x.current))
            .collect();
        assert_eq!(
            got,
            vec![
                ("/dev/sdc1", 3000, 3000, true),
                ("/dev/sdb1", 1000, 2000, false)
            ]
        );
        // The old device finds it too.
        assert_eq!(s.history("/dev/sdb1").unwrap(), h);
        // Then it moves to a peer: its stay on h ends, one begins there.
        s.replace_local("h", None, &[], 4000).unwrap();
        s.upsert_peer(&peer_rec("p", 5000)).unwrap();
        s.replace_peer_inventory(
            "p",
            "peer",
            Some("192.0.2.7"),
            &[disk(u, "x", "/dev/sdz9")],
            5000,
        )
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
        s.replace_local("h", None, &[disk("u", "l", &dev)], 1000 + t)
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
    s.replace_local("h", None, &[nouuid], 2000).unwrap();
    assert_eq!(s.history("plain").unwrap().len(), 1);
}

/// A copy of the schema-2 fixture (the sled files only) in a temp dir.
fn fixture_copy() -> tempfile::TempDir {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/store-v2");
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

const FIXTURE_A: &str = "07964bbb2408b9270cc78230daa887cc";
const FIXTURE_B: &str = "a6ea126af91f5044e7ec6e9f716bf51f";

/// Everything the fixture holds (see tests/fixtures/store-v2/README.md), as read now.
fn assert_fixture(s: &Store) {
    assert_eq!(s.node_id(), FIXTURE_A);
    let d = |uuid: Option<&str>, label: &str, dev: &str, fs: &str| DiskRecord {
        uuid: uuid.map(Into::into),
        label: Some(label.into()),
        device: dev.into(),
        fstype: Some(fs.into()),
        mountpoints: vec![],
        hardware: Default::default(),
    };
    let sig = |id: &str, host: &str, addr: &str, disk, present, t| Sighting {
        node_id: id.into(),
        host: host.into(),
        addr: Some(addr.into()),
        disk,
        present,
        first_seen: t,
        last_seen: t,
    };
    let a = |disk, present| {
        sig(
            FIXTURE_A,
            "fixture-a",
            "192.0.2.2",
            disk,
            present,
            1795688288055,
        )
    };
    let b = |disk| {
        sig(
            FIXTURE_B,
            "fixture-b",
            "127.0.0.1",
            disk,
            true,
            1795688290093,
        )
    };
    let backup = d(
        Some("6fe176fb-83a0-4e4a-af6a-f578ca7a1f65"),
        "backup",
        "/dev/sdb1",
        "ext4",
    );
    let big = d(
        Some("A1B2C3D4-0000-4000-8000-0000000000C1"),
        "my \"big\" disk 2",
        "/dev/sdc1",
        "xfs",
    );
    let nouuid = d(None, "nouuid", "/dev/sde1", "vfat");
    let peer_disk = d(
        Some("0b0b0b0b-1111-4222-8333-444455556666"),
        "peer disk",
        "/dev/sdd1",
        "ext4",
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
        vec![PeerRecord {
            node_id: FIXTURE_B.into(),
            node: "fixture-b".into(),
            addr: Some("127.0.0.1".into()),
            first_seen: 1795688290063,
            last_seen: 1795688292789,
            gone: true,
            legacy: false,
            disks: 2,
            key: None,
            boot: 8860704361122469820,
            sent_ms: 1795688292789,
        }]
    );
    assert_eq!(s.host_seen(FIXTURE_B), Some(1795688292789));
    assert_eq!(
        s.attach("6FE176FB-83A0-4E4A-AF6A-F578CA7A1F65"),
        Some(AttachRecord {
            dir: "/mnt/backup here".into(),
            host: "fixture-a".into(),
            path: "/srv/diskd/6fe176fb-83a0-4e4a-af6a-f578ca7a1f65".into(),
        })
    );
    let one = |term: &str, want: &DiskRecord| {
        let f = s.find(term).unwrap();
        assert_eq!(f.len(), 1, "{term}: {f:?}");
        assert_eq!(&f[0].disk, want, "{term}");
    };
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
    assert_eq!(schema, "3");
    assert!(
        !trees.iter().any(|t| t == "sightings" || t == "index"),
        "{trees:?}"
    );
    // Opened again as the schema-3 store it now is.
    let s = Store::open(dir.path()).unwrap();
    assert_fixture(&s);
    // And it goes on working: the vanished disk comes back.
    let disks = s.local_inventory();
    let back = s.find("my \"big\" disk 2").unwrap()[0].disk.clone();
    let d = s
        .replace_local(
            "fixture-a",
            Some("192.0.2.2"),
            &[disks[0].clone(), back],
            1795688300000,
        )
        .unwrap();
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
    assert_eq!(layout_of(dir.path()).0, "3");

    // Died after the flip, before the old trees were dropped: they are dropped now.
    let dir = fixture_copy();
    drop(Store::open_until(dir.path(), migrate::Until::NewTrees).unwrap());
    {
        let db = sled_open(dir.path());
        db.open_tree(META)
            .unwrap()
            .insert(KEY_SCHEMA, &b"3"[..])
            .unwrap();
        db.flush().unwrap();
    }
    assert_fixture(&Store::open(dir.path()).unwrap());
    let (schema, trees) = layout_of(dir.path());
    assert_eq!(schema, "3");
    assert!(
        !trees.iter().any(|t| t == "sightings" || t == "index"),
        "{trees:?}"
    );
}

#[test]
fn readers_answer_while_a_local_write_is_in_progress() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path()).unwrap();
    s.replace_local("h", None, &[disk("u", "l", "/dev/x")], 1)
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
    s.replace_peer_inventory(peer, "busy", None, &many, 1)
        .unwrap();
    assert_eq!(s.find_host("busy").unwrap().len(), MAX_ABSENT_PER_HOST + 10);
    // All of them gone at once, one new disk: the oldest absent ones beyond the cap go.
    s.replace_peer_inventory(peer, "busy", None, &[disk("new", "n", "/dev/n")], 2)
        .unwrap();
    let known = s.find_host("busy").unwrap();
    assert_eq!(known.len(), MAX_ABSENT_PER_HOST + 1);
    assert_eq!(known.iter().filter(|x| x.present).count(), 1);
    drop(s);
    let s = Store::open(dir.path()).unwrap();
    assert_eq!(s.find_host("busy").unwrap().len(), MAX_ABSENT_PER_HOST + 1);
}
