//! The layer's gossip half: what membership changes and gossip packets mean for the peer
//! table, and how inventories travel unicast.
//!
//! Membership and liveness are foca's ([`super::gossip`]); inventories are ours, in the
//! same sealed envelopes and chunks as on multicast:
//! - a change rides foca's dissemination as a notice with a small delta (`delta.rs`),
//!   applied by every member that has the base it names (`inventories`);
//! - a whole inventory goes unicast to a member when it comes up (one copy each way) and
//!   to a member that asks (a pull, at most once a second each): a member behind by more
//!   than its deltas can fix pulls, spread over a few seconds;
//! - a joiner, and a member back after being lost, ask one member for the whole member
//!   list (`members`).
//!
//! A member is behind on a peer when a notice or one of the peer's own gossip packets
//! (which carry its inventory generation) names a newer generation than the last complete
//! one it has. Everything to send goes into an outbox that the serve loop flushes
//! (`upkeep`), so the receive path stays free of I/O. The same peer heard both ways is one
//! peer (its node id).

mod inventories;
mod members;
mod upkeep;

use std::num::NonZeroUsize;

use lru::LruCache;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;

use rand::Rng;

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::delta::{Delta, DeltaLog};
use super::gossip::{Gossip, MemberId, Notice, Output};
use super::handle::GossipReport;
use super::seeds::Seeds;
use super::transport::Unicast;
use super::wire::{self, Body, Swim};
use super::{keys, Layer, PACE_EVERY, PACE_PAUSE};
use crate::model::Millis;
use crate::telemetry::Stats;

/// A member is pushed our inventory (or answered a pull) at most this often.
const PUSH_EVERY: Duration = Duration::from_secs(1);
/// A member that is behind pulls after this long (the push is usually on its way), plus a
/// random part of `PULL_SPREAD`: when a change too large for a delta reaches the whole
/// fleet at once, its origin is asked over a few seconds, not in one burst.
const PULL_AFTER: Duration = Duration::from_secs(1);
const PULL_SPREAD: Duration = Duration::from_secs(4);
/// Between two pulls of the same peer.
const PULL_EVERY: Duration = Duration::from_secs(3);
/// Pulls of one generation before giving up (the next notice or packet starts over).
const PULL_TRIES: u32 = 5;
/// A LAN peer heard by multicast is asked to let us in at most this often.
const KNOCK_EVERY: Duration = Duration::from_secs(30);
/// A member with at most this many live members announces back to a new one.
const SMALL_VIEW: usize = 8;
/// A member is sent our member list at most this often.
const LIST_EVERY: Duration = Duration::from_secs(10);
/// Member list pages are taken for this long after we asked for them.
const LIST_WINDOW: Duration = Duration::from_secs(30);
/// A member that joined asks a second member for its list this long after the first.
const ASK_AGAIN_AFTER: Duration = Duration::from_secs(15);
/// How often a live member's last-seen time is refreshed: about eight times per peer
/// expiry, between one second and thirty.
fn touch_every(expiry: Duration) -> Duration {
    (expiry / 8).clamp(Duration::from_secs(1), Duration::from_secs(30))
}

/// Entries in each rate-limit map, per peer the table can hold (one for multicast, one for
/// gossip); past it the least recently used entry goes, never the whole map: clearing
/// all at once would hand every peer a fresh allowance together.
pub(super) const TRACKED_PER_PEER: usize = 2;
/// Largest foca packet before our envelope and seal are added.
pub(super) const MAX_SWIM: usize = 1200;

/// The replay window of a peer's gossip envelopes (apart from its multicast one).
pub(super) fn replay_key(node_id: &str) -> String {
    format!("{node_id}/gossip")
}

/// A result of looking up a seed: its index and addresses (or why not).
pub(super) type Resolved = (usize, Result<Vec<SocketAddr>, String>);

struct Behind {
    addr: SocketAddr,
    /// The run and generation we know it has (0: any, we have nothing of it).
    boot: u64,
    generation: u64,
    /// When the first pull is due.
    due: Instant,
    pulled_at: Option<Instant>,
    tries: u32,
}

