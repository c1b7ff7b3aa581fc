//! Revision 4: the condition trailer, read and written, bounded, cut to fit.

use super::tests::{
    disk, hardware, inventory, older_prefix, probed_with_hardware, send_and_receive,
    sent_in_a_small_datagram,
};
use super::*;
use crate::model::{DiskHealth, FsUsage, HealthState};

/// A reading with every figure and as many reasons as the wire allows, at their
/// longest.
pub(crate) fn health(i: u64) -> DiskHealth {
    DiskHealth {
        state: HealthState::Warning,
        reasons: (0..MAX_REASONS)
            .map(|n| format!("{n} {}", "r".repeat(REASON_BYTES - 2)))
            .collect(),
        temperature_c: Some(41),
        power_on_hours: Some(31_000 + i),
        reallocated_sectors: Some(5),
        pending_sectors: Some(0),
        media_errors: None,
        percentage_used: Some(7),
        checked: Some(1_800_000_000_000 + i),
    }
}

fn usage() -> FsUsage {
    FsUsage {
        size: 4_000_000_000_000,
        used: 1_000_000_000_000,
        avail: 2_800_000_000_000,
    }
}

#[test]
fn the_condition_travels_in_its_own_trailer_after_the_probe() {
    let mut disks: Vec<DiskRecord> = (0..3).map(disk).collect();
    disks[0].health = Some(health(0));
    disks[0].fs = Some(usage());
    disks[2].fs = Some(usage());
    disks[1].probe = Probe::Empty;
    disks[1].hardware = hardware(1);
    let e = inventory(disks.clone());
    let bytes = encode(&e);
    assert_eq!(decode(&bytes).unwrap(), e);
    // Without a condition, the very bytes of revision 3; with one, those bytes and the
    // trailer after them. A peer of revision 3 or before: health and usage unknown.
    let rev3 = older_prefix(&disks, &bytes, |d| {
        d.health = None;
        d.fs = None;
    });
    assert_eq!(bytes[rev3.len()], TRAILER_CONDITION);
    // The tag, the list's length, each disk's entry (two bytes for one with neither).
    assert_eq!(condition_size(&disks[1]), 2);
    let entries: usize = disks.iter().map(condition_size).sum();
    assert_eq!(bytes.len() - rev3.len(), 1 + 1 + entries);
    // Alone (no hardware, no probe), the condition is the first trailer.
    let bare: Vec<DiskRecord> = (0..2)
        .map(|i| DiskRecord {
            fs: Some(usage()),
            ..disk(i)
        })
        .collect();
    let e = inventory(bare.clone());
    let b = encode(&e);
    assert_eq!(decode(&b).unwrap(), e);
    let rev1 = encode(&inventory((0..2).map(disk).collect()));
    assert_eq!(b[rev1.len()], TRAILER_CONDITION);
    // Twice, for another number of disks, or cut short: refused as the other trailers
    // are; a later trailer after it is ignored.
    let mut twice = bytes.clone();
    twice.extend_from_slice(&bytes[rev3.len()..]);
    assert_eq!(decode(&twice), Err(Reject::BadChunk));
    let mut other = rev1.clone();
    other.push(TRAILER_CONDITION);
    other.extend_from_slice(&[1, 0, 0]);
    assert_eq!(decode(&other), Err(Reject::BadChunk));
    let mut short = b.clone();
    short.truncate(short.len() - 2);
    assert_eq!(decode(&short), Err(Reject::Undecodable));
    let mut later = bytes.clone();
    later.extend_from_slice(&[9, 1, 2, 3]);
    assert_eq!(decode(&later).unwrap(), inventory(disks));
    // A state code from a later release reads as unknown.
    let mut odd = rev1.clone();
    odd.push(TRAILER_CONDITION);
    odd.extend_from_slice(&[2, 1, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    let Body::Inventory(c) = decode(&odd).unwrap().body else {
        unreachable!()
    };
    let got = c.disks[0].health.as_ref().unwrap();
    assert_eq!(got.state, HealthState::Unknown);
    assert_eq!(c.disks[1].health, None);
}

#[test]
fn a_condition_out_of_bounds_rejects_the_datagram() {
    let with = |h: DiskHealth, f: Option<FsUsage>| {
        let mut d = disk(1);
        d.health = Some(h);
        d.fs = f;
        decode(&encode(&inventory(vec![d])))
    };
    // At the bounds: accepted.
    for ok in [
        health(1),
        DiskHealth {
            temperature_c: Some(-100),
            percentage_used: Some(1000),
            ..health(1)
        },
        DiskHealth {
            temperature_c: Some(200),
            reasons: vec![],
            ..health(1)
        },
    ] {
        assert!(with(ok, Some(usage())).is_ok());
    }
    let full = FsUsage {
        size: 10,
        used: 10,
        avail: 10,
    };
    assert!(with(health(1), Some(full)).is_ok());
    // Past them: the datagram is refused, as for any other field.
    let mut many = health(1);
    many.reasons.push("one more".into());
    let mut long = health(1);
    long.reasons[0] = "x".repeat(REASON_BYTES + 1);
    let mut control = health(1);
    control.reasons[3] = "evil\nreason".into();
    for bad in [
        many,
        long,
        control,
        DiskHealth {
            temperature_c: Some(201),
            ..health(1)
        },
        DiskHealth {
            temperature_c: Some(-101),
            ..health(1)
        },
        DiskHealth {
            percentage_used: Some(1001),
            ..health(1)
        },
    ] {
        assert_eq!(with(bad, None), Err(Reject::InvalidField));
    }
    for bad in [FsUsage { used: 11, ..full }, FsUsage { avail: 11, ..full }] {
        assert_eq!(with(health(1), Some(bad)), Err(Reject::InvalidField));
    }
}

#[test]
fn a_local_condition_is_cut_to_the_bounds_not_the_disk() {
    let mut d = disk(1);
    let mut h = health(1);
    h.reasons = (0..12)
        .map(|i| format!("reason {i}\twith a tab and {}", "é".repeat(100)))
        .collect();
    d.health = Some(h);
    d.fs = Some(usage());
    let fitted = fit_disk(&d).unwrap();
    let reasons = &fitted.health.as_ref().unwrap().reasons;
    assert_eq!(reasons.len(), MAX_REASONS);
    assert!(
        reasons.iter().all(|r| printable(r, REASON_BYTES)),
        "{reasons:?}"
    );
    assert!(reasons[0].starts_with("reason 0 with a tab"));
    assert_eq!(fitted.fs, d.fs);
    // A figure no drive reports is left out, the verdict stays; usage that does not add
    // up is left out.
    d.health.as_mut().unwrap().temperature_c = Some(1000);
    d.health.as_mut().unwrap().percentage_used = Some(5000);
    d.fs = Some(FsUsage {
        size: 1,
        used: 2,
        avail: 0,
    });
    let fitted = fit_disk(&d).unwrap();
    let h = fitted.health.as_ref().expect("the verdict still travels");
    assert_eq!((h.temperature_c, h.percentage_used), (None, None));
    assert_eq!(h.state, d.health.as_ref().unwrap().state);
    assert_eq!(fitted.fs, None);
    assert_eq!(fitted.device, d.device);
}

#[test]
fn disks_with_a_condition_fit_in_bounded_datagrams() {
    let disks: Vec<DiskRecord> = (0..200)
        .map(|i| DiskRecord {
            health: (i % 3 != 0).then(|| health(i as u64)),
            fs: (i % 2 == 0).then(usage),
            ..probed_with_hardware(i)
        })
        .collect();
    send_and_receive(&disks);
}

#[test]
fn a_disk_whose_condition_does_not_fit_a_small_datagram_goes_without_its_reasons() {
    let mut d = disk(1);
    d.health = Some(health(1));
    d.fs = Some(usage());
    let sent = sent_in_a_small_datagram(&d);
    let h = sent
        .health
        .as_ref()
        .expect("its health without reasons fits");
    assert!(h.reasons.is_empty());
    assert_eq!(h.checked, d.health.as_ref().unwrap().checked);
    assert_eq!(sent.mountpoints, d.mountpoints, "what fits stays");
}

/// An inventory datagram of revision 3 (captured from the encode of commit fac0a99: a
/// disk with hardware and a probe, a blank disk), read by this revision: health and
/// usage unknown, everything else as before, and encoded again to the same bytes.
const REVISION_3: &str = "44534b4401203031323334353637383961626364656630313233343536373839616263646566086f6c642d6e6f64652a0780a0f1c2b134000300010202012430303030303030312d383361302d346534612d616636612d66353738636137613166363501316120726174686572206c6f6e67206c6162656c20666f72206469736b206e756d626572203120e2809420c39c726c617562342f6465762f6469736b2f62792d69642f6174612d53414d53554e475f5353445f3837305f45564f5f3030303030312d7061727431010465787434010b2f7372762f646174612f310000342f6465762f6469736b2f62792d69642f6174612d53414d53554e475f5353445f3837305f45564f5f3030303030322d7061727431000002020181c0f58bb8740112535434303030444d3030342d324356313034010341544101085a464e303030303101146e61612e353030306335303030303030303030310104736174610100010100000000000000000000000003020102";

#[test]
fn a_revision_3_chunk_decodes_with_health_and_usage_unknown() {
    let bytes = hex::decode(REVISION_3).unwrap();
    let env = decode(&bytes).unwrap();
    let Body::Inventory(c) = &env.body else {
        unreachable!()
    };
    assert_eq!(c.disks.len(), 2);
    assert_eq!(c.disks[0].hardware, hardware(1));
    assert_eq!(
        (c.disks[0].probe, c.disks[1].probe),
        (Probe::Signature, Probe::Empty)
    );
    assert!(c.disks.iter().all(|d| d.health.is_none() && d.fs.is_none()));
    assert_eq!(encode(&env), bytes);
}
