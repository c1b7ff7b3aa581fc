//! Unicast gossip membership: the foca SWIM engine, driven by the peer layer's clock.
//!
//! foca decides who is a member and who is live (probes, indirect probes, suspicion,
//! refutation, leave), and piggybacks small broadcasts on its own packets. It does no I/O:
//! this wrapper feeds it received bytes and due timers, and returns what to do as
//! [`Output`]s (send these bytes to that address, this member came up or went down, this
//! inventory notice arrived). The peer layer seals and sends, and decides what a member
//! going up or down means for the peer table. Nothing here knows sockets or keys.
//!
//! What diskd adds on top of membership is small: an inventory *notice* (node, boot,
//! generation) broadcast through foca whenever our inventory changes, so a member that
//! missed the direct push learns within a few protocol periods that it is behind and pulls.
//! foca was chosen over chitchat by measurement (BENCHMARKS.md, "Gossip"): SWIM costs each
//! node a constant number of small packets per period, whatever the fleet size.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::num::{NonZeroU32, NonZeroUsize};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use foca::{AccumulatingRuntime, BroadcastHandler, Foca, Invalidates, OwnedNotification, Timer};
use rand_foca::SeedableRng;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::delta::Delta;

/// A gossip member: who (node id), where (the address it advertises) and which run.
///
/// `addr` is foca's unique address: one member per address, the newer run winning, so a
/// restarted daemon replaces its old self at once instead of waiting to be declared down.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MemberId {
    /// The node id as a number (the 32 hex digits of [`crate::model::NodeInfo::id`]);
    /// 0 for a seed whose identity we do not know yet.
    pub node: u128,
    /// Where it listens for gossip.
    pub addr: SocketAddr,
    /// Start time of its run (ms since the epoch), bumped when it must rejoin.
    pub bump: u64,
}

impl std::fmt::Debug for MemberId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:032x}@{}#{}", self.node, self.addr, self.bump)
    }
}

impl MemberId {
    /// The node id in the form used everywhere else (32 lowercase hex digits).
    pub fn node_id(&self) -> String {
        format!("{:032x}", self.node)
    }

    /// A placeholder for a seed: foca only needs its address to send an announce; the
    /// answer carries the real identity.
    pub fn seed(addr: SocketAddr) -> MemberId {
        MemberId {
            node: 0,
            addr,
            bump: 0,
        }
    }

    /// Parse a node id; `None` when it is not 32 hex digits.
    pub fn parse_node(node_id: &str) -> Option<u128> {
        if !crate::model::valid_node_id(node_id) {
            return None;
        }
        u128::from_str_radix(node_id, 16).ok()
    }
}

impl foca::Identity for MemberId {
    type Addr = SocketAddr;

    fn renew(&self) -> Option<Self> {
        // Declared down while alive (a partition, a long pause): rejoin under a newer run.
        Some(MemberId {
            bump: self.bump.wrapping_add(1),
            ..self.clone()
        })
    }

    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        (self.bump, self.node) > (adversary.bump, adversary.node)
    }
}

/// "Node `node`'s inventory is at (`boot`, `generation`)", broadcast through foca when it
/// changes. `at_ms` orders notices of different runs (boots are random).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notice {
    /// Whose inventory.
    pub node: u128,
    /// That node's run.
    pub boot: u64,
    /// Its inventory generation in that run.
    pub generation: u64,
    /// Its wall clock when the generation was made.
    pub at_ms: u64,
}

impl Notice {
    fn newer_than(&self, other: &Notice) -> bool {
        (self.at_ms, self.generation) > (other.at_ms, other.generation)
    }
}

/// foca's dissemination key for a notice: a newer notice of the same node replaces an
/// older one in the backlog, so the backlog holds at most one notice per node.
#[derive(Debug, Clone, Copy)]
pub struct NoticeKey(Notice);

impl Invalidates for NoticeKey {
    fn invalidates(&self, other: &Self) -> bool {
        self.0.node == other.0.node && !other.0.newer_than(&self.0)
    }
}

/// A broadcast item that does not decode.
#[derive(Debug, thiserror::Error)]
#[error("undecodable inventory notice")]
pub struct BadNotice;

/// Most nodes whose latest notice is remembered (for staleness), twice a 16,384-peer table;
/// past it the least recently heard node is forgotten, which at worst re-disseminates its
/// next notice.
const MAX_NOTICES: std::num::NonZeroUsize = match std::num::NonZeroUsize::new(32_768) {
    Some(n) => n,
    None => std::num::NonZeroUsize::MIN,
};

