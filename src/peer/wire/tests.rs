//! The native wire format's tests: round trips, what is refused, inventories cut into
//! datagrams, the trailers, and datagrams of earlier releases read both ways.

use super::*;

fn env(body: Body) -> Envelope {
    Envelope {
        node_id: "0123456789abcdef0123456789abcdef".into(),
        node: "node-a".into(),
        boot: 7,
        seq: 1,
        sent_ms: 1_700_000_000_000,
        body,
    }
}

pub(crate) fn disk(i: usize) -> DiskRecord {
    DiskRecord {
        uuid: Some(format!("{i:08x}-83a0-4e4a-af6a-f578ca7a1f65")),
        label: Some(format!("a rather long label for disk number {i} — Ürlaub")),
        device: format!("/dev/disk/by-id/ata-SAMSUNG_SSD_870_EVO_{i:06}-part1"),
        fstype: Some("ext4".into()),
        mountpoints: vec![format!("/srv/data/{i}")],
        ..Default::default()
    }
}

#[test]
fn round_trip() {
    for body in [Body::Ping, Body::Goodbye] {
        let e = env(body);
        assert_eq!(decode(&encode(&e)).unwrap(), e);
    }
}

#[test]
fn rejects_foreign_and_broken_datagrams() {
    assert_eq!(decode(b"diskd:---\n- - a\n"), Err(Reject::Legacy));
    assert_eq!(decode(b"hello"), Err(Reject::BadMagic));
    assert_eq!(decode(b"DSKD"), Err(Reject::BadVersion));
    assert_eq!(decode(b"DSKD\x09abc"), Err(Reject::BadVersion));
    assert_eq!(decode(b"DSKD\x01\xff\xff\xff"), Err(Reject::Undecodable));
    let full = encode(&env(Body::Ping));
    for cut in 5..full.len() {
        assert!(decode(&full[..cut]).is_err(), "truncated at {cut} decoded");
    }
    assert_eq!(decode(&vec![0u8; MAX_DATAGRAM + 1]), Err(Reject::Oversized));
    let mut e = env(Body::Ping);
    e.node_id = "xyz".into();
    assert_eq!(decode(&encode(&e)), Err(Reject::InvalidField));
    let mut e = env(Body::Ping);
    e.node = "evil\nname".into();
    assert_eq!(decode(&encode(&e)), Err(Reject::InvalidField));
    let mut d = disk(1);
    d.label = Some("x".repeat(limits::LABEL + 1));
    assert_eq!(
        decode(&encode(&inventory(vec![d]))),
        Err(Reject::InvalidField)
    );
    let e = env(Body::Inventory(Chunk {
        generation: 1,
        index: 3,
        count: 2,
        total: 0,
        disks: vec![],
    }));
    assert_eq!(decode(&encode(&e)), Err(Reject::BadChunk));
}

#[test]
fn a_lying_length_prefix_does_not_allocate_its_claim() {
    // A disk list claiming 2^28 entries in a 20-byte datagram fails fast.
    let mut bytes = encode(&inventory(vec![]));
    bytes.pop();
    bytes.extend_from_slice(&[0xff, 0xff, 0xff, 0x7f]);
    assert_eq!(decode(&bytes), Err(Reject::Undecodable));
}

#[test]
fn a_thousand_disks_fit_in_bounded_datagrams_and_all_arrive() {
    let disks: Vec<_> = (0..1000).map(disk).collect();
    let chunks = send_and_receive(&disks);
    assert!(chunks.len() > 50, "{} chunks", chunks.len());
    assert!(chunks
        .iter()
        .all(|c| c.total == 1000 && c.count as usize == chunks.len()));
}

/// Cut `disks` into chunks of datagrams of at most 1400 bytes, check every datagram's
/// size and that decoding them all gives `disks` back; the chunks.
pub(crate) fn send_and_receive(disks: &[DiskRecord]) -> Vec<Chunk> {
    let t = env(Body::Ping);
    let chunks = chunk_inventory(&t, 9, disks, 1400);
    let mut back = Vec::new();
    for c in &chunks {
        let e = Envelope {
            seq: u64::MAX,
            body: Body::Inventory(c.clone()),
            ..t.clone()
        };
        let bytes = encode(&e);
        assert!(bytes.len() <= 1400, "datagram of {} bytes", bytes.len());
        match decode(&bytes).unwrap().body {
            Body::Inventory(c) => back.extend(c.disks),
            _ => unreachable!(),
        }
    }
    assert_eq!(back, disks);
    chunks
}

