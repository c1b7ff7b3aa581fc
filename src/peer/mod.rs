//! The peer layer: multicast our inventory, learn everybody else's.
//!
//! One task owns the transport. It announces at start (and pings, so a restarted daemon
//! refreshes at once), on every local change (debounced), every `announce_interval`, and on
//! `announce`. It answers at most one ping per `ping.min_interval`, after a random delay,
//! and counts the rest. Received inventories are reassembled from chunks and written to the
//! store as peer data; liveness is derived from when a peer was last heard. Socket errors
//! are retried with backoff while the control socket keeps answering.
//!
//! This file is the I/O glue: the reopen loop and the select loop. The decisions are plain
//! state machines in their own files, given the time and randomness by the caller:
//! [`table`] (peers, liveness, cap), [`pacer`] (ping answers), [`mount_rpc`] (retries and
//! idempotent answers), [`reassembly`] and [`replay`]. Sending is in `outbound.rs`,
//! receiving in `inbound.rs`; the network is a [`transport::Transport`] (multicast, or an
//! in-process hub for tests).

pub mod clock;
pub mod delta;
pub mod gossip;
mod gossip_io;
mod handle;
mod inbound;
pub mod keys;
pub mod legacy;
mod liveness;
pub mod mount_rpc;
mod outbound;
pub mod pacer;
pub mod reassembly;
pub mod replay;
pub mod seeds;
mod serve;
pub mod table;
pub mod transport;
pub mod wire;

#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::task::TaskTracker;

pub use handle::{Deps, GossipReport, IncomingMount, PeerHandle, PeerRequest, PeerStatus};
pub use mount_rpc::MOUNT_TIMEOUT;

use crate::config::Multicast;
use crate::model::Backoff;
use crate::telemetry::Stats;
use clock::Clock;
use gossip::{Gossip, MemberId};
use gossip_io::GossipState;
use handle::Ctx;
use keys::Keyring;
use mount_rpc::{MountRpc, ServedKey};
use pacer::PingPacer;
use reassembly::Reassembly;
use replay::ReplayGuard;
use seeds::Seeds;
use table::PeerTable;
use transport::{AnyMulticast, Transport, UdpUnicast, Unicast};
use wire::{Body, MountReply};

/// A local change goes out at once; further changes within this window after it go out
/// together at its end (a burst costs at most two announces per window, the first change
/// no wait at all).
const DEBOUNCE: Duration = Duration::from_millis(20);
/// In a long announce, pause `PACE_PAUSE` after every `PACE_EVERY` datagrams.
const PACE_EVERY: usize = 32;
const PACE_PAUSE: Duration = Duration::from_millis(2);
/// Transient send errors in a row after which the sockets are reopened.
const SEND_FAILURES_BEFORE_REOPEN: u32 = 3;
/// Most datagrams handled before the store is flushed.
const BURST: usize = 512;
/// "peer joined" lines logged per housekeeping tick; more are counted and summed up.
const JOINS_LOGGED_PER_TICK: u32 = 20;
/// A peer that said goodbye is told to the fleet (`peer-lost`, `vanished`) only after this
/// long: a daemon restarting cleanly is back sooner, and then nothing changed.
pub(crate) const GOODBYE_GRACE: Duration = Duration::from_secs(5);
/// Routine store writes (peers' last-seen times) are flushed at least this often.
const FLUSH_EVERY: Duration = Duration::from_secs(10);
/// How often liveness and reassembly timeouts are checked.
const HOUSEKEEPING: Duration = Duration::from_secs(1);

/// Why the peer layer could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// The multicast sockets are down and being reopened.
    #[error("multicast is down ({0}); retrying")]
    Down(String),
    /// Sending failed.
    #[error("multicast send failed: {0}")]
    Send(#[from] std::io::Error),
    /// The disk's host did not answer a mount request in time.
    #[error("no answer from the disk's host within {0:?}")]
    NoReply(Duration),
    /// The peer layer did not answer in time.
    #[error("the peer layer did not answer within {0:?}")]
    NoAnswer(Duration),
    /// The peer layer has stopped (shutdown).
    #[error("the peer layer has stopped")]
    Stopped,
}