/// Receives notices from foca: remembers the newest per node (to stop disseminating stale
/// ones) and queues the new ones, with their delta if they carry one, for the peer layer.
struct NoticeHandler {
    latest: lru::LruCache<u128, Notice>,
    inbox: Inbox,
}

/// Notices (with their delta) received by foca's handler, for the peer layer.
type Inbox = Arc<Mutex<Vec<(Notice, Option<Delta>)>>>;

/// A broadcast item: the notice, then the delta's trailer if any (see [`super::delta`]).
fn decode_item(data: &[u8]) -> Result<(Notice, Option<Delta>), BadNotice> {
    let (notice, rest): (Notice, &[u8]) = postcard::take_from_bytes(data).map_err(|_| BadNotice)?;
    let delta = if rest.is_empty() {
        None
    } else {
        Delta::decode(rest)
    };
    Ok((notice, delta))
}

impl BroadcastHandler<MemberId> for NoticeHandler {
    type Key = NoticeKey;
    type Error = BadNotice;

    fn receive_item(
        &mut self,
        data: &[u8],
        sender: Option<&MemberId>,
    ) -> Result<Option<NoticeKey>, BadNotice> {
        let (notice, delta) = decode_item(data)?;
        if self
            .latest
            .peek(&notice.node)
            .is_some_and(|known| !notice.newer_than(known))
        {
            return Ok(None);
        }
        self.latest.put(notice.node, notice);
        if sender.is_some() {
            // From the network (ours, added with `sender: None`, is not news to us).
            self.inbox
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((notice, delta));
        }
        Ok(Some(NoticeKey(notice)))
    }
}

/// What the engine asks of the peer layer.
#[derive(Debug)]
pub enum Output {
    /// Seal and send these bytes to this member.
    Send(SocketAddr, Vec<u8>),
    /// A member is live (new, back, or a new run of a known node).
    Up(MemberId),
    /// A member was declared down (left, or failed to answer probes).
    Down(MemberId),
    /// A peer's inventory notice, with the delta that brings its previous generations to
    /// this one when it carries one.
    Notice(Notice, Option<Delta>),
}

/// Why foca refused a packet or an action (counted, never fatal).
#[derive(Debug, thiserror::Error)]
#[error("gossip: {0}")]
pub struct EngineError(String);

type Engine = Foca<MemberId, foca::PostcardCodec, rand_foca::rngs::StdRng, NoticeHandler>;

/// foca settings for our protocol period and fleet size. One `interval` is foca's gossip
/// period; probes run every two intervals, with one interval to answer; suspicion lasts
/// foca's LAN multiple of the probe period (it grows with log10 of the fleet).
pub fn engine_config(interval: Duration, members: usize, max_packet: usize) -> foca::Config {
    // Sized for at least `MIN_SIZE` members: sized for the one member a daemon knows at
    // start, foca would send each piece of membership news once, and a member that joins
    // a moment later (or that a single lost packet misses) would not hear of the others
    // until the next periodic announce.
    let size = NonZeroU32::new((members.max(MIN_SIZE)) as u32).unwrap_or(NonZeroU32::MIN);
    let mut c = foca::Config::new_lan(size);
    let period = interval * 2;
    let lan_period = c.probe_period;
    c.suspect_to_down_after = c
        .suspect_to_down_after
        .mul_f64(period.as_secs_f64() / lan_period.as_secs_f64());
    c.probe_period = period;
    c.probe_rtt = interval;
    if let Some(g) = c.periodic_gossip.as_mut() {
        g.frequency = interval.mul_f64(0.4);
    }
    // Membership anti-entropy: every sixty intervals (30 s), ask one random member for
    // its member list (one packet of at most `max_packet` bytes back). A member that
    // joins is sent the whole list at once (`MembersPull`), so this only mends what a
    // lost packet left out.
    if let Some(a) = c.periodic_announce.as_mut() {
        a.frequency = interval * 60;
    }
    // Members declared down are asked to let us in again every twenty intervals (10 s),
    // two at a time (foca's LAN default: 65 s): after a partition heals, the first answer
    // across it brings the other side back (and its member list, see `MembersPull`).
    if let Some(a) = c.periodic_announce_to_down_members.as_mut() {
        a.frequency = interval * 20;
    }
    // Every update and inventory notice is sent on 6 log10(N + 1) times by each member
    // that has it (foca's default factor is 4): a member missing one would otherwise learn
    // of a change only when its origin happens to talk to it, O(N) probe periods later.
    let tx = (6.0 * ((size.get() as f64) + 1.0).log10()).clamp(1.0, 255.0) as u8;
    c.max_transmissions = std::num::NonZeroU8::new(tx).unwrap_or(std::num::NonZeroU8::MIN);
    c.max_packet_size = NonZeroUsize::new(max_packet).unwrap_or(NonZeroUsize::MIN);
    // Down members are kept (and re-announced to, in case they come back) for a day; the
    // peer table and store keep them for good.
    c.remove_down_after = Some(Duration::from_secs(24 * 3600));
    c
}