/// A whole disk with everything sysfs can say.
pub(crate) fn hardware(i: usize) -> Hardware {
    Hardware {
        size: Some(4_000_787_030_016 + i as u64),
        model: Some("ST4000DM004-2CV104".into()),
        vendor: Some("ATA".into()),
        serial: Some(format!("ZFN{i:05}")),
        wwn: Some(format!("naa.5000c500{i:08x}")),
        transport: Some("sata".into()),
        removable: Some(false),
        rotational: Some(true),
        parent: None,
        backing_file: None,
    }
}

/// The one chunk of generation 1: all of `disks`.
fn chunk(disks: Vec<DiskRecord>) -> Chunk {
    Chunk {
        generation: 1,
        index: 0,
        count: 1,
        total: disks.len() as u32,
        disks,
    }
}

/// An inventory of `disks` in one datagram.
pub(crate) fn inventory(disks: Vec<DiskRecord>) -> Envelope {
    env(Body::Inventory(chunk(disks)))
}

#[test]
fn hardware_travels_in_the_trailer_and_only_when_known() {
    let mut with = disk(1);
    with.hardware = hardware(1);
    let e = inventory(vec![with.clone(), disk(2)]);
    let bytes = encode(&e);
    assert_eq!(decode(&bytes).unwrap(), e);
    // Without hardware, not a byte more than revision 1.
    let plain = encode(&inventory(vec![disk(1), disk(2)]));
    assert!(bytes.starts_with(&plain));
    assert_eq!(bytes[plain.len()], TRAILER_HARDWARE);
    // A trailer from a later revision is ignored, as revision 1 ignores ours.
    let mut later = plain.clone();
    later.extend_from_slice(&[9, 1, 2, 3]);
    assert_eq!(decode(&later).unwrap(), inventory(vec![disk(1), disk(2)]));
    // Ours, but for another number of disks, or cut short: refused.
    let mut short = encode(&inventory(vec![with.clone()]));
    short.truncate(short.len() - 3);
    assert!(decode(&short).is_err());
    let mut other = plain.clone();
    other.push(TRAILER_HARDWARE);
    other.extend(postcard::to_allocvec(&vec![hardware(1)]).unwrap());
    assert_eq!(decode(&other), Err(Reject::BadChunk));
    // Hardware is bounded like every other field.
    for bad in [
        Hardware {
            serial: Some("x".repeat(limits::HARDWARE_TEXT + 1)),
            ..hardware(1)
        },
        Hardware {
            model: Some("evil\nmodel".into()),
            ..hardware(1)
        },
        Hardware {
            transport: Some("t".repeat(limits::TRANSPORT + 1)),
            ..hardware(1)
        },
    ] {
        let mut d = disk(1);
        d.hardware = bad;
        assert_eq!(
            decode(&encode(&inventory(vec![d]))),
            Err(Reject::InvalidField)
        );
    }
}

/// The bytes of an inventory of `disks` as an older revision sends it, each disk as
/// `older` leaves it: `bytes` (an inventory of `disks`) starts with them, and they decode
/// as that inventory.
pub(crate) fn older_prefix(
    disks: &[DiskRecord],
    bytes: &[u8],
    older: impl Fn(&mut DiskRecord),
) -> Vec<u8> {
    let mut plain = disks.to_vec();
    plain.iter_mut().for_each(older);
    let old = encode(&inventory(plain.clone()));
    assert!(bytes.starts_with(&old));
    assert_eq!(decode(&old).unwrap(), inventory(plain));
    old
}