/// The gossip half, when it runs: its socket and the address we advertise.
pub struct GossipSetup<G> {
    /// The bound gossip socket.
    pub transport: G,
    /// Where other members reach us.
    pub advertise: std::net::SocketAddr,
}

/// Start the peer layer; the handle is how the rest of the daemon reaches it.
pub fn spawn(
    deps: Deps,
    tracker: &TaskTracker,
    keys: Keyring,
    gossip: Option<GossipSetup<UdpUnicast>>,
) -> PeerHandle {
    spawn_with(
        deps,
        tracker,
        keys,
        Clock::system(),
        StdRng::from_entropy(),
        AnyMulticast::open,
        gossip,
    )
}

/// Start the peer layer on any transports, reading the given clock and randomness; `open`
/// is called at start and after every multicast transport failure (with backoff); the
/// gossip socket, if any, stays open for the layer's whole life.
pub fn spawn_with<T, F, G>(
    deps: Deps,
    tracker: &TaskTracker,
    keys: Keyring,
    clock: Clock,
    rng: StdRng,
    open: F,
    gossip: Option<GossipSetup<G>>,
) -> PeerHandle
where
    T: Transport + 'static,
    F: FnMut(&Multicast) -> std::io::Result<T> + Send + 'static,
    G: Unicast + 'static,
{
    let (tx, rx) = mpsc::channel(32);
    let status = Arc::new(PeerStatus::new(keys.fingerprints()));
    let ctx = Ctx {
        deps: Arc::new(deps),
        status: status.clone(),
    };
    tracker.spawn(run(ctx, rx, keys, clock, rng, open, gossip));
    PeerHandle {
        requests: tx,
        status,
    }
}

async fn run<T, F, G>(
    ctx: Ctx,
    mut requests: mpsc::Receiver<PeerRequest>,
    keys: Keyring,
    clock: Clock,
    rng: StdRng,
    mut open: F,
    gossip: Option<GossipSetup<G>>,
) where
    T: Transport,
    F: FnMut(&Multicast) -> std::io::Result<T>,
    G: Unicast,
{
    let mut layer = Layer::new(ctx.clone(), keys, clock, rng);
    let (resolve_tx, mut resolve_rx) = mpsc::channel(16);
    let g = gossip.map(|setup| {
        layer.start_gossip(setup.transport.local_addr(), setup.advertise, resolve_tx);
        tracing::info!(
            "gossip up: listening on {}, advertising {}",
            setup.transport.local_addr(),
            setup.advertise
        );
        setup.transport
    });
    let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
    loop {
        match open(&ctx.config().multicast) {
            Ok(t) => {
                backoff.reset();
                tracing::info!("peer layer up: {}", t.describe());
                ctx.set_peer_state(format!("up: {}", t.describe()));
                ctx.event("peer", format!("multicast up: {}", t.describe()));
                match layer
                    .serve(&t, g.as_ref(), &mut requests, &mut resolve_rx)
                    .await
                {
                    Ok(()) => return,
                    Err(e) => {
                        // Our mount requests cannot be answered while the sockets are down:
                        // fail them now rather than leave their sessions waiting.
                        layer.mount.rpc.fail_all(&e);
                        tracing::warn!(
                            "multicast socket failed: {e}; reopening in {:?}",
                            backoff.peek()
                        );
                        ctx.event("error", format!("multicast socket failed: {e}"));
                        ctx.set_peer_state(format!("error: {e}; retrying"));
                    }
                }
            }
            Err(e) => {
                tracing::warn!(
                    "cannot open the multicast socket: {e}; retrying in {:?}",
                    backoff.peek()
                );
                ctx.set_peer_state(format!("error: {e}; retrying in {:?}", backoff.peek()));
            }
        }
        // Wait out the backoff, answering requests with the error meanwhile.
        let until = Instant::now() + backoff.next_delay();
        loop {
            tokio::select! {
                _ = ctx.shutdown().cancelled() => return,
                _ = tokio::time::sleep_until(until) => break,
                Some(req) = requests.recv() => {
                    let down = || PeerError::Down(ctx.peer_state());
                    match req {
                        PeerRequest::Announce(reply) => {
                            let _ = reply.send(Err(down()));
                        }
                        PeerRequest::Ping(reply) => {
                            let _ = reply.send(Err(down()));
                        }
                        PeerRequest::Mount { reply, .. } => {
                            let _ = reply.send(Err(down()));
                        }
                    }
                }
            }
        }
    }
}