/// The smallest fleet the engine's settings are sized for (see [`engine_config`]).
const MIN_SIZE: usize = 32;

/// Membership, as the peer layer drives it.
pub struct Gossip {
    foca: Engine,
    runtime: AccumulatingRuntime<MemberId>,
    /// Timers foca asked for, by due time (the sequence number keeps equal times in order).
    timers: BinaryHeap<Reverse<(Instant, u64)>>,
    timer_events: HashMap<u64, Timer<MemberId>>,
    next_timer: u64,
    inbox: Inbox,
    interval: Duration,
    max_packet: usize,
    /// Member count the engine's settings were last sized for.
    sized_for: usize,
}

impl Gossip {
    /// An engine for us (`me`), with randomness seeded by the caller (simulations are
    /// repeatable) and packets of at most `max_packet` bytes before sealing.
    pub fn new(me: MemberId, interval: Duration, max_packet: usize, seed: u64) -> Gossip {
        let inbox = Arc::new(Mutex::new(Vec::new()));
        let handler = NoticeHandler {
            latest: lru::LruCache::sparse(MAX_NOTICES),
            inbox: inbox.clone(),
        };
        let foca = Foca::with_custom_broadcast(
            me,
            engine_config(interval, MIN_SIZE, max_packet),
            rand_foca::rngs::StdRng::seed_from_u64(seed),
            foca::PostcardCodec,
            handler,
        );
        Gossip {
            foca,
            runtime: AccumulatingRuntime::new(),
            timers: BinaryHeap::new(),
            timer_events: HashMap::new(),
            next_timer: 0,
            inbox,
            interval,
            max_packet,
            sized_for: MIN_SIZE,
        }
    }

    /// Our identity (its `bump` changes if we had to rejoin).
    pub fn me(&self) -> &MemberId {
        self.foca.identity()
    }

    /// Members foca considers live.
    pub fn live_members(&self) -> usize {
        self.foca.num_members()
    }

    /// The members foca considers live (what a member that just joined is sent).
    pub fn live_ids(&self) -> Vec<MemberId> {
        self.foca.iter_members().map(|m| m.id().clone()).collect()
    }

    /// Members another member listed as live: foca takes the ones it did not know as
    /// alive (and probes them like any other), without gossiping them on (their own
    /// joins were gossiped when they happened).
    pub fn learn(&mut self, members: Vec<MemberId>, now: Instant) -> Vec<Output> {
        let me = self.foca.identity().clone();
        let unknown: Vec<foca::Member<MemberId>> = {
            // By whole identity: a member's renewed run (same address, later `bump`) is
            // news even where its old run is known (as down, after a partition).
            let known: std::collections::BTreeSet<(u128, SocketAddr, u64)> = self
                .foca
                .iter_membership_state()
                .map(|m| (m.id().node, m.id().addr, m.id().bump))
                .collect();
            members
                .into_iter()
                .filter(|m| m.node != me.node && m.addr != me.addr)
                .filter(|m| !known.contains(&(m.node, m.addr, m.bump)))
                .map(foca::Member::alive)
                .collect()
        };
        if let Err(e) = self
            .foca
            .apply_many(unknown.into_iter(), false, &mut self.runtime)
        {
            tracing::debug!("gossip member list: {e}");
        }
        self.drain(now)
    }

    /// Members foca knows, live or not (not counting us).
    pub fn known_members(&self) -> usize {
        self.foca.iter_membership_state().len()
    }

    /// Feed a packet received from the network.
    pub fn handle_data(&mut self, bytes: &[u8], now: Instant) -> Result<Vec<Output>, EngineError> {
        let r = self.foca.handle_data(bytes, &mut self.runtime);
        let out = self.drain(now);
        r.map_err(|e| EngineError(e.to_string()))?;
        Ok(out)
    }

    /// Ask `addr` to let us in (a seed, or a LAN peer heard by multicast).
    pub fn announce(&mut self, to: MemberId, now: Instant) -> Vec<Output> {
        if let Err(e) = self.foca.announce(to, &mut self.runtime) {
            tracing::debug!("gossip announce: {e}");
        }
        self.drain(now)
    }

