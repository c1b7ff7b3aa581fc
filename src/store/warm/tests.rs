use super::*;
use crate::store::tests::disk;

/// A store with our own disks, three peers' inventories and their peer records, flushed.
fn filled(dir: &Path) -> Store {
    let s = Store::open(dir).unwrap();
    s.publish(
        Owner::Local,
        "me",
        None,
        &[disk("AAAA-1", "alpha", "/dev/sda1")],
        1_000,
    )
    .into_result()
    .unwrap();
    for p in 0..3u64 {
        let id = format!("peer{p}");
        let disks: Vec<DiskRecord> = (0..4)
            .map(|d| {
                disk(
                    &format!("{p}-{d}"),
                    &format!("vol {d} of {p}"),
                    &format!("/dev/sd{d}"),
                )
            })
            .collect();
        s.publish(
            Owner::Peer(&id),
            &format!("host{p}"),
            Some("192.0.2.1"),
            &disks,
            2_000 + p,
        )
        .into_result()
        .unwrap();
        // A later inventory without disk 0: it stays as a last known location.
        s.publish(
            Owner::Peer(&id),
            &format!("host{p}"),
            Some("192.0.2.1"),
            &disks[1..],
            3_000 + p,
        )
        .into_result()
        .unwrap();
        s.upsert_peer(&PeerRecord {
            node_id: id.clone(),
            node: format!("host{p}"),
            addr: Some("192.0.2.1".into()),
            first_seen: 2_000,
            last_seen: 3_000 + p,
            gone: p == 2,
            legacy: false,
            disks: 3,
            key: Some(format!("fp{p}")),
            boot: 7 + p,
            sent_ms: 3_000 + p,
        })
        .unwrap();
    }
    futures_flush(&s);
    s
}

fn futures_flush(s: &Store) {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(s.flush())
        .unwrap();
}

/// Everything a reader can ask of the store, to compare two opens.
fn picture(s: &Store) -> String {
    let mut out = format!("{:?}\n{:?}\n", s.sightings().unwrap(), s.peers());
    for term in ["alpha", "AAAA-1", "vol 0 of 1", "/dev/sd2", "2-0"] {
        out += &format!("{term}: {:?}\n", s.find(term).unwrap());
    }
    out += &format!("host2: {:?}\n", s.find_host("host2").unwrap());
    out += &format!("{:?} {}", s.history("1-0").unwrap(), s.sightings_len());
    out
}

/// A [`filled`] store in `dir` that wrote its image and was closed: its [`picture`].
fn saved(dir: &Path) -> String {
    let s = filled(dir);
    s.save_warm_start().unwrap();
    picture(&s)
}

#[test]
fn a_clean_shutdown_image_gives_the_same_store_as_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let cold = saved(dir.path());
    assert!(dir.path().join(FILE).is_file());
    let warm = Store::open(dir.path()).unwrap();
    assert!(warm.loaded_from_image());
    assert_eq!(picture(&warm), cold);
    // Read once: the open removed both the file and the token.
    assert!(!dir.path().join(FILE).exists());
    // Writes after a warm open land where a cold open finds them.
    warm.publish(
        Owner::Local,
        "me",
        None,
        &[disk("CCCC-3", "gamma", "/dev/sdc1")],
        5_000,
    )
    .into_result()
    .unwrap();
    let expected = picture(&warm);
    drop(warm);
    let again = Store::open(dir.path()).unwrap();
    assert!(!again.loaded_from_image(), "no image was written this time");
    assert_eq!(picture(&again), expected);
}

#[test]
fn a_write_the_image_does_not_know_of_voids_it() {
    let dir = tempfile::tempdir().unwrap();
    filled(dir.path()).save_warm_start().unwrap();
    // An older diskd (or anything else) writes to sled behind the image's back.
    {
        let db = super::health::config(dir.path()).open().unwrap();
        let hosts = db.open_tree(HOSTS).unwrap();
        hosts.remove(chunk_key("peer1", 0)).unwrap();
        db.flush().unwrap();
    }
    let s = Store::open(dir.path()).unwrap();
    assert!(!s.loaded_from_image());
    assert!(
        s.find_host("host1").unwrap().is_empty(),
        "what sled holds wins"
    );
    assert!(!s.find_host("host2").unwrap().is_empty());
}

/// A change made to an image's bytes.
type Harm = fn(&mut Vec<u8>);

