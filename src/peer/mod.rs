//! The peer layer: multicast our inventory, learn everybody else's.
//!
//! One task owns the sockets. It announces at start (and pings, so a restarted daemon
//! refreshes at once), on every local change (debounced), every `announce_interval`, and on
//! `announce`. It answers at most one ping per `ping.min_interval`, after a random delay,
//! and counts the rest. Received inventories are reassembled from chunks and written to the
//! store as peer data; liveness is derived from when a peer was last heard. Socket errors
//! are retried with backoff while the control socket keeps answering.

mod handle;
pub mod keys;
pub mod legacy;
pub mod reassembly;
pub mod replay;
pub mod transport;
pub mod wire;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::task::TaskTracker;

pub use handle::{Deps, IncomingMount, PeerHandle, PeerRequest, PeerStatus};

use crate::model::{now_millis as now, Backoff, PeerRecord};
use crate::telemetry::Stats;
use handle::Ctx;
use keys::Keyring;
use reassembly::Reassembly;
use replay::ReplayGuard;
use transport::MulticastTransport;
use wire::{Body, Envelope, Reject};

/// Local changes within this window go out as one announce.
const DEBOUNCE: Duration = Duration::from_millis(20);
/// Longest random delay before answering a ping (as mDNS does against reply storms).
const PING_JITTER_MS: u64 = 500;
/// Most peers remembered; past it the oldest non-live peer is forgotten.
pub const MAX_PEERS: usize = 4096;
/// A peer heard again is written to the store at most this often (unless something else
/// about it changed), and at least four times per `peer_expiry`, so that queries, which
/// judge liveness from the store, never see a live peer as expired.
const PERSIST_LAST_SEEN_EVERY_MS: u64 = 5_000;
/// In a long announce, pause `PACE_PAUSE` after every `PACE_EVERY` datagrams.
const PACE_EVERY: usize = 32;
const PACE_PAUSE: Duration = Duration::from_millis(2);
/// Transient send errors in a row after which the sockets are reopened.
const SEND_FAILURES_BEFORE_REOPEN: u32 = 3;
/// Most datagrams handled before the store is flushed.
const BURST: usize = 512;
/// How often liveness and reassembly timeouts are checked.
const HOUSEKEEPING: Duration = Duration::from_secs(1);

/// How long a mount request waits for the owner's answer.
pub const MOUNT_TIMEOUT: Duration = Duration::from_secs(10);
/// First retry of a mount request; doubled after each.
const MOUNT_RETRY: Duration = Duration::from_millis(300);
/// Remote requests remembered for idempotency (answers to retries).
const SERVED_MEMORY: usize = 1024;

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

/// A mount request of ours awaiting its answer.
struct Outgoing {
    request: wire::MountRequest,
    reply: oneshot::Sender<Result<wire::MountReply, PeerError>>,
    deadline: Instant,
    next: Instant,
    backoff: Duration,
}

/// Start the peer layer; the handle is how the rest of the daemon reaches it.
pub fn spawn(deps: Deps, tracker: &TaskTracker, keys: Keyring) -> PeerHandle {
    let (tx, rx) = mpsc::channel(32);
    let status = Arc::new(PeerStatus::new(keys.fingerprints()));
    let ctx = Ctx {
        deps: Arc::new(deps),
        status: status.clone(),
    };
    tracker.spawn(run(ctx, rx, keys));
    PeerHandle {
        requests: tx,
        status,
    }
}