#[test]
fn the_probe_travels_in_its_own_trailer_after_the_hardware() {
    let probes = [Probe::Empty, Probe::Failed, Probe::Signature];
    let mut disks: Vec<DiskRecord> = (0..3).map(disk).collect();
    for (d, p) in disks.iter_mut().zip(probes) {
        d.probe = p;
    }
    // With hardware: both trailers, hardware first.
    let mut with_hw = disks.clone();
    with_hw[0].hardware = hardware(0);
    let e = inventory(with_hw.clone());
    assert_eq!(decode(&encode(&e)).unwrap(), e);
    // Without hardware: the probe trailer alone.
    let e = inventory(disks.clone());
    let bytes = encode(&e);
    assert_eq!(decode(&bytes).unwrap(), e);
    // An older peer's inventory (no probe trailer): every probe unknown.
    let rev1 = older_prefix(&disks, &bytes, |d| d.probe = Probe::Unknown);
    assert_eq!(&bytes[rev1.len()..], &[TRAILER_PROBE, 3, 2, 4, 1]);
    // A code from a later release is unknown, never blank; a list of another length,
    // or the same trailer twice, is refused.
    let mut later = rev1.clone();
    later.extend_from_slice(&[TRAILER_PROBE, 3, 200, 2, 9]);
    let Body::Inventory(c) = decode(&later).unwrap().body else {
        unreachable!()
    };
    let got: Vec<Probe> = c.disks.iter().map(|d| d.probe).collect();
    assert_eq!(got, [Probe::Unknown, Probe::Empty, Probe::Unknown]);
    let mut short = rev1.clone();
    short.extend_from_slice(&[TRAILER_PROBE, 2, 2, 2]);
    assert_eq!(decode(&short), Err(Reject::BadChunk));
    let mut twice = bytes.clone();
    twice.extend_from_slice(&[TRAILER_PROBE, 3, 2, 2, 2]);
    assert_eq!(decode(&twice), Err(Reject::BadChunk));
    // A later trailer after ours is ignored.
    let mut more = bytes.clone();
    more.extend_from_slice(&[9, 1, 2, 3]);
    assert_eq!(decode(&more).unwrap(), e);
}

/// Disk `i` with its hardware and one of the probe codes (unknown to signature, by `i`).
pub(crate) fn probed_with_hardware(i: usize) -> DiskRecord {
    DiskRecord {
        hardware: hardware(i),
        probe: Probe::from_code((i % 5) as u8),
        ..disk(i)
    }
}

#[test]
fn disks_with_hardware_fit_in_bounded_datagrams() {
    let disks: Vec<_> = (0..300).map(probed_with_hardware).collect();
    send_and_receive(&disks);
}

/// Send `d` alone in datagrams of the smallest size: check that it is sent, in a datagram
/// of that size that decodes to what was cut; the disk as sent.
pub(crate) fn sent_in_a_small_datagram(d: &DiskRecord) -> DiskRecord {
    let chunks = chunk_inventory(&env(Body::Ping), 1, std::slice::from_ref(d), MIN_DATAGRAM);
    assert_eq!(chunks[0].disks.len(), 1, "the disk is sent");
    let bytes = encode(&Envelope {
        body: Body::Inventory(chunks[0].clone()),
        ..env(Body::Ping)
    });
    assert!(bytes.len() <= MIN_DATAGRAM, "{} bytes", bytes.len());
    assert_eq!(
        decode(&bytes).unwrap().body,
        Body::Inventory(chunks[0].clone())
    );
    chunks[0].disks[0].clone()
}

#[test]
fn a_disk_whose_hardware_does_not_fit_a_small_datagram_goes_without_it() {
    let mut d = disk(1);
    d.hardware = hardware(1);
    d.hardware.backing_file = Some(format!("/{}", "b".repeat(limits::BACKING_FILE - 1)));
    let sent = sent_in_a_small_datagram(&d);
    assert_eq!(sent.hardware.backing_file, None);
    assert_eq!(sent.hardware.serial, d.hardware.serial, "what fits stays");
}

#[test]
fn hardware_that_would_be_refused_is_left_out_not_the_disk() {
    let mut d = disk(1);
    d.hardware.model = Some("m".repeat(limits::HARDWARE_TEXT + 1));
    let chunks = chunk_inventory(&env(Body::Ping), 1, &[d.clone()], 1400);
    assert_eq!(chunks[0].disks.len(), 1);
    assert!(chunks[0].disks[0].hardware.is_empty());
    assert_eq!(chunks[0].disks[0].device, d.device);
}

#[test]
fn an_empty_inventory_is_one_empty_chunk() {
    let chunks = chunk_inventory(&env(Body::Ping), 1, &[], 1400);
    assert_eq!(chunks.len(), 1);
    assert_eq!(chunks[0].count, 1);
    assert!(chunks[0].disks.is_empty());
}

/// Datagrams written by the release before gossip (captured from its `encode`): they
/// decode the same, and encode to the same bytes, now that `Body` has a `Swim` variant (added
/// last, and only ever sent on the gossip socket, which older daemons do not listen on).
mod previous_release {
    use super::*;

