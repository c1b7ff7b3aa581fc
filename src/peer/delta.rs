//! Inventory changes as deltas: what a member needs to move a peer's inventory from one
//! generation to the next, small enough to ride on the gossip's own packets.
//!
//! When our inventory changes, the peer layer broadcasts a [`Notice`](super::gossip::Notice)
//! through foca, which piggybacks it on its packets and retransmits it a number of times
//! that grows with log(N); members relay it, so its cost to us does not grow with the
//! fleet. Since this release the notice carries a delta: the disks changed since a *base*
//! generation, as their records now (or as removed). It is cumulative over our last few
//! changes (as many as fit), so a member that missed one notice but holds any generation
//! from the base on still catches up from the next. A member further behind (or one whose
//! delta did not fit) pulls the whole inventory, as before.
//!
//! Mixed versions: the delta is a trailer after the notice's own bytes. A daemon of the
//! previous release reads the notice and ignores the rest (postcard leaves trailing bytes
//! alone), so it pulls as it always did; a notice without a trailer (from such a daemon)
//! is a notice without a delta here.
//!
//! The records of a delta are postcard `DiskRecord`s, whose layout is the previous
//! release's (health and filesystem usage are not part of it, see `DiskRecord::health`).
//! They travel after the delta's own bytes, as the inventory's do after a chunk: the tag
//! [`wire::TRAILER_CONDITION`] and the condition of each upsert, in order (left out when
//! none has one). The previous release decodes the delta with `from_bytes`, which leaves
//! the trailer alone, so it applies the same delta without health; a delta without the
//! trailer (from such a daemon) is read here with health and usage unknown. A trailer that
//! does not decode, or lists another number of records, makes no delta (the member pulls).

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde::{Deserialize, Serialize};

use super::wire;
use crate::model::DiskRecord;

/// Largest delta trailer we broadcast, in bytes: it shares a 1,200-byte gossip packet with
/// foca's own messages and membership updates. One or two disk records fit; a change
/// larger than that travels as a notice alone, and members pull.
pub const MAX_DELTA: usize = 480;

/// Changes of ours remembered, to make cumulative deltas.
const KEPT: usize = 8;

/// What changed in a peer's inventory from generation `base` to the notice's generation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delta {
    /// The generation this delta starts from: it applies to any copy of the inventory at
    /// this generation or later (and older than the notice's).
    pub base: u64,
    /// Disks added or changed, as they are now.
    pub upserts: Vec<DiskRecord>,
    /// Disks removed (their identities, see [`DiskRecord::identity`]).
    pub removed: Vec<String>,
}

impl Delta {
    /// The trailer's bytes: the delta, then its records' condition when any has one.
    pub fn encode(&self) -> Option<Vec<u8>> {
        let out = postcard::to_allocvec(self).ok()?;
        if wire::any_condition(self.upserts.iter()) {
            wire::append_condition(out, &self.upserts).ok()
        } else {
            Some(out)
        }
    }

    /// A trailer from the wire, if it decodes and every record is within the wire's
    /// bounds (a bad trailer is no delta: the member pulls instead). Bytes after the
    /// condition, or in place of it under another tag, are a later release's: ignored.
    pub fn decode(bytes: &[u8]) -> Option<Delta> {
        let (mut d, rest): (Delta, &[u8]) = postcard::take_from_bytes(bytes).ok()?;
        if let Some((&wire::TRAILER_CONDITION, body)) = rest.split_first() {
            wire::read_condition(body, &mut d.upserts).ok()?;
        }
        let ok = d.upserts.len() + d.removed.len() <= crate::model::limits::DISKS_PER_CHUNK
            && d.upserts.iter().all(wire::valid_disk)
            && d.removed
                .iter()
                .all(|id| !id.is_empty() && id.len() <= crate::model::limits::DEVICE + 8);
        ok.then_some(d)
    }

    /// `inventory` (a copy at `base` or later) moved to the delta's generation.
    pub fn apply(&self, inventory: Vec<DiskRecord>) -> Vec<DiskRecord> {
        let gone: BTreeSet<String> = self
            .removed
            .iter()
            .cloned()
            .chain(self.upserts.iter().map(DiskRecord::identity))
            .collect();
        let mut out: Vec<DiskRecord> = inventory
            .into_iter()
            .filter(|d| !gone.contains(&d.identity()))
            .collect();
        out.extend(self.upserts.iter().cloned());
        out
    }
}