/// The peer layer's own state (owned by its single task, so no locks).
struct Layer {
    ctx: Ctx,
    keys: Keyring,
    clock: Clock,
    rng: StdRng,
    replay: ReplayGuard,
    table: PeerTable,
    reassembly: Reassembly,
    pacer: PingPacer,
    /// Who we are on the wire and how far our inventory has come.
    me: Sender,
    /// When our next announces go out, and how sending has gone.
    announce: Announcing,
    /// Store writes not yet flushed.
    flush: Flushing,
    /// "peer joined" lines logged in this housekeeping tick, and joins past the budget.
    joins: JoinLog,
    /// Mount requests we made, and the mount service's answers to peers' requests.
    mount: MountState,
    /// What we heard from peers outside their inventories: goodbyes, multicast.
    heard: Heard,
    /// The gossip half, when gossip runs.
    gossip: Option<GossipState>,
}

/// Who we are on the wire, and how far our inventory has come.
struct Sender {
    /// A random id per run, in every datagram (a restart is a new boot).
    boot: u64,
    /// The sequence number of our latest datagram.
    seq: u64,
    /// The generation of our latest inventory.
    generation: u64,
    /// The generation of our latest inventory whose content changed (what members
    /// compare with to know whether they are behind).
    content_gen: u64,
}

/// When our next announces go out, and how sending has gone.
#[derive(Default)]
struct Announcing {
    /// When the announce of a change is due (the end of the debounce window).
    due: Option<Instant>,
    /// When the last change-triggered announce went out (the debounce window's start).
    last: Option<Instant>,
    /// Transient send errors in a row.
    send_failures: u32,
    /// Digests of our latest legacy datagrams, to recognise them when they loop back (the
    /// Perl format carries no node id).
    sent_legacy: VecDeque<u64>,
}

/// Store writes not yet flushed.
struct Flushing {
    /// Writes that asked for a flush.
    dirty: bool,
    /// Writes made since the last flush that did not ask for one.
    unflushed: bool,
    last: Instant,
}

/// "peer joined" lines logged in this housekeeping tick, and joins past the budget.
#[derive(Default)]
struct JoinLog {
    logged: u32,
    unlogged: u32,
}

/// Mount requests we made, and the mount service's answers to peers' requests.
struct MountState {
    rpc: MountRpc,
    /// Answers of the mount service to remote requests, to send.
    done_tx: mpsc::Sender<(ServedKey, MountReply)>,
    done_rx: mpsc::Receiver<(ServedKey, MountReply)>,
}

/// What we heard from peers outside their inventories.
struct Heard {
    /// The boot id each peer said goodbye from (its later datagrams are ignored).
    goodbyes: lru::LruCache<String, u64>,
    /// When each peer was last heard by multicast.
    multicast: lru::LruCache<String, crate::model::Millis>,
    /// Goodbyes not yet told to the fleet, with when they are due (see `GOODBYE_GRACE`).
    pending_lost: std::collections::BTreeMap<String, (Instant, crate::model::PeerRecord)>,
}

/// Which way a datagram came.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Path {
    /// On the multicast group.
    Multicast,
    /// On the gossip socket (unicast).
    Gossip,
}

/// A send error as the requester sees it (the layer keeps the original to reopen).
fn send_error(e: &std::io::Error) -> PeerError {
    PeerError::Send(std::io::Error::new(e.kind(), e.to_string()))
}

/// Forget the entry of `map` whose `age` is least (the oldest), to make room for another
/// in a map bounded by its number of peers.
fn forget_oldest<V, A: Ord>(
    map: &mut std::collections::BTreeMap<String, V>,
    age: impl Fn(&V) -> A,
) {
    let oldest = map
        .iter()
        .min_by_key(|(_, v)| age(v))
        .map(|(k, _)| k.clone());
    if let Some(k) = oldest {
        map.remove(&k);
    }
}