#[test]
fn a_damaged_or_foreign_image_is_only_a_slower_start() {
    let dir = tempfile::tempdir().unwrap();
    let expected = {
        let s = filled(dir.path());
        picture(&s)
    };
    let damage: [(&str, Harm); 4] = [
        ("one bit flipped", |b| {
            let mid = b.len() / 2;
            b[mid] ^= 1;
        }),
        ("cut short", |b| b.truncate(b.len() / 3)),
        ("empty", Vec::clear),
        ("another schema", |b| {
            b[8..12].copy_from_slice(&(SCHEMA_VERSION + 1).to_be_bytes())
        }),
    ];
    for (what, harm) in damage {
        Store::open(dir.path()).unwrap().save_warm_start().unwrap();
        let path = dir.path().join(FILE);
        let mut bytes = std::fs::read(&path).unwrap();
        harm(&mut bytes);
        std::fs::write(&path, &bytes).unwrap();
        let s = Store::open(dir.path()).unwrap();
        assert!(!s.loaded_from_image(), "{what}");
        assert_eq!(picture(&s), expected, "{what}");
        assert!(!path.exists(), "{what}: the file is removed");
    }
}

#[test]
fn an_image_without_its_token_is_not_loaded() {
    let dir = tempfile::tempdir().unwrap();
    let s = filled(dir.path());
    s.save_warm_start().unwrap();
    let warm = || prepare(dir.path(), log_stamp(dir.path())).expect("a whole image");
    let token = warm().token;
    assert!(warm().accept(None).is_none(), "no token in sled");
    let other = sled::IVec::from(&(token ^ 1).to_be_bytes()[..]);
    assert!(warm().accept(Some(&other)).is_none());
    let own = sled::IVec::from(&token.to_be_bytes()[..]);
    assert!(warm().accept(Some(&own)).is_some());
    // Taken with another log than the one it was written against: not even read.
    assert!(prepare(dir.path(), None).is_none());
}

#[test]
fn a_store_in_memory_writes_no_image() {
    let s = Store::in_memory("mem");
    s.save_warm_start().unwrap();
    assert!(!Path::new("(memory)").join(FILE).exists());
}

/// Where host 0's first term starts in an image written by this build.
fn first_term_at(bytes: &[u8]) -> usize {
    let u16_at = |at: usize| usize::from(u16::from_be_bytes([bytes[at], bytes[at + 1]]));
    let u32_at = |at: usize| {
        let mut b = [0u8; 4];
        b.copy_from_slice(&bytes[at..at + 4]);
        u32::from_be_bytes(b) as usize
    };
    let mut at = 8 + 4 + 8 + 8 + 8;
    at += 2 + u16_at(at); // the build
    at += 4 + 4; // hosts, terms in all
    at += 2 + u16_at(at); // host 0's node id
    at += 4; // its entries
    at += 4 + u32_at(at); // its value
    assert!(u32_at(at) > 0, "host 0 has terms");
    at + 4
}

/// `bytes` with its CRC made right again.
fn resealed(mut bytes: Vec<u8>) -> Vec<u8> {
    let end = bytes.len() - 4;
    let crc = crc32fast::hash(&bytes[..end]);
    bytes[end..].copy_from_slice(&crc.to_be_bytes());
    bytes
}

#[test]
fn an_image_whose_terms_this_build_would_not_compute_is_not_loaded() {
    let dir = tempfile::tempdir().unwrap();
    let expected = saved(dir.path());
    // Whole and checksummed, but host 0's first term is another one: what an image of a
    // build that computes terms otherwise looks like.
    let path = dir.path().join(FILE);
    let mut bytes = std::fs::read(&path).unwrap();
    let at = first_term_at(&bytes);
    bytes[at] ^= 0x55;
    std::fs::write(&path, resealed(bytes)).unwrap();
    let s = Store::open(dir.path()).unwrap();
    assert!(!s.loaded_from_image());
    assert_eq!(picture(&s), expected);
}

#[test]
fn counts_beyond_what_the_file_holds_are_refused_before_anything_is_sized() {
    let dir = tempfile::tempdir().unwrap();
    let stamp = (123, 456);
    let mut bytes = Vec::new();
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&SCHEMA_VERSION.to_be_bytes());
    for v in [7u64, stamp.0, stamp.1] {
        bytes.extend_from_slice(&v.to_be_bytes());
    }
    bytes.extend_from_slice(&(BUILD.len() as u16).to_be_bytes());
    bytes.extend_from_slice(BUILD.as_bytes());
    // Four billion hosts and terms in a file of a few dozen bytes.
    bytes.extend_from_slice(&u32::MAX.to_be_bytes());
    bytes.extend_from_slice(&u32::MAX.to_be_bytes());
    bytes.extend_from_slice(&[0; 4]);
    std::fs::write(dir.path().join(FILE), resealed(bytes)).unwrap();
    assert!(prepare(dir.path(), Some(stamp)).is_none());
}