    const PING: &str = "44534b4401203031323334353637383961626364656630313233343536373839616263646566086f6c642d6e6f64652a0780a0f1c2b13401";
    const GOODBYE: &str = "44534b4401203031323334353637383961626364656630313233343536373839616263646566086f6c642d6e6f64652a0780a0f1c2b13402";
    const INVENTORY: &str = "44534b4401203031323334353637383961626364656630313233343536373839616263646566086f6c642d6e6f64652a0780a0f1c2b134000300010101012436666531373666622d303030302d343030302d383030302d30303030303030303030303101066261636b7570092f6465762f73646231010465787434010b2f7372762f6261636b7570";
    const MOUNT: &str = "44534b4401203031323334353637383961626364656630313233343536373839616263646566086f6c642d6e6f64652a0780a0f1c2b13403092066656463626139383736353433323130666564636261393837363534333231302436666531373666622d303030302d343030302d383030302d3030303030303030303030310100";

    #[test]
    fn datagrams_of_the_previous_release_decode_and_encode_unchanged() {
        for (hex_text, want) in [
            (PING, "ping"),
            (GOODBYE, "goodbye"),
            (INVENTORY, "inventory"),
            (MOUNT, "mount"),
        ] {
            let bytes = hex::decode(hex_text).unwrap();
            let env = decode(&bytes).unwrap_or_else(|e| panic!("{want}: {e}"));
            assert_eq!(env.node, "old-node");
            let kind = match &env.body {
                Body::Ping => "ping",
                Body::Goodbye => "goodbye",
                Body::Inventory(c) => {
                    assert_eq!(c.disks[0].label.as_deref(), Some("backup"));
                    "inventory"
                }
                Body::MountRequest(r) => {
                    assert!(r.read_only);
                    "mount"
                }
                other => panic!("{other:?}"),
            };
            assert_eq!(kind, want);
            assert_eq!(encode(&env), bytes, "{want}: the encoding changed");
        }
        // A revision-1 inventory has no trailer: its disks' hardware is unknown.
        let old = decode(&hex::decode(INVENTORY).unwrap()).unwrap();
        let Body::Inventory(c) = &old.body else {
            unreachable!()
        };
        assert!(c.disks[0].hardware.is_empty());
        // And the new variant is one an older daemon rejects as undecodable (counted),
        // never misreads: its index is past every older variant.
        let swim = Envelope {
            body: Body::Swim(Swim {
                generation: 1,
                data: vec![1, 2, 3],
            }),
            ..decode(&hex::decode(PING).unwrap()).unwrap()
        };
        assert_eq!(encode(&swim)[PING.len() / 2 - 1], 5);
    }
}

/// A daemon of the previous release reading this one's datagrams: its decoder, frozen
/// (the revision-1 types and `decode`'s checks as they were), must read an inventory that
/// carries hardware as the same disks without it. That is the mixed-version rule.
mod read_by_the_previous_release {
    use super::*;

    mod v1 {
        use serde::Deserialize;

        #[derive(Debug, Deserialize)]
        pub struct Envelope {
            pub node_id: String,
            pub node: String,
            pub boot: u64,
            pub seq: u64,
            pub sent_ms: u64,
            pub body: Body,
        }

        #[derive(Debug, Deserialize)]
        pub enum Body {
            Inventory(Chunk),
            Ping,
            Goodbye,
        }

        #[derive(Debug, Deserialize)]
        pub struct Chunk {
            pub generation: u64,
            pub index: u16,
            pub count: u16,
            pub total: u32,
            pub disks: Vec<Disk>,
        }

        #[derive(Debug, Deserialize, PartialEq)]
        pub struct Disk {
            pub uuid: Option<String>,
            pub label: Option<String>,
            pub device: String,
            pub fstype: Option<String>,
            pub mountpoints: Vec<String>,
        }

        /// The bytes after the magic and version 1: the header, the same in every revision.
        pub fn payload(bytes: &[u8]) -> Option<&[u8]> {
            let rest = bytes.strip_prefix(b"DSKD")?;
            let (&version, payload) = rest.split_first()?;
            if version != 1 {
                return None;
            }
            Some(payload)
        }