impl Layer {
    fn new(ctx: Ctx, keys: Keyring, clock: Clock, mut rng: StdRng) -> Layer {
        let now = clock.wall_ms();
        let limits = ctx.config().peers;
        let table = PeerTable::load(ctx.store().peers(), now, ctx.peer_expiry(), limits);
        let tolerance = ctx.config().security.max_clock_skew.as_millis() as u64;
        // Two windows per peer: multicast and gossip.
        let mut replay = ReplayGuard::new(tolerance, limits.max.saturating_mul(4));
        let tracked =
            std::num::NonZeroUsize::new(limits.max.saturating_mul(gossip_io::TRACKED_PER_PEER))
                .unwrap_or(std::num::NonZeroUsize::MIN);
        for p in table.peers().filter(|p| p.sent_ms > 0) {
            replay.restore(&p.node_id, p.boot, p.sent_ms, now);
        }
        let (done_tx, done_rx) = mpsc::channel(64);
        // Drawn first, before anything else takes from `rng` (one seed, one run).
        let boot = rng.gen();
        Layer {
            keys,
            replay,
            table,
            pacer: PingPacer::new(ctx.config().ping_min_interval),
            ctx,
            rng,
            reassembly: Reassembly::default(),
            me: Sender {
                boot,
                seq: 0,
                generation: 0,
                content_gen: 0,
            },
            announce: Announcing::default(),
            flush: Flushing {
                dirty: false,
                unflushed: false,
                last: clock.instant(),
            },
            clock,
            joins: JoinLog::default(),
            mount: MountState {
                rpc: MountRpc::default(),
                done_tx,
                done_rx,
            },
            heard: Heard {
                goodbyes: lru::LruCache::sparse(tracked),
                multicast: lru::LruCache::sparse(tracked),
                pending_lost: std::collections::BTreeMap::new(),
            },
            gossip: None,
        }
    }

    /// Turn the gossip half on (before serving).
    fn start_gossip(
        &mut self,
        listen: std::net::SocketAddr,
        advertise: std::net::SocketAddr,
        resolve_tx: mpsc::Sender<gossip_io::Resolved>,
    ) {
        let me = MemberId {
            node: MemberId::parse_node(&self.ctx.node().id).unwrap_or(0),
            addr: advertise,
            bump: self.clock.wall_ms(),
        };
        let salt = me.node as u64;
        let engine = Gossip::new(
            me,
            self.ctx.config().gossip.interval,
            gossip_io::MAX_SWIM,
            self.rng.gen(),
        );
        let own = vec![advertise, listen];
        let seeds = Seeds::new(
            &self.ctx.config().gossip.seeds,
            own,
            self.clock.instant(),
            salt,
        );
        let tracked = std::num::NonZeroUsize::new(
            self.table.max().saturating_mul(gossip_io::TRACKED_PER_PEER),
        )
        .unwrap_or(std::num::NonZeroUsize::MIN);
        self.gossip = Some(GossipState::new(
            engine, seeds, listen, advertise, resolve_tx, tracked,
        ));
        for p in self.table.peers().filter(|p| p.sent_ms > 0) {
            // Our gossip window for each peer starts where its multicast one does.
            self.replay.restore(
                &gossip_io::replay_key(&p.node_id),
                p.boot,
                p.sent_ms,
                self.clock.wall_ms(),
            );
        }
        self.publish_gossip();
    }

    /// Announce our inventory because it changed (or at start, or on request): by
    /// multicast, and to gossip members with a notice.
    async fn changed_announce<T: Transport>(&mut self, t: &T) -> std::io::Result<usize> {
        let n = self.announce(t).await?;
        self.me.content_gen = self.me.generation;
        self.gossip_changed();
        Ok(n)
    }

    /// Send to one node by the way it is reached (gossip, multicast or both).
    async fn send_to_node<T: Transport>(
        &mut self,
        t: &T,
        node_id: &str,
        body: Body,
    ) -> std::io::Result<()> {
        if self.route_to_node(node_id, &body) {
            self.send(t, body).await?;
        }
        Ok(())
    }
}