/// Our side: the inventory last announced, and which disks each recent change touched.
#[derive(Debug, Default)]
pub struct DeltaLog {
    /// The inventory as last announced, by identity (as the wire carries it).
    announced: BTreeMap<String, DiskRecord>,
    /// The generation `announced` is at (`None` before the first announce).
    at: Option<u64>,
    /// Recent changes, oldest first: (the generation before, the generation after, the
    /// identities it touched).
    changes: VecDeque<(u64, u64, BTreeSet<String>)>,
}

impl DeltaLog {
    /// Our inventory is now `inventory`, as generation `generation`: remember it, and
    /// return the largest cumulative delta that fits in [`MAX_DELTA`] bytes (`None`: the
    /// first announce, or not even the last change fits).
    pub fn record(&mut self, generation: u64, inventory: &[DiskRecord]) -> Option<Delta> {
        let now: BTreeMap<String, DiskRecord> = inventory
            .iter()
            .filter_map(wire::fit_disk)
            .map(|d| (d.identity(), d))
            .collect();
        let Some(before) = self.at else {
            self.announced = now;
            self.at = Some(generation);
            return None;
        };
        if before == generation {
            return None;
        }
        let touched: BTreeSet<String> = now
            .iter()
            .filter(|(id, d)| self.announced.get(*id) != Some(*d))
            .map(|(id, _)| id.clone())
            .chain(
                self.announced
                    .keys()
                    .filter(|id| !now.contains_key(*id))
                    .cloned(),
            )
            .collect();
        self.changes.push_back((before, generation, touched));
        while self.changes.len() > KEPT {
            self.changes.pop_front();
        }
        self.announced = now;
        self.at = Some(generation);
        // The oldest base whose changes since fit, newest last.
        for start in 0..self.changes.len() {
            let base = self.changes[start].0;
            let ids: BTreeSet<&String> = self.changes.range(start..).flat_map(|c| &c.2).collect();
            let delta = Delta {
                base,
                upserts: ids
                    .iter()
                    .filter_map(|id| self.announced.get(*id).cloned())
                    .collect(),
                removed: ids
                    .iter()
                    .filter(|id| !self.announced.contains_key(**id))
                    .map(|id| (*id).clone())
                    .collect(),
            };
            if delta.encode().is_some_and(|b| b.len() <= MAX_DELTA) {
                return Some(delta);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disk(n: u32, label: &str) -> DiskRecord {
        DiskRecord {
            uuid: Some(format!("0000{n:04x}-83a0-4e4a-af6a-f578ca7a1f65")),
            label: Some(label.into()),
            device: format!("/dev/sd{n}"),
            fstype: Some("ext4".into()),
            ..Default::default()
        }
    }

    fn sorted(mut v: Vec<DiskRecord>) -> Vec<DiskRecord> {
        v.sort_by_key(DiskRecord::identity);
        v
    }

    #[test]
    fn a_delta_moves_any_copy_from_its_base_on_to_the_new_generation() {
        let mut log = DeltaLog::default();
        let g1 = vec![disk(1, "a"), disk(2, "b")];
        assert_eq!(log.record(1, &g1), None, "the first announce has no base");
        // Generation 2: disk 3 added. Generation 3: disk 1 relabelled, disk 2 removed.
        let g2 = vec![disk(1, "a"), disk(2, "b"), disk(3, "c")];
        let d2 = log.record(2, &g2).unwrap();
        assert_eq!(d2.base, 1);
        assert_eq!(sorted(d2.apply(g1.clone())), sorted(g2.clone()));
        let g3 = vec![disk(1, "renamed"), disk(3, "c")];
        let d3 = log.record(3, &g3).unwrap();
        // Cumulative: a member at generation 1 (it missed 2) and one at 2 both get to 3.
        assert_eq!(d3.base, 1);
        assert_eq!(sorted(d3.apply(g1)), sorted(g3.clone()));
        assert_eq!(sorted(d3.apply(g2)), sorted(g3));
    }

    #[test]
    fn a_change_too_large_for_a_packet_has_no_delta_and_a_later_small_one_does() {
        let mut log = DeltaLog::default();
        log.record(1, &[]);
        let many: Vec<DiskRecord> = (0..20).map(|n| disk(n, "x")).collect();
        assert_eq!(log.record(2, &many), None, "members pull instead");
        let mut more = many.clone();
        more.push(disk(99, "y"));
        let d = log.record(3, &more).unwrap();
        assert_eq!(d.base, 2, "the large change is not part of it");
        assert_eq!(d.upserts, vec![disk(99, "y")]);
        assert!(d.encode().unwrap().len() <= MAX_DELTA);
    }

    fn healthy(n: u32, checked: u64) -> DiskRecord {
        DiskRecord {
            health: Some(crate::model::DiskHealth {
                state: crate::model::HealthState::Ok,
                temperature_c: Some(35),
                checked: Some(checked),
                ..Default::default()
            }),
            fs: Some(crate::model::FsUsage {
                size: 1000,
                used: 10,
                avail: 900,
            }),
            ..disk(n, "a")
        }
    }

    /// The previous release's `Delta::decode`, frozen: `from_bytes` of the same layout
    /// (`DiskRecord`'s serde form is unchanged, its health and usage skipped).
    fn previous_release(bytes: &[u8]) -> Option<Delta> {
        postcard::from_bytes(bytes).ok()
    }

    #[test]
    fn the_condition_rides_after_the_delta_and_both_releases_read_it() {
        let delta = Delta {
            base: 3,
            upserts: vec![healthy(1, 77), disk(2, "b")],
            removed: vec!["uuid:x".into()],
        };
        let bytes = delta.encode().unwrap();
        assert_eq!(Delta::decode(&bytes), Some(delta.clone()));
        // The previous release: the same delta, without health and usage.
        let plain = Delta {
            upserts: vec![disk(1, "a"), disk(2, "b")],
            ..delta.clone()
        };
        assert_eq!(previous_release(&bytes), Some(plain.clone()));
        // Its deltas (no trailer) read here with health and usage unknown, and ours without
        // any condition are its bytes.
        let old = postcard::to_allocvec(&plain).unwrap();
        assert_eq!(Delta::decode(&old), Some(plain.clone()));
        assert_eq!(plain.encode().unwrap(), old);
        assert!(bytes.starts_with(&old));
        assert_eq!(bytes[old.len()], wire::TRAILER_CONDITION);
        // A later release's trailer after it, or in its place, is ignored.
        let mut later = bytes.clone();
        later.extend_from_slice(&[9, 1, 2]);
        assert_eq!(Delta::decode(&later), Some(delta.clone()));
        let mut other = old.clone();
        other.extend_from_slice(&[9, 1, 2]);
        assert_eq!(Delta::decode(&other), Some(plain));
        // A condition for another number of records, cut short, or out of bounds: no delta.
        let mut short = old.clone();
        short.extend_from_slice(&[wire::TRAILER_CONDITION, 1, 0, 0]);
        assert_eq!(Delta::decode(&short), None);
        assert_eq!(Delta::decode(&bytes[..bytes.len() - 1]), None);
        let mut hot = delta.clone();
        if let Some(h) = hot.upserts[0].health.as_mut() {
            h.temperature_c = Some(500);
        }
        assert_eq!(Delta::decode(&hot.encode().unwrap()), None);
    }

    #[test]
    fn a_new_reading_is_a_change_a_delta_carries() {
        let mut log = DeltaLog::default();
        log.record(1, &[healthy(1, 10), disk(2, "b")]);
        let d = log.record(2, &[healthy(1, 20), disk(2, "b")]).unwrap();
        assert_eq!(d.upserts, vec![healthy(1, 20)]);
        let back = Delta::decode(&d.encode().unwrap()).unwrap();
        assert_eq!(back.upserts[0].health, healthy(1, 20).health);
        assert_eq!(back.upserts[0].fs, healthy(1, 20).fs);
    }

    #[test]
    fn a_bad_trailer_is_no_delta() {
        let bad = Delta {
            base: 1,
            upserts: vec![DiskRecord {
                device: String::new(),
                ..Default::default()
            }],
            removed: vec![],
        };
        assert_eq!(Delta::decode(&bad.encode().unwrap()), None);
        assert_eq!(Delta::decode(&[0xff, 0xff, 0xff]), None);
        let good = Delta {
            base: 1,
            upserts: vec![disk(1, "a")],
            removed: vec!["uuid:x".into()],
        };
        assert_eq!(Delta::decode(&good.encode().unwrap()), Some(good));
    }
}