/// What the layer keeps for gossip (present only when gossip runs).
pub(super) struct GossipState {
    pub(super) engine: Gossip,
    seeds: Seeds,
    listen: SocketAddr,
    advertise: SocketAddr,
    /// Live members by node id, with their identity (gossip address and run: a member's
    /// old run declared down after it restarted at the same address is not the member).
    up: BTreeMap<String, MemberId>,
    /// When each peer was last heard over gossip.
    heard: LruCache<String, Millis>,
    /// The latest complete inventory of each peer we have, from either path.
    latest: LruCache<String, (u64, u64)>,
    behind: LruCache<String, Behind>,
    pushed: LruCache<String, Instant>,
    /// Our content version (boot, generation) each member was last sent.
    sent: LruCache<String, (u64, u64)>,
    knocked: LruCache<String, Instant>,
    /// When each member was last sent our member list.
    listed: LruCache<String, Instant>,
    /// When we last asked a member for its member list (we ask the first member that
    /// lets us in, and again after losing every member); pages are taken only for a while
    /// after asking.
    asked_members: Option<Instant>,
    /// Whether we asked a second time, a while after the first (members that joined at
    /// the same moment as we did are missing from the first list).
    asked_again: bool,
    /// Messages to send, flushed by the serve loop.
    outbox: VecDeque<(SocketAddr, Body)>,
    /// When each live member's last-seen time is next refreshed, earliest first (an entry
    /// of a member that went down is dropped when it comes due).
    touches: BinaryHeap<Reverse<(Instant, String)>>,
    /// Our inventory as last announced, and recent changes, to make deltas of.
    deltas: DeltaLog,
    /// Peers' deltas received, to apply (they write the store: done where the layer may
    /// wait, see `apply_deltas`).
    incoming: VecDeque<(Notice, Delta)>,
    /// Members the failure detector holds live again that the table had lost (a restart
    /// whose old run was declared down): made live where the layer may wait.
    revive: VecDeque<String>,
    /// Sequence numbers of our gossip envelopes (a replay window of their own, apart from
    /// multicast's: the two paths reorder freely).
    pub(super) seq: u64,
    /// The last sequence number sent to each member (see `Layer::envelope_gossip`).
    pub(super) dest_seq: LruCache<SocketAddr, u64>,
    bytes_in: u64,
    bytes_out: u64,
    /// Peers' deltas applied.
    deltas_applied: u64,
    /// Whole inventories asked for (we were behind) and asked of us.
    pulls_sent: u64,
    pulls_answered: u64,
    /// Whole copies of our inventory sent unicast (to new members, and answering pulls).
    inventories_sent: u64,
    resolve_tx: mpsc::Sender<Resolved>,
    had_members: bool,
    /// The published `via` map needs rebuilding (a member or a path came or went).
    via_dirty: bool,
    via_published: Millis,
}

impl GossipState {
    pub(super) fn new(
        engine: Gossip,
        seeds: Seeds,
        listen: SocketAddr,
        advertise: SocketAddr,
        resolve_tx: mpsc::Sender<Resolved>,
        tracked: NonZeroUsize,
    ) -> GossipState {
        GossipState {
            engine,
            seeds,
            listen,
            advertise,
            up: BTreeMap::new(),
            heard: LruCache::sparse(tracked),
            latest: LruCache::sparse(tracked),
            behind: LruCache::sparse(tracked),
            pushed: LruCache::sparse(tracked),
            sent: LruCache::sparse(tracked),
            knocked: LruCache::sparse(tracked),
            listed: LruCache::sparse(tracked),
            asked_members: None,
            asked_again: false,
            outbox: VecDeque::new(),
            touches: BinaryHeap::new(),
            deltas: DeltaLog::default(),
            incoming: VecDeque::new(),
            revive: VecDeque::new(),
            seq: 0,
            dest_seq: LruCache::sparse(tracked),
            bytes_in: 0,
            bytes_out: 0,
            deltas_applied: 0,
            pulls_sent: 0,
            pulls_answered: 0,
            inventories_sent: 0,
            resolve_tx,
            had_members: false,
            via_dirty: true,
            via_published: 0,
        }
    }

