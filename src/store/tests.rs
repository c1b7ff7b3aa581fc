use super::*;

fn disk(uuid: &str, label: &str, dev: &str) -> DiskRecord {
    DiskRecord {
        uuid: Some(uuid.into()),
        label: Some(label.into()),
        device: dev.into(),
        fstype: Some("ext4".into()),
        mountpoints: vec![],
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
        let db = sled::open(dir.path()).unwrap();
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
    let db = sled::open(dir.path()).unwrap();
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