    /// Tell the fleet our inventory changed, and how (`delta`, when it fits).
    pub fn notice(&mut self, notice: Notice, delta: Option<&Delta>, now: Instant) -> Vec<Output> {
        match postcard::to_allocvec(&notice) {
            Ok(mut bytes) => {
                if let Some(tail) = delta.and_then(Delta::encode) {
                    bytes.extend_from_slice(&tail);
                }
                if let Err(e) = self.foca.add_broadcast(&bytes) {
                    tracing::debug!("gossip notice: {e}");
                }
            }
            Err(e) => tracing::debug!("gossip notice: {e}"),
        }
        self.drain(now)
    }

    /// Leave cleanly: members are told at once instead of suspecting us.
    pub fn leave(&mut self, now: Instant) -> Vec<Output> {
        if let Err(e) = self.foca.leave_cluster(&mut self.runtime) {
            tracing::debug!("gossip leave: {e}");
        }
        self.drain(now)
    }

    /// When the next timer is due.
    pub fn next_due(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse((at, _))| *at)
    }

    /// Run the timers due at `now`.
    pub fn fire_due(&mut self, now: Instant) -> Vec<Output> {
        let mut out = Vec::new();
        while let Some(Reverse((at, id))) = self.timers.peek().copied() {
            if at > now {
                break;
            }
            self.timers.pop();
            if let Some(timer) = self.timer_events.remove(&id) {
                if let Err(e) = self.foca.handle_timer(timer, &mut self.runtime) {
                    tracing::debug!("gossip timer: {e}");
                }
                out.extend(self.drain(now));
            }
        }
        out
    }

    /// Collect what foca asked for; resize its settings when the fleet grew or shrank a lot
    /// (transmissions and suspicion scale with log10 of the member count).
    fn drain(&mut self, now: Instant) -> Vec<Output> {
        let mut out = Vec::new();
        while let Some((to, bytes)) = self.runtime.to_send() {
            out.push(Output::Send(to.addr, bytes.to_vec()));
        }
        while let Some((after, timer)) = self.runtime.to_schedule() {
            let id = self.next_timer;
            self.next_timer += 1;
            self.timers.push(Reverse((now + after, id)));
            self.timer_events.insert(id, timer);
        }
        while let Some(n) = self.runtime.to_notify() {
            match n {
                OwnedNotification::MemberUp(id) => out.push(Output::Up(id)),
                OwnedNotification::MemberDown(id) => out.push(Output::Down(id)),
                OwnedNotification::Rename(_, new) => out.push(Output::Up(new)),
                _ => {}
            }
        }
        for (n, d) in self
            .inbox
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            out.push(Output::Notice(n, d));
        }
        let n = self.foca.num_members().max(MIN_SIZE);
        if n > self.sized_for * 2 || n * 4 < self.sized_for {
            self.sized_for = n;
            let c = engine_config(self.interval, n, self.max_packet);
            if let Err(e) = self.foca.set_config(c) {
                tracing::debug!("gossip resize: {e}");
            }
        }
        out
    }
}