        /// `decode` of the previous release, without the field checks.
        pub fn decode(bytes: &[u8]) -> Option<Envelope> {
            postcard::from_bytes(payload(bytes)?).ok()
        }

        /// An inventory's chunk and the bytes after its envelope (the trailers), as the later
        /// revisions read them; `None` for any other datagram.
        pub fn inventory(bytes: &[u8]) -> Option<(Chunk, &[u8])> {
            let (env, trailer): (Envelope, &[u8]) =
                postcard::take_from_bytes(payload(bytes)?).ok()?;
            let Body::Inventory(c) = env.body else {
                return None;
            };
            Some((c, trailer))
        }
    }

    /// `decode` of revision 2 (the release before probes), its trailer handling frozen:
    /// the hardware trailer read with `from_bytes`, any other first trailer ignored.
    mod v2 {
        use serde::Deserialize;

        #[derive(Debug, Deserialize, PartialEq, Default)]
        pub struct Hardware {
            pub size: Option<u64>,
            pub model: Option<String>,
            pub vendor: Option<String>,
            pub serial: Option<String>,
            pub wwn: Option<String>,
            pub transport: Option<String>,
            pub removable: Option<bool>,
            pub rotational: Option<bool>,
            pub parent: Option<String>,
            pub backing_file: Option<String>,
        }

        /// The envelope's disks and their hardware (empty when there was no trailer).
        pub fn decode(bytes: &[u8]) -> Option<(Vec<super::v1::Disk>, Vec<Hardware>)> {
            let (c, trailer) = super::v1::inventory(bytes)?;
            let hardware = match trailer.split_first() {
                Some((&2, rest)) => {
                    let h: Vec<Hardware> = postcard::from_bytes(rest).ok()?;
                    if h.len() != c.disks.len() {
                        return None;
                    }
                    h
                }
                _ => Vec::new(),
            };
            Some((c.disks, hardware))
        }
    }

    /// `decode` of revision 3 (the release before the condition trailer), its trailer
    /// handling frozen: hardware and probe trailers in any order, each at most once, until
    /// a tag it does not know.
    mod v3 {
        /// The envelope's disks, their hardware and their probe codes (each empty when
        /// its trailer was not there).
        pub fn decode(
            bytes: &[u8],
        ) -> Option<(Vec<super::v1::Disk>, Vec<super::v2::Hardware>, Vec<u8>)> {
            let (c, mut rest) = super::v1::inventory(bytes)?;
            let (mut hardware, mut probes) = (Vec::new(), Vec::new());
            while let Some((&tag, body)) = rest.split_first() {
                match tag {
                    2 if hardware.is_empty() => {
                        let (h, after): (Vec<super::v2::Hardware>, &[u8]) =
                            postcard::take_from_bytes(body).ok()?;
                        if h.len() != c.disks.len() {
                            return None;
                        }
                        hardware = h;
                        rest = after;
                    }
                    3 if probes.is_empty() => {
                        let (p, after): (Vec<u8>, &[u8]) = postcard::take_from_bytes(body).ok()?;
                        if p.len() != c.disks.len() {
                            return None;
                        }
                        probes = p;
                        rest = after;
                    }
                    2 | 3 => return None,
                    _ => break,
                }
            }
            Some((c.disks, hardware, probes))
        }
    }

    /// An inventory of `disks` in one datagram from "new-node" (generation 4, sequence
    /// number 3).
    fn from_a_newer_node(disks: Vec<DiskRecord>) -> Envelope {
        Envelope {
            node: "new-node".into(),
            seq: 3,
            body: Body::Inventory(Chunk {
                generation: 4,
                ..super::chunk(disks)
            }),
            ..super::env(Body::Ping)
        }
    }

    /// `got`, as an older release read it, are the devices of `sent`, in order.
    fn assert_same_devices(got: &[v1::Disk], sent: &[DiskRecord]) {
        let names: Vec<&str> = got.iter().map(|d| d.device.as_str()).collect();
        let want: Vec<&str> = sent.iter().map(|d| d.device.as_str()).collect();
        assert_eq!(names, want);
    }

