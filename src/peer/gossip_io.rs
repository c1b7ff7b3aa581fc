//! The layer's gossip half: what membership changes and gossip packets mean for the peer
//! table, and how inventories travel unicast.
//!
//! Membership and liveness are foca's ([`super::gossip`]); inventories are ours, in the
//! same sealed envelopes and chunks as on multicast, sent unicast:
//! - to a member when it comes up (it pushes its own to us when it sees us);
//! - to every member not also heard by multicast when our inventory changes, together with
//!   a notice that foca disseminates, so a member that lost the push learns it is behind;
//! - to a member that asks (a unicast `Ping`: a pull), at most once a second each.
//!
//! A member is behind on a peer when a notice or one of the peer's own gossip packets
//! (which carry its inventory generation) names a newer generation than the last complete
//! one it has; it pulls after a second (the push is usually already on its way).
//!
//! Everything to send goes into an outbox that the serve loop flushes, so the receive path
//! stays free of I/O. The same peer heard both ways is one peer (its node id).

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
        self.mcast_heard
            .peek(node_id)
            .is_some_and(|t| self.clock.wall_ms().saturating_sub(*t) <= expiry)
    }

    /// A peer was heard over multicast: note it, and if it is a keyed LAN peer that is not
    /// a gossip member yet, knock at its gossip port (the LAN needs no seeds; one seed line
    /// anywhere then joins the whole LAN to the fleet).
    pub(super) fn heard_by_multicast(&mut self, node_id: &str, from: SocketAddr, keyed: bool) {
        let was_fresh = self.multicast_fresh(node_id);
        self.mcast_heard
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

    /// Members that came up again while the table had them lost: live again, told to the
    /// fleet as when one is heard again (they may not send to us for a while: a member
    /// probes one other per period).
    async fn revive_members(&mut self) {
        while let Some(node_id) = self.gossip.as_mut().and_then(|gs| gs.revive.pop_front()) {
            let Some(mut peer) = self.table.get(&node_id).cloned() else {
                continue;
            };
            if !peer.gone || self.multicast_fresh(&node_id) {
                continue;
            }
            let t = self.clock.wall_ms();
            let back_in_grace = self.pending_lost.remove(&node_id).is_some();
            let changes = if back_in_grace {
                Vec::new()
            } else {
                self.peer_live_events(&peer, t)
            };
            peer.gone = false;
            peer.last_seen = t;
            self.save_peer(peer.clone(), true).await;
            self.ctx.fleet().emit(changes);
            if back_in_grace {
                self.ctx.fleet().nudge();
            }
            self.table.mark_live(&node_id);
            tracing::info!(peer = %peer.node, "peer back (the gossip failure detector holds it live)");
            // Back after being lost (a partition healed, most likely): its view of the
            // members we lost with it is the quickest way to them.
            let now = self.clock.instant();
            if let Some(gs) = self.gossip.as_mut() {
                let addr = gs.up.get(&node_id).map(|m| m.addr);
                if let Some(addr) = addr {
                    if gs
                        .asked_members
                        .is_none_or(|at| now.duration_since(at) > LIST_WINDOW)
                    {
                        gs.asked_members = Some(now);
                        gs.outbox.push_back((addr, Body::MembersPull));
                    }
                }
            }
        }
    }

    /// Apply the peers' deltas received so far: a delta whose base we hold (or any later
    /// generation before its own) brings the peer's inventory to the notice's generation,
    /// as if the whole inventory had arrived; otherwise we are behind and pull.
    async fn apply_deltas(&mut self) {
        while let Some((n, d)) = self.gossip.as_mut().and_then(|gs| gs.incoming.pop_front()) {
            let node_id = format!("{:032x}", n.node);
            if node_id == self.ctx.node().id {
                continue;
            }
            let Some(gs) = self.gossip.as_ref() else {
                return;
            };
            let have = gs.latest.peek(&node_id).copied();
            let route = gs.route(&node_id);
            match have {
                Some((b, g)) if b == n.boot && g >= n.generation => continue,
                Some((b, g)) if b == n.boot && g >= d.base => {}
                _ => {
                    if let Some(addr) = route {
                        self.check_version(&node_id, n.boot, n.generation, addr);
                    }
                    continue;
                }
            }
            let Some(mut peer) = self.table.get(&node_id).cloned() else {
                continue;
            };
            let disks = d.apply(self.ctx.store().host_inventory(&node_id));
            if disks.len() > crate::model::limits::DISKS_PER_PEER as usize {
                // As a whole inventory that large would be refused.
                self.ctx
                    .count_reject(super::wire::Reject::InvalidField.name());
                continue;
            }
            if !self.fits_records(&node_id, &disks, peer.key.is_some()) {
                self.ctx
                    .count_reject(super::wire::Reject::RecordBudget.name());
                continue;
            }
            self.note_inventory(&node_id, n.boot, n.generation);
            let important = peer.disks != disks.len();
            peer.disks = disks.len();
            let addr = peer.addr.clone().unwrap_or_default();
            let t = self.clock.wall_ms();
            let changes = self.store_inventory(&peer, &addr, &disks, t);
            if let Some(gs) = self.gossip.as_mut() {
                gs.deltas_applied += 1;
            }
            self.save_peer(peer, important).await;
            self.ctx.fleet().emit(changes);
        }
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
                                generation: self.content_gen,
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

    fn member_up(&mut self, id: MemberId) {
        let node_id = id.node_id();
        if node_id == self.ctx.node().id || id.node == 0 {
            return;
        }
        let fresh = self.multicast_fresh(&node_id);
        let now = self.clock.instant();
        let Some(gs) = self.gossip.as_mut() else {
            return;
        };
        gs.had_members = true;
        let new = gs.up.insert(node_id.clone(), id.clone()).map(|m| m.addr) != Some(id.addr);
        gs.seeds.heard_from(id.addr);
        if new {
            let every = touch_every(self.ctx.peer_expiry());
            gs.touches.push(Reverse((now + every, node_id.clone())));
        }
        if self.table.get(&node_id).is_some_and(|p| p.gone) {
            gs.revive.push_back(node_id.clone());
        }
        if new && gs.asked_members.is_none() {
            // The first member that let us in: ask it for everyone it knows, so we know
            // the whole fleet in one exchange, not one member per probe period.
            gs.asked_members = Some(now);
            gs.outbox.push_back((id.addr, Body::MembersPull));
        }
        let mut back = Vec::new();
        if new {
            gs.via_dirty = true;
            tracing::debug!(member = ?id, "gossip member up");
            if gs.up.len() <= SMALL_VIEW && allow(&mut gs.knocked, &node_id, now, KNOCK_EVERY) {
                // We know few members: maybe we were let in by a member that knocked at
                // us (a LAN peer), not by announcing ourselves. Announce back, so it
                // answers with its member list.
                back = gs.engine.announce(id.clone(), now);
            }
        }
        self.gossip_outputs_sync(back);
        if !fresh && new {
            // It may have nothing of ours yet (new, or at a new address). A renewed
            // identity at the same address is the same daemon: it has what it had.
            self.push_inventory(id.addr, &node_id, now, false);
            // And we may have nothing of its: it pushes when it learns of us, which may be
            // long after we learnt of it (membership news reaches members in any order),
            // so pull if its inventory has not come by then.
            let due = now + PULL_AFTER + PULL_SPREAD.mul_f64(self.rng.gen::<f64>());
            if let Some(gs) = self.gossip.as_mut() {
                if gs.latest.peek(&node_id).is_none() && gs.behind.peek(&node_id).is_none() {
                    gs.behind.put(
                        node_id,
                        Behind {
                            addr: id.addr,
                            boot: 0,
                            generation: 0,
                            due,
                            pulled_at: None,
                            tries: 0,
                        },
                    );
                }
            }
        }
    }

    async fn member_down(&mut self, id: MemberId) {
        let node_id = id.node_id();
        let Some(gs) = self.gossip.as_mut() else {
            return;
        };
        if gs.up.get(&node_id) != Some(&id) {
            return; // an older run of a node that is live under a newer identity
        }
        gs.up.remove(&node_id);
        gs.behind.pop(&node_id);
        gs.via_dirty = true;
        if gs.up.is_empty() && gs.had_members {
            gs.seeds.all_lost(self.clock.instant());
            gs.asked_members = None;
            gs.asked_again = false;
        }
        if self.multicast_fresh(&node_id) {
            return; // still heard on the LAN: multicast's expiry decides
        }
        let Some(mut peer) = self.table.get(&node_id).cloned() else {
            return;
        };
        if peer.gone {
            return;
        }
        // Not live in queries from now on; told to the fleet (`peer-lost`, `vanished`) only
        // after the goodbye grace, as a goodbye is: a member declared down that is back
        // within it under a renewed identity (after a partition, or a pause) was never
        // lost for the fleet, and its return is not news either.
        if !self.table.joins(&peer) {
            let due = self.clock.instant() + super::GOODBYE_GRACE;
            if self.pending_lost.len() >= 2 * self.table.max() {
                self.flush_pending_lost(true);
            }
            self.pending_lost
                .insert(node_id.clone(), (due, peer.clone()));
        }
        self.table.said_goodbye(&mut peer);
        self.save_peer(peer.clone(), true).await;
        tracing::info!(peer = %peer.node, "peer lost (the gossip failure detector declared it down)");
        self.ctx
            .event("peer", format!("{} lost (gossip: down)", peer.node));
    }

    /// Queue our whole inventory, as a new generation, to one member (rate-limited).
    /// Unless `asked`, nothing is sent to a member already sent our current content (a
    /// member that comes up again, or renews its identity, still has it; one that lost it
    /// pulls, as our packets carry our generation).
    fn push_inventory(&mut self, to: SocketAddr, node_id: &str, now: Instant, asked: bool) {
        let version = (self.boot, self.content_gen);
        let allowed = self.gossip.as_mut().is_some_and(|gs| {
            (asked || gs.sent.peek(node_id) != Some(&version))
                && allow(&mut gs.pushed, node_id, now, PUSH_EVERY)
        });
        if !allowed {
            return;
        }
        let chunks = self.inventory_chunks(true);
        if let Some(gs) = self.gossip.as_mut() {
            gs.inventories_sent += 1;
            for c in chunks {
                gs.outbox.push_back((to, Body::Inventory(c)));
            }
            note_sent(&mut gs.sent, node_id, version);
        }
    }

    /// A member asked for our member list (it just joined): every live member but itself,
    /// in pages (rate-limited per member, and only to where it is a member).
    pub(super) fn answer_members(&mut self, node_id: &str, from: SocketAddr) {
        let now = self.clock.instant();
        let Some(gs) = self.gossip.as_mut() else {
            return;
        };
        // Only to a live member at the address it is a member at: the list is hundreds of
        // datagrams for one small request, and must never be reflected at a forged source
        // address.
        if gs.up.get(node_id).map(|m| m.addr) != Some(from)
            || !allow(&mut gs.listed, node_id, now, LIST_EVERY)
        {
            return;
        }
        let mut members = gs.engine.live_ids();
        members.retain(|m| m.addr != from && m.node_id() != node_id);
        let count = members.len().div_ceil(wire::MEMBERS_PER_PAGE).max(1);
        let count = u16::try_from(count).unwrap_or(u16::MAX);
        for (index, page) in members
            .chunks(wire::MEMBERS_PER_PAGE)
            .take(count as usize)
            .enumerate()
        {
            gs.outbox.push_back((
                from,
                Body::Members(wire::MembersPage {
                    index: index as u16,
                    count,
                    members: page.to_vec(),
                }),
            ));
        }
    }

    /// A page of the member list we asked for: foca takes the members it did not know.
    /// Pages nobody asked for (or that come long after) are ignored.
    pub(super) async fn learn_members(&mut self, page: wire::MembersPage) {
        let now = self.clock.instant();
        let Some(gs) = self.gossip.as_mut() else {
            return;
        };
        if gs
            .asked_members
            .is_none_or(|at| now.duration_since(at) > LIST_WINDOW)
        {
            return;
        }
        let out = gs.engine.learn(page.members, now);
        self.gossip_outputs(out).await;
    }

    /// A member asked for our inventory (a unicast ping).
    pub(super) fn answer_pull(&mut self, node_id: &str, from: SocketAddr) {
        let now = self.clock.instant();
        if let Some(gs) = self.gossip.as_mut() {
            gs.pulls_answered += 1;
        }
        self.push_inventory(from, node_id, now, true);
    }

    /// A member is new to us or restarted: it gets our inventory unless it has it.
    pub(super) fn welcome(&mut self, node_id: &str, from: SocketAddr) {
        let now = self.clock.instant();
        self.push_inventory(from, node_id, now, false);
    }

    /// Our inventory changed and went out by multicast as generation `content_gen`: tell
    /// the gossip fleet with a notice, carrying what changed (a delta) when it fits. foca
    /// piggybacks it on its own packets and members relay it, so what this costs us does
    /// not grow with the fleet; a member that cannot apply it pulls the whole inventory.
    pub(super) fn gossip_changed(&mut self) {
        if self.gossip.is_none() {
            return;
        }
        let inventory = self.ctx.store().local_inventory();
        let notice = Notice {
            node: super::gossip::MemberId::parse_node(&self.ctx.node().id).unwrap_or(0),
            boot: self.boot,
            generation: self.content_gen,
            at_ms: self.clock.wall_ms(),
        };
        let now = self.clock.instant();
        if let Some(gs) = self.gossip.as_mut() {
            let delta = gs.deltas.record(self.content_gen, &inventory);
            let out = gs.engine.notice(notice, delta.as_ref(), now);
            self.gossip_outputs_sync(out);
        }
    }

    /// A peer's complete inventory (boot, generation) arrived, by either path.
    pub(super) fn note_inventory(&mut self, node_id: &str, boot: u64, generation: u64) {
        let Some(gs) = self.gossip.as_mut() else {
            return;
        };
        let newer = match gs.latest.peek(node_id) {
            Some(&(b, g)) => b != boot || g < generation,
            None => true,
        };
        if newer {
            gs.latest.put(node_id.to_string(), (boot, generation));
        }
        if gs
            .behind
            .peek(node_id)
            .is_some_and(|b| b.boot == 0 || (b.boot == boot && b.generation <= generation))
        {
            gs.behind.pop(node_id);
        }
    }

    /// `node_id` says its inventory is at (`boot`, `generation`): if we have less, note
    /// that we are behind (housekeeping pulls).
    fn check_version(&mut self, node_id: &str, boot: u64, generation: u64, addr: SocketAddr) {
        if generation == 0 || node_id == self.ctx.node().id {
            return;
        }
        let now = self.clock.instant();
        let due = now + PULL_AFTER + PULL_SPREAD.mul_f64(self.rng.gen::<f64>());
        let Some(gs) = self.gossip.as_mut() else {
            return;
        };
        let have = gs
            .latest
            .peek(node_id)
            .is_some_and(|&(b, g)| b == boot && g >= generation);
        if have {
            return;
        }
        let same = gs
            .behind
            .peek(node_id)
            .is_some_and(|b| b.boot == boot && b.generation >= generation);
        if !same {
            gs.behind.put(
                node_id.to_string(),
                Behind {
                    addr,
                    boot,
                    generation,
                    due,
                    pulled_at: None,
                    tries: 0,
                },
            );
        }
    }

    /// Once a second: pull what we are behind on, keep live members live in the table,
    /// publish status.
    pub(super) async fn gossip_housekeeping(&mut self) {
        let now = self.clock.instant();
        let t = self.clock.wall_ms();
        let Some(gs) = self.gossip.as_mut() else {
            return;
        };
        let mut pulls = Vec::new();
        let given_up: Vec<String> = gs
            .behind
            .iter()
            .filter(|(_, b)| b.tries >= PULL_TRIES)
            .map(|(k, _)| k.clone())
            .collect();
        for k in given_up {
            gs.behind.pop(&k);
        }
        for (_, b) in gs.behind.iter_mut() {
            let waited = now >= b.due;
            let spaced = b
                .pulled_at
                .is_none_or(|p| now.duration_since(p) >= PULL_EVERY);
            if waited && spaced {
                b.pulled_at = Some(now);
                b.tries += 1;
                pulls.push(b.addr);
            }
        }
        gs.pulls_sent += pulls.len() as u64;
        for to in pulls {
            gs.outbox.push_back((to, Body::Ping));
        }
        if !gs.asked_again
            && gs
                .asked_members
                .is_some_and(|at| now.duration_since(at) >= ASK_AGAIN_AFTER)
            && !gs.up.is_empty()
        {
            let pick = self.rng.gen_range(0..gs.up.len());
            if let Some(to) = gs.up.values().nth(pick).map(|m| m.addr) {
                gs.asked_again = true;
                gs.asked_members = Some(now);
                gs.outbox.push_back((to, Body::MembersPull));
            }
        }
        // Members the failure detector holds live are live in the table (and so in
        // queries), however rarely they happen to send to us: each is refreshed about
        // eight times per peer expiry, from a queue ordered by when it is due, so a tick
        // costs the members due, not a walk over all of them.
        let every = touch_every(self.ctx.peer_expiry());
        let mut due = Vec::new();
        while let Some(Reverse((at, _))) = gs.touches.peek() {
            if *at > now {
                break;
            }
            let Some(Reverse((_, node_id))) = gs.touches.pop() else {
                break;
            };
            if gs.up.contains_key(&node_id) {
                gs.touches.push(Reverse((now + every, node_id.clone())));
                due.push(node_id);
            }
        }
        for node_id in due {
            let Some(mut peer) = self.table.get(&node_id).cloned() else {
                continue;
            };
            if peer.gone {
                continue;
            }
            peer.last_seen = t;
            if self.table.needs_touch_write(&peer) {
                self.save_peer(peer, true).await;
            } else {
                self.table.insert(peer);
            }
        }
        self.publish_gossip();
    }

    /// Publish the gossip status, and how each peer is reached: rebuilt when a member or a
    /// path came or went, else once per quarter of the peer expiry (a path heard by
    /// multicast also ages out with time), never by walking every member every second.
    pub(super) fn publish_gossip(&mut self) {
        let t = self.clock.wall_ms();
        let aging = (self.ctx.peer_expiry().as_millis() as Millis / 4).max(1_000);
        let Some(gs) = self.gossip.as_mut() else {
            return;
        };
        if gs.via_dirty || t.saturating_sub(gs.via_published) >= aging {
            gs.via_dirty = false;
            gs.via_published = t;
            self.publish_via();
        }
        let Some(gs) = self.gossip.as_ref() else {
            return;
        };
        let (members, members_live) = (gs.engine.known_members(), gs.engine.live_members());
        self.ctx.status.set_gossip(GossipReport {
            listen: gs.listen.to_string(),
            advertise: gs.advertise.to_string(),
            members,
            members_live,
            bytes_in: gs.bytes_in,
            bytes_out: gs.bytes_out,
            deltas_applied: gs.deltas_applied,
            pulls_sent: gs.pulls_sent,
            pulls_answered: gs.pulls_answered,
            inventories_sent: gs.inventories_sent,
            seeds: gs.seeds.report(),
        });
    }

    fn publish_via(&self) {
        let Some(gs) = self.gossip.as_ref() else {
            return;
        };
        let expiry = self.ctx.peer_expiry().as_millis() as Millis;
        let t = self.clock.wall_ms();
        let mut via = HashMap::new();
        for (id, when) in gs.heard.iter() {
            if gs.up.contains_key(id) || t.saturating_sub(*when) <= expiry {
                let v = if self.multicast_fresh(id) {
                    "both"
                } else {
                    "gossip"
                };
                via.insert(id.clone(), v);
            }
        }
        for id in gs.up.keys() {
            via.entry(id.clone())
                .or_insert(if self.multicast_fresh(id) {
                    "both"
                } else {
                    "gossip"
                });
        }
        self.ctx.status.set_via(via);
    }

    /// Engine timers and seed tries that are due.
    pub(super) async fn gossip_tick(&mut self) {
        let now = self.clock.instant();
        let Some(gs) = self.gossip.as_mut() else {
            return;
        };
        let out = gs.engine.fire_due(now);
        for (i, seed) in gs.seeds.due(now) {
            let tx = gs.resolve_tx.clone();
            // Looked up off the layer's task: a slow resolver must not stall the peers.
            tokio::spawn(async move {
                let lookup = tokio::net::lookup_host((seed.host.as_str(), seed.port));
                let r = match tokio::time::timeout(Duration::from_secs(3), lookup).await {
                    Ok(Ok(addrs)) => Ok(addrs.collect::<Vec<_>>()),
                    Ok(Err(e)) => Err(format!("{}: {e}", seed)),
                    Err(_) => Err(format!("{}: name lookup timed out", seed)),
                };
                let _ = tx.send((i, r)).await;
            });
        }
        self.gossip_outputs(out).await;
    }

    /// A seed's addresses are known: knock at each.
    pub(super) fn seed_resolved(&mut self, r: Resolved) {
        let now = self.clock.instant();
        let Some(gs) = self.gossip.as_mut() else {
            return;
        };
        let (i, result) = r;
        if let Err(e) = &result {
            tracing::debug!("gossip seed: {e}");
        }
        let mut out = Vec::new();
        for addr in gs.seeds.resolved(i, result, now) {
            out.extend(gs.engine.announce(MemberId::seed(addr), now));
        }
        self.gossip_outputs_sync(out);
        self.publish_gossip();
    }

    /// Stopping: foca's leave (for members we do not know to be live), then a goodbye to
    /// every live member, last, so that nothing of ours arrives after it.
    pub(super) async fn gossip_leave<G: Unicast>(&mut self, g: &G) {
        let now = self.clock.instant();
        let Some(gs) = self.gossip.as_mut() else {
            return;
        };
        let out = gs.engine.leave(now);
        self.gossip_outputs_sync(out);
        if let Some(gs) = self.gossip.as_mut() {
            let members: Vec<SocketAddr> = gs.up.values().map(|m| m.addr).collect();
            for to in members {
                gs.outbox.push_back((to, Body::Goodbye));
            }
        }
        self.flush_outbox(g).await;
    }

    /// Seal and send everything queued, pacing long bursts.
    pub(super) async fn flush_outbox<G: Unicast>(&mut self, g: &G) {
        let mut sent = 0usize;
        while let Some((to, body)) = self.gossip.as_mut().and_then(|gs| gs.outbox.pop_front()) {
            let body = match body {
                // The generation others compare with is the latest at sending time.
                Body::Swim(s) => Body::Swim(Swim {
                    generation: self.content_gen,
                    data: s.data,
                }),
                other => other,
            };
            let env = self.envelope_gossip(body, Some(to));
            let bytes = self.keys.seal(wire::encode(&env));
            match g.send_to(to, &bytes).await {
                Ok(()) => {
                    Stats::bump(&self.ctx.stats().packets_sent);
                    self.ctx.add_bytes_sent(bytes.len());
                    if let Some(gs) = self.gossip.as_mut() {
                        gs.bytes_out += bytes.len() as u64;
                    }
                }
                Err(e) => {
                    // One unreachable member is not a broken socket: count and go on.
                    Stats::bump(&self.ctx.stats().send_errors);
                    tracing::debug!(%to, "gossip send failed: {e}");
                }
            }
            sent += 1;
            if sent % PACE_EVERY == 0 {
                tokio::time::sleep(PACE_PAUSE).await;
            }
        }
    }

    /// `diskd ping`: ask every live member multicast does not reach to send its inventory.
    pub(super) fn ping_members(&mut self) {
        let targets = self.unicast_only_members();
        if let Some(gs) = self.gossip.as_mut() {
            for (_, to) in targets {
                gs.outbox.push_back((to, Body::Ping));
            }
        }
    }

    /// Live members that multicast does not reach (node id, gossip address): those that
    /// need a unicast copy of what we multicast.
    fn unicast_only_members(&self) -> Vec<(String, SocketAddr)> {
        self.gossip
            .as_ref()
            .map(|gs| {
                gs.up
                    .iter()
                    .filter(|(id, _)| !self.multicast_fresh(id))
                    .map(|(k, v)| (k.clone(), v.addr))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Whether anything waits in the outbox.
    pub(super) fn outbox_pending(&self) -> bool {
        self.gossip.as_ref().is_some_and(|gs| !gs.outbox.is_empty())
    }

    /// Route a message to one node: unicast when it is a live gossip member, multicast
    /// when it is heard on the LAN or has no gossip route (both when both apply).
    /// Returns whether it must go by multicast.
    pub(super) fn route_to_node(&mut self, node_id: &str, body: &Body) -> bool {
        let fresh = self.multicast_fresh(node_id);
        match self
            .gossip
            .as_mut()
            .and_then(|gs| gs.route(node_id).map(|a| (gs, a)))
        {
            Some((gs, addr)) => {
                gs.outbox.push_back((addr, body.clone()));
                fresh && self.ctx.config().multicast.enabled
            }
            None => true,
        }
    }

    /// Inventory chunks for unicast: a fresh generation, or (`fresh == false`) the one
    /// just announced by multicast.
    fn inventory_chunks(&mut self, fresh: bool) -> Vec<wire::Chunk> {
        let disks = self.ctx.store().local_inventory();
        if fresh || self.generation == 0 {
            self.generation += 1;
        }
        let template = self.envelope_gossip(Body::Ping, None);
        let max = self.ctx.config().multicast.max_datagram - keys::OVERHEAD;
        wire::chunk_inventory(&template, self.generation, &disks, max)
    }
}
