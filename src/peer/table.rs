//! Every peer we know, in memory, and what follows from hearing (or not hearing) one.
//!
//! The store is the durable copy, but a datagram must not cost a store scan, and a peer
//! heard every few seconds must not cost a write each time: this table mirrors the store's
//! peers, decides when a record is worth writing, tracks which peers are live (to report
//! joins, goodbyes and expiries once each), notices two daemons sharing a name, and keeps
//! the table bounded (`peers.max`) without ever forgetting a peer whose disks the store
//! keeps (present or last known): at the cap a newcomer is refused. It does no I/O:
//! it returns what happened, and the layer writes the store and emits the events.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::time::Duration;

use super::wire::Envelope;
use crate::config::PeerLimits;
use crate::model::{Millis, PeerRecord};

/// While the table is full with no peer it may forget, newcomers are refused without a
/// look for one for this long (a flood of forged newcomers costs one scan a second).
const FULL_RECHECK_MS: Millis = 1_000;
/// A peer heard again is written to the store at most this often (unless something else
/// about it changed), and at least four times per `peer_expiry`, so that queries, which
/// judge liveness from the store, never see a live peer as expired.
pub const PERSIST_LAST_SEEN_EVERY_MS: u64 = 5_000;

/// Whether a newcomer fits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Room {
    /// Below the cap.
    Fits,
    /// At the cap: this peer, not live and without disks (nothing of the fleet's history
    /// goes with it; the longest unheard of those), was forgotten to make room; the caller
    /// removes it from the store.
    Forgot {
        /// Its node id.
        node_id: String,
        /// Its name.
        node: String,
    },
    /// Every peer is live or has disks: the newcomer is refused.
    Full,
}

/// A peer's record after hearing from it (not yet stored in the table).
#[derive(Debug, Clone)]
pub struct Heard {
    /// The updated record.
    pub peer: PeerRecord,
    /// Whether it changed in a way that must reach the store now.
    pub important: bool,
    /// Other live node ids using the same name, reported now for the first time.
    pub conflicts: Vec<String>,
}

/// A peer that stopped being live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expired {
    /// Its node id.
    pub node_id: String,
    /// Its name (the node id when unknown).
    pub name: String,
    /// Its record, when the stored one lags behind (the caller writes it).
    pub write: Option<PeerRecord>,
}

/// The peer table.
#[derive(Debug)]
pub struct PeerTable {
    expiry: Duration,
    max: usize,
    /// Every peer we know, mirrored from the store.
    peers: BTreeMap<String, PeerRecord>,
    /// When each peer's record was last written to the store (its `last_seen` then).
    persisted: BTreeMap<String, Millis>,
    /// The peers reported live (joined, not yet expired or gone).
    was_live: BTreeSet<String>,
    /// When each peer reported live would expire if not heard again (last seen + expiry),
    /// earliest first. An entry is checked when it is due: a peer heard since gets a new
    /// one, so `expire` costs what expires (and one look per live peer per expiry), not a
    /// walk over every peer every second.
    deadlines: BinaryHeap<Reverse<(Millis, String)>>,
    /// Node name -> the node id last heard under it.
    names: BTreeMap<String, String>,
    /// While the table is full with no peer it may forget: no look for one before this.
    no_victim_until: Millis,
    /// The boot id last heard from each peer.
    boots: BTreeMap<String, u64>,
    conflicts_reported: BTreeSet<(String, String)>,
}

impl PeerTable {
    /// The table as stored, with `limits.max` as the cap.
    pub fn load(
        stored: Vec<PeerRecord>,
        now_ms: Millis,
        expiry: Duration,
        limits: PeerLimits,
    ) -> PeerTable {
        PeerTable::with_cap(stored, now_ms, expiry, limits.max)
    }

    /// The table as stored, with another cap (tests).
    pub fn with_cap(
        stored: Vec<PeerRecord>,
        now_ms: Millis,
        expiry: Duration,
        max: usize,
    ) -> PeerTable {
        let peers: BTreeMap<String, PeerRecord> =
            stored.into_iter().map(|p| (p.node_id.clone(), p)).collect();
        let ms = expiry.as_millis() as Millis;
        let deadlines = peers
            .values()
            .filter(|p| p.is_live(now_ms, expiry))
            .map(|p| Reverse((p.last_seen.saturating_add(ms), p.node_id.clone())))
            .collect();
        PeerTable {
            deadlines,
            expiry,
            max,
            was_live: peers
                .values()
                .filter(|p| p.is_live(now_ms, expiry))
                .map(|p| p.node_id.clone())
                .collect(),
            names: peers
                .values()
                .map(|p| (p.node.clone(), p.node_id.clone()))
                .collect(),
            persisted: peers
                .iter()
                .map(|(k, p)| (k.clone(), p.last_seen))
                .collect(),
            peers,
            no_victim_until: 0,
            boots: BTreeMap::new(),
            conflicts_reported: BTreeSet::new(),
        }
    }