    /// Revision 4's condition trailer, read by revisions 3, 2 and 1: each sees the disks
    /// (and the trailers it knows) exactly as without it.
    #[test]
    fn older_releases_read_an_inventory_with_a_condition_as_before() {
        let mut disks: Vec<DiskRecord> = (0..3).map(super::disk).collect();
        disks[0].health = Some(super::super::condition_tests::health(0));
        disks[2].fs = Some(crate::model::FsUsage {
            size: 100,
            used: 40,
            avail: 50,
        });
        // The condition alone; after the probe; after the hardware and the probe.
        let alone = disks.clone();
        let mut probed = disks.clone();
        probed[1].probe = Probe::Empty;
        let mut full = probed.clone();
        full[0].hardware = super::hardware(0);
        for sent in [alone, probed, full] {
            let bytes = encode(&from_a_newer_node(sent.clone()));
            let (got, hardware, probes) = v3::decode(&bytes).expect("revision 3 decodes it");
            assert_same_devices(&got, &sent);
            let want_probes: Vec<u8> = sent.iter().map(|d| d.probe.code()).collect();
            if sent.iter().any(|d| d.probe != Probe::Unknown) {
                assert_eq!(probes, want_probes);
            } else {
                assert!(probes.is_empty());
            }
            if sent.iter().any(|d| !d.hardware.is_empty()) {
                assert_eq!(hardware[0].serial, sent[0].hardware.serial);
            } else {
                assert!(hardware.is_empty());
            }
            // Revision 2 reads the disks and the hardware the same; revision 1 the disks.
            let (got2, hardware2) = v2::decode(&bytes).expect("revision 2 decodes it");
            assert_eq!(got2, got);
            assert_eq!(hardware2, hardware);
            let Some(v1::Envelope {
                body: v1::Body::Inventory(c),
                ..
            }) = v1::decode(&bytes)
            else {
                panic!("revision 1 decodes it")
            };
            assert_eq!(c.disks, got);
        }
    }

    #[test]
    fn the_previous_release_reads_an_inventory_with_probes_as_before() {
        let mut disks: Vec<DiskRecord> = (0..3).map(super::disk).collect();
        disks[0].probe = Probe::Empty;
        disks[1].probe = Probe::Failed;
        disks[2].probe = Probe::Signature;
        // With the hardware trailer before the probe trailer, and without it.
        let mut with_hw = disks.clone();
        with_hw[1].hardware = super::hardware(1);
        for sent in [with_hw, disks] {
            let bytes = encode(&from_a_newer_node(sent.clone()));
            let (got, hardware) = v2::decode(&bytes).expect("revision 2 decodes it");
            assert_same_devices(&got, &sent);
            if sent.iter().any(|d| !d.hardware.is_empty()) {
                assert_eq!(hardware.len(), 3);
                assert_eq!(hardware[1].serial, sent[1].hardware.serial);
                assert_eq!(hardware[0], v2::Hardware::default());
            } else {
                assert!(hardware.is_empty());
            }
            // And revision 1 still reads the disks.
            let Some(old) = v1::decode(&bytes) else {
                panic!("revision 1 decodes it")
            };
            let v1::Body::Inventory(c) = old.body else {
                panic!("{:?}", old.body)
            };
            assert_eq!(c.disks.len(), 3);
        }
    }

    #[test]
    fn an_older_daemon_reads_a_newer_inventory_without_the_hardware() {
        let disks: Vec<DiskRecord> = (0..3)
            .map(|i| DiskRecord {
                hardware: super::hardware(i),
                ..super::disk(i)
            })
            .collect();
        let e = from_a_newer_node(disks.clone());
        let old = v1::decode(&encode(&e)).expect("the previous release decodes it");
        assert_eq!((old.node.as_str(), old.seq), ("new-node", 3));
        let v1::Body::Inventory(c) = old.body else {
            panic!("{:?}", old.body)
        };
        assert_eq!((c.generation, c.index, c.count, c.total), (4, 0, 1, 3));
        let want: Vec<v1::Disk> = disks
            .iter()
            .map(|d| v1::Disk {
                uuid: d.uuid.clone(),
                label: d.label.clone(),
                device: d.device.clone(),
                fstype: d.fstype.clone(),
                mountpoints: d.mountpoints.clone(),
            })
            .collect();
        assert_eq!(c.disks, want);
        let _ = (old.node_id, old.boot, old.sent_ms);
        // And a ping is still a ping to it.
        let ping = Envelope {
            body: Body::Ping,
            ..e
        };
        assert!(matches!(
            v1::decode(&encode(&ping)).map(|e| e.body),
            Some(v1::Body::Ping)
        ));
    }
}
