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
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

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
/// A member that is behind pulls after this long (the push is usually on its way).
const PULL_AFTER: Duration = Duration::from_secs(1);
/// Between two pulls of the same peer.
const PULL_EVERY: Duration = Duration::from_secs(3);
/// Pulls of one generation before giving up (the next notice or packet starts over).
const PULL_TRIES: u32 = 5;
/// A LAN peer heard by multicast is asked to let us in at most this often.
const KNOCK_EVERY: Duration = Duration::from_secs(30);
/// A member with at most this many live members announces back to a new one.
const SMALL_VIEW: usize = 8;
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
    boot: u64,
    generation: u64,
    since: Instant,
    pulled_at: Option<Instant>,
    tries: u32,
}

/// What the layer keeps for gossip (present only when gossip runs).
pub(super) struct GossipState {
    pub(super) engine: Gossip,
    seeds: Seeds,
    listen: SocketAddr,
    advertise: SocketAddr,
    /// Live members by node id, with their gossip address.
    up: BTreeMap<String, SocketAddr>,
    /// When each peer was last heard over gossip.
    heard: LruCache<String, Millis>,
    /// The latest complete inventory of each peer we have, from either path.
    latest: LruCache<String, (u64, u64)>,
    behind: LruCache<String, Behind>,
    pushed: LruCache<String, Instant>,
    /// Our content version (boot, generation) each member was last sent.
    sent: LruCache<String, (u64, u64)>,
    knocked: LruCache<String, Instant>,
    /// Messages to send, flushed by the serve loop.
    outbox: VecDeque<(SocketAddr, Body)>,
    /// Sequence numbers of our gossip envelopes (a replay window of their own, apart from
    /// multicast's: the two paths reorder freely).
    pub(super) seq: u64,
    bytes_in: u64,
    bytes_out: u64,
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
            heard: LruCache::new(tracked),
            latest: LruCache::new(tracked),
            behind: LruCache::new(tracked),
            pushed: LruCache::new(tracked),
            sent: LruCache::new(tracked),
            knocked: LruCache::new(tracked),
            outbox: VecDeque::new(),
            seq: 0,
            bytes_in: 0,
            bytes_out: 0,
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
        self.up.get(node_id).copied()
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
                Output::Notice(n) => {
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
        let new = gs.up.insert(node_id.clone(), id.addr) != Some(id.addr);
        gs.seeds.heard_from(id.addr);
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
        }
    }

    async fn member_down(&mut self, id: MemberId) {
        let node_id = id.node_id();
        let Some(gs) = self.gossip.as_mut() else {
            return;
        };
        if gs.up.get(&node_id) != Some(&id.addr) {
            return; // an older run of a node that is live under a newer identity
        }
        gs.up.remove(&node_id);
        gs.behind.pop(&node_id);
        gs.via_dirty = true;
        if gs.up.is_empty() && gs.had_members {
            gs.seeds.all_lost(self.clock.instant());
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
        // Published once the peer is saved gone, so that queries agree with them.
        let lost = if self.table.joins(&peer) {
            Vec::new()
        } else {
            self.peer_lost_events(&peer, self.clock.wall_ms())
        };
        self.table.said_goodbye(&mut peer);
        self.save_peer(peer.clone(), true).await;
        self.ctx.fleet().emit(lost);
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
            for c in chunks {
                gs.outbox.push_back((to, Body::Inventory(c)));
            }
            note_sent(&mut gs.sent, node_id, version);
        }
    }

    /// A member asked for our inventory (a unicast ping).
    pub(super) fn answer_pull(&mut self, node_id: &str, from: SocketAddr) {
        let now = self.clock.instant();
        self.push_inventory(from, node_id, now, true);
    }

    /// A member is new to us or restarted: it gets our inventory unless it has it.
    pub(super) fn welcome(&mut self, node_id: &str, from: SocketAddr) {
        let now = self.clock.instant();
        self.push_inventory(from, node_id, now, false);
    }

    /// Our inventory changed and went out by multicast as generation `content_gen`: copy
    /// it to every live member that multicast does not reach, and tell the fleet.
    pub(super) fn gossip_changed(&mut self) {
        if self.gossip.is_none() {
            return;
        }
        let targets = self.unicast_only_members();
        if !targets.is_empty() {
            let chunks = self.inventory_chunks(false);
            let version = (self.boot, self.content_gen);
            if let Some(gs) = self.gossip.as_mut() {
                for (id, to) in targets {
                    for c in &chunks {
                        gs.outbox.push_back((to, Body::Inventory(c.clone())));
                    }
                    note_sent(&mut gs.sent, &id, version);
                }
            }
        }
        let notice = Notice {
            node: super::gossip::MemberId::parse_node(&self.ctx.node().id).unwrap_or(0),
            boot: self.boot,
            generation: self.content_gen,
            at_ms: self.clock.wall_ms(),
        };
        let now = self.clock.instant();
        if let Some(gs) = self.gossip.as_mut() {
            let out = gs.engine.notice(notice, now);
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
            .is_some_and(|b| b.boot == boot && b.generation <= generation)
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
                    since: now,
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
            let waited = now.duration_since(b.since) >= PULL_AFTER;
            let spaced = b
                .pulled_at
                .is_none_or(|p| now.duration_since(p) >= PULL_EVERY);
            if waited && spaced {
                b.pulled_at = Some(now);
                b.tries += 1;
                pulls.push(b.addr);
            }
        }
        for to in pulls {
            gs.outbox.push_back((to, Body::Ping));
        }
        // Members the failure detector holds live are live in the table (and so in
        // queries), however rarely they happen to send to us; refreshed every few seconds,
        // not every tick (a lookup per member, a copy only when due).
        let every = (self.ctx.peer_expiry().as_millis() as Millis / 8).clamp(1_000, 5_000);
        let due: Vec<String> = gs
            .up
            .keys()
            .filter(|id| {
                self.table
                    .get(id)
                    .is_some_and(|p| !p.gone && t.saturating_sub(p.last_seen) >= every)
            })
            .cloned()
            .collect();
        for node_id in due {
            let Some(mut peer) = self.table.get(&node_id).cloned() else {
                continue;
            };
            peer.last_seen = t;
            if self.table.needs_touch_write(&peer) {
                self.save_peer(peer, true).await;
            } else {
                self.table.insert(peer);
            }
        }
        self.publish_gossip();
    }

    /// Publish the gossip status, and how each peer is reached (rebuilt when membership
    /// changed, else every ten seconds: paths also age out with time).
    pub(super) fn publish_gossip(&mut self) {
        let t = self.clock.wall_ms();
        let Some(gs) = self.gossip.as_mut() else {
            return;
        };
        if gs.via_dirty || t.saturating_sub(gs.via_published) >= 10_000 {
            gs.via_dirty = false;
            gs.via_published = t;
            self.publish_via();
        }
        let Some(gs) = self.gossip.as_ref() else {
            return;
        };
        let (members, members_live) = gs
            .engine
            .members()
            .fold((0, 0), |(n, l), (_, live)| (n + 1, l + usize::from(live)));
        self.ctx.status.set_gossip(GossipReport {
            listen: gs.listen.to_string(),
            advertise: gs.advertise.to_string(),
            members,
            members_live,
            bytes_in: gs.bytes_in,
            bytes_out: gs.bytes_out,
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
            let members: Vec<SocketAddr> = gs.up.values().copied().collect();
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
            let env = self.envelope_gossip(body);
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
                    .map(|(k, v)| (k.clone(), *v))
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
        let template = self.envelope_gossip(Body::Ping);
        let max = self.ctx.config().multicast.max_datagram - keys::OVERHEAD;
        wire::chunk_inventory(&template, self.generation, &disks, max)
    }
}