    /// One peer.
    pub fn get(&self, node_id: &str) -> Option<&PeerRecord> {
        self.peers.get(node_id)
    }

    /// Whether we know this peer.
    pub fn contains(&self, node_id: &str) -> bool {
        self.peers.contains_key(node_id)
    }

    /// The cap on peers.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Peers known.
    pub fn len(&self) -> usize {
        self.peers.len()
    }

    /// Whether no peer is known.
    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }

    /// Every peer.
    pub fn peers(&self) -> impl Iterator<Item = &PeerRecord> {
        self.peers.values()
    }

    /// Make room for a new peer, which may fill the table up to `limit` (at most the cap:
    /// see the layer's `make_room` for who gets less). There, only a peer that is not
    /// live and of which the store keeps no disk (`holds_disks` is false: nothing present,
    /// nothing last known) may be forgotten, the longest unheard of them: last known
    /// locations are what a flood of forged newcomers must never erase. When there is
    /// none, the newcomer is refused.
    pub fn make_room(
        &mut self,
        now_ms: Millis,
        limit: usize,
        holds_disks: impl Fn(&str) -> bool,
    ) -> Room {
        if self.peers.len() < limit.min(self.max) {
            return Room::Fits;
        }
        if self.no_victim_until > now_ms {
            return Room::Full; // looked a moment ago: skip the scan (flood defence)
        }
        let victim = self
            .peers
            .values()
            .filter(|p| !p.is_live(now_ms, self.expiry) && !holds_disks(&p.node_id))
            .min_by_key(|p| p.last_seen)
            .map(|p| (p.node_id.clone(), p.node.clone()));
        let Some((node_id, node)) = victim else {
            self.no_victim_until = now_ms + FULL_RECHECK_MS;
            return Room::Full;
        };
        self.forget(&node_id);
        Room::Forgot { node_id, node }
    }

    fn forget(&mut self, node_id: &str) {
        self.peers.remove(node_id);
        self.persisted.remove(node_id);
    }

    /// Update (or make) the record of the sender of `env`, heard from `addr` (sealed with
    /// `key`) at `now_ms`.
    pub fn observe(
        &mut self,
        env: &Envelope,
        addr: &str,
        key: Option<String>,
        now_ms: Millis,
    ) -> Heard {
        let existing = self.peers.get(&env.node_id).cloned();
        let is_new = existing.is_none();
        let mut peer = existing.unwrap_or(PeerRecord {
            node_id: env.node_id.clone(),
            node: env.node.clone(),
            addr: Some(addr.to_string()),
            first_seen: now_ms,
            last_seen: now_ms,
            gone: false,
            legacy: false,
            disks: 0,
            key: None,
            boot: env.boot,
            sent_ms: env.sent_ms,
        });
        let conflicts = if is_new || peer.node != env.node {
            self.name_conflicts(&env.node, &env.node_id, now_ms)
        } else {
            Vec::new()
        };
        let important = is_new
            || peer.node != env.node
            || peer.addr.as_deref() != Some(addr)
            || peer.key != key;
        peer.node = env.node.clone();
        peer.addr = Some(addr.to_string());
        peer.last_seen = now_ms;
        peer.key = key;
        peer.boot = env.boot;
        peer.sent_ms = peer.sent_ms.max(env.sent_ms);
        Heard {
            peer,
            important,
            conflicts,
        }
    }

    /// The live node ids other than `node_id` that use the name `node`, not reported before.
    fn name_conflicts(&mut self, node: &str, node_id: &str, now_ms: Millis) -> Vec<String> {
        // The last node id seen under each name: one lookup per new peer, not a scan of
        // the whole table (which a flood of new peers would turn quadratic).
        let previous = self.names.insert(node.to_string(), node_id.to_string());
        if self.names.len() > 2 * self.max {
            self.names.clear(); // bounded; at worst a conflict is reported late
        }
        previous
            .filter(|id| id != node_id)
            .filter(|id| {
                self.peers
                    .get(id)
                    .is_some_and(|o| o.node == node && o.is_live(now_ms, self.expiry))
            })
            .filter(|other| {
                self.conflicts_reported
                    .insert((node_id.to_string(), other.clone()))
            })
            .into_iter()
            .collect()
    }

    /// Note the boot id heard from a peer; true when it is new (first contact or restart).
    pub fn rebooted(&mut self, node_id: &str, boot: u64) -> bool {
        let rebooted = self.boots.insert(node_id.to_string(), boot) != Some(boot);
        if self.boots.len() > 2 * self.max {
            self.boots.clear(); // bounded; at worst a few extra welcome announces
        }
        rebooted
    }

    /// Whether hearing this peer makes it join (it was gone, expired or unknown).
    pub fn joins(&self, peer: &PeerRecord) -> bool {
        peer.gone || !self.was_live.contains(&peer.node_id)
    }

    /// The peer was reported as joined.
    pub fn mark_live(&mut self, node_id: &str) {
        self.was_live.insert(node_id.to_string());
        let seen = self.peers.get(node_id).map_or(0, |p| p.last_seen);
        self.deadlines.push(Reverse((
            seen.saturating_add(self.expiry.as_millis() as Millis),
            node_id.to_string(),
        )));
    }

    /// The peer said goodbye: not live from now on (the caller stores it with `gone`), and
    /// its place may be taken.
    pub fn said_goodbye(&mut self, peer: &mut PeerRecord) {
        peer.gone = true;
        self.no_victim_until = 0;
        self.was_live.remove(&peer.node_id);
    }

    fn persist_every_ms(&self) -> u64 {
        PERSIST_LAST_SEEN_EVERY_MS.min(self.expiry.as_millis() as u64 / 4)
    }

    /// Whether the record must be written to the store now: something that matters after a
    /// restart changed, or its stored last-seen time is getting old.
    pub fn needs_write(&self, peer: &PeerRecord, important: bool) -> bool {
        important
            || self
                .persisted
                .get(&peer.node_id)
                .is_none_or(|&t| peer.last_seen.saturating_sub(t) >= self.persist_every_ms())
    }

    /// Whether a live gossip member's refreshed last-seen time must be written: a quarter
    /// of the expiry keeps queries right (they judge liveness from the store) at one write
    /// per member per quarter expiry, not one per second.
    pub fn needs_touch_write(&self, peer: &PeerRecord) -> bool {
        let quarter = self.expiry.as_millis() as u64 / 4;
        self.persisted
            .get(&peer.node_id)
            .is_none_or(|&t| peer.last_seen.saturating_sub(t) >= quarter)
    }

    /// The record was written to the store.
    pub fn written(&mut self, peer: &PeerRecord) {
        self.persisted.insert(peer.node_id.clone(), peer.last_seen);
    }

    /// Keep the record in memory.
    pub fn insert(&mut self, peer: PeerRecord) {
        self.peers.insert(peer.node_id.clone(), peer);
    }

    /// The peers that were live and are not any more (not heard within the expiry). Each
    /// is reported once; those whose stored record lags are returned to be written.
    pub fn expire(&mut self, now_ms: Millis) -> Vec<Expired> {
        let ms = self.expiry.as_millis() as Millis;
        let mut expired: Vec<String> = Vec::new();
        while let Some(Reverse((due, _))) = self.deadlines.peek() {
            if *due > now_ms {
                break;
            }
            let Some(Reverse((_, id))) = self.deadlines.pop() else {
                break;
            };
            if !self.was_live.contains(&id) {
                continue; // gone or expired since; a later join pushes a new deadline
            }
            match self.peers.get(&id) {
                Some(p) if p.is_live(now_ms, self.expiry) => {
                    // Heard since this deadline was set: its next one.
                    let next = p.last_seen.saturating_add(ms).max(now_ms + 1);
                    self.deadlines.push(Reverse((next, id)));
                }
                _ => {
                    if !expired.contains(&id) {
                        expired.push(id);
                    }
                }
            }
        }
        let mut out = Vec::with_capacity(expired.len());
        if !expired.is_empty() {
            self.no_victim_until = 0; // one of them may be forgettable now
        }
        for id in expired {
            self.was_live.remove(&id);
            // The last time it was heard, which `needs_write` may have held back.
            let write = match self.peers.get(&id) {
                Some(p) if self.persisted.get(&id) != Some(&p.last_seen) => {
                    let p = p.clone();
                    self.persisted.insert(id.clone(), p.last_seen);
                    Some(p)
                }
                _ => None,
            };
            let name = self
                .peers
                .get(&id)
                .map(|p| p.node.clone())
                .unwrap_or(id.clone());
            out.push(Expired {
                node_id: id,
                name,
                write,
            });
        }
        out
    }

    /// The records whose stored copy lags behind (last seen, replay floor): written at
    /// shutdown so that nothing accepted before can be replayed after a restart.
    pub fn unsaved(&self) -> impl Iterator<Item = &PeerRecord> {
        self.peers
            .values()
            .filter(|p| self.persisted.get(&p.node_id) != Some(&p.last_seen) || p.sent_ms > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peer::wire::Body;

    const T0: Millis = 1_800_000_000_000;
    const EXPIRY: Duration = Duration::from_secs(30);

    fn env(id: &str, name: &str) -> Envelope {
        Envelope {
            node_id: id.into(),
            node: name.into(),
            boot: 1,
            seq: 1,
            sent_ms: T0,
            body: Body::Ping,
        }
    }

    /// Hear a peer the way the layer does: make room, observe, join, store.
    fn hear(t: &mut PeerTable, id: &str, now: Millis) -> Result<bool, Room> {
        if !t.contains(id) {
            match t.make_room(now, t.max(), |_| false) {
                Room::Full => return Err(Room::Full),
                Room::Fits | Room::Forgot { .. } => {}
            }
        }
        let mut h = t.observe(&env(id, id), "198.18.0.2", None, now);
        let joined = t.joins(&h.peer);
        h.peer.gone = false;
        t.written(&h.peer);
        t.insert(h.peer);
        if joined {
            t.mark_live(id);
        }
        Ok(joined)
    }

    #[test]
    fn a_peer_joins_once_and_expires_once_after_peer_expiry() {
        let mut t = PeerTable::load(vec![], T0, EXPIRY, PeerLimits::default());
        assert_eq!(hear(&mut t, "b", T0), Ok(true));
        assert_eq!(hear(&mut t, "b", T0 + 1000), Ok(false), "already live");
        let last = T0 + 1000;
        assert!(t.expire(last + EXPIRY.as_millis() as u64).is_empty());
        let gone = t.expire(last + EXPIRY.as_millis() as u64 + 1);
        assert_eq!(gone.len(), 1);
        assert_eq!(gone[0].node_id, "b");
        assert!(t.expire(last + 10 * EXPIRY.as_millis() as u64).is_empty());
        assert_eq!(hear(&mut t, "b", last + 100_000), Ok(true), "rejoins");
    }

    #[test]
    fn goodbye_makes_a_peer_not_live_at_once() {
        let mut t = PeerTable::load(vec![], T0, EXPIRY, PeerLimits::default());
        hear(&mut t, "b", T0).unwrap();
        let mut p = t.get("b").unwrap().clone();
        t.said_goodbye(&mut p);
        t.insert(p);
        assert!(!t.get("b").unwrap().is_live(T0, EXPIRY));
        assert!(
            t.expire(T0 + 3_600_000).is_empty(),
            "gone is not also expired"
        );
        assert_eq!(hear(&mut t, "b", T0 + 10), Ok(true), "back after goodbye");
    }

    /// A table for at most `cap` peers that heard each of `ids` at `T0`.
    fn heard(cap: usize, ids: &[&str]) -> PeerTable {
        let mut t = PeerTable::with_cap(vec![], T0, EXPIRY, cap);
        for id in ids {
            hear(&mut t, id, T0).unwrap();
        }
        t
    }

    #[test]
    fn a_full_table_of_live_peers_refuses_newcomers() {
        let mut t = heard(3, &["a", "b", "c"]);
        assert_eq!(t.make_room(T0 + 1, 3, |_| false), Room::Full);
        assert_eq!(hear(&mut t, "d", T0 + 1), Err(Room::Full));
        assert_eq!(t.len(), 3);
        // Known peers are still heard.
        assert_eq!(hear(&mut t, "a", T0 + 2), Ok(false));
    }

    #[test]
    fn at_the_cap_the_oldest_non_live_peer_is_forgotten() {
        let mut t = PeerTable::with_cap(vec![], T0, EXPIRY, 3);
        hear(&mut t, "old", T0).unwrap();
        hear(&mut t, "older", T0 - 1).unwrap();
        let later = T0 + EXPIRY.as_millis() as u64 + 10;
        hear(&mut t, "live", later).unwrap();
        assert_eq!(
            t.make_room(later, 3, |_| false),
            Room::Forgot {
                node_id: "older".into(),
                node: "older".into()
            }
        );
        assert!(!t.contains("older"));
        assert!(t.contains("old") && t.contains("live"));
    }

    #[test]
    fn at_the_cap_a_peer_whose_disks_are_kept_is_never_forgotten() {
        let mut t = heard(2, &["a", "b"]);
        // Long after both expired; the store keeps disks of both (present or last known).
        let later = T0 + 100 * EXPIRY.as_millis() as u64;
        assert_eq!(t.expire(later).len(), 2);
        assert_eq!(t.make_room(later, 2, |_| true), Room::Full);
        assert!(t.contains("a") && t.contains("b"));
        // Looked a moment ago: refused without a look.
        assert_eq!(t.no_victim_until, later + FULL_RECHECK_MS);
        assert_eq!(t.make_room(later + 1, 2, |_| false), Room::Full);
        // Once the store keeps nothing of a, a may go.
        let next = later + FULL_RECHECK_MS;
        assert!(
            matches!(t.make_room(next, 2, |id| id != "a"), Room::Forgot { node_id, .. } if node_id == "a")
        );
        assert!(!t.contains("a") && t.contains("b"));
    }

    #[test]
    fn a_newcomer_with_a_lower_limit_fits_only_below_it() {
        let mut t = heard(4, &["a", "b"]);
        assert_eq!(t.make_room(T0, 2, |_| true), Room::Full);
        assert_eq!(t.make_room(T0 + FULL_RECHECK_MS, 4, |_| true), Room::Fits);
    }

    #[test]
    fn goodbye_lets_a_full_table_take_a_newcomer_at_once() {
        let mut t = heard(2, &["a", "b"]);
        assert_eq!(t.make_room(T0, 2, |_| false), Room::Full);
        let mut p = t.get("a").unwrap().clone();
        t.said_goodbye(&mut p);
        t.insert(p);
        assert!(
            matches!(t.make_room(T0 + 1, 2, |_| false), Room::Forgot { node_id, .. } if node_id == "a")
        );
    }

    #[test]
    fn records_are_written_when_important_or_getting_old() {
        let mut t = PeerTable::load(vec![], T0, EXPIRY, PeerLimits::default());
        hear(&mut t, "b", T0).unwrap();
        let mut p = t.get("b").unwrap().clone();
        p.last_seen = T0 + PERSIST_LAST_SEEN_EVERY_MS - 1;
        assert!(!t.needs_write(&p, false));
        assert!(t.needs_write(&p, true));
        p.last_seen = T0 + PERSIST_LAST_SEEN_EVERY_MS;
        assert!(t.needs_write(&p, false));
        // A short expiry writes more often: four times per expiry.
        let t2 = PeerTable::load(
            vec![t.get("b").unwrap().clone()],
            T0,
            Duration::from_secs(8),
            PeerLimits::default(),
        );
        p.last_seen = T0 + 2_000;
        assert!(t2.needs_write(&p, false));
    }

    #[test]
    fn a_name_used_by_two_live_daemons_is_reported_once() {
        let mut t = PeerTable::load(vec![], T0, EXPIRY, PeerLimits::default());
        let h = t.observe(&env("id1", "alpha"), "198.18.0.2", None, T0);
        t.insert(h.peer);
        let h = t.observe(&env("id2", "alpha"), "198.18.0.3", None, T0);
        assert_eq!(h.conflicts, vec!["id1".to_string()]);
        assert!(h.important);
        t.insert(h.peer);
        // Alternating names does not repeat the report.
        let h = t.observe(&env("id1", "beta"), "198.18.0.2", None, T0);
        t.insert(h.peer);
        let h = t.observe(&env("id2", "alpha"), "198.18.0.3", None, T0);
        assert!(h.conflicts.is_empty());
    }

    #[test]
    fn the_stored_table_is_loaded_with_its_live_peers() {
        let live = PeerRecord {
            node_id: "b".into(),
            node: "b".into(),
            addr: None,
            first_seen: T0,
            last_seen: T0,
            gone: false,
            legacy: false,
            disks: 0,
            key: None,
            boot: 1,
            sent_ms: 0,
        };
        let stale = PeerRecord {
            node_id: "c".into(),
            last_seen: T0 - 2 * EXPIRY.as_millis() as u64,
            ..live.clone()
        };
        let mut t = PeerTable::load(vec![live, stale], T0, EXPIRY, PeerLimits::default());
        assert_eq!(t.len(), 2);
        // Only the live one can expire (the stale one was never reported live).
        let gone = t.expire(T0 + EXPIRY.as_millis() as u64 + 1);
        assert_eq!(gone.len(), 1);
        assert_eq!(gone[0].node_id, "b");
        assert_eq!(gone[0].write, None, "its stored record is current");
        assert_eq!(t.unsaved().count(), 0);
    }
}