    /// When the engine or a seed next needs the layer.
    pub(super) fn next_due(&self) -> Option<Instant> {
        match (self.engine.next_due(), self.seeds.next_due()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The member's gossip address, when it is live.
    pub(super) fn route(&self, node_id: &str) -> Option<SocketAddr> {
        self.up.get(node_id).map(|m| m.addr)
    }

    pub(super) fn count_in(&mut self, n: usize) {
        self.bytes_in += n as u64;
    }
}

/// Remember which content version a member was sent (bounded like the other maps).
fn note_sent(sent: &mut LruCache<String, (u64, u64)>, node_id: &str, version: (u64, u64)) {
    sent.put(node_id.to_string(), version);
}

/// Bounded rate limit: true (and noted) when `key` was not let through within `every`.
/// At capacity the least recently let-through key is forgotten.
fn allow(map: &mut LruCache<String, Instant>, key: &str, now: Instant, every: Duration) -> bool {
    if map
        .peek(key)
        .is_some_and(|t| now.duration_since(*t) < every)
    {
        return false;
    }
    map.put(key.to_string(), now);
    true
}

impl Layer {
    /// Whether `node_id` was heard by multicast within the peer expiry (then it has our
    /// multicast announces and needs no unicast copy, and multicast vouches for it).
    pub(super) fn multicast_fresh(&self, node_id: &str) -> bool {
        let expiry = self.ctx.peer_expiry().as_millis() as Millis;
        self.heard
            .multicast
            .peek(node_id)
            .is_some_and(|t| self.clock.wall_ms().saturating_sub(*t) <= expiry)
    }

    /// A peer was heard over multicast: note it, and if it is a keyed LAN peer that is not
    /// a gossip member yet, knock at its gossip port (the LAN needs no seeds; one seed line
    /// anywhere then joins the whole LAN to the fleet).
    pub(super) fn heard_by_multicast(&mut self, node_id: &str, from: SocketAddr, keyed: bool) {
        let was_fresh = self.multicast_fresh(node_id);
        self.heard
            .multicast
            .put(node_id.to_string(), self.clock.wall_ms());
        let now = self.clock.instant();
        let Some(gs) = self.gossip.as_mut() else {
            return;
        };
        if !was_fresh {
            gs.via_dirty = true;
        }
        if !keyed || gs.up.contains_key(node_id) {
            return;
        }
        if allow(&mut gs.knocked, node_id, now, KNOCK_EVERY) {
            let to = SocketAddr::new(from.ip(), gs.listen.port());
            let out = gs.engine.announce(MemberId::seed(to), now);
            self.gossip_outputs_sync(out);
        }
    }

    /// A gossip envelope from `node_id` passed every check.
    pub(super) fn heard_by_gossip(&mut self, node_id: &str, from: SocketAddr) {
        let t = self.clock.wall_ms();
        let fresh = self.multicast_fresh(node_id);
        if let Some(gs) = self.gossip.as_mut() {
            if gs.heard.put(node_id.to_string(), t).is_none() {
                gs.via_dirty = true;
                // Shown at once (the full map is rebuilt on the next tick): a peer first
                // heard by gossip must never be listed as heard by multicast.
                let v = if fresh { "both" } else { "gossip" };
                self.ctx.status.set_via_one(node_id, v);
            }
            gs.seeds.heard_from(from);
        }
    }

    /// A foca packet inside a gossip envelope.
    pub(super) async fn receive_swim(
        &mut self,
        node_id: &str,
        boot: u64,
        swim: Swim,
        from: SocketAddr,
    ) -> bool {
        let now = self.clock.instant();
        let Some(gs) = self.gossip.as_mut() else {
            return false;
        };
        let out = match gs.engine.handle_data(&swim.data, now) {
            Ok(out) => out,
            Err(e) => {
                tracing::trace!(%from, "{e}");
                return false;
            }
        };
        self.gossip_outputs(out).await;
        self.check_version(node_id, boot, swim.generation, from);
        true
    }

    /// Act on what the engine returned.
    pub(super) async fn gossip_outputs(&mut self, out: Vec<Output>) {
        let mut rest = Vec::new();
        for o in out {
            match o {
                Output::Down(id) => self.member_down(id).await,
                other => rest.push(other),
            }
        }
        self.gossip_outputs_sync(rest);
        self.revive_members().await;
        self.apply_deltas().await;
    }

    /// The outputs that need no store write.
    fn gossip_outputs_sync(&mut self, out: Vec<Output>) {
        for o in out {
            match o {
                Output::Send(to, data) => {
                    if let Some(gs) = self.gossip.as_mut() {
                        gs.outbox.push_back((
                            to,
                            Body::Swim(Swim {
                                generation: self.me.content_gen,
                                data,
                            }),
                        ));
                    }
                }
                Output::Up(id) => self.member_up(id),
                Output::Down(id) => {
                    // Only reached from `heard_by_multicast`'s knock, which cannot declare
                    // anyone down; handled fully by `gossip_outputs`.
                    tracing::debug!(member = ?id, "gossip member down");
                }
                Output::Notice(n, Some(d)) => {
                    if let Some(gs) = self.gossip.as_mut() {
                        gs.incoming.push_back((n, d));
                    }
                }
                Output::Notice(n, None) => {
                    let node_id = format!("{:032x}", n.node);
                    let addr = self.gossip.as_ref().and_then(|gs| gs.route(&node_id));
                    if let Some(addr) = addr {
                        self.check_version(&node_id, n.boot, n.generation, addr);
                    }
                }
            }
        }
    }
}