async fn run(ctx: Ctx, mut requests: mpsc::Receiver<PeerRequest>, keys: Keyring) {
    let mut layer = Layer::new(ctx.clone(), keys);
    let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
    loop {
        let cfg = &ctx.config().multicast;
        match MulticastTransport::open(cfg) {
            Ok(t) => {
                backoff.reset();
                tracing::info!("peer layer up: {}", t.describe);
                ctx.set_peer_state(format!("up: {}", t.describe));
                ctx.event("peer", format!("multicast up: {}", t.describe));
                match layer.serve(&t, &mut requests).await {
                    Ok(()) => return,
                    Err(e) => {
                        // Our mount requests cannot be answered while the sockets are down:
                        // fail them now rather than leave their sessions waiting.
                        layer.fail_outgoing(&e);
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
    replay: ReplayGuard,
    /// Every peer we know, mirrored from the store so no datagram costs a store scan.
    peers: HashMap<String, PeerRecord>,
    /// When each peer's record was last written to the store.
    persisted: HashMap<String, u64>,
    boot: u64,
    seq: u64,
    generation: u64,
    reassembly: Reassembly,
    last_ping_answer: Option<Instant>,
    ping_answer_at: Option<Instant>,
    change_announce_at: Option<Instant>,
    was_live: HashSet<String>,
    /// Node name -> the node id last heard under it.
    names: HashMap<String, String>,
    /// While the peer table is full of live peers: no newcomer fits before this time.
    no_victim_until: u64,
    /// Store writes not yet flushed.
    dirty: bool,
    /// Transient send errors in a row.
    send_failures: u32,
    /// Digests of our latest legacy datagrams, to recognise them when they loop back (the
    /// Perl format carries no node id).
    sent_legacy: std::collections::VecDeque<u64>,
    /// Our mount requests awaiting answers, by request id.
    outgoing: HashMap<u64, Outgoing>,
    /// Remote requests seen: `None` while being carried out, then the answer (resent to
    /// retries of the same request id).
    served: HashMap<(String, u64), Option<wire::MountReply>>,
    served_order: std::collections::VecDeque<(String, u64)>,
    done_tx: mpsc::Sender<((String, u64), wire::MountReply)>,
    done_rx: mpsc::Receiver<((String, u64), wire::MountReply)>,
    boots: HashMap<String, u64>,
    conflicts_reported: HashSet<(String, String)>,
}

enum Kind {
    Ping,
    Other,
}

async fn at(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

impl Layer {
    fn new(ctx: Ctx, keys: Keyring) -> Layer {
        let peers: HashMap<String, PeerRecord> = ctx
            .store()
            .peers()
            .into_iter()
            .map(|p| (p.node_id.clone(), p))
            .collect();
        let was_live = peers
            .values()
            .filter(|p| p.is_live(now(), ctx.peer_expiry()))
            .map(|p| p.node_id.clone())
            .collect();
        let (done_tx, done_rx) = mpsc::channel(64);
        let names: HashMap<String, String> = peers
            .values()
            .map(|p| (p.node.clone(), p.node_id.clone()))
            .collect();
        let tolerance = ctx.config().max_clock_skew.as_millis() as u64;
        let mut replay = ReplayGuard::new(tolerance, 2 * MAX_PEERS);
        for p in peers.values().filter(|p| p.sent_ms > 0) {
            replay.restore(&p.node_id, p.boot, p.sent_ms, now());
        }
        Layer {
            keys,
            replay,
            persisted: peers
                .iter()
                .map(|(k, p)| (k.clone(), p.last_seen))
                .collect(),
            peers,
            ctx,
            boot: rand::random(),
            seq: 0,
            generation: 0,
            reassembly: Reassembly::default(),
            last_ping_answer: None,
            ping_answer_at: None,
            change_announce_at: None,
            was_live,
            names,
            no_victim_until: 0,
            dirty: false,
            send_failures: 0,
            sent_legacy: std::collections::VecDeque::new(),
            outgoing: HashMap::new(),
            served: HashMap::new(),
            served_order: std::collections::VecDeque::new(),
            done_tx,
            done_rx,
            boots: HashMap::new(),
            conflicts_reported: HashSet::new(),
        }
    }

    fn envelope(&mut self, body: Body) -> Envelope {
        self.seq += 1;
        let node = self.ctx.node();
        Envelope {
            node_id: node.id.clone(),
            node: node.name.clone(),
            boot: self.boot,
            seq: self.seq,
            sent_ms: now(),
            body,
        }
    }

    /// Serve until shutdown (Ok) or a socket error (Err: reopen).
    async fn serve(
        &mut self,
        t: &MulticastTransport,
        requests: &mut mpsc::Receiver<PeerRequest>,
    ) -> std::io::Result<()> {
        let ctx = self.ctx.clone();
        let interval = ctx.config().multicast.announce_interval;
        self.announce(t).await?;
        self.send(t, Body::Ping).await?;
        let mut next_announce = Instant::now() + interval;
        let mut housekeeping = tokio::time::interval(HOUSEKEEPING);
        let mut buf = vec![0u8; wire::MAX_DATAGRAM + 1];
        loop {
            tokio::select! {
                _ = ctx.shutdown().cancelled() => {
                    // Best effort: peers fall back to expiry if this is lost.
                    if let Err(e) = self.send(t, Body::Goodbye).await {
                        tracing::debug!("goodbye not sent: {e}");
                    }
                    self.persist_all();
                    return Ok(());
                }
                r = t.recv(&mut buf) => {
                    let (n, from) = r?;
                    self.receive(&buf[..n], from).await;
                    // Take the rest of the burst, then make it durable with one flush.
                    for _ in 0..BURST {
                        match t.try_recv(&mut buf) {
                            Ok((n, from)) => self.receive(&buf[..n], from).await,
                            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                            Err(e) => return Err(e),
                        }
                    }
                    self.flush_if_dirty().await;
                }
                _ = tokio::time::sleep_until(next_announce) => {
                    self.announce(t).await?;
                    next_announce = Instant::now() + interval;
                }
                _ = ctx.local_changed().notified(), if self.change_announce_at.is_none() => {
                    self.change_announce_at = Some(Instant::now() + DEBOUNCE);
                }
                _ = at(self.change_announce_at) => {
                    self.change_announce_at = None;
                    self.announce(t).await?;
                    next_announce = Instant::now() + interval;
                }
                _ = at(self.ping_answer_at) => {
                    self.ping_answer_at = None;
                    self.announce(t).await?;
                }
                Some(req) = requests.recv() => match req {
                    PeerRequest::Announce(reply) => {
                        match self.announce(t).await {
                            Ok(n) => { let _ = reply.send(Ok(n)); }
                            Err(e) => {
                                let _ = reply.send(Err(PeerError::Send(std::io::Error::new(e.kind(), e.to_string()))));
                                return Err(e);
                            }
                        }
                    }
                    PeerRequest::Ping(reply) => {
                        match self.send(t, Body::Ping).await {
                            Ok(()) => { let _ = reply.send(Ok(())); }
                            Err(e) => {
                                let _ = reply.send(Err(PeerError::Send(std::io::Error::new(e.kind(), e.to_string()))));
                                return Err(e);
                            }
                        }
                    }
                    PeerRequest::Mount { target, uuid, read_only, unmount, reply } => {
                        let request = wire::MountRequest {
                            request_id: rand::random(),
                            target,
                            uuid,
                            read_only,
                            unmount,
                        };
                        let now = Instant::now();
                        self.send(t, Body::MountRequest(request.clone())).await?;
                        self.outgoing.insert(request.request_id, Outgoing {
                            request,
                            reply,
                            deadline: now + MOUNT_TIMEOUT,
                            next: now + MOUNT_RETRY,
                            backoff: MOUNT_RETRY,
                        });
                    }
                },
                _ = at(self.outgoing.values().map(|o| o.next.min(o.deadline)).min()) => {
                    self.retry_mount_requests(t).await?;
                }
                Some((key, reply)) = self.done_rx.recv() => {
                    tracing::info!(requester = %key.0, ok = reply.ok, "mount request answered: {}", reply.message);
                    if let Some(slot) = self.served.get_mut(&key) {
                        *slot = Some(reply.clone());
                    }
                    self.send(t, Body::MountReply(reply)).await?;
                }
                _ = housekeeping.tick() => {
                    if self.housekeeping() {
                        // A generation never completed (a chunk was lost): ask again.
                        self.send(t, Body::Ping).await?;
                    }
                }
            }
        }
    }

    async fn send(&mut self, t: &MulticastTransport, body: Body) -> std::io::Result<()> {
        let env = self.envelope(body);
        let bytes = self.keys.seal(wire::encode(&env));
        let result = t.send(&bytes).await;
        self.after_send(t, result, bytes.len())
    }

    /// Count a send; a transient error (ENOBUFS, unreachable) is dropped and counted, but
    /// several in a row mean the link is gone: the sockets are reopened (with backoff), which
    /// also rejoins the group once the interface is back.
    fn after_send(
        &mut self,
        t: &MulticastTransport,
        result: std::io::Result<()>,
        len: usize,
    ) -> std::io::Result<()> {
        match result {
            Ok(()) => {
                Stats::bump(&self.ctx.stats().packets_sent);
                self.ctx.add_bytes_sent(len);
                if std::mem::take(&mut self.send_failures) > 0 {
                    tracing::info!("multicast sends work again");
                    self.ctx.set_peer_state(format!("up: {}", t.describe));
                }
                Ok(())
            }
            Err(e) if transient(&e) => {
                Stats::bump(&self.ctx.stats().send_errors);
                self.send_failures += 1;
                if self.send_failures == 1 {
                    tracing::warn!("multicast send failed: {e}");
                    self.ctx
                        .set_peer_state(format!("degraded: sends fail: {e}"));
                    self.ctx
                        .event("error", format!("multicast send failed: {e}"));
                }
                if self.send_failures >= SEND_FAILURES_BEFORE_REOPEN {
                    self.send_failures = 0;
                    return Err(e);
                }
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Send our whole inventory as one generation; returns the number of disks.
    async fn announce(&mut self, t: &MulticastTransport) -> std::io::Result<usize> {
        let disks = self.ctx.store().local_inventory();
        self.generation += 1;
        let template = self.envelope(Body::Ping);
        let mut max = self.ctx.config().multicast.max_datagram;
        if self.keys.enabled() {
            max -= keys::OVERHEAD;
        }
        let chunks = wire::chunk_inventory(&template, self.generation, &disks, max);
        for (i, c) in chunks.into_iter().enumerate() {
            if i > 0 && i % PACE_EVERY == 0 {
                // Let receivers drain their socket buffers during a large burst.
                tokio::time::sleep(PACE_PAUSE).await;
            }
            self.send(t, Body::Inventory(c)).await?;
        }
        if self.ctx.config().multicast.legacy {
            self.announce_legacy(t, &disks).await?;
        }
        Stats::bump(&self.ctx.stats().announces);
        self.ctx
            .event("peer", format!("announced {} disks", disks.len()));
        Ok(disks.len())
    }

    /// Count a dropped datagram; describe it only to `debug` sessions (and trace logs): a
    /// flood must not cost a formatted log line per datagram.
    fn reject(&self, reason: Reject, from: SocketAddr) {
        self.ctx.count_reject(reason.name());
        tracing::trace!(%from, reason = reason.name(), "datagram dropped");
        if self.ctx.has_subscribers() {
            self.ctx.event(
                "reject",
                format!("datagram from {from} dropped: {}", reason.name()),
            );
        }
    }

    async fn receive(&mut self, bytes: &[u8], from: SocketAddr) {
        if bytes.starts_with(legacy::PREFIX) {
            if !self.ctx.config().multicast.legacy {
                return self.reject(Reject::Legacy, from);
            }
            return self.receive_legacy(bytes, from).await;
        }
        let (plain, key) = match self.keys.open(bytes) {
            Ok(x) => x,
            Err(reason) => return self.reject(reason, from),
        };
        let key = key.map(str::to_string);
        let env = match wire::decode(&plain) {
            Ok(env) => env,
            Err(reason) => return self.reject(reason, from),
        };
        if env.node_id == self.ctx.node().id {
            return; // our own datagram, looped back
        }
        if self.keys.enabled() {
            // Only authenticated traffic can be meaningfully checked for replays: without
            // keys anyone can forge a fresh datagram anyway.
            if let Err(reason) =
                self.replay
                    .check(&env.node_id, env.boot, env.seq, env.sent_ms, now())
            {
                return self.reject(reason, from);
            }
        }
        let is_new = !self.peers.contains_key(&env.node_id);
        if is_new && !self.make_room() {
            return self.reject(Reject::OverCapacity, from);
        }
        // Counted as received once it passed every check; a chunk refused by reassembly
        // below is counted as rejected instead.
        Stats::bump(&self.ctx.stats().packets_received);
        let addr = from.ip().to_string();
        let t = now();
        let mut peer = self.peers.get(&env.node_id).cloned().unwrap_or(PeerRecord {
            node_id: env.node_id.clone(),
            node: env.node.clone(),
            addr: Some(addr.clone()),
            first_seen: t,
            last_seen: t,
            gone: false,
            legacy: false,
            disks: 0,
            key: None,
            boot: env.boot,
            sent_ms: env.sent_ms,
        });
        if is_new || peer.node != env.node {
            self.check_name_conflict(&env);
        }
        let mut important = is_new
            || peer.node != env.node
            || peer.addr.as_deref() != Some(&addr)
            || peer.key != key;
        peer.node = env.node.clone();
        peer.addr = Some(addr.clone());
        peer.last_seen = t;
        peer.key = key;
        peer.boot = env.boot;
        peer.sent_ms = peer.sent_ms.max(env.sent_ms);
        let kind = match env.body {
            Body::Ping => Kind::Ping,
            _ => Kind::Other,
        };
        match env.body {
            Body::Goodbye => {
                peer.gone = true;
                self.no_victim_until = 0; // it can make room now
                self.save_peer(peer.clone(), true).await;
                self.was_live.remove(&peer.node_id);
                tracing::info!(peer = %peer.node, addr = %addr, "peer said goodbye");
                self.ctx
                    .event("peer", format!("{} ({addr}) said goodbye", peer.node));
                return;
            }
            Body::Ping => {
                self.want_announce("ping", &peer.node);
            }
            Body::MountRequest(req) => {
                if req.target == self.ctx.node().id {
                    self.serve_mount_request(&peer, req);
                }
            }
            Body::MountReply(reply) => {
                if reply.target == self.ctx.node().id {
                    if let Some(o) = self.outgoing.remove(&reply.request_id) {
                        let _ = o.reply.send(Ok(reply));
                    }
                }
            }
            Body::Inventory(chunk) => {
                match self
                    .reassembly
                    .add(&env.node_id, env.boot, chunk, std::time::Instant::now())
                {
                    Err(reason) => {
                        self.ctx
                            .stats()
                            .packets_received
                            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                        return self.reject(reason, from);
                    }
                    Ok(None) => {}
                    Ok(Some(disks)) => {
                        important |= peer.disks != disks.len();
                        peer.disks = disks.len();
                        let store = self.ctx.store();
                        match store.replace_peer_inventory(
                            &peer.node_id,
                            &peer.node,
                            Some(&addr),
                            &disks,
                            t,
                        ) {
                            Ok(diff) => {
                                // Only a changed inventory needs to reach the disk soon.
                                self.dirty |= !diff.is_empty();
                                let shown = if self.ctx.debugging() { usize::MAX } else { 0 };
                                for d in diff.appeared.iter().take(shown) {
                                    self.ctx.event(
                                        "disk",
                                        format!("{}: appeared {}", peer.node, d.device),
                                    );
                                }
                                for d in diff.vanished.iter().take(shown) {
                                    self.ctx.event(
                                        "disk",
                                        format!("{}: vanished {}", peer.node, d.device),
                                    );
                                }
                            }
                            Err(e) => {
                                Stats::bump(&self.ctx.stats().store_errors);
                                tracing::error!(peer = %peer.node, "cannot store inventory: {e}");
                            }
                        }
                    }
                }
            }
        }
        let joined = peer.gone || !self.was_live.contains(&peer.node_id);
        important |= joined;
        let rebooted = self.boots.insert(peer.node_id.clone(), env.boot) != Some(env.boot);
        if self.boots.len() > 2 * MAX_PEERS {
            self.boots.clear(); // bounded; at worst a few extra welcome announces
        }
        if (joined || rebooted) && !matches!(kind, Kind::Ping) {
            // It may have missed our announces while it was away or starting.
            self.want_announce("new or restarted peer", &peer.node);
        }
        peer.gone = false;
        self.save_peer(peer.clone(), important).await;
        if joined {
            self.was_live.insert(peer.node_id.clone());
            tracing::info!(peer = %peer.node, addr = %addr, "peer joined");
            self.ctx
                .event("peer", format!("{} ({addr}) joined", peer.node));
        }
    }

    async fn flush_if_dirty(&mut self) {
        if std::mem::take(&mut self.dirty) {
            if let Err(e) = self.ctx.store().flush().await {
                Stats::bump(&self.ctx.stats().store_errors);
                tracing::error!("store flush failed: {e}");
            }
        }
    }

    /// Write every peer whose stored record lags behind (last seen, replay floor), so that
    /// after a clean restart nothing we accepted before can be replayed to us.
    fn persist_all(&mut self) {
        let store = self.ctx.store();
        for p in self.peers.values() {
            if self.persisted.get(&p.node_id) != Some(&p.last_seen) || p.sent_ms > 0 {
                if let Err(e) = store.upsert_peer(p) {
                    tracing::warn!(peer = %p.node, "cannot store peer at shutdown: {e}");
                }
            }
        }
    }

    fn persist_every_ms(&self) -> u64 {
        PERSIST_LAST_SEEN_EVERY_MS.min(self.ctx.peer_expiry().as_millis() as u64 / 4)
    }

    /// A Perl diskd's datagram: its sender is listed under its IP address, marked legacy,
    /// with the disks it sent (replacing its previous list, as the Perl daemon does). It is
    /// never authenticated, so it never triggers anything (no announce, no mount).
    async fn receive_legacy(&mut self, bytes: &[u8], from: SocketAddr) {
        if self.sent_legacy.contains(&legacy_digest(bytes)) {
            return; // our own, looped back
        }
        let disks = match legacy::decode(bytes) {
            Ok(d) => d,
            Err(e) => {
                tracing::debug!(%from, "{e}");
                return self.reject(Reject::LegacyInvalid, from);
            }
        };
        let ip = from.ip().to_string();
        let node_id = format!("legacy-{ip}");
        let is_new = !self.peers.contains_key(&node_id);
        if is_new && !self.make_room() {
            return self.reject(Reject::OverCapacity, from);
        }
        Stats::bump(&self.ctx.stats().packets_received);
        let t = now();
        let mut peer = self.peers.get(&node_id).cloned().unwrap_or(PeerRecord {
            node_id: node_id.clone(),
            node: ip.clone(),
            addr: Some(ip.clone()),
            first_seen: t,
            last_seen: t,
            gone: false,
            legacy: true,
            disks: 0,
            key: None,
            boot: 0,
            sent_ms: 0,
        });
        peer.last_seen = t;
        peer.disks = disks.len();
        match self
            .ctx
            .store()
            .replace_peer_inventory(&node_id, &ip, Some(&ip), &disks, t)
        {
            Ok(diff) => {
                for d in &diff.appeared {
                    self.ctx
                        .event("disk", format!("{ip} (legacy): appeared {}", d.device));
                }
                for d in &diff.vanished {
                    self.ctx
                        .event("disk", format!("{ip} (legacy): vanished {}", d.device));
                }
            }
            Err(e) => {
                Stats::bump(&self.ctx.stats().store_errors);
                tracing::error!(peer = %ip, "cannot store legacy inventory: {e}");
            }
        }
        self.dirty = true;
        let joined = !self.was_live.contains(&node_id);
        self.save_peer(peer, true).await;
        if joined {
            self.was_live.insert(node_id);
            tracing::info!(peer = %ip, "legacy (Perl diskd) peer joined");
            self.ctx.event("peer", format!("{ip} (legacy) joined"));
        }
    }

    /// Send our inventory in the Perl format too (plaintext: the Perl diskd has no keys).
    async fn announce_legacy(
        &mut self,
        t: &MulticastTransport,
        disks: &[crate::model::DiskRecord],
    ) -> std::io::Result<()> {
        let (bytes, left_out) = legacy::encode(disks);
        if left_out != self.ctx.legacy_left_out() {
            if left_out > 0 {
                tracing::warn!(
                    left_out,
                    "our inventory does not fit in one 1500-byte legacy datagram; Perl daemons see only part of it"
                );
            }
            self.ctx.set_legacy_left_out(left_out);
        }
        self.sent_legacy.push_back(legacy_digest(&bytes));
        if self.sent_legacy.len() > 8 {
            self.sent_legacy.pop_front();
        }
        let result = t.send(&bytes).await;
        self.after_send(t, result, bytes.len())
    }

    /// Keep the peer in memory; write it to the store when something changed that matters
    /// after a restart, or when its stored last-seen time is getting old. Hearing a peer
    /// again every few seconds does not rewrite its record each time.
    async fn save_peer(&mut self, peer: PeerRecord, important: bool) {
        let stale = self
            .persisted
            .get(&peer.node_id)
            .is_none_or(|&t| peer.last_seen.saturating_sub(t) >= self.persist_every_ms());
        if important || stale {
            let store = self.ctx.store();
            match store.upsert_peer(&peer) {
                Ok(()) => {
                    self.persisted.insert(peer.node_id.clone(), peer.last_seen);
                    self.dirty |= important;
                }
                Err(e) => {
                    Stats::bump(&self.ctx.stats().store_errors);
                    tracing::error!("cannot store peer: {e}");
                }
            }
        }
        self.peers.insert(peer.node_id.clone(), peer);
    }

    /// A peer asked for our inventory (a ping, or it is new or restarted and has none).
    /// At most one announce per `ping.min_interval`: the first request is answered after a
    /// random delay; requests while an answer is pending are coalesced into it (counted as
    /// suppressed); a request within the interval is deferred to its end, never dropped.
    fn want_announce(&mut self, why: &str, from: &str) {
        if self.ping_answer_at.is_some() {
            Stats::bump(&self.ctx.stats().pings_suppressed);
            return;
        }
        let min = self.ctx.config().ping_min_interval;
        let now = Instant::now();
        let earliest = self.last_ping_answer.map_or(now, |t| (t + min).max(now));
        let delay = Duration::from_millis(rand::thread_rng().gen_range(0..=PING_JITTER_MS));
        let at = earliest + delay;
        self.ping_answer_at = Some(at);
        self.last_ping_answer = Some(at);
        Stats::bump(&self.ctx.stats().pings_answered);
        self.ctx.event(
            "peer",
            format!(
                "{why} from {from}: announcing in {} ms",
                at.duration_since(now).as_millis()
            ),
        );
    }

    /// A peer asks us to mount one of our disks. Carried out in its own task (a mount can
    /// take a while); retries of the same request id get the same answer.
    fn serve_mount_request(&mut self, from: &PeerRecord, req: wire::MountRequest) {
        let key = (from.node_id.clone(), req.request_id);
        if let Some(done) = self.served.get(&key) {
            if let Some(reply) = done.clone() {
                // A retry: the answer was lost; send it again.
                let tx = self.done_tx.clone();
                tokio::spawn(async move {
                    let _ = tx.send((key, reply)).await;
                });
            }
            return;
        }
        if self.served_order.len() >= SERVED_MEMORY {
            if let Some(old) = self.served_order.pop_front() {
                self.served.remove(&old);
            }
        }
        self.served.insert(key.clone(), None);
        self.served_order.push_back(key.clone());
        let jobs = self.ctx.deps.mount_jobs.clone();
        let tx = self.done_tx.clone();
        let requester = from.node.clone();
        tokio::spawn(async move {
            let (reply, answer) = oneshot::channel();
            let job = IncomingMount {
                requester,
                requester_id: key.0.clone(),
                request: req,
                reply,
            };
            if jobs.send(job).await.is_ok() {
                if let Ok(reply) = answer.await {
                    let _ = tx.send((key, reply)).await;
                }
            }
        });
    }

    /// Fail every mount request of ours awaiting an answer (the sockets went down).
    fn fail_outgoing(&mut self, why: &std::io::Error) {
        for (_, o) in self.outgoing.drain() {
            let _ = o.reply.send(Err(PeerError::Down(why.to_string())));
        }
    }

    /// Resend our unanswered mount requests that are due; fail those past their deadline.
    async fn retry_mount_requests(&mut self, t: &MulticastTransport) -> std::io::Result<()> {
        let now = Instant::now();
        let expired: Vec<u64> = self
            .outgoing
            .iter()
            .filter(|(_, o)| o.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            if let Some(o) = self.outgoing.remove(&id) {
                let _ = o.reply.send(Err(PeerError::NoReply(MOUNT_TIMEOUT)));
            }
        }
        let due: Vec<wire::MountRequest> = self
            .outgoing
            .values_mut()
            .filter(|o| o.next <= now)
            .map(|o| {
                o.backoff *= 2;
                o.next = now + o.backoff;
                o.request.clone()
            })
            .collect();
        for request in due {
            self.send(t, Body::MountRequest(request)).await?;
        }
        Ok(())
    }

    /// Make room for a new peer: forget the oldest non-live one if at the cap. Live peers
    /// are never forgotten; when all are live, the newcomer is refused.
    fn make_room(&mut self) -> bool {
        if self.peers.len() < MAX_PEERS {
            return true;
        }
        let expiry = self.ctx.peer_expiry();
        let t = now();
        if self.no_victim_until > t {
            return false; // every peer is live until then: skip the scan (flood defence)
        }
        let victim = self
            .peers
            .values()
            .filter(|p| !p.is_live(t, expiry))
            .min_by_key(|p| p.last_seen)
            .map(|p| (p.node_id.clone(), p.node.clone()));
        let Some((id, name)) = victim else {
            // The earliest any live peer can expire.
            let oldest = self.peers.values().map(|p| p.last_seen).min().unwrap_or(t);
            self.no_victim_until = oldest + expiry.as_millis() as u64 + 1;
            return false;
        };
        tracing::info!(peer = %name, "peer table full: forgetting the oldest non-live peer");
        self.peers.remove(&id);
        self.persisted.remove(&id);
        self.ctx.store().remove_peer(&id).is_ok()
    }

    fn check_name_conflict(&mut self, env: &Envelope) {
        let t = now();
        let expiry = self.ctx.peer_expiry();
        // The last node id seen under each name: one lookup per new peer, not a scan of
        // the whole table (which a flood of new peers would turn quadratic).
        let previous = self.names.insert(env.node.clone(), env.node_id.clone());
        if self.names.len() > 2 * MAX_PEERS {
            self.names.clear(); // bounded; at worst a conflict is reported late
        }
        let others: Vec<String> = previous
            .filter(|id| *id != env.node_id)
            .filter(|id| {
                self.peers
                    .get(id)
                    .is_some_and(|o| o.node == env.node && o.is_live(t, expiry))
            })
            .into_iter()
            .collect();
        for other in others {
            if self
                .conflicts_reported
                .insert((env.node_id.clone(), other.clone()))
            {
                tracing::warn!(
                    node = %env.node,
                    new_id = %env.node_id,
                    old_id = %other,
                    "two daemons use the same node name; listing both"
                );
                self.ctx.event(
                    "peer",
                    format!(
                        "name conflict: {} is used by {} and {}",
                        env.node, other, env.node_id
                    ),
                );
            }
        }
    }

    /// Expire peers and stale generations; true when a generation was dropped incomplete.
    fn housekeeping(&mut self) -> bool {
        let dropped = self.reassembly.expire(std::time::Instant::now());
        for _ in 0..dropped {
            self.ctx.count_reject("incomplete_generation");
        }
        let t = now();
        let expiry = self.ctx.peer_expiry();
        let expired: Vec<String> = self
            .was_live
            .iter()
            .filter(|id| self.peers.get(*id).is_none_or(|p| !p.is_live(t, expiry)))
            .cloned()
            .collect();
        for id in expired {
            self.was_live.remove(&id);
            // Persist the last time it was heard, which `save_peer` may have held back.
            if let Some(p) = self.peers.get(&id) {
                if self.persisted.get(&id) != Some(&p.last_seen) {
                    let _ = self.ctx.store().upsert_peer(p);
                    self.persisted.insert(id.clone(), p.last_seen);
                }
            }
            let name = self.peers.get(&id).map(|p| p.node.clone()).unwrap_or(id);
            tracing::info!(peer = %name, "peer expired (not heard within peer_expiry)");
            self.ctx.event("peer", format!("{name} expired"));
        }
        dropped > 0
    }
}

fn legacy_digest(bytes: &[u8]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

fn transient(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(nix::libc::ENOBUFS)
            | Some(nix::libc::EAGAIN)
            | Some(nix::libc::ENETUNREACH)
            | Some(nix::libc::EHOSTUNREACH)
    )
}