/// Where we tell others to reach us when nothing says otherwise: a concrete address of
/// ours, never 0.0.0.0 (which no one can send to).
pub fn fallback_advertise(candidates: &[IpAddr], port: u16) -> SocketAddr {
    let ip = candidates
        .iter()
        .find(|ip| !ip.is_loopback() && !ip.is_unspecified() && ip.is_ipv4())
        .or_else(|| candidates.iter().find(|ip| !ip.is_unspecified()))
        .copied()
        .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
    SocketAddr::new(ip, port)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u128, port: u16) -> MemberId {
        MemberId {
            node: n,
            addr: SocketAddr::from(([10, 0, 0, n as u8], port)),
            bump: 1,
        }
    }

    /// Deliver every `Send` between engines until quiet; returns the other outputs.
    fn pump(
        nodes: &mut [Gossip],
        mut queue: Vec<(usize, Output)>,
        now: Instant,
    ) -> Vec<(usize, Output)> {
        let mut events = Vec::new();
        let mut rounds = 0;
        while let Some((from, o)) = queue.pop() {
            rounds += 1;
            assert!(rounds < 100_000, "gossip did not settle");
            match o {
                Output::Send(to, bytes) => {
                    let Some(i) = nodes.iter().position(|g| g.me().addr == to) else {
                        continue;
                    };
                    let _ = from;
                    for o in nodes[i].handle_data(&bytes, now).unwrap() {
                        queue.push((i, o));
                    }
                }
                other => events.push((from, other)),
            }
        }
        events
    }

    /// Run every engine's timers due at `t` and deliver what they send; the other outputs.
    fn fire_all(nodes: &mut [Gossip], t: Instant) -> Vec<(usize, Output)> {
        let mut queue = Vec::new();
        for (i, g) in nodes.iter_mut().enumerate() {
            for o in g.fire_due(t) {
                queue.push((i, o));
            }
        }
        pump(nodes, queue, t)
    }

    #[tokio::test(start_paused = true)]
    async fn members_find_each_other_through_a_seed_and_see_a_leave() {
        let now = Instant::now();
        let iv = Duration::from_millis(500);
        let mut nodes: Vec<Gossip> = (1..=4)
            .map(|n| Gossip::new(id(n, 32004), iv, 1200, n as u64))
            .collect();
        // Everyone announces to node 1 (the seed, known only by address).
        let mut queue = Vec::new();
        for (i, g) in nodes.iter_mut().enumerate().skip(1) {
            for o in g.announce(MemberId::seed(id(1, 32004).addr), now) {
                queue.push((i, o));
            }
        }
        pump(&mut nodes, queue, now);
        // Let the protocol run a few periods.
        let mut t = now;
        for _ in 0..40 {
            t += iv;
            fire_all(&mut nodes, t);
        }
        for g in &nodes {
            assert_eq!(g.live_members(), 3, "{:?}", g.me());
        }
        // A notice from node 4 reaches everyone.
        let notice = Notice {
            node: 4,
            boot: 9,
            generation: 3,
            at_ms: 1,
        };
        let queue: Vec<_> = nodes[3]
            .notice(notice, None, t)
            .into_iter()
            .map(|o| (3, o))
            .collect();
        let mut seen = pump(&mut nodes, queue, t);
        for _ in 0..20 {
            t += iv;
            seen.extend(fire_all(&mut nodes, t));
        }
        let got: std::collections::HashSet<usize> = seen
            .iter()
            .filter(|(_, o)| matches!(o, Output::Notice(n, _) if *n == notice))
            .map(|(i, _)| *i)
            .collect();
        assert_eq!(got, [0, 1, 2].into_iter().collect());
        // Node 2 leaves: the others see it down without waiting for suspicion.
        let queue: Vec<_> = nodes[1].leave(t).into_iter().map(|o| (1, o)).collect();
        let events = pump(&mut nodes, queue, t);
        let downs = events
            .iter()
            .filter(|(_, o)| matches!(o, Output::Down(m) if m.node == 2))
            .count();
        assert!(downs >= 1, "{events:?}");
    }

    #[test]
    fn a_newer_notice_replaces_an_older_one() {
        let a = NoticeKey(Notice {
            node: 1,
            boot: 1,
            generation: 2,
            at_ms: 5,
        });
        let b = NoticeKey(Notice {
            node: 1,
            boot: 1,
            generation: 1,
            at_ms: 5,
        });
        let c = NoticeKey(Notice {
            node: 2,
            boot: 1,
            generation: 1,
            at_ms: 5,
        });
        assert!(a.invalidates(&b));
        assert!(!b.invalidates(&a));
        assert!(!a.invalidates(&c));
    }

    /// The delta is a trailer: the previous release's decoder (`from_bytes::<Notice>`) reads
    /// the notice of a new item, and a new handler reads an old item as a notice without a
    /// delta.
    #[test]
    fn notices_with_and_without_a_delta_read_across_versions() {
        let notice = Notice {
            node: 7,
            boot: 1,
            generation: 5,
            at_ms: 9,
        };
        let delta = Delta {
            base: 4,
            upserts: vec![crate::model::DiskRecord {
                uuid: Some("u".into()),
                device: "/dev/sdz".into(),
                ..Default::default()
            }],
            removed: vec![],
        };
        let old_item = postcard::to_allocvec(&notice).unwrap();
        let mut new_item = old_item.clone();
        new_item.extend(delta.encode().unwrap());
        let previous_release: Notice = postcard::from_bytes(&new_item).unwrap();
        assert_eq!(previous_release, notice);
        assert_eq!(decode_item(&new_item).unwrap(), (notice, Some(delta)));
        assert_eq!(decode_item(&old_item).unwrap(), (notice, None));
    }

    #[test]
    fn node_ids_round_trip() {
        let n = MemberId::parse_node("00112233445566778899aabbccddeeff").unwrap();
        let m = MemberId {
            node: n,
            addr: "10.0.0.1:1".parse().unwrap(),
            bump: 0,
        };
        assert_eq!(m.node_id(), "00112233445566778899aabbccddeeff");
        assert!(MemberId::parse_node("xyz").is_none());
    }
}
